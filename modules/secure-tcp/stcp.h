/* stcp.h — internals of the secure-tcp module shared by its two files and
 * its unit suite (nothing here is exported from the .so). */
#ifndef RDV_STCP_H
#define RDV_STCP_H

#include <sodium.h>
#include <uthash.h>

#include <rdv/core.h>
#include <rdv/proto.h>
#include <rdv/svc/keys.h>

typedef struct stcp_cfg {
    bool enabled;        /* offer KeyExchange on accept (EXT §15.1) */
    int64_t max_pending; /* offers waiting for the client's first frame */
} stcp_cfg;

/* One offered handshake: the box secret key until the client's first frame. */
typedef struct stcp_hs {
    rdv_conn_id id;
    uint8_t box_sk[crypto_box_SECRETKEYBYTES];
    UT_hash_handle hh;
} stcp_hs;

typedef struct stcp_stats {
    uint64_t *offered, *completed, *plaintext;
    uint64_t *skipped_nokey, *skipped_full, *skipped_error;
    uint64_t *failed_count, *failed_length, *failed_box, *failed_unexpected, *failed_install;
} stcp_stats;

typedef struct stcp {
    rdv_core *core;
    const stcp_cfg *cfg;
    const rdv_keys_api *keys;
    void *keys_self;
    stcp_hs *pending; /* uthash by conn id */
    size_t npending;
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

#endif
