/* test_candy_net.c — the candy module against the fake core and a fake
 * ws-server service (rdv/svc/ws_server.h): what each message does to the
 * network (candy.md §6.2), address allocation through EXPTTUN (§6.3),
 * broadcast (§6.4), ROUTE (§6.5), the limits of §6.7, reload. The fake
 * service behaves like websocket-transport where it matters: a failed send
 * or an ops->close ends the side at once, with side_closed. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../candy.h"
#include "fakecore.h"

const rdv_module *rdv_module_get(void);

/* ------------------------------------------------------------------ fake ws-server */
#define FW_MAX 256
typedef struct fw_msg {
    rdv_conn_id to;
    uint8_t p[4096];
    size_t n;
} fw_msg;

static struct {
    const rdv_ws_side_api *api;
    void *self;
    rdv_ws_port_spec spec;
    int port_closes, limit_calls;
    fw_msg sent[FW_MAX];
    int nsent, rd;
    rdv_conn_id open[64];       /* sides the module holds */
    int nopen;
    rdv_conn_id fail_to;        /* a send to it fails (its queue overflowed) */
    int closes;
} fw;
static int fw_port_dummy;

static bool fw_is_open(rdv_conn_id id)
{
    for (int i = 0; i < fw.nopen; i++)
        if (fw.open[i] == id)
            return true;
    return false;
}

static void fw_end(rdv_conn_id id)
{
    for (int i = 0; i < fw.nopen; i++)
        if (fw.open[i] == id) {
            fw.open[i] = fw.open[--fw.nopen];
            fw.closes++;
            fw.api->side_closed(fw.self, id);
            return;
        }
}

static int fw_send(void *tp, rdv_conn_id id, const uint8_t *p, size_t n)
{
    (void)tp;
    if (!fw_is_open(id))
        return -ENOTCONN;
    if (id == fw.fail_to) {
        fw_end(id);
        return -ENOBUFS;
    }
    cr_assert_lt(fw.nsent, FW_MAX);
    cr_assert_leq(n, sizeof fw.sent[0].p);
    fw_msg *m = &fw.sent[fw.nsent++];
    m->to = id, m->n = n;
    memcpy(m->p, p, n);
    return 0;
}

static int fw_pause(void *tp, rdv_conn_id id, bool paused)
{
    (void)tp, (void)id, (void)paused;
    return 0;
}

static int fw_close(void *tp, rdv_conn_id id, uint16_t status)
{
    (void)tp, (void)status;
    if (!fw_is_open(id))
        return -ENOTCONN;
    fw_end(id);
    return 0;
}

static const rdv_ws_side_ops fw_ops = { fw_send, fw_pause, fw_close };

static rdv_ws_port *fw_port_open(void *tp, const rdv_ws_port_spec *spec, const rdv_ws_side_api *api, void *self)
{
    (void)tp;
    fw.api = api, fw.self = self, fw.spec = *spec;
    return (rdv_ws_port *)&fw_port_dummy;
}

static int fw_port_limits(void *tp, rdv_ws_port *p, const rdv_ws_port_spec *spec)
{
    (void)tp, (void)p;
    fw.limit_calls++;
    fw.spec.max_message = spec->max_message;
    return 0;
}

static int fw_port_number(void *tp, const rdv_ws_port *p)
{
    (void)tp, (void)p;
    return 26817;
}

static void fw_port_close(void *tp, rdv_ws_port *p)
{
    (void)tp, (void)p;
    fw.port_closes++;
    fw.nopen = 0; /* no callback after port_close */
}

static const rdv_ws_server_api fw_api = { fw_port_open, fw_port_limits, fw_port_number, fw_port_close };

/* ------------------------------------------------------------------ suite */
static fc_core *fc;
static void *st;
static const candy_secret PASS = { "pass", 4 };
#define NOW 1700000000LL

#define CONF                                                                                                          \
    "password = \"pass\"\ndhcp = \"10.9.0.0/24\"\n"                                                                    \
    "sdwan = [ \"10.9.0.0/24,192.168.50.0/24,10.9.0.1\", \"10.9.0.2/32,172.16.0.0/16,10.9.0.1\" ]\n"

static void load(const char *conf)
{
    memset(&fw, 0, sizeof fw);
    fc = fc_new();
    fc_set_wall_us(fc, (uint64_t)NOW * 1000000u);
    rdv_core *h = fc_handle(fc, "websocket-transport");
    cr_assert_eq(h->api->service_publish(h, RDV_SVC_WS_SERVER, RDV_SVC_WS_SERVER_VERSION, &fw_api, NULL), 0);
    fc_listener(fc, "candy-fc", RDV_TR_TCP, 26817);
    cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &st), 0);
    cr_assert_not_null(fw.api, "the port is opened at start");
    cr_assert_str_eq(fw.spec.name, "candy");
    cr_assert_eq(fw.spec.port, 26817);
    cr_assert_eq(fw.spec.max_message, 65535, "candy.md §4: up to 65,535 bytes");
}

static void setup(void) { load(CONF); }
static void teardown(void) { fc_free(fc); }

TestSuite(net, .init = setup, .fini = teardown);

static uint64_t ctr(const char *name)
{
    char full[64];
    snprintf(full, sizeof full, "candy.%s", name);
    return fc_counter(fc, full);
}

/* A new side whose first message is p (the transport's side_open). */
static int open_side(const char *peer, const uint8_t *p, size_t n, rdv_conn_id *id)
{
    rdv_addr a = fc_addr(peer);
    *id = fc_conn_open(fc, "candy-fc", RDV_TR_TCP, &a);
    fw.open[fw.nopen++] = *id;
    int r = fw.api->side_open(fw.self, *id, &a, &a, p, n, &fw_ops, NULL);
    if (r != RDV_OK) /* refused: the transport closes it, no side_closed */
        for (int i = 0; i < fw.nopen; i++)
            if (fw.open[i] == *id)
                fw.open[i] = fw.open[--fw.nopen];
    return r;
}

static int msg(rdv_conn_id id, const void *p, size_t n)
{
    int r = fw.api->side_message(fw.self, id, p, n);
    if (r != RDV_OK)
        fw_close(NULL, id, 0); /* the transport ends it: side_closed */
    return r;
}

static const fw_msg *next_sent(void)
{
    cr_assert_lt(fw.rd, fw.nsent, "nothing (more) was sent");
    return &fw.sent[fw.rd++];
}

static void no_more_sent(void) { cr_assert_eq(fw.rd, fw.nsent, "%d unexpected message(s)", fw.nsent - fw.rd); }

static size_t vmac_msg(uint8_t out[CANDY_VMAC_LEN], const char *vmac)
{
    uint8_t v[CANDY_VMAC_BYTES] = { 0 };
    if (vmac)
        memcpy(v, vmac, CANDY_VMAC_BYTES);
    return candy_build_vmac(out, &PASS, v, NOW);
}

static size_t expttun_msg(uint8_t out[CANDY_EXPTTUN_LEN], uint32_t host, unsigned prefix)
{
    return candy_build_expttun(out, &PASS, (candy_cidr){ host, prefix }, NOW);
}

/* A client as candy.md §7 has it: VMAC, EXPTTUN, AUTH for what it got. */
static rdv_conn_id client(const char *peer, const char *vmac, uint32_t want, uint32_t *got)
{
    uint8_t b[CANDY_EXPTTUN_LEN];
    rdv_conn_id id;
    cr_assert_eq(open_side(peer, b, vmac_msg(b, vmac), &id), RDV_OK);
    fw.rd = fw.nsent; /* what earlier clients got is not looked at */
    cr_assert_eq(msg(id, b, expttun_msg(b, want, want ? 24 : 0)), RDV_OK);
    const fw_msg *r = next_sent();
    cr_assert_eq(r->to, id);
    candy_cidr c;
    cr_assert_eq(candy_check_expttun(r->p, r->n, &PASS, &c, NULL), CANDY_OK, "the reply's hash is the password's");
    cr_assert_eq(r->n, CANDY_EXPTTUN_LEN);
    uint8_t a[CANDY_AUTH_LEN];
    cr_assert_eq(msg(id, a, candy_build_auth(a, &PASS, c.host, NOW)), RDV_OK);
    *got = c.host;
    return id;
}

static void skip_routes(rdv_conn_id id)
{
    while (fw.rd < fw.nsent && fw.sent[fw.rd].to == id && fw.sent[fw.rd].p[0] == CANDY_ROUTE)
        fw.rd++;
}

/* A FORWARD carrying an IPv4 header towards dst. */
static size_t forward_msg(uint8_t *out, uint32_t src, uint32_t dst, size_t payload)
{
    memset(out, 0, 21 + payload);
    out[0] = CANDY_FORWARD;
    out[1] = 0x45;
    candy_put32(out + 13, src);
    candy_put32(out + 17, dst);
    for (size_t i = 0; i < payload; i++)
        out[21 + i] = (uint8_t)i;
    return 21 + payload;
}

Test(net, addresses_are_handed_out_in_order_and_auth_gets_routes)
{
    uint32_t a, b;
    rdv_conn_id ca = client("127.0.0.1:1", "aaaaaaaaaaaaaaaa", 0, &a);
    /* §6.5: the rule for 10.9.0.0/24 applies to 10.9.0.1, the /32 one not */
    const fw_msg *r = next_sent();
    cr_assert_eq(r->to, ca);
    static const uint8_t route[] = { 6, 1, 0, 0, 192, 168, 50, 0, 255, 255, 255, 0, 10, 9, 0, 1 };
    cr_assert_eq(r->n, sizeof route);
    cr_assert_arr_eq(r->p, route, sizeof route);
    rdv_conn_id cb = client("127.0.0.1:2", "bbbbbbbbbbbbbbbb", 0, &b);
    r = next_sent();
    cr_assert_eq(r->to, cb);
    cr_assert_eq(r->p[1], 2, "10.9.0.2 gets both rules in one ROUTE");
    cr_assert_eq(a, 0x0a090001);
    cr_assert_eq(b, 0x0a090002, "§6.3: sequential");
    no_more_sent();
    cr_assert_eq(fc_gauge(fc, "candy.authenticated"), 2);
    cr_assert_eq(ctr("expttun_granted"), 2);
    char out[2048];
    cr_assert_eq(fc_admin(fc, "candy", out, sizeof out), 0);
    cr_assert(strstr(out, "10.9.0.2 vmac bbbbbbbbbbbbbbbb from 127.0.0.1:2"), "%s", out);
}

Test(net, forward_unicast_broadcast_and_no_owner)
{
    uint32_t a, b, c;
    rdv_conn_id ca = client("127.0.0.1:1", NULL, 0, &a), cb = client("127.0.0.1:2", NULL, 0, &b),
                cc = client("127.0.0.1:3", NULL, 0, &c);
    fw.rd = fw.nsent;
    uint8_t f[64];
    size_t n = forward_msg(f, a, b, 30);
    cr_assert_eq(msg(ca, f, n), RDV_OK);
    const fw_msg *r = next_sent();
    cr_assert(r->to == cb && r->n == n && memcmp(r->p, f, n) == 0, "§6.2: unchanged, to the owner of daddr");
    no_more_sent();
    n = forward_msg(f, a, 0x0a090077, 0);
    cr_assert_eq(msg(ca, f, n), RDV_OK);
    no_more_sent();
    cr_assert_eq(ctr("forward_no_owner"), 1);
    /* §6.4: directed broadcast of the dhcp network, multicast, limited */
    const uint32_t bc[] = { 0x0a0900ff, 0xe0000001, 0xffffffff };
    for (int i = 0; i < 3; i++) {
        n = forward_msg(f, a, bc[i], 4);
        cr_assert_eq(msg(ca, f, n), RDV_OK);
        rdv_conn_id t1 = next_sent()->to, t2 = next_sent()->to;
        cr_assert((t1 == cb && t2 == cc) || (t1 == cc && t2 == cb), "every other client, not the sender");
        no_more_sent();
    }
    cr_assert_eq(ctr("forward_broadcast"), 3);
}

Test(net, discovery_udp4conn_general_are_routed_by_their_own_addresses)
{
    uint32_t a, b;
    rdv_conn_id ca = client("127.0.0.1:1", NULL, 0, &a), cb = client("127.0.0.1:2", NULL, 0, &b);
    fw.rd = fw.nsent;
    uint8_t d[CANDY_UDP4CONN_LEN + 3] = { CANDY_UDP4CONN };
    candy_put32(d + 1, a), candy_put32(d + 5, b), candy_put32(d + 9, 0xcb007101), d[13] = 0x1f, d[14] = 0x90;
    cr_assert_eq(msg(ca, d, sizeof d), RDV_OK, "trailing bytes are accepted (§5)");
    const fw_msg *r = next_sent();
    cr_assert(r->to == cb && r->n == sizeof d && memcmp(r->p, d, sizeof d) == 0);
    uint8_t disc[CANDY_DISCOVERY_LEN] = { CANDY_DISCOVERY };
    candy_put32(disc + 1, b), candy_put32(disc + 5, CANDY_BROADCAST);
    cr_assert_eq(msg(cb, disc, sizeof disc), RDV_OK);
    cr_assert_eq(next_sent()->to, ca, "broadcast DISCOVERY: every other client");
    uint8_t g[18] = { CANDY_GENERAL, 0 };
    candy_put32(g + 4, a), candy_put32(g + 8, b);
    cr_assert_eq(msg(ca, g, sizeof g), RDV_OK);
    cr_assert_eq(next_sent()->to, cb);
    no_more_sent();
    /* §6.2: src must be the sender's own address */
    candy_put32(g + 4, b);
    cr_assert_eq(msg(ca, g, sizeof g), RDV_CLOSE);
    cr_assert_eq(ctr("protocol_error"), 1);
    cr_assert_eq(fc_gauge(fc, "candy.authenticated"), 1, "the closed client's address is free");
}

Test(net, bad_messages_close_and_unknown_kinds_are_ignored)
{
    uint8_t b[CANDY_EXPTTUN_LEN];
    rdv_conn_id id;
    cr_assert_eq(open_side("127.0.0.1:1", b, vmac_msg(b, NULL), &id), RDV_OK);
    uint8_t f[32];
    cr_assert_eq(msg(id, f, forward_msg(f, 1, 2, 0)), RDV_CLOSE, "§6.2: FORWARD needs AUTH");
    cr_assert_eq(ctr("not_authenticated"), 1);

    const candy_secret wrong = { "word", 4 };
    uint8_t a[CANDY_AUTH_LEN];
    candy_build_auth(a, &wrong, 0x0a090005, NOW);
    cr_assert_eq(open_side("127.0.0.1:2", a, sizeof a, &id), RDV_CLOSE, "a wrong password on the first message");
    cr_assert_eq(ctr("auth_bad_hash"), 1);
    cr_assert_eq(fc_gauge(fc, "candy.clients"), 0, "a refused first message leaves nothing behind");

    cr_assert_eq(open_side("127.0.0.1:3", b, vmac_msg(b, NULL), &id), RDV_OK);
    static const uint8_t odd[] = { 7, 1, 2 }, route[] = { 6, 0, 0, 0 };
    cr_assert_eq(msg(id, odd, sizeof odd), RDV_OK);
    cr_assert_eq(msg(id, route, sizeof route), RDV_OK, "ROUTE from a client is ignored (§5)");
    cr_assert_eq(msg(id, "", 0), RDV_OK, "an empty message is not a message (§4)");
    cr_assert_eq(ctr("ignored"), 2);
    candy_build_auth(a, &PASS, 0x0a090005, NOW);
    cr_assert_eq(msg(id, a, sizeof a - 1), RDV_CLOSE, "one byte short");
    cr_assert_eq(ctr("protocol_error"), 1);
    no_more_sent();
}

Test(net, auth_takes_the_address_over_and_reconnect_keeps_it)
{
    uint32_t a, a2;
    rdv_conn_id old = client("127.0.0.1:1", "0123456789abcdef", 0, &a);
    rdv_conn_id other = client("127.0.0.1:2", "fedcba9876543210", 0, &a2);
    fw.rd = fw.nsent;
    /* §6.3 step 1: the same machine (same vmac) asks for its address back
     * while its old connection is still there: granted; its AUTH closes
     * the old connection (§6.2). */
    rdv_conn_id neu = client("127.0.0.1:3", "0123456789abcdef", a, &a2);
    cr_assert_eq(a2, a);
    cr_assert_not(fw_is_open(old), "the previous holder is closed");
    cr_assert(fw_is_open(other));
    cr_assert_eq(ctr("kicked"), 1);
    cr_assert_eq(fc_gauge(fc, "candy.authenticated"), 2);
    skip_routes(neu);
    uint8_t f[32];
    cr_assert_eq(msg(other, f, forward_msg(f, 0x0a090002, a, 0)), RDV_OK);
    cr_assert_eq(next_sent()->to, neu, "the map points to the newcomer");
    /* another machine asking for a taken address gets the next free one */
    uint32_t c;
    skip_routes(client("127.0.0.1:4", "xxxxxxxxxxxxxxxx", a, &c));
    cr_assert_eq(c, 0x0a090003);
    /* a second AUTH with another address moves the entry (§6.2, ours) */
    uint8_t au[CANDY_AUTH_LEN];
    cr_assert_eq(msg(neu, au, candy_build_auth(au, &PASS, 0x0a090042, NOW)), RDV_OK);
    skip_routes(neu);
    cr_assert_eq(msg(other, f, forward_msg(f, 0x0a090002, a, 0)), RDV_OK);
    no_more_sent();
    cr_assert_eq(ctr("forward_no_owner"), 1, "the old address is free again");
}

Test(net, full_network_and_no_dhcp_close)
{
    teardown();
    load("password = \"pass\"\ndhcp = \"10.9.0.0/30\"\n");
    uint32_t a, b;
    client("127.0.0.1:1", NULL, 0, &a);
    client("127.0.0.1:2", NULL, 0, &b);
    uint8_t m[CANDY_EXPTTUN_LEN];
    rdv_conn_id id;
    cr_assert_eq(open_side("127.0.0.1:3", m, vmac_msg(m, NULL), &id), RDV_OK);
    cr_assert_eq(msg(id, m, expttun_msg(m, 0, 0)), RDV_CLOSE, "a /30 has two addresses");
    cr_assert_eq(ctr("expttun_full"), 1);
    teardown();
    load("password = \"pass\"\n");
    cr_assert_eq(open_side("127.0.0.1:4", m, expttun_msg(m, 0, 0), &id), RDV_CLOSE, "§6.2: EXPTTUN needs dhcp");
    /* a static address works without dhcp */
    uint8_t au[CANDY_AUTH_LEN];
    cr_assert_eq(open_side("127.0.0.1:5", au, candy_build_auth(au, &PASS, 0x0a000001, NOW), &id), RDV_OK);
    cr_assert_eq(fc_gauge(fc, "candy.authenticated"), 1);
}

Test(net, rate_limits_drop_and_refill)
{
    teardown();
    load(CONF "rate = 10\nbroadcast_rate = 2\n");
    uint32_t a, b;
    rdv_conn_id ca = client("127.0.0.1:1", NULL, 0, &a), cb = client("127.0.0.1:2", NULL, 0, &b);
    (void)cb;
    fw.rd = fw.nsent;
    fc_advance(fc, 1000); /* a full bucket: 10 */
    uint8_t f[32];
    size_t n = forward_msg(f, a, b, 0);
    for (int i = 0; i < 12; i++)
        cr_assert_eq(msg(ca, f, n), RDV_OK);
    cr_assert_eq(fw.nsent - fw.rd, 10);
    cr_assert_eq(ctr("dropped_rate"), 2);
    fw.rd = fw.nsent;
    fc_advance(fc, 400); /* four more */
    for (int i = 0; i < 6; i++)
        msg(ca, f, n);
    cr_assert_eq(fw.nsent - fw.rd, 4);
    fw.rd = fw.nsent;
    fc_advance(fc, 1000);
    n = forward_msg(f, a, 0xffffffff, 0);
    for (int i = 0; i < 3; i++)
        msg(ca, f, n);
    cr_assert_eq(fw.nsent - fw.rd, 2, "broadcast_rate 2");
}

Test(net, a_rate_below_the_handshake_still_lets_clients_in)
{
    /* Before: the bucket held `rate` messages, so at rate = 1 the EXPTTUN
     * after VMAC was dropped, and a client never asks again: connected,
     * pinging, without an address for ever. The bucket holds at least 8. */
    teardown();
    load(CONF "rate = 1\n");
    uint32_t a, b;
    rdv_conn_id ca = client("127.0.0.1:1", NULL, 0, &a); /* asserts the EXPTTUN reply */
    client("127.0.0.1:2", NULL, 0, &b);
    cr_assert_eq(fc_gauge(fc, "candy.authenticated"), 2);
    cr_assert_eq(ctr("dropped_rate"), 0);
    fw.rd = fw.nsent;
    uint8_t f[32];
    size_t n = forward_msg(f, a, b, 0);
    for (int i = 0; i < 7; i++) /* 8 - 3 left after the handshake */
        msg(ca, f, n);
    cr_assert_eq(fw.nsent - fw.rd, 5);
    cr_assert_eq(ctr("dropped_rate"), 2);
    fw.rd = fw.nsent;
    fc_advance(fc, 1000); /* then 1 a second */
    msg(ca, f, n), msg(ca, f, n);
    cr_assert_eq(fw.nsent - fw.rd, 1);
}

Test(net, messages_longer_than_a_client_reads_are_dropped_not_relayed)
{
    /* Stock clients read a message into 1500 bytes and reconnect on a longer
     * one: relaying a 1501-byte FORWARD (a client with mtu 1500) would knock
     * every receiver off the network, again and again. */
    uint32_t a, b;
    rdv_conn_id ca = client("127.0.0.1:1", NULL, 0, &a), cb = client("127.0.0.1:2", NULL, 0, &b);
    fw.rd = fw.nsent;
    static uint8_t f[4100];
    size_t n = forward_msg(f, a, b, 1500 - 21);
    cr_assert_eq(msg(ca, f, n), RDV_OK);
    const fw_msg *r = next_sent();
    cr_assert(r->to == cb && r->n == 1500, "1500 bytes pass");
    n = forward_msg(f, a, b, 1501 - 21);
    cr_assert_eq(msg(ca, f, n), RDV_OK, "the sender stays");
    n = forward_msg(f, a, 0xffffffff, 3000);
    cr_assert_eq(msg(ca, f, n), RDV_OK);
    uint8_t g[1600] = { CANDY_GENERAL };
    candy_put32(g + 4, a), candy_put32(g + 8, b);
    cr_assert_eq(msg(ca, g, sizeof g), RDV_OK);
    no_more_sent();
    cr_assert_eq(ctr("dropped_too_big"), 3);
    cr_assert(fc_log_contains(fc, "sent a 1501-byte message; dropped, clients read at most 1500"));
    cr_assert(fw_is_open(ca) && fw_is_open(cb));
    n = forward_msg(f, a, b, 10);
    cr_assert_eq(msg(ca, f, n), RDV_OK);
    cr_assert_eq(next_sent()->to, cb, "smaller packets still flow");
    /* an operator whose clients all read more raises it */
    teardown();
    load(CONF "client_max = 4096\n");
    ca = client("127.0.0.1:1", NULL, 0, &a), cb = client("127.0.0.1:2", NULL, 0, &b);
    fw.rd = fw.nsent;
    n = forward_msg(f, a, b, 4096 - 21);
    cr_assert_eq(msg(ca, f, n), RDV_OK);
    cr_assert_eq(next_sent()->n, 4096);
    n = forward_msg(f, a, b, 4097 - 21);
    cr_assert_eq(msg(ca, f, n), RDV_OK);
    no_more_sent();
}

Test(net, auth_for_a_broadcast_or_multicast_address_is_refused)
{
    /* Native accepts it; its holder would then receive every FORWARD sent
     * to that address as a unicast, instead of everyone. */
    const uint32_t bad[] = { 0xffffffff, 0xe0000001, 0xefffffff, 0x0a0900ff };
    for (int i = 0; i < 4; i++) {
        uint8_t b[CANDY_EXPTTUN_LEN];
        rdv_conn_id id;
        cr_assert_eq(open_side("127.0.0.1:1", b, vmac_msg(b, NULL), &id), RDV_OK);
        uint8_t au[CANDY_AUTH_LEN];
        cr_assert_eq(msg(id, au, candy_build_auth(au, &PASS, bad[i], NOW)), RDV_CLOSE, "address %08x", bad[i]);
    }
    cr_assert_eq(ctr("protocol_error"), 4);
    cr_assert_eq(fc_gauge(fc, "candy.authenticated"), 0);
    cr_assert(fc_log_contains(fc, "AUTH for a broadcast or multicast address"));
    uint8_t b[CANDY_EXPTTUN_LEN], au[CANDY_AUTH_LEN];
    rdv_conn_id id;
    cr_assert_eq(open_side("127.0.0.1:1", b, vmac_msg(b, NULL), &id), RDV_OK);
    cr_assert_eq(msg(id, au, candy_build_auth(au, &PASS, 0x0a090000, NOW)), RDV_OK,
                 "the network address is a host's (a static client may use it)");
}

Test(net, slow_receivers_lose_packets_not_control_messages)
{
    uint32_t a, b;
    rdv_conn_id ca = client("127.0.0.1:1", NULL, 0, &a), cb = client("127.0.0.1:2", NULL, 0, &b);
    fw.rd = fw.nsent;
    fc_conn_set_wqueue(fc, cb, 1048577); /* over queue_max */
    uint8_t f[32];
    cr_assert_eq(msg(ca, f, forward_msg(f, a, b, 0)), RDV_OK);
    no_more_sent();
    cr_assert_eq(ctr("dropped_queue"), 1);
    uint8_t d[CANDY_UDP4CONN_LEN] = { CANDY_UDP4CONN };
    candy_put32(d + 1, a), candy_put32(d + 5, b);
    cr_assert_eq(msg(ca, d, sizeof d), RDV_OK);
    cr_assert_eq(next_sent()->to, cb, "UDP4CONN is not a packet: queued");
}

Test(net, a_receiver_closed_by_its_send_does_not_stop_a_broadcast)
{
    uint32_t a, b, c;
    rdv_conn_id ca = client("127.0.0.1:1", NULL, 0, &a), cb = client("127.0.0.1:2", NULL, 0, &b),
                cc = client("127.0.0.1:3", NULL, 0, &c);
    fw.rd = fw.nsent;
    fw.fail_to = cb;
    uint8_t f[32];
    cr_assert_eq(msg(ca, f, forward_msg(f, a, 0xffffffff, 0)), RDV_OK);
    cr_assert_eq(next_sent()->to, cc);
    no_more_sent();
    cr_assert_not(fw_is_open(cb));
    cr_assert_eq(fc_gauge(fc, "candy.authenticated"), 2);
    cr_assert_eq(msg(ca, f, forward_msg(f, a, b, 0)), RDV_OK);
    cr_assert_eq(ctr("forward_no_owner"), 1, "b's address went with it");
}

Test(net, max_clients_and_timestamps)
{
    teardown();
    load(CONF "max_clients = 2\ntimestamp_window_s = 30\n");
    uint8_t m[CANDY_VMAC_LEN];
    rdv_conn_id id;
    cr_assert_eq(open_side("127.0.0.1:1", m, vmac_msg(m, NULL), &id), RDV_OK);
    cr_assert_eq(open_side("127.0.0.1:2", m, vmac_msg(m, NULL), &id), RDV_OK);
    cr_assert_eq(open_side("127.0.0.1:3", m, vmac_msg(m, NULL), &id), RDV_CLOSE);
    cr_assert_eq(ctr("clients_refused"), 1);
    fw_close(NULL, id == 0 ? 1 : fw.open[0], 0);
    uint8_t v[CANDY_VMAC_BYTES] = { 0 };
    candy_build_vmac(m, &PASS, v, NOW - 31);
    cr_assert_eq(open_side("127.0.0.1:4", m, sizeof m, &id), RDV_CLOSE, "31 s off, window 30");
    cr_assert_eq(ctr("timestamp_refused"), 1);
    candy_build_vmac(m, &PASS, v, NOW + 30);
    cr_assert_eq(open_side("127.0.0.1:5", m, sizeof m, &id), RDV_OK);
    /* extremes of the signed 64-bit field: no overflow (UBSan), refused */
    candy_build_vmac(m, &PASS, v, INT64_MIN + 1);
    cr_assert_eq(open_side("127.0.0.1:6", m, sizeof m, &id), RDV_CLOSE);
    candy_build_vmac(m, &PASS, v, INT64_MAX);
    cr_assert_eq(open_side("127.0.0.1:7", m, sizeof m, &id), RDV_CLOSE);
}

Test(net, timestamps_far_off_are_accepted_by_default)
{
    uint8_t m[CANDY_VMAC_LEN];
    uint8_t v[CANDY_VMAC_BYTES] = { 0 };
    rdv_conn_id id;
    candy_build_vmac(m, &PASS, v, NOW - 100000);
    cr_assert_eq(open_side("127.0.0.1:1", m, sizeof m, &id), RDV_OK, "§6.2: candy 6.1+ only warns");
    cr_assert(fc_log_contains(fc, "timestamp 100000 s off (accepted)"));
    candy_build_vmac(m, &PASS, v, INT64_MIN + 1);
    cr_assert_eq(open_side("127.0.0.1:2", m, sizeof m, &id), RDV_OK, "even the farthest");
}

Test(net, reload_changes_password_and_range_and_refuses_bad_rules)
{
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "password = \"new\"\ndhcp = \"10.8.0.0/24\"\n"), 0);
    const candy_secret nw = { "new", 3 };
    uint8_t m[CANDY_EXPTTUN_LEN];
    rdv_conn_id id;
    candy_build_expttun(m, &nw, (candy_cidr){ 0, 0 }, NOW);
    cr_assert_eq(open_side("127.0.0.1:1", m, sizeof m, &id), RDV_OK);
    candy_cidr c;
    cr_assert_eq(candy_check_expttun(next_sent()->p, CANDY_EXPTTUN_LEN, &nw, &c, NULL), CANDY_OK);
    cr_assert_eq(c.host, 0x0a080001, "a new range starts at its own cursor");
    cr_assert_lt(fc_reconfigure(fc, rdv_module_get(), st, CONF "sdwan = [ \"10.9.0.1/24,1.0.0.0/8,10.9.0.1\" ]\n"), 0);
    cr_assert_lt(fc_reconfigure(fc, rdv_module_get(), st, "dhcp = \"10.9.0.0/31\"\n"), 0);
    cr_assert_lt(fc_reconfigure(fc, rdv_module_get(), st, "dhcp = \"10.9.0.0\"\n"), 0);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "password = \"new\"\nmax_message = 4000\n"), 0);
    cr_assert_eq(fw.spec.max_message, 4000, "limits reach the port");
    cr_assert_not(fc_log_contains(fc, "is not below core.write_queue_max"));
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "queue_max = 4194304\n"), 0);
    cr_assert(fc_log_contains(fc, "candy.queue_max = 4194304 is not below core.write_queue_max = 4194304"),
              "a queue_max the core's bound overrides is named");
    /* the native "a;b" form in one entry */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st,
                                "sdwan = [ \"10.9.0.0/24,192.168.1.0/24,10.9.0.1;10.9.0.0/24,192.168.2.0/24,10.9.0.1\" ]\n"),
                 0);
}

Test(net, stop_closes_the_port_and_forgets_every_client)
{
    uint32_t a;
    client("127.0.0.1:1", NULL, 0, &a);
    fc_unload(fc, rdv_module_get(), st);
    cr_assert_eq(fw.port_closes, 1);
}
