/* apx_http.c — HttpProxyRequest forwarded with libcurl's multi interface
 * driven by the core's loop: curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION -> api->io_new/io_set/io_free) and when to call
 * it back (CURLMOPT_TIMERFUNCTION -> one core timer); readiness goes back
 * through curl_multi_socket_action. Nothing blocks the loop thread.
 *
 * Every request is bounded: max_in_flight at once, one per connection, the
 * body and headers both ways, and timeout_ms overall. The answer is one
 * HttpProxyResponse on the client's connection (sealed by the core if the
 * connection is keyed); a client that went away is simply dropped. A
 * request that cannot get memory (its record, or a slot in the request
 * table) is answered 500 "out of memory" with nothing kept. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include <rdv/wire.h>

#include "apx.h"

/* ------------------------------------------------------------------ replies */
static int apx_send_response(apx *ax, rdv_conn_id conn, const Hbb__HttpProxyResponse *resp)
{
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_HTTP_PROXY_RESPONSE;
    m.http_proxy_response = (Hbb__HttpProxyResponse *)resp;
    return ax->core->api->send(ax->core, conn, &m);
}

void apx_reply_error(apx *ax, rdv_conn_id conn, int status, const char *error)
{
    Hbb__HttpProxyResponse r = HBB__HTTP_PROXY_RESPONSE__INIT;
    r.status = status;
    r.error = (char *)error;
    apx_send_response(ax, conn, &r);
}

/* ------------------------------------------------------------------ requests */
static apx_req *apx_req_find(apx *ax, rdv_conn_id conn)
{
    apx_req *rq = NULL;
    HASH_FIND(hh, ax->reqs, &conn, sizeof conn, rq);
    return rq;
}

bool apx_http_busy(apx *ax, rdv_conn_id conn) { return apx_req_find(ax, conn) != NULL; }

static void apx_req_free(apx_req *rq)
{
    if (rq->easy)
        apx_cu.easy_cleanup(rq->easy);
    if (rq->headers)
        apx_cu.slist_free_all(rq->headers);
    for (size_t i = 0; i < rq->nhdrs; i++) {
        free(rq->hdrs[i].name);
        free(rq->hdrs[i].value);
    }
    free(rq->hdrs);
    free(rq->body);
    free(rq->url);
    free(rq);
}

/* Unlink from the table and from curl; the caller frees. */
static void apx_req_detach(apx *ax, apx_req *rq)
{
    HASH_DELETE(hh, ax->reqs, rq);
    ax->nreqs--;
    apx_cu.multi_remove_handle(ax->multi, rq->easy);
}

/* CURLOPT_WRITEFUNCTION: keep the body up to max_response_body. */
static size_t apx_on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    apx_req *rq = ud;
    size_t n = size * nmemb;
    size_t cap = (size_t)rq->ax->cfg->max_response_body;
    if (n > cap - rq->body_len) {
        rq->body_overflow = true;
        return 0; /* aborts the transfer (CURLE_WRITE_ERROR) */
    }
    if (rq->body_len + n > rq->body_cap) {
        size_t nc = rq->body_cap ? rq->body_cap : 4096;
        while (nc < rq->body_len + n)
            nc *= 2;
        if (nc > cap)
            nc = cap;
        uint8_t *nb = realloc(rq->body, nc);
        if (!nb)
            return 0;
        rq->body = nb, rq->body_cap = nc;
    }
    memcpy(rq->body + rq->body_len, p, n);
    rq->body_len += n;
    return n;
}

static void apx_drop_headers(apx_req *rq)
{
    for (size_t i = 0; i < rq->nhdrs; i++) {
        free(rq->hdrs[i].name);
        free(rq->hdrs[i].value);
    }
    rq->nhdrs = 0, rq->hdr_bytes = 0;
}

static char *apx_strndup(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

/* CURLOPT_HEADERFUNCTION: one header line at a time. A status line starts
 * a new block (after a 1xx), so only the final block's headers are kept.
 * Hop-by-hop headers are ours to drop; lines that are not valid UTF-8
 * could not go into a protobuf string and are dropped too. */
static size_t apx_on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    apx_req *rq = ud;
    const apx_cfg *cfg = rq->ax->cfg;
    size_t n = size * nmemb, len = n;
    while (len && (p[len - 1] == '\r' || p[len - 1] == '\n'))
        len--;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        apx_drop_headers(rq);
        return n;
    }
    const char *colon = memchr(p, ':', len);
    if (!len || !colon || colon == p || *p == ' ' || *p == '\t')
        return n; /* end of block, not a header, or an obsolete folded line */
    size_t nl = (size_t)(colon - p);
    const char *v = colon + 1, *ve = p + len;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    if (apx_hop_by_hop(p, nl) || !rdv_utf8_valid((const uint8_t *)p, len) || memchr(p, 0, len))
        return n;
    if (rq->nhdrs >= (size_t)cfg->max_headers || rq->hdr_bytes + nl + (size_t)(ve - v) > (size_t)cfg->max_header_bytes) {
        rq->hdr_overflow = true;
        return 0; /* aborts the transfer */
    }
    Hbb__HeaderEntry *nh = realloc(rq->hdrs, (rq->nhdrs + 1) * sizeof *nh);
    if (!nh)
        return 0;
    rq->hdrs = nh;
    Hbb__HeaderEntry *h = &rq->hdrs[rq->nhdrs];
    hbb__header_entry__init(h);
    h->name = apx_strndup(p, nl);
    h->value = apx_strndup(v, (size_t)(ve - v));
    if (!h->name || !h->value || !apx_header_name_ok(h->name)) {
        bool oom = !h->name || !h->value;
        free(h->name);
        free(h->value);
        return oom ? 0 : n; /* a malformed name is dropped, not forwarded */
    }
    rq->nhdrs++;
    rq->hdr_bytes += nl + (size_t)(ve - v);
    return n;
}

/* A finished transfer: answer the client and free everything. */
static void apx_finish(apx *ax, apx_req *rq, CURLcode rc)
{
    apx_req_detach(ax, rq);
    rdv_conn_id conn = rq->conn;
    if (rc == CURLE_OK) {
        long status = 0;
        apx_cu.easy_getinfo(rq->easy, CURLINFO_RESPONSE_CODE, &status);
        Hbb__HeaderEntry **ptrs = calloc(rq->nhdrs + 1, sizeof *ptrs);
        for (size_t i = 0; ptrs && i < rq->nhdrs; i++)
            ptrs[i] = &rq->hdrs[i];
        Hbb__HttpProxyResponse r = HBB__HTTP_PROXY_RESPONSE__INIT;
        r.status = (int32_t)status;
        r.n_headers = rq->nhdrs;
        r.headers = ptrs;
        r.body.data = rq->body;
        r.body.len = rq->body_len;
        int s = ptrs ? apx_send_response(ax, conn, &r) : -ENOMEM;
        free(ptrs);
        if (s == -ENOMEM) {
            (*ax->st.upstream_error)++;
            apx_reply_error(ax, conn, 500, "out of memory");
        } else if (s == -EMSGSIZE) {
            (*ax->st.too_large)++;
            apx_reply_error(ax, conn, 502, "upstream response too large for the connection (core.max_frame)");
        } else if (s == 0) {
            (*ax->st.forwarded)++;
        } else {
            (*ax->st.aborted)++;
        }
    } else if (rq->body_overflow || rq->hdr_overflow || rc == CURLE_FILESIZE_EXCEEDED) {
        (*ax->st.too_large)++;
        apx_reply_error(ax, conn, 502, rq->hdr_overflow ? "upstream headers too large" : "upstream response too large");
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        (*ax->st.timeout)++;
        apx_reply_error(ax, conn, 504, "upstream timed out");
    } else {
        (*ax->st.upstream_error)++;
        char text[160];
        snprintf(text, sizeof text, "upstream unreachable: %s", apx_cu.easy_strerror(rc));
        RDV_LOG_RL(ax->core, RDV_LOG_WARN, "request to the API server failed: %s", apx_cu.easy_strerror(rc));
        apx_reply_error(ax, conn, 502, text);
    }
    apx_req_free(rq);
}

static void apx_collect(apx *ax)
{
    CURLMsg *msg;
    int left;
    while ((msg = apx_cu.multi_info_read(ax->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURLcode rc = msg->data.result; /* msg dies with remove_handle */
        apx_req *rq = NULL;
        apx_cu.easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&rq);
        if (rq)
            apx_finish(ax, rq, rc);
    }
}

/* ------------------------------------------------------------------ curl <-> loop */
static void apx_on_io(void *ud, int fd, unsigned revents)
{
    apx_sock *sk = ud;
    apx *ax = sk->ax; /* sk may be freed inside socket_action */
    int flags = ((revents & RDV_IO_READ) ? CURL_CSELECT_IN : 0) | ((revents & RDV_IO_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    apx_cu.multi_socket_action(ax->multi, fd, flags, &running);
    apx_collect(ax);
}

static void apx_sock_free(apx *ax, apx_sock *sk)
{
    DL_DELETE(ax->socks, sk);
    ax->core->api->io_free(sk->io);
    free(sk);
}

static int apx_on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)e;
    apx *ax = userp;
    apx_sock *sk = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sk) {
            apx_cu.multi_assign(ax->multi, fd, NULL);
            apx_sock_free(ax, sk);
        }
        return 0;
    }
    unsigned ev = ((what & CURL_POLL_IN) ? RDV_IO_READ : 0) | ((what & CURL_POLL_OUT) ? RDV_IO_WRITE : 0);
    if (!sk) {
        if (!(sk = calloc(1, sizeof *sk)))
            return -1;
        sk->ax = ax, sk->fd = fd;
        if (!(sk->io = ax->core->api->io_new(ax->core, fd, ev, apx_on_io, sk))) {
            free(sk);
            return -1;
        }
        DL_APPEND(ax->socks, sk);
        apx_cu.multi_assign(ax->multi, fd, sk);
    } else {
        ax->core->api->io_set(sk->io, ev);
    }
    sk->events = ev;
    return 0;
}

/* curl only asks for a wake-up here; the work happens in the timer callback. */
static int apx_on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    apx *ax = userp;
    if (timeout_ms < 0)
        ax->core->api->timer_stop(ax->curl_timer);
    else
        ax->core->api->timer_start(ax->curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static void apx_on_timer(void *ud)
{
    apx *ax = ud;
    int running;
    apx_cu.multi_socket_action(ax->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    apx_collect(ax);
}

/* ------------------------------------------------------------------ start */
static int apx_easy_setup(apx *ax, apx_req *rq, const apx_plan *plan, const Hbb__HttpProxyRequest *req)
{
    const apx_cfg *cfg = ax->cfg;
    CURL *e = rq->easy;
    CURLcode rc = CURLE_OK;
#define APX_OPT(o, v) \
    if (rc == CURLE_OK) \
    rc = apx_cu.easy_setopt(e, o, v)
    APX_OPT(CURLOPT_URL, rq->url);
    APX_OPT(CURLOPT_PRIVATE, (char *)rq);
    APX_OPT(CURLOPT_NOSIGNAL, 1L);
    APX_OPT(CURLOPT_PROTOCOLS_STR, "http,https");
    APX_OPT(CURLOPT_FOLLOWLOCATION, 0L); /* a redirect goes back to the client, never followed here */
    APX_OPT(CURLOPT_PROXY, "");          /* the API server is reached directly, whatever the environment says */
    APX_OPT(CURLOPT_TIMEOUT_MS, (long)cfg->timeout_ms);
    APX_OPT(CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout_ms);
    APX_OPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)cfg->max_response_body);
    APX_OPT(CURLOPT_HTTPHEADER, rq->headers);
    APX_OPT(CURLOPT_HEADERFUNCTION, apx_on_header);
    APX_OPT(CURLOPT_HEADERDATA, rq);
    APX_OPT(CURLOPT_WRITEFUNCTION, apx_on_body);
    APX_OPT(CURLOPT_WRITEDATA, rq);
    if (strcmp(plan->method, "HEAD") == 0) {
        APX_OPT(CURLOPT_NOBODY, 1L);
    } else if (strcmp(plan->method, "GET") == 0 && req->body.len == 0) {
        APX_OPT(CURLOPT_HTTPGET, 1L);
    } else {
        /* Any other method, or a body: curl copies the body now. */
        APX_OPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body.len);
        APX_OPT(CURLOPT_COPYPOSTFIELDS, req->body.len ? (const char *)req->body.data : "");
        APX_OPT(CURLOPT_CUSTOMREQUEST, plan->method);
    }
#undef APX_OPT
    return rc == CURLE_OK ? 0 : -EINVAL;
}

int apx_http_start(apx *ax, rdv_conn_id conn, const Hbb__HttpProxyRequest *req, const rdv_addr *peer,
                   const char **why)
{
    if (!ax->multi) { /* cannot happen: validate refuses a base URL without libcurl */
        *why = "API proxy unavailable";
        return 503;
    }
    apx_plan plan;
    int status = apx_plan_build(ax->cfg, req, peer, &plan, why);
    if (status)
        return status;
    apx_req *rq = calloc(1, sizeof *rq);
    if (!rq || !(rq->easy = apx_cu.easy_init())) {
        free(rq);
        apx_plan_free(&plan);
        *why = APX_OOM;
        return 500;
    }
    rq->conn = conn, rq->ax = ax;
    rq->url = plan.url, rq->headers = plan.headers; /* owned by rq from here */
    if (apx_easy_setup(ax, rq, &plan, req) < 0) {
        apx_req_free(rq);
        *why = "cannot start the upstream request";
        return 500;
    }
    /* Into the table before curl hears of it: a failed add (uthash rolled it
     * back, the table is as it was) then only has rq to free. */
    HASH_ADD(hh, ax->reqs, conn, sizeof rq->conn, rq);
    if (!rq->hh.tbl) {
        apx_req_free(rq);
        *why = APX_OOM;
        return 500;
    }
    if (apx_cu.multi_add_handle(ax->multi, rq->easy) != CURLM_OK) {
        HASH_DELETE(hh, ax->reqs, rq);
        apx_req_free(rq);
        *why = "cannot start the upstream request";
        return 500;
    }
    ax->nreqs++;
    return 0;
}

void apx_http_abort(apx *ax, rdv_conn_id conn)
{
    apx_req *rq = apx_req_find(ax, conn);
    if (!rq)
        return;
    apx_req_detach(ax, rq);
    apx_req_free(rq);
    (*ax->st.aborted)++;
}

void apx_http_abort_all(apx *ax, const char *why)
{
    apx_req *rq, *tmp;
    HASH_ITER(hh, ax->reqs, rq, tmp) {
        apx_req_detach(ax, rq);
        rdv_conn_id conn = rq->conn;
        apx_req_free(rq);
        if (why)
            apx_reply_error(ax, conn, 503, why);
        (*ax->st.aborted)++;
    }
}

/* ------------------------------------------------------------------ lifecycle */
int apx_http_init(apx *ax)
{
    return apx_http_engine(ax);
}

int apx_http_engine(apx *ax)
{
    if (ax->multi || !ax->cfg->api_base_url[0])
        return 0;
    const char *err;
    if (apx_curl_load(&err) < 0) {
        RDV_ERR(ax->core, "api-proxy.api_base_url is set but %s", err);
        return -ENOENT;
    }
    if (!ax->curl_ready) {
        if (apx_cu.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return -EIO;
        ax->curl_ready = true;
    }
    if (!ax->curl_timer && !(ax->curl_timer = ax->core->api->timer_new(ax->core, apx_on_timer, ax)))
        return -ENOMEM;
    if (!(ax->multi = apx_cu.multi_init()))
        return -ENOMEM;
    apx_cu.multi_setopt(ax->multi, CURLMOPT_SOCKETFUNCTION, apx_on_curl_socket);
    apx_cu.multi_setopt(ax->multi, CURLMOPT_SOCKETDATA, ax);
    apx_cu.multi_setopt(ax->multi, CURLMOPT_TIMERFUNCTION, apx_on_curl_timer);
    apx_cu.multi_setopt(ax->multi, CURLMOPT_TIMERDATA, ax);
    RDV_INFO(ax->core, "libcurl loaded for api_base_url");
    apx_http_reconfigure(ax);
    return 0;
}

void apx_http_reconfigure(apx *ax)
{
    if (!ax->multi && apx_http_engine(ax) < 0)
        return; /* logged; requests are answered 503 */
    /* Idle connections kept to the API server for reuse. */
    if (ax->multi)
        apx_cu.multi_setopt(ax->multi, CURLMOPT_MAXCONNECTS, (long)ax->cfg->max_in_flight);
}

void apx_http_free(apx *ax)
{
    if (ax->multi) {
        apx_http_abort_all(ax, NULL);
        apx_cu.multi_cleanup(ax->multi);
        ax->multi = NULL;
    }
    while (ax->socks) /* sockets curl never asked us to forget */
        apx_sock_free(ax, ax->socks);
    if (ax->curl_timer)
        ax->core->api->timer_free(ax->curl_timer);
    ax->curl_timer = NULL;
    if (ax->curl_ready)
        apx_cu.global_cleanup();
    ax->curl_ready = false;
}
