/* tests/common/jwt_hs256.h — login tokens for tests, built with libsodium
 * (HMAC-SHA-256, base64url) rather than libjwt, which login-gate uses to
 * check them. Header-only: the module's unit suite and the integration
 * suite both include it. */
#ifndef RDV_TEST_JWT_HS256_H
#define RDV_TEST_JWT_HS256_H

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* "header.payload.signature" of the two JSON texts into out: HMAC-SHA-256
 * under key, its first sig_len bytes (0: no signature, as alg "none"). */
static inline void test_jwt(char *out, size_t cap, const char *header, const char *payload, const char *key,
                            size_t sig_len)
{
    char h[512], p[1024];
    cr_assert_not_null(sodium_bin2base64(h, sizeof h, (const unsigned char *)header, strlen(header), sodium_base64_VARIANT_URLSAFE_NO_PADDING));
    cr_assert_not_null(
        sodium_bin2base64(p, sizeof p, (const unsigned char *)payload, strlen(payload), sodium_base64_VARIANT_URLSAFE_NO_PADDING));
    size_t hl = strlen(h), pl = strlen(p);
    cr_assert_lt(hl + 1 + pl, cap);
    memcpy(out, h, hl);
    out[hl] = '.';
    memcpy(out + hl + 1, p, pl + 1);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state s;
    crypto_auth_hmacsha256_init(&s, (const unsigned char *)key, strlen(key));
    crypto_auth_hmacsha256_update(&s, (const unsigned char *)out, strlen(out));
    crypto_auth_hmacsha256_final(&s, mac);
    char sig[128] = "";
    if (sig_len)
        cr_assert_not_null(sodium_bin2base64(sig, sizeof sig, mac, sig_len < sizeof mac ? sig_len : sizeof mac,
                                             sodium_base64_VARIANT_URLSAFE_NO_PADDING));
    cr_assert_lt(strlen(out) + 1 + strlen(sig), cap);
    strcat(out, ".");
    strcat(out, sig);
}

/* As rustdesk-api issues them: HS256, {"user_id":…, "exp":exp}. */
static inline void test_jwt_exp(char *out, size_t cap, long long exp, const char *key)
{
    char payload[96];
    snprintf(payload, sizeof payload, "{\"user_id\":7,\"exp\":%lld}", exp);
    test_jwt(out, cap, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, key, 32);
}

#endif
