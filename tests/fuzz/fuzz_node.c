/* libFuzzer: the whole node as conf.d ships it (all ten modules, the default
 * ports) driven through real sockets the way clients on the network reach
 * it — UDP datagrams to the rendezvous port, TCP connections to the
 * rendezvous, NAT-test, relay and both WebSocket ports. Where fuzz_dispatch
 * calls the dispatcher directly, this one goes through the listeners, the
 * connection read path, the secure-TCP record layer, the WebSocket transport
 * and the modules' stream handlers, close hooks and pairing.
 *
 * The process moves into a network namespace of its own first (loopback
 * only): modules send datagrams to addresses taken from messages
 * (PunchHoleSent carries one), and none of them may leave the machine. That
 * needs root (CAP_SYS_ADMIN), as CI has.
 *
 * Input: a sequence of operations, each  op:u8 arg:u8 len:u16le data[len]
 * (len is cut to what is left). After every operation the loop runs without
 * blocking and every client socket is drained. RDV_FUZZ_LOG=debug (or info,
 * ...) and RDV_FUZZ_STATS=1 show what the node made of an input. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rdv/proto.h"
#include "rdv/wire.h"
#include "server.h"

enum { OP_UDP, OP_OPEN, OP_SEND, OP_WS, OP_UPGRADE, OP_KEYX, OP_FIN, OP_CLOSE, OP_COUNT };
#define SLOTS 4
#define SOURCES 8        /* 0..6 IPv4 127.x.y.(1+k), 7 = ::1 */
#define MAX_OPS 256      /* per input: keeps an input under a few ms */
#define RX_KEEP 4096     /* bytes of server output kept per slot (the offer) */
#define FRAME_MAX 65535  /* a length field of 16 bits cannot say more */

/* The shipped ports (conf.d): rendezvous, NAT test, relay, WebSocket
 * rendezvous and relay. The namespace is ours, so they are free. */
static const int ports[] = { 21116, 21115, 21117, 21118, 21119 };

/* A fixed key pair, so seeds can carry the licence key: the secret key is
 * the Ed25519 key of seed 00 01 .. 1f; its public half is the licence. */
#define SERVER_SK "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA=="
#define LICENCE "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="

typedef struct slot {
    int fd;
    bool keyed;
    uint8_t key[32];
    uint64_t tx;
    uint8_t rx[RX_KEEP];
    size_t rxlen;
} slot;

static rdv_server srv;
static slot slots[SLOTS];
static int udp_fd[SOURCES];
static uint32_t round_no;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_node: %s: %s\n", what, strerror(errno));
    abort();
}

/* A network namespace with only loopback, up. */
static void isolate(void)
{
    if (unshare(CLONE_NEWNET) != 0) {
        fprintf(stderr, "fuzz_node: unshare(CLONE_NEWNET): %s — run it as root: the node must not send "
                        "datagrams to addresses found in fuzzed messages outside a namespace of its own\n",
                strerror(errno));
        abort();
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = { 0 };
    strcpy(ifr.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
        die("SIOCGIFFLAGS lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
        die("SIOCSIFFLAGS lo up");
    close(s);
}

static void boot(void)
{
    isolate();
    char dir[] = "/tmp/rdv-fuzz-node-XXXXXX";
    if (!mkdtemp(dir) || chdir(dir) != 0)
        die("temporary directory");
    /* RDV_FUZZ_LOG=debug shows what the node did with an input (reproducing). */
    const char *level = getenv("RDV_FUZZ_LOG") ? getenv("RDV_FUZZ_LOG") : "error";
    char conf[2048];
    snprintf(conf, sizeof conf,
        "core: { modules = [ \"keys\", \"storage-sqlite\", \"ip-blocker\", \"registry\", \"nat-test\",\n"
        "  \"punch-coordinator\", \"secure-tcp\", \"api-proxy\", \"websocket-transport\", \"relay\" ];\n"
        "  listeners = ( { name = \"main\"; port = 21116; udp = true; tcp = true; },\n"
        "                { name = \"nat\"; port = 21115; tcp = true; } );\n"
        "  admin_socket = \"\"; log_level = \"%s\"; };\n"
        "keys: { key = \"" SERVER_SK "\"; };\n"
        "relay: { key = \"" LICENCE "\"; };\n"
        "punch-coordinator: { relay_servers = [ \"127.0.0.1\" ]; local_ip = \"127.0.0.1\"; };\n", level);
    rdv_boot b = { .conf_text = conf, .conf_text_name = "fuzz_node" };
    if (rdv_server_init(&srv, &b) != 0) {
        fprintf(stderr, "fuzz_node: start-up failed: %s\n", srv.err);
        abort();
    }
    for (int i = 0; i < SLOTS; i++)
        slots[i].fd = -1;
    for (int i = 0; i < SOURCES; i++)
        udp_fd[i] = -1;
}

/* Source k of this input: fresh IPv4 addresses per input, so the
 * ip-blocker's per-address limits start over (within an input they apply). */
static socklen_t source(int k, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (k == SOURCES - 1) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        return sizeof *a;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(0x7f000000u | ((1 + (round_no >> 8) % 250) << 16) | ((round_no & 0xff) << 8) |
                               (uint32_t)(1 + k));
    return sizeof *a;
}

static socklen_t server_addr(int family, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons((uint16_t)port);
        return sizeof *a;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons((uint16_t)port);
    return sizeof *a;
}

static int bound_socket(int type, int k)
{
    struct sockaddr_storage ss;
    socklen_t len = source(k, &ss);
    int fd = socket(ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (bind(fd, (struct sockaddr *)&ss, len) != 0)
        die("bind source");
    return fd;
}

static void drain(void)
{
    uint8_t buf[65536];
    for (int i = 0; i < SLOTS; i++) {
        slot *s = &slots[i];
        for (int n = 0; s->fd >= 0 && n < 64; n++) {
            ssize_t r = recv(s->fd, buf, sizeof buf, 0);
            if (r <= 0)
                break;
            size_t keep = RX_KEEP - s->rxlen < (size_t)r ? RX_KEEP - s->rxlen : (size_t)r;
            memcpy(s->rx + s->rxlen, buf, keep);
            s->rxlen += keep;
        }
    }
    for (int i = 0; i < SOURCES; i++)
        while (udp_fd[i] >= 0 && recv(udp_fd[i], buf, sizeof buf, 0) > 0)
            ;
}

static void pump(void)
{
    for (int i = 0; i < 3; i++) {
        ev_run(srv.loop, EVRUN_NOWAIT);
        drain();
    }
}

static void slot_close(slot *s, bool reset)
{
    if (s->fd < 0)
        return;
    if (reset) {
        struct linger l = { 1, 0 };
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(s->fd);
    *s = (slot){ .fd = -1 };
}

/* Everything the server does not take at once is dropped after a few
 * rounds (a paused side stops reading; the fuzzer's data is not precious). */
static void send_all(slot *s, const uint8_t *p, size_t n)
{
    for (int tries = 0; s->fd >= 0 && n > 0 && tries < 8; tries++) {
        ssize_t r = send(s->fd, p, n, MSG_NOSIGNAL);
        if (r > 0) {
            p += r, n -= (size_t)r;
            continue;
        }
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return;
        pump();
    }
}

static void send_frame(slot *s, const uint8_t *p, size_t n)
{
    uint8_t hdr[RDV_FRAME_HDR_MAX];
    if (n > FRAME_MAX)
        n = FRAME_MAX;
    send_all(s, hdr, rdv_frame_header(n, hdr));
    send_all(s, p, n);
}

static void send_data(slot *s, unsigned arg, const uint8_t *p, size_t n)
{
    if (s->keyed) { /* one sealed frame, as a keyed client sends */
        uint8_t *e = malloc(n + RDV_SECURE_MACBYTES);
        if (rdv_secure_seal(s->key, &s->tx, p, n, e) == 0)
            send_frame(s, e, n + RDV_SECURE_MACBYTES);
        free(e);
    } else if (arg & 4) {
        send_frame(s, p, n);
    } else {
        send_all(s, p, n);
    }
}

/* A masked client frame; the zero mask keeps the payload readable in seeds. */
static void send_ws(slot *s, unsigned arg, const uint8_t *p, size_t n)
{
    static const uint8_t opcodes[4] = { 0x2, 0x0, 0x9, 0x8 }; /* binary, continuation, ping, close */
    uint8_t h[14];
    size_t hl = 0;
    h[hl++] = (uint8_t)((arg & 0x10 ? 0 : 0x80) | opcodes[(arg >> 2) & 3]);
    if (n < 126) {
        h[hl++] = (uint8_t)(0x80 | n);
    } else {
        h[hl++] = 0x80 | 126;
        h[hl++] = (uint8_t)(n >> 8), h[hl++] = (uint8_t)n;
    }
    memset(h + hl, 0, 4);
    send_all(s, h, hl + 4);
    send_all(s, p, n);
}

static void send_upgrade(slot *s, const uint8_t *extra, size_t n)
{
    static const char head[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    send_all(s, (const uint8_t *)head, sizeof head - 1);
    send_all(s, extra, n);
    send_all(s, (const uint8_t *)"\r\n", 2);
}

/* Answer the server's secure-TCP offer (the first frame it sent: a
 * KeyExchange holding its signed box key) as a client does: a fixed client
 * key pair, a fixed symmetric key sealed to the server's box key. */
static void key_exchange(slot *s)
{
    size_t hl, pl;
    if (s->fd < 0 || s->keyed || rdv_frame_parse(s->rx, s->rxlen, FRAME_MAX, &hl, &pl) != RDV_FRAME_OK)
        return;
    rdv_msg *m = hbb__rendezvous_message__unpack(NULL, pl, s->rx + hl);
    if (!m)
        return;
    if (m->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE && m->key_exchange->n_keys == 1 &&
        m->key_exchange->keys[0].len == 96) {
        uint8_t seed[32] = { 7 }, cpk[32], csk[32], sealed[48], nonce[24] = { 0 };
        crypto_box_seed_keypair(cpk, csk, seed);
        memset(s->key, 0x42, sizeof s->key);
        if (crypto_box_easy(sealed, s->key, 32, nonce, m->key_exchange->keys[0].data + 64, csk) != 0)
            goto out;
        ProtobufCBinaryData keys[2] = { { 32, cpk }, { 48, sealed } };
        Hbb__KeyExchange kx = HBB__KEY_EXCHANGE__INIT;
        kx.n_keys = 2, kx.keys = keys;
        rdv_msg out = HBB__RENDEZVOUS_MESSAGE__INIT;
        out.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE, out.key_exchange = &kx;
        uint8_t buf[256];
        size_t n = protobuf_c_message_pack(&out.base, buf);
        send_frame(s, buf, n);
        s->keyed = true, s->tx = 0;
    }
out:
    hbb__rendezvous_message__free_unpacked(m, NULL);
}

static void open_slot(slot *s, unsigned arg)
{
    slot_close(s, true);
    int k = (int)((arg >> 5) % SOURCES);
    s->fd = bound_socket(SOCK_STREAM, k);
    /* Without it a second small write waits for the server's (delayed) ACK
     * and reaches the server only after the operations that follow. */
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_storage to;
    socklen_t len = server_addr(k == SOURCES - 1 ? AF_INET6 : AF_INET, ports[(arg >> 2) % 5], &to);
    if (connect(s->fd, (struct sockaddr *)&to, len) != 0 && errno != EINPROGRESS)
        slot_close(s, false);
}

static void udp_send(unsigned arg, const uint8_t *p, size_t n)
{
    int k = (int)(arg % SOURCES);
    if (udp_fd[k] < 0)
        udp_fd[k] = bound_socket(SOCK_DGRAM, k);
    struct sockaddr_storage to;
    socklen_t len = server_addr(k == SOURCES - 1 ? AF_INET6 : AF_INET, ports[0], &to);
    sendto(udp_fd[k], p, n, 0, (struct sockaddr *)&to, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv.loop)
        boot();
    round_no++;
    size_t off = 0;
    for (int ops = 0; ops < MAX_OPS && size - off >= 4; ops++) {
        unsigned op = data[off] % OP_COUNT, arg = data[off + 1];
        size_t n = (size_t)data[off + 2] | (size_t)data[off + 3] << 8;
        off += 4;
        if (n > size - off)
            n = size - off;
        const uint8_t *p = data + off;
        off += n;
        slot *s = &slots[arg % SLOTS];
        switch (op) {
        case OP_UDP: udp_send(arg, p, n); break;
        case OP_OPEN: open_slot(s, arg); break;
        case OP_SEND: send_data(s, arg, p, n); break;
        case OP_WS: send_ws(s, arg, p, n); break;
        case OP_UPGRADE: send_upgrade(s, p, n); break;
        case OP_KEYX: key_exchange(s); break;
        case OP_FIN:
            if (s->fd >= 0)
                shutdown(s->fd, SHUT_WR);
            break;
        case OP_CLOSE: slot_close(s, arg & 4); break;
        }
        pump();
    }
    /* Nothing carries over to the next input but what the modules keep
     * (registrations, counters, limits): connections the server still holds
     * (a paused relay side does not see the reset) are closed. */
    for (int i = 0; i < SLOTS; i++)
        slot_close(&slots[i], true);
    for (int i = 0; i < SOURCES; i++)
        if (udp_fd[i] >= 0)
            close(udp_fd[i]), udp_fd[i] = -1;
    pump();
    rdv_conns_close_all(&srv, false);
    pump();
    if (getenv("RDV_FUZZ_STATS")) /* what the input reached, by the node's own counters */
        for (rdv_stat *st = srv.stats; st; st = st->next) {
            uint64_t v = st->fn ? st->fn(st->ud) : st->value;
            if (v)
                fprintf(stderr, "  %s %llu\n", st->name, (unsigned long long)v);
        }
    return 0;
}
