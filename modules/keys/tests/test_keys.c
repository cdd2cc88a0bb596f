/* test_keys.c — the keys module against the fake core (rendezvous.md
 * §3.1–§3.2, config-compat.md §3.4 / §5, wire.md §6.6–§6.7 vectors).
 * Every test works in its own temporary key directory. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "fakecore.h"
#include "rdv/svc/keys.h"

/* wire.md §6.6: the server key from seed 0x11 x 32. */
#define SEED11_FILE "ERERERERERERERERERERERERERERERERERERERERERHQSrIydCu0qzoTaL1GFeTm0CJKtxoBa6+FIKMyyXeHNw=="
#define SEED11_PK "0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="
/* The public RustDesk server's key (rendezvous.md §3.3): a valid key string
 * that is not ours. */
#define OTHER_PK "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw="

static fc_core *fc;
static const rdv_module *mod;
static void *st;
static char dir[256];
static char conf[1024];

static void setup(void)
{
    cr_assert_eq(sodium_init() < 0, 0);
    fc = fc_new();
    mod = rdv_module_get();
    strcpy(dir, "/tmp/rdv_keys_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    fc_free(fc);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(keys, .init = setup, .fini = teardown);

/* ---- helpers */
static const char *cfg_with(const char *key)
{
    snprintf(conf, sizeof conf, "key=\"%s\"\ndir=%s\n", key, dir);
    return conf;
}

static const rdv_keys_api *svc(void **self)
{
    rdv_core *h = fc_handle(fc, "registry");
    const rdv_keys_api *api = h->api->service_get(h, RDV_SVC_KEYS, RDV_SVC_KEYS_VERSION, self);
    cr_assert_not_null(api, "keys service not published");
    return api;
}

static char *path_in(const char *name)
{
    static char p[2][512];
    static int i;
    i ^= 1;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

/* Whole file into a static buffer; NULL if absent. */
static const char *slurp(const char *name, size_t *len)
{
    static char buf[8192];
    FILE *f = fopen(path_in(name), "rb");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

static void put_file(const char *name, const void *data, size_t n)
{
    FILE *f = fopen(path_in(name), "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void put_text(const char *name, const char *text) { put_file(name, text, strlen(text)); }

static bool exists(const char *name) { return access(path_in(name), F_OK) == 0; }

static void admin_key(char *out, size_t n) { cr_assert_eq(fc_admin(fc, "key", out, n), 0); }

/* The 45-byte serialized IdPk{id "123456789", pk 00..1f} of wire.md §6.7. */
static size_t idpk_bytes(uint8_t *buf)
{
    uint8_t pk[32];
    for (int i = 0; i < 32; i++)
        pk[i] = (uint8_t)i;
    Hbb__IdPk m = HBB__ID_PK__INIT;
    m.id = "123456789";
    m.pk.data = pk;
    m.pk.len = 32;
    return hbb__id_pk__pack(&m, buf);
}

/* ---- generation (§3.1; checklist R160) */
Test(keys, default_generates_key_files_in_upstream_format)
{
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    size_t n;
    const char *pub = slurp("id_ed25519.pub", &n);
    cr_assert_not_null(pub, "id_ed25519.pub not written");
    cr_assert_eq(n, 44, "id_ed25519.pub must be 44 chars, no newline (got %zu)", n);
    char pubs[64];
    strcpy(pubs, pub);
    cr_assert_null(strchr(pubs, '/'), "key string must not contain '/': %s", pubs);
    cr_assert_null(strchr(pubs, ':'));

    const char *sk = slurp("id_ed25519", &n);
    cr_assert_not_null(sk);
    cr_assert_eq(n, 88, "id_ed25519 must be 88 chars, no newline (got %zu)", n);
    cr_assert_eq(sk[87], '=');
    uint8_t bin[64];
    size_t blen;
    cr_assert_eq(sodium_base642bin(bin, sizeof bin, sk, n, NULL, &blen, NULL, sodium_base64_VARIANT_ORIGINAL), 0);
    cr_assert_eq(blen, 64);
    /* public half = the .pub file, and it belongs to the seed */
    char half[64];
    sodium_bin2base64(half, sizeof half, bin + 32, 32, sodium_base64_VARIANT_ORIGINAL);
    cr_assert_str_eq(half, pubs);
    uint8_t pk2[32], sk2[64];
    crypto_sign_seed_keypair(pk2, sk2, bin);
    cr_assert_eq(memcmp(pk2, bin + 32, 32), 0);

    struct stat sst;
    cr_assert_eq(stat(path_in("id_ed25519"), &sst), 0);
    cr_assert_eq(sst.st_mode & 0777, 0600, "id_ed25519 must be private (mode %o)", sst.st_mode & 0777);
    cr_assert_not(exists("id_ed25519.tmp"));
    cr_assert_not(exists("id_ed25519.pub.tmp"));

    void *self;
    const rdv_keys_api *api = svc(&self);
    cr_assert(api->can_sign(self));
    cr_assert_str_eq(api->licence_key(self), pubs);
    cr_assert_str_eq(api->public_key_b64(self), pubs);
    cr_assert_eq(memcmp(api->public_key(self), bin + 32, 32), 0);

    char line[128];
    snprintf(line, sizeof line, "keys: Key: %s", pubs);
    cr_assert(fc_log_contains(fc, line), "no '%s' log line", line);
    cr_assert(fc_log_contains(fc, "new key pair generated"));
    char out[128];
    admin_key(out, sizeof out);
    snprintf(line, sizeof line, "%s\n", pubs);
    cr_assert_str_eq(out, line);
    cr_assert_eq(fc_gauge(fc, "keys.signing"), 1);
    cr_assert_eq(fc_gauge(fc, "keys.licence_check"), 1);
}

/* R161 (reuse across restarts) */
Test(keys, restart_keeps_the_generated_key)
{
    cr_assert_eq(fc_load(fc, mod, cfg_with("_"), &st), 0);
    void *self;
    char first[64];
    strcpy(first, svc(&self)->public_key_b64(self));
    fc_unload(fc, mod, st);
    fc_log_clear(fc);
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    cr_assert_str_eq(svc(&self)->public_key_b64(self), first);
    cr_assert_not(fc_log_contains(fc, "generated"));
    cr_assert(fc_log_contains(fc, "secret key loaded from"));
}

Test(keys, generated_keys_differ_per_directory)
{
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    void *self;
    char first[64];
    strcpy(first, svc(&self)->public_key_b64(self));
    fc_unload(fc, mod, st);
    unlink(path_in("id_ed25519"));
    unlink(path_in("id_ed25519.pub"));
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    cr_assert_str_neq(svc(&self)->public_key_b64(self), first);
}

/* [ours] (upstream generates a new pair over the old .pub): the .pub is what
 * clients were given, so a missing id_ed25519 beside it stops the start
 * instead of re-keying every client, and nothing is written. */
Test(keys, a_missing_secret_key_beside_its_pub_is_not_replaced)
{
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    fc_unload(fc, mod, st);
    const char *pub = slurp("id_ed25519.pub", NULL);
    char before[8200]; /* slurp() reads up to 8191 bytes */
    snprintf(before, sizeof before, "%s", pub);
    unlink(path_in("id_ed25519"));
    cr_assert_lt(fc_load(fc, mod, cfg_with("-"), &st), 0);
    cr_assert(fc_log_contains(fc, "id_ed25519 is missing but"));
    cr_assert(fc_log_contains(fc, "fix: restore"));
    cr_assert_not(exists("id_ed25519"), "no new secret key");
    cr_assert_str_eq(slurp("id_ed25519.pub", NULL), before, "the .pub is untouched");
}

/* ---- loading: wire.md §6.6 / §6.7 vectors (R161, R167) */
Test(keys, seed11_file_gives_the_spec_key_and_signature)
{
    put_text("id_ed25519", SEED11_FILE);
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    void *self;
    const rdv_keys_api *api = svc(&self);
    cr_assert_str_eq(api->public_key_b64(self), SEED11_PK);
    cr_assert_str_eq(api->licence_key(self), SEED11_PK);
    cr_assert(fc_log_contains(fc, "keys: Key: " SEED11_PK));
    cr_assert_not(exists("id_ed25519.pub"), "loading must not rewrite the key files");

    uint8_t m[64], out[256];
    size_t n = idpk_bytes(m);
    static const uint8_t idpk[45] = {
        0x0a, 0x09, '1', '2', '3', '4', '5', '6', '7', '8', '9', 0x12, 0x20,
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
    };
    cr_assert_eq(n, 45);
    cr_assert_eq(memcmp(m, idpk, 45), 0);
    static const uint8_t sig[64] = {
        0x99, 0xb5, 0x0f, 0x50, 0x82, 0x4f, 0xb8, 0xcb, 0xa0, 0x13, 0x7a, 0xf4, 0x9d, 0xd1, 0xec, 0x73,
        0x12, 0x27, 0x46, 0xe1, 0x06, 0x52, 0x3b, 0x34, 0xcb, 0xa5, 0x7b, 0x2a, 0xfa, 0x10, 0x9a, 0x15,
        0x08, 0x8b, 0xbe, 0xba, 0xef, 0xf9, 0xbf, 0x24, 0xd5, 0x11, 0x38, 0xe5, 0x12, 0x68, 0xf6, 0x1f,
        0xbd, 0xb9, 0xee, 0xee, 0x7e, 0x69, 0x6e, 0x70, 0x90, 0xd1, 0x21, 0xd0, 0x8d, 0x2e, 0xb6, 0x02,
    };
    long len = api->sign(self, m, n, out, sizeof out);
    cr_assert_eq(len, 109);
    cr_assert_eq(memcmp(out, sig, 64), 0, "signature differs from wire.md §6.7");
    cr_assert_eq(memcmp(out + 64, idpk, 45), 0, "combined mode: message follows the signature");
    /* and a client verifies it with the key string */
    uint8_t pk[32], opened[64];
    size_t pkl;
    unsigned long long ol;
    sodium_base642bin(pk, sizeof pk, SEED11_PK, strlen(SEED11_PK), NULL, &pkl, NULL, sodium_base64_VARIANT_ORIGINAL);
    cr_assert_eq(crypto_sign_open(opened, &ol, out, (unsigned long long)len, pk), 0);
    cr_assert_eq(ol, 45);
}

Test(keys, file_whitespace_is_trimmed)
{
    put_text("id_ed25519", "  " SEED11_FILE "\r\n\n");
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    void *self;
    cr_assert_str_eq(svc(&self)->public_key_b64(self), SEED11_PK);
}

/* R161: a wrong .pub changes nothing */
Test(keys, pub_file_is_never_read)
{
    put_text("id_ed25519", SEED11_FILE);
    put_text("id_ed25519.pub", OTHER_PK);
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    void *self;
    cr_assert_str_eq(svc(&self)->licence_key(self), SEED11_PK);
}

Test(keys, sign_needs_room_for_the_signature)
{
    put_text("id_ed25519", SEED11_FILE);
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    void *self;
    const rdv_keys_api *api = svc(&self);
    uint8_t m[10] = { 0 }, out[80];
    cr_assert_eq(api->sign(self, m, sizeof m, out, 73), -ENOSPC);
    cr_assert_eq(api->sign(self, m, sizeof m, out, 74), 74);
    cr_assert_eq(api->sign(self, m, 0, out, 64), 64, "empty message: signature only");
    cr_assert_eq(api->sign(self, m, SIZE_MAX - 10, out, sizeof out), -ENOSPC, "length overflow");
}

/* ---- -k / KEY semantics (§3.2) */
/* R163 */
Test(keys, k_with_64_byte_secret_key_uses_it_and_leaves_files_alone)
{
    cr_assert_eq(fc_load(fc, mod, cfg_with(SEED11_FILE), &st), 0);
    void *self;
    const rdv_keys_api *api = svc(&self);
    cr_assert(api->can_sign(self));
    cr_assert_str_eq(api->licence_key(self), SEED11_PK);
    cr_assert_str_eq(api->public_key_b64(self), SEED11_PK);
    cr_assert_not(exists("id_ed25519"));
    cr_assert_not(exists("id_ed25519.pub"));
    cr_assert(fc_log_contains(fc, "keys: Key: " SEED11_PK));
    /* a key file with another key is not read either */
    fc_unload(fc, mod, st);
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0); /* generates a new pair */
    char gen[64];
    strcpy(gen, svc(&self)->public_key_b64(self));
    fc_unload(fc, mod, st);
    cr_assert_eq(fc_load(fc, mod, cfg_with(SEED11_FILE), &st), 0);
    cr_assert_str_eq(svc(&self)->public_key_b64(self), SEED11_PK);
    cr_assert_str_neq(gen, SEED11_PK);
}

Test(keys, k_with_inconsistent_secret_key_is_refused)
{
    uint8_t sk[64];
    memset(sk, 0x11, 32);
    memset(sk + 32, 0x22, 32);
    char b64[100];
    sodium_bin2base64(b64, sizeof b64, sk, 64, sodium_base64_VARIANT_ORIGINAL);
    cr_assert_eq(fc_load(fc, mod, cfg_with(b64), &st), -EINVAL);
    cr_assert(fc_log_contains(fc, "does not belong to its seed"));
}

/* R164 */
Test(keys, empty_key_signs_without_licence_check)
{
    cr_assert_eq(fc_load(fc, mod, cfg_with(""), &st), 0);
    void *self;
    const rdv_keys_api *api = svc(&self);
    cr_assert(api->can_sign(self));
    cr_assert_str_eq(api->licence_key(self), "");
    cr_assert_eq(strlen(api->public_key_b64(self)), 44);
    cr_assert(exists("id_ed25519") && exists("id_ed25519.pub"));
    const char *pub = slurp("id_ed25519.pub", NULL);
    cr_assert_str_eq(api->public_key_b64(self), pub);
    cr_assert(fc_log_contains(fc, "licence check off"));
    cr_assert_eq(fc_gauge(fc, "keys.licence_check"), 0);
    cr_assert_eq(fc_gauge(fc, "keys.signing"), 1);
    char out[128], want[8200]; /* slurp() reads up to 8191 bytes */
    admin_key(out, sizeof out);
    snprintf(want, sizeof want, "%s\n", pub);
    cr_assert_str_eq(out, want);
}

/* R165 */
Test(keys, dash_and_underscore_are_the_same)
{
    put_text("id_ed25519", SEED11_FILE);
    void *self;
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    cr_assert_str_eq(svc(&self)->licence_key(self), SEED11_PK);
    fc_unload(fc, mod, st);
    cr_assert_eq(fc_load(fc, mod, cfg_with("_"), &st), 0);
    cr_assert_str_eq(svc(&self)->licence_key(self), SEED11_PK);
    cr_assert(svc(&self)->can_sign(self));
}

Test(keys, default_setting_is_dash)
{
    snprintf(conf, sizeof conf, "dir=%s\n", dir);
    put_text("id_ed25519", SEED11_FILE);
    cr_assert_eq(fc_load(fc, mod, conf, &st), 0);
    void *self;
    cr_assert_str_eq(svc(&self)->licence_key(self), SEED11_PK);
    /* and key is a secret setting (redacted by --print-config) */
    const rdv_setting *s = mod->settings;
    while (s->name && strcmp(s->name, "key") != 0)
        s++;
    cr_assert_not_null(s->name);
    cr_assert(s->flags & RDV_SETF_SECRET);
    cr_assert_str_eq(s->sdef, "-");
}

/* R166 */
Test(keys, verbatim_licence_key_has_no_signing_key)
{
    cr_assert_eq(fc_load(fc, mod, cfg_with("my-licence"), &st), 0);
    void *self;
    const rdv_keys_api *api = svc(&self);
    cr_assert_not(api->can_sign(self));
    cr_assert_str_eq(api->licence_key(self), "my-licence");
    cr_assert_str_eq(api->public_key_b64(self), "");
    cr_assert_null(api->public_key(self));
    uint8_t out[128];
    cr_assert_eq(api->sign(self, (const uint8_t *)"x", 1, out, sizeof out), -ENOKEY);
    cr_assert_not(exists("id_ed25519"), "case 3 must not create key files");
    cr_assert_not(exists("id_ed25519.pub"));
    cr_assert(fc_log_contains(fc, "NO signing key"));
    cr_assert(fc_log_contains(fc, "keys: Key: my-licence"));
    char o[64];
    admin_key(o, sizeof o);
    cr_assert_str_eq(o, "my-licence\n");
    cr_assert_eq(fc_gauge(fc, "keys.signing"), 0);
    cr_assert_eq(fc_gauge(fc, "keys.licence_check"), 1);
}

Test(keys, public_key_string_as_k_is_verbatim)
{
    /* base64 of 32 bytes is not a secret key: case 3 */
    cr_assert_eq(fc_load(fc, mod, cfg_with(OTHER_PK), &st), 0);
    void *self;
    const rdv_keys_api *api = svc(&self);
    cr_assert_not(api->can_sign(self));
    cr_assert_str_eq(api->licence_key(self), OTHER_PK);
}

Test(keys, unpadded_or_odd_values_are_verbatim)
{
    /* 64 bytes without the "==" padding is not standard base64 */
    char v[100];
    strcpy(v, SEED11_FILE);
    v[86] = 0;
    cr_assert_eq(fc_load(fc, mod, cfg_with(v), &st), 0);
    void *self;
    cr_assert_not(svc(&self)->can_sign(self));
    cr_assert_str_eq(svc(&self)->licence_key(self), v);
    fc_unload(fc, mod, st);
    cr_assert_eq(fc_load(fc, mod, cfg_with(" - "), &st), 0);
    cr_assert_str_eq(svc(&self)->licence_key(self), " - ");
    cr_assert_not(svc(&self)->can_sign(self));
}

/* Allowed deviation (§3.2): the matching id_ed25519 is used for signing. */
Test(keys, verbatim_public_key_loads_the_matching_key_file)
{
    put_text("id_ed25519", SEED11_FILE);
    cr_assert_eq(fc_load(fc, mod, cfg_with(SEED11_PK), &st), 0);
    void *self;
    const rdv_keys_api *api = svc(&self);
    cr_assert(api->can_sign(self));
    cr_assert_str_eq(api->licence_key(self), SEED11_PK);
    cr_assert_str_eq(api->public_key_b64(self), SEED11_PK);
    cr_assert(fc_log_contains(fc, "using that file's secret key"));
    cr_assert_not(fc_log_contains(fc, "NO signing key"));
}

Test(keys, verbatim_key_with_another_key_file_does_not_sign)
{
    put_text("id_ed25519", SEED11_FILE);
    cr_assert_eq(fc_load(fc, mod, cfg_with(OTHER_PK), &st), 0);
    void *self;
    const rdv_keys_api *api = svc(&self);
    cr_assert_not(api->can_sign(self));
    cr_assert_str_eq(api->public_key_b64(self), "");
    cr_assert(fc_log_contains(fc, "holds another key pair"));
}

Test(keys, verbatim_key_ignores_a_malformed_key_file)
{
    put_text("id_ed25519", "not a key");
    cr_assert_eq(fc_load(fc, mod, cfg_with(OTHER_PK), &st), 0);
    void *self;
    cr_assert_not(svc(&self)->can_sign(self));
    cr_assert(fc_log_contains(fc, "ignored"));
}

/* ---- bad key files: start fails with the file and the fix (R162) */
static void expect_malformed(const void *content, size_t n)
{
    put_file("id_ed25519", content, n);
    fc_log_clear(fc);
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), -EINVAL);
    char want[400];
    snprintf(want, sizeof want, "malformed private key in %s/id_ed25519", dir);
    cr_assert(fc_log_contains(fc, want), "no '%s'", want);
    cr_assert(fc_log_contains(fc, "fix: restore the file from a backup"));
    cr_assert_null(fc_handle(fc, "registry")->api->service_get(fc_handle(fc, "registry"), RDV_SVC_KEYS, 1, &(void *){ 0 }));
}

Test(keys, malformed_not_base64) { expect_malformed("hello world!", 12); }
Test(keys, malformed_empty_file) { expect_malformed("", 0); }
Test(keys, malformed_public_key_only) { expect_malformed(SEED11_PK, strlen(SEED11_PK)); }

Test(keys, malformed_truncated)
{
    /* 63 bytes */
    uint8_t b[63];
    memset(b, 1, sizeof b);
    char s[100];
    sodium_bin2base64(s, sizeof s, b, sizeof b, sodium_base64_VARIANT_ORIGINAL);
    expect_malformed(s, strlen(s));
}

Test(keys, malformed_too_long)
{
    uint8_t b[65];
    memset(b, 1, sizeof b);
    char s[100];
    sodium_bin2base64(s, sizeof s, b, sizeof b, sodium_base64_VARIANT_ORIGINAL);
    expect_malformed(s, strlen(s));
}

Test(keys, malformed_binary_garbage)
{
    uint8_t b[88];
    for (size_t i = 0; i < sizeof b; i++)
        b[i] = (uint8_t)(i * 37 + 128);
    expect_malformed(b, sizeof b);
}

Test(keys, malformed_huge_file)
{
    static char big[10000];
    memset(big, 'A', sizeof big);
    expect_malformed(big, sizeof big);
}

Test(keys, malformed_inconsistent_halves)
{
    uint8_t sk[64];
    memset(sk, 0x11, 32);
    memset(sk + 32, 0x22, 32);
    char s[100];
    sodium_bin2base64(s, sizeof s, sk, 64, sodium_base64_VARIANT_ORIGINAL);
    expect_malformed(s, strlen(s));
    cr_assert(fc_log_contains(fc, "does not belong to its seed"));
}

Test(keys, malformed_with_garbage_after_key)
{
    char s[200];
    snprintf(s, sizeof s, "%s\nextra", SEED11_FILE);
    expect_malformed(s, strlen(s));
}

Test(keys, key_file_that_is_a_directory_fails_start)
{
    cr_assert_eq(mkdir(path_in("id_ed25519"), 0700), 0);
    int r = fc_load(fc, mod, cfg_with("-"), &st);
    cr_assert_lt(r, 0);
    cr_assert(fc_log_contains(fc, "it is a directory"));
    cr_assert(fc_log_contains(fc, "id_ed25519"));
}

/* ---- unwritable directory: error naming the path, run without a key */
static void expect_no_key_pair(const char *keydir)
{
    snprintf(conf, sizeof conf, "key=-\ndir=%s\n", keydir);
    cr_assert_eq(fc_load(fc, mod, conf, &st), 0);
    void *self;
    const rdv_keys_api *api = svc(&self);
    cr_assert_not(api->can_sign(self));
    cr_assert_str_eq(api->licence_key(self), "", "'-' without a key pair: empty licence key (upstream)");
    cr_assert_str_eq(api->public_key_b64(self), "");
    char want[600];
    snprintf(want, sizeof want, "cannot write %s/id_ed25519: ", keydir);
    cr_assert(fc_log_contains(fc, want), "no '%s'", want);
    cr_assert(fc_log_contains(fc, "running WITHOUT a key pair"));
    cr_assert(fc_log_contains(fc, "keys: Key: "));
    cr_assert_eq(fc_gauge(fc, "keys.signing"), 0);
}

Test(keys, unwritable_dir_runs_without_key_pair)
{
    /* root ignores permissions: a directory that is a regular file is
     * unwritable for everyone */
    put_text("notadir", "x");
    expect_no_key_pair(path_in("notadir"));
}

Test(keys, missing_dir_runs_without_key_pair)
{
    expect_no_key_pair(path_in("missing/deeper"));
}

Test(keys, unwritable_private_key_file_leaves_no_key)
{
    /* .pub can be written but id_ed25519 cannot: a directory squats on
     * the temporary name, so the rename target is never reached */
    cr_assert_eq(mkdir(path_in("id_ed25519.tmp"), 0700), 0);
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    void *self;
    cr_assert_not(svc(&self)->can_sign(self));
    char want[600];
    snprintf(want, sizeof want, "cannot write %s/id_ed25519", dir);
    cr_assert(fc_log_contains(fc, want));
    cr_assert_not(exists("id_ed25519"));
}

Test(keys, empty_dir_setting_is_refused)
{
    cr_assert_eq(fc_load(fc, mod, "dir=\"\"\n", &st), -EINVAL);
    cr_assert(fc_log_contains(fc, "keys.dir must name a directory"));
}

Test(keys, unknown_setting_is_refused)
{
    cr_assert_eq(fc_load(fc, mod, "colour=blue\n", &st), -EINVAL);
}

Test(keys, key_change_needs_restart)
{
    put_text("id_ed25519", SEED11_FILE);
    cr_assert_eq(fc_load(fc, mod, cfg_with("-"), &st), 0);
    cr_assert_eq(fc_reconfigure(fc, mod, st, cfg_with("other")), -EPERM);
    void *self;
    cr_assert_str_eq(svc(&self)->licence_key(self), SEED11_PK);
}
