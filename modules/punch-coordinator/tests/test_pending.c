/* test_pending.c — the pending-request table (rendezvous.md §7): keying
 * caveats of §7.2 reproduced, lifetime of §7.3, bound and timeout. */
#include "pc_test.h"

TestSuite(pending, .init = pct_setup, .fini = pct_teardown);

#define B_ID "400000001"
#define B_ADDR "10.0.0.2:40000"

static void answer(const uint8_t *sa, size_t san)
{
    fc_conn_msg(fc, pct_open("10.0.0.2:40777"), pct_phs(sa, san, B_ID, "", 1, "1.4.9"));
}

Test(pending, one_connection_has_at_most_one_entry)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_open("10.0.0.1:50001");
    fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence));
    fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence));
    fc_clear_sent(fc);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 1);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending_tracked"), 1);
}

Test(pending, a_new_connection_with_the_same_key_replaces_the_old)
{
    /* §7.2: after the old connection ended, or while it is still open
     * (WebSocket clients behind one proxy share IP and port 0). */
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san;
    rdv_addr proxied = fc_addr("203.0.113.5:0");
    rdv_conn_id w1 = fc_conn_open(fc, "ws", RDV_TR_WS, &proxied);
    rdv_conn_id w2 = fc_conn_open(fc, "ws", RDV_TR_WS, &proxied);
    fc_conn_msg(fc, w1, pct_phr(B_ID, 1, KEYS.licence));
    fc_clear_sent(fc);
    fc_conn_msg(fc, w2, pct_phr(B_ID, 1, KEYS.licence));
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    memcpy(sa, s->msg->punch_hole->socket_addr.data, s->msg->punch_hole->socket_addr.len);
    san = s->msg->punch_hole->socket_addr.len;
    pct_expect_addr(s->msg->punch_hole->socket_addr, "203.0.113.5:0");
    cr_assert_eq(fc_counter(fc, "punch-coordinator.pending_replaced"), 1);
    /* B answers both: only the connection that parked last gets one (R137) */
    answer(sa, san);
    answer(sa, san);
    pct_expect_conn(w2, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    pct_expect_nothing();
    /* w1's channel was moved and dropped upstream: it is spent for good */
    cr_assert(pc_pending_taken(P, w1));
    fc_conn_msg(fc, w1, pct_phr("nosuchid", 1, KEYS.licence));
    pct_expect_nothing();
}

Test(pending, closing_a_replaced_connection_keeps_the_newer_entry)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_addr proxied = fc_addr("203.0.113.5:0");
    rdv_conn_id w1 = fc_conn_open(fc, "ws", RDV_TR_WS, &proxied);
    rdv_conn_id w2 = fc_conn_open(fc, "ws", RDV_TR_WS, &proxied);
    fc_conn_msg(fc, w1, pct_phr(B_ID, 1, KEYS.licence));
    fc_conn_msg(fc, w2, pct_phr(B_ID, 1, KEYS.licence));
    const fc_sent *s = NULL;
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san = 0;
    while ((s = fc_next_sent(fc))) {
        memcpy(sa, s->msg->punch_hole->socket_addr.data, s->msg->punch_hole->socket_addr.len);
        san = s->msg->punch_hole->socket_addr.len;
    }
    fc_conn_peer_close(fc, w1);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 1);
    answer(sa, san);
    pct_expect_conn(w2, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
}

Test(pending, reconnect_from_the_same_address_after_close)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san;
    rdv_conn_id a1 = pct_park("10.0.0.1:50001", B_ID, sa, &san);
    fc_conn_peer_close(fc, a1);
    rdv_conn_id a2 = pct_park("10.0.0.1:50001", B_ID, sa, &san);
    answer(sa, san);
    pct_expect_conn(a2, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
}

Test(pending, a_forged_answer_is_delivered_as_upstream_does)
{
    /* §7.2: anyone naming a pending requester's address answers in B's
     * place; rejecting it would break real clients. */
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_conn_id a = pct_park("10.0.0.1:50001", B_ID, NULL, NULL);
    rdv_addr aa = fc_addr("10.0.0.1:50001");
    uint8_t forged[RDV_ADDR_MANGLED_MAX];
    size_t n = rdv_addr_mangle(&aa, 42, forged);
    fc_conn_msg(fc, pct_open("192.0.2.66:1"), pct_phs(forged, n, B_ID, "", 1, "1.4.9"));
    pct_expect_addr(pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE)->msg->punch_hole_response->socket_addr,
                    "192.0.2.66:1");
}

Test(pending, keys_are_ip_and_port)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    uint8_t s1[RDV_ADDR_MANGLED_MAX], s2[RDV_ADDR_MANGLED_MAX];
    size_t n1, n2;
    rdv_conn_id a1 = pct_park("10.0.0.1:50001", B_ID, s1, &n1);
    rdv_conn_id a2 = pct_park("10.0.0.1:50002", B_ID, s2, &n2);
    answer(s2, n2);
    pct_expect_conn(a2, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    answer(s1, n1);
    pct_expect_conn(a1, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    /* IPv6 and IPv4 keys never collide */
    rdv_conn_id a6 = pct_park("[2001:db8::1]:50001", B_ID, s1, &n1);
    cr_assert_eq(n1, 18);
    answer(s1, n1);
    pct_expect_conn(a6, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
}

Test(pending, entries_expire_after_the_timeout)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san;
    rdv_conn_id a = pct_park("10.0.0.1:50001", B_ID, sa, &san);
    fc_advance(fc, 29999);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 1);
    fc_advance(fc, 1);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 0);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending_tracked"), 0);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.pending_expired"), 1);
    answer(sa, san);
    pct_expect_nothing();
    /* the connection is forgotten entirely, so a new request parks again */
    fc_conn_msg(fc, a, pct_phr("nosuchid", 1, KEYS.licence));
    pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
}

Test(pending, expiry_follows_each_entry_age)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    pct_park("10.0.0.1:50001", B_ID, NULL, NULL);
    fc_advance(fc, 10000);
    pct_park("10.0.0.1:50002", B_ID, NULL, NULL);
    fc_advance(fc, 20000);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 1);
    fc_advance(fc, 10000);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 0);
}

Test(pending, answered_records_are_dropped_on_close)
{
    rdv_conn_id a = pct_open("10.0.0.1:50001");
    fc_conn_msg(fc, a, pct_phr("nosuchid", 1, KEYS.licence));
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 0);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending_tracked"), 1);
    fc_conn_drop(fc, a, RDV_CLOSE_IDLE);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending_tracked"), 0);
}

Test(pending, the_table_is_bounded_and_forgets_the_oldest)
{
    pct_teardown();
    pct_setup_conf("pending_max=2\n");
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    uint8_t s1[RDV_ADDR_MANGLED_MAX], s3[RDV_ADDR_MANGLED_MAX];
    size_t n1, n3;
    pct_park("10.0.0.1:50001", B_ID, s1, &n1);
    pct_park("10.0.0.1:50002", B_ID, NULL, NULL);
    rdv_conn_id a3 = pct_park("10.0.0.1:50003", B_ID, s3, &n3);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending_tracked"), 2);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.pending_evicted"), 1);
    cr_assert(fc_log_contains(fc, "pending punch table full (punch-coordinator.pending_max = 2)"));
    answer(s1, n1);
    pct_expect_nothing();
    answer(s3, n3);
    pct_expect_conn(a3, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    /* lowering the bound by reload trims at once */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), P, "pending_max=1\n"), 0);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending_tracked"), 1);
}

Test(pending, deliver_to_a_connection_gone_without_hook_is_counted)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t san;
    rdv_conn_id a = pct_park("10.0.0.1:50001", B_ID, sa, &san);
    /* simulate a connection the core already forgot: send fails */
    fc_conn_drop(fc, a, RDV_CLOSE_ERROR);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 0);
    rdv_addr aa = fc_addr("10.0.0.1:50001");
    pc_pending_park(P, 999999, &aa); /* a conn id that never existed */
    answer(sa, san);
    pct_expect_nothing();
    cr_assert_eq(fc_counter(fc, "punch-coordinator.deliver_fail"), 1);
}

Test(pending, timeout_setting_bounds)
{
    pct_teardown();
    fc = fc_new();
    cr_assert_lt(fc_load(fc, rdv_module_get(), "pending_max=0\n", (void **)&P), 0);
    cr_assert_lt(fc_load(fc, rdv_module_get(), "pending_timeout_ms=10\n", (void **)&P), 0);
    cr_assert_lt(fc_load(fc, rdv_module_get(), "no_such_key=1\n", (void **)&P), 0);
    fc_free(fc);
    fc = NULL;
    pct_setup_conf("pending_timeout_ms=5000\n");
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    pct_park("10.0.0.1:50001", B_ID, NULL, NULL);
    fc_advance(fc, 5000);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), 0);
}

Test(pending, module_needs_its_services)
{
    pct_teardown();
    fc = fc_new();
    void *st;
    cr_assert_eq(fc_load(fc, rdv_module_get(), NULL, &st), -ENOENT);
    cr_assert(fc_log_contains(fc, "needs the"));
    fc_free(fc);
    fc = NULL;
    pct_setup(); /* for the fini */
}
