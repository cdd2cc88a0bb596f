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
#include "rdclient.h"
#include "rdv/wire.h"

typedef Hbb__RendezvousMessage msg_t;

static rdvt_server srv;
static char K[64];      /* licence key = id_ed25519.pub */
static uint8_t KPK[32]; /* the server's signing public key */
static bool have_ws;    /* websocket-transport was built and loaded */
static bool have_apx;   /* api-proxy (libcurl) was built and loaded */
static char conf_core[1024], conf_mods[1024];

#define ONLINE_MS 3000
#define HB_MS 1000 /* registry.stream_heartbeat_ms below */

/* ------------------------------------------------------------------ server */
static void read_key(void)
{
    size_t bl;
    rdc_read_server_key(&srv, K, sizeof K, KPK, &bl);
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
static void expect_bytes(ProtobufCBinaryData got, const uint8_t *want, size_t n)
{
    cr_assert_eq(got.len, n, "%zu bytes, expected %zu", got.len, n);
    cr_assert_arr_eq(got.data, want, n);
}

/* A device: its id, key pair and uuid; its UDP socket in UDP mode. */
typedef rdc_device device;

/* R69/R167: pk opens with the server key to IdPk{id, the device's pk}. */
static void expect_signed(ProtobufCBinaryData pk, const device *d) { rdc_expect_signed(pk, KPK, d); }

/* ------------------------------------------------------------------ messages */
/* PunchHoleRequest as client-flows.md §3.1 describes it. */
typedef struct phr_opts {
    int nat, udp_port, upnp_port;
    bool force_relay;
    const uint8_t *v6;
    size_t v6n;
} phr_opts;

static msg_t *phr_msg(const char *id, const phr_opts *o)
{
    msg_t *m = rdc_punch_hole_request(id, o->nat, K, "1.4.9");
    Hbb__PunchHoleRequest *r = m->punch_hole_request;
    r->udp_port = o->udp_port;
    r->force_relay = o->force_relay;
    r->upnp_port = o->upnp_port;
    r->socket_addr_v6.data = (uint8_t *)o->v6, r->socket_addr_v6.len = o->v6n;
    return m;
}

/* PunchHoleSent as a device answers a PunchHole (client-flows.md §4.1). */
static msg_t *phs_msg(ProtobufCBinaryData sa, const device *d, int upnp, const uint8_t *v6, size_t v6n)
{
    msg_t *m = rdc_punch_hole_sent(sa, d->id, "relay.example:21117", HBB__NAT_TYPE__ASYMMETRIC, "1.4.9");
    m->punch_hole_sent->upnp_port = upnp;
    m->punch_hole_sent->socket_addr_v6.data = (uint8_t *)v6, m->punch_hole_sent->socket_addr_v6.len = v6n;
    return m;
}

static msg_t *online_msg(char **ids, size_t n) { return rdc_online_request("111111111", ids, n); }

/* Mangled IPv6 addresses (wire.md §5.2) of the two sides' V sockets. */
static const uint8_t V6A[18] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x0a, [16] = 0x39, [17] = 0x30 };
static const uint8_t V6B[18] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x0b, [16] = 0x40, [17] = 0x1f };

/* ------------------------------------------------------------------ UDP */
/* A datagram from the main port (NULL on timeout); *len its size. */
static msg_t *udp_from_server(int fd, int ms, size_t *len) { return rdc_udp_from_server(fd, srv.port, ms, len); }

/* Send m and return the reply, checking it is no larger than m. */
static msg_t *udp_ask(int fd, const msg_t *m, int ms) { return rdc_udp_ask(fd, srv.port, m, ms, 1); }

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

/* UDP registration (client-flows.md §2.3): RegisterPk OK, then RegisterPeer. */
static void udp_register(device *d, const char *ip)
{
    rdc_device_udp(d, ip);
    msg_t *r = udp_ask(d->udp, rdc_device_register_pk(d), 3000);
    cr_assert_not_null(r, "no RegisterPkResponse");
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    rdvt_msg_free(r);
    r = udp_ask(d->udp, rdc_register_peer(d->id), 3000);
    cr_assert_not_null(r);
    cr_assert_not(r->register_peer_response->request_pk);
    rdvt_msg_free(r);
}

/* ------------------------------------------------------------------ TCP */
/* A plain connection to the main port, past the server's KeyExchange offer
 * (clients skip one, client-flows.md §5.2 step 5). */
static int main_conn(const char *ip)
{
    int fd = rdc_connect(ip, srv.port);
    msg_t *m = rdvt_tcp_recv(fd, 3000);
    cr_assert(m && m->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE, "secure-tcp offers first");
    rdvt_msg_free(m);
    return fd;
}

/* Keyed connection as a logged-in client makes it (wire.md §6.3-§6.4). */
typedef rdc_keyed keyed;

static keyed keyed_conn(const char *ip) { return rdc_keyed_connect(ip, srv.port, KPK, 3000); }

/* The next sealed message, echoing raw empty heartbeats as the client does
 * (client-flows.md §2.4 step 4); NULL on timeout. Each opens with the next
 * server counter: heartbeats consume none (R209). */
static msg_t *keyed_next(keyed *c, int ms)
{
    uint64_t deadline = rdc_now_ms() + (uint64_t)ms;
    for (;;) {
        uint64_t now = rdc_now_ms();
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
        msg_t *m = rdc_open_sealed(c, e, n);
        free(e);
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
    rdc_send_sealed(&c, rdc_device_register_pk(d));
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
    msg_t *r = rdc_expect_tcp(fd, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE, 3000);
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
    msg_t *r = rdc_expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 3000);
    cr_assert_eq(r->punch_hole_response->socket_addr.len, 0);
    cr_assert_eq(r->punch_hole_response->failure, f);
    rdvt_msg_free(r);
}

/* ------------------------------------------------------------------ R220-R222, R209 */
Test(modern, R220_R221_R209_R222_tcp_mode_device_over_secure_tcp)
{
    device b;
    rdc_device_init(&b, "500000001");
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
    rdv_addr aa = rdc_local_addr(a);
    msg_t *ph = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE, 3000);
    const Hbb__PunchHole *p = ph->punch_hole;
    rdc_expect_addr(p->socket_addr, &aa);
    cr_assert_str_eq(p->relay_server, "");
    cr_assert_eq(p->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
    cr_assert_eq(p->udp_port, 40000);
    cr_assert_not(p->force_relay);
    cr_assert_eq(p->upnp_port, 0);
    expect_bytes(p->socket_addr_v6, V6A, 18);
    cr_assert_eq(rdvt_stat(&srv, "punch-coordinator.push_fail"), 0);
    rdc_udp_expect_silence(twin, 300); /* nothing went by UDP (R221) */
    close(twin);

    /* B answers on a fresh TCP connection (TCP punch, §4.1); A gets it */
    int bt = main_conn("127.0.20.1");
    rdv_addr ba = rdc_local_addr(bt);
    cr_assert_eq(rdvt_tcp_send(bt, phs_msg(p->socket_addr, &b, 6000, V6B, 18)), 0);
    cr_assert(rdvt_tcp_closed(bt, 3000));
    close(bt);
    rdvt_msg_free(ph);
    msg_t *r = rdc_expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 3000);
    const Hbb__PunchHoleResponse *pr = r->punch_hole_response;
    rdc_expect_addr(pr->socket_addr, &ba);
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
    rdc_send_sealed(&bc, rdc_device_register_pk(&b));
    r = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE, 3000);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    cr_assert_eq(bc.rx, 3);
    rdvt_msg_free(r);

    /* R222: the connection ends -> offline within the online window */
    close(bc.fd);
    uint64_t t0 = rdc_now_ms();
    bool offline = false;
    while (!offline && rdc_now_ms() - t0 < ONLINE_MS + 3000) {
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
    rdc_device_init(&b, "500000002");
    keyed bc = tcp_mode_device(&b, "127.0.21.1");
    /* same IP as B: FetchLocalAddr, sealed on B's connection */
    phr_opts o = { .nat = HBB__NAT_TYPE__ASYMMETRIC, .v6 = V6A, .v6n = 18 };
    int a = ask_punch("127.0.21.1", b.id, &o);
    msg_t *f = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR, 3000);
    rdv_addr aa = rdc_local_addr(a);
    rdc_expect_addr(f->fetch_local_addr->socket_addr, &aa);
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
    rdv_addr va = rdc_local_addr(v);
    rdc_expect_addr(fw->request_relay->socket_addr, &va);
    cr_assert_str_eq(fw->request_relay->uuid, rr.uuid);
    cr_assert_str_eq(fw->request_relay->relay_server, "relay.example");
    cr_assert(fw->request_relay->secure);
    /* B answers with RelayResponse on a new connection; the viewer gets it */
    int bt = main_conn("127.0.21.1");
    msg_t *rm = rdc_relay_response(fw->request_relay->socket_addr, rr.uuid, "relay.example", b.id, "1.4.9");
    cr_assert_eq(rdvt_tcp_send(bt, rm), 0);
    msg_t *got = rdc_expect_tcp(v, HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE, 3000);
    cr_assert_str_eq(got->relay_response->uuid, rr.uuid);
    expect_signed(got->relay_response->pk, &b);
    rdvt_msg_free(got);
    rdvt_msg_free(fw);
    close(bt), close(v), close(bc.fd);
}

Test(modern, R223_uuid_mismatch_keeps_the_encrypted_connection)
{
    device other, b;
    rdc_device_init(&other, "500000003");
    udp_register(&other, "127.0.22.5");
    rdc_device_init(&b, "500000003"); /* same id, another device */
    keyed bc = keyed_conn("127.0.22.1");
    rdc_send_sealed(&bc, rdc_device_register_pk(&b));
    msg_t *r = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE, 3000);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH);
    cr_assert_eq(r->register_pk_response->keep_alive, 4);
    rdvt_msg_free(r);
    /* the client takes a new id and asks again on the same connection */
    snprintf(b.id, sizeof b.id, "%s", "500000004");
    rdc_send_sealed(&bc, rdc_device_register_pk(&b));
    r = keyed_expect(&bc, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE, 3000);
    cr_assert_eq(r->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    rdvt_msg_free(r);
    cr_assert(online_via_nat(b.id));
    close(bc.fd), close(other.udp);
}

Test(modern, silent_tcp_mode_device_is_closed_after_three_heartbeats)
{
    device b;
    rdc_device_init(&b, "500000009");
    keyed bc = tcp_mode_device(&b, "127.0.22.7");
    /* the 30 s request limit no longer applies, 3 x heartbeat does: a
     * device that stops echoing is closed after about 3 s */
    uint64_t t0 = rdc_now_ms();
    cr_assert(rdvt_tcp_closed(bc.fd, 3 * HB_MS + 2000), "not closed after three silent heartbeats");
    cr_assert_geq(rdc_now_ms() - t0, 3 * HB_MS - 200, "closed before three heartbeat periods");
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
    rdc_device_init(&b, "500000013");
    keyed bc = tcp_mode_device(&b, "127.0.22.8");
    keyed hc = keyed_conn("127.0.22.9");
    Hbb__HealthCheck h = HBB__HEALTH_CHECK__INIT;
    h.token = "token";
    msg_t m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_HC;
    m.hc = &h;
    rdc_send_sealed(&hc, &m);
    /* both echo for 2.5 s: past 3 x 400 ms (api-proxy) and 3 x 1 s (ours) */
    uint64_t t0 = rdc_now_ms();
    while (rdc_now_ms() - t0 < 2500) {
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
    rdc_device_init(&b, "500000005");
    /* a plaintext RegisterPk on the main port: NOT_SUPPORT, closed (TCP-mode
     * clients always key their connection first) */
    int t = main_conn("127.0.23.1");
    cr_assert_eq(rdvt_tcp_send(t, rdc_device_register_pk(&b)), 0);
    const uint8_t not_support[] = { 0x82, 0x01, 0x02, 0x08, 0x06 };
    rdc_expect_tcp_bytes(t, not_support, sizeof not_support, 3000);
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
static int ws_open(const char *src)
{
    int fd = rdvt_tcp(src, srv.port + 2);
    cr_assert_geq(fd, 0);
    char head[1024];
    cr_assert_eq(rdc_ws_upgrade(fd, "/", "127.0.0.1", head, sizeof head), 0, "no upgrade answer");
    cr_assert(strncmp(head, "HTTP/1.1 101 ", 13) == 0 && strstr(head, RDC_WS_ACCEPT), "answer: %s", head);
    return fd;
}


/* The next non-empty binary message, echoing empty ones (heartbeats) as
 * the client does; NULL on timeout. */
static msg_t *ws_next(int fd, int ms, unsigned *heartbeats)
{
    uint64_t deadline = rdc_now_ms() + (uint64_t)ms;
    for (;;) {
        uint8_t h[4];
        int r = rdc_read_exact(fd, h, 2, deadline);
        if (r == -1)
            return NULL;
        cr_assert_eq(r, 0, "WebSocket closed by the server");
        cr_assert_eq(h[0], 0x82, "an unfragmented binary message, got %02x", h[0]);
        size_t len = h[1] & 0x7f;
        cr_assert_lt(len, 127);
        if (len == 126) {
            cr_assert_eq(rdc_read_exact(fd, h + 2, 2, deadline), 0);
            len = (size_t)h[2] << 8 | h[3];
        }
        if (len == 0) {
            if (heartbeats)
                (*heartbeats)++;
            rdc_ws_send_frame(fd, true, 2, true, NULL, 0);
            continue;
        }
        uint8_t *p = malloc(len);
        cr_assert_eq(rdc_read_exact(fd, p, len, deadline), 0);
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
    rdc_device_init(&b, "500000006");
    int w = ws_open("127.0.24.1");
    unsigned hb = 0;
    /* R141: nothing before the request (no KeyExchange on WebSocket) */
    cr_assert_null(ws_next(w, 300, &hb));
    rdc_ws_send_msg(w, rdc_device_register_pk(&b));
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
        rdc_ws_send_msg(q, online_msg(ids, 2));
        msg_t *o = ws_expect(q, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE, NULL);
        cr_assert_eq(o->online_response->states.len, 1);
        cr_assert_eq(o->online_response->states.data[0], 0x80);
        rdvt_msg_free(o);
    }
    close(q);

    /* a PunchHoleRequest over TCP reaches B over its WebSocket */
    phr_opts o = { .nat = HBB__NAT_TYPE__ASYMMETRIC, .force_relay = true, .v6 = V6A, .v6n = 18 };
    int a = ask_punch("127.0.24.2", b.id, &o);
    rdv_addr aa = rdc_local_addr(a);
    msg_t *ph = ws_expect(w, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE, &hb);
    rdc_expect_addr(ph->punch_hole->socket_addr, &aa);
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
    rdc_device_init(&b, "500000007");
    udp_register(&b, "127.0.25.1");
    /* A: its UDP socket U (port learned from UDP TestNat or STUN) */
    int u = rdvt_udp("127.0.25.2");
    rdv_addr ua = rdc_local_addr(u);
    phr_opts o = { .nat = HBB__NAT_TYPE__ASYMMETRIC, .udp_port = rdv_addr_port(&ua), .upnp_port = 7000,
                   .v6 = V6A, .v6n = 18 };
    int a = ask_punch("127.0.25.2", b.id, &o);
    rdv_addr aa = rdc_local_addr(a);
    msg_t *ph = udp_from_server(b.udp, 3000, NULL);
    cr_assert_not_null(ph, "B got no PunchHole");
    cr_assert_eq(ph->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    const Hbb__PunchHole *p = ph->punch_hole;
    rdc_expect_addr(p->socket_addr, &aa);
    cr_assert_eq(p->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
    cr_assert_eq(p->udp_port, rdv_addr_port(&ua), "field 4");
    cr_assert_not(p->force_relay, "field 5");
    cr_assert_eq(p->upnp_port, 7000, "field 6");
    expect_bytes(p->socket_addr_v6, V6A, 18);
    cr_assert_null(p->control_permissions);

    /* B: PunchHoleSent by UDP from a new socket, three copies (§4.1) */
    int q = rdvt_udp("127.0.25.1");
    rdv_addr qa = rdc_local_addr(q);
    uint8_t d[512];
    size_t dn = rdc_pack(phs_msg(p->socket_addr, &b, 8000, V6B, 18), d, sizeof d);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(rdvt_udp_send_raw(q, srv.port, d, dn), 0);
        usleep(20 * 1000);
    }
    msg_t *r = rdc_expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 3000);
    const Hbb__PunchHoleResponse *pr = r->punch_hole_response;
    rdc_expect_addr(pr->socket_addr, &qa);
    cr_assert(pr->is_udp, "field 9");
    expect_signed(pr->pk, &b);
    cr_assert_str_eq(pr->relay_server, "relay.example:21117");
    cr_assert_eq(pr->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
    cr_assert_eq(pr->upnp_port, 8000, "field 10");
    expect_bytes(pr->socket_addr_v6, V6B, 18);
    cr_assert_eq(pr->failure, 0);
    rdvt_msg_free(r);
    /* nothing by UDP, the copies dropped */
    rdc_udp_expect_silence(q, 500);
    rdc_udp_expect_silence(u, 100);
    rdc_udp_expect_silence(b.udp, 100);
    rdc_expect_nothing_tcp(a, 300);
    cr_assert_eq(rdvt_stat(&srv, "punch-coordinator.udp_punch_hole_sent"), 1);

    /* a UDP PunchHoleSent with no requester waiting: nothing anywhere */
    cr_assert_eq(rdvt_udp_send_raw(q, srv.port, d, dn), 0);
    rdc_udp_expect_silence(q, 500);
    rdc_expect_nothing_tcp(a, 100);
    rdvt_msg_free(ph);
    close(a), close(q), close(u), close(b.udp);
}

Test(modern, R229_same_intranet_ipv6_fields)
{
    device b;
    rdc_device_init(&b, "500000008");
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
    msg_t *r = rdc_expect_tcp(a, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 3000);
    cr_assert(r->punch_hole_response->is_local);
    rdc_expect_addr(r->punch_hole_response->socket_addr, &lan);
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
    rdc_device_init(&d[0], "500000010");
    rdc_device_init(&d[1], "500000011");
    rdc_device_init(&d[2], "500000012");
    udp_register(&d[0], "127.0.27.1");
    udp_register(&d[2], "127.0.27.3");
    char *ids[] = { d[0].id, d[1].id, d[2].id, "nosuchid" };
    int t = main_conn("127.0.27.9");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(online_states(t, ids, 4), 0xa0, "bits 0 and 2 (R116), asked again on one connection");
    rdc_expect_nothing_tcp(t, 300);
    close(t);
    for (int i = 0; i < 3; i++)
        if (d[i].udp >= 0)
            close(d[i].udp);
}

Test(modern, R227_udp_test_nat_never_amplifies)
{
    int u = rdvt_udp("127.0.28.1");
    rdv_addr ua = rdc_local_addr(u);
    /* a current client's bare request (3 bytes): any answer would be larger */
    const uint8_t bare[] = { 0xa2, 0x01, 0x00 };
    cr_assert_eq(rdvt_udp_send_raw(u, srv.port, bare, sizeof bare), 0);
    rdc_udp_expect_silence(u, 1000);
    cr_assert_eq(rdvt_stat(&srv, "nat-test.udp_test_nat_dropped"), 1);
    /* a request at least as large is answered with the source port */
    msg_t *r = udp_ask(u, rdc_test_nat_request(0x7fffffff), 3000);
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
    rdv_addr ua = rdc_local_addr(u);
    const uint8_t bare[] = { 0xa2, 0x01, 0x00 };
    cr_assert_eq(rdvt_udp_send_raw(u, srv.port, bare, sizeof bare), 0);
    size_t len = 0;
    msg_t *r = udp_from_server(u, 3000, &len);
    cr_assert_not_null(r, "no UDP TestNatResponse");
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq(r->test_nat_response->port, rdv_addr_port(&ua));
    cr_assert_leq(len, sizeof bare + 4);
    rdvt_msg_free(r);
    rdc_udp_expect_silence(u, 300);
    close(u);
}

Test(modern, R45_R111_runtime_config_update_reaches_test_nat_cu)
{
    /* a loopback ConfigUpdate (§6.10), applied by the registry */
    int lo = rdvt_udp("127.0.0.1");
    char *list[] = { "10.20.30.40:21116" };
    uint8_t buf[256];
    size_t n = rdc_pack(rdc_config_update(7, list, 1), buf, sizeof buf);
    cr_assert_eq(rdvt_udp_send_raw(lo, srv.port, buf, n), 0);
    rdc_udp_expect_silence(lo, 300);
    close(lo);
    /* nat-test's TestNatResponse on the main port carries it (no restart) */
    int t = main_conn("127.0.29.1");
    cr_assert_eq(rdvt_tcp_send(t, rdc_test_nat_request(0)), 0);
    msg_t *r = rdc_expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE, 3000);
    cr_assert_not_null(r->test_nat_response->cu, "the registry's runtime serial reaches nat-test");
    cr_assert_eq(r->test_nat_response->cu->serial, 7);
    cr_assert_eq(r->test_nat_response->cu->n_rendezvous_servers, 1);
    cr_assert_str_eq(r->test_nat_response->cu->rendezvous_servers[0], "10.20.30.40:21116");
    rdvt_msg_free(r);
    close(t);
    /* a client already at serial 7 gets none; the NAT port never (R112) */
    t = main_conn("127.0.29.1");
    cr_assert_eq(rdvt_tcp_send(t, rdc_test_nat_request(7)), 0);
    r = rdc_expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE, 3000);
    cr_assert_null(r->test_nat_response->cu);
    rdvt_msg_free(r);
    close(t);
    t = rdvt_tcp("127.0.29.1", srv.port - 1);
    cr_assert_eq(rdvt_tcp_send(t, rdc_test_nat_request(0)), 0);
    r = rdc_expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE, 3000);
    cr_assert_null(r->test_nat_response->cu);
    rdvt_msg_free(r);
    close(t);
}
