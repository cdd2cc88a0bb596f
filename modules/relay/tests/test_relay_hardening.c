/* test_relay_hardening.c — limits that keep the relay sound when the
 * operator changes things under it: the blocklist checked as a pair forms
 * (relay.md §7), bucket arithmetic at any rate and console rates bounded
 * like conf.d (§6.1, §6.2, §8), message_queue against the core's write
 * queue bound (§4.6), and list files that cannot be read on a reload (§7). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay_test.h"

TestSuite(hard, .init = rt_setup, .fini = rt_teardown);

static const char *run(const char *line) { return rt_admin(line); }

/* ------------------------------------------------------------------ A: blocklist at pairing (§7) */
/* A waits, then its IP is blocklisted on the console, then B comes with
 * the same uuid: no pair forms, both are closed (and nothing is left for
 * the tick to find a second later). */
static void waiting_side_blocklisted(const char *conf)
{
    if (conf)
        cr_assert_eq(rt_reload_module(conf), 0);
    rt_conn a = rt_open("10.0.0.1:4001");
    cr_assert_eq(rt_request(&a, "wb", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("waiting"), 1);
    run("Ba 10.0.0.1");
    rt_conn b = rt_open("10.0.0.2:4002");
    cr_assert(fc_conn_alive(fc, b.id), "B itself is not listed");
    cr_assert_eq(rt_request(&b, "wb", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 0, "no pair with a blocklisted waiting side");
    cr_assert_eq(rt_gauge("waiting"), 0);
    cr_assert_eq(rt_counter("paired"), 0);
    cr_assert_eq(rt_counter("closed_blocked"), 1);
    cr_assert(rt_closed(a.cli) && rt_closed(b.cli));
    cr_assert(fc_log_contains(fc, "pair 10.0.0.2 / 10.0.0.1 refused: blocklisted"));
}

Test(hard, A_side_blocklisted_while_waiting_gets_no_pair)
{
    waiting_side_blocklisted(NULL);
}

Test(hard, A_side_blocklisted_while_waiting_gets_no_message_mode_pair)
{
    waiting_side_blocklisted("message_mode=true\n");
}

Test(hard, A_late_side_blocklisted_between_accept_and_first_frame)
{
    rt_conn a = rt_open("10.0.0.1:4001");
    cr_assert_eq(rt_request(&a, "lb", NULL), RDV_OK);
    rt_conn b = rt_open("10.0.0.2:4002"); /* accepted: not listed yet */
    cr_assert(fc_conn_alive(fc, b.id));
    run("Ba 10.0.0.2");
    cr_assert_eq(rt_request(&b, "lb", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_gauge("waiting"), 0, "its partner can never come: the waiting side goes too");
    cr_assert_eq(rt_counter("closed_blocked"), 1);
    cr_assert(rt_closed(a.cli) && rt_closed(b.cli));
}

Test(hard, A_side_blocklisted_before_its_first_frame_never_waits)
{
    rt_conn a = rt_open("10.0.0.1:4001");
    run("Ba 10.0.0.1");
    cr_assert_eq(rt_request(&a, "eb", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("waiting"), 0);
    cr_assert_eq(rt_counter("rejected_blocked"), 1);
    cr_assert(rt_closed(a.cli));
    /* Another side with that uuid waits as usual. */
    rt_conn b = rt_open("10.0.0.2:4002");
    cr_assert_eq(rt_request(&b, "eb", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("waiting"), 1);
}

Test(hard, A_unlisted_sides_still_pair_after_Br)
{
    rt_conn a = rt_open("10.0.0.1:4001");
    cr_assert_eq(rt_request(&a, "ok", NULL), RDV_OK);
    run("Ba 10.0.0.1");
    run("Br 10.0.0.1");
    rt_conn b = rt_open("10.0.0.2:4002");
    cr_assert_eq(rt_request(&b, "ok", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 1);
    rt_write_all(a.cli, "ping", 4);
    char buf[8];
    cr_assert_eq(rt_read(b.cli, buf, 4, 1000), 4);
}

/* ------------------------------------------------------------------ B: bucket arithmetic, console rates */
Test(hard, B_refill_saturates_at_any_rate)
{
    const uint64_t rates[] = { relay_mbps_to_bps(999999999), relay_mbps_to_bps(1e12), relay_mbps_to_bps(1e7),
                               (uint64_t)INT64_MAX, UINT64_MAX };
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
        relay_bucket b;
        relay_bucket_init(&b, rates[i], 1000);
        int64_t cap = b.level;
        cr_assert_gt(cap, 0, "rate %llu: a full bucket is positive", (unsigned long long)rates[i]);
        b.level = 0;
        relay_bucket_refill(&b, 1000 + 10000); /* 10 s idle */
        cr_assert_eq(b.level, cap, "rate %llu: refilled to the cap, got %lld", (unsigned long long)rates[i],
                     (long long)b.level);
        b.level = INT64_MIN; /* the deepest deficit: up by rate x 10 s, at most to the cap */
        relay_bucket_refill(&b, 1000 + 20000);
        __int128 want = (__int128)INT64_MIN + (__int128)rates[i] * 10000;
        if (want > cap)
            want = cap;
        cr_assert_eq(b.level, (int64_t)want, "rate %llu: from the bottom, got %lld", (unsigned long long)rates[i],
                     (long long)b.level);
    }
    relay_bucket b;
    relay_bucket_init(&b, 8000, 1000);
    b.level = INT64_MIN;
    relay_bucket_refill(&b, 1001);
    cr_assert_eq(b.level, INT64_MIN + 8000, "exact from the bottom too: a refill never wraps");
}

Test(hard, B_console_rates_are_bounded_like_the_settings)
{
    const char *why = run("tb 999999999");
    cr_assert(strstr(why, "out of range") && strstr(why, "relay.total_bandwidth") && strstr(why, "10000000"),
              "answer: %s", why);
    cr_assert_str_eq(run("tb"), "1024Mb/s\n", "unchanged");
    cr_assert(strstr(run("tb 1e12"), "out of range"));
    cr_assert(strstr(run("total-bandwidth 0.0001"), "0.001"), "below the bound too (a rate that rounds to 0 stalls)");
    cr_assert_str_eq(run("tb"), "1024Mb/s\n");
    /* Not a positive finite number: ignored silently, as upstream (§8). */
    const char *bad[] = { "tb inf", "tb nan", "tb -1", "tb 0", "tb abc", "tb 1e400", "tb 12abc" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_str_eq(run(bad[i]), "", "%s", bad[i]);
    cr_assert_str_eq(run("tb"), "1024Mb/s\n");
    cr_assert_str_eq(run("tb 10000000"), "", "the bound itself is taken");
    cr_assert_str_eq(run("tb"), "10000000Mb/s\n");
    cr_assert(strstr(run("sb 999999999"), "relay.single_bandwidth"));
    cr_assert_str_eq(run("sb"), "128Mb/s\n");
    cr_assert(strstr(run("limit-speed 1e12"), "relay.limit_speed"));
    cr_assert_str_eq(run("ls"), "32Mb/s\n");
}

/* The audit's scenario: `tb 999999999`, ten idle seconds, then traffic. */
Test(hard, B_huge_tb_then_idle_does_not_stall_pairs)
{
    run("tb 999999999");
    rt_conn a, b;
    rt_pair(&a, &b, "idle");
    fc_advance(fc, 10000);
    cr_assert_gt(R->bw.global.level, 0, "global bucket level %lld", (long long)R->bw.global.level);
    rt_write_all(a.cli, "after ten seconds", 17);
    char buf[32];
    cr_assert_eq(rt_read(b.cli, buf, 17, 1000), 17, "the pair still moves bytes");
    run("tb 10000000"); /* the largest allowed rate, the same idle time */
    fc_advance(fc, 10000);
    relay_bw_allow(R, R->pairs, 1);
    cr_assert_gt(R->bw.global.level, 0);
    rt_write_all(a.cli, "and again", 9);
    cr_assert_eq(rt_read(b.cli, buf, 9, 1000), 9);
}

/* ------------------------------------------------------------------ C: message_queue vs core.write_queue_max */
/* The fake core's write_queue_max is the real default, 4 MiB. */
Test(hard, C_message_queue_up_to_half_the_core_queue_loads)
{
    cr_assert_eq(rt_reload_module("message_queue=2097152\n"), 0);
    cr_assert_eq(R->cfg->message_queue, 2097152);
}

Test(hard, C_message_queue_not_below_write_queue_max_is_refused)
{
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "message_queue=4194304\n"), -EINVAL,
                 "a reload with it is refused");
    cr_assert_eq(R->cfg->message_queue, 1048576, "the old value stays");
    cr_assert(fc_log_contains(fc, "relay.message_queue = 4194304 is not below core.write_queue_max = 4194304"));
    fc_log_clear(fc);
    fc_unload(fc, rdv_module_get(), st);
    R = NULL;
    int e = fc_load(fc, rdv_module_get(), "message_queue=2097153\n", &st);
    cr_assert_lt(e, 0, "refused at start");
    cr_assert(fc_log_contains(fc, "relay.message_queue = 2097153 is not below core.write_queue_max = 4194304"));
    cr_assert(fc_log_contains(fc, "set message_queue to at most 2097152 in the relay group (conf.d/40-relay.conf)"));
    cr_assert(fc_log_contains(fc, "raise write_queue_max in the core group (conf.d/00-core.conf) to at least 4194306"));
    cr_assert_eq(fc_load(fc, rdv_module_get(), NULL, &st), 0); /* for the teardown */
    R = st;
}

/* ------------------------------------------------------------------ D: list files on a reload (§7) */
Test(hard, D_set_load_failure_leaves_the_set_alone)
{
    relay_set s = { .name = "t", .max = 10 };
    size_t dropped = 7;
    cr_assert_eq(relay_set_add(&s, "1.2.3.4", 7), 1);
    cr_assert_eq(relay_set_load(&s, "/nonexistent/blocklist.txt", &dropped), -ENOENT);
    cr_assert_eq(dropped, 0);
    cr_assert(relay_set_has(&s, "1.2.3.4") && s.n == 1, "unchanged on failure");
    rt_write_file("bad.txt", "5.5.5.5\n\xff\n");
    cr_assert_eq(relay_set_load(&s, "bad.txt", &dropped), -EILSEQ);
    cr_assert(relay_set_has(&s, "1.2.3.4") && s.n == 1);
    rt_write_file("good.txt", "6.6.6.6\n7.7.7.7\n");
    cr_assert_eq(relay_set_load(&s, "good.txt", &dropped), 2);
    cr_assert(!relay_set_has(&s, "1.2.3.4") && relay_set_has(&s, "7.7.7.7") && s.n == 2, "replaced on success");
    relay_set_clear(&s);
}

Test(hard, D_reload_keeps_a_blocklist_it_cannot_read)
{
    rt_write_file("blocklist.txt", "10.0.0.7\n");
    rt_write_file("blacklist.txt", "10.0.0.8\n");
    cr_assert_eq(rt_reload_module(NULL), 0);
    cr_assert_eq(rt_gauge("blocklist_entries"), 1);

    cr_assert_eq(unlink("blocklist.txt"), 0); /* SIGHUP while an editor replaces it */
    fc_log_clear(fc);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, ""), 0);
    cr_assert_str_eq(run("B 10.0.0.7"), "true\n", "still blocked");
    cr_assert_eq(rt_gauge("blocklist_entries"), 1);
    cr_assert_eq(rt_gauge("blacklist_entries"), 1, "the readable list was re-read");
    cr_assert(fc_log_contains(fc, "blocklist blocklist.txt not re-read: No such file or directory (errno 2); "
                                  "keeping its 1 entries"));
    rt_conn c = rt_open("10.0.0.7:1");
    cr_assert_not(fc_conn_alive(fc, c.id), "refused at accept as before");

    cr_assert_eq(mkdir("blocklist.txt", 0700), 0); /* not a regular file */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, ""), 0);
    cr_assert_eq(rt_gauge("blocklist_entries"), 1);
    cr_assert_eq(rmdir("blocklist.txt"), 0);

    rt_write_file("blocklist.txt", "10.0.0.9\n\xc3"); /* cut inside a UTF-8 sequence */
    fc_log_clear(fc);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, ""), 0);
    cr_assert_str_eq(run("B 10.0.0.7"), "true\n");
    cr_assert(fc_log_contains(fc, "blocklist blocklist.txt not re-read: not UTF-8 text"));

    rt_write_file("blocklist.txt", ""); /* deliberately empty */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, ""), 0);
    cr_assert_eq(rt_gauge("blocklist_entries"), 0);
    cr_assert_str_eq(run("B 10.0.0.7"), "false\n", "an empty file clears the list");
    rt_conn d = rt_open("10.0.0.7:2");
    cr_assert(fc_conn_alive(fc, d.id));
}

Test(hard, D_missing_lists_at_start_are_empty_and_quiet)
{
    cr_assert_eq(rt_gauge("blocklist_entries"), 0);
    cr_assert_not(fc_log_contains(fc, "not re-read"));
    cr_assert_not(fc_log_contains(fc, "not used"));
    /* and on SIGHUP, while they stay absent (was: two warnings per reload
     * on every default node, which has neither file) */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, ""), 0);
    cr_assert_not(fc_log_contains(fc, "not re-read"));
    rt_write_file("blocklist.txt", "10.0.0.7\n");
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, ""), 0);
    cr_assert_eq(rt_gauge("blocklist_entries"), 1, "a file that appears is read on the next reload");
}

/* E. The waiting table is keyed by uuids the clients choose (§3.4, L45).
 * With uthash's default hash (Jenkins, no secret) uuids crafted to share
 * the low 12 bits of their hash - a few thousand tries each - all land in
 * one bucket: uthash's expansions do not split them, it stops expanding,
 * and every RequestRelay walks the whole chain. rdv/uthash.h hashes with a
 * per-process SipHash key, so the same uuids spread. */
Test(hard, E_crafted_uuids_do_not_share_a_bucket)
{
    enum { N = 300 };
    static char uuid[N][24];
    int found = 0;
    for (uint32_t i = 0; found < N; i++) {
        char u[24];
        int len = snprintf(u, sizeof u, "flood-%08x", i);
        unsigned h;
        HASH_JEN(u, (unsigned)len, h);
        if ((h & 0xfff) == 0x5a5)
            memcpy(uuid[found++], u, (size_t)len + 1);
    }
    static rt_conn c[N];
    for (int k = 0; k < N; k++) {
        char addr[32];
        snprintf(addr, sizeof addr, "10.2.%d.%d:4000", k / 200, k % 200 + 1);
        c[k] = rt_open(addr);
        cr_assert_eq(rt_request(&c[k], uuid[k], NULL), RDV_OK);
    }
    cr_assert_eq(rt_gauge("waiting"), N);
    const UT_hash_table *t = R->waiting->hh.tbl;
    unsigned longest = 0;
    for (unsigned b = 0; b < t->num_buckets; b++)
        if (t->buckets[b].count > longest)
            longest = t->buckets[b].count;
    cr_assert_lt(longest, 20, "%u of %d waiting sides in one bucket (of %u)", longest, N, t->num_buckets);
    cr_assert_eq(t->noexpand, 0, "the table stopped expanding");
}
