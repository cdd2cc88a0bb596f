/* Integration: the hbbr launcher (config-compat.md §4: flags, .env, the PORT
 * quirk, bandwidth variables) runs the relay module. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static rdvt_server srv;

static void teardown(void)
{
    int st = rdvt_stop(&srv);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "hbbr did not exit cleanly (%d)", st);
}

static void need_relay(void)
{
    if (access(RDV_BUILD_DIR "/modules/relay.so", R_OK) != 0)
        cr_skip_test("relay module not built");
}

/* The relay answers a RequestRelay-less connection by closing it after the
 * first-frame timeout; an accepted TCP connect is enough to show the port. */
static bool port_open(int port)
{
    int fd = rdvt_tcp("127.0.0.2", port);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

Test(hbbr, dash_p_sets_the_relay_port, .fini = teardown, .timeout = 60)
{
    need_relay();
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port + 1);
    const char *const args[] = { "-p", port, "-k", "", NULL };
    cr_assert_eq(rdvt_start_exe(&srv, "hbbr", args, true), 0);
    cr_assert(port_open(srv.port + 1));
}

Test(hbbr, dotenv_port_means_port_plus_one, .fini = teardown, .timeout = 60)
{
    need_relay();
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/.env", srv.dir);
    FILE *f = fopen(path, "w");
    /* one shared .env: hbbs on PORT, hbbr on PORT + 1 (§4.2); bad numbers keep defaults */
    fprintf(f, "PORT=%d\nSINGLE_BANDWIDTH=64\nlimit_speed=not-a-number\n", srv.port);
    fclose(f);
    cr_assert_eq(rdvt_start_exe(&srv, "hbbr", NULL, true), 0);
    cr_assert(port_open(srv.port + 1), "hbbr must listen on PORT + 1");
}

Test(hbbr, invalid_port_flag_exits_1)
{
    need_relay();
    const char *const args[] = { "-p", "70000", NULL };
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    cr_assert_eq(rdvt_start_exe(&srv, "hbbr", args, false), 0);
    int st = rdvt_wait_exit(&srv, 5000);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 1);
}
