/* write_queue.h — pending peer writes and the one worker thread that
 * applies them to the database in batches.
 *
 * The queue holds at most one pending write per guid (a later put replaces
 * the earlier one), bounded by a row count and a byte count. The worker
 * takes the oldest rows, writes them in one transaction, and on a
 * database error puts them back (merged with anything newer for the same
 * guid) and retries after a backoff that doubles from retry_min_ms to
 * retry_max_ms, so a full or read-only disk loses nothing that is queued.
 * Each failed attempt also halves the next batch (down to one row) and
 * each success doubles it back to batch_max, so a disk with room for a few
 * rows takes them.
 *
 * Thread use: wq_put, wq_pending, wq_flush, wq_set_params, wq_stats,
 * wq_take_done and wq_free are called on the loop thread; the worker only
 * calls the notify callback given to wq_new (which must be thread-safe:
 * it is api->async_send). */
#ifndef STORAGE_SQLITE_WRITE_QUEUE_H
#define STORAGE_SQLITE_WRITE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rdv/svc/storage.h>

#include "sqlite_db.h"

/* Largest fields a queued row may carry (bytes, id without its NUL). */
#define WQ_ID_MAX 1024
#define WQ_BLOB_MAX 1024
#define WQ_IP_MAX 255

typedef struct wq wq;

typedef struct wq_params {
    uint64_t max_pending;       /* rows */
    uint64_t max_pending_bytes; /* bytes of queued rows */
    uint64_t batch_max;         /* rows per transaction */
    uint64_t retry_min_ms, retry_max_ms;
} wq_params;

typedef struct wq_stats {
    uint64_t pending, pending_bytes;
    uint64_t batch;           /* rows the next attempt takes (< batch_max after failures) */
    uint64_t written;         /* rows written */
    uint64_t failed;          /* failed write attempts (batches) */
    uint64_t rejected;        /* rows the database refused (dropped) */
    uint64_t done_dropped;    /* completions not reported: list at its bound */
    uint64_t fail_streak;     /* consecutive failed attempts (0 = healthy) */
    int last_error;           /* SQLite code of the last failed attempt, 0 if none yet */
    uint64_t last_error_us;   /* wall clock of that attempt */
    uint64_t retry_in_ms;     /* time to the next retry while failing */
    char last_errmsg[256];
    char last_reject[256];    /* SQLite's message for the last refused row */
} wq_stats;

/* A write attempt's outcome for one row (completion list, oldest first). */
typedef struct wq_done {
    struct wq_done *next;
    int status;               /* 0 written, -errno still queued, -EINVAL refused and dropped */
    char id[];
} wq_done;

/* Start the worker. notify(ud) is called from the worker after every
 * attempt. Returns NULL with *err = -errno on failure. */
wq *wq_new(sdb *db, const wq_params *p, void (*notify)(void *ud), void *ud, int *err);
/* Stop and join the worker, then free every queued row (the caller has
 * flushed; the count of rows dropped is returned so it can be logged). */
size_t wq_free(wq *q);

/* Queue a copy of row. Returns 0, -ENOBUFS (at a bound, nothing queued),
 * -EINVAL (missing id or a field over its maximum) or -ENOMEM (out of
 * memory: nothing changed, a write already queued for the guid stays). */
int wq_put(wq *q, const rdv_peer_row *row, bool insert);
size_t wq_pending(wq *q);
/* Wake the worker for an immediate attempt (skipping the backoff once) and
 * wait until nothing is pending or ms pass: 0 or -ETIMEDOUT. */
int wq_flush(wq *q, uint64_t ms);
void wq_set_params(wq *q, const wq_params *p);
void wq_stats_get(wq *q, wq_stats *out);
/* Record completions only while someone listens (off by default). */
void wq_set_reporting(wq *q, bool on);
/* Detach the completions reported so far (caller frees each with free()). */
wq_done *wq_take_done(wq *q);

/* Test hook (unit suites; defined by RDV_UTHASH_HOOK_DEFINE in
 * write_queue.c, see rdv/uthash.h): uthash's allocations for the queue's
 * table fail from the nth on, until called with 0. */
void wq_test_hash_fail_from(unsigned long nth);
unsigned long wq_test_hash_allocs(void);

#endif
