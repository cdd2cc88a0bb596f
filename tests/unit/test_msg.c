/* Protobuf helpers: arena, unpack with UTF-8 check, pack, tag names (wire.md §2). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "rdv/proto.h"
#include "rdv/wire.h"

#define B(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

static uint8_t mem[64 * 1024];
static rdv_arena arena;

static void setup(void)
{
    rdv_arena_init(&arena, mem, sizeof mem);
}

TestSuite(msg, .init = setup);

/* wire.md §2.3. */
static const struct {
    const char *what;
    int tag;
    size_t n;
    uint8_t b[48];
} examples[] = {
    {"RegisterPeer", 6, 13, {0x32, 0x0b, 0x0a, 0x09, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39}},
    {"RegisterPeerResponse", 7, 4, {0x3a, 0x02, 0x10, 0x01}},
    {"RegisterPk", 15, 22, {0x7a, 0x14, 0x0a, 0x09, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39,
                            0x12, 0x03, 0x61, 0x62, 0x63, 0x1a, 0x02, 0x01, 0x02}},
    {"RegisterPkResponse OK", 16, 3, {0x82, 0x01, 0x00}},
    {"RegisterPkResponse UUID_MISMATCH", 16, 5, {0x82, 0x01, 0x02, 0x08, 0x02}},
    {"RegisterPkResponse TOO_FREQUENT", 16, 5, {0x82, 0x01, 0x02, 0x08, 0x04}},
    {"RegisterPkResponse NOT_SUPPORT", 16, 5, {0x82, 0x01, 0x02, 0x08, 0x06}},
    {"PunchHoleRequest", 8, 27, {0x42, 0x19, 0x0a, 0x09, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38,
                                 0x39, 0x10, 0x01, 0x1a, 0x03, 0x4b, 0x45, 0x59, 0x32, 0x05, 0x31, 0x2e,
                                 0x34, 0x2e, 0x39}},
    {"PunchHoleResponse OFFLINE", 11, 4, {0x5a, 0x02, 0x18, 0x02}},
    {"PunchHoleResponse LICENSE_MISMATCH", 11, 4, {0x5a, 0x02, 0x18, 0x03}},
    {"TestNatRequest", 20, 3, {0xa2, 0x01, 0x00}},
    {"TestNatResponse", 21, 7, {0xaa, 0x01, 0x04, 0x08, 0xd0, 0x86, 0x03}},
    {"OnlineRequest", 23, 36, {0xba, 0x01, 0x21, 0x0a, 0x09, 0x31, 0x31, 0x31, 0x31, 0x31, 0x31, 0x31,
                               0x31, 0x31, 0x12, 0x09, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38,
                               0x39, 0x12, 0x09, 0x39, 0x38, 0x37, 0x36, 0x35, 0x34, 0x33, 0x32, 0x31}},
    {"OnlineResponse", 24, 7, {0xc2, 0x01, 0x04, 0x0a, 0x02, 0x90, 0x40}},
    {"ConfigUpdate", 14, 21, {0x72, 0x13, 0x08, 0x02, 0x12, 0x0f, 0x61, 0x2e, 0x65, 0x78, 0x61,
                              0x6d, 0x70, 0x6c, 0x65, 0x3a, 0x32, 0x31, 0x31, 0x31, 0x36}},
    {"SoftwareUpdate", 17, 10, {0x8a, 0x01, 0x07, 0x0a, 0x05, 0x31, 0x2e, 0x31, 0x2e, 0x39}},
    {"HealthCheck", 26, 6, {0xd2, 0x01, 0x03, 0x0a, 0x01, 0x74}},
    {"KeyExchange", 25, 8, {0xca, 0x01, 0x05, 0x0a, 0x03, 0x01, 0x02, 0x03}},
};
#define N_EXAMPLES (sizeof examples / sizeof examples[0])

/* Every example decodes to its case and re-encodes to the same bytes. */
Test(msg, examples_round_trip)
{
    for (size_t i = 0; i < N_EXAMPLES; i++) {
        rdv_arena_reset(&arena);
        rdv_msg *m = rdv_msg_unpack(&arena, examples[i].b, examples[i].n);
        cr_assert_not_null(m, "%s", examples[i].what);
        cr_assert_eq((int)m->union_case, examples[i].tag, "%s", examples[i].what);
        uint8_t out[64];
        cr_assert_eq(rdv_msg_pack(m, out, sizeof out), examples[i].n, "%s", examples[i].what);
        cr_assert_arr_eq(out, examples[i].b, examples[i].n, "%s", examples[i].what);
    }
}

Test(msg, example_fields)
{
    rdv_msg *m = rdv_msg_unpack(&arena, examples[0].b, examples[0].n);
    cr_assert_str_eq(m->register_peer->id, "123456789");
    cr_assert_eq(m->register_peer->serial, 0);

    m = rdv_msg_unpack(&arena, examples[2].b, examples[2].n);
    cr_assert_eq(m->register_pk->uuid.len, 3);
    cr_assert_eq(m->register_pk->pk.len, 2);
    cr_assert_eq(m->register_pk->pk.data[1], 2);

    m = rdv_msg_unpack(&arena, examples[7].b, examples[7].n);
    cr_assert_eq(m->punch_hole_request->nat_type, HBB__NAT_TYPE__ASYMMETRIC);
    cr_assert_str_eq(m->punch_hole_request->licence_key, "KEY");
    cr_assert_str_eq(m->punch_hole_request->version, "1.4.9");

    m = rdv_msg_unpack(&arena, examples[11].b, examples[11].n);
    cr_assert_eq(m->test_nat_response->port, 50000);
    cr_assert_null(m->test_nat_response->cu);

    m = rdv_msg_unpack(&arena, examples[12].b, examples[12].n);
    cr_assert_eq(m->online_request->n_peers, 2);
    cr_assert_str_eq(m->online_request->peers[1], "987654321");

    m = rdv_msg_unpack(&arena, examples[14].b, examples[14].n);
    cr_assert_eq(m->configure_update->serial, 2);
    cr_assert_str_eq(m->configure_update->rendezvous_servers[0], "a.example:21116");
}

static void assert_packs(const rdv_msg *m, const uint8_t *want, size_t n)
{
    uint8_t out[64];
    cr_assert_eq(rdv_msg_pack(m, out, sizeof out), n);
    cr_assert_arr_eq(out, want, n);
}

/* §2.2: a set sub-message is emitted even when empty. */
Test(msg, pack_empty_submessages)
{
    rdv_msg m = HBB__RENDEZVOUS_MESSAGE__INIT;
    Hbb__RegisterPkResponse rpr = HBB__REGISTER_PK_RESPONSE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE;
    m.register_pk_response = &rpr;
    assert_packs(&m, B(0x82, 0x01, 0x00));

    Hbb__RegisterPeerResponse rp = HBB__REGISTER_PEER_RESPONSE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER_RESPONSE;
    m.register_peer_response = &rp;
    assert_packs(&m, B(0x3a, 0x00));
    rp.request_pk = true;
    assert_packs(&m, B(0x3a, 0x02, 0x10, 0x01));

    Hbb__PunchHoleResponse ph = HBB__PUNCH_HOLE_RESPONSE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE;
    m.punch_hole_response = &ph;
    assert_packs(&m, B(0x5a, 0x00));
}

/* §2.2: a set oneof member is emitted even with its default value. */
Test(msg, pack_oneof_defaults)
{
    rdv_msg m = HBB__RENDEZVOUS_MESSAGE__INIT;
    Hbb__PunchHoleResponse ph = HBB__PUNCH_HOLE_RESPONSE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE;
    m.punch_hole_response = &ph;
    ph.union_case = HBB__PUNCH_HOLE_RESPONSE__UNION_NAT_TYPE;
    ph.nat_type = HBB__NAT_TYPE__UNKNOWN_NAT;
    assert_packs(&m, B(0x5a, 0x02, 0x28, 0x00));
    ph.union_case = HBB__PUNCH_HOLE_RESPONSE__UNION_IS_LOCAL;
    ph.is_local = true;
    assert_packs(&m, B(0x5a, 0x02, 0x30, 0x01));

    Hbb__RelayResponse rr = HBB__RELAY_RESPONSE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE;
    m.relay_response = &rr;
    rr.union_case = HBB__RELAY_RESPONSE__UNION_PK;
    rr.pk.len = 0;
    rr.pk.data = NULL;
    assert_packs(&m, B(0x9a, 0x01, 0x02, 0x2a, 0x00));
}

Test(msg, pack_cap)
{
    rdv_msg *m = rdv_msg_unpack(&arena, examples[0].b, examples[0].n);
    uint8_t out[13];
    cr_assert_eq(rdv_msg_pack(m, out, 12), RDV_MSG_TOO_BIG);
    cr_assert_eq(rdv_msg_pack(m, out, 13), 13);
}

Test(msg, empty_payload_is_unset)
{
    rdv_msg *m = rdv_msg_unpack(&arena, NULL, 0);
    cr_assert_not_null(m);
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION__NOT_SET);
    uint8_t out[4];
    cr_assert_eq(rdv_msg_pack(m, out, sizeof out), 0);
}

/* §2.2: unknown fields (incl. union tags) are skipped; the union is unset. */
Test(msg, unknown_tag_is_unset)
{
    /* field 29 (length-delimited, empty) and field 100 (varint). */
    rdv_msg *m = rdv_msg_unpack(&arena, B(0xea, 0x01, 0x00, 0xa0, 0x06, 0x05));
    cr_assert_not_null(m);
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION__NOT_SET);
    /* An unknown field next to a known member leaves the member intact. */
    m = rdv_msg_unpack(&arena, B(0xea, 0x01, 0x00, 0x82, 0x01, 0x02, 0x08, 0x02));
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE);
    cr_assert_eq(m->register_pk_response->result, HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH);
    /* Open enums: an unknown value is preserved. */
    m = rdv_msg_unpack(&arena, B(0x82, 0x01, 0x02, 0x08, 0x63));
    cr_assert_eq((int)m->register_pk_response->result, 99);
}

/* Field numbers outside 1..2^29-1 fail (as in rust-protobuf), even where
 * protobuf-c would keep them as unknown fields. */
Test(msg, invalid_field_numbers)
{
    cr_assert_null(rdv_msg_unpack(&arena, B(0x02, 0x00)));       /* tag 0 */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x82, 0x00, 0x00))); /* tag 0, non-minimal */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x03, 0x82, 0x00, 0x00))); /* nested */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x80, 0x80, 0x80, 0x80, 0x10, 0x00))); /* 2^29 */
    rdv_msg *m = rdv_msg_unpack(&arena, B(0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00)); /* 2^29-1 */
    cr_assert_not_null(m);
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION__NOT_SET);
    /* strings_valid is about strings only. */
    rdv_arena_reset(&arena);
    m = hbb__rendezvous_message__unpack(&arena.alloc, 3, (const uint8_t[]){0x82, 0x00, 0x00});
    cr_assert_not_null(m);
    cr_assert(rdv_msg_strings_valid(&m->base));
}

/* §2.2: last occurrence of a oneof wins. */
Test(msg, duplicate_oneof_last_wins)
{
    rdv_msg *m = rdv_msg_unpack(&arena, B(0x32, 0x03, 0x0a, 0x01, 0x41, 0xa2, 0x01, 0x02, 0x08, 0x07));
    cr_assert_not_null(m);
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST);
    cr_assert_eq(m->test_nat_request->serial, 7);

    m = rdv_msg_unpack(&arena, B(0x5a, 0x04, 0x28, 0x01, 0x30, 0x01));
    cr_assert_eq(m->punch_hole_response->union_case, HBB__PUNCH_HOLE_RESPONSE__UNION_IS_LOCAL);
    cr_assert(m->punch_hole_response->is_local);
}

Test(msg, invalid_utf8_rejected)
{
    /* RegisterPeer{id: "12" ff "4"} */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x06, 0x0a, 0x04, 0x31, 0x32, 0xff, 0x34)));
    /* Overlong "/" (c0 af) and a surrogate (ed a0 80). */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x04, 0x0a, 0x02, 0xc0, 0xaf)));
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x05, 0x0a, 0x03, 0xed, 0xa0, 0x80)));
    /* Repeated string: OnlineRequest{peers: ["1", "\x80"]}. */
    cr_assert_null(rdv_msg_unpack(&arena, B(0xba, 0x01, 0x06, 0x12, 0x01, 0x31, 0x12, 0x01, 0x80)));
    /* Nested: TestNatResponse{cu: ConfigUpdate{rendezvous_servers: ["\xfe"]}}. */
    cr_assert_null(rdv_msg_unpack(&arena, B(0xaa, 0x01, 0x05, 0x12, 0x03, 0x12, 0x01, 0xfe)));
    /* Repeated message: HttpProxyRequest{headers: [{name:"a"}, {value:"\xff"}]}. */
    cr_assert_null(rdv_msg_unpack(&arena, B(0xda, 0x01, 0x0a, 0x1a, 0x03, 0x0a, 0x01, 0x61,
                                            0x1a, 0x03, 0x12, 0x01, 0xff)));
    /* Active string oneof member: RelayResponse{id: "\xff"}. */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x9a, 0x01, 0x03, 0x22, 0x01, 0xff)));
}

/* A NUL inside a string makes the message undecodable (protobuf-c would cut
 * the C string there): relay uuids "u\0a" and "u\0b" must not pair, a
 * licence key "key\0junk" must not equal "key", and what follows the NUL is
 * still checked for UTF-8. */
Test(msg, nul_inside_a_string_rejected)
{
    /* RequestRelay{uuid: "u" 00 "a"} and {licence_key: "key" 00 "junk"} */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x92, 0x01, 0x05, 0x12, 0x03, 0x75, 0x00, 0x61)));
    cr_assert_null(rdv_msg_unpack(&arena, B(0x92, 0x01, 0x0a, 0x32, 0x08, 0x6b, 0x65, 0x79, 0x00, 0x6a, 0x75,
                                            0x6e, 0x6b)));
    /* RegisterPeer{id: "1" 00 ff}: invalid UTF-8 behind the NUL */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x05, 0x0a, 0x03, 0x31, 0x00, 0xff)));
    /* a trailing NUL too: RegisterPeer{id: "1" 00} */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x04, 0x0a, 0x02, 0x31, 0x00)));
    /* NULs in bytes fields and in unknown fields are data, not text:
     * RequestRelay{socket_addr: 00 01}, and unknown field 99 = 00 ff. */
    rdv_msg *m = rdv_msg_unpack(&arena, B(0x92, 0x01, 0x04, 0x1a, 0x02, 0x00, 0x01));
    cr_assert_not_null(m);
    cr_assert_eq(m->request_relay->socket_addr.len, 2);
    m = rdv_msg_unpack(&arena, B(0x32, 0x03, 0x0a, 0x01, 0x31, 0x9a, 0x06, 0x02, 0x00, 0xff));
    cr_assert_not_null(m);
    cr_assert_str_eq(m->register_peer->id, "1");
}

/* The walk that checks strings before unpacking refuses what protobuf-c
 * refuses, and groups (wire.md §2.2 allows that; RustDesk never sends one). */
Test(msg, malformed_structure_rejected)
{
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x05, 0x0a, 0x01)));       /* length past the end */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x02, 0x10, 0x80)));       /* varint cut inside */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x01, 0x09)));             /* fixed64 cut */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x02, 0x0d, 0x00)));       /* fixed32 cut */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x0b, 0x0c)));                   /* a group */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x0e)));                         /* wire type 6 */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                            0x80, 0x01))); /* 11-byte varint */
    /* fixed-width unknown fields are skipped whole */
    rdv_msg *m = rdv_msg_unpack(&arena, B(0x99, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0x9d, 0x06, 1, 2, 3, 4,
                                          0x32, 0x03, 0x0a, 0x01, 0x37));
    cr_assert_not_null(m);
    cr_assert_str_eq(m->register_peer->id, "7");
}

/* Bytes are never checked, including an active bytes oneof member whose
 * storage a string member shares. */
Test(msg, bytes_not_checked)
{
    rdv_msg *m = rdv_msg_unpack(&arena, B(0x9a, 0x01, 0x03, 0x2a, 0x01, 0xff));
    cr_assert_not_null(m);
    cr_assert_eq(m->relay_response->union_case, HBB__RELAY_RESPONSE__UNION_PK);
    m = rdv_msg_unpack(&arena, B(0x7a, 0x04, 0x1a, 0x02, 0xff, 0xfe));
    cr_assert_not_null(m);
}

Test(msg, valid_multibyte_utf8)
{
    /* "é€😀" = c3 a9 | e2 82 ac | f0 9f 98 80, plus U+10FFFF f4 8f bf bf. */
    rdv_msg *m = rdv_msg_unpack(&arena, B(0x32, 0x0f, 0x0a, 0x0d, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0,
                                          0x9f, 0x98, 0x80, 0xf4, 0x8f, 0xbf, 0xbf));
    cr_assert_not_null(m);
    cr_assert_str_eq(m->register_peer->id, "é€😀\xf4\x8f\xbf\xbf");
    m = rdv_msg_unpack(&arena, B(0x9a, 0x01, 0x04, 0x22, 0x02, 0xc3, 0xa9));
    cr_assert_not_null(m);
    cr_assert_str_eq(m->relay_response->id, "é");
}

Test(msg, utf8_validator)
{
    cr_assert(rdv_utf8_valid((const uint8_t *)"", 0));
    cr_assert(rdv_utf8_valid(B(0x00, 0x7f)));
    cr_assert(rdv_utf8_valid(B(0xc2, 0x80, 0xdf, 0xbf)));
    cr_assert(rdv_utf8_valid(B(0xe0, 0xa0, 0x80, 0xed, 0x9f, 0xbf, 0xee, 0x80, 0x80)));
    cr_assert(rdv_utf8_valid(B(0xf0, 0x90, 0x80, 0x80, 0xf4, 0x8f, 0xbf, 0xbf)));
    cr_assert(!rdv_utf8_valid(B(0x80)));             /* lone continuation */
    cr_assert(!rdv_utf8_valid(B(0xc0, 0x80)));       /* overlong NUL */
    cr_assert(!rdv_utf8_valid(B(0xc1, 0xbf)));       /* overlong */
    cr_assert(!rdv_utf8_valid(B(0xe0, 0x9f, 0xbf))); /* overlong 3-byte */
    cr_assert(!rdv_utf8_valid(B(0xf0, 0x8f, 0xbf, 0xbf))); /* overlong 4-byte */
    cr_assert(!rdv_utf8_valid(B(0xed, 0xa0, 0x80)));       /* U+D800 */
    cr_assert(!rdv_utf8_valid(B(0xed, 0xbf, 0xbf)));       /* U+DFFF */
    cr_assert(!rdv_utf8_valid(B(0xf4, 0x90, 0x80, 0x80))); /* U+110000 */
    cr_assert(!rdv_utf8_valid(B(0xf5, 0x80, 0x80, 0x80)));
    cr_assert(!rdv_utf8_valid(B(0xff)));
    cr_assert(!rdv_utf8_valid(B(0xc3)));             /* truncated */
    cr_assert(!rdv_utf8_valid(B(0xe2, 0x82)));       /* truncated */
    cr_assert(!rdv_utf8_valid(B(0xf0, 0x9f, 0x98))); /* truncated */
    cr_assert(!rdv_utf8_valid(B(0xe2, 0x41, 0xac))); /* bad continuation */
    cr_assert(!rdv_utf8_valid(B(0xf0, 0x9f, 0x98, 0x41)));
}

/* §2.2: 300 000 nested start-group tags must fail without deep recursion. */
Test(msg, nested_groups)
{
    const size_t depth = 300000;
    uint8_t *p = malloc(2 * depth);
    cr_assert_not_null(p);
    memset(p, 0x0b, depth);
    memset(p + depth, 0x0c, depth);
    cr_assert_null(rdv_msg_unpack(&arena, p, 2 * depth));
    free(p);
}

/* OnlineRequest{peers: 100 000 x ""}: 200 003 bytes of `12 00` pairs. */
static uint8_t *many_peers(size_t *n)
{
    const size_t count = 100000, body = 2 * count;
    uint8_t *p = malloc(body + 5);
    cr_assert_not_null(p);
    size_t h = 0;
    p[h++] = 0xba;
    p[h++] = 0x01;
    for (size_t v = body; v; v >>= 7)
        p[h++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
    for (size_t i = 0; i < count; i++) {
        p[h + 2 * i] = 0x12;
        p[h + 2 * i + 1] = 0x00;
    }
    *n = h + body;
    return p;
}

Test(msg, arena_cap_bounds_allocation)
{
    size_t n;
    uint8_t *p = many_peers(&n);

    cr_assert_null(rdv_msg_unpack(&arena, p, n));
    cr_assert_leq(arena.peak, arena.cap);

    const size_t big = 32u << 20;
    uint8_t *bigmem = malloc(big);
    cr_assert_not_null(bigmem);
    rdv_arena a;
    rdv_arena_init(&a, bigmem, big);
    rdv_msg *m = rdv_msg_unpack(&a, p, n);
    cr_assert_not_null(m);
    cr_assert_eq(m->online_request->n_peers, 100000);
    cr_assert_str_eq(m->online_request->peers[99999], "");
    cr_log_info("arena peak for a %zu-byte OnlineRequest: %zu bytes", n, a.peak);
    free(bigmem);
    free(p);
}

/* Every proper prefix of an example is a parse failure. */
Test(msg, truncated)
{
    for (size_t i = 0; i < N_EXAMPLES; i++)
        for (size_t len = 1; len < examples[i].n; len++)
            cr_assert_null(rdv_msg_unpack(&arena, examples[i].b, len), "%s [%zu]", examples[i].what, len);
    /* Unterminated varint, length running past the end, bad wire types. */
    cr_assert_null(rdv_msg_unpack(&arena, B(0x82, 0x81)));
    cr_assert_null(rdv_msg_unpack(&arena, B(0x32, 0x7f, 0x0a)));
    cr_assert_null(rdv_msg_unpack(&arena, B(0x33)));
    cr_assert_null(rdv_msg_unpack(&arena, B(0x36, 0x00)));
}

Test(msg, arena_reset_reuses_memory)
{
    rdv_msg *m1 = rdv_msg_unpack(&arena, examples[12].b, examples[12].n);
    size_t used = arena.used;
    cr_assert_gt(used, 0);
    rdv_arena_reset(&arena);
    cr_assert_eq(arena.used, 0);
    rdv_msg *m2 = rdv_msg_unpack(&arena, examples[12].b, examples[12].n);
    cr_assert_eq(m1, m2);
    cr_assert_eq(arena.used, used);
    cr_assert_eq(arena.peak, used);
    /* Without reset the arena keeps growing. */
    rdv_msg *m3 = rdv_msg_unpack(&arena, examples[12].b, examples[12].n);
    cr_assert_neq(m3, m1);
    cr_assert_gt(arena.used, used);
}

/* Allocations are 16-byte aligned even from an unaligned buffer. */
Test(msg, arena_alignment)
{
    rdv_arena a;
    rdv_arena_init(&a, mem + 3, 1000);
    for (size_t sz = 1; sz < 40; sz += 7) {
        void *p = a.alloc.alloc(a.alloc.allocator_data, sz);
        cr_assert_not_null(p);
        cr_assert_eq((uintptr_t)p % 16, 0);
        cr_assert_geq((uint8_t *)p, mem + 3);
        cr_assert_leq((uint8_t *)p + sz, mem + 3 + 1000);
    }
    cr_assert_null(a.alloc.alloc(a.alloc.allocator_data, 1000));
    size_t used = a.used;
    a.alloc.free(a.alloc.allocator_data, mem + 16);
    cr_assert_eq(a.used, used);
}

Test(msg, tag_names)
{
    cr_assert_str_eq(rdv_msg_tag_name(0), "unset");
    cr_assert_str_eq(rdv_msg_tag_name(6), "register_peer");
    cr_assert_str_eq(rdv_msg_tag_name(8), "punch_hole_request");
    cr_assert_str_eq(rdv_msg_tag_name(26), "hc");
    cr_assert_str_eq(rdv_msg_tag_name(28), "http_proxy_response");
    cr_assert_str_eq(rdv_msg_tag_name(5), "unknown");
    cr_assert_str_eq(rdv_msg_tag_name(29), "unknown");
    cr_assert_str_eq(rdv_msg_tag_name(-1), "unknown");
    cr_assert_str_eq(rdv_msg_tag_name(RDV_TAG_MAX), "unknown");
}
