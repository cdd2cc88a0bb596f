/* candy_proto.h — the Candy server protocol without any I/O (candy.md §5,
 * §6.3–§6.5): message layouts and their hash checks, IPv4 CIDRs, SD-WAN
 * rules and ROUTE messages, address allocation. Pure functions over bytes;
 * candy_module.c owns connections, the address map and the core.
 *
 * Addresses and CIDR hosts are uint32_t in host byte order (10.0.0.1 is
 * 0x0a000001); the wire carries them big-endian, as every integer. */
#ifndef CANDY_PROTO_H
#define CANDY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Message kinds: the first byte of every WebSocket binary message (§5). */
enum {
    CANDY_AUTH = 0,
    CANDY_FORWARD = 1,
    CANDY_EXPTTUN = 2,
    CANDY_UDP4CONN = 3,
    CANDY_VMAC = 4,
    CANDY_DISCOVERY = 5,
    CANDY_ROUTE = 6,        /* server -> client only */
    CANDY_GENERAL = 255,
};

/* Smallest valid length of each kind; shorter is a protocol error (close).
 * Longer is accepted: trailing bytes are ignored (§5, §10 padding). */
#define CANDY_AUTH_LEN 45
#define CANDY_FORWARD_MIN 21
#define CANDY_EXPTTUN_LEN 73
#define CANDY_UDP4CONN_LEN 15
#define CANDY_VMAC_LEN 57
#define CANDY_DISCOVERY_LEN 9
#define CANDY_GENERAL_MIN 12
#define CANDY_HASH_LEN 32
#define CANDY_VMAC_BYTES 16
#define CANDY_CIDR_FIELD 32          /* EXPTTUN's NUL-padded text field */
#define CANDY_ROUTE_BATCH 101        /* entries per ROUTE message (§6.5) */
#define CANDY_ROUTE_MAX_LEN (4 + 12 * CANDY_ROUTE_BATCH)
#define CANDY_BROADCAST 0xffffffffu  /* DISCOVERY dst: every other client */

/* Result of a check. */
enum {
    CANDY_OK = 0,
    CANDY_E_SHORT = -1,     /* shorter than the kind's length */
    CANDY_E_HASH = -2,      /* hash does not match the password */
    CANDY_E_CIDR = -3,      /* EXPTTUN: the cidr field does not parse */
};
const char *candy_strerror(int e);

/* The shared network password (raw bytes, may be empty). */
typedef struct candy_secret {
    const char *pw;
    size_t len;
} candy_secret;

/* ------------------------------------------------------------------ CIDR */
typedef struct candy_cidr {
    uint32_t host;          /* address as written (host part kept) */
    unsigned prefix;        /* 0..32 */
} candy_cidr;

uint32_t candy_mask(unsigned prefix);              /* 24 -> 0xffffff00; 0 -> 0 */
static inline uint32_t candy_net(candy_cidr c) { return c.host & candy_mask(c.prefix); }
/* Host bits neither all zero nor all one (§6.3 "valid"). With prefix 31 or
 * 32 no host is valid. */
bool candy_host_valid(candy_cidr c);
/* host + 1, wrapped inside the network (§6.3 next()). */
uint32_t candy_next(candy_cidr c);
/* "a.b.c.d/n" (n 0..32) read from at most max bytes, stopping at the first
 * NUL. Strict: four decimal octets 0..255 without leading '+', '-' or
 * spaces, one '/', a decimal prefix; what follows the NUL is not read.
 * 0 or CANDY_E_CIDR. */
int candy_cidr_parse(const char *s, size_t max, candy_cidr *out);
/* "a.b.c.d/n" NUL-terminated into out (at least 19 bytes); returns its length. */
size_t candy_cidr_format(candy_cidr c, char *out, size_t cap);
/* "a.b.c.d" into out (at least 16 bytes); returns out. */
const char *candy_ip_format(uint32_t ip, char *out, size_t cap);
/* "a.b.c.d" exactly; 0 or CANDY_E_CIDR. */
int candy_ip_parse(const char *s, uint32_t *out);

/* ------------------------------------------------------------------ messages */
/* Big-endian readers/writers. */
uint32_t candy_get32(const uint8_t *p);
void candy_put32(uint8_t *p, uint32_t v);
int64_t candy_get64s(const uint8_t *p);
void candy_put64s(uint8_t *p, int64_t v);

/* AUTH (§5.1): hash = SHA256(pw ‖ ip ‖ ts). On CANDY_OK *ip and *ts are
 * set. The hash is compared in constant time. */
int candy_check_auth(const uint8_t *p, size_t n, const candy_secret *s, uint32_t *ip, int64_t *ts);
/* EXPTTUN request (§5.3): hash = SHA256(pw ‖ ts), the cidr is not covered.
 * Checks length, then hash, then the cidr (CANDY_E_CIDR). */
int candy_check_expttun(const uint8_t *p, size_t n, const candy_secret *s, candy_cidr *want, int64_t *ts);
/* VMAC (§5.5): hash = SHA256(pw ‖ vmac ‖ ts). */
int candy_check_vmac(const uint8_t *p, size_t n, const candy_secret *s, uint8_t vmac[CANDY_VMAC_BYTES],
                     int64_t *ts);
/* Builders for what clients send (used by tests and tools); each writes
 * exactly the kind's length and returns it. */
size_t candy_build_auth(uint8_t out[CANDY_AUTH_LEN], const candy_secret *s, uint32_t ip, int64_t ts);
size_t candy_build_vmac(uint8_t out[CANDY_VMAC_LEN], const candy_secret *s, const uint8_t vmac[CANDY_VMAC_BYTES],
                        int64_t ts);
/* EXPTTUN in either direction: the server's reply carries the assigned
 * cidr, a fresh ts and its hash (§5.3). */
size_t candy_build_expttun(uint8_t out[CANDY_EXPTTUN_LEN], const candy_secret *s, candy_cidr c, int64_t ts);

/* Routing fields. Callers have checked the length for the kind. */
static inline uint32_t candy_forward_daddr(const uint8_t *p) { return candy_get32(p + 17); } /* §5.2 */
static inline uint32_t candy_src(const uint8_t *p) { return candy_get32(p + 1); }   /* UDP4CONN, DISCOVERY */
static inline uint32_t candy_dst(const uint8_t *p) { return candy_get32(p + 5); }
static inline uint32_t candy_general_src(const uint8_t *p) { return candy_get32(p + 4); } /* §5.8 */
static inline uint32_t candy_general_dst(const uint8_t *p) { return candy_get32(p + 8); }

/* FORWARD goes to every other client when daddr is multicast (224.0.0.0/4),
 * 255.255.255.255, or — with DHCP configured (dhcp != NULL) — the directed
 * broadcast of the DHCP network (§6.4). */
bool candy_is_broadcast(uint32_t daddr, const candy_cidr *dhcp);

/* ------------------------------------------------------------------ SD-WAN */
typedef struct candy_rule {
    candy_cidr dev;         /* clients inside it get the route (host part 0) */
    candy_cidr dst;         /* destination network (host part 0) */
    uint32_t next;          /* next hop (a client's virtual address) */
} candy_rule;

/* One rule "DEV,DST,NEXT" (len bytes, no spaces): DEV and DST are CIDRs
 * whose host part is zero, NEXT an address. 0, or CANDY_E_CIDR with a
 * reason in err ("DEV 10.0.0.1/24 has host bits set", ...). */
int candy_rule_parse(const char *s, size_t len, candy_rule *out, char *err, size_t errlen);
/* The native form "R1;R2;..." (candy.md §3): fills up to cap rules, *n how
 * many. CANDY_E_CIDR with err naming the rule's position (1-based) and the
 * reason; -E2BIG when more than cap. An empty string is zero rules. */
int candy_rules_parse(const char *s, candy_rule *out, size_t cap, size_t *n, char *err, size_t errlen);
/* ROUTE for the rules that apply to ip (ip & dev.mask == dev.net), from
 * rules[*pos] on, at most CANDY_ROUTE_BATCH entries: writes one ROUTE
 * message (0x06, size, 2 reserved zero bytes, entries {dst.net, mask,
 * next}) into out and advances *pos past the rules it looked at. Returns
 * the message length, or 0 when no further rule applies (send nothing).
 * Call until it returns 0. */
size_t candy_route_build(const candy_rule *rules, size_t nrules, size_t *pos, uint32_t ip,
                         uint8_t out[CANDY_ROUTE_MAX_LEN]);

/* ------------------------------------------------------------------ DHCP */
/* Whether host belongs to another client for this request (the caller
 * applies §6.3's "or the owner has the same vmac" rule). */
typedef bool (*candy_taken_fn)(void *ud, uint32_t host);

/* §6.3 with our corrections. dhcp: the configured network (its host part
 * is where the cursor starts); cursor: in/out, the last address handed out
 * (initially the configured host). want: the client's request.
 * 1. want is in dhcp's network, with dhcp's prefix, valid and not taken:
 *    granted as is (the cursor does not move).
 * 2. else walk next() from the cursor; the first valid, untaken address
 *    is granted with dhcp's prefix and becomes the cursor. The walk stops
 *    when it comes back to where it began: -ENOSPC (all assigned).
 * The walk's length is at most the network's size; callers bound it in
 * practice because taken addresses are at most the clients connected. */
int candy_dhcp_alloc(const candy_cidr *dhcp, uint32_t *cursor, candy_cidr want, candy_taken_fn taken, void *ud,
                     candy_cidr *out);

#endif
