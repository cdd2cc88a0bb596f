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

/* Console words (rdv_word_escape / rdv_word_unescape): peer-chosen ids. */
Test(text, word_escape_and_back)
{
    char buf[RDV_WORD_CAP(8)], back[9];
    cr_assert_str_eq(rdv_word_escape("a b\\\n\x7f\x1b", 7, buf, sizeof buf), "a\\x20b\\x5c\\x0a\\x7f\\x1b");
    cr_assert_str_eq(rdv_word_escape("\xc3\xa9t\xc3\xa9", 5, buf, sizeof buf), "\xc3\xa9t\xc3\xa9", "UTF-8 kept");
    cr_assert_eq(rdv_word_unescape("a\\x20b\\x5C\\x0a\\x7f\\x1b", back, 8), 7);
    cr_assert_eq(memcmp(back, "a b\\\n\x7f\x1b", 8), 0);
    cr_assert_eq(rdv_word_unescape("\\x00", back, 8), -1, "no NUL");
    cr_assert_eq(rdv_word_unescape("ab\\x4", back, 8), -1, "half an escape");
    cr_assert_eq(rdv_word_unescape("ab\\y41", back, 8), -1);
    cr_assert_eq(rdv_word_unescape("123456789", back, 8), -1, "longer than cap");
    cr_assert_eq(rdv_word_unescape("12345678", back, 8), 8);
    cr_assert_eq(rdv_word_unescape("", back, 8), 0);
}

Test(text, word_escape_cuts_whole_escapes)
{
    char buf[10];
    cr_assert_str_eq(rdv_word_escape("123456789", 9, buf, sizeof buf), "123456789", "exactly fits");
    cr_assert_str_eq(rdv_word_escape("1234567890", 10, buf, sizeof buf), "123456...");
    cr_assert_str_eq(rdv_word_escape("12345\n", 6, buf, sizeof buf), "12345\\x0a", "exactly fits");
    cr_assert_str_eq(rdv_word_escape("123456\n", 7, buf, sizeof buf), "123456...", "never half of \\x0a");
    cr_assert_str_eq(rdv_word_escape("1\n", 2, buf, sizeof buf), "1\\x0a");
    char small[4];
    cr_assert_str_eq(rdv_word_escape("abcdef", 6, small, sizeof small), "...");
    cr_assert_str_eq(rdv_word_escape("abc", 3, small, sizeof small), "abc");
}
