/* test_register_pk.c — RegisterPk (rendezvous.md §6.2, §11.2, §13.3) over
 * UDP, NOT_SUPPORT on streams (§4.2; EXT §15.4 is test_stream.c), caps and
 * the max_peers bound.
 * R-numbers: rendezvous-checklist.md. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fake_services.h"

TestSuite(register_pk, .init = rt_setup, .fini = rt_teardown);

#define OK HBB__REGISTER_PK_RESPONSE__RESULT__OK
#define MISMATCH HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH
#define TOO_FREQUENT HBB__REGISTER_PK_RESPONSE__RESULT__TOO_FREQUENT
#define INVALID_ID HBB__REGISTER_PK_RESPONSE__RESULT__INVALID_ID_FORMAT
#define NOT_SUPPORT HBB__REGISTER_PK_RESPONSE__RESULT__NOT_SUPPORT
#define SERVER_ERROR HBB__REGISTER_PK_RESPONSE__RESULT__SERVER_ERROR

static const char P1[] = "P1P1P1P1P1P1P1P1P1P1P1P1P1P1P1P1"; /* 32 bytes */
static const char P2[] = "P2P2P2P2P2P2P2P2P2P2P2P2P2P2P2P2";

Test(register_pk, r32_empty_uuid_or_pk_is_ignored)
{
    cr_assert_eq(rt_reg_pk_bin("123456789", "", 0, P1, 32, "127.0.0.1:1"), -1);
    cr_assert_eq(rt_reg_pk_bin("123456789", "u1", 2, "", 0, "127.0.0.1:1"), -1);
    cr_assert_eq(rt_reg_pk_bin("", "", 0, "", 0, "127.0.0.1:1"), -1);
    cr_assert_eq(rt_counter("pk_ignored"), 3);
    cr_assert_eq(rt.bl.calls, 0);
    cr_assert_eq(rt.fs.puts, 0);
}

Test(register_pk, r33_short_id_is_uuid_mismatch)
{
    cr_assert_eq(rt_reg_pk("12345", "u1", P1, "127.0.0.1:1"), MISMATCH);
    cr_assert_eq(rt_reg_pk("", "u1", P1, "127.0.0.1:1"), MISMATCH, "an empty id is short too");
    cr_assert_eq(rt.bl.calls, 0, "the id check comes before the IP blocker");
    cr_assert_eq(rt_reg_pk("123456", "u1", P1, "127.0.0.1:1"), OK);
    cr_assert_eq(rt_counter("pk_uuid_mismatch"), 2);
    cr_assert_eq(rt_counter("pk_ok"), 1);
}

Test(register_pk, r33_wire_bytes)
{
    Hbb__RegisterPk rk = HBB__REGISTER_PK__INIT;
    rk.id = "12345";
    rk.uuid.data = (uint8_t *)"u1", rk.uuid.len = 2;
    rk.pk.data = (uint8_t *)P1, rk.pk.len = 32;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &rk;
    rdv_addr a = fc_addr("127.0.0.1:1");
    fc_udp(rt.fc, "main", &a, &m);
    const fc_sent *s = fc_next_sent(rt.fc);
    const uint8_t mismatch[] = { 0x82, 0x01, 0x02, 0x08, 0x02 };
    cr_assert_eq(s->len, sizeof mismatch);
    cr_assert_arr_eq(s->raw, mismatch, sizeof mismatch);
    rk.id = "123456";
    fc_udp(rt.fc, "main", &a, &m);
    s = fc_next_sent(rt.fc);
    const uint8_t ok[] = { 0x82, 0x01, 0x00 };
    cr_assert_eq(s->len, sizeof ok);
    cr_assert_arr_eq(s->raw, ok, sizeof ok);
}

Test(register_pk, long_id_is_invalid_id_format)
{
    char id[128];
    memset(id, '7', sizeof id);
    id[100] = '\0';
    cr_assert_eq(rt_reg_pk(id, "u1", P1, "127.0.0.1:1"), OK, "100 bytes is allowed");
    id[100] = '7', id[101] = '\0';
    cr_assert_eq(rt_reg_pk(id, "u1", P1, "127.0.0.1:1"), INVALID_ID, "101 bytes: the allowed deviation");
    cr_assert_eq(rt_counter("pk_invalid_id"), 1);
    cr_assert_null(fake_storage_find(&rt.fs, id));
}

Test(register_pk, id_max_len_is_a_setting)
{
    rt_teardown();
    rt_setup_conf("id_max_len = 10\n");
    cr_assert_eq(rt_reg_pk("1234567890", "u1", P1, "127.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("12345678901", "u1", P1, "127.0.0.1:1"), INVALID_ID);
}

Test(register_pk, r34_r50_first_registration_is_stored)
{
    cr_assert_eq(rt_reg_pk("200000001", "u1", P1, "127.0.0.1:1"), OK);
    cr_assert_eq(rt.fs.inserts, 1);
    cr_assert(rt.fs.last_insert);
    const fake_row *r = fake_storage_find(&rt.fs, "200000001");
    cr_assert_not_null(r);
    cr_assert_eq(r->uuid_len, 2);
    cr_assert_arr_eq(r->uuid, "u1", 2, "uuid = X'7531'");
    cr_assert_eq(r->pk_len, 32);
    cr_assert_arr_eq(r->pk, P1, 32);
    cr_assert_str_eq(r->info_ip, "127.0.0.1");
    cr_assert_eq(r->guid[6] >> 4, 4, "guid is a UUIDv4");
    cr_assert_eq(r->guid[8] >> 6, 2);
    cr_assert_eq(rt_counter("stored"), 1);
    /* the record is online (step 8 sets last_reg_time) */
    cr_assert(rt_online("200000001"));
    cr_assert_eq(rt.online_hooks, 1);
}

Test(register_pk, guids_are_random)
{
    rt_reg_pk("200000001", "u1", P1, "127.0.0.1:1");
    rt_reg_pk("200000002", "u1", P1, "127.0.0.1:1");
    cr_assert_neq(memcmp(fake_storage_find(&rt.fs, "200000001")->guid, fake_storage_find(&rt.fs, "200000002")->guid,
                         16),
                  0);
}

Test(register_pk, r35_uuid_conflict_keeps_the_binding)
{
    rt_reg("200000001", "u1", P1, "10.0.0.1:1000");
    cr_assert_eq(rt_reg_pk("200000001", "u2", P1, "10.0.0.1:1000"), MISMATCH);
    cr_assert_eq(rt_reg_pk("200000001", "u2", P2, "10.0.0.1:1000"), MISMATCH);
    rdv_peer_info pi;
    rt_lookup("200000001", RDV_LOOKUP_STORED, &pi);
    cr_assert_eq(pi.pk_len, 32);
    cr_assert_arr_eq(pi.pk, P1, 32, "a later punch still signs P1");
    rdv_addr a = fc_addr("10.0.0.1:1000");
    cr_assert(rdv_addr_equal(&pi.addr, &a), "and uses the original address");
    cr_assert_eq(rt.fs.puts, 1);
}

Test(register_pk, r36_r51_new_pk_same_ip_updates_in_place)
{
    rt_reg("200000001", "u1", P1, "10.0.0.1:1000");
    uint8_t guid[16];
    memcpy(guid, fake_storage_find(&rt.fs, "200000001")->guid, 16);
    cr_assert_eq(rt_reg_pk("200000001", "u1", P2, "10.0.0.1:1000"), OK);
    rdv_peer_info pi;
    rt_lookup("200000001", RDV_LOOKUP_STORED, &pi);
    cr_assert_arr_eq(pi.pk, P2, 32);
    cr_assert_eq(rt.fs.nrows, 1, "row count unchanged");
    cr_assert_eq(rt.fs.updates, 1);
    cr_assert_not(rt.fs.last_insert);
    const fake_row *r = fake_storage_find(&rt.fs, "200000001");
    cr_assert_arr_eq(r->guid, guid, 16, "same guid");
    cr_assert_arr_eq(r->pk, P2, 32);
}

Test(register_pk, r37_new_pk_from_new_ip_is_a_conflict)
{
    rt_reg("200000002", "u1", P1, "10.0.0.1:1000");
    cr_assert_eq(rt_reg_pk("200000002", "u1", P2, "10.0.0.2:1000"), MISMATCH);
    rdv_peer_info pi;
    rt_lookup("200000002", RDV_LOOKUP_MEMORY, &pi);
    cr_assert_arr_eq(pi.pk, P1, 32);
    cr_assert_str_eq(pi.ip, "10.0.0.1");
}

Test(register_pk, r38_same_pk_new_ip_is_accepted_and_persisted)
{
    rt_reg("200000003", "u1", P1, "10.0.0.1:1000");
    cr_assert_eq(rt_reg_pk("200000003", "u1", P1, "10.0.0.2:1000"), OK);
    const fake_row *r = fake_storage_find(&rt.fs, "200000003");
    cr_assert_str_eq(r->info_ip, "10.0.0.2");
    cr_assert_eq(rt.fs.updates, 1);
    cr_assert_eq(rt_counter("ip_changes"), 1, "recorded in the IP-change log (§11.3)");
}

Test(register_pk, r52_no_write_without_change)
{
    rt_reg("200000001", "u1", P1, "10.0.0.1:1000");
    unsigned puts = rt.fs.puts;
    fc_advance(rt.fc, 7000);
    cr_assert_eq(rt_reg_pk("200000001", "u1", P1, "10.0.0.1:1000"), OK);
    cr_assert_eq(rt.fs.puts, puts);
    /* and nothing changed means not refreshed (§6.2 note) */
    fc_advance(rt.fc, 23500);
    cr_assert_not(rt_online("200000001"));
}

Test(register_pk, register_pk_alone_does_not_refresh_an_online_peer)
{
    rt_reg("200000005", "u1", P1, "10.0.0.1:1000");
    fc_advance(rt.fc, 20000);
    cr_assert_eq(rt_reg_pk("200000005", "u1", P1, "10.0.0.1:2000"), OK);
    rdv_peer_info pi;
    rt_lookup("200000005", RDV_LOOKUP_MEMORY, &pi);
    rdv_addr a = fc_addr("10.0.0.1:1000");
    cr_assert(rdv_addr_equal(&pi.addr, &a), "socket_addr not refreshed either");
    fc_advance(rt.fc, 10000);
    cr_assert_not(rt_online("200000005"));
}

/* ------------------------------------------------------------------ §11.2 limiter */
Test(register_pk, r40_per_id_limiter_three_per_burst)
{
    cr_assert_eq(rt_reg_pk("200000040", "u1", P1, "10.0.0.1:1"), OK);
    fc_advance(rt.fc, 500);
    cr_assert_eq(rt_reg_pk("200000040", "u1", P1, "10.0.0.1:1"), OK);
    fc_advance(rt.fc, 500);
    cr_assert_eq(rt_reg_pk("200000040", "u1", P1, "10.0.0.1:1"), OK);
    fc_advance(rt.fc, 500);
    Hbb__RegisterPk rk = HBB__REGISTER_PK__INIT;
    rk.id = "200000040";
    rk.uuid.data = (uint8_t *)"u1", rk.uuid.len = 2;
    rk.pk.data = (uint8_t *)P1, rk.pk.len = 32;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &rk;
    rdv_addr a = fc_addr("10.0.0.1:1");
    fc_udp(rt.fc, "main", &a, &m);
    const fc_sent *s = fc_next_sent(rt.fc);
    const uint8_t too_frequent[] = { 0x82, 0x01, 0x02, 0x08, 0x04 };
    cr_assert_eq(s->len, sizeof too_frequent);
    cr_assert_arr_eq(s->raw, too_frequent, sizeof too_frequent);
    cr_assert_eq(rt_counter("pk_too_frequent"), 1);
}

Test(register_pk, r40_limiter_resets_after_a_gap_of_more_than_6_whole_seconds)
{
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rt_reg_pk("200000041", "u1", P1, "10.0.0.1:1"), OK);
    fc_advance(rt.fc, 6999); /* elapsed().as_secs() == 6: not > 6 */
    cr_assert_eq(rt_reg_pk("200000041", "u1", P1, "10.0.0.1:1"), TOO_FREQUENT);
    fc_advance(rt.fc, 1); /* 7 s after the last accepted one */
    cr_assert_eq(rt_reg_pk("200000041", "u1", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("200000041", "u1", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("200000041", "u1", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("200000041", "u1", P1, "10.0.0.1:1"), TOO_FREQUENT);
}

Test(register_pk, limiter_refusals_do_not_extend_the_burst)
{
    for (int i = 0; i < 3; i++)
        rt_reg_pk("200000042", "u1", P1, "10.0.0.1:1");
    for (int i = 0; i < 6; i++) { /* one refused request per second */
        fc_advance(rt.fc, 1000);
        cr_assert_eq(rt_reg_pk("200000042", "u1", P1, "10.0.0.1:1"), TOO_FREQUENT);
    }
    fc_advance(rt.fc, 1000); /* 7 s after the 3rd accepted */
    cr_assert_eq(rt_reg_pk("200000042", "u1", P1, "10.0.0.1:1"), OK);
}

Test(register_pk, uuid_mismatch_does_not_touch_the_limiter)
{
    cr_assert_eq(rt_reg_pk("200000043", "u1", P1, "10.0.0.1:1"), OK);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(rt_reg_pk("200000043", "u2", P1, "10.0.0.1:1"), MISMATCH);
    cr_assert_eq(rt_reg_pk("200000043", "u1", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("200000043", "u1", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("200000043", "u1", P1, "10.0.0.1:1"), TOO_FREQUENT);
}

Test(register_pk, limiter_constants_are_settings)
{
    rt_teardown();
    rt_setup_conf("pk_burst = 1\npk_window_s = 2\n");
    cr_assert_eq(rt_reg_pk("200000044", "u1", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("200000044", "u1", P1, "10.0.0.1:1"), TOO_FREQUENT);
    fc_advance(rt.fc, 3000);
    cr_assert_eq(rt_reg_pk("200000044", "u1", P1, "10.0.0.1:1"), OK);
}

/* ------------------------------------------------------------------ blocklist (§11.1 via service) */
Test(register_pk, blocklist_refusal_is_too_frequent_before_any_lookup)
{
    fake_storage_add(&rt.fs, "200000050", "u1", 2, P1, 32, "10.0.0.1");
    rt_restart(NULL);
    rt.bl.allow = false;
    cr_assert_eq(rt_reg_pk("200000050", "u1", P1, "10.0.0.7:9"), TOO_FREQUENT);
    cr_assert_eq(rt.bl.calls, 1);
    cr_assert_str_eq(rt.bl.last_id, "200000050");
    rdv_addr a = fc_addr("10.0.0.7:9");
    cr_assert(rdv_addr_equal(&rt.bl.last_ip, &a));
    cr_assert_eq(rt_lookup("200000050", RDV_LOOKUP_MEMORY, NULL), -ENOENT, "the stored record stays cold");
    cr_assert_eq(rt.fs.puts, 0);
}

Test(register_pk, blocklist_is_asked_even_for_later_mismatches)
{
    rt_reg("200000051", "u1", P1, "10.0.0.1:1");
    unsigned calls = rt.bl.calls;
    cr_assert_eq(rt_reg_pk("200000051", "u2", P1, "10.0.0.1:1"), MISMATCH);
    cr_assert_eq(rt.bl.calls, calls + 1);
}

Test(register_pk, works_without_a_blocklist)
{
    rt_teardown();
    rt_begin(false);
    cr_assert_eq(rt_load(NULL), 0);
    for (int i = 0; i < 40; i++) {
        char id[16];
        snprintf(id, sizeof id, "5000000%02d", i);
        cr_assert_eq(rt_reg_pk(id, "u1", P1, "10.0.0.1:1"), OK);
    }
}

/* ------------------------------------------------------------------ storage trouble */
Test(register_pk, storage_refusal_keeps_memory_and_answers_ok)
{
    rt.fs.put_result = -ENOBUFS;
    cr_assert_eq(rt_reg_pk("200000060", "u1", P1, "10.0.0.1:1"), OK, "database errors do not change the reply");
    cr_assert_eq(rt_counter("store_put_failed"), 1);
    cr_assert(fc_log_contains(rt.fc, "storing peer 200000060 failed"));
    cr_assert_eq(rt_reg_peer("200000060", 0, "10.0.0.1:1"), 0, "known in memory");
    /* the next change retries as an insert */
    rt.fs.put_result = 0;
    cr_assert_eq(rt_reg_pk("200000060", "u1", P2, "10.0.0.1:1"), OK);
    cr_assert_eq(rt.fs.inserts, 1);
    cr_assert(rt.fs.last_insert);
    cr_assert_arr_eq(fake_storage_find(&rt.fs, "200000060")->pk, P2, 32);
}

/* §13.3 with a bounded storage queue: a write refused because the queue is
 * full (a long disk outage) is not lost when the peer never changes again:
 * the sweep resubmits it, as an insert or an update, once the storage takes
 * writes again. */
Test(register_pk, refused_writes_are_resubmitted_by_the_sweep)
{
    rt_reg_pk("200000063", "u1", P1, "10.0.0.1:1"); /* stored before the outage */
    cr_assert_eq(rt.fs.inserts, 1);
    rt.fs.put_result = -ENOBUFS;
    cr_assert_eq(rt_reg_pk("200000064", "u1", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("200000065", "u1", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("200000063", "u1", P2, "10.0.0.1:2"), OK, "new pk: an update");
    cr_assert_eq(rt_counter("store_put_failed"), 3);
    cr_assert_eq(rt_gauge("store_unsaved"), 3);

    fc_advance(rt.fc, 1000); /* sweep: still refused, nothing changes */
    cr_assert_eq(rt_gauge("store_unsaved"), 3);
    cr_assert(fc_log_contains(rt.fc, "3 peers not stored yet"));
    cr_assert_eq(rt.fs.puts, 1);

    rt.fs.put_result = 0;
    fc_advance(rt.fc, 1000);
    cr_assert_eq(rt_gauge("store_unsaved"), 0);
    cr_assert_eq(rt_counter("store_resubmitted"), 3);
    cr_assert_eq(rt.fs.inserts, 3);
    cr_assert_eq(rt.fs.updates, 1);
    cr_assert_not_null(fake_storage_find(&rt.fs, "200000064"));
    cr_assert_not_null(fake_storage_find(&rt.fs, "200000065"));
    const fake_row *r = fake_storage_find(&rt.fs, "200000063");
    cr_assert_arr_eq(r->pk, P2, 32, "the update carries the new pk");
    cr_assert_str_eq(r->info_ip, "10.0.0.1");
    cr_assert(fc_log_contains(rt.fc, "queued to it again"));

    fc_advance(rt.fc, 3000);
    cr_assert_eq(rt.fs.puts, 4, "nothing is written twice");
}

/* R50: the storage lost its rows (storage-sqlite: the file was deleted or
 * replaced while running). Every peer, stored or not, cold or looked at, is
 * put again as an insert with its own guid, by the sweep; a full queue
 * holds the rest back for later sweeps. */
Test(register_pk, a_storage_that_lost_its_rows_gets_every_peer_again)
{
    char id[16];
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof id, "20000020%d", i);
        cr_assert_eq(rt_reg_pk(id, "u1", P1, "10.0.0.1:1"), OK);
    }
    cr_assert_eq(rt.fs.nrows, 6);
    uint8_t guid3[16];
    memcpy(guid3, fake_storage_find(&rt.fs, "200000203")->guid, 16);
    rt_restart(NULL); /* the peers are cold now */
    rt.fs.puts = rt.fs.inserts = rt.fs.updates = 0;
    rt.fs.put_limit = 4; /* the queue takes 4 now */
    fake_storage_lose(&rt.fs);
    cr_assert_eq(rt_counter("store_lost"), 1);
    cr_assert_eq(rt.fs.nrows, 4, "put at once, up to the queue's bound");
    cr_assert_eq(rt_gauge("store_unsaved"), 2);
    rt.fs.put_limit = 0;
    fc_advance(rt.fc, 1000);
    cr_assert_eq(rt_gauge("store_unsaved"), 0);
    cr_assert_eq(rt.fs.nrows, 6);
    cr_assert_eq(rt.fs.inserts, 6, "as inserts");
    cr_assert_eq(rt.fs.updates, 0);
    const fake_row *r = fake_storage_find(&rt.fs, "200000203");
    cr_assert_arr_eq(r->guid, guid3, 16, "with the guid it had");
    cr_assert_arr_eq(r->pk, P1, 32);
    cr_assert(fc_log_contains(rt.fc, "the storage lost its rows: all 6 peers are stored again"));
    /* the next change is an update again */
    cr_assert_eq(rt_reg_pk("200000203", "u1", P2, "10.0.0.1:1"), OK);
    cr_assert_eq(rt.fs.updates, 1);
    cr_assert_eq(rt.fs.nrows, 6);
}

/* A row the storage refuses on its own (-EINVAL: here a uuid over
 * storage-sqlite's 1024-byte cap, reachable with uuid_max_len raised above
 * it) cannot be stored by putting it again: it is counted and logged, not
 * left unsaved for the sweep, where a pass stops at the first refusal and
 * would stop at that row on every pass, so the peers refused for a full
 * queue behind it were never stored. */
Test(register_pk, a_row_the_storage_refuses_is_not_resubmitted)
{
    rt_teardown();
    rt_setup_conf("uuid_max_len = 2000\n");
    rt.fs.uuid_cap = 1024;
    static uint8_t big[1500];
    memset(big, 'u', sizeof big);
    cr_assert_eq(rt_reg_pk_bin("200000070", big, sizeof big, P1, 32, "10.0.0.1:1"), OK, "the reply is unchanged");
    cr_assert_eq(rt_counter("store_put_failed"), 1);
    cr_assert_eq(rt_gauge("store_unsaved"), 0, "a refused row is not waiting for the sweep");
    rt.fs.put_result = -ENOBUFS;
    cr_assert_eq(rt_reg_pk("200000071", "u1", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("200000072", "u1", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_gauge("store_unsaved"), 2);
    rt.fs.put_result = 0;
    fc_advance(rt.fc, 1000);
    fc_advance(rt.fc, 1000);
    cr_assert_eq(rt_gauge("store_unsaved"), 0);
    cr_assert_not_null(fake_storage_find(&rt.fs, "200000071"));
    cr_assert_not_null(fake_storage_find(&rt.fs, "200000072"));
    cr_assert_null(fake_storage_find(&rt.fs, "200000070"));
    cr_assert_eq(rt.fs.puts, 2, "the refused row is not put again");
}

/* The queue fills up again part-way through a pass: the sweep stops at the
 * first refusal and the rest follow on later sweeps; a record that is
 * stored by its own next change is no longer resubmitted. */
Test(register_pk, resubmission_stops_while_the_queue_is_full)
{
    char id[16];
    rt.fs.put_result = -ENOBUFS;
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "20000010%d", i);
        cr_assert_eq(rt_reg_pk(id, "u1", P1, "10.0.0.1:1"), OK);
    }
    cr_assert_eq(rt_gauge("store_unsaved"), 10);
    rt.fs.put_result = 0;
    cr_assert_eq(rt_reg_pk("200000105", "u1", P2, "10.0.0.1:1"), OK, "its own change stores it");
    cr_assert_eq(rt_gauge("store_unsaved"), 9);
    rt.fs.put_limit = 5; /* 1 taken: room for 4 more */
    fc_advance(rt.fc, 1000);
    cr_assert_eq(rt.fs.puts, 5);
    cr_assert_eq(rt_gauge("store_unsaved"), 5);
    rt.fs.put_limit = 0;
    fc_advance(rt.fc, 1000);
    cr_assert_eq(rt_gauge("store_unsaved"), 0);
    cr_assert_eq(rt.fs.inserts, 10, "each peer inserted once");
    cr_assert_eq(rt_counter("store_resubmitted"), 9);
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "20000010%d", i);
        cr_assert_not_null(fake_storage_find(&rt.fs, id), "%s", id);
    }
    cr_assert_arr_eq(fake_storage_find(&rt.fs, "200000105")->pk, P2, 32);
}

Test(register_pk, failed_writes_reported_later_are_counted)
{
    rt.fs.done_status = -EIO;
    rt_reg_pk("200000061", "u1", P1, "10.0.0.1:1");
    cr_assert_eq(rt_gauge("store_pending"), 1);
    cr_assert_eq(fake_storage_complete(&rt.fs), 1);
    cr_assert_eq(rt_counter("store_errors"), 1);
    cr_assert(fc_log_contains(rt.fc, "storage retries"));
    rt.fs.done_status = 0;
    rt_reg_pk("200000062", "u1", P1, "10.0.0.1:1");
    fake_storage_complete(&rt.fs);
    cr_assert_eq(rt_counter("store_errors"), 1);
}

/* ------------------------------------------------------------------ caps and bad input */
Test(register_pk, oversize_uuid_or_pk_is_ignored)
{
    uint8_t big[300];
    memset(big, 'x', sizeof big);
    cr_assert_eq(rt_reg_pk_bin("200000070", big, 256, P1, 32, "10.0.0.1:1"), OK, "256-byte uuid allowed");
    cr_assert_eq(rt_reg_pk_bin("200000071", big, 257, P1, 32, "10.0.0.1:1"), -1);
    cr_assert_eq(rt_reg_pk_bin("200000072", "u1", 2, big, 64, "10.0.0.1:1"), OK, "64-byte pk allowed");
    cr_assert_eq(rt_reg_pk_bin("200000073", "u1", 2, big, 65, "10.0.0.1:1"), -1);
    cr_assert_eq(rt_counter("pk_oversize"), 2);
    cr_assert_eq(rt.bl.calls, 2);
    cr_assert_null(fake_storage_find(&rt.fs, "200000071"));
}

Test(register_pk, binary_uuid_and_pk_bytes_are_kept_exactly)
{
    const uint8_t uuid[] = { 0, 1, 0, 0xff, 0 };
    const uint8_t pk[] = { 0, 0, 0, 7 };
    cr_assert_eq(rt_reg_pk_bin("200000074", uuid, sizeof uuid, pk, sizeof pk, "10.0.0.1:1"), OK);
    const uint8_t other[] = { 0, 1, 0, 0xff, 1 };
    cr_assert_eq(rt_reg_pk_bin("200000074", other, sizeof other, pk, sizeof pk, "10.0.0.1:1"), MISMATCH);
    const uint8_t prefix[] = { 0, 1, 0, 0xff };
    cr_assert_eq(rt_reg_pk_bin("200000074", prefix, sizeof prefix, pk, sizeof pk, "10.0.0.1:1"), MISMATCH);
    cr_assert_eq(rt_reg_pk_bin("200000074", uuid, sizeof uuid, pk, sizeof pk, "10.0.0.1:1"), OK);
    rdv_peer_info pi;
    rt_lookup("200000074", RDV_LOOKUP_MEMORY, &pi);
    cr_assert_eq(pi.pk_len, 4);
    cr_assert_arr_eq(pi.pk, pk, 4);
}

Test(register_pk, max_peers_refuses_new_ids_only)
{
    rt_teardown();
    rt_setup_conf("max_peers = 3\n");
    cr_assert_eq(rt_reg_pk("600000001", "u", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("600000002", "u", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("600000003", "u", P1, "10.0.0.1:1"), OK);
    cr_assert_eq(rt_reg_pk("600000004", "u", P1, "10.0.0.1:1"), SERVER_ERROR);
    cr_assert_eq(rt_counter("peers_refused_full"), 1);
    cr_assert(fc_log_contains(rt.fc, "peer table full"));
    cr_assert_eq(rt_reg_pk("600000001", "u", P2, "10.0.0.1:1"), OK, "known ids keep working");
    cr_assert_eq(rt_reg_peer("600000004", 0, "10.0.0.1:1"), 1);
    cr_assert_eq(rt_gauge("peers"), 3);
}

Test(register_pk, flood_of_distinct_ids_stops_at_max_peers)
{
    rt_teardown();
    rt_setup_conf("max_peers = 500\n");
    unsigned ok = 0, refused = 0;
    for (int i = 0; i < 5000; i++) {
        char id[16], from[32];
        snprintf(id, sizeof id, "7%08d", i);
        snprintf(from, sizeof from, "10.1.%d.%d:1", i / 250, i % 250);
        int r = rt_reg_pk(id, "u", P1, from);
        ok += r == OK;
        refused += r == SERVER_ERROR;
    }
    cr_assert_eq(ok, 500);
    cr_assert_eq(refused, 4500);
    cr_assert_eq(rt_gauge("peers"), 500);
    cr_assert_eq(rt.api->peer_count(rt.self), 500);
    cr_assert_eq(rt.fs.inserts, 500);
    cr_assert_lt(fc_ratelimit_calls(rt.fc), 10000, "refusals are logged through the rate limiter");
}

Test(register_pk, other_listener_is_declined)
{
    Hbb__RegisterPk rk = HBB__REGISTER_PK__INIT;
    rk.id = "123456789";
    rk.uuid.data = (uint8_t *)"u", rk.uuid.len = 1;
    rk.pk.data = (uint8_t *)P1, rk.pk.len = 32;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &rk;
    rdv_addr a = fc_addr("10.0.0.1:1");
    cr_assert_eq(fc_udp(rt.fc, "relay", &a, &m), RDV_DECLINED);
}

/* ------------------------------------------------------------------ streams (§4.2) */
static Hbb__RendezvousMessage *pk_msg(void)
{
    static Hbb__RegisterPk rk = HBB__REGISTER_PK__INIT;
    static Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    rk.id = "500000001";
    rk.uuid.data = (uint8_t *)"u", rk.uuid.len = 1;
    rk.pk.data = (uint8_t *)P1, rk.pk.len = 32;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &rk;
    return &m;
}

Test(register_pk, r150_tcp_register_pk_is_not_supported_then_closed)
{
    rdv_addr a = fc_addr("127.0.0.1:5000");
    rdv_conn_id c = fc_conn_open(rt.fc, "main", RDV_TR_TCP, &a);
    cr_assert_eq(fc_conn_msg(rt.fc, c, pk_msg()), RDV_CLOSE);
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->conn, c);
    const uint8_t want[] = { 0x82, 0x01, 0x02, 0x08, 0x06 };
    cr_assert_eq(s->len, sizeof want);
    cr_assert_arr_eq(s->raw, want, sizeof want);
    cr_assert_not(fc_conn_alive(rt.fc, c));
    cr_assert_eq(rt.fs.puts, 0, "nothing registered");
    cr_assert_eq(rt_counter("pk_not_support"), 1);
}

Test(register_pk, r140_websocket_register_pk_is_not_supported_then_closed)
{
    rt_teardown();
    rt_setup_conf("stream_register=false\n"); /* OSS; the EXT default is test_stream.c */
    rdv_addr a = fc_addr("127.0.0.1:5000");
    rdv_conn_id c = fc_conn_open(rt.fc, "ws", RDV_TR_WS, &a);
    cr_assert_eq(fc_conn_msg(rt.fc, c, pk_msg()), RDV_CLOSE);
    const fc_sent *s = fc_next_sent(rt.fc);
    cr_assert_eq(s->msg->register_pk_response->result, NOT_SUPPORT);
    cr_assert_not(fc_conn_alive(rt.fc, c));
}

Test(register_pk, nat_port_register_pk_gets_no_reply)
{
    rdv_addr a = fc_addr("10.0.0.1:5000");
    rdv_conn_id c = fc_conn_open(rt.fc, "nat", RDV_TR_TCP, &a);
    cr_assert_eq(fc_conn_msg(rt.fc, c, pk_msg()), RDV_DECLINED);
    cr_assert_eq(fc_sent_count(rt.fc), 0);
    cr_assert_not(fc_conn_alive(rt.fc, c), "§4.3: anything else -> closed without reply");
}
