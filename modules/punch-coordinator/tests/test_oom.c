/* test_oom.c — the pending table (rendezvous.md §7) when memory runs out:
 * uthash's allocations fail through the module's test hook (pc.h). A park
 * that cannot be made is dropped and counted, nothing exits, the tables
 * stay consistent and later parks work. On the code before the non-fatal
 * mode each of these exited the process. */
#include "pc_test.h"

static void oom_teardown(void)
{
    pc_test_hash_fail_from(0);
    pct_teardown();
}

TestSuite(oom, .init = pct_setup, .fini = oom_teardown);

#define B_ID "400000001"
#define B_ADDR "10.0.0.2:40000"

/* Both tables agree with the age list and the gauges: every record is
 * found by its connection, every parked one by its key. */
static void check_tables(void)
{
    pc_pending *t = &P->pending;
    size_t n = 0, parked = 0;
    for (pc_rec *r = t->oldest; r; r = r->next) {
        n++;
        cr_assert_eq(r->next ? r->next->prev : t->newest, r, "age list links");
        pc_rec *f = NULL;
        HASH_FIND(hh_conn, t->by_conn, &r->conn, sizeof r->conn, f);
        cr_assert_eq(f, r, "record of conn %llu not found by conn", (unsigned long long)r->conn);
        if (r->parked) {
            parked++;
            f = NULL;
            HASH_FIND(hh_key, t->by_key, &r->key, sizeof r->key, f);
            cr_assert_eq(f, r, "parked record of conn %llu not found by key", (unsigned long long)r->conn);
        }
    }
    cr_assert_eq(n, t->nrec);
    cr_assert_eq(parked, t->nparked);
    cr_assert_eq(HASH_CNT(hh_conn, t->by_conn), n);
    cr_assert_eq(HASH_CNT(hh_key, t->by_key), parked);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending_tracked"), n);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), parked);
}

/* B answers for the requester at addr "ip:port". */
static void answer_for(const char *addr)
{
    rdv_addr a = fc_addr(addr);
    uint8_t sa[RDV_ADDR_MANGLED_MAX];
    size_t n = rdv_addr_mangle(&a, 42, sa);
    fc_conn_msg(fc, pct_open("10.0.0.2:40777"), pct_phs(sa, n, B_ID, "", 1, "1.4.9"));
}

/* The first park makes both tables: a header and buckets each, 4
 * allocations. Failing any one drops the park (rolling back the table
 * already made); the requester's target is still told (§6.3 goes on), its
 * answer finds no one. */
Test(oom, first_park_dropped_when_a_table_cannot_be_made)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    char from[32];
    for (unsigned long nth = 1; nth <= 4; nth++) {
        pc_test_hash_fail_from(nth);
        snprintf(from, sizeof from, "10.0.0.1:%lu", 50000 + nth);
        rdv_conn_id a = pct_park(from, B_ID, NULL, NULL);
        cr_assert_eq(fc_counter(fc, "punch-coordinator.oom"), nth, "allocation %lu failing", nth);
        cr_assert_not(pc_pending_taken(P, a));
        cr_assert_null(P->pending.by_conn);
        cr_assert_null(P->pending.by_key);
        check_tables();
        answer_for(from);
        pct_expect_nothing();
    }
    cr_assert_eq(fc_counter(fc, "punch-coordinator.undeliverable"), 4);
    cr_assert(fc_log_contains(fc, "out of memory: punch request from 10.0.0.1:50001 not parked"));
    pc_test_hash_fail_from(5);
    unsigned long allocs = pc_test_hash_allocs();
    rdv_conn_id a = pct_park("10.0.0.1:50001", B_ID, NULL, NULL);
    cr_assert_eq(pc_test_hash_allocs(), allocs + 4);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.oom"), 4);
    check_tables();
    answer_for("10.0.0.1:50001");
    pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
}

/* Parks from new addresses until one would grow a table: that one is
 * dropped, the others stay parked and answerable, and once memory is back
 * the dropped connection parks on its next request. */
Test(oom, park_that_would_grow_a_table_is_dropped_the_rest_kept)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    pct_park("10.9.9.9:1", B_ID, NULL, NULL); /* the tables exist */
    pc_test_hash_fail_from(1);
    unsigned long allocs = pc_test_hash_allocs();
    char from[32];
    rdv_conn_id a = 0, a1 = 0;
    int n;
    for (n = 1; n <= 3000; n++) {
        snprintf(from, sizeof from, "10.1.%d.%d:%d", n / 250, n % 250 + 1, 20000 + n);
        a = pct_park(from, B_ID, NULL, NULL);
        if (n == 1)
            a1 = a;
        if (fc_counter(fc, "punch-coordinator.oom"))
            break;
    }
    cr_assert_eq(fc_counter(fc, "punch-coordinator.oom"), 1, "no park reached an expansion in 3000");
    cr_assert_gt(n, 10);
    cr_assert_eq(pc_test_hash_allocs(), allocs + 1, "one expansion was attempted");
    cr_assert_not(pc_pending_taken(P, a));
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), (uint64_t)n);
    check_tables();
    answer_for(from);
    pct_expect_nothing();
    answer_for("10.1.0.2:20001"); /* the first one of the loop */
    pct_expect_conn(a1, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    check_tables();
    pc_test_hash_fail_from(0);
    fc_conn_msg(fc, a, pct_phr(B_ID, 1, KEYS.licence));
    fc_clear_sent(fc);
    cr_assert(pc_pending_taken(P, a));
    check_tables();
    answer_for(from);
    pct_expect_conn(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
}

/* §7.2 replacement (WebSocket clients behind one proxy share IP and port
 * 0): the newer parking goes in before the older is taken out, so it needs
 * no allocation here. The old order (take out, then add) freed the one-key
 * table and had to make it again. */
Test(oom, replacing_a_parking_needs_no_allocation)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    rdv_addr proxied = fc_addr("203.0.113.5:0");
    rdv_conn_id w1 = fc_conn_open(fc, "ws", RDV_TR_WS, &proxied);
    rdv_conn_id w2 = fc_conn_open(fc, "ws", RDV_TR_WS, &proxied);
    fc_conn_msg(fc, w1, pct_phr(B_ID, 1, KEYS.licence));
    pc_test_hash_fail_from(1);
    unsigned long allocs = pc_test_hash_allocs();
    fc_conn_msg(fc, w2, pct_phr(B_ID, 1, KEYS.licence));
    fc_clear_sent(fc);
    cr_assert_eq(pc_test_hash_allocs(), allocs);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.oom"), 0);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.pending_replaced"), 1);
    check_tables();
    answer_for("203.0.113.5:0");
    pct_expect_conn(w2, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    pct_expect_nothing();
    cr_assert(pc_pending_taken(P, w1));
}

/* A replacement that cannot be added (a table would have to grow) is
 * dropped and the older requester under that key stays parked. */
Test(oom, replacement_that_cannot_be_added_keeps_the_older_parked)
{
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    enum { N = 60 };
    rdv_conn_id first[N + 1];
    char from[32];
    for (int i = 1; i <= N; i++) {
        snprintf(from, sizeof from, "10.2.0.%d:30000", i);
        first[i] = pct_park(from, B_ID, NULL, NULL);
    }
    pc_test_hash_fail_from(1);
    int i = 0, round;
    rdv_conn_id a = 0;
    for (round = 0; round < 50 && !fc_counter(fc, "punch-coordinator.oom"); round++)
        for (i = 1; i <= N; i++) {
            snprintf(from, sizeof from, "10.2.0.%d:30000", i);
            a = pct_park(from, B_ID, NULL, NULL);
            if (fc_counter(fc, "punch-coordinator.oom"))
                break;
            first[i] = a; /* it replaced the one before */
        }
    cr_assert_eq(fc_counter(fc, "punch-coordinator.oom"), 1, "no replacement needed an allocation");
    cr_assert_not(pc_pending_taken(P, a));
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.pending"), N);
    check_tables();
    answer_for(from);
    pct_expect_conn(first[i], HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    pct_expect_nothing();
    check_tables();
}
