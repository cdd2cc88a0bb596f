/* candy.h — the candy module's internals shared by its source files.
 *
 * candy_proto.c  message layouts, hashes, CIDRs, SD-WAN rules, allocation
 *                (pure functions, candy_proto.h).
 * candy_net.c    the clients of the network: one per WebSocket side, the
 *                virtual-address map, each message's rules (candy.md §6.2)
 *                and routing.
 * candy_module.c descriptor, settings, the ws-server port, stats, admin.
 *
 * Nothing here is exported: the .so exports only rdv_module_get. */
#ifndef CANDY_H
#define CANDY_H

#include <stdbool.h>
#include <stdint.h>

#include <rdv/core.h>
#include <rdv/svc/ws_server.h>

#include "candy_proto.h"

#define RDV_UTHASH_PREFIX candy
#include <rdv/uthash.h>

#define CANDY_MAX_RULES 1024
/* Stock clients (Poco, candy 5.1-6.1) read a message into 1500 bytes; a
 * longer one throws and the client restarts its connection. */
#define CANDY_CLIENT_READ_MAX 1500
/* The rate bucket holds at least this many messages, so that a client's
 * VMAC, EXPTTUN and AUTH pass at any rate (a lost EXPTTUN is never sent
 * again: the client would wait for an address for ever). */
#define CANDY_BURST_MIN 8

typedef struct candy_cfg {
    int64_t port;
    char *bind;
    char *password;
    char *dhcp;
    rdv_strlist sdwan;
    int64_t timestamp_window_s;
    int64_t max_clients;
    int64_t max_message;
    int64_t client_max;
    int64_t first_ms;
    int64_t idle_ms;
    int64_t rate;
    int64_t broadcast_rate;
    int64_t queue_max;
} candy_cfg;

/* One WebSocket side (candy.md §6.1). */
typedef struct candy_client {
    rdv_conn_id id;
    uint32_t ip;                 /* virtual address after a valid AUTH; 0 before */
    bool has_vmac;
    uint8_t vmac[CANDY_VMAC_BYTES];
    rdv_addr peer;               /* attributed address (proxy headers applied) */
    uint64_t since_ms;
    /* token buckets, in thousandths of a message (rate, broadcast_rate) */
    uint64_t tokens, btokens, refill_ms;
    UT_hash_handle hh;           /* by id */
    UT_hash_handle hh_ip;        /* by ip, while it owns the address */
} candy_client;

typedef struct candy_stats {
    uint64_t *clients_refused, *auth_ok, *auth_bad_hash, *kicked, *vmac_ok, *expttun_granted, *expttun_full;
    uint64_t *forward_unicast, *forward_broadcast, *forward_no_owner, *dropped_queue, *dropped_rate;
    uint64_t *dropped_too_big;
    uint64_t *relayed, *protocol_error, *not_authenticated, *timestamp_refused, *ignored, *oom;
} candy_stats;

typedef struct candy_mod {
    rdv_core *core;
    const candy_cfg *cfg;
    const rdv_ws_server_api *srv;
    void *srv_tp;
    rdv_ws_port *port;
    const rdv_ws_side_ops *ops; /* from side_open (the same for every side) */
    void *tp;
    /* the network (candy.md §6.1) */
    candy_secret secret;
    bool has_dhcp;
    candy_cidr dhcp;
    uint32_t cursor;
    candy_rule *rules;
    size_t nrules;
    candy_client *clients;      /* by id */
    candy_client *by_ip;        /* authenticated clients, by virtual address */
    size_t nclients, nauth;
    rdv_conn_id *scratch;       /* broadcast snapshot */
    size_t scratch_cap;
    candy_stats st;
} candy_mod;

/* candy_net.c */
extern const rdv_ws_side_api candy_side_api;
/* Parse dhcp and sdwan of cfg into the out parameters (validate, init,
 * reload); 0 or -EINVAL with a reason naming the setting in err. */
int candy_parse_network(const candy_cfg *cfg, bool *has_dhcp, candy_cidr *dhcp, candy_rule **rules, size_t *nrules,
                        char *err, size_t errlen);
/* Forget every client (port closed: no callback comes any more). */
void candy_forget_all(candy_mod *m);

#endif
