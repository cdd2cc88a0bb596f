/* test_relay_pairs.c — moving bytes: the splice engine (relay.md §4.2),
 * early bytes (§4.4), back-pressure (§4.6), termination (§5), the pipe
 * pool and per-pair memory; and message mode (§4.3) with its endpoint
 * interface. Socketpairs stand in for TCP sockets (splice works on both). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "relay_test.h"

TestSuite(pairs, .init = rt_setup, .fini = rt_teardown);

/* Stream n bytes each way at once with random write sizes; compare hashes. */
static void stream_both_ways(int a, int b, size_t n)
{
    uint8_t *src[2] = { malloc(n), malloc(n) }, *buf = malloc(262144);
    rt_fill(src[0], n, 11), rt_fill(src[1], n, 12);
    int fd[2] = { a, b };
    size_t sent[2] = { 0, 0 }, got[2] = { 0, 0 };
    crypto_hash_sha256_state hs[2];
    crypto_hash_sha256_init(&hs[0]), crypto_hash_sha256_init(&hs[1]);
    uint64_t rnd = 99;
    for (long spins = 0; got[0] < n || got[1] < n; spins++) {
        cr_assert_lt(spins, 2000000, "stalled: sent %zu/%zu got %zu/%zu", sent[0], sent[1], got[0], got[1]);
        for (int i = 0; i < 2; i++) {
            if (sent[i] < n) {
                rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
                size_t len = 1 + rnd % 262144;
                if (len > n - sent[i])
                    len = n - sent[i];
                ssize_t k = send(fd[i], src[i] + sent[i], len, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (k > 0)
                    sent[i] += (size_t)k;
            }
            ssize_t k = recv(fd[!i], buf, 262144, MSG_DONTWAIT); /* what fd[i] sent */
            if (k > 0) {
                crypto_hash_sha256_update(&hs[i], buf, (size_t)k);
                got[i] += (size_t)k;
            }
        }
        rt_pump(1);
    }
    for (int i = 0; i < 2; i++) {
        uint8_t want[32], have[32];
        crypto_hash_sha256(want, src[i], n);
        crypto_hash_sha256_final(&hs[i], have);
        cr_assert_arr_eq(have, want, 32, "direction %d differs", i);
    }
    free(src[0]), free(src[1]), free(buf);
}

Test(pairs, L10_megabytes_both_ways_arrive_intact)
{
    cr_assert_eq(rt_reload_module("single_bandwidth=1e6\ntotal_bandwidth=1e6\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "big");
    stream_both_ways(a.cli, b.cli, 8u << 20);
    cr_assert_eq(rt_counter("bytes_early_to_late"), 8u << 20);
    cr_assert_eq(rt_counter("bytes_late_to_early"), 8u << 20);
    cr_assert_eq(rt_gauge("pipes_in_use"), 0, "drained pipes go back to the pool");
    cr_assert_leq(rt_gauge("pipes_pooled"), 64);
    cr_assert_eq(rt_gauge("buffered_bytes"), 0, "no user-space copy of relayed data");
}

Test(pairs, idle_pair_holds_no_pipe_and_little_memory)
{
    rt_conn a, b;
    rt_pair(&a, &b, "idle");
    rt_write_all(a.cli, "x", 1);
    char c;
    cr_assert_eq(rt_read(b.cli, &c, 1, 1000), 1);
    cr_assert_eq(rt_gauge("pipes_in_use"), 0);
    /* The memory target: <= 2 KiB of user space per idle pair; the pair
     * record is all we allocate (plus the core's two io watchers). */
    cr_assert_leq(sizeof(relay_pair), 512);
}

/* Regression: a wake-up that ends on its read budget must still have
 * written (or be waiting to write) the last chunk it read. */
Test(pairs, budget_end_never_strands_a_chunk)
{
    cr_assert_eq(rt_reload_module("pipe_size=4096\nsingle_bandwidth=1e6\ntotal_bandwidth=1e6\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "budget");
    uint8_t x[65536], got[65536];
    rt_fill(x, sizeof x, 9);
    rt_write_all(a.cli, x, sizeof x);
    size_t have = 0;
    for (int i = 0; i < 200 && have < sizeof x; i++) {
        rt_pump(1);
        ssize_t k = recv(b.cli, got + have, sizeof got - have, MSG_DONTWAIT);
        if (k > 0)
            have += (size_t)k;
    }
    cr_assert_eq(have, sizeof x);
    cr_assert_arr_eq(got, x, sizeof x);
}

/* §4.4: early bytes first, then what arrived while waiting, in order. */
Test(pairs, L12_L13_early_bytes_are_delivered_first_in_order)
{
    int s1[2], s2[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s1), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s2), 0);
    /* A: 100 bytes X read by the core with its first frame, then Y in the kernel. */
    uint8_t x[100], y[50], z[30], got[200];
    rt_fill(x, sizeof x, 1), rt_fill(y, sizeof y, 2), rt_fill(z, sizeof z, 3);
    rt_write_all(s1[0], y, sizeof y);
    uint8_t *early[2] = { malloc(sizeof x), malloc(sizeof z) };
    memcpy(early[0], x, sizeof x);
    memcpy(early[1], z, sizeof z);
    R->early_bytes += sizeof x + sizeof z;
    int fd[2] = { s1[1], s2[1] };
    size_t len[2] = { sizeof x, sizeof z };
    rdv_addr addr[2] = { fc_addr("10.0.0.1:1"), fc_addr("10.0.0.2:2") };
    relay_pair *p = relay_pair_raw_new(R, fd, early, len, addr);
    cr_assert_not_null(p);
    /* Everything went out at once (the sockets had room). */
    cr_assert_eq(recv(s2[0], got, sizeof got, MSG_DONTWAIT), 150);
    cr_assert_arr_eq(got, x, 100);
    cr_assert_arr_eq(got + 100, y, 50);
    cr_assert_eq(recv(s1[0], got, sizeof got, MSG_DONTWAIT), 30, "the late side's early bytes (L13)");
    cr_assert_arr_eq(got, z, 30);
    cr_assert_eq(R->early_bytes, 0);
    cr_assert_eq(rt_counter("bytes_early_to_late"), 150);
    relay_pair_end(R, p, RELAY_END_SHUTDOWN);
    close(s1[0]), close(s2[0]);
}

Test(pairs, early_bytes_wait_for_a_full_destination)
{
    int s1[2], s2[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s1), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s2), 0);
    /* Fill B's socket so the early bytes cannot go out yet. */
    uint8_t fill[65536];
    memset(fill, 'f', sizeof fill);
    size_t filled = 0;
    for (ssize_t k; (k = send(s2[1], fill, sizeof fill, MSG_DONTWAIT)) > 0;)
        filled += (size_t)k;
    uint8_t *early[2] = { malloc(10), NULL };
    memcpy(early[0], "0123456789", 10);
    R->early_bytes += 10;
    int fd[2] = { s1[1], s2[1] };
    size_t len[2] = { 10, 0 };
    rdv_addr addr[2] = { fc_addr("10.0.0.1:1"), fc_addr("10.0.0.2:2") };
    relay_pair *p = relay_pair_raw_new(R, fd, early, len, addr);
    cr_assert_not_null(p);
    cr_assert_eq(rt_gauge("buffered_bytes"), 10);
    cr_assert(p->u.raw.ev[1] & RDV_IO_WRITE, "waits for B to be writable");
    cr_assert_not(p->u.raw.ev[0] & RDV_IO_READ, "and does not read A meanwhile");
    uint8_t *drain = malloc(filled + 16);
    size_t got = 0;
    while (got < filled) {
        ssize_t k = recv(s2[0], drain + got, filled + 16 - got, MSG_DONTWAIT);
        if (k > 0)
            got += (size_t)k;
    }
    fc_io_fire(fc, s2[1], RDV_IO_WRITE);
    char out[16];
    cr_assert_eq(recv(s2[0], out, sizeof out, MSG_DONTWAIT), 10);
    cr_assert_arr_eq(out, "0123456789", 10);
    cr_assert_eq(rt_gauge("buffered_bytes"), 0);
    free(drain);
    relay_pair_end(R, p, RELAY_END_SHUTDOWN);
    close(s1[0]), close(s2[0]);
}

/* ------------------------------------------------------------------ termination (§5) */
Test(pairs, L57_fin_delivers_everything_then_closes_both)
{
    cr_assert_eq(rt_reload_module("single_bandwidth=1e6\ntotal_bandwidth=1e6\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "fin");
    size_t n = 1u << 20;
    uint8_t *x = malloc(n), *got = malloc(n);
    rt_fill(x, n, 5);
    size_t off = 0, in = 0;
    while (in < n) {
        if (off < n) {
            ssize_t k = send(a.cli, x + off, n - off, MSG_DONTWAIT);
            if (k > 0)
                off += (size_t)k;
            if (off == n)
                shutdown(a.cli, SHUT_WR);
        }
        rt_pump(1);
        ssize_t k = recv(b.cli, got + in, n - in, MSG_DONTWAIT);
        if (k > 0)
            in += (size_t)k;
        cr_assert(k != 0 || in == n, "EOF before all bytes arrived (%zu)", in);
    }
    cr_assert_arr_eq(got, x, n);
    cr_assert(rt_closed(b.cli), "then EOF");
    cr_assert(rt_closed(a.cli), "A closed as well: no half-close");
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_counter("closed_eof"), 1);
    free(x), free(got);
}

Test(pairs, L58_write_error_ends_the_pair)
{
    rt_conn a, b;
    rt_pair(&a, &b, "rst");
    close(b.cli);
    rt_write_all(a.cli, "data", 4);
    cr_assert(rt_closed(a.cli));
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_counter("closed_eof") + rt_counter("closed_error"), 1);
}

Test(pairs, L59_idle_pair_ends_after_30s)
{
    rt_conn a, b;
    rt_pair(&a, &b, "idle");
    fc_advance(fc, 29000);
    cr_assert_eq(rt_gauge("pairs"), 1);
    fc_advance(fc, 1000);
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert(rt_closed(a.cli) && rt_closed(b.cli));
    cr_assert_eq(rt_counter("closed_idle"), 1);
}

Test(pairs, L60_one_byte_every_10s_keeps_the_pair)
{
    rt_conn a, b;
    rt_pair(&a, &b, "slow");
    for (int i = 0; i < 12; i++) {
        fc_advance(fc, 10000);
        rt_write_all(a.cli, "b", 1);
        char c;
        cr_assert_eq(rt_read(b.cli, &c, 1, 1000), 1);
    }
    cr_assert_eq(rt_gauge("pairs"), 1);
}

/* §4.6: a reader that stops reading stops the writer; nothing piles up in
 * user space; the data is intact when it resumes; never resuming ends the
 * pair after stall_timeout_ms. */
Test(pairs, L61_slow_reader_back_pressure_and_stall)
{
    cr_assert_eq(rt_reload_module("single_bandwidth=1e6\ntotal_bandwidth=1e6\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "bp");
    uint8_t chunk[65536];
    rt_fill(chunk, sizeof chunk, 3);
    size_t sent = 0;
    for (int i = 0; i < 200; i++) {
        ssize_t k = send(a.cli, chunk, sizeof chunk, MSG_DONTWAIT);
        if (k > 0)
            sent += (size_t)k;
        rt_pump(1);
    }
    cr_assert_gt(sent, 0);
    cr_assert_lt(sent, 200 * sizeof chunk, "A's writes block: the relay stopped reading");
    cr_assert_leq(rt_gauge("pipes_in_use"), 1, "one pipe in flight at most");
    cr_assert_eq(rt_gauge("buffered_bytes"), 0);
    /* Resume within the stall limit: everything arrives. */
    fc_advance(fc, 20000);
    cr_assert_eq(rt_gauge("pairs"), 1);
    size_t got = 0;
    uint8_t buf[65536];
    for (int spins = 0; got < sent && spins < 100000; spins++) {
        ssize_t k = recv(b.cli, buf, sizeof buf, MSG_DONTWAIT);
        if (k > 0) {
            for (size_t j = 0; j < (size_t)k; j++)
                cr_assert_eq(buf[j], chunk[(got + j) % sizeof chunk]);
            got += (size_t)k;
        }
        rt_pump(1);
    }
    cr_assert_eq(got, sent);
    /* Now stop for good: the pair ends stall_timeout_ms after the last progress. */
    for (int i = 0; i < 200; i++) {
        send(a.cli, chunk, sizeof chunk, MSG_DONTWAIT);
        rt_pump(1);
    }
    fc_advance(fc, 29000);
    cr_assert_eq(rt_gauge("pairs"), 1);
    fc_advance(fc, 1000);
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_counter("closed_stall") + rt_counter("closed_idle"), 1);
}

/* §4.6, L61: B never reads but sends a byte every 5 s. A -> B is stuck;
 * B -> A moves. Before, any write progress counted for the pair, so B's
 * trickle kept the stuck direction (and a pipe) alive for ever; the stall
 * rule is now per direction. */
Test(pairs, L61_a_side_that_sends_but_never_reads_is_stalled)
{
    cr_assert_eq(rt_reload_module("single_bandwidth=1e6\ntotal_bandwidth=1e6\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "trickle");
    uint8_t chunk[65536], c;
    rt_fill(chunk, sizeof chunk, 5);
    for (int i = 0; i < 200; i++) {
        send(a.cli, chunk, sizeof chunk, MSG_DONTWAIT);
        rt_pump(1);
    }
    int trickled = 0;
    for (int t = 0; t < 8 && rt_gauge("pairs") == 1; t++) {
        cr_assert_eq(send(b.cli, "x", 1, MSG_DONTWAIT), 1);
        rt_pump(5);
        cr_assert_eq(recv(a.cli, &c, 1, MSG_DONTWAIT), 1, "B -> A moves (%d)", t);
        trickled++;
        fc_advance(fc, 5000);
    }
    cr_assert_eq(rt_gauge("pairs"), 0, "still paired after %d s of B's trickle", trickled * 5);
    cr_assert_eq(rt_counter("closed_stall"), 1);
    cr_assert_geq(trickled, 6, "not before stall_timeout_ms (30 s)");
}

Test(pairs, pipe_pool_is_bounded)
{
    cr_assert_eq(rt_reload_module("pipe_pool=1\nsingle_bandwidth=1e6\ntotal_bandwidth=1e6\n"), 0);
    rt_conn a[3], b[3];
    for (int i = 0; i < 3; i++) {
        char u[8];
        snprintf(u, sizeof u, "pp%d", i);
        rt_pair(&a[i], &b[i], u);
    }
    /* Three blocked directions hold three pipes; afterwards one is kept. */
    uint8_t chunk[65536] = { 0 };
    for (int k = 0; k < 50; k++) {
        for (int i = 0; i < 3; i++)
            send(a[i].cli, chunk, sizeof chunk, MSG_DONTWAIT);
        rt_pump(1);
    }
    cr_assert_eq(rt_gauge("pipes_in_use"), 3);
    for (int i = 0; i < 3; i++)
        close(b[i].cli), close(a[i].cli);
    rt_pump(5);
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_gauge("pipes_in_use"), 0);
    cr_assert_leq(rt_gauge("pipes_pooled"), 1);
}

/* ------------------------------------------------------------------ message mode (§4.3) */
Test(pairs, message_mode_forwards_frames_and_drops_empty_ones)
{
    cr_assert_eq(rt_reload_module("message_mode=true\nsingle_bandwidth=1e6\ntotal_bandwidth=1e6\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "msg");
    cr_assert_eq(rt_gauge("pairs_message"), 1);
    static uint8_t buf[3u << 20];
    rt_send_frame(a.cli, "", 0); /* empty: activity only (L24) */
    rt_send_frame(a.cli, "hello", 5);
    cr_assert_eq(rt_read_frame(b.cli, buf, sizeof buf, 1000), 5);
    cr_assert_arr_eq(buf, "hello", 5);
    /* Non-minimal header in, minimal header out (L22-like widths). */
    const uint8_t odd[] = { 0x03 | (3 << 2), 0, 0, 0, 'a', 'b', 'c' }; /* 4-byte header, 3 bytes */
    rt_write_all(b.cli, odd, sizeof odd);
    uint8_t raw[8];
    cr_assert_eq(rt_read(a.cli, raw, 4, 1000), 4);
    cr_assert_eq(raw[0], 3 << 2);
    cr_assert_arr_eq(raw + 1, "abc", 3);
    /* A 2 MiB frame (L23-like). */
    size_t big = 2u << 20;
    uint8_t *x = malloc(big);
    rt_fill(x, big, 8);
    rt_send_frame(a.cli, x, big);
    cr_assert_eq(rt_read_frame(b.cli, buf, sizeof buf, 5000), (long)big);
    cr_assert_arr_eq(buf, x, big);
    free(x);
}

Test(pairs, message_mode_refuses_frames_over_message_max)
{
    cr_assert_eq(rt_reload_module("message_mode=true\nmessage_max=65536\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "msgmax");
    const uint8_t hdr[] = { 0x06, 0x00, 0x04 }; /* 3-byte header: 65537 bytes */
    rt_write_all(a.cli, hdr, sizeof hdr);
    cr_assert(rt_closed(a.cli) && rt_closed(b.cli));
    cr_assert_eq(rt_counter("closed_error"), 1);
}

Test(pairs, message_mode_eof_flushes_then_ends)
{
    cr_assert_eq(rt_reload_module("message_mode=true\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "msgeof");
    rt_send_frame(a.cli, "last", 4);
    rt_write_all(a.cli, "\x40", 1); /* half a frame header for 16 bytes: dropped */
    shutdown(a.cli, SHUT_WR);
    uint8_t buf[64];
    cr_assert_eq(rt_read_frame(b.cli, buf, sizeof buf, 1000), 4);
    cr_assert(rt_closed(b.cli));
    cr_assert(rt_closed(a.cli));
}

Test(pairs, message_mode_back_pressure_pauses_the_sender)
{
    cr_assert_eq(rt_reload_module("message_mode=true\nmessage_queue=65536\nsingle_bandwidth=1e6\n"
                                  "total_bandwidth=1e6\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "msgbp");
    relay_pair *p = R->pairs;
    uint8_t payload[16384];
    rt_fill(payload, sizeof payload, 4);
    for (int i = 0; i < 400; i++) {
        uint8_t hdr[4];
        size_t hl = rdv_frame_header(sizeof payload, hdr);
        send(a.cli, hdr, hl, MSG_DONTWAIT);
        send(a.cli, payload, sizeof payload, MSG_DONTWAIT);
        rt_pump(1);
    }
    cr_assert(p->u.msg.bp[0], "A is paused: B's queue is full");
    cr_assert_lt(rt_gauge("buffered_bytes"), 4u << 20, "bounded by message_queue plus socket buffers");
}

/* The endpoint interface the WebSocket side will implement, exercised with
 * a TCP endpoint standing in for it. */
Test(pairs, an_endpoint_side_pairs_in_message_mode)
{
    int s[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s), 0);
    relay_ep *ep = relay_ep_tcp_new(R, s[1], NULL, 0);
    cr_assert_not_null(ep);
    uint8_t rr[128];
    size_t n = rt_rr(rr, sizeof rr, "ep", NULL);
    rdv_addr peer = fc_addr("192.0.2.50:443");
    cr_assert_eq(relay_offer_ep(R, ep, &peer, rr, n), RDV_OK);
    cr_assert_eq(rt_gauge("waiting"), 1);
    cr_assert_not(ep->reading, "a waiting endpoint is paused");
    cr_assert_eq(relay_msg_input(ep, (const uint8_t *)"x", 1), RELAY_EP_KEEP, "kept until paired");
    rt_conn t = rt_open("10.0.0.1:1");
    cr_assert_eq(rt_request(&t, "ep", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs_message"), 1, "a pair with a message side is in message mode (§4.1)");
    rt_send_frame(t.cli, "to-ep", 5);
    uint8_t buf[64];
    for (int i = 0; i < 50; i++)
        fc_io_fire(fc, s[1], RDV_IO_READ | RDV_IO_WRITE), rt_pump(1);
    cr_assert_eq(rt_read_frame(s[0], buf, sizeof buf, 100), 5);
    cr_assert_arr_eq(buf, "to-ep", 5);
    /* A refused first message is the caller's to destroy. */
    relay_ep *ep2 = relay_ep_tcp_new(R, dup(s[0]), NULL, 0);
    cr_assert_eq(relay_offer_ep(R, ep2, &peer, (const uint8_t *)"", 0), RDV_CLOSE);
    ep2->ops->destroy(ep2);
    close(s[0]);
}

Test(pairs, an_endpoint_that_leaves_while_waiting_is_dropped)
{
    int s[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s), 0);
    relay_ep *ep = relay_ep_tcp_new(R, s[1], NULL, 0);
    uint8_t rr[128];
    size_t n = rt_rr(rr, sizeof rr, "ep-gone", NULL);
    rdv_addr peer = fc_addr("192.0.2.51:443");
    cr_assert_eq(relay_offer_ep(R, ep, &peer, rr, n), RDV_OK);
    cr_assert_eq(relay_msg_closed(ep, RELAY_END_EOF), RELAY_EP_GONE);
    cr_assert_eq(rt_gauge("waiting"), 0);
    cr_assert_eq(rt_counter("rejected_waiter_gone"), 1);
    char c;
    cr_assert_eq(recv(s[0], &c, 1, MSG_DONTWAIT), 0, "its connection is closed");
    close(s[0]);
}

/* Out of descriptors for a pipe: the pair waits and retries on the refill
 * tick instead of failing (each Criterion test runs in its own process, so
 * the lowered limit stays here). */
Test(pairs, pipe_creation_failure_is_retried)
{
    cr_assert_eq(rt_reload_module("pipe_pool=0\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "nofd");
    int probe = dup(0);
    struct rlimit rl, low;
    getrlimit(RLIMIT_NOFILE, &rl);
    low = rl;
    low.rlim_cur = (rlim_t)probe + 1; /* no room for two more descriptors */
    close(probe);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    rt_write_all(a.cli, "abc", 3);
    rt_pump(2);
    cr_assert_gt(rt_counter("pipe_failures"), 0);
    cr_assert_eq(rt_gauge("throttled_pairs"), 1, "waits for the refill tick");
    cr_assert_eq(rt_gauge("pairs"), 1);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    fc_advance(fc, 10);
    char got[4];
    cr_assert_eq(rt_read(b.cli, got, 3, 1000), 3);
    cr_assert_arr_eq(got, "abc", 3);
}

/* Pipe growth (relay_pipe.c): a flow that fills its pipe gets a bigger one,
 * up to pipe_size_max; a pipe goes back to the pool at pipe_size. */
static size_t stream_one_way(int from, int to, size_t n)
{
    uint8_t *src = malloc(n), *buf = malloc(1 << 20);
    rt_fill(src, n, 21);
    size_t sent = 0, got = 0;
    bool same = true;
    for (long spins = 0; got < n && spins < 200000; spins++) {
        while (sent < n) { /* fill the socket buffer: the relay finds more than a pipe's worth */
            ssize_t k = send(from, src + sent, n - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k <= 0)
                break;
            sent += (size_t)k;
        }
        rt_pump(1);
        ssize_t k;
        while ((k = recv(to, buf, 1 << 20, MSG_DONTWAIT)) > 0) {
            same = same && memcmp(buf, src + got, (size_t)k) == 0;
            got += (size_t)k;
        }
    }
    cr_assert(same, "bytes changed on the way");
    free(src), free(buf);
    return got;
}

Test(pairs, a_fast_flow_grows_its_pipe_and_the_pool_gets_it_back_small)
{
    cr_assert_eq(rt_reload_module("pipe_size=65536\npipe_size_max=1048576\nsingle_bandwidth=1e6\n"
                                  "total_bandwidth=1e6\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "grow");
    int sz = 4 << 20;
    setsockopt(a.cli, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    cr_assert_eq(stream_one_way(a.cli, b.cli, 16u << 20), 16u << 20);
    cr_assert_geq(rt_counter("pipes_grown"), 1, "a flow that fills its pipe gets a bigger one");
    cr_assert_eq(rt_gauge("pipes_in_use"), 1, "the grown pipe stays with its flow");
    fc_advance(fc, 2000); /* quiet for a second: the tick takes it back */
    cr_assert_eq(rt_gauge("pipes_in_use"), 0);
    cr_assert_geq(rt_gauge("pipes_pooled"), 1);
    for (size_t i = 0; i < R->npipes; i++)
        cr_assert_eq(fcntl(R->pipes[i][1], F_GETPIPE_SZ), 65536, "pooled pipes are back at pipe_size");
}

Test(pairs, pipe_size_max_0_never_grows_and_must_not_be_below_pipe_size)
{
    cr_assert_eq(rt_reload_module("pipe_size=65536\npipe_size_max=0\nsingle_bandwidth=1e6\ntotal_bandwidth=1e6\n"),
                 0);
    rt_conn a, b;
    rt_pair(&a, &b, "nogrow");
    cr_assert_eq(stream_one_way(a.cli, b.cli, 4u << 20), 4u << 20);
    cr_assert_eq(rt_counter("pipes_grown"), 0);
    cr_assert_neq(rt_reload_module("pipe_size=262144\npipe_size_max=65536\n"), 0);
}
