/* libFuzzer: the operator's text inputs — a conf.d file (libconfig plus our
 * integer-literal check) filled into the core's settings and listener
 * tables, "group.key=value" overrides, the .env / hbbs config INI files and
 * the command line and environment of the hbbs/hbbr launchers. Input, in
 * NUL-separated parts: the conf text; overrides, one per line; the INI text;
 * command-line words, one per line; environment entries, one per line.
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

/* Split s at newlines into v (at most max - 1 words, NULL-terminated) after
 * `first` if given; returns the count. */
static int words(char *s, const char *first, char **v, int max)
{
    int n = 0;
    if (first)
        v[n++] = (char *)first;
    char *save = NULL;
    for (char *w = strtok_r(s, "\n", &save); w && n < max - 1; w = strtok_r(NULL, "\n", &save))
        v[n++] = w;
    v[n] = NULL;
    return n;
}

/* The launchers' option parsing: flags, environment spellings, precedence. */
static void launcher(compat_kind kind, const char *args, const char *env)
{
    char *a = strdup(args), *e = strdup(env), *argv[64], *envp[64];
    int argc = words(a, kind == COMPAT_HBBS ? "hbbs" : "hbbr", argv, 64);
    words(e, NULL, envp, 64);
    compat_opts *o = compat_opts_new(kind, envp);
    char err[512];
    if (o && compat_parse_argv(o, argc, argv, err, sizeof err) == 0) {
        static const char *const names[] = { "CONFIG", "BIND", "PORT", "SERIAL", "RENDEZVOUS-SERVERS",
                                             "SOFTWARE-URL", "RELAY-SERVERS", "RMEM", "MASK", "KEY" };
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            const char *flag = compat_flag(o, names[i]), *v = compat_get(o, names[i]);
            if (flag && (!v || strcmp(flag, v) != 0))
                abort(); /* the command line wins over every other layer (config-compat.md §2) */
        }
    }
    compat_opts_free(o);
    free(a);
    free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    if (!sink) {
        sink = fopen("/dev/null", "w");
        /* -h / -V print usage and version on stdout: expected, not news */
        if (!sink || !freopen("/dev/null", "w", stdout))
            abort();
    }
    const uint8_t *p = data, *end = data + size;
    char *text = part(&p, end), *overrides = part(&p, end), *ini = part(&p, end), *args = part(&p, end),
         *env = part(&p, end), *base = part(&p, end);
    char err[1024], where[512];

    /* base: a launcher's generated layer under the file (its keys yield) */
    rdv_conf *c = rdv_conf_new();
    if ((!*base || rdv_conf_load_base(c, "generated", base, err, sizeof err) == 0) &&
        rdv_conf_load_string(c, "fuzz.conf", text, err, sizeof err) == 0) {
        rdv_conf_setting_origin(c, "core", "listeners", where, sizeof where);
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
    launcher(COMPAT_HBBS, args, env);
    launcher(COMPAT_HBBR, args, env);
    free(text);
    free(overrides);
    free(ini);
    free(args);
    free(env);
    free(base);
    return 0;
}
