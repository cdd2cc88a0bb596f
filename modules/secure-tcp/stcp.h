/* stcp.h — internals of the secure-tcp module shared by its two files and
 * its unit suite (nothing here is exported from the .so). */
#ifndef RDV_STCP_H
#define RDV_STCP_H

#include <stddef.h>

#include <sodium.h>

/* Out of memory in the offer table refuses one operation (rdv/uthash.h). */
#define RDV_UTHASH_PREFIX stcp
#include <rdv/uthash.h>

#include <rdv/core.h>
#include <rdv/proto.h>
#include <rdv/svc/keys.h>

typedef struct stcp_cfg {
    bool enabled;        /* offer KeyExchange on accept (EXT §15.1) */
    int64_t max_pending; /* offers waiting for the client's first frame */
    int64_t precompute;  /* frame-1 offers prepared ahead (0 = on accept) */
} stcp_cfg;

/* A prepared offer: a fresh box key pair and frame 1's signed public key
 * (~50 µs of X25519 + Ed25519 done off the accept path), with the signing
 * key it was made with so a changed server key discards it. Used once. */
typedef struct stcp_pre {
    uint8_t box_sk[crypto_box_SECRETKEYBYTES];
    uint8_t sm[crypto_sign_BYTES + crypto_box_PUBLICKEYBYTES];
    uint8_t signer[crypto_sign_PUBLICKEYBYTES];
} stcp_pre;

/* One offered handshake: the box secret key until the client's first frame. */
typedef struct stcp_hs {
    rdv_conn_id id;
    uint8_t box_sk[crypto_box_SECRETKEYBYTES];
    UT_hash_handle hh;
} stcp_hs;

typedef struct stcp_stats {
    uint64_t *offered, *completed, *plaintext, *offered_prepared, *prepared_discarded;
    uint64_t *skipped_nokey, *skipped_full, *skipped_error;
    uint64_t *failed_count, *failed_length, *failed_box, *failed_unexpected, *failed_install;
    uint64_t *oom;
} stcp_stats;

typedef struct stcp {
    rdv_core *core;
    const stcp_cfg *cfg;
    const rdv_keys_api *keys;
    void *keys_self;
    stcp_hs *pending; /* uthash by conn id */
    size_t npending;
    stcp_pre *pool;   /* prepared offers, cfg->precompute slots */
    size_t npool, pool_cap;
    rdv_timer *refill;
    bool refill_armed;
    stcp_stats st;
} stcp;

/* Box key pair source: crypto_box_keypair, replaceable by unit tests so
 * frame 1 can be compared with the wire.md §6.6 vector byte for byte. */
extern int (*stcp_box_keypair)(unsigned char *pk, unsigned char *sk);

/* stcp_handshake.c */
/* Offer a KeyExchange on a freshly accepted connection (frame 1). */
void stcp_offer(stcp *s, rdv_conn_id id);
/* The client's first frame was not a KeyExchange: forget the offer. */
void stcp_settle_plaintext(stcp *s, rdv_conn_id id);
/* The client's KeyExchange (frame 2). Returns RDV_OK or RDV_CLOSE. */
int stcp_accept(stcp *s, rdv_conn_id id, const Hbb__KeyExchange *kx);
/* Forget (and wipe) the offer of a closed connection, if any. */
void stcp_forget(stcp *s, rdv_conn_id id);
/* Wipe and free every offer. */
void stcp_forget_all(stcp *s);
/* Prepared offers: size the pool to cfg->precompute (wiping what no longer
 * fits) and start filling it; stcp_pool_free wipes and frees it. */
int stcp_pool_init(stcp *s);
void stcp_pool_resize(stcp *s);
void stcp_pool_free(stcp *s);

#endif
