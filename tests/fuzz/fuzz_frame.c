/* libFuzzer: the input is the byte stream of one TCP connection (wire.md §3).
 * It is cut into frames as a connection would, each payload is unpacked as a
 * RendezvousMessage in a bounded arena, and every message that decodes must
 * re-encode, decode again and re-encode to the same bytes. */
#include <stdlib.h>
#include <string.h>

#include "rdv/proto.h"
#include "rdv/wire.h"

#define CHECK(x) ((x) ? (void)0 : abort())

#define MAX_PAYLOAD (64u * 1024u)
/* protobuf-c's scan slabs cost ~33 arena bytes per payload byte at worst. */
#define ARENA_CAP (4u << 20)
/* Re-encoding can grow a message (e.g. a negative int32 sent as a 5-byte
 * varint is packed as 10 bytes), never beyond twice its size plus change. */
#define PACK_CAP (2 * MAX_PAYLOAD + 64)

static uint8_t mem1[ARENA_CAP], mem2[2 * ARENA_CAP];
static uint8_t out1[PACK_CAP], out2[PACK_CAP];

static void check_header(const uint8_t *f, size_t hl, size_t pl)
{
    size_t h2, p2;
    CHECK(hl >= 1 && hl <= RDV_FRAME_HDR_MAX && pl <= MAX_PAYLOAD);
    /* One byte less is never a complete frame. */
    CHECK(rdv_frame_parse(f, hl + pl - 1, MAX_PAYLOAD, &h2, &p2) == RDV_FRAME_NEED);
    /* Our own (canonical) header for pl declares pl and is no longer. */
    uint8_t h[RDV_FRAME_HDR_MAX];
    size_t n = rdv_frame_header(pl, h);
    CHECK(n >= 1 && n <= hl);
    if (pl > 0) {
        CHECK(rdv_frame_parse(h, n, pl - 1, &h2, &p2) == RDV_FRAME_TOO_BIG);
        CHECK(h2 == n && p2 == pl);
    }
}

static void check_message(const uint8_t *p, size_t n)
{
    rdv_arena a1, a2;
    rdv_arena_init(&a1, mem1, sizeof mem1);
    rdv_msg *m = rdv_msg_unpack(&a1, p, n);
    if (m == NULL)
        return;
    CHECK(rdv_msg_tag_name(m->union_case) != NULL);

    size_t n1 = rdv_msg_pack(m, out1, sizeof out1);
    CHECK(n1 == hbb__rendezvous_message__get_packed_size(m));

    rdv_arena_init(&a2, mem2, sizeof mem2);
    rdv_msg *m2 = rdv_msg_unpack(&a2, out1, n1);
    CHECK(m2 != NULL && m2->union_case == m->union_case);
    size_t n2 = rdv_msg_pack(m2, out2, sizeof out2);
    CHECK(n2 == n1 && memcmp(out1, out2, n1) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0, hl, pl;
    while (rdv_frame_parse(data + off, size - off, MAX_PAYLOAD, &hl, &pl) == RDV_FRAME_OK) {
        CHECK(hl + pl <= size - off);
        check_header(data + off, hl, pl);
        check_message(data + off + hl, pl);
        off += hl + pl;
    }
    return 0;
}
