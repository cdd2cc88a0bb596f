/* tests/integration/rdclient.h — a RustDesk client as the integration tests
 * emulate it: message builders, UDP and TCP exchanges with the checks a
 * client's view implies, the libsodium secure-TCP handshake (wire.md
 * §6.3-§6.4) and RFC 6455 client framing.
 *
 * Helpers check with Criterion: a failed check ends the calling test.
 * Message builders return a message in static storage, valid until the same
 * builder is called again; strings and buffers passed in are referenced,
 * not copied, unless said otherwise. */
#ifndef RDV_TEST_RDCLIENT_H
#define RDV_TEST_RDCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "rdv/proto.h"
#include "rdv/types.h"

/* ---- time and sockets */
uint64_t rdc_now_ms(void); /* CLOCK_MONOTONIC */
/* Read exactly n bytes before deadline (rdc_now_ms): 0, -1 timeout, -2 EOF/error. */
int rdc_read_exact(int fd, uint8_t *p, size_t n, uint64_t deadline);
uint16_t rdc_local_port(int fd);
rdv_addr rdc_local_addr(int fd);
/* TCP connection from ip to the server's port (must succeed). */
int rdc_connect(const char *ip, int port);
/* Close with RST: a client-side TIME_WAIT would hold its (odd, ephemeral)
 * port, and a later test server whose NAT port (main - 1, odd too) is that
 * number could not bind it. */
void rdc_close_rst(int fd);

/* ---- messages */
/* Pack m into buf (m must fit in cap); returns the length. */
size_t rdc_pack(const rdv_msg *m, uint8_t *buf, size_t cap);
rdv_msg *rdc_register_peer(const char *id); /* serial 0 */
rdv_msg *rdc_register_pk(const char *id, const void *uuid, size_t uuid_len, const void *pk, size_t pk_len);
/* PunchHoleRequest with conn_type DEFAULT_CONN; "" leaves a string empty. */
rdv_msg *rdc_punch_hole_request(const char *id, int nat_type, const char *licence, const char *version);
/* PunchHoleSent echoing socket_addr (copied, at most RDV_ADDR_MANGLED_MAX bytes). */
rdv_msg *rdc_punch_hole_sent(ProtobufCBinaryData socket_addr, const char *id, const char *relay_server, int nat_type,
                             const char *version);
/* RelayResponse echoing socket_addr (copied); id NULL leaves the id/pk oneof unset. */
rdv_msg *rdc_relay_response(ProtobufCBinaryData socket_addr, const char *uuid, const char *relay_server,
                            const char *id, const char *version);
rdv_msg *rdc_test_nat_request(int serial);
rdv_msg *rdc_online_request(const char *id, char **peers, size_t n);
rdv_msg *rdc_config_update(int serial, char **rendezvous_servers, size_t n);

/* ---- a device: its id, uuid "uuid-<id>", Ed25519 key pair, UDP socket */
typedef struct rdc_device {
    char ip[32], id[32], uuid[48];
    int udp; /* -1 until rdc_device_udp() */
    uint8_t pk[32], sk[64];
} rdc_device;

void rdc_device_init(rdc_device *d, const char *id);
/* Open the device's UDP socket, bound to ip. */
void rdc_device_udp(rdc_device *d, const char *ip);
/* RegisterPk with the device's id, uuid and public key. */
rdv_msg *rdc_device_register_pk(const rdc_device *d);

/* ---- UDP */
/* A datagram within ms (NULL on timeout), decoded; asserts it came from
 * port. *len (if given) is set to its size when one arrived. */
rdv_msg *rdc_udp_from_server(int fd, int port, int ms, size_t *len);
/* Send m to port and return the decoded reply, sending up to `tries` times
 * when none comes within ms (a loaded machine is slow, not lossy). Asserts
 * the reply came from port and is no larger than m: no amplification. */
rdv_msg *rdc_udp_ask(int fd, int port, const rdv_msg *m, int ms, int tries);
void rdc_udp_expect_silence(int fd, int ms);

/* ---- TCP */
/* The next message on fd, which must be of this oneof case. */
rdv_msg *rdc_expect_tcp(int fd, int union_case, int ms);
/* The next frame's payload is exactly these n bytes. */
void rdc_expect_tcp_bytes(int fd, const uint8_t *want, size_t n, int ms);
void rdc_expect_nothing_tcp(int fd, int ms);
/* The server closes fd within ms without sending a byte. */
void rdc_expect_closed_silently(int fd, int ms);

/* ---- addresses, keys, signatures */
/* sa (AddrMangle, wire.md §5) decodes to want. */
void rdc_expect_addr(ProtobufCBinaryData sa, const rdv_addr *want);
/* Decode a base64 key string (a client's configured key) into pk; returns
 * the decoded length. */
size_t rdc_key_from_string(const char *b64, uint8_t pk[32]);
/* The server's id_ed25519.pub into text (cut at the first line end) and its
 * decoded key into pk; returns the file's size, *pk_len the decoded length. */
size_t rdc_read_server_key(const rdvt_server *s, char *text, size_t cap, uint8_t pk[32], size_t *pk_len);
/* Open a signed pk (R69/R167) with the server's key; free the IdPk with
 * hbb__id_pk__free_unpacked. */
Hbb__IdPk *rdc_open_signed_pk(ProtobufCBinaryData signed_pk, const uint8_t server_pk[32]);
/* The signed pk opens to IdPk{d's id, d's public key}. */
void rdc_expect_signed(ProtobufCBinaryData signed_pk, const uint8_t server_pk[32], const rdc_device *d);

/* ---- secure TCP (wire.md §6.3-§6.4), as a current client keys its connection */
typedef struct rdc_keyed {
    int fd;
    uint8_t key[32];     /* session key; left all zero, rdc_answer_offer picks one */
    uint64_t tx, rx;     /* record counters */
    unsigned heartbeats; /* empty frames received, for helpers that echo them */
} rdc_keyed;

/* Frame 1 as the client checks it: a KeyExchange with one key that opens
 * with the configured server key to a 32-byte box key (R200). */
void rdc_read_offer(int fd, const uint8_t server_pk[32], uint8_t box_pk[32], int ms);
void rdc_send_key_exchange(int fd, ProtobufCBinaryData *keys, size_t n);
/* Frame 2 (plaintext): a fresh box key pair and the session key sealed to
 * box_pk; the counters restart. */
void rdc_answer_offer(rdc_keyed *c, const uint8_t box_pk[32]);
/* Connect from ip, check the offer (within ms), answer it. */
rdc_keyed rdc_keyed_connect(const char *ip, int port, const uint8_t server_pk[32], int ms);
void rdc_send_sealed(rdc_keyed *c, const rdv_msg *m);
/* Open one received sealed frame with the next server counter. */
rdv_msg *rdc_open_sealed(rdc_keyed *c, const uint8_t *frame, long n);

/* ---- WebSocket client (RFC 6455) */
#define RDC_WS_KEY "dGhlIHNhbXBsZSBub25jZQ==" /* RFC 6455 §1.3 */
#define RDC_WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
extern const uint8_t rdc_ws_mask[4]; /* the masking key of every frame sent */

/* An HTTP answer's head (up to the blank line) within ms: 0, -1 timeout or
 * too long, -2 EOF. */
int rdc_http_head(int fd, char *out, size_t cap, int ms);
/* Send a plain upgrade request (RDC_WS_KEY, version 13, no extensions) for
 * path and read the answer's head within 5 s (rdc_http_head's result). */
int rdc_ws_upgrade(int fd, const char *path, const char *host, char *head, size_t cap);
void rdc_ws_send_frame(int fd, bool fin, unsigned opcode, bool masked, const void *p, size_t n);
/* m as one masked binary message. */
void rdc_ws_send_msg(int fd, const rdv_msg *m);
/* One server frame (unfragmented, unmasked): 0 with the opcode and a
 * malloc'ed payload, -1 timeout, -2 EOF. */
int rdc_ws_recv(int fd, unsigned *opcode, uint8_t **p, size_t *n, int ms);

#endif
