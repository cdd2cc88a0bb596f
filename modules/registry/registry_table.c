/* registry_table.c — the peer table: records, the online list and its
 * expiry, loading from and persisting to the storage service
 * (rendezvous.md §2, §13.3).
 *
 * Memory: one malloc per peer (registry_peer + id, uuid and pk inline),
 * indexed by id in registry_index.c (16 bytes a slot). Online peers are also linked in ONE list ordered
 * by last_reg_ms: a registration moves its peer to the tail in O(1) (loop
 * time never goes back, so the list stays sorted), and expiry only ever
 * looks at the head. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <utlist.h>

#include <rdv/wire.h>

#include "registry.h"

/* ------------------------------------------------------------------ records */
registry_peer *registry_find(registry *reg, const char *id, size_t id_len)
{
    registry_peer **slot = registry_index_find(&reg->peers, id, id_len, registry_hash64(id, id_len));
    return slot ? *slot : NULL;
}

registry_peer *registry_put_record(registry *reg, registry_peer *old, const char *id, size_t id_len,
                                   const uint8_t *uuid, size_t uuid_len, const uint8_t *pk, size_t pk_len)
{
    if (id_len > REGISTRY_ID_CAP || uuid_len > REGISTRY_UUID_CAP || pk_len > REGISTRY_PK_CAP)
        return NULL;
    registry_peer *p = malloc(sizeof *p + id_len + 1 + uuid_len + pk_len);
    if (!p) {
        (*reg->st.oom)++;
        return NULL;
    }
    if (old) {
        *p = *old;
    } else {
        memset(p, 0, sizeof *p);
        rdv_addr none;
        rdv_addr_v4(&none, (const uint8_t[4]){ 0 }, 0);
        rdv_ip_pack(&none, p->addr_ip); /* socket_addr 0.0.0.0:0 */
    }
    p->id_len = (uint8_t)id_len;
    p->uuid_len = (uint16_t)uuid_len;
    p->pk_len = (uint8_t)pk_len;
    memcpy(p->data, id, id_len);
    p->data[id_len] = '\0';
    if (uuid_len)
        memcpy(p->data + id_len + 1, uuid, uuid_len);
    if (pk_len)
        memcpy(p->data + id_len + 1 + uuid_len, pk, pk_len);

    if (old) { /* same id: the index slot and the list position carry over */
        registry_peer **slot = registry_index_find(&reg->peers, id, id_len, registry_hash64(id, id_len));
        *slot = p;
        if (old->flags & REG_F_ONLINE)
            DL_REPLACE_ELEM(reg->online, old, p);
        free(old);
    } else {
        if (registry_index_add(&reg->peers, p, registry_hash64(id, id_len)) < 0) {
            (*reg->st.oom)++;
            free(p);
            return NULL;
        }
        reg->npeers++;
    }
    return p;
}

/* ------------------------------------------------------------------ online window */
bool registry_is_online(registry *reg, const registry_peer *p)
{
    return registry_online_at(reg, p, reg->api->now_ms(reg->core));
}

void registry_touch(registry *reg, registry_peer *p, const rdv_addr *addr)
{
    rdv_ip_pack(addr, p->addr_ip);
    p->addr_port = rdv_addr_port(addr);
    p->last_reg_ms = reg->api->now_ms(reg->core);
    if (p->flags & REG_F_ONLINE) {
        DL_DELETE(reg->online, p);
        DL_APPEND(reg->online, p);
        return;
    }
    DL_APPEND(reg->online, p);
    p->flags |= REG_F_ONLINE;
    reg->nonline++;
    (*reg->st.went_online)++;
    rdv_peer_event ev = { .id = registry_peer_id(p), .addr = addr };
    reg->api->hook_run(reg->core, RDV_HOOK_PEER_ONLINE, &ev);
}

size_t registry_online_now(registry *reg)
{
    uint64_t now = reg->api->now_ms(reg->core), win = (uint64_t)reg->cfg->online_ms;
    size_t expired = 0;
    for (const registry_peer *p = reg->online; p && now - p->last_reg_ms >= win; p = p->next)
        expired++;
    return reg->nonline - expired;
}

void registry_expire(registry *reg)
{
    uint64_t now = reg->api->now_ms(reg->core), win = (uint64_t)reg->cfg->online_ms;
    registry_peer *p;
    while ((p = reg->online) && now - p->last_reg_ms >= win) {
        DL_DELETE(reg->online, p);
        p->flags &= (uint8_t)~REG_F_ONLINE;
        reg->nonline--;
        (*reg->st.went_offline)++;
        rdv_addr a;
        rdv_ip_unpack(p->addr_ip, p->addr_port, &a);
        rdv_peer_event ev = { .id = registry_peer_id(p), .addr = &a };
        reg->api->hook_run(reg->core, RDV_HOOK_PEER_OFFLINE, &ev);
    }
}

void registry_fill_info(registry *reg, registry_peer *p, rdv_peer_info *out)
{
    memset(out, 0, sizeof *out);
    out->id = registry_peer_id(p);
    rdv_ip_unpack(p->addr_ip, p->addr_port, &out->addr);
    out->last_reg_ms = p->last_reg_ms;
    out->online = registry_is_online(reg, p);
    out->pk = p->pk_len ? registry_peer_pk(p) : NULL;
    out->pk_len = p->pk_len;
    reg->ipbuf[0] = '\0';
    if (p->flags & REG_F_INFO_IP)
        rdv_ip_str(p->info_ip, reg->ipbuf, sizeof reg->ipbuf);
    out->ip = reg->ipbuf;
    registry_stream *b = registry_stream_by_id(reg, p->data, p->id_len);
    out->conn = b ? b->conn : 0;
}

void registry_table_free(registry *reg)
{
    for (size_t i = 0; i < reg->peers.cap; i++)
        if (reg->peers.slots[i].h)
            free(reg->peers.slots[i].p);
    registry_index_free(&reg->peers);
    reg->online = NULL;
    reg->npeers = reg->ncold = reg->nonline = 0;
}

/* ------------------------------------------------------------------ storage */
static void registry_load_row(void *ud, const rdv_peer_row *row)
{
    registry *reg = ud;
    size_t id_len = row->id ? strlen(row->id) : 0;
    /* Every stored row is loaded, whatever max_peers says: a stored peer
     * left out would be unknown (ID_NOT_EXIST instead of OFFLINE, R53) and
     * its id free for another device to take. max_peers bounds new ids. */
    if (!id_len || id_len > REGISTRY_ID_CAP || row->uuid_len > REGISTRY_UUID_CAP || row->pk_len > REGISTRY_PK_CAP ||
        registry_find(reg, row->id, id_len)) {
        (*reg->st.load_skipped)++;
        return;
    }
    registry_peer *p = registry_put_record(reg, NULL, row->id, id_len, row->uuid, row->uuid_len, row->pk, row->pk_len);
    if (!p) {
        (*reg->st.load_skipped)++;
        return;
    }
    memcpy(p->guid, row->guid, sizeof p->guid);
    p->flags = REG_F_COLD | REG_F_GUID;
    if (row->info_ip && row->info_ip[0] && rdv_ip_parse(row->info_ip, p->info_ip))
        p->flags |= REG_F_INFO_IP;
    reg->ncold++;
}

long registry_load(registry *reg)
{
    long n = reg->storage->load_all(reg->storage_self, registry_load_row, reg);
    if (n < 0) {
        RDV_ERR(reg->core, "loading stored peers failed: %s", strerror((int)-n));
        return n;
    }
    if (*reg->st.load_skipped)
        RDV_WARN(reg->core, "%llu stored rows skipped (duplicate id, empty or oversize fields)",
                 (unsigned long long)*reg->st.load_skipped);
    if (reg->npeers >= (size_t)reg->cfg->max_peers)
        RDV_WARN(reg->core,
                 "%zu stored peers, registry.max_peers = %lld: all stored peers are served, but new ids are refused "
                 "until max_peers is raised above the stored count",
                 reg->npeers, (long long)reg->cfg->max_peers);
    RDV_INFO(reg->core, "%zu stored peers loaded (cold until first looked up)", reg->ncold);
    return n;
}

/* §13.3: insert with a new random guid (UUIDv4 like upstream), else update
 * by guid. The storage queues the write; memory stays authoritative. A
 * refused write (the storage's queue is at its bound, e.g. after a long disk
 * outage) marks the record dirty: the sweep resubmits it, so a peer whose
 * registration never changes again is still stored once the disk is back. */
/* A peer whose write the storage refused waits for the sweep (ndirty). */
static void registry_set_dirty(registry *reg, registry_peer *p, bool dirty)
{
    if (dirty == !!(p->flags & REG_F_DIRTY))
        return;
    p->flags = dirty ? (uint8_t)(p->flags | REG_F_DIRTY) : (uint8_t)(p->flags & ~REG_F_DIRTY);
    if (dirty)
        reg->ndirty++;
    else
        reg->ndirty--;
}

static int registry_put_row(registry *reg, registry_peer *p)
{
    bool insert = !(p->flags & REG_F_GUID) || (p->flags & REG_F_REINSERT);
    if (!(p->flags & REG_F_GUID)) {
        randombytes_buf(p->guid, sizeof p->guid);
        p->guid[6] = (uint8_t)((p->guid[6] & 0x0f) | 0x40);
        p->guid[8] = (uint8_t)((p->guid[8] & 0x3f) | 0x80);
    }
    char ip[64] = "";
    if (p->flags & REG_F_INFO_IP)
        rdv_ip_str(p->info_ip, ip, sizeof ip);
    rdv_peer_row row = {
        .id = registry_peer_id(p),
        .uuid = registry_peer_uuid(p),
        .uuid_len = p->uuid_len,
        .pk = registry_peer_pk(p),
        .pk_len = p->pk_len,
        .info_ip = ip,
    };
    memcpy(row.guid, p->guid, sizeof row.guid);
    int r = reg->storage->put(reg->storage_self, &row, insert);
    /* -EINVAL: refused for this row alone (a field over the storage's own
     * cap), so putting it again cannot help; left dirty, it would be the
     * first refusal of every sweep pass and hold back the rows behind it. */
    registry_set_dirty(reg, p, r < 0 && r != -EINVAL);
    if (r < 0)
        return r;
    p->flags = (uint8_t)((p->flags | REG_F_GUID) & ~REG_F_REINSERT);
    return 0;
}

int registry_persist(registry *reg, registry_peer *p)
{
    int r = registry_put_row(reg, p);
    if (r < 0) { /* the sweep's own retries are not counted again */
        (*reg->st.store_put_failed)++;
        RDV_LOG_RL(reg->core, RDV_LOG_WARN, "storing peer %s failed: %s (kept in memory%s)", registry_peer_id(p),
                   strerror(-r), r == -EINVAL ? "; the storage refuses this row, see its log" : ", retried every sweep");
    }
    return r;
}

void registry_resubmit(registry *reg)
{
    if (!reg->ndirty || !reg->peers.cap)
        return;
    size_t before = reg->ndirty, done = 0;
    int r = 0;
    /* A cursor over the slots, not a list of dirty records: records are
     * rebuilt (new address) on a uuid/pk change, and the flag costs no
     * memory. The index may grow between calls; a record the scan skips
     * then stays dirty and is found on the next pass. */
    for (size_t n = 0; n < REGISTRY_RESUBMIT_SCAN && n < reg->peers.cap && reg->ndirty; n++) {
        if (reg->dirty_cursor >= reg->peers.cap)
            reg->dirty_cursor = 0;
        registry_slot *s = &reg->peers.slots[reg->dirty_cursor];
        if (s->h && (s->p->flags & REG_F_DIRTY)) {
            if ((r = registry_put_row(reg, s->p)) < 0 && r != -EINVAL)
                break; /* still full: this slot is tried first next time */
            done += r == 0;
        }
        reg->dirty_cursor++;
    }
    *reg->st.store_resubmitted += done;
    if (r < 0 && r != -EINVAL)
        RDV_LOG_RL(reg->core, RDV_LOG_WARN, "%zu peers not stored yet: storage still refuses writes (%s)",
                   reg->ndirty, strerror(-r));
    else if (before && !reg->ndirty)
        RDV_INFO(reg->core, "every peer whose write the storage refused is queued to it again (%zu in this pass)",
                 done);
}

void registry_store_lost(void *ud)
{
    registry *reg = ud;
    (*reg->st.store_lost)++;
    size_t n = 0;
    for (size_t i = 0; i < reg->peers.cap; i++) {
        registry_slot *s = &reg->peers.slots[i];
        if (!s->h)
            continue;
        s->p->flags |= REG_F_REINSERT;
        registry_set_dirty(reg, s->p, true);
        n++;
    }
    RDV_WARN(reg->core, "the storage lost its rows: all %zu peers are stored again, from memory (sweep by sweep)", n);
    reg->dirty_cursor = 0;
    registry_resubmit(reg);
}

/* Not api->now_ms: that is the loop's time, and the loop does not turn
 * while a stop waits on the storage. */
static uint64_t registry_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void registry_resubmit_all(registry *reg)
{
    const rdv_storage_api *sto = reg->storage;
    uint64_t deadline = registry_mono_ms() + REGISTRY_STOP_MS;
    size_t done = 0, before = reg->ndirty;
    int r = 0;
    for (size_t i = 0; i < reg->peers.cap && reg->ndirty;) {
        registry_slot *s = &reg->peers.slots[i];
        if (!s->h || !(s->p->flags & REG_F_DIRTY)) {
            i++;
            continue;
        }
        if ((r = registry_put_row(reg, s->p)) == 0 || r == -EINVAL) {
            done += r == 0;
            i++; /* -EINVAL: refused for this row alone, the others may go */
            continue;
        }
        /* The queue is at its bound: let the storage write what it holds,
         * while it makes progress and time is left; then put again. */
        uint64_t now = registry_mono_ms();
        if (r != -ENOBUFS || now >= deadline)
            break;
        size_t pending = sto->pending(reg->storage_self);
        uint64_t slice = deadline - now < REGISTRY_STOP_SLICE_MS ? deadline - now : REGISTRY_STOP_SLICE_MS;
        if (sto->flush(reg->storage_self, slice) < 0 && sto->pending(reg->storage_self) >= pending)
            break; /* nothing written in a whole slice: the storage is failing */
    }
    *reg->st.store_resubmitted += done;
    if (reg->ndirty)
        RDV_ERR(reg->core,
                "%zu peers not stored at stop: the storage refused their writes (%s); they are lost with this "
                "process (their clients register again as new ids); fix: see the storage errors above",
                reg->ndirty, strerror(-r));
    else if (before)
        RDV_INFO(reg->core, "stop: the %zu peer writes the storage had refused are queued to it again", done);
}
