/* registry_register.c — RegisterPeer (rendezvous.md §6.1) and RegisterPk
 * (§6.2 over UDP; the stream cases are in registry_stream.c). */
#include <errno.h>
#include <string.h>

#include <rdv/proto.h>
#include <rdv/wire.h>

#include "registry.h"

bool registry_on_listener(const registry *reg, const rdv_msg_ctx *ctx)
{
    return strcmp(ctx->listener_name, reg->cfg->listener) == 0;
}

static void registry_send(registry *reg, const rdv_msg_ctx *ctx, const Hbb__RendezvousMessage *m)
{
    int r = ctx->transport == RDV_TR_UDP ? reg->api->send_udp(reg->core, ctx->listener, ctx->peer, m)
                                         : reg->api->send(reg->core, ctx->conn, m);
    /* A failed send is local to this peer; never an error of the socket
     * (rendezvous.md §1 deviation). */
    if (r < 0)
        RDV_LOG_RL(reg->core, RDV_LOG_DEBUG, "reply to %s not sent: %s", rdv_msg_tag_name(ctx->tag), strerror(-r));
}

/* ------------------------------------------------------------------ RegisterPeer */
static void registry_send_config_update(registry *reg, const rdv_msg_ctx *ctx)
{
    Hbb__ConfigUpdate cu = HBB__CONFIG_UPDATE__INIT;
    cu.serial = reg->serial;
    cu.n_rendezvous_servers = reg->nservers;
    cu.rendezvous_servers = reg->servers;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_CONFIGURE_UPDATE;
    m.configure_update = &cu;
    registry_send(reg, ctx, &m);
}

int registry_on_register_peer(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    registry *reg = state;
    const Hbb__RendezvousMessage *msg = msg_;
    if (!registry_on_listener(reg, ctx))
        return RDV_DECLINED;
    const Hbb__RegisterPeer *rp = msg->register_peer;
    (*reg->st.register_peer)++;
    if (!rp->id[0]) { /* step 1: ignore */
        (*reg->st.register_peer_empty)++;
        return RDV_OK;
    }
    registry_expire(reg);

    /* Step 2: memory only — a cold (database-only) record is "unknown". */
    bool request_pk = true;
    registry_peer *p = registry_find(reg, rp->id, strlen(rp->id));
    if (p && !(p->flags & REG_F_COLD)) {
        uint8_t ip[16];
        rdv_ip_pack(ctx->peer, ip);
        bool differs = p->addr_port ? memcmp(ip, p->addr_ip, 16) != 0
                                    : !(p->flags & REG_F_INFO_IP) || memcmp(ip, p->info_ip, 16) != 0;
        /* ctx->peer is normalised, so ::ffff:127.x.y.z counts as loopback too. */
        bool ip_change = differs && !rdv_addr_is_loopback(ctx->peer);
        request_pk = p->pk_len == 0 || ip_change;
        if (ip_change && p->reg_pk_count < reg->cfg->pk_burst) {
            char from[RDV_ADDR_STRLEN], to[RDV_ADDR_STRLEN];
            if (p->addr_port) {
                rdv_addr old;
                rdv_ip_unpack(p->addr_ip, p->addr_port, &old);
                rdv_addr_str(&old, from, sizeof from);
            } else if (p->flags & REG_F_INFO_IP) {
                rdv_ip_str(p->info_ip, from, sizeof from);
            } else {
                from[0] = '\0';
            }
            RDV_LOG_RL(reg->core, RDV_LOG_INFO, "IP change of %s from %s to %s", rp->id, from,
                       rdv_addr_str(ctx->peer, to, sizeof to));
        }
        if (!request_pk) { /* only this makes or keeps the peer online */
            registry_touch(reg, p, ctx->peer);
            (*reg->st.registrations)++;
        }
    }
    if (request_pk)
        (*reg->st.request_pk)++;

    Hbb__RegisterPeerResponse resp = HBB__REGISTER_PEER_RESPONSE__INIT;
    resp.request_pk = request_pk;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER_RESPONSE;
    m.register_peer_response = &resp;
    registry_send(reg, ctx, &m);
    if (reg->serial > rp->serial) /* step 4: a second datagram */
        registry_send_config_update(reg, ctx);
    return RDV_OK;
}

/* ------------------------------------------------------------------ RegisterPk */
void registry_reply_pk(registry *reg, const rdv_msg_ctx *ctx, Hbb__RegisterPkResponse__Result result,
                       int32_t keep_alive)
{
    switch (result) {
    case HBB__REGISTER_PK_RESPONSE__RESULT__OK: (*reg->st.pk_ok)++; break;
    case HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH: (*reg->st.pk_uuid_mismatch)++; break;
    case HBB__REGISTER_PK_RESPONSE__RESULT__TOO_FREQUENT: (*reg->st.pk_too_frequent)++; break;
    case HBB__REGISTER_PK_RESPONSE__RESULT__INVALID_ID_FORMAT: (*reg->st.pk_invalid_id)++; break;
    case HBB__REGISTER_PK_RESPONSE__RESULT__NOT_SUPPORT: (*reg->st.pk_not_support)++; break;
    default: (*reg->st.pk_server_error)++; break;
    }
    Hbb__RegisterPkResponse r = HBB__REGISTER_PK_RESPONSE__INIT;
    r.result = result;
    r.keep_alive = keep_alive;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE;
    m.register_pk_response = &r;
    registry_send(reg, ctx, &m);
}

/* §11.2 per-ID limiter, evaluated after the uuid checks. Returns false for
 * TOO_FREQUENT; on true *count holds the updated count to store. */
static bool registry_pk_limiter(registry *reg, const registry_peer *p, uint64_t now, uint8_t *count)
{
    uint8_t c = p ? p->reg_pk_count : 0;
    if (!p || !p->reg_pk_ms || registry_secs(now, p->reg_pk_ms) > (uint64_t)reg->cfg->pk_window_s)
        c = 0;
    else if (c >= reg->cfg->pk_burst)
        return false;
    *count = c < UINT8_MAX ? (uint8_t)(c + 1) : c;
    return true;
}

/* §6.2 steps 2–8; returns the result to send. */
Hbb__RegisterPkResponse__Result registry_register_pk(registry *reg, const Hbb__RegisterPk *rk, const rdv_addr *from)
{
    const char *id = rk->id;
    size_t id_len = strlen(id);
    if (id_len < REGISTRY_ID_MIN) /* step 2 (upstream's only id check) */
        return HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH;
    if (id_len > (size_t)reg->cfg->id_max_len) /* allowed deviation */
        return HBB__REGISTER_PK_RESPONSE__RESULT__INVALID_ID_FORMAT;
    if (reg->blocklist && !reg->blocklist->register_pk_allowed(reg->blocklist_self, from, id)) /* step 3 */
        return HBB__REGISTER_PK_RESPONSE__RESULT__TOO_FREQUENT;

    registry_expire(reg);
    uint64_t now = reg->api->now_ms(reg->core);
    uint8_t ip[16];
    rdv_ip_pack(from, ip);

    /* Step 4: lookup-or-create; a cold record becomes a cached one here,
     * whatever the outcome (as upstream's database read does). */
    registry_peer *p = registry_find(reg, id, id_len);
    if (p && (p->flags & REG_F_COLD)) {
        p->flags &= (uint8_t)~REG_F_COLD;
        reg->ncold--;
    }
    if (!p && reg->npeers >= (size_t)reg->cfg->max_peers) {
        (*reg->st.peers_refused_full)++;
        RDV_LOG_RL(reg->core, RDV_LOG_WARN, "peer table full (max_peers = %lld): new id %s refused",
                   (long long)reg->cfg->max_peers, id);
        return HBB__REGISTER_PK_RESPONSE__RESULT__SERVER_ERROR;
    }

    /* Step 5. */
    bool changed = true, ip_changed = false;
    if (p && p->uuid_len) {
        if (p->uuid_len != rk->uuid.len || memcmp(registry_peer_uuid(p), rk->uuid.data, rk->uuid.len) != 0) {
            RDV_LOG_RL(reg->core, RDV_LOG_DEBUG, "peer %s: uuid mismatch", id);
            return HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH;
        }
        bool same_ip = (p->flags & REG_F_INFO_IP) && memcmp(p->info_ip, ip, 16) == 0;
        bool same_pk = p->pk_len == rk->pk.len && memcmp(registry_peer_pk(p), rk->pk.data, rk->pk.len) == 0;
        if (!same_ip && !same_pk) {
            RDV_LOG_RL(reg->core, RDV_LOG_DEBUG, "peer %s: new key from a new IP", id);
            return HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH;
        }
        ip_changed = !same_ip;
        changed = !same_pk || ip_changed;
    }

    /* Step 6. */
    uint8_t count;
    if (!registry_pk_limiter(reg, p, now, &count))
        return HBB__REGISTER_PK_RESPONSE__RESULT__TOO_FREQUENT;
    if (!p) {
        p = registry_put_record(reg, NULL, id, id_len, rk->uuid.data, rk->uuid.len, rk->pk.data, rk->pk.len);
        if (!p)
            return HBB__REGISTER_PK_RESPONSE__RESULT__SERVER_ERROR;
    }
    p->reg_pk_count = count;
    p->reg_pk_ms = now;

    if (ip_changed) /* step 7 */
        registry_ipc_record(reg, id, ip);

    if (changed) { /* step 8 */
        if (p->uuid_len != rk->uuid.len || p->pk_len != rk->pk.len ||
            memcmp(registry_peer_uuid(p), rk->uuid.data, rk->uuid.len) != 0 ||
            memcmp(registry_peer_pk(p), rk->pk.data, rk->pk.len) != 0) {
            registry_peer *np = registry_put_record(reg, p, id, id_len, rk->uuid.data, rk->uuid.len, rk->pk.data,
                                                    rk->pk.len);
            if (!np)
                return HBB__REGISTER_PK_RESPONSE__RESULT__SERVER_ERROR;
            p = np;
        }
        memcpy(p->info_ip, ip, 16);
        p->flags |= REG_F_INFO_IP;
        registry_touch(reg, p, from);
        if (registry_persist(reg, p) == 0)
            (*reg->st.stored)++;
    }
    return HBB__REGISTER_PK_RESPONSE__RESULT__OK; /* step 9 */
}

bool registry_pk_ignored(registry *reg, const Hbb__RegisterPk *rk)
{
    if (!rk->uuid.len || !rk->pk.len) { /* step 1: silently ignored */
        (*reg->st.pk_ignored)++;
        return true;
    }
    /* Our cap on what a device may bind to an id: real clients send a machine
     * UID (tens of bytes) and a 32-byte Ed25519 key. */
    if (rk->uuid.len > (size_t)reg->cfg->uuid_max_len || rk->pk.len > (size_t)reg->cfg->pk_max_len) {
        (*reg->st.pk_oversize)++;
        RDV_LOG_RL(reg->core, RDV_LOG_DEBUG, "RegisterPk with a %zu-byte uuid / %zu-byte pk ignored", rk->uuid.len,
                   rk->pk.len);
        return true;
    }
    return false;
}

int registry_on_register_pk(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    registry *reg = state;
    const Hbb__RendezvousMessage *msg = msg_;
    if (!registry_on_listener(reg, ctx))
        return RDV_DECLINED;
    const Hbb__RegisterPk *rk = msg->register_pk;
    if (!registry_pk_ignored(reg, rk))
        registry_reply_pk(reg, ctx, registry_register_pk(reg, rk, ctx->peer), 0);
    return RDV_OK;
}
