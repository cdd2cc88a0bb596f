/* core/compat_opts.c — see compat_opts.h. */
#include "compat_opts.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rdv/core.h"

#define OPT_MAX 64
#define NAME_MAX_LEN 128
#define INI_MAX (1 << 20)

typedef struct kv {
    char *k, *v;
} kv;

typedef struct layer {
    kv e[OPT_MAX];
    size_t n;
} layer;

struct compat_opts {
    compat_kind kind;
    char **envp;
    layer flags, cfile, dotenv;
};

typedef struct flag_def {
    char shortf;
    const char *longf;
    const char *canon;
} flag_def;

static const flag_def hbbs_flags[] = {
    { 'c', "config", "CONFIG" },
    { 'b', "bind", "BIND" },
    { 'p', "port", "PORT" },
    { 's', "serial", "SERIAL" },
    { 'R', "rendezvous-servers", "RENDEZVOUS-SERVERS" },
    { 'u', "software-url", "SOFTWARE-URL" },
    { 'r', "relay-servers", "RELAY-SERVERS" },
    { 'M', "rmem", "RMEM" },
    { 0, "mask", "MASK" },
    { 'k', "key", "KEY" },
    { 0, "must-login", "MUST-LOGIN" }, /* the lejianwen fork's login enforcement (§15.10) */
    { 0, NULL, NULL },
};

static const flag_def hbbr_flags[] = {
    { 'b', "bind", "BIND" },
    { 'p', "port", "PORT" },
    { 'k', "key", "KEY" },
    { 0, NULL, NULL },
};

void compat_canonical(const char *name, char *out, size_t outlen)
{
    size_t i = 0;
    for (; name[i] && i + 1 < outlen; i++)
        out[i] = name[i] == '_' ? '-' : (char)toupper((unsigned char)name[i]);
    out[i] = 0;
}

static void layer_set(layer *l, const char *canon, const char *v)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->e[i].k, canon) == 0) {
            char *nv = strdup(v);
            if (nv) {
                free(l->e[i].v);
                l->e[i].v = nv;
            }
            return;
        }
    if (l->n == OPT_MAX)
        return; /* bounded: more distinct keys than any real file has */
    char *k = strdup(canon), *nv = strdup(v);
    if (!k || !nv) {
        free(k), free(nv);
        return;
    }
    l->e[l->n++] = (kv){ k, nv };
}

static const char *layer_get(const layer *l, const char *canon)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->e[i].k, canon) == 0)
            return l->e[i].v;
    return NULL;
}

static void layer_free(layer *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->e[i].k), free(l->e[i].v);
    l->n = 0;
}

compat_opts *compat_opts_new(compat_kind kind, char **envp)
{
    compat_opts *o = calloc(1, sizeof *o);
    if (o)
        o->kind = kind, o->envp = envp;
    return o;
}

void compat_opts_free(compat_opts *o)
{
    if (!o)
        return;
    layer_free(&o->flags), layer_free(&o->cfile), layer_free(&o->dotenv);
    free(o);
}

/* Environment lookup, steps 1-4 of config-compat.md §2.1. */
static const char *env_exact(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

static const char *env_lookup(char **envp, const char *canon)
{
    char alt[NAME_MAX_LEN];
    const char *v = env_exact(envp, canon);
    if (v)
        return v;
    size_t n = strlen(canon);
    if (n >= sizeof alt)
        return NULL;
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i <= n; i++) {
            char c = canon[i];
            if (step >= 1)
                c = (char)tolower((unsigned char)c);
            if ((step == 0 || step == 2) && c == '-')
                c = '_';
            alt[i] = c;
        }
        if ((v = env_exact(envp, alt)))
            return v;
    }
    /* any spelling whose canonical form matches; smallest variable name wins */
    const char *best = NULL, *bestv = NULL;
    for (char **e = envp; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || (size_t)(eq - *e) >= sizeof alt)
            continue;
        char name[NAME_MAX_LEN], c2[NAME_MAX_LEN];
        memcpy(name, *e, (size_t)(eq - *e));
        name[eq - *e] = 0;
        compat_canonical(name, c2, sizeof c2);
        if (strcmp(c2, canon) == 0 && (!best || strcmp(*e, best) < 0))
            best = *e, bestv = eq + 1;
    }
    return bestv;
}

const char *compat_get(compat_opts *o, const char *canon)
{
    const char *v = layer_get(&o->flags, canon);
    if (!v)
        v = layer_get(&o->cfile, canon);
    if (!v)
        v = layer_get(&o->dotenv, canon);
    return v ? v : env_lookup(o->envp, canon);
}

const char *compat_flag(compat_opts *o, const char *canon) { return layer_get(&o->flags, canon); }

const char *compat_usage(compat_opts *o)
{
    if (o->kind == COMPAT_HBBS)
        return "usage: hbbs [-c FILE] [-b IP] [-p PORT] [-s SERIAL] [-R LIST] [-u URL] [-r LIST] [-M RMEM]\n"
               "            [--mask CIDR] [-k KEY] [--must-login Y|N] [-h] [-V]\n";
    return "usage: hbbr [-b IP] [-p PORT] [-k KEY] [-h] [-V]\n";
}

static const flag_def *find_flag(const flag_def *defs, char shortf, const char *longf, size_t longlen)
{
    for (const flag_def *d = defs; d->canon; d++)
        if ((shortf && d->shortf == shortf) ||
            (longf && strlen(d->longf) == longlen && strncmp(d->longf, longf, longlen) == 0))
            return d;
    return NULL;
}

/* -h: the usage, then what each option and variable does (config-compat.md
 * §3, §4). Every option can also be given as a variable (environment, ./.env
 * or, for hbbs, the -c file) under its long name in capitals. */
static const char hbbs_help[] =
    "\nrdvd in the place of hbbs, the RustDesk ID/rendezvous server: the same options,\n"
    "variables, files and ports (PORT-1 TCP NAT test and console, PORT TCP+UDP, PORT+2\n"
    "WebSocket). State lives in the working directory.\n"
    "\n"
    "  -c, --config FILE          an extra KEY=value file: the options win over it, it\n"
    "                             wins over ./.env and the environment\n"
    "  -b, --bind IP              the address every listener binds (default: all)\n"
    "  -p, --port PORT            the main port (default 21116)\n"
    "  -k, --key KEY              \"-\" or \"_\": the key pair id_ed25519(.pub), made if\n"
    "                             missing (default \"-\"); else the key clients must use;\n"
    "                             \"\" accepts any\n"
    "  -r, --relay-servers LIST   relay host[:port] list handed to clients (comma-separated)\n"
    "  -M, --rmem BYTES           UDP receive buffer (raise net.core.rmem_max first)\n"
    "  -s, --serial N             configuration serial (deprecated)\n"
    "  -R, --rendezvous-servers LIST  rendezvous servers pushed to clients (deprecated)\n"
    "  -u, --software-url URL     download URL of the newest client (deprecated)\n"
    "      --mask CIDR            the IPv4 network whose peers are LAN (deprecated)\n"
    "      --must-login Y|N       refuse punch requests without a login token\n"
    "  -h, --help                 this help\n"
    "  -V, --version              the version\n"
    "\n"
    "Each option is also a variable, its long name in capitals (PORT, RELAY-SERVERS).\n"
    "Variables only: ALWAYS_USE_RELAY=Y (relay every session), TEST_HBBS (no, or\n"
    "ip:port), DB_URL (default ./db_v2.sqlite3), LOCAL-IP (with --mask), RUST_LOG.\n"
    "Signals: SIGHUP reloads, SIGTERM drains and stops.\n";
static const char hbbr_help[] =
    "\nrdvd in the place of hbbr, the RustDesk relay server: the same options, variables,\n"
    "files (blacklist.txt, blocklist.txt) and ports (PORT TCP, PORT+2 WebSocket).\n"
    "\n"
    "  -b, --bind IP              the address both listeners bind (default: all)\n"
    "  -p, --port PORT            the relay port (default 21117)\n"
    "  -k, --key KEY              the key clients must present (default: none, any);\n"
    "                             \"-\" or \"_\": the key pair id_ed25519(.pub), made if missing\n"
    "  -h, --help                 this help\n"
    "  -V, --version              the version\n"
    "\n"
    "Each option is also a variable, its long name in capitals (PORT, KEY).\n"
    "Variables only, in Mb/s: SINGLE_BANDWIDTH (per pair, default 128),\n"
    "TOTAL_BANDWIDTH (all pairs, 1024), LIMIT_SPEED (blacklisted or downgraded pairs,\n"
    "32); DOWNGRADE_THRESHOLD (0.66), DOWNGRADE_START_CHECK (1800 s); RUST_LOG.\n"
    "Signals: SIGHUP reloads, SIGTERM drains and stops.\n";

int compat_parse_argv(compat_opts *o, int argc, char **argv, char *err, size_t errlen)
{
    const flag_def *defs = o->kind == COMPAT_HBBS ? hbbs_flags : hbbr_flags;
    const char *who = o->kind == COMPAT_HBBS ? "hbbs" : "hbbr";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        const flag_def *d = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(compat_usage(o), stdout);
            fputs(o->kind == COMPAT_HBBS ? hbbs_help : hbbr_help, stdout);
            return 2;
        }
        if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("%s %s (rdvd)\n", who, RDV_VERSION);
            return 2;
        }
        if (a[0] == '-' && a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            d = find_flag(defs, 0, a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
            val = eq ? eq + 1 : NULL;
        } else if (a[0] == '-' && a[1]) {
            d = find_flag(defs, a[1], NULL, 0);
            val = a[2] ? (a[2] == '=' ? a + 3 : a + 2) : NULL;
        }
        if (!d) {
            snprintf(err, errlen, "unexpected argument '%s'", a);
            return 1;
        }
        if (!val) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "a value is required for '%s'", a);
                return 1;
            }
            val = argv[++i];
        }
        layer_set(&o->flags, d->canon, val);
    }
    return 0;
}

/* ---- INI (rust-ini 0.18 defaults, §2.3) ---- */
static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

static void unquote_unescape(char *v)
{
    size_t n = strlen(v);
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
        memmove(v, v + 1, n - 2);
        v[n - 2] = 0;
    }
    char *w = v;
    for (char *r = v; *r; r++) {
        if (*r == '\\' && r[1])
            r++;
        *w++ = *r;
    }
    *w = 0;
}

int compat_parse_ini(const char *text, compat_kv_fn fn, void *ud)
{
    char *copy = strdup(text);
    if (!copy)
        return -1;
    /* Only keys before the first [section] count; a line that is neither a
     * comment, a section nor key=value makes the whole file invalid. */
    kv found[OPT_MAX];
    size_t n = 0;
    int rc = 0;
    bool in_section = false;
    for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *l = trim(line);
        if (!*l || *l == '#' || *l == ';')
            continue;
        if (*l == '[') {
            if (!strchr(l, ']')) {
                rc = -1;
                break;
            }
            in_section = true;
            continue;
        }
        char *sep = strpbrk(l, "=:");
        if (!sep) {
            rc = -1;
            break;
        }
        if (in_section)
            continue;
        *sep = 0;
        char *k = trim(l), *v = trim(sep + 1);
        unquote_unescape(v);
        if (*k && n < OPT_MAX)
            found[n++] = (kv){ k, v };
    }
    if (rc == 0)
        for (size_t i = 0; i < n; i++) {
            char canon[NAME_MAX_LEN];
            compat_canonical(found[i].k, canon, sizeof canon);
            fn(ud, canon, found[i].v);
        }
    free(copy);
    return rc;
}

static void set_into(void *ud, const char *k, const char *v) { layer_set(ud, k, v); }

static void load_ini(const char *path, layer *into)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char *buf = malloc(INI_MAX + 1);
    size_t n = buf ? fread(buf, 1, INI_MAX + 1, f) : 0;
    fclose(f);
    if (buf && n <= INI_MAX) {
        buf[n] = 0;
        compat_parse_ini(buf, set_into, into);
    }
    free(buf);
}

void compat_load_files(compat_opts *o)
{
    load_ini(".env", &o->dotenv);
    if (o->kind == COMPAT_HBBS) {
        const char *cfg = layer_get(&o->flags, "CONFIG");
        if (!cfg)
            cfg = layer_get(&o->dotenv, "CONFIG");
        if (!cfg)
            cfg = env_lookup(o->envp, "CONFIG");
        if (cfg)
            load_ini(cfg, &o->cfile);
    }
}
