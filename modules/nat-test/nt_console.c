/* nt_console.c — upstream's admin console on the NAT port, opt-in
 * (`compat_console`; rendezvous.md §10). rdvd's console is a Unix socket;
 * this is only for operators whose scripts do `printf 'rs …' | nc 127.0.0.1
 * 21115`.
 *
 * The ACCESS phase sees decoded messages, not raw bytes, and a dispatch
 * listener hands out frames only, so the console cannot ride on the core's
 * "nat" listener. Instead this module owns the NAT port: it opens a RAW
 * listener named "nat" and decides per connection at accept time:
 *   - loopback source (127/8, ::1, after normalisation): the console — one
 *     read of at most 1024 bytes within 1 s, valid UTF-8, trimmed, one of
 *     upstream's commands run through api->admin_exec, one write, close;
 *   - anything else: hbb frames as on a dispatch listener — the first
 *     complete frame goes through ACCESS and the dispatch table via
 *     api->conn_dispatch (listener name "nat", so the same handlers
 *     answer), then the connection closes (one request per connection).
 * The operator must then not list "nat" in core.listeners (checked at
 * start, with that advice, before the bind would fail as "port in use"). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nt.h"

/* Upstream's console commands; rdvd's own (stats, reload, …) stay on the
 * Unix socket. */
bool nt_console_allowed(const char *w)
{
    static const char *const names[] = { "h", "relay-servers", "rs", "reload-geo", "rg", "ip-blocker", "ib",
                                         "ip-changes", "ic", "punch-requests", "pr", "always-use-relay", "aur",
                                         "test-geo", "tg" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(w, names[i]) == 0)
            return true;
    return false;
}

static size_t nt_frame_header(void *ud, size_t n, uint8_t out[16])
{
    (void)ud;
    return rdv_frame_header(n, out);
}

/* Protobuf connections on our RAW listener speak hbb frames. */
static const rdv_codec nt_hbb_codec = { .name = "hbb", .transport = RDV_TR_TCP, .header = nt_frame_header };

static bool nt_is_console(nt *n, rdv_conn_id id)
{
    rdv_conn_info info;
    return n->core->api->conn_info(n->core, id, &info) == 0 && rdv_addr_is_loopback(&info.peer);
}

static int nt_open_cb(void *ud, rdv_conn_id id, const rdv_addr *peer)
{
    nt *n = ud;
    const rdv_core_api *api = n->core->api;
    if (rdv_addr_is_loopback(peer))
        return api->conn_set_idle(n->core, id, NT_CONSOLE_WAIT_MS) < 0 ? RDV_CLOSE : RDV_OK;
    return api->conn_set_codec(n->core, id, &nt_hbb_codec, n) < 0 ? RDV_CLOSE : RDV_OK;
}

static void nt_console_run(nt *n, rdv_conn_id id, const uint8_t *p, size_t len)
{
    const rdv_core_api *api = n->core->api;
    if (len > NT_CONSOLE_READ_MAX)
        len = NT_CONSOLE_READ_MAX; /* the rest of a longer input is never read */
    char line[NT_CONSOLE_READ_MAX + 1];
    if (!rdv_utf8_valid(p, len) || memchr(p, '\0', len)) {
        (*n->st.console_refused)++;
        api->conn_close(n->core, id, false);
        return;
    }
    memcpy(line, p, len);
    line[len] = '\0';
    char *s = line, *e = line + len;
    while (*s && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    char word[32];
    size_t wl = strcspn(s, " \t\r\n");
    char *answer = NULL;
    if (wl && wl < sizeof word) {
        memcpy(word, s, wl);
        word[wl] = '\0';
        if (nt_console_allowed(word))
            answer = api->admin_exec(n->core, s);
    }
    /* A command whose module is not loaded answers like any unknown one:
     * nothing (the core's "unknown command" line is not upstream's). */
    if (answer && strncmp(answer, "unknown command '", 17) == 0)
        answer[0] = '\0';
    if (answer && answer[0]) {
        (*n->st.console_commands)++;
        api->send_bytes(n->core, id, (const uint8_t *)answer, strlen(answer));
    } else if (answer) {
        (*n->st.console_commands)++;
    } else {
        (*n->st.console_refused)++;
    }
    free(answer);
    api->conn_close(n->core, id, true);
}

static long nt_data_cb(void *ud, rdv_conn_id id, const uint8_t *p, size_t len)
{
    nt *n = ud;
    if (nt_is_console(n, id)) {
        nt_console_run(n, id, p, len);
        return (long)len;
    }
    size_t hl, pl;
    rdv_frame_status st = rdv_frame_parse(p, len, (size_t)n->max_frame, &hl, &pl);
    if (st == RDV_FRAME_NEED)
        return 0;
    if (st == RDV_FRAME_TOO_BIG)
        return -1; /* closed at once, nothing sent (R7) */
    (*n->st.console_frames)++;
    n->core->api->conn_dispatch(n->core, id, p + hl, pl);
    /* exactly one request per connection on the NAT port (§4.3) */
    n->core->api->conn_close(n->core, id, true);
    return (long)(hl + pl);
}

static void nt_close_cb(void *ud, rdv_conn_id id, rdv_close_reason why)
{
    (void)ud, (void)id, (void)why; /* no per-connection state */
}

static const rdv_conn_ops nt_console_ops = {
    .on_open = nt_open_cb,
    .on_data = nt_data_cb,
    .on_close = nt_close_cb,
};

int nt_console_open(nt *n)
{
    const rdv_core_api *api = n->core->api;
    if (api->listener_find(n->core, "nat", RDV_TR_TCP)) {
        RDV_ERR(n->core, "compat_console owns the NAT port: remove the \"nat\" listener from core.listeners");
        return -EADDRINUSE;
    }
    int port = (int)n->cfg->console_port;
    if (!port) {
        rdv_listener *m = api->listener_find(n->core, "main", RDV_TR_TCP);
        if (!m || api->listener_port(m) < 2) {
            RDV_ERR(n->core, "compat_console: set console_port (no TCP listener \"main\" to derive it from)");
            return -EINVAL;
        }
        port = api->listener_port(m) - 1;
    }
    rdv_listen_spec spec = {
        .name = "nat",
        .transport = RDV_TR_TCP,
        .bind = n->cfg->console_bind,
        .port = port,
        .mode = RDV_LISTEN_RAW,
        .max_buffer = (size_t)n->max_frame + RDV_FRAME_HDR_MAX, /* one whole frame fits */
        .ops = &nt_console_ops,
        .ud = n,
    };
    n->console = api->listen(n->core, &spec);
    if (!n->console)
        return -EADDRINUSE;
    RDV_NOTICE(n->core, "compat console: loopback connections to TCP port %d are admin commands", port);
    return 0;
}
