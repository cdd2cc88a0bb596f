/* Integration: running out of file descriptors does not busy-loop or crash,
 * and the server recovers when descriptors free up (issue #2: "sane
 * behaviour when the process runs out of file descriptors"). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"

static const char *const conf_files[] = {
    "00-core.conf",
    "core: { modules = [ \"example\" ]; module_path = \"@MODDIR@\";\n"
    "  listeners = ( { name = \"example\"; port = @PORT@; udp = true; tcp = true; } ); };\n",
    NULL,
};

static void nat_over_tcp(rdvt_server *s)
{
    int t = rdvt_tcp("127.0.0.9", s->port);
    cr_assert_geq(t, 0);
    const uint8_t req[] = { 0x0c, 0xa2, 0x01, 0x00 };
    cr_assert_eq(rdvt_tcp_send_raw(t, req, sizeof req), 0);
    Hbb__RendezvousMessage *r = rdvt_tcp_recv(t, 5000);
    cr_assert_not_null(r, "no answer after descriptors were freed");
    rdvt_msg_free(r);
    close(t);
}

Test(limits, out_of_descriptors_pauses_accepting_and_recovers, .timeout = 120)
{
    rdvt_server s;
    cr_assert_eq(rdvt_prepare(&s, conf_files), 0);
    if (s.valgrind) /* valgrind reserves descriptors of its own; the limit below is too tight for it */
        cr_skip_test("not under valgrind");
    cr_assert_eq(rdvt_start(&s), 0);
    /* rdvd raises its soft limit at start (core/nofile.c), so the limit is
     * lowered afterwards, hard limit included: as if it were the host's. */
    struct rlimit low = { 48, 48 };
    cr_assert_eq(prlimit(s.pid, RLIMIT_NOFILE, &low, NULL), 0);

    enum { N = 120 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = rdvt_tcp("127.0.0.2", s.port); /* the kernel completes them into the backlog */
    long before = rdvt_cpu_ticks(s.pid);
    sleep(2);
    long used = rdvt_cpu_ticks(s.pid) - before;
    long hz = sysconf(_SC_CLK_TCK);
    cr_assert_lt(used, hz / 2, "server burned %ld ticks in 2 s while out of descriptors (busy loop?)", used);
    cr_assert(rdvt_alive(&s));
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    sleep(1);
    nat_over_tcp(&s);
    cr_assert_geq(rdvt_stat(&s, "core.accept_out_of_fds"), 1);
    cr_assert(rdvt_log_contains(&s, "pausing accepts"));
    int st = rdvt_stop(&s);
    rdvt_cleanup(&s);
    cr_assert_eq(st, 0);
}
