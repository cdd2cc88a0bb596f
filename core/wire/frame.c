/* TCP length-prefix frame codec (wire.md §3). */
#include "rdv/wire.h"

/* Largest payload length each header class can express (index = class). */
static const size_t class_max[RDV_FRAME_HDR_MAX] = {0x3F, 0x3FFF, 0x3FFFFF, 0x3FFFFFFF};

size_t rdv_frame_header(size_t n, uint8_t out[RDV_FRAME_HDR_MAX])
{
    for (size_t cls = 0; cls < RDV_FRAME_HDR_MAX; cls++) {
        if (n > class_max[cls])
            continue;
        uint32_t h = (uint32_t)(n << 2) | (uint32_t)cls;
        for (size_t i = 0; i <= cls; i++)
            out[i] = (uint8_t)(h >> (8 * i));
        return cls + 1;
    }
    return 0;
}

rdv_frame_status rdv_frame_parse(const uint8_t *buf, size_t avail, size_t max_payload,
                                 size_t *hdr_len, size_t *payload_len)
{
    /* NEED with an incomplete header reports 0 / 0: callers size their
     * buffer from these (conn.c), so they must never be left unset. */
    *hdr_len = 0;
    *payload_len = 0;
    if (avail == 0)
        return RDV_FRAME_NEED;
    size_t hlen = (size_t)(buf[0] & 3) + 1;
    if (avail < hlen)
        return RDV_FRAME_NEED;

    /* Any class may carry any length that fits (non-minimal headers are legal). */
    uint32_t h = 0;
    for (size_t i = 0; i < hlen; i++)
        h |= (uint32_t)buf[i] << (8 * i);
    size_t n = h >> 2;

    *hdr_len = hlen;
    *payload_len = n;
    /* Checked before waiting for the payload, so a hostile header cannot make
     * the caller buffer more than max_payload bytes. */
    if (n > max_payload)
        return RDV_FRAME_TOO_BIG;
    return avail - hlen >= n ? RDV_FRAME_OK : RDV_FRAME_NEED;
}
