/* write_queue.c — the coalescing write queue and its worker thread. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>
#include <uthash.h>
#include <utlist.h>

#include "write_queue.h"

/* One pending write; the strings and blobs live in data[]. */
typedef struct wq_entry {
    UT_hash_handle hh; /* by guid */
    struct wq_entry *prev, *next; /* oldest first */
    uint8_t guid[16];
    bool insert;
    size_t size; /* accounted bytes */
    char *id, *ip;
    uint8_t *uuid, *pk;
    size_t uuid_len, pk_len;
    char data[];
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

    wq_entry *map;  /* pending, by guid */
    wq_entry *fifo; /* pending, oldest first */
    size_t n_flight; /* rows taken by the worker for the current attempt */
    uint64_t bytes;  /* pending + in flight */
    bool stop, retry_now, reporting;
    uint64_t backoff_ms, retry_at_ms;

    wq_done *done, *done_tail;
    size_t n_done;
    wq_stats st; /* counters and last error; pending fields computed on read */
};

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

/* ---- entries */
static wq_entry *wq_entry_new(const uint8_t guid[16], const char *id, const uint8_t *uuid, size_t uuid_len,
                              const uint8_t *pk, size_t pk_len, const char *ip, bool insert)
{
    size_t idl = strlen(id), ipl = strlen(ip);
    size_t size = sizeof(wq_entry) + idl + 1 + ipl + 1 + uuid_len + pk_len;
    wq_entry *e = malloc(size);
    if (!e)
        return NULL;
    memset(e, 0, sizeof *e);
    memcpy(e->guid, guid, 16);
    e->insert = insert;
    e->size = size;
    char *p = e->data;
    e->id = memcpy(p, id, idl + 1), p += idl + 1;
    e->ip = memcpy(p, ip, ipl + 1), p += ipl + 1;
    e->uuid = (uint8_t *)p, e->uuid_len = uuid_len;
    if (uuid_len)
        memcpy(p, uuid, uuid_len), p += uuid_len;
    e->pk = (uint8_t *)p, e->pk_len = pk_len;
    if (pk_len)
        memcpy(p, pk, pk_len);
    return e;
}

/* newer's fields win; an insert stays an insert, and keeps its uuid if
 * the newer write (an update) carries none. */
static wq_entry *wq_entry_merge(const wq_entry *older, const uint8_t guid[16], const char *id, const uint8_t *uuid,
                                size_t uuid_len, const uint8_t *pk, size_t pk_len, const char *ip, bool insert)
{
    if (!uuid_len && older)
        uuid = older->uuid, uuid_len = older->uuid_len;
    return wq_entry_new(guid, id, uuid, uuid_len, pk, pk_len, ip, insert || (older && older->insert));
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

/* Caller holds mu: a row from a failed attempt goes back, ahead of rows
 * queued after it, unless a newer write for its guid is already pending. */
static void wq_requeue(wq *q, wq_entry *e)
{
    wq_entry *newer = NULL;
    HASH_FIND(hh, q->map, e->guid, 16, newer);
    if (!newer) {
        HASH_ADD(hh, q->map, guid, 16, e);
        DL_PREPEND(q->fifo, e);
        return;
    }
    if (!newer->uuid_len && e->uuid_len) {
        wq_entry *m = wq_entry_merge(e, newer->guid, newer->id, NULL, 0, newer->pk, newer->pk_len, newer->ip,
                                     newer->insert);
        if (m) {
            HASH_REPLACE(hh, q->map, guid, 16, m, newer);
            DL_REPLACE_ELEM(q->fifo, newer, m);
            q->bytes += m->size;
            q->bytes -= newer->size;
            free(newer);
            newer = m;
        }
    }
    newer->insert = newer->insert || e->insert;
    q->bytes -= e->size;
    free(e);
}

/* ---- the worker */
static void wq_attempt(wq *q)
{
    wq_entry *flight = NULL, *e, *tmp;
    size_t k = 0;
    while (q->fifo && k < q->p.batch_max) {
        e = q->fifo;
        DL_DELETE(q->fifo, e);
        HASH_DELETE(hh, q->map, e);
        DL_APPEND(flight, e);
        k++;
    }
    q->n_flight = k;
    pthread_mutex_unlock(&q->mu);

    char err[256] = "";
    int rc = SQLITE_NOMEM;
    sdb_write *rows = calloc(k, sizeof *rows);
    if (rows) {
        size_t i = 0;
        DL_FOREACH(flight, e) {
            rows[i++] = (sdb_write){ .guid = e->guid, .id = e->id, .uuid = e->uuid, .uuid_len = e->uuid_len,
                                     .pk = e->pk, .pk_len = e->pk_len, .ip = e->ip, .insert = e->insert };
        }
        rc = sdb_apply(q->db, rows, k, err, sizeof err);
    } else {
        snprintf(err, sizeof err, "out of memory for a batch of %zu rows", k);
    }

    pthread_mutex_lock(&q->mu);
    if (rc == SQLITE_OK) {
        size_t i = 0;
        DL_FOREACH_SAFE(flight, e, tmp) {
            int r = rows[i++].result;
            wq_report(q, e->id, r);
            if (r == 0) {
                q->st.written++;
            } else {
                q->st.rejected++;
                /* the id first: SQLite's message may be long */
                snprintf(q->st.last_reject, sizeof q->st.last_reject, "id %.64s: %.150s", e->id, err);
            }
            DL_DELETE(flight, e);
            q->bytes -= e->size;
            free(e);
        }
        q->st.fail_streak = 0;
        q->backoff_ms = 0;
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
        int status = sdb_errno_for(rc);
        DL_FOREACH(flight, e) {
            wq_report(q, e->id, status);
        }
        /* back to the front, in their original order */
        while (flight) {
            e = flight->prev; /* the tail */
            DL_DELETE(flight, e);
            wq_requeue(q, e);
        }
    }
    free(rows);
    q->n_flight = 0;
    pthread_cond_broadcast(&q->idle);
}

static void *wq_main(void *arg)
{
    wq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->stop) {
            if (q->fifo) {
                if (q->retry_now || !q->st.fail_streak || wq_mono_ms() >= q->retry_at_ms)
                    break;
                wq_wait_until(&q->wake, &q->mu, q->retry_at_ms);
            } else {
                pthread_cond_wait(&q->wake, &q->mu);
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
    int r = pthread_create(&q->thread, NULL, wq_main, q);
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
    size_t dropped = HASH_COUNT(q->map);
    wq_entry *e, *tmp;
    HASH_ITER(hh, q->map, e, tmp) {
        HASH_DELETE(hh, q->map, e);
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
    wq_entry *old = NULL;
    HASH_FIND(hh, q->map, row->guid, 16, old);
    int r = 0;
    wq_entry *e = wq_entry_merge(old, row->guid, row->id, row->uuid, row->uuid_len, row->pk, row->pk_len, ip, insert);
    if (!e) {
        r = -ENOMEM;
    } else if ((!old && HASH_COUNT(q->map) + q->n_flight >= q->p.max_pending) ||
               q->bytes - (old ? old->size : 0) + e->size > q->p.max_pending_bytes) {
        free(e);
        r = -ENOBUFS;
    } else if (old) {
        HASH_REPLACE(hh, q->map, guid, 16, e, old);
        DL_REPLACE_ELEM(q->fifo, old, e);
        q->bytes += e->size;
        q->bytes -= old->size;
        free(old);
    } else {
        HASH_ADD(hh, q->map, guid, 16, e);
        DL_APPEND(q->fifo, e);
        q->bytes += e->size;
        pthread_cond_signal(&q->wake);
    }
    pthread_mutex_unlock(&q->mu);
    return r;
}

size_t wq_pending(wq *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = HASH_COUNT(q->map) + q->n_flight;
    pthread_mutex_unlock(&q->mu);
    return n;
}

int wq_flush(wq *q, uint64_t ms)
{
    pthread_mutex_lock(&q->mu);
    uint64_t deadline = wq_mono_ms() + ms;
    q->retry_now = true;
    pthread_cond_signal(&q->wake);
    while (HASH_COUNT(q->map) + q->n_flight > 0 && wq_mono_ms() < deadline)
        wq_wait_until(&q->idle, &q->mu, deadline);
    int r = HASH_COUNT(q->map) + q->n_flight ? -ETIMEDOUT : 0;
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
    out->pending = HASH_COUNT(q->map) + q->n_flight;
    out->pending_bytes = q->bytes;
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
