/* core/loader.c — find, dlopen, check, sort and initialise modules. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server.h"

static int try_open(const char *dir, const char *name, char **path_out, void **dl, char *dlerr, size_t dlerrlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.so", dir, name);
    if (access(path, F_OK) != 0)
        return -ENOENT;
    *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!*dl) {
        snprintf(dlerr, dlerrlen, "%s", dlerror());
        return -ELIBBAD;
    }
    *path_out = strdup(path);
    return 0;
}

/* Search core.module_path (':'-separated), else the build tree then the
 * install directory. */
static int find_module(rdv_server *s, const char *name, char **path, void **dl, char *err, size_t errlen)
{
    char dlerr[512] = "";
    const char *mp = s->cfg.module_path;
    char *dirs = strdup(*mp ? mp : RDV_BUILD_MODULE_DIR ":" RDV_INSTALL_MODULE_DIR);
    if (!dirs)
        return -ENOMEM;
    int r = -ENOENT;
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        r = try_open(d, name, path, dl, dlerr, sizeof dlerr);
        if (r != -ENOENT)
            break;
    }
    if (r == -ENOENT)
        snprintf(err, errlen, "module '%s' (core.modules): no %s.so in %s (set core.module_path)", name, name,
                 *mp ? mp : RDV_BUILD_MODULE_DIR ":" RDV_INSTALL_MODULE_DIR);
    else if (r < 0)
        snprintf(err, errlen, "module '%s': cannot load: %s", name, dlerr);
    free(dirs);
    return r;
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
            char where[256];
            snprintf(err, errlen, "%s: %s: %s", rdv_conf_group_origin(conf, d->name, where, sizeof where), d->name, why);
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
        if ((r = rdv_mod_fill_config(s, s->conf, m->desc, &m->cfg, err, errlen)) < 0)
            return r;
    }
    int r = rdv_sort_modules(s->mods, s->nmods, err, errlen);
    if (r < 0)
        return r;
    for (size_t i = 0; i < s->nmods; i++)
        if ((r = rdv_dispatch_register(s, s->mods[i], err, errlen)) < 0)
            return r;
    return 0;
}

int rdv_init_modules(rdv_server *s, char *err, size_t errlen)
{
    int r;
    for (size_t i = 0; i < s->nmods; i++) {
        rdv_mod *m = s->mods[i];
        if (m->desc->init && (r = m->desc->init(&m->handle, m->cfg, &m->state)) < 0) {
            snprintf(err, errlen, "module '%s' failed to initialise: %s (see the lines above)", m->desc->name,
                     strerror(-r));
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
