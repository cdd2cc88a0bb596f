/* Integration: registration against the real rdvd with the modules keys,
 * storage-sqlite, ip-blocker and registry, driven like RustDesk clients
 * from distinct 127.0.0.x sources (rendezvous.md §6.1, §6.2, §11, §13;
 * R-numbers: rendezvous-checklist.md).
 *
 * Every UDP exchange goes through xchg(), which collects all replies and
 * asserts that none is larger than the datagram that caused it (no
 * amplification), except where the spec makes the server speak first with
 * a larger message on purpose (ConfigUpdate with a configured serial). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <poll.h>
#include <sqlite3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "rdclient.h"
#include "rdv/proto.h"
#include "upstream_schema.h"

static rdvt_server srv;

static const char core_conf[] =
    "core: {\n"
    "  modules = [ \"keys\", \"storage-sqlite\", \"ip-blocker\", \"registry\" ];\n"
    "  module_path = \"@MODDIR@\";\n"
    "  listeners = (\n"
    "    { name = \"main\"; port = @PORT@; udp = true; tcp = true; },\n"
    "    { name = \"nat\";  port = @NAT@; tcp = true; }\n"
    "  );\n"
    "};\n";

static const char *const conf_files[] = {
    "00-core.conf", core_conf,
    "20-registry.conf", "registry: { };\n",
    "15-ip-blocker.conf", "ip-blocker: { };\n",
    NULL,
};

/* The harness picks ports by pid; on a busy machine one of them can be in
 * use (other suites, ephemeral client ports). Such a start is retried on a
 * fresh directory and ports; `before` prepares the directory each time. */
static void boot_with(const char *const *files, void (*before)(void))
{
    for (int attempt = 0; attempt < 5; attempt++) {
        cr_assert_eq(rdvt_prepare(&srv, files), 0);
        if (before)
            before();
        if (rdvt_start(&srv) == 0)
            return;
        bool busy = rdvt_log_contains(&srv, "Address already in use");
        rdvt_cleanup(&srv);
        if (!busy)
            break;
    }
    cr_assert_fail("rdvd did not start");
}

static void boot(void (*before)(void)) { boot_with(conf_files, before); }

/* A restart in the same directory; the old log is kept aside so the
 * harness waits for the new "ready:" line. */
static void restart_after_stop(void)
{
    for (int attempt = 0; attempt < 10; attempt++) {
        char old[400];
        snprintf(old, sizeof old, "%s.%d", srv.log, attempt);
        cr_assert_eq(rename(srv.log, old), 0);
        if (rdvt_start(&srv) == 0)
            return;
        char path[420];
        snprintf(path, sizeof path, "%s.busy", srv.log);
        rename(srv.log, path);
        FILE *f = fopen(path, "r");
        char line[512];
        bool busy = false;
        while (f && !busy && fgets(line, sizeof line, f))
            busy = strstr(line, "Address already in use") != NULL;
        if (f)
            fclose(f);
        cr_assert(busy, "rdvd did not start again");
        rename(path, srv.log);
        usleep(300000);
    }
    cr_assert_fail("rdvd did not start again: ports stay busy");
}

static void restart(void)
{
    cr_assert_eq(rdvt_stop(&srv), 0, "rdvd did not exit cleanly");
    restart_after_stop();
}

static void setup(void) { boot(NULL); }

static void teardown(void)
{
    int st = srv.pid > 0 ? rdvt_stop(&srv) : 0;
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "rdvd did not exit cleanly (status %d)", st);
}

TestSuite(registry, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(registry_db, .fini = teardown, .timeout = 120);

/* ------------------------------------------------------------------ UDP client */
typedef struct reply {
    int n;
    uint8_t buf[2048];
} reply;

/* Send p, collect replies for `wait_ms` after the first (or until the
 * quiet period), assert each came from the server port and is not larger
 * than the request unless allow_larger. Returns the reply count. */
static int xchg_opt(int fd, const void *p, size_t n, reply *out, int max, int first_ms, bool allow_larger)
{
    cr_assert_eq(rdvt_udp_send_raw(fd, srv.port, p, n), 0);
    int got = 0;
    int wait = first_ms;
    for (;;) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, wait) != 1)
            break;
        reply tmp, *r = got < max ? &out[got] : &tmp;
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        r->n = (int)recvfrom(fd, r->buf, sizeof r->buf, 0, (struct sockaddr *)&from, &fl);
        cr_assert_geq(r->n, 0);
        cr_assert_eq(ntohs(from.sin_port), srv.port, "R1: replies come from the main port");
        if (!allow_larger)
            cr_assert_leq((size_t)r->n, n, "reply of %d bytes to a %zu-byte datagram", r->n, n);
        got++;
        wait = 150; /* a second datagram follows at once if any */
    }
    return got;
}

static int xchg(int fd, const void *p, size_t n, reply *out, int max)
{
    return xchg_opt(fd, p, n, out, max, 1000, false);
}

static size_t reg_peer_msg(const char *id, int serial, uint8_t *buf, size_t cap)
{
    Hbb__RendezvousMessage *m = rdc_register_peer(id);
    m->register_peer->serial = serial;
    return rdc_pack(m, buf, cap);
}

static size_t reg_pk_msg(const char *id, const void *uuid, size_t ul, const void *pk, size_t pl, uint8_t *buf,
                         size_t cap)
{
    return rdc_pack(rdc_register_pk(id, uuid, ul, pk, pl), buf, cap);
}

/* RegisterPeer: 1 = request_pk, 0 = not, -1 = no reply. */
static int reg_peer(int fd, const char *id)
{
    uint8_t b[512];
    size_t n = reg_peer_msg(id, 0, b, sizeof b);
    reply r[2];
    int got = xchg(fd, b, n, r, 2);
    if (!got)
        return -1;
    cr_assert_eq(got, 1, "one datagram: no ConfigUpdate with serial 0");
    Hbb__RendezvousMessage *m = hbb__rendezvous_message__unpack(NULL, (size_t)r[0].n, r[0].buf);
    cr_assert_not_null(m);
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER_RESPONSE);
    int v = m->register_peer_response->request_pk ? 1 : 0;
    hbb__rendezvous_message__free_unpacked(m, NULL);
    return v;
}

/* RegisterPk: the result, or -1 if no reply. */
static int reg_pk_bin(int fd, const char *id, const void *uuid, size_t ul, const void *pk, size_t pl)
{
    uint8_t b[4096];
    size_t n = reg_pk_msg(id, uuid, ul, pk, pl, b, sizeof b);
    reply r[2];
    int got = xchg(fd, b, n, r, 2);
    if (!got)
        return -1;
    cr_assert_eq(got, 1);
    Hbb__RendezvousMessage *m = hbb__rendezvous_message__unpack(NULL, (size_t)r[0].n, r[0].buf);
    cr_assert_not_null(m);
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE);
    int v = (int)m->register_pk_response->result;
    hbb__rendezvous_message__free_unpacked(m, NULL);
    return v;
}

static int reg_pk(int fd, const char *id, const char *uuid, const char *pk)
{
    return reg_pk_bin(fd, id, uuid, strlen(uuid), pk, strlen(pk));
}

#define OK HBB__REGISTER_PK_RESPONSE__RESULT__OK
#define MISMATCH HBB__REGISTER_PK_RESPONSE__RESULT__UUID_MISMATCH
#define TOO_FREQUENT HBB__REGISTER_PK_RESPONSE__RESULT__TOO_FREQUENT
#define INVALID_ID HBB__REGISTER_PK_RESPONSE__RESULT__INVALID_ID_FORMAT

static const char P1[] = "P1P1P1P1P1P1P1P1P1P1P1P1P1P1P1P1";
static const char P2[] = "P2P2P2P2P2P2P2P2P2P2P2P2P2P2P2P2";
static const char P9[] = "P9P9P9P9P9P9P9P9P9P9P9P9P9P9P9P9";

/* Wait until storage-sqlite has no pending write (max 5 s). */
static void wait_written(void)
{
    for (int i = 0; i < 250; i++) {
        if (rdvt_stat(&srv, "registry.store_pending") == 0)
            return;
        usleep(20000);
    }
    cr_assert_fail("storage writes still pending");
}

/* The only way a client registers (§17.1). */
static void client_register(int fd, const char *id, const char *uuid, const char *pk)
{
    cr_assert_eq(reg_peer(fd, id), 1, "unknown id: request_pk");
    cr_assert_eq(reg_pk(fd, id, uuid, pk), OK);
    cr_assert_eq(reg_peer(fd, id), 0, "registered: heartbeat answered request_pk false");
}

/* ------------------------------------------------------------------ flows */
Test(registry, r30_r34_registration_flow_from_distinct_sources)
{
    int a = rdvt_udp("127.0.0.2"), b = rdvt_udp("127.0.0.3");
    cr_assert_geq(a, 0);
    cr_assert_geq(b, 0);
    /* exact bytes of R30 and R34 */
    uint8_t buf[64];
    size_t n = reg_peer_msg("123456789", 0, buf, sizeof buf);
    reply r[2];
    cr_assert_eq(xchg(a, buf, n, r, 2), 1);
    const uint8_t want_pk[] = { 0x3a, 0x02, 0x10, 0x01 };
    cr_assert_eq(r[0].n, 4);
    cr_assert_arr_eq(r[0].buf, want_pk, 4);

    client_register(a, "200000001", "u1", P1);
    client_register(b, "200000002", "u2", P2);
    n = reg_peer_msg("200000001", 0, buf, sizeof buf);
    cr_assert_eq(xchg(a, buf, n, r, 2), 1);
    const uint8_t want_nopk[] = { 0x3a, 0x00 };
    cr_assert_eq(r[0].n, 2);
    cr_assert_arr_eq(r[0].buf, want_nopk, 2);

    cr_assert_eq(rdvt_stat(&srv, "registry.online"), 2);
    cr_assert_eq(rdvt_stat(&srv, "registry.pk_ok"), 2);
    wait_written();
    close(a);
    close(b);
}

Test(registry, r33_r35_r37_uuid_mismatch_cases)
{
    int a = rdvt_udp("127.0.0.4"), b = rdvt_udp("127.0.0.5");
    uint8_t buf[128];
    size_t n = reg_pk_msg("12345", "u1", 2, P1, 32, buf, sizeof buf);
    reply r[2];
    cr_assert_eq(xchg(a, buf, n, r, 2), 1);
    const uint8_t mismatch[] = { 0x82, 0x01, 0x02, 0x08, 0x02 };
    cr_assert_eq(r[0].n, 5);
    cr_assert_arr_eq(r[0].buf, mismatch, 5, "R33: short id");
    cr_assert_eq(reg_pk(a, "123456", "u1", P1), OK, "R33: six bytes are enough");

    client_register(a, "200000011", "u1", P1);
    cr_assert_eq(reg_pk(a, "200000011", "u2", P1), MISMATCH, "R35: another device's uuid");
    cr_assert_eq(reg_pk(b, "200000011", "u1", P2), MISMATCH, "R37: new key from a new IP");
    cr_assert_eq(reg_peer(a, "200000011"), 0, "the binding is untouched");
    cr_assert_eq(reg_pk(a, "200000011", "u1", P2), OK, "R36: new key from the same IP");
    close(a);
    close(b);
}

Test(registry, r40_too_frequent_per_id)
{
    int a = rdvt_udp("127.0.0.6");
    cr_assert_eq(reg_pk(a, "200000040", "u1", P1), OK);
    cr_assert_eq(reg_pk(a, "200000040", "u1", P1), OK);
    cr_assert_eq(reg_pk(a, "200000040", "u1", P1), OK);
    uint8_t buf[128];
    size_t n = reg_pk_msg("200000040", "u1", 2, P1, 32, buf, sizeof buf);
    reply r[2];
    cr_assert_eq(xchg(a, buf, n, r, 2), 1);
    const uint8_t too_frequent[] = { 0x82, 0x01, 0x02, 0x08, 0x04 };
    cr_assert_eq(r[0].n, 5);
    cr_assert_arr_eq(r[0].buf, too_frequent, 5);
    sleep(7);
    cr_assert_eq(reg_pk(a, "200000040", "u1", P1), OK, "after 7 s without requests");
    close(a);
}

Test(registry, r41_too_frequent_per_ip)
{
    int a = rdvt_udp("127.0.0.7");
    char id[16];
    for (int i = 1; i <= 32; i++) {
        snprintf(id, sizeof id, "41%07d", i);
        cr_assert_eq(reg_pk(a, id, "u", P1), OK, "request %d", i);
    }
    cr_assert_eq(reg_pk(a, "410000033", "u", P1), TOO_FREQUENT, "33rd");
    char *ib = rdvt_admin(&srv, "ib 127.0.0.7");
    cr_assert_not_null(ib);
    cr_assert(strncmp(ib, "1\n31/", 5) == 0 || strstr(ib, "\n31/"), "R173: %s", ib);
    free(ib);
    cr_assert_geq(rdvt_stat(&srv, "ip-blocker.blocked_rate"), 1);
    /* another source is not affected */
    int b = rdvt_udp("127.0.0.8");
    cr_assert_eq(reg_pk(b, "410000033", "u", P1), OK);
    /* R173: `ib <ip> -` lets that IP register again at once */
    free(rdvt_admin(&srv, "ib 127.0.0.7 -"));
    cr_assert_eq(reg_pk(a, "410000034", "u", P1), OK);
    close(a);
    close(b);
}

Test(registry, r174_ip_changes_command)
{
    int a = rdvt_udp("127.0.0.10"), b = rdvt_udp("127.0.0.11");
    client_register(a, "200000050", "u1", P1);
    cr_assert_eq(reg_pk(b, "200000050", "u1", P1), OK, "same key from another IP: accepted");
    cr_assert_eq(reg_pk(a, "200000050", "u1", P1), OK, "and back");
    char *ic = rdvt_admin(&srv, "ic");
    cr_assert_not_null(ic);
    cr_assert_eq(strncmp(ic, "1\n200000050: ", 13), 0, "%s", ic);
    cr_assert(strstr(ic, "{\"127.0.0.11\": 1, \"127.0.0.10\": 1}"), "%s", ic);
    free(ic);
    free(rdvt_admin(&srv, "ic 200000050 -"));
    ic = rdvt_admin(&srv, "ic");
    cr_assert_str_eq(ic, "0\n");
    free(ic);
    close(a);
    close(b);
}

Test(registry, r53_r54_r55_restart_keeps_the_binding)
{
    int a = rdvt_udp("127.0.0.12");
    client_register(a, "200000060", "u1", P1);
    wait_written();
    restart();
    cr_assert_eq(rdvt_stat(&srv, "registry.peers"), 1);
    cr_assert_eq(rdvt_stat(&srv, "registry.cold"), 1);
    cr_assert_eq(rdvt_stat(&srv, "registry.online"), 0);
    cr_assert_eq(reg_peer(a, "200000060"), 1, "R54: not in memory after a restart");
    cr_assert_eq(reg_pk(a, "200000060", "u1", P1), OK, "R54: same uuid/pk from the same IP");
    cr_assert_eq(reg_peer(a, "200000060"), 0);
    cr_assert_eq(rdvt_stat(&srv, "registry.online"), 1);
    cr_assert_eq(reg_pk(a, "200000060", "u2", P1), MISMATCH, "R55: the uuid binding survived");
    close(a);
}

Test(registry, r50_r51_row_contents)
{
    int a = rdvt_udp("127.0.0.13");
    client_register(a, "200000070", "u1", P1);
    wait_written();
    cr_assert_eq(reg_pk(a, "200000070", "u1", P2), OK);
    wait_written();
    sqlite3 *db;
    char path[400];
    snprintf(path, sizeof path, "%s/db_v2.sqlite3", srv.dir);
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "select guid, uuid, pk, json_extract(info, '$.ip'), "
                                    "(select count(*) from peer) from peer where id = '200000070'",
                                    -1, &q, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_bytes(q, 0), 16);
    cr_assert_eq(sqlite3_column_bytes(q, 1), 2);
    cr_assert_arr_eq(sqlite3_column_blob(q, 1), "u1", 2);
    cr_assert_eq(sqlite3_column_bytes(q, 2), 32);
    cr_assert_arr_eq(sqlite3_column_blob(q, 2), P2, 32, "R51: updated in place");
    cr_assert_str_eq((const char *)sqlite3_column_text(q, 3), "127.0.0.13");
    cr_assert_eq(sqlite3_column_int(q, 4), 1);
    sqlite3_finalize(q);
    sqlite3_close(db);
    close(a);
}

/* ------------------------------------------------------------------ upstream database */
static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK, "%s: %s", sql, err ? err : "");
}

/* rendezvous.md §13.2: upstream hbbs's table (upstream_schema.h) with two rows of its own. */
static void make_upstream_db(void)
{
    char path[400];
    snprintf(path, sizeof path, "%s/db_v2.sqlite3", srv.dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    exec(db, upstream_ddl);
    sqlite3_stmt *ins;
    cr_assert_eq(sqlite3_prepare_v2(db, "insert into peer (guid, id, uuid, pk, info, user, status, note) "
                                        "values (?, ?, ?, ?, ?, ?, ?, ?)", -1, &ins, NULL),
                 SQLITE_OK);
    const uint8_t g1[16] = { 0x1f, 0x2e, 0x3d, 0x4c, 0x5b, 0x6a, 0x49, 0x88, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1, 0 };
    const uint8_t g2[16] = { 0x2f, 0x2e, 0x3d, 0x4c, 0x5b, 0x6a, 0x49, 0x88, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1, 1 };
    struct { const uint8_t *g; const char *id, *uuid, *info; } rows[] = {
        { g1, "300000001", "u9", "{\"ip\":\"::ffff:127.0.0.1\"}" },
        { g2, "300000002", "u8", "{\"ip\":\"::ffff:127.0.0.20\",\"other\":1}" },
    };
    for (int i = 0; i < 2; i++) {
        sqlite3_bind_blob(ins, 1, rows[i].g, 16, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, rows[i].id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(ins, 3, rows[i].uuid, 2, SQLITE_STATIC);
        sqlite3_bind_blob(ins, 4, P9, 32, SQLITE_STATIC);
        sqlite3_bind_text(ins, 5, rows[i].info, -1, SQLITE_STATIC);
        sqlite3_bind_blob(ins, 6, "pro-user", 8, SQLITE_STATIC);
        sqlite3_bind_int(ins, 7, 1);
        sqlite3_bind_text(ins, 8, "a note", -1, SQLITE_STATIC);
        cr_assert_eq(sqlite3_step(ins), SQLITE_DONE);
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    sqlite3_close(db);
}

Test(registry_db, r56_upstream_database_is_reused)
{
    boot(make_upstream_db);
    cr_assert_eq(rdvt_stat(&srv, "registry.peers"), 2);
    cr_assert_eq(rdvt_stat(&srv, "registry.cold"), 2);
    int a = rdvt_udp("127.0.0.1"), b = rdvt_udp("127.0.0.20"), c = rdvt_udp("127.0.0.21");
    cr_assert_eq(reg_peer(a, "300000001"), 1, "known only to the database: request_pk");
    cr_assert_eq(reg_pk(a, "300000001", "u9", P9), OK, "R56: uuid/pk kept, ::ffff:127.0.0.1 is 127.0.0.1");
    cr_assert_eq(reg_peer(a, "300000001"), 0);
    cr_assert_eq(reg_pk(b, "300000002", "zz", P9), MISMATCH, "another device for a stored id");
    cr_assert_eq(reg_pk(c, "300000002", "u8", P2), MISMATCH, "stored uuid, new key, new IP...");
    cr_assert_eq(reg_pk(b, "300000002", "u8", P9), OK, "...but the stored key from its IP is fine");
    cr_assert_eq(reg_peer(b, "300000002"), 0);
    /* R52: nothing changed, so the rows (and upstream's extra columns) are untouched */
    usleep(300000);
    sqlite3 *db;
    char path[400];
    snprintf(path, sizeof path, "%s/db_v2.sqlite3", srv.dir);
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(db, "select count(*), sum(info like '%::ffff:%'), sum(note = 'a note') from peer",
                                    -1, &q, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(q, 0), 2);
    cr_assert_eq(sqlite3_column_int(q, 1), 2);
    cr_assert_eq(sqlite3_column_int(q, 2), 2);
    sqlite3_finalize(q);
    sqlite3_close(db);
    close(a);
    close(b);
    close(c);
}

/* ------------------------------------------------------------------ storage outage */
/* §13.3 and "nothing is lost": another process holds the database's write
 * lock while peers register, and the storage queue (max_pending = 2) fills.
 * The registrations the queue refused are kept in memory and resubmitted by
 * the registry's sweep, so once the lock is released every peer is stored,
 * although none of them registers again. */
static const char *const outage_files[] = {
    "00-core.conf", core_conf,
    "11-storage-sqlite.conf",
    "storage-sqlite: { max_pending = 2; busy_ms = 0; retry_min_ms = 50; retry_max_ms = 100; };\n",
    "20-registry.conf", "registry: { sweep_ms = 200; };\n",
    "15-ip-blocker.conf", "ip-blocker: { };\n",
    NULL,
};

static int db_rows(sqlite3 *db)
{
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(db, "select count(*) from peer", -1, &q, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    int n = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    return n;
}

/* rdvd started on files, and its database opened beside it. */
static sqlite3 *boot_and_open_db(const char *const *files)
{
    boot_with(files, NULL);
    char path[400];
    snprintf(path, sizeof path, "%s/db_v2.sqlite3", srv.dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    return db;
}

/* Six peers register from six addresses while db holds the write lock; the
 * storage queue (max_pending = 2) takes two, the registry keeps four unsaved. */
static void register_six_under_lock(sqlite3 *db, int first)
{
    exec(db, "begin exclusive");
    char id[16], ip[32];
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof id, "2000009%02d", first + i);
        snprintf(ip, sizeof ip, "127.0.9.%d", first + i + 1);
        int fd = rdvt_udp(ip);
        client_register(fd, id, "u1", P1);
        close(fd);
    }
    cr_assert_eq(rdvt_stat(&srv, "registry.store_unsaved"), 4, "the queue took 2 of 6");
}

Test(registry_db, writes_refused_during_an_outage_are_stored_afterwards)
{
    sqlite3 *db = boot_and_open_db(outage_files);
    register_six_under_lock(db, 0);
    cr_assert_eq(rdvt_stat(&srv, "registry.store_put_failed"), 4, "the queue took 2 of 6, not %llu", 6 - (unsigned long long)rdvt_stat(&srv, "registry.store_put_failed"));
    usleep(500000);
    cr_assert_eq(rdvt_stat(&srv, "registry.store_unsaved"), 4, "refused again while the lock is held");
    exec(db, "commit");
    for (int i = 0; i < 250 && (rdvt_stat(&srv, "registry.store_unsaved") || rdvt_stat(&srv, "registry.store_pending"));
         i++)
        usleep(20000);
    cr_assert_eq(rdvt_stat(&srv, "registry.store_unsaved"), 0);
    cr_assert_eq(rdvt_stat(&srv, "registry.store_pending"), 0);
    cr_assert_eq(rdvt_stat(&srv, "registry.store_resubmitted"), 4);
    cr_assert_eq(db_rows(db), 6, "every registered peer is stored");
    sqlite3_close(db);
    restart();
    cr_assert_eq(rdvt_stat(&srv, "registry.peers"), 6, "and known after a restart");
}

/* The same outage, but rdvd is stopped (SIGTERM) before the sweep puts the
 * refused writes again: the lock is gone, the disk is fine, so a clean stop
 * must store them too (the registry queues them at stop, before the
 * storage's bounded flush). While the lock is still held, the stop must say
 * how many peers are lost, theirs included. */
static const char *const outage_slow_sweep_files[] = {
    "00-core.conf", core_conf,
    "11-storage-sqlite.conf",
    "storage-sqlite: { max_pending = 2; busy_ms = 0; retry_min_ms = 50; retry_max_ms = 100; flush_ms = 500; };\n",
    "20-registry.conf", "registry: { sweep_ms = 60000; };\n",
    "15-ip-blocker.conf", "ip-blocker: { };\n",
    NULL,
};

Test(registry_db, a_clean_stop_stores_writes_the_queue_refused)
{
    sqlite3 *db = boot_and_open_db(outage_slow_sweep_files);
    register_six_under_lock(db, 0);
    exec(db, "commit");
    for (int i = 0; i < 250 && rdvt_stat(&srv, "registry.store_pending"); i++)
        usleep(20000);
    cr_assert_eq(rdvt_stat(&srv, "registry.store_unsaved"), 4, "no sweep yet");
    cr_assert_eq(rdvt_stop(&srv), 0, "rdvd did not exit cleanly");
    cr_assert_eq(db_rows(db), 6, "every registered peer is stored at a clean stop");

    /* lock held through the stop: nothing can be written, and the log says
     * how many peers are lost (2 queued in storage + 4 refused by it) */
    restart_after_stop();
    register_six_under_lock(db, 10);
    cr_assert_eq(rdvt_stop(&srv), 0, "rdvd did not exit cleanly");
    exec(db, "commit");
    cr_assert(rdvt_log_contains(&srv, "2 peer writes were not saved"));
    cr_assert(rdvt_log_contains(&srv, "4 peers not stored at stop"), "the registry's refused writes are not counted");
    cr_assert_eq(db_rows(db), 6);
    sqlite3_close(db);
}

/* R50: the database file deleted while rdvd runs (an operator "resetting"
 * it, a cleanup script). Before, rdvd went on writing into the unlinked
 * file, and a restart found no peers at all. Now the storage notices (while
 * idle too), creates the file again, and the registry stores every peer
 * into it from memory. */
static const char *const moved_files[] = {
    "00-core.conf", core_conf,
    "20-registry.conf", "registry: { sweep_ms = 200; };\n",
    "15-ip-blocker.conf", "ip-blocker: { };\n",
    NULL,
};

Test(registry_db, a_database_deleted_while_running_gets_every_peer_again)
{
    sqlite3 *db = boot_and_open_db(moved_files);
    char id[16], ip[32], path[420];
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof id, "2000008%02d", i);
        snprintf(ip, sizeof ip, "127.0.8.%d", i + 1);
        int fd = rdvt_udp(ip);
        client_register(fd, id, "u1", P1);
        close(fd);
    }
    wait_written();
    cr_assert_eq(db_rows(db), 6);
    sqlite3_close(db);
    const char *const sfx[] = { "", "-wal", "-shm" };
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/db_v2.sqlite3%s", srv.dir, sfx[i]);
        unlink(path);
    }
    for (int i = 0; i < 1500 && (rdvt_stat(&srv, "registry.store_lost") == 0 ||
                                rdvt_stat(&srv, "registry.store_unsaved") || rdvt_stat(&srv, "registry.store_pending"));
         i++)
        usleep(20000);
    cr_assert_eq(rdvt_stat(&srv, "registry.store_lost"), 1, "noticed without any new write");
    cr_assert_eq(rdvt_stat(&srv, "storage-sqlite.reopened"), 1);
    cr_assert(rdvt_log_contains(&srv, "was deleted or replaced while rdvd ran"));
    snprintf(path, sizeof path, "%s/db_v2.sqlite3", srv.dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(db_rows(db), 6, "every peer is in the new file");
    sqlite3_close(db);
    restart();
    cr_assert_eq(rdvt_stat(&srv, "registry.peers"), 6, "and known after a restart");
    int fd = rdvt_udp("127.0.8.1");
    cr_assert_eq(reg_pk(fd, "200000800", "u2", P1), MISMATCH, "R55: the uuid binding survived the delete");
    close(fd);
}

/* ------------------------------------------------------------------ bad input */
static void check_alive(void)
{
    int fd = rdvt_udp("127.0.0.99");
    cr_assert_eq(reg_peer(fd, "alive-check"), 1, "the server still answers");
    close(fd);
}

Test(registry, bad_input_then_alive)
{
    int a = rdvt_udp("127.0.0.30");
    reply r[2];
    uint8_t buf[4096];
    size_t n;

    /* R31, R32: ignored */
    n = reg_peer_msg("", 0, buf, sizeof buf);
    cr_assert_eq(xchg(a, buf, n, r, 2), 0, "R31");
    n = reg_pk_msg("123456789", "", 0, P1, 32, buf, sizeof buf);
    cr_assert_eq(xchg(a, buf, n, r, 2), 0, "R32 empty uuid");
    n = reg_pk_msg("123456789", "u", 1, "", 0, buf, sizeof buf);
    cr_assert_eq(xchg(a, buf, n, r, 2), 0, "R32 empty pk");
    /* oversize uuid / pk: ignored (registry caps 256 / 64 bytes) */
    static uint8_t big[3000];
    memset(big, 'x', sizeof big);
    n = reg_pk_msg("123456789", big, 257, P1, 32, buf, sizeof buf);
    cr_assert_eq(xchg(a, buf, n, r, 2), 0, "uuid of 257 bytes");
    n = reg_pk_msg("123456789", "u", 1, big, 65, buf, sizeof buf);
    cr_assert_eq(xchg(a, buf, n, r, 2), 0, "pk of 65 bytes");
    /* long id: INVALID_ID_FORMAT (5 bytes, smaller than the request) */
    char longid[200];
    memset(longid, '1', sizeof longid);
    longid[101] = '\0';
    cr_assert_eq(reg_pk(a, longid, "u", P1), INVALID_ID);
    /* R18: invalid UTF-8 id, R14: garbage, R15: empty, R16: unknown tag,
     * truncated protobuf */
    const uint8_t bad_utf8[] = { 0x32, 0x08, 0x0a, 0x06, 0xff, 0xfe, 0x61, 0x62, 0x63, 0x64 };
    cr_assert_eq(xchg(a, bad_utf8, sizeof bad_utf8, r, 2), 0, "R18");
    const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff };
    cr_assert_eq(xchg(a, garbage, sizeof garbage, r, 2), 0, "R14");
    cr_assert_eq(xchg_opt(a, "", 0, r, 2, 300, false), 0, "R15");
    const uint8_t unknown[] = { 0x9a, 0x06, 0x00 };
    cr_assert_eq(xchg(a, unknown, sizeof unknown, r, 2), 0, "R16");
    n = reg_pk_msg("123456789", "u1", 2, P1, 32, buf, sizeof buf);
    cr_assert_eq(xchg(a, buf, n - 5, r, 2), 0, "truncated RegisterPk");
    /* R19-style: server-to-client types */
    const uint8_t rpk_resp[] = { 0x82, 0x01, 0x00 }, rp_resp[] = { 0x3a, 0x02, 0x10, 0x01 };
    cr_assert_eq(xchg(a, rpk_resp, sizeof rpk_resp, r, 2), 0);
    cr_assert_eq(xchg(a, rp_resp, sizeof rp_resp, r, 2), 0);
    /* ConfigUpdate is never answered (serial 0 is not above the server's:
     * nothing changes either) */
    const uint8_t cu[] = { 0x72, 0x00 };
    cr_assert_eq(xchg(a, cu, sizeof cu, r, 2), 0, "ConfigUpdate: no reply");
    /* SoftwareUpdate: off by default (R46) */
    const uint8_t su[] = { 0x8a, 0x01, 0x07, 0x0a, 0x05, '1', '.', '1', '.', '8' };
    cr_assert_eq(xchg(a, su, sizeof su, r, 2), 0, "SoftwareUpdate: off");
    /* a flood of distinct ids from one source: refused by the IP blocker,
     * never amplified */
    char id[16];
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof id, "88%07d", i);
        n = reg_pk_msg(id, "u", 1, P1, 32, buf, sizeof buf);
        cr_assert_eq(xchg_opt(a, buf, n, r, 2, 1000, false), 1);
    }
    close(a);
    check_alive();

    /* R150: RegisterPk over TCP -> NOT_SUPPORT, then closed */
    int t = rdvt_tcp("127.0.0.31", srv.port);
    cr_assert_geq(t, 0);
    n = reg_pk_msg("200000099", "u", 1, P1, 32, buf, sizeof buf);
    cr_assert_eq(rdvt_tcp_send_frame(t, buf, n), 0);
    const uint8_t not_support[] = { 0x82, 0x01, 0x02, 0x08, 0x06 };
    rdc_expect_tcp_bytes(t, not_support, sizeof not_support, 3000);
    cr_assert(rdvt_tcp_closed(t, 3000));
    close(t);
    check_alive();
}

Test(registry, r45_config_update_from_loopback)
{
    int a = rdvt_udp("127.0.0.40");
    char *list[] = { "127.0.0.1:21116" };
    uint8_t buf[256];
    size_t n = rdc_pack(rdc_config_update(7, list, 1), buf, sizeof buf);
    reply r[2];
    cr_assert_eq(xchg(a, buf, n, r, 2), 0, "never a reply");
    /* the ConfigUpdate that now follows RegisterPeer{serial 0} is larger
     * than the request by design (an operator-configured serial) */
    n = reg_peer_msg("abcdef", 0, buf, sizeof buf);
    cr_assert_eq(xchg_opt(a, buf, n, r, 2, 1000, true), 2);
    Hbb__RendezvousMessage *got = hbb__rendezvous_message__unpack(NULL, (size_t)r[1].n, r[1].buf);
    cr_assert_not_null(got);
    cr_assert_eq(got->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_CONFIGURE_UPDATE);
    cr_assert_eq(got->configure_update->serial, 7);
    cr_assert_eq(got->configure_update->n_rendezvous_servers, 1);
    cr_assert_str_eq(got->configure_update->rendezvous_servers[0], "127.0.0.1:21116");
    hbb__rendezvous_message__free_unpacked(got, NULL);
    n = reg_peer_msg("abcdef", 7, buf, sizeof buf);
    cr_assert_eq(xchg(a, buf, n, r, 2), 1, "serial 7: only the response");
    close(a);
}

Test(registry, bans_drop_everything_from_a_source)
{
    char *o = rdvt_admin(&srv, "ban 127.0.0.66");
    cr_assert(o && strstr(o, "banned 127.0.0.66"), "%s", o ? o : "(null)");
    free(o);
    int a = rdvt_udp("127.0.0.66");
    uint8_t buf[64];
    size_t n = reg_peer_msg("123456789", 0, buf, sizeof buf);
    reply r[2];
    cr_assert_eq(xchg(a, buf, n, r, 2), 0, "UDP dropped");
    close(a);
    int t = rdvt_tcp("127.0.0.66", srv.port);
    if (t >= 0) {
        cr_assert(rdvt_tcp_closed(t, 3000), "TCP refused at accept");
        close(t);
    }
    cr_assert_geq(rdvt_stat(&srv, "ip-blocker.banned_msgs"), 1);
    free(rdvt_admin(&srv, "unban 127.0.0.66"));
    a = rdvt_udp("127.0.0.66");
    cr_assert_eq(reg_peer(a, "123456789"), 1);
    close(a);
}

/* Admin bans are kept in ip-blocker.admin_ban_file (./admin-bans.txt by
 * default; an rdvd addition, upstream has no bans): a ban followed at once
 * by SIGTERM is on disk, then listed and enforced after the restart; an
 * unban made before the stop stays made. */
Test(registry, admin_bans_survive_a_restart)
{
    char *o = rdvt_admin(&srv, "ban 127.0.0.67");
    cr_assert(o && strstr(o, "banned 127.0.0.67"), "%s", o ? o : "(null)");
    free(o);
    free(rdvt_admin(&srv, "ban 127.0.0.68"));
    free(rdvt_admin(&srv, "unban 127.0.0.68"));
    /* The ban file's writer and the database's worker are running now:
     * neither may take the loop's signals (a SIGTERM delivered to a worker
     * would still drain, but it would interrupt its fsync for nothing). */
    if (!srv.valgrind) { /* valgrind runs the threads under its own masks */
        int workers = 0;
        cr_assert_eq(rdvt_threads_taking(srv.pid, SIGTERM, &workers), 0, "a worker thread takes SIGTERM");
        cr_assert_eq(rdvt_threads_taking(srv.pid, SIGHUP, &workers), 0, "a worker thread takes SIGHUP");
        cr_assert_geq(workers, 2, "the storage worker and the ban file writer");
    }
    restart();
    char path[300];
    snprintf(path, sizeof path, "%s/admin-bans.txt", srv.dir);
    cr_assert(rdvt_file_contains(path, "127.0.0.67"));
    cr_assert_not(rdvt_file_contains(path, "127.0.0.68"));
    cr_assert(rdvt_log_contains(&srv, "1 admin bans loaded from admin-bans.txt"));
    o = rdvt_admin(&srv, "bans");
    cr_assert(o && strcmp(o, "1\n127.0.0.67 admin hits=0\n") == 0, "%s", o ? o : "(null)");
    free(o);
    int a = rdvt_udp("127.0.0.67");
    cr_assert_eq(reg_peer(a, "123456789"), -1, "UDP from the banned source dropped");
    close(a);
    int t = rdvt_tcp("127.0.0.67", srv.port);
    if (t >= 0) {
        cr_assert(rdvt_tcp_closed(t, 3000), "TCP refused at accept");
        close(t);
    }
    cr_assert_geq(rdvt_stat(&srv, "ip-blocker.banned_msgs"), 1);
    a = rdvt_udp("127.0.0.68");
    cr_assert_eq(reg_peer(a, "123456789"), 1, "the unbanned source is answered");
    close(a);
}
