/* on_drain (rdv/core.h: "the write queue drained", back-pressure) must be
 * heard however the queue empties. The write watcher empties it when the
 * socket becomes writable; but a later write by the owner (a WebSocket pong,
 * a close frame) also flushes the queue, and when that flush takes the last
 * queued byte the write watcher is stopped before it ever runs. On the code
 * before this suite no drain followed: the relay kept the partner of a
 * WebSocket side paused for good (relay.md §4.6), a session frozen in one
 * direction while pings kept it alive.
 *
 * A real server (rdv_server_init, no modules, no listeners opened) with a
 * RAW test listener; the connection is a socketpair handed to
 * rdv_conn_accept as the accept callback does. */
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
static int drains;

static long on_data(void *ud, rdv_conn_id id, const uint8_t *p, size_t n)
{
    (void)ud, (void)id, (void)p;
    return (long)n;
}

static void on_drain(void *ud, rdv_conn_id id)
{
    (void)ud, (void)id;
    drains++;
}

static const rdv_conn_ops ops = { .on_data = on_data, .on_drain = on_drain };

static void setup(void)
{
    bare_server_init(&bare, &srv, "conndrain");
    lst = (rdv_listener){ .srv = &srv, .name = "draintest", .transport = RDV_TR_TCP, .mode = RDV_LISTEN_RAW,
                          .ops = &ops, .fd = -1, .tfd = -1, .idle_ms = 60000,
                          .max_buffer = (size_t)srv.cfg.read_buffer, .max_frame = (size_t)srv.cfg.max_frame };
    drains = 0;
}

static void teardown(void)
{
    bare_server_free(&bare, &srv);
}

TestSuite(conn_drain, .init = setup, .fini = teardown, .timeout = 60);

static rdv_conn_id accept_one(int *peer_fd)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0, "%s", strerror(errno));
    rdv_addr peer;
    cr_assert_eq(rdv_addr_parse(&peer, "10.8.0.1:4000", 0), 0);
    rdv_conn_accept(&srv, &lst, sv[0], &peer);
    *peer_fd = sv[1];
    return srv.next_id;
}

static size_t queued(rdv_conn_id id)
{
    rdv_core *h = &srv.core_mod.handle;
    rdv_conn_info info;
    cr_assert_eq(h->api->conn_info(h, id, &info), 0);
    return info.wqueue;
}

/* Write until the socket is full and the core holds a queue. */
static void fill(rdv_conn_id id)
{
    rdv_core *h = &srv.core_mod.handle;
    static uint8_t chunk[65536];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 64 && queued(id) == 0; i++)
        cr_assert_eq(h->api->send_bytes(h, id, chunk, sizeof chunk), 0);
    cr_assert_gt(queued(id), 0, "the socket never filled");
}

/* Read what the socket holds (the client catches up). */
static size_t drain_peer(int fd)
{
    static uint8_t buf[1 << 16];
    size_t total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        total += (size_t)n;
    return total;
}

static void run_loop(void)
{
    for (int i = 0; i < 5; i++)
        ev_run(srv.loop, EVRUN_NOWAIT);
}

/* The usual way: the client reads, the write watcher flushes the queue and
 * reports the drain. */
Test(conn_drain, drain_reported_when_the_watcher_empties_the_queue)
{
    int pfd;
    rdv_conn_id id = accept_one(&pfd);
    fill(id);
    while (queued(id)) {
        drain_peer(pfd);
        run_loop();
    }
    cr_assert_geq(drains, 1);
    close(pfd);
}

/* The client read everything, and before the write watcher ran the owner
 * wrote a few bytes of its own (as websocket-transport answers a ping):
 * that write flushed the whole queue. The drain must still be reported,
 * from the loop (not from inside the owner's write). */
Test(conn_drain, drain_reported_when_an_owner_write_empties_the_queue)
{
    int pfd;
    rdv_conn_id id = accept_one(&pfd);
    fill(id);
    /* Let the client take everything: the queue then fits in the socket. */
    for (int i = 0; i < 64; i++) {
        drain_peer(pfd);
        usleep(1000);
    }
    cr_assert_gt(queued(id), 0, "the queue must still be held by the core");
    rdv_core *h = &srv.core_mod.handle;
    static const uint8_t pong[] = { 0x8a, 0x01, 'p' };
    drains = 0;
    cr_assert_eq(h->api->send_bytes(h, id, pong, sizeof pong), 0);
    cr_assert_eq(queued(id), 0, "the owner's write flushed the queue");
    cr_assert_eq(drains, 0, "reported from inside the owner's write (re-entrant)");
    /* The owner may pause reading before the loop runs (the relay does):
     * that must not lose the drain. */
    cr_assert_eq(h->api->conn_pause(h, id, true), 0);
    run_loop();
    cr_assert_eq(drains, 1, "a queue emptied by an owner's write was never reported drained");
    cr_assert_not_null(rdv_conn_get(&srv, id));
    close(pfd);
}

/* A write onto an empty queue that goes straight to the socket never held
 * a queue: no drain to report. */
Test(conn_drain, no_drain_for_a_write_that_never_queued)
{
    int pfd;
    rdv_conn_id id = accept_one(&pfd);
    rdv_core *h = &srv.core_mod.handle;
    static const uint8_t hi[] = { 'h', 'i' };
    cr_assert_eq(h->api->send_bytes(h, id, hi, sizeof hi), 0);
    cr_assert_eq(queued(id), 0);
    run_loop();
    cr_assert_eq(drains, 0);
    close(pfd);
}
