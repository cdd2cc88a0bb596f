/* bench/src/idlefloor.c — the reference for rdvd's idle RSS: the least a
 * server built on the project's required libraries can be. It links what
 * rdvd's default node cannot do without — libc, SQLite (the upstream
 * database format), libsodium, libev, libconfig and protobuf-c — and does
 * what any such server does before it idles: initialise libsodium, parse
 * a configuration file, open the peer database in WAL mode and read every
 * row, then answer UDP datagrams from a libev loop (each datagram is sent
 * back, so startprobe can time it like rdvd). It has no modules, no tables
 * and no buffers: rdvd's idle RSS minus this is what rdvd's own design
 * costs.
 *
 *   idlefloor -l IP:PORT -d DB [-c CONFIG]     exits 0 on SIGTERM/SIGINT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <libconfig.h>
#include <protobuf-c/protobuf-c.h>
#include <sodium.h>
#include <sqlite3.h>

#include "bench.h"

static void on_datagram(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    uint8_t d[2048];
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(w->fd, d, sizeof d, 0, (struct sockaddr *)&from, &fl);
    if (n >= 0)
        sendto(w->fd, d, (size_t)n, 0, (struct sockaddr *)&from, fl);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w, (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static long read_peers(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long rows = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(db, "pragma journal_mode = wal", NULL, NULL, NULL) != SQLITE_OK)
        bn_die("%s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
    if (sqlite3_prepare_v2(db, "select guid, id, uuid, pk, info from peer", -1, &st, NULL) == SQLITE_OK) {
        rows = 0;
        while (sqlite3_step(st) == SQLITE_ROW)
            rows++;
    }
    sqlite3_finalize(st);
    /* kept open, as a server keeps its database */
    return rows;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    bool have = false;
    const char *dbpath = NULL, *conf = NULL;
    int c;
    while ((c = getopt(argc, argv, "l:d:c:")) != -1) {
        switch (c) {
        case 'l': bn_parse_addr(&addr, optarg), have = true; break;
        case 'd': dbpath = optarg; break;
        case 'c': conf = optarg; break;
        default: have = false, optind = argc; break;
        }
    }
    if (!have || !dbpath) {
        fprintf(stderr, "usage: idlefloor -l IP:PORT -d DB [-c CONFIG]\n");
        return 2;
    }
    if (sodium_init() < 0)
        bn_die("sodium_init failed");
    config_t cfg;
    config_init(&cfg);
    if (conf && config_read_file(&cfg, conf) != CONFIG_TRUE)
        bn_die("%s:%d: %s", conf, config_error_line(&cfg), config_error_text(&cfg));
    long rows = read_peers(dbpath);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        bn_die("bind: %s", strerror(errno));
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    ev_io io;
    ev_io_init(&io, on_datagram, fd, EV_READ);
    ev_io_start(loop, &io);
    ev_signal term, intr;
    ev_signal_init(&term, on_signal, SIGTERM);
    ev_signal_init(&intr, on_signal, SIGINT);
    ev_signal_start(loop, &term);
    ev_signal_start(loop, &intr);
    fprintf(stderr, "idlefloor: %ld peer rows read, protobuf-c %s, listening\n", rows, protobuf_c_version());
    ev_run(loop, 0);
    config_destroy(&cfg);
    close(fd);
    return 0;
}
