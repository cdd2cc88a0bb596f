/* Integration: the real rdvd with the keys and storage-sqlite modules, and
 * rdvctl's key pair commands (issue #3). Checklist items: R160–R163 (keys),
 * R56 (upstream database reuse); config-compat.md §5–§7. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "harness.h"
#include "upstream_schema.h"

#define SEED11_SK "ERERERERERERERERERERERERERERERERERERERERERHQSrIydCu0qzoTaL1GFeTm0CJKtxoBa6+FIKMyyXeHNw=="
#define SEED11_PK "0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="

#define CORE_CONF                                                                 \
    "core: {\n"                                                                   \
    "  modules = [ \"keys\", \"storage-sqlite\" ];\n"                             \
    "  module_path = \"@MODDIR@\";\n"                                             \
    "  listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; } );\n" \
    "};\n"

static rdvt_server srv;

static void cleanup(void)
{
    if (srv.pid > 0)
        rdvt_stop(&srv);
    rdvt_cleanup(&srv);
}

TestSuite(storage, .fini = cleanup, .timeout = 120);

/* ---- helpers */
static void prepare(const char *extra_name, const char *extra_text)
{
    const char *files[] = { "00-core.conf", CORE_CONF, extra_name, extra_text, NULL };
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
}

static const char *in_dir(const char *name)
{
    static char p[2][600];
    static int i;
    i ^= 1;
    snprintf(p[i], sizeof p[i], "%s/%s", srv.dir, name);
    return p[i];
}

/* A whole file (static buffer), or NULL. */
static const char *slurp(const char *path, size_t *len)
{
    static char buf[4096];
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static void start_ok(void) { cr_assert_eq(rdvt_start(&srv), 0, "rdvd did not start"); }

static void stop_ok(void)
{
    int st = rdvt_stop(&srv);
    cr_assert_eq(st, 0, "rdvd did not exit cleanly (status %d)", st);
}

/* Start a server that must fail; returns its exit status. */
static int start_fails(void)
{
    cr_assert_eq(rdvt_start_exe(&srv, "rdvd", NULL, false), 0);
    int st = rdvt_wait_exit(&srv, 15000);
    cr_assert_neq(st, 0, "rdvd must refuse to start");
    cr_assert_neq(st, -1, "rdvd did not exit");
    return st;
}

static char *admin_line(const char *cmd)
{
    char *a = rdvt_admin(&srv, cmd);
    cr_assert_not_null(a, "admin '%s' failed", cmd);
    a[strcspn(a, "\n")] = 0;
    return a;
}

static sqlite3 *db_at(const char *path)
{
    sqlite3 *db;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
    return db;
}

static void db_exec(sqlite3 *db, const char *sql)
{
    char *e = NULL;
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &e), SQLITE_OK, "%s: %s", sql, e ? e : "?");
}

static const char *db_text(sqlite3 *db, const char *sql)
{
    static char out[1024];
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sql);
    out[0] = 0;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
        snprintf(out, sizeof out, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return out;
}

/* ---- keys (R160, R161, R163) */
Test(storage, key_files_generated_in_working_directory_and_kept)
{
    prepare(NULL, NULL);
    start_ok();
    size_t n;
    const char *pub = slurp(in_dir("id_ed25519.pub"), &n);
    cr_assert_not_null(pub, "id_ed25519.pub not in the working directory");
    cr_assert_eq(n, 44);
    char pk[64];
    strcpy(pk, pub);
    cr_assert_null(strchr(pk, '/'));
    const char *sk = slurp(in_dir("id_ed25519"), &n);
    cr_assert_not_null(sk);
    cr_assert_eq(n, 88);
    cr_assert_neq(sk[87], '\n');
    uint8_t bin[64];
    size_t bl;
    cr_assert_eq(sodium_base642bin(bin, sizeof bin, sk, n, NULL, &bl, NULL, sodium_base64_VARIANT_ORIGINAL), 0);
    cr_assert_eq(bl, 64);
    char half[64];
    sodium_bin2base64(half, sizeof half, bin + 32, 32, sodium_base64_VARIANT_ORIGINAL);
    cr_assert_str_eq(half, pk, "id_ed25519.pub must be the public half of id_ed25519");
    struct stat st;
    cr_assert_eq(stat(in_dir("id_ed25519"), &st), 0);
    cr_assert_eq(st.st_mode & 077, 0, "id_ed25519 must not be readable by others");

    char line[128];
    snprintf(line, sizeof line, "Key: %s", pk);
    cr_assert(rdvt_log_contains(&srv, line), "no '%s' in the log", line);
    char *k = admin_line("key");
    cr_assert_str_eq(k, pk);
    free(k);
    cr_assert_eq(rdvt_stat(&srv, "keys.signing"), 1);
    cr_assert_eq(access(in_dir("db_v2.sqlite3"), F_OK), 0, "db_v2.sqlite3 not created in the working directory");
    stop_ok();

    /* restart in the same directory: same key, files untouched */
    cr_assert_eq(truncate(srv.log, 0), 0);
    start_ok();
    cr_assert(rdvt_log_contains(&srv, line), "the key changed across a restart");
    cr_assert_not(rdvt_log_contains(&srv, "generated"));
    const char *pub2 = slurp(in_dir("id_ed25519.pub"), &n);
    cr_assert_str_eq(pub2, pk);
    stop_ok();
}

Test(storage, existing_key_file_is_used)
{
    prepare(NULL, NULL);
    FILE *f = fopen(in_dir("id_ed25519"), "w");
    cr_assert_not_null(f);
    fputs(SEED11_SK "\n", f); /* a trailing newline is tolerated */
    fclose(f);
    start_ok();
    cr_assert(rdvt_log_contains(&srv, "Key: " SEED11_PK));
    char *k = admin_line("key");
    cr_assert_str_eq(k, SEED11_PK);
    free(k);
    stop_ok();
}

Test(storage, secret_key_in_configuration)
{
    prepare("10-keys.conf", "keys: { key = \"" SEED11_SK "\"; };\n");
    start_ok();
    cr_assert(rdvt_log_contains(&srv, "Key: " SEED11_PK));
    cr_assert_neq(access(in_dir("id_ed25519"), F_OK), 0, "no key files with -k <secret>");
    cr_assert_neq(access(in_dir("id_ed25519.pub"), F_OK), 0);
    cr_assert_not(rdvt_log_contains(&srv, SEED11_SK), "the secret key must never be logged");
    stop_ok();

    /* --print-config redacts it */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s/rdvd' -c conf.d --print-config 2>&1", srv.dir, RDV_BUILD_DIR);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    cr_assert_eq(pclose(p), 0, "%s", buf);
    cr_assert_not_null(strstr(buf, "keys"), "%s", buf);
    cr_assert_null(strstr(buf, SEED11_SK), "--print-config shows the secret key:\n%s", buf);
}

/* R162 */
Test(storage, malformed_key_file_stops_the_server)
{
    prepare(NULL, NULL);
    FILE *f = fopen(in_dir("id_ed25519"), "w");
    cr_assert_not_null(f);
    fputs(SEED11_PK, f); /* base64 of 32 bytes */
    fclose(f);
    start_fails();
    char want[600];
    snprintf(want, sizeof want, "malformed private key in ./id_ed25519");
    cr_assert(rdvt_log_contains(&srv, want), "no '%s' in the log", want);
    cr_assert(rdvt_log_contains(&srv, "fix:"));
}

/* ---- storage (R56) */
Test(storage, upstream_database_opens)
{
    prepare(NULL, NULL);
    sqlite3 *db = db_at(in_dir("db_v2.sqlite3"));
    db_exec(db, upstream_ddl);
    db_exec(db, "insert into peer (guid, id, uuid, pk, info) values "
                "(x'000102030405060708090a0b0c0d0e0f', '300000001', 'u9', x'09', '{\"ip\":\"::ffff:127.0.0.1\"}'), "
                "(x'100102030405060708090a0b0c0d0e0f', '300000002', 'u8', x'08', 'not json');"
                "insert into peer (guid, id, uuid, pk, user, status, note, info) values "
                "(x'200102030405060708090a0b0c0d0e0f', '300000003', 'u7', x'07', x'aa', 1, 'n', '{}')");
    sqlite3_close(db);
    start_ok();
    cr_assert_eq(rdvt_stat(&srv, "storage-sqlite.rows_at_start"), 3);
    cr_assert(rdvt_log_contains(&srv, "open: 3 peers"));
    char *a = rdvt_admin(&srv, "storage");
    cr_assert_not_null(a);
    cr_assert_not_null(strstr(a, "path ./db_v2.sqlite3\n"), "%s", a);
    cr_assert_not_null(strstr(a, "last_error none"), "%s", a);
    free(a);
    stop_ok();
    db = db_at(in_dir("db_v2.sqlite3"));
    cr_assert_str_eq(db_text(db, "select count(*) from peer"), "3");
    cr_assert_str_eq(db_text(db, "select note || status || hex(user) from peer where id = '300000003'"), "n1AA");
    cr_assert_str_eq(db_text(db, "pragma integrity_check"), "ok");
    cr_assert_str_eq(db_text(db, "pragma journal_mode"), "wal");
    sqlite3_close(db);
}

Test(storage, unwritable_database_path_stops_the_server)
{
    prepare("11-storage-sqlite.conf", "storage-sqlite: { path = \"@DIR@/no/such/dir/db_v2.sqlite3\"; };\n");
    start_fails();
    char want[600];
    snprintf(want, sizeof want, "cannot open database %s/no/such/dir/db_v2.sqlite3", srv.dir);
    cr_assert(rdvt_log_contains(&srv, want), "no '%s' in the log", want);
    cr_assert(rdvt_log_contains(&srv, "fix: check that the directory exists"));
}

/* ---- rdvctl genkeypair / validatekeypair (config-compat.md §7) */
static int run(const char *args, char *out, size_t cap)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/rdvctl' %s", RDV_BUILD_DIR, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    cr_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
}

Test(rdvctl, genkeypair_prints_a_valid_pair)
{
    char out[1024], pk[64], sk[128];
    cr_assert_eq(run("genkeypair", out, sizeof out), 0);
    cr_assert_eq(sscanf(out, "Public Key:  %63s\nSecret Key:  %127s\n", pk, sk), 2, "%s", out);
    cr_assert_eq(strlen(pk), 44);
    cr_assert_eq(strlen(sk), 88);
    char want[300];
    snprintf(want, sizeof want, "Public Key:  %s\nSecret Key:  %s\n", pk, sk);
    cr_assert_str_eq(out, want, "exact format: two spaces after each colon, nothing else");
    char args[300];
    snprintf(args, sizeof args, "validatekeypair '%s' '%s'", pk, sk);
    cr_assert_eq(run(args, out, sizeof out), 0);
    cr_assert_str_eq(out, "Key pair is VALID\n");
    /* the command word is case-insensitive */
    cr_assert_eq(run("GenKeyPair", out, sizeof out), 0);
    cr_assert_not_null(strstr(out, "Public Key:  "));
}

Test(rdvctl, validatekeypair_statuses)
{
    char out[2048];
    cr_assert_eq(run("validatekeypair " SEED11_PK " " SEED11_SK, out, sizeof out), 0);
    cr_assert_str_eq(out, "Key pair is VALID\n");
    cr_assert_eq(run("validatekeypair " SEED11_PK, out, sizeof out), 1);
    cr_assert_eq(strncmp(out, "ERROR: You must supply both the public and the secret key\n\n", 59), 0, "%s", out);
    cr_assert_not_null(strstr(out, "validatekeypair"), "usage follows: %s", out);
    cr_assert_eq(run("validatekeypair " SEED11_PK " 'not base64!'", out, sizeof out), 1);
    cr_assert_str_eq(out, "Invalid secret key\n");
    cr_assert_eq(run("validatekeypair " SEED11_PK " " SEED11_PK, out, sizeof out), 1);
    cr_assert_str_eq(out, "Invalid Secret key\n");
    cr_assert_eq(run("validatekeypair 'no way' " SEED11_SK, out, sizeof out), 1);
    cr_assert_str_eq(out, "Invalid public key\n");
    cr_assert_eq(run("validatekeypair " SEED11_SK " " SEED11_SK, out, sizeof out), 1);
    cr_assert_str_eq(out, "Invalid Public key\n");
    cr_assert_eq(run("validatekeypair OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw= " SEED11_SK, out, sizeof out), 1);
    cr_assert_str_eq(out, "Key pair is INVALID\n");
}

Test(rdvctl, console_commands_still_work)
{
    char out[2048];
    /* no server on this socket: a clear error, status 1 */
    cr_assert_eq(run("-s /nonexistent/rdvd.sock cmd stats 2>&1", out, sizeof out), 1);
    cr_assert_not_null(strstr(out, "cannot connect to /nonexistent/rdvd.sock"), "%s", out);
    cr_assert_eq(run("-s /nonexistent/rdvd.sock console </dev/null 2>&1", out, sizeof out), 1,
                 "a console without a server says so at once (was: nothing, status 0)");
    cr_assert_not_null(strstr(out, "cannot connect"), "%s", out);
    cr_assert_eq(run("--version", out, sizeof out), 0);
    cr_assert_eq(strncmp(out, "rdvctl ", 7), 0);
}

/* Without -s, rdvctl finds the launchers' sockets in the working directory
 * (hbbs.sock here), as an operator in the server's directory expects. */
Test(rdvctl, finds_the_hbbs_socket_without_dash_s, .fini = cleanup, .timeout = 60)
{
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    char port[16], cmd[1024], out[2048];
    snprintf(port, sizeof port, "%d", srv.port);
    const char *const hargs[] = { "-p", port, NULL };
    cr_assert_eq(rdvt_start_exe(&srv, "hbbs", hargs, true), 0);
    snprintf(cmd, sizeof cmd, "cd '%s' && env -u RDVD_SOCKET '%s/rdvctl' cmd always-use-relay 2>&1", srv.dir,
             RDV_BUILD_DIR);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    pclose(p);
    cr_assert_str_eq(out, "ALWAYS_USE_RELAY: false\n");
    /* a command the server could not run is exit 1, for scripts (was 0) */
    snprintf(cmd, sizeof cmd, "cd '%s' && env -u RDVD_SOCKET '%s/rdvctl' cmd nosuch >/dev/null 2>&1", srv.dir,
             RDV_BUILD_DIR);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "unknown command: status %d", WEXITSTATUS(st));
    snprintf(cmd, sizeof cmd, "cd '%s' && printf 'nosuch\\nhelp\\n' | env -u RDVD_SOCKET '%s/rdvctl' console "
             ">/dev/null 2>&1", srv.dir, RDV_BUILD_DIR);
    st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "console: the last command's status");
}
