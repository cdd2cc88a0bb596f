/* test_relay_cmd.c — the hbbr console (relay.md §8) on the core's admin
 * socket and on the loopback TCP console, list files (§7), and the number
 * formats shared with upstream. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay_test.h"

TestSuite(cmd, .init = rt_setup, .fini = rt_teardown);

static const char *run(const char *line) { return rt_admin(line); }

/* ------------------------------------------------------------------ formats */
Test(cmd, f64_prints_like_rust)
{
    char b[400];
    cr_assert_str_eq(relay_fmt_f64(32, b, sizeof b), "32");
    cr_assert_str_eq(relay_fmt_f64(1024, b, sizeof b), "1024");
    cr_assert_str_eq(relay_fmt_f64(0.5, b, sizeof b), "0.5");
    cr_assert_str_eq(relay_fmt_f64(0.66, b, sizeof b), "0.66");
    cr_assert_str_eq(relay_fmt_f64(0.1, b, sizeof b), "0.1");
    cr_assert_str_eq(relay_fmt_f64(104857 / 1048576.0, b, sizeof b), "0.09999942779541016");
    cr_assert_str_eq(relay_fmt_f64(1e21, b, sizeof b), "1000000000000000000000");
    cr_assert_str_eq(relay_fmt_f64(1e-7, b, sizeof b), "0.0000001");
    cr_assert_str_eq(relay_fmt_f64(0, b, sizeof b), "0");
    cr_assert_str_eq(relay_fmt_f64(123.456, b, sizeof b), "123.456");
}

Test(cmd, numbers_parse_like_upstream)
{
    double d;
    uint64_t u;
    cr_assert_eq(relay_parse_pos_f64("2.5", &d), 0);
    cr_assert_eq(relay_parse_pos_f64("1e3", &d), 0);
    cr_assert_eq(d, 1000);
    const char *bad[] = { "", "abc", "0", "-1", "0x10", " 1", "1 ", "inf", "nan", "1e", "." };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(relay_parse_pos_f64(bad[i], &d), -EINVAL, "'%s'", bad[i]);
    cr_assert_eq(relay_parse_pos_u64("60", &u), 0);
    cr_assert_eq(u, 60);
    cr_assert_eq(relay_parse_pos_u64("+7", &u), 0);
    const char *ubad[] = { "", "0", "-1", "1.5", "18446744073709551616", "x" };
    for (size_t i = 0; i < sizeof ubad / sizeof *ubad; i++)
        cr_assert_eq(relay_parse_pos_u64(ubad[i], &u), -EINVAL, "'%s'", ubad[i]);
}

/* ------------------------------------------------------------------ lists (§7) */
Test(cmd, L73_L74_list_format)
{
    relay_set s = { .name = "t", .max = 100 };
    const char text[] = "# note\n\n   10.1.1.1   \r\n10.0.0.0/8\n1.2.3.4 comment here\n5.6.7.8\tx\n";
    size_t dropped;
    cr_assert_eq(relay_set_parse(&s, text, sizeof text - 1, &dropped), 5);
    cr_assert(relay_set_has(&s, "10.1.1.1"));
    cr_assert(relay_set_has(&s, "#"), "a comment line yields the entry '#'");
    cr_assert(relay_set_has(&s, "10.0.0.0/8"), "kept literally: no CIDR");
    cr_assert_not(relay_set_has(&s, "10.0.0.1"));
    cr_assert(relay_set_has(&s, "1.2.3.4"));
    cr_assert(relay_set_has(&s, "5.6.7.8\tx"), "tabs are not separators");
    cr_assert_not(relay_set_has(&s, ""));
    relay_set_clear(&s);
}

Test(cmd, list_cap_and_bad_files)
{
    relay_set s = { .name = "t", .max = 2 };
    size_t dropped;
    cr_assert_eq(relay_set_parse(&s, "a\nb\nc\nd\n", 8, &dropped), 2);
    cr_assert_eq(dropped, 2);
    cr_assert_eq(relay_set_parse(&s, "a\n\xff\xfe\n", 5, &dropped), -EILSEQ, "not UTF-8: no entries");
    cr_assert_eq(s.n, 0);
    cr_assert_eq(relay_set_load(&s, "/nonexistent/blacklist.txt", &dropped), -ENOENT);
    relay_set_clear(&s);
}

Test(cmd, L75_L77_lists_come_from_the_working_directory)
{
    cr_assert_str_eq(run("b"), "");
    cr_assert_str_eq(run("B"), "");
    rt_write_file("blacklist.txt", "1.1.1.1\n");
    rt_write_file("blocklist.txt", "2.2.2.2\n3.3.3.3\n");
    cr_assert_eq(rt_reload_module(NULL), 0);
    cr_assert_str_eq(run("b"), "1.1.1.1\n");
    cr_assert_eq(rt_gauge("blocklist_entries"), 2);
    cr_assert(fc_log_contains(fc, "blocklist: 2 entries from blocklist.txt"));
}

/* ------------------------------------------------------------------ commands (§8) */
Test(cmd, L78_help_has_the_twelve_lines)
{
    const char *h = run("relay-help");
    int lines = 0;
    for (const char *p = h; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 12);
    cr_assert(strncmp(h, "blacklist-add(ba) <ip>\n", 23) == 0);
    cr_assert(strstr(h, "usage(u)\n") != NULL);
}

Test(cmd, L80_blacklist_commands)
{
    cr_assert_str_eq(run("b 1.2.3.4"), "false\n");
    cr_assert_str_eq(run("ba 1.2.3.4|5.6.7.8"), "");
    cr_assert_str_eq(run("b 1.2.3.4"), "true\n");
    cr_assert_str_eq(run("blacklist 5.6.7.8"), "true\n");
    const char *all = run("b");
    cr_assert(strcmp(all, "1.2.3.4\n5.6.7.8\n") == 0 || strcmp(all, "5.6.7.8\n1.2.3.4\n") == 0);
    run("br 1.2.3.4");
    cr_assert_str_eq(run("b"), "5.6.7.8\n");
    run("ba 9.9.9.9");
    run("br all");
    cr_assert_str_eq(run("b"), "");
    cr_assert_str_eq(run("ba"), "", "missing argument: no-op");
    cr_assert_str_eq(run("blacklist-remove"), "");
}

Test(cmd, blocklist_commands_are_separate)
{
    run("Ba 1.2.3.4");
    cr_assert_str_eq(run("B 1.2.3.4"), "true\n");
    cr_assert_str_eq(run("b 1.2.3.4"), "false\n", "b and B differ");
    run("blocklist-add 4.4.4.4");
    run("Br 1.2.3.4|4.4.4.4");
    cr_assert_str_eq(run("blocklist"), "");
}

Test(cmd, L81_single_bandwidth)
{
    cr_assert_str_eq(run("sb"), "128Mb/s\n");
    cr_assert_str_eq(run("sb 256"), "");
    cr_assert_str_eq(run("sb"), "256Mb/s\n");
    cr_assert_str_eq(run("sb abc"), "");
    cr_assert_str_eq(run("sb -1"), "");
    cr_assert_str_eq(run("sb 0"), "");
    cr_assert_str_eq(run("single-bandwidth"), "256Mb/s\n");
    run("sb 0.1");
    cr_assert_str_eq(run("sb"), "0.09999942779541016Mb/s\n", "stored as truncate(v x 2^20)");
}

Test(cmd, L82_other_values)
{
    cr_assert_str_eq(run("tb"), "1024Mb/s\n");
    cr_assert_str_eq(run("ls"), "32Mb/s\n");
    cr_assert_str_eq(run("dt"), "0.66\n");
    cr_assert_str_eq(run("t"), "1800s\n");
    run("dt 0.5");
    cr_assert_str_eq(run("dt"), "0.5\n");
    run("dt 0.29");
    cr_assert_str_eq(run("downgrade-threshold"), "0.28\n");
    run("t 60");
    cr_assert_str_eq(run("t"), "60s\n");
    run("t 1.5");
    cr_assert_str_eq(run("downgrade-start-check"), "60s\n");
    run("ls 2");
    cr_assert_str_eq(run("limit-speed"), "2Mb/s\n");
    run("tb 4");
    cr_assert_str_eq(run("total-bandwidth"), "4Mb/s\n");
    cr_assert_eq(R->bw.global.rate, 4u << 20, "tb re-rates the global bucket at once");
}

Test(cmd, L83_usage_lists_pairs_older_than_a_tick_largest_first)
{
    rt_conn a, b, c, d, e, f;
    rt_pair(&a, &b, "u1");
    rt_pair(&c, &d, "u2");
    uint8_t x[4096] = { 0 }, sink[8192];
    rt_write_all(a.cli, x, 1000);
    rt_write_all(c.cli, x, 3000);
    cr_assert_eq(rt_read(b.cli, sink, 1000, 1000), 1000);
    cr_assert_eq(rt_read(d.cli, sink, 3000, 1000), 3000);
    fc_advance(fc, 2000);
    rt_pair(&e, &f, "u3"); /* younger than a tick: absent */
    const char *u = run("u");
    /* 3000 bytes = 24000 bits over 2000 ms: average 12 kb/s; the tick at
     * 1000 ms saw all of it (current 0 at 2000 ms, highest 24). */
    cr_assert_str_eq(u, "10.0.0.2:4002: 2s 0.00MB 24kb/s 12kb/s 0kb/s\n"
                        "10.0.0.2:4002: 2s 0.00MB 8kb/s 4kb/s 0kb/s\n");
    cr_assert_str_eq(run("usage"), u);
}

/* `u` on the admin socket of a busy relay: the answer is cut between
 * lines with the console's marker. Before, the whole list was one print,
 * and a list past the answer's limit came back empty. */
Test(cmd, L83_usage_past_the_answer_limit_keeps_whole_lines)
{
    rt_conn a[6], b[6];
    char uuid[8];
    for (int i = 0; i < 6; i++) {
        snprintf(uuid, sizeof uuid, "u%d", i);
        rt_pair(&a[i], &b[i], uuid);
    }
    fc_advance(fc, 2000);
    char out[128]; /* room for 2 of the 6 lines (44 bytes each) and the marker */
    cr_assert_eq(fc_admin(fc, "u", out, sizeof out), 0);
    static const char line[] = "10.0.0.2:4002: 2s 0.00MB 0kb/s 0kb/s 0kb/s\n";
    char want[256];
    snprintf(want, sizeof want, "%s%s\n[truncated]\n", line, line);
    cr_assert_str_eq(out, want);
}

Test(cmd, L84_L89_unknown_commands_answer_nothing)
{
    rdv_text t = { .limit = 1024 };
    char line[] = "aur Y", line2[] = "xyz", line3[] = " ";
    char *argv[8];
    relay_cmd_run(R, relay_cmd_split(line, argv, 8), argv, &t);
    relay_cmd_run(R, relay_cmd_split(line2, argv, 8), argv, &t);
    relay_cmd_run(R, relay_cmd_split(line3, argv, 8), argv, &t);
    cr_assert_eq(t.len, 0);
    rdv_text_free(&t);
}

Test(cmd, split_is_upstreams)
{
    char line[] = "  ba  1.2.3.4\r\n";
    char *argv[8];
    int argc = relay_cmd_split(line, argv, 8);
    cr_assert_eq(argc, 3);
    cr_assert_str_eq(argv[0], "ba");
    cr_assert_str_eq(argv[1], "", "two spaces give an empty word");
    cr_assert_str_eq(argv[2], "1.2.3.4");
    /* so "ba  x" adds nothing: its argument is the empty word */
    rdv_text t = { .limit = 64 };
    relay_cmd_run(R, argc, argv, &t);
    cr_assert_eq(R->black.n, 0);
    rdv_text_free(&t);
}

/* ------------------------------------------------------------------ loopback console */
/* A console session on a socketpair; *srv is the module's end. */
static int console(int *srv)
{
    int s[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s), 0);
    relay_console_start(R, s[1]);
    *srv = s[1];
    return s[0];
}

/* Everything the console wrote before closing. */
static long console_answer(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, cap - 1 - got, MSG_DONTWAIT);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    return (long)got;
}

Test(cmd, L78_console_runs_one_command_and_closes)
{
    int srv, fd = console(&srv);
    cr_assert_eq(rt_gauge("console_open"), 1);
    send(fd, "h", 1, 0);
    cr_assert_eq(fc_io_fire(fc, srv, RDV_IO_READ), 0);
    char buf[2048];
    console_answer(fd, buf, sizeof buf);
    cr_assert(strncmp(buf, "blacklist-add(ba) <ip>\n", 23) == 0);
    cr_assert(strstr(buf, "usage(u)\n") != NULL);
    cr_assert_eq(rt_gauge("console_open"), 0, "closed after the answer");
    cr_assert_eq(rt_counter("console_sessions"), 1);
    close(fd);
}

Test(cmd, L84_empty_answer_closes_at_once)
{
    int srv, fd = console(&srv);
    send(fd, "xyz", 3, 0);
    fc_io_fire(fc, srv, RDV_IO_READ);
    cr_assert_eq(rt_gauge("console_open"), 0);
    char c;
    cr_assert_eq(recv(fd, &c, 1, MSG_DONTWAIT), 0);
    close(fd);
}

Test(cmd, L85_silent_console_is_closed_after_a_second)
{
    int srv, fd = console(&srv);
    fc_advance(fc, 999);
    cr_assert_eq(rt_gauge("console_open"), 1);
    fc_advance(fc, 1);
    cr_assert_eq(rt_gauge("console_open"), 0);
    char c;
    cr_assert_eq(recv(fd, &c, 1, MSG_DONTWAIT), 0, "closed without output");
    close(fd);
}

Test(cmd, L86_invalid_utf8_closes_without_output)
{
    int srv, fd = console(&srv);
    send(fd, "\xff\xfe", 2, 0);
    fc_io_fire(fc, srv, RDV_IO_READ);
    cr_assert_eq(rt_gauge("console_open"), 0);
    char c;
    cr_assert_eq(recv(fd, &c, 1, MSG_DONTWAIT), 0);
    close(fd);
}

Test(cmd, L87_only_the_first_read_counts)
{
    run("ba 1.2.3.4");
    int srv, fd = console(&srv);
    send(fd, "b", 1, 0);
    fc_io_fire(fc, srv, RDV_IO_READ);
    send(fd, " 1.2.3.4", 8, MSG_NOSIGNAL); /* too late: the answer is out */
    char buf[256];
    console_answer(fd, buf, sizeof buf);
    cr_assert_str_eq(buf, "1.2.3.4\n", "'b' alone lists everything");
    close(fd);
}

Test(cmd, console_writes_the_whole_answer)
{
    for (int i = 0; i < 20000; i++) {
        char line[40];
        snprintf(line, sizeof line, "ba 10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        run(line);
    }
    int srv, fd = console(&srv);
    send(fd, "b", 1, 0);
    fc_io_fire(fc, srv, RDV_IO_READ); /* more than a socketpair holds: the rest waits */
    size_t got = 0;
    char buf[65536];
    for (int spins = 0; spins < 100000 && rt_gauge("console_open"); spins++) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        fc_io_fire(fc, srv, RDV_IO_WRITE);
    }
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0;)
        got += (size_t)n;
    size_t want = 0;
    for (relay_set_entry *e = R->black.head; e; e = e->hh.next)
        want += strlen(e->key) + 1;
    cr_assert_eq(got, want, "upstream may cut long listings; we must not");
    close(fd);
}

Test(cmd, consoles_are_bounded)
{
    int fds[20], srv;
    for (int i = 0; i < 20; i++)
        fds[i] = console(&srv);
    cr_assert_eq(rt_gauge("console_open"), 16);
    char c;
    cr_assert_eq(recv(fds[19], &c, 1, MSG_DONTWAIT), 0, "the 17th and later are closed at once");
    for (int i = 0; i < 20; i++)
        close(fds[i]);
}
