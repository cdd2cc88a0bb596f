/* nt.h — nat-test internals shared by its files and unit tests. */
#ifndef NT_H
#define NT_H

#include <rdv/core.h>
#include <rdv/proto.h>
#include <rdv/svc/registry.h>
#include <rdv/wire.h>

/* Upstream's console: one read of at most 1024 bytes within 1 s. */
#define NT_CONSOLE_READ_MAX 1024
#define NT_CONSOLE_WAIT_MS 1000

/* The serial and server list of TestNatResponse.cu are the registry's
 * (rdv_registry_api.config), so a runtime ConfigUpdate shows here too. */
typedef struct nt_cfg {
    int64_t online_max_ids;       /* OnlineRequest peers accepted at most */
    bool online_on_main;          /* EXT §15.11: also on "main" TCP and WebSocket */
    bool udp_test_nat;            /* EXT §15.7: answer UDP TestNatRequest */
    int64_t udp_test_nat_slack;   /* bytes a UDP answer may exceed its request */
    bool compat_console;          /* upstream's loopback TCP console on the NAT port */
    int64_t console_port;         /* 0 = main TCP port - 1 */
    char *console_bind;           /* "" = all interfaces */
} nt_cfg;

typedef struct nt {
    rdv_core *core;
    const nt_cfg *cfg;
    const rdv_registry_api *reg;
    void *reg_self;
    rdv_listener *console;        /* our own "nat" listener (compat_console) */
    int64_t max_frame;
    struct {
        uint64_t *test_nat, *test_nat_cu, *online, *online_ids, *online_too_many;
        uint64_t *udp_test_nat, *udp_test_nat_dropped;
        uint64_t *console_commands, *console_refused, *console_frames;
    } st;
} nt;

/* nt_console.c */
int nt_console_open(nt *n);
/* Upstream's command names; anything else answers nothing. */
bool nt_console_allowed(const char *word);

#endif
