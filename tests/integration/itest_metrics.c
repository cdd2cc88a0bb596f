/* Integration: the metrics module on the real rdvd — a Prometheus scrape of
 * a node that has answered RustDesk clients, checked with the Prometheus
 * Python client's own text parser (python3-prometheus-client, an
 * independent implementation of the format), and the endpoint's bounds on
 * real sockets. The endpoint is an rdvd addition (modules/metrics/README.md);
 * the registrations it counts are rendezvous.md §6.1 (R-items of §6.1 are
 * tested in itest_registry.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "rdclient.h"

#define PY "/usr/bin/python3" /* Debian's, with python3-prometheus-client */
#define TOKEN "scrape-T0ken"

static rdvt_server srv;

static const char core_conf[] =
    "core: {\n"
    "  modules = [ \"keys\", \"storage-sqlite\", \"registry\", \"metrics\" ];\n"
    "  module_path = \"@MODDIR@\";\n"
    "  listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; } );\n"
    "};\n";

static const char mx_conf[] = "metrics: { port = @MX@; token = \"" TOKEN "\"; max_clients = 2; "
                              "request_timeout_ms = 400; };\n";

/* rdvt_start moves to fresh ports itself when another process holds ours. */
static void boot(void)
{
    const char *const files[] = { "00-core.conf", core_conf, "70-metrics.conf", mx_conf, NULL };
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
    cr_assert_eq(rdvt_start(&srv), 0, "rdvd did not start");
}

static void fini(void)
{
    rdvt_stop(&srv);
    rdvt_cleanup(&srv);
}

TestSuite(metrics, .init = boot, .fini = fini, .timeout = RDVT_SANITIZED ? 120 : 60);

/* Everything the server sends on fd until it closes (at most cap - 1 bytes
 * within ms); NUL-terminated. */
static size_t read_all(int fd, char *buf, size_t cap, int ms)
{
    size_t n = 0;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, ms) <= 0)
            break;
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n == cap - 1)
            break;
    }
    buf[n] = '\0';
    return n;
}

static int mx_port(void) { return srv.port + 4; }

/* One request on a fresh connection; the whole answer. */
static char *http(const char *req)
{
    int fd = rdvt_tcp("127.0.0.1", mx_port());
    cr_assert_geq(fd, 0);
    cr_assert_eq(rdvt_tcp_send_raw(fd, req, strlen(req)), 0);
    char *buf = malloc(1 << 20);
    read_all(fd, buf, 1 << 20, 5000);
    close(fd);
    return buf;
}

static int status_of(const char *answer)
{
    int st = 0;
    sscanf(answer, "HTTP/1.1 %d", &st);
    return st;
}

/* The body parsed by prometheus_client; prints "name value" for the
 * samples asked for. Returns the script's output (malloc'ed). */
static char *py_parse(const char *body, const char *names)
{
    char path[400], out[420];
    snprintf(path, sizeof path, "%s/scrape.txt", srv.dir);
    snprintf(out, sizeof out, "%s/parsed.txt", srv.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(body, f);
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             PY " -c 'import sys\n"
             "from prometheus_client.parser import text_string_to_metric_families as parse\n"
             "want = sys.argv[2].split(\",\")\n"
             "fams = list(parse(open(sys.argv[1]).read()))\n"
             "names = [s.name for f in fams for s in f.samples]\n"
             "assert len(names) == len(set(names)), \"a sample twice\"\n"
             "print(\"families\", len(fams))\n"
             "for f in fams:\n"
             "  for s in f.samples:\n"
             "    if s.name in want: print(s.name, f.type, int(s.value))\n"
             "' %s %s > %s 2>&1",
             path, names, out);
    int rc = system(cmd);
    char *text = malloc(65536);
    FILE *o = fopen(out, "r");
    size_t n = o ? fread(text, 1, 65535, o) : 0;
    text[n] = '\0';
    if (o)
        fclose(o);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "prometheus_client refused the scrape: %s", text);
    return text;
}

Test(metrics, a_scrape_parses_and_agrees_with_the_admin_stats)
{
    if (access(PY, X_OK) != 0 || system(PY " -c 'import prometheus_client' 2>/dev/null") != 0)
        cr_skip_test("python3-prometheus-client is not installed (scripts/setup.sh installs it)");
    /* Three RustDesk clients register (rendezvous.md §6.1). */
    for (int i = 0; i < 3; i++) {
        char ip[32], id[32];
        snprintf(ip, sizeof ip, "127.0.0.%d", 10 + i);
        snprintf(id, sizeof id, "mx-peer-%d", i);
        int fd = rdvt_udp(ip);
        cr_assert_geq(fd, 0);
        Hbb__RendezvousMessage *r = rdc_udp_ask(fd, srv.port, rdc_register_peer(id), 3000, 2);
        cr_assert_not_null(r, "RegisterPeerResponse");
        rdvt_msg_free(r);
        close(fd);
    }
    uint64_t admin = rdvt_stat(&srv, "registry.register_peer");
    cr_assert_eq(admin, 3);
    char *a = http("GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " TOKEN "\r\n\r\n");
    cr_assert_eq(status_of(a), 200, "%.300s", a);
    cr_assert(strstr(a, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    char *body = strstr(a, "\r\n\r\n");
    cr_assert_not_null(body);
    char *parsed = py_parse(body + 4, "rdvd_registry_register_peer_total,rdvd_registry_peers_online,"
                                      "rdvd_metrics_connections,process_resident_memory_bytes");
    cr_assert(strstr(parsed, "rdvd_registry_register_peer_total counter 3\n"), "%s", parsed);
    cr_assert(strstr(parsed, "rdvd_metrics_connections gauge 1\n"), "%s", parsed);
    /* The RSS the process reports is the one /proc shows, within a page
     * cache's worth of movement. */
    long rss = rdvt_vmrss_kib(srv.pid);
    char *p = strstr(parsed, "process_resident_memory_bytes gauge ");
    cr_assert_not_null(p, "%s", parsed);
    long got = strtol(p + strlen("process_resident_memory_bytes gauge "), NULL, 10) / 1024;
    cr_assert(got > rss / 2 && got < rss * 2, "process_resident_memory_bytes %ld KiB vs VmRSS %ld KiB", got, rss);
    free(parsed);
    free(a);
    cr_assert_eq(rdvt_stat(&srv, "metrics.scrapes"), 1);
}

Test(metrics, the_token_is_enforced_and_reloadable)
{
    char *a = http("GET /metrics HTTP/1.1\r\n\r\n");
    cr_assert_eq(status_of(a), 401, "%.300s", a);
    cr_assert(strstr(a, "WWW-Authenticate: Bearer"));
    free(a);
    a = http("GET /metrics HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n");
    cr_assert_eq(status_of(a), 401);
    free(a);
    /* SIGHUP with a new token: the old one is refused from then on. */
    char path[400];
    snprintf(path, sizeof path, "%s/conf.d/70-metrics.conf", srv.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "metrics: { port = %d; token = \"new-one\"; max_clients = 2; request_timeout_ms = 400; };\n",
            mx_port());
    fclose(f);
    char *r = rdvt_admin(&srv, "reload");
    cr_assert(r && strstr(r, "reloaded"), "%s", r ? r : "(no answer)");
    free(r);
    a = http("GET /metrics HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\n\r\n");
    cr_assert_eq(status_of(a), 401);
    free(a);
    a = http("GET /metrics HTTP/1.1\r\nAuthorization: Bearer new-one\r\n\r\n");
    cr_assert_eq(status_of(a), 200);
    free(a);
    cr_assert_eq(rdvt_stat(&srv, "metrics.unauthorized"), 3);
}

Test(metrics, slow_and_surplus_clients_are_bounded)
{
    /* Two clients that never finish their request hold both slots... */
    int a = rdvt_tcp("127.0.0.1", mx_port()), b = rdvt_tcp("127.0.0.1", mx_port());
    cr_assert_geq(a, 0);
    cr_assert_geq(b, 0);
    cr_assert_eq(rdvt_tcp_send_raw(a, "GET /metr", 9), 0);
    usleep(100 * 1000);
    /* ...so a third is answered 503 at once... */
    char *c = http("GET /metrics HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\n\r\n");
    cr_assert_eq(status_of(c), 503, "%.300s", c);
    free(c);
    /* ...and each of them gets 408 at request_timeout_ms, then the close. */
    char buf[1024];
    read_all(a, buf, sizeof buf, 3000);
    cr_assert_eq(status_of(buf), 408, "%s", buf);
    read_all(b, buf, sizeof buf, 3000);
    cr_assert_eq(status_of(buf), 408, "%s", buf);
    close(a), close(b);
    cr_assert_eq(rdvt_stat(&srv, "metrics.timeouts"), 2);
    cr_assert_eq(rdvt_stat(&srv, "metrics.busy"), 1);
    /* Slots free again. */
    c = http("GET /metrics HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\n\r\n");
    cr_assert_eq(status_of(c), 200);
    free(c);
    cr_assert(rdvt_alive(&srv));
}

/* ------------------------------------------------------------------ the shipped alert rules */
/* docs/prometheus/rdvd-alerts.yml names rdvd_ metrics: on a full node
 * (every shipped module but login-gate and candy) each must exist, so a
 * renamed stat cannot leave a rule that silently never fires; and the file
 * must be YAML of Prometheus' rule-file shape. */
static const char full_core[] =
    "core: {\n"
    "  modules = [ \"keys\", \"storage-sqlite\", \"ip-blocker\", \"registry\", \"nat-test\", \"punch-coordinator\",\n"
    "              \"secure-tcp\", \"api-proxy\", \"websocket-transport\", \"relay\", \"metrics\" ];\n"
    "  module_path = \"@MODDIR@\";\n"
    "  listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; },\n"
    "                { name = \"nat\"; port = @NAT@; tcp = true; } );\n"
    "};\n";

static void boot_full(void)
{
    const char *const files[] = {
        "00-core.conf", full_core,
        "40-relay.conf", "relay: { port = @RELAY@; };\n",
        "50-websocket-transport.conf", "websocket-transport: { rendezvous_port = @WS@; relay_port = @RWS@; };\n",
        "70-metrics.conf", "metrics: { port = @MX@; };\n",
        NULL,
    };
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
    cr_assert_eq(rdvt_start(&srv), 0, "rdvd did not start");
}

TestSuite(metrics_rules, .init = boot_full, .fini = fini, .timeout = RDVT_SANITIZED ? 120 : 60);

Test(metrics_rules, every_metric_the_alert_rules_name_exists)
{
    const char *rules_path = RDV_SOURCE_DIR "/docs/prometheus/rdvd-alerts.yml";
    FILE *f = fopen(rules_path, "r");
    cr_assert_not_null(f, "%s", rules_path);
    static char rules[65536];
    size_t n = fread(rules, 1, sizeof rules - 1, f);
    fclose(f);
    rules[n] = '\0';
    char *a = http("GET /metrics HTTP/1.1\r\n\r\n");
    cr_assert_eq(status_of(a), 200, "%.300s", a);
    int names = 0;
    for (const char *p = rules; (p = strstr(p, "rdvd_")) != NULL;) {
        size_t len = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_");
        /* not a name: the bare prefix in a comment, the regex in RdvdOutOfMemory */
        bool name = len > strlen("rdvd_") && p[len] != '.' && p[len] != '"';
        if (name) {
            char want[160];
            snprintf(want, sizeof want, "\n# TYPE %.*s ", (int)len, p);
            cr_assert(strstr(a, want), "%s names %.*s, which a full node does not export", rules_path, (int)len, p);
            names++;
        }
        p += len;
    }
    cr_assert_geq(names, 20, "only %d metric names found in the rules", names);
    free(a);
    if (system(PY " -c 'import yaml' 2>/dev/null") != 0)
        cr_skip_test("python3-yaml is not installed (scripts/setup.sh installs it)");
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             PY " -c 'import sys, yaml\n"
             "d = yaml.safe_load(open(sys.argv[1]))\n"
             "rules = [r for g in d[\"groups\"] for r in g[\"rules\"]]\n"
             "for r in rules:\n"
             "  assert set(r) <= {\"alert\", \"expr\", \"for\", \"labels\", \"annotations\"}, r\n"
             "  assert r[\"alert\"] and str(r[\"expr\"]).count(\"(\") == str(r[\"expr\"]).count(\")\"), r\n"
             "  assert r[\"labels\"][\"severity\"] in (\"critical\", \"warning\"), r\n"
             "assert len({r[\"alert\"] for r in rules}) == len(rules)\n"
             "' %s",
             rules_path);
    cr_assert_eq(system(cmd), 0, "%s is not a well-formed Prometheus rule file", rules_path);
}
