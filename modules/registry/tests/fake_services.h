/* fake_services.h — what the registry suites put around the module: an
 * in-memory "storage" and a scriptable "blocklist", both published on the
 * fake core under their own module handles, and small client helpers. */
#ifndef REGISTRY_FAKE_SERVICES_H
#define REGISTRY_FAKE_SERVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rdv/svc/blocklist.h>
#include <rdv/svc/registry.h>
#include <rdv/svc/storage.h>

#include "fakecore.h"

/* ---- storage: rows in an array; put() applies at once and queues a
 * completion that fake_storage_complete() delivers (as the real worker
 * reports back on the loop thread). */
typedef struct fake_row {
    uint8_t guid[16];
    char *id;
    uint8_t *uuid;
    size_t uuid_len;
    uint8_t *pk;
    size_t pk_len;
    char *info_ip;
} fake_row;

typedef struct fake_storage {
    fake_row *rows;
    size_t nrows;
    unsigned puts, inserts, updates;
    int put_result;        /* returned by put() when < 0 (nothing stored) */
    unsigned put_limit;    /* when > 0: puts beyond this many return -ENOBUFS (a queue filling up) */
    size_t uuid_cap;       /* when > 0: a put with a longer uuid returns -EINVAL (storage-sqlite's own cap) */
    int done_status;       /* status given to completions */
    long load_result;      /* load_all returns this when < 0 */
    bool last_insert;
    char *done_ids[64];
    size_t ndone;
    rdv_storage_done_fn done;
    void *done_ud;
    void (*lost)(void *ud); /* on_lost (version 2) */
    void *lost_ud;
} fake_storage;

/* Drop every row and call the consumer's on_lost, as storage-sqlite does
 * when its file was deleted. */
void fake_storage_lose(fake_storage *fs);

/* ---- blocklist: answers `allow`, records the last question. */
typedef struct fake_blocklist {
    bool allow;
    unsigned calls;
    char last_id[256];
    rdv_addr last_ip;
} fake_blocklist;

/* ---- the fixture shared by the suites (one per test process) */
typedef struct rt_fixture {
    fc_core *fc;
    void *st;
    const rdv_module *mod;
    fake_storage fs;
    fake_blocklist bl;
    const rdv_registry_api *api;
    void *self;
    unsigned online_hooks, offline_hooks;
    char last_hook_id[256];
    rdv_addr last_hook_addr;
} rt_fixture;

extern rt_fixture rt;

/* fc_new + publish storage (and blocklist if with_blocklist) + hooks. */
void rt_begin(bool with_blocklist);
/* Load the registry with conf; returns fc_load's result. */
int rt_load(const char *conf);
/* rt_begin(true) + rt_load(conf) asserting success. */
void rt_setup_conf(const char *conf);
void rt_setup(void);
/* Unload the registry (storage rows stay) and load it again: a restart. */
void rt_restart(const char *conf);
void rt_teardown(void);

void fake_storage_add(fake_storage *fs, const char *id, const void *uuid, size_t uuid_len, const void *pk,
                      size_t pk_len, const char *info_ip);
const fake_row *fake_storage_find(const fake_storage *fs, const char *id);
/* Deliver queued completions; returns how many. */
size_t fake_storage_complete(fake_storage *fs);

/* Client helpers. from = "ip:port". Each pops the reply; -1 = no reply. */
int rt_reg_peer(const char *id, int serial, const char *from);
int rt_reg_pk(const char *id, const char *uuid, const char *pk, const char *from);
int rt_reg_pk_bin(const char *id, const void *uuid, size_t uuid_len, const void *pk, size_t pk_len,
                  const char *from);
/* reg(id, uuid, pk, from): RegisterPk OK then RegisterPeer request_pk false. */
void rt_reg(const char *id, const char *uuid, const char *pk, const char *from);
/* Service lookup; -ENOENT or 0. */
int rt_lookup(const char *id, rdv_lookup how, rdv_peer_info *out);
bool rt_online(const char *id);
uint64_t rt_counter(const char *name); /* "registry.<name>" */
uint64_t rt_gauge(const char *name);

#endif
