/* test_admin.c — upstream console commands (rendezvous.md §10, R170–R176)
 * and the module's settings. */
#include "pc_test.h"

TestSuite(admin, .init = pct_setup, .fini = pct_teardown);

Test(admin, R170_h_is_exactly_seven_lines)
{
    cr_assert_str_eq(pct_admin("h"), "relay-servers(rs) <separated by ,>\n"
                                     "reload-geo(rg)\n"
                                     "ip-blocker(ib) [<ip>|<number>] [-]\n"
                                     "ip-changes(ic) [<id>|<number>] [-]\n"
                                     "punch-requests(pr) [<number>] [-]\n"
                                     "always-use-relay(aur)\n"
                                     "test-geo(tg) <ip1> <ip2>\n");
    cr_assert_str_eq(pct_admin("h extra words"), pct_admin("h"));
}

Test(admin, R172_aur_shows_and_sets_only_the_flag)
{
    pct_teardown();
    pct_setup_conf("relay_servers=127.0.0.1:31001,127.0.0.1:31002\nrelay_check_ms=0\n");
    cr_assert_str_eq(pct_admin("aur"), "ALWAYS_USE_RELAY: false\n");
    cr_assert_str_eq(pct_admin("aur Y"), "");
    cr_assert_str_eq(pct_admin("always-use-relay"), "ALWAYS_USE_RELAY: true\n");
    cr_assert_str_eq(pct_admin("rs"), "127.0.0.1:31001\n127.0.0.1:31002\n", "relay list unchanged [Dev]");
    cr_assert_str_eq(pct_admin("aur n"), "");
    cr_assert_str_eq(pct_admin("aur"), "ALWAYS_USE_RELAY: false\n");
    pct_admin("aur y");
    cr_assert(P->always_use_relay);
    pct_admin("aur yes"); /* anything but Y is off */
    cr_assert_not(P->always_use_relay);
}

Test(admin, aur_survives_a_reload_unless_the_file_changes_it)
{
    pct_admin("aur Y");
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), P, "punch_log_max=5\n"), 0);
    cr_assert(P->always_use_relay);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), P, "always_use_relay=true\n"), 0);
    pct_admin("aur N");
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), P, "always_use_relay=false\n"), 0);
    cr_assert_not(P->always_use_relay);
}

Test(admin, R175_tg_prints_the_next_relay_and_consumes_it)
{
    pct_teardown();
    pct_setup_conf("relay_servers=127.0.0.1:31001,127.0.0.1:31002\nrelay_check_ms=0\n");
    pct_peer("400000001", "10.0.0.2:40000", true, 0xb1);
    cr_assert_str_eq(pct_admin("tg 1.1.1.1"), "\"127.0.0.1:31001\"");
    fc_conn_msg(fc, pct_open("10.0.0.1:50001"), pct_phr("400000001", 1, KEYS.licence));
    cr_assert_str_eq(pct_expect_push("10.0.0.2:40000", HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE)->msg->punch_hole->relay_server,
                     "127.0.0.1:31002", "the other one");
    cr_assert_str_eq(pct_admin("test-geo 1.1.1.1 2001:db8::1"), "\"127.0.0.1:31001\"");
    cr_assert_str_eq(pct_admin("tg notanip"), "");
    cr_assert_str_eq(pct_admin("tg 1.1.1.1 notanip"), "");
    cr_assert_str_eq(pct_admin("tg"), "");
    cr_assert_str_eq(pct_admin("tg 01.1.1.1"), "", "no octal-looking octets");
    cr_assert_str_eq(pct_admin("tg ::1"), "\"127.0.0.1:31002\"");
}

Test(admin, R175_tg_without_relays_is_empty_quotes)
{
    cr_assert_str_eq(pct_admin("tg 1.1.1.1"), "\"\"");
}

Test(admin, tg_escapes_like_rust_debug)
{
    char q[64];
    pc_rust_debug_str("q\"\\x\n\x01", q, sizeof q);
    cr_assert_str_eq(q, "\"q\\\"\\\\x\\n\\u{1}\"");
    pc_rust_debug_str("", q, sizeof q);
    cr_assert_str_eq(q, "\"\"");
}

Test(admin, R176_rg_is_empty)
{
    cr_assert_str_eq(pct_admin("rg"), "");
    cr_assert_str_eq(pct_admin("reload-geo"), "");
}

Test(admin, pr_paging)
{
    pct_peer("400000001", "10.0.0.2:40000", true, 0xb1);
    char a[32];
    for (int i = 0; i < 15; i++) {
        snprintf(a, sizeof a, "10.0.1.%d:1", i + 1);
        fc_conn_msg(fc, pct_open(a), pct_phr("400000001", 1, KEYS.licence));
    }
    const char *all = pct_admin("pr");
    int lines = 0;
    for (const char *c = all; *c; c++)
        lines += *c == '\n';
    cr_assert_eq(lines, 10, "default page size 10");
    cr_assert_not_null(strstr(all, " 10.0.1.1 -> "));
    cr_assert_not_null(strstr(pct_admin("pr 14"), " 10.0.1.15 -> 400000001@10.0.0.2\n"));
    cr_assert_str_eq(pct_admin("pr 15"), "");
    cr_assert_str_eq(pct_admin("pr 99999999999999999999999"), pct_admin("pr 0"), "overflow -> 0");
    lines = 0;
    for (const char *c = pct_admin("pr 0 0"); *c; c++)
        lines += *c == '\n';
    cr_assert_eq(lines, 10, "page size 0 means 10");
    lines = 0;
    for (const char *c = pct_admin("pr 3 100"); *c; c++)
        lines += *c == '\n';
    cr_assert_eq(lines, 12);
}

Test(admin, commands_are_registered_under_both_names)
{
    const char *names[] = { "h", "relay-servers", "rs", "reload-geo", "rg", "punch-requests", "pr",
                            "always-use-relay", "aur", "test-geo", "tg" };
    char out[256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        cr_assert_eq(fc_admin(fc, names[i], out, sizeof out), 0, "%s", names[i]);
    cr_assert_eq(fc_admin(fc, "ib", out, sizeof out), -ENOENT, "ib belongs to ip-blocker");
}

Test(admin, settings_bounds_are_enforced)
{
    pct_teardown();
    fc = fc_new();
    void *st;
    const char *bad[] = { "relay_check_ms=-1\n", "relay_port=0\n", "relay_port=65536\n", "punch_log_max=-5\n",
                          "relay_check_timeout_ms=5\n", "always_use_relay=maybe\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_lt(fc_load(fc, rdv_module_get(), bad[i], &st), 0, "%s", bad[i]);
    fc_free(fc);
    fc = NULL;
}
