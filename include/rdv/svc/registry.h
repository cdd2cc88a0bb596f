/* rdv/svc/registry.h — the "registry" service: the peer table
 * (rendezvous.md §2). Provided by the registry module. */
#ifndef RDV_SVC_REGISTRY_H
#define RDV_SVC_REGISTRY_H

#include "rdv/types.h"

#define RDV_SVC_REGISTRY "registry"
#define RDV_SVC_REGISTRY_VERSION 1

/* The lookup flavours of rendezvous.md §2.2 are observable; say which. */
typedef enum rdv_lookup {
    RDV_LOOKUP_MEMORY = 0, /* RegisterPeer, RequestRelay, OnlineRequest */
    RDV_LOOKUP_STORED = 1, /* PunchHoleRequest, signed pk: memory, then stored rows */
} rdv_lookup;

typedef struct rdv_peer_info {
    const char *id;
    rdv_addr addr;          /* socket_addr of the last accepted registration (0.0.0.0:0 if none) */
    uint64_t last_reg_ms;   /* core monotonic ms of that registration; 0 = never */
    bool online;            /* now - last_reg_ms < the online window (30 s) */
    const uint8_t *pk;      /* borrowed until the next registry call */
    size_t pk_len;
    const char *ip;         /* info.ip: IP of the last accepted RegisterPk */
    rdv_conn_id conn;       /* stream connection it registered on (EXT, issue 6); 0 = UDP */
} rdv_peer_info;

/* Hook arguments (const rdv_peer_event *). */
#define RDV_HOOK_PEER_ONLINE "registry.online"   /* offline -> online */
#define RDV_HOOK_PEER_OFFLINE "registry.offline" /* online window expired */
typedef struct rdv_peer_event {
    const char *id;
    const rdv_addr *addr;
} rdv_peer_event;

typedef struct rdv_registry_api {
    /* 0 and *out filled, or -ENOENT. */
    int (*lookup)(void *self, const char *id, rdv_lookup how, rdv_peer_info *out);
    size_t (*online_count)(void *self);
    size_t (*peer_count)(void *self);
    /* EXT (issue 6): bind/unbind a peer to the stream connection it
     * registered on, so pushes reach it over that connection. */
    int (*set_conn)(void *self, const char *id, rdv_conn_id conn);
    /* EXT (issue 6): the ConfigUpdate state in force (rendezvous.md §6.1
     * step 4, §6.8, §6.10): the serial and the rendezvous-server list,
     * including what a loopback ConfigUpdate set at run time. *servers is
     * borrowed until the next registry call. Returns 0. */
    int (*config)(void *self, int32_t *serial, const rdv_strlist **servers);
} rdv_registry_api;

#endif
