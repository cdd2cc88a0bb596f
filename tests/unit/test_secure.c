/* Secure-TCP record layer and the libsodium usage of wire.md §6.6–6.7. */
#include <criterion/criterion.h>
#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "rdv/proto.h"
#include "rdv/wire.h"

/* Decode a hex string (spaces allowed) into out; returns the byte count. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    const char *end;
    cr_assert_eq(sodium_hex2bin(out, cap, hex, strlen(hex), " ", &n, &end), 0, "bad hex");
    cr_assert_eq(*end, '\0', "trailing hex");
    return n;
}

static void assert_hex(const uint8_t *p, size_t n, const char *hex)
{
    uint8_t want[512];
    size_t wn = unhex(hex, want, sizeof want);
    cr_assert_eq(n, wn, "length %zu, want %zu", n, wn);
    cr_assert_arr_eq(p, want, n);
}

static void seed(uint8_t s[32], uint8_t v)
{
    memset(s, v, 32);
}

/* Session key of §6.6: 0x44 x 32 (filled by setup). */
static uint8_t K44[32];

#define SIGN_PK "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737"
#define PK_STRING "0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="
#define BOX_PK "9d8d78b9c9e6661e552f2f1af02095ee2f8743fa2e6183f41bb7077ef51b5379"
#define CLIENT_PK "4eb4fafee2bd3018a24e310de8106333c2b364eaed029a7f05d7b45ccc77683a"
#define SEALED_K \
    "db12e6a0bc995d860c160fb3cc8ec4c1c0f3343589b7caabcb05dccab3d930e9600ca139a4808c56f762654bd8bc7300"

static void sign_keys(uint8_t pk[32], uint8_t sk[64])
{
    uint8_t s[32];
    seed(s, 0x11);
    cr_assert_eq(crypto_sign_seed_keypair(pk, sk, s), 0);
}

static void box_keys(uint8_t v, uint8_t pk[32], uint8_t sk[32])
{
    uint8_t s[32];
    seed(s, v);
    cr_assert_eq(crypto_box_seed_keypair(pk, sk, s), 0);
}

static void setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    memset(K44, 0x44, sizeof K44);
}

TestSuite(secure, .init = setup);

/* §6.6: server signing key, its public key string and the key file. */
Test(secure, signing_key)
{
    uint8_t pk[32], sk[64];
    sign_keys(pk, sk);
    assert_hex(pk, 32, SIGN_PK);
    char b64[sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof b64, sk + 32, 32, sodium_base64_VARIANT_ORIGINAL);
    cr_assert_str_eq(b64, PK_STRING);
    sodium_bin2base64(b64, sizeof b64, sk, 64, sodium_base64_VARIANT_ORIGINAL);
    cr_assert_str_eq(b64, "ERERERERERERERERERERERERERERERERERERERERERHQSrIydCu0qzoTaL1GFeTm0CJKtxoBa6+FIKMyyXeHNw==");
}

static size_t pack_key_exchange(ProtobufCBinaryData *keys, size_t n, uint8_t *out, size_t cap)
{
    Hbb__KeyExchange kx = HBB__KEY_EXCHANGE__INIT;
    kx.n_keys = n;
    kx.keys = keys;
    rdv_msg m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE;
    m.key_exchange = &kx;
    return rdv_msg_pack(&m, out, cap);
}

/* §6.6 frame 1: KeyExchange{[crypto_sign(box pk)]}, header 95 01. */
Test(secure, handshake_frame1)
{
    uint8_t pk[32], sk[64], bpk[32], bsk[32];
    sign_keys(pk, sk);
    box_keys(0x22, bpk, bsk);
    assert_hex(bpk, 32, BOX_PK);

    uint8_t sm[96];
    unsigned long long smlen = 0;
    cr_assert_eq(crypto_sign(sm, &smlen, bpk, 32, sk), 0);
    cr_assert_eq(smlen, 96);
    assert_hex(sm, 64,
               "ed53f087857c6a1d2bdc84428afd00414957f9ad2c0a7120c3ee7e3a3f4d77d7"
               "100ec1101d64fdd0f70e6cb643a3ba9a4def95e013d5f4e5de1965c07c55af05");
    cr_assert_arr_eq(sm + 64, bpk, 32);

    ProtobufCBinaryData key = {sizeof sm, sm};
    uint8_t payload[128], hdr[RDV_FRAME_HDR_MAX];
    size_t n = pack_key_exchange(&key, 1, payload, sizeof payload);
    cr_assert_eq(n, 101);
    assert_hex(payload, 5, "ca 01 62 0a 60");
    cr_assert_arr_eq(payload + 5, sm, 96);
    cr_assert_eq(rdv_frame_header(n, hdr), 2);
    assert_hex(hdr, 2, "95 01");

    /* What the client does with it. */
    uint8_t m[32];
    unsigned long long mlen = 0;
    cr_assert_eq(crypto_sign_open(m, &mlen, sm, smlen, pk), 0);
    cr_assert_eq(mlen, 32);
    cr_assert_arr_eq(m, bpk, 32);
}

/* §6.6 frame 2: the client's sealed session key, and the server opening it. */
Test(secure, handshake_frame2)
{
    uint8_t bpk[32], bsk[32], cpk[32], csk[32];
    box_keys(0x22, bpk, bsk);
    box_keys(0x33, cpk, csk);
    assert_hex(cpk, 32, CLIENT_PK);

    const uint8_t zero_nonce[crypto_box_NONCEBYTES] = {0};
    uint8_t c[48];
    cr_assert_eq(crypto_box_easy(c, K44, 32, zero_nonce, bpk, csk), 0);
    assert_hex(c, 48, SEALED_K);

    uint8_t k[32];
    cr_assert_eq(crypto_box_open_easy(k, c, sizeof c, zero_nonce, cpk, bsk), 0);
    cr_assert_arr_eq(k, K44, 32);

    ProtobufCBinaryData keys[2] = {{32, cpk}, {48, c}};
    uint8_t payload[128], hdr[RDV_FRAME_HDR_MAX];
    size_t n = pack_key_exchange(keys, 2, payload, sizeof payload);
    cr_assert_eq(n, 87);
    assert_hex(payload, n, "ca01 54 0a20 " CLIENT_PK " 0a30 " SEALED_K);
    cr_assert_eq(rdv_frame_header(n, hdr), 2);
    assert_hex(hdr, 2, "5d 01");
}

/* The 68-byte PunchHoleRequest of §6.6. */
static size_t punch_hole_request(uint8_t *out, size_t cap)
{
    Hbb__PunchHoleRequest r = HBB__PUNCH_HOLE_REQUEST__INIT;
    r.id = "123456789";
    r.nat_type = HBB__NAT_TYPE__ASYMMETRIC;
    r.licence_key = PK_STRING;
    r.version = "1.4.9";
    rdv_msg m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_REQUEST;
    m.punch_hole_request = &r;
    return rdv_msg_pack(&m, out, cap);
}

#define C2S_CIPHER                                                                             \
    "cf9f184016f38ef0d2fb6fa8fea161fecb9f884f4ac4eaf106f7d1d66b3f376618fac3540c864394712ea30ab7" \
    "d357751346894bd00a1871ee8f491c0b886ac5edb3015a33e19f07b5e1272752eda230cf901ede"
#define S2C_CIPHER "81fe8c8672f277aaa78154316c726e90d3df9a44"

Test(secure, first_client_frame)
{
    uint8_t p[128], e[128 + RDV_SECURE_MACBYTES], hdr[RDV_FRAME_HDR_MAX];
    size_t n = punch_hole_request(p, sizeof p);
    cr_assert_eq(n, 68);
    uint64_t seq = 0;
    cr_assert_eq(rdv_secure_seal(K44, &seq, p, n, e), 0);
    cr_assert_eq(seq, 1);
    assert_hex(e, n + 16, C2S_CIPHER);
    cr_assert_eq(rdv_frame_header(n + 16, hdr), 2);
    assert_hex(hdr, 2, "51 01");

    /* The server's side of the same frame. */
    uint8_t back[128];
    uint64_t rseq = 0;
    cr_assert_eq(rdv_secure_open(K44, &rseq, e, n + 16, back), 0);
    cr_assert_eq(rseq, 1);
    cr_assert_arr_eq(back, p, n);
}

Test(secure, first_server_frame)
{
    const uint8_t p[] = {0x5a, 0x02, 0x18, 0x02};
    uint8_t e[sizeof p + RDV_SECURE_MACBYTES], hdr[RDV_FRAME_HDR_MAX];
    uint64_t seq = 0;
    cr_assert_eq(rdv_secure_seal(K44, &seq, p, sizeof p, e), 0);
    assert_hex(e, sizeof e, S2C_CIPHER);
    cr_assert_eq(rdv_frame_header(sizeof e, hdr), 1);
    cr_assert_eq(hdr[0], 0x50);
}

/* The counter lives in the nonce as LE64: counter 258 -> 02 01 00 ... */
Test(secure, counter_258_nonce)
{
    const uint8_t p[] = "hello";
    uint8_t e[sizeof p + 16], ref[sizeof p + 16], nonce[crypto_secretbox_NONCEBYTES] = {0x02, 0x01};
    uint64_t seq = 257;
    cr_assert_eq(rdv_secure_seal(K44, &seq, p, sizeof p, e), 0);
    cr_assert_eq(seq, 258);
    crypto_secretbox_easy(ref, p, sizeof p, nonce, K44);
    cr_assert_arr_eq(e, ref, sizeof e);

    uint8_t back[sizeof p];
    uint64_t rseq = 257;
    cr_assert_eq(rdv_secure_open(K44, &rseq, e, sizeof e, back), 0);
    cr_assert_eq(rseq, 258);
    cr_assert_arr_eq(back, p, sizeof p);
}

/* Two directions, independent counters, shared key; many frames in order. */
Test(secure, round_trip_both_directions)
{
    uint64_t c_send = 0, c_recv = 0, s_send = 0, s_recv = 0;
    uint8_t p[300], e[300 + 16], back[300];
    for (size_t i = 0; i < sizeof p; i++)
        p[i] = (uint8_t)(i * 7);
    for (size_t round = 0; round < 50; round++) {
        size_t n = round * 6;
        cr_assert_eq(rdv_secure_seal(K44, &c_send, p, n, e), 0);
        cr_assert_eq(rdv_secure_open(K44, &s_recv, e, n + 16, back), 0);
        cr_assert_arr_eq(back, p, n);
        if (round % 3 == 0)
            continue; /* the server answers less often: counters diverge */
        cr_assert_eq(rdv_secure_seal(K44, &s_send, p, n, e), 0);
        cr_assert_eq(rdv_secure_open(K44, &c_recv, e, n + 16, back), 0);
        cr_assert_arr_eq(back, p, n);
    }
    cr_assert_eq(c_send, 50);
    cr_assert_eq(s_recv, 50);
    cr_assert_eq(s_send, 33);
    cr_assert_eq(c_recv, 33);
}

/* Flipping any bit of the ciphertext fails, and does not consume a counter. */
Test(secure, tamper_detected)
{
    uint8_t e[20], back[4];
    const uint8_t p[] = {0x5a, 0x02, 0x18, 0x02};
    uint64_t seq = 0;
    rdv_secure_seal(K44, &seq, p, sizeof p, e);
    for (size_t i = 0; i < sizeof e; i++) {
        for (int bit = 0; bit < 8; bit++) {
            e[i] ^= (uint8_t)(1u << bit);
            uint64_t r = 0;
            cr_assert_eq(rdv_secure_open(K44, &r, e, sizeof e, back), -EBADMSG, "byte %zu", i);
            cr_assert_eq(r, 0);
            e[i] ^= (uint8_t)(1u << bit);
        }
    }
    uint64_t r = 0;
    cr_assert_eq(rdv_secure_open(K44, &r, e, sizeof e, back), 0);
}

Test(secure, wrong_counter_or_key_fails)
{
    uint8_t e[20], back[4];
    const uint8_t p[] = {1, 2, 3, 4};
    uint64_t seq = 0;
    rdv_secure_seal(K44, &seq, p, sizeof p, e);

    uint64_t r = 1; /* expects counter 2 */
    cr_assert_eq(rdv_secure_open(K44, &r, e, sizeof e, back), -EBADMSG);
    cr_assert_eq(r, 1);

    uint8_t k2[32];
    memcpy(k2, K44, 32);
    k2[31] ^= 1;
    r = 0;
    cr_assert_eq(rdv_secure_open(k2, &r, e, sizeof e, back), -EBADMSG);

    /* A replayed frame fails once the counter moved on. */
    r = 0;
    cr_assert_eq(rdv_secure_open(K44, &r, e, sizeof e, back), 0);
    cr_assert_eq(rdv_secure_open(K44, &r, e, sizeof e, back), -EBADMSG);
}

Test(secure, too_short)
{
    uint8_t e[16] = {0}, back[1];
    uint64_t r = 0;
    cr_assert_eq(rdv_secure_open(K44, &r, e, 15, back), -EBADMSG);
    cr_assert_eq(rdv_secure_open(K44, &r, e, 2, back), -EBADMSG);
    /* The smallest sealed frame: empty plaintext, MAC only. */
    uint64_t s = 0;
    cr_assert_eq(rdv_secure_seal(K44, &s, NULL, 0, e), 0);
    cr_assert_eq(rdv_secure_open(K44, &r, e, 16, back), 0);
    cr_assert_eq(r, 1);
}

/* §6.7: signed IdPk. */
Test(secure, idpk_signature)
{
    uint8_t pk[32], sk[64], peer_pk[32];
    sign_keys(pk, sk);
    for (int i = 0; i < 32; i++)
        peer_pk[i] = (uint8_t)i;
    Hbb__IdPk idpk = HBB__ID_PK__INIT;
    idpk.id = "123456789";
    idpk.pk.len = 32;
    idpk.pk.data = peer_pk;
    uint8_t ser[64];
    size_t n = hbb__id_pk__pack(&idpk, ser);
    cr_assert_eq(n, 45);
    assert_hex(ser, n,
               "0a09 313233343536373839 1220 "
               "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");

    uint8_t sm[64 + 45];
    unsigned long long smlen = 0;
    cr_assert_eq(crypto_sign(sm, &smlen, ser, n, sk), 0);
    cr_assert_eq(smlen, 109);
    assert_hex(sm, 64,
               "99b50f50824fb8cba0137af49dd1ec73122746e106523b34cba57b2afa109a15"
               "088bbebaeff9bf24d51138e51268f61fbdb9eeee7e696e7090d121d08d2eb602");
    cr_assert_arr_eq(sm + 64, ser, n);

    uint8_t m[45];
    unsigned long long mlen = 0;
    cr_assert_eq(crypto_sign_open(m, &mlen, sm, smlen, pk), 0);
    cr_assert_eq(mlen, n);
}
