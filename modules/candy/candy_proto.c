/* candy_proto.c — the Candy server protocol without I/O (candy.md §5,
 * §6.3–§6.5); see candy_proto.h. Parsers never read past the length they
 * are given: their input comes straight from the network or the config. */
#include "candy_proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

const char *candy_strerror(int e)
{
    switch (e) {
    case CANDY_OK: return "ok";
    case CANDY_E_SHORT: return "message too short";
    case CANDY_E_HASH: return "hash does not match the password";
    case CANDY_E_CIDR: return "bad cidr";
    /* The errno-style results of candy_dhcp_alloc and candy_rules_parse,
     * so that callers can log every result of this file the same way. */
    case -ENOSPC: return "all addresses in the network are assigned";
    case -E2BIG: return "too many rules";
    default: return "unknown error";
    }
}

/* ------------------------------------------------------------------ CIDR */
/* Prefixes above 32 count as 32 so that no caller can reach a shift by 32
 * (undefined) through a corrupt value. */
uint32_t candy_mask(unsigned prefix)
{
    if (prefix == 0) return 0;
    if (prefix >= 32) return 0xffffffffu;
    return 0xffffffffu << (32 - prefix);
}

bool candy_host_valid(candy_cidr c)
{
    if (c.prefix >= 31) return false;
    uint32_t hostmask = ~candy_mask(c.prefix), h = c.host & hostmask;
    return h != 0 && h != hostmask;
}

uint32_t candy_next(candy_cidr c)
{
    uint32_t mask = candy_mask(c.prefix);
    return (c.host & mask) | ((c.host + 1) & ~mask);
}

/* Up to `max` decimal digits at s[*i..n) without a leading zero ("0"
 * itself is fine); returns the value or -1. Reading one digit more than
 * allowed is how "1000" is told from "100". Leading zeros are refused
 * because inet_aton() reads "010" as octal 8 and other parsers as 10: an
 * address that means different things to different tools is an error. */
static long scan_num(const char *s, size_t n, size_t *i, unsigned max)
{
    size_t d0 = *i;
    long v = 0;
    while (*i < n && *i - d0 <= max && s[*i] >= '0' && s[*i] <= '9') v = v * 10 + (s[(*i)++] - '0');
    size_t nd = *i - d0;
    if (nd == 0 || nd > max || (nd > 1 && s[d0] == '0')) return -1;
    return v;
}

/* "a.b.c.d" at the start of s[0..n); returns the bytes used, 0 if none. */
static size_t scan_ip(const char *s, size_t n, uint32_t *ip)
{
    size_t i = 0;
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        if (k > 0 && (i >= n || s[i++] != '.')) return 0;
        long o = scan_num(s, n, &i, 3);
        if (o < 0 || o > 255) return 0;
        v = v << 8 | (uint32_t)o;
    }
    *ip = v;
    return i;
}

/* "a.b.c.d/n" at the start of s[0..n); returns the bytes used, 0 if none. */
static size_t scan_cidr(const char *s, size_t n, candy_cidr *c)
{
    uint32_t ip;
    size_t i = scan_ip(s, n, &ip);
    if (i == 0 || i >= n || s[i++] != '/') return 0;
    long p = scan_num(s, n, &i, 2);
    if (p < 0 || p > 32) return 0;
    c->host = ip;
    c->prefix = (unsigned)p;
    return i;
}

int candy_cidr_parse(const char *s, size_t max, candy_cidr *out)
{
    const char *nul = memchr(s, 0, max);
    size_t len = nul ? (size_t)(nul - s) : max;
    candy_cidr c;
    /* What follows the NUL is ignored, as the native server reads the
     * field as a C string: a client that does not zero the rest of its
     * buffer still works. */
    if (len == 0 || scan_cidr(s, len, &c) != len) return CANDY_E_CIDR;
    *out = c;
    return 0;
}

/* Like snprintf: out is truncated when cap is too small and the length of
 * the whole text is returned. */
size_t candy_cidr_format(candy_cidr c, char *out, size_t cap)
{
    int r = snprintf(out, cap, "%u.%u.%u.%u/%u", c.host >> 24, c.host >> 16 & 255, c.host >> 8 & 255, c.host & 255,
                     c.prefix);
    return r < 0 ? 0 : (size_t)r;
}

const char *candy_ip_format(uint32_t ip, char *out, size_t cap)
{
    snprintf(out, cap, "%u.%u.%u.%u", ip >> 24, ip >> 16 & 255, ip >> 8 & 255, ip & 255);
    return out;
}

int candy_ip_parse(const char *s, uint32_t *out)
{
    size_t n = strlen(s);
    uint32_t ip;
    if (n == 0 || scan_ip(s, n, &ip) != n) return CANDY_E_CIDR;
    *out = ip;
    return 0;
}

/* ------------------------------------------------------------------ messages */
uint32_t candy_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void candy_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Through memcpy: converting an out-of-range uint64_t to int64_t is
 * implementation-defined, copying the two's-complement bits is not. */
int64_t candy_get64s(const uint8_t *p)
{
    uint64_t u = (uint64_t)candy_get32(p) << 32 | candy_get32(p + 4);
    int64_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

void candy_put64s(uint8_t *p, int64_t v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    candy_put32(p, (uint32_t)(u >> 32));
    candy_put32(p + 4, (uint32_t)u);
}

/* SHA256(pw ‖ fields): the hashed fields of every kind are contiguous. */
static void hash_of(uint8_t h[CANDY_HASH_LEN], const candy_secret *s, const uint8_t *fields, size_t len)
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    if (s->len) crypto_hash_sha256_update(&st, (const uint8_t *)s->pw, s->len);
    crypto_hash_sha256_update(&st, fields, len);
    crypto_hash_sha256_final(&st, h);
}

static bool hash_ok(const uint8_t *got, const candy_secret *s, const uint8_t *fields, size_t len)
{
    uint8_t h[CANDY_HASH_LEN];
    hash_of(h, s, fields, len);
    return sodium_memcmp(h, got, CANDY_HASH_LEN) == 0;
}

/* Output pointers of the checks may be NULL when the caller does not need
 * the field; they are written only on CANDY_OK. */
int candy_check_auth(const uint8_t *p, size_t n, const candy_secret *s, uint32_t *ip, int64_t *ts)
{
    if (n < CANDY_AUTH_LEN) return CANDY_E_SHORT;
    if (!hash_ok(p + 13, s, p + 1, 12)) return CANDY_E_HASH;
    if (ip) *ip = candy_get32(p + 1);
    if (ts) *ts = candy_get64s(p + 5);
    return CANDY_OK;
}

int candy_check_expttun(const uint8_t *p, size_t n, const candy_secret *s, candy_cidr *want, int64_t *ts)
{
    if (n < CANDY_EXPTTUN_LEN) return CANDY_E_SHORT;
    if (!hash_ok(p + 41, s, p + 1, 8)) return CANDY_E_HASH;
    candy_cidr c;
    if (candy_cidr_parse((const char *)p + 9, CANDY_CIDR_FIELD, &c) != 0) return CANDY_E_CIDR;
    if (want) *want = c;
    if (ts) *ts = candy_get64s(p + 1);
    return CANDY_OK;
}

int candy_check_vmac(const uint8_t *p, size_t n, const candy_secret *s, uint8_t vmac[CANDY_VMAC_BYTES], int64_t *ts)
{
    if (n < CANDY_VMAC_LEN) return CANDY_E_SHORT;
    if (!hash_ok(p + 25, s, p + 1, 24)) return CANDY_E_HASH;
    if (vmac) memcpy(vmac, p + 1, CANDY_VMAC_BYTES);
    if (ts) *ts = candy_get64s(p + 17);
    return CANDY_OK;
}

size_t candy_build_auth(uint8_t out[CANDY_AUTH_LEN], const candy_secret *s, uint32_t ip, int64_t ts)
{
    out[0] = CANDY_AUTH;
    candy_put32(out + 1, ip);
    candy_put64s(out + 5, ts);
    hash_of(out + 13, s, out + 1, 12);
    return CANDY_AUTH_LEN;
}

size_t candy_build_vmac(uint8_t out[CANDY_VMAC_LEN], const candy_secret *s, const uint8_t vmac[CANDY_VMAC_BYTES],
                        int64_t ts)
{
    out[0] = CANDY_VMAC;
    memcpy(out + 1, vmac, CANDY_VMAC_BYTES);
    candy_put64s(out + 17, ts);
    hash_of(out + 25, s, out + 1, 24);
    return CANDY_VMAC_LEN;
}

size_t candy_build_expttun(uint8_t out[CANDY_EXPTTUN_LEN], const candy_secret *s, candy_cidr c, int64_t ts)
{
    out[0] = CANDY_EXPTTUN;
    candy_put64s(out + 1, ts);
    memset(out + 9, 0, CANDY_CIDR_FIELD);
    candy_cidr_format(c, (char *)out + 9, CANDY_CIDR_FIELD); /* at most 18 + NUL: fits */
    hash_of(out + 41, s, out + 1, 8);
    return CANDY_EXPTTUN_LEN;
}

/* A /31 or /32 has no broadcast address (RFC 3021; §6.3 gives it no valid
 * host either), so only prefixes up to 30 have a directed broadcast. */
bool candy_is_broadcast(uint32_t daddr, const candy_cidr *dhcp)
{
    if ((daddr & 0xf0000000u) == 0xe0000000u || daddr == CANDY_BROADCAST) return true;
    if (!dhcp || dhcp->prefix > 30) return false;
    uint32_t mask = candy_mask(dhcp->prefix);
    return (daddr & mask) == candy_net(*dhcp) && (daddr | mask) == 0xffffffffu;
}

/* ------------------------------------------------------------------ SD-WAN */
/* Quotes at most this much of a field in an error (the field may be long
 * or binary; "%.*s" also stops at a NUL). */
#define QUOTE_MAX 40

static int field_err(char *err, size_t errlen, const char *name, const char *f, size_t flen, const char *what)
{
    if (err && errlen) {
        if (flen == 0)
            snprintf(err, errlen, "%s is empty", name);
        else
            snprintf(err, errlen, "%s %.*s %s", name, (int)(flen < QUOTE_MAX ? flen : QUOTE_MAX), f, what);
    }
    return CANDY_E_CIDR;
}

static int net_field(const char *name, const char *f, size_t flen, candy_cidr *c, char *err, size_t errlen)
{
    if (flen == 0 || scan_cidr(f, flen, c) != flen) return field_err(err, errlen, name, f, flen, "is not a CIDR");
    if (c->host != candy_net(*c)) return field_err(err, errlen, name, f, flen, "has host bits set");
    return 0;
}

int candy_rule_parse(const char *s, size_t len, candy_rule *out, char *err, size_t errlen)
{
    const char *c1 = memchr(s, ',', len);
    const char *c2 = c1 ? memchr(c1 + 1, ',', len - (size_t)(c1 + 1 - s)) : NULL;
    if (!c2 || memchr(c2 + 1, ',', len - (size_t)(c2 + 1 - s))) {
        if (err && errlen) snprintf(err, errlen, "expected DEV,DST,NEXT");
        return CANDY_E_CIDR;
    }
    candy_rule r;
    if (net_field("DEV", s, (size_t)(c1 - s), &r.dev, err, errlen)) return CANDY_E_CIDR;
    if (net_field("DST", c1 + 1, (size_t)(c2 - c1 - 1), &r.dst, err, errlen)) return CANDY_E_CIDR;
    const char *nx = c2 + 1;
    size_t nlen = len - (size_t)(nx - s);
    if (nlen == 0 || scan_ip(nx, nlen, &r.next) != nlen)
        return field_err(err, errlen, "NEXT", nx, nlen, "is not an IPv4 address");
    *out = r;
    return 0;
}

/* An empty rule is tolerated only as the last one after a ';' ("R1;"), so
 * ";" alone and "R1;;R2" are errors. On error *n is the number of rules
 * stored so far. */
int candy_rules_parse(const char *s, candy_rule *out, size_t cap, size_t *n, char *err, size_t errlen)
{
    *n = 0;
    for (size_t k = 1; *s; k++) {
        const char *semi = strchr(s, ';');
        size_t len = semi ? (size_t)(semi - s) : strlen(s);
        if (len == 0) {
            if (err && errlen) snprintf(err, errlen, "rule %zu: empty", k);
            return CANDY_E_CIDR;
        }
        if (*n == cap) {
            if (err && errlen) snprintf(err, errlen, "more than %zu rules", cap);
            return -E2BIG;
        }
        char why[96];
        if (candy_rule_parse(s, len, &out[*n], why, sizeof why)) {
            if (err && errlen) snprintf(err, errlen, "rule %zu: %s", k, why);
            return CANDY_E_CIDR;
        }
        ++*n;
        s += len + (semi != NULL);
    }
    return 0;
}

size_t candy_route_build(const candy_rule *rules, size_t nrules, size_t *pos, uint32_t ip,
                         uint8_t out[CANDY_ROUTE_MAX_LEN])
{
    size_t i = *pos, cnt = 0;
    /* Stops right after the batch's last entry, so the next call resumes
     * with the first rule not yet looked at. */
    for (; i < nrules && cnt < CANDY_ROUTE_BATCH; i++) {
        const candy_rule *r = &rules[i];
        if ((ip & candy_mask(r->dev.prefix)) != candy_net(r->dev)) continue;
        uint8_t *e = out + 4 + 12 * cnt++;
        candy_put32(e, candy_net(r->dst));
        candy_put32(e + 4, candy_mask(r->dst.prefix));
        candy_put32(e + 8, r->next);
    }
    *pos = i < nrules ? i : nrules;
    if (cnt == 0) return 0;
    out[0] = CANDY_ROUTE;
    out[1] = (uint8_t)cnt;
    out[2] = out[3] = 0;
    return 4 + 12 * cnt;
}

/* ------------------------------------------------------------------ DHCP */
int candy_dhcp_alloc(const candy_cidr *dhcp, uint32_t *cursor, candy_cidr want, candy_taken_fn taken, void *ud,
                     candy_cidr *out)
{
    if (want.prefix == dhcp->prefix && candy_net(want) == candy_net(*dhcp) && candy_host_valid(want) &&
        !taken(ud, want.host)) {
        *out = want;
        return 0;
    }
    if (dhcp->prefix >= 31) return -ENOSPC; /* no valid host at all */
    /* Moving the cursor into the network guarantees that next() comes back
     * to the start, hence that the walk ends. It may take 2^(32-prefix)
     * steps (2^32 for a /0 with everything taken); the caller bounds that
     * by the network it accepts in its configuration. */
    uint32_t mask = candy_mask(dhcp->prefix), start = candy_net(*dhcp) | (*cursor & ~mask);
    candy_cidr c = { start, dhcp->prefix };
    /* The start itself is the last candidate: a freed address at the
     * cursor is found when it is the only one left. */
    for (;;) {
        c.host = candy_next(c);
        if (candy_host_valid(c) && !taken(ud, c.host)) break;
        if (c.host == start) return -ENOSPC;
    }
    *out = c;
    *cursor = c.host;
    return 0;
}
