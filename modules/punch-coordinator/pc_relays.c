/* pc_relays.c — relay servers handed to peers (rendezvous.md §8.1).
 *
 * Two lists, as upstream: the configured one (entries that resolve, in the
 * configured order) and the active one (the healthy subset). pick_relay()
 * rotates over the active list with one process-wide counter.
 *
 * Health check: every relay_check_ms, only when more than one relay is
 * configured, a TCP connect to each entry (its port, or relay_port) with a
 * timeout, using non-blocking sockets watched by the core's loop
 * (api->io_new). If at least one answers, the active list becomes the
 * reachable entries in configured order (the recommended deviation from
 * upstream's completion order); else it stays. A check is skipped while the
 * previous one still runs. Names are resolved by the resolver thread, both
 * to validate a new list and before each check (DNS answers may change);
 * IP literals need no lookup and take effect at once. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pc.h"

/* ------------------------------------------------------------------ parsing */
/* Strict decimal port. */
static bool pc_port_ok(const char *s)
{
    if (!*s || strlen(s) > 5)
        return false;
    unsigned v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (unsigned)(*s - '0');
    }
    return v <= 65535;
}

/* Upstream's validity test is "host:port resolves as is, a bare host
 * resolves with port 0": IPv6 literals need brackets and a port, IPv4 ones
 * may go without a port. Everything decidable without DNS is decided here. */
int pc_relay_classify(const char *text, rdv_addr *lit)
{
    struct in_addr v4;
    const char *colon = strrchr(text, ':');
    if (!*text || strlen(text) > PC_RELAY_TEXT_MAX)
        return -1;
    if (!colon) {
        if (inet_pton(AF_INET, text, &v4) == 1) {
            rdv_addr_v4(lit, (const uint8_t *)&v4, 0);
            return 1;
        }
        return 0;
    }
    if (!pc_port_ok(colon + 1))
        return -1;
    if (text[0] == '[')
        return rdv_addr_parse(lit, text, 0) == 0 && colon[-1] == ']' ? 1 : -1;
    if (colon == text)
        return -1;
    char host[INET_ADDRSTRLEN];
    size_t hl = (size_t)(colon - text);
    if (hl < sizeof host && !memchr(text, ':', hl)) {
        memcpy(host, text, hl);
        host[hl] = '\0';
        if (inet_pton(AF_INET, host, &v4) == 1) {
            rdv_addr_v4(lit, (const uint8_t *)&v4, (uint16_t)strtoul(colon + 1, NULL, 10));
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ lists */
static void pc_check_end(pc *p);

static void pc_relay_stop_check(pc *p, pc_relay *r)
{
    if (r->io)
        p->core->api->io_free(r->io);
    if (r->fd >= 0)
        close(r->fd);
    r->io = NULL, r->fd = -1;
}

static void pc_relay_free(pc *p, pc_relay *r)
{
    if (!r)
        return;
    pc_relay_stop_check(p, r);
    free(r->text);
    free(r);
}

static void pc_timer_cb_tick(void *ud) { pc_relays_check(ud); }
static void pc_timer_cb_deadline(void *ud) { pc_check_end(ud); }

int pc_relays_init(pc *p)
{
    const rdv_core_api *api = p->core->api;
    p->relays.tick = api->timer_new(p->core, pc_timer_cb_tick, p);
    p->relays.deadline = api->timer_new(p->core, pc_timer_cb_deadline, p);
    return p->relays.tick && p->relays.deadline ? 0 : -ENOMEM;
}

void pc_relays_start(pc *p)
{
    const rdv_core_api *api = p->core->api;
    if (!p->relays.tick)
        return;
    api->timer_stop(p->relays.tick);
    if (p->cfg->relay_check_ms > 0) /* first check at once, like upstream's interval */
        api->timer_start(p->relays.tick, 0, (uint64_t)p->cfg->relay_check_ms);
}

/* Abandon a running check (the list changed, or shutdown). */
static void pc_check_abort(pc *p)
{
    pc_relays *rl = &p->relays;
    if (!rl->checking)
        return;
    for (size_t i = 0; i < rl->nconf; i++)
        pc_relay_stop_check(p, rl->conf[i]);
    if (rl->deadline)
        p->core->api->timer_stop(rl->deadline);
    rl->checking = false;
}

static void pc_conf_clear(pc *p)
{
    pc_relays *rl = &p->relays;
    pc_check_abort(p);
    for (size_t i = 0; i < rl->nconf; i++)
        pc_relay_free(p, rl->conf[i]);
    rl->nconf = rl->nactive = 0;
}

void pc_relays_free(pc *p)
{
    const rdv_core_api *api = p->core->api;
    pc_conf_clear(p);
    if (p->relays.tick)
        api->timer_free(p->relays.tick);
    if (p->relays.deadline)
        api->timer_free(p->relays.deadline);
    p->relays.tick = p->relays.deadline = NULL;
}

static void pc_log_list(pc *p, const char *what, const size_t *idx, size_t n)
{
    char buf[1024];
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && len < sizeof buf; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? ", " : "", p->relays.conf[idx[i]]->text);
    RDV_INFO(p->core, "%s: %s", what, n ? buf : "(none)");
}

/* Make `texts[i]` with ok[i] the configured and active lists. */
static void pc_install(pc *p, char *const *texts, const bool *ok, size_t n)
{
    pc_relays *rl = &p->relays;
    pc_conf_clear(p);
    for (size_t i = 0; i < n && rl->nconf < PC_RELAY_MAX; i++) {
        if (!ok[i])
            continue;
        pc_relay *r = calloc(1, sizeof *r);
        if (!r || !(r->text = strdup(texts[i]))) {
            free(r);
            continue;
        }
        r->owner = p, r->fd = -1;
        r->literal = pc_relay_classify(r->text, &r->lit) > 0;
        rl->active[rl->nconf] = rl->nconf;
        rl->conf[rl->nconf++] = r;
    }
    rl->nactive = rl->nconf;
    pc_log_list(p, "relay servers", rl->active, rl->nactive);
}

void pc_relays_set(pc *p, const char *const *items, size_t n)
{
    pc_relays *rl = &p->relays;
    char *ents[PC_RELAY_MAX] = { 0 };
    bool ok[PC_RELAY_MAX] = { 0 };
    size_t ne = 0;
    bool need_dns = false, dropped = false;
    for (size_t i = 0; i < n; i++) {
        char *copy = strdup(items[i] ? items[i] : ""), *save = NULL;
        if (!copy)
            continue;
        /* Empty entries vanish; nothing is trimmed (" b" is invalid). */
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (ne == PC_RELAY_MAX) {
                dropped = true;
                break;
            }
            rdv_addr lit;
            int c = pc_relay_classify(t, &lit);
            if (c < 0) {
                (*p->st.resolve_failed)++;
                RDV_WARN(p->core, "relay server \"%.*s\" is not host[:port]: ignored", 200, t);
                continue;
            }
            if (!(ents[ne] = strdup(t)))
                continue;
            ok[ne] = c > 0;
            need_dns |= c == 0;
            ne++;
        }
        free(copy);
    }
    if (dropped)
        RDV_WARN(p->core, "more than %d relay servers: the rest are ignored", PC_RELAY_MAX);
    rl->gen++;
    pc_check_abort(p);
    if (!need_dns) {
        pc_install(p, ents, ok, ne);
    } else {
        pc_job *j = pc_job_new(PC_JOB_VALIDATE, rl->gen, ne, 0);
        for (size_t i = 0; j && i < ne; i++)
            j->names[i] = strdup(ents[i]);
        if (!j || pc_resolver_submit(p, j) < 0) {
            RDV_ERR(p->core, "cannot resolve relay server names: keeping only the IP literals");
            pc_install(p, ents, ok, ne);
        }
    }
    for (size_t i = 0; i < ne; i++)
        free(ents[i]);
}

const char *pc_pick_relay(pc *p)
{
    pc_relays *rl = &p->relays;
    if (!rl->nactive)
        return "";
    if (rl->nactive == 1)
        return rl->conf[rl->active[0]]->text;
    return rl->conf[rl->active[rl->rotation++ % rl->nactive]]->text;
}

/* ------------------------------------------------------------------ health check */
static void pc_check_done(pc *p, pc_relay *r, int result)
{
    pc_relay_stop_check(p, r);
    if (r->result)
        return;
    r->result = result;
    if (--p->relays.check_left == 0)
        pc_check_end(p);
}

static void pc_check_try(pc *p, pc_relay *r);

static void pc_check_io(void *ud, int fd, unsigned revents)
{
    pc_relay *r = ud;
    (void)revents;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    pc_relay_stop_check(r->owner, r);
    if (err == 0)
        pc_check_done(r->owner, r, 1);
    else
        pc_check_try(r->owner, r); /* next address of this entry */
}

/* Connect to the next candidate address; the result comes through
 * pc_check_io, or at once if connect() already knows. */
static void pc_check_try(pc *p, pc_relay *r)
{
    const rdv_core_api *api = p->core->api;
    pc_relay_stop_check(p, r); /* never two connects, or an orphaned watcher, per entry */
    while (r->next_cand < r->ncand) {
        const rdv_addr *a = &r->cand[r->next_cand++];
        int fam = a->u.sa.sa_family;
        struct sockaddr_storage ss;
        socklen_t sl = rdv_addr_to_sockaddr(a, fam, &ss);
        int fd = sl ? socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
        if (fd < 0)
            continue;
        if (connect(fd, (struct sockaddr *)&ss, sl) == 0) {
            close(fd);
            pc_check_done(p, r, 1);
            return;
        }
        if (errno != EINPROGRESS) {
            close(fd);
            continue;
        }
        r->fd = fd;
        r->io = api->io_new(p->core, fd, RDV_IO_WRITE, pc_check_io, r);
        if (r->io)
            return;
        close(fd);
        r->fd = -1;
    }
    pc_check_done(p, r, -1);
}

static void pc_check_connect_all(pc *p)
{
    pc_relays *rl = &p->relays;
    rl->check_left = rl->nconf;
    /* pc_check_done may end the check inside this loop (all refused at
     * once): stop touching the entries then. */
    for (size_t i = 0; i < rl->nconf && rl->checking; i++)
        pc_check_try(p, rl->conf[i]);
}

/* All entries answered, or the deadline passed: adopt the reachable ones. */
static void pc_check_end(pc *p)
{
    pc_relays *rl = &p->relays;
    if (!rl->checking)
        return;
    p->core->api->timer_stop(rl->deadline);
    size_t reach[PC_RELAY_MAX], n = 0;
    for (size_t i = 0; i < rl->nconf; i++) {
        pc_relay_stop_check(p, rl->conf[i]);
        if (rl->conf[i]->result > 0)
            reach[n++] = i;
    }
    rl->checking = false;
    if (!n)
        return; /* none reachable: keep the active list (§8.1) */
    if (n != rl->nactive || memcmp(reach, rl->active, n * sizeof *reach) != 0) {
        memcpy(rl->active, reach, n * sizeof *reach);
        rl->nactive = n;
        pc_log_list(p, "reachable relay servers", rl->active, rl->nactive);
    }
}

void pc_relays_check(pc *p)
{
    pc_relays *rl = &p->relays;
    if (rl->nconf <= 1)
        return; /* a single relay is never checked */
    if (rl->checking) {
        (*p->st.relay_check_skipped)++;
        return;
    }
    (*p->st.relay_checks)++;
    rl->checking = true;
    rl->check_gen = rl->gen;
    rl->check_seq++;
    bool names = false;
    uint16_t defport = (uint16_t)p->cfg->relay_port;
    for (size_t i = 0; i < rl->nconf; i++) {
        pc_relay *r = rl->conf[i];
        r->result = 0, r->next_cand = 0, r->ncand = 0;
        if (r->literal) {
            r->cand[0] = r->lit;
            if (!rdv_addr_port(&r->cand[0]))
                rdv_addr_set_port(&r->cand[0], defport);
            r->ncand = 1;
        } else {
            names = true;
        }
    }
    /* The deadline covers name resolution too, so a stuck DNS cannot keep
     * checks from ever running again. */
    p->core->api->timer_start(rl->deadline, (uint64_t)p->cfg->relay_check_timeout_ms, 0);
    if (!names) {
        pc_check_connect_all(p);
        return;
    }
    pc_job *j = pc_job_new(PC_JOB_CHECK, rl->gen, rl->nconf, defport);
    if (j)
        j->seq = rl->check_seq;
    for (size_t i = 0; j && i < rl->nconf; i++)
        if (!rl->conf[i]->literal)
            j->names[i] = strdup(rl->conf[i]->text);
    if (!j || pc_resolver_submit(p, j) < 0)
        pc_check_connect_all(p); /* names count as unreachable this time */
}

/* ------------------------------------------------------------------ resolver results */
void pc_relays_job_done(pc *p, pc_job *j)
{
    pc_relays *rl = &p->relays;
    if (j->gen != rl->gen)
        return; /* the list changed since */
    if (j->kind == PC_JOB_VALIDATE) {
        for (size_t i = 0; i < j->n; i++)
            if (!j->ok[i]) {
                (*p->st.resolve_failed)++;
                RDV_WARN(p->core, "relay server \"%.*s\" does not resolve: ignored", 200, j->names[i]);
            }
        pc_install(p, j->names, j->ok, j->n);
        return;
    }
    /* Only the job of the running check: a job of an earlier one that timed
     * out while the resolver hung may complete during this check, and
     * connecting twice would overwrite sockets still being watched. */
    if (!rl->checking || rl->check_gen != j->gen || rl->check_seq != j->seq || j->n != rl->nconf)
        return;
    for (size_t i = 0; i < rl->nconf; i++) {
        pc_relay *r = rl->conf[i];
        if (r->literal || !j->ok[i])
            continue;
        memcpy(r->cand, j->addrs[i], sizeof r->cand);
        r->ncand = j->naddrs[i];
    }
    pc_check_connect_all(p);
}
