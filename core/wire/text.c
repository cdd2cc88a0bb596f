/* core/wire/text.c — small text parsers shared by modules. */
#include <stdint.h>

#include "rdv/wire.h"

/* Like Rust's str::parse::<i32>() (upstream's console arguments): optional
 * sign, then only ASCII digits, in range. */
bool rdv_parse_i32(const char *s, int32_t *out)
{
    bool neg = *s == '-';
    if (*s == '+' || *s == '-')
        s++;
    if (!*s)
        return false;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (*s - '0');
        if (v > 2147483648LL)
            return false;
    }
    if (!neg && v > 2147483647LL)
        return false;
    if (out)
        *out = (int32_t)(neg ? -v : v);
    return true;
}
