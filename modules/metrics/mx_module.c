/* mx_module.c — the metrics module: a Prometheus scrape endpoint on a TCP
 * port of its own (GET /metrics), showing every counter and gauge of the
 * process (rdv_core_api.stats_each, ABI 1.3) and the usual process_*
 * metrics. One request per connection: the answer closes it, so a client
 * holds nothing here between scrapes. Bounded: max_clients connections,
 * MX_HEAD_MAX bytes of request head, request_timeout_ms to send it,
 * max_response bytes of answer. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "mx.h"

RDV_UTHASH_HOOK_DEFINE()

static const rdv_setting mx_settings[] = {
    RDV_SETTING_INT(mx_cfg, port, 21120, 1, 65535, 0, "TCP port of the scrape endpoint (GET /metrics)"),
    RDV_SETTING_STRING(mx_cfg, bind, "127.0.0.1", 0,
                       "address to listen on; \"\" = all interfaces ([::] dual stack). Counters say how busy "
                       "the server is and who is refused: keep it on loopback or set token"),
    { "token", RDV_SET_STRING, offsetof(mx_cfg, token), RDV_SETF_RELOAD | RDV_SETF_SECRET, 0, 0, "", 0, 0, 0, 0,
      "\"\" = no authentication; else scrapes must send \"Authorization: Bearer <token>\" (Prometheus: "
      "authorization { credentials: ... } or bearer_token)" },
    RDV_SETTING_INT(mx_cfg, max_clients, 8, 1, 1024, RDV_SETF_RELOAD,
                    "connections at once; more are answered 503 and closed"),
    RDV_SETTING_INT(mx_cfg, request_timeout_ms, 5000, 100, 60000, RDV_SETF_RELOAD,
                    "a client must have sent its whole request head this long after connecting"),
    RDV_SETTING_INT(mx_cfg, max_response, 4194304, 65536, 268435456, RDV_SETF_RELOAD,
                    "largest answer, bytes (a larger one is 500); must fit core.write_queue_max"),
    RDV_SETTING_BOOL(mx_cfg, process_metrics, true, RDV_SETF_RELOAD,
                     "also export process_cpu_seconds_total, process_resident_memory_bytes, "
                     "process_virtual_memory_bytes, process_max_fds, process_start_time_seconds"),
    RDV_SETTING_END,
};

/* A Bearer token is a token68 (RFC 7235 §2.1): never a space or control
 * character, which also keeps it out of header-injection trouble. */
static int mx_validate(const void *cfg_, char *err, size_t errlen)
{
    const mx_cfg *cfg = cfg_;
    for (const char *t = cfg->token; t && *t; t++)
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f) {
            snprintf(err, errlen, "metrics.token: only printable ASCII without spaces (a Bearer token)");
            return -EINVAL;
        }
    return 0;
}

static int mx_check(rdv_core *core, void *state, const void *cfg_, char *err, size_t errlen)
{
    (void)state;
    const mx_cfg *cfg = cfg_;
    int64_t wq;
    if (core->api->core_int(core, "write_queue_max", &wq) == 0 && cfg->max_response > wq) {
        snprintf(err, errlen, "metrics.max_response = %lld is over core.write_queue_max = %lld: a full answer "
                 "would close the connection; lower it or raise core.write_queue_max",
                 (long long)cfg->max_response, (long long)wq);
        return -EINVAL;
    }
    return 0;
}

/* ------------------------------------------------------------------ answers */
static const char *mx_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    default: return "Service Unavailable";
    }
}

/* An error answer with a one-line body (the caller closes). */
static void mx_send_error(mx *m, rdv_conn_id id, int status)
{
    char out[512];
    const char *extra = status == 401   ? "WWW-Authenticate: Bearer realm=\"rdvd metrics\"\r\n"
                        : status == 405 ? "Allow: GET, HEAD\r\n"
                                        : "";
    const char *body = status == 404 ? "rdvd: the metrics are at /metrics\n" : "";
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     status, mx_reason(status), extra, strlen(body), body);
    m->core->api->send_bytes(m->core, id, (const uint8_t *)out, (size_t)n);
}

/* The same, then close once it is written. */
static void mx_answer_error(mx *m, rdv_conn_id id, int status)
{
    mx_send_error(m, id, status);
    m->core->api->conn_close(m->core, id, true);
}

static void mx_answer_metrics(mx *m, rdv_conn_id id, bool head)
{
    const rdv_core_api *api = m->core->api;
    rdv_text o = { .limit = (size_t)m->cfg->max_response };
    mx_render(m->core, &o, &m->proc, m->cfg->process_metrics, m->st.collisions);
    if (o.cut) {
        (*m->st.response_too_large)++;
        RDV_LOG_RL(m->core, RDV_LOG_ERR, "the metrics do not fit metrics.max_response = %lld bytes (or no "
                   "memory): answered 500; raise max_response", (long long)m->cfg->max_response);
        rdv_text_free(&o);
        mx_answer_error(m, id, 500);
        return;
    }
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                     o.len);
    (*m->st.scrapes)++;
    if (api->send_bytes(m->core, id, (const uint8_t *)hdr, (size_t)n) == 0 && !head && o.len)
        api->send_bytes(m->core, id, (const uint8_t *)o.p, o.len);
    rdv_text_free(&o);
    api->conn_close(m->core, id, true);
}

/* ------------------------------------------------------------------ connections */
static mx_conn *mx_find(mx *m, rdv_conn_id id)
{
    mx_conn *c = NULL;
    HASH_FIND(hh, m->conns, &id, sizeof id, c);
    return c;
}

static void mx_timeout(void *ud)
{
    mx_conn *c = ud;
    mx *m = c->m;
    if (c->answered)
        return;
    c->answered = true;
    (*m->st.timeouts)++;
    mx_answer_error(m, c->id, 408);
}

static int mx_on_open(void *ud, rdv_conn_id id, const rdv_addr *peer)
{
    mx *m = ud;
    const rdv_core_api *api = m->core->api;
    (void)peer;
    if (m->stopping)
        return RDV_CLOSE;
    if ((int64_t)m->nconns >= m->cfg->max_clients) {
        (*m->st.busy)++;
        RDV_LOG_RL(m->core, RDV_LOG_WARN, "metrics.max_clients = %lld connections already open: answered 503",
                   (long long)m->cfg->max_clients);
        mx_send_error(m, id, 503);
        return RDV_CLOSE; /* the core writes the answer, then closes */
    }
    mx_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->timer = api->timer_new(m->core, mx_timeout, c))) {
        free(c);
        (*m->st.oom)++;
        return RDV_CLOSE;
    }
    c->id = id, c->m = m;
    mx_req_init(&c->req);
    HASH_ADD(hh, m->conns, id, sizeof c->id, c);
    if (!c->hh.tbl) {
        api->timer_free(c->timer);
        free(c);
        (*m->st.oom)++;
        return RDV_CLOSE;
    }
    m->nconns++;
    api->conn_set_idle(m->core, id, 0); /* our deadline: the whole head by request_timeout_ms */
    api->timer_start(c->timer, (uint64_t)m->cfg->request_timeout_ms, 0);
    return RDV_OK;
}

static long mx_on_data(void *ud, rdv_conn_id id, const uint8_t *p, size_t n)
{
    mx *m = ud;
    mx_conn *c = mx_find(m, id);
    if (!c || c->answered) /* after the answer: discard until the close */
        return (long)n;
    mx_req_state st = mx_req_feed(&c->req, p, n);
    if (st == MX_REQ_MORE)
        return (long)n;
    c->answered = true;
    m->core->api->timer_stop(c->timer);
    if (st == MX_REQ_BAD) {
        (*m->st.bad_requests)++;
        RDV_LOG_RL(m->core, RDV_LOG_INFO, "not an HTTP/1.x request (%s): answered 400",
                   HTTP_PARSER_ERRNO(&c->req.hp) == HPE_PAUSED ? "HTTP version" : http_errno_name(HTTP_PARSER_ERRNO(&c->req.hp)));
        mx_answer_error(m, id, 400);
    } else if (st == MX_REQ_TOO_LARGE) {
        (*m->st.too_large)++;
        mx_answer_error(m, id, 431);
    } else {
        int status = mx_req_status(&c->req, m->cfg->token);
        if (status == 200)
            mx_answer_metrics(m, id, c->req.method == HTTP_HEAD);
        else {
            (*(status == 401 ? m->st.unauthorized : status == 405 ? m->st.bad_method : m->st.not_found))++;
            mx_answer_error(m, id, status);
        }
    }
    return (long)n;
}

static void mx_on_close(void *ud, rdv_conn_id id, rdv_close_reason why)
{
    (void)why;
    mx *m = ud;
    mx_conn *c = mx_find(m, id);
    if (!c)
        return;
    HASH_DELETE(hh, m->conns, c);
    m->nconns--;
    m->core->api->timer_free(c->timer);
    free(c);
}

static const rdv_conn_ops mx_ops = {
    .on_open = mx_on_open,
    .on_data = mx_on_data,
    .on_close = mx_on_close,
};

/* ------------------------------------------------------------------ lifecycle */
static uint64_t mx_gauge_conns(void *ud) { return ((mx *)ud)->nconns; }

static int mx_init(rdv_core *core, const void *cfg, void **state)
{
    if (sodium_init() < 0)
        return -EIO;
    mx *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->core = core, m->cfg = cfg;
    const rdv_core_api *api = core->api;
    struct { uint64_t **v; const char *name, *help; } cs[] = {
        { &m->st.scrapes, "scrapes", "GET/HEAD /metrics answered 200" },
        { &m->st.unauthorized, "unauthorized", "requests without the right Bearer token (401)" },
        { &m->st.bad_requests, "bad_requests", "requests that were not HTTP/1.x (400)" },
        { &m->st.not_found, "not_found", "paths other than /metrics (404)" },
        { &m->st.bad_method, "bad_method", "methods other than GET and HEAD (405)" },
        { &m->st.too_large, "too_large", "request heads over 8 KiB (431)" },
        { &m->st.busy, "busy", "connections over max_clients (503)" },
        { &m->st.timeouts, "timeouts", "request heads not complete within request_timeout_ms (408)" },
        { &m->st.response_too_large, "response_too_large", "answers over max_response (500)" },
        { &m->st.collisions, "name_collisions",
          "stats left out because another one had the same Prometheus name" },
        { &m->st.oom, "oom", "connections refused for want of memory" },
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        *cs[i].v = api->counter(core, cs[i].name, cs[i].help);
    api->gauge(core, "connections", mx_gauge_conns, m, "scrape connections open");
    m->proc.start_time_s = mx_proc_start_time();
    *state = m;
    return 0;
}

static bool mx_loopback(const char *bind)
{
    uint8_t a[16];
    if (inet_pton(AF_INET, bind, a) == 1)
        return a[0] == 127;
    return inet_pton(AF_INET6, bind, a) == 1 && memcmp(a, in6addr_loopback.s6_addr, 16) == 0;
}

static int mx_start(void *state)
{
    mx *m = state;
    rdv_listen_spec spec = {
        .name = "metrics",
        .transport = RDV_TR_TCP,
        .bind = m->cfg->bind,
        .port = (int)m->cfg->port,
        .mode = RDV_LISTEN_RAW,
        .max_buffer = 4096, /* every byte is consumed at once; the head bound is MX_HEAD_MAX */
        .ops = &mx_ops,
        .ud = m,
    };
    if (!(m->l = m->core->api->listen(m->core, &spec)))
        return -EADDRNOTAVAIL; /* the core logged the address, port and reason */
    if (!*m->cfg->token && !mx_loopback(m->cfg->bind))
        RDV_WARN(m->core, "metrics.bind = \"%s\" with no metrics.token: anyone who reaches port %lld reads the "
                 "server's counters; set a token or bind to 127.0.0.1", m->cfg->bind, (long long)m->cfg->port);
    RDV_INFO(m->core, "Prometheus metrics at http://%s:%lld/metrics%s", *m->cfg->bind ? m->cfg->bind : "[::]",
             (long long)m->cfg->port, *m->cfg->token ? " (Bearer token)" : "");
    return 0;
}

static int mx_reconfigure(void *state, const void *cfg)
{
    ((mx *)state)->cfg = cfg;
    return 0;
}

static void mx_stop(void *state) { ((mx *)state)->stopping = true; }

static void mx_destroy(void *state)
{
    mx *m = state;
    mx_conn *c, *tmp;
    HASH_ITER(hh, m->conns, c, tmp) {
        HASH_DELETE(hh, m->conns, c);
        m->core->api->timer_free(c->timer);
        free(c);
    }
    free(m);
}

static const rdv_module mx_module = {
    RDV_MODULE_HEAD("metrics", RDV_MX_VERSION),
    .description = "Prometheus scrape endpoint: every counter and gauge, and process metrics",
    .settings = mx_settings,
    .config_size = sizeof(mx_cfg),
    .validate = mx_validate,
    .init = mx_init,
    .start = mx_start,
    .reconfigure = mx_reconfigure,
    .stop = mx_stop,
    .destroy = mx_destroy,
    .check = mx_check,
};
RDV_MODULE_EXPORT(mx_module)
