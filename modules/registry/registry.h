/* registry.h — internals shared by the registry module's files (not a
 * public header: the public contract is rdv/svc/registry.h).
 *
 * The peer table (rendezvous.md §2): one allocation per peer, an
 * open-addressing index keyed by id (registry_index.c), and ONE doubly
 * linked list of online peers ordered by last_reg_ms, walked from the head
 * by one repeating timer. */
#ifndef RDV_REGISTRY_INTERNAL_H
#define RDV_REGISTRY_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <rdv/core.h>
#include <rdv/proto.h>
#include <rdv/svc/blocklist.h>
#include <rdv/svc/registry.h>
#include <rdv/svc/storage.h>

/* The small tables (IP-change log, stream bindings) use uthash. It must not
 * exit the process when memory runs out: an add that cannot get its table
 * leaves hh.tbl NULL and we refuse instead. Ids are chosen by clients, so
 * every hash is keyed (SipHash with a random per-process key) to keep
 * crafted collisions from degrading lookups. */
uint64_t registry_hash64(const void *p, size_t n); /* never 0 */
unsigned registry_hash(const void *p, size_t n);
#define HASH_NONFATAL_OOM 1
#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = registry_hash((keyptr), (size_t)(keylen)))
#include <uthash.h>

/* Fixed by the protocol (rendezvous.md §6.2 step 2). */
#define REGISTRY_ID_MIN 6
/* Storage limits of a record (incoming messages have tighter, configured caps;
 * rows loaded from the database may use up to these). */
#define REGISTRY_ID_CAP 255
#define REGISTRY_UUID_CAP 65535
#define REGISTRY_PK_CAP 255

/* ---- settings (conf group `registry`) */
typedef struct registry_cfg {
    char *listener;             /* dispatch listener for UDP registration */
    int64_t serial;             /* ConfigUpdate serial (-s) */
    rdv_strlist rendezvous_servers; /* ConfigUpdate list (-R) */
    char *software_url;         /* SoftwareUpdate answer (-u); "" = off */
    int64_t online_ms;          /* REG_TIMEOUT */
    int64_t sweep_ms;           /* expiry timer period */
    int64_t max_peers;
    int64_t id_max_len;
    int64_t uuid_max_len;
    int64_t pk_max_len;
    int64_t pk_burst;           /* §11.2: accepted RegisterPk per burst */
    int64_t pk_window_s;        /* §11.2: gap that resets the burst */
    int64_t ip_change_window_s; /* §11.3: 180 */
    int64_t ip_change_keep_s;   /* §11.3 / §10: 360 */
    int64_t ip_changes_max;     /* table bound */
    int64_t ip_change_ips_max;  /* IPs remembered per id */
    /* EXT §15.4: registration over TCP / WebSocket */
    bool stream_register;       /* false = OSS: NOT_SUPPORT and close */
    bool stream_require_key;    /* TCP only with the secure-TCP record layer */
    int64_t stream_keep_alive_s; /* RegisterPkResponse.keep_alive */
    int64_t stream_heartbeat_ms; /* empty frame period (capped, see registry_stream.c) */
    int64_t stream_max;         /* stream-registered peers at most */
} registry_cfg;

/* ---- one peer. Addresses are kept as 16 bytes (IPv4 as ::ffff:a.b.c.d,
 * which never occurs for a real IPv6 peer since the core normalises
 * addresses) to stay compact. */
enum {
    REG_F_COLD = 1u << 0,    /* loaded from storage, not looked at since start */
    REG_F_ONLINE = 1u << 1,  /* linked in the online list */
    REG_F_GUID = 1u << 2,    /* guid is set (row inserted or loaded) */
    REG_F_INFO_IP = 1u << 3, /* info_ip holds a parsed info.ip */
    REG_F_DIRTY = 1u << 4,   /* newer than storage: its write was refused (queue full), resubmitted by the sweep */
    REG_F_REINSERT = 1u << 5, /* the storage lost its row (file replaced): the next put is an insert, same guid */
};

typedef struct registry_peer {
    struct registry_peer *prev, *next;  /* online list (utlist DL: head->prev is the tail) */
    uint64_t last_reg_ms;               /* 0 = never */
    uint64_t reg_pk_ms;                 /* §11.2 limiter time, 0 = never */
    uint8_t guid[16];
    uint8_t addr_ip[16];                /* socket_addr */
    uint8_t info_ip[16];                /* info.ip */
    uint16_t addr_port;                 /* host order; 0 = no socket_addr */
    uint16_t uuid_len;
    uint8_t id_len, pk_len;
    uint8_t reg_pk_count;
    uint8_t flags;                      /* REG_F_* */
    char data[];                        /* id, NUL, uuid, pk */
} registry_peer;

static inline const char *registry_peer_id(const registry_peer *p) { return p->data; }
static inline const uint8_t *registry_peer_uuid(const registry_peer *p)
{
    return (const uint8_t *)p->data + p->id_len + 1;
}
static inline const uint8_t *registry_peer_pk(const registry_peer *p)
{
    return registry_peer_uuid(p) + p->uuid_len;
}

/* ---- the id index (registry_index.c): slot = record + its id's hash (0 =
 * empty). Records are replaced in place, never removed. */
typedef struct registry_slot {
    registry_peer *p;
    uint64_t h;
} registry_slot;

typedef struct registry_index {
    registry_slot *slots;
    size_t cap, n;
} registry_index;

/* The slot holding id (h = registry_hash64(id)), or NULL. */
registry_peer **registry_index_find(registry_index *ix, const char *id, size_t len, uint64_t h);
/* Add a record whose id is not in the index; -1 when the index cannot grow
 * (out of memory; nothing changed). */
int registry_index_add(registry_index *ix, registry_peer *p, uint64_t h);
void registry_index_free(registry_index *ix);

/* ---- §11.3 IP-change log entry: id -> (t, {ip: n}) */
typedef struct registry_ipc_ip {
    uint8_t ip[16];
    uint32_t n;
} registry_ipc_ip;

typedef struct registry_ipc {
    UT_hash_handle hh;                 /* key: id */
    struct registry_ipc *prev, *next;  /* ordered by t (oldest first) */
    uint64_t t;
    uint32_t nips, cap;
    registry_ipc_ip *ips;
    char id[];
} registry_ipc;

/* ---- a peer bound to the stream connection it registered on (EXT §15.4,
 * or set_conn). One connection per id and one id per connection. */
typedef struct registry_stream {
    UT_hash_handle hh;       /* reg->binds, key: id */
    UT_hash_handle hh_conn;  /* reg->streams, key: conn */
    rdv_conn_id conn;
    rdv_addr peer;           /* the connection's address: socket_addr on each refresh */
    bool own;                /* registered here: heartbeats, refresh, close; false = set_conn */
    bool tcp;                /* a TCP connection (its idle limit is ours); WebSocket: the transport's */
    char id[];
} registry_stream;

/* ---- module state */

typedef struct registry {
    rdv_core *core;
    const rdv_core_api *api;
    const registry_cfg *cfg;

    const rdv_storage_api *storage;
    void *storage_self;
    bool storage_v2;                    /* on_lost is there */
    bool stopping;                      /* stop has begun: the storage retries nothing more */
    const rdv_blocklist_api *blocklist; /* optional */
    void *blocklist_self;

    registry_index peers;               /* by id */
    registry_peer *online;              /* DL list head, ordered by last_reg_ms */
    size_t npeers, ncold, nonline;
    size_t ndirty;                      /* records with REG_F_DIRTY */
    size_t dirty_cursor;                /* index slot the resubmit scan goes on from */

    registry_ipc *ipc;                  /* uthash head */
    registry_ipc *ipc_list;             /* DL list ordered by t */
    size_t nipc;

    registry_stream *binds;             /* by id (EXT §15.4, set_conn) */
    registry_stream *streams;           /* the same records by connection */
    size_t nstreams;                    /* records with own set */
    rdv_timer *heartbeat;               /* one timer for every own stream */
    uint64_t heartbeat_ms;              /* its period now */

    rdv_timer *sweep;

    /* runtime ConfigUpdate state (§6.10): starts from cfg, changed by
     * loopback ConfigUpdate, reset when a reload changes the settings */
    int32_t serial;
    char **servers;
    size_t nservers;
    rdv_strlist servers_view;           /* what config() hands out */
    char version[128];                  /* derived from software_url (§6.11) */

    char ipbuf[64];                     /* rdv_peer_info.ip of the last lookup */

    struct {
        uint64_t *register_peer, *register_peer_empty, *registrations, *request_pk;
        uint64_t *pk_ok, *pk_uuid_mismatch, *pk_too_frequent, *pk_invalid_id, *pk_server_error,
            *pk_not_support, *pk_ignored, *pk_oversize;
        uint64_t *peers_refused_full, *oom;
        uint64_t *store_put_failed, *store_errors, *stored, *store_resubmitted, *store_lost;
        uint64_t *load_skipped;
        uint64_t *ip_changes, *ip_change_dropped, *ip_change_evicted;
        uint64_t *config_updates, *config_update_ignored, *software_updates;
        uint64_t *went_online, *went_offline;
        uint64_t *stream_registered, *stream_refused_full, *stream_replaced, *stream_closed;
        uint64_t *heartbeats, *heartbeat_echoes;
    } st;
} registry;

/* ---- registry_table.c */
registry_peer *registry_find(registry *reg, const char *id, size_t id_len);
/* Build or rebuild a record with new uuid/pk (fixed fields copied from old,
 * which is freed and replaced in the table and the online list). Returns the
 * new record or NULL (out of memory; old is untouched). */
registry_peer *registry_put_record(registry *reg, registry_peer *old, const char *id, size_t id_len,
                                   const uint8_t *uuid, size_t uuid_len, const uint8_t *pk, size_t pk_len);
/* Mark registered now at addr: (re)link at the tail of the online list and
 * run RDV_HOOK_PEER_ONLINE if it was offline. */
void registry_touch(registry *reg, registry_peer *p, const rdv_addr *addr);
/* Expire peers whose window passed (RDV_HOOK_PEER_OFFLINE for each). Runs
 * on the sweep timer and before each registration, never inside a service
 * call, so no hook fires re-entrantly in another module's handler. */
void registry_expire(registry *reg);
/* Online peers now, counting those the next sweep will expire as offline. */
size_t registry_online_now(registry *reg);
bool registry_is_online(registry *reg, const registry_peer *p);
/* registry_is_online at a given loop time (the rule itself, for scans). */
static inline bool registry_online_at(const registry *reg, const registry_peer *p, uint64_t now)
{
    return (p->flags & REG_F_ONLINE) && now - p->last_reg_ms < (uint64_t)reg->cfg->online_ms;
}
void registry_table_free(registry *reg);
long registry_load(registry *reg);
int registry_persist(registry *reg, registry_peer *p);
/* Resubmit records whose write the storage refused (REG_F_DIRTY): at most
 * REGISTRY_RESUBMIT_SCAN index slots per call (sweep timer), stopping at the
 * first refusal. */
void registry_resubmit(registry *reg);
#define REGISTRY_RESUBMIT_SCAN 65536
/* At stop: resubmit every such record (the whole index). When the queue is
 * at its bound, wait for the storage to write (storage->flush) in slices of
 * REGISTRY_STOP_SLICE_MS, giving up after a slice without progress (the
 * storage is failing) or REGISTRY_STOP_MS in all, so a stop during an
 * outage costs at most one slice more. Logs how many stay unsaved: they are
 * lost with the process. */
void registry_resubmit_all(registry *reg);
/* The storage's on_lost (rdv/svc/storage.h v2): every peer is put again as
 * an insert with its own guid, by the sweep. */
void registry_store_lost(void *ud);
#define REGISTRY_STOP_MS 5000
#define REGISTRY_STOP_SLICE_MS 1000
void registry_fill_info(registry *reg, registry_peer *p, rdv_peer_info *out);

/* ---- registry_register.c */
bool registry_on_listener(const registry *reg, const rdv_msg_ctx *ctx);
int registry_on_register_peer(void *state, const rdv_msg_ctx *ctx, const void *msg);
int registry_on_register_pk(void *state, const rdv_msg_ctx *ctx, const void *msg);
/* §6.2 steps 2-8 (the caller did step 1 and the size caps). */
Hbb__RegisterPkResponse__Result registry_register_pk(registry *reg, const Hbb__RegisterPk *rk, const rdv_addr *from);
/* Count and send RegisterPkResponse{result[, keep_alive]} to the source. */
void registry_reply_pk(registry *reg, const rdv_msg_ctx *ctx, Hbb__RegisterPkResponse__Result result,
                       int32_t keep_alive);
/* Step 1 and our size caps: true if rk is to be ignored (counted). */
bool registry_pk_ignored(registry *reg, const Hbb__RegisterPk *rk);

/* ---- registry_stream.c (EXT §15.4) */
int registry_on_register_pk_stream(void *state, const rdv_msg_ctx *ctx, const void *msg);
int registry_on_heartbeat(void *state, const rdv_msg_ctx *ctx, const void *msg);
int registry_stream_access(void *state, const rdv_msg_ctx *ctx, const void *msg);
void registry_stream_on_close(void *ud, const void *arg);
int registry_stream_set_conn(registry *reg, const char *id, rdv_conn_id conn);
registry_stream *registry_stream_by_id(registry *reg, const char *id, size_t n);
int registry_stream_init(registry *reg);
/* New settings: heartbeat period and idle limits follow. */
void registry_stream_reconfigure(registry *reg);
void registry_stream_free(registry *reg);

/* ---- registry_update.c */
int registry_on_config_update(void *state, const rdv_msg_ctx *ctx, const void *msg);
int registry_on_software_update(void *state, const rdv_msg_ctx *ctx, const void *msg);
/* §8.1 validity test; resolve = may use DNS (start-up only). */
bool registry_server_valid(const char *s, bool resolve);
/* Replace the runtime list (copies the valid, non-empty entries). */
int registry_set_servers(registry *reg, char *const *v, size_t n, bool resolve);
void registry_free_servers(registry *reg);
/* hbb_common's get_version_from_url (rendezvous.md §6.11). */
void registry_version_from_url(const char *url, char *out, size_t cap);

/* ---- registry_ipchange.c */
void registry_ipc_record(registry *reg, const char *id, const uint8_t ip[16]);
void registry_ipc_prune(registry *reg);
void registry_ipc_free(registry *reg);
void registry_ipc_cmd(void *ud, int argc, char **argv, rdv_buf *out);

/* ---- registry_admin.c: `peer <id>` and `peers [online|all] ...` */
int registry_admin_register(registry *reg);

/* Whole seconds elapsed, as upstream's Instant::elapsed().as_secs(). */
static inline uint64_t registry_secs(uint64_t now, uint64_t then) { return now > then ? (now - then) / 1000 : 0; }

#endif
