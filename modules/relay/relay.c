/* relay.c — the relay module (hbbr): settings, stats and lifecycle.
 * The behaviour lives in the files named in relay.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "relay.h"
#include "rdv/svc/relay_ws.h"

#define RELOAD RDV_SETF_RELOAD

const rdv_setting relay_settings[] = {
    RDV_SETTING_INT(relay_cfg, port, 21117, 1, 65533, 0, "relay TCP port (hbbr -p); the WebSocket port is port + 2"),
    RDV_SETTING_STRING(relay_cfg, bind, "", 0, "IP address to bind (hbbr -b); empty: all addresses, dual stack"),
    { "key", RDV_SET_STRING, offsetof(relay_cfg, key), RDV_SETF_SECRET, 0, 0, "", 0, 0, 0, 0,
      "relay key (hbbr -k): empty = no check; - or _ = public key of key_file; base64 of a 64-byte secret key = "
      "its public half; else compared verbatim" },
    RDV_SETTING_STRING(relay_cfg, key_file, "id_ed25519", 0, "key pair file for key - or _ (created when absent)"),
    RDV_SETTING_DOUBLE(relay_cfg, total_bandwidth, 1024, 0.001, 1e7, RELOAD,
                       "Mb/s (2^20 bit/s) shared by all pairs (TOTAL_BANDWIDTH, console tb)"),
    RDV_SETTING_DOUBLE(relay_cfg, single_bandwidth, 128, 0.001, 1e7, RELOAD,
                       "Mb/s of one pair, both directions (SINGLE_BANDWIDTH, console sb)"),
    RDV_SETTING_DOUBLE(relay_cfg, limit_speed, 32, 0.001, 1e7, RELOAD,
                       "Mb/s of a blacklisted or downgraded pair (LIMIT_SPEED, console ls)"),
    RDV_SETTING_DOUBLE(relay_cfg, downgrade_threshold, 0.66, 0.01, 1000, RELOAD,
                       "fraction of single_bandwidth a pair may average before it is downgraded (console dt)"),
    RDV_SETTING_INT(relay_cfg, downgrade_start_check, 1800, 1, 1000000000, RELOAD,
                    "seconds a pair runs before the downgrade rule applies (console t)"),
    RDV_SETTING_STRING(relay_cfg, blacklist_file, "blacklist.txt", RELOAD, "IPs throttled to limit_speed (re-read on SIGHUP)"),
    RDV_SETTING_STRING(relay_cfg, blocklist_file, "blocklist.txt", RELOAD, "IPs refused (re-read on SIGHUP)"),
    RDV_SETTING_INT(relay_cfg, list_max, 1000000, 1, 100000000, RELOAD, "entries per list; more are dropped"),
    RDV_SETTING_INT(relay_cfg, first_timeout_ms, 30000, 100, 3600000, 0, "first frame must arrive within this, ms"),
    RDV_SETTING_INT(relay_cfg, wait_timeout_ms, 30000, 100, 3600000, 0, "how long a side waits for its partner, ms"),
    RDV_SETTING_INT(relay_cfg, idle_timeout_ms, 30000, 1000, 86400000, RELOAD,
                    "a pair with no traffic for this long ends, ms"),
    RDV_SETTING_INT(relay_cfg, stall_timeout_ms, 30000, 1000, 86400000, RELOAD,
                    "a pair ends when one direction's pending data makes no write progress for this long, ms"),
    RDV_SETTING_INT(relay_cfg, max_waiting, 100000, 1, 10000000, RELOAD, "waiting sides at once; more are refused"),
    RDV_SETTING_INT(relay_cfg, max_pairs, 100000, 1, 10000000, RELOAD, "pairs at once; more are refused"),
    RDV_SETTING_INT(relay_cfg, first_frame_max, 65536, 64, 1048576, 0, "largest first frame (RequestRelay), bytes"),
    RDV_SETTING_INT(relay_cfg, uuid_max, 256, 1, 65535, RELOAD, "longest uuid accepted, bytes"),
    RDV_SETTING_INT(relay_cfg, pipe_size, 262144, 0, 16777216, 0,
                    "splice pipe size (F_SETPIPE_SZ), bytes; 0 = kernel default; also the chunk per splice"),
    RDV_SETTING_INT(relay_cfg, pipe_size_max, 1048576, 0, 16777216, RELOAD,
                    "a pipe whose flow fills it grows (x4 per step) up to this many bytes; 0 = never grows"),
    RDV_SETTING_INT(relay_cfg, pipe_pool, 64, 0, 65536, 0, "empty pipes kept for reuse (2 descriptors each)"),
    RDV_SETTING_INT(relay_cfg, refill_ms, 10, 1, 1000, 0, "period of the bandwidth refill timer while pairs wait, ms"),
    RDV_SETTING_BOOL(relay_cfg, console_loopback, 0, RELOAD,
                     "upstream's console: loopback TCP clients of the relay port are console sessions, not relays"),
    RDV_SETTING_BOOL(relay_cfg, message_mode, 0, RELOAD,
                     "relay TCP pairs frame by frame like WebSocket pairs instead of splicing (diagnostics)"),
    RDV_SETTING_INT(relay_cfg, message_max, 67108864, 65536, 1073741823, RELOAD,
                    "message mode: largest frame/message, bytes"),
    RDV_SETTING_INT(relay_cfg, message_queue, 1048576, 65536, 268435456, RELOAD,
                    "message mode: unsent bytes per direction before the sender is paused"),
    RDV_SETTING_INT(relay_cfg, message_total, 268435456, 65536, 68719476736LL, RELOAD,
                    "message mode: bytes all pairs may hold in TCP sides' incomplete frames and in queued messages; "
                    "a side whose growth would pass it ends its pair; at least message_max"),
    RDV_SETTING_INT(relay_cfg, message_timeout_ms, 120000, 1000, 3600000, RELOAD,
                    "message mode: a TCP side's frame must be complete this long after its first bytes, ms "
                    "(time paused for a slow partner does not count)"),
    RDV_SETTING_STRING(relay_cfg, ws_listener, "relay-ws", RELOAD,
                       "websocket-transport's relay listener: its blocklisted clients are refused at accept"),
    RDV_SETTING_INT(relay_cfg, early_total, 67108864, 65536, 17179869184LL, RELOAD,
                    "bytes read past first frames that all waiting sides may hold; more are refused"),
    RDV_SETTING_END,
};

static int relay_validate(const void *cfg_, char *err, size_t errlen)
{
    const relay_cfg *cfg = cfg_;
    if (cfg->bind[0]) {
        uint8_t buf[16];
        if (inet_pton(AF_INET, cfg->bind, buf) != 1 && inet_pton(AF_INET6, cfg->bind, buf) != 1) {
            snprintf(err, errlen, "relay.bind: invalid bind address: %s (write an IPv4 or IPv6 address)", cfg->bind);
            return -EINVAL;
        }
    }
    if (cfg->pipe_size && cfg->pipe_size < 4096) {
        snprintf(err, errlen, "relay.pipe_size: 0 (kernel default) or at least 4096");
        return -EINVAL;
    }
    if (cfg->pipe_size_max && cfg->pipe_size_max < cfg->pipe_size) {
        snprintf(err, errlen, "relay.pipe_size_max: 0 (no growth) or at least pipe_size (%lld)",
                 (long long)cfg->pipe_size);
        return -EINVAL;
    }
    if (cfg->message_max > cfg->message_total) {
        snprintf(err, errlen,
                 "relay.message_max = %lld is larger than relay.message_total = %lld: one such message could never "
                 "be held; raise message_total or lower message_max",
                 (long long)cfg->message_max, (long long)cfg->message_total);
        return -EINVAL;
    }
    if (strlen(cfg->key) >= sizeof(((relay *)0)->key)) {
        snprintf(err, errlen, "relay.key: longer than %zu bytes", sizeof(((relay *)0)->key) - 1);
        return -EINVAL;
    }
    return 0;
}

/* ------------------------------------------------------------------ stats */
#define RELAY_GAUGE(name, expr) \
    static uint64_t relay_g_##name(void *ud) { const relay *r = ud; return (uint64_t)(expr); }
RELAY_GAUGE(pairs, r->npairs)
RELAY_GAUGE(pairs_raw, r->nraw)
RELAY_GAUGE(pairs_message, r->nmsg)
RELAY_GAUGE(waiting, r->nwaiting)
RELAY_GAUGE(awaiting_first, r->awaiting)
RELAY_GAUGE(throttled_pairs, r->nthrottled)
RELAY_GAUGE(pipes_in_use, r->pipes_in_use)
RELAY_GAUGE(pipes_pooled, r->npipes)
RELAY_GAUGE(blacklist_entries, r->black.n)
RELAY_GAUGE(blocklist_entries, r->block.n)
RELAY_GAUGE(buffered_bytes, r->early_bytes + r->msg_bytes)
RELAY_GAUGE(message_bytes, r->msg_bytes)
RELAY_GAUGE(console_open, r->nconsoles)
RELAY_GAUGE(ws_open, r->nws)

static void relay_stats_init(relay *r)
{
    rdv_core *c = r->core;
    uint64_t *(*counter)(rdv_core *, const char *, const char *) = c->api->counter;
    relay_stats *s = &r->st;
    s->accepted = counter(c, "accepted", "connections accepted on the relay port");
    s->requests = counter(c, "requests", "valid RequestRelay first messages");
    s->paired = counter(c, "paired", "pairs formed");
    s->rej_blocked = counter(c, "rejected_blocked", "refused: blocklisted IP (at accept or at its first message)");
    s->rej_bad_message = counter(c, "rejected_bad_message", "first frame is not a RendezvousMessage");
    s->rej_not_relay = counter(c, "rejected_not_relay", "first message is not RequestRelay (or empty)");
    s->rej_bad_key = counter(c, "rejected_bad_key", "licence_key differs from the relay key");
    s->rej_empty_uuid = counter(c, "rejected_empty_uuid", "RequestRelay without uuid");
    s->rej_long_uuid = counter(c, "rejected_long_uuid", "uuid longer than relay.uuid_max");
    s->rej_oversize = counter(c, "rejected_oversize", "first frame over relay.first_frame_max / core.max_frame");
    s->rej_first_timeout = counter(c, "rejected_first_timeout", "no complete first frame in time");
    s->rej_waiting_full = counter(c, "rejected_waiting_full", "refused: relay.max_waiting reached");
    s->rej_pairs_full = counter(c, "rejected_pairs_full", "refused: relay.max_pairs reached");
    s->rej_wait_timeout = counter(c, "rejected_wait_timeout", "waited for a partner in vain");
    s->rej_waiter_gone = counter(c, "rejected_waiter_gone", "waiting side closed before its partner came");
    s->rej_early_full = counter(c, "rejected_early_full", "refused: relay.early_total bytes already held");
    s->urgent_marks = counter(c, "urgent_marks", "TCP urgent marks read past on a raw pair (the urgent byte is dropped)");
    s->rej_internal = counter(c, "rejected_internal", "dropped for lack of memory or descriptors");
    s->closed_before_request = counter(c, "closed_before_request", "clients that left before a first frame");
    s->bytes_e2l = counter(c, "bytes_early_to_late", "bytes relayed from the waiting side to the late side");
    s->bytes_l2e = counter(c, "bytes_late_to_early", "bytes relayed from the late side to the waiting side");
    static const char *const endn[] = { NULL, "closed_eof", "closed_error", "closed_idle", "closed_stall",
                                        "closed_blocked", "closed_nomem", "closed_message_total",
                                        "closed_message_timeout", "closed_shutdown" };
    static const char *const endh[] = { NULL, "pairs ended by a side's FIN", "pairs ended by an error or RST",
                                        "pairs ended idle", "pairs ended: writes stalled",
                                        "pairs ended or refused as they formed: a side was blocklisted", "pairs ended: out of memory",
                                        "message-mode pairs ended: a side's growth would pass relay.message_total",
                                        "message-mode pairs ended: a TCP side's frame took over message_timeout_ms",
                                        "pairs ended by shutdown" };
    _Static_assert(sizeof endn / sizeof endn[0] == RELAY_END_SHUTDOWN + 1, "a name for every relay_end");
    for (int i = RELAY_END_EOF; i <= RELAY_END_SHUTDOWN; i++)
        s->end[i] = counter(c, endn[i], endh[i]);
    s->throttle_events = counter(c, "throttle_events", "times a pair waited for bandwidth tokens");
    s->downgraded = counter(c, "downgraded", "pairs downgraded to limit_speed");
    s->console_sessions = counter(c, "console_sessions", "loopback console sessions");
    s->pipes_created = counter(c, "pipes_created", "splice pipes created");
    s->pipes_grown = counter(c, "pipes_grown", "pipes grown for a flow that filled them (pipe_size_max)");
    s->pipe_failures = counter(c, "pipe_failures", "pipes that could not be created (descriptors)");
    s->list_full = counter(c, "list_full", "list entries dropped at relay.list_max");
    s->ws_sides = counter(c, "ws_sides", "WebSocket sides offered by websocket-transport");
    s->oom = counter(c, "oom",
                     "operations refused for lack of memory (nothing else changed): a list entry or list file, a "
                     "waiting side, a WebSocket side (refused sides also count in rejected_internal)");

    static const struct { const char *name; uint64_t (*fn)(void *); const char *help; } g[] = {
        { "pairs", relay_g_pairs, "active pairs" },
        { "pairs_raw", relay_g_pairs_raw, "active pairs moved with splice" },
        { "pairs_message", relay_g_pairs_message, "active pairs moved message by message" },
        { "waiting", relay_g_waiting, "sides waiting for a partner" },
        { "awaiting_first", relay_g_awaiting_first, "connections before their first frame" },
        { "throttled_pairs", relay_g_throttled_pairs, "pairs waiting for bandwidth tokens now" },
        { "pipes_in_use", relay_g_pipes_in_use, "pipes holding data in flight" },
        { "pipes_pooled", relay_g_pipes_pooled, "empty pipes kept for reuse" },
        { "blacklist_entries", relay_g_blacklist_entries, "blacklist size" },
        { "blocklist_entries", relay_g_blocklist_entries, "blocklist size" },
        { "buffered_bytes", relay_g_buffered_bytes,
          "user-space bytes held for pairs: early bytes (early_total) + message_bytes (message_total)" },
        { "message_bytes", relay_g_message_bytes,
          "message mode: bytes in TCP sides' frame buffers and queued messages (relay.message_total)" },
        { "console_open", relay_g_console_open, "loopback console sessions open" },
        { "ws_open", relay_g_ws_open, "WebSocket sides held (waiting or paired)" },
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        c->api->gauge(c, g[i].name, g[i].fn, r, g[i].help);
}

/* ------------------------------------------------------------------ lists */
/* relay.md §7: at start a missing file is an empty list, not an error. On a
 * reload (SIGHUP) a file that cannot be read, or not held for lack of
 * memory, keeps the entries in use: a reload racing an editor must not
 * unblock everyone. An existing empty file is a deliberate empty list. */
static void relay_lists_load(relay *r, bool reload)
{
    relay_set *sets[2] = { &r->black, &r->block };
    const char *files[2] = { r->cfg->blacklist_file, r->cfg->blocklist_file };
    for (int i = 0; i < 2; i++) {
        sets[i]->max = (size_t)r->cfg->list_max;
        size_t dropped = 0;
        if (!files[i][0]) {
            relay_set_clear(sets[i]);
            continue;
        }
        long n = relay_set_load(sets[i], files[i], &dropped);
        if (n == -ENOMEM)
            (*r->st.oom)++; /* logged below like an unreadable file: the list in use stays */
        const char *why = n == -EILSEQ ? "not UTF-8 text" : strerror((int)-n);
        if (n >= 0)
            RDV_INFO(r->core, "%s: %ld entries from %s", sets[i]->name, n, files[i]);
        else if (reload && (n != -ENOENT || sets[i]->n)) /* absent and empty, as at start: quiet */
            RDV_WARN(r->core, "%s %s not re-read: %s (errno %ld); keeping its %zu entries (an empty file clears it)",
                     sets[i]->name, files[i], why, -n, sets[i]->n);
        else if (n != -ENOENT)
            RDV_WARN(r->core, "%s %s not used: %s", sets[i]->name, files[i], why);
        if (dropped) {
            *r->st.list_full += dropped;
            RDV_WARN(r->core, "%s: %zu entries past relay.list_max=%lld dropped", sets[i]->name, dropped,
                     (long long)r->cfg->list_max);
        }
    }
    r->list_gen++;
}

/* The core closes a connection that still has core.write_queue_max bytes
 * queued when the next write comes. The relay writes to a WebSocket side
 * only while its queue is below message_queue and then pauses the sender,
 * so the queue peaks at message_queue plus one message; the transport's
 * own frames (pong, close) may come on top. Half the core's bound leaves
 * room for a message as large as the queue itself. */
static int relay_check(rdv_core *core, void *state, const void *cfg_, char *err, size_t errlen)
{
    (void)state;
    const relay_cfg *cfg = cfg_;
    int64_t wqm;
    if (core->api->core_int(core, "write_queue_max", &wqm) < 0 || cfg->message_queue <= wqm / 2)
        return 0;
    snprintf(err, errlen,
             "relay.message_queue = %lld is not below core.write_queue_max = %lld with room for one message: the core "
             "would close a slow WebSocket reader before the relay pauses its sender; set message_queue to at most "
             "%lld in the relay group (conf.d/40-relay.conf) or raise write_queue_max in the core group "
             "(conf.d/00-core.conf) to at least %lld",
             (long long)cfg->message_queue, (long long)wqm, (long long)(wqm / 2), (long long)cfg->message_queue * 2);
    return -EINVAL;
}

/* Each pair needs 2 sockets, plus 2 pipes (4 descriptors) while data is in
 * flight; a waiting side needs 1. Raise the soft limit as far as allowed
 * and say plainly how many pairs fit. */
static void relay_check_nofile(relay *r)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    const relay_cfg *c = r->cfg;
    rlim_t want = (rlim_t)(6 * c->max_pairs + c->max_waiting + 2 * c->pipe_pool + 256);
    if (rl.rlim_cur < want && rl.rlim_cur < rl.rlim_max) {
        struct rlimit n = { .rlim_cur = want < rl.rlim_max ? want : rl.rlim_max, .rlim_max = rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &n) == 0)
            rl = n;
    }
    if (rl.rlim_cur < want)
        RDV_WARN(r->core,
                 "RLIMIT_NOFILE is %llu: room for about %llu busy pairs (6 descriptors each while data flows, 2 "
                 "when idle), not relay.max_pairs=%lld; raise LimitNOFILE / ulimit -n to %llu",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)(rl.rlim_cur > 256 ? (rl.rlim_cur - 256) / 6 : 0),
                 (long long)c->max_pairs, (unsigned long long)want);
}

/* ------------------------------------------------------------------ lifecycle */
static void relay_destroy(void *state);

static int relay_init(rdv_core *core, const void *cfg_, void **state)
{
    const relay_cfg *cfg = cfg_; /* relay_check() ran before */
    relay *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->core = core, r->cfg = cfg;
    r->black.name = "blacklist", r->block.name = "blocklist";
    const rdv_core_api *api = core->api;
    char err[1024] = ""; /* names key_file and its .pub twice each */
    int k = relay_key_resolve(cfg->key, cfg->key_file, true, r->key, sizeof r->key, err, sizeof err);
    if (k < 0) {
        RDV_ERR(core, "%s", err);
        free(r);
        return -EINVAL;
    }
    if (k == 1)
        RDV_WARN(core, "%s; running without a relay key", err);
    else if (k == 2)
        RDV_NOTICE(core, "Private/public key written to %s/%s.pub", cfg->key_file, cfg->key_file);
    relay_stats_init(r);
    r->scratch_cap = 2 * (size_t)cfg->first_frame_max + 65536 + 4096;
    r->arena_cap = 8 * (size_t)cfg->first_frame_max + 65536;
    r->scratch = malloc(r->scratch_cap);
    r->arena_mem = malloc(r->arena_cap);
    r->pipes_cap = (size_t)cfg->pipe_pool;
    r->pipes = calloc(r->pipes_cap ? r->pipes_cap : 1, sizeof *r->pipes);
    r->wait_timer = api->timer_new(core, relay_wait_timer_cb, r);
    r->tick = api->timer_new(core, relay_tick_cb, r);
    r->refill = api->timer_new(core, relay_refill_cb, r);
    r->ws_timer = api->timer_new(core, relay_ws_timer_cb, r);
    if (!r->scratch || !r->arena_mem || !r->pipes || !r->wait_timer || !r->tick || !r->refill || !r->ws_timer) {
        relay_destroy(r);
        return -ENOMEM;
    }
    rdv_arena_init(&r->arena, r->arena_mem, r->arena_cap);
    relay_bw_configure(r, cfg);
    relay_lists_load(r, false);
    int e = relay_cmds_register(r);
    if (e == 0)
        e = relay_ws_publish(r); /* websocket-transport looks it up in its init */
    if (e < 0) {
        relay_destroy(r);
        return e;
    }
    *state = r;
    return 0;
}

static int relay_start(void *state)
{
    relay *r = state;
    rdv_listen_spec spec = {
        .name = "relay", .transport = RDV_TR_TCP, .bind = r->cfg->bind, .port = (int)r->cfg->port,
        .mode = RDV_LISTEN_FRAMED_EXACT, .idle_ms = (uint64_t)r->cfg->first_timeout_ms, .ops = &relay_conn_ops, .ud = r,
        .max_frame = (size_t)r->cfg->first_frame_max, /* refused at the header, never buffered */
    };
    r->listener = r->core->api->listen(r->core, &spec);
    if (!r->listener)
        return -EADDRNOTAVAIL; /* the core logged address, port and reason */
    relay_check_nofile(r);
    r->core->api->timer_start(r->tick, 1000, 1000);
    if (r->key[0]) /* as hbbr, which logs the key clients must present */
        RDV_NOTICE(r->core, "relay key required; Key: %s", r->key);
    return 0;
}

/* SIGHUP: conf.d values and the list files replace console changes. */
static int relay_reconfigure(void *state, const void *cfg_)
{
    relay *r = state; /* relay_check() ran before */
    r->cfg = cfg_;
    relay_bw_configure(r, r->cfg);
    relay_lists_load(r, true);
    return 0;
}

static void relay_stop(void *state)
{
    relay *r = state;
    r->stopping = true;
    relay_consoles_close_all(r);
    relay_waiting_close_all(r);
    while (r->pairs)
        relay_pair_end(r, r->pairs, RELAY_END_SHUTDOWN);
    relay_ws_close_all(r);
    const rdv_core_api *api = r->core->api;
    rdv_timer *timers[] = { r->tick, r->refill, r->wait_timer, r->ws_timer };
    for (size_t i = 0; i < 4; i++)
        if (timers[i])
            api->timer_stop(timers[i]);
}

static void relay_destroy(void *state)
{
    relay *r = state;
    if (!r->stopping)
        relay_stop(r);
    const rdv_core_api *api = r->core->api;
    api->timer_free(r->tick);
    api->timer_free(r->refill);
    api->timer_free(r->wait_timer);
    api->timer_free(r->ws_timer);
    relay_pipes_free(r);
    relay_set_clear(&r->black);
    relay_set_clear(&r->block);
    free(r->scratch);
    free(r->arena_mem);
    free(r);
}

static const rdv_dep relay_provides[] = {
    { RDV_SVC_RELAY_WS, RDV_SVC_RELAY_WS_VERSION, false },
    { NULL, 0, false },
};

static const rdv_module relay_module = {
    RDV_MODULE_HEAD("relay", "1.0.0"),
    .description = "hbbr: pairs RequestRelay connections by uuid and relays them (splice), bandwidth control, lists",
    .settings = relay_settings,
    .config_size = sizeof(relay_cfg),
    .validate = relay_validate,
    .access = relay_access,
    .provides = relay_provides,
    .init = relay_init,
    .start = relay_start,
    .reconfigure = relay_reconfigure,
    .check = relay_check,
    .stop = relay_stop,
    .destroy = relay_destroy,
};
RDV_MODULE_EXPORT(relay_module)
