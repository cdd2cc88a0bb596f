/* test_punch.c — PunchHoleRequest, rendezvous.md §6.3 step by step, and the
 * UDP cases of §4.4. B is registered at 10.0.0.2:40000 unless stated; A
 * connects from 10.0.0.1 (a different IP) on TCP "main". */
#include "pc_test.h"

TestSuite(punch, .init = pct_setup, .fini = pct_teardown);

#define B_ID "400000001"
#define B_ADDR "10.0.0.2:40000"
#define A_ADDR "10.0.0.1:50001"

Test(punch, R60_unknown_id_is_5a_00_and_the_connection_stays_open)
{
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr("nosuchid", 1, KEYS.licence)), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 00");
    pct_expect_nothing();
    cr_assert(fc_conn_alive(fc, a));
    cr_assert_eq(REG.lookups_stored, 1, "memory-then-DB lookup (§2.2)");
    cr_assert_eq(fc_counter(fc, "punch-coordinator.id_not_exist"), 1);
}

Test(punch, R61_empty_id_is_5a_00_without_a_lookup)
{
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr("", 1, KEYS.licence)), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 00");
    cr_assert_eq(REG.lookups_stored + REG.lookups_memory, 0);
}

Test(punch, R62_licence_mismatch_for_known_and_unknown_ids_and_absent_key)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    const char *cases[][2] = { { B_ID, "wrong" }, { "nosuchid", "wrong" }, { B_ID, "" } };
    for (size_t i = 0; i < 3; i++) {
        rdv_conn_id a = pct_open(A_ADDR);
        cr_assert_eq(fc_conn_msg(fc, a, pct_phr(cases[i][0], 1, cases[i][1])), RDV_OK);
        pct_expect_bytes(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 02 18 03");
        pct_expect_nothing();
        fc_conn_peer_close(fc, a);
    }
    /* the key check is byte for byte: a prefix or a case change is wrong */
    rdv_conn_id a = pct_open(A_ADDR);
    char shorter[64];
    snprintf(shorter, sizeof shorter, "%.*s", (int)strlen(KEYS.licence) - 1, KEYS.licence);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, shorter)), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 02 18 03");
    cr_assert_eq(fc_counter(fc, "punch-coordinator.licence_mismatch"), 4);
    cr_assert_eq(REG.lookups_stored, 0, "licence is checked before the lookup");
}

Test(punch, R63_R164_no_licence_key_accepts_anything)
{
    KEYS.licence[0] = '\0';
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, "")), RDV_OK);
    pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    pct_expect_nothing();
}

/* R230: with a login service, after the licence check and before the
 * lookup; the refusal is other_failure text, no socket_addr. */
Test(punch, R230_login_refusal_is_other_failure_after_the_licence_check)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    LOGIN.refusal = "Please log in";
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
    const fc_sent *s = pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    const Hbb__PunchHoleResponse *r = s->msg->punch_hole_response;
    cr_assert_str_eq(r->other_failure, "Please log in");
    cr_assert_eq(r->socket_addr.len, 0);
    cr_assert_eq(r->failure, HBB__PUNCH_HOLE_RESPONSE__FAILURE__ID_NOT_EXIST, "failure left at its default");
    pct_expect_nothing();
    cr_assert(fc_conn_alive(fc, a));
    cr_assert_eq(REG.lookups_stored + REG.lookups_memory, 0, "refused before the lookup");
    cr_assert_eq(fc_counter(fc, "punch-coordinator.login_refused"), 1);
    /* the token is handed over as sent; an accepted one goes on to B */
    Hbb__RendezvousMessage *m = pct_phr(B_ID, 1, KEYS.licence);
    m->punch_hole_request->token = "good-token";
    cr_assert_eq(fc_conn_msg(fc, a, m), RDV_OK);
    cr_assert_str_eq(LOGIN.last_token, "good-token");
    pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    /* a wrong licence is answered as such whatever the token */
    rdv_conn_id a2 = pct_open(A_ADDR);
    unsigned asked = LOGIN.asked;
    cr_assert_eq(fc_conn_msg(fc, a2, pct_phr(B_ID, 1, "wrong")), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a2, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 02 18 03");
    cr_assert_eq(LOGIN.asked, asked, "login is asked after the licence check");
}

Test(punch, R43_offline_peer_is_5a_02_18_02)
{
    pct_peer(B_ID, B_ADDR, false, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 02 18 02");
    pct_expect_nothing();
}

Test(punch, R53_stored_only_peer_is_offline_not_unknown)
{
    fake_peer *b = pct_peer(B_ID, B_ADDR, false, 0xb1);
    b->in_memory = false;
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 02 18 02");
}

Test(punch, R64_forward_as_punch_hole_with_only_addr_and_nat)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, HBB__NAT_TYPE__ASYMMETRIC, KEYS.licence)), RDV_OK);
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    const Hbb__PunchHole *ph = s->msg->punch_hole;
    pct_expect_addr(ph->socket_addr, A_ADDR);
    cr_assert_str_eq(ph->relay_server, "");
    cr_assert_eq(ph->nat_type, 1);
    cr_assert_eq(ph->udp_port, 0);
    cr_assert_not(ph->force_relay);
    cr_assert_eq(ph->upnp_port, 0);
    cr_assert_eq(ph->socket_addr_v6.len, 0);
    cr_assert_null(ph->control_permissions);
    cr_assert_null(ph->controlled_context);
    /* exactly: 4a <len> 0a <n> <addr> 18 01 */
    cr_assert_eq(s->len, 2 + 2 + ph->socket_addr.len + 2);
    pct_expect_nothing(); /* A gets nothing yet (step 11) */
    cr_assert(fc_conn_alive(fc, a));
    cr_assert_eq(fc_counter(fc, "punch-coordinator.punch_hole"), 1);
}

Test(punch, R65_nat_type_is_copied_as_a_raw_integer)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    int nats[] = { 0, 7, -1, 2 };
    for (size_t i = 0; i < 4; i++) {
        rdv_conn_id a = pct_open(A_ADDR);
        cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, nats[i], KEYS.licence)), RDV_OK);
        const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
        cr_assert_eq((int)s->msg->punch_hole->nat_type, nats[i]);
        fc_conn_peer_close(fc, a);
    }
}

Test(punch, R66_always_use_relay_forces_symmetric)
{
    pct_teardown();
    pct_setup_conf("always_use_relay=true\n");
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
    cr_assert_eq(pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE)->msg->punch_hole->nat_type, 2);
    /* and switched off at run time by `aur N`, on again by `aur y` */
    pct_admin("aur N");
    rdv_conn_id a2 = pct_open("10.0.0.1:50002");
    fc_conn_msg(fc, a2, pct_phr(B_ID, 1, KEYS.licence));
    cr_assert_eq(pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE)->msg->punch_hole->nat_type, 1);
    pct_admin("aur y");
    rdv_conn_id a3 = pct_open("10.0.0.1:50003");
    fc_conn_msg(fc, a3, pct_phr(B_ID, 0, KEYS.licence));
    cr_assert_eq(pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE)->msg->punch_hole->nat_type, 2);
}

Test(punch, R67_same_ip_gets_fetch_local_addr)
{
    pct_teardown();
    pct_setup_conf("relay_servers=127.0.0.1:31001\n");
    pct_peer(B_ID, "10.0.0.1:40000", true, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR); /* same IP as B */
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
    const fc_sent *s = pct_expect_push("10.0.0.1:40000", HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR);
    pct_expect_addr(s->msg->fetch_local_addr->socket_addr, A_ADDR);
    cr_assert_str_eq(s->msg->fetch_local_addr->relay_server, "127.0.0.1:31001");
    pct_expect_nothing();
    cr_assert_eq(fc_counter(fc, "punch-coordinator.fetch_local_addr"), 1);
}

Test(punch, R68_same_intranet_ignores_always_use_relay)
{
    pct_peer(B_ID, "10.0.0.1:40000", true, 0xb1);
    pct_admin("aur Y");
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
    pct_expect_push("10.0.0.1:40000", HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR);
}

Test(punch, same_ip_compares_families_after_normalisation)
{
    /* B registered over IPv6 ::1, A from 127.0.0.1: different families, so
     * not the same intranet (upstream compares V4/V4 and V6/V6 only). */
    pct_peer(B_ID, "[::1]:40000", true, 0xb1);
    rdv_conn_id a = pct_open("127.0.0.1:50001");
    fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence));
    pct_expect_push("[::1]:40000", HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    /* A from ::1 too: same intranet */
    rdv_conn_id a2 = pct_open("[::1]:50002");
    fc_conn_msg(fc, a2, pct_phr(B_ID, 1, KEYS.licence));
    pct_expect_push("[::1]:40000", HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR);
}

Test(punch, R135_websocket_requester_is_never_same_intranet)
{
    pct_peer(B_ID, "10.0.0.1:40000", true, 0xb1);
    rdv_addr a = fc_addr(A_ADDR);
    rdv_conn_id ws = fc_conn_open(fc, "ws", RDV_TR_WS, &a);
    cr_assert_eq(fc_conn_msg(fc, ws, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
    const fc_sent *s = pct_expect_push("10.0.0.1:40000", HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    pct_expect_addr(s->msg->punch_hole->socket_addr, A_ADDR);
}

Test(punch, R131_websocket_failure_answer_on_the_ws_connection)
{
    rdv_addr a = fc_addr(A_ADDR);
    rdv_conn_id ws = fc_conn_open(fc, "ws-rendezvous", RDV_TR_WS, &a);
    cr_assert_eq(fc_conn_msg(fc, ws, pct_phr("nosuchid", 1, KEYS.licence)), RDV_OK);
    pct_expect_bytes(pct_expect_conn(ws, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 00");
}

Test(punch, R114_R119_other_listeners_are_not_ours)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_addr a = fc_addr(A_ADDR);
    rdv_conn_id c = fc_conn_open(fc, "nat", RDV_TR_TCP, &a);
    cr_assert_eq(fc_conn_msg(fc, c, pct_phr(B_ID, 1, KEYS.licence)), RDV_DECLINED);
    cr_assert_not(fc_conn_alive(fc, c), "an unhandled message closes the connection");
    pct_expect_nothing();
    cr_assert_eq(fc_counter(fc, "punch-coordinator.wrong_listener"), 1);
    cr_assert_eq(P->pending.nrec, 0, "nothing parked for a foreign listener");
}

Test(punch, R80_udp_punch_hole_request_is_ignored)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_addr a = fc_addr("10.0.0.1:40001");
    cr_assert_eq(fc_udp(fc, "main", &a, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
    cr_assert_eq(fc_udp(fc, "main", &a, pct_phr("nosuchid", 1, "wrong")), RDV_OK);
    pct_expect_nothing();
    cr_assert_eq(fc_counter(fc, "punch-coordinator.udp_ignored"), 2);
    cr_assert_eq(REG.lookups_stored + REG.lookups_memory, 0);
}

Test(punch, R81_udp_punch_hole_sent_and_local_addr_are_ignored)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san;
    rdv_conn_id a = pct_park(A_ADDR, B_ID, sa, &san);
    rdv_addr b = fc_addr(B_ADDR);
    cr_assert_eq(fc_udp(fc, "main", &b, pct_phs(sa, san, B_ID, "r", 1, "1.4.9")), RDV_OK);
    uint8_t m[4] = { 1, 2, 3, 4 };
    cr_assert_eq(fc_udp(fc, "main", &b, pct_local_addr(sa, san, m, 4, "r", B_ID, "1.4.9")), RDV_OK);
    /* a PunchHoleSent naming a test listener's address: no reflection */
    rdv_addr victim = fc_addr("192.0.2.9:9999");
    uint8_t va[RDV_ADDR_MANGLED_MAX];
    size_t vn = rdv_addr_mangle(&victim, 12345, va);
    cr_assert_eq(fc_udp(fc, "main", &b, pct_phs(va, vn, B_ID, "r", 1, "1.4.9")), RDV_OK);
    pct_expect_nothing();
    cr_assert_eq(P->pending.nparked, 1, "A is still waiting");
    cr_assert(fc_conn_alive(fc, a));
    cr_assert_eq(fc_counter(fc, "punch-coordinator.udp_ignored"), 3);
}

Test(punch, R82_ipv6_requester_gets_the_18_byte_form)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open("[::1]:50321");
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    ProtobufCBinaryData sa = s->msg->punch_hole->socket_addr;
    cr_assert_eq(sa.len, 18);
    uint8_t want[18] = { [15] = 1, [16] = 50321 & 0xff, [17] = 50321 >> 8 };
    cr_assert_arr_eq(sa.data, want, 18);
}

Test(punch, mapped_ipv4_requester_is_normalised)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open("[::ffff:10.0.0.7]:50001");
    fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence));
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    cr_assert_leq(s->msg->punch_hole->socket_addr.len, 16, "IPv4 form (wire.md §5.1)");
    pct_expect_addr(s->msg->punch_hole->socket_addr, "10.0.0.7:50001");
}

Test(punch, R5_two_requests_on_one_connection_get_one_answer)
{
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr("nosuchid", 1, KEYS.licence)), RDV_OK);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr("nosuchid", 1, KEYS.licence)), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 00");
    pct_expect_nothing();
    cr_assert(fc_conn_alive(fc, a));
}

Test(punch, R78_repeated_requests_are_forwarded_each_time_answered_once)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR);
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san = 0;
    for (int i = 0; i < 3; i++) {
        fc_advance(fc, 3000);
        cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
        const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
        memcpy(sa, s->msg->punch_hole->socket_addr.data, s->msg->punch_hole->socket_addr.len);
        san = s->msg->punch_hole->socket_addr.len;
    }
    rdv_conn_id b = pct_open("10.0.0.2:40100");
    cr_assert_eq(fc_conn_msg(fc, b, pct_phs(sa, san, B_ID, "", 1, "1.4.9")), RDV_CLOSE);
    pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    rdv_conn_id b2 = pct_open("10.0.0.2:40101");
    fc_conn_msg(fc, b2, pct_phs(sa, san, B_ID, "", 1, "1.4.9"));
    pct_expect_nothing();
}

Test(punch, R79_test_nat_after_parking_is_closed_without_reply)
{
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr("nosuchid", 1, KEYS.licence)), RDV_OK);
    fc_clear_sent(fc);
    Hbb__TestNatRequest t = HBB__TEST_NAT_REQUEST__INIT;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST;
    m.test_nat_request = &t;
    cr_assert_eq(fc_conn_msg(fc, a, &m), RDV_CLOSE, "ACCESS closes it before any handler");
    cr_assert_not(fc_conn_alive(fc, a));
    pct_expect_nothing();
    cr_assert_eq(fc_counter(fc, "punch-coordinator.parked_reply_dropped"), 1);
    /* a fresh connection is not affected (no handler here: -ENOENT) */
    rdv_conn_id c = pct_open("10.0.0.1:50009");
    cr_assert_eq(fc_conn_msg(fc, c, &m), -ENOENT);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.parked_reply_dropped"), 1);
    /* and RegisterPk on a parked connection: also no reply (R150's
     * NOT_SUPPORT would have gone on the spent channel) */
    rdv_conn_id d = pct_open("10.0.0.1:50010");
    fc_conn_msg(fc, d, pct_phr("nosuchid", 1, KEYS.licence));
    Hbb__RegisterPk rp = HBB__REGISTER_PK__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &rp;
    cr_assert_eq(fc_conn_msg(fc, d, &m), RDV_CLOSE);
}

Test(punch, peer_registered_on_a_stream_gets_the_push_on_it)
{
    fake_peer *b = pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id bc = pct_open("10.0.0.2:40200");
    b->conn = bc;
    rdv_conn_id a = pct_open(A_ADDR);
    fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence));
    pct_expect_conn(bc, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    pct_expect_nothing();
    /* that connection gone: UDP again */
    fc_conn_peer_close(fc, bc);
    rdv_conn_id a2 = pct_open("10.0.0.1:50002");
    fc_conn_msg(fc, a2, pct_phr(B_ID, 1, KEYS.licence));
    pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
}

Test(punch, push_to_a_peer_without_address_is_counted_not_sent)
{
    pct_peer(B_ID, "0.0.0.0:0", true, 0xb1); /* an address nobody can be sent to */
    rdv_conn_id a = pct_open(A_ADDR);
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence)), RDV_OK);
    pct_expect_nothing();
    cr_assert_eq(fc_counter(fc, "punch-coordinator.push_fail"), 1);
}

/* ---- LAN mask (§8.2, R103) ---- */
#define MASKCONF "mask=10.99.0.0/16\nlocal_ip=10.99.0.254\nrelay_servers=192.0.2.10:21117\n"

Test(punch, R103_lan_peer_outside_requester_gets_symmetric_and_local_relay)
{
    pct_teardown();
    pct_setup_conf(MASKCONF);
    pct_peer(B_ID, "10.99.1.1:40000", true, 0xb1); /* inside */
    rdv_conn_id a = pct_open("198.51.100.7:50001"); /* outside */
    fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence));
    const Hbb__PunchHole *ph = pct_expect_push("10.99.1.1:40000", HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE)->msg->punch_hole;
    cr_assert_eq(ph->nat_type, 2);
    cr_assert_str_eq(ph->relay_server, "10.99.0.254");
}

Test(punch, R103_outside_peer_lan_requester_gets_symmetric_and_public_relay)
{
    pct_teardown();
    pct_setup_conf(MASKCONF);
    pct_peer(B_ID, "198.51.100.8:40000", true, 0xb1);
    rdv_conn_id a = pct_open("10.99.2.2:50001");
    fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence));
    const Hbb__PunchHole *ph = pct_expect_push("198.51.100.8:40000", HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE)->msg->punch_hole;
    cr_assert_eq(ph->nat_type, 2);
    cr_assert_str_eq(ph->relay_server, "192.0.2.10:21117");
}

Test(punch, R103_both_inside_is_same_intranet)
{
    pct_teardown();
    pct_setup_conf(MASKCONF);
    pct_peer(B_ID, "10.99.1.1:40000", true, 0xb1);
    rdv_conn_id a = pct_open("10.99.2.2:50001");
    fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence));
    const fc_sent *s = pct_expect_push("10.99.1.1:40000", HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR);
    cr_assert_str_eq(s->msg->fetch_local_addr->relay_server, "192.0.2.10:21117");
    /* outside both: plain punch, nat type kept */
    pct_peer("400000002", "198.51.100.8:40000", true, 0xb2);
    rdv_conn_id a2 = pct_open("198.51.100.9:50001");
    fc_conn_msg(fc, a2, pct_phr("400000002", 1, KEYS.licence));
    cr_assert_eq(pct_expect_push("198.51.100.8:40000", HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE)->msg->punch_hole->nat_type, 1);
}

Test(punch, mask_variants_and_bad_masks)
{
    uint32_t net, bits;
    cr_assert_eq(pc_parse_mask("192.168.0.0/16", &net, &bits), 0);
    cr_assert_eq(net, 0xc0a80000u);
    cr_assert_eq(bits, 16);
    cr_assert_eq(pc_parse_mask("10.1.2.3", &net, &bits), 0);
    cr_assert_eq(bits, 32);
    cr_assert_eq(pc_parse_mask("0.0.0.0/0", &net, &bits), 0);
    cr_assert_eq(pc_parse_mask("10.0.0.0/008", &net, &bits), 0); /* Rust parses "008" as 8 */
    cr_assert_eq(bits, 8);
    const char *bad[] = { "", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0/8", "::/0", "10.0.0.0/8x", "x/8" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_lt(pc_parse_mask(bad[i], &net, &bits), 0, "%s", bad[i]);
    pct_teardown();
    pct_setup_conf("mask=garbage\n");
    cr_assert_not(P->mask_on);
    cr_assert(fc_log_contains(fc, "LAN handling off"));
    cr_assert_str_eq(P->local_ip, "");
    rdv_addr a = fc_addr("10.0.0.1:1");
    cr_assert_not(pc_is_lan(P, &a));
}

Test(punch, is_lan_reads_mapped_and_compatible_ipv6)
{
    pct_teardown();
    pct_setup_conf("mask=0.0.0.0/8\nlocal_ip=x\n");
    /* upstream's to_ipv4() turns ::1 into 0.0.0.1, inside 0.0.0.0/8 */
    rdv_addr v6 = fc_addr("[::1]:1"), pub = fc_addr("[2001:db8::1]:1"), v4 = fc_addr("0.1.2.3:4");
    cr_assert(pc_is_lan(P, &v6));
    cr_assert_not(pc_is_lan(P, &pub));
    cr_assert(pc_is_lan(P, &v4));
}

/* ---- punch-request log (§11.4, R83) ---- */
/* The target id is peer-chosen: printed as one word (rdv_word_escape),
 * cut with "..." where its text would pass 256 bytes, never breaking the
 * line. */
Test(punch, punch_log_prints_ids_escaped)
{
    static const char odd[] = "4000\r\n00099 -> x@y\x1b]0;t\x07";
    pct_peer(odd, B_ADDR, true, 0xb1);
    char longid[81], cut[64 * 4 + 1] = "";
    memset(longid, '\t', 80), longid[80] = '\0';
    for (int i = 0; i < 63; i++)
        strcat(cut, "\\x09");
    pct_peer(longid, "10.0.0.3:40000", true, 0xb2);
    fc_set_wall_us(fc, 1785060000000000ull); /* 2026-07-26T10:00:00Z */
    fc_conn_msg(fc, pct_open("127.0.0.2:50001"), pct_phr(odd, 1, KEYS.licence));
    fc_conn_msg(fc, pct_open("127.0.0.2:50002"), pct_phr(longid, 1, KEYS.licence));
    char want[768];
    snprintf(want, sizeof want,
             "2026-07-26T10:00:00Z 127.0.0.2 -> 4000\\x0d\\x0a00099\\x20->\\x20x@y\\x1b]0;t\\x07@10.0.0.2\n"
             "2026-07-26T10:00:00Z 127.0.0.2 -> %s...@10.0.0.3\n", cut);
    cr_assert_str_eq(pct_admin("pr"), want);
}

Test(punch, R83_punch_log_records_dedupes_and_pages)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    pct_peer("400000002", "10.0.0.3:40000", true, 0xb2);
    pct_peer("400000003", "10.0.0.4:40000", false, 0xb3);
    fc_set_wall_us(fc, 1785060000000000ull); /* 2026-07-26T10:00:00Z */
    for (int i = 0; i < 2; i++) {
        rdv_conn_id a = pct_open("127.0.0.2:50001");
        fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence));
        fc_conn_peer_close(fc, a);
        fc_advance(fc, 1000);
    }
    rdv_conn_id a = pct_open("127.0.0.2:50005");
    fc_conn_msg(fc, a, pct_phr("400000002", 1, KEYS.licence));
    /* failures are not logged */
    fc_conn_msg(fc, pct_open("127.0.0.2:50006"), pct_phr("nosuchid", 1, KEYS.licence));
    fc_conn_msg(fc, pct_open("127.0.0.2:50007"), pct_phr("400000003", 1, KEYS.licence));
    fc_conn_msg(fc, pct_open("127.0.0.2:50008"), pct_phr(B_ID, 1, "wrong"));
    cr_assert_str_eq(pct_admin("pr"), "2026-07-26T10:00:00Z 127.0.0.2 -> 400000001@10.0.0.2\n"
                                      "2026-07-26T10:00:00Z 127.0.0.2 -> 400000002@10.0.0.3\n");
    cr_assert_str_eq(pct_admin("pr 0 1"), "2026-07-26T10:00:00Z 127.0.0.2 -> 400000001@10.0.0.2\n");
    cr_assert_str_eq(pct_admin("punch-requests 1"), "2026-07-26T10:00:00Z 127.0.0.2 -> 400000002@10.0.0.3\n");
    cr_assert_str_eq(pct_admin("pr 5"), "");
    cr_assert_str_eq(pct_admin("pr x 0"), pct_admin("pr 0 10"), "bad numbers fall back to 0 and 10");
    /* after 60 s the same pair is logged again */
    fc_advance(fc, 60000);
    rdv_conn_id a2 = pct_open("127.0.0.2:50009");
    fc_conn_msg(fc, a2, pct_phr(B_ID, 1, KEYS.licence));
    cr_assert_eq(P->log.n, 3);
    cr_assert_str_eq(pct_admin("pr -"), "");
    cr_assert_str_eq(pct_admin("pr"), "");
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.punch_log"), 0);
}

Test(punch, punch_log_is_bounded_and_drops_the_oldest)
{
    pct_teardown();
    pct_setup_conf("punch_log_max=3\n");
    char ids[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(ids[i], sizeof ids[i], "50000000%d", i);
        pct_peer(ids[i], B_ADDR, true, (uint8_t)i);
        fc_conn_msg(fc, pct_open(A_ADDR), pct_phr(ids[i], 1, KEYS.licence));
    }
    cr_assert_eq(P->log.n, 3);
    const char *out = pct_admin("pr");
    cr_assert_null(strstr(out, "500000001@"));
    cr_assert_not_null(strstr(out, "500000002@"));
    cr_assert_not_null(strstr(out, "500000004@"));
    /* shrinking by reload keeps the newest */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), P, "punch_log_max=1\n"), 0);
    cr_assert_eq(P->log.n, 1);
    cr_assert_not_null(strstr(pct_admin("pr"), "500000004@"));
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), P, "punch_log_max=0\n"), 0);
    fc_conn_msg(fc, pct_open("10.0.0.1:50100"), pct_phr(ids[0], 1, KEYS.licence));
    cr_assert_str_eq(pct_admin("pr"), "");
}

Test(punch, dedupe_only_looks_at_the_30_newest)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    fc_conn_msg(fc, pct_open("10.1.0.1:1"), pct_phr(B_ID, 1, KEYS.licence));
    char ip[32];
    for (int i = 0; i < 30; i++) { /* 30 other requesters push it out of the window */
        snprintf(ip, sizeof ip, "10.2.0.%d:1", i + 1);
        fc_conn_msg(fc, pct_open(ip), pct_phr(B_ID, 1, KEYS.licence));
    }
    fc_conn_msg(fc, pct_open("10.1.0.1:2"), pct_phr(B_ID, 1, KEYS.licence));
    cr_assert_eq(P->log.n, 32);
}

/* ---- bad input ---- */
Test(punch, bad_input_never_crashes)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open(A_ADDR);
    /* a very long id, an id with odd bytes, a huge licence key */
    char big[5000];
    memset(big, '7', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cr_assert_eq(fc_conn_msg(fc, a, pct_phr(big, 1, KEYS.licence)), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 00");
    rdv_conn_id a2 = pct_open("10.0.0.1:50002");
    cr_assert_eq(fc_conn_msg(fc, a2, pct_phr(B_ID, 1, big)), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a2, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 02 18 03");
    rdv_conn_id a3 = pct_open("10.0.0.1:50003");
    cr_assert_eq(fc_conn_msg(fc, a3, pct_phr("\xc3\xa9\xe2\x82\xac", 1, KEYS.licence)), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a3, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 00");
    /* an empty PunchHoleRequest (all defaults) */
    rdv_conn_id a4 = pct_open("10.0.0.1:50004");
    const uint8_t empty_phr[] = { 0x42, 0x00 };
    cr_assert_eq(fc_conn_raw(fc, a4, empty_phr, sizeof empty_phr), RDV_OK);
    pct_expect_bytes(pct_expect_conn(a4, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE), "5a 02 18 03");
}
