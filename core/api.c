/* core/api.c — the rdv_core_api table: thin adapters from a module's handle
 * to the core's internals. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "server.h"

rdv_mod *rdv_mod_of(rdv_core *c) { return (rdv_mod *)c; } /* handle is the first member */

static rdv_server *srv_of(rdv_core *c) { return rdv_mod_of(c)->srv; }
static const char *name_of(rdv_core *c)
{
    rdv_mod *m = rdv_mod_of(c);
    return m->desc ? m->desc->name : "core";
}

static void api_vlog(rdv_core *c, rdv_log_level lvl, const char *fmt, va_list ap)
{
    rdv_log_write(name_of(c), lvl, fmt, ap);
}

static void api_log(rdv_core *c, rdv_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rdv_log_write(name_of(c), lvl, fmt, ap);
    va_end(ap);
}

static bool api_log_enabled(rdv_core *c, rdv_log_level lvl)
{
    (void)c;
    return rdv_log_enabled_at(lvl);
}

static bool api_log_ratelimit(rdv_core *c, rdv_ratelimit *rl) { return rdv_ratelimit_ok(rl, rdv_now_ms(srv_of(c))); }
static uint64_t api_now_ms(rdv_core *c) { return rdv_now_ms(srv_of(c)); }

static uint64_t api_wall_us(rdv_core *c)
{
    (void)c;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

static rdv_timer *api_timer_new(rdv_core *c, void (*cb)(void *), void *ud) { return rdv_timer_new(srv_of(c), cb, ud); }

static rdv_io *api_io_new(rdv_core *c, int fd, unsigned ev, void (*cb)(void *, int, unsigned), void *ud)
{
    return rdv_io_new(srv_of(c), fd, ev, cb, ud);
}

static rdv_async *api_async_new(rdv_core *c, void (*cb)(void *), void *ud) { return rdv_async_new(srv_of(c), cb, ud); }

static rdv_listener *api_listener_find(rdv_core *c, const char *name, rdv_transport tr)
{
    for (rdv_listener *l = srv_of(c)->listeners; l; l = l->next)
        if (strcmp(l->name, name) == 0 && (l->transport & tr))
            return l;
    return NULL;
}

static rdv_listener *api_listen(rdv_core *c, const rdv_listen_spec *spec)
{
    rdv_listener *l = NULL;
    return rdv_listener_open(srv_of(c), spec, rdv_mod_of(c), &l) < 0 ? NULL : l;
}

static const char *api_listener_name(const rdv_listener *l) { return l->name; }
static int api_listener_port(const rdv_listener *l) { return l->port; }

/* Pack into the server's scratch buffer (one loop thread). */
static int pack(rdv_server *s, const void *msg, size_t *n)
{
    *n = rdv_msg_pack(msg, s->pack_buf, s->pack_cap);
    return *n == RDV_MSG_TOO_BIG ? -EMSGSIZE : 0;
}

static int api_send_udp_raw(rdv_core *c, rdv_listener *via, const rdv_addr *to, const uint8_t *p, size_t n)
{
    return rdv_udp_send(srv_of(c), via, to, p, n);
}

static int api_send_udp(rdv_core *c, rdv_listener *via, const rdv_addr *to, const void *msg)
{
    rdv_server *s = srv_of(c);
    size_t n;
    int r = pack(s, msg, &n);
    return r < 0 ? r : rdv_udp_send(s, via, to, s->pack_buf, n);
}

static int api_send_payload(rdv_core *c, rdv_conn_id id, const uint8_t *p, size_t n)
{
    rdv_server *s = srv_of(c);
    rdv_conn *cn = rdv_conn_get(s, id);
    return cn ? rdv_conn_send_payload(s, cn, p, n) : -ENOTCONN;
}

static int api_send(rdv_core *c, rdv_conn_id id, const void *msg)
{
    rdv_server *s = srv_of(c);
    rdv_conn *cn = rdv_conn_get(s, id);
    if (!cn)
        return -ENOTCONN;
    size_t n;
    int r = pack(s, msg, &n);
    return r < 0 ? r : rdv_conn_send_payload(s, cn, s->pack_buf, n);
}

static int api_send_bytes(rdv_core *c, rdv_conn_id id, const uint8_t *p, size_t n)
{
    rdv_server *s = srv_of(c);
    rdv_conn *cn = rdv_conn_get(s, id);
    return cn ? rdv_conn_send_bytes(s, cn, p, n) : -ENOTCONN;
}

#define WITH_CONN(c, id, expr)                      \
    rdv_server *s = srv_of(c);                      \
    rdv_conn *cn = rdv_conn_get(s, id);             \
    if (!cn)                                        \
        return -ENOTCONN;                           \
    return (expr)

static int api_conn_close(rdv_core *c, rdv_conn_id id, bool flush)
{
    WITH_CONN(c, id, (rdv_conn_close(s, cn, RDV_CLOSE_LOCAL, flush), 0));
}
static int api_conn_info(rdv_core *c, rdv_conn_id id, rdv_conn_info *out)
{
    WITH_CONN(c, id, (rdv_conn_fill_info(cn, out), 0));
}
static int api_conn_set_key(rdv_core *c, rdv_conn_id id, const uint8_t key[32])
{
    WITH_CONN(c, id, rdv_conn_set_key(cn, key));
}
static int api_conn_set_idle(rdv_core *c, rdv_conn_id id, uint64_t ms) { WITH_CONN(c, id, rdv_conn_set_idle(s, cn, ms)); }
static int api_conn_set_codec(rdv_core *c, rdv_conn_id id, const rdv_codec *codec, void *ud)
{
    WITH_CONN(c, id, rdv_conn_set_codec(cn, codec, ud));
}
static int api_conn_dispatch(rdv_core *c, rdv_conn_id id, const uint8_t *p, size_t n)
{
    WITH_CONN(c, id, rdv_conn_dispatch(s, cn, p, n));
}
static int api_conn_set_peer(rdv_core *c, rdv_conn_id id, const rdv_addr *peer)
{
    WITH_CONN(c, id, rdv_conn_set_peer(cn, peer));
}
static int api_conn_pause(rdv_core *c, rdv_conn_id id, bool paused) { WITH_CONN(c, id, rdv_conn_pause(s, cn, paused)); }
static int api_conn_detach(rdv_core *c, rdv_conn_id id, int *fd, uint8_t *buf, size_t *len)
{
    WITH_CONN(c, id, rdv_conn_detach(s, cn, fd, buf, len));
}

static int api_service_publish(rdv_core *c, const char *name, uint32_t ver, const void *vt, void *self)
{
    return rdv_service_publish(srv_of(c), rdv_mod_of(c), name, ver, vt, self);
}
static const void *api_service_get(rdv_core *c, const char *name, uint32_t minver, void **self)
{
    return rdv_service_get(srv_of(c), name, minver, self);
}
static int api_hook_add(rdv_core *c, const char *name, int prio, rdv_hook_fn fn, void *ud)
{
    return rdv_hook_add(srv_of(c), rdv_mod_of(c), name, prio, fn, ud);
}
static void api_hook_run(rdv_core *c, const char *name, const void *arg) { rdv_hook_run(srv_of(c), name, arg); }

static uint64_t *api_counter(rdv_core *c, const char *name, const char *help)
{
    return rdv_stat_counter(srv_of(c), name_of(c), name, help);
}
static int api_gauge(rdv_core *c, const char *name, uint64_t (*fn)(void *), void *ud, const char *help)
{
    return rdv_stat_gauge(srv_of(c), name_of(c), name, fn, ud, help);
}
static void api_stats_each(rdv_core *c, void (*fn)(void *, const rdv_stat_view *), void *ud)
{
    rdv_stats_each(srv_of(c), fn, ud);
}
static int api_admin_command(rdv_core *c, const char *name, const char *usage, rdv_admin_fn fn, void *ud)
{
    return rdv_admin_register(srv_of(c), rdv_mod_of(c), name, usage, fn, ud);
}
static char *api_admin_exec(rdv_core *c, const char *line)
{
    char *copy = strdup(line);
    if (!copy)
        return NULL;
    rdv_buf b = { .limit = 1 << 20 };
    rdv_admin_exec(srv_of(c), copy, &b);
    free(copy);
    if (!b.p)
        b.p = calloc(1, 1);
    return b.p;
}

static const char *api_module_name(rdv_core *c) { return name_of(c); }

static int api_core_int(rdv_core *c, const char *name, int64_t *out)
{
    rdv_server *s = srv_of(c);
    const rdv_core_cfg *cfg = s->cfg_pending ? s->cfg_pending : &s->cfg;
    if (strcmp(name, "max_frame") == 0)
        *out = cfg->max_frame;
    else if (strcmp(name, "idle_ms") == 0)
        *out = cfg->idle_ms;
    else if (strcmp(name, "max_connections") == 0)
        *out = cfg->max_connections;
    else if (strcmp(name, "write_queue_max") == 0)
        *out = cfg->write_queue_max;
    else
        return -ENOENT;
    return 0;
}

const rdv_core_api rdv_api_table = {
    .size = sizeof(rdv_core_api),
    .abi_major = RDV_ABI_MAJOR,
    .abi_minor = RDV_ABI_MINOR,
    .log = api_log,
    .vlog = api_vlog,
    .log_enabled = api_log_enabled,
    .log_ratelimit = api_log_ratelimit,
    .now_ms = api_now_ms,
    .wall_us = api_wall_us,
    .timer_new = api_timer_new,
    .timer_start = rdv_timer_start,
    .timer_stop = rdv_timer_stop,
    .timer_free = rdv_timer_free,
    .io_new = api_io_new,
    .io_set = rdv_io_set,
    .io_free = rdv_io_free,
    .async_new = api_async_new,
    .async_send = rdv_async_send,
    .async_free = rdv_async_free,
    .listener_find = api_listener_find,
    .listen = api_listen,
    .listener_name = api_listener_name,
    .listener_port = api_listener_port,
    .send_udp = api_send_udp,
    .send_udp_raw = api_send_udp_raw,
    .send = api_send,
    .send_payload = api_send_payload,
    .send_bytes = api_send_bytes,
    .conn_close = api_conn_close,
    .conn_info = api_conn_info,
    .conn_set_key = api_conn_set_key,
    .conn_set_idle = api_conn_set_idle,
    .conn_set_codec = api_conn_set_codec,
    .conn_dispatch = api_conn_dispatch,
    .conn_pause = api_conn_pause,
    .conn_detach = api_conn_detach,
    .service_publish = api_service_publish,
    .service_get = api_service_get,
    .hook_add = api_hook_add,
    .hook_run = api_hook_run,
    .counter = api_counter,
    .gauge = api_gauge,
    .admin_command = api_admin_command,
    .out = rdv_buf_printf,
    .admin_exec = api_admin_exec,
    .module_name = api_module_name,
    .core_int = api_core_int,
    .conn_set_peer = api_conn_set_peer,
    .stats_each = api_stats_each,
};
