/* test_nat_test.c — nat-test against the fake core with a fake "registry".
 * Items of rendezvous-checklist.md are cited as R<n>. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakecore.h"
#include "nt.h"

/* ---- a fake registry: ids with online flag; stored-only ids miss MEMORY */
typedef struct { char id[32]; bool online, in_memory; } fpeer;
static fpeer PEERS[64];
static size_t NPEERS;
static unsigned LOOKUPS_STORED;

static int reg_lookup(void *self, const char *id, rdv_lookup how, rdv_peer_info *out)
{
    (void)self;
    if (how == RDV_LOOKUP_STORED)
        LOOKUPS_STORED++;
    for (size_t i = 0; i < NPEERS; i++)
        if (strcmp(PEERS[i].id, id) == 0 && (PEERS[i].in_memory || how == RDV_LOOKUP_STORED)) {
            memset(out, 0, sizeof *out);
            out->id = PEERS[i].id;
            out->online = PEERS[i].online && PEERS[i].in_memory;
            return 0;
        }
    return -ENOENT;
}
static size_t reg_zero(void *self) { (void)self; return 0; }
/* The registry's ConfigUpdate state (serial, servers): what a loopback
 * ConfigUpdate changes at run time there. */
static int32_t REG_SERIAL;
static char *REG_SERVERS_V[4];
static rdv_strlist REG_SERVERS;
static unsigned CONFIG_CALLS;
static int reg_config(void *self, int32_t *serial, const rdv_strlist **servers)
{
    (void)self;
    CONFIG_CALLS++;
    *serial = REG_SERIAL;
    *servers = &REG_SERVERS;
    return 0;
}
static void reg_set_config(int32_t serial, const char *server)
{
    REG_SERIAL = serial;
    REG_SERVERS_V[0] = (char *)server;
    REG_SERVERS.v = REG_SERVERS_V;
    REG_SERVERS.n = server ? 1 : 0;
}
static const rdv_registry_api reg_api = {
    .lookup = reg_lookup, .online_count = reg_zero, .peer_count = reg_zero, .config = reg_config,
};

static void peer(const char *id, bool online, bool in_memory)
{
    cr_assert_lt(NPEERS, 64);
    snprintf(PEERS[NPEERS].id, sizeof PEERS[NPEERS].id, "%s", id);
    PEERS[NPEERS].online = online, PEERS[NPEERS].in_memory = in_memory;
    NPEERS++;
}

static fc_core *fc;
static nt *N;

static void load(const char *conf, bool core_nat_listener)
{
    NPEERS = 0, LOOKUPS_STORED = 0, CONFIG_CALLS = 0;
    reg_set_config(0, NULL);
    fc = fc_new();
    fc_listener(fc, "main", RDV_TR_TCP, 21116);
    fc_listener(fc, "main", RDV_TR_UDP, 21116);
    if (core_nat_listener)
        fc_listener(fc, "nat", RDV_TR_TCP, 21115);
    rdv_core *h = fc_handle(fc, "registry");
    cr_assert_eq(h->api->service_publish(h, RDV_SVC_REGISTRY, RDV_SVC_REGISTRY_VERSION, &reg_api, NULL), 0);
    void *st = NULL;
    cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &st), 0);
    N = st;
}

static void setup(void) { load(NULL, true); }
static void teardown(void)
{
    if (fc)
        fc_free(fc);
    fc = NULL;
}

TestSuite(nat_test, .init = setup, .fini = teardown);

static Hbb__RendezvousMessage *test_nat(int serial)
{
    static Hbb__TestNatRequest r;
    static Hbb__RendezvousMessage m;
    hbb__test_nat_request__init(&r);
    hbb__rendezvous_message__init(&m);
    r.serial = serial;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST;
    m.test_nat_request = &r;
    return &m;
}

static Hbb__RendezvousMessage *online(char **ids, size_t n)
{
    static Hbb__OnlineRequest r;
    static Hbb__RendezvousMessage m;
    hbb__online_request__init(&r);
    hbb__rendezvous_message__init(&m);
    r.id = "111111111";
    r.peers = ids, r.n_peers = n;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_REQUEST;
    m.online_request = &r;
    return &m;
}

static rdv_conn_id conn_on(const char *listener, rdv_transport tr, const char *from)
{
    rdv_addr a = fc_addr(from);
    return fc_conn_open(fc, listener, tr, &a);
}

static const fc_sent *expect_msg(rdv_conn_id c, int union_case)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "no answer");
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->conn, c);
    cr_assert_not_null(s->msg);
    cr_assert_eq((int)s->msg->union_case, union_case);
    return s;
}

static void expect_bytes(const fc_sent *s, const uint8_t *want, size_t n)
{
    cr_assert_eq(s->len, n, "length %zu, expected %zu", s->len, n);
    cr_assert_arr_eq(s->raw, want, n);
}

/* ------------------------------------------------------------------ §6.8 */
Test(nat_test, R110_R2_main_port_answers_the_source_port_and_closes)
{
    rdv_conn_id c = conn_on("main", RDV_TR_TCP, "10.0.0.1:50000");
    cr_assert_eq(fc_conn_msg(fc, c, test_nat(0)), RDV_CLOSE);
    const fc_sent *s = expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    const uint8_t want[] = { 0xaa, 0x01, 0x04, 0x08, 0xd0, 0x86, 0x03 }; /* wire.md §2.3 */
    expect_bytes(s, want, sizeof want);
    cr_assert_null(s->msg->test_nat_response->cu);
    cr_assert_not(fc_conn_alive(fc, c));
    cr_assert_null(fc_next_sent(fc));
    cr_assert_eq(fc_counter(fc, "nat-test.test_nat"), 1);
}

Test(nat_test, R111_cu_on_the_main_port_when_the_client_serial_is_lower)
{
    reg_set_config(5, "127.0.0.1:21116");
    rdv_conn_id c = conn_on("main", RDV_TR_TCP, "10.0.0.1:50000");
    fc_conn_msg(fc, c, test_nat(0));
    const Hbb__TestNatResponse *r = expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE)->msg->test_nat_response;
    cr_assert_eq(r->port, 50000);
    cr_assert_not_null(r->cu);
    cr_assert_eq(r->cu->serial, 5);
    cr_assert_eq(r->cu->n_rendezvous_servers, 1);
    cr_assert_str_eq(r->cu->rendezvous_servers[0], "127.0.0.1:21116");
    c = conn_on("main", RDV_TR_TCP, "10.0.0.1:50001");
    fc_conn_msg(fc, c, test_nat(5));
    cr_assert_null(expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE)->msg->test_nat_response->cu);
    cr_assert_eq(fc_counter(fc, "nat-test.test_nat_cu"), 1);
}

Test(nat_test, R45_cu_follows_a_runtime_config_update_in_the_registry)
{
    /* a loopback ConfigUpdate applied by the registry is seen at once */
    rdv_conn_id c = conn_on("main", RDV_TR_TCP, "10.0.0.1:50000");
    fc_conn_msg(fc, c, test_nat(0));
    cr_assert_null(expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE)->msg->test_nat_response->cu);
    reg_set_config(7, "10.1.1.1:21116");
    c = conn_on("main", RDV_TR_TCP, "10.0.0.1:50001");
    fc_conn_msg(fc, c, test_nat(6));
    const Hbb__ConfigUpdate *cu =
        expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE)->msg->test_nat_response->cu;
    cr_assert_not_null(cu);
    cr_assert_eq(cu->serial, 7);
    cr_assert_str_eq(cu->rendezvous_servers[0], "10.1.1.1:21116");
    cr_assert_eq(CONFIG_CALLS, 2);
}

Test(nat_test, R112_nat_port_never_sends_cu)
{
    reg_set_config(5, "127.0.0.1:21116");
    rdv_conn_id c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50000");
    cr_assert_eq(fc_conn_msg(fc, c, test_nat(0)), RDV_CLOSE);
    const fc_sent *s = expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq(s->msg->test_nat_response->port, 50000);
    cr_assert_null(s->msg->test_nat_response->cu);
    cr_assert_not(fc_conn_alive(fc, c));
}

Test(nat_test, R136_websocket_reports_the_attributed_port)
{
    rdv_conn_id c = conn_on("ws", RDV_TR_WS, "203.0.113.5:0"); /* X-Real-IP: port 0 */
    cr_assert_eq(fc_conn_msg(fc, c, test_nat(0)), RDV_CLOSE);
    const fc_sent *s = expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    const uint8_t want[] = { 0xaa, 0x01, 0x00 }; /* port absent */
    expect_bytes(s, want, sizeof want);
    c = conn_on("ws", RDV_TR_WS, "10.0.0.1:40404");
    fc_conn_msg(fc, c, test_nat(0));
    cr_assert_eq(expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE)->msg->test_nat_response->port, 40404);
}

Test(nat_test, other_listeners_are_not_answered)
{
    rdv_conn_id c = conn_on("relay", RDV_TR_TCP, "10.0.0.1:1");
    cr_assert_eq(fc_conn_msg(fc, c, test_nat(0)), RDV_DECLINED);
    cr_assert_not(fc_conn_alive(fc, c));
    rdv_addr a = fc_addr("10.0.0.1:2");
    fc_listener(fc, "other", RDV_TR_UDP, 1);
    cr_assert_eq(fc_udp(fc, "other", &a, test_nat(100000)), -ENOENT, "UDP: main only");
    cr_assert_null(fc_next_sent(fc));
}

/* ------------------------------------------------------------------ EXT §15.7 */
static const fc_sent *expect_udp_to(const char *to)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "no UDP answer");
    cr_assert_eq(s->kind, FC_SENT_UDP);
    cr_assert_str_eq(s->listener_name, "main");
    rdv_addr want = fc_addr(to);
    cr_assert(rdv_addr_equal(&s->to, &want), "the answer goes to the source only");
    cr_assert_not_null(s->msg);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    return s;
}

static size_t packed_len(const Hbb__RendezvousMessage *m)
{
    return protobuf_c_message_get_packed_size(&m->base);
}

Test(nat_test, R227_udp_answer_never_larger_than_the_request)
{
    rdv_addr a = fc_addr("10.0.0.1:40000");
    /* a current client's request is a2 01 00: every answer is larger */
    const uint8_t bare[] = { 0xa2, 0x01, 0x00 };
    cr_assert_eq(fc_udp_raw(fc, "main", &a, bare, sizeof bare), RDV_OK);
    cr_assert_null(fc_next_sent(fc), "3 bytes in, 7 would go out: not answered");
    cr_assert_eq(fc_counter(fc, "nat-test.udp_test_nat_dropped"), 1);
    /* a request at least as large as the answer is answered, with the port */
    Hbb__RendezvousMessage *m = test_nat(100000); /* a2 01 04 08 a0 8d 06: 7 bytes */
    size_t in = packed_len(m);
    cr_assert_eq(fc_udp(fc, "main", &a, m), RDV_OK);
    const fc_sent *s = expect_udp_to("10.0.0.1:40000");
    cr_assert_eq(s->msg->test_nat_response->port, 40000);
    cr_assert_null(s->msg->test_nat_response->cu, "never a cu by UDP");
    cr_assert_leq(s->len, in);
    const uint8_t want[] = { 0xaa, 0x01, 0x04, 0x08, 0xc0, 0xb8, 0x02 };
    cr_assert_eq(s->len, sizeof want);
    cr_assert_arr_eq(s->raw, want, sizeof want);
    /* a small port makes a smaller answer */
    rdv_addr lo = fc_addr("10.0.0.1:100");
    m = test_nat(1); /* a2 01 02 08 01: 5 bytes */
    cr_assert_eq(fc_udp(fc, "main", &lo, m), RDV_OK);
    s = expect_udp_to("10.0.0.1:100");
    cr_assert_eq(s->len, 5);
    cr_assert_eq(fc_counter(fc, "nat-test.udp_test_nat"), 2);
}

Test(nat_test, R227_slack_serves_current_clients)
{
    teardown();
    load("udp_test_nat_slack=4\n", true);
    reg_set_config(99, "10.1.1.1"); /* a cu would be larger: never sent by UDP */
    rdv_addr a = fc_addr("10.0.0.1:65535");
    const uint8_t bare[] = { 0xa2, 0x01, 0x00 };
    cr_assert_eq(fc_udp_raw(fc, "main", &a, bare, sizeof bare), RDV_OK);
    const fc_sent *s = expect_udp_to("10.0.0.1:65535");
    cr_assert_eq(s->msg->test_nat_response->port, 65535);
    cr_assert_null(s->msg->test_nat_response->cu);
    cr_assert_leq(s->len, sizeof bare + 4);
    cr_assert_null(fc_next_sent(fc), "one datagram in, one out");
}

Test(nat_test, R115_udp_off_is_oss)
{
    teardown();
    load("udp_test_nat=false\nudp_test_nat_slack=16\n", true);
    rdv_addr a = fc_addr("10.0.0.1:2");
    cr_assert_eq(fc_udp(fc, "main", &a, test_nat(100000)), RDV_DECLINED);
    cr_assert_null(fc_next_sent(fc));
    /* and back on by a reload */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), N, "udp_test_nat_slack=16\n"), 0);
    cr_assert_eq(fc_udp(fc, "main", &a, test_nat(0)), RDV_OK);
    expect_udp_to("10.0.0.1:2");
}

/* ------------------------------------------------------------------ §6.9 */
Test(nat_test, R116_bitmap_90_40)
{
    char *ids[10];
    char buf[10][16];
    for (int i = 0; i < 10; i++) {
        snprintf(buf[i], sizeof buf[i], "70000000%d", i);
        ids[i] = buf[i];
    }
    peer(buf[0], true, true);
    peer(buf[1], false, true);  /* stale */
    peer(buf[3], true, true);
    peer(buf[5], true, false);  /* stored only */
    peer(buf[9], true, true);
    rdv_conn_id c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50000");
    cr_assert_eq(fc_conn_msg(fc, c, online(ids, 10)), RDV_CLOSE);
    const uint8_t want[] = { 0xc2, 0x01, 0x04, 0x0a, 0x02, 0x90, 0x40 }; /* wire.md §2.3 */
    expect_bytes(expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE), want, sizeof want);
    cr_assert_not(fc_conn_alive(fc, c));
    cr_assert_eq(LOOKUPS_STORED, 0, "memory-only lookups (R118)");
}

static size_t states_len(size_t n)
{
    char **ids = calloc(n ? n : 1, sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = "123456789";
    rdv_conn_id c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50000");
    fc_conn_msg(fc, c, online(ids, n));
    free(ids);
    const fc_sent *s = expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE);
    return s->msg->online_response->states.len;
}

Test(nat_test, R117_R6_bitmap_length_is_ceil_n_over_8)
{
    rdv_conn_id c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50000");
    fc_conn_msg(fc, c, online(NULL, 0));
    const uint8_t empty[] = { 0xc2, 0x01, 0x00 };
    expect_bytes(expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE), empty, sizeof empty);
    cr_assert_eq(states_len(1), 1);
    cr_assert_eq(states_len(8), 1);
    cr_assert_eq(states_len(9), 2);
    cr_assert_eq(states_len(600), 75);
    cr_assert_eq(states_len(5000), 625, "R8: 5000 ids are answered");
}

Test(nat_test, R118_all_offline_and_odd_ids)
{
    peer("123456789", true, false);
    char *ids[] = { "123456789", "", "nosuch", "\xc3\xa9" };
    rdv_conn_id c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50000");
    fc_conn_msg(fc, c, online(ids, 4));
    const uint8_t want[] = { 0xc2, 0x01, 0x03, 0x0a, 0x01, 0x00 };
    expect_bytes(expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE), want, sizeof want);
}

Test(nat_test, online_request_bytes_from_the_spec)
{
    peer("123456789", true, true);
    /* wire.md §2.3 OnlineRequest{id:"111111111", peers:["123456789","987654321"]} */
    const uint8_t req[] = { 0xba, 0x01, 0x21, 0x0a, 0x09, '1', '1', '1', '1', '1', '1', '1', '1', '1',
                            0x12, 0x09, '1', '2', '3', '4', '5', '6', '7', '8', '9',
                            0x12, 0x09, '9', '8', '7', '6', '5', '4', '3', '2', '1' };
    rdv_conn_id c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50000");
    cr_assert_eq(fc_conn_raw(fc, c, req, sizeof req), RDV_CLOSE);
    const uint8_t want[] = { 0xc2, 0x01, 0x03, 0x0a, 0x01, 0x80 };
    expect_bytes(expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE), want, sizeof want);
}

Test(nat_test, R228_online_request_on_main_and_websocket_keeps_the_connection)
{
    char *ids[10];
    char buf[10][16];
    for (int i = 0; i < 10; i++) {
        snprintf(buf[i], sizeof buf[i], "70000000%d", i);
        ids[i] = buf[i];
    }
    peer(buf[0], true, true);
    peer(buf[3], true, true);
    peer(buf[9], true, true);
    const uint8_t want[] = { 0xc2, 0x01, 0x04, 0x0a, 0x02, 0x90, 0x40 };
    const char *lst[] = { "main", "ws" };
    rdv_transport trs[] = { RDV_TR_TCP, RDV_TR_WS };
    for (int k = 0; k < 2; k++) {
        rdv_conn_id c = conn_on(lst[k], trs[k], "10.0.0.1:50000");
        for (int twice = 0; twice < 2; twice++) {
            cr_assert_eq(fc_conn_msg(fc, c, online(ids, 10)), RDV_OK);
            expect_bytes(expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE), want, sizeof want);
            cr_assert(fc_conn_alive(fc, c), "kept open (§15.11)");
        }
    }
    /* the bound still applies there */
    teardown();
    load("online_max_ids=1\n", true);
    rdv_conn_id c = conn_on("main", RDV_TR_TCP, "10.0.0.1:50000");
    cr_assert_eq(fc_conn_msg(fc, c, online(ids, 2)), RDV_CLOSE);
    cr_assert_null(fc_next_sent(fc));
}

Test(nat_test, R119_online_request_elsewhere_or_off_is_unhandled)
{
    rdv_conn_id c = conn_on("relay", RDV_TR_TCP, "10.0.0.1:50000");
    cr_assert_eq(fc_conn_msg(fc, c, online(NULL, 0)), RDV_DECLINED);
    cr_assert_not(fc_conn_alive(fc, c));
    teardown();
    load("online_on_main=false\n", true);
    c = conn_on("main", RDV_TR_TCP, "10.0.0.1:50000");
    cr_assert_eq(fc_conn_msg(fc, c, online(NULL, 0)), RDV_DECLINED);
    cr_assert_not(fc_conn_alive(fc, c));
    c = conn_on("ws", RDV_TR_WS, "10.0.0.1:50001");
    cr_assert_eq(fc_conn_msg(fc, c, online(NULL, 0)), RDV_DECLINED);
    cr_assert_null(fc_next_sent(fc));
    c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50002");
    cr_assert_eq(fc_conn_msg(fc, c, online(NULL, 0)), RDV_CLOSE, "the NAT port always answers");
}

Test(nat_test, too_many_ids_are_closed_unanswered)
{
    teardown();
    load("online_max_ids=3\n", true);
    char *ids[4] = { "a", "b", "c", "d" };
    rdv_conn_id c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50000");
    cr_assert_eq(fc_conn_msg(fc, c, online(ids, 4)), RDV_CLOSE);
    cr_assert_null(fc_next_sent(fc), "a shorter bitmap would crash the client: nothing instead");
    cr_assert_not(fc_conn_alive(fc, c));
    cr_assert_eq(fc_counter(fc, "nat-test.online_too_many"), 1);
    c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50001");
    fc_conn_msg(fc, c, online(ids, 3));
    expect_msg(c, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE);
}

Test(nat_test, R114_other_messages_on_the_nat_port_close)
{
    rdv_conn_id c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50000");
    const uint8_t garbage[] = { 0xff, 0xff, 0xff };
    cr_assert_eq(fc_conn_raw(fc, c, garbage, sizeof garbage), -EBADMSG);
    cr_assert_not(fc_conn_alive(fc, c));
    c = conn_on("nat", RDV_TR_TCP, "10.0.0.1:50001");
    const uint8_t reg_peer[] = { 0x32, 0x02, 0x0a, 0x00 };
    cr_assert_eq(fc_conn_raw(fc, c, reg_peer, sizeof reg_peer), -ENOENT);
    cr_assert_null(fc_next_sent(fc));
}

Test(nat_test, settings_bounds)
{
    teardown();
    fc = fc_new();
    void *st;
    const char *bad[] = { "serial=1\n", "rendezvous_servers=a\n", "online_max_ids=-1\n", "console_port=70000\n",
                          "compat_console=perhaps\n", "udp_test_nat_slack=17\n", "udp_test_nat_slack=-1\n",
                          "online_on_main=perhaps\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_lt(fc_load(fc, rdv_module_get(), bad[i], &st), 0, "%s", bad[i]);
}

Test(nat_test, needs_the_registry)
{
    teardown();
    fc = fc_new();
    void *st;
    cr_assert_eq(fc_load(fc, rdv_module_get(), NULL, &st), -ENOENT);
}

Test(nat_test, warns_without_a_nat_listener)
{
    teardown();
    load(NULL, false);
    cr_assert(fc_log_contains(fc, "no TCP listener \"nat\""));
}

Test(nat_test, reload_rules)
{
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), N, "online_on_main=false\n"), 0);
    rdv_conn_id c = conn_on("main", RDV_TR_TCP, "10.0.0.1:50000");
    cr_assert_eq(fc_conn_msg(fc, c, online(NULL, 0)), RDV_DECLINED);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), N, "compat_console=true\n"), -EPERM, "needs a restart");
}

/* ------------------------------------------------------------------ compat console (§10) */
static void fake_h(void *ud, int argc, char **argv, rdv_buf *out)
{
    (void)ud;
    rdv_core *h = fc_handle(fc, "punch-coordinator");
    h->api->out(out, "help:%d:%s\n", argc, argc > 1 ? argv[1] : "");
}

static void fake_stats(void *ud, int argc, char **argv, rdv_buf *out)
{
    (void)ud, (void)argc, (void)argv;
    fc_handle(fc, "core")->api->out(out, "secret stats\n");
}

static void fake_empty(void *ud, int argc, char **argv, rdv_buf *out)
{
    (void)ud, (void)argc, (void)argv, (void)out;
}

static rdv_listener *L;

static void console_setup(void)
{
    load("compat_console=true\n", false);
    rdv_core *h = fc_handle(fc, "punch-coordinator");
    cr_assert_eq(h->api->admin_command(h, "h", "", fake_h, NULL), 0);
    cr_assert_eq(h->api->admin_command(h, "aur", "", fake_empty, NULL), 0);
    rdv_core *c = fc_handle(fc, "core");
    cr_assert_eq(c->api->admin_command(c, "stats", "", fake_stats, NULL), 0);
    L = fc_find_listener(fc, "nat", RDV_TR_TCP);
    cr_assert_not_null(L, "the module owns the NAT port");
}

TestSuite(console, .init = console_setup, .fini = teardown);

static rdv_conn_id console_open(const char *from)
{
    rdv_addr a = fc_addr(from);
    rdv_conn_id id = fc_owned_open(fc, L, &a);
    cr_assert(fc_conn_alive(fc, id));
    return id;
}

/* Send text; return the console's answer ("" if none) and check the close. */
static const char *console(const char *from, const void *text, size_t n)
{
    static char out[4096];
    rdv_conn_id id = console_open(from);
    cr_assert_eq(fc_conn(fc, id)->idle_ms, NT_CONSOLE_WAIT_MS, "1 s to send the command");
    fc_conn_raw(fc, id, text, n);
    out[0] = '\0';
    const fc_sent *s;
    bool closed = false;
    while ((s = fc_next_sent(fc))) {
        if (s->kind == FC_SENT_BYTES) {
            cr_assert_lt(s->len, sizeof out);
            memcpy(out, s->raw, s->len);
            out[s->len] = '\0';
        } else {
            cr_assert_eq(s->kind, FC_SENT_CLOSE);
            closed = true;
        }
    }
    cr_assert(closed || !fc_conn_alive(fc, id), "one command per connection");
    cr_assert_not(fc_conn_alive(fc, id));
    return out;
}

Test(console, R170_command_from_loopback_is_run)
{
    cr_assert_str_eq(console("127.0.0.1:40000", "h", 1), "help:1:\n");
    cr_assert_str_eq(console("127.0.0.1:40000", "  h arg \r\n", 10), "help:2:arg\n", "trimmed, split");
    cr_assert_eq(fc_counter(fc, "nat-test.console_commands"), 2);
}

Test(console, R180_loopback_forms)
{
    cr_assert_str_eq(console("127.0.0.2:40000", "h", 1), "help:1:\n");
    cr_assert_str_eq(console("[::1]:40000", "h", 1), "help:1:\n");
    cr_assert_str_eq(console("[::ffff:127.0.0.1]:40000", "h\n", 2), "help:1:\n");
}

Test(console, R176_unknown_empty_and_rdvd_commands_answer_nothing)
{
    cr_assert_str_eq(console("127.0.0.1:1", "foo", 3), "");
    cr_assert_str_eq(console("127.0.0.1:1", "   \n", 4), "");
    cr_assert_str_eq(console("127.0.0.1:1", "stats", 5), "", "rdvd's commands stay on the Unix socket");
    cr_assert_str_eq(console("127.0.0.1:1", "ib", 2), "", "an upstream command whose module is absent");
    cr_assert_str_eq(console("127.0.0.1:1", "aur Y", 5), "");
}

Test(console, R178_non_utf8_is_closed_without_output)
{
    const uint8_t bad[] = { 0xff, 0xfe };
    cr_assert_str_eq(console("127.0.0.1:1", bad, sizeof bad), "");
    cr_assert_eq(fc_counter(fc, "nat-test.console_refused"), 1);
}

Test(console, only_the_first_1024_bytes_are_read)
{
    char big[1100];
    memset(big, ' ', sizeof big);
    big[1050] = 'h';
    cr_assert_str_eq(console("127.0.0.1:1", big, sizeof big), "", "the h lies past the one read");
    big[1000] = 'h';
    cr_assert_str_eq(console("127.0.0.1:1", big, 1024), "help:1:\n");
}

Test(console, R177_no_input_closes_after_one_second)
{
    rdv_conn_id id = console_open("127.0.0.1:40000");
    cr_assert_eq(fc_conn(fc, id)->idle_ms, 1000);
    cr_assert_null(fc_next_sent(fc));
}

Test(console, R179_outside_sources_speak_frames)
{
    rdv_conn_id id = console_open("10.0.0.1:50000");
    cr_assert_not_null(fc_conn(fc, id)->codec, "hbb frames");
    const uint8_t h = 'h';
    cr_assert_eq(fc_conn_raw(fc, id, &h, 1), RDV_OK); /* 0x68: a header declaring 26 bytes */
    cr_assert_null(fc_next_sent(fc));
    cr_assert(fc_conn_alive(fc, id), "waits for the rest (the core's idle timer closes it)");
}

Test(console, outside_test_nat_is_answered_once_then_closed)
{
    rdv_conn_id id = console_open("10.0.0.1:50000");
    const uint8_t two[] = { 0x0c, 0xa2, 0x01, 0x00, 0x0c, 0xa2, 0x01, 0x00 }; /* R113 */
    fc_conn_raw(fc, id, two, sizeof two);
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s);
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq(s->msg->test_nat_response->port, 50000);
    cr_assert_null(s->msg->test_nat_response->cu);
    s = fc_next_sent(fc);
    cr_assert_not_null(s);
    cr_assert_eq(s->kind, FC_SENT_CLOSE);
    cr_assert(s->flush, "the answer goes out first");
    cr_assert_null(fc_next_sent(fc));
    cr_assert_not(fc_conn_alive(fc, id));
    /* the codec frames what is sent: 1-byte header for a short answer */
    uint8_t hdr[16];
    cr_assert_eq(fc_conn(fc, id)->codec->header(NULL, 7, hdr), 1);
    cr_assert_eq(hdr[0], 7 << 2);
}

Test(console, outside_split_frame_and_online_request)
{
    peer("123456789", true, true);
    rdv_conn_id id = console_open("10.0.0.1:50000");
    /* frame(OnlineRequest{peers:["123456789"]}): 14-byte payload */
    const uint8_t req[] = { 14 << 2, 0xba, 0x01, 0x0b, 0x12, 0x09, '1', '2', '3', '4', '5', '6', '7', '8', '9' };
    fc_conn_raw(fc, id, req, 5);
    cr_assert_null(fc_next_sent(fc));
    fc_conn_raw(fc, id, req + 5, sizeof req - 5);
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s);
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE);
    cr_assert_eq(s->msg->online_response->states.len, 1);
    cr_assert_eq(s->msg->online_response->states.data[0], 0x80);
}

Test(console, R7_outside_oversize_header_closes_at_once)
{
    rdv_conn_id id = console_open("10.0.0.1:50000");
    const uint8_t hdr[] = { 0xff, 0xff, 0xff, 0xff };
    fc_conn_raw(fc, id, hdr, sizeof hdr);
    cr_assert_not(fc_conn_alive(fc, id));
    cr_assert_null(fc_next_sent(fc));
}

Test(console, outside_garbage_and_empty_frames_close_unanswered)
{
    rdv_conn_id id = console_open("10.0.0.1:50000");
    const uint8_t g[] = { 0x0c, 0xff, 0xff, 0xff };
    fc_conn_raw(fc, id, g, sizeof g);
    cr_assert_not(fc_conn_alive(fc, id));
    id = console_open("10.0.0.1:50001");
    const uint8_t e[] = { 0x00 };
    fc_conn_raw(fc, id, e, 1);
    cr_assert_not(fc_conn_alive(fc, id));
    const fc_sent *s;
    while ((s = fc_next_sent(fc)))
        cr_assert_eq(s->kind, FC_SENT_CLOSE, "no reply");
}

Test(console, refuses_to_share_the_port_with_a_core_listener)
{
    teardown();
    NPEERS = 0;
    fc = fc_new();
    fc_listener(fc, "main", RDV_TR_TCP, 21116);
    fc_listener(fc, "nat", RDV_TR_TCP, 21115);
    rdv_core *h = fc_handle(fc, "registry");
    h->api->service_publish(h, RDV_SVC_REGISTRY, RDV_SVC_REGISTRY_VERSION, &reg_api, NULL);
    void *st;
    cr_assert_eq(fc_load(fc, rdv_module_get(), "compat_console=true\n", &st), -EADDRINUSE);
    cr_assert(fc_log_contains(fc, "remove the \"nat\" listener"));
}

Test(console, allowed_names_are_upstreams)
{
    const char *yes[] = { "h", "rs", "relay-servers", "rg", "reload-geo", "ib", "ip-blocker", "ic", "ip-changes",
                          "pr", "punch-requests", "aur", "always-use-relay", "tg", "test-geo" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_assert(nt_console_allowed(yes[i]), "%s", yes[i]);
    const char *no[] = { "help", "stats", "reload", "log-level", "modules", "H", "" };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert_not(nt_console_allowed(no[i]), "%s", no[i]);
}
