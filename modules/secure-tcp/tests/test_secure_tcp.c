/* test_secure_tcp.c — the secure-tcp module against the fake core
 * (wire.md §6.3, §6.6, §6.10; rendezvous.md §15.1-§15.2; R200-R210).
 *
 * A fake "keys" service signs with the wire.md §6.6 server key (seed 0x11);
 * the client side of the handshake is done here with libsodium, as a
 * RustDesk client does it. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "fakecore.h"
#include "../stcp.h"

/* ------------------------------------------------------------------ wire.md §6.6 vectors */
#define V_SERVER_PK "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737"
#define V_BOX_PK "9d8d78b9c9e6661e552f2f1af02095ee2f8743fa2e6183f41bb7077ef51b5379"
#define V_FRAME1                                                                                               \
    "ca0162" "0a60"                                                                                            \
    "ed53f087857c6a1d2bdc84428afd00414957f9ad2c0a7120c3ee7e3a3f4d77d7"                                         \
    "100ec1101d64fdd0f70e6cb643a3ba9a4def95e013d5f4e5de1965c07c55af05" V_BOX_PK
#define V_CLIENT_PK "4eb4fafee2bd3018a24e310de8106333c2b364eaed029a7f05d7b45ccc77683a"
#define V_SEALED "db12e6a0bc995d860c160fb3cc8ec4c1c0f3343589b7caabcb05dccab3d930e9600ca139a4808c56f762654bd8bc7300"

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = 0;
    cr_assert_eq(sodium_hex2bin(out, cap, h, strlen(h), NULL, &n, NULL), 0, "bad hex in test");
    return n;
}

/* ------------------------------------------------------------------ fake keys service */
static uint8_t server_pk[32], server_sk[64];
static bool keys_signing = true;  /* can_sign() */
static bool keys_sign_fails;      /* sign() fails although can_sign() */

static bool fk_can_sign(void *self) { (void)self; return keys_signing; }
static const char *fk_licence(void *self) { (void)self; return ""; }
static const char *fk_pk_b64(void *self) { (void)self; return ""; }
static const uint8_t *fk_pk(void *self) { (void)self; return keys_signing ? server_pk : NULL; }
static long fk_sign(void *self, const uint8_t *m, size_t n, uint8_t *out, size_t cap)
{
    (void)self;
    if (!keys_signing || keys_sign_fails)
        return -ENOKEY;
    if (cap < n + 64)
        return -ENOSPC;
    unsigned long long len;
    crypto_sign(out, &len, m, n, server_sk);
    return (long)len;
}
static const rdv_keys_api fake_keys = { fk_can_sign, fk_licence, fk_pk_b64, fk_pk, fk_sign };

/* ------------------------------------------------------------------ box key hook */
static int box_seed_22(unsigned char *pk, unsigned char *sk)
{
    uint8_t seed[32];
    memset(seed, 0x22, sizeof seed);
    return crypto_box_seed_keypair(pk, sk, seed);
}

/* ------------------------------------------------------------------ a plain-message module
 * Answers TestNatRequest on main TCP, standing in for the real handlers. */
static int plain_on_nat(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    rdv_core *c = state;
    (void)msg;
    Hbb__TestNatResponse r = HBB__TEST_NAT_RESPONSE__INIT;
    r.port = 7;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE;
    m.test_nat_response = &r;
    return c->api->send(c, ctx->conn, &m);
}
static const rdv_handler plain_handlers[] = {
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST, .transports = RDV_TR_TCP, .fn = plain_on_nat },
    RDV_HANDLER_END,
};
static int plain_init(rdv_core *core, const void *cfg, void **state)
{
    (void)cfg;
    *state = core;
    return 0;
}
static const rdv_module plain_module = {
    RDV_MODULE_HEAD("plain", "1.0.0"),
    .handlers = plain_handlers,
    .init = plain_init,
};

/* ------------------------------------------------------------------ fixture */
static fc_core *fc;
static const rdv_module *mod;
static void *st;

static void load(const char *conf)
{
    cr_assert_eq(fc_load(fc, mod, conf, &st), 0);
}

static void setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    uint8_t seed[32];
    memset(seed, 0x11, sizeof seed);
    crypto_sign_seed_keypair(server_pk, server_sk, seed);
    keys_signing = true, keys_sign_fails = false;
    stcp_box_keypair = crypto_box_keypair;
    fc = fc_new();
    rdv_core *kh = fc_handle(fc, "keys");
    cr_assert_eq(kh->api->service_publish(kh, RDV_SVC_KEYS, RDV_SVC_KEYS_VERSION, &fake_keys, NULL), 0);
    mod = rdv_module_get();
    load(NULL);
    void *pst;
    cr_assert_eq(fc_load(fc, &plain_module, NULL, &pst), 0);
}

static void teardown(void)
{
    fc_free(fc);
    stcp_box_keypair = crypto_box_keypair;
}

TestSuite(secure_tcp, .init = setup, .fini = teardown);

/* ------------------------------------------------------------------ client side */
static int peer_n;

static rdv_conn_id open_on(const char *listener, rdv_transport tr)
{
    char a[64];
    snprintf(a, sizeof a, "10.1.0.%d:%d", 1 + peer_n % 200, 40000 + peer_n);
    peer_n++;
    rdv_addr peer = fc_addr(a);
    return fc_conn_open(fc, listener, tr, &peer);
}

/* Read frame 1 as the client does: one key, crypto_sign_open with the
 * configured server key, a 32-byte message. Returns the box pk. */
static void expect_offer(rdv_conn_id id, uint8_t box_pk[32])
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "no KeyExchange offered");
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->conn, id);
    cr_assert_not(s->sealed, "frame 1 must be plaintext");
    cr_assert_not_null(s->msg);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE);
    const Hbb__KeyExchange *kx = s->msg->key_exchange;
    cr_assert_eq(kx->n_keys, 1);
    cr_assert_eq(kx->keys[0].len, 96);
    unsigned long long mlen = 0;
    uint8_t m[96];
    cr_assert_eq(crypto_sign_open(m, &mlen, kx->keys[0].data, kx->keys[0].len, server_pk), 0,
                 "signature does not verify with the server key");
    cr_assert_eq(mlen, 32);
    memcpy(box_pk, m, 32);
}

static rdv_conn_id offered_conn(uint8_t box_pk[32])
{
    rdv_conn_id id = open_on("main", RDV_TR_TCP);
    expect_offer(id, box_pk);
    return id;
}

static Hbb__RendezvousMessage *kx_msg(Hbb__KeyExchange *kx, ProtobufCBinaryData *keys, size_t n)
{
    static Hbb__RendezvousMessage m;
    hbb__key_exchange__init(kx);
    kx->n_keys = n;
    kx->keys = keys;
    hbb__rendezvous_message__init(&m);
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE;
    m.key_exchange = kx;
    return &m;
}

/* Frame 2: [client box pk, crypto_box_easy(K, zero nonce, server box pk, client sk)]. */
static int send_answer(rdv_conn_id id, const uint8_t box_pk[32], const uint8_t key[32])
{
    uint8_t cpk[32], csk[32], sealed[48], nonce[24] = { 0 };
    crypto_box_keypair(cpk, csk);
    cr_assert_eq(crypto_box_easy(sealed, key, 32, nonce, box_pk, csk), 0);
    ProtobufCBinaryData keys[2] = { { 32, cpk }, { 48, sealed } };
    Hbb__KeyExchange kx;
    return fc_conn_msg(fc, id, kx_msg(&kx, keys, 2));
}

static Hbb__RendezvousMessage *nat_req(void)
{
    static Hbb__TestNatRequest r;
    static Hbb__RendezvousMessage m;
    hbb__test_nat_request__init(&r);
    hbb__rendezvous_message__init(&m);
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST;
    m.test_nat_request = &r;
    return &m;
}

static void expect_nat_answer(rdv_conn_id id, bool sealed)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s);
    cr_assert_eq(s->conn, id);
    cr_assert_not_null(s->msg);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq(s->sealed, sealed);
}

/* A connection whose KeyExchange was refused: closed, nothing sent. */
static void expect_closed_quietly(rdv_conn_id id, int r)
{
    cr_assert_eq(r, RDV_CLOSE);
    cr_assert_not(fc_conn_alive(fc, id));
    const fc_sent *s;
    while ((s = fc_next_sent(fc)))
        cr_assert_eq(s->kind, FC_SENT_CLOSE, "nothing but a close may follow a bad KeyExchange");
}

/* ... and no key was installed. */
static void expect_closed_silently(rdv_conn_id id, int r)
{
    expect_closed_quietly(id, r);
    cr_assert_not(fc_conn_secure(fc, id));
}

/* Some valid box public key that is not the server's. */
static void other_box_pk(uint8_t pk[32])
{
    uint8_t sk[32];
    crypto_box_keypair(pk, sk);
}

/* After a failure the module still serves new connections (never a crash). */
static void expect_still_working(void)
{
    uint8_t bpk[32], key[32];
    randombytes_buf(key, sizeof key);
    rdv_conn_id id = offered_conn(bpk);
    cr_assert_eq(send_answer(id, bpk, key), RDV_OK);
    cr_assert(fc_conn_secure(fc, id));
    cr_assert_eq(memcmp(fc_conn(fc, id)->key, key, 32), 0);
}

/* ------------------------------------------------------------------ offer (frame 1) */
Test(secure_tcp, frame1_matches_wire_vector_R200)
{
    stcp_box_keypair = box_seed_22;
    rdv_conn_id id = open_on("main", RDV_TR_TCP);
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s);
    uint8_t want[128];
    size_t n = unhex(V_FRAME1, want, sizeof want);
    cr_assert_eq(n, 101);
    cr_assert_eq(s->conn, id);
    cr_assert_eq(s->len, n, "frame 1 payload is %zu bytes, want 101", s->len);
    cr_assert_eq(memcmp(s->raw, want, n), 0, "frame 1 differs from wire.md §6.6");
    cr_assert_not(s->sealed);
    cr_assert_eq(fc_counter(fc, "secure-tcp.offered"), 1);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 1);
}

Test(secure_tcp, server_key_is_the_vector_key)
{
    uint8_t want[32];
    unhex(V_SERVER_PK, want, sizeof want);
    cr_assert_eq(memcmp(server_pk, want, 32), 0);
}

Test(secure_tcp, offer_verifies_like_a_client_R200)
{
    uint8_t bpk[32];
    offered_conn(bpk);
    cr_assert_eq(fc_sent_count(fc), 0, "exactly one frame is offered");
}

Test(secure_tcp, box_key_is_per_connection_R201)
{
    uint8_t a[32], b[32];
    offered_conn(a);
    offered_conn(b);
    cr_assert_neq(memcmp(a, b, 32), 0);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 2);
}

Test(secure_tcp, no_offer_on_nat_port_or_websocket_R202)
{
    open_on("nat", RDV_TR_TCP);
    open_on("ws", RDV_TR_TCP);  /* a WebSocket module's own listener */
    open_on("main", RDV_TR_WS); /* and anything that is not raw TCP */
    cr_assert_eq(fc_sent_count(fc), 0);
    cr_assert_eq(fc_counter(fc, "secure-tcp.offered"), 0);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 0);
}

Test(secure_tcp, no_offer_without_signing_key_R203)
{
    keys_signing = false;
    rdv_conn_id id = open_on("main", RDV_TR_TCP);
    cr_assert_eq(fc_sent_count(fc), 0, "§6.10: nothing may be sent first without a signing key");
    cr_assert_eq(fc_counter(fc, "secure-tcp.skipped_nokey"), 1);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.can_sign"), 0);
    /* The client's request is then the first thing answered. */
    cr_assert_eq(fc_conn_msg(fc, id, nat_req()), RDV_OK);
    expect_nat_answer(id, false);
    /* And a KeyExchange is refused: nothing was offered. */
    uint8_t fake_pk[32], key[32] = { 2 };
    other_box_pk(fake_pk);
    expect_closed_silently(id, send_answer(id, fake_pk, key));
}

Test(secure_tcp, signing_failure_sends_nothing)
{
    keys_sign_fails = true;
    rdv_conn_id id = open_on("main", RDV_TR_TCP);
    cr_assert_eq(fc_sent_count(fc), 0);
    cr_assert(fc_conn_alive(fc, id));
    cr_assert_eq(fc_counter(fc, "secure-tcp.skipped_error"), 1);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 0);
}

/* ------------------------------------------------------------------ answer (frame 2) */
Test(secure_tcp, vector_handshake_installs_the_session_key_R204)
{
    stcp_box_keypair = box_seed_22;
    uint8_t bpk[32];
    rdv_conn_id id = offered_conn(bpk);
    uint8_t want_bpk[32];
    unhex(V_BOX_PK, want_bpk, sizeof want_bpk);
    cr_assert_eq(memcmp(bpk, want_bpk, 32), 0);

    /* The client of §6.6: box key from seed 0x33, K = 0x44 x 32. */
    uint8_t seed[32], cpk[32], csk[32], key[32], sealed[48], nonce[24] = { 0 };
    memset(seed, 0x33, sizeof seed);
    memset(key, 0x44, sizeof key);
    crypto_box_seed_keypair(cpk, csk, seed);
    uint8_t want[48];
    unhex(V_CLIENT_PK, want, 32);
    cr_assert_eq(memcmp(cpk, want, 32), 0);
    cr_assert_eq(crypto_box_easy(sealed, key, 32, nonce, bpk, csk), 0);
    unhex(V_SEALED, want, 48);
    cr_assert_eq(memcmp(sealed, want, 48), 0, "sealed key differs from wire.md §6.6");

    ProtobufCBinaryData keys[2] = { { 32, cpk }, { 48, sealed } };
    Hbb__KeyExchange kx;
    Hbb__RendezvousMessage *m = kx_msg(&kx, keys, 2);
    /* Frame 2 payload: ca01 54 0a20 <cpk> 0a30 <C> (87 bytes). */
    uint8_t packed[128], f2[87] = { 0xca, 0x01, 0x54, 0x0a, 0x20 };
    memcpy(f2 + 5, cpk, 32);
    f2[37] = 0x0a, f2[38] = 0x30;
    memcpy(f2 + 39, sealed, 48);
    cr_assert_eq(hbb__rendezvous_message__pack(m, packed), sizeof f2);
    cr_assert_eq(memcmp(packed, f2, sizeof f2), 0);

    cr_assert_eq(fc_conn_raw(fc, id, f2, sizeof f2), RDV_OK);
    cr_assert(fc_conn_alive(fc, id));
    cr_assert(fc_conn_secure(fc, id));
    cr_assert_eq(memcmp(fc_conn(fc, id)->key, key, 32), 0);
    cr_assert_eq(fc_sent_count(fc), 0, "the server does not answer frame 2");
    cr_assert_eq(fc_counter(fc, "secure-tcp.completed"), 1);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 0);

    /* From now on the core seals what is sent on the connection. */
    cr_assert_eq(fc_conn_msg(fc, id, nat_req()), RDV_OK);
    expect_nat_answer(id, true);
}

Test(secure_tcp, random_client_handshake)
{
    expect_still_working();
    cr_assert_eq(fc_counter(fc, "secure-tcp.completed"), 1);
}

Test(secure_tcp, handshakes_are_independent_per_connection)
{
    uint8_t b1[32], b2[32], k1[32], k2[32];
    memset(k1, 1, 32), memset(k2, 2, 32);
    rdv_conn_id c1 = offered_conn(b1), c2 = offered_conn(b2);
    cr_assert_eq(send_answer(c2, b2, k2), RDV_OK);
    cr_assert_eq(send_answer(c1, b1, k1), RDV_OK);
    cr_assert_eq(memcmp(fc_conn(fc, c1)->key, k1, 32), 0);
    cr_assert_eq(memcmp(fc_conn(fc, c2)->key, k2, 32), 0);
}

Test(secure_tcp, answer_sealed_for_another_connection_fails)
{
    uint8_t b1[32], b2[32], key[32] = { 9 };
    rdv_conn_id c1 = offered_conn(b1);
    offered_conn(b2);
    expect_closed_silently(c1, send_answer(c1, b2, key));
    cr_assert_eq(fc_counter(fc, "secure-tcp.failed_box"), 1);
}

/* ------------------------------------------------------------------ bad answers (R207) */
static void bad_answer(const size_t *lens, size_t n, const char *counter)
{
    uint8_t bpk[32], buf[4][64];
    rdv_conn_id id = offered_conn(bpk);
    ProtobufCBinaryData keys[4];
    for (size_t i = 0; i < n; i++) {
        randombytes_buf(buf[i], sizeof buf[i]);
        keys[i] = (ProtobufCBinaryData){ lens[i], buf[i] };
    }
    Hbb__KeyExchange kx;
    expect_closed_silently(id, fc_conn_msg(fc, id, kx_msg(&kx, keys, n)));
    cr_assert_eq(fc_counter(fc, counter), 1, "%s", counter);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 0);
    expect_still_working();
}

Test(secure_tcp, no_keys_closes) { bad_answer(NULL, 0, "secure-tcp.failed_count"); }
Test(secure_tcp, one_key_closes) { bad_answer((size_t[]){ 32 }, 1, "secure-tcp.failed_count"); }
Test(secure_tcp, three_keys_close) { bad_answer((size_t[]){ 32, 48, 1 }, 3, "secure-tcp.failed_count"); }
Test(secure_tcp, key_of_31_bytes_closes) { bad_answer((size_t[]){ 31, 48 }, 2, "secure-tcp.failed_length"); }
Test(secure_tcp, key_of_33_bytes_closes) { bad_answer((size_t[]){ 33, 48 }, 2, "secure-tcp.failed_length"); }
Test(secure_tcp, sealed_of_47_bytes_closes) { bad_answer((size_t[]){ 32, 47 }, 2, "secure-tcp.failed_length"); }
Test(secure_tcp, sealed_of_49_bytes_closes) { bad_answer((size_t[]){ 32, 49 }, 2, "secure-tcp.failed_length"); }
Test(secure_tcp, swapped_keys_close) { bad_answer((size_t[]){ 48, 32 }, 2, "secure-tcp.failed_length"); }
Test(secure_tcp, empty_keys_close) { bad_answer((size_t[]){ 0, 0 }, 2, "secure-tcp.failed_length"); }
Test(secure_tcp, garbage_box_closes) { bad_answer((size_t[]){ 32, 48 }, 2, "secure-tcp.failed_box"); }

Test(secure_tcp, tampered_box_closes)
{
    uint8_t bpk[32], cpk[32], csk[32], key[32] = { 5 }, sealed[48], nonce[24] = { 0 };
    rdv_conn_id id = offered_conn(bpk);
    crypto_box_keypair(cpk, csk);
    cr_assert_eq(crypto_box_easy(sealed, key, 32, nonce, bpk, csk), 0);
    sealed[40] ^= 0x80;
    ProtobufCBinaryData keys[2] = { { 32, cpk }, { 48, sealed } };
    Hbb__KeyExchange kx;
    expect_closed_silently(id, fc_conn_msg(fc, id, kx_msg(&kx, keys, 2)));
    cr_assert_eq(fc_counter(fc, "secure-tcp.failed_box"), 1);
}

Test(secure_tcp, nonzero_nonce_box_closes)
{
    uint8_t bpk[32], cpk[32], csk[32], key[32] = { 5 }, sealed[48], nonce[24] = { 1 };
    rdv_conn_id id = offered_conn(bpk);
    crypto_box_keypair(cpk, csk);
    cr_assert_eq(crypto_box_easy(sealed, key, 32, nonce, bpk, csk), 0);
    ProtobufCBinaryData keys[2] = { { 32, cpk }, { 48, sealed } };
    Hbb__KeyExchange kx;
    expect_closed_silently(id, fc_conn_msg(fc, id, kx_msg(&kx, keys, 2)));
    cr_assert_eq(fc_counter(fc, "secure-tcp.failed_box"), 1);
}

/* ------------------------------------------------------------------ position rules (§15.2) */
Test(secure_tcp, second_key_exchange_closes)
{
    uint8_t bpk[32], key[32] = { 3 };
    rdv_conn_id id = offered_conn(bpk);
    cr_assert_eq(send_answer(id, bpk, key), RDV_OK);
    expect_closed_quietly(id, send_answer(id, bpk, key));
    cr_assert_eq(fc_counter(fc, "secure-tcp.failed_unexpected"), 1);
}

Test(secure_tcp, plaintext_client_is_tolerated_R206)
{
    uint8_t bpk[32];
    rdv_conn_id id = offered_conn(bpk);
    cr_assert_eq(fc_conn_msg(fc, id, nat_req()), RDV_OK);
    expect_nat_answer(id, false);
    cr_assert(fc_conn_alive(fc, id));
    cr_assert_eq(fc_counter(fc, "secure-tcp.plaintext"), 1);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 0, "the offer is wiped once settled");
    /* Later requests stay plaintext too. */
    cr_assert_eq(fc_conn_msg(fc, id, nat_req()), RDV_OK);
    expect_nat_answer(id, false);
}

Test(secure_tcp, late_key_exchange_closes_R210)
{
    uint8_t bpk[32], key[32] = { 4 };
    rdv_conn_id id = offered_conn(bpk);
    cr_assert_eq(fc_conn_msg(fc, id, nat_req()), RDV_OK);
    expect_nat_answer(id, false);
    expect_closed_silently(id, send_answer(id, bpk, key));
    cr_assert_eq(fc_counter(fc, "secure-tcp.failed_unexpected"), 1);
}

Test(secure_tcp, unsolicited_key_exchange_on_other_ports_is_not_ours)
{
    uint8_t key[32] = { 4 }, fake_pk[32];
    other_box_pk(fake_pk);
    rdv_conn_id id = open_on("nat", RDV_TR_TCP);
    cr_assert_eq(send_answer(id, fake_pk, key), -ENOENT); /* no handler: the core closes (OSS) */
    cr_assert_not(fc_conn_alive(fc, id));
    cr_assert_not(fc_conn_secure(fc, id));
}

/* ------------------------------------------------------------------ OSS profile (enabled = false) */
Test(secure_tcp, disabled_offers_nothing_and_closes_on_key_exchange)
{
    fc_unload(fc, mod, st);
    load("enabled = false\n");
    rdv_conn_id id = open_on("main", RDV_TR_TCP);
    cr_assert_eq(fc_sent_count(fc), 0);
    uint8_t fake_pk[32], key[32] = { 2 };
    other_box_pk(fake_pk);
    expect_closed_silently(id, send_answer(id, fake_pk, key));
    cr_assert_eq(fc_counter(fc, "secure-tcp.offered"), 0);
}

Test(secure_tcp, reload_applies_to_new_connections)
{
    uint8_t bpk[32], key[32] = { 6 };
    rdv_conn_id old = offered_conn(bpk);
    cr_assert_eq(fc_reconfigure(fc, mod, st, "enabled = off\n"), 0);
    open_on("main", RDV_TR_TCP);
    cr_assert_eq(fc_sent_count(fc), 0, "no offer after disabling");
    /* What was offered before stays answerable. */
    cr_assert_eq(send_answer(old, bpk, key), RDV_OK);
    cr_assert(fc_conn_secure(fc, old));
    cr_assert_eq(fc_reconfigure(fc, mod, st, "enabled = on\n"), 0);
    offered_conn(bpk);
}

/* ------------------------------------------------------------------ bounded table */
Test(secure_tcp, pending_table_is_bounded)
{
    fc_unload(fc, mod, st);
    load("max_pending = 2\n");
    uint8_t b1[32], b2[32], b4[32], key[32] = { 8 };
    rdv_conn_id c1 = offered_conn(b1);
    offered_conn(b2);
    rdv_conn_id c3 = open_on("main", RDV_TR_TCP);
    cr_assert_eq(fc_sent_count(fc), 0, "full: no offer");
    cr_assert_eq(fc_counter(fc, "secure-tcp.skipped_full"), 1);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 2);
    /* The connection without an offer works in plaintext. */
    cr_assert_eq(fc_conn_msg(fc, c3, nat_req()), RDV_OK);
    expect_nat_answer(c3, false);
    /* A finished handshake frees its slot. */
    cr_assert_eq(send_answer(c1, b1, key), RDV_OK);
    offered_conn(b4);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 2);
}

Test(secure_tcp, close_forgets_the_offer)
{
    uint8_t bpk[32];
    rdv_conn_id id = offered_conn(bpk);
    offered_conn(bpk);
    cr_assert_eq(fc_conn_peer_close(fc, id), 0);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 1);
    rdv_conn_id id2 = open_on("main", RDV_TR_TCP);
    fc_next_sent(fc);
    cr_assert_eq(fc_conn_drop(fc, id2, RDV_CLOSE_IDLE), 0);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 1);
}

/* ------------------------------------------------------------------ settings and dependencies */
Test(secure_tcp, bad_settings_are_refused)
{
    fc_unload(fc, mod, st);
    cr_assert_eq(fc_load(fc, mod, "max_pending = 0\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, mod, "max_pending = 2000000\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, mod, "enabled = maybe\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, mod, "unknown = 1\n", &st), -EINVAL);
    load("max_pending = 1\n");
}

Test(secure_tcp, keys_service_is_required)
{
    fc_core *bare = fc_new();
    void *s2;
    cr_assert_eq(fc_load(bare, mod, NULL, &s2), -ENOENT);
    cr_assert(fc_log_contains(bare, "keys"));
    fc_free(bare);
}

/* ------------------------------------------------------------------ prepared offers */
/* Frame 1 prepared ahead (secure-tcp.precompute): the same wire result as an
 * offer made on accept (R200 verifies, R201 a fresh box key per
 * connection, R204 handshake completes), made off the accept path. */
static void fill_pool(void)
{
    for (int i = 0; i < 64 && fc_gauge(fc, "secure-tcp.prepared") < 16; i++)
        fc_advance(fc, 1);
}

Test(secure_tcp, prepared_offers_verify_and_complete_R200_R201)
{
    fill_pool();
    cr_assert_eq(fc_gauge(fc, "secure-tcp.prepared"), 16, "default precompute = 16");
    uint8_t a[32], b[32], key[32];
    rdv_conn_id ia = offered_conn(a);
    rdv_conn_id ib = offered_conn(b);
    cr_assert_neq(memcmp(a, b, 32), 0, "each prepared offer is used once");
    cr_assert_eq(fc_counter(fc, "secure-tcp.offered_prepared"), 2);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.prepared"), 14);
    randombytes_buf(key, sizeof key);
    cr_assert_eq(send_answer(ib, b, key), RDV_OK, "the kept box secret key opens the client's answer");
    cr_assert_eq(memcmp(fc_conn(fc, ib)->key, key, 32), 0);
    cr_assert_eq(send_answer(ia, a, key), RDV_OK);
    fill_pool();
    cr_assert_eq(fc_gauge(fc, "secure-tcp.prepared"), 16, "refilled after use");
}

Test(secure_tcp, prepared_offers_of_an_old_server_key_are_discarded)
{
    fill_pool();
    uint8_t seed[32];
    memset(seed, 0x33, sizeof seed); /* the operator replaced the key (reload) */
    crypto_sign_seed_keypair(server_pk, server_sk, seed);
    uint8_t bpk[32];
    offered_conn(bpk); /* expect_offer verifies with the new server_pk */
    cr_assert_eq(fc_counter(fc, "secure-tcp.prepared_discarded"), 16);
    cr_assert_eq(fc_counter(fc, "secure-tcp.offered_prepared"), 0);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.prepared"), 0);
}

Test(secure_tcp, no_prepared_offers_without_a_key_or_when_off)
{
    keys_signing = false;
    for (int i = 0; i < 10; i++)
        fc_advance(fc, 1);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.prepared"), 0);
    keys_signing = true;
    fc_unload(fc, mod, st);
    load("precompute = 0\n");
    for (int i = 0; i < 10; i++)
        fc_advance(fc, 1);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.prepared"), 0);
    uint8_t bpk[32];
    offered_conn(bpk);
    cr_assert_eq(fc_counter(fc, "secure-tcp.offered"), 1);
    cr_assert_eq(fc_counter(fc, "secure-tcp.offered_prepared"), 0);
}

/* ------------------------------------------------------------------ out of memory
 * uthash's allocations for the offer table fail through the module's test
 * hook (stcp_test_hash_fail_from). The process must not exit; a connection
 * whose offer cannot be kept gets no frame 1 and works in plaintext (as at
 * max_pending), and every offer already made stays answerable. On the code
 * before uthash's non-fatal mode each of these exited. */
static void oom_teardown(void)
{
    stcp_test_hash_fail_from(0);
    teardown();
}

TestSuite(secure_tcp_oom, .init = setup, .fini = oom_teardown, .timeout = 60);

/* A connection refused an offer: nothing sent, plaintext works. */
static void expect_no_offer_plaintext_works(rdv_conn_id id)
{
    cr_assert_eq(fc_sent_count(fc), 0, "no frame 1 without a kept offer");
    cr_assert(fc_conn_alive(fc, id));
    cr_assert_eq(fc_conn_msg(fc, id, nat_req()), RDV_OK);
    expect_nat_answer(id, false);
}

/* The first offer makes the table: its header (1st allocation) or its
 * buckets (2nd). Failing either sends no frame 1 and uses up no prepared
 * offer; once memory is back the next connection completes a handshake. */
Test(secure_tcp_oom, no_offer_when_the_table_cannot_be_made)
{
    stcp *s = st;
    fill_pool();
    cr_assert_eq(fc_gauge(fc, "secure-tcp.prepared"), 16);
    for (unsigned long nth = 1; nth <= 2; nth++) {
        stcp_test_hash_fail_from(nth);
        rdv_conn_id id = open_on("main", RDV_TR_TCP);
        cr_assert_eq(fc_counter(fc, "secure-tcp.oom"), nth, "allocation %lu failing", nth);
        cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 0);
        cr_assert_null(s->pending);
        cr_assert_eq(fc_gauge(fc, "secure-tcp.prepared"), 16, "a prepared offer was used up");
        expect_no_offer_plaintext_works(id);
    }
    cr_assert_eq(fc_counter(fc, "secure-tcp.offered"), 0);
    cr_assert_eq(fc_counter(fc, "secure-tcp.skipped_error"), 0);
    cr_assert(fc_log_contains(fc, "out of memory: conn"));
    stcp_test_hash_fail_from(0);
    unsigned long allocs = stcp_test_hash_allocs();
    expect_still_working();
    cr_assert_eq(stcp_test_hash_allocs(), allocs + 2, "the table was made");
    cr_assert_eq(fc_counter(fc, "secure-tcp.completed"), 1);
    cr_assert_eq(fc_counter(fc, "secure-tcp.oom"), 2);
}

/* Connections until one's offer would grow the table: that one gets no
 * frame 1, every earlier offer completes its handshake; once memory is
 * back new connections are offered until the table grows. */
Test(secure_tcp_oom, offer_that_would_grow_the_table_is_not_made_the_rest_kept)
{
    enum { MAX = 3000 };
    static rdv_conn_id ids[MAX + 1];
    static uint8_t bpk[MAX + 1][32];
    stcp *s = st;
    ids[0] = offered_conn(bpk[0]); /* the table exists */
    stcp_test_hash_fail_from(1);
    unsigned long allocs = stcp_test_hash_allocs();
    int n;
    for (n = 1; n <= MAX; n++) {
        ids[n] = open_on("main", RDV_TR_TCP);
        if (fc_counter(fc, "secure-tcp.oom"))
            break;
        expect_offer(ids[n], bpk[n]);
    }
    cr_assert_eq(fc_counter(fc, "secure-tcp.oom"), 1, "no offer reached an expansion in %d", MAX);
    cr_assert_gt(n, 10, "the table grew after %d offers only", n);
    cr_assert_eq(stcp_test_hash_allocs(), allocs + 1, "one expansion was attempted");
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), (uint64_t)n, "the first + %d offered", n - 1);
    cr_assert_eq(HASH_COUNT(s->pending), (unsigned)n);
    expect_no_offer_plaintext_works(ids[n]);
    for (int i = 0; i < n; i++) {
        uint8_t key[32];
        randombytes_buf(key, sizeof key);
        cr_assert_eq(send_answer(ids[i], bpk[i], key), RDV_OK, "offer %d lost", i);
        cr_assert_eq(memcmp(fc_conn(fc, ids[i])->key, key, 32), 0);
    }
    cr_assert_eq(fc_counter(fc, "secure-tcp.completed"), (uint64_t)n);
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), 0);
    cr_assert_null(s->pending, "the last handshake freed the table");
    /* memory is back: offers are kept (the table is made again, then grows) */
    stcp_test_hash_fail_from(0);
    allocs = stcp_test_hash_allocs();
    int m;
    for (m = 1; m <= MAX && stcp_test_hash_allocs() < allocs + 3; m++)
        offered_conn(bpk[0]);
    cr_assert_eq(stcp_test_hash_allocs(), allocs + 3, "table made (2) and grown (1)");
    cr_assert_eq(fc_gauge(fc, "secure-tcp.pending"), (uint64_t)(m - 1));
    expect_still_working();
    cr_assert_eq(fc_counter(fc, "secure-tcp.oom"), 1);
}
