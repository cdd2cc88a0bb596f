/* pc_test.h — shared fixtures of the punch-coordinator suites: a fake core
 * with small fake "registry" and "keys" services, and message builders.
 * Items of /work/shared/spec/rendezvous-checklist.md are cited as R<n>. */
#ifndef PC_TEST_H
#define PC_TEST_H

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sodium.h>

#include "fakecore.h"
#include "pc.h"

/* ---- fake registry: a few peers, both lookup flavours (rendezvous.md §2.2) */
typedef struct fake_peer {
    char id[128];
    rdv_addr addr;
    bool online;
    bool in_memory;   /* false: only a stored row (MEMORY lookups miss it) */
    uint8_t pk[32];
    size_t pk_len;
    rdv_conn_id conn;
} fake_peer;

#define FAKE_PEERS 16
typedef struct fake_registry {
    fake_peer peers[FAKE_PEERS];
    size_t n;
    unsigned lookups_memory, lookups_stored;
} fake_registry;

typedef struct fake_keys {
    bool can_sign;
    char licence[64];
    char pk_b64[64];
    uint8_t pk[32], sk[64];
} fake_keys;

/* ---- fake login service (login-gate, §15.10): refuses with `refusal`
 * when set and the token is empty or "bad"; records what it was asked. */
typedef struct fake_login {
    const char *refusal;
    char last_token[64];
    unsigned asked;
} fake_login;

extern fc_core *fc;
extern fake_login LOGIN;
extern pc *P;                 /* the module's state */
extern fake_registry REG;
extern fake_keys KEYS;

/* Fake core + services + the module loaded with conf. The "main" UDP and
 * TCP listeners exist (port 21116). */
void pct_setup_conf(const char *conf);
void pct_setup(void);
void pct_teardown(void);

/* A registered peer: online at addr "ip:port" (UDP) with pk = byte b x 32. */
fake_peer *pct_peer(const char *id, const char *addr, bool online, uint8_t b);

/* ---- messages (static storage: valid until the next call of the same builder) */
Hbb__RendezvousMessage *pct_phr(const char *id, int nat, const char *licence);
Hbb__RendezvousMessage *pct_phs(const uint8_t *sa, size_t san, const char *id, const char *relay, int nat,
                                const char *version);
Hbb__RendezvousMessage *pct_local_addr(const uint8_t *sa, size_t san, const uint8_t *la, size_t lan,
                                       const char *relay, const char *id, const char *version);
Hbb__RendezvousMessage *pct_msg_relay_response(Hbb__RelayResponse *rr);
Hbb__RendezvousMessage *pct_msg_request_relay(Hbb__RequestRelay *rr);

/* ---- expectations */
/* Open a TCP connection on "main" from "ip:port". */
rdv_conn_id pct_open(const char *from);
/* The next send is a UDP push to `to` from the main UDP listener; returns it. */
const fc_sent *pct_expect_push(const char *to, int union_case);
/* The next send is a message on conn; returns it. */
const fc_sent *pct_expect_conn(rdv_conn_id conn, int union_case);
void pct_expect_nothing(void);
/* raw == hex bytes (e.g. "5a 00"). */
void pct_expect_bytes(const fc_sent *s, const char *hex);
/* true if needle occurs in s->raw */
bool pct_raw_contains(const fc_sent *s, const uint8_t *needle, size_t n);
/* Demangle bytes and compare with "ip:port". */
void pct_expect_addr(ProtobufCBinaryData sa, const char *addr);
/* Open pk with the fake server key; check IdPk{id, pk == b x 32}. */
void pct_expect_signed(ProtobufCBinaryData pk, const char *id, uint8_t b);
/* Admin command output (asserts the command exists). */
const char *pct_admin(const char *line);

/* A park: A from `a` sends PunchHoleRequest for id (online B) and B gets
 * the PunchHole; returns A's connection and copies the mangled A address. */
rdv_conn_id pct_park(const char *a, const char *id, uint8_t *sa, size_t *san);

#endif
