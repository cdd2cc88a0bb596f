/* Integration: the relay module (hbbr) in the real rdvd, started from the
 * relay-only profile (conf.d/profiles/relay-only) with only timeouts and
 * rates overridden. Clients connect from distinct 127.x.y.z addresses.
 * Item numbers L… are from relay-checklist.md; every bad-input case ends
 * with a liveness check (a fresh pair must relay). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "harness.h"
#include "rdclient.h"
#include "rdv/wire.h"

static rdvt_server srv;
static int relay_port;

/* Under valgrind (RDV_VALGRIND=1) and sanitizers the server is slower and
 * bigger: time limits stretch by this factor and memory bounds are not
 * checked (the relay's own bounds are unit-tested). */
static int slowf(void) { return srv.valgrind ? 10 : RDVT_SANITIZED ? 2 : 1; }
static bool check_memory(void) { return !srv.valgrind && !RDVT_SANITIZED; }

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ------------------------------------------------------------------ server */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot read %s", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

static const char *args[64];
static char portset[64], modset[600];

/* Start (or restart) the prepared server; wait for it to be ready unless
 * a start-up failure is expected. */
static int launch(bool wait_ready)
{
    /* Suites of other modules run in parallel: a port taken meanwhile is
     * not our failure; move to the next block and try again. */
    for (int attempt = 0;; attempt++) {
        /* The harness waits for "ready:" in the log: start a restart afresh. */
        if (truncate(srv.log, 0) < 0 && errno != ENOENT)
            return -1;
        int r = rdvt_start_exe(&srv, "rdvd", args, wait_ready);
        if (r == 0 || attempt >= 3 || !rdvt_log_contains(&srv, "Address already in use"))
            return r;
        srv.port = rdvt_base_port();
        relay_port = srv.port + 1;
        snprintf(portset, sizeof portset, "relay.port=%d", relay_port);
    }
}

/* The profile's files, verbatim; sets are "relay.key=value" overrides,
 * files (name, text) pairs written to the working directory. */
static void prepare(const char *const *sets, const char *const *files)
{
    char root[512], path[600];
    snprintf(root, sizeof root, "%s", __FILE__);
    char *cut = strstr(root, "tests/integration/itest_relay.c");
    cr_assert_not_null(cut);
    *cut = '\0';
    snprintf(path, sizeof path, "%sconf.d/profiles/relay-only/00-core.conf", root);
    char *core = read_text(path);
    snprintf(path, sizeof path, "%sconf.d/profiles/relay-only/40-relay.conf", root);
    char *relay = read_text(path);
    const char *conf[] = { "00-core.conf", core, "40-relay.conf", relay, NULL };
    cr_assert_eq(rdvt_prepare(&srv, conf), 0);
    free(core), free(relay);
    for (size_t i = 0; files && files[i]; i += 2) {
        snprintf(path, sizeof path, "%s/%s", srv.dir, files[i]);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(files[i + 1], f);
        fclose(f);
    }
    relay_port = srv.port + 1;
    snprintf(portset, sizeof portset, "relay.port=%d", relay_port);
    snprintf(modset, sizeof modset, "core.module_path=%s/modules", RDV_BUILD_DIR);
    int n = 0;
    args[n++] = "-o";
    args[n++] = modset;
    args[n++] = "-o";
    args[n++] = portset;
    for (size_t i = 0; sets && sets[i] && n < 62; i++) {
        args[n++] = "-o";
        args[n++] = sets[i];
    }
    args[n] = NULL;
}

static void start_with(const char *const *sets, const char *const *files)
{
    prepare(sets, files);
    cr_assert_eq(launch(true), 0, "rdvd did not start");
}

static const char *const fast[] = { "relay.single_bandwidth=100000", "relay.total_bandwidth=100000", NULL };

static void setup(void)
{
    /* The server is our child: it inherits this limit (1000 pairs need it). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0)
        cr_assert_fail("libsodium did not initialise");
}

static void teardown(void)
{
    int st = srv.pid > 0 ? rdvt_stop(&srv) : 0; /* a test may have stopped it */
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "rdvd did not exit cleanly (status %d)", st);
}

TestSuite(relay, .init = setup, .fini = teardown, .timeout = 60);

/* ------------------------------------------------------------------ clients */
/* BytesCodec frame of RendezvousMessage{request_relay{uuid, licence_key}}. */
static size_t rr_frame(uint8_t *out, const char *uuid, const char *key)
{
    Hbb__RequestRelay rr = HBB__REQUEST_RELAY__INIT;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    rr.uuid = (char *)uuid;
    if (key)
        rr.licence_key = (char *)key;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY;
    m.request_relay = &rr;
    uint8_t payload[512];
    size_t n = hbb__rendezvous_message__pack(&m, payload);
    size_t hl = rdv_frame_header(n, out);
    memcpy(out + hl, payload, n);
    return hl + n;
}

/* Like rdvt_tcp, with SO_REUSEADDR: thousands of client sockets here take
 * ephemeral ports that listeners of later servers (ours and other suites')
 * may be given; with the flag on both sides their bind does not fail. */
static int conn(const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET }, d = { .sin_family = AF_INET };
    inet_pton(AF_INET, src, &a.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
    d.sin_port = htons((uint16_t)relay_port);
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && connect(fd, (struct sockaddr *)&d, sizeof d) == 0,
              "connect from %s: %s", src, strerror(errno));
    return fd;
}

static void request(int fd, const char *uuid, const char *key)
{
    uint8_t f[600];
    cr_assert_eq(rdvt_tcp_send_raw(fd, f, rr_frame(f, uuid, key)), 0);
}

static void wait_stat(const char *name, uint64_t want, int ms)
{
    long end = now_ms() + (long)ms * slowf();
    uint64_t v = 0;
    while ((v = rdvt_stat(&srv, name)) < want && now_ms() < end)
        usleep(10000);
    cr_assert_geq(v, want, "%s = %llu, want >= %llu", name, (unsigned long long)v, (unsigned long long)want);
}

/* A (early, from src_a) waits, then B (late) completes the pair. */
static void pair(const char *src_a, const char *src_b, const char *uuid, int *a, int *b)
{
    uint64_t before = rdvt_stat(&srv, "relay.paired");
    *a = conn(src_a);
    request(*a, uuid, NULL);
    wait_stat("relay.waiting", 1, 3000);
    *b = conn(src_b);
    request(*b, uuid, NULL);
    wait_stat("relay.paired", before + 1, 3000);
}

static bool no_bytes_then_closed(int fd, int ms)
{
    char c;
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, ms * slowf()) != 1)
        return false;
    return recv(fd, &c, 1, 0) <= 0;
}

static void echo_check(int a, int b)
{
    char got[16];
    cr_assert_eq(rdvt_tcp_send_raw(a, "ping", 4), 0);
    struct pollfd p = { .fd = b, .events = POLLIN };
    cr_assert_eq(poll(&p, 1, 3000 * slowf()), 1, "relayed bytes did not arrive");
    cr_assert_eq(recv(b, got, sizeof got, 0), 4);
    cr_assert_arr_eq(got, "ping", 4);
}

/* Liveness: a fresh pair relays both ways. */
static void check_alive(void)
{
    static int k;
    char uuid[32];
    snprintf(uuid, sizeof uuid, "alive-%d", ++k);
    int a, b;
    pair("127.0.9.1", "127.0.9.2", uuid, &a, &b);
    echo_check(a, b);
    echo_check(b, a);
    close(a), close(b);
}

static int open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    int n = 0;
    while (d && readdir(d))
        n++;
    if (d)
        closedir(d);
    return n;
}

/* ------------------------------------------------------------------ streams
 * Each stream sends `total` bytes from out to in, in random chunk sizes,
 * hashing what it sends and what arrives (SHA-256, libsodium). */
#define BLOCK (1u << 20)
static uint8_t block[BLOCK];

typedef struct stream {
    int out, in;
    size_t sent, got, total, start;
    uint64_t rnd;
    crypto_hash_sha256_state hs, hr;
} stream;

static void stream_init(stream *s, int out, int in, size_t total, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->out = out, s->in = in, s->total = total;
    s->rnd = seed * 0x9E3779B97F4A7C15ull + 1;
    s->start = (size_t)(seed * 7919) % BLOCK;
    crypto_hash_sha256_init(&s->hs);
    crypto_hash_sha256_init(&s->hr);
    fcntl(out, F_SETFL, fcntl(out, F_GETFL) | O_NONBLOCK);
    fcntl(in, F_SETFL, fcntl(in, F_GETFL) | O_NONBLOCK);
}

static void run_streams(stream *s, size_t n, int timeout_ms)
{
    struct pollfd *p = calloc(2 * n, sizeof *p);
    static uint8_t buf[262144];
    if (!block[1])
        for (size_t i = 0; i < BLOCK; i++)
            block[i] = (uint8_t)((i * 2654435761u) >> 13);
    long end = now_ms() + (long)timeout_ms * slowf();
    for (;;) {
        size_t np = 0, left = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i].sent < s[i].total)
                p[np++] = (struct pollfd){ .fd = s[i].out, .events = POLLOUT };
            else
                p[np++] = (struct pollfd){ .fd = -1 };
            p[np++] = (struct pollfd){ .fd = s[i].got < s[i].total ? s[i].in : -1, .events = POLLIN };
            left += s[i].got < s[i].total;
        }
        if (!left)
            break;
        cr_assert_lt(now_ms(), end, "transfer timed out");
        if (poll(p, np, 200) <= 0)
            continue;
        for (size_t i = 0; i < n; i++) {
            stream *t = &s[i];
            if (p[2 * i].revents & (POLLOUT | POLLERR)) {
                t->rnd ^= t->rnd << 13, t->rnd ^= t->rnd >> 7, t->rnd ^= t->rnd << 17;
                size_t pos = (t->start + t->sent) % BLOCK, len = 1 + t->rnd % 262144;
                if (len > BLOCK - pos)
                    len = BLOCK - pos;
                if (len > t->total - t->sent)
                    len = t->total - t->sent;
                ssize_t k = send(t->out, block + pos, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                cr_assert(k > 0 || errno == EAGAIN, "send: %s", strerror(errno));
                if (k > 0) {
                    crypto_hash_sha256_update(&t->hs, block + pos, (size_t)k);
                    t->sent += (size_t)k;
                }
            }
            if (p[2 * i + 1].revents & (POLLIN | POLLERR | POLLHUP)) {
                ssize_t k = recv(t->in, buf, sizeof buf, MSG_DONTWAIT);
                cr_assert(k != 0, "stream %zu: EOF after %zu of %zu bytes", i, t->got, t->total);
                cr_assert(k > 0 || errno == EAGAIN, "recv: %s", strerror(errno));
                if (k > 0) {
                    cr_assert_leq(t->got + (size_t)k, t->total, "stream %zu: more bytes than sent", i);
                    crypto_hash_sha256_update(&t->hr, buf, (size_t)k);
                    t->got += (size_t)k;
                }
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t a[32], b[32];
        crypto_hash_sha256_final(&s[i].hs, a);
        crypto_hash_sha256_final(&s[i].hr, b);
        cr_assert_arr_eq(a, b, 32, "stream %zu: SHA-256 differs", i);
    }
    free(p);
}

/* ------------------------------------------------------------------ tests */
Test(relay, profile_loads_only_the_relay)
{
    start_with(NULL, NULL);
    char *m = rdvt_admin(&srv, "modules");
    cr_assert_not_null(m);
    cr_assert(strncmp(m, "relay ", 6) == 0 && !strchr(m, '\n')[1], "modules: %s", m);
    free(m);
    cr_assert_eq(rdvt_stat(&srv, "relay.pairs"), 0);
    check_alive();
}

Test(relay, L8_L10_L62_one_pair_64MiB_each_way_intact, .timeout = 120)
{
    start_with(fast, NULL);
    int a, b;
    pair("127.0.1.1", "127.0.1.2", "0f8fad5b-d9cb-469f-a165-70867728950e", &a, &b);
    char c;
    cr_assert_lt(recv(a, &c, 1, MSG_DONTWAIT), 0, "no ack (L62)");
    cr_assert_lt(recv(b, &c, 1, MSG_DONTWAIT), 0);
    stream s[2];
    stream_init(&s[0], a, b, 64u << 20, 1);
    stream_init(&s[1], b, a, 64u << 20, 2);
    run_streams(s, 2, 100000);
    cr_assert_eq(rdvt_stat(&srv, "relay.bytes_early_to_late"), 64u << 20);
    cr_assert_eq(rdvt_stat(&srv, "relay.bytes_late_to_early"), 64u << 20);
    cr_assert_eq(rdvt_stat(&srv, "relay.buffered_bytes"), 0, "spliced: no user-space copy");
    close(a), close(b);
    check_alive();
}

Test(relay, L19_thousand_concurrent_pairs_intact, .timeout = 150)
{
    start_with(fast, NULL);
    enum { N = 1000 };
    static int a[N], b[N];
    static stream s[2 * N];
    char src[32], uuid[32];
    for (int i = 0; i < N; i++) {
        snprintf(src, sizeof src, "127.1.%d.%d", i / 250, 1 + i % 250);
        snprintf(uuid, sizeof uuid, "pair-%d", i);
        a[i] = conn(src);
        request(a[i], uuid, NULL);
    }
    wait_stat("relay.waiting", N, 10000);
    for (int i = 0; i < N; i++) {
        snprintf(src, sizeof src, "127.2.%d.%d", i / 250, 1 + i % 250);
        snprintf(uuid, sizeof uuid, "pair-%d", i);
        b[i] = conn(src);
        request(b[i], uuid, NULL);
    }
    wait_stat("relay.pairs", N, 10000);
    for (int i = 0; i < N; i++) {
        stream_init(&s[2 * i], a[i], b[i], 128u << 10, (uint64_t)(2 * i + 1));
        stream_init(&s[2 * i + 1], b[i], a[i], 128u << 10, (uint64_t)(2 * i + 2));
    }
    run_streams(s, 2 * N, 120000);
    long rss = rdvt_vmrss_kib(srv.pid);
    cr_assert(!check_memory() || rss < 64 * 1024, "server VmRSS %ld KiB with %d pairs", rss, N);
    for (int i = 0; i < N; i++)
        close(a[i]), close(b[i]);
    wait_stat("relay.closed_eof", N, 10000);
    cr_assert_eq(rdvt_stat(&srv, "relay.pairs"), 0);
    check_alive();
}

Test(relay, L12_L13_bytes_with_and_after_the_first_frame_are_kept)
{
    start_with(NULL, NULL);
    uint8_t f[700];
    int a = conn("127.0.2.1");
    size_t n = rr_frame(f, "early", NULL);
    memcpy(f + n, "XXXX-first-bytes", 16);
    cr_assert_eq(rdvt_tcp_send_raw(a, f, n + 16), 0);
    wait_stat("relay.waiting", 1, 3000);
    usleep(300000);
    cr_assert_eq(rdvt_tcp_send_raw(a, "YYYY-while-waiting", 18), 0);
    usleep(300000);
    int b = conn("127.0.2.2");
    n = rr_frame(f, "early", NULL);
    memcpy(f + n, "ZZZZ", 4);
    cr_assert_eq(rdvt_tcp_send_raw(b, f, n + 4), 0);
    char got[64] = "";
    size_t have = 0;
    while (have < 34) {
        struct pollfd p = { .fd = b, .events = POLLIN };
        cr_assert_eq(poll(&p, 1, 3000 * slowf()), 1, "got only %zu bytes", have);
        ssize_t k = recv(b, got + have, sizeof got - have, 0);
        cr_assert_gt(k, 0);
        have += (size_t)k;
    }
    cr_assert_eq(have, 34);
    cr_assert_arr_eq(got, "XXXX-first-bytesYYYY-while-waiting", 34, "in order, nothing lost");
    struct pollfd p = { .fd = a, .events = POLLIN };
    cr_assert_eq(poll(&p, 1, 3000 * slowf()), 1);
    cr_assert_eq(recv(a, got, sizeof got, 0), 4, "the late side's bytes (L13)");
    cr_assert_arr_eq(got, "ZZZZ", 4);
    close(a), close(b);
    check_alive();
}

Test(relay, L45_L17_unmatched_uuid_times_out_without_bytes)
{
    const char *const sets[] = { "relay.wait_timeout_ms=1500", NULL };
    start_with(sets, NULL);
    int a = conn("127.0.3.1"), b = conn("127.0.3.2");
    request(a, "abc", NULL);
    request(b, "ABC", NULL); /* case differs: no pair */
    long t0 = now_ms();
    cr_assert(no_bytes_then_closed(a, 4000), "closed with no bytes");
    long waited = now_ms() - t0;
    cr_assert(waited >= 1200 && waited <= 3500 * slowf(), "closed after %ld ms (limit 1500)", waited);
    cr_assert(no_bytes_then_closed(b, 4000));
    cr_assert_eq(rdvt_stat(&srv, "relay.rejected_wait_timeout"), 2);
    cr_assert_eq(rdvt_stat(&srv, "relay.paired"), 0);
    close(a), close(b);
    check_alive();
}

Test(relay, L36_to_L40_wrong_first_messages_close_silently)
{
    start_with(NULL, NULL);
    const uint8_t garbage[] = { 0x28, 0xff, 0x13, 0x37, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06 }; /* 10 bytes */
    const uint8_t register_peer[] = { 0x14, 0x32, 0x03, 0x0a, 0x01, 0x31 }; /* RegisterPeer{id "1"} */
    const uint8_t empty[] = { 0x00 };
    uint8_t no_uuid[64];
    size_t nu = rr_frame(no_uuid, "", "key");
    struct { const uint8_t *p; size_t n; const char *counter; } cases[] = {
        { garbage, sizeof garbage, "relay.rejected_bad_message" },
        { register_peer, sizeof register_peer, "relay.rejected_not_relay" },
        { empty, sizeof empty, "relay.rejected_not_relay" },
        { no_uuid, nu, "relay.rejected_empty_uuid" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = conn("127.0.4.1");
        cr_assert_eq(rdvt_tcp_send_raw(fd, cases[i].p, cases[i].n), 0);
        cr_assert(no_bytes_then_closed(fd, 1000), "case %zu: closed within 1 s, no bytes", i);
        close(fd);
        cr_assert_geq(rdvt_stat(&srv, cases[i].counter), 1, "%s", cases[i].counter);
    }
    /* L40: 300 000 start-group + 300 000 end-group tags, 4-byte header. */
    size_t n = 600000;
    uint8_t *deep = malloc(n + 4);
    uint32_t h = (uint32_t)(n << 2) | 3;
    memcpy(deep, &h, 4);
    memset(deep + 4, 0x0b, n / 2);
    memset(deep + 4 + n / 2, 0x0c, n / 2);
    int fd = conn("127.0.4.2");
    rdvt_tcp_send_raw(fd, deep, n + 4);
    cr_assert(no_bytes_then_closed(fd, 2000));
    close(fd);
    free(deep);
    cr_assert(rdvt_alive(&srv));
    check_alive();
}

Test(relay, L41_L42_L43_slowloris_first_frame)
{
    const char *const sets[] = { "relay.first_timeout_ms=1500", NULL };
    start_with(sets, NULL);
    /* L41: a header announcing 2^30 - 1 bytes closes at once (core.max_frame). */
    int big = conn("127.0.5.1");
    const uint8_t hdr[4] = { 0xff, 0xff, 0xff, 0xff };
    rdvt_tcp_send_raw(big, hdr, 4);
    cr_assert(no_bytes_then_closed(big, 1000), "closed promptly");
    close(big);
    /* L42 silent, L43 half a frame, and a frame trickled too slowly: all
     * closed first_timeout_ms after accept, whatever bytes trickle in. */
    uint8_t f[128];
    size_t n = rr_frame(f, "0f8fad5b-d9cb-469f-a165-708677289slow", NULL); /* 43 bytes: 4.3 s */
    long t0 = now_ms();
    int silent = conn("127.0.5.2"), half = conn("127.0.5.3"), trickle = conn("127.0.5.4");
    rdvt_tcp_send_raw(half, f, n / 2);
    bool closed = false;
    for (size_t i = 0; i < n && !closed; i++) {
        closed = rdvt_tcp_send_raw(trickle, f + i, 1) < 0;
        usleep(100000);
        char c;
        if (recv(trickle, &c, 1, MSG_DONTWAIT) == 0)
            closed = true;
    }
    cr_assert(closed || no_bytes_then_closed(trickle, 1000), "a trickled frame cannot extend the deadline");
    long took = now_ms() - t0;
    cr_assert(took >= 1200 && took <= 3500 * slowf(), "closed after %ld ms", took);
    cr_assert(no_bytes_then_closed(silent, 1000));
    cr_assert(no_bytes_then_closed(half, 1000));
    close(silent), close(half), close(trickle);
    cr_assert_geq(rdvt_stat(&srv, "relay.rejected_first_timeout"), 3);
    /* L15: a frame trickled within the limit is fine. */
    int a = conn("127.0.5.5");
    n = rr_frame(f, "0f8fad5b-d9cb-469f-a165-70867728trickle", NULL);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(rdvt_tcp_send_raw(a, f + i, 1), 0);
        usleep(15000);
    }
    wait_stat("relay.waiting", 1, 2000);
    int b = conn("127.0.5.6");
    request(b, "0f8fad5b-d9cb-469f-a165-70867728trickle", NULL);
    echo_check(a, b);
    close(a), close(b);
    check_alive();
}

Test(relay, L50_L51_licence_key)
{
    const char *const sets[] = { "relay.key=K", NULL };
    start_with(sets, NULL);
    int a = conn("127.0.6.1"), b = conn("127.0.6.2"), c = conn("127.0.6.3"), d = conn("127.0.6.4");
    request(a, "keyed", "K");
    wait_stat("relay.waiting", 1, 3000);
    request(b, "keyed", "wrong");
    cr_assert(no_bytes_then_closed(b, 1000), "wrong key: closed at once, no bytes");
    request(d, "keyed", NULL);
    cr_assert(no_bytes_then_closed(d, 1000), "no key: closed");
    cr_assert_eq(rdvt_stat(&srv, "relay.waiting"), 1, "A keeps waiting");
    request(c, "keyed", "K");
    wait_stat("relay.paired", 1, 3000);
    echo_check(a, c);
    cr_assert_eq(rdvt_stat(&srv, "relay.rejected_bad_key"), 2);
    cr_assert(rdvt_log_contains(&srv, "Relay authentication failed from 127.0.6.2"));
    close(a), close(b), close(c), close(d);
    /* liveness with the key */
    int x = conn("127.0.9.1"), y = conn("127.0.9.2");
    request(x, "alive-k", "K");
    wait_stat("relay.waiting", 1, 3000);
    request(y, "alive-k", "K");
    wait_stat("relay.paired", 2, 3000);
    echo_check(x, y);
    close(x), close(y);
}

Test(relay, L57_L58_one_side_closing_ends_the_pair)
{
    start_with(fast, NULL);
    int a, b;
    pair("127.0.7.1", "127.0.7.2", "fin", &a, &b);
    size_t n = 1u << 20;
    uint8_t *x = malloc(n), *got = malloc(n);
    for (size_t i = 0; i < n; i++)
        x[i] = (uint8_t)(i * 31 + 7);
    fcntl(a, F_SETFL, fcntl(a, F_GETFL) | O_NONBLOCK);
    size_t off = 0, have = 0;
    long t0 = now_ms();
    for (;;) { /* write A and read B together: neither may block the other */
        if (off < n) {
            ssize_t w = send(a, x + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0 && (off += (size_t)w) == n)
                shutdown(a, SHUT_WR);
        }
        struct pollfd p = { .fd = b, .events = POLLIN };
        cr_assert_eq(poll(&p, 1, 3000 * slowf()), 1, "B got %zu, A sent %zu", have, off);
        ssize_t k = recv(b, got + have, n - have + 1, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN))
            break;
        if (k > 0)
            have += (size_t)k;
    }
    cr_assert_eq(off, n);
    cr_assert_eq(have, n, "B receives the whole MiB, then EOF");
    cr_assert_arr_eq(got, x, n);
    cr_assert_lt(now_ms() - t0, 3000 * slowf());
    cr_assert(no_bytes_then_closed(a, 1000), "A is closed too (no half-close)");
    close(a), close(b);
    /* L58: an RST ends the partner within a second. */
    pair("127.0.7.3", "127.0.7.4", "rst", &a, &b);
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(a);
    cr_assert(no_bytes_then_closed(b, 1000));
    close(b);
    free(x), free(got);
    check_alive();
}

Test(relay, L61_reader_that_stops_keeps_memory_bounded, .timeout = 90)
{
    const char *const sets[] = { "relay.single_bandwidth=100000", "relay.total_bandwidth=100000",
                                 "relay.stall_timeout_ms=4000", "relay.idle_timeout_ms=4000", NULL };
    start_with(sets, NULL);
    int a, b;
    pair("127.0.8.1", "127.0.8.2", "slow-reader", &a, &b);
    long rss0 = rdvt_vmrss_kib(srv.pid);
    fcntl(a, F_SETFL, fcntl(a, F_GETFL) | O_NONBLOCK);
    crypto_hash_sha256_state hs, hr;
    crypto_hash_sha256_init(&hs), crypto_hash_sha256_init(&hr);
    static uint8_t chunk[65536];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (uint8_t)(i ^ (i >> 8));
    size_t sent = 0;
    long end = now_ms() + 2500;
    long peak = rss0;
    while (now_ms() < end) { /* B reads nothing */
        ssize_t k = send(a, chunk, sizeof chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) {
            crypto_hash_sha256_update(&hs, chunk, (size_t)k);
            sent += (size_t)k;
        } else {
            usleep(20000);
        }
        long r = rdvt_vmrss_kib(srv.pid);
        peak = r > peak ? r : peak;
    }
    cr_assert_lt(sent, 256u << 20, "A's writes block (sent %zu)", sent);
    cr_assert(!check_memory() || peak - rss0 < 8 * 1024, "server VmRSS grew by %ld KiB", peak - rss0);
    cr_assert_eq(rdvt_stat(&srv, "relay.buffered_bytes"), 0);
    /* B resumes: every byte arrives intact. */
    static uint8_t buf[262144];
    size_t got = 0;
    while (got < sent) {
        struct pollfd p = { .fd = b, .events = POLLIN };
        cr_assert_eq(poll(&p, 1, 3000 * slowf()), 1, "got %zu of %zu", got, sent);
        ssize_t k = recv(b, buf, sizeof buf, 0);
        cr_assert_gt(k, 0);
        crypto_hash_sha256_update(&hr, buf, (size_t)k);
        got += (size_t)k;
    }
    uint8_t h1[32], h2[32];
    crypto_hash_sha256_final(&hs, h1), crypto_hash_sha256_final(&hr, h2);
    cr_assert_arr_eq(h1, h2, 32);
    /* B stops for good: A writes until every buffer on the way is full, so
     * the relay holds data it cannot write; the pair ends after the stall
     * limit [ours] counted from the last write progress. */
    long t0 = now_ms();
    while (now_ms() < t0 + 1500)
        if (send(a, chunk, sizeof chunk, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            usleep(20000);
    wait_stat("relay.closed_stall", 1, 8000);
    long took = now_ms() - t0;
    cr_assert(took >= 3500 && took <= 7500 * slowf(), "stall close %ld ms after the writes began (limit 4000)", took);
    close(a), close(b);
    check_alive();
}

Test(relay, L44_L47_connect_close_storm_leaks_nothing)
{
    start_with(NULL, NULL);
    check_alive();
    int fds0 = open_fds(srv.pid);
    for (int i = 0; i < 1000; i++) {
        int fd = conn("127.0.10.1");
        if (i % 2) { /* RST */
            struct linger lg = { .l_onoff = 1, .l_linger = 0 };
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(fd);
    }
    /* L47: a waiting side that leaves is dropped; its uuid waits anew. */
    int a = conn("127.0.10.2");
    request(a, "gone", NULL);
    wait_stat("relay.waiting", 1, 3000);
    close(a);
    wait_stat("relay.rejected_waiter_gone", 1, 3000);
    int b = conn("127.0.10.3");
    request(b, "gone", NULL);
    wait_stat("relay.waiting", 1, 3000);
    cr_assert_eq(rdvt_stat(&srv, "relay.paired"), 1, "only the liveness pair");
    close(b);
    long end = now_ms() + 3000;
    while (open_fds(srv.pid) > fds0 && now_ms() < end)
        usleep(20000);
    cr_assert_leq(open_fds(srv.pid), fds0, "descriptors leaked");
    cr_assert(rdvt_alive(&srv));
    check_alive();
}

Test(relay, L48_ten_thousand_waiting_do_not_slow_new_pairs, .timeout = 120)
{
    const char *const sets[] = { "relay.wait_timeout_ms=20000", NULL };
    start_with(sets, NULL);
    enum { N = 10000 };
    static int w[N];
    char src[32], uuid[64];
    for (int i = 0; i < N; i++) {
        snprintf(src, sizeof src, "127.3.%d.%d", i / 250, 1 + i % 250);
        snprintf(uuid, sizeof uuid, "waiting-%05d-0f8fad5b-d9cb-469f-a165", i);
        w[i] = conn(src);
        request(w[i], uuid, NULL);
    }
    wait_stat("relay.waiting", N, 20000);
    long t0 = now_ms();
    check_alive();
    cr_assert_lt(now_ms() - t0, 1000 * slowf(), "a new pair formed in %ld ms", now_ms() - t0);
    long rss = rdvt_vmrss_kib(srv.pid);
    cr_assert(!check_memory() || rss < 48 * 1024, "VmRSS %ld KiB with %d waiting", rss, N);
    for (int i = 0; i < N; i++)
        close(w[i]);
}

/* The lists are read from the working directory (L77): the server runs in
 * srv.dir, far from the binary. */
Test(relay, L72_L76_L77_blocklisted_source_is_refused)
{
    const char *const files[] = { "blocklist.txt", "127.0.11.7 banned on 2026-01-01\r\n", NULL };
    start_with(NULL, files);
    cr_assert_eq(rdvt_stat(&srv, "relay.blocklist_entries"), 1);
    int x = conn("127.0.11.7");
    cr_assert(no_bytes_then_closed(x, 1000), "refused at accept");
    close(x);
    cr_assert_eq(rdvt_stat(&srv, "relay.rejected_blocked"), 1);
    check_alive();
    free(rdvt_admin(&srv, "Br 127.0.11.7"));
    int a, b;
    pair("127.0.11.7", "127.0.11.8", "unblocked", &a, &b);
    echo_check(a, b);
    /* Blocklisting a running pair's side ends it at the next tick (§7). */
    free(rdvt_admin(&srv, "Ba 127.0.11.8"));
    cr_assert(no_bytes_then_closed(a, 3000));
    close(a), close(b);
    /* SIGHUP re-reads the file. */
    char path[400];
    snprintf(path, sizeof path, "%s/blocklist.txt", srv.dir);
    FILE *f = fopen(path, "w");
    fputs("127.0.11.9\n127.0.11.10 second\n", f);
    fclose(f);
    kill(srv.pid, SIGHUP);
    wait_stat("relay.blocklist_entries", 2, 3000);
    char *bl = rdvt_admin(&srv, "B");
    cr_assert(strcmp(bl, "127.0.11.9\n127.0.11.10\n") == 0 || strcmp(bl, "127.0.11.10\n127.0.11.9\n") == 0,
              "the file replaced the console's changes: %s", bl);
    free(bl);
    int y = conn("127.0.11.9");
    cr_assert(no_bytes_then_closed(y, 1000));
    close(y);
    check_alive();
}

/* Bytes per second A -> B over `ms`, after a warm-up. */
static double rate_mbps(int a, int b, int ms)
{
    fcntl(a, F_SETFL, fcntl(a, F_GETFL) | O_NONBLOCK);
    fcntl(b, F_SETFL, fcntl(b, F_GETFL) | O_NONBLOCK);
    static uint8_t chunk[65536], sink[262144];
    long t0 = now_ms(), warm = t0 + 700, end = warm + ms;
    size_t counted = 0;
    while (now_ms() < end) {
        send(a, chunk, sizeof chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
        struct pollfd p = { .fd = b, .events = POLLIN };
        poll(&p, 1, 5);
        ssize_t k;
        while ((k = recv(b, sink, sizeof sink, MSG_DONTWAIT)) > 0)
            if (now_ms() >= warm)
                counted += (size_t)k;
    }
    return (double)counted * 8 / 1048576.0 / (ms / 1000.0);
}

Test(relay, L66_blacklisted_source_is_throttled)
{
    const char *const sets[] = { "relay.limit_speed=2", NULL };
    const char *const files[] = { "blacklist.txt", "127.0.12.8\n", NULL };
    start_with(sets, files);
    if (srv.valgrind)
        cr_skip_test("rates are not measurable under valgrind (unit-tested on the fake clock)");
    int a, b;
    pair("127.0.12.7", "127.0.12.8", "throttled", &a, &b);
    double r = rate_mbps(a, b, 2500);
    cr_assert(r <= 2.2 * 1.25 && r >= 1.0, "blacklisted pair at %.2f Mb/s (limit 2)", r);
    close(a), close(b);
    pair("127.0.12.9", "127.0.12.10", "free", &a, &b);
    double f = rate_mbps(a, b, 1500);
    cr_assert_gt(f, 8.0, "an unlisted pair is not throttled (%.2f Mb/s)", f);
    close(a), close(b);
    cr_assert_gt(rdvt_stat(&srv, "relay.throttle_events"), 0);
    check_alive();
}

Test(relay, admin_socket_speaks_the_hbbr_commands)
{
    start_with(NULL, NULL);
    char *h = rdvt_admin(&srv, "relay-help");
    cr_assert(h && strncmp(h, "blacklist-add(ba) <ip>\n", 23) == 0);
    free(h);
    char *sb = rdvt_admin(&srv, "sb");
    cr_assert_str_eq(sb, "128Mb/s\n");
    free(sb);
    free(rdvt_admin(&srv, "sb 256"));
    sb = rdvt_admin(&srv, "single-bandwidth");
    cr_assert_str_eq(sb, "256Mb/s\n");
    free(sb);
    int a, b;
    pair("127.0.13.1", "127.0.13.2", "usage", &a, &b);
    echo_check(a, b);
    usleep(2200000);
    char *u = rdvt_admin(&srv, "u");
    cr_assert(u && strncmp(u, "127.0.13.2:", 11) == 0 && strstr(u, "s 0.00MB "), "usage: %s", u ? u : "(null)");
    free(u);
    close(a), close(b);
    check_alive();
}

Test(relay, L78_L84_L86_opt_in_loopback_console)
{
    const char *const sets[] = { "relay.console_loopback=true", NULL };
    start_with(sets, NULL);
    int c = conn("127.0.0.1");
    cr_assert_eq(rdvt_tcp_send_raw(c, "h", 1), 0);
    char buf[2048];
    size_t have = 0;
    for (;;) {
        struct pollfd p = { .fd = c, .events = POLLIN };
        cr_assert_eq(poll(&p, 1, 3000 * slowf()), 1);
        ssize_t k = recv(c, buf + have, sizeof buf - 1 - have, 0);
        if (k <= 0)
            break;
        have += (size_t)k;
    }
    buf[have] = '\0';
    int lines = 0;
    for (char *p = buf; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 12, "help: %s", buf);
    close(c);
    c = conn("127.0.0.1");
    cr_assert_eq(rdvt_tcp_send_raw(c, "xyz", 3), 0);
    cr_assert(no_bytes_then_closed(c, 1000), "unknown command: empty answer");
    close(c);
    c = conn("127.0.0.1");
    cr_assert_eq(rdvt_tcp_send_raw(c, "\xff\xfe", 2), 0);
    cr_assert(no_bytes_then_closed(c, 1000));
    close(c);
    c = conn("127.0.0.1");
    cr_assert(no_bytes_then_closed(c, 2500), "silent console closed after about 1 s (L85)");
    close(c);
    /* Every loopback client is a console session now, never a relay: a
     * RequestRelay frame is just bytes that are not a command (here not
     * even UTF-8). Relaying then needs non-loopback sources (a network
     * namespace; relay-checklist harness rules). */
    int r = conn("127.0.14.1");
    request(r, "from-loopback", NULL);
    cr_assert(no_bytes_then_closed(r, 1000));
    close(r);
    cr_assert_eq(rdvt_stat(&srv, "relay.console_sessions"), 5);
    cr_assert_eq(rdvt_stat(&srv, "relay.requests"), 0);
    cr_assert(rdvt_alive(&srv));
}

static int conn6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 d = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)relay_port),
                              .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&d, sizeof d) == 0, "IPv6 connect: %s", strerror(errno));
    return fd;
}

Test(relay, L6_L9_L11_L14_pairing_variants)
{
    start_with(NULL, NULL);
    /* L6: an IPv4 and an IPv6 client (default dual-stack listener). */
    int a = conn("127.0.15.1"), b = conn6();
    request(a, "v4-v6", NULL);
    wait_stat("relay.waiting", 1, 3000);
    request(b, "v4-v6", NULL);
    wait_stat("relay.paired", 1, 3000);
    echo_check(a, b);
    echo_check(b, a);
    /* L11: bytes that are not frames pass unchanged. */
    const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x00 };
    cr_assert_eq(rdvt_tcp_send_raw(a, junk, sizeof junk), 0);
    uint8_t got[8];
    struct pollfd p = { .fd = b, .events = POLLIN };
    cr_assert_eq(poll(&p, 1, 3000 * slowf()), 1);
    cr_assert_eq(recv(b, got, sizeof got, 0), (ssize_t)sizeof junk);
    cr_assert_arr_eq(got, junk, sizeof junk);
    close(a), close(b);
    /* L9: both requests within a millisecond; either may be the early side. */
    a = conn("127.0.15.2"), b = conn("127.0.15.3");
    uint8_t fa[128], fb[128];
    size_t na = rr_frame(fa, "simultaneous", NULL), nb = rr_frame(fb, "simultaneous", NULL);
    send(a, fa, na, 0);
    send(b, fb, nb, 0);
    wait_stat("relay.paired", 2, 3000);
    echo_check(a, b);
    close(a), close(b);
    /* L14: a 4-byte header for a 41-byte payload (the spec's vector). */
    static const char U[] = "0f8fad5b-d9cb-469f-a165-70867728950e";
    uint8_t f4[64] = { (uint8_t)(41 << 2 | 3), 0, 0, 0, 0x92, 0x01, 0x26, 0x12, 0x24 };
    memcpy(f4 + 9, U, 36);
    a = conn("127.0.15.4"), b = conn("127.0.15.5");
    cr_assert_eq(rdvt_tcp_send_raw(a, f4, 45), 0);
    wait_stat("relay.waiting", 1, 3000);
    request(b, U, NULL);
    wait_stat("relay.paired", 3, 3000);
    echo_check(b, a);
    close(a), close(b);
    check_alive();
}

Test(relay, L5_bind_restricts_the_listener)
{
    const char *const sets[] = { "relay.bind=127.0.0.1", NULL };
    start_with(sets, NULL);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in d = { .sin_family = AF_INET, .sin_port = htons((uint16_t)relay_port) };
    inet_pton(AF_INET, "127.0.0.2", &d.sin_addr);
    cr_assert_neq(connect(fd, (struct sockaddr *)&d, sizeof d), 0, "127.0.0.2 is not bound");
    close(fd);
    check_alive(); /* to 127.0.0.1 */
}

Test(relay, L59_idle_pair_ends)
{
    const char *const sets[] = { "relay.idle_timeout_ms=1500", NULL };
    start_with(sets, NULL);
    int a, b;
    pair("127.0.16.1", "127.0.16.2", "idle", &a, &b);
    long t0 = now_ms();
    cr_assert(no_bytes_then_closed(a, 4000));
    long took = now_ms() - t0;
    cr_assert(took >= 1300 && took <= 3500 * slowf(), "idle close after %ld ms (limit 1500, 1 s ticks)", took);
    cr_assert(no_bytes_then_closed(b, 1000));
    cr_assert_eq(rdvt_stat(&srv, "relay.closed_idle"), 1);
    close(a), close(b);
    check_alive();
}

Test(relay, L53_L54_dash_key_creates_and_uses_the_key_pair)
{
    const char *const sets[] = { "relay.key=-", NULL };
    start_with(sets, NULL);
    char path[400], pub[64] = "";
    snprintf(path, sizeof path, "%s/id_ed25519.pub", srv.dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "id_ed25519.pub created in the working directory");
    cr_assert_not_null(fgets(pub, sizeof pub, f));
    fclose(f);
    cr_assert_eq(strlen(pub), 44);
    int a = conn("127.0.17.1"), b = conn("127.0.17.2"), c = conn("127.0.17.3");
    request(a, "dash", pub);
    wait_stat("relay.waiting", 1, 3000);
    request(c, "dash", "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw=");
    cr_assert(no_bytes_then_closed(c, 1000), "the public RustDesk key is not this key");
    request(b, "dash", pub);
    wait_stat("relay.paired", 1, 3000);
    echo_check(a, b);
    close(a), close(b), close(c);
    /* L53: a restart loads the same file. */
    cr_assert_eq(rdvt_stop(&srv), 0);
    cr_assert_eq(launch(true), 0);
    a = conn("127.0.17.4"), b = conn("127.0.17.5");
    request(a, "dash2", pub);
    wait_stat("relay.waiting", 1, 3000);
    request(b, "dash2", pub);
    wait_stat("relay.paired", 1, 3000);
    echo_check(a, b);
    close(a), close(b);
}

Test(relay, L56_malformed_key_file_exits_1)
{
    const char *const sets[] = { "relay.key=_", NULL };
    const char *const files[] = { "id_ed25519", "bm90IGEga2V5IGF0IGFsbA==", NULL };
    prepare(sets, files);
    cr_assert_eq(launch(false), 0);
    cr_assert_eq(rdvt_wait_exit(&srv, 5000), 1);
    cr_assert(rdvt_log_contains(&srv, "malformed private key in id_ed25519"));
}

Test(relay, L7_L88_stop_with_pairs_and_restart)
{
    start_with(NULL, NULL);
    free(rdvt_admin(&srv, "sb 256"));
    int a, b;
    pair("127.0.18.1", "127.0.18.2", "stopping", &a, &b);
    int w = conn("127.0.18.3");
    request(w, "waiting-at-stop", NULL);
    wait_stat("relay.waiting", 1, 3000);
    long t0 = now_ms();
    kill(srv.pid, SIGTERM);
    cr_assert_eq(rdvt_wait_exit(&srv, 2000), 0, "exit status 0 within 2 s");
    cr_assert_lt(now_ms() - t0, 2000 * slowf());
    cr_assert(no_bytes_then_closed(a, 1000) && no_bytes_then_closed(b, 1000) && no_bytes_then_closed(w, 1000));
    close(a), close(b), close(w);
    /* L88: console changes are gone after a restart. */
    cr_assert_eq(launch(true), 0);
    char *sb = rdvt_admin(&srv, "sb");
    cr_assert_str_eq(sb, "128Mb/s\n");
    free(sb);
    check_alive();
}

Test(relay, L79_console_from_ipv6_loopback)
{
    const char *const sets[] = { "relay.console_loopback=true", NULL };
    start_with(sets, NULL);
    int c = conn6();
    cr_assert_eq(rdvt_tcp_send_raw(c, "sb", 2), 0);
    char buf[64] = "";
    struct pollfd p = { .fd = c, .events = POLLIN };
    cr_assert_eq(poll(&p, 1, 3000 * slowf()), 1);
    cr_assert_eq(recv(c, buf, sizeof buf - 1, 0), 8);
    cr_assert_str_eq(buf, "128Mb/s\n");
    close(c);
}

/* Bytes a client sends with or after its RequestRelay are not read into
 * user space before pairing (the relay listener reads its first frame
 * exactly): junk-laden waiting sides hold nothing of ours, so they cannot
 * use up relay.early_total and get a real side refused (an audit found
 * ~1,300 connections of 64 KiB each did), and the bytes of a real side
 * still arrive in order once it is paired (L12, L13). */
Test(relay, bytes_sent_before_pairing_stay_in_the_kernel)
{
    const char *const sets[] = { "relay.early_total=65536", NULL };
    start_with(sets, NULL);
    static uint8_t f[40000 + 128];
    int w[8];
    for (int i = 0; i < 8; i++) {
        char uuid[32], src[32];
        snprintf(uuid, sizeof uuid, "heavy-%d", i);
        snprintf(src, sizeof src, "127.0.19.%d", i + 1);
        size_t n = rr_frame(f, uuid, NULL);
        memset(f + n, 'e', 40000);
        w[i] = conn(src);
        cr_assert_eq(rdvt_tcp_send_raw(w[i], f, n + 40000), 0);
    }
    wait_stat("relay.waiting", 8, 3000);
    cr_assert_eq(rdvt_stat(&srv, "relay.buffered_bytes"), 0, "320 KB sent, nothing held by rdvd");
    cr_assert_eq(rdvt_stat(&srv, "relay.rejected_early_full"), 0);
    /* a real side: RequestRelay and its first bytes in one write */
    uint8_t g[256];
    size_t n = rr_frame(g, "real-1", NULL);
    memcpy(g + n, "\x05hello", 6);
    int a = conn("127.0.19.100");
    cr_assert_eq(rdvt_tcp_send_raw(a, g, n + 6), 0);
    wait_stat("relay.waiting", 9, 3000);
    int b = conn("127.0.19.101");
    request(b, "real-1", NULL);
    char got[8];
    size_t have = 0;
    while (have < 6) {
        struct pollfd pf = { .fd = b, .events = POLLIN };
        cr_assert_eq(poll(&pf, 1, 3000 * slowf()), 1, "the early side's bytes did not arrive");
        ssize_t k = recv(b, got + have, sizeof got - have, 0);
        cr_assert_gt(k, 0);
        have += (size_t)k;
    }
    cr_assert_arr_eq(got, "\x05hello", 6);
    echo_check(b, a);
    /* a heavy side paired late still delivers its 40,000 bytes whole */
    int c = conn("127.0.19.102");
    request(c, "heavy-3", NULL);
    size_t total = 0;
    static uint8_t sink[65536];
    while (total < 40000) {
        struct pollfd pf = { .fd = c, .events = POLLIN };
        cr_assert_eq(poll(&pf, 1, 3000 * slowf()), 1, "%zu of 40000 bytes arrived", total);
        ssize_t k = recv(c, sink, sizeof sink, 0);
        cr_assert_gt(k, 0);
        for (ssize_t i = 0; i < k; i++)
            cr_assert_eq(sink[i], 'e');
        total += (size_t)k;
    }
    cr_assert_eq(total, 40000);
    for (int i = 0; i < 8; i++)
        close(w[i]);
    close(a), close(b), close(c);
    check_alive();
}

/* L8 with TCP urgent data: splice() stops at an urgent mark with EAGAIN
 * while the socket stays readable, which spun the loop at 100 % CPU and
 * stranded the bytes after the mark. As upstream (read() drops the urgent
 * byte), the rest of the stream is relayed and the loop stays idle. */
Test(relay, L8_urgent_data_neither_spins_nor_stalls_the_pair)
{
    start_with(fast, NULL);
    int a, b;
    pair("127.0.21.1", "127.0.21.2", "urgent-1", &a, &b);
    cr_assert_eq(rdvt_tcp_send_raw(a, "hello", 5), 0);
    usleep(50000);
    cr_assert_eq(send(a, "X", 1, MSG_OOB), 1);
    usleep(50000);
    cr_assert_eq(rdvt_tcp_send_raw(a, "world", 5), 0);
    char got[32];
    size_t have = 0;
    while (have < 10) {
        struct pollfd pf = { .fd = b, .events = POLLIN };
        cr_assert_eq(poll(&pf, 1, 2000 * slowf()), 1, "only %zu bytes arrived: '%.*s'", have, (int)have, got);
        ssize_t n = recv(b, got + have, sizeof got - have, 0);
        cr_assert_gt(n, 0);
        have += (size_t)n;
    }
    cr_assert_eq(have, 10);
    cr_assert_arr_eq(got, "helloworld", 10, "the urgent byte is dropped, the rest kept in order");
    long t0 = rdvt_cpu_ticks(srv.pid);
    cr_assert_geq(t0, 0);
    usleep(2000000);
    long used = rdvt_cpu_ticks(srv.pid) - t0;
    long hz = sysconf(_SC_CLK_TCK);
    cr_assert_lt(used, hz / 4, "the idle server used %ld ticks (%ld/s) in 2 s", used, hz);
    cr_assert_geq(rdvt_stat(&srv, "relay.urgent_marks"), 1);
    echo_check(a, b);
    echo_check(b, a);
    close(a), close(b);
}

/* ------------------------------------------------------------------ WebSocket sides
 * With websocket-transport loaded, WebSocket clients of relay port + 2 are
 * relay sides too (relay.md §4.3, §9): a minimal RFC 6455 client. */
static const char *const with_ws[] = {
    "core.modules=relay,websocket-transport", "websocket-transport.rendezvous_port=0",
    "relay.single_bandwidth=100000", "relay.total_bandwidth=100000", NULL,
};
static char ws_port_set[64];

/* extra: more "-o" settings (NULL-terminated), or NULL. */
static void start_with_ws_and(const char *const *extra)
{
    prepare(with_ws, NULL);
    snprintf(ws_port_set, sizeof ws_port_set, "websocket-transport.relay_port=%d", relay_port + 2);
    int n = 0;
    while (args[n])
        n++;
    args[n++] = "-o", args[n++] = ws_port_set;
    for (size_t i = 0; extra && extra[i] && n < 62; i++)
        args[n++] = "-o", args[n++] = extra[i];
    args[n] = NULL;
    cr_assert_eq(launch(true), 0, "rdvd did not start");
}

static void start_with_ws(void) { start_with_ws_and(NULL); }

/* rcvbuf: SO_RCVBUF before connecting (a small window), 0 = default. */
static int ws_conn_rcvbuf(const char *src, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = { .sin_family = AF_INET }, d = { .sin_family = AF_INET };
    inet_pton(AF_INET, src, &a.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
    d.sin_port = htons((uint16_t)(relay_port + 2));
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && connect(fd, (struct sockaddr *)&d, sizeof d) == 0);
    const char req[] = "GET /ws/relay HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    cr_assert_eq(rdvt_tcp_send_raw(fd, req, sizeof req - 1), 0);
    char resp[1024] = "";
    size_t have = 0;
    while (!strstr(resp, "\r\n\r\n")) { /* the head only: nothing follows it unasked */
        struct pollfd p = { .fd = fd, .events = POLLIN };
        cr_assert_eq(poll(&p, 1, 3000 * slowf()), 1);
        ssize_t k = recv(fd, resp + have, 1, 0);
        cr_assert_eq(k, 1);
        cr_assert_lt(++have, sizeof resp - 1);
        resp[have] = '\0';
    }
    cr_assert(strncmp(resp, "HTTP/1.1 101", 12) == 0, "upgrade: %s", resp);
    cr_assert(strstr(resp, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != NULL, "RFC 6455 accept key");
    return fd;
}

static int ws_conn(const char *src) { return ws_conn_rcvbuf(src, 0); }

/* One masked binary frame (client to server). */
static void ws_send(int fd, const void *p, size_t n) { rdc_ws_send_frame(fd, true, 2, true, p, n); }

static void read_n(int fd, uint8_t *p, size_t n)
{
    for (size_t have = 0; have < n;) {
        struct pollfd q = { .fd = fd, .events = POLLIN };
        cr_assert_eq(poll(&q, 1, 3000 * slowf()), 1, "got %zu of %zu", have, n);
        ssize_t k = recv(fd, p + have, n - have, 0);
        cr_assert_gt(k, 0, "closed after %zu of %zu", have, n);
        have += (size_t)k;
    }
}

/* One unmasked server frame: returns the opcode, payload in *out. */
static int ws_recv(int fd, uint8_t **out, size_t *n)
{
    uint8_t h[2];
    read_n(fd, h, 2);
    cr_assert_eq(h[1] & 0x80, 0, "server frames are not masked");
    uint64_t len = h[1] & 0x7f;
    if (len == 126 || len == 127) {
        uint8_t e[8];
        size_t k = len == 126 ? 2 : 8;
        read_n(fd, e, k);
        len = 0;
        for (size_t i = 0; i < k; i++)
            len = len << 8 | e[i];
    }
    *out = malloc(len ? len : 1);
    if (len)
        read_n(fd, *out, len);
    *n = len;
    return h[0] & 0x0f;
}

static size_t rr_payload(uint8_t *out, const char *uuid)
{
    uint8_t f[600];
    size_t n = rr_frame(f, uuid, NULL), hl = (f[0] & 3) + 1;
    memcpy(out, f + hl, n - hl);
    return n - hl;
}

/* relay.message_queue over half of core.write_queue_max (a check against
 * the core's settings: relay_check, ABI 1.2) refuses the reload before any
 * module takes its new settings, naming the line that set it; the
 * websocket-transport change in the same reload does not apply. It used to
 * be refused in reconfigure, after websocket-transport had taken its new
 * settings, and the reload answered "reloaded". */
Test(relay, refused_reload_changes_no_module)
{
    start_with_ws();
    char path[400];
    snprintf(path, sizeof path, "%s/conf.d/40-relay.conf", srv.dir);
    char *text = read_text(path);
    char *at = strstr(text, "message_queue = 1048576;");
    cr_assert_not_null(at, "the profile sets message_queue = 1048576");
    memcpy(at, "message_queue = 3000000;", strlen("message_queue = 3000000;"));
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    snprintf(path, sizeof path, "%s/conf.d/60-ws.conf", srv.dir);
    f = fopen(path, "w");
    fputs("websocket-transport: { trusted_proxies = [ \"10.9.9.9\" ]; };\n", f);
    fclose(f);
    char *out = rdvt_admin(&srv, "reload");
    cr_assert(strstr(out, "refused"), "reload answered: %s", out);
    free(out);
    cr_assert(rdvt_log_contains(&srv, "reload refused, old configuration kept: "));
    cr_assert(rdvt_log_contains(&srv, "40-relay.conf:83: relay.message_queue = 3000000 is not below "
                                      "core.write_queue_max"), "the refusal names the line that set it");
    out = rdvt_admin(&srv, "websocket");
    cr_assert(strstr(out, "trusted proxies: none") && !strstr(out, "10.9.9.9"),
              "websocket-transport kept the refused reload's settings: %s", out);
    free(out);
    check_alive();
}

Test(relay, L20_L21_websocket_pair_through_websocket_transport)
{
    start_with_ws();
    uint8_t rr[128], *got;
    size_t n = rr_payload(rr, "ws-ws"), len;
    int a = ws_conn("127.0.20.1"), b = ws_conn("127.0.20.2");
    ws_send(a, rr, n);
    wait_stat("relay.waiting", 1, 3000);
    ws_send(b, rr, n);
    wait_stat("relay.pairs_message", 1, 3000);
    static uint8_t x[70000];
    for (size_t i = 0; i < sizeof x; i++)
        x[i] = (uint8_t)(i * 7);
    const size_t sizes[] = { 1, 63, 64, 1000, 70000 };
    for (size_t i = 0; i < 5; i++) {
        ws_send(a, x, sizes[i]);
        cr_assert_eq(ws_recv(b, &got, &len), 2, "a binary message");
        cr_assert_eq(len, sizes[i], "same boundaries");
        cr_assert_arr_eq(got, x, len);
        free(got);
    }
    close(a);
    cr_assert(no_bytes_then_closed(b, 3000) || rdvt_stat(&srv, "relay.pairs") == 0);
    close(b);
    wait_stat("relay.closed_eof", 1, 3000);
    check_alive();
}

Test(relay, L22_L23_websocket_to_tcp_mixed_pair)
{
    start_with_ws();
    uint8_t rr[128], *got;
    size_t n = rr_payload(rr, "ws-tcp"), len;
    int w = ws_conn("127.0.21.1");
    ws_send(w, rr, n);
    wait_stat("relay.waiting", 1, 3000);
    int t = conn("127.0.21.2");
    request(t, "ws-tcp", NULL);
    wait_stat("relay.pairs_message", 1, 3000);
    static uint8_t x[16384];
    for (size_t i = 0; i < sizeof x; i++)
        x[i] = (uint8_t)(i * 13);
    const struct { size_t n; uint8_t h[3]; size_t hl; } want[] = {
        { 63, { 0xfc }, 1 }, { 64, { 0x01, 0x01 }, 2 }, { 16383, { 0xfd, 0xff }, 2 }, { 16384, { 0x02, 0x00, 0x01 }, 3 },
    };
    for (size_t i = 0; i < 4; i++) {
        ws_send(w, x, want[i].n);
        uint8_t hdr[3], body[16384];
        read_n(t, hdr, want[i].hl);
        cr_assert_arr_eq(hdr, want[i].h, want[i].hl, "BytesCodec header for %zu bytes (L22)", want[i].n);
        read_n(t, body, want[i].n);
        cr_assert_arr_eq(body, x, want[i].n);
    }
    /* TCP frames become binary messages (L23), 2 MiB included. */
    size_t big = 2u << 20;
    uint8_t *y = malloc(big), hdr[4];
    for (size_t i = 0; i < big; i++)
        y[i] = (uint8_t)(i ^ (i >> 9));
    size_t hl = rdv_frame_header(big, hdr);
    fcntl(t, F_SETFL, fcntl(t, F_GETFL) | O_NONBLOCK);
    uint8_t *frame = malloc(big + hl);
    memcpy(frame, hdr, hl);
    memcpy(frame + hl, y, big);
    size_t off = 0;
    long end = now_ms() + 10000;
    while (off < big + hl) { /* the reader below is the same thread: write what fits */
        ssize_t k = send(t, frame + off, big + hl - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0)
            off += (size_t)k;
        else
            break;
        cr_assert_lt(now_ms(), end);
    }
    /* Finish writing while reading the WebSocket side. */
    fcntl(w, F_SETFL, fcntl(w, F_GETFL) & ~O_NONBLOCK);
    while (off < big + hl) {
        struct pollfd p = { .fd = t, .events = POLLOUT };
        poll(&p, 1, 100);
        ssize_t k = send(t, frame + off, big + hl - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0)
            off += (size_t)k;
        cr_assert_lt(now_ms(), end, "the 2 MiB frame did not go out");
    }
    cr_assert_eq(ws_recv(w, &got, &len), 2);
    cr_assert_eq(len, big);
    cr_assert_arr_eq(got, y, big);
    free(got), free(y), free(frame);
    close(w), close(t);
    check_alive();
}

/* relay.md §4.6, L61 with a WebSocket viewer on a slow link: a 12 MiB
 * message waits in the core's write queue (what the kernel's send buffer,
 * at most 4 MiB here, does not take) and drains at ~1 MB/s. The
 * core reports a drain only once that queue is empty, so "progress" must
 * come from the queue going down, or the pair would be ended as stalled
 * (stall_timeout_ms = 3 s here: the kernel takes bytes from the queue in
 * bursts, when a third of its send buffer is free) although every second
 * moves bytes. A reader that then stops altogether still ends the pair as
 * stalled. */
Test(relay, L61_slow_websocket_reader_making_progress_is_not_stalled, .timeout = 90)
{
    static const char *const extra[] = { "relay.stall_timeout_ms=3000", NULL };
    start_with_ws_and(extra);
    uint8_t rr[128];
    size_t n = rr_payload(rr, "slow-ws");
    int w = ws_conn_rcvbuf("127.0.22.1", 65536);
    ws_send(w, rr, n);
    wait_stat("relay.waiting", 1, 3000);
    int t = conn("127.0.22.2");
    request(t, "slow-ws", NULL);
    wait_stat("relay.pairs_message", 1, 3000);
    size_t big = 12u << 20, hl;
    uint8_t hdr[4];
    hl = rdv_frame_header(big, hdr);
    uint8_t *frame = malloc(hl + big);
    memcpy(frame, hdr, hl);
    for (size_t i = 0; i < big; i++)
        frame[hl + i] = (uint8_t)(i * 7 + (i >> 13));
    fcntl(t, F_SETFL, fcntl(t, F_GETFL) | O_NONBLOCK);
    fcntl(w, F_SETFL, fcntl(w, F_GETFL) | O_NONBLOCK);
    /* Send it all while reading the WebSocket side, 50 KiB per 50 ms. */
    size_t off = 0, want = 10 + big, got = 0;
    uint8_t *in = malloc(want);
    long end = now_ms() + 40000L * slowf();
    while (got < want) {
        if (off < hl + big) {
            ssize_t k = send(t, frame + off, hl + big - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k > 0)
                off += (size_t)k;
        }
        usleep(50000);
        size_t chunk = want - got < 51200 ? want - got : 51200;
        ssize_t k = recv(w, in + got, chunk, MSG_DONTWAIT);
        cr_assert(k != 0, "the relay closed the slow reader after %zu of %zu bytes (closed_stall %llu)", got, want,
                  (unsigned long long)rdvt_stat(&srv, "relay.closed_stall"));
        if (k > 0)
            got += (size_t)k;
        cr_assert_lt(now_ms(), end, "only %zu of %zu bytes in time", got, want);
    }
    cr_assert_eq(in[0], 0x82, "one binary frame");
    cr_assert_eq(in[1], 127);
    cr_assert_arr_eq(in + 10, frame + hl, big, "the message arrived intact");
    cr_assert_eq(rdvt_stat(&srv, "relay.closed_stall"), 0);
    cr_assert_eq(rdvt_stat(&srv, "relay.pairs"), 1);
    /* Now the viewer stops reading: stalled within a few seconds. */
    off = 0;
    end = now_ms() + 15000L * slowf();
    while (rdvt_stat(&srv, "relay.closed_stall") == 0) {
        if (off < hl + big) {
            ssize_t k = send(t, frame + off, hl + big - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k > 0)
                off += (size_t)k;
        }
        usleep(50000);
        cr_assert_lt(now_ms(), end, "a reader that stopped was not ended");
    }
    cr_assert_eq(rdvt_stat(&srv, "relay.closed_stall"), 1);
    cr_assert_eq(rdvt_stat(&srv, "relay.message_bytes"), 0, "its share is given back");
    free(in), free(frame);
    close(w), close(t);
    check_alive();
}
