/* libFuzzer: the whole node as conf.d ships it (all ten modules, the default
 * ports) driven through real sockets the way clients on the network reach
 * it — UDP datagrams to the rendezvous port, TCP connections to the
 * rendezvous, NAT-test, relay and both WebSocket ports, and the API server
 * api-proxy forwards to answering with fuzzed bytes. Where fuzz_dispatch
 * calls the dispatcher directly, this one goes through the listeners, the
 * connection read path, the secure-TCP record layer, the WebSocket transport
 * and the modules' stream handlers, timers, close hooks and pairing.
 *
 * The process moves into a network namespace of its own first (loopback,
 * plus two test ranges routed to it): modules send datagrams to addresses
 * taken from messages (PunchHoleSent carries one), and none of them may
 * leave the machine. That needs root (CAP_SYS_ADMIN), as CI has.
 *
 * Input: a sequence of operations, each  op:u8 arg:u8 len:u16le data[len]
 * (len is cut to what is left; op is taken modulo the count):
 *   0 UDP      datagram data from source arg%8 to the rendezvous port
 *   1 OPEN     slot arg%4: connect from source (arg>>5)%8 to port (arg>>2)%5
 *              (loopback sources reach the NAT and relay consoles there)
 *   2 SEND     data on slot arg%4: sealed frame once keyed, else one frame
 *              if arg&4, else raw bytes
 *   3 WS       a masked WebSocket frame: opcode (arg>>2)&3 of binary,
 *              continuation, ping, close; FIN unless arg&0x10
 *   4 UPGRADE  a valid WebSocket upgrade request, data as extra header lines
 *   5 KEYX     answer the server's secure-TCP offer on slot arg%4
 *   6 FIN      half-close slot arg%4;   7 CLOSE  close it (reset if arg&4)
 *   8 API      the API server answers data on its connection arg%4 (closes
 *              it if arg&4)
 *   9 WAIT     if arg >= 0xf0, let 40 * (1 + arg%4) ms pass (timers; twice
 *              per input at most)
 *  10 ADMIN    data as one command line on the admin socket (the core's and
 *              every module's commands, reload included; not log-level)
 * After every operation the loop runs without blocking and every client
 * socket is drained. tests/fuzz/node_seeds.py writes the seeds.
 * RDV_FUZZ_LOG=debug (or info, ...) and RDV_FUZZ_STATS=1 show what the node
 * made of an input. */
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
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
#include <sys/un.h>
#include <unistd.h>

#include "rdv/proto.h"
#include "rdv/wire.h"
#include "fuzz_paths.h"
#include "server.h"

enum { OP_UDP, OP_OPEN, OP_SEND, OP_WS, OP_UPGRADE, OP_KEYX, OP_FIN, OP_CLOSE, OP_API, OP_WAIT, OP_ADMIN, OP_COUNT };
#define SLOTS 4
#define SOURCES 8        /* see source() */
#define MAX_OPS 256      /* per input: keeps one (without WAIT) under a few ms */
#define MAX_WAITS 2      /* per input: at most 320 ms of waiting */
#define API_PORT 18080  /* the API server api-proxy forwards to: played by us */
#define API_CONNS 4
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
static int api_listen = -1, api_conn[API_CONNS] = { -1, -1, -1, -1 };

static void die(const char *what)
{
    fprintf(stderr, "fuzz_node: %s: %s\n", what, strerror(errno));
    abort();
}

/* "ip route add local <dst>/<len> dev lo": every address of the range is
 * this host's (so sources outside 127/8 exist without configuring each). */
static void local_route(int family, const void *dst, size_t dlen, int prefix)
{
    struct {
        struct nlmsghdr h;
        struct rtmsg r;
        char attrs[64];
    } req = { 0 };
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof req.r);
    req.h.nlmsg_type = RTM_NEWROUTE;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
    req.r = (struct rtmsg){ .rtm_family = (unsigned char)family, .rtm_dst_len = (unsigned char)prefix,
                            .rtm_table = RT_TABLE_LOCAL, .rtm_protocol = RTPROT_BOOT,
                            .rtm_scope = RT_SCOPE_HOST, .rtm_type = RTN_LOCAL };
    int lo = (int)if_nametoindex("lo");
    struct { unsigned short type; const void *p; size_t n; } a[] = { { RTA_DST, dst, dlen }, { RTA_OIF, &lo, sizeof lo } };
    for (size_t i = 0; i < 2; i++) {
        struct rtattr *rta = (struct rtattr *)((char *)&req + NLMSG_ALIGN(req.h.nlmsg_len));
        rta->rta_type = a[i].type;
        rta->rta_len = (unsigned short)RTA_LENGTH(a[i].n);
        memcpy(RTA_DATA(rta), a[i].p, a[i].n);
        req.h.nlmsg_len = NLMSG_ALIGN(req.h.nlmsg_len) + RTA_ALIGN(rta->rta_len);
    }
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    struct { struct nlmsghdr h; struct nlmsgerr e; } ack;
    if (fd < 0 || send(fd, &req, req.h.nlmsg_len, 0) < 0 || recv(fd, &ack, sizeof ack, 0) < (ssize_t)sizeof ack)
        die("netlink");
    if (ack.h.nlmsg_type == NLMSG_ERROR && ack.e.error) {
        errno = -ack.e.error;
        die("RTM_NEWROUTE local");
    }
    close(fd);
}

/* A network namespace of our own: loopback, up, and the two test ranges of
 * source() routed to it. */
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
    uint8_t v4[4] = { 198, 18, 0, 0 }, v6[16] = { 0x20, 0x01, 0x0d, 0xb8 };
    local_route(AF_INET, v4, sizeof v4, 15);
    local_route(AF_INET6, v6, sizeof v6, 64);
}

static socklen_t server_addr(int k, int port, struct sockaddr_storage *ss);

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
        "  listeners = ( { name = \"main\"; port = 21116; udp = true; tcp = true; } );\n"
        "  admin_socket = \"rdvd.sock\"; log_level = \"%s\"; };\n"
        "keys: { key = \"" SERVER_SK "\"; };\n"
        "relay: { key = \"" LICENCE "\"; first_timeout_ms = 100; wait_timeout_ms = 100;\n"
        "  console_loopback = true; };\n"
        /* upstream's loopback consoles on the NAT and relay ports: loopback
         * sources reach them, the routed ones the protocol (nat-test then
         * owns the NAT port: no core "nat" listener) */
        "nat-test: { compat_console = true; };\n"
        "punch-coordinator: { relay_servers = [ \"127.0.0.1\" ]; local_ip = \"127.0.0.1\"; };\n"
        "api-proxy: { api_base_url = \"http://127.0.0.1:%d\"; timeout_ms = 100; connect_timeout_ms = 100;\n"
        "  heartbeat_ms = 100; };\n"
        /* the shortest timeouts the settings allow, so OP_WAIT reaches them */
        "websocket-transport: { handshake_timeout_ms = 100; close_timeout_ms = 100; };\n"
        "registry: { stream_heartbeat_ms = 100; sweep_ms = 10; };\n", level, API_PORT);
    rdv_boot b = { .conf_text = conf, .conf_text_name = "fuzz_node" };
    if (rdv_server_init(&srv, &b) != 0) {
        fprintf(stderr, "fuzz_node: start-up failed: %s\n", srv.err);
        abort();
    }
    struct sockaddr_storage ss;
    socklen_t len = server_addr(0, API_PORT, &ss);
    api_listen = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (api_listen < 0 || bind(api_listen, (struct sockaddr *)&ss, len) != 0 || listen(api_listen, 64) != 0)
        die("API server socket");
    for (int i = 0; i < SLOTS; i++)
        slots[i].fd = -1;
    for (int i = 0; i < SOURCES; i++)
        udp_fd[i] = -1;
}

/* Sources, per input (fresh, so the ip-blocker's per-address limits start
 * over; within an input they apply): 0-2 loopback 127.a.b.(1+k), 3-5 the
 * routed 198.18.a.b range, 6 one of 2001:db8::/64, 7 ::1. Loopback sources
 * reach the server at 127.0.0.1 / ::1, the others at 198.18.0.1 /
 * 2001:db8::1 (both ranges are local routes of this namespace: isolate()). */
static socklen_t to_sockaddr(const rdv_addr *a, struct sockaddr_storage *ss)
{
    return rdv_addr_to_sockaddr(a, rdv_addr_is_v4(a) ? AF_INET : AF_INET6, ss);
}

static socklen_t source(int k, struct sockaddr_storage *ss)
{
    uint32_t r = round_no;
    rdv_addr a;
    if (k == 7) {
        rdv_addr_v6(&a, in6addr_loopback.s6_addr, 0);
    } else if (k == 6) {
        uint8_t ip[16] = { 0x20, 0x01, 0x0d, 0xb8, [11] = 1 }; /* never ::1 of the range (the server's) */
        memcpy(ip + 12, &r, 4);
        rdv_addr_v6(&a, ip, 0);
    } else if (k < 3) {
        uint8_t ip[4] = { 127, (uint8_t)(1 + (r >> 8) % 250), (uint8_t)r, (uint8_t)(1 + k) };
        rdv_addr_v4(&a, ip, 0);
    } else { /* 198.18.0.0/15 without .0.x (the server's 198.18.0.1) */
        uint32_t h = (3u * r + (uint32_t)(k - 3)) % (131072u - 256u) + 256u;
        uint8_t ip[4] = { 198, (uint8_t)(18 + (h >> 16)), (uint8_t)(h >> 8), (uint8_t)h };
        rdv_addr_v4(&a, ip, 0);
    }
    return to_sockaddr(&a, ss);
}

static socklen_t server_addr(int k, int port, struct sockaddr_storage *ss)
{
    static const uint8_t lo4[4] = { 127, 0, 0, 1 }, test4[4] = { 198, 18, 0, 1 },
                         test6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
    rdv_addr a;
    if (k < 6)
        rdv_addr_v4(&a, k < 3 ? lo4 : test4, (uint16_t)port);
    else
        rdv_addr_v6(&a, k == 7 ? in6addr_loopback.s6_addr : test6, (uint16_t)port);
    return to_sockaddr(&a, ss);
}

static int bound_socket(int type, int k)
{
    struct sockaddr_storage ss;
    socklen_t len = source(k, &ss);
    int fd = socket(ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1; /* IPv6 binds only to assigned addresses otherwise, not to a local route */
    setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0)
        die("bind source");
    return fd;
}

static void discard(int fd, uint8_t *buf, size_t cap)
{
    while (fd >= 0 && recv(fd, buf, cap, 0) > 0)
        ;
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
        discard(udp_fd[i], buf, sizeof buf);
    for (int i = 0; i < API_CONNS; i++)
        discard(api_conn[i], buf, sizeof buf);
}

/* The API server's turn: take the connections api-proxy opened, answer on
 * one of them with the data (a response head and body, or anything), and
 * close it if asked. */
static void api_answer(unsigned arg, const uint8_t *p, size_t n)
{
    for (int i = 0; i < API_CONNS; i++)
        if (api_conn[i] < 0)
            api_conn[i] = accept4(api_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int *fd = &api_conn[arg % API_CONNS];
    if (*fd < 0)
        return;
    if (n)
        (void)!send(*fd, p, n, MSG_NOSIGNAL);
    if (arg & 4)
        close(*fd), *fd = -1;
}

static void pump(void)
{
    for (int i = 0; i < 3; i++) {
        ev_run(srv.loop, EVRUN_NOWAIT);
        drain();
    }
}

/* Let real time pass (the loop's timers are real): 40..160 ms reach the
 * 100 ms timeouts set in boot(). Costly, so the fuzzer uses it sparingly. */
static void wait_ms(int ms)
{
    for (int t = 0; t < ms; t += 10) {
        usleep(10000);
        pump();
    }
}

/* One command on the admin socket, its answer read to EOF (bounded). A
 * command that raises the log level would slow every later input down, and
 * the fuzzer finds it: it is left out. */
static void admin(const uint8_t *p, size_t n)
{
    if (n >= 9 && memcmp(p, "log-level", 9) == 0)
        return;
    struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = "rdvd.sock" };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return;
    }
    (void)!send(fd, p, n, MSG_NOSIGNAL);
    (void)!send(fd, "\n", 1, MSG_NOSIGNAL);
    uint8_t buf[4096];
    for (int i = 0; i < 64; i++) {
        pump();
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN))
            break;
    }
    close(fd);
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
    socklen_t len = server_addr(k, ports[(arg >> 2) % 5], &to);
    if (connect(s->fd, (struct sockaddr *)&to, len) != 0 && errno != EINPROGRESS)
        slot_close(s, false);
}

static void udp_send(unsigned arg, const uint8_t *p, size_t n)
{
    int k = (int)(arg % SOURCES);
    if (udp_fd[k] < 0)
        udp_fd[k] = bound_socket(SOCK_DGRAM, k);
    struct sockaddr_storage to;
    socklen_t len = server_addr(k, ports[0], &to);
    sendto(udp_fd[k], p, n, 0, (struct sockaddr *)&to, len);
}

/* boot() moves to a temporary directory: libFuzzer's relative paths first. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_absolute_paths(argc, argv);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv.loop)
        boot();
    round_no++;
    size_t off = 0;
    int waits = 0;
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
        case OP_API: api_answer(arg, p, n); break;
        case OP_ADMIN: admin(p, n); break;
        case OP_WAIT:
            /* only with arg >= 0xf0: mutations must not make most inputs slow */
            if (arg >= 0xf0 && waits++ < MAX_WAITS)
                wait_ms(40 * (1 + arg % 4));
            break;
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
    for (int i = 0; i < API_CONNS; i++)
        if (api_conn[i] >= 0)
            close(api_conn[i]), api_conn[i] = -1;
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
