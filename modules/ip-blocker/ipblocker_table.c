/* ipblocker_table.c — the RegisterPk IP blocker (rendezvous.md §11.1) and
 * the admin command `ip-blocker` / `ib` (§10).
 *
 * Deviations (recommended by §11.1): entries whose two windows both expired
 * are pruned every prune_s, and the table is bounded: at max_entries
 * entries, or max_ids remembered ids in all, the entry updated longest ago
 * is evicted (counted in `evicted`). Entries sit in a list ordered by their
 * last update, so that entry is the head. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <utlist.h>

#include "rdv/wire.h"
#include "ipblocker.h"

static void ipblocker_delete(ipblocker *b, ipblocker_entry *e)
{
    HASH_DELETE(hh, b->table, e);
    DL_DELETE(b->order, e);
    b->nentries--;
    b->nids -= e->nids;
    free(e->ids);
    free(e);
}

/* Evict from the head (oldest update), never `keep`; false if nothing
 * else is left to evict. */
static bool ipblocker_evict_one(ipblocker *b, const ipblocker_entry *keep)
{
    ipblocker_entry *e = b->order;
    if (e == keep)
        e = e ? e->next : NULL;
    if (!e)
        return false;
    ipblocker_delete(b, e);
    (*b->st.evicted)++;
    return true;
}

static void ipblocker_touch(ipblocker *b, ipblocker_entry *e)
{
    DL_DELETE(b->order, e);
    DL_APPEND(b->order, e);
}

/* Sorted set of 64-bit id hashes. */
static size_t ipblocker_ids_find(const ipblocker_entry *e, uint64_t h, bool *found)
{
    size_t lo = 0, hi = e->nids;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e->ids[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < e->nids && e->ids[lo] == h;
    return lo;
}

static void ipblocker_ids_add(ipblocker *b, ipblocker_entry *e, size_t at, uint64_t h)
{
    while (b->nids >= (size_t)b->cfg->max_ids)
        if (!ipblocker_evict_one(b, e)) {
            (*b->st.ids_not_kept)++;
            return;
        }
    if (e->nids == e->cap) {
        uint32_t cap = e->cap ? e->cap * 2 : 4;
        uint64_t *n = realloc(e->ids, cap * sizeof *n);
        if (!n) {
            (*b->st.oom)++;
            return;
        }
        e->ids = n, e->cap = cap;
    }
    memmove(e->ids + at + 1, e->ids + at, (e->nids - at) * sizeof *e->ids);
    e->ids[at] = h;
    e->nids++;
    b->nids++;
}

static ipblocker_entry *ipblocker_create(ipblocker *b, const uint8_t ip[16], uint64_t now)
{
    while (b->nentries >= (size_t)b->cfg->max_entries && ipblocker_evict_one(b, NULL))
        ;
    ipblocker_entry *e = calloc(1, sizeof *e);
    if (!e) {
        (*b->st.oom)++;
        return NULL;
    }
    memcpy(e->ip, ip, 16);
    e->t1 = e->t2 = now;
    HASH_ADD(hh, b->table, ip, 16, e);
    if (!e->hh.tbl) {
        (*b->st.oom)++;
        free(e);
        return NULL;
    }
    DL_APPEND(b->order, e);
    b->nentries++;
    return e;
}

/* Upstream keys by the exact address. An IPv6 host has a whole /64 (or
 * more) and can take a fresh address for every request, which would make
 * each limit per request: an IPv6 network of ipv6_prefix bits counts as one
 * source, as one IPv4 address does for the hosts behind a NAT. */
static bool ipblocker_by_net(const ipblocker *b, const uint8_t ip[16])
{
    return !rdv_ip_is_v4(ip) && b->cfg->ipv6_prefix < 128;
}

void ipblocker_key(const ipblocker *b, const uint8_t ip[16], uint8_t key[16])
{
    if (!ipblocker_by_net(b, ip))
        memcpy(key, ip, 16);
    else
        ipblocker_mask(ip, (unsigned)b->cfg->ipv6_prefix, key);
}

void ipblocker_drop_v6(ipblocker *b)
{
    ipblocker_entry *e, *tmp;
    DL_FOREACH_SAFE(b->order, e, tmp)
        if (!rdv_ip_is_v4(e->ip))
            ipblocker_delete(b, e);
}

/* The "blocklist" service: §11.1 step by step. */
bool ipblocker_allowed(void *self, const rdv_addr *addr, const char *id)
{
    ipblocker *b = self;
    const ipblocker_cfg *cfg = b->cfg;
    uint64_t now = b->api->now_ms(b->core);
    uint8_t src[16], ip[16];
    rdv_ip_pack(addr, src);
    ipblocker_key(b, src, ip);
    ipblocker_entry *e = NULL;
    HASH_FIND(hh, b->table, ip, 16, e);
    if (!e) { /* first RegisterPk from this IP: (0, now), ({}, now); the id is not added */
        ipblocker_create(b, ip, now);
        (*b->st.allowed)++;
        return true;
    }
    if (ipblocker_secs(now, e->t1) > (uint64_t)cfg->req_window_s) {
        e->count = 0;
    } else if (e->count > (uint64_t)cfg->req_max) {
        (*b->st.blocked_rate)++;
        return false; /* nothing updated */
    }
    e->count++;
    e->t1 = now;
    ipblocker_touch(b, e);

    uint8_t hb[crypto_shorthash_BYTES];
    crypto_shorthash(hb, (const uint8_t *)id, strlen(id), b->id_key);
    uint64_t h;
    memcpy(&h, hb, sizeof h);
    bool known;
    size_t at = ipblocker_ids_find(e, h, &known);
    if (ipblocker_secs(now, e->t2) > (uint64_t)cfg->id_window_s) {
        b->nids -= e->nids;
        e->nids = 0;
        at = 0;
    } else if (e->nids > (uint64_t)cfg->id_max) {
        /* known ids keep working, new ones are refused; the set and t2 stay */
        if (!known)
            (*b->st.blocked_ids)++;
        else
            (*b->st.allowed)++;
        return known;
    }
    if (!known)
        ipblocker_ids_add(b, e, at, h);
    e->t2 = now;
    (*b->st.allowed)++;
    return true;
}

static bool ipblocker_expired(const ipblocker *b, const ipblocker_entry *e, uint64_t now)
{
    return ipblocker_secs(now, e->t1) > (uint64_t)b->cfg->req_window_s &&
           ipblocker_secs(now, e->t2) > (uint64_t)b->cfg->id_window_s;
}

void ipblocker_prune(ipblocker *b)
{
    uint64_t now = b->api->now_ms(b->core);
    ipblocker_entry *e, *tmp;
    DL_FOREACH_SAFE(b->order, e, tmp)
        if (ipblocker_expired(b, e, now)) {
            ipblocker_delete(b, e);
            (*b->st.pruned)++;
        }
}

void ipblocker_enforce_bounds(ipblocker *b)
{
    while ((b->nentries > (size_t)b->cfg->max_entries || b->nids > (size_t)b->cfg->max_ids) &&
           ipblocker_evict_one(b, NULL))
        ;
}

void ipblocker_table_free(ipblocker *b)
{
    while (b->order)
        ipblocker_delete(b, b->order);
}

/* ------------------------------------------------------------------ admin */
static void ipblocker_print(ipblocker *b, const ipblocker_entry *e, uint64_t now, rdv_buf *out)
{
    b->api->out(out, "%u/%llus %u/%llus\n", e->count, (unsigned long long)ipblocker_secs(now, e->t1), e->nids,
                (unsigned long long)ipblocker_secs(now, e->t2));
}

/* ip-blocker | ib [<ip>|<start>] [-]: prune, count, then one IP (and delete
 * it with "-") or up to 10 entries from start. IPs print normalised. */
void ipblocker_ib_cmd(void *ud, int argc, char **argv, rdv_buf *out)
{
    ipblocker *b = ud;
    uint64_t now = b->api->now_ms(b->core);
    ipblocker_prune(b);
    b->api->out(out, "%zu\n", b->nentries);
    const char *arg = argc > 1 ? argv[1] : NULL;
    int32_t start = 0;
    if (arg && (!rdv_parse_i32(arg, &start) || start < 0)) {
        uint8_t ip[16], key[16];
        ipblocker_entry *e = NULL;
        if (rdv_ip_parse(arg, ip)) {
            ipblocker_key(b, ip, key);
            HASH_FIND(hh, b->table, key, 16, e);
        }
        if (e) {
            ipblocker_print(b, e, now, out);
            if (argc > 2 && strcmp(argv[2], "-") == 0)
                ipblocker_delete(b, e);
        }
        return;
    }
    long long i = 0;
    ipblocker_entry *e;
    DL_FOREACH(b->order, e) {
        if (i >= (long long)start + 10)
            break;
        if (i++ < start)
            continue;
        char ip[64];
        if (ipblocker_by_net(b, e->ip))
            b->api->out(out, "%s/%d: ", rdv_ip_str(e->ip, ip, sizeof ip), (int)b->cfg->ipv6_prefix);
        else
            b->api->out(out, "%s: ", rdv_ip_str(e->ip, ip, sizeof ip));
        ipblocker_print(b, e, now, out);
    }
}
