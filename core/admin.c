/* core/admin.c — the admin console on a Unix-domain socket.
 *
 * Protocol (like upstream's console, but not reachable from the network):
 * connect, send one command line, read the answer until EOF. `rdvctl
 * console` wraps this; so does `echo stats | socat - UNIX-CONNECT:rdvd.sock`.
 * Modules register commands; the core provides help, modules, stats, conns,
 * reload and log-level. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin_answers.h"
#include "server.h"

#define ADMIN_LINE_MAX 4096
#define ADMIN_OUT_MAX (1 << 20)
#define ADMIN_TIMEOUT_S 5.0
#define ADMIN_MAX_CLIENTS 16
#define ADMIN_ARGV_MAX 32

typedef struct admin_cmd {
    char *name, *usage;
    rdv_admin_fn fn;
    void *ud;
    rdv_mod *mod;
    struct admin_cmd *next;
} admin_cmd;

typedef struct admin_client {
    struct rdv_admin *adm;
    int fd;
    ev_io io;
    ev_timer timeout;
    char line[ADMIN_LINE_MAX];
    size_t len;
    rdv_buf out;
    size_t sent;
    struct admin_client *next;
} admin_client;

struct rdv_admin {
    rdv_server *srv;
    int fd;
    char *path;
    ev_io io;
    admin_cmd *cmds;
    admin_client *clients;
    int nclients;
};

void rdv_buf_printf(rdv_buf *b, const char *fmt, ...)
{
    if (b->truncated)
        return;
    va_list ap;
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room && b->len + (size_t)n < b->limit) {
            b->len += (size_t)n;
            return;
        }
        size_t want = b->len + (size_t)n + 1;
        if (want > b->limit) {
            /* The answer ends here, with a visible marker (the limit is
             * soft by its length): a print that does not fit is dropped
             * whole, and so is the unfinished line before it (a module
             * printing a line in pieces), so the answer ends in whole
             * lines and one large print leaves only the marker. */
            static const char mark[] = "...(cut: the answer passed 1 MiB)\n";
            b->truncated = true;
            while (b->len && b->p[b->len - 1] != '\n')
                b->len--;
            if (b->cap < b->len + sizeof mark) {
                char *np = realloc(b->p, b->len + sizeof mark);
                if (!np)
                    return;
                b->p = np, b->cap = b->len + sizeof mark;
            }
            memcpy(b->p + b->len, mark, sizeof mark);
            b->len += sizeof mark - 1;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < want)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np)
            return;
        b->p = np, b->cap = cap;
    }
}

static admin_cmd *find_cmd(struct rdv_admin *a, const char *name)
{
    for (admin_cmd *c = a->cmds; c; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static int add_cmd(struct rdv_admin *a, rdv_mod *m, const char *name, const char *usage, rdv_admin_fn fn, void *ud)
{
    if (find_cmd(a, name)) {
        rdv_logf(m && m->desc ? m->desc->name : "core", RDV_LOG_ERR, "admin command '%s' is already registered", name);
        return -EEXIST;
    }
    admin_cmd *c = calloc(1, sizeof *c);
    if (!c || !(c->name = strdup(name)) || !(c->usage = strdup(usage ? usage : ""))) {
        if (c)
            free(c->name);
        free(c);
        return -ENOMEM;
    }
    c->fn = fn, c->ud = ud, c->mod = m;
    admin_cmd **pp = &a->cmds; /* sorted for help */
    while (*pp && strcmp((*pp)->name, name) < 0)
        pp = &(*pp)->next;
    c->next = *pp;
    *pp = c;
    return 0;
}

/* ---- built-in commands ---- */
static void cmd_help(void *ud, int argc, char **argv, rdv_buf *out)
{
    (void)argc, (void)argv;
    struct rdv_admin *a = ud;
    for (admin_cmd *c = a->cmds; c; c = c->next)
        rdv_buf_printf(out, "%-20s %s [%s]\n", c->name, c->usage, c->mod && c->mod->desc ? c->mod->desc->name : "core");
}

static void cmd_modules(void *ud, int argc, char **argv, rdv_buf *out)
{
    (void)argc, (void)argv;
    rdv_server *s = ((struct rdv_admin *)ud)->srv;
    for (size_t i = 0; i < s->nmods; i++)
        rdv_buf_printf(out, "%s %s %s\n", s->mods[i]->desc->name, s->mods[i]->desc->version, s->mods[i]->path);
}

static void cmd_stats(void *ud, int argc, char **argv, rdv_buf *out)
{
    rdv_server *s = ((struct rdv_admin *)ud)->srv;
    rdv_stats_print(s, out, argc > 1 ? argv[1] : NULL);
}

static void cmd_reload(void *ud, int argc, char **argv, rdv_buf *out)
{
    (void)argc, (void)argv;
    rdv_server *s = ((struct rdv_admin *)ud)->srv;
    rdv_buf_printf(out, rdv_server_reload(s) == 0 ? "reloaded\n" : RDV_ADMIN_RELOAD_REFUSED "; old configuration kept (see log)\n");
}

static void cmd_log_level(void *ud, int argc, char **argv, rdv_buf *out)
{
    (void)ud;
    rdv_log_level l;
    if (argc != 2 || rdv_log_parse_level(argv[1], &l) < 0) {
        rdv_buf_printf(out, "usage: log-level error|warn|notice|info|debug\n");
        return;
    }
    rdv_log_set_level(l);
    rdv_buf_printf(out, "log level %s\n", argv[1]);
}

/* ---- execution ---- */
void rdv_admin_exec(rdv_server *s, char *line, rdv_buf *out)
{
    char *argv[ADMIN_ARGV_MAX];
    int argc = 0;
    for (char *save = NULL, *t = strtok_r(line, " \t\r\n", &save); t && argc < ADMIN_ARGV_MAX;
         t = strtok_r(NULL, " \t\r\n", &save))
        argv[argc++] = t;
    if (!argc)
        return;
    admin_cmd *c = s->admin ? find_cmd(s->admin, argv[0]) : NULL;
    if (!c) {
        rdv_buf_printf(out, RDV_ADMIN_UNKNOWN "%s'; try help\n", argv[0]);
        return;
    }
    c->fn(c->ud, argc, argv, out);
}

static void client_free(admin_client *cl)
{
    struct rdv_admin *a = cl->adm;
    ev_io_stop(a->srv->loop, &cl->io);
    ev_timer_stop(a->srv->loop, &cl->timeout);
    close(cl->fd);
    for (admin_client **pp = &a->clients; *pp; pp = &(*pp)->next)
        if (*pp == cl) {
            *pp = cl->next;
            break;
        }
    a->nclients--;
    free(cl->out.p);
    free(cl);
}

static void client_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    admin_client *cl = w->data;
    while (cl->sent < cl->out.len) {
        ssize_t n = send(cl->fd, cl->out.p + cl->sent, cl->out.len - cl->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            break;
        }
        cl->sent += (size_t)n;
    }
    client_free(cl);
}

static void client_run(admin_client *cl)
{
    rdv_server *s = cl->adm->srv;
    cl->line[cl->len] = 0;
    rdv_admin_exec(s, cl->line, &cl->out);
    ev_io_stop(s->loop, &cl->io);
    ev_io_init(&cl->io, client_write_cb, cl->fd, EV_WRITE);
    cl->io.data = cl;
    ev_io_start(s->loop, &cl->io);
}

static void client_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    admin_client *cl = w->data;
    ssize_t n = recv(cl->fd, cl->line + cl->len, sizeof cl->line - 1 - cl->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (cl->len)
            client_run(cl); /* EOF after a line without newline */
        else
            client_free(cl);
        return;
    }
    cl->len += (size_t)n;
    if (memchr(cl->line, '\n', cl->len) || cl->len == sizeof cl->line - 1)
        client_run(cl);
}

static void client_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    client_free(w->data);
}

static void admin_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct rdv_admin *a = w->data;
    int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (a->nclients >= ADMIN_MAX_CLIENTS) {
        close(fd);
        return;
    }
    admin_client *cl = calloc(1, sizeof *cl);
    if (!cl) {
        close(fd);
        return;
    }
    cl->adm = a, cl->fd = fd;
    cl->out.limit = ADMIN_OUT_MAX;
    ev_io_init(&cl->io, client_read_cb, fd, EV_READ);
    cl->io.data = cl;
    ev_timer_init(&cl->timeout, client_timeout_cb, ADMIN_TIMEOUT_S, 0);
    cl->timeout.data = cl;
    ev_io_start(loop, &cl->io);
    ev_timer_start(loop, &cl->timeout);
    cl->next = a->clients;
    a->clients = cl;
    a->nclients++;
}

static int admin_listen(struct rdv_admin *a, const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sun.sun_path) {
        rdv_logf("core", RDV_LOG_ERR, "core.admin_socket '%s' is longer than %zu bytes: use a shorter path", path,
                 sizeof sun.sun_path - 1);
        return -ENAMETOOLONG;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* A stale socket from a previous run is replaced; a live one is not. */
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0) {
        close(fd);
        rdv_logf("core", RDV_LOG_ERR, "core.admin_socket %s is in use by a running rdvd: stop it or choose another path", path);
        return -EADDRINUSE;
    }
    unlink(path);
    mode_t old = umask(0077); /* the console is for the server's own user */
    int r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (r < 0 || listen(fd, 16) < 0) {
        r = -errno;
        rdv_logf("core", RDV_LOG_ERR, "cannot create core.admin_socket %s: %s (check the directory exists and is writable)",
                 path, strerror(errno));
        close(fd);
        return r;
    }
    a->fd = fd;
    return 0;
}

int rdv_admin_open(rdv_server *s, const char *path)
{
    struct rdv_admin *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->srv = s;
    a->fd = -1;
    s->admin = a;
    add_cmd(a, NULL, "help", "list commands", cmd_help, a);
    add_cmd(a, NULL, "modules", "loaded modules", cmd_modules, a);
    add_cmd(a, NULL, "stats", "[prefix] counters and gauges", cmd_stats, a);
    add_cmd(a, NULL, "reload", "re-read conf.d (like SIGHUP)", cmd_reload, a);
    add_cmd(a, NULL, "log-level", "<level> change the log level", cmd_log_level, a);
    if (!path || !*path)
        return 0;
    int r = admin_listen(a, path);
    if (r < 0)
        return r;
    a->path = strdup(path);
    ev_io_init(&a->io, admin_accept_cb, a->fd, EV_READ);
    a->io.data = a;
    ev_io_start(s->loop, &a->io);
    return 0;
}

int rdv_admin_register(rdv_server *s, rdv_mod *m, const char *name, const char *usage, rdv_admin_fn fn, void *ud)
{
    return s->admin ? add_cmd(s->admin, m, name, usage, fn, ud) : -ENODEV;
}

void rdv_admin_close(rdv_server *s)
{
    struct rdv_admin *a = s->admin;
    if (!a)
        return;
    while (a->clients)
        client_free(a->clients);
    if (a->fd >= 0) {
        ev_io_stop(s->loop, &a->io);
        close(a->fd);
        if (a->path)
            unlink(a->path);
    }
    for (admin_cmd *c = a->cmds, *n; c; c = n) {
        n = c->next;
        free(c->name), free(c->usage), free(c);
    }
    free(a->path);
    free(a);
    s->admin = NULL;
}
