/* Integration: what current RustDesk clients need beyond the OSS server
 * (EXT rendezvous.md §15.3-§15.4, §15.7-§15.9, §15.11; client-flows.md §2.4,
 * §3, §4, §5.2, §6; R209, R220-R224, R226-R229), with the real rdvd and the
 * rendezvous modules, secure-tcp and (when built) websocket-transport.
 *
 * The test plays the clients: a TCP-mode device that keys its connection
 * with libsodium as a logged-in client does (secure-tcp, wire.md §6.3-§6.4),
 * registers on it, echoes heartbeats and receives its pushes there; a
 * WebSocket-mode device; UDP devices doing UDP and IPv6 punching; viewers
 * that skip the server's leading KeyExchange as clients since 1.2.0 do. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "rdv/wire.h"

typedef Hbb__RendezvousMessage msg_t;

static rdvt_server srv;
static char K[64];      /* licence key = id_ed25519.pub */
static uint8_t KPK[32]; /* the server's signing public key */
static bool have_ws;    /* websocket-transport was built and loaded */
static bool have_apx;   /* api-proxy (libcurl) was built and loaded */
static char conf_core[1024], conf_mods[1024];

#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define ONLINE_MS 3000
#define HB_MS 1000 /* registry.stream_heartbeat_ms below */

/* ------------------------------------------------------------------ server */
static void read_key(void)
{
    char path[400];
    snprintf(path, sizeof path, "%s/id_ed25519.pub", srv.dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "keys module wrote no id_ed25519.pub");
    size_t n = fread(K, 1, sizeof K - 1, f);
    fclose(f);
    K[n] = '\0';
    K[strcspn(K, "\r\n")] = '\0';
    size_t bl;
    cr_assert_eq(sodium_base642bin(KPK, sizeof KPK, K, strlen(K), NULL, &bl, NULL, sodium_base64_VARIANT_ORIGINAL), 0);
    cr_assert_eq(bl, 32);
}

static void start_with(const char *nat_test_extra)
{
    cr_assert_geq(sodium_init(), 0);
    have_ws = access(RDV_BUILD_DIR "/modules/websocket-transport.so", R_OK) == 0;
    have_apx = access(RDV_BUILD_DIR "/modules/api-proxy.so", R_OK) == 0;
    snprintf(conf_core, sizeof conf_core,
             "core: {\n"
             "  modules = [ \"keys\", \"storage-sqlite\", \"ip-blocker\", \"registry\", \"nat-test\",\n"
             "              \"punch-coordinator\", \"secure-tcp\"%s%s ];\n"
             "  module_path = \"@MODDIR@\";\n"
             "  listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; },\n"
             "                { name = \"nat\"; port = @NAT@; tcp = true; } );\n"
             "};\n",
             have_apx ? ", \"api-proxy\"" : "", have_ws ? ", \"websocket-transport\"" : "");
    snprintf(conf_mods, sizeof conf_mods,
             "registry: { online_ms = %d; stream_heartbeat_ms = %d; stream_keep_alive_s = 4; };\n"
             "nat-test: { %s };\n"
             "%s%s",
             ONLINE_MS, HB_MS, nat_test_extra, have_apx ? "api-proxy: { heartbeat_ms = 400; };\n" : "",
             have_ws ? "websocket-transport: { rendezvous_port = @WS@; relay_port = 0; idle_ms = 8000;\n"
                       "  handshake_timeout_ms = 2000; close_timeout_ms = 1000; };\n"
                     : "");
    const char *const files[] = { "00-core.conf", conf_core, "30-mods.conf", conf_mods, NULL };
    /* A port of the block may be taken by a client socket of this busy
     * machine: move to the next block rather than fail. */
    for (int attempt = 0;; attempt++) {
        cr_assert_eq(rdvt_prepare(&srv, files), 0);
        if (rdvt_start(&srv) == 0)
            break;
        bool busy = rdvt_log_contains(&srv, "Address already in use");
        rdvt_cleanup(&srv);
        cr_assert(busy && attempt < 5, "rdvd did not start");
    }
    read_key();
}

static void setup(void) { start_with(""); }
static void setup_slack(void) { start_with("udp_test_nat_slack = 4;"); }

static void teardown(void)
{
    int st = rdvt_stop(&srv);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "rdvd did not exit cleanly (status %d)", st);
}

TestSuite(modern, .init = setup, .fini = teardown, .timeout = 90);
TestSuite(modern_slack, .init = setup_slack, .fini = teardown, .timeout = 60);

/* ------------------------------------------------------------------ small helpers */
static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static size_t packed(const msg_t *m, uint8_t *buf, size_t cap)
{
    size_t n = protobuf_c_message_get_packed_size(&m->base);
    cr_assert_leq(n, cap);
    return protobuf_c_message_pack(&m->base, buf);
}

static rdv_addr local_addr(int fd)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &l);
    rdv_addr a;
    rdv_addr_from_sockaddr(&a, (struct sockaddr *)&ss, l);
    return a;
}

static void expect_addr(ProtobufCBinaryData sa, const rdv_addr *want)
{
    rdv_addr got;
    rdv_addr_unmangle(sa.data, sa.len, &got);
    char a[RDV_ADDR_STRLEN], b[RDV_ADDR_STRLEN];
    cr_assert(rdv_addr_equal(&got, want), "address %s, expected %s", rdv_addr_str(&got, a, sizeof a),
              rdv_addr_str(want, b, sizeof b));
}

static void expect_bytes(ProtobufCBinaryData got, const uint8_t *want, size_t n)
{
    cr_assert_eq(got.len, n, "%zu bytes, expected %zu", got.len, n);
    cr_assert_arr_eq(got.data, want, n);
}

/* A device: its id, key pair and uuid. */
typedef struct device {
    char id[32], uuid[48];
    uint8_t pk[32], sk[64];
    int udp; /* UDP-mode devices */
} device;

static void device_init(device *d, const char *id)
{
    memset(d, 0, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", id);
    snprintf(d->uuid, sizeof d->uuid, "uuid-%s", id);
    crypto_sign_keypair(d->pk, d->sk);
    d->udp = -1;
}

/* R69/R167: pk opens with the server key to IdPk{id, the device's pk}. */
static void expect_signed(ProtobufCBinaryData pk, const device *d)
{
    cr_assert_gt(pk.len, crypto_sign_BYTES, "pk is not signed");
    uint8_t m[512];
    unsigned long long ml;
    cr_assert_lt(pk.len, sizeof m);
    cr_assert_eq(crypto_sign_open(m, &ml, pk.data, pk.len, KPK), 0, "signed pk does not verify with the key");
    Hbb__IdPk *ip = hbb__id_pk__unpack(NULL, (size_t)ml, m);
    cr_assert_not_null(ip);
    cr_assert_str_eq(ip->id, d->id);
    cr_assert_eq(ip->pk.len, 32);
    cr_assert_arr_eq(ip->pk.data, d->pk, 32);
    hbb__id_pk__free_unpacked(ip, NULL);
}

/* ------------------------------------------------------------------ messages */
static msg_t *register_pk_msg(const char *id, const char *uuid, const uint8_t *pk)
{
    static Hbb__RegisterPk r;
    static msg_t m;
    hbb__register_pk__init(&r);
    hbb__rendezvous_message__init(&m);
    r.id = (char *)id;
    r.uuid.data = (uint8_t *)uuid, r.uuid.len = strlen(uuid);
    r.pk.data = (uint8_t *)pk, r.pk.len = 32;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &r;
    return &m;
}

static msg_t *register_peer_msg(const char *id)
{
    static Hbb__RegisterPeer r;
    static msg_t m;
    hbb__register_peer__init(&r);
    hbb__rendezvous_message__init(&m);
    r.id = (char *)id;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER;
    m.register_peer = &r;
    return &m;
}

/* PunchHoleRequest as client-flows.md §3.1 describes it. */
typedef struct phr_opts {
    int nat, udp_port, upnp_port;
    bool force_relay;
    const uint8_t *v6;
    size_t v6n;
} phr_opts;

static msg_t *phr_msg(const char *id, const phr_opts *o)
{
    static Hbb__PunchHoleRequest r;
    static msg_t m;
    hbb__punch_hole_request__init(&r);
    hbb__rendezvous_message__init(&m);
    r.id = (char *)id;
    r.nat_type = (Hbb__NatType)o->nat;
    r.licence_key = K;
    r.conn_type = HBB__CONN_TYPE__DEFAULT_CONN;
    r.version = "1.4.9";
    r.udp_port = o->udp_port;
    r.force_relay = o->force_relay;
    r.upnp_port = o->upnp_port;
    r.socket_addr_v6.data = (uint8_t *)o->v6, r.socket_addr_v6.len = o->v6n;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_REQUEST;
    m.punch_hole_request = &r;
    return &m;
}

/* PunchHoleSent as a device answers a PunchHole (client-flows.md §4.1). */
static msg_t *phs_msg(ProtobufCBinaryData sa, const device *d, int upnp, const uint8_t *v6, size_t v6n)
{
    static Hbb__PunchHoleSent s;
    static msg_t m;
    static uint8_t buf[RDV_ADDR_MANGLED_MAX];
    hbb__punch_hole_sent__init(&s);
    hbb__rendezvous_message__init(&m);
    cr_assert_leq(sa.len, sizeof buf);
    memcpy(buf, sa.data, sa.len);
    s.socket_addr.data = buf, s.socket_addr.len = sa.len;
    s.id = (char *)d->id;
    s.relay_server = "relay.example:21117";
    s.nat_type = HBB__NAT_TYPE__ASYMMETRIC;
    s.version = "1.4.9";
    s.upnp_port = upnp;
    s.socket_addr_v6.data = (uint8_t *)v6, s.socket_addr_v6.len = v6n;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_SENT;
    m.punch_hole_sent = &s;
    return &m;
}

static msg_t *online_msg(char **ids, size_t n)
{
    static Hbb__OnlineRequest r;
    static msg_t m;
    hbb__online_request__init(&r);
    hbb__rendezvous_message__init(&m);
    r.id = "111111111";
    r.peers = ids, r.n_peers = n;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_REQUEST;
    m.online_request = &r;
    return &m;
}

static msg_t *test_nat_msg(int serial)
{
    static Hbb__TestNatRequest r;
    static msg_t m;
    hbb__test_nat_request__init(&r);
    hbb__rendezvous_message__init(&m);
    r.serial = serial;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST;
    m.test_nat_request = &r;
    return &m;
}

/* Mangled IPv6 addresses (wire.md §5.2) of the two sides' V sockets. */
static const uint8_t V6A[18] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x0a, [16] = 0x39, [17] = 0x30 };
static const uint8_t V6B[18] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x0b, [16] = 0x40, [17] = 0x1f };

/* ------------------------------------------------------------------ UDP */
/* A datagram from the main port (NULL on timeout); *len its size. */
static msg_t *udp_from_server(int fd, int ms, size_t *len)
{
    uint8_t buf[65536];
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, ms) != 1)
        return NULL;
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    cr_assert_gt(r, 0);
    cr_assert_eq(ntohs(from.sin_port), srv.port, "UDP from the main port (R1)");
    if (len)
        *len = (size_t)r;
    return hbb__rendezvous_message__unpack(NULL, (size_t)r, buf);
}

/* Send m and return the reply, checking it is no larger than m. */
static msg_t *udp_ask(int fd, const msg_t *m, int ms)
{
    uint8_t req[2048];
    size_t n = packed(m, req, sizeof req), got = 0;
    cr_assert_eq(rdvt_udp_send_raw(fd, srv.port, req, n), 0);
    msg_t *r = udp_from_server(fd, ms, &got);
    if (r)
        cr_assert_leq(got, n, "UDP reply of %zu bytes to a %zu-byte request", got, n);
    return r;
}

/* A UDP socket on the very address (ip and port) of a TCP socket: where a
 * push by UDP to a stream-registered device would land. */
static int udp_twin(int tcp_fd)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    cr_assert_eq(getsockname(tcp_fd, (struct sockaddr *)&a, &l), 0);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void udp_expect_silence(int fd, int ms)
{
    uint8_t buf[2048];
    cr_assert_lt(rdvt_udp_recv_raw(fd, buf, sizeof buf, ms), 0, "unexpected datagram");
}

/* UDP registration (client-flows.md §2.3): RegisterPk OK, then RegisterPeer. */
static void udp_register(device *d, const char *ip)
{
    d->udp = rdvt_udp(ip);
    cr_assert_geq(d->udp, 0);
    msg_t *r = udp_ask(d->udp, register_pk_msg(d->id, d->uuid, d->pk), 3000);
    cr_assert_not_null(r, "no RegisterPkResponse");
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    rdvt_msg_free(r);
    r = udp_ask(d->udp, register_peer_msg(d->id), 3000);
    cr_assert_not_null(r);
    cr_assert_not(r->register_peer_response->request_pk);
    rdvt_msg_free(r);
}

/* ------------------------------------------------------------------ TCP */
/* A plain connection to the main port, past the server's KeyExchange offer
 * (clients skip one, client-flows.md §5.2 step 5). */
static int main_conn(const char *ip)
{
    int fd = rdvt_tcp(ip, srv.port);
    cr_assert_geq(fd, 0, "cannot connect from %s", ip);
    msg_t *m = rdvt_tcp_recv(fd, 3000);
    cr_assert(m && m->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE, "secure-tcp offers first");
    rdvt_msg_free(m);
    return fd;
}

static msg_t *expect_tcp(int fd, int union_case, int ms)
{
    msg_t *r = rdvt_tcp_recv(fd, ms);
    cr_assert_not_null(r, "no %s on TCP", rdv_msg_tag_name(union_case));
    cr_assert_eq((int)r->union_case, union_case, "got %s", rdv_msg_tag_name((int)r->union_case));
    return r;
}

static void expect_nothing_tcp(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    cr_assert_eq(poll(&p, 1, ms), 0, "unexpected bytes or close");
}

/* Keyed connection as a logged-in client makes it (wire.md §6.3-§6.4). */
typedef struct keyed {
    int fd;
    uint8_t key[32];
    uint64_t tx, rx;
    unsigned heartbeats; /* empty frames received (and echoed) */
} keyed;

static keyed keyed_conn(const char *ip)
{
    keyed c = { .fd = rdvt_tcp(ip, srv.port) };
    cr_assert_geq(c.fd, 0);
    msg_t *m = rdvt_tcp_recv(c.fd, 3000);
    cr_assert(m && m->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE);
    cr_assert_eq(m->key_exchange->n_keys, 1);
    uint8_t box_pk[96];
    unsigned long long bl = 0;
    cr_assert_eq(crypto_sign_open(box_pk, &bl, m->key_exchange->keys[0].data, m->key_exchange->keys[0].len, KPK), 0,
                 "Signature mismatch in key exchange");
    cr_assert_eq(bl, 32);
    rdvt_msg_free(m);
    uint8_t cpk[32], csk[32], sealed[48], nonce[24] = { 0 };
    crypto_box_keypair(cpk, csk);
    randombytes_buf(c.key, sizeof c.key);
    cr_assert_eq(crypto_box_easy(sealed, c.key, 32, nonce, box_pk, csk), 0);
    ProtobufCBinaryData keys[2] = { { 32, cpk }, { 48, sealed } };
    Hbb__KeyExchange kx = HBB__KEY_EXCHANGE__INIT;
    kx.n_keys = 2, kx.keys = keys;
    msg_t out = HBB__RENDEZVOUS_MESSAGE__INIT;
    out.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE;
    out.key_exchange = &kx;
    cr_assert_eq(rdvt_tcp_send(c.fd, &out), 0);
    return c;
}

static void send_sealed(keyed *c, const msg_t *m)
{
    uint8_t p[4096], e[4096 + 16];
    size_t n = packed(m, p, sizeof p);
    cr_assert_eq(rdv_secure_seal(c->key, &c->tx, p, n, e), 0);
    cr_assert_eq(rdvt_tcp_send_frame(c->fd, e, n + 16), 0);
}

/* The next sealed message, echoing raw empty heartbeats as the client does
 * (client-flows.md §2.4 step 4); NULL on timeout. Each opens with the next
 * server counter: heartbeats consume none (R209). */
static msg_t *keyed_next(keyed *c, int ms)
{
    uint64_t deadline = now_ms() + (uint64_t)ms;
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline)
            return NULL;
        uint8_t *e = NULL;
        long n = rdvt_tcp_recv_frame(c->fd, &e, (int)(deadline - now));
        if (n == -1)
            return NULL;
        cr_assert_geq(n, 0, "connection closed by the server");
        if (n == 0) {
            free(e);
            c->heartbeats++;
            cr_assert_eq(rdvt_tcp_send_raw(c->fd, "\x00", 1), 0);
            continue;
        }
        cr_assert_gt(n, 16, "a frame of %ld bytes cannot be sealed", n);
        uint8_t *p = malloc((size_t)n);
        cr_assert_eq(rdv_secure_open(c->key, &c->rx, e, (size_t)n, p), 0,
                     "server frame does not open with counter %llu", (unsigned long long)c->rx + 1);
        msg_t *m = hbb__rendezvous_message__unpack(NULL, (size_t)n - 16, p);
        free(p);
        free(e);
        cr_assert_not_null(m);
        return m;
    }
}

static msg_t *keyed_expect(keyed *c, int union_case, int ms)
{
    msg_t *m = keyed_next(c, ms);
    cr_assert_not_null(m, "no %s on the keyed connection", rdv_msg_tag_name(union_case));
    cr_assert_eq((int)m->union_case, union_case, "got %s", rdv_msg_tag_name((int)m->union_case));
    return m;
}

/* Keep echoing heartbeats for ms; nothing else may arrive. */
static void keyed_idle(keyed *c, int ms)
{
    msg_t *m = keyed_next(c, ms);
    cr_assert_null(m, "unexpected %s", m ? rdv_msg_tag_name((int)m->union_case) : "");
}

/* TCP-mode registration (client-flows.md §2.4) on a keyed connection. */
static keyed tcp_mode_device(device *d, const char *ip)
{
    keyed c = keyed_conn(ip);
    send_sealed(&c, register_pk_msg(d->id, d->uuid, d->pk));
    msg_t *r = keyed_expect(&c, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE, 3000);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    cr_assert_eq(r->register_pk_response->keep_alive, 4, "keep_alive in seconds, as configured");
    rdvt_msg_free(r);
    return c;
}

/* ------------------------------------------------------------------ online queries */
/* OnlineRequest for ids on fd; returns the states byte 0. */
static uint8_t online_states(int fd, char **ids, size_t n)
{
    cr_assert_eq(rdvt_tcp_send(fd, online_msg(ids, n)), 0);
    msg_t *r = expect_tcp(fd, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE, 3000);
    cr_assert_eq(r->online_response->states.len, (n + 7) / 8);
    uint8_t s = n ? r->online_response->states.data[0] : 0;
    rdvt_msg_free(r);
    return s;
}

/* One query on the NAT port (one request per connection there). */
static bool online_via_nat(const char *id)
{
    int t = rdvt_tcp("127.0.9.9", srv.port - 1);
    cr_assert_geq(t, 0);
    char *ids[] = { (char *)id };
    uint8_t s = online_states(t, ids, 1);
    cr_assert(rdvt_tcp_closed(t, 3000), "§4.3: one request per NAT-port connection");
    close(t);
    return s & 0x80;
}

/* A's PunchHoleRequest for an id from ip; returns A's connection. */
static int ask_punch(const char *ip, const char *id, const phr_opts *o)
{
    int a = main_conn(ip);
    cr_assert_eq(rdvt_tcp_send(a, phr_msg(id, o)), 0);
    return a;
}

static void expect_failure(int a, Hbb__PunchHoleResponse__Failure f)
{
    msg_t *r = expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 3000);
    cr_assert_eq(r->punch_hole_response->socket_addr.len, 0);
    cr_assert_eq(r->punch_hole_response->failure, f);
    rdvt_msg_free(r);
}

/* ------------------------------------------------------------------ R220-R222, R209 */
Test(modern, R220_R221_R209_R222_tcp_mode_device_over_secure_tcp)
{
    device b;
    device_init(&b, "500000001");
    keyed bc = tcp_mode_device(&b, "127.0.20.1");
    cr_assert_eq(bc.rx, 1, "RegisterPkResponse was the server's first sealed frame");
    int twin = udp_twin(bc.fd);

    /* R220: kept open past the online window, heartbeats < 30 s apart, echoed */
    keyed_idle(&bc, 2 * ONLINE_MS);
    cr_assert_geq(bc.heartbeats, 4, "a heartbeat every %d ms (got %u)", HB_MS, bc.heartbeats);
    cr_assert_eq(rdvt_stat(&srv, "registry.stream_peers"), 1);
    cr_assert_geq(rdvt_stat(&srv, "registry.heartbeat_echoes"), 4);

    /* R221: online (NAT port, and the main port: R228) ... */
    cr_assert(online_via_nat(b.id), "a TCP-mode device is online while its connection lives");
    int q = main_conn("127.0.20.9");
    char *ids[] = { "nosuchid", b.id };
    cr_assert_eq(online_states(q, ids, 2), 0x40);
    close(q);

    /* ... and a viewer's PunchHoleRequest reaches it on that connection,
     * sealed, with every field a current client reads (client-flows.md §6.2) */
    phr_opts o = { .nat = HBB__NAT_TYPE__ASYMMETRIC, .udp_port = 40000, .upnp_port = 0, .v6 = V6A, .v6n = 18 };
    int a = ask_punch("127.0.20.2", b.id, &o);
    rdv_addr aa = local_addr(a);
    msg_t *ph = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE, 3000);
    const Hbb__PunchHole *p = ph->punch_hole;
    expect_addr(p->socket_addr, &aa);
    cr_assert_str_eq(p->relay_server, "");
    cr_assert_eq(p->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
    cr_assert_eq(p->udp_port, 40000);
    cr_assert_not(p->force_relay);
    cr_assert_eq(p->upnp_port, 0);
    expect_bytes(p->socket_addr_v6, V6A, 18);
    cr_assert_eq(rdvt_stat(&srv, "punch-coordinator.push_fail"), 0);
    udp_expect_silence(twin, 300); /* nothing went by UDP (R221) */
    close(twin);

    /* B answers on a fresh TCP connection (TCP punch, §4.1); A gets it */
    int bt = main_conn("127.0.20.1");
    rdv_addr ba = local_addr(bt);
    cr_assert_eq(rdvt_tcp_send(bt, phs_msg(p->socket_addr, &b, 6000, V6B, 18)), 0);
    cr_assert(rdvt_tcp_closed(bt, 3000));
    close(bt);
    rdvt_msg_free(ph);
    msg_t *r = expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 3000);
    const Hbb__PunchHoleResponse *pr = r->punch_hole_response;
    expect_addr(pr->socket_addr, &ba);
    expect_signed(pr->pk, &b);
    cr_assert_str_eq(pr->relay_server, "relay.example:21117");
    cr_assert_eq(pr->union_case, HBB__PUNCH_HOLE_RESPONSE__UNION_NAT_TYPE);
    cr_assert_eq(pr->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
    cr_assert_not(pr->is_udp);
    cr_assert_eq(pr->upnp_port, 6000);
    expect_bytes(pr->socket_addr_v6, V6B, 18);
    rdvt_msg_free(r);
    close(a);

    /* R209: after heartbeats, a second sealed RegisterPk (client counter 2)
     * is answered with the next server counter (3: PunchHole was 2) */
    cr_assert_eq(bc.tx, 1);
    keyed_idle(&bc, 6500); /* the per-id RegisterPk limiter (§11.2) wants a gap > 6 s */
    send_sealed(&bc, register_pk_msg(b.id, b.uuid, b.pk));
    r = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE, 3000);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    cr_assert_eq(bc.rx, 3);
    rdvt_msg_free(r);

    /* R222: the connection ends -> offline within the online window */
    close(bc.fd);
    uint64_t t0 = now_ms();
    bool offline = false;
    while (!offline && now_ms() - t0 < ONLINE_MS + 3000) {
        usleep(200 * 1000);
        offline = !online_via_nat(b.id);
    }
    cr_assert(offline, "still online %d ms after the connection closed", ONLINE_MS + 3000);
    a = ask_punch("127.0.20.3", b.id, &o);
    expect_failure(a, HBB__PUNCH_HOLE_RESPONSE__FAILURE__OFFLINE);
    close(a);
    cr_assert_eq(rdvt_stat(&srv, "registry.stream_peers"), 0);
    cr_assert_eq(rdvt_stat(&srv, "registry.stream_closed"), 1);
}

Test(modern, R221_request_relay_and_fetch_local_addr_over_the_device_connection)
{
    device b;
    device_init(&b, "500000002");
    keyed bc = tcp_mode_device(&b, "127.0.21.1");
    /* same IP as B: FetchLocalAddr, sealed on B's connection */
    phr_opts o = { .nat = HBB__NAT_TYPE__ASYMMETRIC, .v6 = V6A, .v6n = 18 };
    int a = ask_punch("127.0.21.1", b.id, &o);
    msg_t *f = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR, 3000);
    rdv_addr aa = local_addr(a);
    expect_addr(f->fetch_local_addr->socket_addr, &aa);
    expect_bytes(f->fetch_local_addr->socket_addr_v6, V6A, 18);
    rdvt_msg_free(f);
    close(a);
    /* RequestRelay from a viewer (client-flows.md §4.3) */
    int v = main_conn("127.0.21.2");
    Hbb__RequestRelay rr = HBB__REQUEST_RELAY__INIT;
    rr.id = b.id, rr.uuid = "c0ffee00-0000-4000-8000-000000000001", rr.relay_server = "relay.example";
    rr.secure = true;
    msg_t m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY;
    m.request_relay = &rr;
    cr_assert_eq(rdvt_tcp_send(v, &m), 0);
    msg_t *fw = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY, 3000);
    rdv_addr va = local_addr(v);
    expect_addr(fw->request_relay->socket_addr, &va);
    cr_assert_str_eq(fw->request_relay->uuid, rr.uuid);
    cr_assert_str_eq(fw->request_relay->relay_server, "relay.example");
    cr_assert(fw->request_relay->secure);
    /* B answers with RelayResponse on a new connection; the viewer gets it */
    int bt = main_conn("127.0.21.1");
    Hbb__RelayResponse rs = HBB__RELAY_RESPONSE__INIT;
    rs.socket_addr = fw->request_relay->socket_addr;
    rs.uuid = rr.uuid, rs.relay_server = "relay.example", rs.version = "1.4.9";
    rs.union_case = HBB__RELAY_RESPONSE__UNION_ID, rs.id = b.id;
    msg_t rm = HBB__RENDEZVOUS_MESSAGE__INIT;
    rm.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE;
    rm.relay_response = &rs;
    cr_assert_eq(rdvt_tcp_send(bt, &rm), 0);
    msg_t *got = expect_tcp(v, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE, 3000);
    cr_assert_str_eq(got->relay_response->uuid, rr.uuid);
    expect_signed(got->relay_response->pk, &b);
    rdvt_msg_free(got);
    rdvt_msg_free(fw);
    close(bt), close(v), close(bc.fd);
}

Test(modern, R223_uuid_mismatch_keeps_the_encrypted_connection)
{
    device other, b;
    device_init(&other, "500000003");
    udp_register(&other, "127.0.22.5");
    device_init(&b, "500000003"); /* same id, another device */
    keyed bc = keyed_conn("127.0.22.1");
    send_sealed(&bc, register_pk_msg(b.id, b.uuid, b.pk));
    msg_t *r = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE, 3000);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH);
    cr_assert_eq(r->register_pk_response->keep_alive, 4);
    rdvt_msg_free(r);
    /* the client takes a new id and asks again on the same connection */
    snprintf(b.id, sizeof b.id, "%s", "500000004");
    send_sealed(&bc, register_pk_msg(b.id, b.uuid, b.pk));
    r = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE, 3000);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    rdvt_msg_free(r);
    cr_assert(online_via_nat(b.id));
    close(bc.fd), close(other.udp);
}

Test(modern, silent_tcp_mode_device_is_closed_after_three_heartbeats)
{
    device b;
    device_init(&b, "500000009");
    keyed bc = tcp_mode_device(&b, "127.0.22.7");
    /* the 30 s request limit no longer applies, 3 x heartbeat does: a
     * device that stops echoing is closed after about 3 s */
    uint64_t t0 = now_ms();
    cr_assert(rdvt_tcp_closed(bc.fd, 3 * HB_MS + 2000), "not closed after three silent heartbeats");
    cr_assert_geq(now_ms() - t0, 3 * HB_MS - 200, "closed before three heartbeat periods");
    close(bc.fd);
}

/* Heartbeat echoes are shared: the registry's handler declines connections
 * that are not stream registrations, so api-proxy's HealthCheck sessions
 * (R231) keep working next to TCP-mode devices. */
Test(modern, R231_health_check_sessions_share_the_heartbeat_chain)
{
    if (!have_apx)
        cr_skip_test("api-proxy is not built");
    device b;
    device_init(&b, "500000013");
    keyed bc = tcp_mode_device(&b, "127.0.22.8");
    keyed hc = keyed_conn("127.0.22.9");
    Hbb__HealthCheck h = HBB__HEALTH_CHECK__INIT;
    h.token = "token";
    msg_t m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_HC;
    m.hc = &h;
    send_sealed(&hc, &m);
    /* both echo for 2.5 s: past 3 x 400 ms (api-proxy) and 3 x 1 s (ours) */
    uint64_t t0 = now_ms();
    while (now_ms() - t0 < 2500) {
        keyed_idle(&hc, 100);
        keyed_idle(&bc, 100);
    }
    cr_assert_geq(hc.heartbeats, 4, "HealthCheck heartbeats (got %u)", hc.heartbeats);
    cr_assert_geq(bc.heartbeats, 2, "stream heartbeats (got %u)", bc.heartbeats);
    cr_assert_eq(rdvt_stat(&srv, "api-proxy.hc_sessions"), 1, "the HealthCheck connection is alive");
    cr_assert_eq(rdvt_stat(&srv, "registry.stream_peers"), 1);
    cr_assert(online_via_nat(b.id));
    close(hc.fd), close(bc.fd);
}

Test(modern, R150_R12_plain_tcp_is_oss)
{
    device b;
    device_init(&b, "500000005");
    /* a plaintext RegisterPk on the main port: NOT_SUPPORT, closed (TCP-mode
     * clients always key their connection first) */
    int t = main_conn("127.0.23.1");
    cr_assert_eq(rdvt_tcp_send(t, register_pk_msg(b.id, b.uuid, b.pk)), 0);
    uint8_t *f = NULL;
    long n = rdvt_tcp_recv_frame(t, &f, 3000);
    const uint8_t not_support[] = { 0x82, 0x01, 0x02, 0x08, 0x06 };
    cr_assert_eq(n, 5);
    cr_assert_arr_eq(f, not_support, 5);
    free(f);
    cr_assert(rdvt_tcp_closed(t, 3000));
    close(t);
    /* an empty frame on an ordinary connection still closes it (R12) */
    t = main_conn("127.0.23.1");
    cr_assert_eq(rdvt_tcp_send_raw(t, "\x00", 1), 0);
    cr_assert(rdvt_tcp_closed(t, 3000));
    close(t);
    cr_assert_not(online_via_nat(b.id));
}

/* ------------------------------------------------------------------ WebSocket (R224, R228) */
static int read_exact(int fd, uint8_t *p, size_t n, uint64_t deadline)
{
    while (n) {
        uint64_t now = now_ms();
        if (now >= deadline)
            return -1;
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, (int)(deadline - now)) != 1)
            return -1;
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            return -2;
        p += r, n -= (size_t)r;
    }
    return 0;
}

static int ws_open(const char *src)
{
    int fd = rdvt_tcp(src, srv.port + 2);
    cr_assert_geq(fd, 0);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n");
    cr_assert_eq(rdvt_tcp_send_raw(fd, req, (size_t)n), 0);
    char head[1024];
    size_t h = 0;
    uint64_t deadline = now_ms() + 5000;
    while (h < 4 || memcmp(head + h - 4, "\r\n\r\n", 4) != 0) {
        cr_assert_lt(h, sizeof head - 1);
        cr_assert_eq(read_exact(fd, (uint8_t *)head + h, 1, deadline), 0, "no upgrade answer");
        h++;
    }
    head[h] = '\0';
    cr_assert(strncmp(head, "HTTP/1.1 101 ", 13) == 0 && strstr(head, WS_ACCEPT), "answer: %s", head);
    return fd;
}

/* One masked binary message (opcode 2). */
static void ws_send_bin(int fd, const uint8_t *p, size_t n)
{
    static const uint8_t mask[4] = { 0x12, 0x34, 0x56, 0x78 };
    uint8_t f[4096];
    size_t h = 0;
    cr_assert_lt(n, sizeof f - 8);
    f[h++] = 0x82;
    if (n < 126) {
        f[h++] = (uint8_t)(0x80 | n);
    } else {
        f[h++] = 0x80 | 126, f[h++] = (uint8_t)(n >> 8), f[h++] = (uint8_t)n;
    }
    memcpy(f + h, mask, 4), h += 4;
    for (size_t i = 0; i < n; i++)
        f[h + i] = (uint8_t)(p[i] ^ mask[i % 4]);
    cr_assert_eq(rdvt_tcp_send_raw(fd, f, h + n), 0);
}

static void ws_send_msg(int fd, const msg_t *m)
{
    uint8_t p[4096];
    size_t n = packed(m, p, sizeof p);
    ws_send_bin(fd, p, n);
}

/* The next non-empty binary message, echoing empty ones (heartbeats) as
 * the client does; NULL on timeout. */
static msg_t *ws_next(int fd, int ms, unsigned *heartbeats)
{
    uint64_t deadline = now_ms() + (uint64_t)ms;
    for (;;) {
        uint8_t h[4];
        int r = read_exact(fd, h, 2, deadline);
        if (r == -1)
            return NULL;
        cr_assert_eq(r, 0, "WebSocket closed by the server");
        cr_assert_eq(h[0], 0x82, "an unfragmented binary message, got %02x", h[0]);
        size_t len = h[1] & 0x7f;
        cr_assert_lt(len, 127);
        if (len == 126) {
            cr_assert_eq(read_exact(fd, h + 2, 2, deadline), 0);
            len = (size_t)h[2] << 8 | h[3];
        }
        if (len == 0) {
            if (heartbeats)
                (*heartbeats)++;
            ws_send_bin(fd, NULL, 0);
            continue;
        }
        uint8_t *p = malloc(len);
        cr_assert_eq(read_exact(fd, p, len, deadline), 0);
        msg_t *m = hbb__rendezvous_message__unpack(NULL, len, p);
        free(p);
        cr_assert_not_null(m);
        return m;
    }
}

static msg_t *ws_expect(int fd, int union_case, unsigned *heartbeats)
{
    msg_t *m = ws_next(fd, 3000, heartbeats);
    cr_assert_not_null(m, "no %s over WebSocket", rdv_msg_tag_name(union_case));
    cr_assert_eq((int)m->union_case, union_case, "got %s", rdv_msg_tag_name((int)m->union_case));
    return m;
}

Test(modern, R224_R228_websocket_device_and_online_query)
{
    if (!have_ws)
        cr_skip_test("websocket-transport is not built");
    device b;
    device_init(&b, "500000006");
    int w = ws_open("127.0.24.1");
    unsigned hb = 0;
    /* R141: nothing before the request (no KeyExchange on WebSocket) */
    cr_assert_null(ws_next(w, 300, &hb));
    ws_send_msg(w, register_pk_msg(b.id, b.uuid, b.pk));
    msg_t *r = ws_expect(w, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE, &hb);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    cr_assert_eq(r->register_pk_response->keep_alive, 4);
    rdvt_msg_free(r);
    /* heartbeats are empty binary messages; echoed, the device stays online */
    cr_assert_null(ws_next(w, 2 * ONLINE_MS, &hb));
    cr_assert_geq(hb, 4, "heartbeats over WebSocket (got %u)", hb);

    /* R228 over WebSocket: answered, the connection stays open */
    int q = ws_open("127.0.24.9");
    char *ids[] = { b.id, "nosuchid" };
    for (int i = 0; i < 2; i++) {
        ws_send_msg(q, online_msg(ids, 2));
        msg_t *o = ws_expect(q, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE, NULL);
        cr_assert_eq(o->online_response->states.len, 1);
        cr_assert_eq(o->online_response->states.data[0], 0x80);
        rdvt_msg_free(o);
    }
    close(q);

    /* a PunchHoleRequest over TCP reaches B over its WebSocket */
    phr_opts o = { .nat = HBB__NAT_TYPE__ASYMMETRIC, .force_relay = true, .v6 = V6A, .v6n = 18 };
    int a = ask_punch("127.0.24.2", b.id, &o);
    rdv_addr aa = local_addr(a);
    msg_t *ph = ws_expect(w, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE, &hb);
    expect_addr(ph->punch_hole->socket_addr, &aa);
    cr_assert(ph->punch_hole->force_relay);
    expect_bytes(ph->punch_hole->socket_addr_v6, V6A, 18);
    rdvt_msg_free(ph);
    close(a);
    cr_assert_eq(rdvt_stat(&srv, "registry.stream_peers"), 1);
    close(w);
}

/* ------------------------------------------------------------------ UDP and IPv6 punching (R226, R229) */
Test(modern, R226_R229_udp_punch_with_every_field)
{
    device b;
    device_init(&b, "500000007");
    udp_register(&b, "127.0.25.1");
    /* A: its UDP socket U (port learned from UDP TestNat or STUN) */
    int u = rdvt_udp("127.0.25.2");
    rdv_addr ua = local_addr(u);
    phr_opts o = { .nat = HBB__NAT_TYPE__ASYMMETRIC, .udp_port = rdv_addr_port(&ua), .upnp_port = 7000,
                   .v6 = V6A, .v6n = 18 };
    int a = ask_punch("127.0.25.2", b.id, &o);
    rdv_addr aa = local_addr(a);
    msg_t *ph = udp_from_server(b.udp, 3000, NULL);
    cr_assert_not_null(ph, "B got no PunchHole");
    cr_assert_eq(ph->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    const Hbb__PunchHole *p = ph->punch_hole;
    expect_addr(p->socket_addr, &aa);
    cr_assert_eq(p->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
    cr_assert_eq(p->udp_port, rdv_addr_port(&ua), "field 4");
    cr_assert_not(p->force_relay, "field 5");
    cr_assert_eq(p->upnp_port, 7000, "field 6");
    expect_bytes(p->socket_addr_v6, V6A, 18);
    cr_assert_null(p->control_permissions);

    /* B: PunchHoleSent by UDP from a new socket, three copies (§4.1) */
    int q = rdvt_udp("127.0.25.1");
    rdv_addr qa = local_addr(q);
    uint8_t d[512];
    size_t dn = packed(phs_msg(p->socket_addr, &b, 8000, V6B, 18), d, sizeof d);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(rdvt_udp_send_raw(q, srv.port, d, dn), 0);
        usleep(20 * 1000);
    }
    msg_t *r = expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 3000);
    const Hbb__PunchHoleResponse *pr = r->punch_hole_response;
    expect_addr(pr->socket_addr, &qa);
    cr_assert(pr->is_udp, "field 9");
    expect_signed(pr->pk, &b);
    cr_assert_str_eq(pr->relay_server, "relay.example:21117");
    cr_assert_eq(pr->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
    cr_assert_eq(pr->upnp_port, 8000, "field 10");
    expect_bytes(pr->socket_addr_v6, V6B, 18);
    cr_assert_eq(pr->failure, 0);
    rdvt_msg_free(r);
    /* nothing by UDP, the copies dropped */
    udp_expect_silence(q, 500);
    udp_expect_silence(u, 100);
    udp_expect_silence(b.udp, 100);
    expect_nothing_tcp(a, 300);
    cr_assert_eq(rdvt_stat(&srv, "punch-coordinator.udp_punch_hole_sent"), 1);

    /* a UDP PunchHoleSent with no requester waiting: nothing anywhere */
    cr_assert_eq(rdvt_udp_send_raw(q, srv.port, d, dn), 0);
    udp_expect_silence(q, 500);
    expect_nothing_tcp(a, 100);
    rdvt_msg_free(ph);
    close(a), close(q), close(u), close(b.udp);
}

Test(modern, R229_same_intranet_ipv6_fields)
{
    device b;
    device_init(&b, "500000008");
    udp_register(&b, "127.0.26.1");
    phr_opts o = { .nat = HBB__NAT_TYPE__ASYMMETRIC, .v6 = V6A, .v6n = 18 };
    int a = ask_punch("127.0.26.1", b.id, &o);
    msg_t *f = udp_from_server(b.udp, 3000, NULL);
    cr_assert(f && f->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR);
    expect_bytes(f->fetch_local_addr->socket_addr_v6, V6A, 18);
    /* B: LocalAddr on a new TCP connection (§4.2) */
    rdv_addr lan;
    cr_assert_eq(rdv_addr_parse(&lan, "192.168.7.7:40100", 0), 0);
    uint8_t la[RDV_ADDR_MANGLED_MAX];
    Hbb__LocalAddr l = HBB__LOCAL_ADDR__INIT;
    l.socket_addr = f->fetch_local_addr->socket_addr;
    l.local_addr.data = la, l.local_addr.len = rdv_addr_mangle(&lan, 3, la);
    l.relay_server = "relay.example", l.id = b.id, l.version = "1.4.9";
    l.socket_addr_v6.data = (uint8_t *)V6B, l.socket_addr_v6.len = 18;
    msg_t m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_LOCAL_ADDR;
    m.local_addr = &l;
    int bt = main_conn("127.0.26.1");
    cr_assert_eq(rdvt_tcp_send(bt, &m), 0);
    msg_t *r = expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 3000);
    cr_assert(r->punch_hole_response->is_local);
    expect_addr(r->punch_hole_response->socket_addr, &lan);
    expect_bytes(r->punch_hole_response->socket_addr_v6, V6B, 18);
    cr_assert_not(r->punch_hole_response->is_udp);
    expect_signed(r->punch_hole_response->pk, &b);
    rdvt_msg_free(r);
    rdvt_msg_free(f);
    close(bt), close(a), close(b.udp);
}

/* ------------------------------------------------------------------ R228, R227, R45 */
Test(modern, R228_online_request_on_the_main_tcp_port_keeps_the_connection)
{
    device d[3];
    device_init(&d[0], "500000010");
    device_init(&d[1], "500000011");
    device_init(&d[2], "500000012");
    udp_register(&d[0], "127.0.27.1");
    udp_register(&d[2], "127.0.27.3");
    char *ids[] = { d[0].id, d[1].id, d[2].id, "nosuchid" };
    int t = main_conn("127.0.27.9");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(online_states(t, ids, 4), 0xa0, "bits 0 and 2 (R116), asked again on one connection");
    expect_nothing_tcp(t, 300);
    close(t);
    for (int i = 0; i < 3; i++)
        if (d[i].udp >= 0)
            close(d[i].udp);
}

Test(modern, R227_udp_test_nat_never_amplifies)
{
    int u = rdvt_udp("127.0.28.1");
    rdv_addr ua = local_addr(u);
    /* a current client's bare request (3 bytes): any answer would be larger */
    const uint8_t bare[] = { 0xa2, 0x01, 0x00 };
    cr_assert_eq(rdvt_udp_send_raw(u, srv.port, bare, sizeof bare), 0);
    udp_expect_silence(u, 1000);
    cr_assert_eq(rdvt_stat(&srv, "nat-test.udp_test_nat_dropped"), 1);
    /* a request at least as large is answered with the source port */
    msg_t *r = udp_ask(u, test_nat_msg(0x7fffffff), 3000);
    cr_assert_not_null(r, "no UDP TestNatResponse");
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq(r->test_nat_response->port, rdv_addr_port(&ua));
    cr_assert_null(r->test_nat_response->cu);
    rdvt_msg_free(r);
    close(u);
}

Test(modern_slack, R227_udp_test_nat_with_slack_serves_current_clients)
{
    int u = rdvt_udp("127.0.28.2");
    rdv_addr ua = local_addr(u);
    const uint8_t bare[] = { 0xa2, 0x01, 0x00 };
    cr_assert_eq(rdvt_udp_send_raw(u, srv.port, bare, sizeof bare), 0);
    size_t len = 0;
    msg_t *r = udp_from_server(u, 3000, &len);
    cr_assert_not_null(r, "no UDP TestNatResponse");
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq(r->test_nat_response->port, rdv_addr_port(&ua));
    cr_assert_leq(len, sizeof bare + 4);
    rdvt_msg_free(r);
    udp_expect_silence(u, 300);
    close(u);
}

Test(modern, R45_R111_runtime_config_update_reaches_test_nat_cu)
{
    /* a loopback ConfigUpdate (§6.10), applied by the registry */
    int lo = rdvt_udp("127.0.0.1");
    Hbb__ConfigUpdate cu = HBB__CONFIG_UPDATE__INIT;
    char *list[] = { "10.20.30.40:21116" };
    cu.serial = 7, cu.rendezvous_servers = list, cu.n_rendezvous_servers = 1;
    msg_t m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_CONFIGURE_UPDATE;
    m.configure_update = &cu;
    uint8_t buf[256];
    size_t n = packed(&m, buf, sizeof buf);
    cr_assert_eq(rdvt_udp_send_raw(lo, srv.port, buf, n), 0);
    udp_expect_silence(lo, 300);
    close(lo);
    /* nat-test's TestNatResponse on the main port carries it (no restart) */
    int t = main_conn("127.0.29.1");
    cr_assert_eq(rdvt_tcp_send(t, test_nat_msg(0)), 0);
    msg_t *r = expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE, 3000);
    cr_assert_not_null(r->test_nat_response->cu, "the registry's runtime serial reaches nat-test");
    cr_assert_eq(r->test_nat_response->cu->serial, 7);
    cr_assert_eq(r->test_nat_response->cu->n_rendezvous_servers, 1);
    cr_assert_str_eq(r->test_nat_response->cu->rendezvous_servers[0], "10.20.30.40:21116");
    rdvt_msg_free(r);
    close(t);
    /* a client already at serial 7 gets none; the NAT port never (R112) */
    t = main_conn("127.0.29.1");
    cr_assert_eq(rdvt_tcp_send(t, test_nat_msg(7)), 0);
    r = expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE, 3000);
    cr_assert_null(r->test_nat_response->cu);
    rdvt_msg_free(r);
    close(t);
    t = rdvt_tcp("127.0.29.1", srv.port - 1);
    cr_assert_eq(rdvt_tcp_send(t, test_nat_msg(0)), 0);
    r = expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE, 3000);
    cr_assert_null(r->test_nat_response->cu);
    rdvt_msg_free(r);
    close(t);
}
