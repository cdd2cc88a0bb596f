/* test_relay_oom.c — the relay's tables when memory runs out: uthash's
 * allocations fail through the module's test hook (relay.h). The one
 * operation is refused and counted (relay.oom), nothing exits, the tables
 * stay consistent and later operations work once memory is back. On the
 * code before uthash's non-fatal mode each of these exited the process.
 * Lists: relay.md §7 (L72-L77, L80); waiting sides: §3.4 (L45-L47).
 * WebSocket sides: test_relay_ws.c (suite wsx_oom). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay_test.h"

static void oom_teardown(void)
{
    relay_test_hash_fail_from(0);
    rt_teardown();
}

TestSuite(oom, .init = rt_setup, .fini = oom_teardown);

static const char *run(const char *line) { return rt_admin(line); }

/* Every entry of s is found by its key, and the count agrees. */
static void check_set(const relay_set *s)
{
    size_t n = 0;
    for (relay_set_entry *e = s->head; e; e = e->hh.next, n++)
        cr_assert(relay_set_has(s, e->key), "%s not found by its key", e->key);
    cr_assert_eq(n, s->n);
    cr_assert_eq(HASH_COUNT(s->head), s->n);
}

/* Every waiting side is found by its uuid, the FIFO links agree. */
static void check_waiting(void)
{
    size_t n = 0;
    for (relay_waiter *w = R->wfirst; w; w = w->next, n++) {
        cr_assert_eq(w->next ? w->next->prev : R->wlast, w, "FIFO links");
        relay_waiter *f = NULL;
        HASH_FIND(hh, R->waiting, w->uuid, w->uuid_len, f);
        cr_assert_eq(f, w, "waiting side %.*s not found by its uuid", (int)w->uuid_len, w->uuid);
    }
    cr_assert_eq(n, R->nwaiting);
    cr_assert_eq(HASH_COUNT(R->waiting), n);
    cr_assert_eq(rt_gauge("waiting"), n);
}

/* ------------------------------------------------------------------ lists (relay.md §7) */

/* The first entry makes the table: its header (1st allocation) or its
 * buckets (2nd). Failing either refuses that entry (console L80). */
Test(oom, list_entry_refused_when_the_table_cannot_be_made)
{
    for (unsigned long nth = 1; nth <= 2; nth++) {
        relay_test_hash_fail_from(nth);
        cr_assert_str_eq(run("ba 1.1.1.1"), "", "the console answers as upstream (nothing)");
        cr_assert_eq(rt_counter("oom"), nth, "allocation %lu failing", nth);
        cr_assert_eq(rt_gauge("blacklist_entries"), 0);
        cr_assert_null(R->black.head);
        cr_assert_str_eq(run("b 1.1.1.1"), "false\n");
    }
    cr_assert(fc_log_contains(fc, "out of memory: 1.1.1.1 not added to the blacklist"));
    cr_assert_eq(rt_counter("list_full"), 0);
    relay_test_hash_fail_from(0);
    cr_assert_str_eq(run("ba 1.1.1.1"), "");
    cr_assert_str_eq(run("b 1.1.1.1"), "true\n");
    cr_assert_eq(rt_gauge("blacklist_entries"), 1);
    check_set(&R->black);
}

/* Entries are added until one would grow the table: that one is refused,
 * the others stay and still match (a blocklisted peer is refused at
 * accept, L76), and once memory is back the refused entry goes in. */
Test(oom, list_entry_that_would_grow_the_table_is_refused_the_rest_kept)
{
    run("Ba 10.255.255.1"); /* the table exists */
    relay_test_hash_fail_from(1);
    unsigned long allocs = relay_test_hash_allocs();
    char line[64], ip[32];
    int n;
    for (n = 1; n <= 3000; n++) {
        snprintf(ip, sizeof ip, "10.3.%d.%d", n / 250, n % 250 + 1);
        snprintf(line, sizeof line, "Ba %s", ip);
        run(line);
        if (rt_counter("oom"))
            break;
    }
    cr_assert_eq(rt_counter("oom"), 1, "no entry reached an expansion in 3000");
    cr_assert_gt(n, 10, "the table grew after %d entries only", n);
    cr_assert_eq(relay_test_hash_allocs(), allocs + 1, "one expansion was attempted");
    cr_assert_eq(rt_gauge("blocklist_entries"), (uint64_t)n, "1 + %d accepted", n - 1);
    check_set(&R->block);
    snprintf(line, sizeof line, "B %s", ip);
    cr_assert_str_eq(run(line), "false\n", "the refused entry is not in");
    cr_assert_str_eq(run("B 10.3.0.2"), "true\n", "the first one of the loop is");
    rt_conn c = rt_open("10.3.0.2:1");
    cr_assert_not(fc_conn_alive(fc, c.id), "a blocklisted peer is still refused at accept");
    cr_assert_str_eq(run("Br 10.3.0.2"), "", "a removal needs no memory");
    cr_assert_eq(rt_gauge("blocklist_entries"), (uint64_t)n - 1);
    check_set(&R->block);
    relay_test_hash_fail_from(0);
    snprintf(line, sizeof line, "Ba %s", ip);
    run(line);
    snprintf(line, sizeof line, "B %s", ip);
    cr_assert_str_eq(run(line), "true\n", "memory is back: the table grows");
    cr_assert_eq(rt_gauge("blocklist_entries"), (uint64_t)n);
    check_set(&R->block);
}

/* A reload builds the new list aside: running out of memory there (the
 * fresh table cannot be made, or cannot grow) keeps the list in use, as an
 * unreadable file does. */
Test(oom, reload_that_runs_out_keeps_the_list_in_use)
{
    rt_write_file("blocklist.txt", "10.0.0.7\n");
    cr_assert_eq(rt_reload_module(NULL), 0);
    cr_assert_eq(rt_gauge("blocklist_entries"), 1);
    /* a new file with many entries, 10.0.0.7 no longer among them */
    size_t cap = 600 * 20, len = 0;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    for (int i = 1; i <= 600; i++)
        len += (size_t)snprintf(text + len, cap - len, "10.4.%d.%d\n", i / 250, i % 250 + 1);
    rt_write_file("blocklist.txt", text);
    free(text);
    const unsigned long fail[] = { 1, 3 }; /* making the fresh table; its first expansion */
    for (size_t k = 0; k < 2; k++) {
        relay_test_hash_fail_from(fail[k]);
        fc_log_clear(fc);
        cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, ""), 0, "the reload itself goes on");
        cr_assert_eq(rt_counter("oom"), k + 1);
        cr_assert(fc_log_contains(fc, "blocklist blocklist.txt not re-read: Cannot allocate memory (errno 12); "
                                      "keeping its 1 entries"));
        cr_assert_eq(rt_gauge("blocklist_entries"), 1);
        cr_assert_str_eq(run("B 10.0.0.7"), "true\n", "still blocked");
        cr_assert_str_eq(run("B 10.4.0.2"), "false\n");
        check_set(&R->block);
        rt_conn c = rt_open("10.0.0.7:1");
        cr_assert_not(fc_conn_alive(fc, c.id), "refused at accept as before");
    }
    relay_test_hash_fail_from(0);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, ""), 0);
    cr_assert_eq(rt_gauge("blocklist_entries"), 600);
    cr_assert_str_eq(run("B 10.0.0.7"), "false\n");
    cr_assert_str_eq(run("B 10.4.2.101"), "true\n");
    check_set(&R->block);
    cr_assert_eq(rt_counter("oom"), 2);
}

/* At start a list that cannot be held is treated like an unreadable one:
 * an empty list and a warning (the module starts); the next reload
 * reads it. */
Test(oom, start_that_runs_out_has_an_empty_list_and_says_so)
{
    rt_write_file("blocklist.txt", "10.0.0.7\n");
    relay_test_hash_fail_from(1);
    cr_assert_eq(rt_reload_module(NULL), 0);
    cr_assert_eq(rt_counter("oom"), 1);
    cr_assert(fc_log_contains(fc, "blocklist blocklist.txt not used: Cannot allocate memory"));
    cr_assert_eq(rt_gauge("blocklist_entries"), 0);
    relay_test_hash_fail_from(0);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, ""), 0);
    cr_assert_str_eq(run("B 10.0.0.7"), "true\n");
}

/* ------------------------------------------------------------------ waiting sides (relay.md §3.4) */

static const char U[] = "6f1e0c7a-oom";

/* The first waiting side makes the table (2 allocations): failing either
 * refuses that side (closed, counted); once memory is back a side waits
 * and pairs as usual (L8). */
Test(oom, first_waiting_side_refused_when_the_table_cannot_be_made)
{
    for (unsigned long nth = 1; nth <= 2; nth++) {
        relay_test_hash_fail_from(nth);
        rt_conn a = rt_open("10.0.0.1:4001");
        cr_assert_eq(rt_request(&a, U, NULL), RDV_OK);
        cr_assert(rt_closed(a.cli), "the refused side is closed");
        cr_assert_eq(rt_counter("oom"), nth, "allocation %lu failing", nth);
        cr_assert_eq(rt_counter("rejected_internal"), nth);
        cr_assert_null(R->waiting);
        check_waiting();
    }
    cr_assert(fc_log_contains(fc, "out of memory: side from 10.0.0.1 not waiting for its partner"));
    relay_test_hash_fail_from(0);
    rt_conn a, b;
    rt_pair(&a, &b, U);
    cr_assert_eq(rt_gauge("pairs"), 1);
    rt_carries(a.cli, b.cli, "ping");
    check_waiting();
}

/* Sides wait under new uuids until one would grow the table: that one is
 * refused, the others stay waiting (their deadlines and EOF watchers
 * intact), a partner for one of them still pairs while allocations fail
 * (pairing only deletes), and once memory is back the refused uuid waits. */
Test(oom, waiting_side_that_would_grow_the_table_is_refused_the_rest_kept)
{
    rt_conn first = rt_open("10.0.0.1:1");
    cr_assert_eq(rt_request(&first, "w-first", NULL), RDV_OK); /* the table exists */
    relay_test_hash_fail_from(1);
    unsigned long allocs = relay_test_hash_allocs();
    char uuid[32];
    rt_conn c = { 0 }, c1 = { 0 };
    int n;
    for (n = 1; n <= 1000; n++) {
        snprintf(uuid, sizeof uuid, "w-%d", n);
        c = rt_open("10.0.0.1:2");
        cr_assert_eq(rt_request(&c, uuid, NULL), RDV_OK);
        if (n == 1)
            c1 = c;
        if (rt_counter("oom"))
            break;
    }
    cr_assert_eq(rt_counter("oom"), 1, "no side reached an expansion in 1000");
    cr_assert_gt(n, 10, "the table grew after %d sides only", n);
    cr_assert_eq(relay_test_hash_allocs(), allocs + 1, "one expansion was attempted");
    cr_assert_eq(rt_counter("rejected_internal"), 1);
    cr_assert(rt_closed(c.cli), "the refused side is closed");
    cr_assert_eq(rt_gauge("waiting"), (uint64_t)n, "1 + %d waiting", n - 1);
    check_waiting();
    cr_assert(rt_silent(c1.cli), "the others stay open");
    /* a partner for the loop's first side pairs, still without memory */
    rt_conn p = rt_open("10.0.0.2:1");
    cr_assert_eq(rt_request(&p, "w-1", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 1);
    rt_carries(c1.cli, p.cli, "hello");
    check_waiting();
    /* the others keep their deadline */
    fc_advance(fc, 30000);
    cr_assert_eq(rt_gauge("waiting"), 0);
    cr_assert_eq(rt_counter("rejected_wait_timeout"), (uint64_t)n - 1);
    cr_assert(rt_closed(first.cli));
    relay_test_hash_fail_from(0);
    rt_conn again = rt_open("10.0.0.1:3");
    cr_assert_eq(rt_request(&again, uuid, NULL), RDV_OK);
    cr_assert_eq(rt_gauge("waiting"), 1, "memory is back: the refused uuid waits");
    check_waiting();
    rt_conn q = rt_open("10.0.0.2:2");
    cr_assert_eq(rt_request(&q, uuid, NULL), RDV_OK);
    cr_assert_eq(rt_counter("paired"), 2);
    cr_assert_eq(rt_gauge("waiting"), 0);
}
