/* core/dispatch.c — the dispatch table: ACCESS phase, then the chain of
 * handlers for the message's oneof case (ARCHITECTURE.md §3).
 *
 * table[tag] is a chain of (module, handler) in module load order. A message
 * is unpacked once into the server's arena (one loop thread, so one arena),
 * which is reset before the next message. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rdv/wire.h"
#include "server.h"

static const char *tr_name(unsigned tr)
{
    switch (tr) {
    case RDV_TR_UDP: return "UDP";
    case RDV_TR_TCP: return "TCP";
    case RDV_TR_WS: return "WebSocket";
    default: return "several transports";
    }
}

static bool listeners_overlap(const char *a, const char *b)
{
    return !a || !b || strcmp(a, b) == 0;
}

static int register_handler(rdv_server *s, rdv_mod *m, const rdv_handler *h, char *err, size_t errlen)
{
    if (h->tag < 0 || h->tag > RDV_TAG_MAX || !(h->transports & RDV_TR_ANY)) {
        snprintf(err, errlen, "module '%s': handler for tag %d has an invalid tag or no transport",
                 m->desc->name, h->tag);
        return -EINVAL;
    }
    rdv_hentry **pp = &s->table[h->tag];
    for (; *pp; pp = &(*pp)->next) {
        const rdv_handler *o = (*pp)->h;
        unsigned both = o->transports & h->transports;
        if (both && listeners_overlap(o->listener, h->listener) &&
            !((o->flags & RDV_HF_SHARED) && (h->flags & RDV_HF_SHARED))) {
            snprintf(err, errlen,
                     "message %s (tag %d) on %s is claimed by both modules '%s' and '%s'; "
                     "remove one of them from core.modules",
                     rdv_msg_tag_name(h->tag), h->tag, tr_name(both), (*pp)->mod->desc->name, m->desc->name);
            return -EEXIST;
        }
    }
    rdv_hentry *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->h = h, e->mod = m;
    *pp = e;
    return 0;
}

int rdv_dispatch_register(rdv_server *s, rdv_mod *m, char *err, size_t errlen)
{
    for (const rdv_handler *h = m->desc->handlers; h && h->fn; h++) {
        int r = register_handler(s, m, h, err, errlen);
        if (r < 0)
            return r;
    }
    if (m->desc->access) {
        rdv_access_entry *na = realloc(s->access, (s->naccess + 1) * sizeof *na);
        if (!na)
            return -ENOMEM;
        s->access = na;
        size_t i = s->naccess++;
        while (i > 0 && s->access[i - 1].prio > m->desc->access_priority) {
            s->access[i] = s->access[i - 1];
            i--;
        }
        s->access[i] = (rdv_access_entry){ m, m->desc->access_priority };
    }
    return 0;
}

static int run_access(rdv_server *s, const rdv_msg_ctx *ctx, const void *msg)
{
    for (size_t i = 0; i < s->naccess; i++) {
        rdv_mod *m = s->access[i].mod;
        int r = m->desc->access(m->state, ctx, msg);
        if (r == RDV_DECLINED || r == RDV_CLOSE)
            return r;
    }
    return RDV_OK;
}

int rdv_access_conn(rdv_server *s, rdv_transport tr, rdv_listener *l, rdv_conn_id id, const rdv_addr *peer)
{
    if (!s->naccess)
        return RDV_OK;
    rdv_msg_ctx ctx = { .transport = tr, .listener = l, .listener_name = l->name, .conn = id, .peer = peer };
    return run_access(s, &ctx, NULL) == RDV_OK ? RDV_OK : RDV_CLOSE;
}

static void count_bad(rdv_server *s, rdv_transport tr, const rdv_addr *peer, const char *lname, size_t n)
{
    (*(tr == RDV_TR_UDP ? s->st.udp_undecodable : s->st.tcp_undecodable))++;
    char a[RDV_ADDR_STRLEN];
    RDV_LOG_RL(&s->core_mod.handle, RDV_LOG_NOTICE, "%s %s: undecodable message of %zu bytes from %s%s",
               tr_name(tr), lname, n, rdv_addr_str(peer, a, sizeof a),
               tr == RDV_TR_UDP ? "; dropped" : "; closing");
}

int rdv_dispatch(rdv_server *s, rdv_transport tr, rdv_listener *l, const char *lname, rdv_conn_id conn,
                 const rdv_addr *peer, const uint8_t *p, size_t n)
{
    rdv_arena_reset(&s->arena);
    rdv_msg *msg = rdv_msg_unpack(&s->arena, p, n);
    if (!msg) {
        count_bad(s, tr, peer, lname, n);
        return RDV_CLOSE;
    }
    int tag = (int)msg->union_case;
    if (tag < 0 || tag > RDV_TAG_MAX)
        tag = RDV_TAG_MAX; /* unreachable with protobuf-c, but never index out of range */
    rdv_msg_ctx ctx = { .transport = tr, .listener = l, .listener_name = lname, .conn = conn, .peer = peer,
                        .raw = p, .raw_len = n, .tag = tag };
    int r = s->naccess ? run_access(s, &ctx, msg) : RDV_OK;
    if (r != RDV_OK) {
        (*s->st.msg_dropped_access)++;
        return r == RDV_CLOSE ? RDV_CLOSE : RDV_OK;
    }
    for (rdv_hentry *e = s->table[tag]; e; e = e->next) {
        const rdv_handler *h = e->h;
        if (!(h->transports & tr) || (h->listener && strcmp(h->listener, lname) != 0))
            continue;
        r = h->fn(e->mod->state, &ctx, msg);
        if (r == RDV_DECLINED)
            continue;
        if (r < 0) {
            (*s->st.handler_errors)++;
            e->mod->handler_errors++;
            RDV_LOG_RL(&e->mod->handle, RDV_LOG_WARN, "handler for %s failed: %s", rdv_msg_tag_name(tag),
                       strerror(-r));
            return RDV_CLOSE;
        }
        return r == RDV_CLOSE ? RDV_CLOSE : RDV_OK;
    }
    if (tr == RDV_TR_UDP)
        (*(tag ? s->st.udp_unhandled : s->st.udp_empty))++;
    return RDV_DECLINED;
}

void rdv_dispatch_free(rdv_server *s)
{
    for (int t = 0; t <= RDV_TAG_MAX; t++) {
        for (rdv_hentry *e = s->table[t], *n; e; e = n) {
            n = e->next;
            free(e);
        }
        s->table[t] = NULL;
    }
    free(s->access);
    s->access = NULL;
    s->naccess = 0;
}
