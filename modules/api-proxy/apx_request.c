/* apx_request.c — checks an HttpProxyRequest and turns it into what we ask
 * the API server for (client-flows.md §6.9). The client only chooses the
 * method, a path under api_base_url, headers and a body: never the host, the
 * scheme or a path outside the base (no SSRF), never header injection. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <rdv/wire.h>

#include "apx.h"

#define APX_PATH_MAX 8192
#define APX_URL_MAX (APX_PATH_MAX + 4096 + 2)

static const char *const apx_default_methods[] = { "GET", "POST", "PUT", "PATCH", "DELETE" };

/* RFC 9110 §5.6.2 token characters. */
static bool apx_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

bool apx_header_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 256)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!apx_tchar((unsigned char)name[i]))
            return false;
    return true;
}

/* No CR/LF (header injection) and no other control character but HTAB. */
bool apx_header_value_ok(const char *value)
{
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

bool apx_hop_by_hop(const char *name, size_t len)
{
    static const char *const names[] = {
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
        "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
            return true;
    return false;
}

/* Request headers we set ourselves (curl derives Host and Content-Length
 * from the URL and body). */
static bool apx_managed(const apx_cfg *cfg, const char *name)
{
    static const char *const ours[] = { "host", "content-length", "expect" };
    static const char *const client_ip[] = { "x-forwarded-for", "x-real-ip", "forwarded" };
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        if (strcasecmp(name, ours[i]) == 0)
            return true;
    if (cfg->forward_client_ip)
        for (size_t i = 0; i < sizeof client_ip / sizeof client_ip[0]; i++)
            if (strcasecmp(name, client_ip[i]) == 0)
                return true;
    return false;
}

/* True if name is listed in a Connection header of req (those are
 * hop-by-hop too, RFC 9110 §7.6.1). */
static bool apx_connection_listed(const Hbb__HttpProxyRequest *req, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcasecmp(req->headers[i]->name, "connection") != 0)
            continue;
        const char *p = req->headers[i]->value;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *t = p;
            while (*p && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if ((size_t)(p - t) == nl && strncasecmp(t, name, nl) == 0)
                return true;
        }
    }
    return false;
}

bool apx_base_url_ok(const char *url)
{
    const char *rest;
    if (strncasecmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    else
        return false;
    if (!*rest || *rest == '/' || strlen(url) > 4096)
        return false;
    for (const unsigned char *p = (const unsigned char *)rest; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || *p == '?' || *p == '#' || *p == '\\')
            return false;
    return true;
}

static int apx_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One path segment [s, e): reject "." and ".." in any percent-encoding and
 * encoded separators or NUL, which some servers would decode into the path. */
static bool apx_segment_ok(const char *s, const char *e)
{
    size_t decoded = 0, dots = 0;
    for (const char *p = s; p < e; decoded++) {
        unsigned char c = (unsigned char)*p;
        if (c == '%') {
            int hi = p + 2 < e ? apx_hexval((unsigned char)p[1]) : -1;
            int lo = hi >= 0 ? apx_hexval((unsigned char)p[2]) : -1;
            if (hi < 0 || lo < 0)
                return false;
            c = (unsigned char)(hi * 16 + lo);
            if (c == '/' || c == '\\' || c == 0)
                return false;
            p += 3;
        } else {
            p++;
        }
        if (c == '.')
            dots++;
    }
    return !(decoded == dots && (dots == 1 || dots == 2));
}

bool apx_path_ok(const char *path)
{
    size_t n = strlen(path);
    if (n == 0 || n > APX_PATH_MAX || path[0] != '/' || path[1] == '/')
        return false; /* relative to the base only: no "http://…", no "//host/…" */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '#')
            return false;
        if (c == '%' && (i + 2 >= n || apx_hexval((unsigned char)path[i + 1]) < 0 ||
                         apx_hexval((unsigned char)path[i + 2]) < 0))
            return false;
    }
    const char *end = strchr(path, '?');
    if (!end)
        end = path + n;
    for (const char *s = path + 1;;) {
        const char *e = memchr(s, '/', (size_t)(end - s));
        if (!e)
            e = end;
        if (!apx_segment_ok(s, e))
            return false;
        if (e == end)
            return true;
        s = e + 1;
    }
}

static bool apx_method_allowed(const apx_cfg *cfg, const char *m)
{
    if (!cfg->methods.n) {
        for (size_t i = 0; i < sizeof apx_default_methods / sizeof apx_default_methods[0]; i++)
            if (strcmp(m, apx_default_methods[i]) == 0)
                return true;
        return false;
    }
    for (size_t i = 0; i < cfg->methods.n; i++)
        if (strcasecmp(m, cfg->methods.v[i]) == 0)
            return true;
    return false;
}

/* A raw curl header line ("Name:" removes a header curl would add). */
static int apx_add_raw(struct curl_slist **l, const char *line)
{
    struct curl_slist *nl = apx_cu.slist_append(*l, line);
    if (!nl)
        return -1;
    *l = nl;
    return 0;
}

/* Append "name: value" (curl sends "name;" as an empty header: "name:"
 * would delete it). */
static int apx_add_header(struct curl_slist **l, const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = malloc(n);
    if (!line)
        return -1;
    if (*value)
        snprintf(line, n, "%s: %s", name, value);
    else
        snprintf(line, n, "%s;", name);
    int r = apx_add_raw(l, line);
    free(line);
    return r;
}

static int apx_fail(const char **why, const char *text, int status)
{
    *why = text;
    return status;
}

int apx_plan_build(const apx_cfg *cfg, const Hbb__HttpProxyRequest *req, const rdv_addr *peer, apx_plan *out,
                   const char **why)
{
    memset(out, 0, sizeof *out);
    const char *m = req->method ? req->method : "";
    size_t ml = strlen(m);
    if (ml == 0 || ml >= sizeof out->method)
        return apx_fail(why, "method not allowed", 405);
    for (size_t i = 0; i < ml; i++) {
        if (!apx_tchar((unsigned char)m[i]))
            return apx_fail(why, "method not allowed", 405);
        out->method[i] = (char)toupper((unsigned char)m[i]);
    }
    if (!apx_method_allowed(cfg, out->method))
        return apx_fail(why, "method not allowed", 405);
    const char *path = req->path ? req->path : "";
    if (!apx_path_ok(path))
        return apx_fail(why, "path not allowed", 400);
    if (req->body.len > (size_t)cfg->max_request_body)
        return apx_fail(why, "request body too large", 413);
    if (req->n_headers > (size_t)cfg->max_headers)
        return apx_fail(why, "too many headers", 431);

    size_t bytes = 0;
    bool has_type = false;
    for (size_t i = 0; i < req->n_headers; i++) {
        const Hbb__HeaderEntry *h = req->headers[i];
        if (!apx_header_name_ok(h->name) || !apx_header_value_ok(h->value)) {
            apx_plan_free(out);
            return apx_fail(why, "invalid header", 400);
        }
        bytes += strlen(h->name) + strlen(h->value);
        if (bytes > (size_t)cfg->max_header_bytes) {
            apx_plan_free(out);
            return apx_fail(why, "headers too large", 431);
        }
        if (apx_hop_by_hop(h->name, strlen(h->name)) || apx_managed(cfg, h->name) ||
            apx_connection_listed(req, h->name))
            continue;
        if (strcasecmp(h->name, "content-type") == 0)
            has_type = true;
        if (apx_add_header(&out->headers, h->name, h->value) < 0)
            goto oom;
    }
    /* No "Expect: 100-continue" round trip; no form type curl would invent. */
    if (apx_add_raw(&out->headers, "Expect:") < 0 || (!has_type && apx_add_raw(&out->headers, "Content-Type:") < 0))
        goto oom;
    if (cfg->forward_client_ip) {
        char ip[RDV_ADDR_STRLEN];
        rdv_addr_ip_str(peer, ip, sizeof ip);
        if (apx_add_header(&out->headers, "X-Forwarded-For", ip) < 0 ||
            apx_add_header(&out->headers, "X-Real-IP", ip) < 0)
            goto oom;
    }

    size_t bl = strlen(cfg->api_base_url);
    while (bl && cfg->api_base_url[bl - 1] == '/')
        bl--;
    size_t ul = bl + strlen(path) + 1;
    if (ul > APX_URL_MAX) {
        apx_plan_free(out);
        return apx_fail(why, "path not allowed", 400);
    }
    if (!(out->url = malloc(ul)))
        goto oom;
    snprintf(out->url, ul, "%.*s%s", (int)bl, cfg->api_base_url, path);
    return 0;
oom:
    apx_plan_free(out);
    return apx_fail(why, APX_OOM, 500);
}

void apx_plan_free(apx_plan *p)
{
    if (p->headers)
        apx_cu.slist_free_all(p->headers);
    free(p->url);
    p->headers = NULL, p->url = NULL;
}
