/* pc_admin.c — upstream hbbs console commands owned by this module
 * (rendezvous.md §10), with upstream's exact output formats. They are
 * ordinary rdvd admin commands (Unix socket, `rdvctl`); nat-test's opt-in
 * compatibility console reaches them from loopback TCP too. `ib` and `ic`
 * belong to the ip-blocker and registry modules. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "pc.h"

static void pc_cmd_help(void *ud, int argc, char **argv, rdv_buf *out)
{
    pc *p = ud;
    (void)argc, (void)argv;
    /* Upstream's `h`: seven lines, whatever modules are loaded. */
    p->core->api->out(out, "relay-servers(rs) <separated by ,>\n"
                           "reload-geo(rg)\n"
                           "ip-blocker(ib) [<ip>|<number>] [-]\n"
                           "ip-changes(ic) [<id>|<number>] [-]\n"
                           "punch-requests(pr) [<number>] [-]\n"
                           "always-use-relay(aur)\n"
                           "test-geo(tg) <ip1> <ip2>\n");
}

static void pc_cmd_relay_servers(void *ud, int argc, char **argv, rdv_buf *out)
{
    pc *p = ud;
    if (argc > 1) {
        const char *list = argv[1];
        pc_relays_set(p, &list, 1); /* both lists; names resolve in the background */
        return;
    }
    for (size_t i = 0; i < p->relays.nactive; i++)
        p->core->api->out(out, "%s\n", p->relays.conf[p->relays.active[i]]->text);
}

static void pc_cmd_reload_geo(void *ud, int argc, char **argv, rdv_buf *out)
{
    (void)ud, (void)argc, (void)argv, (void)out; /* listed by `h`, never implemented upstream */
}

/* A usize as Rust parses it: decimal digits only; anything else fails. */
static bool pc_parse_usize(const char *s, size_t *v)
{
    if (!s || !*s)
        return false;
    size_t x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || x > (SIZE_MAX - 9) / 10)
            return false;
        x = x * 10 + (size_t)(*s - '0');
    }
    *v = x;
    return true;
}

static void pc_cmd_punch_requests(void *ud, int argc, char **argv, rdv_buf *out)
{
    pc *p = ud;
    if (argc > 1 && strcmp(argv[1], "-") == 0) {
        pc_punchlog_clear(p);
        return;
    }
    size_t start = 0, page = 10;
    if (argc > 1 && !pc_parse_usize(argv[1], &start))
        start = 0;
    if (argc > 2 && !pc_parse_usize(argv[2], &page))
        page = 10;
    if (page == 0)
        page = 10;
    pc_punchlog *l = &p->log;
    for (size_t i = start; i < l->n && i - start < page; i++) {
        const pc_punch *e = &l->ring[(l->start + i) % l->cap];
        time_t t = (time_t)(e->wall_us / 1000000u);
        struct tm tm;
        char ts[32];
        gmtime_r(&t, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        char id[RDV_WORD_CAP(64)]; /* past 256 bytes of text an id ends in "..." */
        p->core->api->out(out, "%s %s -> %s@%s\n", ts, e->from_ip, rdv_word_escape(e->id, strlen(e->id), id, sizeof id),
                          e->to_ip);
    }
}

static void pc_cmd_always_use_relay(void *ud, int argc, char **argv, rdv_buf *out)
{
    pc *p = ud;
    if (argc > 1) {
        /* Deviation (required): only the flag changes; upstream also fed
         * the argument to the relay-list parser. */
        p->always_use_relay = strcasecmp(argv[1], "Y") == 0;
        return;
    }
    p->core->api->out(out, "ALWAYS_USE_RELAY: %s\n", p->always_use_relay ? "true" : "false");
}

static bool pc_is_ip(const char *s)
{
    uint8_t b[16];
    return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

/* Rust's {:?} of a string: quoted, with quote, backslash and control
 * characters escaped. */
void pc_rust_debug_str(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    if (cap < 3)
        return;
    out[n++] = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c && n + 10 < cap; c++) {
        if (*c == '"' || *c == '\\')
            n += (size_t)snprintf(out + n, cap - n, "\\%c", *c);
        else if (*c == '\n')
            n += (size_t)snprintf(out + n, cap - n, "\\n");
        else if (*c == '\r')
            n += (size_t)snprintf(out + n, cap - n, "\\r");
        else if (*c == '\t')
            n += (size_t)snprintf(out + n, cap - n, "\\t");
        else if (*c < 0x20 || *c == 0x7f)
            n += (size_t)snprintf(out + n, cap - n, "\\u{%x}", *c);
        else
            out[n++] = (char)*c;
    }
    out[n++] = '"';
    out[n] = '\0';
}

/* pick_relay() printed as {:?}, no newline; it consumes one rotation step. */
static void pc_cmd_test_geo(void *ud, int argc, char **argv, rdv_buf *out)
{
    pc *p = ud;
    if (argc < 2 || !pc_is_ip(argv[1]) || (argc > 2 && !pc_is_ip(argv[2])))
        return;
    char q[2 * PC_RELAY_TEXT_MAX + 16];
    pc_rust_debug_str(pc_pick_relay(p), q, sizeof q);
    p->core->api->out(out, "%s", q);
}

int pc_admin_register(pc *p)
{
    static const struct {
        const char *name, *usage;
        rdv_admin_fn fn;
    } cmds[] = {
        { "h", "upstream hbbs console help", pc_cmd_help },
        { "relay-servers", "[<list separated by ,>] show or replace the relay servers", pc_cmd_relay_servers },
        { "rs", "= relay-servers", pc_cmd_relay_servers },
        { "reload-geo", "(no effect, as upstream)", pc_cmd_reload_geo },
        { "rg", "= reload-geo", pc_cmd_reload_geo },
        { "punch-requests", "[- | <start> [<page size>]] punch-request log", pc_cmd_punch_requests },
        { "pr", "= punch-requests", pc_cmd_punch_requests },
        { "always-use-relay", "[Y|N] show or set forced relay", pc_cmd_always_use_relay },
        { "aur", "= always-use-relay", pc_cmd_always_use_relay },
        { "test-geo", "<ip1> [<ip2>] the relay the next punch would get", pc_cmd_test_geo },
        { "tg", "= test-geo", pc_cmd_test_geo },
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int r = p->core->api->admin_command(p->core, cmds[i].name, cmds[i].usage, cmds[i].fn, p);
        if (r < 0)
            return r;
    }
    return 0;
}
