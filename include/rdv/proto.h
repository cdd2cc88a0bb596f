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
 * a hostile message cannot make us allocate more than cap bytes. protobuf-c
 * also takes its scratch space from it: a pathological message can need
 * ~60x its size, real ones far less. Do not copy an initialised arena (its
 * allocator points at itself). */
typedef struct rdv_arena {
    uint8_t *base;
    size_t cap, used;
    size_t peak;
    ProtobufCAllocator alloc; /* points at this arena */
} rdv_arena;

void rdv_arena_init(rdv_arena *a, uint8_t *mem, size_t cap);
void rdv_arena_reset(rdv_arena *a);

/* Unpack with the arena, after checking every string field on its real
 * length: invalid UTF-8 or a NUL (which protobuf-c would cut the string at)
 * fails it (wire.md §2.2). Returns NULL on any failure. */
rdv_msg *rdv_msg_unpack(rdv_arena *a, const uint8_t *p, size_t n);
/* True if every string field, recursively, is valid UTF-8 (as far as its C
 * string goes): for messages built or unpacked otherwise; rdv_msg_unpack
 * checks this already. */
bool rdv_msg_strings_valid(const ProtobufCMessage *m);
/* Pack into buf; returns the length (0 for an unset message), or
 * RDV_MSG_TOO_BIG if it does not fit in cap. Works for messages built with
 * any copy of the generated code (librdvwire's, or one an out-of-tree module
 * compiled itself): on messages you did not create, use the generic
 * protobuf_c_message_* calls, never the generated hbb__*__pack wrappers,
 * which assert descriptor identity. */
#define RDV_MSG_TOO_BIG ((size_t)-1)
size_t rdv_msg_pack(const rdv_msg *m, uint8_t *buf, size_t cap);
/* Name of a oneof case ("register_peer"), "unset" for 0, else "unknown". */
const char *rdv_msg_tag_name(int tag);

#ifdef __cplusplus
}
#endif
#endif
