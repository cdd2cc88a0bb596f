/* test_relays.c — relay list, rotation and health check (rendezvous.md
 * §8.1, R98–R102, R171). The health check connects for real to loopback
 * sockets the test opens; the fake core's io watchers are fired by hand. */
#include <arpa/inet.h>
#include <poll.h>
#include <unistd.h>

#include "pc_test.h"

static void relays_fini(void) { pct_teardown(); }
TestSuite(relays, .fini = relays_fini);

#define B_ID "400000001"
#define B_ADDR "10.0.0.2:40000"

/* A listening loopback socket; returns fd, *port set. */
static int listen_on(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)*port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 16), 0);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A port nothing listens on (bound once, released). */
static int free_port(void)
{
    int p = 0, fd = listen_on(&p);
    close(fd);
    return p;
}

/* Wait for the resolver thread and run its completions. */
static void pump_resolver(void)
{
    for (int i = 0; i < 500; i++) {
        fc_run_async(fc);
        pthread_mutex_lock(&P->resolver.mu);
        bool idle = !P->resolver.todo && !P->resolver.done && !P->resolver.working;
        pthread_mutex_unlock(&P->resolver.mu);
        if (idle)
            return;
        usleep(10000);
    }
    cr_assert_fail("resolver did not finish");
}

/* Drive a running check to its end: fire each connecting socket's watcher
 * once it is writable. */
static void finish_check(void)
{
    for (int round = 0; round < 20 && P->relays.checking; round++) {
        for (size_t i = 0; i < P->relays.nconf && P->relays.checking; i++) {
            int fd = P->relays.conf[i]->fd;
            if (fd < 0)
                continue;
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };
            cr_assert_eq(poll(&pfd, 1, 2000), 1, "connect did not complete");
            cr_assert_eq(fc_io_fire(fc, fd, RDV_IO_WRITE), 0);
        }
    }
    cr_assert_not(P->relays.checking, "check still running");
}

/* Run one check now (the tick). */
static void run_check(void)
{
    pc_relays_check(P);
    finish_check();
}

static const char *next_relay(void)
{
    static char out[128];
    static int port = 51000;
    char a[32];
    snprintf(a, sizeof a, "10.0.0.1:%d", port++);
    fc_conn_msg(fc, pct_open(a), pct_phr(B_ID, 1, KEYS.licence));
    const fc_sent *s = pct_expect_push(B_ADDR, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    snprintf(out, sizeof out, "%s", s->msg->punch_hole->relay_server);
    return out;
}

Test(relays, R98_two_relays_strictly_alternate)
{
    pct_setup_conf("relay_servers=127.0.0.1:31001,127.0.0.1:31002\nrelay_check_ms=0\n");
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    for (int i = 0; i < 10; i++)
        cr_assert_str_eq(next_relay(), i % 2 ? "127.0.0.1:31002" : "127.0.0.1:31001");
    cr_assert_str_eq(pct_admin("rs"), "127.0.0.1:31001\n127.0.0.1:31002\n");
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.relays"), 2);
}

Test(relays, no_relay_means_empty_string)
{
    pct_setup();
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    cr_assert_str_eq(next_relay(), "");
    cr_assert_str_eq(pct_admin("rs"), "");
}

Test(relays, R102_single_relay_is_never_checked)
{
    pct_setup_conf("relay_servers=127.0.0.1:31001\nrelay_check_ms=1000\n");
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    fc_advance(fc, 5000);
    cr_assert_not(P->relays.checking);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.relay_checks"), 0);
    cr_assert_str_eq(next_relay(), "127.0.0.1:31001");
    cr_assert_str_eq(next_relay(), "127.0.0.1:31001");
}

Test(relays, R99_unreachable_relay_is_left_out_until_it_answers)
{
    int p1 = 0, l1 = listen_on(&p1), p2 = free_port();
    char conf[256];
    snprintf(conf, sizeof conf, "relay_servers=127.0.0.1:%d,127.0.0.1:%d\nrelay_check_ms=3000\n", p1, p2);
    pct_setup_conf(conf);
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    /* setup's fc_advance(0) ran the first tick: finish that check */
    cr_assert_eq(fc_counter(fc, "punch-coordinator.relay_checks"), 1);
    finish_check();
    char want1[32], want2[32], rs[80];
    snprintf(want1, sizeof want1, "127.0.0.1:%d", p1);
    snprintf(want2, sizeof want2, "127.0.0.1:%d", p2);
    for (int i = 0; i < 4; i++)
        cr_assert_str_eq(next_relay(), want1);
    snprintf(rs, sizeof rs, "%s\n", want1);
    cr_assert_str_eq(pct_admin("rs"), rs);
    cr_assert_eq(fc_gauge(fc, "punch-coordinator.relays_active"), 1);
    cr_assert(fc_log_contains(fc, "reachable relay servers"));
    /* the second one comes up: the next check brings rotation back */
    int l2 = listen_on(&p2);
    fc_advance(fc, 3000);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.relay_checks"), 2);
    finish_check();
    snprintf(rs, sizeof rs, "%s\n%s\n", want1, want2);
    cr_assert_str_eq(pct_admin("rs"), rs);
    const char *r1 = next_relay();
    char first[32];
    snprintf(first, sizeof first, "%s", r1);
    cr_assert_str_neq(next_relay(), first, "rotation resumed");
    close(l1), close(l2);
}

Test(relays, R100_no_relay_reachable_keeps_the_list)
{
    int p1 = free_port(), p2 = free_port();
    char conf[256];
    snprintf(conf, sizeof conf, "relay_servers=127.0.0.1:%d,127.0.0.1:%d\nrelay_check_ms=0\n", p1, p2);
    pct_setup_conf(conf);
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    run_check();
    cr_assert_eq(P->relays.nactive, 2);
    char a[32], b[32];
    snprintf(a, sizeof a, "%s", next_relay());
    snprintf(b, sizeof b, "%s", next_relay());
    cr_assert_str_neq(a, b);
    cr_assert_eq(fc_counter(fc, "punch-coordinator.relay_checks"), 1);
}

Test(relays, a_check_is_skipped_while_one_runs_and_ends_at_the_deadline)
{
    int p1 = 0, l1 = listen_on(&p1), p2 = 0, l2 = listen_on(&p2);
    char conf[256];
    snprintf(conf, sizeof conf,
             "relay_servers=127.0.0.1:%d,127.0.0.1:%d\nrelay_check_ms=1000\nrelay_check_timeout_ms=2500\n", p1, p2);
    pct_setup_conf(conf);
    cr_assert(P->relays.checking);
    /* only the first entry's connect is reported; the second never is */
    int fd = P->relays.conf[0]->fd;
    if (fd >= 0) {
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        cr_assert_eq(poll(&pfd, 1, 2000), 1);
        fc_io_fire(fc, fd, RDV_IO_WRITE);
    }
    if (P->relays.conf[1]->fd < 0) { /* the kernel answered at once: nothing to wait for */
        cr_assert_not(P->relays.checking);
    } else {
        fc_advance(fc, 1000); /* the next tick while still running */
        cr_assert_eq(fc_counter(fc, "punch-coordinator.relay_check_skipped"), 1);
        fc_advance(fc, 1500); /* the deadline */
        cr_assert_not(P->relays.checking);
        cr_assert_eq(P->relays.conf[1]->fd, -1, "sockets of the abandoned connects are closed");
        cr_assert_eq(P->relays.nactive, 1);
        cr_assert_eq(P->relays.active[0], 0);
    }
    close(l1), close(l2);
}

Test(relays, changing_the_list_abandons_a_running_check)
{
    int p1 = 0, l1 = listen_on(&p1), p2 = 0, l2 = listen_on(&p2);
    char conf[256];
    snprintf(conf, sizeof conf, "relay_servers=127.0.0.1:%d,127.0.0.1:%d\n", p1, p2);
    pct_setup_conf(conf);
    cr_assert_str_eq(pct_admin("rs 127.0.0.1:31005"), "");
    cr_assert_not(P->relays.checking);
    cr_assert_str_eq(pct_admin("rs"), "127.0.0.1:31005\n");
    close(l1), close(l2);
}

Test(relays, R171_rs_replaces_both_lists)
{
    pct_setup_conf("relay_servers=127.0.0.1:31001,127.0.0.1:31002\nrelay_check_ms=0\n");
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    cr_assert_str_eq(pct_admin("rs"), "127.0.0.1:31001\n127.0.0.1:31002\n", "configured order");
    cr_assert_str_eq(pct_admin("rs 127.0.0.1:31005"), "");
    cr_assert_str_eq(pct_admin("relay-servers"), "127.0.0.1:31005\n");
    cr_assert_str_eq(next_relay(), "127.0.0.1:31005");
    cr_assert_str_eq(pct_admin("rs 1.2.3.4,,[::1]:5,5.6.7.8:21117"), "");
    cr_assert_str_eq(pct_admin("rs"), "1.2.3.4\n[::1]:5\n5.6.7.8:21117\n", "empty entries vanish, text kept");
}

Test(relays, entries_are_classified_like_upstream)
{
    rdv_addr a;
    struct { const char *text; int want; } cases[] = {
        { "127.0.0.1:31001", 1 }, { "1.2.3.4", 1 }, { "[::1]:21117", 1 }, { "[2001:db8::1]:1", 1 },
        { "relay.example.com", 0 }, { "relay.example.com:21117", 0 }, { "fe80::1:80", 0 },
        { "::1", 0 }, /* upstream splits "::1" into host ":" and port "1": DNS says no */
        { "[::1]", -1 }, { "1.2.3.4:", -1 }, { "1.2.3.4:65536", -1 }, { "1.2.3.4:x", -1 }, { ":80", -1 },
        { "host:-1", -1 }, { "", -1 }, { "[::1]:99999", -1 }, { "[nothex]:80", -1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(pc_relay_classify(cases[i].text, &a), cases[i].want, "%s", cases[i].text);
    cr_assert_eq(pc_relay_classify("1.2.3.4:443", &a), 1);
    cr_assert_eq(rdv_addr_port(&a), 443);
    cr_assert_eq(pc_relay_classify("1.2.3.4", &a), 1);
    cr_assert_eq(rdv_addr_port(&a), 0, "no port given");
}

Test(relays, resolution_rules)
{
    rdv_addr out[PC_RELAY_ADDRS];
    size_t n;
    cr_assert(pc_resolve_entry("localhost:31002", 21117, out, &n));
    cr_assert_geq(n, 1);
    cr_assert_eq(rdv_addr_port(&out[0]), 31002);
    cr_assert(rdv_addr_is_loopback(&out[0]));
    cr_assert(pc_resolve_entry("localhost", 21117, out, &n));
    cr_assert_eq(rdv_addr_port(&out[0]), 21117, "bare host: the default port");
    cr_assert(pc_resolve_entry("9.8.7.6", 21117, out, &n));
    cr_assert_eq(n, 1);
    cr_assert_eq(rdv_addr_port(&out[0]), 21117);
    cr_assert_not(pc_resolve_entry(" localhost", 21117, out, &n), "no trimming: a blank is invalid");
    cr_assert_not(pc_resolve_entry("local host", 21117, out, &n));
    cr_assert_not(pc_resolve_entry("localhost:99999", 21117, out, &n));
    cr_assert_not(pc_resolve_entry("[::1]", 21117, out, &n));
}

Test(relays, R101_names_resolve_off_the_loop_and_bad_ones_are_dropped)
{
    pct_setup_conf("relay_check_ms=0\n");
    /* as hbbs -r gives it: nothing is trimmed, so " localhost" is invalid */
    const char *items[] = { "127.0.0.1:31001,no-such-host.invalid, localhost", "localhost:31002" };
    pc_relays_set(P, items, 2);
    cr_assert_eq(P->relays.nconf, 0, "the old (empty) list stays until the resolver answers");
    pump_resolver();
    cr_assert_str_eq(pct_admin("rs"), "127.0.0.1:31001\nlocalhost:31002\n");
    cr_assert_eq(fc_counter(fc, "punch-coordinator.resolve_failed"), 2);
    cr_assert(fc_log_contains(fc, "no-such-host.invalid"));
    /* a single valid entry left by rs: no rotation, never checked */
    pct_admin("rs 127.0.0.1:31001,no-such-host.invalid");
    pump_resolver();
    cr_assert_str_eq(pct_admin("rs"), "127.0.0.1:31001\n");
    pct_peer(B_ID, B_ADDR, true, 0xb1);
    cr_assert_str_eq(next_relay(), "127.0.0.1:31001");
}

/* Two relays by name, the first listening (its socket returned), the second
 * refusing; a check is started and its resolver job done: connects run. */
static int named_relays_check_started(int *p1, int *p2)
{
    int l1 = listen_on(p1);
    *p2 = free_port();
    char conf[256];
    snprintf(conf, sizeof conf, "relay_servers=localhost:%d,localhost:%d\nrelay_check_ms=0\n", *p1, *p2);
    pct_setup_conf(conf);
    pump_resolver();
    cr_assert_eq(P->relays.nconf, 2);
    pc_relays_check(P);
    cr_assert(P->relays.checking, "waiting for the resolver");
    pump_resolver();
    return l1;
}

Test(relays, names_are_resolved_again_for_each_check)
{
    int p1 = 0, p2 = 0, l1 = named_relays_check_started(&p1, &p2);
    finish_check();
    cr_assert_eq(P->relays.nactive, 1);
    cr_assert_eq(P->relays.active[0], 0);
    close(l1);
}

/* A resolver job of an earlier check that timed out (DNS hung, then
 * recovered) can complete during the next check. It must be ignored: run
 * again, the connects would overwrite sockets still being watched, leaking
 * a watcher that then fires on every loop iteration. */
Test(relays, a_stale_resolver_job_does_not_restart_the_connects)
{
    int p1 = 0, p2 = 0, l1 = named_relays_check_started(&p1, &p2); /* this check's own job ran */
    int fd0 = P->relays.conf[0]->fd, fd1 = P->relays.conf[1]->fd;
    size_t next0 = P->relays.conf[0]->next_cand, next1 = P->relays.conf[1]->next_cand;
    pc_job *stale = pc_job_new(PC_JOB_CHECK, P->relays.gen, 2, 0);
    cr_assert_not_null(stale);
    stale->seq = P->relays.check_seq - 1;
    for (size_t i = 0; i < 2; i++) {
        stale->ok[i] = true;
        cr_assert_eq(rdv_addr_parse(&stale->addrs[i][0], "127.0.0.1", (uint16_t)(i ? p2 : p1)), 0);
        stale->naddrs[i] = 1;
    }
    pc_relays_job_done(P, stale);
    pc_job_free(stale);
    cr_assert_eq(P->relays.conf[0]->fd, fd0, "the running connect was replaced");
    cr_assert_eq(P->relays.conf[1]->fd, fd1, "the running connect was replaced");
    cr_assert_eq(P->relays.conf[0]->next_cand, next0);
    cr_assert_eq(P->relays.conf[1]->next_cand, next1);
    if (P->relays.checking)
        finish_check();
    cr_assert_eq(P->relays.nactive, 1);
    cr_assert_eq(P->relays.active[0], 0);
    close(l1);
}

Test(relays, reload_replaces_the_list_and_keeps_it_when_unchanged)
{
    pct_setup_conf("relay_servers=127.0.0.1:31001,127.0.0.1:31002\nrelay_check_ms=0\n");
    pct_admin("rs 127.0.0.1:31009");
    /* same relay_servers in the file: the runtime list stays */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), P,
                                "relay_servers=127.0.0.1:31001,127.0.0.1:31002\nrelay_check_ms=0\n"), 0);
    cr_assert_str_eq(pct_admin("rs"), "127.0.0.1:31009\n");
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), P, "relay_servers=127.0.0.1:31003\nrelay_check_ms=0\n"), 0);
    cr_assert_str_eq(pct_admin("rs"), "127.0.0.1:31003\n");
}

Test(relays, the_list_is_bounded)
{
    pct_setup_conf("relay_check_ms=0\n");
    char big[PC_RELAY_MAX * 16 + 64] = "rs ";
    for (int i = 0; i < PC_RELAY_MAX + 5; i++) {
        char e[16];
        snprintf(e, sizeof e, "%s10.0.%d.1", i ? "," : "", i);
        strcat(big, e);
    }
    pct_admin(big);
    cr_assert_eq(P->relays.nconf, PC_RELAY_MAX);
    cr_assert(fc_log_contains(fc, "the rest are ignored"));
    char huge[PC_RELAY_TEXT_MAX + 20] = "rs ";
    memset(huge + 3, 'a', PC_RELAY_TEXT_MAX + 5);
    huge[PC_RELAY_TEXT_MAX + 8] = '\0';
    pct_admin(huge);
    cr_assert_eq(P->relays.nconf, 0, "an over-long entry is invalid");
}
