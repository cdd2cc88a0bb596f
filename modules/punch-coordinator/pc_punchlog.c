/* pc_punchlog.c — the punch-request log (rendezvous.md §11.4), read and
 * cleared only by the admin command `pr`. Upstream never prunes it; here it
 * is a ring of punch_log_max records that drops the oldest (recommended
 * deviation). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pc.h"

static pc_punch *pc_punch_at(pc_punchlog *l, size_t i) { return &l->ring[(l->start + i) % l->cap]; }

static void pc_drop_oldest(pc_punchlog *l)
{
    free(pc_punch_at(l, 0)->id);
    l->start = (l->start + 1) % l->cap;
    l->n--;
}

void pc_punchlog_clear(pc *p)
{
    pc_punchlog *l = &p->log;
    while (l->n)
        pc_drop_oldest(l);
    l->start = 0;
}

void pc_punchlog_free(pc *p)
{
    if (p->log.cap)
        pc_punchlog_clear(p);
    free(p->log.ring);
    memset(&p->log, 0, sizeof p->log);
}

/* Keep the newest min(n, cap) records in a ring of the new size. */
int pc_punchlog_resize(pc *p, size_t cap)
{
    pc_punchlog *l = &p->log;
    if (cap == l->cap)
        return 0;
    while (l->n > cap)
        pc_drop_oldest(l);
    pc_punch *ring = cap ? calloc(cap, sizeof *ring) : NULL;
    if (cap && !ring)
        return -ENOMEM;
    for (size_t i = 0; i < l->n; i++)
        ring[i] = *pc_punch_at(l, i);
    free(l->ring);
    l->ring = ring, l->cap = cap, l->start = 0;
    return 0;
}

void pc_punchlog_add(pc *p, const rdv_addr *from, const rdv_addr *to, const char *id)
{
    pc_punchlog *l = &p->log;
    if (!l->cap)
        return;
    char from_ip[INET6_ADDRSTRLEN];
    rdv_addr_ip_str(from, from_ip, sizeof from_ip);
    uint64_t now = p->core->api->now_ms(p->core);
    /* Among the 30 newest, the newest with the same requester IP and id
     * decides: younger than 60 s means a repeat, not logged. */
    for (size_t k = 0; k < l->n && k < PC_PUNCHLOG_SCAN; k++) {
        pc_punch *e = pc_punch_at(l, l->n - 1 - k);
        if (strcmp(e->from_ip, from_ip) == 0 && strcmp(e->id, id) == 0) {
            if (now - e->mono_ms < PC_PUNCHLOG_DEDUPE_MS)
                return;
            break;
        }
    }
    char *idc = strdup(id);
    if (!idc)
        return;
    if (l->n == l->cap)
        pc_drop_oldest(l);
    pc_punch *e = pc_punch_at(l, l->n);
    memset(e, 0, sizeof *e);
    e->wall_us = p->core->api->wall_us(p->core);
    e->mono_ms = now;
    memcpy(e->from_ip, from_ip, sizeof from_ip);
    rdv_addr_ip_str(to, e->to_ip, sizeof e->to_ip);
    e->id = idc;
    l->n++;
}
