/* core/wire/text.c — small text parsers and a bounded text buffer shared
 * by the core and modules. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdv/wire.h"

static bool word_escaped(unsigned char c) { return c <= 0x20 || c == 0x7f || c == '\\'; }

const char *rdv_word_escape(const char *s, size_t n, char *buf, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t need = 1;
    for (size_t i = 0; i < n; i++)
        need += word_escaped((unsigned char)s[i]) ? 4 : 1;
    size_t room = need <= cap ? cap : cap - 3; /* cut: keep room for "..." */
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t w = word_escaped(c) ? 4 : 1;
        if (o + w + 1 > room)
            break;
        if (w == 4) {
            buf[o++] = '\\', buf[o++] = 'x';
            buf[o++] = hex[c >> 4], buf[o++] = hex[c & 15];
        } else {
            buf[o++] = (char)c;
        }
    }
    if (need > cap)
        memcpy(buf + o, "...", 3), o += 3;
    buf[o] = '\0';
    return buf;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long rdv_word_unescape(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    while (*s) {
        int c = (unsigned char)*s++;
        if (c == '\\') {
            int hi, lo;
            if (s[0] != 'x' || (hi = hex_value(s[1])) < 0 || (lo = hex_value(s[2])) < 0)
                return -1;
            c = hi << 4 | lo;
            s += 3;
        }
        if (c == 0 || n >= cap)
            return -1;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return (long)n;
}

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
