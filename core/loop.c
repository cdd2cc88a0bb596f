/* core/loop.c — timers, fd watchers and async wake-ups over the libev loop. */
#include <errno.h>
#include <stdlib.h>

#include "server.h"

struct rdv_timer {
    ev_timer w;
    rdv_server *srv;
    void (*cb)(void *);
    void *ud;
};

struct rdv_io {
    ev_io w;
    rdv_server *srv;
    void (*cb)(void *, int, unsigned);
    void *ud;
};

struct rdv_async {
    ev_async w;
    rdv_server *srv;
    void (*cb)(void *);
    void *ud;
};

uint64_t rdv_now_ms(rdv_server *s) { return (uint64_t)(ev_now(s->loop) * 1000.0); }

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    rdv_timer *t = (rdv_timer *)w;
    t->cb(t->ud);
}

rdv_timer *rdv_timer_new(rdv_server *s, void (*cb)(void *), void *ud)
{
    rdv_timer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->srv = s, t->cb = cb, t->ud = ud;
    ev_init(&t->w, timer_cb);
    return t;
}

void rdv_timer_start(rdv_timer *t, uint64_t after_ms, uint64_t repeat_ms)
{
    ev_timer_stop(t->srv->loop, &t->w);
    ev_timer_set(&t->w, (double)after_ms / 1000.0, (double)repeat_ms / 1000.0);
    ev_timer_start(t->srv->loop, &t->w);
}

void rdv_timer_stop(rdv_timer *t)
{
    if (t)
        ev_timer_stop(t->srv->loop, &t->w);
}

void rdv_timer_free(rdv_timer *t)
{
    if (!t)
        return;
    ev_timer_stop(t->srv->loop, &t->w);
    free(t);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    rdv_io *io = (rdv_io *)w;
    unsigned r = ((revents & EV_READ) ? RDV_IO_READ : 0) | ((revents & EV_WRITE) ? RDV_IO_WRITE : 0);
    io->cb(io->ud, w->fd, r);
}

static int ev_bits(unsigned ev)
{
    return ((ev & RDV_IO_READ) ? EV_READ : 0) | ((ev & RDV_IO_WRITE) ? EV_WRITE : 0);
}

rdv_io *rdv_io_new(rdv_server *s, int fd, unsigned ev, void (*cb)(void *, int, unsigned), void *ud)
{
    rdv_io *io = calloc(1, sizeof *io);
    if (!io)
        return NULL;
    io->srv = s, io->cb = cb, io->ud = ud;
    ev_io_init(&io->w, io_cb, fd, ev_bits(ev));
    if (ev)
        ev_io_start(s->loop, &io->w);
    return io;
}

void rdv_io_set(rdv_io *io, unsigned ev)
{
    int bits = ev_bits(ev);
    if (bits == (io->w.events & (EV_READ | EV_WRITE)) && ev_is_active(&io->w))
        return;
    ev_io_stop(io->srv->loop, &io->w);
    if (bits) {
        ev_io_set(&io->w, io->w.fd, bits);
        ev_io_start(io->srv->loop, &io->w);
    }
}

void rdv_io_free(rdv_io *io)
{
    if (!io)
        return;
    ev_io_stop(io->srv->loop, &io->w);
    free(io);
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop, (void)revents;
    rdv_async *a = (rdv_async *)w;
    a->cb(a->ud);
}

rdv_async *rdv_async_new(rdv_server *s, void (*cb)(void *), void *ud)
{
    rdv_async *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->srv = s, a->cb = cb, a->ud = ud;
    ev_async_init(&a->w, async_cb);
    ev_async_start(s->loop, &a->w);
    return a;
}

void rdv_async_send(rdv_async *a) { ev_async_send(a->srv->loop, &a->w); }

void rdv_async_free(rdv_async *a)
{
    if (!a)
        return;
    ev_async_stop(a->srv->loop, &a->w);
    free(a);
}
