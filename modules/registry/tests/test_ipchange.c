/* test_ipchange.c — the IP-change log (rendezvous.md §11.3) and the admin
 * command `ip-changes` / `ic` (§10, R174). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fake_services.h"

TestSuite(ipchange, .init = rt_setup, .fini = rt_teardown);

#define OK HBB__REGISTER_PK_RESPONSE__RESULT__OK

static char out[4096];

static const char *ic(const char *args)
{
    char line[256];
    snprintf(line, sizeof line, "ic%s%s", args ? " " : "", args ? args : "");
    cr_assert_eq(fc_admin(rt.fc, line, out, sizeof out), 0);
    return out;
}

/* R38 plus one more change back to N1 within 180 s (R174). */
static void two_changes(const char *id)
{
    rt_reg(id, "u1", "P1", "10.0.0.1:1000");
    fc_advance(rt.fc, 10000);
    cr_assert_eq(rt_reg_pk(id, "u1", "P1", "10.0.0.2:1000"), OK);
    fc_advance(rt.fc, 10000);
    cr_assert_eq(rt_reg_pk(id, "u1", "P1", "10.0.0.1:1000"), OK);
    fc_advance(rt.fc, 5000);
}

Test(ipchange, r174_listing_and_lookup)
{
    two_changes("200000003");
    cr_assert_str_eq(ic(NULL), "1\n200000003: 15s {\"10.0.0.2\": 1, \"10.0.0.1\": 1}\n");
    cr_assert_str_eq(ic("0"), "1\n200000003: 15s {\"10.0.0.2\": 1, \"10.0.0.1\": 1}\n");
    cr_assert_str_eq(ic("200000003"), "1\n15s {\"10.0.0.2\": 1, \"10.0.0.1\": 1}\n");
    cr_assert_str_eq(fc_admin(rt.fc, "ip-changes 200000003", out, sizeof out) == 0 ? out : "",
                     "1\n15s {\"10.0.0.2\": 1, \"10.0.0.1\": 1}\n");
    cr_assert_str_eq(ic("200000003 -"), "1\n15s {\"10.0.0.2\": 1, \"10.0.0.1\": 1}\n", "prints, then removes");
    cr_assert_str_eq(ic(NULL), "0\n");
}

Test(ipchange, counts_repeat_ips)
{
    rt_reg("200000005", "u1", "P1", "10.0.0.1:1000");
    const char *ips[] = { "10.0.0.2:1", "10.0.0.1:1", "10.0.0.2:1" };
    for (int i = 0; i < 3; i++) {
        fc_advance(rt.fc, 7000);
        cr_assert_eq(rt_reg_pk("200000005", "u1", "P1", ips[i]), OK);
    }
    cr_assert_str_eq(ic("200000005"), "1\n14s {\"10.0.0.2\": 2, \"10.0.0.1\": 1}\n");
}

Test(ipchange, single_ip_entries_are_pruned_by_the_command)
{
    rt_reg("200000006", "u1", "P1", "10.0.0.1:1000");
    cr_assert_eq(rt_reg_pk("200000006", "u1", "P1", "10.0.0.2:1"), OK);
    cr_assert_eq(rt_gauge("ip_change_entries"), 1);
    cr_assert_str_eq(ic(NULL), "0\n");
    cr_assert_eq(rt_gauge("ip_change_entries"), 0);
    /* so the next change starts a new entry with only that IP */
    fc_advance(rt.fc, 7000);
    cr_assert_eq(rt_reg_pk("200000006", "u1", "P1", "10.0.0.1:1"), OK);
    cr_assert_str_eq(ic(NULL), "0\n");
}

Test(ipchange, entry_restarts_after_180_seconds)
{
    two_changes("200000007");
    fc_advance(rt.fc, 165000); /* the entry began 15 s ago: now 180 s, not > 180 */
    cr_assert_eq(rt_reg_pk("200000007", "u1", "P1", "10.0.0.3:1"), OK);
    cr_assert_str_eq(ic("200000007"), "1\n180s {\"10.0.0.2\": 1, \"10.0.0.1\": 1, \"10.0.0.3\": 1}\n");
    fc_advance(rt.fc, 1000); /* 181 s */
    cr_assert_eq(rt_reg_pk("200000007", "u1", "P1", "10.0.0.4:1"), OK);
    cr_assert_eq(rt_gauge("ip_change_entries"), 1);
    cr_assert_str_eq(ic(NULL), "0\n", "restarted as (now, {10.0.0.4: 1}): one IP, pruned");
}

Test(ipchange, entries_expire_at_360_seconds)
{
    two_changes("200000008");
    fc_advance(rt.fc, 359000 - 15000);
    cr_assert_str_eq(ic(NULL), "1\n200000008: 359s {\"10.0.0.2\": 1, \"10.0.0.1\": 1}\n");
    fc_advance(rt.fc, 1000);
    cr_assert_eq(rt_gauge("ip_change_entries"), 0, "pruned by the sweep timer");
    cr_assert_str_eq(ic(NULL), "0\n");
}

Test(ipchange, start_index_and_arguments)
{
    char id[16];
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof id, "2100000%02d", i);
        two_changes(id);
    }
    ic(NULL);
    cr_assert_eq(strncmp(out, "12\n", 3), 0);
    int lines = 0;
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 11, "count + 10 entries");
    ic("10");
    lines = 0;
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 3, "count + entries 10 and 11");
    cr_assert_str_eq(ic("12"), "12\n");
    cr_assert_str_eq(ic("nosuchid"), "12\n");
    cr_assert_str_eq(ic("-3"), "12\n", "a negative number is an id");
    cr_assert_str_eq(ic("99999999999"), "12\n", "not an i32: an id");
    cr_assert_str_eq(ic("10000001"), "12\n", "over 10 000 000: an id, then an empty page");
}

Test(ipchange, table_is_bounded_and_evicts_the_oldest)
{
    rt_teardown();
    rt_setup_conf("ip_changes_max = 2\n");
    two_changes("220000001");
    two_changes("220000002");
    two_changes("220000003");
    cr_assert_eq(rt_gauge("ip_change_entries"), 2);
    cr_assert_eq(rt_counter("ip_change_evicted"), 1);
    cr_assert_str_eq(ic("220000001"), "2\n");
    ic("220000003");
    cr_assert(strstr(out, "{\"10.0.0.2\": 1, \"10.0.0.1\": 1}"));
}

Test(ipchange, ips_per_entry_are_bounded)
{
    rt_teardown();
    rt_setup_conf("ip_change_ips_max = 2\n");
    rt_reg("230000001", "u1", "P1", "10.0.0.1:1000");
    const char *ips[] = { "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1", "10.0.0.2:1" };
    for (int i = 0; i < 4; i++) {
        fc_advance(rt.fc, 7000);
        cr_assert_eq(rt_reg_pk("230000001", "u1", "P1", ips[i]), OK);
    }
    cr_assert_str_eq(ic("230000001"), "1\n21s {\"10.0.0.2\": 2, \"10.0.0.3\": 1}\n");
    cr_assert_eq(rt_counter("ip_change_dropped"), 1);
}

Test(ipchange, ipv6_addresses_print_in_their_text_form)
{
    rt_reg("240000001", "u1", "P1", "[2001:db8::1]:1000");
    fc_advance(rt.fc, 7000);
    rt_reg_pk("240000001", "u1", "P1", "[2001:db8::2]:1");
    fc_advance(rt.fc, 7000);
    rt_reg_pk("240000001", "u1", "P1", "[::ffff:10.0.0.1]:1");
    cr_assert_str_eq(ic("240000001"), "1\n7s {\"2001:db8::2\": 1, \"10.0.0.1\": 1}\n");
}

/* Ids are peer-chosen: one with a line break and an escape sequence is
 * listed as one word (\xNN) and found again by that word, so it cannot
 * forge a line of the answer or drive the operator's terminal. */
Test(ipchange, peer_chosen_ids_are_printed_escaped)
{
    two_changes("2000\n0009: 1s {}\x1b[2J");
    cr_assert_str_eq(ic(NULL), "1\n2000\\x0a0009:\\x201s\\x20{}\\x1b[2J: 15s {\"10.0.0.2\": 1, \"10.0.0.1\": 1}\n");
    cr_assert_str_eq(ic("2000\\x0a0009:\\x201s\\x20{}\\x1B[2J"), "1\n15s {\"10.0.0.2\": 1, \"10.0.0.1\": 1}\n");
    cr_assert_str_eq(ic("2000\\x0"), "1\n", "a broken escape finds nothing");
}
