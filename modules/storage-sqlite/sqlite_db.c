/* sqlite_db.c — the db_v2.sqlite3 file: schema, prepared statements, load
 * and batched writes. JSON in `info` is read and written with SQLite's own
 * JSON functions, so escaping and unknown keys are handled by a maintained
 * parser and no extra library is needed. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "sqlite_db.h"

/* rendezvous.md §13.2, verbatim: an existing upstream database must keep
 * working, and one we create must work with upstream. */
static const char sdb_schema[] =
    "create table if not exists peer (\n"
    "    guid blob primary key not null,\n"
    "    id varchar(100) not null,\n"
    "    uuid blob not null,\n"
    "    pk blob not null,\n"
    "    created_at datetime not null default(current_timestamp),\n"
    "    user blob,\n"
    "    status tinyint,\n"
    "    note varchar(300),\n"
    "    info text not null\n"
    ") without rowid;\n"
    "create unique index if not exists index_peer_id on peer (id);\n"
    "create index if not exists index_peer_user on peer (user);\n"
    "create index if not exists index_peer_created_at on peer (created_at);\n"
    "create index if not exists index_peer_status on peer (status);\n";

/* info is {"ip": "..."}; anything else (bad JSON, no ip, ip not a string)
 * reads as "" (§13.2: a parse failure means empty info). */
static const char sdb_sql_load[] =
    "select guid, id, uuid, pk, "
    "case when json_valid(info) and json_type(info, '$.ip') = 'text' "
    "then json_extract(info, '$.ip') end from peer";
/* uuid never changes (§13.3). Other keys a Pro server put into info stay;
 * an unparsable info is replaced. An id change onto an id another row holds
 * is refused like a conflicting insert. */
#define SDB_SET_UPDATE                                                                                     \
    "set id = ?2, pk = ?4, "                                                                           \
    "info = json_set(case when json_valid(info) and json_type(info) = 'object' then info else '{}' end, " \
    "'$.ip', ?5)"
/* Insert, as upstream (§13.3): a row already holding the id is another
 * device's (its uuid, pk, and a Pro server's user/note), and is never
 * replaced; the conflicting write is refused as a row error and logged.
 * A row with the same guid is the same device: updated, so putting every
 * peer again after the file was replaced (sdb_follow) cannot fail on it. */
static const char sdb_sql_insert[] = "insert into peer (guid, id, uuid, pk, info) "
                                     "values (?1, ?2, ?3, ?4, json_object('ip', ?5)) "
                                     "on conflict (guid) do update " SDB_SET_UPDATE;
static const char sdb_sql_update[] = "update peer " SDB_SET_UPDATE " where guid = ?1";

/* One connection and its statements (closed and opened again whole by
 * sdb_follow; db is NULL between the two while the path cannot be opened). */
typedef struct sdb_conn {
    sqlite3 *db;
    sqlite3_stmt *ins, *upd, *begin, *commit, *rollback;
} sdb_conn;

struct sdb {
    pthread_mutex_t mu;
    sdb_conn c;
    uint64_t reopened; /* times the file at path was found replaced and opened again */
    int busy_ms;
    char path[];
};

const char *sdb_path(const sdb *db) { return db->path; }

const char *sdb_fix_for(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return "free space on the filesystem that holds it";
    case SQLITE_READONLY:
        return "make the file, its directory and its -wal/-shm files writable by the rdvd user, and check "
               "that the filesystem is not mounted read-only";
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return "another process holds a lock on the database: only one server may use the file";
    case SQLITE_IOERR:
        return "check the disk and the filesystem (dmesg)";
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return "check that the directory exists and that the rdvd user may create and write files in it "
               "(storage-sqlite.path, hbbs DB_URL)";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return "the file is damaged or not a database: restore it from a backup, or move it away to start "
               "with an empty database";
    case SQLITE_NOMEM:
        return "the server is out of memory";
    default:
        return "see SQLite's message";
    }
}

int sdb_errno_for(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL: return -ENOSPC;
    case SQLITE_READONLY: return -EROFS;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return -EBUSY;
    case SQLITE_NOMEM: return -ENOMEM;
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH: return -EACCES;
    default: return -EIO;
    }
}

static int sdb_fail_on(const sdb *db, sqlite3 *h, int rc, const char *what, char *err, size_t errlen)
{
    const char *gen = sqlite3_errstr(rc);
    const char *msg = h && sqlite3_errcode(h) != SQLITE_OK ? sqlite3_errmsg(h) : gen;
    bool same = strcmp(msg, gen) == 0;
    snprintf(err, errlen, "%s %s: %s%s%s%s; fix: %s", what, db->path, msg, same ? "" : " (", same ? "" : gen,
             same ? "" : ")", sdb_fix_for(rc));
    return sdb_errno_for(rc);
}

static int sdb_fail(sdb *db, int rc, const char *what, char *err, size_t errlen)
{
    return sdb_fail_on(db, db->c.db, rc, what, err, errlen);
}

static const char *sdb_strip_url(const char *path)
{
    if (strncmp(path, "sqlite://", 9) == 0)
        return path + 9;
    if (strncmp(path, "sqlite:", 7) == 0)
        return path + 7;
    return path;
}

static int sdb_prepare(sdb_conn *c, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
}

static int sdb_step_reset(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void sdb_conn_close(sdb_conn *c)
{
    sqlite3_finalize(c->ins);
    sqlite3_finalize(c->upd);
    sqlite3_finalize(c->begin);
    sqlite3_finalize(c->commit);
    sqlite3_finalize(c->rollback);
    sqlite3_close_v2(c->db);
    memset(c, 0, sizeof *c);
}

/* Open db->path into c (creating the file and the schema if missing) and
 * check that it can be written. Returns 0, or -errno with err naming the
 * file and the fix, *code the SQLite result (c closed). */
static int sdb_connect(sdb *db, sdb_conn *c, int *code, char *err, size_t errlen)
{
    const char *what = "cannot open database";
    int rc = sqlite3_open_v2(db->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                             NULL);
    if (rc != SQLITE_OK)
        goto fail;
    sqlite3_extended_result_codes(c->db, 1);
    /* SQLite quietly opens read-only what it cannot open for writing. */
    what = "cannot write database";
    if (sqlite3_db_readonly(c->db, "main") == 1) {
        rc = SQLITE_READONLY;
        goto fail;
    }
    sqlite3_busy_timeout(c->db, db->busy_ms);
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(c->db, "pragma journal_mode = wal", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        rc = mode && strcmp(mode, "wal") == 0 ? SQLITE_OK : SQLITE_CANTOPEN;
    }
    sqlite3_finalize(st);
    what = "cannot switch to WAL mode in database";
    if (rc != SQLITE_OK)
        goto fail;
    rc = sqlite3_exec(c->db, "pragma synchronous = normal", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(c->db, sdb_schema, NULL, NULL, NULL);
    what = "cannot create the peer table in database";
    if (rc != SQLITE_OK)
        goto fail;
    what = "cannot prepare statements for database";
    if ((rc = sdb_prepare(c, sdb_sql_insert, &c->ins)) != SQLITE_OK ||
        (rc = sdb_prepare(c, sdb_sql_update, &c->upd)) != SQLITE_OK ||
        (rc = sdb_prepare(c, "begin immediate", &c->begin)) != SQLITE_OK ||
        (rc = sdb_prepare(c, "commit", &c->commit)) != SQLITE_OK ||
        (rc = sdb_prepare(c, "rollback", &c->rollback)) != SQLITE_OK)
        goto fail;
    /* A writable main file does not make a writable database: when the -wal
     * or -shm file is not writable by this user (left by hbbs or a sqlite3
     * shell run as root), SQLite opens the WAL read-only without an error,
     * and the connection stays read-only for its life, even once the files
     * are fixed. Taking the write lock once shows it. A lock held by another
     * process (busy) does not stop the start: writes are retried. */
    rc = sdb_step_reset(c->begin);
    if (rc == SQLITE_OK)
        rc = sdb_step_reset(c->rollback);
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
        rc = SQLITE_OK;
    what = "cannot write database";
    if (rc == SQLITE_OK)
        return 0;
fail:;
    *code = rc;
    int r = sdb_fail_on(db, c->db, rc, what, err, errlen);
    sdb_conn_close(c);
    return r;
}

int sdb_open(const char *path_, int busy_ms, sdb **out, char *err, size_t errlen)
{
    const char *path = sdb_strip_url(path_);
    size_t plen = strlen(path);
    if (!plen) {
        snprintf(err, errlen, "storage-sqlite.path is empty; fix: name the database file (default ./db_v2.sqlite3)");
        return -EINVAL;
    }
    sdb *db = calloc(1, sizeof *db + plen + 1);
    if (!db) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    memcpy(db->path, path, plen + 1);
    db->busy_ms = busy_ms;
    pthread_mutex_init(&db->mu, NULL);
    int code;
    int r = sdb_connect(db, &db->c, &code, err, errlen);
    if (r < 0) {
        sdb_close(db);
        return r;
    }
    *out = db;
    return 0;
}

void sdb_close(sdb *db)
{
    if (!db)
        return;
    sdb_conn_close(&db->c);
    pthread_mutex_destroy(&db->mu);
    free(db);
}

uint64_t sdb_reopened(sdb *db)
{
    pthread_mutex_lock(&db->mu);
    uint64_t n = db->reopened;
    pthread_mutex_unlock(&db->mu);
    return n;
}

/* Caller holds mu. The file at path is no longer the one open (deleted,
 * or replaced by a rename or a restored backup): writes would go to the
 * old inode and be lost at the next start. The old connection is closed
 * first: it checkpoints into the old inode and removes the -wal and -shm
 * at the path, which are the old file's; opened beside it, a new
 * connection would share them and read the old file's pages as its own.
 * Then the path is opened (a new file if nothing is there); until that
 * works there is no connection and writes fail, so batches are kept. */
static int sdb_follow(sdb *db, char *err, size_t errlen)
{
    if (db->c.db) {
        int moved = 0;
        if (sqlite3_file_control(db->c.db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK || !moved)
            return SQLITE_OK;
        sdb_conn_close(&db->c);
    }
    int code;
    char why[512];
    if (sdb_connect(db, &db->c, &code, why, sizeof why) < 0) {
        snprintf(err, errlen, "the file was deleted or replaced while rdvd ran, and opening it again failed (%s)",
                 sqlite3_errstr(code));
        return code;
    }
    db->reopened++;
    return SQLITE_OK;
}

int sdb_check(sdb *db, char *err, size_t errlen)
{
    pthread_mutex_lock(&db->mu);
    uint64_t before = db->reopened;
    int rc = sdb_follow(db, err, errlen);
    int r = rc != SQLITE_OK ? -1 : db->reopened > before;
    pthread_mutex_unlock(&db->mu);
    return r;
}

long sdb_count(sdb *db, char *err, size_t errlen)
{
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = NULL;
    long n = 0;
    int rc = sqlite3_prepare_v2(db->c.db, "select count(*) from peer", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
    else
        n = sdb_fail(db, rc, "cannot count the rows of database", err, errlen);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->mu);
    return n;
}

long sdb_load_all(sdb *db, rdv_storage_row_fn fn, void *ud, uint64_t *skipped, char *err, size_t errlen)
{
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = NULL;
    long n = 0;
    int rc = sqlite3_prepare_v2(db->c.db, sdb_sql_load, -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const void *guid = sqlite3_column_blob(st, 0);
        const char *id = (const char *)sqlite3_column_text(st, 1);
        if (!guid || sqlite3_column_bytes(st, 0) != 16 || !id) {
            (*skipped)++;
            rc = SQLITE_OK;
            continue;
        }
        rdv_peer_row row = { .id = id };
        memcpy(row.guid, guid, 16);
        row.uuid = sqlite3_column_blob(st, 2);
        row.uuid_len = (size_t)sqlite3_column_bytes(st, 2);
        row.pk = sqlite3_column_blob(st, 3);
        row.pk_len = (size_t)sqlite3_column_bytes(st, 3);
        const char *ip = (const char *)sqlite3_column_text(st, 4);
        row.info_ip = ip ? ip : "";
        fn(ud, &row);
        n++;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        n = sdb_fail(db, rc, "cannot read the peer table of database", err, errlen);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->mu);
    return n;
}

/* Row-level refusals: retrying cannot help, the rest of the batch can go. */
static bool sdb_row_error(int rc)
{
    int p = rc & 0xff;
    return p == SQLITE_CONSTRAINT || p == SQLITE_MISMATCH || p == SQLITE_TOOBIG || p == SQLITE_RANGE;
}

/* An empty blob must be bound as a zero-length blob, not NULL (NOT NULL columns). */
static int sdb_bind_blob(sqlite3_stmt *st, int i, const uint8_t *p, size_t n)
{
    return n ? sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC) : sqlite3_bind_zeroblob(st, i, 0);
}

int sdb_apply(sdb *db, sdb_write *rows, size_t n, char *err, size_t errlen)
{
    pthread_mutex_lock(&db->mu);
    int rc = sdb_follow(db, err, errlen);
    if (rc != SQLITE_OK) {
        pthread_mutex_unlock(&db->mu);
        return rc;
    }
    rc = sdb_step_reset(db->c.begin);
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
        sdb_write *w = &rows[i];
        sqlite3_stmt *st = w->insert ? db->c.ins : db->c.upd;
        rc = sqlite3_bind_blob(st, 1, w->guid, 16, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(st, 2, w->id, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK && w->insert)
            rc = sdb_bind_blob(st, 3, w->uuid, w->uuid_len);
        if (rc == SQLITE_OK)
            rc = sdb_bind_blob(st, 4, w->pk, w->pk_len);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(st, 5, w->ip, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sdb_step_reset(st);
        sqlite3_clear_bindings(st);
        w->result = 0;
        if (sdb_row_error(rc)) {
            w->result = -EINVAL;
            if (err[0] == '\0')
                snprintf(err, errlen, "%s", sqlite3_errmsg(db->c.db));
            rc = SQLITE_OK;
        }
    }
    if (rc == SQLITE_OK)
        rc = sdb_step_reset(db->c.commit);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db->c.db));
        if (!sqlite3_get_autocommit(db->c.db))
            sdb_step_reset(db->c.rollback);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int sdb_exec(sdb *db, const char *sql, char *err, size_t errlen)
{
    pthread_mutex_lock(&db->mu);
    int rc = sqlite3_exec(db->c.db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        snprintf(err, errlen, "%s", sqlite3_errmsg(db->c.db));
    pthread_mutex_unlock(&db->mu);
    return rc;
}
