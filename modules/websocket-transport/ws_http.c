/* ws_http.c — the WebSocket opening handshake (RFC 6455 §4.2) and the
 * proxy-address rules of rendezvous.md §12 / relay.md §9.
 *
 * The request head is parsed by http-parser (libhttp-parser) once it is
 * complete; SHA-1 comes from libmd, base64 from libsodium. Pure functions: no core
 * calls, so the fuzz target and the unit suite drive them directly. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>
#include <sha1.h>
#include <sodium.h>

#include "ws.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 §1.3 */
#define WS_FNAME_MAX 64

/* ------------------------------------------------------------------ head end */
size_t ws_http_head_end(const uint8_t *p, size_t n, size_t *scan)
{
    /* The head ends at an empty line: "\n\n" or "\n\r\n". Resume two bytes
     * before where the last call stopped so a terminator split across
     * reads is still seen. */
    size_t i = *scan > 2 ? *scan - 2 : 0;
    for (; i < n; i++) {
        if (p[i] != '\n')
            continue;
        if (i + 1 < n && p[i + 1] == '\n')
            return i + 2;
        if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n')
            return i + 3;
    }
    *scan = n;
    return 0;
}

/* ------------------------------------------------------------------ parsing */
typedef struct ws_pstate {
    ws_req *req;
    char fname[WS_FNAME_MAX];
    size_t flen;
    bool fname_overflow;
    bool in_value;      /* the last callback was a value piece */
    int cur;            /* header id of the value being read, -1 = not kept */
    bool cur_first;     /* this is the first line of that header */
} ws_pstate;

static const char *const ws_hdr_names[WS_H_COUNT] = {
    [WS_H_UPGRADE] = "upgrade",
    [WS_H_CONNECTION] = "connection",
    [WS_H_KEY] = "sec-websocket-key",
    [WS_H_VERSION] = "sec-websocket-version",
    [WS_H_REAL_IP] = "x-real-ip",
    [WS_H_FORWARDED_FOR] = "x-forwarded-for",
};

static int ws_on_url(http_parser *hp, const char *at, size_t len)
{
    ws_pstate *ps = hp->data;
    char *path = ps->req->path;
    size_t have = strlen(path), room = sizeof ps->req->path - 1 - have;
    if (len > room)
        len = room;
    memcpy(path + have, at, len);
    path[have + len] = '\0';
    return 0;
}

static int ws_on_field(http_parser *hp, const char *at, size_t len)
{
    ws_pstate *ps = hp->data;
    if (ps->in_value) { /* a new header line starts */
        ps->flen = 0, ps->fname_overflow = false, ps->in_value = false;
    }
    if (ps->flen + len > sizeof ps->fname) {
        ps->fname_overflow = true;
        return 0;
    }
    memcpy(ps->fname + ps->flen, at, len);
    ps->flen += len;
    return 0;
}

static int ws_hdr_lookup(const ws_pstate *ps)
{
    if (ps->fname_overflow)
        return -1;
    for (int i = 0; i < WS_H_COUNT; i++)
        if (strlen(ws_hdr_names[i]) == ps->flen && strncasecmp(ws_hdr_names[i], ps->fname, ps->flen) == 0)
            return i;
    return -1;
}

/* Visible ASCII and tab: what the http crate's HeaderValue::to_str accepts
 * (rendezvous.md §12: an X-Real-IP outside it disables the fallback). */
static bool ws_visible(const char *at, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)at[i];
        if (ch != '\t' && (ch < 0x20 || ch > 0x7e))
            return false;
    }
    return true;
}

static void ws_hval_append(ws_hval *h, const char *at, size_t len)
{
    if (h->len + len > WS_HVAL_MAX) {
        h->overflow = true;
        return;
    }
    memcpy(h->v + h->len, at, len);
    h->len += len;
    h->v[h->len] = '\0';
}

static int ws_on_value(http_parser *hp, const char *at, size_t len)
{
    ws_pstate *ps = hp->data;
    if (!ps->in_value) { /* first piece of this header's value */
        ps->in_value = true;
        ps->cur = ws_hdr_lookup(ps);
        if (ps->cur < 0)
            return 0;
        ws_hval *h = &ps->req->h[ps->cur];
        h->count++;
        ps->cur_first = h->count == 1;
        /* Token lists (Upgrade, Connection) may come on several lines:
         * join them like one comma-separated value (RFC 9110 §5.3). */
        if (!ps->cur_first && (ps->cur == WS_H_UPGRADE || ps->cur == WS_H_CONNECTION))
            ws_hval_append(h, ",", 1);
    }
    if (ps->cur < 0)
        return 0;
    ws_hval *h = &ps->req->h[ps->cur];
    bool list = ps->cur == WS_H_UPGRADE || ps->cur == WS_H_CONNECTION;
    if (!list && !ps->cur_first)
        return 0; /* single-valued headers: the first line counts (HeaderMap::get) */
    if (ps->cur_first && !ws_visible(at, len))
        h->invisible = true;
    ws_hval_append(h, at, len);
    return 0;
}

static void ws_trim(const char *s, size_t len, const char **out, size_t *outlen)
{
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r' || s[len - 1] == '\n'))
        len--;
    *out = s, *outlen = len;
}

/* True if the comma-separated list h contains token (case-insensitive). */
static bool ws_has_token(const ws_hval *h, const char *token)
{
    if (!h->count || h->overflow)
        return false;
    size_t tl = strlen(token);
    const char *p = h->v, *end = h->v + h->len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        const char *t;
        size_t n;
        ws_trim(p, (size_t)(stop - p), &t, &n);
        if (n == tl && strncasecmp(t, token, tl) == 0)
            return true;
        p = stop + 1;
    }
    return false;
}

/* Sec-WebSocket-Key must be the base64 form of 16 bytes (RFC 6455 §4.1). */
static bool ws_key_valid(const ws_hval *h, const char **key, size_t *klen)
{
    if (h->count != 1 || h->overflow)
        return false;
    ws_trim(h->v, h->len, key, klen);
    if (*klen != WS_KEY_B64_LEN)
        return false;
    uint8_t raw[WS_KEY_B64_LEN];
    size_t rlen = 0;
    /* strict: padding required, nothing skipped, no trailing bytes */
    return sodium_base642bin(raw, sizeof raw, *key, *klen, NULL, &rlen, NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
           rlen == 16;
}

static bool ws_version_13(const ws_hval *h)
{
    const char *v;
    size_t n;
    if (h->count != 1 || h->overflow)
        return false;
    ws_trim(h->v, h->len, &v, &n);
    return n == 2 && v[0] == '1' && v[1] == '3';
}

void ws_http_accept_key(const char *key, size_t len, char out[WS_ACCEPT_LEN + 1])
{
    SHA1_CTX sha;
    uint8_t digest[SHA1_DIGEST_LENGTH];
    SHA1Init(&sha);
    SHA1Update(&sha, (const uint8_t *)key, len);
    SHA1Update(&sha, (const uint8_t *)WS_GUID, sizeof WS_GUID - 1);
    SHA1Final(digest, &sha);
    _Static_assert(sodium_base64_ENCODED_LEN(SHA1_DIGEST_LENGTH, sodium_base64_VARIANT_ORIGINAL) == WS_ACCEPT_LEN + 1,
                   "accept key length");
    sodium_bin2base64(out, WS_ACCEPT_LEN + 1, digest, sizeof digest, sodium_base64_VARIANT_ORIGINAL);
}

void ws_http_parse(const uint8_t *p, size_t n, ws_req *req)
{
    memset(req, 0, sizeof *req);
    http_parser_settings set;
    http_parser_settings_init(&set);
    set.on_url = ws_on_url;
    set.on_header_field = ws_on_field;
    set.on_header_value = ws_on_value;
    ws_pstate ps = { .req = req, .cur = -1 };
    http_parser hp;
    http_parser_init(&hp, HTTP_REQUEST);
    hp.data = &ps;
    http_parser_execute(&hp, &set, (const char *)p, n);
    if (HTTP_PARSER_ERRNO(&hp) != HPE_OK || hp.http_major == 0) {
        req->verdict = WS_REQ_MALFORMED;
        return;
    }
    if (hp.method != HTTP_GET) {
        req->verdict = WS_REQ_NOT_GET;
        return;
    }
    if (hp.http_major != 1 || hp.http_minor < 1) {
        req->verdict = WS_REQ_OLD_HTTP;
        return;
    }
    if (!ws_has_token(&req->h[WS_H_UPGRADE], "websocket") || !ws_has_token(&req->h[WS_H_CONNECTION], "upgrade")) {
        req->verdict = WS_REQ_NOT_UPGRADE;
        return;
    }
    if (!ws_version_13(&req->h[WS_H_VERSION])) {
        req->verdict = WS_REQ_BAD_VERSION;
        return;
    }
    const char *key;
    size_t klen;
    if (!ws_key_valid(&req->h[WS_H_KEY], &key, &klen)) {
        req->verdict = WS_REQ_BAD_KEY;
        return;
    }
    ws_http_accept_key(key, klen, req->accept);
    req->verdict = WS_REQ_OK;
}

int ws_http_status(ws_req_verdict v)
{
    switch (v) {
    case WS_REQ_OK: return 101;
    case WS_REQ_BAD_VERSION: return 426;
    default: return 400;
    }
}

const char *ws_http_verdict_name(ws_req_verdict v)
{
    switch (v) {
    case WS_REQ_OK: return "ok";
    case WS_REQ_MALFORMED: return "malformed HTTP request";
    case WS_REQ_NOT_GET: return "method is not GET";
    case WS_REQ_OLD_HTTP: return "HTTP version below 1.1";
    case WS_REQ_NOT_UPGRADE: return "not a WebSocket upgrade";
    case WS_REQ_BAD_KEY: return "missing or invalid Sec-WebSocket-Key";
    case WS_REQ_BAD_VERSION: return "Sec-WebSocket-Version is not 13";
    }
    return "?";
}

/* No subprotocol and no extensions are selected: permessage-deflate offered
 * by browsers is declined by leaving it out (client-flows.md §10). */
size_t ws_http_answer_101(const ws_req *req, char *out, size_t cap)
{
    int n = snprintf(out, cap,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "\r\n",
                     req->accept);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t ws_http_answer_error(int status, char *out, size_t cap)
{
    const char *reason = status == 426   ? "Upgrade Required"
                         : status == 431 ? "Request Header Fields Too Large"
                         : status == 503 ? "Service Unavailable"
                                         : "Bad Request";
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\n"
                     "%s"
                     "Connection: close\r\n"
                     "Content-Length: 0\r\n"
                     "\r\n",
                     status, reason, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "");
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* ------------------------------------------------------------------ proxy address */
/* One IP, as upstream parses it: "<v>:0" as an IPv4 socket address when the
 * value contains '.', else "[<v>]:0" as IPv6. Lists ("a, b"), ports, zones
 * and "::ffff:1.2.3.4" do not parse. */
static bool ws_parse_ip(const ws_hval *h, rdv_addr *out)
{
    if (h->overflow || h->invisible)
        return false;
    const char *v;
    size_t n;
    ws_trim(h->v, h->len, &v, &n);
    char buf[WS_HVAL_MAX + 1];
    if (n == 0 || n > 45)
        return false;
    memcpy(buf, v, n);
    buf[n] = '\0';
    uint8_t ip[16];
    if (strchr(buf, '.')) {
        if (inet_pton(AF_INET, buf, ip) != 1)
            return false;
        rdv_addr_v4(out, ip, 0);
        return true;
    }
    if (inet_pton(AF_INET6, buf, ip) != 1)
        return false;
    rdv_addr_v6(out, ip, 0);
    return true;
}

bool ws_http_proxy_addr(const ws_req *req, rdv_addr *out)
{
    const ws_hval *rip = &req->h[WS_H_REAL_IP], *xff = &req->h[WS_H_FORWARDED_FOR];
    if (rip->count) /* present: no fallback, even when it does not parse */
        return ws_parse_ip(rip, out);
    if (xff->count)
        return ws_parse_ip(xff, out);
    return false;
}

/* ------------------------------------------------------------------ trusted proxies */
int ws_cidr_parse(const char *s, ws_cidr *out)
{
    char buf[64];
    size_t len = strlen(s);
    if (len == 0 || len >= sizeof buf)
        return -EINVAL;
    memcpy(buf, s, len + 1);
    char *slash = strchr(buf, '/');
    long prefix = -1;
    if (slash) {
        char *end;
        *slash = '\0';
        if (!slash[1] || slash[1] == '-' || slash[1] == '+')
            return -EINVAL;
        prefix = strtol(slash + 1, &end, 10);
        if (*end)
            return -EINVAL;
    }
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->ip) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, buf, out->ip) == 1)
        out->family = AF_INET6;
    else
        return -EINVAL;
    long max = out->family == AF_INET ? 32 : 128;
    if (prefix < 0)
        prefix = max;
    if (prefix > max)
        return -EINVAL;
    out->prefix = (unsigned)prefix;
    /* An IPv4-mapped IPv6 entry means the IPv4 address: peers are stored
     * normalised (wire.md §5.1). */
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (out->family == AF_INET6 && memcmp(out->ip, mapped, 12) == 0 && out->prefix >= 96) {
        memmove(out->ip, out->ip + 12, 4);
        memset(out->ip + 4, 0, 12);
        out->family = AF_INET;
        out->prefix -= 96;
    }
    return 0;
}

bool ws_cidr_match(const ws_cidr *c, const rdv_addr *a)
{
    const uint8_t *ip;
    if (a->u.sa.sa_family != c->family)
        return false;
    ip = c->family == AF_INET ? (const uint8_t *)&a->u.v4.sin_addr : a->u.v6.sin6_addr.s6_addr;
    unsigned full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(ip, c->ip, full) != 0)
        return false;
    if (rest) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        if ((ip[full] & mask) != (c->ip[full] & mask))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------ frame header */
/* The core's codec asks for a header alone, before the payload it already
 * holds; wslay's frame writer only emits header and payload together, so
 * these few lines of RFC 6455 §5.2 are written here. */
size_t ws_frame_header(uint8_t opcode, uint64_t n, uint8_t out[16])
{
    out[0] = (uint8_t)(0x80u | (opcode & 0x0fu)); /* FIN, no RSV bits */
    if (n < 126) {
        out[1] = (uint8_t)n;
        return 2;
    }
    if (n <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(n >> 8), out[3] = (uint8_t)n;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(n >> (56 - 8 * i));
    return 10;
}
