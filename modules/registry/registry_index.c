/* registry_index.c — the id → peer index: open addressing with linear
 * probing over 16-byte slots {record, 64-bit keyed hash}.
 *
 * Why not uthash (used before): its handle costs 56 bytes in every record
 * plus the bucket array, and a lookup walks a chain of records. Here a
 * slot costs 16 bytes, a lookup compares hashes inside the slot array and
 * touches exactly one record (the match), and growth rehashes from the
 * stored hashes without touching any record. At 10^6 peers that is ~45 MB
 * less and one cache miss less per registration (docs/BENCHMARKS.md).
 *
 * Records are never removed, only replaced under the same id (the slot is
 * rewritten in place), so there are no tombstones. The hash is SipHash with a
 * random per-process key: ids are chosen by clients, so crafted collisions
 * must not build long probe runs. The home slot is the hash's high 32 bits
 * scaled to the capacity (multiply-shift), so the capacity need not be a
 * power of two and can grow by 1.5x. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <rdv/wire.h>

#include "registry.h"

#define REGISTRY_INDEX_MIN 1024
/* Grow above 85 % full: probes stay short because a probe reads hashes in
 * the slot array, four slots per cache line, and only a full 64-bit hash
 * match dereferences a record. */
#define REGISTRY_INDEX_LOAD_NUM 85
#define REGISTRY_INDEX_LOAD_DEN 100

uint64_t registry_hash64(const void *p, size_t n)
{
    uint64_t v = rdv_keyed_hash(p, n);
    return v ? v : 1; /* 0 marks an empty slot */
}

unsigned registry_hash(const void *p, size_t n)
{
    return (unsigned)registry_hash64(p, n);
}

/* A large index is its own mapping with transparent huge pages asked for:
 * nearly every lookup misses the cache on its slot, and with 4 KiB pages
 * also the TLB (perf: most of registry_find's time at 10^6 peers was the
 * slot load). calloc for small ones. */
#define REGISTRY_INDEX_MMAP_BYTES (2u << 20)

static registry_slot *registry_slots_alloc(size_t cap)
{
    size_t bytes = cap * sizeof(registry_slot);
    if (bytes < REGISTRY_INDEX_MMAP_BYTES)
        return calloc(cap, sizeof(registry_slot));
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(m, bytes, MADV_HUGEPAGE); /* advice only: fine if THP is off */
#endif
    return m;
}

static void registry_slots_free(registry_slot *slots, size_t cap)
{
    if (!slots)
        return;
    size_t bytes = cap * sizeof(registry_slot);
    if (bytes < REGISTRY_INDEX_MMAP_BYTES)
        free(slots);
    else
        munmap(slots, bytes);
}

static size_t registry_index_home(uint64_t h, size_t cap)
{
    return (size_t)(((h >> 32) * (uint64_t)cap) >> 32);
}

registry_peer **registry_index_find(registry_index *ix, const char *id, size_t len, uint64_t h)
{
    if (!ix->cap)
        return NULL;
    for (size_t i = registry_index_home(h, ix->cap);; i = i + 1 == ix->cap ? 0 : i + 1) {
        registry_slot *s = &ix->slots[i];
        if (!s->h)
            return NULL;
        if (s->h == h && s->p->id_len == len && memcmp(s->p->data, id, len) == 0)
            return &s->p;
    }
}

static void registry_index_place(registry_slot *slots, size_t cap, registry_peer *p, uint64_t h)
{
    size_t i = registry_index_home(h, cap);
    while (slots[i].h)
        i = i + 1 == cap ? 0 : i + 1;
    slots[i].p = p;
    slots[i].h = h;
}

static int registry_index_grow(registry_index *ix)
{
    size_t cap = ix->cap ? ix->cap + ix->cap / 2 : REGISTRY_INDEX_MIN;
    if (cap > UINT32_MAX)
        return -1;
    registry_slot *slots = registry_slots_alloc(cap);
    if (!slots)
        return -1;
    for (size_t i = 0; i < ix->cap; i++)
        if (ix->slots[i].h)
            registry_index_place(slots, cap, ix->slots[i].p, ix->slots[i].h);
    registry_slots_free(ix->slots, ix->cap);
    ix->slots = slots;
    ix->cap = cap;
    return 0;
}

int registry_index_add(registry_index *ix, registry_peer *p, uint64_t h)
{
    if ((ix->n + 1) * REGISTRY_INDEX_LOAD_DEN > ix->cap * REGISTRY_INDEX_LOAD_NUM && registry_index_grow(ix) < 0)
        return -1;
    registry_index_place(ix->slots, ix->cap, p, h);
    ix->n++;
    return 0;
}

void registry_index_free(registry_index *ix)
{
    registry_slots_free(ix->slots, ix->cap);
    memset(ix, 0, sizeof *ix);
}
