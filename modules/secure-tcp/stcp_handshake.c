/* stcp_handshake.c — the server side of the secure-TCP key exchange
 * (wire.md §6.3): frame 1 out, frame 2 in, the session key handed to the
 * core's record layer (wire.md §6.4 is the core's job).
 *
 * Out of memory (an offer's record, or a slot uthash would have to create
 * or grow in the offer table) means no offer: the connection stays in
 * plaintext, as when max_pending is reached, counted (`oom`). The offer is
 * in the table before frame 1 goes out, so a client is never sent a frame 1
 * whose answer we could not check. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stcp.h"

int (*stcp_box_keypair)(unsigned char *pk, unsigned char *sk) = crypto_box_keypair;

/* ---- uthash's allocator and its test hook (rdv/uthash.h) */
RDV_UTHASH_HOOK_DEFINE()

#define STCP_SM_LEN (crypto_sign_BYTES + crypto_box_PUBLICKEYBYTES) /* 96 */
#define STCP_SEALED_LEN (crypto_box_MACBYTES + 32)                   /* 48 */

/* ---- prepared offers */

/* A fresh box key pair and its signed public key (frame 1's payload). */
static int stcp_make(stcp *s, uint8_t box_sk[crypto_box_SECRETKEYBYTES], uint8_t sm[STCP_SM_LEN])
{
    uint8_t box_pk[crypto_box_PUBLICKEYBYTES];
    if (stcp_box_keypair(box_pk, box_sk) != 0)
        return -EIO;
    long n = s->keys->sign(s->keys_self, box_pk, sizeof box_pk, sm, STCP_SM_LEN);
    return n == (long)STCP_SM_LEN ? 0 : n < 0 ? (int)n : -EPROTO;
}

static void stcp_pool_clear(stcp *s)
{
    if (s->pool)
        sodium_memzero(s->pool, s->pool_cap * sizeof *s->pool);
    s->npool = 0;
}

static void stcp_refill_arm(stcp *s)
{
    if (!s->refill_armed && s->npool < s->pool_cap && s->refill) {
        /* 1 ms: after the connection that used an offer has been served */
        s->core->api->timer_start(s->refill, 1, 0);
        s->refill_armed = true;
    }
}

/* One offer per tick (~50 µs) so a tick never holds the loop long; the
 * timer comes back until the pool is full. */
#define STCP_REFILL_PER_TICK 1

static void stcp_refill(void *ud)
{
    stcp *s = ud;
    s->refill_armed = false;
    const uint8_t *signer = s->keys->public_key(s->keys_self);
    if (!signer || !s->keys->can_sign(s->keys_self))
        return; /* nothing to sign with; stcp_offer skips anyway */
    for (int i = 0; i < STCP_REFILL_PER_TICK && s->npool < s->pool_cap; i++) {
        stcp_pre *p = &s->pool[s->npool];
        if (stcp_make(s, p->box_sk, p->sm) < 0) {
            sodium_memzero(p, sizeof *p);
            return; /* counted when an offer is made inline */
        }
        memcpy(p->signer, signer, sizeof p->signer);
        s->npool++;
    }
    stcp_refill_arm(s);
}

/* Frame 1 for a new connection: a prepared one when there is one made with
 * the current key, else made now. */
static int stcp_take(stcp *s, uint8_t box_sk[crypto_box_SECRETKEYBYTES], uint8_t sm[STCP_SM_LEN])
{
    if (s->npool) {
        const uint8_t *signer = s->keys->public_key(s->keys_self);
        stcp_pre *p = &s->pool[s->npool - 1];
        if (signer && memcmp(p->signer, signer, sizeof p->signer) == 0) {
            memcpy(box_sk, p->box_sk, sizeof p->box_sk);
            memcpy(sm, p->sm, sizeof p->sm);
            sodium_memzero(p, sizeof *p);
            s->npool--;
            (*s->st.offered_prepared)++;
            stcp_refill_arm(s);
            return 0;
        }
        /* the server key changed since they were made */
        (*s->st.prepared_discarded) += s->npool;
        stcp_pool_clear(s);
    }
    stcp_refill_arm(s);
    return stcp_make(s, box_sk, sm);
}

int stcp_pool_init(stcp *s)
{
    if (!(s->refill = s->core->api->timer_new(s->core, stcp_refill, s)))
        return -ENOMEM;
    stcp_pool_resize(s);
    return 0;
}

void stcp_pool_resize(stcp *s)
{
    size_t cap = s->cfg->enabled ? (size_t)s->cfg->precompute : 0;
    if (cap != s->pool_cap) {
        stcp_pool_clear(s);
        free(s->pool);
        s->pool = cap ? calloc(cap, sizeof *s->pool) : NULL;
        s->pool_cap = s->pool ? cap : 0;
    }
    stcp_refill_arm(s);
}

void stcp_pool_free(stcp *s)
{
    stcp_pool_clear(s);
    free(s->pool);
    s->pool = NULL;
    s->pool_cap = 0;
    if (s->refill)
        s->core->api->timer_free(s->refill);
    s->refill = NULL;
}

/* ---- handshakes */
static stcp_hs *stcp_find(stcp *s, rdv_conn_id id)
{
    stcp_hs *hs = NULL;
    HASH_FIND(hh, s->pending, &id, sizeof id, hs);
    return hs;
}

static void stcp_drop(stcp *s, stcp_hs *hs)
{
    HASH_DELETE(hh, s->pending, hs);
    s->npending--;
    sodium_memzero(hs->box_sk, sizeof hs->box_sk);
    free(hs);
}

void stcp_offer(stcp *s, rdv_conn_id id)
{
    /* §6.10: without a signing key there is no valid frame 1, and any other
     * first frame would break clients; send nothing. */
    if (!s->keys->can_sign(s->keys_self)) {
        (*s->st.skipped_nokey)++;
        return;
    }
    /* Full table: this client stays in plaintext (the only safe fallback);
     * the gauge and counter tell the operator to raise max_pending. */
    if (s->npending >= (size_t)s->cfg->max_pending) {
        (*s->st.skipped_full)++;
        RDV_LOG_RL(s->core, RDV_LOG_WARN, "%zu key exchanges pending (secure-tcp.max_pending): not offering one",
                   s->npending);
        return;
    }
    stcp_hs *hs = calloc(1, sizeof *hs);
    if (hs) {
        hs->id = id;
        HASH_ADD(hh, s->pending, id, sizeof hs->id, hs);
        if (!hs->hh.tbl) { /* uthash rolled the add back: the table is as it was */
            free(hs);
            hs = NULL;
        }
    }
    if (!hs) {
        (*s->st.oom)++;
        RDV_LOG_RL(s->core, RDV_LOG_WARN,
                   "out of memory: conn %llu not offered a key exchange (it stays in plaintext); fix: give rdvd "
                   "more memory or lower secure-tcp.max_pending",
                   (unsigned long long)id);
        return;
    }
    s->npending++;
    uint8_t sm[STCP_SM_LEN];
    int r = stcp_take(s, hs->box_sk, sm);
    if (r == 0) {
        ProtobufCBinaryData key = { sizeof sm, sm };
        Hbb__KeyExchange kx = HBB__KEY_EXCHANGE__INIT;
        kx.n_keys = 1;
        kx.keys = &key;
        Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
        m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE;
        m.key_exchange = &kx;
        r = s->core->api->send(s->core, id, &m);
    }
    if (r < 0) {
        /* A send failure has closed the connection already, and the close
         * hook may have dropped the offer (hs is then freed): look it up. */
        if ((hs = stcp_find(s, id)))
            stcp_drop(s, hs);
        (*s->st.skipped_error)++;
        RDV_LOG_RL(s->core, RDV_LOG_WARN, "conn %llu: cannot offer a key exchange: %s", (unsigned long long)id,
                   strerror(-r));
        return;
    }
    (*s->st.offered)++;
}

void stcp_settle_plaintext(stcp *s, rdv_conn_id id)
{
    stcp_hs *hs = stcp_find(s, id);
    if (!hs)
        return;
    stcp_drop(s, hs);
    (*s->st.plaintext)++;
}

/* §6.3: exactly 2 keys of 32 and 48 bytes; the box must open to 32 bytes
 * (crypto_box_open_easy of 48 bytes yields exactly 32 when it opens). */
int stcp_accept(stcp *s, rdv_conn_id id, const Hbb__KeyExchange *kx)
{
    stcp_hs *hs = stcp_find(s, id);
    if (!hs) {
        /* Not offered, already answered, or after a plaintext frame (§15.2). */
        (*s->st.failed_unexpected)++;
        RDV_LOG_RL(s->core, RDV_LOG_INFO, "conn %llu: KeyExchange without a pending offer; closing",
                   (unsigned long long)id);
        return RDV_CLOSE;
    }
    uint8_t sk[crypto_box_SECRETKEYBYTES];
    memcpy(sk, hs->box_sk, sizeof sk);
    stcp_drop(s, hs); /* one answer per offer, whatever happens next */

    const char *why = NULL;
    uint8_t key[32];
    static const uint8_t zero_nonce[crypto_box_NONCEBYTES];
    if (kx->n_keys != 2) {
        (*s->st.failed_count)++;
        why = "wrong number of keys";
    } else if (kx->keys[0].len != crypto_box_PUBLICKEYBYTES || kx->keys[1].len != STCP_SEALED_LEN) {
        (*s->st.failed_length)++;
        why = "wrong key length";
    } else if (crypto_box_open_easy(key, kx->keys[1].data, STCP_SEALED_LEN, zero_nonce, kx->keys[0].data, sk) != 0) {
        (*s->st.failed_box)++;
        why = "sealed key does not open";
    } else if (s->core->api->conn_set_key(s->core, id, key) < 0) {
        (*s->st.failed_install)++;
        why = "record layer refused the key";
    }
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(key, sizeof key);
    if (why) {
        RDV_LOG_RL(s->core, RDV_LOG_INFO, "conn %llu: bad KeyExchange (%s); closing", (unsigned long long)id, why);
        return RDV_CLOSE;
    }
    (*s->st.completed)++;
    return RDV_OK;
}

void stcp_forget(stcp *s, rdv_conn_id id)
{
    stcp_hs *hs = stcp_find(s, id);
    if (hs)
        stcp_drop(s, hs);
}

void stcp_forget_all(stcp *s)
{
    stcp_hs *hs, *tmp;
    HASH_ITER(hh, s->pending, hs, tmp)
        stcp_drop(s, hs);
}
