/* Loader, dispatch, services and hooks against fixture modules
 * (tests/fixtures/fixture.c), through the real start-up path with no sockets. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rdv/wire.h"
#include "server.h"

static char dir[64];
static rdv_server srv;

static void write_core(const char *modules)
{
    snprintf(dir, sizeof dir, "/tmp/rdv-loader-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/00-core.conf", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "core: { modules = [ %s ]; module_path = \"%s\"; admin_socket = \"\"; log_level = \"error\"; };\n",
            modules, RDV_TEST_FIXTURE_DIR);
    fclose(f);
}

static int start(const char *modules)
{
    write_core(modules);
    rdv_boot boot = { .conf_dir = dir };
    return rdv_server_init(&srv, &boot);
}

static void teardown(void)
{
    rdv_server_free(&srv);
    char path[128];
    snprintf(path, sizeof path, "%s/00-core.conf", dir);
    unlink(path);
    rmdir(dir);
}

TestSuite(loader, .fini = teardown);

Test(loader, good_module_loads_and_sorts_by_dependency)
{
    /* a_user is listed first but requires fxsvc from good: it must init after it. */
    cr_assert_eq(start("\"a_user\", \"good\""), 0, "%s", srv.err);
    cr_assert_eq(srv.nmods, 2);
    cr_assert_str_eq(srv.mods[0]->desc->name, "good");
    cr_assert_str_eq(srv.mods[1]->desc->name, "a_user");
    cr_assert_eq(rdv_stat_value(&srv, "a_user.svc_ok", NULL), 1, "service lookup in init failed");
}

Test(loader, wrong_abi_major_is_refused_naming_module_and_versions)
{
    cr_assert_neq(start("\"abi_major\""), 0);
    cr_assert(strstr(srv.err, "abi_major"), "%s", srv.err);
    char core[32];
    snprintf(core, sizeof core, "provides %d.%d", RDV_ABI_MAJOR, RDV_ABI_MINOR);
    cr_assert(strstr(srv.err, "ABI 99.0 "), "%s", srv.err);
    cr_assert(strstr(srv.err, core), "%s", srv.err);
}

Test(loader, newer_minor_is_refused)
{
    cr_assert_neq(start("\"newer_minor\""), 0);
    cr_assert(strstr(srv.err, "newer_minor") && strstr(srv.err, "1.999"), "%s", srv.err);
}

Test(loader, duplicate_tag_claim_names_both_modules)
{
    cr_assert_neq(start("\"good\", \"dup_tag\""), 0);
    cr_assert(strstr(srv.err, "'good'") && strstr(srv.err, "'dup_tag'"), "%s", srv.err);
    cr_assert(strstr(srv.err, "test_nat_request"), "%s", srv.err);
}

Test(loader, dependency_cycle_is_detected)
{
    cr_assert_neq(start("\"cycle_a\", \"cycle_b\""), 0);
    cr_assert(strstr(srv.err, "cycle") && strstr(srv.err, "cycle_a") && strstr(srv.err, "cycle_b"), "%s", srv.err);
}

Test(loader, missing_provider_is_named)
{
    cr_assert_neq(start("\"needs_missing\""), 0);
    cr_assert(strstr(srv.err, "needs_missing") && strstr(srv.err, "'nosuch'"), "%s", srv.err);
}

Test(loader, failing_init_is_reported)
{
    cr_assert_neq(start("\"good\", \"fail_init\""), 0);
    cr_assert(strstr(srv.err, "fail_init") && strstr(srv.err, "initialise"), "%s", srv.err);
}

Test(loader, missing_module_file_names_path_setting)
{
    cr_assert_neq(start("\"no_such_module\""), 0);
    cr_assert(strstr(srv.err, "no_such_module") && strstr(srv.err, "core.module_path"), "%s", srv.err);
}

Test(loader, module_listed_twice)
{
    cr_assert_neq(start("\"good\", \"good\""), 0);
    cr_assert(strstr(srv.err, "twice"), "%s", srv.err);
}

/* ---- dispatch ---- */
static int dispatch(int tag)
{
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    Hbb__TestNatRequest t = HBB__TEST_NAT_REQUEST__INIT;
    Hbb__OnlineRequest o = HBB__ONLINE_REQUEST__INIT;
    Hbb__HealthCheck h = HBB__HEALTH_CHECK__INIT;
    m.union_case = tag;
    if (tag == HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST)
        m.test_nat_request = &t;
    else if (tag == HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_REQUEST)
        m.online_request = &o;
    else if (tag == HBB__RENDEZVOUS_MESSAGE__UNION_HC)
        m.hc = &h;
    uint8_t buf[64];
    size_t n = protobuf_c_message_pack(&m.base, buf);
    rdv_addr a;
    rdv_addr_parse(&a, "127.0.0.1:5", 0);
    return rdv_dispatch(&srv, RDV_TR_UDP, NULL, "main", 0, &a, buf, n);
}

Test(loader, declined_chains_to_next_shared_handler)
{
    cr_assert_eq(start("\"shared_decline\", \"shared_ok\""), 0, "%s", srv.err);
    cr_assert_eq(dispatch(HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST), RDV_OK);
    cr_assert_eq(rdv_stat_value(&srv, "shared_decline.calls", NULL), 1);
    cr_assert_eq(rdv_stat_value(&srv, "shared_ok.calls", NULL), 1);
}

Test(loader, close_and_errors_and_unhandled)
{
    cr_assert_eq(start("\"closer\", \"erring\""), 0, "%s", srv.err);
    cr_assert_eq(dispatch(HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_REQUEST), RDV_CLOSE);
    cr_assert_eq(dispatch(HBB__RENDEZVOUS_MESSAGE__UNION_HC), RDV_CLOSE, "a -errno closes");
    cr_assert_eq(rdv_stat_value(&srv, "core.handler_errors", NULL), 1);
    cr_assert_eq(dispatch(HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST), RDV_DECLINED, "nobody handles it");
    cr_assert_eq(rdv_stat_value(&srv, "core.udp_unhandled", NULL), 1);
    rdv_addr a;
    rdv_addr_parse(&a, "127.0.0.1:5", 0);
    const uint8_t garbage[] = { 0xff, 0xff, 0xff };
    cr_assert_eq(rdv_dispatch(&srv, RDV_TR_UDP, NULL, "main", 0, &a, garbage, sizeof garbage), RDV_CLOSE);
    cr_assert_eq(rdv_stat_value(&srv, "core.udp_undecodable", NULL), 1);
}

/* ---- services and hooks (core internals) ---- */
static int order[4], norder;
static void hook_a(void *ud, const void *arg) { (void)arg; order[norder++] = (int)(intptr_t)ud; }

Test(loader, hooks_run_by_priority_then_registration_order)
{
    cr_assert_eq(start(""), 0, "%s", srv.err);
    norder = 0;
    rdv_hook_add(&srv, NULL, "x", 10, hook_a, (void *)1);
    rdv_hook_add(&srv, NULL, "x", -5, hook_a, (void *)2);
    rdv_hook_add(&srv, NULL, "x", 10, hook_a, (void *)3);
    rdv_hook_add(&srv, NULL, "y", 0, hook_a, (void *)4);
    rdv_hook_run(&srv, "x", NULL);
    cr_assert_eq(norder, 3);
    cr_assert_eq(order[0], 2);
    cr_assert_eq(order[1], 1);
    cr_assert_eq(order[2], 3);
}

Test(loader, services_by_name_and_version)
{
    cr_assert_eq(start(""), 0, "%s", srv.err);
    static const int vt = 7;
    int self = 0;
    cr_assert_eq(rdv_service_publish(&srv, NULL, "storage", 3, &vt, &self), 0);
    cr_assert_eq(rdv_service_publish(&srv, NULL, "storage", 4, &vt, &self), -EEXIST);
    void *got = NULL;
    cr_assert_eq(rdv_service_get(&srv, "storage", 3, &got), &vt);
    cr_assert_eq(got, &self);
    cr_assert_null(rdv_service_get(&srv, "storage", 4, NULL), "a newer minimum is not satisfied");
    cr_assert_null(rdv_service_get(&srv, "nope", 0, NULL));
}
