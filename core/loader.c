/* core/loader.c — find, dlopen, check, sort and initialise modules. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server.h"

/* The directories searched when core.module_path is empty. An rdvd inside
 * its build tree uses that tree's modules; any other (installed) rdvd the
 * install's, found from the binary's own place (<prefix>/bin/rdvd ->
 * <prefix>/<libdir>/rdvd/modules, so an install under any prefix works),
 * then the directory configured at build time. Never the build tree for an
 * installed binary: a stale or half-built module there would win. */
const char *rdv_module_dirs(const char *module_path, char *buf, size_t len)
{
    if (module_path && *module_path) {
        snprintf(buf, len, "%s", module_path);
        return buf;
    }
    char exe[PATH_MAX], build[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    size_t bl = realpath(RDV_BUILD_BIN_DIR, build) ? strlen(build) : 0;
    if (bl && strncmp(exe, build, bl) == 0 && exe[bl] == '/') {
        snprintf(buf, len, "%s", RDV_BUILD_MODULE_DIR);
        return buf;
    }
    /* exe's directory, and it must end in /<bindir> for the prefix to be known */
    char *slash = strrchr(exe, '/');
    size_t dl = slash ? (size_t)(slash - exe) : 0, bdl = strlen(RDV_INSTALL_BINDIR);
    if (dl > bdl && exe[dl - bdl - 1] == '/' && strncmp(exe + dl - bdl, RDV_INSTALL_BINDIR, bdl) == 0 &&
        strcmp(RDV_INSTALL_MODULE_SUBDIR, "") != 0) {
        char own[PATH_MAX + 64];
        snprintf(own, sizeof own, "%.*s/%s", (int)(dl - bdl - 1), exe, RDV_INSTALL_MODULE_SUBDIR);
        if (strcmp(own, RDV_INSTALL_MODULE_DIR) != 0) {
            snprintf(buf, len, "%s:%s", own, RDV_INSTALL_MODULE_DIR);
            return buf;
        }
    }
    snprintf(buf, len, "%s", RDV_INSTALL_MODULE_DIR);
    return buf;
}

/* Path of the first <name>.so in dirs (':'-separated), or "" when none. */
static const char *module_file(const char *dirs, const char *name, char *path, size_t len)
{
    for (const char *d = dirs; *d;) {
        size_t dl = strcspn(d, ":");
        if (dl) {
            snprintf(path, len, "%.*s/%s.so", (int)dl, d, name);
            if (access(path, F_OK) == 0)
                return path;
        }
        d += dl + (d[dl] == ':');
    }
    path[0] = '\0';
    return path;
}

bool rdv_module_exists(const char *module_path, const char *name)
{
    char dirs[2 * PATH_MAX + 64], path[PATH_MAX + 256];
    return *module_file(rdv_module_dirs(module_path, dirs, sizeof dirs), name, path, sizeof path) != '\0';
}

static int find_module(rdv_server *s, const char *name, char **path_out, void **dl, char *err, size_t errlen)
{
    char dirs[2 * PATH_MAX + 64], path[PATH_MAX + 256];
    rdv_module_dirs(s->cfg.module_path, dirs, sizeof dirs);
    if (!*module_file(dirs, name, path, sizeof path)) {
        snprintf(err, errlen, "module '%s' (core.modules): no %s.so in %s (set core.module_path)", name, name, dirs);
        return -ENOENT;
    }
    *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!*dl) {
        snprintf(err, errlen, "module '%s': cannot load %s: %s", name, path, dlerror());
        return -ELIBBAD;
    }
    *path_out = strdup(path);
    return *path_out ? 0 : -ENOMEM;
}

static int check_descriptor(const rdv_module *d, const char *name, const char *path, char *err, size_t errlen)
{
    if (!d) {
        snprintf(err, errlen, "module '%s' (%s): %s() returned NULL", name, path, RDV_MODULE_SYMBOL);
        return -EINVAL;
    }
    if (d->abi_major != RDV_ABI_MAJOR || d->abi_minor > RDV_ABI_MINOR) {
        snprintf(err, errlen,
                 "module '%s' (%s) was built for module ABI %u.%u but this rdvd provides %u.%u "
                 "(major must match, minor must not be newer): rebuild the module against these headers",
                 name, path, d->abi_major, d->abi_minor, RDV_ABI_MAJOR, RDV_ABI_MINOR);
        return -EPROTO;
    }
    if (!d->name || strcmp(d->name, name) != 0) {
        snprintf(err, errlen, "module file %s calls itself '%s', expected '%s'", path, d->name ? d->name : "(null)", name);
        return -EINVAL;
    }
    if (d->config_size && !d->settings) {
        snprintf(err, errlen, "module '%s': config_size without a settings table", name);
        return -EINVAL;
    }
    return 0;
}

/* A validate message that starts "<module>.<setting>" (the convention of
 * docs/MODULES.md) names that setting: copy its name to key, so the error
 * can point at the line that set it rather than at the group. */
static bool why_setting(const rdv_module *d, const char *why, char *key, size_t keylen)
{
    size_t nl = strlen(d->name);
    if (strncmp(why, d->name, nl) != 0 || why[nl] != '.')
        return false;
    const char *k = why + nl + 1;
    size_t kl = strspn(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
    if (kl == 0 || kl >= keylen)
        return false;
    for (const rdv_setting *st = d->settings; st && st->name; st++)
        if (strlen(st->name) == kl && strncmp(st->name, k, kl) == 0) {
            memcpy(key, k, kl);
            key[kl] = '\0';
            return true;
        }
    return false;
}

/* err = where the setting (or group) is, then why. */
static void settings_error(const rdv_conf *conf, const rdv_module *d, const char *why, char *err, size_t errlen)
{
    char where[256], key[64];
    if (why_setting(d, why, key, sizeof key))
        snprintf(err, errlen, "%s: %s", rdv_conf_setting_origin(conf, d->name, key, where, sizeof where), why);
    else
        snprintf(err, errlen, "%s: %s: %s", rdv_conf_group_origin(conf, d->name, where, sizeof where), d->name, why);
}

int rdv_mod_check(const rdv_conf *conf, rdv_mod *m, void *state, const void *cfg, char *err, size_t errlen)
{
    int (*check)(rdv_core *, void *, const void *, char *, size_t) = RDV_MODULE_CHECK(m->desc);
    char why[512] = "";
    if (!check || check(&m->handle, state, cfg, why, sizeof why) >= 0)
        return 0;
    settings_error(conf, m->desc, why[0] ? why : "refused by the module's check", err, errlen);
    return -EINVAL;
}

int rdv_mod_fill_config(rdv_server *s, const rdv_conf *conf, const rdv_module *d, void **cfg, char *err, size_t errlen)
{
    (void)s;
    *cfg = NULL;
    if (!d->settings)
        return 0;
    void *c = calloc(1, d->config_size ? d->config_size : 1);
    if (!c)
        return -ENOMEM;
    if (rdv_conf_fill(conf, d->name, d->settings, NULL, c, err, errlen) < 0) {
        free(c);
        return -EINVAL;
    }
    if (d->validate) {
        char why[512] = "";
        if (d->validate(c, why, sizeof why) < 0) {
            settings_error(conf, d, why, err, errlen);
            rdv_conf_release(d->settings, c);
            free(c);
            return -EINVAL;
        }
    }
    *cfg = c;
    return 0;
}

static const rdv_mod *provider_of(rdv_mod **mods, size_t n, const char *svc, uint32_t ver)
{
    for (size_t i = 0; i < n; i++)
        for (const rdv_dep *p = mods[i]->desc->provides; p && p->name; p++)
            if (strcmp(p->name, svc) == 0 && p->version >= ver)
                return mods[i];
    return NULL;
}

/* Stable topological sort (Kahn): a module comes after every provider of a
 * service it requires; ties keep the configured order. */
int rdv_sort_modules(rdv_mod **mods, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        for (const rdv_dep *r = mods[i]->desc->requires; r && r->name; r++)
            if (!r->optional && !provider_of(mods, n, r->name, r->version)) {
                snprintf(err, errlen,
                         "module '%s' requires service '%s' (version >= %u) but no loaded module provides it: "
                         "add its provider (e.g. the module named like the service) to core.modules",
                         mods[i]->desc->name, r->name, r->version);
                return -ENOENT;
            }
    rdv_mod **out = calloc(n ? n : 1, sizeof *out);
    bool *done = calloc(n ? n : 1, sizeof *done);
    if (!out || !done) {
        free(out), free(done);
        return -ENOMEM;
    }
    size_t k = 0;
    while (k < n) {
        bool progress = false;
        for (size_t i = 0; i < n; i++) {
            if (done[i])
                continue;
            bool ready = true;
            for (const rdv_dep *r = mods[i]->desc->requires; ready && r && r->name; r++)
                for (size_t j = 0; j < n; j++)
                    if (!done[j] && j != i && provider_of(&mods[j], 1, r->name, r->version))
                        ready = false;
            if (ready) {
                out[k++] = mods[i];
                done[i] = true;
                progress = true;
                break; /* restart from the top: keeps configured order for ties */
            }
        }
        if (!progress) {
            size_t off = (size_t)snprintf(err, errlen, "module dependency cycle among:");
            for (size_t i = 0; i < n && off < errlen; i++)
                if (!done[i])
                    off += (size_t)snprintf(err + off, errlen - off, " %s", mods[i]->desc->name);
            if (off < errlen)
                snprintf(err + off, errlen - off, " (each requires a service another provides)");
            free(out), free(done);
            return -ELOOP;
        }
    }
    memcpy(mods, out, n * sizeof *mods);
    free(out), free(done);
    return 0;
}

static void mod_free(rdv_mod *m)
{
    if (!m)
        return;
    if (m->cfg) {
        rdv_conf_release(m->desc->settings, m->cfg);
        free(m->cfg);
    }
    /* No dlclose: code is never unloaded at runtime (ARCHITECTURE.md §3);
     * at exit the process goes away anyway. */
    free(m->path);
    free(m);
}

/* Length of path's directory part. */
static size_t dir_len(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? (size_t)(slash - path) : 0;
}

int rdv_load_modules(rdv_server *s, char *err, size_t errlen)
{
    const rdv_strlist *names = &s->cfg.modules;
    s->mods = calloc(names->n ? names->n : 1, sizeof *s->mods);
    if (!s->mods)
        return -ENOMEM;
    for (size_t i = 0; i < names->n; i++) {
        const char *name = names->v[i];
        for (size_t j = 0; j < i; j++)
            if (strcmp(names->v[j], name) == 0) {
                snprintf(err, errlen, "core.modules lists '%s' twice", name);
                return -EINVAL;
            }
        rdv_mod *m = calloc(1, sizeof *m);
        if (!m)
            return -ENOMEM;
        s->mods[s->nmods++] = m;
        m->srv = s;
        m->handle.api = &rdv_api_table;
        int r = find_module(s, name, &m->path, &m->dl, err, errlen);
        if (r < 0)
            return r;
        rdv_module_get_fn get = (rdv_module_get_fn)(uintptr_t)dlsym(m->dl, RDV_MODULE_SYMBOL);
        if (!get) {
            snprintf(err, errlen, "module '%s' (%s) does not export %s(): is it an rdvd module?", name, m->path,
                     RDV_MODULE_SYMBOL);
            return -EINVAL;
        }
        m->desc = get();
        if ((r = check_descriptor(m->desc, name, m->path, err, errlen)) < 0) {
            m->desc = NULL;
            return r;
        }
        if ((r = rdv_mod_fill_config(s, s->conf, m->desc, &m->cfg, err, errlen)) < 0 ||
            (r = rdv_mod_check(s->conf, m, NULL, m->cfg, err, errlen)) < 0)
            return r;
    }
    for (size_t i = 0; i < s->nmods; i++) { /* one line per directory modules came from */
        size_t dl = dir_len(s->mods[i]->path);
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = dir_len(s->mods[j]->path) == dl && strncmp(s->mods[j]->path, s->mods[i]->path, dl) == 0;
        if (!seen)
            rdv_logf("core", RDV_LOG_INFO, "modules from %.*s", (int)dl, s->mods[i]->path);
    }
    int r = rdv_sort_modules(s->mods, s->nmods, err, errlen);
    if (r < 0)
        return r;
    for (size_t i = 0; i < s->nmods; i++)
        if ((r = rdv_dispatch_register(s, s->mods[i], err, errlen)) < 0)
            return r;
    return 0;
}

void rdv_mod_failed(const char *name, const char *what, int r, unsigned long errors_before, char *err, size_t errlen)
{
    if (rdv_log_errors() != errors_before) /* it said why: its errno would only confuse */
        snprintf(err, errlen, "module '%s' failed to %s (the reason is on the line above)", name, what);
    else
        snprintf(err, errlen, "module '%s' failed to %s: %s", name, what, strerror(-r));
}

int rdv_init_modules(rdv_server *s, char *err, size_t errlen)
{
    int r;
    for (size_t i = 0; i < s->nmods; i++) {
        rdv_mod *m = s->mods[i];
        unsigned long errors = rdv_log_errors();
        if (m->desc->init && (r = m->desc->init(&m->handle, m->cfg, &m->state)) < 0) {
            rdv_mod_failed(m->desc->name, "initialise", r, errors, err, errlen);
            return r;
        }
        m->inited = true;
    }
    return 0;
}

void rdv_unload_modules(rdv_server *s)
{
    for (size_t i = s->nmods; i-- > 0;) {
        rdv_mod *m = s->mods[i];
        if (m && m->desc && m->inited && m->desc->destroy)
            m->desc->destroy(m->state);
    }
    for (size_t i = 0; i < s->nmods; i++)
        mod_free(s->mods[i]);
    free(s->mods);
    s->mods = NULL;
    s->nmods = 0;
}
