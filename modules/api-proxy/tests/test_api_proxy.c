/* test_api_proxy.c — the api-proxy module against the fake core
 * (rendezvous.md §15.3, §15.5, §15.6; client-flows.md §6.6, §6.9; R225,
 * R231). HttpProxyRequests are forwarded to a tiny HTTP server running in
 * a thread of the test process; the test drives libcurl's sockets through
 * the fake core's io watchers (fc_io_fire) and its timers (fc_advance). */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fakecore.h"
#include "../apx.h"

/* ------------------------------------------------------------------ upstream HTTP server */
static struct {
    int lfd, port;
    pthread_t th;
    pthread_mutex_t mu;
    char last[65536]; /* the last request, raw */
    size_t last_len;
    int requests;
    volatile int stop;
} up;

static void up_reply(int fd, const char *status, const char *extra_headers, const char *body, size_t blen)
{
    char head[16384];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Length: %zu\r\nConnection: close\r\nKeep-Alive: timeout=5\r\n%s\r\n",
                     status, blen, extra_headers);
    /* MSG_NOSIGNAL: the proxy may have given up on us already. */
    if (send(fd, head, (size_t)n, MSG_NOSIGNAL) < 0 || (blen && send(fd, body, blen, MSG_NOSIGNAL) < 0))
        return;
}

static void up_serve(int fd)
{
    char buf[65536];
    size_t len = 0;
    char *end = NULL;
    while (!end && len < sizeof buf - 1) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            return;
        len += (size_t)r;
        buf[len] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end)
        return;
    size_t hl = (size_t)(end + 4 - buf), cl = 0;
    const char *c = strcasestr(buf, "\r\ncontent-length:");
    if (c && c < end)
        cl = strtoul(c + 17, NULL, 10);
    while (len < hl + cl && len < sizeof buf - 1) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    pthread_mutex_lock(&up.mu);
    memcpy(up.last, buf, len);
    up.last_len = len;
    up.last[len] = 0;
    up.requests++;
    pthread_mutex_unlock(&up.mu);

    char path[1024] = "";
    sscanf(buf, "%*s %1023s", path);
    if (strstr(path, "/slow")) {
        usleep(1500 * 1000);
        up_reply(fd, "200 OK", "", "late", 4);
    } else if (strstr(path, "/big")) {
        static char big[100000];
        memset(big, 'x', sizeof big);
        up_reply(fd, "200 OK", "", big, sizeof big);
    } else if (strstr(path, "/manyheaders")) {
        char hs[4096] = "";
        for (int i = 0; i < 40; i++)
            snprintf(hs + strlen(hs), sizeof hs - strlen(hs), "X-H-%d: %d\r\n", i, i);
        up_reply(fd, "200 OK", hs, "", 0);
    } else if (strstr(path, "/teapot")) {
        up_reply(fd, "418 I'm a teapot", "Content-Type: text/plain\r\n", "short and stout", 15);
    } else {
        up_reply(fd, "200 OK", "Content-Type: application/json\r\nX-Upstream: yes\r\nX-Empty:\r\nBad Name: v\r\n", "{\"ok\":true}", 11);
    }
}

static void *up_main(void *arg)
{
    (void)arg;
    while (!up.stop) {
        struct pollfd p = { up.lfd, POLLIN, 0 };
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept(up.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        up_serve(fd);
        close(fd);
    }
    return NULL;
}

static void up_start(void)
{
    pthread_mutex_init(&up.mu, NULL);
    up.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(bind(up.lfd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(up.lfd, 16), 0);
    socklen_t al = sizeof a;
    getsockname(up.lfd, (struct sockaddr *)&a, &al);
    up.port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&up.th, NULL, up_main, NULL), 0);
}

static void up_stop(void)
{
    up.stop = 1;
    pthread_join(up.th, NULL);
    close(up.lfd);
}

/* The last request the upstream saw (copy). */
static const char *up_last(void)
{
    static char copy[65536];
    pthread_mutex_lock(&up.mu);
    memcpy(copy, up.last, up.last_len + 1);
    pthread_mutex_unlock(&up.mu);
    return copy;
}

/* ------------------------------------------------------------------ fixture */
static fc_core *fc;
static const rdv_module *mod;
static void *st;
static char conf[2048];

static const char *conf_with(const char *extra)
{
    snprintf(conf, sizeof conf, "api_base_url = \"http://127.0.0.1:%d/base/\"\n%s", up.port, extra ? extra : "");
    return conf;
}

static void reload(const char *c)
{
    fc_unload(fc, mod, st);
    cr_assert_eq(fc_load(fc, mod, c, &st), 0);
}

static void setup(void)
{
    up_start();
    fc = fc_new();
    mod = rdv_module_get();
    cr_assert_eq(fc_load(fc, mod, conf_with(NULL), &st), 0);
}

static void teardown(void)
{
    fc_free(fc);
    up_stop();
}

TestSuite(api_proxy, .init = setup, .fini = teardown, .timeout = 30);

/* ------------------------------------------------------------------ helpers */
static int peer_n;

static rdv_conn_id conn_on(const char *listener, bool keyed)
{
    char a[64];
    snprintf(a, sizeof a, "10.2.0.%d:%d", 1 + peer_n % 200, 50000 + peer_n);
    peer_n++;
    rdv_addr peer = fc_addr(a);
    rdv_conn_id id = fc_conn_open(fc, listener, RDV_TR_TCP, &peer);
    if (keyed) { /* what secure-tcp does after a good handshake */
        static const uint8_t key[32] = { 0x44 };
        rdv_core *h = fc_handle(fc, "secure-tcp");
        cr_assert_eq(h->api->conn_set_key(h, id, key), 0);
    }
    return id;
}

static rdv_conn_id keyed_conn(void) { return conn_on("main", true); }

typedef struct { const char *name, *value; } hdr;

static int send_req(rdv_conn_id id, const char *method, const char *path, const hdr *hs, size_t nh,
                    const char *body)
{
    Hbb__HeaderEntry he[16], *hp[16];
    cr_assert_leq(nh, 16);
    for (size_t i = 0; i < nh; i++) {
        hbb__header_entry__init(&he[i]);
        he[i].name = (char *)hs[i].name;
        he[i].value = (char *)hs[i].value;
        hp[i] = &he[i];
    }
    Hbb__HttpProxyRequest r = HBB__HTTP_PROXY_REQUEST__INIT;
    r.method = (char *)method;
    r.path = (char *)path;
    r.n_headers = nh;
    r.headers = hp;
    if (body) {
        r.body.data = (uint8_t *)body;
        r.body.len = strlen(body);
    }
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_HTTP_PROXY_REQUEST;
    m.http_proxy_request = &r;
    return fc_conn_msg(fc, id, &m);
}

/* Run curl's sockets and timers until the module sends something. */
static const fc_sent *pump(int max_ms)
{
    apx *ax = st;
    for (int t = 0; t <= max_ms; t += 5) {
        if (fc_sent_count(fc))
            return fc_next_sent(fc);
        struct pollfd p[64];
        int n = 0;
        for (apx_sock *sk = ax->socks; sk && n < 64; sk = sk->next) {
            p[n].fd = sk->fd;
            p[n].events = (short)(((sk->events & RDV_IO_READ) ? POLLIN : 0) | ((sk->events & RDV_IO_WRITE) ? POLLOUT : 0));
            p[n].revents = 0;
            n++;
        }
        if (n)
            poll(p, (nfds_t)n, 5);
        else
            usleep(5000);
        for (int i = 0; i < n; i++) {
            unsigned ev = 0;
            if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
                ev |= RDV_IO_READ;
            if (p[i].revents & (POLLOUT | POLLERR))
                ev |= RDV_IO_WRITE;
            if (ev)
                fc_io_fire(fc, p[i].fd, ev);
        }
        fc_advance(fc, 5);
    }
    return fc_sent_count(fc) ? fc_next_sent(fc) : NULL;
}

static const Hbb__HttpProxyResponse *expect_response(rdv_conn_id id, const fc_sent *s)
{
    cr_assert_not_null(s, "no HttpProxyResponse");
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->conn, id);
    cr_assert_not_null(s->msg);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_HTTP_PROXY_RESPONSE);
    return s->msg->http_proxy_response;
}

/* An immediate error answer (no upstream involved). */
static const Hbb__HttpProxyResponse *expect_error(rdv_conn_id id, int status, const char *text)
{
    const Hbb__HttpProxyResponse *r = expect_response(id, fc_next_sent(fc));
    cr_assert_eq(r->status, status, "status %d, want %d (%s)", r->status, status, r->error);
    cr_assert_str_neq(r->error, "", "an error answer must carry error text");
    if (text)
        cr_assert(strstr(r->error, text), "error \"%s\" lacks \"%s\"", r->error, text);
    cr_assert(fc_conn_alive(fc, id));
    return r;
}

static const char *resp_header(const Hbb__HttpProxyResponse *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i]->name, name) == 0)
            return r->headers[i]->value;
    return NULL;
}

/* ------------------------------------------------------------------ path and URL rules (no SSRF) */
Test(api_proxy, paths_under_the_base_are_allowed)
{
    const char *ok[] = { "/", "/api/login", "/api/ab?x=1&next=/a/../b", "/a/b.c/..d/...", "/a//b",
                         "/api/peers?current=1&pageSize=100", "/a%20b", "/x/.well-known" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        cr_assert(apx_path_ok(ok[i]), "%s should pass", ok[i]);
}

Test(api_proxy, paths_escaping_the_base_are_refused)
{
    const char *bad[] = { "", "api", "//evil.example/x", "http://evil.example/", "https://x", "/a/../b", "/..",
                          "/a/..", "/./a", "/a/./b", "/a/%2e%2e/b", "/a/%2E./b", "/a/.%2e", "/%2e", "/a%2fb",
                          "/a%2Fb", "/a%5cb", "/a%00b", "/a b", "/a\r\nHost: x", "/a#frag", "/a\\b", "/%zz", "/a%2",
                          "/a%", "/\x7f", "/\xc3\xa9" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(apx_path_ok(bad[i]), "%s should be refused", bad[i]);
    char longp[8200];
    longp[0] = '/';
    memset(longp + 1, 'a', sizeof longp - 2);
    longp[sizeof longp - 1] = 0;
    cr_assert_not(apx_path_ok(longp));
}

Test(api_proxy, base_url_rules)
{
    cr_assert(apx_base_url_ok("http://127.0.0.1:21114"));
    cr_assert(apx_base_url_ok("https://api.example.com/rustdesk/"));
    cr_assert(apx_base_url_ok("HTTP://[::1]:21114"));
    const char *bad[] = { "", "ftp://x", "http://", "http:///x", "http://a b", "http://x/?q=1", "http://x/#f",
                          "file:///etc/passwd", "127.0.0.1:21114", "http://x\\y", "gopher://x" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(apx_base_url_ok(bad[i]), "%s should be refused", bad[i]);
}

Test(api_proxy, header_rules)
{
    cr_assert(apx_header_name_ok("Authorization"));
    cr_assert(apx_header_name_ok("X-Custom_1"));
    cr_assert_not(apx_header_name_ok(""));
    cr_assert_not(apx_header_name_ok("Bad Name"));
    cr_assert_not(apx_header_name_ok("Bad:Name"));
    cr_assert_not(apx_header_name_ok("X\r\nInjected"));
    cr_assert(apx_header_value_ok("Bearer abc\tdef"));
    cr_assert(apx_header_value_ok(""));
    cr_assert_not(apx_header_value_ok("a\r\nInjected: 1"));
    cr_assert_not(apx_header_value_ok("a\nb"));
    cr_assert_not(apx_header_value_ok("a\rb"));
    cr_assert_not(apx_header_value_ok("a\x01"));
    cr_assert(apx_hop_by_hop("Connection", 10));
    cr_assert(apx_hop_by_hop("transfer-encoding", 17));
    cr_assert(apx_hop_by_hop("Keep-Alive", 10));
    cr_assert_not(apx_hop_by_hop("Content-Type", 12));
}

/* The plan for a request: URL, method and the header lines curl gets. */
static bool plan_has(const apx_plan *p, const char *line)
{
    for (struct curl_slist *l = p->headers; l; l = l->next)
        if (strcasecmp(l->data, line) == 0)
            return true;
    return false;
}

static bool plan_has_name(const apx_plan *p, const char *name)
{
    size_t n = strlen(name);
    for (struct curl_slist *l = p->headers; l; l = l->next)
        if (strncasecmp(l->data, name, n) == 0 && (l->data[n] == ':' || l->data[n] == ';'))
            return true;
    return false;
}

static int plan_for(const apx_cfg *cfg, const char *method, const char *path, const hdr *hs, size_t nh,
                    size_t body_len, apx_plan *p, const char **why)
{
    Hbb__HeaderEntry he[80], *hp[80];
    for (size_t i = 0; i < nh; i++) {
        hbb__header_entry__init(&he[i]);
        he[i].name = (char *)hs[i].name, he[i].value = (char *)hs[i].value;
        hp[i] = &he[i];
    }
    static uint8_t body[4096];
    Hbb__HttpProxyRequest r = HBB__HTTP_PROXY_REQUEST__INIT;
    r.method = (char *)method, r.path = (char *)path, r.n_headers = nh, r.headers = hp;
    r.body.data = body, r.body.len = body_len;
    rdv_addr peer = fc_addr("192.0.2.7:4000");
    return apx_plan_build(cfg, &r, &peer, p, why);
}

static apx_cfg base_cfg(void)
{
    apx_cfg c = { .api_base_url = "http://api.local:21114/", .timeout_ms = 1000, .connect_timeout_ms = 1000,
                  .max_in_flight = 4, .max_request_body = 100, .max_response_body = 1000, .max_headers = 8,
                  .max_header_bytes = 200, .forward_client_ip = true };
    return c;
}

Test(api_proxy, plan_joins_the_url_and_filters_headers)
{
    apx_cfg c = base_cfg();
    hdr hs[] = { { "Authorization", "Bearer t" }, { "Connection", "keep-alive, X-Secret" }, { "Keep-Alive", "5" },
                 { "Host", "evil.example" }, { "Content-Length", "999" }, { "Transfer-Encoding", "chunked" },
                 { "X-Forwarded-For", "1.2.3.4" }, { "X-Secret", "hop" } };
    apx_plan p;
    const char *why = NULL;
    cr_assert_eq(plan_for(&c, "get", "/api/peers?current=1", hs, 8, 0, &p, &why), 0, "%s", why);
    cr_assert_str_eq(p.url, "http://api.local:21114/api/peers?current=1");
    cr_assert_str_eq(p.method, "GET");
    cr_assert(plan_has(&p, "Authorization: Bearer t"));
    cr_assert(plan_has(&p, "X-Forwarded-For: 192.0.2.7"));
    cr_assert(plan_has(&p, "X-Real-IP: 192.0.2.7"));
    cr_assert(plan_has(&p, "Expect:"), "no 100-continue round trip");
    cr_assert(plan_has(&p, "Content-Type:"), "curl must not invent a form content type");
    cr_assert_not(plan_has(&p, "X-Forwarded-For: 1.2.3.4"), "a client cannot choose its forwarded address");
    const char *gone[] = { "Connection", "Keep-Alive", "Host", "Content-Length", "Transfer-Encoding", "X-Secret" };
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        cr_assert_not(plan_has_name(&p, gone[i]), "%s must not be forwarded", gone[i]);
    apx_plan_free(&p);
}

Test(api_proxy, plan_keeps_client_ip_headers_when_not_forwarding)
{
    apx_cfg c = base_cfg();
    c.forward_client_ip = false;
    hdr hs[] = { { "X-Forwarded-For", "1.2.3.4" }, { "Content-Type", "application/json" }, { "X-Empty", "" } };
    apx_plan p;
    const char *why;
    cr_assert_eq(plan_for(&c, "POST", "/api/login", hs, 3, 10, &p, &why), 0);
    cr_assert(plan_has(&p, "X-Forwarded-For: 1.2.3.4"));
    cr_assert(plan_has(&p, "Content-Type: application/json"));
    cr_assert_not(plan_has(&p, "Content-Type:"), "the client's content type stays");
    cr_assert(plan_has(&p, "X-Empty;"), "an empty header is sent as empty, not deleted");
    cr_assert_not(plan_has_name(&p, "X-Real-IP"));
    apx_plan_free(&p);
}

Test(api_proxy, plan_refusals)
{
    apx_cfg c = base_cfg();
    apx_plan p;
    const char *why;
    cr_assert_eq(plan_for(&c, "TRACE", "/a", NULL, 0, 0, &p, &why), 405);
    cr_assert_eq(plan_for(&c, "CONNECT", "/a", NULL, 0, 0, &p, &why), 405);
    cr_assert_eq(plan_for(&c, "", "/a", NULL, 0, 0, &p, &why), 405);
    cr_assert_eq(plan_for(&c, "GE T", "/a", NULL, 0, 0, &p, &why), 405);
    cr_assert_eq(plan_for(&c, "AVERYLONGMETHODNAME", "/a", NULL, 0, 0, &p, &why), 405);
    cr_assert_eq(plan_for(&c, "GET", "http://evil.example/", NULL, 0, 0, &p, &why), 400);
    cr_assert_eq(plan_for(&c, "GET", "/a/../../etc/passwd", NULL, 0, 0, &p, &why), 400);
    cr_assert_eq(plan_for(&c, "POST", "/a", NULL, 0, 101, &p, &why), 413);
    cr_assert_str_eq(why, "request body too large");
    cr_assert_eq(plan_for(&c, "POST", "/a", NULL, 0, 100, &p, &why), 0);
    apx_plan_free(&p);
    hdr crlf[] = { { "X-A", "v\r\nHost: evil" } };
    cr_assert_eq(plan_for(&c, "GET", "/a", crlf, 1, 0, &p, &why), 400);
    hdr badname[] = { { "X A", "v" } };
    cr_assert_eq(plan_for(&c, "GET", "/a", badname, 1, 0, &p, &why), 400);
    hdr emptyname[] = { { "", "v" } };
    cr_assert_eq(plan_for(&c, "GET", "/a", emptyname, 1, 0, &p, &why), 400);
    hdr many[9];
    for (int i = 0; i < 9; i++)
        many[i] = (hdr){ "X-A", "b" };
    cr_assert_eq(plan_for(&c, "GET", "/a", many, 9, 0, &p, &why), 431);
    char longv[300];
    memset(longv, 'v', sizeof longv - 1);
    longv[sizeof longv - 1] = 0;
    hdr big[] = { { "X-A", longv } };
    cr_assert_eq(plan_for(&c, "GET", "/a", big, 1, 0, &p, &why), 431);
}

Test(api_proxy, configured_methods)
{
    apx_cfg c = base_cfg();
    char *ms[] = { "GET", "OPTIONS" };
    c.methods = (rdv_strlist){ 2, ms };
    apx_plan p;
    const char *why;
    cr_assert_eq(plan_for(&c, "options", "/a", NULL, 0, 0, &p, &why), 0);
    apx_plan_free(&p);
    cr_assert_eq(plan_for(&c, "POST", "/a", NULL, 0, 0, &p, &why), 405);
}

/* ------------------------------------------------------------------ refusals are answers (§15.6) */
Test(api_proxy, not_configured_answers_an_error_R225)
{
    reload("");
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/api/login", NULL, 0, NULL), RDV_OK);
    const fc_sent *s = fc_next_sent(fc);
    cr_assert(s && s->sealed, "the answer goes out on the keyed connection (sealed by the core)");
    const Hbb__HttpProxyResponse *r = expect_response(id, s);
    cr_assert_str_eq(r->error, "not supported");
    cr_assert_eq(fc_counter(fc, "api-proxy.not_configured"), 1);
}

Test(api_proxy, plaintext_connection_is_refused_with_an_error)
{
    rdv_conn_id id = conn_on("main", false);
    cr_assert_eq(send_req(id, "GET", "/api/login", NULL, 0, NULL), RDV_OK);
    expect_error(id, 403, "secure");
    cr_assert_eq(fc_counter(fc, "api-proxy.insecure"), 1);
    cr_assert_eq(up.requests, 0);
}

Test(api_proxy, bad_request_is_answered_not_forwarded)
{
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "//evil.example/", NULL, 0, NULL), RDV_OK);
    expect_error(id, 400, "path");
    cr_assert_eq(send_req(id, "TRACE", "/a", NULL, 0, NULL), RDV_OK);
    expect_error(id, 405, "method");
    hdr crlf[] = { { "X-A", "v\r\nX-B: w" } };
    cr_assert_eq(send_req(id, "GET", "/a", crlf, 1, NULL), RDV_OK);
    expect_error(id, 400, "header");
    cr_assert_eq(fc_counter(fc, "api-proxy.rejected"), 3);
    cr_assert_eq(fc_gauge(fc, "api-proxy.in_flight"), 0);
    usleep(50000);
    cr_assert_eq(up.requests, 0);
}

Test(api_proxy, only_the_main_tcp_port)
{
    rdv_conn_id id = conn_on("nat", true);
    cr_assert_eq(send_req(id, "GET", "/a", NULL, 0, NULL), -ENOENT); /* not ours: the core closes, as OSS */
    cr_assert_not(fc_conn_alive(fc, id));
}

/* ------------------------------------------------------------------ forwarding */
Test(api_proxy, get_is_forwarded_and_answered)
{
    rdv_conn_id id = keyed_conn();
    hdr hs[] = { { "Authorization", "Bearer tok" }, { "X-Real-IP", "6.6.6.6" }, { "Connection", "close" },
                 { "Accept", "application/json" } };
    cr_assert_eq(send_req(id, "GET", "/api/peers?current=1&pageSize=5", hs, 4, NULL), RDV_OK);
    cr_assert_eq(fc_gauge(fc, "api-proxy.in_flight"), 1);
    const fc_sent *s = pump(5000);
    cr_assert(s && s->sealed);
    const Hbb__HttpProxyResponse *r = expect_response(id, s);
    cr_assert_str_eq(r->error, "");
    cr_assert_eq(r->status, 200);
    cr_assert_eq(r->body.len, 11);
    cr_assert_eq(memcmp(r->body.data, "{\"ok\":true}", 11), 0);
    cr_assert_str_eq(resp_header(r, "X-Upstream"), "yes");
    cr_assert_str_eq(resp_header(r, "Content-Type"), "application/json");
    cr_assert_str_eq(resp_header(r, "X-Empty"), "");
    cr_assert_null(resp_header(r, "Connection"), "hop-by-hop response headers are dropped");
    cr_assert_null(resp_header(r, "Keep-Alive"));
    cr_assert_null(resp_header(r, "Bad Name"), "malformed upstream header names are dropped");
    cr_assert_eq(r->n_headers, 4, "Content-Length, Content-Type, X-Upstream, X-Empty and nothing else");

    const char *q = up_last();
    cr_assert(strncmp(q, "GET /base/api/peers?current=1&pageSize=5 HTTP/1.1\r\n", 51) == 0, "request line: %.60s", q);
    cr_assert(strcasestr(q, "\r\nAuthorization: Bearer tok\r\n"));
    cr_assert(strcasestr(q, "\r\nAccept: application/json\r\n"));
    cr_assert(strcasestr(q, "\r\nX-Forwarded-For: 10.2.0.1\r\n"));
    cr_assert(strcasestr(q, "\r\nX-Real-IP: 10.2.0.1\r\n"));
    cr_assert_null(strcasestr(q, "6.6.6.6"), "the client's own X-Real-IP is dropped");
    cr_assert_null(strcasestr(q, "\r\nConnection: close"), "the client's hop-by-hop headers are dropped");
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", up.port);
    cr_assert(strcasestr(q, host));
    cr_assert_eq(fc_counter(fc, "api-proxy.forwarded"), 1);
    cr_assert_eq(fc_gauge(fc, "api-proxy.in_flight"), 0);
    cr_assert(fc_conn_alive(fc, id));
}

Test(api_proxy, post_body_is_forwarded)
{
    rdv_conn_id id = keyed_conn();
    hdr hs[] = { { "Content-Type", "application/json" } };
    const char *body = "{\"username\":\"u\",\"password\":\"p\"}";
    cr_assert_eq(send_req(id, "post", "/api/login", hs, 1, body), RDV_OK);
    const Hbb__HttpProxyResponse *r = expect_response(id, pump(5000));
    cr_assert_eq(r->status, 200);
    const char *q = up_last();
    cr_assert(strncmp(q, "POST /base/api/login HTTP/1.1\r\n", 31) == 0, "%.40s", q);
    char cl[64];
    snprintf(cl, sizeof cl, "\r\nContent-Length: %zu\r\n", strlen(body));
    cr_assert(strcasestr(q, cl));
    cr_assert(strcasestr(q, "\r\nContent-Type: application/json\r\n"));
    cr_assert_null(strcasestr(q, "Expect:"));
    cr_assert(strstr(q, body), "body not forwarded");
}

Test(api_proxy, put_delete_and_head)
{
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "PUT", "/api/ab", NULL, 0, "{}"), RDV_OK);
    cr_assert_eq(expect_response(id, pump(5000))->status, 200);
    cr_assert(strncmp(up_last(), "PUT /base/api/ab HTTP/1.1\r\n", 27) == 0);
    cr_assert_null(strcasestr(up_last(), "application/x-www-form-urlencoded"));
    cr_assert_eq(send_req(id, "DELETE", "/api/ab/1", NULL, 0, NULL), RDV_OK);
    cr_assert_eq(expect_response(id, pump(5000))->status, 200);
    cr_assert(strncmp(up_last(), "DELETE /base/api/ab/1 HTTP/1.1\r\n", 32) == 0);
    reload(conf_with("methods = \"GET,HEAD\"\n"));
    id = keyed_conn();
    cr_assert_eq(send_req(id, "HEAD", "/api/x", NULL, 0, NULL), RDV_OK);
    const Hbb__HttpProxyResponse *r = expect_response(id, pump(5000));
    cr_assert_eq(r->status, 200);
    cr_assert_eq(r->body.len, 0);
    cr_assert(strncmp(up_last(), "HEAD /base/api/x HTTP/1.1\r\n", 27) == 0);
}

Test(api_proxy, upstream_status_is_passed_through)
{
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/teapot", NULL, 0, NULL), RDV_OK);
    const Hbb__HttpProxyResponse *r = expect_response(id, pump(5000));
    cr_assert_eq(r->status, 418);
    cr_assert_str_eq(r->error, "", "an HTTP error status is an answer, not a proxy failure");
    cr_assert_eq(r->body.len, 15);
}

Test(api_proxy, plaintext_allowed_when_not_required)
{
    reload(conf_with("require_secure = false\n"));
    rdv_conn_id id = conn_on("main", false);
    cr_assert_eq(send_req(id, "GET", "/a", NULL, 0, NULL), RDV_OK);
    const fc_sent *s = pump(5000);
    cr_assert(s && !s->sealed);
    cr_assert_eq(expect_response(id, s)->status, 200);
}

/* ------------------------------------------------------------------ upstream failures */
Test(api_proxy, upstream_timeout)
{
    reload(conf_with("timeout_ms = 300\n"));
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/slow", NULL, 0, NULL), RDV_OK);
    const Hbb__HttpProxyResponse *r = expect_response(id, pump(5000));
    cr_assert_eq(r->status, 504);
    cr_assert(strstr(r->error, "timed out"));
    cr_assert_eq(fc_counter(fc, "api-proxy.timeout"), 1);
}

Test(api_proxy, upstream_unreachable)
{
    int s = socket(AF_INET, SOCK_STREAM, 0); /* a port nobody listens on */
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(s, (struct sockaddr *)&a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &al);
    char c[200];
    snprintf(c, sizeof c, "api_base_url = \"http://127.0.0.1:%d\"\n", ntohs(a.sin_port));
    reload(c);
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/a", NULL, 0, NULL), RDV_OK);
    const Hbb__HttpProxyResponse *r = expect_response(id, pump(5000));
    close(s);
    cr_assert_eq(r->status, 502);
    cr_assert(strstr(r->error, "unreachable"), "%s", r->error);
    cr_assert_eq(fc_counter(fc, "api-proxy.upstream_error"), 1);
}

Test(api_proxy, response_body_over_the_limit)
{
    reload(conf_with("max_response_body = 1000\n"));
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/big", NULL, 0, NULL), RDV_OK);
    const Hbb__HttpProxyResponse *r = expect_response(id, pump(5000));
    cr_assert_eq(r->status, 502);
    cr_assert(strstr(r->error, "too large"));
    cr_assert_eq(r->body.len, 0);
    cr_assert_eq(fc_counter(fc, "api-proxy.too_large"), 1);
}

Test(api_proxy, response_headers_over_the_limit)
{
    reload(conf_with("max_headers = 10\n"));
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/manyheaders", NULL, 0, NULL), RDV_OK);
    const Hbb__HttpProxyResponse *r = expect_response(id, pump(5000));
    cr_assert_eq(r->status, 502);
    cr_assert(strstr(r->error, "headers"), "%s", r->error);
}

Test(api_proxy, request_body_over_the_limit)
{
    reload(conf_with("max_request_body = 4\n"));
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "POST", "/a", NULL, 0, "12345"), RDV_OK);
    expect_error(id, 413, "too large");
}

/* ------------------------------------------------------------------ bounds and lifetimes */
Test(api_proxy, in_flight_is_bounded)
{
    reload(conf_with("max_in_flight = 1\n"));
    rdv_conn_id a = keyed_conn(), b = keyed_conn();
    cr_assert_eq(send_req(a, "GET", "/slow", NULL, 0, NULL), RDV_OK);
    cr_assert_eq(send_req(b, "GET", "/a", NULL, 0, NULL), RDV_OK);
    expect_error(b, 503, NULL);
    /* One at a time on a connection, too. */
    cr_assert_eq(send_req(a, "GET", "/a", NULL, 0, NULL), RDV_OK);
    expect_error(a, 503, NULL);
    cr_assert_eq(fc_counter(fc, "api-proxy.busy"), 2);
    cr_assert_eq(fc_gauge(fc, "api-proxy.in_flight"), 1);
    const Hbb__HttpProxyResponse *r = expect_response(a, pump(5000));
    cr_assert_eq(r->status, 200);
    cr_assert_eq(r->body.len, 4);
    /* The slot is free again. */
    cr_assert_eq(send_req(b, "GET", "/a", NULL, 0, NULL), RDV_OK);
    cr_assert_eq(expect_response(b, pump(5000))->status, 200);
}

Test(api_proxy, client_gone_drops_the_request)
{
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/slow", NULL, 0, NULL), RDV_OK);
    pump(50);
    cr_assert_eq(fc_conn_peer_close(fc, id), 0);
    cr_assert_eq(fc_gauge(fc, "api-proxy.in_flight"), 0);
    cr_assert_eq(fc_counter(fc, "api-proxy.aborted"), 1);
    cr_assert_null(pump(300), "nothing is sent to a closed connection");
}

Test(api_proxy, shutdown_answers_requests_in_flight)
{
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/slow", NULL, 0, NULL), RDV_OK);
    fc_unload(fc, mod, st);
    const Hbb__HttpProxyResponse *r = expect_response(id, fc_next_sent(fc));
    cr_assert_eq(r->status, 503);
    cr_assert(strstr(r->error, "shutting down"));
    cr_assert_eq(fc_load(fc, mod, conf_with(NULL), &st), 0);
}

Test(api_proxy, long_timeout_extends_the_connection_idle_limit)
{
    reload(conf_with("timeout_ms = 30000\n"));
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/a", NULL, 0, NULL), RDV_OK);
    cr_assert_eq(fc_conn(fc, id)->idle_ms, 32000);
    pump(5000);
    reload(conf_with("timeout_ms = 1000\n"));
    id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/a", NULL, 0, NULL), RDV_OK);
    cr_assert_eq(fc_conn(fc, id)->idle_ms, 0, "the default idle limit suffices");
    pump(5000);
}

/* ------------------------------------------------------------------ HealthCheck (§15.5, R231) */
static int send_hc(rdv_conn_id id)
{
    Hbb__HealthCheck hc = HBB__HEALTH_CHECK__INIT;
    hc.token = "tok";
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_HC;
    m.hc = &hc;
    return fc_conn_msg(fc, id, &m);
}

static int heartbeat_from(rdv_conn_id id)
{
    rdv_addr peer = fc_conn(fc, id)->peer;
    rdv_msg_ctx ctx = { .transport = RDV_TR_TCP, .listener_name = "main", .conn = id, .peer = &peer };
    return apx_hc_on_heartbeat(st, &ctx, NULL);
}

Test(api_proxy, health_check_is_kept_and_heartbeated_R231)
{
    reload(conf_with("heartbeat_ms = 1000\n"));
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_hc(id), RDV_OK);
    cr_assert_eq(fc_sent_count(fc), 0, "no reply to HealthCheck");
    cr_assert(fc_conn_alive(fc, id));
    cr_assert_eq(fc_conn(fc, id)->idle_ms, 3000, "silent sessions close after 3 heartbeats");
    cr_assert_eq(fc_gauge(fc, "api-proxy.hc_sessions"), 1);
    fc_advance(fc, 999);
    cr_assert_eq(fc_sent_count(fc), 0);
    fc_advance(fc, 1);
    const fc_sent *s = fc_next_sent(fc);
    cr_assert_not_null(s);
    cr_assert_eq(s->kind, FC_SENT_CONN);
    cr_assert_eq(s->conn, id);
    cr_assert_eq(s->len, 0, "a heartbeat is an empty frame");
    fc_advance(fc, 1000);
    cr_assert_eq(fc_sent_count(fc), 1);
    fc_clear_sent(fc);
    cr_assert_eq(fc_counter(fc, "api-proxy.heartbeats"), 2);
    /* The client's empty echoes are accepted on this connection only. */
    cr_assert_eq(heartbeat_from(id), RDV_OK);
    rdv_conn_id other = keyed_conn();
    cr_assert_eq(heartbeat_from(other), RDV_DECLINED);
    /* A repeated HealthCheck changes nothing. */
    cr_assert_eq(send_hc(id), RDV_OK);
    cr_assert_eq(fc_gauge(fc, "api-proxy.hc_sessions"), 1);
    cr_assert_eq(fc_counter(fc, "api-proxy.hc_accepted"), 1);
}

Test(api_proxy, closed_session_stops_heartbeats)
{
    reload(conf_with("heartbeat_ms = 1000\n"));
    rdv_conn_id a = keyed_conn(), b = keyed_conn();
    cr_assert_eq(send_hc(a), RDV_OK);
    cr_assert_eq(send_hc(b), RDV_OK);
    fc_advance(fc, 1000);
    cr_assert_eq(fc_sent_count(fc), 2);
    fc_clear_sent(fc);
    cr_assert_eq(fc_conn_drop(fc, a, RDV_CLOSE_IDLE), 0);
    cr_assert_eq(fc_gauge(fc, "api-proxy.hc_sessions"), 1);
    fc_advance(fc, 1000);
    const fc_sent *s = fc_next_sent(fc);
    cr_assert(s && s->conn == b);
    cr_assert_eq(fc_sent_count(fc), 0);
    cr_assert_eq(fc_conn_peer_close(fc, b), 0);
    cr_assert_eq(fc_gauge(fc, "api-proxy.hc_sessions"), 0);
    fc_advance(fc, 5000);
    cr_assert_eq(fc_sent_count(fc), 0);
    cr_assert_eq(heartbeat_from(a), RDV_DECLINED);
}

Test(api_proxy, health_check_needs_a_keyed_connection)
{
    rdv_conn_id id = conn_on("main", false);
    cr_assert_eq(send_hc(id), RDV_CLOSE);
    cr_assert_not(fc_conn_alive(fc, id));
    cr_assert_eq(fc_counter(fc, "api-proxy.hc_refused"), 1);
    reload(conf_with("require_secure = false\n"));
    id = conn_on("main", false);
    cr_assert_eq(send_hc(id), RDV_OK);
    cr_assert(fc_conn_alive(fc, id));
}

Test(api_proxy, health_check_disabled_closes_as_oss)
{
    reload(conf_with("health_check = false\n"));
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_hc(id), RDV_CLOSE);
    cr_assert_not(fc_conn_alive(fc, id));
    cr_assert_eq(fc_sent_count(fc), 0, "no answer");
    cr_assert_eq(fc_counter(fc, "api-proxy.hc_disabled"), 1);
}

Test(api_proxy, sessions_are_bounded)
{
    reload(conf_with("max_sessions = 1\n"));
    rdv_conn_id a = keyed_conn(), b = keyed_conn();
    cr_assert_eq(send_hc(a), RDV_OK);
    cr_assert_eq(send_hc(b), RDV_CLOSE);
    cr_assert_eq(fc_gauge(fc, "api-proxy.hc_sessions"), 1);
    cr_assert_eq(fc_conn_peer_close(fc, a), 0);
    rdv_conn_id c = keyed_conn();
    cr_assert_eq(send_hc(c), RDV_OK);
}

Test(api_proxy, reload_changes_the_heartbeat_of_running_sessions)
{
    reload(conf_with("heartbeat_ms = 1000\n"));
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_hc(id), RDV_OK);
    cr_assert_eq(fc_reconfigure(fc, mod, st, conf_with("heartbeat_ms = 5000\n")), 0);
    cr_assert_eq(fc_conn(fc, id)->idle_ms, 15000);
    fc_advance(fc, 4999);
    cr_assert_eq(fc_sent_count(fc), 0);
    fc_advance(fc, 1);
    cr_assert_eq(fc_sent_count(fc), 1);
}

/* ------------------------------------------------------------------ admin, settings */
Test(api_proxy, admin_command)
{
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_hc(id), RDV_OK);
    char out[512];
    cr_assert_eq(fc_admin(fc, "api-proxy", out, sizeof out), 0);
    cr_assert(strstr(out, "proxy configured\n"), "%s", out);
    cr_assert(strstr(out, "in_flight 0/32\n"), "%s", out);
    cr_assert(strstr(out, "sessions 1/10000\n"), "%s", out);
    cr_assert_eq(fc_admin(fc, "api-proxy sessions", out, sizeof out), 0);
    cr_assert(strstr(out, "10.2.0."), "%s", out);
    cr_assert_eq(fc_admin(fc, "api-proxy bogus", out, sizeof out), 0);
    cr_assert(strstr(out, "usage"));
}

Test(api_proxy, bad_settings_are_refused)
{
    fc_unload(fc, mod, st);
    cr_assert_eq(fc_load(fc, mod, "api_base_url = \"ftp://x\"\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, mod, "api_base_url = \"http://x/?a=1\"\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, mod, "methods = \"get\"\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, mod, "methods = \"G E T\"\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, mod, "heartbeat_ms = 0\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, mod, "timeout_ms = 60000\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, mod, "max_in_flight = 0\n", &st), -EINVAL);
    cr_assert_eq(fc_load(fc, mod, "", &st), 0);
}

/* ------------------------------------------------------------------ lazy libcurl */
/* libcurl and its ~30 libraries are mapped only once an API server is
 * configured (idle RSS, docs/BENCHMARKS.md); a reload that sets
 * api_base_url loads it and forwarding works at once. */
static bool maps_have(const char *what)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert(f);
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

static void setup_unconfigured(void)
{
    up_start();
    fc = fc_new();
    mod = rdv_module_get();
    cr_assert_eq(fc_load(fc, mod, "", &st), 0);
}

TestSuite(lazy, .init = setup_unconfigured, .fini = teardown, .timeout = 30);

Test(lazy, libcurl_is_loaded_only_once_an_api_server_is_configured)
{
    cr_assert_not(apx_curl_loaded());
    cr_assert_not(maps_have("libcurl"), "no api_base_url: libcurl is not mapped");
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_req(id, "GET", "/api/login", NULL, 0, NULL), RDV_OK);
    cr_assert_str_eq(expect_response(id, fc_next_sent(fc))->error, "not supported");

    cr_assert_eq(fc_reconfigure(fc, mod, st, conf_with(NULL)), 0);
    cr_assert(apx_curl_loaded());
    cr_assert(maps_have("libcurl"));
    cr_assert_eq(send_req(id, "GET", "/api/peers", NULL, 0, NULL), RDV_OK);
    const fc_sent *s = pump(5000);
    cr_assert(s);
    const Hbb__HttpProxyResponse *r = expect_response(id, s);
    cr_assert_str_eq(r->error, "");
    cr_assert_eq(r->status, 200);
    cr_assert_eq(fc_counter(fc, "api-proxy.forwarded"), 1);
}

/* ------------------------------------------------------------------ out of memory
 * uthash's allocations for the request and session tables fail through the
 * module's test hook (apx_test_hash_fail_from); the process must not exit,
 * a refused request still gets its answer (§15.6), a refused HealthCheck
 * connection is closed, and nothing already in a table is lost. On the
 * code before uthash's non-fatal mode each of these exited. */
static void oom_teardown(void)
{
    apx_test_hash_fail_from(0);
    teardown();
}

TestSuite(api_proxy_oom, .init = setup, .fini = oom_teardown, .timeout = 60);

static int up_requests(void)
{
    pthread_mutex_lock(&up.mu);
    int n = up.requests;
    pthread_mutex_unlock(&up.mu);
    return n;
}

/* The first request makes the table: its header (1st allocation) or its
 * buckets (2nd). Failing either answers 500 "out of memory" and keeps
 * nothing; the connection stays, and its next request is forwarded. */
Test(api_proxy_oom, first_request_answered_when_the_table_cannot_be_made)
{
    apx *ax = st;
    rdv_conn_id id = keyed_conn();
    for (unsigned long nth = 1; nth <= 2; nth++) {
        apx_test_hash_fail_from(nth);
        cr_assert_eq(send_req(id, "GET", "/api/a", NULL, 0, NULL), RDV_OK);
        expect_error(id, 500, "out of memory");
        cr_assert_eq(fc_counter(fc, "api-proxy.oom"), nth, "allocation %lu failing", nth);
        cr_assert_eq(fc_counter(fc, "api-proxy.rejected"), 0);
        cr_assert_eq(fc_gauge(fc, "api-proxy.in_flight"), 0);
        cr_assert_null(ax->reqs);
        cr_assert_not(apx_http_busy(ax, id));
    }
    cr_assert(fc_log_contains(fc, "out of memory: HttpProxyRequest on connection"));
    apx_test_hash_fail_from(0);
    unsigned long allocs = apx_test_hash_allocs();
    cr_assert_eq(send_req(id, "GET", "/api/a", NULL, 0, NULL), RDV_OK);
    cr_assert_eq(apx_test_hash_allocs(), allocs + 2, "the table was made");
    const Hbb__HttpProxyResponse *r = expect_response(id, pump(5000));
    cr_assert_eq(r->status, 200);
    cr_assert_eq(up_requests(), 1, "only the request that was kept reached the API server");
    cr_assert_eq(fc_counter(fc, "api-proxy.oom"), 2);
    cr_assert_eq(fc_gauge(fc, "api-proxy.in_flight"), 0);
}

/* Requests on new connections until one would grow the table: that one is
 * answered 500, every other stays in flight; once memory is back the same
 * connection asks again (same key, the bucket that was full) and the table
 * grows; the others leave and the last one is answered by the API server. */
Test(api_proxy_oom, request_that_would_grow_the_table_is_refused_the_rest_kept)
{
    enum { MAX = 3000 };
    static rdv_conn_id ids[MAX + 1];
    reload(conf_with("max_in_flight = 4096\n"));
    apx *ax = st;
    ids[0] = keyed_conn();
    cr_assert_eq(send_req(ids[0], "GET", "/a", NULL, 0, NULL), RDV_OK); /* the table exists */
    apx_test_hash_fail_from(1);
    unsigned long allocs = apx_test_hash_allocs();
    int n;
    for (n = 1; n <= MAX; n++) {
        ids[n] = keyed_conn();
        cr_assert_eq(send_req(ids[n], "GET", "/a", NULL, 0, NULL), RDV_OK);
        if (fc_counter(fc, "api-proxy.oom"))
            break;
        cr_assert_eq(fc_sent_count(fc), 0, "request %d answered at once", n);
    }
    cr_assert_eq(fc_counter(fc, "api-proxy.oom"), 1, "no request reached an expansion in %d", MAX);
    cr_assert_gt(n, 10, "the table grew after %d requests only", n);
    cr_assert_eq(apx_test_hash_allocs(), allocs + 1, "one expansion was attempted");
    expect_error(ids[n], 500, "out of memory");
    cr_assert_not(apx_http_busy(ax, ids[n]));
    cr_assert_eq(fc_gauge(fc, "api-proxy.in_flight"), (uint64_t)n, "the first + %d accepted", n - 1);
    for (int i = 0; i < n; i++)
        cr_assert(apx_http_busy(ax, ids[i]), "request %d lost", i);
    apx_test_hash_fail_from(0);
    allocs = apx_test_hash_allocs();
    cr_assert_eq(send_req(ids[n], "GET", "/a", NULL, 0, NULL), RDV_OK);
    cr_assert_eq(apx_test_hash_allocs(), allocs + 1, "memory is back: the table grows");
    cr_assert_eq(fc_gauge(fc, "api-proxy.in_flight"), (uint64_t)n + 1);
    for (int i = 0; i < n; i++) {
        cr_assert(apx_http_busy(ax, ids[i]), "request %d lost in the expansion", i);
        cr_assert_eq(fc_conn_peer_close(fc, ids[i]), 0);
    }
    cr_assert_eq(fc_gauge(fc, "api-proxy.in_flight"), 1);
    cr_assert_eq(fc_counter(fc, "api-proxy.aborted"), (uint64_t)n);
    cr_assert_eq(fc_sent_count(fc), 0);
    const Hbb__HttpProxyResponse *r = expect_response(ids[n], pump(5000));
    cr_assert_eq(r->status, 200);
    cr_assert_eq(fc_counter(fc, "api-proxy.oom"), 1);
}

/* The first HealthCheck makes the session table; failing either of its
 * allocations closes that connection (no session, no heartbeat timer).
 * Once memory is back a session is kept and heartbeated. */
Test(api_proxy_oom, health_check_closed_when_the_table_cannot_be_made)
{
    reload(conf_with("heartbeat_ms = 1000\n"));
    apx *ax = st;
    for (unsigned long nth = 1; nth <= 2; nth++) {
        apx_test_hash_fail_from(nth);
        rdv_conn_id id = keyed_conn();
        cr_assert_eq(send_hc(id), RDV_CLOSE);
        cr_assert_not(fc_conn_alive(fc, id));
        cr_assert_eq(fc_counter(fc, "api-proxy.oom"), nth, "allocation %lu failing", nth);
        cr_assert_eq(fc_counter(fc, "api-proxy.hc_accepted"), 0);
        cr_assert_eq(fc_gauge(fc, "api-proxy.hc_sessions"), 0);
        cr_assert_null(ax->sessions);
        cr_assert_eq(heartbeat_from(id), RDV_DECLINED);
    }
    cr_assert(fc_log_contains(fc, "out of memory: HealthCheck session from 10.2.0."));
    fc_clear_sent(fc);
    fc_advance(fc, 5000);
    cr_assert_eq(fc_sent_count(fc), 0, "no heartbeat for a session not kept");
    apx_test_hash_fail_from(0);
    unsigned long allocs = apx_test_hash_allocs();
    rdv_conn_id id = keyed_conn();
    cr_assert_eq(send_hc(id), RDV_OK);
    cr_assert_eq(apx_test_hash_allocs(), allocs + 2, "the table was made");
    cr_assert_eq(fc_gauge(fc, "api-proxy.hc_sessions"), 1);
    fc_advance(fc, 1000);
    const fc_sent *s = fc_next_sent(fc);
    cr_assert(s && s->conn == id && s->len == 0, "heartbeat");
}

/* HealthChecks until one would grow the table: that connection is closed,
 * every other session stays and is heartbeated; once memory is back new
 * sessions are kept until the table grows, and all are heartbeated. */
Test(api_proxy_oom, health_check_that_would_grow_the_table_is_closed_the_rest_kept)
{
    enum { MAX = 3000 };
    reload(conf_with("heartbeat_ms = 1000\n"));
    rdv_conn_id first = keyed_conn(), refused = 0;
    cr_assert_eq(send_hc(first), RDV_OK); /* the table exists */
    apx_test_hash_fail_from(1);
    unsigned long allocs = apx_test_hash_allocs();
    int n;
    for (n = 1; n <= MAX; n++) {
        rdv_conn_id id = keyed_conn();
        int r = send_hc(id);
        if (fc_counter(fc, "api-proxy.oom")) {
            cr_assert_eq(r, RDV_CLOSE);
            refused = id;
            break;
        }
        cr_assert_eq(r, RDV_OK);
    }
    cr_assert_eq(fc_counter(fc, "api-proxy.oom"), 1, "no session reached an expansion in %d", MAX);
    cr_assert_gt(n, 10, "the table grew after %d sessions only", n);
    cr_assert_eq(apx_test_hash_allocs(), allocs + 1, "one expansion was attempted");
    cr_assert_not(fc_conn_alive(fc, refused));
    cr_assert_eq(fc_gauge(fc, "api-proxy.hc_sessions"), (uint64_t)n, "the first + %d accepted", n - 1);
    fc_clear_sent(fc);
    fc_advance(fc, 1000);
    cr_assert_eq(fc_sent_count(fc), (size_t)n, "one heartbeat per kept session");
    for (const fc_sent *s; (s = fc_next_sent(fc));)
        cr_assert(s->conn != refused && fc_conn_alive(fc, s->conn));
    apx_test_hash_fail_from(0);
    allocs = apx_test_hash_allocs();
    int m;
    for (m = 1; m <= MAX && apx_test_hash_allocs() == allocs; m++)
        cr_assert_eq(send_hc(keyed_conn()), RDV_OK);
    cr_assert_eq(apx_test_hash_allocs(), allocs + 1, "memory is back: the table grows");
    cr_assert_eq(fc_gauge(fc, "api-proxy.hc_sessions"), (uint64_t)(n + m - 1));
    fc_advance(fc, 1000);
    cr_assert_eq(fc_sent_count(fc), (size_t)(n + m - 1));
    cr_assert_eq(fc_counter(fc, "api-proxy.oom"), 1);
}
