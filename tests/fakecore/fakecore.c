/* fakecore.c — rdv_core_api without sockets or an event loop (fakecore.h).
 *
 * Everything lives in plain lists owned by fc_core; tests are small, so
 * linear scans keep the code obvious. Allocation failure aborts: in a test
 * there is nothing better to do. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "fakecore.h"

#define FC_MAX_FRAME 1048576       /* core_int("max_frame") */
#define FC_IDLE_MS 30000           /* core_int("idle_ms") */
#define FC_RAW_BUFFER 65536        /* RAW read buffer when the spec says 0 */
#define FC_ARENA_CAP (FC_MAX_FRAME * 8 + 65536) /* unpack arena, as the real core sizes it */
#define FC_UDP_MAX 65507
#define FC_STR_MAX 4096            /* STRING / STRLIST cap when max is 0 */
#define FC_ADMIN_ARGS 64
#define FC_TRUNCATED "\n[truncated]\n"
#define FC_ADMIN_LIMIT (1u << 20)  /* admin_exec answer cap, as the real core */

/* ------------------------------------------------------------------ types */
typedef struct fc_hd { /* a module's rdv_core handle */
    rdv_core base;     /* first: the api receives &base */
    fc_core *fc;
    char *name;
    struct fc_hd *next;
} fc_hd;

typedef struct fc_mod { /* a loaded module */
    const rdv_module *m;
    fc_hd *h;
    void *cfg, *state;
    bool inited;
    struct fc_mod *next;
} fc_mod;

struct rdv_listener {
    char *name;
    rdv_transport transport;
    int port;
    rdv_listen_mode mode;
    const rdv_conn_ops *ops; /* NULL for dispatch listeners */
    void *ud;
    size_t max_buffer;
    fc_hd *owner;            /* NULL = core listener */
    rdv_listener *next;
};

typedef struct fc_conn_rec {
    fc_conn_state st;        /* first: fc_conn() returns &st */
    int fd;
    uint8_t *rbuf;           /* RAW: bytes on_data has not consumed */
    size_t rlen;
    uint64_t opened_ms, bytes_in, bytes_out;
    size_t wqueue;           /* what conn_info reports (fc_conn_set_wqueue) */
} fc_conn_rec;

struct rdv_timer {
    fc_core *fc;
    fc_hd *owner;
    void (*cb)(void *ud);
    void *ud;
    bool active;
    uint64_t due, repeat, seq;
    rdv_timer *prev, *next;
};

struct rdv_io {
    fc_core *fc;
    fc_hd *owner;
    int fd;
    unsigned events;
    void (*cb)(void *ud, int fd, unsigned revents);
    void *ud;
    rdv_io *prev, *next;
};

struct rdv_async {
    fc_core *fc;
    fc_hd *owner;
    void (*cb)(void *ud);
    void *ud;
    atomic_bool pending;
    uint64_t round;          /* fc_run_async round that last ran it */
    rdv_async *prev, *next;
};

struct rdv_buf {             /* growable, up to limit bytes of text */
    char *p;
    size_t len, limit;
    bool cut;
};

typedef struct fc_service {
    fc_hd *owner;
    char *name;
    uint32_t version;
    const void *vtable;
    void *self;
    struct fc_service *next;
} fc_service;

typedef struct fc_hook {
    fc_hd *owner;
    char *name;
    int prio;
    rdv_hook_fn fn;
    void *ud;
    struct fc_hook *next;
} fc_hook;

typedef struct fc_stat {
    fc_hd *owner;
    char *name;              /* "module.name" */
    char *help;
    uint64_t value;          /* counters: the pointer handed out */
    uint64_t (*fn)(void *ud);/* gauges */
    bool gauge;
    void *ud;
    struct fc_stat *next;
} fc_stat;

typedef struct fc_cmd {
    fc_hd *owner;
    char *name;
    rdv_admin_fn fn;
    void *ud;
    struct fc_cmd *next;
} fc_cmd;

typedef struct fc_hentry {  /* one row of a module's handler table */
    const rdv_handler *h;
    fc_mod *mod;
    struct fc_hentry *next;
} fc_hentry;

typedef struct fc_access {
    fc_mod *mod;
    struct fc_access *next;
} fc_access;

typedef struct fc_sent_node {
    fc_sent s;
    struct fc_sent_node *next;
} fc_sent_node;

struct fc_core {
    uint64_t now_ms, wall_us, timer_seq, async_round;
    fc_hd *handles;
    fc_hd *self;             /* "core": the fake core's own log lines */
    fc_mod *mods;            /* load order */
    rdv_listener *listeners;
    rdv_listener *retired;   /* of unloaded modules; closed conns still point there */
    fc_conn_rec **conns;     /* conns[id - 1]; closed ones stay for fc_conn() */
    size_t nconns, conns_cap;
    rdv_timer *timers;
    rdv_io *ios;
    rdv_async *asyncs;
    fc_service *services;
    fc_hook *hooks;          /* sorted by priority, stable */
    fc_stat *stats;
    fc_cmd *cmds;
    fc_hentry *table[RDV_TAG_MAX + 1];
    fc_access *access;       /* sorted by access_priority, stable */
    uint8_t *arena;          /* FC_ARENA_CAP bytes, reused by every dispatch */
    bool arena_busy;
    fc_sent_node *sent, *sent_tail, *popped;
    size_t nsent;
    char *log[FC_LOG_LINES];
    size_t log_next;
    uint64_t rl_calls;
    bool verbose;
};

/* ------------------------------------------------------------------ helpers */
static _Noreturn void die(const char *fmt, ...) RDV_PRINTF(1, 2);
static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fakecore: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void *xmemdup(const void *p, size_t n)
{
    void *d = xcalloc(1, n);
    if (n)
        memcpy(d, p, n);
    return d;
}

static char *xstrdup(const char *s) { return xmemdup(s, strlen(s) + 1); }

static fc_hd *hd_of(rdv_core *c) { return (fc_hd *)c; }

static void core_log(fc_core *fc, rdv_log_level lvl, const char *fmt, ...) RDV_PRINTF(3, 4);

/* ------------------------------------------------------------------ log */
static const char *level_name(rdv_log_level lvl)
{
    switch (lvl) {
    case RDV_LOG_ERR: return "error";
    case RDV_LOG_WARN: return "warning";
    case RDV_LOG_NOTICE: return "notice";
    case RDV_LOG_INFO: return "info";
    default: return "debug";
    }
}

static void api_vlog(rdv_core *c, rdv_log_level lvl, const char *fmt, va_list ap) RDV_PRINTF(3, 0);
static void api_vlog(rdv_core *c, rdv_log_level lvl, const char *fmt, va_list ap)
{
    fc_hd *h = hd_of(c);
    fc_core *fc = h->fc;
    char line[1024];
    int n = snprintf(line, sizeof line, "%s: ", h->name);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    if (fc->verbose)
        fprintf(stderr, "[fc %s] %s\n", level_name(lvl), line);
    free(fc->log[fc->log_next]);
    fc->log[fc->log_next] = xstrdup(line);
    fc->log_next = (fc->log_next + 1) % FC_LOG_LINES;
}

static void api_log(rdv_core *c, rdv_log_level lvl, const char *fmt, ...) RDV_PRINTF(3, 4);
static void api_log(rdv_core *c, rdv_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    api_vlog(c, lvl, fmt, ap);
    va_end(ap);
}

static void core_log(fc_core *fc, rdv_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    api_vlog(&fc->self->base, lvl, fmt, ap);
    va_end(ap);
}

/* Every level is enabled so debug lines are exercised and searchable. */
static bool api_log_enabled(rdv_core *c, rdv_log_level lvl)
{
    (void)c, (void)lvl;
    return true;
}

static bool api_log_ratelimit(rdv_core *c, rdv_ratelimit *rl)
{
    (void)rl;
    hd_of(c)->fc->rl_calls++;
    return true;
}

bool fc_log_contains(fc_core *fc, const char *substring)
{
    for (size_t i = 0; i < FC_LOG_LINES; i++)
        if (fc->log[i] && strstr(fc->log[i], substring))
            return true;
    return false;
}

void fc_log_clear(fc_core *fc)
{
    for (size_t i = 0; i < FC_LOG_LINES; i++) {
        free(fc->log[i]);
        fc->log[i] = NULL;
    }
    fc->log_next = 0;
}

uint64_t fc_ratelimit_calls(fc_core *fc) { return fc->rl_calls; }

/* ------------------------------------------------------------------ time, timers */
static uint64_t api_now_ms(rdv_core *c) { return hd_of(c)->fc->now_ms; }
static uint64_t api_wall_us(rdv_core *c) { return hd_of(c)->fc->wall_us; }
uint64_t fc_now_ms(fc_core *fc) { return fc->now_ms; }
void fc_set_wall_us(fc_core *fc, uint64_t us) { fc->wall_us = us; }

static rdv_timer *api_timer_new(rdv_core *c, void (*cb)(void *), void *ud)
{
    fc_core *fc = hd_of(c)->fc;
    rdv_timer *t = xcalloc(1, sizeof *t);
    t->fc = fc, t->owner = hd_of(c), t->cb = cb, t->ud = ud;
    DL_APPEND(fc->timers, t);
    return t;
}

static void api_timer_start(rdv_timer *t, uint64_t after_ms, uint64_t repeat_ms)
{
    t->active = true;
    t->due = t->fc->now_ms + after_ms;
    t->repeat = repeat_ms;
    t->seq = ++t->fc->timer_seq;
}

static void api_timer_stop(rdv_timer *t)
{
    if (t) /* like the real core */
        t->active = false;
}

static void api_timer_free(rdv_timer *t)
{
    if (!t)
        return;
    DL_DELETE(t->fc->timers, t);
    free(t);
}

/* The active timer due first (by due time, then arming order), if due by end. */
static rdv_timer *next_due(fc_core *fc, uint64_t end)
{
    rdv_timer *best = NULL, *t;
    DL_FOREACH(fc->timers, t)
        if (t->active && t->due <= end &&
            (!best || t->due < best->due || (t->due == best->due && t->seq < best->seq)))
            best = t;
    return best;
}

/* Re-arm before the callback and never touch t after it: the callback may
 * free t or any other timer. */
void fc_advance(fc_core *fc, uint64_t ms)
{
    uint64_t end = fc->now_ms + ms;
    rdv_timer *t;
    while ((t = next_due(fc, end))) {
        fc->now_ms = t->due;
        if (t->repeat) {
            t->due += t->repeat;
            t->seq = ++fc->timer_seq;
        } else {
            t->active = false;
        }
        t->cb(t->ud);
    }
    fc->now_ms = end;
}

/* ------------------------------------------------------------------ io, async */
static rdv_io *api_io_new(rdv_core *c, int fd, unsigned events, void (*cb)(void *, int, unsigned), void *ud)
{
    fc_core *fc = hd_of(c)->fc;
    rdv_io *w = xcalloc(1, sizeof *w);
    w->fc = fc, w->owner = hd_of(c), w->fd = fd, w->events = events, w->cb = cb, w->ud = ud;
    DL_APPEND(fc->ios, w);
    return w;
}

static void api_io_set(rdv_io *w, unsigned events) { w->events = events; }

static void api_io_free(rdv_io *w)
{
    if (!w)
        return;
    DL_DELETE(w->fc->ios, w);
    free(w);
}

int fc_io_fire(fc_core *fc, int fd, unsigned revents)
{
    rdv_io *w;
    DL_FOREACH(fc->ios, w)
        if (w->fd == fd && (w->events & revents)) {
            w->cb(w->ud, fd, w->events & revents);
            return 0;
        }
    return -ENOENT;
}

static rdv_async *api_async_new(rdv_core *c, void (*cb)(void *), void *ud)
{
    fc_core *fc = hd_of(c)->fc;
    rdv_async *a = xcalloc(1, sizeof *a);
    a->fc = fc, a->owner = hd_of(c), a->cb = cb, a->ud = ud;
    atomic_init(&a->pending, false);
    DL_APPEND(fc->asyncs, a);
    return a;
}

static void api_async_send(rdv_async *a) { atomic_store(&a->pending, true); }

static void api_async_free(rdv_async *a)
{
    if (!a)
        return;
    DL_DELETE(a->fc->asyncs, a);
    free(a);
}

/* Rescan from the head after each callback (it may free handles); the round
 * stamp runs each handle at most once even if it re-sends itself. */
int fc_run_async(fc_core *fc)
{
    uint64_t round = ++fc->async_round;
    int ran = 0;
    for (;;) {
        rdv_async *a, *found = NULL;
        DL_FOREACH(fc->asyncs, a)
            if (a->round != round && atomic_exchange(&a->pending, false)) {
                found = a;
                break;
            }
        if (!found)
            return ran;
        found->round = round;
        found->cb(found->ud);
        ran++;
    }
}

/* ------------------------------------------------------------------ listeners */
static rdv_listener *find_listener(fc_core *fc, const char *name, unsigned tr)
{
    for (rdv_listener *l = fc->listeners; l; l = l->next)
        if (strcmp(l->name, name) == 0 && (l->transport & tr))
            return l;
    return NULL;
}

static rdv_listener *add_listener(fc_core *fc, const char *name, rdv_transport tr, int port)
{
    rdv_listener *l = xcalloc(1, sizeof *l);
    l->name = xstrdup(name), l->transport = tr, l->port = port, l->mode = RDV_LISTEN_DISPATCH;
    LL_APPEND(fc->listeners, l);
    return l;
}

rdv_listener *fc_find_listener(fc_core *fc, const char *name, rdv_transport tr)
{
    return find_listener(fc, name, tr);
}

rdv_listener *fc_listener(fc_core *fc, const char *name, rdv_transport tr, int port)
{
    rdv_listener *l = find_listener(fc, name, tr);
    return l ? l : add_listener(fc, name, tr, port);
}

static rdv_listener *api_listener_find(rdv_core *c, const char *name, rdv_transport tr)
{
    return find_listener(hd_of(c)->fc, name, tr);
}

static rdv_listener *api_listen(rdv_core *c, const rdv_listen_spec *spec)
{
    fc_core *fc = hd_of(c)->fc;
    const char *why = NULL;
    if (!spec->name || !spec->name[0])
        why = "no name";
    else if (spec->transport != RDV_TR_TCP && spec->transport != RDV_TR_UDP)
        why = "transport must be TCP or UDP";
    else if (spec->mode != RDV_LISTEN_DISPATCH && !spec->ops)
        why = "ops are required unless mode is DISPATCH";
    else if (find_listener(fc, spec->name, spec->transport))
        why = "a listener with this name and transport exists";
    if (why) {
        api_log(c, RDV_LOG_ERR, "listen %s port %d: %s", spec->name ? spec->name : "?", spec->port, why);
        return NULL;
    }
    rdv_listener *l = add_listener(fc, spec->name, spec->transport, spec->port);
    l->mode = spec->mode, l->ops = spec->ops, l->ud = spec->ud, l->owner = hd_of(c);
    l->max_buffer = spec->max_buffer ? spec->max_buffer : FC_RAW_BUFFER;
    return l;
}

static const char *api_listener_name(const rdv_listener *l) { return l->name; }
static int api_listener_port(const rdv_listener *l) { return l->port; }

/* ------------------------------------------------------------------ recording */
static void record(fc_core *fc, const fc_sent *s, const uint8_t *p, size_t n)
{
    if (fc->nsent >= FC_MAX_SENT)
        die("more than %d sends not popped: a runaway module? (drain with fc_next_sent or fc_clear_sent)",
            FC_MAX_SENT);
    fc_sent_node *node = xcalloc(1, sizeof *node);
    node->s = *s;
    node->s.raw = xmemdup(p, n);
    node->s.len = n;
    if (s->kind == FC_SENT_UDP || s->kind == FC_SENT_CONN)
        node->s.msg = hbb__rendezvous_message__unpack(NULL, n, p);
    if (fc->sent_tail) /* O(1) append: the queue may hold FC_MAX_SENT entries */
        fc->sent_tail->next = node;
    else
        fc->sent = node;
    fc->sent_tail = node;
    fc->nsent++;
}

static void sent_node_free(fc_sent_node *node)
{
    if (!node)
        return;
    if (node->s.msg)
        hbb__rendezvous_message__free_unpacked(node->s.msg, NULL);
    free(node->s.raw);
    free(node);
}

const fc_sent *fc_next_sent(fc_core *fc)
{
    sent_node_free(fc->popped);
    fc->popped = fc->sent;
    if (!fc->popped)
        return NULL;
    fc->sent = fc->popped->next;
    if (!fc->sent)
        fc->sent_tail = NULL;
    fc->nsent--;
    return &fc->popped->s;
}

size_t fc_sent_count(fc_core *fc) { return fc->nsent; }

void fc_clear_sent(fc_core *fc)
{
    while (fc_next_sent(fc))
        ;
    sent_node_free(fc->popped);
    fc->popped = NULL;
}

/* Pack msg into a malloc'ed buffer (*p; free it). */
static size_t pack(const void *msg, uint8_t **p)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    *p = xcalloc(1, n);
    return protobuf_c_message_pack(msg, *p);
}

/* ------------------------------------------------------------------ connections */
static fc_conn_rec *conn_get(fc_core *fc, rdv_conn_id id)
{
    return id && id <= fc->nconns ? fc->conns[id - 1] : NULL;
}

static fc_conn_rec *conn_live(fc_core *fc, rdv_conn_id id)
{
    fc_conn_rec *c = conn_get(fc, id);
    return c && c->st.open ? c : NULL;
}

const fc_conn_state *fc_conn(fc_core *fc, rdv_conn_id id)
{
    fc_conn_rec *c = conn_get(fc, id);
    return c ? &c->st : NULL;
}

bool fc_conn_alive(fc_core *fc, rdv_conn_id id) { return conn_live(fc, id) != NULL; }

void fc_conn_set_wqueue(fc_core *fc, rdv_conn_id id, size_t bytes)
{
    fc_conn_rec *c = conn_live(fc, id);
    if (c)
        c->wqueue = bytes;
}
bool fc_conn_secure(fc_core *fc, rdv_conn_id id)
{
    fc_conn_rec *c = conn_get(fc, id);
    return c && c->st.secure;
}

static void run_hooks(fc_core *fc, const char *name, const void *arg)
{
    for (fc_hook *h = fc->hooks; h; h = h->next)
        if (strcmp(h->name, name) == 0)
            h->fn(h->ud, arg);
}

static void conn_event(fc_conn_rec *c, rdv_conn_event *ev, rdv_close_reason why)
{
    *ev = (rdv_conn_event){ .id = c->st.id, .listener = c->st.listener, .listener_name = c->st.listener->name,
                            .transport = c->st.transport, .peer = &c->st.peer, .why = why };
}

/* Like the real core: on_close for every reason but DETACHED, then the
 * "conn.close" hook for every reason. */
static void conn_end(fc_core *fc, fc_conn_rec *c, rdv_close_reason why)
{
    c->st.open = false;
    c->st.why = why;
    free(c->rbuf);
    c->rbuf = NULL, c->rlen = 0;
    rdv_listener *l = c->st.listener;
    if (l->ops && l->ops->on_close && why != RDV_CLOSE_DETACHED)
        l->ops->on_close(l->ud, c->st.id, why);
    rdv_conn_event ev;
    conn_event(c, &ev, why);
    run_hooks(fc, RDV_HOOK_CONN_CLOSE, &ev);
}

static fc_conn_rec *conn_new(fc_core *fc, rdv_listener *l, const rdv_addr *peer)
{
    if (fc->nconns >= FC_MAX_CONNS)
        die("more than %d connections opened: a runaway test?", FC_MAX_CONNS);
    if (fc->nconns == fc->conns_cap) {
        fc->conns_cap = fc->conns_cap ? 2 * fc->conns_cap : 64;
        fc->conns = realloc(fc->conns, fc->conns_cap * sizeof *fc->conns);
        if (!fc->conns)
            die("out of memory");
    }
    fc_conn_rec *c = xcalloc(1, sizeof *c);
    c->st.id = ++fc->nconns;
    c->st.listener = l, c->st.transport = l->transport, c->st.peer = *peer, c->st.open = true;
    c->fd = -1;
    c->opened_ms = fc->now_ms;
    fc->conns[c->st.id - 1] = c;
    return c;
}

static int run_access(fc_core *fc, const rdv_msg_ctx *ctx, const void *msg)
{
    for (fc_access *a = fc->access; a; a = a->next) {
        int r = a->mod->m->access(a->mod->state, ctx, msg);
        if (r != RDV_OK)
            return r;
    }
    return RDV_OK;
}

/* ACCESS (any answer but RDV_OK refuses), on_open, "conn.open" — the real
 * core's order. */
static rdv_conn_id conn_accept(fc_core *fc, rdv_listener *l, const rdv_addr *peer)
{
    fc_conn_rec *c = conn_new(fc, l, peer);
    rdv_msg_ctx ctx = { .transport = c->st.transport, .listener = l, .listener_name = l->name,
                        .conn = c->st.id, .peer = &c->st.peer };
    if (run_access(fc, &ctx, NULL) != RDV_OK ||
        (l->ops && l->ops->on_open && l->ops->on_open(l->ud, c->st.id, &c->st.peer) == RDV_CLOSE)) {
        conn_end(fc, c, RDV_CLOSE_LOCAL);
        return c->st.id;
    }
    rdv_conn_event ev;
    conn_event(c, &ev, 0);
    run_hooks(fc, RDV_HOOK_CONN_OPEN, &ev);
    return c->st.id;
}

rdv_conn_id fc_conn_open(fc_core *fc, const char *listener, rdv_transport tr, const rdv_addr *peer)
{
    return conn_accept(fc, fc_listener(fc, listener, tr, 0), peer);
}

rdv_conn_id fc_owned_open(fc_core *fc, rdv_listener *l, const rdv_addr *peer)
{
    return conn_accept(fc, l, peer);
}

int fc_conn_drop(fc_core *fc, rdv_conn_id id, rdv_close_reason why)
{
    fc_conn_rec *c = conn_live(fc, id);
    if (!c)
        return -ENOTCONN;
    conn_end(fc, c, why);
    return 0;
}

int fc_conn_peer_close(fc_core *fc, rdv_conn_id id) { return fc_conn_drop(fc, id, RDV_CLOSE_PEER); }

int fc_conn_set_fd(fc_core *fc, rdv_conn_id id, int fd)
{
    fc_conn_rec *c = conn_live(fc, id);
    if (!c)
        return -ENOTCONN;
    c->fd = fd;
    return 0;
}

/* ------------------------------------------------------------------ dispatch */
static int run_handlers(fc_core *fc, const rdv_msg_ctx *ctx, const void *msg)
{
    bool matched = false;
    for (fc_hentry *e = fc->table[ctx->tag]; e; e = e->next) {
        const rdv_handler *h = e->h;
        if (!(h->transports & ctx->transport) || (h->listener && strcmp(h->listener, ctx->listener_name) != 0))
            continue;
        matched = true;
        int r = h->fn(e->mod->state, ctx, msg);
        if (r < 0)
            core_log(fc, RDV_LOG_WARN, "%s: handler for %s failed: %s", e->mod->m->name,
                     rdv_msg_tag_name(ctx->tag), strerror(-r));
        if (r != RDV_DECLINED)
            return r;
    }
    return matched ? RDV_DECLINED : -ENOENT;
}

/* Unpack with an arena exactly as the real core does, then ACCESS and the
 * handler chain. A dispatch nested in a handler gets an arena of its own.
 * Returns the codes listed in fakecore.h. */
static int dispatch(fc_core *fc, rdv_msg_ctx *ctx)
{
    bool nested = fc->arena_busy;
    uint8_t *mem = nested ? malloc(FC_ARENA_CAP) : fc->arena;
    if (!mem)
        die("out of memory");
    fc->arena_busy = true;
    rdv_arena arena;
    rdv_arena_init(&arena, mem, FC_ARENA_CAP);
    rdv_msg *msg = rdv_msg_unpack(&arena, ctx->raw, ctx->raw_len);
    int r = -EBADMSG;
    if (msg) {
        ctx->tag = (int)msg->union_case;
        r = run_access(fc, ctx, msg);
        if (r == RDV_DECLINED)
            r = -EACCES;
        else if (r == RDV_OK)
            r = ctx->tag >= 0 && ctx->tag <= RDV_TAG_MAX ? run_handlers(fc, ctx, msg) : -ENOENT;
    }
    fc->arena_busy = nested;
    if (nested)
        free(mem);
    return r;
}

/* A stream closes on everything but success or an ACCESS drop, as in the
 * real core (unhandled and failed messages included). */
static void stream_verdict(fc_core *fc, fc_conn_rec *c, int r)
{
    if (!c->st.open || r == RDV_OK || r == -EACCES)
        return;
    conn_end(fc, c, r == -EBADMSG ? RDV_CLOSE_PROTOCOL : RDV_CLOSE_LOCAL);
}

static int dispatch_conn(fc_core *fc, fc_conn_rec *c, const uint8_t *p, size_t n)
{
    rdv_listener *l = c->st.listener;
    rdv_msg_ctx ctx = { .transport = c->st.transport, .listener = l, .listener_name = l->name,
                        .conn = c->st.id, .peer = &c->st.peer, .raw = p, .raw_len = n };
    return dispatch(fc, &ctx);
}

int fc_udp_raw(fc_core *fc, const char *listener, const rdv_addr *from, const uint8_t *p, size_t n)
{
    rdv_listener *l = fc_listener(fc, listener, RDV_TR_UDP, 0);
    if (l->mode == RDV_LISTEN_RAW) {
        l->ops->on_datagram(l->ud, l, from, p, n);
        return RDV_OK;
    }
    if (l->mode != RDV_LISTEN_DISPATCH)
        return -EINVAL;
    rdv_msg_ctx ctx = { .transport = RDV_TR_UDP, .listener = l, .listener_name = l->name, .peer = from,
                        .raw = p, .raw_len = n };
    return dispatch(fc, &ctx);
}

int fc_udp(fc_core *fc, const char *listener, const rdv_addr *from, const Hbb__RendezvousMessage *msg)
{
    uint8_t *p;
    size_t n = pack(msg, &p);
    int r = fc_udp_raw(fc, listener, from, p, n);
    free(p);
    return r;
}

/* Hand buffered bytes to on_data until it consumes nothing; held while
 * paused (conn_pause(false) resumes). */
static int feed_raw(fc_core *fc, fc_conn_rec *c)
{
    rdv_listener *l = c->st.listener;
    while (c->st.open && !c->st.paused && c->rlen) {
        long used = l->ops->on_data(l->ud, c->st.id, c->rbuf, c->rlen);
        if (!c->st.open)
            break;
        if (used < 0) {
            conn_end(fc, c, RDV_CLOSE_PROTOCOL);
            break;
        }
        size_t u = (size_t)used < c->rlen ? (size_t)used : c->rlen;
        memmove(c->rbuf, c->rbuf + u, c->rlen - u);
        c->rlen -= u;
        if (u == 0) {
            if (c->rlen >= l->max_buffer)
                conn_end(fc, c, RDV_CLOSE_OVERSIZE);
            break;
        }
    }
    return c->st.open ? RDV_OK : RDV_CLOSE;
}

static int conn_raw_in(fc_core *fc, fc_conn_rec *c, const uint8_t *p, size_t n)
{
    c->rbuf = realloc(c->rbuf, c->rlen + n + 1);
    if (!c->rbuf)
        die("out of memory");
    memcpy(c->rbuf + c->rlen, p, n);
    c->rlen += n;
    return feed_raw(fc, c);
}

int fc_conn_raw(fc_core *fc, rdv_conn_id id, const uint8_t *p, size_t n)
{
    fc_conn_rec *c = conn_live(fc, id);
    if (!c)
        return -ENOTCONN;
    c->bytes_in += n;
    rdv_listener *l = c->st.listener;
    if (l->mode == RDV_LISTEN_RAW)
        return conn_raw_in(fc, c, p, n);
    if (n > FC_MAX_FRAME) {
        conn_end(fc, c, RDV_CLOSE_OVERSIZE);
        return -EMSGSIZE;
    }
    int r;
    if (l->mode == RDV_LISTEN_FRAMED || l->mode == RDV_LISTEN_FRAMED_EXACT) {
        r = l->ops->on_frame(l->ud, id, p, n);
        if (r == RDV_CLOSE && c->st.open)
            conn_end(fc, c, RDV_CLOSE_LOCAL);
        return r;
    }
    r = dispatch_conn(fc, c, p, n);
    stream_verdict(fc, c, r);
    return r;
}

int fc_conn_msg(fc_core *fc, rdv_conn_id id, const Hbb__RendezvousMessage *msg)
{
    uint8_t *p;
    size_t n = pack(msg, &p);
    int r = fc_conn_raw(fc, id, p, n);
    free(p);
    return r;
}

/* ------------------------------------------------------------------ sending */
static int send_udp_bytes(rdv_core *c, rdv_listener *via, const rdv_addr *to, const uint8_t *p, size_t n)
{
    if (!via || via->transport != RDV_TR_UDP)
        return -EINVAL;
    if (n > FC_UDP_MAX)
        return -EMSGSIZE;
    fc_sent s = { .kind = FC_SENT_UDP, .module = hd_of(c)->name, .listener = via, .listener_name = via->name,
                  .to = *to };
    record(hd_of(c)->fc, &s, p, n);
    return 0;
}

static int api_send_udp_raw(rdv_core *c, rdv_listener *via, const rdv_addr *to, const uint8_t *p, size_t n)
{
    return send_udp_bytes(c, via, to, p, n);
}

static int api_send_udp(rdv_core *c, rdv_listener *via, const rdv_addr *to, const void *msg)
{
    uint8_t *p;
    size_t n = pack(msg, &p);
    int r = send_udp_bytes(c, via, to, p, n);
    free(p);
    return r;
}

static int send_conn(rdv_core *c, rdv_conn_id id, fc_sent_kind kind, const uint8_t *p, size_t n)
{
    fc_core *fc = hd_of(c)->fc;
    fc_conn_rec *cn = conn_live(fc, id);
    if (!cn)
        return -ENOTCONN;
    if (kind == FC_SENT_CONN) {
        uint8_t hdr[16];
        if (n > FC_MAX_FRAME || (cn->st.codec && !cn->st.codec->header(cn->st.codec_ud, n, hdr)))
            return -EMSGSIZE;
    }
    fc_sent s = { .kind = kind, .module = hd_of(c)->name, .listener = cn->st.listener,
                  .listener_name = cn->st.listener->name, .to = cn->st.peer, .conn = id,
                  .sealed = cn->st.secure };
    record(fc, &s, p, n);
    cn->bytes_out += n;
    return 0;
}

static int api_send(rdv_core *c, rdv_conn_id id, const void *msg)
{
    uint8_t *p;
    size_t n = pack(msg, &p);
    int r = send_conn(c, id, FC_SENT_CONN, p, n);
    free(p);
    return r;
}

static int api_send_payload(rdv_core *c, rdv_conn_id id, const uint8_t *p, size_t n)
{
    return send_conn(c, id, FC_SENT_CONN, p, n);
}

static int api_send_bytes(rdv_core *c, rdv_conn_id id, const uint8_t *p, size_t n)
{
    return send_conn(c, id, FC_SENT_BYTES, p, n);
}

/* ------------------------------------------------------------------ connection calls */
static int api_conn_close(rdv_core *c, rdv_conn_id id, bool flush)
{
    fc_core *fc = hd_of(c)->fc;
    fc_conn_rec *cn = conn_live(fc, id);
    if (!cn)
        return -ENOTCONN;
    fc_sent s = { .kind = FC_SENT_CLOSE, .module = hd_of(c)->name, .listener = cn->st.listener,
                  .listener_name = cn->st.listener->name, .to = cn->st.peer, .conn = id, .flush = flush };
    record(fc, &s, NULL, 0);
    conn_end(fc, cn, RDV_CLOSE_LOCAL);
    return 0;
}

static int api_conn_info(rdv_core *c, rdv_conn_id id, rdv_conn_info *out)
{
    fc_conn_rec *cn = conn_live(hd_of(c)->fc, id);
    if (!cn)
        return -ENOTCONN;
    *out = (rdv_conn_info){ .peer = cn->st.peer, .transport = cn->st.transport, .listener = cn->st.listener,
                            .listener_name = cn->st.listener->name, .opened_ms = cn->opened_ms,
                            .bytes_in = cn->bytes_in, .bytes_out = cn->bytes_out, .secure = cn->st.secure,
                            .wqueue = cn->wqueue };
    return 0;
}

/* The record layer sits on hbb frames only (real core rule). */
static int api_conn_set_key(rdv_core *c, rdv_conn_id id, const uint8_t key[32])
{
    fc_conn_rec *cn = conn_live(hd_of(c)->fc, id);
    if (!cn)
        return -ENOTCONN;
    if (cn->st.codec || cn->st.listener->mode == RDV_LISTEN_RAW)
        return -EINVAL;
    memcpy(cn->st.key, key, sizeof cn->st.key);
    cn->st.secure = true;
    return 0;
}

static int api_conn_set_idle(rdv_core *c, rdv_conn_id id, uint64_t idle_ms)
{
    fc_conn_rec *cn = conn_live(hd_of(c)->fc, id);
    if (!cn)
        return -ENOTCONN;
    cn->st.idle_ms = idle_ms;
    return 0;
}

static int api_conn_set_codec(rdv_core *c, rdv_conn_id id, const rdv_codec *codec, void *ud)
{
    fc_conn_rec *cn = conn_live(hd_of(c)->fc, id);
    if (!cn)
        return -ENOTCONN;
    if (cn->st.listener->mode != RDV_LISTEN_RAW || cn->st.secure)
        return -EINVAL;
    cn->st.codec = codec, cn->st.codec_ud = ud, cn->st.transport = codec->transport;
    return 0;
}

/* Like the real core, an unhandled or failed message answers RDV_CLOSE and
 * the calling transport module closes the connection itself. */
static int api_conn_dispatch(rdv_core *c, rdv_conn_id id, const uint8_t *p, size_t n)
{
    fc_conn_rec *cn = conn_live(hd_of(c)->fc, id);
    if (!cn)
        return -ENOTCONN;
    int r = dispatch_conn(hd_of(c)->fc, cn, p, n);
    return cn->st.open && (r == RDV_OK || r == -EACCES) ? RDV_OK : RDV_CLOSE;
}

/* As the real core: later messages and events see the new address. */
static int api_conn_set_peer(rdv_core *c, rdv_conn_id id, const rdv_addr *peer)
{
    fc_conn_rec *cn = conn_live(hd_of(c)->fc, id);
    if (!cn)
        return -ENOTCONN;
    if (peer->u.sa.sa_family != AF_INET && peer->u.sa.sa_family != AF_INET6)
        return -EAFNOSUPPORT;
    cn->st.peer = *peer;
    rdv_addr_normalize(&cn->st.peer);
    return 0;
}

static int api_conn_pause(rdv_core *c, rdv_conn_id id, bool paused)
{
    fc_core *fc = hd_of(c)->fc;
    fc_conn_rec *cn = conn_live(fc, id);
    if (!cn)
        return -ENOTCONN;
    cn->st.paused = paused;
    if (!paused && cn->st.listener->mode == RDV_LISTEN_RAW)
        feed_raw(fc, cn);
    return 0;
}

static int api_conn_detach(rdv_core *c, rdv_conn_id id, int *fd, uint8_t *buf, size_t *len)
{
    fc_core *fc = hd_of(c)->fc;
    fc_conn_rec *cn = conn_live(fc, id);
    if (!cn)
        return -ENOTCONN;
    if (cn->rlen > *len)
        return -ENOSPC;
    if (cn->rlen)
        memcpy(buf, cn->rbuf, cn->rlen);
    *len = cn->rlen;
    *fd = cn->fd;
    conn_end(fc, cn, RDV_CLOSE_DETACHED);
    return 0;
}

/* ------------------------------------------------------------------ services, hooks */
static int api_service_publish(rdv_core *c, const char *name, uint32_t version, const void *vtable, void *self)
{
    fc_core *fc = hd_of(c)->fc;
    for (fc_service *s = fc->services; s; s = s->next)
        if (strcmp(s->name, name) == 0)
            return -EEXIST;
    fc_service *s = xcalloc(1, sizeof *s);
    s->owner = hd_of(c), s->name = xstrdup(name), s->version = version, s->vtable = vtable, s->self = self;
    LL_APPEND(fc->services, s);
    return 0;
}

static const void *api_service_get(rdv_core *c, const char *name, uint32_t min_version, void **self)
{
    for (fc_service *s = hd_of(c)->fc->services; s; s = s->next)
        if (strcmp(s->name, name) == 0 && s->version >= min_version) {
            if (self)
                *self = s->self;
            return s->vtable;
        }
    return NULL;
}

/* Insert after every hook of lower or equal priority: stable order. */
static int api_hook_add(rdv_core *c, const char *name, int priority, rdv_hook_fn fn, void *ud)
{
    fc_core *fc = hd_of(c)->fc;
    fc_hook *h = xcalloc(1, sizeof *h);
    h->owner = hd_of(c), h->name = xstrdup(name), h->prio = priority, h->fn = fn, h->ud = ud;
    fc_hook **pp = &fc->hooks;
    while (*pp && (*pp)->prio <= priority)
        pp = &(*pp)->next;
    h->next = *pp;
    *pp = h;
    return 0;
}

static void api_hook_run(rdv_core *c, const char *name, const void *arg) { run_hooks(hd_of(c)->fc, name, arg); }

/* ------------------------------------------------------------------ stats */
static fc_stat *find_stat(fc_core *fc, const char *full)
{
    for (fc_stat *s = fc->stats; s; s = s->next)
        if (strcmp(s->name, full) == 0)
            return s;
    return NULL;
}

static fc_stat *add_stat(rdv_core *c, const char *name, const char *help)
{
    fc_core *fc = hd_of(c)->fc;
    char full[256];
    snprintf(full, sizeof full, "%s.%s", hd_of(c)->name, name);
    fc_stat *s = find_stat(fc, full);
    if (s)
        return s;
    s = xcalloc(1, sizeof *s);
    s->owner = hd_of(c), s->name = xstrdup(full), s->help = xstrdup(help ? help : "");
    fc_stat **pp = &fc->stats; /* name order, as the core's stats_each */
    while (*pp && strcmp((*pp)->name, full) < 0)
        pp = &(*pp)->next;
    s->next = *pp;
    *pp = s;
    return s;
}

/* Counters outlive their module ("valid for the process lifetime"). */
static uint64_t *api_counter(rdv_core *c, const char *name, const char *help)
{
    return &add_stat(c, name, help)->value;
}

static int api_gauge(rdv_core *c, const char *name, uint64_t (*fn)(void *), void *ud, const char *help)
{
    fc_stat *s = add_stat(c, name, help);
    if (s->fn)
        return -EEXIST;
    s->fn = fn, s->ud = ud, s->gauge = true;
    return 0;
}

/* Gauges of a removed module are gone (drop_gauges); its counters stay. */
static void api_stats_each(rdv_core *c, void (*fn)(void *, const rdv_stat_view *), void *ud)
{
    for (fc_stat *s = hd_of(c)->fc->stats; s; s = s->next) {
        if (!s->fn && s->gauge)
            continue;
        rdv_stat_view v = { s->name, s->help, s->gauge, s->fn ? s->fn(s->ud) : s->value };
        fn(ud, &v);
    }
}

uint64_t fc_counter(fc_core *fc, const char *name)
{
    fc_stat *s = find_stat(fc, name);
    return s ? s->value : 0;
}

uint64_t fc_gauge(fc_core *fc, const char *name)
{
    fc_stat *s = find_stat(fc, name);
    return s && s->fn ? s->fn(s->ud) : 0;
}

/* ------------------------------------------------------------------ admin */
static int api_admin_command(rdv_core *c, const char *name, const char *usage, rdv_admin_fn fn, void *ud)
{
    (void)usage;
    fc_core *fc = hd_of(c)->fc;
    for (fc_cmd *k = fc->cmds; k; k = k->next)
        if (strcmp(k->name, name) == 0)
            return -EEXIST;
    fc_cmd *k = xcalloc(1, sizeof *k);
    k->owner = hd_of(c), k->name = xstrdup(name), k->fn = fn, k->ud = ud;
    LL_APPEND(fc->cmds, k);
    return 0;
}

/* As the real console: a print that does not fit under the limit is
 * dropped whole and the answer is marked cut (admin_run adds the marker). */
static void api_out(rdv_buf *b, const char *fmt, ...) RDV_PRINTF(2, 3);
static void api_out(rdv_buf *b, const char *fmt, ...)
{
    if (b->cut)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > b->limit - b->len) {
        b->cut = true;
        return;
    }
    b->p = realloc(b->p, b->len + (size_t)n + 1);
    if (!b->p)
        die("out of memory");
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Split a line on whitespace and run the command into b, as the real
 * console does. Returns 0, -EINVAL (empty line) or -ENOENT (unknown, with
 * the real console's answer). The answer ends with FC_TRUNCATED if cut. */
static int admin_run(fc_core *fc, const char *cmdline, rdv_buf *b)
{
    char *line = xstrdup(cmdline), *save = NULL, *argv[FC_ADMIN_ARGS + 1];
    int argc = 0;
    for (char *w = strtok_r(line, " \t\r\n", &save); w && argc < FC_ADMIN_ARGS; w = strtok_r(NULL, " \t\r\n", &save))
        argv[argc++] = w;
    argv[argc] = NULL;
    fc_cmd *k = fc->cmds;
    while (k && argc && strcmp(k->name, argv[0]) != 0)
        k = k->next;
    int r = !argc ? -EINVAL : !k ? -ENOENT : 0;
    if (r == -ENOENT)
        api_out(b, "unknown command '%s'; try help\n", argv[0]);
    else if (r == 0)
        k->fn(k->ud, argc, argv, b);
    if (b->cut) { /* the marker replaces the answer's end if it does not fit after it */
        size_t at = b->len + sizeof FC_TRUNCATED - 1 <= b->limit ? b->len
                    : b->limit >= sizeof FC_TRUNCATED - 1 ? b->limit - (sizeof FC_TRUNCATED - 1) : 0;
        size_t keep = sizeof FC_TRUNCATED - 1 <= b->limit ? sizeof FC_TRUNCATED - 1 : b->limit;
        b->p = realloc(b->p, at + keep + 1);
        if (!b->p)
            die("out of memory");
        memcpy(b->p + at, FC_TRUNCATED, keep);
        b->len = at + keep;
        b->p[b->len] = '\0';
    }
    free(line);
    return r;
}

int fc_admin(fc_core *fc, const char *cmdline, char *out, size_t outlen)
{
    if (!out || !outlen)
        return -EINVAL;
    rdv_buf b = { .limit = outlen - 1 };
    int r = admin_run(fc, cmdline, &b);
    memcpy(out, b.p ? b.p : "", b.len + 1);
    free(b.p);
    return r;
}

static char *api_admin_exec(rdv_core *c, const char *line)
{
    rdv_buf b = { .limit = FC_ADMIN_LIMIT };
    admin_run(hd_of(c)->fc, line, &b);
    return b.p ? b.p : xcalloc(1, 1);
}

/* ------------------------------------------------------------------ misc */
static const char *api_module_name(rdv_core *c) { return hd_of(c)->name; }

/* The real core's defaults. */
static int api_core_int(rdv_core *c, const char *name, int64_t *out)
{
    static const struct { const char *name; int64_t v; } ints[] = {
        { "max_frame", FC_MAX_FRAME }, { "idle_ms", FC_IDLE_MS },
        { "max_connections", 100000 }, { "write_queue_max", 4194304 },
    };
    (void)c;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (strcmp(name, ints[i].name) == 0) {
            *out = ints[i].v;
            return 0;
        }
    return -ENOENT;
}

static const rdv_core_api fc_api = {
    .size = sizeof(rdv_core_api),
    .abi_major = RDV_ABI_MAJOR,
    .abi_minor = RDV_ABI_MINOR,
    .log = api_log,
    .vlog = api_vlog,
    .log_enabled = api_log_enabled,
    .log_ratelimit = api_log_ratelimit,
    .now_ms = api_now_ms,
    .wall_us = api_wall_us,
    .timer_new = api_timer_new,
    .timer_start = api_timer_start,
    .timer_stop = api_timer_stop,
    .timer_free = api_timer_free,
    .io_new = api_io_new,
    .io_set = api_io_set,
    .io_free = api_io_free,
    .async_new = api_async_new,
    .async_send = api_async_send,
    .async_free = api_async_free,
    .listener_find = api_listener_find,
    .listen = api_listen,
    .listener_name = api_listener_name,
    .listener_port = api_listener_port,
    .send_udp = api_send_udp,
    .send_udp_raw = api_send_udp_raw,
    .send = api_send,
    .send_payload = api_send_payload,
    .send_bytes = api_send_bytes,
    .conn_close = api_conn_close,
    .conn_info = api_conn_info,
    .conn_set_key = api_conn_set_key,
    .conn_set_idle = api_conn_set_idle,
    .conn_set_codec = api_conn_set_codec,
    .conn_dispatch = api_conn_dispatch,
    .conn_pause = api_conn_pause,
    .conn_detach = api_conn_detach,
    .service_publish = api_service_publish,
    .service_get = api_service_get,
    .hook_add = api_hook_add,
    .hook_run = api_hook_run,
    .counter = api_counter,
    .gauge = api_gauge,
    .admin_command = api_admin_command,
    .out = api_out,
    .admin_exec = api_admin_exec,
    .module_name = api_module_name,
    .core_int = api_core_int,
    .conn_set_peer = api_conn_set_peer,
    .stats_each = api_stats_each,
};

/* ------------------------------------------------------------------ core object */
rdv_core *fc_handle(fc_core *fc, const char *module_name)
{
    for (fc_hd *h = fc->handles; h; h = h->next)
        if (strcmp(h->name, module_name) == 0)
            return &h->base;
    fc_hd *h = xcalloc(1, sizeof *h);
    h->base.api = &fc_api, h->fc = fc, h->name = xstrdup(module_name);
    LL_APPEND(fc->handles, h);
    return &h->base;
}

fc_core *fc_new(void)
{
    fc_core *fc = xcalloc(1, sizeof *fc);
    fc->now_ms = 1000000;
    fc->wall_us = 1700000000000000ull;
    fc->verbose = getenv("FC_VERBOSE") != NULL;
    fc->self = hd_of(fc_handle(fc, "core"));
    fc->arena = malloc(FC_ARENA_CAP);
    if (!fc->arena)
        die("out of memory");
    return fc;
}

rdv_addr fc_addr(const char *text)
{
    rdv_addr a;
    if (rdv_addr_parse(&a, text, 0) < 0)
        die("fc_addr: cannot parse '%s'", text);
    return a;
}

/* ------------------------------------------------------------------ settings */
static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static void strlist_free(rdv_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    *l = (rdv_strlist){ 0 };
}

static void cfg_release(const rdv_setting *tbl, void *cfg)
{
    for (const rdv_setting *s = tbl; s && s->name; s++) {
        void *f = (char *)cfg + s->offset;
        if (s->type == RDV_SET_STRING)
            free(*(char **)f);
        else if (s->type == RDV_SET_STRLIST)
            strlist_free(f);
    }
}

static size_t cap_of(const rdv_setting *s) { return s->max ? (size_t)s->max : FC_STR_MAX; }

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = { "true", "yes", "on", "1" }, *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0)
            return *out = true, 0;
        if (strcmp(v, no[i]) == 0)
            return *out = false, 0;
    }
    return -EINVAL;
}

static int strlist_add(const rdv_setting *s, rdv_strlist *out, const char *item, const char **why)
{
    if (out->n == cap_of(s))
        return *why = "too many entries", -EINVAL;
    out->v = realloc(out->v, (out->n + 1) * sizeof *out->v);
    if (!out->v)
        die("out of memory");
    out->v[out->n++] = xstrdup(item);
    return 0;
}

/* "a, b, c", or for entries that hold commas the libconfig form
 * [ "a,b", "c" ] (quoted, no escapes). */
static int parse_strlist(const rdv_setting *s, char *v, rdv_strlist *out, const char **why)
{
    strlist_free(out);
    v = trim(v);
    if (*v == '[') {
        for (char *p = v + 1;;) {
            char *q = strchr(p, '"'), *e = q ? strchr(q + 1, '"') : NULL;
            if (!q || !e)
                return strchr(p, ']') ? 0 : (*why = "unterminated [ list ]", -EINVAL);
            *e = 0;
            if (strlist_add(s, out, q + 1, why) < 0)
                return -EINVAL;
            p = e + 1;
        }
    }
    char *save = NULL;
    for (char *item = strtok_r(v, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        item = trim(item);
        if (*item && strlist_add(s, out, item, why) < 0)
            return -EINVAL;
    }
    return 0;
}

/* Set one field from text; *why says what is wrong on -EINVAL. */
static int set_value(const rdv_setting *s, char *v, void *cfg, const char **why)
{
    void *f = (char *)cfg + s->offset;
    char *end;
    errno = 0;
    switch (s->type) {
    case RDV_SET_INT: {
        long long x = strtoll(v, &end, 0);
        if (!*v || *end || errno)
            return *why = "not an integer", -EINVAL;
        if ((s->min || s->max) && (x < s->min || x > s->max))
            return *why = "out of range", -EINVAL;
        *(int64_t *)f = x;
        return 0;
    }
    case RDV_SET_BOOL:
        return parse_bool(v, f) < 0 ? (*why = "not a boolean", -EINVAL) : 0;
    case RDV_SET_DOUBLE: {
        double x = strtod(v, &end);
        if (!*v || *end || errno)
            return *why = "not a number", -EINVAL;
        if ((s->dmin != 0 || s->dmax != 0) && (x < s->dmin || x > s->dmax))
            return *why = "out of range", -EINVAL;
        *(double *)f = x;
        return 0;
    }
    case RDV_SET_STRING:
        if (strlen(v) > cap_of(s))
            return *why = "too long", -EINVAL;
        free(*(char **)f);
        *(char **)f = xstrdup(v);
        return 0;
    case RDV_SET_STRLIST:
        return parse_strlist(s, v, f, why);
    }
    return *why = "unknown setting type", -EINVAL;
}

static void cfg_defaults(const rdv_setting *tbl, void *cfg)
{
    for (const rdv_setting *s = tbl; s && s->name; s++) {
        void *f = (char *)cfg + s->offset;
        switch (s->type) {
        case RDV_SET_INT: *(int64_t *)f = s->idef; break;
        case RDV_SET_BOOL: *(bool *)f = s->idef != 0; break;
        case RDV_SET_DOUBLE: *(double *)f = s->ddef; break;
        case RDV_SET_STRING: *(char **)f = xstrdup(s->sdef ? s->sdef : ""); break;
        case RDV_SET_STRLIST: break; /* calloc'ed: empty */
        }
    }
}

static const rdv_setting *find_setting(const rdv_setting *tbl, const char *key)
{
    for (const rdv_setting *s = tbl; s && s->name; s++)
        if (strcmp(s->name, key) == 0)
            return s;
    return NULL;
}

/* One "key=value" line; blank and '#' lines are fine. */
static int apply_line(fc_core *fc, const rdv_module *m, char *line, void *cfg)
{
    line = trim(line);
    if (!*line || *line == '#')
        return 0;
    char *eq = strchr(line, '=');
    if (!eq) {
        core_log(fc, RDV_LOG_ERR, "%s: '%s': expected key=value", m->name, line);
        return -EINVAL;
    }
    *eq = '\0';
    char *key = trim(line), *v = trim(eq + 1);
    size_t vl = strlen(v);
    if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"')
        v[vl - 1] = '\0', v++;
    const rdv_setting *s = find_setting(m->settings, key);
    const char *why = "unknown setting";
    if (s && set_value(s, v, cfg, &why) == 0)
        return 0;
    core_log(fc, RDV_LOG_ERR, "%s.%s: %s ('%s')", m->name, key, why, v);
    return -EINVAL;
}

static void cfg_free(const rdv_module *m, void *cfg)
{
    cfg_release(m->settings, cfg);
    free(cfg);
}

/* Defaults, then conf lines, then validate. Returns 0 with *out set (free
 * with cfg_free), or -EINVAL with the reason logged. */
static int cfg_build(fc_core *fc, const rdv_module *m, const char *conf, void **out)
{
    void *cfg = xcalloc(1, m->config_size);
    cfg_defaults(m->settings, cfg);
    char *text = xstrdup(conf ? conf : ""), *save = NULL;
    int r = 0;
    for (char *line = strtok_r(text, "\n", &save); line && r == 0; line = strtok_r(NULL, "\n", &save))
        r = apply_line(fc, m, line, cfg);
    free(text);
    char err[256] = "";
    if (r == 0 && m->validate && m->validate(cfg, err, sizeof err) < 0) {
        core_log(fc, RDV_LOG_ERR, "%s: %s", m->name, err);
        r = -EINVAL;
    }
    if (r < 0) {
        cfg_free(m, cfg);
        return r;
    }
    *out = cfg;
    return 0;
}

static bool strlist_equal(const rdv_strlist *a, const rdv_strlist *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

static bool value_equal(const rdv_setting *s, const void *a, const void *b)
{
    const void *fa = (const char *)a + s->offset, *fb = (const char *)b + s->offset;
    switch (s->type) {
    case RDV_SET_INT: return *(const int64_t *)fa == *(const int64_t *)fb;
    case RDV_SET_BOOL: return *(const bool *)fa == *(const bool *)fb;
    case RDV_SET_DOUBLE: return *(const double *)fa == *(const double *)fb;
    case RDV_SET_STRING: return strcmp(*(char *const *)fa, *(char *const *)fb) == 0;
    case RDV_SET_STRLIST: return strlist_equal(fa, fb);
    }
    return false;
}

/* ------------------------------------------------------------------ module lifecycle */
static bool loaded(fc_core *fc, const char *name)
{
    for (fc_mod *md = fc->mods; md; md = md->next)
        if (strcmp(md->m->name, name) == 0)
            return true;
    return false;
}

static fc_mod *find_mod(fc_core *fc, const rdv_module *m, void *state)
{
    for (fc_mod *md = fc->mods; md; md = md->next)
        if (md->m == m && md->state == state)
            return md;
    die("module '%s' with this state is not loaded", m->name);
}

/* Handler rows conflict like in the real core: same tag, overlapping
 * transports and listeners, not both RDV_HF_SHARED. */
static int add_handlers(fc_core *fc, fc_mod *md)
{
    for (const rdv_handler *h = md->m->handlers; h && h->fn; h++) {
        if (h->tag < 0 || h->tag > RDV_TAG_MAX || !h->fn || !(h->transports & RDV_TR_ANY)) {
            core_log(fc, RDV_LOG_ERR, "%s: handler for tag %d is invalid", md->m->name, h->tag);
            return -EINVAL;
        }
        fc_hentry **pp = &fc->table[h->tag];
        for (; *pp; pp = &(*pp)->next) {
            const rdv_handler *o = (*pp)->h;
            if ((o->transports & h->transports) && (!o->listener || !h->listener || !strcmp(o->listener, h->listener)) &&
                !(o->flags & h->flags & RDV_HF_SHARED)) {
                core_log(fc, RDV_LOG_ERR, "%s (tag %d) is claimed by both modules '%s' and '%s'",
                         rdv_msg_tag_name(h->tag), h->tag, (*pp)->mod->m->name, md->m->name);
                return -EEXIST;
            }
        }
        fc_hentry *e = xcalloc(1, sizeof *e);
        e->h = h, e->mod = md;
        *pp = e;
    }
    return 0;
}

static void add_access(fc_core *fc, fc_mod *md)
{
    fc_access *a = xcalloc(1, sizeof *a);
    a->mod = md;
    fc_access **pp = &fc->access;
    while (*pp && (*pp)->mod->m->access_priority <= md->m->access_priority)
        pp = &(*pp)->next;
    a->next = *pp;
    *pp = a;
}

/* Free the entries of a named list (hooks, services, commands) owned by who. */
#define DROP_OWNED(head, type, who)          \
    do {                                     \
        type *e_, *t_;                       \
        LL_FOREACH_SAFE(head, e_, t_)        \
            if (e_->owner == (who)) {        \
                LL_DELETE(head, e_);         \
                free(e_->name);              \
                free(e_);                    \
            }                                \
    } while (0)

/* What a module forgot to free: report it, then free it, so its callbacks
 * can never run on a destroyed state. */
#define DROP_LEAKED(head, type, what, who)                                                      \
    do {                                                                                        \
        type *e_, *t_;                                                                          \
        DL_FOREACH_SAFE(head, e_, t_)                                                           \
            if (e_->owner == (who)) {                                                           \
                fprintf(stderr, "fakecore: module '%s' did not free a %s\n", (who)->name, what); \
                DL_DELETE(head, e_);                                                            \
                free(e_);                                                                       \
            }                                                                                   \
    } while (0)

static void drop_handlers(fc_core *fc, fc_mod *md)
{
    for (int t = 0; t <= RDV_TAG_MAX; t++) {
        fc_hentry *e, *tmp;
        LL_FOREACH_SAFE(fc->table[t], e, tmp)
            if (e->mod == md) {
                LL_DELETE(fc->table[t], e);
                free(e);
            }
    }
    fc_access *a, *tmp;
    LL_FOREACH_SAFE(fc->access, a, tmp)
        if (a->mod == md) {
            LL_DELETE(fc->access, a);
            free(a);
        }
}

/* Connections on the module's own listeners end before destroy, as at
 * shutdown. */
static void close_owned_conns(fc_core *fc, fc_hd *owner)
{
    for (size_t i = 0; i < fc->nconns; i++) {
        fc_conn_rec *c = fc->conns[i];
        if (c->st.open && c->st.listener->owner == owner)
            conn_end(fc, c, RDV_CLOSE_SHUTDOWN);
    }
}

/* The module's listeners become unfindable (a reload may open them again)
 * but stay allocated for fc_conn() until fc_free. */
static void retire_listeners(fc_core *fc, fc_hd *owner)
{
    rdv_listener *l, *tmp;
    LL_FOREACH_SAFE(fc->listeners, l, tmp)
        if (l->owner == owner) {
            LL_DELETE(fc->listeners, l);
            l->ops = NULL, l->ud = NULL;
            LL_PREPEND(fc->retired, l);
        }
}

static void drop_gauges(fc_core *fc, fc_hd *owner)
{
    for (fc_stat *s = fc->stats; s; s = s->next)
        if (s->owner == owner)
            s->fn = NULL;
}

static void mod_remove(fc_core *fc, fc_mod *md, bool started)
{
    fc_hd *h = md->h;
    if (started && md->m->stop)
        md->m->stop(md->state);
    close_owned_conns(fc, h);
    if (md->inited && md->m->destroy)
        md->m->destroy(md->state);
    drop_handlers(fc, md);
    retire_listeners(fc, h);
    drop_gauges(fc, h);
    DROP_OWNED(fc->hooks, fc_hook, h);
    DROP_OWNED(fc->services, fc_service, h);
    DROP_OWNED(fc->cmds, fc_cmd, h);
    DROP_LEAKED(fc->timers, rdv_timer, "timer", h);
    DROP_LEAKED(fc->ios, rdv_io, "io watcher", h);
    DROP_LEAKED(fc->asyncs, rdv_async, "async handle", h);
    cfg_free(md->m, md->cfg);
    LL_DELETE(fc->mods, md);
    free(md);
}

static int check_abi(fc_core *fc, const rdv_module *m)
{
    if (m->abi_major == RDV_ABI_MAJOR && m->abi_minor <= RDV_ABI_MINOR)
        return 0;
    core_log(fc, RDV_LOG_ERR, "%s: ABI %u.%u, core has %u.%u", m->name, m->abi_major, m->abi_minor,
             RDV_ABI_MAJOR, RDV_ABI_MINOR);
    return -EINVAL;
}

/* check() (ABI 1.2) as the core runs it: before init (state NULL) and
 * before reconfigure; a refusal is logged as the core would report it. */
static int run_check(fc_core *fc, const rdv_module *m, void *state, const void *cfg)
{
    char err[512] = "";
    int (*check)(rdv_core *, void *, const void *, char *, size_t) = RDV_MODULE_CHECK(m);
    if (!check || check(fc_handle(fc, m->name), state, cfg, err, sizeof err) >= 0)
        return 0;
    core_log(fc, RDV_LOG_ERR, "%s: %s", m->name, err);
    return -EINVAL;
}

int fc_load(fc_core *fc, const rdv_module *m, const char *conf, void **state)
{
    void *cfg;
    int r = check_abi(fc, m);
    if (r == 0 && loaded(fc, m->name)) {
        core_log(fc, RDV_LOG_ERR, "%s: already loaded", m->name);
        r = -EEXIST;
    }
    if (r < 0 || (r = cfg_build(fc, m, conf, &cfg)) < 0)
        return r;
    if ((r = run_check(fc, m, NULL, cfg)) < 0) {
        cfg_free(m, cfg);
        return r;
    }
    fc_mod *md = xcalloc(1, sizeof *md);
    md->m = m, md->h = hd_of(fc_handle(fc, m->name)), md->cfg = cfg;
    LL_APPEND(fc->mods, md);
    if ((r = add_handlers(fc, md)) < 0 || (m->init && (r = m->init(&md->h->base, cfg, &md->state)) < 0)) {
        mod_remove(fc, md, false);
        return r;
    }
    md->inited = true;
    if (m->access)
        add_access(fc, md);
    if (m->start && (r = m->start(md->state)) < 0) {
        core_log(fc, RDV_LOG_ERR, "%s: start failed: %s", m->name, strerror(-r));
        mod_remove(fc, md, false);
        return r;
    }
    *state = md->state;
    return 0;
}

void fc_unload(fc_core *fc, const rdv_module *m, void *state)
{
    mod_remove(fc, find_mod(fc, m, state), true);
}

static const rdv_setting *nonreloadable_change(const rdv_module *m, const void *a, const void *b)
{
    for (const rdv_setting *s = m->settings; s && s->name; s++)
        if (!(s->flags & RDV_SETF_RELOAD) && !value_equal(s, a, b))
            return s;
    return NULL;
}

int fc_reconfigure(fc_core *fc, const rdv_module *m, void *state, const char *conf)
{
    fc_mod *md = find_mod(fc, m, state);
    void *cfg;
    int r = cfg_build(fc, m, conf, &cfg);
    if (r < 0)
        return r;
    const rdv_setting *s = nonreloadable_change(m, md->cfg, cfg);
    if (s) {
        core_log(fc, RDV_LOG_ERR, "%s.%s cannot change without a restart", m->name, s->name);
        r = -EPERM;
    } else if ((r = run_check(fc, m, state, cfg)) == 0 && m->reconfigure) {
        r = m->reconfigure(state, cfg);
    }
    if (r < 0) {
        cfg_free(m, cfg);
        return r;
    }
    cfg_free(m, md->cfg);
    md->cfg = cfg;
    return 0;
}

/* ------------------------------------------------------------------ teardown */
static void free_listeners(rdv_listener *head)
{
    rdv_listener *l, *tmp;
    LL_FOREACH_SAFE(head, l, tmp) {
        free(l->name);
        free(l);
    }
}

void fc_free(fc_core *fc)
{
    if (!fc)
        return;
    while (fc->mods) { /* reverse load order */
        fc_mod *last = fc->mods;
        while (last->next)
            last = last->next;
        mod_remove(fc, last, true);
    }
    fc_clear_sent(fc);
    fc_log_clear(fc);
    for (size_t i = 0; i < fc->nconns; i++) {
        free(fc->conns[i]->rbuf);
        free(fc->conns[i]);
    }
    free(fc->conns);
    free(fc->arena);
    free_listeners(fc->listeners);
    free_listeners(fc->retired);
    fc_stat *s, *st;
    LL_FOREACH_SAFE(fc->stats, s, st) {
        free(s->name), free(s->help);
        free(s);
    }
    for (fc_hd *h = fc->handles, *next; h; h = next) { /* handles last: the rest names them */
        next = h->next;
        DROP_LEAKED(fc->timers, rdv_timer, "timer", h);
        DROP_LEAKED(fc->ios, rdv_io, "io watcher", h);
        DROP_LEAKED(fc->asyncs, rdv_async, "async handle", h);
        DROP_OWNED(fc->hooks, fc_hook, h);
        DROP_OWNED(fc->services, fc_service, h);
        DROP_OWNED(fc->cmds, fc_cmd, h);
        free(h->name);
        free(h);
    }
    free(fc);
}
