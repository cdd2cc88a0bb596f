/* test_stream.c — registration over TCP / WebSocket (EXT rendezvous.md §15.3,
 * §15.4; client-flows.md §2.4; R209, R220-R224), the heartbeat handler
 * shared with other keep-alive users, and the config() service call. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fake_services.h"

TestSuite(stream, .init = rt_setup, .fini = rt_teardown);

#define OK HBB__REGISTER_PK_RESPONSE__RESULT__OK
#define MISMATCH HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH
#define TOO_FREQUENT HBB__REGISTER_PK_RESPONSE__RESULT__TOO_FREQUENT
#define NOT_SUPPORT HBB__REGISTER_PK_RESPONSE__RESULT__NOT_SUPPORT
#define SERVER_ERROR HBB__REGISTER_PK_RESPONSE__RESULT__SERVER_ERROR

static const char P1[] = "P1P1P1P1P1P1P1P1P1P1P1P1P1P1P1P1"; /* 32 bytes */
static const char P2[] = "P2P2P2P2P2P2P2P2P2P2P2P2P2P2P2P2";

/* Default heartbeat: min(20000, online_ms 30000 / 2, keep_alive 60 s / 2). */
#define HB 15000

static Hbb__RendezvousMessage *pk_msg(const char *id, const char *uuid, const char *pk)
{
    static Hbb__RegisterPk rk;
    static Hbb__RendezvousMessage m;
    hbb__register_pk__init(&rk);
    hbb__rendezvous_message__init(&m);
    rk.id = (char *)id;
    rk.uuid.data = (uint8_t *)uuid, rk.uuid.len = strlen(uuid);
    rk.pk.data = (uint8_t *)pk, rk.pk.len = strlen(pk);
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &rk;
    return &m;
}

/* A connection on "main" TCP keyed as secure-tcp would (R204), or plain. */
static rdv_conn_id tcp_from(const char *from, bool keyed)
{
    rdv_addr a = fc_addr(from);
    rdv_conn_id c = fc_conn_open(rt.fc, "main", RDV_TR_TCP, &a);
    if (keyed) {
        rdv_core *h = fc_handle(rt.fc, "secure-tcp");
        uint8_t key[32] = { 7 };
        cr_assert_eq(h->api->conn_set_key(h, c, key), 0);
    }
    return c;
}

static rdv_conn_id ws_from(const char *from)
{
    rdv_addr a = fc_addr(from);
    return fc_conn_open(rt.fc, "ws", RDV_TR_WS, &a);
}

/* Send RegisterPk on c; returns the answer (result, keep_alive checked). */
static int stream_pk(rdv_conn_id c, const char *id, const char *uuid, const char *pk)
{
    cr_assert_eq(fc_conn_msg(rt.fc, c, pk_msg(id, uuid, pk)), RDV_OK, "the connection stays open");
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_not_null(s, "no RegisterPkResponse");
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->conn, c, "answered on the same connection");
    cr_assert_not_null(s->msg);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE);
    cr_assert_eq(s->msg->register_pk_response->keep_alive, 60, "keep_alive in seconds (§15.4)");
    cr_assert(fc_conn_alive(rt.fc, c));
    return (int)s->msg->register_pk_response->result;
}

static const uint8_t EMPTY[1];

static void expect_heartbeat(rdv_conn_id c)
{
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_not_null(s, "no heartbeat");
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->conn, c);
    cr_assert_eq(s->len, 0, "a heartbeat is an empty frame");
}

static rdv_conn_id bound_conn(const char *id)
{
    rdv_peer_info pi;
    cr_assert_eq(rt_lookup(id, RDV_LOOKUP_MEMORY, &pi), 0);
    return pi.conn;
}

/* ------------------------------------------------------------------ R220, R221 */
Test(stream, R220_keyed_tcp_register_pk_binds_the_connection)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    rdv_peer_info pi;
    cr_assert_eq(rt_lookup("500000001", RDV_LOOKUP_MEMORY, &pi), 0);
    cr_assert(pi.online, "online without any RegisterPeer (§15.4)");
    cr_assert_eq(pi.conn, c);
    rdv_addr want = fc_addr("10.0.0.1:5000");
    cr_assert(rdv_addr_equal(&pi.addr, &want), "socket_addr = the connection's address");
    cr_assert_str_eq(pi.ip, "10.0.0.1");
    cr_assert_eq(rt.fs.inserts, 1, "stored like a UDP registration");
    cr_assert_eq(fc_conn(rt.fc, c)->idle_ms, 3 * HB, "30 s request limit lifted: 3 heartbeats");
    cr_assert_eq(rt_gauge("stream_peers"), 1);
    cr_assert_eq(rt_counter("stream_registered"), 1);
    cr_assert_eq(rt_counter("pk_ok"), 1);
    cr_assert_eq(rt.online_hooks, 1);
}

Test(stream, R220_heartbeats_and_echoes_keep_the_peer_online)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    for (int i = 0; i < 6; i++) { /* 90 s, three times the online window */
        fc_advance(rt.fc, HB);
        expect_heartbeat(c);
        cr_assert_null(fc_next_sent(rt.fc));
        cr_assert_eq(fc_conn_raw(rt.fc, c, EMPTY, 0), RDV_OK, "our echo is handled");
        cr_assert(rt_online("500000001"));
    }
    cr_assert_eq(rt_counter("heartbeats"), 6);
    cr_assert_eq(rt_counter("heartbeat_echoes"), 6);
    cr_assert(fc_conn_alive(rt.fc, c));
    cr_assert_eq(rt.offline_hooks, 0);
}

Test(stream, silent_client_goes_offline_after_the_online_window)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    fc_advance(rt.fc, 29000);
    cr_assert(rt_online("500000001"));
    fc_advance(rt.fc, 1000);
    cr_assert_not(rt_online("500000001"), "last_reg_time is what counts (§15.4)");
    cr_assert_eq(rt.offline_hooks, 1);
    /* the core's idle timer (3 heartbeats) ends the connection, not us */
    cr_assert(fc_conn_alive(rt.fc, c));
    /* a late echo brings it back */
    fc_clear_sent(rt.fc);
    cr_assert_eq(fc_conn_raw(rt.fc, c, EMPTY, 0), RDV_OK);
    cr_assert(rt_online("500000001"));
}

Test(stream, R222_closing_unbinds_and_the_window_still_runs)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    fc_advance(rt.fc, 5000);
    fc_conn_peer_close(rt.fc, c);
    cr_assert_eq(bound_conn("500000001"), 0, "pushes go by UDP again");
    cr_assert_eq(rt_gauge("stream_peers"), 0);
    cr_assert_eq(rt_counter("stream_closed"), 1);
    cr_assert(rt_online("500000001"), "online while last_reg_time is fresh");
    fc_advance(rt.fc, 25000);
    cr_assert_not(rt_online("500000001"), "offline 30 s after the last frame");
    fc_clear_sent(rt.fc);
    fc_advance(rt.fc, 60000);
    cr_assert_null(fc_next_sent(rt.fc), "no heartbeats without bound connections");
}

Test(stream, every_frame_refreshes_not_only_echoes)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    rdv_peer_info pi;
    rt_lookup("500000001", RDV_LOOKUP_MEMORY, &pi);
    uint64_t t0 = pi.last_reg_ms;
    fc_advance(rt.fc, 10000);
    fc_clear_sent(rt.fc);
    /* the RegisterPk repeated (limiter allows it after the gap) */
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    rt_lookup("500000001", RDV_LOOKUP_MEMORY, &pi);
    cr_assert_eq(pi.last_reg_ms, t0 + 10000);
    cr_assert_eq(rt_counter("stream_registered"), 1, "same connection, same id: no new binding");
}

/* ------------------------------------------------------------------ R223 and results */
Test(stream, R223_uuid_mismatch_keeps_the_connection_then_ok)
{
    rt_reg("500000001", "other-device", P1, "10.9.9.9:1");
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P2), MISMATCH);
    cr_assert_eq(bound_conn("500000001"), 0);
    cr_assert_eq(fc_conn(rt.fc, c)->idle_ms, 0, "not bound: the request idle limit stays");
    /* the client takes a new id and asks again on the same connection */
    cr_assert_eq(stream_pk(c, "500000002", "u", P2), OK);
    cr_assert_eq(bound_conn("500000002"), c);
    cr_assert_eq(bound_conn("500000001"), 0);
}

Test(stream, new_id_on_a_bound_connection_moves_the_binding)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    cr_assert_eq(stream_pk(c, "500000002", "u", P1), OK);
    cr_assert_eq(bound_conn("500000001"), 0);
    cr_assert_eq(bound_conn("500000002"), c);
    cr_assert_eq(rt_gauge("stream_peers"), 1);
    fc_advance(rt.fc, HB);
    expect_heartbeat(c);
    cr_assert_null(fc_next_sent(rt.fc), "one heartbeat per connection");
}

Test(stream, refusals_keep_the_connection_and_carry_keep_alive)
{
    rt.bl.allow = false;
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), TOO_FREQUENT);
    rdv_peer_info pi;
    cr_assert_eq(rt_lookup("500000001", RDV_LOOKUP_MEMORY, &pi), -ENOENT);
    rt.bl.allow = true;
    cr_assert_eq(stream_pk(c, "abc", "u", P1), MISMATCH, "short id (§6.2 step 2)");
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
}

Test(stream, empty_uuid_or_pk_is_ignored_connection_kept)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(fc_conn_msg(rt.fc, c, pk_msg("500000001", "", P1)), RDV_OK);
    cr_assert_eq(fc_conn_msg(rt.fc, c, pk_msg("500000001", "u", "")), RDV_OK);
    cr_assert_null(fc_next_sent(rt.fc));
    cr_assert(fc_conn_alive(rt.fc, c));
    cr_assert_eq(rt_counter("pk_ignored"), 2);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cr_assert_eq(fc_conn_msg(rt.fc, c, pk_msg("500000001", big, P1)), RDV_OK);
    cr_assert_null(fc_next_sent(rt.fc));
    cr_assert_eq(rt_counter("pk_oversize"), 1);
    cr_assert_eq(rt.fs.puts, 0);
}

/* ------------------------------------------------------------------ who may register */
Test(stream, R150_plain_tcp_gets_not_support_unless_keys_are_not_required)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", false);
    cr_assert_eq(fc_conn_msg(rt.fc, c, pk_msg("500000001", "u", P1)), RDV_CLOSE);
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_eq(s->msg->register_pk_response->result, NOT_SUPPORT);
    cr_assert_eq(s->msg->register_pk_response->keep_alive, 0, "OSS bytes 82 01 02 08 06");
    cr_assert_not(fc_conn_alive(rt.fc, c));
    rt_teardown();
    rt_setup_conf("stream_require_key=false\n");
    c = tcp_from("10.0.0.1:5001", false);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    cr_assert_eq(bound_conn("500000001"), c);
}

Test(stream, R224_websocket_registers_without_a_key)
{
    rdv_conn_id c = ws_from("10.0.0.3:0"); /* attributed by a proxy header: port 0 */
    cr_assert_eq(stream_pk(c, "500000003", "u", P1), OK);
    cr_assert_eq(bound_conn("500000003"), c);
    cr_assert(rt_online("500000003"));
    cr_assert_eq(fc_conn(rt.fc, c)->idle_ms, 0, "the WebSocket transport keeps its own idle timer");
    fc_advance(rt.fc, HB);
    expect_heartbeat(c);
    cr_assert_eq(fc_conn_raw(rt.fc, c, EMPTY, 0), RDV_OK);
}

Test(stream, R140_R150_off_is_oss_on_both_transports)
{
    rt_teardown();
    rt_setup_conf("stream_register=false\n");
    rdv_conn_id cs[2] = { tcp_from("10.0.0.1:5000", true), ws_from("10.0.0.1:5001") };
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(fc_conn_msg(rt.fc, cs[i], pk_msg("500000001", "u", P1)), RDV_CLOSE);
        const fc_sent *s = fc_next_sent(rt.fc);
        const uint8_t want[] = { 0x82, 0x01, 0x02, 0x08, 0x06 };
        cr_assert_eq(s->len, sizeof want);
        cr_assert_arr_eq(s->raw, want, sizeof want);
        cr_assert_not(fc_conn_alive(rt.fc, cs[i]));
    }
    cr_assert_eq(rt.fs.puts, 0);
}

Test(stream, stream_max_refuses_new_streams_only)
{
    rt_teardown();
    rt_setup_conf("stream_max=1\n");
    rdv_conn_id c1 = tcp_from("10.0.0.1:5000", true), c2 = tcp_from("10.0.0.2:5000", true);
    cr_assert_eq(stream_pk(c1, "500000001", "u", P1), OK);
    cr_assert_eq(fc_conn_msg(rt.fc, c2, pk_msg("500000002", "u", P1)), RDV_CLOSE);
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_eq(s->msg->register_pk_response->result, SERVER_ERROR);
    cr_assert_not(fc_conn_alive(rt.fc, c2));
    cr_assert_eq(rt_counter("stream_refused_full"), 1);
    rdv_peer_info pi;
    cr_assert_eq(rt_lookup("500000002", RDV_LOOKUP_MEMORY, &pi), -ENOENT, "nothing registered");
    /* the bound one may still re-register, and reconnect */
    cr_assert_eq(stream_pk(c1, "500000001", "u", P1), OK);
    fc_advance(rt.fc, 7000);
    rdv_conn_id c3 = tcp_from("10.0.0.1:5001", true);
    cr_assert_eq(fc_conn_msg(rt.fc, c3, pk_msg("500000001", "u", P1)), RDV_OK);
    cr_assert_eq(fc_next_sent(rt.fc)->kind, FC_SENT_CLOSE, "c1 replaced");
    cr_assert_eq(fc_next_sent(rt.fc)->msg->register_pk_response->result, OK);
    cr_assert_eq(bound_conn("500000001"), c3);
    cr_assert_eq(rt_gauge("stream_peers"), 1);
}

/* ------------------------------------------------------------------ one binding per id */
Test(stream, reconnect_replaces_and_closes_the_old_connection)
{
    rdv_conn_id c1 = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c1, "500000001", "u", P1), OK);
    fc_advance(rt.fc, 7000); /* past the limiter's gap */
    rdv_conn_id c2 = tcp_from("10.0.0.1:5001", true);
    cr_assert_eq(fc_conn_msg(rt.fc, c2, pk_msg("500000001", "u", P1)), RDV_OK);
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_eq(s->kind, FC_SENT_CLOSE, "the old connection is closed");
    cr_assert_eq(s->conn, c1);
    s = fc_next_sent(rt.fc);
    cr_assert_eq(s->conn, c2);
    cr_assert_eq(s->msg->register_pk_response->result, OK);
    cr_assert_not(fc_conn_alive(rt.fc, c1));
    cr_assert_eq(bound_conn("500000001"), c2);
    cr_assert_eq(rt_counter("stream_replaced"), 1);
    cr_assert_eq(rt_gauge("stream_peers"), 1);
    rdv_peer_info pi;
    rt_lookup("500000001", RDV_LOOKUP_MEMORY, &pi);
    rdv_addr want = fc_addr("10.0.0.1:5001");
    cr_assert(rdv_addr_equal(&pi.addr, &want));
}

Test(stream, udp_registration_does_not_steal_a_live_stream)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    cr_assert_eq(rt_reg_peer("500000001", 0, "10.0.0.1:7000"), 0, "same IP: accepted");
    cr_assert_eq(bound_conn("500000001"), c, "an unauthenticated datagram does not move the binding");
    fc_conn_peer_close(rt.fc, c);
    cr_assert_eq(rt_reg_peer("500000001", 0, "10.0.0.1:7000"), 0);
    cr_assert_eq(bound_conn("500000001"), 0, "after the stream: UDP");
}

/* ------------------------------------------------------------------ heartbeat handler (tag 0) */
Test(stream, R12_empty_frame_on_another_connection_is_declined_and_closed)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", false);
    cr_assert_eq(fc_conn_raw(rt.fc, c, EMPTY, 0), RDV_DECLINED);
    cr_assert_not(fc_conn_alive(rt.fc, c), "OSS: an empty frame closes an ordinary connection");
    /* a UUID_MISMATCH connection is not bound either */
    rt_reg("500000001", "other-device", P1, "10.9.9.9:1");
    rdv_conn_id d = tcp_from("10.0.0.1:5001", true);
    cr_assert_eq(stream_pk(d, "500000001", "u", P2), MISMATCH);
    cr_assert_eq(fc_conn_raw(rt.fc, d, EMPTY, 0), RDV_DECLINED);
    cr_assert_eq(rt_counter("heartbeat_echoes"), 0);
}

/* Another keep-alive user (api-proxy's HealthCheck sessions) claims tag 0
 * shared on TCP "main": both load, ours answers for our connections only. */
static unsigned OTHER_CALLS;
static int other_hb(void *st, const rdv_msg_ctx *ctx, const void *msg)
{
    (void)st, (void)ctx, (void)msg;
    OTHER_CALLS++;
    return RDV_OK;
}
static const rdv_handler other_handlers[] = {
    { .tag = 0, .transports = RDV_TR_TCP, .listener = "main", .fn = other_hb, .flags = RDV_HF_SHARED },
    RDV_HANDLER_END,
};
static const rdv_module other_mod = {
    RDV_MODULE_HEAD("other-keepalive", "1"),
    .handlers = other_handlers,
};

Test(stream, heartbeat_handler_chains_with_another_shared_user)
{
    OTHER_CALLS = 0;
    void *ost;
    cr_assert_eq(fc_load(rt.fc, &other_mod, NULL, &ost), 0, "both claim tag 0 shared");
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true), d = tcp_from("10.0.0.2:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    cr_assert_eq(fc_conn_raw(rt.fc, c, EMPTY, 0), RDV_OK);
    cr_assert_eq(OTHER_CALLS, 0, "ours: handled here");
    cr_assert_eq(fc_conn_raw(rt.fc, d, EMPTY, 0), RDV_OK);
    cr_assert_eq(OTHER_CALLS, 1, "not ours: declined to the next in the chain");
    cr_assert(fc_conn_alive(rt.fc, d));
    cr_assert_eq(rt_counter("heartbeat_echoes"), 1);
}

/* ------------------------------------------------------------------ settings */
Test(stream, heartbeat_follows_settings_and_reload)
{
    rt_teardown();
    rt_setup_conf("online_ms=3000\n");
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    cr_assert_eq(fc_conn(rt.fc, c)->idle_ms, 3 * 1500, "capped at half the online window");
    fc_advance(rt.fc, 1500);
    expect_heartbeat(c);
    cr_assert_eq(fc_reconfigure(rt.fc, rt.mod, rt.st, "online_ms=3000\nstream_heartbeat_ms=500\n"), 0);
    cr_assert_eq(fc_conn(rt.fc, c)->idle_ms, 1500, "running connections follow");
    fc_advance(rt.fc, 500);
    expect_heartbeat(c);
    cr_assert_eq(fc_reconfigure(rt.fc, rt.mod, rt.st, "stream_keep_alive_s=2\nstream_heartbeat_ms=9000\n"), 0);
    cr_assert_eq(fc_conn(rt.fc, c)->idle_ms, 3000, "capped at half the keep-alive");
    fc_clear_sent(rt.fc);
    cr_assert_eq(fc_conn_msg(rt.fc, c, pk_msg("500000001", "u", P1)), RDV_OK);
    cr_assert_eq(fc_next_sent(rt.fc)->msg->register_pk_response->keep_alive, 2);
}

Test(stream, settings_bounds)
{
    rt_teardown();
    rt_begin(true);
    cr_assert_lt(rt_load("stream_keep_alive_s=1\n"), 0);
    cr_assert_lt(rt_load("stream_heartbeat_ms=99\n"), 0);
    cr_assert_lt(rt_load("stream_max=0\n"), 0);
    cr_assert_eq(rt_load("stream_keep_alive_s=3600\nstream_heartbeat_ms=600000\nstream_max=10000000\n"), 0);
}

/* ------------------------------------------------------------------ service */
Test(stream, set_conn_over_an_own_binding_and_reused_connection)
{
    rdv_conn_id c = tcp_from("10.0.0.1:5000", true);
    cr_assert_eq(stream_pk(c, "500000001", "u", P1), OK);
    rt_reg("500000002", "u", P1, "10.0.0.2:1");
    /* binding the same connection to another id moves it */
    cr_assert_eq(rt.api->set_conn(rt.self, "500000002", c), 0);
    cr_assert_eq(bound_conn("500000002"), c);
    cr_assert_eq(bound_conn("500000001"), 0);
    cr_assert_eq(rt_gauge("stream_peers"), 0, "set_conn bindings are not ours to heartbeat");
    fc_clear_sent(rt.fc);
    fc_advance(rt.fc, HB);
    cr_assert_null(fc_next_sent(rt.fc));
    fc_conn_peer_close(rt.fc, c);
    cr_assert_eq(bound_conn("500000002"), 0, "a closed connection unbinds");
}

Test(stream, config_call_reports_the_runtime_configuration)
{
    rt_teardown();
    rt_setup_conf("serial=3\nrendezvous_servers=10.0.0.5:21116,10.0.0.1\n");
    int32_t serial = -1;
    const rdv_strlist *l = NULL;
    cr_assert_eq(rt.api->config(rt.self, &serial, &l), 0);
    cr_assert_eq(serial, 3);
    cr_assert_eq(l->n, 2);
    cr_assert_str_eq(l->v[0], "10.0.0.5:21116");
    cr_assert_str_eq(l->v[1], "10.0.0.1");
    /* a loopback ConfigUpdate (§6.10) changes both */
    Hbb__ConfigUpdate cu = HBB__CONFIG_UPDATE__INIT;
    char *list[] = { "b.example" };
    cu.serial = 9, cu.rendezvous_servers = list, cu.n_rendezvous_servers = 1;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_CONFIGURE_UPDATE;
    m.configure_update = &cu;
    rdv_addr lo = fc_addr("127.0.0.1:9");
    cr_assert_eq(fc_udp(rt.fc, "main", &lo, &m), RDV_OK);
    cr_assert_eq(rt.api->config(rt.self, &serial, &l), 0);
    cr_assert_eq(serial, 9);
    cr_assert_eq(l->n, 1);
    cr_assert_str_eq(l->v[0], "b.example");
    cr_assert_eq(rt.api->config(rt.self, NULL, NULL), 0, "either output may be omitted");
}
