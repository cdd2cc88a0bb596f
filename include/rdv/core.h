/* rdv/core.h — the function table the core hands to every module.
 *
 * Modules link against nothing of the core: everything they may call is in
 * rdv_core_api, reached through the rdv_core handle given to init(). Each
 * module gets its own handle, so the core knows who is calling (log prefix,
 * stats names, ownership of timers and commands). The fake core used by unit
 * tests implements this same table.
 *
 * Ownership, in one sentence per call, is stated next to each member.
 */
#ifndef RDV_CORE_H
#define RDV_CORE_H

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>

#include "rdv/module.h"
#include "rdv/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define RDV_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define RDV_PRINTF(a, b)
#endif

/* The handle a module receives; the rest of the core's state is private. */
struct rdv_core {
    const rdv_core_api *api;
};

/* Rate limiter state for per-packet log lines; one static per call site. */
typedef struct rdv_ratelimit {
    uint64_t window_start_ms;
    uint32_t in_window;
    uint32_t suppressed;
} rdv_ratelimit;

/* I/O readiness bits for rdv_io. */
enum { RDV_IO_READ = 1, RDV_IO_WRITE = 2 };

/* Why a connection closed (rdv_conn_ops.on_close, "conn.close" hook). */
typedef enum rdv_close_reason {
    RDV_CLOSE_PEER = 1,      /* orderly EOF from the peer */
    RDV_CLOSE_ERROR,         /* socket error */
    RDV_CLOSE_IDLE,          /* idle timeout */
    RDV_CLOSE_PROTOCOL,      /* bad frame, undecodable message, bad record */
    RDV_CLOSE_OVERSIZE,      /* frame larger than the configured maximum */
    RDV_CLOSE_OVERFLOW,      /* write queue over its limit */
    RDV_CLOSE_LOCAL,         /* a module or handler asked for it */
    RDV_CLOSE_SHUTDOWN,      /* server stopping */
    RDV_CLOSE_DETACHED,      /* a module took the socket over */
} rdv_close_reason;

/* ------------------------------------------------------------------ listeners
 * Dispatch listeners (speaking RendezvousMessage) are declared in the core's
 * configuration and named ("main", "nat"). A module may also open listeners
 * it owns, that speak its own protocol (relay, WebSocket, ...). */
typedef enum rdv_listen_mode {
    RDV_LISTEN_DISPATCH = 1, /* hbb frames / datagrams -> ACCESS -> dispatch table */
    RDV_LISTEN_FRAMED,       /* hbb frames -> ops->on_frame */
    RDV_LISTEN_RAW,          /* bytes -> ops->on_data (TCP) / ops->on_datagram (UDP) */
    /* FRAMED, but never reading past the frame being assembled (ABI 1.1):
     * for a module that takes the socket over after its first frame
     * (conn_detach), whatever the client sends next stays in the kernel's
     * socket buffer instead of arriving in user space as bytes the module
     * must hold. Costs a read per header and per payload. */
    RDV_LISTEN_FRAMED_EXACT,
} rdv_listen_mode;

typedef struct rdv_conn_ops {
    /* A connection was accepted. Return RDV_OK, or RDV_CLOSE to refuse. */
    int (*on_open)(void *ud, rdv_conn_id id, const rdv_addr *peer);
    /* FRAMED: one whole frame payload (borrowed). RDV_OK or RDV_CLOSE. */
    int (*on_frame)(void *ud, rdv_conn_id id, const uint8_t *p, size_t n);
    /* RAW (TCP): buffered bytes (borrowed). Return how many were consumed
     * (the rest stays buffered, up to the listener's buffer limit), or a
     * negative value to close. */
    long (*on_data)(void *ud, rdv_conn_id id, const uint8_t *p, size_t n);
    /* RAW (UDP): one datagram. */
    void (*on_datagram)(void *ud, rdv_listener *l, const rdv_addr *from, const uint8_t *p, size_t n);
    /* The connection is gone (id is no longer valid after this returns). */
    void (*on_close)(void *ud, rdv_conn_id id, rdv_close_reason why);
    /* The write queue drained below its low-water mark (back-pressure). */
    void (*on_drain)(void *ud, rdv_conn_id id);
} rdv_conn_ops;

typedef struct rdv_listen_spec {
    const char *name;        /* for logs, stats and handler filters */
    rdv_transport transport; /* RDV_TR_TCP or RDV_TR_UDP */
    const char *bind;        /* NULL or "" = [::] dual stack, falling back to 0.0.0.0 */
    int port;
    rdv_listen_mode mode;
    uint64_t idle_ms;        /* TCP: close after this long without a complete frame/any data; 0 = core default */
    size_t max_buffer;       /* RAW: read buffer cap; 0 = core default */
    const rdv_conn_ops *ops; /* required unless mode == DISPATCH */
    void *ud;
    size_t max_frame;        /* framed modes: largest payload; 0 or more than core.max_frame = core.max_frame */
} rdv_listen_spec;

/* A codec installed on a connection by a transport module: it says what
 * transport handlers see and writes the header put before each outgoing
 * message (e.g. a WebSocket binary frame header). Returns the header length
 * (<= 16) or 0 if the payload cannot be sent. */
typedef struct rdv_codec {
    const char *name;
    rdv_transport transport;
    size_t (*header)(void *ud, size_t payload_len, uint8_t out[16]);
} rdv_codec;

typedef struct rdv_conn_info {
    rdv_addr peer;
    rdv_transport transport;
    rdv_listener *listener;
    const char *listener_name;
    uint64_t opened_ms;
    uint64_t bytes_in, bytes_out;
    size_t wqueue;           /* bytes waiting to be written */
    bool secure;             /* record layer installed */
} rdv_conn_info;

/* ------------------------------------------------------------------ hooks */
typedef void (*rdv_hook_fn)(void *ud, const void *arg);

/* Core hooks. Argument: const rdv_conn_event *. */
#define RDV_HOOK_CONN_OPEN "conn.open"
#define RDV_HOOK_CONN_CLOSE "conn.close"
typedef struct rdv_conn_event {
    rdv_conn_id id;
    rdv_listener *listener;
    const char *listener_name;
    rdv_transport transport;
    const rdv_addr *peer;
    rdv_close_reason why; /* conn.close only */
} rdv_conn_event;

/* ------------------------------------------------------------------ stats */
/* One counter or gauge as stats_each() shows it (valid during the call). */
typedef struct rdv_stat_view {
    const char *name;  /* "<module>.<name>" */
    const char *help;  /* "" when none was given */
    bool gauge;        /* read through a function: may go down */
    uint64_t value;
} rdv_stat_view;

/* ------------------------------------------------------------------ admin */
/* argv[0] is the command name. Write the answer with api->out(). */
typedef void (*rdv_admin_fn)(void *ud, int argc, char **argv, rdv_buf *out);

/* ------------------------------------------------------------------ the table */
struct rdv_core_api {
    size_t size; /* sizeof(rdv_core_api) in the core; members past it are absent */
    uint32_t abi_major, abi_minor;

    /* Logging. The module name is prefixed. log_ratelimit() returns true when a
     * line may be written now (at most a few per second per call site); use
     * the RDV_LOG_RL macro rather than calling it directly. */
    void (*log)(rdv_core *c, rdv_log_level lvl, const char *fmt, ...) RDV_PRINTF(3, 4);
    void (*vlog)(rdv_core *c, rdv_log_level lvl, const char *fmt, va_list ap) RDV_PRINTF(3, 0);
    bool (*log_enabled)(rdv_core *c, rdv_log_level lvl);
    bool (*log_ratelimit)(rdv_core *c, rdv_ratelimit *rl);

    /* Time. now_ms: monotonic loop time (cached per loop iteration).
     * wall_us: wall clock in microseconds since the epoch. */
    uint64_t (*now_ms)(rdv_core *c);
    uint64_t (*wall_us)(rdv_core *c);

    /* Timers (owned by the caller; free them in destroy). repeat 0 = one shot. */
    rdv_timer *(*timer_new)(rdv_core *c, void (*cb)(void *ud), void *ud);
    void (*timer_start)(rdv_timer *t, uint64_t after_ms, uint64_t repeat_ms);
    void (*timer_stop)(rdv_timer *t);
    void (*timer_free)(rdv_timer *t);

    /* File-descriptor watchers for sockets a module owns (e.g. after
     * conn_detach). The fd stays the caller's; io_free does not close it. */
    rdv_io *(*io_new)(rdv_core *c, int fd, unsigned events,
                      void (*cb)(void *ud, int fd, unsigned revents), void *ud);
    void (*io_set)(rdv_io *w, unsigned events); /* 0 = stop watching */
    void (*io_free)(rdv_io *w);

    /* Wake the loop from another thread (storage workers). async_send is the
     * only call in this table that is safe from a non-loop thread. */
    rdv_async *(*async_new)(rdv_core *c, void (*cb)(void *ud), void *ud);
    void (*async_send)(rdv_async *a);
    void (*async_free)(rdv_async *a);

    /* Listeners. listener_find looks up a dispatch or module listener by
     * name and transport (NULL if none). listen opens a module-owned one
     * (call from start(); it lives until shutdown); errors are logged with
     * the address and port and return NULL. */
    rdv_listener *(*listener_find)(rdv_core *c, const char *name, rdv_transport tr);
    rdv_listener *(*listen)(rdv_core *c, const rdv_listen_spec *spec);
    const char *(*listener_name)(const rdv_listener *l);
    int (*listener_port)(const rdv_listener *l);

    /* Sending. msg is a const Hbb__RendezvousMessage * (rdv/proto.h); it is
     * packed at once, the caller keeps it. send() frames it for the
     * connection's codec and encrypts it if a key is installed. Return 0,
     * -ENOTCONN (connection gone), -EMSGSIZE, or -ENOBUFS (core.write_queue_max
     * bytes were already queued: the connection is closed). The queue takes
     * any one message whole (framed ones up to core.max_frame, else
     * -EMSGSIZE), so bound what you send and watch conn_info's wqueue. */
    int (*send_udp)(rdv_core *c, rdv_listener *via, const rdv_addr *to, const void *msg);
    int (*send_udp_raw)(rdv_core *c, rdv_listener *via, const rdv_addr *to, const uint8_t *p, size_t n);
    int (*send)(rdv_core *c, rdv_conn_id id, const void *msg);
    int (*send_payload)(rdv_core *c, rdv_conn_id id, const uint8_t *p, size_t n); /* one message, framed */
    int (*send_bytes)(rdv_core *c, rdv_conn_id id, const uint8_t *p, size_t n);   /* as is, no framing */

    /* Connections. flush: write what is queued first (bounded by the
     * shutdown timeout). */
    int (*conn_close)(rdv_core *c, rdv_conn_id id, bool flush);
    int (*conn_info)(rdv_core *c, rdv_conn_id id, rdv_conn_info *out);
    /* Install the secure-TCP record layer (wire.md §6.4) on a framed
     * connection: later frames in both directions are sealed/opened with
     * key; counters start at 0. The key is copied. */
    int (*conn_set_key)(rdv_core *c, rdv_conn_id id, const uint8_t key[32]);
    int (*conn_set_idle)(rdv_core *c, rdv_conn_id id, uint64_t idle_ms);
    /* Transport modules: install a codec (e.g. WebSocket) on a RAW
     * connection, then feed each whole message with conn_dispatch(): it goes
     * through ACCESS and the dispatch table as if from a dispatch listener
     * named like the connection's listener. Returns RDV_OK, or RDV_CLOSE when
     * the message asks for the connection to end (unknown tag, undecodable,
     * a handler's RDV_CLOSE or error): the calling transport module closes
     * it (after its own close handshake, if any). */
    int (*conn_set_codec)(rdv_core *c, rdv_conn_id id, const rdv_codec *codec, void *ud);
    int (*conn_dispatch)(rdv_core *c, rdv_conn_id id, const uint8_t *p, size_t n);
    /* Stop/resume reading (back-pressure from a slow partner). */
    int (*conn_pause)(rdv_core *c, rdv_conn_id id, bool paused);
    /* Take the socket over: the core forgets the connection (on_close is
     * not called; the conn.close hook runs with RDV_CLOSE_DETACHED), returns
     * its fd and copies bytes it had read but not delivered into buf (*len
     * in: capacity, out: used; -ENOSPC and nothing changes if they do not
     * fit; queued output must be empty, else -EBUSY). The caller owns the fd. */
    int (*conn_detach)(rdv_core *c, rdv_conn_id id, int *fd, uint8_t *buf, size_t *len);

    /* Services: a versioned vtable published by name; one provider per name. */
    int (*service_publish)(rdv_core *c, const char *name, uint32_t version,
                           const void *vtable, void *self);
    const void *(*service_get)(rdv_core *c, const char *name, uint32_t min_version, void **self);

    /* Hooks: typed notifications by name; lower priority runs first. */
    int (*hook_add)(rdv_core *c, const char *name, int priority, rdv_hook_fn fn, void *ud);
    void (*hook_run)(rdv_core *c, const char *name, const void *arg);

    /* Stats. counter(): a uint64_t the module increments directly, named
     * "<module>.<name>", valid for the process lifetime. gauge(): read on
     * demand through fn. Both show in the admin "stats" command. */
    uint64_t *(*counter)(rdv_core *c, const char *name, const char *help);
    int (*gauge)(rdv_core *c, const char *name, uint64_t (*fn)(void *ud), void *ud, const char *help);

    /* Admin console commands (name must be unique). out() appends text to
     * the answer (bounded; excess is cut with a marker). */
    int (*admin_command)(rdv_core *c, const char *name, const char *usage, rdv_admin_fn fn, void *ud);
    void (*out)(rdv_buf *b, const char *fmt, ...) RDV_PRINTF(2, 3);
    /* Run an admin command line as the console would (for compatibility
     * consoles such as upstream's loopback TCP one). Returns a malloc'ed,
     * NUL-terminated answer (caller frees) or NULL when out of memory. */
    char *(*admin_exec)(rdv_core *c, const char *line);

    /* Misc. */
    const char *(*module_name)(rdv_core *c);
    /* Core settings modules may need: "max_frame", "idle_ms",
     * "max_connections", "write_queue_max". -ENOENT if unknown. */
    int (*core_int)(rdv_core *c, const char *name, int64_t *out);

    /* Members added after ABI 1.0 (check api->size before calling). */
    /* Transport modules: attribute the connection to another address (e.g.
     * X-Real-IP sent by a trusted reverse proxy, rendezvous.md §12). Later
     * messages (ACCESS, handlers' ctx->peer), conn_info and the conn.close
     * hook see it; the socket is unchanged. Copied and normalised. 0,
     * -ENOTCONN or -EAFNOSUPPORT. */
    int (*conn_set_peer)(rdv_core *c, rdv_conn_id id, const rdv_addr *peer);
    /* ABI 1.3. Every counter and gauge of the process, in name order, each
     * with its current value (gauges read now), for exporters such as the
     * metrics module. Loop thread only; fn must not register stats. */
    void (*stats_each)(rdv_core *c, void (*fn)(void *ud, const rdv_stat_view *st), void *ud);
};

/* ------------------------------------------------------------------ sugar */
#define RDV_LOG(c, lvl, ...) ((c)->api->log((c), (lvl), __VA_ARGS__))
#define RDV_ERR(c, ...) RDV_LOG(c, RDV_LOG_ERR, __VA_ARGS__)
#define RDV_WARN(c, ...) RDV_LOG(c, RDV_LOG_WARN, __VA_ARGS__)
#define RDV_NOTICE(c, ...) RDV_LOG(c, RDV_LOG_NOTICE, __VA_ARGS__)
#define RDV_INFO(c, ...) RDV_LOG(c, RDV_LOG_INFO, __VA_ARGS__)
#define RDV_DEBUG(c, ...) \
    do { if ((c)->api->log_enabled((c), RDV_LOG_DEBUG)) RDV_LOG(c, RDV_LOG_DEBUG, __VA_ARGS__); } while (0)
/* Rate-limited per call site, for anything a packet can trigger. */
#define RDV_LOG_RL(c, lvl, ...)                                                   \
    do {                                                                          \
        static rdv_ratelimit rdv_rl_;                                             \
        if ((c)->api->log_enabled((c), (lvl)) && (c)->api->log_ratelimit((c), &rdv_rl_)) \
            RDV_LOG(c, lvl, __VA_ARGS__);                                         \
    } while (0)

/* Start a module's worker thread (storage, resolver, file writer) with every
 * signal blocked: signals are the loop's (SIGHUP reloads, SIGTERM drains),
 * and a worker interrupted in fsync or getaddrinfo gains nothing. The
 * caller's own mask is restored. Returns 0 or an errno value, as
 * pthread_create. */
static inline int rdv_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}

#ifdef __cplusplus
}
#endif
#endif
