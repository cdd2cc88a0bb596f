/* candy_net.c — the clients of a Candy network and what their messages do
 * (candy.md §6). Each WebSocket side of our port is one client; the
 * authenticated ones are also in a map by virtual address, through which
 * FORWARD, UDP4CONN, DISCOVERY and GENERAL are routed. Every message is
 * checked before it is acted on, and every "disconnect" of §6.2 is a close
 * without a close frame, as the native server does.
 *
 * Sending to a client can close it (its write queue overflowing), which
 * calls side_closed and frees it at once: after a send, a client is found
 * again by id before it is used. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "candy.h"

RDV_UTHASH_HOOK_DEFINE()

#define CANDY_SKEW_WARN_S 300 /* the native server's warning threshold (§6.2) */

static candy_client *cl_find(candy_mod *m, rdv_conn_id id)
{
    candy_client *c = NULL;
    HASH_FIND(hh, m->clients, &id, sizeof id, c);
    return c;
}

static candy_client *cl_by_ip(candy_mod *m, uint32_t ip)
{
    candy_client *c = NULL;
    HASH_FIND(hh_ip, m->by_ip, &ip, sizeof ip, c);
    return c;
}

/* The client gives up its address (closing, or moving to another). */
static void cl_unmap(candy_mod *m, candy_client *c)
{
    if (!c->ip)
        return;
    if (cl_by_ip(m, c->ip) == c) { /* §6.2: only if it still points here */
        HASH_DELETE(hh_ip, m->by_ip, c);
        m->nauth--;
    }
    c->ip = 0;
}

static void cl_free(candy_mod *m, candy_client *c)
{
    cl_unmap(m, c);
    HASH_DEL(m->clients, c);
    m->nclients--;
    free(c);
}

/* ------------------------------------------------------------------ checks */
static const char *cl_addr(const candy_client *c, char *buf, size_t cap) { return rdv_addr_str(&c->peer, buf, cap); }

/* A message that ends the connection: counted, logged (rate-limited). */
static int cl_refuse(candy_mod *m, candy_client *c, uint64_t *ctr, const char *why)
{
    char a[RDV_ADDR_STRLEN];
    (*ctr)++;
    RDV_LOG_RL(m->core, RDV_LOG_INFO, "candy: client %llu from %s: %s; closing", (unsigned long long)c->id,
               cl_addr(c, a, sizeof a), why);
    return RDV_CLOSE;
}

static int cl_check_error(candy_mod *m, candy_client *c, int e, const char *kind)
{
    char why[96];
    snprintf(why, sizeof why, "%s: %s", kind, candy_strerror(e));
    return cl_refuse(m, c, e == CANDY_E_HASH ? m->st.auth_bad_hash : m->st.protocol_error, why);
}

/* §6.2: timestamps are only logged unless timestamp_window_s is set. */
static int cl_check_time(candy_mod *m, candy_client *c, int64_t ts, const char *kind)
{
    int64_t now = (int64_t)(m->core->api->wall_us(m->core) / 1000000u);
    /* unsigned: any ts the wire can carry, INT64_MIN too, without overflow */
    uint64_t skew = now > ts ? (uint64_t)now - (uint64_t)ts : (uint64_t)ts - (uint64_t)now;
    if (m->cfg->timestamp_window_s && skew > (uint64_t)m->cfg->timestamp_window_s) {
        char why[128];
        snprintf(why, sizeof why, "%s timestamp %llu s off (candy.timestamp_window_s = %lld)", kind,
                 (unsigned long long)skew,
                 (long long)m->cfg->timestamp_window_s);
        return cl_refuse(m, c, m->st.timestamp_refused, why);
    }
    if (skew > CANDY_SKEW_WARN_S) {
        char a[RDV_ADDR_STRLEN];
        RDV_LOG_RL(m->core, RDV_LOG_INFO, "candy: client %llu from %s: %s timestamp %llu s off (accepted)",
                   (unsigned long long)c->id, cl_addr(c, a, sizeof a), kind, (unsigned long long)skew);
    }
    return RDV_OK;
}

/* Token buckets in thousandths of a message, one second of burst. */
static bool cl_take(uint64_t *tokens, int64_t rate)
{
    if (!rate)
        return true;
    if (*tokens < 1000)
        return false;
    *tokens -= 1000;
    return true;
}

static uint64_t cl_burst(const candy_mod *m)
{
    uint64_t r = (uint64_t)m->cfg->rate;
    return r < CANDY_BURST_MIN ? CANDY_BURST_MIN : r;
}

static void cl_refill(candy_mod *m, candy_client *c)
{
    uint64_t now = m->core->api->now_ms(m->core), dt = now - c->refill_ms;
    c->refill_ms = now;
    uint64_t r = (uint64_t)m->cfg->rate, b = (uint64_t)m->cfg->broadcast_rate, cap = cl_burst(m) * 1000;
    c->tokens = c->tokens + dt * r > cap ? cap : c->tokens + dt * r;
    c->btokens = c->btokens + dt * b > b * 1000 ? b * 1000 : c->btokens + dt * b;
}

/* ------------------------------------------------------------------ sending */
/* One message to a client. Packets (FORWARD and broadcasts) are dropped
 * rather than queued past queue_max: a client that reads slowly loses its
 * own packets, like a congested link, and stalls nobody (§6.7). */
static void cl_send(candy_mod *m, rdv_conn_id to, const uint8_t *p, size_t n, bool packet)
{
    if (packet) {
        rdv_conn_info info;
        if (m->core->api->conn_info(m->core, to, &info) == 0 && info.wqueue > (size_t)m->cfg->queue_max) {
            (*m->st.dropped_queue)++;
            return;
        }
    }
    m->ops->send(m->tp, to, p, n); /* a failure closes `to`: side_closed has freed it */
}

/* To every authenticated client but the sender, from a snapshot of ids:
 * a send can close (and unlink) any of them. */
static void cl_broadcast(candy_mod *m, candy_client *from, const uint8_t *p, size_t n)
{
    if (!cl_take(&from->btokens, m->cfg->broadcast_rate)) {
        (*m->st.dropped_rate)++;
        return;
    }
    if (m->scratch_cap < m->nauth) {
        rdv_conn_id *v = realloc(m->scratch, m->nauth * sizeof *v);
        if (!v) {
            (*m->st.oom)++;
            return;
        }
        m->scratch = v, m->scratch_cap = m->nauth;
    }
    size_t k = 0;
    rdv_conn_id self = from->id;
    for (candy_client *c = m->by_ip; c && k < m->scratch_cap; c = c->hh_ip.next)
        if (c->id != self)
            m->scratch[k++] = c->id;
    for (size_t i = 0; i < k; i++)
        cl_send(m, m->scratch[i], p, n, true);
}

/* To the owner of dst, or everyone for 255.255.255.255 (DISCOVERY,
 * GENERAL: §6.2). */
static void cl_route(candy_mod *m, candy_client *from, uint32_t dst, const uint8_t *p, size_t n)
{
    (*m->st.relayed)++;
    if (dst == CANDY_BROADCAST) {
        cl_broadcast(m, from, p, n);
        return;
    }
    candy_client *to = cl_by_ip(m, dst);
    if (to)
        cl_send(m, to->id, p, n, false);
}

/* ------------------------------------------------------------------ messages */
typedef struct cl_alloc_ctx {
    candy_mod *m;
    candy_client *c;
} cl_alloc_ctx;

/* §6.3: an address is free for this client if nobody holds it, it holds
 * it itself, or its holder presented the same vmac (the same machine
 * reconnecting; its AUTH will replace the old connection). */
static bool cl_taken(void *ud, uint32_t host)
{
    cl_alloc_ctx *x = ud;
    candy_client *o = cl_by_ip(x->m, host);
    if (!o || o == x->c)
        return false;
    return !(o->has_vmac && x->c->has_vmac && memcmp(o->vmac, x->c->vmac, CANDY_VMAC_BYTES) == 0);
}

static int cl_expttun(candy_mod *m, candy_client *c, const uint8_t *p, size_t n)
{
    candy_cidr want, got;
    int64_t ts;
    int e = candy_check_expttun(p, n, &m->secret, &want, &ts);
    if (e != CANDY_OK)
        return cl_check_error(m, c, e, "EXPTTUN");
    if (!m->has_dhcp)
        return cl_refuse(m, c, m->st.protocol_error, "EXPTTUN but candy.dhcp is not set (clients need a static tun)");
    if (cl_check_time(m, c, ts, "EXPTTUN") != RDV_OK)
        return RDV_CLOSE;
    cl_alloc_ctx x = { m, c };
    if (candy_dhcp_alloc(&m->dhcp, &m->cursor, want, cl_taken, &x, &got) < 0) {
        char net[24];
        candy_cidr_format(m->dhcp, net, sizeof net);
        RDV_LOG_RL(m->core, RDV_LOG_WARN, "candy: every address of candy.dhcp = %s is in use; refusing a client", net);
        (*m->st.expttun_full)++;
        return RDV_CLOSE;
    }
    uint8_t out[CANDY_EXPTTUN_LEN];
    candy_build_expttun(out, &m->secret, got, (int64_t)(m->core->api->wall_us(m->core) / 1000000u));
    (*m->st.expttun_granted)++;
    m->ops->send(m->tp, c->id, out, sizeof out);
    return RDV_OK;
}

static int cl_auth(candy_mod *m, candy_client *c, const uint8_t *p, size_t n)
{
    uint32_t ip;
    int64_t ts;
    int e = candy_check_auth(p, n, &m->secret, &ip, &ts);
    if (e != CANDY_OK)
        return cl_check_error(m, c, e, "AUTH");
    if (!ip)
        return cl_refuse(m, c, m->st.protocol_error, "AUTH for 0.0.0.0");
    if (candy_is_broadcast(ip, m->has_dhcp ? &m->dhcp : NULL)) /* it would own everyone's broadcasts */
        return cl_refuse(m, c, m->st.protocol_error, "AUTH for a broadcast or multicast address");
    if (cl_check_time(m, c, ts, "AUTH") != RDV_OK)
        return RDV_CLOSE;
    rdv_conn_id self = c->id;
    if (c->ip != ip) {
        cl_unmap(m, c); /* §6.2: a second AUTH moves the entry (native leaves it behind) */
        candy_client *old = cl_by_ip(m, ip);
        if (old) {
            /* §6.2 "reconnect": the newcomer takes the address; the
             * previous holder is dropped (native: within a second). */
            char a[RDV_ADDR_STRLEN], ipb[16];
            RDV_LOG_RL(m->core, RDV_LOG_INFO, "candy: %s taken over by client %llu from %s; closing client %llu",
                       candy_ip_format(ip, ipb, sizeof ipb), (unsigned long long)self, cl_addr(c, a, sizeof a),
                       (unsigned long long)old->id);
            cl_unmap(m, old);
            (*m->st.kicked)++;
            m->ops->close(m->tp, old->id, 0);
        }
        c->ip = ip;
        HASH_ADD(hh_ip, m->by_ip, ip, sizeof c->ip, c);
        if (!c->hh_ip.tbl) { /* no memory for the map: the client may retry */
            c->ip = 0;
            (*m->st.oom)++;
            return RDV_CLOSE;
        }
        m->nauth++;
    }
    (*m->st.auth_ok)++;
    /* §6.5: the SD-WAN routes that apply to it, in batches. */
    uint8_t route[CANDY_ROUTE_MAX_LEN];
    size_t pos = 0, len;
    while ((len = candy_route_build(m->rules, m->nrules, &pos, ip, route)) > 0) {
        m->ops->send(m->tp, self, route, len);
        if (!cl_find(m, self))
            return RDV_OK; /* the send closed it */
    }
    return RDV_OK;
}

static int cl_vmac(candy_mod *m, candy_client *c, const uint8_t *p, size_t n)
{
    uint8_t vmac[CANDY_VMAC_BYTES];
    int64_t ts;
    int e = candy_check_vmac(p, n, &m->secret, vmac, &ts);
    if (e != CANDY_OK)
        return cl_check_error(m, c, e, "VMAC");
    if (cl_check_time(m, c, ts, "VMAC") != RDV_OK)
        return RDV_CLOSE;
    static const uint8_t none[CANDY_VMAC_BYTES];
    c->has_vmac = memcmp(vmac, none, sizeof none) != 0; /* zeros: the client has none stored (§5.5) */
    memcpy(c->vmac, vmac, sizeof vmac);
    (*m->st.vmac_ok)++;
    return RDV_OK;
}

/* FORWARD, UDP4CONN, DISCOVERY, GENERAL: after AUTH only (§6.2). */
static int cl_routed(candy_mod *m, candy_client *c, const uint8_t *p, size_t n)
{
    if (!c->ip)
        return cl_refuse(m, c, m->st.not_authenticated, "message before AUTH");
    if (n > (size_t)m->cfg->client_max) {
        /* Native closes the sender at 1500 bytes; relaying it would make
         * every receiving stock client reconnect instead. Dropped, so the
         * sender's smaller packets still flow. */
        char a[RDV_ADDR_STRLEN];
        RDV_LOG_RL(m->core, RDV_LOG_WARN,
                   "candy: client %llu from %s sent a %zu-byte message; dropped, clients read at most %lld "
                   "(candy.client_max; the sending client's mtu must be at most %lld)",
                   (unsigned long long)c->id, cl_addr(c, a, sizeof a), n, (long long)m->cfg->client_max,
                   (long long)m->cfg->client_max - 1);
        (*m->st.dropped_too_big)++;
        return RDV_OK;
    }
    switch (p[0]) {
    case CANDY_FORWARD: {
        if (n < CANDY_FORWARD_MIN)
            return cl_refuse(m, c, m->st.protocol_error, "FORWARD shorter than an IPv4 header");
        uint32_t daddr = candy_forward_daddr(p);
        candy_client *to = cl_by_ip(m, daddr);
        if (to) {
            (*m->st.forward_unicast)++;
            cl_send(m, to->id, p, n, true);
        } else if (candy_is_broadcast(daddr, m->has_dhcp ? &m->dhcp : NULL)) {
            (*m->st.forward_broadcast)++;
            cl_broadcast(m, c, p, n);
        } else {
            (*m->st.forward_no_owner)++; /* §6.2: dropped silently */
        }
        return RDV_OK;
    }
    case CANDY_UDP4CONN:
    case CANDY_DISCOVERY: {
        size_t need = p[0] == CANDY_UDP4CONN ? CANDY_UDP4CONN_LEN : CANDY_DISCOVERY_LEN;
        if (n < need)
            return cl_refuse(m, c, m->st.protocol_error, p[0] == CANDY_UDP4CONN ? "UDP4CONN too short" : "DISCOVERY too short");
        if (candy_src(p) != c->ip)
            return cl_refuse(m, c, m->st.protocol_error, "src is not the client's own address");
        uint32_t dst = candy_dst(p);
        if (p[0] == CANDY_UDP4CONN && dst == CANDY_BROADCAST)
            return RDV_OK; /* UDP4CONN is unicast only: nobody owns 255.255.255.255 */
        cl_route(m, c, dst, p, n);
        return RDV_OK;
    }
    default: /* CANDY_GENERAL */
        if (n < CANDY_GENERAL_MIN)
            return cl_refuse(m, c, m->st.protocol_error, "GENERAL too short");
        if (candy_general_src(p) != c->ip)
            return cl_refuse(m, c, m->st.protocol_error, "src is not the client's own address");
        cl_route(m, c, candy_general_dst(p), p, n);
        return RDV_OK;
    }
}

static int cl_message(candy_mod *m, candy_client *c, const uint8_t *p, size_t n)
{
    if (!n)
        return RDV_OK; /* §4: only non-empty binary frames are messages */
    cl_refill(m, c);
    if (!cl_take(&c->tokens, m->cfg->rate)) {
        (*m->st.dropped_rate)++;
        return RDV_OK;
    }
    switch (p[0]) {
    case CANDY_VMAC:
        return cl_vmac(m, c, p, n);
    case CANDY_EXPTTUN:
        return cl_expttun(m, c, p, n);
    case CANDY_AUTH:
        return cl_auth(m, c, p, n);
    case CANDY_FORWARD:
    case CANDY_UDP4CONN:
    case CANDY_DISCOVERY:
    case CANDY_GENERAL:
        return cl_routed(m, c, p, n);
    default: /* unknown kinds, and ROUTE from a client: ignored (§5) */
        (*m->st.ignored)++;
        return RDV_OK;
    }
}

/* ------------------------------------------------------------------ ws-server side contract */
static int candy_side_open(void *self, rdv_conn_id id, const rdv_addr *peer, const rdv_addr *tcp_peer,
                           const uint8_t *first, size_t n, const rdv_ws_side_ops *ops, void *tp)
{
    candy_mod *m = self;
    (void)tcp_peer;
    m->ops = ops, m->tp = tp;
    if ((int64_t)m->nclients >= m->cfg->max_clients) {
        char a[RDV_ADDR_STRLEN];
        (*m->st.clients_refused)++;
        RDV_LOG_RL(m->core, RDV_LOG_WARN, "candy: candy.max_clients = %lld reached; refusing %s",
                   (long long)m->cfg->max_clients, rdv_addr_str(peer, a, sizeof a));
        return RDV_CLOSE;
    }
    candy_client *c = calloc(1, sizeof *c);
    if (!c) {
        (*m->st.oom)++;
        return RDV_CLOSE;
    }
    c->id = id, c->peer = *peer;
    c->since_ms = c->refill_ms = m->core->api->now_ms(m->core);
    c->tokens = cl_burst(m) * 1000, c->btokens = (uint64_t)m->cfg->broadcast_rate * 1000;
    HASH_ADD(hh, m->clients, id, sizeof c->id, c);
    if (!c->hh.tbl) {
        free(c);
        (*m->st.oom)++;
        return RDV_CLOSE;
    }
    m->nclients++;
    int r = cl_message(m, c, first, n);
    c = cl_find(m, id);
    if (r != RDV_OK && c) /* refused: no side_closed follows, so forget it here */
        cl_free(m, c);
    return r;
}

static int candy_side_message(void *self, rdv_conn_id id, const uint8_t *p, size_t n)
{
    candy_mod *m = self;
    candy_client *c = cl_find(m, id);
    return c ? cl_message(m, c, p, n) : RDV_CLOSE;
}

static void candy_side_closed(void *self, rdv_conn_id id)
{
    candy_mod *m = self;
    candy_client *c = cl_find(m, id);
    if (c)
        cl_free(m, c);
}

const rdv_ws_side_api candy_side_api = {
    .side_open = candy_side_open,
    .side_message = candy_side_message,
    .side_closed = candy_side_closed,
};

void candy_forget_all(candy_mod *m)
{
    candy_client *c, *tmp;
    HASH_ITER(hh, m->clients, c, tmp)
        cl_free(m, c);
}

/* ------------------------------------------------------------------ configuration */
int candy_parse_network(const candy_cfg *cfg, bool *has_dhcp, candy_cidr *dhcp, candy_rule **rules, size_t *nrules,
                        char *err, size_t errlen)
{
    *has_dhcp = false, *rules = NULL, *nrules = 0;
    if (*cfg->dhcp) {
        if (candy_cidr_parse(cfg->dhcp, strlen(cfg->dhcp) + 1, dhcp) != CANDY_OK) {
            snprintf(err, errlen, "candy.dhcp = \"%s\" is not an IPv4 address/prefix such as \"10.0.0.0/24\"", cfg->dhcp);
            return -EINVAL;
        }
        if (dhcp->prefix > 30) {
            snprintf(err, errlen, "candy.dhcp = \"%s\" leaves no address for clients: use a prefix of 30 or less",
                     cfg->dhcp);
            return -EINVAL;
        }
        *has_dhcp = true;
    }
    if (!cfg->sdwan.n)
        return 0;
    candy_rule *v = calloc(CANDY_MAX_RULES, sizeof *v);
    if (!v)
        return -ENOMEM;
    size_t total = 0;
    for (size_t i = 0; i < cfg->sdwan.n; i++) {
        size_t k = 0;
        char why[160];
        int e = candy_rules_parse(cfg->sdwan.v[i], v + total, CANDY_MAX_RULES - total, &k, why, sizeof why);
        if (e == -E2BIG)
            snprintf(err, errlen, "candy.sdwan: more than %d rules", CANDY_MAX_RULES);
        else if (e < 0)
            snprintf(err, errlen, "candy.sdwan: entry %zu (\"%.60s\"): %s", i + 1, cfg->sdwan.v[i], why);
        if (e < 0) {
            free(v);
            return -EINVAL;
        }
        total += k;
    }
    *rules = v, *nrules = total;
    return 0;
}
