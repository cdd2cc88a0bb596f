/* libFuzzer: AddrMangle (wire.md §5). Whatever arbitrary bytes decode to
 * must survive encode + decode, the text form and the sockaddr form. */
#include <stdlib.h>
#include <string.h>

#include "rdv/wire.h"

#define CHECK(x) ((x) ? (void)0 : abort())

static void check_round_trips(const rdv_addr *a, const uint8_t *data, size_t size)
{
    rdv_addr b;
    uint8_t out[RDV_ADDR_MANGLED_MAX];
    /* Any 32-bit mask must do; derive one from the input. */
    uint32_t tm = (uint32_t)(rdv_addr_hash(a) >> 7) ^ (uint32_t)size;
    size_t n = rdv_addr_mangle(a, tm, out);
    if (rdv_addr_is_v4(a)) {
        CHECK(n <= 11);
    } else {
        CHECK(n == 18);
        if (size == 18) /* IPv6 encoding is deterministic */
            CHECK(memcmp(out, data, 18) == 0);
    }
    rdv_addr_unmangle(out, n, &b);
    CHECK(rdv_addr_equal(a, &b) && rdv_addr_hash(a) == rdv_addr_hash(&b));

    char s[RDV_ADDR_STRLEN];
    CHECK(rdv_addr_parse(&b, rdv_addr_str(a, s, sizeof s), 0) == 0 && rdv_addr_equal(a, &b));

    struct sockaddr_storage ss;
    socklen_t len = rdv_addr_to_sockaddr(a, AF_INET6, &ss);
    CHECK(len > 0 && rdv_addr_from_sockaddr(&b, (const struct sockaddr *)&ss, len) == 0);
    CHECK(rdv_addr_equal(a, &b));
}

/* The same bytes as text: whatever parses must print and parse back. */
static void check_parse(const uint8_t *data, size_t size)
{
    char text[RDV_ADDR_STRLEN];
    if (size >= sizeof text)
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    rdv_addr a;
    if (rdv_addr_parse(&a, text, 21116) == 0)
        check_round_trips(&a, NULL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rdv_addr a;
    rdv_addr_unmangle(data, size, &a);
    check_round_trips(&a, data, size);
    check_parse(data, size);
    return 0;
}
