/* libFuzzer: the metrics module's request reading (http-parser and our
 * bounds) through the module itself on the fake core.
 *
 * Input: byte 0 picks the mode, the rest is data.
 *   mode 0: the data fed to mx_req_feed in pieces (sizes from the data).
 *   mode 1: a scrape connection receiving the data in reads whose sizes
 *           come from the data, the clock moving between reads, with the
 *           token set when bit 2 of byte 0 is.
 * Invariants checked: the head bound holds, every connection gets at most
 * one answer, a well-formed HTTP/1.1 head whose Content-Length is the body
 * that follows, the status is one the module sends, and the connection
 * gauge returns to 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fakecore/fakecore.h"
#include "mx.h"

#define CHECK(x) ((x) ? (void)0 : abort())
#define RESET_EVERY 20000 /* the fake core caps connections per instance */

const rdv_module *rdv_module_get(void);

static fc_core *fc;
static void *st;
static rdv_listener *ml;
static unsigned runs;
static bool with_token;

static void fc_setup(bool token)
{
    if (fc && ++runs % RESET_EVERY && token == with_token)
        return;
    if (fc)
        fc_free(fc);
    fc = fc_new();
    rdv_core *h = fc_handle(fc, "fuzz");
    *h->api->counter(h, "things", "a counter \\ with\nhelp") = 7;
    with_token = token;
    CHECK(fc_load(fc, rdv_module_get(), token ? "port = 21120\ntoken = abc\n" : "port = 21120\n", &st) == 0);
    ml = fc_find_listener(fc, "metrics", RDV_TR_TCP);
    CHECK(ml);
}

static void run_req(const uint8_t *p, size_t n)
{
    mx_req r;
    mx_req_init(&r);
    size_t i = 0;
    mx_req_state prev = MX_REQ_MORE;
    while (i < n) {
        size_t k = 1 + p[i] % 200;
        i++;
        if (k > n - i)
            k = n - i;
        mx_req_state s = mx_req_feed(&r, p + i, k);
        CHECK(prev == MX_REQ_MORE || s == prev); /* a verdict never changes */
        CHECK(r.head_bytes <= MX_HEAD_MAX);
        CHECK(strlen(r.path) < sizeof r.path && strlen(r.auth) < sizeof r.auth);
        prev = s;
        i += k;
    }
    if (prev == MX_REQ_DONE) {
        int status = mx_req_status(&r, "abc");
        CHECK(status == 200 || status == 401 || status == 404 || status == 405);
    }
}

/* At most one answer per connection, well-formed. */
static void check_answer(rdv_conn_id id)
{
    char *text = NULL;
    size_t len = 0;
    const fc_sent *s;
    while ((s = fc_next_sent(fc)) != NULL) {
        if (s->kind != FC_SENT_BYTES || s->conn != id)
            continue;
        text = realloc(text, len + s->len + 1);
        CHECK(text);
        memcpy(text + len, s->raw, s->len);
        len += s->len;
        text[len] = '\0';
    }
    if (!text)
        return;
    int status = 0;
    CHECK(sscanf(text, "HTTP/1.1 %d ", &status) == 1);
    CHECK(status == 200 || status == 400 || status == 401 || status == 404 || status == 405 ||
          status == 408 || status == 431 || status == 503);
    char *end = strstr(text, "\r\n\r\n"), *cl = strstr(text, "\r\nContent-Length: ");
    CHECK(end && cl && cl < end);
    CHECK(strstr(end + 4, "HTTP/1.1 ") == NULL); /* one answer */
    size_t body = len - (size_t)(end + 4 - text);
    long want = strtol(cl + 18, NULL, 10);
    CHECK(want == (long)body || (want > 0 && body == 0)); /* HEAD: headers only */
    free(text);
}

static void run_conn(const uint8_t *p, size_t n)
{
    rdv_addr peer = fc_addr("10.1.2.3:4444");
    rdv_conn_id id = fc_owned_open(fc, ml, &peer);
    size_t i = 0;
    while (i < n && fc_conn_alive(fc, id)) {
        size_t k = 1 + p[i] % 128;
        i++;
        if (k > n - i)
            k = n - i;
        fc_conn_raw(fc, id, p + i, k);
        i += k;
        fc_advance(fc, 300);
    }
    fc_advance(fc, 6000); /* the request deadline */
    check_answer(id);
    if (fc_conn_alive(fc, id))
        fc_conn_peer_close(fc, id);
    fc_clear_sent(fc);
    CHECK(fc_gauge(fc, "metrics.connections") == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (!(data[0] & 1)) {
        run_req(p, n);
        return 0;
    }
    fc_setup(data[0] & 4);
    run_conn(p, n);
    return 0;
}
