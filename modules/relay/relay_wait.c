/* relay_wait.c — the waiting table (relay.md §3.4): one entry per uuid,
 * bounded by relay.max_waiting, expired in FIFO order by a single timer
 * (every entry waits the same wait_timeout_ms, so insertion order is
 * deadline order). A waiting socket is not read: what its client sends
 * meanwhile stays in the kernel and is spliced to the partner after
 * pairing (§4.4). We peek at it only to notice a client that went away. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

static void relay_wait_arm(relay *r)
{
    const rdv_core_api *api = r->core->api;
    if (!r->wfirst) {
        api->timer_stop(r->wait_timer);
        return;
    }
    uint64_t now = api->now_ms(r->core);
    api->timer_start(r->wait_timer, r->wfirst->deadline_ms > now ? r->wfirst->deadline_ms - now : 0, 0);
}

static void relay_side_close(relay *r, relay_side *s)
{
    if (s->ep)
        s->ep->ops->destroy(s->ep);
    else if (s->fd >= 0)
        close(s->fd);
    r->early_bytes -= s->early_len;
    free(s->early);
    s->fd = -1, s->ep = NULL, s->early = NULL, s->early_len = 0;
}

/* Unlink w; close its connection or leave it to the caller. */
void relay_waiter_free(relay *r, relay_waiter *w, bool close_side)
{
    bool head = w == r->wfirst;
    HASH_DEL(r->waiting, w);
    if (w->prev)
        w->prev->next = w->next;
    else
        r->wfirst = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        r->wlast = w->prev;
    r->nwaiting--;
    r->core->api->io_free(w->io);
    if (w->ep)
        w->ep->waiter = NULL;
    if (close_side) {
        relay_side s = { .fd = w->fd, .ep = w->ep, .early = w->early, .early_len = w->early_len };
        relay_side_close(r, &s);
    }
    free(w);
    if (head)
        relay_wait_arm(r);
}

void relay_wait_timer_cb(void *ud)
{
    relay *r = ud;
    uint64_t now = r->core->api->now_ms(r->core);
    while (r->wfirst && r->wfirst->deadline_ms <= now) {
        (*r->st.rej_wait_timeout)++;
        relay_waiter_free(r, r->wfirst, true); /* only this entry: never a newer one with the same uuid */
    }
    relay_wait_arm(r);
}

/* Readable while waiting: data (left in the kernel for the partner; stop
 * watching) or EOF/RST (the client is gone: drop the entry). */
static void relay_waiter_io_cb(void *ud, int fd, unsigned revents)
{
    (void)revents;
    relay_waiter *w = ud;
    relay *r = w->r;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
        r->core->api->io_set(w->io, 0);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    (*r->st.rej_waiter_gone)++;
    relay_waiter_free(r, w, true);
}

/* Early side (the waiter) and late side become a pair: a raw pipe for two
 * TCP sockets, message mode otherwise (relay.md §4.1). */
static void relay_pair_sides(relay *r, relay_side *early_side, relay_side *late)
{
    rdv_addr addr[2] = { early_side->addr, late->addr };
    if (early_side->fd >= 0 && late->fd >= 0 && !r->cfg->message_mode) {
        int fd[2] = { early_side->fd, late->fd };
        uint8_t *early[2] = { early_side->early, late->early };
        size_t len[2] = { early_side->early_len, late->early_len };
        relay_pair_raw_new(r, fd, early, len, addr);
        return;
    }
    /* Message mode: TCP sides become framed endpoints. */
    relay_side side[2] = { *early_side, *late };
    relay_ep *ep[2] = { NULL, NULL };
    for (int i = 0; i < 2; i++) {
        ep[i] = side[i].ep ? side[i].ep : relay_ep_tcp_new(r, side[i].fd, side[i].early, side[i].early_len);
        if (!ep[i])
            break;
        if (!side[i].ep)
            side[i].fd = -1; /* the endpoint owns it now */
        side[i].ep = NULL;
        r->early_bytes -= side[i].early_len;
        free(side[i].early);
        side[i].early = NULL, side[i].early_len = 0;
    }
    if (!ep[0] || !ep[1]) {
        (*r->st.rej_internal)++;
        for (int i = 0; i < 2; i++) {
            if (ep[i])
                ep[i]->ops->destroy(ep[i]);
            relay_side_close(r, &side[i]);
        }
        return;
    }
    relay_pair_msg_new(r, ep, addr);
}

/* No memory for a waiting entry (or its slot in the table): the side is
 * refused as if the table were full; the table and the other sides are
 * untouched, and its client may ask again. */
static void relay_wait_oom(relay *r, relay_side *s)
{
    char a[INET6_ADDRSTRLEN];
    (*r->st.rej_internal)++;
    (*r->st.oom)++;
    RDV_LOG_RL(r->core, RDV_LOG_WARN, "out of memory: side from %s not waiting for its partner (refused)",
               relay_ip_text(&s->addr, a, sizeof a));
    relay_side_close(r, s);
}

void relay_wait_or_pair(relay *r, relay_side *s, const char *uuid, size_t uuid_len)
{
    /* The blocklist may have grown since accept (console, SIGHUP): both
     * sides are checked as the pair forms, as the tick does later. */
    relay_waiter *w = NULL;
    HASH_FIND(hh, r->waiting, uuid, uuid_len, w);
    bool blocked = relay_blocked(r, &s->addr);
    if (w && (blocked || relay_blocked(r, &w->addr))) {
        char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
        (*r->st.end[RELAY_END_BLOCKED])++;
        RDV_LOG_RL(r->core, RDV_LOG_NOTICE, "pair %s / %s refused: blocklisted",
                   relay_ip_text(&s->addr, a, sizeof a), relay_ip_text(&w->addr, b, sizeof b));
        relay_waiter_free(r, w, true);
        relay_side_close(r, s);
        return;
    }
    if (blocked) {
        char a[INET6_ADDRSTRLEN];
        (*r->st.rej_blocked)++;
        RDV_LOG_RL(r->core, RDV_LOG_INFO, "blocked %s", relay_ip_text(&s->addr, a, sizeof a));
        relay_side_close(r, s);
        return;
    }
    if (w) {
        if (r->npairs >= (size_t)r->cfg->max_pairs) {
            (*r->st.rej_pairs_full)++;
            RDV_LOG_RL(r->core, RDV_LOG_WARN, "relay.max_pairs=%lld reached; refusing a pair",
                       (long long)r->cfg->max_pairs);
            relay_side_close(r, s);
            return;
        }
        relay_side early = { .fd = w->fd, .ep = w->ep, .early = w->early, .early_len = w->early_len,
                             .addr = w->addr };
        relay_waiter_free(r, w, false);
        relay_pair_sides(r, &early, s);
        return;
    }
    if (r->nwaiting >= (size_t)r->cfg->max_waiting) {
        (*r->st.rej_waiting_full)++;
        RDV_LOG_RL(r->core, RDV_LOG_WARN, "relay.max_waiting=%lld reached; refusing a request",
                   (long long)r->cfg->max_waiting);
        relay_side_close(r, s);
        return;
    }
    w = calloc(1, sizeof *w + uuid_len + 1);
    if (!w) {
        relay_wait_oom(r, s);
        return;
    }
    const rdv_core_api *api = r->core->api;
    w->r = r;
    w->fd = s->fd, w->ep = s->ep, w->addr = s->addr;
    w->early = s->early, w->early_len = (uint32_t)s->early_len;
    memcpy(w->uuid, uuid, uuid_len);
    w->uuid_len = (uint16_t)uuid_len;
    if (w->fd >= 0 && !(w->io = api->io_new(r->core, w->fd, RDV_IO_READ, relay_waiter_io_cb, w))) {
        (*r->st.rej_internal)++;
        relay_side_close(r, s);
        free(w);
        return;
    }
    /* A message side stays read while it waits, as the TCP watcher above
     * peeks: a client that goes away is dropped at once (L47), not at the
     * wait timeout. Its first message pauses it (relay_ws_side_message),
     * so what it sends before the partner comes stays in the kernel. */
    if (w->ep)
        w->ep->waiter = w;
    w->deadline_ms = api->now_ms(r->core) + (uint64_t)r->cfg->wait_timeout_ms;
    HASH_ADD_KEYPTR(hh, r->waiting, w->uuid, uuid_len, w);
    if (!w->hh.tbl) { /* uthash rolled the add back: undo the watcher, refuse the side */
        api->io_free(w->io);
        if (w->ep)
            w->ep->waiter = NULL;
        free(w);
        relay_wait_oom(r, s);
        return;
    }
    w->prev = r->wlast;
    if (r->wlast)
        r->wlast->next = w;
    else
        r->wfirst = w;
    r->wlast = w;
    r->nwaiting++;
    if (r->wfirst == w)
        relay_wait_arm(r);
}

void relay_waiting_close_all(relay *r)
{
    while (r->wfirst)
        relay_waiter_free(r, r->wfirst, true);
}
