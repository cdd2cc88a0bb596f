/* bench/src/bench.h — helpers shared by the benchmark's load generators and
 * reference servers: clocks, a latency histogram, CPU accounting of this and
 * other processes, loopback addresses, and the few RendezvousMessage bytes
 * the generators send, encoded by hand once (no protobuf library on the hot
 * path; bench/src/selfcheck.c proves the bytes against rdvd's own decoder).
 *
 * Every tool prints its results as "key=value" lines on stdout; run.py
 * parses them. Diagnostics go to stderr. */
#ifndef RDV_BENCH_H
#define RDV_BENCH_H

#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BN_NS_PER_S 1000000000ull

uint64_t bn_now_ns(void);
void bn_sleep_ns(uint64_t ns);
_Noreturn void bn_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bn_kv(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* SIGINT/SIGTERM set bn_stop; tools poll it in their (bounded) loops. */
extern volatile sig_atomic_t bn_stop;
void bn_on_signals(void);

/* Soft RLIMIT_NOFILE := hard. Returns the new soft limit. */
long bn_raise_nofile(void);

/* ---- numbers from the command line ---- */
long long bn_atoll(const char *s, const char *what, long long min, long long max);
double bn_atof(const char *s, const char *what, double min, double max);

/* ---- latency histogram: log-linear, 32 sub-buckets per power of two,
 * about 3 % resolution from 1 ns to 2^40 ns. ---- */
#define BN_HIST_SUB 32
#define BN_HIST_N (37 * BN_HIST_SUB)
typedef struct bn_hist {
    uint64_t n, max, sum;
    uint64_t b[BN_HIST_N];
} bn_hist;
void bn_hist_add(bn_hist *h, uint64_t v);
/* Value at quantile q (0..1); 0 when empty. */
uint64_t bn_hist_q(const bn_hist *h, double q);
/* Prints <prefix>_p50_us, _p99_us, _p999_us, _max_us, _n. */
void bn_hist_print(const bn_hist *h, const char *prefix);

/* ---- CPU ---- */
/* CPU time of this process (user + system), ns. */
uint64_t bn_self_cpu_ns(void);
/* CPU time of process pid, all its threads, ns; -1 if it is gone. Uses the
 * scheduler's run time (/proc/PID/task/TID/schedstat, ns resolution), falling
 * back to utime+stime of /proc/PID/stat (clock ticks). */
int64_t bn_proc_cpu_ns(pid_t pid);
/* A comma-separated list of pids ("-P 123,456"): sum over them. */
typedef struct bn_pids {
    int n;
    pid_t v[8];
} bn_pids;
void bn_pids_parse(bn_pids *p, const char *s);
int64_t bn_pids_cpu_ns(const bn_pids *p);
/* Time the threads of pid spent runnable but waiting for a CPU (run queue
 * delay, schedstat field 2), ns; -1 if unknown. A large value means other
 * work on the machine took the CPU from the process being measured. */
int64_t bn_proc_wait_ns(pid_t pid);
int64_t bn_pids_wait_ns(const bn_pids *p);

/* CPU and run-queue wait of the server pids and of this process over a
 * measurement window; bn_win_print adds srv_cpu_pct (all threads),
 * srv_main_cpu_pct (the first pid's main thread: rdvd's loop), srv_wait_pct,
 * gen_cpu_pct, gen_wait_pct and steal_pct (CPU time the hypervisor gave to
 * other guests, % of all CPUs). */
typedef struct bn_win {
    uint64_t t0, t1, gen0, gen1;
    int64_t srv0, srv1, sw0, sw1, gw0, gw1, main0, main1;
    uint64_t st0, st1, tot0, tot1; /* system-wide steal and total, /proc/stat ticks */
} bn_win;
void bn_win_start(bn_win *w, const bn_pids *p);
void bn_win_end(bn_win *w, const bn_pids *p);
/* Seconds in the window. */
double bn_win_s(const bn_win *w);
/* Server CPU seconds in the window; -1 if unknown. */
double bn_win_srv_s(const bn_win *w);
void bn_win_print(const bn_win *w, const bn_pids *p);

/* ---- addresses (IPv4 loopback only) ---- */
void bn_parse_addr(struct sockaddr_in *sa, const char *hostport);
/* 127.<block>.<i/250>.<i%250 + 1>: up to 64 000 distinct sources per block. */
void bn_src_addr(struct sockaddr_in *sa, int block, unsigned i);
/* The inverse: the index i of a source address, or -1 if not of that block. */
long bn_src_index(struct in_addr a, int block);
void bn_set_bufs(int fd, int bytes);

/* ---- protobuf, by hand ---- */
typedef struct bn_buf {
    uint8_t *p;
    size_t n, cap;
} bn_buf;
void bn_put_varint(bn_buf *b, uint64_t v);
/* Field with wire type 2 (bytes, string, sub-message). */
void bn_put_bytes(bn_buf *b, uint32_t field, const void *data, size_t len);
void bn_put_uint(bn_buf *b, uint32_t field, uint64_t v);
/* Wrap the bytes inner[0..len) as RendezvousMessage field `tag` into b. */
void bn_put_msg(bn_buf *b, uint32_t tag, const bn_buf *inner);

/* Iterate the fields of a message. Returns 1 with the field, 0 at the end,
 * -1 on malformed input. For wire type 0 f->v holds the value; for type 2
 * f->data and f->len the payload. */
typedef struct bn_field {
    uint32_t num, wt;
    uint64_t v;
    const uint8_t *data;
    size_t len;
} bn_field;
int bn_next_field(const uint8_t **p, const uint8_t *end, bn_field *f);
/* Top-level RendezvousMessage: the union tag and its payload; -1 if none. */
int bn_msg_tag(const uint8_t *p, size_t n, const uint8_t **body, size_t *blen);

/* hbb frame header (wire.md §3.1) for a payload of n bytes; returns its size. */
size_t bn_frame_header(uint8_t out[4], size_t n);
/* Parse a frame from buf[0..n): 1 and the payload if complete, 0 if more
 * bytes are needed, -1 if the header announces more than max. */
int bn_frame_parse(const uint8_t *buf, size_t n, size_t max, size_t *hdr, size_t *plen);

/* Peer ids used by the generators: 10 decimal digits, base + index. */
#define BN_ID_LEN 10
void bn_id(char out[BN_ID_LEN + 1], uint64_t base, uint64_t idx);
/* Deterministic per-id uuid (16 bytes) and public key (32 bytes). */
void bn_uuid_pk(uint64_t idx, uint8_t uuid[16], uint8_t pk[32]);

/* The RendezvousMessage tags the generators use (field numbers). */
enum {
    BN_REGISTER_PEER = 6, BN_REGISTER_PEER_RESPONSE = 7, BN_PUNCH_HOLE_REQUEST = 8,
    BN_PUNCH_HOLE = 9, BN_PUNCH_HOLE_SENT = 10, BN_PUNCH_HOLE_RESPONSE = 11,
    BN_FETCH_LOCAL_ADDR = 12, BN_LOCAL_ADDR = 13, BN_CONFIGURE_UPDATE = 14, BN_REGISTER_PK = 15,
    BN_REGISTER_PK_RESPONSE = 16, BN_REQUEST_RELAY = 18, BN_KEY_EXCHANGE = 25,
};

/* Whole datagrams / frames. Each returns the length written to out
 * (out must hold 128 bytes; uuid for RequestRelay up to 64 bytes). */
size_t bn_enc_register_peer(uint8_t *out, const char *id);
size_t bn_enc_register_pk(uint8_t *out, const char *id, const uint8_t uuid[16], const uint8_t pk[32]);
/* A TCP frame (header included) carrying RequestRelay{uuid, licence_key}. */
size_t bn_enc_request_relay_frame(uint8_t *out, const char *uuid, const char *licence);
/* TCP frames (header included) for the punch exchange; out must hold
 * BN_FRAME_MAX bytes. */
#define BN_FRAME_MAX 1024
size_t bn_enc_punch_hole_request(uint8_t *out, const char *id, uint64_t nat, const char *licence,
                                 const char *version);
size_t bn_enc_punch_hole_sent(uint8_t *out, const uint8_t *sa, size_t salen, const char *id, const uint8_t *relay,
                              size_t rlen, uint64_t nat, const char *version);
size_t bn_enc_local_addr(uint8_t *out, const uint8_t *sa, size_t salen, const uint8_t *la, size_t lalen,
                         const uint8_t *relay, size_t rlen, const char *id, const char *version);
/* IPv4 AddrMangle with the time mask 0 (wire.md §5.2); returns its length. */
size_t bn_mangle_v4(uint8_t out[16], const struct sockaddr_in *sa);
/* STUN Binding request (RFC 5389), 20 bytes, transaction id from seq. */
size_t bn_enc_stun_binding(uint8_t *out, uint64_t seq);

#endif
