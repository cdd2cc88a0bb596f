/* mx.h — the metrics module's private declarations (modules/metrics). */
#ifndef RDV_MX_H
#define RDV_MX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

#include <rdv/core.h>
#include <rdv/module.h>
#include <rdv/wire.h>
#define RDV_UTHASH_PREFIX mx
#include <rdv/uthash.h>

typedef struct mx_cfg {
    int64_t port;
    const char *bind;
    const char *token;
    int64_t max_clients;
    int64_t request_timeout_ms;
    int64_t max_response;
    bool process_metrics;
} mx_cfg;

/* ------------------------------------------------------------------ request (mx_http.c) */
#define MX_HEAD_MAX 8192   /* request line + headers; more is 431 */
#define MX_PATH_MAX 256
#define MX_AUTH_MAX 512

typedef enum mx_req_state {
    MX_REQ_MORE = 0,   /* head not complete yet */
    MX_REQ_DONE,       /* head complete: answer it */
    MX_REQ_BAD,        /* not HTTP/1.x: 400 */
    MX_REQ_TOO_LARGE,  /* head over MX_HEAD_MAX: 431 */
} mx_req_state;

/* One request head, fed in pieces (the parser keeps its own state). */
typedef struct mx_req {
    http_parser hp;
    size_t head_bytes;
    mx_req_state state;
    unsigned method;             /* enum http_method */
    char path[MX_PATH_MAX];      /* without the query; cut when longer */
    bool path_long;
    char auth[MX_AUTH_MAX];      /* Authorization value; "" if absent */
    bool auth_long, auth_seen;
    char field[16];              /* the header name being read, lower case */
    size_t flen;
    bool field_long, in_value, cur_auth;
} mx_req;

void mx_req_init(mx_req *r);
/* Feed bytes; returns the state after them. Bytes after the head are
 * ignored (one request per connection: the answer closes it). */
mx_req_state mx_req_feed(mx_req *r, const uint8_t *p, size_t n);
/* The answer's status for a finished head: 200 (serve metrics), 404, 405,
 * 401 (token wrong or missing). token "" = no token required. */
int mx_req_status(const mx_req *r, const char *token);

/* ------------------------------------------------------------------ text (mx_text.c) */
/* "rdvd_" + name with every character outside [A-Za-z0-9_] as '_'
 * ("ip-blocker.banned_msgs" -> "rdvd_ip_blocker_banned_msgs"); counters get
 * "_total". Returns the length, or 0 if it does not fit. */
size_t mx_metric_name(const char *stat, bool counter, char *out, size_t len);
/* The exposition (Prometheus text format 0.0.4) of every stat, then the
 * process metrics if asked, into o (o->cut: over its limit or no memory).
 * Counts names that collided after mapping (the later one is left out: a
 * scrape with a name twice is refused whole). */
typedef struct mx_proc {
    double start_time_s; /* process start, seconds since the epoch; <= 0 unknown */
} mx_proc;
void mx_render(rdv_core *core, rdv_text *o, const mx_proc *proc, bool process_metrics, uint64_t *collisions);
/* Process start time from /proc (seconds since the epoch), or -1. */
double mx_proc_start_time(void);

/* ------------------------------------------------------------------ module (mx_module.c) */
typedef struct mx_conn {
    rdv_conn_id id;
    struct mx *m;
    rdv_timer *timer;
    mx_req req;
    bool answered;
    UT_hash_handle hh;
} mx_conn;

typedef struct mx_stats {
    uint64_t *scrapes, *unauthorized, *bad_requests, *not_found, *bad_method, *too_large, *busy, *timeouts,
        *response_too_large, *collisions, *oom;
} mx_stats;

typedef struct mx {
    rdv_core *core;
    const mx_cfg *cfg;
    rdv_listener *l;
    mx_conn *conns;
    size_t nconns;
    bool stopping;
    mx_proc proc;
    mx_stats st;
} mx;

#endif
