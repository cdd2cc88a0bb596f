/* bench/src/selfcheck.c — the generators encode and parse RendezvousMessage
 * bytes by hand; this proves those bytes against the spec's vectors
 * (wire.md §2.3, §3.2, relay.md §3.1) and against rdvd's own protobuf-c
 * decoder (librdvwire), and checks the latency histogram. Exit status 0 =
 * all checks passed; run by `bench/run.sh --smoke`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "bench.h"
#include "rdv/proto.h"
#include "rdv/wire.h"

static int failures;

#define CHECK(cond, ...)                                        \
    do {                                                        \
        if (!(cond)) {                                          \
            failures++;                                         \
            fprintf(stderr, "selfcheck: %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                       \
            fputc('\n', stderr);                                \
        }                                                       \
    } while (0)

static size_t unhex(uint8_t *out, const char *hex)
{
    size_t n = 0;
    for (const char *p = hex; p[0] && p[1];) {
        if (*p == ' ') {
            p++;
            continue;
        }
        unsigned v;
        sscanf(p, "%2x", &v);
        out[n++] = (uint8_t)v;
        p += 2;
    }
    return n;
}

static Hbb__RendezvousMessage *unpack(const uint8_t *p, size_t n)
{
    return (Hbb__RendezvousMessage *)protobuf_c_message_unpack(&hbb__rendezvous_message__descriptor, NULL, n, p);
}

static void msg_free(Hbb__RendezvousMessage *m)
{
    if (m)
        protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void check_vectors(void)
{
    uint8_t want[256], got[BN_FRAME_MAX];
    size_t wn = unhex(want, "32 0b 0a 09 31 32 33 34 35 36 37 38 39");
    size_t gn = bn_enc_register_peer(got, "123456789");
    CHECK(gn == wn && !memcmp(got, want, wn), "RegisterPeer bytes differ from wire.md §2.3");

    wn = unhex(want, "6c 42 19 0a 09 31 32 33 34 35 36 37 38 39 10 01 1a 03 4b 45 59 32 05 31 2e 34 2e 39");
    gn = bn_enc_punch_hole_request(got, "123456789", 1, "KEY", "1.4.9");
    CHECK(gn == wn && !memcmp(got, want, wn), "PunchHoleRequest frame differs from wire.md §3.2");

    wn = unhex(want, "a4920126122430663866616435622d643963622d343639662d613136352d373038363737323839353065");
    gn = bn_enc_request_relay_frame(got, "0f8fad5b-d9cb-469f-a165-70867728950e", NULL);
    CHECK(gn == wn && !memcmp(got, want, wn), "RequestRelay frame differs from relay.md §3.1");
    gn = bn_enc_request_relay_frame(got, "0f8fad5b-d9cb-469f-a165-70867728950e",
                                    "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw=");
    CHECK(gn == 89 && got[0] == 0x5d && got[1] == 0x01, "RequestRelay with key: header must be 5d 01 (87 bytes)");

    static const struct { size_t len; const char *hdr; } hv[] = {
        { 0, "00" }, { 63, "fc" }, { 64, "01 01" }, { 300, "b1 04" }, { 16383, "fd ff" },
        { 16384, "02 00 01" }, { 4194304, "03 00 00 01" },
    };
    for (size_t i = 0; i < sizeof hv / sizeof hv[0]; i++) {
        uint8_t h[4];
        wn = unhex(want, hv[i].hdr);
        gn = bn_frame_header(h, hv[i].len);
        CHECK(gn == wn && !memcmp(h, want, wn), "frame header for %zu", hv[i].len);
        size_t hdr = 0, plen = 0;
        uint8_t buf[8] = { 0 };
        memcpy(buf, h, gn);
        CHECK(bn_frame_parse(buf, gn, 1u << 30, &hdr, &plen) == (hv[i].len ? 0 : 1),
              "frame parse must wait for the payload (%zu)", hv[i].len);
    }

    /* Replies the generators read (wire.md §2.3). */
    const uint8_t *body;
    size_t blen;
    wn = unhex(want, "3a 02 10 01");
    CHECK(bn_msg_tag(want, wn, &body, &blen) == BN_REGISTER_PEER_RESPONSE && blen == 2, "RegisterPeerResponse");
    wn = unhex(want, "82 01 02 08 04");
    CHECK(bn_msg_tag(want, wn, &body, &blen) == BN_REGISTER_PK_RESPONSE && blen == 2 && body[1] == 4,
          "RegisterPkResponse TOO_FREQUENT");
    wn = unhex(want, "82 01 00");
    CHECK(bn_msg_tag(want, wn, &body, &blen) == BN_REGISTER_PK_RESPONSE && blen == 0, "RegisterPkResponse OK");
    CHECK(bn_msg_tag(want, 2, &body, &blen) == -1, "truncated message must not parse");

    /* AddrMangle with tm = 0: wire.md §5 decodes it back to the address. */
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(21116) };
    inet_pton(AF_INET, "192.168.16.32", &sa.sin_addr);
    uint8_t m[16];
    size_t mn = bn_mangle_v4(m, &sa);
    rdv_addr a;
    rdv_addr_unmangle(m, mn, &a);
    char txt[64];
    rdv_addr_str(&a, txt, sizeof txt);
    CHECK(!strcmp(txt, "192.168.16.32:21116"), "mangled address decodes to %s", txt);
}

static void check_decoder(void)
{
    uint8_t d[BN_FRAME_MAX], uuid[16], pk[32];
    bn_uuid_pk(1000000042, uuid, pk);
    size_t n = bn_enc_register_pk(d, "1000000042", uuid, pk);
    Hbb__RendezvousMessage *msg = unpack(d, n);
    CHECK(msg && msg->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK, "RegisterPk does not decode");
    if (msg && msg->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK) {
        Hbb__RegisterPk *r = msg->register_pk;
        CHECK(!strcmp(r->id, "1000000042"), "RegisterPk id");
        CHECK(r->uuid.len == 16 && !memcmp(r->uuid.data, uuid, 16), "RegisterPk uuid");
        CHECK(r->pk.len == 32 && !memcmp(r->pk.data, pk, 32), "RegisterPk pk");
    }
    msg_free(msg);

    uint8_t sa[11] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 };
    n = bn_enc_punch_hole_sent(d, sa, sizeof sa, "2000000001", (const uint8_t *)"relay:21117", 11, 1, "1.4.9");
    size_t hdr, plen;
    CHECK(bn_frame_parse(d, n, 4096, &hdr, &plen) == 1 && hdr + plen == n, "PunchHoleSent frame");
    msg = unpack(d + hdr, plen);
    CHECK(msg && msg->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_SENT, "PunchHoleSent does not decode");
    if (msg && msg->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_SENT) {
        Hbb__PunchHoleSent *p = msg->punch_hole_sent;
        CHECK(p->socket_addr.len == 11 && !memcmp(p->socket_addr.data, sa, 11), "PunchHoleSent socket_addr");
        CHECK(!strcmp(p->id, "2000000001") && !strcmp(p->relay_server, "relay:21117"), "PunchHoleSent id/relay");
        CHECK(p->nat_type == 1 && !strcmp(p->version, "1.4.9"), "PunchHoleSent nat/version");
    }
    msg_free(msg);

    uint8_t la[3] = { 7, 8, 9 };
    n = bn_enc_local_addr(d, sa, sizeof sa, la, sizeof la, NULL, 0, "2000000002", "1.4.9");
    CHECK(bn_frame_parse(d, n, 4096, &hdr, &plen) == 1, "LocalAddr frame");
    msg = unpack(d + hdr, plen);
    CHECK(msg && msg->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_LOCAL_ADDR && msg->local_addr->local_addr.len == 3 &&
              !strcmp(msg->local_addr->id, "2000000002"),
          "LocalAddr does not decode");
    msg_free(msg);

    /* The parser against protobuf-c's packing of a PunchHoleResponse. */
    Hbb__PunchHoleResponse phr = HBB__PUNCH_HOLE_RESPONSE__INIT;
    phr.socket_addr.data = sa;
    phr.socket_addr.len = sizeof sa;
    phr.failure = HBB__PUNCH_HOLE_RESPONSE__FAILURE__OFFLINE;
    Hbb__RendezvousMessage out = HBB__RENDEZVOUS_MESSAGE__INIT;
    out.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE;
    out.punch_hole_response = &phr;
    n = protobuf_c_message_pack(&out.base, d);
    const uint8_t *body, *q;
    size_t blen;
    CHECK(bn_msg_tag(d, n, &body, &blen) == BN_PUNCH_HOLE_RESPONSE, "PunchHoleResponse tag");
    q = body;
    bn_field f;
    int seen = 0;
    while (bn_next_field(&q, body + blen, &f) == 1) {
        if (f.num == 1 && f.wt == 2 && f.len == sizeof sa)
            seen |= 1;
        if (f.num == 3 && f.wt == 0 && f.v == 2)
            seen |= 2;
    }
    CHECK(seen == 3, "PunchHoleResponse fields not found by the field parser");

    for (int i = 0; i < 3; i++) {
        char id[BN_ID_LEN + 1];
        bn_id(id, 1000000000, (uint64_t)i * 999999);
        n = bn_enc_register_peer(d, id);
        msg = unpack(d, n);
        CHECK(msg && msg->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER &&
                  !strcmp(msg->register_peer->id, id),
              "RegisterPeer %s", id);
        msg_free(msg);
    }
}

static void check_hist(void)
{
    static bn_hist h;
    for (uint64_t v = 1; v <= 100000; v++)
        bn_hist_add(&h, v * 1000); /* 1 µs .. 100 ms */
    double p50 = (double)bn_hist_q(&h, 0.5), p99 = (double)bn_hist_q(&h, 0.99);
    CHECK(p50 > 50e6 * 0.96 && p50 < 50e6 * 1.04, "histogram p50 %.0f", p50);
    CHECK(p99 > 99e6 * 0.96 && p99 < 99e6 * 1.04, "histogram p99 %.0f", p99);
    CHECK(bn_hist_q(&h, 1.0) == 100000000ull, "histogram max");
}

int main(void)
{
    check_vectors();
    check_decoder();
    check_hist();
    if (failures) {
        fprintf(stderr, "selfcheck: %d check(s) failed\n", failures);
        return 1;
    }
    puts("selfcheck=ok");
    return 0;
}
