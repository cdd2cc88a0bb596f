/* core/stats.c — named counters and gauges, printed by the "stats" command. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define STAT_NAME_MAX 128

static rdv_stat *stat_find(rdv_server *s, const char *full)
{
    for (rdv_stat *st = s->stats; st; st = st->next)
        if (strcmp(st->name, full) == 0)
            return st;
    return NULL;
}

/* Keep the list sorted by name so the output is stable. */
static rdv_stat *stat_add(rdv_server *s, const char *prefix, const char *name, const char *help)
{
    char full[STAT_NAME_MAX];
    snprintf(full, sizeof full, "%s.%s", prefix, name);
    rdv_stat *st = stat_find(s, full);
    if (st)
        return st; /* the same module asking twice gets the same counter */
    st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->name = strdup(full);
    st->help = strdup(help ? help : "");
    if (!st->name || !st->help) {
        free(st->name), free(st->help), free(st);
        return NULL;
    }
    rdv_stat **pp = &s->stats;
    while (*pp && strcmp((*pp)->name, full) < 0)
        pp = &(*pp)->next;
    st->next = *pp;
    *pp = st;
    return st;
}

uint64_t *rdv_stat_counter(rdv_server *s, const char *prefix, const char *name, const char *help)
{
    rdv_stat *st = stat_add(s, prefix, name, help);
    if (!st) {
        /* Out of memory at registration: hand out a sink so callers need no checks. */
        static uint64_t sink;
        return &sink;
    }
    return &st->value;
}

int rdv_stat_gauge(rdv_server *s, const char *prefix, const char *name, uint64_t (*fn)(void *),
                   void *ud, const char *help)
{
    rdv_stat *st = stat_add(s, prefix, name, help);
    if (!st)
        return -1;
    st->fn = fn, st->ud = ud;
    return 0;
}

uint64_t rdv_stat_value(rdv_server *s, const char *full, bool *found)
{
    rdv_stat *st = stat_find(s, full);
    if (found)
        *found = st != NULL;
    if (!st)
        return 0;
    return st->fn ? st->fn(st->ud) : st->value;
}

void rdv_stats_print(rdv_server *s, rdv_buf *out, const char *filter)
{
    for (rdv_stat *st = s->stats; st; st = st->next) {
        if (filter && *filter && strncmp(st->name, filter, strlen(filter)) != 0)
            continue;
        rdv_buf_printf(out, "%s %llu\n", st->name,
                       (unsigned long long)(st->fn ? st->fn(st->ud) : st->value));
    }
}

void rdv_stats_each(rdv_server *s, void (*fn)(void *, const rdv_stat_view *), void *ud)
{
    for (rdv_stat *st = s->stats; st; st = st->next) {
        rdv_stat_view v = { st->name, st->help, st->fn != NULL, st->fn ? st->fn(st->ud) : st->value };
        fn(ud, &v);
    }
}

void rdv_stats_free(rdv_server *s)
{
    rdv_stat *st = s->stats;
    while (st) {
        rdv_stat *n = st->next;
        free(st->name), free(st->help), free(st);
        st = n;
    }
    s->stats = NULL;
}
