/* registry_stream.c — registration over a TCP or WebSocket connection
 * (EXT, rendezvous.md §15.3-§15.4, client-flows.md §2.4; R209, R220-R224).
 *
 * Clients with a proxy, WebSocket or UDP disabled keep one connection to the
 * main port (keyed by secure-tcp on TCP) and send RegisterPk on it until
 * OK; they never send RegisterPeer. Here:
 *   - RegisterPk runs the §6.2 checks with the connection's address and is
 *     answered on it with keep_alive; the connection stays open whatever
 *     the result;
 *   - on OK the peer is bound to the connection (a registry_stream record,
 *     findable by id and by connection): pushes for it go there
 *     (rdv_peer_info.conn), socket_addr is the connection's address and
 *     last_reg_time is refreshed on every frame that arrives on it (ACCESS
 *     phase), heartbeat echoes included;
 *   - one timer sends an empty frame to every bound connection each
 *     heartbeat period; a TCP one is closed by the core after three periods
 *     without a frame (conn_set_idle), a WebSocket one by the transport's
 *     own idle limit;
 *   - when the connection ends the binding goes; the peer stays online until
 *     its last refresh is online_ms old, as any registration (§15.4: "the
 *     peer is online while last_reg_time is fresh").
 * Heartbeat echoes (empty frames) from connections that are not ours are
 * declined, so another keep-alive user (api-proxy's HealthCheck) or the
 * core's OSS close handles them. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

/* ------------------------------------------------------------------ records */
registry_stream *registry_stream_by_id(registry *reg, const char *id, size_t n)
{
    registry_stream *s = NULL;
    HASH_FIND(hh, reg->binds, id, n, s);
    return s;
}

static registry_stream *registry_stream_by_conn(registry *reg, rdv_conn_id conn)
{
    registry_stream *s = NULL;
    if (conn)
        HASH_FIND(hh_conn, reg->streams, &conn, sizeof conn, s);
    return s;
}

static void registry_stream_drop(registry *reg, registry_stream *s)
{
    HASH_DELETE(hh, reg->binds, s);
    HASH_DELETE(hh_conn, reg->streams, s);
    if (s->own && --reg->nstreams == 0)
        reg->api->timer_stop(reg->heartbeat);
    free(s);
}

static registry_stream *registry_stream_add(registry *reg, const char *id, rdv_conn_id conn)
{
    size_t n = strlen(id);
    registry_stream *s = calloc(1, sizeof *s + n + 1);
    if (!s) {
        (*reg->st.oom)++;
        return NULL;
    }
    memcpy(s->id, id, n + 1);
    s->conn = conn;
    HASH_ADD_KEYPTR(hh, reg->binds, s->id, n, s);
    if (!s->hh.tbl) {
        (*reg->st.oom)++;
        free(s);
        return NULL;
    }
    HASH_ADD(hh_conn, reg->streams, conn, sizeof s->conn, s);
    if (!s->hh_conn.tbl) {
        (*reg->st.oom)++;
        HASH_DELETE(hh, reg->binds, s);
        free(s);
        return NULL;
    }
    return s;
}

/* ------------------------------------------------------------------ timing */
/* The heartbeat period: the setting, but below half the online window (the
 * echoes keep the peer online) and half the announced keep-alive (the
 * client drops the connection after 1.5 x keep_alive of silence). */
static uint64_t registry_stream_hb(const registry *reg)
{
    uint64_t h = (uint64_t)reg->cfg->stream_heartbeat_ms, w = (uint64_t)reg->cfg->online_ms / 2,
             k = (uint64_t)reg->cfg->stream_keep_alive_s * 1000 / 2;
    if (w < h)
        h = w;
    if (k < h)
        h = k;
    return h;
}

static void registry_stream_tick(void *ud)
{
    registry *reg = ud;
    static const uint8_t none[1];
    registry_stream *s, *tmp;
    /* A failed send closes the connection; the close hook drops only s. */
    HASH_ITER(hh_conn, reg->streams, s, tmp)
        if (s->own && reg->api->send_payload(reg->core, s->conn, none, 0) == 0)
            (*reg->st.heartbeats)++;
}

/* ------------------------------------------------------------------ refresh */
static void registry_stream_refresh(registry *reg, registry_stream *s, const rdv_addr *peer)
{
    registry_peer *p = registry_find(reg, s->id, strlen(s->id));
    if (!p)
        return;
    s->peer = *peer;
    registry_expire(reg);
    registry_touch(reg, p, peer);
}

/* Every frame on a bound connection refreshes the peer (§15.4). Runs after
 * the other ACCESS checks, so a dropped message does not count. */
int registry_stream_access(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    registry *reg = state;
    if (!msg || !ctx->conn || !reg->nstreams)
        return RDV_OK;
    registry_stream *s = registry_stream_by_conn(reg, ctx->conn);
    if (s && s->own)
        registry_stream_refresh(reg, s, ctx->peer);
    return RDV_OK;
}

int registry_on_heartbeat(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    registry *reg = state;
    (void)msg;
    registry_stream *s = registry_stream_by_conn(reg, ctx->conn);
    if (!s || !s->own)
        return RDV_DECLINED;
    (*reg->st.heartbeat_echoes)++;
    return RDV_OK;
}

void registry_stream_on_close(void *ud, const void *arg)
{
    registry *reg = ud;
    const rdv_conn_event *ev = arg;
    registry_stream *s = registry_stream_by_conn(reg, ev->id);
    if (!s)
        return;
    if (s->own)
        (*reg->st.stream_closed)++;
    registry_stream_drop(reg, s);
}

/* ------------------------------------------------------------------ binding */
/* Bind id to the connection ctx->conn after an OK; 0 or -ENOMEM. */
static int registry_stream_bind(registry *reg, const rdv_msg_ctx *ctx, const char *id)
{
    registry_stream *s = registry_stream_by_conn(reg, ctx->conn);
    /* Another id on this connection (UUID_MISMATCH made the client take a
     * new one), or a set_conn binding: start over. */
    if (s && (strcmp(s->id, id) != 0 || !s->own)) {
        registry_stream_drop(reg, s);
        s = NULL;
    }
    if (!s) {
        registry_stream *old = registry_stream_by_id(reg, id, strlen(id));
        if (old) {
            /* The device reconnected (or another connection passed the
             * §6.2 checks for its id): the newest connection wins, the old
             * one is closed so it does not linger with heartbeats. */
            rdv_conn_id oc = old->conn;
            bool own = old->own;
            registry_stream_drop(reg, old);
            (*reg->st.stream_replaced)++;
            if (own)
                reg->api->conn_close(reg->core, oc, true);
        }
        if (!(s = registry_stream_add(reg, id, ctx->conn)))
            return -ENOMEM;
        s->own = true;
        s->tcp = ctx->transport == RDV_TR_TCP;
        if (reg->nstreams++ == 0)
            reg->api->timer_start(reg->heartbeat, reg->heartbeat_ms, reg->heartbeat_ms);
        /* Exempt from the 30 s request idle limit; three missed heartbeats
         * close it. WebSocket: the transport keeps its own idle timer. */
        if (s->tcp)
            reg->api->conn_set_idle(reg->core, ctx->conn, 3 * reg->heartbeat_ms);
        (*reg->st.stream_registered)++;
    }
    registry_stream_refresh(reg, s, ctx->peer);
    return 0;
}

/* TCP-mode clients always key their TCP connection first (secure_tcp is
 * mandatory for them); WebSocket is never keyed. */
static bool registry_stream_allowed(registry *reg, const rdv_msg_ctx *ctx)
{
    if (!reg->cfg->stream_register)
        return false;
    if (ctx->transport != RDV_TR_TCP || !reg->cfg->stream_require_key)
        return true;
    rdv_conn_info ci;
    return reg->api->conn_info(reg->core, ctx->conn, &ci) == 0 && ci.secure;
}

int registry_on_register_pk_stream(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    registry *reg = state;
    const Hbb__RendezvousMessage *msg = msg_;
    if (ctx->transport == RDV_TR_TCP && !registry_on_listener(reg, ctx))
        return RDV_DECLINED;
    if (!registry_stream_allowed(reg, ctx)) {
        /* OSS (rendezvous.md §4.2, R140, R150) */
        registry_reply_pk(reg, ctx, HBB__REGISTER_PK_RESPONSE__RESULT__NOT_SUPPORT, 0);
        return RDV_CLOSE;
    }
    const Hbb__RegisterPk *rk = msg->register_pk;
    if (registry_pk_ignored(reg, rk))
        return RDV_OK; /* as on UDP; the connection's idle limit still applies */
    int32_t keep_alive = (int32_t)reg->cfg->stream_keep_alive_s;
    /* Full: only bindings that replace one (same connection, or the same
     * id reconnecting) are accepted. */
    registry_stream *s = registry_stream_by_conn(reg, ctx->conn);
    registry_stream *old = registry_stream_by_id(reg, rk->id, strlen(rk->id));
    if ((!s || !s->own) && (!old || !old->own) && reg->nstreams >= (size_t)reg->cfg->stream_max) {
        (*reg->st.stream_refused_full)++;
        RDV_LOG_RL(reg->core, RDV_LOG_WARN, "%zu stream registrations (registry.stream_max): refusing %s",
                   reg->nstreams, rk->id);
        registry_reply_pk(reg, ctx, HBB__REGISTER_PK_RESPONSE__RESULT__SERVER_ERROR, keep_alive);
        return RDV_CLOSE; /* the client reconnects later */
    }
    Hbb__RegisterPkResponse__Result r = registry_register_pk(reg, rk, ctx->peer);
    if (r == HBB__REGISTER_PK_RESPONSE__RESULT__OK && registry_stream_bind(reg, ctx, rk->id) < 0)
        r = HBB__REGISTER_PK_RESPONSE__RESULT__SERVER_ERROR;
    /* Kept open whatever the result: on UUID_MISMATCH the client takes a new
     * id and asks again on this connection. */
    registry_reply_pk(reg, ctx, r, keep_alive);
    return RDV_OK;
}

/* ------------------------------------------------------------------ service, lifecycle */
int registry_stream_set_conn(registry *reg, const char *id, rdv_conn_id conn)
{
    size_t n = id ? strlen(id) : 0;
    registry_peer *p = n ? registry_find(reg, id, n) : NULL;
    if (!p || (p->flags & REG_F_COLD))
        return -ENOENT;
    registry_stream *s = registry_stream_by_id(reg, id, n);
    if (s && s->conn == conn)
        return 0;
    if (s)
        registry_stream_drop(reg, s);
    if (!conn)
        return 0;
    registry_stream *other = registry_stream_by_conn(reg, conn);
    if (other)
        registry_stream_drop(reg, other);
    return registry_stream_add(reg, id, conn) ? 0 : -ENOMEM;
}

int registry_stream_init(registry *reg)
{
    if (!(reg->heartbeat = reg->api->timer_new(reg->core, registry_stream_tick, reg)))
        return -ENOMEM;
    reg->heartbeat_ms = registry_stream_hb(reg);
    return reg->api->hook_add(reg->core, RDV_HOOK_CONN_CLOSE, 0, registry_stream_on_close, reg);
}

void registry_stream_reconfigure(registry *reg)
{
    uint64_t h = registry_stream_hb(reg);
    if (h == reg->heartbeat_ms)
        return;
    reg->heartbeat_ms = h;
    if (!reg->nstreams)
        return;
    reg->api->timer_start(reg->heartbeat, h, h);
    registry_stream *s, *tmp;
    HASH_ITER(hh_conn, reg->streams, s, tmp)
        if (s->own && s->tcp)
            reg->api->conn_set_idle(reg->core, s->conn, 3 * h);
}

void registry_stream_free(registry *reg)
{
    registry_stream *s, *tmp;
    HASH_ITER(hh, reg->binds, s, tmp) {
        HASH_DELETE(hh, reg->binds, s);
        HASH_DELETE(hh_conn, reg->streams, s);
        free(s);
    }
    reg->nstreams = 0;
    if (reg->heartbeat)
        reg->api->timer_free(reg->heartbeat);
    reg->heartbeat = NULL;
}
