/* core/wire/text.c — small text parsers and a bounded text buffer shared
 * by the core and modules. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void rdv_text_printf(rdv_text *t, const char *fmt, ...)
{
    if (t->cut)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t want = t->len + (size_t)n + 1;
    if (t->limit && want > t->limit) {
        t->cut = true;
        return;
    }
    if (want > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < want)
            cap *= 2;
        char *np = realloc(t->p, cap);
        if (!np) {
            t->cut = true;
            return;
        }
        t->p = np, t->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

void rdv_text_free(rdv_text *t)
{
    free(t->p);
    memset(t, 0, sizeof *t);
}
