/* core/services.c — services (versioned vtables by name) and typed hooks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

struct rdv_service {
    char *name;
    uint32_t version;
    const void *vtable;
    void *self;
    rdv_mod *provider;
    struct rdv_service *next;
};

struct rdv_hook {
    char *name;
    int prio;
    rdv_hook_fn fn;
    void *ud;
    rdv_mod *mod;
    struct rdv_hook *next;
};

int rdv_service_publish(rdv_server *s, rdv_mod *m, const char *name, uint32_t ver, const void *vt, void *self)
{
    for (struct rdv_service *sv = s->services; sv; sv = sv->next)
        if (strcmp(sv->name, name) == 0) {
            rdv_logf("core", RDV_LOG_ERR, "service '%s' is provided by both '%s' and '%s'; load only one",
                     name, sv->provider ? sv->provider->desc->name : "core", m ? m->desc->name : "core");
            return -EEXIST;
        }
    struct rdv_service *sv = calloc(1, sizeof *sv);
    if (!sv || !(sv->name = strdup(name))) {
        free(sv);
        return -ENOMEM;
    }
    sv->version = ver, sv->vtable = vt, sv->self = self, sv->provider = m;
    sv->next = s->services;
    s->services = sv;
    return 0;
}

const void *rdv_service_get(rdv_server *s, const char *name, uint32_t minver, void **self)
{
    for (struct rdv_service *sv = s->services; sv; sv = sv->next)
        if (strcmp(sv->name, name) == 0 && sv->version >= minver) {
            if (self)
                *self = sv->self;
            return sv->vtable;
        }
    return NULL;
}

int rdv_hook_add(rdv_server *s, rdv_mod *m, const char *name, int prio, rdv_hook_fn fn, void *ud)
{
    struct rdv_hook *h = calloc(1, sizeof *h);
    if (!h || !(h->name = strdup(name))) {
        free(h);
        return -ENOMEM;
    }
    h->prio = prio, h->fn = fn, h->ud = ud, h->mod = m;
    /* Sorted by priority, stable for equal priorities (registration order). */
    struct rdv_hook **pp = &s->hooks;
    while (*pp && (*pp)->prio <= prio)
        pp = &(*pp)->next;
    h->next = *pp;
    *pp = h;
    return 0;
}

void rdv_hook_run(rdv_server *s, const char *name, const void *arg)
{
    for (struct rdv_hook *h = s->hooks; h; h = h->next)
        if (strcmp(h->name, name) == 0)
            h->fn(h->ud, arg);
}

void rdv_services_free(rdv_server *s)
{
    for (struct rdv_service *sv = s->services, *n; sv; sv = n) {
        n = sv->next;
        free(sv->name), free(sv);
    }
    for (struct rdv_hook *h = s->hooks, *n; h; h = n) {
        n = h->next;
        free(h->name), free(h);
    }
    s->services = NULL;
    s->hooks = NULL;
}
