/* relay_ws.c — WebSocket sides (relay.md §4.3, §9). websocket-transport
 * owns the relay WebSocket port, the upgrade and RFC 6455 framing, and
 * hands each side over through the "relay-ws" service we publish
 * (rdv/svc/relay_ws.h): its first binary message goes through the same decision
 * table as a TCP first frame; afterwards the side is a message endpoint
 * (relay_ep) of a message-mode pair.
 *
 * A side refused at side_open is never closed by us (the transport closes
 * it silently); one we own is ended with ops->close, and side_closed tells
 * us when the transport has dropped it. Messages that race a pause while
 * the side waits for its partner are held (bounded) and delivered first
 * after pairing (§4.4). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"
#include "rdv/svc/relay_ws.h"

typedef struct relay_ws_msg {
    struct relay_ws_msg *next;
    size_t n;
    uint8_t p[];
} relay_ws_msg;

struct relay_ep_ws {
    relay_ep base;
    UT_hash_handle hh;       /* r->ws_sides, by connection id */
    rdv_conn_id id;
    const rdv_relay_ws_side_ops *ops;
    void *tp;
    relay_ws_msg *held, *held_tail;
    size_t held_bytes;
    bool opening;            /* inside side_open: a refusal is its answer */
    bool refused;            /* destroyed while opening */
    bool gone;               /* the transport dropped it: never call ops again */
    bool resume_queued, close_queued;
};

/* Calls into the transport can call us back (a send that overflows closes
 * the side at once; a resume delivers what it had read). Neither may run
 * while a pair is on our stack, so a resume and a close reported during
 * a send are done from a zero-delay timer, found again by id. */
enum { RELAY_WS_RESUME = 1, RELAY_WS_CLOSED = 2 };

static relay_ep_ws *relay_ws_of(relay_ep *ep) { return (relay_ep_ws *)ep; }

static relay_ep_ws *relay_ws_find(relay *r, rdv_conn_id id)
{
    relay_ep_ws *w = NULL;
    HASH_FIND(hh, r->ws_sides, &id, sizeof id, w);
    return w;
}

/* Held messages count with the early bytes of TCP sides (relay.early_total). */
static void relay_ws_drop_held(relay_ep_ws *w)
{
    for (relay_ws_msg *m = w->held, *n; m; m = n) {
        n = m->next;
        free(m);
    }
    w->base.r->early_bytes -= w->held_bytes;
    w->held = w->held_tail = NULL;
    w->held_bytes = 0;
}

static void relay_ws_defer(relay *r, relay_ep_ws *w, int kind)
{
    bool *flag = kind == RELAY_WS_RESUME ? &w->resume_queued : &w->close_queued;
    if (*flag)
        return;
    if (r->nws_defer == r->ws_defer_cap) {
        size_t cap = r->ws_defer_cap ? 2 * r->ws_defer_cap : 16;
        relay_ws_job *nj = realloc(r->ws_defer, cap * sizeof *nj);
        if (!nj)
            return; /* a resume is retried by the next set_reading; a close by the stall/idle timers */
        r->ws_defer = nj, r->ws_defer_cap = cap;
    }
    *flag = true;
    r->ws_defer[r->nws_defer++] = (relay_ws_job){ .id = w->id, .kind = kind };
    r->core->api->timer_start(r->ws_timer, 0, 0);
}

/* ------------------------------------------------------------------ endpoint ops */
static size_t relay_ws_queued(const relay_ep *ep)
{
    const relay_ep_ws *w = (const relay_ep_ws *)ep;
    rdv_conn_info info;
    rdv_core *core = ep->r->core;
    return !w->gone && core->api->conn_info(core, w->id, &info) == 0 ? info.wqueue : 0;
}

/* What we sent and the core has not written yet counts against
 * relay.message_total. The core tells us only when the queue is empty
 * (side_drain), so between looks (each send, drain and tick) the charge
 * is what was queued at the last look: never less than the truth. */
static void relay_ws_sync(relay_ep *ep) { relay_ep_hold(ep, relay_ws_queued(ep), false); }

static int relay_ws_send(relay_ep *ep, const uint8_t *p, size_t n)
{
    relay_ep_ws *w = relay_ws_of(ep);
    relay *r = ep->r;
    if (w->gone)
        return -ENOTCONN;
    size_t q = relay_ws_queued(ep);
    relay_ep_hold(ep, q, false);
    if (!relay_ep_fits(ep, q + n))
        return -EDQUOT; /* the pair ends (RELAY_END_MSG_TOTAL) */
    r->ws_depth++;
    int e = w->ops->send(w->tp, w->id, p, n);
    r->ws_depth--;
    relay_ws_sync(ep);
    return e;
}

/* Pausing is immediate; resuming delivers held messages first, in order,
 * then asks the transport to read again from the timer. */
static int relay_ws_set_reading(relay_ep *ep, bool on)
{
    relay_ep_ws *w = relay_ws_of(ep);
    ep->reading = on;
    while (on && ep->reading && w->held) {
        relay_ws_msg *m = w->held;
        w->held = m->next;
        if (!w->held)
            w->held_tail = NULL;
        w->held_bytes -= m->n;
        ep->r->early_bytes -= m->n;
        int rc = relay_msg_input(ep, m->p, m->n);
        if (rc == RELAY_EP_KEEP) { /* still waiting: put it back */
            m->next = w->held;
            w->held = m;
            if (!w->held_tail)
                w->held_tail = m;
            w->held_bytes += m->n;
            ep->r->early_bytes += m->n;
            break;
        }
        free(m);
        if (rc == RELAY_EP_GONE)
            return RELAY_EP_GONE;
    }
    if (!w->gone) {
        if (!ep->reading)
            w->ops->pause(w->tp, w->id, true);
        else
            relay_ws_defer(ep->r, w, RELAY_WS_RESUME);
    }
    return ep->reading ? RELAY_EP_GO : RELAY_EP_STOP;
}

static void relay_ws_destroy(relay_ep *ep)
{
    relay_ep_ws *w = relay_ws_of(ep);
    relay *r = ep->r;
    relay_ep_hold(ep, 0, false); /* the core's queue is the core's from now */
    HASH_DEL(r->ws_sides, w);
    r->nws--;
    relay_ws_drop_held(w);
    if (w->opening) { /* side_open answers RDV_CLOSE and frees it */
        w->refused = true;
        return;
    }
    if (!w->gone)
        w->ops->close(w->tp, w->id, 0); /* relay.md §5: nothing more is written */
    free(w);
}

static const relay_ep_ops relay_ws_ep_ops = {
    .name = "websocket",
    .send = relay_ws_send,
    .queued = relay_ws_queued,
    .set_reading = relay_ws_set_reading,
    .sync = relay_ws_sync,
    .destroy = relay_ws_destroy,
};

/* ------------------------------------------------------------------ the service */
static bool relay_ws_blocked(relay *r, const rdv_addr *a)
{
    char ip[INET6_ADDRSTRLEN];
    return relay_set_has(&r->block, relay_ip_text(a, ip, sizeof ip));
}

/* A side we cannot hold is refused at side_open (the transport closes it);
 * its client may try again. */
static void relay_ws_oom(relay *r, const rdv_addr *peer)
{
    char a[INET6_ADDRSTRLEN];
    (*r->st.rej_internal)++;
    (*r->st.oom)++;
    RDV_LOG_RL(r->core, RDV_LOG_WARN, "out of memory: WebSocket side from %s refused",
               relay_ip_text(peer, a, sizeof a));
}

static int relay_ws_side_open(void *self, rdv_conn_id id, const rdv_addr *peer, const rdv_addr *tcp_peer,
                              const uint8_t *first, size_t n, const rdv_relay_ws_side_ops *ops, void *tp)
{
    relay *r = self;
    (*r->st.ws_sides)++;
    if (r->stopping)
        return RDV_CLOSE;
    /* The socket's address was checked at accept (relay_access); a proxy's
     * X-Real-IP names the client the lists are about (§9). */
    if (relay_ws_blocked(r, tcp_peer) || relay_ws_blocked(r, peer)) {
        (*r->st.rej_blocked)++;
        return RDV_CLOSE;
    }
    relay_ep_ws *w = calloc(1, sizeof *w);
    if (w) {
        w->base.ops = &relay_ws_ep_ops;
        w->base.r = r;
        w->base.reading = true; /* the transport delivers until told otherwise */
        w->id = id, w->ops = ops, w->tp = tp;
        HASH_ADD(hh, r->ws_sides, id, sizeof w->id, w);
    }
    if (!w || !w->hh.tbl) { /* no memory, or uthash rolled the add back: refused, nothing held */
        free(w);
        relay_ws_oom(r, peer);
        return RDV_CLOSE;
    }
    r->nws++;
    w->opening = true;
    int rc = relay_offer_ep(r, &w->base, peer, first, n);
    w->opening = false;
    if (rc == RDV_OK && !w->refused)
        return RDV_OK;
    if (!w->refused) { /* refused by the decision table: still linked */
        HASH_DEL(r->ws_sides, w);
        r->nws--;
        relay_ws_drop_held(w);
    }
    free(w);
    return RDV_CLOSE;
}

static int relay_ws_side_message(void *self, rdv_conn_id id, const uint8_t *p, size_t n)
{
    relay *r = self;
    relay_ep_ws *w = relay_ws_find(r, id);
    if (!w)
        return RDV_CLOSE;
    int rc = relay_msg_input(&w->base, p, n);
    if (rc != RELAY_EP_KEEP || n == 0)
        return RDV_OK; /* GONE: already closed through ops->close */
    if (w->held_bytes + n > (size_t)r->cfg->message_queue || r->early_bytes + n > (uint64_t)r->cfg->early_total) {
        (*r->st.rej_early_full)++;
        return RDV_CLOSE; /* side_closed drops the waiting entry */
    }
    relay_ws_msg *m = malloc(sizeof *m + n);
    if (!m)
        return RDV_CLOSE;
    m->next = NULL, m->n = n;
    memcpy(m->p, p, n);
    if (w->held_tail)
        w->held_tail->next = m;
    else
        w->held = m;
    w->held_tail = m;
    w->held_bytes += n;
    r->early_bytes += n;
    if (w->base.reading) /* still waiting: the rest stays in the kernel until the partner comes */
        (void)relay_ws_set_reading(&w->base, false);
    return RDV_OK;
}

static void relay_ws_side_activity(void *self, rdv_conn_id id)
{
    relay_ep_ws *w = relay_ws_find(self, id);
    if (w && w->base.pair)
        relay_msg_input(&w->base, NULL, 0);
}

static void relay_ws_side_drain(void *self, rdv_conn_id id)
{
    relay_ep_ws *w = relay_ws_find(self, id);
    if (w) {
        relay_ws_sync(&w->base);
        relay_msg_drained(&w->base);
    }
}

static void relay_ws_side_closed(void *self, rdv_conn_id id)
{
    relay *r = self;
    relay_ep_ws *w = relay_ws_find(r, id);
    if (!w)
        return; /* ended by us already */
    w->gone = true;
    if (r->ws_depth) /* inside our own send: the caller's pair is on the stack */
        relay_ws_defer(r, w, RELAY_WS_CLOSED);
    else
        relay_msg_closed(&w->base, RELAY_END_EOF);
}

/* The zero-delay timer: deferred resumes and closes, each found by id
 * (it may be gone meanwhile). Jobs queued while running wait for the next
 * round. */
void relay_ws_timer_cb(void *ud)
{
    relay *r = ud;
    size_t n = r->nws_defer;
    relay_ws_job *jobs = r->ws_defer;
    r->ws_defer = NULL, r->nws_defer = 0, r->ws_defer_cap = 0;
    for (size_t i = 0; i < n; i++) {
        relay_ep_ws *w = relay_ws_find(r, jobs[i].id);
        if (!w)
            continue;
        if (jobs[i].kind == RELAY_WS_CLOSED) {
            w->close_queued = false;
            relay_msg_closed(&w->base, RELAY_END_EOF);
        } else {
            w->resume_queued = false;
            if (w->base.reading && !w->gone)
                w->ops->pause(w->tp, w->id, false); /* may deliver messages now */
        }
    }
    free(jobs);
}

const rdv_relay_ws_api relay_ws_api = {
    .side_open = relay_ws_side_open,
    .side_message = relay_ws_side_message,
    .side_activity = relay_ws_side_activity,
    .side_drain = relay_ws_side_drain,
    .side_closed = relay_ws_side_closed,
};

int relay_ws_publish(relay *r)
{
    return r->core->api->service_publish(r->core, RDV_SVC_RELAY_WS, RDV_SVC_RELAY_WS_VERSION, &relay_ws_api, r);
}

/* ACCESS phase, for accepted connections of the relay WebSocket port: the
 * blocklist applies before any WebSocket handshake (relay.md §2). */
int relay_access(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    relay *r = state;
    if (msg || ctx->transport != RDV_TR_TCP || !ctx->listener_name ||
        strcmp(ctx->listener_name, r->cfg->ws_listener) != 0 || !relay_ws_blocked(r, ctx->peer))
        return RDV_OK;
    (*r->st.rej_blocked)++;
    return RDV_CLOSE;
}

void relay_ws_close_all(relay *r)
{
    free(r->ws_defer);
    r->ws_defer = NULL, r->nws_defer = r->ws_defer_cap = 0;
    /* Each close may end a pair and with it another side: restart each time. */
    while (r->ws_sides) {
        relay_ep_ws *w = r->ws_sides;
        if (w->base.pair)
            relay_pair_end(r, w->base.pair, RELAY_END_SHUTDOWN);
        else if (w->base.waiter)
            relay_waiter_free(r, w->base.waiter, true);
        else
            relay_ws_destroy(&w->base);
    }
}
