/* libFuzzer: the candy module's message path (candy_net.c, candy_proto.c)
 * on the fake core with a fake ws-server service, and its text parsers.
 *
 * Input: a sequence of records "client (1 byte) | length (1 byte) | bytes":
 * each is one binary message of one of 8 clients (the first opens the
 * side). Records are built so that some messages are valid (byte 0 of a
 * record's bytes 0xf0..0xff makes the fuzzer's bytes the payload of a
 * VMAC/EXPTTUN/AUTH with a correct hash and a timestamp the fuzzer picks,
 * near the fake clock or at the int64 extremes; every other instance
 * refuses timestamps outside a 300 s window). The whole input is also tried as
 * a CIDR field and as an sdwan rule list. Invariants: the module's client
 * counts match the sides the fake transport holds; nothing leaks (ASan). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../fakecore/fakecore.h"
#include "candy.h"

#define CHECK(x) ((x) ? (void)0 : abort())
#define NCLI 8
#define RESET_EVERY 5000 /* the fake core caps connections per instance */

const rdv_module *rdv_module_get(void);

static const rdv_ws_side_api *api;
static void *self;
static rdv_conn_id ids[NCLI];
static bool open_[NCLI];
static fc_core *fc;
static void *st;
static int runs, instances;
static size_t opened; /* sides opened on this instance */
static int port_dummy;

static int slot_of(rdv_conn_id id)
{
    for (int i = 0; i < NCLI; i++)
        if (open_[i] && ids[i] == id)
            return i;
    return -1;
}

static void end_side(rdv_conn_id id)
{
    int i = slot_of(id);
    if (i < 0)
        return;
    open_[i] = false;
    api->side_closed(self, id);
}

static int f_send(void *tp, rdv_conn_id id, const uint8_t *p, size_t n)
{
    (void)tp, (void)p;
    if (slot_of(id) < 0)
        return -ENOTCONN;
    if (n > 2000 || (n && p[n - 1] == 0x5a && n % 7 == 0)) { /* now and then a queue overflows */
        end_side(id);
        return -ENOBUFS;
    }
    return 0;
}
static int f_pause(void *tp, rdv_conn_id id, bool p) { (void)tp, (void)id, (void)p; return 0; }
static int f_close(void *tp, rdv_conn_id id, uint16_t s)
{
    (void)tp, (void)s;
    if (slot_of(id) < 0)
        return -ENOTCONN;
    end_side(id);
    return 0;
}
static const rdv_ws_side_ops ops = { f_send, f_pause, f_close };

static rdv_ws_port *f_open(void *tp, const rdv_ws_port_spec *s, const rdv_ws_side_api *a, void *sf)
{
    (void)tp, (void)s;
    api = a, self = sf;
    return (rdv_ws_port *)&port_dummy;
}
static int f_limits(void *tp, rdv_ws_port *p, const rdv_ws_port_spec *s) { (void)tp, (void)p, (void)s; return 0; }
static int f_number(void *tp, const rdv_ws_port *p) { (void)tp, (void)p; return 1; }
static void f_close_port(void *tp, rdv_ws_port *p)
{
    (void)tp, (void)p;
    memset(open_, 0, sizeof open_);
}
static const rdv_ws_server_api srv = { f_open, f_limits, f_number, f_close_port };

static void start(bool window)
{
    fc = fc_new();
    fc_set_wall_us(fc, 1700000000ull * 1000000u);
    rdv_core *h = fc_handle(fc, "websocket-transport");
    CHECK(h->api->service_publish(h, RDV_SVC_WS_SERVER, RDV_SVC_WS_SERVER_VERSION, &srv, NULL) == 0);
    fc_listener(fc, "candy-fc", RDV_TR_TCP, 1);
    CHECK(fc_load(fc, rdv_module_get(),
                  window ? "timestamp_window_s = 300\npassword = \"pw\"\ndhcp = \"10.0.0.0/28\"\nrate = 0\n"
                  "sdwan = [ \"10.0.0.0/28,192.168.0.0/16,10.0.0.1\" ]\n" :
                  "password = \"pw\"\ndhcp = \"10.0.0.0/28\"\nrate = 0\n"
                  "sdwan = [ \"10.0.0.0/28,192.168.0.0/16,10.0.0.1\", \"10.0.0.0/29,172.16.0.0/12,10.0.0.2\" ]\n",
                  &st) == 0);
}

/* The timestamp of a valid message: mostly the fake clock's, else off by
 * up to +-2^15 s or at an int64 extreme (the skew overflow of 5a56f4e). */
static int64_t stamp(const uint8_t *p, size_t n)
{
    const int64_t now = 1700000000;
    if (n < 6)
        return now;
    switch (p[4] & 7) {
    case 4: return now + (int16_t)(p[5] << 8 | (n > 6 ? p[6] : 0));
    case 5: return INT64_MIN + (p[5] & 3);
    case 6: return INT64_MAX - (p[5] & 3);
    case 7: return (int64_t)p[5] << 24;
    default: return now;
    }
}

/* A valid message of the kind the fuzzer's bytes ask for. */
static size_t valid(const uint8_t *p, size_t n, uint8_t *out)
{
    static const candy_secret pw = { "pw", 2 };
    uint32_t v = n >= 4 ? candy_get32(p) : 0x0a000001;
    int64_t ts = stamp(p, n);
    switch (n ? p[0] & 3 : 2) {
    case 0: {
        uint8_t mac[CANDY_VMAC_BYTES] = { 0 };
        memcpy(mac, p, n < sizeof mac ? n : sizeof mac);
        return candy_build_vmac(out, &pw, mac, ts);
    }
    case 1:
        return candy_build_expttun(out, &pw, (candy_cidr){ v, p[0] & 1 ? 28 : (v & 31) }, ts);
    default:
        return candy_build_auth(out, &pw, 0x0a000000 | (v & 15), ts);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A run opens at most one side per record (2 bytes): a new instance
     * before the fake core's cap on connections could be passed. */
    bool full = opened + size / 2 + 1 > FC_MAX_CONNS;
    if (!fc || ++runs % RESET_EVERY == 0 || full) {
        if (fc)
            fc_free(fc);
        memset(open_, 0, sizeof open_);
        opened = 0;
        start(++instances % 2);
    }
    /* the text parsers */
    candy_cidr c;
    candy_cidr_parse((const char *)data, size, &c);
    char *text = malloc(size + 1);
    CHECK(text);
    memcpy(text, data, size);
    text[size] = 0;
    candy_rule rules[8];
    size_t nr;
    char err[128];
    candy_rules_parse(text, rules, 8, &nr, err, sizeof err);
    free(text);
    /* the message path */
    for (size_t i = 0; i + 2 <= size;) {
        int k = data[i] % NCLI;
        size_t n = data[i + 1];
        i += 2;
        if (n > size - i)
            n = size - i;
        const uint8_t *p = data + i;
        i += n;
        uint8_t buf[CANDY_EXPTTUN_LEN];
        if (n && p[0] >= 0xf0) {
            n = valid(p + 1, n - 1, buf);
            p = buf;
        }
        if (!open_[k]) {
            rdv_addr a = fc_addr("127.0.0.1:9");
            ids[k] = fc_conn_open(fc, "candy-fc", RDV_TR_TCP, &a);
            opened++;
            open_[k] = true;
            if (api->side_open(self, ids[k], &a, &a, p, n, &ops, NULL) != RDV_OK)
                open_[k] = false; /* refused: no side_closed */
        } else if (api->side_message(self, ids[k], p, n) != RDV_OK) {
            end_side(ids[k]);
        }
        fc_advance(fc, 7);
    }
    int held = 0;
    for (int k = 0; k < NCLI; k++)
        held += open_[k];
    CHECK(fc_gauge(fc, "candy.clients") == (uint64_t)held);
    CHECK(fc_gauge(fc, "candy.authenticated") <= (uint64_t)held);
    for (int k = 0; k < NCLI; k++) /* every run starts with no client */
        if (open_[k])
            end_side(ids[k]);
    CHECK(fc_gauge(fc, "candy.clients") == 0);
    return 0;
}
