/* TCP frame codec (wire.md §3). */
#include <criterion/criterion.h>
#include <string.h>

#include "rdv/wire.h"

#define MAXP (1024u * 1024u)

/* wire.md §3.2 header examples. */
static const struct {
    size_t n;
    size_t hlen;
    uint8_t hdr[4];
} rows[] = {
    {0, 1, {0x00}},
    {1, 1, {0x04}},
    {5, 1, {0x14}},
    {13, 1, {0x34}},
    {27, 1, {0x6c}},
    {63, 1, {0xfc}},
    {64, 2, {0x01, 0x01}},
    {300, 2, {0xb1, 0x04}},
    {16383, 2, {0xfd, 0xff}},
    {16384, 3, {0x02, 0x00, 0x01}},
    {65536, 3, {0x02, 0x00, 0x04}},
    {4194303, 3, {0xfe, 0xff, 0xff}},
    {4194304, 4, {0x03, 0x00, 0x00, 0x01}},
    {1073741823, 4, {0xff, 0xff, 0xff, 0xff}},
};

Test(frame, header_examples_encode)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t out[RDV_FRAME_HDR_MAX] = {0};
        cr_assert_eq(rdv_frame_header(rows[i].n, out), rows[i].hlen, "n=%zu", rows[i].n);
        cr_assert_arr_eq(out, rows[i].hdr, rows[i].hlen, "n=%zu", rows[i].n);
    }
}

Test(frame, header_examples_decode)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        size_t hl = 0, pl = 0;
        /* Header alone: complete header, payload missing (except n = 0). */
        rdv_frame_status st = rdv_frame_parse(rows[i].hdr, rows[i].hlen, RDV_FRAME_LEN_MAX, &hl, &pl);
        cr_assert_eq(st, rows[i].n == 0 ? RDV_FRAME_OK : RDV_FRAME_NEED, "n=%zu", rows[i].n);
        /* Ask with a max just below: TOO_BIG reports the declared size. */
        if (rows[i].n > 0) {
            st = rdv_frame_parse(rows[i].hdr, rows[i].hlen, rows[i].n - 1, &hl, &pl);
            cr_assert_eq(st, RDV_FRAME_TOO_BIG);
            cr_assert_eq(hl, rows[i].hlen);
            cr_assert_eq(pl, rows[i].n);
        }
    }
}

/* Every class boundary round-trips through encode + parse of a full frame. */
Test(frame, size_classes_round_trip)
{
    static const size_t sizes[] = {0, 1, 62, 63, 64, 65, 16382, 16383, 16384, 16385, 300000};
    static uint8_t buf[RDV_FRAME_HDR_MAX + 300000];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        size_t h = rdv_frame_header(n, buf);
        cr_assert_eq(h, n <= 0x3F ? 1u : n <= 0x3FFF ? 2u : 3u, "n=%zu", n);
        memset(buf + h, 0xAB, n);
        size_t hl = 0, pl = 0;
        cr_assert_eq(rdv_frame_parse(buf, h + n, MAXP, &hl, &pl), RDV_FRAME_OK);
        cr_assert_eq(hl, h);
        cr_assert_eq(pl, n);
        if (n > 0)
            cr_assert_eq(rdv_frame_parse(buf, h + n - 1, MAXP, &hl, &pl), RDV_FRAME_NEED);
    }
}

Test(frame, header_too_long)
{
    uint8_t out[RDV_FRAME_HDR_MAX];
    cr_assert_eq(rdv_frame_header(RDV_FRAME_LEN_MAX, out), 4);
    cr_assert_eq(rdv_frame_header((size_t)RDV_FRAME_LEN_MAX + 1, out), 0);
}

static const uint8_t f_regpk_ok[] = {0x0c, 0x82, 0x01, 0x00};
static const uint8_t f_phr_offline[] = {0x10, 0x5a, 0x02, 0x18, 0x02};
static const uint8_t f_phreq[] = {0x6c, 0x42, 0x19, 0x0a, 0x09, 0x31, 0x32, 0x33, 0x34, 0x35,
                                  0x36, 0x37, 0x38, 0x39, 0x10, 0x01, 0x1a, 0x03, 0x4b, 0x45,
                                  0x59, 0x32, 0x05, 0x31, 0x2e, 0x34, 0x2e, 0x39};
static const uint8_t f_empty[] = {0x00};

static void check_complete(const uint8_t *f, size_t n)
{
    size_t hl = 0, pl = 0;
    cr_assert_eq(rdv_frame_parse(f, n, MAXP, &hl, &pl), RDV_FRAME_OK);
    cr_assert_eq(hl, 1);
    cr_assert_eq(pl, n - 1);
    /* The header we would emit for this payload is the one on the wire. */
    uint8_t h[RDV_FRAME_HDR_MAX];
    cr_assert_eq(rdv_frame_header(pl, h), 1);
    cr_assert_eq(h[0], f[0]);
}

Test(frame, complete_frames)
{
    check_complete(f_regpk_ok, sizeof f_regpk_ok);
    check_complete(f_phr_offline, sizeof f_phr_offline);
    check_complete(f_phreq, sizeof f_phreq);
    check_complete(f_empty, sizeof f_empty);
}

Test(frame, empty_buffer_needs_more)
{
    size_t hl = 0, pl = 0;
    cr_assert_eq(rdv_frame_parse(NULL, 0, MAXP, &hl, &pl), RDV_FRAME_NEED);
}

/* A connection fed one byte at a time sees NEED until the last byte. */
Test(frame, byte_by_byte)
{
    size_t hl = 0, pl = 0;
    for (size_t avail = 0; avail < sizeof f_phreq; avail++)
        cr_assert_eq(rdv_frame_parse(f_phreq, avail, MAXP, &hl, &pl), RDV_FRAME_NEED, "avail=%zu", avail);
    cr_assert_eq(rdv_frame_parse(f_phreq, sizeof f_phreq, MAXP, &hl, &pl), RDV_FRAME_OK);

    /* Same for a 3-byte header, whose header itself arrives in pieces. */
    uint8_t big[3 + 20000];
    size_t h = rdv_frame_header(20000, big);
    cr_assert_eq(h, 3);
    for (size_t avail = 0; avail < h + 20000; avail++)
        cr_assert_eq(rdv_frame_parse(big, avail, MAXP, &hl, &pl), RDV_FRAME_NEED, "avail=%zu", avail);
    cr_assert_eq(rdv_frame_parse(big, sizeof big, MAXP, &hl, &pl), RDV_FRAME_OK);
    cr_assert_eq(hl, 3);
    cr_assert_eq(pl, 20000);
}

/* Several frames in one buffer are consumed in order. */
Test(frame, back_to_back)
{
    uint8_t buf[sizeof f_regpk_ok + sizeof f_empty + sizeof f_phr_offline];
    memcpy(buf, f_regpk_ok, sizeof f_regpk_ok);
    memcpy(buf + 4, f_empty, 1);
    memcpy(buf + 5, f_phr_offline, sizeof f_phr_offline);
    static const size_t want[] = {3, 0, 4};
    size_t off = 0;
    for (size_t i = 0; i < 3; i++) {
        size_t hl = 0, pl = 0;
        cr_assert_eq(rdv_frame_parse(buf + off, sizeof buf - off, MAXP, &hl, &pl), RDV_FRAME_OK);
        cr_assert_eq(pl, want[i]);
        off += hl + pl;
    }
    cr_assert_eq(off, sizeof buf);
}

Test(frame, non_minimal_headers)
{
    size_t hl = 0, pl = 0;
    /* wire.md §3.1: 05 00 is a 2-byte header declaring length 1. */
    const uint8_t two[] = {0x05, 0x00, 0xAA};
    cr_assert_eq(rdv_frame_parse(two, 2, MAXP, &hl, &pl), RDV_FRAME_NEED);
    cr_assert_eq(rdv_frame_parse(two, 3, MAXP, &hl, &pl), RDV_FRAME_OK);
    cr_assert_eq(hl, 2);
    cr_assert_eq(pl, 1);

    /* 4-byte header declaring 3 bytes: (3 << 2) | 3 = 0x0f. */
    const uint8_t four[] = {0x0f, 0x00, 0x00, 0x00, 'a', 'b', 'c'};
    for (size_t avail = 0; avail < sizeof four; avail++)
        cr_assert_eq(rdv_frame_parse(four, avail, MAXP, &hl, &pl), RDV_FRAME_NEED);
    cr_assert_eq(rdv_frame_parse(four, sizeof four, MAXP, &hl, &pl), RDV_FRAME_OK);
    cr_assert_eq(hl, 4);
    cr_assert_eq(pl, 3);

    /* 3-byte header declaring 0. */
    const uint8_t zero3[] = {0x02, 0x00, 0x00};
    cr_assert_eq(rdv_frame_parse(zero3, 3, MAXP, &hl, &pl), RDV_FRAME_OK);
    cr_assert_eq(hl, 3);
    cr_assert_eq(pl, 0);
}

Test(frame, zero_length)
{
    size_t hl = 9, pl = 9;
    cr_assert_eq(rdv_frame_parse(f_empty, 1, MAXP, &hl, &pl), RDV_FRAME_OK);
    cr_assert_eq(hl, 1);
    cr_assert_eq(pl, 0);
    /* Even with max 0 an empty frame is fine. */
    cr_assert_eq(rdv_frame_parse(f_empty, 1, 0, &hl, &pl), RDV_FRAME_OK);
}

/* While the header itself is incomplete, NEED says so with 0 / 0 whatever the
 * outputs held before: the core sizes its read buffer from them (a partial
 * 3-byte header once left them unset and made conn.c ask realloc for
 * garbage; found by fuzz_node). */
Test(frame, incomplete_header_reports_zero)
{
    const uint8_t h3[] = { 0x0a, 0x09, 0x00 }, h4[] = { 0xff, 0xff, 0xff, 0xff }, h2[] = { 0x05, 0x01 };
    struct { const uint8_t *p; size_t have; } rows[] = { { h3, 1 }, { h3, 2 }, { h4, 1 }, { h4, 3 }, { h2, 1 } };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        size_t hl = 12345, pl = 67890;
        cr_assert_eq(rdv_frame_parse(rows[i].p, rows[i].have, MAXP, &hl, &pl), RDV_FRAME_NEED, "row %zu", i);
        cr_assert_eq(hl, 0, "row %zu: hdr_len %zu", i, hl);
        cr_assert_eq(pl, 0, "row %zu: payload_len %zu", i, pl);
    }
    size_t hl = 1, pl = 1;
    cr_assert_eq(rdv_frame_parse(NULL, 0, MAXP, &hl, &pl), RDV_FRAME_NEED);
    cr_assert_eq(hl, 0);
    cr_assert_eq(pl, 0);
    /* A complete header still reports the declared frame while its payload is missing. */
    cr_assert_eq(rdv_frame_parse(h2, 2, MAXP, &hl, &pl), RDV_FRAME_NEED);
    cr_assert_eq(hl, 2);
    cr_assert_eq(pl, (0x0105u >> 2));
}

/* Oversize is reported as soon as the header is complete: no payload needed. */
Test(frame, oversize_detected_on_header)
{
    size_t hl = 0, pl = 0;
    uint8_t h[RDV_FRAME_HDR_MAX];
    size_t n = rdv_frame_header(MAXP + 1, h);
    cr_assert_eq(n, 3);
    cr_assert_eq(rdv_frame_parse(h, 1, MAXP, &hl, &pl), RDV_FRAME_NEED);
    cr_assert_eq(rdv_frame_parse(h, 2, MAXP, &hl, &pl), RDV_FRAME_NEED);
    cr_assert_eq(rdv_frame_parse(h, 3, MAXP, &hl, &pl), RDV_FRAME_TOO_BIG);
    cr_assert_eq(hl, 3);
    cr_assert_eq(pl, MAXP + 1);

    /* Exactly max is fine (waits for the payload). */
    n = rdv_frame_header(MAXP, h);
    cr_assert_eq(rdv_frame_parse(h, n, MAXP, &hl, &pl), RDV_FRAME_NEED);

    /* Largest possible declaration, 4-byte header. */
    const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(rdv_frame_parse(huge, 4, MAXP, &hl, &pl), RDV_FRAME_TOO_BIG);
    cr_assert_eq(hl, 4);
    cr_assert_eq(pl, RDV_FRAME_LEN_MAX);

    /* A non-minimal header is judged by its declared length, not its class. */
    const uint8_t small[] = {0x04};
    cr_assert_eq(rdv_frame_parse(small, 1, 0, &hl, &pl), RDV_FRAME_TOO_BIG);
    cr_assert_eq(pl, 1);
}
