/* relay.h — internals of the relay module (hbbr, ../../shared/spec/relay.md),
 * shared by its source files. Nothing here is exported: the module is built
 * with hidden visibility and only rdv_module_get leaves the .so.
 *
 * Life of a relay connection (relay.md §12):
 *   accepted by the core on our FRAMED listener (the core runs the frame
 *   codec and the first-frame timeout) -> first frame = RequestRelay ->
 *   the socket is detached from the core and either WAITS (relay_wait.c)
 *   or completes a PAIR with the waiting one. A pair of two TCP sockets is a
 *   raw pipe moved with splice(2) (relay_pipe.c); a pair with a message side
 *   (WebSocket, relay_ws.c) moves whole messages between endpoints
 *   (relay_msg.c).
 *   Bandwidth (relay_bw.c), the black/block lists (relay_lists.c), the hbbr
 *   console commands (relay_cmd.c, relay_console.c) sit around them. */
#ifndef RDV_RELAY_H
#define RDV_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rdv/core.h>
#include <rdv/proto.h>
#include <rdv/wire.h>

/* Out of memory in the lists, waiting sides and WebSocket sides refuses one operation (rdv/uthash.h). */
#define RDV_UTHASH_PREFIX relay
#include <rdv/uthash.h>

/* ------------------------------------------------------------------ settings */
typedef struct relay_cfg {
    int64_t port;
    char *bind;
    char *key;
    char *key_file;
    double total_bandwidth, single_bandwidth, limit_speed, downgrade_threshold;
    int64_t downgrade_start_check;
    char *blacklist_file, *blocklist_file;
    int64_t list_max;
    int64_t first_timeout_ms, wait_timeout_ms, idle_timeout_ms, stall_timeout_ms;
    int64_t max_waiting, max_pairs;
    int64_t first_frame_max, uuid_max;
    int64_t pipe_size, pipe_size_max, pipe_pool;
    int64_t refill_ms;
    bool console_loopback;
    bool message_mode;
    char *ws_listener;
    int64_t message_max, message_queue;
    int64_t message_total, message_timeout_ms;
    int64_t early_total;
} relay_cfg;

extern const rdv_setting relay_settings[];

typedef struct relay relay;
typedef struct relay_pair relay_pair;
typedef struct relay_waiter relay_waiter;
typedef struct relay_ep relay_ep;

/* ------------------------------------------------------------------ text
 * Console output is an rdv_text (rdv/wire.h) with a cap, used by both the
 * core's admin socket (copied into its rdv_buf) and the loopback console. */

/* Rust's f64 Display: shortest text that reads back as v, never exponent
 * notation ("32", "0.5", "0.66"). out needs 400 bytes for any finite v. */
char *relay_fmt_f64(double v, char *out, size_t len);
/* Parsing like upstream's console and env (relay.md §6.1): a finite decimal
 * number > 0 / an unsigned integer > 0; anything else is refused (-EINVAL). */
int relay_parse_pos_f64(const char *s, double *out);
int relay_parse_pos_u64(const char *s, uint64_t *out);

/* ------------------------------------------------------------------ IP sets */
typedef struct relay_set_entry {
    UT_hash_handle hh;
    char key[];
} relay_set_entry;

typedef struct relay_set {
    const char *name;     /* "blacklist" / "blocklist", for logs */
    relay_set_entry *head;
    size_t n, max;
} relay_set;

/* Exact text membership (relay.md §7). */
bool relay_set_has(const relay_set *s, const char *key);
/* 1 added, 0 present already, -ENOSPC when full, -ENOMEM out of memory
 * (the set unchanged; both counted by the caller). */
int relay_set_add(relay_set *s, const char *key, size_t len);
bool relay_set_del(relay_set *s, const char *key);
void relay_set_clear(relay_set *s);
/* Replace the set by the entries of a list file (relay.md §7 format).
 * Returns the number of entries read, or -errno if the file is missing,
 * unreadable or not UTF-8, or memory ran out (-ENOMEM): the set is then
 * UNCHANGED (the caller decides: empty at start, the old entries on a
 * reload). *dropped counts entries past the cap. */
long relay_set_load(relay_set *s, const char *path, size_t *dropped);
/* Parse file contents (exposed for tests). */
long relay_set_parse(relay_set *s, const char *text, size_t n, size_t *dropped);
/* Textual form of an address's IP as the lists match it. */
char *relay_ip_text(const rdv_addr *a, char *buf, size_t len);
/* a's IP is in the blocklist. */
bool relay_blocked(const relay *r, const rdv_addr *a);

/* ------------------------------------------------------------------ bandwidth */
typedef struct relay_bucket {
    int64_t level;   /* bits; capacity = rate / 10 */
    uint64_t rate;   /* bit/s */
    uint64_t last_ms;
} relay_bucket;

typedef struct relay_bw {
    uint64_t total_bps, single_bps, limit_bps; /* bit/s = truncate(Mb/s x 2^20) */
    uint32_t dt_hundredths;                    /* downgrade threshold, % of single */
    uint64_t start_check_ms;                   /* downgrade start check */
    relay_bucket global;
} relay_bw;

void relay_bucket_init(relay_bucket *b, uint64_t rate, uint64_t now_ms);
void relay_bucket_refill(relay_bucket *b, uint64_t now_ms);
void relay_bucket_set_rate(relay_bucket *b, uint64_t rate, uint64_t now_ms);
/* Mb/s -> bit/s as upstream stores it. */
uint64_t relay_mbps_to_bps(double mbps);
/* Apply configured values (init, SIGHUP). */
void relay_bw_configure(relay *r, const relay_cfg *cfg);
/* Bytes the pair may move now (0 = it must wait for tokens). */
size_t relay_bw_allow(relay *r, relay_pair *p, size_t want);
/* Account n bytes received from side: buckets, counters, tick. Returns
 * false if the pair ended (the tick found it blocklisted). */
bool relay_bw_account(relay *r, relay_pair *p, int side, size_t n);
/* The per-pair accounting tick (relay.md §6.3) if a second has passed.
 * Returns false if the pair ended. */
bool relay_pair_tick(relay *r, relay_pair *p, uint64_t now);
/* Throttle bookkeeping: a throttled pair waits on the refill timer. */
void relay_throttle(relay *r, relay_pair *p);
void relay_unthrottle(relay *r, relay_pair *p);
void relay_refill_cb(void *ud);
/* Tokens available again for this pair (both buckets positive). */
bool relay_bw_ready(relay *r, relay_pair *p);

/* ------------------------------------------------------------------ pairs */
typedef enum relay_end {
    RELAY_END_EOF = 1,   /* a side closed (FIN) */
    RELAY_END_ERROR,     /* read/write error, RST */
    RELAY_END_IDLE,      /* nothing received for idle_timeout_ms */
    RELAY_END_STALL,     /* no write progress for stall_timeout_ms */
    RELAY_END_BLOCKED,   /* a side's IP was blocklisted */
    RELAY_END_NOMEM,     /* out of memory / descriptors */
    RELAY_END_MSG_TOTAL, /* message mode: a side's growth would pass relay.message_total */
    RELAY_END_MSG_TIMEOUT, /* message mode: a frame incomplete for message_timeout_ms */
    RELAY_END_SHUTDOWN,
} relay_end;

enum { RELAY_MODE_RAW = 1, RELAY_MODE_MSG = 2 };

/* One direction of a raw pair: bytes read from side d, written to side !d. */
typedef struct relay_dir {
    uint8_t *early;            /* bytes the core had read past the first frame */
    uint32_t early_len, early_off;
    uint32_t in_pipe;          /* bytes in the pipe, not yet written */
    uint32_t cap;              /* the pipe's capacity (its chunk) */
    int pr, pw;                /* the pipe (-1: none held) */
    bool filled;               /* the last read filled the pipe: a fast flow */
    bool nogrow;               /* the kernel refused to grow this pipe */
    bool eof;                  /* source said FIN: flush, then end the pair */
    bool blocked;              /* destination said EAGAIN */
} relay_dir;

struct relay_pair {
    relay *r;
    relay_pair *prev, *next;     /* r->pairs */
    relay_pair *tprev, *tnext;   /* r->throttled, while throttled */
    rdv_addr addr[2];            /* [0] early side, [1] late side (normalised) */
    uint64_t created_ms, last_rx_ms, last_tick_ms;
    /* Per direction d (side d -> side !d): its last write progress, or when
     * its data became pending. Per direction, so a side that never reads
     * cannot keep its stuck direction alive by sending (§4.6). */
    uint64_t out_ms[2];
    uint64_t elapsed_ms, total_bits, tick_bits;
    uint64_t thresh_bits_per_ms; /* snapshot at pairing (relay.md §6.3) */
    uint64_t rate_single, rate_limit;
    relay_bucket bucket;         /* the pair's SINGLE or LIMIT bucket */
    uint64_t bytes[2];           /* received from side i */
    uint32_t highest, current;   /* bit/ms */
    uint32_t list_gen;           /* lists generation last checked */
    uint8_t mode;
    bool throttled, blacklisted, downgraded;
    union {
        struct {
            int fd[2];
            rdv_io *io[2];
            unsigned ev[2];
            relay_dir dir[2];
        } raw;
        struct {
            relay_ep *ep[2];
            bool bp[2];          /* side i paused: its partner's queue is full */
            int8_t eof_side;     /* side that said EOF (-1: none): flush the other, then end */
            size_t qseen[2];     /* side i's queued() at the last tick: a fall is write progress */
        } msg;
    } u;
};

/* Form a pair. Takes ownership of fds and early buffers (malloc'ed, may be
 * NULL) in every case; returns NULL if it failed (everything closed). */
relay_pair *relay_pair_raw_new(relay *r, int fd[2], uint8_t *early[2], size_t early_len[2],
                               const rdv_addr addr[2]);
/* Common part: link, snapshot bandwidth, counters. */
void relay_pair_init(relay *r, relay_pair *p, const rdv_addr addr[2]);
/* End a pair: closes both sides, frees p. p is invalid afterwards. */
void relay_pair_end(relay *r, relay_pair *p, relay_end why);
void relay_tick_cb(void *ud);
/* Resume moving data (tokens available again). Returns false if it ended. */
bool relay_pair_resume(relay *r, relay_pair *p);
/* Raw-pair internals used by relay_pair_end / resume. */
void relay_raw_close(relay *r, relay_pair *p);
bool relay_raw_resume(relay *r, relay_pair *p);
bool relay_raw_pending(const relay_pair *p, int d);

/* Pipe pool: empty pipes are shared, so idle pairs hold none. */
int relay_pipe_get(relay *r, int *pr, int *pw, uint32_t *cap);
void relay_pipe_put(relay *r, int pr, int pw, uint32_t cap, bool empty);
void relay_raw_trim(relay *r, relay_pair *p, uint64_t now);
void relay_pipes_free(relay *r);

/* ------------------------------------------------------------------ message mode
 * relay.md §4.3. A pair with at least one message side (WebSocket) moves
 * whole messages. Each side is an endpoint; relay_ep_tcp.c implements the
 * TCP one (BytesCodec frames over a detached socket), relay_ws.c the
 * WebSocket one; a new kind enters through relay_offer_ep(). */
typedef struct relay_ep_ops {
    const char *name;
    /* Queue one whole message for the peer; 0 or -errno (the pair ends). */
    int (*send)(relay_ep *ep, const uint8_t *p, size_t n);
    /* Bytes accepted by send() and not yet written. */
    size_t (*queued)(const relay_ep *ep);
    /* Stop / resume delivering incoming messages. Resuming may deliver
     * buffered ones at once: returns RELAY_EP_GONE if the pair ended.
     * Pausing (on = false) only stops reading: it returns RELAY_EP_STOP
     * and never ends the endpoint (relay_wait.c relies on that). */
    int (*set_reading)(relay_ep *ep, bool on);
    /* When the frame being received began (0: none, or not reading). NULL:
     * the endpoint's transport keeps its own deadline (WebSocket). */
    uint64_t (*partial_since)(const relay_ep *ep);
    /* Re-read what the endpoint holds, for a queue that drains outside the
     * module (the core's write queue of a WebSocket side). Optional. */
    void (*sync)(relay_ep *ep);
    /* Close the connection and free the endpoint. */
    void (*destroy)(relay_ep *ep);
} relay_ep_ops;

struct relay_ep {
    const relay_ep_ops *ops;
    relay *r;
    relay_pair *pair;     /* set once paired */
    relay_waiter *waiter; /* set while waiting */
    size_t held;          /* bytes charged to r->msg_bytes (relay.message_total) */
    int side;
    bool reading;
};

/* relay.message_total: every message-mode buffer an endpoint keeps (TCP
 * input and output buffers, the queue of a WebSocket side) is charged here.
 * Set ep's share to n bytes. With check, a share that grows past
 * message_total is refused (false, nothing changed): the caller ends the
 * pair (RELAY_END_MSG_TOTAL). Shrinking always succeeds. */
bool relay_ep_hold(relay_ep *ep, size_t n, bool check);
/* Would ep's share of n bytes fit? */
bool relay_ep_fits(const relay_ep *ep, size_t n);

/* Endpoint -> relay. Return values tell the endpoint whether it may go on:
 * RELAY_EP_GO (keep delivering), RELAY_EP_STOP (reading was paused),
 * RELAY_EP_KEEP (not taken: still waiting for a partner; keep the message
 * and deliver it again after set_reading(true)), or RELAY_EP_GONE (the
 * endpoint was destroyed: return at once). */
enum { RELAY_EP_GO = 0, RELAY_EP_STOP = 1, RELAY_EP_KEEP = 2, RELAY_EP_GONE = -1 };
/* One whole message (n == 0: an empty unit or a control frame: activity only). */
int relay_msg_input(relay_ep *ep, const uint8_t *p, size_t n);
/* The endpoint's queue fell to or below half the cap. */
int relay_msg_drained(relay_ep *ep);
/* EOF, error or close from the endpoint's peer (also while waiting). */
int relay_msg_closed(relay_ep *ep, relay_end why);

/* The later of the two directions' out_ms: the pair's last write progress. */
uint64_t relay_pair_out_ms(const relay_pair *p);
relay_pair *relay_pair_msg_new(relay *r, relay_ep *ep[2], const rdv_addr addr[2]);
void relay_msg_close(relay *r, relay_pair *p);
bool relay_msg_resume(relay *r, relay_pair *p);
bool relay_msg_pending(const relay_pair *p, int side);
/* The tick's look at a message pair: a destination queue that fell since
 * the last tick made write progress (a WebSocket side tells us only when
 * its queue is empty); a frame incomplete for message_timeout_ms ends the
 * pair. Returns false if the pair ended. */
bool relay_msg_tick(relay *r, relay_pair *p, uint64_t now);

/* A TCP endpoint over a detached socket; early bytes are parsed first. */
relay_ep *relay_ep_tcp_new(relay *r, int fd, const uint8_t *early, size_t early_len);

/* ------------------------------------------------------------------ waiting */
struct relay_waiter {
    UT_hash_handle hh;
    relay *r;           /* r->waiting, keyed by uuid */
    relay_waiter *prev, *next;   /* FIFO by deadline (one timeout for all) */
    uint64_t deadline_ms;
    rdv_addr addr;
    int fd;                      /* TCP side, or -1 */
    rdv_io *io;                  /* watches for EOF while waiting */
    relay_ep *ep;                /* message side, or NULL */
    uint8_t *early;
    uint32_t early_len;
    uint16_t uuid_len;
    char uuid[];
};

/* A side presenting a valid RequestRelay: a detached TCP socket (fd,
 * early bytes) or a message endpoint. */
typedef struct relay_side {
    int fd;
    relay_ep *ep;
    uint8_t *early;
    size_t early_len;
    rdv_addr addr;
} relay_side;

/* Wait for a partner or pair with the waiting one. Takes the side in every
 * case (closing it on refusal). */
void relay_wait_or_pair(relay *r, relay_side *s, const char *uuid, size_t uuid_len);
void relay_waiter_free(relay *r, relay_waiter *w, bool close_side);
void relay_wait_timer_cb(void *ud);
void relay_waiting_close_all(relay *r);

/* ------------------------------------------------------------------ requests */
extern const rdv_conn_ops relay_conn_ops;

/* relay.md §3.3 on one first message. Returns 0 with uuid set (pointing
 * into the message), or the counter that says why it is refused. */
typedef struct relay_request {
    const char *uuid;
    size_t uuid_len;
} relay_request;
uint64_t *relay_check_request(relay *r, rdv_arena *a, const uint8_t *p, size_t n, const rdv_addr *peer,
                              relay_request *out);
/* Entry for message endpoints (WebSocket): the first message's payload.
 * RDV_OK: the endpoint waits or is paired; RDV_CLOSE: refused (the caller
 * destroys it). */
int relay_offer_ep(relay *r, relay_ep *ep, const rdv_addr *peer, const uint8_t *p, size_t n);

/* ------------------------------------------------------------------ relay key */
/* relay.md §11: the key clients must present ("" = none) into out. 0, 1 (a
 * key pair was needed but could not be written: no check, as upstream), 2
 * (a key pair was generated), or -errno with the reason in err. */
int relay_key_resolve(const char *key, const char *key_file, bool wait_for_file, char *out, size_t outlen,
                      char *err, size_t errlen);

/* ------------------------------------------------------------------ console */
/* Run one hbbr console command (relay.md §8); argv as split by the caller. */
void relay_cmd_run(relay *r, int argc, char **argv, rdv_text *out);
/* Split a console line like upstream: trim, then single spaces. */
int relay_cmd_split(char *line, char **argv, int max);
int relay_cmds_register(relay *r);

/* ------------------------------------------------------------------ WebSocket sides */
/* relay_ws.c: the "relay-ws" service websocket-transport hands sides to. */
typedef struct relay_ep_ws relay_ep_ws;
typedef struct relay_ws_job {
    rdv_conn_id id;
    int kind;
} relay_ws_job;
int relay_ws_publish(relay *r);
void relay_ws_timer_cb(void *ud);
void relay_ws_close_all(relay *r);
/* ACCESS phase: the blocklist at accept on the WebSocket port (§2). */
int relay_access(void *state, const rdv_msg_ctx *ctx, const void *msg);

typedef struct relay_console relay_console;
/* A loopback TCP console session on a detached socket (relay.md §8). */
void relay_console_start(relay *r, int fd);
void relay_consoles_close_all(relay *r);

/* ------------------------------------------------------------------ state */
typedef struct relay_stats {
    uint64_t *accepted, *requests, *paired;
    uint64_t *rej_blocked, *rej_bad_message, *rej_not_relay, *rej_bad_key, *rej_empty_uuid, *rej_long_uuid,
        *rej_oversize, *rej_first_timeout, *rej_waiting_full, *rej_pairs_full, *rej_wait_timeout,
        *rej_waiter_gone, *rej_early_full, *rej_internal;
    uint64_t *closed_before_request;
    uint64_t *bytes_e2l, *bytes_l2e;
    uint64_t *end[RELAY_END_SHUTDOWN + 1];
    uint64_t *throttle_events, *downgraded, *console_sessions, *pipes_created, *pipes_grown, *pipe_failures,
        *list_full;
    uint64_t *ws_sides;
    uint64_t *urgent_marks;
    uint64_t *oom;
} relay_stats;

struct relay {
    rdv_core *core;
    const relay_cfg *cfg;
    rdv_listener *listener;
    relay_stats st;
    char key[128];                   /* the compared relay key ("" = none) */

    relay_bw bw;
    relay_set black, block;
    uint32_t list_gen;               /* bumped on every list change */

    relay_waiter *waiting;           /* uthash by uuid */
    relay_waiter *wfirst, *wlast;    /* FIFO by deadline */
    size_t nwaiting;
    rdv_timer *wait_timer;

    relay_pair *pairs;
    size_t npairs, nraw, nmsg;
    relay_pair *throttled, *throttled_tail;
    size_t nthrottled;
    rdv_timer *tick, *refill;
    bool refill_on;

    int (*pipes)[2];                 /* pool of empty pipes */
    size_t npipes, pipes_cap, pipes_in_use;
    uint32_t pipe_base;              /* capacity of a new (and a pooled) pipe, 0 = not known yet */
    bool pipe_size_warned, pipe_grow_warned;

    relay_console *consoles;
    size_t nconsoles;

    relay_ep_ws *ws_sides;           /* uthash by connection id */
    size_t nws;
    relay_ws_job *ws_defer;          /* deferred resumes / closes */
    size_t nws_defer, ws_defer_cap;
    int ws_depth;                    /* inside a call into the transport */
    rdv_timer *ws_timer;

    uint64_t awaiting;               /* connections before their first frame */
    uint64_t early_bytes;            /* user-space bytes held for pairs/waiters */
    uint64_t msg_bytes;              /* message-mode buffers (relay.message_total) */
    uint8_t *scratch;                /* conn_detach buffer */
    size_t scratch_cap;
    uint8_t *arena_mem;
    size_t arena_cap;
    rdv_arena arena;                 /* first messages are unpacked here */
    bool stopping;
};

#endif
