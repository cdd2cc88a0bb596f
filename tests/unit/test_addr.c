/* Peer addresses and AddrMangle (wire.md §5). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rdv/wire.h"

static rdv_addr P(const char *s)
{
    rdv_addr a;
    cr_assert_eq(rdv_addr_parse(&a, s, 0), 0, "parse %s", s);
    return a;
}

static void assert_addr(const rdv_addr *a, const char *want)
{
    char buf[RDV_ADDR_STRLEN];
    cr_assert_str_eq(rdv_addr_str(a, buf, sizeof buf), want);
}

/* wire.md §5.6 worked examples. */
static const struct {
    const char *in;
    uint32_t tm;
    const char *decoded; /* normalised form after decoding */
    size_t n;
    uint8_t enc[18];
} rows[] = {
    {"192.168.16.32:21116", 0x12345678, "192.168.16.32:21116", 10,
     {0xf4, 0xa8, 0xf0, 0xac, 0x68, 0x24, 0x70, 0xfe, 0x89, 0x64}},
    {"203.0.113.7:50000", 0xDEADBEEF, "203.0.113.7:50000", 11,
     {0x3f, 0x82, 0xdf, 0x7d, 0x5b, 0xbd, 0x75, 0x7f, 0x3d, 0xcc, 0x01}},
    {"1.2.3.4:443", 0, "1.2.3.4:443", 10, {0xbb, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x06, 0x08}},
    {"10.0.0.1:0", 0xFFFFFFFF, "10.0.0.1:0", 11,
     {0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 0x13, 0x00, 0x00, 0x02, 0x02}},
    {"0.0.0.0:0", 0, "0.0.0.0:0", 0, {0}},
    {"[::ffff:198.51.100.20]:40000", 0x00010000, "198.51.100.20:40000", 10,
     {0x40, 0x9c, 0x00, 0x00, 0x02, 0x00, 0x8c, 0x67, 0xca, 0x28}},
    {"[2001:db8::1]:8080", 0, "[2001:db8::1]:8080", 18,
     {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x90, 0x1f}},
    {"[::1]:21116", 0, "[::1]:21116", 18, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x7c, 0x52}},
    {"[::2]:80", 0, "0.0.0.2:80", 10, {0x50, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04}},
};

Test(addr, mangle_examples)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        rdv_addr a = P(rows[i].in);
        uint8_t out[RDV_ADDR_MANGLED_MAX];
        size_t n = rdv_addr_mangle(&a, rows[i].tm, out);
        cr_assert_eq(n, rows[i].n, "%s: length %zu", rows[i].in, n);
        cr_assert_arr_eq(out, rows[i].enc, n, "%s", rows[i].in);
    }
}

Test(addr, unmangle_examples)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        rdv_addr d, want = P(rows[i].decoded);
        rdv_addr_unmangle(rows[i].enc, rows[i].n, &d);
        cr_assert(rdv_addr_equal(&d, &want), "%s", rows[i].in);
        assert_addr(&d, rows[i].decoded);
    }
}

/* Mangling an address that was not normalised applies §5.1 itself. */
Test(addr, mangle_normalises_input)
{
    struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_port = htons(40000)};
    inet_pton(AF_INET6, "::ffff:198.51.100.20", &s.sin6_addr);
    rdv_addr raw = {.u.v6 = s, .len = sizeof s};
    uint8_t out[RDV_ADDR_MANGLED_MAX];
    cr_assert_eq(rdv_addr_mangle(&raw, 0x00010000, out), 10);
    cr_assert_arr_eq(out, rows[5].enc, 10);
}

/* §5.6 walk-through of the first row, step by step. */
Test(addr, walk_through)
{
    const uint8_t o[4] = {192, 168, 16, 32};
    uint32_t ip_le = o[0] | o[1] << 8 | o[2] << 16 | (uint32_t)o[3] << 24;
    cr_assert_eq(ip_le, 0x2010A8C0u);
    uint64_t A = (uint64_t)ip_le + 0x12345678u;
    cr_assert_eq(A, 0x3244FF38u);
    cr_assert_eq(21116u + 0x5678u, 0xA8F4u);

    rdv_addr a;
    rdv_addr_v4(&a, o, 21116);
    uint8_t out[RDV_ADDR_MANGLED_MAX];
    /* 16 LE bytes of V end in six zero bytes, which are stripped. */
    cr_assert_eq(rdv_addr_mangle(&a, 0x12345678, out), 16 - 6);
    /* Low 17 bits are L; bits 17..48 are tm. */
    uint64_t lo = 0;
    for (int i = 7; i >= 0; i--)
        lo = lo << 8 | out[i];
    cr_assert_eq(lo & 0x1FFFF, 0xA8F4u);
    cr_assert_eq((lo >> 17) & 0xFFFFFFFF, 0x12345678u);
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 37);
}

/* §5.3: any length decodes without failing. */
Test(addr, unmangle_garbage_lengths)
{
    uint8_t g[40];
    rdv_addr a;

    rdv_addr_unmangle(NULL, 0, &a);
    assert_addr(&a, "0.0.0.0:0");

    for (size_t n = 1; n <= 16; n++) {
        fill(g, n, 0xA5);
        rdv_addr_unmangle(g, n, &a);
        cr_assert(rdv_addr_is_v4(&a), "n=%zu", n);
    }

    /* 17, 19, 40: upstream's [::]:0, normalised (§5.1: :: -> 0.0.0.0). */
    static const size_t fallback[] = {17, 19, 40};
    for (size_t i = 0; i < 3; i++) {
        fill(g, fallback[i], 0x5A);
        rdv_addr_unmangle(g, fallback[i], &a);
        assert_addr(&a, "0.0.0.0:0");
    }

    /* 18: raw IPv6 bytes, port little endian. */
    fill(g, 18, 0x20);
    rdv_addr_unmangle(g, 18, &a);
    cr_assert(!rdv_addr_is_v4(&a));
    cr_assert_arr_eq(a.u.v6.sin6_addr.s6_addr, g, 16);
    cr_assert_eq(rdv_addr_port(&a), g[16] | g[17] << 8);

    /* 18 bytes carrying a mapped address decode (normalised) to IPv4. */
    const uint8_t mapped[18] = {[10] = 0xff, [11] = 0xff, 1, 2, 3, 4, 0x50, 0x00};
    rdv_addr_unmangle(mapped, 18, &a);
    assert_addr(&a, "1.2.3.4:80");
}

static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

Test(addr, random_round_trips)
{
    uint32_t s = 0x9E3779B9u;
    for (int i = 0; i < 100000; i++) {
        uint8_t ip[16];
        for (int k = 0; k < 16; k += 4) {
            uint32_t r = xorshift(&s);
            memcpy(ip + k, &r, 4);
        }
        uint16_t port = (uint16_t)xorshift(&s);
        uint32_t tm = xorshift(&s);
        rdv_addr a, d;
        if (i & 1)
            rdv_addr_v4(&a, ip, port);
        else
            rdv_addr_v6(&a, ip, port);
        uint8_t out[RDV_ADDR_MANGLED_MAX];
        size_t n = rdv_addr_mangle(&a, tm, out);
        cr_assert_eq(n <= 11, (i & 1) != 0, "i=%d n=%zu", i, n);
        rdv_addr_unmangle(out, n, &d);
        if (!rdv_addr_equal(&a, &d)) {
            char x[RDV_ADDR_STRLEN], y[RDV_ADDR_STRLEN];
            cr_assert_fail("%s -> %s (tm %08x)", rdv_addr_str(&a, x, sizeof x),
                           rdv_addr_str(&d, y, sizeof y), tm);
        }
    }
}

static void check_norm(const char *in6, const char *want)
{
    struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_port = htons(7)};
    cr_assert_eq(inet_pton(AF_INET6, in6, &s.sin6_addr), 1);
    rdv_addr a = {.u.v6 = s, .len = sizeof s};
    rdv_addr_normalize(&a);
    assert_addr(&a, want);
    /* from_sockaddr normalises too. */
    rdv_addr b;
    cr_assert_eq(rdv_addr_from_sockaddr(&b, (struct sockaddr *)&s, sizeof s), 0);
    assert_addr(&b, want);
    cr_assert(rdv_addr_equal(&a, &b));
}

Test(addr, normalisation)
{
    check_norm("::ffff:1.2.3.4", "1.2.3.4:7");
    check_norm("::2", "0.0.0.2:7");
    check_norm("::1.2.3.4", "1.2.3.4:7");
    check_norm("::1", "[::1]:7");
    check_norm("::", "0.0.0.0:7");
    check_norm("::ffff:0.0.0.1", "0.0.0.1:7");
    check_norm("::fffe:1.2.3.4", "[::fffe:102:304]:7");
    check_norm("0:0:0:0:1::1", "[::1:0:0:1]:7");
    check_norm("2001:db8::1", "[2001:db8::1]:7");
    check_norm("64:ff9b::1.2.3.4", "[64:ff9b::102:304]:7");
}

Test(addr, from_sockaddr_v4_and_errors)
{
    struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(21116)};
    inet_pton(AF_INET, "198.51.100.7", &s.sin_addr);
    rdv_addr a;
    cr_assert_eq(rdv_addr_from_sockaddr(&a, (struct sockaddr *)&s, sizeof s), 0);
    assert_addr(&a, "198.51.100.7:21116");
    cr_assert_eq(rdv_addr_from_sockaddr(&a, (struct sockaddr *)&s, sizeof s - 1), -EAFNOSUPPORT);
    struct sockaddr u = {.sa_family = AF_UNIX};
    cr_assert_eq(rdv_addr_from_sockaddr(&a, &u, sizeof u), -EAFNOSUPPORT);
}

Test(addr, from_sockaddr_keeps_scope)
{
    struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_port = htons(1), .sin6_scope_id = 3};
    inet_pton(AF_INET6, "fe80::1", &s.sin6_addr);
    rdv_addr a, b;
    rdv_addr_from_sockaddr(&a, (struct sockaddr *)&s, sizeof s);
    s.sin6_scope_id = 4;
    rdv_addr_from_sockaddr(&b, (struct sockaddr *)&s, sizeof s);
    cr_assert_eq(a.u.v6.sin6_scope_id, 3);
    cr_assert(!rdv_addr_equal(&a, &b));
}

Test(addr, parse_and_str)
{
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"1.2.3.4:5", "1.2.3.4:5"},
        {"[::1]:5", "[::1]:5"},
        {"1.2.3.4", "1.2.3.4:21116"},
        {"::1", "[::1]:21116"},
        {"[::1]", "[::1]:21116"},
        {"2001:db8::5", "[2001:db8::5]:21116"},
        {"[2001:db8::5]:65535", "[2001:db8::5]:65535"},
        {"[::ffff:10.0.0.1]:9", "10.0.0.1:9"},
        {"::ffff:10.0.0.1", "10.0.0.1:21116"},
        {"0.0.0.0:0", "0.0.0.0:0"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        rdv_addr a, b;
        cr_assert_eq(rdv_addr_parse(&a, ok[i].in, 21116), 0, "%s", ok[i].in);
        assert_addr(&a, ok[i].out);
        /* str -> parse round trip. */
        cr_assert_eq(rdv_addr_parse(&b, ok[i].out, 1), 0);
        cr_assert(rdv_addr_equal(&a, &b));
    }
    static const char *bad[] = {"", ":", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:-1", "1.2.3.4:5x",
                                "1.2.3", "1.2.3.4.5", "host:80", "[::1", "[::1]x", "[::1]:",
                                "[1.2.3.4]:5", "::1:5:", "1.2.3.4:5:6x", " 1.2.3.4"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rdv_addr a;
        cr_assert_eq(rdv_addr_parse(&a, bad[i], 1), -EINVAL, "%s", bad[i]);
    }
}

Test(addr, ip_str_and_ports)
{
    char buf[RDV_ADDR_STRLEN];
    rdv_addr a = P("[2001:db8::7]:9");
    cr_assert_str_eq(rdv_addr_ip_str(&a, buf, sizeof buf), "2001:db8::7");
    rdv_addr_set_port(&a, 443);
    cr_assert_eq(rdv_addr_port(&a), 443);
    a = P("10.1.2.3:9");
    cr_assert_str_eq(rdv_addr_ip_str(&a, buf, sizeof buf), "10.1.2.3");
    rdv_addr_set_port(&a, 65535);
    assert_addr(&a, "10.1.2.3:65535");
    /* Truncation is safe. */
    char tiny[5];
    cr_assert_str_eq(rdv_addr_str(&a, tiny, sizeof tiny), "10.1");
}

Test(addr, to_sockaddr)
{
    struct sockaddr_storage ss;
    rdv_addr v4 = P("1.2.3.4:5"), v6 = P("[2001:db8::1]:6");

    cr_assert_eq(rdv_addr_to_sockaddr(&v4, AF_INET6, &ss), sizeof(struct sockaddr_in6));
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
    cr_assert_eq(s6->sin6_family, AF_INET6);
    cr_assert(IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr));
    char text[INET6_ADDRSTRLEN];
    cr_assert_str_eq(inet_ntop(AF_INET6, &s6->sin6_addr, text, sizeof text), "::ffff:1.2.3.4");
    cr_assert_eq(ntohs(s6->sin6_port), 5);
    /* And back: the peer is the same after normalisation. */
    rdv_addr back;
    cr_assert_eq(rdv_addr_from_sockaddr(&back, (struct sockaddr *)&ss, sizeof *s6), 0);
    cr_assert(rdv_addr_equal(&back, &v4));

    cr_assert_eq(rdv_addr_to_sockaddr(&v4, AF_INET, &ss), sizeof(struct sockaddr_in));
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
    cr_assert_eq(s4->sin_family, AF_INET);
    cr_assert_eq(ntohs(s4->sin_port), 5);
    cr_assert_eq(ntohl(s4->sin_addr.s_addr), 0x01020304u);

    cr_assert_eq(rdv_addr_to_sockaddr(&v6, AF_INET6, &ss), sizeof(struct sockaddr_in6));
    cr_assert_eq(ntohs(s6->sin6_port), 6);
    cr_assert_eq(rdv_addr_to_sockaddr(&v6, AF_INET, &ss), 0);
    cr_assert_eq(rdv_addr_to_sockaddr(&v4, AF_UNIX, &ss), 0);
}

Test(addr, compare_and_hash)
{
    rdv_addr a = P("1.2.3.4:5"), b = P("1.2.3.4:6"), c = P("[::ffff:1.2.3.4]:5"), d = P("4.3.2.1:5");
    cr_assert(rdv_addr_equal(&a, &c));
    cr_assert(rdv_addr_same_ip(&a, &b));
    cr_assert(!rdv_addr_equal(&a, &b));
    cr_assert(!rdv_addr_same_ip(&a, &d));
    cr_assert_eq(rdv_addr_hash(&a), rdv_addr_hash(&c));
    cr_assert_neq(rdv_addr_hash(&a), rdv_addr_hash(&b));
    cr_assert_neq(rdv_addr_hash(&a), rdv_addr_hash(&d));

    rdv_addr e = P("[2001:db8::1]:5"), f = P("[2001:db8::1]:5"), g = P("[2001:db8::2]:5");
    cr_assert(rdv_addr_equal(&e, &f));
    cr_assert(!rdv_addr_same_ip(&e, &g));
    cr_assert(!rdv_addr_same_ip(&a, &e));
    cr_assert_eq(rdv_addr_hash(&e), rdv_addr_hash(&f));
    cr_assert_neq(rdv_addr_hash(&e), rdv_addr_hash(&g));
}

Test(addr, loopback)
{
    static const char *yes[] = {"127.0.0.1:1", "127.255.3.4:1", "[::1]:1", "[::ffff:127.0.0.9]:1"};
    static const char *no[] = {"128.0.0.1:1", "126.255.255.255:1", "[::2]:1", "[2001:db8::1]:1", "0.0.0.0:1"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        rdv_addr a = P(yes[i]);
        cr_assert(rdv_addr_is_loopback(&a), "%s", yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        rdv_addr a = P(no[i]);
        cr_assert(!rdv_addr_is_loopback(&a), "%s", no[i]);
    }
}
