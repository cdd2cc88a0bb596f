/* test_log.c — the log line: one line per call whatever the message holds
 * (peer-chosen ids reach log lines). */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdio.h>
#include <string.h>

#include "server.h"

static void redirect(void)
{
    cr_redirect_stderr();
    rdv_log_set_level(RDV_LOG_DEBUG);
}

/* The line minus its timestamp ("2026-...Z "), read back from stderr. */
static const char *last_line(char *buf, size_t n)
{
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    size_t k = fread(buf, 1, n - 1, f);
    buf[k] = '\0';
    char *sp = strchr(buf, ' ');
    return sp ? sp + 1 : buf;
}

Test(log, control_bytes_cannot_forge_lines_or_drive_a_terminal, .init = redirect)
{
    rdv_logf("registry", RDV_LOG_WARN, "new id %s refused", "12\n2026-01-01T00:00:00.000Z CRIT   [core] x\r\x1b[2J\t\x7f");
    char buf[512];
    cr_assert_str_eq(last_line(buf, sizeof buf),
                     "WARN   [registry] new id 12 2026-01-01T00:00:00.000Z CRIT   [core] x ?[2J ? refused\n");
}

Test(log, utf8_is_kept, .init = redirect)
{
    rdv_logf(NULL, RDV_LOG_NOTICE, "id %s", "\xc3\xa9t\xc3\xa9");
    char buf[256];
    cr_assert_str_eq(last_line(buf, sizeof buf), "NOTICE [core] id \xc3\xa9t\xc3\xa9\n");
}
