/* ipblocker.h — internals shared by the ip-blocker module's files.
 *
 * Two jobs: the RegisterPk abuse limiter of rendezvous.md §11.1, published
 * as the "blocklist" service, and an operator ban list enforced in the
 * ACCESS phase on every transport. */
#ifndef RDV_IPBLOCKER_INTERNAL_H
#define RDV_IPBLOCKER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <rdv/core.h>
#include <rdv/svc/blocklist.h>

/* Source IPs are attacker-chosen (a /64 is plenty): the table hash is keyed
 * with a random per-process key. An add that cannot get memory leaves
 * hh.tbl NULL instead of exiting. */
unsigned ipblocker_hash(const void *p, size_t n);
#define HASH_NONFATAL_OOM 1
#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = ipblocker_hash((keyptr), (size_t)(keylen)))
#include <uthash.h>

typedef struct ipblocker_cfg {
    int64_t req_window_s; /* §11.1 request window: 60 */
    int64_t req_max;      /* block when the count is over this: 30 */
    int64_t id_window_s;  /* §11.1 day set window: 86400 */
    int64_t id_max;       /* new ids blocked when the set is over this: 300 */
    int64_t max_entries;  /* table bound */
    int64_t max_ids;      /* bound on ids remembered over all entries */
    int64_t prune_s;      /* period of the pruning timer */
    int64_t ipv6_prefix;  /* IPv6 sources are counted per network of this length (128 = per address) */
    rdv_strlist ban;      /* operator bans: IPs and CIDRs */
    int64_t ban_max;
} ipblocker_cfg;

/* One source IP (16 bytes, IPv4 as ::ffff:a.b.c.d). The day set holds keyed
 * 64-bit hashes of the ids, sorted: memory does not depend on id length. */
typedef struct ipblocker_entry {
    UT_hash_handle hh;                      /* key: ip (an IPv6 one masked to ipv6_prefix) */
    struct ipblocker_entry *prev, *next;    /* ordered by last update, oldest first */
    uint8_t ip[16];
    uint32_t count;                         /* request window counter */
    uint32_t nids, cap;
    uint64_t t1, t2;                        /* last update of the counter / of the set */
    uint64_t *ids;
} ipblocker_entry;

enum { IPB_BAN_CONF = 1, IPB_BAN_ADMIN = 2, IPB_BAN_LISTED = 4 /* transient, during a reload */ };

typedef struct ipblocker_ban_key {
    uint8_t plen;    /* prefix length in the 128-bit (mapped) space */
    uint8_t net[16]; /* masked */
} ipblocker_ban_key;

typedef struct ipblocker_ban {
    UT_hash_handle hh;
    ipblocker_ban_key key;
    uint8_t src;     /* IPB_BAN_* */
    uint64_t hits;
} ipblocker_ban;

/* Open connections, to close them when their source gets banned. */
typedef struct ipblocker_conn {
    UT_hash_handle hh; /* key: id */
    rdv_conn_id id;
} ipblocker_conn;

typedef struct ipblocker {
    rdv_core *core;
    const rdv_core_api *api;
    const ipblocker_cfg *cfg;

    ipblocker_entry *table;  /* uthash */
    ipblocker_entry *order;  /* DL list by last update */
    size_t nentries, nids;
    uint8_t id_key[16];      /* crypto_shorthash key for ids */

    ipblocker_ban *bans;
    size_t nbans;
    uint32_t plen_count[129]; /* bans per prefix length: which lengths to probe */

    ipblocker_conn *conns;
    size_t nconns;

    rdv_timer *prune;

    struct {
        uint64_t *allowed, *blocked_rate, *blocked_ids, *evicted, *pruned, *ids_not_kept, *oom;
        uint64_t *banned_msgs, *banned_conns, *banned_closed;
    } st;
} ipblocker;

/* ---- ipblocker_table.c */
/* The table key of a source: IPv4 as is, IPv6 masked to ipv6_prefix. */
void ipblocker_key(const ipblocker *b, const uint8_t ip[16], uint8_t key[16]);
/* Drop the IPv6 entries (their keys were made with another prefix). */
void ipblocker_drop_v6(ipblocker *b);
bool ipblocker_allowed(void *self, const rdv_addr *ip, const char *id);
void ipblocker_prune(ipblocker *b);
/* Evict oldest-updated entries until within max_entries / max_ids. */
void ipblocker_enforce_bounds(ipblocker *b);
void ipblocker_table_free(ipblocker *b);
void ipblocker_ib_cmd(void *ud, int argc, char **argv, rdv_buf *out);

/* ---- ipblocker_ban.c */
void ipblocker_mask(const uint8_t ip[16], unsigned plen, uint8_t out[16]);
/* "ip" or "ip/len" -> key; false if unparsable. */
bool ipblocker_parse_ban(const char *text, ipblocker_ban_key *key);
char *ipblocker_ban_str(const ipblocker_ban_key *key, char *buf, size_t len);
/* Replace the configured bans (admin ones stay); returns -ENOSPC if over
 * ban_max (nothing changed). Closes connections from newly banned sources. */
int ipblocker_apply_bans(ipblocker *b, const rdv_strlist *list);
int ipblocker_access(void *state, const rdv_msg_ctx *ctx, const void *msg);
void ipblocker_on_conn_open(void *ud, const void *arg);
void ipblocker_on_conn_close(void *ud, const void *arg);
void ipblocker_ban_cmd(void *ud, int argc, char **argv, rdv_buf *out);
void ipblocker_unban_cmd(void *ud, int argc, char **argv, rdv_buf *out);
void ipblocker_bans_cmd(void *ud, int argc, char **argv, rdv_buf *out);
void ipblocker_bans_free(ipblocker *b);

static inline uint64_t ipblocker_secs(uint64_t now, uint64_t then) { return now > then ? (now - then) / 1000 : 0; }

#endif
