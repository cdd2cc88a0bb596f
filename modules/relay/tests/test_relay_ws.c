/* test_relay_ws.c — WebSocket sides through the "relay-ws" service
 * (rdv/svc/relay_ws.h), driven by a fake transport that behaves like
 * websocket-transport where it matters: close reports side_closed at once,
 * a send that overflows closes the side from inside the send, and a resume
 * delivers what it had read from inside pause(). relay.md §4.3, §9;
 * relay-checklist L20–L24, L34, L72. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay_test.h"
#include "rdv/svc/relay_ws.h"

/* ------------------------------------------------------------------ fake transport */
#define FT_SIDES 8
#define FT_MSGS 16
typedef struct ft_side {
    rdv_conn_id id;
    bool paused, closed;
    int nmsg;
    uint8_t *msg[FT_MSGS];
    size_t len[FT_MSGS];
    /* on resume, deliver this message first (what wslay had read) */
    const char *pending;
} ft_side;

static struct {
    ft_side s[FT_SIDES];
    int n;
    const rdv_relay_ws_api *api;
    void *self;
    int overflow_next;   /* the next send to this side overflows */
} ft;

static ft_side *ft_find(rdv_conn_id id)
{
    for (int i = 0; i < ft.n; i++)
        if (ft.s[i].id == id)
            return &ft.s[i];
    return NULL;
}

static int ft_send(void *tp, rdv_conn_id id, const uint8_t *p, size_t n)
{
    (void)tp;
    ft_side *s = ft_find(id);
    if (!s || s->closed)
        return -ENOTCONN;
    if (ft.overflow_next == (int)id) { /* the core's queue overflowed: closed now */
        ft.overflow_next = 0;
        s->closed = true;
        ft.api->side_closed(ft.self, id);
        return -ENOBUFS;
    }
    cr_assert_lt(s->nmsg, FT_MSGS);
    s->msg[s->nmsg] = malloc(n ? n : 1);
    memcpy(s->msg[s->nmsg], p, n);
    s->len[s->nmsg++] = n;
    return 0;
}

static int ft_pause(void *tp, rdv_conn_id id, bool paused)
{
    (void)tp;
    ft_side *s = ft_find(id);
    if (!s || s->closed)
        return -ENOTCONN;
    s->paused = paused;
    if (!paused && s->pending) { /* like ws_resume: delivered from inside */
        const char *m = s->pending;
        s->pending = NULL;
        if (ft.api->side_message(ft.self, id, (const uint8_t *)m, strlen(m)) != RDV_OK)
            s->closed = true;
    }
    return 0;
}

static int ft_close(void *tp, rdv_conn_id id, uint16_t status)
{
    (void)tp, (void)status;
    ft_side *s = ft_find(id);
    if (!s || s->closed)
        return -ENOTCONN;
    s->closed = true;
    ft.api->side_closed(ft.self, id); /* as the transport does, synchronously */
    return 0;
}

static const rdv_relay_ws_side_ops ft_ops = { .send = ft_send, .pause = ft_pause, .close = ft_close };

static void ft_setup(void)
{
    rt_setup();
    memset(&ft, 0, sizeof ft);
    rdv_core *h = fc_handle(fc, "websocket-transport");
    ft.api = h->api->service_get(h, RDV_SVC_RELAY_WS, RDV_SVC_RELAY_WS_VERSION, &ft.self);
    cr_assert_not_null(ft.api, "the relay publishes relay-ws");
}

static void ft_teardown(void)
{
    for (int i = 0; i < ft.n; i++)
        for (int k = 0; k < ft.s[i].nmsg; k++)
            free(ft.s[i].msg[k]);
    rt_teardown();
}

/* A side accepted on the relay-ws listener from tcp_addr, attributed to
 * peer_addr (X-Real-IP), offering RequestRelay{uuid}. Returns side_open's
 * answer; *out is the side. */
static int ft_open_ops(const char *tcp_addr, const char *peer_addr, const char *uuid,
                       const rdv_relay_ws_side_ops *ops, ft_side **out)
{
    rdv_addr tcp = fc_addr(tcp_addr), peer = fc_addr(peer_addr);
    rdv_conn_id id = fc_conn_open(fc, "relay-ws", RDV_TR_TCP, &tcp);
    ft_side *s = &ft.s[ft.n++];
    memset(s, 0, sizeof *s);
    s->id = id;
    *out = s;
    uint8_t rr[256];
    size_t n = rt_rr(rr, sizeof rr, uuid, NULL);
    return ft.api->side_open(ft.self, id, &peer, &tcp, rr, n, ops, NULL);
}

static int ft_open(const char *tcp_addr, const char *peer_addr, const char *uuid, ft_side **out)
{
    return ft_open_ops(tcp_addr, peer_addr, uuid, &ft_ops, out);
}

TestSuite(wsx, .init = ft_setup, .fini = ft_teardown);

Test(wsx, L20_L21_L24_ws_pair_keeps_message_boundaries)
{
    ft_side *a, *b;
    cr_assert_eq(ft_open("10.1.0.1:5000", "10.1.0.1:5000", "wsws", &a), RDV_OK);
    cr_assert_not(a->paused, "a waiting side is read until it sends: a close is seen at once (§3.4, L47)");
    cr_assert_eq(rt_gauge("waiting"), 1);
    cr_assert_eq(ft_open("10.1.0.2:5000", "10.1.0.2:5000", "wsws", &b), RDV_OK);
    cr_assert_eq(rt_gauge("pairs_message"), 1);
    fc_advance(fc, 0); /* deferred resumes */
    cr_assert_not(a->paused);
    cr_assert_not(b->paused);
    static uint8_t big[70000];
    rt_fill(big, sizeof big, 3);
    const size_t sizes[] = { 1, 63, 64, 1000, 70000 };
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(ft.api->side_message(ft.self, a->id, big, sizes[i]), RDV_OK);
    cr_assert_eq(ft.api->side_message(ft.self, a->id, big, 0), RDV_OK, "empty: activity only (L24)");
    cr_assert_eq(b->nmsg, 5);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(b->len[i], sizes[i]);
        cr_assert_arr_eq(b->msg[i], big, sizes[i]);
    }
    cr_assert_eq(a->nmsg, 0, "nothing goes back, no ack");
    /* Activity (ping/pong/text) keeps the pair; silence ends it (§5). */
    fc_advance(fc, 20000);
    ft.api->side_activity(ft.self, b->id);
    fc_advance(fc, 20000);
    cr_assert_eq(rt_gauge("pairs"), 1);
    fc_advance(fc, 11000);
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert(a->closed && b->closed, "both closed through ops->close");
    cr_assert_eq(rt_gauge("ws_open"), 0);
}

static long read_frame_hdr(int fd, uint8_t *hdr, size_t *hl, uint8_t *body, size_t cap)
{
    size_t have = 0, h, pl;
    uint8_t buf[1 << 16];
    for (int t = 0; t < 2000; t++) {
        rt_pump(1);
        ssize_t k = recv(fd, buf + have, sizeof buf - have, MSG_DONTWAIT);
        if (k > 0)
            have += (size_t)k;
        if (rdv_frame_parse(buf, have, sizeof buf, &h, &pl) == RDV_FRAME_OK) {
            cr_assert_leq(pl, cap);
            memcpy(hdr, buf, h);
            memcpy(body, buf + h, pl);
            *hl = h;
            cr_assert_eq(have, h + pl, "one frame at a time");
            return (long)pl;
        }
        if (k <= 0)
            usleep(100);
    }
    return -1;
}

Test(wsx, L22_L23_L24_mixed_pair_frames_each_message)
{
    ft_side *a;
    cr_assert_eq(ft_open("10.1.0.1:5000", "10.1.0.1:5000", "mixed", &a), RDV_OK);
    rt_conn t = rt_open("10.1.0.3:6000");
    cr_assert_eq(rt_request(&t, "mixed", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs_message"), 1);
    fc_advance(fc, 0);
    /* WS -> TCP: one BytesCodec frame per message, minimal headers (L22). */
    static uint8_t x[16384], body[16384];
    rt_fill(x, sizeof x, 5);
    const struct { size_t n; uint8_t h[3]; size_t hl; } want[] = {
        { 63, { 0xfc }, 1 }, { 64, { 0x01, 0x01 }, 2 }, { 16383, { 0xfd, 0xff }, 2 }, { 16384, { 0x02, 0x00, 0x01 }, 3 },
    };
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(ft.api->side_message(ft.self, a->id, x, want[i].n), RDV_OK);
        uint8_t hdr[4];
        size_t hl;
        cr_assert_eq(read_frame_hdr(t.cli, hdr, &hl, body, sizeof body), (long)want[i].n);
        cr_assert_eq(hl, want[i].hl);
        cr_assert_arr_eq(hdr, want[i].h, hl, "header for %zu bytes", want[i].n);
        cr_assert_arr_eq(body, x, want[i].n);
    }
    /* TCP -> WS: one binary message per frame, 2 MiB included (L23);
     * the empty frame 00 is not forwarded (L24). */
    size_t big = 2u << 20;
    uint8_t *y = malloc(big);
    rt_fill(y, big, 6);
    uint8_t hdr[4];
    size_t hl = rdv_frame_header(big, hdr);
    rt_write_all(t.cli, "\x00", 1);
    rt_write_all(t.cli, "\x0c" "abc", 4);
    rt_write_all(t.cli, hdr, hl);
    rt_write_all(t.cli, y, big);
    for (int i = 0; i < 200 && a->nmsg < 2; i++)
        rt_pump(1);
    cr_assert_eq(a->nmsg, 2);
    cr_assert_eq(a->len[0], 3);
    cr_assert_arr_eq(a->msg[0], "abc", 3);
    cr_assert_eq(a->len[1], big);
    cr_assert_arr_eq(a->msg[1], y, big);
    free(y);
    /* The TCP side leaves: the WS side is closed too (§5). The 2 MiB put
     * the pair in token debt: let the refill timer repay it first. */
    close(t.cli);
    fc_advance(fc, 1000);
    rt_pump(3);
    cr_assert(a->closed);
    cr_assert_eq(rt_gauge("pairs"), 0);
}

Test(wsx, refused_first_messages_are_the_transports_to_close)
{
    ft_side *s;
    rdv_addr tcp = fc_addr("10.1.0.9:1");
    rdv_conn_id id = fc_conn_open(fc, "relay-ws", RDV_TR_TCP, &tcp);
    cr_assert_eq(ft.api->side_open(ft.self, id, &tcp, &tcp, (const uint8_t *)"\xff\x01", 2, &ft_ops, NULL), RDV_CLOSE);
    cr_assert_eq(rt_counter("rejected_bad_message"), 1);
    cr_assert_eq(rt_gauge("ws_open"), 0);
    /* X-Real-IP blocklisted (relay.md §9) */
    char out[64];
    fc_admin(fc, "Ba 203.0.113.9", out, sizeof out);
    cr_assert_eq(ft_open("10.1.0.9:2", "203.0.113.9:0", "blocked", &s), RDV_CLOSE);
    cr_assert_not(s->closed, "refused: not closed by us");
    cr_assert_eq(rt_counter("rejected_blocked"), 1);
    cr_assert_eq(rt_gauge("waiting"), 0);
}

Test(wsx, L72_blocklist_applies_at_accept_on_the_websocket_port)
{
    char out[64];
    fc_admin(fc, "Ba 198.51.100.7", out, sizeof out);
    rdv_addr bad = fc_addr("198.51.100.7:1"), good = fc_addr("198.51.100.8:1");
    cr_assert_not(fc_conn_alive(fc, fc_conn_open(fc, "relay-ws", RDV_TR_TCP, &bad)), "before any handshake");
    cr_assert(fc_conn_alive(fc, fc_conn_open(fc, "relay-ws", RDV_TR_TCP, &good)));
    cr_assert(fc_conn_alive(fc, fc_conn_open(fc, "other", RDV_TR_TCP, &bad)), "other listeners are not ours");
}

Test(wsx, L34_x_real_ip_names_the_late_side)
{
    ft_side *a, *b;
    cr_assert_eq(ft_open("10.1.0.1:5000", "10.1.0.1:5000", "xri", &a), RDV_OK);
    cr_assert_eq(ft_open("127.0.0.1:5001", "203.0.113.9:0", "xri", &b), RDV_OK);
    fc_advance(fc, 1000);
    char out[256];
    cr_assert_eq(fc_admin(fc, "u", out, sizeof out), 0);
    cr_assert(strncmp(out, "203.0.113.9:0: 1s ", 18) == 0, "usage: %s", out);
    fc_admin(fc, "Ba 203.0.113.9", out, sizeof out);
    fc_advance(fc, 1000);
    cr_assert_eq(rt_gauge("pairs"), 0, "ended at the next tick");
    cr_assert(a->closed && b->closed);
    cr_assert_eq(rt_counter("closed_blocked"), 1);
}

Test(wsx, a_message_racing_the_pause_is_kept_for_the_partner)
{
    ft_side *a, *b;
    cr_assert_eq(ft_open("10.1.0.1:1", "10.1.0.1:1", "race", &a), RDV_OK);
    cr_assert_eq(ft.api->side_message(ft.self, a->id, (const uint8_t *)"first", 5), RDV_OK);
    cr_assert_eq(ft.api->side_message(ft.self, a->id, (const uint8_t *)"second", 6), RDV_OK);
    cr_assert_eq(rt_gauge("buffered_bytes"), 11);
    a->pending = "third"; /* what the transport had read: delivered on resume */
    cr_assert_eq(ft_open("10.1.0.2:1", "10.1.0.2:1", "race", &b), RDV_OK);
    cr_assert_eq(b->nmsg, 2, "held messages go first, at pairing");
    fc_advance(fc, 0);
    cr_assert_eq(b->nmsg, 3);
    cr_assert_arr_eq(b->msg[0], "first", 5);
    cr_assert_arr_eq(b->msg[1], "second", 6);
    cr_assert_arr_eq(b->msg[2], "third", 5);
    cr_assert_eq(rt_gauge("buffered_bytes"), 0);
}

/* §3.4, §4.4, L47: read while it waits, so its going away is seen at once;
 * its first message is held and pauses it (the rest stays in the kernel). */
Test(wsx, a_waiting_side_is_read_until_its_first_message)
{
    ft_side *a, *b;
    cr_assert_eq(ft_open("10.1.0.1:1", "10.1.0.1:1", "pauses", &a), RDV_OK);
    cr_assert_not(a->paused);
    cr_assert_eq(ft.api->side_message(ft.self, a->id, (const uint8_t *)"", 0), RDV_OK);
    cr_assert_not(a->paused, "an empty message holds nothing");
    cr_assert_eq(ft.api->side_message(ft.self, a->id, (const uint8_t *)"signed-id", 9), RDV_OK);
    cr_assert(a->paused, "held: not read further until the partner comes (§4.4)");
    cr_assert_eq(rt_gauge("buffered_bytes"), 9);
    cr_assert_eq(ft_open("10.1.0.2:1", "10.1.0.2:1", "pauses", &b), RDV_OK);
    fc_advance(fc, 0);
    cr_assert_not(a->paused, "resumed at pairing");
    cr_assert_eq(b->nmsg, 1);
    cr_assert_arr_eq(b->msg[0], "signed-id", 9);
}

Test(wsx, a_side_closed_while_waiting_is_dropped)
{
    ft_side *a;
    cr_assert_eq(ft_open("10.1.0.1:1", "10.1.0.1:1", "leaves", &a), RDV_OK);
    a->closed = true;
    ft.api->side_closed(ft.self, a->id);
    cr_assert_eq(rt_gauge("waiting"), 0);
    cr_assert_eq(rt_counter("rejected_waiter_gone"), 1);
    cr_assert_eq(rt_gauge("ws_open"), 0);
    ft_side *b;
    cr_assert_eq(ft_open("10.1.0.2:1", "10.1.0.2:1", "leaves", &b), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 0, "no pair with a side that left");
}

Test(wsx, an_overflowing_send_closes_from_inside_safely)
{
    ft_side *a, *b;
    cr_assert_eq(ft_open("10.1.0.1:1", "10.1.0.1:1", "overflow", &a), RDV_OK);
    cr_assert_eq(ft_open("10.1.0.2:1", "10.1.0.2:1", "overflow", &b), RDV_OK);
    fc_advance(fc, 0);
    ft.overflow_next = (int)b->id;
    cr_assert_eq(ft.api->side_message(ft.self, a->id, (const uint8_t *)"boom", 4), RDV_OK);
    fc_advance(fc, 0); /* the deferred close finds the pair gone */
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert(a->closed && b->closed);
    cr_assert_eq(rt_gauge("ws_open"), 0);
    cr_assert_eq(rt_counter("closed_error"), 1);
}

Test(wsx, eof_lets_the_partner_drain_first)
{
    ft_side *a;
    cr_assert_eq(ft_open("10.1.0.1:1", "10.1.0.1:1", "drain", &a), RDV_OK);
    rt_conn t = rt_open("10.1.0.3:1");
    cr_assert_eq(rt_request(&t, "drain", NULL), RDV_OK);
    fc_advance(fc, 0);
    cr_assert_eq(ft.api->side_message(ft.self, a->id, (const uint8_t *)"bye", 3), RDV_OK);
    a->closed = true;
    ft.api->side_closed(ft.self, a->id);
    uint8_t hdr[4], body[8];
    size_t hl;
    cr_assert_eq(read_frame_hdr(t.cli, hdr, &hl, body, sizeof body), 3, "what was read is delivered (§5)");
    cr_assert(rt_closed(t.cli));
    cr_assert_eq(rt_gauge("pairs"), 0);
}

Test(wsx, stop_closes_websocket_sides)
{
    ft_side *a, *b, *c;
    cr_assert_eq(ft_open("10.1.0.1:1", "10.1.0.1:1", "s1", &a), RDV_OK);
    cr_assert_eq(ft_open("10.1.0.2:1", "10.1.0.2:1", "s1", &b), RDV_OK);
    cr_assert_eq(ft_open("10.1.0.3:1", "10.1.0.3:1", "s2", &c), RDV_OK);
    rdv_module_get()->stop(st);
    cr_assert(a->closed && b->closed && c->closed);
    cr_assert_eq(rt_gauge("ws_open"), 0);
    cr_assert_eq(ft.api->side_open(ft.self, 999, &(rdv_addr){ 0 }, &(rdv_addr){ 0 }, NULL, 0, &ft_ops, NULL),
                 RDV_CLOSE, "no new sides while stopping");
}

/* ------------------------------------------------------------------ write queues the test controls
 * The fake core writes everything at once (conn_info's wqueue is always
 * 0). These tests give the relay a core whose conn_info reports a queue
 * per side, as the real core does for a WebSocket reader that does not
 * keep up; on_drain (side_drain) comes only when it is empty, as in the
 * real core. */
static rdv_core_api wq_api;
static const rdv_core_api *wq_orig;
static size_t wq_len[FT_SIDES];
static bool wq_hold; /* sends stay in the queue */

static int wq_conn_info(rdv_core *c, rdv_conn_id id, rdv_conn_info *out)
{
    int r = wq_orig->conn_info(c, id, out);
    ft_side *s = ft_find(id);
    if (r == 0 && s)
        out->wqueue = wq_len[s - ft.s];
    return r;
}

static int wq_send(void *tp, rdv_conn_id id, const uint8_t *p, size_t n)
{
    int r = ft_send(tp, id, p, n);
    ft_side *s = ft_find(id);
    if (r == 0 && s && wq_hold)
        wq_len[s - ft.s] += n;
    return r;
}

static const rdv_relay_ws_side_ops wq_ops = { .send = wq_send, .pause = ft_pause, .close = ft_close };

static void wq_start(const char *conf)
{
    if (conf) { /* load again with conf */
        fc_unload(fc, rdv_module_get(), st);
        cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &st), 0);
        R = st;
        rdv_core *h = fc_handle(fc, "websocket-transport");
        ft.api = h->api->service_get(h, RDV_SVC_RELAY_WS, RDV_SVC_RELAY_WS_VERSION, &ft.self);
    }
    memset(wq_len, 0, sizeof wq_len);
    wq_hold = true;
    wq_orig = R->core->api;
    wq_api = *wq_orig;
    wq_api.conn_info = wq_conn_info;
    R->core->api = &wq_api;
}

static void wq_teardown(void)
{
    if (R && wq_orig)
        R->core->api = wq_orig;
    wq_orig = NULL;
    ft_teardown();
}

static int wq_open(const char *addr, const char *uuid, ft_side **out)
{
    return ft_open_ops(addr, addr, uuid, &wq_ops, out);
}

static void wq_free_msgs(ft_side *s)
{
    for (int k = 0; k < s->nmsg; k++)
        free(s->msg[k]);
    s->nmsg = 0;
}

TestSuite(wsq, .init = ft_setup, .fini = wq_teardown);

/* A pair of sides from net.1 and net.2 on uuid; A sends 2 MiB, all held in
 * B's core queue (over message_queue), so A is paused. Returns the size. */
static size_t wq_pair_with_full_queue(const char *net, const char *uuid, ft_side **a, ft_side **b)
{
    char addr[2][32];
    snprintf(addr[0], sizeof addr[0], "%s.1:1", net);
    snprintf(addr[1], sizeof addr[1], "%s.2:1", net);
    wq_start(NULL);
    cr_assert_eq(wq_open(addr[0], uuid, a), RDV_OK);
    cr_assert_eq(wq_open(addr[1], uuid, b), RDV_OK);
    fc_advance(fc, 0);
    size_t big = 2u << 20;
    uint8_t *m = calloc(1, big);
    cr_assert_eq(ft.api->side_message(ft.self, (*a)->id, m, big), RDV_OK);
    free(m);
    cr_assert_eq((*b)->nmsg, 1);
    cr_assert((*a)->paused, "B's queue is over message_queue: A waits");
    return big;
}

/* relay.md §4.6 / L61: "no write progress". A viewer on a slow link drains
 * a 2 MiB queue at 30000 bytes/s (240 kbit/s): the queue goes down every
 * second but is empty only after ~70 s, and the core reports a drain only
 * then. Progress, not a stall. A reader that stops altogether still ends
 * the pair after stall_timeout_ms. */
Test(wsq, L61_slow_websocket_reader_making_progress_is_not_stalled)
{
    ft_side *a, *b;
    size_t big = wq_pair_with_full_queue("10.2.0", "slowviewer", &a, &b);
    size_t *q = &wq_len[b - ft.s];
    cr_assert_eq(*q, big);
    for (int s = 0; s < 60; s++) {
        *q -= 30000;
        fc_advance(fc, 1000);
    }
    cr_assert_eq(rt_gauge("pairs"), 1, "a queue that goes down is write progress");
    cr_assert_eq(rt_counter("closed_stall"), 0);
    /* Now it stops reading altogether. */
    fc_advance(fc, 29000);
    cr_assert_eq(rt_gauge("pairs"), 1);
    fc_advance(fc, 2000);
    cr_assert_eq(rt_gauge("pairs"), 0, "no progress for stall_timeout_ms: ended");
    cr_assert_eq(rt_counter("closed_stall"), 1);
    cr_assert(a->closed && b->closed);
}

/* §4.6, L61 per direction: B's queue is full and never goes down (B does
 * not read), while B sends a small message every 5 s that A receives.
 * Before, B's messages counted as the pair's write progress and the pair
 * held A's data for ever. */
Test(wsq, L61_a_websocket_side_that_sends_but_never_reads_is_stalled)
{
    ft_side *a, *b;
    wq_pair_with_full_queue("10.2.3", "trickler", &a, &b);
    int t = 0;
    for (; t < 8 && rt_gauge("pairs") == 1; t++) {
        int before = a->nmsg;
        cr_assert_eq(ft.api->side_message(ft.self, b->id, (const uint8_t *)"x", 1), RDV_OK);
        cr_assert_eq(a->nmsg, before + 1, "B -> A moves (%d)", t);
        fc_advance(fc, 5000);
    }
    cr_assert_eq(rt_gauge("pairs"), 0, "still paired after %d s of B's trickle", t * 5);
    cr_assert_eq(rt_counter("closed_stall"), 1);
    cr_assert_geq(t, 6, "not before stall_timeout_ms (30 s)");
    wq_free_msgs(a), wq_free_msgs(b);
}

/* The core's queue for a WebSocket side holds what the relay sent: it
 * counts in relay.message_total; a pair whose message would pass it ends,
 * the others go on, and the share is given back as the queue drains. */
Test(wsq, websocket_queues_count_in_message_total)
{
    wq_start("message_max=1048576\nmessage_total=1600000\n");
    ft_side *a, *b, *c, *d;
    cr_assert_eq(wq_open("10.2.1.1:1", "q1", &a), RDV_OK);
    cr_assert_eq(wq_open("10.2.1.2:1", "q1", &b), RDV_OK);
    cr_assert_eq(wq_open("10.2.2.1:1", "q2", &c), RDV_OK);
    cr_assert_eq(wq_open("10.2.2.2:1", "q2", &d), RDV_OK);
    fc_advance(fc, 0);
    size_t mib = 1u << 20;
    uint8_t *m = calloc(1, mib);
    cr_assert_eq(ft.api->side_message(ft.self, a->id, m, mib), RDV_OK);
    cr_assert_eq(b->nmsg, 1);
    cr_assert_eq(rt_gauge("message_bytes"), mib, "queued for B (B does not read), counted");
    cr_assert_eq(rt_gauge("buffered_bytes"), mib);
    /* C's 1 MiB for D would pass 1600000. */
    cr_assert_eq(ft.api->side_message(ft.self, c->id, m, mib), RDV_OK);
    free(m);
    cr_assert(c->closed && d->closed, "that pair ended");
    cr_assert_eq(d->nmsg, 0, "nothing was queued past the total");
    cr_assert_eq(rt_counter("closed_message_total"), 1);
    cr_assert(fc_log_contains(fc, "relay.message_total=1600000") && fc_log_contains(fc, "conf.d/40-relay.conf"));
    cr_assert_not(a->closed || b->closed, "the pair under the total goes on");
    /* B reads everything: the share goes back, A is read again. */
    wq_len[b - ft.s] = 0;
    ft.api->side_drain(ft.self, b->id);
    cr_assert_eq(rt_gauge("message_bytes"), 0);
    fc_advance(fc, 0);
    cr_assert_not(a->paused);
    cr_assert_eq(ft.api->side_message(ft.self, a->id, (const uint8_t *)"0123456789", 10), RDV_OK);
    cr_assert_eq(b->nmsg, 2);
    cr_assert_eq(rt_gauge("message_bytes"), 10);
    /* Sides leaving give their share back too. */
    wq_len[b - ft.s] = 0; /* written: the pair ends at A's close */
    a->closed = true;
    ft.api->side_closed(ft.self, a->id);
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_gauge("message_bytes"), 0);
    cr_assert_eq(rt_gauge("buffered_bytes"), 0);
    wq_free_msgs(b);
}

/* ------------------------------------------------------------------ out of memory
 * uthash's allocations fail through the module's test hook (relay.h). A
 * side that cannot be held is refused at side_open (RDV_CLOSE: the
 * transport closes it, we never call its ops->close), counted, and
 * nothing else changes; once memory is back sides pair again. On the code
 * before uthash's non-fatal mode each of these exited the process. */
static void ft_oom_teardown(void)
{
    relay_test_hash_fail_from(0);
    ft_teardown();
}

TestSuite(wsx_oom, .init = ft_setup, .fini = ft_oom_teardown);

/* The first side makes the WebSocket side table (allocations 1, 2), then
 * the waiting table (3, 4): whichever fails, the side is refused and both
 * tables are as before (empty). */
Test(wsx_oom, side_refused_when_a_table_cannot_be_made)
{
    ft_side *s;
    for (unsigned long nth = 1; nth <= 4; nth++) {
        relay_test_hash_fail_from(nth);
        cr_assert_eq(ft_open("10.1.0.1:5000", "10.1.0.1:5000", "oom", &s), RDV_CLOSE, "allocation %lu failing", nth);
        cr_assert_not(s->closed, "refused at side_open: the transport closes it");
        cr_assert_eq(rt_counter("oom"), nth);
        cr_assert_eq(rt_counter("rejected_internal"), nth);
        cr_assert_eq(rt_gauge("ws_open"), 0);
        cr_assert_eq(rt_gauge("waiting"), 0);
        cr_assert_null(R->ws_sides);
        cr_assert_null(R->waiting);
        cr_assert_eq(rt_gauge("buffered_bytes"), 0);
    }
    cr_assert(fc_log_contains(fc, "out of memory: WebSocket side from 10.1.0.1 refused"));
    cr_assert(fc_log_contains(fc, "out of memory: side from 10.1.0.1 not waiting for its partner"));
    relay_test_hash_fail_from(0);
    ft_side *a, *b;
    cr_assert_eq(ft_open("10.1.0.1:5000", "10.1.0.1:5000", "oom", &a), RDV_OK);
    cr_assert_eq(rt_gauge("waiting"), 1);
    cr_assert_eq(ft_open("10.1.0.2:5000", "10.1.0.2:5000", "oom", &b), RDV_OK);
    cr_assert_eq(rt_gauge("pairs_message"), 1);
    cr_assert_eq(rt_gauge("ws_open"), 2);
    fc_advance(fc, 0);
    cr_assert_eq(ft.api->side_message(ft.self, a->id, (const uint8_t *)"abc", 3), RDV_OK);
    cr_assert_eq(b->nmsg, 1);
    cr_assert_arr_eq(b->msg[0], "abc", 3);
}

/* A pair of WebSocket sides is up (their table exists, the waiting table
 * is empty again). A third side gets its slot among the sides, but no
 * waiting entry: it is refused and taken out again, the pair goes on
 * untouched, and a pair forms again once memory is back. */
Test(wsx_oom, side_without_a_waiting_entry_is_refused_the_pair_goes_on)
{
    ft_side *a, *b, *c;
    cr_assert_eq(ft_open("10.1.0.1:5000", "10.1.0.1:5000", "up", &a), RDV_OK);
    cr_assert_eq(ft_open("10.1.0.2:5000", "10.1.0.2:5000", "up", &b), RDV_OK);
    fc_advance(fc, 0);
    cr_assert_null(R->waiting);
    relay_test_hash_fail_from(1);
    unsigned long allocs = relay_test_hash_allocs();
    cr_assert_eq(ft_open("10.1.0.3:5000", "10.1.0.3:5000", "other", &c), RDV_CLOSE);
    cr_assert_eq(relay_test_hash_allocs(), allocs + 1, "only the waiting table was attempted");
    cr_assert_not(c->closed, "refused at side_open: the transport closes it");
    cr_assert_eq(rt_counter("oom"), 1);
    cr_assert_eq(rt_gauge("ws_open"), 2, "the refused side is no longer held");
    cr_assert_eq(rt_gauge("waiting"), 0);
    cr_assert_eq(rt_gauge("pairs_message"), 1);
    cr_assert_eq(ft.api->side_message(ft.self, b->id, (const uint8_t *)"xyz", 3), RDV_OK);
    cr_assert_eq(a->nmsg, 1, "the pair still relays");
    cr_assert_arr_eq(a->msg[0], "xyz", 3);
    cr_assert_eq(ft.api->side_message(ft.self, c->id, (const uint8_t *)"zz", 2), RDV_CLOSE, "c is unknown");
    relay_test_hash_fail_from(0);
    ft_side *d, *e;
    cr_assert_eq(ft_open("10.1.0.3:5000", "10.1.0.3:5000", "other", &d), RDV_OK);
    cr_assert_eq(ft_open("10.1.0.4:5000", "10.1.0.4:5000", "other", &e), RDV_OK);
    cr_assert_eq(rt_gauge("pairs_message"), 2);
    cr_assert_eq(rt_gauge("ws_open"), 4);
}
