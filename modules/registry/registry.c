/* registry.c — the registry module: the peer table of rendezvous.md §2 and
 * UDP registration (§6.1, §6.2, §6.10, §6.11), published as the "registry"
 * service with the hooks RDV_HOOK_PEER_ONLINE / RDV_HOOK_PEER_OFFLINE.
 *
 * Files: registry_table.c (records, online list, storage), registry_register.c
 * (RegisterPeer / RegisterPk), registry_stream.c (EXT §15.4 registration over
 * TCP / WebSocket), registry_update.c (ConfigUpdate, SoftwareUpdate),
 * registry_ipchange.c (§11.3 log, `ic`), registry_admin.c (`peer`, `peers`). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <rdv/proto.h>

#include "registry.h"

/* ------------------------------------------------------------------ settings */
#define R_RELOAD RDV_SETF_RELOAD
static const rdv_setting registry_settings[] = {
    RDV_SETTING_STRING(registry_cfg, listener, "main", 0, "dispatch listener for UDP registration and TCP RegisterPk"),
    RDV_SETTING_INT(registry_cfg, serial, 0, INT32_MIN, INT32_MAX, R_RELOAD,
                    "ConfigUpdate serial sent to clients whose RegisterPeer.serial is lower (hbbs -s)"),
    { "rendezvous_servers", RDV_SET_STRLIST, offsetof(registry_cfg, rendezvous_servers), R_RELOAD, 0, 0, NULL, 0, 64,
      0, 0, "servers sent in ConfigUpdate (hbbs -R); each host or host:port" },
    RDV_SETTING_STRING(registry_cfg, software_url, "", R_RELOAD,
                       "answer SoftwareUpdate with this URL (hbbs -u; deprecated, empty = off)"),
    RDV_SETTING_INT(registry_cfg, online_ms, 30000, 1000, 3600000, R_RELOAD,
                    "a peer is online this long after its last registration (REG_TIMEOUT)"),
    RDV_SETTING_INT(registry_cfg, sweep_ms, 1000, 10, 60000, 0, "period of the expiry timer"),
    RDV_SETTING_INT(registry_cfg, max_peers, 2000000, 1, 100000000, R_RELOAD,
                    "peer table bound (stored and registered ids); new ids over it get SERVER_ERROR"),
    RDV_SETTING_INT(registry_cfg, id_max_len, 100, REGISTRY_ID_MIN, REGISTRY_ID_CAP, R_RELOAD,
                    "longer ids get INVALID_ID_FORMAT"),
    RDV_SETTING_INT(registry_cfg, uuid_max_len, 256, 1, REGISTRY_UUID_CAP, R_RELOAD,
                    "RegisterPk with a longer uuid is ignored"),
    RDV_SETTING_INT(registry_cfg, pk_max_len, 64, 1, REGISTRY_PK_CAP, R_RELOAD,
                    "RegisterPk with a longer pk is ignored"),
    RDV_SETTING_INT(registry_cfg, pk_burst, 3, 1, 200, R_RELOAD,
                    "accepted RegisterPk per id without a pk_window_s gap (upstream 3)"),
    RDV_SETTING_INT(registry_cfg, pk_window_s, 6, 1, 3600, R_RELOAD,
                    "a gap longer than this resets the per-id RegisterPk count (upstream 6)"),
    RDV_SETTING_INT(registry_cfg, ip_change_window_s, 180, 1, 86400, R_RELOAD,
                    "an IP-change entry older than this restarts (upstream 180)"),
    RDV_SETTING_INT(registry_cfg, ip_change_keep_s, 360, 1, 172800, R_RELOAD,
                    "IP-change entries are dropped at this age (upstream 360)"),
    RDV_SETTING_INT(registry_cfg, ip_changes_max, 10000, 1, 10000000, R_RELOAD,
                    "IP-change log bound; full -> the oldest entry is evicted"),
    RDV_SETTING_INT(registry_cfg, ip_change_ips_max, 16, 2, 1024, R_RELOAD,
                    "IPs remembered per IP-change entry"),
    RDV_SETTING_BOOL(registry_cfg, stream_register, true, R_RELOAD,
                     "EXT 15.4: RegisterPk over TCP/WebSocket registers the peer on that connection "
                     "(false = OSS: NOT_SUPPORT and close)"),
    RDV_SETTING_BOOL(registry_cfg, stream_require_key, true, R_RELOAD,
                     "on TCP only connections keyed by secure-tcp may register (clients always key them)"),
    RDV_SETTING_INT(registry_cfg, stream_keep_alive_s, 60, 2, 3600, R_RELOAD,
                    "keep_alive (seconds) in RegisterPkResponse on streams; clients drop after 1.5 x this"),
    RDV_SETTING_INT(registry_cfg, stream_heartbeat_ms, 20000, 100, 600000, R_RELOAD,
                    "empty frame to stream-registered peers this often (at most online_ms/2 and "
                    "keep_alive/2); 3 periods without a frame close a TCP one"),
    RDV_SETTING_INT(registry_cfg, stream_max, 200000, 1, 10000000, R_RELOAD,
                    "stream-registered peers at most; more get SERVER_ERROR and are closed"),
    RDV_SETTING_END,
};

static int registry_validate(const void *cfg_, char *err, size_t errlen)
{
    const registry_cfg *cfg = cfg_;
    if (!cfg->listener[0]) {
        snprintf(err, errlen, "registry.listener must name a listener");
        return -EINVAL;
    }
    if (cfg->ip_change_keep_s < cfg->ip_change_window_s) {
        snprintf(err, errlen, "registry.ip_change_keep_s must be >= ip_change_window_s");
        return -EINVAL;
    }
    for (size_t i = 0; i < cfg->rendezvous_servers.n; i++)
        if (cfg->rendezvous_servers.v[i][0] && !registry_server_valid(cfg->rendezvous_servers.v[i], false)) {
            snprintf(err, errlen, "registry.rendezvous_servers: '%s' is not host or host:port",
                     cfg->rendezvous_servers.v[i]);
            return -EINVAL;
        }
    return 0;
}

/* ------------------------------------------------------------------ service */
static int registry_svc_lookup(void *self, const char *id, rdv_lookup how, rdv_peer_info *out)
{
    registry *reg = self;
    if (!id || !id[0])
        return -ENOENT;
    registry_peer *p = registry_find(reg, id, strlen(id));
    if (!p)
        return -ENOENT;
    if (p->flags & REG_F_COLD) {
        /* §2.2: memory-only lookups do not see database-only peers; the
         * memory-then-DB flavour loads them (offline, no socket_addr). */
        if (how != RDV_LOOKUP_STORED)
            return -ENOENT;
        p->flags &= (uint8_t)~REG_F_COLD;
        reg->ncold--;
    }
    if (out)
        registry_fill_info(reg, p, out);
    return 0;
}

static size_t registry_svc_online_count(void *self) { return registry_online_now(self); }

static size_t registry_svc_peer_count(void *self) { return ((registry *)self)->npeers; }

/* EXT (issue 6): which stream connection a peer registered on. Bound only for
 * cached peers; conn 0 unbinds. */
static int registry_svc_set_conn(void *self, const char *id, rdv_conn_id conn)
{
    return registry_stream_set_conn(self, id, conn);
}

/* EXT (issue 6): the ConfigUpdate state, runtime changes included (nat-test's
 * TestNatResponse.cu). */
static int registry_svc_config(void *self, int32_t *serial, const rdv_strlist **servers)
{
    registry *reg = self;
    if (serial)
        *serial = reg->serial;
    reg->servers_view.n = reg->nservers;
    reg->servers_view.v = reg->servers;
    if (servers)
        *servers = &reg->servers_view;
    return 0;
}

static const rdv_registry_api registry_api = {
    .lookup = registry_svc_lookup,
    .online_count = registry_svc_online_count,
    .peer_count = registry_svc_peer_count,
    .set_conn = registry_svc_set_conn,
    .config = registry_svc_config,
};

/* ------------------------------------------------------------------ stats */
static uint64_t registry_g_peers(void *ud) { return ((registry *)ud)->npeers; }
static uint64_t registry_g_cold(void *ud) { return ((registry *)ud)->ncold; }
static uint64_t registry_g_online(void *ud) { return registry_svc_online_count(ud); }
static uint64_t registry_g_ipc(void *ud) { return ((registry *)ud)->nipc; }
static uint64_t registry_g_streams(void *ud) { return ((registry *)ud)->nstreams; }
static uint64_t registry_g_unsaved(void *ud) { return ((registry *)ud)->ndirty; }
static uint64_t registry_g_pending(void *ud)
{
    registry *reg = ud;
    return reg->storage->pending(reg->storage_self);
}

static int registry_stats(registry *reg)
{
    rdv_core *c = reg->core;
    const rdv_core_api *api = reg->api;
#define C(f, help) (reg->st.f = api->counter(c, #f, help))
    C(register_peer, "RegisterPeer received");
    C(register_peer_empty, "RegisterPeer with an empty id (ignored)");
    C(registrations, "accepted registrations (request_pk false: online)");
    C(request_pk, "RegisterPeerResponse with request_pk true");
    C(pk_ok, "RegisterPk answered OK");
    C(pk_uuid_mismatch, "RegisterPk answered UUID_MISMATCH");
    C(pk_too_frequent, "RegisterPk answered TOO_FREQUENT (ip blocker or per-id limiter)");
    C(pk_invalid_id, "RegisterPk answered INVALID_ID_FORMAT (id over id_max_len)");
    C(pk_server_error, "RegisterPk answered SERVER_ERROR (table full or out of memory)");
    C(pk_not_support, "RegisterPk on a stream answered NOT_SUPPORT");
    C(pk_ignored, "RegisterPk with an empty uuid or pk (ignored)");
    C(pk_oversize, "RegisterPk with uuid/pk over uuid_max_len/pk_max_len (ignored)");
    C(peers_refused_full, "new ids refused because max_peers was reached");
    C(oom, "allocations that failed");
    C(stored, "peer writes queued to storage");
    C(store_put_failed, "peer writes the storage refused (kept in memory, resubmitted by the sweep)");
    C(store_resubmitted, "refused peer writes queued to storage again by the sweep");
    C(store_errors, "peer write attempts that failed in storage (retried by it)");
    C(store_lost, "times the storage lost its rows (file replaced) and every peer was put again");
    C(load_skipped, "stored rows not loaded (duplicate id, empty or oversize fields)");
    C(ip_changes, "IP changes recorded (rendezvous.md 11.3)");
    C(ip_change_dropped, "IP changes not recorded: entry full");
    C(ip_change_evicted, "IP-change entries evicted: log full");
    C(config_updates, "ConfigUpdate accepted from loopback");
    C(config_update_ignored, "ConfigUpdate ignored (not loopback, or serial not higher)");
    C(software_updates, "SoftwareUpdate answered");
    C(went_online, "peers that came online");
    C(went_offline, "peers whose online window expired");
    C(stream_registered, "peers bound to the TCP/WebSocket connection they registered on (EXT 15.4)");
    C(stream_refused_full, "stream registrations refused: stream_max reached");
    C(stream_replaced, "stream bindings replaced by a newer connection for the same id");
    C(stream_closed, "stream-registered connections that ended");
    C(heartbeats, "empty frames sent to stream-registered peers");
    C(heartbeat_echoes, "empty frames received from stream-registered peers");
#undef C
    int r = 0;
    r |= api->gauge(c, "peers", registry_g_peers, reg, "known peers (stored and registered)");
    r |= api->gauge(c, "cold", registry_g_cold, reg, "stored peers not looked up since start");
    r |= api->gauge(c, "online", registry_g_online, reg, "peers inside the online window");
    r |= api->gauge(c, "ip_change_entries", registry_g_ipc, reg, "IP-change log entries");
    r |= api->gauge(c, "store_pending", registry_g_pending, reg, "peer writes waiting in storage");
    r |= api->gauge(c, "store_unsaved", registry_g_unsaved, reg,
                    "peers whose write the storage refused, waiting for the sweep to resubmit");
    r |= api->gauge(c, "stream_peers", registry_g_streams, reg, "peers registered over a TCP/WebSocket connection");
    return r ? -EEXIST : 0;
}

/* ------------------------------------------------------------------ lifecycle */
static void registry_on_sweep(void *ud)
{
    registry *reg = ud;
    registry_expire(reg);
    registry_ipc_prune(reg);
    registry_resubmit(reg);
}

static void registry_store_done(void *ud, const char *id, int status)
{
    registry *reg = ud;
    if (status < 0)
        (*reg->st.store_errors)++;
    /* A refused row (-EINVAL) is logged by the storage with the id and its
     * reason; only say here that the others are retried. */
    if (status < 0 && status != -EINVAL && !reg->stopping)
        RDV_LOG_RL(reg->core, RDV_LOG_WARN, "storing peer %s failed: %s (storage retries)", id, strerror(-status));
}

static int registry_apply_cfg(registry *reg, const registry_cfg *cfg, bool resolve)
{
    reg->cfg = cfg;
    reg->serial = (int32_t)cfg->serial;
    registry_version_from_url(cfg->software_url, reg->version, sizeof reg->version);
    return registry_set_servers(reg, cfg->rendezvous_servers.v, cfg->rendezvous_servers.n, resolve);
}

static void registry_destroy(void *state)
{
    registry *reg = state;
    if (!reg)
        return;
    if (reg->sweep)
        reg->api->timer_free(reg->sweep);
    registry_stream_free(reg);
    if (reg->storage && reg->storage->on_done)
        reg->storage->on_done(reg->storage_self, NULL, NULL);
    if (reg->storage_v2 && reg->storage->on_lost)
        reg->storage->on_lost(reg->storage_self, NULL, NULL);
    registry_table_free(reg);
    registry_ipc_free(reg);
    registry_free_servers(reg);
    free(reg);
}

static int registry_init(rdv_core *core, const void *cfg_, void **state)
{
    const registry_cfg *cfg = cfg_;
    if (sodium_init() < 0)
        return -EIO;
    registry *reg = calloc(1, sizeof *reg);
    if (!reg)
        return -ENOMEM;
    reg->core = core, reg->api = core->api;
    int r = registry_stats(reg);
    if (r < 0)
        goto fail;
    /* Version 2 adds on_lost; a version 1 provider still serves. */
    reg->storage = core->api->service_get(core, RDV_SVC_STORAGE, 2, &reg->storage_self);
    reg->storage_v2 = reg->storage != NULL;
    if (!reg->storage)
        reg->storage = core->api->service_get(core, RDV_SVC_STORAGE, 1, &reg->storage_self);
    if (!reg->storage) {
        RDV_ERR(core, "no \"storage\" service: add a storage module (e.g. storage-sqlite) to core.modules");
        r = -ENOENT;
        goto fail;
    }
    reg->blocklist = core->api->service_get(core, RDV_SVC_BLOCKLIST, RDV_SVC_BLOCKLIST_VERSION, &reg->blocklist_self);
    if ((r = registry_apply_cfg(reg, cfg, true)) < 0)
        goto fail;
    if (cfg->software_url[0])
        RDV_INFO(core, "software_url: %s, version: %s", cfg->software_url, reg->version);
    if ((r = core->api->service_publish(core, RDV_SVC_REGISTRY, RDV_SVC_REGISTRY_VERSION, &registry_api, reg)) < 0)
        goto fail;
    if ((r = core->api->admin_command(core, "ip-changes", "[<id>|<start>] [-]  IP changes (ic)", registry_ipc_cmd,
                                      reg)) < 0 ||
        (r = core->api->admin_command(core, "ic", "[<id>|<start>] [-]  same as ip-changes", registry_ipc_cmd,
                                      reg)) < 0 ||
        (r = registry_admin_register(reg)) < 0)
        goto fail;
    if (!(reg->sweep = core->api->timer_new(core, registry_on_sweep, reg))) {
        r = -ENOMEM;
        goto fail;
    }
    if ((r = registry_stream_init(reg)) < 0)
        goto fail;
    *state = reg;
    return 0;
fail:
    registry_destroy(reg);
    return r;
}

/* Load every stored row (cold) before serving: lookups never wait on the
 * database afterwards. */
static int registry_start(void *state)
{
    registry *reg = state;
    long n = registry_load(reg);
    if (n < 0)
        return (int)n;
    if (reg->storage->on_done)
        reg->storage->on_done(reg->storage_self, registry_store_done, reg);
    if (reg->storage_v2 && reg->storage->on_lost)
        reg->storage->on_lost(reg->storage_self, registry_store_lost, reg);
    if (!reg->api->listener_find(reg->core, reg->cfg->listener, RDV_TR_UDP))
        RDV_WARN(reg->core, "no UDP listener named '%s': nothing to register on", reg->cfg->listener);
    reg->api->timer_start(reg->sweep, (uint64_t)reg->cfg->sweep_ms, (uint64_t)reg->cfg->sweep_ms);
    return 0;
}

/* Writes the storage refused (its queue at the bound) wait for the sweep;
 * at a stop they are put once more, before the storage's stop flushes its
 * queue (modules stop in reverse order and the registry comes after its
 * storage provider), so a clean stop after an outage loses nothing. */
static void registry_stop(void *state)
{
    registry *reg = state;
    reg->stopping = true; /* the storage's last flush logs what it could not write; nothing retries after it */
    registry_resubmit_all(reg);
}

static int registry_reconfigure(void *state, const void *cfg_)
{
    registry *reg = state;
    const registry_cfg *cfg = cfg_, *old = reg->cfg;
    /* A ConfigUpdate-changed serial/list survives a reload that does not
     * touch those settings. */
    bool same = old->serial == cfg->serial && old->rendezvous_servers.n == cfg->rendezvous_servers.n;
    for (size_t i = 0; same && i < cfg->rendezvous_servers.n; i++)
        same = strcmp(old->rendezvous_servers.v[i], cfg->rendezvous_servers.v[i]) == 0;
    if (same) {
        reg->cfg = cfg;
        registry_version_from_url(cfg->software_url, reg->version, sizeof reg->version);
    } else {
        int r = registry_apply_cfg(reg, cfg, false);
        if (r < 0)
            return r;
    }
    registry_stream_reconfigure(reg);
    return 0;
}

static const rdv_dep registry_requires[] = {
    { .name = RDV_SVC_STORAGE, .version = 1 }, /* 2 is used when there (on_lost) */
    { .name = RDV_SVC_BLOCKLIST, .version = RDV_SVC_BLOCKLIST_VERSION, .optional = true },
    { .name = NULL },
};

static const rdv_dep registry_provides[] = {
    { .name = RDV_SVC_REGISTRY, .version = RDV_SVC_REGISTRY_VERSION },
    { .name = NULL },
};

static const rdv_handler registry_handlers[] = {
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER, .transports = RDV_TR_UDP, .fn = registry_on_register_peer },
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK, .transports = RDV_TR_UDP, .fn = registry_on_register_pk },
    /* EXT §15.4 registration, or OSS NOT_SUPPORT. Shared so another module
     * may still chain on it. */
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK, .transports = RDV_TR_STREAM,
      .fn = registry_on_register_pk_stream, .flags = RDV_HF_SHARED },
    /* Heartbeat echoes of stream-registered peers; declined for any other
     * connection (api-proxy's HealthCheck sessions chain here too). */
    { .tag = 0, .transports = RDV_TR_STREAM, .fn = registry_on_heartbeat, .flags = RDV_HF_SHARED },
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_CONFIGURE_UPDATE, .transports = RDV_TR_UDP,
      .fn = registry_on_config_update },
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_SOFTWARE_UPDATE, .transports = RDV_TR_UDP,
      .fn = registry_on_software_update },
    RDV_HANDLER_END,
};

static const rdv_module registry_module = {
    RDV_MODULE_HEAD("registry", "1.0.0"),
    .description = "peer table and registration (RegisterPeer, RegisterPk over UDP and streams, ConfigUpdate, "
                   "SoftwareUpdate)",
    .settings = registry_settings,
    .config_size = sizeof(registry_cfg),
    .validate = registry_validate,
    .handlers = registry_handlers,
    .access = registry_stream_access,
    .access_priority = 200, /* last: only messages every other check let through refresh a peer */
    .requires = registry_requires,
    .provides = registry_provides,
    .init = registry_init,
    .start = registry_start,
    .reconfigure = registry_reconfigure,
    .stop = registry_stop,
    .destroy = registry_destroy,
};
RDV_MODULE_EXPORT(registry_module)
