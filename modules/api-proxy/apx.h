/* apx.h — internals of the api-proxy module (HealthCheck and
 * HttpProxyRequest, rendezvous.md §15.5–§15.6), shared by its files and its
 * unit suite. Nothing here is exported from the .so. */
#ifndef RDV_APX_H
#define RDV_APX_H

#include <stddef.h>

#include <curl/curl.h>

/* Out of memory in the request and session tables refuses one operation (rdv/uthash.h). */
#define RDV_UTHASH_PREFIX apx
#include <rdv/uthash.h>

#include <rdv/core.h>
#include <rdv/proto.h>

#define APX_LISTENER "main" /* clients reach both features on the main TCP port */

typedef struct apx_cfg {
    char *api_base_url;          /* "" = proxying not configured */
    int64_t timeout_ms;          /* whole upstream exchange */
    int64_t connect_timeout_ms;
    int64_t max_in_flight;
    int64_t max_request_body;
    int64_t max_response_body;
    int64_t max_headers;         /* per direction */
    int64_t max_header_bytes;    /* per direction, names + values */
    rdv_strlist methods;         /* empty = APX_DEFAULT_METHODS */
    bool require_secure;         /* both features only on keyed connections */
    bool forward_client_ip;      /* X-Forwarded-For / X-Real-IP = the client's IP */
    bool health_check;           /* accept HealthCheck (false: close, as OSS) */
    int64_t heartbeat_ms;
    int64_t max_sessions;
} apx_cfg;

#define APX_DEFAULT_METHODS "GET, POST, PUT, PATCH, DELETE"

/* The error text of a request refused for lack of memory (status 500);
 * the handler counts those as `oom`, not `rejected`. */
#define APX_OOM "out of memory"


/* A socket libcurl asked us to watch. */
typedef struct apx_sock {
    struct apx *ax;
    curl_socket_t fd;
    unsigned events;             /* RDV_IO_* */
    rdv_io *io;
    struct apx_sock *prev, *next;
} apx_sock;

/* One proxied request, keyed by the client's connection. */
typedef struct apx_req {
    rdv_conn_id conn;
    struct apx *ax;
    CURL *easy;
    struct curl_slist *headers;
    char *url;
    /* the upstream's answer, bounded by max_response_body / max_header* */
    Hbb__HeaderEntry *hdrs;
    size_t nhdrs, hdr_bytes;
    uint8_t *body;
    size_t body_len, body_cap;
    bool body_overflow, hdr_overflow;
    UT_hash_handle hh;
} apx_req;

/* One HealthCheck connection (a viewer session, client-flows.md §6.6). */
typedef struct apx_session {
    rdv_conn_id conn;
    rdv_addr peer;
    uint64_t since_ms;
    UT_hash_handle hh;
} apx_session;

typedef struct apx_stats {
    uint64_t *requests, *forwarded, *not_configured, *insecure, *rejected, *busy;
    uint64_t *upstream_error, *timeout, *too_large, *aborted;
    uint64_t *hc_accepted, *hc_refused, *hc_disabled, *heartbeats;
    uint64_t *oom;
} apx_stats;

typedef struct apx {
    rdv_core *core;
    const apx_cfg *cfg;
    apx_stats st;
    /* HttpProxyRequest */
    CURLM *multi;
    rdv_timer *curl_timer;
    apx_req *reqs;
    size_t nreqs;
    apx_sock *socks;
    bool curl_ready;             /* curl_global_init succeeded */
    /* HealthCheck */
    apx_session *sessions;
    size_t nsessions;
    rdv_timer *hb_timer;
} apx;

/* ---- apx_curl.c: libcurl's entry points, from dlopen (loaded only once an
 * api_base_url is configured; see there). Call them as apx_cu.easy_init(). */
typedef struct apx_curl_api {
    CURLcode (*global_init)(long flags);
    void (*global_cleanup)(void);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *e, CURLoption o, ...);
    CURLcode (*easy_getinfo)(CURL *e, CURLINFO i, ...);
    void (*easy_cleanup)(CURL *e);
    const char *(*easy_strerror)(CURLcode rc);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_setopt)(CURLM *m, CURLMoption o, ...);
    CURLMcode (*multi_add_handle)(CURLM *m, CURL *e);
    CURLMcode (*multi_remove_handle)(CURLM *m, CURL *e);
    CURLMsg *(*multi_info_read)(CURLM *m, int *left);
    CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t fd, int ev_bitmask, int *running);
    CURLMcode (*multi_assign)(CURLM *m, curl_socket_t fd, void *p);
    CURLMcode (*multi_cleanup)(CURLM *m);
    struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
    void (*slist_free_all)(struct curl_slist *l);
} apx_curl_api;
extern apx_curl_api apx_cu;
/* 0, or -ENOENT with *err saying what is missing and the fix. Idempotent. */
int apx_curl_load(const char **err);
bool apx_curl_loaded(void);

/* ---- apx_request.c: checks and translation of an HttpProxyRequest. */
/* What to ask the upstream for. */
typedef struct apx_plan {
    char method[16];             /* upper case */
    char *url;                   /* base + path (malloc'ed) */
    struct curl_slist *headers;  /* filtered request headers + ours */
} apx_plan;

/* Check req against cfg and build the plan. Returns 0, or the HTTP status
 * of the refusal (400, 405, 413, 431, 500) with *why set to the error text. */
int apx_plan_build(const apx_cfg *cfg, const Hbb__HttpProxyRequest *req, const rdv_addr *peer, apx_plan *out,
                   const char **why);
void apx_plan_free(apx_plan *p);
/* A usable api_base_url: http(s)://authority[/path], no query or fragment,
 * no spaces or control characters. */
bool apx_base_url_ok(const char *url);
/* The client's path stays under the base: relative, no dot segments, no
 * encoded separators, no control characters or fragment. */
bool apx_path_ok(const char *path);
/* Headers a proxy must not forward (RFC 9110 §7.6.1) or that we set. */
bool apx_hop_by_hop(const char *name, size_t len);
bool apx_header_name_ok(const char *name);
bool apx_header_value_ok(const char *value);

/* ---- apx_http.c: the libcurl multi driver on the core's loop. */
int apx_http_init(apx *ax);
/* Load libcurl and start the multi handle if an api_base_url is set and
 * that has not happened yet (init, reload). -ENOENT when libcurl is
 * missing (logged with the fix). */
int apx_http_engine(apx *ax);
void apx_http_free(apx *ax);
void apx_http_reconfigure(apx *ax);
/* Forward req for conn (checks done by the caller); answers on conn later.
 * Returns 0, or the HTTP status of a refusal with *why set. */
int apx_http_start(apx *ax, rdv_conn_id conn, const Hbb__HttpProxyRequest *req, const rdv_addr *peer,
                   const char **why);
bool apx_http_busy(apx *ax, rdv_conn_id conn);
/* The client is gone: drop its request without answering. */
void apx_http_abort(apx *ax, rdv_conn_id conn);
/* Answer every request in flight with an error and drop it (shutdown). */
void apx_http_abort_all(apx *ax, const char *why);
/* Answer conn with HttpProxyResponse{status, error}. */
void apx_reply_error(apx *ax, rdv_conn_id conn, int status, const char *error);

/* ---- apx_health.c: HealthCheck sessions and their heartbeats. */
int apx_hc_init(apx *ax); /* heartbeat timer and gauge */
int apx_hc_on_check(apx *ax, const rdv_msg_ctx *ctx);
/* Tag 0 (empty frame): RDV_OK on a HealthCheck connection, else RDV_DECLINED. */
int apx_hc_on_heartbeat(void *state, const rdv_msg_ctx *ctx, const void *msg);
void apx_hc_forget(apx *ax, rdv_conn_id conn);
void apx_hc_reconfigure(apx *ax, int64_t old_heartbeat_ms);
void apx_hc_free(apx *ax);

#endif
