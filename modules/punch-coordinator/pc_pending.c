/* pc_pending.c — the pending-request table (rendezvous.md §7).
 *
 * hbbs keeps no session state: A's reply channel is parked under A's
 * normalised address, B echoes that address (mangled) back, and the answer
 * is routed by it. Here a "reply channel" is the connection id; the core
 * encrypts whatever is sent on it later (issue 6).
 *
 * Bounds (§18): at most pending_max connections are tracked; when full the
 * oldest record is forgotten (counted). Records also expire after
 * pending_timeout_ms (clients wait at most 18 s per attempt); one timer,
 * armed for the oldest record, does that. A connection's record goes away
 * when it closes (core hook "conn.close").
 *
 * Out of memory (a record, or a table uthash cannot create or grow) drops
 * that one park, as if the requester had timed out, and counts it (`oom`):
 * both adds happen before anything else changes, and a replaced record is
 * unparked only once its successor is in (§7.2), so a failure leaves the
 * tables as they were. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "pc.h"

/* ---- uthash's allocator and its test hook (rdv/uthash.h) */
RDV_UTHASH_HOOK_DEFINE()

void pc_key_of(pc_key *k, const rdv_addr *a)
{
    memset(k, 0, sizeof *k); /* the key is hashed as bytes: no stray padding */
    if (a->u.sa.sa_family == AF_INET) {
        k->fam = 4;
        memcpy(k->ip, &a->u.v4.sin_addr, 4);
    } else if (a->u.sa.sa_family == AF_INET6) {
        k->fam = 6;
        memcpy(k->ip, &a->u.v6.sin6_addr, 16);
    }
    k->port = rdv_addr_port(a);
}

static void pc_sweep_cb(void *ud) { pc_pending_sweep(ud); }

int pc_pending_init(pc *p)
{
    p->pending.sweep = p->core->api->timer_new(p->core, pc_sweep_cb, p);
    return p->pending.sweep ? 0 : -ENOMEM;
}

static void pc_arm_sweep(pc *p)
{
    pc_pending *t = &p->pending;
    if (!t->oldest || !t->sweep)
        return;
    uint64_t now = p->core->api->now_ms(p->core), due = t->oldest->since_ms + (uint64_t)p->cfg->pending_timeout_ms;
    p->core->api->timer_start(t->sweep, due > now ? due - now : 0, 0);
}

/* The record no longer owns pending[key]. */
static void pc_unpark(pc *p, pc_rec *r)
{
    if (!r->parked)
        return;
    HASH_DELETE(hh_key, p->pending.by_key, r);
    r->parked = false;
    p->pending.nparked--;
}

static void pc_rec_free(pc *p, pc_rec *r)
{
    pc_pending *t = &p->pending;
    pc_unpark(p, r);
    HASH_DELETE(hh_conn, t->by_conn, r);
    if (r->prev)
        r->prev->next = r->next;
    else
        t->oldest = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        t->newest = r->prev;
    t->nrec--;
    free(r);
}

void pc_pending_free(pc *p)
{
    pc_pending *t = &p->pending;
    while (t->oldest)
        pc_rec_free(p, t->oldest);
    if (t->sweep)
        p->core->api->timer_free(t->sweep);
    t->sweep = NULL;
}

static pc_rec *pc_find_conn(pc *p, rdv_conn_id conn)
{
    pc_rec *r = NULL;
    HASH_FIND(hh_conn, p->pending.by_conn, &conn, sizeof conn, r);
    return r;
}

static pc_rec *pc_find_key(pc *p, const pc_key *k)
{
    pc_rec *r = NULL;
    HASH_FIND(hh_key, p->pending.by_key, k, sizeof *k, r);
    return r;
}

/* Down to `keep` records, oldest first. */
static void pc_evict_to(pc *p, size_t keep)
{
    if (p->pending.nrec > keep && p->pending.oldest)
        RDV_LOG_RL(p->core, RDV_LOG_WARN,
                   "pending punch table full (punch-coordinator.pending_max = %lld): the oldest waiting requester "
                   "is dropped; many connections from one source mean a flood (ip-blocker), many sources need "
                   "a larger pending_max",
                   (long long)p->cfg->pending_max);
    while (p->pending.nrec > keep && p->pending.oldest) {
        (*p->st.pending_evicted)++;
        pc_rec_free(p, p->pending.oldest);
    }
}

void pc_pending_trim(pc *p)
{
    pc_evict_to(p, (size_t)p->cfg->pending_max);
    pc_arm_sweep(p);
}

static void pc_park_oom(pc *p, const rdv_addr *a)
{
    (*p->st.oom)++;
    char from[RDV_ADDR_STRLEN];
    RDV_LOG_RL(p->core, RDV_LOG_WARN,
               "out of memory: punch request from %s not parked (the requester gets no answer and retries)",
               rdv_addr_str(a, from, sizeof from));
}

void pc_pending_park(pc *p, rdv_conn_id conn, const rdv_addr *a)
{
    if (pc_find_conn(p, conn))
        return; /* parked before (or already answered): never re-park (§6.3 step 1) */
    pc_evict_to(p, (size_t)p->cfg->pending_max - 1);
    pc_rec *r = calloc(1, sizeof *r);
    if (!r) {
        pc_park_oom(p, a); /* the requester simply gets no answer, as if it had timed out */
        return;
    }
    r->conn = conn;
    pc_key_of(&r->key, a);
    r->since_ms = p->core->api->now_ms(p->core);
    /* Same key parked by another connection (a new connection from the same
     * address, or WebSocket clients behind one proxy with port 0): the newer
     * channel replaces the older one (§7.2). Looked up before r is added
     * (both then share the key until the older is unparked). */
    pc_rec *old = pc_find_key(p, &r->key);
    HASH_ADD(hh_conn, p->pending.by_conn, conn, sizeof r->conn, r);
    if (!r->hh_conn.tbl) { /* uthash rolled the add back */
        free(r);
        pc_park_oom(p, a);
        return;
    }
    HASH_ADD(hh_key, p->pending.by_key, key, sizeof r->key, r);
    if (!r->hh_key.tbl) {
        HASH_DELETE(hh_conn, p->pending.by_conn, r);
        free(r);
        pc_park_oom(p, a); /* an older parking under the key stays */
        return;
    }
    if (old) {
        pc_unpark(p, old);
        (*p->st.pending_replaced)++;
    }
    r->parked = true;
    r->prev = p->pending.newest;
    if (r->prev)
        r->prev->next = r;
    else
        p->pending.oldest = r;
    p->pending.newest = r;
    p->pending.nrec++;
    p->pending.nparked++;
    if (p->pending.oldest == r)
        pc_arm_sweep(p);
}

bool pc_pending_taken(pc *p, rdv_conn_id conn)
{
    return conn && pc_find_conn(p, conn) != NULL;
}

bool pc_pending_has(pc *p, const rdv_addr *a)
{
    pc_key k;
    pc_key_of(&k, a);
    return pc_find_key(p, &k) != NULL;
}

void pc_pending_mark_udp(pc *p, rdv_conn_id conn)
{
    pc_rec *r = pc_find_conn(p, conn);
    if (r && r->parked)
        r->udp = true;
}

bool pc_pending_has_udp(pc *p, const rdv_addr *a)
{
    pc_key k;
    pc_key_of(&k, a);
    pc_rec *r = pc_find_key(p, &k);
    return r && r->udp;
}

int pc_pending_deliver(pc *p, const rdv_addr *a, const Hbb__RendezvousMessage *msg)
{
    pc_key k;
    pc_key_of(&k, a);
    pc_rec *r = pc_find_key(p, &k);
    if (!r) {
        (*p->st.undeliverable)++;
        return -ENOENT;
    }
    /* Single use (§7.1 step 4): the connection stays open but can never be
     * answered again, so keep its record as "spent". */
    pc_unpark(p, r);
    /* send() may close the connection (queue overflow), whose hook frees r */
    rdv_conn_id conn = r->conn;
    int e = p->core->api->send(p->core, conn, msg);
    if (e < 0) {
        (*p->st.deliver_fail)++;
        RDV_LOG_RL(p->core, RDV_LOG_DEBUG, "answer to conn %llu not sent: %s", (unsigned long long)conn,
                   strerror(-e));
        return e;
    }
    (*p->st.delivered)++;
    return 0;
}

/* Only the closing connection's own record goes; a newer parking under the
 * same key by another connection stays (upstream removes by key, which
 * could drop the newer requester: a harmless deviation). */
void pc_pending_conn_closed(pc *p, rdv_conn_id conn)
{
    pc_rec *r = pc_find_conn(p, conn);
    if (r)
        pc_rec_free(p, r);
}

void pc_pending_sweep(pc *p)
{
    uint64_t now = p->core->api->now_ms(p->core), ttl = (uint64_t)p->cfg->pending_timeout_ms;
    while (p->pending.oldest && now - p->pending.oldest->since_ms >= ttl) {
        if (p->pending.oldest->parked)
            (*p->st.pending_expired)++;
        pc_rec_free(p, p->pending.oldest);
    }
    pc_arm_sweep(p);
}
