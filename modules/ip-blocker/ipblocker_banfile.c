/* ipblocker_banfile.c — the text of the admin ban file (admin_ban_file):
 * parsing it line by line from a FILE and formatting a sorted list of bans.
 * No other I/O, so tests/fuzz/fuzz_banfile.c runs it on memory.
 *
 *   # header comment (rdvd rewrites this file on every ban / unban)
 *   10.0.0.1
 *   198.51.100.0/24     # a comment after an entry is allowed too
 *   2001:db8::/48
 *
 * Memory is bounded whatever the file holds: a line is read into a fixed
 * buffer; past it only a comment may continue. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdv/wire.h>

#include "ipblocker.h"

static const char ipblocker_banfile_header[] =
    "# Admin bans of rdvd's ip-blocker (console `ban` / `unban`): one IP address\n"
    "# or CIDR per line. rdvd rewrites this file on every ban and unban, sorted,\n"
    "# without comments or lines it could not read: edit it only while rdvd is\n"
    "# stopped. Setting: ip-blocker.admin_ban_file.\n";

static bool ipblocker_is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* The line as a warning can show it: printable ASCII, the rest as \xNN,
 * cut to fit with "..." (a log line must not carry the file's control
 * bytes); "..." also when `more` (the line was longer than was read). */
static void ipblocker_banfile_escape(const char *p, size_t n, bool more, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        size_t need = c >= 0x20 && c < 0x7f && c != '\\' ? 1 : 4;
        if (o + need + 4 > cap) { /* keep room for "..." and the NUL */
            more = true;
            break;
        }
        if (need == 1)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    if (more)
        memcpy(out + o, "...", 3), o += 3;
    out[o] = '\0';
}

/* One line (len bytes kept of it, cut when `cut`): entry, comment, blank
 * or bad. NUL bytes inside are kept and make the line bad. */
static int ipblocker_banfile_line(char *line, size_t len, bool cut, unsigned long no, ipblocker_banfile_fn fn,
                                  void *ud)
{
    char *b = line, *e;
    if (no == 1 && len >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) /* a byte order mark */
        b += 3;
    char *hash = memchr(b, '#', (size_t)(line + len - b));
    if (hash)
        len = (size_t)(hash - line), cut = false; /* whatever was cut off is comment */
    e = line + len;
    while (b < e && ipblocker_is_space(*b))
        b++;
    while (e > b && ipblocker_is_space(e[-1]))
        e--;
    if (b == e && !cut)
        return 0;
    *e = '\0';
    bool one_word = true;
    for (const char *p = b; p < e && one_word; p++)
        one_word = *p && !ipblocker_is_space(*p);
    ipblocker_ban_key key;
    if (!cut && one_word && ipblocker_parse_ban(b, &key))
        return fn(ud, no, &key, b);
    char text[80];
    ipblocker_banfile_escape(b, (size_t)(e - b), cut, text, sizeof text);
    return fn(ud, no, NULL, text);
}

int ipblocker_banfile_parse(FILE *f, ipblocker_banfile_fn fn, void *ud)
{
    char line[IPB_BANFILE_LINE_MAX + 1];
    size_t len = 0;
    bool cut = false;
    unsigned long no = 1;
    int r = 0, c;
    while (r >= 0 && (c = getc(f)) != EOF) {
        if (c != '\n') {
            if (len < IPB_BANFILE_LINE_MAX)
                line[len++] = (char)c;
            else
                cut = true;
            continue;
        }
        r = ipblocker_banfile_line(line, len, cut, no++, fn, ud);
        len = 0, cut = false;
    }
    if (r >= 0 && (len || cut)) /* the last line has no newline */
        r = ipblocker_banfile_line(line, len, cut, no, fn, ud);
    if (r >= 0 && ferror(f))
        r = -EIO;
    return r;
}

/* ------------------------------------------------------------------ writing */
static bool ipblocker_key_v4(const ipblocker_ban_key *k) { return k->plen >= 96 && rdv_ip_is_v4(k->net); }

int ipblocker_ban_key_cmp(const void *a_, const void *b_)
{
    const ipblocker_ban_key *a = a_, *b = b_;
    bool v4a = ipblocker_key_v4(a), v4b = ipblocker_key_v4(b);
    if (v4a != v4b)
        return v4a ? -1 : 1;
    int c = memcmp(a->net, b->net, sizeof a->net);
    return c ? c : (int)a->plen - (int)b->plen;
}

size_t ipblocker_banfile_size(size_t n) { return sizeof ipblocker_banfile_header + n * IPB_BANFILE_ENTRY_MAX; }

size_t ipblocker_banfile_format(ipblocker_ban_key *keys, size_t n, char *buf, size_t cap)
{
    if (cap < ipblocker_banfile_size(n))
        return 0;
    qsort(keys, n, sizeof *keys, ipblocker_ban_key_cmp);
    size_t len = sizeof ipblocker_banfile_header - 1;
    memcpy(buf, ipblocker_banfile_header, len);
    for (size_t i = 0; i < n; i++) {
        char txt[IPB_BANFILE_ENTRY_MAX];
        size_t k = strlen(ipblocker_ban_str(&keys[i], txt, sizeof txt - 1));
        txt[k++] = '\n';
        memcpy(buf + len, txt, k);
        len += k;
    }
    buf[len] = '\0';
    return len;
}
