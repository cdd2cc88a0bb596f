/* test_text.c — rdv_parse_i32 (Rust str::parse::<i32>() as upstream's console uses it) and rdv_keyed_hash. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "rdv/wire.h"

Test(text, parse_i32_accepts_rust_i32)
{
    int32_t v = 0;
    cr_assert(rdv_parse_i32("0", &v) && v == 0);
    cr_assert(rdv_parse_i32("+42", &v) && v == 42);
    cr_assert(rdv_parse_i32("-7", &v) && v == -7);
    cr_assert(rdv_parse_i32("2147483647", &v) && v == 2147483647);
    cr_assert(rdv_parse_i32("-2147483648", &v) && v == INT32_MIN);
    cr_assert(rdv_parse_i32("007", NULL));
}

Test(text, parse_i32_rejects_the_rest)
{
    const char *bad[] = { "", "-", "+", "2147483648", "-2147483649", "99999999999999999999", "1.5", " 1",
                          "1 ", "0x10", "1e3", "--1", "\xff" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(rdv_parse_i32(bad[i], NULL), "'%s' accepted", bad[i]);
}

/* rdv_keyed_hash: stable within a process, spread over distinct inputs
 * (ids that differ in one character or in length never collide here). */
Test(text, keyed_hash_is_stable_and_spreads)
{
    char id[32];
    static uint64_t seen[4000];
    for (int i = 0; i < 4000; i++) {
        int n = snprintf(id, sizeof id, "%d", 100000000 + i);
        seen[i] = rdv_keyed_hash(id, (size_t)n);
        cr_assert_eq(rdv_keyed_hash(id, (size_t)n), seen[i], "same input, same hash");
        for (int j = 0; j < i; j++)
            cr_assert_neq(seen[j], seen[i], "ids %d and %d collide", j, i);
    }
    cr_assert_neq(rdv_keyed_hash("1", 1), rdv_keyed_hash("1", 0));
}
