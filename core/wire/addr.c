/* Peer addresses: normalisation, text forms and AddrMangle (wire.md §5). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rdv/wire.h"

static sa_family_t family(const rdv_addr *a)
{
    return a->u.sa.sa_family;
}

static const uint8_t *v6_bytes(const rdv_addr *a)
{
    return a->u.v6.sin6_addr.s6_addr;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (size_t i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* §5.1: bytes 0..9 zero, bytes 10..11 "00 00" (compatible) or "ff ff"
 * (mapped), and not ::1, which must stay IPv6. */
static bool v6_embeds_v4(const uint8_t b[16])
{
    static const uint8_t zero[10];
    static const uint8_t loopback[16] = {[15] = 1};
    if (memcmp(b, zero, sizeof zero) != 0)
        return false;
    if (!((b[10] == 0 && b[11] == 0) || (b[10] == 0xFF && b[11] == 0xFF)))
        return false;
    return memcmp(b, loopback, sizeof loopback) != 0;
}

void rdv_addr_normalize(rdv_addr *a)
{
    if (family(a) != AF_INET6 || !v6_embeds_v4(v6_bytes(a)))
        return;
    uint8_t ip[4];
    memcpy(ip, v6_bytes(a) + 12, sizeof ip);
    rdv_addr_v4(a, ip, ntohs(a->u.v6.sin6_port));
}

void rdv_addr_v4(rdv_addr *a, const uint8_t ip[4], uint16_t port)
{
    memset(a, 0, sizeof *a);
    a->u.v4.sin_family = AF_INET;
    a->u.v4.sin_port = htons(port);
    memcpy(&a->u.v4.sin_addr, ip, 4);
    a->len = sizeof a->u.v4;
}

/* Normalised like every rdv_addr: mapped/compatible bytes give IPv4. */
void rdv_addr_v6(rdv_addr *a, const uint8_t ip[16], uint16_t port)
{
    memset(a, 0, sizeof *a);
    a->u.v6.sin6_family = AF_INET6;
    a->u.v6.sin6_port = htons(port);
    memcpy(&a->u.v6.sin6_addr, ip, 16);
    a->len = sizeof a->u.v6;
    rdv_addr_normalize(a);
}

int rdv_addr_from_sockaddr(rdv_addr *a, const struct sockaddr *sa, socklen_t len)
{
    if (len >= sizeof(struct sockaddr_in) && sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
        rdv_addr_v4(a, (const uint8_t *)&s->sin_addr, ntohs(s->sin_port));
        return 0;
    }
    if (len >= sizeof(struct sockaddr_in6) && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
        rdv_addr_v6(a, s->sin6_addr.s6_addr, ntohs(s->sin6_port));
        /* Link-local peers are only reachable through their interface. */
        if (family(a) == AF_INET6)
            a->u.v6.sin6_scope_id = s->sin6_scope_id;
        return 0;
    }
    return -EAFNOSUPPORT;
}

/* Strict decimal 0..65535, nothing else. */
static int parse_port(const char *s, uint16_t *port)
{
    if (*s == '\0')
        return -EINVAL;
    unsigned v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(*s - '0');
        if (v > 65535)
            return -EINVAL;
    }
    *port = (uint16_t)v;
    return 0;
}

static int parse_ip(rdv_addr *a, int fam, const char *ip, size_t n, uint16_t port)
{
    char text[INET6_ADDRSTRLEN];
    uint8_t b[16];
    if (n >= sizeof text)
        return -EINVAL;
    memcpy(text, ip, n);
    text[n] = '\0';
    if (inet_pton(fam, text, b) != 1)
        return -EINVAL;
    if (fam == AF_INET)
        rdv_addr_v4(a, b, port);
    else
        rdv_addr_v6(a, b, port);
    return 0;
}

/* "[v6]" or "[v6]:port"; "v4" or "v4:port"; a bare "v6" (two or more
 * colons) takes defport. */
int rdv_addr_parse(rdv_addr *a, const char *s, uint16_t defport)
{
    uint16_t port = defport;
    if (*s == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL)
            return -EINVAL;
        const char *rest = end + 1;
        if (*rest != '\0' && (*rest != ':' || parse_port(rest + 1, &port) < 0))
            return -EINVAL;
        return parse_ip(a, AF_INET6, s + 1, (size_t)(end - s - 1), port);
    }
    const char *colon = strchr(s, ':');
    if (colon != NULL && strchr(colon + 1, ':') != NULL)
        return parse_ip(a, AF_INET6, s, strlen(s), port);
    if (colon != NULL && parse_port(colon + 1, &port) < 0)
        return -EINVAL;
    return parse_ip(a, AF_INET, s, colon ? (size_t)(colon - s) : strlen(s), port);
}

char *rdv_addr_ip_str(const rdv_addr *a, char *buf, size_t len)
{
    const void *src = family(a) == AF_INET ? (const void *)&a->u.v4.sin_addr
                                           : (const void *)&a->u.v6.sin6_addr;
    if (len > 0 && inet_ntop(family(a), src, buf, (socklen_t)len) == NULL)
        snprintf(buf, len, "?");
    return buf;
}

char *rdv_addr_str(const rdv_addr *a, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN];
    rdv_addr_ip_str(a, ip, sizeof ip);
    snprintf(buf, len, family(a) == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
             (unsigned)rdv_addr_port(a));
    return buf;
}

uint16_t rdv_addr_port(const rdv_addr *a)
{
    switch (family(a)) {
    case AF_INET:
        return ntohs(a->u.v4.sin_port);
    case AF_INET6:
        return ntohs(a->u.v6.sin6_port);
    default:
        return 0;
    }
}

void rdv_addr_set_port(rdv_addr *a, uint16_t port)
{
    if (family(a) == AF_INET)
        a->u.v4.sin_port = htons(port);
    else if (family(a) == AF_INET6)
        a->u.v6.sin6_port = htons(port);
}

bool rdv_addr_same_ip(const rdv_addr *a, const rdv_addr *b)
{
    if (family(a) != family(b))
        return false;
    if (family(a) == AF_INET)
        return a->u.v4.sin_addr.s_addr == b->u.v4.sin_addr.s_addr;
    if (family(a) == AF_INET6)
        return memcmp(v6_bytes(a), v6_bytes(b), 16) == 0 &&
               a->u.v6.sin6_scope_id == b->u.v6.sin6_scope_id;
    return false;
}

bool rdv_addr_equal(const rdv_addr *a, const rdv_addr *b)
{
    return rdv_addr_same_ip(a, b) && rdv_addr_port(a) == rdv_addr_port(b);
}

bool rdv_addr_is_loopback(const rdv_addr *a)
{
    if (family(a) == AF_INET)
        return (ntohl(a->u.v4.sin_addr.s_addr) >> 24) == 127;
    return family(a) == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&a->u.v6.sin6_addr);
}

bool rdv_addr_is_v4(const rdv_addr *a)
{
    return family(a) == AF_INET;
}

socklen_t rdv_addr_to_sockaddr(const rdv_addr *a, int fam, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (fam == AF_INET && family(a) == AF_INET) {
        memcpy(out, &a->u.v4, sizeof a->u.v4);
        return sizeof a->u.v4;
    }
    if (fam == AF_INET6 && family(a) == AF_INET6) {
        memcpy(out, &a->u.v6, sizeof a->u.v6);
        return sizeof a->u.v6;
    }
    if (fam == AF_INET6 && family(a) == AF_INET) {
        /* Dual-stack socket: IPv4 peers are ::ffff:a.b.c.d (wire.md §5.4). */
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)out;
        s->sin6_family = AF_INET6;
        s->sin6_port = a->u.v4.sin_port;
        s->sin6_addr.s6_addr[10] = 0xFF;
        s->sin6_addr.s6_addr[11] = 0xFF;
        memcpy(&s->sin6_addr.s6_addr[12], &a->u.v4.sin_addr, 4);
        return sizeof *s;
    }
    return 0;
}

/* splitmix64 finaliser: every input bit affects every output bit. */
static uint64_t mix64(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9u;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBu;
    return x ^ (x >> 31);
}

uint64_t rdv_addr_hash(const rdv_addr *a)
{
    uint64_t h = mix64(((uint64_t)family(a) << 16) | rdv_addr_port(a));
    if (family(a) == AF_INET)
        return mix64(h ^ ntohl(a->u.v4.sin_addr.s_addr));
    if (family(a) == AF_INET6) {
        h = mix64(h ^ get_le64(v6_bytes(a)));
        h = mix64(h ^ get_le64(v6_bytes(a) + 8));
        return mix64(h ^ a->u.v6.sin6_scope_id);
    }
    return h;
}

/* ---- AddrMangle ---- */

static size_t mangle_v4(const rdv_addr *a, uint32_t tm, uint8_t out[16])
{
    const uint8_t *o = (const uint8_t *)&a->u.v4.sin_addr;
    uint32_t ip_le = (uint32_t)o[0] | (uint32_t)o[1] << 8 | (uint32_t)o[2] << 16 |
                     (uint32_t)o[3] << 24;
    /* §5.2 recipe: V = (A << 49) | (tm << 17) | L split into two 64-bit halves. */
    uint64_t A = (uint64_t)ip_le + tm;
    uint64_t L = (uint64_t)rdv_addr_port(a) + (tm & 0xFFFF);
    put_le64(out, L | ((uint64_t)tm << 17) | (A << 49));
    put_le64(out + 8, A >> 15);
    size_t n = 16;
    while (n > 0 && out[n - 1] == 0)
        n--;
    return n;
}

size_t rdv_addr_mangle(const rdv_addr *a, uint32_t tm, uint8_t out[RDV_ADDR_MANGLED_MAX])
{
    rdv_addr n = *a;
    rdv_addr_normalize(&n);
    if (family(&n) == AF_INET)
        return mangle_v4(&n, tm, out);
    if (family(&n) != AF_INET6)
        return 0;
    /* Address in network order, port little endian (§5.5). */
    uint16_t port = rdv_addr_port(&n);
    memcpy(out, v6_bytes(&n), 16);
    out[16] = (uint8_t)port;
    out[17] = (uint8_t)(port >> 8);
    return 18;
}

void rdv_addr_unmangle(const uint8_t *p, size_t n, rdv_addr *out)
{
    static const uint8_t unspecified[16];
    if (n == 18) {
        rdv_addr_v6(out, p, (uint16_t)(p[16] | p[17] << 8));
        return;
    }
    if (n > 16) {
        /* Upstream's fallback [::]:0, which normalises to 0.0.0.0:0. */
        rdv_addr_v6(out, unspecified, 0);
        return;
    }
    uint8_t buf[16] = {0};
    if (n > 0)
        memcpy(buf, p, n);
    uint64_t lo = get_le64(buf), hi = get_le64(buf + 8);
    /* §5.3 recipe; all arithmetic wraps, so garbage decodes to something. */
    uint32_t tm = (uint32_t)(lo >> 17);
    uint32_t ip = (uint32_t)((lo >> 49) | (hi << 15)) - tm;
    uint8_t o[4] = {(uint8_t)ip, (uint8_t)(ip >> 8), (uint8_t)(ip >> 16), (uint8_t)(ip >> 24)};
    rdv_addr_v4(out, o, (uint16_t)(lo - tm));
}

/* ------------------------------------------------------------------ 16-byte IPs */
static const uint8_t rdv_v4_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

void rdv_ip_pack(const rdv_addr *a, uint8_t ip[16])
{
    memcpy(ip, rdv_v4_prefix, 12);
    memset(ip + 12, 0, 4);
    if (a->u.sa.sa_family == AF_INET)
        memcpy(ip + 12, &a->u.v4.sin_addr, 4);
    else if (a->u.sa.sa_family == AF_INET6)
        memcpy(ip, &a->u.v6.sin6_addr, 16);
}

bool rdv_ip_is_v4(const uint8_t ip[16]) { return memcmp(ip, rdv_v4_prefix, 12) == 0; }

void rdv_ip_unpack(const uint8_t ip[16], uint16_t port, rdv_addr *out)
{
    if (rdv_ip_is_v4(ip))
        rdv_addr_v4(out, ip + 12, port);
    else
        rdv_addr_v6(out, ip, port);
}

bool rdv_ip_parse(const char *text, uint8_t ip[16])
{
    uint8_t b[16];
    rdv_addr a;
    if (inet_pton(AF_INET, text, b) == 1)
        rdv_addr_v4(&a, b, 0);
    else if (inet_pton(AF_INET6, text, b) == 1)
        rdv_addr_v6(&a, b, 0); /* normalises ::ffff:a.b.c.d */
    else
        return false;
    rdv_ip_pack(&a, ip);
    return true;
}

char *rdv_ip_str(const uint8_t ip[16], char *buf, size_t len)
{
    rdv_addr a;
    rdv_ip_unpack(ip, 0, &a);
    return rdv_addr_ip_str(&a, buf, len);
}
