/* registry_ipchange.c — the IP-change log (rendezvous.md §11.3) and the
 * admin command `ip-changes` / `ic` (§10).
 *
 * Entries are id -> (t, {ip: n}). Upstream never prunes them; we keep them
 * in a list ordered by t (t only moves when an entry restarts, and then to
 * "now"), drop those too old to be displayed on each sweep, bound the table
 * (ip_changes_max; full -> the oldest entry is evicted, counted) and the IPs
 * per entry (ip_change_ips_max; further IPs are not recorded, counted). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "rdv/wire.h"
#include "registry.h"

static void registry_ipc_delete(registry *reg, registry_ipc *e)
{
    HASH_DELETE(hh, reg->ipc, e);
    DL_DELETE(reg->ipc_list, e);
    free(e->ips);
    free(e);
    reg->nipc--;
}

static bool registry_ipc_add_ip(registry *reg, registry_ipc *e, const uint8_t ip[16])
{
    for (uint32_t i = 0; i < e->nips; i++)
        if (memcmp(e->ips[i].ip, ip, 16) == 0) {
            e->ips[i].n++;
            return true;
        }
    if (e->nips >= (uint32_t)reg->cfg->ip_change_ips_max) {
        (*reg->st.ip_change_dropped)++;
        return false;
    }
    if (e->nips == e->cap) {
        uint32_t cap = e->cap ? e->cap * 2 : 2;
        registry_ipc_ip *n = realloc(e->ips, cap * sizeof *n);
        if (!n) {
            (*reg->st.oom)++;
            return false;
        }
        e->ips = n, e->cap = cap;
    }
    memcpy(e->ips[e->nips].ip, ip, 16);
    e->ips[e->nips++].n = 1;
    return true;
}

void registry_ipc_prune(registry *reg)
{
    uint64_t now = reg->api->now_ms(reg->core);
    while (reg->ipc_list && registry_secs(now, reg->ipc_list->t) >= (uint64_t)reg->cfg->ip_change_keep_s)
        registry_ipc_delete(reg, reg->ipc_list);
}

void registry_ipc_record(registry *reg, const char *id, const uint8_t ip[16])
{
    uint64_t now = reg->api->now_ms(reg->core);
    size_t id_len = strlen(id);
    registry_ipc *e = NULL;
    (*reg->st.ip_changes)++;
    HASH_FIND(hh, reg->ipc, id, id_len, e);
    if (e) {
        if (registry_secs(now, e->t) > (uint64_t)reg->cfg->ip_change_window_s) { /* restart */
            e->t = now;
            e->nips = 0;
            DL_DELETE(reg->ipc_list, e);
            DL_APPEND(reg->ipc_list, e);
        }
        registry_ipc_add_ip(reg, e, ip);
        return;
    }
    if (reg->nipc >= (size_t)reg->cfg->ip_changes_max) {
        registry_ipc_prune(reg);
        while (reg->ipc_list && reg->nipc >= (size_t)reg->cfg->ip_changes_max) {
            registry_ipc_delete(reg, reg->ipc_list);
            (*reg->st.ip_change_evicted)++;
        }
    }
    e = calloc(1, sizeof *e + id_len + 1);
    if (!e) {
        (*reg->st.oom)++;
        return;
    }
    memcpy(e->id, id, id_len + 1);
    e->t = now;
    HASH_ADD_KEYPTR(hh, reg->ipc, e->id, id_len, e);
    if (!e->hh.tbl) {
        (*reg->st.oom)++;
        free(e);
        return;
    }
    DL_APPEND(reg->ipc_list, e);
    reg->nipc++;
    registry_ipc_add_ip(reg, e, ip);
}

void registry_ipc_free(registry *reg)
{
    while (reg->ipc_list)
        registry_ipc_delete(reg, reg->ipc_list);
}

/* ------------------------------------------------------------------ admin */
/* Upstream prints the map with Rust's Debug: {"1.2.3.4": 2, "5.6.7.8": 1}. */
static void registry_ipc_print(registry *reg, const registry_ipc *e, uint64_t now, rdv_buf *out)
{
    const rdv_core_api *api = reg->api;
    api->out(out, "%llus {", (unsigned long long)registry_secs(now, e->t));
    for (uint32_t i = 0; i < e->nips; i++) {
        char ip[64];
        api->out(out, "%s\"%s\": %u", i ? ", " : "", rdv_ip_str(e->ips[i].ip, ip, sizeof ip), e->ips[i].n);
    }
    api->out(out, "}\n");
}

/* ip-changes | ic [<id>|<start>] [-] (rendezvous.md §10). */
void registry_ipc_cmd(void *ud, int argc, char **argv, rdv_buf *out)
{
    registry *reg = ud;
    uint64_t now = reg->api->now_ms(reg->core);
    registry_ipc *e, *tmp;
    DL_FOREACH_SAFE(reg->ipc_list, e, tmp)
        if (registry_secs(now, e->t) >= (uint64_t)reg->cfg->ip_change_keep_s || e->nips < 2)
            registry_ipc_delete(reg, e);
    reg->api->out(out, "%zu\n", reg->nipc);

    const char *arg = argc > 1 ? argv[1] : NULL;
    int32_t start = -1;
    if (arg && !rdv_parse_i32(arg, &start))
        start = -1;
    if (!(start >= 0 && start <= 10000000)) {
        if (arg) {
            /* Ids are printed as console words; the same word finds one. */
            char id[REGISTRY_ID_CAP + 1];
            long n = rdv_word_unescape(arg, id, REGISTRY_ID_CAP);
            e = NULL;
            if (n > 0)
                HASH_FIND(hh, reg->ipc, id, (size_t)n, e);
            if (e) {
                registry_ipc_print(reg, e, now, out);
                if (argc > 2 && strcmp(argv[2], "-") == 0)
                    registry_ipc_delete(reg, e);
            }
        } else {
            start = 0;
        }
    }
    if (start < 0)
        return;
    long long i = 0;
    DL_FOREACH(reg->ipc_list, e) {
        if (i >= (long long)start + 10)
            break;
        if (i++ < start)
            continue;
        char text[RDV_WORD_CAP(REGISTRY_ID_CAP)];
        reg->api->out(out, "%s: ", rdv_word_escape(e->id, strlen(e->id), text, sizeof text));
        registry_ipc_print(reg, e, now, out);
    }
}
