/* tests/integration/rdclient.c — see rdclient.h. */
#include "rdclient.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rdv/wire.h"

/* ------------------------------------------------------------------ time and sockets */
uint64_t rdc_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

int rdc_read_exact(int fd, uint8_t *p, size_t n, uint64_t deadline)
{
    while (n) {
        uint64_t now = rdc_now_ms();
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

rdv_addr rdc_local_addr(int fd)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &l);
    rdv_addr a;
    rdv_addr_from_sockaddr(&a, (struct sockaddr *)&ss, l);
    return a;
}

uint16_t rdc_local_port(int fd) /* IPv4 or IPv6 socket */
{
    rdv_addr a = rdc_local_addr(fd);
    return rdv_addr_port(&a);
}

int rdc_connect(const char *ip, int port)
{
    int fd = rdvt_tcp(ip, port);
    cr_assert_geq(fd, 0, "cannot connect from %s", ip);
    return fd;
}

void rdc_close_rst(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ------------------------------------------------------------------ messages */
/* An echoed socket_addr, copied: the message it came from may be freed
 * before the answer is sent. */
static ProtobufCBinaryData copy_addr(ProtobufCBinaryData sa, uint8_t buf[RDV_ADDR_MANGLED_MAX])
{
    cr_assert_leq(sa.len, RDV_ADDR_MANGLED_MAX);
    if (sa.len)
        memcpy(buf, sa.data, sa.len);
    return (ProtobufCBinaryData){ sa.len, buf };
}

size_t rdc_pack(const rdv_msg *m, uint8_t *buf, size_t cap)
{
    size_t n = protobuf_c_message_get_packed_size(&m->base);
    cr_assert_leq(n, cap);
    return protobuf_c_message_pack(&m->base, buf);
}

rdv_msg *rdc_register_peer(const char *id)
{
    static Hbb__RegisterPeer r;
    static rdv_msg m;
    hbb__register_peer__init(&r);
    hbb__rendezvous_message__init(&m);
    r.id = (char *)id;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER;
    m.register_peer = &r;
    return &m;
}

rdv_msg *rdc_register_pk(const char *id, const void *uuid, size_t uuid_len, const void *pk, size_t pk_len)
{
    static Hbb__RegisterPk r;
    static rdv_msg m;
    hbb__register_pk__init(&r);
    hbb__rendezvous_message__init(&m);
    r.id = (char *)id;
    r.uuid.data = (uint8_t *)uuid, r.uuid.len = uuid_len;
    r.pk.data = (uint8_t *)pk, r.pk.len = pk_len;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &r;
    return &m;
}

rdv_msg *rdc_punch_hole_request(const char *id, int nat_type, const char *licence, const char *version)
{
    static Hbb__PunchHoleRequest r;
    static rdv_msg m;
    hbb__punch_hole_request__init(&r);
    hbb__rendezvous_message__init(&m);
    r.id = (char *)id;
    r.nat_type = (Hbb__NatType)nat_type;
    r.licence_key = (char *)licence;
    r.conn_type = HBB__CONN_TYPE__DEFAULT_CONN;
    r.version = (char *)version;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_REQUEST;
    m.punch_hole_request = &r;
    return &m;
}

rdv_msg *rdc_punch_hole_sent(ProtobufCBinaryData socket_addr, const char *id, const char *relay_server, int nat_type,
                             const char *version)
{
    static Hbb__PunchHoleSent s;
    static rdv_msg m;
    static uint8_t sa[RDV_ADDR_MANGLED_MAX];
    hbb__punch_hole_sent__init(&s);
    hbb__rendezvous_message__init(&m);
    s.socket_addr = copy_addr(socket_addr, sa);
    s.id = (char *)id;
    s.relay_server = (char *)relay_server;
    s.nat_type = (Hbb__NatType)nat_type;
    s.version = (char *)version;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_SENT;
    m.punch_hole_sent = &s;
    return &m;
}

rdv_msg *rdc_relay_response(ProtobufCBinaryData socket_addr, const char *uuid, const char *relay_server,
                            const char *id, const char *version)
{
    static Hbb__RelayResponse r;
    static rdv_msg m;
    static uint8_t sa[RDV_ADDR_MANGLED_MAX];
    hbb__relay_response__init(&r);
    hbb__rendezvous_message__init(&m);
    r.socket_addr = copy_addr(socket_addr, sa);
    r.uuid = (char *)uuid;
    r.relay_server = (char *)relay_server;
    if (id) {
        r.union_case = HBB__RELAY_RESPONSE__UNION_ID;
        r.id = (char *)id;
    }
    r.version = (char *)version;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE;
    m.relay_response = &r;
    return &m;
}

rdv_msg *rdc_test_nat_request(int serial)
{
    static Hbb__TestNatRequest r;
    static rdv_msg m;
    hbb__test_nat_request__init(&r);
    hbb__rendezvous_message__init(&m);
    r.serial = serial;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST;
    m.test_nat_request = &r;
    return &m;
}

rdv_msg *rdc_online_request(const char *id, char **peers, size_t n)
{
    static Hbb__OnlineRequest r;
    static rdv_msg m;
    hbb__online_request__init(&r);
    hbb__rendezvous_message__init(&m);
    r.id = (char *)id;
    r.peers = peers, r.n_peers = n;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_REQUEST;
    m.online_request = &r;
    return &m;
}

rdv_msg *rdc_config_update(int serial, char **rendezvous_servers, size_t n)
{
    static Hbb__ConfigUpdate c;
    static rdv_msg m;
    hbb__config_update__init(&c);
    hbb__rendezvous_message__init(&m);
    c.serial = serial;
    c.rendezvous_servers = rendezvous_servers, c.n_rendezvous_servers = n;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_CONFIGURE_UPDATE;
    m.configure_update = &c;
    return &m;
}

/* ------------------------------------------------------------------ devices */
void rdc_device_init(rdc_device *d, const char *id)
{
    memset(d, 0, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", id);
    snprintf(d->uuid, sizeof d->uuid, "uuid-%s", id);
    crypto_sign_keypair(d->pk, d->sk);
    d->udp = -1;
}

void rdc_device_udp(rdc_device *d, const char *ip)
{
    snprintf(d->ip, sizeof d->ip, "%s", ip);
    d->udp = rdvt_udp(ip);
    cr_assert_geq(d->udp, 0);
}

rdv_msg *rdc_device_register_pk(const rdc_device *d)
{
    return rdc_register_pk(d->id, d->uuid, strlen(d->uuid), d->pk, 32);
}

/* ------------------------------------------------------------------ UDP */
rdv_msg *rdc_udp_from_server(int fd, int port, int ms, size_t *len)
{
    uint8_t buf[65536];
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, ms) != 1)
        return NULL;
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    cr_assert_gt(r, 0);
    cr_assert_eq(ntohs(from.sin_port), port, "UDP from the main port (R1)");
    if (len)
        *len = (size_t)r;
    return hbb__rendezvous_message__unpack(NULL, (size_t)r, buf);
}

rdv_msg *rdc_udp_ask(int fd, int port, const rdv_msg *m, int ms, int tries)
{
    uint8_t req[2048];
    size_t n = rdc_pack(m, req, sizeof req), got = 0;
    rdv_msg *r = NULL;
    for (int i = 0; i < tries && !got; i++) {
        cr_assert_eq(rdvt_udp_send_raw(fd, port, req, n), 0);
        r = rdc_udp_from_server(fd, port, ms, &got);
    }
    if (got)
        cr_assert_leq(got, n, "UDP reply of %zu bytes to a %zu-byte request", got, n);
    return r;
}

void rdc_udp_expect_silence(int fd, int ms)
{
    uint8_t buf[2048];
    cr_assert_lt(rdvt_udp_recv_raw(fd, buf, sizeof buf, ms), 0, "unexpected datagram");
}

/* ------------------------------------------------------------------ TCP */
rdv_msg *rdc_expect_tcp(int fd, int union_case, int ms)
{
    rdv_msg *r = rdvt_tcp_recv(fd, ms);
    cr_assert_not_null(r, "no %s on TCP", rdv_msg_tag_name(union_case));
    cr_assert_eq((int)r->union_case, union_case, "got %s", rdv_msg_tag_name((int)r->union_case));
    return r;
}

void rdc_expect_tcp_bytes(int fd, const uint8_t *want, size_t n, int ms)
{
    uint8_t *buf = NULL;
    long got = rdvt_tcp_recv_frame(fd, &buf, ms);
    cr_assert_eq(got, (long)n, "frame of %ld bytes, expected %zu", got, n);
    cr_assert_arr_eq(buf, want, n);
    free(buf);
}

void rdc_expect_nothing_tcp(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    cr_assert_eq(poll(&p, 1, ms), 0, "unexpected bytes or close");
}

void rdc_expect_closed_silently(int fd, int ms)
{
    uint8_t *buf = NULL;
    long got = rdvt_tcp_recv_frame(fd, &buf, ms);
    free(buf);
    cr_assert_eq(got, -2, "expected a silent close, got %ld", got);
}

/* ------------------------------------------------------------------ addresses, keys, signatures */
void rdc_expect_addr(ProtobufCBinaryData sa, const rdv_addr *want)
{
    rdv_addr got;
    rdv_addr_unmangle(sa.data, sa.len, &got);
    char a[RDV_ADDR_STRLEN], b[RDV_ADDR_STRLEN];
    cr_assert(rdv_addr_equal(&got, want), "address %s, expected %s", rdv_addr_str(&got, a, sizeof a),
              rdv_addr_str(want, b, sizeof b));
}

size_t rdc_key_from_string(const char *b64, uint8_t pk[32])
{
    size_t n = 0;
    cr_assert_eq(sodium_base642bin(pk, 32, b64, strlen(b64), NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL), 0,
                 "not a base64 key: %s", b64);
    return n;
}

size_t rdc_read_server_key(const rdvt_server *s, char *text, size_t cap, uint8_t pk[32], size_t *pk_len)
{
    char path[400];
    snprintf(path, sizeof path, "%s/id_ed25519.pub", s->dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "keys module wrote no id_ed25519.pub");
    size_t n = fread(text, 1, cap - 1, f);
    fclose(f);
    text[n] = '\0';
    text[strcspn(text, "\r\n")] = '\0';
    size_t bl = rdc_key_from_string(text, pk);
    if (pk_len)
        *pk_len = bl;
    return n;
}

Hbb__IdPk *rdc_open_signed_pk(ProtobufCBinaryData signed_pk, const uint8_t server_pk[32])
{
    cr_assert_gt(signed_pk.len, crypto_sign_BYTES, "pk is not signed");
    uint8_t m[512];
    unsigned long long ml;
    cr_assert_lt(signed_pk.len, sizeof m);
    cr_assert_eq(crypto_sign_open(m, &ml, signed_pk.data, signed_pk.len, server_pk), 0,
                 "signed pk does not verify with the server's key");
    Hbb__IdPk *ip = hbb__id_pk__unpack(NULL, (size_t)ml, m);
    cr_assert_not_null(ip);
    return ip;
}

void rdc_expect_signed(ProtobufCBinaryData signed_pk, const uint8_t server_pk[32], const rdc_device *d)
{
    Hbb__IdPk *ip = rdc_open_signed_pk(signed_pk, server_pk);
    cr_assert_str_eq(ip->id, d->id);
    cr_assert_eq(ip->pk.len, 32);
    cr_assert_arr_eq(ip->pk.data, d->pk, 32);
    hbb__id_pk__free_unpacked(ip, NULL);
}

/* ------------------------------------------------------------------ secure TCP */
void rdc_read_offer(int fd, const uint8_t server_pk[32], uint8_t box_pk[32], int ms)
{
    rdv_msg *m = rdvt_tcp_recv(fd, ms);
    cr_assert_not_null(m, "no frame within %d ms of accepting", ms);
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE, "first frame is not a KeyExchange");
    cr_assert_eq(m->key_exchange->n_keys, 1);
    ProtobufCBinaryData sm = m->key_exchange->keys[0];
    cr_assert_eq(sm.len, 96);
    uint8_t msg[96];
    unsigned long long mlen = 0;
    cr_assert_eq(crypto_sign_open(msg, &mlen, sm.data, sm.len, server_pk), 0, "Signature mismatch in key exchange");
    cr_assert_eq(mlen, 32);
    memcpy(box_pk, msg, 32);
    rdvt_msg_free(m);
}

void rdc_send_key_exchange(int fd, ProtobufCBinaryData *keys, size_t n)
{
    Hbb__KeyExchange kx = HBB__KEY_EXCHANGE__INIT;
    kx.n_keys = n;
    kx.keys = keys;
    rdv_msg m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE;
    m.key_exchange = &kx;
    cr_assert_eq(rdvt_tcp_send(fd, &m), 0);
}

void rdc_answer_offer(rdc_keyed *c, const uint8_t box_pk[32])
{
    uint8_t cpk[32], csk[32], sealed[48], nonce[24] = { 0 };
    crypto_box_keypair(cpk, csk);
    if (!c->key[0] && !c->key[31])
        randombytes_buf(c->key, sizeof c->key);
    cr_assert_eq(crypto_box_easy(sealed, c->key, 32, nonce, box_pk, csk), 0);
    ProtobufCBinaryData keys[2] = { { 32, cpk }, { 48, sealed } };
    rdc_send_key_exchange(c->fd, keys, 2);
    c->tx = c->rx = 0;
}

rdc_keyed rdc_keyed_connect(const char *ip, int port, const uint8_t server_pk[32], int ms)
{
    rdc_keyed c = { .fd = rdc_connect(ip, port) };
    uint8_t box_pk[32];
    rdc_read_offer(c.fd, server_pk, box_pk, ms);
    rdc_answer_offer(&c, box_pk);
    return c;
}

void rdc_send_sealed(rdc_keyed *c, const rdv_msg *m)
{
    size_t n = protobuf_c_message_get_packed_size(&m->base);
    cr_assert_gt(n, 0);
    uint8_t *p = malloc(n), *e = malloc(n + 16);
    protobuf_c_message_pack(&m->base, p);
    cr_assert_eq(rdv_secure_seal(c->key, &c->tx, p, n, e), 0);
    cr_assert_eq(rdvt_tcp_send_frame(c->fd, e, n + 16), 0);
    free(p);
    free(e);
}

rdv_msg *rdc_open_sealed(rdc_keyed *c, const uint8_t *frame, long n)
{
    cr_assert_gt(n, 16, "a frame of %ld bytes cannot be sealed", n);
    uint8_t *p = malloc((size_t)n);
    cr_assert_eq(rdv_secure_open(c->key, &c->rx, frame, (size_t)n, p), 0,
                 "server frame does not open with counter %llu", (unsigned long long)c->rx + 1);
    rdv_msg *m = hbb__rendezvous_message__unpack(NULL, (size_t)n - 16, p);
    free(p);
    cr_assert_not_null(m);
    return m;
}

/* ------------------------------------------------------------------ WebSocket */
const uint8_t rdc_ws_mask[4] = { 0xa1, 0x5b, 0x03, 0xee };

int rdc_http_head(int fd, char *out, size_t cap, int ms)
{
    uint64_t deadline = rdc_now_ms() + (uint64_t)ms;
    size_t n = 0;
    while (n + 1 < cap) {
        int r = rdc_read_exact(fd, (uint8_t *)out + n, 1, deadline);
        if (r < 0)
            return r;
        n++;
        out[n] = '\0';
        if (n >= 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0)
            return 0;
    }
    return -1;
}

int rdc_ws_upgrade(int fd, const char *path, const char *host, char *head, size_t cap)
{
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " RDC_WS_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, host);
    cr_assert(n > 0 && (size_t)n < sizeof req);
    cr_assert_eq(rdvt_tcp_send_raw(fd, req, (size_t)n), 0);
    return rdc_http_head(fd, head, cap, 5000);
}

void rdc_ws_send_frame(int fd, bool fin, unsigned opcode, bool masked, const void *p, size_t n)
{
    uint8_t *f = malloc(n + 14);
    size_t h = 0;
    f[h++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    uint8_t m = masked ? 0x80 : 0;
    if (n < 126) {
        f[h++] = (uint8_t)(m | n);
    } else if (n < 65536) {
        f[h++] = m | 126, f[h++] = (uint8_t)(n >> 8), f[h++] = (uint8_t)n;
    } else {
        f[h++] = m | 127;
        for (int i = 7; i >= 0; i--)
            f[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    if (masked)
        memcpy(f + h, rdc_ws_mask, 4), h += 4;
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++)
        f[h + i] = masked ? (uint8_t)(s[i] ^ rdc_ws_mask[i % 4]) : s[i];
    cr_assert_eq(rdvt_tcp_send_raw(fd, f, h + n), 0);
    free(f);
}

void rdc_ws_send_msg(int fd, const rdv_msg *m)
{
    size_t n = protobuf_c_message_get_packed_size(&m->base);
    uint8_t *p = malloc(n + 1);
    protobuf_c_message_pack(&m->base, p);
    rdc_ws_send_frame(fd, true, 2, true, p, n);
    free(p);
}

int rdc_ws_recv(int fd, unsigned *opcode, uint8_t **p, size_t *n, int ms)
{
    uint64_t deadline = rdc_now_ms() + (uint64_t)ms;
    uint8_t h[10];
    int r = rdc_read_exact(fd, h, 2, deadline);
    if (r < 0)
        return r;
    cr_assert(h[0] & 0x80, "the server does not fragment");
    cr_assert_not(h[1] & 0x80, "server frames are unmasked");
    *opcode = h[0] & 0x0f;
    uint64_t len = h[1] & 0x7f;
    if (len == 126) {
        if ((r = rdc_read_exact(fd, h + 2, 2, deadline)) < 0)
            return r;
        len = (uint64_t)h[2] << 8 | h[3];
    } else if (len == 127) {
        if ((r = rdc_read_exact(fd, h + 2, 8, deadline)) < 0)
            return r;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
    }
    cr_assert_leq(len, 1u << 26);
    *p = malloc(len + 1);
    *n = (size_t)len;
    return rdc_read_exact(fd, *p, *n, deadline);
}
