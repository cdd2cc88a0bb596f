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

/* ------------------------------------------------------------------ before unpacking
 * The bytes are walked once, guided by the schema, before protobuf-c sees
 * them: protobuf-c hands a string over as a C string, so a NUL inside one
 * would silently cut it ("key\0junk" compared equal to "key", two relay
 * uuids "u\0a" and "u\0b" would pair) and hide what follows it from the
 * UTF-8 check. Here every string field is checked on its real length: a
 * NUL makes the message undecodable, as invalid UTF-8 does (wire.md §2.2).
 * Upstream would accept the NUL as a character; no RustDesk client sends
 * one, and a server that cannot represent it faithfully must not guess. */

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false; /* truncated or longer than 10 bytes */
}

static bool string_ok(const uint8_t *s, size_t n)
{
    return memchr(s, 0, n) == NULL && rdv_utf8_valid(s, n);
}

/* Recursion follows only the schema's message-typed fields, so its depth is
 * the schema's nesting (no recursive types), as in protobuf-c's own unpack. */
static bool wire_valid(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    while (p < end) {
        uint64_t key, len;
        if (!read_varint(&p, end, &key))
            return false;
        uint64_t field = key >> 3;
        if (field == 0 || field > FIELD_NUMBER_MAX)
            return false;
        switch (key & 7) {
        case 0:
            if (!read_varint(&p, end, &len))
                return false;
            continue;
        case 1:
            if (end - p < 8)
                return false;
            p += 8;
            continue;
        case 5:
            if (end - p < 4)
                return false;
            p += 4;
            continue;
        case 2:
            break;
        default:
            return false; /* groups (3, 4) never occur in RustDesk traffic; 6, 7 are invalid */
        }
        if (!read_varint(&p, end, &len) || len > (uint64_t)(end - p))
            return false;
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, (unsigned)field);
        if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING && !string_ok(p, (size_t)len))
            return false;
        if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE && !wire_valid(f->descriptor, p, (size_t)len))
            return false;
        p += len;
    }
    return true;
}

/* ------------------------------------------------------------------ after unpacking */
static bool message_valid(const ProtobufCMessage *m);

/* v points at the storage of one value: a char * or a ProtobufCMessage *. */
static bool value_valid(const ProtobufCFieldDescriptor *f, const void *v)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(const char *const *)v;
        return s == NULL || rdv_utf8_valid((const uint8_t *)s, strlen(s));
    }
    const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)v;
    return sub == NULL || message_valid(sub);
}

static bool message_valid(const ProtobufCMessage *m)
{
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
                if (!value_valid(f, &elems[k]))
                    return false;
            continue;
        }
        /* An inactive oneof member's storage belongs to another member. */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        if (!value_valid(f, member))
            return false;
    }
    return true;
}

bool rdv_msg_strings_valid(const ProtobufCMessage *m)
{
    return message_valid(m);
}

rdv_msg *rdv_msg_unpack(rdv_arena *a, const uint8_t *p, size_t n)
{
    if (!wire_valid(&hbb__rendezvous_message__descriptor, p, n))
        return NULL;
    /* No free on rejection: the memory is the arena's. */
    return hbb__rendezvous_message__unpack(&a->alloc, n, p);
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
