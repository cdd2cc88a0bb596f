/* test_ban.c — the operator ban list: the `ban` setting, the admin commands
 * `ban` / `unban` / `bans`, and the ACCESS phase on every transport. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fakecore.h"
#include "ipblocker.h"
#include "tmpdir.h"

static fc_core *fc;
static void *st;
static char out[8192];

static const char *conf = "ban = 192.0.2.7, 198.51.100.0/24, 2001:db8:bad::1, 2001:db8:f00::/48\n";

static void setup(void)
{
    ipbt_enter(); /* admin bans are written to ./admin-bans.txt */
    fc = fc_new();
    cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &st), 0);
}

static void teardown(void)
{
    fc_free(fc);
    ipbt_leave();
}

TestSuite(ban, .init = setup, .fini = teardown);

static int udp_from(const char *from) { return ipbt_udp_from(fc, from); }

static bool tcp_accepted(const char *listener, rdv_transport tr, const char *from)
{
    rdv_addr a = fc_addr(from);
    rdv_conn_id c = fc_conn_open(fc, listener, tr, &a);
    return fc_conn_alive(fc, c);
}

static const char *admin(const char *line)
{
    fc_admin(fc, line, out, sizeof out);
    return out;
}

Test(ban, configured_bans_drop_udp_from_matching_sources)
{
    cr_assert_eq(udp_from("192.0.2.7:1"), RDV_CLOSE);
    cr_assert_eq(udp_from("192.0.2.8:1"), -ENOENT);
    cr_assert_eq(udp_from("198.51.100.200:5"), RDV_CLOSE, "inside the /24");
    cr_assert_eq(udp_from("198.51.101.1:5"), -ENOENT);
    cr_assert_eq(udp_from("[2001:db8:bad::1]:5"), RDV_CLOSE);
    cr_assert_eq(udp_from("[2001:db8:bad::2]:5"), -ENOENT);
    cr_assert_eq(udp_from("[2001:db8:f00:1234::9]:5"), RDV_CLOSE, "inside the /48");
    cr_assert_eq(udp_from("[2001:db8:f01::9]:5"), -ENOENT);
    cr_assert_eq(udp_from("[::ffff:192.0.2.7]:5"), RDV_CLOSE, "mapped IPv4 is normalised");
    cr_assert_eq(fc_counter(fc, "ip-blocker.banned_msgs"), 5);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.bans"), 4);
}

Test(ban, connections_are_refused_on_every_transport)
{
    cr_assert_not(tcp_accepted("main", RDV_TR_TCP, "192.0.2.7:1000"));
    cr_assert_not(tcp_accepted("nat", RDV_TR_TCP, "198.51.100.1:1000"));
    cr_assert_not(tcp_accepted("ws", RDV_TR_WS, "[2001:db8:bad::1]:1000"));
    cr_assert(tcp_accepted("main", RDV_TR_TCP, "192.0.2.6:1000"));
    cr_assert_eq(fc_counter(fc, "ip-blocker.banned_conns"), 3);
}

Test(ban, module_listeners_are_covered_too)
{
    /* A listener a module owns (relay, WebSocket): ACCESS runs at accept. */
    static const rdv_conn_ops ops = { 0 };
    rdv_core *h = fc_handle(fc, "relay");
    rdv_listen_spec spec = { .name = "relay", .transport = RDV_TR_TCP, .port = 21117, .mode = RDV_LISTEN_RAW,
                             .ops = &ops };
    rdv_listener *l = h->api->listen(h, &spec);
    cr_assert_not_null(l);
    rdv_addr bad = fc_addr("192.0.2.7:9"), good = fc_addr("192.0.2.9:9");
    cr_assert_not(fc_conn_alive(fc, fc_owned_open(fc, l, &bad)));
    cr_assert(fc_conn_alive(fc, fc_owned_open(fc, l, &good)));
}

Test(ban, admin_ban_closes_open_connections)
{
    rdv_addr a = fc_addr("203.0.113.5:4000"), b = fc_addr("203.0.113.6:4000");
    rdv_conn_id c1 = fc_conn_open(fc, "main", RDV_TR_TCP, &a);
    rdv_conn_id c2 = fc_conn_open(fc, "relay", RDV_TR_TCP, &a);
    rdv_conn_id c3 = fc_conn_open(fc, "main", RDV_TR_TCP, &b);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.tracked_conns"), 3);
    cr_assert_str_eq(admin("ban 203.0.113.5"), "banned 203.0.113.5, 2 connections closed\n");
    cr_assert_not(fc_conn_alive(fc, c1));
    cr_assert_not(fc_conn_alive(fc, c2));
    cr_assert(fc_conn_alive(fc, c3));
    cr_assert_eq(fc_counter(fc, "ip-blocker.banned_closed"), 2);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.tracked_conns"), 1);
    cr_assert_eq(udp_from("203.0.113.5:1"), RDV_CLOSE);
    cr_assert(fc_log_contains(fc, "banned 203.0.113.5 (admin)"));
}

Test(ban, a_message_on_an_open_connection_closes_it)
{
    /* The ban arrived by reload while the connection was idle: the
     * connection is closed at once; any later message would close it too. */
    rdv_addr a = fc_addr("203.0.113.9:4000");
    rdv_conn_id c = fc_conn_open(fc, "main", RDV_TR_TCP, &a);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "ban = 203.0.113.0/28\n"), 0);
    cr_assert_not(fc_conn_alive(fc, c));
}

Test(ban, cidr_host_bits_are_masked_and_printed_canonically)
{
    cr_assert_str_eq(admin("ban 10.1.2.3/16"), "banned 10.1.0.0/16, 0 connections closed\n");
    cr_assert_eq(udp_from("10.1.200.1:1"), RDV_CLOSE);
    cr_assert_str_eq(admin("ban 2001:db8:1:2:3::1/64"), "banned 2001:db8:1:2::/64, 0 connections closed\n");
    cr_assert_str_eq(admin("ban ::ffff:10.9.9.9"), "banned 10.9.9.9, 0 connections closed\n");
    cr_assert_str_eq(admin("unban 10.1.0.0/16"), "unbanned 10.1.0.0/16\n");
    cr_assert_eq(udp_from("10.1.200.1:1"), -ENOENT);
}

Test(ban, bans_lists_source_and_hits)
{
    udp_from("192.0.2.7:1");
    udp_from("192.0.2.7:2");
    admin("ban 192.0.2.7");
    admin("ban 203.0.113.0/24");
    admin("bans");
    cr_assert_eq(strncmp(out, "5\n", 2), 0, "%s", out);
    cr_assert(strstr(out, "192.0.2.7 conf,admin hits=2\n"), "%s", out);
    cr_assert(strstr(out, "198.51.100.0/24 conf hits=0\n"), "%s", out);
    cr_assert(strstr(out, "2001:db8:bad::1 conf hits=0\n"), "%s", out);
    cr_assert(strstr(out, "2001:db8:f00::/48 conf hits=0\n"), "%s", out);
    cr_assert(strstr(out, "203.0.113.0/24 admin hits=0\n"), "%s", out);
}

Test(ban, unban_of_a_configured_ban_lasts_until_reload)
{
    cr_assert_str_eq(admin("unban 192.0.2.7"), "unbanned 192.0.2.7 (configured: back on the next reload)\n");
    cr_assert_eq(udp_from("192.0.2.7:1"), -ENOENT);
    cr_assert_str_eq(admin("unban 192.0.2.7"), "not banned: 192.0.2.7\n");
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, conf), 0);
    cr_assert_eq(udp_from("192.0.2.7:1"), RDV_CLOSE);
}

Test(ban, admin_bans_survive_a_reload_that_drops_the_configured_ones)
{
    admin("ban 203.0.113.1");
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "ban = 198.51.100.0/24\n"), 0);
    cr_assert_eq(udp_from("203.0.113.1:1"), RDV_CLOSE, "admin ban kept");
    cr_assert_eq(udp_from("192.0.2.7:1"), -ENOENT, "configured ban removed");
    cr_assert_eq(udp_from("198.51.100.3:1"), RDV_CLOSE);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.bans"), 2);
}

Test(ban, bad_input_to_the_commands)
{
    cr_assert_str_eq(admin("ban"), "usage: ban <ip|cidr>\n");
    cr_assert_str_eq(admin("ban not-an-ip"), "usage: ban <ip|cidr>\n");
    cr_assert_str_eq(admin("ban 10.0.0.1/33"), "usage: ban <ip|cidr>\n");
    cr_assert_str_eq(admin("ban 10.0.0.1/"), "usage: ban <ip|cidr>\n");
    cr_assert_str_eq(admin("ban 10.0.0.1/-1"), "usage: ban <ip|cidr>\n");
    cr_assert_str_eq(admin("ban 10.0.0.1/ 8"), "usage: ban <ip|cidr>\n");
    cr_assert_str_eq(admin("ban ::1/129"), "usage: ban <ip|cidr>\n");
    cr_assert_str_eq(admin("unban"), "usage: unban <ip|cidr>\n");
    cr_assert_str_eq(admin("unban 300.1.1.1"), "usage: unban <ip|cidr>\n");
    cr_assert_eq(fc_gauge(fc, "ip-blocker.bans"), 4);
}

Test(ban, bad_configuration_is_refused)
{
    fc_unload(fc, rdv_module_get(), st);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "ban = 10.0.0.0/8, nonsense\n", &st), -EINVAL);
    cr_assert(fc_log_contains(fc, "'nonsense' is not an IP address or CIDR"));
    cr_assert_eq(fc_load(fc, rdv_module_get(), "ban = 10.0.0.1, 10.0.0.2, 10.0.0.3\nban_max = 2\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, rdv_module_get(), NULL, &st), 0);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "ban = 10.0.0.0/40\n"), -EINVAL);
}

Test(ban, the_list_is_bounded)
{
    fc_unload(fc, rdv_module_get(), st);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "ban = 10.0.0.1\nban_max = 3\n", &st), 0);
    admin("ban 10.0.0.2");
    admin("ban 10.0.0.3");
    cr_assert_str_eq(admin("ban 10.0.0.4"), "ban list full (ban_max = 3)\n");
    cr_assert_str_eq(admin("ban 10.0.0.3"), "banned 10.0.0.3, 0 connections closed\n", "already there: fine");
    /* a reload that would overflow with the admin bans is refused whole */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "ban = 10.0.0.5, 10.0.0.6\nban_max = 3\n"), -ENOSPC);
    cr_assert_eq(udp_from("10.0.0.1:1"), RDV_CLOSE, "old configuration kept");
    cr_assert_eq(udp_from("10.0.0.5:1"), -ENOENT);
}

Test(ban, everything_prefix)
{
    cr_assert_str_eq(admin("ban ::/0"), "banned ::/0, 0 connections closed\n");
    cr_assert_eq(udp_from("1.2.3.4:1"), RDV_CLOSE);
    cr_assert_eq(udp_from("[2001:db8::1]:1"), RDV_CLOSE);
    cr_assert_str_eq(admin("ban 0.0.0.0/0"), "banned 0.0.0.0/0, 0 connections closed\n");
    admin("unban ::/0");
    cr_assert_eq(udp_from("1.2.3.4:1"), RDV_CLOSE, "0.0.0.0/0 covers IPv4 only");
    cr_assert_eq(udp_from("[2001:db8::1]:1"), -ENOENT);
}

Test(ban, no_bans_costs_nothing)
{
    fc_unload(fc, rdv_module_get(), st);
    cr_assert_eq(fc_load(fc, rdv_module_get(), NULL, &st), 0);
    cr_assert_eq(udp_from("192.0.2.7:1"), -ENOENT);
    cr_assert(tcp_accepted("main", RDV_TR_TCP, "192.0.2.7:1"));
}

Test(ban, parse_and_print)
{
    ipblocker_ban_key k;
    char buf[80];
    cr_assert(ipblocker_parse_ban("1.2.3.4", &k));
    cr_assert_eq(k.plen, 128);
    cr_assert_str_eq(ipblocker_ban_str(&k, buf, sizeof buf), "1.2.3.4");
    cr_assert(ipblocker_parse_ban("1.2.3.4/0", &k));
    cr_assert_eq(k.plen, 96);
    cr_assert_str_eq(ipblocker_ban_str(&k, buf, sizeof buf), "0.0.0.0/0");
    cr_assert(ipblocker_parse_ban("::ffff:1.2.3.4/120", &k));
    cr_assert_str_eq(ipblocker_ban_str(&k, buf, sizeof buf), "1.2.3.0/24");
    cr_assert(ipblocker_parse_ban("2001:DB8::/32", &k));
    cr_assert_str_eq(ipblocker_ban_str(&k, buf, sizeof buf), "2001:db8::/32");
    /* IPv4-compatible (::a.b.c.d) texts: IPv4 when the prefix reaches the
     * IPv4 part (as sources are normalised), else the IPv6 network as
     * written, so the printed form parses back to the same ban */
    cr_assert(ipblocker_parse_ban("::/90", &k));
    cr_assert_str_eq(ipblocker_ban_str(&k, buf, sizeof buf), "::/90");
    cr_assert(ipblocker_parse_ban("::1.2.3.4/120", &k));
    cr_assert_str_eq(ipblocker_ban_str(&k, buf, sizeof buf), "1.2.3.0/24");
    cr_assert(ipblocker_parse_ban("::/0", &k));
    cr_assert_str_eq(ipblocker_ban_str(&k, buf, sizeof buf), "::/0");
    cr_assert(ipblocker_parse_ban("::1/100", &k)); /* masked first: ::/100, IPv4 space */
    cr_assert_str_eq(ipblocker_ban_str(&k, buf, sizeof buf), "0.0.0.0/4");
    cr_assert(ipblocker_parse_ban("::1", &k));
    cr_assert_str_eq(ipblocker_ban_str(&k, buf, sizeof buf), "::1");
    cr_assert_not(ipblocker_parse_ban("", &k));
    cr_assert_not(ipblocker_parse_ban("1.2.3", &k));
    cr_assert_not(ipblocker_parse_ban("1.2.3.4/32/1", &k));
    cr_assert_not(ipblocker_parse_ban("[::1]", &k));
}

Test(ban, reload_counts_each_ban_once)
{
    fc_unload(fc, rdv_module_get(), st);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "ban = 10.0.0.1\nban_max = 2\n", &st), 0);
    admin("ban 10.0.0.2");
    /* same ban listed twice and already present: still two bans in all */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "ban = 10.0.0.1, 10.0.0.1/32\nban_max = 2\n"), 0);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.bans"), 2);
    /* an admin ban listed in the configuration becomes both */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "ban = 10.0.0.2\nban_max = 2\n"), 0);
    admin("bans");
    cr_assert_str_eq(out, "1\n10.0.0.2 conf,admin hits=0\n");
    cr_assert_eq(udp_from("10.0.0.1:1"), -ENOENT);
}
