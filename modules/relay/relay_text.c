/* relay_text.c — upstream-compatible number parsing and printing
 * (relay.md §6.1, §8). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

/* Shortest %e form that reads back exactly, rewritten without exponent. */
char *relay_fmt_f64(double v, char *out, size_t len)
{
    if (!isfinite(v)) {
        snprintf(out, len, "%s", isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf");
        return out;
    }
    char e[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, v);
        if (strtod(e, NULL) == v)
            break;
    }
    /* e = [-]d[.ddd]e[+-]XX */
    char digits[24];
    size_t nd = 0;
    const char *p = e;
    bool neg = *p == '-';
    if (neg)
        p++;
    for (; *p && *p != 'e'; p++)
        if (isdigit((unsigned char)*p) && nd < sizeof digits - 1)
            digits[nd++] = *p;
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    size_t o = 0;
#define PUT(c) do { if (o + 1 < len) out[o++] = (c); } while (0)
    if (neg && !(nd == 1 && digits[0] == '0'))
        PUT('-');
    if (exp10 >= 0) {
        for (int i = 0; i <= exp10; i++)
            PUT((size_t)i < nd ? digits[i] : '0');
        if ((size_t)exp10 + 1 < nd) {
            PUT('.');
            for (size_t i = (size_t)exp10 + 1; i < nd; i++)
                PUT(digits[i]);
        }
    } else {
        PUT('0');
        PUT('.');
        for (int i = 0; i < -exp10 - 1; i++)
            PUT('0');
        for (size_t i = 0; i < nd; i++)
            PUT(digits[i]);
    }
#undef PUT
    out[o] = '\0';
    return out;
}

/* Rust's f64 grammar: [+-] digits [. digits] [e [+-] digits]; no spaces, no
 * hex. Non-finite values are refused (they would make no usable limit). */
int relay_parse_pos_f64(const char *s, double *out)
{
    if (!s || !*s)
        return -EINVAL;
    for (const char *q = s; *q; q++)
        if (!isdigit((unsigned char)*q) && !strchr("+-.eE", *q))
            return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || !isfinite(v) || !(v > 0))
        return -EINVAL;
    *out = v;
    return 0;
}

int relay_parse_pos_u64(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return -EINVAL;
    const char *d = s + (*s == '+');
    if (!*d)
        return -EINVAL;
    uint64_t v = 0;
    for (; *d; d++) {
        if (!isdigit((unsigned char)*d))
            return -EINVAL;
        unsigned k = (unsigned)(*d - '0');
        if (v > (UINT64_MAX - k) / 10)
            return -EINVAL;
        v = v * 10 + k;
    }
    if (v == 0)
        return -EINVAL;
    *out = v;
    return 0;
}
