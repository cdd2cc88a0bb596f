/* test_table.c — lookups (rendezvous.md §2.2), stored peers loaded cold at
 * start, restart semantics (R53–R57), the service and its bounds. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <malloc.h>
#include <string.h>

#include "fake_services.h"

#define OK HBB__REGISTER_PK_RESPONSE__RESULT__OK
#define MISMATCH HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH

static const char P9[] = "P9P9P9P9P9P9P9P9P9P9P9P9P9P9P9P9";

/* A database made before this start: one upstream-style row (R56). */
static void setup_stored(void)
{
    rt_begin(true);
    fake_storage_add(&rt.fs, "300000001", "u9", 2, P9, 32, "::ffff:127.0.0.1");
    fake_storage_add(&rt.fs, "300000002", "u8", 2, P9, 32, "10.0.0.5");
    cr_assert_eq(rt_load(NULL), 0);
}

TestSuite(stored, .init = setup_stored, .fini = rt_teardown);

Test(stored, rows_are_loaded_cold)
{
    cr_assert_eq(rt_gauge("peers"), 2);
    cr_assert_eq(rt_gauge("cold"), 2);
    cr_assert_eq(rt.api->peer_count(rt.self), 2);
    cr_assert(fc_log_contains(rt.fc, "2 stored peers loaded"));
}

Test(stored, memory_lookup_does_not_see_cold_peers)
{
    /* RegisterPeer, RequestRelay and OnlineRequest use this flavour (R118) */
    cr_assert_eq(rt_lookup("300000001", RDV_LOOKUP_MEMORY, NULL), -ENOENT);
    cr_assert_eq(rt_gauge("cold"), 2, "and it does not warm them");
}

Test(stored, r53_stored_lookup_finds_them_offline)
{
    rdv_peer_info pi;
    cr_assert_eq(rt_lookup("300000001", RDV_LOOKUP_STORED, &pi), 0, "PunchHoleRequest: OFFLINE, not ID_NOT_EXIST");
    cr_assert_not(pi.online);
    cr_assert_eq(pi.last_reg_ms, 0);
    rdv_addr none = fc_addr("0.0.0.0:0");
    cr_assert(rdv_addr_equal(&pi.addr, &none), "socket_addr 0.0.0.0:0");
    cr_assert_eq(pi.pk_len, 32);
    cr_assert_arr_eq(pi.pk, P9, 32);
    cr_assert_str_eq(pi.ip, "127.0.0.1", "info.ip normalised");
    cr_assert_eq(rt_gauge("cold"), 1);
    /* now cached: memory lookups see it, still offline */
    cr_assert_eq(rt_lookup("300000001", RDV_LOOKUP_MEMORY, &pi), 0);
    cr_assert_not(pi.online);
    cr_assert_eq(rt.api->online_count(rt.self), 0);
}

Test(stored, r54_after_restart_register_peer_asks_for_the_key)
{
    cr_assert_eq(rt_reg_peer("300000002", 0, "10.0.0.5:4000"), 1);
    cr_assert_eq(rt_gauge("cold"), 2, "RegisterPeer does not load from the database");
    cr_assert_eq(rt_reg_pk("300000002", "u8", P9, "10.0.0.5:4000"), OK);
    cr_assert_eq(rt.fs.puts, 0, "nothing changed: no write");
    cr_assert_not(rt_online("300000002"), "and not yet online");
    cr_assert_eq(rt_reg_peer("300000002", 0, "10.0.0.5:4000"), 0);
    cr_assert(rt_online("300000002"));
}

Test(stored, r55_uuid_conflict_survives_restart)
{
    cr_assert_eq(rt_reg_pk("300000002", "zz", P9, "10.0.0.5:4000"), MISMATCH);
    cr_assert_eq(rt_gauge("cold"), 1, "RegisterPk's lookup loaded it anyway");
}

Test(stored, r56_upstream_row_with_mapped_ip_registers_from_loopback)
{
    cr_assert_eq(rt_reg_pk("300000001", "u9", P9, "127.0.0.1:4000"), OK);
    cr_assert_eq(rt.fs.puts, 0, "same IP after normalisation: nothing changed");
    cr_assert_eq(rt_reg_peer("300000001", 0, "127.0.0.1:4000"), 0);
}

Test(stored, r57_cache_loaded_by_a_punch_lookup_registers_without_register_pk)
{
    cr_assert_eq(rt_lookup("300000002", RDV_LOOKUP_STORED, NULL), 0);
    cr_assert_eq(rt_reg_peer("300000002", 0, "10.0.0.5:4000"), 0, "info.ip matches: no IP change");
    cr_assert(rt_online("300000002"));
    cr_assert_eq(rt.online_hooks, 1);
}

Test(stored, r57_mapped_info_ip_compares_normalised)
{
    cr_assert_eq(rt_lookup("300000001", RDV_LOOKUP_STORED, NULL), 0);
    cr_assert_eq(rt_reg_peer("300000001", 0, "127.0.0.1:4000"), 0);
}

Test(stored, cached_peer_from_another_ip_needs_register_pk)
{
    cr_assert_eq(rt_lookup("300000002", RDV_LOOKUP_STORED, NULL), 0);
    cr_assert_eq(rt_reg_peer("300000002", 0, "10.0.0.6:4000"), 1);
    cr_assert_eq(rt_reg_pk("300000002", "u8", P9, "10.0.0.6:4000"), OK);
    cr_assert_eq(rt.fs.updates, 1, "update by the stored guid, not an insert");
    cr_assert_eq(rt.fs.inserts, 0);
    cr_assert_str_eq(fake_storage_find(&rt.fs, "300000002")->info_ip, "10.0.0.6");
    cr_assert_eq(rt.fs.nrows, 2);
}

Test(stored, empty_stored_uuid_takes_the_first_one_offered)
{
    rt_teardown();
    rt_begin(true);
    fake_storage_add(&rt.fs, "300000003", "", 0, "", 0, "");
    cr_assert_eq(rt_load(NULL), 0);
    cr_assert_eq(rt_lookup("300000003", RDV_LOOKUP_STORED, NULL), 0);
    cr_assert_eq(rt_reg_peer("300000003", 0, "10.0.0.1:1"), 1, "empty pk -> request_pk");
    cr_assert_eq(rt_reg_pk("300000003", "new", P9, "10.0.0.1:1"), OK);
    cr_assert_eq(rt.fs.updates, 1);
    cr_assert_eq(fake_storage_find(&rt.fs, "300000003")->uuid_len, 0, "uuid is never updated in storage");
    cr_assert_eq(rt_reg_pk("300000003", "other", P9, "10.0.0.1:1"), MISMATCH, "memory now holds 'new'");
}

Test(stored, load_bounds_and_bad_rows)
{
    rt_teardown();
    rt_begin(true);
    char big[300];
    memset(big, 'i', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    fake_storage_add(&rt.fs, "400000001", "u", 1, P9, 32, "1.2.3.4");
    fake_storage_add(&rt.fs, "400000001", "u", 1, P9, 32, "1.2.3.4"); /* duplicate */
    fake_storage_add(&rt.fs, big, "u", 1, P9, 32, "");                 /* id over 255 */
    fake_storage_add(&rt.fs, "", "u", 1, P9, 32, "");                  /* empty id */
    fake_storage_add(&rt.fs, "400000002", "u", 1, P9, 32, "not an ip"); /* info parse failure -> empty */
    fake_storage_add(&rt.fs, "400000003", "u", 1, P9, 32, "");
    cr_assert_eq(rt_load("max_peers = 2\n"), 0);
    cr_assert_eq(rt_gauge("peers"), 3, "every valid stored row, even over max_peers (R53)");
    cr_assert_eq(rt_counter("load_skipped"), 3);
    cr_assert(fc_log_contains(rt.fc, "stored rows skipped"));
    cr_assert(fc_log_contains(rt.fc, "new ids are refused until max_peers is raised"));
    rdv_peer_info pi;
    cr_assert_eq(rt_lookup("400000002", RDV_LOOKUP_STORED, &pi), 0);
    cr_assert_str_eq(pi.ip, "");
    cr_assert_eq(rt_lookup("400000003", RDV_LOOKUP_STORED, NULL), 0, "stored beyond max_peers: still known");
}

Test(stored, load_failure_fails_the_start)
{
    rt_teardown();
    rt_begin(true);
    rt.fs.load_result = -EIO;
    cr_assert_eq(rt_load(NULL), -EIO);
    cr_assert(fc_log_contains(rt.fc, "loading stored peers failed"));
}

/* ------------------------------------------------------------------ restart with our own writes */
TestSuite(restart, .init = rt_setup, .fini = rt_teardown);

Test(restart, binding_survives_a_restart)
{
    rt_reg("500000001", "u1", P9, "10.0.0.1:1");
    rt_reg("500000002", "u2", P9, "10.0.0.2:1");
    rt_restart(NULL);
    cr_assert_eq(rt_gauge("cold"), 2);
    cr_assert_eq(rt_gauge("online"), 0);
    rdv_peer_info pi;
    cr_assert_eq(rt_lookup("500000001", RDV_LOOKUP_STORED, &pi), 0, "R53: known but offline");
    cr_assert_not(pi.online);
    cr_assert_eq(rt_reg_peer("500000002", 0, "10.0.0.2:1"), 1, "R54");
    cr_assert_eq(rt_reg_pk("500000002", "u2", P9, "10.0.0.2:1"), OK);
    cr_assert_eq(rt_reg_peer("500000002", 0, "10.0.0.2:1"), 0);
    cr_assert_eq(rt_reg_pk("500000001", "u3", P9, "10.0.0.1:1"), MISMATCH, "R55");
    cr_assert_eq(rt.fs.nrows, 2);
}

Test(restart, no_timers_or_state_leak_across_restarts)
{
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "5100000%02d", i);
        rt_reg(id, "u", P9, "10.0.0.1:1");
        rt_restart(NULL);
    }
    cr_assert_eq(rt_gauge("peers"), 5);
    cr_assert_eq(rt_gauge("cold"), 5);
}

/* ------------------------------------------------------------------ service */
TestSuite(service, .init = rt_setup, .fini = rt_teardown);

Test(service, lookup_of_unknown_or_empty_id)
{
    rdv_peer_info pi;
    cr_assert_eq(rt_lookup("nosuchid", RDV_LOOKUP_STORED, &pi), -ENOENT);
    cr_assert_eq(rt_lookup("", RDV_LOOKUP_STORED, &pi), -ENOENT);
    cr_assert_eq(rt.api->lookup(rt.self, NULL, RDV_LOOKUP_MEMORY, &pi), -ENOENT);
}

Test(service, set_conn_binds_cached_peers)
{
    rt_reg("500000010", "u", P9, "10.0.0.1:1");
    cr_assert_eq(rt.api->set_conn(rt.self, "500000010", 42), 0);
    rdv_peer_info pi;
    rt_lookup("500000010", RDV_LOOKUP_MEMORY, &pi);
    cr_assert_eq(pi.conn, 42);
    cr_assert_eq(rt.api->set_conn(rt.self, "500000010", 43), 0);
    rt_lookup("500000010", RDV_LOOKUP_MEMORY, &pi);
    cr_assert_eq(pi.conn, 43);
    /* survives a record rebuild (new pk) */
    cr_assert_eq(rt_reg_pk("500000010", "u", "other-key", "10.0.0.1:1"), OK);
    rt_lookup("500000010", RDV_LOOKUP_MEMORY, &pi);
    cr_assert_eq(pi.conn, 43);
    cr_assert_eq(rt.api->set_conn(rt.self, "500000010", 0), 0);
    rt_lookup("500000010", RDV_LOOKUP_MEMORY, &pi);
    cr_assert_eq(pi.conn, 0);
    cr_assert_eq(rt.api->set_conn(rt.self, "nosuchid", 5), -ENOENT);
}

Test(service, record_rebuild_keeps_list_order_and_counts)
{
    rt_reg("500000020", "u", "k1", "10.0.0.1:1");
    fc_advance(rt.fc, 1000);
    rt_reg("500000021", "u", "k1", "10.0.0.1:1");
    fc_advance(rt.fc, 1000);
    cr_assert_eq(rt_reg_pk("500000020", "u", "a-longer-key", "10.0.0.1:1"), OK); /* rebuilt, moved to the tail */
    cr_assert_eq(rt_gauge("online"), 2);
    fc_advance(rt.fc, 29500); /* 500000021 registered 30.5 s ago, 500000020 29.5 s ago */
    cr_assert(rt_online("500000020"));
    cr_assert_not(rt_online("500000021"));
    cr_assert_eq(rt_gauge("online"), 1);
    cr_assert_eq(rt_gauge("peers"), 2);
}

Test(service, admin_commands_are_registered)
{
    char out[256];
    cr_assert_eq(fc_admin(rt.fc, "ip-changes", out, sizeof out), 0);
    cr_assert_eq(fc_admin(rt.fc, "ic", out, sizeof out), 0);
}

/* ------------------------------------------------------------------ settings */
TestSuite(settings, .init = rt_setup, .fini = rt_teardown);

Test(settings, bad_values_are_refused)
{
    fc_unload(rt.fc, rt.mod, rt.st);
    cr_assert_eq(rt_load("online_ms = 10\n"), -EINVAL);
    cr_assert_eq(rt_load("id_max_len = 5\n"), -EINVAL);
    cr_assert_eq(rt_load("max_peers = 0\n"), -EINVAL);
    cr_assert_eq(rt_load("listener = \"\"\n"), -EINVAL);
    cr_assert_eq(rt_load("ip_change_keep_s = 10\n"), -EINVAL);
    cr_assert(fc_log_contains(rt.fc, "ip_change_keep_s must be >= ip_change_window_s"));
    cr_assert_eq(rt_load("rendezvous_servers = bad host!\n"), -EINVAL);
    cr_assert(fc_log_contains(rt.fc, "'bad host!' is not host or host:port"));
    cr_assert_eq(rt_load("colour = blue\n"), -EINVAL);
    cr_assert_eq(rt_load(NULL), 0);
}

Test(settings, requires_a_storage_service)
{
    rt_teardown();
    memset(&rt, 0, sizeof rt);
    rt.fc = fc_new();
    rt.mod = rdv_module_get();
    cr_assert_eq(fc_load(rt.fc, rt.mod, NULL, &rt.st), -ENOENT);
    cr_assert(fc_log_contains(rt.fc, "no \"storage\" service"));
}

Test(settings, sweep_period_is_not_reloadable)
{
    cr_assert_eq(fc_reconfigure(rt.fc, rt.mod, rt.st, "sweep_ms = 500\n"), -EPERM);
    cr_assert_eq(fc_reconfigure(rt.fc, rt.mod, rt.st, "max_peers = 10\nonline_ms = 2000\n"), 0);
    rt_reg("500000030", "u", P9, "10.0.0.1:1");
    fc_advance(rt.fc, 2000);
    cr_assert_not(rt_online("500000030"));
}

/* ------------------------------------------------------------------ memory */
TestSuite(memory, .init = rt_setup, .fini = rt_teardown, .timeout = 120);

/* ARCHITECTURE.md §5: well under ~200 bytes of heap per peer beyond the id,
 * uuid and pk themselves (which a client chooses). Measured with a typical
 * record: 10-char id, 36-byte uuid, 32-byte pk. The index is one large
 * (mmapped) allocation, so hblkhd counts too. Measured here: ~120 bytes
 * (record header 88, malloc rounding, index slots 16 at <= 85 % load). */
Test(memory, heap_per_peer_is_bounded)
{
    enum { N = 100000 };
    /* The fake storage would keep its own copy of every row: refuse the
     * writes so only the registry's memory is measured. */
    rt.fs.put_result = -ENOBUFS;
    char id[16], from[32];
    static const char uuid[] = "0b7d9a3e-5f11-4c2a-9e0e-1f2a3b4c5d6e"; /* 36 */
    rt_reg_pk("1999999999", uuid, P9, "10.255.0.1:1"); /* table, counters and log ring exist now */
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "1%09d", i);
        snprintf(from, sizeof from, "10.%d.%d.%d:1", i >> 16, (i >> 8) & 255, i & 255);
        cr_assert_eq(rt_reg_pk(id, uuid, P9, from), HBB__REGISTER_PK_RESPONSE__RESULT__OK);
    }
    struct mallinfo2 after = mallinfo2();
    size_t used = (after.uordblks + after.hblkhd) - (before.uordblks + before.hblkhd);
    if (!used)
        cr_skip_test("mallinfo2 reports nothing here (sanitizer allocator)");
    double per = (double)used / N, payload = 10 + 1 + 36 + 32;
    cr_log_info("registry heap: %.1f bytes per peer (%.1f beyond id+uuid+pk)", per, per - payload);
    cr_assert_lt(per - payload, 150.0, "%.1f bytes of overhead per peer", per - payload);
    cr_assert_eq(rt_gauge("peers"), N + 1);
}

/* The index grows by rehashing many times on the way to N: every id stays
 * findable, a replaced record (new uuid) is found under its id, and ids
 * that differ only in length or a last byte are not confused. */
Test(memory, index_keeps_every_id_through_growth)
{
    enum { N = 50000 };
    rt.fs.put_result = -ENOBUFS;
    char id[16], from[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "2%08d", i);
        snprintf(from, sizeof from, "10.%d.%d.%d:1", i >> 16, (i >> 8) & 255, i & 255);
        cr_assert_eq(rt_reg_pk(id, "u1", P9, from), OK);
    }
    rdv_peer_info pi;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "2%08d", i);
        cr_assert_eq(rt_lookup(id, RDV_LOOKUP_MEMORY, &pi), 0, "%s lost", id);
        cr_assert_str_eq(pi.id, id);
    }
    cr_assert_eq(rt_lookup("2000000", RDV_LOOKUP_MEMORY, NULL), -ENOENT, "prefix of a stored id");
    cr_assert_eq(rt_lookup("20000000000", RDV_LOOKUP_MEMORY, NULL), -ENOENT, "stored id plus a byte");
    cr_assert_eq(rt_lookup("299999999", RDV_LOOKUP_MEMORY, NULL), -ENOENT);
    /* same uuid, new pk (§6.2 step 6) rebuilds the record in place */
    static const char P8[] = "P8P8P8P8P8P8P8P8P8P8P8P8P8P8P8P8";
    cr_assert_eq(rt_reg_pk("200012345", "u1", P8, "10.0.48.57:1"), OK);
    cr_assert_eq(rt_lookup("200012345", RDV_LOOKUP_MEMORY, &pi), 0);
    cr_assert_arr_eq(pi.pk, P8, 32, "the rebuilt record is the one indexed");
    cr_assert_eq(rt_gauge("peers"), N, "a rebuild adds no peer");
}
