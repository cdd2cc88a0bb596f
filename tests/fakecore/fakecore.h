/* fakecore.h — a fake rdvd core for module unit tests (ARCHITECTURE.md §1.4).
 *
 * It implements every member of rdv_core_api with no sockets and no event
 * loop: sends are recorded in a queue the test pops, time only moves when the
 * test calls fc_advance(), and messages are injected by the test. A suite
 * compiles the module's sources directly (rdv_add_module_test) and drives it:
 *
 *     fc_core *fc = fc_new();
 *     void *st;
 *     cr_assert_eq(fc_load(fc, rdv_module_get(), "greeting=hi\n", &st), 0);
 *     rdv_addr a = fc_addr("10.0.0.1:4000");
 *     fc_udp(fc, "main", &a, &msg);           // runs ACCESS + dispatch
 *     const fc_sent *s = fc_next_sent(fc);    // what the module sent
 *     fc_free(fc);                            // unloads modules too
 *
 * Behaviour mirrors the real core where a module can observe it (ACCESS
 * before dispatch, RDV_DECLINED chains, RDV_CLOSE closes, unhandled stream
 * messages close, -ENOTCONN on closed ids); differences are stated below.
 * Not thread-safe, except that api->async_send may be called from any thread.
 */
#ifndef RDV_FAKECORE_H
#define RDV_FAKECORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rdv/core.h"
#include "rdv/proto.h"
#include "rdv/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Hard caps: exceeding one aborts with a message (a runaway module). */
#define FC_MAX_SENT 100000  /* recorded sends not yet popped */
#define FC_MAX_CONNS 100000 /* connections opened over a fake core's life */
#define FC_LOG_LINES 4096   /* log ring: older lines are overwritten */

typedef struct fc_core fc_core;

/* ------------------------------------------------------------------ core */
fc_core *fc_new(void);
/* Unloads every loaded module (reverse load order), then frees everything.
 * Timers, watchers and async handles a module forgot are reported on stderr. */
void fc_free(fc_core *fc);
/* The handle a module named module_name gets (one per name, owned by fc).
 * Tests use it to call the api as another module would, e.g. to publish a
 * fake service: h->api->service_publish(h, ...). */
rdv_core *fc_handle(fc_core *fc, const char *module_name);
/* Parse "1.2.3.4:5" / "[::1]:5"; aborts on bad text (test helper). */
rdv_addr fc_addr(const char *text);

/* ------------------------------------------------------------------ clock
 * now_ms starts at 1000000, wall_us at 1700000000000000. */
/* Move now_ms forward by ms, firing every timer due up to the new time in
 * due order (ties in arming order), repeating ones as often as they fall
 * due. Callbacks may start, stop or free any timer. A timer armed with
 * after_ms 0 fires on the next fc_advance, even fc_advance(fc, 0). */
void fc_advance(fc_core *fc, uint64_t ms);
void fc_set_wall_us(fc_core *fc, uint64_t us);
uint64_t fc_now_ms(fc_core *fc);

/* ------------------------------------------------------------------ modules
 * conf is "key=value" lines (NULL or "" = all defaults); blank lines and
 * lines starting with '#' are skipped; values may be "quoted"; a STRLIST is
 * a comma-separated list; bools are true/false/yes/no/on/off/1/0. Unknown
 * keys, bad values and bounds are rejected like the real core (error logged,
 * -EINVAL). */
/* Fill the config, validate, register handlers + access, init, start.
 * Returns 0 with *state set, or a negative errno (everything undone; the
 * reason is in the log: check with fc_log_contains). A tag claimed by two
 * modules without RDV_HF_SHARED on both is -EEXIST, as at real startup. */
int fc_load(fc_core *fc, const rdv_module *m, const char *conf, void **state);
/* stop + destroy + free the config; the module's handlers, access callback,
 * hooks, services, gauges and admin commands are removed, and timers it did
 * not free are stopped (and reported). */
void fc_unload(fc_core *fc, const rdv_module *m, void *state);
/* A SIGHUP with a whole new conf (not a delta). Like the real core, changing
 * a setting without RDV_SETF_RELOAD is refused (-EPERM), as is a failing
 * validate (-EINVAL) or reconfigure (its return value); the old config then
 * stays. On success the old config is freed. */
int fc_reconfigure(fc_core *fc, const rdv_module *m, void *state, const char *conf);

/* ------------------------------------------------------------------ listeners */
/* The listener (name, transport), created as a core dispatch listener on
 * the given port if absent (an existing one is returned unchanged).
 * fc_udp/fc_conn_open create theirs on demand with port 0. */
rdv_listener *fc_listener(fc_core *fc, const char *name, rdv_transport tr, int port);
/* Any listener (core or module-owned) by name and transport, or NULL. */
rdv_listener *fc_find_listener(fc_core *fc, const char *name, rdv_transport tr);

/* ------------------------------------------------------------------ injection
 * Return values of the dispatching calls (fc_udp*, fc_conn_msg/raw) — more
 * detail than the real core gives, so tests can tell the cases apart:
 *   the handler result  RDV_OK, RDV_CLOSE or -errno (logged);
 *   RDV_DECLINED        every matching handler declined;
 *   -ENOENT             no handler for (tag, transport, listener);
 *   -EACCES             an ACCESS callback dropped it (RDV_DECLINED); an
 *                       ACCESS RDV_CLOSE returns RDV_CLOSE;
 *   -EBADMSG            undecodable;
 *   -EMSGSIZE           over max_frame;
 *   -ENOTCONN           unknown or closed connection.
 * As in the real core, a stream connection is then closed on anything but
 * RDV_OK and -EACCES (RDV_CLOSE_PROTOCOL if undecodable, _OVERSIZE if too
 * big, else _LOCAL). Listeners owned by a module get the bytes through
 * their ops instead (see fc_conn_raw). */
int fc_udp(fc_core *fc, const char *listener, const rdv_addr *from, const Hbb__RendezvousMessage *msg);
/* A datagram: dispatched on a dispatch listener, given to on_datagram on a
 * module's RAW UDP listener (then returns RDV_OK). */
int fc_udp_raw(fc_core *fc, const char *listener, const rdv_addr *from, const uint8_t *p, size_t n);

/* Accept a connection on listener (name, tr), created on demand: ACCESS
 * (msg NULL, tag 0), then ops->on_open on a module's listener, then the
 * "conn.open" hook. Returns the new id; if ACCESS or on_open refused it,
 * the connection is already closed (fc_conn_alive() is false). */
rdv_conn_id fc_conn_open(fc_core *fc, const char *listener, rdv_transport tr, const rdv_addr *peer);
/* The same, on a listener the module opened with api->listen. */
rdv_conn_id fc_owned_open(fc_core *fc, rdv_listener *l, const rdv_addr *peer);
/* One whole message from the peer (packed, then as fc_conn_raw). */
int fc_conn_msg(fc_core *fc, rdv_conn_id id, const Hbb__RendezvousMessage *msg);
/* Bytes from the peer. Dispatch / FRAMED listeners: one frame payload
 * (already unframed and, after conn_set_key, already decrypted: the fake
 * never encrypts); FRAMED returns on_frame's answer. RAW listeners:
 * appended to the read buffer and handed to on_data until it consumes
 * nothing, unless paused (returns RDV_OK, or RDV_CLOSE once closed). */
int fc_conn_raw(fc_core *fc, rdv_conn_id id, const uint8_t *p, size_t n);
/* The peer hung up: on_close / "conn.close" with RDV_CLOSE_PEER. */
int fc_conn_peer_close(fc_core *fc, rdv_conn_id id);
/* Close for any other reason (RDV_CLOSE_IDLE, _ERROR, _SHUTDOWN, ...). */
int fc_conn_drop(fc_core *fc, rdv_conn_id id, rdv_close_reason why);
/* The fd conn_detach hands over (default -1), e.g. one end of a socketpair. */
int fc_conn_set_fd(fc_core *fc, rdv_conn_id id, int fd);

/* What the fake core knows about a connection (NULL if the id never existed).
 * Valid until fc_free. */
typedef struct fc_conn_state {
    rdv_conn_id id;
    rdv_listener *listener;
    rdv_transport transport;
    rdv_addr peer;
    bool open;
    rdv_close_reason why;     /* once closed */
    bool secure;              /* conn_set_key was called */
    uint8_t key[32];
    uint64_t idle_ms;         /* last conn_set_idle (0 = core default) */
    bool paused;
    const rdv_codec *codec;
    void *codec_ud;
} fc_conn_state;
const fc_conn_state *fc_conn(fc_core *fc, rdv_conn_id id);
bool fc_conn_alive(fc_core *fc, rdv_conn_id id);
bool fc_conn_secure(fc_core *fc, rdv_conn_id id);
/* What conn_info reports as the connection's write queue (default 0). */
void fc_conn_set_wqueue(fc_core *fc, rdv_conn_id id, size_t bytes);

/* ------------------------------------------------------------------ recorded sends */
typedef enum fc_sent_kind {
    FC_SENT_UDP = 1, /* send_udp, send_udp_raw */
    FC_SENT_CONN,    /* send, send_payload (one frame) */
    FC_SENT_BYTES,   /* send_bytes (no framing) */
    FC_SENT_CLOSE,   /* conn_close */
} fc_sent_kind;

typedef struct fc_sent {
    fc_sent_kind kind;
    const char *module;          /* the sender */
    rdv_listener *listener;      /* UDP: via; else the connection's listener */
    const char *listener_name;
    rdv_addr to;                 /* UDP destination or the connection's peer */
    rdv_conn_id conn;            /* 0 for UDP */
    uint8_t *raw;                /* the bytes, unframed and unencrypted */
    size_t len;
    /* raw unpacked as a RendezvousMessage (NULL for BYTES and CLOSE, or if
     * the bytes are not one). */
    Hbb__RendezvousMessage *msg;
    bool sealed;                 /* CONN: a key was installed when sent */
    bool flush;                  /* CLOSE: the flush argument */
} fc_sent;

/* Pop the oldest send (NULL if none). Valid until the next fc_next_sent,
 * fc_clear_sent or fc_free. */
const fc_sent *fc_next_sent(fc_core *fc);
size_t fc_sent_count(fc_core *fc);
void fc_clear_sent(fc_core *fc);

/* ------------------------------------------------------------------ stats, admin, log */
/* Value of counter "module.name" (0 if none). */
uint64_t fc_counter(fc_core *fc, const char *name);
/* Gauge "module.name" read through its callback (0 if none). */
uint64_t fc_gauge(fc_core *fc, const char *name);
/* Run an admin command line as api->admin_exec does (split on whitespace,
 * at most 64 words); the answer goes to out (always NUL-terminated, cut
 * with "\n[truncated]\n"). Returns 0, -ENOENT for an unknown command (out
 * then holds the real console's "unknown command" line), or -EINVAL for an
 * empty line. */
int fc_admin(fc_core *fc, const char *cmdline, char *out, size_t outlen);
/* True if a kept log line ("module: text") contains substring. */
bool fc_log_contains(fc_core *fc, const char *substring);
void fc_log_clear(fc_core *fc);
/* How often api->log_ratelimit was asked (it always says yes). */
uint64_t fc_ratelimit_calls(fc_core *fc);

/* ------------------------------------------------------------------ io, async */
/* Call the first watcher on fd whose events intersect revents (with the
 * intersection). Returns 0, or -ENOENT if none. */
int fc_io_fire(fc_core *fc, int fd, unsigned revents);
/* Run the callback of every async handle sent since the last run; returns
 * how many ran. */
int fc_run_async(fc_core *fc);

#ifdef __cplusplus
}
#endif
#endif
