/* ipblocker.h — internals shared by the ip-blocker module's files.
 *
 * Two jobs: the RegisterPk abuse limiter of rendezvous.md §11.1, published
 * as the "blocklist" service, and an operator ban list enforced in the
 * ACCESS phase on every transport. */
#ifndef RDV_IPBLOCKER_INTERNAL_H
#define RDV_IPBLOCKER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

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
    char *admin_ban_file; /* admin bans kept here across restarts; "" = memory only */
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

/* Writes of the admin ban file (ipblocker_banwriter.c). The loop thread
 * serialises the bans and hands the text to one worker thread, which does
 * the file I/O; the outcome comes back through an async handle. */
typedef struct ipblocker_saver {
    /* loop thread */
    char *path, *tmp, *dir;  /* copies: the worker outlives a reload's cfg */
    rdv_async *async;
    bool started;            /* the worker thread runs (created at the first save) */
    bool busy;               /* a text is with the worker, its outcome not seen yet */
    bool dirty;              /* admin bans changed since the last text was made */
    int last_err;            /* errno of the last finished write, 0 = written */
    uint64_t last_log_ms;
    /* shared with the worker, under mu */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_t thread;
    char *job;               /* the next text to write */
    size_t job_len;
    bool stop, done;
    int result;              /* of the write that set done: 0 or -errno */
    const char *result_step; /* which call failed */
} ipblocker_saver;

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
    ipblocker_saver saver;

    struct {
        uint64_t *allowed, *blocked_rate, *blocked_ids, *evicted, *pruned, *ids_not_kept, *oom;
        uint64_t *banned_msgs, *banned_conns, *banned_closed;
        uint64_t *ban_file_writes, *ban_file_errors, *ban_file_skipped;
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
/* Add (or mark) a ban from source src (IPB_BAN_*); -ENOSPC over ban_max,
 * -ENOMEM. *added: a new entry (not an existing one marked). */
int ipblocker_ban_add(ipblocker *b, const ipblocker_ban_key *key, uint8_t src, bool *added);
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

/* ---- ipblocker_banfile.c: the admin ban file's text, no I/O but a FILE
 * to read (separate from the module for the fuzzer). One entry per line
 * as ipblocker_ban_str prints it; '#' starts a comment; blank lines and
 * surrounding white space are ignored. */
#define IPB_BANFILE_LINE_MAX 256  /* longer lines are bad unless the excess is in a comment */
#define IPB_BANFILE_ENTRY_MAX 64  /* bytes ipblocker_banfile_format writes per entry at most */
/* Per line holding something: key set, or key NULL and text the line
 * (trimmed, escaped, cut to fit 80 bytes) for a bad one. */
typedef int (*ipblocker_banfile_fn)(void *ud, unsigned long line, const ipblocker_ban_key *key, const char *text);
/* Calls fn for every entry or bad line; stops early when fn returns < 0
 * and returns that. 0, or -EIO if reading failed. */
int ipblocker_banfile_parse(FILE *f, ipblocker_banfile_fn fn, void *ud);
/* Sorts keys (IPv4 first, then by address, then prefix length) and
 * writes the header and one line per key into buf; returns the length
 * (buf needs ipblocker_banfile_size(n) bytes). */
size_t ipblocker_banfile_size(size_t n);
size_t ipblocker_banfile_format(ipblocker_ban_key *keys, size_t n, char *buf, size_t cap);
/* Sort order of the file. */
int ipblocker_ban_key_cmp(const void *a, const void *b);

/* ---- ipblocker_banwriter.c: admin_ban_file */
/* Before init and in --check: the file readable if present, its directory
 * writable. Reads nothing but the file's type; changes nothing. */
int ipblocker_banfile_check(const char *path, char *err, size_t errlen);
/* At init: copies the path, loads the admin bans (a missing file is none).
 * -errno (logged) when the file cannot be read. */
int ipblocker_banfile_open(ipblocker *b);
/* The admin bans changed: write them (on the worker; coalesced). */
void ipblocker_banfile_changed(ipblocker *b);
/* From the prune timer: retry a write that failed. */
void ipblocker_banfile_retry(ipblocker *b);
/* An answer's note when the last write failed ("" otherwise). */
void ipblocker_banfile_note(ipblocker *b, rdv_buf *out);
/* At destroy: finishes the write in flight and writes what changed since. */
void ipblocker_banfile_close(ipblocker *b);

static inline uint64_t ipblocker_secs(uint64_t now, uint64_t then) { return now > then ? (now - then) / 1000 : 0; }

#endif
