/* core/conn.c — accepted TCP connections: buffers, frame codec, record
 * layer, back-pressure, idle timeouts, close and take-over.
 *
 * Lifetime: a connection is found by id (uthash). Closing it removes it from
 * the table at once, so a stale id answers -ENOTCONN; the memory is freed
 * when no callback frame is using it any more (c->busy).
 *
 * Out of memory never exits the process: a connection whose record, or the
 * table slot uthash would have to create or grow, cannot be allocated is
 * closed at accept (counter core.tcp_refused_oom), before any module hears
 * of it; the table stays as it was. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <sodium.h>

/* Out of memory in the connection table refuses one operation (rdv/uthash.h). */
#define RDV_UTHASH_PREFIX rdv_conn
#include <rdv/uthash.h>

#include "rdv/wire.h"
#include "server.h"

#define READ_CHUNK 65536
#define BUF_FREE 4096        /* the part of each buffer no total is charged for */
#define RBUF_INITIAL BUF_FREE
#define WBUF_STEP_MAX 1048576 /* a write queue grows by doubling up to this step */

/* What a read buffer or write queue of cap bytes counts against
 * core.read_total / core.write_total: all but its first BUF_FREE bytes.
 * That much per connection is bounded by core.max_connections; not
 * charging it keeps a crowd of connections that each hold a few bytes
 * (slowloris, or a reader a little behind) from using up the total that
 * large frames and slow readers need. */
static uint64_t buf_charge(size_t cap) { return cap > BUF_FREE ? cap - BUF_FREE : 0; }

struct rdv_conn {
    rdv_conn_id id;
    rdv_server *srv;
    rdv_listener *l;
    int fd;
    rdv_addr peer;
    ev_io rio, wio;
    ev_timer idle;
    uint64_t idle_ms, last_ms, opened_ms;
    uint8_t *rbuf;
    size_t roff, rlen, rcap; /* unconsumed bytes are rbuf[roff .. roff+rlen) */
    uint8_t *wbuf;
    size_t woff, wlen, wcap; /* queued bytes are wbuf[woff .. woff+wlen) */
    const rdv_codec *codec;
    void *codec_ud;
    rdv_transport transport;
    bool secure, paused, closing, dead, opened;
    bool drain_due; /* a write emptied the queue: write_cb reports on_drain */
    int busy;
    uint8_t key[32];
    uint64_t send_seq, recv_seq;
    uint64_t bytes_in, bytes_out;
    UT_hash_handle hh;
};

/* ---- uthash's allocator and its test hook (rdv/uthash.h) */
RDV_UTHASH_HOOK_DEFINE()

static rdv_conn *conn_table(rdv_server *s) { return s->conns; }
static void conn_table_set(rdv_server *s, rdv_conn *head) { s->conns = head; }

rdv_conn *rdv_conn_get(rdv_server *s, rdv_conn_id id)
{
    rdv_conn *c = NULL, *head = conn_table(s);
    HASH_FIND(hh, head, &id, sizeof id, c);
    return c;
}

static void conn_free(rdv_conn *c)
{
    sodium_memzero(c->key, sizeof c->key);
    c->srv->rbuf_bytes -= buf_charge(c->rcap);
    c->srv->wbuf_bytes -= buf_charge(c->wcap);
    free(c->rbuf);
    free(c->wbuf);
    free(c);
}

static void conn_release(rdv_conn *c)
{
    if (--c->busy == 0 && c->dead)
        conn_free(c);
}

/* ------------------------------------------------------------------ writing */
static void update_watchers(rdv_conn *c)
{
    rdv_server *s = c->srv;
    if (c->dead)
        return;
    if (c->wlen || c->drain_due) /* stopping would drop the fed drain event */
        ev_io_start(s->loop, &c->wio);
    else
        ev_io_stop(s->loop, &c->wio);
    if (c->paused || c->closing)
        ev_io_stop(s->loop, &c->rio);
    else
        ev_io_start(s->loop, &c->rio);
}

/* Write as much of the queue as the socket takes. 0, or -errno on error. */
static int flush_queue(rdv_conn *c)
{
    while (c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        c->woff += (size_t)n, c->wlen -= (size_t)n, c->bytes_out += (uint64_t)n;
    }
    c->woff = 0;
    if (c->wcap > BUF_FREE) { /* a drained queue keeps no charged buffer */
        c->srv->wbuf_bytes -= buf_charge(c->wcap);
        free(c->wbuf);
        c->wbuf = NULL, c->wcap = 0;
    }
    return 0;
}

/* A buffer of c could not grow within core.read_total / core.write_total:
 * counted, logged (rate-limited); the caller closes c. */
static void total_reached(rdv_conn *c, uint64_t *counter, const char *setting, int64_t total, const char *held_in,
                          const char *advice)
{
    (*counter)++;
    char a[RDV_ADDR_STRLEN];
    RDV_LOG_RL(&c->srv->core_mod.handle, RDV_LOG_WARN,
               "core.%s = %lld bytes held in %s (conf.d/00-core.conf): conn %llu from %s (%s) closed; raise %s if %s",
               setting, (long long)total, held_in, (unsigned long long)c->id, rdv_addr_str(&c->peer, a, sizeof a),
               c->l->name, setting, advice);
}

static size_t round_up(size_t n, size_t q) { return (n + q - 1) / q * q; }

/* Room for `extra` more queued bytes. The queue grows by doubling, by at
 * most WBUF_STEP_MAX at a time (a 64 MiB message gets about its size, not
 * 128 MiB). Queues of all connections together stay within
 * core.write_total (s->wbuf_bytes, see buf_charge): when a full step does
 * not fit, the queue grows by an eighth of a step at a time (so a queue
 * near the total is not copied on every small answer), and if even what
 * is needed does not fit the write is refused (-EDQUOT). */
static int queue_reserve(rdv_conn *c, size_t extra)
{
    rdv_server *s = c->srv;
    if (c->woff && c->woff + c->wlen + extra > c->wcap) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen);
        c->woff = 0;
    }
    size_t need = c->wlen + extra;
    if (need <= c->wcap)
        return 0;
    size_t step = c->wcap < BUF_FREE ? BUF_FREE : c->wcap < WBUF_STEP_MAX ? c->wcap : WBUF_STEP_MAX;
    size_t cap = c->wcap + step < need ? round_up(need, BUF_FREE) : c->wcap + step;
    uint64_t others = s->wbuf_bytes - buf_charge(c->wcap), total = (uint64_t)s->cfg.write_total;
    if (others + buf_charge(cap) > total) {
        cap = round_up(need, step / 8 < BUF_FREE ? BUF_FREE : step / 8);
        if (others + buf_charge(cap) > total)
            cap = round_up(need, BUF_FREE);
        if (others + buf_charge(cap) > total)
            return -EDQUOT;
    }
    uint8_t *nb = realloc(c->wbuf, cap);
    if (!nb)
        return -ENOMEM;
    c->wbuf = nb, c->wcap = cap;
    s->wbuf_bytes = others + buf_charge(cap);
    return 0;
}

static void queue_append(rdv_conn *c, const uint8_t *p, size_t n)
{
    if (!n)
        return; /* send_bytes has no header: p is NULL (memcpy must not see it) */
    memcpy(c->wbuf + c->woff + c->wlen, p, n);
    c->wlen += n;
}

/* Send header+body: straight to the socket while nothing is queued, the
 * rest (or all of it, when sealing) through the queue.
 *
 * core.write_queue_max bounds what a reader that does not keep up can make
 * us hold: a write onto a queue that already holds that much closes the
 * connection. A single write is never refused for its own size (its sender
 * bounded it: relay.message_max, core.max_frame), so the queue peaks at the
 * limit plus one message, and a 5 MiB WebSocket message to a reader that
 * keeps up goes through with the default 4 MiB limit. */
static int conn_write(rdv_conn *c, const uint8_t *hdr, size_t hlen, const uint8_t *body, size_t blen,
                      bool seal)
{
    rdv_server *s = c->srv;
    if (c->dead || c->closing)
        return -ENOTCONN;
    bool held = c->wlen > 0; /* a queue the owner may be waiting on (on_drain) */
    if (c->wlen >= (size_t)s->cfg.write_queue_max) {
        (*s->st.closed_overflow)++;
        RDV_LOG_RL(&s->core_mod.handle, RDV_LOG_WARN,
                   "conn %llu: %zu bytes queued for a reader that does not keep up (core.write_queue_max); closing",
                   (unsigned long long)c->id, c->wlen);
        rdv_conn_close(s, c, RDV_CLOSE_OVERFLOW, false);
        return -ENOBUFS;
    }
    size_t done = 0; /* bytes of hdr+body already on the socket */
    if (!c->wlen && !seal) {
        struct iovec iov[2] = { { (void *)hdr, hlen }, { (void *)body, blen } };
        struct msghdr mh = { .msg_iov = hlen ? iov : iov + 1, .msg_iovlen = hlen ? 2 : 1 };
        ssize_t n;
        do
            n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            int e = -errno;
            rdv_conn_close(s, c, RDV_CLOSE_ERROR, false);
            return e;
        }
        if (n > 0)
            done = (size_t)n, c->bytes_out += (uint64_t)n;
        if (done == hlen + blen)
            return 0;
    }
    size_t total = hlen + blen + (seal ? RDV_SECURE_MACBYTES : 0) - done;
    int qr = queue_reserve(c, total);
    if (qr == -EDQUOT) {
        total_reached(c, s->st.closed_write_total, "write_total", s->cfg.write_total, "write queues",
                      "many readers fall behind at once");
        rdv_conn_close(s, c, RDV_CLOSE_OVERFLOW, false);
        return -ENOBUFS;
    }
    if (qr < 0) {
        RDV_LOG_RL(&s->core_mod.handle, RDV_LOG_ERR, "conn %llu: out of memory queueing %zu bytes; closing",
                   (unsigned long long)c->id, total);
        rdv_conn_close(s, c, RDV_CLOSE_ERROR, false);
        return -ENOMEM;
    }
    if (done < hlen)
        queue_append(c, hdr + done, hlen - done);
    if (seal) {
        rdv_secure_seal(c->key, &c->send_seq, body, blen, c->wbuf + c->woff + c->wlen);
        c->wlen += blen + RDV_SECURE_MACBYTES;
    } else {
        size_t skip = done > hlen ? done - hlen : 0;
        if (blen > skip) /* body may be NULL when blen is 0 */
            queue_append(c, body + skip, blen - skip);
    }
    int r = flush_queue(c);
    if (r < 0) {
        rdv_conn_close(s, c, RDV_CLOSE_ERROR, false);
        return r;
    }
    update_watchers(c);
    /* This write took the last byte of a queue that was waiting for the
     * socket: the write watcher, which reports drains, would be stopped
     * before it ran, and the owner never told (a WebSocket pong written
     * after the client caught up left the relay's partner paused for good,
     * relay.md §4.6). Report it from the loop as the watcher does
     * (write_cb), not from inside this write, whose caller may be in the
     * middle of a frame: the watcher stays started (drain_due, so that a
     * pause meanwhile does not drop the event) and is fed a write event. */
    if (held && !c->wlen && c->l->ops && c->l->ops->on_drain) {
        c->drain_due = true;
        update_watchers(c);
        ev_feed_event(s->loop, &c->wio, EV_WRITE);
    }
    return 0;
}

int rdv_conn_send_payload(rdv_server *s, rdv_conn *c, const uint8_t *p, size_t n)
{
    (void)s;
    uint8_t hdr[16];
    size_t hlen;
    /* Heartbeats (0-1 bytes) go out raw even on a secured connection (wire.md §6.4). */
    bool seal = c->secure && n > 1;
    size_t wire_len = n + (seal ? RDV_SECURE_MACBYTES : 0);
    if (c->codec)
        hlen = c->codec->header(c->codec_ud, wire_len, hdr);
    else if (c->l->mode == RDV_LISTEN_RAW)
        hlen = 0, seal = false;
    else
        hlen = rdv_frame_header(wire_len, hdr);
    if (!hlen && !(c->l->mode == RDV_LISTEN_RAW && !c->codec))
        return -EMSGSIZE;
    if (wire_len > (size_t)s->cfg.max_frame && !c->codec)
        return -EMSGSIZE;
    return conn_write(c, hdr, hlen, p, n, seal);
}

int rdv_conn_send_bytes(rdv_server *s, rdv_conn *c, const uint8_t *p, size_t n)
{
    (void)s;
    return conn_write(c, NULL, 0, p, n, false);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    rdv_conn *c = w->data;
    rdv_server *s = c->srv;
    c->drain_due = false;
    if (flush_queue(c) < 0) {
        rdv_conn_close(s, c, RDV_CLOSE_ERROR, false);
        return;
    }
    if (c->wlen == 0 && c->closing) {
        rdv_conn_close(s, c, RDV_CLOSE_LOCAL, false);
        return;
    }
    update_watchers(c);
    if (c->wlen == 0 && c->l->ops && c->l->ops->on_drain) {
        c->busy++;
        c->l->ops->on_drain(c->l->ud, c->id);
        conn_release(c);
    }
}

/* ------------------------------------------------------------------ closing */
static void arm_idle(rdv_conn *c);

void rdv_conn_close(rdv_server *s, rdv_conn *c, rdv_close_reason why, bool flush)
{
    if (c->dead)
        return;
    if (flush && c->wlen && s->cfg.shutdown_ms > 0) {
        /* Stop reading; the write watcher closes once the queue is empty or
         * the idle timer, armed here with the shutdown bound, fires. (A
         * module may have turned the idle timer off; a reader that never
         * reads must not keep a closing connection forever.) */
        c->closing = true;
        c->idle_ms = (uint64_t)s->cfg.shutdown_ms;
        c->last_ms = rdv_now_ms(s);
        arm_idle(c);
        update_watchers(c);
        return;
    }
    c->dead = true;
    rdv_conn *head = conn_table(s);
    HASH_DEL(head, c);
    conn_table_set(s, head);
    s->nconns--;
    ev_io_stop(s->loop, &c->rio);
    ev_io_stop(s->loop, &c->wio);
    ev_timer_stop(s->loop, &c->idle);
    if (why == RDV_CLOSE_OVERFLOW) {
        /* A reader that does not keep up gets a reset: a FIN would wait
         * behind the kernel's send buffer (megabytes, to a zero window), and
         * the kernel would hold that buffer for the orphaned socket long
         * after we let go of the connection. */
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    if (why != RDV_CLOSE_DETACHED) /* a detached socket now belongs to the module */
        close(c->fd);
    c->fd = -1;
    c->busy++;
    if (c->opened && c->l->ops && c->l->ops->on_close && why != RDV_CLOSE_DETACHED)
        c->l->ops->on_close(c->l->ud, c->id, why);
    rdv_conn_event ev = { .id = c->id, .listener = c->l, .listener_name = c->l->name,
                          .transport = c->transport, .peer = &c->peer, .why = why };
    rdv_hook_run(s, RDV_HOOK_CONN_CLOSE, &ev);
    conn_release(c);
}

void rdv_conns_close_all(rdv_server *s, bool flush)
{
    rdv_conn *c, *tmp, *head = conn_table(s);
    HASH_ITER(hh, head, c, tmp)
        rdv_conn_close(s, c, RDV_CLOSE_SHUTDOWN, flush);
}

size_t rdv_conns_pending_writes(rdv_server *s)
{
    size_t n = 0;
    rdv_conn *c, *tmp, *head = conn_table(s);
    HASH_ITER(hh, head, c, tmp)
        n += c->wlen;
    return n;
}

/* ------------------------------------------------------------------ reading */
static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    rdv_conn *c = w->data;
    rdv_server *s = c->srv;
    uint64_t now = rdv_now_ms(s);
    if (now - c->last_ms >= c->idle_ms) {
        if (!c->closing)
            (*s->st.closed_idle)++;
        rdv_conn_close(s, c, c->closing ? RDV_CLOSE_SHUTDOWN : RDV_CLOSE_IDLE, false);
        return;
    }
    /* Re-arm for the remainder: one timer per connection, never restarted per byte. */
    ev_timer_set(w, (double)(c->idle_ms - (now - c->last_ms)) / 1000.0, 0.);
    ev_timer_start(s->loop, w);
}

static void arm_idle(rdv_conn *c)
{
    rdv_server *s = c->srv;
    ev_timer_stop(s->loop, &c->idle);
    if (!c->idle_ms)
        return;
    ev_timer_set(&c->idle, (double)c->idle_ms / 1000.0, 0.);
    ev_timer_start(s->loop, &c->idle);
}

/* How much a buffer that is full grows by: doubling, from RBUF_INITIAL, at
 * most READ_CHUNK. Buffers grow as bytes arrive, never to a length a
 * header declares, so a client must send what it makes the server hold. */
static size_t rbuf_step(const rdv_conn *c)
{
    size_t step = c->rcap ? c->rcap : RBUF_INITIAL;
    return step < READ_CHUNK ? step : READ_CHUNK;
}

/* Make room for `need` more bytes after the unconsumed data: doubling, but
 * not past `ceiling` (0: none) when that is enough - the end of the frame
 * being read, so that its last bytes do not double its buffer. Read
 * buffers of all connections together stay within core.read_total
 * (s->rbuf_bytes, see buf_charge): growth past it is tried at exactly
 * what is needed, and refused (-EDQUOT) if even that does not fit. */
static int rbuf_reserve(rdv_conn *c, size_t need, size_t ceiling)
{
    rdv_server *s = c->srv;
    if (c->roff && c->roff + c->rlen + need > c->rcap) {
        memmove(c->rbuf, c->rbuf + c->roff, c->rlen);
        c->roff = 0;
    }
    if (c->rlen + need <= c->rcap)
        return 0;
    size_t cap = c->rcap ? c->rcap : RBUF_INITIAL;
    while (cap < c->rlen + need)
        cap *= 2;
    if (ceiling && cap > ceiling && ceiling >= c->rlen + need)
        cap = ceiling;
    uint64_t others = s->rbuf_bytes - buf_charge(c->rcap), total = (uint64_t)s->cfg.read_total;
    if (others + buf_charge(cap) > total) {
        if (others + buf_charge(c->rlen + need) > total)
            return -EDQUOT;
        cap = c->rlen + need;
    }
    uint8_t *nb = realloc(c->rbuf, cap);
    if (!nb)
        return -ENOMEM;
    c->rbuf = nb, c->rcap = cap;
    s->rbuf_bytes = others + buf_charge(cap);
    return 0;
}

/* The end of the frame being assembled when its header is complete (0
 * otherwise, and for raw connections): the buffer's ceiling. */
static size_t rbuf_frame_end(const rdv_conn *c)
{
    size_t hl = 0, pl = 0;
    if (c->l->mode == RDV_LISTEN_RAW || !c->rlen ||
        rdv_frame_parse(c->rbuf + c->roff, c->rlen, c->l->max_frame, &hl, &pl) != RDV_FRAME_NEED || !hl)
        return 0;
    return hl + pl;
}

/* A read buffer could not grow: core.read_total is reached (this
 * connection is the one growing), or memory ran out. */
static void rbuf_refused(rdv_conn *c, int e)
{
    rdv_server *s = c->srv;
    if (e == -EDQUOT)
        total_reached(c, s->st.closed_read_total, "read_total", s->cfg.read_total, "read buffers",
                      "clients send large frames on many connections at once");
    rdv_conn_close(s, c, RDV_CLOSE_ERROR, false);
}

/* Deliver one whole frame payload. Returns false if the connection is gone
 * or closing (stop processing). */
static bool deliver_frame(rdv_conn *c, const uint8_t *p, size_t n)
{
    rdv_server *s = c->srv;
    (*s->st.tcp_frames)++;
    uint8_t *plain = NULL;
    if (c->secure && n > 1) {
        /* 2..15 bytes cannot hold a record's tag: refused before the
         * plaintext is sized from them (+1: a sealed empty message is 16) */
        plain = n >= RDV_SECURE_MACBYTES ? malloc(n - RDV_SECURE_MACBYTES + 1) : NULL;
        if (!plain || rdv_secure_open(c->key, &c->recv_seq, p, n, plain) < 0) {
            free(plain);
            (*s->st.record_bad)++;
            RDV_LOG_RL(&s->core_mod.handle, RDV_LOG_NOTICE, "conn %llu: record failed to open; closing",
                       (unsigned long long)c->id);
            rdv_conn_close(s, c, RDV_CLOSE_PROTOCOL, false);
            return false;
        }
        p = plain, n -= RDV_SECURE_MACBYTES;
    }
    int r;
    if (c->l->mode == RDV_LISTEN_FRAMED)
        r = c->l->ops->on_frame(c->l->ud, c->id, p, n);
    else
        r = rdv_conn_dispatch(s, c, p, n);
    free(plain);
    if (r == RDV_CLOSE && !c->dead)
        rdv_conn_close(s, c, RDV_CLOSE_LOCAL, true);
    return !c->dead && !c->closing;
}

static void process_frames(rdv_conn *c)
{
    rdv_server *s = c->srv;
    while (!c->dead && !c->closing && !c->paused) {
        size_t hl, pl;
        rdv_frame_status st = rdv_frame_parse(c->rbuf + c->roff, c->rlen, c->l->max_frame, &hl, &pl);
        if (st == RDV_FRAME_TOO_BIG) {
            (*s->st.closed_oversize)++;
            RDV_LOG_RL(&s->core_mod.handle, RDV_LOG_NOTICE,
                       "conn %llu (%s): frame of %zu bytes over the limit of %zu; closing",
                       (unsigned long long)c->id, c->l->name, pl, c->l->max_frame);
            rdv_conn_close(s, c, RDV_CLOSE_OVERSIZE, false);
            return;
        }
        if (st == RDV_FRAME_NEED)
            return; /* read_cb grows the buffer as the rest arrives */
        c->last_ms = rdv_now_ms(s); /* idle counts from the last complete frame */
        const uint8_t *payload = c->rbuf + c->roff + hl;
        c->roff += hl + pl;
        c->rlen -= hl + pl;
        if (!deliver_frame(c, payload, pl))
            return;
    }
}

static void process_raw(rdv_conn *c)
{
    rdv_server *s = c->srv;
    while (!c->dead && !c->closing && !c->paused && c->rlen) {
        long used = c->l->ops->on_data(c->l->ud, c->id, c->rbuf + c->roff, c->rlen);
        if (c->dead)
            return;
        if (used < 0) {
            rdv_conn_close(s, c, RDV_CLOSE_PROTOCOL, true);
            return;
        }
        if ((size_t)used > c->rlen)
            used = (long)c->rlen;
        c->roff += (size_t)used, c->rlen -= (size_t)used;
        if (used == 0) {
            if (c->rlen >= c->l->max_buffer) {
                (*s->st.closed_oversize)++;
                rdv_conn_close(s, c, RDV_CLOSE_OVERSIZE, false);
            }
            return;
        }
    }
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    rdv_conn *c = w->data;
    rdv_server *s = c->srv;
    c->busy++;
    bool raw = c->l->mode == RDV_LISTEN_RAW;
    size_t limit = raw ? c->l->max_buffer : c->l->max_frame + RDV_FRAME_HDR_MAX;
    /* Read what fits: framed connections reserve space for the declared
     * frame only (process_frames), raw ones up to their buffer cap. */
    size_t room = c->rcap - c->roff - c->rlen;
    if (c->l->exact) {
        /* One byte while the header is incomplete (its length is in its
         * first byte), then exactly the rest of the frame. */
        size_t hl = 0, pl = 0, need = 1;
        if (c->rlen && rdv_frame_parse(c->rbuf + c->roff, c->rlen, c->l->max_frame, &hl, &pl) == RDV_FRAME_NEED &&
            hl)
            need = hl + pl - c->rlen;
        size_t chunk = need < rbuf_step(c) ? need : rbuf_step(c);
        if (room < chunk) {
            int e = rbuf_reserve(c, chunk, hl ? hl + pl : 0);
            if (e < 0) {
                rbuf_refused(c, e);
                conn_release(c);
                return;
            }
            room = c->rcap - c->roff - c->rlen;
        }
        if (room > need)
            room = need;
    } else if (room == 0) {
        size_t want = c->rlen < limit ? limit - c->rlen : 0;
        if (want > rbuf_step(c))
            want = rbuf_step(c);
        if (want == 0) {
            (*s->st.closed_oversize)++;
            rdv_conn_close(s, c, RDV_CLOSE_OVERSIZE, false);
            conn_release(c);
            return;
        }
        int e = rbuf_reserve(c, want, rbuf_frame_end(c));
        if (e < 0) {
            rbuf_refused(c, e);
            conn_release(c);
            return;
        }
        room = c->rcap - c->roff - c->rlen;
    }
    ssize_t n = recv(c->fd, c->rbuf + c->roff + c->rlen, room, 0);
    if (n == 0) {
        rdv_conn_close(s, c, RDV_CLOSE_PEER, false);
    } else if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            rdv_conn_close(s, c, RDV_CLOSE_ERROR, false);
    } else {
        c->rlen += (size_t)n;
        c->bytes_in += (uint64_t)n;
        if (raw) {
            c->last_ms = rdv_now_ms(s);
            process_raw(c);
        } else {
            process_frames(c);
        }
        /* Every byte consumed: the buffer goes back. A read buffer (64 KiB,
         * or a large frame's size) held by each idle connection would make
         * max_connections x max_frame the node's footprint; an idle
         * connection holds none. */
        if (!c->dead && c->rlen == 0 && c->rbuf) {
            s->rbuf_bytes -= buf_charge(c->rcap);
            free(c->rbuf);
            c->rbuf = NULL, c->rcap = 0, c->roff = 0;
        }
    }
    conn_release(c);
}

/* ------------------------------------------------------------------ accept */
/* No memory for a new connection: it is closed before anyone hears of it. */
static void conn_refuse_oom(rdv_server *s, rdv_listener *l, int fd, const rdv_addr *peer)
{
    close(fd);
    (*s->st.tcp_refused_oom)++;
    char a[RDV_ADDR_STRLEN];
    RDV_LOG_RL(&s->core_mod.handle, RDV_LOG_WARN,
               "%s: out of memory: connection from %s closed at accept (%zu open); fix: give rdvd more memory "
               "or lower core.max_connections",
               l->name, rdv_addr_str(peer, a, sizeof a), s->nconns);
}

void rdv_conn_accept(rdv_server *s, rdv_listener *l, int fd, const rdv_addr *peer)
{
    rdv_conn *c = calloc(1, sizeof *c);
    if (!c) {
        conn_refuse_oom(s, l, fd, peer);
        return;
    }
    c->id = ++s->next_id;
    c->srv = s, c->l = l, c->fd = fd, c->peer = *peer, c->transport = RDV_TR_TCP;
    c->idle_ms = l->idle_ms;
    c->opened_ms = c->last_ms = rdv_now_ms(s);
    ev_io_init(&c->rio, read_cb, fd, EV_READ);
    ev_io_init(&c->wio, write_cb, fd, EV_WRITE);
    ev_init(&c->idle, idle_cb);
    c->rio.data = c->wio.data = c->idle.data = c;
    rdv_conn *head = conn_table(s);
    HASH_ADD(hh, head, id, sizeof c->id, c);
    conn_table_set(s, head);
    if (!c->hh.tbl) { /* uthash rolled the add back: the table is as it was */
        free(c);
        conn_refuse_oom(s, l, fd, peer);
        return;
    }
    s->nconns++;

    c->busy++;
    int r = rdv_access_conn(s, RDV_TR_TCP, l, c->id, &c->peer);
    if (r == RDV_CLOSE) {
        (*s->st.refused_access)++;
        rdv_conn_close(s, c, RDV_CLOSE_LOCAL, false);
    } else {
        c->opened = true; /* from here on the owner hears on_close */
        if (l->ops && l->ops->on_open && l->ops->on_open(l->ud, c->id, &c->peer) == RDV_CLOSE)
            rdv_conn_close(s, c, RDV_CLOSE_LOCAL, true);
    }
    if (!c->dead) {
        rdv_conn_event ev = { .id = c->id, .listener = l, .listener_name = l->name,
                              .transport = c->transport, .peer = &c->peer };
        rdv_hook_run(s, RDV_HOOK_CONN_OPEN, &ev);
    }
    if (!c->dead) {
        arm_idle(c);
        update_watchers(c);
    }
    conn_release(c);
}

/* ------------------------------------------------------------------ module calls */
int rdv_conn_dispatch(rdv_server *s, rdv_conn *c, const uint8_t *p, size_t n)
{
    c->busy++;
    int r = rdv_dispatch(s, c->transport, c->l, c->l->name, c->id, &c->peer, p, n);
    bool dead = c->dead;
    conn_release(c);
    if (dead)
        return RDV_CLOSE;
    if (r == RDV_DECLINED) {
        /* Nobody handles this tag here: a stream peer speaking something we
         * do not understand is closed (rendezvous.md §4.2). */
        (*s->st.tcp_unhandled)++;
        return RDV_CLOSE;
    }
    return r;
}

int rdv_conn_set_key(rdv_conn *c, const uint8_t key[32])
{
    if (c->codec || c->l->mode == RDV_LISTEN_RAW)
        return -EINVAL; /* the record layer sits on hbb frames only */
    memcpy(c->key, key, 32);
    c->secure = true;
    c->send_seq = c->recv_seq = 0;
    return 0;
}

int rdv_conn_set_codec(rdv_conn *c, const rdv_codec *codec, void *ud)
{
    if (c->l->mode != RDV_LISTEN_RAW || c->secure)
        return -EINVAL;
    c->codec = codec, c->codec_ud = ud;
    c->transport = codec->transport;
    return 0;
}

int rdv_conn_set_peer(rdv_conn *c, const rdv_addr *peer)
{
    int fam = peer->u.sa.sa_family;
    if (fam != AF_INET && fam != AF_INET6)
        return -EAFNOSUPPORT;
    c->peer = *peer;
    rdv_addr_normalize(&c->peer);
    return 0;
}

int rdv_conn_set_idle(rdv_server *s, rdv_conn *c, uint64_t ms)
{
    if (c->closing) /* the shutdown bound of a flushing close stays */
        return 0;
    c->idle_ms = ms;
    c->last_ms = rdv_now_ms(s);
    arm_idle(c);
    return 0;
}

int rdv_conn_pause(rdv_server *s, rdv_conn *c, bool paused)
{
    (void)s;
    bool was = c->paused;
    c->paused = paused;
    update_watchers(c);
    if (was && !paused && c->rlen) { /* deliver what arrived while paused */
        c->busy++;
        if (c->l->mode == RDV_LISTEN_RAW)
            process_raw(c);
        else
            process_frames(c);
        conn_release(c);
    }
    return 0;
}

int rdv_conn_detach(rdv_server *s, rdv_conn *c, int *fd, uint8_t *buf, size_t *len)
{
    if (c->wlen)
        return -EBUSY;
    if (c->rlen > *len)
        return -ENOSPC;
    if (c->rlen)
        memcpy(buf, c->rbuf + c->roff, c->rlen);
    *len = c->rlen;
    /* Hand over the same descriptor (no dup): libev keeps its epoll state
     * per fd number, and a dup would leave a stale registration behind. */
    *fd = c->fd;
    c->rlen = 0;
    rdv_conn_close(s, c, RDV_CLOSE_DETACHED, false);
    return 0;
}

void rdv_conn_fill_info(rdv_conn *c, rdv_conn_info *out)
{
    memset(out, 0, sizeof *out);
    out->peer = c->peer;
    out->transport = c->transport;
    out->listener = c->l;
    out->listener_name = c->l->name;
    out->opened_ms = c->opened_ms;
    out->bytes_in = c->bytes_in;
    out->bytes_out = c->bytes_out;
    out->wqueue = c->wlen;
    out->secure = c->secure;
}
