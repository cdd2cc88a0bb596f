/* ipblocker.c — the ip-blocker module: the "blocklist" service (RegisterPk
 * limits per source IP, rendezvous.md §11.1) with the admin command
 * `ip-blocker` / `ib`, and an operator ban list enforced in the ACCESS
 * phase (`ban` setting; admin `ban`, `unban`, `bans`).
 *
 * Files: ipblocker_table.c (§11.1 and `ib`), ipblocker_ban.c (bans),
 * ipblocker_banfile.c and ipblocker_banwriter.c (admin bans kept in
 * admin_ban_file across restarts). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <rdv/wire.h>

#include "ipblocker.h"

unsigned ipblocker_hash(const void *p, size_t n)
{
    return (unsigned)rdv_keyed_hash(p, n);
}

/* ------------------------------------------------------------------ settings */
#define IPB_RELOAD RDV_SETF_RELOAD
static const rdv_setting ipblocker_settings[] = {
    RDV_SETTING_INT(ipblocker_cfg, req_window_s, 60, 1, 86400, IPB_RELOAD,
                    "RegisterPk request window per source IP, seconds (upstream 60)"),
    RDV_SETTING_INT(ipblocker_cfg, req_max, 30, 1, 1000000, IPB_RELOAD,
                    "RegisterPk from one IP is refused while its window count is over this (upstream 30)"),
    RDV_SETTING_INT(ipblocker_cfg, id_window_s, 86400, 1, 31536000, IPB_RELOAD,
                    "distinct-id window per source IP, seconds (upstream 86400)"),
    RDV_SETTING_INT(ipblocker_cfg, id_max, 300, 1, 100000, IPB_RELOAD,
                    "new ids from one IP are refused while it used more than this many (upstream 300)"),
    RDV_SETTING_INT(ipblocker_cfg, max_entries, 100000, 1, 100000000, IPB_RELOAD,
                    "source IPs tracked; full -> the entry updated longest ago is evicted"),
    RDV_SETTING_INT(ipblocker_cfg, max_ids, 1000000, 1, 1000000000, IPB_RELOAD,
                    "ids remembered over all IPs (8 bytes each); full -> oldest entries are evicted"),
    RDV_SETTING_INT(ipblocker_cfg, prune_s, 60, 1, 86400, 0, "how often entries with both windows expired are removed"),
    RDV_SETTING_INT(ipblocker_cfg, ipv6_prefix, 64, 32, 128, IPB_RELOAD,
                    "IPv6 sources count per network of this prefix length (128 = per address, as upstream)"),
    { "ban", RDV_SET_STRLIST, offsetof(ipblocker_cfg, ban), IPB_RELOAD, 0, 0, NULL, 0, 65536, 0, 0,
      "banned sources (IPs or CIDRs): every message and connection from them is dropped" },
    RDV_SETTING_INT(ipblocker_cfg, ban_max, 4096, 1, 65536, IPB_RELOAD, "bans held (configured plus admin)"),
    /* Not reloadable: the file is read at start only, and a running
     * writer would otherwise write the admin bans into a file never read. */
    RDV_SETTING_STRING(ipblocker_cfg, admin_ban_file, "admin-bans.txt", 0,
                       "admin bans (console ban/unban) are kept in this file across restarts; \"\" = not kept"),
    RDV_SETTING_END,
};

static int ipblocker_validate(const void *cfg_, char *err, size_t errlen)
{
    const ipblocker_cfg *cfg = cfg_;
    ipblocker_ban_key key;
    for (size_t i = 0; i < cfg->ban.n; i++)
        if (!ipblocker_parse_ban(cfg->ban.v[i], &key)) {
            snprintf(err, errlen, "ip-blocker.ban: '%s' is not an IP address or CIDR", cfg->ban.v[i]);
            return -EINVAL;
        }
    if ((int64_t)cfg->ban.n > cfg->ban_max) {
        snprintf(err, errlen, "ip-blocker.ban: %zu entries, over ban_max = %lld", cfg->ban.n, (long long)cfg->ban_max);
        return -EINVAL;
    }
    return 0;
}

/* ------------------------------------------------------------------ stats */
static uint64_t ipblocker_g_entries(void *ud) { return ((ipblocker *)ud)->nentries; }
static uint64_t ipblocker_g_ids(void *ud) { return ((ipblocker *)ud)->nids; }
static uint64_t ipblocker_g_bans(void *ud) { return ((ipblocker *)ud)->nbans; }
static uint64_t ipblocker_g_conns(void *ud) { return ((ipblocker *)ud)->nconns; }

static int ipblocker_stats(ipblocker *b)
{
    rdv_core *c = b->core;
    const rdv_core_api *api = b->api;
#define C(f, help) (b->st.f = api->counter(c, #f, help))
    C(allowed, "RegisterPk allowed by the IP blocker");
    C(blocked_rate, "RegisterPk refused: too many from one IP in the request window");
    C(blocked_ids, "RegisterPk refused: too many distinct ids from one IP");
    C(evicted, "IP entries evicted because the table was full");
    C(pruned, "IP entries removed after both windows expired");
    C(ids_not_kept, "ids not remembered because max_ids could not be freed");
    C(oom, "allocations that failed");
    C(banned_msgs, "messages from banned sources dropped");
    C(banned_conns, "connections from banned sources refused");
    C(banned_closed, "open connections closed when their source got banned");
    C(ban_file_writes, "admin_ban_file rewritten after ban / unban");
    C(ban_file_errors, "admin_ban_file writes that failed (admin bans kept in memory, retried)");
    C(ban_file_skipped, "admin_ban_file entries not loaded at start: not an IP/CIDR, or past ban_max");
#undef C
    int r = 0;
    r |= api->gauge(c, "entries", ipblocker_g_entries, b, "source IPs tracked");
    r |= api->gauge(c, "ids", ipblocker_g_ids, b, "ids remembered over all IPs");
    r |= api->gauge(c, "bans", ipblocker_g_bans, b, "banned IPs and networks");
    r |= api->gauge(c, "tracked_conns", ipblocker_g_conns, b, "open connections tracked for bans");
    return r ? -EEXIST : 0;
}

/* ------------------------------------------------------------------ lifecycle */
static const rdv_blocklist_api ipblocker_api = { .register_pk_allowed = ipblocker_allowed };

static void ipblocker_on_prune(void *ud)
{
    ipblocker_prune(ud);
    ipblocker_banfile_retry(ud);
}

static void ipblocker_destroy(void *state)
{
    ipblocker *b = state;
    if (!b)
        return;
    if (b->prune)
        b->api->timer_free(b->prune);
    ipblocker_banfile_close(b); /* before the bans go: it may write them */
    ipblocker_table_free(b);
    ipblocker_bans_free(b);
    free(b);
}

static int ipblocker_init(rdv_core *core, const void *cfg_, void **state)
{
    if (sodium_init() < 0)
        return -EIO;
    ipblocker *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->core = core, b->api = core->api, b->cfg = cfg_;
    randombytes_buf(b->id_key, sizeof b->id_key);
    const rdv_core_api *api = core->api;
    int r;
    /* Configured bans first: the file's admin bans take what ban_max leaves. */
    if ((r = ipblocker_stats(b)) < 0 || (r = ipblocker_apply_bans(b, &b->cfg->ban)) < 0 ||
        (r = ipblocker_banfile_open(b)) < 0)
        goto fail;
    if ((r = api->service_publish(core, RDV_SVC_BLOCKLIST, RDV_SVC_BLOCKLIST_VERSION, &ipblocker_api, b)) < 0)
        goto fail;
    if ((r = api->admin_command(core, "ip-blocker", "[<ip>|<start>] [-]  RegisterPk limits per IP (ib)",
                                ipblocker_ib_cmd, b)) < 0 ||
        (r = api->admin_command(core, "ib", "[<ip>|<start>] [-]  same as ip-blocker", ipblocker_ib_cmd, b)) < 0 ||
        (r = api->admin_command(core, "ban", "<ip|cidr>  drop everything from it", ipblocker_ban_cmd, b)) < 0 ||
        (r = api->admin_command(core, "unban", "<ip|cidr>  lift a ban", ipblocker_unban_cmd, b)) < 0 ||
        (r = api->admin_command(core, "bans", "list banned IPs and networks", ipblocker_bans_cmd, b)) < 0)
        goto fail;
    if ((r = api->hook_add(core, RDV_HOOK_CONN_OPEN, 0, ipblocker_on_conn_open, b)) < 0 ||
        (r = api->hook_add(core, RDV_HOOK_CONN_CLOSE, 0, ipblocker_on_conn_close, b)) < 0)
        goto fail;
    if (!(b->prune = api->timer_new(core, ipblocker_on_prune, b))) {
        r = -ENOMEM;
        goto fail;
    }
    *state = b;
    return 0;
fail:
    ipblocker_destroy(b);
    return r;
}

static int ipblocker_start(void *state)
{
    ipblocker *b = state;
    uint64_t ms = (uint64_t)b->cfg->prune_s * 1000;
    b->api->timer_start(b->prune, ms, ms);
    if (b->nbans)
        RDV_INFO(b->core, "%zu bans active", b->nbans);
    return 0;
}

static int ipblocker_reconfigure(void *state, const void *cfg_)
{
    ipblocker *b = state;
    const ipblocker_cfg *old = b->cfg;
    b->cfg = cfg_;
    int r = ipblocker_apply_bans(b, &b->cfg->ban);
    if (r < 0) {
        b->cfg = old;
        if (r == -ENOSPC)
            RDV_ERR(b->core, "ip-blocker.ban: configured plus admin bans exceed ban_max; reload refused");
        return r;
    }
    if (old->ipv6_prefix != b->cfg->ipv6_prefix) {
        ipblocker_drop_v6(b);
        RDV_INFO(b->core, "ip-blocker.ipv6_prefix is now %lld: IPv6 sources start with new entries",
                 (long long)b->cfg->ipv6_prefix);
    }
    ipblocker_enforce_bounds(b); /* lower bounds apply at once */
    return 0;
}

/* At start and in --check (state NULL): admin_ban_file readable, its
 * directory writable. On reload the file is ours and not re-read. */
static int ipblocker_check(rdv_core *core, void *state, const void *cfg_, char *err, size_t errlen)
{
    const ipblocker_cfg *cfg = cfg_;
    (void)core;
    if (state || !cfg->admin_ban_file[0])
        return 0;
    return ipblocker_banfile_check(cfg->admin_ban_file, err, errlen);
}

static const rdv_dep ipblocker_provides[] = {
    { .name = RDV_SVC_BLOCKLIST, .version = RDV_SVC_BLOCKLIST_VERSION },
    { .name = NULL },
};

static const rdv_module ipblocker_module = {
    RDV_MODULE_HEAD("ip-blocker", "1.0.0"),
    .description = "RegisterPk limits per source IP (blocklist service) and an operator ban list",
    .settings = ipblocker_settings,
    .config_size = sizeof(ipblocker_cfg),
    .validate = ipblocker_validate,
    .access = ipblocker_access,
    .access_priority = -100, /* bans are cheap: before every other ACCESS check */
    .provides = ipblocker_provides,
    .init = ipblocker_init,
    .start = ipblocker_start,
    .reconfigure = ipblocker_reconfigure,
    .destroy = ipblocker_destroy,
    .check = ipblocker_check,
};
RDV_MODULE_EXPORT(ipblocker_module)
