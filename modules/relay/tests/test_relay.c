/* test_relay.c — the relay module against the fake core: settings, the
 * first-message decision table (relay.md §3.3), waiting (§3.4), the relay
 * key (§11), accept-time blocklist and the lifecycle. Item numbers L… are
 * from relay-checklist.md. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "relay_test.h"

TestSuite(relay, .init = rt_setup, .fini = rt_teardown);

static const char U[] = "0f8fad5b-d9cb-469f-a165-70867728950e";

/* ------------------------------------------------------------------ settings, listener */
Test(relay, listener_is_framed_tcp_on_21117_by_default)
{
    rdv_listener *l = fc_find_listener(fc, "relay", RDV_TR_TCP);
    cr_assert_not_null(l);
    cr_assert_eq(R->core->api->listener_port(l), 21117);
    cr_assert_eq(R->cfg->first_timeout_ms, 30000);
    cr_assert_eq(R->cfg->wait_timeout_ms, 30000);
    cr_assert_eq(R->key[0], '\0', "no relay key by default (L49)");
}

Test(relay, settings_are_bounded)
{
    fc_unload(fc, rdv_module_get(), st);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "port=65534\n", &st), -EINVAL, "port + 2 must fit (relay.md §1)");
    cr_assert_eq(fc_load(fc, rdv_module_get(), "bind=not-an-ip\n", &st), -EINVAL);
    cr_assert(fc_log_contains(fc, "invalid bind address"));
    cr_assert_eq(fc_load(fc, rdv_module_get(), "pipe_size=100\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "single_bandwidth=0\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "bandwidth=3\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, rdv_module_get(), "bind=\"::1\"\nport=30000\n", &st), 0);
    R = st;
    cr_assert_eq(R->core->api->listener_port(fc_find_listener(fc, "relay", RDV_TR_TCP)), 30000);
}

/* ------------------------------------------------------------------ pairing */
Test(relay, L8_pair_relays_both_ways_and_sends_nothing_of_its_own)
{
    rt_conn a = rt_open("10.0.0.1:4001"), b = rt_open("10.0.0.2:4002");
    cr_assert_eq(rt_request(&a, U, NULL), RDV_OK);
    cr_assert_eq(rt_gauge("waiting"), 1);
    cr_assert_eq(fc_conn(fc, a.id)->why, RDV_CLOSE_DETACHED, "the waiting socket is the module's");
    cr_assert_eq(rt_request(&b, U, NULL), RDV_OK);
    cr_assert_eq(rt_gauge("waiting"), 0);
    cr_assert_eq(rt_gauge("pairs"), 1);
    cr_assert_eq(rt_gauge("pairs_raw"), 1);
    cr_assert_eq(rt_counter("paired"), 1);
    cr_assert(rt_silent(a.cli) && rt_silent(b.cli), "no ack, no framing (L62)");
    cr_assert_eq(fc_sent_count(fc), 0, "nothing goes out through the core");

    uint8_t x[1024], y[1024], got[2048];
    rt_fill(x, sizeof x, 1), rt_fill(y, sizeof y, 2);
    rt_write_all(a.cli, x, sizeof x);
    rt_write_all(b.cli, y, sizeof y);
    cr_assert_eq(rt_read(b.cli, got, sizeof x, 2000), (long)sizeof x);
    cr_assert_arr_eq(got, x, sizeof x);
    cr_assert_eq(rt_read(a.cli, got, sizeof y, 2000), (long)sizeof y);
    cr_assert_arr_eq(got, y, sizeof y);
    cr_assert(rt_silent(a.cli) && rt_silent(b.cli));
    cr_assert_eq(rt_counter("bytes_early_to_late"), sizeof x);
    cr_assert_eq(rt_counter("bytes_late_to_early"), sizeof y);
}

Test(relay, L11_raw_pipe_passes_non_frames)
{
    rt_conn a, b;
    rt_pair(&a, &b, U);
    const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x00 };
    rt_write_all(a.cli, junk, sizeof junk);
    uint8_t got[16];
    cr_assert_eq(rt_read(b.cli, got, sizeof junk, 2000), (long)sizeof junk);
    cr_assert_arr_eq(got, junk, sizeof junk);
}

Test(relay, L16_extra_and_unknown_fields_are_ignored)
{
    /* RequestRelay{id, uuid, socket_addr, secure, conn_type, token} + field 99. */
    Hbb__RequestRelay rr = HBB__REQUEST_RELAY__INIT;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    uint8_t sa[6] = { 1, 2, 3, 4, 5, 6 };
    rr.id = "123456789", rr.uuid = (char *)U, rr.token = "t", rr.secure = 1;
    rr.socket_addr.data = sa, rr.socket_addr.len = sizeof sa;
    rr.conn_type = HBB__CONN_TYPE__FILE_TRANSFER;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY;
    m.request_relay = &rr;
    uint8_t buf[512];
    size_t n = hbb__rendezvous_message__pack(&m, buf);
    /* Unknown field 99 inside RequestRelay: tag (99<<3|0) = 0x98 0x06, value 1. */
    buf[n++] = 0x98, buf[n++] = 0x06, buf[n++] = 0x01;
    buf[2] += 3; /* the RequestRelay length byte (message is < 128 bytes) */
    rt_conn a = rt_open("10.0.0.1:1"), b = rt_open("10.0.0.2:2");
    cr_assert_eq(rt_send_first(&a, buf, n), RDV_OK);
    cr_assert_eq(rt_request(&b, U, NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 1);
}

Test(relay, spec_test_vector_pairs)
{
    /* relay.md §3.1: a4 92 01 26 12 24 <uuid>, i.e. payload 92 01 26 12 24 … */
    uint8_t p[64] = { 0x92, 0x01, 0x26, 0x12, 0x24 };
    memcpy(p + 5, U, 36);
    rt_conn a = rt_open("10.0.0.1:1"), b = rt_open("10.0.0.2:2");
    cr_assert_eq(rt_send_first(&a, p, 41), RDV_OK);
    cr_assert_eq(rt_send_first(&b, p, 41), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 1);
}

Test(relay, L17_uuid_is_case_sensitive)
{
    rt_conn a = rt_open("10.0.0.1:1"), b = rt_open("10.0.0.2:2");
    cr_assert_eq(rt_request(&a, "abc", NULL), RDV_OK);
    cr_assert_eq(rt_request(&b, "ABC", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_gauge("waiting"), 2);
    fc_advance(fc, 30000);
    cr_assert(rt_closed(a.cli) && rt_closed(b.cli), "both closed after 30 s with no bytes");
    cr_assert_eq(rt_counter("rejected_wait_timeout"), 2);
}

Test(relay, L18_third_connection_with_a_paired_uuid_waits_alone)
{
    rt_conn a, b;
    rt_pair(&a, &b, U);
    rt_conn c = rt_open("10.0.0.3:3");
    cr_assert_eq(rt_request(&c, U, NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 1);
    cr_assert_eq(rt_gauge("waiting"), 1);
    fc_advance(fc, 20000);
    uint8_t x[10] = "0123456789", got[10];
    rt_write_all(a.cli, x, sizeof x); /* keeps the pair active */
    cr_assert_eq(rt_read(b.cli, got, sizeof got, 1000), 10);
    fc_advance(fc, 10000);
    cr_assert(rt_closed(c.cli));
    cr_assert_eq(rt_gauge("pairs"), 1, "the pair is unaffected");
}

/* ------------------------------------------------------------------ waiting (§3.4) */
Test(relay, L45_waiting_side_closed_30s_after_its_request_not_before)
{
    rt_conn a = rt_open("10.0.0.1:1");
    fc_advance(fc, 5000); /* accept -> request: the wait counts from the request */
    cr_assert_eq(rt_request(&a, U, NULL), RDV_OK);
    fc_advance(fc, 29999);
    cr_assert(rt_silent(a.cli), "still waiting at 29.999 s");
    cr_assert_eq(rt_gauge("waiting"), 1);
    fc_advance(fc, 1);
    cr_assert(rt_closed(a.cli));
    cr_assert_eq(rt_gauge("waiting"), 0);
    cr_assert_eq(rt_counter("rejected_wait_timeout"), 1);
}

Test(relay, L46_after_a_timeout_the_uuid_waits_again)
{
    rt_conn a = rt_open("10.0.0.1:1");
    cr_assert_eq(rt_request(&a, U, NULL), RDV_OK);
    fc_advance(fc, 30000);
    rt_conn b = rt_open("10.0.0.2:2");
    cr_assert_eq(rt_request(&b, U, NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_gauge("waiting"), 1);
    fc_advance(fc, 30000);
    cr_assert(rt_closed(b.cli));
}

Test(relay, expiry_removes_only_the_expired_entry)
{
    /* An entry that paired and a newer one reusing the uuid: the older
     * deadline must not evict the newer waiter (relay.md §3.4). */
    rt_conn a = rt_open("10.0.0.1:1");
    cr_assert_eq(rt_request(&a, "u1", NULL), RDV_OK);
    fc_advance(fc, 10000);
    rt_conn b = rt_open("10.0.0.2:2");
    cr_assert_eq(rt_request(&b, "u2", NULL), RDV_OK);
    fc_advance(fc, 20000); /* a expires */
    cr_assert(rt_closed(a.cli));
    cr_assert(rt_silent(b.cli));
    cr_assert_eq(rt_gauge("waiting"), 1);
    fc_advance(fc, 10000);
    cr_assert(rt_closed(b.cli));
}

Test(relay, L47_a_waiting_side_that_leaves_is_dropped)
{
    rt_conn a = rt_open("10.0.0.1:1");
    cr_assert_eq(rt_request(&a, U, NULL), RDV_OK);
    close(a.cli);
    rt_pump(2);
    cr_assert_eq(rt_gauge("waiting"), 0);
    cr_assert_eq(rt_counter("rejected_waiter_gone"), 1);
    rt_conn b = rt_open("10.0.0.2:2");
    cr_assert_eq(rt_request(&b, U, NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 0, "B never pairs with a dead A");
    cr_assert_eq(rt_gauge("waiting"), 1);
}

Test(relay, data_sent_while_waiting_stays_for_the_partner)
{
    rt_conn a = rt_open("10.0.0.1:1");
    cr_assert_eq(rt_request(&a, U, NULL), RDV_OK);
    rt_write_all(a.cli, "signed-id", 9);
    rt_pump(3); /* the peek sees data: the entry stays, nothing is read */
    cr_assert_eq(rt_gauge("waiting"), 1);
    rt_conn b = rt_open("10.0.0.2:2");
    cr_assert_eq(rt_request(&b, U, NULL), RDV_OK);
    char got[16];
    cr_assert_eq(rt_read(b.cli, got, 9, 1000), 9);
    cr_assert_arr_eq(got, "signed-id", 9);
}

Test(relay, waiting_table_is_bounded)
{
    cr_assert_eq(rt_reload_module("max_waiting=2\n"), 0);
    rt_conn c[3];
    for (int i = 0; i < 3; i++) {
        char uuid[8];
        snprintf(uuid, sizeof uuid, "w%d", i);
        c[i] = rt_open("10.0.0.1:1");
        cr_assert_eq(rt_request(&c[i], uuid, NULL), RDV_OK);
    }
    cr_assert_eq(rt_gauge("waiting"), 2);
    cr_assert_eq(rt_counter("rejected_waiting_full"), 1);
    cr_assert(rt_closed(c[2].cli));
    /* A partner for an existing entry still pairs. */
    rt_conn p = rt_open("10.0.0.2:2");
    cr_assert_eq(rt_request(&p, "w0", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 1);
}

Test(relay, pairs_are_bounded)
{
    cr_assert_eq(rt_reload_module("max_pairs=1\n"), 0);
    rt_conn a, b;
    rt_pair(&a, &b, "p1");
    rt_conn c = rt_open("10.0.0.3:3"), d = rt_open("10.0.0.4:4");
    cr_assert_eq(rt_request(&c, "p2", NULL), RDV_OK);
    cr_assert_eq(rt_request(&d, "p2", NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 1);
    cr_assert_eq(rt_counter("rejected_pairs_full"), 1);
    cr_assert(rt_closed(d.cli));
}

/* ------------------------------------------------------------------ bad first messages (§3.3) */
static void expect_refused(const uint8_t *p, size_t n, const char *counter)
{
    rt_conn c = rt_open("10.0.0.9:9");
    cr_assert_eq(rt_send_first(&c, p, n), RDV_CLOSE);
    cr_assert_not(fc_conn_alive(fc, c.id));
    cr_assert_eq(fc_conn(fc, c.id)->why, RDV_CLOSE_LOCAL);
    cr_assert_eq(rt_counter(counter), 1, "%s", counter);
    cr_assert_eq(fc_sent_count(fc), 0, "a refusal is a silent close");
    cr_assert_eq(rt_gauge("awaiting_first"), 0);
    /* Liveness: a fresh pair still forms. */
    rt_conn a, b;
    rt_pair(&a, &b, "alive");
    cr_assert_eq(rt_gauge("pairs"), 1);
}

Test(relay, L36_random_bytes_are_refused)
{
    uint8_t p[40];
    rt_fill(p, sizeof p, 7);
    p[0] = 0xff; /* field 31, wire type 7: invalid */
    expect_refused(p, sizeof p, "rejected_bad_message");
}

Test(relay, L37_other_message_kinds_are_refused)
{
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    Hbb__RegisterPeer rp = HBB__REGISTER_PEER__INIT;
    rp.id = "123";
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER;
    m.register_peer = &rp;
    uint8_t buf[64];
    size_t n = hbb__rendezvous_message__pack(&m, buf);
    expect_refused(buf, n, "rejected_not_relay");
}

Test(relay, L38_empty_first_frame_is_refused) { expect_refused((const uint8_t *)"", 0, "rejected_not_relay"); }

Test(relay, L39_empty_uuid_is_refused)
{
    uint8_t buf[64];
    size_t n = rt_rr(buf, sizeof buf, "", "somekey");
    expect_refused(buf, n, "rejected_empty_uuid");
}

Test(relay, L40_deeply_nested_groups_are_refused_without_recursion)
{
    /* 300 000 start-group tags then 300 000 end-group tags is over the
     * first-frame cap; the same shape within the cap must fail to parse. */
    size_t half = 30000;
    uint8_t *p = malloc(2 * half);
    memset(p, 0x0b, half);
    memset(p + half, 0x0c, half);
    expect_refused(p, 2 * half, "rejected_bad_message");
    free(p);
}

Test(relay, L40_oversized_first_frame_is_refused)
{
    size_t n = 600000;
    uint8_t *p = malloc(n);
    memset(p, 0x0b, n / 2);
    memset(p + n / 2, 0x0c, n / 2);
    expect_refused(p, n, "rejected_oversize");
    free(p);
}

Test(relay, invalid_utf8_uuid_is_refused)
{
    uint8_t buf[64];
    size_t n = rt_rr(buf, sizeof buf, "ab\xff", NULL);
    expect_refused(buf, n, "rejected_bad_message");
}

Test(relay, too_long_uuid_is_refused)
{
    cr_assert_eq(rt_reload_module("uuid_max=8\n"), 0);
    uint8_t buf[64];
    size_t n = rt_rr(buf, sizeof buf, "123456789", NULL);
    expect_refused(buf, n, "rejected_long_uuid");
}

Test(relay, truncated_message_is_refused)
{
    uint8_t buf[64];
    size_t n = rt_rr(buf, sizeof buf, U, NULL);
    expect_refused(buf, n - 5, "rejected_bad_message");
}

Test(relay, core_closes_are_counted_by_reason)
{
    rt_conn c = rt_open("10.0.0.1:1");
    cr_assert_eq(rt_gauge("awaiting_first"), 1);
    fc_conn_drop(fc, c.id, RDV_CLOSE_IDLE); /* the core's first-frame timeout (L42, L43) */
    rt_conn d = rt_open("10.0.0.1:2");
    fc_conn_drop(fc, d.id, RDV_CLOSE_OVERSIZE); /* header over core.max_frame (L41) */
    rt_conn e = rt_open("10.0.0.1:3");
    fc_conn_peer_close(fc, e.id); /* L44 */
    cr_assert_eq(rt_counter("rejected_first_timeout"), 1);
    cr_assert_eq(rt_counter("rejected_oversize"), 1);
    cr_assert_eq(rt_counter("closed_before_request"), 1);
    cr_assert_eq(rt_gauge("awaiting_first"), 0);
}

/* ------------------------------------------------------------------ relay key (§11) */
Test(relay, L50_wrong_key_is_refused_and_does_not_disturb_the_waiter)
{
    cr_assert_eq(rt_reload_module("key=K\n"), 0);
    rt_conn a = rt_open("10.0.0.1:1"), b = rt_open("10.0.0.2:2"), c = rt_open("10.0.0.3:3");
    cr_assert_eq(rt_request(&a, U, "K"), RDV_OK);
    cr_assert_eq(rt_request(&b, U, "wrong"), RDV_CLOSE);
    cr_assert(fc_log_contains(fc, "Relay authentication failed from 10.0.0.2:2: invalid key"));
    cr_assert_eq(rt_counter("rejected_bad_key"), 1);
    cr_assert_eq(rt_gauge("waiting"), 1, "A keeps waiting");
    cr_assert_eq(rt_request(&c, U, "K"), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 1);
}

Test(relay, L51_empty_or_missing_key_is_refused_when_one_is_set)
{
    cr_assert_eq(rt_reload_module("key=K\n"), 0);
    rt_conn a = rt_open("10.0.0.1:1"), b = rt_open("10.0.0.2:2"), c = rt_open("10.0.0.3:3");
    cr_assert_eq(rt_request(&a, U, ""), RDV_CLOSE);
    cr_assert_eq(rt_request(&b, U, NULL), RDV_CLOSE);
    cr_assert_eq(rt_request(&c, U, "k"), RDV_CLOSE, "exact, case-sensitive comparison");
    cr_assert_eq(rt_counter("rejected_bad_key"), 3);
    cr_assert_eq(rt_gauge("waiting"), 0);
}

Test(relay, L49_no_key_accepts_any_licence_key)
{
    const char *keys[] = { "", "random", "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw=" };
    for (int i = 0; i < 3; i++) {
        char uuid[8];
        snprintf(uuid, sizeof uuid, "k%d", i);
        rt_conn a = rt_open("10.0.0.1:1"), b = rt_open("10.0.0.2:2");
        cr_assert_eq(rt_request(&a, uuid, keys[i]), RDV_OK);
        cr_assert_eq(rt_request(&b, uuid, keys[i]), RDV_OK);
    }
    cr_assert_eq(rt_gauge("pairs"), 3);
}

static void b64(const uint8_t *p, size_t n, char *out, size_t cap)
{
    sodium_bin2base64(out, cap, p, n, sodium_base64_VARIANT_ORIGINAL);
}

Test(relay, L52_a_secret_key_requires_its_public_half)
{
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    char skt[100], pkt[64], conf[160];
    b64(sk, sizeof sk, skt, sizeof skt);
    b64(pk, sizeof pk, pkt, sizeof pkt);
    snprintf(conf, sizeof conf, "key=%s\n", skt);
    cr_assert_eq(rt_reload_module(conf), 0);
    cr_assert_str_eq(R->key, pkt);
    rt_conn a = rt_open("10.0.0.1:1");
    cr_assert_eq(rt_request(&a, U, skt), RDV_CLOSE);
    rt_conn b = rt_open("10.0.0.1:1");
    cr_assert_eq(rt_request(&b, U, pkt), RDV_OK);
}

Test(relay, L53_dash_uses_the_existing_key_file)
{
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    char skt[100], pkt[64];
    b64(sk, sizeof sk, skt, sizeof skt);
    b64(pk, sizeof pk, pkt, sizeof pkt);
    char text[110];
    snprintf(text, sizeof text, "%s\n", skt); /* trailing newline is trimmed */
    rt_write_file("id_ed25519", text);
    cr_assert_eq(rt_reload_module("key=-\n"), 0);
    cr_assert_str_eq(R->key, pkt);
    cr_assert_eq(rt_reload_module("key=_\n"), 0);
    cr_assert_str_eq(R->key, pkt);
}

Test(relay, L54_dash_creates_the_key_pair_when_absent)
{
    cr_assert_eq(rt_reload_module("key=-\n"), 0);
    char pub[100] = "", sec[200] = "";
    FILE *f = fopen("id_ed25519.pub", "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(pub, sizeof pub, f));
    fclose(f);
    f = fopen("id_ed25519", "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(sec, sizeof sec, f));
    fclose(f);
    cr_assert_eq(strlen(pub), 44);
    cr_assert_eq(strlen(sec), 88);
    cr_assert_null(strchr(pub, '/'), "the servers' keys avoid '/'");
    cr_assert_str_eq(R->key, pub);
    struct stat sb;
    cr_assert_eq(stat("id_ed25519", &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600);
    cr_assert(fc_log_contains(fc, "Private/public key written to id_ed25519/id_ed25519.pub"));
    char line[160];
    snprintf(line, sizeof line, "relay key required; Key: %s", pub);
    cr_assert(fc_log_contains(fc, line), "the key clients must present is logged, as hbbr does");
}

/* [ours] upstream generates a new pair over an existing .pub: every client
 * configured with that key would then fail the relay's key check. */
Test(relay, a_missing_secret_key_beside_its_pub_fails_start)
{
    rt_write_file("id_ed25519.pub", "c3RpbGwgdGhlIGtleSBjbGllbnRzIHdlcmUgZ2l2ZW4=");
    cr_assert_eq(rt_reload_module("key=-\n"), -EINVAL);
    cr_assert(fc_log_contains(fc, "id_ed25519 is missing but id_ed25519.pub exists"));
    cr_assert_neq(access("id_ed25519", F_OK), 0, "no new secret key");
    FILE *f = fopen("id_ed25519.pub", "r");
    char pub[100] = "";
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(pub, sizeof pub, f));
    fclose(f);
    cr_assert_str_eq(pub, "c3RpbGwgdGhlIGtleSBjbGllbnRzIHdlcmUgZ2l2ZW4=", "the .pub is untouched");
}

Test(relay, L56_malformed_key_file_fails_start)
{
    rt_write_file("id_ed25519", "bm90IGEga2V5");
    cr_assert_eq(rt_reload_module("key=-\n"), -EINVAL);
    cr_assert(fc_log_contains(fc, "Fatal error: malformed private key in id_ed25519."));
}

/* ------------------------------------------------------------------ blocklist at accept (§2) */
Test(relay, L76_blocklisted_peer_is_refused_at_accept)
{
    char out[64];
    cr_assert_eq(fc_admin(fc, "Ba 10.0.0.7", out, sizeof out), 0);
    rt_conn c = rt_open("10.0.0.7:5000");
    cr_assert_not(fc_conn_alive(fc, c.id));
    cr_assert_eq(rt_counter("rejected_blocked"), 1);
    rt_conn d = rt_open("10.0.0.8:5000");
    cr_assert(fc_conn_alive(fc, d.id), "others are unaffected");
    cr_assert_eq(fc_admin(fc, "Br 10.0.0.7", out, sizeof out), 0);
    rt_conn e = rt_open("10.0.0.7:5001");
    cr_assert(fc_conn_alive(fc, e.id), "accepted again after Br");
}

Test(relay, L72_blocklist_file_with_crlf_and_comment)
{
    rt_write_file("blocklist.txt", "198.51.100.7 banned on 2026-01-01\r\n");
    cr_assert_eq(rt_reload_module(NULL), 0);
    cr_assert_eq(rt_gauge("blocklist_entries"), 1);
    rt_conn c = rt_open("198.51.100.7:1");
    cr_assert_not(fc_conn_alive(fc, c.id));
    rt_conn d = rt_open("198.51.100.8:1");
    cr_assert(fc_conn_alive(fc, d.id));
}

Test(relay, ipv6_and_mapped_addresses_match_their_text)
{
    char out[64];
    fc_admin(fc, "Ba 2001:db8::7|192.0.2.1", out, sizeof out);
    rt_conn c = rt_open("[2001:db8::7]:1");
    cr_assert_not(fc_conn_alive(fc, c.id));
    rt_conn d = rt_open("[::ffff:192.0.2.1]:1"); /* normalised to 192.0.2.1 (relay.md §1) */
    cr_assert_not(fc_conn_alive(fc, d.id));
}

/* ------------------------------------------------------------------ loopback console (§8) */
Test(relay, loopback_is_a_relay_client_unless_the_console_is_enabled)
{
    rt_conn a = rt_open("127.0.0.1:1"), b = rt_open("127.0.0.2:2");
    cr_assert_eq(rt_request(&a, U, NULL), RDV_OK);
    cr_assert_eq(rt_request(&b, U, NULL), RDV_OK);
    cr_assert_eq(rt_gauge("pairs"), 1, "L31-like: loopback relays by default");
    cr_assert_eq(rt_reload_module("console_loopback=true\n"), 0);
    rt_conn c = rt_open("127.0.0.1:3");
    cr_assert_eq(fc_conn(fc, c.id)->why, RDV_CLOSE_DETACHED, "taken over as a console session");
    rt_conn d = rt_open("[::1]:4");
    cr_assert_eq(fc_conn(fc, d.id)->why, RDV_CLOSE_DETACHED);
    rt_conn e = rt_open("10.0.0.1:5");
    cr_assert(fc_conn_alive(fc, e.id), "non-loopback clients still relay");
    cr_assert_eq(rt_gauge("awaiting_first"), 1);
}

/* ------------------------------------------------------------------ lifecycle */
Test(relay, stop_closes_pairs_and_waiters)
{
    rt_conn a, b;
    rt_pair(&a, &b, U);
    rt_conn c = rt_open("10.0.0.3:3");
    cr_assert_eq(rt_request(&c, "lonely", NULL), RDV_OK);
    rdv_module_get()->stop(st);
    cr_assert(rt_closed(a.cli) && rt_closed(b.cli) && rt_closed(c.cli));
    cr_assert_eq(rt_gauge("pairs"), 0);
    cr_assert_eq(rt_gauge("waiting"), 0);
    cr_assert_eq(rt_counter("closed_shutdown"), 1);
}

Test(relay, reload_rereads_lists_and_bandwidth)
{
    char out[128];
    fc_admin(fc, "sb 2", out, sizeof out);
    fc_admin(fc, "ba 1.1.1.1", out, sizeof out);
    rt_write_file("blacklist.txt", "9.9.9.9\n8.8.8.8\n");
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "single_bandwidth=64\n"), 0);
    cr_assert_eq(fc_admin(fc, "sb", out, sizeof out), 0);
    cr_assert_str_eq(out, "64Mb/s\n", "conf.d replaces console changes on SIGHUP");
    cr_assert_eq(rt_gauge("blacklist_entries"), 2);
    cr_assert_eq(fc_admin(fc, "b 1.1.1.1", out, sizeof out), 0);
    cr_assert_str_eq(out, "false\n");
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "port=1234\n"), -EPERM, "the port needs a restart");
}
