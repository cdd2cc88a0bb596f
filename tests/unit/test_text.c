/* rdv_parse_i32: Rust's str::parse::<i32>() as upstream's console uses it. */
#include <criterion/criterion.h>

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
