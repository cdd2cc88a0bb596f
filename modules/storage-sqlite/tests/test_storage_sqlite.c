/* test_storage_sqlite.c — storage-sqlite against the fake core, on real
 * database files in a temporary directory (rendezvous.md §13,
 * config-compat.md §6, rdv/svc/storage.h; checklist R50–R52, R56).
 *
 * Faults are injected in ways that also work for root: "pragma query_only"
 * on the writer's connection (a read-only database), a lock held by another
 * connection (busy), RLIMIT_FSIZE (a full disk), paths under a missing
 * directory or naming a directory (uncreatable files). */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "fakecore.h"
#include "rdv/svc/storage.h"
#include "upstream_schema.h" /* tests/integration: the exact upstream DDL */

int storage_sqlite_test_exec(void *state, const char *sql);

static fc_core *fc;
static const rdv_module *mod;
static void *st;
static char dir[256], dbpath[512], conf[2048];

/* ---- completions recorded by the on_done callback */
#define MAX_DONE 20000
static struct { char id[64]; int status; } done[MAX_DONE];
static size_t ndone;

static void on_done(void *ud, const char *id, int status)
{
    (void)ud;
    cr_assert_lt(ndone, MAX_DONE);
    snprintf(done[ndone].id, sizeof done[ndone].id, "%s", id);
    done[ndone++].status = status;
}

static void setup(void)
{
    fc = fc_new();
    mod = rdv_module_get();
    strcpy(dir, "/tmp/rdv_store_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(dbpath, sizeof dbpath, "%s/db_v2.sqlite3", dir);
    ndone = 0;
}

static void teardown(void)
{
    fc_free(fc);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(storage, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers */
static int load(const char *extra)
{
    snprintf(conf, sizeof conf, "path=%s\n%s", dbpath, extra ? extra : "");
    return fc_load(fc, mod, conf, &st);
}

static const rdv_storage_api *svc(void **self)
{
    rdv_core *h = fc_handle(fc, "registry");
    const rdv_storage_api *api = h->api->service_get(h, RDV_SVC_STORAGE, RDV_SVC_STORAGE_VERSION, self);
    cr_assert_not_null(api, "storage service not published");
    return api;
}

static uint64_t gauge(const char *name)
{
    char full[128];
    snprintf(full, sizeof full, "storage-sqlite.%s", name);
    return fc_gauge(fc, full);
}

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait (real time, max 10 s) until gauge name reaches at least v. */
static void wait_gauge(const char *name, uint64_t v)
{
    uint64_t end = ms_now() + 10000;
    while (gauge(name) < v && ms_now() < end)
        usleep(2000);
    cr_assert_geq(gauge(name), v, "gauge %s stayed at %llu (< %llu)", name, (unsigned long long)gauge(name),
                  (unsigned long long)v);
}

static void guid_of(uint8_t g[16], int n)
{
    memset(g, 0, 16);
    g[0] = 0x42;
    g[14] = (uint8_t)(n >> 8);
    g[15] = (uint8_t)n;
}

static int put(int n, const char *id, const char *uuid, const char *pk, const char *ip, bool insert)
{
    void *self;
    const rdv_storage_api *api = svc(&self);
    rdv_peer_row r = { .id = id, .info_ip = ip };
    guid_of(r.guid, n);
    r.uuid = (const uint8_t *)uuid, r.uuid_len = uuid ? strlen(uuid) : 0;
    r.pk = (const uint8_t *)pk, r.pk_len = pk ? strlen(pk) : 0;
    return api->put(self, &r, insert);
}

static int flush(uint64_t ms)
{
    void *self;
    return svc(&self)->flush(self, ms);
}

static void exec_hook(const char *sql) { cr_assert_eq(storage_sqlite_test_exec(st, sql), SQLITE_OK, "%s", sql); }

/* Our own connection to the file, as another process would have. */
static sqlite3 *db_open(void)
{
    sqlite3 *db;
    cr_assert_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void db_exec(sqlite3 *db, const char *sql)
{
    char *e = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &e);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, e ? e : "?");
}

/* One text value from a query (static buffer; "" for NULL, "<none>" for no row). */
static const char *db_text(const char *sql)
{
    static char out[4096];
    sqlite3 *db = db_open();
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    if (sqlite3_step(s) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(s, 0);
        snprintf(out, sizeof out, "%s", t ? t : "");
    } else {
        strcpy(out, "<none>");
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
}

static long db_long(const char *sql) { return atol(db_text(sql)); }

/* ---- rows seen by load_all */
#define MAX_ROWS 64
static struct {
    uint8_t guid[16];
    char id[128], ip[256];
    uint8_t uuid[64], pk[64];
    size_t uuid_len, pk_len;
} rows[MAX_ROWS];
static size_t nrows;

static void on_row(void *ud, const rdv_peer_row *r)
{
    (void)ud;
    cr_assert_lt(nrows, MAX_ROWS);
    memcpy(rows[nrows].guid, r->guid, 16);
    snprintf(rows[nrows].id, sizeof rows[nrows].id, "%s", r->id);
    snprintf(rows[nrows].ip, sizeof rows[nrows].ip, "%s", r->info_ip);
    cr_assert_leq(r->uuid_len, 64);
    cr_assert_leq(r->pk_len, 64);
    memcpy(rows[nrows].uuid, r->uuid, r->uuid_len);
    rows[nrows].uuid_len = r->uuid_len;
    memcpy(rows[nrows].pk, r->pk, r->pk_len);
    rows[nrows].pk_len = r->pk_len;
    nrows++;
}

static long load_all(void)
{
    void *self;
    nrows = 0;
    return svc(&self)->load_all(self, on_row, NULL);
}

static int row_by_id(const char *id)
{
    for (size_t i = 0; i < nrows; i++)
        if (strcmp(rows[i].id, id) == 0)
            return (int)i;
    cr_assert_fail("no row for id %s", id);
    return -1;
}

/* ---- schema */
Test(storage, fresh_file_gets_upstream_schema_in_wal_mode)
{
    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(access(dbpath, F_OK), 0, "database file not created");
    const char *sql = db_text("select sql from sqlite_master where type = 'table' and name = 'peer'");
    cr_assert_not_null(strstr(sql, "guid blob primary key not null"), "%s", sql);
    cr_assert_not_null(strstr(sql, "info text not null"));
    cr_assert_not_null(strstr(sql, "without rowid"));
    cr_assert_eq(db_long("select count(*) from pragma_table_info('peer')"), 9);
    cr_assert_str_eq(db_text("select group_concat(name || ':' || lower(type), ',') from (select name, type from "
                             "pragma_table_info('peer') order by cid)"),
                     "guid:blob,id:varchar(100),uuid:blob,pk:blob,created_at:datetime,user:blob,status:tinyint,"
                     "note:varchar(300),info:text");
    cr_assert_str_eq(db_text("select group_concat(name, ',') from (select name from sqlite_master where type = "
                             "'index' and tbl_name = 'peer' and name like 'index_%' order by name)"),
                     "index_peer_created_at,index_peer_id,index_peer_status,index_peer_user");
    cr_assert_eq(db_long("select \"unique\" from pragma_index_list('peer') where name = 'index_peer_id'"), 1);
    cr_assert_str_eq(db_text("pragma journal_mode"), "wal");
    cr_assert(fc_log_contains(fc, "open: 0 peers"));
    cr_assert_eq(gauge("rows_at_start"), 0);
    cr_assert_eq(load_all(), 0);
}

Test(storage, db_url_prefix_is_accepted)
{
    snprintf(conf, sizeof conf, "path=\"sqlite://%s\"\n", dbpath);
    cr_assert_eq(fc_load(fc, mod, conf, &st), 0);
    cr_assert_eq(access(dbpath, F_OK), 0);
}

/* R56: a database made by upstream hbbs (with Pro's user/status/note
 * filled in, an extra column and an extra table) opens and keeps working. */
Test(storage, upstream_database_loads_and_keeps_foreign_columns)
{
    sqlite3 *db = db_open();
    db_exec(db, upstream_ddl);
    db_exec(db, "insert into peer (guid, id, uuid, pk, info) values "
                "(x'000102030405060708090a0b0c0d0e0f', '300000001', 'u9', x'09090909', '{\"ip\":\"::ffff:127.0.0.1\"}')");
    db_exec(db, "insert into peer (guid, id, uuid, pk, created_at, user, status, note, info) values "
                "(x'101112131415161718191a1b1c1d1e1f', '300000002', x'7532', x'0a0b', '2023-07-20 12:44:54', "
                "x'abcd', 1, 'pro note', '{\"ip\":\"10.1.2.3\",\"extra\":true}')");
    db_exec(db, "alter table peer add column user_id integer");
    db_exec(db, "create table other (x integer)");
    db_exec(db, "insert into other values (7)");
    sqlite3_close(db);

    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(gauge("rows_at_start"), 2);
    cr_assert(fc_log_contains(fc, "open: 2 peers"));
    cr_assert_eq(load_all(), 2);
    cr_assert_eq(gauge("loaded"), 2);
    int a = row_by_id("300000001"), b = row_by_id("300000002");
    cr_assert_eq(rows[a].guid[15], 0x0f);
    cr_assert_eq(rows[a].uuid_len, 2);
    cr_assert_eq(memcmp(rows[a].uuid, "u9", 2), 0);
    cr_assert_eq(rows[a].pk_len, 4);
    cr_assert_str_eq(rows[a].ip, "::ffff:127.0.0.1");
    cr_assert_str_eq(rows[b].ip, "10.1.2.3");
    cr_assert_eq(rows[b].pk_len, 2);

    /* update by guid: id/pk/info change, the rest stays */
    void *self;
    const rdv_storage_api *api = svc(&self);
    rdv_peer_row r = { .id = "300000002", .pk = (const uint8_t *)"NEWPK", .pk_len = 5, .info_ip = "10.9.9.9" };
    memcpy(r.guid, rows[b].guid, 16);
    cr_assert_eq(api->put(self, &r, false), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_str_eq(db_text("select hex(uuid) || '|' || hex(pk) || '|' || created_at || '|' || hex(user) || '|' || "
                             "status || '|' || note || '|' || info from peer where id = '300000002'"),
                     "7532|4E4557504B|2023-07-20 12:44:54|ABCD|1|pro note|{\"ip\":\"10.9.9.9\",\"extra\":true}");
    cr_assert_eq(db_long("select x from other"), 7);
    cr_assert_eq(db_long("select count(*) from peer"), 2);
    /* and a new row goes in despite the extra column */
    cr_assert_eq(put(1, "300000003", "u3", "p3", "1.1.1.1", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(db_long("select count(*) from peer"), 3);
}

/* R50, R51: insert, then update in place. */
Test(storage, insert_then_update_keeps_uuid_and_guid)
{
    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(put(1, "200000001", "u1", "P1", "127.0.0.1", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_str_eq(db_text("select hex(guid) || '|' || id || '|' || hex(uuid) || '|' || hex(pk) || '|' || info || "
                             "'|' || length(created_at) || '|' || ifnull(user, 'N') || ifnull(status, 'N') || "
                             "ifnull(note, 'N') from peer"),
                     "42000000000000000000000000000001|200000001|7531|5031|{\"ip\":\"127.0.0.1\"}|19|NNN");
    /* an update ignores any uuid it carries (§13.3) */
    cr_assert_eq(put(1, "200000001", "other-uuid", "P2", "127.0.0.2", false), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_str_eq(db_text("select hex(guid) || '|' || hex(uuid) || '|' || hex(pk) || '|' || info from peer"),
                     "42000000000000000000000000000001|7531|5032|{\"ip\":\"127.0.0.2\"}");
    cr_assert_eq(db_long("select count(*) from peer"), 1);
    cr_assert_eq(gauge("written"), 2);
    cr_assert_eq(gauge("pending"), 0);

    /* completions arrive on the loop thread */
    void *self;
    svc(&self)->on_done(self, on_done, NULL);
    cr_assert_eq(put(1, "200000001", NULL, "P3", "127.0.0.3", false), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(ndone, 0, "nothing may be delivered off the loop thread");
    cr_assert_geq(fc_run_async(fc), 1);
    cr_assert_eq(ndone, 1);
    cr_assert_str_eq(done[0].id, "200000001");
    cr_assert_eq(done[0].status, 0);
    /* and a restart sees the row */
    fc_unload(fc, mod, st);
    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(load_all(), 1);
    cr_assert_str_eq(rows[0].ip, "127.0.0.3");
    cr_assert_eq(rows[0].pk_len, 2);
    cr_assert_eq(memcmp(rows[0].pk, "P3", 2), 0);
    cr_assert_eq(rows[0].guid[15], 1);
}

Test(storage, empty_uuid_and_pk_are_stored_as_empty_blobs)
{
    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(put(1, "200000001", NULL, NULL, NULL, true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_str_eq(db_text("select typeof(uuid) || length(uuid) || typeof(pk) || length(pk) || info from peer"),
                     "blob0blob0{\"ip\":\"\"}");
}

/* An insert of a guid that is stored is the same device (put again after
 * the file was replaced, below): id, pk and info are updated, uuid stays. */
Test(storage, insert_of_a_stored_guid_updates_it_and_keeps_uuid)
{
    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(put(1, "200000001", "u1", "P1", "1.1.1.1", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(put(1, "200000002", "u2", "P2", "2.2.2.2", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(gauge("rejected"), 0);
    cr_assert_str_eq(db_text("select id || '|' || uuid || '|' || pk || '|' || info from peer"),
                     "200000002|u1|P2|{\"ip\":\"2.2.2.2\"}");
}

/* ---- the file deleted or replaced while running (R50): before, writes
 * went on into the unlinked inode, were counted as written, and were gone
 * at the next start. */
static unsigned lost_calls;
static void on_lost(void *ud)
{
    (void)ud;
    lost_calls++;
}

static void unlink_db(void)
{
    char p[600];
    cr_assert_eq(unlink(dbpath), 0);
    snprintf(p, sizeof p, "%s-wal", dbpath);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", dbpath);
    unlink(p);
}

Test(storage, a_deleted_file_is_created_again_and_the_consumer_told)
{
    cr_assert_eq(load(NULL), 0);
    void *self;
    const rdv_storage_api *api = svc(&self);
    lost_calls = 0;
    api->on_lost(self, on_lost, NULL);
    cr_assert_eq(put(1, "300000001", "u1", "P1", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    unlink_db();
    cr_assert_eq(put(2, "300000002", "u2", "P2", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(access(dbpath, F_OK), 0, "a new file at the path");
    cr_assert_str_eq(db_text("select group_concat(id) from peer"), "300000002");
    cr_assert_str_eq(db_text("pragma journal_mode"), "wal");
    cr_assert_eq(gauge("reopened"), 1);
    fc_run_async(fc);
    cr_assert_eq(lost_calls, 1, "the consumer is told to put every row again");
    cr_assert(fc_log_contains(fc, "was deleted or replaced while rdvd ran"));
    /* what it puts again lands in the new file */
    cr_assert_eq(put(1, "300000001", "u1", "P1", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(db_long("select count(*) from peer"), 2);
    cr_assert_eq(gauge("reopened"), 1, "once");
}

/* Nothing written after the delete: the writer looks at the file while
 * idle (every 2 s), or a restart before the next write would find no rows. */
Test(storage, a_file_deleted_while_idle_is_noticed_without_a_write)
{
    cr_assert_eq(load(NULL), 0);
    void *self;
    svc(&self)->on_lost(self, on_lost, NULL);
    lost_calls = 0;
    cr_assert_eq(put(1, "300000001", "u1", "P1", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    unlink_db();
    wait_gauge("reopened", 1);
    cr_assert_eq(access(dbpath, F_OK), 0, "a new, empty file at the path");
    cr_assert_eq(db_long("select count(*) from peer"), 0);
    fc_run_async(fc);
    cr_assert_eq(lost_calls, 1);
}

/* Rows 1..n (ids 3000000NN), written. */
static void put_stored(int n, const char *uuid, const char *pk, const char *ip)
{
    char id[32];
    for (int i = 1; i <= n; i++) {
        snprintf(id, sizeof id, "3%08d", i);
        cr_assert_eq(put(i, id, uuid, pk, ip, true), 0);
    }
    cr_assert_eq(flush(5000), 0);
}

/* A backup restored by a rename over the file while the old -wal still
 * holds frames (not checkpointed) and the backup's pages are laid out
 * differently (vacuumed after deletes): the old connection must not lend
 * its -wal to the new file (integrity_check), and the rows it holds are
 * updated by the inserts put again, not refused. */
Test(storage, a_replaced_file_is_followed)
{
    cr_assert_eq(load(NULL), 0);
    put_stored(300, "uuid-uuid-uuid", "pk-pk-pk-pk-pk-pk-pk", "1.1.1.1");
    char bak[600], sql[700];
    snprintf(bak, sizeof bak, "%s/backup.sqlite3", dir);
    snprintf(sql, sizeof sql, "vacuum into '%s'", bak);
    sqlite3 *db = db_open();
    db_exec(db, "delete from peer where substr(id, -1) in ('0', '2', '4', '6', '8') or id > '300000150'");
    db_exec(db, sql);
    sqlite3_close(db);
    cr_assert_eq(rename(bak, dbpath), 0);
    /* guid 1 is in the restored file: updated; guid 400 is new */
    cr_assert_eq(put(1, "300000001", "u1", "P9", "9.9.9.9", true), 0);
    cr_assert_eq(put(400, "300000400", "u3", "P3", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(gauge("reopened"), 1);
    cr_assert_eq(gauge("rejected"), 0);
    cr_assert_str_eq(db_text("pragma integrity_check"), "ok");
    long n = db_long("select count(*) from peer");
    cr_assert(n > 2 && n < 300, "the backup's rows and the new one: %ld", n);
    cr_assert_str_eq(db_text("select pk || info from peer where id = '300000001'"), "P9{\"ip\":\"9.9.9.9\"}");
    cr_assert_str_eq(db_text("select uuid from peer where id = '300000001'"), "uuid-uuid-uuid", "uuid stays");
    cr_assert_eq(db_long("select count(*) from peer where id = '300000400'"), 1);
}

/* rm of the main file alone: its -wal (with frames) and -shm stay at the
 * path. The new file must not take them for its own. */
Test(storage, a_deleted_main_file_does_not_inherit_the_old_wal)
{
    cr_assert_eq(load(NULL), 0);
    put_stored(200, "uuid", "pk", "");
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", dbpath);
    struct stat sb;
    cr_assert_eq(stat(wal, &sb), 0);
    cr_assert_gt(sb.st_size, 0, "frames not checkpointed yet");
    cr_assert_eq(unlink(dbpath), 0);
    cr_assert_eq(put(500, "300000500", "u", "p", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(gauge("reopened"), 1);
    cr_assert_str_eq(db_text("pragma integrity_check"), "ok");
    cr_assert_str_eq(db_text("select group_concat(id) from peer"), "300000500");
}

Test(storage, a_file_that_cannot_be_created_again_keeps_the_writes)
{
    cr_assert_eq(load("retry_min_ms=10\nretry_max_ms=20\n"), 0);
    cr_assert_eq(put(1, "300000001", "u1", "P1", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    unlink_db();
    cr_assert_eq(mkdir(dbpath, 0700), 0); /* a directory where the file was */
    cr_assert_eq(put(2, "300000002", "u2", "P2", "", true), 0);
    wait_gauge("failed", 2);
    cr_assert_eq(gauge("pending"), 1, "kept");
    cr_assert_eq(gauge("reopened"), 0);
    cr_assert_eq(rmdir(dbpath), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(gauge("reopened"), 1);
    cr_assert_str_eq(db_text("select group_concat(id) from peer"), "300000002");
    fc_run_async(fc);
    cr_assert(fc_log_contains(fc, "opening it again failed"));
}

/* §13.3, R35: a plain insert, as upstream. A row already holding the id is
 * another device's and is never replaced: the conflicting insert (and an
 * update that would move a row onto that id) is refused and counted, the
 * stored uuid and pk stay. */
Test(storage, a_write_never_replaces_the_row_of_another_guid)
{
    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(put(1, "200000001", "u1", "P1", "1.1.1.1", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(put(2, "200000001", "u2", "P2", "2.2.2.2", true), 0);
    cr_assert_eq(put(3, "200000003", "u3", "P3", "3.3.3.3", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(put(3, "200000001", NULL, "P4", "4.4.4.4", false), 0); /* id change onto 200000001 */
    cr_assert_eq(flush(5000), 0);
    cr_assert_str_eq(db_text("select count(*) || '|' || uuid || '|' || pk from peer where id = '200000001'"), "1|u1|P1");
    cr_assert_str_eq(db_text("select id || '|' || pk from peer where cast(uuid as text) = 'u3'"), "200000003|P3");
    cr_assert_eq(gauge("rejected"), 2);
}

/* ---- queue: coalescing and bounds */

/* Stall the writer: writes fail (read-only) and the next retry is a minute
 * away, so later puts stay queued until the test flushes. */
static void stall_writer(void)
{
    exec_hook("pragma query_only = on");
    cr_assert_eq(put(999, "stall000", "u", "p", "", true), 0);
    wait_gauge("failed", 1);
}

static void unstall_writer(void) { exec_hook("pragma query_only = off"); }

Test(storage, puts_for_one_guid_coalesce)
{
    cr_assert_eq(load("retry_min_ms=60000\nretry_max_ms=60000\n"), 0);
    stall_writer();
    cr_assert_eq(gauge("pending"), 1);
    cr_assert_eq(put(1, "500000001", "uuid-1", "pk-0", "1.0.0.0", true), 0);
    char pk[16], ip[16];
    for (int i = 1; i <= 200; i++) {
        snprintf(pk, sizeof pk, "pk-%d", i);
        snprintf(ip, sizeof ip, "1.0.0.%d", i % 256);
        cr_assert_eq(put(1, "500000001", NULL, pk, ip, false), 0);
    }
    cr_assert_eq(gauge("pending"), 2, "200 updates of one guid must stay one pending row");
    cr_assert_eq(put(2, "500000002", "uuid-2", "pk-x", "2.0.0.0", true), 0);
    cr_assert_eq(gauge("pending"), 3);
    unstall_writer();
    cr_assert_eq(flush(5000), 0);
    /* one row, inserted (with the insert's uuid) and carrying the last update */
    cr_assert_str_eq(db_text("select uuid || '|' || pk || '|' || info from peer where id = '500000001'"),
                     "uuid-1|pk-200|{\"ip\":\"1.0.0.200\"}");
    cr_assert_eq(db_long("select count(*) from peer"), 3);
    cr_assert_eq(gauge("written"), 3);
}

Test(storage, queue_bound_refuses_new_rows_but_accepts_updates)
{
    cr_assert_eq(load("max_pending=3\nretry_min_ms=60000\nretry_max_ms=60000\n"), 0);
    stall_writer(); /* 1 pending */
    cr_assert_eq(put(1, "600000001", "u", "p", "", true), 0);
    cr_assert_eq(put(2, "600000002", "u", "p", "", true), 0);
    cr_assert_eq(put(3, "600000003", "u", "p", "", true), -ENOBUFS);
    cr_assert_eq(fc_counter(fc, "storage-sqlite.full"), 1);
    cr_assert(fc_log_contains(fc, "write queue full"));
    cr_assert_eq(put(2, "600000002", NULL, "p2", "", false), 0, "a pending guid is replaced, not added");
    cr_assert_eq(gauge("pending"), 3);
    unstall_writer();
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(put(3, "600000003", "u", "p", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(db_long("select count(*) from peer"), 4);
    cr_assert_str_eq(db_text("select pk from peer where id = '600000002'"), "p2");
}

Test(storage, byte_bound_refuses_rows)
{
    cr_assert_eq(load("max_pending_bytes=65536\nretry_min_ms=60000\nretry_max_ms=60000\n"), 0);
    stall_writer();
    static char big[1025];
    memset(big, 'x', 1024);
    int i, r = 0;
    char id[32];
    for (i = 0; i < 100 && r == 0; i++) {
        snprintf(id, sizeof id, "70000%04d", i);
        r = put(i, id, big, big, "", true);
    }
    cr_assert_eq(r, -ENOBUFS);
    cr_assert_gt(i, 20);
    cr_assert_leq(gauge("pending_bytes"), 65536);
    cr_assert_geq(fc_counter(fc, "storage-sqlite.full"), 1);
}

Test(storage, bad_rows_are_refused)
{
    cr_assert_eq(load(NULL), 0);
    void *self;
    const rdv_storage_api *api = svc(&self);
    rdv_peer_row r = { .id = NULL };
    cr_assert_eq(api->put(self, &r, true), -EINVAL, "no id");
    static char longid[1100];
    memset(longid, '7', 1099);
    r.id = longid;
    cr_assert_eq(api->put(self, &r, true), -EINVAL, "id over 1024 bytes");
    r.id = "800000001";
    r.uuid_len = 3;
    cr_assert_eq(api->put(self, &r, true), -EINVAL, "length without data");
    r.uuid_len = 0;
    r.pk = (const uint8_t *)longid, r.pk_len = 1025;
    cr_assert_eq(api->put(self, &r, true), -EINVAL, "pk over 1024 bytes");
    r.pk_len = 0;
    r.info_ip = longid;
    cr_assert_eq(api->put(self, &r, true), -EINVAL, "ip over 255 bytes");
    cr_assert_eq(fc_counter(fc, "storage-sqlite.invalid"), 5);
    cr_assert_eq(gauge("pending"), 0);
    r.info_ip = NULL;
    cr_assert_eq(api->put(self, &r, true), 0, "NULL ip = empty");
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(db_long("select count(*) from peer"), 1);
}

/* ---- info JSON (§13.2: unknown keys tolerated, parse failure = empty) */
Test(storage, info_json_edge_cases_read)
{
    sqlite3 *db = db_open();
    db_exec(db, upstream_ddl);
    static const struct { const char *info, *ip; } cases[] = {
        { "{\"ip\":\"1.2.3.4\"}", "1.2.3.4" },
        { "{\"a\":{\"b\":[1,2]},\"ip\":\"9.9.9.9\",\"z\":null}", "9.9.9.9" },
        { "{ \"ip\" : \"a\\\"b\\\\c\\u00e9\\n\" }", "a\"b\\c\xc3\xa9\n" },
        { "not json", "" },
        { "{\"ip\":", "" },
        { "", "" },
        { "{}", "" },
        { "{\"ip\":5}", "" },
        { "{\"ip\":null}", "" },
        { "{\"ip\":[\"1.2.3.4\"]}", "" },
        { "[\"ip\"]", "" },
        { "\"1.2.3.4\"", "" },
        { "{\"IP\":\"1.2.3.4\"}", "" },
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt *s;
        cr_assert_eq(sqlite3_prepare_v2(db, "insert into peer (guid, id, uuid, pk, info) values (?, ?, 'u', 'p', ?)",
                                        -1, &s, NULL),
                     SQLITE_OK);
        uint8_t g[16];
        guid_of(g, (int)i);
        char id[16];
        snprintf(id, sizeof id, "90000%04zu", i);
        sqlite3_bind_blob(s, 1, g, 16, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, cases[i].info, -1, SQLITE_STATIC);
        cr_assert_eq(sqlite3_step(s), SQLITE_DONE);
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(load_all(), (long)n);
    for (size_t i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "90000%04zu", i);
        cr_assert_str_eq(rows[row_by_id(id)].ip, cases[i].ip, "info %s", cases[i].info);
    }
}

Test(storage, info_json_written_with_escapes_and_merged_on_update)
{
    sqlite3 *db = db_open();
    db_exec(db, upstream_ddl);
    db_exec(db, "insert into peer (guid, id, uuid, pk, info) values (x'42000000000000000000000000000001', "
                "'910000001', 'u', 'p', '{\"ip\":\"1.1.1.1\",\"pro\":\"x\"}'), "
                "(x'42000000000000000000000000000002', '910000002', 'u', 'p', 'garbage')");
    sqlite3_close(db);
    cr_assert_eq(load(NULL), 0);
    const char *nasty = "q\"b\\s/\n\t\x01\xc3\xa9";
    cr_assert_eq(put(3, "910000003", "u", "p", nasty, true), 0);
    cr_assert_eq(put(1, "910000001", NULL, "p", "2.2.2.2", false), 0);
    cr_assert_eq(put(2, "910000002", NULL, "p", "3.3.3.3", false), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(db_long("select count(*) from peer where json_valid(info)"), 3);
    cr_assert_str_eq(db_text("select info from peer where id = '910000003'"),
                     "{\"ip\":\"q\\\"b\\\\s/\\n\\t\\u0001\xc3\xa9\"}");
    cr_assert_str_eq(db_text("select info from peer where id = '910000001'"), "{\"ip\":\"2.2.2.2\",\"pro\":\"x\"}");
    cr_assert_str_eq(db_text("select info from peer where id = '910000002'"), "{\"ip\":\"3.3.3.3\"}");
    fc_unload(fc, mod, st);
    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(load_all(), 3);
    cr_assert_str_eq(rows[row_by_id("910000003")].ip, nasty);
}

Test(storage, rows_without_a_16_byte_guid_are_skipped)
{
    sqlite3 *db = db_open();
    db_exec(db, upstream_ddl);
    db_exec(db, "insert into peer (guid, id, uuid, pk, info) values (x'010203', 'shortguid', 'u', 'p', '{}'), "
                "(x'42000000000000000000000000000001', 'goodguid', 'u', 'p', '{}')");
    sqlite3_close(db);
    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(load_all(), 1);
    cr_assert_str_eq(rows[0].id, "goodguid");
    cr_assert(fc_log_contains(fc, "1 rows of"));
}

/* ---- write failures: kept, retried with backoff, nothing lost */
Test(storage, read_only_database_keeps_and_retries_writes)
{
    cr_assert_eq(load("retry_min_ms=20\nretry_max_ms=80\n"), 0);
    void *self;
    svc(&self)->on_done(self, on_done, NULL);
    exec_hook("pragma query_only = on");
    cr_assert_eq(put(1, "100000001", "u1", "P1", "1.1.1.1", true), 0);
    cr_assert_eq(put(2, "100000002", "u2", "P2", "2.2.2.2", true), 0);
    wait_gauge("failed", 3);
    cr_assert_eq(gauge("pending"), 2, "failed writes stay queued");
    cr_assert_eq(gauge("written"), 0);
    cr_assert_eq(gauge("last_error") & 0xff, SQLITE_READONLY);
    fc_run_async(fc);
    cr_assert_gt(ndone, 0);
    cr_assert_eq(done[0].status, -EROFS);
    char want[600];
    snprintf(want, sizeof want, "cannot write to %s", dbpath);
    cr_assert(fc_log_contains(fc, want), "no '%s'", want);
    cr_assert(fc_log_contains(fc, "SQLITE_READONLY"));
    cr_assert(fc_log_contains(fc, "writes kept in memory"));
    cr_assert(fc_log_contains(fc, "fix: make the file"));
    char out[2048];
    cr_assert_eq(fc_admin(fc, "storage", out, sizeof out), 0);
    cr_assert_not_null(strstr(out, "SQLITE_READONLY"), "%s", out);
    cr_assert_not_null(strstr(out, "state failing"), "%s", out);
    cr_assert_eq(db_long("select count(*) from peer"), 0);

    /* updates while failing merge into the kept rows */
    cr_assert_eq(put(1, "100000001", NULL, "P1b", "1.1.1.9", false), 0);
    unstall_writer();
    uint64_t end = ms_now() + 10000;
    while (gauge("pending") && ms_now() < end)
        usleep(2000);
    cr_assert_eq(gauge("pending"), 0, "writes did not recover");
    cr_assert_eq(gauge("written"), 2);
    cr_assert_eq(gauge("last_error"), 0);
    cr_assert_str_eq(db_text("select group_concat(id || ':' || uuid || ':' || pk || ':' || info, ' ') from "
                             "(select * from peer order by id)"),
                     "100000001:u1:P1b:{\"ip\":\"1.1.1.9\"} 100000002:u2:P2:{\"ip\":\"2.2.2.2\"}");
    fc_log_clear(fc);
    ndone = 0;
    fc_run_async(fc);
    cr_assert(fc_log_contains(fc, "succeed again"));
    bool ok1 = false, ok2 = false;
    for (size_t i = 0; i < ndone; i++) {
        ok1 |= strcmp(done[i].id, "100000001") == 0 && done[i].status == 0;
        ok2 |= strcmp(done[i].id, "100000002") == 0 && done[i].status == 0;
    }
    cr_assert(ok1 && ok2, "success completions missing");
    cr_assert_eq(fc_admin(fc, "storage", out, sizeof out), 0);
    cr_assert_not_null(strstr(out, "state recovered"), "%s", out);
}

Test(storage, retries_back_off_exponentially)
{
    cr_assert_eq(load("retry_min_ms=50\nretry_max_ms=200\n"), 0);
    exec_hook("pragma query_only = on");
    cr_assert_eq(put(1, "100000001", "u1", "P1", "", true), 0);
    /* attempts at about 0, 50, 150, 350, 550, 750, 950 ms */
    usleep(1000 * 1000);
    uint64_t f = gauge("failed");
    cr_assert_geq(f, 4, "too few retries: %llu", (unsigned long long)f);
    cr_assert_leq(f, 9, "retries do not back off: %llu", (unsigned long long)f);
    char out[2048];
    fc_admin(fc, "storage", out, sizeof out);
    const char *p = strstr(out, "retry_in_ms ");
    cr_assert_not_null(p, "%s", out);
    cr_assert_leq(atol(p + 12), 200, "backoff over retry_max_ms");
    /* a flush tries again at once */
    unstall_writer();
    cr_assert_eq(flush(150), 0);
}

Test(storage, failure_log_is_rate_limited)
{
    cr_assert_eq(load("retry_min_ms=5\nretry_max_ms=5\n"), 0);
    exec_hook("pragma query_only = on");
    cr_assert_eq(put(1, "100000001", "u1", "P1", "", true), 0);
    wait_gauge("failed", 1);
    fc_run_async(fc);
    cr_assert(fc_log_contains(fc, "cannot write to"));
    fc_log_clear(fc);
    wait_gauge("failed", 20);
    fc_run_async(fc);
    cr_assert_not(fc_log_contains(fc, "cannot write to"), "same cause logged again within a minute");
    fc_advance(fc, 61000);
    wait_gauge("failed", 22);
    fc_run_async(fc);
    cr_assert(fc_log_contains(fc, "cannot write to"), "a long failure must be logged again");
    unstall_writer();
}

Test(storage, lock_held_by_another_process_is_retried)
{
    cr_assert_eq(load("busy_ms=0\nretry_min_ms=10\nretry_max_ms=20\n"), 0);
    sqlite3 *other = db_open();
    db_exec(other, "begin immediate");
    cr_assert_eq(put(1, "100000001", "u1", "P1", "", true), 0);
    wait_gauge("failed", 2);
    cr_assert_eq(gauge("last_error") & 0xff, SQLITE_BUSY);
    cr_assert_eq(gauge("pending"), 1);
    fc_run_async(fc);
    cr_assert(fc_log_contains(fc, "SQLITE_BUSY"));
    db_exec(other, "commit");
    sqlite3_close(other);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(db_long("select count(*) from peer"), 1);
}

/* A full disk: RLIMIT_FSIZE makes every file write fail (even for root). */
Test(storage, full_disk_is_survived)
{
    cr_assert_eq(load("retry_min_ms=10\nretry_max_ms=20\n"), 0);
    cr_assert_eq(put(1, "100000001", "u1", "P1", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 1;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    char id[32];
    for (int i = 2; i < 40; i++) {
        snprintf(id, sizeof id, "1000000%02d", i);
        cr_assert_eq(put(i, id, "uuid", "pk", "10.0.0.1", true), 0);
    }
    wait_gauge("failed", 2);
    int code = (int)(gauge("last_error") & 0xff);
    cr_assert(code == SQLITE_FULL || code == SQLITE_IOERR, "unexpected code %d", code);
    cr_assert_eq(gauge("pending"), 38);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(db_long("select count(*) from peer"), 39);
    cr_assert_str_eq(db_text("pragma integrity_check"), "ok");
}

/* R50: a transaction is all or nothing. With room for ~100 rows and 1000
 * queued, a batch of 1000 fails forever (before: 0 written until the disk
 * grew); halving after each failure writes what fits, and the batch grows
 * back once the disk does. max_page_count on the writer's connection plays
 * the small disk (SQLITE_FULL). */
Test(storage, a_disk_with_room_for_part_of_a_batch_takes_that_part)
{
    cr_assert_eq(load("retry_min_ms=60000\nretry_max_ms=60000\nbatch_max=1000\n"), 0);
    cr_assert_eq(put(0, "100000000", "u0", "P0", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    long pages = db_long("pragma page_count");
    char sql[64], pk[900], id[32];
    snprintf(sql, sizeof sql, "pragma max_page_count = %ld", pages + 30); /* ~120 KiB: ~100 rows */
    exec_hook(sql);
    memset(pk, 'k', sizeof pk - 1);
    pk[sizeof pk - 1] = '\0';
    stall_writer(); /* so the 1000 rows are queued together */
    for (int i = 1; i <= 1000; i++) {
        snprintf(id, sizeof id, "2%08d", i);
        cr_assert_eq(put(1000 + i, id, "uuid", pk, "10.0.0.1", true), 0); /* 999 is the stall row's */
    }
    snprintf(conf, sizeof conf, "path=%s\nretry_min_ms=5\nretry_max_ms=10\nbatch_max=1000\n", dbpath);
    cr_assert_eq(fc_reconfigure(fc, mod, st, conf), 0);
    unstall_writer();
    uint64_t failed = gauge("failed");
    flush(1); /* skip the stall's minute of backoff */
    wait_gauge("written", 1 + 50); /* the first row and 50 of the 1001 queued */
    wait_gauge("failed", failed + 1);
    cr_assert_eq(gauge("last_error") & 0xff, SQLITE_FULL);
    cr_assert_lt(gauge("batch"), 1000);
    cr_assert_gt(gauge("pending"), 0);
    cr_assert_str_eq(db_text("pragma integrity_check"), "ok");
    /* the disk grows: everything is written, the batch back at batch_max */
    exec_hook("pragma max_page_count = 1073741823");
    cr_assert_eq(flush(10000), 0);
    cr_assert_eq(db_long("select count(*) from peer"), 1002, "%ld rows; written %llu rejected %llu pending %llu",
                 db_long("select count(*) from peer"), (unsigned long long)gauge("written"),
                 (unsigned long long)gauge("rejected"), (unsigned long long)gauge("pending"));
    cr_assert_eq(gauge("written"), 1002);
    cr_assert_eq(gauge("batch"), 1000);
}

Test(storage, refused_row_is_dropped_and_the_batch_goes_on)
{
    cr_assert_eq(load(NULL), 0);
    sqlite3 *db = db_open();
    db_exec(db, "create trigger no_evil before insert on peer when new.id = 'evil00001' "
                "begin select raise(abort, 'evil id'); end");
    sqlite3_close(db);
    void *self;
    svc(&self)->on_done(self, on_done, NULL);
    /* stall so both rows go in one batch */
    cr_assert_eq(fc_reconfigure(fc, mod, st, "retry_min_ms=60000\nretry_max_ms=60000\n"), -EPERM,
                 "path was not given again");
    snprintf(conf, sizeof conf, "path=%s\nretry_min_ms=60000\nretry_max_ms=60000\n", dbpath);
    cr_assert_eq(fc_reconfigure(fc, mod, st, conf), 0);
    stall_writer();
    cr_assert_eq(put(1, "good00001", "u", "p", "", true), 0);
    cr_assert_eq(put(2, "evil00001", "u", "p", "", true), 0);
    unstall_writer();
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(gauge("rejected"), 1);
    cr_assert_eq(gauge("pending"), 0);
    cr_assert_str_eq(db_text("select group_concat(id, ',') from (select id from peer order by id)"),
                     "good00001,stall000");
    fc_run_async(fc);
    bool evil = false;
    for (size_t i = 0; i < ndone; i++)
        evil |= strcmp(done[i].id, "evil00001") == 0 && done[i].status == -EINVAL;
    cr_assert(evil);
    cr_assert(fc_log_contains(fc, "id evil00001: evil id"));
    /* the stall failed and recovered before the loop looked */
    cr_assert(fc_log_contains(fc, "then succeeded; nothing was lost"));
    cr_assert_not(fc_log_contains(fc, "writes kept in memory"));
}

/* ---- shutdown */
Test(storage, stop_flushes_the_queue)
{
    cr_assert_eq(load("retry_min_ms=60000\nretry_max_ms=60000\n"), 0);
    stall_writer();
    char id[32];
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof id, "30000%04d", i);
        cr_assert_eq(put(i, id, "u", "p", "", true), 0);
    }
    unstall_writer();
    fc_unload(fc, mod, st); /* stop: flush skips the backoff */
    cr_assert_eq(db_long("select count(*) from peer"), 51);
    cr_assert(fc_log_contains(fc, "51 queued writes saved"));
}

Test(storage, stop_gives_up_after_flush_ms)
{
    cr_assert_eq(load("flush_ms=200\nretry_min_ms=20\nretry_max_ms=20\n"), 0);
    exec_hook("pragma query_only = on");
    cr_assert_eq(put(1, "100000001", "u1", "P1", "", true), 0);
    uint64_t t0 = ms_now();
    fc_unload(fc, mod, st);
    uint64_t took = ms_now() - t0;
    cr_assert_geq(took, 150);
    cr_assert_lt(took, 3000, "shutdown must be bounded by flush_ms (took %llu ms)", (unsigned long long)took);
    cr_assert(fc_log_contains(fc, "could not be saved"));
    cr_assert(fc_log_contains(fc, "1 peer writes were not saved"));
}

/* ---- start-up errors name the file and the fix */
static void expect_start_error(const char *path, const char *what)
{
    snprintf(conf, sizeof conf, "path=\"%s\"\n", path);
    fc_log_clear(fc);
    cr_assert_lt(fc_load(fc, mod, conf, &st), 0, "%s must not open", path);
    char want[700];
    snprintf(want, sizeof want, "%s %s", what, path);
    cr_assert(fc_log_contains(fc, want), "no '%s' in the log", want);
    cr_assert(fc_log_contains(fc, "fix: "));
}

Test(storage, missing_directory_fails_start)
{
    char p[600];
    snprintf(p, sizeof p, "%s/missing/db_v2.sqlite3", dir);
    expect_start_error(p, "cannot open database");
}

Test(storage, directory_as_database_fails_start)
{
    char p[600];
    snprintf(p, sizeof p, "%s/adir", dir);
    cr_assert_eq(mkdir(p, 0700), 0);
    expect_start_error(p, "cannot open database");
}

Test(storage, file_that_is_not_a_database_fails_start)
{
    FILE *f = fopen(dbpath, "wb");
    cr_assert_not_null(f);
    for (int i = 0; i < 300; i++)
        fputs("this is not an sqlite database, ", f);
    fclose(f);
    expect_start_error(dbpath, "database");
    cr_assert(fc_log_contains(fc, "restore it from a backup"));
}

/* Drop to an unprivileged uid for the rest of this test (Criterion runs
 * each test in its own process), so file permissions count as they do for
 * a service user; dir and dbpath are handed to it first. */
static void become_unprivileged(void)
{
    if (geteuid() != 0)
        return;
    cr_assert_eq(chown(dir, 65534, 65534), 0);
    cr_assert_eq(chown(dbpath, 65534, 65534), 0);
    cr_assert_eq(setgroups(0, NULL), 0);
    cr_assert_eq(setresgid(65534, 65534, 65534), 0);
    cr_assert_eq(setresuid(65534, 65534, 65534), 0);
}

/* A writable main file whose -wal and -shm files the server's user cannot
 * write (hbbs or the sqlite3 shell ran as root and was killed, or is still
 * open): SQLite opens the WAL read-only without an error, and the
 * connection stays read-only even after the files are fixed. The start
 * must fail, naming the file and the fix, as for a read-only database. */
Test(storage, wal_files_the_user_cannot_write_fail_start)
{
    sqlite3 *db = db_open();
    db_exec(db, upstream_ddl);
    db_exec(db, "pragma journal_mode = wal");
    db_exec(db, "insert into peer (guid, id, uuid, pk, info) values (x'000102030405060708090a0b0c0d0e0f', '100000001', 'u', 'p', '{}')");
    sqlite3_close(db); /* the last connection removes -wal and -shm */
    char p[600];
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s%s", dbpath, i ? "-shm" : "-wal");
        FILE *f = fopen(p, "wb"); /* root's (or, unprivileged, read-only below) */
        cr_assert_not_null(f);
        fclose(f);
        cr_assert_eq(chmod(p, 0444), 0);
    }
    become_unprivileged();
    expect_start_error(dbpath, "cannot write database");
    cr_assert(fc_log_contains(fc, "-wal/-shm files writable"));
}

Test(storage, bad_settings_are_refused)
{
    cr_assert_eq(fc_load(fc, mod, "path=\"\"\n", &st), -EINVAL);
    cr_assert(fc_log_contains(fc, "storage-sqlite.path must name the database file"));
    snprintf(conf, sizeof conf, "path=%s\nretry_min_ms=5000\nretry_max_ms=1000\n", dbpath);
    cr_assert_eq(fc_load(fc, mod, conf, &st), -EINVAL);
    cr_assert(fc_log_contains(fc, "retry_min_ms (5000) must not exceed retry_max_ms (1000)"));
    snprintf(conf, sizeof conf, "path=%s\nmax_pending=0\n", dbpath);
    cr_assert_eq(fc_load(fc, mod, conf, &st), -EINVAL);
    snprintf(conf, sizeof conf, "path=%s\nbatch_max=-1\n", dbpath);
    cr_assert_eq(fc_load(fc, mod, conf, &st), -EINVAL);
    snprintf(conf, sizeof conf, "path=%s\ncolour=blue\n", dbpath);
    cr_assert_eq(fc_load(fc, mod, conf, &st), -EINVAL);
}

Test(storage, reload_changes_limits_but_not_the_path)
{
    cr_assert_eq(load("max_pending=2\nretry_min_ms=60000\nretry_max_ms=60000\n"), 0);
    stall_writer();
    cr_assert_eq(put(1, "600000001", "u", "p", "", true), 0);
    cr_assert_eq(put(2, "600000002", "u", "p", "", true), -ENOBUFS);
    snprintf(conf, sizeof conf, "path=%s\nmax_pending=10\nretry_min_ms=60000\nretry_max_ms=60000\n", dbpath);
    cr_assert_eq(fc_reconfigure(fc, mod, st, conf), 0);
    cr_assert_eq(put(2, "600000002", "u", "p", "", true), 0);
    snprintf(conf, sizeof conf, "path=%s/other.sqlite3\n", dir);
    cr_assert_eq(fc_reconfigure(fc, mod, st, conf), -EPERM);
    unstall_writer();
    cr_assert_eq(flush(5000), 0);
}

/* Many puts from the loop while the worker writes: the file ends up with
 * the last value of every guid. */
Test(storage, concurrent_puts_end_with_the_last_values)
{
    cr_assert_eq(load("batch_max=37\n"), 0);
    char id[32], pk[32];
    for (int round = 0; round < 20; round++)
        for (int g = 0; g < 500; g++) {
            snprintf(id, sizeof id, "4%08d", g);
            snprintf(pk, sizeof pk, "pk-%d-%d", g, round);
            cr_assert_eq(put(g, id, round ? NULL : "uuid", pk, "", round == 0), 0);
        }
    cr_assert_eq(flush(10000), 0);
    cr_assert_eq(db_long("select count(*) from peer"), 500);
    cr_assert_eq(db_long("select count(*) from peer where cast(pk as text) = 'pk-' || cast(substr(id, 2) as "
                         "integer) || '-19' and cast(uuid as text) = 'uuid'"),
                 500);
    cr_assert_leq(gauge("written"), 10000);
    cr_assert_geq(gauge("written"), 500);
}

Test(storage, admin_command_reports)
{
    cr_assert_eq(load(NULL), 0);
    cr_assert_eq(put(1, "100000001", "u1", "P1", "", true), 0);
    cr_assert_eq(flush(5000), 0);
    char out[2048], want[600];
    cr_assert_eq(fc_admin(fc, "storage", out, sizeof out), 0);
    snprintf(want, sizeof want, "path %s\n", dbpath);
    cr_assert_not_null(strstr(out, want), "%s", out);
    cr_assert_not_null(strstr(out, "pending 0\n"), "%s", out);
    cr_assert_not_null(strstr(out, "batch 1000\n"), "%s", out);
    cr_assert_not_null(strstr(out, "reopened 0\n"), "%s", out);
    cr_assert_not_null(strstr(out, "written 1\n"), "%s", out);
    cr_assert_not_null(strstr(out, "failed_attempts 0\n"), "%s", out);
    cr_assert_not_null(strstr(out, "last_error none\n"), "%s", out);
}

/* ---- out of memory (write_queue.c): uthash's allocations fail through the
 * queue's test hook; the process must not exit and no queued write may be
 * lost. On the code before the non-fatal mode each of these exited. */
#include "../write_queue.h"

static void oom_teardown(void)
{
    wq_test_hash_fail_from(0);
    teardown();
}

TestSuite(storage_oom, .init = setup, .fini = oom_teardown, .timeout = 60);

/* Creating the table: its header (1st allocation) or its buckets (2nd). */
Test(storage_oom, first_put_refused_when_the_table_cannot_be_made)
{
    cr_assert_eq(load(NULL), 0);
    for (unsigned long nth = 1; nth <= 2; nth++) {
        wq_test_hash_fail_from(nth);
        cr_assert_eq(put(1, "100000001", "u1", "P1", "1.1.1.1", true), -ENOMEM, "allocation %lu failing", nth);
        cr_assert_eq(fc_counter(fc, "storage-sqlite.oom"), nth);
        cr_assert_eq(gauge("pending"), 0);
        cr_assert_eq(gauge("pending_bytes"), 0);
    }
    cr_assert(fc_log_contains(fc, "out of memory: write of peer 100000001 not queued"));
    wq_test_hash_fail_from(0);
    cr_assert_eq(put(1, "100000001", "u1", "P1", "1.1.1.1", true), 0);
    cr_assert_eq(flush(5000), 0);
    cr_assert_str_eq(db_text("select id || '|' || uuid || '|' || pk || '|' || info from peer"),
                     "100000001|u1|P1|{\"ip\":\"1.1.1.1\"}");
    cr_assert_eq(gauge("pending_bytes"), 0);
}

/* Growing the table: new rows are added until one lands in a bucket at
 * uthash's expansion threshold; that one is refused, the others stay, and
 * pending writes still coalesce (a replacement needs no allocation). */
Test(storage_oom, row_that_would_grow_the_table_is_refused_the_rest_kept)
{
    cr_assert_eq(load("retry_min_ms=60000\nretry_max_ms=60000\n"), 0);
    stall_writer(); /* 1 pending: the table exists */
    wq_test_hash_fail_from(1);
    unsigned long allocs = wq_test_hash_allocs();
    char id[32], pk[32];
    int n, r = 0;
    uint64_t bytes = 0;
    for (n = 1; n <= 3000; n++) {
        bytes = gauge("pending_bytes");
        snprintf(id, sizeof id, "7%08d", n);
        if ((r = put(n, id, "uuid", "pk", "", true)) != 0)
            break;
    }
    cr_assert_eq(r, -ENOMEM, "no put reached an expansion in 3000 rows (%d)", r);
    cr_assert_gt(n, 10, "the table grew after %d rows only", n);
    cr_assert_eq(wq_test_hash_allocs(), allocs + 1, "one expansion was attempted");
    cr_assert_eq(fc_counter(fc, "storage-sqlite.oom"), 1);
    cr_assert_eq(gauge("pending"), (uint64_t)n, "stall + %d accepted", n - 1);
    cr_assert_eq(gauge("pending_bytes"), bytes, "the refused row is not accounted");
    /* every accepted row is replaced in place while allocations still fail */
    for (int i = 1; i < n; i++) {
        snprintf(id, sizeof id, "7%08d", i);
        snprintf(pk, sizeof pk, "pk2-%d", i);
        cr_assert_eq(put(i, id, NULL, pk, "9.9.9.9", false), 0);
    }
    cr_assert_eq(wq_test_hash_allocs(), allocs + 1, "a replacement allocated");
    cr_assert_eq(gauge("pending"), (uint64_t)n);
    wq_test_hash_fail_from(0);
    snprintf(id, sizeof id, "7%08d", n);
    cr_assert_eq(put(n, id, "uuid", "pk", "", true), 0, "memory is back: the table grows");
    unstall_writer();
    cr_assert_eq(flush(5000), 0);
    cr_assert_eq(db_long("select count(*) from peer"), n + 1);
    cr_assert_eq(db_long("select count(*) from peer where cast(uuid as text) = 'uuid' and "
                         "cast(pk as text) like 'pk2-%' and info = '{\"ip\":\"9.9.9.9\"}'"),
                 n - 1, "the inserts carry the later updates");
    cr_assert_eq(gauge("pending_bytes"), 0);
}

/* A replacement used to delete the pending write and then add the new one:
 * in a table of one row the delete freed the table, the add had to make it
 * again, and failing there lost the pending insert (or exited). */
Test(storage_oom, replacing_the_only_pending_write_keeps_the_insert)
{
    cr_assert_eq(load("retry_min_ms=60000\nretry_max_ms=60000\n"), 0);
    exec_hook("pragma query_only = on");
    cr_assert_eq(put(1, "200000001", "uuid-1", "pk-1", "1.1.1.1", true), 0);
    wait_gauge("failed", 1); /* the insert is back in the queue, alone */
    wq_test_hash_fail_from(1);
    unsigned long allocs = wq_test_hash_allocs();
    cr_assert_eq(put(1, "200000001", NULL, "pk-2", "2.2.2.2", false), 0);
    cr_assert_eq(put(1, "200000001", NULL, "pk-3", "3.3.3.3", false), 0);
    cr_assert_eq(wq_test_hash_allocs(), allocs, "a replacement allocated");
    cr_assert_eq(gauge("pending"), 1);
    cr_assert_eq(fc_counter(fc, "storage-sqlite.oom"), 0);
    unstall_writer();
    cr_assert_eq(flush(5000), 0);
    cr_assert_str_eq(db_text("select count(*) || '|' || uuid || '|' || pk || '|' || info from peer"),
                     "1|uuid-1|pk-3|{\"ip\":\"3.3.3.3\"}");
    cr_assert_eq(gauge("pending_bytes"), 0);
}

/* A failed batch goes back into the queue on the worker thread: this needs
 * no allocation, so no row can be lost there. */
Test(storage_oom, failed_batch_goes_back_without_allocating)
{
    cr_assert_eq(load("retry_min_ms=10\nretry_max_ms=20\n"), 0);
    exec_hook("pragma query_only = on");
    char id[32];
    for (int i = 1; i <= 5; i++) {
        snprintf(id, sizeof id, "30000000%d", i);
        cr_assert_eq(put(i, id, "u", "p", "", true), 0);
    }
    wait_gauge("failed", 1);
    wq_test_hash_fail_from(1);
    unsigned long allocs = wq_test_hash_allocs();
    wait_gauge("failed", gauge("failed") + 3); /* batches taken out and put back, armed */
    cr_assert_eq(gauge("pending"), 5);
    cr_assert_eq(put(3, "300000003", NULL, "p3", "3.3.3.3", false), 0, "an update is still taken");
    unstall_writer();
    cr_assert_eq(flush(5000), 0, "written while allocations still fail");
    cr_assert_eq(wq_test_hash_allocs(), allocs, "the queue allocated for its table");
    cr_assert_eq(db_long("select count(*) from peer"), 5);
    cr_assert_str_eq(db_text("select pk || info from peer where id = '300000003'"), "p3{\"ip\":\"3.3.3.3\"}");
    cr_assert_eq(gauge("pending"), 0);
    cr_assert_eq(gauge("pending_bytes"), 0);
}

/* Updates put while the insert is being written (held by another
 * connection's lock), then the attempt fails: on requeue each update absorbs
 * the insert (an insert stays an insert and keeps its uuid) without any
 * allocation, twice in a row (the second merge takes over the bytes' owner). */
Test(storage_oom, writes_put_during_a_failing_attempt_absorb_it_without_allocating)
{
    cr_assert_eq(load("busy_ms=800\nretry_min_ms=60000\nretry_max_ms=60000\n"), 0);
    sqlite3 *other = db_open();
    db_exec(other, "begin immediate");
    cr_assert_eq(put(1, "200000001", "uuid-1", "pk-1", "1.1.1.1", true), 0);
    usleep(200 * 1000); /* the worker holds the insert, waiting for the lock */
    wq_test_hash_fail_from(1);
    unsigned long allocs = wq_test_hash_allocs();
    cr_assert_eq(put(1, "200000001", NULL, "pk-2", "2.2.2.2", false), 0);
    cr_assert_eq(gauge("pending"), 2, "the update did not queue behind the write in flight");
    wait_gauge("failed", 1);
    cr_assert_eq(gauge("pending"), 1, "the update absorbs the failed insert");
    /* again: the merged write is in flight, another update comes, it fails */
    cr_assert_eq(flush(100), -ETIMEDOUT);
    cr_assert_eq(put(1, "200000001", NULL, "pk-3", "3.3.3.3", false), 0);
    cr_assert_eq(gauge("pending"), 2);
    wait_gauge("failed", 2);
    cr_assert_eq(gauge("pending"), 1);
    cr_assert_eq(wq_test_hash_allocs(), allocs, "the queue allocated for its table");
    db_exec(other, "commit");
    sqlite3_close(other);
    cr_assert_eq(flush(5000), 0);
    cr_assert_str_eq(db_text("select count(*) || '|' || uuid || '|' || pk || '|' || info from peer"),
                     "1|uuid-1|pk-3|{\"ip\":\"3.3.3.3\"}");
    cr_assert_eq(gauge("pending_bytes"), 0);
}
