/* core/config.c — conf.d loading and settings tables (contract in config.h).
 *
 * Each file is parsed into its own libconfig tree, kept for the lifetime of
 * the rdv_conf, and indexed by group: a group is the ordered list of the keys
 * it has in every file, so a module's settings may be spread over files and
 * still be checked for repeats. Values are converted and checked only when a
 * group is filled against a settings table; overrides are kept as text.
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define CONF_FILE_MAX (1024 * 1024) /* bytes in one conf file */
#define CONF_FILES_MAX 256          /* .conf files in one directory */
#define STR_MAX_DEFAULT 4096        /* STRING length / STRLIST entries when max is 0;
                                       also the length cap of a STRLIST entry */
#define NAME_CHARS "-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_*"

#define FIELD(s, cfg, T) ((T *)(void *)((char *)(cfg) + (s)->offset))
#define CFIELD(s, cfg, T) ((const T *)(const void *)((const char *)(cfg) + (s)->offset))

struct conf_file {
    char *path;
    config_t tree; /* settings point back here: never moved */
    bool base;     /* rdv_conf_load_base: its keys yield to later files */
};

struct entry { /* one key of a group, in file order */
    const char *key;
    const config_setting_t *val;
    const char *file;
    bool base;
};

struct group {
    char *name;
    const char *file; /* where first seen; NULL: from an override */
    unsigned line;
    struct entry *e;
    size_t n, cap;
};

struct override {
    char *spec;                      /* as given, for messages */
    char *buf;                       /* copy of spec cut into the three parts */
    const char *group, *key, *value; /* into buf */
};

struct rdv_conf {
    struct conf_file **files;
    size_t nfiles, files_cap;
    struct group *groups;
    size_t ngroups, groups_cap;
    const char **names; /* group names for rdv_conf_groups() */
    size_t names_cap;
    struct override *ovr;
    size_t novr, ovr_cap;
};

/* Where a value came from, for the "<file>:<line>: <group>.<key>: " prefix. */
struct loc {
    const char *file;  /* NULL with ovr set, or for a bare message */
    unsigned line;
    const char *ovr;   /* override spec */
    const char *group; /* NULL: no setting name in the message */
    const char *list;  /* list-of-groups key, with index */
    size_t index;
    const char *key;
};

/* ------------------------------------------------------------------ errors */

static void vappend(char *err, size_t errlen, const char *fmt, va_list ap)
{
    size_t used = strnlen(err, errlen);
    if (used + 1 < errlen)
        vsnprintf(err + used, errlen - used, fmt, ap);
}

static void append(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vappend(err, errlen, fmt, ap);
    va_end(ap);
}

/* Write "<where>: <message>" to err; l == NULL writes the message alone. */
static int fail_at(const struct loc *l, char *err, size_t errlen, const char *fmt, ...)
{
    if (errlen == 0)
        return -1;
    err[0] = '\0';
    if (l && l->ovr)
        append(err, errlen, "override %s: ", l->ovr);
    else if (l && l->file)
        append(err, errlen, "%s:%u: ", l->file, l->line);
    if (l && l->group) {
        append(err, errlen, "%s", l->group);
        if (l->list)
            append(err, errlen, ".%s[%zu]", l->list, l->index);
        append(err, errlen, "%s%s: ", l->key ? "." : "", l->key ? l->key : "");
    }
    va_list ap;
    va_start(ap, fmt);
    vappend(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

#define failf(err, errlen, ...) fail_at(NULL, err, errlen, __VA_ARGS__)

/* "unknown setting (known: a, b, c)", cut with "..." where err runs out. */
static int fail_unknown(const struct loc *l, const rdv_setting *tbl, char *err, size_t errlen)
{
    fail_at(l, err, errlen, "unknown setting (known:");
    if (!tbl || !tbl->name)
        append(err, errlen, " none");
    for (const rdv_setting *s = tbl; s && s->name; s++) {
        if (strnlen(err, errlen) + strlen(s->name) + sizeof ", ...)" >= errlen) {
            append(err, errlen, " ...");
            break;
        }
        append(err, errlen, " %s%s", s->name, s[1].name ? "," : "");
    }
    append(err, errlen, ")");
    return -1;
}

/* ------------------------------------------------------------------ containers */

/* Array p (n used, *cap allocated) with room for one more element: p, a
 * moved copy, or NULL (p untouched). */
static void *grow(void *p, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return p;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *np = reallocarray(p, ncap, size);
    if (np)
        *cap = ncap;
    return np;
}

static struct group *group_find(const rdv_conf *c, const char *name)
{
    for (size_t i = 0; i < c->ngroups; i++)
        if (strcmp(c->groups[i].name, name) == 0)
            return &c->groups[i];
    return NULL;
}

static struct group *group_get(rdv_conf *c, const char *name, const char *file, unsigned line)
{
    struct group *g = group_find(c, name);
    if (g)
        return g;
    struct group *gs = grow(c->groups, c->ngroups, &c->groups_cap, sizeof *gs);
    if (!gs)
        return NULL;
    c->groups = gs;
    const char **names = grow(c->names, c->ngroups, &c->names_cap, sizeof *names);
    if (!names)
        return NULL;
    c->names = names;
    g = &gs[c->ngroups];
    *g = (struct group){ .name = strdup(name), .file = file, .line = line };
    if (!g->name)
        return NULL;
    c->names[c->ngroups++] = g->name;
    return g;
}

static const struct entry *entry_find(const struct group *g, const char *key)
{
    for (size_t i = 0; g && i < g->n; i++)
        if (strcmp(g->e[i].key, key) == 0)
            return &g->e[i];
    return NULL;
}

static struct override *override_find(const rdv_conf *c, const char *group, const char *key)
{
    for (size_t i = 0; i < c->novr; i++)
        if (strcmp(c->ovr[i].group, group) == 0 && strcmp(c->ovr[i].key, key) == 0)
            return &c->ovr[i];
    return NULL;
}

rdv_conf *rdv_conf_new(void)
{
    return calloc(1, sizeof(rdv_conf));
}

void rdv_conf_free(rdv_conf *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nfiles; i++) {
        config_destroy(&c->files[i]->tree);
        free(c->files[i]->path);
        free(c->files[i]);
    }
    for (size_t i = 0; i < c->ngroups; i++) {
        free(c->groups[i].name);
        free(c->groups[i].e);
    }
    for (size_t i = 0; i < c->novr; i++) {
        free(c->ovr[i].spec);
        free(c->ovr[i].buf);
    }
    free(c->files);
    free(c->groups);
    free(c->names);
    free(c->ovr);
    free(c);
}

const char *const *rdv_conf_groups(const rdv_conf *c, size_t *n)
{
    *n = c->ngroups;
    return c->names;
}

/* A group absent from files and overrides has only defaults; say so rather
 * than return NULL into a caller's "%s". */
const char *rdv_conf_group_origin(const rdv_conf *c, const char *group, char *buf, size_t len)
{
    const struct group *g = group_find(c, group);
    if (!g)
        snprintf(buf, len, "defaults");
    else if (!g->file)
        snprintf(buf, len, "override");
    else
        snprintf(buf, len, "%s:%u", g->file, g->line);
    return buf;
}

const char *rdv_conf_setting_origin(const rdv_conf *c, const char *group, const char *key, char *buf, size_t len)
{
    const struct override *o = override_find(c, group, key);
    const struct entry *e = o ? NULL : entry_find(group_find(c, group), key);
    if (o)
        snprintf(buf, len, "override %s", o->spec);
    else if (e)
        snprintf(buf, len, "%s:%u", e->file, config_setting_source_line(e->val));
    else
        return rdv_conf_group_origin(c, group, buf, len);
    return buf;
}

/* ------------------------------------------------------------------ loading */

/* The rest of f, NUL-terminated, or NULL with err set. The buffer is the
 * file's size (not the cap: a freed 1 MiB block would raise glibc's mmap
 * threshold for the process's life, and later large blocks would come from
 * the heap, zeroed page by page); reading one byte more than fstat said
 * sees a file that grew meanwhile, and bounds memory all the same. */
static char *read_capped(FILE *f, const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
        failf(err, errlen, "%s: not a regular file (remove it from the conf directory)", path);
        return NULL;
    }
    size_t want = st.st_size < CONF_FILE_MAX ? (size_t)st.st_size + 1 : CONF_FILE_MAX + 1;
    char *buf = malloc(want + 1);
    if (!buf) {
        failf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    size_t n = fread(buf, 1, want, f);
    if (ferror(f))
        failf(err, errlen, "%s: read error: %s", path, strerror(errno));
    else if (n == want && want <= CONF_FILE_MAX)
        failf(err, errlen, "%s: changed while it was read (read it again: reload)", path);
    else if (n > CONF_FILE_MAX)
        failf(err, errlen, "%s: larger than %d bytes (conf files are limited to 1 MiB: split it)",
              path, CONF_FILE_MAX);
    else if (memchr(buf, '\0', n))
        failf(err, errlen, "%s: contains a NUL byte (not a text file?)", path);
    else {
        buf[n] = '\0';
        return buf;
    }
    free(buf);
    return NULL;
}

static char *read_text(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        failf(err, errlen, "%s: cannot open: %s (check the file's permissions)", path, strerror(errno));
        return NULL;
    }
    char *text = read_capped(f, path, err, errlen);
    fclose(f);
    return text;
}

static const char *skip_block_comment(const char *p, unsigned *line)
{
    for (; *p && !(p[0] == '*' && p[1] == '/'); p++)
        *line += *p == '\n';
    return *p ? p + 2 : p;
}

static const char *skip_string(const char *p, unsigned *line)
{
    for (; *p && *p != '"'; p++) {
        *line += *p == '\n';
        if (*p == '\\' && p[1])
            p++;
    }
    return *p ? p + 1 : p;
}

static int fail_narrow(const char *path, unsigned line, const char *num, int len, char *err, size_t errlen)
{
    return failf(err, errlen, "%s:%u: integer %.*s is too large for a plain libconfig integer, "
                 "which is 32-bit signed (write %.*sL)", path, line, len, num, len, num);
}

static int fail_wide(const char *path, unsigned line, const char *num, int len, char *err, size_t errlen)
{
    return failf(err, errlen, "%s:%u: integer %.*s does not fit in 64 bits", path, line, len, num);
}

/* Check the number token at p (sign or digit); *end is set past it. */
static int check_number(const char *path, unsigned line, const char *p, const char **end,
                        char *err, size_t errlen)
{
    const char *q = p + (*p == '+' || *p == '-');
    bool hex = q == p && q[0] == '0' && (q[1] == 'x' || q[1] == 'X') && isxdigit((unsigned char)q[2]);
    q = hex ? q + 2 + strspn(q + 2, "0123456789abcdefABCDEF") : q + strspn(q, "0123456789");
    if (!hex && (*q == '.' || ((*q == 'e' || *q == 'E') && q[1] && strchr("+-0123456789", q[1])))) {
        *end = q + strspn(q, ".0123456789eE+-"); /* a float: libconfig keeps it whole */
        return 0;
    }
    bool wide = *q == 'L';
    *end = q + (wide ? 1 + (q[1] == 'L') : 0);
    int len = (int)(q - p);
    errno = 0;
    if (hex) {
        unsigned long long v = strtoull(p, NULL, 16);
        if (errno == ERANGE)
            return fail_wide(path, line, p, len, err, errlen);
        return !wide && v > INT32_MAX ? fail_narrow(path, line, p, len, err, errlen) : 0;
    }
    long long v = strtoll(p, NULL, 10);
    if (errno == ERANGE)
        return fail_wide(path, line, p, len, err, errlen);
    return !wide && (v < INT32_MIN || v > INT32_MAX) ? fail_narrow(path, line, p, len, err, errlen) : 0;
}

/* libconfig 1.5 silently wraps an integer literal without the L suffix to 32
 * bits (and clamps L literals to 64): find such literals so they are errors.
 * Runs after a successful parse, skipping comments, strings and names as the
 * 1.5 scanner does. */
static int check_int_literals(const char *path, const char *p, char *err, size_t errlen)
{
    unsigned line = 1;
    while (*p) {
        if (*p == '\n') {
            line++;
            p++;
        } else if (p[0] == '/' && p[1] == '*') {
            p = skip_block_comment(p + 2, &line);
        } else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
            p += strcspn(p, "\n");
        } else if (*p == '"') {
            p = skip_string(p + 1, &line);
        } else if (isalpha((unsigned char)*p) || *p == '*') {
            p += 1 + strspn(p + 1, NAME_CHARS);
        } else if (*p == '.') {
            p += strspn(p, ".0123456789eE+-");
        } else if (isdigit((unsigned char)*p) || ((*p == '+' || *p == '-') && isdigit((unsigned char)p[1]))) {
            if (check_number(path, line, p, &p, err, errlen) < 0)
                return -1;
        } else {
            p++;
        }
    }
    return 0;
}

static const char *source_file(const config_setting_t *v, const char *fallback)
{
    const char *f = config_setting_source_file(v); /* set only inside an @include */
    return f ? f : fallback;
}

/* Add the keys of one top-level group to the index, refusing repeats. */
static int index_group(rdv_conf *c, const config_setting_t *top, const char *path, bool base, char *err,
                       size_t errlen)
{
    const char *file = source_file(top, path);
    struct group *g = group_get(c, config_setting_name(top), file, config_setting_source_line(top));
    if (!g)
        return failf(err, errlen, "%s: out of memory", path);
    for (int i = 0; i < config_setting_length(top); i++) {
        const config_setting_t *v = config_setting_get_elem(top, (unsigned)i);
        struct loc l = { .file = source_file(v, path), .line = config_setting_source_line(v),
                         .group = g->name, .key = config_setting_name(v) };
        struct entry *prev = (struct entry *)entry_find(g, l.key);
        if (prev && prev->base && !base) { /* a file over the base layer: its value wins */
            *prev = (struct entry){ .key = l.key, .val = v, .file = l.file };
            continue;
        }
        if (prev)
            return fail_at(&l, err, errlen, "set twice, first at %s:%u (keep one)", prev->file,
                           config_setting_source_line(prev->val));
        struct entry *es = grow(g->e, g->n, &g->cap, sizeof *es);
        if (!es)
            return fail_at(&l, err, errlen, "out of memory");
        g->e = es;
        es[g->n++] = (struct entry){ .key = l.key, .val = v, .file = l.file, .base = base };
    }
    return 0;
}

static int index_tree(rdv_conf *c, const struct conf_file *f, char *err, size_t errlen)
{
    const config_setting_t *root = config_root_setting(&f->tree);
    for (int i = 0; i < config_setting_length(root); i++) {
        const config_setting_t *top = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(top);
        if (!config_setting_is_group(top))
            return failf(err, errlen, "%s:%u: %s: top-level settings must be groups (put it inside "
                         "a module's group, e.g. core = { %s = ...; };)",
                         source_file(top, f->path), config_setting_source_line(top), name, name);
        if (index_group(c, top, f->path, f->base, err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* On error c may hold part of the file: callers discard c. */
int rdv_conf_load_file(rdv_conf *c, const char *path, char *err, size_t errlen)
{
    char *text = read_text(path, err, errlen);
    if (!text)
        return -1;
    int rc = rdv_conf_load_string(c, path, text, err, errlen);
    free(text);
    return rc;
}

static int load_text(rdv_conf *c, const char *path, const char *text, bool base, char *err, size_t errlen);

int rdv_conf_load_string(rdv_conf *c, const char *path, const char *text, char *err, size_t errlen)
{
    return load_text(c, path, text, false, err, errlen);
}

int rdv_conf_load_base(rdv_conf *c, const char *name, const char *text, char *err, size_t errlen)
{
    return load_text(c, name, text, true, err, errlen);
}

static int load_text(rdv_conf *c, const char *path, const char *text, bool base, char *err, size_t errlen)
{
    struct conf_file **files = grow(c->files, c->nfiles, &c->files_cap, sizeof *files);
    struct conf_file *f = calloc(1, sizeof *f);
    int rc = -1;
    if (files)
        c->files = files;
    if (!files || !f || !(f->path = strdup(path))) {
        free(f);
        failf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    config_init(&f->tree);
    f->base = base;
    files[c->nfiles++] = f;
    if (!config_read_string(&f->tree, text)) {
        const char *where = config_error_file(&f->tree), *why = config_error_text(&f->tree);
        /* libconfig's usual text is just "syntax error": say what to look for */
        if (!why || strcmp(why, "syntax error") == 0)
            failf(err, errlen, "%s:%d: syntax error (look on this line and the one before it for a missing ';', "
                  "',', ']', '}' or '\"')", where ? where : path, config_error_line(&f->tree));
        else
            failf(err, errlen, "%s:%d: syntax error: %s", where ? where : path, config_error_line(&f->tree), why);
        goto out;
    }
    if (check_int_literals(path, text, err, errlen) < 0)
        goto out;
    rc = index_tree(c, f, err, errlen);
out:
    return rc;
}

static int is_conf_name(const struct dirent *d)
{
    size_t len = strlen(d->d_name);
    return d->d_name[0] != '.' && len > 5 && strcmp(d->d_name + len - 5, ".conf") == 0;
}

static int by_strcmp(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

int rdv_conf_load_dir(rdv_conf *c, const char *dir, char *err, size_t errlen)
{
    struct dirent **ents;
    int n = scandir(dir, &ents, is_conf_name, by_strcmp);
    if (n < 0)
        return failf(err, errlen, "%s: cannot read the conf directory: %s (check the path given "
                     "with -c/--conf-dir and its permissions)", dir, strerror(errno));
    int rc = 0;
    if (n > CONF_FILES_MAX)
        rc = failf(err, errlen, "%s: %d .conf files, more than the limit of %d (merge some)",
                   dir, n, CONF_FILES_MAX);
    size_t dlen = strlen(dir);
    const char *sep = dlen && dir[dlen - 1] == '/' ? "" : "/";
    for (int i = 0; i < n && rc == 0; i++) {
        char *path;
        if (asprintf(&path, "%s%s%s", dir, sep, ents[i]->d_name) < 0) {
            rc = failf(err, errlen, "%s: out of memory", dir);
            break;
        }
        rc = rdv_conf_load_file(c, path, err, errlen);
        free(path);
    }
    for (int i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
    return rc;
}

/* A libconfig name: [A-Za-z*][-A-Za-z0-9_*]*. */
static bool is_name(const char *s, size_t len)
{
    return len > 0 && (isalpha((unsigned char)s[0]) || s[0] == '*') && strspn(s, NAME_CHARS) >= len;
}

/* Cut o->buf ("group.key=value", checked) into its parts and store o; a
 * later override of the same key replaces the earlier one. */
static int add_override(rdv_conf *c, struct override *o)
{
    char *dot = strchr(o->buf, '.'), *eq = strchr(o->buf, '=');
    *dot = *eq = '\0';
    o->group = o->buf;
    o->key = dot + 1;
    o->value = eq + 1;
    struct override *prev = override_find(c, o->group, o->key);
    if (prev) {
        free(prev->spec);
        free(prev->buf);
        *prev = *o;
        return 0;
    }
    struct override *os = grow(c->ovr, c->novr, &c->ovr_cap, sizeof *os);
    if (!os)
        return -1;
    c->ovr = os;
    if (!group_get(c, o->group, NULL, 0))
        return -1;
    os[c->novr++] = *o;
    return 0;
}

int rdv_conf_override(rdv_conf *c, const char *spec, char *err, size_t errlen)
{
    const char *dot = strchr(spec, '.'), *eq = strchr(spec, '=');
    if (!dot || !eq || dot > eq || !is_name(spec, (size_t)(dot - spec)) ||
        !is_name(dot + 1, (size_t)(eq - dot - 1)))
        return failf(err, errlen, "override %s: expected group.key=value (e.g. core.log_level=debug)", spec);
    struct override o = { .spec = strdup(spec), .buf = strdup(spec) };
    if (!o.spec || !o.buf || add_override(c, &o) < 0) {
        free(o.spec);
        free(o.buf);
        return failf(err, errlen, "override %s: out of memory", spec);
    }
    return 0;
}

/* ------------------------------------------------------------------ values */

static size_t cap_of(const rdv_setting *s)
{
    return s->max > 0 ? (size_t)s->max : STR_MAX_DEFAULT;
}

static void strlist_free(rdv_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    *l = (rdv_strlist){ 0 };
}

static int strlist_begin(const rdv_setting *s, size_t n, rdv_strlist *l, const struct loc *at,
                         char *err, size_t errlen)
{
    *l = (rdv_strlist){ 0 };
    if (n > cap_of(s))
        return fail_at(at, err, errlen, "%zu entries, more than the maximum of %zu", n, cap_of(s));
    if (n && !(l->v = calloc(n, sizeof *l->v)))
        return fail_at(at, err, errlen, "out of memory");
    return 0;
}

/* Append a copy of item[0..len); on error l is freed. */
static int strlist_add(rdv_strlist *l, const char *item, size_t len, const struct loc *at,
                       char *err, size_t errlen)
{
    if (len > STR_MAX_DEFAULT) {
        strlist_free(l);
        return fail_at(at, err, errlen, "entry [%zu] is %zu bytes long, more than the maximum of %d",
                       l->n, len, STR_MAX_DEFAULT);
    }
    if (!(l->v[l->n] = strndup(item, len))) {
        strlist_free(l);
        return fail_at(at, err, errlen, "out of memory");
    }
    l->n++;
    return 0;
}

static int store_int(const rdv_setting *s, int64_t v, void *cfg, const struct loc *at, char *err, size_t errlen)
{
    if ((s->min || s->max) && (v < s->min || v > s->max))
        return fail_at(at, err, errlen, "%" PRId64 " is out of range %" PRId64 "..%" PRId64, v, s->min, s->max);
    *FIELD(s, cfg, int64_t) = v;
    return 0;
}

static int store_double(const rdv_setting *s, double v, void *cfg, const struct loc *at, char *err, size_t errlen)
{
    if (!isfinite(v))
        return fail_at(at, err, errlen, "%g is not a finite number", v);
    if ((s->dmin != 0 || s->dmax != 0) && (v < s->dmin || v > s->dmax))
        return fail_at(at, err, errlen, "%g is out of range %g..%g", v, s->dmin, s->dmax);
    *FIELD(s, cfg, double) = v;
    return 0;
}

static int store_string(const rdv_setting *s, const char *v, void *cfg, const struct loc *at, char *err, size_t errlen)
{
    size_t len = strlen(v);
    if (len > cap_of(s))
        return fail_at(at, err, errlen, "string of %zu bytes, more than the maximum of %zu", len, cap_of(s));
    char *dup = strdup(v);
    if (!dup)
        return fail_at(at, err, errlen, "out of memory");
    char **f = FIELD(s, cfg, char *);
    free(*f);
    *f = dup;
    return 0;
}

static void store_strlist(const rdv_setting *s, rdv_strlist *l, void *cfg)
{
    rdv_strlist *f = FIELD(s, cfg, rdv_strlist);
    strlist_free(f);
    *f = *l;
}

/* -- from libconfig values */

static const char *type_name(int type)
{
    switch (type) {
    case CONFIG_TYPE_GROUP: return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a floating-point number";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array";
    case CONFIG_TYPE_LIST: return "a list";
    default: return "nothing";
    }
}

/* A table bug, not a configuration error. */
static int fail_bad_type(const rdv_setting *s, const struct loc *at, char *err, size_t errlen)
{
    return fail_at(at, err, errlen, "setting '%s' has unknown type %d in its module's table", s->name, (int)s->type);
}

static int fail_type(const rdv_setting *s, const config_setting_t *v, const struct loc *at,
                     char *err, size_t errlen)
{
    static const struct { const char *what, *fix; } want[] = {
        [RDV_SET_INT] = { "an integer", "write a whole number without quotes" },
        [RDV_SET_BOOL] = { "a boolean", "write true or false without quotes" },
        [RDV_SET_DOUBLE] = { "a number", "write a number without quotes" },
        [RDV_SET_STRING] = { "a string", "put the value in double quotes" },
        [RDV_SET_STRLIST] = { "a list of strings", "write [ \"a\", \"b\" ]" },
    };
    return fail_at(at, err, errlen, "expected %s, got %s (%s)", want[s->type].what,
                   type_name(config_setting_type(v)), want[s->type].fix);
}

static int is_int(const config_setting_t *v)
{
    return config_setting_type(v) == CONFIG_TYPE_INT || config_setting_type(v) == CONFIG_TYPE_INT64;
}

static int strlist_from_setting(const rdv_setting *s, const config_setting_t *v, rdv_strlist *l,
                                const struct loc *at, char *err, size_t errlen)
{
    if (config_setting_type(v) == CONFIG_TYPE_STRING) { /* a lone string is a one-entry list */
        const char *str = config_setting_get_string(v);
        return strlist_begin(s, 1, l, at, err, errlen) < 0 ? -1 : strlist_add(l, str, strlen(str), at, err, errlen);
    }
    if (!config_setting_is_array(v) && !config_setting_is_list(v))
        return fail_type(s, v, at, err, errlen);
    size_t n = (size_t)config_setting_length(v);
    if (strlist_begin(s, n, l, at, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(v, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            strlist_free(l);
            return fail_at(at, err, errlen, "expected a list of strings, entry [%zu] is %s (quote it)",
                           i, type_name(config_setting_type(e)));
        }
        const char *str = config_setting_get_string(e);
        if (strlist_add(l, str, strlen(str), at, err, errlen) < 0)
            return -1;
    }
    return 0;
}

static int set_from_setting(const rdv_setting *s, const config_setting_t *v, void *cfg,
                            const struct loc *at, char *err, size_t errlen)
{
    int type = config_setting_type(v);
    rdv_strlist l;
    switch (s->type) {
    case RDV_SET_INT:
        if (!is_int(v))
            break;
        return store_int(s, config_setting_get_int64(v), cfg, at, err, errlen);
    case RDV_SET_BOOL:
        if (type != CONFIG_TYPE_BOOL)
            break;
        *FIELD(s, cfg, bool) = config_setting_get_bool(v);
        return 0;
    case RDV_SET_DOUBLE:
        if (is_int(v))
            return store_double(s, (double)config_setting_get_int64(v), cfg, at, err, errlen);
        if (type != CONFIG_TYPE_FLOAT)
            break;
        return store_double(s, config_setting_get_float(v), cfg, at, err, errlen);
    case RDV_SET_STRING:
        if (type != CONFIG_TYPE_STRING)
            break;
        return store_string(s, config_setting_get_string(v), cfg, at, err, errlen);
    case RDV_SET_STRLIST:
        if (strlist_from_setting(s, v, &l, at, err, errlen) < 0)
            return -1;
        store_strlist(s, &l, cfg);
        return 0;
    default:
        return fail_bad_type(s, at, err, errlen);
    }
    return fail_type(s, v, at, err, errlen);
}

/* -- from text (overrides, launchers) */

static int parse_int(const rdv_setting *s, const char *text, void *cfg, const struct loc *at,
                     char *err, size_t errlen)
{
    const char *digits = text + (*text == '-' || *text == '+');
    int base = digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X') ? 16 : 10; /* never octal */
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, base);
    if (!*text || isspace((unsigned char)*text) || *end)
        return fail_at(at, err, errlen, "\"%s\" is not an integer (write e.g. 42 or 0x2a)", text);
    if (errno == ERANGE)
        return fail_at(at, err, errlen, "%s does not fit in 64 bits", text);
    return store_int(s, v, cfg, at, err, errlen);
}

static int parse_bool(const rdv_setting *s, const char *text, void *cfg, const struct loc *at,
                      char *err, size_t errlen)
{
    static const char *const yes[] = { "true", "yes", "on", "1", "y" }, *const no[] = { "false", "no", "off", "0", "n" };
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (strcasecmp(text, yes[i]) == 0 || strcasecmp(text, no[i]) == 0) {
            *FIELD(s, cfg, bool) = strcasecmp(text, yes[i]) == 0;
            return 0;
        }
    }
    return fail_at(at, err, errlen, "\"%s\" is not a boolean (use true/false, yes/no, y/n, on/off or 1/0)", text);
}

static int parse_double(const rdv_setting *s, const char *text, void *cfg, const struct loc *at,
                        char *err, size_t errlen)
{
    char *end;
    double v = strtod(text, &end);
    if (!*text || isspace((unsigned char)*text) || *end)
        return fail_at(at, err, errlen, "\"%s\" is not a number (write e.g. 1.5)", text);
    return store_double(s, v, cfg, at, err, errlen);
}

/* Comma-separated, blanks around entries dropped; "" is the empty list. */
static int parse_strlist(const rdv_setting *s, const char *text, void *cfg, const struct loc *at,
                         char *err, size_t errlen)
{
    size_t n = *text != '\0';
    for (const char *p = text; *p; p++)
        n += *p == ',';
    rdv_strlist l;
    if (strlist_begin(s, n, &l, at, err, errlen) < 0)
        return -1;
    for (const char *p = text; l.n < n; p++) {
        size_t len = strcspn(p, ",");
        const char *b = p, *e = p + len;
        while (b < e && isspace((unsigned char)*b))
            b++;
        while (e > b && isspace((unsigned char)e[-1]))
            e--;
        if (b == e) {
            strlist_free(&l);
            return fail_at(at, err, errlen, "empty entry in \"%s\" (remove the extra comma)", text);
        }
        if (strlist_add(&l, b, (size_t)(e - b), at, err, errlen) < 0)
            return -1;
        p += len;
    }
    store_strlist(s, &l, cfg);
    return 0;
}

static int set_from_text(const rdv_setting *s, const char *text, void *cfg, const struct loc *at,
                         char *err, size_t errlen)
{
    switch (s->type) {
    case RDV_SET_INT: return parse_int(s, text, cfg, at, err, errlen);
    case RDV_SET_BOOL: return parse_bool(s, text, cfg, at, err, errlen);
    case RDV_SET_DOUBLE: return parse_double(s, text, cfg, at, err, errlen);
    case RDV_SET_STRING: return store_string(s, text, cfg, at, err, errlen);
    case RDV_SET_STRLIST: return parse_strlist(s, text, cfg, at, err, errlen);
    }
    return fail_bad_type(s, at, err, errlen);
}

/* cfg must be zeroed or filled (an old string or list is freed). The message
 * has no location: callers prefix their own. */
int rdv_conf_parse_value(const rdv_setting *s, const char *text, void *cfg, char *err, size_t errlen)
{
    return set_from_text(s, text, cfg, NULL, err, errlen);
}

/* ------------------------------------------------------------------ filling */

static const rdv_setting *setting_find(const rdv_setting *tbl, const char *name)
{
    for (const rdv_setting *s = tbl; s && s->name; s++)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static bool is_skipped(const char *const *skip, const char *key)
{
    for (; skip && *skip; skip++)
        if (strcmp(*skip, key) == 0)
            return true;
    return false;
}

/* Defaults into a zeroed struct. */
static int set_defaults(const rdv_setting *tbl, void *cfg, char *err, size_t errlen)
{
    for (const rdv_setting *s = tbl; s && s->name; s++) {
        switch (s->type) {
        case RDV_SET_INT: *FIELD(s, cfg, int64_t) = s->idef; break;
        case RDV_SET_BOOL: *FIELD(s, cfg, bool) = s->idef != 0; break;
        case RDV_SET_DOUBLE: *FIELD(s, cfg, double) = s->ddef; break;
        case RDV_SET_STRING:
            if (!(*FIELD(s, cfg, char *) = strdup(s->sdef ? s->sdef : "")))
                return failf(err, errlen, "out of memory");
            break;
        case RDV_SET_STRLIST: break;
        }
    }
    return 0;
}

static int set_member(const rdv_setting *tbl, const config_setting_t *v, void *cfg, const struct loc *at,
                      char *err, size_t errlen)
{
    const rdv_setting *s = setting_find(tbl, at->key);
    return s ? set_from_setting(s, v, cfg, at, err, errlen) : fail_unknown(at, tbl, err, errlen);
}

static int fill_from_overrides(const rdv_conf *c, const char *group, const rdv_setting *tbl,
                               const char *const *skip, void *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->novr; i++) {
        const struct override *o = &c->ovr[i];
        if (strcmp(o->group, group) != 0 || is_skipped(skip, o->key))
            continue;
        struct loc l = { .ovr = o->spec, .group = group, .key = o->key };
        const rdv_setting *s = setting_find(tbl, o->key);
        if (!s)
            return fail_unknown(&l, tbl, err, errlen);
        if (set_from_text(s, o->value, cfg, &l, err, errlen) < 0)
            return -1;
    }
    return 0;
}

int rdv_conf_fill(const rdv_conf *c, const char *group, const rdv_setting *tbl,
                  const char *const *skip, void *cfg, char *err, size_t errlen)
{
    if (set_defaults(tbl, cfg, err, errlen) < 0)
        goto fail;
    const struct group *g = group_find(c, group);
    for (size_t i = 0; g && i < g->n; i++) {
        const struct entry *e = &g->e[i];
        if (is_skipped(skip, e->key))
            continue;
        struct loc l = { .file = e->file, .line = config_setting_source_line(e->val), .group = group, .key = e->key };
        if (set_member(tbl, e->val, cfg, &l, err, errlen) < 0)
            goto fail;
    }
    if (fill_from_overrides(c, group, tbl, skip, cfg, err, errlen) < 0)
        goto fail;
    return 0;
fail:
    rdv_conf_release(tbl, cfg);
    return -1;
}

/* One element of a list of groups; at names the element. */
static int fill_element(const rdv_setting *tbl, const config_setting_t *elem, const char *file,
                        void *cfg, struct loc at, char *err, size_t errlen)
{
    at.line = config_setting_source_line(elem);
    if (!config_setting_is_group(elem))
        return fail_at(&at, err, errlen, "expected a group { ... }, got %s", type_name(config_setting_type(elem)));
    if (set_defaults(tbl, cfg, err, errlen) < 0)
        return -1;
    for (int i = 0; i < config_setting_length(elem); i++) {
        const config_setting_t *v = config_setting_get_elem(elem, (unsigned)i);
        at.file = source_file(v, file);
        at.line = config_setting_source_line(v);
        at.key = config_setting_name(v);
        if (set_member(tbl, v, cfg, &at, err, errlen) < 0)
            return -1;
    }
    return 0;
}

int rdv_conf_fill_list(const rdv_conf *c, const char *group, const char *key,
                       const rdv_setting *elem_tbl, size_t elem_size,
                       void **arr, size_t *n, char *err, size_t errlen)
{
    *arr = NULL;
    *n = 0;
    const struct override *o = override_find(c, group, key);
    if (o)
        return failf(err, errlen, "override %s: %s.%s: a list of groups cannot be overridden (set it in a conf file)",
                     o->spec, group, key);
    const struct entry *e = entry_find(group_find(c, group), key);
    if (!e)
        return 0;
    struct loc at = { .file = e->file, .line = config_setting_source_line(e->val), .group = group, .key = key };
    if (!config_setting_is_list(e->val))
        return fail_at(&at, err, errlen, "expected a list of groups, got %s (write ( { ... }, { ... } ))",
                       type_name(config_setting_type(e->val)));
    size_t count = (size_t)config_setting_length(e->val);
    if (count == 0)
        return 0;
    char *a = calloc(count, elem_size);
    if (!a)
        return fail_at(&at, err, errlen, "out of memory");
    for (size_t i = 0; i < count; i++) {
        struct loc el = { .file = e->file, .group = group, .list = key, .index = i };
        if (fill_element(elem_tbl, config_setting_get_elem(e->val, (unsigned)i), e->file,
                         a + i * elem_size, el, err, errlen) < 0) {
            rdv_conf_release_list(elem_tbl, elem_size, a, count);
            return -1;
        }
    }
    *arr = a;
    *n = count;
    return 0;
}

void rdv_conf_release_list(const rdv_setting *elem_tbl, size_t elem_size, void *arr, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rdv_conf_release(elem_tbl, (char *)arr + i * elem_size);
    free(arr);
}

/* ------------------------------------------------------------------ whole structs */

/* Leaves strings NULL and lists empty, so releasing twice is harmless. */
void rdv_conf_release(const rdv_setting *tbl, void *cfg)
{
    for (const rdv_setting *s = tbl; s && s->name; s++) {
        if (s->type == RDV_SET_STRING) {
            free(*FIELD(s, cfg, char *));
            *FIELD(s, cfg, char *) = NULL;
        } else if (s->type == RDV_SET_STRLIST) {
            strlist_free(FIELD(s, cfg, rdv_strlist));
        }
    }
}

static int copy_field(const rdv_setting *s, void *dst, const void *src)
{
    switch (s->type) {
    case RDV_SET_INT: *FIELD(s, dst, int64_t) = *CFIELD(s, src, int64_t); return 0;
    case RDV_SET_BOOL: *FIELD(s, dst, bool) = *CFIELD(s, src, bool); return 0;
    case RDV_SET_DOUBLE: *FIELD(s, dst, double) = *CFIELD(s, src, double); return 0;
    case RDV_SET_STRING: {
        const char *v = *CFIELD(s, src, char *);
        return v && !(*FIELD(s, dst, char *) = strdup(v)) ? -ENOMEM : 0;
    }
    case RDV_SET_STRLIST: {
        const rdv_strlist *from = CFIELD(s, src, rdv_strlist);
        rdv_strlist *to = FIELD(s, dst, rdv_strlist);
        if (from->n && !(to->v = calloc(from->n, sizeof *to->v)))
            return -ENOMEM;
        for (; to->n < from->n; to->n++)
            if (!(to->v[to->n] = strdup(from->v[to->n])))
                return -ENOMEM;
        return 0;
    }
    }
    return 0;
}

int rdv_conf_copy(const rdv_setting *tbl, void *dst, const void *src)
{
    for (const rdv_setting *s = tbl; s && s->name; s++) {
        if (copy_field(s, dst, src) < 0) {
            rdv_conf_release(tbl, dst);
            return -ENOMEM;
        }
    }
    return 0;
}

static bool same_value(const rdv_setting *s, const void *a, const void *b)
{
    switch (s->type) {
    case RDV_SET_INT: return *CFIELD(s, a, int64_t) == *CFIELD(s, b, int64_t);
    case RDV_SET_BOOL: return *CFIELD(s, a, bool) == *CFIELD(s, b, bool);
    case RDV_SET_DOUBLE: return *CFIELD(s, a, double) == *CFIELD(s, b, double);
    case RDV_SET_STRING: {
        const char *x = *CFIELD(s, a, char *), *y = *CFIELD(s, b, char *);
        return strcmp(x ? x : "", y ? y : "") == 0;
    }
    case RDV_SET_STRLIST: {
        const rdv_strlist *x = CFIELD(s, a, rdv_strlist), *y = CFIELD(s, b, rdv_strlist);
        if (x->n != y->n)
            return false;
        for (size_t i = 0; i < x->n; i++)
            if (strcmp(x->v[i], y->v[i]) != 0)
                return false;
        return true;
    }
    }
    return true;
}

const rdv_setting *rdv_conf_nonreloadable_change(const rdv_setting *tbl, const void *a, const void *b)
{
    for (const rdv_setting *s = tbl; s && s->name; s++)
        if (!(s->flags & RDV_SETF_RELOAD) && !same_value(s, a, b))
            return s;
    return NULL;
}

/* ------------------------------------------------------------------ printing */

static void print_string(FILE *f, const char *v)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\x%02x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* The shortest form that reads back to the same double, always with a '.'
 * or an exponent so that libconfig reads a float. */
static void print_double(FILE *f, double v)
{
    char buf[64];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    fprintf(f, "%s%s", buf, strpbrk(buf, ".eE") ? "" : ".0");
}

static bool is_empty(const rdv_setting *s, const void *cfg)
{
    if (s->type == RDV_SET_STRING)
        return !*CFIELD(s, cfg, char *) || !**CFIELD(s, cfg, char *);
    return s->type == RDV_SET_STRLIST && CFIELD(s, cfg, rdv_strlist)->n == 0;
}

static void print_value(FILE *f, const rdv_setting *s, const void *cfg)
{
    /* An unset secret prints as such: "<redacted>" would suggest it is set. */
    if ((s->flags & RDV_SETF_SECRET) && !is_empty(s, cfg)) {
        fputs("\"<redacted>\"", f);
        return;
    }
    switch (s->type) {
    case RDV_SET_INT: {
        int64_t v = *CFIELD(s, cfg, int64_t);
        fprintf(f, "%" PRId64 "%s", v, v < INT32_MIN || v > INT32_MAX ? "L" : "");
        break;
    }
    case RDV_SET_BOOL: fputs(*CFIELD(s, cfg, bool) ? "true" : "false", f); break;
    case RDV_SET_DOUBLE: print_double(f, *CFIELD(s, cfg, double)); break;
    case RDV_SET_STRING: print_string(f, *CFIELD(s, cfg, char *) ? *CFIELD(s, cfg, char *) : ""); break;
    case RDV_SET_STRLIST: {
        const rdv_strlist *l = CFIELD(s, cfg, rdv_strlist);
        fputs("[", f);
        for (size_t i = 0; i < l->n; i++) {
            fputs(i ? ", " : " ", f);
            print_string(f, l->v[i]);
        }
        fputs(" ]", f);
        break;
    }
    }
}

/* "  # help", on one line whatever the help text holds. */
static void print_help(FILE *f, const char *help)
{
    if (!help || !*help)
        return;
    fputs("  # ", f);
    for (const unsigned char *p = (const unsigned char *)help; *p; p++)
        fputc(*p < 0x20 ? ' ' : *p, f);
}

static void print_settings(FILE *f, const rdv_setting *tbl, const void *cfg, const char *indent, bool comments)
{
    for (const rdv_setting *s = tbl; s && s->name; s++) {
        fprintf(f, "%s%s = ", indent, s->name);
        print_value(f, s, cfg);
        fputc(';', f);
        if (comments)
            print_help(f, s->help);
        fputc(comments ? '\n' : ' ', f);
    }
}

void rdv_conf_print(FILE *f, const char *group, const rdv_setting *tbl, const void *cfg)
{
    rdv_conf_print_with_list(f, group, tbl, cfg, NULL, NULL, 0, NULL, 0);
}

void rdv_conf_print_with_list(FILE *f, const char *group, const rdv_setting *tbl, const void *cfg,
                              const char *key, const rdv_setting *elem_tbl, size_t elem_size,
                              const void *arr, size_t n)
{
    fprintf(f, "%s = {\n", group);
    print_settings(f, tbl, cfg, "  ", true);
    if (key) {
        fprintf(f, "  %s = (", key);
        for (size_t i = 0; i < n; i++) {
            fputs(i ? ",\n    { " : "\n    { ", f);
            print_settings(f, elem_tbl, (const char *)arr + i * elem_size, "", false);
            fputc('}', f);
        }
        fputs(n ? "\n  );\n" : " );\n", f);
    }
    fputs("};\n", f);
}
