/* core/config.h — conf.d loading and settings tables (internal to the core).
 *
 * conf.d/ is a directory of libconfig files read in sorted (strcmp) order;
 * only names ending in ".conf" are read. Each file holds one or more
 * top-level groups, one per module ("core" for the core); a group may be
 * spread over several files only if keys do not repeat (a repeated key is an
 * error naming both places). Overrides ("group.key=value", from the command
 * line or from the hbbs/hbbr launchers) are applied on top of the files.
 * Every error message has the form
 *     <file>:<line>: <group>.<key>: <what is wrong> (<how to fix>)
 * (file:line omitted for overrides, which say "override <text>").
 */
#ifndef RDV_CORE_CONFIG_H
#define RDV_CORE_CONFIG_H

#include <stdio.h>

#include "rdv/module.h"

typedef struct rdv_conf rdv_conf;

/* An empty tree (no files), e.g. for launchers driven only by overrides. */
rdv_conf *rdv_conf_new(void);
/* Read every *.conf in dir. Returns 0, or -1 with err set (unreadable
 * directory or file, syntax error with file:line). */
int rdv_conf_load_dir(rdv_conf *c, const char *dir, char *err, size_t errlen);
/* Parse one file (used by load_dir; also by tests). */
int rdv_conf_load_file(rdv_conf *c, const char *path, char *err, size_t errlen);
/* Parse text as if it were a file named `name` (generated configuration of
 * the hbbs/hbbr launchers). */
int rdv_conf_load_string(rdv_conf *c, const char *name, const char *text, char *err, size_t errlen);
/* The same for a base layer (the launchers' generated text): a key it sets
 * may be set again by a file loaded later, whose value then wins. */
int rdv_conf_load_base(rdv_conf *c, const char *name, const char *text, char *err, size_t errlen);
/* "group.key=value". The value is kept as text and converted when the
 * group is filled (so type errors name the override). Later overrides of the
 * same key win. Returns 0 or -1 (malformed) with err set. */
int rdv_conf_override(rdv_conf *c, const char *spec, char *err, size_t errlen);
void rdv_conf_free(rdv_conf *c);

/* Names of all top-level groups present (files + overrides), in first-seen
 * order; *n set. The array is owned by c. */
const char *const *rdv_conf_groups(const rdv_conf *c, size_t *n);
/* Where a group was first seen ("conf.d/10-x.conf:3"), or "override". */
const char *rdv_conf_group_origin(const rdv_conf *c, const char *group, char *buf, size_t len);
/* Where group.key is set ("conf.d/40-relay.conf:12", "override relay.port=1"),
 * else where its group was first seen (see above). */
const char *rdv_conf_setting_origin(const rdv_conf *c, const char *group, const char *key, char *buf, size_t len);

/* Fill a settings struct (config_size bytes; the caller zeroes it) from a
 * group: defaults first, then file values, then overrides. Rejects unknown
 * keys (except those named in skip, NULL-terminated), wrong types and values
 * out of bounds. A missing group means "all defaults". Returns 0 or -1 with
 * err set; on error the struct is released (nothing leaks). */
int rdv_conf_fill(const rdv_conf *c, const char *group, const rdv_setting *tbl,
                  const char *const *skip, void *cfg, char *err, size_t errlen);

/* A key whose value is a list of groups, e.g. core.listeners = ( {...}, ... ).
 * Each element is filled like a group from elem_tbl into an array of
 * elem_size structs (*arr malloc'ed, *n elements). Element errors name the
 * element index. A missing key gives *n = 0. */
int rdv_conf_fill_list(const rdv_conf *c, const char *group, const char *key,
                       const rdv_setting *elem_tbl, size_t elem_size,
                       void **arr, size_t *n, char *err, size_t errlen);
void rdv_conf_release_list(const rdv_setting *elem_tbl, size_t elem_size, void *arr, size_t n);

/* Free the strings and lists inside a filled struct (not the struct). */
void rdv_conf_release(const rdv_setting *tbl, void *cfg);
/* Deep copy of a filled struct into dst (zeroed, same size). 0 or -ENOMEM. */
int rdv_conf_copy(const rdv_setting *tbl, void *dst, const void *src);

/* Print a group in libconfig syntax with every setting's effective value
 * (defaults included), secrets as "<redacted>", help as a comment. */
void rdv_conf_print(FILE *f, const char *group, const rdv_setting *tbl, const void *cfg);
/* The same, with one list-of-groups key (e.g. core.listeners) inside. */
void rdv_conf_print_with_list(FILE *f, const char *group, const rdv_setting *tbl, const void *cfg,
                              const char *key, const rdv_setting *elem_tbl, size_t elem_size,
                              const void *arr, size_t n);

/* Compare two filled structs. Returns the first setting that differs and is
 * not RDV_SETF_RELOAD (NULL if none): a SIGHUP that changes it is refused. */
const rdv_setting *rdv_conf_nonreloadable_change(const rdv_setting *tbl, const void *a, const void *b);

/* Parse one value for a setting from text (overrides, launchers). */
int rdv_conf_parse_value(const rdv_setting *s, const char *text, void *cfg, char *err, size_t errlen);

#endif
