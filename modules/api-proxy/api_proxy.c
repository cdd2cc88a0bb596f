/* api_proxy.c — the api-proxy module: what RustDesk clients ask of the
 * rendezvous server on behalf of their API/account server (EXT profile,
 * rendezvous.md §15.5–§15.6, client-flows.md §6.6, §6.9):
 *
 *   HealthCheck (`hc`, tag 26)      kept open as a session, heartbeated
 *                                   (apx_health.c);
 *   HttpProxyRequest (tag 27)       forwarded to api_base_url, answered with
 *                                   one HttpProxyResponse (apx_http.c), or an
 *                                   error response when that is not
 *                                   configured or not allowed — never silence.
 *
 * Both arrive on keyed main-port TCP connections (secure-tcp module); with
 * require_secure (default) plaintext ones are refused. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdv/wire.h>

#include "apx.h"

/* ---- uthash's allocator and its test hook (rdv/uthash.h) */
RDV_UTHASH_HOOK_DEFINE()

static const rdv_setting apx_settings[] = {
    RDV_SETTING_STRING(apx_cfg, api_base_url, "", RDV_SETF_RELOAD,
                       "HTTP API server requests are forwarded to, e.g. \"http://127.0.0.1:21114\" "
                       "(\"\" = answer every HttpProxyRequest with an error)"),
    RDV_SETTING_INT(apx_cfg, timeout_ms, 15000, 100, 30000, RDV_SETF_RELOAD,
                    "whole upstream request, ms (clients give up after 36 s)"),
    RDV_SETTING_INT(apx_cfg, connect_timeout_ms, 5000, 100, 30000, RDV_SETF_RELOAD,
                    "connecting to the API server, ms"),
    RDV_SETTING_INT(apx_cfg, max_in_flight, 32, 1, 4096, RDV_SETF_RELOAD,
                    "requests forwarded at once; more are answered with an error"),
    RDV_SETTING_INT(apx_cfg, max_request_body, 1048576, 0, 0x3FFFFFFF, RDV_SETF_RELOAD,
                    "largest request body forwarded, bytes"),
    RDV_SETTING_INT(apx_cfg, max_response_body, 524288, 0, 0x3FFFFFFF, RDV_SETF_RELOAD,
                    "largest response body returned, bytes (must also fit core.max_frame)"),
    RDV_SETTING_INT(apx_cfg, max_headers, 64, 0, 1024, RDV_SETF_RELOAD, "headers per request and per response"),
    RDV_SETTING_INT(apx_cfg, max_header_bytes, 65536, 0, 1048576, RDV_SETF_RELOAD,
                    "header names + values per request and per response, bytes"),
    { "methods", RDV_SET_STRLIST, offsetof(apx_cfg, methods), RDV_SETF_RELOAD, 0, 0, NULL, 0, 32, 0, 0,
      "HTTP methods clients may use (empty = " APX_DEFAULT_METHODS ")" },
    RDV_SETTING_BOOL(apx_cfg, require_secure, true, RDV_SETF_RELOAD,
                     "serve HealthCheck and HttpProxyRequest only on connections keyed by secure-tcp"),
    RDV_SETTING_BOOL(apx_cfg, forward_client_ip, true, RDV_SETF_RELOAD,
                     "set X-Forwarded-For / X-Real-IP to the client's IP (the client's own are dropped)"),
    RDV_SETTING_BOOL(apx_cfg, health_check, true, RDV_SETF_RELOAD,
                     "keep HealthCheck connections open with heartbeats (false: close them, as OSS)"),
    RDV_SETTING_INT(apx_cfg, heartbeat_ms, 20000, 100, 60000, RDV_SETF_RELOAD,
                    "empty frame interval on HealthCheck connections; silent ones close after 3x"),
    RDV_SETTING_INT(apx_cfg, max_sessions, 10000, 1, 1000000, RDV_SETF_RELOAD,
                    "HealthCheck connections at once; more are closed"),
    RDV_SETTING_END,
};

static int apx_validate(const void *cfg_, char *err, size_t errlen)
{
    const apx_cfg *cfg = cfg_;
    if (cfg->api_base_url[0] && !apx_base_url_ok(cfg->api_base_url)) {
        snprintf(err, errlen,
                 "api-proxy.api_base_url must be http://host[:port][/path] or https://… without query, "
                 "fragment or spaces (got \"%s\")",
                 cfg->api_base_url);
        return -EINVAL;
    }
    const char *why;
    if (cfg->api_base_url[0] && apx_curl_load(&why) < 0) {
        snprintf(err, errlen, "api-proxy.api_base_url is set but %s", why);
        return -ENOENT;
    }
    for (size_t i = 0; i < cfg->methods.n; i++) {
        const char *m = cfg->methods.v[i];
        size_t n = strlen(m);
        bool ok = n > 0 && n < 16;
        for (size_t j = 0; ok && j < n; j++)
            ok = m[j] >= 'A' && m[j] <= 'Z';
        if (!ok) {
            snprintf(err, errlen, "api-proxy.methods: \"%s\" is not an upper-case HTTP method name", m);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- handlers */
static bool apx_conn_secure(apx *ax, rdv_conn_id conn)
{
    rdv_conn_info ci;
    return ax->core->api->conn_info(ax->core, conn, &ci) == 0 && ci.secure;
}

static int apx_on_health_check(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    (void)msg; /* the token is the API server's business; we keep nothing of it */
    return apx_hc_on_check(state, ctx);
}

static int apx_on_http_proxy(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    apx *ax = state;
    const apx_cfg *cfg = ax->cfg;
    const Hbb__HttpProxyRequest *req = ((const Hbb__RendezvousMessage *)msg)->http_proxy_request;
    (*ax->st.requests)++;
    /* Every refusal is an answer, so the client fails at once (§15.6). */
    if (!cfg->api_base_url[0]) {
        (*ax->st.not_configured)++;
        apx_reply_error(ax, ctx->conn, 501, "not supported");
        return RDV_OK;
    }
    if (cfg->require_secure && !apx_conn_secure(ax, ctx->conn)) {
        (*ax->st.insecure)++;
        apx_reply_error(ax, ctx->conn, 403, "secure connection required");
        return RDV_OK;
    }
    if (apx_http_busy(ax, ctx->conn) || ax->nreqs >= (size_t)cfg->max_in_flight) {
        (*ax->st.busy)++;
        apx_reply_error(ax, ctx->conn, 503, "too many requests in progress");
        return RDV_OK;
    }
    const char *why = NULL;
    int status = apx_http_start(ax, ctx->conn, req, ctx->peer, &why);
    if (status == 500 && strcmp(why, APX_OOM) == 0) {
        /* Nothing was kept (the request table is as it was); the client
         * gets its answer and may ask again. */
        (*ax->st.oom)++;
        RDV_LOG_RL(ax->core, RDV_LOG_WARN,
                   "out of memory: HttpProxyRequest on connection %llu not forwarded (answered 500); "
                   "fix: give rdvd more memory or lower api-proxy.max_in_flight",
                   (unsigned long long)ctx->conn);
        apx_reply_error(ax, ctx->conn, status, why);
        return RDV_OK;
    }
    if (status) {
        (*ax->st.rejected)++;
        RDV_LOG_RL(ax->core, RDV_LOG_INFO, "HttpProxyRequest refused: %s", why);
        apx_reply_error(ax, ctx->conn, status, why);
        return RDV_OK;
    }
    /* The answer must be able to arrive before the connection's idle limit. */
    int64_t idle = 0;
    if (ax->core->api->core_int(ax->core, "idle_ms", &idle) == 0 && cfg->timeout_ms + 2000 > idle)
        ax->core->api->conn_set_idle(ax->core, ctx->conn, (uint64_t)cfg->timeout_ms + 2000);
    return RDV_OK;
}

static const rdv_handler apx_handlers[] = {
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_HC, .transports = RDV_TR_TCP, .listener = APX_LISTENER,
      .fn = apx_on_health_check },
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_HTTP_PROXY_REQUEST, .transports = RDV_TR_TCP,
      .listener = APX_LISTENER, .fn = apx_on_http_proxy },
    /* Empty frames: heartbeat echoes; shared with other keep-alive users. */
    { .tag = 0, .transports = RDV_TR_TCP, .listener = APX_LISTENER, .fn = apx_hc_on_heartbeat,
      .flags = RDV_HF_SHARED },
    RDV_HANDLER_END,
};

/* ---- hooks */
static void apx_on_close(void *ud, const void *arg)
{
    apx *ax = ud;
    rdv_conn_id id = ((const rdv_conn_event *)arg)->id;
    apx_http_abort(ax, id);
    apx_hc_forget(ax, id);
}

/* ---- admin: `api-proxy` (summary) and `api-proxy sessions` */
static void apx_cmd(void *ud, int argc, char **argv, rdv_buf *out)
{
    apx *ax = ud;
    const rdv_core_api *api = ax->core->api;
    if (argc > 1 && strcmp(argv[1], "sessions") == 0) {
        uint64_t now = api->now_ms(ax->core);
        apx_session *s, *tmp;
        HASH_ITER(hh, ax->sessions, s, tmp) {
            char a[RDV_ADDR_STRLEN];
            api->out(out, "conn %llu %s %llus\n", (unsigned long long)s->conn, rdv_addr_str(&s->peer, a, sizeof a),
                     (unsigned long long)((now - s->since_ms) / 1000));
        }
        return;
    }
    if (argc > 1) {
        api->out(out, "usage: api-proxy [sessions]\n");
        return;
    }
    api->out(out, "proxy %s\nin_flight %zu/%lld\nsessions %zu/%lld\nheartbeat_ms %lld\n",
             ax->cfg->api_base_url[0] ? "configured" : "not configured", ax->nreqs,
             (long long)ax->cfg->max_in_flight, ax->nsessions, (long long)ax->cfg->max_sessions,
             (long long)ax->cfg->heartbeat_ms);
}

/* ---- stats */
static uint64_t apx_in_flight_gauge(void *ud) { return ((apx *)ud)->nreqs; }

static void apx_counters(apx *ax)
{
    rdv_core *c = ax->core;
    uint64_t *(*ctr)(rdv_core *, const char *, const char *) = c->api->counter;
    ax->st.requests = ctr(c, "requests", "HttpProxyRequests received");
    ax->st.forwarded = ctr(c, "forwarded", "upstream answers returned to the client");
    ax->st.not_configured = ctr(c, "not_configured", "answered \"not supported\": no api_base_url");
    ax->st.insecure = ctr(c, "insecure", "refused: connection not keyed (require_secure)");
    ax->st.rejected = ctr(c, "rejected", "refused: method, path, header or size not allowed");
    ax->st.busy = ctr(c, "busy", "refused: max_in_flight reached or a request already running on the connection");
    ax->st.upstream_error = ctr(c, "upstream_error", "API server unreachable or failed");
    ax->st.timeout = ctr(c, "timeout", "API server did not answer within timeout_ms");
    ax->st.too_large = ctr(c, "too_large", "upstream answer over the size limits");
    ax->st.aborted = ctr(c, "aborted", "requests dropped: client gone or shutdown");
    ax->st.hc_accepted = ctr(c, "hc_accepted", "HealthCheck sessions opened");
    ax->st.hc_refused = ctr(c, "hc_refused", "HealthCheck connections closed: not keyed or max_sessions");
    ax->st.hc_disabled = ctr(c, "hc_disabled", "HealthCheck connections closed: health_check = false");
    ax->st.heartbeats = ctr(c, "heartbeats", "empty frames sent on HealthCheck connections");
    ax->st.oom = ctr(c, "oom", "HttpProxyRequests answered 500 and HealthCheck connections closed: out of memory");
}

/* ---- lifecycle */
static void apx_destroy(void *state);

static int apx_init(rdv_core *core, const void *cfg, void **state)
{
    apx *ax = calloc(1, sizeof *ax);
    if (!ax)
        return -ENOMEM;
    ax->core = core, ax->cfg = cfg;
    apx_counters(ax);
    int r;
    if ((r = apx_http_init(ax)) < 0 || (r = apx_hc_init(ax)) < 0 ||
        (r = core->api->gauge(core, "in_flight", apx_in_flight_gauge, ax, "HttpProxyRequests being forwarded")) < 0 ||
        (r = core->api->hook_add(core, RDV_HOOK_CONN_CLOSE, 0, apx_on_close, ax)) < 0 ||
        (r = core->api->admin_command(core, "api-proxy", "api-proxy [sessions]", apx_cmd, ax)) < 0) {
        apx_destroy(ax);
        return r;
    }
    *state = ax;
    return 0;
}

static int apx_start(void *state)
{
    apx *ax = state;
    int64_t max_frame = 0;
    if (ax->core->api->core_int(ax->core, "max_frame", &max_frame) == 0 &&
        ax->cfg->max_response_body + ax->cfg->max_header_bytes + 1024 > max_frame)
        RDV_WARN(ax->core, "max_response_body + max_header_bytes exceed core.max_frame (%lld): large answers "
                           "will be replaced by an error",
                 (long long)max_frame);
    if (!ax->cfg->api_base_url[0])
        RDV_INFO(ax->core, "no api_base_url: HttpProxyRequest is answered with \"not supported\"");
    return 0;
}

static int apx_reconfigure(void *state, const void *cfg)
{
    apx *ax = state;
    int64_t old_hb = ax->cfg->heartbeat_ms;
    ax->cfg = cfg;
    apx_http_reconfigure(ax);
    apx_hc_reconfigure(ax, old_hb);
    return 0;
}

static void apx_stop(void *state)
{
    apx *ax = state;
    apx_http_abort_all(ax, "server shutting down");
}

static void apx_destroy(void *state)
{
    apx *ax = state;
    apx_http_free(ax);
    apx_hc_free(ax);
    free(ax);
}

static const rdv_module apx_module = {
    RDV_MODULE_HEAD("api-proxy", "1.0.0"),
    .description = "HealthCheck sessions and HttpProxyRequest forwarding (EXT rendezvous.md §15.5-15.6)",
    .settings = apx_settings,
    .config_size = sizeof(apx_cfg),
    .validate = apx_validate,
    .handlers = apx_handlers,
    .init = apx_init,
    .start = apx_start,
    .reconfigure = apx_reconfigure,
    .stop = apx_stop,
    .destroy = apx_destroy,
};
RDV_MODULE_EXPORT(apx_module)
