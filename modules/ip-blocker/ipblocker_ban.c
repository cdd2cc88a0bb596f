/* ipblocker_ban.c — the operator ban list: IPs and CIDRs from the `ban`
 * setting (reloadable) and from the admin commands `ban` / `unban` / `bans`.
 *
 * Enforced in the ACCESS phase, which the core runs for every accepted
 * connection (any listener, so relay and WebSocket too) and every decoded
 * message (UDP datagrams included): a banned source is refused, dropped or
 * closed. Connections already open when their source gets banned are
 * closed at once (their ids are tracked through the conn.open / conn.close
 * hooks; their current address comes from conn_info).
 *
 * Lookup: one hash probe per prefix length in use (a masked-address table),
 * so the cost does not grow with the number of bans. Admin bans are also
 * kept in admin_ban_file (ipblocker_banwriter.c): a `ban` / `unban` that
 * changes the set of admin bans has the file rewritten. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdv/wire.h>

#include "ipblocker.h"

/* ------------------------------------------------------------------ addresses */
void ipblocker_mask(const uint8_t ip[16], unsigned plen, uint8_t out[16])
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned bits = plen >= 8 * (i + 1) ? 8 : plen > 8 * i ? plen - 8 * i : 0;
        out[i] = (uint8_t)(ip[i] & (uint8_t)(0xff00u >> bits));
    }
}

bool ipblocker_parse_ban(const char *text, ipblocker_ban_key *key)
{
    char buf[64];
    size_t n = strlen(text);
    if (!n || n >= sizeof buf)
        return false;
    memcpy(buf, text, n + 1);
    char *slash = strchr(buf, '/');
    long plen = -1;
    if (slash) {
        *slash = '\0';
        char *end;
        if (slash[1] < '0' || slash[1] > '9')
            return false;
        plen = strtol(slash + 1, &end, 10);
        if (*end)
            return false;
    }
    uint8_t ip[16], raw[4];
    bool v4 = inet_pton(AF_INET, buf, raw) == 1;
    if (v4) { /* an IPv4 prefix lives in the mapped part of the 128-bit space */
        if (plen > 32)
            return false;
        rdv_ip_parse(buf, ip);
        plen = plen < 0 ? 128 : plen + 96;
    } else if (inet_pton(AF_INET6, buf, ip) != 1 || plen > 128) {
        return false;
    } else if (plen < 0) {
        plen = 128;
    }
    memset(key, 0, sizeof *key);
    key->plen = (uint8_t)plen;
    ipblocker_mask(ip, (unsigned)plen, key->net);
    if (!v4 && plen >= 96) {
        /* Sources are normalised (::ffff:a.b.c.d and ::a.b.c.d are IPv4),
         * and so is a network that lies in that space; after masking, so
         * that its printed form parses back to it ("::1/100" is 0.0.0.0/4,
         * as "::/100" is). A shorter prefix is the IPv6 network as written
         * ("::/90", not ::ffc0:0:0/90; found by fuzz_banfile). */
        rdv_addr a;
        rdv_addr_v6(&a, key->net, 0);
        rdv_ip_pack(&a, key->net);
    }
    return true;
}

char *ipblocker_ban_str(const ipblocker_ban_key *key, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN];
    bool v4 = rdv_ip_is_v4(key->net) && key->plen >= 96;
    if (v4)
        inet_ntop(AF_INET, key->net + 12, ip, sizeof ip);
    else
        inet_ntop(AF_INET6, key->net, ip, sizeof ip);
    if (key->plen == 128)
        snprintf(buf, len, "%s", ip);
    else
        snprintf(buf, len, "%s/%u", ip, v4 ? key->plen - 96u : key->plen);
    return buf;
}

/* ------------------------------------------------------------------ the set */
static ipblocker_ban *ipblocker_ban_find(ipblocker *b, const ipblocker_ban_key *key)
{
    ipblocker_ban *ban = NULL;
    HASH_FIND(hh, b->bans, key, sizeof *key, ban);
    return ban;
}

static ipblocker_ban *ipblocker_ban_match(ipblocker *b, const uint8_t ip[16])
{
    for (int plen = 128; plen >= 0; plen--) {
        if (!b->plen_count[plen])
            continue;
        ipblocker_ban_key key = { .plen = (uint8_t)plen };
        ipblocker_mask(ip, (unsigned)plen, key.net);
        ipblocker_ban *ban = ipblocker_ban_find(b, &key);
        if (ban)
            return ban;
    }
    return NULL;
}

static void ipblocker_ban_del(ipblocker *b, ipblocker_ban *ban)
{
    HASH_DELETE(hh, b->bans, ban);
    b->plen_count[ban->key.plen]--;
    b->nbans--;
    free(ban);
}

int ipblocker_ban_add(ipblocker *b, const ipblocker_ban_key *key, uint8_t src, bool *added)
{
    ipblocker_ban *ban = ipblocker_ban_find(b, key);
    *added = false;
    if (ban) {
        ban->src |= src;
        return 0;
    }
    if (b->nbans >= (size_t)b->cfg->ban_max)
        return -ENOSPC;
    if (!(ban = calloc(1, sizeof *ban)))
        return -ENOMEM;
    ban->key = *key;
    ban->src = src;
    HASH_ADD(hh, b->bans, key, sizeof ban->key, ban);
    if (!ban->hh.tbl) {
        free(ban);
        return -ENOMEM;
    }
    b->plen_count[key->plen]++;
    b->nbans++;
    *added = true;
    return 0;
}

/* Close every tracked connection whose source is now banned. */
static size_t ipblocker_close_banned(ipblocker *b)
{
    if (!b->nconns || !b->nbans)
        return 0;
    rdv_conn_id *ids = malloc(b->nconns * sizeof *ids);
    if (!ids)
        return 0;
    size_t n = 0;
    ipblocker_conn *c, *tmp;
    HASH_ITER(hh, b->conns, c, tmp) {
        /* conn_info gives the address the connection is attributed to now
         * (a WebSocket module may have set X-Real-IP's). */
        rdv_conn_info info;
        if (b->api->conn_info(b->core, c->id, &info) < 0)
            continue;
        uint8_t ip[16];
        rdv_ip_pack(&info.peer, ip);
        ipblocker_ban *ban = ipblocker_ban_match(b, ip);
        if (ban) {
            ban->hits++;
            ids[n++] = c->id;
        }
    }
    /* Closing runs the conn.close hook, which edits the table: close after
     * the walk. */
    for (size_t i = 0; i < n; i++)
        b->api->conn_close(b->core, ids[i], false);
    free(ids);
    *b->st.banned_closed += n;
    return n;
}

/* Two phases so a reload is applied whole or not at all: mark every listed
 * ban (inserting missing ones as pending), then either commit (configured =
 * exactly the listed ones; entries left with no source go) or, if the
 * result would exceed ban_max, drop the pending ones again. */
int ipblocker_apply_bans(ipblocker *b, const rdv_strlist *list)
{
    int r = 0;
    for (size_t i = 0; i < list->n && r == 0; i++) {
        ipblocker_ban_key key;
        if (!ipblocker_parse_ban(list->v[i], &key)) { /* validate() already refused these */
            r = -EINVAL;
            break;
        }
        ipblocker_ban *ban = ipblocker_ban_find(b, &key);
        if (ban) {
            ban->src |= IPB_BAN_LISTED;
        } else if (!(ban = calloc(1, sizeof *ban))) {
            r = -ENOMEM;
        } else {
            ban->key = key;
            ban->src = IPB_BAN_LISTED;
            HASH_ADD(hh, b->bans, key, sizeof ban->key, ban);
            if (!ban->hh.tbl) {
                free(ban);
                r = -ENOMEM;
                break;
            }
            b->plen_count[key.plen]++;
            b->nbans++;
        }
    }
    size_t kept = 0;
    ipblocker_ban *ban, *tmp;
    HASH_ITER(hh, b->bans, ban, tmp)
        kept += (ban->src & (IPB_BAN_ADMIN | IPB_BAN_LISTED)) != 0;
    if (r == 0 && kept > (size_t)b->cfg->ban_max)
        r = -ENOSPC;
    HASH_ITER(hh, b->bans, ban, tmp) {
        if (r < 0) /* roll back */
            ban->src &= (uint8_t)~IPB_BAN_LISTED;
        else if (ban->src & IPB_BAN_LISTED)
            ban->src = (uint8_t)((ban->src & IPB_BAN_ADMIN) | IPB_BAN_CONF);
        else
            ban->src &= (uint8_t)~IPB_BAN_CONF;
        if (!ban->src)
            ipblocker_ban_del(b, ban);
    }
    if (r == 0)
        ipblocker_close_banned(b);
    return r;
}

void ipblocker_bans_free(ipblocker *b)
{
    ipblocker_ban *ban, *tmp;
    HASH_ITER(hh, b->bans, ban, tmp)
        ipblocker_ban_del(b, ban);
    ipblocker_conn *c, *ctmp;
    HASH_ITER(hh, b->conns, c, ctmp) {
        HASH_DELETE(hh, b->conns, c);
        free(c);
    }
    b->nconns = 0;
}

/* ------------------------------------------------------------------ ACCESS */
int ipblocker_access(void *state, const rdv_msg_ctx *ctx, const void *msg)
{
    ipblocker *b = state;
    if (!b->nbans)
        return RDV_OK;
    uint8_t ip[16];
    rdv_ip_pack(ctx->peer, ip);
    ipblocker_ban *ban = ipblocker_ban_match(b, ip);
    if (!ban)
        return RDV_OK;
    ban->hits++;
    if (msg)
        (*b->st.banned_msgs)++;
    else
        (*b->st.banned_conns)++;
    char a[RDV_ADDR_STRLEN];
    RDV_LOG_RL(b->core, RDV_LOG_DEBUG, "banned source %s: %s", rdv_addr_str(ctx->peer, a, sizeof a),
               msg ? "message dropped" : "connection refused");
    /* At accept this refuses the connection; for a datagram it drops it; on
     * a stream it closes the connection. */
    return RDV_CLOSE;
}

void ipblocker_on_conn_open(void *ud, const void *arg)
{
    ipblocker *b = ud;
    const rdv_conn_event *ev = arg;
    ipblocker_conn *c = calloc(1, sizeof *c);
    if (!c) {
        (*b->st.oom)++;
        return;
    }
    c->id = ev->id;
    HASH_ADD(hh, b->conns, id, sizeof c->id, c);
    if (!c->hh.tbl) {
        (*b->st.oom)++;
        free(c);
        return;
    }
    b->nconns++;
}

void ipblocker_on_conn_close(void *ud, const void *arg)
{
    ipblocker *b = ud;
    const rdv_conn_event *ev = arg;
    ipblocker_conn *c = NULL;
    HASH_FIND(hh, b->conns, &ev->id, sizeof ev->id, c);
    if (!c)
        return;
    HASH_DELETE(hh, b->conns, c);
    free(c);
    b->nconns--;
}

/* ------------------------------------------------------------------ admin */
void ipblocker_ban_cmd(void *ud, int argc, char **argv, rdv_buf *out)
{
    ipblocker *b = ud;
    ipblocker_ban_key key;
    char txt[80];
    if (argc < 2 || !ipblocker_parse_ban(argv[1], &key)) {
        b->api->out(out, "usage: ban <ip|cidr>\n");
        return;
    }
    const ipblocker_ban *had = ipblocker_ban_find(b, &key);
    bool was_admin = had && (had->src & IPB_BAN_ADMIN), added;
    int r = ipblocker_ban_add(b, &key, IPB_BAN_ADMIN, &added);
    if (r == -ENOSPC) {
        b->api->out(out, "ban list full (ban_max = %lld)\n", (long long)b->cfg->ban_max);
        return;
    }
    if (r < 0) {
        b->api->out(out, "ban failed: %s\n", strerror(-r));
        return;
    }
    size_t closed = ipblocker_close_banned(b);
    ipblocker_ban_str(&key, txt, sizeof txt);
    RDV_NOTICE(b->core, "banned %s (admin), %zu connections closed", txt, closed);
    b->api->out(out, "banned %s, %zu connections closed\n", txt, closed);
    ipblocker_banfile_note(b, out); /* before this change's write: about the last one */
    if (!was_admin)
        ipblocker_banfile_changed(b);
}

void ipblocker_unban_cmd(void *ud, int argc, char **argv, rdv_buf *out)
{
    ipblocker *b = ud;
    ipblocker_ban_key key;
    char txt[80];
    if (argc < 2 || !ipblocker_parse_ban(argv[1], &key)) {
        b->api->out(out, "usage: unban <ip|cidr>\n");
        return;
    }
    ipblocker_ban_str(&key, txt, sizeof txt);
    ipblocker_ban *ban = ipblocker_ban_find(b, &key);
    if (!ban) {
        b->api->out(out, "not banned: %s\n", txt);
        return;
    }
    bool conf = ban->src & IPB_BAN_CONF, admin = ban->src & IPB_BAN_ADMIN;
    ipblocker_ban_del(b, ban);
    RDV_NOTICE(b->core, "unbanned %s (admin)", txt);
    b->api->out(out, "unbanned %s%s\n", txt, conf ? " (configured: back on the next reload)" : "");
    if (admin) { /* a configured-only ban is not in the file */
        ipblocker_banfile_note(b, out);
        ipblocker_banfile_changed(b);
    }
}

void ipblocker_bans_cmd(void *ud, int argc, char **argv, rdv_buf *out)
{
    ipblocker *b = ud;
    (void)argc, (void)argv;
    b->api->out(out, "%zu\n", b->nbans);
    ipblocker_ban *ban, *tmp;
    HASH_ITER(hh, b->bans, ban, tmp) {
        char txt[80];
        const char *src = ban->src == (IPB_BAN_CONF | IPB_BAN_ADMIN) ? "conf,admin"
                          : ban->src == IPB_BAN_CONF                 ? "conf"
                                                                     : "admin";
        b->api->out(out, "%s %s hits=%llu\n", ipblocker_ban_str(&ban->key, txt, sizeof txt), src,
                    (unsigned long long)ban->hits);
    }
}
