/* bench/src/punchgen.c — hole-punch coordination latency (rendezvous.md
 * §6.3–6.5, §17.2), with both client roles emulated.
 *
 * Targets (the devices, "B"): T UDP sockets on 127.<block>.x.y register with
 * RegisterPk{id, uuid, pk} and stay online with RegisterPeer every few
 * seconds. When one receives PunchHole (or FetchLocalAddr) it does what a
 * client does: opens a new TCP connection to the rendezvous port from its
 * own address and sends PunchHoleSent (or LocalAddr) carrying the requester's
 * socket_addr back, then waits for the server to close that connection.
 *
 * Requesters ("A"): at a fixed rate (at most C in flight) a new TCP
 * connection from 127.<block+1>.x.y sends PunchHoleRequest{id of a target}
 * and waits for PunchHoleResponse (skipping one KeyExchange frame, as clients
 * do). Latency = from the request's send() to the complete response; a
 * response with a non-empty socket_addr is a success. */
#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

#define VERSION "1.4.9"
#define CONN_BUF BN_FRAME_MAX

enum { C_REQ_CONNECTING, C_REQ_WAIT, C_TGT_CONNECTING, C_TGT_DRAIN };

typedef struct conn {
    int fd, state, tgt;
    uint64_t t0, deadline;
    size_t len;
    uint8_t buf[CONN_BUF]; /* REQ: received bytes; TGT: the frame to send */
    struct conn *next;     /* all open conns, for timeouts */
    struct conn *prev;
} conn;

typedef struct target {
    int fd;
    uint64_t req_sent; /* send time of the request naming this target (0: none pending) */
    char id[BN_ID_LEN + 1];
    struct sockaddr_in addr;
} target;

static struct {
    int ntargets, inflight_max, block;
    uint64_t npunch, id_base;
    double rate, max_s;
    const char *licence;
    struct sockaddr_in server;
    bn_pids pids;
} o = { .ntargets = 16, .inflight_max = 16, .block = 30, .npunch = 1000, .id_base = 2000000000, .rate = 200,
        .max_s = 60, .licence = "" };

static struct {
    uint64_t launched, ok, fail[8], eof, timeout, connect_fail, punch_hole, fetch_local, tgt_conns,
        tgt_fail, keyx, rpk_true, unexpected;
    bn_hist lat;
    bn_hist tgt; /* target side: PunchHole received -> server closed the PunchHoleSent connection */
    bn_hist leg1; /* request sent -> PunchHole received by its target */
} st;

static int ep;
static conn *conns;
static int inflight;
static target *targets;

static void conn_link(conn *c)
{
    c->prev = NULL;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
}

static void conn_close(conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->state == C_REQ_CONNECTING || c->state == C_REQ_WAIT)
        inflight--;
    close(c->fd);
    free(c);
}

static conn *conn_open(const struct sockaddr_in *src, int state, uint64_t now)
{
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (c->fd >= 0)
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->fd < 0 || bind(c->fd, (const struct sockaddr *)src, sizeof *src) < 0 ||
        (connect(c->fd, (struct sockaddr *)&o.server, sizeof o.server) < 0 && errno != EINPROGRESS)) {
        if (c->fd >= 0)
            close(c->fd);
        free(c);
        return NULL;
    }
    c->state = state;
    c->deadline = now + 3 * BN_NS_PER_S;
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    conn_link(c);
    return c;
}

static void launch(uint64_t now)
{
    struct sockaddr_in src;
    bn_src_addr(&src, o.block + 1, (unsigned)(st.launched % 8000));
    conn *c = conn_open(&src, C_REQ_CONNECTING, now);
    uint64_t k = st.launched++ % (uint64_t)o.ntargets;
    if (!c) {
        st.connect_fail++;
        return;
    }
    inflight++;
    c->tgt = (int)k;
    c->len = bn_enc_punch_hole_request(c->buf, targets[k].id, 1 /* ASYMMETRIC */, o.licence, VERSION);
}

/* A target got PunchHole / FetchLocalAddr: answer over a new TCP connection. */
static void target_answer(target *t, int tag, const uint8_t *body, size_t blen, uint64_t now)
{
    const uint8_t *q = body, *end = body + blen;
    bn_field f;
    const uint8_t *sa = NULL, *relay = NULL;
    size_t salen = 0, rlen = 0;
    uint64_t nat = 0;
    bool have_nat = false;
    while (bn_next_field(&q, end, &f) == 1) {
        if (f.num == 1 && f.wt == 2)
            sa = f.data, salen = f.len;
        else if (f.num == 2 && f.wt == 2)
            relay = f.data, rlen = f.len;
        else if (f.num == 3 && f.wt == 0 && tag == BN_PUNCH_HOLE)
            nat = f.v, have_nat = true;
    }
    if (!sa || salen > 64 || rlen > 256) {
        st.unexpected++;
        return;
    }
    struct sockaddr_in src = t->addr;
    src.sin_port = 0;
    conn *c = conn_open(&src, C_TGT_CONNECTING, now);
    if (!c) {
        st.tgt_fail++;
        return;
    }
    st.tgt_conns++;
    c->t0 = now;
    if (tag == BN_PUNCH_HOLE) {
        c->len = bn_enc_punch_hole_sent(c->buf, sa, salen, t->id, relay, rlen, have_nat ? nat : 0, VERSION);
    } else {
        uint8_t la[16];
        c->len = bn_enc_local_addr(c->buf, sa, salen, la, bn_mangle_v4(la, &t->addr), relay, rlen, t->id, VERSION);
    }
}

static void on_target(target *t, uint64_t now)
{
    uint8_t d[2048];
    for (int i = 0; i < 64; i++) {
        ssize_t n = recv(t->fd, d, sizeof d, MSG_DONTWAIT);
        if (n < 0)
            return;
        const uint8_t *body;
        size_t blen;
        int tag = bn_msg_tag(d, (size_t)n, &body, &blen);
        if (tag == BN_PUNCH_HOLE || tag == BN_FETCH_LOCAL_ADDR) {
            tag == BN_PUNCH_HOLE ? st.punch_hole++ : st.fetch_local++;
            if (t->req_sent && now > t->req_sent)
                bn_hist_add(&st.leg1, now - t->req_sent);
            t->req_sent = 0;
            target_answer(t, tag, body, blen, now);
        } else if (tag == BN_REGISTER_PEER_RESPONSE) {
            const uint8_t *q = body;
            bn_field f;
            while (bn_next_field(&q, body + blen, &f) == 1)
                if (f.num == 2 && f.wt == 0 && f.v)
                    st.rpk_true++;
        } else if (tag != BN_REGISTER_PK_RESPONSE && tag != BN_CONFIGURE_UPDATE) {
            st.unexpected++;
        }
    }
}

/* Requester: parse frames; returns true when the connection is finished. */
static bool on_response(conn *c, uint64_t now)
{
    for (;;) {
        size_t hdr, plen;
        int r = bn_frame_parse(c->buf, c->len, CONN_BUF - 8, &hdr, &plen);
        if (r < 0) {
            st.unexpected++;
            return true;
        }
        if (r == 0)
            return false;
        const uint8_t *body;
        size_t blen;
        int tag = bn_msg_tag(c->buf + hdr, plen, &body, &blen);
        if (tag == BN_KEY_EXCHANGE) {
            st.keyx++;
        } else if (tag == BN_PUNCH_HOLE_RESPONSE) {
            const uint8_t *q = body;
            bn_field f;
            size_t salen = 0;
            uint64_t failure = 0;
            while (bn_next_field(&q, body + blen, &f) == 1) {
                if (f.num == 1 && f.wt == 2)
                    salen = f.len;
                else if (f.num == 3 && f.wt == 0)
                    failure = f.v;
            }
            if (salen) {
                st.ok++;
                bn_hist_add(&st.lat, now - c->t0);
            } else {
                st.fail[failure < 7 ? failure : 7]++;
            }
            return true;
        } else {
            st.unexpected++;
        }
        memmove(c->buf, c->buf + hdr + plen, c->len - hdr - plen);
        c->len -= hdr + plen;
    }
}

static void on_conn(conn *c, uint32_t events, uint64_t now)
{
    if (c->state == C_REQ_CONNECTING || c->state == C_TGT_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || !(events & EPOLLOUT)) {
            c->state == C_REQ_CONNECTING ? st.connect_fail++ : st.tgt_fail++;
            conn_close(c);
            return;
        }
        if (c->state == C_REQ_CONNECTING) {
            c->t0 = bn_now_ns();
            /* round robin over more targets than requests in flight: one
             * pending request per target (a second one only skips a sample) */
            targets[c->tgt].req_sent = c->t0;
        }
        /* One small frame: the socket buffer is empty, so it goes in one call. */
        if (send(c->fd, c->buf, c->len, MSG_NOSIGNAL) != (ssize_t)c->len) {
            c->state == C_REQ_CONNECTING ? st.connect_fail++ : st.tgt_fail++;
            conn_close(c);
            return;
        }
        c->state = c->state == C_REQ_CONNECTING ? C_REQ_WAIT : C_TGT_DRAIN;
        c->len = 0;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    for (int i = 0; i < 8; i++) {
        ssize_t n;
        if (c->state == C_TGT_DRAIN) {
            uint8_t sink[512];
            n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
        } else {
            n = recv(c->fd, c->buf + c->len, CONN_BUF - c->len, MSG_DONTWAIT);
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            if (c->state == C_REQ_WAIT)
                st.eof++;
            else if (n == 0) /* the server handled PunchHoleSent and closed: the target's part */
                bn_hist_add(&st.tgt, bn_now_ns() - c->t0);
            conn_close(c); /* the server closes the target's connection: done */
            return;
        }
        if (n < 0)
            return;
        if (c->state == C_REQ_WAIT) {
            c->len += (size_t)n;
            if (on_response(c, now) || c->len >= CONN_BUF) {
                conn_close(c);
                return;
            }
        }
    }
}

static int udp_rpc(target *t, const uint8_t *req, size_t n, int want_tag, uint64_t *field1, uint64_t *field2)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        if (send(t->fd, req, n, 0) < 0)
            return -1;
        uint64_t end = bn_now_ns() + 1000000000ull;
        while (bn_now_ns() < end) {
            struct pollfd p = { .fd = t->fd, .events = POLLIN };
            if (poll(&p, 1, 100) <= 0)
                continue;
            uint8_t d[512];
            ssize_t r = recv(t->fd, d, sizeof d, MSG_DONTWAIT);
            const uint8_t *body;
            size_t blen;
            if (r <= 0 || bn_msg_tag(d, (size_t)r, &body, &blen) != want_tag)
                continue;
            const uint8_t *q = body;
            bn_field f;
            *field1 = *field2 = 0;
            while (bn_next_field(&q, body + blen, &f) == 1) {
                if (f.num == 1 && f.wt == 0)
                    *field1 = f.v;
                if (f.num == 2 && f.wt == 0)
                    *field2 = f.v;
            }
            return 0;
        }
    }
    return -1;
}

static void usage(void)
{
    fprintf(stderr, "usage: punchgen -t IP:PORT [-T targets] [-n punches] [-r punches/s] [-C in_flight]\n"
                    "                [-k licence_key] [-B target_id_base] [-L max_seconds] [-S src_block] [-P pid,...]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int c;
    bool have_t = false;
    while ((c = getopt(argc, argv, "t:T:n:r:C:k:B:L:S:P:")) != -1) {
        switch (c) {
        case 't': bn_parse_addr(&o.server, optarg), have_t = true; break;
        case 'T': o.ntargets = (int)bn_atoll(optarg, "-T", 1, 4000); break;
        case 'n': o.npunch = (uint64_t)bn_atoll(optarg, "-n", 1, 10000000); break;
        case 'r': o.rate = bn_atof(optarg, "-r", 0.1, 1e6); break;
        case 'C': o.inflight_max = (int)bn_atoll(optarg, "-C", 1, 10000); break;
        case 'k': o.licence = optarg; break;
        case 'B': o.id_base = (uint64_t)bn_atoll(optarg, "-B", 1000000000, 8999999999); break;
        case 'L': o.max_s = bn_atof(optarg, "-L", 1, 3600); break;
        case 'S': o.block = (int)bn_atoll(optarg, "-S", 1, 253); break;
        case 'P': bn_pids_parse(&o.pids, optarg); break;
        default: usage();
        }
    }
    if (!have_t)
        usage();
    bn_on_signals();
    bn_raise_nofile();
    ep = epoll_create1(EPOLL_CLOEXEC);
    targets = calloc((size_t)o.ntargets, sizeof *targets);
    if (ep < 0 || !targets)
        bn_die("out of memory");

    /* Register the targets: RegisterPk, then RegisterPeer must say "known". */
    for (int k = 0; k < o.ntargets; k++) {
        target *t = &targets[k];
        bn_id(t->id, o.id_base, (uint64_t)k);
        bn_src_addr(&t->addr, o.block, (unsigned)k);
        t->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (t->fd < 0 || bind(t->fd, (struct sockaddr *)&t->addr, sizeof t->addr) < 0 ||
            connect(t->fd, (struct sockaddr *)&o.server, sizeof o.server) < 0)
            bn_die("target socket: %s", strerror(errno));
        socklen_t al = sizeof t->addr;
        getsockname(t->fd, (struct sockaddr *)&t->addr, &al);
        uint8_t uuid[16], pk[32], d[128];
        uint64_t f1 = 0, f2 = 0;
        bn_uuid_pk(o.id_base + (uint64_t)k, uuid, pk);
        size_t n = bn_enc_register_pk(d, t->id, uuid, pk);
        if (udp_rpc(t, d, n, BN_REGISTER_PK_RESPONSE, &f1, &f2) < 0 || f1 != 0)
            bn_die("target %s: RegisterPk not accepted (%s, result %llu)", t->id,
                   f1 ? "refused" : "no answer", (unsigned long long)f1);
        n = bn_enc_register_peer(d, t->id);
        if (udp_rpc(t, d, n, BN_REGISTER_PEER_RESPONSE, &f1, &f2) < 0 || f2 != 0)
            bn_die("target %s: RegisterPeer after RegisterPk still asks for the key", t->id);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
        ev.data.u64 = (uint64_t)k | (1ull << 63);
        epoll_ctl(ep, EPOLL_CTL_ADD, t->fd, &ev);
    }
    bn_kv("targets", "%d", o.ntargets);

    uint64_t t0 = bn_now_ns(), t_hard = t0 + (uint64_t)(o.max_s * 1e9), last_keep = t0, last_sweep = t0;
    bn_win wm;
    bn_win_start(&wm, &o.pids);
    struct epoll_event evs[256];
    while (!bn_stop) {
        uint64_t now = bn_now_ns();
        if (now >= t_hard)
            break;
        if (st.launched >= o.npunch && !inflight && !conns)
            break;
        uint64_t due = (uint64_t)((double)(now - t0) * o.rate / 1e9) + 1;
        while (st.launched < o.npunch && st.launched < due && inflight < o.inflight_max)
            launch(now);
        if (now - last_keep >= 5 * BN_NS_PER_S) { /* stay online (registry online window 30 s) */
            last_keep = now;
            for (int k = 0; k < o.ntargets; k++) {
                uint8_t d[64];
                send(targets[k].fd, d, bn_enc_register_peer(d, targets[k].id), MSG_DONTWAIT);
            }
        }
        int n = epoll_wait(ep, evs, 256, 1);
        now = bn_now_ns();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 & (1ull << 63))
                on_target(&targets[evs[i].data.u64 & 0xffffffffu], now);
        }
        for (int i = 0; i < n; i++) {
            if (!(evs[i].data.u64 & (1ull << 63)))
                on_conn(evs[i].data.ptr, evs[i].events, now);
        }
        if (now - last_sweep >= 10000000ull) {
            last_sweep = now;
            for (conn *x = conns, *nx; x; x = nx) {
                nx = x->next;
                if (now >= x->deadline) {
                    if (x->state == C_REQ_WAIT || x->state == C_REQ_CONNECTING)
                        st.timeout++;
                    conn_close(x);
                }
            }
        }
    }
    bn_win_end(&wm, &o.pids);
    double el = bn_win_s(&wm);
    while (conns)
        conn_close(conns);
    bn_kv("elapsed_s", "%.3f", el);
    bn_kv("launched", "%llu", (unsigned long long)st.launched);
    bn_kv("ok", "%llu", (unsigned long long)st.ok);
    bn_kv("fail_id_not_exist", "%llu", (unsigned long long)st.fail[0]);
    bn_kv("fail_offline", "%llu", (unsigned long long)st.fail[2]);
    bn_kv("fail_license", "%llu", (unsigned long long)st.fail[3]);
    unsigned long long fo = 0;
    for (int i = 0; i < 8; i++)
        fo += st.fail[i];
    bn_kv("fail", "%llu", fo);
    bn_kv("eof", "%llu", (unsigned long long)st.eof);
    bn_kv("timeout", "%llu", (unsigned long long)st.timeout);
    bn_kv("connect_fail", "%llu", (unsigned long long)st.connect_fail);
    bn_kv("punch_hole", "%llu", (unsigned long long)st.punch_hole);
    bn_kv("fetch_local_addr", "%llu", (unsigned long long)st.fetch_local);
    bn_kv("target_conns", "%llu", (unsigned long long)st.tgt_conns);
    bn_kv("target_fail", "%llu", (unsigned long long)st.tgt_fail);
    bn_kv("key_exchange", "%llu", (unsigned long long)st.keyx);
    bn_kv("rpk_true", "%llu", (unsigned long long)st.rpk_true);
    bn_kv("unexpected", "%llu", (unsigned long long)st.unexpected);
    bn_kv("rate", "%.1f", el > 0 ? (double)st.ok / el : 0);
    bn_hist_print(&st.lat, "lat");
    bn_hist_print(&st.tgt, "tgt");
    bn_hist_print(&st.leg1, "leg1");
    bn_win_print(&wm, &o.pids);
    for (int k = 0; k < o.ntargets; k++)
        close(targets[k].fd);
    free(targets);
    close(ep);
    return 0;
}
