/* libFuzzer: the operator's text inputs — a conf.d file (libconfig plus our
 * integer-literal check) filled into the core's settings and listener
 * tables, "group.key=value" overrides, and the .env / hbbs config INI files
 * the hbbs/hbbr launchers read. Input: the conf text, then after the first
 * NUL byte one override per line, then after the next NUL byte the INI text.
 * Bad input must give an error message, never a crash, leak or hang. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat_opts.h"
#include "config.h"
#include "server.h"

static void count_kv(void *ud, const char *key, const char *value)
{
    (void)key, (void)value;
    ++*(size_t *)ud;
}

/* The next NUL-separated part of [*p, end) as a C string (malloc'ed). */
static char *part(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *z = memchr(*p, 0, (size_t)(end - *p));
    size_t n = (size_t)((z ? z : end) - *p);
    char *s = malloc(n + 1);
    memcpy(s, *p, n);
    s[n] = 0;
    *p = z ? z + 1 : end;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    if (!sink)
        sink = fopen("/dev/null", "w");
    const uint8_t *p = data, *end = data + size;
    char *text = part(&p, end), *overrides = part(&p, end), *ini = part(&p, end);
    char err[1024];

    rdv_conf *c = rdv_conf_new();
    if (rdv_conf_load_string(c, "fuzz.conf", text, err, sizeof err) == 0) {
        char *save = NULL;
        for (char *line = strtok_r(overrides, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            rdv_conf_override(c, line, err, sizeof err);
        size_t ngroups;
        rdv_conf_groups(c, &ngroups);
        rdv_core_cfg cfg = { 0 };
        if (rdv_conf_fill(c, "core", rdv_core_settings, (const char *const[]){ "listeners", NULL }, &cfg, err,
                          sizeof err) == 0) {
            void *arr = NULL;
            size_t n = 0;
            if (rdv_conf_fill_list(c, "core", "listeners", rdv_listener_settings, sizeof(rdv_listener_cfg), &arr,
                                   &n, err, sizeof err) == 0) {
                rdv_conf_print_with_list(sink, "core", rdv_core_settings, &cfg, "listeners", rdv_listener_settings,
                                         sizeof(rdv_listener_cfg), arr, n);
                rdv_conf_release_list(rdv_listener_settings, sizeof(rdv_listener_cfg), arr, n);
            }
            rdv_core_cfg copy = { 0 };
            if (rdv_conf_copy(rdv_core_settings, &copy, &cfg) == 0) {
                if (rdv_conf_nonreloadable_change(rdv_core_settings, &cfg, &copy))
                    abort(); /* a copy differs from its original */
                rdv_conf_release(rdv_core_settings, &copy);
            }
            rdv_conf_release(rdv_core_settings, &cfg);
        }
    }
    rdv_conf_free(c);

    size_t kvs = 0;
    compat_parse_ini(ini, count_kv, &kvs);
    free(text);
    free(overrides);
    free(ini);
    return 0;
}
