/* core/compat.h — hbbs/hbbr personalities: upstream flags, env and files
 * mapped onto conf.d overrides (../spec/config-compat.md). */
#ifndef RDV_CORE_COMPAT_H
#define RDV_CORE_COMPAT_H

#include "rdv/types.h"

/* Entry point when invoked as hbbs or hbbr. */
int rdv_compat_main(const char *personality, int argc, char **argv);
/* Run the server from a conf dir (may be NULL) plus overrides (main.c). */
int rdv_main_run(const char *conf_dir, const rdv_strlist *overrides, bool print_config, bool check);

#endif
