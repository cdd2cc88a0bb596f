/* test_ws_ports.c — the "ws-server" service (rdv/svc/ws_server.h): a port
 * whose sides belong to another module speaking its own protocol in binary
 * messages (ARCHITECTURE.md §4; the Candy server, candy.md §4), against a
 * fake owner that records what reaches it and echoes messages back. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdv/svc/ws_server.h"
#include "ws_test.h"

/* ------------------------------------------------------------------ fake owner */
#define FO_SIDES 8
typedef struct fo_side {
    rdv_conn_id id;
    char first[64];
    size_t first_n;
    int messages, activity;
    bool closed;
} fo_side;

static struct {
    fo_side s[FO_SIDES];
    int n, opens, closes;
    const rdv_ws_side_ops *ops;
    void *tp;
    bool refuse;
} fo;

static fo_side *fo_find(rdv_conn_id id)
{
    for (int i = 0; i < fo.n; i++)
        if (fo.s[i].id == id)
            return &fo.s[i];
    return NULL;
}

static int fo_open(void *self, rdv_conn_id id, const rdv_addr *peer, const rdv_addr *tcp_peer, const uint8_t *first,
                   size_t n, const rdv_ws_side_ops *ops, void *tp)
{
    (void)self, (void)peer, (void)tcp_peer;
    fo.opens++;
    fo.ops = ops, fo.tp = tp;
    if (fo.refuse || fo.n == FO_SIDES || n > sizeof fo.s[0].first)
        return RDV_CLOSE;
    fo_side *s = &fo.s[fo.n++];
    memset(s, 0, sizeof *s);
    s->id = id, s->first_n = n;
    memcpy(s->first, first, n);
    return RDV_OK;
}

static int fo_message(void *self, rdv_conn_id id, const uint8_t *p, size_t n)
{
    (void)self;
    fo_side *s = fo_find(id);
    cr_assert_not_null(s);
    s->messages++;
    if (n == 4 && memcmp(p, "quit", 4) == 0)
        return RDV_CLOSE;
    cr_assert_eq(fo.ops->send(fo.tp, id, p, n), 0, "echo");
    return RDV_OK;
}

static void fo_activity(void *self, rdv_conn_id id)
{
    (void)self;
    fo_find(id)->activity++;
}

static void fo_closed(void *self, rdv_conn_id id)
{
    (void)self;
    fo_side *s = fo_find(id);
    cr_assert_not_null(s, "side_closed for a side the owner never took");
    cr_assert_not(s->closed, "side_closed twice");
    s->closed = true;
    fo.closes++;
}

static const rdv_ws_side_api fo_api = {
    .side_open = fo_open,
    .side_message = fo_message,
    .side_activity = fo_activity,
    .side_closed = fo_closed,
};

/* ------------------------------------------------------------------ suite */
static fc_core *fc;
static void *ws_st;
static const rdv_ws_server_api *srv;
static void *srv_tp;
static rdv_ws_port *port;
static rdv_listener *pl;

#define CONF "rendezvous_port = 0\nrelay_port = 0\nbuffer_total = 1000000\nrelay_max_message = 65536\nrelay_first_max = 1024\n"

static rdv_ws_port_spec spec(void)
{
    return (rdv_ws_port_spec){ .name = "own", .setting = "owner.port", .port = 26817, .first_ms = 5000,
                               .idle_ms = 0, .first_max = 100, .max_frame = 2000, .max_message = 3000 };
}

static void setup(void)
{
    memset(&fo, 0, sizeof fo);
    fc = fc_new();
    cr_assert_eq(fc_load(fc, rdv_module_get(), CONF, &ws_st), 0);
    rdv_core *h = fc_handle(fc, "owner");
    srv = h->api->service_get(h, RDV_SVC_WS_SERVER, RDV_SVC_WS_SERVER_VERSION, &srv_tp);
    cr_assert_not_null(srv, "websocket-transport publishes ws-server");
    rdv_ws_port_spec s = spec();
    port = srv->port_open(srv_tp, &s, &fo_api, NULL);
    cr_assert_not_null(port);
    pl = fc_find_listener(fc, "own", RDV_TR_TCP);
    cr_assert_not_null(pl, "the port's listener carries its name");
}

static void teardown(void) { fc_free(fc); }

TestSuite(ws_ports, .init = setup, .fini = teardown);

static uint64_t ctr(const char *name)
{
    char full[96];
    snprintf(full, sizeof full, "websocket-transport.%s", name);
    return fc_counter(fc, full);
}

static rdv_conn_id side(const char *peer, const void *first, size_t n)
{
    rdv_conn_id id = wt_open(fc, pl, peer, "");
    wt_send(fc, id, true, 2, first, n);
    cr_assert(fc_conn_alive(fc, id));
    cr_assert_not_null(fo_find(id), "side handed to the owner");
    return id;
}

static void expect_echo(rdv_conn_id to, const void *p, size_t n)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "nothing sent");
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->conn, to);
    cr_assert_eq(s->len, n);
    cr_assert(memcmp(s->raw, p, n) == 0);
}

Test(ws_ports, first_and_later_messages_reach_the_owner_as_binary_messages)
{
    static const uint8_t auth[] = { 0x04, 0, 1, 2, 0xff }; /* any bytes: not protobuf, not UTF-8 */
    rdv_conn_id a = side("127.0.0.2:1000", auth, sizeof auth);
    cr_assert_eq(fo_find(a)->first_n, sizeof auth);
    cr_assert(memcmp(fo_find(a)->first, auth, sizeof auth) == 0);
    cr_assert_eq(ctr("module_handoff"), 1);
    cr_assert_eq(ctr("relay_handoff"), 0);
    cr_assert_eq(fc_gauge(fc, "websocket-transport.module_sides"), 1);
    cr_assert_eq(fc_conn(fc, a)->idle_ms, 0, "no core idle timer on an owned side");
    /* later messages, fragmented too, up to max_message */
    uint8_t *p = malloc(3000);
    for (int i = 0; i < 3000; i++)
        p[i] = (uint8_t)(i * 13);
    wt_send(fc, a, false, 2, p, 1500);
    wt_send(fc, a, true, 0, p + 1500, 1500);
    expect_echo(a, p, 3000);
    const fc_conn_state *st = fc_conn(fc, a);
    uint8_t h[16];
    cr_assert_eq(st->codec->header(st->codec_ud, 3000, h), 4);
    cr_assert_eq(h[0], 0x82, "the owner's sends are binary frames");
    /* a frame over max_frame (2000) closes 1009 */
    wt_send(fc, a, true, 2, p, 2001);
    free(p);
    wt_expect_close_frame(fc, 1009);
    cr_assert_not(fc_conn_alive(fc, a));
    cr_assert(fo_find(a)->closed);
    cr_assert_eq(fc_gauge(fc, "websocket-transport.module_sides"), 0);
}

Test(ws_ports, text_and_ping_before_the_first_binary_message_are_activity)
{
    rdv_conn_id id = wt_open(fc, pl, "127.0.0.3:1", "");
    wt_send(fc, id, true, 1, "hello", 5);
    wt_send(fc, id, true, 9, "pi", 2);
    wt_frame_in f = wt_expect_frame(fc, 10);
    cr_assert(f.n == 2 && memcmp(f.payload, "pi", 2) == 0, "pong carries the ping's payload (candy.md §4)");
    cr_assert(fc_conn_alive(fc, id), "nonbinary_first_closes is off");
    cr_assert_eq(fo.opens, 0);
    wt_send(fc, id, true, 2, "x", 1);
    cr_assert_not_null(fo_find(id));
    wt_send(fc, id, true, 9, "", 0);
    wt_expect_frame(fc, 10);
    cr_assert_eq(fo_find(id)->activity, 1, "pings after the hand-over reach the owner as activity");
}

Test(ws_ports, first_message_limits_deadline_and_refusal)
{
    uint8_t big[101] = { 0 };
    rdv_conn_id id = wt_open(fc, pl, "127.0.0.4:1", "");
    wt_send(fc, id, true, 2, big, sizeof big);
    wt_expect_close_frame(fc, 1009);
    wt_expect_conn_close(fc, id, true);
    cr_assert_not(fc_conn_alive(fc, id), "first_max is 100");

    id = wt_open(fc, pl, "127.0.0.4:2", "");
    fc_advance(fc, 4999);
    cr_assert(fc_conn_alive(fc, id));
    fc_advance(fc, 1);
    cr_assert_not(fc_conn_alive(fc, id), "upgrade + first message within first_ms of accept");

    fc_clear_sent(fc); /* its 1001 */
    fo.refuse = true;
    id = wt_open(fc, pl, "127.0.0.4:3", "");
    wt_send(fc, id, true, 2, "no", 2);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("module_refused"), 1);
    cr_assert_eq(fo.closes, 0, "no side_closed for a refused side");
}

Test(ws_ports, owner_closes_by_answer_and_by_op)
{
    rdv_conn_id a = side("127.0.0.5:1", "a", 1), b = side("127.0.0.5:2", "b", 1);
    wt_send(fc, a, true, 2, "quit", 4);
    wt_expect_conn_close(fc, a, true);
    cr_assert(fo_find(a)->closed);
    cr_assert_eq(fo.ops->close(fo.tp, b, 1008), 0);
    wt_expect_close_frame(fc, 1008);
    cr_assert_eq(fo.ops->send(fo.tp, b, (const uint8_t *)"x", 1), -ENOTCONN, "nothing after the close frame");
}

Test(ws_ports, idle_ms_closes_silent_sides_and_activity_keeps_them)
{
    rdv_ws_port_spec s = spec();
    s.idle_ms = 60000;
    cr_assert_eq(srv->port_limits(srv_tp, port, &s), 0);
    rdv_conn_id a = side("127.0.0.6:1", "a", 1), b = side("127.0.0.6:2", "b", 1);
    for (int i = 0; i < 5; i++) {
        fc_advance(fc, 30000);
        wt_send(fc, a, true, 9, "", 0); /* a candy client pings (candy.md §4) */
    }
    cr_assert(fc_conn_alive(fc, a), "pings are activity");
    cr_assert_not(fc_conn_alive(fc, b), "b sent nothing for 150 s (idle_ms 60 s)");
    cr_assert(fo_find(b)->closed, "the owner hears of it");
    cr_assert_eq(ctr("closed_idle"), 1);
}

Test(ws_ports, port_close_detaches_the_owner)
{
    rdv_conn_id a = side("127.0.0.7:1", "a", 1);
    rdv_conn_id h = wt_open(fc, pl, "127.0.0.7:2", ""); /* not handed over yet */
    fc_clear_sent(fc);
    srv->port_close(srv_tp, port);
    cr_assert_eq(fo.closes, 0, "no callback reaches the owner from port_close on");
    wt_expect_close_frame(fc, 1001);
    (void)h;
    cr_assert_eq(fo.ops->send(fo.tp, a, (const uint8_t *)"x", 1), -ENOTCONN);
    /* the client answers the close: still no callback */
    wt_send(fc, a, true, 8, "\x03\xe9", 2);
    cr_assert_not(fc_conn_alive(fc, a));
    cr_assert_eq(fo.closes, 0);
    rdv_addr pa = fc_addr("127.0.0.7:3");
    rdv_conn_id n = fc_owned_open(fc, pl, &pa);
    cr_assert_not(fc_conn_alive(fc, n), "a closed port takes no new connection");
    srv->port_close(srv_tp, port); /* twice is harmless */
}

Test(ws_ports, port_open_refuses_limits_it_cannot_keep)
{
    rdv_ws_port_spec s = spec();
    s.name = "p2", s.port = 26818;
    s.max_message = 2000000; /* over buffer_total */
    cr_assert_null(srv->port_open(srv_tp, &s, &fo_api, NULL));
    cr_assert(fc_log_contains(fc, "owner.port: WebSocket port refused"));
    cr_assert(fc_log_contains(fc, "buffer_total"));
    s = spec(), s.name = "p2", s.port = 26818, s.first_max = 5000; /* over max_message */
    cr_assert_null(srv->port_open(srv_tp, &s, &fo_api, NULL));
    s = spec(), s.name = "a-name-longer-than-thirty-one-chars", s.port = 26818;
    cr_assert_null(srv->port_open(srv_tp, &s, &fo_api, NULL));
    s = spec(), s.name = "p2", s.port = 26818, s.first_ms = 10;
    cr_assert_null(srv->port_open(srv_tp, &s, &fo_api, NULL));
    s = spec(), s.name = "p2", s.port = 26818, s.max_frame = 500000, s.max_message = 500000;
    rdv_ws_side_api partial = fo_api;
    partial.side_closed = NULL;
    cr_assert_null(srv->port_open(srv_tp, &s, &partial, NULL));
    cr_assert_not_null(srv->port_open(srv_tp, &s, &fo_api, NULL));
    cr_assert_eq(srv->port_number(srv_tp, port), 26817);
    /* a reload may not take buffer_total below an open port's message */
    cr_assert_lt(fc_reconfigure(fc, rdv_module_get(), ws_st, "rendezvous_port = 0\nrelay_port = 0\nbuffer_total = 65536\n"
                                                           "relay_max_message = 65536\nrelay_first_max = 1024\n"),
                 0);
    cr_assert(fc_log_contains(fc, "module port p2 (owner.port)"));
}

Test(ws_ports, admin_lists_module_ports_and_their_sides)
{
    side("127.0.0.8:1", "a", 1);
    char out[4096];
    cr_assert_eq(fc_admin(fc, "websocket", out, sizeof out), 0);
    cr_assert(strstr(out, "module port own 26817: 1 sides"), "%s", out);
    cr_assert(strstr(out, " own owned 127.0.0.8:1"), "%s", out);
}
