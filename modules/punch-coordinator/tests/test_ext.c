/* test_ext.c — the EXT punching fields (rendezvous.md §15.8, §15.9;
 * client-flows.md §6.2-§6.4; R226, R229) and pushes to peers registered on
 * a stream (§15.4, R221). B is registered at 10.0.0.2:40000 unless stated;
 * A connects from 10.0.0.1 on TCP "main". */
#include "pc_test.h"

TestSuite(ext, .init = pct_setup, .fini = pct_teardown);

#define B_ID "400000001"
#define B_ADDR "10.0.0.2:40000"
#define A_ADDR "10.0.0.1:50001"
#define B_UDP "10.0.0.2:41000" /* B's fresh UDP socket for PunchHoleSent */

/* A mangled IPv6 address (wire.md §5.2: 16 address bytes, port LE). */
static const uint8_t V6A[18] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x0a, [16] = 0x39, [17] = 0x30 };
static const uint8_t V6B[18] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x0b, [16] = 0x40, [17] = 0x1f };

/* PunchHoleRequest as a current client sends it (client-flows.md §3.1). */
static Hbb__RendezvousMessage *phr_ext(const char *id, int udp_port, bool force_relay, int upnp,
                                       const uint8_t *v6, size_t v6n)
{
    Hbb__RendezvousMessage *m = pct_phr(id, HBB__NAT_TYPE__ASYMMETRIC, KEYS.licence);
    Hbb__PunchHoleRequest *r = m->punch_hole_request;
    r->version = "1.4.9";
    r->udp_port = udp_port;
    r->force_relay = force_relay;
    r->upnp_port = upnp;
    r->socket_addr_v6.data = (uint8_t *)v6, r->socket_addr_v6.len = v6n;
    return m;
}

/* A parks with its request; returns A's connection and what B got. */
static rdv_conn_id ask(Hbb__RendezvousMessage *req, Hbb__PunchHole *out, uint8_t sa[RDV_ADDR_MANGLED_MAX],
                       size_t *san)
{
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, req), RDV_OK);
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    *out = *s->msg->punch_hole;
    memcpy(sa, s->msg->punch_hole->socket_addr.data, s->msg->punch_hole->socket_addr.len);
    *san = s->msg->punch_hole->socket_addr.len;
    out->socket_addr.data = sa;
    out->socket_addr_v6.data = NULL; /* borrowed from the popped send: compare before the next pop */
    return a;
}

static Hbb__RendezvousMessage *phs_ext(const uint8_t *sa, size_t san, int upnp, const uint8_t *v6, size_t v6n)
{
    Hbb__RendezvousMessage *m = pct_phs(sa, san, B_ID, "relay.test:21117", HBB__NAT_TYPE__ASYMMETRIC, "1.4.9");
    m->punch_hole_sent->upnp_port = upnp;
    m->punch_hole_sent->socket_addr_v6.data = (uint8_t *)v6, m->punch_hole_sent->socket_addr_v6.len = v6n;
    return m;
}

/* ------------------------------------------------------------------ §15.8 */
Test(ext, R226_udp_port_reaches_b_and_its_udp_answer_reaches_a_over_tcp)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, phr_ext(B_ID, 40000, false, 0, V6A, 18)), RDV_OK);
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    const Hbb__PunchHole *ph = s->msg->punch_hole;
    cr_assert_eq(ph->udp_port, 40000, "field 4 copied");
    pct_expect_addr(ph->socket_addr, A_ADDR);
    cr_assert_eq(ph->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san = ph->socket_addr.len;
    memcpy(sa, ph->socket_addr.data, san);

    /* B: three UDP copies from a new socket (client-flows.md §4.1) */
    rdv_addr bu = fc_addr(B_UDP);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(fc_udp(fc, "main", &bu, phs_ext(sa, san, 0, V6B, 18)), RDV_OK);
    s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    const Hbb__PunchHoleResponse *r = s->msg->punch_hole_response;
    pct_expect_addr(r->socket_addr, B_UDP);
    cr_assert(r->is_udp, "field 9");
    pct_expect_signed(r->pk, B_ID, 0xb1);
    cr_assert_str_eq(r->relay_server, "relay.test:21117");
    cr_assert_eq(r->union_case, HBB__PUNCH_HOLE_RESPONSE__UNION_NAT_TYPE);
    cr_assert_eq(r->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
    cr_assert_eq(r->socket_addr_v6.len, 18, "field 11");
    cr_assert_arr_eq(r->socket_addr_v6.data, V6B, 18);
    cr_assert_eq(r->failure, 0);
    pct_expect_nothing(); /* nothing by UDP, and the two copies dropped */
    cr_assert(fc_conn_alive(fc, a));
    cr_assert_eq(fc_counter(fc, "punch-coordinator.udp_punch_hole_sent"), 1);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.udp_ignored"), 2);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.delivered"), 1);
}

Test(ext, R81_R226_udp_answer_without_a_udp_offer_is_ignored)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    Hbb__PunchHole ph;
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san;
    rdv_conn_id a = ask(phr_ext(B_ID, 0, false, 0, NULL, 0), &ph, sa, &san);
    cr_assert_eq(ph.udp_port, 0);
    rdv_addr bu = fc_addr(B_UDP);
    cr_assert_eq(fc_udp(fc, "main", &bu, phs_ext(sa, san, 0, NULL, 0)), RDV_OK);
    pct_expect_nothing();
    cr_assert_eq(P->pending.nparked, 1, "A still waits for a TCP answer");
    /* and a TCP answer still works, with is_udp unset */
    rdv_conn_id b = pct_open("10.0.0.2:40777");
    cr_assert_eq(fc_conn_msg(fc, b, phs_ext(sa, san, 0, NULL, 0)), RDV_CLOSE);
    const fc_sent *s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    cr_assert_not(s->msg->punch_hole_response->is_udp);
    pct_expect_addr(s->msg->punch_hole_response->socket_addr, "10.0.0.2:40777");
}

Test(ext, R226_udp_answer_without_a_waiting_requester_sends_nothing)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_addr a = fc_addr(A_ADDR), victim = fc_addr("192.0.2.9:9999");
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    rdv_addr bu = fc_addr(B_UDP);
    /* nobody parked at A's address, nor at a victim's */
    size_t san = rdv_addr_mangle(&a, 5, sa);
    cr_assert_eq(fc_udp(fc, "main", &bu, phs_ext(sa, san, 0, NULL, 0)), RDV_OK);
    san = rdv_addr_mangle(&victim, 5, sa);
    cr_assert_eq(fc_udp(fc, "main", &bu, phs_ext(sa, san, 0, NULL, 0)), RDV_OK);
    /* garbage socket_addr */
    const uint8_t junk[3] = { 1, 2, 3 };
    cr_assert_eq(fc_udp(fc, "main", &bu, phs_ext(junk, 3, 0, NULL, 0)), RDV_OK);
    pct_expect_nothing();
    cr_assert_eq(fc_counter(fc, "punch-coordinator.udp_ignored"), 3);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.signed_pk"), 0, "no work for strays");
}

Test(ext, udp_answer_after_the_tcp_answer_is_dropped)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    Hbb__PunchHole ph;
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san;
    rdv_conn_id a = ask(phr_ext(B_ID, 40000, false, 0, NULL, 0), &ph, sa, &san);
    rdv_conn_id b = pct_open("10.0.0.2:40777");
    fc_conn_msg(fc, b, phs_ext(sa, san, 0, NULL, 0));
    pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    rdv_addr bu = fc_addr(B_UDP);
    cr_assert_eq(fc_udp(fc, "main", &bu, phs_ext(sa, san, 0, NULL, 0)), RDV_OK);
    pct_expect_nothing();
}

Test(ext, udp_answer_on_another_udp_listener_is_ignored)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    Hbb__PunchHole ph;
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san;
    ask(phr_ext(B_ID, 40000, false, 0, NULL, 0), &ph, sa, &san);
    fc_listener(fc, "other", RDV_TR_UDP, 1);
    rdv_addr bu = fc_addr(B_UDP);
    cr_assert_eq(fc_udp(fc, "other", &bu, phs_ext(sa, san, 0, NULL, 0)), RDV_OK);
    pct_expect_nothing();
    cr_assert_eq(P->pending.nparked, 1);
}

Test(ext, out_of_range_ports_are_not_passed_on)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    int bad[] = { 65536, -1, 0x7fffffff };
    for (size_t i = 0; i < 3; i++) {
        Hbb__PunchHole ph;
        uint8_t sa[RDV_ADDR_MANGLED_MAX];
        size_t san;
        rdv_conn_id a = ask(phr_ext(B_ID, bad[i], false, bad[i], NULL, 0), &ph, sa, &san);
        cr_assert_eq(ph.udp_port, 0);
        cr_assert_eq(ph.upnp_port, 0);
        rdv_addr bu = fc_addr(B_UDP);
        fc_udp(fc, "main", &bu, phs_ext(sa, san, 0, NULL, 0));
        pct_expect_nothing();
        fc_conn_peer_close(fc, a);
    }
    cr_assert_eq(fc_counter(fc, "punch-coordinator.bad_fields"), 6);
}

Test(ext, R80_udp_punch_off_is_oss)
{
    pct_teardown();
    pct_setup_conf("udp_punch=false\n");
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    Hbb__PunchHole ph;
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san;
    ask(phr_ext(B_ID, 40000, false, 0, NULL, 0), &ph, sa, &san);
    cr_assert_eq(ph.udp_port, 0, "not copied");
    rdv_addr bu = fc_addr(B_UDP);
    cr_assert_eq(fc_udp(fc, "main", &bu, phs_ext(sa, san, 0, NULL, 0)), RDV_OK);
    pct_expect_nothing();
    /* on again by a reload */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), P, NULL), 0);
    fc_clear_sent(fc);
    rdv_conn_id a2 = pct_open("10.0.0.1:50002");
    fc_conn_msg(fc, a2, phr_ext(B_ID, 40000, false, 0, NULL, 0));
    cr_assert_eq(pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE)->msg->punch_hole->udp_port,
                 40000);
}

/* ------------------------------------------------------------------ §15.9 */
Test(ext, R229_ipv6_upnp_and_force_relay_both_ways)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, phr_ext(B_ID, 0, true, 5000, V6A, 18)), RDV_OK);
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    const Hbb__PunchHole *ph = s->msg->punch_hole;
    cr_assert(ph->force_relay, "field 5");
    cr_assert_eq(ph->upnp_port, 5000, "field 6");
    cr_assert_eq(ph->socket_addr_v6.len, 18, "field 7");
    cr_assert_arr_eq(ph->socket_addr_v6.data, V6A, 18);
    cr_assert_eq(ph->udp_port, 0);
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san = ph->socket_addr.len;
    memcpy(sa, ph->socket_addr.data, san);
    rdv_conn_id b = pct_open("10.0.0.2:40777");
    cr_assert_eq(fc_conn_msg(fc, b, phs_ext(sa, san, 6000, V6B, 18)), RDV_CLOSE);
    s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    const Hbb__PunchHoleResponse *r = s->msg->punch_hole_response;
    pct_expect_addr(r->socket_addr, "10.0.0.2:40777");
    cr_assert_eq(r->upnp_port, 6000, "field 10");
    cr_assert_eq(r->socket_addr_v6.len, 18, "field 11");
    cr_assert_arr_eq(r->socket_addr_v6.data, V6B, 18);
    cr_assert_not(r->is_udp);
    pct_expect_signed(r->pk, B_ID, 0xb1);
    cr_assert_str_eq(r->relay_server, "relay.test:21117");
    cr_assert_eq(r->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
}

Test(ext, R229_fetch_local_addr_and_local_addr_carry_ipv6)
{
    pct_peer(B_ID, "10.0.0.1:40000", true, 0xb1); /* same IP as A: same intranet */
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, phr_ext(B_ID, 40000, true, 5000, V6A, 18)), RDV_OK);
    const fc_sent *s = pct_expect_push("10.0.0.1:40000", HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR);
    const Hbb__FetchLocalAddr *f = s->msg->fetch_local_addr;
    cr_assert_eq(f->socket_addr_v6.len, 18, "FetchLocalAddr field 3");
    cr_assert_arr_eq(f->socket_addr_v6.data, V6A, 18);
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san = f->socket_addr.len;
    memcpy(sa, f->socket_addr.data, san);
    rdv_addr lan = fc_addr("192.168.1.5:40100");
    uint8_t la[RDV_ADDR_MANGLED_MAX];
    size_t lan_n = rdv_addr_mangle(&lan, 9, la);
    Hbb__RendezvousMessage *m = pct_local_addr(sa, san, la, lan_n, "relay.test", B_ID, "1.4.9");
    m->local_addr->socket_addr_v6.data = (uint8_t *)V6B, m->local_addr->socket_addr_v6.len = 18;
    rdv_conn_id b = pct_open("10.0.0.1:40777");
    cr_assert_eq(fc_conn_msg(fc, b, m), RDV_CLOSE);
    const Hbb__PunchHoleResponse *r =
        pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE)->msg->punch_hole_response;
    cr_assert(r->is_local);
    pct_expect_addr(r->socket_addr, "192.168.1.5:40100");
    cr_assert_eq(r->socket_addr_v6.len, 18, "field 11");
    cr_assert_arr_eq(r->socket_addr_v6.data, V6B, 18);
    cr_assert_not(r->is_udp);
}

Test(ext, oversize_ipv6_address_is_not_passed_on)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    uint8_t big[19] = { 1 };
    Hbb__PunchHole ph;
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san;
    ask(phr_ext(B_ID, 0, false, 0, big, sizeof big), &ph, sa, &san);
    cr_assert_eq(ph.socket_addr_v6.len, 0);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.bad_fields"), 1);
}

Test(ext, R229_passthrough_off_is_oss)
{
    pct_teardown();
    pct_setup_conf("field_passthrough=false\n");
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, phr_ext(B_ID, 0, true, 5000, V6A, 18)), RDV_OK);
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    const Hbb__PunchHole *ph = s->msg->punch_hole;
    cr_assert_not(ph->force_relay);
    cr_assert_eq(ph->upnp_port, 0);
    cr_assert_eq(ph->socket_addr_v6.len, 0);
    cr_assert_eq(s->len, 2 + 2 + ph->socket_addr.len + 2, "exactly R64's bytes");
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san = ph->socket_addr.len;
    memcpy(sa, ph->socket_addr.data, san);
    fc_conn_msg(fc, pct_open("10.0.0.2:40777"), phs_ext(sa, san, 6000, V6B, 18));
    const Hbb__PunchHoleResponse *r =
        pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE)->msg->punch_hole_response;
    cr_assert_eq(r->upnp_port, 0);
    cr_assert_eq(r->socket_addr_v6.len, 0);
}

/* ------------------------------------------------------------------ §15.4 (R221) */
Test(ext, R221_every_push_goes_over_the_peers_connection)
{
    fake_peer *b = pct_peer(B_ID, "10.0.0.1:40000", true, 0xb1);
    rdv_conn_id bc = pct_open("10.0.0.1:40000");
    b->conn = bc;
    /* PunchHole with the EXT fields */
    rdv_conn_id a = pct_open("10.0.0.9:50001");
    cr_assert_eq(fc_conn_msg(fc, a, phr_ext(B_ID, 40000, true, 5000, V6A, 18)), RDV_OK);
    const Hbb__PunchHole *ph = pct_expect_conn(bc, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE)->msg->punch_hole;
    cr_assert_eq(ph->udp_port, 40000);
    cr_assert(ph->force_relay);
    cr_assert_eq(ph->upnp_port, 5000);
    cr_assert_eq(ph->socket_addr_v6.len, 18);
    pct_expect_nothing();
    /* FetchLocalAddr (same IP) */
    rdv_conn_id a2 = pct_open("10.0.0.1:50002");
    fc_conn_msg(fc, a2, phr_ext(B_ID, 0, false, 0, NULL, 0));
    pct_expect_conn(bc, HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR);
    /* RequestRelay */
    Hbb__RequestRelay rr = HBB__REQUEST_RELAY__INIT;
    rr.id = B_ID, rr.uuid = "u-1";
    rdv_conn_id a3 = pct_open("10.0.0.9:50003");
    cr_assert_eq(fc_conn_msg(fc, a3, pct_msg_request_relay(&rr)), RDV_OK);
    const Hbb__RequestRelay *f = pct_expect_conn(bc, HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY)->msg->request_relay;
    cr_assert_str_eq(f->uuid, "u-1");
    pct_expect_addr(f->socket_addr, "10.0.0.9:50003");
    pct_expect_nothing();
    cr_assert_eq(fc_counter(fc, "punch-coordinator.push_fail"), 0);
}
