/* libFuzzer: websocket-transport's two parsers — the HTTP upgrade head
 * (http-parser + our checks) and the frame path (wslay + our reassembly,
 * limits, close handshake) — through the module itself on the fake core.
 *
 * Input: byte 0 picks the mode, the rest is data.
 *   mode 0: the data is a request head: head end, parse, verdict, answers,
 *           proxy address; as a NUL-terminated string also a CIDR.
 *   mode 1: a rendezvous connection: a valid upgrade, then the data as the
 *           client's byte stream, cut into reads whose sizes come from the
 *           data; the clock moves between reads so every timer path runs.
 *   mode 2: the same on the relay port with a relay that takes every side,
 *           echoes messages, and pauses/resumes on their first byte.
 *   mode 3: the data is the whole stream, head included (raw handshake).
 * Invariants checked: every frame the module writes is a well-formed,
 * final, unmasked server frame, and connection gauges return to 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fakecore/fakecore.h"
#include "ws.h"
#include "rdv/svc/relay_ws.h"

#define CHECK(x) ((x) ? (void)0 : abort())
#define RESET_EVERY 20000 /* the fake core caps connections per instance */

/* ------------------------------------------------------------------ a relay that echoes */
static const rdv_relay_ws_side_ops *fr_ops;
static void *fr_tp;

static int fr_open(void *self, rdv_conn_id id, const rdv_addr *peer, const rdv_addr *tcp_peer, const uint8_t *p,
                   size_t n, const rdv_relay_ws_side_ops *ops, void *tp)
{
    (void)self, (void)id, (void)peer, (void)tcp_peer;
    fr_ops = ops, fr_tp = tp;
    return n && p[0] == 0xff ? RDV_CLOSE : RDV_OK;
}

static int fr_message(void *self, rdv_conn_id id, const uint8_t *p, size_t n)
{
    (void)self;
    if (n && p[0] == 0xfe)
        return RDV_CLOSE;
    if (n && p[0] == 0xfd)
        fr_ops->close(fr_tp, id, 1000);
    else if (n && p[0] == 0xfc) {
        fr_ops->pause(fr_tp, id, true);
        fr_ops->pause(fr_tp, id, false);
    } else if (n)
        fr_ops->send(fr_tp, id, p, n);
    return RDV_OK;
}

static void fr_activity(void *self, rdv_conn_id id) { (void)self, (void)id; }
static void fr_drain(void *self, rdv_conn_id id) { (void)self, (void)id; }
static void fr_closed(void *self, rdv_conn_id id) { (void)self, (void)id; }

static const rdv_relay_ws_api fr_api = {
    .side_open = fr_open, .side_message = fr_message, .side_activity = fr_activity,
    .side_drain = fr_drain, .side_closed = fr_closed,
};

/* ------------------------------------------------------------------ the fake core */
static fc_core *fc;
static rdv_listener *l_rdv, *l_relay;
static unsigned runs;

static void fc_setup(void)
{
    if (fc && ++runs % RESET_EVERY)
        return;
    if (fc)
        fc_free(fc);
    fc = fc_new();
    rdv_core *h = fc_handle(fc, "fuzz-relay");
    CHECK(h->api->service_publish(h, RDV_SVC_RELAY_WS, RDV_SVC_RELAY_WS_VERSION, &fr_api, NULL) == 0);
    void *st;
    CHECK(fc_load(fc, rdv_module_get(),
                  "rendezvous_port = 21118\nrelay_port = 21119\ntrusted_proxies = 10.0.0.0/8\n"
                  "relay_first_max = 4096\nrelay_max_frame = 65536\nrelay_max_message = 131072\n"
                  "max_header_bytes = 2048\n",
                  &st) == 0);
    l_rdv = fc_find_listener(fc, "ws", RDV_TR_TCP);
    l_relay = fc_find_listener(fc, "relay-ws", RDV_TR_TCP);
    CHECK(l_rdv && l_relay);
}

/* Every BYTES send after the 101 is one whole server frame (headers and
 * payloads may come as two sends: join them). */
static void check_sent(void)
{
    uint8_t buf[300];
    size_t have = 0;
    const fc_sent *s;
    while ((s = fc_next_sent(fc)) != NULL) {
        if (s->kind != FC_SENT_BYTES)
            continue;
        if (s->len >= 5 && memcmp(s->raw, "HTTP/", 5) == 0) {
            CHECK(have == 0);
            continue;
        }
        CHECK(have + s->len <= sizeof buf); /* only control frames are written raw: <= 127 bytes */
        memcpy(buf + have, s->raw, s->len);
        have += s->len;
        if (have < 2)
            continue;
        CHECK(buf[0] & 0x80);          /* final */
        CHECK((buf[0] & 0x70) == 0);   /* no RSV */
        CHECK(buf[0] & 0x08);          /* control frame */
        CHECK(!(buf[1] & 0x80));       /* unmasked */
        size_t n = buf[1] & 0x7f;
        CHECK(n <= 125);
        if (have == 2 + n)
            have = 0;
        else
            CHECK(have < 2 + n);
    }
    CHECK(have == 0);
}

static void run_head(const uint8_t *p, size_t n)
{
    size_t scan = 0;
    size_t end = ws_http_head_end(p, n, &scan);
    CHECK(end <= n);
    ws_req req;
    ws_http_parse(p, end ? end : n, &req);
    int status = ws_http_status(req.verdict);
    CHECK(status == 101 || status == 400 || status == 426);
    char out[256];
    if (req.verdict == WS_REQ_OK) {
        CHECK(strlen(req.accept) == WS_ACCEPT_LEN);
        CHECK(ws_http_answer_101(&req, out, sizeof out) > 0);
    } else {
        CHECK(ws_http_answer_error(status, out, sizeof out) > 0);
    }
    rdv_addr a;
    if (ws_http_proxy_addr(&req, &a))
        CHECK(rdv_addr_port(&a) == 0);
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    ws_cidr c;
    if (ws_cidr_parse(s, &c) == 0) {
        CHECK(c.family == AF_INET ? c.prefix <= 32 : c.prefix <= 128);
        ws_cidr_match(&c, &a);
    }
    free(s);
}

static const char head[] = "GET /ws/id HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                           "X-Real-IP: 203.0.113.5\r\n\r\n";

static void run_stream(rdv_listener *l, bool upgrade, const uint8_t *p, size_t n)
{
    rdv_addr peer = fc_addr("10.1.2.3:4444");
    rdv_conn_id id = fc_owned_open(fc, l, &peer);
    if (upgrade)
        fc_conn_raw(fc, id, (const uint8_t *)head, sizeof head - 1);
    /* cut: each read is 1 + (next byte % 64) bytes, or the rest */
    size_t i = 0;
    while (i < n && fc_conn_alive(fc, id)) {
        size_t k = 1 + p[i] % 64;
        i++;
        if (k > n - i)
            k = n - i;
        fc_conn_raw(fc, id, p + i, k);
        i += k;
        fc_advance(fc, 700);
        check_sent();
    }
    fc_advance(fc, 40000); /* idle / close-wait / handshake deadlines */
    check_sent();
    if (fc_conn_alive(fc, id))
        fc_conn_peer_close(fc, id);
    check_sent();
    CHECK(fc_gauge(fc, "websocket-transport.connections") == 0);
    CHECK(fc_gauge(fc, "websocket-transport.handshaking") == 0);
    CHECK(fc_gauge(fc, "websocket-transport.relay_sides") == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0] & 3;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (mode == 0) {
        run_head(p, n);
        return 0;
    }
    fc_setup();
    run_stream(mode == 2 ? l_relay : l_rdv, mode != 3, p, n);
    return 0;
}
