/* ws_module.c — the websocket-transport module: RustDesk's WebSocket ports.
 *
 * Rendezvous WebSocket port (main + 2, 21118; listener "ws"): every binary
 * message is one RendezvousMessage fed to the core's ACCESS phase and
 * dispatch table with transport RDV_TR_WS (wire.md §7, rendezvous.md §5.2).
 * Relay WebSocket port (relay + 2, 21119; listener "relay-ws"): sides are
 * handed to the relay module through the "relay-ws" service (relay.md §9,
 * rdv/svc/relay_ws.h).
 * Module ports (the "ws-server" service, rdv/svc/ws_server.h): a module
 * that speaks its own protocol in binary messages opens a port whose sides
 * belong to it, under limits it chooses. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#define WS_LISTEN_BUFFER 131072 /* > max_header_bytes' maximum, so a 431 is always answered */

static const rdv_setting ws_settings[] = {
    RDV_SETTING_INT(ws_cfg, rendezvous_port, 21118, 0, 65535, 0,
                    "rendezvous WebSocket port (hbbs main port + 2); 0 = off"),
    RDV_SETTING_INT(ws_cfg, relay_port, 21119, 0, 65535, 0,
                    "relay WebSocket port (hbbr port + 2); 0 = off; needs a module providing relay-ws"),
    RDV_SETTING_STRING(ws_cfg, bind, "", 0, "address to bind both ports to; empty = [::] dual stack"),
    { "trusted_proxies", RDV_SET_STRLIST, offsetof(ws_cfg, trusted_proxies), RDV_SETF_RELOAD, 0, 0, NULL, 0, 256,
      0, 0, "reverse proxies (IP or IP/prefix) whose X-Real-IP / X-Forwarded-For are believed; empty = none" },
    RDV_SETTING_INT(ws_cfg, max_connections, 10000, 1, 1000000, RDV_SETF_RELOAD,
                    "WebSocket connections at once (both ports); more are answered 503"),
    RDV_SETTING_INT(ws_cfg, handshake_timeout_ms, 10000, 100, 30000, RDV_SETF_RELOAD,
                    "time from accept to a complete upgrade request"),
    RDV_SETTING_INT(ws_cfg, max_header_bytes, 8192, 1024, 65536, RDV_SETF_RELOAD,
                    "largest upgrade request head; larger is answered 431"),
    RDV_SETTING_INT(ws_cfg, idle_ms, 30000, 1000, 3600000, RDV_SETF_RELOAD,
                    "rendezvous port: close after this long without a complete message (any kind)"),
    RDV_SETTING_INT(ws_cfg, close_timeout_ms, 2000, 100, 30000, RDV_SETF_RELOAD,
                    "after our close frame, wait this long for the peer's before closing"),
    RDV_SETTING_INT(ws_cfg, relay_first_ms, 30000, 1000, 300000, RDV_SETF_RELOAD,
                    "relay port: upgrade and first message within this long of accept"),
    RDV_SETTING_INT(ws_cfg, relay_first_max, 65536, 1024, 16777216, RDV_SETF_RELOAD,
                    "relay port: largest first message (a RequestRelay is under 200 bytes)"),
    RDV_SETTING_INT(ws_cfg, relay_max_frame, 16777216, 65536, 1073741824, RDV_SETF_RELOAD,
                    "relay port: largest frame"),
    RDV_SETTING_INT(ws_cfg, relay_max_message, 67108864, 65536, 1073741824, RDV_SETF_RELOAD,
                    "relay port: largest message"),
    RDV_SETTING_INT(ws_cfg, buffer_total, 268435456, 65536, 68719476736LL, RDV_SETF_RELOAD,
                    "bytes all connections (both ports) may hold in partly received messages; a connection whose "
                    "message would pass it is closed (1013); at least relay_max_message and core.max_frame"),
    RDV_SETTING_INT(ws_cfg, message_timeout_ms, 120000, 1000, 3600000, RDV_SETF_RELOAD,
                    "a message must be complete this long after its first frame began (1008 otherwise); time the "
                    "relay paused the side does not count"),
    RDV_SETTING_END,
};

static int ws_parse_proxies(const rdv_strlist *l, ws_cidr **out, size_t *n, char *err, size_t errlen)
{
    ws_cidr *v = l->n ? calloc(l->n, sizeof *v) : NULL;
    if (l->n && !v)
        return -ENOMEM;
    for (size_t i = 0; i < l->n; i++) {
        if (ws_cidr_parse(l->v[i], &v[i]) < 0) {
            if (err)
                snprintf(err, errlen, "websocket-transport.trusted_proxies: \"%s\" is not an IP address or IP/prefix", l->v[i]);
            free(v);
            return -EINVAL;
        }
    }
    *out = v, *n = l->n;
    return 0;
}

static int ws_validate(const void *cfg_, char *err, size_t errlen)
{
    const ws_cfg *cfg = cfg_;
    ws_cidr *v;
    size_t n;
    int r = ws_parse_proxies(&cfg->trusted_proxies, &v, &n, err, errlen);
    if (r < 0)
        return r;
    free(v);
    if (cfg->rendezvous_port && cfg->rendezvous_port == cfg->relay_port) {
        snprintf(err, errlen, "websocket-transport.relay_port: rendezvous_port and relay_port are both %lld", (long long)cfg->relay_port);
        return -EINVAL;
    }
    if (cfg->relay_max_message > cfg->buffer_total) {
        snprintf(err, errlen,
                 "websocket-transport.relay_max_message = %lld is larger than buffer_total = %lld: one such message could never be "
                 "held; raise buffer_total or lower relay_max_message",
                 (long long)cfg->relay_max_message, (long long)cfg->buffer_total);
        return -EINVAL;
    }
    if (cfg->relay_first_max > cfg->relay_max_message) {
        snprintf(err, errlen, "websocket-transport.relay_first_max (%lld) is larger than relay_max_message (%lld)",
                 (long long)cfg->relay_first_max, (long long)cfg->relay_max_message);
        return -EINVAL;
    }
    return 0;
}

/* ------------------------------------------------------------------ stats, admin */
static uint64_t ws_g_conns(void *ud) { return ((ws_mod *)ud)->nconns; }
static uint64_t ws_g_handshake(void *ud) { return ((ws_mod *)ud)->nhandshake; }
static uint64_t ws_g_relay(void *ud) { return ((ws_mod *)ud)->relay_port.nsides; }
static uint64_t ws_g_module(void *ud) { return ws_module_sides(ud); }
static uint64_t ws_g_buffers(void *ud) { return ((ws_mod *)ud)->buf_bytes; }

static int ws_register_stats(ws_mod *m)
{
    rdv_core *core = m->core;
    const rdv_core_api *api = core->api;
    ws_stats *st = &m->st;
    static const struct {
        size_t off;
        const char *name, *help;
    } ctr[] = {
#define C(f, h) { offsetof(ws_stats, f), #f, h }
        C(accepted, "TCP connections accepted on the WebSocket ports"),
        C(refused_limit, "connections refused: max_connections (503)"),
        C(hs_ok, "upgrades completed (101)"),
        C(hs_malformed, "handshakes refused: not an HTTP/1.x request (400)"),
        C(hs_not_get, "handshakes refused: method other than GET (400)"),
        C(hs_old_http, "handshakes refused: HTTP/1.0 (400)"),
        C(hs_not_upgrade, "handshakes refused: no Upgrade: websocket / Connection: upgrade (400)"),
        C(hs_bad_key, "handshakes refused: Sec-WebSocket-Key missing or invalid (400)"),
        C(hs_bad_version, "handshakes refused: Sec-WebSocket-Version not 13 (426)"),
        C(hs_too_big, "handshakes refused: request head over max_header_bytes (431)"),
        C(hs_timeout, "handshakes not complete within handshake_timeout_ms"),
        C(proxy_used, "connections attributed to X-Real-IP / X-Forwarded-For of a trusted proxy"),
        C(proxy_untrusted, "proxy headers ignored: peer not in trusted_proxies"),
        C(proxy_unparsed, "proxy headers ignored: not a single IP address"),
        C(msg_binary, "binary messages received"),
        C(msg_text, "text messages received (ignored)"),
        C(ping, "pings received (answered with pong)"),
        C(pong, "pongs received"),
        C(bytes_in, "payload bytes of binary messages received"),
        C(closed_peer, "closed by the peer's close frame"),
        C(closed_protocol, "closed for a protocol error (1002: unmasked, bad opcode, control frame > 125, ...)"),
        C(closed_too_big, "closed for a message over the limit (1009)"),
        C(closed_bad_utf8, "closed for invalid UTF-8 in a text message or close reason (1007)"),
        C(closed_dispatch, "closed after a message whose handling ends the connection"),
        C(closed_idle, "closed for no complete message within the idle / first-message limit"),
        C(closed_close_timeout, "our close frame got no answer within close_timeout_ms"),
        C(closed_shutdown, "closed by shutdown"),
        C(closed_error, "closed for an internal error (memory, codec)"),
        C(closed_buffer_total, "closed (1013): its message would have passed buffer_total"),
        C(closed_message_timeout, "closed (1008): a message not complete within message_timeout_ms"),
        C(relay_handoff, "relay port: sides handed to the relay"),
        C(relay_refused, "relay port: sides refused (by the relay, or a first message not binary)"),
        C(module_handoff, "module ports (ws-server): sides handed to their module"),
        C(module_refused, "module ports (ws-server): sides refused by their module (or a first message not binary)"),
        C(oom, "connections refused at accept for lack of memory (503; the others are untouched)"),
#undef C
    };
    for (size_t i = 0; i < sizeof ctr / sizeof ctr[0]; i++) {
        uint64_t *p = api->counter(core, ctr[i].name, ctr[i].help);
        if (!p)
            return -ENOMEM;
        memcpy((char *)st + ctr[i].off, &p, sizeof p);
    }
    m->relay_port.handoff = m->rdv_port.handoff = st->relay_handoff;
    m->relay_port.refused = m->rdv_port.refused = st->relay_refused;
    if (api->gauge(core, "connections", ws_g_conns, m, "open WebSocket connections") < 0 ||
        api->gauge(core, "handshaking", ws_g_handshake, m, "connections still in the HTTP upgrade") < 0 ||
        api->gauge(core, "relay_sides", ws_g_relay, m, "connections handed to the relay") < 0 ||
        api->gauge(core, "module_sides", ws_g_module, m, "connections handed to the modules of module ports") < 0 ||
        api->gauge(core, "buffer_bytes", ws_g_buffers, m,
                   "bytes of message reassembly buffers, both ports (buffer_total)") < 0)
        return -ENOMEM;
    return 0;
}

static const char *ws_phase_name(const ws_conn *c)
{
    if (c->owned)
        return c->port->kind == WS_PORT_RELAY ? "relay" : "owned";
    return c->phase == WS_HANDSHAKE ? "handshake" : c->phase == WS_OPEN ? "open" : "closing";
}

/* `websocket`: ports, limits and the open connections. */
static void ws_admin(void *ud, int argc, char **argv, rdv_buf *out)
{
    ws_mod *m = ud;
    const rdv_core_api *api = m->core->api;
    (void)argc, (void)argv;
    api->out(out, "rendezvous port %d, relay port %d%s\n", m->rdv_port.l ? api->listener_port(m->rdv_port.l) : 0,
             m->relay_port.l ? api->listener_port(m->relay_port.l) : 0,
             m->cfg->relay_port && !m->relay ? " (closed: no relay-ws service)" : "");
    for (const ws_port *p = m->mports; p; p = p->next)
        api->out(out, "module port %s %d: %zu sides%s\n", p->name, p->l ? api->listener_port(p->l) : 0, p->nsides,
                 p->closed ? " (closed by its module)" : "");
    api->out(out, "connections %zu (handshake %zu, relay %zu, module ports %zu), limit %lld\n", m->nconns,
             m->nhandshake, m->relay_port.nsides, ws_module_sides(m), (long long)m->cfg->max_connections);
    api->out(out, "message buffers %llu bytes, limit %lld (buffer_total)\n", (unsigned long long)m->buf_bytes,
             (long long)m->cfg->buffer_total);
    api->out(out, "trusted proxies:");
    for (size_t i = 0; i < m->cfg->trusted_proxies.n; i++)
        api->out(out, " %s", m->cfg->trusted_proxies.v[i]);
    api->out(out, "%s\n", m->cfg->trusted_proxies.n ? "" : " none (proxy headers ignored)");
    ws_conn *c, *tmp;
    HASH_ITER(hh, m->conns, c, tmp) {
        char a[RDV_ADDR_STRLEN], b[RDV_ADDR_STRLEN];
        api->out(out, "%llu %s %s %s%s%s\n", (unsigned long long)c->id,
                 c->port->kind == WS_PORT_RELAY ? "relay" : c->port->kind == WS_PORT_MODULE ? c->port->name
                                                                                              : "rendezvous",
                 ws_phase_name(c),
                 rdv_addr_str(&c->tcp_peer, a, sizeof a), rdv_addr_equal(&c->peer, &c->tcp_peer) ? "" : " as ",
                 rdv_addr_equal(&c->peer, &c->tcp_peer) ? "" : rdv_addr_str(&c->peer, b, sizeof b));
    }
}

/* ------------------------------------------------------------------ lifecycle */
/* The rendezvous port takes messages up to core.max_frame: one of them
 * must fit in buffer_total (the relay port's relay_max_message is checked
 * by ws_validate). One line naming both settings and their files. */
/* buffer_total must hold the largest message any port may carry: the
 * module ports' (running state, so on reload) and core.max_frame. */
static int ws_check(rdv_core *core, void *state, const void *cfg_, char *err, size_t errlen)
{
    const ws_mod *m = state;
    const ws_cfg *cfg = cfg_;
    for (const ws_port *p = m ? m->mports : NULL; p; p = p->next) {
        if (!p->closed && p->lim.max_message > (uint64_t)cfg->buffer_total) {
            snprintf(err, errlen,
                     "websocket-transport.buffer_total = %lld is smaller than the largest message of module port %s "
                     "(%s): keep buffer_total at least %llu",
                     (long long)cfg->buffer_total, p->name, p->lim.setting ? p->lim.setting : p->name,
                     (unsigned long long)p->lim.max_message);
            return -EINVAL;
        }
    }
    int64_t max_frame;
    if (!cfg->rendezvous_port || core->api->core_int(core, "max_frame", &max_frame) < 0 || max_frame <= cfg->buffer_total)
        return 0;
    snprintf(err, errlen,
             "websocket-transport.buffer_total = %lld is smaller than core.max_frame = %lld (conf.d/00-core.conf): a "
             "rendezvous message that size could never be held; raise buffer_total or lower max_frame",
             (long long)cfg->buffer_total, (long long)max_frame);
    return -EINVAL;
}

static int ws_init(rdv_core *core, const void *cfg_, void **state)
{
    const ws_cfg *cfg = cfg_;
    const rdv_core_api *api = core->api;
    if (api->size < offsetof(rdv_core_api, conn_set_peer) + sizeof api->conn_set_peer) {
        RDV_ERR(core, "this core has no conn_set_peer (rdv_core_api too old); upgrade rdvd");
        return -ENOTSUP;
    }
    ws_mod *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    /* The relay port's handoff/refused counters are set with the others. */
    m->core = core, m->cfg = cfg;
    m->rdv_port = (ws_port){ .m = m, .kind = WS_PORT_RENDEZVOUS };
    m->relay_port = (ws_port){ .m = m, .kind = WS_PORT_RELAY };
    snprintf(m->rdv_port.name, sizeof m->rdv_port.name, "ws");
    snprintf(m->relay_port.name, sizeof m->relay_port.name, "relay-ws");
    ws_relay_limits(m);
    char err[160];
    int r = ws_parse_proxies(&cfg->trusted_proxies, &m->proxies, &m->nproxies, err, sizeof err);
    if (r < 0) {
        RDV_ERR(core, "%s", err);
        free(m);
        return r;
    }
    if (api->core_int(core, "max_frame", &m->max_frame) < 0 || m->max_frame <= 0)
        m->max_frame = 1 << 20; /* buffer_total was checked against it (ws_check) */
    m->relay = api->service_get(core, RDV_SVC_RELAY_WS, RDV_SVC_RELAY_WS_VERSION, &m->relay_self);
    m->relay_port.owner = m->relay, m->relay_port.self = m->relay_self;
    if ((r = ws_register_stats(m)) < 0 ||
        (r = api->service_publish(core, RDV_SVC_WS_SERVER, RDV_SVC_WS_SERVER_VERSION, &ws_server_api, m)) < 0 ||
        (r = api->admin_command(core, "websocket", "websocket  (ports, limits, open connections)", ws_admin, m)) < 0) {
        free(m->proxies);
        free(m);
        return r;
    }
    *state = m;
    return 0;
}

int ws_listen(ws_mod *m, ws_port *port, const char *name, int64_t portno, const char *bind)
{
    rdv_listen_spec spec = {
        .name = name,
        .transport = RDV_TR_TCP,
        .bind = bind && *bind ? bind : m->cfg->bind,
        .port = (int)portno,
        .mode = RDV_LISTEN_RAW,
        .max_buffer = WS_LISTEN_BUFFER,
        .ops = &ws_conn_ops,
        .ud = port,
    };
    port->l = m->core->api->listen(m->core, &spec);
    return port->l ? 0 : -EADDRNOTAVAIL; /* the core logged address, port and reason */
}

static int ws_start(void *state)
{
    ws_mod *m = state;
    int r;
    /* "ws": the punch-coordinator accepts RDV_TR_WS on "main" or "ws*". */
    if (m->cfg->rendezvous_port && (r = ws_listen(m, &m->rdv_port, "ws", m->cfg->rendezvous_port, NULL)) < 0)
        return r;
    if (m->cfg->relay_port) {
        if (!m->relay)
            RDV_WARN(m->core, "relay_port %lld stays closed: no loaded module provides the \"%s\" service "
                              "(load the relay module, or set websocket-transport.relay_port = 0)",
                     (long long)m->cfg->relay_port, RDV_SVC_RELAY_WS);
        else if ((r = ws_listen(m, &m->relay_port, "relay-ws", m->cfg->relay_port, NULL)) < 0)
            return r;
    }
    return 0;
}

/* Only RDV_SETF_RELOAD settings differ: limits and timeouts apply to new
 * messages and deadlines, trusted_proxies to new handshakes; a smaller
 * buffer_total keeps what is held and refuses growth past it. */
static int ws_reconfigure(void *state, const void *cfg_)
{
    ws_mod *m = state;
    const ws_cfg *cfg = cfg_;
    ws_cidr *v;
    size_t n;
    char err[160];
    int r = ws_parse_proxies(&cfg->trusted_proxies, &v, &n, err, sizeof err);
    if (r < 0) {
        RDV_ERR(m->core, "%s", err);
        return r;
    }
    free(m->proxies);
    m->proxies = v, m->nproxies = n;
    m->cfg = cfg;
    ws_relay_limits(m);
    return 0;
}

static void ws_stop(void *state)
{
    ws_mod *m = state;
    m->stopping = true;
    ws_conn_close_all(m);
}

static void ws_destroy(void *state)
{
    ws_mod *m = state;
    ws_conn_free_all(m);
    for (ws_port *p = m->mports, *n; p; p = n) {
        n = p->next;
        free(p);
    }
    free(m->proxies);
    free(m);
}

static const rdv_dep ws_requires[] = {
    { RDV_SVC_RELAY_WS, RDV_SVC_RELAY_WS_VERSION, true }, /* optional: load order only */
    { NULL, 0, false },
};

static const rdv_dep ws_provides[] = {
    { RDV_SVC_WS_SERVER, RDV_SVC_WS_SERVER_VERSION, false },
    { NULL, 0, false },
};

static const rdv_module ws_module = {
    RDV_MODULE_HEAD("websocket-transport", "1.0.0"),
    .description = "RFC 6455 WebSocket ports for rendezvous (21118) and relay (21119) clients",
    .settings = ws_settings,
    .config_size = sizeof(ws_cfg),
    .validate = ws_validate,
    .requires = ws_requires,
    .provides = ws_provides,
    .init = ws_init,
    .start = ws_start,
    .reconfigure = ws_reconfigure,
    .check = ws_check,
    .stop = ws_stop,
    .destroy = ws_destroy,
};
RDV_MODULE_EXPORT(ws_module)
