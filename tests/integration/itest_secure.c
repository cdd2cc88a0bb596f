/* Integration: the core's secure-TCP record layer (wire.md §6.4) on a real
 * connection, with the fx_secure fixture module installing the key. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "rdv/wire.h"

static rdvt_server srv;
static uint8_t key[32];

static const char *const conf_files[] = {
    "00-core.conf",
    "core: { modules = [ \"fx_secure\" ]; module_path = \"@FIXDIR@\";\n"
    "  listeners = ( { name = \"main\"; port = @PORT@; tcp = true; } ); };\n",
    NULL,
};

static void setup(void)
{
    memset(key, 0x44, sizeof key);
    cr_assert_eq(rdvt_prepare(&srv, conf_files), 0);
    cr_assert_eq(rdvt_start(&srv), 0);
}

static void teardown(void)
{
    int st = rdvt_stop(&srv);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0);
}

TestSuite(secure, .init = setup, .fini = teardown, .timeout = 60);

static int keyed_conn(void)
{
    int fd = rdvt_tcp("127.0.0.2", srv.port);
    cr_assert_geq(fd, 0);
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    Hbb__KeyExchange kx = HBB__KEY_EXCHANGE__INIT;
    ProtobufCBinaryData k = { sizeof key, key };
    kx.n_keys = 1;
    kx.keys = &k;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE;
    m.key_exchange = &kx;
    cr_assert_eq(rdvt_tcp_send(fd, &m), 0); /* the key exchange itself is plaintext */
    return fd;
}

static void send_sealed(int fd, uint64_t *seq, const uint8_t *p, size_t n)
{
    uint8_t out[256];
    cr_assert_eq(rdv_secure_seal(key, seq, p, n, out), 0);
    cr_assert_eq(rdvt_tcp_send_frame(fd, out, n + RDV_SECURE_MACBYTES), 0);
}

static const uint8_t nat_req[] = { 0xa2, 0x01, 0x00 };

static void expect_sealed_answer(int fd, uint64_t *seq)
{
    uint8_t *e = NULL;
    long n = rdvt_tcp_recv_frame(fd, &e, 3000);
    cr_assert_gt(n, RDV_SECURE_MACBYTES, "expected an encrypted frame, got %ld", n);
    uint8_t plain[256];
    cr_assert_eq(rdv_secure_open(key, seq, e, (size_t)n, plain), 0, "server frame does not open with counter %llu",
                 (unsigned long long)(*seq + 1));
    Hbb__RendezvousMessage *m = hbb__rendezvous_message__unpack(NULL, (size_t)n - RDV_SECURE_MACBYTES, plain);
    cr_assert_not_null(m);
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    hbb__rendezvous_message__free_unpacked(m, NULL);
    free(e);
}

Test(secure, frames_are_sealed_both_ways_with_independent_counters)
{
    int fd = keyed_conn();
    uint64_t tx = 0, rx = 0;
    for (int i = 0; i < 3; i++) { /* counters 1, 2, 3 in each direction */
        send_sealed(fd, &tx, nat_req, sizeof nat_req);
        expect_sealed_answer(fd, &rx);
    }
    cr_assert_eq(tx, 3);
    cr_assert_eq(rx, 3);
    close(fd);
}

Test(secure, heartbeats_pass_raw_and_do_not_consume_counters)
{
    int fd = keyed_conn();
    uint64_t tx = 0, rx = 0;
    send_sealed(fd, &tx, nat_req, sizeof nat_req);
    expect_sealed_answer(fd, &rx);
    cr_assert_eq(rdvt_tcp_send_frame(fd, NULL, 0), 0); /* raw empty frame */
    uint8_t *e = NULL;
    long n = rdvt_tcp_recv_frame(fd, &e, 3000);
    cr_assert_eq(n, 0, "heartbeat echo must be a raw empty frame");
    free(e);
    send_sealed(fd, &tx, nat_req, sizeof nat_req); /* counter 2: heartbeats did not count */
    expect_sealed_answer(fd, &rx);
    close(fd);
}

Test(secure, tampered_record_closes)
{
    int fd = keyed_conn();
    uint64_t tx = 0;
    uint8_t out[64];
    rdv_secure_seal(key, &tx, nat_req, sizeof nat_req, out);
    out[5] ^= 1;
    cr_assert_eq(rdvt_tcp_send_frame(fd, out, sizeof nat_req + RDV_SECURE_MACBYTES), 0);
    cr_assert(rdvt_tcp_closed(fd, 3000));
    close(fd);
    cr_assert_geq(rdvt_stat(&srv, "core.record_bad"), 1);
}

Test(secure, replayed_counter_closes)
{
    int fd = keyed_conn();
    uint64_t tx = 0, rx = 0;
    send_sealed(fd, &tx, nat_req, sizeof nat_req);
    expect_sealed_answer(fd, &rx);
    tx = 0; /* replay counter 1 */
    send_sealed(fd, &tx, nat_req, sizeof nat_req);
    cr_assert(rdvt_tcp_closed(fd, 3000));
    close(fd);
}

Test(secure, plaintext_after_key_is_refused)
{
    int fd = keyed_conn();
    cr_assert_eq(rdvt_tcp_send_frame(fd, nat_req, sizeof nat_req), 0);
    cr_assert(rdvt_tcp_closed(fd, 3000));
    close(fd);
}
