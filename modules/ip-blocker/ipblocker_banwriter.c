/* ipblocker_banwriter.c — admin bans survive a restart: admin_ban_file is
 * read at init and rewritten after every `ban` / `unban` that changes the
 * set of admin bans.
 *
 * The loop thread never touches the file after init: it serialises the
 * bans (bounded by ban_max) and hands the text to one worker thread, which
 * writes a temporary file beside the target, fsyncs it, renames it over the
 * target and fsyncs the directory, so the file is always a whole old or a
 * whole new list. One text at a time: changes made while a write is in
 * flight make one more write of the state at its end. A failed write leaves
 * the bans in force, is logged and counted, and is retried every prune_s.
 * destroy() waits for the write in flight and writes what changed since. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ipblocker.h"

/* A failure line is repeated at most this often while the cause stays the
 * same (retries come every prune_s). */
#define IPB_SAVE_LOG_EVERY_MS 600000
/* Bad lines logged one by one at start; past this, one summary line. */
#define IPB_LOAD_BAD_LOGGED 10

/* The way out of every start refusal, after the fix of its own cause. */
static const char ipblocker_fix[] =
    "point ip-blocker.admin_ban_file elsewhere, or set it to \"\" to keep admin bans in memory only (they then end "
    "at a restart)";

/* ------------------------------------------------------------------ paths */
/* The directory of path, for access() and fsync: "." for a bare name. */
static char *ipblocker_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d)
        memcpy(d, path, n), d[n] = '\0';
    return d;
}

int ipblocker_banfile_check(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not hang --check */
    if (fd < 0 && errno != ENOENT) {
        snprintf(err, errlen,
                 "ip-blocker.admin_ban_file: cannot read %.256s: %s; it holds the admin bans, read at start; fix: "
                 "make it readable for rdvd, or %s",
                 path, strerror(errno), ipblocker_fix);
        return -EINVAL;
    }
    if (fd >= 0) {
        struct stat st;
        bool reg = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
        close(fd);
        if (!reg) {
            snprintf(err, errlen,
                     "ip-blocker.admin_ban_file: %.256s is not a regular file (a directory?); it holds the admin bans; "
                     "fix: remove what is there, or %s",
                     path, ipblocker_fix);
            return -EINVAL;
        }
    }
    /* The file is replaced by rename: what must be writable is its
     * directory. Found now rather than at the first ban, at 3 a.m. */
    char *dir = ipblocker_dir_of(path);
    if (!dir) {
        snprintf(err, errlen, "ip-blocker.admin_ban_file: out of memory");
        return -ENOMEM;
    }
    int r = access(dir, W_OK | X_OK) == 0 ? 0 : -errno;
    if (r < 0)
        snprintf(err, errlen,
                 "ip-blocker.admin_ban_file: cannot write in %.256s, the directory of %.256s (%s), so admin bans "
                 "could not be saved; fix: make it writable for rdvd, or %s",
                 dir, path, strerror(-r), ipblocker_fix);
    free(dir);
    return r < 0 ? -EINVAL : 0;
}

/* ------------------------------------------------------------------ loading */
typedef struct ipblocker_load {
    ipblocker *b;
    size_t loaded, bad, over;
} ipblocker_load;

static int ipblocker_load_line(void *ud, unsigned long line, const ipblocker_ban_key *key, const char *text)
{
    ipblocker_load *l = ud;
    ipblocker *b = l->b;
    if (!key) {
        if (l->bad++ < IPB_LOAD_BAD_LOGGED)
            RDV_WARN(b->core,
                     "%s:%lu: '%s' is not an IP address or CIDR: skipped (left out when rdvd next rewrites the file)",
                     b->saver.path, line, text);
        return 0;
    }
    bool added;
    int r = ipblocker_ban_add(b, key, IPB_BAN_ADMIN, &added);
    if (r == -ENOSPC)
        l->over++;
    else if (r == 0)
        l->loaded++;
    return r == -ENOSPC ? 0 : r;
}

static int ipblocker_banfile_load(ipblocker *b)
{
    const char *path = b->saver.path;
    FILE *f = fopen(path, "re");
    if (!f && errno == ENOENT) {
        RDV_INFO(b->core, "no admin bans yet (%s is written at the first ban)", path);
        return 0;
    }
    struct stat st;
    int r = !f ? -errno : fstat(fileno(f), &st) < 0 ? -errno : !S_ISREG(st.st_mode) ? -EISDIR : 0;
    ipblocker_load l = { .b = b };
    if (r == 0)
        r = ipblocker_banfile_parse(f, ipblocker_load_line, &l);
    if (f)
        fclose(f);
    if (r == -ENOMEM) {
        RDV_ERR(b->core, "out of memory loading the admin bans of %s", path);
        return r;
    }
    if (r < 0) { /* ipblocker_banfile_check() saw it readable: it changed since */
        RDV_ERR(b->core, "ip-blocker.admin_ban_file: cannot read %s: %s; fix: make it a file readable for rdvd, or %s",
                path, strerror(-r), ipblocker_fix);
        return r;
    }
    if (l.bad > IPB_LOAD_BAD_LOGGED)
        RDV_WARN(b->core, "%s: %zu more lines that are not an IP address or CIDR skipped", path,
                 l.bad - IPB_LOAD_BAD_LOGGED);
    if (l.over)
        RDV_WARN(b->core,
                 "%s: %zu admin bans past ip-blocker.ban_max = %lld (configured bans included) not loaded, the first "
                 "%zu kept; the next ban or unban rewrites the file without them: raise ban_max and restart first",
                 path, l.over, (long long)b->cfg->ban_max, l.loaded);
    *b->st.ban_file_skipped += l.bad + l.over;
    RDV_INFO(b->core, "%zu admin bans loaded from %s", l.loaded, path);
    return 0;
}

/* ------------------------------------------------------------------ the worker */
/* One whole write; -errno with *step naming the call that failed. */
static int ipblocker_write_file(const ipblocker_saver *s, const char *text, size_t len, const char **step)
{
    *step = "open";
    int fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -errno;
    int r = 0;
    for (size_t off = 0; off < len && r == 0;) {
        ssize_t k = write(fd, text + off, len - off);
        if (k > 0)
            off += (size_t)k;
        else if (k == 0) /* not for a regular file; never loop on it */
            *step = "write", r = -EIO;
        else if (errno != EINTR)
            *step = "write", r = -errno;
    }
    if (r == 0 && fsync(fd) < 0)
        *step = "fsync", r = -errno;
    if (close(fd) < 0 && r == 0)
        *step = "close", r = -errno;
    if (r == 0 && rename(s->tmp, s->path) < 0)
        *step = "rename", r = -errno;
    if (r < 0) {
        unlink(s->tmp);
        return r;
    }
    /* The rename is durable once the directory is on disk. EINVAL: a file
     * system that cannot sync directories (the rename still happened). */
    *step = "fsync of the directory";
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    if (fsync(dfd) < 0 && errno != EINVAL)
        r = -errno;
    close(dfd);
    return r;
}

static void *ipblocker_worker(void *arg)
{
    ipblocker *b = arg;
    ipblocker_saver *s = &b->saver;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->job && !s->stop)
            pthread_cond_wait(&s->wake, &s->mu);
        if (!s->job)
            break; /* stop, and nothing left to write */
        char *text = s->job;
        size_t len = s->job_len;
        s->job = NULL;
        pthread_mutex_unlock(&s->mu);
        const char *step;
        int r = ipblocker_write_file(s, text, len, &step);
        free(text);
        pthread_mutex_lock(&s->mu);
        s->result = r, s->result_step = step, s->done = true;
        pthread_mutex_unlock(&s->mu);
        b->api->async_send(s->async); /* the only api call safe off the loop */
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ------------------------------------------------------------------ the loop side */
/* The admin bans as the file's text (malloc'ed), NULL when out of memory. */
static char *ipblocker_serialise(ipblocker *b, size_t *len)
{
    size_t n = 0, i = 0;
    ipblocker_ban *ban, *tmp;
    HASH_ITER(hh, b->bans, ban, tmp)
        n += (ban->src & IPB_BAN_ADMIN) != 0;
    ipblocker_ban_key *keys = malloc((n ? n : 1) * sizeof *keys);
    size_t cap = ipblocker_banfile_size(n);
    char *text = malloc(cap);
    if (!keys || !text) {
        free(keys), free(text);
        return NULL;
    }
    HASH_ITER(hh, b->bans, ban, tmp)
        if (ban->src & IPB_BAN_ADMIN)
            keys[i++] = ban->key;
    *len = ipblocker_banfile_format(keys, n, text, cap);
    free(keys);
    return text;
}

static void ipblocker_save_failed(ipblocker *b, int err, const char *what)
{
    ipblocker_saver *s = &b->saver;
    uint64_t now = b->api->now_ms(b->core);
    (*b->st.ban_file_errors)++;
    if (err != s->last_err || now - s->last_log_ms >= IPB_SAVE_LOG_EVERY_MS) {
        RDV_LOG_RL(b->core, RDV_LOG_ERR,
                   "cannot save the admin bans to %s (%s: %s): they stay in force but a restart would lose the "
                   "changes; retried every %llds; fix the cause (disk space, rights on %s)",
                   s->path, what, strerror(-err), (long long)b->cfg->prune_s, s->dir);
        s->last_log_ms = now;
    }
    s->last_err = err;
}

/* Hand the current state to the worker (starting it the first time). */
static void ipblocker_save(ipblocker *b)
{
    ipblocker_saver *s = &b->saver;
    size_t len;
    char *text = ipblocker_serialise(b, &len);
    if (!text) {
        (*b->st.oom)++;
        ipblocker_save_failed(b, -ENOMEM, "serialising");
        return; /* still dirty: retried */
    }
    if (!s->started) {
        int r = rdv_thread_start(&s->thread, ipblocker_worker, b);
        if (r != 0) {
            free(text);
            ipblocker_save_failed(b, -r, "starting the writer thread");
            return;
        }
        s->started = true;
    }
    pthread_mutex_lock(&s->mu);
    s->job = text, s->job_len = len;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    s->busy = true, s->dirty = false;
}

/* The worker's outcome; true if it had one. */
static bool ipblocker_take_result(ipblocker *b)
{
    ipblocker_saver *s = &b->saver;
    pthread_mutex_lock(&s->mu);
    bool done = s->done;
    int r = s->result;
    const char *step = s->result_step;
    s->done = false;
    pthread_mutex_unlock(&s->mu);
    if (!done)
        return false;
    s->busy = false;
    if (r < 0) {
        ipblocker_save_failed(b, r, step);
        return true;
    }
    (*b->st.ban_file_writes)++;
    if (s->last_err)
        RDV_NOTICE(b->core, "admin bans saved to %s again", s->path);
    s->last_err = 0;
    return true;
}

static void ipblocker_on_saved(void *ud)
{
    ipblocker *b = ud;
    if (ipblocker_take_result(b) && b->saver.dirty)
        ipblocker_save(b);
}

void ipblocker_banfile_changed(ipblocker *b)
{
    ipblocker_saver *s = &b->saver;
    if (!s->path)
        return;
    s->dirty = true;
    if (!s->busy)
        ipblocker_save(b);
}

void ipblocker_banfile_retry(ipblocker *b)
{
    ipblocker_saver *s = &b->saver;
    if (s->path && !s->busy && (s->dirty || s->last_err))
        ipblocker_banfile_changed(b);
}

void ipblocker_banfile_note(ipblocker *b, rdv_buf *out)
{
    ipblocker_saver *s = &b->saver;
    if (s->last_err)
        b->api->out(out,
                    "note: the last save of the admin bans to %s failed (%s): a restart would lose changes; see the "
                    "log\n",
                    s->path, strerror(-s->last_err));
}

int ipblocker_banfile_open(ipblocker *b)
{
    ipblocker_saver *s = &b->saver;
    const char *path = b->cfg->admin_ban_file;
    if (!path[0])
        return 0;
    size_t n = strlen(path);
    s->path = strdup(path);
    s->tmp = malloc(n + sizeof ".tmp");
    s->dir = ipblocker_dir_of(path);
    if (!s->path || !s->tmp || !s->dir)
        return -ENOMEM;
    memcpy(s->tmp, path, n);
    memcpy(s->tmp + n, ".tmp", sizeof ".tmp");
    if (!(s->async = b->api->async_new(b->core, ipblocker_on_saved, b)))
        return -ENOMEM;
    pthread_mutex_init(&s->mu, NULL); /* with async: ipblocker_banfile_close() destroys both */
    pthread_cond_init(&s->wake, NULL);
    return ipblocker_banfile_load(b);
}

void ipblocker_banfile_close(ipblocker *b)
{
    ipblocker_saver *s = &b->saver;
    if (s->async) { /* set with the mutex and the condition variable */
        if (s->started) {
            pthread_mutex_lock(&s->mu);
            s->stop = true;
            pthread_cond_signal(&s->wake);
            pthread_mutex_unlock(&s->mu);
            pthread_join(s->thread, NULL); /* the write in flight completes */
            ipblocker_take_result(b);
        }
        /* A change made while that write ran, one that could not be handed
         * over, or a failed write: tried here, on the way out, where
         * blocking is fine. */
        bool unsaved = s->dirty || s->last_err;
        size_t len;
        char *text = unsaved ? ipblocker_serialise(b, &len) : NULL;
        if (text) {
            const char *step;
            int r = ipblocker_write_file(s, text, len, &step);
            free(text);
            if (r < 0)
                RDV_ERR(b->core, "cannot save the admin bans to %s at shutdown (%s: %s): the last changes are lost",
                        s->path, step, strerror(-r));
        } else if (unsaved) {
            RDV_ERR(b->core, "out of memory saving the admin bans to %s at shutdown: the last changes are lost",
                    s->path);
        }
        b->api->async_free(s->async);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->mu);
    }
    free(s->path), free(s->tmp), free(s->dir);
    memset(s, 0, sizeof *s);
}
