/* secure_tcp.c — the secure-tcp module: offers the secure-TCP key exchange
 * on every accepted main-port TCP connection and installs the key the
 * client sends back (rendezvous.md §15.1–§15.2, wire.md §6.3, §6.10,
 * client-flows.md §5.2). The record layer itself is the core's.
 *
 * Life of a connection here: conn.open hook -> frame 1 sent, box secret key
 * kept -> the client's first frame settles it: a KeyExchange is checked and
 * its key installed (stcp_accept), anything else leaves the connection in
 * plaintext (ACCESS callback) -> the offer is forgotten either way, or at
 * conn.close. With `enabled = false` nothing is offered and every received
 * KeyExchange closes the connection (OSS, rendezvous.md §4.2). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stcp.h"

/* Only the main rendezvous port: never WebSocket (§6.9), never the NAT port. */
#define STCP_LISTENER "main"

static const rdv_setting stcp_settings[] = {
    RDV_SETTING_BOOL(stcp_cfg, enabled, true, RDV_SETF_RELOAD,
                     "send KeyExchange on every accepted main-port TCP connection (EXT §15.1); "
                     "false = OSS: never offer, close on a received KeyExchange"),
    RDV_SETTING_INT(stcp_cfg, max_pending, 16384, 1, 1048576, RDV_SETF_RELOAD,
                    "offers awaiting the client's first frame; when full, new connections get no offer "
                    "(they stay in plaintext)"),
    RDV_SETTING_INT(stcp_cfg, precompute, 16, 0, 1024, RDV_SETF_RELOAD,
                    "KeyExchange offers prepared ahead on the loop's quiet moments, so an accepted connection "
                    "gets frame 1 without ~50 µs of key generation and signing (0: made on accept)"),
    RDV_SETTING_END,
};

/* ---- hooks and ACCESS */
static void stcp_on_open(void *ud, const void *arg)
{
    stcp *s = ud;
    const rdv_conn_event *ev = arg;
    if (ev->transport != RDV_TR_TCP || strcmp(ev->listener_name, STCP_LISTENER) != 0 || !s->cfg->enabled)
        return;
    stcp_offer(s, ev->id);
}

static void stcp_on_close(void *ud, const void *arg)
{
    stcp *s = ud;
    stcp_forget(s, ((const rdv_conn_event *)arg)->id);
}

/* Every decoded stream message passes here first: the client's first frame
 * decides. A plain message is dispatched normally and the connection stays
 * in plaintext; a KeyExchange is left to the handler. */
static int stcp_access(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    stcp *s = state;
    if (msg && ctx->conn && s->npending && ctx->tag != HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE)
        stcp_settle_plaintext(s, ctx->conn);
    return RDV_OK;
}

/* ---- handler */
static int stcp_on_key_exchange(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    const Hbb__RendezvousMessage *m = msg;
    return stcp_accept(state, ctx->conn, m->key_exchange);
}

static const rdv_handler stcp_handlers[] = {
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE, .transports = RDV_TR_TCP, .listener = STCP_LISTENER,
      .fn = stcp_on_key_exchange },
    RDV_HANDLER_END,
};

/* ---- stats */
static uint64_t stcp_pending_gauge(void *ud) { return ((stcp *)ud)->npending; }
static uint64_t stcp_can_sign_gauge(void *ud)
{
    stcp *s = ud;
    return s->keys->can_sign(s->keys_self) ? 1 : 0;
}

static uint64_t stcp_prepared_gauge(void *ud) { return ((stcp *)ud)->npool; }

static void stcp_counters(stcp *s)
{
    rdv_core *c = s->core;
    uint64_t *(*ctr)(rdv_core *, const char *, const char *) = c->api->counter;
    s->st.offered = ctr(c, "offered", "KeyExchange offers sent (frame 1)");
    s->st.completed = ctr(c, "completed", "handshakes completed: key installed");
    s->st.plaintext = ctr(c, "plaintext", "offers answered by a plain message (connection stays plaintext)");
    s->st.offered_prepared = ctr(c, "offered_prepared", "offers taken from the prepared pool (secure-tcp.precompute)");
    s->st.prepared_discarded = ctr(c, "prepared_discarded", "prepared offers wiped because the server key changed");
    s->st.skipped_nokey = ctr(c, "skipped_nokey", "connections not offered: no signing key (wire.md §6.10)");
    s->st.skipped_full = ctr(c, "skipped_full", "connections not offered: max_pending reached");
    s->st.skipped_error = ctr(c, "skipped_error", "connections not offered: key generation, signing or send failed");
    s->st.failed_count = ctr(c, "failed_count", "client KeyExchange closed: not exactly 2 keys");
    s->st.failed_length = ctr(c, "failed_length", "client KeyExchange closed: keys not 32 and 48 bytes");
    s->st.failed_box = ctr(c, "failed_box", "client KeyExchange closed: sealed key did not open");
    s->st.failed_unexpected = ctr(c, "failed_unexpected",
                                  "KeyExchange closed: none offered, already answered, or not the first frame");
    s->st.failed_install = ctr(c, "failed_install", "client KeyExchange closed: the core refused the key");
    s->st.oom = ctr(c, "oom", "connections not offered: out of memory (they stay in plaintext)");
}

/* ---- lifecycle */
static int stcp_init(rdv_core *core, const void *cfg, void **state)
{
    if (sodium_init() < 0)
        return -EIO;
    stcp *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->core = core, s->cfg = cfg;
    s->keys = core->api->service_get(core, RDV_SVC_KEYS, RDV_SVC_KEYS_VERSION, &s->keys_self);
    if (!s->keys) {
        RDV_ERR(core, "the \"keys\" service is missing; fix: add \"keys\" to core.modules");
        free(s);
        return -ENOENT;
    }
    stcp_counters(s);
    int r;
    /* Early on open, so the offer is the first frame the client reads. */
    if ((r = core->api->hook_add(core, RDV_HOOK_CONN_OPEN, -100, stcp_on_open, s)) < 0 ||
        (r = core->api->hook_add(core, RDV_HOOK_CONN_CLOSE, 0, stcp_on_close, s)) < 0 ||
        (r = core->api->gauge(core, "pending", stcp_pending_gauge, s, "offers awaiting the client's first frame")) < 0 ||
        (r = core->api->gauge(core, "can_sign", stcp_can_sign_gauge, s, "1 when a signing key is loaded")) < 0 ||
        (r = core->api->gauge(core, "prepared", stcp_prepared_gauge, s, "offers prepared ahead, ready to send")) < 0 ||
        (r = stcp_pool_init(s)) < 0) {
        stcp_pool_free(s);
        free(s);
        return r;
    }
    *state = s;
    return 0;
}

static int stcp_start(void *state)
{
    stcp *s = state;
    if (!s->cfg->enabled)
        RDV_INFO(s->core, "disabled: no KeyExchange offered; a received one closes the connection");
    else if (!s->keys->can_sign(s->keys_self))
        RDV_NOTICE(s->core, "no signing key: KeyExchange is not offered (clients that require secure TCP, "
                            "e.g. logged-in clients >= 1.4.1, will fail); fix: keys.key = \"-\" or a secret key");
    return 0;
}

/* New values apply to connections accepted from now on; pending offers
 * stay answerable. */
static int stcp_reconfigure(void *state, const void *cfg)
{
    stcp *s = state;
    s->cfg = cfg;
    stcp_pool_resize(s);
    return 0;
}

static void stcp_destroy(void *state)
{
    stcp *s = state;
    stcp_forget_all(s);
    stcp_pool_free(s);
    free(s);
}

static const rdv_dep stcp_requires[] = {
    { .name = RDV_SVC_KEYS, .version = RDV_SVC_KEYS_VERSION },
    { .name = NULL },
};

static const rdv_module stcp_module = {
    RDV_MODULE_HEAD("secure-tcp", "1.0.0"),
    .description = "secure-TCP key exchange on the main TCP port (EXT rendezvous.md §15.1-15.2)",
    .settings = stcp_settings,
    .config_size = sizeof(stcp_cfg),
    .handlers = stcp_handlers,
    .access = stcp_access,
    .access_priority = 100,
    .requires = stcp_requires,
    .init = stcp_init,
    .start = stcp_start,
    .reconfigure = stcp_reconfigure,
    .destroy = stcp_destroy,
};
RDV_MODULE_EXPORT(stcp_module)
