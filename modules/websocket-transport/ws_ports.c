/* ws_ports.c — the "ws-server" service (rdv/svc/ws_server.h): WebSocket
 * ports whose sides belong to the module that opened them, e.g. the Candy
 * server (candy.md §4). The connections are ordinary ones of this module
 * (ws_conn.c): one table, one max_connections, one buffer_total; a port
 * only says who owns its sides and under which limits. The relay port is
 * the same kind of port with the relay as owner and limits from our relay_*
 * settings. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

void ws_relay_limits(ws_mod *m)
{
    const ws_cfg *cfg = m->cfg;
    m->relay_port.lim = (rdv_ws_port_spec){
        .name = m->relay_port.name,
        .setting = "websocket-transport.relay_port",
        .first_ms = (uint64_t)cfg->relay_first_ms,
        .first_max = (uint64_t)cfg->relay_first_max,
        .max_frame = (uint64_t)cfg->relay_max_frame,
        .max_message = (uint64_t)cfg->relay_max_message,
        .nonbinary_first_closes = true, /* relay.md §3.3 */
    };
}

/* Limits a port can live with; one line naming the owner's setting. */
static int ws_port_check(ws_mod *m, const rdv_ws_port_spec *s)
{
    const char *what = s->setting ? s->setting : s->name ? s->name : "?";
    const char *why = NULL;
    if (!s->name || !*s->name || strlen(s->name) >= sizeof ((ws_port *)0)->name)
        why = "the port needs a name of 1 to 31 characters";
    else if (s->port < 0 || s->port > 65535)
        why = "the port number is out of range (0-65535)";
    else if (s->first_ms < 100 || s->first_ms > 3600000)
        why = "first_ms must be 100 ms to 1 hour";
    else if (s->idle_ms && (s->idle_ms < 1000 || s->idle_ms > 86400000))
        why = "idle_ms must be 0 (never) or 1 s to 1 day";
    else if (!s->first_max || !s->max_frame || s->first_max > s->max_message || s->max_frame > s->max_message)
        why = "the sizes need 0 < first_max <= max_message and 0 < max_frame <= max_message";
    else if (s->max_message > (uint64_t)m->cfg->buffer_total)
        why = "its largest message is over websocket-transport.buffer_total (conf.d/50-websocket-transport.conf): "
              "raise buffer_total or lower the message size";
    if (!why)
        return 0;
    RDV_ERR(m->core, "%s: WebSocket port refused: %s", what, why);
    return -EINVAL;
}

static void ws_port_set_limits(ws_port *p, const rdv_ws_port_spec *s)
{
    p->lim = *s;
    p->lim.name = p->name;
    p->lim.setting = p->setting; /* the owner's strings need not outlive the call */
    p->lim.bind = NULL;
}

static rdv_ws_port *ws_port_open(void *tp, const rdv_ws_port_spec *spec, const rdv_ws_side_api *api, void *self)
{
    ws_mod *m = tp;
    if (!spec || !api || !api->side_open || !api->side_message || !api->side_closed) {
        RDV_ERR(m->core, "ws-server: port_open needs a spec and side_open, side_message and side_closed");
        return NULL;
    }
    if (m->stopping || ws_port_check(m, spec) < 0)
        return NULL;
    ws_port *p = calloc(1, sizeof *p);
    if (!p) {
        RDV_ERR(m->core, "%s: no memory for its WebSocket port", spec->setting ? spec->setting : spec->name);
        return NULL;
    }
    *p = (ws_port){ .m = m, .kind = WS_PORT_MODULE, .owner = api, .self = self };
    snprintf(p->name, sizeof p->name, "%s", spec->name);
    snprintf(p->setting, sizeof p->setting, "%s", spec->setting ? spec->setting : spec->name);
    ws_port_set_limits(p, spec);
    p->handoff = m->st.module_handoff, p->refused = m->st.module_refused;
    if (ws_listen(m, p, p->name, spec->port, spec->bind) < 0) { /* the core logged address, port and reason */
        free(p);
        return NULL;
    }
    p->next = m->mports, m->mports = p;
    return p;
}

static int ws_port_limits(void *tp, rdv_ws_port *p, const rdv_ws_port_spec *spec)
{
    ws_mod *m = tp;
    if (!p || !spec || ws_port_check(m, spec) < 0)
        return -EINVAL;
    ws_port_set_limits(p, spec);
    return 0;
}

static int ws_port_number(void *tp, const rdv_ws_port *p)
{
    ws_mod *m = tp;
    return p && p->l ? m->core->api->listener_port(p->l) : 0;
}

static void ws_port_close(void *tp, rdv_ws_port *p)
{
    ws_mod *m = tp;
    if (!p || p->closed)
        return;
    p->closed = true;
    p->owner = NULL; /* from here on nothing reaches the owner */
    ws_conn_close_port(m, p);
}

size_t ws_module_sides(const ws_mod *m)
{
    size_t n = 0;
    for (const ws_port *p = m->mports; p; p = p->next)
        n += p->nsides;
    return n;
}

const rdv_ws_server_api ws_server_api = {
    .port_open = ws_port_open,
    .port_limits = ws_port_limits,
    .port_number = ws_port_number,
    .port_close = ws_port_close,
};
