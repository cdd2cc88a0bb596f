/* core/listener.c — TCP and UDP listening sockets.
 *
 * Binding follows upstream (wire.md §4): "[::]" with IPV6_V6ONLY off (dual
 * stack), falling back to 0.0.0.0 when the host has no IPv6; SO_REUSEADDR
 * set. A bind address restricts to that address only. Unlike upstream, no
 * SO_REUSEPORT: with it a second rdvd on the same ports starts without a
 * word and takes a share of the datagrams and connections into a registry
 * of its own (relay.md §2 leaves it out); without it, it is refused with
 * "port in use". */
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "rdv/wire.h"
#include "server.h"

#define ACCEPT_BATCH 64
#define EMFILE_PAUSE_S 0.1

static int sock_open(int family, int type, const struct sockaddr *sa, socklen_t len, bool v6only_off,
                     int rcvbuf)
{
    int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6 && v6only_off)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (type == SOCK_DGRAM) {
        /* Send rendezvous replies (all far below any MTU) with DF set and the
         * route's MTU ignored: the kernel then writes IP ID 0 instead of
         * taking the shared ID generator for every unconnected datagram
         * (~3 % of the loop's CPU under load). On the dual-stack socket the
         * IPv4 option governs v4-mapped peers. */
        int probe = IP_PMTUDISC_PROBE;
        setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &probe, sizeof probe);
    }
    if (bind(fd, sa, len) < 0 || (type == SOCK_STREAM && listen(fd, 1024) < 0)) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* Returns fd >= 0 and sets *family, or -errno. */
static int bind_any(const char *bind_s, int port, int type, bool ipv6, int rcvbuf, int *family)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (bind_s && *bind_s) {
        rdv_addr a;
        if (rdv_addr_parse(&a, bind_s, (uint16_t)port) < 0)
            return -EINVAL;
        rdv_addr_set_port(&a, (uint16_t)port);
        /* Keep the family the operator wrote: a v4 bind address gets a v4 socket. */
        int fam = a.u.sa.sa_family;
        socklen_t len = rdv_addr_to_sockaddr(&a, fam, &ss);
        *family = fam;
        return sock_open(fam, type, (struct sockaddr *)&ss, len, false, rcvbuf);
    }
    if (ipv6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        s6->sin6_addr = in6addr_any;
        int fd = sock_open(AF_INET6, type, (struct sockaddr *)s6, sizeof *s6, true, rcvbuf);
        if (fd >= 0 || (fd != -EAFNOSUPPORT && fd != -EADDRNOTAVAIL && fd != -EPROTONOSUPPORT)) {
            *family = AF_INET6;
            return fd;
        }
        memset(&ss, 0, sizeof ss);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    s4->sin_addr.s_addr = htonl(INADDR_ANY);
    *family = AF_INET;
    return sock_open(AF_INET, type, (struct sockaddr *)s4, sizeof *s4, false, rcvbuf);
}

/* ---- UDP ----
 * Datagrams are read with recvmmsg and replies produced while a batch is
 * being handled are queued and sent with one sendmmsg at its end: on a busy
 * rendezvous port this halves the system calls per request. Each receive
 * slot holds a whole 64 KiB datagram (only the pages a datagram touches
 * become resident); a reply larger than an out slot is sent at once. */
#define UDP_MAX 65536
#define UDP_OUT_SLOT 2048

typedef struct udp_batch {
    rdv_listener *active;                /* listener whose batch is being handled */
    struct mmsghdr in[RDV_UDP_BATCH_MAX];
    struct iovec in_iov[RDV_UDP_BATCH_MAX];
    struct sockaddr_storage in_addr[RDV_UDP_BATCH_MAX];
    uint8_t *in_buf;                     /* RDV_UDP_BATCH_MAX x UDP_MAX */
    struct mmsghdr out[RDV_UDP_BATCH_MAX];
    struct iovec out_iov[RDV_UDP_BATCH_MAX];
    struct sockaddr_storage out_addr[RDV_UDP_BATCH_MAX];
    unsigned nout;
    uint8_t out_buf[RDV_UDP_BATCH_MAX][UDP_OUT_SLOT]; /* last: not zeroed (rdv_udp_batch_init) */
} udp_batch;

/* The receive vector is set up once: recvmmsg writes only msg_len and, in
 * each header, msg_namelen and msg_flags, so after a batch only the
 * name lengths of the slots it used are reset (udp_slots_reset). Rebuilding
 * every slot on every wake-up was ~1 % of the loop's time at 83,000
 * datagrams/s arriving one or two per wake-up. */
static void udp_slots_reset(udp_batch *b, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        b->in[i].msg_hdr.msg_namelen = sizeof b->in_addr[i];
}

int rdv_udp_batch_init(rdv_server *s)
{
    /* Zeroing the 128 KiB of answer slots would make every page of them
     * resident in an idle node; each answer is written before it is sent. */
    s->ub = malloc(sizeof *s->ub);
    if (!s->ub)
        return -ENOMEM;
    udp_batch *b = s->ub;
    memset(b, 0, offsetof(udp_batch, out_buf));
    if (!(b->in_buf = malloc((size_t)RDV_UDP_BATCH_MAX * UDP_MAX)))
        return -ENOMEM;
    for (unsigned i = 0; i < RDV_UDP_BATCH_MAX; i++) {
        b->in_iov[i] = (struct iovec){ b->in_buf + (size_t)i * UDP_MAX, UDP_MAX };
        b->in[i].msg_hdr = (struct msghdr){ .msg_name = &b->in_addr[i], .msg_iov = &b->in_iov[i], .msg_iovlen = 1 };
    }
    udp_slots_reset(b, RDV_UDP_BATCH_MAX);
    return 0;
}

void rdv_udp_batch_free(rdv_server *s)
{
    if (s->ub)
        free(s->ub->in_buf);
    free(s->ub);
    s->ub = NULL;
}

static void udp_flush(rdv_server *s)
{
    udp_batch *b = s->ub;
    unsigned done = 0;
    while (done < b->nout) {
        int n = sendmmsg(b->active->fd, b->out + done, b->nout - done, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            /* the kernel refused (buffer full, or an error for the first
             * datagram): count it and skip that one, as a failed sendto */
            (*s->st.udp_send_fail)++;
            done++;
            continue;
        }
        (*s->st.udp_out) += (uint64_t)n;
        done += (unsigned)n;
    }
    b->nout = 0;
}

static void udp_hot_note(rdv_listener *l, const rdv_addr *a);

/* One recvmmsg batch handled and its replies sent; returns the datagrams
 * read (0 when none was waiting). */
static int udp_read_batch(rdv_listener *l, unsigned want)
{
    rdv_server *s = l->srv;
    udp_batch *b = s->ub;
    int n = recvmmsg(l->fd, b->in, want, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            RDV_LOG_RL(&s->core_mod.handle, RDV_LOG_WARN, "udp %s: recvmmsg: %s", l->name, strerror(errno));
        return 0;
    }
    b->active = l;
    for (int i = 0; i < n; i++) {
        (*s->st.udp_in)++;
        const uint8_t *p = b->in_iov[i].iov_base;
        size_t len = b->in[i].msg_len;
        if (b->in[i].msg_hdr.msg_flags & MSG_TRUNC) { /* cannot happen with 64 KiB slots; never trust a length */
            (*s->st.udp_undecodable)++;
            continue;
        }
        rdv_addr peer;
        if (rdv_addr_from_sockaddr(&peer, (struct sockaddr *)&b->in_addr[i], b->in[i].msg_hdr.msg_namelen) < 0)
            continue;
        if (l->hot && s->cfg.udp_coalesce_us > 0)
            udp_hot_note(l, &peer);
        if (l->mode == RDV_LISTEN_RAW)
            l->ops->on_datagram(l->ud, l, &peer, p, len);
        else if (len == 0) /* empty datagram = empty message: ignored (wire.md §4) */
            (*s->st.udp_empty)++;
        else
            rdv_dispatch(s, RDV_TR_UDP, l, l->name, 0, &peer, p, len);
    }
    udp_slots_reset(b, (unsigned)n);
    if (b->nout)
        udp_flush(s);
    b->active = NULL;
    return n;
}

static unsigned udp_want(const rdv_server *s)
{
    return (unsigned)(s->cfg.udp_batch < RDV_UDP_BATCH_MAX ? s->cfg.udp_batch : RDV_UDP_BATCH_MAX);
}

/* Read coalescing. Each wake-up of the loop costs a context switch (and, on
 * loopback, the sender's wake-up of the loop): at tens of thousands of
 * datagrams a second arriving a few at a time, that is a fifth of the CPU.
 * So when a datagram arrives less than core.udp_coalesce_us after the
 * previous wake-up began, the socket is next read on a periodic timerfd tick
 * of that period, counted from when that wake-up began (not from when its
 * work ended): a server busier than one tick per period never waits, and
 * replies leave in one sendmmsg per tick. A tick that finds nothing resumes
 * arrival-driven reading, so a sparse datagram is never delayed. timerfd,
 * not an ev_timer: libev's epoll backend sleeps in whole milliseconds.
 *
 * Hot sources are not coalesced. The tick pays off for many clients each
 * sending now and then (a node's peers re-registering). When most of a
 * wake-up's datagrams come from sources that sent another one less than a
 * period ago, the traffic is a few sources at a high rate each: a client
 * that waits for each answer before its next request (which a tick would
 * hold to one window per period: a fifth fewer answers on loopback) or a
 * flood (ip-blocker's business). Those are read on arrival. Sources are
 * remembered per hash bucket, so two clients sharing a bucket look like one
 * hotter source: with 1024 buckets that is rare at the rates where the tick
 * matters (83,000 datagrams/s over 500 µs stamps ~40 buckets). */
#define UDP_HOT_BUCKETS 1024u

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static unsigned udp_hot_bucket(const rdv_addr *a)
{
    uint64_t h;
    if (a->u.sa.sa_family == AF_INET) {
        h = (uint64_t)a->u.v4.sin_addr.s_addr << 16 ^ a->u.v4.sin_port;
    } else {
        uint64_t w[2];
        memcpy(w, &a->u.v6.sin6_addr, sizeof w);
        h = w[0] * 0x9E3779B97F4A7C15u ^ w[1] ^ a->u.v6.sin6_port;
    }
    return (unsigned)((h * 0x9E3779B97F4A7C15u) >> 54); /* top 10 bits: < UDP_HOT_BUCKETS */
}

/* Hot: the bucket sent earlier in this wake-up, or (reading on arrival)
 * less than a period before it. A tick reads one period of arrivals, so
 * there only a repeat within the tick counts: the previous tick is a period
 * ago give or take the timer's jitter, too close to call. The stamps are
 * in 16 µs units, so "less than a period" allows one unit more: a wake-up
 * udp_read_cb finds dense (less than a period after the last, in µs) must
 * find a source that also sent at that last wake-up hot, or a lone client
 * whose requests came just under a period apart would be held for ticks. */
static void udp_hot_note(rdv_listener *l, const rdv_addr *a)
{
    uint32_t *slot = &l->hot[udp_hot_bucket(a)];
    uint64_t age = (uint32_t)(l->wake_t16 - *slot), us = (uint64_t)l->srv->cfg.udp_coalesce_us;
    if (*slot && (age == 0 || (!l->wake_ticked && age * 16 < us + 16)))
        l->wake_hot++;
    *slot = l->wake_t16 ? l->wake_t16 : 1;
    l->wake_n++;
}

/* A wake-up begins: the clock for the hot-source stamps, counts reset.
 * Without the table (no memory) every source counts as cold, as before. */
static void udp_wake_begin(rdv_listener *l, uint64_t now_us, bool ticked)
{
    if (!l->hot)
        l->hot = calloc(UDP_HOT_BUCKETS, sizeof *l->hot);
    l->wake_ticked = ticked;
    l->wake_t16 = (uint32_t)(now_us / 16);
    l->wake_n = l->wake_hot = 0;
}

static bool udp_wake_hot(const rdv_listener *l) { return l->wake_hot * 2 > l->wake_n; }

static bool udp_pause(rdv_listener *l, uint64_t first_us, int64_t period_us)
{
    rdv_server *s = l->srv;
    if (l->tfd < 0) {
        l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (l->tfd < 0) {
            RDV_LOG_RL(&s->core_mod.handle, RDV_LOG_WARN, "udp %s: timerfd: %s (reads not coalesced)", l->name,
                       strerror(errno));
            return false;
        }
        ev_io_set(&l->pause, l->tfd, EV_READ);
    }
    struct itimerspec its = {
        .it_interval = { .tv_sec = period_us / 1000000, .tv_nsec = (long)(period_us % 1000000) * 1000 },
        .it_value = { .tv_sec = (time_t)(first_us / 1000000u), .tv_nsec = (long)(first_us % 1000000u) * 1000 },
    };
    if (timerfd_settime(l->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        return false;
    (*s->st.udp_pauses)++;
    return true;
}

/* Reads until the socket is drained, at most 4 batches (other watchers must
 * run too); returns the datagrams read. */
static int udp_drain(rdv_listener *l, unsigned want)
{
    int total = 0;
    for (int i = 0; i < 4 && l->fd >= 0; i++) {
        int n = udp_read_batch(l, want);
        total += n;
        if ((unsigned)n < want)
            break;
    }
    return total;
}

static void udp_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    rdv_listener *l = w->data;
    rdv_server *s = l->srv;
    int64_t us = s->cfg.udp_coalesce_us;
    uint64_t t0 = 0;
    if (us > 0)
        udp_wake_begin(l, t0 = mono_us(), false);
    unsigned want = udp_want(s);
    int n = udp_read_batch(l, want);
    if (us <= 0 || n <= 0)
        return; /* off, or nothing read: neither dense nor a reference for the next */
    bool dense = (unsigned)n < want && t0 - l->last_wake_us < (uint64_t)us;
    l->last_wake_us = t0;
    if (!dense)
        return;
    if (udp_wake_hot(l))
        (*s->st.udp_hot)++;
    else if (udp_pause(l, t0 + (uint64_t)us, us)) {
        ev_io_stop(loop, &l->io);
        ev_io_start(loop, &l->pause);
    }
}

static void udp_pause_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    rdv_listener *l = w->data;
    rdv_server *s = l->srv;
    uint64_t ticks;
    if (read(l->tfd, &ticks, sizeof ticks) < 0 && errno == EAGAIN)
        return; /* spurious */
    udp_wake_begin(l, l->last_wake_us = mono_us(), true);
    int n = udp_drain(l, udp_want(s));
    bool hot = n > 0 && udp_wake_hot(l);
    if (hot)
        (*s->st.udp_hot)++;
    else if (n > 0 && s->cfg.udp_coalesce_us > 0)
        return; /* still fed by many sources: the next tick reads again */
    struct itimerspec off = { 0 };
    timerfd_settime(l->tfd, 0, &off, NULL);
    ev_io_stop(loop, &l->pause);
    ev_io_start(loop, &l->io);
}

int rdv_udp_send(rdv_server *s, rdv_listener *l, const rdv_addr *to, const uint8_t *p, size_t n)
{
    if (!l || l->transport != RDV_TR_UDP || l->fd < 0)
        return -EINVAL;
    udp_batch *b = s->ub;
    if (b && b->active == l && n <= UDP_OUT_SLOT) {
        /* inside this listener's read batch: queue, sent by udp_flush */
        if (b->nout == RDV_UDP_BATCH_MAX)
            udp_flush(s);
        unsigned i = b->nout;
        socklen_t len = rdv_addr_to_sockaddr(to, l->family, &b->out_addr[i]);
        if (!len)
            return -EAFNOSUPPORT;
        memcpy(b->out_buf[i], p, n);
        b->out_iov[i] = (struct iovec){ b->out_buf[i], n };
        b->out[i].msg_hdr = (struct msghdr){ .msg_name = &b->out_addr[i], .msg_namelen = len,
                                             .msg_iov = &b->out_iov[i], .msg_iovlen = 1 };
        b->nout++;
        return 0;
    }
    if (b && b->active == l && b->nout)
        udp_flush(s); /* keep replies in order */
    struct sockaddr_storage ss;
    socklen_t len = rdv_addr_to_sockaddr(to, l->family, &ss);
    if (!len)
        return -EAFNOSUPPORT;
    if (sendto(l->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&ss, len) < 0) {
        (*s->st.udp_send_fail)++;
        return -errno;
    }
    (*s->st.udp_out)++;
    return 0;
}

/* ---- TCP accept ---- */
static void accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    rdv_listener *l = w->data;
    if (!l->srv->stopping)
        ev_io_start(loop, &l->io);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    rdv_listener *l = w->data;
    rdv_server *s = l->srv;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t slen = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &slen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: the pending connection stays in the backlog
                 * and would wake us forever. Pause accepting briefly instead of
                 * spinning; connections that close meanwhile free descriptors. */
                (*s->st.accept_emfile)++;
                RDV_LOG_RL(&s->core_mod.handle, RDV_LOG_WARN,
                           "%s: accept: %s; pausing accepts for 100 ms (raise the limit with ulimit -n / LimitNOFILE)",
                           l->name, strerror(errno));
                ev_io_stop(loop, &l->io);
                ev_timer_set(&l->retry, EMFILE_PAUSE_S, 0);
                ev_timer_start(loop, &l->retry);
            }
            return;
        }
        rdv_addr peer;
        if (rdv_addr_from_sockaddr(&peer, (struct sockaddr *)&ss, slen) < 0) {
            close(fd);
            continue;
        }
        if ((int64_t)s->nconns >= s->cfg.max_connections) {
            (*s->st.refused_limit)++;
            RDV_LOG_RL(&s->core_mod.handle, RDV_LOG_WARN,
                       "%s: connection limit core.max_connections=%lld reached; refusing",
                       l->name, (long long)s->cfg.max_connections);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        (*s->st.accepted)++;
        rdv_conn_accept(s, l, fd, &peer);
    }
}

int rdv_listener_open(rdv_server *s, const rdv_listen_spec *spec, rdv_mod *owner, rdv_listener **out)
{
    const char *who = owner ? owner->desc->name : "core";
    if (spec->port < 1 || spec->port > 65535 || (spec->transport != RDV_TR_TCP && spec->transport != RDV_TR_UDP)) {
        rdv_logf(who, RDV_LOG_ERR, "listener '%s': invalid port %d or transport", spec->name, spec->port);
        return -EINVAL;
    }
    if (spec->mode != RDV_LISTEN_DISPATCH && !spec->ops) {
        rdv_logf(who, RDV_LOG_ERR, "listener '%s': a module-owned listener needs callbacks", spec->name);
        return -EINVAL;
    }
    int fam = 0;
    bool udp = spec->transport == RDV_TR_UDP;
    int fd = bind_any(spec->bind, spec->port, udp ? SOCK_DGRAM : SOCK_STREAM, s->cfg.ipv6,
                      udp ? (int)s->cfg.udp_rcvbuf : 0, &fam);
    if (fd < 0) {
        const rdv_listener *own = NULL; /* a port this rdvd already holds: the conf repeats it */
        for (const rdv_listener *o = s->listeners; fd == -EADDRINUSE && o && !own; o = o->next)
            if (o->port == spec->port && o->transport == spec->transport)
                own = o;
        if (own) {
            rdv_logf(who, RDV_LOG_ERR, "cannot listen on %s port %d for '%s': this rdvd already listens there for "
                     "'%s' (%s): give each its own port", udp ? "UDP" : "TCP", spec->port, spec->name, own->name,
                     own->owner ? own->owner->desc->name : "core.listeners");
            return fd;
        }
        const char *fix = fd == -EADDRINUSE ? " (another process uses this port: stop it or choose another port)"
                        : fd == -EACCES     ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                        : fd == -EINVAL     ? " (bad bind address)"
                                            : "";
        rdv_logf(who, RDV_LOG_ERR, "cannot listen on %s %s:%d for '%s': %s%s", udp ? "UDP" : "TCP",
                 spec->bind && *spec->bind ? spec->bind : "[::]", spec->port, spec->name, strerror(-fd), fix);
        return fd;
    }
    rdv_listener *l = calloc(1, sizeof *l);
    if (!l || !(l->name = strdup(spec->name ? spec->name : "")) || !(l->bind = strdup(spec->bind ? spec->bind : ""))) {
        if (l)
            free(l->name), free(l->bind);
        free(l);
        close(fd);
        return -ENOMEM;
    }
    l->srv = s, l->transport = spec->transport, l->mode = spec->mode, l->fd = fd, l->family = fam;
    if (spec->mode == RDV_LISTEN_FRAMED_EXACT)
        l->mode = RDV_LISTEN_FRAMED, l->exact = true;
    l->port = spec->port, l->owner = owner, l->ops = spec->ops, l->ud = spec->ud;
    l->idle_ms = spec->idle_ms ? spec->idle_ms : (uint64_t)s->cfg.idle_ms;
    l->max_buffer = spec->max_buffer ? spec->max_buffer : (size_t)s->cfg.read_buffer;
    l->max_frame = spec->max_frame && spec->max_frame < (size_t)s->cfg.max_frame ? spec->max_frame
                                                                                : (size_t)s->cfg.max_frame;
    ev_io_init(&l->io, udp ? udp_read_cb : accept_cb, fd, EV_READ);
    l->io.data = l;
    l->tfd = -1;
    ev_init(&l->pause, udp_pause_cb);
    l->pause.data = l;
    ev_init(&l->retry, accept_resume_cb);
    l->retry.data = l;
    ev_io_start(s->loop, &l->io);
    l->next = s->listeners;
    s->listeners = l;
    rdv_logf(who, RDV_LOG_INFO, "listening on %s %s:%d (%s)", udp ? "UDP" : "TCP",
             *l->bind ? l->bind : (fam == AF_INET6 ? "[::]" : "0.0.0.0"), l->port, l->name);
    if (out)
        *out = l;
    return 0;
}

void rdv_listeners_stop(rdv_server *s)
{
    for (rdv_listener *l = s->listeners; l; l = l->next) {
        ev_io_stop(s->loop, &l->io);
        ev_io_stop(s->loop, &l->pause);
        ev_timer_stop(s->loop, &l->retry);
        if (l->transport == RDV_TR_TCP && l->fd >= 0) {
            close(l->fd); /* refuse new connections at once */
            l->fd = -1;
        }
    }
}

void rdv_listeners_free(rdv_server *s)
{
    rdv_listeners_stop(s);
    for (rdv_listener *l = s->listeners, *n; l; l = n) {
        n = l->next;
        if (l->fd >= 0)
            close(l->fd);
        if (l->tfd >= 0)
            close(l->tfd);
        free(l->hot), free(l->name), free(l->bind), free(l);
    }
    s->listeners = NULL;
}
