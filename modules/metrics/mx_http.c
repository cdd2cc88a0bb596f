/* mx_http.c — the scrape request head, parsed by http-parser
 * (libhttp-parser) as it arrives: method, path and Authorization are all
 * the module needs. Pure functions, no core calls: the unit suite and the
 * fuzz target drive them directly. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "mx.h"

static void mx_append(char *dst, size_t cap, bool *cut, const char *at, size_t len)
{
    size_t have = strlen(dst), room = cap - 1 - have;
    if (len > room) {
        len = room;
        *cut = true;
    }
    memcpy(dst + have, at, len);
    dst[have + len] = '\0';
}

static int mx_on_url(http_parser *hp, const char *at, size_t len)
{
    mx_req *r = hp->data;
    mx_append(r->path, sizeof r->path, &r->path_long, at, len);
    return 0;
}

/* Header names may arrive in pieces: keep up to sizeof field - 1 bytes,
 * lower case; a longer name is one we do not look for. */
static int mx_on_field(http_parser *hp, const char *at, size_t len)
{
    mx_req *r = hp->data;
    if (r->in_value)
        r->flen = 0, r->field_long = false, r->in_value = false;
    for (size_t i = 0; i < len; i++) {
        if (r->flen + 1 >= sizeof r->field) {
            r->field_long = true;
            break;
        }
        r->field[r->flen++] = (char)tolower((unsigned char)at[i]);
    }
    r->field[r->flen] = '\0';
    return 0;
}

static int mx_on_value(http_parser *hp, const char *at, size_t len)
{
    mx_req *r = hp->data;
    if (!r->in_value) { /* the first piece of this header's value */
        r->in_value = true;
        r->cur_auth = !r->field_long && strcmp(r->field, "authorization") == 0;
        if (r->cur_auth) {
            if (r->auth_seen) /* twice: never guess which one counts */
                r->auth_long = true;
            r->auth_seen = true;
            r->auth[0] = '\0';
        }
    }
    if (r->cur_auth)
        mx_append(r->auth, sizeof r->auth, &r->auth_long, at, len);
    return 0;
}

static int mx_on_headers_complete(http_parser *hp)
{
    mx_req *r = hp->data;
    r->method = hp->method;
    /* http-parser takes any digit as a version; we speak HTTP/1.x only. */
    r->state = hp->http_major == 1 ? MX_REQ_DONE : MX_REQ_BAD;
    http_parser_pause(hp, 1); /* the head is all we read */
    return 0;
}

static const http_parser_settings mx_hp_settings = {
    .on_url = mx_on_url,
    .on_header_field = mx_on_field,
    .on_header_value = mx_on_value,
    .on_headers_complete = mx_on_headers_complete,
};

void mx_req_init(mx_req *r)
{
    memset(r, 0, sizeof *r);
    http_parser_init(&r->hp, HTTP_REQUEST);
    r->hp.data = r;
}

mx_req_state mx_req_feed(mx_req *r, const uint8_t *p, size_t n)
{
    if (r->state != MX_REQ_MORE)
        return r->state;
    /* Never hand the parser more than the head may still take. */
    size_t room = MX_HEAD_MAX - r->head_bytes, take = n < room ? n : room;
    if (!take) /* 0 bytes would tell the parser the stream ended */
        return r->state;
    size_t used = http_parser_execute(&r->hp, &mx_hp_settings, (const char *)p, take);
    r->head_bytes += used;
    if (r->state != MX_REQ_MORE)
        return r->state;
    if (HTTP_PARSER_ERRNO(&r->hp) != HPE_OK)
        r->state = MX_REQ_BAD;
    else if (r->head_bytes >= MX_HEAD_MAX)
        r->state = MX_REQ_TOO_LARGE;
    return r->state;
}

/* The token is compared as two hashes, so the time taken says nothing
 * about how much of it matched, nor its length. */
static bool mx_token_ok(const char *auth, const char *token)
{
    static const char bearer[] = "Bearer ";
    if (strncasecmp(auth, bearer, sizeof bearer - 1) != 0)
        return false;
    const char *given = auth + sizeof bearer - 1;
    while (*given == ' ')
        given++;
    size_t glen = strlen(given);
    while (glen && (given[glen - 1] == ' ' || given[glen - 1] == '\t'))
        glen--;
    uint8_t a[crypto_generichash_BYTES], b[crypto_generichash_BYTES];
    crypto_generichash(a, sizeof a, (const uint8_t *)given, glen, NULL, 0);
    crypto_generichash(b, sizeof b, (const uint8_t *)token, strlen(token), NULL, 0);
    return sodium_memcmp(a, b, sizeof a) == 0;
}

int mx_req_status(const mx_req *r, const char *token)
{
    if (r->method != HTTP_GET && r->method != HTTP_HEAD)
        return 405;
    if (token && *token && (r->auth_long || !mx_token_ok(r->auth, token)))
        return 401;
    size_t plen = strcspn(r->path, "?");
    if (r->path_long || plen != strlen("/metrics") || strncmp(r->path, "/metrics", plen) != 0)
        return 404;
    return 200;
}
