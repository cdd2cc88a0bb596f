/* relay_test.c — see relay_test.h. */
#include "relay_test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

fc_core *fc;
relay *R;
void *st;
char rt_dir[64];

#define RT_MAX_FDS 4096
static int rt_srv[RT_MAX_FDS];
static size_t rt_nsrv;

int rt_start(const char *conf)
{
    signal(SIGPIPE, SIG_IGN); /* the real core ignores it too */
    snprintf(rt_dir, sizeof rt_dir, "/tmp/relay-ut-XXXXXX");
    cr_assert_not_null(mkdtemp(rt_dir));
    cr_assert_eq(chdir(rt_dir), 0);
    fc = fc_new();
    rt_nsrv = 0;
    int r = fc_load(fc, rdv_module_get(), conf, &st);
    R = r == 0 ? st : NULL;
    return r;
}

void rt_setup(void) { cr_assert_eq(rt_start(NULL), 0); }

void rt_teardown(void)
{
    fc_free(fc);
    fc = NULL, R = NULL, st = NULL;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", rt_dir);
    if (chdir("/") != 0 || system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", rt_dir);
}

int rt_reload_module(const char *conf)
{
    fc_unload(fc, rdv_module_get(), st);
    int r = fc_load(fc, rdv_module_get(), conf, &st);
    R = r == 0 ? st : NULL;
    return r;
}

void rt_write_file(const char *name, const char *text)
{
    FILE *f = fopen(name, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

size_t rt_rr(uint8_t *out, size_t cap, const char *uuid, const char *key)
{
    Hbb__RequestRelay rr = HBB__REQUEST_RELAY__INIT;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    rr.uuid = (char *)uuid;
    if (key)
        rr.licence_key = (char *)key;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY;
    m.request_relay = &rr;
    size_t n = hbb__rendezvous_message__get_packed_size(&m);
    cr_assert_leq(n, cap);
    return hbb__rendezvous_message__pack(&m, out);
}

rt_conn rt_open(const char *addr)
{
    rt_conn c;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    c.cli = sv[0], c.srv = sv[1];
    rdv_listener *l = fc_find_listener(fc, "relay", RDV_TR_TCP);
    cr_assert_not_null(l, "the relay listener is open");
    rdv_addr a = fc_addr(addr);
    c.id = fc_owned_open(fc, l, &a);
    if (fc_conn_alive(fc, c.id)) {
        cr_assert_eq(fc_conn_set_fd(fc, c.id, c.srv), 0);
    } else {
        close(c.srv); /* refused at accept: the module never got it */
        c.srv = -1;
    }
    if (c.srv >= 0 && rt_nsrv < RT_MAX_FDS)
        rt_srv[rt_nsrv++] = c.srv;
    return c;
}

int rt_send_first(rt_conn *c, const uint8_t *p, size_t n)
{
    int r = fc_conn_raw(fc, c->id, p, n);
    /* Refused before detach: the fake core forgets the fd, close it here. */
    const fc_conn_state *s = fc_conn(fc, c->id);
    if (s && !s->open && s->why != RDV_CLOSE_DETACHED && c->srv >= 0) {
        close(c->srv);
        for (size_t i = 0; i < rt_nsrv; i++)
            if (rt_srv[i] == c->srv)
                rt_srv[i] = -1;
        c->srv = -1;
    }
    return r;
}

int rt_request(rt_conn *c, const char *uuid, const char *key)
{
    uint8_t buf[1024];
    size_t n = rt_rr(buf, sizeof buf, uuid, key);
    return rt_send_first(c, buf, n);
}

void rt_pair(rt_conn *a, rt_conn *b, const char *uuid)
{
    *a = rt_open("10.0.0.1:4001");
    *b = rt_open("10.0.0.2:4002");
    cr_assert_eq(rt_request(a, uuid, NULL), RDV_OK);
    cr_assert_eq(rt_request(b, uuid, NULL), RDV_OK);
}

void rt_pump(int rounds)
{
    for (int k = 0; k < rounds; k++) {
        for (size_t i = 0; i < rt_nsrv; i++) {
            int fd = rt_srv[i];
            if (fd < 0)
                continue;
            struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };
            if (poll(&p, 1, 0) != 1 || (p.revents & POLLNVAL))
                continue;
            unsigned ev = ((p.revents & (POLLIN | POLLHUP | POLLERR)) ? RDV_IO_READ : 0) |
                          ((p.revents & POLLOUT) ? RDV_IO_WRITE : 0);
            if (ev)
                fc_io_fire(fc, fd, ev);
        }
    }
}

void rt_send_frame(int fd, const void *p, size_t n)
{
    uint8_t hdr[4];
    size_t hl = rdv_frame_header(n, hdr);
    rt_write_all(fd, hdr, hl);
    if (n)
        rt_write_all(fd, p, n);
}

long rt_read_frame(int fd, uint8_t *buf, size_t cap, int ms)
{
    size_t have = 0, hl, pl;
    for (int t = 0; t < ms * 10; t++) {
        rt_pump(1);
        ssize_t k = recv(fd, buf + have, cap - have, MSG_DONTWAIT);
        if (k == 0)
            return -2;
        if (k > 0)
            have += (size_t)k;
        rdv_frame_status s = rdv_frame_parse(buf, have, cap, &hl, &pl);
        if (s == RDV_FRAME_OK) {
            cr_assert_eq(have, hl + pl, "exactly one frame");
            memmove(buf, buf + hl, pl);
            return (long)pl;
        }
        if (k <= 0)
            usleep(100);
    }
    return -1;
}

long rt_read(int fd, void *buf, size_t cap, int ms)
{
    size_t got = 0;
    for (int t = 0; t <= ms && got < cap; t++) {
        rt_pump(1);
        ssize_t n = recv(fd, (char *)buf + got, cap - got, MSG_DONTWAIT);
        if (n == 0)
            return got ? (long)got : -2;
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return got ? (long)got : -2;
        if (got)
            break;
        usleep(1000);
    }
    return (long)got;
}

bool rt_closed(int fd)
{
    char c;
    for (int t = 0; t < 200; t++) {
        rt_pump(1);
        ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return true;
        if (n > 0)
            return false; /* data, not a close */
        usleep(500);
    }
    return false;
}

bool rt_silent(int fd)
{
    rt_pump(3);
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

void rt_write_all(int fd, const void *p, size_t n)
{
    size_t off = 0;
    for (int spins = 0; off < n; spins++) {
        cr_assert_lt(spins, 100000, "write did not progress");
        ssize_t k = send(fd, (const char *)p + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) {
            off += (size_t)k;
            continue;
        }
        cr_assert(k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "send: %s", strerror(errno));
        rt_pump(1);
    }
}

void rt_carries(int from, int to, const char *text)
{
    size_t n = strlen(text);
    char got[256];
    cr_assert_lt(n, sizeof got);
    rt_write_all(from, text, n);
    cr_assert_eq(rt_read(to, got, n, 1000), (long)n);
    cr_assert_arr_eq(got, text, n);
}

void rt_fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

uint64_t rt_gauge(const char *name)
{
    char full[128];
    snprintf(full, sizeof full, "relay.%s", name);
    return fc_gauge(fc, full);
}

uint64_t rt_counter(const char *name)
{
    char full[128];
    snprintf(full, sizeof full, "relay.%s", name);
    return fc_counter(fc, full);
}

const char *rt_admin(const char *line)
{
    static char out[8192];
    int r = fc_admin(fc, line, out, sizeof out);
    cr_assert_eq(r, 0, "'%s' is a registered command", line);
    return out;
}
