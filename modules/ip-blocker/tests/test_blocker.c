/* test_blocker.c — the RegisterPk IP blocker (rendezvous.md §11.1, R41, R42)
 * through the "blocklist" service, and `ip-blocker` / `ib` (§10, R173). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rdv/svc/blocklist.h>

#include "fakecore.h"

static fc_core *fc;
static void *st;
static const rdv_blocklist_api *bl;
static void *bself;
static char out[8192];

static void load(const char *conf)
{
    fc = fc_new();
    cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &st), 0);
    rdv_core *h = fc_handle(fc, "registry");
    bl = h->api->service_get(h, RDV_SVC_BLOCKLIST, RDV_SVC_BLOCKLIST_VERSION, &bself);
    cr_assert_not_null(bl);
}

static void setup(void) { load(NULL); }
static void teardown(void) { fc_free(fc); }

TestSuite(blocker, .init = setup, .fini = teardown);

static bool ask(const char *ip, const char *id)
{
    rdv_addr a = fc_addr(ip);
    return bl->register_pk_allowed(bself, &a, id);
}

static const char *ib(const char *args)
{
    char line[128];
    snprintf(line, sizeof line, "ib%s%s", args ? " " : "", args ? args : "");
    cr_assert_eq(fc_admin(fc, line, out, sizeof out), 0);
    return out;
}

static const char *id_n(int n)
{
    static char id[16];
    snprintf(id, sizeof id, "9%08d", n);
    return id;
}

Test(blocker, first_request_creates_an_entry_without_its_id)
{
    cr_assert(ask("10.0.0.1:1", "100000001"));
    cr_assert_str_eq(ib(NULL), "1\n10.0.0.1: 0/0s 0/0s\n");
    cr_assert(ask("10.0.0.1:2", "100000001"));
    cr_assert_str_eq(ib(NULL), "1\n10.0.0.1: 1/0s 1/0s\n", "the first id was not in the set: new now");
    cr_assert_eq(fc_gauge(fc, "ip-blocker.entries"), 1);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.ids"), 1);
}

Test(blocker, r41_33rd_request_in_the_window_is_refused)
{
    for (int i = 1; i <= 32; i++)
        cr_assert(ask("10.0.0.3:1", id_n(i)), "request %d", i);
    cr_assert_str_eq(ib("10.0.0.3"), "1\n31/0s 31/0s\n");
    cr_assert_not(ask("10.0.0.3:1", id_n(33)), "33rd");
    cr_assert_not(ask("10.0.0.3:1", id_n(1)), "34th, known id too");
    cr_assert_str_eq(ib("10.0.0.3"), "1\n31/0s 31/0s\n", "refusals update nothing");
    cr_assert_eq(fc_counter(fc, "ip-blocker.blocked_rate"), 2);
    cr_assert_eq(fc_counter(fc, "ip-blocker.allowed"), 32);
}

Test(blocker, r41_window_reset_needs_more_than_60_whole_seconds)
{
    for (int i = 1; i <= 32; i++)
        ask("10.0.0.4:1", id_n(i));
    fc_advance(fc, 60999); /* as_secs() == 60: not > 60 */
    cr_assert_not(ask("10.0.0.4:1", id_n(40)));
    fc_advance(fc, 1); /* 61 s after the last counted request */
    cr_assert(ask("10.0.0.4:1", id_n(41)));
    cr_assert_str_eq(ib("10.0.0.4"), "1\n1/0s 32/0s\n");
}

Test(blocker, refused_requests_do_not_extend_the_window)
{
    for (int i = 1; i <= 32; i++)
        ask("10.0.0.5:1", id_n(i));
    for (int i = 0; i < 60; i++) {
        fc_advance(fc, 1000);
        cr_assert_not(ask("10.0.0.5:1", id_n(1)));
    }
    fc_advance(fc, 1000);
    cr_assert(ask("10.0.0.5:1", id_n(1)), "61 s after the 32nd");
}

Test(blocker, boundary_31_32_33_with_one_id)
{
    for (int i = 1; i <= 31; i++)
        cr_assert(ask("10.0.0.6:1", "123456789"));
    cr_assert_str_eq(ib("10.0.0.6"), "1\n30/0s 1/0s\n");
    cr_assert(ask("10.0.0.6:1", "123456789"), "32nd: count 30 is not over 30");
    cr_assert_not(ask("10.0.0.6:1", "123456789"), "33rd: count 31");
}

/* R42: #1–#302 allowed, #303 (new id) refused, a repeat of #2 allowed. */
static void fill_ids(const char *ip)
{
    for (int i = 1; i <= 302; i++) {
        cr_assert(ask(ip, id_n(i)), "request %d", i);
        if (i % 30 == 0)
            fc_advance(fc, 61000);
    }
}

Test(blocker, r42_more_than_300_distinct_ids_a_day)
{
    fill_ids("10.0.0.7:1");
    cr_assert_str_eq(strchr(ib("10.0.0.7"), '\n') + 1, "2/0s 301/0s\n", "count restarted after the last pause");
    cr_assert_not(ask("10.0.0.7:1", id_n(303)), "#303 new id");
    cr_assert(ask("10.0.0.7:1", id_n(2)), "known ids keep working");
    cr_assert(ask("10.0.0.7:1", id_n(302)));
    cr_assert_not(ask("10.0.0.7:1", id_n(1)), "#1 was never added to the set: it is new");
    cr_assert_eq(fc_counter(fc, "ip-blocker.blocked_ids"), 2);
    cr_assert_str_eq(strchr(ib("10.0.0.7"), '\n') + 1, "6/0s 301/0s\n", "the count still moves");
}

Test(blocker, r42_boundary_300_and_301_ids)
{
    for (int i = 1; i <= 301; i++) { /* set holds ids #2..#301: 300 */
        ask("10.0.0.8:1", id_n(i));
        if (i % 30 == 0)
            fc_advance(fc, 61000);
    }
    cr_assert_str_eq(strchr(ib("10.0.0.8"), '\n') + 1, "1/0s 300/0s\n");
    cr_assert(ask("10.0.0.8:1", id_n(1000)), "300 is not over 300: added (301)");
    cr_assert_not(ask("10.0.0.8:1", id_n(1001)), "301 is over 300");
}

Test(blocker, day_set_clears_after_its_window)
{
    fill_ids("10.0.0.9:1");
    cr_assert_not(ask("10.0.0.9:1", id_n(500)));
    /* t2 moved last with #302 (the refusals do not move it) */
    fc_advance(fc, 86401000);
    cr_assert(ask("10.0.0.9:1", id_n(501)), "set cleared, new id allowed");
    cr_assert_str_eq(strchr(ib("10.0.0.9"), '\n') + 1, "1/0s 1/0s\n");
}

Test(blocker, day_set_not_cleared_at_exactly_86400_seconds)
{
    fill_ids("10.0.0.10:1");
    ask("10.0.0.10:1", id_n(2)); /* known and capped: t2 stays */
    fc_advance(fc, 86400999);
    cr_assert_not(ask("10.0.0.10:1", id_n(600)));
    fc_advance(fc, 1);
    cr_assert(ask("10.0.0.10:1", id_n(600)));
}

Test(blocker, ips_are_normalised_and_ports_ignored)
{
    cr_assert(ask("10.0.1.1:1", "123456789"));
    cr_assert(ask("[::ffff:10.0.1.1]:9", "123456789"));
    cr_assert_str_eq(ib(NULL), "1\n10.0.1.1: 1/0s 1/0s\n");
    cr_assert(ask("[2001:db8::1]:1", "123456789"));
    cr_assert_str_eq(ib("2001:db8::1"), "2\n0/0s 0/0s\n");
    cr_assert_str_eq(ib("::ffff:10.0.1.1"), "2\n1/0s 1/0s\n");
}

/* An IPv6 host owns a whole /64 and can use a new address per request:
 * with the default ipv6_prefix = 64 the network is one source (R41 and R42
 * then hold for it, as for one IPv4 address), instead of each limit being
 * per request. */
static void ask_from_64(const char *net, int n, int first_id, bool *allowed)
{
    char ip[64];
    for (int i = 0; i < n; i++) {
        snprintf(ip, sizeof ip, "[%s:%x:%x:%x:%x]:1", net, i + 1, i * 7 + 3, i * 13 + 5, i * 31 + 9);
        allowed[i] = ask(ip, id_n(first_id + i));
    }
}

Test(blocker, r41_an_ipv6_64_is_one_source)
{
    bool ok[40];
    ask_from_64("2001:db8:1:2", 33, 0, ok);
    for (int i = 0; i < 32; i++)
        cr_assert(ok[i], "request %d from the /64", i + 1);
    cr_assert_not(ok[32], "R41: the 33rd from the same /64, each from a new address, is refused");
    cr_assert(ask("[2001:db8:1:3::1]:1", id_n(99)), "the next /64 is another source");
    cr_assert(ask("10.0.1.1:1", id_n(99)), "IPv4 is per address");
    cr_assert(ask("10.0.1.2:1", id_n(99)));
    cr_assert_eq(fc_gauge(fc, "ip-blocker.entries"), 4);
    /* ib shows the network and finds it from any of its addresses */
    cr_assert_str_eq(ib("2001:db8:1:2:ffff::1"), "4\n31/0s 31/0s\n");
    cr_assert(strstr(ib(NULL), "2001:db8:1:2::/64: 31/0s 31/0s\n"), "%s", out);
    ib("2001:db8:1:2:: -");
    cr_assert(ask("[2001:db8:1:2::77]:1", id_n(500)), "deleted by any of its addresses");
}

Test(blocker, r42_an_ipv6_64_shares_one_id_budget)
{
    fc_free(fc);
    load("req_max = 1000\n");
    bool ok[310];
    ask_from_64("2001:db8:5:6", 310, 1000, ok);
    int allowed = 0;
    for (int i = 0; i < 310; i++)
        allowed += ok[i];
    cr_assert_eq(allowed, 302, "R42: 302 new ids from one /64, then refused (%d)", allowed);
    cr_assert(ask("[2001:db8:5:6::1]:1", id_n(1001)), "a known id still works");
}

Test(blocker, ipv6_prefix_128_is_per_address_as_upstream)
{
    fc_free(fc);
    load("ipv6_prefix = 128\n");
    bool ok[40];
    ask_from_64("2001:db8:1:2", 40, 0, ok);
    for (int i = 0; i < 40; i++)
        cr_assert(ok[i]);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.entries"), 40);
    cr_assert_str_eq(ib("2001:db8:1:2:1:3:5:9"), "40\n0/0s 0/0s\n");
    cr_assert(strstr(ib(NULL), "\n2001:db8:1:2:1:3:5:9: 0/0s 0/0s\n"), "addresses print without a prefix: %s", out);
}

Test(blocker, a_new_ipv6_prefix_starts_ipv6_sources_afresh)
{
    bool ok[40];
    ask_from_64("2001:db8:1:2", 33, 0, ok);
    cr_assert_not(ok[32]);
    for (int i = 0; i < 33; i++)
        ask("10.0.1.1:1", id_n(i));
    cr_assert_not(ask("10.0.1.1:1", id_n(0)));
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "ipv6_prefix = 56\n"), 0);
    cr_assert(fc_log_contains(fc, "ipv6_prefix is now 56"));
    cr_assert_eq(fc_gauge(fc, "ip-blocker.entries"), 1, "the IPv4 entry stays");
    cr_assert_not(ask("10.0.1.1:1", id_n(0)), "and still blocks");
    cr_assert(ask("[2001:db8:1:2::1]:1", id_n(0)));
    cr_assert(strstr(ib(NULL), "2001:db8:1::/56: "), "%s", out);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "ipv6_prefix = 56\nreq_max = 31\n"), 0);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.entries"), 2, "same prefix: nothing dropped");
}

/* ------------------------------------------------------------------ ib (R173) */
Test(blocker, r173_lookup_delete_and_listing)
{
    ask("10.0.2.1:1", "123456789");
    fc_advance(fc, 5000);
    ask("10.0.2.2:1", "123456789");
    ask("10.0.2.2:1", "223456789");
    fc_advance(fc, 2000);
    cr_assert_str_eq(ib(NULL), "2\n10.0.2.1: 0/7s 0/7s\n10.0.2.2: 1/2s 1/2s\n");
    cr_assert_str_eq(ib("0"), "2\n10.0.2.1: 0/7s 0/7s\n10.0.2.2: 1/2s 1/2s\n");
    cr_assert_str_eq(ib("1"), "2\n10.0.2.2: 1/2s 1/2s\n");
    cr_assert_str_eq(ib("2"), "2\n");
    cr_assert_str_eq(ib("10.0.2.2"), "2\n1/2s 1/2s\n");
    cr_assert_str_eq(ib("10.0.2.9"), "2\n", "unknown IP: count only");
    cr_assert_str_eq(ib("garbage"), "2\n");
    cr_assert_str_eq(ib("-1"), "2\n", "a negative number is looked up as an IP");
    cr_assert_str_eq(ib("10.0.2.2 -"), "2\n1/2s 1/2s\n", "printed, then removed");
    cr_assert_str_eq(ib(NULL), "1\n10.0.2.1: 0/7s 0/7s\n");
    /* that IP starts over */
    cr_assert(ask("10.0.2.2:1", "123456789"));
    cr_assert_str_eq(ib("10.0.2.2"), "2\n0/0s 0/0s\n");
}

Test(blocker, r173_listing_pages_of_ten)
{
    char ip[32];
    for (int i = 0; i < 25; i++) {
        snprintf(ip, sizeof ip, "10.0.3.%d:1", i);
        ask(ip, "123456789");
    }
    int lines = 0;
    for (const char *p = ib(NULL); *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 11);
    lines = 0;
    for (const char *p = ib("20"); *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 6);
    cr_assert_eq(strncmp(ib("20"), "25\n10.0.3.20: ", 14), 0);
}

Test(blocker, ib_and_the_timer_prune_entries_with_both_windows_expired)
{
    ask("10.0.4.1:1", "123456789");
    ask("10.0.4.1:1", "123456789");
    fc_advance(fc, 86400000);
    cr_assert_str_eq(ib(NULL), "1\n10.0.4.1: 1/86400s 1/86400s\n", "86400 s is not over the day window");
    fc_advance(fc, 1000);
    cr_assert_str_eq(ib(NULL), "0\n");
    ask("10.0.4.2:1", "123456789");
    fc_advance(fc, 86401000 + 60000); /* the 60 s timer runs meanwhile */
    cr_assert_eq(fc_gauge(fc, "ip-blocker.entries"), 0);
    cr_assert_geq(fc_counter(fc, "ip-blocker.pruned"), 2);
}

Test(blocker, entry_with_a_live_request_window_is_kept)
{
    fill_ids("10.0.4.3:1");
    fc_advance(fc, 86370000);
    cr_assert(ask("10.0.4.3:1", id_n(2)), "capped, known: t1 moves, t2 does not");
    fc_advance(fc, 40000); /* day set 86410 s old, counter 40 s */
    cr_assert_str_eq(ib(NULL), "1\n10.0.4.3: 1/40s 301/86410s\n");
    fc_advance(fc, 21000); /* counter 61 s old too */
    cr_assert_str_eq(ib(NULL), "0\n");
}

/* ------------------------------------------------------------------ bounds */
Test(blocker, table_bound_evicts_the_oldest_updated)
{
    fc_free(fc);
    load("max_entries = 3\n");
    ask("10.0.5.1:1", "123456789");
    fc_advance(fc, 1000);
    ask("10.0.5.2:1", "123456789");
    fc_advance(fc, 1000);
    ask("10.0.5.3:1", "123456789");
    fc_advance(fc, 1000);
    ask("10.0.5.1:1", "123456789"); /* .1 is now the most recent */
    ask("10.0.5.4:1", "123456789");
    cr_assert_eq(fc_gauge(fc, "ip-blocker.entries"), 3);
    cr_assert_eq(fc_counter(fc, "ip-blocker.evicted"), 1);
    cr_assert_str_eq(ib("10.0.5.2"), "3\n", ".2 was evicted");
    cr_assert_str_eq(ib("10.0.5.1"), "3\n1/0s 1/0s\n");
}

Test(blocker, flood_of_sources_stays_bounded)
{
    fc_free(fc);
    load("max_entries = 100\n");
    char ip[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(ip, sizeof ip, "[2001:db8:%x:%x::1]:1", i >> 8, i & 255); /* 10,000 /64s */
        cr_assert(ask(ip, "123456789"));
    }
    cr_assert_eq(fc_gauge(fc, "ip-blocker.entries"), 100);
    cr_assert_eq(fc_counter(fc, "ip-blocker.evicted"), 9900);
}

Test(blocker, id_budget_evicts_other_entries)
{
    fc_free(fc);
    load("max_ids = 10\n");
    for (int i = 1; i <= 8; i++)
        ask("10.0.6.1:1", id_n(i)); /* 7 ids */
    fc_advance(fc, 1000);
    for (int i = 1; i <= 6; i++)
        ask("10.0.6.2:1", id_n(i)); /* 5 more: over 10 -> .1 evicted */
    cr_assert_eq(fc_counter(fc, "ip-blocker.evicted"), 1);
    cr_assert_leq(fc_gauge(fc, "ip-blocker.ids"), 10);
    cr_assert_str_eq(ib("10.0.6.2"), "1\n5/0s 5/0s\n");
    /* alone and over budget: the id is not remembered, the request allowed */
    for (int i = 10; i <= 20; i++)
        cr_assert(ask("10.0.6.2:1", id_n(i)));
    cr_assert_eq(fc_gauge(fc, "ip-blocker.ids"), 10);
    cr_assert_geq(fc_counter(fc, "ip-blocker.ids_not_kept"), 1);
}

Test(blocker, reload_with_a_lower_bound_evicts_at_once)
{
    for (int i = 0; i < 10; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "10.0.7.%d:1", i);
        ask(ip, "123456789");
    }
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "max_entries = 4\n"), 0);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.entries"), 4);
    cr_assert_str_eq(ib("10.0.7.9"), "4\n0/0s 0/0s\n");
}

Test(blocker, constants_are_settings)
{
    fc_free(fc);
    load("req_window_s = 10\nreq_max = 2\nid_max = 1\nid_window_s = 100\n");
    cr_assert(ask("10.0.8.1:1", id_n(1)));
    cr_assert(ask("10.0.8.1:1", id_n(2)));
    cr_assert(ask("10.0.8.1:1", id_n(3)), "set {2} is not over 1");
    cr_assert_not(ask("10.0.8.1:1", id_n(4)), "set {2,3} is over 1: new id refused");
    cr_assert_not(ask("10.0.8.1:1", id_n(2)), "count 3 is over 2");
    fc_advance(fc, 11000);
    cr_assert(ask("10.0.8.1:1", id_n(2)), "window over; known id");
    fc_advance(fc, 101000);
    cr_assert(ask("10.0.8.1:1", id_n(5)), "day set cleared");
}

Test(blocker, bad_settings_are_refused)
{
    fc_free(fc);
    fc = fc_new();
    cr_assert_eq(fc_load(fc, rdv_module_get(), "req_max = 0\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "max_entries = -1\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "prune_s = 0\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "ipv6_prefix = 31\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "ipv6_prefix = 129\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "nope = 1\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, rdv_module_get(), NULL, &st), 0);
}
