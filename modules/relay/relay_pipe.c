/* relay_pipe.c — the raw pipe between two TCP sockets (relay.md §4.2):
 * splice(2) socket -> pipe -> socket, so payload bytes never enter user
 * space. Early bytes (read by the core past the first frame, §4.4) go out
 * first with send().
 *
 * Back-pressure (§4.6): a direction reads only when its previous chunk is
 * fully written, so unsent data per direction is bounded by one pipe
 * (relay.pipe_size); a reader that stops reading stops the writer through
 * TCP flow control, with no user-space buffer at all.
 *
 * Pipes are kernel memory and cost two descriptors each, so a direction
 * holds one only while data is in flight; empty pipes go back to a small
 * pool (relay.pipe_pool). An idle pair holds two sockets and nothing else.
 *
 * Pipe size: a pipe starts at relay.pipe_size; when a read fills it (the
 * source had more), it grows x4 up to relay.pipe_size_max, so a fast flow
 * moves up to 1 MiB per splice pair (one loopback pair both ways ~1.3x
 * faster than with 256 KiB, see README) while slow flows keep small pipes: an unprivileged
 * user's pipes count against pipe-user-pages-soft (64 MiB), beyond which
 * the kernel refuses to grow them. A grown pipe stays with its direction
 * (no resize per wake-up) until the pair has been quiet for a second
 * (relay_raw_trim); pooled pipes are back at pipe_size. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* splice, F_SETPIPE_SZ */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

#define RELAY_PUMP_ROUNDS 8   /* chunks per direction per wake-up (fairness) */
#define RELAY_CHUNK_DEFAULT 65536

/* ------------------------------------------------------------------ pipe pool */
int relay_pipe_get(relay *r, int *pr, int *pw, uint32_t *cap)
{
    if (r->npipes) {
        r->npipes--;
        *pr = r->pipes[r->npipes][0], *pw = r->pipes[r->npipes][1];
        *cap = r->pipe_base;
        r->pipes_in_use++;
        return 0;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        int e = errno;
        (*r->st.pipe_failures)++;
        RDV_LOG_RL(r->core, RDV_LOG_WARN, "cannot create a pipe: %s (raise RLIMIT_NOFILE; see README fd budget)",
                   strerror(e));
        return -e;
    }
    if (r->cfg->pipe_size > 0 && fcntl(fds[1], F_SETPIPE_SZ, (int)r->cfg->pipe_size) < 0 && !r->pipe_size_warned) {
        r->pipe_size_warned = true; /* once: the kernel refuses for every pipe alike */
        RDV_WARN(r->core, "F_SETPIPE_SZ %lld: %s; pipes keep a smaller size (see /proc/sys/fs/pipe-max-size "
                 "and pipe-user-pages-soft)", (long long)r->cfg->pipe_size, strerror(errno));
    }
    (*r->st.pipes_created)++;
    r->pipes_in_use++;
    *pr = fds[0], *pw = fds[1];
    int sz = fcntl(fds[1], F_GETPIPE_SZ);
    *cap = sz > 0 ? (uint32_t)sz : RELAY_CHUNK_DEFAULT;
    if (!r->pipe_base)
        r->pipe_base = *cap;
    return 0;
}

/* Grow the pipe of a flow that filled it, if it may and can. */
static void relay_pipe_grow(relay *r, relay_dir *dir)
{
    int64_t max = r->cfg->pipe_size_max;
    if (max <= 0 || dir->cap >= (uint64_t)max || dir->nogrow)
        return;
    uint64_t want = (uint64_t)dir->cap * 4;
    if (want > (uint64_t)max)
        want = (uint64_t)max;
    int sz = fcntl(dir->pw, F_SETPIPE_SZ, (int)want);
    if (sz < 0) {
        dir->nogrow = true;
        if (!r->pipe_grow_warned) { /* once: pipe-user-pages-soft is per user, it stays reached */
            r->pipe_grow_warned = true;
            RDV_WARN(r->core, "cannot grow a splice pipe to %llu bytes: %s; fast pairs keep %u-byte pipes (raise "
                     "/proc/sys/fs/pipe-user-pages-soft, or lower relay.pipe_size_max)", (unsigned long long)want,
                     strerror(errno), dir->cap);
        }
        return;
    }
    dir->cap = (uint32_t)sz;
    (*r->st.pipes_grown)++;
}

/* A pipe that still holds bytes is closed: they belong to a dead pair. A
 * grown pipe shrinks back to the base size before it is pooled. */
void relay_pipe_put(relay *r, int pr, int pw, uint32_t cap, bool empty)
{
    r->pipes_in_use--;
    if (empty && cap != r->pipe_base && fcntl(pw, F_SETPIPE_SZ, (int)r->pipe_base) != (int)r->pipe_base)
        empty = false; /* could not shrink: not pooled */
    if (empty && r->npipes < r->pipes_cap) {
        r->pipes[r->npipes][0] = pr, r->pipes[r->npipes][1] = pw;
        r->npipes++;
        return;
    }
    close(pr);
    close(pw);
}

void relay_pipes_free(relay *r)
{
    for (size_t i = 0; i < r->npipes; i++) {
        close(r->pipes[i][0]);
        close(r->pipes[i][1]);
    }
    r->npipes = 0;
    free(r->pipes);
    r->pipes = NULL;
    r->pipes_cap = 0;
}

/* ------------------------------------------------------------------ raw pairs */
bool relay_raw_pending(const relay_pair *p, int d)
{
    const relay_dir *dir = &p->u.raw.dir[d];
    return dir->early_off < dir->early_len || dir->in_pipe > 0;
}

/* Read side i when its last chunk is out and the pair is not throttled;
 * wait for write on side i when data for it hit EAGAIN. */
static void relay_raw_watch(relay *r, relay_pair *p)
{
    for (int i = 0; i < 2; i++) {
        const relay_dir *out = &p->u.raw.dir[i], *in = &p->u.raw.dir[!i];
        unsigned ev = 0;
        if (!p->throttled && !out->eof && !relay_raw_pending(p, i))
            ev |= RDV_IO_READ;
        if (in->blocked && relay_raw_pending(p, !i))
            ev |= RDV_IO_WRITE;
        if (ev != p->u.raw.ev[i]) {
            r->core->api->io_set(p->u.raw.io[i], ev);
            p->u.raw.ev[i] = ev;
        }
    }
}

static void relay_raw_drop_early(relay *r, relay_dir *dir)
{
    if (!dir->early)
        return;
    r->early_bytes -= dir->early_len;
    free(dir->early);
    dir->early = NULL;
    dir->early_len = dir->early_off = 0;
}

/* Write what direction d holds. 1: all out; 0: destination full; -1: error. */
static int relay_raw_flush(relay *r, relay_pair *p, int d)
{
    relay_dir *dir = &p->u.raw.dir[d];
    int dst = p->u.raw.fd[!d];
    uint64_t now = r->core->api->now_ms(r->core);
    while (dir->early_off < dir->early_len) {
        ssize_t n = send(dst, dir->early + dir->early_off, dir->early_len - dir->early_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                dir->blocked = true;
                return 0;
            }
            return -1;
        }
        dir->early_off += (uint32_t)n;
        p->out_ms[d] = now;
    }
    relay_raw_drop_early(r, dir);
    while (dir->in_pipe) {
        ssize_t n = splice(dir->pr, NULL, dst, NULL, dir->in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                dir->blocked = true;
                return 0;
            }
            return -1;
        }
        if (n == 0)
            return -1;
        dir->in_pipe -= (uint32_t)n;
        p->out_ms[d] = now;
    }
    dir->blocked = false;
    return 1;
}

/* splice() from a TCP socket stops at an urgent mark: it returns EAGAIN
 * while poll keeps reporting the socket readable, so the level-triggered
 * watcher would run the pump on every loop pass (a spinning loop any
 * client can cause with one MSG_OOB byte) and the bytes after the mark
 * would never move. Only an ordinary read passes the mark. As upstream's
 * read() does, the urgent byte itself is dropped and the data after it is
 * read into the direction's early buffer, which the next flush sends.
 * 1: read (n bytes, or the end of the stream); 0: not at a mark; -1: error. */
static int relay_raw_past_mark(relay *r, relay_pair *p, int d, size_t want)
{
    relay_dir *dir = &p->u.raw.dir[d];
    int atmark = 0;
    if (ioctl(p->u.raw.fd[d], SIOCATMARK, &atmark) < 0 || !atmark)
        return 0;
    if (want > 65536)
        want = 65536;
    uint8_t *buf = malloc(want);
    if (!buf)
        return -1;
    ssize_t n;
    do
        n = recv(p->u.raw.fd[d], buf, want, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    (*r->st.urgent_marks)++;
    if (n <= 0) {
        free(buf);
        if (n == 0) {
            dir->eof = true;
            return 1;
        }
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
    dir->early = buf; /* the flush before this read left it empty */
    dir->early_len = (uint32_t)n;
    dir->early_off = 0;
    r->early_bytes += (uint64_t)n;
    p->out_ms[d] = r->core->api->now_ms(r->core); /* pending from now */
    return relay_bw_account(r, p, d, (size_t)n) ? 1 : -2;
}

static void relay_raw_release_pipe(relay *r, relay_dir *dir)
{
    if (dir->pr < 0)
        return;
    relay_pipe_put(r, dir->pr, dir->pw, dir->cap, dir->in_pipe == 0);
    dir->pr = dir->pw = -1;
    dir->in_pipe = 0;
    dir->cap = 0;
    dir->filled = dir->nogrow = false;
}

/* Move direction d: flush, then read another chunk while the destination
 * keeps up. Returns false if the pair ended (p is freed). */
static bool relay_raw_pump(relay *r, relay_pair *p, int d)
{
    relay_dir *dir = &p->u.raw.dir[d];
    bool moved = false; /* a splice read bytes in this call */
    /* Every round starts with a flush, and so does the way out: a chunk is
     * never left in the pipe without a write attempt (and thus a watcher). */
    for (int round = 0;; round++) {
        int f = relay_raw_flush(r, p, d);
        if (f < 0) {
            relay_pair_end(r, p, RELAY_END_ERROR);
            return false;
        }
        if (f == 0 || dir->eof || p->throttled || round == RELAY_PUMP_ROUNDS)
            break; /* blocked; or all read before the FIN is out (no half-close) */
        if (dir->pr < 0 && relay_pipe_get(r, &dir->pr, &dir->pw, &dir->cap) < 0) {
            relay_throttle(r, p); /* retried on the refill tick */
            break;
        }
        if (dir->filled)
            relay_pipe_grow(r, dir);
        size_t want = relay_bw_allow(r, p, dir->cap);
        if (!want) {
            relay_throttle(r, p);
            break;
        }
        ssize_t n = splice(p->u.raw.fd[d], NULL, dir->pw, NULL, want, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n == 0) {
            dir->eof = true;
            continue;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                /* A read that stopped at a mark comes back readable with
                 * nothing to splice: look for the mark only then, not at
                 * the end of every burst. */
                int m = moved ? 0 : relay_raw_past_mark(r, p, d, want);
                if (m == 1)
                    continue; /* the next round's flush sends what was read */
                if (m == -2)
                    return false; /* ended by relay_bw_account */
                if (m == 0)
                    break;
            }
            relay_pair_end(r, p, RELAY_END_ERROR);
            return false;
        }
        dir->in_pipe += (uint32_t)n;
        moved = true;
        dir->filled = (size_t)n == dir->cap;
        p->out_ms[d] = r->core->api->now_ms(r->core); /* the pipe was empty: pending from now */
        if (!relay_bw_account(r, p, d, (size_t)n))
            return false;
    }
    if (dir->eof && !relay_raw_pending(p, d)) {
        relay_pair_end(r, p, RELAY_END_EOF);
        return false;
    }
    if (dir->in_pipe == 0 && dir->cap <= r->pipe_base) /* a grown pipe stays while its flow lasts */
        relay_raw_release_pipe(r, dir);
    relay_raw_watch(r, p);
    return true;
}

/* From the module tick: a grown pipe whose flow has been quiet for a second
 * goes back (shrunk) to the pool, so quiet pairs hold no pipe. */
void relay_raw_trim(relay *r, relay_pair *p, uint64_t now)
{
    if (now - relay_pair_out_ms(p) < 1000)
        return;
    for (int d = 0; d < 2; d++)
        if (p->u.raw.dir[d].in_pipe == 0)
            relay_raw_release_pipe(r, &p->u.raw.dir[d]);
}

static void relay_raw_io_cb(void *ud, int fd, unsigned revents)
{
    relay_pair *p = ud;
    relay *r = p->r;
    int side = fd == p->u.raw.fd[0] ? 0 : 1;
    /* Writable side: drain what is queued for it (and read on from the other). */
    if ((revents & RDV_IO_WRITE) && !relay_raw_pump(r, p, !side))
        return;
    if (revents & RDV_IO_READ)
        relay_raw_pump(r, p, side);
}

bool relay_raw_resume(relay *r, relay_pair *p)
{
    return relay_raw_pump(r, p, 0) && relay_raw_pump(r, p, 1);
}

void relay_raw_close(relay *r, relay_pair *p)
{
    for (int i = 0; i < 2; i++) {
        r->core->api->io_free(p->u.raw.io[i]);
        p->u.raw.io[i] = NULL;
        if (p->u.raw.fd[i] >= 0)
            close(p->u.raw.fd[i]);
        relay_raw_release_pipe(r, &p->u.raw.dir[i]);
        relay_raw_drop_early(r, &p->u.raw.dir[i]);
    }
    r->nraw--;
}

relay_pair *relay_pair_raw_new(relay *r, int fd[2], uint8_t *early[2], size_t early_len[2], const rdv_addr addr[2])
{
    relay_pair *p = calloc(1, sizeof *p);
    if (!p) {
        for (int i = 0; i < 2; i++) {
            close(fd[i]);
            r->early_bytes -= early_len[i];
            free(early[i]);
        }
        (*r->st.rej_internal)++;
        return NULL;
    }
    p->mode = RELAY_MODE_RAW;
    for (int i = 0; i < 2; i++) {
        p->u.raw.fd[i] = fd[i];
        relay_dir *dir = &p->u.raw.dir[i];
        dir->pr = dir->pw = -1;
        dir->early = early[i];
        dir->early_len = (uint32_t)early_len[i];
    }
    relay_pair_init(r, p, addr);
    r->nraw++;
    for (int i = 0; i < 2; i++)
        if (!(p->u.raw.io[i] = r->core->api->io_new(r->core, fd[i], 0, relay_raw_io_cb, p))) {
            relay_pair_end(r, p, RELAY_END_NOMEM);
            return NULL;
        }
    /* Early bytes count as received traffic like any other chunk. */
    for (int i = 0; i < 2; i++)
        if (early_len[i] && !relay_bw_account(r, p, i, early_len[i]))
            return NULL;
    return relay_raw_resume(r, p) ? p : NULL;
}
