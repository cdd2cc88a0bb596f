/* Secure-TCP record layer (wire.md §6.4): one crypto_secretbox per frame,
 * nonce = LE64(counter) || 16 zero bytes, counter incremented before use. */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <sodium.h>

#include "rdv/wire.h"

_Static_assert(RDV_SECURE_KEYBYTES == crypto_secretbox_KEYBYTES, "key size");
_Static_assert(RDV_SECURE_MACBYTES == crypto_secretbox_MACBYTES, "MAC size");

/* sodium_init() is thread-safe and idempotent; the flag only skips its lock
 * on the hot path. A race merely calls it twice. */
static int sodium_ready(void)
{
    static atomic_bool ready;
    if (atomic_load_explicit(&ready, memory_order_acquire))
        return 0;
    if (sodium_init() < 0)
        return -EIO;
    atomic_store_explicit(&ready, true, memory_order_release);
    return 0;
}

static void make_nonce(uint64_t seq, uint8_t nonce[crypto_secretbox_NONCEBYTES])
{
    memset(nonce, 0, crypto_secretbox_NONCEBYTES);
    for (size_t i = 0; i < 8; i++)
        nonce[i] = (uint8_t)(seq >> (8 * i));
}

int rdv_secure_seal(const uint8_t key[32], uint64_t *seq, const uint8_t *p, size_t n, uint8_t *out)
{
    int rc = sodium_ready();
    if (rc < 0)
        return rc;
    uint8_t nonce[crypto_secretbox_NONCEBYTES];
    make_nonce(++*seq, nonce);
    return crypto_secretbox_easy(out, p, n, nonce, key) == 0 ? 0 : -EIO;
}

int rdv_secure_open(const uint8_t key[32], uint64_t *seq, const uint8_t *e, size_t n, uint8_t *out)
{
    int rc = sodium_ready();
    if (rc < 0)
        return rc;
    if (n < crypto_secretbox_MACBYTES)
        return -EBADMSG;
    uint8_t nonce[crypto_secretbox_NONCEBYTES];
    make_nonce(*seq + 1, nonce);
    if (crypto_secretbox_open_easy(out, e, n, nonce, key) != 0)
        return -EBADMSG;
    /* Only a frame that authenticated consumes a counter value. */
    ++*seq;
    return 0;
}
