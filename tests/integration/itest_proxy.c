/* Integration: HttpProxyRequest forwarded to an HTTP API server (EXT
 * rendezvous.md §15.6, client-flows.md §6.9) by the real rdvd with modules
 * keys, secure-tcp and api-proxy. The API server is proxy_upstream.py on
 * loopback (it echoes what it received as JSON). The test plays a client
 * >= 1.4.7: secure-TCP handshake, one sealed HttpProxyRequest, one sealed
 * HttpProxyResponse. */
#include <criterion/criterion.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "rdclient.h"
#include "rdv/wire.h"

static rdvt_server srv;
static pid_t up_pid = -1;
static char up_log[400];
static char conf_mods[1024];

/* Start proxy_upstream.py (next to this file) and return its port. */
static int upstream_start(void)
{
    char here[512], script[600];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(script, sizeof script, "%s/proxy_upstream.py", dirname(here));
    snprintf(up_log, sizeof up_log, "/tmp/rdvt-upstream-XXXXXX");
    int lfd = mkstemp(up_log);
    cr_assert_geq(lfd, 0);
    close(lfd);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    up_pid = fork();
    cr_assert_geq(up_pid, 0);
    if (up_pid == 0) {
        dup2(p[1], 1);
        close(p[0]), close(p[1]);
        execlp("python3", "python3", script, up_log, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    /* Read the whole "<port>\n" line: it may arrive in pieces. */
    char line[32] = "";
    size_t len = 0;
    while (len < sizeof line - 1 && !strchr(line, '\n')) {
        struct pollfd pf = { p[0], POLLIN, 0 };
        cr_assert_gt(poll(&pf, 1, 10000), 0, "proxy_upstream.py did not start");
        ssize_t n = read(p[0], line + len, sizeof line - 1 - len);
        cr_assert_gt(n, 0, "proxy_upstream.py exited");
        len += (size_t)n;
        line[len] = 0;
    }
    close(p[0]);
    int port = atoi(line);
    cr_assert_gt(port, 0, "bad port line '%s'", line);
    return port;
}

static void setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    int port = upstream_start();
    snprintf(conf_mods, sizeof conf_mods,
             "keys: { key = \"-\"; };\n"
             "api-proxy: { api_base_url = \"http://127.0.0.1:%d/base/\"; timeout_ms = 1000;\n"
             "             max_response_body = 2000; };\n",
             port);
    const char *const files[] = {
        "00-core.conf",
        "core: {\n"
        "  modules = [ \"keys\", \"secure-tcp\", \"api-proxy\" ];\n"
        "  module_path = \"@MODDIR@\";\n"
        "  listeners = ( { name = \"main\"; port = @PORT@; udp = true; tcp = true; } );\n"
        "};\n",
        "30-mods.conf",
        conf_mods,
        NULL,
    };
    cr_assert_eq(rdvt_prepare(&srv, files), 0);
    cr_assert_eq(rdvt_start(&srv), 0, "rdvd did not start");
}

static void teardown(void)
{
    int st = rdvt_stop(&srv);
    if (up_pid > 0) {
        kill(up_pid, SIGTERM);
        waitpid(up_pid, NULL, 0);
    }
    unlink(up_log);
    rdvt_cleanup(&srv);
    cr_assert_eq(st, 0, "rdvd did not exit cleanly (status %d)", st);
}

TestSuite(proxy, .init = setup, .fini = teardown, .timeout = 60);

/* ------------------------------------------------------------------ client */
typedef rdc_keyed client;

/* Keyed as a client configured with the server's id_ed25519.pub (rdclient.c). */
static client keyed_client(const char *ip)
{
    char b64[128];
    uint8_t pk[32];
    rdc_read_server_key(&srv, b64, sizeof b64, pk, NULL);
    return rdc_keyed_connect(ip, srv.port, pk, 1000);
}

typedef struct { const char *name, *value; } hdr;

static Hbb__RendezvousMessage *request(const char *method, const char *path, const hdr *hs, size_t nh,
                                       const char *body)
{
    static Hbb__HeaderEntry he[8], *hp[8];
    static Hbb__HttpProxyRequest r;
    static Hbb__RendezvousMessage m;
    hbb__http_proxy_request__init(&r);
    hbb__rendezvous_message__init(&m);
    for (size_t i = 0; i < nh; i++) {
        hbb__header_entry__init(&he[i]);
        he[i].name = (char *)hs[i].name, he[i].value = (char *)hs[i].value;
        hp[i] = &he[i];
    }
    r.method = (char *)method, r.path = (char *)path, r.n_headers = nh, r.headers = hp;
    if (body)
        r.body = (ProtobufCBinaryData){ strlen(body), (uint8_t *)body };
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_HTTP_PROXY_REQUEST;
    m.http_proxy_request = &r;
    return &m;
}

/* The one sealed HttpProxyResponse (caller frees with rdvt_msg_free). */
static Hbb__RendezvousMessage *response(client *c, int ms)
{
    uint8_t *e = NULL;
    long n = rdvt_tcp_recv_frame(c->fd, &e, ms);
    cr_assert_gt(n, 16, "no sealed answer (%ld)", n);
    Hbb__RendezvousMessage *m = rdc_open_sealed(c, e, n);
    free(e);
    cr_assert(m->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_HTTP_PROXY_RESPONSE);
    return m;
}

/* Body as a string, for strstr on the JSON echo. */
static char *body_text(const Hbb__HttpProxyResponse *r)
{
    char *s = malloc(r->body.len + 1);
    memcpy(s, r->body.data, r->body.len);
    s[r->body.len] = 0;
    return s;
}

static const char *header(const Hbb__HttpProxyResponse *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i]->name, name) == 0)
            return r->headers[i]->value;
    return NULL;
}

static bool upstream_saw(const char *needle)
{
    return rdvt_file_contains(up_log, needle);
}

/* ------------------------------------------------------------------ tests */
Test(proxy, get_is_forwarded_under_the_base)
{
    client c = keyed_client("127.0.0.2");
    hdr hs[] = { { "Authorization", "Bearer tok" }, { "X-Real-IP", "6.6.6.6" }, { "Connection", "close" } };
    rdc_send_sealed(&c, request("GET", "/api/echo?x=1", hs, 3, NULL));
    Hbb__RendezvousMessage *m = response(&c, 3000);
    const Hbb__HttpProxyResponse *r = m->http_proxy_response;
    cr_assert_str_eq(r->error, "");
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(header(r, "X-Upstream"), "python");
    char *b = body_text(r);
    cr_assert(strstr(b, "\"method\": \"GET\""), "%s", b);
    cr_assert(strstr(b, "\"path\": \"/base/api/echo?x=1\""), "%s", b);
    cr_assert(strstr(b, "[\"Authorization\", \"Bearer tok\"]"), "%s", b);
    cr_assert(strstr(b, "[\"X-Forwarded-For\", \"127.0.0.2\"]"), "%s", b);
    cr_assert(strstr(b, "[\"X-Real-IP\", \"127.0.0.2\"]"), "%s", b);
    cr_assert_null(strstr(b, "6.6.6.6"), "the client cannot choose its forwarded address");
    cr_assert_null(strstr(b, "[\"Connection\", \"close\"]"), "hop-by-hop headers are not forwarded");
    free(b);
    rdvt_msg_free(m);
    close(c.fd);
    cr_assert_eq(rdvt_stat(&srv, "api-proxy.forwarded"), 1);
}

Test(proxy, post_body_and_status_pass_through)
{
    client c = keyed_client("127.0.0.2");
    hdr hs[] = { { "Content-Type", "application/x-www-form-urlencoded" } };
    rdc_send_sealed(&c, request("POST", "/api/status/404", hs, 1, "user=u&pass=p"));
    Hbb__RendezvousMessage *m = response(&c, 3000);
    cr_assert_eq(m->http_proxy_response->status, 404);
    cr_assert_str_eq(m->http_proxy_response->error, "", "an HTTP status is an answer, not a failure");
    char *b = body_text(m->http_proxy_response);
    cr_assert(strstr(b, "\"body\": \"user=u&pass=p\""), "%s", b);
    cr_assert(strstr(b, "\"method\": \"POST\""), "%s", b);
    free(b);
    rdvt_msg_free(m);
    close(c.fd);
}

Test(proxy, paths_cannot_leave_the_base)
{
    const char *bad[] = { "/../etc/passwd", "//evil.example/x", "http://evil.example/", "/a/%2e%2e/passwd" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        client c = keyed_client("127.0.0.3");
        rdc_send_sealed(&c, request("GET", bad[i], NULL, 0, NULL));
        Hbb__RendezvousMessage *m = response(&c, 3000);
        cr_assert_eq(m->http_proxy_response->status, 400, "%s", bad[i]);
        cr_assert_str_neq(m->http_proxy_response->error, "");
        rdvt_msg_free(m);
        close(c.fd);
    }
    cr_assert_not(upstream_saw("passwd"));
    cr_assert_not(upstream_saw("evil"));
    cr_assert_eq(rdvt_stat(&srv, "api-proxy.rejected"), 4);
}

Test(proxy, slow_upstream_times_out)
{
    client c = keyed_client("127.0.0.2");
    rdc_send_sealed(&c, request("GET", "/api/slow", NULL, 0, NULL));
    Hbb__RendezvousMessage *m = response(&c, 3000);
    cr_assert_eq(m->http_proxy_response->status, 504);
    cr_assert_str_neq(m->http_proxy_response->error, "");
    rdvt_msg_free(m);
    close(c.fd);
}

Test(proxy, response_size_is_bounded)
{
    client c = keyed_client("127.0.0.2");
    rdc_send_sealed(&c, request("GET", "/api/big?n=2000", NULL, 0, NULL));
    Hbb__RendezvousMessage *m = response(&c, 3000);
    cr_assert_eq(m->http_proxy_response->status, 200);
    cr_assert_eq(m->http_proxy_response->body.len, 2000);
    rdvt_msg_free(m);
    close(c.fd);
    c = keyed_client("127.0.0.3");
    rdc_send_sealed(&c, request("GET", "/api/big?n=2001", NULL, 0, NULL));
    m = response(&c, 3000);
    cr_assert_eq(m->http_proxy_response->status, 502);
    cr_assert_str_neq(m->http_proxy_response->error, "");
    cr_assert_eq(m->http_proxy_response->body.len, 0);
    rdvt_msg_free(m);
    close(c.fd);
}

Test(proxy, plaintext_client_gets_an_error_not_silence)
{
    int fd = rdvt_tcp("127.0.0.2", srv.port);
    Hbb__RendezvousMessage *offer = rdvt_tcp_recv(fd, 1000);
    cr_assert(offer && offer->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_KEY_EXCHANGE);
    rdvt_msg_free(offer);
    cr_assert_eq(rdvt_tcp_send(fd, request("GET", "/api/echo", NULL, 0, NULL)), 0);
    Hbb__RendezvousMessage *m = rdvt_tcp_recv(fd, 3000);
    cr_assert(m && m->union_case == HBB__RENDEZVOUS_MESSAGE__UNION_HTTP_PROXY_RESPONSE);
    cr_assert_eq(m->http_proxy_response->status, 403);
    cr_assert_str_neq(m->http_proxy_response->error, "");
    rdvt_msg_free(m);
    close(fd);
    cr_assert_not(upstream_saw("/api/echo"));
}

Test(proxy, concurrent_clients_and_a_client_that_leaves)
{
    client a = keyed_client("127.0.0.2"), b = keyed_client("127.0.0.3"), g = keyed_client("127.0.0.4");
    rdc_send_sealed(&g, request("GET", "/api/slow", NULL, 0, NULL));
    rdc_send_sealed(&a, request("GET", "/api/echo?who=a", NULL, 0, NULL));
    rdc_send_sealed(&b, request("PUT", "/api/echo?who=b", NULL, 0, "{}"));
    close(g.fd); /* gone before its answer */
    Hbb__RendezvousMessage *ma = response(&a, 3000), *mb = response(&b, 3000);
    char *ba = body_text(ma->http_proxy_response), *bb = body_text(mb->http_proxy_response);
    cr_assert(strstr(ba, "who=a"), "%s", ba);
    cr_assert(strstr(bb, "who=b") && strstr(bb, "\"method\": \"PUT\""), "%s", bb);
    free(ba), free(bb);
    rdvt_msg_free(ma), rdvt_msg_free(mb);
    close(a.fd), close(b.fd);
    for (int i = 0; i < 50 && rdvt_stat(&srv, "api-proxy.aborted") < 1; i++)
        usleep(20000);
    cr_assert_eq(rdvt_stat(&srv, "api-proxy.aborted"), 1);
    cr_assert_eq(rdvt_stat(&srv, "api-proxy.in_flight"), 0);
}
