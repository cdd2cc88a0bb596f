/* test_register.c — RegisterPeer (rendezvous.md §6.1), the online window
 * (§2.1) and the peer hooks. R-numbers: rendezvous-checklist.md. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fake_services.h"

TestSuite(register_peer, .init = rt_setup, .fini = rt_teardown);

#define OK HBB__REGISTER_PK_RESPONSE__RESULT__OK

Test(register_peer, r30_unknown_id_gets_request_pk_and_nothing_else)
{
    cr_assert_eq(rt_reg_peer("123456789", 0, "127.0.0.1:40000"), 1);
    cr_assert_eq(fc_sent_count(rt.fc), 0, "no ConfigUpdate with serial 0");
    cr_assert_eq(rt_lookup("123456789", RDV_LOOKUP_MEMORY, NULL), -ENOENT, "nothing is stored");
    cr_assert_eq(rt_counter("request_pk"), 1);
    cr_assert_eq(rt_gauge("peers"), 0);
}

Test(register_peer, r30_reply_bytes_are_3a_02_10_01)
{
    Hbb__RegisterPeer rp = HBB__REGISTER_PEER__INIT;
    rp.id = "abcdef";
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER;
    m.register_peer = &rp;
    rdv_addr a = fc_addr("127.0.0.1:40000");
    fc_udp(rt.fc, "main", &a, &m);
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_not_null(s);
    const uint8_t want[] = { 0x3a, 0x02, 0x10, 0x01 };
    cr_assert_eq(s->len, sizeof want);
    cr_assert_arr_eq(s->raw, want, sizeof want);
}

Test(register_peer, r31_empty_id_is_ignored)
{
    cr_assert_eq(rt_reg_peer("", 0, "127.0.0.1:40000"), -1);
    cr_assert_eq(rt_counter("register_peer_empty"), 1);
    cr_assert_eq(rt_counter("request_pk"), 0);
}

Test(register_peer, r34_register_then_heartbeat_is_online)
{
    cr_assert_eq(rt_reg_pk("200000001", "u1", "P1", "127.0.0.1:40000"), OK);
    cr_assert_eq(rt_reg_peer("200000001", 0, "127.0.0.1:40000"), 0);
    cr_assert(rt_online("200000001"));
    const uint8_t want[] = { 0x3a, 0x00 };
    Hbb__RegisterPeer rp = HBB__REGISTER_PEER__INIT;
    rp.id = "200000001";
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER;
    m.register_peer = &rp;
    rdv_addr a = fc_addr("127.0.0.1:40000");
    fc_udp(rt.fc, "main", &a, &m);
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_eq(s->len, sizeof want, "request_pk false is 3a 00");
    cr_assert_arr_eq(s->raw, want, sizeof want);
    cr_assert_eq(rt_counter("registrations"), 2);
}

Test(register_peer, heartbeat_updates_socket_addr_and_time)
{
    rt_reg("200000010", "u", "P", "10.0.0.1:1000");
    fc_advance(rt.fc, 10000);
    cr_assert_eq(rt_reg_peer("200000010", 0, "10.0.0.1:2000"), 0, "same IP, new port: no IP change");
    rdv_peer_info pi;
    cr_assert_eq(rt_lookup("200000010", RDV_LOOKUP_MEMORY, &pi), 0);
    rdv_addr want = fc_addr("10.0.0.1:2000");
    cr_assert(rdv_addr_equal(&pi.addr, &want));
    cr_assert_eq(pi.last_reg_ms, fc_now_ms(rt.fc));
    cr_assert_str_eq(pi.ip, "10.0.0.1");
    cr_assert_eq(pi.pk_len, 1);
    cr_assert_eq(pi.pk[0], 'P');
    cr_assert_str_eq(pi.id, "200000010");
    cr_assert_eq(pi.conn, 0);
}

Test(register_peer, r38_same_pk_new_ip_needs_register_pk_first)
{
    rt_reg("200000003", "u1", "P1", "10.0.0.1:1000");
    cr_assert_eq(rt_reg_peer("200000003", 0, "10.0.0.2:1000"), 1, "IP change -> request_pk");
    rdv_peer_info pi;
    rt_lookup("200000003", RDV_LOOKUP_MEMORY, &pi);
    rdv_addr old = fc_addr("10.0.0.1:1000");
    cr_assert(rdv_addr_equal(&pi.addr, &old), "PunchHole still goes to N1");
    cr_assert(fc_log_contains(rt.fc, "IP change of 200000003 from 10.0.0.1:1000 to 10.0.0.2:1000"));
    cr_assert_eq(rt_reg_pk("200000003", "u1", "P1", "10.0.0.2:1000"), OK);
    rt_lookup("200000003", RDV_LOOKUP_MEMORY, &pi);
    rdv_addr now = fc_addr("10.0.0.2:1000");
    cr_assert(rdv_addr_equal(&pi.addr, &now), "next PunchHole goes to N2");
    cr_assert_eq(rt_reg_peer("200000003", 0, "10.0.0.2:1000"), 0);
}

Test(register_peer, ip_change_not_logged_when_the_limiter_is_saturated)
{
    rt_reg("200000011", "u1", "P1", "10.0.0.1:1000");
    /* two more accepted RegisterPk: count 3 = pk_burst */
    cr_assert_eq(rt_reg_pk("200000011", "u1", "P1", "10.0.0.1:1000"), OK);
    cr_assert_eq(rt_reg_pk("200000011", "u1", "P1", "10.0.0.1:1000"), OK);
    fc_log_clear(rt.fc);
    cr_assert_eq(rt_reg_peer("200000011", 0, "10.0.0.9:1000"), 1);
    cr_assert_not(fc_log_contains(rt.fc, "IP change of"));
}

Test(register_peer, r39_loopback_source_is_never_an_ip_change)
{
    rt_reg("200000004", "u1", "P1", "127.0.0.1:1000");
    cr_assert_eq(rt_reg_peer("200000004", 0, "127.0.0.2:3000"), 0);
    rdv_peer_info pi;
    rt_lookup("200000004", RDV_LOOKUP_MEMORY, &pi);
    rdv_addr l2 = fc_addr("127.0.0.2:3000");
    cr_assert(rdv_addr_equal(&pi.addr, &l2), "the next PunchHole goes to the L2 socket");
    /* after normalisation: ::ffff:127.0.0.3 is loopback too (upstream missed it) */
    cr_assert_eq(rt_reg_peer("200000004", 0, "[::ffff:127.0.0.3]:3000"), 0);
    cr_assert_eq(rt_reg_peer("200000004", 0, "[::1]:3000"), 0);
}

Test(register_peer, from_a_non_loopback_ip_to_loopback_keeps_online)
{
    rt_reg("200000012", "u1", "P1", "10.0.0.1:1000");
    cr_assert_eq(rt_reg_peer("200000012", 0, "127.0.0.1:1000"), 0);
}

Test(register_peer, r47_self_test_id_always_gets_request_pk)
{
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(rt_reg_peer("(:test_hbbs:)", 0, "[::1]:5000"), 1);
        cr_assert_eq(rt_reg_peer("(:test_hbbs:)", 0, "127.0.0.1:5000"), 1);
    }
    cr_assert_eq(rt_lookup("(:test_hbbs:)", RDV_LOOKUP_STORED, NULL), -ENOENT);
}

Test(register_peer, other_listener_is_declined)
{
    Hbb__RegisterPeer rp = HBB__REGISTER_PEER__INIT;
    rp.id = "abcdef";
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER;
    m.register_peer = &rp;
    rdv_addr a = fc_addr("127.0.0.1:1");
    cr_assert_eq(fc_udp(rt.fc, "nat", &a, &m), RDV_DECLINED);
    cr_assert_eq(fc_sent_count(rt.fc), 0);
}

Test(register_peer, register_peer_over_tcp_is_not_ours)
{
    Hbb__RegisterPeer rp = HBB__REGISTER_PEER__INIT;
    rp.id = "abcdef";
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER;
    m.register_peer = &rp;
    rdv_addr a = fc_addr("127.0.0.1:1");
    rdv_conn_id c = fc_conn_open(rt.fc, "main", RDV_TR_TCP, &a);
    cr_assert_eq(fc_conn_msg(rt.fc, c, &m), -ENOENT, "R151: no TCP handler, the core closes");
    cr_assert_not(fc_conn_alive(rt.fc, c));
    cr_assert_eq(fc_sent_count(rt.fc), 0);
}

/* ------------------------------------------------------------------ online window (§2.1) */
Test(register_peer, r43_online_window_is_30s)
{
    rt_reg("200000020", "u", "P", "10.0.0.1:1000");
    fc_advance(rt.fc, 29999);
    cr_assert(rt_online("200000020"), "online 29.999 s after");
    cr_assert_eq(rt.api->online_count(rt.self), 1);
    fc_advance(rt.fc, 1);
    cr_assert_not(rt_online("200000020"), "offline at 30 s");
    cr_assert_eq(rt.api->online_count(rt.self), 0);
    cr_assert_eq(rt_gauge("online"), 0);
    /* still known in memory: RequestRelay (R97) and RegisterPeer see it */
    rdv_peer_info pi;
    cr_assert_eq(rt_lookup("200000020", RDV_LOOKUP_MEMORY, &pi), 0);
    cr_assert_eq(rt_reg_peer("200000020", 0, "10.0.0.1:1000"), 0, "comes back online without RegisterPk");
    cr_assert(rt_online("200000020"));
}

Test(register_peer, online_window_uses_64_bit_milliseconds)
{
    rt_reg("200000021", "u", "P", "10.0.0.1:1000");
    /* upstream <= 1.1.16 cast to 32 bits: 2^32 ms later looked online */
    fc_advance(rt.fc, (1ull << 32) + 1000);
    cr_assert_not(rt_online("200000021"));
    rdv_peer_info pi;
    rt_lookup("200000021", RDV_LOOKUP_MEMORY, &pi);
    cr_assert_not(pi.online);
}

Test(register_peer, online_window_is_a_setting)
{
    rt_teardown();
    rt_setup_conf("online_ms = 5000\n");
    rt_reg("200000022", "u", "P", "10.0.0.1:1000");
    fc_advance(rt.fc, 4999);
    cr_assert(rt_online("200000022"));
    fc_advance(rt.fc, 1);
    cr_assert_not(rt_online("200000022"));
}

Test(register_peer, hooks_fire_on_transitions_only)
{
    rt_reg("200000030", "u", "P", "10.0.0.1:1000");
    cr_assert_eq(rt.online_hooks, 1);
    cr_assert_str_eq(rt.last_hook_id, "200000030");
    rdv_addr a = fc_addr("10.0.0.1:1000");
    cr_assert(rdv_addr_equal(&rt.last_hook_addr, &a));
    fc_advance(rt.fc, 15000);
    cr_assert_eq(rt_reg_peer("200000030", 0, "10.0.0.1:1000"), 0);
    cr_assert_eq(rt.online_hooks, 1, "a refresh is not a transition");
    /* the sweep timer expires it with no other traffic */
    fc_advance(rt.fc, 31000);
    cr_assert_eq(rt.offline_hooks, 1);
    cr_assert_eq(rt_counter("went_offline"), 1);
    cr_assert_eq(rt_reg_peer("200000030", 0, "10.0.0.1:1000"), 0);
    cr_assert_eq(rt.online_hooks, 2);
}

Test(register_peer, expiry_follows_the_latest_registration_of_each_peer)
{
    rt_reg("300000001", "u", "P", "10.0.0.1:1");
    fc_advance(rt.fc, 10000);
    rt_reg("300000002", "u", "P", "10.0.0.2:1");
    fc_advance(rt.fc, 10000);
    cr_assert_eq(rt_reg_peer("300000001", 0, "10.0.0.1:1"), 0); /* A moves behind B */
    fc_advance(rt.fc, 20500);                                    /* t = 40.5 s */
    cr_assert_not(rt_online("300000002"));
    cr_assert(rt_online("300000001"));
    cr_assert_eq(rt.offline_hooks, 1);
    cr_assert_str_eq(rt.last_hook_id, "300000002");
    cr_assert_eq(rt_gauge("online"), 1);
    fc_advance(rt.fc, 10000); /* t = 50.5 s */
    cr_assert_eq(rt.offline_hooks, 2);
    cr_assert_eq(rt_gauge("online"), 0);
}

Test(register_peer, registration_after_an_unswept_expiry_is_a_transition)
{
    rt_teardown();
    rt_setup_conf("sweep_ms = 60000\n");
    rt_reg("300000004", "u", "P", "10.0.0.1:1");
    fc_advance(rt.fc, 31000);
    cr_assert_eq(rt_reg_peer("300000004", 0, "10.0.0.1:1"), 0);
    cr_assert_eq(rt.offline_hooks, 1, "offline first");
    cr_assert_eq(rt.online_hooks, 2, "then online again");
}

Test(register_peer, online_gauge_is_exact_between_sweeps)
{
    rt_teardown();
    rt_setup_conf("sweep_ms = 60000\n");
    rt_reg("300000003", "u", "P", "10.0.0.1:1");
    fc_advance(rt.fc, 30000); /* the timer has not run yet */
    cr_assert_eq(rt_gauge("online"), 0);
    cr_assert_eq(rt.api->online_count(rt.self), 0);
    cr_assert_not(rt_online("300000003"));
    cr_assert_eq(rt.offline_hooks, 0, "reading never fires hooks");
    fc_advance(rt.fc, 30000);
    cr_assert_eq(rt.offline_hooks, 1, "the sweep does");
    cr_assert_eq(rt_gauge("online"), 0);
}

Test(register_peer, many_peers_expire_in_order)
{
    char id[32];
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "40000%04d", i);
        rt_reg(id, "u", "P", "10.0.0.1:1");
        fc_advance(rt.fc, 100);
    }
    cr_assert_eq(rt_gauge("online"), 200);
    /* peer i registered at t0 + i * 100 ms; now t0 + 20 s */
    fc_advance(rt.fc, 19900); /* peer 99 reaches 30 s exactly, peer 100 is 0.1 s short */
    cr_assert_eq(rt_gauge("online"), 100);
    cr_assert_not(rt_online("400000099"));
    cr_assert(rt_online("400000100"));
    cr_assert_eq(rt.offline_hooks, 91, "the last sweep ran at t0 + 39 s");
    fc_advance(rt.fc, 100); /* sweep at t0 + 40 s: peers 0..100 */
    cr_assert_eq(rt.offline_hooks, 101);
    cr_assert_eq(rt_gauge("online"), 99);
}

/* ------------------------------------------------------------------ ConfigUpdate on register (R44) */
Test(register_peer, r44_config_update_follows_when_server_serial_is_higher)
{
    rt_teardown();
    rt_setup_conf("serial = 3\nrendezvous_servers = 127.0.0.1:21116\n");
    cr_assert_eq(rt_reg_peer("abcdef", 0, "127.0.0.1:1000"), 1);
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_not_null(s, "second datagram");
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_CONFIGURE_UPDATE);
    cr_assert_eq(s->msg->configure_update->serial, 3);
    cr_assert_eq(s->msg->configure_update->n_rendezvous_servers, 1);
    cr_assert_str_eq(s->msg->configure_update->rendezvous_servers[0], "127.0.0.1:21116");
    rdv_addr a = fc_addr("127.0.0.1:1000");
    cr_assert(rdv_addr_equal(&s->to, &a));
    cr_assert_eq(rt_reg_peer("abcdef", 3, "127.0.0.1:1000"), 1);
    cr_assert_eq(fc_sent_count(rt.fc), 0, "serial 3 -> only the response");
    cr_assert_eq(rt_reg_peer("abcdef", 4, "127.0.0.1:1000"), 1);
    cr_assert_eq(fc_sent_count(rt.fc), 0);
}

Test(register_peer, config_update_with_negative_client_serial)
{
    cr_assert_eq(rt_reg_peer("abcdef", -1, "127.0.0.1:1000"), 1);
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_not_null(s, "server serial 0 > -1");
    cr_assert_eq(s->msg->configure_update->serial, 0);
    cr_assert_eq(s->msg->configure_update->n_rendezvous_servers, 0);
}
