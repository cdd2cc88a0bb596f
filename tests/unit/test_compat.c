/* hbbs/hbbr option lookup: canonical names, environment spellings, INI
 * files and precedence (config-compat.md §2, §3.1, §4.1). */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compat_opts.h"

Test(compat, canonical_names)
{
    char out[64];
    compat_canonical("relay_servers", out, sizeof out);
    cr_assert_str_eq(out, "RELAY-SERVERS");
    compat_canonical("Always_Use-Relay", out, sizeof out);
    cr_assert_str_eq(out, "ALWAYS-USE-RELAY");
}

static const char *lookup_in(char **env, const char *canon)
{
    static char copy[256];
    compat_opts *o = compat_opts_new(COMPAT_HBBS, env);
    const char *v = compat_get(o, canon);
    snprintf(copy, sizeof copy, "%s", v ? v : "(null)");
    compat_opts_free(o);
    return copy;
}

Test(compat, environment_exact_canonical_first)
{
    char *e1[] = { "relay_servers=d", "relay-servers=c", "RELAY_SERVERS=b", "RELAY-SERVERS=a", NULL };
    cr_assert_str_eq(lookup_in(e1, "RELAY-SERVERS"), "a");
}

Test(compat, environment_spelling_order)
{
    char *only_under[] = { "relay-servers=c", "RELAY_SERVERS=b", NULL };
    cr_assert_str_eq(lookup_in(only_under, "RELAY-SERVERS"), "b", "step 2 (_) before step 3 (lower)");
    char *lower[] = { "relay_servers=d", "relay-servers=c", NULL };
    cr_assert_str_eq(lookup_in(lower, "RELAY-SERVERS"), "c", "lower dashed before lower underscored");
    char *mixed[] = { "Relay_Servers=y", "RELAY_servers=x", NULL };
    cr_assert_str_eq(lookup_in(mixed, "RELAY-SERVERS"), "x", "smallest variable name wins");
    char *none[] = { "OTHER=1", NULL };
    cr_assert_str_eq(lookup_in(none, "RELAY-SERVERS"), "(null)");
}

static char keys[8][64], vals[8][64];
static int nkv;
static void collect(void *ud, const char *k, const char *v)
{
    (void)ud;
    snprintf(keys[nkv], 64, "%s", k);
    snprintf(vals[nkv], 64, "%s", v);
    nkv++;
}

Test(compat, ini_rules)
{
    nkv = 0;
    const char *text = "# comment\n; also\nrelay_servers = a,b\nPORT=21116 # not a comment\n"
                       "key: \"quoted\\\\path\"\n single = 'x'\n[section]\nIGNORED=1\n";
    cr_assert_eq(compat_parse_ini(text, collect, NULL), 0);
    cr_assert_eq(nkv, 4);
    cr_assert_str_eq(keys[0], "RELAY-SERVERS");
    cr_assert_str_eq(vals[0], "a,b");
    cr_assert_str_eq(vals[1], "21116 # not a comment", "no inline comments");
    cr_assert_str_eq(keys[2], "KEY");
    cr_assert_str_eq(vals[2], "quoted\\path");
    cr_assert_str_eq(vals[3], "x");
    nkv = 0;
    cr_assert_eq(compat_parse_ini("PORT=1\nthis line is broken\n", collect, NULL), -1);
    cr_assert_eq(nkv, 0, "a file that does not parse loads nothing");
}

static int parse(compat_opts *o, int argc, char **argv)
{
    char err[128];
    return compat_parse_argv(o, argc, argv, err, sizeof err);
}

Test(compat, argv_forms)
{
    char *env[] = { NULL };
    compat_opts *o = compat_opts_new(COMPAT_HBBS, env);
    char *argv[] = { "hbbs", "-p", "1", "-k_", "--relay-servers=r1,r2", "--mask", "10.0.0.0/8", "-R=x", NULL };
    cr_assert_eq(parse(o, 8, argv), 0);
    cr_assert_str_eq(compat_get(o, "PORT"), "1");
    cr_assert_str_eq(compat_get(o, "KEY"), "_");
    cr_assert_str_eq(compat_get(o, "RELAY-SERVERS"), "r1,r2");
    cr_assert_str_eq(compat_get(o, "MASK"), "10.0.0.0/8");
    cr_assert_str_eq(compat_get(o, "RENDEZVOUS-SERVERS"), "x");
    compat_opts_free(o);

    /* the lejianwen fork's --must-login (§15.10), and its variable spelling */
    char *fenv[] = { "RUSTDESK_API_JWT_KEY=k1", NULL };
    o = compat_opts_new(COMPAT_HBBS, fenv);
    char *ml[] = { "hbbs", "--must-login=Y", NULL };
    cr_assert_eq(parse(o, 2, ml), 0);
    cr_assert_str_eq(compat_get(o, "MUST-LOGIN"), "Y");
    cr_assert_str_eq(compat_get(o, "RUSTDESK-API-JWT-KEY"), "k1");
    compat_opts_free(o);

    o = compat_opts_new(COMPAT_HBBS, env);
    char *bad[] = { "hbbs", "--nope", NULL };
    cr_assert_eq(parse(o, 2, bad), 1, "unknown flag is a usage error");
    compat_opts_free(o);
    o = compat_opts_new(COMPAT_HBBS, env);
    char *missing[] = { "hbbs", "-p", NULL };
    cr_assert_eq(parse(o, 2, missing), 1, "missing value is a usage error");
    compat_opts_free(o);
    o = compat_opts_new(COMPAT_HBBR, env);
    char *notforhbbr[] = { "hbbr", "-r", "x", NULL };
    cr_assert_eq(parse(o, 3, notforhbbr), 1, "hbbr has no -r");
    compat_opts_free(o);
}

Test(compat, precedence_flag_cfile_dotenv_env)
{
    char dir[] = "/tmp/rdv-compat-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cwd[512];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(dir), 0);
    FILE *f = fopen(".env", "w");
    fputs("serial=2\nrelay_servers=from-dotenv\nbind=::1\nconfig=extra.ini\n", f);
    fclose(f);
    f = fopen("extra.ini", "w");
    fputs("SERIAL=3\nrelay-servers=from-cfile\n", f);
    fclose(f);
    char *env[] = { "SERIAL=1", "RELAY_SERVERS=from-env", "BIND=1.2.3.4", "MASK=m", NULL };
    compat_opts *o = compat_opts_new(COMPAT_HBBS, env);
    char *argv[] = { "hbbs", "-s", "4", NULL };
    cr_assert_eq(parse(o, 3, argv), 0);
    compat_load_files(o);
    cr_assert_str_eq(compat_get(o, "SERIAL"), "4", "flag wins");
    cr_assert_str_eq(compat_get(o, "RELAY-SERVERS"), "from-cfile", "-c file beats .env");
    cr_assert_str_eq(compat_get(o, "BIND"), "::1", ".env beats the environment");
    cr_assert_str_eq(compat_get(o, "MASK"), "m", "environment last");
    cr_assert_null(compat_flag(o, "RELAY-SERVERS"));
    compat_opts_free(o);
    unlink(".env");
    unlink("extra.ini");
    cr_assert_eq(chdir(cwd), 0);
    rmdir(dir);
}

/* -h prints the usage, then every option of the launcher with what it
 * does, and the variables that have no option (config-compat.md §3, §4),
 * on stdout, exit 0 (parse returns 2). The manual pages are made from it. */
static void help_of(compat_kind kind, const char *self, char *buf, size_t n)
{
    char *env[] = { NULL };
    compat_opts *o = compat_opts_new(kind, env);
    char *argv[] = { (char *)self, "--help", NULL };
    cr_assert_eq(parse(o, 2, argv), 2);
    compat_opts_free(o);
    fflush(stdout);
    size_t k = fread(buf, 1, n - 1, cr_get_redirected_stdout());
    buf[k] = '\0';
}

Test(compat, help_lists_every_option_and_variable, .init = cr_redirect_stdout)
{
    static char out[8192];
    help_of(COMPAT_HBBS, "hbbs", out, sizeof out);
    cr_assert(strncmp(out, "usage: hbbs ", 12) == 0, "%s", out);
    const char *hbbs[] = { "--config FILE", "--bind IP", "--port PORT", "--key KEY", "--relay-servers LIST",
                           "--rmem BYTES", "--serial N", "--rendezvous-servers LIST", "--software-url URL",
                           "--mask CIDR", "--must-login Y|N", "--help", "--version", "ALWAYS_USE_RELAY",
                           "TEST_HBBS", "DB_URL", "LOCAL-IP", "RUST_LOG", "21116", NULL };
    for (int i = 0; hbbs[i]; i++)
        cr_assert(strstr(out, hbbs[i]), "hbbs --help lacks %s", hbbs[i]);
    help_of(COMPAT_HBBR, "hbbr", out + strlen(out), sizeof out - strlen(out));
    const char *hbbr_part = strstr(out, "usage: hbbr ");
    cr_assert_not_null(hbbr_part, "%s", out);
    const char *hbbr[] = { "--bind IP", "--port PORT", "--key KEY", "SINGLE_BANDWIDTH", "TOTAL_BANDWIDTH",
                           "LIMIT_SPEED", "DOWNGRADE_THRESHOLD", "DOWNGRADE_START_CHECK", "21117",
                           "blacklist.txt", NULL };
    for (int i = 0; hbbr[i]; i++)
        cr_assert(strstr(hbbr_part, hbbr[i]), "hbbr --help lacks %s", hbbr[i]);
    cr_assert_null(strstr(hbbr_part, "--relay-servers"), "hbbr has no -r");
}
