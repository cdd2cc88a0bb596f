/* The core's connection table (core/conn.c) when uthash cannot allocate:
 * the new connection is closed at accept, counted (core.tcp_refused_oom)
 * and logged, no module hears of it, the connections already open stay,
 * and accepting works again once memory is back. uthash's allocations fail
 * through conn.c's test hook (inert unless armed). On the code before
 * uthash's non-fatal mode, each of these tests exited the process.
 *
 * A real server (rdv_server_init, no modules, no listeners opened) with a
 * test listener; connections are socketpairs handed to rdv_conn_accept as
 * the accept callback does. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rdv/wire.h"
#include "bare_server.h"
#include "server.h"


static bare_server bare;
static rdv_server srv;
static rdv_listener lst;
static int opened_hooks;

static void on_open(void *ud, const void *arg)
{
    (void)ud, (void)arg;
    opened_hooks++;
}

static void setup(void)
{
    bare_server_init(&bare, &srv, "connoom");
    lst = (rdv_listener){ .srv = &srv, .name = "oomtest", .transport = RDV_TR_TCP, .mode = RDV_LISTEN_DISPATCH,
                          .fd = -1, .tfd = -1, .idle_ms = 60000, .max_buffer = (size_t)srv.cfg.read_buffer,
                          .max_frame = (size_t)srv.cfg.max_frame };
    opened_hooks = 0;
    cr_assert_eq(rdv_hook_add(&srv, &srv.core_mod, RDV_HOOK_CONN_OPEN, 0, on_open, NULL), 0);
}

static void teardown(void)
{
    rdv_conn_test_hash_fail_from(0);
    bare_server_free(&bare, &srv);
}

TestSuite(conn_oom, .init = setup, .fini = teardown, .timeout = 60);

static uint64_t refused(void) { return rdv_stat_value(&srv, "core.tcp_refused_oom", NULL); }

/* What accept_cb does with a new socket; *peer_fd is the client's end. */
static rdv_conn_id accept_one(int *peer_fd)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0, "%s", strerror(errno));
    char text[32];
    snprintf(text, sizeof text, "10.7.%d.%d:4000", (sv[0] >> 8) & 255, sv[0] & 255);
    rdv_addr peer;
    cr_assert_eq(rdv_addr_parse(&peer, text, 0), 0);
    rdv_conn_accept(&srv, &lst, sv[0], &peer);
    *peer_fd = sv[1];
    return srv.next_id; /* the id the connection got (or would have got) */
}

/* The client's end: closed by the server (EOF), or still open (nothing to read). */
static bool closed_by_server(int peer_fd)
{
    char b;
    return read(peer_fd, &b, 1) == 0;
}

/* A connection that works end to end: a frame sent through the module API
 * arrives at the client. */
static void assert_works(rdv_conn_id id, int peer_fd)
{
    cr_assert_not_null(rdv_conn_get(&srv, id));
    rdv_core *h = &srv.core_mod.handle;
    static const uint8_t hello[] = { 0x68, 0x69 };
    cr_assert_eq(h->api->send_payload(h, id, hello, sizeof hello), 0);
    ev_run(srv.loop, EVRUN_NOWAIT);
    uint8_t buf[64];
    ssize_t n = read(peer_fd, buf, sizeof buf);
    cr_assert_gt(n, 0, "nothing arrived: %s", strerror(errno));
    size_t hl = 0, pl = 0;
    cr_assert_eq(rdv_frame_parse(buf, (size_t)n, 1024, &hl, &pl), RDV_FRAME_OK);
    cr_assert_eq(pl, sizeof hello);
    cr_assert_arr_eq(buf + hl, hello, sizeof hello);
}

static bool log_contains(const char *needle)
{
    fflush(stderr);
    FILE *f = fopen(bare.logpath, "r");
    cr_assert_not_null(f);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    return strstr(text, needle) != NULL;
}

/* The first connection makes the table: its header (1st allocation) or its
 * buckets (2nd). Either failing closes that connection, leaves no table,
 * and the next connection (memory back) makes it. */
Test(conn_oom, first_connection_closed_when_the_table_cannot_be_made)
{
    int pfd[3];
    for (unsigned long nth = 1; nth <= 2; nth++) {
        rdv_conn_test_hash_fail_from(nth);
        rdv_conn_id id = accept_one(&pfd[nth]);
        cr_assert_eq(refused(), nth, "allocation %lu failing", nth);
        cr_assert(closed_by_server(pfd[nth]));
        cr_assert_null(rdv_conn_get(&srv, id));
        cr_assert_null(srv.conns);
        cr_assert_eq(srv.nconns, 0);
        cr_assert_eq(rdv_stat_value(&srv, "core.connections", NULL), 0);
    }
    cr_assert_eq(opened_hooks, 0, "a module heard of a refused connection");
    cr_assert(log_contains("oomtest: out of memory: connection from 10.7."));
    rdv_conn_test_hash_fail_from(0);
    unsigned long allocs = rdv_conn_test_hash_allocs();
    rdv_conn_id id = accept_one(&pfd[0]);
    cr_assert_eq(rdv_conn_test_hash_allocs(), allocs + 2, "the table was made");
    cr_assert_eq(refused(), 2);
    cr_assert_eq(srv.nconns, 1);
    cr_assert_eq(opened_hooks, 1);
    assert_works(id, pfd[0]);
    for (int i = 0; i < 3; i++)
        close(pfd[i]);
}

/* Connections are accepted until one would grow the table: that one is
 * closed, every other stays open and usable, and once memory is back the
 * next connection grows the table. */
Test(conn_oom, connection_that_would_grow_the_table_is_closed_the_rest_kept)
{
    enum { MAX = 3000 };
    static int pfd[MAX + 2];
    static rdv_conn_id ids[MAX + 2];
    ids[0] = accept_one(&pfd[0]); /* the table exists */
    rdv_conn_test_hash_fail_from(1);
    unsigned long allocs = rdv_conn_test_hash_allocs();
    int n;
    for (n = 1; n <= MAX; n++) {
        ids[n] = accept_one(&pfd[n]);
        if (refused())
            break;
    }
    cr_assert_eq(refused(), 1, "no connection reached an expansion in %d", MAX);
    cr_assert_gt(n, 10, "the table grew after %d connections only", n);
    cr_assert_eq(rdv_conn_test_hash_allocs(), allocs + 1, "one expansion was attempted");
    cr_assert(closed_by_server(pfd[n]));
    cr_assert_null(rdv_conn_get(&srv, ids[n]));
    cr_assert_eq(srv.nconns, (size_t)n, "the first + %d accepted", n - 1);
    cr_assert_eq(opened_hooks, n);
    for (int i = 0; i < n; i++) {
        cr_assert_not_null(rdv_conn_get(&srv, ids[i]), "connection %d lost", i);
        cr_assert_not(closed_by_server(pfd[i]));
    }
    assert_works(ids[0], pfd[0]);
    assert_works(ids[n - 1], pfd[n - 1]);
    /* memory is back: the next connection grows the table (it gets the
     * refused connection's id, never handed out, so it lands in the bucket
     * that was full) */
    rdv_conn_test_hash_fail_from(0);
    allocs = rdv_conn_test_hash_allocs();
    srv.next_id = ids[n] - 1;
    ids[n + 1] = accept_one(&pfd[n + 1]);
    cr_assert_eq(ids[n + 1], ids[n]);
    cr_assert_eq(rdv_conn_test_hash_allocs(), allocs + 1);
    cr_assert_eq(refused(), 1);
    cr_assert_eq(srv.nconns, (size_t)n + 1);
    for (int i = 0; i < n; i++)
        cr_assert_not_null(rdv_conn_get(&srv, ids[i]), "connection %d lost after the expansion", i);
    assert_works(ids[n + 1], pfd[n + 1]);
    /* and they all close normally */
    rdv_conns_close_all(&srv, false);
    cr_assert_eq(srv.nconns, 0);
    cr_assert_null(srv.conns);
    for (int i = 0; i <= n + 1; i++) {
        cr_assert(closed_by_server(pfd[i]));
        close(pfd[i]);
    }
}

/* With every uthash allocation failing, connections still close (a delete
 * never allocates) and a new one that needs nothing new from uthash is
 * accepted; once the last one has closed (the table is freed), the next
 * one cannot make the table and is refused. */
Test(conn_oom, closing_needs_no_allocation_and_frees_room)
{
    int pfd[4];
    rdv_conn_id a = accept_one(&pfd[0]);
    rdv_conn_id b = accept_one(&pfd[1]);
    rdv_conn_test_hash_fail_from(1);
    unsigned long allocs = rdv_conn_test_hash_allocs();
    rdv_core *h = &srv.core_mod.handle;
    cr_assert_eq(h->api->conn_close(h, a, false), 0);
    cr_assert(closed_by_server(pfd[0]));
    rdv_conn_id c = accept_one(&pfd[2]); /* a bucket slot, nothing allocated */
    cr_assert_eq(rdv_conn_test_hash_allocs(), allocs);
    cr_assert_eq(refused(), 0);
    cr_assert_eq(srv.nconns, 2);
    assert_works(b, pfd[1]);
    assert_works(c, pfd[2]);
    /* the last ones closing free the table; the next one cannot make it */
    cr_assert_eq(h->api->conn_close(h, b, false), 0);
    cr_assert_eq(h->api->conn_close(h, c, false), 0);
    cr_assert_null(srv.conns);
    rdv_conn_id d = accept_one(&pfd[3]);
    cr_assert_eq(refused(), 1);
    cr_assert(closed_by_server(pfd[3]));
    cr_assert_null(rdv_conn_get(&srv, d));
    cr_assert_eq(srv.nconns, 0);
    for (int i = 0; i < 4; i++)
        close(pfd[i]);
}
