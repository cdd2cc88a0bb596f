/* relay_console.c — upstream's loopback TCP console (relay.md §8), opt-in
 * with relay.console_loopback: a loopback client of the relay port sends
 * one command; we do ONE read of at most 1024 bytes within 1 s, run it,
 * write the whole answer and close. Sessions are few and bounded. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

#define RELAY_CONSOLE_MAX 16
#define RELAY_CONSOLE_READ 1024
#define RELAY_CONSOLE_READ_MS 1000
#define RELAY_CONSOLE_WRITE_MS 5000
#define RELAY_CONSOLE_ARGS 64

struct relay_console {
    relay_console *prev, *next;
    relay *r;
    int fd;
    rdv_io *io;
    rdv_timer *timer;
    rdv_text out;
    size_t sent;
};

static void relay_console_free(relay_console *c)
{
    relay *r = c->r;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->consoles = c->next;
    if (c->next)
        c->next->prev = c->prev;
    r->nconsoles--;
    r->core->api->io_free(c->io);
    r->core->api->timer_free(c->timer);
    close(c->fd);
    rdv_text_free(&c->out);
    free(c);
}

static void relay_console_timeout(void *ud) { relay_console_free(ud); }

static void relay_console_write(relay_console *c)
{
    while (c->sent < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->sent, c->out.len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* the write watcher continues; unlike upstream the whole answer goes out */
        if (n <= 0)
            break;
        c->sent += (size_t)n;
    }
    relay_console_free(c);
}

static void relay_console_io(void *ud, int fd, unsigned revents)
{
    relay_console *c = ud;
    if (revents & RDV_IO_WRITE) {
        relay_console_write(c);
        return;
    }
    char buf[RELAY_CONSOLE_READ + 1];
    ssize_t n = recv(fd, buf, RELAY_CONSOLE_READ, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0 || !rdv_utf8_valid((const uint8_t *)buf, (size_t)n) || memchr(buf, '\0', (size_t)n)) {
        relay_console_free(c);
        return;
    }
    buf[n] = '\0';
    char *argv[RELAY_CONSOLE_ARGS];
    int argc = relay_cmd_split(buf, argv, RELAY_CONSOLE_ARGS);
    relay_cmd_run(c->r, argc, argv, &c->out);
    if (!c->out.len) {
        relay_console_free(c);
        return;
    }
    const rdv_core_api *api = c->r->core->api;
    api->io_set(c->io, RDV_IO_WRITE);
    api->timer_start(c->timer, RELAY_CONSOLE_WRITE_MS, 0);
    relay_console_write(c);
}

void relay_console_start(relay *r, int fd)
{
    if (fd < 0)
        return;
    const rdv_core_api *api = r->core->api;
    relay_console *c = r->nconsoles < RELAY_CONSOLE_MAX ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        close(fd);
        return;
    }
    c->r = r, c->fd = fd;
    c->out.limit = 64u << 20; /* `u` on a very busy relay still fits */
    c->io = api->io_new(r->core, fd, RDV_IO_READ, relay_console_io, c);
    c->timer = api->timer_new(r->core, relay_console_timeout, c);
    c->next = r->consoles;
    if (r->consoles)
        r->consoles->prev = c;
    r->consoles = c;
    r->nconsoles++;
    (*r->st.console_sessions)++;
    if (!c->io || !c->timer) {
        relay_console_free(c);
        return;
    }
    api->timer_start(c->timer, RELAY_CONSOLE_READ_MS, 0);
}

void relay_consoles_close_all(relay *r)
{
    while (r->consoles)
        relay_console_free(r->consoles);
}
