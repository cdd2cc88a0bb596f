/* Integration: the secure-TCP key exchange (EXT rendezvous.md §15.1-§15.3,
 * §15.5-§15.6; wire.md §6.3-§6.6, §6.10; R200-R210, R225, R231, R151, R203)
 * with the real rdvd and modules keys, secure-tcp, api-proxy and example
 * (the example answers TestNatRequest on the main port, standing in for any
 * plain request/response). The test plays a current RustDesk client with
 * libsodium: it verifies frame 1 with the server's public key as the client
 * does with its configured key, answers with frame 2 and then talks sealed. */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "rdclient.h"
#include "rdv/wire.h"

/* wire.md §6.6: the server key from seed 0x11 and its key string. */
#define SEED11_SK "ERERERERERERERERERERERERERERERERERERERERERHQSrIydCu0qzoTaL1GFeTm0CJKtxoBa6+FIKMyyXeHNw=="
#define SEED11_PK "0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="

static rdvt_server srv;
static char conf_core[1024], conf_mods[1024];

/* The NAT port (an odd port number, like the kernel's ephemeral client
 * ports, so busy machines make it collide) only where it is tested. */
static void start_with(const char *keys_key, const char *stcp_extra, const char *apx_extra, bool nat)
{
    cr_assert_geq(sodium_init(), 0);
    snprintf(conf_core, sizeof conf_core,
             "core: {\n"
             "  modules = [ \"keys\", \"secure-tcp\", \"api-proxy\", \"example\" ];\n"
             "  module_path = \"@MODDIR@\";\n"
             "  listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; }%s );\n"
             "};\n",
             nat ? ",\n { name = \"nat\"; port = @NAT@; tcp = true; }" : "");
    snprintf(conf_mods, sizeof conf_mods,
             "keys: { key = \"%s\"; };\n"
             "secure-tcp: { %s };\n"
             "api-proxy: { heartbeat_ms = 400; %s };\n"
             "example: { listener = \"main\"; };\n",
             keys_key, stcp_extra, apx_extra);
    const char *const files[] = { "00-core.conf", conf_core, "30-mods.conf", conf_mods, NULL };
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
    cr_assert_eq(rdvt_start(&srv), 0, "rdvd did not start");
}

static void setup(void) { start_with("-", "", "", false); }
static void setup_nat(void) { start_with("-", "", "", true); }
static void setup_oss(void) { start_with("-", "enabled = false;", "", false); }
static void setup_nokey(void) { start_with("a-licence-key-not-a-secret-key", "", "", false); }
static void setup_vector(void) { start_with(SEED11_SK, "", "", false); }

static void teardown(void)
{
    int st = rdvt_stop(&srv);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "rdvd did not exit cleanly (status %d)", st);
}

TestSuite(secure_tcp, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(secure_tcp_nat, .init = setup_nat, .fini = teardown, .timeout = 60);
TestSuite(secure_tcp_oss, .init = setup_oss, .fini = teardown, .timeout = 60);
TestSuite(secure_tcp_nokey, .init = setup_nokey, .fini = teardown, .timeout = 60);
TestSuite(secure_tcp_vector, .init = setup_vector, .fini = teardown, .timeout = 60);

/* ------------------------------------------------------------------ the client (rdclient.c) */
typedef rdc_keyed client;

/* The key the client is configured with: id_ed25519.pub of the server. */
static void server_pk_from_file(uint8_t pk[32])
{
    char b64[128];
    size_t n = 0;
    rdc_read_server_key(&srv, b64, sizeof b64, pk, &n);
    cr_assert_eq(n, 32);
}

static void pk_from_string(const char *s, uint8_t pk[32]) { cr_assert_eq(rdc_key_from_string(s, pk), 32); }

static int connect_from(const char *ip) { return rdc_connect(ip, srv.port); }

/* Frame 1 as the client checks it (R200). */
static void read_offer(int fd, const uint8_t pk[32], uint8_t box_pk[32]) { rdc_read_offer(fd, pk, box_pk, 5000); }

/* A connection from ip past a checked frame 1; box_pk its box key. */
static int offered_conn(const char *ip, uint8_t box_pk[32])
{
    int fd = connect_from(ip);
    uint8_t pk[32];
    server_pk_from_file(pk);
    read_offer(fd, pk, box_pk);
    return fd;
}

static client keyed_client(const char *ip)
{
    uint8_t pk[32];
    server_pk_from_file(pk);
    return rdc_keyed_connect(ip, srv.port, pk, 5000);
}

/* The next sealed frame (skipping raw empty heartbeats), opened with the
 * next server counter. */
static Hbb__RendezvousMessage *recv_sealed(client *c, int ms)
{
    for (;;) {
        uint8_t *e = NULL;
        long n = rdvt_tcp_recv_frame(c->fd, &e, ms);
        cr_assert_geq(n, 0, "no frame (%ld)", n);
        if (n == 0) {
            free(e);
            continue;
        }
        Hbb__RendezvousMessage *m = rdc_open_sealed(c, e, n);
        free(e);
        return m;
    }
}

static Hbb__RendezvousMessage *nat_req(void) { return rdc_test_nat_request(0); }

static void expect_nat_sealed(client *c)
{
    Hbb__RendezvousMessage *m = recv_sealed(c, 3000);
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    rdvt_msg_free(m);
}

static void expect_nat_plain(int fd)
{
    Hbb__RendezvousMessage *m = rdvt_tcp_recv(fd, 3000);
    cr_assert_not_null(m, "no plaintext answer");
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    rdvt_msg_free(m);
}

/* "Closed" without a byte sent (checklist conventions). */
static void expect_closed_silently(int fd)
{
    rdc_expect_closed_silently(fd, 3000);
    close(fd);
}

/* The server is alive and still completes handshakes. */
static void liveness(void)
{
    client c = keyed_client("127.0.0.9");
    rdc_send_sealed(&c, nat_req());
    expect_nat_sealed(&c);
    close(c.fd);
}

/* ------------------------------------------------------------------ R200-R205 */
Test(secure_tcp, offer_is_the_first_frame_R200)
{
    uint8_t box_pk[32];
    int fd = offered_conn("127.0.0.2", box_pk);
    close(fd);
    cr_assert_eq(rdvt_stat(&srv, "secure-tcp.offered"), 1);
}

Test(secure_tcp, box_key_per_connection_R201)
{
    uint8_t pk[32], a[32], b[32];
    server_pk_from_file(pk);
    int f1 = connect_from("127.0.0.2"), f2 = connect_from("127.0.0.3");
    read_offer(f1, pk, a);
    read_offer(f2, pk, b);
    cr_assert_neq(memcmp(a, b, 32), 0);
    close(f1), close(f2);
}

Test(secure_tcp_nat, no_offer_on_the_nat_port_R202)
{
    int fd = rdvt_tcp("127.0.0.4", srv.port - 1);
    cr_assert_geq(fd, 0);
    uint8_t *b = NULL;
    cr_assert_eq(rdvt_tcp_recv_frame(fd, &b, 700), -1, "nothing may be sent first on the NAT port");
    close(fd);
}

Test(secure_tcp, sealed_requests_and_answers_R204_R205)
{
    client c = keyed_client("127.0.0.2");
    for (int i = 0; i < 3; i++) { /* counters 1, 2, 3 both ways */
        rdc_send_sealed(&c, nat_req());
        expect_nat_sealed(&c);
    }
    cr_assert_eq(c.tx, 3);
    cr_assert_eq(c.rx, 3);
    /* Another keyed connection has counters of its own. */
    client d = keyed_client("127.0.0.3");
    rdc_send_sealed(&d, nat_req());
    expect_nat_sealed(&d);
    cr_assert_eq(d.rx, 1);
    close(c.fd), close(d.fd);
    cr_assert_eq(rdvt_stat(&srv, "secure-tcp.completed"), 2);
}

Test(secure_tcp, pipelined_answer_and_request)
{
    /* A client may send frame 2 and its first sealed frame in one write. */
    uint8_t box_pk[32];
    client c = { .fd = offered_conn("127.0.0.2", box_pk) };
    rdc_answer_offer(&c, box_pk);
    rdc_send_sealed(&c, nat_req());
    expect_nat_sealed(&c);
    close(c.fd);
}

/* ------------------------------------------------------------------ R206, R210: plaintext clients */
Test(secure_tcp, plaintext_client_is_tolerated_R206)
{
    uint8_t box_pk[32];
    int fd = offered_conn("127.0.0.2", box_pk);
    cr_assert_eq(rdvt_tcp_send(fd, nat_req()), 0);
    expect_nat_plain(fd);
    cr_assert_eq(rdvt_tcp_send(fd, nat_req()), 0);
    expect_nat_plain(fd);
    close(fd);
    cr_assert_eq(rdvt_stat(&srv, "secure-tcp.plaintext"), 1);
}

Test(secure_tcp, client_that_ignores_the_offer)
{
    /* An old client writes first and skips one KeyExchange when reading. */
    int fd = connect_from("127.0.0.2");
    cr_assert_eq(rdvt_tcp_send(fd, nat_req()), 0);
    Hbb__RendezvousMessage *m = rdvt_tcp_recv(fd, 3000);
    cr_assert(m && m->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE);
    rdvt_msg_free(m);
    expect_nat_plain(fd);
    close(fd);
}

Test(secure_tcp, late_key_exchange_closes_R210)
{
    uint8_t box_pk[32];
    int fd = offered_conn("127.0.0.2", box_pk);
    cr_assert_eq(rdvt_tcp_send(fd, nat_req()), 0);
    expect_nat_plain(fd);
    client c = { .fd = fd };
    rdc_answer_offer(&c, box_pk);
    expect_closed_silently(fd);
    liveness();
}

Test(secure_tcp, second_key_exchange_closes)
{
    client c = keyed_client("127.0.0.2");
    uint8_t cpk[32], sealed[48];
    randombytes_buf(cpk, sizeof cpk);
    randombytes_buf(sealed, sizeof sealed);
    ProtobufCBinaryData keys[2] = { { 32, cpk }, { 48, sealed } };
    Hbb__KeyExchange kx = HBB__KEY_EXCHANGE__INIT;
    kx.n_keys = 2;
    kx.keys = keys;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE;
    m.key_exchange = &kx;
    rdc_send_sealed(&c, &m); /* a keyed client asking to re-key */
    expect_closed_silently(c.fd);
    cr_assert_eq(rdvt_stat(&srv, "secure-tcp.failed_unexpected"), 1);
    liveness();
}

/* ------------------------------------------------------------------ R207, R208: bad input */
static void bad_answer(const size_t *lens, size_t n, const char *stat)
{
    uint8_t box_pk[32], buf[4][64];
    int fd = offered_conn("127.0.0.2", box_pk);
    ProtobufCBinaryData keys[4];
    for (size_t i = 0; i < n; i++) {
        randombytes_buf(buf[i], sizeof buf[i]);
        keys[i] = (ProtobufCBinaryData){ lens[i], buf[i] };
    }
    rdc_send_key_exchange(fd, keys, n);
    expect_closed_silently(fd);
    cr_assert_eq(rdvt_stat(&srv, stat), 1, "%s", stat);
    liveness();
}

Test(secure_tcp, one_key_R207) { bad_answer((size_t[]){ 32 }, 1, "secure-tcp.failed_count"); }
Test(secure_tcp, three_keys_R207) { bad_answer((size_t[]){ 32, 48, 48 }, 3, "secure-tcp.failed_count"); }
Test(secure_tcp, no_keys_R207) { bad_answer(NULL, 0, "secure-tcp.failed_count"); }
Test(secure_tcp, keys_31_48_R207) { bad_answer((size_t[]){ 31, 48 }, 2, "secure-tcp.failed_length"); }
Test(secure_tcp, keys_32_47_R207) { bad_answer((size_t[]){ 32, 47 }, 2, "secure-tcp.failed_length"); }
Test(secure_tcp, garbage_box_R207) { bad_answer((size_t[]){ 32, 48 }, 2, "secure-tcp.failed_box"); }

Test(secure_tcp, decryption_failure_closes_R208)
{
    client c = keyed_client("127.0.0.2");
    uint8_t junk[20];
    randombytes_buf(junk, sizeof junk);
    cr_assert_eq(rdvt_tcp_send_frame(c.fd, junk, sizeof junk), 0);
    expect_closed_silently(c.fd);
    liveness();
}

/* A record of 2..15 bytes cannot even hold the 16-byte tag: closed silently
 * like any record that fails to open (it once sized the plaintext as n - 16,
 * which wrapped; found by fuzz_node). A sealed empty message (16 bytes)
 * opens: it is then an empty payload, which closes the connection too
 * (rendezvous.md §4.2), but not as a bad record. */
Test(secure_tcp, records_shorter_than_a_tag_close_R208)
{
    static const size_t sizes[] = { 2, 15 };
    for (size_t i = 0; i < 2; i++) {
        client c = keyed_client("127.0.0.2");
        uint8_t junk[15] = { 0 };
        cr_assert_eq(rdvt_tcp_send_frame(c.fd, junk, sizes[i]), 0);
        expect_closed_silently(c.fd);
        cr_assert_eq(rdvt_stat(&srv, "core.record_bad"), i + 1);
    }
    client c = keyed_client("127.0.0.2");
    uint8_t empty[1], sealed[RDV_SECURE_MACBYTES];
    cr_assert_eq(rdv_secure_seal(c.key, &c.tx, empty, 0, sealed), 0);
    cr_assert_eq(rdvt_tcp_send_frame(c.fd, sealed, sizeof sealed), 0);
    expect_closed_silently(c.fd);
    cr_assert_eq(rdvt_stat(&srv, "core.record_bad"), 2);
    cr_assert_eq(rdvt_stat(&srv, "core.tcp_unhandled"), 1);
    liveness();
}

/* ------------------------------------------------------------------ R225: HttpProxyRequest */
Test(secure_tcp, http_proxy_without_api_is_answered_sealed_R225)
{
    client c = keyed_client("127.0.0.2");
    Hbb__HttpProxyRequest r = HBB__HTTP_PROXY_REQUEST__INIT;
    r.method = "GET";
    r.path = "/api/";
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_HTTP_PROXY_REQUEST;
    m.http_proxy_request = &r;
    rdc_send_sealed(&c, &m);
    Hbb__RendezvousMessage *a = recv_sealed(&c, 2000);
    cr_assert_eq(a->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_HTTP_PROXY_RESPONSE);
    cr_assert_str_neq(a->http_proxy_response->error, "");
    rdvt_msg_free(a);
    close(c.fd);
}

/* ------------------------------------------------------------------ R209, R231: heartbeats */
Test(secure_tcp, health_check_heartbeats_consume_no_counter_R209_R231)
{
    client c = keyed_client("127.0.0.2");
    Hbb__HealthCheck hc = HBB__HEALTH_CHECK__INIT;
    hc.token = "token";
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_HC;
    m.hc = &hc;
    rdc_send_sealed(&c, &m); /* counter 1; no reply */
    /* Echo raw empty frames for 2 s: well past 3 x 400 ms of idle limit. */
    int beats = 0;
    for (long t0 = (long)time(NULL); beats < 5 || (long)time(NULL) - t0 < 2;) {
        uint8_t *e = NULL;
        long n = rdvt_tcp_recv_frame(c.fd, &e, 1000);
        free(e);
        cr_assert_eq(n, 0, "expected a raw empty heartbeat, got %ld", n);
        beats++;
        cr_assert_eq(rdvt_tcp_send_frame(c.fd, NULL, 0), 0);
    }
    /* Heartbeats consumed no counter in either direction. */
    rdc_send_sealed(&c, nat_req()); /* counter 2 */
    expect_nat_sealed(&c);          /* server counter 1 */
    cr_assert_eq(c.rx, 1);
    cr_assert_geq(rdvt_stat(&srv, "api-proxy.heartbeats"), 5);
    cr_assert_eq(rdvt_stat(&srv, "api-proxy.hc_sessions"), 1);
    /* A silent session is closed after 3 heartbeats. */
    cr_assert(rdvt_tcp_closed(c.fd, 3000), "a silent HealthCheck connection must be closed");
    close(c.fd);
}

/* ------------------------------------------------------------------ OSS and no-key profiles */
Test(secure_tcp_oss, no_offer_and_key_exchange_closes_R151)
{
    int fd = connect_from("127.0.0.2");
    cr_assert_eq(rdvt_tcp_send(fd, nat_req()), 0);
    expect_nat_plain(fd); /* the first frame is the answer */
    uint8_t k[32] = { 1 };
    ProtobufCBinaryData keys[1] = { { 32, k } };
    rdc_send_key_exchange(fd, keys, 1);
    expect_closed_silently(fd);
    cr_assert_eq(rdvt_stat(&srv, "secure-tcp.offered"), 0);
}

Test(secure_tcp_nokey, no_offer_without_signing_key_R203)
{
    int fd = connect_from("127.0.0.2");
    cr_assert_eq(rdvt_tcp_send(fd, nat_req()), 0);
    expect_nat_plain(fd); /* the first frame read is the answer to the request */
    close(fd);
    cr_assert_eq(rdvt_stat(&srv, "secure-tcp.offered"), 0);
    cr_assert_geq(rdvt_stat(&srv, "secure-tcp.skipped_nokey"), 1);
    /* And no offer arrives when the client only waits either. */
    fd = connect_from("127.0.0.3");
    uint8_t *b = NULL;
    cr_assert_eq(rdvt_tcp_recv_frame(fd, &b, 700), -1);
    close(fd);
}

/* ------------------------------------------------------------------ wire.md §6.6 server key */
Test(secure_tcp_vector, client_configured_with_the_key_string)
{
    uint8_t pk[32], box_pk[32];
    pk_from_string(SEED11_PK, pk);
    client c = { .fd = connect_from("127.0.0.2") };
    memset(c.key, 0x44, sizeof c.key); /* K of wire.md §6.6 */
    read_offer(c.fd, pk, box_pk);
    rdc_answer_offer(&c, box_pk);
    rdc_send_sealed(&c, nat_req());
    expect_nat_sealed(&c);
    close(c.fd);
    /* A client configured with another server's key rejects the offer. */
    uint8_t other[32];
    pk_from_string("OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw=", other);
    int fd = connect_from("127.0.0.3");
    Hbb__RendezvousMessage *m = rdvt_tcp_recv(fd, 1000);
    cr_assert(m && m->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE);
    uint8_t out[96];
    unsigned long long ol;
    cr_assert_neq(crypto_sign_open(out, &ol, m->key_exchange->keys[0].data, m->key_exchange->keys[0].len, other), 0);
    rdvt_msg_free(m);
    close(fd);
}
