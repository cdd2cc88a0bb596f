/* core/compat.h — hbbs/hbbr personalities: upstream flags, env and files
 * mapped onto conf.d overrides (../spec/config-compat.md). */
#ifndef RDV_CORE_COMPAT_H
#define RDV_CORE_COMPAT_H

#include "rdv/types.h"

/* Entry point when invoked as hbbs or hbbr. */
int rdv_compat_main(const char *personality, int argc, char **argv);
/* Run the server (main.c). */
struct rdv_boot;
int rdv_main_run(const struct rdv_boot *boot, bool print_config);

#endif
