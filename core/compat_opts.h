/* core/compat_opts.h — upstream option lookup for the hbbs/hbbr launchers:
 * canonical names, environment spelling rules, .env / -c INI files and the
 * precedence flag > -c file > ./.env > environment (config-compat.md §2). */
#ifndef RDV_CORE_COMPAT_OPTS_H
#define RDV_CORE_COMPAT_OPTS_H

#include <stdbool.h>
#include <stddef.h>

typedef enum compat_kind { COMPAT_HBBS, COMPAT_HBBR } compat_kind;
typedef struct compat_opts compat_opts;

compat_opts *compat_opts_new(compat_kind kind, char **envp);
void compat_opts_free(compat_opts *o);
/* 0 parsed, 1 usage error (err set), 2 --help/--version was printed. */
int compat_parse_argv(compat_opts *o, int argc, char **argv, char *err, size_t errlen);
/* Read ./.env and (hbbs) the CONFIG file; unreadable or malformed files are
 * ignored as upstream does. */
void compat_load_files(compat_opts *o);
/* Value of a canonical option name ("RELAY-SERVERS") by precedence, or NULL. */
const char *compat_get(compat_opts *o, const char *canon);
/* Only if given on the command line. */
const char *compat_flag(compat_opts *o, const char *canon);
const char *compat_usage(compat_opts *o);

/* Exposed for tests. */
void compat_canonical(const char *name, char *out, size_t outlen);
/* Parse INI text (rust-ini rules of §2.3) into canonical key/value pairs;
 * returns -1 if the text as a whole does not parse. */
typedef void (*compat_kv_fn)(void *ud, const char *key, const char *value);
int compat_parse_ini(const char *text, compat_kv_fn fn, void *ud);

#endif
