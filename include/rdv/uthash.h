/* rdv/uthash.h — uthash (Debian uthash-dev) for rdvd code: running out of
 * memory refuses one add instead of exiting the process, and keys a client
 * chooses cannot be crafted to collide.
 *
 * uthash's default on a failed allocation is exit(-1). Including this
 * header instead of <uthash.h> turns on its non-fatal mode: an add that
 * cannot get memory is rolled back and leaves the element's hh.tbl NULL,
 * so check it after every HASH_ADD* and refuse that one operation, leaving
 * every structure as it was. Do not use HASH_REPLACE* where losing the
 * older element matters: it has unhooked that element before the add that
 * may fail.
 *
 * Usage: define RDV_UTHASH_PREFIX (an identifier, the same in every file
 * of a module) before including this header; one file of the module then
 * says RDV_UTHASH_HOOK_DEFINE() at file scope, which defines
 *   void *<prefix>_hash_malloc(size_t)  uthash's allocator (malloc), and
 *   void <prefix>_test_hash_fail_from(unsigned long nth)
 *     for unit tests: the nth allocation from now on fails, and every later
 *     one, until called with 0; inert unless a test arms it;
 *   unsigned long <prefix>_test_hash_allocs(void)  allocations so far.
 * The counters are atomic: a module's worker thread may allocate too. */
#ifndef RDV_UTHASH_H
#define RDV_UTHASH_H

#ifndef RDV_UTHASH_PREFIX
#error "define RDV_UTHASH_PREFIX before including rdv/uthash.h"
#endif

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

#define RDV_UTHASH_CAT2_(a, b) a##b
#define RDV_UTHASH_CAT_(a, b) RDV_UTHASH_CAT2_(a, b)
#define RDV_UTHASH_FN(name) RDV_UTHASH_CAT_(RDV_UTHASH_PREFIX, name)

void *RDV_UTHASH_FN(_hash_malloc)(size_t sz);
void RDV_UTHASH_FN(_test_hash_fail_from)(unsigned long nth);
unsigned long RDV_UTHASH_FN(_test_hash_allocs)(void);

#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) RDV_UTHASH_FN(_hash_malloc)(sz)
/* Keys are often chosen by clients (relay uuids, source addresses). With
 * uthash's default hash (Jenkins, no secret) a client can craft keys that
 * share one bucket: uthash then stops expanding and every lookup walks
 * them all. SipHash with a random per-process key (rdv_keyed_hash) makes
 * bucket positions unpredictable. A file may define its own HASH_FUNCTION
 * first. */
#ifndef HASH_FUNCTION
#include <rdv/wire.h>
#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = (unsigned)rdv_keyed_hash((keyptr), (size_t)(keylen)))
#endif
#include <uthash.h>

#define RDV_UTHASH_HOOK_DEFINE()                                                                     \
    static atomic_ulong RDV_UTHASH_FN(_hash_calls_), RDV_UTHASH_FN(_hash_fail_at_);                  \
    void *RDV_UTHASH_FN(_hash_malloc)(size_t sz)                                                    \
    {                                                                                                \
        unsigned long n = atomic_fetch_add(&RDV_UTHASH_FN(_hash_calls_), 1) + 1;                     \
        unsigned long at = atomic_load(&RDV_UTHASH_FN(_hash_fail_at_));                              \
        return at && n >= at ? NULL : malloc(sz);                                                    \
    }                                                                                                \
    void RDV_UTHASH_FN(_test_hash_fail_from)(unsigned long nth)                                      \
    {                                                                                                \
        unsigned long calls = atomic_load(&RDV_UTHASH_FN(_hash_calls_));                             \
        atomic_store(&RDV_UTHASH_FN(_hash_fail_at_), nth ? calls + nth : 0);                          \
    }                                                                                                \
    unsigned long RDV_UTHASH_FN(_test_hash_allocs)(void) { return atomic_load(&RDV_UTHASH_FN(_hash_calls_)); }

#endif
