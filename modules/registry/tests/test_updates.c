/* test_updates.c — ConfigUpdate from loopback (rendezvous.md §6.10, R45),
 * SoftwareUpdate (§6.11, R46), the server list and reload. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fake_services.h"
#include "registry.h"

TestSuite(updates, .init = rt_setup, .fini = rt_teardown);

static int send_cu(int serial, const char *from, char **servers, size_t n)
{
    Hbb__ConfigUpdate cu = HBB__CONFIG_UPDATE__INIT;
    cu.serial = serial;
    cu.rendezvous_servers = servers;
    cu.n_rendezvous_servers = n;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_CONFIGURE_UPDATE;
    m.configure_update = &cu;
    rdv_addr a = fc_addr(from);
    return fc_udp(rt.fc, "main", &a, &m);
}

/* RegisterPeer{serial 0} and return the ConfigUpdate that follows (or NULL). */
static const Hbb__ConfigUpdate *next_cu(void)
{
    cr_assert_eq(rt_reg_peer("abcdef", 0, "127.0.0.1:9000"), 1);
    const fc_sent *s = fc_next_sent(rt.fc);
    if (!s)
        return NULL;
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_CONFIGURE_UPDATE);
    return s->msg->configure_update;
}

Test(updates, r45_config_update_from_loopback)
{
    char *list[] = { "127.0.0.1:21116" };
    cr_assert_eq(send_cu(7, "127.0.0.1:5000", list, 1), RDV_OK);
    cr_assert_eq(fc_sent_count(rt.fc), 0, "never a reply");
    const Hbb__ConfigUpdate *cu = next_cu();
    cr_assert_not_null(cu);
    cr_assert_eq(cu->serial, 7);
    cr_assert_eq(cu->n_rendezvous_servers, 1);
    cr_assert_str_eq(cu->rendezvous_servers[0], "127.0.0.1:21116");
    cr_assert_eq(rt_counter("config_updates"), 1);
    cr_assert(fc_log_contains(rt.fc, "configure updated: serial=7"));

    /* from outside: nothing changes */
    char *other[] = { "10.9.9.9:21116" };
    send_cu(9, "10.0.0.1:5000", other, 1);
    cu = next_cu();
    cr_assert_eq(cu->serial, 7);
    cr_assert_str_eq(cu->rendezvous_servers[0], "127.0.0.1:21116");
    /* lower or equal serial from loopback: nothing changes */
    send_cu(5, "127.0.0.1:5000", other, 1);
    send_cu(7, "127.0.0.1:5000", other, 1);
    cu = next_cu();
    cr_assert_eq(cu->serial, 7);
    cr_assert_str_eq(cu->rendezvous_servers[0], "127.0.0.1:21116");
    cr_assert_eq(rt_counter("config_update_ignored"), 3);
}

Test(updates, loopback_after_normalisation)
{
    char *list[] = { "a.example:21116" };
    send_cu(2, "[::ffff:127.0.0.1]:5000", list, 1);
    cr_assert_eq(next_cu()->serial, 2);
    send_cu(3, "[::1]:5000", list, 1);
    cr_assert_eq(next_cu()->serial, 3);
    send_cu(4, "127.1.2.3:5000", list, 1);
    cr_assert_eq(next_cu()->serial, 4);
}

Test(updates, invalid_and_empty_entries_are_dropped)
{
    char *list[] = { "", "1.2.3.4", "[::1]:21116", "bad host!", "h.example:99999", "h.example:21116", ":5",
                     "::1:80" };
    send_cu(1, "127.0.0.1:5000", list, sizeof list / sizeof list[0]);
    const Hbb__ConfigUpdate *cu = next_cu();
    cr_assert_eq(cu->n_rendezvous_servers, 4);
    cr_assert_str_eq(cu->rendezvous_servers[0], "1.2.3.4");
    cr_assert_str_eq(cu->rendezvous_servers[1], "[::1]:21116");
    cr_assert_str_eq(cu->rendezvous_servers[2], "h.example:21116");
    cr_assert_str_eq(cu->rendezvous_servers[3], "::1:80");
}

Test(updates, empty_list_clears)
{
    rt_teardown();
    rt_setup_conf("serial = 1\nrendezvous_servers = 127.0.0.1:21116\n");
    send_cu(2, "127.0.0.1:5000", NULL, 0);
    const Hbb__ConfigUpdate *cu = next_cu();
    cr_assert_eq(cu->serial, 2);
    cr_assert_eq(cu->n_rendezvous_servers, 0);
}

Test(updates, server_list_is_bounded)
{
    char *list[100];
    for (int i = 0; i < 100; i++)
        list[i] = "10.0.0.1:1";
    send_cu(1, "127.0.0.1:5000", list, 100);
    cr_assert_eq(next_cu()->n_rendezvous_servers, 64);
}

Test(updates, reload_keeps_a_config_update_unless_the_settings_change)
{
    rt_teardown();
    rt_setup_conf("serial = 1\nrendezvous_servers = 127.0.0.1:1\n");
    char *list[] = { "127.0.0.1:2" };
    send_cu(5, "127.0.0.1:5000", list, 1);
    cr_assert_eq(fc_reconfigure(rt.fc, rt.mod, rt.st, "serial = 1\nrendezvous_servers = 127.0.0.1:1\nmax_peers=9\n"),
                 0);
    cr_assert_eq(next_cu()->serial, 5);
    cr_assert_eq(fc_reconfigure(rt.fc, rt.mod, rt.st, "serial = 2\nrendezvous_servers = 127.0.0.1:3\n"), 0);
    const Hbb__ConfigUpdate *cu = next_cu();
    cr_assert_eq(cu->serial, 2);
    cr_assert_str_eq(cu->rendezvous_servers[0], "127.0.0.1:3");
}

Test(updates, config_update_over_tcp_is_not_handled)
{
    Hbb__ConfigUpdate cu = HBB__CONFIG_UPDATE__INIT;
    cu.serial = 9;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_CONFIGURE_UPDATE;
    m.configure_update = &cu;
    rdv_addr a = fc_addr("127.0.0.1:1");
    rdv_conn_id c = fc_conn_open(rt.fc, "main", RDV_TR_TCP, &a);
    cr_assert_eq(fc_conn_msg(rt.fc, c, &m), -ENOENT);
    cr_assert_null(next_cu());
}

/* ------------------------------------------------------------------ SoftwareUpdate */
static const fc_sent *send_su(const char *url)
{
    Hbb__SoftwareUpdate su = HBB__SOFTWARE_UPDATE__INIT;
    su.url = (char *)url;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_SOFTWARE_UPDATE;
    m.software_update = &su;
    rdv_addr a = fc_addr("10.0.0.1:5000");
    cr_assert_eq(fc_udp(rt.fc, "main", &a, &m), RDV_OK);
    return fc_next_sent(rt.fc);
}

Test(updates, r46_software_update_is_off_by_default)
{
    cr_assert_null(send_su("1.1.8"));
    cr_assert_null(send_su(""));
}

Test(updates, r46_software_update_answers_other_versions)
{
    rt_teardown();
    rt_setup_conf("software_url = \"https://example.invalid/rustdesk-1.1.9.exe\"\n");
    const fc_sent *s = send_su("1.1.8");
    cr_assert_not_null(s);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_SOFTWARE_UPDATE);
    cr_assert_str_eq(s->msg->software_update->url, "https://example.invalid/rustdesk-1.1.9.exe");
    rdv_addr a = fc_addr("10.0.0.1:5000");
    cr_assert(rdv_addr_equal(&s->to, &a));
    cr_assert_null(send_su("1.1.9"));
    cr_assert_eq(rt_counter("software_updates"), 1);
    cr_assert(fc_log_contains(rt.fc, "version: 1.1.9"));
}

Test(updates, software_url_without_a_version_stays_silent)
{
    rt_teardown();
    rt_setup_conf("software_url = \"https://example.invalid/download\"\n");
    cr_assert_null(send_su("1.1.8"));
}

Test(updates, version_from_url_matches_hbb_common)
{
    char v[64];
    struct { const char *url, *want; } cases[] = {
        { "https://example.invalid/rustdesk-1.1.9.exe", "1.1.9" },
        { "https://example.invalid/rustdesk-1.1.9", "1.1.9" },
        { "https://example.invalid/rustdesk-1.1.9-windows_x64.exe", "windows_x64" },
        { "https://example.invalid/rustdesk-1.2.0.", "1.2.0" },     /* "" after '.' is not an integer */
        { "https://example.invalid/rustdesk-1.2.0.+7", "1.2.0.+7" }, /* "+7" parses as i32 */
        { "https://example.invalid/rustdesk-1.2", "1.2" },
        { "https://example.invalid/a.b/rustdesk-x", "x" },          /* last '.' before the '-' */
        { "https://example.invalid/rustdesk", "" },                  /* no '-' */
        { "rustdesk-1", "" },                                       /* no '.' */
        { "", "" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        registry_version_from_url(cases[i].url, v, sizeof v);
        cr_assert_str_eq(v, cases[i].want, "%s", cases[i].url);
    }
}

Test(updates, server_validity)
{
    cr_assert(registry_server_valid("1.2.3.4", false));
    cr_assert(registry_server_valid("1.2.3.4:21116", false));
    cr_assert(registry_server_valid("[2001:db8::1]:21116", false));
    cr_assert(registry_server_valid("rs.example.com", false));
    cr_assert(registry_server_valid("rs.example.com:+21116", false));
    cr_assert_not(registry_server_valid("rs.example.com:", false));
    cr_assert_not(registry_server_valid("rs.example.com:65536", false));
    cr_assert_not(registry_server_valid(" b", false), "no whitespace trimming (§8.1)");
    cr_assert_not(registry_server_valid("[::1", false));
    cr_assert_not(registry_server_valid("", false));
    cr_assert(registry_server_valid("localhost:21116", true), "resolved at start-up");
    cr_assert_not(registry_server_valid("no-such-host.invalid:21116", true));
}
