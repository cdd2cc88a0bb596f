/* test_ws_http.c — the handshake parser, proxy address and CIDR rules,
 * server frame headers: pure functions of ws_http.c (RFC 6455 §4.2,
 * rendezvous.md §12, relay.md §9). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "ws.h"
#include "ws_test.h"

static ws_req req;

static ws_req_verdict parse(const char *text)
{
    ws_http_parse((const uint8_t *)text, strlen(text), &req);
    return req.verdict;
}

#define HDRS(method, version, extra)                                                                      \
    method " /ws/id " version "\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"                \
           "Sec-WebSocket-Key: " WT_KEY "\r\nSec-WebSocket-Version: 13\r\n" extra "\r\n"

Test(ws_http, accept_key_rfc_example)
{
    char out[WS_ACCEPT_LEN + 1];
    ws_http_accept_key(WT_KEY, strlen(WT_KEY), out);
    cr_assert_str_eq(out, WT_ACCEPT); /* RFC 6455 §1.3 */
    cr_assert_eq(parse(HDRS("GET", "HTTP/1.1", "")), WS_REQ_OK);
    cr_assert_str_eq(req.accept, WT_ACCEPT);
    cr_assert_str_eq(req.path, "/ws/id");
}

Test(ws_http, answer_101_declines_extensions_and_subprotocols)
{
    cr_assert_eq(parse(HDRS("GET", "HTTP/1.1",
                            "Origin: http://x\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                            "Sec-WebSocket-Protocol: chat\r\n")),
                 WS_REQ_OK);
    char out[256];
    size_t n = ws_http_answer_101(&req, out, sizeof out);
    cr_assert_gt(n, 0);
    cr_assert_str_eq(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: " WT_ACCEPT "\r\n\r\n");
}

Test(ws_http, head_end_both_line_ends_and_resume)
{
    size_t scan = 0;
    const char *a = "GET / HTTP/1.1\r\nA: b\r\n\r\nXYZ";
    cr_assert_eq(ws_http_head_end((const uint8_t *)a, strlen(a), &scan), strlen(a) - 3);
    scan = 0;
    const char *b = "GET / HTTP/1.1\nA: b\n\nX";
    cr_assert_eq(ws_http_head_end((const uint8_t *)b, strlen(b), &scan), strlen(b) - 1);
    /* byte by byte: the terminator split across calls is still found */
    scan = 0;
    size_t end = 0;
    for (size_t i = 1; i <= strlen(a) && !end; i++)
        end = ws_http_head_end((const uint8_t *)a, i, &scan);
    cr_assert_eq(end, strlen(a) - 3);
    scan = 0;
    cr_assert_eq(ws_http_head_end((const uint8_t *)"GET / HTTP/1.1\r\n", 16, &scan), 0);
    cr_assert_eq(scan, 16);
}

Test(ws_http, tokens_case_and_lists)
{
    cr_assert_eq(parse("GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
                       "Sec-WebSocket-Key: " WT_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n"),
                 WS_REQ_OK);
    /* tokens on separate header lines are joined */
    cr_assert_eq(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nConnection: upgrade\r\n"
                       "Sec-WebSocket-Key: " WT_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n"),
                 WS_REQ_OK);
    /* bare LF line ends, as http-parser accepts them */
    cr_assert_eq(parse("GET / HTTP/1.1\nUpgrade: websocket\nConnection: Upgrade\n"
                       "Sec-WebSocket-Key: " WT_KEY "\nSec-WebSocket-Version: 13\n\n"),
                 WS_REQ_OK);
    /* "upgrades" is not "upgrade" */
    cr_assert_eq(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrades\r\n"
                       "Sec-WebSocket-Key: " WT_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n"),
                 WS_REQ_NOT_UPGRADE);
}

Test(ws_http, refusals)
{
    cr_assert_eq(parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), WS_REQ_NOT_UPGRADE);
    cr_assert_eq(parse(HDRS("POST", "HTTP/1.1", "")), WS_REQ_NOT_GET);
    cr_assert_eq(parse(HDRS("GET", "HTTP/1.0", "")), WS_REQ_OLD_HTTP);
    cr_assert_eq(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"),
                 WS_REQ_BAD_KEY);
    cr_assert_eq(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: " WT_KEY "\r\nSec-WebSocket-Version: 8\r\n\r\n"),
                 WS_REQ_BAD_VERSION);
    cr_assert_eq(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: " WT_KEY "\r\n\r\n"),
                 WS_REQ_BAD_VERSION);
    /* key: 12 bytes instead of 16, not base64, repeated */
    cr_assert_eq(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: AAAAAAAAAAAAAAAA\r\nSec-WebSocket-Version: 13\r\n\r\n"),
                 WS_REQ_BAD_KEY);
    cr_assert_eq(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
                 WS_REQ_BAD_KEY);
    cr_assert_eq(parse(HDRS("GET", "HTTP/1.1", "Sec-WebSocket-Key: " WT_KEY "\r\n")), WS_REQ_BAD_KEY);
    /* 24 characters but not the padded base64 of 16 bytes: 18 bytes, no
     * padding with a space inside, nonzero bits after the last byte */
    static const char *const not16[] = { "AAAAAAAAAAAAAAAAAAAAAAAA", "dGhlIHNhbXBsZSBub25j ZQ=",
                                         "dGhlIHNhbXBsZSBub25jZR==" };
    for (size_t i = 0; i < sizeof not16 / sizeof *not16; i++) {
        char req[256];
        snprintf(req, sizeof req,
                 "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 not16[i]);
        cr_assert_eq(parse(req), WS_REQ_BAD_KEY, "%s", not16[i]);
    }
    cr_assert_eq(parse("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"), WS_REQ_MALFORMED);
    cr_assert_eq(parse("HELLO\r\n\r\n"), WS_REQ_MALFORMED);
    cr_assert_eq(parse("\r\n\r\n"), WS_REQ_MALFORMED);
    cr_assert_eq(parse("GET / HTTP/1.1\r\nBad Header Line\r\n\r\n"), WS_REQ_MALFORMED);
    cr_assert_eq(ws_http_status(WS_REQ_BAD_VERSION), 426);
    cr_assert_eq(ws_http_status(WS_REQ_BAD_KEY), 400);
    cr_assert_eq(ws_http_status(WS_REQ_OK), 101);
}

Test(ws_http, overlong_values)
{
    char big[600], text[1200];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    snprintf(text, sizeof text,
             "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade, %s\r\n"
             "Sec-WebSocket-Key: " WT_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
             big);
    cr_assert_eq(parse(text), WS_REQ_NOT_UPGRADE, "a token list we cannot keep whole is not trusted");
    snprintf(text, sizeof text, HDRS("GET", "HTTP/1.1", "X-Real-IP: %s\r\n"), big);
    cr_assert_eq(parse(text), WS_REQ_OK);
    rdv_addr a;
    cr_assert_not(ws_http_proxy_addr(&req, &a));
}

Test(ws_http, error_answers)
{
    char out[256];
    cr_assert_gt(ws_http_answer_error(426, out, sizeof out), 0);
    cr_assert(strstr(out, "HTTP/1.1 426 Upgrade Required\r\n") == out);
    cr_assert(strstr(out, "Sec-WebSocket-Version: 13\r\n"));
    cr_assert(strstr(out, "Connection: close\r\n"));
    ws_http_answer_error(400, out, sizeof out);
    cr_assert(strstr(out, "HTTP/1.1 400 Bad Request\r\n") == out);
    cr_assert_null(strstr(out, "Sec-WebSocket-Version"));
    ws_http_answer_error(431, out, sizeof out);
    cr_assert(strstr(out, "HTTP/1.1 431 ") == out);
    ws_http_answer_error(503, out, sizeof out);
    cr_assert(strstr(out, "HTTP/1.1 503 ") == out);
}

/* ---- rendezvous.md §12, R133/R134 ---- */
static bool proxy(const char *extra, rdv_addr *a)
{
    char text[1024];
    snprintf(text, sizeof text, HDRS("GET", "HTTP/1.1", "%s"), extra);
    cr_assert_eq(parse(text), WS_REQ_OK);
    return ws_http_proxy_addr(&req, a);
}

static void expect_addr(const rdv_addr *a, const char *text)
{
    char s[RDV_ADDR_STRLEN];
    cr_assert_str_eq(rdv_addr_str(a, s, sizeof s), text);
}

Test(ws_http, proxy_headers)
{
    rdv_addr a;
    cr_assert_not(proxy("", &a));
    cr_assert(proxy("X-Real-IP: 203.0.113.5\r\n", &a));
    expect_addr(&a, "203.0.113.5:0");
    cr_assert(proxy("X-Forwarded-For: 203.0.113.6\r\n", &a));
    expect_addr(&a, "203.0.113.6:0");
    cr_assert(proxy("X-Forwarded-For: 203.0.113.6\r\nX-Real-IP: 203.0.113.7\r\n", &a), "X-Real-IP wins");
    expect_addr(&a, "203.0.113.7:0");
    cr_assert_not(proxy("X-Forwarded-For: 1.2.3.4, 5.6.7.8\r\n", &a), "a list does not parse");
    cr_assert(proxy("X-Real-IP: 2001:db8::5\r\n", &a));
    expect_addr(&a, "[2001:db8::5]:0");
    cr_assert_not(proxy("X-Real-IP: garbage\r\n", &a));
    cr_assert_not(proxy("X-Real-IP: ::ffff:1.2.3.4\r\n", &a), "contains '.', so parsed as IPv4: fails");
    cr_assert_not(proxy("X-Real-IP: 1.2.3.4:80\r\n", &a));
    cr_assert_not(proxy("X-Real-IP: 01.2.3.4\r\n", &a));
    cr_assert_not(proxy("X-Real-IP: garbage\r\nX-Forwarded-For: 203.0.113.6\r\n", &a),
                  "present X-Real-IP: no fallback");
    cr_assert_not(proxy("X-Real-IP: 203.0.113.\xc3\xa9\r\nX-Forwarded-For: 203.0.113.6\r\n", &a),
                  "not visible ASCII: no fallback");
    cr_assert(proxy("X-Real-IP:   203.0.113.8  \r\n", &a), "surrounding blanks are not part of the value");
    expect_addr(&a, "203.0.113.8:0");
    cr_assert(proxy("X-Real-IP: 203.0.113.9\r\nX-Real-IP: 198.51.100.1\r\n", &a), "the first line counts");
    expect_addr(&a, "203.0.113.9:0");
    cr_assert(proxy("x-real-ip: 203.0.113.10\r\n", &a), "names are case-insensitive");
    expect_addr(&a, "203.0.113.10:0");
}

/* ---- trusted proxies ---- */
Test(ws_http, cidr)
{
    ws_cidr c;
    rdv_addr a;
    cr_assert_eq(ws_cidr_parse("10.0.0.0/8", &c), 0);
    a = fc_addr("10.200.3.4:1");
    cr_assert(ws_cidr_match(&c, &a));
    a = fc_addr("11.0.0.1:1");
    cr_assert_not(ws_cidr_match(&c, &a));
    a = fc_addr("[2001:db8::1]:1");
    cr_assert_not(ws_cidr_match(&c, &a), "families never match across");

    cr_assert_eq(ws_cidr_parse("127.0.0.1", &c), 0);
    cr_assert_eq(c.prefix, 32);
    a = fc_addr("127.0.0.1:9");
    cr_assert(ws_cidr_match(&c, &a));
    a = fc_addr("127.0.0.2:9");
    cr_assert_not(ws_cidr_match(&c, &a));

    cr_assert_eq(ws_cidr_parse("2001:db8::/32", &c), 0);
    a = fc_addr("[2001:db8:ffff::1]:1");
    cr_assert(ws_cidr_match(&c, &a));
    a = fc_addr("[2001:db9::1]:1");
    cr_assert_not(ws_cidr_match(&c, &a));

    cr_assert_eq(ws_cidr_parse("192.168.1.0/25", &c), 0);
    a = fc_addr("192.168.1.127:1");
    cr_assert(ws_cidr_match(&c, &a));
    a = fc_addr("192.168.1.128:1");
    cr_assert_not(ws_cidr_match(&c, &a));

    /* a mapped entry names the IPv4 address (peers are normalised) */
    cr_assert_eq(ws_cidr_parse("::ffff:10.1.2.3", &c), 0);
    cr_assert_eq(c.family, AF_INET);
    a = fc_addr("10.1.2.3:5");
    cr_assert(ws_cidr_match(&c, &a));

    cr_assert_eq(ws_cidr_parse("0.0.0.0/0", &c), 0);
    a = fc_addr("8.8.8.8:1");
    cr_assert(ws_cidr_match(&c, &a));

    const char *bad[] = { "", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "1.2.3",
                          "host.example", "10.0.0.0/8x", "1.2.3.4/8/8" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_lt(ws_cidr_parse(bad[i], &c), 0, "\"%s\" must be refused", bad[i]);
}

/* ---- RFC 6455 §5.2 server headers ---- */
Test(ws_http, frame_header)
{
    uint8_t h[16];
    cr_assert_eq(ws_frame_header(2, 0, h), 2);
    cr_assert(h[0] == 0x82 && h[1] == 0);
    cr_assert_eq(ws_frame_header(2, 125, h), 2);
    cr_assert(h[1] == 125);
    cr_assert_eq(ws_frame_header(2, 126, h), 4);
    cr_assert(h[1] == 126 && h[2] == 0 && h[3] == 126);
    cr_assert_eq(ws_frame_header(2, 65535, h), 4);
    cr_assert(h[2] == 0xff && h[3] == 0xff);
    cr_assert_eq(ws_frame_header(2, 65536, h), 10);
    uint8_t want[10] = { 0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0 };
    cr_assert_arr_eq(h, want, 10);
    cr_assert_eq(ws_frame_header(8, 2, h), 2);
    cr_assert_eq(h[0], 0x88);
}
