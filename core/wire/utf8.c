/* Strict UTF-8 validation (RFC 3629), as rust-protobuf applies to string
 * fields (wire.md §2.2). */
#include "rdv/wire.h"

/* Length of the sequence introduced by lead byte b and the allowed range of
 * its second byte; the range is what excludes overlongs (E0, F0), surrogates
 * (ED) and code points above U+10FFFF (F4). Returns 0 for an invalid lead. */
static size_t seq_info(uint8_t b, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0)
            *lo = 0xA0;
        else if (b == 0xED)
            *hi = 0x9F;
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0)
            *lo = 0x90;
        else if (b == 0xF4)
            *hi = 0x8F;
        return 4;
    }
    return 0;
}

bool rdv_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint8_t lo, hi;
        size_t len = seq_info(p[i], &lo, &hi);
        if (len == 0 || n - i < len)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}
