/* tests/integration/harness.c — see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "rdv/wire.h"

#ifndef RDV_BUILD_DIR
#error "RDV_BUILD_DIR must be defined"
#endif

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int rdvt_base_port(void)
{
    /* 10000..32759, below the kernel's ephemeral range (32768+) so a port we
     * pick never collides with an outgoing connection's local port; spread
     * by pid so parallel suites rarely meet; step 10 per server. */
    static int next;
    if (!next)
        next = 10000 + (int)(getpid() % 2270) * 10;
    int p = next;
    next += 10;
    if (next > 32750)
        next = 10000;
    return p;
}

static char *replace_all(const char *text, const char *key, const char *val)
{
    size_t kl = strlen(key), vl = strlen(val), n = 0;
    for (const char *p = text; (p = strstr(p, key)); p += kl)
        n++;
    char *out = malloc(strlen(text) + n * (vl > kl ? vl - kl : 0) + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = text;;) {
        const char *q = strstr(p, key);
        if (!q) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, val, vl);
        o += vl;
        p = q + kl;
    }
    return out;
}

static char *expand(rdvt_server *s, const char *text)
{
    char num[6][32];
    snprintf(num[0], 32, "%d", s->port);
    snprintf(num[1], 32, "%d", s->port - 1);
    snprintf(num[2], 32, "%d", s->port + 1);
    snprintf(num[3], 32, "%d", s->port + 2);
    snprintf(num[4], 32, "%d", s->port + 3);
    snprintf(num[5], 32, "%d", s->port + 4);
    const char *keys[] = { "@PORT@", "@NAT@", "@RELAY@", "@WS@", "@RWS@", "@MX@", "@MODDIR@", "@FIXDIR@", "@DIR@" };
    const char *vals[] = { num[0], num[1], num[2], num[3], num[4], num[5], RDV_BUILD_DIR "/modules",
                           RDV_BUILD_DIR "/tests/fixtures", s->dir };
    char *cur = strdup(text);
    for (size_t i = 0; cur && i < sizeof keys / sizeof keys[0]; i++) {
        char *n = replace_all(cur, keys[i], vals[i]);
        free(cur);
        cur = n;
    }
    return cur;
}

/* conf.d/<name> = expanded text for each (name, text) pair. */
static int write_files(rdvt_server *s, const char *const *files)
{
    char path[512];
    for (size_t i = 0; files && files[i]; i += 2) {
        snprintf(path, sizeof path, "%s/conf.d/%s", s->dir, files[i]);
        char *text = expand(s, files[i + 1]);
        FILE *f = fopen(path, "w");
        if (!f || !text) {
            free(text);
            if (f)
                fclose(f);
            return -1;
        }
        fputs(text, f);
        fclose(f);
        free(text);
    }
    return 0;
}

static void free_files(rdvt_server *s)
{
    for (size_t i = 0; s->files && s->files[i]; i++)
        free(s->files[i]);
    free(s->files);
    s->files = NULL;
}

int rdvt_prepare(rdvt_server *s, const char *const *files)
{
    memset(s, 0, sizeof *s);
    s->pid = -1;
    s->port = rdvt_base_port();
    snprintf(s->dir, sizeof s->dir, "/tmp/rdvt-XXXXXX");
    if (!mkdtemp(s->dir))
        return -1;
    snprintf(s->log, sizeof s->log, "%s/rdvd.log", s->dir);
    snprintf(s->sock, sizeof s->sock, "%s/rdvd.sock", s->dir);
    char path[512];
    snprintf(path, sizeof path, "%s/conf.d", s->dir);
    mkdir(path, 0700);
    size_t n = 0;
    while (files && files[n])
        n++;
    s->files = calloc(n + 1, sizeof *s->files);
    for (size_t i = 0; s->files && i < n; i++)
        s->files[i] = strdup(files[i]);
    s->valgrind = getenv("RDV_VALGRIND") && strcmp(getenv("RDV_VALGRIND"), "1") == 0;
    return write_files(s, files);
}

static void print_log(rdvt_server *s)
{
    FILE *f = fopen(s->log, "r");
    if (!f)
        return;
    char line[1024];
    fprintf(stderr, "---- %s ----\n", s->log);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

int rdvt_start_exe(rdvt_server *s, const char *exe, const char *const *args, bool wait_admin)
{
    char exepath[512], confdir[300], sockset[400];
    snprintf(exepath, sizeof exepath, "%s/%s", RDV_BUILD_DIR, exe);
    snprintf(confdir, sizeof confdir, "%s/conf.d", s->dir);
    snprintf(sockset, sizeof sockset, "core.admin_socket=%s", s->sock);
    const char *argv[64];
    int argc = 0;
    if (s->valgrind) {
        argv[argc++] = "valgrind";
        argv[argc++] = "--quiet";
        argv[argc++] = "--error-exitcode=99";
        argv[argc++] = "--leak-check=full";
        argv[argc++] = "--errors-for-leak-kinds=definite";
        argv[argc++] = "--show-leak-kinds=definite";
    }
    argv[argc++] = exepath;
    bool is_rdvd = strcmp(exe, "rdvd") == 0;
    if (is_rdvd) {
        argv[argc++] = "-c";
        argv[argc++] = confdir;
        argv[argc++] = "-o";
        argv[argc++] = sockset;
    }
    for (size_t i = 0; args && args[i] && argc < 62; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* A test that ends without rdvt_stop (a skipped or crashed test:
         * Criterion then runs no .fini) must not leave a server behind. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        if (chdir(s->dir) < 0)
            _exit(126);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    if (!wait_admin)
        return 0;
    long deadline = now_ms() + (s->valgrind ? 60000 : 15000);
    while (now_ms() < deadline) {
        if (rdvt_log_contains(s, "ready:")) {
            return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = -1;
            print_log(s);
            return -1;
        }
        usleep(20000);
    }
    print_log(s);
    return -1;
}

int rdvt_start(rdvt_server *s)
{
    for (int tries = 0;; tries++) {
        if (rdvt_start_exe(s, "rdvd", NULL, true) == 0)
            return 0;
        if (tries == 5 || !s->files || !rdvt_log_contains(s, "another process uses this port"))
            return -1;
        fprintf(stderr, "rdvt: ports %d.. in use; trying a fresh block\n", s->port - 1);
        s->port = rdvt_base_port();
        if (truncate(s->log, 0) != 0 || write_files(s, (const char *const *)s->files) != 0)
            return -1;
    }
}

bool rdvt_alive(rdvt_server *s)
{
    if (s->pid <= 0)
        return false;
    int st;
    return waitpid(s->pid, &st, WNOHANG) == 0;
}

int rdvt_wait_exit(rdvt_server *s, int ms)
{
    long deadline = now_ms() + (s->valgrind ? ms * 10 : ms);
    int st;
    while (s->pid > 0 && now_ms() < deadline) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        usleep(20000);
    }
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
        s->pid = -1;
    }
    return -1;
}

/* Criterion 2.4 counts neither an assertion nor a crash in a suite's fini
 * as a failure, and the suites stop rdvd there: an rdvd that exited
 * uncleanly (a valgrind error exits 99, ASan/LSan abort) would pass. So
 * every unclean exit is also appended to $RDVT_EXIT_LOG, and main()
 * (harness_main.c) fails the run when that file is not empty. */
static void note_bad_exit(const char *what, int code)
{
    const char *path = getenv("RDVT_EXIT_LOG");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (!f)
        return;
    const struct criterion_test *t = criterion_current_test;
    fprintf(f, "%s::%s: rdvd %s %d\n", t && t->category ? t->category : "?", t && t->name ? t->name : "?", what,
            code);
    fclose(f);
}

int rdvt_stop(rdvt_server *s)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    long deadline = now_ms() + (s->valgrind ? 60000 : 20000);
    int st = 0;
    while (now_ms() < deadline) {
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid) {
            s->pid = -1;
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                return 0;
            print_log(s);
            if (WIFEXITED(st))
                note_bad_exit("exited with status", WEXITSTATUS(st));
            else
                note_bad_exit("was killed by signal", WTERMSIG(st));
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        usleep(20000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = -1;
    print_log(s);
    note_bad_exit("did not stop on SIGTERM within (ms)", s->valgrind ? 60000 : 20000);
    return -1;
}

void rdvt_cleanup(rdvt_server *s)
{
    if (s->pid > 0)
        rdvt_stop(s);
    free_files(s);
    if (s->dir[0] && strncmp(s->dir, "/tmp/rdvt-", 10) == 0) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cleanup of %s failed\n", s->dir);
    }
}

bool rdvt_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

bool rdvt_log_contains(rdvt_server *s, const char *needle)
{
    return rdvt_file_contains(s->log, needle);
}

bool rdvt_wait_log(rdvt_server *s, const char *needle, int ms)
{
    long deadline = now_ms() + ms;
    do {
        if (rdvt_log_contains(s, needle))
            return true;
        usleep(20000);
    } while (now_ms() < deadline);
    return false;
}

char *rdvt_admin(rdvt_server *s, const char *cmd)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(s->sock) >= sizeof sun.sun_path)
        return NULL;
    memcpy(sun.sun_path, s->sock, strlen(s->sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    struct timeval tv = { .tv_sec = s->valgrind ? 30 : 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (write(fd, cmd, strlen(cmd)) < 0 || write(fd, "\n", 1) < 0) {
        close(fd);
        return NULL;
    }
    shutdown(fd, SHUT_WR);
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    ssize_t n;
    while (out && (n = read(fd, out + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (cap - len < 2) {
            cap *= 2;
            char *no = realloc(out, cap);
            if (!no) {
                free(out);
                out = NULL;
            }
            out = no;
        }
    }
    close(fd);
    if (out)
        out[len] = 0;
    return out;
}

uint64_t rdvt_stat(rdvt_server *s, const char *name)
{
    char *all = rdvt_admin(s, "stats");
    uint64_t v = 0;
    size_t nl = strlen(name);
    for (char *p = all; p && *p;) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ') {
            v = strtoull(p + nl + 1, NULL, 10);
            break;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    free(all);
    return v;
}

/* ---- clients ---- */
static struct sockaddr_in loop_addr(const char *ip, int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

int rdvt_udp(const char *src_ip)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = loop_addr(src_ip ? src_ip : "127.0.0.1", 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int rdvt_udp_send_raw(int fd, int port, const void *p, size_t n)
{
    struct sockaddr_in a = loop_addr("127.0.0.1", port);
    return sendto(fd, p, n, 0, (struct sockaddr *)&a, sizeof a) == (ssize_t)n ? 0 : -1;
}

static uint8_t *pack_msg(const Hbb__RendezvousMessage *m, size_t *n)
{
    *n = protobuf_c_message_get_packed_size(&m->base);
    uint8_t *buf = malloc(*n ? *n : 1);
    if (buf)
        protobuf_c_message_pack(&m->base, buf);
    return buf;
}

int rdvt_udp_send(int fd, int port, const Hbb__RendezvousMessage *m)
{
    size_t n;
    uint8_t *b = pack_msg(m, &n);
    int r = b ? rdvt_udp_send_raw(fd, port, b, n) : -1;
    free(b);
    return r;
}

static bool wait_readable(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, ms) == 1;
}

int rdvt_udp_recv_raw(int fd, void *buf, size_t cap, int ms)
{
    if (!wait_readable(fd, ms))
        return -1;
    ssize_t n = recv(fd, buf, cap, 0);
    return n < 0 ? -1 : (int)n;
}

Hbb__RendezvousMessage *rdvt_udp_recv(int fd, int ms)
{
    uint8_t buf[65536];
    int n = rdvt_udp_recv_raw(fd, buf, sizeof buf, ms);
    if (n < 0)
        return NULL;
    return hbb__rendezvous_message__unpack(NULL, (size_t)n, buf);
}

int rdvt_tcp(const char *src_ip, int port) { return rdvt_tcp_rcvbuf(src_ip, port, 0); }

int rdvt_tcp_rcvbuf(const char *src_ip, int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0) /* before connect: the window is small from the SYN on */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in src = loop_addr(src_ip ? src_ip : "127.0.0.1", 0);
    struct sockaddr_in dst = loop_addr("127.0.0.1", port);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int rdvt_tcp_send_raw(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        b += w, n -= (size_t)w;
    }
    return 0;
}

int rdvt_tcp_send_frame(int fd, const void *p, size_t n)
{
    uint8_t hdr[RDV_FRAME_HDR_MAX];
    size_t hl = rdv_frame_header(n, hdr);
    if (!hl || rdvt_tcp_send_raw(fd, hdr, hl) < 0)
        return -1;
    return n ? rdvt_tcp_send_raw(fd, p, n) : 0;
}

int rdvt_tcp_send(int fd, const Hbb__RendezvousMessage *m)
{
    size_t n;
    uint8_t *b = pack_msg(m, &n);
    int r = b ? rdvt_tcp_send_frame(fd, b, n) : -1;
    free(b);
    return r;
}

static int read_exact(int fd, uint8_t *p, size_t n, long deadline)
{
    while (n) {
        long left = deadline - now_ms();
        if (left <= 0 || !wait_readable(fd, (int)left))
            return -1;
        ssize_t r = recv(fd, p, n, 0);
        if (r == 0)
            return -2;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -2;
        }
        p += r, n -= (size_t)r;
    }
    return 0;
}

long rdvt_tcp_recv_frame(int fd, uint8_t **out, int ms)
{
    long deadline = now_ms() + ms;
    uint8_t hdr[4];
    int r = read_exact(fd, hdr, 1, deadline);
    if (r < 0)
        return r;
    size_t hl = (size_t)(hdr[0] & 3) + 1;
    if (hl > 1 && (r = read_exact(fd, hdr + 1, hl - 1, deadline)) < 0)
        return r;
    size_t len = 0;
    for (size_t i = 0; i < hl; i++)
        len |= (size_t)hdr[i] << (8 * i);
    len >>= 2;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    if (len && (r = read_exact(fd, buf, len, deadline)) < 0) {
        free(buf);
        return r;
    }
    *out = buf;
    return (long)len;
}

Hbb__RendezvousMessage *rdvt_tcp_recv(int fd, int ms)
{
    uint8_t *buf = NULL;
    long n = rdvt_tcp_recv_frame(fd, &buf, ms);
    if (n < 0)
        return NULL;
    Hbb__RendezvousMessage *m = hbb__rendezvous_message__unpack(NULL, (size_t)n, buf);
    free(buf);
    return m;
}

bool rdvt_tcp_closed(int fd, int ms)
{
    long deadline = now_ms() + ms;
    uint8_t b[256];
    for (;;) {
        long left = deadline - now_ms();
        if (left <= 0 || !wait_readable(fd, (int)left))
            return false;
        ssize_t r = recv(fd, b, sizeof b, 0);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
            return true;
    }
}

void rdvt_msg_free(Hbb__RendezvousMessage *m)
{
    if (m)
        hbb__rendezvous_message__free_unpacked(m, NULL);
}

long rdvt_cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    long ut = 0, st = 0;
    /* fields after the comm: state(3) ... utime(14) stime(15) */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st) != 2)
        return -1;
    return ut + st;
}

int rdvt_threads_taking(pid_t pid, int sig, int *workers)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int taking = 0;
    *workers = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        int tid = atoi(e->d_name);
        if (tid <= 0 || tid == (int)pid)
            continue;
        char st[96], line[256];
        snprintf(st, sizeof st, "/proc/%d/task/%d/status", (int)pid, tid);
        FILE *f = fopen(st, "r");
        if (!f)
            continue; /* the thread has just ended */
        unsigned long long blk = 0;
        bool seen = false;
        while (!seen && fgets(line, sizeof line, f))
            seen = sscanf(line, "SigBlk: %llx", &blk) == 1;
        fclose(f);
        if (!seen)
            continue;
        (*workers)++;
        if (!(blk & (1ull << (sig - 1))))
            taking++;
    }
    closedir(d);
    return taking;
}

long rdvt_vmrss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kib;
}
