/* test_admin.c — the admin commands `peer <id>` and `peers` (registry_admin.c):
 * the online rule of OnlineRequest, cold peers, addresses, stream bindings,
 * the prefix filter, paging by id and argument errors. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "fake_services.h"

TestSuite(admin, .init = rt_setup, .fini = rt_teardown);

#define OK HBB__REGISTER_PK_RESPONSE__RESULT__OK

static const char P1[] = "P1P1P1P1P1P1P1P1P1P1P1P1P1P1P1P1"; /* 32 bytes */
#define P1_B64 "UDFQMVAxUDFQMVAxUDFQMVAxUDFQMVAxUDFQMVAxUDE="
static const char P9[] = "P9P9P9P9P9P9P9P9P9P9P9P9P9P9P9P9";
#define P9_B64 "UDlQOVA5UDlQOVA5UDlQOVA5UDlQOVA5UDlQOVA5UDk="
/* Must never appear in any answer. */
#define UUID "device-uuid-0123456789"

static char out[1 << 16];

static const char *cmd(const char *line)
{
    cr_assert_eq(fc_admin(rt.fc, line, out, sizeof out), 0, "%s", line);
    cr_assert_null(strstr(out, UUID), "the uuid is never printed: %s", out);
    return out;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* The n-th line (0-based) of s into buf. */
static const char *line_of(const char *s, int n, char *buf, size_t cap)
{
    for (; n > 0 && s; n--)
        if ((s = strchr(s, '\n')))
            s++;
    cr_assert(s && *s, "no line %d", n);
    size_t len = strcspn(s, "\n");
    cr_assert_lt(len, cap);
    memcpy(buf, s, len);
    buf[len] = '\0';
    return buf;
}

static const char *last_line(const char *s, char *buf, size_t cap)
{
    return line_of(s, count_lines(s) - 1, buf, cap);
}

/* ------------------------------------------------------------------ peer */
Test(admin, unknown_id)
{
    cr_assert_str_eq(cmd("peer 999999999"), "no peer 999999999\n");
    cr_assert_str_eq(cmd("peers"), "0 online, 0 matched (online)\n");
    cr_assert_str_eq(cmd("peers all"), "0 online, 0 matched (all)\n");
}

Test(admin, online_after_register_peer)
{
    rt_reg("200000001", UUID, P1, "10.0.0.1:1000");
    fc_advance(rt.fc, 3000);
    cr_assert_str_eq(cmd("peer 200000001"), "id: 200000001\n"
                                            "status: online\n"
                                            "last registration: 3s ago\n"
                                            "address: 10.0.0.1:1000\n"
                                            "public key: 32 bytes " P1_B64 "\n"
                                            "uuid: stored\n"
                                            "stream: no\n"
                                            "cold: no\n");
    cr_assert_str_eq(cmd("peers"), "1 online, 1 matched (online)\n"
                                   "200000001 online 3s 10.0.0.1:1000\n");
}

Test(admin, offline_after_the_online_window)
{
    fc_advance(rt.fc, 500); /* between two sweeps (sweep_ms 1000) when the window ends */
    rt_reg("200000001", UUID, P1, "10.0.0.1:1000");
    fc_advance(rt.fc, 29999);
    cr_assert(strstr(cmd("peer 200000001"), "status: online\nlast registration: 29s ago\n"));
    cr_assert(rt_online("200000001"), "OnlineRequest agrees");
    /* 30 s: outside the window, 500 ms before the sweep sees it: the rule
     * is the clock, as OnlineRequest's */
    fc_advance(rt.fc, 1);
    cr_assert_not(rt_online("200000001"));
    cr_assert_eq(rt.offline_hooks, 0, "not swept yet");
    cr_assert(strstr(cmd("peer 200000001"), "status: offline\nlast registration: 30s ago\n"
                                            "address: 10.0.0.1:1000\n"),
              "%s", out);
    cr_assert_str_eq(cmd("peers"), "0 online, 0 matched (online)\n");
    cr_assert_str_eq(cmd("peers all"), "0 online, 1 matched (all)\n"
                                       "200000001 offline 30s 10.0.0.1:1000\n");
    /* it comes back with the next registration */
    cr_assert_eq(rt_reg_peer("200000001", 0, "10.0.0.1:1000"), 0);
    cr_assert_str_eq(cmd("peers"), "1 online, 1 matched (online)\n"
                                   "200000001 online 0s 10.0.0.1:1000\n");
}

Test(admin, ipv6_and_ipv4_mapped_addresses)
{
    rt_reg("200000006", UUID, P1, "[2001:db8::6]:4000");
    rt_reg("200000004", UUID, P1, "[::ffff:10.0.0.4]:4004");
    cr_assert(strstr(cmd("peer 200000006"), "\naddress: [2001:db8::6]:4000\n"), "%s", out);
    cr_assert(strstr(cmd("peer 200000004"), "\naddress: 10.0.0.4:4004\n"), "IPv4-mapped shown as IPv4: %s", out);
    cr_assert_str_eq(cmd("peers"), "2 online, 2 matched (online)\n"
                                   "200000004 online 0s 10.0.0.4:4004\n"
                                   "200000006 online 0s [2001:db8::6]:4000\n");
}

Test(admin, stream_bindings)
{
    Hbb__RegisterPk rk = HBB__REGISTER_PK__INIT;
    rk.id = "500000001";
    rk.uuid.data = (uint8_t *)UUID, rk.uuid.len = strlen(UUID);
    rk.pk.data = (uint8_t *)P1, rk.pk.len = 32;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &rk;
    rdv_addr a = fc_addr("10.0.0.5:5000");
    rdv_conn_id c = fc_conn_open(rt.fc, "ws", RDV_TR_WS, &a);
    cr_assert_eq(fc_conn_msg(rt.fc, c, &m), RDV_OK);
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert(s && s->msg && s->msg->register_pk_response->result == OK);
    char want[128];
    snprintf(want, sizeof want, "\nstream: websocket connection %llu (registered on it)\n", (unsigned long long)c);
    cr_assert(strstr(cmd("peer 500000001"), want), "%s", out);
    cr_assert(strstr(out, "\naddress: 10.0.0.5:5000\n"));
    fc_conn_peer_close(rt.fc, c);
    cr_assert(strstr(cmd("peer 500000001"), "\nstream: no\n"), "unbound when the connection ends: %s", out);
    cr_assert(strstr(out, "\nstatus: online\n"), "still inside the window");

    /* a binding made by another module through the service */
    rdv_conn_id c2 = fc_conn_open(rt.fc, "main", RDV_TR_TCP, &a);
    cr_assert_eq(rt.api->set_conn(rt.self, "500000001", c2), 0);
    snprintf(want, sizeof want, "\nstream: connection %llu (bound by another module)\n", (unsigned long long)c2);
    cr_assert(strstr(cmd("peer 500000001"), want), "%s", out);
}

Test(admin, ids_are_escaped_and_accepted_escaped)
{
    /* A client chose an id with a space and a newline: one line, no forged one. */
    cr_assert_eq(rt_reg_pk("bad id\nx\\y", UUID, P1, "10.0.0.7:7"), OK);
    cr_assert_str_eq(cmd("peers"), "1 online, 1 matched (online)\n"
                                   "bad\\x20id\\x0ax\\x5cy online 0s 10.0.0.7:7\n");
    cr_assert(strstr(cmd("peer bad\\x20id\\x0ax\\x5cy"), "id: bad\\x20id\\x0ax\\x5cy\nstatus: online\n"), "%s", out);
    cr_assert_str_eq(cmd("peers online bad\\x20"), "1 online, 1 matched (online, prefix bad\\x20)\n"
                                                   "bad\\x20id\\x0ax\\x5cy online 0s 10.0.0.7:7\n");
    cr_assert_str_eq(cmd("peer bad"), "no peer bad\n");
}

/* ------------------------------------------------------------------ cold peers */
static void setup_stored(void)
{
    rt_begin(true);
    fake_storage_add(&rt.fs, "300000001", UUID, strlen(UUID), P9, 32, "10.0.0.5");
    fake_storage_add(&rt.fs, "300000002", "", 0, "", 0, "");
    cr_assert_eq(rt_load(NULL), 0);
}

TestSuite(admin_stored, .init = setup_stored, .fini = rt_teardown);

Test(admin_stored, cold_peer_loaded_from_storage)
{
    cr_assert_str_eq(cmd("peer 300000001"), "id: 300000001\n"
                                            "status: offline\n"
                                            "last registration: never since start\n"
                                            "address: none\n"
                                            "public key: 32 bytes " P9_B64 "\n"
                                            "uuid: stored\n"
                                            "stream: no\n"
                                            "cold: yes (loaded from storage, not seen since start)\n");
    cr_assert(strstr(cmd("peer 300000002"), "\npublic key: none\nuuid: none\n"), "%s", out);
    cr_assert_eq(rt_gauge("cold"), 2, "the commands never warm a cold peer");
    cr_assert_str_eq(cmd("peers"), "0 online, 0 matched (online)\n");
    cr_assert_str_eq(cmd("peers all"), "0 online, 2 matched (all)\n"
                                       "300000001 offline never none\n"
                                       "300000002 offline never none\n");
    cr_assert_eq(rt_gauge("cold"), 2);
}

Test(admin_stored, warmed_then_registered)
{
    /* RegisterPeer does not see a cold peer (R54): still cold, offline */
    cr_assert_eq(rt_reg_peer("300000001", 0, "10.0.0.5:4000"), 1);
    cr_assert(strstr(cmd("peer 300000001"), "\ncold: yes"), "%s", out);
    /* RegisterPk warms it; nothing changed (same uuid, key and IP), so it
     * is not registered yet (R54): warm, offline, never */
    cr_assert_eq(rt_reg_pk("300000001", UUID, P9, "10.0.0.5:4000"), OK);
    cr_assert(strstr(cmd("peer 300000001"), "status: offline\nlast registration: never since start\n"
                                            "address: none\n"),
              "%s", out);
    cr_assert(strstr(out, "\ncold: no\n"), "%s", out);
    cr_assert_eq(rt_gauge("cold"), 1);
    /* the next RegisterPeer makes it online */
    cr_assert_eq(rt_reg_peer("300000001", 0, "10.0.0.5:4000"), 0);
    fc_advance(rt.fc, 2000);
    cr_assert(strstr(cmd("peer 300000001"), "status: online\nlast registration: 2s ago\naddress: 10.0.0.5:4000\n"),
              "%s", out);
    cr_assert(strstr(out, "\ncold: no\n"));
    cr_assert_str_eq(cmd("peers all"), "1 online, 2 matched (all)\n"
                                       "300000001 online 2s 10.0.0.5:4000\n"
                                       "300000002 offline never none\n");
}

/* ------------------------------------------------------------------ listing */
static void reg_id(const char *id, const char *from)
{
    cr_assert_eq(rt_reg_pk(id, UUID, P1, from), OK, "RegisterPk %s", id);
}

Test(admin, prefix_filter)
{
    reg_id("111000002", "10.0.0.1:1");
    reg_id("111000001", "10.0.0.1:2");
    reg_id("112000001", "10.0.0.1:3");
    reg_id("222000001", "10.0.0.1:4");
    cr_assert_str_eq(cmd("peers 111"), "2 online, 2 matched (online, prefix 111)\n"
                                       "111000001 online 0s 10.0.0.1:2\n"
                                       "111000002 online 0s 10.0.0.1:1\n");
    cr_assert_str_eq(cmd("peers all 11"), "3 online, 3 matched (all, prefix 11)\n"
                                          "111000001 online 0s 10.0.0.1:2\n"
                                          "111000002 online 0s 10.0.0.1:1\n"
                                          "112000001 online 0s 10.0.0.1:3\n");
    cr_assert_str_eq(cmd("peers 3"), "0 online, 0 matched (online, prefix 3)\n");
    cr_assert_str_eq(cmd("peers 1110000011"), "0 online, 0 matched (online, prefix 1110000011)\n",
                     "a prefix longer than the id");
    cr_assert_str_eq(cmd("peers online 111000001"), "1 online, 1 matched (online, prefix 111000001)\n"
                                                    "111000001 online 0s 10.0.0.1:2\n");
    /* "-" = no prefix, then a cursor: ids after it */
    cr_assert_str_eq(cmd("peers all - 111000002"), "4 online, 4 matched (all, after 111000002)\n"
                                                   "112000001 online 0s 10.0.0.1:3\n"
                                                   "222000001 online 0s 10.0.0.1:4\n");
    cr_assert_str_eq(cmd("peers all 11 111000001"), "3 online, 3 matched (all, prefix 11, after 111000001)\n"
                                                    "111000002 online 0s 10.0.0.1:1\n"
                                                    "112000001 online 0s 10.0.0.1:3\n");
}

Test(admin, all_versus_online)
{
    reg_id("600000003", "10.0.0.1:3");
    fc_advance(rt.fc, 20000);
    reg_id("600000001", "10.0.0.1:1");
    reg_id("600000002", "10.0.0.1:2");
    fc_advance(rt.fc, 15000); /* 600000003: 35 s, offline; the others 15 s */
    cr_assert_str_eq(cmd("peers"), "2 online, 2 matched (online)\n"
                                   "600000001 online 15s 10.0.0.1:1\n"
                                   "600000002 online 15s 10.0.0.1:2\n");
    cr_assert_str_eq(cmd("peers online"), out);
    cr_assert_str_eq(cmd("peers all"), "2 online, 3 matched (all)\n"
                                       "600000001 online 15s 10.0.0.1:1\n"
                                       "600000002 online 15s 10.0.0.1:2\n"
                                       "600000003 offline 35s 10.0.0.1:3\n");
    cr_assert_eq(rt.api->online_count(rt.self), 2, "the same count as the service");
    /* a prefix that is a mode word needs the mode first */
    cr_assert_str_eq(cmd("peers all all"), "0 online, 0 matched (all, prefix all)\n");
}

/* 250 peers registered in a scrambled order; pages of 100 by id. */
Test(admin, paging_across_250_peers)
{
    char id[32], from[32], want[64], buf[128];
    for (int k = 0; k < 250; k++) {
        int i = (k * 7) % 250; /* 7 and 250 are coprime: each i once */
        snprintf(id, sizeof id, "400000%03d", i);
        snprintf(from, sizeof from, "10.0.%d.%d:%d", i / 200, i % 200, 1000 + i);
        reg_id(id, from);
    }
    cmd("peers");
    cr_assert_eq(count_lines(out), 102, "header, 100 peers, next-page line");
    cr_assert_str_eq(line_of(out, 0, buf, sizeof buf), "250 online, 250 matched (online)");
    for (int i = 0; i < 100; i++) {
        snprintf(want, sizeof want, "400000%03d online 0s 10.0.%d.%d:%d", i, i / 200, i % 200, 1000 + i);
        cr_assert_str_eq(line_of(out, 1 + i, buf, sizeof buf), want);
    }
    cr_assert_str_eq(last_line(out, buf, sizeof buf), "next page: peers online - 400000099");

    /* the hint is a command line as it stands */
    char next[128];
    snprintf(next, sizeof next, "%s", last_line(out, buf, sizeof buf) + strlen("next page: "));
    cmd(next);
    cr_assert_eq(count_lines(out), 102);
    cr_assert_str_eq(line_of(out, 0, buf, sizeof buf), "250 online, 250 matched (online, after 400000099)");
    cr_assert_str_eq(line_of(out, 1, buf, sizeof buf), "400000100 online 0s 10.0.0.100:1100");
    cr_assert_str_eq(line_of(out, 100, buf, sizeof buf), "400000199 online 0s 10.0.0.199:1199");
    cr_assert_str_eq(last_line(out, buf, sizeof buf), "next page: peers online - 400000199");

    snprintf(next, sizeof next, "%s", last_line(out, buf, sizeof buf) + strlen("next page: "));
    cmd(next);
    cr_assert_eq(count_lines(out), 51, "header and the last 50, no next-page line");
    cr_assert_str_eq(line_of(out, 1, buf, sizeof buf), "400000200 online 0s 10.0.1.0:1200");
    cr_assert_str_eq(last_line(out, buf, sizeof buf), "400000249 online 0s 10.0.1.49:1249");

    /* exactly 100 matches: one full page, no next-page line */
    cmd("peers all 4000001");
    cr_assert_eq(count_lines(out), 101);
    cr_assert_str_eq(line_of(out, 0, buf, sizeof buf), "100 online, 100 matched (all, prefix 4000001)");
    cr_assert_str_eq(last_line(out, buf, sizeof buf), "400000199 online 0s 10.0.0.199:1199");

    /* with a prefix, the hint keeps it */
    cmd("peers all 40000");
    cr_assert_str_eq(line_of(out, 0, buf, sizeof buf), "250 online, 250 matched (all, prefix 40000)");
    cr_assert_str_eq(last_line(out, buf, sizeof buf), "next page: peers all 40000 400000099");
}

Test(admin, bad_arguments_give_the_usage)
{
    reg_id("700000001", "10.0.0.1:1");
    cr_assert_str_eq(cmd("peer"), "usage: peer <id>\n");
    cr_assert_str_eq(cmd("peer 700000001 extra"), "usage: peer <id>\n");
    cr_assert_str_eq(cmd("peer 7000\\x0"), "usage: peer <id>\n", "incomplete escape");
    cr_assert_str_eq(cmd("peer 7000\\x00"), "usage: peer <id>\n", "NUL");
    cr_assert_str_eq(cmd("peer 7000\\n"), "usage: peer <id>\n", "only \\xNN escapes");
    static const char usage[] = "usage: peers [online|all] [<id-prefix>|- [<after-id>]]\n";
    cr_assert_str_eq(cmd("peers online 7 700000000 x"), usage, "too many words");
    cr_assert_str_eq(cmd("peers 7 700000000 x"), usage);
    cr_assert_str_eq(cmd("peers all \\xzz"), usage);
    cr_assert_str_eq(cmd("peers all - \\x"), usage);
    char line[400] = "peers ";
    memset(line + 6, '7', 256);
    cr_assert_str_eq(cmd(line), usage, "a prefix longer than any id");
}
