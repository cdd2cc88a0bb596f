/* candy_module.c — a Candy-compatible network server (lanthora/candy,
 * spec candy.md): clients reach it over WebSocket, it relays their IPv4
 * packets and brokers their hole punching. The port is websocket-
 * transport's (the "ws-server" service): upgrade, framing, pings and the
 * connection limits are done there; what the messages mean is here
 * (candy_net.c). */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "candy.h"

static const rdv_setting candy_settings[] = {
    RDV_SETTING_INT(candy_cfg, port, 26817, 1, 65535, 0,
                    "WebSocket port the clients' websocket = \"ws://HOST:PORT\" names (candy has no default)"),
    RDV_SETTING_STRING(candy_cfg, bind, "", 0, "address to bind to; empty = websocket-transport.bind"),
    { "password", RDV_SET_STRING, offsetof(candy_cfg, password), RDV_SETF_RELOAD | RDV_SETF_SECRET, 0, 0, "", 0, 1024,
      0, 0, "the network's shared password (candy's password =); empty = none" },
    RDV_SETTING_STRING(candy_cfg, dhcp, "", RDV_SETF_RELOAD,
                       "address range handed out to clients, e.g. \"10.0.0.0/24\" (candy's dhcp =); empty = clients "
                       "configure a static tun address"),
    { "sdwan", RDV_SET_STRLIST, offsetof(candy_cfg, sdwan), RDV_SETF_RELOAD, 0, 0, NULL, 0, CANDY_MAX_RULES, 0, 0,
      "routes pushed to clients: \"DEV,DST,NEXT\" each (candy's sdwan =, ';'-separated lists accepted)" },
    RDV_SETTING_INT(candy_cfg, timestamp_window_s, 0, 0, 86400, RDV_SETF_RELOAD,
                    "refuse AUTH/EXPTTUN/VMAC whose timestamp is further off than this; 0 = accept (candy 6.1+)"),
    RDV_SETTING_INT(candy_cfg, max_clients, 1000, 1, 1000000, RDV_SETF_RELOAD,
                    "clients at once; more are closed at their first message"),
    RDV_SETTING_INT(candy_cfg, max_message, 65535, 1500, 1048576, RDV_SETF_RELOAD,
                    "largest message accepted (clients send at most MTU + 1)"),
    RDV_SETTING_INT(candy_cfg, client_max, CANDY_CLIENT_READ_MAX, CANDY_CLIENT_READ_MAX, 1048576, RDV_SETF_RELOAD,
                    "largest message passed on to clients; longer ones are dropped (stock candy clients read at most "
                    "1500 bytes and reconnect on more); raise only if every client reads more"),
    RDV_SETTING_INT(candy_cfg, first_ms, 10000, 100, 300000, RDV_SETF_RELOAD,
                    "accept -> upgrade and first message (clients send VMAC at once)"),
    RDV_SETTING_INT(candy_cfg, idle_ms, 0, 0, 86400000, RDV_SETF_RELOAD,
                    "close a client silent this long (no message, ping or pong); 0 = never (as candy; clients ping "
                    "after 15 s without receiving anything, so a client that only receives may stay silent)"),
    RDV_SETTING_INT(candy_cfg, rate, 20000, 0, 10000000, RDV_SETF_RELOAD,
                    "messages per second per client (one second of burst, at least 8); more are dropped; 0 = no limit"),
    RDV_SETTING_INT(candy_cfg, broadcast_rate, 100, 0, 1000000, RDV_SETF_RELOAD,
                    "broadcasts per second per client (each reaches every client); more are dropped; 0 = no limit"),
    RDV_SETTING_INT(candy_cfg, queue_max, 1048576, 65536, 67108864, RDV_SETF_RELOAD,
                    "packets for a client are dropped while this many bytes wait to be written to it"),
    RDV_SETTING_END,
};

static int candy_validate(const void *cfg_, char *err, size_t errlen)
{
    const candy_cfg *cfg = cfg_;
    bool has;
    candy_cidr d;
    candy_rule *rules;
    size_t n;
    int r = candy_parse_network(cfg, &has, &d, &rules, &n, err, errlen);
    free(rules);
    return r;
}

static rdv_ws_port_spec candy_spec(const candy_cfg *cfg)
{
    return (rdv_ws_port_spec){
        .name = "candy",
        .setting = "candy.port",
        .bind = cfg->bind,
        .port = (int)cfg->port,
        .first_ms = (uint64_t)cfg->first_ms,
        .idle_ms = (uint64_t)cfg->idle_ms,
        .first_max = (uint64_t)cfg->max_message,
        .max_frame = (uint64_t)cfg->max_message,
        .max_message = (uint64_t)cfg->max_message,
    };
}

/* The network from cfg (init, reload). The cursor restarts at the
 * configured host when the range changes (§6.3). */
static int candy_apply(candy_mod *m, const candy_cfg *cfg)
{
    bool has;
    candy_cidr d;
    candy_rule *rules;
    size_t n;
    char err[256];
    int r = candy_parse_network(cfg, &has, &d, &rules, &n, err, sizeof err);
    if (r < 0) {
        RDV_ERR(m->core, "candy.%s", err);
        return r;
    }
    if (has && (!m->has_dhcp || d.host != m->dhcp.host || d.prefix != m->dhcp.prefix))
        m->cursor = d.host;
    m->has_dhcp = has, m->dhcp = d;
    free(m->rules);
    m->rules = rules, m->nrules = n;
    m->secret = (candy_secret){ cfg->password, strlen(cfg->password) };
    m->cfg = cfg;
    return 0;
}

/* ------------------------------------------------------------------ stats, admin */
static uint64_t candy_g_clients(void *ud) { return ((candy_mod *)ud)->nclients; }
static uint64_t candy_g_auth(void *ud) { return ((candy_mod *)ud)->nauth; }

static int candy_register_stats(candy_mod *m)
{
    const rdv_core_api *api = m->core->api;
    static const struct {
        size_t off;
        const char *name, *help;
    } ctr[] = {
#define C(f, h) { offsetof(candy_stats, f), #f, h }
        C(clients_refused, "clients closed at their first message: max_clients"),
        C(auth_ok, "AUTH accepted"),
        C(auth_bad_hash, "AUTH, EXPTTUN or VMAC with a wrong hash (wrong password): closed"),
        C(kicked, "clients closed because another AUTHed with their address"),
        C(vmac_ok, "VMAC accepted"),
        C(expttun_granted, "addresses handed out (EXPTTUN answered)"),
        C(expttun_full, "EXPTTUN refused: every address of dhcp in use (closed)"),
        C(forward_unicast, "FORWARD to the owner of its destination"),
        C(forward_broadcast, "FORWARD to every other client (multicast or broadcast destination)"),
        C(forward_no_owner, "FORWARD dropped: nobody owns its destination"),
        C(dropped_queue, "packets dropped: the receiver's queue held queue_max"),
        C(dropped_rate, "messages dropped: rate or broadcast_rate"),
        C(dropped_too_big, "FORWARD or GENERAL dropped: longer than client_max (a stock client would reconnect)"),
        C(relayed, "UDP4CONN, DISCOVERY and GENERAL routed"),
        C(protocol_error, "clients closed for a malformed message"),
        C(not_authenticated, "clients closed for a message that needs AUTH before it"),
        C(timestamp_refused, "clients closed for a timestamp outside timestamp_window_s"),
        C(ignored, "messages of unknown kinds (ignored)"),
        C(oom, "clients refused or messages dropped for lack of memory"),
#undef C
    };
    for (size_t i = 0; i < sizeof ctr / sizeof ctr[0]; i++) {
        uint64_t *p = api->counter(m->core, ctr[i].name, ctr[i].help);
        if (!p)
            return -ENOMEM;
        memcpy((char *)&m->st + ctr[i].off, &p, sizeof p);
    }
    if (api->gauge(m->core, "clients", candy_g_clients, m, "connected clients") < 0 ||
        api->gauge(m->core, "authenticated", candy_g_auth, m, "clients with a virtual address (AUTH)") < 0)
        return -ENOMEM;
    return 0;
}

/* `candy`: the network and its clients. */
static void candy_admin(void *ud, int argc, char **argv, rdv_buf *out)
{
    candy_mod *m = ud;
    const rdv_core_api *api = m->core->api;
    (void)argc, (void)argv;
    char d[24] = "off", ip[16], a[RDV_ADDR_STRLEN];
    if (m->has_dhcp)
        candy_cidr_format(m->dhcp, d, sizeof d);
    api->out(out, "port %d, dhcp %s (cursor %s), %zu sdwan rules, password %s\n",
             m->port ? m->srv->port_number(m->srv_tp, m->port) : 0, d, candy_ip_format(m->cursor, ip, sizeof ip),
             m->nrules, m->secret.len ? "set" : "none");
    api->out(out, "clients %zu (authenticated %zu), limit %lld\n", m->nclients, m->nauth,
             (long long)m->cfg->max_clients);
    uint64_t now = api->now_ms(m->core);
    for (candy_client *c = m->clients; c; c = c->hh.next) {
        char v[CANDY_VMAC_BYTES + 1] = "-";
        if (c->has_vmac) {
            for (int i = 0; i < CANDY_VMAC_BYTES; i++) /* 16 hex characters (§5.5); shown printable */
                v[i] = c->vmac[i] >= 0x21 && c->vmac[i] < 0x7f ? (char)c->vmac[i] : '?';
            v[CANDY_VMAC_BYTES] = 0;
        }
        api->out(out, "%llu %s vmac %s from %s for %llu s\n", (unsigned long long)c->id,
                 c->ip ? candy_ip_format(c->ip, ip, sizeof ip) : "-", v, rdv_addr_str(&c->peer, a, sizeof a),
                 (unsigned long long)((now - c->since_ms) / 1000));
    }
}

/* ------------------------------------------------------------------ lifecycle */
static int candy_init(rdv_core *core, const void *cfg_, void **state)
{
    const rdv_core_api *api = core->api;
    candy_mod *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->core = core;
    int r = candy_apply(m, cfg_);
    if (r < 0) {
        free(m);
        return r;
    }
    m->srv = api->service_get(core, RDV_SVC_WS_SERVER, RDV_SVC_WS_SERVER_VERSION, &m->srv_tp);
    if (!m->srv) { /* the loader checked `requires`; a core without it never gets here */
        RDV_ERR(core, "candy needs websocket-transport (the ws-server service): add it to core.modules");
        free(m->rules);
        free(m);
        return -ENOENT;
    }
    if ((r = candy_register_stats(m)) < 0 ||
        (r = api->admin_command(core, "candy", "candy  (the network, its clients)", candy_admin, m)) < 0) {
        free(m->rules);
        free(m);
        return r;
    }
    *state = m;
    return 0;
}

/* queue_max only works below the core's own bound on a write queue: past
 * that the core closes the slow client before its packets are dropped. */
static void candy_check_queue_max(candy_mod *m)
{
    int64_t core_max;
    if (m->core->api->core_int(m->core, "write_queue_max", &core_max) == 0 && m->cfg->queue_max >= core_max)
        RDV_WARN(m->core,
                 "candy.queue_max = %lld is not below core.write_queue_max = %lld: a client that reads slowly is "
                 "closed by the core instead of losing packets; set candy.queue_max lower",
                 (long long)m->cfg->queue_max, (long long)core_max);
}

static int candy_start(void *state)
{
    candy_mod *m = state;
    rdv_ws_port_spec s = candy_spec(m->cfg);
    candy_check_queue_max(m);
    m->port = m->srv->port_open(m->srv_tp, &s, &candy_side_api, m);
    return m->port ? 0 : -EADDRNOTAVAIL; /* websocket-transport or the core said why */
}

static int candy_reconfigure(void *state, const void *cfg_)
{
    candy_mod *m = state;
    const candy_cfg *cfg = cfg_;
    rdv_ws_port_spec s = candy_spec(cfg);
    if (m->port && m->srv->port_limits(m->srv_tp, m->port, &s) < 0)
        return -EINVAL;
    if (candy_apply(m, cfg) < 0) {
        s = candy_spec(m->cfg); /* the old configuration stays whole */
        if (m->port)
            m->srv->port_limits(m->srv_tp, m->port, &s);
        return -EINVAL;
    }
    candy_check_queue_max(m);
    return 0;
}

static void candy_stop(void *state)
{
    candy_mod *m = state;
    if (m->port)
        m->srv->port_close(m->srv_tp, m->port); /* no callback reaches us after it */
    candy_forget_all(m);
}

static void candy_destroy(void *state)
{
    candy_mod *m = state;
    candy_forget_all(m);
    free(m->rules);
    free(m->scratch);
    free(m);
}

static const rdv_dep candy_requires[] = {
    { RDV_SVC_WS_SERVER, RDV_SVC_WS_SERVER_VERSION, false },
    { NULL, 0, false },
};

static const rdv_module candy_module = {
    RDV_MODULE_HEAD("candy", "1.0.0"),
    .description = "Candy-compatible virtual network server (lanthora/candy) on a WebSocket port",
    .settings = candy_settings,
    .config_size = sizeof(candy_cfg),
    .validate = candy_validate,
    .requires = candy_requires,
    .init = candy_init,
    .start = candy_start,
    .reconfigure = candy_reconfigure,
    .stop = candy_stop,
    .destroy = candy_destroy,
};
RDV_MODULE_EXPORT(candy_module)
