/* test_candy_proto.c — candy_proto.c against candy.md: message layouts and
 * hashes (§5, §5.9 vectors), CIDRs (§3, §5.3, §6.3), broadcast (§6.4),
 * SD-WAN rules and ROUTE batching (§3, §5.7, §6.5), allocation (§6.3).
 * Parsers are fed exact-size heap copies so that ASan catches any read
 * past the length they are given. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include "../candy_proto.h"

static const candy_secret PASS = { "pass", 4 };
static const int64_t TS = 1700000000; /* 0x6553F100, §5.9 */

/* A heap copy of exactly n bytes (no terminator): reading past it is an
 * ASan error. */
static void *dup_exact(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    cr_assert_not_null(q);
    if (n) memcpy(q, p, n);
    return q;
}

static void unhex(const char *h, uint8_t *out, size_t n)
{
    cr_assert_eq(strlen(h), 2 * n);
    cr_assert_eq(sodium_hex2bin(out, n, h, 2 * n, NULL, NULL, NULL), 0);
}

static void init(void) { cr_assert_geq(sodium_init(), 0); }

/* ================================================================== proto */
TestSuite(proto, .init = init);

/* §5.9: the AUTH message for 10.0.0.2, password "pass", ts 1700000000. */
Test(proto, auth_vector_is_byte_exact)
{
    uint8_t want[CANDY_AUTH_LEN], got[CANDY_AUTH_LEN];
    unhex("000a000002000000006553f100"
          "7debcd43a998fc4ce92032771ab0da90801fa223b9ae9c8dd7bbf8590a2bf46c",
          want, sizeof want);
    cr_assert_eq(candy_build_auth(got, &PASS, 0x0a000002, TS), CANDY_AUTH_LEN);
    cr_assert_arr_eq(got, want, sizeof want);
    uint32_t ip = 0;
    int64_t ts = 0;
    cr_assert_eq(candy_check_auth(want, sizeof want, &PASS, &ip, &ts), CANDY_OK);
    cr_assert_eq(ip, 0x0a000002);
    cr_assert_eq(ts, TS);
}

/* §5.9: EXPTTUN hash = SHA256("pass" ‖ ts), whatever the cidr (§5.3). */
Test(proto, expttun_vector_hash_ignores_cidr)
{
    uint8_t h[CANDY_HASH_LEN], a[CANDY_EXPTTUN_LEN], b[CANDY_EXPTTUN_LEN];
    unhex("ff1d1a62a9009ce8c3f9153bcfbc66e9e2dd47358056a3ed1465eb244b8e6f93", h, sizeof h);
    cr_assert_eq(candy_build_expttun(a, &PASS, (candy_cidr){ 0, 0 }, TS), CANDY_EXPTTUN_LEN);
    candy_build_expttun(b, &PASS, (candy_cidr){ 0x0a000005, 24 }, TS);
    uint8_t head[9] = { 0x02, 0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00 };
    cr_assert_arr_eq(a, head, sizeof head);
    cr_assert_str_eq((const char *)a + 9, "0.0.0.0/0");
    cr_assert_str_eq((const char *)b + 9, "10.0.0.5/24");
    cr_assert_arr_eq(a + 41, h, sizeof h);
    cr_assert_arr_eq(b + 41, h, sizeof h);
}

/* §5.9: VMAC hash for vmac "0123456789abcdef". */
Test(proto, vmac_vector_is_byte_exact)
{
    uint8_t h[CANDY_HASH_LEN], m[CANDY_VMAC_LEN], vmac[CANDY_VMAC_BYTES];
    unhex("40eb7fb4ab9b6deb36d2536ab92a1cefd3ae271f74d45f45c31d4a2ebae1f860", h, sizeof h);
    cr_assert_eq(candy_build_vmac(m, &PASS, (const uint8_t *)"0123456789abcdef", TS), CANDY_VMAC_LEN);
    cr_assert_eq(m[0], CANDY_VMAC);
    cr_assert_arr_eq(m + 1, "0123456789abcdef", 16);
    cr_assert_eq(candy_get64s(m + 17), TS);
    cr_assert_arr_eq(m + 25, h, sizeof h);
    int64_t ts = 0;
    cr_assert_eq(candy_check_vmac(m, sizeof m, &PASS, vmac, &ts), CANDY_OK);
    cr_assert_arr_eq(vmac, "0123456789abcdef", 16);
    cr_assert_eq(ts, TS);
}

/* §5: the minimum sizes of every kind (header constants vs the layouts). */
Test(proto, kind_sizes_match_layouts)
{
    cr_assert_eq(CANDY_AUTH_LEN, 1 + 4 + 8 + 32);
    cr_assert_eq(CANDY_FORWARD_MIN, 1 + 20);
    cr_assert_eq(CANDY_EXPTTUN_LEN, 1 + 8 + 32 + 32);
    cr_assert_eq(CANDY_UDP4CONN_LEN, 1 + 4 + 4 + 4 + 2);
    cr_assert_eq(CANDY_VMAC_LEN, 1 + 16 + 8 + 32);
    cr_assert_eq(CANDY_DISCOVERY_LEN, 1 + 4 + 4);
    cr_assert_eq(CANDY_GENERAL_MIN, 1 + 1 + 2 + 4 + 4);
    cr_assert_eq(CANDY_ROUTE_MAX_LEN, 4 + 12 * 101);
}

/* §5.2, §5.4, §5.6, §5.8: where the routing fields are. */
Test(proto, routing_fields_at_spec_offsets)
{
    uint8_t m[21] = { 0 };
    candy_put32(m + 17, 0x0a000009); /* FORWARD: IPv4 daddr at header offset 16 */
    cr_assert_eq(candy_forward_daddr(m), 0x0a000009);
    uint8_t d[9] = { 5, 10, 0, 0, 1, 255, 255, 255, 255 };
    cr_assert_eq(candy_src(d), 0x0a000001);
    cr_assert_eq(candy_dst(d), CANDY_BROADCAST);
    uint8_t g[12] = { 255, 0, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2 };
    cr_assert_eq(candy_general_src(g), 0x0a000001);
    cr_assert_eq(candy_general_dst(g), 0x0a000002);
}

/* §2: big-endian integers, signed 64-bit timestamps. */
Test(proto, integers_are_big_endian)
{
    uint8_t b[8];
    candy_put32(b, 0x01020304);
    cr_assert_arr_eq(b, ((uint8_t[]){ 1, 2, 3, 4 }), 4);
    cr_assert_eq(candy_get32(b), 0x01020304);
    candy_put64s(b, -2);
    cr_assert_arr_eq(b, ((uint8_t[]){ 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe }), 8);
    cr_assert_eq(candy_get64s(b), -2);
    candy_put64s(b, INT64_MIN);
    cr_assert_eq(candy_get64s(b), INT64_MIN);
}

/* §5.1/§5.3/§5.5: a message built with another password fails the hash. */
Test(proto, wrong_password_is_e_hash)
{
    const candy_secret other = { "pasS", 4 }, empty = { NULL, 0 };
    uint8_t a[CANDY_AUTH_LEN], e[CANDY_EXPTTUN_LEN], v[CANDY_VMAC_LEN];
    candy_build_auth(a, &other, 0x0a000002, TS);
    candy_build_expttun(e, &other, (candy_cidr){ 0x0a000002, 24 }, TS);
    candy_build_vmac(v, &other, (const uint8_t *)"0123456789abcdef", TS);
    uint32_t ip = 7;
    cr_assert_eq(candy_check_auth(a, sizeof a, &PASS, &ip, NULL), CANDY_E_HASH);
    cr_assert_eq(ip, 7, "outputs untouched on failure");
    cr_assert_eq(candy_check_expttun(e, sizeof e, &PASS, NULL, NULL), CANDY_E_HASH);
    cr_assert_eq(candy_check_vmac(v, sizeof v, &PASS, NULL, NULL), CANDY_E_HASH);
    cr_assert_eq(candy_check_auth(a, sizeof a, &empty, NULL, NULL), CANDY_E_HASH);
}

/* §5.1/§5.5: the hash covers the fields: changing one of them fails it. */
Test(proto, tampered_field_is_e_hash)
{
    uint8_t a[CANDY_AUTH_LEN], v[CANDY_VMAC_LEN];
    candy_build_auth(a, &PASS, 0x0a000002, TS);
    for (size_t i = 1; i < CANDY_AUTH_LEN; i++) {
        a[i] ^= 1;
        cr_assert_eq(candy_check_auth(a, sizeof a, &PASS, NULL, NULL), CANDY_E_HASH, "byte %zu", i);
        a[i] ^= 1;
    }
    candy_build_vmac(v, &PASS, (const uint8_t *)"0123456789abcdef", TS);
    v[3] ^= 0x20;
    cr_assert_eq(candy_check_vmac(v, sizeof v, &PASS, NULL, NULL), CANDY_E_HASH);
}

/* §5: shorter than the kind's size is an error at every length (exact heap
 * copies: no read past n); trailing bytes are ignored. */
static void short_and_trailing(size_t len, int (*check)(const uint8_t *, size_t), const uint8_t *msg)
{
    for (size_t n = 0; n < len; n++) {
        uint8_t *q = dup_exact(msg, n);
        cr_assert_eq(check(q, n), CANDY_E_SHORT, "length %zu of %zu", n, len);
        free(q);
    }
    uint8_t big[CANDY_EXPTTUN_LEN + 16];
    memcpy(big, msg, len);
    memset(big + len, 0xa5, 16);
    uint8_t *q = dup_exact(big, len + 16);
    cr_assert_eq(check(q, len + 16), CANDY_OK, "trailing bytes");
    free(q);
    q = dup_exact(msg, len);
    cr_assert_eq(check(q, len), CANDY_OK, "exact length");
    free(q);
}
static int ck_auth(const uint8_t *p, size_t n) { return candy_check_auth(p, n, &PASS, NULL, NULL); }
static int ck_expttun(const uint8_t *p, size_t n) { return candy_check_expttun(p, n, &PASS, NULL, NULL); }
static int ck_vmac(const uint8_t *p, size_t n) { return candy_check_vmac(p, n, &PASS, NULL, NULL); }

Test(proto, short_is_e_short_and_trailing_bytes_accepted)
{
    uint8_t a[CANDY_AUTH_LEN], e[CANDY_EXPTTUN_LEN], v[CANDY_VMAC_LEN];
    candy_build_auth(a, &PASS, 0x0a000002, TS);
    candy_build_expttun(e, &PASS, (candy_cidr){ 0x0a000002, 24 }, TS);
    candy_build_vmac(v, &PASS, (const uint8_t *)"0123456789abcdef", TS);
    short_and_trailing(CANDY_AUTH_LEN, ck_auth, a);
    short_and_trailing(CANDY_EXPTTUN_LEN, ck_expttun, e);
    short_and_trailing(CANDY_VMAC_LEN, ck_vmac, v);
}

/* §6.2: EXPTTUN whose cidr does not parse is an error — after the hash. */
Test(proto, expttun_bad_cidr_is_e_cidr)
{
    uint8_t e[CANDY_EXPTTUN_LEN];
    const char *bad[] = { "", "10.0.0.1", "10.0.0.1/33", "nonsense", "10.0.0.256/24" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        candy_build_expttun(e, &PASS, (candy_cidr){ 0, 0 }, TS);
        memset(e + 9, 0, CANDY_CIDR_FIELD);
        memcpy(e + 9, bad[i], strlen(bad[i]));
        candy_cidr w = { 1, 1 };
        cr_assert_eq(candy_check_expttun(e, sizeof e, &PASS, &w, NULL), CANDY_E_CIDR, "%s", bad[i]);
        cr_assert_eq(w.host, 1);
    }
    memset(e + 9, 'x', CANDY_CIDR_FIELD); /* no NUL in the field at all */
    cr_assert_eq(candy_check_expttun(e, sizeof e, &PASS, NULL, NULL), CANDY_E_CIDR);
    e[41] ^= 1; /* hash is checked first */
    cr_assert_eq(candy_check_expttun(e, sizeof e, &PASS, NULL, NULL), CANDY_E_HASH);
}

/* §5.1/§5.3/§5.5: what the builders write the checkers read back, with any
 * password (also empty) and any timestamp. */
Test(proto, build_check_round_trips)
{
    const candy_secret pws[] = { { NULL, 0 }, { "pass", 4 }, { "p\0w", 3 } };
    const int64_t tss[] = { 0, -1, TS, INT64_MAX, INT64_MIN };
    const candy_cidr cs[] = { { 0, 0 }, { 0x0a000005, 24 }, { 0xffffffff, 32 }, { 0xc0a80101, 16 } };
    for (size_t p = 0; p < 3; p++)
        for (size_t t = 0; t < 5; t++)
            for (size_t c = 0; c < 4; c++) {
                uint8_t a[CANDY_AUTH_LEN], e[CANDY_EXPTTUN_LEN], v[CANDY_VMAC_LEN];
                uint8_t mac[CANDY_VMAC_BYTES], macout[CANDY_VMAC_BYTES];
                uint32_t ip;
                int64_t ts;
                candy_cidr w;
                memset(mac, (int)(p * 16 + c), sizeof mac);
                candy_build_auth(a, &pws[p], cs[c].host, tss[t]);
                cr_assert_eq(candy_check_auth(a, sizeof a, &pws[p], &ip, &ts), CANDY_OK);
                cr_assert(ip == cs[c].host && ts == tss[t]);
                candy_build_expttun(e, &pws[p], cs[c], tss[t]);
                cr_assert_eq(candy_check_expttun(e, sizeof e, &pws[p], &w, &ts), CANDY_OK);
                cr_assert(w.host == cs[c].host && w.prefix == cs[c].prefix && ts == tss[t]);
                candy_build_vmac(v, &pws[p], mac, tss[t]);
                cr_assert_eq(candy_check_vmac(v, sizeof v, &pws[p], macout, &ts), CANDY_OK);
                cr_assert_arr_eq(macout, mac, sizeof mac);
                cr_assert_eq(ts, tss[t]);
            }
}

Test(proto, strerror_names_every_code)
{
    cr_assert_str_eq(candy_strerror(CANDY_OK), "ok");
    cr_assert_str_eq(candy_strerror(CANDY_E_SHORT), "message too short");
    cr_assert_str_eq(candy_strerror(CANDY_E_HASH), "hash does not match the password");
    cr_assert_str_eq(candy_strerror(CANDY_E_CIDR), "bad cidr");
    cr_assert_str_eq(candy_strerror(-ENOSPC), "all addresses in the network are assigned");
    cr_assert_str_eq(candy_strerror(-E2BIG), "too many rules");
    cr_assert_str_eq(candy_strerror(12345), "unknown error");
}

/* ================================================================== cidr */
TestSuite(cidr);

static int parse_exact(const char *s, size_t max, candy_cidr *c)
{
    char *q = dup_exact(s, max);
    int r = candy_cidr_parse(q, max, c);
    free(q);
    return r;
}

/* §5.3/§6.3: a.b.c.d/n, at most max bytes, up to the first NUL. */
Test(cidr, parse_accepts_strict_form)
{
    static const struct {
        const char *s;
        size_t max;
        uint32_t host;
        unsigned prefix;
    } ok[] = {
        { "10.0.0.1/24", 11, 0x0a000001, 24 },
        { "10.0.0.1/24", 12, 0x0a000001, 24 }, /* with the terminator */
        { "0.0.0.0/0", 9, 0, 0 },
        { "255.255.255.255/32", 18, 0xffffffff, 32 },
        { "192.168.100.200/8", 18, 0xc0a864c8, 8 },
        { "10.0.0.1/24\0\0\0", 14, 0x0a000001, 24 },
        { "10.0.0.1/24\0x7", 14, 0x0a000001, 24 }, /* after the NUL: ignored, as natively */
        { "10.0.0.1/24", 10, 0x0a000001, 2 }, /* max cuts the text: "10.0.0.1/2" */
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        candy_cidr c = { 0, 99 };
        cr_assert_eq(parse_exact(ok[i].s, ok[i].max, &c), 0, "%s max %zu", ok[i].s, ok[i].max);
        cr_assert(c.host == ok[i].host && c.prefix == ok[i].prefix, "%s", ok[i].s);
    }
}

/* §5.3: everything else is CANDY_E_CIDR, and *out is left alone. Leading
 * zeros are refused (inet_aton would read "010" as octal). */
Test(cidr, parse_rejects_everything_else)
{
    static const struct {
        const char *s;
        size_t max;
    } bad[] = {
        { "256.0.0.1/24", 12 },   { "10.0.0.1/33", 11 },   { "10.0.0.1", 8 },        { "10.0.0.1/24x", 12 },
        { " 10.0.0.1/24", 12 },   { "10.0.0.1/24 ", 12 },  { "10.0.0.1/2x\0", 13 }, { "10.0.0.1/\0" "24", 12 },
        { "010.0.0.1/24", 12 },   { "10.0.0.01/24", 12 },  { "10.0.0.1/024", 12 },   { "10.0.0.1/00", 11 },
        { "1000.0.0.1/8", 12 },   { "10.0.0.1/100", 12 },  { "+10.0.0.1/24", 12 },   { "10.0.0.1/-1", 11 },
        { "10.0.0.1/+8", 11 },    { "10.0.0/24", 9 },      { "10.0.0.1.2/24", 13 },  { "10..0.1/24", 10 },
        { "10.0.0.1/", 9 },       { "/24", 3 },            { "", 0 },                { "\0", 1 },
        { "10.0.0.1//24", 12 },   { "10.0.0.1 /24", 12 },  { "10.0.0.1/2 4", 12 },   { "10.0.0.1/24", 9 },
        { "a.b.c.d/8", 9 },       { "0x0a.0.0.1/8", 12 },  { "10.0.0.-1/8", 11 },    { "10.0.0.1\0/24", 12 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        candy_cidr c = { 7, 7 };
        cr_assert_eq(parse_exact(bad[i].s, bad[i].max, &c), CANDY_E_CIDR, "case %zu \"%s\"", i, bad[i].s);
        cr_assert(c.host == 7 && c.prefix == 7);
    }
}

/* §5.3: a 32-byte field without any NUL is read to its end and no further. */
Test(cidr, field_without_nul_is_bounded)
{
    char f[CANDY_CIDR_FIELD];
    memset(f, '1', sizeof f);
    candy_cidr c;
    cr_assert_eq(parse_exact(f, sizeof f, &c), CANDY_E_CIDR);
    memset(f, 0, sizeof f);
    memcpy(f, "10.0.0.1/24", 11);
    cr_assert_eq(parse_exact(f, sizeof f, &c), 0);
    memset(f + 11, '0', sizeof f - 11); /* "10.0.0.1/24000…" */
    cr_assert_eq(parse_exact(f, sizeof f, &c), CANDY_E_CIDR);
}

/* §6.3: format and parse are inverse; the longest text fits the 19 bytes. */
Test(cidr, format_parse_round_trip)
{
    const candy_cidr cs[] = { { 0, 0 }, { 0x0a000001, 24 }, { 0xffffffff, 32 }, { 0x01020304, 9 }, { 0xc0a80001, 31 } };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        char b[19];
        candy_cidr c;
        size_t n = candy_cidr_format(cs[i], b, sizeof b);
        cr_assert_eq(n, strlen(b));
        cr_assert_eq(candy_cidr_parse(b, n + 1, &c), 0, "%s", b);
        cr_assert(c.host == cs[i].host && c.prefix == cs[i].prefix, "%s", b);
    }
    char b[19];
    cr_assert_eq(candy_cidr_format((candy_cidr){ 0xffffffff, 32 }, b, sizeof b), 18);
    cr_assert_str_eq(b, "255.255.255.255/32");
    char ip[16];
    cr_assert_str_eq(candy_ip_format(0x0a000002, ip, sizeof ip), "10.0.0.2");
    cr_assert_str_eq(candy_ip_format(0xffffffff, ip, sizeof ip), "255.255.255.255");
}

/* §3: NEXT-style addresses, same octet rules, no prefix. */
Test(cidr, ip_parse_is_exact)
{
    uint32_t ip = 0;
    cr_assert_eq(candy_ip_parse("10.0.0.2", &ip), 0);
    cr_assert_eq(ip, 0x0a000002);
    cr_assert_eq(candy_ip_parse("0.0.0.0", &ip), 0);
    cr_assert_eq(ip, 0);
    const char *bad[] = { "", "10.0.0", "10.0.0.2/24", "10.0.0.2 ", "010.0.0.2", "10.0.0.256", "x.y", "1.2.3.4." };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ip = 9;
        cr_assert_eq(candy_ip_parse(bad[i], &ip), CANDY_E_CIDR, "%s", bad[i]);
        cr_assert_eq(ip, 9);
    }
}

/* §6.3: mask, net, next() wrapping inside the network, valid hosts. */
Test(cidr, mask_next_and_valid)
{
    cr_assert_eq(candy_mask(0), 0);
    cr_assert_eq(candy_mask(1), 0x80000000u);
    cr_assert_eq(candy_mask(24), 0xffffff00u);
    cr_assert_eq(candy_mask(32), 0xffffffffu);
    cr_assert_eq(candy_net((candy_cidr){ 0x0a0000ff, 24 }), 0x0a000000);
    cr_assert_eq(candy_next((candy_cidr){ 0x0a000001, 24 }), 0x0a000002);
    cr_assert_eq(candy_next((candy_cidr){ 0x0a0000ff, 24 }), 0x0a000000);
    cr_assert_eq(candy_next((candy_cidr){ 0xffffffff, 0 }), 0);
    cr_assert_eq(candy_next((candy_cidr){ 0x0a000001, 32 }), 0x0a000001);
    cr_assert(candy_host_valid((candy_cidr){ 0x0a000001, 24 }));
    cr_assert(candy_host_valid((candy_cidr){ 0x0a0000fe, 24 }));
    cr_assert_not(candy_host_valid((candy_cidr){ 0x0a000000, 24 }));
    cr_assert_not(candy_host_valid((candy_cidr){ 0x0a0000ff, 24 }));
    cr_assert(candy_host_valid((candy_cidr){ 0x0a000001, 30 }));
    cr_assert_not(candy_host_valid((candy_cidr){ 0x0a000001, 31 }));
    cr_assert_not(candy_host_valid((candy_cidr){ 0x0a000000, 31 }));
    cr_assert_not(candy_host_valid((candy_cidr){ 0x0a000001, 32 }));
}

/* ================================================================== broadcast */
TestSuite(broadcast);

/* §6.4: multicast and 255.255.255.255 always. */
Test(broadcast, multicast_and_limited_always)
{
    cr_assert(candy_is_broadcast(0xe0000001, NULL));      /* 224.0.0.1 */
    cr_assert(candy_is_broadcast(0xeffffffa, NULL));      /* 239.255.255.250 */
    cr_assert(candy_is_broadcast(0xffffffff, NULL));
    cr_assert_not(candy_is_broadcast(0xdfffffff, NULL)); /* 223.255.255.255 */
    cr_assert_not(candy_is_broadcast(0xf0000001, NULL)); /* 240.0.0.1: not multicast */
    cr_assert_not(candy_is_broadcast(0x0a0000ff, NULL)); /* no DHCP: no directed broadcast */
}

/* §6.4: the directed broadcast of the DHCP network, only with DHCP. */
Test(broadcast, directed_only_for_dhcp_network)
{
    candy_cidr d = { 0x0a000007, 24 }; /* host part is the cursor: irrelevant */
    cr_assert(candy_is_broadcast(0x0a0000ff, &d));
    cr_assert_not(candy_is_broadcast(0x0a0000fe, &d));
    cr_assert_not(candy_is_broadcast(0x0a0001ff, &d));
    cr_assert_not(candy_is_broadcast(0x0a000000, &d));
    candy_cidr d16 = { 0x0a000000, 16 };
    cr_assert(candy_is_broadcast(0x0a00ffff, &d16));
    cr_assert_not(candy_is_broadcast(0x0a0000ff, &d16));
    candy_cidr d31 = { 0x0a000000, 31 }, d32 = { 0x0a000001, 32 };
    cr_assert_not(candy_is_broadcast(0x0a000001, &d31)); /* /31 and /32 have none */
    cr_assert_not(candy_is_broadcast(0x0a000001, &d32));
}

/* ================================================================== rules */
TestSuite(rules);

static int rule(const char *s, candy_rule *r, char *err)
{
    size_t n = strlen(s);
    char *q = dup_exact(s, n);
    int rc = candy_rule_parse(q, n, r, err, 80);
    free(q);
    return rc;
}

/* §3: DEV,DST,NEXT with network addresses for DEV and DST. */
Test(rules, rule_parses_dev_dst_next)
{
    candy_rule r;
    char err[80] = "";
    cr_assert_eq(rule("10.0.0.0/24,192.168.1.0/24,10.0.0.2", &r, err), 0, "%s", err);
    cr_assert(r.dev.host == 0x0a000000 && r.dev.prefix == 24);
    cr_assert(r.dst.host == 0xc0a80100 && r.dst.prefix == 24);
    cr_assert_eq(r.next, 0x0a000002);
    cr_assert_eq(rule("0.0.0.0/0,0.0.0.0/0,10.0.0.1", &r, err), 0, "%s", err);
    /* only len bytes are read */
    cr_assert_eq(candy_rule_parse("10.0.0.0/8,1.0.0.0/8,10.0.0.23", 29, &r, err, sizeof err), 0);
    cr_assert_eq(r.next, 0x0a000002);
}

/* §3: each way of being wrong, with a concrete reason. */
Test(rules, rule_rejects_with_reason)
{
    static const struct {
        const char *s, *err;
    } bad[] = {
        { "10.0.0.1/24,192.168.1.0/24,10.0.0.2", "DEV 10.0.0.1/24 has host bits set" },
        { "10.0.0.0/24,192.168.1.1/24,10.0.0.2", "DST 192.168.1.1/24 has host bits set" },
        { "10.0.0.0/24,192.168.1.0/24,x.y", "NEXT x.y is not an IPv4 address" },
        { "10.0.0.0/24,192.168.1.0/24,10.0.0.2/32", "NEXT 10.0.0.2/32 is not an IPv4 address" },
        { "10.0.0.0,192.168.1.0/24,10.0.0.2", "DEV 10.0.0.0 is not a CIDR" },
        { "10.0.0.0/24,192.168.1.0/33,10.0.0.2", "DST 192.168.1.0/33 is not a CIDR" },
        { "10.0.0.0/24, 192.168.1.0/24,10.0.0.2", "DST  192.168.1.0/24 is not a CIDR" },
        { "10.0.0.0/24,,10.0.0.2", "DST is empty" },
        { "10.0.0.0/24,192.168.1.0/24,", "NEXT is empty" },
        { "10.0.0.0/24,192.168.1.0/24", "expected DEV,DST,NEXT" },
        { "10.0.0.0/24,192.168.1.0/24,10.0.0.2,10.0.0.3", "expected DEV,DST,NEXT" },
        { "", "expected DEV,DST,NEXT" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        candy_rule r;
        char err[80] = "";
        cr_assert_eq(rule(bad[i].s, &r, err), CANDY_E_CIDR, "%s", bad[i].s);
        cr_assert_str_eq(err, bad[i].err);
    }
    candy_rule r;
    cr_assert_eq(candy_rule_parse("x", 1, &r, NULL, 0), CANDY_E_CIDR); /* err is optional */
}

/* §3: "R1;R2;…"; empty is none, a trailing ';' is tolerated. */
Test(rules, list_parses_and_tolerates_trailing_semicolon)
{
    candy_rule r[4];
    size_t n = 99;
    char err[80] = "";
    cr_assert_eq(candy_rules_parse("", r, 4, &n, err, sizeof err), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(candy_rules_parse("10.0.0.0/24,192.168.1.0/24,10.0.0.2;10.0.0.0/24,172.16.0.0/12,10.0.0.3", r, 4,
                                   &n, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_assert(r[1].dst.host == 0xac100000 && r[1].dst.prefix == 12 && r[1].next == 0x0a000003);
    cr_assert_eq(candy_rules_parse("10.0.0.0/24,192.168.1.0/24,10.0.0.2;", r, 4, &n, err, sizeof err), 0);
    cr_assert_eq(n, 1);
}

/* §3: an empty rule elsewhere, or a bad rule, names its position. */
Test(rules, list_errors_name_the_rule)
{
    candy_rule r[4];
    size_t n;
    char err[80] = "";
    cr_assert_eq(candy_rules_parse("0.0.0.0/0,1.0.0.0/8,1.1.1.1;;0.0.0.0/0,2.0.0.0/8,1.1.1.1", r, 4, &n, err,
                                   sizeof err),
                 CANDY_E_CIDR);
    cr_assert_str_eq(err, "rule 2: empty");
    cr_assert_eq(n, 1);
    cr_assert_eq(candy_rules_parse(";", r, 4, &n, err, sizeof err), CANDY_E_CIDR);
    cr_assert_str_eq(err, "rule 1: empty");
    cr_assert_eq(candy_rules_parse("0.0.0.0/0,1.0.0.0/8,1.1.1.1;0.0.0.0/0,2.0.0.1/8,1.1.1.1", r, 4, &n, err,
                                   sizeof err),
                 CANDY_E_CIDR);
    cr_assert_str_eq(err, "rule 2: DST 2.0.0.1/8 has host bits set");
    cr_assert_eq(candy_rules_parse("0.0.0.0/0,1.0.0.0/8,1.1.1.1 ", r, 4, &n, err, sizeof err), CANDY_E_CIDR);
    cr_assert_str_eq(err, "rule 1: NEXT 1.1.1.1  is not an IPv4 address");
}

/* §3: more rules than the caller has room for is -E2BIG; exactly cap fits. */
Test(rules, list_more_than_cap_is_e2big)
{
    const char *three = "0.0.0.0/0,1.0.0.0/8,1.1.1.1;0.0.0.0/0,2.0.0.0/8,1.1.1.1;0.0.0.0/0,3.0.0.0/8,1.1.1.1";
    candy_rule r[3];
    size_t n;
    char err[80] = "";
    cr_assert_eq(candy_rules_parse(three, r, 2, &n, err, sizeof err), -E2BIG);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(err, "more than 2 rules");
    cr_assert_eq(candy_rules_parse(three, r, 3, &n, err, sizeof err), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(r[2].dst.host, 0x03000000);
    cr_assert_eq(candy_rules_parse(three, NULL, 0, &n, NULL, 0), -E2BIG);
}

/* ================================================================== route */
TestSuite(route);

/* rule i: DEV 10.0.0.0/24 (matches 10.0.0.5) unless odd(i) says otherwise,
 * DST 100.(i>>8).(i&255).0/24, NEXT 10.0.0.<1 + i % 200>. */
static candy_rule mkrule(size_t i, bool match)
{
    candy_rule r = { .dev = { match ? 0x0a000000u : 0x0a000100u, 24 },
                     .dst = { 0x64000000u | (uint32_t)i << 8, 24 },
                     .next = 0x0a000001u + (uint32_t)(i % 200) };
    return r;
}

/* Checks one ROUTE message: header, then entries for the matching rules in
 * order, starting with the one numbered *k; advances *k. */
static void check_msg(const uint8_t *m, size_t len, size_t want, const candy_rule *rules, size_t *k)
{
    cr_assert_eq(len, 4 + 12 * want);
    cr_assert_eq(m[0], CANDY_ROUTE);
    cr_assert_eq(m[1], want);
    cr_assert(m[2] == 0 && m[3] == 0);
    for (size_t e = 0; e < want; e++, (*k)++) {
        while (rules[*k].dev.host != 0x0a000000u) (*k)++;
        const uint8_t *p = m + 4 + 12 * e;
        cr_assert_eq(candy_get32(p), rules[*k].dst.host);
        cr_assert_eq(candy_get32(p + 4), 0xffffff00u);
        cr_assert_eq(candy_get32(p + 8), rules[*k].next);
    }
}

/* §6.5: 250 matching rules go out as 101, 101, 48 entries, then nothing. */
Test(route, batches_of_101)
{
    static candy_rule rules[250];
    for (size_t i = 0; i < 250; i++) rules[i] = mkrule(i, true);
    uint8_t m[CANDY_ROUTE_MAX_LEN];
    size_t pos = 0, k = 0;
    const size_t want[] = { 101, 101, 48 }, after[] = { 101, 202, 250 };
    for (size_t b = 0; b < 3; b++) {
        size_t len = candy_route_build(rules, 250, &pos, 0x0a000005, m);
        check_msg(m, len, want[b], rules, &k);
        cr_assert_eq(pos, after[b]);
    }
    cr_assert_eq(candy_route_build(rules, 250, &pos, 0x0a000005, m), 0);
    cr_assert_eq(pos, 250);
}

/* §6.5: only rules whose DEV contains the client's address become entries;
 * the others are skipped without ending a batch early. */
Test(route, skips_non_matching_rules)
{
    static candy_rule rules[302];
    for (size_t i = 0; i < 300; i++) rules[i] = mkrule(i, i % 3 != 2); /* 200 match */
    rules[300] = mkrule(300, false);
    rules[301] = mkrule(301, false);
    uint8_t m[CANDY_ROUTE_MAX_LEN];
    size_t pos = 0, k = 0;
    check_msg(m, candy_route_build(rules, 302, &pos, 0x0a000005, m), 101, rules, &k);
    cr_assert_eq(pos, 151, "just after the 101st match (rule 150)");
    check_msg(m, candy_route_build(rules, 302, &pos, 0x0a000005, m), 99, rules, &k);
    cr_assert_eq(pos, 302);
    cr_assert_eq(candy_route_build(rules, 302, &pos, 0x0a000005, m), 0);
    cr_assert_eq(pos, 302);
}

/* §6.5: nothing is sent when no rule applies; DST host bits are not sent. */
Test(route, none_matching_sends_nothing)
{
    candy_rule rules[3] = { mkrule(0, false), mkrule(1, false), mkrule(2, false) };
    uint8_t m[CANDY_ROUTE_MAX_LEN];
    size_t pos = 0;
    cr_assert_eq(candy_route_build(rules, 3, &pos, 0x0a000005, m), 0);
    cr_assert_eq(pos, 3);
    cr_assert_eq(candy_route_build(rules, 0, &pos, 0x0a000005, m), 0);
    candy_rule all = { { 0, 0 }, { 0xc0a80100, 24 }, 0x0a000002 }; /* DEV 0.0.0.0/0 */
    pos = 0;
    cr_assert_eq(candy_route_build(&all, 1, &pos, 0x01020304, m), 16);
    const uint8_t want[16] = { 6, 1, 0, 0, 192, 168, 1, 0, 255, 255, 255, 0, 10, 0, 0, 2 };
    cr_assert_arr_eq(m, want, sizeof want);
}

/* ================================================================== dhcp */
TestSuite(dhcp);

/* The hosts owned by other clients. */
typedef struct owners {
    uint32_t h[64];
    size_t n;
} owners;

static bool is_taken(void *ud, uint32_t host)
{
    const owners *o = ud;
    for (size_t i = 0; i < o->n; i++)
        if (o->h[i] == host) return true;
    return false;
}

static void take(owners *o, uint32_t host)
{
    cr_assert_lt(o->n, 64);
    o->h[o->n++] = host;
}

static const candy_cidr ANY = { 0, 0 }; /* a first-time client's request */

/* §6.3: allocation is sequential from the configured host. */
Test(dhcp, sequential_from_configured_host)
{
    candy_cidr d = { 0x0a000000, 24 }, got;
    uint32_t cur = d.host;
    owners o = { .n = 0 };
    for (uint32_t i = 1; i <= 3; i++) {
        cr_assert_eq(candy_dhcp_alloc(&d, &cur, ANY, is_taken, &o, &got), 0);
        cr_assert(got.host == 0x0a000000 + i && got.prefix == 24);
        cr_assert_eq(cur, got.host);
        take(&o, got.host);
    }
    /* a freed lower address is not reused before the wrap */
    o.n = 0;
    cr_assert_eq(candy_dhcp_alloc(&d, &cur, ANY, is_taken, &o, &got), 0);
    cr_assert_eq(got.host, 0x0a000004);
    candy_cidr d5 = { 0x0a000005, 24 };
    cur = d5.host;
    cr_assert_eq(candy_dhcp_alloc(&d5, &cur, ANY, is_taken, &o, &got), 0);
    cr_assert_eq(got.host, 0x0a000006);
}

/* §6.3 step 1: a valid, free request in the network is granted as is. */
Test(dhcp, request_granted_as_is)
{
    candy_cidr d = { 0x0a000000, 24 }, got;
    uint32_t cur = 0x0a000007;
    owners o = { .n = 0 };
    cr_assert_eq(candy_dhcp_alloc(&d, &cur, (candy_cidr){ 0x0a000032, 24 }, is_taken, &o, &got), 0);
    cr_assert(got.host == 0x0a000032 && got.prefix == 24);
    cr_assert_eq(cur, 0x0a000007, "the cursor does not move");
}

/* §6.3 step 1 (ours): another prefix, another network, or an invalid host
 * is not granted: the walk hands out the next address instead. */
Test(dhcp, request_with_other_prefix_or_invalid_walks)
{
    candy_cidr d = { 0x0a000000, 24 }, got;
    owners o = { .n = 0 };
    const candy_cidr reqs[] = {
        { 0x0a000032, 16 }, { 0x0a000032, 25 }, { 0x0a000132, 24 },
        { 0x0a000000, 24 }, { 0x0a0000ff, 24 }, { 0, 0 },
    };
    for (size_t i = 0; i < sizeof reqs / sizeof *reqs; i++) {
        uint32_t cur = 0x0a000007;
        cr_assert_eq(candy_dhcp_alloc(&d, &cur, reqs[i], is_taken, &o, &got), 0);
        cr_assert(got.host == 0x0a000008 && got.prefix == 24, "request %zu", i);
        cr_assert_eq(cur, 0x0a000008);
    }
}

/* §6.3: a request owned by another client is not granted. */
Test(dhcp, request_taken_walks)
{
    candy_cidr d = { 0x0a000000, 24 }, got;
    uint32_t cur = 0x0a000001;
    owners o = { .n = 0 };
    take(&o, 0x0a000032);
    take(&o, 0x0a000002);
    cr_assert_eq(candy_dhcp_alloc(&d, &cur, (candy_cidr){ 0x0a000032, 24 }, is_taken, &o, &got), 0);
    cr_assert_eq(got.host, 0x0a000003, "skips the taken .2 as well");
    cr_assert_eq(cur, 0x0a000003);
}

/* §6.3: the walk wraps around the network, skipping .255 and .0. */
Test(dhcp, walk_wraps_around)
{
    candy_cidr d = { 0x0a000000, 24 }, got;
    uint32_t cur = 0x0a0000fe;
    owners o = { .n = 0 };
    take(&o, 0x0a000001);
    cr_assert_eq(candy_dhcp_alloc(&d, &cur, ANY, is_taken, &o, &got), 0);
    cr_assert_eq(got.host, 0x0a000002);
}

/* §6.3 (ours): a /29 hands out .1–.6, never .0 or .7, then is full; a full
 * network is -ENOSPC and leaves the cursor and *out alone. */
Test(dhcp, full_network_is_enospc_and_never_net_or_broadcast)
{
    candy_cidr d = { 0x0a000000, 29 }, got;
    uint32_t cur = d.host;
    owners o = { .n = 0 };
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(candy_dhcp_alloc(&d, &cur, ANY, is_taken, &o, &got), 0);
        cr_assert(got.host >= 0x0a000001 && got.host <= 0x0a000006, "got %08x", got.host);
        take(&o, got.host);
    }
    candy_cidr keep = { 1, 2 };
    got = keep;
    cr_assert_eq(candy_dhcp_alloc(&d, &cur, ANY, is_taken, &o, &got), -ENOSPC);
    cr_assert_eq(cur, 0x0a000006);
    cr_assert(got.host == 1 && got.prefix == 2);
    cr_assert_eq(candy_dhcp_alloc(&d, &cur, (candy_cidr){ 0x0a000003, 29 }, is_taken, &o, &got), -ENOSPC);
}

/* §6.3 (ours): the cursor's own address is the walk's last candidate, so
 * when it was freed and is the only one left it is found (the native walk
 * stops before it). */
Test(dhcp, freed_cursor_address_is_the_last_candidate)
{
    candy_cidr d = { 0x0a000000, 29 }, got;
    uint32_t cur = 0x0a000004;
    owners o = { .n = 0 };
    for (uint32_t h = 1; h <= 6; h++)
        if (h != 4)
            take(&o, 0x0a000000 + h);
    cr_assert_eq(candy_dhcp_alloc(&d, &cur, ANY, is_taken, &o, &got), 0);
    cr_assert_eq(got.host, 0x0a000004);
}

/* §6.3: /31 and /32 have no valid host. */
Test(dhcp, slash31_and_32_are_enospc)
{
    owners o = { .n = 0 };
    candy_cidr got;
    const candy_cidr ds[] = { { 0x0a000000, 31 }, { 0x0a000001, 31 }, { 0x0a000001, 32 } };
    for (size_t i = 0; i < 3; i++) {
        uint32_t cur = ds[i].host;
        cr_assert_eq(candy_dhcp_alloc(&ds[i], &cur, ds[i], is_taken, &o, &got), -ENOSPC);
        cr_assert_eq(candy_dhcp_alloc(&ds[i], &cur, ANY, is_taken, &o, &got), -ENOSPC);
    }
}

/* A cursor outside the network (e.g. a changed config) still walks inside
 * it and ends. */
Test(dhcp, cursor_outside_network_terminates)
{
    candy_cidr d = { 0x0a000000, 30 }, got;
    uint32_t cur = 0xc0a80501; /* host bits 01 -> start at 10.0.0.1 */
    owners o = { .n = 0 };
    cr_assert_eq(candy_dhcp_alloc(&d, &cur, ANY, is_taken, &o, &got), 0);
    cr_assert(got.host == 0x0a000002 && got.prefix == 30);
    take(&o, 0x0a000001);
    take(&o, 0x0a000002);
    cur = 0xc0a80503;
    cr_assert_eq(candy_dhcp_alloc(&d, &cur, ANY, is_taken, &o, &got), -ENOSPC);
}
