/* sqlite_db.h — upstream's peer database (rendezvous.md §13,
 * config-compat.md §6): open/create, schema, load, batched writes.
 * Every call takes the connection's own lock, so the loop thread (load at
 * start) and the write worker may share one handle. */
#ifndef STORAGE_SQLITE_DB_H
#define STORAGE_SQLITE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rdv/svc/storage.h>

typedef struct sdb sdb;

/* One row to write. result is set by sdb_apply: 0 written, -EINVAL
 * refused by the database for this row alone (constraint, trigger). */
typedef struct sdb_write {
    const uint8_t *guid; /* 16 bytes */
    const char *id;
    const uint8_t *uuid;
    size_t uuid_len;
    const uint8_t *pk;
    size_t pk_len;
    const char *ip;
    bool insert;
    int result;
} sdb_write;

/* Open (creating the file and the schema if missing) in WAL mode. A
 * "sqlite://" or "sqlite:" prefix (DB_URL style) is ignored. Returns 0, or
 * -errno with err holding one line that names the file and the fix. */
int sdb_open(const char *path, int busy_ms, sdb **out, char *err, size_t errlen);
void sdb_close(sdb *db);
const char *sdb_path(const sdb *db);

/* Rows in the peer table (-errno with err set on failure). */
long sdb_count(sdb *db, char *err, size_t errlen);

/* Call fn for every row. Rows whose guid is not 16 bytes cannot be updated
 * by guid and are skipped (counted in *skipped). Returns the row count
 * passed to fn, or -EIO with err set. */
long sdb_load_all(sdb *db, rdv_storage_row_fn fn, void *ud, uint64_t *skipped, char *err, size_t errlen);

/* Write rows in one transaction. Returns SQLITE_OK (each row's result
 * says whether it was written), or the SQLite error code that rolled the
 * whole batch back (nothing written; err holds SQLite's message). First,
 * if the file at the path is no longer the one open (deleted or replaced
 * while running), the path is opened again, so writes never go to a file
 * nobody will read (counted by sdb_reopened; the caller must put every
 * row again: the new file may hold none of them). */
int sdb_apply(sdb *db, sdb_write *rows, size_t n, char *err, size_t errlen);

/* The same look at the file as sdb_apply's, without writing (the writer
 * does it while idle, so a file deleted while nothing is written is
 * noticed too): 1 opened again, 0 unchanged, -1 opening it again failed. */
int sdb_check(sdb *db, char *err, size_t errlen);
/* Times the file was found replaced and opened again. */
uint64_t sdb_reopened(sdb *db);

/* Run SQL on the connection (tests inject faults with it). */
int sdb_exec(sdb *db, const char *sql, char *err, size_t errlen);

/* Advice for an operator, by SQLite result code. */
const char *sdb_fix_for(int rc);
/* errno equivalent of a SQLite result code (for rdv_storage_done_fn). */
int sdb_errno_for(int rc);

#endif
