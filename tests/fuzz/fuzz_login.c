/* fuzz_login.c — login-gate's token check (modules/login-gate/login_jwt.c):
 * the bytes of PunchHoleRequest.token, from any client when must_login is
 * on, go to libjwt with the server's key. Never a crash or a leak; a token
 * is only accepted when it is shaped as a JWS (three dot-separated parts),
 * and never by an empty key. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "login_jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    char *tok = malloc(size + 1);
    if (!tok)
        return 0;
    memcpy(tok, data, size);
    tok[size] = 0;
    login_verdict v = login_jwt_check(tok, "fuzz-key", 1700000000);
    if (v == LOGIN_OK) {
        const char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
        if (!d2 || strchr(d2 + 1, '.'))
            abort(); /* accepted something that is not header.payload.signature */
    }
    if (login_jwt_check(tok, "", 1700000000) == LOGIN_OK)
        abort(); /* an empty key must never verify */
    free(tok);
    return 0;
}
