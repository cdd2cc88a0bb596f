/* Integration: operator errors at start-up give one clear message naming the
 * file / setting / module and a non-zero exit (issue #2, "Bad input"); the
 * effective configuration can be printed with secrets redacted. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "rdclient.h"
#include "rdv/module.h"

static rdvt_server srv;

/* Prepare, run rdvd with args until it exits; its status (the log stays
 * until rdvt_cleanup). */
static int run_to_exit(const char *const *files, const char *const *args)
{
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
    cr_assert_eq(rdvt_start_exe(&srv, "rdvd", args, false), 0);
    return rdvt_wait_exit(&srv, 10000);
}

static void run_expect_failure(const char *const *files, const char *const *args, const char *needle)
{
    int st = run_to_exit(files, args);
    bool found = rdvt_log_contains(&srv, needle);
    if (!found || st <= 0) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "cat %s >&2", srv.log);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
    }
    rdvt_cleanup(&srv);
    cr_assert_gt(st, 0, "expected a non-zero exit, got %d", st);
    cr_assert(found, "log does not mention '%s'", needle);
}

Test(startup, port_in_use_names_the_port)
{
    int busy = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
    int port = rdvt_base_port() + 5;
    a.sin_port = htons((uint16_t)port);
    cr_assert_eq(bind(busy, (struct sockaddr *)&a, sizeof a), 0);
    char conf[256], needle[64];
    snprintf(conf, sizeof conf,
             "core: { modules = []; ipv6 = false; listeners = ( { name = \"main\"; port = %d; udp = true; tcp = false; } ); };\n",
             port);
    snprintf(needle, sizeof needle, ":%d", port);
    const char *const files[] = { "00-core.conf", conf, NULL };
    run_expect_failure(files, NULL, "another process uses this port");
    close(busy);
}

/* A second rdvd on the ports of a running one is refused like any other
 * process there (relay.md §2: upstream's SO_REUSEPORT lets a second instance
 * start and take part of the traffic — a second registry, half the
 * registrations — which "we do not need to copy"). Both the UDP and the TCP
 * socket of the port are checked: the running one holds both. */
Test(startup, second_rdvd_on_the_same_ports_is_refused)
{
    static rdvt_server first;
    char conf[256];
    int port = rdvt_base_port() + 7;
    snprintf(conf, sizeof conf,
             "core: { modules = []; listeners = ( { name = \"main\"; port = %d; udp = true; tcp = true; } ); };\n",
             port);
    const char *const files[] = { "00-core.conf", conf, NULL };
    cr_assert_eq(rdvt_prepare(&first, files), 0);
    cr_assert_eq(rdvt_start(&first), 0, "the first rdvd did not start");
    run_expect_failure(files, NULL, "another process uses this port");
    int st = rdvt_stop(&first);
    rdvt_cleanup(&first);
    cr_assert_eq(st, 0);
}

/* The harness itself: when another process holds the ports a test server
 * was given, rdvt_start moves to a fresh block (concurrent test runs on one
 * machine). The next block is the current one + 10 (rdvt_base_port). */
Test(startup, harness_moves_to_free_ports_when_its_own_are_taken)
{
    int taken = rdvt_base_port() + 10;
    int busy = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT, .sin6_port = htons((uint16_t)taken) };
    int zero = 0;
    setsockopt(busy, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    cr_assert_eq(bind(busy, (struct sockaddr *)&a, sizeof a), 0);
    const char *const files[] = {
        "00-core.conf", "core: { modules = []; listeners = ( { name = \"main\"; port = @PORT@; udp = true; } ); };\n",
        NULL,
    };
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
    cr_assert_eq(srv.port, taken);
    cr_assert_eq(rdvt_start(&srv), 0, "no retry on fresh ports");
    cr_assert_neq(srv.port, taken);
    cr_assert(rdvt_log_contains(&srv, "ready:"));
    int st = rdvt_stop(&srv);
    rdvt_cleanup(&srv);
    close(busy);
    cr_assert_eq(st, 0);
}

Test(startup, unknown_key_names_file_line_and_setting)
{
    const char *const files[] = { "00-core.conf", "core: {\n  modules = [];\n  max_frame_size = 5;\n};\n", NULL };
    run_expect_failure(files, NULL, "00-core.conf:3: core.max_frame_size: unknown setting");
}

Test(startup, bad_value_names_the_setting)
{
    const char *const files[] = { "00-core.conf", "core: { modules = []; max_frame = 10; };\n", NULL };
    run_expect_failure(files, NULL, "core.max_frame");
}

Test(startup, syntax_error_names_file_and_line)
{
    const char *const files[] = { "00-core.conf", "core: {\n modules = [ ;\n};\n", NULL };
    run_expect_failure(files, NULL, "00-core.conf:2");
}

Test(startup, missing_conf_dir)
{
    const char *const args[] = { "-c", "/nonexistent/conf.d", NULL };
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    cr_assert_eq(rdvt_start_exe(&srv, "rdvd", args, false), 0);
    int st = rdvt_wait_exit(&srv, 10000);
    bool found = rdvt_log_contains(&srv, "/nonexistent/conf.d");
    rdvt_cleanup(&srv);
    cr_assert_gt(st, 0);
    cr_assert(found);
}

Test(startup, missing_module_names_module_and_path_setting)
{
    const char *const files[] = { "00-core.conf", "core: { modules = [ \"nope\" ]; module_path = \"@MODDIR@\"; };\n", NULL };
    run_expect_failure(files, NULL, "module 'nope'");
}

Test(startup, wrong_abi_names_module_and_versions)
{
    const char *const files[] = { "00-core.conf", "core: { modules = [ \"abi_major\" ]; module_path = \"@FIXDIR@\"; };\n", NULL };
    char needle[80];
    snprintf(needle, sizeof needle, "module ABI 99.0 but this rdvd provides %d.%d", RDV_ABI_MAJOR, RDV_ABI_MINOR);
    run_expect_failure(files, NULL, needle);
}

Test(startup, failing_module_init_is_named)
{
    const char *const files[] = { "00-core.conf", "core: { modules = [ \"fail_init\" ]; module_path = \"@FIXDIR@\"; };\n", NULL };
    run_expect_failure(files, NULL, "module 'fail_init' failed to initialise");
}

/* A reload is whole or refused: `example` (first, no dependencies) takes
 * its new greeting, then refuses_reload says no in reconfigure — example
 * is put back on its old settings and the reload is refused naming the
 * module. Before, example kept the new greeting and the answer was
 * "reloaded". */
Test(startup, reload_refused_by_a_module_changes_no_module, .timeout = 30)
{
    const char *const files[] = {
        "00-core.conf",
        "core: { modules = [ \"example\", \"refuses_reload\" ]; module_path = \"@FIXDIR@:@MODDIR@\";\n"
        "        listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; } ); };\n",
        "10-example.conf", "example: { greeting = \"old\"; };\n",
        NULL,
    };
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
    cr_assert_eq(rdvt_start(&srv), 0, "rdvd did not start");
    char path[512];
    snprintf(path, sizeof path, "%s/conf.d/10-example.conf", srv.dir);
    FILE *f = fopen(path, "w");
    fputs("example: { greeting = \"new\"; };\nrefuses_reload: { refuse = true; };\n", f);
    fclose(f);
    char *out = rdvt_admin(&srv, "reload");
    bool refused = strstr(out, "refused") != NULL;
    free(out);
    out = rdvt_admin(&srv, "example-stats");
    bool kept = strstr(out, "greeting old\n") != NULL;
    char seen[256];
    snprintf(seen, sizeof seen, "%s", out);
    free(out);
    bool named = rdvt_log_contains(&srv, "module 'refuses_reload' refused the new settings");
    int st = rdvt_stop(&srv);
    rdvt_cleanup(&srv);
    cr_assert(refused, "the reload was not refused");
    cr_assert(kept, "example kept the refused reload's settings: %s", seen);
    cr_assert(named, "the refusal names the module");
    cr_assert_eq(st, 0);
}

/* --check runs the modules' checks against the core's settings (ABI 1.2
 * check) that a start runs: it used to pass what the start refused. */
Test(startup, check_runs_the_checks_against_core_settings)
{
    const char *const files[] = {
        "00-core.conf", "core: { modules = [ \"relay\" ]; module_path = \"@MODDIR@\"; };\n",
        "40-relay.conf", "relay: {\n  port = @RELAY@;\n  message_queue = 3000000;\n};\n",
        NULL,
    };
    const char *const args[] = { "--check", NULL };
    run_expect_failure(files, args, "40-relay.conf:3: relay.message_queue = 3000000 is not below core.write_queue_max");
}

/* Clients use the rendezvous port - 1 for the NAT test and online status
 * (client-flows.md §1): another "nat" port starts, with a warning that
 * names the setting and the port clients will use. */
Test(startup, nat_port_not_main_minus_one_is_warned)
{
    const char *const files[] = {
        "00-core.conf",
        "core: { modules = [ ]; listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; },\n"
        "                                      { name = \"nat\"; port = @RELAY@; tcp = true; } ); };\n",
        NULL,
    };
    const char *const args[] = { "--check", NULL };
    int st = run_to_exit(files, args);
    char want[160];
    snprintf(want, sizeof want, "core.listeners 'nat' is on port %d, but clients test NAT and ask online status on "
             "the rendezvous port - 1 (%d)", srv.port + 1, srv.port - 1);
    bool warned = rdvt_log_contains(&srv, want);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "a NAT port elsewhere is legal");
    cr_assert(warned, "no warning '%s'", want);
}

/* core.user (OPERATIONS.md, "Not as root"): rdvd leaves root right after
 * reading its configuration, so the admin socket, the key pair, the
 * database and the worker thread belong to the user. */
Test(startup, core_user_runs_the_modules_as_that_user, .timeout = 60)
{
    if (geteuid() != 0)
        cr_skip_test("switching users needs root");
    const struct passwd *pw = getpwnam("nobody");
    if (!pw)
        cr_skip_test("no user 'nobody' on this machine");
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    const char *const files[] = {
        "00-core.conf",
        "core: { modules = [ \"keys\", \"storage-sqlite\", \"registry\" ]; module_path = \"@MODDIR@\";\n"
        "        listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; } );\n"
        "        user = \"nobody\"; };\n",
        NULL,
    };
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
    cr_assert_eq(chown(srv.dir, uid, gid), 0, "the working directory belongs to the user (as the docs say)");
    cr_assert_eq(rdvt_start(&srv), 0);
    char path[400], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)srv.pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    unsigned r = 1, e = 1, sv = 1, fs = 1, gr = 1, ge = 1;
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "Uid: %u %u %u %u", &r, &e, &sv, &fs);
        sscanf(line, "Gid: %u %u", &gr, &ge);
    }
    fclose(f);
    cr_assert(r == uid && e == uid && sv == uid && fs == uid, "uids %u %u %u %u, want %u", r, e, sv, fs,
              (unsigned)uid);
    cr_assert(gr == gid && ge == gid);
    /* What the modules made is the user's. */
    const char *made[] = { "id_ed25519", "id_ed25519.pub", "db_v2.sqlite3", "rdvd.sock" };
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", srv.dir, made[i]);
        cr_assert_eq(stat(path, &st), 0, "%s", path);
        cr_assert_eq(st.st_uid, uid, "%s belongs to uid %u", made[i], (unsigned)st.st_uid);
    }
    /* A client registers (the database worker writes as the user), the
     * console answers, and rdvd stops cleanly, removing its socket. */
    int fd = rdvt_udp("127.0.0.1");
    Hbb__RendezvousMessage *m = rdc_udp_ask(fd, srv.port, rdc_register_peer("as-nobody"), 3000, 2);
    cr_assert_not_null(m);
    rdvt_msg_free(m);
    close(fd);
    cr_assert(rdvt_log_contains(&srv, "running as nobody"));
    cr_assert_eq(rdvt_stop(&srv), 0);
    snprintf(path, sizeof path, "%s/rdvd.sock", srv.dir);
    cr_assert_neq(access(path, F_OK), 0, "the admin socket is removed at exit");
    rdvt_cleanup(&srv);
}

Test(startup, unknown_core_user_is_refused_by_check)
{
    const char *const files[] = {
        "00-core.conf", "core: { modules = [ ]; user = \"no-such-user-rdvd\"; };\n",
        NULL,
    };
    const char *const args[] = { "--check", NULL };
    run_expect_failure(files, args, "core.user = \"no-such-user-rdvd\": no such user; create it (useradd");
}

Test(startup, print_config_shows_defaults)
{
    const char *const files[] = {
        "00-core.conf",
        "core: { modules = [ \"example\" ]; module_path = \"@MODDIR@\";\n"
        "  listeners = ( { name = \"example\"; port = @PORT@; udp = true; } ); };\n",
        NULL,
    };
    const char *const args[] = { "--print-config", NULL };
    int st = run_to_exit(files, args);
    /* R9: the TCP idle limit is upstream's 30 s unless configured */
    bool core_ok = rdvt_log_contains(&srv, "max_frame = 1048576") && rdvt_log_contains(&srv, "idle_ms = 30000");
    bool mod_ok = rdvt_log_contains(&srv, "greeting = \"hello\"");
    bool lst_ok = rdvt_log_contains(&srv, "name = \"example\"");
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0);
    cr_assert(core_ok && mod_ok && lst_ok);
}

/* The shipped configurations are valid: the default full node and the
 * rendezvous-only / relay-only profiles (issue #3, #4 deployment). */
static void check_conf_dir(const char *dir)
{
    const char *const args[] = { "--check", NULL };
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    char cmd[1024];
    /* the harness passes -c <tmp>/conf.d; point that at the shipped directory */
    snprintf(cmd, sizeof cmd, "rmdir '%s/conf.d' && ln -s '%s' '%s/conf.d'", srv.dir, dir, srv.dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(rdvt_start_exe(&srv, "rdvd", args, false), 0);
    int st = rdvt_wait_exit(&srv, 20000);
    if (st != 0) {
        snprintf(cmd, sizeof cmd, "cat '%s' >&2", srv.log);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
    }
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "%s does not pass --check", dir);
}

Test(startup, shipped_configurations_are_valid, .timeout = 60)
{
    check_conf_dir(RDV_SOURCE_DIR "/conf.d");
    check_conf_dir(RDV_SOURCE_DIR "/conf.d/profiles/rendezvous-only");
    check_conf_dir(RDV_SOURCE_DIR "/conf.d/profiles/relay-only");
}
