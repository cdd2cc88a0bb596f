/* Integration: the hbbs launcher runs a full rendezvous node from an
 * upstream command line, .env and environment (config-compat.md §2-3;
 * issue #3 "Deployment and compatibility"). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "rdclient.h"

static rdvt_server srv;

static void teardown(void)
{
    int st = rdvt_stop(&srv);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "hbbs did not exit cleanly (%d)", st);
}

static void start_hbbs(const char *const *args)
{
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    cr_assert_eq(rdvt_start_exe(&srv, "hbbs", args, true), 0, "hbbs did not start");
}

static Hbb__RendezvousMessage *register_peer(int fd, int port, const char *id)
{
    cr_assert_eq(rdvt_udp_send(fd, port, rdc_register_peer(id)), 0);
    return rdvt_udp_recv(fd, 3000);
}

static char *console(int port, const char *cmd)
{
    int fd = rdvt_tcp("127.0.0.1", port);
    cr_assert_geq(fd, 0, "no console on %d", port);
    cr_assert_eq(rdvt_tcp_send_raw(fd, cmd, strlen(cmd)), 0);
    static char buf[4096];
    size_t len = 0;
    for (;;) {
        uint8_t *p = NULL;
        (void)p;
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = 0;
    close(fd);
    return buf;
}

Test(hbbs, upstream_command_line_runs_a_full_node, .fini = teardown, .timeout = 60)
{
    char port[16], relay[32];
    int p = rdvt_base_port();
    snprintf(port, sizeof port, "%d", p);
    snprintf(relay, sizeof relay, "127.0.0.1:%d", p + 1);
    const char *const args[] = { "-p", port, "-k", "_", "-r", relay, NULL };
    start_hbbs(args);
    srv.port = p;
    cr_assert(rdvt_log_contains(&srv, "Key: "), "the key is printed at start");
    char path[512];
    snprintf(path, sizeof path, "%s/id_ed25519", srv.dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "id_ed25519 generated in the working directory");
    snprintf(path, sizeof path, "%s/db_v2.sqlite3", srv.dir);
    cr_assert_eq(stat(path, &st), 0, "db_v2.sqlite3 created in the working directory");
    int u = rdvt_udp("127.0.0.2");
    Hbb__RendezvousMessage *r = register_peer(u, p, "123456789");
    cr_assert_not_null(r, "RegisterPeer answered on -p");
    cr_assert_eq(r->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER_RESPONSE);
    cr_assert(r->register_peer_response->request_pk, "unknown peer -> request_pk");
    rdvt_msg_free(r);
    close(u);
    /* upstream's loopback console on PORT-1 */
    char *out = console(p - 1, "rs");
    cr_assert(strstr(out, relay), "relay-servers lists -r: '%s'", out);
    out = console(p - 1, "aur");
    cr_assert(strstr(out, "ALWAYS_USE_RELAY: false"), "'%s'", out);
}

Test(hbbs, dotenv_and_environment_spellings, .fini = teardown, .timeout = 60)
{
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    int p = srv.port;
    char path[512];
    snprintf(path, sizeof path, "%s/.env", srv.dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "# upstream .env\nport = %d\nalways_use_relay=Y\n", p);
    fclose(f);
    cr_assert_eq(rdvt_start_exe(&srv, "hbbs", NULL, true), 0);
    int u = rdvt_udp("127.0.0.3");
    Hbb__RendezvousMessage *r = register_peer(u, p, "123456789");
    cr_assert_not_null(r, "PORT from .env");
    rdvt_msg_free(r);
    close(u);
    char *out = console(p - 1, "always-use-relay");
    cr_assert(strstr(out, "ALWAYS_USE_RELAY: true"), "ALWAYS_USE_RELAY from .env: '%s'", out);
}

Test(hbbs, usage_errors_exit_1)
{
    const char *const args[] = { "--no-such-flag", NULL };
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    cr_assert_eq(rdvt_start_exe(&srv, "hbbs", args, false), 0);
    int st = rdvt_wait_exit(&srv, 5000);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 1);
    const char *const bad_port[] = { "-p", "2", NULL };
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    cr_assert_eq(rdvt_start_exe(&srv, "hbbs", bad_port, false), 0);
    st = rdvt_wait_exit(&srv, 5000);
    bool msg = rdvt_log_contains(&srv, "Invalid port");
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 1);
    cr_assert(msg);
}
