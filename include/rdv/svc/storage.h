/* rdv/svc/storage.h — the "storage" service: persistent peer records.
 *
 * Provided by storage-sqlite (upstream's db_v2.sqlite3, table `peer`,
 * rendezvous.md §13); any module may provide it instead. Writes never block
 * the loop: they are queued (coalesced per id, so the queue is bounded by the
 * number of peers) and applied by a worker; a failed write stays queued and
 * is retried, so a full or read-only disk loses nothing that is in memory. */
#ifndef RDV_SVC_STORAGE_H
#define RDV_SVC_STORAGE_H

#include "rdv/types.h"

#define RDV_SVC_STORAGE "storage"
/* 2: on_lost. Members are only ever appended; a consumer that uses one of
 * a later version asks for that version and falls back. */
#define RDV_SVC_STORAGE_VERSION 2

typedef struct rdv_peer_row {
    uint8_t guid[16];       /* primary key; random, chosen by the caller on insert */
    const char *id;
    const uint8_t *uuid;
    size_t uuid_len;
    const uint8_t *pk;
    size_t pk_len;
    const char *info_ip;    /* from info JSON {"ip": ...}; "" when absent or unparsable */
} rdv_peer_row;

/* Called for each stored row; everything is borrowed for the call. */
typedef void (*rdv_storage_row_fn)(void *ud, const rdv_peer_row *row);
/* Completion of a queued write, on the loop thread: 0 written; -EINVAL the
 * row was refused (e.g. its id is held by another guid's row) and dropped;
 * other <0 still queued for retry after an error (logged by the provider). */
typedef void (*rdv_storage_done_fn)(void *ud, const char *id, int status);

typedef struct rdv_storage_api {
    /* Read every stored row synchronously (call from init/start, before
     * serving). Returns the row count or -errno. */
    long (*load_all)(void *self, rdv_storage_row_fn fn, void *ud);
    /* Queue an insert (insert = true: new guid) or an update by guid of id,
     * pk and info (uuid never changes, §13.3). The row is copied. A later
     * put for the same guid replaces a pending one. -ENOBUFS if the queue
     * is at its bound: nothing is queued, the caller keeps its in-memory
     * state and puts it again later (the registry does on its sweep). */
    int (*put)(void *self, const rdv_peer_row *row, bool insert);
    /* Called after each write attempt (optional; NULL to clear). */
    void (*on_done)(void *self, rdv_storage_done_fn fn, void *ud);
    /* Writes waiting (including ones being retried). */
    size_t (*pending)(void *self);
    /* Block until the queue is empty or ms pass (shutdown); 0 if empty. */
    int (*flush)(void *self, uint64_t ms);
    /* Version 2. fn(ud) is called on the loop thread when the provider
     * lost rows it had stored: e.g. its file was deleted or replaced while
     * running and it opened a new one. The consumer then puts every row
     * again, as an insert (an insert of a guid that is stored updates it).
     * NULL fn clears. */
    void (*on_lost)(void *self, void (*fn)(void *ud), void *ud);
} rdv_storage_api;

#endif
