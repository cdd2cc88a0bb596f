/* rdv/types.h — basic types shared by the core and every module.
 *
 * Public API of rdvd. Everything a module may see lives under include/rdv/.
 */
#ifndef RDV_TYPES_H
#define RDV_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Handler / callback results (ARCHITECTURE.md §3). Negative errno values are
 * also accepted from handlers: they are logged (rate-limited) and counted. */
enum {
    RDV_OK = 0,        /* handled; stop the chain */
    RDV_DECLINED = 1,  /* not mine / not now: try the next handler in the chain */
    RDV_CLOSE = 2,     /* close this connection (on UDP: drop the datagram) */
};

/* Transports a message can arrive on; used as a bit mask in handler tables. */
typedef enum rdv_transport {
    RDV_TR_UDP = 1u << 0,
    RDV_TR_TCP = 1u << 1,
    RDV_TR_WS = 1u << 2,
} rdv_transport;
#define RDV_TR_STREAM (RDV_TR_TCP | RDV_TR_WS)
#define RDV_TR_ANY (RDV_TR_UDP | RDV_TR_TCP | RDV_TR_WS)

/* A peer address, always stored normalised (wire.md §5.1, §5.4): IPv4-mapped
 * and IPv4-compatible IPv6 addresses become AF_INET, except ::1. */
typedef struct rdv_addr {
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } u;
    socklen_t len;
} rdv_addr;

/* Text form "1.2.3.4:5" or "[::1]:5"; RDV_ADDR_STRLEN bytes always suffice. */
#define RDV_ADDR_STRLEN 64

/* Connections are named by a 64-bit id that is never reused in a process
 * lifetime, so a module can keep it (e.g. a parked punch requester) without
 * holding a dangling pointer: sending to a closed id returns -ENOTCONN. */
typedef uint64_t rdv_conn_id;

/* Log levels (syslog numbering). */
typedef enum rdv_log_level {
    RDV_LOG_ERR = 3,
    RDV_LOG_WARN = 4,
    RDV_LOG_NOTICE = 5,
    RDV_LOG_INFO = 6,
    RDV_LOG_DEBUG = 7,
} rdv_log_level;

/* A list of strings from configuration (core-owned). */
typedef struct rdv_strlist {
    size_t n;
    char **v;
} rdv_strlist;

/* Growable text buffer with a hard cap, used for admin console output. */
typedef struct rdv_buf rdv_buf;

typedef struct rdv_core rdv_core;
typedef struct rdv_core_api rdv_core_api;
typedef struct rdv_listener rdv_listener;
typedef struct rdv_timer rdv_timer;
typedef struct rdv_io rdv_io;
typedef struct rdv_async rdv_async;

#ifdef __cplusplus
}
#endif
#endif
