/* test_login_gate.c — the login service against the fake core: off by
 * default, a token required with must_login, HS256 tokens checked with
 * jwt_key (signature, algorithm, exp), the console command, reload
 * (rendezvous.md §15.10, checklist R230). Tokens are built here with
 * libsodium (HMAC-SHA-256, base64url), not with the library under test. */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "fakecore.h"
#include "jwt_hs256.h"
#include "login_jwt.h"
#include "rdv/svc/login.h"

static fc_core *fc;
static void *st;
static const rdv_login_api *api;
static void *self;
static char out[4096];

#define KEY "s3cret-of-the-api-server"
#define NOW 1700000000 /* the fake core's wall clock, seconds */

static void load(const char *conf)
{
    fc = fc_new();
    cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &st), 0);
    rdv_core *h = fc_handle(fc, "test");
    api = h->api->service_get(h, RDV_SVC_LOGIN, RDV_SVC_LOGIN_VERSION, &self);
    cr_assert_not_null(api);
}

static void teardown(void) { fc_free(fc); }

static const char *refusal(const char *token) { return api->punch_refusal(self, token); }

/* header.payload.signature (tests/common/jwt_hs256.h); one shared buffer. */
static char *token_with(const char *header, const char *payload, const char *key, size_t sig_len)
{
    static char tok[2048];
    test_jwt(tok, sizeof tok, header, payload, key, sig_len);
    return tok;
}

static const char *HS256 = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static char *token_exp(long long exp, const char *key)
{
    static char tok[2048];
    test_jwt_exp(tok, sizeof tok, exp, key);
    return tok;
}

static void setup_sodium(void) { cr_assert_geq(sodium_init(), 0); }
TestSuite(login, .init = setup_sodium, .fini = teardown);

Test(login, off_by_default_every_request_passes)
{
    load(NULL);
    cr_assert_null(refusal(""));
    cr_assert_null(refusal("whatever"));
    cr_assert_eq(fc_counter(fc, "login-gate.refused_no_token"), 0);
    cr_assert_eq(fc_admin(fc, "ml", out, sizeof out), 0);
    cr_assert_str_eq(out, "MUST_LOGIN: false\n");
}

/* R230: no token -> the text for other_failure; without jwt_key any
 * non-empty token is a login (as the lejianwen server without a key). */
Test(login, must_login_needs_a_token_R230)
{
    load("must_login = true\n");
    const char *t = refusal("");
    cr_assert_not_null(t);
    cr_assert_str_eq(t, "Please log in to connect.");
    cr_assert_null(refusal("any-token"));
    cr_assert_eq(fc_counter(fc, "login-gate.refused_no_token"), 1);
    cr_assert_eq(fc_counter(fc, "login-gate.allowed"), 1);
}

Test(login, texts_are_settings)
{
    load("must_login = true\nrequired_text = \"Log in first\"\ninvalid_text = \"Log in again\"\njwt_key = k\n");
    cr_assert_str_eq(refusal(""), "Log in first");
    cr_assert_str_eq(refusal("x.y.z"), "Log in again");
}

Test(login, a_current_token_signed_with_the_key_passes)
{
    load("must_login = true\njwt_key = \"" KEY "\"\n");
    cr_assert_null(refusal(token_exp(NOW + 3600, KEY)));
    cr_assert_null(refusal(token_exp(NOW + 1, KEY)));
    cr_assert_eq(fc_counter(fc, "login-gate.allowed"), 2);
}

Test(login, expired_tokens_are_refused)
{
    load("must_login = true\njwt_key = \"" KEY "\"\n");
    cr_assert_not_null(refusal(token_exp(NOW, KEY)), "exp must be later than now");
    cr_assert_not_null(refusal(token_exp(NOW - 3600, KEY)));
    cr_assert_eq(fc_counter(fc, "login-gate.refused_expired"), 2);
    /* the clock moves: a token good now is refused once its exp passes */
    char keep[2048];
    snprintf(keep, sizeof keep, "%s", token_exp(NOW + 60, KEY));
    cr_assert_null(refusal(keep));
    fc_set_wall_us(fc, (uint64_t)(NOW + 61) * 1000000u);
    cr_assert_not_null(refusal(keep));
}

Test(login, forged_and_malformed_tokens_are_refused)
{
    load("must_login = true\njwt_key = \"" KEY "\"\n");
    const char *bad[] = {
        token_exp(NOW + 3600, "another key"),
        token_with(HS256, "{\"user_id\":7}", KEY, 32),                       /* no exp */
        token_with(HS256, "{\"user_id\":7,\"exp\":\"9999999999\"}", KEY, 32), /* exp not a number */
        token_with("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"user_id\":7,\"exp\":9999999999}", KEY, 0),
        token_with(HS256, "{\"user_id\":7,\"exp\":9999999999}", KEY, 0),      /* signature stripped */
        token_with(HS256, "{\"user_id\":7,\"exp\":9999999999}", KEY, 16),     /* signature cut */
        token_with(HS256, "not json", KEY, 32),
        "x", "a.b", "a.b.c", "..", "...", "a.b.c.d",
    };
    char copy[2048];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(copy, sizeof copy, "%s", bad[i]); /* token_with reuses its buffer */
        cr_assert_not_null(refusal(copy), "token %zu accepted: %s", i, copy);
    }
    cr_assert_eq(fc_counter(fc, "login-gate.allowed"), 0);
    /* a valid token with one payload byte changed */
    snprintf(copy, sizeof copy, "%s", token_exp(NOW + 3600, KEY));
    char *dot = strchr(copy, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    cr_assert_not_null(refusal(copy), "tampered payload accepted");
}

Test(login, another_algorithm_with_the_same_key_is_refused)
{
    load("must_login = true\njwt_key = \"" KEY "\"\n");
    /* HS512 over the same bytes: a valid signature for a different alg */
    const char *hdr = "{\"alg\":\"HS512\",\"typ\":\"JWT\"}", *pl = "{\"user_id\":7,\"exp\":9999999999}";
    char tok[1024], sig[160];
    test_jwt(tok, sizeof tok, hdr, pl, KEY, 0); /* "header.payload." */
    tok[strlen(tok) - 1] = 0;
    unsigned char mac[crypto_auth_hmacsha512_BYTES];
    crypto_auth_hmacsha512_state s;
    crypto_auth_hmacsha512_init(&s, (const unsigned char *)KEY, strlen(KEY));
    crypto_auth_hmacsha512_update(&s, (const unsigned char *)tok, strlen(tok));
    crypto_auth_hmacsha512_final(&s, mac);
    cr_assert_not_null(sodium_bin2base64(sig, sizeof sig, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING));
    strcat(tok, ".");
    strcat(tok, sig);
    cr_assert_not_null(refusal(tok));
}

Test(login, tokens_over_token_max_are_not_parsed)
{
    load("must_login = true\njwt_key = \"" KEY "\"\ntoken_max = 64\n");
    const char *t = token_exp(NOW + 3600, KEY);
    cr_assert_gt(strlen(t), 64);
    cr_assert_not_null(refusal(t));
    cr_assert_eq(fc_counter(fc, "login-gate.refused_bad_token"), 1);
}

Test(login, console_sets_and_reload_restores)
{
    load(NULL);
    cr_assert_eq(fc_admin(fc, "ml Y", out, sizeof out), 0);
    cr_assert_str_eq(out, "MUST_LOGIN: true\n");
    cr_assert_not_null(refusal(""));
    cr_assert_eq(fc_admin(fc, "must-login N", out, sizeof out), 0);
    cr_assert_str_eq(out, "MUST_LOGIN: false\n");
    cr_assert_null(refusal(""));
    cr_assert_eq(fc_admin(fc, "ml y", out, sizeof out), 0);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, ""), 0);
    cr_assert_null(refusal(""), "a reload applies the file again");
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "must_login = true\njwt_key = k2\n"), 0);
    cr_assert_not_null(refusal(""));
    cr_assert_not_null(refusal(token_exp(NOW + 60, KEY)), "the new key applies");
    cr_assert_null(refusal(token_exp(NOW + 60, "k2")));
}

Test(login, verdicts_are_told_apart)
{
    cr_assert_eq(login_jwt_check(token_exp(NOW + 5, KEY), KEY, NOW), LOGIN_OK);
    cr_assert_eq(login_jwt_check(token_exp(NOW + 5, KEY), KEY, NOW + 5), LOGIN_EXPIRED);
    cr_assert_eq(login_jwt_check(token_exp(NOW + 5, "x"), KEY, NOW), LOGIN_BAD_SIGNATURE);
    cr_assert_eq(login_jwt_check(token_with(HS256, "{\"user_id\":7}", KEY, 32), KEY, NOW), LOGIN_NO_EXP);
    cr_assert_eq(login_jwt_check("nodots", KEY, NOW), LOGIN_MALFORMED);
    cr_assert_eq(login_jwt_check("", KEY, NOW), LOGIN_MALFORMED);
    cr_assert_str_eq(login_verdict_name(LOGIN_EXPIRED), "expired");
    fc = fc_new(); /* for teardown */
}
