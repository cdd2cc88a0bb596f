/* relay_ep_tcp.c — the TCP endpoint of message mode (relay.md §4.3): a
 * detached socket whose input is cut into BytesCodec frames (any header
 * width, payload up to relay.message_max) and whose output is one frame
 * with a minimal header per message. Bytes read by the core past the first
 * frame are parsed as further frames (§4.4). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

#define RELAY_EP_READ_CHUNK 65536

typedef struct relay_ep_tcp {
    relay_ep base;
    int fd;
    rdv_io *io;
    unsigned ev;
    uint8_t *rbuf;
    size_t roff, rlen, rcap;  /* unparsed input is rbuf[roff .. roff+rlen) */
    uint8_t *wbuf;
    size_t woff, wlen, wcap;  /* queued output is wbuf[woff .. woff+wlen) */
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

/* Room for `need` more bytes after the unparsed input. */
static int relay_tcp_reserve(relay_ep_tcp *t, size_t need)
{
    if (t->roff && t->roff + t->rlen + need > t->rcap) {
        memmove(t->rbuf, t->rbuf + t->roff, t->rlen);
        t->roff = 0;
    }
    if (t->rlen + need <= t->rcap)
        return 0;
    size_t cap = t->rcap ? t->rcap : 4096;
    while (cap < t->rlen + need)
        cap *= 2;
    uint8_t *nb = realloc(t->rbuf, cap);
    if (!nb)
        return -ENOMEM;
    t->rbuf = nb, t->rcap = cap;
    return 0;
}

/* Hand whole frames to the pair while reading is wanted. */
static int relay_tcp_deliver(relay_ep_tcp *t)
{
    relay *r = t->base.r;
    if (t->delivering)
        return RELAY_EP_GO;
    t->delivering = true;
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
    }
    t->delivering = false;
    if (!t->rlen && t->rcap > RELAY_EP_READ_CHUNK) { /* do not keep a big frame's buffer */
        free(t->rbuf);
        t->rbuf = NULL;
        t->rcap = t->roff = 0;
    }
    if (t->eof && t->base.reading)
        return relay_msg_closed(&t->base, RELAY_END_EOF);
    relay_tcp_watch(t);
    return t->base.reading ? RELAY_EP_GO : RELAY_EP_STOP;
}

static int relay_tcp_read(relay_ep_tcp *t)
{
    relay *r = t->base.r;
    size_t hl = 0, pl = 0, want = RELAY_EP_READ_CHUNK;
    /* Grow to the declared frame (already known to be within message_max).
     * With nothing held there may be no buffer yet: NULL + 0 is not C. */
    if (t->rlen &&
        rdv_frame_parse(t->rbuf + t->roff, t->rlen, (size_t)r->cfg->message_max, &hl, &pl) == RDV_FRAME_NEED && hl &&
        hl + pl - t->rlen > want)
        want = hl + pl - t->rlen;
    if (relay_tcp_reserve(t, want) < 0)
        return relay_msg_closed(&t->base, RELAY_END_NOMEM);
    ssize_t n = recv(t->fd, t->rbuf + t->roff + t->rlen, t->rcap - t->roff - t->rlen, MSG_DONTWAIT);
    if (n == 0) {
        t->eof = true; /* a partial frame is dropped with the connection */
        t->rlen = 0;
        return relay_msg_closed(&t->base, RELAY_END_EOF);
    }
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? RELAY_EP_GO
                                                                         : relay_msg_closed(&t->base, RELAY_END_ERROR);
    t->rlen += (size_t)n;
    return relay_tcp_deliver(t);
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
    if (t->wcap > RELAY_EP_READ_CHUNK) {
        free(t->wbuf);
        t->wbuf = NULL;
        t->wcap = 0;
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

static int relay_tcp_send(relay_ep *ep, const uint8_t *p, size_t n)
{
    relay_ep_tcp *t = relay_tcp_of(ep);
    uint8_t hdr[RDV_FRAME_HDR_MAX];
    size_t hl = rdv_frame_header(n, hdr);
    if (!hl)
        return -EMSGSIZE;
    if (t->woff && t->woff + t->wlen + hl + n > t->wcap) {
        memmove(t->wbuf, t->wbuf + t->woff, t->wlen);
        t->woff = 0;
    }
    if (t->wlen + hl + n > t->wcap) {
        size_t cap = t->wcap ? t->wcap : 4096;
        while (cap < t->wlen + hl + n)
            cap *= 2;
        uint8_t *nb = realloc(t->wbuf, cap);
        if (!nb)
            return -ENOMEM;
        t->wbuf = nb, t->wcap = cap;
    }
    memcpy(t->wbuf + t->woff + t->wlen, hdr, hl);
    memcpy(t->wbuf + t->woff + t->wlen + hl, p, n);
    t->wlen += hl + n;
    if (relay_tcp_flush(t) < 0)
        return -EPIPE;
    relay_tcp_watch(t);
    return 0;
}

static size_t relay_tcp_queued(const relay_ep *ep) { return ((const relay_ep_tcp *)ep)->wlen; }

static size_t relay_tcp_buffered(const relay_ep *ep)
{
    const relay_ep_tcp *t = (const relay_ep_tcp *)ep;
    return t->rcap + t->wcap;
}

static int relay_tcp_set_reading(relay_ep *ep, bool on)
{
    relay_ep_tcp *t = relay_tcp_of(ep);
    ep->reading = on;
    if (on && (t->rlen || t->eof))
        return relay_tcp_deliver(t); /* early bytes, or frames held while paused */
    relay_tcp_watch(t);
    return on ? RELAY_EP_GO : RELAY_EP_STOP;
}

static void relay_tcp_destroy(relay_ep *ep)
{
    relay_ep_tcp *t = relay_tcp_of(ep);
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
    .buffered = relay_tcp_buffered,
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
        if (relay_tcp_reserve(t, early_len) < 0) {
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
    return &t->base;
}
