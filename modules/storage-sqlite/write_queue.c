/* write_queue.c — the coalescing write queue and its worker thread.
 *
 * Out of memory never exits the process and never loses a queued write:
 * - uthash runs in its non-fatal mode: an add that cannot get memory is
 *   rolled back by uthash and leaves hh.tbl NULL (uthash user guide, "Out
 *   of memory"); wq_put then refuses the row with -ENOMEM.
 * - The hashed node of a guid is stable: coalescing swaps its payload
 *   pointer (no hash operation, so no allocation that could fail after the
 *   older write was unhooked), and a node stays hashed while its write is
 *   in flight, so putting a failed batch back (wq_requeue, worker thread)
 *   needs no hash add and no allocation at all. The only hash add is the
 *   first put of a guid, which can simply be refused. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#define RDV_UTHASH_PREFIX wq
#include <rdv/core.h>
#include <rdv/uthash.h>
#include <utlist.h>

#include "write_queue.h"

/* One write for a guid; the strings and blobs live in data[]. Not
 * changed while in flight: the worker reads it without the lock. */
typedef struct wq_payload {
    struct wq_payload *uuid_from; /* owns the bytes uuid points to when they came from an older write */
    size_t size;                  /* accounted bytes, uuid_from's included */
    bool insert;
    char *id, *ip;
    const uint8_t *uuid;
    uint8_t *pk;
    size_t uuid_len, pk_len;
    char data[];
} wq_payload;

/* A guid with a write queued and/or in flight: hashed in map from its
 * first put until nothing is left for it. */
typedef struct wq_entry {
    UT_hash_handle hh;                /* map, by guid */
    struct wq_entry *prev, *next;     /* fifo, oldest first: while pl is set */
    struct wq_entry *fprev, *fnext;   /* the worker's batch: while flight is set */
    uint8_t guid[16];
    wq_payload *pl;                   /* the write waiting in fifo, or NULL */
    wq_payload *flight;               /* the write the worker holds, or NULL */
} wq_entry;

struct wq {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* worker: work, stop, flush */
    pthread_cond_t idle; /* flushers: an attempt finished */
    pthread_t thread;
    bool thread_started;
    sdb *db;
    void (*notify)(void *ud);
    void *ud;
    wq_params p;

    wq_entry *map;  /* every entry, by guid */
    wq_entry *fifo; /* entries with a queued write, oldest first */
    size_t n_queued; /* writes in fifo */
    size_t n_flight; /* writes taken by the worker for the current attempt */
    uint64_t bytes;  /* queued + in flight */
    bool stop, retry_now, reporting;
    uint64_t backoff_ms, retry_at_ms;
    /* Rows the next attempt takes: halved by each failed attempt, doubled
     * back by each success. A disk that has room for fewer rows than
     * batch_max still takes them (a transaction is all or nothing), and a
     * batch that keeps failing holds the lock for less. */
    uint64_t batch;

    wq_done *done, *done_tail;
    size_t n_done;
    wq_stats st; /* counters and last error; pending fields computed on read */
};

#define WQ_FILE_CHECK_MS 2000

/* ---- uthash's allocator and its test hook (rdv/uthash.h) */
RDV_UTHASH_HOOK_DEFINE()

/* ---- clocks (the worker cannot use the core's: it is not thread-safe) */
static uint64_t wq_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wq_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void wq_wait_until(pthread_cond_t *c, pthread_mutex_t *mu, uint64_t at_ms)
{
    struct timespec ts = { .tv_sec = (time_t)(at_ms / 1000), .tv_nsec = (long)(at_ms % 1000) * 1000000L };
    pthread_cond_timedwait(c, mu, &ts);
}

/* ---- payloads and entries */
static void wq_payload_free(wq_payload *pl)
{
    if (pl)
        free(pl->uuid_from);
    free(pl);
}

/* A copy of one write; NULL when out of memory. size charges one entry
 * too, as a queued row costs one. */
static wq_payload *wq_payload_new(const char *id, const uint8_t *uuid, size_t uuid_len, const uint8_t *pk,
                                  size_t pk_len, const char *ip, bool insert)
{
    size_t idl = strlen(id), ipl = strlen(ip);
    size_t len = sizeof(wq_payload) + idl + 1 + ipl + 1 + uuid_len + pk_len;
    wq_payload *pl = malloc(len);
    if (!pl)
        return NULL;
    memset(pl, 0, sizeof *pl);
    pl->insert = insert;
    pl->size = sizeof(wq_entry) + len;
    char *p = pl->data;
    pl->id = memcpy(p, id, idl + 1), p += idl + 1;
    pl->ip = memcpy(p, ip, ipl + 1), p += ipl + 1;
    pl->uuid = (uint8_t *)p, pl->uuid_len = uuid_len;
    if (uuid_len)
        memcpy(p, uuid, uuid_len), p += uuid_len;
    pl->pk = (uint8_t *)p, pl->pk_len = pk_len;
    if (pk_len)
        memcpy(p, pk, pk_len);
    return pl;
}

/* newer's fields win; an insert stays an insert, and keeps its uuid if
 * the newer write (an update) carries none. */
static wq_payload *wq_payload_merge(const wq_payload *older, const char *id, const uint8_t *uuid, size_t uuid_len,
                                    const uint8_t *pk, size_t pk_len, const char *ip, bool insert)
{
    if (!uuid_len && older)
        uuid = older->uuid, uuid_len = older->uuid_len;
    return wq_payload_new(id, uuid, uuid_len, pk, pk_len, ip, insert || (older && older->insert));
}

static wq_entry *wq_find(wq *q, const uint8_t guid[16])
{
    wq_entry *e = NULL;
    HASH_FIND(hh, q->map, guid, 16, e);
    return e;
}

/* Caller holds mu. Completion for one row, dropped (and counted) once the
 * list is at its bound: the loop thread may be blocked in a flush. */
static void wq_report(wq *q, const char *id, int status)
{
    if (!q->reporting)
        return;
    if (q->n_done >= q->p.max_pending) {
        q->st.done_dropped++;
        return;
    }
    size_t l = strlen(id);
    wq_done *d = malloc(sizeof *d + l + 1);
    if (!d) {
        q->st.done_dropped++;
        return;
    }
    d->next = NULL;
    d->status = status;
    memcpy(d->id, id, l + 1);
    if (q->done_tail)
        q->done_tail->next = d;
    else
        q->done = d;
    q->done_tail = d;
    q->n_done++;
}

/* Caller holds mu (worker thread). The write of a failed attempt goes
 * back, ahead of rows queued after it, unless a newer write for its guid
 * came meanwhile: then that one absorbs it. Allocates nothing, so it
 * cannot fail: the entry is still hashed, and a merge that needs the older
 * uuid keeps the older payload alive as the holder of those bytes. */
static void wq_requeue(wq *q, wq_entry *e)
{
    wq_payload *f = e->flight, *newer = e->pl;
    e->flight = NULL;
    if (!newer) {
        e->pl = f;
        DL_PREPEND(q->fifo, e);
        q->n_queued++;
        return;
    }
    newer->insert = newer->insert || f->insert;
    if (!newer->uuid_len && f->uuid_len) {
        newer->uuid = f->uuid, newer->uuid_len = f->uuid_len;
        wq_payload *holder = f;
        if (f->uuid_from) { /* keep the bytes' owner itself: holders never chain */
            holder = f->uuid_from;
            f->uuid_from = NULL;
            f->size -= holder->size;
            q->bytes -= f->size;
            free(f);
        }
        newer->uuid_from = holder;
        newer->size += holder->size;
        return;
    }
    q->bytes -= f->size;
    wq_payload_free(f);
}

/* ---- the worker */
static void wq_attempt(wq *q)
{
    wq_entry *flight = NULL, *e, *tmp;
    size_t k = 0;
    if (!q->batch || q->batch > q->p.batch_max)
        q->batch = q->p.batch_max;
    while (q->fifo && k < q->batch) {
        e = q->fifo;
        DL_DELETE(q->fifo, e);
        e->flight = e->pl;
        e->pl = NULL;
        q->n_queued--;
        DL_APPEND2(flight, e, fprev, fnext);
        k++;
    }
    q->n_flight = k;
    pthread_mutex_unlock(&q->mu);

    /* Unlocked: only this thread touches e->flight and the batch links;
     * the loop thread may meanwhile hash new entries or set e->pl. */
    char err[256] = "";
    int rc = SQLITE_NOMEM;
    sdb_write *rows = calloc(k, sizeof *rows);
    if (rows) {
        size_t i = 0;
        DL_FOREACH2(flight, e, fnext) {
            const wq_payload *f = e->flight;
            rows[i++] = (sdb_write){ .guid = e->guid, .id = f->id, .uuid = f->uuid, .uuid_len = f->uuid_len,
                                     .pk = f->pk, .pk_len = f->pk_len, .ip = f->ip, .insert = f->insert };
        }
        rc = sdb_apply(q->db, rows, k, err, sizeof err);
    } else {
        snprintf(err, sizeof err, "out of memory for a batch of %zu rows", k);
    }

    pthread_mutex_lock(&q->mu);
    if (rc == SQLITE_OK) {
        size_t i = 0;
        DL_FOREACH_SAFE2(flight, e, tmp, fnext) {
            wq_payload *f = e->flight;
            int r = rows[i++].result;
            wq_report(q, f->id, r);
            if (r == 0) {
                q->st.written++;
            } else {
                q->st.rejected++;
                /* the id first: SQLite's message may be long */
                snprintf(q->st.last_reject, sizeof q->st.last_reject, "id %.64s: %.150s", f->id, err);
            }
            DL_DELETE2(flight, e, fprev, fnext);
            q->bytes -= f->size;
            wq_payload_free(f);
            e->flight = NULL;
            if (!e->pl) { /* nothing newer for this guid */
                HASH_DELETE(hh, q->map, e);
                free(e);
            }
        }
        q->st.fail_streak = 0;
        q->backoff_ms = 0;
        q->batch = q->batch > q->p.batch_max / 2 ? q->p.batch_max : q->batch * 2;
    } else {
        q->st.failed++;
        q->st.fail_streak++;
        q->st.last_error = rc;
        q->st.last_error_us = wq_wall_us();
        snprintf(q->st.last_errmsg, sizeof q->st.last_errmsg, "%s", err);
        q->backoff_ms = q->backoff_ms ? q->backoff_ms * 2 : q->p.retry_min_ms;
        if (q->backoff_ms > q->p.retry_max_ms)
            q->backoff_ms = q->p.retry_max_ms;
        q->retry_at_ms = wq_mono_ms() + q->backoff_ms;
        q->batch = k > 1 ? k / 2 : 1;
        int status = sdb_errno_for(rc);
        DL_FOREACH2(flight, e, fnext) {
            wq_report(q, e->flight->id, status);
        }
        /* back to the front, in their original order */
        while (flight) {
            e = flight->fprev; /* the tail */
            DL_DELETE2(flight, e, fprev, fnext);
            wq_requeue(q, e);
        }
    }
    free(rows);
    q->n_flight = 0;
    pthread_cond_broadcast(&q->idle);
}

/* Caller holds mu. While nothing is written, look at the file every
 * WQ_FILE_CHECK_MS: a database deleted while rdvd is idle would otherwise
 * be noticed only at the next write, and a restart before it would find
 * none of the rows. */
static void wq_idle(wq *q, uint64_t *next_check_ms)
{
    uint64_t now = wq_mono_ms();
    if (now < *next_check_ms) {
        wq_wait_until(&q->wake, &q->mu, *next_check_ms);
        return;
    }
    *next_check_ms = now + WQ_FILE_CHECK_MS;
    pthread_mutex_unlock(&q->mu);
    char err[256];
    bool reopened = sdb_check(q->db, err, sizeof err) == 1;
    if (reopened)
        q->notify(q->ud);
    pthread_mutex_lock(&q->mu);
}

static void *wq_main(void *arg)
{
    wq *q = arg;
    uint64_t next_check_ms = wq_mono_ms() + WQ_FILE_CHECK_MS;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->stop) {
            if (q->fifo) {
                if (q->retry_now || !q->st.fail_streak || wq_mono_ms() >= q->retry_at_ms)
                    break;
                wq_wait_until(&q->wake, &q->mu, q->retry_at_ms);
            } else {
                wq_idle(q, &next_check_ms);
            }
        }
        if (q->stop)
            break;
        q->retry_now = false;
        wq_attempt(q);
        pthread_mutex_unlock(&q->mu);
        q->notify(q->ud);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* ---- loop-thread side */
wq *wq_new(sdb *db, const wq_params *p, void (*notify)(void *ud), void *ud, int *err)
{
    wq *q = calloc(1, sizeof *q);
    if (!q) {
        *err = -ENOMEM;
        return NULL;
    }
    q->db = db, q->notify = notify, q->ud = ud, q->p = *p;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->wake, &ca);
    pthread_cond_init(&q->idle, &ca);
    pthread_condattr_destroy(&ca);
    int r = rdv_thread_start(&q->thread, wq_main, q);
    if (r != 0) {
        *err = -r;
        wq_free(q);
        return NULL;
    }
    q->thread_started = true;
    return q;
}

size_t wq_free(wq *q)
{
    if (!q)
        return 0;
    if (q->thread_started) {
        pthread_mutex_lock(&q->mu);
        q->stop = true;
        pthread_cond_signal(&q->wake);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thread, NULL);
    }
    size_t dropped = q->n_queued; /* the worker is gone: nothing in flight */
    wq_entry *e, *tmp;
    HASH_ITER(hh, q->map, e, tmp) {
        HASH_DELETE(hh, q->map, e);
        wq_payload_free(e->pl);
        wq_payload_free(e->flight);
        free(e);
    }
    for (wq_done *d = q->done, *n; d; d = n) {
        n = d->next;
        free(d);
    }
    pthread_cond_destroy(&q->wake);
    pthread_cond_destroy(&q->idle);
    pthread_mutex_destroy(&q->mu);
    free(q);
    return dropped;
}

int wq_put(wq *q, const rdv_peer_row *row, bool insert)
{
    const char *ip = row && row->info_ip ? row->info_ip : "";
    if (!row || !row->id || strlen(row->id) > WQ_ID_MAX || strlen(ip) > WQ_IP_MAX || row->uuid_len > WQ_BLOB_MAX ||
        row->pk_len > WQ_BLOB_MAX || (row->uuid_len && !row->uuid) || (row->pk_len && !row->pk))
        return -EINVAL;
    pthread_mutex_lock(&q->mu);
    wq_entry *e = wq_find(q, row->guid);
    /* A write in flight is not merged into (the worker reads it): this one
     * queues behind it, as a new row, and absorbs it if the attempt fails. */
    wq_payload *old = e ? e->pl : NULL;
    int r = 0;
    wq_payload *pl = wq_payload_merge(old, row->id, row->uuid, row->uuid_len, row->pk, row->pk_len, ip, insert);
    if (!pl) {
        r = -ENOMEM;
    } else if ((!old && q->n_queued + q->n_flight >= q->p.max_pending) ||
               q->bytes - (old ? old->size : 0) + pl->size > q->p.max_pending_bytes) {
        r = -ENOBUFS;
    } else if (old) {
        /* coalesce: swap the payload, the hashed entry and its place stay */
        e->pl = pl;
        q->bytes += pl->size;
        q->bytes -= old->size;
        wq_payload_free(old);
        pl = NULL;
    } else {
        if (!e) {
            if (!(e = calloc(1, sizeof *e))) {
                r = -ENOMEM;
                goto out;
            }
            memcpy(e->guid, row->guid, 16);
            HASH_ADD(hh, q->map, guid, 16, e);
            if (!e->hh.tbl) { /* uthash rolled the add back */
                free(e);
                r = -ENOMEM;
                goto out;
            }
        }
        e->pl = pl;
        pl = NULL;
        DL_APPEND(q->fifo, e);
        q->n_queued++;
        q->bytes += e->pl->size;
        pthread_cond_signal(&q->wake);
    }
out:
    pthread_mutex_unlock(&q->mu);
    wq_payload_free(pl); /* not queued */
    return r;
}

size_t wq_pending(wq *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->n_queued + q->n_flight;
    pthread_mutex_unlock(&q->mu);
    return n;
}

int wq_flush(wq *q, uint64_t ms)
{
    pthread_mutex_lock(&q->mu);
    uint64_t deadline = wq_mono_ms() + ms;
    q->retry_now = true;
    pthread_cond_signal(&q->wake);
    while (q->n_queued + q->n_flight > 0 && wq_mono_ms() < deadline)
        wq_wait_until(&q->idle, &q->mu, deadline);
    int r = q->n_queued + q->n_flight ? -ETIMEDOUT : 0;
    if (!r)
        q->retry_now = false; /* nothing left: a later failure backs off as usual */
    pthread_mutex_unlock(&q->mu);
    return r;
}

void wq_set_params(wq *q, const wq_params *p)
{
    pthread_mutex_lock(&q->mu);
    q->p = *p;
    if (q->backoff_ms > p->retry_max_ms)
        q->backoff_ms = p->retry_max_ms;
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->mu);
}

void wq_stats_get(wq *q, wq_stats *out)
{
    pthread_mutex_lock(&q->mu);
    *out = q->st;
    out->pending = q->n_queued + q->n_flight;
    out->pending_bytes = q->bytes;
    out->batch = q->batch && q->batch < q->p.batch_max ? q->batch : q->p.batch_max;
    uint64_t now = wq_mono_ms();
    out->retry_in_ms = q->st.fail_streak && q->fifo && q->retry_at_ms > now ? q->retry_at_ms - now : 0;
    pthread_mutex_unlock(&q->mu);
}

void wq_set_reporting(wq *q, bool on)
{
    pthread_mutex_lock(&q->mu);
    q->reporting = on;
    pthread_mutex_unlock(&q->mu);
}

wq_done *wq_take_done(wq *q)
{
    pthread_mutex_lock(&q->mu);
    wq_done *d = q->done;
    q->done = q->done_tail = NULL;
    q->n_done = 0;
    pthread_mutex_unlock(&q->mu);
    return d;
}
