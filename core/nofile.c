/* core/nofile.c — fit the descriptor limit to core.max_connections.
 *
 * systemd starts services with a soft RLIMIT_NOFILE of 1024 and a high hard
 * limit (DefaultLimitNOFILE=1024:524288), expecting servers that need more
 * to raise the soft limit themselves; a shell's `ulimit -n` is 1024 too.
 * Left at 1024, a node configured for 100,000 connections would stop
 * accepting at about a thousand and only say "out of descriptors" then. So
 * at start the soft limit is raised as far as the hard limit allows, and
 * when that is still short of the configuration the operator is told once,
 * with the fix. Never lowered. */
#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "server.h"

/* Descriptors besides accepted connections: listeners, the admin socket and
 * its clients, the database and its WAL, worker wake-ups, module sockets. */
#define NOFILE_SPARE 1024

void rdv_fit_nofile(rdv_server *s)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rlim_t want = (rlim_t)s->cfg.max_connections + NOFILE_SPARE;
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur < want && rl.rlim_cur < rl.rlim_max) {
        struct rlimit n = { .rlim_cur = want < rl.rlim_max ? want : rl.rlim_max, .rlim_max = rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &n) == 0)
            rl = n;
        else
            rdv_logf("core", RDV_LOG_DEBUG, "setrlimit(RLIMIT_NOFILE, %llu): %s", (unsigned long long)n.rlim_cur,
                     strerror(errno));
    }
    if (rl.rlim_cur != was)
        rdv_logf("core", RDV_LOG_INFO, "descriptor limit raised from %llu to %llu", (unsigned long long)was,
                 (unsigned long long)rl.rlim_cur);
    if (rl.rlim_cur < want)
        rdv_logf("core", RDV_LOG_WARN,
                 "descriptor limit (RLIMIT_NOFILE) is %llu: about %llu connections fit, not "
                 "core.max_connections=%lld; raise the hard limit to %llu (systemd: LimitNOFILE=; shell: ulimit -Hn) "
                 "or lower core.max_connections",
                 (unsigned long long)rl.rlim_cur,
                 (unsigned long long)(rl.rlim_cur > NOFILE_SPARE ? rl.rlim_cur - NOFILE_SPARE : 0),
                 (long long)s->cfg.max_connections, (unsigned long long)want);
}
