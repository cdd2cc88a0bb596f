/* ws_test.c — see ws_test.h. The client framing here is written from RFC
 * 6455 §5.2 directly, not with the module's code, so the suites check one
 * implementation against another. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"
#include "ws_test.h"

static const uint8_t wt_mask[4] = { 0x37, 0xfa, 0x21, 0x3d };

size_t wt_header(unsigned opcode, bool masked, uint64_t n, uint8_t out[14])
{
    size_t h = 0;
    out[h++] = (uint8_t)(0x80 | opcode);
    uint8_t m = masked ? 0x80 : 0;
    if (n < 126) {
        out[h++] = (uint8_t)(m | n);
    } else if (n < 65536) {
        out[h++] = m | 126;
        out[h++] = (uint8_t)(n >> 8), out[h++] = (uint8_t)n;
    } else {
        out[h++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)(n >> (8 * i));
    }
    if (masked)
        memcpy(out + h, wt_mask, 4), h += 4;
    return h;
}

uint8_t *wt_frame(bool fin, unsigned rsv, unsigned opcode, bool masked, const void *p, size_t n, size_t *len)
{
    uint8_t *f = malloc(n + 14);
    cr_assert_not_null(f);
    size_t h = wt_header(opcode, masked, n, f);
    if (!fin)
        f[0] &= 0x7f;
    f[0] |= (uint8_t)((rsv & 7) << 4);
    const uint8_t *src = p;
    for (size_t i = 0; i < n; i++)
        f[h + i] = masked ? (uint8_t)(src[i] ^ wt_mask[i % 4]) : src[i];
    *len = h + n;
    return f;
}

int wt_send(fc_core *fc, rdv_conn_id id, bool fin, unsigned opcode, const void *p, size_t n)
{
    size_t len;
    uint8_t *f = wt_frame(fin, 0, opcode, true, p, n, &len);
    int r = fc_conn_raw(fc, id, f, len);
    free(f);
    return r;
}

int wt_send_msg(fc_core *fc, rdv_conn_id id, const Hbb__RendezvousMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(&m->base);
    uint8_t *p = malloc(n + 1);
    protobuf_c_message_pack(&m->base, p);
    int r = wt_send(fc, id, true, 2, p, n);
    free(p);
    return r;
}

bool wt_parse(const uint8_t *p, size_t len, wt_frame_in *out)
{
    memset(out, 0, sizeof *out);
    if (len < 2)
        return false;
    out->fin = p[0] & 0x80;
    out->opcode = p[0] & 0x0f;
    out->masked = p[1] & 0x80;
    uint64_t n = p[1] & 0x7f;
    size_t h = 2;
    if (n == 126) {
        if (len < 4)
            return false;
        n = (uint64_t)p[2] << 8 | p[3];
        h = 4;
    } else if (n == 127) {
        if (len < 10)
            return false;
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | p[2 + i];
        h = 10;
    }
    if (h + n != len || n > sizeof out->payload)
        return false;
    memcpy(out->payload, p + h, (size_t)n);
    out->n = (size_t)n;
    return true;
}

/* Every frame the module writes goes out in one send_bytes, header and
 * payload together (wslay's MSG_MORE honoured): one write, not two. */
wt_frame_in wt_expect_frame(fc_core *fc, unsigned opcode)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "expected a frame with opcode %u, nothing sent", opcode);
    cr_assert_eq(s->kind, FC_SENT_BYTES, "expected raw bytes (a frame), got kind %d", s->kind);
    wt_frame_in f;
    cr_assert(wt_parse(s->raw, s->len, &f), "one send_bytes carries exactly one whole frame (got %zu bytes)", s->len);
    cr_assert_eq(f.opcode, opcode, "frame opcode %u, expected %u", f.opcode, opcode);
    cr_assert(f.fin, "server frames are final");
    cr_assert_not(f.masked, "server frames are never masked (RFC 6455 §5.1)");
    return f;
}

void wt_expect_close_frame(fc_core *fc, uint16_t status)
{
    wt_frame_in f = wt_expect_frame(fc, 8);
    if (!status) {
        cr_assert_eq(f.n, 0);
        return;
    }
    cr_assert_geq(f.n, 2);
    cr_assert_eq((f.payload[0] << 8 | f.payload[1]), status, "close status %u, expected %u",
                 f.payload[0] << 8 | f.payload[1], status);
}

void wt_expect_conn_close(fc_core *fc, rdv_conn_id id, bool flush)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "expected conn_close");
    cr_assert_eq(s->kind, FC_SENT_CLOSE, "expected conn_close, got kind %d", s->kind);
    cr_assert_eq(s->conn, id);
    cr_assert_eq(s->flush, flush);
    cr_assert_not(fc_conn_alive(fc, id));
}

const char *wt_expect_http(fc_core *fc, int status)
{
    static char text[1024];
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "expected an HTTP answer %d", status);
    cr_assert_eq(s->kind, FC_SENT_BYTES);
    cr_assert_lt(s->len, sizeof text);
    memcpy(text, s->raw, s->len);
    text[s->len] = '\0';
    char want[32];
    snprintf(want, sizeof want, "HTTP/1.1 %d ", status);
    cr_assert(strncmp(text, want, strlen(want)) == 0, "answer: %s", text);
    cr_assert(strstr(text, "\r\n\r\n") && strcmp(strstr(text, "\r\n\r\n"), "\r\n\r\n") == 0,
              "answer ends with its blank line: %s", text);
    return text;
}

bool wt_buffer(void *state, rdv_conn_id id, size_t *cap, size_t *len)
{
    ws_mod *m = state;
    ws_conn *c = NULL;
    HASH_FIND(hh, m->conns, &id, sizeof id, c);
    if (!c)
        return false;
    *cap = c->mcap, *len = (size_t)c->mlen;
    return true;
}

size_t wt_request(char *buf, size_t cap, const char *path, const char *extra)
{
    int n = snprintf(buf, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: example.test:21118\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " WT_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s"
                     "\r\n",
                     path, extra ? extra : "");
    cr_assert(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

rdv_conn_id wt_open(fc_core *fc, rdv_listener *l, const char *peer, const char *extra)
{
    cr_assert_not_null(l, "listener not opened");
    rdv_addr a = fc_addr(peer);
    rdv_conn_id id = fc_owned_open(fc, l, &a);
    cr_assert(fc_conn_alive(fc, id));
    char req[2048];
    size_t n = wt_request(req, sizeof req, "/", extra);
    cr_assert_eq(fc_conn_raw(fc, id, (const uint8_t *)req, n), RDV_OK);
    const char *ans = wt_expect_http(fc, 101);
    cr_assert(strstr(ans, "Sec-WebSocket-Accept: " WT_ACCEPT "\r\n"), "%s", ans);
    cr_assert(fc_conn_alive(fc, id));
    return id;
}

/* ------------------------------------------------------------------ handler module */
wt_seen wt_seen_last;
static int wt_state_dummy;

static void wt_note(const rdv_msg_ctx *ctx)
{
    wt_seen_last.transport = ctx->transport;
    snprintf(wt_seen_last.listener, sizeof wt_seen_last.listener, "%s", ctx->listener_name);
    wt_seen_last.peer = *ctx->peer;
    wt_seen_last.conn = ctx->conn;
}

static rdv_core *wt_core;

static int wt_on_nat(void *st, const rdv_msg_ctx *ctx, const void *msg)
{
    (void)st, (void)msg;
    wt_seen_last.nat_calls++;
    wt_note(ctx);
    Hbb__TestNatResponse resp = HBB__TEST_NAT_RESPONSE__INIT;
    resp.port = rdv_addr_port(ctx->peer);
    Hbb__RendezvousMessage out = HBB__RENDEZVOUS_MESSAGE__INIT;
    out.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE;
    out.test_nat_response = &resp;
    wt_seen_last.send_result = wt_core->api->send(wt_core, ctx->conn, &out);
    return RDV_CLOSE;
}

static int wt_on_punch(void *st, const rdv_msg_ctx *ctx, const void *msg)
{
    (void)st, (void)msg;
    wt_seen_last.punch_calls++;
    wt_note(ctx);
    Hbb__PunchHoleResponse resp = HBB__PUNCH_HOLE_RESPONSE__INIT;
    resp.failure = HBB__PUNCH_HOLE_RESPONSE__FAILURE__ID_NOT_EXIST;
    Hbb__RendezvousMessage out = HBB__RENDEZVOUS_MESSAGE__INIT;
    out.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE;
    out.punch_hole_response = &resp;
    wt_seen_last.send_result = wt_core->api->send(wt_core, ctx->conn, &out);
    return RDV_OK;
}

static int wt_access(void *st, const rdv_msg_ctx *ctx, const void *msg)
{
    (void)st;
    if (!msg)
        return RDV_OK; /* accept time */
    wt_seen_last.access_calls++;
    rdv_addr blocked = fc_addr("192.0.2.66:0");
    return rdv_addr_same_ip(ctx->peer, &blocked) ? RDV_DECLINED : RDV_OK;
}

static int wt_h_init(rdv_core *core, const void *cfg, void **state)
{
    (void)cfg;
    wt_core = core;
    memset(&wt_seen_last, 0, sizeof wt_seen_last);
    *state = &wt_state_dummy;
    return 0;
}

static const rdv_handler wt_handlers[] = {
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST, .transports = RDV_TR_WS, .fn = wt_on_nat },
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_REQUEST, .transports = RDV_TR_WS, .fn = wt_on_punch },
    RDV_HANDLER_END,
};

const rdv_module wt_handlers_module = {
    RDV_MODULE_HEAD("wt-handlers", "0"),
    .handlers = wt_handlers,
    .access = wt_access,
    .init = wt_h_init,
};

void *wt_load(fc_core *fc, const char *conf)
{
    void *st;
    cr_assert_eq(fc_load(fc, &wt_handlers_module, NULL, &st), 0);
    cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &st), 0, "websocket-transport did not load");
    return st;
}

Hbb__RendezvousMessage wt_nat_request(void)
{
    static Hbb__TestNatRequest t = HBB__TEST_NAT_REQUEST__INIT;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST;
    m.test_nat_request = &t;
    return m;
}
