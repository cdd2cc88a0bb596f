/* Unit tests of the metrics module on the fake core: the exposition (names,
 * types, HELP escaping, collisions, process metrics), the HTTP answers (200,
 * HEAD, 400, 401, 404, 405, 408, 431, 500, 503) and the bounds. The metrics
 * endpoint is an rdvd addition (no R/L item): what it must do is Prometheus'
 * text format 0.0.4 and RFC 9110's status codes. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../tests/fakecore/fakecore.h"
#include "mx.h"

const rdv_module *rdv_module_get(void);

static fc_core *fc;
static void *st;
static rdv_listener *ml;
static uint64_t *peers_registered;

static void setup_with(const char *conf)
{
    fc = fc_new();
    /* Another module's stats, as the exposition will see them. */
    rdv_core *reg = fc_handle(fc, "registry");
    peers_registered = reg->api->counter(reg, "register_peer", "RegisterPeer answered \\ with\na newline");
    *peers_registered = 5;
    cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &st), 0);
    ml = fc_find_listener(fc, "metrics", RDV_TR_TCP);
    cr_assert_not_null(ml);
}
static void setup(void) { setup_with("port = 21120\n"); }
static void teardown(void) { fc_free(fc); }

/* The answer on connection id: every BYTES send joined, and whether the
 * connection was then closed after writing (flush). */
typedef struct answer {
    char *text;
    size_t len;
    int status;
    const char *body; /* inside text */
    size_t body_len;
    long content_length;
    bool closed_flush;
} answer;

static answer take_answer(rdv_conn_id id)
{
    answer a = { 0 };
    a.text = calloc(1, 1);
    const fc_sent *s;
    while ((s = fc_next_sent(fc)) != NULL) {
        if (s->conn != id)
            continue;
        if (s->kind == FC_SENT_BYTES) {
            a.text = realloc(a.text, a.len + s->len + 1);
            memcpy(a.text + a.len, s->raw, s->len);
            a.len += s->len;
            a.text[a.len] = '\0';
        } else if (s->kind == FC_SENT_CLOSE) {
            a.closed_flush = s->flush;
        }
    }
    if (!fc_conn_alive(fc, id) && !a.closed_flush) /* refused in on_open: the core flushes */
        a.closed_flush = true;
    sscanf(a.text, "HTTP/1.1 %d", &a.status);
    char *end = strstr(a.text, "\r\n\r\n");
    if (end) {
        a.body = end + 4;
        a.body_len = a.len - (size_t)(a.body - a.text);
    }
    char *cl = strstr(a.text, "Content-Length: ");
    a.content_length = cl ? strtol(cl + 16, NULL, 10) : -1;
    return a;
}

static answer request(const char *req)
{
    rdv_addr peer = fc_addr("127.0.0.1:40000");
    rdv_conn_id id = fc_owned_open(fc, ml, &peer);
    fc_conn_raw(fc, id, (const uint8_t *)req, strlen(req));
    return take_answer(id);
}

static bool has_line(const answer *a, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = a->body; p && (p = strstr(p, line)) != NULL; p += n)
        if ((p == a->body || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

TestSuite(metrics, .init = setup, .fini = teardown);

Test(metrics, names_follow_prometheus_conventions)
{
    char out[64];
    cr_assert_gt(mx_metric_name("ip-blocker.banned_msgs", true, out, sizeof out), 0);
    cr_assert_str_eq(out, "rdvd_ip_blocker_banned_msgs_total");
    mx_metric_name("registry.peers", false, out, sizeof out);
    cr_assert_str_eq(out, "rdvd_registry_peers");
    mx_metric_name("x.bytes_total", true, out, sizeof out); /* already a total: no second suffix */
    cr_assert_str_eq(out, "rdvd_x_bytes_total");
    mx_metric_name("a:b/c d.e", false, out, sizeof out);
    cr_assert_str_eq(out, "rdvd_a_b_c_d_e");
    cr_assert_eq(mx_metric_name("averyveryveryveryveryveryveryveryveryveryveryverylong.name", true, out, 40), 0);
}

Test(metrics, scrape_shows_every_stat_with_type_and_escaped_help)
{
    answer a = request("GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: Prometheus/2.42.0\r\n\r\n");
    cr_assert_eq(a.status, 200, "%s", a.text);
    cr_assert(strstr(a.text, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    cr_assert_eq(a.content_length, (long)a.body_len);
    cr_assert(has_line(&a, "# HELP rdvd_registry_register_peer_total RegisterPeer answered \\\\ with\\na newline"),
              "%s", a.body);
    cr_assert(has_line(&a, "# TYPE rdvd_registry_register_peer_total counter"));
    cr_assert(has_line(&a, "rdvd_registry_register_peer_total 5"));
    cr_assert(has_line(&a, "# TYPE rdvd_metrics_connections gauge"));
    cr_assert(has_line(&a, "rdvd_metrics_connections 1"), "the scrape's own connection is open");
    cr_assert(has_line(&a, "# TYPE rdvd_build_info gauge"));
    cr_assert(strstr(a.body, "rdvd_build_info{version=\""));
    cr_assert(has_line(&a, "# TYPE process_cpu_seconds_total counter"));
    cr_assert(strstr(a.body, "\nprocess_resident_memory_bytes "));
    cr_assert(strstr(a.body, "\nprocess_start_time_seconds "));
    cr_assert(a.closed_flush, "one request per connection: closed once written");
    cr_assert_eq(fc_counter(fc, "metrics.scrapes"), 1);
    /* Every sample line is "name value" with a legal name; every name has
     * one TYPE line before its sample. */
    char *copy = strndup(a.body, a.body_len), *save = NULL;
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (l[0] == '#')
            continue;
        size_t n = strspn(l, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:");
        cr_assert(l[n] == ' ' || l[n] == '{', "bad sample line: %s", l);
        char type[256];
        snprintf(type, sizeof type, "# TYPE %.*s ", (int)n, l);
        cr_assert(strstr(a.body, type), "no TYPE for %s", l);
    }
    free(copy);
    free(a.text);
}

Test(metrics, values_are_read_at_each_scrape)
{
    answer a = request("GET /metrics HTTP/1.0\r\n\r\n");
    cr_assert(has_line(&a, "rdvd_registry_register_peer_total 5"));
    free(a.text);
    *peers_registered = 123456789012ULL;
    a = request("GET /metrics HTTP/1.0\r\n\r\n");
    cr_assert(has_line(&a, "rdvd_registry_register_peer_total 123456789012"));
    free(a.text);
}

Test(metrics, a_request_in_one_byte_pieces_is_answered_once)
{
    const char *req = "GET /metrics?name[]=x HTTP/1.1\r\nHost: 127.0.0.1:21120\r\nAccept: text/plain\r\n\r\n"
                      "GET /metrics HTTP/1.1\r\n\r\n"; /* a pipelined second request is ignored */
    rdv_addr peer = fc_addr("127.0.0.1:40000");
    rdv_conn_id id = fc_owned_open(fc, ml, &peer);
    for (size_t i = 0; req[i]; i++)
        fc_conn_raw(fc, id, (const uint8_t *)req + i, 1);
    answer a = take_answer(id);
    cr_assert_eq(a.status, 200);
    cr_assert_eq(strstr(a.text + 1, "HTTP/1.1"), NULL, "one answer only");
    cr_assert_eq(fc_counter(fc, "metrics.scrapes"), 1);
    free(a.text);
}

Test(metrics, head_sends_the_headers_only)
{
    answer g = request("GET /metrics HTTP/1.1\r\n\r\n");
    answer h = request("HEAD /metrics HTTP/1.1\r\n\r\n");
    cr_assert_eq(h.status, 200);
    cr_assert_eq(h.body_len, 0);
    /* The same length a GET gets (the connection gauge is 1 in both). */
    cr_assert_eq(h.content_length, g.content_length);
    free(g.text), free(h.text);
}

Test(metrics, other_paths_and_methods_are_refused)
{
    const char *paths[] = { "/", "/metricsX", "/metrics/", "/Metrics", "/../metrics", "*" };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char req[128];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\n\r\n", paths[i]);
        answer a = request(req);
        cr_assert_eq(a.status, 404, "%s: %s", paths[i], a.text);
        cr_assert(a.closed_flush);
        free(a.text);
    }
    answer a = request("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    cr_assert_eq(a.status, 405);
    cr_assert(strstr(a.text, "\r\nAllow: GET, HEAD\r\n"));
    free(a.text);
    cr_assert_eq(fc_counter(fc, "metrics.not_found"), 6);
    cr_assert_eq(fc_counter(fc, "metrics.bad_method"), 1);
    cr_assert_eq(fc_counter(fc, "metrics.scrapes"), 0);
}

Test(metrics, garbage_is_answered_400)
{
    const char *bad[] = { "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "GET\r\n\r\n", "hello world\r\n\r\n",
                          "GET /metrics HTTP/9.9\r\n\r\n", "GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        answer a = request(bad[i]);
        cr_assert_eq(a.status, 400, "case %zu: %s", i, a.text);
        cr_assert(a.closed_flush);
        free(a.text);
    }
    cr_assert_eq(fc_counter(fc, "metrics.bad_requests"), 5);
}

Test(metrics, an_oversized_head_is_answered_431)
{
    char *req = malloc(20000);
    strcpy(req, "GET /metrics HTTP/1.1\r\nX-Long: ");
    memset(req + strlen(req), 'a', 15000);
    strcpy(req + strlen("GET /metrics HTTP/1.1\r\nX-Long: ") + 15000, "\r\n\r\n");
    answer a = request(req);
    cr_assert_eq(a.status, 431, "%s", a.text);
    cr_assert(a.closed_flush);
    cr_assert_eq(fc_counter(fc, "metrics.too_large"), 1);
    free(a.text), free(req);
}

Test(metrics, a_slow_head_is_answered_408_at_request_timeout)
{
    rdv_addr peer = fc_addr("127.0.0.1:40000");
    rdv_conn_id id = fc_owned_open(fc, ml, &peer);
    cr_assert_eq(fc_conn(fc, id)->idle_ms, 0, "the module's deadline replaces the core's idle timer");
    const char *part = "GET /metrics HTTP/1.1\r\nHo";
    fc_conn_raw(fc, id, (const uint8_t *)part, strlen(part));
    fc_advance(fc, 4999);
    cr_assert_eq(fc_sent_count(fc), 0);
    fc_conn_raw(fc, id, (const uint8_t *)"s", 1); /* a trickle does not extend it */
    fc_advance(fc, 1);
    answer a = take_answer(id);
    cr_assert_eq(a.status, 408, "%s", a.text);
    cr_assert(a.closed_flush);
    cr_assert_eq(fc_counter(fc, "metrics.timeouts"), 1);
    free(a.text);
}

Test(metrics, max_clients_bounds_open_connections)
{
    teardown();
    setup_with("port = 21120\nmax_clients = 2\n");
    rdv_addr peer = fc_addr("127.0.0.1:40000");
    rdv_conn_id a = fc_owned_open(fc, ml, &peer), b = fc_owned_open(fc, ml, &peer);
    rdv_conn_id c = fc_owned_open(fc, ml, &peer);
    answer r = take_answer(c);
    cr_assert_eq(r.status, 503, "%s", r.text);
    cr_assert_not(fc_conn_alive(fc, c));
    cr_assert_eq(fc_counter(fc, "metrics.busy"), 1);
    cr_assert_eq(fc_gauge(fc, "metrics.connections"), 2);
    free(r.text);
    fc_conn_peer_close(fc, a);
    cr_assert_eq(fc_gauge(fc, "metrics.connections"), 1);
    r = request("GET /metrics HTTP/1.1\r\n\r\n");
    cr_assert_eq(r.status, 200);
    free(r.text);
    (void)b;
}

Test(metrics, a_token_is_required_when_set)
{
    teardown();
    setup_with("port = 21120\ntoken = s3cr3t-T0ken\n");
    const char *refused[] = {
        "GET /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cr3t-T0ke\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cr3t-T0ken2\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nAuthorization: Basic czNjcjN0LVQwa2Vu\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nAuthorization: s3cr3t-T0ken\r\n\r\n",
        /* two Authorization headers: neither is guessed at */
        "GET /metrics HTTP/1.1\r\nAuthorization: Bearer wrong\r\nAuthorization: Bearer s3cr3t-T0ken\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n", /* paths are not revealed before authentication */
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        answer a = request(refused[i]);
        cr_assert_eq(a.status, 401, "case %zu: %s", i, a.text);
        cr_assert(strstr(a.text, "\r\nWWW-Authenticate: Bearer realm=\"rdvd metrics\"\r\n"));
        cr_assert_eq(a.body_len, 0);
        free(a.text);
    }
    cr_assert_eq(fc_counter(fc, "metrics.unauthorized"), 8);
    const char *ok[] = {
        "GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cr3t-T0ken\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nauthorization: bearer   s3cr3t-T0ken  \r\n\r\n",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        answer a = request(ok[i]);
        cr_assert_eq(a.status, 200, "case %zu: %s", i, a.text);
        free(a.text);
    }
    /* The token is reloadable; "" turns authentication off. */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "port = 21120\ntoken = other\n"), 0);
    answer a = request(ok[0]);
    cr_assert_eq(a.status, 401);
    free(a.text);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "port = 21120\n"), 0);
    a = request("GET /metrics HTTP/1.1\r\n\r\n");
    cr_assert_eq(a.status, 200);
    free(a.text);
}

Test(metrics, stats_mapping_to_one_name_are_shown_once)
{
    rdv_core *h1 = fc_handle(fc, "a-b"), *h2 = fc_handle(fc, "a_b");
    *h1->api->counter(h1, "c", "first") = 1;
    *h2->api->counter(h2, "c", "second") = 2;
    answer a = request("GET /metrics HTTP/1.1\r\n\r\n");
    cr_assert(has_line(&a, "rdvd_a_b_c_total 1"), "the first in name order wins");
    cr_assert_not(has_line(&a, "rdvd_a_b_c_total 2"));
    cr_assert_eq(fc_counter(fc, "metrics.name_collisions"), 1);
    free(a.text);
}

Test(metrics, an_answer_over_max_response_is_500)
{
    teardown();
    setup_with("port = 21120\nmax_response = 65536\n");
    rdv_core *h = fc_handle(fc, "bulk");
    char name[32], help[300];
    memset(help, 'h', sizeof help - 1);
    help[sizeof help - 1] = '\0';
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "c%03d", i);
        h->api->counter(h, name, help);
    }
    answer a = request("GET /metrics HTTP/1.1\r\n\r\n");
    cr_assert_eq(a.status, 500, "%.200s", a.text);
    cr_assert_eq(fc_counter(fc, "metrics.response_too_large"), 1);
    cr_assert(fc_log_contains(fc, "max_response"));
    free(a.text);
    /* Raised on reload, the same scrape fits. */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "port = 21120\nmax_response = 1048576\n"), 0);
    a = request("GET /metrics HTTP/1.1\r\n\r\n");
    cr_assert_eq(a.status, 200);
    cr_assert_eq(a.content_length, (long)a.body_len);
    free(a.text);
}

Test(metrics, process_metrics_can_be_left_out)
{
    teardown();
    setup_with("port = 21120\nprocess_metrics = false\n");
    answer a = request("GET /metrics HTTP/1.1\r\n\r\n");
    cr_assert_eq(a.status, 200);
    cr_assert_null(strstr(a.body, "process_"));
    cr_assert(has_line(&a, "rdvd_registry_register_peer_total 5"));
    free(a.text);
}

Test(metrics, settings_are_checked)
{
    fc_core *f2 = fc_new();
    void *s2;
    cr_assert_lt(fc_load(f2, rdv_module_get(), "token = has space\n", &s2), 0);
    cr_assert(fc_log_contains(f2, "metrics.token"));
    cr_assert_lt(fc_load(f2, rdv_module_get(), "max_response = 5000000\n", &s2), 0);
    cr_assert(fc_log_contains(f2, "core.write_queue_max"));
    cr_assert_lt(fc_load(f2, rdv_module_get(), "port = 0\n", &s2), 0);
    fc_free(f2);
    /* The port and the address need a restart. */
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "port = 21121\n"), -EPERM);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "port = 21120\nbind = \"\"\n"), -EPERM);
}

Test(metrics, a_public_address_without_a_token_is_warned)
{
    teardown();
    setup_with("port = 21120\nbind = 0.0.0.0\n");
    cr_assert(fc_log_contains(fc, "with no metrics.token"));
    teardown();
    setup_with("port = 21120\nbind = ::1\n");
    cr_assert_not(fc_log_contains(fc, "with no metrics.token"));
}
