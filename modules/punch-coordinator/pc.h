/* pc.h — punch-coordinator internals shared by its source files (and its
 * unit tests, which compile those files). Nothing here is public API.
 *
 * Files: punch_coordinator.c (descriptor, settings, lifecycle),
 * pc_handlers.c (the messages of rendezvous.md §6.3–6.7), pc_pending.c
 * (the pending-request table of §7), pc_relays.c (relay list, rotation and
 * health check of §8.1), pc_resolver.c (name resolution off the loop
 * thread), pc_lan.c (LAN mask and local IP of §8.2), pc_punchlog.c (§11.4),
 * pc_admin.c (the upstream console commands of §10). */
#ifndef PC_H
#define PC_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rdv/core.h>
#include <rdv/proto.h>
#include <rdv/svc/keys.h>
#include <rdv/svc/login.h>
#include <rdv/svc/registry.h>
#include <rdv/wire.h>

/* Out of memory in the pending tables refuses one operation (rdv/uthash.h). */
#define RDV_UTHASH_PREFIX pc
#include <rdv/uthash.h>

/* Largest relay list we keep (entries after splitting on ','), and the
 * longest entry (a host name is at most 253 characters). */
#define PC_RELAY_MAX 64
#define PC_RELAY_TEXT_MAX 300
/* Addresses tried per relay entry by the health check. */
#define PC_RELAY_ADDRS 4
/* Punch log dedupe (rendezvous.md §11.4): the newest 30 records, 60 s. */
#define PC_PUNCHLOG_SCAN 30
#define PC_PUNCHLOG_DEDUPE_MS 60000

/* ------------------------------------------------------------------ settings */
typedef struct pc_cfg {
    rdv_strlist relay_servers;  /* hbbs -r: "host" or "host:port", comma lists allowed */
    bool always_use_relay;      /* ALWAYS_USE_RELAY */
    char *mask;                 /* --mask: IPv4 CIDR, "" = off */
    char *local_ip;             /* LOCAL-IP; "" = detect when a mask is set */
    int64_t relay_port;         /* port for health-checking entries without one */
    int64_t relay_check_ms;     /* health check period; 0 = never */
    int64_t relay_check_timeout_ms;
    int64_t pending_max;        /* pending-table bound (connections tracked) */
    int64_t pending_timeout_ms; /* a parked requester is forgotten after this */
    int64_t punch_log_max;      /* punch-request log bound; 0 = no log */
    bool udp_punch;             /* EXT §15.8: udp_port to B, UDP PunchHoleSent back to A */
    bool field_passthrough;     /* EXT §15.9: socket_addr_v6, upnp_port, force_relay */
} pc_cfg;

/* ------------------------------------------------------------------ pending table (§7) */
/* A table key: a normalised requester address (IP and port). */
typedef struct pc_key {
    uint8_t fam;      /* 4 or 6 */
    uint8_t ip[16];
    uint16_t port;
} pc_key;

/* One stream connection that sent PunchHoleRequest / RequestRelay. While
 * `parked` it owns pending[key]; afterwards (answered, or replaced by a
 * newer parking under the same key) its reply channel is spent: upstream
 * moved the channel into the table, so the connection can never be
 * answered again (rendezvous.md §4.2, §7.3). */
typedef struct pc_rec {
    rdv_conn_id conn;
    pc_key key;
    bool parked;
    bool udp;               /* B was told A's udp_port: a UDP PunchHoleSent may answer (EXT §15.8) */
    uint64_t since_ms;
    UT_hash_handle hh_conn; /* pending.by_conn, every record */
    UT_hash_handle hh_key;  /* pending.by_key, parked records only */
    struct pc_rec *prev, *next; /* age list, oldest first */
} pc_rec;

typedef struct pc_pending {
    pc_rec *by_conn, *by_key;
    pc_rec *oldest, *newest;
    size_t nrec, nparked;
    rdv_timer *sweep;
} pc_pending;

/* ------------------------------------------------------------------ relays (§8.1) */
typedef struct pc_relay {
    struct pc *owner;
    char *text;                 /* exactly as configured: what clients get */
    bool literal;               /* an IP literal: no DNS needed */
    rdv_addr lit;               /* the literal's address (port 0 = none given) */
    /* health check of this entry */
    rdv_addr cand[PC_RELAY_ADDRS];
    size_t ncand, next_cand;
    int fd;
    rdv_io *io;
    int result;                 /* 0 running, 1 reachable, -1 not */
} pc_relay;

typedef struct pc_relays {
    pc_relay *conf[PC_RELAY_MAX]; /* configured, valid, in configured order */
    size_t nconf;
    size_t active[PC_RELAY_MAX];  /* indexes into conf: the healthy subset */
    size_t nactive;
    uint64_t rotation;            /* process-wide round-robin counter */
    uint64_t gen;                 /* bumped whenever the configured list changes */
    bool checking;
    uint64_t check_gen;
    uint64_t check_seq;           /* bumped by every check: a job answers only its own */
    size_t check_left;
    rdv_timer *tick, *deadline;
} pc_relays;

/* ------------------------------------------------------------------ resolver */
/* A job for the resolver thread: resolve names[i] (host or host:port). */
enum { PC_JOB_VALIDATE = 1, PC_JOB_CHECK = 2 };
typedef struct pc_job {
    int kind;
    uint64_t gen;
    uint64_t seq;               /* PC_JOB_CHECK: the check it was made for */
    size_t n;
    char **names;
    uint16_t defport;           /* port for entries without one */
    /* results, filled by the thread */
    bool *ok;
    rdv_addr (*addrs)[PC_RELAY_ADDRS];
    size_t *naddrs;
    struct pc_job *next;
} pc_job;

typedef struct pc_resolver {
    const rdv_core_api *api;
    pthread_t thread;
    bool inited, started, stop, working;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pc_job *todo, *done;        /* FIFO lists */
    size_t ntodo;
    rdv_async *wake;
} pc_resolver;

/* ------------------------------------------------------------------ punch log (§11.4) */
typedef struct pc_punch {
    uint64_t wall_us, mono_ms;
    char from_ip[INET6_ADDRSTRLEN];
    char to_ip[INET6_ADDRSTRLEN];
    char *id;
} pc_punch;

typedef struct pc_punchlog {
    pc_punch *ring;
    size_t cap, start, n;       /* oldest at ring[start] */
} pc_punchlog;

/* ------------------------------------------------------------------ state */
typedef struct pc {
    rdv_core *core;
    const pc_cfg *cfg;
    const rdv_keys_api *keys;
    void *keys_self;
    const rdv_registry_api *reg;
    void *reg_self;
    const rdv_login_api *login; /* NULL unless login-gate is loaded (§15.10) */
    void *login_self;
    rdv_listener *udp;          /* the "main" UDP listener pushes go out of */

    bool always_use_relay;      /* runtime flag (setting, `aur`) */
    bool mask_on;
    uint32_t mask_net, mask_bits; /* host order */
    char local_ip[PC_RELAY_TEXT_MAX]; /* effective: "" unless a mask is set */

    pc_pending pending;
    pc_relays relays;
    pc_resolver resolver;
    pc_punchlog log;

    struct {
        uint64_t *punch_requests, *licence_mismatch, *login_refused, *id_not_exist, *offline;
        uint64_t *punch_hole, *fetch_local_addr, *push_fail;
        uint64_t *punch_hole_sent, *local_addr, *relay_response, *request_relay, *request_relay_unknown;
        uint64_t *delivered, *undeliverable, *deliver_fail;
        uint64_t *pending_evicted, *pending_expired, *pending_replaced;
        uint64_t *udp_ignored, *wrong_listener, *parked_reply_dropped;
        uint64_t *signed_pk, *relay_checks, *relay_check_skipped, *resolve_failed;
        uint64_t *udp_punch_hole_sent, *bad_fields, *oom;
    } st;
} pc;

/* punch_coordinator.c */
bool pc_listener_ok(const rdv_msg_ctx *ctx);

/* pc_pending.c */
void pc_key_of(pc_key *k, const rdv_addr *a);
int pc_pending_init(pc *p);
void pc_pending_free(pc *p);
/* Park conn's reply channel under norm(a) (§6.3 step 1); no-op if this
 * connection parked before. */
void pc_pending_park(pc *p, rdv_conn_id conn, const rdv_addr *a);
/* True if conn's reply channel is parked or spent. */
bool pc_pending_taken(pc *p, rdv_conn_id conn);
bool pc_pending_has(pc *p, const rdv_addr *a);
/* conn's parked request offered a UDP port to B (EXT §15.8). */
void pc_pending_mark_udp(pc *p, rdv_conn_id conn);
/* pending[norm(a)] exists and was marked by pc_pending_mark_udp. */
bool pc_pending_has_udp(pc *p, const rdv_addr *a);
/* Send msg to pending[norm(a)] and remove the entry. 0, or -ENOENT when
 * there is no entry (nothing sent), or the send error. */
int pc_pending_deliver(pc *p, const rdv_addr *a, const Hbb__RendezvousMessage *msg);
void pc_pending_conn_closed(pc *p, rdv_conn_id conn);
void pc_pending_sweep(pc *p);
void pc_pending_trim(pc *p);

/* pc_handlers.c */
extern const rdv_handler pc_handlers[];
int pc_access(void *state, const rdv_msg_ctx *ctx, const void *msg);
/* signed_pk(version, id) of §9 into a malloc'ed buffer (*out, *len); *out
 * is NULL and *len 0 when unsigned. Returns 0 or -ENOMEM. */
int pc_signed_pk(pc *p, const char *version, const char *id, uint8_t **out, size_t *len);

/* pc_lan.c */
/* Parse cfg mask/local_ip into p (warnings for bad values). */
void pc_lan_configure(pc *p);
bool pc_is_lan(const pc *p, const rdv_addr *a);
/* "a.b.c.d/n" or "a.b.c.d" (= /32). 0 or -EINVAL. */
int pc_parse_mask(const char *s, uint32_t *net, uint32_t *bits);

/* pc_relays.c */
int pc_relays_init(pc *p);
void pc_relays_start(pc *p);
void pc_relays_free(pc *p);
/* Replace the configured and active lists (§8.1); items may hold comma
 * lists. Names are resolved off the loop thread: until then the previous
 * lists stay. */
void pc_relays_set(pc *p, const char *const *items, size_t n);
const char *pc_pick_relay(pc *p);
void pc_relays_check(pc *p);
void pc_relays_job_done(pc *p, pc_job *job);
/* Parse one entry without DNS: 1 = IP literal (lit set), 0 = needs a name
 * lookup, -1 = invalid. */
int pc_relay_classify(const char *text, rdv_addr *lit);

/* pc_resolver.c */
int pc_resolver_init(pc *p);
void pc_resolver_free(pc *p);
/* Queue a job (taken over); 0 or -errno (job freed). */
int pc_resolver_submit(pc *p, pc_job *job);
pc_job *pc_job_new(int kind, uint64_t gen, size_t n, uint16_t defport);
void pc_job_free(pc_job *job);
/* The lookup itself (runs on the resolver thread; exposed for tests). */
bool pc_resolve_entry(const char *text, uint16_t defport, rdv_addr *out, size_t *nout);

/* pc_punchlog.c */
int pc_punchlog_resize(pc *p, size_t cap);
void pc_punchlog_free(pc *p);
void pc_punchlog_add(pc *p, const rdv_addr *from, const rdv_addr *to, const char *id);
void pc_punchlog_clear(pc *p);

/* pc_admin.c */
int pc_admin_register(pc *p);
void pc_rust_debug_str(const char *s, char *out, size_t cap);

#endif
