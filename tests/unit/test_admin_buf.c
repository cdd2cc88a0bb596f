/* The admin console's answer buffer (core/admin.c, rdv_buf_printf): an
 * answer is cut at its limit with a visible marker, and a print that does
 * not fit is dropped whole; so a module that prints one large block gets
 * the marker alone, and one that prints line by line keeps every line
 * before the cut (modules/relay: `usage` on a busy relay). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define MARK "...(cut: the answer passed 1 MiB)\n"

Test(admin_buf, lines_before_the_cut_stay_and_the_marker_follows)
{
    rdv_buf b = { .limit = 64 };
    for (int i = 0; i < 5; i++)
        rdv_buf_printf(&b, "line %d of twenty b\n", i); /* 20 bytes each */
    cr_assert(b.truncated);
    cr_assert_str_eq(b.p, "line 0 of twenty b\nline 1 of twenty b\nline 2 of twenty b\n" MARK);
    rdv_buf_printf(&b, "more\n");
    cr_assert_eq(b.len, strlen(b.p), "nothing after the marker");
    free(b.p);
}

Test(admin_buf, a_line_printed_in_pieces_is_cut_whole)
{
    /* Before: "line 0 ...\nline 1 of" stayed, then the marker, mid-line. */
    rdv_buf b = { .limit = 40 };
    rdv_buf_printf(&b, "line 0 of twenty b\n");
    rdv_buf_printf(&b, "line 1 of ");
    rdv_buf_printf(&b, "twenty b and more than fits\n");
    cr_assert(b.truncated);
    cr_assert_str_eq(b.p, "line 0 of twenty b\n" MARK);
    free(b.p);
}

Test(admin_buf, one_large_print_leaves_the_marker)
{
    /* Before: the marker needed 16 bytes of spare capacity, which an empty
     * buffer does not have, so the answer was empty. */
    rdv_buf b = { .limit = 1 << 20 };
    char *big = malloc((1 << 20) + 2);
    cr_assert_not_null(big);
    memset(big, 'x', (1 << 20) + 1);
    big[(1 << 20) + 1] = '\0';
    rdv_buf_printf(&b, "%s", big);
    cr_assert(b.truncated);
    cr_assert_not_null(b.p);
    cr_assert_str_eq(b.p, MARK);
    free(big);
    free(b.p);
}
