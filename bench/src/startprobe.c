/* bench/src/startprobe.c — start-up time and idle memory of a UDP server.
 *
 * For each run: fork + exec the server (arguments after "--", working
 * directory -w), and from that instant send a RegisterPeer datagram every
 * 100 µs to -t until the first answer arrives: "ready" is the time from the
 * fork to that answer. Then leave the server idle for -i ms, read its RSS
 * from /proc, stop it with SIGTERM and require a clean exit (status 0). */
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* "Key: N kB" from /proc/PID/<file> (status, smaps_rollup). */
static long proc_kb(pid_t pid, const char *file, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    FILE *f = fopen(path, "r");
    long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':')
            v = strtol(line + kl + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static long status_kb(pid_t pid, const char *key) { return proc_kb(pid, "status", key); }

/* Pages no other process shares (USS): what this process adds to a machine
 * that already runs the same shared libraries. */
static long uss_kb(pid_t pid)
{
    return proc_kb(pid, "smaps_rollup", "Private_Clean") + proc_kb(pid, "smaps_rollup", "Private_Dirty");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* SIGTERM, then wait up to 10 s; returns the exit status or -1. */
static int stop_child(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        bn_sleep_ns(10000000ull);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

int main(int argc, char **argv)
{
    struct sockaddr_in target;
    bool have_t = false;
    const char *dir = ".", *log = "/dev/null";
    int runs = 3, idle_ms = 1000, cpu = -1, c;
    while ((c = getopt(argc, argv, "t:n:w:i:l:c:")) != -1) {
        switch (c) {
        case 't': bn_parse_addr(&target, optarg), have_t = true; break;
        case 'n': runs = (int)bn_atoll(optarg, "-n", 1, 50); break;
        case 'w': dir = optarg; break;
        case 'i': idle_ms = (int)bn_atoll(optarg, "-i", 0, 60000); break;
        case 'l': log = optarg; break;
        case 'c': cpu = (int)bn_atoll(optarg, "-c", 0, 1023); break;
        default: have_t = false, optind = argc; break;
        }
    }
    if (!have_t || optind >= argc) {
        fprintf(stderr, "usage: startprobe -t IP:PORT [-n runs] [-w dir] [-i idle_ms] [-l log] [-c cpu] -- server args...\n");
        return 2;
    }
    bn_on_signals();
    uint64_t ready[50], rss[50], anon[50], uss[50];
    int clean = 0, n = 0;
    uint8_t req[64];
    size_t rlen = bn_enc_register_peer(req, "1999999999");
    for (int r = 0; r < runs && !bn_stop; r++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_in src;
        bn_src_addr(&src, 40, (unsigned)r);
        if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
            bn_die("probe socket: %s", strerror(errno));
        uint64_t t0 = bn_now_ns();
        pid_t pid = fork();
        if (pid < 0)
            bn_die("fork: %s", strerror(errno));
        if (pid == 0) {
            int lf = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (lf >= 0) {
                dup2(lf, 1);
                dup2(lf, 2);
            }
            if (cpu >= 0) { /* the server on its own CPU, as in the other measurements */
                cpu_set_t set;
                CPU_ZERO(&set);
                CPU_SET(cpu, &set);
                sched_setaffinity(0, sizeof set, &set);
            }
            if (chdir(dir) < 0)
                _exit(126);
            execv(argv[optind], argv + optind);
            _exit(127);
        }
        uint64_t got = 0, deadline = t0 + 5 * BN_NS_PER_S;
        while (!got && bn_now_ns() < deadline && !bn_stop) {
            sendto(fd, req, rlen, 0, (struct sockaddr *)&target, sizeof target);
            struct pollfd p = { .fd = fd, .events = POLLIN };
            struct timespec ts = { 0, 100000 };
            if (ppoll(&p, 1, &ts, NULL) > 0) {
                uint8_t d[512];
                if (recv(fd, d, sizeof d, 0) > 0)
                    got = bn_now_ns();
            }
            if (waitpid(pid, NULL, WNOHANG) == pid)
                bn_die("run %d: the server exited during start-up (see %s)", r, log);
        }
        close(fd);
        if (!got) {
            stop_child(pid);
            bn_die("run %d: no answer within 5 s (see %s)", r, log);
        }
        ready[r] = got - t0;
        bn_sleep_ns((uint64_t)idle_ms * 1000000ull);
        rss[r] = (uint64_t)status_kb(pid, "VmRSS");
        anon[r] = (uint64_t)status_kb(pid, "RssAnon");
        uss[r] = (uint64_t)uss_kb(pid);
        int ex = stop_child(pid);
        char k[32];
        snprintf(k, sizeof k, "run%d_ready_ms", r);
        bn_kv(k, "%.3f", (double)ready[r] / 1e6);
        snprintf(k, sizeof k, "run%d_rss_kb", r);
        bn_kv(k, "%llu", (unsigned long long)rss[r]);
        snprintf(k, sizeof k, "run%d_exit", r);
        bn_kv(k, "%d", ex);
        if (ex == 0)
            clean++;
        n++;
    }
    if (!n)
        bn_die("interrupted");
    qsort(ready, (size_t)n, sizeof ready[0], cmp_u64);
    qsort(rss, (size_t)n, sizeof rss[0], cmp_u64);
    qsort(anon, (size_t)n, sizeof anon[0], cmp_u64);
    qsort(uss, (size_t)n, sizeof uss[0], cmp_u64);
    bn_kv("runs", "%d", n);
    bn_kv("ready_ms_median", "%.3f", (double)ready[n / 2] / 1e6);
    bn_kv("ready_ms_max", "%.3f", (double)ready[n - 1] / 1e6);
    bn_kv("rss_kb_median", "%llu", (unsigned long long)rss[n / 2]);
    bn_kv("rss_anon_kb_median", "%llu", (unsigned long long)anon[n / 2]);
    bn_kv("uss_kb_median", "%llu", (unsigned long long)uss[n / 2]);
    bn_kv("clean_exits", "%d", clean);
    return clean == n ? 0 : 1;
}
