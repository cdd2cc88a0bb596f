/* relay_test.h — helpers shared by the relay module's unit suites: the
 * module's sources are compiled in, so tests reach its state (relay.h) and
 * drive it through the fake core with real socketpairs as client sockets. */
#ifndef RELAY_TEST_H
#define RELAY_TEST_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fakecore.h"
#include "relay.h"

extern fc_core *fc;
extern relay *R;      /* the module's state */
extern void *st;
extern char rt_dir[]; /* the test's working directory (list and key files) */

/* Fresh fake core in a fresh temporary working directory, module loaded
 * with conf ("key=value" lines). Returns fc_load's result. */
int rt_start(const char *conf);
void rt_setup(void);            /* rt_start(NULL) that must succeed */
void rt_teardown(void);
/* Unload and load again with conf (same working directory). */
int rt_reload_module(const char *conf);
void rt_write_file(const char *name, const char *text);

/* A RendezvousMessage{request_relay{uuid, licence_key}} payload (no frame
 * header); key NULL = unset. Returns its length. */
size_t rt_rr(uint8_t *out, size_t cap, const char *uuid, const char *key);

typedef struct rt_conn {
    rdv_conn_id id;
    int cli; /* the client's end (non-blocking) */
    int srv; /* the end the module gets on conn_detach */
} rt_conn;
/* Accept a connection from addr ("10.0.0.1:4000") on the relay listener. */
rt_conn rt_open(const char *addr);
/* Send the first frame; returns on_frame's answer. */
int rt_send_first(rt_conn *c, const uint8_t *p, size_t n);
int rt_request(rt_conn *c, const char *uuid, const char *key);
/* A pair A (early) / B (late) from 10.0.0.1 / 10.0.0.2. */
void rt_pair(rt_conn *a, rt_conn *b, const char *uuid);

/* Fire the module's watchers on every known server-side fd that is ready
 * (as the event loop would), rounds times. */
void rt_pump(int rounds);
/* Read what is available on fd within ms (pumping meanwhile): bytes read,
 * -2 on EOF before any byte, 0 if nothing. */
long rt_read(int fd, void *buf, size_t cap, int ms);
/* Write p as one BytesCodec frame (minimal header), pumping while full. */
void rt_send_frame(int fd, const void *p, size_t n);
/* One whole BytesCodec frame from fd within ms (pumping meanwhile), which
 * must be all that arrived; its payload moved to buf[0]. Payload length,
 * -2 on EOF, -1 if none. */
long rt_read_frame(int fd, uint8_t *buf, size_t cap, int ms);
/* True if the client end sees EOF/reset (the module closed its side). */
bool rt_closed(int fd);
/* True if nothing is readable on fd and it is still open. */
bool rt_silent(int fd);
/* Write all of p (pumping while the socket is full). */
void rt_write_all(int fd, const void *p, size_t n);
/* text written on `from` arrives whole on `to` within 1 s (asserts). */
void rt_carries(int from, int to, const char *text);

/* Deterministic test data and its hash. */
void rt_fill(uint8_t *p, size_t n, uint64_t seed);

uint64_t rt_gauge(const char *name);
/* An admin command line; asserts it is registered. The answer lives until the next call. */
const char *rt_admin(const char *line);
uint64_t rt_counter(const char *name);

#endif
