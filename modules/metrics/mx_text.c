/* mx_text.c — the exposition: every counter and gauge of the process in
 * Prometheus' text format 0.0.4, then the process metrics Prometheus'
 * client libraries export (process_cpu_seconds_total, ...), so the usual
 * dashboards and alerts work unchanged. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "mx.h"

size_t mx_metric_name(const char *stat, bool counter, char *out, size_t len)
{
    static const char prefix[] = "rdvd_", total[] = "_total";
    size_t n = strlen(stat), end = sizeof prefix - 1 + n;
    bool add_total = counter && !(n >= sizeof total - 1 && strcmp(stat + n - (sizeof total - 1), total) == 0);
    if (add_total)
        end += sizeof total - 1;
    if (end + 1 > len)
        return 0;
    memcpy(out, prefix, sizeof prefix - 1);
    for (size_t i = 0; i < n; i++) {
        char c = stat[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        out[sizeof prefix - 1 + i] = ok ? c : '_';
    }
    if (add_total)
        memcpy(out + sizeof prefix - 1 + n, total, sizeof total - 1);
    out[end] = '\0';
    return end;
}

/* HELP text escapes only backslash and newline (format 0.0.4). */
static void mx_help(rdv_text *o, const char *name, const char *help)
{
    if (!help || !*help)
        return;
    rdv_text_printf(o, "# HELP %s ", name);
    for (const char *s = help; *s; s++) {
        size_t run = strcspn(s, "\\\n");
        if (run)
            rdv_text_printf(o, "%.*s", (int)run, s);
        s += run;
        if (!*s)
            break;
        rdv_text_printf(o, "%s", *s == '\\' ? "\\\\" : "\\n");
    }
    rdv_text_printf(o, "\n");
}

/* Names already written in this scrape, as 64-bit keyed hashes: two stats
 * may map to one name ("a-b.c" and "a_b.c"), and Prometheus refuses a
 * whole scrape that repeats a metric. */
typedef struct mx_seen {
    uint64_t h;
    UT_hash_handle hh;
} mx_seen;

typedef struct mx_walk {
    rdv_text *o;
    mx_seen *seen;
    uint64_t collisions;
    bool oom;
} mx_walk;

static uint64_t mx_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a: the names are ours, not an attacker's */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

static void mx_one(void *ud, const rdv_stat_view *st)
{
    mx_walk *w = ud;
    char name[200];
    if (!mx_metric_name(st->name, !st->gauge, name, sizeof name))
        return;
    uint64_t h = mx_hash(name);
    mx_seen *s = NULL;
    HASH_FIND(hh, w->seen, &h, sizeof h, s);
    if (s) {
        w->collisions++;
        return;
    }
    if (!(s = calloc(1, sizeof *s))) {
        w->oom = true;
        return;
    }
    s->h = h;
    HASH_ADD(hh, w->seen, h, sizeof s->h, s);
    if (!s->hh.tbl) {
        free(s);
        w->oom = true;
        return;
    }
    mx_help(w->o, name, st->help);
    rdv_text_printf(w->o, "# TYPE %s %s\n%s %llu\n", name, st->gauge ? "gauge" : "counter", name,
                  (unsigned long long)st->value);
}

/* /proc/self/statm: sizes in pages (a read from memory, never blocks). */
static bool mx_statm(uint64_t *vsz, uint64_t *rss)
{
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    unsigned long long v, r;
    if (sscanf(buf, "%llu %llu", &v, &r) != 2)
        return false;
    long page = sysconf(_SC_PAGESIZE);
    *vsz = v * (uint64_t)page, *rss = r * (uint64_t)page;
    return true;
}

double mx_proc_start_time(void)
{
    /* Field 22 of /proc/self/stat: start, in clock ticks after boot; boot
     * time: "btime" of /proc/stat. */
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return -1;
    unsigned long long ticks = 0;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    if (field != 22 || sscanf(p, "%llu", &ticks) != 1)
        return -1;
    if (!(f = fopen("/proc/stat", "re")))
        return -1;
    char line[256];
    unsigned long long btime = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    if (!btime || hz <= 0)
        return -1;
    return (double)btime + (double)ticks / (double)hz;
}

static void mx_process(rdv_text *o, const mx_proc *proc)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                     ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
        rdv_text_printf(o, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                         "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.6f\n", cpu);
    }
    uint64_t vsz, rss;
    if (mx_statm(&vsz, &rss))
        rdv_text_printf(o, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                         "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %llu\n"
                         "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                         "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n",
                      (unsigned long long)rss, (unsigned long long)vsz);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        rdv_text_printf(o, "# HELP process_max_fds Maximum number of open file descriptors.\n"
                         "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    if (proc->start_time_s > 0)
        rdv_text_printf(o, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                         "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
                      proc->start_time_s);
}

void mx_render(rdv_core *core, rdv_text *o, const mx_proc *proc, bool process_metrics, uint64_t *collisions)
{
    const rdv_core_api *api = core->api;
    rdv_text_printf(o, "# HELP rdvd_build_info rdvd's version and module ABI; always 1.\n"
                     "# TYPE rdvd_build_info gauge\nrdvd_build_info{version=\"%s\",abi=\"%u.%u\"} 1\n",
                  RDV_MX_VERSION, (unsigned)api->abi_major, (unsigned)api->abi_minor);
    mx_walk w = { .o = o };
    api->stats_each(core, mx_one, &w);
    mx_seen *s, *tmp;
    HASH_ITER(hh, w.seen, s, tmp) {
        HASH_DELETE(hh, w.seen, s);
        free(s);
    }
    if (w.oom) /* a metric could not be checked for a repeat: say so, not a partial page */
        o->cut = true;
    *collisions += w.collisions;
    if (process_metrics)
        mx_process(o, proc);
}
