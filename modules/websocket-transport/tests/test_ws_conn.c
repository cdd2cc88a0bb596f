/* test_ws_conn.c — the rendezvous WebSocket port against the fake core:
 * upgrade, proxy attribution, framing, dispatch, close handshake, limits,
 * timeouts (wire.md §7, rendezvous.md §4.2, §5.2, §12; checklist R130-R141). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws_test.h"

static fc_core *fc;
static rdv_listener *ws;
static void *ws_state;

#define CONF "rendezvous_port = 21118\nrelay_port = 0\n"

static void setup(void)
{
    fc = fc_new();
    ws_state = wt_load(fc, CONF "trusted_proxies = 10.9.0.0/16, ::1\n");
    ws = fc_find_listener(fc, "ws", RDV_TR_TCP);
}

static void teardown(void) { fc_free(fc); }

TestSuite(ws_conn, .init = setup, .fini = teardown);

static uint64_t ctr(const char *name)
{
    char full[96];
    snprintf(full, sizeof full, "websocket-transport.%s", name);
    return fc_counter(fc, full);
}

static uint64_t gauge(const char *name)
{
    char full[96];
    snprintf(full, sizeof full, "websocket-transport.%s", name);
    return fc_gauge(fc, full);
}

static rdv_conn_id open_raw(const char *peer)
{
    rdv_addr a = fc_addr(peer);
    return fc_owned_open(fc, ws, &a);
}

static void feed(rdv_conn_id id, const char *text) { fc_conn_raw(fc, id, (const uint8_t *)text, strlen(text)); }

/* The reply to a TestNatRequest, then our normal close (the handler ends
 * the connection), then the peer's close answers it. */
static void expect_nat_reply(rdv_conn_id id, uint32_t port)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "no reply");
    cr_assert_eq(s->kind, FC_SENT_CONN, "a handler reply goes through the codec");
    cr_assert_eq(s->conn, id);
    cr_assert_not_null(s->msg);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq((uint32_t)s->msg->test_nat_response->port, port);
}

/* ------------------------------------------------------------------ listener, upgrade */
Test(ws_conn, listener_named_ws_and_relay_port_closed_without_relay)
{
    cr_assert_not_null(ws);
    cr_assert_null(fc_find_listener(fc, "relay-ws", RDV_TR_TCP));
    fc_core *f2 = fc_new();
    void *st;
    cr_assert_eq(fc_load(f2, rdv_module_get(), "rendezvous_port = 0\nrelay_port = 21119\n", &st), 0);
    cr_assert_null(fc_find_listener(f2, "ws", RDV_TR_TCP), "rendezvous_port = 0 is off");
    cr_assert_null(fc_find_listener(f2, "relay-ws", RDV_TR_TCP));
    cr_assert(fc_log_contains(f2, "relay_port 21119 stays closed"));
    fc_free(f2);
}

Test(ws_conn, upgrade_on_any_path_R130_L27)
{
    const char *paths[] = { "/", "/ws/id", "/ws/relay", "/anything?x=1" };
    for (size_t i = 0; i < 4; i++) {
        rdv_conn_id id = open_raw("198.51.100.1:4000");
        char req[1024];
        wt_request(req, sizeof req, paths[i], "");
        feed(id, req);
        const char *ans = wt_expect_http(fc, 101);
        cr_assert(strstr(ans, "Sec-WebSocket-Accept: " WT_ACCEPT "\r\n"));
        cr_assert_null(strstr(ans, "Sec-WebSocket-Extensions"));
        cr_assert(fc_conn_alive(fc, id));
        const fc_conn_state *st = fc_conn(fc, id);
        cr_assert_not_null(st->codec, "codec installed after the upgrade");
        cr_assert_eq(st->transport, RDV_TR_WS);
        cr_assert_eq(st->idle_ms, 0, "the core's any-byte idle timer is replaced by ours");
    }
    cr_assert_eq(ctr("hs_ok"), 4);
    cr_assert_eq(gauge("connections"), 4);
    cr_assert_eq(gauge("handshaking"), 0);
}

Test(ws_conn, head_trickled_byte_by_byte)
{
    rdv_conn_id id = open_raw("198.51.100.1:4000");
    char req[1024];
    size_t n = wt_request(req, sizeof req, "/", "");
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(fc_sent_count(fc), 0);
        fc_conn_raw(fc, id, (const uint8_t *)req + i, 1);
    }
    wt_expect_http(fc, 101);
    cr_assert_eq(gauge("handshaking"), 0);
}

Test(ws_conn, frames_pipelined_after_the_head)
{
    rdv_conn_id id = open_raw("198.51.100.1:4000");
    char req[1024];
    size_t n = wt_request(req, sizeof req, "/", "");
    Hbb__RendezvousMessage m = wt_nat_request();
    uint8_t pb[16];
    size_t pn = protobuf_c_message_pack(&m.base, pb), fl;
    uint8_t *f = wt_frame(true, 0, 2, true, pb, pn, &fl);
    uint8_t all[1200];
    memcpy(all, req, n);
    memcpy(all + n, f, fl);
    free(f);
    fc_conn_raw(fc, id, all, n + fl);
    wt_expect_http(fc, 101);
    expect_nat_reply(id, 4000);
}

/* ------------------------------------------------------------------ bad handshakes */
static void expect_refused(const char *text, int status, const char *counter)
{
    rdv_conn_id id = open_raw("198.51.100.2:4000");
    feed(id, text);
    wt_expect_http(fc, status);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr(counter), 1, "%s", counter);
    cr_assert_eq(gauge("connections"), 0);
    cr_assert_eq(gauge("handshaking"), 0);
}

Test(ws_conn, plain_http_get_L28) { expect_refused("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "hs_not_upgrade"); }
Test(ws_conn, wrong_version)
{
    expect_refused("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: " WT_KEY "\r\nSec-WebSocket-Version: 7\r\n\r\n",
                   426, "hs_bad_version");
}
Test(ws_conn, missing_key)
{
    expect_refused("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                   400, "hs_bad_key");
}
Test(ws_conn, not_get)
{
    expect_refused("PUT / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: " WT_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                   400, "hs_not_get");
}
Test(ws_conn, http_1_0)
{
    expect_refused("GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: " WT_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                   400, "hs_old_http");
}
Test(ws_conn, garbage) { expect_refused("\x01\x02\x03 garbage\r\n\r\n", 400, "hs_malformed"); }

Test(ws_conn, oversize_head_431)
{
    rdv_conn_id id = open_raw("198.51.100.2:4000");
    char line[100];
    memset(line, 'a', sizeof line);
    feed(id, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 90 && fc_conn_alive(fc, id); i++) /* over 8 KiB of headers, never a blank line */
        fc_conn_raw(fc, id, (const uint8_t *)line, sizeof line);
    wt_expect_http(fc, 431);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("hs_too_big"), 1);
}

Test(ws_conn, slowloris_head_times_out_R138)
{
    rdv_conn_id id = open_raw("198.51.100.3:4000");
    feed(id, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 9; i++) { /* a byte per second keeps no connection alive */
        fc_advance(fc, 1000);
        feed(id, "X");
    }
    cr_assert(fc_conn_alive(fc, id));
    fc_advance(fc, 1000);
    cr_assert_not(fc_conn_alive(fc, id), "closed handshake_timeout_ms after accept");
    wt_expect_conn_close(fc, id, false);
    cr_assert_eq(ctr("hs_timeout"), 1);
    cr_assert_eq(gauge("handshaking"), 0);
}

Test(ws_conn, silent_connection_times_out)
{
    rdv_conn_id id = open_raw("198.51.100.3:4000");
    fc_advance(fc, 9999);
    cr_assert(fc_conn_alive(fc, id));
    fc_advance(fc, 1);
    cr_assert_not(fc_conn_alive(fc, id));
    cr_assert_eq(ctr("hs_timeout"), 1);
}

Test(ws_conn, connection_limit_503)
{
    fc_core *f2 = fc_new();
    wt_load(f2, CONF "max_connections = 2\n");
    rdv_listener *l = fc_find_listener(f2, "ws", RDV_TR_TCP);
    rdv_addr a = fc_addr("198.51.100.4:1");
    rdv_conn_id i1 = fc_owned_open(f2, l, &a), i2 = fc_owned_open(f2, l, &a), i3 = fc_owned_open(f2, l, &a);
    cr_assert(fc_conn_alive(f2, i1) && fc_conn_alive(f2, i2));
    cr_assert_not(fc_conn_alive(f2, i3));
    const fc_sent *s = fc_next_sent(f2);
    cr_assert(s && s->kind == FC_SENT_BYTES && strncmp((const char *)s->raw, "HTTP/1.1 503 ", 13) == 0);
    cr_assert_eq(fc_counter(f2, "websocket-transport.refused_limit"), 1);
    fc_conn_peer_close(f2, i1);
    rdv_conn_id i4 = fc_owned_open(f2, l, &a);
    cr_assert(fc_conn_alive(f2, i4), "a freed slot is usable again");
    fc_free(f2);
}

/* ------------------------------------------------------------------ dispatch */
Test(ws_conn, binary_request_reply_close_handshake)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.5:4242", "");
    Hbb__RendezvousMessage m = wt_nat_request();
    wt_send_msg(fc, id, &m);
    cr_assert_eq(wt_seen_last.nat_calls, 1);
    cr_assert_eq(wt_seen_last.transport, RDV_TR_WS, "handlers see the WebSocket transport");
    cr_assert_str_eq(wt_seen_last.listener, "ws");
    cr_assert_eq(wt_seen_last.access_calls, 1, "the same ACCESS phase runs");
    expect_nat_reply(id, 4242);
    wt_expect_close_frame(fc, 1000);
    cr_assert(fc_conn_alive(fc, id), "waiting for the peer's close frame");
    cr_assert_eq(ctr("closed_dispatch"), 1);
    /* a further request after our close frame is read but not acted on */
    wt_send_msg(fc, id, &m);
    cr_assert_eq(wt_seen_last.nat_calls, 1);
    cr_assert_eq(fc_sent_count(fc), 0);
    uint8_t code[2] = { 0x03, 0xe8 };
    wt_send(fc, id, true, 8, code, 2);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("closed_peer"), 0, "our close, answered");
}

Test(ws_conn, codec_header_for_replies)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.5:4242", "");
    const fc_conn_state *st = fc_conn(fc, id);
    uint8_t h[16];
    cr_assert_eq(st->codec->transport, RDV_TR_WS);
    cr_assert_eq(st->codec->header(st->codec_ud, 5, h), 2);
    cr_assert(h[0] == 0x82 && h[1] == 5, "unmasked final binary frame");
    cr_assert_eq(st->codec->header(st->codec_ud, 300, h), 4);
    cr_assert(h[1] == 126 && h[2] == 1 && h[3] == 44);
    cr_assert_eq(st->codec->header(st->codec_ud, 70000, h), 10);
}

Test(ws_conn, keep_connection_several_requests)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.6:1", "");
    Hbb__PunchHoleRequest ph = HBB__PUNCH_HOLE_REQUEST__INIT;
    ph.id = "nosuchid";
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_REQUEST;
    m.punch_hole_request = &ph;
    for (int i = 0; i < 3; i++) {
        wt_send_msg(fc, id, &m);
        const fc_sent *s = fc_next_sent(fc);
        cr_assert(s && s->kind == FC_SENT_CONN && s->msg);
        cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE);
    }
    cr_assert_eq(wt_seen_last.punch_calls, 3);
    cr_assert(fc_conn_alive(fc, id));
    cr_assert_eq(ctr("msg_binary"), 3);
}

Test(ws_conn, undecodable_and_unhandled_close_normally)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.7:1", "");
    wt_send(fc, id, true, 2, "\xff\xff\xff", 3);
    wt_expect_close_frame(fc, 1000);
    rdv_conn_id id2 = wt_open(fc, ws, "198.51.100.7:2", "");
    wt_send(fc, id2, true, 2, "", 0); /* empty message: no handler (OSS closes) */
    wt_expect_close_frame(fc, 1000);
    cr_assert_eq(ctr("closed_dispatch"), 2);
}

Test(ws_conn, access_phase_drops_silently)
{
    rdv_conn_id id = wt_open(fc, ws, "192.0.2.66:1", "");
    Hbb__RendezvousMessage m = wt_nat_request();
    wt_send_msg(fc, id, &m);
    cr_assert_eq(wt_seen_last.nat_calls, 0);
    cr_assert_eq(wt_seen_last.access_calls, 1);
    cr_assert_eq(fc_sent_count(fc), 0);
    cr_assert(fc_conn_alive(fc, id), "an ACCESS drop keeps the connection");
}

Test(ws_conn, text_ignored_connection_kept_R132)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.8:77", "");
    wt_send(fc, id, true, 1, "hello", 5);
    cr_assert_eq(fc_sent_count(fc), 0);
    cr_assert(fc_conn_alive(fc, id));
    cr_assert_eq(ctr("msg_text"), 1);
    Hbb__RendezvousMessage m = wt_nat_request();
    wt_send_msg(fc, id, &m);
    expect_nat_reply(id, 77);
}

Test(ws_conn, invalid_utf8_text_1007)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.8:77", "");
    wt_send(fc, id, true, 1, "\xc3\x28", 2);
    wt_expect_close_frame(fc, 1007);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("closed_bad_utf8"), 1);
}

Test(ws_conn, ping_pong)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.9:1", "");
    wt_send(fc, id, true, 9, "p1", 2);
    wt_frame_in f = wt_expect_frame(fc, 10);
    cr_assert(f.n == 2 && memcmp(f.payload, "p1", 2) == 0, "pong echoes the ping payload");
    wt_send(fc, id, true, 10, "x", 1);
    cr_assert_eq(fc_sent_count(fc), 0, "a pong is not answered");
    cr_assert_eq(ctr("ping"), 1);
    cr_assert_eq(ctr("pong"), 1);
    cr_assert(fc_conn_alive(fc, id));
}

/* A frame we write is one send_bytes: wslay hands over the header with
 * WSLAY_MSG_MORE, then the payload; joined, a pong or close costs one write
 * (and one TCP segment) instead of two. */
static void expect_single_write(unsigned opcode, const void *payload, size_t n)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "nothing written");
    cr_assert_eq(s->kind, FC_SENT_BYTES);
    wt_frame_in f;
    cr_assert(wt_parse(s->raw, s->len, &f), "the first write holds the whole frame, not %zu bytes of it", s->len);
    cr_assert_eq(f.opcode, opcode);
    cr_assert_eq(f.n, n);
    cr_assert(memcmp(f.payload, payload, n) == 0);
}

Test(ws_conn, pong_is_one_write_D3)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.9:1", "");
    uint8_t big[125];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 1);
    wt_send(fc, id, true, 9, "p1", 2);
    expect_single_write(10, "p1", 2);
    cr_assert_eq(fc_sent_count(fc), 0, "exactly one send_bytes per pong");
    wt_send(fc, id, true, 9, big, sizeof big); /* the largest control payload */
    expect_single_write(10, big, sizeof big);
    cr_assert_eq(fc_sent_count(fc), 0);
    wt_send(fc, id, true, 9, "", 0); /* no payload: the header alone, not held */
    expect_single_write(10, "", 0);
    cr_assert_eq(fc_sent_count(fc), 0);
    cr_assert(fc_conn_alive(fc, id));
}

Test(ws_conn, close_answer_is_one_write_D3)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.9:2", "");
    wt_send(fc, id, true, 8, "\x03\xe8" "bye", 5);
    expect_single_write(8, "\x03\xe8" "bye", 5); /* wslay echoes status and reason */
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(fc_sent_count(fc), 0);

    /* our own close (idle): the status is the payload, same single write */
    id = wt_open(fc, ws, "198.51.100.9:3", "");
    fc_advance(fc, 30000);
    expect_single_write(8, "\x03\xe9", 2);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(fc_sent_count(fc), 0);
}

Test(ws_conn, fragmented_message_with_interleaved_ping)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.10:999", "");
    Hbb__RendezvousMessage m = wt_nat_request();
    uint8_t pb[16];
    size_t pn = protobuf_c_message_pack(&m.base, pb);
    cr_assert_eq(pn, 3);
    wt_send(fc, id, false, 2, pb, 1);
    wt_send(fc, id, true, 9, "mid", 3); /* control frames may come between fragments */
    wt_expect_frame(fc, 10);
    wt_send(fc, id, false, 0, pb + 1, 1);
    cr_assert_eq(wt_seen_last.nat_calls, 0);
    wt_send(fc, id, true, 0, pb + 2, 1);
    cr_assert_eq(wt_seen_last.nat_calls, 1);
    expect_nat_reply(id, 999);
}

Test(ws_conn, pong_before_our_close_in_one_read)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.10:7", "");
    Hbb__RendezvousMessage m = wt_nat_request();
    uint8_t pb[16];
    size_t pn = protobuf_c_message_pack(&m.base, pb), a, b;
    uint8_t *f1 = wt_frame(true, 0, 9, true, "pp", 2, &a), *f2 = wt_frame(true, 0, 2, true, pb, pn, &b);
    uint8_t all[64];
    memcpy(all, f1, a), memcpy(all + a, f2, b);
    fc_conn_raw(fc, id, all, a + b); /* ping, then a request that ends the connection */
    free(f1), free(f2);
    expect_nat_reply(id, 7);
    wt_frame_in f = wt_expect_frame(fc, 10);
    cr_assert(f.n == 2 && memcmp(f.payload, "pp", 2) == 0, "RFC 6455 §5.5.2: the ping is answered");
    wt_expect_close_frame(fc, 1000);
}

Test(ws_conn, many_frames_in_one_read_and_split_frames)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.10:5", "");
    /* ping, text, ping in one segment */
    size_t a, b, c;
    uint8_t *f1 = wt_frame(true, 0, 9, true, "a", 1, &a), *f2 = wt_frame(true, 0, 1, true, "t", 1, &b),
            *f3 = wt_frame(true, 0, 9, true, "b", 1, &c);
    uint8_t all[64];
    memcpy(all, f1, a), memcpy(all + a, f2, b), memcpy(all + a + b, f3, c);
    fc_conn_raw(fc, id, all, a + b + c);
    cr_assert_eq(wt_expect_frame(fc, 10).payload[0], 'a');
    cr_assert_eq(wt_expect_frame(fc, 10).payload[0], 'b');
    /* a frame split in every possible place */
    for (size_t cut = 1; cut < a; cut++) {
        fc_conn_raw(fc, id, f1, cut);
        fc_conn_raw(fc, id, f1 + cut, a - cut);
        cr_assert_eq(wt_expect_frame(fc, 10).payload[0], 'a');
    }
    free(f1), free(f2), free(f3);
}

/* ------------------------------------------------------------------ protocol errors */
static void expect_protocol_close(rdv_conn_id id, uint16_t code, const char *counter)
{
    wt_expect_close_frame(fc, code);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr(counter), 1, "%s", counter);
    cr_assert_eq(gauge("connections"), 0);
}

Test(ws_conn, unmasked_client_frame_L29)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.11:1", "");
    size_t n;
    uint8_t *f = wt_frame(true, 0, 2, false, "\xa2\x01\x00", 3, &n);
    fc_conn_raw(fc, id, f, n);
    free(f);
    cr_assert_eq(wt_seen_last.nat_calls, 0);
    expect_protocol_close(id, 1002, "closed_protocol");
}

Test(ws_conn, control_frame_over_125)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.11:1", "");
    uint8_t big[126] = { 0 };
    wt_send(fc, id, true, 9, big, sizeof big);
    expect_protocol_close(id, 1002, "closed_protocol");
}

Test(ws_conn, fragmented_control_frame)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.11:1", "");
    wt_send(fc, id, false, 9, "x", 1);
    expect_protocol_close(id, 1002, "closed_protocol");
}

Test(ws_conn, reserved_opcode_and_rsv_bits)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.11:1", "");
    wt_send(fc, id, true, 3, "x", 1);
    expect_protocol_close(id, 1002, "closed_protocol");
    id = wt_open(fc, ws, "198.51.100.11:2", "");
    size_t n;
    uint8_t *f = wt_frame(true, 4, 2, true, "x", 1, &n); /* RSV1 without a negotiated extension */
    fc_conn_raw(fc, id, f, n);
    free(f);
    wt_expect_close_frame(fc, 1002);
    cr_assert_not(fc_conn_alive(fc, id));
}

Test(ws_conn, continuation_without_start_and_new_message_inside_one)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.12:1", "");
    wt_send(fc, id, true, 0, "x", 1);
    expect_protocol_close(id, 1002, "closed_protocol");
    id = wt_open(fc, ws, "198.51.100.12:2", "");
    wt_send(fc, id, false, 2, "x", 1);
    wt_send(fc, id, true, 2, "y", 1);
    wt_expect_close_frame(fc, 1002);
    cr_assert_not(fc_conn_alive(fc, id));
    cr_assert_eq(wt_seen_last.nat_calls, 0);
}

Test(ws_conn, close_in_the_middle_of_a_fragmented_message)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.13:1", "");
    wt_send(fc, id, false, 2, "\xa2", 1);
    uint8_t code[2] = { 0x03, 0xe9 }; /* 1001 */
    wt_send(fc, id, true, 8, code, 2);
    wt_expect_close_frame(fc, 1001); /* the status is echoed */
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("closed_peer"), 1);
    cr_assert_eq(wt_seen_last.nat_calls, 0, "the partial message is dropped");
}

Test(ws_conn, peer_close_without_status_and_bad_status)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.13:1", "");
    wt_send(fc, id, true, 8, "", 0); /* what browsers send on close() without a code */
    wt_expect_close_frame(fc, 0);
    wt_expect_conn_close(fc, id, true);
    id = wt_open(fc, ws, "198.51.100.13:2", "");
    uint8_t code[2] = { 0x03, 0xed }; /* 1005 must never be sent */
    wt_send(fc, id, true, 8, code, 2);
    expect_protocol_close(id, 1002, "closed_protocol");
}

Test(ws_conn, oversize_frame_closed_before_its_payload_R139)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.14:1", "");
    uint8_t h[14];
    size_t hl = wt_header(2, true, (1u << 20) + 1, h); /* core max_frame + 1 */
    fc_conn_raw(fc, id, h, hl);
    fc_conn_raw(fc, id, (const uint8_t *)"x", 1); /* the first payload byte shows the header to wslay */
    wt_expect_close_frame(fc, 1009);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("closed_too_big"), 1);
}

/* Audit S1: the buffer follows the bytes received, not the length a frame
 * header declares (a peer could declare core.max_frame and send nothing). */
Test(ws_conn, declared_length_not_allocated_before_payload_S1)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.14:2", "");
    uint8_t h[14];
    size_t hl = wt_header(2, true, 1u << 20, h); /* exactly core max_frame: allowed */
    fc_conn_raw(fc, id, h, hl);
    fc_conn_raw(fc, id, (const uint8_t *)"abc", 3);
    size_t cap, len;
    cr_assert(wt_buffer(ws_state, id, &cap, &len));
    cr_assert_eq(len, 3);
    cr_assert_leq(cap, 4096, "%zu bytes held for 3 received", cap);
    cr_assert(fc_conn_alive(fc, id));
    cr_assert_eq(fc_sent_count(fc), 0);
}

Test(ws_conn, oversize_across_fragments)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.14:1", "");
    size_t part = 600 * 1024;
    uint8_t *p = calloc(1, part);
    wt_send(fc, id, false, 2, p, part);
    cr_assert(fc_conn_alive(fc, id));
    uint8_t h[14];
    size_t hl = wt_header(0, true, part, h);
    h[0] &= 0x7f; /* not final */
    fc_conn_raw(fc, id, h, hl);
    fc_conn_raw(fc, id, p, 1);
    free(p);
    wt_expect_close_frame(fc, 1009);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("closed_too_big"), 1);
}

Test(ws_conn, largest_message_accepted)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.14:1", "");
    size_t n = 1u << 20; /* exactly core max_frame: decodes as garbage, so a normal close */
    uint8_t *p = calloc(1, n);
    p[0] = 0xff;
    wt_send(fc, id, true, 2, p, n);
    free(p);
    cr_assert_eq(ctr("closed_too_big"), 0);
    cr_assert_eq(ctr("msg_binary"), 1);
    wt_expect_close_frame(fc, 1000);
}

Test(ws_conn, text_over_the_limit)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.14:1", "");
    uint8_t h[14];
    size_t hl = wt_header(1, true, (1u << 20) + 1, h);
    fc_conn_raw(fc, id, h, hl);
    fc_conn_raw(fc, id, (const uint8_t *)"x", 1);
    wt_expect_close_frame(fc, 1009);
    cr_assert_not(fc_conn_alive(fc, id));
}

/* ------------------------------------------------------------------ timers */
Test(ws_conn, idle_per_complete_message_R10)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.15:1", "");
    fc_advance(fc, 20000);
    wt_send(fc, id, true, 9, "", 0); /* a ping is activity */
    wt_expect_frame(fc, 10);
    fc_advance(fc, 20000);
    cr_assert(fc_conn_alive(fc, id));
    /* a partial frame is not */
    uint8_t h[14];
    size_t hl = wt_header(2, true, 10, h);
    fc_conn_raw(fc, id, h, hl);
    fc_advance(fc, 10000);
    wt_expect_close_frame(fc, 1001);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("closed_idle"), 1);
}

Test(ws_conn, close_wait_times_out)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.16:1", "");
    Hbb__RendezvousMessage m = wt_nat_request();
    wt_send_msg(fc, id, &m);
    fc_next_sent(fc);
    wt_expect_close_frame(fc, 1000);
    fc_advance(fc, 1999);
    cr_assert(fc_conn_alive(fc, id));
    fc_advance(fc, 1);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("closed_close_timeout"), 1);
}

Test(ws_conn, send_after_our_close_is_refused)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.16:1", "");
    Hbb__RendezvousMessage m = wt_nat_request();
    wt_send_msg(fc, id, &m);
    fc_clear_sent(fc);
    rdv_core *other = fc_handle(fc, "other");
    cr_assert_eq(other->api->send(other, id, &m), -EMSGSIZE, "nothing may follow our close frame");
}

/* ------------------------------------------------------------------ proxy attribution */
Test(ws_conn, x_real_ip_from_trusted_proxy_R133_R136)
{
    rdv_conn_id id = wt_open(fc, ws, "10.9.1.2:5555", "X-Real-IP: 203.0.113.5\r\n");
    char s[RDV_ADDR_STRLEN];
    cr_assert_str_eq(rdv_addr_str(&fc_conn(fc, id)->peer, s, sizeof s), "203.0.113.5:0");
    Hbb__RendezvousMessage m = wt_nat_request();
    wt_send_msg(fc, id, &m);
    cr_assert_str_eq(rdv_addr_str(&wt_seen_last.peer, s, sizeof s), "203.0.113.5:0");
    expect_nat_reply(id, 0); /* port absent (0) */
    cr_assert_eq(ctr("proxy_used"), 1);
}

Test(ws_conn, proxy_headers_from_untrusted_peer_ignored)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.17:6000", "X-Real-IP: 203.0.113.5\r\nX-Forwarded-For: 1.1.1.1\r\n");
    Hbb__RendezvousMessage m = wt_nat_request();
    wt_send_msg(fc, id, &m);
    expect_nat_reply(id, 6000);
    cr_assert_eq(ctr("proxy_untrusted"), 1);
    cr_assert_eq(ctr("proxy_used"), 0);
}

Test(ws_conn, proxy_list_ignored_R134_L35)
{
    rdv_conn_id id = wt_open(fc, ws, "10.9.0.1:6001", "X-Forwarded-For: 203.0.113.9, 10.0.0.1\r\n");
    char s[RDV_ADDR_STRLEN];
    cr_assert_str_eq(rdv_addr_str(&fc_conn(fc, id)->peer, s, sizeof s), "10.9.0.1:6001");
    cr_assert_eq(ctr("proxy_unparsed"), 1);
}

Test(ws_conn, ipv6_proxy_and_address)
{
    rdv_conn_id id = wt_open(fc, ws, "[::1]:7000", "X-Real-IP: 2001:db8::5\r\n");
    char s[RDV_ADDR_STRLEN];
    cr_assert_str_eq(rdv_addr_str(&fc_conn(fc, id)->peer, s, sizeof s), "[2001:db8::5]:0");
}

/* ------------------------------------------------------------------ lifecycle */
Test(ws_conn, peer_eof_frees_state)
{
    rdv_conn_id a = open_raw("198.51.100.18:1");
    feed(a, "GET / HT");
    rdv_conn_id b = wt_open(fc, ws, "198.51.100.18:2", "");
    wt_send(fc, b, false, 2, "\xa2", 1);
    cr_assert_eq(gauge("connections"), 2);
    cr_assert_eq(gauge("handshaking"), 1);
    fc_conn_peer_close(fc, a);
    fc_conn_peer_close(fc, b);
    cr_assert_eq(gauge("connections"), 0);
    cr_assert_eq(gauge("handshaking"), 0);
    fc_advance(fc, 60000); /* no timer of a freed connection may fire */
    cr_assert_eq(fc_sent_count(fc), 0);
}

Test(ws_conn, unload_sends_going_away)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.19:1", "");
    rdv_conn_id hs = open_raw("198.51.100.19:2");
    fc_unload(fc, rdv_module_get(), ws_state);
    (void)hs;
    wt_expect_close_frame(fc, 1001);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("closed_shutdown"), 2);
}

Test(ws_conn, admin_command)
{
    wt_open(fc, ws, "10.9.1.2:5555", "X-Real-IP: 203.0.113.5\r\n");
    char out[2048];
    cr_assert_eq(fc_admin(fc, "websocket", out, sizeof out), 0);
    cr_assert(strstr(out, "rendezvous port 21118"), "%s", out);
    cr_assert(strstr(out, "connections 1"), "%s", out);
    cr_assert(strstr(out, "10.9.0.0/16"), "%s", out);
    cr_assert(strstr(out, "10.9.1.2:5555 as 203.0.113.5:0"), "%s", out);
}

/* ------------------------------------------------------------------ settings */
Test(ws_conn, settings_validated)
{
    fc_core *f2 = fc_new();
    void *st;
    cr_assert_lt(fc_load(f2, rdv_module_get(), "trusted_proxies = not-an-ip\n", &st), 0);
    cr_assert(fc_log_contains(f2, "not-an-ip"));
    cr_assert_lt(fc_load(f2, rdv_module_get(), "rendezvous_port = 5000\nrelay_port = 5000\n", &st), 0);
    cr_assert_lt(fc_load(f2, rdv_module_get(), "handshake_timeout_ms = 60000\n", &st), 0);
    cr_assert_lt(fc_load(f2, rdv_module_get(), "max_header_bytes = 10\n", &st), 0);
    cr_assert_lt(fc_load(f2, rdv_module_get(), "relay_first_max = 100000\nrelay_max_message = 70000\n", &st), 0);
    cr_assert_lt(fc_load(f2, rdv_module_get(), "no_such_key = 1\n", &st), 0);
    cr_assert_eq(fc_load(f2, rdv_module_get(), "rendezvous_port = 21118\nrelay_port = 0\n", &st), 0);
    cr_assert_eq(fc_reconfigure(f2, rdv_module_get(), st,
                                "rendezvous_port = 21118\nrelay_port = 0\ntrusted_proxies = 127.0.0.1\nidle_ms = 5000\n"),
                 0);
    cr_assert_eq(fc_reconfigure(f2, rdv_module_get(), st, "rendezvous_port = 21120\nrelay_port = 0\n"), -EPERM,
                 "ports need a restart");
    cr_assert_lt(fc_reconfigure(f2, rdv_module_get(), st, "rendezvous_port = 21118\nrelay_port = 0\ntrusted_proxies = x\n"),
                 0);
    fc_free(f2);
}

Test(ws_conn, reload_applies_to_new_handshakes_and_idle)
{
    fc_core *f2 = fc_new();
    void *st = wt_load(f2, CONF);
    rdv_listener *l = fc_find_listener(f2, "ws", RDV_TR_TCP);
    cr_assert_eq(fc_reconfigure(f2, rdv_module_get(), st, CONF "trusted_proxies = 198.51.100.0/24\nidle_ms = 5000\n"), 0);
    rdv_addr a = fc_addr("198.51.100.20:1");
    rdv_conn_id id = fc_owned_open(f2, l, &a);
    char req[1024];
    size_t n = wt_request(req, sizeof req, "/", "X-Real-IP: 203.0.113.1\r\n");
    fc_conn_raw(f2, id, (const uint8_t *)req, n);
    cr_assert_eq(fc_counter(f2, "websocket-transport.proxy_used"), 1);
    fc_advance(f2, 5000);
    cr_assert_not(fc_conn_alive(f2, id), "the reloaded idle_ms applies");
    fc_free(f2);
}

/* ------------------------------------------------------------------ buffer_total, message_timeout_ms */
Test(ws_conn, buffer_total_and_message_timeout_settings)
{
    const rdv_module *mod = rdv_module_get();
    fc_core *f2 = fc_new();
    void *st;
    cr_assert_lt(fc_load(f2, mod, "rendezvous_port = 0\nrelay_max_message = 300000\nbuffer_total = 200000\n", &st), 0);
    cr_assert(fc_log_contains(f2, "relay_max_message = 300000 is larger than buffer_total = 200000"),
              "one line naming both");
    /* The rendezvous port takes messages up to core.max_frame (1 MiB here). */
    cr_assert_lt(fc_load(f2, mod, "relay_port = 0\nrelay_max_message = 65536\nbuffer_total = 500000\n", &st), 0);
    cr_assert(fc_log_contains(f2, "websocket-transport.buffer_total = 500000") &&
              fc_log_contains(f2, "core.max_frame = 1048576"));
    const char *bad[] = { "buffer_total = 65535\n", "buffer_total = 68719476737\n", "buffer_total = lots\n",
                          "message_timeout_ms = 999\n", "message_timeout_ms = 3600001\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_lt(fc_load(f2, mod, bad[i], &st), 0, "%s", bad[i]);
#define RC "rendezvous_port = 21118\nrelay_port = 0\n"
    cr_assert_eq(fc_load(f2, mod, RC "relay_max_message = 65536\nbuffer_total = 2000000\n", &st), 0);
    char out[2048];
    /* SIGHUP: refused reloads keep the old values. */
    cr_assert_eq(fc_reconfigure(f2, mod, st, RC "relay_max_message = 65536\nbuffer_total = 1000000\n"), -EINVAL,
                 "below core.max_frame");
    cr_assert_eq(fc_reconfigure(f2, mod, st, RC "relay_max_message = 3000000\nbuffer_total = 2000000\n"), -EINVAL,
                 "below relay_max_message");
    cr_assert_eq(fc_admin(f2, "websocket", out, sizeof out), 0);
    cr_assert(strstr(out, "limit 2000000 (buffer_total)"), "%s", out);
    cr_assert_eq(fc_reconfigure(f2, mod, st, RC "relay_max_message = 65536\nbuffer_total = 3000000\n"
                                                "message_timeout_ms = 2000\n"),
                 0, "both reloadable");
#undef RC
    cr_assert_eq(fc_admin(f2, "websocket", out, sizeof out), 0);
    cr_assert(strstr(out, "message buffers 0 bytes, limit 3000000 (buffer_total)"), "%s", out);
    fc_free(f2);
}

/* The rendezvous port: 1 MiB messages (core.max_frame), 1200000 bytes in
 * all, 5 s per message. */
#define BCONF CONF "relay_max_message = 65536\nbuffer_total = 1200000\nmessage_timeout_ms = 5000\n"

static void setup_budget(void)
{
    fc = fc_new();
    ws_state = wt_load(fc, BCONF);
    ws = fc_find_listener(fc, "ws", RDV_TR_TCP);
}

TestSuite(ws_conn_budget, .init = setup_budget, .fini = teardown);

Test(ws_conn_budget, part_messages_past_the_total_are_closed_1013)
{
    rdv_conn_id c1 = wt_open(fc, ws, "198.51.100.30:1", ""), c2 = wt_open(fc, ws, "198.51.100.31:1", "");
    rdv_conn_id c3 = wt_open(fc, ws, "198.51.100.32:1", "");
    uint8_t *p = calloc(1, 600000);
    wt_send(fc, c1, false, 2, p, 600000); /* holds up to core.max_frame */
    cr_assert_geq(gauge("buffer_bytes"), 600000);
    wt_send(fc, c2, false, 2, p, 200000);
    wt_expect_close_frame(fc, 1013);
    wt_expect_conn_close(fc, c2, true);
    cr_assert_eq(ctr("closed_buffer_total"), 1);
    cr_assert(fc_log_contains(fc, "websocket-transport.buffer_total=1200000"));
    /* Small requests on other connections still work. */
    Hbb__RendezvousMessage m = wt_nat_request();
    wt_send_msg(fc, c3, &m);
    expect_nat_reply(c3, 1);
    cr_assert(fc_conn_alive(fc, c1));
    fc_conn_peer_close(fc, c1);
    cr_assert_leq(gauge("buffer_bytes"), 3 * 4096, "released with the connection");
    free(p);
}

Test(ws_conn_budget, part_message_deadline_1008)
{
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.33:1", "");
    wt_send(fc, id, false, 2, "part", 4);
    fc_advance(fc, 2000);
    wt_send(fc, id, true, 9, "", 0); /* not activity while a message is half received */
    wt_expect_frame(fc, 10);
    fc_advance(fc, 2999);
    cr_assert(fc_conn_alive(fc, id));
    fc_advance(fc, 1);
    wt_expect_close_frame(fc, 1008);
    wt_expect_conn_close(fc, id, true);
    cr_assert_eq(ctr("closed_message_timeout"), 1);
    cr_assert_eq(ctr("closed_idle"), 0);
    cr_assert_eq(gauge("buffer_bytes"), 0);
}

/* ------------------------------------------------------------------ out of memory
 * uthash's allocations for the connection table fail through the module's
 * test hook (ws.h). The one connection is refused like max_connections
 * (503, closed, counted in oom), nothing exits, the table stays consistent
 * and later connections work. On the code before uthash's non-fatal mode
 * each of these exited the process. */
#include "ws.h"

static void oom_teardown(void)
{
    ws_test_hash_fail_from(0);
    teardown();
}

TestSuite(ws_conn_oom, .init = setup, .fini = oom_teardown);

/* Every connection in the table is found by its id and open in the core. */
static void check_conns(void)
{
    ws_mod *m = ws_state;
    size_t n = 0;
    ws_conn *c, *tmp;
    HASH_ITER(hh, m->conns, c, tmp) {
        ws_conn *f = NULL;
        HASH_FIND(hh, m->conns, &c->id, sizeof c->id, f);
        cr_assert_eq(f, c, "connection %llu not found by its id", (unsigned long long)c->id);
        cr_assert(fc_conn_alive(fc, c->id));
        n++;
    }
    cr_assert_eq(n, m->nconns);
    cr_assert_eq(gauge("connections"), n);
}

/* The first connection makes the table: its header (1st allocation) or
 * its buckets (2nd). */
Test(ws_conn_oom, connection_refused_503_when_the_table_cannot_be_made)
{
    for (unsigned long nth = 1; nth <= 2; nth++) {
        ws_test_hash_fail_from(nth);
        rdv_conn_id id = open_raw("198.51.100.40:1");
        cr_assert_not(fc_conn_alive(fc, id), "allocation %lu failing", nth);
        wt_expect_http(fc, 503);
        cr_assert_eq(fc_sent_count(fc), 0);
        cr_assert_eq(ctr("oom"), nth);
        cr_assert_eq(ctr("accepted"), 0);
        cr_assert_eq(gauge("handshaking"), 0);
        cr_assert_null(((ws_mod *)ws_state)->conns);
        check_conns();
    }
    cr_assert(fc_log_contains(fc, "ws: out of memory: connection from 198.51.100.40:1 refused (503)"));
    ws_test_hash_fail_from(0);
    rdv_conn_id id = wt_open(fc, ws, "198.51.100.40:2", "");
    Hbb__RendezvousMessage m = wt_nat_request();
    wt_send_msg(fc, id, &m);
    expect_nat_reply(id, 2);
    check_conns();
}

/* Connections come until one would grow the table: that one is refused,
 * the others stay and work (a handshake, a request, a close), and once
 * memory is back a new connection is taken. */
Test(ws_conn_oom, connection_that_would_grow_the_table_is_refused_the_rest_kept)
{
    rdv_conn_id first = wt_open(fc, ws, "198.51.100.41:1", ""); /* the table exists */
    ws_test_hash_fail_from(1);
    unsigned long allocs = ws_test_hash_allocs();
    rdv_conn_id id = 0, id1 = 0;
    int n;
    for (n = 1; n <= 3000; n++) {
        id = open_raw("198.51.100.42:2");
        if (n == 1)
            id1 = id;
        if (ctr("oom"))
            break;
    }
    cr_assert_eq(ctr("oom"), 1, "no connection reached an expansion in 3000");
    cr_assert_gt(n, 10, "the table grew after %d connections only", n);
    cr_assert_eq(ws_test_hash_allocs(), allocs + 1, "one expansion was attempted");
    cr_assert_not(fc_conn_alive(fc, id));
    wt_expect_http(fc, 503);
    cr_assert_eq(ctr("accepted"), (uint64_t)n, "1 + %d accepted", n - 1);
    cr_assert_eq(gauge("handshaking"), (uint64_t)n - 1);
    check_conns();
    /* still short of memory: the others go on */
    char req[2048];
    size_t len = wt_request(req, sizeof req, "/", "");
    cr_assert_eq(fc_conn_raw(fc, id1, (const uint8_t *)req, len), RDV_OK);
    wt_expect_http(fc, 101);
    Hbb__RendezvousMessage m = wt_nat_request();
    wt_send_msg(fc, first, &m);
    expect_nat_reply(first, 1);
    wt_expect_close_frame(fc, 1000);
    fc_conn_peer_close(fc, id1);
    cr_assert_eq(gauge("connections"), (uint64_t)n - 1);
    check_conns();
    ws_test_hash_fail_from(0);
    rdv_conn_id again = wt_open(fc, ws, "198.51.100.42:3", "");
    wt_send_msg(fc, again, &m);
    expect_nat_reply(again, 3);
    check_conns();
}
