/* pc_resolver.c — relay host names are resolved on a worker thread, never
 * on the loop thread (getaddrinfo blocks for as long as DNS takes).
 *
 * One thread, started on first use; jobs go in a FIFO under a mutex and
 * come back through api->async_send, the only core call that is safe from
 * another thread. A new job supersedes a queued one of the same kind (its
 * result would be discarded anyway), so the queue never holds more than
 * two jobs. Lists made only of IP literals never get here. */
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "pc.h"

pc_job *pc_job_new(int kind, uint64_t gen, size_t n, uint16_t defport)
{
    pc_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->kind = kind, j->gen = gen, j->n = n, j->defport = defport;
    size_t m = n ? n : 1;
    j->names = calloc(m, sizeof *j->names);
    j->ok = calloc(m, sizeof *j->ok);
    j->addrs = calloc(m, sizeof *j->addrs);
    j->naddrs = calloc(m, sizeof *j->naddrs);
    if (!j->names || !j->ok || !j->addrs || !j->naddrs) {
        pc_job_free(j);
        return NULL;
    }
    return j;
}

void pc_job_free(pc_job *j)
{
    if (!j)
        return;
    for (size_t i = 0; j->names && i < j->n; i++)
        free(j->names[i]);
    free(j->names), free(j->ok), free(j->addrs), free(j->naddrs);
    free(j);
}

/* Host names never contain blanks or control bytes: refuse those without
 * asking DNS (upstream would ask, and fail). */
static bool pc_host_plausible(const char *h)
{
    if (!*h)
        return false;
    for (const unsigned char *c = (const unsigned char *)h; *c; c++)
        if (*c <= ' ' || *c == 0x7f)
            return false;
    return true;
}

bool pc_resolve_entry(const char *text, uint16_t defport, rdv_addr *out, size_t *nout)
{
    *nout = 0;
    rdv_addr lit;
    int c = pc_relay_classify(text, &lit);
    if (c < 0)
        return false;
    if (c > 0) {
        if (!rdv_addr_port(&lit))
            rdv_addr_set_port(&lit, defport);
        out[0] = lit, *nout = 1;
        return true;
    }
    /* "host" or "host:port", split at the last ':' like upstream's lookup;
     * pc_relay_classify has already checked the port's syntax. */
    char host[PC_RELAY_TEXT_MAX + 1];
    size_t len = strlen(text);
    if (len >= sizeof host)
        return false;
    memcpy(host, text, len + 1);
    uint16_t port = defport;
    char *colon = strrchr(host, ':');
    if (colon) {
        *colon = '\0';
        port = (uint16_t)strtoul(colon + 1, NULL, 10);
    }
    if (!pc_host_plausible(host))
        return false;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return false;
    for (struct addrinfo *ai = res; ai && *nout < PC_RELAY_ADDRS; ai = ai->ai_next) {
        rdv_addr a;
        if (rdv_addr_from_sockaddr(&a, ai->ai_addr, ai->ai_addrlen) < 0)
            continue;
        rdv_addr_set_port(&a, port);
        out[(*nout)++] = a;
    }
    freeaddrinfo(res);
    return *nout > 0;
}

static void *pc_resolver_main(void *arg)
{
    pc_resolver *rs = arg;
    pthread_mutex_lock(&rs->mu);
    for (;;) {
        while (!rs->stop && !rs->todo)
            pthread_cond_wait(&rs->cv, &rs->mu);
        if (rs->stop)
            break;
        pc_job *j = rs->todo;
        rs->todo = j->next;
        rs->ntodo--;
        j->next = NULL;
        rs->working = true;
        pthread_mutex_unlock(&rs->mu);
        for (size_t i = 0; i < j->n; i++)
            j->ok[i] = j->names[i] && pc_resolve_entry(j->names[i], j->defport, j->addrs[i], &j->naddrs[i]);
        pthread_mutex_lock(&rs->mu);
        pc_job **pp = &rs->done;
        while (*pp)
            pp = &(*pp)->next;
        *pp = j;
        rs->working = false;
        rs->api->async_send(rs->wake);
    }
    pthread_mutex_unlock(&rs->mu);
    return NULL;
}

/* Loop thread: hand finished jobs to the relay code. */
static void pc_resolver_wake(void *ud)
{
    pc *p = ud;
    pc_resolver *rs = &p->resolver;
    pthread_mutex_lock(&rs->mu);
    pc_job *done = rs->done;
    rs->done = NULL;
    pthread_mutex_unlock(&rs->mu);
    while (done) {
        pc_job *j = done;
        done = j->next;
        pc_relays_job_done(p, j);
        pc_job_free(j);
    }
}

int pc_resolver_init(pc *p)
{
    pc_resolver *rs = &p->resolver;
    rs->api = p->core->api;
    if (pthread_mutex_init(&rs->mu, NULL) != 0)
        return -ENOMEM;
    if (pthread_cond_init(&rs->cv, NULL) != 0) {
        pthread_mutex_destroy(&rs->mu);
        return -ENOMEM;
    }
    rs->inited = true;
    rs->wake = p->core->api->async_new(p->core, pc_resolver_wake, p);
    return rs->wake ? 0 : -ENOMEM;
}

static void pc_jobs_free(pc_job *j)
{
    while (j) {
        pc_job *n = j->next;
        pc_job_free(j);
        j = n;
    }
}

void pc_resolver_free(pc *p)
{
    pc_resolver *rs = &p->resolver;
    if (!rs->inited)
        return;
    if (rs->started) {
        pthread_mutex_lock(&rs->mu);
        rs->stop = true;
        pthread_cond_signal(&rs->cv);
        pthread_mutex_unlock(&rs->mu);
        pthread_join(rs->thread, NULL); /* waits for a lookup in progress */
        rs->started = false;
    }
    pc_jobs_free(rs->todo);
    pc_jobs_free(rs->done);
    rs->todo = rs->done = NULL;
    if (rs->wake)
        p->core->api->async_free(rs->wake);
    rs->wake = NULL;
    pthread_cond_destroy(&rs->cv);
    pthread_mutex_destroy(&rs->mu);
    rs->inited = false;
}

int pc_resolver_submit(pc *p, pc_job *job)
{
    pc_resolver *rs = &p->resolver;
    pthread_mutex_lock(&rs->mu);
    if (!rs->started) {
        if (rdv_thread_start(&rs->thread, pc_resolver_main, rs) != 0) {
            pthread_mutex_unlock(&rs->mu);
            pc_job_free(job);
            return -EAGAIN;
        }
        rs->started = true;
    }
    /* Drop a queued job of the same kind: this one supersedes it. */
    for (pc_job **pp = &rs->todo; *pp;) {
        if ((*pp)->kind == job->kind) {
            pc_job *old = *pp;
            *pp = old->next;
            rs->ntodo--;
            pc_job_free(old);
        } else {
            pp = &(*pp)->next;
        }
    }
    pc_job **pp = &rs->todo;
    while (*pp)
        pp = &(*pp)->next;
    *pp = job;
    rs->ntodo++;
    pthread_cond_signal(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
    return 0;
}
