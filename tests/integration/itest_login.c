/* Integration: login enforcement (rendezvous.md §15.10, checklist R230)
 * with the real login-gate and punch-coordinator, configured in conf.d and
 * through the hbbs launcher as the lejianwen fork's users set it up
 * (MUST_LOGIN, RUSTDESK_API_JWT_KEY, console must-login/ml). Tokens are
 * HS256 JWTs built here with libsodium, as rustdesk-api issues them. */
#include <criterion/criterion.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "jwt_hs256.h"
#include "rdclient.h"

typedef Hbb__RendezvousMessage msg_t;

static rdvt_server srv;
static char K[64]; /* licence key */

#define JWT_KEY "the-api-servers-jwt-key"

static const char *const files[] = {
    "00-core.conf",
    "core: {\n"
    "  modules = [ \"keys\", \"storage-sqlite\", \"registry\", \"nat-test\", \"punch-coordinator\", \"login-gate\" ];\n"
    "  module_path = \"@MODDIR@\";\n"
    "  listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; },\n"
    "                { name = \"nat\"; port = @NAT@; tcp = true; } );\n"
    "};\n",
    "37-login-gate.conf",
    "login-gate: { must_login = true; jwt_key = \"" JWT_KEY "\"; };\n",
    NULL,
};

static void need_login_gate(void)
{
    if (access(RDV_BUILD_DIR "/modules/login-gate.so", R_OK) != 0)
        cr_skip_test("login-gate not built (libjwt-dev missing)");
}

static uint8_t KPK[32]; /* the server's public key, as the client is configured with it */

static void read_key(void)
{
    size_t pkl;
    cr_assert_eq(rdc_read_server_key(&srv, K, sizeof K, KPK, &pkl), 44);
}

static void setup(void)
{
    need_login_gate();
    cr_assert_geq(sodium_init(), 0);
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
    cr_assert_eq(rdvt_start(&srv), 0, "rdvd did not start");
    read_key();
}

static void teardown(void)
{
    int st = srv.pid > 0 ? rdvt_stop(&srv) : 0;
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "rdvd did not exit cleanly (status %d)", st);
}

static void make_token(char *tok, size_t cap, long long exp, const char *key) { test_jwt_exp(tok, cap, exp, key); }

/* A controller asks for id with token over TCP; the PunchHoleResponse. */
static msg_t *punch(int port, const char *id, const char *token)
{
    int t = rdc_connect("127.0.30.1", port);
    msg_t *m = rdc_punch_hole_request(id, 1, K, "1.4.9");
    m->punch_hole_request->token = (char *)token;
    cr_assert_eq(rdvt_tcp_send(t, m), 0);
    msg_t *r = rdc_expect_tcp(t, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, 5000);
    close(t);
    return r;
}

/* The same as a logged-in client >= 1.4.1 sends it: it keys the connection
 * first and fails without the offer (client-flows.md §5.2). */
static msg_t *punch_keyed(int port, const char *id, const char *token)
{
    rdc_keyed c = rdc_keyed_connect("127.0.30.1", port, KPK, 3000);
    msg_t *m = rdc_punch_hole_request(id, 1, K, "1.4.9");
    m->punch_hole_request->token = (char *)token;
    rdc_send_sealed(&c, m); /* m is rdclient's static message: not freed */
    uint8_t *e = NULL;
    long n = rdvt_tcp_recv_frame(c.fd, &e, 5000);
    cr_assert_gt(n, 0, "no sealed answer to the punch request");
    msg_t *r = rdc_open_sealed(&c, e, n);
    free(e);
    close(c.fd);
    cr_assert_not_null(r);
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE_RESPONSE, "got %s",
                 rdv_msg_tag_name((int)r->union_case));
    return r;
}

static void expect_refused(msg_t *r, const char *why)
{
    cr_assert_eq(r->punch_hole_response->socket_addr.len, 0, "%s: a refusal carries no address", why);
    cr_assert(r->punch_hole_response->other_failure && r->punch_hole_response->other_failure[0],
              "%s: no other_failure text", why);
    rdvt_msg_free(r);
}

static void expect_passed(msg_t *r, const char *why)
{
    cr_assert(!r->punch_hole_response->other_failure || !r->punch_hole_response->other_failure[0],
              "%s: refused with '%s'", why, r->punch_hole_response->other_failure);
    cr_assert_eq(r->punch_hole_response->failure, HBB__PUNCH_HOLE_RESPONSE__FAILURE__ID_NOT_EXIST,
                 "%s: the request went on to the lookup", why);
    rdvt_msg_free(r);
}

TestSuite(login, .init = setup, .fini = teardown, .timeout = 60);

/* R230: empty token -> empty socket_addr, non-empty other_failure. */
Test(login, R230_empty_token_is_refused_with_text)
{
    expect_refused(punch(srv.port, "nosuchid", ""), "empty token");
    cr_assert_eq(rdvt_stat(&srv, "login-gate.refused_no_token"), 1);
    cr_assert_eq(rdvt_stat(&srv, "punch-coordinator.login_refused"), 1);
}

Test(login, R230_tokens_are_checked_with_the_jwt_key)
{
    char tok[512];
    long long now = (long long)time(NULL);
    make_token(tok, sizeof tok, now + 3600, JWT_KEY);
    expect_passed(punch(srv.port, "nosuchid", tok), "current token");
    make_token(tok, sizeof tok, now - 10, JWT_KEY);
    expect_refused(punch(srv.port, "nosuchid", tok), "expired token");
    make_token(tok, sizeof tok, now + 3600, "some other key");
    expect_refused(punch(srv.port, "nosuchid", tok), "forged token");
    expect_refused(punch(srv.port, "nosuchid", "not-a-jwt"), "garbage token");
    cr_assert_eq(rdvt_stat(&srv, "login-gate.allowed"), 1);
    cr_assert_eq(rdvt_stat(&srv, "login-gate.refused_expired"), 1);
    cr_assert_eq(rdvt_stat(&srv, "login-gate.refused_bad_token"), 2);
}

/* A logged-in controller reaches a registered device: the full flow. */
Test(login, logged_in_punch_reaches_the_device)
{
    rdc_device b;
    rdc_device_init(&b, "300000230");
    rdc_device_udp(&b, "127.0.30.2");
    msg_t *r = rdc_udp_ask(b.udp, srv.port, rdc_device_register_pk(&b), 3000, 2);
    cr_assert_not_null(r);
    rdvt_msg_free(r);
    rdvt_msg_free(rdc_udp_ask(b.udp, srv.port, rdc_register_peer(b.id), 3000, 2));
    char tok[512];
    make_token(tok, sizeof tok, (long long)time(NULL) + 3600, JWT_KEY);
    int t = rdc_connect("127.0.30.1", srv.port);
    msg_t *m = rdc_punch_hole_request(b.id, 1, K, "1.4.9");
    m->punch_hole_request->token = tok;
    cr_assert_eq(rdvt_tcp_send(t, m), 0);
    msg_t *ph = rdc_udp_from_server(b.udp, srv.port, 3000, NULL);
    cr_assert_not_null(ph, "the device got no PunchHole");
    cr_assert_eq(ph->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_PUNCH_HOLE);
    rdvt_msg_free(ph);
    close(t);
    close(b.udp);
}

Test(login, console_turns_it_off_until_reload)
{
    char *o = rdvt_admin(&srv, "ml N");
    cr_assert_str_eq(o, "MUST_LOGIN: false\n");
    free(o);
    expect_passed(punch(srv.port, "nosuchid", ""), "must-login off");
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    cr_assert(rdvt_wait_log(&srv, "configuration reloaded", 5000));
    expect_refused(punch(srv.port, "nosuchid", ""), "after reload");
}

/* The hbbs launcher with the fork's variables. */
Test(login_hbbs, must_login_from_the_environment, .timeout = 60)
{
    need_login_gate();
    cr_assert_geq(sodium_init(), 0);
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    setenv("MUST_LOGIN", "Y", 1);
    setenv("RUSTDESK_API_JWT_KEY", JWT_KEY, 1);
    const char *const args[] = { "-p", port, NULL };
    snprintf(srv.sock, sizeof srv.sock, "%s/hbbs.sock", srv.dir);
    cr_assert_eq(rdvt_start_exe(&srv, "hbbs", args, true), 0);
    unsetenv("MUST_LOGIN");
    unsetenv("RUSTDESK_API_JWT_KEY");
    read_key();
    /* The fork offers secure TCP (config-compat.md §10), so the launcher
     * loads secure-tcp with login-gate: logged-in clients key first. */
    expect_refused(punch_keyed(srv.port, "nosuchid", ""), "MUST_LOGIN=Y");
    char tok[512];
    make_token(tok, sizeof tok, (long long)time(NULL) + 3600, JWT_KEY);
    expect_passed(punch_keyed(srv.port, "nosuchid", tok), "token signed with RUSTDESK_API_JWT_KEY");
    char *o = rdvt_admin(&srv, "must-login");
    cr_assert_str_eq(o, "MUST_LOGIN: true\n");
    free(o);
    int st = rdvt_stop(&srv);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0);
}
