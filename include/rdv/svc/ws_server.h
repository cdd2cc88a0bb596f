/* rdv/svc/ws_server.h — the "ws-server" service: WebSocket ports whose
 * connections belong to another module that speaks its own protocol in
 * binary messages (ARCHITECTURE.md §4: a listener bound to a module, not to
 * the dispatch table; e.g. the Candy server, spec candy.md §4).
 * websocket-transport publishes it; a module requires it
 * ({ RDV_SVC_WS_SERVER, RDV_SVC_WS_SERVER_VERSION }) and opens its port in
 * its start() with port_open.
 *
 * Division of work:
 *   websocket-transport  listener, HTTP upgrade (any path), trusted proxy
 *                        headers, RFC 6455 framing, ping -> pong with the
 *                        same payload, close handshake, max_connections,
 *                        buffer_total and message_timeout_ms (its settings),
 *                        the port's limits below, the deadline "upgrade +
 *                        first binary message within first_ms of accept",
 *                        the optional idle_ms after it.
 *   the owner            everything its messages mean.
 *
 * A side is a core connection: the owner may use its id with
 * api->conn_info (wqueue for back-pressure). It sends and closes through
 * rdv_ws_side_ops so that framing and close frames stay in the transport.
 * The relay WebSocket port (rdv/svc/relay_ws.h) is such a port whose sides
 * belong to the relay. */
#ifndef RDV_WS_SERVER_SVC_H
#define RDV_WS_SERVER_SVC_H

#include <rdv/types.h>

#define RDV_SVC_WS_SERVER "ws-server"
#define RDV_SVC_WS_SERVER_VERSION 1

/* Calls the owner makes on a side (tp is the pointer given to side_open).
 * All are safe from inside any callback below. */
typedef struct rdv_ws_side_ops {
    /* One binary message to the side (payload copied into the write queue).
     * 0, -ENOTCONN (side gone or closing), -EMSGSIZE, or -ENOBUFS (the
     * core's write queue overflowed: the side is closed). */
    int (*send)(void *tp, rdv_conn_id id, const uint8_t *p, size_t n);
    /* Stop/resume delivering the side's messages (back-pressure towards a
     * slow partner). Up to a few KiB already read may still be delivered
     * after pausing. */
    int (*pause)(void *tp, rdv_conn_id id, bool paused);
    /* End the side: status 0 = just close the TCP connection after queued
     * output (nothing more is written), else send a close frame with that
     * status first. side_closed follows. */
    int (*close)(void *tp, rdv_conn_id id, uint16_t status);
} rdv_ws_side_ops;

/* What websocket-transport calls on the owner (self as given). */
typedef struct rdv_ws_side_api {
    /* A side finished its upgrade and sent its first binary message (first,
     * n: borrowed, at most the port's first_max bytes; may be empty). peer
     * is the attributed address (trusted proxy headers applied, port 0
     * then), tcp_peer the socket's. The ops work from the start of this call
     * (e.g. pause a side that has to wait). RDV_OK: the owner owns the side
     * (it will get side_message / side_drain / side_closed for id);
     * RDV_CLOSE: refused, the transport closes it silently and no
     * side_closed follows. If the side fails during this call (a send
     * overflowing, ops->close), side_closed comes before side_open returns,
     * and its answer is ignored. */
    int (*side_open)(void *self, rdv_conn_id id, const rdv_addr *peer, const rdv_addr *tcp_peer,
                     const uint8_t *first, size_t n, const rdv_ws_side_ops *ops, void *tp);
    /* A later binary message (borrowed; empty ones too). RDV_OK, or
     * RDV_CLOSE to end the side (as close(tp, id, 0)). */
    int (*side_message)(void *self, rdv_conn_id id, const uint8_t *p, size_t n);
    /* Activity without a binary message: ping (already answered), pong,
     * text (never delivered). May be NULL. */
    void (*side_activity)(void *self, rdv_conn_id id);
    /* The side's write queue drained (resume a paused partner). May be NULL. */
    void (*side_drain)(void *self, rdv_conn_id id);
    /* The side is gone (close frame, EOF, error, idle_ms, shutdown); id is
     * invalid after this returns. Not called for sides side_open refused,
     * nor after port_close returned. */
    void (*side_closed)(void *self, rdv_conn_id id);
} rdv_ws_side_api;

/* A port's listener and limits. Sizes are checked from each frame header
 * before any payload is stored; over them: close 1009. */
typedef struct rdv_ws_port_spec {
    const char *name;        /* listener name (logs, admin, listener_find), e.g. "candy" */
    const char *setting;     /* the owner's setting for the port, named in errors ("candy.port") */
    const char *bind;        /* NULL or "": websocket-transport.bind */
    int port;                /* TCP port; 0 = any free one (tests: port_number) */
    uint64_t first_ms;       /* accept -> upgrade and first binary message (>= 100) */
    uint64_t idle_ms;        /* after the hand-over: close (1001) after this long without a
                              * message, ping or pong from the client; 0 = never */
    uint64_t first_max;      /* largest first message */
    uint64_t max_frame;      /* largest frame after the first message */
    uint64_t max_message;    /* largest message after the first (>= first_max, <= buffer_total) */
    bool nonbinary_first_closes; /* text, ping or pong before the first binary message closes
                                  * (1008, the relay's rule); else they are activity */
} rdv_ws_port_spec;

typedef struct rdv_ws_port rdv_ws_port;

typedef struct rdv_ws_server_api {
    /* Open a port whose sides belong to (api, self). NULL on failure (the
     * reason is logged, naming spec->setting: port in use, limits out of
     * range or over buffer_total, out of memory). From start() on. */
    rdv_ws_port *(*port_open)(void *tp, const rdv_ws_port_spec *spec, const rdv_ws_side_api *api, void *self);
    /* New limits (reload): they apply to messages and deadlines from now on.
     * name, bind and port cannot change. 0 or -EINVAL (logged). */
    int (*port_limits)(void *tp, rdv_ws_port *p, const rdv_ws_port_spec *spec);
    /* The bound TCP port. */
    int (*port_number)(void *tp, const rdv_ws_port *p);
    /* The owner is going away (its stop()): new connections are refused,
     * open sides get a close frame 1001 and are no longer the owner's: no
     * callback reaches it after this returns. The listening socket itself
     * stays until the process ends. */
    void (*port_close)(void *tp, rdv_ws_port *p);
} rdv_ws_server_api;

#endif
