/* stcp_handshake.c — the server side of the secure-TCP key exchange
 * (wire.md §6.3): frame 1 out, frame 2 in, the session key handed to the
 * core's record layer (wire.md §6.4 is the core's job). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stcp.h"

int (*stcp_box_keypair)(unsigned char *pk, unsigned char *sk) = crypto_box_keypair;

#define STCP_SM_LEN (crypto_sign_BYTES + crypto_box_PUBLICKEYBYTES) /* 96 */
#define STCP_SEALED_LEN (crypto_box_MACBYTES + 32)                   /* 48 */

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
    if (!hs) {
        (*s->st.skipped_error)++;
        return;
    }
    hs->id = id;
    uint8_t box_pk[crypto_box_PUBLICKEYBYTES], sm[STCP_SM_LEN];
    long n = stcp_box_keypair(box_pk, hs->box_sk) == 0
                 ? s->keys->sign(s->keys_self, box_pk, sizeof box_pk, sm, sizeof sm)
                 : -EIO;
    int r = (int)n;
    if (n == (long)sizeof sm) {
        ProtobufCBinaryData key = { sizeof sm, sm };
        Hbb__KeyExchange kx = HBB__KEY_EXCHANGE__INIT;
        kx.n_keys = 1;
        kx.keys = &key;
        Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
        m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE;
        m.key_exchange = &kx;
        r = s->core->api->send(s->core, id, &m);
    } else if (n >= 0) {
        r = -EPROTO;
    }
    if (r < 0) {
        /* A send failure has closed the connection already. */
        sodium_memzero(hs->box_sk, sizeof hs->box_sk);
        free(hs);
        (*s->st.skipped_error)++;
        RDV_LOG_RL(s->core, RDV_LOG_WARN, "conn %llu: cannot offer a key exchange: %s", (unsigned long long)id,
                   strerror(-r));
        return;
    }
    /* Only now: a failed send may have run the close hook for this id. */
    HASH_ADD(hh, s->pending, id, sizeof hs->id, hs);
    s->npending++;
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
