/* relay_msg.c — message mode (relay.md §4.3): pairs with a message side
 * (WebSocket) move whole messages between two endpoints.
 *
 * Each message: activity for the idle timer; empty ones are not forwarded;
 * the rest are sent to the partner, accounted on the buckets (which may go
 * negative: the pair then pauses until the refill timer repays the deficit,
 * §6.2). Back-pressure (§4.6): when the partner's queue reaches
 * relay.message_queue the source stops reading until it drains to half.
 *
 * Memory: each pair is bounded (message_max, message_queue), and their sum
 * by relay.message_total: every buffer an endpoint keeps is charged to
 * r->msg_bytes (relay_ep_hold); the side whose growth would pass the total
 * ends its pair. A TCP side's incomplete frame has message_timeout_ms to
 * complete, so a client cannot hold its share for ever by dribbling. */
#include <errno.h>
#include <stdlib.h>

#include "relay.h"

/* Reading wanted for side i: not throttled, partner keeping up, not ending. */
static bool relay_msg_update(relay *r, relay_pair *p)
{
    (void)r;
    for (int i = 0; i < 2; i++) {
        relay_ep *ep = p->u.msg.ep[i];
        bool want = !p->throttled && !p->u.msg.bp[i] && p->u.msg.eof_side < 0;
        if (ep->reading != want && ep->ops->set_reading(ep, want) == RELAY_EP_GONE)
            return false;
    }
    return true;
}

bool relay_msg_resume(relay *r, relay_pair *p) { return relay_msg_update(r, p); }

bool relay_msg_pending(const relay_pair *p, int side)
{
    const relay_ep *dst = p->u.msg.ep[!side];
    return dst->ops->queued(dst) > 0;
}

bool relay_ep_fits(const relay_ep *ep, size_t n)
{
    const relay *r = ep->r;
    return n <= ep->held || r->msg_bytes - ep->held + n <= (uint64_t)r->cfg->message_total;
}

bool relay_ep_hold(relay_ep *ep, size_t n, bool check)
{
    if (check && !relay_ep_fits(ep, n))
        return false;
    ep->r->msg_bytes = ep->r->msg_bytes - ep->held + n;
    ep->held = n;
    return true;
}

bool relay_msg_tick(relay *r, relay_pair *p, uint64_t now)
{
    uint64_t limit = (uint64_t)r->cfg->message_timeout_ms;
    for (int i = 0; i < 2; i++) {
        relay_ep *ep = p->u.msg.ep[i];
        if (ep->ops->sync)
            ep->ops->sync(ep);
        /* relay.md §4.6 "no write progress": a queue that went down was
         * written to, even if it never drained to empty. */
        size_t q = ep->ops->queued(ep);
        if (q < p->u.msg.qseen[i])
            p->out_ms[!i] = now; /* side i was written to */
        p->u.msg.qseen[i] = q;
        uint64_t since = ep->ops->partial_since ? ep->ops->partial_since(ep) : 0;
        if (since && now - since >= limit) {
            char a[RDV_ADDR_STRLEN];
            RDV_LOG_RL(r->core, RDV_LOG_INFO,
                       "pair with %s ended: a frame from it was incomplete for %lld ms (relay.message_timeout_ms)",
                       rdv_addr_str(&p->addr[i], a, sizeof a), (long long)limit);
            relay_pair_end(r, p, RELAY_END_MSG_TIMEOUT);
            return false;
        }
    }
    return true;
}

int relay_msg_input(relay_ep *ep, const uint8_t *msg, size_t n)
{
    relay *r = ep->r;
    relay_pair *p = ep->pair;
    if (!p) /* a message that raced the pause while waiting: kept for the partner */
        return RELAY_EP_KEEP;
    uint64_t now = r->core->api->now_ms(r->core);
    if (n == 0) { /* not forwarded, but the pair is alive */
        p->last_rx_ms = now;
        return RELAY_EP_GO;
    }
    relay_ep *dst = p->u.msg.ep[!ep->side];
    int e = dst->ops->send(dst, msg, n);
    if (e < 0) {
        relay_pair_end(r, p, e == -EDQUOT ? RELAY_END_MSG_TOTAL : RELAY_END_ERROR);
        return RELAY_EP_GONE;
    }
    /* Counted as progress even behind a queue: a WebSocket side's queue
     * is seen going down only once a tick, so a sender a little faster
     * than a slow reader would otherwise look stalled while the queue
     * grows towards message_queue. At that bound the sender pauses, and a
     * reader that stopped is then caught. */
    p->out_ms[ep->side] = now;
    if (!relay_bw_account(r, p, ep->side, n))
        return RELAY_EP_GONE;
    if (dst->ops->queued(dst) >= (size_t)r->cfg->message_queue)
        p->u.msg.bp[ep->side] = true;
    if (!relay_bw_ready(r, p))
        relay_throttle(r, p);
    if (!relay_msg_update(r, p))
        return RELAY_EP_GONE;
    return ep->reading ? RELAY_EP_GO : RELAY_EP_STOP;
}

int relay_msg_drained(relay_ep *ep)
{
    relay *r = ep->r;
    relay_pair *p = ep->pair;
    if (!p)
        return RELAY_EP_GO;
    size_t q = ep->ops->queued(ep);
    p->out_ms[!ep->side] = r->core->api->now_ms(r->core); /* ep was written to */
    if (p->u.msg.eof_side >= 0 && ep->side != p->u.msg.eof_side && q == 0) {
        relay_pair_end(r, p, RELAY_END_EOF);
        return RELAY_EP_GONE;
    }
    if (q <= (size_t)r->cfg->message_queue / 2)
        p->u.msg.bp[!ep->side] = false;
    return relay_msg_update(r, p) ? RELAY_EP_GO : RELAY_EP_GONE;
}

/* EOF: what was read is already forwarded; let the partner's queue drain,
 * then end both (no half-close, §5). Errors end at once. */
int relay_msg_closed(relay_ep *ep, relay_end why)
{
    relay *r = ep->r;
    relay_pair *p = ep->pair;
    if (!p) { /* gone while waiting: drop the entry (relay.md §3.4) */
        if (ep->waiter) {
            (*r->st.rej_waiter_gone)++;
            relay_waiter_free(r, ep->waiter, true);
        } else {
            ep->ops->destroy(ep);
        }
        return RELAY_EP_GONE;
    }
    relay_ep *dst = p->u.msg.ep[!ep->side];
    if (why != RELAY_END_EOF || p->u.msg.eof_side >= 0 || dst->ops->queued(dst) == 0) {
        relay_pair_end(r, p, why);
        return RELAY_EP_GONE;
    }
    p->u.msg.eof_side = (int8_t)ep->side;
    return relay_msg_update(r, p) ? RELAY_EP_STOP : RELAY_EP_GONE;
}

void relay_msg_close(relay *r, relay_pair *p)
{
    for (int i = 0; i < 2; i++) {
        relay_ep *ep = p->u.msg.ep[i];
        if (ep)
            ep->ops->destroy(ep);
        p->u.msg.ep[i] = NULL;
    }
    r->nmsg--;
}

relay_pair *relay_pair_msg_new(relay *r, relay_ep *ep[2], const rdv_addr addr[2])
{
    relay_pair *p = calloc(1, sizeof *p);
    if (!p) {
        for (int i = 0; i < 2; i++)
            ep[i]->ops->destroy(ep[i]);
        (*r->st.rej_internal)++;
        return NULL;
    }
    p->mode = RELAY_MODE_MSG;
    p->u.msg.eof_side = -1;
    for (int i = 0; i < 2; i++) {
        p->u.msg.ep[i] = ep[i];
        ep[i]->pair = p;
        ep[i]->side = i;
    }
    relay_pair_init(r, p, addr);
    r->nmsg++;
    return relay_msg_update(r, p) ? p : NULL;
}
