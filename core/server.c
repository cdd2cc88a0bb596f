/* core/server.c — start-up, signals, reload and shutdown. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "rdv/wire.h"
#include "server.h"

#define SHUTDOWN_POLL_S 0.05
static const char *const core_skip[] = { "listeners", NULL };

static void register_core_stats(rdv_server *s)
{
    struct { uint64_t **p; const char *name, *help; } c[] = {
        { &s->st.accepted, "tcp_accepted", "TCP connections accepted" },
        { &s->st.refused_limit, "tcp_refused_limit", "connections refused at core.max_connections" },
        { &s->st.refused_access, "tcp_refused_access", "connections refused by the ACCESS phase" },
        { &s->st.accept_emfile, "accept_out_of_fds", "accept paused: out of file descriptors" },
        { &s->st.closed_oversize, "closed_oversize", "connections closed for a frame over core.max_frame" },
        { &s->st.tcp_refused_oom, "tcp_refused_oom", "connections closed at accept: out of memory" },
        { &s->st.closed_read_total, "closed_read_total", "connections closed: their read buffer would pass core.read_total" },
        { &s->st.closed_write_total, "closed_write_total", "connections closed: their write queue would pass core.write_total" },
        { &s->st.closed_protocol, "closed_protocol", "connections closed for a protocol error" },
        { &s->st.closed_idle, "closed_idle", "connections closed by the idle timeout" },
        { &s->st.closed_overflow, "closed_write_overflow", "connections closed: write queue full" },
        { &s->st.udp_in, "udp_in", "datagrams received" },
        { &s->st.udp_out, "udp_out", "datagrams sent" },
        { &s->st.udp_undecodable, "udp_undecodable", "datagrams that are not a valid RendezvousMessage" },
        { &s->st.udp_empty, "udp_empty", "empty messages on UDP (ignored)" },
        { &s->st.udp_unhandled, "udp_unhandled", "UDP messages no handler took (ignored)" },
        { &s->st.udp_send_fail, "udp_send_failed", "datagrams the kernel refused to send" },
        { &s->st.udp_pauses, "udp_pauses", "UDP reads deferred by core.udp_coalesce_us (dense traffic)" },
        { &s->st.udp_hot, "udp_hot", "dense UDP wake-ups read on arrival: most datagrams from sources that sent within core.udp_coalesce_us" },
        { &s->st.tcp_frames, "tcp_frames", "complete frames received" },
        { &s->st.tcp_undecodable, "tcp_undecodable", "frames that are not a valid RendezvousMessage" },
        { &s->st.tcp_unhandled, "tcp_unhandled", "stream messages no handler took (connection closed)" },
        { &s->st.msg_dropped_access, "access_dropped", "messages dropped by the ACCESS phase" },
        { &s->st.handler_errors, "handler_errors", "handlers that returned an error" },
        { &s->st.record_bad, "record_bad", "secure-TCP records that failed to open" },
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        *c[i].p = rdv_stat_counter(s, "core", c[i].name, c[i].help);
}

static uint64_t gauge_conns(void *ud) { return ((rdv_server *)ud)->nconns; }
static uint64_t gauge_arena_peak(void *ud) { return ((rdv_server *)ud)->arena.peak; }
static uint64_t gauge_read_bytes(void *ud) { return ((rdv_server *)ud)->rbuf_bytes; }
static uint64_t gauge_write_bytes(void *ud) { return ((rdv_server *)ud)->wbuf_bytes; }

/* text: the launcher's generated base layer, or NULL. */
static int load_conf(rdv_server *s, const char *text, rdv_conf **out, char *err, size_t errlen)
{
    rdv_conf *c = rdv_conf_new();
    if (!c)
        return -ENOMEM;
    if (text && rdv_conf_load_base(c, s->conf_text_name, text, err, errlen) < 0)
        goto fail;
    if (s->conf_dir && rdv_conf_load_dir(c, s->conf_dir, err, errlen) < 0)
        goto fail;
    for (size_t i = 0; i < s->overrides.n; i++)
        if (rdv_conf_override(c, s->overrides.v[i], err, errlen) < 0)
            goto fail;
    *out = c;
    return 0;
fail:
    rdv_conf_free(c);
    return -EINVAL;
}

static int open_dispatch_listeners(rdv_server *s)
{
    for (size_t i = 0; i < s->nlcfg; i++) {
        rdv_listener_cfg *lc = &s->lcfg[i];
        rdv_listen_spec spec = { .name = lc->name, .bind = lc->bind, .port = (int)lc->port,
                                 .mode = RDV_LISTEN_DISPATCH, .idle_ms = (uint64_t)lc->idle_ms };
        if (lc->udp) {
            spec.transport = RDV_TR_UDP;
            if (rdv_listener_open(s, &spec, NULL, NULL) < 0)
                return -1;
        }
        if (lc->tcp) {
            spec.transport = RDV_TR_TCP;
            rdv_listener *l = NULL;
            if (rdv_listener_open(s, &spec, NULL, &l) < 0)
                return -1;
            /* Accepted connections inherit it (and lose autotuning): a
             * client that never reads pins at most 2 x sndbuf of kernel
             * memory, not tcp_wmem's 4 MiB. */
            int sb = (int)lc->sndbuf;
            if (sb > 0 && setsockopt(l->fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb) < 0)
                rdv_logf("core", RDV_LOG_WARN, "listener '%s': SO_SNDBUF %d: %s (the kernel's default stays)",
                         lc->name, sb, strerror(errno));
        }
    }
    return 0;
}

static void begin_shutdown(rdv_server *s);

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop, (void)revents;
    rdv_server *s = w->data;
    if (w->signum == SIGHUP) {
        rdv_logf("core", RDV_LOG_NOTICE, "SIGHUP: reloading configuration");
        rdv_server_reload(s);
        return;
    }
    if (s->stopping) { /* a second signal: stop now */
        rdv_logf("core", RDV_LOG_NOTICE, "second stop signal: exiting without waiting");
        ev_break(s->loop, EVBREAK_ALL);
        return;
    }
    rdv_logf("core", RDV_LOG_NOTICE, "%s: stopping (draining for at most %lld ms)", strsignal(w->signum),
             (long long)s->cfg.shutdown_ms);
    begin_shutdown(s);
}

static void shutdown_poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    rdv_server *s = w->data;
    if (s->nconns == 0 || rdv_now_ms(s) >= s->shutdown_deadline_ms)
        ev_break(loop, EVBREAK_ALL);
}

static void begin_shutdown(rdv_server *s)
{
    s->stopping = true;
    rdv_listeners_stop(s);
    for (size_t i = s->nmods; i-- > 0;) {
        rdv_mod *m = s->mods[i];
        if (m->started && m->desc->stop)
            m->desc->stop(m->state);
        m->started = false;
    }
    /* Let queued replies go out, then close; bounded by core.shutdown_ms. */
    rdv_conns_close_all(s, true);
    s->shutdown_deadline_ms = rdv_now_ms(s) + (uint64_t)s->cfg.shutdown_ms;
    ev_timer_init(&s->shutdown_timer, shutdown_poll_cb, 0., SHUTDOWN_POLL_S);
    s->shutdown_timer.data = s;
    ev_timer_start(s->loop, &s->shutdown_timer);
}

static int fill_core(rdv_server *s, const rdv_conf *conf, rdv_core_cfg *cfg, rdv_listener_cfg **lcfg, size_t *nl,
                     char *err, size_t errlen)
{
    if (rdv_conf_fill(conf, "core", rdv_core_settings, core_skip, cfg, err, errlen) < 0)
        return -EINVAL;
    void *arr = NULL;
    if (rdv_conf_fill_list(conf, "core", "listeners", rdv_listener_settings, sizeof(rdv_listener_cfg), &arr, nl,
                           err, errlen) < 0) {
        rdv_conf_release(rdv_core_settings, cfg);
        return -EINVAL;
    }
    *lcfg = arr;
    rdv_log_level lvl;
    if (rdv_log_parse_level(cfg->log_level, &lvl) < 0) {
        char where[256];
        snprintf(err, errlen, "%s: core.log_level: '%s' is not a level (use error, warn, notice, info or debug)",
                 rdv_conf_group_origin(conf, "core", where, sizeof where), cfg->log_level);
        goto bad;
    }
    for (size_t i = 0; i < *nl; i++) {
        if (!*(*lcfg)[i].name) {
            snprintf(err, errlen, "core.listeners[%zu]: a listener needs a name (e.g. \"main\")", i);
            goto bad;
        }
        if (!(*lcfg)[i].udp && !(*lcfg)[i].tcp) {
            snprintf(err, errlen, "core.listeners[%zu] (%s): neither udp nor tcp is enabled", i, (*lcfg)[i].name);
            goto bad;
        }
    }
    /* One whole frame, and one raw connection's buffer, must fit. */
    int64_t rmin = cfg->max_frame + RDV_FRAME_HDR_MAX > cfg->read_buffer ? cfg->max_frame + RDV_FRAME_HDR_MAX
                                                                         : cfg->read_buffer;
    if (cfg->read_total < rmin) {
        char where[256];
        snprintf(err, errlen,
                 "%s: core.read_total = %lld is below one frame (core.max_frame = %lld, + %d header bytes) or "
                 "core.read_buffer = %lld: set read_total to at least %lld",
                 rdv_conf_group_origin(conf, "core", where, sizeof where), (long long)cfg->read_total,
                 (long long)cfg->max_frame, RDV_FRAME_HDR_MAX, (long long)cfg->read_buffer, (long long)rmin);
        goto bad;
    }
    /* One queue at its limit plus one message (+ header and MAC) must fit. */
    int64_t wmin = cfg->write_queue_max + cfg->max_frame + 64;
    if (cfg->write_total < wmin) {
        char where[256];
        snprintf(err, errlen,
                 "%s: core.write_total = %lld is below one full write queue (core.write_queue_max = %lld) plus one "
                 "frame (core.max_frame = %lld): set write_total to at least %lld",
                 rdv_conf_group_origin(conf, "core", where, sizeof where), (long long)cfg->write_total,
                 (long long)cfg->write_queue_max, (long long)cfg->max_frame, (long long)wmin);
        goto bad;
    }
    (void)s;
    return 0;
bad:
    rdv_conf_release_list(rdv_listener_settings, sizeof(rdv_listener_cfg), *lcfg, *nl);
    *lcfg = NULL;
    rdv_conf_release(rdv_core_settings, cfg);
    return -EINVAL;
}

/* Levenshtein distance of a and b, capped: enough to spot a typo. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 64;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

/* A group must be core's or a module's. One for an installed module that
 * core.modules leaves out is harmless (a module switched off with its file
 * kept: warned at start). One that names no module at all is a typo, and
 * ignoring it would run that module on defaults without a word (and drop
 * the operator's settings on the next SIGHUP): refused, with the nearest
 * name. */
static int check_groups(rdv_server *s, const rdv_conf *conf, const char *module_path, bool warn, char *err,
                        size_t errlen)
{
    size_t n;
    const char *const *g = rdv_conf_groups(conf, &n);
    for (size_t i = 0; i < n; i++) {
        bool known = strcmp(g[i], "core") == 0;
        for (size_t j = 0; !known && j < s->nmods; j++)
            known = strcmp(g[i], s->mods[j]->desc->name) == 0;
        if (known)
            continue;
        char where[256];
        rdv_conf_group_origin(conf, g[i], where, sizeof where);
        if (rdv_module_exists(module_path, g[i])) {
            if (warn)
                rdv_logf("core", RDV_LOG_WARN, "%s: group '%s' is for a module not in core.modules; ignored", where,
                         g[i]);
            continue;
        }
        const char *near = edit_distance(g[i], "core") <= 2 ? "core" : NULL;
        size_t best = 3;
        for (size_t j = 0; j < s->nmods; j++) {
            size_t d = edit_distance(g[i], s->mods[j]->desc->name);
            if (d < best)
                best = d, near = s->mods[j]->desc->name;
        }
        char dirs[4200];
        snprintf(err, errlen, "%s: group '%s' names no module (none in core.modules, no %s.so in %s): fix the name%s%s%s "
                 "or remove the group", where, g[i], g[i], rdv_module_dirs(module_path, dirs, sizeof dirs),
                 near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
        return -EINVAL;
    }
    return 0;
}

/* Clients never learn the NAT-test port: they use the rendezvous port - 1
 * (client-flows.md §1, rendezvous.md §2). Any other "nat" port is legal
 * (a port mapping may restore it) but usually a mistake. */
static void warn_nat_port(rdv_server *s)
{
    const rdv_listener_cfg *main_l = NULL, *nat = NULL;
    for (size_t i = 0; i < s->nlcfg; i++) {
        if (strcmp(s->lcfg[i].name, "main") == 0)
            main_l = &s->lcfg[i];
        else if (strcmp(s->lcfg[i].name, "nat") == 0)
            nat = &s->lcfg[i];
    }
    if (main_l && nat && nat->port != main_l->port - 1) {
        char where[256];
        rdv_logf("core", RDV_LOG_WARN,
                 "%s: core.listeners 'nat' is on port %lld, but clients test NAT and ask online status on the "
                 "rendezvous port - 1 (%lld): use port %lld unless a port mapping in front of rdvd makes up for it",
                 rdv_conf_setting_origin(s->conf, "core", "listeners", where, sizeof where), (long long)nat->port,
                 (long long)main_l->port - 1, (long long)main_l->port - 1);
    }
}

int rdv_server_init(rdv_server *s, const rdv_boot *boot)
{
    char err[1024] = "";
    const char *conf_dir = boot->conf_dir;
    const rdv_strlist *overrides = boot->overrides;
    bool dry = boot->dry;
    memset(s, 0, sizeof *s);
    if (boot->conf_text && (!(s->conf_text = strdup(boot->conf_text)) ||
                            !(s->conf_text_name = strdup(boot->conf_text_name ? boot->conf_text_name : "generated"))))
        return -ENOMEM;
    s->conf_regen = boot->conf_regen, s->conf_regen_ud = boot->conf_regen_ud;
    s->core_mod.handle.api = &rdv_api_table;
    s->core_mod.srv = s;
    s->exit_code = 0;
    if (conf_dir && !(s->conf_dir = strdup(conf_dir)))
        return -ENOMEM;
    if (overrides && overrides->n) {
        s->overrides.v = calloc(overrides->n, sizeof(char *));
        if (!s->overrides.v)
            return -ENOMEM;
        for (size_t i = 0; i < overrides->n; i++)
            if (!(s->overrides.v[s->overrides.n++] = strdup(overrides->v[i])))
                return -ENOMEM;
    }
    if (load_conf(s, s->conf_text, &s->conf, err, sizeof err) < 0 || fill_core(s, s->conf, &s->cfg, &s->lcfg, &s->nlcfg, err, sizeof err) < 0)
        goto fail;
    warn_nat_port(s);
    rdv_log_level lvl = RDV_LOG_INFO;
    rdv_log_parse_level(s->cfg.log_level, &lvl);
    rdv_log_set_level(lvl);

    s->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!s->loop) {
        snprintf(err, sizeof err, "cannot create the event loop");
        goto fail;
    }
    /* One arena for every message: a message may expand to at most this much
     * when unpacked; larger ones fail to decode (bounded memory). Pages are
     * only touched as needed. */
    size_t arena_cap = (size_t)s->cfg.max_frame * 8 + 65536;
    s->arena_mem = malloc(arena_cap);
    s->pack_cap = (size_t)s->cfg.max_frame;
    s->pack_buf = malloc(s->pack_cap);
    if (!s->arena_mem || !s->pack_buf || rdv_udp_batch_init(s) < 0) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    rdv_arena_init(&s->arena, s->arena_mem, arena_cap);
    register_core_stats(s);
    rdv_stat_gauge(s, "core", "connections", gauge_conns, s, "connections open now");
    rdv_stat_gauge(s, "core", "arena_peak_bytes", gauge_arena_peak, s, "largest decoded message, bytes");
    rdv_stat_gauge(s, "core", "read_bytes", gauge_read_bytes, s, "bytes held in connections' read buffers (core.read_total)");
    rdv_stat_gauge(s, "core", "write_bytes", gauge_write_bytes, s, "bytes held in connections' write queues (core.write_total)");

    /* core.user: before anything is opened or made, so every file, socket
     * and module check is the user's (--check only looks the user up). */
    if ((dry ? rdv_user_check(s, err, sizeof err) : rdv_user_switch(s, err, sizeof err)) < 0)
        goto fail;
    if (rdv_admin_open(s, dry ? "" : s->cfg.admin_socket) < 0) {
        snprintf(err, sizeof err, "admin console not available (see above)");
        goto fail;
    }
    if (rdv_load_modules(s, err, sizeof err) < 0 || check_groups(s, s->conf, s->cfg.module_path, true, err, sizeof err) < 0)
        goto fail;
    if (dry)
        return 0;
    rdv_fit_nofile(s);
    if (rdv_init_modules(s, err, sizeof err) < 0)
        goto fail;
    if (open_dispatch_listeners(s) < 0) {
        snprintf(err, sizeof err, "cannot open the listeners of core.listeners (see above)");
        goto fail;
    }
    for (size_t i = 0; i < s->nmods; i++) {
        rdv_mod *m = s->mods[i];
        unsigned long errors = rdv_log_errors();
        int r = m->desc->start ? m->desc->start(m->state) : 0;
        if (r < 0) {
            rdv_mod_failed(m->desc->name, "start", r, errors, err, sizeof err);
            goto fail;
        }
        m->started = true;
    }
    ev_signal_init(&s->sig_term, signal_cb, SIGTERM);
    ev_signal_init(&s->sig_int, signal_cb, SIGINT);
    ev_signal_init(&s->sig_hup, signal_cb, SIGHUP);
    ev_signal_init(&s->sig_quit, signal_cb, SIGQUIT); /* upstream stops on QUIT too */
    s->sig_term.data = s->sig_int.data = s->sig_hup.data = s->sig_quit.data = s;
    ev_signal_start(s->loop, &s->sig_term);
    ev_signal_start(s->loop, &s->sig_int);
    ev_signal_start(s->loop, &s->sig_hup);
    ev_signal_start(s->loop, &s->sig_quit);
    rdv_logf("core", RDV_LOG_NOTICE, "rdvd %s ready: %zu modules", RDV_VERSION, s->nmods);
    return 0;
fail:
    rdv_logf("core", RDV_LOG_ERR, "%s", err);
    snprintf(s->err, sizeof s->err, "%s", err);
    return -1;
}

int rdv_server_run(rdv_server *s)
{
    signal(SIGPIPE, SIG_IGN);
    ev_run(s->loop, 0);
    return s->exit_code;
}

void rdv_server_free(rdv_server *s)
{
    if (s->loop) {
        for (size_t i = s->nmods; i-- > 0;) {
            rdv_mod *m = s->mods[i];
            if (m->started && m->desc->stop)
                m->desc->stop(m->state);
            m->started = false;
        }
        rdv_conns_close_all(s, false);
        ev_signal_stop(s->loop, &s->sig_term);
        ev_signal_stop(s->loop, &s->sig_int);
        ev_signal_stop(s->loop, &s->sig_hup);
        ev_signal_stop(s->loop, &s->sig_quit);
        ev_timer_stop(s->loop, &s->shutdown_timer);
    }
    rdv_unload_modules(s);
    rdv_dispatch_free(s);
    if (s->loop)
        rdv_admin_close(s);
    rdv_listeners_free(s);
    rdv_services_free(s);
    rdv_stats_free(s);
    if (s->lcfg)
        rdv_conf_release_list(rdv_listener_settings, sizeof(rdv_listener_cfg), s->lcfg, s->nlcfg);
    rdv_conf_release(rdv_core_settings, &s->cfg);
    rdv_conf_free(s->conf);
    for (size_t i = 0; i < s->overrides.n; i++)
        free(s->overrides.v[i]);
    free(s->overrides.v);
    free(s->conf_dir);
    free(s->conf_text), free(s->conf_text_name);
    free(s->arena_mem), free(s->pack_buf);
    rdv_udp_batch_free(s);
    if (s->loop)
        ev_loop_destroy(s->loop);
    memset(s, 0, sizeof *s);
}

/* Two phases: parse and validate everything into new structs; only if all of
 * it is acceptable hand the new settings to the modules. */
int rdv_server_reload(rdv_server *s)
{
    char err[1024] = "";
    rdv_conf *nc = NULL;
    rdv_core_cfg ncore;
    memset(&ncore, 0, sizeof ncore);
    rdv_listener_cfg *nl = NULL;
    size_t nnl = 0;
    void **ncfg = calloc(s->nmods ? s->nmods : 1, sizeof *ncfg);
    int rc = -1;
    if (!ncfg)
        return -1;
    char *text = s->conf_regen ? s->conf_regen(s->conf_regen_ud, err, sizeof err) : NULL;
    if (s->conf_regen && !text)
        goto out;
    if (load_conf(s, text ? text : s->conf_text, &nc, err, sizeof err) < 0 || fill_core(s, nc, &ncore, &nl, &nnl, err, sizeof err) < 0)
        goto out;
    const rdv_setting *chg = rdv_conf_nonreloadable_change(rdv_core_settings, &s->cfg, &ncore);
    bool lchg = nnl != s->nlcfg;
    for (size_t i = 0; !lchg && i < nnl; i++)
        lchg = rdv_conf_nonreloadable_change(rdv_listener_settings, &s->lcfg[i], &nl[i]) != NULL;
    if (chg || lchg) {
        snprintf(err, sizeof err, "core.%s changed: this setting needs a restart", chg ? chg->name : "listeners");
        goto out_core;
    }
    if (check_groups(s, nc, ncore.module_path, false, err, sizeof err) < 0)
        goto out_core;
    for (size_t i = 0; i < s->nmods; i++) {
        rdv_mod *m = s->mods[i];
        if (rdv_mod_fill_config(s, nc, m->desc, &ncfg[i], err, sizeof err) < 0)
            goto out_mods;
        if (m->desc->settings && (chg = rdv_conf_nonreloadable_change(m->desc->settings, m->cfg, ncfg[i]))) {
            snprintf(err, sizeof err, "%s.%s changed: this setting needs a restart", m->desc->name, chg->name);
            goto out_mods;
        }
    }
    s->cfg_pending = &ncore; /* what check() sees through core_int */
    bool refused = false;
    for (size_t i = 0; i < s->nmods && !refused; i++)
        refused = s->mods[i]->desc->settings &&
                  rdv_mod_check(nc, s->mods[i], s->mods[i]->state, ncfg[i], err, sizeof err) < 0;
    s->cfg_pending = NULL;
    if (refused)
        goto out_mods;
    /* Phase two: commit. A module may still refuse here (a check against
     * its running state); then the modules before it go back to their old
     * settings, so a reload is taken whole or not at all. */
    for (size_t i = 0; i < s->nmods; i++) {
        rdv_mod *m = s->mods[i];
        if (!m->desc->settings)
            continue;
        if (m->desc->reconfigure && m->desc->reconfigure(m->state, ncfg[i]) < 0) {
            snprintf(err, sizeof err, "module '%s' refused the new settings (the reason is on the line above)",
                     m->desc->name);
            for (size_t j = i; j-- > 0;) {
                rdv_mod *b = s->mods[j];
                if (!b->desc->settings)
                    continue;
                if (b->desc->reconfigure && b->desc->reconfigure(b->state, ncfg[j]) < 0)
                    rdv_logf(b->desc->name, RDV_LOG_ERR, "could not take its old settings back; it keeps the new ones");
                else {
                    void *back = b->cfg;
                    b->cfg = ncfg[j];
                    ncfg[j] = back; /* the new one, freed below */
                }
            }
            goto out_mods;
        }
        void *old = m->cfg;
        m->cfg = ncfg[i];
        ncfg[i] = old; /* freed below */
    }
    rdv_log_level lvl;
    if (rdv_log_parse_level(ncore.log_level, &lvl) == 0)
        rdv_log_set_level(lvl);
    { /* Every non-reloadable core setting is unchanged (checked above), so
       * taking the new struct whole applies all reloadable ones; the old one
       * is released below. Nothing keeps pointers into s->cfg. */
        rdv_core_cfg old = s->cfg;
        s->cfg = ncore;
        ncore = old;
    }
    rdv_conf_free(s->conf);
    s->conf = nc;
    nc = NULL;
    if (text) { /* the launcher's text this configuration was made from */
        free(s->conf_text);
        s->conf_text = text;
        text = NULL;
    }
    rc = 0;
    rdv_logf("core", RDV_LOG_NOTICE, "configuration reloaded");
out_mods:
    for (size_t i = 0; i < s->nmods; i++)
        if (ncfg[i]) {
            rdv_conf_release(s->mods[i]->desc->settings, ncfg[i]);
            free(ncfg[i]);
        }
out_core:
    rdv_conf_release_list(rdv_listener_settings, sizeof(rdv_listener_cfg), nl, nnl);
    rdv_conf_release(rdv_core_settings, &ncore);
out:
    if (rc < 0) {
        rdv_logf("core", RDV_LOG_ERR, "reload refused, old configuration kept: %s", err);
        snprintf(s->err, sizeof s->err, "%s", err);
    }
    rdv_conf_free(nc);
    free(ncfg);
    free(text);
    return rc;
}

int rdv_server_print_config(rdv_server *s, FILE *f)
{
    fprintf(f, "# effective configuration (defaults included, secrets redacted)\n");
    rdv_conf_print_with_list(f, "core", rdv_core_settings, &s->cfg, "listeners", rdv_listener_settings,
                             sizeof(rdv_listener_cfg), s->lcfg, s->nlcfg);
    for (size_t i = 0; i < s->nmods; i++)
        if (s->mods[i]->desc->settings)
            rdv_conf_print(f, s->mods[i]->desc->name, s->mods[i]->desc->settings, s->mods[i]->cfg);
    return 0;
}
