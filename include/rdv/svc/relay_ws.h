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

#include <rdv/svc/ws_server.h>

#define RDV_SVC_RELAY_WS "relay-ws"
#define RDV_SVC_RELAY_WS_VERSION 1

/* The side contract is websocket-transport's generic one (rdv/svc/ws_server.h):
 * the relay port is a port whose sides belong to the relay. */
typedef rdv_ws_side_ops rdv_relay_ws_side_ops;
typedef rdv_ws_side_api rdv_relay_ws_api;

#endif
