/* relay_ep_tcp.c — the TCP endpoint of message mode (relay.md §4.3): a
 * detached socket whose input is cut into BytesCodec frames (any header
 * width, payload up to relay.message_max) and whose output is one frame
 * with a minimal header per message. Bytes read by the core past the first
 * frame are parsed as further frames (§4.4).
 *
 * Memory (relay.message_total): what the endpoint keeps between events —
 * an incomplete frame, frames held while its partner is slow, unsent
 * output — is charged with relay_ep_hold. A read buffer of one chunk is
 * taken for each read and given back when the read left nothing behind (or
 * cut to what it left), so an endpoint that is between frames holds no
 * buffer. A large frame grows its buffer as its bytes arrive (doubling, up
 * to the frame's size), never from the length its header declares. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "relay.h"

#define RELAY_EP_READ_CHUNK 65536
#define RELAY_EP_KEEP 4096 /* buffers up to this size are kept when empty */

typedef struct relay_ep_tcp {
    relay_ep base;
    int fd;
    rdv_io *io;
    unsigned ev;
    uint8_t *rbuf;
    size_t roff, rlen, rcap;  /* unparsed input is rbuf[roff .. roff+rlen) */
    uint8_t *wbuf;
    size_t woff, wlen, wcap;  /* queued output is wbuf[woff .. woff+wlen) */
    uint64_t partial_ms;      /* an incomplete frame is being read since (0: none) */
    uint64_t paused_ms;       /* reading stopped at (its time does not count for partial_ms) */
    bool eof, delivering;
} relay_ep_tcp;

static relay_ep_tcp *relay_tcp_of(relay_ep *ep) { return (relay_ep_tcp *)ep; }

static void relay_tcp_watch(relay_ep_tcp *t)
{
    unsigned ev = (t->base.reading && !t->eof ? RDV_IO_READ : 0) | (t->wlen ? RDV_IO_WRITE : 0);
    if (ev != t->ev) {
        t->base.r->core->api->io_set(t->io, ev);
        t->ev = ev;
    }
}

/* Charge what the buffers hold now. check: refuse growth past the total. */
static bool relay_tcp_hold(relay_ep_tcp *t, bool check) { return relay_ep_hold(&t->base, t->rcap + t->wcap, check); }

/* Grow a buffer of *cap bytes (its other buffer holds `other`) to at
 * least `need`: doubling, but not past `ceiling` (0: none) when that is
 * enough — the end of a large frame, so that its last bytes do not double
 * its buffer. With check, growth that would pass relay.message_total is
 * refused (-EDQUOT), after trying exactly `need`. */
static int relay_tcp_grow(relay_ep_tcp *t, uint8_t **buf, size_t *cap, size_t other, size_t need, size_t ceiling,
                          bool check)
{
    size_t c = *cap ? *cap : RELAY_EP_KEEP;
    while (c < need)
        c *= 2;
    if (ceiling && c > ceiling && ceiling >= need)
        c = ceiling;
    if (check && !relay_ep_fits(&t->base, other + c)) {
        if (!relay_ep_fits(&t->base, other + need))
            return -EDQUOT;
        c = need;
    }
    uint8_t *nb = realloc(*buf, c);
    if (!nb)
        return -ENOMEM;
    *buf = nb, *cap = c;
    return 0;
}

/* Room for `need` more bytes after the unparsed input (see relay_tcp_grow). */
static int relay_tcp_reserve(relay_ep_tcp *t, size_t need, size_t ceiling, bool check)
{
    if (t->roff && t->roff + t->rlen + need > t->rcap) {
        memmove(t->rbuf, t->rbuf + t->roff, t->rlen);
        t->roff = 0;
    }
    if (t->rlen + need <= t->rcap)
        return 0;
    return relay_tcp_grow(t, &t->rbuf, &t->rcap, t->wcap, t->rlen + need, ceiling, check);
}

/* After input was consumed: an empty buffer goes, a large one holding a
 * few bytes of a small frame is cut to size (the next read takes a chunk
 * again). A large frame keeps its buffer: it is growing towards its size. */
static void relay_tcp_trim_input(relay_ep_tcp *t)
{
    if (!t->rlen) {
        if (t->rcap > RELAY_EP_KEEP) {
            free(t->rbuf);
            t->rbuf = NULL;
            t->rcap = 0;
        }
        t->roff = 0;
        return;
    }
    size_t hl = 0, pl = 0, want = t->rlen > RELAY_EP_KEEP ? t->rlen : RELAY_EP_KEEP;
    if (rdv_frame_parse(t->rbuf + t->roff, t->rlen, (size_t)t->base.r->cfg->message_max, &hl, &pl) == RDV_FRAME_NEED &&
        hl && hl + pl > RELAY_EP_READ_CHUNK)
        return;
    if (t->rcap <= 2 * want)
        return;
    memmove(t->rbuf, t->rbuf + t->roff, t->rlen);
    t->roff = 0;
    uint8_t *nb = realloc(t->rbuf, want);
    if (nb) /* else keep the larger block: still correct */
        t->rbuf = nb, t->rcap = want;
}

/* Hand whole frames to the pair while reading is wanted. */
static int relay_tcp_deliver(relay_ep_tcp *t)
{
    relay *r = t->base.r;
    if (t->delivering)
        return RELAY_EP_GO;
    t->delivering = true;
    bool moved = false;
    while (t->base.reading && t->rlen) {
        size_t hl, pl;
        rdv_frame_status st = rdv_frame_parse(t->rbuf + t->roff, t->rlen, (size_t)r->cfg->message_max, &hl, &pl);
        if (st == RDV_FRAME_TOO_BIG) {
            t->delivering = false;
            return relay_msg_closed(&t->base, RELAY_END_ERROR);
        }
        if (st == RDV_FRAME_NEED)
            break;
        const uint8_t *payload = t->rbuf + t->roff + hl;
        int rc = relay_msg_input(&t->base, payload, pl);
        if (rc == RELAY_EP_GONE)
            return RELAY_EP_GONE; /* t is freed */
        if (rc == RELAY_EP_KEEP) { /* not paired yet: keep it buffered */
            t->base.reading = false;
            break;
        }
        t->roff += hl + pl, t->rlen -= hl + pl;
        moved = true;
    }
    t->delivering = false;
    /* message_timeout_ms runs from the first bytes of the frame at the
     * head (a frame that follows a delivered one starts now). */
    if (!t->rlen)
        t->partial_ms = 0;
    else if (moved || !t->partial_ms)
        t->partial_ms = r->core->api->now_ms(r->core);
    relay_tcp_trim_input(t);
    if (t->eof && t->base.reading)
        return relay_msg_closed(&t->base, RELAY_END_EOF);
    relay_tcp_watch(t);
    return t->base.reading ? RELAY_EP_GO : RELAY_EP_STOP;
}

static int relay_tcp_read(relay_ep_tcp *t)
{
    relay *r = t->base.r;
    size_t hl = 0, pl = 0, need = RELAY_EP_READ_CHUNK, ceiling = 0;
    /* A frame larger than a chunk grows its buffer towards its declared
     * size (known to be within message_max) as its bytes come, at most a
     * chunk per read; that growth is kept, so it is checked against
     * message_total before it is taken. A chunk for smaller frames is given
     * back after the read (relay_tcp_trim_input). With nothing held there
     * may be no buffer yet: NULL + 0 is not C. */
    if (t->rlen &&
        rdv_frame_parse(t->rbuf + t->roff, t->rlen, (size_t)r->cfg->message_max, &hl, &pl) == RDV_FRAME_NEED && hl &&
        hl + pl > RELAY_EP_READ_CHUNK) {
        ceiling = hl + pl;
        if (ceiling - t->rlen < need)
            need = ceiling - t->rlen;
    }
    int e = relay_tcp_reserve(t, need, ceiling, ceiling != 0);
    if (e < 0)
        return relay_msg_closed(&t->base, e == -EDQUOT ? RELAY_END_MSG_TOTAL : RELAY_END_NOMEM);
    ssize_t n = recv(t->fd, t->rbuf + t->roff + t->rlen, t->rcap - t->roff - t->rlen, MSG_DONTWAIT);
    if (n == 0) {
        t->eof = true; /* a partial frame is dropped with the connection */
        t->rlen = t->partial_ms = 0;
        relay_tcp_trim_input(t);
        relay_tcp_hold(t, false);
        return relay_msg_closed(&t->base, RELAY_END_EOF);
    }
    int rc = RELAY_EP_GO;
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return relay_msg_closed(&t->base, RELAY_END_ERROR);
        relay_tcp_trim_input(t);
    } else {
        t->rlen += (size_t)n;
        if ((rc = relay_tcp_deliver(t)) == RELAY_EP_GONE)
            return rc;
    }
    /* What the read left behind (an incomplete frame, frames held for a
     * slow partner) is kept: charged now, and over the total it ends the
     * pair — this side is the one growing. */
    if (!relay_tcp_hold(t, true))
        return relay_msg_closed(&t->base, RELAY_END_MSG_TOTAL);
    return rc;
}

/* 0: all written or waiting for EAGAIN to clear; -1: error. */
static int relay_tcp_flush(relay_ep_tcp *t)
{
    while (t->wlen) {
        ssize_t n = send(t->fd, t->wbuf + t->woff, t->wlen, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        t->woff += (size_t)n, t->wlen -= (size_t)n;
    }
    t->woff = 0;
    if (t->wcap > RELAY_EP_KEEP) {
        free(t->wbuf);
        t->wbuf = NULL;
        t->wcap = 0;
        relay_tcp_hold(t, false);
    }
    return 0;
}

static void relay_tcp_io_cb(void *ud, int fd, unsigned revents)
{
    (void)fd;
    relay_ep_tcp *t = ud;
    if (revents & RDV_IO_WRITE) {
        size_t before = t->wlen;
        if (relay_tcp_flush(t) < 0) {
            relay_msg_closed(&t->base, RELAY_END_ERROR);
            return;
        }
        if (t->wlen < before && relay_msg_drained(&t->base) == RELAY_EP_GONE)
            return;
    }
    if ((revents & RDV_IO_READ) && t->base.reading && !t->eof && relay_tcp_read(t) == RELAY_EP_GONE)
        return;
    relay_tcp_watch(t);
}

/* Send one frame: straight to the socket while nothing is queued (no
 * copy), the rest through the queue. The queue is bounded per pair
 * (message_queue plus one message) and, with every other endpoint's
 * buffers, by message_total: growth past it is refused (-EDQUOT) and the
 * pair ends. */
static int relay_tcp_send(relay_ep *ep, const uint8_t *p, size_t n)
{
    relay_ep_tcp *t = relay_tcp_of(ep);
    uint8_t hdr[RDV_FRAME_HDR_MAX];
    size_t hl = rdv_frame_header(n, hdr), done = 0;
    if (!hl)
        return -EMSGSIZE;
    if (!t->wlen) {
        struct iovec iov[2] = { { hdr, hl }, { (void *)p, n } };
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = n ? 2 : 1 };
        ssize_t k;
        do
            k = sendmsg(t->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (k < 0 && errno == EINTR);
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -EPIPE;
        if (k > 0)
            done = (size_t)k;
        if (done == hl + n)
            return 0;
    }
    size_t rest = hl + n - done;
    if (t->woff && t->woff + t->wlen + rest > t->wcap) {
        memmove(t->wbuf, t->wbuf + t->woff, t->wlen);
        t->woff = 0;
    }
    if (t->wlen + rest > t->wcap) {
        int e = relay_tcp_grow(t, &t->wbuf, &t->wcap, t->rcap, t->wlen + rest, 0, true);
        if (e < 0)
            return e;
        relay_tcp_hold(t, false); /* checked by relay_tcp_grow */
    }
    uint8_t *w = t->wbuf + t->woff + t->wlen;
    if (done < hl) {
        memcpy(w, hdr + done, hl - done);
        w += hl - done;
    }
    size_t skip = done > hl ? done - hl : 0;
    if (n > skip)
        memcpy(w, p + skip, n - skip);
    t->wlen += rest;
    if (relay_tcp_flush(t) < 0)
        return -EPIPE;
    relay_tcp_watch(t);
    return 0;
}

static size_t relay_tcp_queued(const relay_ep *ep) { return ((const relay_ep_tcp *)ep)->wlen; }

/* Not while paused: a side paused for its partner's sake (back-pressure,
 * bandwidth) is not the one being slow. */
static uint64_t relay_tcp_partial_since(const relay_ep *ep)
{
    return ep->reading ? ((const relay_ep_tcp *)ep)->partial_ms : 0;
}

static int relay_tcp_set_reading(relay_ep *ep, bool on)
{
    relay_ep_tcp *t = relay_tcp_of(ep);
    uint64_t now = ep->r->core->api->now_ms(ep->r->core);
    if (ep->reading && !on)
        t->paused_ms = now;
    else if (!ep->reading && on && t->partial_ms) /* the paused time does not count, only that */
        t->partial_ms += now - (t->partial_ms > t->paused_ms ? t->partial_ms : t->paused_ms);
    ep->reading = on;
    if (on && (t->rlen || t->eof)) {
        int rc = relay_tcp_deliver(t); /* early bytes, or frames held while paused */
        if (rc != RELAY_EP_GONE)
            relay_tcp_hold(t, false); /* input only shrank */
        return rc;
    }
    relay_tcp_watch(t);
    return on ? RELAY_EP_GO : RELAY_EP_STOP;
}

static void relay_tcp_destroy(relay_ep *ep)
{
    relay_ep_tcp *t = relay_tcp_of(ep);
    relay_ep_hold(ep, 0, false);
    t->base.r->core->api->io_free(t->io);
    close(t->fd);
    free(t->rbuf);
    free(t->wbuf);
    free(t);
}

static const relay_ep_ops relay_tcp_ops = {
    .name = "tcp",
    .send = relay_tcp_send,
    .queued = relay_tcp_queued,
    .set_reading = relay_tcp_set_reading,
    .partial_since = relay_tcp_partial_since,
    .destroy = relay_tcp_destroy,
};

relay_ep *relay_ep_tcp_new(relay *r, int fd, const uint8_t *early, size_t early_len)
{
    relay_ep_tcp *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->base.ops = &relay_tcp_ops;
    t->base.r = r;
    t->fd = fd;
    if (early_len) {
        if (relay_tcp_reserve(t, early_len, 0, false) < 0) {
            free(t);
            return NULL;
        }
        memcpy(t->rbuf, early, early_len);
        t->rlen = early_len;
    }
    if (!(t->io = r->core->api->io_new(r->core, fd, 0, relay_tcp_io_cb, t))) {
        free(t->rbuf);
        free(t);
        return NULL;
    }
    /* Early bytes move from relay.early_total to message_total here; they
     * were bounded there already, so they are taken even over the total. */
    relay_tcp_hold(t, false);
    return &t->base;
}
