/* apx_health.c — HealthCheck connections (rendezvous.md §15.5, §15.3;
 * client-flows.md §6.6; R231). A logged-in viewer keeps one open for the
 * length of a session: we never answer the HealthCheck itself, send an
 * empty frame every heartbeat_ms, accept the client's empty echoes, and
 * close the connection after 3 x heartbeat_ms without any frame from it
 * (the core's idle timer does that part). One table, one timer for all.
 * A session that cannot get memory (its record, or a table slot uthash
 * would have to create or grow) is closed and counted (`oom`); the table
 * stays as it was. */
#include <errno.h>
#include <stdlib.h>

#include <rdv/wire.h>

#include "apx.h"

static apx_session *apx_hc_find(apx *ax, rdv_conn_id conn)
{
    apx_session *s = NULL;
    HASH_FIND(hh, ax->sessions, &conn, sizeof conn, s);
    return s;
}

/* Heartbeats go out as raw empty frames, even on keyed connections
 * (the core never seals payloads of 0-1 bytes, wire.md §6.4). */
static void apx_hc_tick(void *ud)
{
    apx *ax = ud;
    static const uint8_t none[1];
    apx_session *s, *tmp;
    HASH_ITER(hh, ax->sessions, s, tmp) {
        /* A failed send closes the connection; the close hook removes s. */
        if (ax->core->api->send_payload(ax->core, s->conn, none, 0) == 0)
            (*ax->st.heartbeats)++;
    }
}

static uint64_t apx_hc_idle(const apx *ax) { return 3 * (uint64_t)ax->cfg->heartbeat_ms; }

int apx_hc_on_check(apx *ax, const rdv_msg_ctx *ctx)
{
    const rdv_core_api *api = ax->core->api;
    if (!ax->cfg->health_check) {
        (*ax->st.hc_disabled)++;
        return RDV_CLOSE; /* as OSS (rendezvous.md §4.2) */
    }
    if (apx_hc_find(ax, ctx->conn))
        return RDV_OK; /* a repeated HealthCheck changes nothing */
    rdv_conn_info ci;
    if (ax->cfg->require_secure && (api->conn_info(ax->core, ctx->conn, &ci) < 0 || !ci.secure)) {
        (*ax->st.hc_refused)++;
        RDV_LOG_RL(ax->core, RDV_LOG_INFO, "HealthCheck on a connection without key exchange; closing");
        return RDV_CLOSE;
    }
    if (ax->nsessions >= (size_t)ax->cfg->max_sessions) {
        (*ax->st.hc_refused)++;
        RDV_LOG_RL(ax->core, RDV_LOG_WARN, "%zu HealthCheck sessions (api-proxy.max_sessions): closing a new one",
                   ax->nsessions);
        return RDV_CLOSE;
    }
    apx_session *s = calloc(1, sizeof *s);
    if (s) {
        s->conn = ctx->conn, s->peer = *ctx->peer, s->since_ms = api->now_ms(ax->core);
        HASH_ADD(hh, ax->sessions, conn, sizeof s->conn, s);
        if (!s->hh.tbl) { /* uthash rolled the add back: the table is as it was */
            free(s);
            s = NULL;
        }
    }
    if (!s) {
        /* Closed like a session over max_sessions: a connection we do not
         * heartbeat would only idle out. */
        (*ax->st.oom)++;
        char a[RDV_ADDR_STRLEN];
        RDV_LOG_RL(ax->core, RDV_LOG_WARN,
                   "out of memory: HealthCheck session from %s not kept; closing (fix: give rdvd more memory "
                   "or lower api-proxy.max_sessions)",
                   rdv_addr_str(ctx->peer, a, sizeof a));
        return RDV_CLOSE;
    }
    if (ax->nsessions++ == 0)
        api->timer_start(ax->hb_timer, (uint64_t)ax->cfg->heartbeat_ms, (uint64_t)ax->cfg->heartbeat_ms);
    api->conn_set_idle(ax->core, ctx->conn, apx_hc_idle(ax));
    (*ax->st.hc_accepted)++;
    return RDV_OK;
}

/* Empty frames are heartbeat echoes on our sessions; elsewhere they are
 * someone else's business (or closed by the core, as OSS does). */
int apx_hc_on_heartbeat(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    (void)msg;
    return apx_hc_find(state, ctx->conn) ? RDV_OK : RDV_DECLINED;
}

void apx_hc_forget(apx *ax, rdv_conn_id conn)
{
    apx_session *s = apx_hc_find(ax, conn);
    if (!s)
        return;
    HASH_DELETE(hh, ax->sessions, s);
    free(s);
    if (--ax->nsessions == 0)
        ax->core->api->timer_stop(ax->hb_timer);
}

/* A new heartbeat interval applies to the running sessions too. */
void apx_hc_reconfigure(apx *ax, int64_t old_heartbeat_ms)
{
    if (ax->cfg->heartbeat_ms == old_heartbeat_ms || !ax->nsessions)
        return;
    const rdv_core_api *api = ax->core->api;
    api->timer_start(ax->hb_timer, (uint64_t)ax->cfg->heartbeat_ms, (uint64_t)ax->cfg->heartbeat_ms);
    apx_session *s, *tmp;
    HASH_ITER(hh, ax->sessions, s, tmp)
        api->conn_set_idle(ax->core, s->conn, apx_hc_idle(ax));
}

void apx_hc_free(apx *ax)
{
    apx_session *s, *tmp;
    HASH_ITER(hh, ax->sessions, s, tmp) {
        HASH_DELETE(hh, ax->sessions, s);
        free(s);
    }
    ax->nsessions = 0;
    if (ax->hb_timer)
        ax->core->api->timer_free(ax->hb_timer);
    ax->hb_timer = NULL;
}

static uint64_t apx_hc_gauge(void *ud) { return ((apx *)ud)->nsessions; }

int apx_hc_init(apx *ax)
{
    if (!(ax->hb_timer = ax->core->api->timer_new(ax->core, apx_hc_tick, ax)))
        return -ENOMEM;
    return ax->core->api->gauge(ax->core, "hc_sessions", apx_hc_gauge, ax, "open HealthCheck sessions");
}
