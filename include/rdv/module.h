/* rdv/module.h — what a module exports: its descriptor.
 *
 * A module is a shared object exporting one function, rdv_module_get(), that
 * returns a pointer to a static const rdv_module. Fill it with RDV_MODULE_HEAD
 * so the ABI fields are never written by hand:
 *
 *     static const rdv_module desc = {
 *         RDV_MODULE_HEAD("example", "1.0.0"),
 *         .settings = example_settings, .config_size = sizeof(struct example_cfg),
 *         .handlers = example_handlers,
 *         .init = example_init, .destroy = example_destroy,
 *     };
 *     RDV_MODULE_EXPORT(desc)
 *
 * ABI rule (from Varnish): a module's abi_major must equal the core's; its
 * abi_minor must be <= the core's. Changes are listed in the changelog below.
 *
 * ABI changelog
 *   1.0  2026-11-21  first ABI (rdv_core_api up to conn_set_peer; later
 *                    additions go at the end and are detected with api->size).
 *   1.1              RDV_LISTEN_FRAMED_EXACT.
 *   1.2              rdv_module.check.
 *   1.3  2026-11-23  rdv_core_api.stats_each (exporters).
 */
#ifndef RDV_MODULE_H
#define RDV_MODULE_H

#include "rdv/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RDV_ABI_MAJOR 1
#define RDV_ABI_MINOR 3 /* changelog above */

/* ------------------------------------------------------------------ settings
 * A module declares its settings as a table; the core parses the module's
 * group in conf.d into a struct of config_size bytes (fields at offsets),
 * fills defaults, rejects unknown keys and out-of-range values with
 * file:line, and hands the struct to init()/reconfigure(). The struct and the
 * strings in it are owned by the core and stay valid until the next
 * successful reconfigure() (or destroy()). Field C types:
 *   RDV_SET_INT     int64_t       (min/max inclusive, checked)
 *   RDV_SET_BOOL    bool
 *   RDV_SET_DOUBLE  double        (dmin/dmax inclusive, checked)
 *   RDV_SET_STRING  char *        (never NULL: "" when unset; max = max length, 0 = 4096)
 *   RDV_SET_STRLIST rdv_strlist   (max = max entries, 0 = 4096)
 */
typedef enum rdv_setting_type {
    RDV_SET_INT = 1,
    RDV_SET_BOOL,
    RDV_SET_DOUBLE,
    RDV_SET_STRING,
    RDV_SET_STRLIST,
} rdv_setting_type;

enum {
    RDV_SETF_RELOAD = 1u << 0, /* may change on SIGHUP; others need a restart */
    RDV_SETF_SECRET = 1u << 1, /* redacted in --print-config and logs */
};

typedef struct rdv_setting {
    const char *name;
    rdv_setting_type type;
    size_t offset;        /* offsetof(module cfg struct, field) */
    unsigned flags;       /* RDV_SETF_* */
    int64_t idef;         /* default for INT / BOOL */
    double ddef;          /* default for DOUBLE */
    const char *sdef;     /* default for STRING (NULL = "") */
    int64_t min, max;     /* INT bounds (both 0 = unbounded); STRING/STRLIST length cap */
    double dmin, dmax;    /* DOUBLE bounds (both 0 = unbounded) */
    const char *help;     /* one line, shown by --print-config */
} rdv_setting;

/* Helpers to write setting rows compactly. */
#define RDV_SETTING_INT(st, field, def, lo, hi, fl, h) \
    { #field, RDV_SET_INT, offsetof(st, field), (fl), (def), 0, NULL, (lo), (hi), 0, 0, (h) }
#define RDV_SETTING_BOOL(st, field, def, fl, h) \
    { #field, RDV_SET_BOOL, offsetof(st, field), (fl), (def), 0, NULL, 0, 0, 0, 0, (h) }
#define RDV_SETTING_DOUBLE(st, field, def, lo, hi, fl, h) \
    { #field, RDV_SET_DOUBLE, offsetof(st, field), (fl), 0, (def), NULL, 0, 0, (lo), (hi), (h) }
#define RDV_SETTING_STRING(st, field, def, fl, h) \
    { #field, RDV_SET_STRING, offsetof(st, field), (fl), 0, 0, (def), 0, 0, 0, 0, (h) }
#define RDV_SETTING_STRLIST(st, field, fl, h) \
    { #field, RDV_SET_STRLIST, offsetof(st, field), (fl), 0, 0, NULL, 0, 0, 0, 0, (h) }
#define RDV_SETTING_END { NULL, 0, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL }

/* ------------------------------------------------------------------ handlers
 * What a handler receives. Everything is borrowed for the duration of the
 * call; keep a copy of what you need later. */
typedef struct rdv_msg_ctx {
    rdv_transport transport;      /* what the message arrived on */
    rdv_listener *listener;       /* the listener (for UDP replies, and its name) */
    const char *listener_name;    /* e.g. "main", "nat" (core config) */
    rdv_conn_id conn;             /* 0 for UDP */
    const rdv_addr *peer;         /* normalised source address */
    const uint8_t *raw;           /* the serialized RendezvousMessage */
    size_t raw_len;
    int tag;                      /* RendezvousMessage oneof case (0 = unset) */
} rdv_msg_ctx;

/* msg is a const Hbb__RendezvousMessage * (rdv/proto.h); void * keeps this
 * header free of the generated code. Return RDV_OK, RDV_DECLINED, RDV_CLOSE
 * or -errno (logged rate-limited, counted, and treated like RDV_CLOSE). A
 * protocol failure is a reply message, not a return code. */
typedef int (*rdv_handler_fn)(void *state, const rdv_msg_ctx *ctx, const void *msg);

typedef struct rdv_handler {
    int tag;                 /* RendezvousMessage oneof case; 0 = empty message (heartbeat) */
    unsigned transports;     /* RDV_TR_* mask */
    const char *listener;    /* listener name filter, NULL = any */
    rdv_handler_fn fn;       /* NULL ends the table */
    unsigned flags;          /* RDV_HF_* */
} rdv_handler;
#define RDV_HANDLER_END { 0, 0, NULL, NULL, 0 }

enum {
    /* Several modules may chain on this (tag, transport, listener); without it
     * a second claim is a startup error naming both modules. */
    RDV_HF_SHARED = 1u << 0,
};

/* ACCESS phase: runs for every decoded message before dispatch, and for every
 * accepted connection (msg == NULL, tag == 0). RDV_OK lets it through,
 * RDV_DECLINED drops the message silently, RDV_CLOSE closes the connection.
 * At accept time both RDV_DECLINED and RDV_CLOSE refuse the connection (the
 * listener's on_open/on_close are then never called). */
typedef int (*rdv_access_fn)(void *state, const rdv_msg_ctx *ctx, const void *msg);

/* ------------------------------------------------------------------ services */
typedef struct rdv_dep {
    const char *name;   /* service name, e.g. "storage"; NULL ends the list */
    uint32_t version;   /* provided version / minimum required version */
    bool optional;      /* requires only: load order if present, no error if absent */
} rdv_dep;

/* ------------------------------------------------------------------ descriptor */
typedef struct rdv_module {
    uint32_t abi_major, abi_minor;
    const char *name;          /* equals the .so basename and the conf.d group */
    const char *version;
    const char *description;

    const rdv_setting *settings; /* NULL or terminated by RDV_SETTING_END */
    size_t config_size;
    /* Cross-field validation after all values parsed; write a reason to err. */
    int (*validate)(const void *cfg, char *err, size_t errlen);

    const rdv_handler *handlers; /* NULL or terminated by RDV_HANDLER_END */
    rdv_access_fn access;        /* optional ACCESS-phase callback */
    int access_priority;         /* lower runs first */

    const rdv_dep *requires;     /* NULL or terminated by a NULL name */
    const rdv_dep *provides;

    /* Lifecycle: init -> start -> (reconfigure)* -> stop -> destroy.
     * init: allocate state, publish services, register hooks/commands/stats;
     *       look up required services. Return 0 or -errno (start-up fails,
     *       naming the module). *state is passed to every callback.
     * start: all modules are initialised; open listeners, start timers.
     * reconfigure: new validated cfg (SIGHUP); return <0 to refuse (the old
     *       configuration stays whole for every module: modules that took
     *       the new cfg before are reconfigured with their old one again,
     *       so reconfigure must accept the cfg it ran with before).
     * stop: stop accepting work (shutdown begins); may still send.
     * destroy: free everything. */
    int (*init)(rdv_core *core, const void *cfg, void **state);
    int (*start)(void *state);
    int (*reconfigure)(void *state, const void *cfg);
    void (*stop)(void *state);
    void (*destroy)(void *state);

    /* ABI 1.2 (read only from modules that say abi_minor >= 2). Optional
     * checks of cfg that need more than cfg (validate's job): the core's
     * settings (api->core_int) or the module's running state. Must change
     * nothing. Called before init at start and by --check (state NULL),
     * and on reload for every module before any takes its new settings
     * (state set; core_int answers with the new core settings), so the
     * operator hears of it from --check and the reload is refused whole.
     * Start the reason with "<module>.<setting>" as for validate. */
    int (*check)(rdv_core *core, void *state, const void *cfg, char *err, size_t errlen);
} rdv_module;

/* The check callback of d, NULL when absent or d predates ABI 1.2. */
#define RDV_MODULE_CHECK(d) ((d)->abi_minor >= 2 ? (d)->check : NULL)

#define RDV_MODULE_HEAD(name_, version_) \
    .abi_major = RDV_ABI_MAJOR, .abi_minor = RDV_ABI_MINOR, .name = (name_), .version = (version_)

#define RDV_MODULE_SYMBOL "rdv_module_get"
typedef const rdv_module *(*rdv_module_get_fn)(void);
/* The one symbol a module exports (defined by RDV_MODULE_EXPORT). */
const rdv_module *rdv_module_get(void);

#if defined(__GNUC__)
#define RDV_EXPORT __attribute__((visibility("default")))
#else
#define RDV_EXPORT
#endif

#define RDV_MODULE_EXPORT(desc) \
    RDV_EXPORT const rdv_module *rdv_module_get(void); \
    RDV_EXPORT const rdv_module *rdv_module_get(void) { return &(desc); }

#ifdef __cplusplus
}
#endif
#endif
