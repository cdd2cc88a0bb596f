/* bench/src/bench.c — see bench.h. */
#include "bench.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t bn_stop;

uint64_t bn_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * BN_NS_PER_S + (uint64_t)ts.tv_nsec;
}

void bn_sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / BN_NS_PER_S), (long)(ns % BN_NS_PER_S) };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !bn_stop)
        ;
}

void bn_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

void bn_kv(const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s=", key);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    fflush(stdout);
}

static void on_signal(int sig)
{
    (void)sig;
    bn_stop = 1;
}

void bn_on_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

long bn_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

long long bn_atoll(const char *s, const char *what, long long min, long long max)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        bn_die("%s: '%s' is not an integer in [%lld, %lld]", what, s, min, max);
    return v;
}

double bn_atof(const char *s, const char *what, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        bn_die("%s: '%s' is not a number in [%g, %g]", what, s, min, max);
    return v;
}

/* ---- histogram ---- */
static unsigned hist_index(uint64_t v)
{
    if (v < BN_HIST_SUB)
        return (unsigned)v;
    if (v >= (1ull << 41))
        v = (1ull << 41) - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 5 */
    unsigned sub = (unsigned)(v >> (e - 5)) - BN_HIST_SUB;
    return (e - 4) * BN_HIST_SUB + sub;
}

static uint64_t hist_value(unsigned i)
{
    if (i < BN_HIST_SUB)
        return i;
    unsigned e = i / BN_HIST_SUB + 4, sub = i % BN_HIST_SUB;
    uint64_t lo = (uint64_t)(BN_HIST_SUB + sub) << (e - 5);
    return lo + ((1ull << (e - 5)) >> 1);
}

void bn_hist_add(bn_hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

uint64_t bn_hist_q(const bn_hist *h, double q)
{
    if (!h->n)
        return 0;
    if (q >= 1.0)
        return h->max;
    uint64_t want = (uint64_t)(q * (double)h->n);
    if (want >= h->n)
        want = h->n - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < BN_HIST_N; i++) {
        seen += h->b[i];
        if (seen > want) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

void bn_hist_print(const bn_hist *h, const char *prefix)
{
    char k[64];
    snprintf(k, sizeof k, "%s_n", prefix);
    bn_kv(k, "%llu", (unsigned long long)h->n);
    static const struct { const char *name; double q; } qs[] = {
        { "p50", 0.50 }, { "p99", 0.99 }, { "p999", 0.999 },
    };
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        snprintf(k, sizeof k, "%s_%s_us", prefix, qs[i].name);
        bn_kv(k, "%.1f", (double)bn_hist_q(h, qs[i].q) / 1e3);
    }
    snprintf(k, sizeof k, "%s_max_us", prefix);
    bn_kv(k, "%.1f", (double)h->max / 1e3);
}

/* ---- CPU ---- */
uint64_t bn_self_cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * BN_NS_PER_S +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

static int64_t stat_ticks_ns(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ") ": state(3) ... utime is field 14, stime 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (int64_t)((ut + st) * (BN_NS_PER_S / (uint64_t)(hz > 0 ? hz : 100)));
}

/* Sum field `which` (0 = run time, 1 = run-queue wait) of schedstat over
 * the threads of pid. */
static int64_t sched_sum(pid_t pid, int which, int *bad)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int64_t sum = 0;
    int tasks = 0;
    struct dirent *de;
    *bad = 0;
    while ((de = readdir(d)) && tasks < 4096) {
        if (de->d_name[0] == '.')
            continue;
        char p2[320];
        snprintf(p2, sizeof p2, "/proc/%d/task/%s/schedstat", (int)pid, de->d_name);
        FILE *f = fopen(p2, "r");
        unsigned long long v[2] = { 0, 0 };
        if (!f || fscanf(f, "%llu %llu", &v[0], &v[1]) != 2)
            (*bad)++;
        if (f)
            fclose(f);
        sum += (int64_t)v[which];
        tasks++;
    }
    closedir(d);
    return tasks ? sum : -1;
}

int64_t bn_proc_cpu_ns(pid_t pid)
{
    int bad;
    int64_t v = sched_sum(pid, 0, &bad);
    return v < 0 ? -1 : bad ? stat_ticks_ns(pid) : v;
}

int64_t bn_proc_wait_ns(pid_t pid)
{
    int bad;
    int64_t v = sched_sum(pid, 1, &bad);
    return bad ? -1 : v;
}

void bn_pids_parse(bn_pids *p, const char *s)
{
    p->n = 0;
    while (s && *s && p->n < (int)(sizeof p->v / sizeof p->v[0])) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0)
            bn_die("bad pid list '%s'", s);
        p->v[p->n++] = (pid_t)v;
        s = *end == ',' ? end + 1 : end;
    }
}

int64_t bn_pids_cpu_ns(const bn_pids *p)
{
    int64_t sum = 0;
    for (int i = 0; i < p->n; i++) {
        int64_t c = bn_proc_cpu_ns(p->v[i]);
        if (c < 0)
            return -1;
        sum += c;
    }
    return sum;
}

/* Run time of the main thread of pid (its thread id equals pid). */
static int64_t main_thread_ns(const bn_pids *p)
{
    if (!p->n)
        return -1;
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task/%d/schedstat", (int)p->v[0], (int)p->v[0]);
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    int ok = f && fscanf(f, "%llu", &v) == 1;
    if (f)
        fclose(f);
    return ok ? (int64_t)v : -1;
}

int64_t bn_pids_wait_ns(const bn_pids *p)
{
    int64_t sum = 0;
    for (int i = 0; i < p->n; i++) {
        int64_t c = bn_proc_wait_ns(p->v[i]);
        if (c < 0)
            return -1;
        sum += c;
    }
    return sum;
}

static void steal_total(uint64_t *steal, uint64_t *total)
{
    unsigned long long v[8] = { 0 };
    FILE *f = fopen("/proc/stat", "r");
    *steal = *total = 0;
    if (!f)
        return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
               &v[7]) == 8) {
        for (int i = 0; i < 8; i++)
            *total += v[i];
        *steal = v[7];
    }
    fclose(f);
}

void bn_win_start(bn_win *w, const bn_pids *p)
{
    steal_total(&w->st0, &w->tot0);
    w->t0 = bn_now_ns();
    w->gen0 = bn_self_cpu_ns();
    w->gw0 = bn_proc_wait_ns(getpid());
    w->srv0 = bn_pids_cpu_ns(p);
    w->sw0 = bn_pids_wait_ns(p);
    w->main0 = main_thread_ns(p);
}

void bn_win_end(bn_win *w, const bn_pids *p)
{
    steal_total(&w->st1, &w->tot1);
    w->t1 = bn_now_ns();
    w->gen1 = bn_self_cpu_ns();
    w->gw1 = bn_proc_wait_ns(getpid());
    w->srv1 = bn_pids_cpu_ns(p);
    w->sw1 = bn_pids_wait_ns(p);
    w->main1 = main_thread_ns(p);
}

double bn_win_s(const bn_win *w)
{
    return w->t1 > w->t0 ? (double)(w->t1 - w->t0) / 1e9 : 0;
}

double bn_win_srv_s(const bn_win *w)
{
    return w->srv0 >= 0 && w->srv1 >= w->srv0 ? (double)(w->srv1 - w->srv0) / 1e9 : -1;
}

static double pct(int64_t a, int64_t b, double win)
{
    return a >= 0 && b >= a && win > 0 ? 100.0 * (double)(b - a) / 1e9 / win : -1;
}

void bn_win_print(const bn_win *w, const bn_pids *p)
{
    double win = bn_win_s(w);
    bn_kv("gen_cpu_pct", "%.1f", pct((int64_t)w->gen0, (int64_t)w->gen1, win));
    bn_kv("gen_wait_pct", "%.1f", pct(w->gw0, w->gw1, win));
    bn_kv("steal_pct", "%.1f", w->tot1 > w->tot0 ? 100.0 * (double)(w->st1 - w->st0) / (double)(w->tot1 - w->tot0) : 0);
    if (p->n) {
        bn_kv("srv_cpu_pct", "%.1f", pct(w->srv0, w->srv1, win));
        bn_kv("srv_main_cpu_pct", "%.1f", pct(w->main0, w->main1, win));
        bn_kv("srv_wait_pct", "%.1f", pct(w->sw0, w->sw1, win));
    }
}

/* ---- addresses ---- */
void bn_parse_addr(struct sockaddr_in *sa, const char *hostport)
{
    char host[64];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host)
        bn_die("address '%s': expected IP:PORT", hostport);
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)bn_atoll(colon + 1, "port", 1, 65535));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        bn_die("address '%s': bad IPv4 address", hostport);
    if ((ntohl(sa->sin_addr.s_addr) >> 24) != 127)
        bn_die("address '%s': the benchmark stays on loopback (127.0.0.0/8)", hostport);
}

void bn_src_addr(struct sockaddr_in *sa, int block, unsigned i)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    uint32_t a = (127u << 24) | ((uint32_t)(block & 255) << 16) | ((i / 250u) & 255u) << 8 | (i % 250u + 1u);
    sa->sin_addr.s_addr = htonl(a);
}

long bn_src_index(struct in_addr a, int block)
{
    uint32_t h = ntohl(a.s_addr);
    unsigned lo = h & 255u;
    if (h >> 24 != 127u || ((h >> 16) & 255u) != (unsigned)(block & 255) || lo < 1 || lo > 250)
        return -1;
    return (long)((h >> 8) & 255u) * 250 + (long)lo - 1;
}

void bn_set_bufs(int fd, int bytes)
{
    if (bytes <= 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

/* ---- protobuf ---- */
static void buf_put(bn_buf *b, uint8_t c)
{
    if (b->n >= b->cap)
        bn_die("internal: message buffer too small");
    b->p[b->n++] = c;
}

void bn_put_varint(bn_buf *b, uint64_t v)
{
    while (v >= 0x80) {
        buf_put(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    buf_put(b, (uint8_t)v);
}

void bn_put_bytes(bn_buf *b, uint32_t field, const void *data, size_t len)
{
    bn_put_varint(b, (uint64_t)field << 3 | 2);
    bn_put_varint(b, len);
    if (b->n + len > b->cap)
        bn_die("internal: message buffer too small");
    memcpy(b->p + b->n, data, len);
    b->n += len;
}

void bn_put_uint(bn_buf *b, uint32_t field, uint64_t v)
{
    bn_put_varint(b, (uint64_t)field << 3);
    bn_put_varint(b, v);
}

void bn_put_msg(bn_buf *b, uint32_t tag, const bn_buf *inner)
{
    bn_put_bytes(b, tag, inner->p, inner->n);
}

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (int s = 0; s < 64 && *p < end; s += 7) {
        uint8_t c = *(*p)++;
        r |= (uint64_t)(c & 0x7f) << s;
        if (!(c & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

int bn_next_field(const uint8_t **p, const uint8_t *end, bn_field *f)
{
    if (*p >= end)
        return 0;
    uint64_t key;
    if (get_varint(p, end, &key) < 0)
        return -1;
    f->num = (uint32_t)(key >> 3);
    f->wt = (uint32_t)(key & 7);
    f->data = NULL;
    f->len = 0;
    f->v = 0;
    switch (f->wt) {
    case 0:
        return get_varint(p, end, &f->v) < 0 ? -1 : 1;
    case 1:
        if (end - *p < 8)
            return -1;
        *p += 8;
        return 1;
    case 5:
        if (end - *p < 4)
            return -1;
        *p += 4;
        return 1;
    case 2: {
        uint64_t len;
        if (get_varint(p, end, &len) < 0 || len > (uint64_t)(end - *p))
            return -1;
        f->data = *p;
        f->len = (size_t)len;
        *p += len;
        return 1;
    }
    default:
        return -1;
    }
}

int bn_msg_tag(const uint8_t *p, size_t n, const uint8_t **body, size_t *blen)
{
    const uint8_t *end = p + n;
    bn_field f;
    int tag = -1, r;
    while ((r = bn_next_field(&p, end, &f)) == 1) {
        if (f.wt == 2 && f.num >= 6 && f.num <= 63) { /* last member wins */
            tag = (int)f.num;
            *body = f.data;
            *blen = f.len;
        }
    }
    return r < 0 ? -1 : tag;
}

size_t bn_frame_header(uint8_t out[4], size_t n)
{
    if (n <= 0x3f) {
        out[0] = (uint8_t)(n << 2);
        return 1;
    }
    if (n <= 0x3fff) {
        uint32_t h = (uint32_t)(n << 2) | 1;
        out[0] = (uint8_t)h, out[1] = (uint8_t)(h >> 8);
        return 2;
    }
    if (n <= 0x3fffff) {
        uint32_t h = (uint32_t)(n << 2) | 2;
        out[0] = (uint8_t)h, out[1] = (uint8_t)(h >> 8), out[2] = (uint8_t)(h >> 16);
        return 3;
    }
    uint32_t h = (uint32_t)(n << 2) | 3;
    out[0] = (uint8_t)h, out[1] = (uint8_t)(h >> 8), out[2] = (uint8_t)(h >> 16), out[3] = (uint8_t)(h >> 24);
    return 4;
}

int bn_frame_parse(const uint8_t *buf, size_t n, size_t max, size_t *hdr, size_t *plen)
{
    if (!n)
        return 0;
    size_t h = (size_t)(buf[0] & 3) + 1;
    if (n < h)
        return 0;
    uint32_t v = 0;
    for (size_t i = 0; i < h; i++)
        v |= (uint32_t)buf[i] << (8 * i);
    size_t len = v >> 2;
    if (len > max)
        return -1;
    if (n < h + len)
        return 0;
    *hdr = h;
    *plen = len;
    return 1;
}

void bn_id(char out[BN_ID_LEN + 1], uint64_t base, uint64_t idx)
{
    uint64_t v = base + idx;
    for (int i = BN_ID_LEN - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
    out[BN_ID_LEN] = 0;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void bn_uuid_pk(uint64_t idx, uint8_t uuid[16], uint8_t pk[32])
{
    uint64_t s = idx * 0x2545f4914f6cdd1dull + 7;
    for (int i = 0; i < 2; i++) {
        uint64_t r = splitmix(&s);
        memcpy(uuid + 8 * i, &r, 8);
    }
    for (int i = 0; i < 4; i++) {
        uint64_t r = splitmix(&s);
        memcpy(pk + 8 * i, &r, 8);
    }
}

size_t bn_enc_register_peer(uint8_t *out, const char *id)
{
    uint8_t ib[64];
    bn_buf in = { ib, 0, sizeof ib }, o = { out, 0, 128 };
    bn_put_bytes(&in, 1, id, strlen(id));
    bn_put_msg(&o, BN_REGISTER_PEER, &in);
    return o.n;
}

size_t bn_enc_register_pk(uint8_t *out, const char *id, const uint8_t uuid[16], const uint8_t pk[32])
{
    uint8_t ib[120];
    bn_buf in = { ib, 0, sizeof ib }, o = { out, 0, 128 };
    bn_put_bytes(&in, 1, id, strlen(id));
    bn_put_bytes(&in, 2, uuid, 16);
    bn_put_bytes(&in, 3, pk, 32);
    bn_put_msg(&o, BN_REGISTER_PK, &in);
    return o.n;
}

size_t bn_enc_request_relay_frame(uint8_t *out, const char *uuid, const char *licence)
{
    uint8_t ib[200], mb[220];
    bn_buf in = { ib, 0, sizeof ib }, m = { mb, 0, sizeof mb };
    bn_put_bytes(&in, 2, uuid, strlen(uuid));
    if (licence && *licence)
        bn_put_bytes(&in, 6, licence, strlen(licence));
    bn_put_msg(&m, BN_REQUEST_RELAY, &in);
    size_t h = bn_frame_header(out, m.n);
    memcpy(out + h, m.p, m.n);
    return h + m.n;
}

static size_t frame_of(uint8_t *out, uint32_t tag, const bn_buf *in)
{
    uint8_t mb[BN_FRAME_MAX];
    bn_buf m = { mb, 0, sizeof mb - 4 };
    bn_put_msg(&m, tag, in);
    size_t h = bn_frame_header(out, m.n);
    memcpy(out + h, m.p, m.n);
    return h + m.n;
}

size_t bn_enc_punch_hole_request(uint8_t *out, const char *id, uint64_t nat, const char *licence,
                                 const char *version)
{
    uint8_t ib[BN_FRAME_MAX - 16];
    bn_buf in = { ib, 0, sizeof ib };
    bn_put_bytes(&in, 1, id, strlen(id));
    if (nat)
        bn_put_uint(&in, 2, nat);
    if (licence && *licence)
        bn_put_bytes(&in, 3, licence, strlen(licence));
    if (version && *version)
        bn_put_bytes(&in, 6, version, strlen(version));
    return frame_of(out, BN_PUNCH_HOLE_REQUEST, &in);
}

size_t bn_enc_punch_hole_sent(uint8_t *out, const uint8_t *sa, size_t salen, const char *id, const uint8_t *relay,
                              size_t rlen, uint64_t nat, const char *version)
{
    uint8_t ib[BN_FRAME_MAX - 16];
    bn_buf in = { ib, 0, sizeof ib };
    bn_put_bytes(&in, 1, sa, salen);
    bn_put_bytes(&in, 2, id, strlen(id));
    if (rlen)
        bn_put_bytes(&in, 3, relay, rlen);
    if (nat)
        bn_put_uint(&in, 4, nat);
    if (version && *version)
        bn_put_bytes(&in, 5, version, strlen(version));
    return frame_of(out, BN_PUNCH_HOLE_SENT, &in);
}

size_t bn_enc_local_addr(uint8_t *out, const uint8_t *sa, size_t salen, const uint8_t *la, size_t lalen,
                         const uint8_t *relay, size_t rlen, const char *id, const char *version)
{
    uint8_t ib[BN_FRAME_MAX - 16];
    bn_buf in = { ib, 0, sizeof ib };
    bn_put_bytes(&in, 1, sa, salen);
    bn_put_bytes(&in, 2, la, lalen);
    if (rlen)
        bn_put_bytes(&in, 3, relay, rlen);
    bn_put_bytes(&in, 4, id, strlen(id));
    if (version && *version)
        bn_put_bytes(&in, 5, version, strlen(version));
    return frame_of(out, BN_LOCAL_ADDR, &in);
}

size_t bn_mangle_v4(uint8_t out[16], const struct sockaddr_in *sa)
{
    uint32_t ip = sa->sin_addr.s_addr; /* octets in memory order = the LE value the spec reads */
    uint64_t a = ip, lo = ntohs(sa->sin_port) | (a << 49), hi = a >> 15;
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(lo >> (8 * i)), out[8 + i] = (uint8_t)(hi >> (8 * i));
    size_t n = 16;
    while (n && !out[n - 1])
        n--;
    return n;
}

size_t bn_enc_stun_binding(uint8_t *out, uint64_t seq)
{
    static const uint8_t head[8] = { 0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42 };
    memcpy(out, head, 8);
    memcpy(out + 8, "bn", 2);
    for (int i = 0; i < 8; i++)
        out[12 + i] = (uint8_t)(seq >> (8 * i));
    out[10] = (uint8_t)(seq >> 56), out[11] = 0x5a;
    return 20;
}
