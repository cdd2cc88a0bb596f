/* test_example.c — the example module against the fake core.
 *
 * The module's sources are compiled into this binary, so rdv_module_get()
 * returns its descriptor directly (no dlopen). */
#include <criterion/criterion.h>
#include <errno.h>

#include "fakecore.h"

static fc_core *fc;
static void *st;
static const rdv_module *mod;

static void setup(void)
{
    fc = fc_new();
    mod = rdv_module_get();
    cr_assert_eq(fc_load(fc, mod, NULL, &st), 0);
}

static void teardown(void) { fc_free(fc); }

TestSuite(example, .init = setup, .fini = teardown);

/* A TestNatRequest as a client sends it. */
static Hbb__RendezvousMessage *test_nat(void)
{
    static Hbb__TestNatRequest req = HBB__TEST_NAT_REQUEST__INIT;
    static Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    req.serial = 7;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_REQUEST;
    m.test_nat_request = &req;
    return &m;
}

/* Pop the next send and check it is a TestNatResponse carrying port. */
static const fc_sent *expect_answer(fc_sent_kind kind, int port)
{
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s);
    cr_assert_eq(s->kind, kind);
    cr_assert_not_null(s->msg);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_TEST_NAT_RESPONSE);
    cr_assert_eq(s->msg->test_nat_response->port, port);
    return s;
}

Test(example, udp_answer_carries_source_port)
{
    rdv_addr from = fc_addr("10.0.0.1:40000");
    cr_assert_eq(fc_udp(fc, "example", &from, test_nat()), RDV_OK);
    const fc_sent *s = expect_answer(FC_SENT_UDP, 40000);
    cr_assert(rdv_addr_equal(&s->to, &from));
    cr_assert_str_eq(s->listener_name, "example");
    cr_assert_eq(fc_sent_count(fc), 0);
}

Test(example, tcp_answer_goes_to_the_connection)
{
    rdv_addr peer = fc_addr("[2001:db8::5]:50123");
    rdv_conn_id id = fc_conn_open(fc, "example", RDV_TR_TCP, &peer);
    cr_assert_eq(fc_conn_msg(fc, id, test_nat()), RDV_OK);
    const fc_sent *s = expect_answer(FC_SENT_CONN, 50123);
    cr_assert_eq(s->conn, id);
    cr_assert(fc_conn_alive(fc, id));
}

Test(example, other_listener_is_declined)
{
    rdv_addr from = fc_addr("10.0.0.1:40000");
    cr_assert_eq(fc_udp(fc, "main", &from, test_nat()), RDV_DECLINED);
    cr_assert_eq(fc_sent_count(fc), 0);
    /* On a stream the real core closes what nobody handled; so does the fake. */
    rdv_conn_id id = fc_conn_open(fc, "main", RDV_TR_TCP, &from);
    cr_assert_eq(fc_conn_msg(fc, id, test_nat()), RDV_DECLINED);
    cr_assert_not(fc_conn_alive(fc, id));
    cr_assert_eq(fc_counter(fc, "example.answered"), 0);
}

Test(example, other_messages_are_not_handled)
{
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    Hbb__OnlineRequest req = HBB__ONLINE_REQUEST__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_ONLINE_REQUEST;
    m.online_request = &req;
    rdv_addr from = fc_addr("10.0.0.1:40000");
    cr_assert_eq(fc_udp(fc, "example", &from, &m), -ENOENT);
}

Test(example, counter_counts_answers)
{
    rdv_addr a = fc_addr("10.0.0.1:1"), b = fc_addr("10.0.0.2:2");
    fc_udp(fc, "example", &a, test_nat());
    fc_udp(fc, "example", &b, test_nat());
    cr_assert_eq(fc_counter(fc, "example.answered"), 2);
}

Test(example, admin_command_reports)
{
    rdv_addr a = fc_addr("10.0.0.1:1");
    fc_udp(fc, "example", &a, test_nat());
    char out[256];
    cr_assert_eq(fc_admin(fc, "example-stats", out, sizeof out), 0);
    cr_assert_str_eq(out, "answered 1\ngreeting hello\n");
}

Test(example, settings_override_listener)
{
    fc_unload(fc, mod, st);
    cr_assert_eq(fc_load(fc, mod, "listener = nat\n", &st), 0);
    rdv_addr from = fc_addr("10.0.0.1:40000");
    cr_assert_eq(fc_udp(fc, "nat", &from, test_nat()), RDV_OK);
    expect_answer(FC_SENT_UDP, 40000);
    cr_assert_eq(fc_udp(fc, "example", &from, test_nat()), RDV_DECLINED);
}

Test(example, bad_settings_are_refused)
{
    fc_unload(fc, mod, st);
    cr_assert_eq(fc_load(fc, mod, "listener=\n", &st), -EINVAL);
    cr_assert(fc_log_contains(fc, "example.listener must name a listener"));
    cr_assert_eq(fc_load(fc, mod, "colour=blue\n", &st), -EINVAL);
    cr_assert(fc_log_contains(fc, "example.colour: unknown setting"));
}

Test(example, start_logs_greeting_and_warns_without_listener)
{
    cr_assert(fc_log_contains(fc, "example: hello"));
    cr_assert(fc_log_contains(fc, "no listener named 'example'"));
}

Test(example, reconfigure_changes_greeting_only)
{
    cr_assert_eq(fc_reconfigure(fc, mod, st, "greeting=bonjour\n"), 0);
    cr_assert(fc_log_contains(fc, "example: bonjour (reloaded)"));
    char out[256];
    fc_admin(fc, "example-stats", out, sizeof out);
    cr_assert_str_eq(out, "answered 0\ngreeting bonjour\n");

    /* listener has no RDV_SETF_RELOAD: refused, old config kept whole. */
    cr_assert_eq(fc_reconfigure(fc, mod, st, "listener=main\ngreeting=hola\n"), -EPERM);
    fc_admin(fc, "example-stats", out, sizeof out);
    cr_assert_str_eq(out, "answered 0\ngreeting bonjour\n");
}
