/* core/wire/hash.c — the keyed hash for tables keyed by client-chosen
 * bytes (peer ids, IPs). SipHash-2-4 (libsodium's crypto_shorthash) with a
 * random key drawn once per process: a client cannot predict bucket or
 * probe positions, so crafted keys cannot degrade a table. */
#include <stdbool.h>
#include <string.h>

#include <sodium.h>

#include "rdv/wire.h"

static uint8_t rdv_hash_key[crypto_shorthash_KEYBYTES];
static bool rdv_hash_keyed;

uint64_t rdv_keyed_hash(const void *p, size_t n)
{
    if (!rdv_hash_keyed) { /* first use: before any table exists */
        randombytes_buf(rdv_hash_key, sizeof rdv_hash_key);
        rdv_hash_keyed = true;
    }
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, p, n, rdv_hash_key);
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return v;
}
