/* rdv/proto.h — the rendezvous protobuf schema and helpers around it.
 *
 * The generated protobuf-c code (proto/rendezvous.proto, proto/idpk.proto)
 * is compiled into librdvwire; the RendezvousMessage oneof case equals the
 * field number, which is what the dispatch table is indexed by. */
#ifndef RDV_PROTO_H
#define RDV_PROTO_H

#include <protobuf-c/protobuf-c.h>

#include "rdv/proto/rendezvous.pb-c.h"
#include "rdv/proto/idpk.pb-c.h"
#include "rdv/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef Hbb__RendezvousMessage rdv_msg;

/* Highest oneof case the dispatch table has room for. */
#define RDV_TAG_MAX 63

/* Bump allocator for one message: protobuf-c unpacks into it and one reset
 * frees everything. Allocation past `cap` fails (the unpack then fails), so
 * a hostile message cannot make us allocate more than cap bytes. */
typedef struct rdv_arena {
    uint8_t *base;
    size_t cap, used;
    size_t peak;
    ProtobufCAllocator alloc; /* points at this arena */
} rdv_arena;

void rdv_arena_init(rdv_arena *a, uint8_t *mem, size_t cap);
void rdv_arena_reset(rdv_arena *a);

/* Unpack with the arena; then reject invalid UTF-8 in any string field
 * (wire.md §2.2). Returns NULL on any failure. */
rdv_msg *rdv_msg_unpack(rdv_arena *a, const uint8_t *p, size_t n);
/* True if every string field, recursively, is valid UTF-8. */
bool rdv_msg_strings_valid(const ProtobufCMessage *m);
/* Pack into buf; returns the length, or 0 if it does not fit in cap. */
size_t rdv_msg_pack(const rdv_msg *m, uint8_t *buf, size_t cap);
/* Name of a oneof case ("register_peer"), or "unknown". */
const char *rdv_msg_tag_name(int tag);

#ifdef __cplusplus
}
#endif
#endif
