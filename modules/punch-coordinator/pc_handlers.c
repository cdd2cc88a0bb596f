/* pc_handlers.c — the coordination messages, step by step as in
 * rendezvous.md §6.3 (PunchHoleRequest), §6.4 (PunchHoleSent), §6.5
 * (LocalAddr), §6.6 (RelayResponse), §6.7 (RequestRelay), and the signed
 * peer key of §9.
 *
 * Answers to A go through the pending table (pc_pending.c), pushes to B go
 * out of the "main" UDP socket to B's registered address (or, for a peer
 * registered over a stream — EXT §15.4 — over that connection). EXT: the
 * UDP and IPv6 punching fields of client-flows.md §6.2-§6.4 are passed on
 * (§15.8, §15.9) and a UDP PunchHoleSent for a request that offered a UDP
 * port is answered over A's connection, never by UDP (§15.8). Messages
 * arrive borrowed: outgoing ones are built on the stack and packed at once
 * by the core; a forwarded message is a shallow copy of the received one
 * with the changed fields replaced (unknown fields pass through, as
 * upstream's re-serialisation does). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pc.h"

typedef Hbb__RendezvousMessage pc_msg;

static uint32_t pc_tm(pc *p) { return (uint32_t)p->core->api->wall_us(p->core); }

/* ------------------------------------------------------------------ §9 signed pk */
int pc_signed_pk(pc *p, const char *version, const char *id, uint8_t **out, size_t *len)
{
    *out = NULL, *len = 0;
    if (!version || !version[0] || !p->keys->can_sign(p->keys_self))
        return 0;
    rdv_peer_info info;
    if (!id || !id[0] || p->reg->lookup(p->reg_self, id, RDV_LOOKUP_STORED, &info) < 0)
        return 0;
    /* IdPk{id, pk} (wire.md §6.7); info.pk is borrowed until the next
     * registry call, so pack it now. An empty stored pk is signed as is. */
    Hbb__IdPk idpk = HBB__ID_PK__INIT;
    idpk.id = (char *)id;
    idpk.pk.data = (uint8_t *)info.pk;
    idpk.pk.len = info.pk ? info.pk_len : 0;
    size_t n = hbb__id_pk__get_packed_size(&idpk);
    uint8_t *body = malloc(n ? n : 1), *sm = malloc(n + 64);
    if (!body || !sm) {
        free(body), free(sm);
        return -ENOMEM;
    }
    hbb__id_pk__pack(&idpk, body);
    long sl = p->keys->sign(p->keys_self, body, n, sm, n + 64);
    free(body);
    if (sl <= 0) {
        free(sm);
        return 0; /* no key after all (-ENOKEY): unsigned, like §3.2 case 3 */
    }
    (*p->st.signed_pk)++;
    *out = sm, *len = (size_t)sl;
    return 0;
}

/* ------------------------------------------------------------------ pushes to B */
/* Send m to the registered peer b: over its stream connection when it
 * registered on one (EXT §15.4), else by UDP from the "main" socket. Send
 * errors are counted and otherwise ignored (§1: a failed sendto never
 * disturbs the socket). */
static void pc_push(pc *p, const rdv_peer_info *b, const pc_msg *m)
{
    const rdv_core_api *api = p->core->api;
    if (b->conn && api->send(p->core, b->conn, m) == 0)
        return;
    if (!p->udp)
        p->udp = api->listener_find(p->core, "main", RDV_TR_UDP);
    /* A record loaded from the database has no address (0.0.0.0:0). */
    int e = !p->udp ? -ENOTCONN : rdv_addr_port(&b->addr) == 0 ? -EDESTADDRREQ
                                                               : api->send_udp(p->core, p->udp, &b->addr, m);
    if (e < 0) {
        (*p->st.push_fail)++;
        char a[RDV_ADDR_STRLEN];
        RDV_LOG_RL(p->core, RDV_LOG_DEBUG, "push to %s (%s) failed: %s", b->id ? b->id : "?",
                   rdv_addr_str(&b->addr, a, sizeof a), strerror(-e));
    }
}

/* Deliver a PunchHoleResponse to pending[a]. */
static void pc_answer(pc *p, const rdv_addr *a, Hbb__PunchHoleResponse *r)
{
    pc_msg m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE;
    m.punch_hole_response = r;
    pc_pending_deliver(p, a, &m);
}

static void pc_fail(pc *p, const rdv_addr *a, Hbb__PunchHoleResponse__Failure f)
{
    Hbb__PunchHoleResponse r = HBB__PUNCH_HOLE_RESPONSE__INIT;
    r.failure = f;
    pc_answer(p, a, &r);
}

/* A refusal the client shows as text (other_failure, §15.10). */
static void pc_fail_text(pc *p, const rdv_addr *a, const char *text)
{
    Hbb__PunchHoleResponse r = HBB__PUNCH_HOLE_RESPONSE__INIT;
    r.other_failure = (char *)text;
    pc_answer(p, a, &r);
}

/* ------------------------------------------------------------------ EXT fields */
/* A port a client may act on, else 0 (counted when set but out of range). */
static int32_t pc_port_field(pc *p, int32_t v)
{
    if (v > 0 && v <= 65535)
        return v;
    if (v)
        (*p->st.bad_fields)++;
    return 0;
}

/* socket_addr_v6 is a mangled address (18 bytes for IPv6, wire.md §5.2):
 * anything longer is not passed on (it would only grow our pushes). */
static ProtobufCBinaryData pc_v6_field(pc *p, ProtobufCBinaryData v6)
{
    if (v6.len > RDV_ADDR_MANGLED_MAX) {
        (*p->st.bad_fields)++;
        v6.len = 0, v6.data = NULL;
    }
    return v6;
}

static bool pc_wrong_listener(pc *p, const rdv_msg_ctx *ctx)
{
    if (pc_listener_ok(ctx))
        return false;
    (*p->st.wrong_listener)++;
    return true;
}

/* ------------------------------------------------------------------ §6.3 */
static int pc_on_punch_hole_request(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    pc *p = state;
    if (pc_wrong_listener(p, ctx))
        return RDV_DECLINED;
    const Hbb__PunchHoleRequest *req = ((const pc_msg *)msg_)->punch_hole_request;
    const rdv_addr *a = ctx->peer;
    (*p->st.punch_requests)++;

    /* 1. park A's reply channel (before any check). */
    pc_pending_park(p, ctx->conn, a);

    /* 2. licence (§3.3): byte-for-byte when a licence key is configured. */
    const char *lk = p->keys->licence_key(p->keys_self);
    if (lk && lk[0] && strcmp(req->licence_key ? req->licence_key : "", lk) != 0) {
        (*p->st.licence_mismatch)++;
        pc_fail(p, a, HBB__PUNCH_HOLE_RESPONSE__FAILURE__LICENSE_MISMATCH);
        return RDV_OK;
    }

    /* 2b. login (§15.10): only when a login-gate is loaded. */
    const char *refusal = p->login ? p->login->punch_refusal(p->login_self, req->token ? req->token : "") : NULL;
    if (refusal) {
        (*p->st.login_refused)++;
        pc_fail_text(p, a, refusal);
        return RDV_OK;
    }

    /* 3. B, memory then database; an empty id is simply not found. */
    rdv_peer_info b;
    if (!req->id || !req->id[0] || p->reg->lookup(p->reg_self, req->id, RDV_LOOKUP_STORED, &b) < 0) {
        (*p->st.id_not_exist)++;
        pc_fail(p, a, HBB__PUNCH_HOLE_RESPONSE__FAILURE__ID_NOT_EXIST); /* 5a 00 */
        return RDV_OK;
    }

    /* 4. online? */
    if (!b.online) {
        (*p->st.offline)++;
        pc_fail(p, a, HBB__PUNCH_HOLE_RESPONSE__FAILURE__OFFLINE);
        return RDV_OK;
    }

    /* 5. punch-request log. */
    pc_punchlog_add(p, a, &b.addr, req->id);

    /* 6.–8. LAN mask, relay, NAT type (raw integer, wire.md §2.2). */
    bool peer_is_lan = pc_is_lan(p, &b.addr), is_lan = pc_is_lan(p, a);
    const char *relay = pc_pick_relay(p);
    int nat = (int)req->nat_type;
    if (p->always_use_relay || peer_is_lan != is_lan) {
        nat = HBB__NAT_TYPE__SYMMETRIC;
        if (peer_is_lan)
            relay = p->local_ip;
    }

    /* 9. same intranet: never for WebSocket requesters (§12). */
    bool ws = ctx->transport == RDV_TR_WS;
    bool same_intranet = !ws && ((peer_is_lan && is_lan) || rdv_addr_same_ip(&b.addr, a));

    /* 10. push to B. OSS sets only these fields; EXT passes on what
     * current clients read (client-flows.md §6.2). */
    uint8_t ma[RDV_ADDR_MANGLED_MAX];
    size_t mn = rdv_addr_mangle(a, pc_tm(p), ma);
    pc_msg m = HBB__RENDEZVOUS_MESSAGE__INIT;
    Hbb__FetchLocalAddr fla = HBB__FETCH_LOCAL_ADDR__INIT;
    Hbb__PunchHole ph = HBB__PUNCH_HOLE__INIT;
    if (p->cfg->field_passthrough) { /* §15.9 */
        fla.socket_addr_v6 = ph.socket_addr_v6 = pc_v6_field(p, req->socket_addr_v6);
        ph.upnp_port = pc_port_field(p, req->upnp_port);
        ph.force_relay = req->force_relay;
    }
    if (same_intranet) {
        fla.socket_addr.data = ma, fla.socket_addr.len = mn;
        fla.relay_server = (char *)relay;
        m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_FETCH_LOCAL_ADDR;
        m.fetch_local_addr = &fla;
        (*p->st.fetch_local_addr)++;
    } else {
        ph.socket_addr.data = ma, ph.socket_addr.len = mn;
        ph.relay_server = (char *)relay;
        ph.nat_type = (Hbb__NatType)nat;
        /* §15.8: B punches UDP towards (A's IP, udp_port) and sends its
         * PunchHoleSent by UDP; only then may one be accepted for A. */
        if (p->cfg->udp_punch && (ph.udp_port = pc_port_field(p, req->udp_port)) > 0)
            pc_pending_mark_udp(p, ctx->conn);
        m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE;
        m.punch_hole = &ph;
        (*p->st.punch_hole)++;
    }
    pc_push(p, &b, &m);
    /* 11. nothing for A now: B's answer is routed back later. */
    return RDV_OK;
}

/* The requester address B echoes back, normalised for the table. Any bytes
 * decode to some address (wire.md §5.3), so garbage simply finds no entry. */
static void pc_requester(const ProtobufCBinaryData *sa, rdv_addr *x)
{
    rdv_addr_unmangle(sa->data, sa->len, x);
    rdv_addr_normalize(x);
}

/* ------------------------------------------------------------------ §6.4 */
/* PunchHoleResponse{b, signed pk, relay, nat_type} to pending[x], where b is
 * the source of B's message: its TCP connection, or (EXT §15.8) the UDP
 * datagram, then with is_udp. */
static int pc_answer_sent(pc *p, const Hbb__PunchHoleSent *s, const rdv_addr *x, const rdv_addr *b, bool udp)
{
    uint8_t mb[RDV_ADDR_MANGLED_MAX];
    Hbb__PunchHoleResponse r = HBB__PUNCH_HOLE_RESPONSE__INIT;
    r.socket_addr.data = mb;
    r.socket_addr.len = rdv_addr_mangle(b, pc_tm(p), mb);
    uint8_t *pk;
    size_t pkn;
    if (pc_signed_pk(p, s->version, s->id, &pk, &pkn) < 0)
        return -ENOMEM;
    r.pk.data = pk, r.pk.len = pkn;
    r.relay_server = s->relay_server;
    /* The oneof member only for known values; UNKNOWN_NAT then shows as 28 00. */
    int nt = (int)s->nat_type;
    if (nt == HBB__NAT_TYPE__UNKNOWN_NAT || nt == HBB__NAT_TYPE__ASYMMETRIC || nt == HBB__NAT_TYPE__SYMMETRIC) {
        r.union_case = HBB__PUNCH_HOLE_RESPONSE__UNION_NAT_TYPE;
        r.nat_type = (Hbb__NatType)nt;
    }
    r.is_udp = udp;
    if (p->cfg->field_passthrough) { /* §15.9: fields 10, 11 */
        r.upnp_port = pc_port_field(p, s->upnp_port);
        r.socket_addr_v6 = pc_v6_field(p, s->socket_addr_v6);
    }
    pc_answer(p, x, &r);
    free(pk);
    return 0;
}

static int pc_on_punch_hole_sent(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    pc *p = state;
    if (pc_wrong_listener(p, ctx))
        return RDV_DECLINED;
    const Hbb__PunchHoleSent *s = ((const pc_msg *)msg_)->punch_hole_sent;
    (*p->st.punch_hole_sent)++;
    rdv_addr x;
    pc_requester(&s->socket_addr, &x);
    /* Only answer work for a waiting requester (no DB lookup or signature
     * for a stray or forged message: nothing would be sent anyway). */
    if (!pc_pending_has(p, &x)) {
        (*p->st.undeliverable)++;
        return RDV_CLOSE;
    }
    int e = pc_answer_sent(p, s, &x, ctx->peer, false); /* b: B's public TCP address */
    return e < 0 ? e : RDV_CLOSE; /* B does not read from this connection */
}

/* EXT §15.8: B's PunchHoleSent by UDP (three copies) after a PunchHole
 * with udp_port. The source is unauthenticated, so: only for a requester
 * still waiting whose request offered a UDP port, answered solely over that
 * requester's connection (the entry is consumed: copies are dropped), and
 * nothing ever goes back by UDP. Everything else is ignored as OSS does
 * (§4.4). */
static int pc_on_udp_punch_hole_sent(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    pc *p = state;
    const Hbb__PunchHoleSent *s = ((const pc_msg *)msg_)->punch_hole_sent;
    rdv_addr x;
    if (!p->cfg->udp_punch || !ctx->listener_name || strcmp(ctx->listener_name, "main") != 0) {
        (*p->st.udp_ignored)++;
        return RDV_OK;
    }
    pc_requester(&s->socket_addr, &x);
    if (!pc_pending_has_udp(p, &x)) {
        (*p->st.udp_ignored)++;
        return RDV_OK;
    }
    (*p->st.udp_punch_hole_sent)++;
    int e = pc_answer_sent(p, s, &x, ctx->peer, true); /* b: the datagram's source */
    return e < 0 ? e : RDV_OK;
}

/* ------------------------------------------------------------------ §6.5 */
static int pc_on_local_addr(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    pc *p = state;
    if (pc_wrong_listener(p, ctx))
        return RDV_DECLINED;
    const Hbb__LocalAddr *l = ((const pc_msg *)msg_)->local_addr;
    (*p->st.local_addr)++;
    rdv_addr x;
    pc_requester(&l->socket_addr, &x);
    if (!pc_pending_has(p, &x)) {
        (*p->st.undeliverable)++;
        return RDV_CLOSE;
    }
    Hbb__PunchHoleResponse r = HBB__PUNCH_HOLE_RESPONSE__INIT;
    r.socket_addr = l->local_addr; /* B's LAN address, bytes copied verbatim */
    if (p->cfg->field_passthrough) /* §15.9: field 11 */
        r.socket_addr_v6 = pc_v6_field(p, l->socket_addr_v6);
    uint8_t *pk;
    size_t pkn;
    if (pc_signed_pk(p, l->version, l->id, &pk, &pkn) < 0)
        return -ENOMEM;
    r.pk.data = pk, r.pk.len = pkn;
    r.relay_server = l->relay_server;
    r.union_case = HBB__PUNCH_HOLE_RESPONSE__UNION_IS_LOCAL;
    r.is_local = true;
    pc_answer(p, &x, &r);
    free(pk);
    return RDV_CLOSE;
}

/* ------------------------------------------------------------------ §6.6 */
static int pc_on_relay_response(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    pc *p = state;
    if (pc_wrong_listener(p, ctx))
        return RDV_DECLINED;
    const Hbb__RelayResponse *in = ((const pc_msg *)msg_)->relay_response;
    (*p->st.relay_response)++;
    rdv_addr x;
    pc_requester(&in->socket_addr, &x);
    if (!pc_pending_has(p, &x)) {
        (*p->st.undeliverable)++;
        return RDV_CLOSE;
    }
    Hbb__RelayResponse rr = *in; /* uuid, refuse_reason, version, feedback, v6, upnp pass through */
    rr.socket_addr.data = NULL, rr.socket_addr.len = 0;
    uint8_t *pk = NULL;
    size_t pkn = 0;
    if (in->union_case == HBB__RELAY_RESPONSE__UNION_ID && in->id && in->id[0]) {
        if (pc_signed_pk(p, in->version, in->id, &pk, &pkn) < 0)
            return -ENOMEM;
        /* The pk member is set even when empty: explicit 2a 00. */
        rr.union_case = HBB__RELAY_RESPONSE__UNION_PK;
        rr.pk.data = pk, rr.pk.len = pkn;
    }
    if (in->relay_server && in->relay_server[0]) {
        if (pc_is_lan(p, &x))
            rr.relay_server = p->local_ip;
        else if (p->local_ip[0] && strcmp(in->relay_server, p->local_ip) == 0)
            rr.relay_server = (char *)pc_pick_relay(p); /* a LAN-only relay for an outside requester */
    }
    pc_msg m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE;
    m.relay_response = &rr;
    pc_pending_deliver(p, &x, &m);
    free(pk);
    return RDV_CLOSE;
}

/* ------------------------------------------------------------------ §6.7 */
static int pc_on_request_relay(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    pc *p = state;
    if (pc_wrong_listener(p, ctx))
        return RDV_DECLINED;
    const Hbb__RequestRelay *in = ((const pc_msg *)msg_)->request_relay;
    pc_pending_park(p, ctx->conn, ctx->peer);
    /* Memory only, no licence check, no online check (a stale address may
     * be used); nothing is sent to A. */
    rdv_peer_info b;
    if (!in->id || !in->id[0] || p->reg->lookup(p->reg_self, in->id, RDV_LOOKUP_MEMORY, &b) < 0) {
        (*p->st.request_relay_unknown)++;
        return RDV_OK;
    }
    Hbb__RequestRelay fwd = *in;
    uint8_t ma[RDV_ADDR_MANGLED_MAX];
    fwd.socket_addr.data = ma;
    fwd.socket_addr.len = rdv_addr_mangle(ctx->peer, pc_tm(p), ma);
    pc_msg m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY;
    m.request_relay = &fwd;
    (*p->st.request_relay)++;
    pc_push(p, &b, &m);
    return RDV_OK; /* keep: B's RelayResponse is routed back here */
}

/* ------------------------------------------------------------------ §4.4 */
/* UDP PunchHoleRequest / PunchHoleSent / LocalAddr: the source address is
 * unauthenticated, so answering would reflect and amplify. Dropped. */
static int pc_on_udp_ignored(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    pc *p = state;
    (void)ctx, (void)msg;
    (*p->st.udp_ignored)++;
    return RDV_OK;
}

/* ------------------------------------------------------------------ ACCESS */
/* A connection whose reply channel was parked (or already used) cannot be
 * answered on any more (§4.2): a request that would be answered on the
 * connection itself (TestNatRequest, RegisterPk's NOT_SUPPORT, EXT online
 * or proxy answers) is closed without reply (R79). */
int pc_access(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    pc *p = state;
    if (!msg || !ctx->conn)
        return RDV_OK;
    switch (ctx->tag) {
    case HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST:
    case HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK:
    case HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_REQUEST:
    case HBB__RENDEZVOUS_MESSAGE__UNION_HTTP_PROXY_REQUEST:
        if (pc_pending_taken(p, ctx->conn)) {
            (*p->st.parked_reply_dropped)++;
            return RDV_CLOSE;
        }
        return RDV_OK;
    default:
        return RDV_OK;
    }
}

#define PC_STREAM(tag_, fn_) { .tag = (tag_), .transports = RDV_TR_TCP | RDV_TR_WS, .fn = (fn_) }
#define PC_UDP_DROP(tag_) { .tag = (tag_), .transports = RDV_TR_UDP, .fn = pc_on_udp_ignored }

const rdv_handler pc_handlers[] = {
    PC_STREAM(HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_REQUEST, pc_on_punch_hole_request),
    PC_STREAM(HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_SENT, pc_on_punch_hole_sent),
    PC_STREAM(HBB__RENDEZVOUS_MESSAGE__UNION_LOCAL_ADDR, pc_on_local_addr),
    PC_STREAM(HBB__RENDEZVOUS_MESSAGE__UNION_RELAY_RESPONSE, pc_on_relay_response),
    PC_STREAM(HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY, pc_on_request_relay),
    PC_UDP_DROP(HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_REQUEST),
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_SENT, .transports = RDV_TR_UDP,
      .fn = pc_on_udp_punch_hole_sent },
    PC_UDP_DROP(HBB__RENDEZVOUS_MESSAGE__UNION_LOCAL_ADDR),
    RDV_HANDLER_END,
};
