/* core/compat.c — the hbbs and hbbr personalities (../spec/config-compat.md).
 *
 * An existing hbbs/hbbr command line, environment, ./.env and (hbbs) -c file
 * are resolved with upstream's names and precedence (§2), then turned into a
 * generated libconfig text with the same groups an operator would write in
 * conf.d/. That text boots the normal server, so there is one code path. An
 * optional RDVD_CONF_DIR adds rdvd-only settings on top. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compat.h"
#include "compat_opts.h"
#include "rdv/wire.h"
#include "server.h"

extern char **environ;

/* ------------------------------------------------------------------ text out */
static void sb_str(rdv_text *b, const char *s)
{
    rdv_text_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            rdv_text_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            rdv_text_printf(b, "\\x%02x", *p);
        else
            rdv_text_printf(b, "%c", *p);
    }
    rdv_text_printf(b, "\"");
}

/* A libconfig list of strings from a comma-separated value. */
static void sb_list(rdv_text *b, const char *csv)
{
    rdv_text_printf(b, "[");
    char *copy = strdup(csv ? csv : "");
    bool first = true;
    for (char *save = NULL, *t = copy ? strtok_r(copy, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*t))
            t++;
        char *e = t + strlen(t);
        while (e > t && isspace((unsigned char)e[-1]))
            *--e = 0;
        if (!*t)
            continue;
        rdv_text_printf(b, first ? " " : ", ");
        sb_str(b, t);
        first = false;
    }
    free(copy);
    rdv_text_printf(b, " ]");
}

/* ------------------------------------------------------------------ run */
static int module_available(const char *name)
{
    return rdv_module_exists(NULL, name);
}

static bool parse_int(const char *s, long long *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || *end || v != v)
        return false;
    *out = v;
    return true;
}

/* RUST_LOG filters ("info", "hbbs=debug,warn") -> one core level. */
static const char *log_level_of(const char *rust_log)
{
    static const char *levels[] = { "trace", "debug", "info", "warn", "error" };
    static const char *ours[] = { "debug", "debug", "info", "warn", "error" };
    if (!rust_log)
        return "info";
    for (size_t i = 0; i < 5; i++)
        if (strstr(rust_log, levels[i]))
            return ours[i];
    return "info";
}

static bool valid_bind(const char *b)
{
    unsigned char buf[16];
    return !*b || inet_pton(AF_INET, b, buf) == 1 || inet_pton(AF_INET6, b, buf) == 1;
}

static void listener(rdv_text *b, const char *name, long long port, const char *bind, bool udp, bool last)
{
    rdv_text_printf(b, "    { name = \"%s\"; port = %lld; udp = %s; tcp = true; bind = ", name, port, udp ? "true" : "false");
    sb_str(b, bind);
    rdv_text_printf(b, "; }%s\n", last ? "" : ",");
}

/* hbbs: all rendezvous modules; ports from PORT (§3.3). */
static int hbbs_conf(compat_opts *o, rdv_text *b, char *err, size_t errlen)
{
    long long port = 21116;
    const char *ps = compat_get(o, "PORT");
    if (ps && (!parse_int(ps, &port) || port < 3 || port > 65533)) {
        snprintf(err, errlen, "Invalid port: %s (PORT / -p must be an integer from 3 to 65533)", ps);
        return -1;
    }
    const char *bind = compat_get(o, "BIND") ? compat_get(o, "BIND") : "";
    if (!valid_bind(bind)) {
        snprintf(err, errlen, "Invalid bind address: %s (BIND / -b takes an IPv4 or IPv6 literal)", bind);
        return -1;
    }
    long long rmem = 0, serial = 0;
    if (!parse_int(compat_get(o, "RMEM"), &rmem) || rmem < 0)
        rmem = 0;
    if (!parse_int(compat_get(o, "SERIAL"), &serial))
        serial = 0; /* numbers that fail to parse fall back to the default (§2.4) */
    const char *aur = compat_get(o, "ALWAYS-USE-RELAY");
    /* Login enforcement as the lejianwen fork configures it (rendezvous.md
     * §15.10): login-gate is loaded when either variable is given, so its
     * console command can turn it on later, as there. */
    const char *ml = compat_get(o, "MUST-LOGIN"), *jwt = compat_get(o, "RUSTDESK-API-JWT-KEY");
    bool must_login = ml && strcasecmp(ml, "Y") == 0, login = must_login || (jwt && *jwt);
    if (login && !module_available("login-gate")) {
        if (must_login) {
            snprintf(err, errlen, "MUST_LOGIN=Y needs the login-gate module, which is not installed (build it with "
                                  "libjwt-dev present)");
            return -1;
        }
        login = false;
    }

    /* The fork answers KeyExchange on the main port, and logged-in clients
     * (>= 1.4.1) fail without it (client-flows.md §5.2): with login, the
     * secure-TCP offer comes too. Plain hbbs stays OSS (§4.2). */
    bool stcp = login && module_available("secure-tcp");
    rdv_text_printf(b, "core: {\n  modules = [ \"keys\", \"storage-sqlite\", \"ip-blocker\", \"registry\", \"nat-test\", \"punch-coordinator\"%s%s%s ];\n",
              login ? ", \"login-gate\"" : "", stcp ? ", \"secure-tcp\"" : "",
              module_available("websocket-transport") ? ", \"websocket-transport\"" : "");
    rdv_text_printf(b, "  log_level = \"%s\";\n  admin_socket = \"hbbs.sock\";\n  udp_rcvbuf = %lld;\n", log_level_of(getenv("RUST_LOG")), rmem);
    /* The NAT port (PORT-1) is owned by nat-test, which serves upstream's
     * loopback console there as hbbs does (compat_console below). */
    rdv_text_printf(b, "  listeners = (\n");
    listener(b, "main", port, bind, true, true);
    rdv_text_printf(b, "  );\n};\n");

    rdv_text_printf(b, "keys: { key = ");
    sb_str(b, compat_get(o, "KEY") ? compat_get(o, "KEY") : "-");
    rdv_text_printf(b, "; };\n");
    rdv_text_printf(b, "storage-sqlite: { path = ");
    sb_str(b, compat_get(o, "DB-URL") ? compat_get(o, "DB-URL") : "./db_v2.sqlite3");
    rdv_text_printf(b, "; };\n");
    rdv_text_printf(b, "registry: { serial = %lld; rendezvous_servers = ", serial);
    sb_list(b, compat_get(o, "RENDEZVOUS-SERVERS"));
    rdv_text_printf(b, "; software_url = ");
    sb_str(b, compat_get(o, "SOFTWARE-URL") ? compat_get(o, "SOFTWARE-URL") : "");
    rdv_text_printf(b, "; };\n");
    rdv_text_printf(b, "nat-test: { compat_console = true; console_port = %lld; console_bind = ", port - 1);
    sb_str(b, bind);
    rdv_text_printf(b, "; };\n");
    rdv_text_printf(b, "punch-coordinator: { relay_servers = ");
    sb_list(b, compat_get(o, "RELAY-SERVERS"));
    rdv_text_printf(b, "; always_use_relay = %s; mask = ", aur && strcasecmp(aur, "Y") == 0 ? "true" : "false");
    sb_str(b, compat_get(o, "MASK") ? compat_get(o, "MASK") : "");
    rdv_text_printf(b, "; local_ip = ");
    sb_str(b, compat_get(o, "LOCAL-IP") ? compat_get(o, "LOCAL-IP") : "");
    rdv_text_printf(b, "; };\n");
    if (login) {
        rdv_text_printf(b, "login-gate: { must_login = %s; jwt_key = ", must_login ? "true" : "false");
        sb_str(b, jwt ? jwt : "");
        rdv_text_printf(b, "; };\n");
    }
    if (module_available("websocket-transport"))
        rdv_text_printf(b, "websocket-transport: { rendezvous_port = %lld; relay_port = 0; bind = \"%s\"; };\n", port + 2, bind);
    return 0;
}

/* hbbr: the relay module; the PORT quirk of §4.2. */
static int hbbr_conf(compat_opts *o, rdv_text *b, char *err, size_t errlen)
{
    long long port = 21117;
    const char *flag_p = compat_flag(o, "PORT");
    const char *env_p = compat_get(o, "PORT");
    if (flag_p) {
        if (!parse_int(flag_p, &port) || port < 1 || port > 65533) {
            snprintf(err, errlen, "Invalid port: %s (-p must be a port number)", flag_p);
            return -1;
        }
    } else if (env_p && parse_int(env_p, &port) && port > 0 && port < 65533) {
        port += 1; /* one shared .env with PORT=21116 drives both servers */
    } else {
        port = 21117;
    }
    const char *bind = compat_get(o, "BIND") ? compat_get(o, "BIND") : "";
    if (!valid_bind(bind)) {
        snprintf(err, errlen, "Invalid bind address: %s (BIND / -b takes an IPv4 or IPv6 literal)", bind);
        return -1;
    }
    rdv_text_printf(b, "core: {\n  modules = [ \"relay\"%s ];\n", module_available("websocket-transport") ? ", \"websocket-transport\"" : "");
    rdv_text_printf(b, "  log_level = \"%s\";\n  admin_socket = \"hbbr.sock\";\n};\n", log_level_of(getenv("RUST_LOG")));
    rdv_text_printf(b, "relay: {\n  port = %lld;\n  bind = ", port);
    sb_str(b, bind);
    rdv_text_printf(b, ";\n  key = ");
    sb_str(b, compat_get(o, "KEY") ? compat_get(o, "KEY") : "");
    rdv_text_printf(b, ";\n  console_loopback = true;\n"); /* upstream's loopback console on the relay port */
    /* Bandwidth (relay.md §6.1): a value that does not parse keeps the
     * default, as upstream does (§2.4). */
    static const struct { const char *env, *key; double lo, hi; } bw[] = {
        { "SINGLE-BANDWIDTH", "single_bandwidth", 0.001, 1e7 }, { "TOTAL-BANDWIDTH", "total_bandwidth", 0.001, 1e7 },
        { "LIMIT-SPEED", "limit_speed", 0.001, 1e7 }, { "DOWNGRADE-THRESHOLD", "downgrade_threshold", 0.01, 1000 },
    };
    for (size_t i = 0; i < sizeof bw / sizeof bw[0]; i++) {
        double d;
        if (parse_double(compat_get(o, bw[i].env), &d) && d >= bw[i].lo && d <= bw[i].hi)
            rdv_text_printf(b, "  %s = %.17g;\n", bw[i].key, d);
    }
    long long dsc;
    if (parse_int(compat_get(o, "DOWNGRADE-START-CHECK"), &dsc) && dsc > 0 && dsc <= 1000000000)
        rdv_text_printf(b, "  downgrade_start_check = %lld;\n", dsc);
    rdv_text_printf(b, "};\n");
    if (module_available("websocket-transport"))
        rdv_text_printf(b, "websocket-transport: { rendezvous_port = 0; relay_port = %lld; bind = \"%s\"; };\n", port + 2, bind);
    return 0;
}

/* The command line as given, kept to make the configuration again on
 * SIGHUP: flags and environment stay, ./.env and the -c file are read
 * anew, so an edit there applies (what may change live is the server's
 * rule: a setting that needs a restart refuses the reload). */
typedef struct compat_ctx {
    const char *personality;
    int argc;
    char **argv;
} compat_ctx;

/* 0 and *text set; 1 usage error, 2 --help/--version printed (start only);
 * -1 other error; err set for 1 and -1. */
static int generate(const compat_ctx *x, char **text, char *err, size_t errlen)
{
    bool hbbs = strcmp(x->personality, "hbbs") == 0;
    compat_opts *o = compat_opts_new(hbbs ? COMPAT_HBBS : COMPAT_HBBR, environ);
    if (!o) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int r = compat_parse_argv(o, x->argc, x->argv, err, errlen);
    if (r == 1) {
        size_t used = strlen(err);
        snprintf(err + used, errlen - used, "\n%s", compat_usage(o));
    }
    if (r != 0) {
        compat_opts_free(o);
        return r;
    }
    compat_load_files(o);
    rdv_text b = { 0 };
    r = hbbs ? hbbs_conf(o, &b, err, errlen) : hbbr_conf(o, &b, err, errlen);
    compat_opts_free(o);
    if (r < 0 || b.cut) {
        if (b.cut)
            snprintf(err, errlen, "out of memory");
        free(b.p);
        return -1;
    }
    *text = b.p;
    return 0;
}

static char *regenerate(void *ud, char *err, size_t errlen)
{
    const compat_ctx *x = ud;
    char *text = NULL;
    char why[2048] = "";
    if (generate(x, &text, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s command line, environment and files: %s", x->personality, why);
        return NULL;
    }
    return text;
}

int rdv_compat_main(const char *personality, int argc, char **argv)
{
    compat_ctx x = { .personality = personality, .argc = argc, .argv = argv };
    char err[2048] = "";
    char *text = NULL;
    int r = generate(&x, &text, err, sizeof err);
    if (r == 2)
        return 0;
    if (r != 0) {
        fprintf(stderr, "%s: %s%s", personality, err, r == 1 ? "" : "\n");
        return 1;
    }
    char name[64];
    snprintf(name, sizeof name, "%s command line and environment", personality);
    rdv_boot boot = { .conf_text = text, .conf_text_name = name, .conf_dir = getenv("RDVD_CONF_DIR"),
                      .conf_regen = regenerate, .conf_regen_ud = &x };
    if (getenv("RDVD_PRINT_CONFIG"))
        boot.dry = true;
    int rc = rdv_main_run(&boot, boot.dry);
    free(text);
    return rc;
}
