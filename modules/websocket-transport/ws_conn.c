/* ws_conn.c — one WebSocket connection, from the HTTP upgrade to the close
 * handshake (RFC 6455; wire.md §7; rendezvous.md §5.2; relay.md §9).
 *
 * The core buffers the socket's bytes (RAW listener) and hands them to
 * ws_on_data. Until the upgrade the module looks for the request head; after
 * it, wslay's event API parses frames (masking rule, control-frame rules,
 * opcodes, close status codes, UTF-8 of text and close reasons) and answers
 * pings. wslay runs without buffering: whole data messages are assembled
 * here, in one buffer. A frame header is checked against the message limit
 * before anything is stored, but the buffer grows only as payload arrives:
 * a declared length costs nothing until the bytes are really sent.
 *
 * Every reassembly buffer counts in m->buf_bytes, bounded by buffer_total:
 * a connection whose message would grow it past the total is closed with
 * 1013 (try again later: the server is short of room, the message is not
 * too big as 1009 would say). A message must also be complete within
 * message_timeout_ms of its first frame (1008), so pings cannot keep a part
 * message, and its share of the total, held for ever. Both are O(1) per
 * event: the deadline rides on the connection's timer, armed only when it
 * comes sooner than the one already set.
 *
 * Rendezvous port: each binary message goes to api->conn_dispatch (ACCESS +
 * dispatch table, transport RDV_TR_WS); replies come back through the codec
 * installed after the upgrade, which writes a binary frame header.
 * Relay and module ports: binary messages go to the port's owner (the relay,
 * or the module that opened the port; rdv/svc/ws_server.h).
 *
 * Re-entrancy: dispatching or sending can make the core close the
 * connection, which calls ws_on_close at once; state is then marked dead
 * and freed only when no callback is using it (busy). Frames the module
 * itself writes (pong, close) are queued by wslay and written after the
 * input is processed, so replies to messages go out before a close frame. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#define WS_MSG_KEEP 4096 /* reassembly buffer kept between messages */
#define WS_CODE_TRY_AGAIN_LATER 1013 /* RFC 6455 §7.4.2 (IANA registry): buffer_total reached */

/* ---- uthash's allocator and its test hook (rdv/uthash.h) */
RDV_UTHASH_HOOK_DEFINE()

/* ------------------------------------------------------------------ lookup, lifetime */
static ws_conn *ws_find(ws_mod *m, rdv_conn_id id)
{
    ws_conn *c = NULL;
    HASH_FIND(hh, m->conns, &id, sizeof id, c);
    return c;
}

/* Give the reassembly buffer back (and its share of buffer_total). */
static void ws_msg_free(ws_conn *c)
{
    c->m->buf_bytes -= c->mcap;
    free(c->msg);
    c->msg = NULL, c->mcap = 0;
}

static void ws_free(ws_conn *c)
{
    c->m->core->api->timer_free(c->timer);
    if (c->ev)
        wslay_event_context_free(c->ev);
    ws_msg_free(c);
    free(c);
}

static void ws_release(ws_conn *c)
{
    if (--c->busy == 0 && c->dead)
        ws_free(c);
}

static void ws_timer_cb(void *ud);
static void ws_resume(ws_conn *c);

static const rdv_core_api *ws_api(ws_conn *c) { return c->m->core->api; }
static rdv_core *ws_core(ws_conn *c) { return c->m->core; }
/* The port hands its sides to an owner (relay or module port). */
static bool ws_owned_port(const ws_conn *c) { return c->port->kind != WS_PORT_RENDEZVOUS; }

/* ------------------------------------------------------------------ deadlines */
/* A data message in assembly must be complete by then (0: none). Not while
 * the relay has paused the side: then we are the ones not reading. */
static uint64_t ws_message_deadline(const ws_conn *c)
{
    if (!c->mop || c->phase != WS_OPEN || c->paused)
        return 0;
    return c->mstart_ms + (uint64_t)c->m->cfg->message_timeout_ms;
}

/* When the current phase times out (0 = never: the owner's timers rule). */
static uint64_t ws_phase_deadline(ws_conn *c)
{
    const ws_cfg *cfg = c->m->cfg;
    const rdv_ws_port_spec *lim = &c->port->lim;
    switch (c->phase) {
    case WS_HANDSHAKE: {
        uint64_t t = (uint64_t)cfg->handshake_timeout_ms;
        if (ws_owned_port(c) && lim->first_ms < t)
            t = lim->first_ms;
        return c->opened_ms + t;
    }
    case WS_OPEN:
        if (c->owned) /* the port's idle_ms, if any (the relay's is 0) */
            return lim->idle_ms ? c->last_ms + lim->idle_ms : 0;
        /* relay.md §3.2: upgrade and first message within relay_first_ms of
         * accept (a module port: its first_ms); rendezvous.md §4.2: each
         * next message within idle_ms. */
        return ws_owned_port(c) ? c->opened_ms + lim->first_ms : c->last_ms + (uint64_t)cfg->idle_ms;
    case WS_CLOSING:
        return c->last_ms + (uint64_t)cfg->close_timeout_ms;
    }
    return 0;
}

/* The earliest deadline (0: none); a deferred resume is due at once. */
static uint64_t ws_deadline(ws_conn *c, uint64_t now)
{
    if (c->resume_pending)
        return now;
    uint64_t due = ws_phase_deadline(c), md = ws_message_deadline(c);
    return md && (!due || md < due) ? md : due;
}

static void ws_arm(ws_conn *c)
{
    const rdv_core_api *api = ws_api(c);
    uint64_t now = api->now_ms(ws_core(c)), due = ws_deadline(c, now);
    if (!due || c->close_asked) {
        api->timer_stop(c->timer);
        c->due = 0;
        return;
    }
    api->timer_start(c->timer, due > now ? due - now : 0, 0);
    c->due = due > now ? due : now;
}

/* Arm only if the deadline is sooner than the one set: a later one is
 * found when the timer fires, so a stream of messages costs no timer
 * operation per message. */
static void ws_rearm(ws_conn *c)
{
    uint64_t due = ws_deadline(c, ws_api(c)->now_ms(ws_core(c)));
    if (due && (!c->due || due < c->due))
        ws_arm(c);
}

/* ------------------------------------------------------------------ closing */
/* Hand the connection back to the core to close once queued output is out
 * (101 answer, replies, our close frame). on_close follows. */
static void ws_finish(ws_conn *c, bool flush)
{
    if (c->dead || c->close_asked)
        return;
    c->close_asked = true;
    ws_api(c)->timer_stop(c->timer);
    ws_api(c)->conn_close(ws_core(c), c->id, flush);
}

/* Write a frame header wslay handed over with WSLAY_MSG_MORE and kept in
 * c->held (see ws_send_cb). wslay always follows such a piece with the next
 * one in the same call, so this finds nothing to do in practice; it runs
 * after every wslay_event_send and before every other write of ours so that
 * a held header can neither be lost nor overtaken. */
static int ws_flush_held(ws_conn *c)
{
    size_t n = c->nheld;
    c->nheld = 0;
    if (!n || c->dead)
        return 0;
    return ws_api(c)->send_bytes(ws_core(c), c->id, c->held, n) < 0 ? -1 : 0;
}

/* wslay_event_send, then whatever it left held. */
static int ws_send_queued(ws_conn *c)
{
    int r = wslay_event_send(c->ev);
    if (ws_flush_held(c) < 0 && r == 0)
        r = WSLAY_ERR_CALLBACK_FAILURE;
    return r;
}

/* Queue our close frame (RFC 6455 §7.1.2). wait: keep reading until the
 * peer's close arrives or close_timeout_ms passes (a normal close); else
 * the connection ends as soon as the frame is written. The frame itself is
 * written by ws_pump, after input processing. */
static void ws_close_queue(ws_conn *c, uint16_t code, bool wait)
{
    if (c->dead || c->phase == WS_CLOSING || !c->ev)
        return;
    /* Pongs already queued go out first: wslay drops every control frame
     * but the close once one is queued, and RFC 6455 §5.5.2 wants a pong
     * for each ping received before a close. */
    ws_send_queued(c);
    if (c->dead)
        return;
    wslay_event_queue_close(c->ev, code, NULL, 0);
    c->phase = WS_CLOSING; /* the codec refuses further messages from now on */
    c->close_wait = wait;
    c->last_ms = ws_api(c)->now_ms(ws_core(c));
}

/* A protocol violation found here (message too big): close frame with the
 * code, stop reading, end without waiting. */
static void ws_fail(ws_conn *c, uint16_t code)
{
    if (c->fail_code)
        return;
    c->fail_code = code;
    if (c->phase != WS_CLOSING)
        wslay_event_queue_close(c->ev, code, NULL, 0);
    c->phase = WS_CLOSING;
    c->close_wait = false;
    wslay_event_shutdown_read(c->ev);
}

static void ws_count_close_code(ws_conn *c, uint16_t code)
{
    ws_stats *st = &c->m->st;
    switch (code) {
    case WS_CODE_TRY_AGAIN_LATER: return; /* counted and logged where decided (ws_over_budget) */
    case WSLAY_CODE_MESSAGE_TOO_BIG: (*st->closed_too_big)++; break;
    case WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA: (*st->closed_bad_utf8)++; break;
    default: (*st->closed_protocol)++; break;
    }
    char a[RDV_ADDR_STRLEN];
    RDV_LOG_RL(ws_core(c), RDV_LOG_INFO, "conn %llu from %s: WebSocket protocol error, closing with status %u",
               (unsigned long long)c->id, rdv_addr_str(&c->tcp_peer, a, sizeof a), code);
}

/* A close frame written directly, for when wslay's queue cannot carry the
 * status we want. */
static void ws_write_close(ws_conn *c, uint16_t code)
{
    uint8_t f[16];
    size_t h = ws_frame_header(WSLAY_CONNECTION_CLOSE, 2, f);
    f[h] = (uint8_t)(code >> 8), f[h + 1] = (uint8_t)code;
    if (ws_flush_held(c) == 0)
        ws_api(c)->send_bytes(ws_core(c), c->id, f, h + 2);
    c->phase = WS_CLOSING;
}

/* Write what wslay queued (pong, close) and decide whether the connection
 * is over. Called after every batch of input and after our own closes. */
static void ws_pump(ws_conn *c)
{
    if (c->dead || !c->ev)
        return;
    bool had_close = wslay_event_get_close_sent(c->ev);
    int r = ws_send_queued(c);
    if (c->dead)
        return;
    if (r != 0) {
        (*c->m->st.closed_error)++;
        ws_finish(c, false);
        return;
    }
    bool sent = wslay_event_get_close_sent(c->ev), rcvd = wslay_event_get_close_received(c->ev);
    if (!sent)
        return;
    if (!had_close && c->phase != WS_CLOSING) {
        /* wslay found a protocol error and queued the close itself. */
        c->fail_code = wslay_event_get_status_code_sent(c->ev);
        c->phase = WS_CLOSING;
        ws_count_close_code(c, c->fail_code);
    } else if (!had_close && c->fail_code) {
        ws_count_close_code(c, c->fail_code);
    }
    if (rcvd || c->fail_code || !c->close_wait || !wslay_event_get_read_enabled(c->ev))
        ws_finish(c, true);
    else
        ws_arm(c); /* wait for the peer's close frame */
}

/* ------------------------------------------------------------------ codec */
/* Every message a handler (or the relay) sends becomes one unmasked binary
 * frame; nothing may follow our close frame. */
static size_t ws_codec_header(void *ud, size_t n, uint8_t out[16])
{
    ws_conn *c = ud;
    if (c->dead || c->phase != WS_OPEN)
        return 0;
    return ws_frame_header(WSLAY_BINARY_FRAME, n, out);
}

static const rdv_codec ws_codec = {
    .name = "websocket",
    .transport = RDV_TR_WS,
    .header = ws_codec_header,
};

/* ------------------------------------------------------------------ wslay callbacks */
static ssize_t ws_recv_cb(wslay_event_context_ptr ev, uint8_t *buf, size_t len, int flags, void *ud)
{
    (void)flags;
    ws_conn *c = ud;
    /* While paused by the relay, hand wslay nothing more, except at the
     * start of an on_data call: the core must see progress or it would take
     * a full buffer for an oversize peer. */
    bool may = !c->dead && c->in && c->in_used < c->in_len && (!c->paused || c->in_used == 0);
    if (!may) {
        wslay_event_set_error(ev, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t k = c->in_len - c->in_used;
    if (k > len)
        k = len;
    memcpy(buf, c->in + c->in_used, k);
    c->in_used += k;
    return (ssize_t)k;
}

/* wslay writes a frame as its header (flagged WSLAY_MSG_MORE when a payload
 * follows), then its payload. The header is held and joined with the
 * payload, so a pong or close frame costs one send_bytes (one write, one
 * segment) instead of two. Only frames we never build with wslay could have
 * payloads too big to join; those go out as two writes, in order. */
static ssize_t ws_send_cb(wslay_event_context_ptr ev, const uint8_t *data, size_t len, int flags, void *ud)
{
    ws_conn *c = ud;
    if (c->dead) {
        c->nheld = 0;
        wslay_event_set_error(ev, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    if ((flags & WSLAY_MSG_MORE) && !c->nheld && len <= sizeof c->held) {
        memcpy(c->held, data, len);
        c->nheld = (uint8_t)len;
        return (ssize_t)len;
    }
    uint8_t joined[sizeof c->held + 125]; /* a header and a control frame's payload */
    int r;
    if (c->nheld && c->nheld + len <= sizeof joined) {
        memcpy(joined, c->held, c->nheld);
        memcpy(joined + c->nheld, data, len);
        r = ws_api(c)->send_bytes(ws_core(c), c->id, joined, c->nheld + len);
        c->nheld = 0;
    } else {
        r = ws_flush_held(c);
        if (r == 0 && !c->dead)
            r = ws_api(c)->send_bytes(ws_core(c), c->id, data, len);
    }
    if (r < 0 || c->dead) {
        wslay_event_set_error(ev, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

/* Grow the message buffer to hold need bytes (need <= msg_limit, checked).
 * Called as payload arrives, never from a header's declared length. With
 * every other buffer it must fit in buffer_total: if doubling would pass
 * it, exactly `need` is tried; else -EDQUOT. */
static int ws_reserve(ws_conn *c, uint64_t need)
{
    if (need <= c->mcap)
        return 0;
    uint64_t cap = c->mcap ? c->mcap : 256;
    while (cap < need)
        cap *= 2; /* doubling: many small fragments cost O(n) copies, not O(n^2) */
    if (cap > c->msg_limit)
        cap = need > c->msg_limit ? need : c->msg_limit;
    ws_mod *m = c->m;
    uint64_t others = m->buf_bytes - c->mcap, total = (uint64_t)m->cfg->buffer_total;
    if (others + cap > total) {
        if (others + need > total)
            return -EDQUOT;
        cap = need;
    }
    uint8_t *nb = realloc(c->msg, (size_t)cap);
    if (!nb)
        return -ENOMEM;
    m->buf_bytes = others + cap;
    c->msg = nb, c->mcap = (size_t)cap;
    return 0;
}

/* buffer_total reached: this connection is the one growing. */
static void ws_over_budget(ws_conn *c)
{
    ws_mod *m = c->m;
    char a[RDV_ADDR_STRLEN];
    (*m->st.closed_buffer_total)++;
    RDV_LOG_RL(m->core, RDV_LOG_WARN,
               "websocket-transport.buffer_total=%lld bytes held by partly received messages "
               "(conf.d/50-websocket-transport.conf); closing conn %llu from %s (1013)",
               (long long)m->cfg->buffer_total, (unsigned long long)c->id, rdv_addr_str(&c->tcp_peer, a, sizeof a));
    ws_fail(c, WS_CODE_TRY_AGAIN_LATER);
    ws_msg_free(c); /* nothing more is stored (fail_code): its share is free at once */
}

static void ws_on_frame_start(wslay_event_context_ptr ev, const struct wslay_event_on_frame_recv_start_arg *arg,
                              void *ud)
{
    (void)ev;
    ws_conn *c = ud;
    c->fctrl = wslay_is_ctrl_frame(arg->opcode);
    if (c->dead || c->fail_code || c->fctrl)
        return; /* control frames (<= 125 bytes, enforced by wslay) are buffered by wslay */
    if (arg->opcode != WSLAY_CONTINUATION_FRAME) {
        /* wslay has already refused a new data frame inside a fragmented
         * message, and a continuation without one. */
        c->mop = arg->opcode;
        c->mlen = 0;
        c->mskip = arg->opcode != WSLAY_BINARY_FRAME || c->phase != WS_OPEN;
        c->mstart_ms = ws_api(c)->now_ms(ws_core(c));
        ws_rearm(c); /* message_timeout_ms */
    }
    /* The whole message, not just this frame, must fit: checked before any
     * byte of it is stored. Memory is taken per chunk (ws_on_frame_chunk),
     * so a peer declaring a huge frame and sending little holds little. */
    if (arg->payload_length > c->msg_limit - c->mlen)
        ws_fail(c, WSLAY_CODE_MESSAGE_TOO_BIG);
}

static void ws_on_frame_chunk(wslay_event_context_ptr ev, const struct wslay_event_on_frame_recv_chunk_arg *arg,
                              void *ud)
{
    (void)ev;
    ws_conn *c = ud;
    if (c->dead || c->fail_code || c->fctrl || !c->mop || !arg->data_length)
        return; /* wslay reports control-frame chunks too: they are not ours */
    if (!c->mskip) {
        /* mlen + data_length <= msg_limit: wslay delivers no more than the
         * frame's length, which ws_on_frame_start checked. */
        int e = ws_reserve(c, c->mlen + arg->data_length);
        if (e == -EDQUOT) {
            ws_over_budget(c);
            return;
        }
        if (e < 0) {
            ws_fail(c, WSLAY_CODE_INTERNAL_SERVER_ERROR);
            return;
        }
        memcpy(c->msg + c->mlen, arg->data, arg->data_length);
    }
    c->mlen += arg->data_length;
}

static void ws_message_reset(ws_conn *c)
{
    c->mop = 0, c->mlen = 0, c->mskip = false;
    if (c->mcap > WS_MSG_KEEP) /* do not keep a large buffer on an idle connection */
        ws_msg_free(c);
}

/* Something arrived that counts as activity (rendezvous.md §4.2: text,
 * ping and pong too). Not while a data message is half received on the
 * rendezvous port: as for a TCP frame (R9), idle counts from the last whole
 * message, so pings cannot keep a part message (up to core.max_frame) held
 * for ever. */
static void ws_activity(ws_conn *c)
{
    if (c->mop && !c->owned)
        return;
    c->last_ms = ws_api(c)->now_ms(ws_core(c));
    const ws_port *port = c->port;
    if (c->owned && port->owner && port->owner->side_activity)
        port->owner->side_activity(port->self, c->id);
}

/* The assembled message; never NULL, even when empty. */
static const uint8_t *ws_payload(const ws_conn *c)
{
    static const uint8_t empty[1];
    return c->msg ? c->msg : empty;
}

static void ws_deliver_rendezvous(ws_conn *c)
{
    int r = ws_api(c)->conn_dispatch(ws_core(c), c->id, ws_payload(c), (size_t)c->mlen);
    if (c->dead)
        return;
    if (r != RDV_OK) {
        /* rendezvous.md §4.2 "close": the handler answered (or nobody
         * understood the message); end with a normal close handshake. */
        (*c->m->st.closed_dispatch)++;
        ws_close_queue(c, WSLAY_CODE_NORMAL_CLOSURE, true);
    }
}

/* Relay and module ports: the first binary message opens the side, later
 * ones go to the owner. */
static void ws_deliver_owned(ws_conn *c)
{
    ws_mod *m = c->m;
    ws_port *port = c->port;
    const rdv_ws_side_api *owner = port->owner;
    if (!owner) { /* the owner closed the port meanwhile */
        ws_finish(c, false);
        return;
    }
    if (!c->owned) {
        /* Owned from the start of side_open: the owner may already pause
         * (a waiting relay side), send or close through ws_side_ops in it. */
        c->owned = true;
        port->nsides++;
        int r = owner->side_open(port->self, c->id, &c->peer, &c->tcp_peer, ws_payload(c), (size_t)c->mlen,
                                 &ws_side_ops, m);
        if (c->dead) /* it failed meanwhile: side_closed has been called */
            return;
        if (r != RDV_OK) {
            /* relay.md §3.3: every rejection is a silent close. */
            c->owned = false;
            port->nsides--;
            (*port->refused)++;
            ws_finish(c, true);
            return;
        }
        (*port->handoff)++;
        c->msg_limit = port->lim.max_message;
        wslay_event_config_set_max_recv_msg_length(c->ev, port->lim.max_frame);
        ws_arm(c); /* the owner's timers rule now; ours: message_timeout_ms (and idle_ms) only */
        return;
    }
    if (owner->side_message(port->self, c->id, ws_payload(c), (size_t)c->mlen) != RDV_OK && !c->dead)
        ws_finish(c, true);
}

static void ws_on_msg(wslay_event_context_ptr ev, const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    ws_conn *c = ud;
    ws_stats *st = &c->m->st;
    if (c->dead) {
        wslay_event_shutdown_read(ev);
        return;
    }
    bool first = ws_owned_port(c) && !c->owned && c->phase == WS_OPEN;
    switch (arg->opcode) {
    case WSLAY_BINARY_FRAME:
        if (c->fail_code || c->phase != WS_OPEN)
            break; /* after our close frame: read, but do not act */
        (*st->msg_binary)++;
        *st->bytes_in += c->mlen;
        ws_activity(c);
        if (ws_owned_port(c))
            ws_deliver_owned(c);
        else
            ws_deliver_rendezvous(c);
        break;
    case WSLAY_TEXT_FRAME: /* wire.md §7: ignored, connection kept */
        (*st->msg_text)++;
        ws_activity(c);
        break;
    case WSLAY_PING: /* wslay has queued the pong with the same payload */
        (*st->ping)++;
        ws_activity(c);
        break;
    case WSLAY_PONG:
        (*st->pong)++;
        ws_activity(c);
        break;
    case WSLAY_CONNECTION_CLOSE: /* wslay has queued our answering close */
        if (c->phase != WS_CLOSING)
            (*st->closed_peer)++;
        c->phase = WS_CLOSING;
        first = false;
        break;
    }
    if (c->dead)
        return;
    /* A control frame may sit between the fragments of a data message
     * (RFC 6455 §5.4): only a data message ends the one being assembled. */
    if (arg->opcode == WSLAY_BINARY_FRAME || arg->opcode == WSLAY_TEXT_FRAME)
        ws_message_reset(c);
    /* relay.md §3.3: on the relay port, text, ping or pong before the first
     * binary message closes (a module port says whether it wants that). */
    if (first && c->port->lim.nonbinary_first_closes && arg->opcode != WSLAY_BINARY_FRAME && !c->owned) {
        (*c->port->refused)++;
        ws_close_queue(c, WSLAY_CODE_POLICY_VIOLATION, false);
    }
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .on_frame_recv_start_callback = ws_on_frame_start,
    .on_frame_recv_chunk_callback = ws_on_frame_chunk,
    .on_msg_recv_callback = ws_on_msg,
};

/* ------------------------------------------------------------------ input */
/* Feed bytes after the upgrade to wslay; returns how many were taken. */
static size_t ws_frames_in(ws_conn *c, const uint8_t *p, size_t n)
{
    c->in = p, c->in_len = n, c->in_used = 0;
    bool reading = wslay_event_get_read_enabled(c->ev);
    c->in_data = true;
    int r = reading ? wslay_event_recv(c->ev) : 0;
    c->in_data = false;
    c->in = NULL;
    size_t used = c->in_used;
    if (c->dead)
        return n;
    if (r == WSLAY_ERR_CALLBACK_FAILURE) {
        /* Our recv callback never fails, so this is the frame layer refusing
         * a header (control frame over 125 bytes or fragmented, non-minimal
         * length). wslay queued a close without a status; write 1002. */
        if (!wslay_event_get_close_sent(c->ev))
            ws_write_close(c, WSLAY_CODE_PROTOCOL_ERROR);
        c->fail_code = WSLAY_CODE_PROTOCOL_ERROR;
        ws_count_close_code(c, c->fail_code);
        ws_finish(c, true);
        return n;
    }
    if (r != 0) { /* out of memory inside wslay */
        (*c->m->st.closed_error)++;
        ws_finish(c, false);
        return n;
    }
    if (!wslay_event_get_read_enabled(c->ev))
        used = n; /* close received or protocol error: the rest is discarded */
    ws_pump(c);
    return used;
}

/* The proxy headers count only from a trusted proxy (rendezvous.md §12,
 * Deviation allowed there). */
static void ws_apply_proxy(ws_conn *c, const ws_req *req)
{
    ws_mod *m = c->m;
    if (!req->h[WS_H_REAL_IP].count && !req->h[WS_H_FORWARDED_FOR].count)
        return;
    bool trusted = false;
    for (size_t i = 0; i < m->nproxies && !trusted; i++)
        trusted = ws_cidr_match(&m->proxies[i], &c->tcp_peer);
    if (!trusted) {
        (*m->st.proxy_untrusted)++;
        return;
    }
    rdv_addr a;
    if (!ws_http_proxy_addr(req, &a)) {
        (*m->st.proxy_unparsed)++;
        return;
    }
    if (ws_api(c)->conn_set_peer(ws_core(c), c->id, &a) == 0) {
        rdv_addr_normalize(&a);
        c->peer = a;
        (*m->st.proxy_used)++;
    }
}

static void ws_refuse(ws_conn *c, int status)
{
    char out[256];
    size_t n = ws_http_answer_error(status, out, sizeof out);
    ws_api(c)->send_bytes(ws_core(c), c->id, (const uint8_t *)out, n);
    ws_finish(c, true);
}

static uint64_t *ws_verdict_counter(ws_mod *m, ws_req_verdict v)
{
    switch (v) {
    case WS_REQ_OK: return m->st.hs_ok;
    case WS_REQ_MALFORMED: return m->st.hs_malformed;
    case WS_REQ_NOT_GET: return m->st.hs_not_get;
    case WS_REQ_OLD_HTTP: return m->st.hs_old_http;
    case WS_REQ_NOT_UPGRADE: return m->st.hs_not_upgrade;
    case WS_REQ_BAD_KEY: return m->st.hs_bad_key;
    case WS_REQ_BAD_VERSION: return m->st.hs_bad_version;
    }
    return m->st.hs_malformed;
}

/* Returns the head's length once upgraded, 0 while it is incomplete, -1 if
 * the connection was refused. */
static long ws_handshake(ws_conn *c, const uint8_t *p, size_t n)
{
    ws_mod *m = c->m;
    size_t max = (size_t)m->cfg->max_header_bytes;
    size_t end = ws_http_head_end(p, n < max ? n : max, &c->scan);
    if (!end) {
        if (n >= max) {
            (*m->st.hs_too_big)++;
            ws_refuse(c, 431);
            return -1;
        }
        return 0;
    }
    ws_req *req = malloc(sizeof *req); /* ~1.7 KiB: keep it off the stack of the loop */
    if (!req) {
        ws_finish(c, false);
        return -1;
    }
    ws_http_parse(p, end, req);
    (*ws_verdict_counter(m, req->verdict))++;
    if (req->verdict != WS_REQ_OK) {
        char a[RDV_ADDR_STRLEN];
        RDV_LOG_RL(m->core, RDV_LOG_INFO, "conn %llu from %s: handshake refused: %s", (unsigned long long)c->id,
                   rdv_addr_str(&c->tcp_peer, a, sizeof a), ws_http_verdict_name(req->verdict));
        ws_refuse(c, ws_http_status(req->verdict));
        free(req);
        return -1;
    }
    ws_apply_proxy(c, req);
    char out[256];
    size_t alen = ws_http_answer_101(req, out, sizeof out);
    free(req);
    const rdv_core_api *api = ws_api(c);
    if (wslay_event_context_server_init(&c->ev, &ws_callbacks, c) != 0) {
        c->ev = NULL;
        ws_finish(c, false);
        return -1;
    }
    wslay_event_config_set_no_buffering(c->ev, 1);
    bool owned_port = ws_owned_port(c);
    c->msg_limit = owned_port ? c->port->lim.first_max : (uint64_t)m->max_frame;
    uint64_t frame_limit = owned_port && c->port->lim.max_frame < c->msg_limit ? c->port->lim.max_frame : c->msg_limit;
    wslay_event_config_set_max_recv_msg_length(c->ev, frame_limit);
    if (api->send_bytes(m->core, c->id, (const uint8_t *)out, alen) < 0 || c->dead)
        return -1;
    if (api->conn_set_codec(m->core, c->id, &ws_codec, c) < 0) {
        (*m->st.closed_error)++;
        ws_finish(c, false);
        return -1;
    }
    c->phase = WS_OPEN;
    m->nhandshake--;
    c->last_ms = api->now_ms(m->core);
    ws_arm(c);
    return (long)end;
}

/* ------------------------------------------------------------------ core callbacks */
/* No memory to hold a new connection: answered 503 like max_connections
 * (the client may come back) and closed; the table and every other
 * connection are untouched. */
static int ws_refuse_oom(ws_port *port, rdv_conn_id id, const rdv_addr *peer)
{
    ws_mod *m = port->m;
    const rdv_core_api *api = m->core->api;
    char a[RDV_ADDR_STRLEN];
    (*m->st.oom)++;
    RDV_LOG_RL(m->core, RDV_LOG_WARN, "%s: out of memory: connection from %s refused (503)",
               api->listener_name(port->l), rdv_addr_str(peer, a, sizeof a));
    char out[256];
    size_t n = ws_http_answer_error(503, out, sizeof out);
    api->send_bytes(m->core, id, (const uint8_t *)out, n);
    return RDV_CLOSE;
}

static int ws_on_open(void *ud, rdv_conn_id id, const rdv_addr *peer)
{
    ws_port *port = ud;
    ws_mod *m = port->m;
    const rdv_core_api *api = m->core->api;
    if (m->stopping || port->closed)
        return RDV_CLOSE;
    if ((int64_t)m->nconns >= m->cfg->max_connections) {
        (*m->st.refused_limit)++;
        RDV_LOG_RL(m->core, RDV_LOG_WARN, "%s: websocket-transport.max_connections=%lld reached; refusing",
                   api->listener_name(port->l), (long long)m->cfg->max_connections);
        char out[256];
        size_t n = ws_http_answer_error(503, out, sizeof out);
        api->send_bytes(m->core, id, (const uint8_t *)out, n);
        return RDV_CLOSE;
    }
    ws_conn *c = calloc(1, sizeof *c);
    if (!c)
        return ws_refuse_oom(port, id, peer);
    c->id = id, c->m = m, c->port = port, c->phase = WS_HANDSHAKE;
    c->tcp_peer = c->peer = *peer;
    c->opened_ms = c->last_ms = api->now_ms(m->core);
    c->timer = api->timer_new(m->core, ws_timer_cb, c);
    if (!c->timer) {
        free(c);
        return ws_refuse_oom(port, id, peer);
    }
    HASH_ADD(hh, m->conns, id, sizeof c->id, c);
    if (!c->hh.tbl) { /* uthash rolled the add back: nothing refers to c yet */
        api->timer_free(c->timer);
        free(c);
        return ws_refuse_oom(port, id, peer);
    }
    m->nconns++, m->nhandshake++;
    (*m->st.accepted)++;
    /* Our deadlines (handshake, per-message idle, close wait) replace the
     * core's idle timer, which would count any byte as activity. */
    api->conn_set_idle(m->core, id, 0);
    ws_arm(c);
    return RDV_OK;
}

static long ws_on_data(void *ud, rdv_conn_id id, const uint8_t *p, size_t n)
{
    ws_port *port = ud;
    ws_conn *c = ws_find(port->m, id);
    if (!c || c->close_asked)
        return (long)n;
    c->busy++;
    size_t used = 0;
    if (c->phase == WS_HANDSHAKE) {
        long r = ws_handshake(c, p, n);
        if (r <= 0 || c->dead) {
            ws_release(c);
            return r < 0 ? (long)n : 0;
        }
        used = (size_t)r;
    }
    if (used < n && !c->dead && !c->close_asked)
        used += ws_frames_in(c, p + used, n - used);
    ws_release(c);
    return (long)used;
}

static void ws_on_close(void *ud, rdv_conn_id id, rdv_close_reason why)
{
    (void)why;
    ws_port *port = ud;
    ws_mod *m = port->m;
    ws_conn *c = ws_find(m, id);
    if (!c)
        return;
    HASH_DEL(m->conns, c);
    m->nconns--;
    if (c->phase == WS_HANDSHAKE)
        m->nhandshake--;
    c->dead = true;
    m->core->api->timer_stop(c->timer);
    if (c->owned) {
        port->nsides--;
        if (port->owner)
            port->owner->side_closed(port->self, id);
    }
    if (c->busy == 0)
        ws_free(c);
}

static void ws_on_drain(void *ud, rdv_conn_id id)
{
    ws_port *port = ud;
    ws_conn *c = ws_find(port->m, id);
    if (c && c->owned && !c->dead && port->owner && port->owner->side_drain)
        port->owner->side_drain(port->self, id);
}

const rdv_conn_ops ws_conn_ops = {
    .on_open = ws_on_open,
    .on_data = ws_on_data,
    .on_close = ws_on_close,
    .on_drain = ws_on_drain,
};

/* ------------------------------------------------------------------ timers */
/* A message not complete within message_timeout_ms (a client dribbling to
 * keep its part message, and its share of buffer_total, held). */
static void ws_message_expired(ws_conn *c)
{
    ws_mod *m = c->m;
    char a[RDV_ADDR_STRLEN];
    (*m->st.closed_message_timeout)++;
    RDV_LOG_RL(m->core, RDV_LOG_INFO,
               "conn %llu from %s: message not complete within %lld ms (websocket-transport.message_timeout_ms); "
               "closing (1008)",
               (unsigned long long)c->id, rdv_addr_str(&c->tcp_peer, a, sizeof a),
               (long long)m->cfg->message_timeout_ms);
    ws_msg_free(c);
    c->mskip = true; /* what still arrives of it is not stored */
    ws_close_queue(c, WSLAY_CODE_POLICY_VIOLATION, false);
    ws_pump(c);
}

static void ws_timer_cb(void *ud)
{
    ws_conn *c = ud;
    ws_mod *m = c->m;
    c->due = 0;
    if (c->dead || c->close_asked)
        return;
    c->busy++;
    if (c->resume_pending) { /* a resume asked for from inside our own input */
        if (!c->paused)
            ws_resume(c);
        else
            c->resume_pending = false;
    }
    if (c->dead || c->close_asked) {
        ws_release(c);
        return;
    }
    uint64_t now = m->core->api->now_ms(m->core), due = ws_deadline(c, now);
    if (!due || now < due) { /* activity moved the deadline: wait for the rest */
        ws_arm(c);
        ws_release(c);
        return;
    }
    uint64_t md = ws_message_deadline(c);
    if (md && now >= md) {
        ws_message_expired(c);
        ws_release(c);
        return;
    }
    if (c->owned && !c->port->lim.idle_ms) { /* no phase deadline of ours once the owner has the side */
        ws_arm(c);
        ws_release(c);
        return;
    }
    switch (c->phase) {
    case WS_HANDSHAKE: /* slow or silent client (rendezvous.md §5.2 Deviation) */
        (*m->st.hs_timeout)++;
        ws_finish(c, false);
        break;
    case WS_OPEN:
        (*m->st.closed_idle)++;
        ws_close_queue(c, WSLAY_CODE_GOING_AWAY, false);
        ws_pump(c);
        break;
    case WS_CLOSING: /* the peer never answered our close frame */
        (*m->st.closed_close_timeout)++;
        ws_finish(c, true);
        break;
    }
    ws_release(c);
}

/* ------------------------------------------------------------------ side ops (relay, module ports) */
static ws_conn *ws_side(void *tp, rdv_conn_id id)
{
    ws_conn *c = ws_find(tp, id);
    return c && !c->dead && !c->close_asked && c->owned && c->port->owner ? c : NULL;
}

static int ws_side_send(void *tp, rdv_conn_id id, const uint8_t *p, size_t n)
{
    ws_conn *c = ws_side(tp, id);
    if (!c || c->phase != WS_OPEN)
        return -ENOTCONN;
    return ws_api(c)->send_payload(ws_core(c), id, p, n);
}

/* Messages wslay had already read are delivered first, then the core
 * resumes reading (unless the relay paused again meanwhile). Never called
 * while this connection's input is being processed. */
static void ws_resume(ws_conn *c)
{
    c->resume_pending = false;
    c->busy++;
    ws_frames_in(c, NULL, 0);
    if (!c->dead && !c->close_asked && !c->paused && c->core_paused) {
        c->core_paused = false;
        ws_api(c)->conn_pause(ws_core(c), c->id, false);
    }
    ws_release(c);
}

static int ws_side_pause(void *tp, rdv_conn_id id, bool paused)
{
    ws_conn *c = ws_side(tp, id);
    if (!c)
        return -ENOTCONN;
    uint64_t now = ws_api(c)->now_ms(ws_core(c));
    bool was = c->paused;
    c->paused = paused;
    if (paused) {
        if (!was)
            c->paused_ms = now;
        c->resume_pending = false;
        if (c->core_paused)
            return 0;
        c->core_paused = true;
        return ws_api(c)->conn_pause(ws_core(c), id, true);
    }
    /* The time a part message spent paused does not count against its
     * message_timeout_ms: the pause was the relay's (a slow partner), not
     * this client's. Only that time: pausing again and again does not give
     * a fresh deadline. */
    if (was && c->mop) {
        uint64_t from = c->mstart_ms > c->paused_ms ? c->mstart_ms : c->paused_ms;
        c->mstart_ms += now - from;
    }
    if (c->in_data) {
        /* Called back from one of this side's own messages: wslay's reader
         * must not nest, and resuming the core now would hand us bytes
         * before we have returned from on_data. The reader goes on with
         * the rest of this input; the core resumes from the timer. */
        c->resume_pending = true;
        ws_arm(c); /* at once */
        return 0;
    }
    c->busy++;
    ws_resume(c);
    if (!c->dead && !c->close_asked)
        ws_rearm(c);
    ws_release(c);
    return 0;
}

static int ws_side_close(void *tp, rdv_conn_id id, uint16_t status)
{
    ws_conn *c = ws_side(tp, id);
    if (!c)
        return -ENOTCONN;
    c->busy++;
    if (status && c->phase == WS_OPEN) {
        ws_close_queue(c, status, false);
        ws_pump(c);
    } else {
        ws_finish(c, true);
    }
    ws_release(c);
    return 0;
}

const rdv_ws_side_ops ws_side_ops = {
    .send = ws_side_send,
    .pause = ws_side_pause,
    .close = ws_side_close,
};

/* ------------------------------------------------------------------ shutdown */
/* Close every connection of port (NULL: all) with 1001, those still in the
 * handshake at once. */
static void ws_close_each(ws_mod *m, const ws_port *port)
{
    /* Closing one side can close another (the relay ends pairs), so work
     * from a snapshot of ids rather than iterating the live table. */
    size_t n = HASH_COUNT(m->conns), k = 0;
    if (!n)
        return;
    rdv_conn_id *ids = malloc(n * sizeof *ids);
    ws_conn *c, *tmp;
    if (!ids) {
        /* No memory: close without close frames; on_close unlinks each.
         * Closing one may unlink others, so start over after each (slow,
         * but only here). */
        for (bool again = true; again;) {
            again = false;
            HASH_ITER(hh, m->conns, c, tmp) {
                if (port && c->port != port)
                    continue;
                if (m->core->api->conn_close(m->core, c->id, false) < 0) {
                    HASH_DEL(m->conns, c);
                    m->nconns--;
                    c->dead = true;
                    if (c->busy == 0)
                        ws_free(c);
                }
                again = true;
                break;
            }
        }
        return;
    }
    HASH_ITER(hh, m->conns, c, tmp)
        if (!port || c->port == port)
            ids[k++] = c->id;
    for (size_t i = 0; i < k; i++) {
        c = ws_find(m, ids[i]);
        if (!c || c->dead || c->close_asked)
            continue;
        (*m->st.closed_shutdown)++;
        c->busy++;
        if (c->phase == WS_OPEN) {
            ws_close_queue(c, WSLAY_CODE_GOING_AWAY, false);
            ws_pump(c);
        } else {
            ws_finish(c, c->phase == WS_CLOSING);
        }
        ws_release(c);
    }
    free(ids);
}

void ws_conn_close_all(ws_mod *m) { ws_close_each(m, NULL); }

void ws_conn_close_port(ws_mod *m, ws_port *port) { ws_close_each(m, port); }

void ws_conn_free_all(ws_mod *m)
{
    ws_conn *c, *tmp;
    HASH_ITER(hh, m->conns, c, tmp) {
        HASH_DEL(m->conns, c);
        ws_free(c);
    }
    m->nconns = m->nhandshake = 0;
    m->rdv_port.nsides = m->relay_port.nsides = 0;
}
