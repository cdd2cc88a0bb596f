/* core/server.h — the core's private state (never installed). */
#ifndef RDV_CORE_SERVER_H
#define RDV_CORE_SERVER_H

#include <ev.h>
#include <stdio.h>

#include "config.h"
#include "rdv/core.h"
#include "rdv/proto.h"

typedef struct rdv_server rdv_server;
typedef struct rdv_mod rdv_mod;
typedef struct rdv_conn rdv_conn;

/* ---- core settings (group "core") ---- */
typedef struct rdv_core_cfg {
    rdv_strlist modules;      /* modules to load, in this order before the dependency sort */
    char *module_path;        /* directories to search, ':'-separated */
    char *log_level;
    char *admin_socket;       /* Unix socket path; "" = no console */
    int64_t max_connections;
    int64_t max_frame;
    int64_t idle_ms;
    int64_t write_queue_max;
    int64_t read_buffer;
    int64_t shutdown_ms;
    int64_t udp_rcvbuf;
    int64_t udp_batch;
    int64_t udp_coalesce_us;
    int64_t read_total, write_total;
    char *user;               /* "" = stay as started */
    bool ipv6;
} rdv_core_cfg;

typedef struct rdv_listener_cfg {
    char *name;
    char *bind;
    int64_t port;
    bool udp, tcp;
    int64_t idle_ms;
    int64_t sndbuf;
} rdv_listener_cfg;

extern const rdv_setting rdv_core_settings[];
extern const rdv_setting rdv_listener_settings[];

/* ---- logging ---- */
void rdv_log_set_level(rdv_log_level lvl);
int rdv_log_parse_level(const char *s, rdv_log_level *out);
bool rdv_log_enabled_at(rdv_log_level lvl);
/* ERROR lines logged so far: a failing step that logged its own reason
 * needs no errno in the summary line (which would often mislead). */
unsigned long rdv_log_errors(void);
void rdv_log_write(const char *who, rdv_log_level lvl, const char *fmt, va_list ap) RDV_PRINTF(3, 0);
void rdv_logf(const char *who, rdv_log_level lvl, const char *fmt, ...) RDV_PRINTF(3, 4);
bool rdv_ratelimit_ok(rdv_ratelimit *rl, uint64_t now_ms);

/* ---- modules ---- */
struct rdv_mod {
    rdv_core handle;          /* first: module calls come in with &handle */
    rdv_server *srv;
    const rdv_module *desc;
    void *dl;
    char *path;
    void *cfg;                /* filled settings (desc->config_size bytes) */
    void *state;
    bool inited, started;
    uint64_t handler_errors;
};

/* ---- listeners ---- */
struct rdv_listener {
    rdv_server *srv;
    char *name;
    rdv_transport transport;  /* TCP or UDP */
    rdv_listen_mode mode;     /* FRAMED_EXACT is stored as FRAMED + exact */
    bool exact;               /* read no byte past the frame being assembled */
    int fd, family, port;
    char *bind;
    uint64_t idle_ms;
    size_t max_buffer;
    size_t max_frame;         /* framed modes: largest payload accepted */
    const rdv_conn_ops *ops;
    void *ud;
    rdv_mod *owner;           /* NULL for core dispatch listeners */
    ev_io io;
    ev_timer retry;           /* accept paused after EMFILE */
    /* UDP read coalescing (listener.c): while datagrams arrive densely the
     * socket is read on a timerfd tick instead of on every arrival. */
    ev_io pause;              /* watches tfd while l->io is stopped */
    int tfd;                  /* -1 until the first pause */
    uint64_t last_wake_us;    /* CLOCK_MONOTONIC µs when the last read began */
    /* Hot sources (listener.c): per source-address hash bucket, when it last
     * sent (16 µs units, 0 = never); allocated with the first coalesced read. */
    uint32_t *hot;
    uint32_t wake_t16;        /* this wake-up's time, 16 µs units */
    bool wake_ticked;         /* this wake-up is a coalescing tick */
    unsigned wake_n, wake_hot; /* datagrams read this wake-up, of them from hot sources */
    rdv_listener *next;
};

/* ---- dispatch ---- */
typedef struct rdv_hentry {
    const rdv_handler *h;
    rdv_mod *mod;
    struct rdv_hentry *next;
} rdv_hentry;

typedef struct rdv_access_entry {
    rdv_mod *mod;
    int prio;
} rdv_access_entry;

/* ---- stats ---- */
typedef struct rdv_stat {
    char *name, *help;
    uint64_t value;           /* counters live here (pointer handed out) */
    uint64_t (*fn)(void *ud); /* gauges */
    void *ud;
    struct rdv_stat *next;
} rdv_stat;

/* ---- the server ---- */
struct rdv_server {
    struct ev_loop *loop;
    rdv_core_cfg cfg;
    rdv_listener_cfg *lcfg;
    size_t nlcfg;
    rdv_conf *conf;
    char *conf_dir;
    char *conf_text, *conf_text_name;
    rdv_core_cfg *cfg_pending; /* reload: the new core settings, for modules' check() */
    char *(*conf_regen)(void *ud, char *err, size_t errlen); /* see rdv_boot */
    void *conf_regen_ud;
    rdv_strlist overrides;

    rdv_mod **mods;           /* in dependency order */
    size_t nmods;
    rdv_mod core_mod;         /* handle used for the core's own log/stats */

    rdv_listener *listeners;

    rdv_hentry *table[RDV_TAG_MAX + 1];
    rdv_access_entry *access;
    size_t naccess;

    /* connections by id (uthash head, see conn.c) */
    rdv_conn *conns;
    size_t nconns;
    uint64_t rbuf_bytes;      /* read buffers of all connections (core.read_total) */
    uint64_t wbuf_bytes;      /* write queues of all connections (core.write_total) */
    rdv_conn_id next_id;

    /* one arena reused for every message (one loop thread) */
    rdv_arena arena;
    uint8_t *arena_mem;
    struct udp_batch *ub;     /* listener.c: recvmmsg/sendmmsg buffers */
    uint8_t *pack_buf;
    size_t pack_cap;

    struct rdv_service *services;
    struct rdv_hook *hooks;
    rdv_stat *stats;
    struct rdv_admin *admin;

    ev_signal sig_term, sig_int, sig_hup, sig_quit;
    ev_timer shutdown_timer;
    uint64_t shutdown_deadline_ms;
    bool stopping;
    int exit_code;
    char err[1024];           /* last start-up/reload error (tests read it) */

    struct {
        uint64_t *accepted, *refused_limit, *refused_access, *accept_emfile, *tcp_refused_oom, *closed_read_total,
            *closed_write_total;
        uint64_t *closed_oversize, *closed_protocol, *closed_idle, *closed_overflow;
        uint64_t *udp_in, *udp_out, *udp_undecodable, *udp_empty, *udp_unhandled, *udp_send_fail, *udp_pauses, *udp_hot;
        uint64_t *tcp_frames, *tcp_undecodable, *tcp_unhandled, *msg_dropped_access;
        uint64_t *handler_errors, *record_bad;
    } st;
};

/* api.c */
extern const rdv_core_api rdv_api_table;
rdv_mod *rdv_mod_of(rdv_core *c);

/* server.c */
/* Where the configuration comes from, in order: generated text (the hbbs /
 * hbbr launchers), the conf.d directory, overrides. dry: parse and load
 * modules (settings validated) but do not init, bind or start anything
 * (--print-config, --check). */
typedef struct rdv_boot {
    const char *conf_dir;
    const char *conf_text;
    const char *conf_text_name;   /* shown in error messages, e.g. "hbbs command line" */
    /* Makes conf_text again (malloc'd; NULL with err set) for each reload,
     * so a launcher's .env and -c file are read again on SIGHUP. */
    char *(*conf_regen)(void *ud, char *err, size_t errlen);
    void *conf_regen_ud;
    const rdv_strlist *overrides;
    bool dry;
} rdv_boot;
int rdv_server_init(rdv_server *s, const rdv_boot *boot);
int rdv_server_run(rdv_server *s);
void rdv_server_free(rdv_server *s);
int rdv_server_print_config(rdv_server *s, FILE *f);
int rdv_server_reload(rdv_server *s);

/* loader.c */
int rdv_load_modules(rdv_server *s, char *err, size_t errlen);
/* The ':'-separated directories searched for <module>.so: module_path
 * (core.module_path) when set, else the defaults (written to buf). */
const char *rdv_module_dirs(const char *module_path, char *buf, size_t len);
bool rdv_module_exists(const char *module_path, const char *name);
/* Run m's check() (ABI 1.2) on cfg with state (NULL before init); 0 or
 * -EINVAL with err naming the setting's file and line. */
int rdv_mod_check(const rdv_conf *conf, rdv_mod *m, void *state, const void *cfg, char *err, size_t errlen);
/* The summary line for a module whose init/start returned r < 0. */
void rdv_mod_failed(const char *name, const char *what, int r, unsigned long errors_before, char *err, size_t errlen);   /* dlopen, check, fill, sort, register */
int rdv_init_modules(rdv_server *s, char *err, size_t errlen);   /* init() in order */
int rdv_mod_fill_config(rdv_server *s, const rdv_conf *conf, const rdv_module *d, void **cfg,
                        char *err, size_t errlen);
void rdv_unload_modules(rdv_server *s);
/* Resolve module load order from descriptors (exposed for tests). */
int rdv_sort_modules(rdv_mod **mods, size_t n, char *err, size_t errlen);

/* dispatch.c */
int rdv_dispatch_register(rdv_server *s, rdv_mod *m, char *err, size_t errlen);
/* Decode and run ACCESS + handlers. conn may be NULL (UDP). Returns RDV_OK,
 * RDV_CLOSE (close/drop), or RDV_DECLINED (nobody handled it). */
int rdv_dispatch(rdv_server *s, rdv_transport tr, rdv_listener *l, const char *lname,
                 rdv_conn_id conn, const rdv_addr *peer, const uint8_t *p, size_t n);
int rdv_access_conn(rdv_server *s, rdv_transport tr, rdv_listener *l, rdv_conn_id id, const rdv_addr *peer);
void rdv_dispatch_free(rdv_server *s);

/* listener.c */
int rdv_listener_open(rdv_server *s, const rdv_listen_spec *spec, rdv_mod *owner, rdv_listener **out);
void rdv_listeners_stop(rdv_server *s);
void rdv_listeners_free(rdv_server *s);
int rdv_udp_send(rdv_server *s, rdv_listener *l, const rdv_addr *to, const uint8_t *p, size_t n);
#define RDV_UDP_BATCH_MAX 64
int rdv_udp_batch_init(rdv_server *s);
/* Raise the soft RLIMIT_NOFILE toward core.max_connections (nofile.c). */
void rdv_fit_nofile(rdv_server *s);
/* user.c: core.user exists (--check); switch to it (start). 0 or -1, err set. */
int rdv_user_check(const rdv_server *s, char *err, size_t errlen);
int rdv_user_switch(rdv_server *s, char *err, size_t errlen);
void rdv_udp_batch_free(rdv_server *s);

/* conn.c */
rdv_conn *rdv_conn_get(rdv_server *s, rdv_conn_id id);
/* Test hook (RDV_UTHASH_HOOK_DEFINE in conn.c, see rdv/uthash.h): uthash's
 * allocations for the connection table fail from the nth on, until 0. */
void rdv_conn_test_hash_fail_from(unsigned long nth);
unsigned long rdv_conn_test_hash_allocs(void);
void rdv_conn_accept(rdv_server *s, rdv_listener *l, int fd, const rdv_addr *peer);
int rdv_conn_send_payload(rdv_server *s, rdv_conn *c, const uint8_t *p, size_t n);
int rdv_conn_send_bytes(rdv_server *s, rdv_conn *c, const uint8_t *p, size_t n);
void rdv_conn_close(rdv_server *s, rdv_conn *c, rdv_close_reason why, bool flush);
int rdv_conn_set_key(rdv_conn *c, const uint8_t key[32]);
int rdv_conn_set_codec(rdv_conn *c, const rdv_codec *codec, void *ud);
int rdv_conn_set_idle(rdv_server *s, rdv_conn *c, uint64_t ms);
int rdv_conn_set_peer(rdv_conn *c, const rdv_addr *peer);
int rdv_conn_pause(rdv_server *s, rdv_conn *c, bool paused);
int rdv_conn_detach(rdv_server *s, rdv_conn *c, int *fd, uint8_t *buf, size_t *len);
int rdv_conn_dispatch(rdv_server *s, rdv_conn *c, const uint8_t *p, size_t n);
void rdv_conn_fill_info(rdv_conn *c, rdv_conn_info *out);
void rdv_conns_close_all(rdv_server *s, bool flush);
size_t rdv_conns_pending_writes(rdv_server *s);

/* services.c */
int rdv_service_publish(rdv_server *s, rdv_mod *m, const char *name, uint32_t ver, const void *vt, void *self);
const void *rdv_service_get(rdv_server *s, const char *name, uint32_t minver, void **self);
int rdv_hook_add(rdv_server *s, rdv_mod *m, const char *name, int prio, rdv_hook_fn fn, void *ud);
void rdv_hook_run(rdv_server *s, const char *name, const void *arg);
void rdv_services_free(rdv_server *s);

/* stats.c */
uint64_t *rdv_stat_counter(rdv_server *s, const char *prefix, const char *name, const char *help);
int rdv_stat_gauge(rdv_server *s, const char *prefix, const char *name, uint64_t (*fn)(void *), void *ud, const char *help);
void rdv_stats_print(rdv_server *s, rdv_buf *out, const char *filter);
uint64_t rdv_stat_value(rdv_server *s, const char *fullname, bool *found);
void rdv_stats_each(rdv_server *s, void (*fn)(void *, const rdv_stat_view *), void *ud);
void rdv_stats_free(rdv_server *s);

/* admin.c */
struct rdv_buf {
    char *p;
    size_t len, cap, limit;
    bool truncated;
};
void rdv_buf_printf(rdv_buf *b, const char *fmt, ...) RDV_PRINTF(2, 3);
int rdv_admin_open(rdv_server *s, const char *path);
int rdv_admin_register(rdv_server *s, rdv_mod *m, const char *name, const char *usage, rdv_admin_fn fn, void *ud);
/* Run one command line; answer appended to out. */
void rdv_admin_exec(rdv_server *s, char *line, rdv_buf *out);
void rdv_admin_close(rdv_server *s);

/* loop.c */
rdv_timer *rdv_timer_new(rdv_server *s, void (*cb)(void *), void *ud);
void rdv_timer_start(rdv_timer *t, uint64_t after_ms, uint64_t repeat_ms);
void rdv_timer_stop(rdv_timer *t);
void rdv_timer_free(rdv_timer *t);
rdv_io *rdv_io_new(rdv_server *s, int fd, unsigned ev, void (*cb)(void *, int, unsigned), void *ud);
void rdv_io_set(rdv_io *w, unsigned ev);
void rdv_io_free(rdv_io *w);
rdv_async *rdv_async_new(rdv_server *s, void (*cb)(void *), void *ud);
void rdv_async_send(rdv_async *a);
void rdv_async_free(rdv_async *a);
uint64_t rdv_now_ms(rdv_server *s);

#endif
