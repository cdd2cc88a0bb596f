/* fake_services.c — see fake_services.h. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fake_services.h"

rt_fixture rt;

static void *dup_bytes(const void *p, size_t n)
{
    void *d = malloc(n ? n : 1);
    cr_assert_not_null(d);
    if (n)
        memcpy(d, p, n);
    return d;
}

/* ------------------------------------------------------------------ storage */
static void fake_row_set(fake_row *r, const char *id, const void *uuid, size_t uuid_len, const void *pk,
                         size_t pk_len, const char *info_ip, bool set_uuid)
{
    free(r->id);
    r->id = strdup(id);
    if (set_uuid) {
        free(r->uuid);
        r->uuid = dup_bytes(uuid, uuid_len);
        r->uuid_len = uuid_len;
    }
    free(r->pk);
    r->pk = dup_bytes(pk, pk_len);
    r->pk_len = pk_len;
    free(r->info_ip);
    r->info_ip = strdup(info_ip ? info_ip : "");
}

static fake_row *fake_storage_append(fake_storage *fs)
{
    fake_row *n = realloc(fs->rows, (fs->nrows + 1) * sizeof *n);
    cr_assert_not_null(n);
    fs->rows = n;
    memset(&n[fs->nrows], 0, sizeof n[0]);
    return &n[fs->nrows++];
}

void fake_storage_add(fake_storage *fs, const char *id, const void *uuid, size_t uuid_len, const void *pk,
                      size_t pk_len, const char *info_ip)
{
    fake_row *r = fake_storage_append(fs);
    for (size_t i = 0; i < 16; i++)
        r->guid[i] = (uint8_t)(0xa0 + fs->nrows + i);
    fake_row_set(r, id, uuid, uuid_len, pk, pk_len, info_ip, true);
}

const fake_row *fake_storage_find(const fake_storage *fs, const char *id)
{
    for (size_t i = 0; i < fs->nrows; i++)
        if (strcmp(fs->rows[i].id, id) == 0)
            return &fs->rows[i];
    return NULL;
}

static long fs_load_all(void *self, rdv_storage_row_fn fn, void *ud)
{
    fake_storage *fs = self;
    if (fs->load_result < 0)
        return fs->load_result;
    for (size_t i = 0; i < fs->nrows; i++) {
        const fake_row *r = &fs->rows[i];
        rdv_peer_row row = { .id = r->id, .uuid = r->uuid, .uuid_len = r->uuid_len, .pk = r->pk,
                             .pk_len = r->pk_len, .info_ip = r->info_ip };
        memcpy(row.guid, r->guid, 16);
        fn(ud, &row);
    }
    return (long)fs->nrows;
}

/* Like storage-sqlite: insert = new row with the caller's guid (a guid that
 * is stored is updated); update by guid of id, pk and info (uuid never
 * changes, rendezvous.md §13.3). */
static int fs_put(void *self, const rdv_peer_row *row, bool insert)
{
    fake_storage *fs = self;
    if (fs->put_result < 0)
        return fs->put_result;
    if (fs->put_limit && fs->puts >= fs->put_limit)
        return -ENOBUFS;
    if (fs->uuid_cap && row->uuid_len > fs->uuid_cap)
        return -EINVAL;
    fs->puts++;
    fs->last_insert = insert;
    size_t i = 0;
    while (i < fs->nrows && memcmp(fs->rows[i].guid, row->guid, 16) != 0)
        i++;
    if (insert && i == fs->nrows) {
        fs->inserts++;
        fake_row *r = fake_storage_append(fs);
        memcpy(r->guid, row->guid, 16);
        fake_row_set(r, row->id, row->uuid, row->uuid_len, row->pk, row->pk_len, row->info_ip, true);
    } else {
        fs->updates += !insert;
        fs->inserts += insert;
        cr_assert_lt(i, fs->nrows, "update of a guid that was never inserted (%s)", row->id);
        fake_row_set(&fs->rows[i], row->id, NULL, 0, row->pk, row->pk_len, row->info_ip, false);
    }
    if (fs->ndone < 64)
        fs->done_ids[fs->ndone++] = strdup(row->id);
    return 0;
}

static void fs_on_done(void *self, rdv_storage_done_fn fn, void *ud)
{
    fake_storage *fs = self;
    fs->done = fn, fs->done_ud = ud;
}

static void fs_on_lost(void *self, void (*fn)(void *ud), void *ud)
{
    fake_storage *fs = self;
    fs->lost = fn, fs->lost_ud = ud;
}

static size_t fs_pending(void *self) { return ((fake_storage *)self)->ndone; }

static int fs_flush(void *self, uint64_t ms)
{
    (void)ms;
    fake_storage_complete(self);
    return 0;
}

size_t fake_storage_complete(fake_storage *fs)
{
    size_t n = fs->ndone;
    for (size_t i = 0; i < n; i++) {
        if (fs->done)
            fs->done(fs->done_ud, fs->done_ids[i], fs->done_status);
        free(fs->done_ids[i]);
    }
    fs->ndone = 0;
    return n;
}

static const rdv_storage_api fs_api = {
    .load_all = fs_load_all, .put = fs_put, .on_done = fs_on_done, .pending = fs_pending, .flush = fs_flush,
    .on_lost = fs_on_lost,
};

static void fake_row_free(fake_row *r)
{
    free(r->id);
    free(r->uuid);
    free(r->pk);
    free(r->info_ip);
}

void fake_storage_lose(fake_storage *fs)
{
    for (size_t i = 0; i < fs->nrows; i++)
        fake_row_free(&fs->rows[i]);
    fs->nrows = 0;
    cr_assert_not_null(fs->lost, "the registry did not ask to be told");
    fs->lost(fs->lost_ud);
}

static void fake_storage_free(fake_storage *fs)
{
    for (size_t i = 0; i < fs->nrows; i++)
        fake_row_free(&fs->rows[i]);
    free(fs->rows);
    for (size_t i = 0; i < fs->ndone; i++)
        free(fs->done_ids[i]);
    memset(fs, 0, sizeof *fs);
}

/* ------------------------------------------------------------------ blocklist */
static bool fb_allowed(void *self, const rdv_addr *ip, const char *id)
{
    fake_blocklist *bl = self;
    bl->calls++;
    bl->last_ip = *ip;
    snprintf(bl->last_id, sizeof bl->last_id, "%s", id);
    return bl->allow;
}

static const rdv_blocklist_api fb_api = { .register_pk_allowed = fb_allowed };

/* ------------------------------------------------------------------ fixture */
static void on_online(void *ud, const void *arg)
{
    (void)ud;
    const rdv_peer_event *ev = arg;
    rt.online_hooks++;
    snprintf(rt.last_hook_id, sizeof rt.last_hook_id, "%s", ev->id);
    rt.last_hook_addr = *ev->addr;
}

static void on_offline(void *ud, const void *arg)
{
    (void)ud;
    const rdv_peer_event *ev = arg;
    rt.offline_hooks++;
    snprintf(rt.last_hook_id, sizeof rt.last_hook_id, "%s", ev->id);
    rt.last_hook_addr = *ev->addr;
}

void rt_begin(bool with_blocklist)
{
    memset(&rt, 0, sizeof rt);
    rt.fc = fc_new();
    rt.mod = rdv_module_get();
    rt.bl.allow = true;
    rdv_core *h = fc_handle(rt.fc, "storage-fake");
    cr_assert_eq(h->api->service_publish(h, RDV_SVC_STORAGE, RDV_SVC_STORAGE_VERSION, &fs_api, &rt.fs), 0);
    if (with_blocklist) {
        h = fc_handle(rt.fc, "blocker-fake");
        cr_assert_eq(h->api->service_publish(h, RDV_SVC_BLOCKLIST, RDV_SVC_BLOCKLIST_VERSION, &fb_api, &rt.bl), 0);
    }
    h = fc_handle(rt.fc, "hook-watcher");
    h->api->hook_add(h, RDV_HOOK_PEER_ONLINE, 0, on_online, NULL);
    h->api->hook_add(h, RDV_HOOK_PEER_OFFLINE, 0, on_offline, NULL);
    fc_listener(rt.fc, "main", RDV_TR_UDP, 21116);
}

int rt_load(const char *conf)
{
    int r = fc_load(rt.fc, rt.mod, conf, &rt.st);
    if (r == 0) {
        rdv_core *h = fc_handle(rt.fc, "hook-watcher");
        rt.api = h->api->service_get(h, RDV_SVC_REGISTRY, RDV_SVC_REGISTRY_VERSION, &rt.self);
        cr_assert_not_null(rt.api);
    }
    return r;
}

void rt_setup_conf(const char *conf)
{
    rt_begin(true);
    cr_assert_eq(rt_load(conf), 0);
}

void rt_setup(void) { rt_setup_conf(NULL); }

void rt_restart(const char *conf)
{
    fc_unload(rt.fc, rt.mod, rt.st);
    rt.st = NULL, rt.api = NULL;
    fc_clear_sent(rt.fc);
    cr_assert_eq(rt_load(conf), 0);
}

void rt_teardown(void)
{
    fc_free(rt.fc);
    fake_storage_free(&rt.fs);
}

/* ------------------------------------------------------------------ clients */
int rt_reg_peer(const char *id, int serial, const char *from)
{
    Hbb__RegisterPeer rp = HBB__REGISTER_PEER__INIT;
    rp.id = (char *)id;
    rp.serial = serial;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER;
    m.register_peer = &rp;
    rdv_addr a = fc_addr(from);
    cr_assert_eq(fc_udp(rt.fc, "main", &a, &m), RDV_OK);
    const fc_sent *s = fc_next_sent(rt.fc);
    if (!s)
        return -1;
    cr_assert_eq(s->kind, FC_SENT_UDP);
    cr_assert(rdv_addr_equal(&s->to, &a), "reply must go to the source");
    cr_assert_not_null(s->msg);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER_RESPONSE);
    return s->msg->register_peer_response->request_pk ? 1 : 0;
}

int rt_reg_pk_bin(const char *id, const void *uuid, size_t uuid_len, const void *pk, size_t pk_len, const char *from)
{
    Hbb__RegisterPk rk = HBB__REGISTER_PK__INIT;
    rk.id = (char *)id;
    rk.uuid.data = (uint8_t *)uuid, rk.uuid.len = uuid_len;
    rk.pk.data = (uint8_t *)pk, rk.pk.len = pk_len;
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK;
    m.register_pk = &rk;
    rdv_addr a = fc_addr(from);
    cr_assert_eq(fc_udp(rt.fc, "main", &a, &m), RDV_OK);
    const fc_sent *s = fc_next_sent(rt.fc);
    if (!s)
        return -1;
    cr_assert_eq(s->kind, FC_SENT_UDP);
    cr_assert(rdv_addr_equal(&s->to, &a));
    cr_assert_not_null(s->msg);
    cr_assert_eq(s->msg->union_case, HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PK_RESPONSE);
    cr_assert_eq(s->msg->register_pk_response->keep_alive, 0);
    return (int)s->msg->register_pk_response->result;
}

int rt_reg_pk(const char *id, const char *uuid, const char *pk, const char *from)
{
    return rt_reg_pk_bin(id, uuid, strlen(uuid), pk, strlen(pk), from);
}

void rt_reg(const char *id, const char *uuid, const char *pk, const char *from)
{
    cr_assert_eq(rt_reg_pk(id, uuid, pk, from), HBB__REGISTER_PK_RESPONSE__RESULT__OK, "RegisterPk %s", id);
    cr_assert_eq(rt_reg_peer(id, 0, from), 0, "RegisterPeer %s after OK", id);
}

int rt_lookup(const char *id, rdv_lookup how, rdv_peer_info *out)
{
    return rt.api->lookup(rt.self, id, how, out);
}

bool rt_online(const char *id)
{
    rdv_peer_info pi;
    return rt_lookup(id, RDV_LOOKUP_MEMORY, &pi) == 0 && pi.online;
}

uint64_t rt_counter(const char *name)
{
    char full[128];
    snprintf(full, sizeof full, "registry.%s", name);
    return fc_counter(rt.fc, full);
}

uint64_t rt_gauge(const char *name)
{
    char full[128];
    snprintf(full, sizeof full, "registry.%s", name);
    return fc_gauge(rt.fc, full);
}
