/* Integration: the hbbr launcher (config-compat.md §4: flags, .env, the PORT
 * quirk, bandwidth variables) runs the relay module (relay-checklist.md
 * L1-L4, L55, L69). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "rdv/wire.h"

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

/* A TCP connection to ip ("1.2.3.4" or "[::1]"), or -1 if refused. */
static int connect_to(const char *ip, int port)
{
    rdv_addr a;
    struct sockaddr_storage ss;
    cr_assert_eq(rdv_addr_parse(&a, ip, (uint16_t)port), 0, "not an address: %s", ip);
    int fam = rdv_addr_is_v4(&a) ? AF_INET : AF_INET6;
    socklen_t len = rdv_addr_to_sockaddr(&a, fam, &ss);
    int fd = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&ss, len) != 0)
        fd = (close(fd), -1);
    return fd;
}

static bool port_open_at(const char *ip, int port)
{
    int fd = connect_to(ip, port);
    if (fd >= 0)
        close(fd);
    return fd >= 0;
}

/* Sockets of a family in this network namespace (/proc/net/<file> minus
 * its header line). */
static int sockets_in(const char *file)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/net/%s", file);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    int n = -1;
    while (fgets(line, sizeof line, f))
        n++;
    fclose(f);
    return n;
}

/* A network namespace of this test's own, with its loopback up: the
 * default ports are free there whatever runs on the machine. With extra
 * (an IPv4 literal) that address is added to lo as well: a source outside
 * 127/8, which hbbr's loopback console (relay.md §2) leaves to the relay.
 * Needs CAP_SYS_ADMIN (CI runs as root); false otherwise. */
static bool private_netns(const char *extra)
{
    if (unshare(CLONE_NEWNET) != 0)
        return false;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = { 0 };
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    bool ok = fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
    ifr.ifr_flags |= IFF_UP;
    ok = ok && ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
    if (ok && extra) {
        struct ifreq al = { 0 };
        snprintf(al.ifr_name, sizeof al.ifr_name, "lo:1");
        struct sockaddr_in *a = (struct sockaddr_in *)&al.ifr_addr;
        a->sin_family = AF_INET;
        inet_pton(AF_INET, extra, &a->sin_addr);
        ok = ioctl(fd, SIOCSIFADDR, &al) == 0;
    }
    if (fd >= 0)
        close(fd);
    return ok;
}

/* L1: no arguments: TCP 21117 and 21119 (WebSocket) on every address of
 * both families, and no UDP socket at all. */
Test(hbbr, L1_no_arguments_listens_on_21117_and_21119, .fini = teardown, .timeout = 60)
{
    need_relay();
    if (!private_netns(NULL))
        cr_skip_test("cannot create a network namespace (not root)");
    cr_assert_eq(sockets_in("udp") + sockets_in("udp6"), 0);
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    cr_assert_eq(rdvt_start_exe(&srv, "hbbr", NULL, true), 0);
    const char *const addrs[] = { "127.0.0.1", "127.0.0.2", "[::1]" };
    for (size_t i = 0; i < 3; i++) {
        cr_assert(port_open_at(addrs[i], 21117), "no relay listener on %s:21117", addrs[i]);
        cr_assert(port_open_at(addrs[i], 21119), "no WebSocket relay listener on %s:21119", addrs[i]);
    }
    cr_assert_eq(sockets_in("udp") + sockets_in("udp6"), 0, "hbbr opened a UDP socket");
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

/* L3: PORT in .env means PORT + 1 (and + 3 for WebSocket), but -p wins. */
Test(hbbr, L3_dash_p_wins_over_dotenv_port, .fini = teardown, .timeout = 60)
{
    need_relay();
    cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
    char path[512], port[16];
    snprintf(path, sizeof path, "%s/.env", srv.dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "PORT=%d\n", srv.port);
    fclose(f);
    snprintf(port, sizeof port, "%d", srv.port + 4);
    const char *const args[] = { "-p", port, NULL };
    cr_assert_eq(rdvt_start_exe(&srv, "hbbr", args, true), 0);
    cr_assert(port_open(srv.port + 4), "-p is the relay port");
    cr_assert(port_open(srv.port + 6), "-p + 2 is the WebSocket relay port");
    cr_assert(!port_open(srv.port + 1), "PORT + 1 from .env must not be used with -p");
}

/* L4: a port that is not one, or a bind address that is not a literal,
 * stops start-up with exit status 1 and says which. */
Test(hbbr, L4_invalid_port_or_bind_exits_1)
{
    need_relay();
    const struct { const char *flag, *value, *says; } cases[] = {
        { "-p", "abc", "Invalid port" },
        { "-p", "70000", "Invalid port" },
        { "-b", "not-an-ip", "Invalid bind address" },
    };
    for (size_t i = 0; i < 3; i++) {
        const char *const args[] = { cases[i].flag, cases[i].value, NULL };
        cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
        cr_assert_eq(rdvt_start_exe(&srv, "hbbr", args, false), 0);
        int st = rdvt_wait_exit(&srv, 5000);
        bool says = rdvt_log_contains(&srv, cases[i].says);
        rdvt_cleanup(&srv);
        cr_assert_eq(st, 1, "%s %s: exit status %d", cases[i].flag, cases[i].value, st);
        cr_assert(says, "%s %s: no '%s' message", cases[i].flag, cases[i].value, cases[i].says);
    }
}

/* One side of a relay pair presenting key: refused (closed at once, no
 * bytes) or accepted (waiting for its partner). */
#define OUTSIDE "198.18.0.55" /* a client address outside 127/8 (private_netns) */
static bool key_accepted(int port, const char *key)
{
    Hbb__RequestRelay rr = HBB__REQUEST_RELAY__INIT;
    rr.uuid = "hbbr-key-check";
    rr.licence_key = (char *)key;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REQUEST_RELAY;
    m.request_relay = &rr;
    int fd = connect_to(OUTSIDE, port);
    cr_assert_geq(fd, 0);
    cr_assert_eq(rdvt_tcp_send(fd, &m), 0);
    bool closed = rdvt_tcp_closed(fd, srv.valgrind ? 3000 : 700);
    close(fd);
    return !closed;
}

/* L55: KEY in the environment or in .env is the required key; -k wins. */
Test(hbbr, L55_key_from_environment_dotenv_and_dash_k, .timeout = 90)
{
    need_relay();
    if (!private_netns(OUTSIDE))
        cr_skip_test("cannot create a network namespace (not root)");
    const char *K = "L55-key-one", *K2 = "L55-key-two";
    char port[16], path[512];
    for (int how = 0; how < 4; how++) { /* env, .env, env + -k, .env + -k */
        cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
        snprintf(port, sizeof port, "%d", srv.port + 1);
        if (how % 2 == 0) {
            setenv("KEY", K, 1);
        } else {
            unsetenv("KEY");
            snprintf(path, sizeof path, "%s/.env", srv.dir);
            FILE *f = fopen(path, "w");
            fprintf(f, "KEY=%s\n", K);
            fclose(f);
        }
        const char *const plain[] = { "-p", port, NULL };
        const char *const dash_k[] = { "-p", port, "-k", K2, NULL };
        cr_assert_eq(rdvt_start_exe(&srv, "hbbr", how < 2 ? plain : dash_k, true), 0);
        unsetenv("KEY");
        const char *want = how < 2 ? K : K2, *other = how < 2 ? K2 : K;
        cr_assert(key_accepted(srv.port + 1, want), "case %d: %s refused", how, want);
        cr_assert(!key_accepted(srv.port + 1, other), "case %d: %s accepted", how, other);
        cr_assert(!key_accepted(srv.port + 1, ""), "case %d: an empty key accepted", how);
        int st = rdvt_stop(&srv);
        rdvt_cleanup(&srv);
        cr_assert_eq(st, 0);
    }
}

/* L69: SINGLE_BANDWIDTH that is not a positive number keeps the default. */
Test(hbbr, L69_bad_single_bandwidth_keeps_128, .timeout = 90)
{
    need_relay();
    const char *const bad[] = { "abc", "0", "-5" };
    char port[16];
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(rdvt_prepare(&srv, NULL), 0);
        snprintf(srv.sock, sizeof srv.sock, "%s/hbbr.sock", srv.dir);
        snprintf(port, sizeof port, "%d", srv.port + 1);
        const char *const args[] = { "-p", port, NULL };
        setenv("SINGLE_BANDWIDTH", bad[i], 1);
        cr_assert_eq(rdvt_start_exe(&srv, "hbbr", args, true), 0);
        unsetenv("SINGLE_BANDWIDTH");
        char *sb = rdvt_admin(&srv, "sb");
        cr_assert_not_null(sb);
        cr_assert_str_eq(sb, "128Mb/s\n", "SINGLE_BANDWIDTH=%s: sb says '%s'", bad[i], sb);
        free(sb);
        int st = rdvt_stop(&srv);
        rdvt_cleanup(&srv);
        cr_assert_eq(st, 0);
    }
}
