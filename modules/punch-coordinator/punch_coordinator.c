/* punch_coordinator.c — the punch-coordinator module: hole-punch and relay
 * coordination between a requester A and a registered peer B
 * (rendezvous.md §6.3–§6.7, §7, §8, §9, §10, §11.4).
 *
 * This file holds the descriptor, the settings and the lifecycle; the
 * behaviour lives in the pc_*.c files (see pc.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pc.h"

static const rdv_setting pc_settings[] = {
    RDV_SETTING_STRLIST(pc_cfg, relay_servers, RDV_SETF_RELOAD,
                        "relay servers handed to peers (hbbs -r): \"host\" or \"host:port\"; rotated"),
    RDV_SETTING_BOOL(pc_cfg, always_use_relay, false, RDV_SETF_RELOAD,
                     "force relay: PunchHole nat_type SYMMETRIC (ALWAYS_USE_RELAY; admin `aur`)"),
    RDV_SETTING_STRING(pc_cfg, mask, "", RDV_SETF_RELOAD,
                       "IPv4 LAN network, e.g. 192.168.0.0/16 (hbbs --mask); \"\" = off; unparsable = off"),
    RDV_SETTING_STRING(pc_cfg, local_ip, "", RDV_SETF_RELOAD,
                       "relay address for LAN peers (LOCAL-IP); \"\" = first local IPv4; only with mask"),
    RDV_SETTING_INT(pc_cfg, relay_port, 21117, 1, 65535, RDV_SETF_RELOAD,
                    "port the health check uses for relay entries without one"),
    RDV_SETTING_INT(pc_cfg, relay_check_ms, 3000, 0, 3600000, RDV_SETF_RELOAD,
                    "relay health check period (only with 2+ relays); 0 = never"),
    RDV_SETTING_INT(pc_cfg, relay_check_timeout_ms, 3000, 100, 60000, RDV_SETF_RELOAD,
                    "TCP connect timeout of the relay health check"),
    RDV_SETTING_INT(pc_cfg, pending_max, 65536, 1, 10000000, RDV_SETF_RELOAD,
                    "requester connections tracked at most; the oldest is forgotten when full"),
    RDV_SETTING_INT(pc_cfg, pending_timeout_ms, 30000, 1000, 600000, RDV_SETF_RELOAD,
                    "a parked requester is forgotten after this long"),
    RDV_SETTING_INT(pc_cfg, punch_log_max, 10000, 0, 1000000, RDV_SETF_RELOAD,
                    "punch-request log records kept (admin `pr`); the oldest is dropped; 0 = no log"),
    RDV_SETTING_BOOL(pc_cfg, udp_punch, true, RDV_SETF_RELOAD,
                     "EXT 15.8: pass PunchHoleRequest.udp_port to the peer and answer its UDP PunchHoleSent "
                     "over the requester's connection (is_udp); false = OSS"),
    RDV_SETTING_BOOL(pc_cfg, field_passthrough, true, RDV_SETF_RELOAD,
                     "EXT 15.9: pass socket_addr_v6, upnp_port and force_relay to the peer and socket_addr_v6, "
                     "upnp_port back to the requester; false = OSS"),
    RDV_SETTING_END,
};

/* TCP "main" and WebSocket listeners: the websocket-transport module names
 * its listener "ws…" (handlers cannot filter on a prefix, so it is done in
 * code). Everything else (the "nat" port, other modules' ports) is not ours. */
bool pc_listener_ok(const rdv_msg_ctx *ctx)
{
    const char *n = ctx->listener_name ? ctx->listener_name : "";
    return strcmp(n, "main") == 0 || strncmp(n, "ws", 2) == 0;
}

static void pc_on_conn_close(void *ud, const void *arg)
{
    const rdv_conn_event *ev = arg;
    pc_pending_conn_closed(ud, ev->id);
}

static uint64_t pc_gauge_pending(void *ud) { return ((pc *)ud)->pending.nparked; }
static uint64_t pc_gauge_tracked(void *ud) { return ((pc *)ud)->pending.nrec; }
static uint64_t pc_gauge_log(void *ud) { return ((pc *)ud)->log.n; }
static uint64_t pc_gauge_relays(void *ud) { return ((pc *)ud)->relays.nconf; }
static uint64_t pc_gauge_active(void *ud) { return ((pc *)ud)->relays.nactive; }

static int pc_stats(pc *p)
{
    rdv_core *c = p->core;
    const rdv_core_api *api = c->api;
    struct { uint64_t **v; const char *name, *help; } cs[] = {
        { &p->st.punch_requests, "punch_requests", "PunchHoleRequests on TCP/WS" },
        { &p->st.licence_mismatch, "licence_mismatch", "answered LICENSE_MISMATCH" },
        { &p->st.login_refused, "login_refused", "refused by login-gate (other_failure)" },
        { &p->st.id_not_exist, "id_not_exist", "answered ID_NOT_EXIST" },
        { &p->st.offline, "offline", "answered OFFLINE" },
        { &p->st.punch_hole, "punch_hole", "PunchHole pushed to a target" },
        { &p->st.fetch_local_addr, "fetch_local_addr", "FetchLocalAddr pushed to a target (same intranet)" },
        { &p->st.push_fail, "push_fail", "pushes to a target that could not be sent" },
        { &p->st.punch_hole_sent, "punch_hole_sent", "PunchHoleSent received" },
        { &p->st.local_addr, "local_addr", "LocalAddr received" },
        { &p->st.relay_response, "relay_response", "RelayResponse received" },
        { &p->st.request_relay, "request_relay", "RequestRelay forwarded to a target" },
        { &p->st.request_relay_unknown, "request_relay_unknown", "RequestRelay for an id not in memory" },
        { &p->st.delivered, "delivered", "answers routed to a parked requester" },
        { &p->st.undeliverable, "undeliverable", "answers with no parked requester (dropped)" },
        { &p->st.deliver_fail, "deliver_fail", "answers whose requester connection was gone" },
        { &p->st.pending_evicted, "pending_evicted", "tracked requesters dropped because the table was full" },
        { &p->st.pending_expired, "pending_expired", "parked requesters forgotten after pending_timeout_ms" },
        { &p->st.pending_replaced, "pending_replaced", "parked requesters replaced by a newer one with the same address" },
        { &p->st.udp_ignored, "udp_ignored", "PunchHoleRequest/PunchHoleSent/LocalAddr over UDP, ignored (§4.4)" },
        { &p->st.wrong_listener, "wrong_listener", "coordination messages on a listener that is not main/ws" },
        { &p->st.parked_reply_dropped, "parked_reply_dropped", "requests closed because their reply channel was parked" },
        { &p->st.signed_pk, "signed_pk", "signed peer keys produced" },
        { &p->st.relay_checks, "relay_checks", "relay health checks run" },
        { &p->st.relay_check_skipped, "relay_check_skipped", "relay health checks skipped (previous still running)" },
        { &p->st.resolve_failed, "resolve_failed", "relay entries dropped: name does not resolve" },
        { &p->st.udp_punch_hole_sent, "udp_punch_hole_sent",
          "PunchHoleSent by UDP answered over the requester's connection (EXT 15.8)" },
        { &p->st.bad_fields, "bad_fields", "socket_addr_v6 over 18 bytes or ports out of range: not passed on" },
        { &p->st.oom, "oom", "requesters not parked: out of memory (they get no answer)" },
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        if (!(*cs[i].v = api->counter(c, cs[i].name, cs[i].help)))
            return -ENOMEM;
    int r = 0;
    r |= api->gauge(c, "pending", pc_gauge_pending, p, "requesters parked, waiting for an answer");
    r |= api->gauge(c, "pending_tracked", pc_gauge_tracked, p, "requester connections tracked (parked or answered)");
    r |= api->gauge(c, "punch_log", pc_gauge_log, p, "punch-request log records");
    r |= api->gauge(c, "relays", pc_gauge_relays, p, "relay servers configured (valid entries)");
    r |= api->gauge(c, "relays_active", pc_gauge_active, p, "relay servers handed out now (healthy)");
    return r < 0 ? -EINVAL : 0;
}

static void pc_apply_relay_setting(pc *p)
{
    pc_relays_set(p, (const char *const *)p->cfg->relay_servers.v, p->cfg->relay_servers.n);
}

static void pc_destroy(void *state);

static int pc_init(rdv_core *core, const void *cfg, void **state)
{
    pc *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->core = core, p->cfg = cfg;
    const rdv_core_api *api = core->api;
    p->keys = api->service_get(core, RDV_SVC_KEYS, RDV_SVC_KEYS_VERSION, &p->keys_self);
    p->reg = api->service_get(core, RDV_SVC_REGISTRY, RDV_SVC_REGISTRY_VERSION, &p->reg_self);
    p->login = api->service_get(core, RDV_SVC_LOGIN, RDV_SVC_LOGIN_VERSION, &p->login_self); /* optional */
    if (!p->keys || !p->reg) {
        RDV_ERR(core, "needs the \"%s\" service (add its module to core.modules)",
                !p->keys ? RDV_SVC_KEYS : RDV_SVC_REGISTRY);
        free(p);
        return -ENOENT;
    }
    int r = pc_stats(p);
    if (!r)
        r = pc_pending_init(p);
    if (!r)
        r = pc_relays_init(p);
    if (!r)
        r = pc_resolver_init(p);
    if (!r)
        r = pc_punchlog_resize(p, (size_t)p->cfg->punch_log_max);
    if (!r)
        r = api->hook_add(core, RDV_HOOK_CONN_CLOSE, 0, pc_on_conn_close, p);
    if (!r)
        r = pc_admin_register(p);
    if (r < 0) {
        pc_destroy(p);
        return r;
    }
    p->always_use_relay = p->cfg->always_use_relay;
    pc_lan_configure(p);
    *state = p;
    return 0;
}

static int pc_start(void *state)
{
    pc *p = state;
    p->udp = p->core->api->listener_find(p->core, "main", RDV_TR_UDP);
    if (!p->udp)
        RDV_WARN(p->core, "no UDP listener \"main\" in core.listeners: PunchHole/RequestRelay cannot reach peers");
    pc_apply_relay_setting(p);
    pc_relays_start(p);
    return 0;
}

static bool pc_strlist_eq(const rdv_strlist *a, const rdv_strlist *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

static int pc_reconfigure(void *state, const void *cfg_)
{
    pc *p = state;
    const pc_cfg *old = p->cfg, *cfg = cfg_;
    p->cfg = cfg;
    /* The runtime flag (`aur`) survives a reload unless the file changed it. */
    if (cfg->always_use_relay != old->always_use_relay)
        p->always_use_relay = cfg->always_use_relay;
    pc_lan_configure(p);
    if (!pc_strlist_eq(&cfg->relay_servers, &old->relay_servers))
        pc_apply_relay_setting(p);
    pc_relays_start(p); /* re-arm with the new period */
    pc_pending_trim(p);
    return pc_punchlog_resize(p, (size_t)cfg->punch_log_max);
}

static void pc_stop(void *state)
{
    pc *p = state;
    const rdv_core_api *api = p->core->api;
    if (p->relays.tick)
        api->timer_stop(p->relays.tick);
}

static void pc_destroy(void *state)
{
    pc *p = state;
    pc_resolver_free(p); /* first: no job may complete into freed lists */
    pc_relays_free(p);
    pc_pending_free(p);
    pc_punchlog_free(p);
    free(p);
}

static const rdv_dep pc_requires[] = {
    { .name = RDV_SVC_REGISTRY, .version = RDV_SVC_REGISTRY_VERSION },
    { .name = RDV_SVC_KEYS, .version = RDV_SVC_KEYS_VERSION },
    { .name = RDV_SVC_LOGIN, .version = RDV_SVC_LOGIN_VERSION, .optional = true },
    { .name = NULL },
};

static const rdv_module pc_module = {
    RDV_MODULE_HEAD("punch-coordinator", "1.0.0"),
    .description = "hole-punch and relay coordination (PunchHoleRequest, PunchHoleSent, LocalAddr, "
                   "RelayResponse, RequestRelay)",
    .settings = pc_settings,
    .config_size = sizeof(pc_cfg),
    .handlers = pc_handlers,
    .access = pc_access,
    .access_priority = 50,
    .requires = pc_requires,
    .init = pc_init,
    .start = pc_start,
    .reconfigure = pc_reconfigure,
    .stop = pc_stop,
    .destroy = pc_destroy,
};
RDV_MODULE_EXPORT(pc_module)
