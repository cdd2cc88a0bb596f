/* rdv/svc/keys.h — the "keys" service: the server's Ed25519 key and the
 * licence key (rendezvous.md §3; -k / KEY semantics incl. "", "-", "_"). */
#ifndef RDV_SVC_KEYS_H
#define RDV_SVC_KEYS_H

#include "rdv/types.h"

#define RDV_SVC_KEYS "keys"
#define RDV_SVC_KEYS_VERSION 1

typedef struct rdv_keys_api {
    /* True when a signing (secret) key is loaded. */
    bool (*can_sign)(void *self);
    /* Licence key clients must send in PunchHoleRequest; "" = no check. */
    const char *(*licence_key)(void *self);
    /* base64 of the 32-byte signing public key ("" without a key). */
    const char *(*public_key_b64)(void *self);
    /* 32-byte signing public key, or NULL without a key. */
    const uint8_t *(*public_key)(void *self);
    /* Combined-mode Ed25519 signature (crypto_sign): out gets 64 + n bytes.
     * Returns the length, -ENOKEY without a key, -ENOSPC if cap is short. */
    long (*sign)(void *self, const uint8_t *m, size_t n, uint8_t *out, size_t cap);
} rdv_keys_api;

#endif
