/* Integration: rdvd's WebSocket ports (websocket-transport) in a full
 * rendezvous node, driven by three clients: a small RFC 6455 client written
 * here, ws_client.py (python3-websockets, an independent implementation)
 * and headless Chromium (ws_browser.py / ws_browser.html). Items of
 * rendezvous-checklist.md are cited as R<n>, relay-checklist.md as L<n>;
 * wire.md §7, rendezvous.md §5.2 and §12, relay.md §9. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <libgen.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "rdclient.h"
#include "rdv/wire.h"

typedef Hbb__RendezvousMessage msg_t;

static rdvt_server srv;
static char K[64];      /* licence key = content of id_ed25519.pub */
static uint8_t KPK[32]; /* the server's signing public key */

#define PY "/usr/bin/python3" /* Debian's, with python3-websockets */

static const char *const node_files[] = {
    "00-core.conf",
    "core: {\n"
    "  modules = [ \"keys\", \"storage-sqlite\", \"ip-blocker\", \"registry\", \"nat-test\",\n"
    "              \"punch-coordinator\", \"secure-tcp\", \"websocket-transport\" ];\n"
    "  module_path = \"@MODDIR@\";\n"
    "  write_queue_max = 16777216;\n"
    "  listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; },\n"
    "                { name = \"nat\"; port = @NAT@; tcp = true; } );\n"
    "};\n",
    "20-registry.conf", "registry: { online_ms = 3000; };\n",
    "50-websocket-transport.conf",
    "websocket-transport: {\n"
    "  rendezvous_port = @WS@;\n"
    "  relay_port = 0;\n"
    "  trusted_proxies = [ \"127.0.9.0/24\" ];\n"
    "  handshake_timeout_ms = 2000;\n"
    "  idle_ms = 8000;\n"
    "  close_timeout_ms = 1000;\n"
    "};\n",
    NULL,
};

static int ws_port(void) { return srv.port + 2; }

/* ------------------------------------------------------------------ server */
static void read_key(void) { cr_assert_eq(rdc_read_server_key(&srv, K, sizeof K, KPK, NULL), 44); }

/* Start a server; when a port of its block is taken by some other socket
 * on this shared machine (client connections use the same range), move to
 * the next block rather than fail. */
static void start_retrying(rdvt_server *s, const char *const *files)
{
    for (int attempt = 0;; attempt++) {
        cr_assert_eq(rdvt_prepare(s, files), 0);
        if (rdvt_start(s) == 0)
            return;
        bool busy = rdvt_log_contains(s, "Address already in use");
        rdvt_cleanup(s);
        cr_assert(busy && attempt < 5, "rdvd did not start");
    }
}

static void setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    start_retrying(&srv, node_files);
    read_key();
}

static void teardown(void)
{
    int st = rdvt_stop(&srv);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "rdvd did not exit cleanly (status %d)", st);
}

TestSuite(ws, .init = setup, .fini = teardown, .timeout = 240);

/* ------------------------------------------------------------------ a small RFC 6455 client (rdclient.c) */
static void send_all(int fd, const void *p, size_t n) { cr_assert_eq(rdvt_tcp_send_raw(fd, p, n), 0); }

static int ws_open_from(const char *src, const char *path, const char *extra)
{
    int fd = rdvt_tcp(src, ws_port());
    cr_assert_geq(fd, 0, "cannot connect to the WebSocket port from %s", src);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " RDC_WS_KEY "\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n%s\r\n",
                     path, ws_port(), extra ? extra : "");
    send_all(fd, req, (size_t)n);
    char head[2048];
    cr_assert_eq(rdc_http_head(fd, head, sizeof head, 5000), 0, "no answer to the upgrade");
    cr_assert(strncmp(head, "HTTP/1.1 101 ", 13) == 0, "answer: %s", head);
    cr_assert(strstr(head, "Sec-WebSocket-Accept: " RDC_WS_ACCEPT "\r\n"), "answer: %s", head);
    cr_assert_null(strstr(head, "Sec-WebSocket-Extensions"), "permessage-deflate must be declined");
    return fd;
}

static int ws_open(const char *src) { return ws_open_from(src, "/", NULL); }

static msg_t *ws_expect_msg(int fd, int union_case)
{
    unsigned op;
    uint8_t *p;
    size_t n;
    cr_assert_eq(rdc_ws_recv(fd, &op, &p, &n, 5000), 0, "no %s over WebSocket", rdv_msg_tag_name(union_case));
    cr_assert_eq(op, 2, "a binary message, got opcode %u", op);
    msg_t *m = hbb__rendezvous_message__unpack(NULL, n, p);
    free(p);
    cr_assert_not_null(m, "undecodable reply");
    cr_assert_eq((int)m->union_case, union_case, "got %s", rdv_msg_tag_name((int)m->union_case));
    return m;
}

static void ws_expect_close(int fd, uint16_t status, int ms)
{
    unsigned op;
    uint8_t *p = NULL;
    size_t n;
    int r = rdc_ws_recv(fd, &op, &p, &n, ms);
    cr_assert_eq(r, 0, "no close frame (%d)", r);
    cr_assert_eq(op, 8, "expected a close frame, got opcode %u", op);
    cr_assert_geq(n, 2);
    cr_assert_eq((unsigned)(p[0] << 8 | p[1]), status, "close status %u, expected %u", p[0] << 8 | p[1], status);
    free(p);
}

/* After the server's close frame: answer it, then the server closes TCP. */
static void ws_answer_close_and_expect_eof(int fd)
{
    rdc_ws_send_frame(fd, true, 8, true, "\x03\xe8", 2);
    unsigned op;
    uint8_t *p = NULL;
    size_t n;
    cr_assert_eq(rdc_ws_recv(fd, &op, &p, &n, 5000), -2, "the server closes TCP after the close handshake");
    free(p);
}

static bool tcp_eof_within(int fd, int ms)
{
    uint8_t b[256];
    uint64_t deadline = rdc_now_ms() + (uint64_t)ms;
    for (;;) {
        int r = rdc_read_exact(fd, b, 1, deadline);
        if (r == -2)
            return true;
        if (r == -1)
            return false;
    }
}

/* ------------------------------------------------------------------ rendezvous helpers */
static msg_t *nat_req(void) { return rdc_test_nat_request(0); }

/* PunchHoleRequest as this suite's WebSocket requesters send it, without a version. */
static msg_t *phr_msg(const char *id, int nat) { return rdc_punch_hole_request(id, nat, K, ""); }

static msg_t *udp_recv_from_server(int fd, int ms)
{
    uint8_t buf[65536];
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, ms) != 1)
        return NULL;
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    cr_assert_gt(r, 0);
    return hbb__rendezvous_message__unpack(NULL, (size_t)r, buf);
}

static msg_t *udp_ask(int fd, const msg_t *m)
{
    cr_assert_eq(rdvt_udp_send(fd, srv.port, m), 0);
    return udp_recv_from_server(fd, 3000);
}

typedef rdc_device peer;

/* client-flows.md: RegisterPeer -> request_pk -> RegisterPk -> OK. */
static void reg(peer *b, const char *ip, const char *id)
{
    rdc_device_init(b, id);
    rdc_device_udp(b, ip);
    msg_t *r = udp_ask(b->udp, rdc_register_peer(b->id));
    cr_assert_not_null(r, "no RegisterPeerResponse");
    rdvt_msg_free(r);
    r = udp_ask(b->udp, rdc_device_register_pk(b));
    cr_assert_not_null(r, "no RegisterPkResponse");
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    rdvt_msg_free(r);
    r = udp_ask(b->udp, rdc_register_peer(b->id)); /* online now */
    cr_assert_not_null(r);
    rdvt_msg_free(r);
}

static void expect_addr_text(ProtobufCBinaryData sa, const char *want, size_t want_len)
{
    rdv_addr got;
    rdv_addr_unmangle(sa.data, sa.len, &got);
    char a[RDV_ADDR_STRLEN];
    cr_assert_str_eq(rdv_addr_str(&got, a, sizeof a), want);
    if (want_len)
        cr_assert_eq(sa.len, want_len, "mangled length");
}

static void expect_signed(ProtobufCBinaryData pk, const peer *b)
{
    Hbb__IdPk *ip = rdc_open_signed_pk(pk, KPK);
    cr_assert_str_eq(ip->id, b->id);
    hbb__id_pk__free_unpacked(ip, NULL);
}

/* The PunchHole B receives for a WS requester, with its socket_addr text. */
static void punch_and_expect_addr(peer *b, const char *src, const char *extra, const char *want, size_t want_len)
{
    int a = ws_open_from(src, "/ws/id", extra);
    rdc_ws_send_msg(a, phr_msg(b->id, HBB__NAT_TYPE__SYMMETRIC));
    msg_t *ph = udp_recv_from_server(b->udp, 5000);
    cr_assert_not_null(ph, "B got nothing");
    cr_assert_eq(ph->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE, "WebSocket requesters never get "
                                                                          "FetchLocalAddr (R135)");
    if (!want) {
        char a_text[RDV_ADDR_STRLEN];
        rdv_addr la = rdc_local_addr(a);
        rdv_addr_str(&la, a_text, sizeof a_text);
        expect_addr_text(ph->punch_hole->socket_addr, a_text, 0);
    } else {
        expect_addr_text(ph->punch_hole->socket_addr, want, want_len);
    }
    rdvt_msg_free(ph);
    close(a);
}

static void alive(void)
{
    cr_assert(rdvt_alive(&srv), "rdvd died");
    int a = ws_open("127.0.0.9");
    rdc_ws_send_msg(a, nat_req());
    msg_t *r = ws_expect_msg(a, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq(r->test_nat_response->port, rdc_local_port(a));
    rdvt_msg_free(r);
    close(a);
}

/* ------------------------------------------------------------------ handshake */
Test(ws, R130_L27_upgrade_on_any_path)
{
    const char *paths[] = { "/", "/ws/id", "/ws/relay", "/anything?x=1" };
    for (size_t i = 0; i < 4; i++)
        close(ws_open_from("127.0.1.1", paths[i], NULL));
    cr_assert_geq(rdvt_stat(&srv, "websocket-transport.hs_ok"), 4);
}

static void expect_http_refusal(const char *request, const char *status_line, const char *also)
{
    int fd = rdvt_tcp("127.0.1.2", ws_port());
    send_all(fd, request, strlen(request));
    char head[2048];
    cr_assert_eq(rdc_http_head(fd, head, sizeof head, 5000), 0);
    cr_assert(strncmp(head, status_line, strlen(status_line)) == 0, "answer: %s", head);
    if (also)
        cr_assert(strstr(head, also), "answer: %s", head);
    cr_assert(tcp_eof_within(fd, 5000), "closed after the refusal");
    close(fd);
}

Test(ws, L28_bad_handshakes_refused_server_unaffected)
{
    expect_http_refusal("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400 ", NULL);
    expect_http_refusal("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: " RDC_WS_KEY "\r\nSec-WebSocket-Version: 8\r\n\r\n",
                        "HTTP/1.1 426 ", "Sec-WebSocket-Version: 13\r\n");
    expect_http_refusal("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                        "HTTP/1.1 400 ", NULL);
    expect_http_refusal("\x16\x03\x01\x02\xa5 TLS to a plain port\r\n\r\n", "HTTP/1.1 400 ", NULL);
    cr_assert_eq(rdvt_stat(&srv, "websocket-transport.hs_bad_version"), 1);
    alive();
}

Test(ws, R138_handshake_timeout)
{
    int fd = rdvt_tcp("127.0.1.3", ws_port());
    send_all(fd, "GET / HTTP/1.1\r\n", 16);
    uint64_t t0 = rdc_now_ms();
    cr_assert(tcp_eof_within(fd, 15000), "an unfinished upgrade is closed");
    uint64_t dt = rdc_now_ms() - t0;
    cr_assert_geq(dt, 1500, "not before handshake_timeout_ms (%llu ms)", (unsigned long long)dt);
    close(fd);
    cr_assert_geq(rdvt_stat(&srv, "websocket-transport.hs_timeout"), 1);
}

/* ------------------------------------------------------------------ messages */
Test(ws, R131_unknown_id_answer_and_connection_kept)
{
    int a = ws_open("127.0.2.1");
    rdc_ws_send_msg(a, phr_msg("nosuchid1", HBB__NAT_TYPE__SYMMETRIC));
    unsigned op;
    uint8_t *p;
    size_t n;
    cr_assert_eq(rdc_ws_recv(a, &op, &p, &n, 5000), 0);
    cr_assert_eq(op, 2);
    cr_assert_eq(n, 2, "one binary message 5a 00, no length prefix");
    cr_assert(p[0] == 0x5a && p[1] == 0x00);
    free(p);
    rdc_ws_send_frame(a, true, 9, true, "p1", 2); /* still open: a ping is answered */
    cr_assert_eq(rdc_ws_recv(a, &op, &p, &n, 5000), 0);
    cr_assert(op == 10 && n == 2 && memcmp(p, "p1", 2) == 0, "pong with the ping's payload");
    free(p);
    close(a);
}

Test(ws, R132_text_ignored_then_answered_and_close_handshake)
{
    int a = ws_open("127.0.2.2");
    rdc_ws_send_frame(a, true, 1, true, "hello", 5);
    rdc_ws_send_msg(a, nat_req());
    msg_t *r = ws_expect_msg(a, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq(r->test_nat_response->port, rdc_local_port(a), "R136: the client's source port");
    rdvt_msg_free(r);
    ws_expect_close(a, 1000, 5000); /* TestNatRequest ends the connection (rendezvous.md §4.2) */
    ws_answer_close_and_expect_eof(a);
    close(a);
}

Test(ws, fragmented_request_with_ping_inside)
{
    int a = ws_open("127.0.2.3");
    const uint8_t req[] = { 0xa2, 0x01, 0x00 };
    rdc_ws_send_frame(a, false, 2, true, req, 1);
    rdc_ws_send_frame(a, true, 9, true, "m", 1);
    rdc_ws_send_frame(a, false, 0, true, req + 1, 1);
    rdc_ws_send_frame(a, true, 0, true, req + 2, 1);
    /* a pong and the reply; their order depends on how TCP segments the
     * frames (the pong goes out after the input read with the ping) */
    bool pong = false, reply = false;
    for (int i = 0; i < 2; i++) {
        unsigned op;
        uint8_t *p;
        size_t n;
        cr_assert_eq(rdc_ws_recv(a, &op, &p, &n, 5000), 0);
        if (op == 10) {
            cr_assert(n == 1 && p[0] == 'm');
            pong = true;
        } else {
            cr_assert_eq(op, 2);
            msg_t *r = hbb__rendezvous_message__unpack(NULL, n, p);
            cr_assert(r && r->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
            cr_assert_eq(r->test_nat_response->port, rdc_local_port(a), "reassembled request answered");
            rdvt_msg_free(r);
            reply = true;
        }
        free(p);
    }
    cr_assert(pong && reply);
    close(a);
}

Test(ws, R224_register_pk_over_websocket)
{
    int a = ws_open("127.0.2.4");
    Hbb__RegisterPk pk = HBB__REGISTER_PK__INIT;
    pk.id = "400000051";
    uint8_t k[32] = { 1 };
    pk.pk.data = k, pk.pk.len = 32;
    pk.uuid.data = (uint8_t *)"u", pk.uuid.len = 1;
    msg_t m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &pk;
    rdc_ws_send_msg(a, &m);
    unsigned op;
    uint8_t *p;
    size_t n;
    cr_assert_eq(rdc_ws_recv(a, &op, &p, &n, 5000), 0);
    /* R224 (EXT, on by default): a device registers over its WebSocket and
     * stays connected. R140 (OSS: NOT_SUPPORT) is registry.stream_register =
     * false, covered by the registry unit suite. */
    cr_assert_eq(op, 2);
    Hbb__RendezvousMessage *r = hbb__rendezvous_message__unpack(NULL, n, p);
    cr_assert_not_null(r);
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    hbb__rendezvous_message__free_unpacked(r, NULL);
    free(p);
    close(a);
}

Test(ws, R141_no_key_exchange_on_websocket)
{
    /* secure-tcp is loaded: the main TCP port greets with a KeyExchange... */
    int t = rdvt_tcp("127.0.2.5", srv.port);
    msg_t *ke = rdvt_tcp_recv(t, 5000);
    cr_assert(ke && ke->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE, "secure-tcp is active");
    rdvt_msg_free(ke);
    close(t);
    /* ...the WebSocket port never does: the first message is the reply */
    int a = ws_open("127.0.2.5");
    unsigned op;
    uint8_t *p = NULL;
    size_t n;
    cr_assert_eq(rdc_ws_recv(a, &op, &p, &n, 1000), -1, "nothing before a request");
    rdc_ws_send_msg(a, nat_req());
    msg_t *r = ws_expect_msg(a, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    rdvt_msg_free(r);
    close(a);
}

/* ------------------------------------------------------------------ limits, bad frames */
Test(ws, R139_oversize_message_closed)
{
    int a = ws_open("127.0.3.1");
    uint8_t h[14] = { 0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 1 }; /* 1 MiB + 1 > core.max_frame */
    memcpy(h + 10, rdc_ws_mask, 4);
    send_all(a, h, sizeof h);
    send_all(a, "x", 1);
    ws_expect_close(a, 1009, 5000);
    cr_assert(tcp_eof_within(a, 5000));
    close(a);
    cr_assert_geq(rdvt_stat(&srv, "websocket-transport.closed_too_big"), 1);
    alive();
}

Test(ws, L29_unmasked_frame_and_big_control_frame)
{
    int a = ws_open("127.0.3.2");
    rdc_ws_send_frame(a, true, 2, false, "\xa2\x01\x00", 3);
    ws_expect_close(a, 1002, 5000);
    cr_assert(tcp_eof_within(a, 5000));
    close(a);
    a = ws_open("127.0.3.2");
    uint8_t big[126] = { 0 };
    rdc_ws_send_frame(a, true, 9, true, big, sizeof big);
    ws_expect_close(a, 1002, 5000);
    cr_assert(tcp_eof_within(a, 5000));
    close(a);
    alive();
}

Test(ws, R10_idle_after_upgrade)
{
    int a = ws_open("127.0.3.3");
    uint64_t t0 = rdc_now_ms();
    ws_expect_close(a, 1001, 20000);
    uint64_t dt = rdc_now_ms() - t0;
    cr_assert_geq(dt, 7500, "idle_ms is 8000 (closed after %llu ms)", (unsigned long long)dt);
    cr_assert(tcp_eof_within(a, 5000));
    close(a);
}

/* ------------------------------------------------------------------ proxy attribution, punching */
Test(ws, R133_R134_proxy_headers_only_from_trusted_proxies)
{
    peer b;
    reg(&b, "127.0.4.2", "400000061");
    punch_and_expect_addr(&b, "127.0.9.1", "X-Real-IP: 203.0.113.5\r\n", "203.0.113.5:0", 0);
    punch_and_expect_addr(&b, "127.0.9.1", "X-Forwarded-For: 203.0.113.6\r\n", "203.0.113.6:0", 0);
    punch_and_expect_addr(&b, "127.0.9.1", "X-Forwarded-For: 203.0.113.6\r\nX-Real-IP: 203.0.113.7\r\n",
                          "203.0.113.7:0", 0);
    punch_and_expect_addr(&b, "127.0.9.1", "X-Real-IP: 2001:db8::5\r\n", "[2001:db8::5]:0", 18);
    punch_and_expect_addr(&b, "127.0.9.1", "X-Forwarded-For: 1.2.3.4, 5.6.7.8\r\n", NULL, 0);
    punch_and_expect_addr(&b, "127.0.9.1", "X-Real-IP: garbage\r\n", NULL, 0);
    /* not from a trusted proxy: the headers are ignored */
    punch_and_expect_addr(&b, "127.0.4.9", "X-Real-IP: 203.0.113.5\r\n", NULL, 0);
    close(b.udp);
    cr_assert_geq(rdvt_stat(&srv, "websocket-transport.proxy_used"), 4);
    cr_assert_geq(rdvt_stat(&srv, "websocket-transport.proxy_untrusted"), 1);
}

Test(ws, R136_test_nat_with_x_real_ip_port_0)
{
    int a = ws_open_from("127.0.9.3", "/", "X-Real-IP: 203.0.113.5\r\n");
    rdc_ws_send_msg(a, nat_req());
    msg_t *r = ws_expect_msg(a, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq(r->test_nat_response->port, 0);
    rdvt_msg_free(r);
    close(a);
}

Test(ws, R135_never_same_intranet)
{
    peer b;
    reg(&b, "127.0.5.2", "400000071");
    punch_and_expect_addr(&b, "127.0.5.2", NULL, NULL, 0); /* same IP as B: still PunchHole */
    close(b.udp);
}

Test(ws, full_punch_flow_requester_on_websocket)
{
    peer b;
    reg(&b, "127.0.6.2", "400000081");
    /* the web client's way: nat_type SYMMETRIC, success only via RelayResponse */
    int a = ws_open("127.0.6.1");
    rdv_addr a_addr = rdc_local_addr(a);
    rdc_ws_send_msg(a, phr_msg(b.id, HBB__NAT_TYPE__SYMMETRIC));
    msg_t *ph = udp_recv_from_server(b.udp, 5000);
    cr_assert(ph && ph->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    char at[RDV_ADDR_STRLEN];
    expect_addr_text(ph->punch_hole->socket_addr, rdv_addr_str(&a_addr, at, sizeof at), 0);
    cr_assert_eq(ph->punch_hole->nat_type, HBB__NAT_TYPE__SYMMETRIC, "nat_type copied");
    msg_t *m = rdc_relay_response(ph->punch_hole->socket_addr, "U-ws-1", "relay.test:21117", b.id, "1.4.9");
    int bt = rdvt_tcp(b.ip, srv.port);
    msg_t *ke = rdvt_tcp_recv(bt, 3000); /* secure-tcp greeting; B stays plaintext */
    rdvt_msg_free(ke);
    cr_assert_eq(rdvt_tcp_send(bt, m), 0);
    msg_t *r = ws_expect_msg(a, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE);
    cr_assert_str_eq(r->relay_response->uuid, "U-ws-1");
    cr_assert_str_eq(r->relay_response->relay_server, "relay.test:21117");
    cr_assert_str_eq(r->relay_response->version, "1.4.9");
    cr_assert_eq(r->relay_response->union_case, HBB__RELAY_RESPONSE__UNION_PK);
    expect_signed(r->relay_response->pk, &b);
    rdvt_msg_free(r);
    rdvt_msg_free(ph);
    close(bt);

    close(a);
    /* and the desktop way, on a new connection (an answered one is spent):
     * PunchHoleSent answered with a PunchHoleResponse */
    a = ws_open("127.0.6.1");
    rdc_ws_send_msg(a, phr_msg(b.id, HBB__NAT_TYPE__ASYMMETRIC));
    ph = udp_recv_from_server(b.udp, 5000);
    cr_assert(ph && ph->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    m = rdc_punch_hole_sent(ph->punch_hole->socket_addr, b.id, "relay.test:21117", HBB__NAT_TYPE__ASYMMETRIC, "1.4.9");
    bt = rdvt_tcp(b.ip, srv.port);
    ke = rdvt_tcp_recv(bt, 3000);
    rdvt_msg_free(ke);
    cr_assert_eq(rdvt_tcp_send(bt, m), 0);
    r = ws_expect_msg(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    cr_assert_eq(r->punch_hole_response->failure, 0);
    expect_signed(r->punch_hole_response->pk, &b);
    rdvt_msg_free(r);
    rdvt_msg_free(ph);
    close(bt);
    close(a);
    close(b.udp);
    alive();
}

Test(ws, R137_pending_table_shared_by_proxied_clients)
{
    peer b;
    reg(&b, "127.0.6.5", "400000085");
    int a[2];
    msg_t *ph[2];
    for (int i = 0; i < 2; i++) {
        a[i] = ws_open_from(i ? "127.0.9.7" : "127.0.9.6", "/", "X-Real-IP: 203.0.113.50\r\n");
        rdc_ws_send_msg(a[i], phr_msg(b.id, HBB__NAT_TYPE__SYMMETRIC));
        ph[i] = udp_recv_from_server(b.udp, 5000);
        cr_assert(ph[i] && ph[i]->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
        expect_addr_text(ph[i]->punch_hole->socket_addr, "203.0.113.50:0", 0);
    }
    for (int i = 0; i < 2; i++) {
        msg_t *m = rdc_relay_response(ph[i]->punch_hole->socket_addr, i ? "U-137-b" : "U-137-a", "relay.test:21117",
                                      b.id, "1.4.9");
        int bt = rdvt_tcp(b.ip, srv.port);
        msg_t *ke = rdvt_tcp_recv(bt, 3000);
        rdvt_msg_free(ke);
        cr_assert_eq(rdvt_tcp_send(bt, m), 0);
        close(bt);
        rdvt_msg_free(ph[i]);
    }
    /* both keyed by the same attributed address: at most one answer */
    int delivered = 0;
    for (int i = 0; i < 2; i++) {
        unsigned op;
        uint8_t *p = NULL;
        size_t n;
        if (rdc_ws_recv(a[i], &op, &p, &n, 1500) == 0 && op == 2)
            delivered++;
        free(p);
        close(a[i]);
    }
    cr_assert_leq(delivered, 1, "documented upstream limitation: the last parked connection wins");
    close(b.udp);
    alive();
}

/* ------------------------------------------------------------------ independent clients */
static void script_path(char *out, size_t cap, const char *name)
{
    char here[512];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(out, cap, "%s/%s", dirname(here), name);
}

/* Run a script, collect its stdout; returns the exit status. */
static int run_script(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", cmd);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *value_of(const char *out, const char *key)
{
    static char v[512];
    char k[64];
    snprintf(k, sizeof k, "%s=", key);
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, k, strlen(k)) == 0) {
            const char *e = strchr(l, '\n');
            size_t len = e ? (size_t)(e - l) - strlen(k) : strlen(l) - strlen(k);
            if (len >= sizeof v)
                len = sizeof v - 1;
            memcpy(v, l + strlen(k), len);
            v[len] = '\0';
            return v;
        }
    }
    return NULL;
}

static bool have_websockets(void) { return system(PY " -c 'import websockets' >/dev/null 2>&1") == 0; }

Test(ws, python_websockets_client)
{
    if (!have_websockets())
        cr_skip_test("python3-websockets is not installed (scripts/setup.sh installs it)");
    char py[600], cmd[1200], out[4096];
    script_path(py, sizeof py, "ws_client.py");
    const char *scen[] = { "testnat", "text", "ping" };
    for (size_t i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, PY " %s --port %d --src 127.0.7.1 %s", py, ws_port(), scen[i]);
        cr_assert_eq(run_script(cmd, out, sizeof out), 0, "%s: %s", scen[i], out);
    }
    snprintf(cmd, sizeof cmd, PY " %s --port %d --src 127.0.7.1 testnat", py, ws_port());
    run_script(cmd, out, sizeof out);
    cr_assert_str_eq(value_of(out, "close_code"), "1000");
    /* behind a trusted proxy the port is 0 (R136) */
    snprintf(cmd, sizeof cmd, PY " %s --port %d --src 127.0.9.4 --path /ws/id --header 'X-Real-IP: 198.51.100.7' "
                              "--expect-port 0 testnat", py, ws_port());
    cr_assert_eq(run_script(cmd, out, sizeof out), 0, "%s", out);
    /* unknown id: one binary message 5a 00 (R131) */
    snprintf(cmd, sizeof cmd, PY " %s --port %d --src 127.0.7.1 punch nosuchid2 %s 2", py, ws_port(), K);
    cr_assert_eq(run_script(cmd, out, sizeof out), 0, "%s", out);
    cr_assert_str_eq(value_of(out, "reply"), "5a00");
}

Test(ws, python_client_punch_to_registered_id)
{
    if (!have_websockets())
        cr_skip_test("python3-websockets is not installed");
    peer b;
    reg(&b, "127.0.8.2", "400000091");
    char py[600], cmd[1200], out[4096];
    script_path(py, sizeof py, "ws_client.py");
    snprintf(cmd, sizeof cmd, PY " %s --port %d --src 127.0.8.1 punch %s %s 2", py, ws_port(), b.id, K);
    FILE *p = popen(cmd, "r"); /* the requester waits; we play B meanwhile */
    cr_assert_not_null(p);
    msg_t *ph = udp_recv_from_server(b.udp, 10000);
    cr_assert(ph && ph->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE, "B got no PunchHole");
    rdv_addr pa;
    char ip[RDV_ADDR_STRLEN];
    rdv_addr_unmangle(ph->punch_hole->socket_addr.data, ph->punch_hole->socket_addr.len, &pa);
    cr_assert_str_eq(rdv_addr_ip_str(&pa, ip, sizeof ip), "127.0.8.1", "the Python client's address");
    msg_t *m = rdc_relay_response(ph->punch_hole->socket_addr, "U-py-1", "relay.test:21117", b.id, "1.4.9");
    int bt = rdvt_tcp(b.ip, srv.port);
    msg_t *ke = rdvt_tcp_recv(bt, 3000);
    rdvt_msg_free(ke);
    cr_assert_eq(rdvt_tcp_send(bt, m), 0);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    cr_assert_str_eq(value_of(out, "tag"), "relay_response", "%s", out);
    cr_assert_str_eq(value_of(out, "uuid"), "U-py-1");
    cr_assert_str_eq(value_of(out, "relay_server"), "relay.test:21117");
    cr_assert_str_eq(value_of(out, "version"), "1.4.9");
    rdvt_msg_free(ph);
    close(bt);
    close(b.udp);
}

Test(ws, chromium_headless_browser, .timeout = 180)
{
    if (access("/usr/bin/chromium", X_OK) != 0)
        cr_skip_test("chromium is not installed (apt-get install chromium)");
    char script[600], cmd[1400], out[8192];
    script_path(script, sizeof script, "ws_browser.py");
    snprintf(cmd, sizeof cmd, PY " %s --ws-port %d --key %s --timeout 90", script, ws_port(), K);
    int st = run_script(cmd, out, sizeof out);
    if (st == 77)
        cr_skip_test("%s", out);
    cr_assert_eq(st, 0, "browser run failed: %s", out);
    cr_assert_null(value_of(out, "error"), "%s", out);
    cr_assert_str_eq(value_of(out, "nat_tag"), "test_nat_response", "%s", out);
    int port = atoi(value_of(out, "nat_port"));
    cr_assert(port > 0 && port < 65536, "the browser's source port, decoded in the page: %s", out);
    cr_assert_str_eq(value_of(out, "nat_close"), "1000", "%s", out);
    cr_assert_str_eq(value_of(out, "punch"), "5a00", "%s", out);
}

/* ------------------------------------------------------------------ admin and stats */
/* A client that upgrades, never reads, fills rdvd's write queue with pongs
 * and then says goodbye: the closing connection flushes for at most
 * core.shutdown_ms (5 s), then goes, with its queue, its descriptor and its
 * slot. (The module turns the core's idle timer off; the close once waited
 * for a reader that never comes, for ever.) The suite's write_queue_max of
 * 16 MiB keeps the overflow close out of the way. */
Test(ws, closing_connection_with_an_unread_queue_is_closed_within_the_bound)
{
    int fd = rdvt_tcp_rcvbuf("127.0.0.31", ws_port(), 4096); /* the pongs stay in rdvd */
    cr_assert_geq(fd, 0);
    char head[1024];
    cr_assert_eq(rdc_ws_upgrade(fd, "/", "r", head, sizeof head), 0);
    cr_assert(strncmp(head, "HTTP/1.1 101 ", 13) == 0, "%s", head);
    char *listed = rdvt_admin(&srv, "websocket");
    cr_assert(listed && strstr(listed, " 127.0.0.31:"), "the console lists it: %s", listed ? listed : "(null)");
    free(listed);
    uint8_t ping[125];
    memset(ping, 'p', sizeof ping);
    for (int i = 0; i < 40000; i++) /* ~5 MB of pongs */
        rdc_ws_send_frame(fd, true, 9, true, ping, sizeof ping);
    rdc_ws_send_frame(fd, true, 8, true, "\x03\xe8", 2);
    /* Watched by its source address, not core.connections: a connection
     * another test left behind must not be mistaken for this one. */
    uint64_t deadline = rdc_now_ms() + (srv.valgrind ? 60000 : 20000);
    bool open = true;
    while (open && rdc_now_ms() < deadline) {
        char *ans = rdvt_admin(&srv, "websocket");
        cr_assert(ans && strstr(ans, "connections "), "%s", ans ? ans : "(no answer)");
        open = strstr(ans, " 127.0.0.31:") != NULL;
        free(ans);
        if (open)
            usleep(100000);
    }
    cr_assert_not(open, "a closing connection that is never read stayed open");
    cr_assert_eq(rdvt_stat(&srv, "core.closed_write_overflow"), 0, "the queue limit closed it, not the bound");
    close(fd);
    alive();
}

/* R10 with R9's rule: idle_ms (8 s here) counts from the last whole
 * message. Pings between the fragments of a message that never ends do not
 * keep it, or its buffer, alive. */
Test(ws, R10_pings_do_not_keep_a_part_message_alive, .timeout = 120)
{
    int fd = ws_open("127.0.0.32");
    size_t part = 100000;
    uint8_t *p = calloc(1, part);
    rdc_ws_send_frame(fd, false, 2, true, p, part); /* fin = 0: more to come, never */
    free(p);
    uint64_t start = rdc_now_ms(), limit = start + (srv.valgrind ? 60000 : 14000);
    bool closed = false;
    while (!closed && rdc_now_ms() < limit) {
        rdc_ws_send_frame(fd, true, 9, true, "ka", 2);
        unsigned op;
        uint8_t *got;
        size_t n;
        int r = 0;
        while (!closed && (r = rdc_ws_recv(fd, &op, &got, &n, 1000)) == 0) {
            closed = op == 8; /* our close frame (1001 going away) */
            free(got);
        }
        closed = closed || r == -2; /* EOF */
    }
    uint64_t took = rdc_now_ms() - start;
    cr_assert(closed, "a part message kept alive by pings for %llu ms", (unsigned long long)took);
    cr_assert(srv.valgrind || took >= 7000, "closed after %llu ms, before idle_ms", (unsigned long long)took);
    close(fd);
}

Test(ws, admin_command_and_stats)
{
    int a = ws_open_from("127.0.9.5", "/", "X-Real-IP: 203.0.113.77\r\n");
    char *ans = rdvt_admin(&srv, "websocket");
    cr_assert_not_null(ans);
    cr_assert(strstr(ans, "connections 1"), "%s", ans);
    cr_assert(strstr(ans, "as 203.0.113.77:0"), "%s", ans);
    free(ans);
    cr_assert_eq(rdvt_stat(&srv, "websocket-transport.connections"), 1);
    close(a);
}

/* ------------------------------------------------------------------ relay WebSocket port */
static rdvt_server rsrv;

static const char *const relay_files[] = {
    "00-core.conf",
    "core: { modules = [ \"relay\", \"websocket-transport\" ]; module_path = \"@MODDIR@\"; };\n",
    "10-relay.conf", "relay: { port = @RELAY@; key = \"\"; };\n",
    "50-websocket-transport.conf", "websocket-transport: { rendezvous_port = 0; relay_port = @RWS@; };\n",
    NULL,
};

static void relay_setup(void)
{
    memset(&rsrv, 0, sizeof rsrv);
    if (access(RDV_BUILD_DIR "/modules/relay.so", R_OK) != 0)
        cr_skip_test("the relay module is not built");
    start_retrying(&rsrv, relay_files);
}

static void relay_teardown(void)
{
    if (rsrv.pid <= 0)
        return;
    int st = rdvt_stop(&rsrv);
    rdvt_cleanup(&rsrv);
    cr_assert_eq(st, 0);
}

TestSuite(ws_relay, .init = relay_setup, .fini = relay_teardown, .timeout = 240);

static void need_relay_ws(void)
{
    if (rdvt_log_contains(&rsrv, "stays closed"))
        cr_skip_test("the relay module does not provide the relay-ws service yet "
                     "(include/rdv/svc/relay_ws.h)");
}

static int rws_open(const char *src)
{
    int fd = rdvt_tcp(src, rsrv.port + 3);
    cr_assert_geq(fd, 0);
    char head[1024];
    cr_assert_eq(rdc_ws_upgrade(fd, "/ws/relay", "r", head, sizeof head), 0);
    cr_assert(strncmp(head, "HTTP/1.1 101 ", 13) == 0, "%s", head);
    return fd;
}

static size_t request_relay(const char *uuid, uint8_t *buf, size_t cap)
{
    Hbb__RequestRelay rr = HBB__REQUEST_RELAY__INIT;
    rr.uuid = (char *)uuid;
    msg_t m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY;
    m.request_relay = &rr;
    return rdc_pack(&m, buf, cap);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 131 + seed);
}

/* Two WebSocket sides from asrc and bsrc, paired by uuid. */
static void ws_ws_pair(const char *uuid, const char *asrc, const char *bsrc, int *a, int *b)
{
    uint8_t rq[128];
    size_t rn = request_relay(uuid, rq, sizeof rq);
    *a = rws_open(asrc), *b = rws_open(bsrc);
    rdc_ws_send_frame(*a, true, 2, true, rq, rn);
    usleep(200000);
    rdc_ws_send_frame(*b, true, 2, true, rq, rn);
}

Test(ws_relay, L20_L21_websocket_pair_keeps_message_boundaries)
{
    need_relay_ws();
    int a, b;
    ws_ws_pair("0f8fad5b-d9cb-469f-a165-70867728950e", "127.0.20.1", "127.0.20.2", &a, &b);
    const size_t sizes[] = { 1, 63, 64, 1000, 70000 };
    for (size_t i = 0; i < 5; i++) {
        for (int dir = 0; dir < 2; dir++) {
            int from = dir ? b : a, to = dir ? a : b;
            uint8_t *p = malloc(sizes[i]);
            fill(p, sizes[i], (unsigned)(i + 7 * dir));
            rdc_ws_send_frame(from, true, 2, true, p, sizes[i]);
            unsigned op;
            uint8_t *got;
            size_t n;
            cr_assert_eq(rdc_ws_recv(to, &op, &got, &n, 10000), 0, "message of %zu bytes not relayed", sizes[i]);
            cr_assert_eq(op, 2);
            cr_assert_eq(n, sizes[i], "same boundaries");
            cr_assert(memcmp(got, p, n) == 0, "same bytes");
            free(got), free(p);
        }
    }
    close(a), close(b);
}

/* A WebSocket side from wsrc and a TCP side from tsrc, paired by uuid. */
static void ws_tcp_pair(const char *uuid, const char *wsrc, const char *tsrc, int *w, int *t)
{
    uint8_t rq[128];
    size_t rn = request_relay(uuid, rq, sizeof rq);
    *w = rws_open(wsrc);
    rdc_ws_send_frame(*w, true, 2, true, rq, rn);
    usleep(200000);
    *t = rdvt_tcp(tsrc, rsrv.port + 1);
    cr_assert_geq(*t, 0);
    cr_assert_eq(rdvt_tcp_send_frame(*t, rq, rn), 0);
    usleep(200000);
}

Test(ws_relay, L22_L23_websocket_tcp_pair)
{
    need_relay_ws();
    int w, t;
    ws_tcp_pair("7c9e6679-7425-40de-944b-e07fc1f90ae7", "127.0.21.1", "127.0.21.2", &w, &t);
    const size_t sizes[] = { 63, 64, 16383, 16384 };
    const uint8_t hdr[4][3] = { { 0xfc }, { 0x01, 0x01 }, { 0xfd, 0xff }, { 0x02, 0x00, 0x01 } };
    const size_t hl[4] = { 1, 2, 2, 3 };
    for (size_t i = 0; i < 4; i++) {
        uint8_t *p = malloc(sizes[i]);
        fill(p, sizes[i], (unsigned)i);
        rdc_ws_send_frame(w, true, 2, true, p, sizes[i]);
        uint8_t h[3];
        cr_assert_eq(rdc_read_exact(t, h, hl[i], rdc_now_ms() + 10000), 0);
        cr_assert_arr_eq(h, hdr[i], hl[i], "minimal BytesCodec header for %zu bytes", sizes[i]);
        uint8_t *got = malloc(sizes[i]);
        cr_assert_eq(rdc_read_exact(t, got, sizes[i], rdc_now_ms() + 10000), 0);
        cr_assert(memcmp(got, p, sizes[i]) == 0);
        free(got), free(p);
    }
    size_t big = 2u << 20; /* TCP -> WS: one frame becomes one binary message */
    uint8_t *p = malloc(big);
    fill(p, big, 99);
    cr_assert_eq(rdvt_tcp_send_frame(t, p, big), 0);
    unsigned op;
    uint8_t *got;
    size_t n;
    cr_assert_eq(rdc_ws_recv(w, &op, &got, &n, 20000), 0);
    cr_assert_eq(op, 2);
    cr_assert_eq(n, big);
    cr_assert(memcmp(got, p, big) == 0);
    free(got), free(p);
    close(w), close(t);
}

/* relay.md §4.4: WebSocket messages up to 64 MiB (frames up to 16 MiB) MUST
 * be accepted. 12 MiB is three times core.write_queue_max (4 MiB): the
 * message crosses TCP -> WS, WS -> WS and WS -> TCP whole, with the default
 * limits. (The limit bounds what a reader that stops can make us hold; it
 * is not a message size limit.) */
Test(ws_relay, L23_L30_messages_over_the_write_queue_limit_cross_whole, .timeout = 240)
{
    need_relay_ws();
    const size_t big = 12u << 20;
    uint8_t *p = malloc(big), *got;
    unsigned op;
    size_t n;

    /* TCP -> WS and WS -> TCP */
    int w, t;
    ws_tcp_pair("1b4e28ba-2fa1-11d2-883f-0016d3cca427", "127.0.22.1", "127.0.22.2", &w, &t);
    fill(p, big, 5);
    cr_assert_eq(rdvt_tcp_send_frame(t, p, big), 0);
    cr_assert_eq(rdc_ws_recv(w, &op, &got, &n, 60000), 0, "12 MiB frame not relayed to the WebSocket side");
    cr_assert_eq(op, 2);
    cr_assert_eq(n, big);
    cr_assert(memcmp(got, p, big) == 0);
    free(got);
    fill(p, big, 6);
    rdc_ws_send_frame(w, true, 2, true, p, big);
    uint8_t h[4];
    cr_assert_eq(rdc_read_exact(t, h, 4, rdc_now_ms() + 60000), 0, "12 MiB message not relayed to the TCP side");
    cr_assert_eq(((size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24) >> 2, big);
    got = malloc(big);
    cr_assert_eq(rdc_read_exact(t, got, big, rdc_now_ms() + 60000), 0);
    cr_assert(memcmp(got, p, big) == 0);
    free(got);
    close(w), close(t);

    /* WS -> WS, both ways */
    int a, b;
    ws_ws_pair("6fa459ea-ee8a-3ca4-894e-db77e160355e", "127.0.22.3", "127.0.22.4", &a, &b);
    for (int dir = 0; dir < 2; dir++) {
        int from = dir ? b : a, to = dir ? a : b;
        fill(p, big, (unsigned)(7 + dir));
        rdc_ws_send_frame(from, true, 2, true, p, big);
        cr_assert_eq(rdc_ws_recv(to, &op, &got, &n, 60000), 0, "12 MiB message not relayed between WebSocket sides");
        cr_assert_eq(n, big);
        cr_assert(memcmp(got, p, big) == 0);
        free(got);
    }
    close(a), close(b);
    free(p);
}

/* relay.md §4.6, §4.3 (L25, L61): a WebSocket side that reads at its own
 * pace and pings after each read (a ping is legal at any time; some
 * clients and proxies keep connections alive that way). When the relay
 * pauses the TCP partner because the side's queue is full, only the drain
 * of that queue resumes it. A pong written after the client caught up can
 * flush the whole queue itself; on the code before this test the core then
 * stopped its write watcher without reporting the drain, and the TCP ->
 * WebSocket direction froze for good after about 5 MB while the pongs kept
 * the pair alive. Every byte must arrive, in order (SHA-256 of the
 * payloads), with no long gap. */
Test(ws_relay, L25_L61_pings_from_a_slow_reader_do_not_freeze_the_pair, .timeout = 240)
{
    need_relay_ws();
    enum { PAYLOAD = 60000, COUNT = 560 }; /* 33.6 MB through the relay */
    int w, t;
    ws_tcp_pair("d1b2f3a4-5c6d-4e7f-8091-a2b3c4d5e6f7", "127.0.23.1", "127.0.23.2", &w, &t);
    pid_t writer = fork();
    cr_assert_geq(writer, 0);
    if (writer == 0) { /* the TCP side writes as fast as the relay takes it */
        uint8_t *p = malloc(PAYLOAD);
        for (unsigned i = 0; p && i < COUNT; i++) {
            fill(p, PAYLOAD, i);
            if (rdvt_tcp_send_frame(t, p, PAYLOAD) != 0)
                _exit(1);
        }
        _exit(p ? 0 : 1);
    }
    /* t stays open here until the end: no FIN from the TCP side (which
     * would end the pair once the WebSocket side's queue is out) before the
     * last message is read. */
    crypto_hash_sha256_state want, got;
    crypto_hash_sha256_init(&want);
    uint8_t *p = malloc(PAYLOAD);
    for (unsigned i = 0; i < COUNT; i++) {
        fill(p, PAYLOAD, i);
        crypto_hash_sha256_update(&want, p, PAYLOAD);
    }
    free(p);
    /* The reader is busy for a second: the relay fills its queue, pauses
     * the TCP side, and the kernel buffers fill up. */
    sleep(1);
    crypto_hash_sha256_init(&got);
    size_t cap = 1 << 20, len = 0, total = 0, msgs = 0;
    uint8_t *buf = malloc(cap);
    uint64_t last_data = rdc_now_ms(), gap_max = 10000u * (uint64_t)(RDVT_SANITIZED ? 2 : 1);
    while (total < (size_t)PAYLOAD * COUNT) {
        struct pollfd pf = { .fd = w, .events = POLLIN };
        cr_assert_geq(poll(&pf, 1, 1000), 0);
        cr_assert(rdc_now_ms() - last_data < gap_max,
                  "TCP -> WebSocket froze after %zu of %zu bytes (only pongs for %llu ms)", total,
                  (size_t)PAYLOAD * COUNT, (unsigned long long)gap_max);
        if (!(pf.revents & POLLIN))
            continue;
        if (cap - len < 65536)
            cr_assert_not_null(buf = realloc(buf, cap *= 2));
        ssize_t n = recv(w, buf + len, 65536, 0);
        cr_assert_gt(n, 0, "the pair ended after %zu bytes", total);
        len += (size_t)n;
        rdc_ws_send_frame(w, true, 9, true, "p", 1); /* after each read */
        usleep(1000);
        size_t off = 0;
        for (;;) { /* whole server frames (unmasked) */
            if (len - off < 2)
                break;
            unsigned op = buf[off] & 0x0f;
            size_t hl = 2, pl = buf[off + 1] & 0x7f;
            if (pl == 126) {
                if (len - off < 4)
                    break;
                hl = 4, pl = (size_t)buf[off + 2] << 8 | buf[off + 3];
            } else if (pl == 127) {
                if (len - off < 10)
                    break;
                hl = 10, pl = 0;
                for (int k = 0; k < 8; k++)
                    pl = pl << 8 | buf[off + 2 + k];
            }
            if (len - off < hl + pl)
                break;
            if (op == 2) {
                cr_assert_eq(pl, (size_t)PAYLOAD, "message %zu: one frame, one message", msgs);
                crypto_hash_sha256_update(&got, buf + off + hl, pl);
                total += pl, msgs++;
                last_data = rdc_now_ms();
            } else {
                cr_assert_eq(op, 10u, "only pongs besides the data, got opcode %u", op);
            }
            off += hl + pl;
        }
        memmove(buf, buf + off, len - off);
        len -= off;
    }
    free(buf);
    uint8_t h1[crypto_hash_sha256_BYTES], h2[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&want, h1);
    crypto_hash_sha256_final(&got, h2);
    cr_assert_arr_eq(h1, h2, sizeof h1, "the payloads arrived intact and in order");
    int st;
    cr_assert_eq(waitpid(writer, &st, 0), writer);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the TCP side could not write everything");
    close(w), close(t);
}

/* relay.md §3.4, L47: a WebSocket side that leaves while it waits is
 * dropped at once (before: only at the 30 s wait limit, as its socket was
 * not read), by a close frame or by a bare FIN; one that sent a message
 * first is still held and paired with all of it (§4.4). */
static uint64_t rstat_within(const char *name, uint64_t want, int ms)
{
    uint64_t slow = rsrv.valgrind ? 10 : RDVT_SANITIZED ? 2 : 1; /* under the 30 s wait limit even so */
    uint64_t end = rdc_now_ms() + (uint64_t)ms * slow, v;
    while ((v = rdvt_stat(&rsrv, name)) != want && rdc_now_ms() < end)
        usleep(20000);
    return v;
}

Test(ws_relay, L47_a_waiting_websocket_side_that_leaves_is_dropped_at_once)
{
    need_relay_ws();
    uint8_t rq[128];
    size_t rn = request_relay("5c2d8d4e-47d1-4a8a-9d55-1f0b0c1e2d3f", rq, sizeof rq);
    int a = rws_open("127.0.20.1");
    rdc_ws_send_frame(a, true, 2, true, rq, rn);
    cr_assert_eq(rstat_within("relay.waiting", 1, 3000), 1);
    static const uint8_t bye[] = { 0x03, 0xe8 }; /* close 1000 */
    rdc_ws_send_frame(a, true, 8, true, bye, sizeof bye);
    cr_assert_eq(rstat_within("relay.waiting", 0, 2000), 0, "a close frame ends the wait");
    cr_assert_eq(rdvt_stat(&rsrv, "relay.rejected_waiter_gone"), 1);
    close(a);

    a = rws_open("127.0.20.1");
    rdc_ws_send_frame(a, true, 2, true, rq, rn);
    cr_assert_eq(rstat_within("relay.waiting", 1, 3000), 1);
    close(a); /* no close frame: the socket's FIN */
    cr_assert_eq(rstat_within("relay.waiting", 0, 2000), 0, "a FIN ends the wait");
    cr_assert_eq(rdvt_stat(&rsrv, "relay.rejected_waiter_gone"), 2);

    /* A late side for that uuid now waits itself: no pair with a side that left. */
    int b = rws_open("127.0.20.2");
    rdc_ws_send_frame(b, true, 2, true, rq, rn);
    cr_assert_eq(rstat_within("relay.waiting", 1, 3000), 1);
    /* It sends before its partner comes: held, then paired with all of it. */
    static const uint8_t early[] = "signed-id";
    rdc_ws_send_frame(b, true, 2, true, early, sizeof early);
    usleep(200000);
    int c = rws_open("127.0.20.3");
    rdc_ws_send_frame(c, true, 2, true, rq, rn);
    unsigned op;
    uint8_t *got;
    size_t n;
    cr_assert_eq(rdc_ws_recv(c, &op, &got, &n, 5000), 0, "the held message reaches the partner");
    cr_assert_eq(n, sizeof early);
    cr_assert(memcmp(got, early, n) == 0);
    free(got);
    cr_assert_eq(rdvt_stat(&rsrv, "relay.paired"), 1);
    close(b), close(c);
}
