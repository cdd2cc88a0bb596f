/* core/main.c — rdvd entry point. Installed also as hbbs and hbbr (symlinks):
 * the personality is chosen by argv[0] (compat.c). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compat.h"
#include "server.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: rdvd [options]\n"
            "  -c, --conf-dir DIR     configuration directory (default: ./conf.d, else " RDV_SYSCONF_CONF_DIR ")\n"
            "  -o, --set GROUP.KEY=V  override one setting (repeatable)\n"
            "      --print-config     print the effective configuration and exit\n"
            "      --check            check conf.d and load the modules, then exit 0 (key files,\n"
            "                         the database and ports are only opened at start)\n"
            "  -V, --version          print the version\n"
            "  -h, --help             this help\n"
            "Signals: SIGHUP reloads conf.d, SIGTERM/SIGINT drain and stop.\n");
}

static const char *default_conf_dir(void)
{
    return access("conf.d", F_OK) == 0 ? "conf.d" : RDV_SYSCONF_CONF_DIR;
}

/* Run a server from a boot description. Shared with the launchers. */
int rdv_main_run(const rdv_boot *boot, bool print_config)
{
    rdv_server *s = calloc(1, sizeof *s);
    if (!s)
        return 1;
    if (boot->dry) {
        /* Only parse, load and validate: nothing is bound or started. */
        int r = rdv_server_init(s, boot);
        if (r == 0 && print_config)
            rdv_server_print_config(s, stdout);
        rdv_server_free(s);
        free(s);
        return r == 0 ? 0 : 1;
    }
    int rc = 1;
    if (rdv_server_init(s, boot) == 0)
        rc = rdv_server_run(s);
    rdv_server_free(s);
    free(s);
    return rc;
}

int main(int argc, char **argv)
{
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    if (strcmp(base, "hbbs") == 0 || strcmp(base, "hbbr") == 0)
        return rdv_compat_main(base, argc, argv);

    static const struct option opts[] = {
        { "conf-dir", required_argument, NULL, 'c' }, { "set", required_argument, NULL, 'o' },
        { "print-config", no_argument, NULL, 'P' },   { "check", no_argument, NULL, 'C' },
        { "version", no_argument, NULL, 'V' },        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *conf_dir = NULL;
    rdv_strlist ov = { 0, NULL };
    bool print = false, check = false;
    ov.v = calloc((size_t)argc + 1, sizeof *ov.v);
    if (!ov.v)
        return 1;
    int c;
    while ((c = getopt_long(argc, argv, "c:o:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': conf_dir = optarg; break;
        case 'o': ov.v[ov.n++] = optarg; break;
        case 'P': print = true; break;
        case 'C': check = true; break;
        case 'V': printf("rdvd %s (module ABI %d.%d)\n", RDV_VERSION, RDV_ABI_MAJOR, RDV_ABI_MINOR); free(ov.v); return 0;
        case 'h': usage(stdout); free(ov.v); return 0;
        default: usage(stderr); free(ov.v); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "rdvd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        free(ov.v);
        return 2;
    }
    rdv_boot boot = { .conf_dir = conf_dir ? conf_dir : default_conf_dir(), .overrides = &ov,
                      .dry = print || check };
    int rc = rdv_main_run(&boot, print);
    free(ov.v);
    return rc;
}
