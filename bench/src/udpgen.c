/* bench/src/udpgen.c — UDP request/response load generator.
 *
 * S sources, each with its own 127.<block>.x.y address (its own connected
 * socket, or with -V a kernel socket shared by several sources), keep up to
 * W requests outstanding (closed loop) or send at a fixed total rate (open
 * loop, -r). Replies to one source come back in order (one loopback path,
 * one server socket), so a reply is matched to the oldest outstanding
 * request of its source; a request unanswered after the timeout counts as
 * lost. Peer ids: id index k belongs to source k % S, so every source cycles
 * over its own ids.
 *
 * Payloads (-m): regpeer = RegisterPeer{id} (replies: RegisterPeerResponse,
 * or the same bytes from the echo server), regpk = RegisterPk{id, uuid, pk}
 * (reply RegisterPkResponse), stun = STUN Binding request (reply Binding
 * success). Batches go out with sendmmsg and come in with recvmmsg; epoll
 * tells which sockets have replies.
 *
 * Only requests sent inside the measurement window (after the warm-up) count
 * towards the rate, loss and latency; the CPU of this process and of the
 * server pids (-P) is sampled at the window's edges. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

#define BATCH 64
#define DGRAM_MAX 256

enum { M_REGPEER, M_REGPK, M_STUN };

/* One source address: a "socket" as the server sees it. */
typedef struct gsock {
    uint32_t idx;              /* source index */
    uint32_t real;             /* the kernel socket that carries it */
    uint32_t nids;             /* ids of this source: idx + j*S, j < nids */
    uint64_t seq;              /* requests sent so far; the next id is seq % nids */
    uint32_t head, count, pend; /* outstanding ring; pend: queued in the send batch */
    uint64_t *ring;            /* send times of outstanding requests, oldest at head */
    struct in_addr src;
} gsock;

/* A kernel socket. Plain: bound to its one source and connected. Shared
 * (-V): bound to 0.0.0.0 and carrying S/V sources, each datagram sent from
 * its source's address with IP_PKTINFO and its reply told apart by the
 * address it came back to. The server sees the same S distinct sources
 * either way; shared sockets let one sendmmsg/recvmmsg carry a batch across
 * sources, so that with many sources and one request each outstanding the
 * generator is not the bottleneck. */
typedef struct rsock {
    int fd;
    uint32_t first, n; /* its sources: first .. first+n-1 */
} rsock;

static struct {
    int mode;
    int nsock, window, block, rcvbuf, nreal;
    uint64_t nids, id_base;
    double rate;
    double warmup_s, dur_s, behind_ms;
    uint64_t timeout_ns;
    bool once, spin;
    bn_pids pids;
    struct sockaddr_in target;
} o = { .mode = M_REGPEER, .nsock = 1, .window = 32, .block = 10, .rcvbuf = 4 << 20,
        .id_base = 1000000000, .warmup_s = 1, .dur_s = 4, .behind_ms = 2, .timeout_ns = 1000000000ull };

static struct {
    uint64_t sent, recv, lost, late, unexpected, send_err, window_full, behind;
    uint64_t m_sent, m_recv, m_lost;
    uint64_t rpk_true, rpk_false, echo, pk_ok, pk_other[16], stun_ok;
    bn_hist lat;
} st;

static gsock *socks;
static rsock *reals;
static int nreal;

static bool done(const gsock *s) { return o.once && s->seq + s->pend >= s->nids; }

static uint64_t t_meas0, t_meas1; /* measurement window [t_meas0, t_meas1) */
static uint64_t stun_seq;

static bool measured(uint64_t t) { return t >= t_meas0 && t < t_meas1; }

static size_t build(gsock *s, uint32_t j, uint8_t *out)
{
    uint64_t k = (uint64_t)s->idx + (uint64_t)j * (uint64_t)o.nsock;
    char id[BN_ID_LEN + 1];
    switch (o.mode) {
    case M_REGPEER:
        bn_id(id, o.id_base, k);
        return bn_enc_register_peer(out, id);
    case M_REGPK: {
        uint8_t uuid[16], pk[32];
        bn_id(id, o.id_base, k);
        bn_uuid_pk(o.id_base + k, uuid, pk);
        return bn_enc_register_pk(out, id, uuid, pk);
    }
    default:
        return bn_enc_stun_binding(out, stun_seq++);
    }
}

#define PKTINFO_SPACE CMSG_SPACE(sizeof(struct in_pktinfo))

/* The send batch: requests of sources carried by one kernel socket. */
static struct {
    int real; /* -1: empty */
    unsigned n;
    gsock *who[BATCH];
    uint8_t data[BATCH][DGRAM_MAX];
    struct iovec iov[BATCH];
    struct mmsghdr mm[BATCH];
    union { char buf[PKTINFO_SPACE]; struct cmsghdr align; } ctl[BATCH];
} q = { .real = -1 };

/* Sends the batch; returns how many went out. Only those advance their
 * source's id cursor; the rest are sent again later (window sweep / due). */
static int q_flush(uint64_t now)
{
    if (q.real < 0 || q.n == 0) {
        q.real = -1;
        return 0;
    }
    int r = sendmmsg(reals[q.real].fd, q.mm, q.n, MSG_DONTWAIT);
    if (r < 0) {
        st.send_err++;
        r = 0;
    }
    for (int i = 0; i < r; i++) {
        gsock *s = q.who[i];
        s->ring[(s->head + s->count) % (uint32_t)o.window] = now;
        s->count++;
        s->seq++;
    }
    for (unsigned i = 0; i < q.n; i++)
        q.who[i]->pend = 0;
    st.sent += (uint64_t)r;
    if (measured(now))
        st.m_sent += (uint64_t)r;
    q.n = 0;
    q.real = -1;
    return r;
}

/* Queues up to k requests of s (its window and -o allowing); returns how
 * many were queued. A full batch, or one for another kernel socket, is sent
 * first. */
static int send_some(gsock *s, int k, uint64_t now)
{
    int queued = 0;
    while (queued < k && s->count + s->pend < (uint32_t)o.window && !done(s)) {
        if (q.real != (int)s->real || q.n == BATCH)
            q_flush(now);
        q.real = (int)s->real;
        unsigned i = q.n++;
        q.who[i] = s;
        q.iov[i] = (struct iovec){ q.data[i], build(s, (uint32_t)((s->seq + s->pend) % s->nids), q.data[i]) };
        s->pend++;
        struct msghdr *h = &q.mm[i].msg_hdr;
        *h = (struct msghdr){ .msg_iov = &q.iov[i], .msg_iovlen = 1 };
        if (reals[s->real].n > 1) {
            h->msg_name = &o.target;
            h->msg_namelen = sizeof o.target;
            h->msg_control = q.ctl[i].buf;
            h->msg_controllen = sizeof q.ctl[i].buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
            struct in_pktinfo pi = { .ipi_spec_dst = s->src };
            memcpy(CMSG_DATA(c), &pi, sizeof pi);
        }
        queued++;
    }
    return queued;
}

/* Is this datagram the answer to a request, and what did it say? */
static bool classify(const uint8_t *p, size_t n)
{
    if (o.mode == M_STUN) {
        if (n >= 20 && p[0] == 0x01 && p[1] == 0x01) {
            st.stun_ok++;
            return true;
        }
        if (n >= 20 && p[0] == 0x00 && p[1] == 0x01) {
            st.echo++;
            return true;
        }
        return false;
    }
    const uint8_t *body;
    size_t blen;
    int tag = bn_msg_tag(p, n, &body, &blen);
    const uint8_t *q = body, *end = body + blen;
    bn_field f;
    switch (tag) {
    case BN_REGISTER_PEER_RESPONSE: {
        bool rpk = false;
        while (bn_next_field(&q, end, &f) == 1)
            if (f.num == 2 && f.wt == 0)
                rpk = f.v != 0;
        rpk ? st.rpk_true++ : st.rpk_false++;
        return o.mode == M_REGPEER;
    }
    case BN_REGISTER_PK_RESPONSE: {
        uint64_t res = 0;
        while (bn_next_field(&q, end, &f) == 1)
            if (f.num == 1 && f.wt == 0)
                res = f.v;
        res == 0 ? st.pk_ok++ : st.pk_other[res < 15 ? res : 15]++;
        return o.mode == M_REGPK;
    }
    case BN_REGISTER_PEER:
    case BN_REGISTER_PK:
        st.echo++;
        return true;
    default:
        return false; /* e.g. ConfigUpdate, a second datagram */
    }
}

static void pop(gsock *s, uint64_t now, bool answered)
{
    uint64_t t = s->ring[s->head];
    s->head = (s->head + 1) % (uint32_t)o.window;
    s->count--;
    bool m = measured(t);
    if (answered) {
        st.recv++;
        if (m) {
            st.m_recv++;
            bn_hist_add(&st.lat, now - t);
        }
    } else {
        st.lost++;
        if (m)
            st.m_lost++;
    }
}

/* The source a reply came back to: the kernel socket's only one, or (shared)
 * the one whose address the reply was sent to. NULL if none of ours. */
static gsock *reply_source(const rsock *r, struct msghdr *h)
{
    if (r->n == 1)
        return &socks[r->first];
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level != IPPROTO_IP || c->cmsg_type != IP_PKTINFO)
            continue;
        struct in_pktinfo pi;
        memcpy(&pi, CMSG_DATA(c), sizeof pi);
        long i = bn_src_index(pi.ipi_addr, o.block);
        if (i < (long)r->first || i >= (long)(r->first + r->n))
            return NULL;
        return &socks[i];
    }
    return NULL;
}

static bool sending = true;     /* inside the send phase */
static uint64_t t_last_recv;    /* when the last answer came */

/* Reads the replies waiting on kernel socket ri; in the closed loop each
 * answered source sends again at once (queued, one batch for the socket). */
static void on_readable(uint32_t ri)
{
    static uint8_t data[BATCH][DGRAM_MAX];
    static struct iovec iov[BATCH];
    static struct mmsghdr mm[BATCH];
    static union { char buf[PKTINFO_SPACE]; struct cmsghdr align; } ctl[BATCH];
    const rsock *r = &reals[ri];
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){ data[i], DGRAM_MAX };
            mm[i].msg_hdr = (struct msghdr){ .msg_iov = &iov[i], .msg_iovlen = 1 };
            if (r->n > 1) {
                mm[i].msg_hdr.msg_control = ctl[i].buf;
                mm[i].msg_hdr.msg_controllen = sizeof ctl[i].buf;
            }
        }
        int got = recvmmsg(r->fd, mm, BATCH, MSG_DONTWAIT, NULL);
        if (got <= 0)
            break; /* EAGAIN, or ECONNREFUSED from an ICMP error: counted as loss later */
        uint64_t now = bn_now_ns();
        for (int i = 0; i < got; i++) {
            gsock *s = reply_source(r, &mm[i].msg_hdr);
            if (!s || !classify(data[i], mm[i].msg_len)) {
                st.unexpected++;
                continue;
            }
            if (!s->count) {
                st.late++; /* answer to a request already counted lost */
                continue;
            }
            pop(s, now, true);
            t_last_recv = now;
            if (sending && o.rate <= 0)
                send_some(s, o.window, now);
        }
        if (got < BATCH)
            break;
    }
    q_flush(bn_now_ns());
}

static void usage(void)
{
    fprintf(stderr,
            "usage: udpgen -t IP:PORT [-m regpeer|regpk|stun] [-s sockets] [-w window] [-n ids]\n"
            "              [-B id_base] [-r rate/s (0: closed loop)] [-W warmup_s] [-d duration_s]\n"
            "              [-o (each id once)] [-T timeout_ms] [-S src_block] [-b sockbuf] [-P pid,...]\n"
            "              [-j ms: open loop catches up at most this far behind, default 2]\n"
            "              [-Y (open loop: poll without sleeping)]\n"
            "              [-V n: carry the sources on n shared kernel sockets (IP_PKTINFO)]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int c;
    bool have_target = false;
    while ((c = getopt(argc, argv, "t:m:s:w:n:B:r:W:d:oT:S:b:P:j:YV:")) != -1) {
        switch (c) {
        case 't': bn_parse_addr(&o.target, optarg), have_target = true; break;
        case 'm':
            o.mode = !strcmp(optarg, "regpeer") ? M_REGPEER : !strcmp(optarg, "regpk") ? M_REGPK
                     : !strcmp(optarg, "stun")  ? M_STUN : -1;
            if (o.mode < 0)
                usage();
            break;
        case 's': o.nsock = (int)bn_atoll(optarg, "-s", 1, 16000); break;
        case 'w': o.window = (int)bn_atoll(optarg, "-w", 1, 1 << 20); break;
        case 'n': o.nids = (uint64_t)bn_atoll(optarg, "-n", 1, 100000000); break;
        case 'B': o.id_base = (uint64_t)bn_atoll(optarg, "-B", 1000000000, 8999999999); break;
        case 'r': o.rate = bn_atof(optarg, "-r", 0, 1e8); break;
        case 'W': o.warmup_s = bn_atof(optarg, "-W", 0, 600); break;
        case 'd': o.dur_s = bn_atof(optarg, "-d", 0.01, 3600); break;
        case 'o': o.once = true; break;
        case 'T': o.timeout_ns = (uint64_t)bn_atoll(optarg, "-T", 1, 60000) * 1000000ull; break;
        case 'S': o.block = (int)bn_atoll(optarg, "-S", 1, 254); break;
        case 'b': o.rcvbuf = (int)bn_atoll(optarg, "-b", 0, 1 << 30); break;
        case 'P': bn_pids_parse(&o.pids, optarg); break;
        case 'j': o.behind_ms = bn_atof(optarg, "-j", 0.1, 1000); break;
        case 'Y': o.spin = true; break;
        case 'V': o.nreal = (int)bn_atoll(optarg, "-V", 1, 16000); break;
        default: usage();
        }
    }
    if (!have_target)
        usage();
    if (!o.nids)
        o.nids = (uint64_t)o.nsock;
    if (o.nids < (uint64_t)o.nsock)
        bn_die("-n %llu: need at least one id per socket (-s %d)", (unsigned long long)o.nids, o.nsock);
    if (o.id_base + o.nids > 9999999999ull)
        bn_die("ids beyond 10 digits");
    bn_on_signals();
    long nofile = bn_raise_nofile();
    if (nofile < o.nsock + 16)
        bn_die("%d sockets need more file descriptors than RLIMIT_NOFILE allows (%ld)", o.nsock, nofile);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    nreal = o.nreal && o.nreal < o.nsock ? o.nreal : o.nsock;
    socks = calloc((size_t)o.nsock, sizeof *socks);
    reals = calloc((size_t)nreal, sizeof *reals);
    if (ep < 0 || !socks || !reals)
        bn_die("out of memory");
    /* Sources in contiguous blocks per kernel socket, so that the open loop's
     * round robin fills a batch before it moves to the next socket. */
    for (int ri = 0; ri < nreal; ri++) {
        rsock *r = &reals[ri];
        r->first = (uint32_t)((uint64_t)ri * (uint64_t)o.nsock / (uint64_t)nreal);
        r->n = (uint32_t)((uint64_t)(ri + 1) * (uint64_t)o.nsock / (uint64_t)nreal) - r->first;
        r->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (r->fd < 0)
            bn_die("socket: %s", strerror(errno));
        bn_set_bufs(r->fd, o.rcvbuf);
        struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
        int one = 1;
        if (r->n == 1)
            bn_src_addr(&src, o.block, r->first);
        else if (setsockopt(r->fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one) < 0)
            bn_die("IP_PKTINFO: %s", strerror(errno));
        if (bind(r->fd, (struct sockaddr *)&src, sizeof src) < 0 ||
            (r->n == 1 && connect(r->fd, (struct sockaddr *)&o.target, sizeof o.target) < 0))
            bn_die("bind/connect socket %d: %s", ri, strerror(errno));
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)ri };
        epoll_ctl(ep, EPOLL_CTL_ADD, r->fd, &ev);
        for (uint32_t k = r->first; k < r->first + r->n; k++) {
            gsock *s = &socks[k];
            s->idx = k;
            s->real = (uint32_t)ri;
            s->nids = (uint32_t)((o.nids - (uint64_t)k + (uint64_t)o.nsock - 1) / (uint64_t)o.nsock);
            s->ring = calloc((size_t)o.window, sizeof *s->ring);
            if (!s->ring)
                bn_die("out of memory");
            struct sockaddr_in a;
            bn_src_addr(&a, o.block, k);
            s->src = a.sin_addr;
        }
    }

    uint64_t t0 = bn_now_ns();
    t_meas0 = o.once ? t0 : t0 + (uint64_t)(o.warmup_s * 1e9);
    uint64_t t_send_end = o.once ? t0 + (uint64_t)(o.dur_s * 1e9) : t_meas0 + (uint64_t)(o.dur_s * 1e9);
    t_meas1 = t_send_end;
    /* Hard limit: sending stops at t_send_end, then at most one timeout to drain. */
    uint64_t t_hard = t_send_end + o.timeout_ns + 100000000ull;
    bn_win wm;
    memset(&wm, 0, sizeof wm);
    uint64_t t_m0 = 0, t_m1 = 0;
    bool in_window = false;
    uint64_t attempts = 0, last_sweep = 0;
    uint32_t cursor = 0;
    struct epoll_event evs[256];

    if (o.rate <= 0) { /* closed loop: fill every window */
        for (int i = 0; i < o.nsock; i++)
            send_some(&socks[i], o.window, t0);
        q_flush(t0);
    }

    for (;;) {
        uint64_t now = bn_now_ns();
        if (!in_window && now >= t_meas0 && sending) {
            in_window = true;
            t_m0 = now;
            bn_win_start(&wm, &o.pids);
        }
        if (sending && (now >= t_send_end || bn_stop)) {
            sending = false;
            t_m1 = now;
            bn_win_end(&wm, &o.pids);
        }
        if (o.once && sending) {
            bool all = true;
            for (int i = 0; i < o.nsock && all; i++)
                all = done(&socks[i]) && !socks[i].count;
            if (all) {
                sending = false;
                t_m1 = now;
                bn_win_end(&wm, &o.pids);
            }
        }
        if (!sending) {
            bool outstanding = false;
            for (int i = 0; i < o.nsock && !outstanding; i++)
                outstanding = socks[i].count > 0;
            if (!outstanding || now >= t_hard || bn_stop)
                break;
        }

        /* Open loop: send what the clock says is due, round robin. */
        if (sending && o.rate > 0) {
            uint64_t due = (uint64_t)((double)(now - t0) * o.rate / 1e9);
            /* At most -j ms behind: a generator that lost the CPU longer skips
             * what it missed (counted in "behind") instead of sending it as
             * one burst, which would measure its own hiccup, not the server. */
            uint64_t cap = (uint64_t)(o.rate * o.behind_ms / 1000) + 1;
            if (due > attempts + cap) {
                st.behind += due - attempts - cap;
                attempts = due - cap;
            }
            int full_run = 0;
            while (attempts < due && full_run < o.nsock) {
                gsock *s = &socks[cursor++ % (uint32_t)o.nsock];
                uint64_t want = (due - attempts + (uint64_t)o.nsock - 1) / (uint64_t)o.nsock;
                if (want > due - attempts)
                    want = due - attempts;
                int room = o.window - (int)(s->count + s->pend);
                if (room <= 0 || done(s)) {
                    st.window_full++;
                    attempts++;
                    full_run++;
                    continue;
                }
                full_run = 0;
                int r = send_some(s, (int)(want < (uint64_t)room ? want : (uint64_t)room), now);
                attempts += r > 0 ? (uint64_t)r : 1;
            }
            q_flush(now);
        }

        int n = epoll_wait(ep, evs, 256, o.rate > 0 ? (o.spin ? 0 : 1) : 5);
        for (int i = 0; i < n; i++)
            on_readable(evs[i].data.u32);

        /* Requests older than the timeout are lost; the closed loop replaces
         * them (and retries sockets whose last send failed). */
        now = bn_now_ns();
        if (now - last_sweep >= 5000000ull) {
            last_sweep = now;
            for (int i = 0; i < o.nsock; i++) {
                gsock *s = &socks[i];
                while (s->count && now - s->ring[s->head] >= o.timeout_ns)
                    pop(s, now, false);
                if (sending && o.rate <= 0)
                    send_some(s, o.window, now);
            }
            q_flush(now);
        }
    }
    for (int i = 0; i < o.nsock; i++)
        while (socks[i].count)
            pop(&socks[i], bn_now_ns(), false);

    if (o.once) { /* the window is the whole run, up to the last answer */
        if (t_last_recv > t_m0)
            t_m1 = t_last_recv;
    }
    double win = t_m1 > t_m0 ? (double)(t_m1 - t_m0) / 1e9 : 0;
    bn_kv("mode", "%s", o.mode == M_REGPEER ? "regpeer" : o.mode == M_REGPK ? "regpk" : "stun");
    bn_kv("sockets", "%d", o.nsock);
    bn_kv("kernel_sockets", "%d", nreal);
    bn_kv("window", "%d", o.window);
    bn_kv("ids", "%llu", (unsigned long long)o.nids);
    bn_kv("target_rate", "%.0f", o.rate);
    bn_kv("window_s", "%.3f", win);
    bn_kv("sent", "%llu", (unsigned long long)st.sent);
    bn_kv("recv", "%llu", (unsigned long long)st.recv);
    bn_kv("lost", "%llu", (unsigned long long)st.lost);
    bn_kv("m_sent", "%llu", (unsigned long long)st.m_sent);
    bn_kv("m_recv", "%llu", (unsigned long long)st.m_recv);
    bn_kv("m_lost", "%llu", (unsigned long long)st.m_lost);
    bn_kv("late", "%llu", (unsigned long long)st.late);
    bn_kv("unexpected", "%llu", (unsigned long long)st.unexpected);
    bn_kv("send_err", "%llu", (unsigned long long)st.send_err);
    bn_kv("window_full", "%llu", (unsigned long long)st.window_full);
    bn_kv("behind", "%llu", (unsigned long long)st.behind);
    bn_kv("rpk_true", "%llu", (unsigned long long)st.rpk_true);
    bn_kv("rpk_false", "%llu", (unsigned long long)st.rpk_false);
    bn_kv("pk_ok", "%llu", (unsigned long long)st.pk_ok);
    unsigned long long pk_bad = 0;
    for (int i = 0; i < 16; i++)
        pk_bad += st.pk_other[i];
    bn_kv("pk_bad", "%llu", pk_bad);
    bn_kv("pk_too_frequent", "%llu", (unsigned long long)st.pk_other[4]);
    bn_kv("pk_uuid_mismatch", "%llu", (unsigned long long)st.pk_other[2]);
    bn_kv("echo", "%llu", (unsigned long long)st.echo);
    bn_kv("stun_ok", "%llu", (unsigned long long)st.stun_ok);
    double rate = win > 0 ? (double)st.m_recv / win : 0;
    bn_kv("rate", "%.0f", rate);
    bn_kv("send_rate", "%.0f", win > 0 ? (double)st.m_sent / win : 0);
    bn_kv("loss_pct", "%.4f", st.m_sent ? 100.0 * (double)st.m_lost / (double)st.m_sent : 0);
    bn_hist_print(&st.lat, "lat");
    bn_win_print(&wm, &o.pids);
    if (o.pids.n) {
        double srv_s = bn_win_srv_s(&wm);
        bn_kv("srv_cpu_us_per_resp", "%.3f", srv_s >= 0 && st.m_recv ? srv_s * 1e6 / (double)st.m_recv : -1);
    }
    for (int i = 0; i < o.nsock; i++)
        free(socks[i].ring);
    for (int i = 0; i < nreal; i++)
        close(reals[i].fd);
    free(socks);
    free(reals);
    close(ep);
    return 0;
}
