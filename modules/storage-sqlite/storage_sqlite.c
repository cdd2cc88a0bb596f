/* storage_sqlite.c — the "storage" service on upstream's db_v2.sqlite3
 * (rendezvous.md §13, config-compat.md §6; contract in rdv/svc/storage.h).
 *
 * Reads (load_all) run on the loop thread at start, before serving. Writes
 * go to a coalescing queue applied by one worker thread in transactions
 * (write_queue.c); its outcome comes back to the loop through an async
 * handle, where completions are delivered and errors logged. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include <rdv/core.h>
#include <rdv/svc/storage.h>

#include "sqlite_db.h"
#include "write_queue.h"

/* A failure line is repeated at most this often while the cause stays the
 * same (the backoff already limits attempts to one per retry_max_ms). */
#define SS_FAIL_LOG_EVERY_MS 60000

typedef struct ss_cfg {
    char *path;
    int64_t max_pending;
    int64_t max_pending_bytes;
    int64_t batch_max;
    int64_t flush_ms;
    int64_t retry_min_ms;
    int64_t retry_max_ms;
    int64_t busy_ms;
} ss_cfg;

static const rdv_setting ss_settings[] = {
    RDV_SETTING_STRING(ss_cfg, path, "./db_v2.sqlite3", 0,
                       "database file (hbbs DB_URL), created with upstream's schema if missing"),
    RDV_SETTING_INT(ss_cfg, max_pending, 1000000, 1, 100000000, RDV_SETF_RELOAD,
                    "rows waiting to be written (one per peer at most); beyond it puts fail with -ENOBUFS"),
    RDV_SETTING_INT(ss_cfg, max_pending_bytes, 268435456, 65536, INT64_C(68719476736), RDV_SETF_RELOAD,
                    "memory held by rows waiting to be written, bytes; beyond it puts fail with -ENOBUFS"),
    RDV_SETTING_INT(ss_cfg, batch_max, 1000, 1, 100000, RDV_SETF_RELOAD,
                    "rows written per transaction; a failed attempt halves the next one, a success doubles it back"),
    RDV_SETTING_INT(ss_cfg, flush_ms, 5000, 0, 600000, RDV_SETF_RELOAD,
                    "at shutdown, wait at most this long for queued rows to be written"),
    RDV_SETTING_INT(ss_cfg, retry_min_ms, 1000, 1, 3600000, RDV_SETF_RELOAD,
                    "first retry delay after a failed write; doubles on each failure"),
    RDV_SETTING_INT(ss_cfg, retry_max_ms, 30000, 1, 86400000, RDV_SETF_RELOAD, "longest retry delay"),
    RDV_SETTING_INT(ss_cfg, busy_ms, 1000, 0, 60000, 0,
                    "how long one write waits for a lock held by another process before it counts as failed"),
    RDV_SETTING_END,
};

typedef struct ss {
    rdv_core *core;
    sdb *db;
    wq *q;
    rdv_async *async;
    uint64_t flush_ms;
    rdv_storage_done_fn done_fn;
    void *done_ud;
    void (*lost_fn)(void *ud);
    void *lost_ud;
    uint64_t seen_reopened;
    uint64_t *full, *invalid, *oom; /* counters (loop thread only) */
    uint64_t rows_at_start, loaded, skipped;
    /* failure logging, loop thread */
    uint64_t seen_failed, seen_rejected, last_fail_log_ms;
    int last_logged_rc;
    bool failing, stopped;
} ss;

static wq_params ss_params(const ss_cfg *cfg)
{
    return (wq_params){
        .max_pending = (uint64_t)cfg->max_pending,
        .max_pending_bytes = (uint64_t)cfg->max_pending_bytes,
        .batch_max = (uint64_t)cfg->batch_max,
        .retry_min_ms = (uint64_t)cfg->retry_min_ms,
        .retry_max_ms = (uint64_t)cfg->retry_max_ms,
    };
}

static const char *ss_code_name(int rc)
{
    static const struct { int rc; const char *name; } names[] = {
        { SQLITE_FULL, "SQLITE_FULL" },       { SQLITE_READONLY, "SQLITE_READONLY" },
        { SQLITE_BUSY, "SQLITE_BUSY" },       { SQLITE_LOCKED, "SQLITE_LOCKED" },
        { SQLITE_IOERR, "SQLITE_IOERR" },     { SQLITE_CANTOPEN, "SQLITE_CANTOPEN" },
        { SQLITE_CORRUPT, "SQLITE_CORRUPT" }, { SQLITE_NOTADB, "SQLITE_NOTADB" },
        { SQLITE_NOMEM, "SQLITE_NOMEM" },     { SQLITE_PERM, "SQLITE_PERM" },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((rc & 0xff) == names[i].rc)
            return names[i].name;
    return "SQLITE_ERROR";
}

/* ---- worker -> loop */
static void ss_notify(void *ud)
{
    ss *s = ud;
    s->core->api->async_send(s->async); /* the only call safe off the loop */
}

/* Log what the worker reported: a failure (rate-limited: first of a
 * streak, a new cause, or once a minute), the recovery, refused rows. */
static void ss_log_progress(ss *s)
{
    wq_stats st;
    wq_stats_get(s->q, &st);
    uint64_t now = s->core->api->now_ms(s->core);
    const char *path = sdb_path(s->db);
    if (st.failed > s->seen_failed && !st.fail_streak && !s->failing) {
        /* failed and recovered between two looks: nothing is waiting */
        RDV_LOG_RL(s->core, RDV_LOG_WARN,
                   "writes to %s failed %" PRIu64 " time(s) (%s: %s), then succeeded; nothing was lost", path,
                   st.failed - s->seen_failed, ss_code_name(st.last_error), st.last_errmsg);
        s->seen_failed = st.failed;
    }
    if (st.failed > s->seen_failed) {
        s->seen_failed = st.failed;
        if (!s->failing || st.last_error != s->last_logged_rc || now - s->last_fail_log_ms >= SS_FAIL_LOG_EVERY_MS) {
            RDV_LOG_RL(s->core, RDV_LOG_ERR,
                       "cannot write to %s: %s (%s); %" PRIu64 " writes kept in memory and retried in %" PRIu64
                       " ms (failed attempt %" PRIu64 "); fix: %s",
                       path, st.last_errmsg, ss_code_name(st.last_error), st.pending, st.retry_in_ms,
                       st.fail_streak, sdb_fix_for(st.last_error));
            s->last_fail_log_ms = now;
            s->last_logged_rc = st.last_error;
        }
        s->failing = true;
    }
    if (s->failing && st.fail_streak == 0) {
        s->failing = false;
        RDV_NOTICE(s->core, "writes to %s succeed again; %" PRIu64 " still queued", path, st.pending);
    }
    uint64_t reopened = sdb_reopened(s->db);
    if (reopened > s->seen_reopened) {
        s->seen_reopened = reopened;
        RDV_ERR(s->core,
                "%s was deleted or replaced while rdvd ran: the writes since the previous one went to the old file "
                "and are not in it; opened %s again and %s; fix: stop rdvd before deleting, moving or restoring "
                "the database",
                path, path, s->lost_fn ? "every peer is being stored again" : "no consumer stores its rows again");
        if (s->lost_fn)
            s->lost_fn(s->lost_ud);
    }
    if (st.rejected > s->seen_rejected) {
        RDV_LOG_RL(s->core, RDV_LOG_WARN, "%s refused %" PRIu64 " row(s), dropped: %s", path,
                   st.rejected - s->seen_rejected, st.last_reject);
        s->seen_rejected = st.rejected;
    }
}

static void ss_on_async(void *ud)
{
    ss *s = ud;
    for (wq_done *d = wq_take_done(s->q), *n; d; d = n) {
        n = d->next;
        if (s->done_fn)
            s->done_fn(s->done_ud, d->id, d->status);
        free(d);
    }
    ss_log_progress(s);
}

/* ---- the service */
static long ss_load_all(void *self, rdv_storage_row_fn fn, void *ud)
{
    ss *s = self;
    char err[1024];
    uint64_t skipped = 0;
    long n = sdb_load_all(s->db, fn, ud, &skipped, err, sizeof err);
    if (n < 0) {
        RDV_ERR(s->core, "%s", err);
        return n;
    }
    s->loaded = (uint64_t)n, s->skipped = skipped;
    RDV_INFO(s->core, "loaded %ld peers from %s", n, sdb_path(s->db));
    if (skipped)
        RDV_WARN(s->core, "%" PRIu64 " rows of %s skipped: their guid is not 16 bytes", skipped, sdb_path(s->db));
    return n;
}

static int ss_put(void *self, const rdv_peer_row *row, bool insert)
{
    ss *s = self;
    int r = wq_put(s->q, row, insert);
    if (r == -ENOBUFS) {
        (*s->full)++;
        RDV_LOG_RL(s->core, RDV_LOG_WARN,
                   "write queue full (%zu rows waiting): peer %.64s kept in memory only; fix: make %s writable "
                   "(see the errors above) or raise storage-sqlite.max_pending / max_pending_bytes",
                   wq_pending(s->q), row->id, sdb_path(s->db));
    } else if (r == -EINVAL) {
        (*s->invalid)++;
        RDV_LOG_RL(s->core, RDV_LOG_WARN, "peer row not stored: no id, or a field larger than the maximum");
    } else if (r == -ENOMEM) {
        (*s->oom)++;
        RDV_LOG_RL(s->core, RDV_LOG_WARN,
                   "out of memory: write of peer %.64s not queued (kept in memory, the registry puts it again); "
                   "fix: give rdvd more memory or lower storage-sqlite.max_pending_bytes",
                   row->id);
    }
    return r;
}

static void ss_on_done(void *self, rdv_storage_done_fn fn, void *ud)
{
    ss *s = self;
    s->done_fn = fn, s->done_ud = ud;
    wq_set_reporting(s->q, fn != NULL);
}

static void ss_on_lost(void *self, void (*fn)(void *ud), void *ud)
{
    ss *s = self;
    s->lost_fn = fn, s->lost_ud = ud;
}

static size_t ss_pending(void *self) { return wq_pending(((ss *)self)->q); }
static int ss_flush(void *self, uint64_t ms) { return wq_flush(((ss *)self)->q, ms); }

static const rdv_storage_api ss_api = {
    .load_all = ss_load_all,
    .put = ss_put,
    .on_done = ss_on_done,
    .pending = ss_pending,
    .flush = ss_flush,
    .on_lost = ss_on_lost,
};

/* ---- stats and admin */
#define SS_GAUGE(field)                                 \
    static uint64_t ss_g_##field(void *ud)              \
    {                                                   \
        wq_stats st;                                    \
        wq_stats_get(((ss *)ud)->q, &st);               \
        return (uint64_t)st.field;                      \
    }
SS_GAUGE(pending)
SS_GAUGE(pending_bytes)
SS_GAUGE(written)
SS_GAUGE(failed)
SS_GAUGE(rejected)
SS_GAUGE(done_dropped)
SS_GAUGE(fail_streak)
SS_GAUGE(batch)
static uint64_t ss_g_last_error(void *ud)
{
    wq_stats st;
    wq_stats_get(((ss *)ud)->q, &st);
    return st.fail_streak ? (uint64_t)st.last_error : 0;
}
static uint64_t ss_g_reopened(void *ud) { return sdb_reopened(((ss *)ud)->db); }
static uint64_t ss_g_rows_at_start(void *ud) { return ((ss *)ud)->rows_at_start; }
static uint64_t ss_g_loaded(void *ud) { return ((ss *)ud)->loaded; }

static void ss_cmd(void *ud, int argc, char **argv, rdv_buf *out)
{
    ss *s = ud;
    const rdv_core_api *api = s->core->api;
    (void)argc, (void)argv;
    wq_stats st;
    wq_stats_get(s->q, &st);
    api->out(out,
             "path %s\nrows_at_start %" PRIu64 "\nloaded %" PRIu64 "\npending %" PRIu64 "\npending_bytes %" PRIu64
             "\nbatch %" PRIu64 "\nwritten %" PRIu64 "\nfailed_attempts %" PRIu64 "\nrejected %" PRIu64
             "\nfull %" PRIu64 "\nreopened %" PRIu64 "\n",
             sdb_path(s->db), s->rows_at_start, s->loaded, st.pending, st.pending_bytes, st.batch, st.written,
             st.failed, st.rejected, *s->full, sdb_reopened(s->db));
    if (!st.last_error) {
        api->out(out, "last_error none\n");
        return;
    }
    char when[32];
    time_t t = (time_t)(st.last_error_us / 1000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    api->out(out, "last_error %s %s: %s\nstate %s\n", when, ss_code_name(st.last_error), st.last_errmsg,
             st.fail_streak ? "failing" : "recovered");
    if (st.fail_streak)
        api->out(out, "retry_in_ms %" PRIu64 "\nfix %s\n", st.retry_in_ms, sdb_fix_for(st.last_error));
}

/* ---- lifecycle */
static int ss_validate(const void *cfg_, char *err, size_t errlen)
{
    const ss_cfg *cfg = cfg_;
    if (!cfg->path[0]) {
        snprintf(err, errlen, "storage-sqlite.path must name the database file (default ./db_v2.sqlite3)");
        return -EINVAL;
    }
    if (cfg->retry_min_ms > cfg->retry_max_ms) {
        snprintf(err, errlen, "storage-sqlite.retry_min_ms (%" PRId64 ") must not exceed retry_max_ms (%" PRId64 ")",
                 cfg->retry_min_ms, cfg->retry_max_ms);
        return -EINVAL;
    }
    return 0;
}

static void ss_flush_before_close(ss *s, const char *when)
{
    size_t n = wq_pending(s->q);
    if (!n)
        return;
    if (wq_flush(s->q, s->flush_ms) == 0) {
        RDV_INFO(s->core, "%s: %zu queued writes saved to %s", when, n, sdb_path(s->db));
        return;
    }
    wq_stats st;
    wq_stats_get(s->q, &st);
    RDV_ERR(s->core, "%s: %" PRIu64 " queued writes could not be saved to %s within %" PRIu64 " ms (%s); fix: %s",
            when, st.pending, sdb_path(s->db), s->flush_ms, st.last_errmsg[0] ? st.last_errmsg : "still writing",
            sdb_fix_for(st.last_error));
}

static void ss_stop(void *state)
{
    ss *s = state;
    ss_flush_before_close(s, "shutdown");
    s->stopped = true; /* destroy need not wait a second time */
}

static void ss_destroy(void *state)
{
    ss *s = state;
    if (!s)
        return;
    if (s->q) {
        if (!s->stopped)
            ss_flush_before_close(s, "unload");
        size_t lost = wq_free(s->q);
        if (lost)
            RDV_ERR(s->core, "%zu peer writes were not saved to %s and are lost", lost, sdb_path(s->db));
    }
    if (s->async)
        s->core->api->async_free(s->async);
    sdb_close(s->db);
    free(s);
}

static int ss_init(rdv_core *core, const void *cfg_, void **state)
{
    const ss_cfg *cfg = cfg_;
    const rdv_core_api *api = core->api;
    ss *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->core = core;
    s->flush_ms = (uint64_t)cfg->flush_ms;
    char err[1024];
    int r = sdb_open(cfg->path, (int)cfg->busy_ms, &s->db, err, sizeof err);
    if (r < 0) {
        RDV_ERR(core, "%s", err);
        free(s);
        return r;
    }
    long rows = sdb_count(s->db, err, sizeof err);
    if (rows < 0) {
        RDV_ERR(core, "%s", err);
        ss_destroy(s);
        return (int)rows;
    }
    s->rows_at_start = (uint64_t)rows;
    s->full = api->counter(core, "full", "puts refused: write queue at max_pending / max_pending_bytes");
    s->invalid = api->counter(core, "invalid", "puts refused: no id or a field over its maximum");
    s->oom = api->counter(core, "oom", "puts refused: out of memory (nothing queued changed)");
    wq_params p = ss_params(cfg);
    if (!(s->async = api->async_new(core, ss_on_async, s)))
        r = -ENOMEM;
    else
        s->q = wq_new(s->db, &p, ss_notify, s, &r);
    if (!s->q) {
        RDV_ERR(core, "cannot start the database writer thread: %s", strerror(-r));
        ss_destroy(s);
        return r;
    }
    static const struct { const char *name; uint64_t (*fn)(void *); const char *help; } gauges[] = {
        { "pending", ss_g_pending, "rows waiting to be written (including ones being retried)" },
        { "pending_bytes", ss_g_pending_bytes, "memory held by rows waiting to be written" },
        { "written", ss_g_written, "rows written" },
        { "failed", ss_g_failed, "failed write attempts (rows kept and retried)" },
        { "fail_streak", ss_g_fail_streak, "consecutive failed write attempts (0 = healthy)" },
        { "batch", ss_g_batch, "rows the next write attempt takes (below batch_max after failures)" },
        { "last_error", ss_g_last_error, "SQLite result code while writes fail, else 0" },
        { "rejected", ss_g_rejected, "rows the database refused (constraint), dropped" },
        { "done_dropped", ss_g_done_dropped, "completions not delivered (list full during a flush)" },
        { "reopened", ss_g_reopened, "times the database file was found deleted or replaced and opened again" },
        { "rows_at_start", ss_g_rows_at_start, "rows in the peer table when the database was opened" },
        { "loaded", ss_g_loaded, "rows handed to the last load_all" },
    };
    for (size_t i = 0; r == 0 && i < sizeof gauges / sizeof gauges[0]; i++)
        r = api->gauge(core, gauges[i].name, gauges[i].fn, s, gauges[i].help);
    if (r == 0)
        r = api->admin_command(core, "storage", "storage  (database path, queue and write errors)", ss_cmd, s);
    if (r == 0)
        r = api->service_publish(core, RDV_SVC_STORAGE, RDV_SVC_STORAGE_VERSION, &ss_api, s);
    if (r < 0) {
        ss_destroy(s);
        return r;
    }
    RDV_NOTICE(core, "database %s open: %ld peers", sdb_path(s->db), rows);
    *state = s;
    return 0;
}

static int ss_reconfigure(void *state, const void *cfg_)
{
    ss *s = state;
    const ss_cfg *cfg = cfg_;
    wq_params p = ss_params(cfg);
    wq_set_params(s->q, &p);
    s->flush_ms = (uint64_t)cfg->flush_ms;
    return 0;
}

#ifdef STORAGE_SQLITE_TESTING
/* Test hook (unit suite only): run SQL on the writer's connection, e.g.
 * "pragma query_only = on" to make every write fail as on a read-only file,
 * even for root. */
int storage_sqlite_test_exec(void *state, const char *sql);
int storage_sqlite_test_exec(void *state, const char *sql)
{
    char err[256];
    return sdb_exec(((ss *)state)->db, sql, err, sizeof err);
}
#endif

static const rdv_dep ss_provides[] = {
    { .name = RDV_SVC_STORAGE, .version = RDV_SVC_STORAGE_VERSION },
    { .name = NULL },
};

static const rdv_module ss_module = {
    RDV_MODULE_HEAD("storage-sqlite", "1.0.0"),
    .description = "peer records in upstream's db_v2.sqlite3 (the \"storage\" service)",
    .settings = ss_settings,
    .config_size = sizeof(ss_cfg),
    .validate = ss_validate,
    .provides = ss_provides,
    .init = ss_init,
    .reconfigure = ss_reconfigure,
    .stop = ss_stop,
    .destroy = ss_destroy,
};
RDV_MODULE_EXPORT(ss_module)
