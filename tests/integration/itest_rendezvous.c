/* Integration: the real rdvd as a full rendezvous node (keys, storage-sqlite,
 * ip-blocker, registry, nat-test, punch-coordinator) driven like RustDesk
 * peers do (client-flows.md): a controlled device B registers over UDP, a
 * controller A asks for it over TCP, each from its own 127.x.y.z address.
 * Items of rendezvous-checklist.md are cited as R<n>. Every bad-input case
 * is followed by a liveness check, and every UDP reply is checked to be no
 * larger than the request it answers. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "rdclient.h"
#include "rdv/wire.h"

typedef Hbb__RendezvousMessage msg_t;

static rdvt_server srv;
static char K[64];     /* licence key = content of id_ed25519.pub */
static uint8_t KPK[32]; /* the server's signing public key */

#define CORE_CONF(listeners)                                                                          \
    "core: {\n"                                                                                       \
    "  modules = [ \"keys\", \"storage-sqlite\", \"ip-blocker\", \"registry\", \"nat-test\",\n"      \
    "              \"punch-coordinator\" ];\n"                                                        \
    "  module_path = \"@MODDIR@\";\n"                                                                 \
    "  listeners = ( " listeners " );\n"                                                              \
    "};\n"
#define MAIN_AND_NAT                                                                                  \
    "{ name = \"main\"; port = @PORT@; udp = true; tcp = true; },"                                   \
    " { name = \"nat\"; port = @NAT@; tcp = true; }"

/* A short online window so OFFLINE (R43) does not take 30 s. */
#define REGISTRY_CONF "registry: { online_ms = 3000; };\n"

static const char *const main_files[] = {
    "00-core.conf", CORE_CONF(MAIN_AND_NAT),
    "20-registry.conf", REGISTRY_CONF,
    NULL,
};

/* ------------------------------------------------------------------ helpers */
static void read_key(void)
{
    size_t bl, n = rdc_read_server_key(&srv, K, sizeof K, KPK, &bl);
    cr_assert_eq(n, 44, "public key file is 44 base64 characters (R160)");
    cr_assert_eq(bl, 32);
}

/* The harness's NAT port (main - 1) is odd, and on a busy machine most odd
 * ephemeral ports (32768-60999; Linux gives bound clients odd ones) can be
 * held by TIME_WAIT sockets of other test runs, so the bind fails. Move
 * this process's port counter below the ephemeral range first. */
static void ports_below_ephemeral(void)
{
    for (int i = 0; i < 5000; i++) {
        int p = rdvt_base_port();
        int next = p + 10 > 59990 ? 20000 : p + 10; /* what rdvt_prepare gets */
        if (next + 9 < 32768)
            return;
    }
}

static void start_with(const char *const *files)
{
    cr_assert_geq(sodium_init(), 0);
    ports_below_ephemeral();
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
    cr_assert_eq(rdvt_start(&srv), 0, "rdvd did not start");
    read_key();
}

static void setup(void) { start_with(main_files); }

static void teardown(void)
{
    int st = rdvt_stop(&srv);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "rdvd did not exit cleanly (status %d)", st);
}

static void tclose(int fd) { rdc_close_rst(fd); }

/* Send m by UDP and return the decoded reply (main port, no amplification).
 * Like a real client (client-flows.md §2.3): resend once when no answer
 * came within ms — a loaded 2-core CI machine can be slow, not lossy. */
static msg_t *udp_ask(int fd, const msg_t *m, int ms) { return rdc_udp_ask(fd, srv.port, m, ms, 2); }

/* A datagram the server pushed to this socket (PunchHole, ...), from the main port. */
static msg_t *udp_pushed(int fd, int ms) { return rdc_udp_from_server(fd, srv.port, ms, NULL); }

/* A controlled device: its UDP socket and its key pair. */
typedef rdc_device peer;

static void heartbeat(peer *b)
{
    msg_t *r = udp_ask(b->udp, rdc_register_peer(b->id), 3000);
    cr_assert_not_null(r, "no RegisterPeerResponse");
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER_RESPONSE);
    cr_assert_not(r->register_peer_response->request_pk, "registered peer asked for its key again");
    rdvt_msg_free(r);
}

/* client-flows.md: RegisterPeer -> request_pk -> RegisterPk -> OK -> RegisterPeer. */
static void reg(peer *b, const char *ip, const char *id)
{
    rdc_device_init(b, id);
    rdc_device_udp(b, ip);
    msg_t *r = udp_ask(b->udp, rdc_register_peer(id), 3000);
    cr_assert_not_null(r);
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER_RESPONSE);
    cr_assert(r->register_peer_response->request_pk, "unknown id: request_pk (R30)");
    rdvt_msg_free(r);
    r = udp_ask(b->udp, rdc_device_register_pk(b), 3000);
    cr_assert_not_null(r, "no RegisterPkResponse");
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    rdvt_msg_free(r);
    heartbeat(b); /* R34: now request_pk false and online */
}

static msg_t *phr_msg(const char *id, int nat, const char *licence)
{
    return rdc_punch_hole_request(id, nat, licence, "1.4.9");
}

/* A controller's TCP connection to the main port from ip. */
static int controller(const char *ip) { return rdc_connect(ip, srv.port); }

/* Controller A (from a_ip) asks for B by TCP; the push B gets by UDP. */
static msg_t *ask_for(peer *b, const char *a_ip, int *a_fd)
{
    *a_fd = controller(a_ip);
    cr_assert_eq(rdvt_tcp_send(*a_fd, phr_msg(b->id, 1, K)), 0);
    msg_t *m = udp_pushed(b->udp, 3000);
    cr_assert_not_null(m, "B got no push");
    return m;
}

/* One frame with exactly these payload bytes. */
static void expect_tcp_bytes(int fd, const uint8_t *want, size_t n) { rdc_expect_tcp_bytes(fd, want, n, 3000); }

/* R69/R167: pk opens with the server key to IdPk{id, the pk B registered}. */
static void expect_signed(ProtobufCBinaryData pk, const peer *b) { rdc_expect_signed(pk, KPK, b); }

static const uint8_t TEST_NAT[] = { 0xa2, 0x01, 0x00 };

/* Liveness: UDP registration and a TCP NAT test on the main port answer. */
static void alive(void)
{
    cr_assert(rdvt_alive(&srv), "rdvd died");
    int u = rdvt_udp("127.0.0.9");
    msg_t *r = udp_ask(u, rdc_register_peer("alive0001"), 3000);
    cr_assert_not_null(r, "UDP no longer answered");
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER_RESPONSE);
    rdvt_msg_free(r);
    close(u);
    int t = controller("127.0.0.9");
    cr_assert_eq(rdvt_tcp_send_frame(t, TEST_NAT, sizeof TEST_NAT), 0);
    r = rdc_expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE, 3000);
    cr_assert_eq(r->test_nat_response->port, rdc_local_port(t));
    rdvt_msg_free(r);
    tclose(t);
}

TestSuite(rendezvous, .init = setup, .fini = teardown, .timeout = 120);

/* ------------------------------------------------------------------ registration, online, NAT test */
Test(rendezvous, R34_R116_registration_and_online_query)
{
    peer b, c;
    reg(&b, "127.0.1.1", "400000001");
    reg(&c, "127.0.1.2", "400000002");
    char *ids[] = { b.id, "nosuchid", c.id, "" };
    msg_t *m = rdc_online_request("111111111", ids, 4);
    int t = rdvt_tcp("127.0.1.9", srv.port - 1);
    cr_assert_geq(t, 0);
    cr_assert_eq(rdvt_tcp_send(t, m), 0);
    const uint8_t want[] = { 0xc2, 0x01, 0x03, 0x0a, 0x01, 0xa0 }; /* bits 0 and 2 */
    expect_tcp_bytes(t, want, sizeof want);
    rdc_expect_closed_silently(t, 3000); /* §4.3: one request per connection */
    tclose(t);
    /* the wire.md §2.3 example: 10 peers, 0, 3 and 9 online -> 90 40 */
    peer more[3];
    reg(&more[0], "127.0.1.3", "410000000");
    reg(&more[1], "127.0.1.4", "410000003");
    reg(&more[2], "127.0.1.5", "410000009");
    char buf[10][16], *ten[10];
    for (int i = 0; i < 10; i++) {
        snprintf(buf[i], sizeof buf[i], "41000000%d", i);
        ten[i] = buf[i];
    }
    m = rdc_online_request("111111111", ten, 10);
    t = rdvt_tcp("127.0.1.9", srv.port - 1);
    cr_assert_eq(rdvt_tcp_send(t, m), 0);
    const uint8_t want10[] = { 0xc2, 0x01, 0x04, 0x0a, 0x02, 0x90, 0x40 };
    expect_tcp_bytes(t, want10, sizeof want10);
    tclose(t);
    /* R228 (EXT, on by default): also answered on the main port, which stays
     * open. R119 (OSS: closed silently) is nat-test.online_on_main = false,
     * covered by the nat-test unit suite. */
    t = controller("127.0.1.9");
    cr_assert_eq(rdvt_tcp_send(t, m), 0);
    expect_tcp_bytes(t, want10, sizeof want10);
    tclose(t);
    close(b.udp), close(c.udp);
    for (int i = 0; i < 3; i++)
        close(more[i].udp);
    alive();
}

/* A TCP socket bound to ip:port (SO_REUSEADDR), connected to dport. */
static int tcp_from_port(const char *ip, uint16_t port, int dport)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, ip, &a.sin_addr);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0, "bind %s:%u: %s", ip, port, strerror(errno));
    struct sockaddr_in d = { .sin_family = AF_INET, .sin_port = htons((uint16_t)dport) };
    inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&d, sizeof d), 0);
    return fd;
}

Test(rendezvous, R110_R112_nat_test_on_both_ports_from_one_local_port)
{
    int t = controller("127.0.1.20");
    uint16_t p = rdc_local_port(t);
    cr_assert_eq(rdvt_tcp_send_frame(t, TEST_NAT, sizeof TEST_NAT), 0);
    msg_t *r = rdc_expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE, 3000);
    cr_assert_eq(r->test_nat_response->port, p);
    cr_assert_null(r->test_nat_response->cu, "serial 0: no cu");
    rdvt_msg_free(r);
    rdc_expect_closed_silently(t, 3000);
    tclose(t);
    t = tcp_from_port("127.0.1.20", p, srv.port - 1);
    cr_assert_eq(rdvt_tcp_send_frame(t, TEST_NAT, sizeof TEST_NAT), 0);
    r = rdc_expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE, 3000);
    cr_assert_eq(r->test_nat_response->port, p, "same port on both: not symmetric");
    rdvt_msg_free(r);
    rdc_expect_closed_silently(t, 3000);
    tclose(t);
    /* R113: two requests in one write on the NAT port: one answer */
    t = rdvt_tcp("127.0.1.20", srv.port - 1);
    const uint8_t two[] = { 0x0c, 0xa2, 0x01, 0x00, 0x0c, 0xa2, 0x01, 0x00 };
    cr_assert_eq(rdvt_tcp_send_raw(t, two, sizeof two), 0);
    rdvt_msg_free(rdc_expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE, 3000));
    rdc_expect_closed_silently(t, 3000);
    tclose(t);
    alive();
}

/* ------------------------------------------------------------------ punch coordination */
Test(rendezvous, R60_R61_R62_R43_failures)
{
    const uint8_t not_exist[] = { 0x5a, 0x00 }, mismatch[] = { 0x5a, 0x02, 0x18, 0x03 },
                  offline[] = { 0x5a, 0x02, 0x18, 0x02 };
    int a = controller("127.0.2.1");
    cr_assert_eq(rdvt_tcp_send(a, phr_msg("nosuchid", 1, K)), 0);
    expect_tcp_bytes(a, not_exist, sizeof not_exist);
    rdc_expect_nothing_tcp(a, 300); /* R60: stays open */
    tclose(a);
    a = controller("127.0.2.1");
    cr_assert_eq(rdvt_tcp_send(a, phr_msg("", 1, K)), 0);
    expect_tcp_bytes(a, not_exist, sizeof not_exist);
    tclose(a);
    peer b;
    reg(&b, "127.0.2.2", "400000011");
    const char *bad_keys[] = { "wrong", "", "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw=" };
    for (size_t i = 0; i < 3; i++) {
        a = controller("127.0.2.1");
        cr_assert_eq(rdvt_tcp_send(a, phr_msg(b.id, 1, bad_keys[i])), 0);
        expect_tcp_bytes(a, mismatch, sizeof mismatch);
        tclose(a);
    }
    rdc_udp_expect_silence(b.udp, 300); /* B was never bothered */
    /* R43 with online_ms = 3 s: no heartbeat for 3.5 s -> OFFLINE */
    usleep(3500 * 1000);
    a = controller("127.0.2.1");
    cr_assert_eq(rdvt_tcp_send(a, phr_msg(b.id, 1, K)), 0);
    expect_tcp_bytes(a, offline, sizeof offline);
    tclose(a);
    rdc_udp_expect_silence(b.udp, 300);
    close(b.udp);
    alive();
}

Test(rendezvous, R64_R69_full_punch_flow_with_signed_pk)
{
    peer b;
    reg(&b, "127.0.3.2", "400000021");
    int a = controller("127.0.3.1");
    rdv_addr a_addr = rdc_local_addr(a);
    cr_assert_eq(rdvt_tcp_send(a, phr_msg(b.id, HBB__NAT_TYPE__ASYMMETRIC, K)), 0);
    msg_t *ph = udp_pushed(b.udp, 3000);
    cr_assert_not_null(ph, "B got no PunchHole");
    cr_assert_eq(ph->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    rdc_expect_addr(ph->punch_hole->socket_addr, &a_addr);
    cr_assert_str_eq(ph->punch_hole->relay_server, "");
    cr_assert_eq(ph->punch_hole->nat_type, 1);
    rdc_expect_nothing_tcp(a, 300); /* nothing for A yet */
    /* B: new TCP connection, PunchHoleSent echoing A's address */
    int bt = controller(b.ip);
    rdv_addr b_addr = rdc_local_addr(bt);
    msg_t *m = rdc_punch_hole_sent(ph->punch_hole->socket_addr, b.id, "relay.test:21117", HBB__NAT_TYPE__ASYMMETRIC,
                                   "1.4.9");
    cr_assert_eq(rdvt_tcp_send(bt, m), 0);
    rdc_expect_closed_silently(bt, 3000); /* B's connection: closed, nothing sent (R152) */
    tclose(bt);
    msg_t *r = rdc_expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 3000);
    const Hbb__PunchHoleResponse *resp = r->punch_hole_response;
    rdc_expect_addr(resp->socket_addr, &b_addr);
    cr_assert_str_eq(resp->relay_server, "relay.test:21117");
    cr_assert_eq(resp->union_case, HBB__PUNCH_HOLE_RESPONSE__UNION_NAT_TYPE);
    cr_assert_eq(resp->nat_type, 1);
    cr_assert_eq(resp->failure, 0);
    expect_signed(resp->pk, &b);
    rdvt_msg_free(r);
    /* R76: the same answer again reaches nobody */
    bt = controller(b.ip);
    cr_assert_eq(rdvt_tcp_send(bt, m), 0);
    rdc_expect_closed_silently(bt, 3000);
    tclose(bt);
    rdc_expect_nothing_tcp(a, 300);
    /* R78-style repeat on the spent connection: forwarded again, never answered */
    cr_assert_eq(rdvt_tcp_send(a, phr_msg(b.id, 1, K)), 0);
    msg_t *ph2 = udp_pushed(b.udp, 3000);
    cr_assert_not_null(ph2);
    rdvt_msg_free(ph2);
    rdvt_msg_free(ph);
    tclose(a);
    close(b.udp);
    alive();
}

Test(rendezvous, R67_R74_same_intranet_flow)
{
    peer b;
    reg(&b, "127.0.4.2", "400000031");
    int a = controller("127.0.4.2"); /* same IP as B */
    rdv_addr a_addr = rdc_local_addr(a);
    cr_assert_eq(rdvt_tcp_send(a, phr_msg(b.id, 1, K)), 0);
    msg_t *f = udp_pushed(b.udp, 3000);
    cr_assert_not_null(f);
    cr_assert_eq(f->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR, "same IP: FetchLocalAddr");
    rdc_expect_addr(f->fetch_local_addr->socket_addr, &a_addr);
    rdv_addr lan;
    cr_assert_eq(rdv_addr_parse(&lan, "192.168.7.8:21118", 0), 0);
    uint8_t la[RDV_ADDR_MANGLED_MAX];
    size_t lan_n = rdv_addr_mangle(&lan, 0x12345678, la);
    Hbb__LocalAddr l = HBB__LOCAL_ADDR__INIT;
    l.socket_addr = f->fetch_local_addr->socket_addr;
    l.local_addr.data = la, l.local_addr.len = lan_n;
    l.relay_server = "r";
    l.id = b.id;
    l.version = "1.4.9";
    msg_t m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_LOCAL_ADDR;
    m.local_addr = &l;
    int bt = controller(b.ip);
    cr_assert_eq(rdvt_tcp_send(bt, &m), 0);
    rdc_expect_closed_silently(bt, 3000);
    tclose(bt);
    msg_t *r = rdc_expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 3000);
    cr_assert_eq(r->punch_hole_response->socket_addr.len, lan_n);
    cr_assert_arr_eq(r->punch_hole_response->socket_addr.data, la, lan_n, "LAN address copied verbatim");
    cr_assert_eq(r->punch_hole_response->union_case, HBB__PUNCH_HOLE_RESPONSE__UNION_IS_LOCAL);
    cr_assert(r->punch_hole_response->is_local);
    cr_assert_str_eq(r->punch_hole_response->relay_server, "r");
    expect_signed(r->punch_hole_response->pk, &b);
    rdvt_msg_free(r);
    rdvt_msg_free(f);
    tclose(a);
    close(b.udp);
    alive();
}

Test(rendezvous, R90_R91_relay_response_from_b)
{
    peer b;
    reg(&b, "127.0.5.2", "400000041");
    for (int variant = 0; variant < 2; variant++) {
        heartbeat(&b);
        int a = controller("127.0.5.1");
        cr_assert_eq(rdvt_tcp_send(a, phr_msg(b.id, HBB__NAT_TYPE__SYMMETRIC, K)), 0);
        msg_t *ph = udp_pushed(b.udp, 3000);
        cr_assert_not_null(ph);
        cr_assert_eq(ph->punch_hole->nat_type, 2);
        msg_t *m = rdc_relay_response(ph->punch_hole->socket_addr, "U1", "relay.test:21117", b.id,
                                      variant == 0 ? "1.4.9" : "");
        int bt = controller(b.ip);
        cr_assert_eq(rdvt_tcp_send(bt, m), 0);
        rdc_expect_closed_silently(bt, 3000);
        tclose(bt);
        msg_t *r = rdc_expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE, 3000);
        const Hbb__RelayResponse *got = r->relay_response;
        cr_assert_eq(got->socket_addr.len, 0);
        cr_assert_str_eq(got->uuid, "U1");
        cr_assert_str_eq(got->relay_server, "relay.test:21117");
        cr_assert_eq(got->union_case, HBB__RELAY_RESPONSE__UNION_PK, "id replaced by pk");
        if (variant == 0)
            expect_signed(got->pk, &b);
        else
            cr_assert_eq(got->pk.len, 0, "R91: explicit empty pk");
        rdvt_msg_free(r);
        rdvt_msg_free(ph);
        tclose(a);
    }
    close(b.udp);
    alive();
}

Test(rendezvous, R94_R95_request_relay_from_a)
{
    peer b;
    reg(&b, "127.0.6.2", "400000051");
    int a = controller("127.0.6.1");
    rdv_addr a_addr = rdc_local_addr(a);
    Hbb__RequestRelay rq = HBB__REQUEST_RELAY__INIT;
    rq.id = b.id;
    rq.uuid = "U2";
    rq.relay_server = "relay.test:21117";
    rq.secure = true;
    rq.licence_key = "anything";
    rq.token = "T";
    rq.conn_type = HBB__CONN_TYPE__FILE_TRANSFER;
    msg_t m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY;
    m.request_relay = &rq;
    cr_assert_eq(rdvt_tcp_send(a, &m), 0);
    msg_t *f = udp_pushed(b.udp, 3000);
    cr_assert_not_null(f, "B got no RequestRelay");
    cr_assert_eq(f->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY);
    const Hbb__RequestRelay *fr = f->request_relay;
    cr_assert_str_eq(fr->id, b.id);
    cr_assert_str_eq(fr->uuid, "U2");
    cr_assert_str_eq(fr->relay_server, "relay.test:21117");
    cr_assert(fr->secure);
    cr_assert_str_eq(fr->licence_key, "anything");
    cr_assert_str_eq(fr->token, "T");
    cr_assert_eq(fr->conn_type, HBB__CONN_TYPE__FILE_TRANSFER);
    rdc_expect_addr(fr->socket_addr, &a_addr);
    rdc_expect_nothing_tcp(a, 300);
    int bt = controller(b.ip);
    cr_assert_eq(rdvt_tcp_send(bt, rdc_relay_response(fr->socket_addr, "", "", NULL, "1.4.9")), 0);
    tclose(bt);
    msg_t *r = rdc_expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE, 3000);
    cr_assert_eq(r->relay_response->socket_addr.len, 0);
    cr_assert_str_eq(r->relay_response->version, "1.4.9");
    cr_assert_eq(r->relay_response->union_case, HBB__RELAY_RESPONSE__UNION__NOT_SET);
    rdvt_msg_free(r);
    rdvt_msg_free(f);
    tclose(a);
    /* R96: unknown id: nothing anywhere, the connection stays */
    a = controller("127.0.6.1");
    rq.id = "nosuchid";
    cr_assert_eq(rdvt_tcp_send(a, &m), 0);
    rdc_expect_nothing_tcp(a, 500);
    rdc_udp_expect_silence(b.udp, 100);
    tclose(a);
    close(b.udp);
    alive();
}

/* ------------------------------------------------------------------ bad input (section A) */
Test(rendezvous, R7_R11_R12_R13_bad_frames_close)
{
    const uint8_t oversize[] = { 0xff, 0xff, 0xff, 0xff };
    const uint8_t garbage[] = { 0x0c, 0xff, 0xff, 0xff };
    const uint8_t empty[] = { 0x00 };
    const uint8_t unknown[] = { 0x0c, 0x9a, 0x06, 0x00 };
    const struct { const uint8_t *p; size_t n; } cases[] = {
        { oversize, sizeof oversize }, { garbage, sizeof garbage }, { empty, sizeof empty }, { unknown, sizeof unknown },
    };
    for (size_t i = 0; i < 4; i++) {
        int ports[] = { srv.port, srv.port - 1 };
        for (int k = 0; k < 2; k++) {
            int t = rdvt_tcp("127.0.7.1", ports[k]);
            cr_assert_eq(rdvt_tcp_send_raw(t, cases[i].p, cases[i].n), 0);
            rdc_expect_closed_silently(t, 3000);
            tclose(t);
        }
        alive();
    }
}

Test(rendezvous, R14_R15_R16_R18_udp_garbage_is_ignored)
{
    int u = rdvt_udp("127.0.7.2");
    const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff };
    const uint8_t unknown[] = { 0x9a, 0x06, 0x00 };
    const uint8_t bad_utf8[] = { 0x32, 0x08, 0x0a, 0x06, 0xff, 0xfe, 0x61, 0x62, 0x63, 0x64 };
    cr_assert_eq(rdvt_udp_send_raw(u, srv.port, garbage, sizeof garbage), 0);
    cr_assert_eq(rdvt_udp_send_raw(u, srv.port, "", 0), 0);
    cr_assert_eq(rdvt_udp_send_raw(u, srv.port, unknown, sizeof unknown), 0);
    cr_assert_eq(rdvt_udp_send_raw(u, srv.port, bad_utf8, sizeof bad_utf8), 0);
    rdc_udp_expect_silence(u, 1000);
    close(u);
    alive();
}

Test(rendezvous, R17_deep_nesting)
{
    size_t n = 60000;
    uint8_t *d = malloc(n);
    memset(d, 0x0b, n / 2);
    memset(d + n / 2, 0x0c, n / 2);
    int u = rdvt_udp("127.0.7.3");
    cr_assert_eq(rdvt_udp_send_raw(u, srv.port, d, n), 0);
    rdc_udp_expect_silence(u, 1000);
    close(u);
    free(d);
    n = 600000;
    d = malloc(n);
    memset(d, 0x0b, n / 2);
    memset(d + n / 2, 0x0c, n / 2);
    int t = controller("127.0.7.3");
    rdvt_tcp_send_frame(t, d, n); /* the server may close before it has all */
    cr_assert(rdvt_tcp_closed(t, 5000));
    tclose(t);
    free(d);
    alive();
}

Test(rendezvous, R19_server_to_client_types_are_not_answered)
{
    const int tags[] = { HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER_RESPONSE, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE,
                         HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR,
                         HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE,
                         HBB__RENDEZVOUS_MESSAGE__UNION_PEER_DISCOVERY };
    int u = rdvt_udp("127.0.7.4");
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        /* field <tag>, wire type 2, empty: the varint key then 00 */
        uint8_t b[4];
        unsigned key = (unsigned)tags[i] << 3 | 2;
        size_t n = 0;
        if (key >= 0x80) {
            b[n++] = (uint8_t)(key | 0x80);
            b[n++] = (uint8_t)(key >> 7);
        } else {
            b[n++] = (uint8_t)key;
        }
        b[n++] = 0x00;
        cr_assert_eq(rdvt_udp_send_raw(u, srv.port, b, n), 0);
        int t = controller("127.0.7.4");
        cr_assert_eq(rdvt_tcp_send_frame(t, b, n), 0);
        rdc_expect_closed_silently(t, 3000);
        tclose(t);
    }
    rdc_udp_expect_silence(u, 1000);
    close(u);
    alive();
}

Test(rendezvous, R20_R75_R77_malformed_or_stray_answers)
{
    peer b;
    reg(&b, "127.0.7.6", "400000061");
    int a;
    msg_t *ph = ask_for(&b, "127.0.7.5", &a);
    uint8_t junk[18];
    memset(junk, 0xff, sizeof junk);
    size_t lens[] = { 17, 0, 18, 16 };
    for (size_t i = 0; i < 4; i++) {
        msg_t *m = rdc_punch_hole_sent((ProtobufCBinaryData){ lens[i], junk }, b.id, "", 0, "1.4.9");
        int bt = controller(b.ip);
        cr_assert_eq(rdvt_tcp_send(bt, m), 0);
        rdc_expect_closed_silently(bt, 3000);
        tclose(bt);
    }
    rdc_expect_nothing_tcp(a, 300);
    /* R77: A gone, then B answers: nothing, no crash */
    tclose(a);
    usleep(100 * 1000);
    msg_t *m = rdc_punch_hole_sent(ph->punch_hole->socket_addr, b.id, "", 0, "");
    int bt = controller(b.ip);
    cr_assert_eq(rdvt_tcp_send(bt, m), 0);
    rdc_expect_closed_silently(bt, 3000);
    tclose(bt);
    rdvt_msg_free(ph);
    close(b.udp);
    alive();
}

Test(rendezvous, R21_reset_mid_frame)
{
    int t = controller("127.0.7.7");
    const uint8_t part[] = { 0x91, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }; /* declares 100 bytes */
    cr_assert_eq(rdvt_tcp_send_raw(t, part, sizeof part), 0);
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(t); /* RST */
    alive();
}

Test(rendezvous, R5_coalesced_requests_one_answer)
{
    uint8_t one[128];
    size_t n = rdc_pack(phr_msg("nosuchid", 1, K), one, sizeof one);
    uint8_t two[300];
    size_t hl = rdv_frame_header(n, two);
    memcpy(two + hl, one, n);
    memcpy(two + hl + n, two, hl + n);
    int a = controller("127.0.7.8");
    cr_assert_eq(rdvt_tcp_send_raw(a, two, 2 * (hl + n)), 0);
    const uint8_t not_exist[] = { 0x5a, 0x00 };
    expect_tcp_bytes(a, not_exist, sizeof not_exist);
    rdc_expect_nothing_tcp(a, 2000);
    tclose(a);
    alive();
}

Test(rendezvous, R79_test_nat_after_parking)
{
    int a = controller("127.0.7.9");
    cr_assert_eq(rdvt_tcp_send(a, phr_msg("nosuchid", 1, K)), 0);
    const uint8_t not_exist[] = { 0x5a, 0x00 };
    expect_tcp_bytes(a, not_exist, sizeof not_exist);
    cr_assert_eq(rdvt_tcp_send_frame(a, TEST_NAT, sizeof TEST_NAT), 0);
    rdc_expect_closed_silently(a, 3000);
    tclose(a);
    alive();
}

Test(rendezvous, R80_R81_udp_coordination_messages_are_ignored)
{
    peer b;
    reg(&b, "127.0.8.2", "400000071");
    int a;
    msg_t *ph = ask_for(&b, "127.0.8.1", &a);
    /* R80: PunchHoleRequest by UDP */
    int u = rdvt_udp("127.0.8.1");
    cr_assert_eq(rdvt_udp_send(u, srv.port, phr_msg(b.id, 1, K)), 0);
    /* R81: PunchHoleSent / LocalAddr by UDP, one naming a listener of ours */
    int victim = rdvt_udp("127.0.8.3");
    rdv_addr va = rdc_local_addr(victim);
    uint8_t vm[RDV_ADDR_MANGLED_MAX];
    size_t vn = rdv_addr_mangle(&va, 7, vm);
    msg_t *m = rdc_punch_hole_sent(ph->punch_hole->socket_addr, b.id, "", 0, "1.4.9");
    cr_assert_eq(rdvt_udp_send(b.udp, srv.port, m), 0);
    m = rdc_punch_hole_sent((ProtobufCBinaryData){ vn, vm }, b.id, "", 0, "1.4.9");
    cr_assert_eq(rdvt_udp_send(b.udp, srv.port, m), 0);
    Hbb__LocalAddr l = HBB__LOCAL_ADDR__INIT;
    l.socket_addr = ph->punch_hole->socket_addr;
    l.local_addr = ph->punch_hole->socket_addr;
    l.id = b.id;
    msg_t m2 = HBB__RENDEZVOUS_MESSAGE__INIT;
    m2.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_LOCAL_ADDR;
    m2.local_addr = &l;
    cr_assert_eq(rdvt_udp_send(b.udp, srv.port, &m2), 0);
    rdc_udp_expect_silence(u, 1000);
    rdc_udp_expect_silence(victim, 100);
    rdc_udp_expect_silence(b.udp, 100);
    rdc_expect_nothing_tcp(a, 300);
    rdvt_msg_free(ph);
    close(u), close(victim), tclose(a), close(b.udp);
    alive();
}

Test(rendezvous, R114_nat_port_other_messages_close)
{
    int t = rdvt_tcp("127.0.8.5", srv.port - 1);
    cr_assert_eq(rdvt_tcp_send(t, phr_msg("nosuchid", 1, K)), 0);
    rdc_expect_closed_silently(t, 3000);
    tclose(t);
    t = rdvt_tcp("127.0.8.5", srv.port - 1);
    cr_assert_eq(rdvt_tcp_send(t, rdc_register_peer("123456789")), 0);
    rdc_expect_closed_silently(t, 3000);
    tclose(t);
    alive();
}

/* ------------------------------------------------------------------ admin (§10) through rdvd's console */
Test(rendezvous, R83_R170_R172_R175_upstream_commands)
{
    char *h = rdvt_admin(&srv, "h");
    cr_assert_str_eq(h, "relay-servers(rs) <separated by ,>\nreload-geo(rg)\nip-blocker(ib) [<ip>|<number>] [-]\n"
                        "ip-changes(ic) [<id>|<number>] [-]\npunch-requests(pr) [<number>] [-]\n"
                        "always-use-relay(aur)\ntest-geo(tg) <ip1> <ip2>\n");
    free(h);
    char *o = rdvt_admin(&srv, "aur");
    cr_assert_str_eq(o, "ALWAYS_USE_RELAY: false\n");
    free(o);
    free(rdvt_admin(&srv, "aur Y"));
    o = rdvt_admin(&srv, "aur");
    cr_assert_str_eq(o, "ALWAYS_USE_RELAY: true\n");
    free(o);
    peer b;
    reg(&b, "127.0.9.2", "400000081");
    int a;
    msg_t *ph = ask_for(&b, "127.0.9.1", &a);
    cr_assert_eq(ph->punch_hole->nat_type, 2, "R66 via aur");
    rdvt_msg_free(ph);
    tclose(a);
    free(rdvt_admin(&srv, "aur n"));
    o = rdvt_admin(&srv, "tg 1.1.1.1");
    cr_assert_str_eq(o, "\"\"");
    free(o);
    o = rdvt_admin(&srv, "pr");
    cr_assert_not_null(strstr(o, "Z 127.0.9.1 -> 400000081@127.0.9.2\n"), "punch log: %s", o);
    cr_assert_eq(o[4], '-');
    cr_assert_eq(o[10], 'T');
    free(o);
    free(rdvt_admin(&srv, "pr -"));
    o = rdvt_admin(&srv, "pr");
    cr_assert_str_eq(o, "");
    free(o);
    cr_assert_geq(rdvt_stat(&srv, "punch-coordinator.punch_hole"), 1);
    close(b.udp);
    alive();
}

/* ------------------------------------------------------------------ relays and LAN mask */
/* R1 listens (opened by the test), R2 does not. The mask covers 127.0.10.0/24. */
static int relay_listener = -1;

static void relays_setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    ports_below_ephemeral();
    cr_assert_eq(rdvt_prepare(&srv, main_files), 0);
    int r1 = srv.port + 6, r2 = srv.port + 7;
    relay_listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(relay_listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)r1) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(bind(relay_listener, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(relay_listener, 512), 0);
    char path[400], text[512];
    snprintf(path, sizeof path, "%s/conf.d/30-punch-coordinator.conf", srv.dir);
    snprintf(text, sizeof text,
             "punch-coordinator: {\n  relay_servers = [ \"127.0.0.1:%d\", \"127.0.0.1:%d\" ];\n"
             "  relay_check_ms = 300;\n  mask = \"127.0.10.0/24\";\n  local_ip = \"10.9.9.9\";\n};\n",
             r1, r2);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(rdvt_start(&srv), 0, "rdvd did not start");
    read_key();
}

static void relays_teardown(void)
{
    teardown();
    if (relay_listener >= 0)
        close(relay_listener);
    relay_listener = -1;
}

TestSuite(relays, .init = relays_setup, .fini = relays_teardown, .timeout = 120);

static msg_t *punch_from(const char *a_ip, peer *b, int *a_fd)
{
    heartbeat(b);
    return ask_for(b, a_ip, a_fd);
}

Test(relays, R99_R103_health_check_and_lan_mask)
{
    char r1[32];
    snprintf(r1, sizeof r1, "127.0.0.1:%d", srv.port + 6);
    /* within a few checks only the listening relay is handed out */
    bool only_r1 = false;
    for (int i = 0; i < 50 && !only_r1; i++) {
        char *rs = rdvt_admin(&srv, "rs");
        char want[40];
        snprintf(want, sizeof want, "%s\n", r1);
        only_r1 = rs && strcmp(rs, want) == 0;
        free(rs);
        usleep(100 * 1000);
    }
    cr_assert(only_r1, "the unreachable relay is still active");
    peer b, c;
    reg(&b, "127.0.11.2", "400000091"); /* outside the mask */
    reg(&c, "127.0.10.2", "400000092"); /* inside */
    int a;
    for (int i = 0; i < 4; i++) {
        msg_t *m = punch_from("127.0.11.1", &b, &a);
        cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
        cr_assert_str_eq(m->punch_hole->relay_server, r1);
        cr_assert_eq(m->punch_hole->nat_type, 1, "both outside: kept");
        rdvt_msg_free(m);
        tclose(a);
    }
    /* R103: LAN peer, outside requester -> SYMMETRIC and the local relay */
    msg_t *m = punch_from("127.0.11.1", &c, &a);
    cr_assert_eq(m->punch_hole->nat_type, 2);
    cr_assert_str_eq(m->punch_hole->relay_server, "10.9.9.9");
    rdvt_msg_free(m);
    tclose(a);
    /* LAN requester, outside peer -> SYMMETRIC and the public relay */
    m = punch_from("127.0.10.1", &b, &a);
    cr_assert_eq(m->punch_hole->nat_type, 2);
    cr_assert_str_eq(m->punch_hole->relay_server, r1);
    rdvt_msg_free(m);
    tclose(a);
    /* both inside, different IPs -> same intranet */
    m = punch_from("127.0.10.1", &c, &a);
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR);
    rdvt_msg_free(m);
    tclose(a);
    close(b.udp), close(c.udp);
    alive();
}

Test(relays, R171_rs_replaces_the_list)
{
    free(rdvt_admin(&srv, "rs 127.0.0.1:31005"));
    char *rs = rdvt_admin(&srv, "rs");
    cr_assert_str_eq(rs, "127.0.0.1:31005\n");
    free(rs);
    char *tg = rdvt_admin(&srv, "tg 1.1.1.1");
    cr_assert_str_eq(tg, "\"127.0.0.1:31005\"");
    free(tg);
    alive();
}

/* ------------------------------------------------------------------ compat console */
static const char *const console_files[] = {
    "00-core.conf", CORE_CONF("{ name = \"main\"; port = @PORT@; udp = true; tcp = true; }"),
    "25-nat-test.conf", "nat-test: { compat_console = true; };\n",
    NULL,
};

static void console_setup(void) { start_with(console_files); }
TestSuite(console, .init = console_setup, .fini = teardown, .timeout = 120);

/* One console exchange on the NAT port: send, read everything until close. */
static char *console(const char *ip, const void *text, size_t n)
{
    int t = rdvt_tcp(ip, srv.port - 1);
    cr_assert_geq(t, 0);
    if (n)
        cr_assert_eq(rdvt_tcp_send_raw(t, text, n), 0);
    static char out[4096];
    size_t len = 0;
    for (;;) {
        struct pollfd p = { .fd = t, .events = POLLIN };
        cr_assert_eq(poll(&p, 1, 5000), 1, "console did not close");
        ssize_t r = recv(t, out + len, sizeof out - 1 - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    out[len] = '\0';
    tclose(t);
    return out;
}

Test(console, R170_R176_R177_R178_R180_loopback_console)
{
    cr_assert_str_eq(console("127.0.0.1", "h", 1),
                     "relay-servers(rs) <separated by ,>\nreload-geo(rg)\nip-blocker(ib) [<ip>|<number>] [-]\n"
                     "ip-changes(ic) [<id>|<number>] [-]\npunch-requests(pr) [<number>] [-]\n"
                     "always-use-relay(aur)\ntest-geo(tg) <ip1> <ip2>\n");
    cr_assert_str_eq(console("127.0.0.2", "aur\n", 4), "ALWAYS_USE_RELAY: false\n");
    cr_assert_str_eq(console("127.0.0.3", "always-use-relay Y", 18), "");
    cr_assert_str_eq(console("127.0.0.3", "aur", 3), "ALWAYS_USE_RELAY: true\n");
    cr_assert_str_eq(console("127.0.0.1", "rg", 2), "");
    cr_assert_str_eq(console("127.0.0.1", "foo", 3), "");
    cr_assert_str_eq(console("127.0.0.1", "stats", 5), "", "rdvd commands stay on the Unix socket");
    cr_assert_str_eq(console("127.0.0.1", "  \n", 3), "");
    const uint8_t bad[] = { 0xff, 0xfe };
    cr_assert_str_eq(console("127.0.0.1", bad, sizeof bad), "");
    cr_assert_str_eq(console("127.0.0.1", "", 0), "", "R177: closed after ~1 s");
    cr_assert_str_eq(console("127.0.0.1", "tg 1.1.1.1", 10), "\"\"");
    alive();
}
