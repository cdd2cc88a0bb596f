/* ws_test.h — helpers for the websocket-transport suites: a client side of
 * RFC 6455 (masked frames, upgrade request) written independently of the
 * module, and a tiny handler module so dispatched messages can be seen. */
#ifndef WS_TEST_H
#define WS_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fakecore.h"

/* The module under test. */
const rdv_module *rdv_module_get(void);

/* ---- client frames ---- */
/* Build one frame: fin, rsv bits (0..7), opcode, masked or not, payload.
 * ext_len forces the 126/127 length forms (0 = minimal). Returns a malloc'ed
 * buffer and its length in *len. */
uint8_t *wt_frame(bool fin, unsigned rsv, unsigned opcode, bool masked, const void *p, size_t n, size_t *len);
/* Frame and feed it to connection id. Returns fc_conn_raw's result. */
int wt_send(fc_core *fc, rdv_conn_id id, bool fin, unsigned opcode, const void *p, size_t n);
/* A masked binary message carrying a packed RendezvousMessage. */
int wt_send_msg(fc_core *fc, rdv_conn_id id, const Hbb__RendezvousMessage *m);
/* Only a frame header announcing n payload bytes (masked), no payload. */
size_t wt_header(unsigned opcode, bool masked, uint64_t n, uint8_t out[14]);

/* ---- server output ---- */
typedef struct wt_frame_in {
    unsigned opcode;
    bool fin, masked;
    uint8_t payload[256];
    size_t n;
} wt_frame_in;
/* Parse one server frame from recorded bytes (must be exactly one frame). */
bool wt_parse(const uint8_t *p, size_t len, wt_frame_in *out);
/* Pop the next recorded send and expect it to be one whole frame written
 * by the module (pong, close) with this opcode; returns it. */
wt_frame_in wt_expect_frame(fc_core *fc, unsigned opcode);
/* Expect the next send to be a close frame with this status (0 = none). */
void wt_expect_close_frame(fc_core *fc, uint16_t status);
/* Expect the next send to be conn_close(flush). */
void wt_expect_conn_close(fc_core *fc, rdv_conn_id id, bool flush);
/* Expect an HTTP answer starting with "HTTP/1.1 <status>"; returns a static
 * copy of its text. */
const char *wt_expect_http(fc_core *fc, int status);

/* ---- module internals ---- */
/* The reassembly buffer of connection id (state: the module's, from
 * fc_load): its capacity and the bytes of the current message held. False
 * if the module has no such connection. */
bool wt_buffer(void *state, rdv_conn_id id, size_t *cap, size_t *len);

/* ---- handshake ---- */
#define WT_KEY "dGhlIHNhbXBsZSBub25jZQ==" /* RFC 6455 §1.3 example */
#define WT_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/* A valid upgrade request for path with extra header lines ("" or
 * "Name: v\r\n..."); written to buf. */
size_t wt_request(char *buf, size_t cap, const char *path, const char *extra);
/* Open a connection on listener l from peer and complete the upgrade
 * (asserts the 101). */
rdv_conn_id wt_open(fc_core *fc, rdv_listener *l, const char *peer, const char *extra);

/* ---- a handler module standing in for the rendezvous modules ---- */
typedef struct wt_seen {
    int nat_calls, punch_calls, access_calls;
    rdv_transport transport;
    char listener[32];
    rdv_addr peer;
    rdv_conn_id conn;
    int send_result;      /* of the reply send */
} wt_seen;
extern wt_seen wt_seen_last;
/* TestNatRequest over WS: reply TestNatResponse{port = peer port}, then
 * RDV_CLOSE (rendezvous.md §4.2). PunchHoleRequest: reply
 * PunchHoleResponse{ID_NOT_EXIST}, keep. ACCESS drops messages from
 * 192.0.2.66. */
extern const rdv_module wt_handlers_module;

/* Load the handler module, then websocket-transport with conf; returns the
 * module state (asserts success). */
void *wt_load(fc_core *fc, const char *conf);

Hbb__RendezvousMessage wt_nat_request(void);

#endif
