/* Message arena and protobuf helpers around RendezvousMessage (wire.md §2). */
#include <string.h>

#include "rdv/proto.h"
#include "rdv/wire.h"

#define ARENA_ALIGN 16

/* Bump allocation, 16-byte aligned in absolute terms (base may be unaligned).
 * Refusing past cap is what bounds a hostile message: protobuf-c then fails
 * the unpack cleanly. */
static void *arena_alloc(void *data, size_t size)
{
    rdv_arena *a = data;
    uintptr_t base = (uintptr_t)a->base;
    uintptr_t at = (base + a->used + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
    size_t start = (size_t)(at - base);
    if (start > a->cap || size > a->cap - start)
        return NULL;
    a->used = start + size;
    if (a->used > a->peak)
        a->peak = a->used;
    return a->base + start;
}

/* Everything is released at once by rdv_arena_reset. */
static void arena_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr;
}

void rdv_arena_init(rdv_arena *a, uint8_t *mem, size_t cap)
{
    a->base = mem;
    a->cap = cap;
    a->used = 0;
    a->peak = 0;
    a->alloc.alloc = arena_alloc;
    a->alloc.free = arena_free;
    a->alloc.allocator_data = a;
}

void rdv_arena_reset(rdv_arena *a)
{
    a->used = 0;
}

/* Field numbers are 1..2^29-1. protobuf-c rejects a one-byte tag 0 but
 * accepts a non-minimal one (82 00) and 5-byte tags beyond the range, keeps
 * them as unknown fields and would re-emit them as different, invalid tags.
 * rust-protobuf rejects both, so the message does not parse upstream either. */
#define FIELD_NUMBER_MAX ((1u << 29) - 1)

static bool unknown_tags_valid(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        uint32_t tag = m->unknown_fields[i].tag;
        if (tag == 0 || tag > FIELD_NUMBER_MAX)
            return false;
    }
    return true;
}

static bool message_valid(const ProtobufCMessage *m, bool check_tags);

/* v points at the storage of one value: a char * or a ProtobufCMessage *. */
static bool value_valid(const ProtobufCFieldDescriptor *f, const void *v, bool check_tags)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(const char *const *)v;
        return s == NULL || rdv_utf8_valid((const uint8_t *)s, strlen(s));
    }
    const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)v;
    return sub == NULL || message_valid(sub, check_tags);
}

/* Recursion depth is bounded by the schema's nesting (no recursive types),
 * exactly as in protobuf-c's own unpack. */
static bool message_valid(const ProtobufCMessage *m, bool check_tags)
{
    if (check_tags && !unknown_tags_valid(m))
        return false;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const uint8_t *base = (const uint8_t *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const void *member = base + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const void *const *elems = *(const void *const *const *)member;
            for (size_t k = 0; k < n; k++)
                if (!value_valid(f, &elems[k], check_tags))
                    return false;
            continue;
        }
        /* An inactive oneof member's storage belongs to another member. */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        if (!value_valid(f, member, check_tags))
            return false;
    }
    return true;
}

bool rdv_msg_strings_valid(const ProtobufCMessage *m)
{
    return message_valid(m, false);
}

rdv_msg *rdv_msg_unpack(rdv_arena *a, const uint8_t *p, size_t n)
{
    rdv_msg *m = hbb__rendezvous_message__unpack(&a->alloc, n, p);
    /* No free on rejection: the memory is the arena's. */
    if (m == NULL || !message_valid(&m->base, true))
        return NULL;
    return m;
}

/* The generic calls, not the generated wrappers: a module's message carries
 * the descriptor of the module's own copy of the generated code, which the
 * wrappers would reject (they assert descriptor identity). */
size_t rdv_msg_pack(const rdv_msg *m, uint8_t *buf, size_t cap)
{
    if (protobuf_c_message_get_packed_size(&m->base) > cap)
        return RDV_MSG_TOO_BIG;
    return protobuf_c_message_pack(&m->base, buf);
}

const char *rdv_msg_tag_name(int tag)
{
    if (tag == 0)
        return "unset";
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &hbb__rendezvous_message__descriptor, (unsigned)tag);
    return f != NULL && (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ? f->name : "unknown";
}
