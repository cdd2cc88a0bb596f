/* ws.h — websocket-transport internals shared by its source files.
 *
 * ws_http.c   request head: find its end, parse it (http-parser), validate
 *             the upgrade, build the answers (SHA-1 from libmd, base64 from libsodium),
 *             proxy headers and trusted-proxy CIDRs.
 * ws_conn.c   one connection: handshake, frames (wslay event API), codec,
 *             timers, close handshake, rendezvous dispatch, relay hand-over.
 * ws_module.c descriptor, settings, listeners, stats, admin command.
 * ws_ports.c  the ws-server service: ports whose sides belong to a module,
 *             and the relay port's limits.
 *
 * Nothing here is exported: the .so exports only rdv_module_get. */
#ifndef RDV_WS_H
#define RDV_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wslay/wslay.h>

#include <rdv/core.h>
#include <rdv/wire.h>

#include "rdv/svc/relay_ws.h"

/* Out of memory in the connection table refuses one operation (rdv/uthash.h). */
#define RDV_UTHASH_PREFIX ws
#include <rdv/uthash.h>


/* ------------------------------------------------------------------ HTTP head */
#define WS_HVAL_MAX 256         /* longest header value we keep (longer: treated as invalid) */
#define WS_KEY_B64_LEN 24       /* base64 of the 16-byte Sec-WebSocket-Key nonce */
#define WS_ACCEPT_LEN 28        /* base64 of a SHA-1 digest */

typedef enum ws_hdr_id {
    WS_H_UPGRADE,
    WS_H_CONNECTION,
    WS_H_KEY,
    WS_H_VERSION,
    WS_H_REAL_IP,
    WS_H_FORWARDED_FOR,
    WS_H_COUNT,
} ws_hdr_id;

typedef struct ws_hval {
    char v[WS_HVAL_MAX + 1];
    size_t len;
    unsigned count;             /* how many header lines carried it */
    bool overflow;              /* longer than WS_HVAL_MAX */
    bool invisible;             /* a byte outside visible ASCII (and tab) in the first line */
} ws_hval;

/* Why a request head was refused; WS_REQ_OK means answer 101. */
typedef enum ws_req_verdict {
    WS_REQ_OK = 0,
    WS_REQ_MALFORMED,           /* not HTTP/1.x as http-parser reads it: 400 */
    WS_REQ_NOT_GET,             /* 400 */
    WS_REQ_OLD_HTTP,            /* HTTP/1.0 or older: 400 */
    WS_REQ_NOT_UPGRADE,         /* no "Upgrade: websocket" / "Connection: upgrade": 400 */
    WS_REQ_BAD_KEY,             /* Sec-WebSocket-Key missing, repeated or not 16 bytes: 400 */
    WS_REQ_BAD_VERSION,         /* Sec-WebSocket-Version other than 13: 426 */
} ws_req_verdict;

typedef struct ws_req {
    ws_req_verdict verdict;
    ws_hval h[WS_H_COUNT];
    char path[128];             /* request target, cut (for logs only) */
    char accept[WS_ACCEPT_LEN + 1]; /* Sec-WebSocket-Accept, when verdict is OK */
} ws_req;

/* Length of the request head (through its blank line) in p[0..n), or 0 if
 * it is not complete yet. *scan remembers how far earlier calls looked, so
 * a head trickled in byte by byte is scanned once in total. */
size_t ws_http_head_end(const uint8_t *p, size_t n, size_t *scan);
/* Parse and validate a complete head (RFC 6455 §4.2.1). */
void ws_http_parse(const uint8_t *p, size_t n, ws_req *req);
/* HTTP status for a verdict (101, 400 or 426). */
int ws_http_status(ws_req_verdict v);
const char *ws_http_verdict_name(ws_req_verdict v);
/* The 101 answer for an accepted request, or an error answer (400, 426,
 * 431, 503) that ends with "Connection: close". Returns the length written
 * (out must hold 256 bytes). */
size_t ws_http_answer_101(const ws_req *req, char *out, size_t cap);
size_t ws_http_answer_error(int status, char *out, size_t cap);
/* Sec-WebSocket-Accept for a key (RFC 6455 §4.2.2 step 5.4). */
void ws_http_accept_key(const char *key, size_t len, char out[WS_ACCEPT_LEN + 1]);

/* The address a reverse proxy names (rendezvous.md §12): X-Real-IP if
 * present, else X-Forwarded-For; one IP, port 0. False if absent or not a
 * single address (then the socket address stays). */
bool ws_http_proxy_addr(const ws_req *req, rdv_addr *out);

/* Trusted proxies: "IP" or "IP/prefix". */
typedef struct ws_cidr {
    int family;                 /* AF_INET or AF_INET6 */
    uint8_t ip[16];
    unsigned prefix;
} ws_cidr;
int ws_cidr_parse(const char *s, ws_cidr *out);
bool ws_cidr_match(const ws_cidr *c, const rdv_addr *a);

/* ------------------------------------------------------------------ frames */
/* Header of one unmasked, final server frame carrying n payload bytes
 * (RFC 6455 §5.2); returns its length (2, 4 or 10). */
size_t ws_frame_header(uint8_t opcode, uint64_t n, uint8_t out[16]);

/* ------------------------------------------------------------------ module */
typedef struct ws_cfg {
    int64_t rendezvous_port;
    int64_t relay_port;
    char *bind;
    rdv_strlist trusted_proxies;
    int64_t max_connections;
    int64_t handshake_timeout_ms;
    int64_t max_header_bytes;
    int64_t idle_ms;
    int64_t close_timeout_ms;
    int64_t relay_first_ms;
    int64_t relay_first_max;
    int64_t relay_max_frame;
    int64_t relay_max_message;
    int64_t buffer_total;
    int64_t message_timeout_ms;
} ws_cfg;

typedef enum ws_port_kind {
    WS_PORT_RENDEZVOUS,         /* messages go to the dispatch table */
    WS_PORT_RELAY,              /* sides belong to the relay (relay-ws) */
    WS_PORT_MODULE,             /* sides belong to the module that opened it (ws-server) */
} ws_port_kind;

typedef struct ws_mod ws_mod;

/* Per listener: what its connections are for. Relay and module ports hand
 * their sides to an owner (rdv/svc/ws_server.h) under the port's limits:
 * the relay port's come from our relay_* settings, a module port's from
 * its owner. */
typedef struct rdv_ws_port {
    ws_mod *m;
    ws_port_kind kind;
    rdv_listener *l;
    const rdv_ws_side_api *owner; /* NULL: rendezvous port, or the owner closed the port */
    void *self;
    rdv_ws_port_spec lim;       /* owned ports; lim.name points at name */
    char name[32];
    char setting[64];           /* the owner's setting for it, for messages */
    size_t nsides;              /* connections the owner holds */
    bool closed;                /* port_close: new connections are refused */
    uint64_t *handoff, *refused; /* counters of this kind of port */
    struct rdv_ws_port *next;   /* module ports, newest first */
} ws_port;

typedef enum ws_phase {
    WS_HANDSHAKE,               /* reading the HTTP request head */
    WS_OPEN,                    /* frames flow */
    WS_CLOSING,                 /* our close frame is out; waiting for the peer's */
} ws_phase;

typedef struct ws_conn {
    rdv_conn_id id;
    ws_mod *m;
    ws_port *port;
    ws_phase phase;
    rdv_addr tcp_peer;          /* socket address */
    rdv_addr peer;              /* attributed address (proxy headers applied) */
    size_t scan;                /* handshake: bytes of the head already searched */
    wslay_event_context_ptr ev;
    /* input handed to wslay during one on_data call */
    const uint8_t *in;
    size_t in_len, in_used;
    /* the data message being received */
    uint8_t mop;                /* its opcode (text/binary), 0 between messages */
    bool fctrl;                 /* the frame being read is a control frame (wslay keeps those) */
    bool mskip;                 /* its payload is not kept (text, or after an error) */
    uint64_t mlen;              /* bytes so far */
    uint64_t mstart_ms;         /* when it began, or when we last resumed reading it */
    uint8_t *msg;
    size_t mcap;                /* its buffer, counted in ws_mod.buf_bytes (buffer_total) */
    uint64_t msg_limit;         /* whole-message cap, checked from each frame header */
    uint8_t held[14];           /* a frame header wslay sent with MSG_MORE, joined with its payload */
    uint8_t nheld;
    uint16_t fail_code;         /* a close for this error went out (1002, 1009, ...) */
    bool close_wait;            /* our close frame waits for the peer's */
    bool close_asked;           /* conn_close was called: only on_close remains */
    uint64_t opened_ms;         /* accept time */
    uint64_t last_ms;           /* last activity, or when our close frame was queued */
    bool owned;                 /* handed to its port's owner: its timers and meaning rule */
    bool paused;                /* the owner's back-pressure */
    uint64_t paused_ms;         /* since when (message_timeout_ms does not run meanwhile) */
    bool core_paused;           /* we asked the core to stop reading */
    bool resume_pending;        /* resumed from inside our own input: finish from the timer */
    bool in_data;               /* wslay_event_recv is running (it must not nest) */
    rdv_timer *timer;           /* handshake, idle, message or close deadline; deferred resume */
    uint64_t due;               /* when the timer is armed to fire (0: stopped) */
    int busy;                   /* callbacks in progress: free only at 0 */
    bool dead;                  /* the core closed it; free when busy drops to 0 */
    UT_hash_handle hh;
} ws_conn;

typedef struct ws_stats {
    uint64_t *accepted, *refused_limit;
    uint64_t *hs_ok, *hs_malformed, *hs_not_get, *hs_old_http, *hs_not_upgrade, *hs_bad_key, *hs_bad_version;
    uint64_t *hs_too_big, *hs_timeout;
    uint64_t *proxy_used, *proxy_untrusted, *proxy_unparsed;
    uint64_t *msg_binary, *msg_text, *ping, *pong, *bytes_in;
    uint64_t *closed_peer, *closed_protocol, *closed_too_big, *closed_bad_utf8, *closed_dispatch;
    uint64_t *closed_idle, *closed_close_timeout, *closed_shutdown, *closed_error;
    uint64_t *closed_buffer_total, *closed_message_timeout;
    uint64_t *relay_handoff, *relay_refused, *module_handoff, *module_refused;
    uint64_t *oom;
} ws_stats;

struct ws_mod {
    rdv_core *core;
    const ws_cfg *cfg;
    ws_cidr *proxies;           /* parsed trusted_proxies */
    size_t nproxies;
    int64_t max_frame;          /* core.max_frame: the rendezvous message cap */
    ws_port rdv_port, relay_port;
    ws_port *mports;            /* ports opened through ws-server */
    ws_conn *conns;             /* uthash by id */
    size_t nconns, nhandshake;
    uint64_t buf_bytes;         /* reassembly buffers of all connections (buffer_total) */
    const rdv_relay_ws_api *relay; /* NULL when no relay module provides it */
    void *relay_self;
    bool stopping;
    ws_stats st;
};

/* ws_conn.c */
extern const rdv_conn_ops ws_conn_ops;
extern const rdv_ws_side_ops ws_side_ops;
/* ws_module.c: open port's listener (bind NULL or "": our bind setting). */
int ws_listen(ws_mod *m, ws_port *port, const char *name, int64_t portno, const char *bind);
/* ws_ports.c: the ws-server service (module ports). */
extern const rdv_ws_server_api ws_server_api;
/* Sides held by the owners of module ports (their nsides summed). */
size_t ws_module_sides(const ws_mod *m);
/* The relay port's limits from our settings (init, reload). */
void ws_relay_limits(ws_mod *m);
/* ws-server: port_close's work on the connections (ws_conn.c). */
void ws_conn_close_port(ws_mod *m, ws_port *port);
/* Close every connection (shutdown): close frame 1001, then flush. */
void ws_conn_close_all(ws_mod *m);
/* Free what is left (destroy). */
void ws_conn_free_all(ws_mod *m);

#endif
