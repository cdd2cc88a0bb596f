/* relay_accept.c — the relay TCP port (relay.md §2, §3): the core accepts,
 * frames and times out the first frame; we decide on it (§3.3) and take the
 * socket over. Every refusal is a silent close, counted by reason. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay.h"

uint64_t *relay_check_request(relay *r, rdv_arena *a, const uint8_t *p, size_t n, const rdv_addr *peer,
                              relay_request *out)
{
    if (n > (size_t)r->cfg->first_frame_max)
        return r->st.rej_oversize;
    rdv_arena_reset(a);
    /* A full RendezvousMessage parse, as upstream: invalid UTF-8, bad tags
     * and groups (no recursion in protobuf-c) are refused here. */
    const rdv_msg *m = rdv_msg_unpack(a, p, n);
    if (!m)
        return r->st.rej_bad_message;
    if (m->union_case != HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY || !m->request_relay)
        return r->st.rej_not_relay;
    const Hbb__RequestRelay *rr = m->request_relay;
    /* Key before uuid: a late side with a wrong key never disturbs the
     * waiting one (§3.3). */
    if (r->key[0] && strcmp(rr->licence_key ? rr->licence_key : "", r->key) != 0) {
        char a_txt[RDV_ADDR_STRLEN];
        RDV_LOG_RL(r->core, RDV_LOG_WARN, "Relay authentication failed from %s: invalid key",
                   rdv_addr_str(peer, a_txt, sizeof a_txt));
        return r->st.rej_bad_key;
    }
    const char *uuid = rr->uuid ? rr->uuid : "";
    size_t len = strlen(uuid);
    if (!len)
        return r->st.rej_empty_uuid;
    if (len > (size_t)r->cfg->uuid_max)
        return r->st.rej_long_uuid;
    out->uuid = uuid, out->uuid_len = len;
    (*r->st.requests)++;
    return NULL;
}

int relay_offer_ep(relay *r, relay_ep *ep, const rdv_addr *peer, const uint8_t *p, size_t n)
{
    relay_request req = { 0 };
    uint64_t *why = relay_check_request(r, &r->arena, p, n, peer, &req);
    if (why) {
        (*why)++;
        return RDV_CLOSE;
    }
    relay_side s = { .fd = -1, .ep = ep, .addr = *peer };
    relay_wait_or_pair(r, &s, req.uuid, req.uuid_len);
    return RDV_OK;
}

/* ------------------------------------------------------------------ listener ops */
static int relay_on_open(void *ud, rdv_conn_id id, const rdv_addr *peer)
{
    relay *r = ud;
    const rdv_core_api *api = r->core->api;
    (*r->st.accepted)++;
    r->awaiting++; /* balanced by on_close, or by a detach */
    if (r->stopping)
        return RDV_CLOSE;
    /* §2 order: the opt-in loopback console first, then the blocklist. */
    if (r->cfg->console_loopback && rdv_addr_is_loopback(peer)) {
        int fd = -1;
        size_t len = r->scratch_cap;
        if (api->conn_detach(r->core, id, &fd, r->scratch, &len) < 0)
            return RDV_CLOSE;
        r->awaiting--;
        relay_console_start(r, fd);
        return RDV_OK;
    }
    char ip[INET6_ADDRSTRLEN];
    if (relay_set_has(&r->block, relay_ip_text(peer, ip, sizeof ip))) {
        (*r->st.rej_blocked)++;
        RDV_LOG_RL(r->core, RDV_LOG_INFO, "blocked %s", ip);
        return RDV_CLOSE;
    }
    return RDV_OK;
}

static int relay_on_frame(void *ud, rdv_conn_id id, const uint8_t *p, size_t n)
{
    relay *r = ud;
    const rdv_core_api *api = r->core->api;
    rdv_conn_info info;
    if (api->conn_info(r->core, id, &info) < 0)
        return RDV_CLOSE;
    relay_request req = { 0 };
    uint64_t *why = relay_check_request(r, &r->arena, p, n, &info.peer, &req);
    if (why) {
        (*why)++;
        return RDV_CLOSE;
    }
    /* From here the socket is ours. The listener reads its first frame
     * exactly (RDV_LISTEN_FRAMED_EXACT), so what the client sent after it
     * is still in the socket; len stays 0 unless a core reads ahead.
     * req.uuid lives in our arena. */
    int fd = -1;
    size_t len = r->scratch_cap;
    int e = api->conn_detach(r->core, id, &fd, r->scratch, &len);
    if (e < 0) {
        (*r->st.rej_internal)++;
        RDV_LOG_RL(r->core, RDV_LOG_WARN, "cannot take over a relay connection: %s", strerror(-e));
        return RDV_CLOSE;
    }
    r->awaiting--;
    if (fd < 0) {
        (*r->st.rej_internal)++;
        return RDV_OK;
    }
    relay_side s = { .fd = fd, .addr = info.peer };
    if (len && r->early_bytes + len > (uint64_t)r->cfg->early_total) {
        /* Bytes sent with a first frame are held until pairing: bounded in
         * total so that many such clients cannot grow us. */
        (*r->st.rej_early_full)++;
        RDV_LOG_RL(r->core, RDV_LOG_WARN, "relay.early_total=%lld bytes held; refusing a request",
                   (long long)r->cfg->early_total);
        close(fd);
        return RDV_OK;
    }
    if (len) {
        if (!(s.early = malloc(len))) {
            (*r->st.rej_internal)++;
            close(fd);
            return RDV_OK;
        }
        memcpy(s.early, r->scratch, len);
        s.early_len = len;
        r->early_bytes += len;
    }
    relay_wait_or_pair(r, &s, req.uuid, req.uuid_len);
    return RDV_OK;
}

static void relay_on_close(void *ud, rdv_conn_id id, rdv_close_reason why)
{
    (void)id;
    relay *r = ud;
    r->awaiting--;
    switch (why) {
    case RDV_CLOSE_IDLE: (*r->st.rej_first_timeout)++; break;
    case RDV_CLOSE_OVERSIZE: (*r->st.rej_oversize)++; break;
    case RDV_CLOSE_PROTOCOL: (*r->st.rej_bad_message)++; break;
    case RDV_CLOSE_PEER:
    case RDV_CLOSE_ERROR: (*r->st.closed_before_request)++; break;
    default: break; /* LOCAL: counted where we refused; SHUTDOWN */
    }
}

const rdv_conn_ops relay_conn_ops = {
    .on_open = relay_on_open,
    .on_frame = relay_on_frame,
    .on_close = relay_on_close,
};
