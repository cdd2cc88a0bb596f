/* test_answers.c — B's answers routed back to A: PunchHoleSent (§6.4),
 * LocalAddr (§6.5), RelayResponse (§6.6), RequestRelay (§6.7), and the
 * signed peer key (§9, wire.md §6.7). */
#include "pc_test.h"

TestSuite(answers, .init = pct_setup, .fini = pct_teardown);

#define B_ID "400000001"
#define B_ADDR "10.0.0.2:40000"
#define A_ADDR "10.0.0.1:50001"
#define B_TCP "10.0.0.2:40777" /* B's new connection for the answer */

static uint8_t SA[RDV_ADDR_MANGLED_MAX];
static size_t SAN;

static rdv_conn_id park(void)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    return pct_park(A_ADDR, B_ID, SA, &SAN);
}

Test(answers, R69_punch_hole_sent_round_trip)
{
    rdv_conn_id a = park();
    rdv_conn_id b = pct_open(B_TCP);
    cr_assert_eq(fc_conn_msg(fc, b, pct_phs(SA, SAN, B_ID, "relay.test:21117", 1, "1.4.9")), RDV_CLOSE);
    cr_assert_not(fc_conn_alive(fc, b), "B's connection is closed after processing");
    const fc_sent *s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    const Hbb__PunchHoleResponse *r = s->msg->punch_hole_response;
    pct_expect_addr(r->socket_addr, B_TCP);
    cr_assert_str_eq(r->relay_server, "relay.test:21117");
    cr_assert_eq(r->union_case, HBB__PUNCH_HOLE_RESPONSE__UNION_NAT_TYPE);
    cr_assert_eq(r->nat_type, 1);
    cr_assert_eq(r->failure, 0);
    cr_assert_str_eq(r->other_failure, "");
    pct_expect_signed(r->pk, B_ID, 0xb1);
    pct_expect_nothing(); /* nothing to B */
    cr_assert(fc_conn_alive(fc, a), "A's connection stays open");
    cr_assert_eq(P->pending.nparked, 0);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.delivered"), 1);
}

Test(answers, R70_no_version_no_pk)
{
    rdv_conn_id a = park();
    fc_conn_msg(fc, pct_open(B_TCP), pct_phs(SA, SAN, B_ID, "", 1, ""));
    const fc_sent *s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    cr_assert_eq(s->msg->punch_hole_response->pk.len, 0);
    /* 5a <len> 0a <n> <addr> 28 01: no field 2 at all */
    cr_assert_eq(s->len, 2 + 2 + s->msg->punch_hole_response->socket_addr.len + 2);
}

Test(answers, R71_R166_no_signing_key_no_pk)
{
    KEYS.can_sign = false;
    rdv_conn_id a = park();
    fc_conn_msg(fc, pct_open(B_TCP), pct_phs(SA, SAN, B_ID, "", 1, "1.4.9"));
    cr_assert_eq(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE)->msg->punch_hole_response->pk.len, 0);
}

Test(answers, R72_unknown_nat_type_sets_no_oneof_member)
{
    rdv_conn_id a = park();
    fc_conn_msg(fc, pct_open(B_TCP), pct_phs(SA, SAN, B_ID, "", 9, ""));
    const fc_sent *s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    cr_assert_eq(s->msg->punch_hole_response->union_case, HBB__PUNCH_HOLE_RESPONSE__UNION__NOT_SET);
    /* the envelope is 5a <len> 0a <n> <addr>: nothing else */
    cr_assert_eq(s->len, 2 + 2 + s->msg->punch_hole_response->socket_addr.len);
}

Test(answers, R73_unknown_nat_is_explicit_28_00)
{
    rdv_conn_id a = park();
    fc_conn_msg(fc, pct_open(B_TCP), pct_phs(SA, SAN, B_ID, "", 0, ""));
    const fc_sent *s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    cr_assert_eq(s->msg->punch_hole_response->union_case, HBB__PUNCH_HOLE_RESPONSE__UNION_NAT_TYPE);
    size_t n = s->msg->punch_hole_response->socket_addr.len;
    cr_assert_eq(s->len, 2 + 2 + n + 2);
    cr_assert_eq(s->raw[4 + n], 0x28);
    cr_assert_eq(s->raw[5 + n], 0x00);
}

Test(answers, R74_local_addr_round_trip)
{
    pct_peer(B_ID, "10.0.0.1:40000", true, 0xb1);
    rdv_conn_id a = pct_park(A_ADDR, B_ID, SA, &SAN); /* same IP: FetchLocalAddr */
    const uint8_t M[7] = { 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02 };
    rdv_conn_id b = pct_open("10.0.0.1:40778");
    cr_assert_eq(fc_conn_msg(fc, b, pct_local_addr(SA, SAN, M, sizeof M, "r", B_ID, "1.4.9")), RDV_CLOSE);
    cr_assert_not(fc_conn_alive(fc, b));
    const fc_sent *s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    const Hbb__PunchHoleResponse *r = s->msg->punch_hole_response;
    cr_assert_eq(r->socket_addr.len, sizeof M);
    cr_assert_arr_eq(r->socket_addr.data, M, sizeof M, "local_addr copied byte for byte");
    cr_assert_eq(r->union_case, HBB__PUNCH_HOLE_RESPONSE__UNION_IS_LOCAL);
    const uint8_t is_local[2] = { 0x30, 0x01 };
    cr_assert(pct_raw_contains(s, is_local, 2));
    cr_assert_str_eq(r->relay_server, "r");
    pct_expect_signed(r->pk, B_ID, 0xb1);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.local_addr"), 1);
}

Test(answers, R75_no_pending_requester_nothing_sent)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_addr x = fc_addr("198.51.100.1:1234");
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t n = rdv_addr_mangle(&x, 0xdeadbeef, sa);
    rdv_conn_id b = pct_open(B_TCP);
    cr_assert_eq(fc_conn_msg(fc, b, pct_phs(sa, n, B_ID, "", 1, "1.4.9")), RDV_CLOSE);
    cr_assert_not(fc_conn_alive(fc, b));
    pct_expect_nothing();
    cr_assert_eq(REG.lookups_stored, 0, "no lookup or signature for nobody");
    cr_assert_eq(fc_counter(fc, "punch-coordinator.undeliverable"), 1);
}

Test(answers, R76_single_use)
{
    rdv_conn_id a = park();
    fc_conn_msg(fc, pct_open(B_TCP), pct_phs(SA, SAN, B_ID, "", 1, "1.4.9"));
    pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    fc_conn_msg(fc, pct_open("10.0.0.2:40779"), pct_phs(SA, SAN, B_ID, "", 1, "1.4.9"));
    uint8_t m[4] = { 1, 2, 3, 4 };
    fc_conn_msg(fc, pct_open("10.0.0.2:40780"), pct_local_addr(SA, SAN, m, 4, "", B_ID, "1.4.9"));
    pct_expect_nothing();
}

Test(answers, R77_requester_gone)
{
    rdv_conn_id a = park();
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 1);
    fc_conn_peer_close(fc, a);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 0, "removed by the conn.close hook");
    cr_assert_eq(fc_conn_msg(fc, pct_open(B_TCP), pct_phs(SA, SAN, B_ID, "", 1, "1.4.9")), RDV_CLOSE);
    pct_expect_nothing();
}

Test(answers, R20_malformed_addresses_deliver_nothing)
{
    rdv_conn_id a = park();
    uint8_t junk[18];
    memset(junk, 0xff, sizeof junk);
    size_t lens[] = { 17, 0, 16, 18, 1, 11 };
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        rdv_conn_id b = pct_open(B_TCP);
        cr_assert_eq(fc_conn_msg(fc, b, pct_phs(junk, lens[i], B_ID, "", 1, "1.4.9")), RDV_CLOSE);
        cr_assert_not(fc_conn_alive(fc, b));
        b = pct_open(B_TCP);
        cr_assert_eq(fc_conn_msg(fc, b, pct_local_addr(junk, lens[i], junk, lens[i], "", B_ID, "1.4.9")), RDV_CLOSE);
        Hbb__RelayResponse rr = HBB__RELAY_RESPONSE__INIT;
        rr.socket_addr.data = junk, rr.socket_addr.len = lens[i];
        b = pct_open(B_TCP);
        cr_assert_eq(fc_conn_msg(fc, b, pct_msg_relay_response(&rr)), RDV_CLOSE);
    }
    pct_expect_nothing();
    cr_assert_eq(P->pending.nparked, 1, "A still waits");
    cr_assert(fc_conn_alive(fc, a));
}

Test(answers, R167_signed_content_is_the_claimed_id_and_its_pk)
{
    pct_peer("400000002", "10.0.0.3:40000", true, 0xb2);
    rdv_conn_id a = park();
    /* B claims another (registered) id: that id's key is signed */
    fc_conn_msg(fc, pct_open(B_TCP), pct_phs(SA, SAN, "400000002", "", 1, "1.4.9"));
    pct_expect_signed(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE)->msg->punch_hole_response->pk,
                      "400000002", 0xb2);
    /* an id without record: pk absent */
    rdv_conn_id a2 = pct_park("10.0.0.1:50002", B_ID, SA, &SAN);
    fc_conn_msg(fc, pct_open(B_TCP), pct_phs(SA, SAN, "999999999", "", 1, "1.4.9"));
    cr_assert_eq(pct_expect_conn(a2, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE)->msg->punch_hole_response->pk.len, 0);
    /* an empty id: pk absent */
    rdv_conn_id a3 = pct_park("10.0.0.1:50003", B_ID, SA, &SAN);
    fc_conn_msg(fc, pct_open(B_TCP), pct_phs(SA, SAN, "", "", 1, "1.4.9"));
    cr_assert_eq(pct_expect_conn(a3, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE)->msg->punch_hole_response->pk.len, 0);
}

Test(answers, signed_pk_matches_the_wire_md_test_vector)
{
    /* wire.md §6.7: id "123456789", pk 00..1f, seed-11 key -> 109 bytes */
    fake_peer *fp = pct_peer("123456789", B_ADDR, true, 0);
    for (int i = 0; i < 32; i++)
        fp->pk[i] = (uint8_t)i;
    uint8_t *sm;
    size_t n;
    cr_assert_eq(pc_signed_pk(P, "1.4.9", "123456789", &sm, &n), 0);
    cr_assert_eq(n, 109);
    static const uint8_t sig[64] = {
        0x99, 0xb5, 0x0f, 0x50, 0x82, 0x4f, 0xb8, 0xcb, 0xa0, 0x13, 0x7a, 0xf4, 0x9d, 0xd1, 0xec, 0x73,
        0x12, 0x27, 0x46, 0xe1, 0x06, 0x52, 0x3b, 0x34, 0xcb, 0xa5, 0x7b, 0x2a, 0xfa, 0x10, 0x9a, 0x15,
        0x08, 0x8b, 0xbe, 0xba, 0xef, 0xf9, 0xbf, 0x24, 0xd5, 0x11, 0x38, 0xe5, 0x12, 0x68, 0xf6, 0x1f,
        0xbd, 0xb9, 0xee, 0xee, 0x7e, 0x69, 0x6e, 0x70, 0x90, 0xd1, 0x21, 0xd0, 0x8d, 0x2e, 0xb6, 0x02,
    };
    cr_assert_arr_eq(sm, sig, 64);
    static const uint8_t idpk_head[] = { 0x0a, 0x09, '1', '2', '3', '4', '5', '6', '7', '8', '9', 0x12, 0x20 };
    cr_assert_arr_eq(sm + 64, idpk_head, sizeof idpk_head);
    for (int i = 0; i < 32; i++)
        cr_assert_eq(sm[64 + sizeof idpk_head + i], i);
    free(sm);
}

Test(answers, signing_failure_or_no_version_is_unsigned)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    uint8_t *sm;
    size_t n;
    cr_assert_eq(pc_signed_pk(P, "", B_ID, &sm, &n), 0);
    cr_assert_null(sm);
    cr_assert_eq(n, 0);
    cr_assert_eq(pc_signed_pk(P, NULL, B_ID, &sm, &n), 0);
    cr_assert_null(sm);
    KEYS.can_sign = false;
    cr_assert_eq(pc_signed_pk(P, "1", B_ID, &sm, &n), 0);
    cr_assert_null(sm);
    cr_assert_eq(REG.lookups_stored, 0, "no lookup when nothing would be signed");
}

Test(answers, stored_only_peer_key_is_signed)
{
    fake_peer *fp = pct_peer(B_ID, B_ADDR, false, 0xb1);
    fp->in_memory = false;
    uint8_t *sm;
    size_t n;
    cr_assert_eq(pc_signed_pk(P, "1.4.9", B_ID, &sm, &n), 0);
    cr_assert_not_null(sm);
    pct_expect_signed((ProtobufCBinaryData){ .data = sm, .len = n }, B_ID, 0xb1);
    free(sm);
    cr_assert_eq(REG.lookups_stored, 1, "memory-then-DB (§2.2)");
}

/* ---- RelayResponse (§6.6) ---- */
static Hbb__RelayResponse rr_from_b(const char *id, const char *version)
{
    Hbb__RelayResponse rr = HBB__RELAY_RESPONSE__INIT;
    rr.socket_addr.data = SA, rr.socket_addr.len = SAN;
    rr.uuid = "U1";
    rr.relay_server = "relay.test:21117";
    if (id) {
        rr.union_case = HBB__RELAY_RESPONSE__UNION_ID;
        rr.id = (char *)id;
    }
    rr.version = (char *)version;
    return rr;
}

Test(answers, R90_relay_response_from_b)
{
    rdv_conn_id a = park();
    Hbb__RelayResponse rr = rr_from_b(B_ID, "1.4.9");
    rdv_conn_id b = pct_open(B_TCP);
    cr_assert_eq(fc_conn_msg(fc, b, pct_msg_relay_response(&rr)), RDV_CLOSE);
    cr_assert_not(fc_conn_alive(fc, b));
    const Hbb__RelayResponse *r = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE)->msg->relay_response;
    cr_assert_eq(r->socket_addr.len, 0);
    cr_assert_str_eq(r->uuid, "U1");
    cr_assert_str_eq(r->relay_server, "relay.test:21117");
    cr_assert_eq(r->union_case, HBB__RELAY_RESPONSE__UNION_PK);
    pct_expect_signed(r->pk, B_ID, 0xb1);
    cr_assert_str_eq(r->version, "1.4.9");
    cr_assert_str_eq(r->refuse_reason, "");
}

Test(answers, R91_empty_signature_is_an_explicit_empty_pk)
{
    rdv_conn_id a = park();
    Hbb__RelayResponse rr = rr_from_b(B_ID, "");
    fc_conn_msg(fc, pct_open(B_TCP), pct_msg_relay_response(&rr));
    const fc_sent *s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE);
    cr_assert_eq(s->msg->relay_response->union_case, HBB__RELAY_RESPONSE__UNION_PK);
    cr_assert_eq(s->msg->relay_response->pk.len, 0);
    const uint8_t empty_pk[2] = { 0x2a, 0x00 };
    cr_assert(pct_raw_contains(s, empty_pk, 2));
    const uint8_t id_tag = 0x22; /* field 4 (id) must be gone */
    bool has_id = false;
    /* walk the RelayResponse fields: 9a 01 <len> then tag/len pairs of strings/bytes */
    for (size_t i = 3; i + 1 < s->len; i += 2 + s->raw[i + 1])
        has_id |= s->raw[i] == id_tag;
    cr_assert_not(has_id);
}

Test(answers, R92_no_id_no_pk_member)
{
    rdv_conn_id a = park();
    Hbb__RelayResponse rr = HBB__RELAY_RESPONSE__INIT;
    rr.socket_addr.data = SA, rr.socket_addr.len = SAN;
    rr.version = "1.4.9";
    fc_conn_msg(fc, pct_open(B_TCP), pct_msg_relay_response(&rr));
    const fc_sent *s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE);
    cr_assert_eq(s->msg->relay_response->union_case, HBB__RELAY_RESPONSE__UNION__NOT_SET);
    pct_expect_bytes(s, "9a 01 07 3a 05 31 2e 34 2e 39"); /* RelayResponse{version:"1.4.9"} only */
    /* an empty id in the oneof is not replaced either */
    rdv_conn_id a2 = pct_park("10.0.0.1:50002", B_ID, SA, &SAN);
    Hbb__RelayResponse rr2 = rr_from_b("", "1.4.9");
    rr2.uuid = "", rr2.relay_server = "";
    fc_conn_msg(fc, pct_open(B_TCP), pct_msg_relay_response(&rr2));
    s = pct_expect_conn(a2, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE);
    cr_assert_eq(s->msg->relay_response->union_case, HBB__RELAY_RESPONSE__UNION_ID);
    /* a pk member sent by B passes as is */
    rdv_conn_id a3 = pct_park("10.0.0.1:50003", B_ID, SA, &SAN);
    Hbb__RelayResponse rr3 = rr_from_b(NULL, "1.4.9");
    uint8_t k[3] = { 7, 8, 9 };
    rr3.union_case = HBB__RELAY_RESPONSE__UNION_PK;
    rr3.pk.data = k, rr3.pk.len = 3;
    fc_conn_msg(fc, pct_open(B_TCP), pct_msg_relay_response(&rr3));
    s = pct_expect_conn(a3, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE);
    cr_assert_eq(s->msg->relay_response->pk.len, 3);
    cr_assert_arr_eq(s->msg->relay_response->pk.data, k, 3);
}

Test(answers, R93_other_fields_pass_through)
{
    rdv_conn_id a = park();
    Hbb__RelayResponse rr = rr_from_b(B_ID, "1.4.9");
    uint8_t v6[18] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1, [16] = 0x90, [17] = 0x1f };
    rr.refuse_reason = "busy";
    rr.feedback = 5;
    rr.socket_addr_v6.data = v6, rr.socket_addr_v6.len = sizeof v6;
    rr.upnp_port = 4242;
    fc_conn_msg(fc, pct_open(B_TCP), pct_msg_relay_response(&rr));
    const Hbb__RelayResponse *r = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE)->msg->relay_response;
    cr_assert_str_eq(r->refuse_reason, "busy");
    cr_assert_eq(r->feedback, 5);
    cr_assert_eq(r->socket_addr_v6.len, sizeof v6);
    cr_assert_arr_eq(r->socket_addr_v6.data, v6, sizeof v6);
    cr_assert_eq(r->upnp_port, 4242);
    cr_assert_str_eq(r->uuid, "U1");
}

Test(answers, R104_relay_response_lan_rewriting)
{
    pct_teardown();
    pct_setup_conf("mask=10.99.0.0/16\nlocal_ip=10.99.0.254\nrelay_servers=192.0.2.10:21117\n");
    pct_peer(B_ID, "198.51.100.8:40000", true, 0xb1);
    /* A inside the mask: any non-empty relay becomes local_ip */
    rdv_conn_id a = pct_park("10.99.3.3:50001", B_ID, SA, &SAN);
    Hbb__RelayResponse rr = rr_from_b(B_ID, "1.4.9");
    fc_conn_msg(fc, pct_open(B_TCP), pct_msg_relay_response(&rr));
    cr_assert_str_eq(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE)->msg->relay_response->relay_server,
                     "10.99.0.254");
    /* A outside, relay == local_ip: a public relay instead */
    rdv_conn_id a2 = pct_park("198.51.100.9:50001", B_ID, SA, &SAN);
    rr = rr_from_b(B_ID, "1.4.9");
    rr.relay_server = "10.99.0.254";
    fc_conn_msg(fc, pct_open(B_TCP), pct_msg_relay_response(&rr));
    cr_assert_str_eq(pct_expect_conn(a2, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE)->msg->relay_response->relay_server,
                     "192.0.2.10:21117");
    /* A outside, another relay: unchanged; an empty one stays empty */
    rdv_conn_id a3 = pct_park("198.51.100.9:50002", B_ID, SA, &SAN);
    rr = rr_from_b(B_ID, "1.4.9");
    fc_conn_msg(fc, pct_open(B_TCP), pct_msg_relay_response(&rr));
    cr_assert_str_eq(pct_expect_conn(a3, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE)->msg->relay_response->relay_server,
                     "relay.test:21117");
    rdv_conn_id a4 = pct_park("10.99.3.3:50002", B_ID, SA, &SAN);
    rr = rr_from_b(B_ID, "1.4.9");
    rr.relay_server = "";
    fc_conn_msg(fc, pct_open(B_TCP), pct_msg_relay_response(&rr));
    cr_assert_str_eq(pct_expect_conn(a4, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE)->msg->relay_response->relay_server,
                     "");
}

/* ---- RequestRelay (§6.7) ---- */
static Hbb__RequestRelay request_relay(const char *id)
{
    Hbb__RequestRelay r = HBB__REQUEST_RELAY__INIT;
    r.id = (char *)id;
    r.uuid = "U2";
    r.relay_server = "relay.test:21117";
    r.secure = true;
    r.licence_key = "anything";
    r.token = "T";
    r.conn_type = HBB__CONN_TYPE__FILE_TRANSFER;
    return r;
}

Test(answers, R94_R95_request_relay_forwarded_and_answered)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR);
    Hbb__RequestRelay req = request_relay(B_ID);
    cr_assert_eq(fc_conn_msg(fc, a, pct_msg_request_relay(&req)), RDV_OK);
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY);
    const Hbb__RequestRelay *f = s->msg->request_relay;
    cr_assert_str_eq(f->id, B_ID);
    cr_assert_str_eq(f->uuid, "U2");
    cr_assert_str_eq(f->relay_server, "relay.test:21117");
    cr_assert(f->secure);
    cr_assert_str_eq(f->licence_key, "anything");
    cr_assert_str_eq(f->token, "T");
    cr_assert_eq(f->conn_type, HBB__CONN_TYPE__FILE_TRANSFER);
    pct_expect_addr(f->socket_addr, A_ADDR);
    memcpy(SA, f->socket_addr.data, f->socket_addr.len);
    SAN = f->socket_addr.len;
    pct_expect_nothing();
    cr_assert(fc_conn_alive(fc, a));
    cr_assert_eq(REG.lookups_memory, 1, "memory-only lookup");
    cr_assert_eq(REG.lookups_stored, 0);
    /* R95: B accepts */
    Hbb__RelayResponse rr = HBB__RELAY_RESPONSE__INIT;
    rr.socket_addr.data = SA, rr.socket_addr.len = SAN;
    rr.version = "1.4.9";
    fc_conn_msg(fc, pct_open(B_TCP), pct_msg_relay_response(&rr));
    const Hbb__RelayResponse *r = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE)->msg->relay_response;
    cr_assert_eq(r->socket_addr.len, 0);
    cr_assert_str_eq(r->version, "1.4.9");
}

Test(answers, R96_request_relay_unknown_or_stored_only_sends_nothing)
{
    fake_peer *fp = pct_peer(B_ID, B_ADDR, false, 0xb1);
    fp->in_memory = false;
    rdv_conn_id a = pct_open(A_ADDR);
    Hbb__RequestRelay req = request_relay(B_ID);
    cr_assert_eq(fc_conn_msg(fc, a, pct_msg_request_relay(&req)), RDV_OK);
    Hbb__RequestRelay req2 = request_relay("nosuchid");
    cr_assert_eq(fc_conn_msg(fc, pct_open("10.0.0.1:50002"), pct_msg_request_relay(&req2)), RDV_OK);
    Hbb__RequestRelay req3 = request_relay("");
    cr_assert_eq(fc_conn_msg(fc, pct_open("10.0.0.1:50003"), pct_msg_request_relay(&req3)), RDV_OK);
    pct_expect_nothing();
    cr_assert(fc_conn_alive(fc, a));
    cr_assert_eq(fc_counter(fc, "punch-coordinator.request_relay_unknown"), 3);
    cr_assert_eq(P->pending.nparked, 3, "parked anyway (step 1)");
}

Test(answers, R97_request_relay_to_an_offline_cached_peer_is_forwarded)
{
    pct_peer(B_ID, B_ADDR, false, 0xb1);
    Hbb__RequestRelay req = request_relay(B_ID);
    cr_assert_eq(fc_conn_msg(fc, pct_open(A_ADDR), pct_msg_request_relay(&req)), RDV_OK);
    pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY);
}

Test(answers, request_relay_is_not_licence_checked)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    Hbb__RequestRelay req = request_relay(B_ID);
    req.licence_key = "";
    cr_assert_eq(fc_conn_msg(fc, pct_open(A_ADDR), pct_msg_request_relay(&req)), RDV_OK);
    pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY);
}

Test(answers, answers_on_foreign_listeners_are_declined)
{
    rdv_conn_id a = park();
    rdv_addr b = fc_addr(B_TCP);
    rdv_conn_id c = fc_conn_open(fc, "nat", RDV_TR_TCP, &b);
    cr_assert_eq(fc_conn_msg(fc, c, pct_phs(SA, SAN, B_ID, "", 1, "1.4.9")), RDV_DECLINED);
    pct_expect_nothing();
    cr_assert_eq(P->pending.nparked, 1);
    (void)a;
}

Test(answers, answer_over_websocket_requester)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_addr aa = fc_addr(A_ADDR);
    rdv_conn_id ws = fc_conn_open(fc, "ws", RDV_TR_WS, &aa);
    fc_conn_msg(fc, ws, pct_phr(B_ID, 1, KEYS.licence));
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    memcpy(SA, s->msg->punch_hole->socket_addr.data, s->msg->punch_hole->socket_addr.len);
    SAN = s->msg->punch_hole->socket_addr.len;
    fc_conn_msg(fc, pct_open(B_TCP), pct_phs(SA, SAN, B_ID, "", 1, "1.4.9"));
    pct_expect_conn(ws, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
}
