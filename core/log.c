/* core/log.c — leveled logging to stderr with a module prefix. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "server.h"

static rdv_log_level log_level = RDV_LOG_INFO;
static unsigned long log_errors; /* ERROR lines asked for, shown or not */

static const char *level_name(rdv_log_level l)
{
    switch (l) {
    case RDV_LOG_ERR: return "ERROR";
    case RDV_LOG_WARN: return "WARN";
    case RDV_LOG_NOTICE: return "NOTICE";
    case RDV_LOG_INFO: return "INFO";
    default: return "DEBUG";
    }
}

void rdv_log_set_level(rdv_log_level lvl) { log_level = lvl; }
bool rdv_log_enabled_at(rdv_log_level lvl) { return lvl <= log_level; }

int rdv_log_parse_level(const char *s, rdv_log_level *out)
{
    static const struct { const char *n; rdv_log_level l; } names[] = {
        { "error", RDV_LOG_ERR }, { "warn", RDV_LOG_WARN }, { "warning", RDV_LOG_WARN },
        { "notice", RDV_LOG_NOTICE }, { "info", RDV_LOG_INFO }, { "debug", RDV_LOG_DEBUG },
        { "trace", RDV_LOG_DEBUG },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(s, names[i].n) == 0) {
            *out = names[i].l;
            return 0;
        }
    return -1;
}

unsigned long rdv_log_errors(void) { return log_errors; }

void rdv_log_write(const char *who, rdv_log_level lvl, const char *fmt, va_list ap)
{
    if (lvl == RDV_LOG_ERR)
        log_errors++;
    if (!rdv_log_enabled_at(lvl))
        return;
    /* One fprintf per line keeps lines whole when stderr is shared. */
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* A peer-chosen string must not forge a line or drive the terminal of
     * whoever reads the log (ESC sequences): control bytes become '?'. */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : '?';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-6s [%s] %s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            level_name(lvl), who ? who : "core", msg);
}

void rdv_logf(const char *who, rdv_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rdv_log_write(who, lvl, fmt, ap);
    va_end(ap);
}

/* At most RL_BURST lines per RL_WINDOW_MS per call site; the first line after
 * a suppressed stretch says how many were dropped. */
#define RL_WINDOW_MS 1000
#define RL_BURST 5

bool rdv_ratelimit_ok(rdv_ratelimit *rl, uint64_t now_ms)
{
    if (now_ms - rl->window_start_ms >= RL_WINDOW_MS) {
        if (rl->suppressed)
            rdv_logf("core", RDV_LOG_NOTICE, "%u similar log lines suppressed", rl->suppressed);
        rl->window_start_ms = now_ms;
        rl->in_window = 0;
        rl->suppressed = 0;
    }
    if (rl->in_window < RL_BURST) {
        rl->in_window++;
        return true;
    }
    rl->suppressed++;
    return false;
}
