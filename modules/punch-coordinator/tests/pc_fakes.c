/* pc_fakes.c — fixtures of the punch-coordinator suites (pc_test.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pc_test.h"

fc_core *fc;
pc *P;
fake_registry REG;
fake_keys KEYS;

/* ------------------------------------------------------------------ fake registry */
static int reg_lookup(void *self, const char *id, rdv_lookup how, rdv_peer_info *out)
{
    fake_registry *r = self;
    if (how == RDV_LOOKUP_MEMORY)
        r->lookups_memory++;
    else
        r->lookups_stored++;
    for (size_t i = 0; i < r->n; i++) {
        fake_peer *fp = &r->peers[i];
        if (strcmp(fp->id, id) != 0)
            continue;
        if (!fp->in_memory) {
            if (how == RDV_LOOKUP_MEMORY)
                return -ENOENT;
            /* a database hit is loaded into memory, offline, without address */
            fp->in_memory = true, fp->online = false;
            memset(&fp->addr, 0, sizeof fp->addr);
            fp->addr.u.v4.sin_family = AF_INET, fp->addr.len = sizeof fp->addr.u.v4;
        }
        *out = (rdv_peer_info){ .id = fp->id, .addr = fp->addr, .online = fp->online, .pk = fp->pk,
                                .pk_len = fp->pk_len, .conn = fp->conn, .last_reg_ms = 1 };
        return 0;
    }
    return -ENOENT;
}

static size_t reg_online(void *self)
{
    fake_registry *r = self;
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += r->peers[i].online;
    return n;
}

static size_t reg_count(void *self) { return ((fake_registry *)self)->n; }
static int reg_set_conn(void *self, const char *id, rdv_conn_id c)
{
    (void)self, (void)id, (void)c;
    return -ENOTSUP;
}

static const rdv_registry_api reg_api = {
    .lookup = reg_lookup, .online_count = reg_online, .peer_count = reg_count, .set_conn = reg_set_conn,
};

/* ------------------------------------------------------------------ fake keys */
static bool keys_can_sign(void *self) { return ((fake_keys *)self)->can_sign; }
static const char *keys_licence(void *self) { return ((fake_keys *)self)->licence; }
static const char *keys_pk_b64(void *self) { return ((fake_keys *)self)->pk_b64; }
static const uint8_t *keys_pk(void *self) { return ((fake_keys *)self)->can_sign ? ((fake_keys *)self)->pk : NULL; }
static long keys_sign(void *self, const uint8_t *m, size_t n, uint8_t *out, size_t cap)
{
    fake_keys *k = self;
    if (!k->can_sign)
        return -ENOKEY;
    if (cap < n + crypto_sign_BYTES)
        return -ENOSPC;
    unsigned long long sl;
    crypto_sign(out, &sl, m, n, k->sk);
    return (long)sl;
}

static const rdv_keys_api keys_api = {
    .can_sign = keys_can_sign, .licence_key = keys_licence, .public_key_b64 = keys_pk_b64,
    .public_key = keys_pk, .sign = keys_sign,
};

/* ------------------------------------------------------------------ login */
fake_login LOGIN;

static const char *login_refusal(void *self, const char *token)
{
    fake_login *l = self;
    l->asked++;
    snprintf(l->last_token, sizeof l->last_token, "%s", token);
    return l->refusal && (!token[0] || strcmp(token, "bad") == 0) ? l->refusal : NULL;
}

static const rdv_login_api login_api = { .punch_refusal = login_refusal };

/* ------------------------------------------------------------------ setup */
void pct_setup_conf(const char *conf)
{
    cr_assert_geq(sodium_init(), 0);
    memset(&REG, 0, sizeof REG);
    memset(&KEYS, 0, sizeof KEYS);
    memset(&LOGIN, 0, sizeof LOGIN);
    /* The test-vector server key of wire.md §6.6 (seed 11 x 32). */
    uint8_t seed[32];
    memset(seed, 0x11, sizeof seed);
    crypto_sign_seed_keypair(KEYS.pk, KEYS.sk, seed);
    sodium_bin2base64(KEYS.pk_b64, sizeof KEYS.pk_b64, KEYS.pk, 32, sodium_base64_VARIANT_ORIGINAL);
    snprintf(KEYS.licence, sizeof KEYS.licence, "%s", KEYS.pk_b64);
    KEYS.can_sign = true;

    fc = fc_new();
    fc_listener(fc, "main", RDV_TR_UDP, 21116);
    fc_listener(fc, "main", RDV_TR_TCP, 21116);
    rdv_core *rh = fc_handle(fc, "registry"), *kh = fc_handle(fc, "keys");
    cr_assert_eq(rh->api->service_publish(rh, RDV_SVC_REGISTRY, RDV_SVC_REGISTRY_VERSION, &reg_api, &REG), 0);
    cr_assert_eq(kh->api->service_publish(kh, RDV_SVC_KEYS, RDV_SVC_KEYS_VERSION, &keys_api, &KEYS), 0);
    rdv_core *lh = fc_handle(fc, "login-gate"); /* lets everything through unless a test sets LOGIN.refusal */
    cr_assert_eq(lh->api->service_publish(lh, RDV_SVC_LOGIN, RDV_SVC_LOGIN_VERSION, &login_api, &LOGIN), 0);
    void *st = NULL;
    cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &st), 0, "module did not load");
    P = st;
    fc_advance(fc, 0); /* the first relay check tick */
    fc_clear_sent(fc);
}

void pct_setup(void) { pct_setup_conf(NULL); }

void pct_teardown(void)
{
    if (fc)
        fc_free(fc);
    fc = NULL, P = NULL;
}

fake_peer *pct_peer(const char *id, const char *addr, bool online, uint8_t b)
{
    cr_assert_lt(REG.n, FAKE_PEERS);
    fake_peer *fp = &REG.peers[REG.n++];
    memset(fp, 0, sizeof *fp);
    snprintf(fp->id, sizeof fp->id, "%s", id);
    fp->addr = fc_addr(addr);
    fp->online = online, fp->in_memory = true;
    memset(fp->pk, b, sizeof fp->pk);
    fp->pk_len = 32;
    return fp;
}

/* ------------------------------------------------------------------ messages */
Hbb__RendezvousMessage *pct_phr(const char *id, int nat, const char *licence)
{
    static Hbb__PunchHoleRequest r;
    static Hbb__RendezvousMessage m;
    hbb__punch_hole_request__init(&r);
    hbb__rendezvous_message__init(&m);
    r.id = (char *)(id ? id : "");
    r.nat_type = (Hbb__NatType)nat;
    r.licence_key = (char *)(licence ? licence : "");
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_REQUEST;
    m.punch_hole_request = &r;
    return &m;
}

Hbb__RendezvousMessage *pct_phs(const uint8_t *sa, size_t san, const char *id, const char *relay, int nat,
                                const char *version)
{
    static Hbb__PunchHoleSent s;
    static Hbb__RendezvousMessage m;
    static uint8_t buf[64];
    hbb__punch_hole_sent__init(&s);
    hbb__rendezvous_message__init(&m);
    cr_assert_leq(san, sizeof buf);
    if (san)
        memcpy(buf, sa, san);
    s.socket_addr.data = buf, s.socket_addr.len = san;
    s.id = (char *)(id ? id : "");
    s.relay_server = (char *)(relay ? relay : "");
    s.nat_type = (Hbb__NatType)nat;
    s.version = (char *)(version ? version : "");
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_SENT;
    m.punch_hole_sent = &s;
    return &m;
}

Hbb__RendezvousMessage *pct_local_addr(const uint8_t *sa, size_t san, const uint8_t *la, size_t lan,
                                       const char *relay, const char *id, const char *version)
{
    static Hbb__LocalAddr l;
    static Hbb__RendezvousMessage m;
    static uint8_t b1[64], b2[64];
    hbb__local_addr__init(&l);
    hbb__rendezvous_message__init(&m);
    cr_assert_leq(san, sizeof b1);
    cr_assert_leq(lan, sizeof b2);
    if (san)
        memcpy(b1, sa, san);
    if (lan)
        memcpy(b2, la, lan);
    l.socket_addr.data = b1, l.socket_addr.len = san;
    l.local_addr.data = b2, l.local_addr.len = lan;
    l.relay_server = (char *)(relay ? relay : "");
    l.id = (char *)(id ? id : "");
    l.version = (char *)(version ? version : "");
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_LOCAL_ADDR;
    m.local_addr = &l;
    return &m;
}

Hbb__RendezvousMessage *pct_msg_relay_response(Hbb__RelayResponse *rr)
{
    static Hbb__RendezvousMessage m;
    hbb__rendezvous_message__init(&m);
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE;
    m.relay_response = rr;
    return &m;
}

Hbb__RendezvousMessage *pct_msg_request_relay(Hbb__RequestRelay *rr)
{
    static Hbb__RendezvousMessage m;
    hbb__rendezvous_message__init(&m);
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY;
    m.request_relay = rr;
    return &m;
}

/* ------------------------------------------------------------------ expectations */
rdv_conn_id pct_open(const char *from)
{
    rdv_addr a = fc_addr(from);
    rdv_conn_id id = fc_conn_open(fc, "main", RDV_TR_TCP, &a);
    cr_assert(fc_conn_alive(fc, id));
    return id;
}

const fc_sent *pct_expect_push(const char *to, int union_case)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "expected a push to %s", to);
    cr_assert_eq(s->kind, FC_SENT_UDP);
    cr_assert_str_eq(s->listener_name, "main");
    rdv_addr want = fc_addr(to);
    char a[RDV_ADDR_STRLEN];
    cr_assert(rdv_addr_equal(&s->to, &want), "push went to %s, not %s", rdv_addr_str(&s->to, a, sizeof a), to);
    cr_assert_not_null(s->msg);
    cr_assert_eq((int)s->msg->union_case, union_case, "push is %s", rdv_msg_tag_name((int)s->msg->union_case));
    return s;
}

const fc_sent *pct_expect_conn(rdv_conn_id conn, int union_case)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "expected a message on conn %llu", (unsigned long long)conn);
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->conn, conn);
    cr_assert_not_null(s->msg);
    cr_assert_eq((int)s->msg->union_case, union_case, "got %s", rdv_msg_tag_name((int)s->msg->union_case));
    return s;
}

void pct_expect_nothing(void)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_null(s, "unexpected send (kind %d, %zu bytes)", s ? (int)s->kind : 0, s ? s->len : 0);
}

void pct_expect_bytes(const fc_sent *s, const char *hex)
{
    uint8_t want[256];
    size_t n = 0;
    for (const char *h = hex; *h;) {
        if (*h == ' ') {
            h++;
            continue;
        }
        unsigned v;
        cr_assert_eq(sscanf(h, "%2x", &v), 1);
        cr_assert_lt(n, sizeof want);
        want[n++] = (uint8_t)v;
        h += 2;
    }
    cr_assert_eq(s->len, n, "length %zu, expected %zu (%s)", s->len, n, hex);
    cr_assert_arr_eq(s->raw, want, n, "bytes differ from %s", hex);
}

bool pct_raw_contains(const fc_sent *s, const uint8_t *needle, size_t n)
{
    for (size_t i = 0; i + n <= s->len; i++)
        if (memcmp(s->raw + i, needle, n) == 0)
            return true;
    return false;
}

void pct_expect_addr(ProtobufCBinaryData sa, const char *addr)
{
    rdv_addr got, want = fc_addr(addr);
    rdv_addr_unmangle(sa.data, sa.len, &got);
    char a[RDV_ADDR_STRLEN];
    cr_assert(rdv_addr_equal(&got, &want), "address %s, expected %s", rdv_addr_str(&got, a, sizeof a), addr);
}

void pct_expect_signed(ProtobufCBinaryData pk, const char *id, uint8_t b)
{
    cr_assert_gt(pk.len, crypto_sign_BYTES, "pk is not signed");
    uint8_t m[512];
    unsigned long long ml;
    cr_assert_lt(pk.len, sizeof m);
    cr_assert_eq(crypto_sign_open(m, &ml, pk.data, pk.len, KEYS.pk), 0, "signature does not verify");
    Hbb__IdPk *ip = hbb__id_pk__unpack(NULL, (size_t)ml, m);
    cr_assert_not_null(ip);
    cr_assert_str_eq(ip->id, id);
    uint8_t want[32];
    memset(want, b, sizeof want);
    cr_assert_eq(ip->pk.len, 32);
    cr_assert_arr_eq(ip->pk.data, want, 32);
    hbb__id_pk__free_unpacked(ip, NULL);
}

const char *pct_admin(const char *line)
{
    static char out[65536];
    cr_assert_eq(fc_admin(fc, line, out, sizeof out), 0, "admin '%s' failed", line);
    return out;
}

rdv_conn_id pct_park(const char *a, const char *id, uint8_t *sa, size_t *san)
{
    rdv_conn_id c = pct_open(a);
    cr_assert_eq(fc_conn_msg(fc, c, pct_phr(id, 1, KEYS.licence)), RDV_OK);
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s, "B got no push");
    cr_assert_not_null(s->msg);
    ProtobufCBinaryData b = s->msg->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE
                                ? s->msg->punch_hole->socket_addr
                                : s->msg->fetch_local_addr->socket_addr;
    if (sa) {
        memcpy(sa, b.data, b.len);
        *san = b.len;
    }
    return c;
}
