/* relay_cmd.c — the hbbr console commands (relay.md §8), shared by the
 * core's admin socket and the opt-in loopback TCP console. Answers are
 * upstream's, byte for byte; changes live in memory only (SIGHUP re-reads
 * conf.d and the list files). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

static const char relay_help[] =
    "blacklist-add(ba) <ip>\n"
    "blacklist-remove(br) <ip>\n"
    "blacklist(b) <ip>\n"
    "blocklist-add(Ba) <ip>\n"
    "blocklist-remove(Br) <ip>\n"
    "blocklist(B) <ip>\n"
    "downgrade-threshold(dt) [value]\n"
    "downgrade-start-check(t) [value(second)]\n"
    "limit-speed(ls) [value(Mb/s)]\n"
    "total-bandwidth(tb) [value(Mb/s)]\n"
    "single-bandwidth(sb) [value(Mb/s)]\n"
    "usage(u)\n";

/* Trim, then split on every single space (two spaces give an empty word). */
int relay_cmd_split(char *line, char **argv, int max)
{
    static const char ws[] = " \t\r\n\v\f";
    char *b = line, *e = line + strlen(line);
    while (*b && strchr(ws, *b))
        b++;
    while (e > b && strchr(ws, e[-1]))
        e--;
    *e = '\0';
    int argc = 0;
    argv[argc++] = b;
    for (char *p = b; *p && argc < max; p++)
        if (*p == ' ') {
            *p = '\0';
            argv[argc++] = p + 1;
        }
    return argc;
}

static bool relay_is(const char *cmd, const char *longname, const char *shortname)
{
    return strcmp(cmd, longname) == 0 || strcmp(cmd, shortname) == 0;
}

static void relay_set_cmd_add(relay *r, relay_set *s, const char *arg)
{
    if (!arg)
        return;
    for (const char *p = arg;;) {
        size_t len = strcspn(p, "|");
        int e = len ? relay_set_add(s, p, len) : 0;
        if (e == -ENOSPC) {
            (*r->st.list_full)++;
        } else if (e == -ENOMEM) { /* that entry is not added; the set is as it was */
            (*r->st.oom)++;
            RDV_LOG_RL(r->core, RDV_LOG_WARN, "out of memory: %.*s not added to the %s", (int)(len > 64 ? 64 : len),
                       p, s->name);
        }
        if (!p[len])
            break;
        p += len + 1;
    }
    r->list_gen++;
}

static void relay_set_cmd_remove(relay *r, relay_set *s, const char *arg)
{
    if (!arg)
        return;
    if (strcmp(arg, "all") == 0) {
        relay_set_clear(s);
    } else {
        char *dup = strdup(arg);
        for (char *save = NULL, *t = dup ? strtok_r(dup, "|", &save) : NULL; t; t = strtok_r(NULL, "|", &save))
            relay_set_del(s, t);
        free(dup);
    }
    r->list_gen++;
}

static void relay_set_cmd_show(const relay_set *s, const char *arg, rdv_text *out)
{
    if (arg) {
        rdv_text_printf(out, "%s\n", relay_set_has(s, arg) ? "true" : "false");
        return;
    }
    for (const relay_set_entry *e = s->head; e; e = e->hh.next)
        rdv_text_printf(out, "%s\n", e->key);
}

/* Bandwidth commands: set with a value > 0, else print "<v>Mb/s". A value
 * that does not parse or is <= 0 is ignored silently, as upstream does; one
 * outside the bounds of the conf.d setting is refused with a line saying
 * so (upstream takes any value; the bucket arithmetic and the stall-free
 * behaviour are only sized for those bounds). */
static void relay_mbps_cmd(uint64_t *bps, const char *setting, const char *arg, rdv_text *out)
{
    double v;
    char num[400], lo[400], hi[400];
    if (!arg) {
        rdv_text_printf(out, "%sMb/s\n", relay_fmt_f64((double)*bps / 1048576.0, num, sizeof num));
        return;
    }
    if (relay_parse_pos_f64(arg, &v) < 0)
        return;
    const rdv_setting *s = relay_settings;
    while (s->name && strcmp(s->name, setting) != 0)
        s++;
    if (s->name && (v < s->dmin || v > s->dmax)) {
        rdv_text_printf(out, "%s Mb/s is out of range: relay.%s takes %s to %s Mb/s; unchanged\n", arg, setting,
                          relay_fmt_f64(s->dmin, lo, sizeof lo), relay_fmt_f64(s->dmax, hi, sizeof hi));
        return;
    }
    *bps = relay_mbps_to_bps(v);
}

static int relay_usage_cmp(const void *a, const void *b)
{
    const relay_pair *x = *(relay_pair *const *)a, *y = *(relay_pair *const *)b;
    return x->total_bits < y->total_bits ? 1 : x->total_bits > y->total_bits ? -1 : 0;
}

/* One line per pair older than a tick, largest total first (§8). */
static void relay_usage(relay *r, rdv_text *out)
{
    relay_pair **v = malloc((r->npairs ? r->npairs : 1) * sizeof *v);
    if (!v)
        return;
    size_t n = 0;
    for (relay_pair *p = r->pairs; p; p = p->next)
        if (p->elapsed_ms > 0)
            v[n++] = p;
    qsort(v, n, sizeof *v, relay_usage_cmp);
    for (size_t i = 0; i < n; i++) {
        const relay_pair *p = v[i];
        char ip[INET6_ADDRSTRLEN];
        rdv_text_printf(out, "%s:%u: %llus %.2fMB %ukb/s %llukb/s %ukb/s\n", relay_ip_text(&p->addr[1], ip, sizeof ip),
                          (unsigned)rdv_addr_port(&p->addr[1]), (unsigned long long)(p->elapsed_ms / 1000),
                          (double)p->total_bits / 8.0 / 1048576.0, p->highest,
                          (unsigned long long)(p->total_bits / p->elapsed_ms), p->current);
    }
    free(v);
}

void relay_cmd_run(relay *r, int argc, char **argv, rdv_text *out)
{
    if (argc < 1)
        return;
    const char *cmd = argv[0], *arg = argc > 1 ? argv[1] : NULL;
    uint64_t now = r->core->api->now_ms(r->core);
    char num[400];
    if (strcmp(cmd, "h") == 0) {
        rdv_text_printf(out, "%s", relay_help);
    } else if (relay_is(cmd, "blacklist-add", "ba")) {
        relay_set_cmd_add(r, &r->black, arg);
    } else if (relay_is(cmd, "blacklist-remove", "br")) {
        relay_set_cmd_remove(r, &r->black, arg);
    } else if (relay_is(cmd, "blacklist", "b")) {
        relay_set_cmd_show(&r->black, arg, out);
    } else if (relay_is(cmd, "blocklist-add", "Ba")) {
        relay_set_cmd_add(r, &r->block, arg);
    } else if (relay_is(cmd, "blocklist-remove", "Br")) {
        relay_set_cmd_remove(r, &r->block, arg);
    } else if (relay_is(cmd, "blocklist", "B")) {
        relay_set_cmd_show(&r->block, arg, out);
    } else if (relay_is(cmd, "downgrade-threshold", "dt")) {
        double v;
        if (!arg)
            rdv_text_printf(out, "%s\n", relay_fmt_f64(r->bw.dt_hundredths / 100.0, num, sizeof num));
        else if (relay_parse_pos_f64(arg, &v) == 0)
            r->bw.dt_hundredths = v * 100.0 >= 4294967295.0 ? UINT32_MAX : (uint32_t)(v * 100.0);
    } else if (relay_is(cmd, "downgrade-start-check", "t")) {
        uint64_t v;
        if (!arg)
            rdv_text_printf(out, "%llus\n", (unsigned long long)(r->bw.start_check_ms / 1000));
        else if (relay_parse_pos_u64(arg, &v) == 0)
            r->bw.start_check_ms = v > UINT64_MAX / 1000 ? UINT64_MAX / 1000 * 1000 : v * 1000;
    } else if (relay_is(cmd, "limit-speed", "ls")) {
        relay_mbps_cmd(&r->bw.limit_bps, "limit_speed", arg, out);
    } else if (relay_is(cmd, "total-bandwidth", "tb")) {
        relay_mbps_cmd(&r->bw.total_bps, "total_bandwidth", arg, out);
        relay_bucket_set_rate(&r->bw.global, r->bw.total_bps, now); /* live (§6.4) */
    } else if (relay_is(cmd, "single-bandwidth", "sb")) {
        relay_mbps_cmd(&r->bw.single_bps, "single_bandwidth", arg, out);
    } else if (relay_is(cmd, "usage", "u")) {
        relay_usage(r, out);
    }
    /* anything else: empty answer */
}

/* ------------------------------------------------------------------ admin socket */
static void relay_admin_cb(void *ud, int argc, char **argv, rdv_buf *out)
{
    relay *r = ud;
    /* Past the admin answer's 1 MiB, so that the core is the one cutting
     * (with its marker); handed over line by line, so that the cut falls
     * between lines, not before the first. */
    rdv_text t = { .limit = 2u << 20 };
    char *help = "h";
    if (strcmp(argv[0], "relay-help") == 0)
        argv = &help, argc = 1;
    relay_cmd_run(r, argc, argv, &t);
    for (size_t off = 0; off < t.len;) {
        const char *nl = memchr(t.p + off, '\n', t.len - off);
        size_t n = nl ? (size_t)(nl - (t.p + off)) + 1 : t.len - off;
        r->core->api->out(out, "%.*s", (int)n, t.p + off);
        off += n;
    }
    rdv_text_free(&t);
}

int relay_cmds_register(relay *r)
{
    /* "h" stays with the core's console ("help"); relay-help prints ours. */
    static const struct { const char *name, *usage; } cmds[] = {
        { "relay-help", "the hbbr console help (h on the loopback console)" },
        { "blacklist-add", "<ip>[|ip...] throttle these IPs to limit-speed" },
        { "ba", "<ip>[|ip...] = blacklist-add" },
        { "blacklist-remove", "<ip>[|ip...]|all" },
        { "br", "= blacklist-remove" },
        { "blacklist", "[ip] list the blacklist, or true/false for ip" },
        { "b", "= blacklist" },
        { "blocklist-add", "<ip>[|ip...] refuse these IPs" },
        { "Ba", "= blocklist-add" },
        { "blocklist-remove", "<ip>[|ip...]|all" },
        { "Br", "= blocklist-remove" },
        { "blocklist", "[ip] list the blocklist, or true/false for ip" },
        { "B", "= blocklist" },
        { "downgrade-threshold", "[value] fraction of single-bandwidth that downgrades a pair" },
        { "dt", "= downgrade-threshold" },
        { "downgrade-start-check", "[seconds] pair age before downgrade is considered" },
        { "t", "= downgrade-start-check" },
        { "limit-speed", "[Mb/s] rate of blacklisted and downgraded pairs" },
        { "ls", "= limit-speed" },
        { "total-bandwidth", "[Mb/s] rate over all pairs" },
        { "tb", "= total-bandwidth" },
        { "single-bandwidth", "[Mb/s] rate of one pair (new pairs)" },
        { "sb", "= single-bandwidth" },
        { "usage", "active pairs: address, age, MB, highest/average/current kb/s" },
        { "u", "= usage" },
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int e = r->core->api->admin_command(r->core, cmds[i].name, cmds[i].usage, relay_admin_cb, r);
        if (e < 0)
            return e;
    }
    return 0;
}
