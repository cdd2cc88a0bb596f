/* nat_test.c — the nat-test module: TestNatRequest on the main and NAT
 * ports (rendezvous.md §6.8) and, EXT, by UDP (§15.7); OnlineRequest on the
 * NAT port (§6.9) and, EXT, on the main port and WebSocket (§15.11);
 * optionally upstream's loopback admin console on the NAT port (§10,
 * nt_console.c).
 *
 * A client learns its NAT type by asking both ports, from one local port,
 * which source port the server sees. Each NAT-port connection carries
 * exactly one request (§4.3): every answer there closes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nt.h"

static const rdv_setting nt_settings[] = {
    RDV_SETTING_INT(nt_cfg, online_max_ids, 20000, 0, 1000000, RDV_SETF_RELOAD,
                    "ids one OnlineRequest may ask about; a larger request is closed unanswered"),
    RDV_SETTING_BOOL(nt_cfg, online_on_main, true, RDV_SETF_RELOAD,
                     "EXT 15.11: answer OnlineRequest on the main TCP port and WebSocket too, keeping the "
                     "connection (false = OSS: NAT port only)"),
    RDV_SETTING_BOOL(nt_cfg, udp_test_nat, true, RDV_SETF_RELOAD,
                     "EXT 15.7: answer TestNatRequest by UDP on the main port with the source port, when the "
                     "answer is at most udp_test_nat_slack bytes larger than the request"),
    RDV_SETTING_INT(nt_cfg, udp_test_nat_slack, 0, 0, 16, RDV_SETF_RELOAD,
                    "bytes a UDP TestNatResponse may exceed its request (0 = never larger; current clients "
                    "send 3 bytes and need 4)"),
    RDV_SETTING_BOOL(nt_cfg, compat_console, false, 0,
                     "upstream's admin console on the NAT TCP port for loopback sources (needs \"nat\" out of "
                     "core.listeners: this module then owns that port)"),
    RDV_SETTING_INT(nt_cfg, console_port, 0, 0, 65535, 0, "NAT port for compat_console; 0 = main TCP port - 1"),
    RDV_SETTING_STRING(nt_cfg, console_bind, "", 0, "bind address for compat_console; \"\" = all interfaces"),
    RDV_SETTING_END,
};

/* The main TCP port and WebSocket listeners (named "ws…" by the
 * websocket-transport module) get the `cu`; the NAT port never does. */
static bool nt_on_main(const rdv_msg_ctx *ctx)
{
    const char *n = ctx->listener_name ? ctx->listener_name : "";
    return strcmp(n, "main") == 0 || strncmp(n, "ws", 2) == 0;
}

static bool nt_on_nat(const rdv_msg_ctx *ctx)
{
    return ctx->transport == RDV_TR_TCP && ctx->listener_name && strcmp(ctx->listener_name, "nat") == 0;
}

/* §6.8: TestNatResponse{port: source port [, cu]}, then close. */
static int nt_on_test_nat(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    nt *n = state;
    bool main_port = nt_on_main(ctx);
    if (!main_port && !nt_on_nat(ctx))
        return RDV_DECLINED;
    const Hbb__TestNatRequest *req = ((const Hbb__RendezvousMessage *)msg)->test_nat_request;
    Hbb__TestNatResponse r = HBB__TEST_NAT_RESPONSE__INIT;
    Hbb__ConfigUpdate cu = HBB__CONFIG_UPDATE__INIT;
    /* A WebSocket connection attributed via a proxy header has port 0. */
    r.port = rdv_addr_port(ctx->peer);
    /* The registry's serial and list, as changed by a loopback ConfigUpdate. */
    int32_t serial = 0;
    const rdv_strlist *servers = NULL;
    if (main_port && n->reg->config && n->reg->config(n->reg_self, &serial, &servers) == 0 && servers &&
        serial > req->serial) {
        cu.serial = serial;
        cu.n_rendezvous_servers = servers->n;
        cu.rendezvous_servers = servers->v;
        r.cu = &cu;
        (*n->st.test_nat_cu)++;
    }
    Hbb__RendezvousMessage out = HBB__RENDEZVOUS_MESSAGE__INIT;
    out.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE;
    out.test_nat_response = &r;
    (*n->st.test_nat)++;
    int e = n->core->api->send(n->core, ctx->conn, &out);
    return e < 0 ? e : RDV_CLOSE;
}

/* EXT §15.7: TestNatResponse{port} to the datagram's source, and only when
 * it is not larger than the request by more than udp_test_nat_slack bytes:
 * the source is unauthenticated, so this must not amplify (no `cu`). */
static int nt_on_test_nat_udp(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    nt *n = state;
    (void)msg;
    if (!n->cfg->udp_test_nat || !ctx->listener_name || strcmp(ctx->listener_name, "main") != 0)
        return RDV_DECLINED;
    Hbb__TestNatResponse r = HBB__TEST_NAT_RESPONSE__INIT;
    r.port = rdv_addr_port(ctx->peer);
    Hbb__RendezvousMessage out = HBB__RENDEZVOUS_MESSAGE__INIT;
    out.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE;
    out.test_nat_response = &r;
    if (protobuf_c_message_get_packed_size(&out.base) > ctx->raw_len + (size_t)n->cfg->udp_test_nat_slack) {
        (*n->st.udp_test_nat_dropped)++;
        return RDV_OK;
    }
    if (n->core->api->send_udp(n->core, ctx->listener, ctx->peer, &out) == 0)
        (*n->st.udp_test_nat)++;
    return RDV_OK;
}

/* §6.9: one bit per asked id, most significant bit first; exactly
 * ceil(n/8) bytes (clients index it without a length check). Memory-only
 * lookups: stored-only ids are offline. The NAT port closes after the
 * answer; the main port and WebSocket (EXT §15.11) keep the connection. */
static int nt_on_online(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    nt *n = state;
    bool nat = nt_on_nat(ctx);
    if (!nat && !(n->cfg->online_on_main && nt_on_main(ctx)))
        return RDV_DECLINED;
    const Hbb__OnlineRequest *req = ((const Hbb__RendezvousMessage *)msg)->online_request;
    (*n->st.online)++;
    size_t np = req->n_peers;
    if ((int64_t)np > n->cfg->online_max_ids) {
        (*n->st.online_too_many)++;
        RDV_LOG_RL(n->core, RDV_LOG_NOTICE, "OnlineRequest for %zu ids (online_max_ids=%lld): closed", np,
                   (long long)n->cfg->online_max_ids);
        return RDV_CLOSE;
    }
    (*n->st.online_ids) += np;
    uint8_t *states = calloc((np + 7) / 8 + 1, 1);
    if (!states)
        return -ENOMEM;
    for (size_t i = 0; i < np; i++) {
        rdv_peer_info info;
        const char *id = req->peers[i];
        if (id && id[0] && n->reg->lookup(n->reg_self, id, RDV_LOOKUP_MEMORY, &info) == 0 && info.online)
            states[i / 8] |= (uint8_t)(0x80u >> (i % 8));
    }
    Hbb__OnlineResponse r = HBB__ONLINE_RESPONSE__INIT;
    r.states.data = states;
    r.states.len = (np + 7) / 8;
    Hbb__RendezvousMessage out = HBB__RENDEZVOUS_MESSAGE__INIT;
    out.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_RESPONSE;
    out.online_response = &r;
    int e = n->core->api->send(n->core, ctx->conn, &out);
    free(states);
    return e < 0 ? e : nat ? RDV_CLOSE : RDV_OK;
}

static const rdv_handler nt_handlers[] = {
    /* listener filtered in code: "main", "nat" and "ws…" */
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST, .transports = RDV_TR_TCP | RDV_TR_WS,
      .fn = nt_on_test_nat },
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST, .transports = RDV_TR_UDP, .listener = "main",
      .fn = nt_on_test_nat_udp },
    /* "nat" (OSS), and "main" / "ws…" with online_on_main (EXT §15.11) */
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_REQUEST, .transports = RDV_TR_TCP | RDV_TR_WS,
      .fn = nt_on_online },
    RDV_HANDLER_END,
};

static int nt_init(rdv_core *core, const void *cfg, void **state)
{
    nt *n = calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    n->core = core, n->cfg = cfg;
    const rdv_core_api *api = core->api;
    n->reg = api->service_get(core, RDV_SVC_REGISTRY, RDV_SVC_REGISTRY_VERSION, &n->reg_self);
    if (!n->reg) {
        RDV_ERR(core, "needs the \"%s\" service (add the registry module to core.modules)", RDV_SVC_REGISTRY);
        free(n);
        return -ENOENT;
    }
    struct { uint64_t **v; const char *name, *help; } cs[] = {
        { &n->st.test_nat, "test_nat", "TestNatRequests answered" },
        { &n->st.test_nat_cu, "test_nat_cu", "TestNatResponses carrying a ConfigUpdate" },
        { &n->st.online, "online_requests", "OnlineRequests" },
        { &n->st.online_ids, "online_ids", "ids asked about in OnlineRequests" },
        { &n->st.online_too_many, "online_too_many", "OnlineRequests over online_max_ids (closed)" },
        { &n->st.udp_test_nat, "udp_test_nat", "TestNatRequests answered by UDP (EXT 15.7)" },
        { &n->st.udp_test_nat_dropped, "udp_test_nat_dropped",
          "UDP TestNatRequests not answered: the answer would be larger (udp_test_nat_slack)" },
        { &n->st.console_commands, "console_commands", "compat console commands run" },
        { &n->st.console_refused, "console_refused", "compat console inputs refused (not UTF-8, empty, unknown)" },
        { &n->st.console_frames, "console_frames", "NAT-port requests when this module owns the port" },
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        if (!(*cs[i].v = api->counter(core, cs[i].name, cs[i].help))) {
            free(n);
            return -ENOMEM;
        }
    if (api->core_int(core, "max_frame", &n->max_frame) < 0)
        n->max_frame = 1 << 20;
    *state = n;
    return 0;
}

static int nt_start(void *state)
{
    nt *n = state;
    if (n->cfg->compat_console)
        return nt_console_open(n);
    if (!n->core->api->listener_find(n->core, "nat", RDV_TR_TCP))
        RDV_WARN(n->core, "no TCP listener \"nat\" in core.listeners: the NAT test and online queries "
                          "work on the main port only");
    return 0;
}

static int nt_reconfigure(void *state, const void *cfg)
{
    ((nt *)state)->cfg = cfg;
    return 0;
}

static void nt_destroy(void *state) { free(state); }

static const rdv_dep nt_requires[] = {
    { .name = RDV_SVC_REGISTRY, .version = RDV_SVC_REGISTRY_VERSION },
    { .name = NULL },
};

static const rdv_module nt_module = {
    RDV_MODULE_HEAD("nat-test", "1.0.0"),
    .description = "NAT-type test (TestNatRequest on TCP and UDP) and online status (OnlineRequest); opt-in "
                   "upstream console",
    .settings = nt_settings,
    .config_size = sizeof(nt_cfg),
    .handlers = nt_handlers,
    .requires = nt_requires,
    .init = nt_init,
    .start = nt_start,
    .reconfigure = nt_reconfigure,
    .destroy = nt_destroy,
};
RDV_MODULE_EXPORT(nt_module)
