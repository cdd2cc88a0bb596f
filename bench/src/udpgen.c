/* bench/src/udpgen.c — UDP request/response load generator.
 *
 * S connected UDP sockets, each bound to its own 127.<block>.x.y source,
 * keep up to W requests outstanding (closed loop) or send at a fixed total
 * rate (open loop, -r). Replies on one socket come back in order (one
 * loopback path, one server socket), so a reply is matched to the oldest
 * outstanding request of its socket; a request unanswered after the timeout
 * counts as lost. Peer ids: id index k belongs to socket k % S, so every
 * socket cycles over its own ids.
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

typedef struct gsock {
    int fd;
    uint32_t idx;        /* socket index */
    uint32_t nids, next; /* ids of this socket: idx + j*S, j < nids */
    uint32_t head, count;
    uint64_t *ring; /* send times of outstanding requests, oldest at head */
    bool done;      /* -o: every id sent once */
} gsock;

static struct {
    int mode;
    int nsock, window, block, rcvbuf;
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

/* Send up to k requests on s; returns how many went out. */
static int send_some(gsock *s, int k, uint64_t now)
{
    static uint8_t data[BATCH][DGRAM_MAX];
    static struct iovec iov[BATCH];
    static struct mmsghdr mm[BATCH];
    if (k > BATCH)
        k = BATCH;
    if (k > o.window - (int)s->count)
        k = o.window - (int)s->count;
    int n = 0;
    uint32_t next = s->next;
    for (bool end = s->done; n < k && !end; n++) {
        iov[n].iov_base = data[n];
        iov[n].iov_len = build(s, next, data[n]);
        memset(&mm[n].msg_hdr, 0, sizeof mm[n].msg_hdr);
        mm[n].msg_hdr.msg_iov = &iov[n];
        mm[n].msg_hdr.msg_iovlen = 1;
        if (++next >= s->nids) {
            next = 0;
            end = o.once;
        }
    }
    if (n == 0)
        return 0;
    int r = sendmmsg(s->fd, mm, (unsigned)n, MSG_DONTWAIT);
    if (r <= 0) {
        st.send_err++;
        return 0;
    }
    /* Only the r datagrams that went out advance the id cursor. */
    for (int i = 0; i < r; i++) {
        s->ring[(s->head + s->count) % (uint32_t)o.window] = now;
        s->count++;
        if (++s->next >= s->nids) {
            s->next = 0;
            s->done = o.once;
        }
    }
    st.sent += (uint64_t)r;
    if (measured(now))
        st.m_sent += (uint64_t)r;
    return r;
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

static void on_readable(gsock *s)
{
    static uint8_t data[BATCH][DGRAM_MAX];
    static struct iovec iov[BATCH];
    static struct mmsghdr mm[BATCH];
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = data[i];
            iov[i].iov_len = DGRAM_MAX;
            memset(&mm[i].msg_hdr, 0, sizeof mm[i].msg_hdr);
            mm[i].msg_hdr.msg_iov = &iov[i];
            mm[i].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(s->fd, mm, BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0)
            return; /* EAGAIN, or ECONNREFUSED from an ICMP error: counted as loss later */
        uint64_t now = bn_now_ns();
        for (int i = 0; i < r; i++) {
            if (!classify(data[i], mm[i].msg_len)) {
                st.unexpected++;
                continue;
            }
            if (!s->count) {
                st.late++; /* answer to a request already counted lost */
                continue;
            }
            pop(s, now, true);
        }
        if (r < BATCH)
            return;
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: udpgen -t IP:PORT [-m regpeer|regpk|stun] [-s sockets] [-w window] [-n ids]\n"
            "              [-B id_base] [-r rate/s (0: closed loop)] [-W warmup_s] [-d duration_s]\n"
            "              [-o (each id once)] [-T timeout_ms] [-S src_block] [-b sockbuf] [-P pid,...]\n"
            "              [-j ms: open loop catches up at most this far behind, default 2]\n"
            "              [-Y (open loop: poll without sleeping)]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int c;
    bool have_target = false;
    while ((c = getopt(argc, argv, "t:m:s:w:n:B:r:W:d:oT:S:b:P:j:Y")) != -1) {
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
    gsock *socks = calloc((size_t)o.nsock, sizeof *socks);
    if (ep < 0 || !socks)
        bn_die("out of memory");
    for (int i = 0; i < o.nsock; i++) {
        gsock *s = &socks[i];
        s->idx = (uint32_t)i;
        s->nids = (uint32_t)((o.nids - (uint64_t)i + (uint64_t)o.nsock - 1) / (uint64_t)o.nsock);
        s->ring = calloc((size_t)o.window, sizeof *s->ring);
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (!s->ring || s->fd < 0)
            bn_die("socket: %s", strerror(errno));
        bn_set_bufs(s->fd, o.rcvbuf);
        struct sockaddr_in src;
        bn_src_addr(&src, o.block, (unsigned)i);
        if (bind(s->fd, (struct sockaddr *)&src, sizeof src) < 0 ||
            connect(s->fd, (struct sockaddr *)&o.target, sizeof o.target) < 0)
            bn_die("bind/connect socket %d: %s", i, strerror(errno));
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
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
    bool in_window = false, sending = true;
    uint64_t attempts = 0, last_sweep = 0, t_last_recv = 0;
    uint32_t cursor = 0;
    struct epoll_event evs[256];

    if (o.rate <= 0) /* closed loop: fill every window */
        for (int i = 0; i < o.nsock; i++)
            while (socks[i].count < (uint32_t)o.window && !socks[i].done)
                if (!send_some(&socks[i], o.window, t0))
                    break;

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
                all = socks[i].done && !socks[i].count;
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
                int room = o.window - (int)s->count;
                if (room <= 0 || s->done) {
                    st.window_full++;
                    attempts++;
                    full_run++;
                    continue;
                }
                full_run = 0;
                int r = send_some(s, (int)(want < (uint64_t)room ? want : (uint64_t)room), now);
                attempts += r > 0 ? (uint64_t)r : 1;
            }
        }

        int n = epoll_wait(ep, evs, 256, o.rate > 0 ? (o.spin ? 0 : 1) : 5);
        for (int i = 0; i < n; i++) {
            gsock *s = &socks[evs[i].data.u32];
            uint32_t before = s->count;
            on_readable(s);
            if (s->count < before)
                t_last_recv = bn_now_ns();
            if (sending && o.rate <= 0)
                send_some(s, o.window - (int)s->count, bn_now_ns());
        }

        /* Requests older than the timeout are lost; the closed loop replaces
         * them (and retries sockets whose last send failed). */
        now = bn_now_ns();
        if (now - last_sweep >= 5000000ull) {
            last_sweep = now;
            for (int i = 0; i < o.nsock; i++) {
                gsock *s = &socks[i];
                while (s->count && now - s->ring[s->head] >= o.timeout_ns)
                    pop(s, now, false);
                if (sending && o.rate <= 0 && s->count < (uint32_t)o.window)
                    send_some(s, o.window, now);
            }
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
    for (int i = 0; i < o.nsock; i++) {
        close(socks[i].fd);
        free(socks[i].ring);
    }
    free(socks);
    close(ep);
    return 0;
}
