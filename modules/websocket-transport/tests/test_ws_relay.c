/* test_ws_relay.c — the relay WebSocket port and the "relay-ws" contract
 * (rdv/svc/relay_ws.h), against a fake relay that pairs two sides by their
 * first message and forwards messages between them (relay.md §3.3, §4.3,
 * §9; checklist L20-L35). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdv/svc/relay_ws.h"
#include "ws_test.h"

/* ------------------------------------------------------------------ fake relay */
#define FR_SIDES 8
typedef struct fr_side {
    rdv_conn_id id, partner;
    rdv_addr peer, tcp_peer;
    char first[64];
    int messages, activity, drains;
    bool closed;
} fr_side;

static struct {
    fr_side s[FR_SIDES];
    int n;
    const rdv_relay_ws_side_ops *ops;
    void *tp;
    bool refuse;              /* side_open answers RDV_CLOSE */
    bool pause_on_message;    /* pause the sender after each message */
    bool bounce;              /* pause and resume at once, from inside the message */
    size_t last_len;
    int opens, closes;
    const uint8_t *expect;    /* set: messages are compared with it, not forwarded */
    size_t expect_n;
    int expect_seen;
} fr;

static fr_side *fr_find(rdv_conn_id id)
{
    for (int i = 0; i < fr.n; i++)
        if (fr.s[i].id == id)
            return &fr.s[i];
    return NULL;
}

static int fr_open(void *self, rdv_conn_id id, const rdv_addr *peer, const rdv_addr *tcp_peer, const uint8_t *first,
                   size_t n, const rdv_relay_ws_side_ops *ops, void *tp)
{
    (void)self;
    fr.opens++;
    fr.ops = ops, fr.tp = tp;
    if (fr.refuse || fr.n == FR_SIDES || n >= sizeof fr.s[0].first)
        return RDV_CLOSE;
    fr_side *s = &fr.s[fr.n++];
    memset(s, 0, sizeof *s);
    s->id = id, s->peer = *peer, s->tcp_peer = *tcp_peer;
    memcpy(s->first, first, n);
    for (int i = 0; i < fr.n - 1; i++) /* pair on an equal first message, like a uuid */
        if (!fr.s[i].partner && !fr.s[i].closed && strcmp(fr.s[i].first, s->first) == 0) {
            fr.s[i].partner = id, s->partner = fr.s[i].id;
            /* the waiting side reads again once paired (relay.md §4.4) */
            cr_assert_eq(ops->pause(tp, fr.s[i].id, false), 0);
            return RDV_OK;
        }
    /* a side waiting for its partner is not read (relay.md §4.4) */
    cr_assert_eq(ops->pause(tp, id, true), 0, "ops work inside side_open");
    return RDV_OK;
}

static int fr_message(void *self, rdv_conn_id id, const uint8_t *p, size_t n)
{
    (void)self;
    fr_side *s = fr_find(id);
    cr_assert_not_null(s);
    s->messages++;
    fr.last_len = n;
    if (fr.expect) { /* too big for the fake core's send_payload */
        cr_assert_eq(n, fr.expect_n);
        cr_assert(memcmp(p, fr.expect, n) == 0, "message delivered intact");
        fr.expect_seen++;
        return RDV_OK;
    }
    if (n && s->partner) /* empty messages are activity only (§4.3) */
        cr_assert_eq(fr.ops->send(fr.tp, s->partner, p, n), 0);
    if (fr.pause_on_message)
        fr.ops->pause(fr.tp, id, true);
    if (fr.bounce) {
        cr_assert_eq(fr.ops->pause(fr.tp, id, true), 0);
        cr_assert_eq(fr.ops->pause(fr.tp, id, false), 0);
    }
    return RDV_OK;
}

static void fr_activity(void *self, rdv_conn_id id)
{
    (void)self;
    fr_find(id)->activity++;
}

static void fr_drain(void *self, rdv_conn_id id)
{
    (void)self;
    fr_find(id)->drains++;
}

static void fr_closed(void *self, rdv_conn_id id)
{
    (void)self;
    fr_side *s = fr_find(id);
    cr_assert_not_null(s, "side_closed for a side the relay never took");
    cr_assert_not(s->closed, "side_closed twice");
    s->closed = true;
    fr.closes++;
    fr_side *p = s->partner ? fr_find(s->partner) : NULL;
    if (p && !p->closed) /* §5: a pair ends as a whole, nothing more written */
        fr.ops->close(fr.tp, p->id, 0);
}

static const rdv_relay_ws_api fr_api = {
    .side_open = fr_open,
    .side_message = fr_message,
    .side_activity = fr_activity,
    .side_drain = fr_drain,
    .side_closed = fr_closed,
};

/* ------------------------------------------------------------------ suite */
static fc_core *fc;
static rdv_listener *rl;
static void *ws_st;

#define RCONF "rendezvous_port = 0\nrelay_port = 21119\nrelay_max_frame = 65536\nrelay_max_message = 200000\n" \
              "relay_first_max = 1024\ntrusted_proxies = 127.0.0.0/8\n"

static void setup_conf(const char *conf)
{
    memset(&fr, 0, sizeof fr);
    fc = fc_new();
    rdv_core *h = fc_handle(fc, "fake-relay");
    cr_assert_eq(h->api->service_publish(h, RDV_SVC_RELAY_WS, RDV_SVC_RELAY_WS_VERSION, &fr_api, NULL), 0);
    cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &ws_st), 0);
    rl = fc_find_listener(fc, "relay-ws", RDV_TR_TCP);
    cr_assert_not_null(rl, "relay port opened when relay-ws is provided");
}

static void setup(void) { setup_conf(RCONF); }

static void teardown(void) { fc_free(fc); }

TestSuite(ws_relay, .init = setup, .fini = teardown);

static uint64_t ctr(const char *name)
{
    char full[96];
    snprintf(full, sizeof full, "websocket-transport.%s", name);
    return fc_counter(fc, full);
}

static rdv_conn_id side(const char *peer, const char *first, const char *extra)
{
    rdv_conn_id id = wt_open(fc, rl, peer, extra);
    wt_send(fc, id, true, 2, first, strlen(first) + 1);
    cr_assert(fc_conn_alive(fc, id));
    cr_assert_not_null(fr_find(id), "side handed to the relay");
    return id;
}

static void expect_payload(rdv_conn_id to, const void *p, size_t n)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "nothing forwarded");
    cr_assert_eq(s->kind, FC_SENT_CONN, "forwarded as one codec message (one binary message)");
    cr_assert_eq(s->conn, to);
    cr_assert_eq(s->len, n);
    cr_assert(memcmp(s->raw, p, n) == 0);
}

Test(ws_relay, ws_pair_forwards_messages_with_boundaries_L20_L21)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-1", ""), b = side("127.0.0.3:1000", "uuid-1", "");
    cr_assert_eq(fr_find(a)->partner, b);
    cr_assert_eq(ctr("relay_handoff"), 2);
    cr_assert_eq(fc_gauge(fc, "websocket-transport.relay_sides"), 2);
    const size_t sizes[] = { 1, 63, 64, 1000, 70000, 199999 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *p = malloc(sizes[i]);
        for (size_t k = 0; k < sizes[i]; k++)
            p[k] = (uint8_t)(k * 7 + i);
        /* big ones in 60000-byte fragments (relay_max_frame is 65536 here) */
        size_t off = 0;
        do {
            size_t chunk = sizes[i] - off > 60000 ? 60000 : sizes[i] - off;
            bool fin = off + chunk == sizes[i];
            wt_send(fc, a, fin, off ? 0 : 2, p + off, chunk);
            off += chunk;
        } while (off < sizes[i]);
        expect_payload(b, p, sizes[i]);
        free(p);
    }
    const fc_conn_state *st = fc_conn(fc, b);
    uint8_t h[16];
    cr_assert_eq(st->codec->header(st->codec_ud, 70000, h), 10, "the WS partner receives binary frames");
    cr_assert_eq(h[0], 0x82);
}

Test(ws_relay, idle_is_the_relays_after_handoff)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-2", "");
    cr_assert_eq(fc_conn(fc, a)->idle_ms, 0, "no core idle timer on a relay side");
    fc_advance(fc, 3600000);
    cr_assert(fc_conn_alive(fc, a), "websocket-transport arms no timer for a relay-owned side");
}

Test(ws_relay, empty_ping_text_are_activity_not_forwarded_L24_L25_L26)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-3", ""), b = side("127.0.0.3:1000", "uuid-3", "");
    (void)b;
    wt_send(fc, a, true, 2, "", 0);
    cr_assert_eq(fr_find(a)->messages, 1);
    cr_assert_eq(fr.last_len, 0);
    wt_send(fc, a, true, 9, "p1", 2);
    wt_frame_in f = wt_expect_frame(fc, 10);
    cr_assert(f.n == 2 && memcmp(f.payload, "p1", 2) == 0);
    wt_send(fc, a, true, 1, "text", 4);
    wt_send(fc, a, true, 10, "", 0);
    cr_assert_eq(fr_find(a)->activity, 4, "empty binary, ping, text, pong");
    cr_assert_eq(fc_sent_count(fc), 0, "nothing reached the partner");
}

Test(ws_relay, first_message_must_be_binary_L32)
{
    rdv_conn_id id = wt_open(fc, rl, "127.0.0.4:1", "");
    wt_send(fc, id, true, 1, "uuid", 4);
    wt_expect_close_frame(fc, 1008);
    wt_expect_conn_close(fc, id, true);
    id = wt_open(fc, rl, "127.0.0.4:2", "");
    wt_send(fc, id, true, 9, "p", 1);
    wt_expect_frame(fc, 10); /* the ping is still answered, then the close */
    wt_expect_close_frame(fc, 1008);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(fr.opens, 0);
    cr_assert_eq(ctr("relay_refused"), 2);
}

Test(ws_relay, refused_side_closed_silently)
{
    fr.refuse = true;
    rdv_conn_id id = wt_open(fc, rl, "127.0.0.5:1", "");
    wt_send(fc, id, true, 2, "bad-key", 7);
    wt_expect_conn_close(fc, id, true); /* relay.md §3.3: no reply, no close frame */
    cr_assert_eq(fr.closes, 0, "no side_closed for a refused side");
    cr_assert_eq(ctr("relay_refused"), 1);
}

Test(ws_relay, first_message_deadline_from_accept_L33)
{
    rdv_addr a = fc_addr("127.0.0.6:1");
    rdv_conn_id id = fc_owned_open(fc, rl, &a);
    fc_advance(fc, 5000);
    char req[1024];
    size_t n = wt_request(req, sizeof req, "/ws/relay", "");
    fc_conn_raw(fc, id, (const uint8_t *)req, n);
    wt_expect_http(fc, 101);
    fc_advance(fc, 24999);
    cr_assert(fc_conn_alive(fc, id));
    fc_advance(fc, 1);
    cr_assert_not(fc_conn_alive(fc, id), "upgrade + first message within relay_first_ms of accept");
}

Test(ws_relay, first_message_size_cap)
{
    rdv_conn_id id = wt_open(fc, rl, "127.0.0.7:1", "");
    uint8_t big[1025] = { 1 };
    wt_send(fc, id, true, 2, big, sizeof big);
    wt_expect_close_frame(fc, 1009);
    cr_assert_not(fc_conn_alive(fc, id));
    cr_assert_eq(fr.opens, 0);
}

Test(ws_relay, frame_and_message_limits_after_handoff_L30)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-4", ""), a2 = side("127.0.0.3:1000", "uuid-4", "");
    uint8_t h[14];
    size_t hl = wt_header(2, true, 65537, h); /* one frame over relay_max_frame */
    fc_conn_raw(fc, a, h, hl);
    fc_conn_raw(fc, a, (const uint8_t *)"x", 1);
    wt_expect_close_frame(fc, 1009);
    wt_expect_conn_close(fc, a, true);
    wt_expect_conn_close(fc, a2, true); /* the fake relay ends the pair */
    cr_assert(fr_find(a)->closed);

    rdv_conn_id b = side("127.0.0.2:1001", "uuid-5", "");
    side("127.0.0.3:1001", "uuid-5", "");
    uint8_t *p = calloc(1, 60000);
    for (int i = 0; i < 3; i++)
        wt_send(fc, b, false, i ? 0 : 2, p, 60000);
    cr_assert(fc_conn_alive(fc, b));
    wt_send(fc, b, true, 0, p, 20001); /* 200001 > relay_max_message */
    free(p);
    wt_expect_close_frame(fc, 1009);
    cr_assert_not(fc_conn_alive(fc, b));
}

Test(ws_relay, proxy_address_handed_to_relay_L34)
{
    rdv_conn_id a = side("127.0.0.9:1234", "uuid-6", "X-Real-IP: 203.0.113.9\r\n");
    char s[RDV_ADDR_STRLEN];
    cr_assert_str_eq(rdv_addr_str(&fr_find(a)->peer, s, sizeof s), "203.0.113.9:0");
    cr_assert_str_eq(rdv_addr_str(&fr_find(a)->tcp_peer, s, sizeof s), "127.0.0.9:1234");
    rdv_conn_id b = side("127.0.0.9:1235", "uuid-7", "X-Forwarded-For: 203.0.113.9, 10.0.0.1\r\n");
    cr_assert_str_eq(rdv_addr_str(&fr_find(b)->peer, s, sizeof s), "127.0.0.9:1235");
}

Test(ws_relay, close_frame_ends_the_pair)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-8", ""), b = side("127.0.0.3:1000", "uuid-8", "");
    wt_send(fc, a, true, 8, "\x03\xe8", 2);
    wt_expect_close_frame(fc, 1000);
    wt_expect_conn_close(fc, a, true);
    /* the fake relay closed the partner with status 0: no frame, just the close */
    wt_expect_conn_close(fc, b, true);
    cr_assert_eq(fr.closes, 2);
    cr_assert_eq(fc_gauge(fc, "websocket-transport.relay_sides"), 0);
}

Test(ws_relay, side_ops_close_with_status_and_send_after)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-9", "");
    cr_assert_eq(fr.ops->close(fr.tp, a, 1000), 0);
    wt_expect_close_frame(fc, 1000);
    wt_expect_conn_close(fc, a, true);
    cr_assert_eq(fr.ops->send(fr.tp, a, (const uint8_t *)"x", 1), -ENOTCONN);
    cr_assert_eq(fr.ops->close(fr.tp, a, 0), -ENOTCONN);
    cr_assert_eq(fr.ops->pause(fr.tp, 999, true), -ENOTCONN);
}

Test(ws_relay, pause_holds_messages_until_resume)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-10", ""), b = side("127.0.0.3:1000", "uuid-10", "");
    fr.pause_on_message = true;
    wt_send(fc, a, true, 2, "m1", 2);
    cr_assert(fc_conn(fc, a)->paused, "the core stops reading the paused side");
    expect_payload(b, "m1", 2);
    fr.pause_on_message = false;
    wt_send(fc, a, true, 2, "m2", 2);
    wt_send(fc, a, true, 2, "m3", 2);
    cr_assert_eq(fr_find(a)->messages, 1, "nothing delivered while paused");
    cr_assert_eq(fr.ops->pause(fr.tp, a, false), 0);
    cr_assert_not(fc_conn(fc, a)->paused);
    cr_assert_eq(fr_find(a)->messages, 3);
    expect_payload(b, "m2", 2);
    expect_payload(b, "m3", 2);
}

Test(ws_relay, peer_eof_reports_side_closed)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-11", "");
    fc_conn_peer_close(fc, a);
    cr_assert(fr_find(a)->closed);
    cr_assert_eq(fc_gauge(fc, "websocket-transport.connections"), 0);
}

Test(ws_relay, shutdown_closes_sides)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-12", ""), b = side("127.0.0.3:1000", "uuid-12", "");
    (void)b;
    fc_free(fc);
    fc = fc_new(); /* teardown frees this one */
    cr_assert(fr_find(a)->closed);
    cr_assert_eq(fr.closes, 2);
}

Test(ws_relay, resume_from_inside_a_message_is_deferred)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-13", ""), b = side("127.0.0.3:1000", "uuid-13", "");
    fr.bounce = true;
    size_t l1, l2;
    uint8_t *f1 = wt_frame(true, 0, 2, true, "x1", 2, &l1), *f2 = wt_frame(true, 0, 2, true, "x2", 2, &l2);
    uint8_t both[32];
    memcpy(both, f1, l1), memcpy(both + l1, f2, l2);
    free(f1), free(f2);
    fc_conn_raw(fc, a, both, l1 + l2); /* two messages in one read: the reader must not nest */
    cr_assert_eq(fr_find(a)->messages, 2);
    expect_payload(b, "x1", 2);
    expect_payload(b, "x2", 2);
    cr_assert(fc_conn(fc, a)->paused, "the core resumes only after on_data returned");
    fc_advance(fc, 0);
    cr_assert_not(fc_conn(fc, a)->paused);
    fr.bounce = false;
    wt_send(fc, a, true, 2, "x3", 2);
    expect_payload(b, "x3", 2);
}

Test(ws_relay, waiting_side_is_paused_and_keeps_its_early_messages_L_4_4)
{
    rdv_conn_id a = side("127.0.0.2:1000", "uuid-14", "");
    cr_assert(fc_conn(fc, a)->paused, "a waiting side is not read");
    wt_send(fc, a, true, 2, "early", 5); /* the controlled side's SignedId, before the viewer came */
    cr_assert_eq(fr_find(a)->messages, 0);
    rdv_conn_id b = side("127.0.0.3:1000", "uuid-14", "");
    cr_assert_not(fc_conn(fc, a)->paused, "paired: read again");
    cr_assert_eq(fr_find(a)->messages, 1, "the early message follows the pairing");
    expect_payload(b, "early", 5);
}

/* ------------------------------------------------------------------ large limits (the defaults' size) */
/* relay_max_message as shipped (64 MiB), frames as large as messages. */
#define BIGCONF "rendezvous_port = 0\nrelay_port = 21119\nrelay_max_frame = 67108864\n" \
                "relay_max_message = 67108864\nrelay_first_max = 16777216\n"

static void setup_big(void) { setup_conf(BIGCONF); }

TestSuite(ws_relay_big, .init = setup_big, .fini = teardown);

static void buffer_of(rdv_conn_id id, size_t *cap, size_t *len)
{
    cr_assert(wt_buffer(ws_st, id, cap, len), "connection %llu unknown to the module", (unsigned long long)id);
}

/* Audit S1: a frame header declaring a huge length, then a trickle, must
 * not make us hold the declared size (address space, or resident memory
 * with strict overcommit), neither for the first message nor after the
 * hand-over. */
Test(ws_relay_big, declared_length_not_allocated_before_payload_S1)
{
    rdv_conn_id first = wt_open(fc, rl, "127.0.0.2:2000", "");
    uint8_t h[14];
    size_t hl = wt_header(2, true, 16u << 20, h), cap, len; /* relay_first_max */
    fc_conn_raw(fc, first, h, hl);
    fc_conn_raw(fc, first, (const uint8_t *)"abcd", 4);
    buffer_of(first, &cap, &len);
    cr_assert_eq(len, 4);
    cr_assert_lt(cap, 64 * 1024, "%zu bytes held for 4 received", cap);

    rdv_conn_id a = side("127.0.0.2:2001", "uuid-big", ""), b = side("127.0.0.3:2001", "uuid-big", "");
    hl = wt_header(2, true, 32u << 20, h);
    fc_conn_raw(fc, a, h, hl);
    fc_conn_raw(fc, a, (const uint8_t *)"xyz", 3);
    buffer_of(a, &cap, &len);
    cr_assert_eq(len, 3);
    cr_assert_lt(cap, 64 * 1024, "%zu bytes held for 3 received", cap);
    cr_assert(fc_conn_alive(fc, a) && fc_conn_alive(fc, b) && fc_conn_alive(fc, first));
    cr_assert_eq(fc_sent_count(fc), 0);
}

/* A multi-MiB message in three fragments, fed in small odd-sized pieces:
 * it arrives whole and in order, the buffer stays proportional to what was
 * received, and the large buffer is released afterwards. */
Test(ws_relay_big, multi_mib_message_in_many_chunks_intact_S1)
{
    rdv_conn_id a = side("127.0.0.2:3000", "uuid-chunks", "");
    side("127.0.0.3:3000", "uuid-chunks", "");
    size_t part = 1u << 20, total = 3 * part;
    uint8_t *msg = malloc(total);
    cr_assert_not_null(msg);
    for (size_t i = 0; i < total; i++)
        msg[i] = (uint8_t)(i * 131 + (i >> 12));
    size_t wire_n = 0, fl[3];
    uint8_t *frames[3], *wire = malloc(total + 3 * 14);
    cr_assert_not_null(wire);
    for (int i = 0; i < 3; i++) {
        frames[i] = wt_frame(i == 2, 0, i ? 0 : 2, true, msg + i * part, part, &fl[i]);
        memcpy(wire + wire_n, frames[i], fl[i]);
        wire_n += fl[i];
        free(frames[i]);
    }
    fr.expect = msg, fr.expect_n = total;
    size_t cap, len;
    for (size_t off = 0; off < wire_n; off += 997) {
        size_t k = wire_n - off < 997 ? wire_n - off : 997;
        cr_assert_eq(fc_conn_raw(fc, a, wire + off, k), RDV_OK);
        if (fr.expect_seen)
            break;
        buffer_of(a, &cap, &len);
        cr_assert_leq(cap, 2 * len + 4096, "%zu bytes held for %zu received", cap, len);
    }
    cr_assert_eq(fr.expect_seen, 1);
    buffer_of(a, &cap, &len);
    cr_assert_eq(len, 0);
    cr_assert_leq(cap, 4096, "the large buffer is not kept after the message");
    cr_assert(fc_conn_alive(fc, a));
    cr_assert_eq(ctr("closed_too_big"), 0);
    free(wire);
    free(msg);
}

/* ------------------------------------------------------------------ buffer_total, message_timeout_ms */
/* 262144 bytes for all partly received messages; relay_max_message 200000.
 * The deadline and release tests below run with the defaults (ws_relay). */
static void setup_budget(void) { setup_conf(RCONF "buffer_total = 262144\n"); }

TestSuite(ws_budget, .init = setup_budget, .fini = teardown);

static uint64_t buffer_bytes(void) { return fc_gauge(fc, "websocket-transport.buffer_bytes"); }

/* Fragments of `n` bytes each, the first one opening a binary message. */
static void fragments(rdv_conn_id id, const uint8_t *p, size_t n, int count, bool open, bool fin)
{
    for (int i = 0; i < count; i++)
        wt_send(fc, id, fin && i == count - 1, open && i == 0 ? 2 : 0, p, n);
}

Test(ws_budget, full_total_closes_the_growing_side_1013_others_go_on)
{
    rdv_conn_id a = side("127.0.0.2:4000", "uuid-hold", ""), b = side("127.0.0.3:4000", "uuid-hold", "");
    rdv_conn_id c = side("127.0.0.4:4000", "uuid-grow", ""), d = side("127.0.0.5:4000", "uuid-grow", "");
    rdv_conn_id e = side("127.0.0.6:4000", "uuid-small", ""), f = side("127.0.0.7:4000", "uuid-small", "");
    fc_clear_sent(fc);
    uint8_t *p = malloc(50000);
    for (size_t i = 0; i < 50000; i++)
        p[i] = (uint8_t)(i * 31);
    fragments(a, p, 50000, 3, true, false); /* 150000 of a message in assembly */
    cr_assert_geq(buffer_bytes(), 150000, "held and counted");
    cr_assert_leq(buffer_bytes(), 262144);
    fragments(c, p, 50000, 2, true, false); /* would pass 262144 */
    wt_expect_close_frame(fc, 1013);
    wt_expect_conn_close(fc, c, true);
    wt_expect_conn_close(fc, d, true); /* the fake relay ends the pair */
    cr_assert_eq(ctr("closed_buffer_total"), 1);
    cr_assert_eq(ctr("closed_too_big"), 0, "not a message over the limit");
    cr_assert(fc_log_contains(fc, "websocket-transport.buffer_total=262144") &&
                  fc_log_contains(fc, "conf.d/50-websocket-transport.conf"),
              "the log names the setting and its file");
    /* The others go on: a small pair, and the holder's message completes. */
    wt_send(fc, e, true, 2, "hi", 2);
    expect_payload(f, "hi", 2);
    wt_send(fc, a, true, 0, p, 40000);
    const fc_sent *s = fc_next_sent(fc);
    cr_assert(s && s->conn == b && s->len == 190000, "the holder's message is delivered whole");
    cr_assert(memcmp(s->raw + 150000, p, 40000) == 0);
    cr_assert_leq(buffer_bytes(), 6 * 4096, "its buffer is given back after the message");
    cr_assert(fc_conn_alive(fc, a) && fc_conn_alive(fc, b) && fc_conn_alive(fc, e) && fc_conn_alive(fc, f));
    free(p);
}

Test(ws_relay, share_released_when_the_side_closes)
{
    rdv_conn_id a = side("127.0.0.2:4001", "uuid-rel", "");
    side("127.0.0.3:4001", "uuid-rel", "");
    uint64_t base = buffer_bytes();
    static uint8_t p[50000];
    fragments(a, p, sizeof p, 2, true, false);
    cr_assert_geq(buffer_bytes(), base + 100000);
    fc_conn_peer_close(fc, a);
    cr_assert_leq(buffer_bytes(), base, "given back with the connection");
}

/* Pings keep a relay side active (relay.md §4.3), so a part message could
 * be held for ever: message_timeout_ms (default 120 s) ends it. */
Test(ws_relay, message_deadline_despite_pings)
{
    rdv_conn_id a = side("127.0.0.2:4002", "uuid-slow", ""), b = side("127.0.0.3:4002", "uuid-slow", "");
    static uint8_t p[1000];
    wt_send(fc, a, false, 2, p, sizeof p);
    for (int i = 0; i < 11; i++) {
        fc_advance(fc, 10000);
        wt_send(fc, a, true, 9, "k", 1);
        wt_send(fc, a, false, 0, p, 10); /* a dribble does not move the deadline */
    }
    cr_assert(fc_conn_alive(fc, a), "110 s");
    fc_clear_sent(fc);
    fc_advance(fc, 10000);
    wt_expect_close_frame(fc, 1008);
    wt_expect_conn_close(fc, a, true);
    wt_expect_conn_close(fc, b, true);
    cr_assert_eq(ctr("closed_message_timeout"), 1);
    cr_assert(fc_log_contains(fc, "message_timeout_ms"));
}

/* A side the relay paused (its partner is slow) is not the slow one. */
Test(ws_relay, time_paused_by_the_relay_does_not_count)
{
    rdv_conn_id a = side("127.0.0.2:4003", "uuid-paused", "");
    side("127.0.0.3:4003", "uuid-paused", "");
    static uint8_t p[1000];
    wt_send(fc, a, false, 2, p, sizeof p);
    fc_advance(fc, 60000);
    cr_assert_eq(fr.ops->pause(fr.tp, a, true), 0);
    fc_advance(fc, 300000);
    cr_assert(fc_conn_alive(fc, a), "no deadline while paused");
    cr_assert_eq(fr.ops->pause(fr.tp, a, false), 0);
    fc_advance(fc, 59000);
    cr_assert(fc_conn_alive(fc, a), "the paused 300 s do not count");
    fc_advance(fc, 1000);
    cr_assert_not(fc_conn_alive(fc, a));
    cr_assert_eq(ctr("closed_message_timeout"), 1);
}

/* Complete messages, however many, arm no timer per message and are never
 * cut; a message in assembly just under the deadline completes. */
Test(ws_relay, messages_that_complete_in_time_are_kept)
{
    rdv_conn_id a = side("127.0.0.2:4004", "uuid-ok", ""), b = side("127.0.0.3:4004", "uuid-ok", "");
    fc_clear_sent(fc);
    for (int i = 0; i < 5; i++) {
        wt_send(fc, a, false, 2, "ab", 2);
        fc_advance(fc, 119000);
        wt_send(fc, a, true, 0, "cd", 2);
        expect_payload(b, "abcd", 4);
        fc_advance(fc, 5000);
    }
    cr_assert(fc_conn_alive(fc, a));
    cr_assert_eq(ctr("closed_message_timeout"), 0);
}
