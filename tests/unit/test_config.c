/* tests/unit/test_config.c — conf.d loading, settings tables, overrides,
 * lists of groups, printing (core/config.c). Every test writes its conf.d
 * tree under a fresh mkdtemp directory, removed afterwards. */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

struct tcfg {
    int64_t port;
    bool enabled;
    double ratio;
    char *name;
    char *tag;
    rdv_strlist hosts;
    char *key;
    int64_t big;
};

static const rdv_setting tbl[] = {
    RDV_SETTING_INT(struct tcfg, port, 21116, 1, 65535, 0, "TCP port"),
    RDV_SETTING_BOOL(struct tcfg, enabled, 1, RDV_SETF_RELOAD, "serve requests"),
    RDV_SETTING_DOUBLE(struct tcfg, ratio, 0.5, 0, 1, RDV_SETF_RELOAD, "share, 0..1"),
    RDV_SETTING_STRING(struct tcfg, name, "hbbs", 0, "server name"),
    { "tag", RDV_SET_STRING, offsetof(struct tcfg, tag), 0, 0, 0, "t", 0, 8, 0, 0, "at most 8 bytes" },
    RDV_SETTING_STRLIST(struct tcfg, hosts, RDV_SETF_RELOAD, "relay hosts"),
    RDV_SETTING_STRING(struct tcfg, key, "", RDV_SETF_SECRET, "private key"),
    RDV_SETTING_INT(struct tcfg, big, 7, 0, 0, 0, "unbounded"),
    RDV_SETTING_END,
};

struct lcfg {
    char *name;
    int64_t port;
    bool udp;
};

static const rdv_setting ltbl[] = {
    RDV_SETTING_STRING(struct lcfg, name, "", 0, "listener name"),
    RDV_SETTING_INT(struct lcfg, port, 0, 1, 65535, 0, "port"),
    RDV_SETTING_BOOL(struct lcfg, udp, 1, 0, "open UDP"),
    RDV_SETTING_END,
};

static char dir[64];
static rdv_conf *conf;
static struct tcfg cfg;
static char err[1024];

static void setup(void)
{
    strcpy(dir, "/tmp/rdv-test-config.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    conf = rdv_conf_new();
    cr_assert_not_null(conf);
    memset(&cfg, 0, sizeof cfg);
    err[0] = '\0';
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    rdv_conf_release(tbl, &cfg);
    rdv_conf_free(conf);
    conf = NULL;
    chmod(dir, 0700);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A skipped test does not run .fini: clean up first. */
#define skip_if_root(why)        \
    do {                         \
        if (geteuid() == 0) {    \
            teardown();          \
            cr_skip_test(why);   \
        }                        \
    } while (0)

TestSuite(config, .init = setup, .fini = teardown);

static void write_file(const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static int load(void)
{
    return rdv_conf_load_dir(conf, dir, err, sizeof err);
}

static int fill(void)
{
    return rdv_conf_fill(conf, "test", tbl, NULL, &cfg, err, sizeof err);
}

/* A fresh tree with one file "10-t.conf" holding text. */
static void reload_with(const char *text)
{
    rdv_conf_free(conf);
    conf = rdv_conf_new();
    write_file("10-t.conf", text);
    err[0] = '\0';
}

#define assert_err_has(s) cr_assert(strstr(err, (s)) != NULL, "error \"%s\" lacks \"%s\"", err, (s))

/* ------------------------------------------------------------------ loading */

Test(config, files_merge_in_sorted_order)
{
    write_file("20-b.conf", "beta = { };\ntest = {\n  name = \"from-20\";\n};\n");
    write_file("10-a.conf", "alpha = { };\n\ntest = { port = 1000; };\n");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(fill(), 0, "%s", err);
    cr_expect_eq(cfg.port, 1000);
    cr_expect_str_eq(cfg.name, "from-20");

    size_t n;
    const char *const *g = rdv_conf_groups(conf, &n);
    cr_assert_eq(n, 3);
    cr_expect_str_eq(g[0], "alpha");
    cr_expect_str_eq(g[1], "test");
    cr_expect_str_eq(g[2], "beta");

    char where[PATH_MAX + 16], want[PATH_MAX + 16];
    snprintf(want, sizeof want, "%s/10-a.conf:3", dir);
    cr_expect_str_eq(rdv_conf_group_origin(conf, "test", where, sizeof where), want);
    cr_expect_str_eq(rdv_conf_group_origin(conf, "nothere", where, sizeof where), "defaults");
}

Test(config, only_dot_conf_files_are_read)
{
    write_file("10-ok.conf", "test = { port = 5; };");
    write_file("README", "garbage {");
    write_file("20-x.conf.bak", "garbage {");
    write_file("30-x.conf~", "garbage {");
    write_file(".40-hidden.conf", "garbage {");
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/subdir", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(fill(), 0, "%s", err);
    cr_expect_eq(cfg.port, 5);
}

Test(config, missing_group_gives_defaults)
{
    write_file("10-other.conf", "other = { x = 1; };");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(fill(), 0, "%s", err);
    cr_expect_eq(cfg.port, 21116);
    cr_expect(cfg.enabled);
    cr_expect_float_eq(cfg.ratio, 0.5, 1e-12);
    cr_expect_str_eq(cfg.name, "hbbs");
    cr_expect_str_eq(cfg.tag, "t");
    cr_expect_eq(cfg.hosts.n, 0);
    cr_expect_str_eq(cfg.key, "");
    cr_expect_eq(cfg.big, 7);
}

Test(config, empty_tree_gives_defaults)
{
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(fill(), 0, "%s", err);
    cr_expect_eq(cfg.port, 21116);
}

Test(config, every_type)
{
    write_file("10-t.conf",
               "test = {\n"
               "  port = 0x50;\n"
               "  enabled = false;\n"
               "  ratio = 1;\n"
               "  name = \"a \\\"quoted\\\" name\";\n"
               "  hosts = [ \"h1\", \"h2\" ];\n"
               "  key = \"secret\";\n"
               "  big = -5000000000L;\n"
               "};\n");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(fill(), 0, "%s", err);
    cr_expect_eq(cfg.port, 80);
    cr_expect_not(cfg.enabled);
    cr_expect_float_eq(cfg.ratio, 1.0, 1e-12);
    cr_expect_str_eq(cfg.name, "a \"quoted\" name");
    cr_assert_eq(cfg.hosts.n, 2);
    cr_expect_str_eq(cfg.hosts.v[0], "h1");
    cr_expect_str_eq(cfg.hosts.v[1], "h2");
    cr_expect_str_eq(cfg.key, "secret");
    cr_expect_eq(cfg.big, -5000000000LL);
}

Test(config, strlist_forms)
{
    static const struct { const char *text; size_t n; } cases[] = {
        { "test = { hosts = ( \"a\", \"b\", \"c\" ); };", 3 },
        { "test = { hosts = \"lone\"; };", 1 },
        { "test = { hosts = [ ]; };", 0 },
        { "test = { hosts = ( ); };", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        reload_with(cases[i].text);
        cr_assert_eq(load(), 0, "%s", err);
        cr_assert_eq(fill(), 0, "%s: %s", cases[i].text, err);
        cr_expect_eq(cfg.hosts.n, cases[i].n, "%s", cases[i].text);
        rdv_conf_release(tbl, &cfg);
    }
}

Test(config, unknown_key_names_place_and_known_keys)
{
    write_file("10-t.conf", "test = {\n  port = 1;\n  prot = 2;\n};\n");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(fill(), -1);
    assert_err_has("10-t.conf:3: test.prot: unknown setting (known: port, enabled, ratio");
    assert_err_has("big)");
    cr_expect_null(cfg.name, "struct released on error");
}

Test(config, unknown_key_list_is_cut_to_fit)
{
    write_file("10-t.conf", "test = { nope = 1; };");
    cr_assert_eq(load(), 0, "%s", err);
    char small[120];
    cr_assert_eq(rdv_conf_fill(conf, "test", tbl, NULL, &cfg, small, sizeof small), -1);
    cr_expect(strstr(small, "test.nope: unknown setting (known: port,") != NULL, "%s", small);
    cr_expect(strstr(small, " ...)") != NULL, "%s", small);
}

Test(config, wrong_types_name_file_and_line)
{
    static const struct { const char *value, *want; } cases[] = {
        { "port = \"21116\";", "test.port: expected an integer, got a string" },
        { "port = 1.5;", "test.port: expected an integer, got a floating-point number" },
        { "enabled = 1;", "test.enabled: expected a boolean, got an integer" },
        { "enabled = \"true\";", "test.enabled: expected a boolean, got a string" },
        { "ratio = \"x\";", "test.ratio: expected a number, got a string" },
        { "name = 5;", "test.name: expected a string, got an integer" },
        { "name = [ \"a\" ];", "test.name: expected a string, got an array" },
        { "hosts = 5;", "test.hosts: expected a list of strings, got an integer" },
        { "hosts = [ 1, 2 ];", "test.hosts: expected a list of strings, entry [0] is an integer" },
        { "hosts = ( \"a\", 1 );", "test.hosts: expected a list of strings, entry [1] is an integer" },
        { "port = { };", "test.port: expected an integer, got a group" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[256];
        snprintf(text, sizeof text, "test = {\n\n  %s\n};\n", cases[i].value);
        reload_with(text);
        cr_assert_eq(load(), 0, "%s", err);
        cr_assert_eq(fill(), -1, "%s accepted", cases[i].value);
        assert_err_has("10-t.conf:3: ");
        assert_err_has(cases[i].want);
    }
}

Test(config, out_of_range)
{
    static const struct { const char *value, *want; } cases[] = {
        { "port = 70000;", "test.port: 70000 is out of range 1..65535" },
        { "port = 0;", "test.port: 0 is out of range 1..65535" },
        { "ratio = 1.5;", "test.ratio: 1.5 is out of range 0..1" },
        { "ratio = 1e999;", "test.ratio: inf is not a finite number" },
        { "tag = \"123456789\";", "test.tag: string of 9 bytes, more than the maximum of 8" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[256];
        snprintf(text, sizeof text, "test = {\n  %s\n};\n", cases[i].value);
        reload_with(text);
        cr_assert_eq(load(), 0, "%s", err);
        cr_assert_eq(fill(), -1, "%s accepted", cases[i].value);
        assert_err_has("10-t.conf:2: ");
        assert_err_has(cases[i].want);
    }
}

Test(config, limits_at_the_edges_pass)
{
    write_file("10-t.conf", "test = { port = 65535; ratio = 0; tag = \"12345678\"; };");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(fill(), 0, "%s", err);
    cr_expect_eq(cfg.port, 65535);
}

/* libconfig 1.5 would wrap these to 32 bits without a word. */
Test(config, integer_literals_too_wide_for_32_bits)
{
    static const struct { const char *text, *want; } bad[] = {
        { "test = {\n big = 9999999999; };", "10-t.conf:2: integer 9999999999 is too large" },
        { "test = { big = -2147483649; };", "integer -2147483649 is too large" },
        { "test = { big = 0x80000000; };", "(write 0x80000000L)" },
        { "test = { big = 99999999999999999999L; };", "does not fit in 64 bits" },
        { "test = { hosts = [ \"a\" ];\n/* x */ x = [ 1, 5000000000 ]; };", "10-t.conf:2:" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        reload_with(bad[i].text);
        cr_assert_eq(load(), -1, "%s accepted", bad[i].text);
        assert_err_has(bad[i].want);
    }
    reload_with("# 9999999999\ntest = { big = 9999999999L; ratio = 0.5e-3; name = \"9999999999\";\n"
                "/* 9999999999 */ hosts = [ \"x\" ]; port = 0x7fffffff; }; // 9999999999\n");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(fill(), -1, "port = 0x7fffffff is out of its range");
    reload_with("test = { big = 9999999999L; big2 = 0xFFFFFFFFFFL; flt = 1.e9; n = -2147483648; };");
    cr_assert_eq(load(), 0, "%s", err);
}

Test(config, duplicate_key_across_files_names_both)
{
    write_file("10-a.conf", "test = {\n  port = 1;\n};\n");
    write_file("20-b.conf", "other = { };\ntest = {\n  name = \"x\";\n  port = 2;\n};\n");
    cr_assert_eq(load(), -1);
    assert_err_has("20-b.conf:4: test.port: set twice, first at ");
    assert_err_has("10-a.conf:2");
}

Test(config, duplicate_key_in_one_file)
{
    write_file("10-a.conf", "test = {\n  port = 1;\n  port = 2;\n};\n");
    cr_assert_eq(load(), -1);
    assert_err_has("10-a.conf:3: syntax error: duplicate setting name");
}

Test(config, top_level_must_be_a_group)
{
    write_file("10-a.conf", "test = { };\nport = 5;\n");
    cr_assert_eq(load(), -1);
    assert_err_has("10-a.conf:2: port: top-level settings must be groups");
}

Test(config, syntax_error_names_file_and_line)
{
    write_file("10-a.conf", "test = {\n  port = ;\n};\n");
    cr_assert_eq(load(), -1);
    assert_err_has("10-a.conf:2: syntax error (look on this line and the one before it for a missing ';'");
}

Test(config, missing_dir)
{
    char missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    cr_assert_eq(rdv_conf_load_dir(conf, missing, err, sizeof err), -1);
    assert_err_has(missing);
    assert_err_has(strerror(ENOENT));
    assert_err_has("-c/--conf-dir");
}

Test(config, dir_is_a_file)
{
    write_file("file", "");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/file", dir);
    cr_assert_eq(rdv_conf_load_dir(conf, path, err, sizeof err), -1);
    assert_err_has(strerror(ENOTDIR));
}

Test(config, unreadable_dir)
{
    skip_if_root("root reads any directory");
    cr_assert_eq(chmod(dir, 0), 0);
    cr_assert_eq(load(), -1);
    assert_err_has(strerror(EACCES));
}

Test(config, unreadable_conf_file)
{
    skip_if_root("root reads any file");
    write_file("10-t.conf", "test = { };");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/10-t.conf", dir);
    cr_assert_eq(chmod(path, 0), 0);
    cr_assert_eq(load(), -1);
    assert_err_has("10-t.conf: cannot open: ");
    assert_err_has(strerror(EACCES));
}

Test(config, unreadable_conf_entry)
{
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/50-dir.conf", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_eq(load(), -1);
    assert_err_has("50-dir.conf: ");
}

Test(config, too_many_files)
{
    for (int i = 0; i < 257; i++) {
        char name[32];
        snprintf(name, sizeof name, "%03d.conf", i);
        write_file(name, "");
    }
    cr_assert_eq(load(), -1);
    assert_err_has("257 .conf files, more than the limit of 256");
}

Test(config, file_too_large)
{
    char *big = malloc(1024 * 1024 + 2);
    cr_assert_not_null(big);
    memset(big, '#', 1024 * 1024 + 1);
    big[1024 * 1024 + 1] = '\0';
    write_file("10-big.conf", big);
    free(big);
    cr_assert_eq(load(), -1);
    assert_err_has("10-big.conf: larger than 1048576 bytes");
}

Test(config, load_file_directly)
{
    write_file("any.name", "test = { port = 9; };");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/any.name", dir);
    cr_assert_eq(rdv_conf_load_file(conf, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(fill(), 0, "%s", err);
    cr_expect_eq(cfg.port, 9);
}

/* ------------------------------------------------------------------ overrides */

static int override(const char *spec)
{
    return rdv_conf_override(conf, spec, err, sizeof err);
}

Test(config, overrides_win_over_files)
{
    write_file("10-t.conf", "test = { port = 1000; name = \"file\"; hosts = [ \"f\" ]; };");
    cr_assert_eq(load(), 0, "%s", err);
    const char *specs[] = {
        "test.port=2000", "test.port=0x10", "test.enabled=off", "test.ratio=0.25",
        "test.name=a=b, c", "test.hosts= x ,y,z ", "test.big=-08",
    };
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++)
        cr_assert_eq(override(specs[i]), 0, "%s: %s", specs[i], err);
    cr_assert_eq(fill(), 0, "%s", err);
    cr_expect_eq(cfg.port, 16, "the later override wins");
    cr_expect_not(cfg.enabled);
    cr_expect_float_eq(cfg.ratio, 0.25, 1e-12);
    cr_expect_str_eq(cfg.name, "a=b, c");
    cr_assert_eq(cfg.hosts.n, 3);
    cr_expect_str_eq(cfg.hosts.v[0], "x");
    cr_expect_str_eq(cfg.hosts.v[2], "z");
    cr_expect_eq(cfg.big, -8, "decimal, never octal");
}

Test(config, override_values)
{
    static const struct { const char *spec; bool enabled; size_t hosts; } cases[] = {
        { "test.enabled=yes", true, 0 }, { "test.enabled=No", false, 0 },
        { "test.enabled=1", true, 0 },   { "test.enabled=0", false, 0 },
        { "test.enabled=ON", true, 0 },  { "test.enabled=false", false, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cr_assert_eq(override(cases[i].spec), 0, "%s", err);
        cr_assert_eq(override("test.hosts="), 0, "%s", err);
        cr_assert_eq(fill(), 0, "%s: %s", cases[i].spec, err);
        cr_expect_eq(cfg.enabled, cases[i].enabled, "%s", cases[i].spec);
        cr_expect_eq(cfg.hosts.n, 0, "empty text is the empty list");
        rdv_conf_release(tbl, &cfg);
    }
    char where[32];
    cr_expect_str_eq(rdv_conf_group_origin(conf, "test", where, sizeof where), "override");
}

Test(config, malformed_overrides)
{
    const char *bad[] = { "noequals", "test=5", ".port=1", "test.=1", "test.port", "te st.port=1",
                          "test.a.b=1", "1test.port=1" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(override(bad[i]), -1, "%s accepted", bad[i]);
        assert_err_has("override ");
        assert_err_has("expected group.key=value");
    }
}

Test(config, bad_override_values)
{
    static const struct { const char *spec, *want; } cases[] = {
        { "test.port=abc", "override test.port=abc: test.port: \"abc\" is not an integer" },
        { "test.port=70000", "override test.port=70000: test.port: 70000 is out of range 1..65535" },
        { "test.port= 5", "is not an integer" },
        { "test.port=5 ", "is not an integer" },
        { "test.port=1e3", "is not an integer" },
        { "test.port=", "is not an integer" },
        { "test.big=99999999999999999999", "does not fit in 64 bits" },
        { "test.enabled=maybe", "override test.enabled=maybe: test.enabled: \"maybe\" is not a boolean" },
        { "test.ratio=x", "\"x\" is not a number" },
        { "test.ratio=nan", "nan is not a finite number" },
        { "test.ratio=2", "2 is out of range 0..1" },
        { "test.tag=123456789", "string of 9 bytes" },
        { "test.hosts=a,,b", "empty entry in \"a,,b\"" },
        { "test.hosts=a, ", "empty entry" },
        { "test.nope=1", "override test.nope=1: test.nope: unknown setting (known: port," },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rdv_conf_free(conf);
        conf = rdv_conf_new();
        cr_assert_eq(override(cases[i].spec), 0, "%s: %s", cases[i].spec, err);
        cr_assert_eq(fill(), -1, "%s accepted", cases[i].spec);
        assert_err_has(cases[i].want);
    }
}

Test(config, parse_value_alone)
{
    cr_assert_eq(rdv_conf_parse_value(&tbl[0], "443", &cfg, err, sizeof err), 0, "%s", err);
    cr_expect_eq(cfg.port, 443);
    cr_assert_eq(rdv_conf_parse_value(&tbl[0], "x", &cfg, err, sizeof err), -1);
    cr_expect_str_eq(err, "\"x\" is not an integer (write e.g. 42 or 0x2a)");
    cr_assert_eq(rdv_conf_parse_value(&tbl[3], "one", &cfg, err, sizeof err), 0);
    cr_assert_eq(rdv_conf_parse_value(&tbl[3], "two", &cfg, err, sizeof err), 0, "old value freed");
    cr_expect_str_eq(cfg.name, "two");
}

/* ------------------------------------------------------------------ lists of groups */

static const char *const skip_listeners[] = { "listeners", NULL };

Test(config, list_of_groups)
{
    write_file("10-t.conf", "test = {\n  port = 1;\n  listeners = (\n"
                            "    { name = \"main\"; port = 21116; },\n"
                            "    { name = \"nat\"; port = 21117; udp = false; }\n  );\n};\n");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(fill(), -1, "listeners is unknown to tbl");
    assert_err_has("test.listeners: unknown setting");
    cr_assert_eq(rdv_conf_fill(conf, "test", tbl, skip_listeners, &cfg, err, sizeof err), 0, "%s", err);
    cr_expect_eq(cfg.port, 1);

    struct lcfg *l;
    size_t n;
    cr_assert_eq(rdv_conf_fill_list(conf, "test", "listeners", ltbl, sizeof *l, (void **)&l, &n, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(l[0].name, "main");
    cr_expect_eq(l[0].port, 21116);
    cr_expect(l[0].udp, "default");
    cr_expect_str_eq(l[1].name, "nat");
    cr_expect_not(l[1].udp);
    rdv_conf_release_list(ltbl, sizeof *l, l, n);
}

Test(config, list_missing_or_empty)
{
    struct lcfg *l;
    size_t n = 99;
    cr_assert_eq(rdv_conf_fill_list(conf, "test", "listeners", ltbl, sizeof *l, (void **)&l, &n, err, sizeof err), 0);
    cr_expect_eq(n, 0);
    cr_expect_null(l);
    write_file("10-t.conf", "test = { listeners = ( ); };");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(rdv_conf_fill_list(conf, "test", "listeners", ltbl, sizeof *l, (void **)&l, &n, err, sizeof err), 0);
    cr_expect_eq(n, 0);
}

Test(config, list_element_errors_name_the_index)
{
    static const struct { const char *elems, *want; } cases[] = {
        { "{ port = 1; },\n{ port = 2; bogus = 3; }", "10-t.conf:3: test.listeners[1].bogus: unknown setting (known: name, port, udp)" },
        { "{ port = 1; },\n{ port = 70000; }", "10-t.conf:3: test.listeners[1].port: 70000 is out of range" },
        { "{ port = \"1\"; }", "10-t.conf:2: test.listeners[0].port: expected an integer, got a string" },
        { "{ port = 1; },\n5", "10-t.conf:3: test.listeners[1]: expected a group { ... }, got an integer" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[256];
        snprintf(text, sizeof text, "test = { listeners = (\n%s\n); };", cases[i].elems);
        reload_with(text);
        cr_assert_eq(load(), 0, "%s", err);
        void *arr = (void *)1;
        size_t n = 99;
        cr_assert_eq(rdv_conf_fill_list(conf, "test", "listeners", ltbl, sizeof(struct lcfg), &arr, &n, err, sizeof err),
                     -1, "%s accepted", cases[i].elems);
        cr_expect_null(arr);
        cr_expect_eq(n, 0);
        assert_err_has(cases[i].want);
    }
}

Test(config, list_not_a_list_or_overridden)
{
    void *arr;
    size_t n;
    write_file("10-t.conf", "test = {\n  listeners = [ 1 ];\n};");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(rdv_conf_fill_list(conf, "test", "listeners", ltbl, sizeof(struct lcfg), &arr, &n, err, sizeof err), -1);
    assert_err_has("10-t.conf:2: test.listeners: expected a list of groups, got an array");

    cr_assert_eq(override("test.listeners=x"), 0);
    cr_assert_eq(rdv_conf_fill(conf, "test", tbl, skip_listeners, &cfg, err, sizeof err), 0, "skipped: %s", err);
    cr_assert_eq(rdv_conf_fill_list(conf, "test", "listeners", ltbl, sizeof(struct lcfg), &arr, &n, err, sizeof err), -1);
    assert_err_has("override test.listeners=x: test.listeners: a list of groups cannot be overridden");
}

/* ------------------------------------------------------------------ print, copy, compare */

static void fill_from_text(const char *text, struct tcfg *out)
{
    reload_with(text);
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(rdv_conf_fill(conf, "test", tbl, NULL, out, err, sizeof err), 0, "%s", err);
}

Test(config, print_parses_back_with_secrets_redacted)
{
    fill_from_text("test = { port = 443; enabled = false; ratio = 0.1; big = 5000000000L;\n"
                   "  name = \"q\\\"b\\\\s\\n\\t\\x01 caf\xc3\xa9 # not a comment\";\n"
                   "  hosts = [ \"a\", \"b,c\" ]; key = \"s3cret\"; };",
                   &cfg);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    cr_assert_not_null(f);
    rdv_conf_print(f, "test", tbl, &cfg);
    fclose(f);
    cr_expect(strstr(out, "s3cret") == NULL, "%s", out);
    cr_expect(strstr(out, "  key = \"<redacted>\";  # private key\n") != NULL, "%s", out);
    cr_expect(strstr(out, "  port = 443;  # TCP port\n") != NULL, "%s", out);
    cr_expect(strstr(out, "  big = 5000000000L;") != NULL, "%s", out);

    struct tcfg back = { 0 };
    fill_from_text(out, &back);
    free(out);
    cr_expect_eq(back.port, 443);
    cr_expect_not(back.enabled);
    cr_expect_eq(back.ratio, 0.1, "exact round trip of a double");
    cr_expect_eq(back.big, 5000000000LL);
    cr_expect_str_eq(back.name, cfg.name);
    cr_expect_str_eq(back.tag, "t");
    cr_assert_eq(back.hosts.n, 2);
    cr_expect_str_eq(back.hosts.v[1], "b,c");
    cr_expect_str_eq(back.key, "<redacted>");
    rdv_conf_release(tbl, &back);
}

Test(config, print_defaults_parse_back)
{
    cr_assert_eq(fill(), 0, "%s", err);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    rdv_conf_print(f, "test", tbl, &cfg);
    fclose(f);
    cr_expect(strstr(out, "  key = \"\";") != NULL, "an unset secret is shown as unset: %s", out);
    cr_expect(strstr(out, "  hosts = [ ];") != NULL, "%s", out);
    cr_expect(strstr(out, "  ratio = 0.5;") != NULL, "%s", out);
    struct tcfg back = { 0 };
    fill_from_text(out, &back);
    free(out);
    cr_expect_null(rdv_conf_nonreloadable_change(tbl, &cfg, &back));
    cr_expect_eq(back.ratio, 0.5);
    cr_expect_eq(back.enabled, cfg.enabled);
    rdv_conf_release(tbl, &back);
}

Test(config, print_integral_double_reads_as_float)
{
    fill_from_text("test = { ratio = 1; };", &cfg);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    rdv_conf_print(f, "test", tbl, &cfg);
    fclose(f);
    cr_expect(strstr(out, "  ratio = 1.0;") != NULL, "%s", out);
    free(out);
}

Test(config, copy_is_deep_and_release_frees_all)
{
    fill_from_text("test = { name = \"n\"; hosts = [ \"a\", \"b\" ]; key = \"k\"; port = 7; };", &cfg);
    struct tcfg dup = { 0 };
    cr_assert_eq(rdv_conf_copy(tbl, &dup, &cfg), 0);
    cr_expect_null(rdv_conf_nonreloadable_change(tbl, &cfg, &dup));
    cr_expect_neq(dup.name, cfg.name);
    cr_expect_neq(dup.hosts.v, cfg.hosts.v);
    cr_expect_str_eq(dup.hosts.v[1], "b");
    cr_expect_eq(dup.port, 7);
    rdv_conf_release(tbl, &cfg);
    cr_expect_str_eq(dup.name, "n", "the copy outlives the original");
    cr_expect_null(cfg.name);
    cr_expect_eq(cfg.hosts.n, 0);
    rdv_conf_release(tbl, &dup);
    rdv_conf_release(tbl, &dup);
}

Test(config, nonreloadable_change)
{
    struct tcfg a = { 0 }, b = { 0 };
    fill_from_text("test = { port = 1; name = \"x\"; hosts = [ \"a\" ]; enabled = true; };", &a);
    fill_from_text("test = { port = 1; name = \"x\"; hosts = [ \"a\", \"b\" ]; enabled = false; ratio = 0.9; };", &b);
    cr_expect_null(rdv_conf_nonreloadable_change(tbl, &a, &b), "only RELOAD settings differ");
    rdv_conf_release(tbl, &b);

    fill_from_text("test = { port = 2; name = \"x\"; };", &b);
    cr_expect_eq(rdv_conf_nonreloadable_change(tbl, &a, &b), &tbl[0]);
    rdv_conf_release(tbl, &b);

    fill_from_text("test = { port = 1; name = \"y\"; hosts = [ \"a\" ]; };", &b);
    cr_expect_eq(rdv_conf_nonreloadable_change(tbl, &a, &b), &tbl[3]);
    rdv_conf_release(tbl, &b);
    rdv_conf_release(tbl, &a);
}

/* SIGHUP at this level: a bad new tree fails to fill and leaves the running
 * configuration whole. */
Test(config, reload_rollback)
{
    struct tcfg running = { 0 }, next = { 0 };
    fill_from_text("test = { port = 1000; name = \"old\"; hosts = [ \"h\" ]; };", &running);

    reload_with("test = { port = 1000; name = \"new\";\n  ratio = 7.0; };");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(rdv_conf_fill(conf, "test", tbl, NULL, &next, err, sizeof err), -1);
    assert_err_has("10-t.conf:2: test.ratio: 7 is out of range 0..1");
    cr_expect_null(next.name, "failed fill released");
    cr_expect_eq(next.hosts.n, 0);

    cr_expect_eq(running.port, 1000);
    cr_expect_str_eq(running.name, "old");
    cr_assert_eq(running.hosts.n, 1);
    cr_expect_str_eq(running.hosts.v[0], "h");

    fill_from_text("test = { port = 1000; name = \"old\"; hosts = [ \"h\", \"i\" ]; };", &next);
    cr_expect_null(rdv_conf_nonreloadable_change(tbl, &running, &next));
    rdv_conf_release(tbl, &next);
    rdv_conf_release(tbl, &running);
}

Test(config, empty_table_accepts_no_keys)
{
    static const rdv_setting none[] = { RDV_SETTING_END };
    write_file("10-t.conf", "test = { x = 1; };");
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(rdv_conf_fill(conf, "test", none, NULL, &cfg, err, sizeof err), -1);
    assert_err_has("test.x: unknown setting (known: none)");
    cr_assert_eq(rdv_conf_fill(conf, "other", NULL, NULL, &cfg, err, sizeof err), 0);
}
