/* login_jwt.c — HS256 login tokens, checked with libjwt (signature, alg,
 * claims) so none of the JWT format is hand-parsed here. */
#include "login_jwt.h"

#include <errno.h>
#include <jwt.h>
#include <string.h>

login_verdict login_jwt_check(const char *token, const char *key, int64_t now_s)
{
    if (!token || !token[0] || strchr(token, '.') == NULL)
        return LOGIN_MALFORMED;
    size_t kl = strlen(key);
    if (kl == 0 || kl > (size_t)INT32_MAX)
        return LOGIN_BAD_SIGNATURE;
    jwt_t *j = NULL;
    int r = jwt_decode(&j, token, (const unsigned char *)key, (int)kl);
    if (r != 0 || !j) {
        jwt_free(j); /* libjwt says EINVAL alike for a bad signature and for bytes that are no JWT */
        return LOGIN_BAD_SIGNATURE;
    }
    login_verdict v = LOGIN_OK;
    if (jwt_get_alg(j) != JWT_ALG_HS256) {
        v = LOGIN_BAD_SIGNATURE; /* only the algorithm the key is for */
    } else {
        errno = 0;
        long exp = jwt_get_grant_int(j, "exp");
        if (errno == ENOENT || exp <= 0)
            v = LOGIN_NO_EXP;
        else if ((int64_t)exp <= now_s)
            v = LOGIN_EXPIRED;
    }
    jwt_free(j);
    return v;
}

const char *login_verdict_name(login_verdict v)
{
    switch (v) {
    case LOGIN_OK: return "ok";
    case LOGIN_MALFORMED: return "malformed";
    case LOGIN_BAD_SIGNATURE: return "not verified with jwt_key";
    case LOGIN_NO_EXP: return "no exp claim";
    case LOGIN_EXPIRED: return "expired";
    }
    return "?";
}
