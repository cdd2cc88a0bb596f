/* login_jwt.h — the login token check of login-gate (libjwt). */
#ifndef LOGIN_JWT_H
#define LOGIN_JWT_H

#include <stddef.h>
#include <stdint.h>

typedef enum login_verdict {
    LOGIN_OK = 0,
    LOGIN_MALFORMED,     /* empty, or no '.' at all (not even shaped like a JWT) */
    LOGIN_BAD_SIGNATURE, /* libjwt does not verify it with the key, or not HS256 */
    LOGIN_NO_EXP,      /* no integer "exp" claim */
    LOGIN_EXPIRED,     /* exp <= now */
} login_verdict;

/* token: compact JWS; key: the shared HS256 secret (non-empty); now_s: wall
 * clock, seconds since the epoch. A token must be HS256, verify with key and
 * carry an integer "exp" later than now_s (as rustdesk-api issues them). */
login_verdict login_jwt_check(const char *token, const char *key, int64_t now_s);
const char *login_verdict_name(login_verdict v);

#endif
