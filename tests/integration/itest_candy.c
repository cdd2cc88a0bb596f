/* Integration: the candy module (a Candy-compatible virtual-network server,
 * spec candy.md) in a Candy-only node — core.modules = websocket-transport
 * and candy, no core listener — driven over its WebSocket port as Candy
 * clients drive it (§7): masked binary frames, VMAC first, EXPTTUN when the
 * server hands out addresses, AUTH, a ping. Messages are built with
 * candy_proto.c (linked in); the EXPTTUN reply's layout and hash are
 * checked here independently of it with libsodium. */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "candy_proto.h"
#include "harness.h"
#include "rdclient.h"

static rdvt_server srv;

static const char *const node_files[] = {
    "00-core.conf",
    "core: {\n"
    "  modules = [ \"websocket-transport\", \"candy\" ];\n"
    "  module_path = \"@MODDIR@\";\n"
    "};\n", /* no core.listeners: a Candy-only node needs none */
    "50-websocket-transport.conf", "websocket-transport: { rendezvous_port = 0; relay_port = 0; };\n",
    "60-candy.conf",
    "candy: {\n"
    "  port = @WS@;\n"
    "  password = \"pass\";\n"
    "  dhcp = \"10.9.0.0/24\";\n"
    "  sdwan = [ \"10.9.0.0/24,192.168.50.0/24,10.9.0.1\" ];\n"
    "};\n",
    NULL,
};

static const candy_secret PASS = { "pass", 4 };
static const uint8_t VMAC_A[16] = "0123456789abcdef", VMAC_B[16] = "fedcba9876543210", VMAC_C[16] = "00112233aabbccdd";

static int ws_port(void) { return srv.port + 2; }

/* Time limits stretch with the server's slowness (valgrind, ASan). */
static int T(int ms) { return srv.valgrind ? ms * 10 : RDVT_SANITIZED ? ms * 3 : ms; }

static void setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    cr_assert_eq(rdvt_prepare(&srv, node_files), 0);
    cr_assert_eq(rdvt_start(&srv), 0, "rdvd did not start (a Candy-only node, no core listener)");
}

static void teardown(void)
{
    int st = srv.pid > 0 ? rdvt_stop(&srv) : 0; /* the shutdown test stops it itself */
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "rdvd did not exit cleanly (status %d)", st);
}

TestSuite(candy, .init = setup, .fini = teardown, .timeout = 240);

/* ------------------------------------------------------------------ WebSocket helpers */
static uint32_t IP(unsigned a, unsigned b, unsigned c, unsigned d) { return a << 24 | b << 16 | c << 8 | d; }

/* §4, §7.1: any path; a plain RFC 6455 upgrade. */
static int ws_connect(void)
{
    int fd = rdc_connect("127.0.0.1", ws_port());
    char head[1024], host[32];
    snprintf(host, sizeof host, "127.0.0.1:%d", ws_port());
    cr_assert_eq(rdc_ws_upgrade(fd, "/any/path", host, head, sizeof head), 0, "no answer to the upgrade");
    cr_assert(strncmp(head, "HTTP/1.1 101 ", 13) == 0, "answer: %s", head);
    cr_assert(strstr(head, "Sec-WebSocket-Accept: " RDC_WS_ACCEPT "\r\n"), "answer: %s", head);
    return fd;
}

static void send_msg(int fd, const void *p, size_t n) { rdc_ws_send_frame(fd, true, 2, true, p, n); }

/* The next frame within ms: its opcode and payload (malloc'ed), or the
 * rdc_ws_recv result (-1 timeout, -2 EOF). */
static int next_frame(int fd, unsigned *op, uint8_t **p, size_t *n, int ms)
{
    *p = NULL;
    int r = rdc_ws_recv(fd, op, p, n, ms);
    if (r < 0) {
        free(*p);
        *p = NULL;
    }
    return r;
}

/* The next frame is one binary message; returns it (free it), *n its size. */
static uint8_t *expect_msg(int fd, size_t *n, const char *what)
{
    unsigned op;
    uint8_t *p;
    int r = next_frame(fd, &op, &p, n, T(5000));
    cr_assert_eq(r, 0, "no %s (%s)", what, r == -2 ? "connection closed" : "timeout");
    cr_assert_eq(op, 2, "%s: expected a binary message, got opcode %u", what, op);
    return p;
}

/* The next message is exactly want (forwarded unchanged, §6.2, §9). */
static void expect_bytes(int fd, const uint8_t *want, size_t wn, const char *what)
{
    size_t n;
    uint8_t *p = expect_msg(fd, &n, what);
    cr_assert(n == wn && memcmp(p, want, n) == 0, "%s: %zu bytes differ from the %zu sent", what, n, wn);
    free(p);
}

static void expect_nothing(int fd, int ms)
{
    unsigned op;
    uint8_t *p;
    size_t n;
    int r = next_frame(fd, &op, &p, &n, ms);
    free(p);
    cr_assert_eq(r, -1, "expected silence, got %s", r == 0 ? "a frame" : "EOF");
}

/* §4, §9: the server ends the connection, by TCP EOF or a close frame,
 * sending no message before. */
static void expect_closed(int fd, const char *why)
{
    unsigned op;
    uint8_t *p;
    size_t n;
    int r = next_frame(fd, &op, &p, &n, T(5000));
    free(p);
    cr_assert(r == -2 || (r == 0 && op == 8), "%s: the server should close (got %s, opcode %u)", why,
              r == -1 ? "nothing" : "a frame", r == 0 ? op : 0);
}

/* A ping is answered with a pong carrying the same payload (§4), and
 * since the connection's frames are in order, nothing reached fd before. */
static void ping_pong(int fd, const char *payload)
{
    size_t len = strlen(payload);
    rdc_ws_send_frame(fd, true, 9, true, payload, len);
    unsigned op;
    uint8_t *p;
    size_t n;
    cr_assert_eq(next_frame(fd, &op, &p, &n, T(5000)), 0, "no pong");
    cr_assert_eq(op, 10, "expected the pong, got opcode %u first", op);
    cr_assert(n == len && memcmp(p, payload, n) == 0, "the pong does not echo the ping's %zu bytes", len);
    free(p);
}

/* ------------------------------------------------------------------ a Candy client (§7) */
typedef struct client {
    int fd;
    uint32_t ip;    /* virtual address after join */
    char cidr[33];  /* as the EXPTTUN reply gave it */
} client;

static void send_vmac(int fd, const uint8_t vmac[16])
{
    uint8_t m[CANDY_VMAC_LEN];
    send_msg(fd, m, candy_build_vmac(m, &PASS, vmac, time(NULL)));
}

/* §5.3: EXPTTUN for want; checks the reply's layout and its hash
 * (recomputed with libsodium: SHA256(password ‖ ts)); returns its cidr. */
static void expttun(client *c, const char *want)
{
    candy_cidr w;
    cr_assert_eq(candy_cidr_parse(want, strlen(want) + 1, &w), 0);
    uint8_t m[CANDY_EXPTTUN_LEN];
    send_msg(c->fd, m, candy_build_expttun(m, &PASS, w, time(NULL)));
    size_t n;
    uint8_t *r = expect_msg(c->fd, &n, "EXPTTUN reply");
    cr_assert_eq(n, 73, "EXPTTUN reply of %zu bytes", n);
    cr_assert_eq(r[0], 2, "kind %u", r[0]);
    int64_t ts = candy_get64s(r + 1), now = time(NULL);
    cr_assert(ts >= now - 60 && ts <= now + 60, "reply timestamp %lld is not now", (long long)ts);
    const char *text = (const char *)r + 9;
    size_t tl = strnlen(text, 32);
    cr_assert_lt(tl, 32, "cidr text not NUL-terminated");
    for (size_t i = tl; i < 32; i++)
        cr_assert_eq(r[9 + i], 0, "cidr field not NUL-padded at byte %zu", i);
    uint8_t in[4 + 8], h[32];
    memcpy(in, "pass", 4);
    memcpy(in + 4, r + 1, 8);
    crypto_hash_sha256(h, in, sizeof in);
    cr_assert(memcmp(h, r + 41, 32) == 0, "reply hash is not SHA256(password ‖ timestamp)");
    memcpy(c->cidr, text, tl + 1);
    candy_cidr got;
    cr_assert_eq(candy_cidr_parse(c->cidr, sizeof c->cidr, &got), 0, "reply cidr \"%s\"", c->cidr);
    c->ip = got.host;
    free(r);
}

static void send_auth(int fd, const candy_secret *s, uint32_t ip)
{
    uint8_t m[CANDY_AUTH_LEN];
    send_msg(fd, m, candy_build_auth(m, s, ip, time(NULL)));
}

/* §6.5: the one SD-WAN rule applies to 10.9.0.0/24. */
static void expect_route(int fd)
{
    static const uint8_t want[] = { 6, 1, 0, 0, 192, 168, 50, 0, 255, 255, 255, 0, 10, 9, 0, 1 };
    expect_bytes(fd, want, sizeof want, "ROUTE after AUTH");
}

/* §7: connect, VMAC, EXPTTUN (adopting the reply's cidr), AUTH (ROUTE
 * follows, §6.5), ping. */
static client join(const uint8_t vmac[16], const char *want)
{
    client c = { .fd = ws_connect() };
    send_vmac(c.fd, vmac);
    expttun(&c, want);
    send_auth(c.fd, &PASS, c.ip);
    expect_route(c.fd);
    ping_pong(c.fd, "candy::linux::6.1.8::itest");
    return c;
}

/* FORWARD (§5.2): kind 1 and a 20-byte IPv4 header (UDP) from src to dst,
 * then 8 payload bytes. */
static size_t forward(uint8_t m[29], uint32_t src, uint32_t dst)
{
    static const uint8_t hdr[20] = { 0x45, 0, 0, 28, 0x12, 0x34, 0, 0, 64, 17 };
    m[0] = 1;
    memcpy(m + 1, hdr, sizeof hdr);
    candy_put32(m + 13, src);
    candy_put32(m + 17, dst);
    memcpy(m + 21, "payload!", 8);
    return 29;
}

/* Proves the server handled everything A sent before: a unicast A -> B
 * that must be B's next message. */
static void marker(client *a, client *b)
{
    uint8_t m[29];
    forward(m, a->ip, b->ip);
    m[28] = '#';
    send_msg(a->fd, m, sizeof m);
    expect_bytes(b->fd, m, sizeof m, "marker FORWARD");
}

/* ------------------------------------------------------------------ tests */
/* §6.3 sequential allocation, §5.3 reply layout and hash, §6.5 ROUTE. */
Test(candy, addresses_are_sequential_and_route_follows_auth)
{
    /* Our builders against the vector of §5.9 (AUTH for 10.0.0.2). */
    uint8_t v[CANDY_AUTH_LEN], h[32], in[4 + 12];
    candy_build_auth(v, &PASS, IP(10, 0, 0, 2), 1700000000);
    memcpy(in, "pass", 4), memcpy(in + 4, v + 1, 12);
    crypto_hash_sha256(h, in, sizeof in);
    cr_assert(memcmp(h, v + 13, 32) == 0);

    client a = join(VMAC_A, "0.0.0.0/0"), b = join(VMAC_B, "0.0.0.0/0");
    cr_assert_str_eq(a.cidr, "10.9.0.1/24");
    cr_assert_str_eq(b.cidr, "10.9.0.2/24");
    cr_assert_eq(rdvt_stat(&srv, "candy.expttun_granted"), 2);
    cr_assert_eq(rdvt_stat(&srv, "candy.auth_ok"), 2);
}

/* §5.2, §6.2 unicast FORWARD unchanged; no owner: dropped; §6.4 directed
 * broadcast to everyone but the sender. */
Test(candy, forward_unicast_no_owner_and_broadcast)
{
    client a = join(VMAC_A, "0.0.0.0/0"), b = join(VMAC_B, "0.0.0.0/0");
    uint8_t m[29];
    send_msg(a.fd, m, forward(m, a.ip, b.ip));
    expect_bytes(b.fd, m, sizeof m, "FORWARD A -> B");

    send_msg(a.fd, m, forward(m, a.ip, IP(10, 9, 0, 77)));
    expect_nothing(b.fd, 300);
    marker(&a, &b); /* ... and it was not merely late */
    cr_assert_eq(rdvt_stat(&srv, "candy.forward_no_owner"), 1);

    send_msg(a.fd, m, forward(m, a.ip, IP(10, 9, 0, 255)));
    expect_bytes(b.fd, m, sizeof m, "directed broadcast");
    ping_pong(a.fd, "after broadcast"); /* nothing came back to the sender */
    cr_assert_eq(rdvt_stat(&srv, "candy.forward_broadcast"), 1);
}

/* Stock clients read 1500 bytes per message (client.cc's buffer) and
 * reconnect on more: a 1501-byte FORWARD is accepted (candy.md §4 allows
 * 65,535) but not passed on; 1500 bytes are. The sender stays. */
Test(candy, a_packet_longer_than_clients_read_is_dropped_not_relayed)
{
    client a = join(VMAC_A, "0.0.0.0/0"), b = join(VMAC_B, "0.0.0.0/0");
    static uint8_t big[1501];
    forward(big, a.ip, b.ip);
    memset(big + 29, 'x', sizeof big - 29);
    send_msg(a.fd, big, 1500);
    expect_bytes(b.fd, big, 1500, "a 1500-byte FORWARD");
    send_msg(a.fd, big, 1501);
    marker(&a, &b); /* B's next message: the 1501 bytes never came */
    cr_assert_eq(rdvt_stat(&srv, "candy.dropped_too_big"), 1);
    ping_pong(a.fd, "sender still connected");
}

/* §5.4, §5.6, §6.2: DISCOVERY broadcast, UDP4CONN unicast, src check. */
Test(candy, discovery_udp4conn_and_source_check)
{
    client a = join(VMAC_A, "0.0.0.0/0"), b = join(VMAC_B, "0.0.0.0/0");
    uint8_t d[9] = { 5 };
    candy_put32(d + 1, a.ip), candy_put32(d + 5, CANDY_BROADCAST);
    send_msg(a.fd, d, sizeof d);
    expect_bytes(b.fd, d, sizeof d, "DISCOVERY broadcast");
    ping_pong(a.fd, "after discovery");

    uint8_t u[15] = { 3 };
    candy_put32(u + 1, b.ip), candy_put32(u + 5, a.ip), candy_put32(u + 9, IP(203, 0, 113, 7));
    u[13] = 0xd4, u[14] = 0x31;
    send_msg(b.fd, u, sizeof u);
    expect_bytes(a.fd, u, sizeof u, "UDP4CONN B -> A");

    uint64_t pe = rdvt_stat(&srv, "candy.protocol_error");
    candy_put32(u + 1, a.ip); /* B claims to be A */
    send_msg(b.fd, u, sizeof u);
    expect_closed(b.fd, "UDP4CONN with another client's src");
    cr_assert_eq(rdvt_stat(&srv, "candy.protocol_error"), pe + 1);
    expect_nothing(a.fd, 300);
    ping_pong(a.fd, "A stays");
}

/* §6.2: a wrong hash and a FORWARD before AUTH disconnect. */
Test(candy, wrong_password_and_forward_before_auth_close)
{
    client c = { .fd = ws_connect() };
    send_vmac(c.fd, VMAC_A);
    expttun(&c, "0.0.0.0/0");
    static const candy_secret wrong = { "wrong", 5 };
    send_auth(c.fd, &wrong, c.ip);
    expect_closed(c.fd, "AUTH with a wrong password");
    cr_assert_eq(rdvt_stat(&srv, "candy.auth_bad_hash"), 1);
    cr_assert_eq(rdvt_stat(&srv, "candy.auth_ok"), 0);

    uint8_t m[29];
    int fd = ws_connect();
    send_vmac(fd, VMAC_B);
    send_msg(fd, m, forward(m, IP(10, 9, 0, 2), IP(10, 9, 0, 1)));
    expect_closed(fd, "FORWARD before AUTH");
    fd = ws_connect(); /* as the first message too */
    send_msg(fd, m, sizeof m);
    expect_closed(fd, "FORWARD as the first message");
    cr_assert_eq(rdvt_stat(&srv, "candy.not_authenticated"), 2);
    cr_assert_eq(rdvt_stat(&srv, "candy.clients"), 0);
}

/* §6.3 step 1: the same vmac gets its previous address back; §6.2 its
 * AUTH closes the previous connection. */
Test(candy, reconnect_keeps_the_address_and_kicks_the_old_connection)
{
    client a = join(VMAC_A, "0.0.0.0/0"), b = join(VMAC_B, "0.0.0.0/0");
    client other = { .fd = ws_connect() }; /* another machine asking for A's address gets the next one */
    send_vmac(other.fd, VMAC_C);
    expttun(&other, "10.9.0.1/24");
    cr_assert_str_eq(other.cidr, "10.9.0.3/24");

    client a2 = { .fd = ws_connect() };
    send_vmac(a2.fd, VMAC_A);
    expttun(&a2, "10.9.0.1/24");
    cr_assert_str_eq(a2.cidr, "10.9.0.1/24");
    ping_pong(a.fd, "A still connected before the new AUTH");
    send_auth(a2.fd, &PASS, a2.ip);
    expect_route(a2.fd);
    expect_closed(a.fd, "the previous connection of 10.9.0.1");
    cr_assert_eq(rdvt_stat(&srv, "candy.kicked"), 1);

    uint8_t m[29];
    send_msg(b.fd, m, forward(m, b.ip, a2.ip));
    expect_bytes(a2.fd, m, sizeof m, "FORWARD to the reconnected 10.9.0.1");
    cr_assert_eq(rdvt_stat(&srv, "candy.authenticated"), 2);
}

/* §4 ping/pong; the admin command lists the clients. */
Test(candy, ping_pong_and_admin_listing)
{
    client a = join(VMAC_A, "0.0.0.0/0"), b = join(VMAC_B, "0.0.0.0/0");
    char big[126];
    memset(big, 'p', 125), big[125] = 0; /* the largest control payload */
    ping_pong(a.fd, big);
    ping_pong(b.fd, "x");
    cr_assert_eq(rdvt_stat(&srv, "candy.clients"), 2);
    cr_assert_eq(rdvt_stat(&srv, "candy.authenticated"), 2);
    char *out = rdvt_admin(&srv, "candy");
    cr_assert_not_null(out);
    cr_assert(strstr(out, "dhcp 10.9.0.0/24") && strstr(out, "clients 2 (authenticated 2)"), "%s", out);
    cr_assert(strstr(out, " 10.9.0.1 vmac 0123456789abcdef from 127.0.0.1"), "%s", out);
    cr_assert(strstr(out, " 10.9.0.2 vmac fedcba9876543210 from 127.0.0.1"), "%s", out);
    free(out);
}

/* SIGTERM with clients connected (ws-server port_close, then the core's
 * drain): a clean and prompt exit; each client sees its connection end. */
Test(candy, sigterm_with_clients_exits_cleanly)
{
    client a = join(VMAC_A, "0.0.0.0/0"), b = join(VMAC_B, "0.0.0.0/0");
    int half = ws_connect(); /* upgraded, no message yet */
    send_vmac(ws_connect(), VMAC_C); /* a client that never reads again */
    uint64_t t0 = rdc_now_ms();
    int st = rdvt_stop(&srv);
    uint64_t took = rdc_now_ms() - t0;
    cr_assert_eq(st, 0, "rdvd exit status %d", st);
    cr_assert_lt(took, (uint64_t)T(3000), "rdvd took %llu ms to stop", (unsigned long long)took);
    expect_closed(a.fd, "A at shutdown");
    expect_closed(b.fd, "B at shutdown");
    expect_closed(half, "a pending connection at shutdown");
}
