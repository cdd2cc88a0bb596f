/* test_relay_bw.c — bandwidth control (relay.md §6): units and stored
 * forms, token buckets, rates measured on the fake clock, downgrade, the
 * black/blocklist during a relay (§7) and live console changes (§6.4). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay_test.h"

TestSuite(bw, .init = rt_setup, .fini = rt_teardown);

Test(bw, units_and_stored_forms)
{
    cr_assert_eq(relay_mbps_to_bps(128), 134217728u);
    cr_assert_eq(relay_mbps_to_bps(0.1), 104857u, "truncate(v x 2^20)");
    cr_assert_eq(R->bw.total_bps, 1024u << 20);
    cr_assert_eq(R->bw.single_bps, 128u << 20);
    cr_assert_eq(R->bw.limit_bps, 32u << 20);
    cr_assert_eq(R->bw.dt_hundredths, 66);
    cr_assert_eq(R->bw.start_check_ms, 1800000);
    cr_assert_eq(rt_reload_module("downgrade_threshold=0.29\n"), 0);
    cr_assert_eq(R->bw.dt_hundredths, 28, "0.29 is stored as 28 (relay.md §6.1)");
}

Test(bw, default_threshold_is_88583_bit_per_ms)
{
    rt_conn a, b;
    rt_pair(&a, &b, "t");
    cr_assert_eq(R->pairs->thresh_bits_per_ms, 88583);
}

Test(bw, bucket_capacity_refill_and_deficit)
{
    relay_bucket b;
    relay_bucket_init(&b, 8000, 1000); /* 8000 bit/s: capacity 800 bits */
    cr_assert_eq(b.level, 800 * 1000);
    b.level -= 2000 * 1000; /* a consumption may drive it negative */
    relay_bucket_refill(&b, 1100);
    cr_assert_eq(b.level, -400 * 1000);
    relay_bucket_refill(&b, 1101); /* 8 bits per ms, exactly, no rounding loss */
    cr_assert_eq(b.level, -392 * 1000);
    relay_bucket_refill(&b, 5000);
    cr_assert_eq(b.level, 800 * 1000, "capped at 0.1 s of the rate");
    relay_bucket_set_rate(&b, 1000, 5000);
    cr_assert_eq(b.level, 100 * 1000, "a lower rate lowers the cap");
}

/* Saturate A->B for `secs` simulated seconds; returns bytes B received. */
static size_t saturate(rt_conn *a, rt_conn *b, int secs, bool both)
{
    static uint8_t chunk[65536], sink[262144];
    size_t got = 0;
    for (int ms = 0; ms < secs * 1000; ms += 10) {
        for (int k = 0; k < 4; k++) {
            send(a->cli, chunk, sizeof chunk, MSG_DONTWAIT);
            if (both)
                send(b->cli, chunk, sizeof chunk, MSG_DONTWAIT);
            rt_pump(1);
            ssize_t n;
            while ((n = recv(b->cli, sink, sizeof sink, MSG_DONTWAIT)) > 0)
                got += (size_t)n;
            if (both)
                while ((n = recv(a->cli, sink, sizeof sink, MSG_DONTWAIT)) > 0)
                    got += (size_t)n;
        }
        fc_advance(fc, 10);
    }
    return got;
}

static double mbps(size_t bytes, int secs) { return (double)bytes * 8 / 1048576.0 / secs; }

Test(bw, L63_single_bandwidth_limits_a_pair)
{
    cr_assert_eq(rt_reload_module("single_bandwidth=8\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "sb");
    saturate(&a, &b, 1, false); /* warm-up */
    double r = mbps(saturate(&a, &b, 10, false), 10);
    cr_assert(r <= 8.8 && r >= 7.2, "rate %.2f Mb/s for an 8 Mb/s pair", r);
    cr_assert_gt(rt_counter("throttle_events"), 0);
}

Test(bw, L64_both_directions_share_the_pair_bucket)
{
    cr_assert_eq(rt_reload_module("single_bandwidth=8\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "sb2");
    saturate(&a, &b, 1, true);
    double r = mbps(saturate(&a, &b, 10, true), 10);
    cr_assert(r <= 8.8 && r >= 7.2, "sum of both directions %.2f Mb/s", r);
}

Test(bw, L65_total_bandwidth_limits_all_pairs)
{
    cr_assert_eq(rt_reload_module("total_bandwidth=8\nsingle_bandwidth=100\n"), 0);
    rt_conn a[3], b[3];
    for (int i = 0; i < 3; i++) {
        char u[8];
        snprintf(u, sizeof u, "tb%d", i);
        rt_pair(&a[i], &b[i], u);
    }
    static uint8_t chunk[65536], sink[262144];
    size_t got = 0;
    for (int ms = 0; ms < 11000; ms += 10) {
        for (int k = 0; k < 4; k++) {
            for (int i = 0; i < 3; i++)
                send(a[i].cli, chunk, sizeof chunk, MSG_DONTWAIT);
            rt_pump(1);
            for (int i = 0; i < 3; i++) {
                ssize_t n;
                while ((n = recv(b[i].cli, sink, sizeof sink, MSG_DONTWAIT)) > 0)
                    got += ms >= 1000 ? (size_t)n : 0;
            }
        }
        fc_advance(fc, 10);
    }
    double r = mbps(got, 10);
    cr_assert(r <= 8.8 && r >= 6.0, "aggregate %.2f Mb/s under an 8 Mb/s total", r);
}

Test(bw, L66_blacklisted_pair_runs_at_limit_speed)
{
    rt_write_file("blacklist.txt", "10.0.0.2\n");
    cr_assert_eq(rt_reload_module("limit_speed=2\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "bl");
    cr_assert(R->pairs->blacklisted);
    saturate(&a, &b, 1, false);
    double r = mbps(saturate(&a, &b, 10, false), 10);
    cr_assert(r <= 2.2 && r >= 1.5, "blacklisted pair at %.2f Mb/s", r);
}

Test(bw, L67_L68_downgrade_after_start_check)
{
    cr_assert_eq(rt_reload_module("single_bandwidth=16\ndowngrade_start_check=2\ndowngrade_threshold=0.5\n"
                                  "limit_speed=2\n"), 0);
    rt_conn a, b, c, d;
    rt_pair(&a, &b, "busy");
    relay_pair *busy = R->pairs;
    rt_pair(&c, &d, "calm");
    relay_pair *calm = R->pairs;
    /* The calm pair sends 1 MB/s (8 Mb/s = half of 16: not above it). */
    static uint8_t chunk[65536], sink[262144];
    for (int ms = 0; ms < 4000; ms += 10) {
        send(a.cli, chunk, sizeof chunk, MSG_DONTWAIT);
        if (ms % 100 == 0)
            send(c.cli, chunk, 10000, MSG_DONTWAIT);
        rt_pump(2);
        while (recv(b.cli, sink, sizeof sink, MSG_DONTWAIT) > 0 || recv(d.cli, sink, sizeof sink, MSG_DONTWAIT) > 0)
            ;
        fc_advance(fc, 10);
    }
    cr_assert(busy->downgraded, "a saturating pair is downgraded after ~3 s");
    cr_assert_eq(busy->bucket.rate, 2u << 20);
    cr_assert_not(calm->downgraded, "a pair averaging under the threshold is not (L68)");
    cr_assert_eq(rt_counter("downgraded"), 1);
    /* Permanent: after a pause it still runs at the limit. */
    fc_advance(fc, 5000);
    saturate(&a, &b, 1, false);
    double r = mbps(saturate(&a, &b, 5, false), 5);
    cr_assert(r <= 2.2, "downgraded pair at %.2f Mb/s", r);
}

Test(bw, L70_tb_rerates_running_pairs)
{
    rt_conn a, b;
    rt_pair(&a, &b, "tb");
    char out[64];
    cr_assert_eq(fc_admin(fc, "tb 4", out, sizeof out), 0);
    cr_assert_str_eq(out, "");
    saturate(&a, &b, 1, false);
    double r = mbps(saturate(&a, &b, 5, false), 5);
    cr_assert(r <= 4.4 && r >= 3.0, "running pair at %.2f Mb/s after tb 4", r);
}

Test(bw, L71_sb_applies_to_new_pairs_only)
{
    rt_conn a, b;
    rt_pair(&a, &b, "old");
    char out[64];
    fc_admin(fc, "sb 2", out, sizeof out);
    rt_conn c, d;
    rt_pair(&c, &d, "new");
    cr_assert_eq(R->pairs->rate_single, 2u << 20, "new pair");
    cr_assert_eq(R->pairs->next->rate_single, 128u << 20, "running pair unaffected");
}

Test(bw, L34_blocklisting_a_running_pair_ends_it_at_the_next_tick)
{
    rt_conn a, b;
    rt_pair(&a, &b, "blk");
    char out[64];
    fc_admin(fc, "Ba 10.0.0.2", out, sizeof out);
    cr_assert_eq(rt_gauge("pairs"), 1);
    fc_advance(fc, 1000);
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert(rt_closed(a.cli) && rt_closed(b.cli));
    cr_assert_eq(rt_counter("closed_blocked"), 1);
}

Test(bw, early_side_is_checked_against_the_lists_too)
{
    rt_conn a, b;
    rt_pair(&a, &b, "early");
    char out[64];
    fc_admin(fc, "ba 10.0.0.1", out, sizeof out);
    fc_advance(fc, 1000);
    cr_assert(R->pairs->blacklisted, "the early side's address counts as well (relay.md §7 MAY)");
    cr_assert_eq(R->pairs->bucket.rate, 32u << 20);
}

Test(bw, throttled_pair_stops_reading_and_resumes_on_refill)
{
    cr_assert_eq(rt_reload_module("single_bandwidth=1\n"), 0); /* capacity 13107 bytes */
    rt_conn a, b;
    rt_pair(&a, &b, "thr");
    uint8_t chunk[65536] = { 0 };
    send(a.cli, chunk, sizeof chunk, MSG_DONTWAIT);
    rt_pump(3);
    cr_assert_eq(rt_gauge("throttled_pairs"), 1);
    cr_assert_eq(R->pairs->u.raw.ev[0] & RDV_IO_READ, 0, "no reading while throttled");
    uint8_t sink[65536];
    ssize_t first = recv(b.cli, sink, sizeof sink, MSG_DONTWAIT);
    cr_assert(first > 0 && first <= 13107, "one bucket's worth (%zd)", first);
    fc_advance(fc, 100); /* 0.1 s refills the bucket */
    rt_pump(3);
    ssize_t more = recv(b.cli, sink, sizeof sink, MSG_DONTWAIT);
    cr_assert_gt(more, 0, "resumed after the refill");
}
