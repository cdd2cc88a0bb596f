/* example.c — the template module: answers TestNatRequest with the source
 * port the request came from, over UDP and TCP, on one listener.
 *
 * Copy this directory to start a module (README.md). The shape is always
 * the same: a settings struct + table, a state struct, handlers, lifecycle
 * callbacks, and one descriptor exported with RDV_MODULE_EXPORT. Everything
 * the module may ask of the core goes through core->api (rdv/core.h); it
 * links against nothing of the core. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdv/core.h>
#include <rdv/proto.h>
#include <rdv/wire.h>

/* ---- Settings: the core fills this struct from the `example` group in
 * conf.d and owns it (strings included); we only keep a pointer. */
typedef struct example_cfg {
    char *listener;  /* dispatch listener to answer on */
    char *greeting;  /* logged at start and on reload */
} example_cfg;

static const rdv_setting example_settings[] = {
    RDV_SETTING_STRING(example_cfg, listener, "example", 0, "dispatch listener to answer on"),
    /* RDV_SETF_RELOAD: may change on SIGHUP; without it the core refuses. */
    RDV_SETTING_STRING(example_cfg, greeting, "hello", RDV_SETF_RELOAD, "logged at start and on reload"),
    RDV_SETTING_END,
};

/* ---- State: everything the module owns; created in init, freed in destroy. */
typedef struct example {
    rdv_core *core;
    const example_cfg *cfg; /* replaced by reconfigure */
    uint64_t *answered;     /* a counter the core owns; we just increment it */
} example;

/* Cross-field and semantic checks the settings table cannot express. */
static int example_validate(const void *cfg_, char *err, size_t errlen)
{
    const example_cfg *cfg = cfg_;
    if (!cfg->listener[0]) {
        snprintf(err, errlen, "example.listener must name a listener");
        return -EINVAL;
    }
    return 0;
}

/* ---- Handler. The core has decoded the message; msg and ctx are borrowed
 * for this call only. */
static int example_on_test_nat(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    example *ex = state;
    (void)msg; /* the request's serial is not needed to answer */

    /* The listener name comes from configuration, so the handler table
     * cannot filter on it: check here and let other handlers have the rest. */
    if (strcmp(ctx->listener_name, ex->cfg->listener) != 0)
        return RDV_DECLINED;

    Hbb__TestNatResponse resp = HBB__TEST_NAT_RESPONSE__INIT;
    resp.port = rdv_addr_port(ctx->peer);
    Hbb__RendezvousMessage out = HBB__RENDEZVOUS_MESSAGE__INIT;
    out.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE;
    out.test_nat_response = &resp;

    /* Sends pack at once, so stack messages are fine. UDP replies go out
     * through the listener the request came in on. */
    const rdv_core_api *api = ex->core->api;
    int r = ctx->transport == RDV_TR_UDP ? api->send_udp(ex->core, ctx->listener, ctx->peer, &out)
                                         : api->send(ex->core, ctx->conn, &out);
    if (r < 0)
        return r; /* the core logs and counts it */
    (*ex->answered)++;
    return RDV_OK;
}

/* One row per (tag, transports). RDV_HF_SHARED lets another module (the
 * real NAT-test one) claim the same tag: we decline what is not ours. */
static const rdv_handler example_handlers[] = {
    { .tag = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST, .transports = RDV_TR_UDP | RDV_TR_TCP,
      .fn = example_on_test_nat, .flags = RDV_HF_SHARED },
    { .tag = 0 },
};

/* ---- Admin console: `example-stats`. Write with api->out, never printf. */
static void example_stats_cmd(void *ud, int argc, char **argv, rdv_buf *out)
{
    example *ex = ud;
    (void)argc, (void)argv;
    ex->core->api->out(out, "answered %llu\ngreeting %s\n", (unsigned long long)*ex->answered,
                       ex->cfg->greeting);
}

/* ---- Lifecycle. */
static int example_init(rdv_core *core, const void *cfg, void **state)
{
    example *ex = calloc(1, sizeof *ex);
    if (!ex)
        return -ENOMEM;
    ex->core = core, ex->cfg = cfg;
    ex->answered = core->api->counter(core, "answered", "TestNatRequests answered");
    int r = core->api->admin_command(core, "example-stats", "example-stats", example_stats_cmd, ex);
    if (r < 0) {
        free(ex);
        return r;
    }
    *state = ex;
    return 0;
}

/* Every module is initialised now and listeners exist: a good moment to
 * check that ours does. */
static int example_start(void *state)
{
    example *ex = state;
    const rdv_core_api *api = ex->core->api;
    if (!api->listener_find(ex->core, ex->cfg->listener, RDV_TR_UDP | RDV_TR_TCP))
        RDV_WARN(ex->core, "no listener named '%s': nothing to answer", ex->cfg->listener);
    RDV_INFO(ex->core, "%s", ex->cfg->greeting);
    return 0;
}

/* cfg is already validated, and only RDV_SETF_RELOAD settings differ. */
static int example_reconfigure(void *state, const void *cfg)
{
    example *ex = state;
    ex->cfg = cfg;
    RDV_INFO(ex->core, "%s (reloaded)", ex->cfg->greeting);
    return 0;
}

static void example_destroy(void *state)
{
    free(state); /* the counter and command belong to the core */
}

/* ---- The descriptor: RDV_MODULE_HEAD fills the ABI fields. */
static const rdv_module example_module = {
    RDV_MODULE_HEAD("example", "1.0.0"),
    .description = "template: answers TestNatRequest with the source port",
    .settings = example_settings,
    .config_size = sizeof(example_cfg),
    .validate = example_validate,
    .handlers = example_handlers,
    .init = example_init,
    .start = example_start,
    .reconfigure = example_reconfigure,
    .destroy = example_destroy,
};
RDV_MODULE_EXPORT(example_module)
