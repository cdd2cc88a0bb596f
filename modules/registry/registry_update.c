/* registry_update.c — ConfigUpdate from loopback (rendezvous.md §6.10),
 * SoftwareUpdate (§6.11) and the rendezvous-server list they rely on. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include <rdv/proto.h>
#include <rdv/wire.h>

#include "registry.h"

/* At most this many servers are kept from a ConfigUpdate (each at most
 * REGISTRY_SERVER_MAX bytes); the rest is ignored. */
#define REGISTRY_SERVERS_MAX 64
#define REGISTRY_SERVER_MAX 255

/* ------------------------------------------------------------------ server list */
static bool registry_port_valid(const char *s)
{
    /* Rust's u16 parse: optional '+', then digits. */
    if (*s == '+')
        s++;
    if (!*s)
        return false;
    unsigned long v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s))
            return false;
        v = v * 10 + (unsigned long)(*s - '0');
        if (v > 65535)
            return false;
    }
    return true;
}

/* A host name we accept without resolving it: letters, digits, '-', '_', '.'. */
static bool registry_name_valid(const char *h)
{
    if (!*h || strlen(h) > 253)
        return false;
    for (; *h; h++)
        if (!isalnum((unsigned char)*h) && *h != '-' && *h != '.' && *h != '_')
            return false;
    return true;
}

static bool registry_host_valid(const char *host, bool resolve)
{
    uint8_t b[16];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') { /* bracketed IPv6 literal */
        char inner[64];
        if (n - 2 >= sizeof inner)
            return false;
        memcpy(inner, host + 1, n - 2);
        inner[n - 2] = '\0';
        return inet_pton(AF_INET6, inner, b) == 1;
    }
    if (inet_pton(AF_INET, host, b) == 1 || inet_pton(AF_INET6, host, b) == 1)
        return true;
    if (!resolve)
        return registry_name_valid(host);
    struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return false;
    freeaddrinfo(res);
    return true;
}

/* §8.1 validity test (upstream test_if_valid_server): "host:port" (split at
 * the last ':') or a bare host. resolve = use DNS, only at start-up: on the
 * loop thread (reload, ConfigUpdate) names are checked for form instead. */
bool registry_server_valid(const char *s, bool resolve)
{
    size_t n = strlen(s);
    if (!n || n > REGISTRY_SERVER_MAX)
        return false;
    char buf[REGISTRY_SERVER_MAX + 1];
    memcpy(buf, s, n + 1);
    char *colon = strrchr(buf, ':');
    if (colon) {
        *colon = '\0';
        if (!registry_port_valid(colon + 1))
            return false;
    }
    return buf[0] && registry_host_valid(buf, resolve);
}

void registry_free_servers(registry *reg)
{
    for (size_t i = 0; i < reg->nservers; i++)
        free(reg->servers[i]);
    free(reg->servers);
    reg->servers = NULL;
    reg->nservers = 0;
}

int registry_set_servers(registry *reg, char *const *v, size_t n, bool resolve)
{
    char **list = calloc(n ? n : 1, sizeof *list);
    if (!list)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n && k < REGISTRY_SERVERS_MAX; i++) {
        if (!v[i] || !v[i][0])
            continue;
        if (!registry_server_valid(v[i], resolve)) {
            RDV_LOG_RL(reg->core, RDV_LOG_WARN, "invalid rendezvous server '%s' dropped", v[i]);
            continue;
        }
        if (!(list[k] = strdup(v[i]))) {
            for (size_t j = 0; j < k; j++)
                free(list[j]);
            free(list);
            return -ENOMEM;
        }
        k++;
    }
    registry_free_servers(reg);
    reg->servers = list;
    reg->nservers = k;
    return 0;
}

/* ------------------------------------------------------------------ ConfigUpdate */
int registry_on_config_update(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    registry *reg = state;
    const Hbb__RendezvousMessage *msg = msg_;
    if (strcmp(ctx->listener_name, reg->cfg->listener) != 0)
        return RDV_DECLINED;
    const Hbb__ConfigUpdate *cu = msg->configure_update;
    /* ctx->peer is normalised: ::ffff:127.0.0.1 is loopback too. Never a reply. */
    if (!rdv_addr_is_loopback(ctx->peer) || cu->serial <= reg->serial) {
        (*reg->st.config_update_ignored)++;
        return RDV_OK;
    }
    if (registry_set_servers(reg, cu->rendezvous_servers, cu->n_rendezvous_servers, false) < 0)
        return -ENOMEM;
    reg->serial = cu->serial;
    (*reg->st.config_updates)++;
    RDV_LOG_RL(reg->core, RDV_LOG_INFO, "configure updated: serial=%d, %zu rendezvous servers", reg->serial,
               reg->nservers);
    return RDV_OK;
}

/* ------------------------------------------------------------------ SoftwareUpdate */
/* hbb_common::get_version_from_url: the text after the last '-', without
 * the extension unless what follows the last '.' is an integer
 * ("rustdesk-1.1.9.exe" -> "1.1.9", "rustdesk-1.1.9" -> "1.1.9"); "" when
 * the URL has no '-' or no '.'. Positions count characters, and '-' / '.'
 * are ASCII, so byte offsets give the same substrings. */
void registry_version_from_url(const char *url, char *out, size_t cap)
{
    out[0] = '\0';
    const char *dash = strrchr(url, '-'), *dot = strrchr(url, '.');
    if (!dash || !dot || !cap)
        return;
    const char *from = dash + 1;
    size_t n = strlen(from);
    if (dot > dash && !rdv_parse_i32(dot + 1, NULL))
        n = (size_t)(dot - from);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, from, n);
    out[n] = '\0';
}

int registry_on_software_update(void *state, const rdv_msg_ctx *ctx, const void *msg_)
{
    registry *reg = state;
    const Hbb__RendezvousMessage *msg = msg_;
    if (strcmp(ctx->listener_name, reg->cfg->listener) != 0)
        return RDV_DECLINED;
    /* Off unless software_url is set (deprecated; the answer can be larger
     * than the request, rendezvous.md §4.4). */
    if (!reg->version[0] || strcmp(msg->software_update->url, reg->version) == 0)
        return RDV_OK;
    Hbb__SoftwareUpdate su = HBB__SOFTWARE_UPDATE__INIT;
    su.url = reg->cfg->software_url;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_SOFTWARE_UPDATE;
    m.software_update = &su;
    int r = reg->api->send_udp(reg->core, ctx->listener, ctx->peer, &m);
    if (r == 0)
        (*reg->st.software_updates)++;
    return RDV_OK;
}
