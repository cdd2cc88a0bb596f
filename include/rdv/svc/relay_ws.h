/* rdv/svc/relay_ws.h — the "relay-ws" service: how websocket-transport
 * hands WebSocket sides of the relay WebSocket port to the relay module
 * (relay.md §4.3, §9). The relay module publishes RDV_SVC_RELAY_WS with
 * api->service_publish(core, RDV_SVC_RELAY_WS, RDV_SVC_RELAY_WS_VERSION,
 * &vtable, self). websocket-transport looks it up in start(); without it the
 * relay WebSocket port stays closed (logged).
 *
 * Division of work:
 *   websocket-transport  listener, HTTP upgrade (any path), proxy headers,
 *                        RFC 6455 framing, ping -> pong, close handshake,
 *                        size limits (relay_max_frame / relay_max_message),
 *                        the deadline "upgrade + first message within
 *                        relay_first_ms of accept" (relay.md §3.2, §5), and
 *                        closing on a first message that is not binary
 *                        (relay.md §3.3).
 *   relay                first-message decision table (§3.3), waiting
 *                        table, pairing, TCP<->WS and WS<->WS forwarding
 *                        (§4.3), idle/bandwidth/blocklist timers (§5-§7).
 *
 * Messages to and from a side are whole WebSocket binary payloads, never
 * BytesCodec frames. A WS side is a core connection: the relay may use its
 * id with api->conn_info (wqueue for back-pressure); it sends and closes
 * through rdv_relay_ws_side_ops so that framing and close frames stay here.
 * After side_open returned RDV_OK the core's idle timer of that connection
 * is off (conn_set_idle 0) and this module arms no timer for it but the
 * deadline of a message being received (message_timeout_ms): otherwise the
 * relay's pair timers decide. */
#ifndef RDV_WS_RELAY_SVC_H
#define RDV_WS_RELAY_SVC_H

#include <rdv/types.h>

#define RDV_SVC_RELAY_WS "relay-ws"
#define RDV_SVC_RELAY_WS_VERSION 1

/* Calls the relay makes on a WebSocket side (tp is the pointer given to
 * side_open). All are safe from inside any callback below. */
typedef struct rdv_relay_ws_side_ops {
    /* One binary message to the side (payload copied into the write queue).
     * 0, -ENOTCONN (side gone or closing), -EMSGSIZE, or -ENOBUFS (the
     * core's write queue overflowed: the side is closed). */
    int (*send)(void *tp, rdv_conn_id id, const uint8_t *p, size_t n);
    /* Stop/resume delivering the side's messages (back-pressure towards a
     * slow partner). Up to a few KiB already read may still be delivered
     * after pausing. */
    int (*pause)(void *tp, rdv_conn_id id, bool paused);
    /* End the side: status 0 = just close the TCP connection after queued
     * output (relay.md §5: nothing more is written), else send a close frame
     * with that status first. side_closed follows. */
    int (*close)(void *tp, rdv_conn_id id, uint16_t status);
} rdv_relay_ws_side_ops;

/* What websocket-transport calls on the relay. */
typedef struct rdv_relay_ws_api {
    /* A side finished its upgrade and sent its first binary message (first,
     * n: borrowed, at most relay_first_max bytes). peer is the attributed
     * address (trusted proxy headers applied, port 0 then), tcp_peer the
     * socket's. The ops work from the start of this call (e.g. pause a side
     * that has to wait for its partner). RDV_OK: the relay owns the side (it
     * will get side_message / side_drain / side_closed for id); RDV_CLOSE:
     * refused, the transport closes it silently (relay.md §3.3: no reply on
     * any rejection) and no side_closed follows. If the side fails during
     * this call (a send overflowing, ops->close), side_closed comes before
     * side_open returns, and its answer is ignored. */
    int (*side_open)(void *self, rdv_conn_id id, const rdv_addr *peer, const rdv_addr *tcp_peer,
                     const uint8_t *first, size_t n, const rdv_relay_ws_side_ops *ops, void *tp);
    /* A later binary message (borrowed; empty ones too: they count as
     * activity but are not forwarded, §4.3). RDV_OK, or RDV_CLOSE to end
     * the side (as close(tp, id, 0)). */
    int (*side_message)(void *self, rdv_conn_id id, const uint8_t *p, size_t n);
    /* Activity without a message to forward: ping (already answered), pong,
     * text (§4.3: never forwarded). */
    void (*side_activity)(void *self, rdv_conn_id id);
    /* The side's write queue drained (resume a paused partner). */
    void (*side_drain)(void *self, rdv_conn_id id);
    /* The side is gone (close frame, EOF, error, shutdown); id is invalid
     * after this returns. Not called for sides side_open refused. */
    void (*side_closed)(void *self, rdv_conn_id id);
} rdv_relay_ws_api;

#endif
