/* relay_lists.c — blacklist.txt / blocklist.txt (relay.md §7): sets of
 * exact IP texts, bounded, read from files and edited by console commands.
 *
 * Out of memory: an entry whose copy or table slot cannot be allocated is
 * refused (-ENOMEM) with the set as it was; a list file is built into a
 * fresh set, so a reload that runs out keeps the list in use, like one
 * that cannot read its file. Also home of uthash's allocator hook (relay.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay.h"

/* Larger list files are refused whole (a mistake, not a list). */
#define RELAY_LIST_FILE_MAX (64u << 20)

/* ---- uthash's allocator and its test hook (rdv/uthash.h) */
RDV_UTHASH_HOOK_DEFINE()

char *relay_ip_text(const rdv_addr *a, char *buf, size_t len)
{
    /* rdv_addr is normalised: an IPv4-mapped peer is already AF_INET, and
     * inet_ntop prints IPv6 in the RFC 5952 form upstream's Display uses. */
    return rdv_addr_ip_str(a, buf, len);
}

bool relay_set_has(const relay_set *s, const char *key)
{
    relay_set_entry *e = NULL;
    HASH_FIND_STR(s->head, key, e);
    return e != NULL;
}

int relay_set_add(relay_set *s, const char *key, size_t len)
{
    relay_set_entry *e = NULL;
    HASH_FIND(hh, s->head, key, len, e);
    if (e)
        return 0;
    if (s->n >= s->max)
        return -ENOSPC;
    e = malloc(sizeof *e + len + 1);
    if (!e)
        return -ENOMEM;
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    HASH_ADD_KEYPTR(hh, s->head, e->key, len, e);
    if (!e->hh.tbl) { /* uthash rolled the add back: the set is as it was */
        free(e);
        return -ENOMEM;
    }
    s->n++;
    return 1;
}

bool relay_set_del(relay_set *s, const char *key)
{
    relay_set_entry *e = NULL;
    HASH_FIND_STR(s->head, key, e);
    if (!e)
        return false;
    HASH_DEL(s->head, e);
    free(e);
    s->n--;
    return true;
}

void relay_set_clear(relay_set *s)
{
    relay_set_entry *e, *tmp;
    HASH_ITER(hh, s->head, e, tmp) {
        HASH_DEL(s->head, e);
        free(e);
    }
    s->n = 0;
}

static bool relay_is_trim_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Lines split on '\n', trimmed (this drops a CR), entry = text before the
 * first space; the rest of the line is a comment. Blank entries can never
 * match an address and are not stored. */
long relay_set_parse(relay_set *s, const char *text, size_t n, size_t *dropped)
{
    relay_set_clear(s);
    *dropped = 0;
    if (!rdv_utf8_valid((const uint8_t *)text, n))
        return -EILSEQ; /* upstream reads the file as a string: no entries */
    const char *p = text, *end = text + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *b = p, *e = nl ? nl : end;
        p = nl ? nl + 1 : end;
        while (b < e && relay_is_trim_space(*b))
            b++;
        while (e > b && relay_is_trim_space(e[-1]))
            e--;
        const char *sp = memchr(b, ' ', (size_t)(e - b));
        if (sp)
            e = sp;
        if (b == e || memchr(b, '\0', (size_t)(e - b)))
            continue;
        int r = relay_set_add(s, b, (size_t)(e - b));
        if (r == -ENOSPC)
            (*dropped)++;
        else if (r < 0)
            return r;
    }
    return (long)s->n;
}

/* Into a fresh set, swapped in only once the whole file was read: a
 * reload that races an editor (file missing or half written and not UTF-8)
 * must not empty the blocklist. */
long relay_set_load(relay_set *s, const char *path, size_t *dropped)
{
    *dropped = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    if ((uint64_t)st.st_size > RELAY_LIST_FILE_MAX) {
        close(fd);
        return -EFBIG;
    }
    size_t cap = (size_t)st.st_size, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    int err = 0;
    while (len < cap) {
        ssize_t k = read(fd, buf + len, cap - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            err = -errno;
        if (k <= 0)
            break; /* 0: the file shrank meanwhile; what was read is the file */
        len += (size_t)k;
    }
    close(fd);
    relay_set fresh = { .name = s->name, .max = s->max };
    long r = err ? err : relay_set_parse(&fresh, buf, len, dropped);
    free(buf);
    if (r < 0) {
        relay_set_clear(&fresh);
        *dropped = 0;
        return r;
    }
    relay_set_clear(s);
    s->head = fresh.head;
    s->n = fresh.n;
    return r;
}

bool relay_blocked(const relay *r, const rdv_addr *a)
{
    char ip[INET6_ADDRSTRLEN];
    return relay_set_has(&r->block, relay_ip_text(a, ip, sizeof ip));
}
