/* rdv/wire.h — byte formats shared by all transports (../spec/wire.md).
 *
 * Pure functions, no I/O and no core state: they live in the static library
 * librdvwire (linked into the core, the modules and the tests). */
#ifndef RDV_WIRE_H
#define RDV_WIRE_H

#include "rdv/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- TCP frame codec (wire.md §3) ---- */
#define RDV_FRAME_HDR_MAX 4
#define RDV_FRAME_LEN_MAX 0x3FFFFFFFu

/* Write the smallest header for a payload of n bytes; returns its length
 * (1..4), or 0 when n > RDV_FRAME_LEN_MAX. */
size_t rdv_frame_header(size_t n, uint8_t out[RDV_FRAME_HDR_MAX]);

typedef enum rdv_frame_status {
    RDV_FRAME_NEED = 0,    /* not enough bytes yet */
    RDV_FRAME_OK = 1,      /* *hdr_len and *payload_len are set; whole frame present */
    RDV_FRAME_TOO_BIG = -1 /* declared length > max: close the connection */
} rdv_frame_status;

/* Inspect buffered bytes. Accepts non-minimal headers (wire.md §3.1). The
 * size check happens as soon as the header is complete, before any payload
 * is buffered. *hdr_len and *payload_len are set on OK and TOO_BIG; on NEED
 * *hdr_len is 0 while the header itself is incomplete, else both are set (so
 * the caller can size its buffer for exactly the declared frame). */
rdv_frame_status rdv_frame_parse(const uint8_t *buf, size_t avail, size_t max_payload,
                                 size_t *hdr_len, size_t *payload_len);

/* ---- Socket addresses (wire.md §5) ---- */
/* Normalise in place: IPv4-mapped / IPv4-compatible IPv6 -> IPv4, except ::1. */
void rdv_addr_normalize(rdv_addr *a);
/* Build from a sockaddr (copied, then normalised). Returns 0 or -EAFNOSUPPORT. */
int rdv_addr_from_sockaddr(rdv_addr *a, const struct sockaddr *sa, socklen_t len);
/* Build an IPv4 / IPv6 address from bytes (network order) and port. */
void rdv_addr_v4(rdv_addr *a, const uint8_t ip[4], uint16_t port);
void rdv_addr_v6(rdv_addr *a, const uint8_t ip[16], uint16_t port);
/* Parse "1.2.3.4:5", "[::1]:5", "host-less" "1.2.3.4" (port = defport). 0 or -EINVAL. */
int rdv_addr_parse(rdv_addr *a, const char *s, uint16_t defport);
/* Text form into buf (RDV_ADDR_STRLEN); returns buf. */
char *rdv_addr_str(const rdv_addr *a, char *buf, size_t len);
/* Text form of the IP only. */
char *rdv_addr_ip_str(const rdv_addr *a, char *buf, size_t len);
uint16_t rdv_addr_port(const rdv_addr *a);
void rdv_addr_set_port(rdv_addr *a, uint16_t port);
bool rdv_addr_equal(const rdv_addr *a, const rdv_addr *b);     /* ip and port */
bool rdv_addr_same_ip(const rdv_addr *a, const rdv_addr *b);   /* ip only */
bool rdv_addr_is_loopback(const rdv_addr *a);
bool rdv_addr_is_v4(const rdv_addr *a);
/* A sockaddr usable with a socket of family fam (AF_INET6 sockets get an
 * IPv4-mapped address for IPv4 peers). Returns its length, 0 if impossible. */
socklen_t rdv_addr_to_sockaddr(const rdv_addr *a, int fam, struct sockaddr_storage *out);
/* Hash of ip+port (for tables). */
uint64_t rdv_addr_hash(const rdv_addr *a);
/* Compact 16-byte IP for tables: IPv6 as is, IPv4 as ::ffff:a.b.c.d (never
 * a real peer's IPv6, since addresses are normalised). */
void rdv_ip_pack(const rdv_addr *a, uint8_t ip[16]);
void rdv_ip_unpack(const uint8_t ip[16], uint16_t port, rdv_addr *out);
bool rdv_ip_is_v4(const uint8_t ip[16]);
/* "1.2.3.4", "2001:db8::1" or "::ffff:1.2.3.4" (normalised to IPv4). */
bool rdv_ip_parse(const char *text, uint8_t ip[16]);
char *rdv_ip_str(const uint8_t ip[16], char *buf, size_t len);

/* AddrMangle (wire.md §5.2–5.5). tm: the 32-bit mask (low 32 bits of the
 * wall clock in microseconds, in practice). Returns the byte count (0..18). */
#define RDV_ADDR_MANGLED_MAX 18
size_t rdv_addr_mangle(const rdv_addr *a, uint32_t tm, uint8_t out[RDV_ADDR_MANGLED_MAX]);
/* Never fails: garbage decodes to some address (wire.md §5.3). */
void rdv_addr_unmangle(const uint8_t *p, size_t n, rdv_addr *out);

/* ---- Secure-TCP record layer (wire.md §6.4) ---- */
#define RDV_SECURE_KEYBYTES 32
#define RDV_SECURE_MACBYTES 16
/* out must hold n + 16 bytes; *seq is incremented first (first frame uses 1). */
int rdv_secure_seal(const uint8_t key[32], uint64_t *seq, const uint8_t *p, size_t n, uint8_t *out);
/* out must hold n - 16 bytes. Frames of 0..1 bytes are heartbeats and must
 * not be passed here. Returns 0 or -EBADMSG (tampered / wrong counter). */
int rdv_secure_open(const uint8_t key[32], uint64_t *seq, const uint8_t *e, size_t n, uint8_t *out);

/* ---- Keyed hash ---- */
/* SipHash-2-4 of p[0..n) with a random key drawn once per process (the
 * shared librdvwire holds it for the core and every module), for hash tables
 * keyed by bytes a client chooses. Not thread-safe on first use: call it
 * from the loop. */
uint64_t rdv_keyed_hash(const void *p, size_t n);

/* ---- Text ---- */
bool rdv_utf8_valid(const uint8_t *p, size_t n);
/* Rust's str::parse::<i32>() (upstream console arguments); out may be NULL. */
bool rdv_parse_i32(const char *s, int32_t *out);

/* A peer-chosen string (an id, a uuid) as one console word: bytes up to
 * 0x20, 0x7f and '\' become \xNN, so it cannot end a line, split a column
 * or drive the operator's terminal. Writes at most cap bytes with the NUL;
 * when the escaped text does not fit it ends in "..." (never half an
 * escape). Needs cap >= 4. Returns buf. */
#define RDV_WORD_CAP(n) (4 * (n) + 1) /* enough for n bytes, all escaped */
const char *rdv_word_escape(const char *s, size_t n, char *buf, size_t cap);
/* A console argument back to bytes (\xNN decoded, either case) into
 * out[cap + 1], NUL-terminated. Returns the length, or -1: longer than cap,
 * a NUL, or a '\' that does not start \xNN. */
long rdv_word_unescape(const char *s, char *out, size_t cap);

/* A growing text (console answers, exports): rdv_text_printf appends;
 * once it would pass limit bytes (0 = no limit) or memory runs out it
 * appends nothing more and sets cut, so the caller can tell an incomplete
 * text. Zero-initialise it (set limit); rdv_text_free releases it. */
typedef struct rdv_text {
    char *p;     /* NUL-terminated once anything was appended; else NULL */
    size_t len, cap, limit;
    bool cut;
} rdv_text;
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void rdv_text_printf(rdv_text *t, const char *fmt, ...);
void rdv_text_free(rdv_text *t);

#ifdef __cplusplus
}
#endif
#endif
