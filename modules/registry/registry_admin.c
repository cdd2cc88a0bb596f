/* registry_admin.c — the admin commands `peer <id>` and `peers`: who is
 * online, and one id in detail. Both only read the table: no hook fires, no
 * cold peer is warmed, nothing is allocated.
 *
 * "online" is the rule OnlineRequest answers with (nat-test: a memory
 * lookup, for which a cold peer does not exist, then rdv_peer_info.online):
 * not cold, and inside the online window now — registry_online_at(), the
 * same test registry_is_online() makes. A peer whose window passed but that
 * the sweep has not reached yet is offline here too.
 *
 * Ids are bytes a client chose: they are printed with every byte <= 0x20,
 * 0x7f and '\' as \xNN, so an id cannot break the one-line-per-peer output
 * (or forge lines), and the same \xNN form is accepted back in arguments. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include <rdv/wire.h>

#include "registry.h"

/* Lines per `peers` call. */
#define REGISTRY_PAGE 100
/* An id printed with every byte escaped, and its NUL. */
#define REGISTRY_ID_TEXT RDV_WORD_CAP(REGISTRY_ID_CAP)

static const char registry_peer_usage[] = "usage: peer <id>\n";
static const char registry_peers_usage[] = "usage: peers [online|all] [<id-prefix>|- [<after-id>]]\n";

/* ------------------------------------------------------------------ ids as text */
/* Ids are peer-chosen bytes: printed and parsed as console words (rdv/wire.h). */
static const char *registry_id_text(const char *id, size_t n, char *buf)
{
    return rdv_word_escape(id, n, buf, REGISTRY_ID_TEXT);
}

/* ------------------------------------------------------------------ one peer */
static bool registry_admin_online(const registry *reg, const registry_peer *p, uint64_t now)
{
    return !(p->flags & REG_F_COLD) && registry_online_at(reg, p, now);
}

/* socket_addr as text; port 0 = never registered since start ("none"). */
static const char *registry_addr_text(const registry_peer *p, char *buf, size_t len)
{
    if (!p->addr_port) {
        snprintf(buf, len, "none");
        return buf;
    }
    rdv_addr a;
    rdv_ip_unpack(p->addr_ip, p->addr_port, &a); /* ::ffff:a.b.c.d comes back as IPv4 */
    return rdv_addr_str(&a, buf, len);
}

static void registry_peer_cmd(void *ud, int argc, char **argv, rdv_buf *out)
{
    registry *reg = ud;
    const rdv_core_api *api = reg->api;
    char id[REGISTRY_ID_CAP + 1], text[REGISTRY_ID_TEXT], addr[RDV_ADDR_STRLEN];
    long n;
    if (argc != 2 || (n = rdv_word_unescape(argv[1], id, REGISTRY_ID_CAP)) <= 0) {
        api->out(out, "%s", registry_peer_usage);
        return;
    }
    registry_peer *p = registry_find(reg, id, (size_t)n);
    registry_id_text(id, (size_t)n, text);
    if (!p) {
        api->out(out, "no peer %s\n", text);
        return;
    }
    uint64_t now = api->now_ms(reg->core);
    bool cold = p->flags & REG_F_COLD;
    api->out(out, "id: %s\n", text);
    api->out(out, "status: %s\n", registry_admin_online(reg, p, now) ? "online" : "offline");
    if (p->last_reg_ms && !cold)
        api->out(out, "last registration: %llus ago\n", (unsigned long long)registry_secs(now, p->last_reg_ms));
    else
        api->out(out, "last registration: never since start\n");
    api->out(out, "address: %s\n", registry_addr_text(p, addr, sizeof addr));
    if (p->pk_len) {
        char b64[sodium_base64_ENCODED_LEN(REGISTRY_PK_CAP, sodium_base64_VARIANT_ORIGINAL)];
        sodium_bin2base64(b64, sizeof b64, registry_peer_pk(p), p->pk_len, sodium_base64_VARIANT_ORIGINAL);
        api->out(out, "public key: %u bytes %s\n", (unsigned)p->pk_len, b64);
    } else {
        api->out(out, "public key: none\n");
    }
    /* The uuid identifies the device: say only whether there is one. */
    api->out(out, "uuid: %s\n", p->uuid_len ? "stored" : "none");
    registry_stream *b = registry_stream_by_id(reg, id, (size_t)n);
    if (!b)
        api->out(out, "stream: no\n");
    else if (b->own)
        api->out(out, "stream: %s connection %llu (registered on it)\n", b->tcp ? "tcp" : "websocket",
                 (unsigned long long)b->conn);
    else
        api->out(out, "stream: connection %llu (bound by another module)\n", (unsigned long long)b->conn);
    api->out(out, "cold: %s\n", cold ? "yes (loaded from storage, not seen since start)" : "no");
}

/* ------------------------------------------------------------------ listing */
/* The page is the REGISTRY_PAGE smallest matching ids greater than the
 * cursor. Sorting every peer per call would be O(n log n) time and O(n)
 * memory on the loop (1 000 000 peers: an 8 MB array and ~20 M compares);
 * instead one pass keeps the best REGISTRY_PAGE in a max-heap on the stack
 * (the largest kept id on top, replaced when a smaller one comes):
 * O(n log REGISTRY_PAGE) time, no allocation. Paging is by cursor (the last
 * id shown) rather than by offset: an offset k would need the k + 100
 * smallest ids kept (memory growing with k), and a cursor keeps pages
 * stable while peers come and go. `online` walks only the online list. */
typedef struct registry_page {
    const registry_peer *v[REGISTRY_PAGE];
    size_t n;
} registry_page;

static int registry_id_cmp(const registry_peer *a, const registry_peer *b)
{
    return strcmp(registry_peer_id(a), registry_peer_id(b)); /* bytes, unsigned */
}

static void registry_heap_down(registry_page *h, size_t i, size_t n)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && registry_id_cmp(h->v[l], h->v[m]) > 0)
            m = l;
        if (r < n && registry_id_cmp(h->v[r], h->v[m]) > 0)
            m = r;
        if (m == i)
            return;
        const registry_peer *t = h->v[i];
        h->v[i] = h->v[m], h->v[m] = t;
        i = m;
    }
}

static void registry_heap_offer(registry_page *h, const registry_peer *p)
{
    if (h->n < REGISTRY_PAGE) {
        size_t i = h->n++;
        h->v[i] = p;
        while (i && registry_id_cmp(h->v[(i - 1) / 2], h->v[i]) < 0) {
            const registry_peer *t = h->v[i];
            h->v[i] = h->v[(i - 1) / 2], h->v[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
    } else if (registry_id_cmp(p, h->v[0]) < 0) {
        h->v[0] = p;
        registry_heap_down(h, 0, h->n);
    }
}

/* Heap to ascending order, in place. */
static void registry_heap_sort(registry_page *h)
{
    for (size_t n = h->n; n > 1; n--) {
        const registry_peer *t = h->v[0];
        h->v[0] = h->v[n - 1], h->v[n - 1] = t;
        registry_heap_down(h, 0, n - 1);
    }
}

typedef struct registry_query {
    bool all;
    const char *prefix, *after; /* NULL = none */
    size_t prefix_len;
    uint64_t now;
    size_t matched, online, listed; /* listed: matched after the cursor */
    registry_page page;
} registry_query;

static void registry_query_visit(const registry *reg, registry_query *q, const registry_peer *p)
{
    bool online = registry_admin_online(reg, p, q->now);
    if (!q->all && !online)
        return;
    if (q->prefix_len && (p->id_len < q->prefix_len || memcmp(p->data, q->prefix, q->prefix_len) != 0))
        return;
    q->matched++;
    q->online += online;
    if (q->after && strcmp(registry_peer_id(p), q->after) <= 0)
        return;
    q->listed++;
    registry_heap_offer(&q->page, p);
}

static void registry_peers_cmd(void *ud, int argc, char **argv, rdv_buf *out)
{
    registry *reg = ud;
    const rdv_core_api *api = reg->api;
    registry_query q = { .now = api->now_ms(reg->core) };
    char prefix[REGISTRY_ID_CAP + 1], after[REGISTRY_ID_CAP + 1];
    int i = 1;
    if (i < argc && (strcmp(argv[i], "online") == 0 || strcmp(argv[i], "all") == 0))
        q.all = argv[i++][0] == 'a';
    /* One word left is a prefix (ids are mostly digits, so a number cannot
     * also mean a page); "-" = any id, to give a cursor without a prefix. */
    if (argc - i > 2) {
        api->out(out, "%s", registry_peers_usage);
        return;
    }
    if (i < argc && strcmp(argv[i], "-") != 0) {
        long n = rdv_word_unescape(argv[i], prefix, REGISTRY_ID_CAP);
        if (n < 0) {
            api->out(out, "%s", registry_peers_usage);
            return;
        }
        q.prefix = prefix, q.prefix_len = (size_t)n;
    }
    if (i + 1 < argc) {
        if (rdv_word_unescape(argv[i + 1], after, REGISTRY_ID_CAP) <= 0) {
            api->out(out, "%s", registry_peers_usage);
            return;
        }
        q.after = after;
    }

    if (q.all) {
        for (size_t s = 0; s < reg->peers.cap; s++)
            if (reg->peers.slots[s].h)
                registry_query_visit(reg, &q, reg->peers.slots[s].p);
    } else {
        for (const registry_peer *p = reg->online; p; p = p->next)
            registry_query_visit(reg, &q, p);
    }
    registry_heap_sort(&q.page);

    char text[REGISTRY_ID_TEXT], addr[RDV_ADDR_STRLEN];
    api->out(out, "%zu online, %zu matched (%s", q.online, q.matched, q.all ? "all" : "online");
    if (q.prefix)
        api->out(out, ", prefix %s", registry_id_text(q.prefix, q.prefix_len, text));
    if (q.after)
        api->out(out, ", after %s", registry_id_text(q.after, strlen(q.after), text));
    api->out(out, ")\n");
    for (size_t k = 0; k < q.page.n; k++) {
        const registry_peer *p = q.page.v[k];
        bool online = registry_admin_online(reg, p, q.now);
        api->out(out, "%s %s ", registry_id_text(p->data, p->id_len, text), online ? "online" : "offline");
        if (p->last_reg_ms && !(p->flags & REG_F_COLD))
            api->out(out, "%llus", (unsigned long long)registry_secs(q.now, p->last_reg_ms));
        else
            api->out(out, "never");
        api->out(out, " %s\n", registry_addr_text(p, addr, sizeof addr));
    }
    if (q.listed > q.page.n) {
        const registry_peer *last = q.page.v[q.page.n - 1];
        api->out(out, "next page: peers %s ", q.all ? "all" : "online");
        if (q.prefix)
            api->out(out, "%s ", registry_id_text(q.prefix, q.prefix_len, text));
        else
            api->out(out, "- ");
        api->out(out, "%s\n", registry_id_text(last->data, last->id_len, text));
    }
}

int registry_admin_register(registry *reg)
{
    int r = reg->api->admin_command(reg->core, "peer",
                                    "<id>  one peer: online, last registration, address, key, stream",
                                    registry_peer_cmd, reg);
    if (r < 0)
        return r;
    return reg->api->admin_command(reg->core, "peers",
                                   "[online|all] [<id-prefix>|- [<after-id>]]  peers by id, 100 a call",
                                   registry_peers_cmd, reg);
}
