/* core/compat.c — hbbs / hbbr personalities (config-compat.md).
 * The flag mapping arrives with the rendezvous and relay modules. */
#include <stdio.h>

#include "compat.h"

int rdv_compat_main(const char *personality, int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "%s: this personality is not available yet in this build; run rdvd -c conf.d\n", personality);
    return 2;
}
