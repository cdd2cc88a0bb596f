/* tests/integration/harness.h — start the real rdvd on loopback with a
 * temporary conf.d and talk to it like RustDesk clients do.
 *
 * Every test server gets its own temporary working directory (keys and
 * database land there) and a block of ports chosen per process, so suites can
 * run in parallel. With RDV_VALGRIND=1 the server runs under valgrind and a
 * valgrind error makes rdvt_stop() report failure. Any unclean exit seen by
 * rdvt_stop() also fails the whole run (harness_main.c): the suites stop
 * rdvd in their fini, where Criterion 2.4 ignores failed assertions. */
#ifndef RDV_TEST_HARNESS_H
#define RDV_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rdv/proto.h"

/* 1 when the suite is built with AddressSanitizer (the server is then
 * slower: suites stretch their time limits). */
#if defined(__SANITIZE_ADDRESS__)
#define RDVT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RDVT_SANITIZED 1
#endif
#endif
#ifndef RDVT_SANITIZED
#define RDVT_SANITIZED 0
#endif

typedef struct rdvt_server {
    pid_t pid;
    char dir[256];      /* working directory, conf.d is dir/conf.d */
    char log[300];      /* stderr of the server */
    char sock[300];     /* admin socket */
    int port;           /* base port: main = port, nat = port - 1, relay = port + 1, ... */
    bool valgrind;
    char **files;       /* copy of rdvt_prepare's (name, text) pairs, for a retry on new ports */
} rdvt_server;

/* A fresh base port for this process (each call moves on by 10). */
int rdvt_base_port(void);

/* Create the working dir and write conf.d/<name> = text for each pair of
 * (name, text) in files (NULL-terminated). Text may contain "@PORT@",
 * "@NAT@" (port-1), "@RELAY@" (port+1), "@WS@" (port+2), "@RWS@" (port+3), "@MX@" (port+4),
 * "@MODDIR@" (build/modules), "@FIXDIR@" (build/tests/fixtures) and "@DIR@"
 * (working dir); they are replaced. */
int rdvt_prepare(rdvt_server *s, const char *const *files);
/* Start build/rdvd (or argv[0] = exe, e.g. "hbbs", with extra args) and wait
 * until it answers on its admin socket (max 15 s; 60 s under valgrind).
 * Returns 0 or -1 (the log is printed). rdvt_start moves to a fresh block
 * of ports and tries again (up to 5 times) when rdvd reports one of its
 * ports in use: another test run on this machine may hold them. */
int rdvt_start(rdvt_server *s);
int rdvt_start_exe(rdvt_server *s, const char *exe, const char *const *args, bool wait_admin);
/* Wait for the server to exit by itself (start-up errors); exit status, or
 * -1 if it is still running after ms (then it is killed). */
int rdvt_wait_exit(rdvt_server *s, int ms);
/* SIGTERM, wait; returns the exit status (0 = clean) or -1 on timeout/signal. */
int rdvt_stop(rdvt_server *s);
/* Remove the working directory. */
void rdvt_cleanup(rdvt_server *s);
/* Does a line of the file (or of the server's log) contain needle? */
bool rdvt_file_contains(const char *path, const char *needle);
bool rdvt_log_contains(rdvt_server *s, const char *needle);
/* Wait (max ms) until the log contains needle. */
bool rdvt_wait_log(rdvt_server *s, const char *needle, int ms);
bool rdvt_alive(rdvt_server *s);

/* Admin console: run a command, return malloc'ed answer (NULL on error). */
char *rdvt_admin(rdvt_server *s, const char *cmd);
/* Value of a counter/gauge from "stats" (0 if absent). */
uint64_t rdvt_stat(rdvt_server *s, const char *name);
/* VmRSS of a process in KiB (-1 if unknown). */
long rdvt_vmrss_kib(pid_t pid);
/* utime + stime of a process in clock ticks (-1 if unknown). */
long rdvt_cpu_ticks(pid_t pid);
/* Threads of pid other than its main thread: how many there are (*workers)
 * and how many of them do not block signal sig (the return value; -1 if
 * /proc cannot be read). */
int rdvt_threads_taking(pid_t pid, int sig, int *workers);

/* ---- clients ---- */
/* UDP socket bound to src_ip (e.g. "127.0.0.2"), any port. */
int rdvt_udp(const char *src_ip);
int rdvt_udp_send_raw(int fd, int port, const void *p, size_t n);
int rdvt_udp_send(int fd, int port, const Hbb__RendezvousMessage *m);
/* Receive one datagram within ms; returns length or -1. */
int rdvt_udp_recv_raw(int fd, void *buf, size_t cap, int ms);
/* Receive and decode; caller frees with rdvt_msg_free. NULL on timeout. */
Hbb__RendezvousMessage *rdvt_udp_recv(int fd, int ms);

/* TCP connection from src_ip to 127.0.0.1:port; -1 on failure. */
int rdvt_tcp(const char *src_ip, int port);
/* The same with a small SO_RCVBUF set before connect: a client that reads slowly or never. */
int rdvt_tcp_rcvbuf(const char *src_ip, int port, int rcvbuf);
int rdvt_tcp_send_raw(int fd, const void *p, size_t n);
int rdvt_tcp_send_frame(int fd, const void *p, size_t n);
int rdvt_tcp_send(int fd, const Hbb__RendezvousMessage *m);
/* Read one frame payload within ms into a malloc'ed buffer; returns length,
 * -1 on timeout, -2 on EOF. */
long rdvt_tcp_recv_frame(int fd, uint8_t **out, int ms);
Hbb__RendezvousMessage *rdvt_tcp_recv(int fd, int ms);
/* True if the server closed the connection within ms. */
bool rdvt_tcp_closed(int fd, int ms);

void rdvt_msg_free(Hbb__RendezvousMessage *m);

#endif
