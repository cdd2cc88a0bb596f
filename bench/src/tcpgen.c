/* bench/src/tcpgen.c — TCP pairs for the relay benchmarks.
 *
 * A pair is two connected sockets of this process, side A and side B, with
 * something in between:
 *   -M relay    both sides connect to the relay (-t) and send
 *               RequestRelay{uuid} with the pair's own uuid (relay.md §3);
 *               the relay joins them.
 *   -M connect  side A connects to -t (the sink itself for a direct
 *               connection, or a proxy in front of it); side B is the
 *               connection that arrives on this process's sink listener (-l).
 * Pairs are set up one after the other and each is proved end to end (A
 * sends the pair number, B checks it and answers one byte) before use.
 *
 * Then either
 *   -d SECONDS  pump: A sends to B (or both ways with -x) as fast as the path
 *               allows; the receiving side discards with recv(MSG_TRUNC),
 *               which skips the copy, so the sink is cheap. Reports Gbit/s
 *               received in the window after the warm-up, and CPU.
 *   -i SECONDS  hold the pairs idle: prints "ready=1" and waits until stdin
 *               is closed (or SECONDS pass), then checks that every pair
 *               still carries a byte both ways. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

typedef struct pair {
    int fd[2];
    uint64_t rx[2], tx[2]; /* bytes received / sent by side i */
    bool dead;
} pair;

static struct {
    bool relay, both;
    int npairs, block, chunk;
    double warmup_s, dur_s, hold_s;
    const char *licence;
    struct sockaddr_in target, listen;
    bool have_listen;
    bn_pids pids;
} o = { .npairs = 1, .block = 20, .chunk = 128 << 10, .warmup_s = 1, .dur_s = 0 };

static int wait_fd(int fd, short ev, int ms)
{
    struct pollfd p = { .fd = fd, .events = ev };
    int r;
    while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR && !bn_stop)
        ;
    return r;
}

static int tcp_connect(const struct sockaddr_in *src, const struct sockaddr_in *dst)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (src && bind(fd, (const struct sockaddr *)src, sizeof *src) < 0)
        goto fail;
    if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0 && errno != EINPROGRESS)
        goto fail;
    if (wait_fd(fd, POLLOUT, 5000) <= 0)
        goto fail;
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        errno = err;
        goto fail;
    }
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t end = bn_now_ns() + 5 * BN_NS_PER_S;
    while (n && bn_now_ns() < end) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w > 0) {
            b += w, n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
        wait_fd(fd, POLLOUT, 100);
    }
    return n ? -1 : 0;
}

static int read_exact(int fd, void *p, size_t n, int ms)
{
    uint8_t *b = p;
    uint64_t end = bn_now_ns() + (uint64_t)ms * 1000000ull;
    while (n && bn_now_ns() < end) {
        ssize_t r = recv(fd, b, n, 0);
        if (r > 0) {
            b += r, n -= (size_t)r;
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            return -1;
        wait_fd(fd, POLLIN, 100);
    }
    return n ? -1 : 0;
}

/* A sends the pair number, B checks it and answers one byte. */
static int prove(pair *p, uint32_t idx)
{
    uint8_t b[4] = { (uint8_t)idx, (uint8_t)(idx >> 8), (uint8_t)(idx >> 16), (uint8_t)(idx >> 24) }, r[4];
    if (write_all(p->fd[0], b, 4) < 0 || read_exact(p->fd[1], r, 4, 5000) < 0 || memcmp(b, r, 4))
        return -1;
    if (write_all(p->fd[1], "k", 1) < 0 || read_exact(p->fd[0], r, 1, 5000) < 0 || r[0] != 'k')
        return -1;
    return 0;
}

static int setup_pair(pair *p, uint32_t idx, int lfd, uint32_t nonce)
{
    struct sockaddr_in src;
    p->fd[0] = p->fd[1] = -1;
    bn_src_addr(&src, o.block, idx % 2000);
    if (o.relay) {
        char uuid[48];
        uint8_t frame[300];
        snprintf(uuid, sizeof uuid, "%08x-%04x-4%03x-8%03x-%012x", nonce, idx >> 16, (idx >> 4) & 0xfff,
                 idx & 0xfff, idx * 2654435761u);
        size_t n = bn_enc_request_relay_frame(frame, uuid, o.licence);
        for (int s = 0; s < 2; s++) {
            struct sockaddr_in srcs;
            bn_src_addr(&srcs, o.block + s, idx % 2000);
            p->fd[s] = tcp_connect(&srcs, &o.target);
            if (p->fd[s] < 0 || write_all(p->fd[s], frame, n) < 0)
                return -1;
        }
    } else {
        p->fd[0] = tcp_connect(&src, &o.target);
        if (p->fd[0] < 0)
            return -1;
        uint8_t b[4] = { (uint8_t)idx, (uint8_t)(idx >> 8), (uint8_t)(idx >> 16), (uint8_t)(idx >> 24) };
        if (write_all(p->fd[0], b, 4) < 0)
            return -1;
        /* The connection that brings this pair's number is side B; anything
         * else arriving on the sink (a proxy's late connect for an earlier
         * client) is closed. */
        uint8_t r[4];
        for (int tries = 0; tries < 8 && p->fd[1] < 0; tries++) {
            if (wait_fd(lfd, POLLIN, 5000) <= 0)
                return -1;
            int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                return -1;
            if (read_exact(fd, r, 4, 5000) < 0 || memcmp(b, r, 4)) {
                close(fd);
                continue;
            }
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            p->fd[1] = fd;
        }
        if (p->fd[1] < 0 || write_all(p->fd[1], "k", 1) < 0 || read_exact(p->fd[0], r, 1, 5000) < 0)
            return -1;
        return 0;
    }
    return prove(p, idx);
}

static void usage(void)
{
    fprintf(stderr, "usage: tcpgen -M relay|connect -t IP:PORT [-l IP:PORT] [-p pairs] [-x (both ways)]\n"
                    "              [-d seconds | -i hold_seconds] [-W warmup_s] [-c chunk] [-k licence]\n"
                    "              [-S src_block] [-P pid,...]\n");
    exit(2);
}

static int pump(pair *pairs)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    char *chunk = malloc((size_t)o.chunk);
    /* recv(MSG_TRUNC) on TCP discards without copying, but the buffer is as
     * large as the length passed, so nothing depends on that. */
    size_t sink_len = (size_t)o.chunk * 8;
    char *sink = malloc(sink_len);
    if (ep < 0 || !chunk || !sink)
        bn_die("out of memory");
    memset(chunk, 0x5a, (size_t)o.chunk);
    for (int i = 0; i < o.npairs; i++)
        for (int s = 0; s < 2; s++) {
            uint32_t ev = 0;
            if (s == 0 || o.both)
                ev |= EPOLLOUT;
            if (s == 1 || o.both)
                ev |= EPOLLIN;
            struct epoll_event e = { .events = ev | EPOLLRDHUP, .data.u64 = (uint64_t)i << 1 | (uint64_t)s };
            epoll_ctl(ep, EPOLL_CTL_ADD, pairs[i].fd[s], &e);
        }
    uint64_t t0 = bn_now_ns(), tm0 = t0 + (uint64_t)(o.warmup_s * 1e9), tm1 = tm0 + (uint64_t)(o.dur_s * 1e9);
    uint64_t rx0 = 0, rx1 = 0;
    bn_win wm;
    memset(&wm, 0, sizeof wm);
    uint64_t *prx0 = calloc((size_t)o.npairs, sizeof *prx0);
    bool started = false;
    int dead = 0;
    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = bn_now_ns();
        if (!started && now >= tm0) {
            started = true;
            bn_win_start(&wm, &o.pids);
            for (int i = 0; i < o.npairs; i++) {
                prx0[i] = pairs[i].rx[0] + pairs[i].rx[1];
                rx0 += prx0[i];
            }
        }
        if (now >= tm1 || bn_stop)
            break;
        int n = epoll_wait(ep, evs, 256, 10);
        for (int k = 0; k < n; k++) {
            pair *p = &pairs[evs[k].data.u64 >> 1];
            int s = (int)(evs[k].data.u64 & 1);
            int fd = p->fd[s];
            if (p->dead)
                continue;
            if (evs[k].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
                for (int it = 0; it < 16; it++) {
                    ssize_t r = recv(fd, sink, sink_len, MSG_TRUNC | MSG_DONTWAIT);
                    if (r > 0) {
                        p->rx[s] += (uint64_t)r;
                        continue;
                    }
                    if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                        p->dead = true;
                        dead++;
                        epoll_ctl(ep, EPOLL_CTL_DEL, p->fd[0], NULL);
                        epoll_ctl(ep, EPOLL_CTL_DEL, p->fd[1], NULL);
                    }
                    break;
                }
            }
            if (!p->dead && (evs[k].events & EPOLLOUT)) {
                for (int it = 0; it < 16; it++) {
                    ssize_t w = send(fd, chunk, (size_t)o.chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
                    if (w > 0) {
                        p->tx[s] += (uint64_t)w;
                        continue;
                    }
                    if (w < 0 && errno != EAGAIN && errno != EINTR && !p->dead) {
                        p->dead = true;
                        dead++;
                        epoll_ctl(ep, EPOLL_CTL_DEL, p->fd[0], NULL);
                        epoll_ctl(ep, EPOLL_CTL_DEL, p->fd[1], NULL);
                    }
                    break;
                }
            }
        }
    }
    bn_win_end(&wm, &o.pids);
    double pmin = -1, pmax = 0, win = started ? bn_win_s(&wm) : 0;
    for (int i = 0; i < o.npairs; i++) {
        uint64_t r = pairs[i].rx[0] + pairs[i].rx[1];
        rx1 += r;
        double g = win > 0 ? (double)(r - prx0[i]) * 8 / win / 1e9 : 0;
        if (pmin < 0 || g < pmin)
            pmin = g;
        if (g > pmax)
            pmax = g;
    }
    uint64_t bytes = rx1 - rx0;
    double gbps = win > 0 ? (double)bytes * 8 / win / 1e9 : 0;
    bn_kv("window_s", "%.3f", win);
    bn_kv("bytes", "%llu", (unsigned long long)bytes);
    bn_kv("gbps", "%.3f", gbps);
    bn_kv("pair_min_gbps", "%.3f", pmin < 0 ? 0 : pmin);
    bn_kv("pair_max_gbps", "%.3f", pmax);
    bn_kv("dead_pairs", "%d", dead);
    bn_win_print(&wm, &o.pids);
    if (o.pids.n) {
        double srv_s = bn_win_srv_s(&wm);
        bn_kv("srv_cpu_ms_per_gb", "%.2f", srv_s >= 0 && bytes ? srv_s * 1e3 / ((double)bytes / 1e9) : -1);
    }
    free(prx0);
    free(chunk);
    free(sink);
    close(ep);
    return dead ? 1 : 0;
}

static int hold(pair *pairs)
{
    bn_kv("ready", "1");
    uint64_t end = bn_now_ns() + (uint64_t)(o.hold_s * 1e9);
    while (!bn_stop && bn_now_ns() < end) {
        struct pollfd p = { .fd = 0, .events = POLLIN };
        if (poll(&p, 1, 200) > 0) {
            char b[64];
            if (read(0, b, sizeof b) <= 0)
                break; /* stdin closed: the measurement is done */
            break;
        }
    }
    int alive = 0;
    for (int i = 0; i < o.npairs; i++) {
        uint8_t r;
        if (write_all(pairs[i].fd[0], "a", 1) == 0 && read_exact(pairs[i].fd[1], &r, 1, 2000) == 0 &&
            write_all(pairs[i].fd[1], "b", 1) == 0 && read_exact(pairs[i].fd[0], &r, 1, 2000) == 0)
            alive++;
    }
    bn_kv("alive_pairs", "%d", alive);
    return alive == o.npairs ? 0 : 1;
}

int main(int argc, char **argv)
{
    int c;
    bool have_t = false, have_m = false;
    while ((c = getopt(argc, argv, "M:t:l:p:xd:i:W:c:k:S:P:")) != -1) {
        switch (c) {
        case 'M':
            have_m = true;
            if (!strcmp(optarg, "relay"))
                o.relay = true;
            else if (strcmp(optarg, "connect"))
                usage();
            break;
        case 't': bn_parse_addr(&o.target, optarg), have_t = true; break;
        case 'l': bn_parse_addr(&o.listen, optarg), o.have_listen = true; break;
        case 'p': o.npairs = (int)bn_atoll(optarg, "-p", 1, 500000); break;
        case 'x': o.both = true; break;
        case 'd': o.dur_s = bn_atof(optarg, "-d", 0.01, 3600); break;
        case 'i': o.hold_s = bn_atof(optarg, "-i", 0.01, 3600); break;
        case 'W': o.warmup_s = bn_atof(optarg, "-W", 0, 600); break;
        case 'c': o.chunk = (int)bn_atoll(optarg, "-c", 1, 64 << 20); break;
        case 'k': o.licence = optarg; break;
        case 'S': o.block = (int)bn_atoll(optarg, "-S", 1, 253); break;
        case 'P': bn_pids_parse(&o.pids, optarg); break;
        default: usage();
        }
    }
    if (!have_t || !have_m || (!o.relay && !o.have_listen) || (o.dur_s > 0) == (o.hold_s > 0))
        usage();
    bn_on_signals();
    long nofile = bn_raise_nofile();
    bn_kv("nofile", "%ld", nofile);
    if ((long)o.npairs * 2 + 16 > nofile)
        bn_die("%d pairs need %d descriptors; RLIMIT_NOFILE is %ld", o.npairs, o.npairs * 2 + 16, nofile);

    int lfd = -1;
    if (!o.relay) {
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&o.listen, sizeof o.listen) < 0 || listen(lfd, 1024) < 0)
            bn_die("sink listener: %s", strerror(errno));
    }
    pair *pairs = calloc((size_t)o.npairs, sizeof *pairs);
    if (!pairs)
        bn_die("out of memory");
    for (int i = 0; i < o.npairs; i++)
        pairs[i].fd[0] = pairs[i].fd[1] = -1;
    uint32_t nonce = (uint32_t)(bn_now_ns() ^ ((uint64_t)getpid() << 16));
    uint64_t ts = bn_now_ns();
    int ok = 0, rc = 0;
    for (int i = 0; i < o.npairs && !bn_stop; i++) {
        if (setup_pair(&pairs[i], (uint32_t)i, lfd, nonce) < 0) {
            fprintf(stderr, "tcpgen: pair %d: setup failed: %s\n", i, strerror(errno));
            rc = 1;
            break;
        }
        ok++;
    }
    bn_kv("pairs", "%d", ok);
    bn_kv("setup_s", "%.3f", (double)(bn_now_ns() - ts) / 1e9);
    int total = o.npairs;
    if (!rc && !bn_stop) {
        o.npairs = ok;
        rc = o.dur_s > 0 ? pump(pairs) : hold(pairs);
    }
    for (int i = 0; i < total; i++)
        for (int s = 0; s < 2; s++)
            if (pairs[i].fd[s] >= 0)
                close(pairs[i].fd[s]);
    free(pairs);
    if (lfd >= 0)
        close(lfd);
    return rc;
}
