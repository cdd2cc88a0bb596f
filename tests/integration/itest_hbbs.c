/* Integration: the hbbs launcher runs a full rendezvous node from an
 * upstream command line, .env and environment (config-compat.md §2-3;
 * issue #3 "Deployment and compatibility"). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
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

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* SIGHUP makes the configuration again from the command line, the
 * environment and the files: an edited ./.env applies (the launcher said
 * "configuration reloaded" and kept the old values before), and a change
 * that needs a restart is refused with the old configuration kept. */
Test(hbbs, sighup_reads_dotenv_again, .fini = teardown, .timeout = 60)
{
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    int p = srv.port;
    char env[128];
    snprintf(env, sizeof env, "PORT=%d\nALWAYS_USE_RELAY=N\n", p);
    write_file(srv.dir, ".env", env);
    cr_assert_eq(rdvt_start_exe(&srv, "hbbs", NULL, true), 0);
    cr_assert(strstr(console(p - 1, "aur"), "ALWAYS_USE_RELAY: false"));

    snprintf(env, sizeof env, "PORT=%d\nALWAYS_USE_RELAY=Y\n", p);
    write_file(srv.dir, ".env", env);
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    cr_assert(rdvt_wait_log(&srv, "configuration reloaded", 5000));
    char *out = console(p - 1, "aur");
    cr_assert(strstr(out, "ALWAYS_USE_RELAY: true"), "the edited .env applies on SIGHUP: '%s'", out);

    snprintf(env, sizeof env, "PORT=%d\nALWAYS_USE_RELAY=N\n", p + 10);
    write_file(srv.dir, ".env", env);
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    cr_assert(rdvt_wait_log(&srv, "reload refused, old configuration kept: core.listeners changed", 5000));
    out = console(p - 1, "aur");
    cr_assert(strstr(out, "ALWAYS_USE_RELAY: true"), "a refused reload changes nothing: '%s'", out);
    int u = rdvt_udp("127.0.0.4");
    Hbb__RendezvousMessage *r = register_peer(u, p, "123456789");
    cr_assert_not_null(r, "still on the old port");
    rdvt_msg_free(r);
    close(u);
}

/* RDVD_CONF_DIR on top of the launcher: a setting there replaces the
 * launcher's (it was "set twice" before), core.modules included (the
 * whole list), and a misspelt group is refused at start. */
Test(hbbs, rdvd_conf_dir_replaces_launcher_settings, .timeout = 60)
{
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    int p = srv.port;
    char extra[512], port[16];
    snprintf(extra, sizeof extra, "%s/extra.d", srv.dir);
    cr_assert_eq(mkdir(extra, 0755), 0);
    write_file(extra, "10-mine.conf",
               "core: { modules = [ \"keys\", \"storage-sqlite\", \"registry\", \"nat-test\", "
               "\"punch-coordinator\", \"secure-tcp\" ]; };\n"
               "punch-coordinator: { always_use_relay = true; };\n");
    snprintf(port, sizeof port, "%d", p);
    const char *const args[] = { "-p", port, NULL };
    setenv("RDVD_CONF_DIR", extra, 1);
    int started = rdvt_start_exe(&srv, "hbbs", args, true);
    unsetenv("RDVD_CONF_DIR");
    cr_assert_eq(started, 0, "hbbs with RDVD_CONF_DIR did not start");
    char *out = console(p - 1, "aur");
    cr_assert(strstr(out, "ALWAYS_USE_RELAY: true"), "the directory's value wins: '%s'", out);
    /* secure-tcp came from the directory's module list: a TCP client is offered a key */
    int t = rdvt_tcp("127.0.0.5", p);
    Hbb__RendezvousMessage *m = rdvt_tcp_recv(t, 3000);
    cr_assert_not_null(m, "no KeyExchange offer");
    cr_assert_eq(m->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE);
    rdvt_msg_free(m);
    close(t);
    int st = rdvt_stop(&srv);
    cr_assert_eq(st, 0);
    rdvt_cleanup(&srv);

    /* a typo in a group name: refused, with the name it resembles */
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    snprintf(extra, sizeof extra, "%s/extra.d", srv.dir);
    cr_assert_eq(mkdir(extra, 0755), 0);
    write_file(extra, "10-mine.conf", "punch-cordinator: { always_use_relay = true; };\n");
    snprintf(port, sizeof port, "%d", srv.port);
    setenv("RDVD_CONF_DIR", extra, 1);
    cr_assert_eq(rdvt_start_exe(&srv, "hbbs", args, false), 0);
    unsetenv("RDVD_CONF_DIR");
    st = rdvt_wait_exit(&srv, 5000);
    bool named = rdvt_log_contains(&srv, "group 'punch-cordinator' names no module"),
         near = rdvt_log_contains(&srv, "did you mean 'punch-coordinator'?");
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 1, "a misspelt group must stop the start");
    cr_assert(named && near, "the error names the group and the module it resembles");
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
