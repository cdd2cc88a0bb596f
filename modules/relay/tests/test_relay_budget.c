/* test_relay_budget.c — message mode's global bounds: relay.message_total
 * over every TCP side's frame buffers and queued output, the partial-frame
 * deadline (message_timeout_ms), and their settings (relay.md §4.3, §4.6;
 * relay-checklist L61: memory stays bounded). WebSocket sides' queues and
 * the stall rule for a slow WebSocket reader are in test_relay_ws.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay_test.h"

TestSuite(budget, .init = rt_setup, .fini = rt_teardown);

/* message_max 128 KiB, 200000 bytes for all: one 128 KiB frame in
 * assembly fits, a second does not. Bandwidth out of the way. */
#define BCONF                                                                                                  \
    "message_mode=true\nmessage_max=131072\nmessage_total=200000\nmessage_queue=65536\n"                     \
    "single_bandwidth=1e6\ntotal_bandwidth=1e6\n"

/* Load again with conf; unlike rt_reload_module, also after a refused load. */
static int reload(const char *conf)
{
    if (R)
        fc_unload(fc, rdv_module_get(), st);
    int r = fc_load(fc, rdv_module_get(), conf, &st);
    R = r == 0 ? st : NULL;
    return r;
}

static void pair_at(rt_conn *a, rt_conn *b, const char *uuid, const char *addr_a, const char *addr_b)
{
    *a = rt_open(addr_a);
    *b = rt_open(addr_b);
    cr_assert_eq(rt_request(a, uuid, NULL), RDV_OK);
    cr_assert_eq(rt_request(b, uuid, NULL), RDV_OK);
}

static void echo_both_ways(rt_conn *a, rt_conn *b, const char *what)
{
    uint8_t buf[64];
    rt_send_frame(a->cli, what, strlen(what));
    cr_assert_eq(rt_read_frame(b->cli, buf, sizeof buf, 1000), (long)strlen(what), "%s: a -> b", what);
    cr_assert_arr_eq(buf, what, strlen(what));
    rt_send_frame(b->cli, what, strlen(what));
    cr_assert_eq(rt_read_frame(a->cli, buf, sizeof buf, 1000), (long)strlen(what), "%s: b -> a", what);
    cr_assert_arr_eq(buf, what, strlen(what));
}

/* The start of a 128 KiB frame: header and `n` of its bytes. */
static void start_big_frame(int fd, const uint8_t *big, size_t n)
{
    uint8_t hdr[4];
    size_t hl = rdv_frame_header(131072, hdr);
    rt_write_all(fd, hdr, hl);
    rt_write_all(fd, big, n);
    rt_pump(20);
}

Test(budget, full_total_ends_the_growing_pair_while_others_keep_working)
{
    cr_assert_eq(reload(BCONF), 0);
    rt_conn a1, b1, a2, b2, a3, b3;
    pair_at(&a1, &b1, "small", "10.0.1.1:1", "10.0.1.2:1");
    pair_at(&a2, &b2, "holder", "10.0.2.1:1", "10.0.2.2:1");
    pair_at(&a3, &b3, "grower", "10.0.3.1:1", "10.0.3.2:1");
    echo_both_ways(&a1, &b1, "before");
    static uint8_t big[131072], got[131072 + 8];
    rt_fill(big, sizeof big, 7);
    start_big_frame(a2.cli, big, 120000);
    cr_assert_geq(rt_gauge("message_bytes"), 120000, "an incomplete frame is held and counted");
    cr_assert_leq(rt_gauge("message_bytes"), 200000);
    cr_assert_eq(rt_gauge("pairs"), 3);
    /* A second one would pass the total: that pair ends, counted. */
    start_big_frame(a3.cli, big, 120000);
    cr_assert(rt_closed(a3.cli) && rt_closed(b3.cli), "the growing side's pair is ended");
    cr_assert_eq(rt_counter("closed_message_total"), 1);
    cr_assert(fc_log_contains(fc, "relay.message_total=200000") && fc_log_contains(fc, "conf.d/40-relay.conf"),
              "the log names the setting and its file");
    cr_assert_eq(rt_gauge("pairs"), 2);
    /* The others go on: the small pair both ways, and the holder's frame
     * arrives whole once it is complete. */
    echo_both_ways(&a1, &b1, "after");
    rt_write_all(a2.cli, big + 120000, sizeof big - 120000);
    cr_assert_eq(rt_read_frame(b2.cli, got, sizeof got, 2000), (long)sizeof big);
    cr_assert_arr_eq(got, big, sizeof big);
    cr_assert_lt(rt_gauge("message_bytes"), 65536, "the large buffer is given back after its frame");
    cr_assert_eq(rt_counter("closed_message_total"), 1);
}

Test(budget, held_bytes_are_released_when_a_side_closes)
{
    cr_assert_eq(reload(BCONF), 0);
    rt_conn a, b;
    pair_at(&a, &b, "leaves", "10.0.4.1:1", "10.0.4.2:1");
    static uint8_t big[131072];
    rt_fill(big, sizeof big, 8);
    start_big_frame(a.cli, big, 100000);
    cr_assert_geq(rt_gauge("message_bytes"), 100000);
    cr_assert_eq(rt_gauge("buffered_bytes"), rt_gauge("message_bytes"), "early bytes 0 + message bytes");
    close(a.cli);
    cr_assert(rt_closed(b.cli));
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_gauge("message_bytes"), 0, "back to 0 when the pair ends");
    cr_assert_eq(rt_gauge("buffered_bytes"), 0);
}

/* Output queued for a TCP reader that does not keep up is relay memory
 * too: it counts, and a pair growing past the total next to it ends. */
Test(budget, output_queued_for_a_slow_tcp_reader_counts)
{
    cr_assert_eq(reload(BCONF), 0);
    rt_conn a, b;
    pair_at(&a, &b, "slowreader", "10.0.5.1:1", "10.0.5.2:1");
    /* B's socket is full: what the relay sends B stays in its queue. */
    static uint8_t fill[65536];
    size_t filled = 0;
    for (ssize_t k; (k = send(b.srv, fill, sizeof fill, MSG_DONTWAIT)) > 0;)
        filled += (size_t)k;
    static uint8_t msg[100000];
    rt_fill(msg, sizeof msg, 9);
    rt_send_frame(a.cli, msg, sizeof msg);
    rt_pump(20);
    cr_assert_geq(rt_gauge("message_bytes"), sizeof msg, "queued for B, counted");
    rt_conn c, d;
    pair_at(&c, &d, "second", "10.0.6.1:1", "10.0.6.2:1");
    static uint8_t big[131072];
    start_big_frame(c.cli, big, 120000);
    cr_assert(rt_closed(c.cli) && rt_closed(d.cli));
    cr_assert_eq(rt_counter("closed_message_total"), 1);
    /* B reads at last: the filler, then the message, intact. */
    uint8_t *drain = malloc(filled);
    for (size_t got = 0; got < filled;) {
        ssize_t k = recv(b.cli, drain + got, filled - got, MSG_DONTWAIT);
        if (k > 0)
            got += (size_t)k;
        rt_pump(1);
    }
    free(drain);
    static uint8_t got[100008];
    cr_assert_eq(rt_read_frame(b.cli, got, sizeof got, 2000), (long)sizeof msg);
    cr_assert_arr_eq(got, msg, sizeof msg);
    rt_pump(5);
    cr_assert_leq(rt_gauge("message_bytes"), 4096 * 4, "the queue's buffer is given back once written");
}

/* A client holding a partial frame while its partner keeps the pair
 * active (empty frames: activity, relay.md §4.3) used to keep it, and its
 * share of memory, for ever. Defaults only: message_timeout_ms = 120 s. */
Test(budget, partial_frame_deadline_ends_the_pair)
{
    cr_assert_eq(reload("message_mode=true\n"), 0);
    rt_conn a, b;
    pair_at(&a, &b, "dribble", "10.0.7.1:1", "10.0.7.2:1");
    static uint8_t part[1000];
    uint8_t hdr[4];
    size_t hl = rdv_frame_header(5000, hdr);
    rt_write_all(a.cli, hdr, hl);
    rt_write_all(a.cli, part, sizeof part);
    rt_pump(5);
    for (int i = 0; i < 11; i++) { /* 110 s: B's empty frames keep the pair from idling */
        fc_advance(fc, 10000);
        rt_send_frame(b.cli, "", 0);
        rt_write_all(a.cli, part, 10); /* a dribble does not move the deadline */
        rt_pump(5);
    }
    cr_assert_eq(rt_gauge("pairs"), 1);
    fc_advance(fc, 10000);
    rt_pump(5);
    cr_assert_eq(rt_gauge("pairs"), 0, "incomplete for message_timeout_ms: ended");
    cr_assert_eq(rt_counter("closed_message_timeout"), 1);
    cr_assert(rt_closed(a.cli) && rt_closed(b.cli));
    cr_assert_eq(rt_gauge("message_bytes"), 0);
}

/* Frames that complete, however slowly each one arrives, are not cut. */
Test(budget, slow_frames_that_complete_are_kept)
{
    cr_assert_eq(reload("message_mode=true\nmessage_timeout_ms=5000\n"), 0);
    rt_conn a, b;
    pair_at(&a, &b, "slowframes", "10.0.8.1:1", "10.0.8.2:1");
    uint8_t hdr[4], buf[64];
    size_t hl = rdv_frame_header(8, hdr);
    for (int i = 0; i < 6; i++) { /* each frame takes 4 s, 24 s in all */
        rt_write_all(a.cli, hdr, hl);
        rt_write_all(a.cli, "abcd", 4);
        rt_pump(3);
        fc_advance(fc, 4000);
        rt_write_all(a.cli, "efgh", 4);
        cr_assert_eq(rt_read_frame(b.cli, buf, sizeof buf, 1000), 8, "frame %d", i);
    }
    cr_assert_eq(rt_gauge("pairs"), 1);
    cr_assert_eq(rt_counter("closed_message_timeout"), 0);
}

/* A side paused for its partner (back-pressure) is not the slow one: the
 * time its incomplete frame spent paused does not count (only that). */
Test(budget, time_paused_for_the_partner_does_not_count)
{
    cr_assert_eq(reload("message_mode=true\nmessage_timeout_ms=5000\nsingle_bandwidth=1e6\n"
                                  "total_bandwidth=1e6\nidle_timeout_ms=600000\nstall_timeout_ms=600000\n"),
                 0);
    rt_conn a, b;
    pair_at(&a, &b, "paused", "10.0.9.1:1", "10.0.9.2:1");
    relay_pair *p = R->pairs;
    relay_ep *ea = p->u.msg.ep[0];
    uint8_t hdr[4];
    size_t hl = rdv_frame_header(100, hdr);
    rt_write_all(a.cli, hdr, hl);
    rt_write_all(a.cli, "half", 4);
    rt_pump(3);
    fc_advance(fc, 3000);
    p->u.msg.bp[0] = true; /* as when B's queue is full */
    cr_assert_eq(relay_pair_resume(R, p), true);
    cr_assert_not(ea->reading);
    fc_advance(fc, 20000);
    cr_assert_eq(rt_gauge("pairs"), 1, "paused: the deadline does not run");
    p->u.msg.bp[0] = false;
    cr_assert_eq(relay_pair_resume(R, p), true);
    fc_advance(fc, 1000);
    cr_assert_eq(rt_gauge("pairs"), 1, "4 s of reading so far: the paused 20 s do not count");
    fc_advance(fc, 1000);
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_counter("closed_message_timeout"), 1);
}

/* ------------------------------------------------------------------ settings */
Test(budget, message_max_must_fit_in_message_total)
{
    cr_assert_neq(reload("message_max=1000000\nmessage_total=500000\n"), 0);
    cr_assert(fc_log_contains(fc, "relay.message_max = 1000000 is larger than relay.message_total = 500000"),
              "one line naming both");
    const char *ok = "message_mode=true\nmessage_max=500000\nmessage_total=500000\n";
    cr_assert_eq(reload(ok), 0, "equal is fine");
    /* SIGHUP: refused, the old values stay (a 550000-byte frame is still
     * over message_max). */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st,
                                "message_mode=true\nmessage_max=600000\nmessage_total=500000\n"),
                 -EINVAL);
    rt_conn a, b;
    pair_at(&a, &b, "still500k", "10.0.10.1:1", "10.0.10.2:1");
    uint8_t hdr[4];
    size_t hl = rdv_frame_header(550000, hdr);
    rt_write_all(a.cli, hdr, hl);
    cr_assert(rt_closed(a.cli) && rt_closed(b.cli));
    cr_assert_eq(rt_counter("closed_error"), 1);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "message_mode=true\nmessage_max=65536\n"
                                "message_total=300000\nmessage_timeout_ms=9000\n"), 0, "both reloadable");
}

Test(budget, setting_bounds)
{
    const char *bad[] = { "message_total=65535\n", "message_total=68719476737\n", "message_total=x\n",
                          "message_timeout_ms=999\n", "message_timeout_ms=3600001\n", "message_timeout_ms=-1\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_neq(reload(bad[i]), 0, "%s", bad[i]);
    cr_assert_eq(reload("message_max=65536\nmessage_total=65536\nmessage_timeout_ms=1000\n"), 0);
    cr_assert_eq(reload("message_timeout_ms=3600000\nmessage_total=68719476736\n"), 0);
    /* The default total is 256 MiB: message_max may be as large, not larger. */
    cr_assert_eq(reload("message_max=268435456\n"), 0);
    cr_assert_neq(reload("message_max=268435457\n"), 0);
    cr_assert(fc_log_contains(fc, "relay.message_total = 268435456"));
}
