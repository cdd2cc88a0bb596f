/* keys.c — the "keys" service: the server's Ed25519 signing key and the
 * licence key, resolved from keys.key (hbbs -k / KEY) exactly as
 * rendezvous.md §3.1–§3.2 and config-compat.md §3.4 / §5 describe:
 *
 *   1. key decodes to 64 bytes      -> that secret key; licence = its key string
 *   2. key is "", "-" or "_"        -> load or generate dir/id_ed25519; licence =
 *                                      its key string ("" for an empty key: no check)
 *   3. anything else                -> licence = key verbatim, no signing key,
 *                                      unless dir/id_ed25519 holds the matching
 *                                      secret key (allowed deviation, §3.2)
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <rdv/core.h>
#include <rdv/svc/keys.h>

#include "keyfile.h"

typedef struct keys_cfg {
    char *key; /* -k / KEY */
    char *dir; /* where id_ed25519 lives */
} keys_cfg;

static const rdv_setting keys_settings[] = {
    RDV_SETTING_STRING(keys_cfg, key, "-", RDV_SETF_SECRET,
                       "hbbs -k/KEY: \"-\" or \"_\" = key files (generated if missing), \"\" = key files "
                       "without licence check, base64 64-byte secret key, or a licence key used verbatim"),
    RDV_SETTING_STRING(keys_cfg, dir, ".", 0, "directory of id_ed25519 and id_ed25519.pub (\".\" = working directory)"),
    RDV_SETTING_END,
};

typedef struct keys {
    rdv_core *core;
    bool has_sk;
    uint8_t sk[KEYS_SK_LEN];
    char pk_b64[KEYS_PK_STRLEN]; /* "" without a signing key */
    char *licence;               /* "" = no licence check */
} keys;

/* ---- the service */
static bool keys_can_sign(void *self) { return ((keys *)self)->has_sk; }
static const char *keys_licence_key(void *self) { return ((keys *)self)->licence; }
static const char *keys_public_key_b64(void *self) { return ((keys *)self)->pk_b64; }

static const uint8_t *keys_public_key(void *self)
{
    keys *k = self;
    return k->has_sk ? k->sk + KEYS_SK_LEN - KEYS_PK_LEN : NULL;
}

static long keys_sign(void *self, const uint8_t *m, size_t n, uint8_t *out, size_t cap)
{
    keys *k = self;
    if (!k->has_sk)
        return -ENOKEY;
    if (n > (size_t)LONG_MAX - crypto_sign_BYTES || cap < n + crypto_sign_BYTES)
        return -ENOSPC;
    unsigned long long len = 0;
    crypto_sign(out, &len, m, n, k->sk);
    return (long)len;
}

static const rdv_keys_api keys_api = {
    .can_sign = keys_can_sign,
    .licence_key = keys_licence_key,
    .public_key_b64 = keys_public_key_b64,
    .public_key = keys_public_key,
    .sign = keys_sign,
};

/* ---- resolution of keys.key */
static int keys_validate(const void *cfg_, char *err, size_t errlen)
{
    const keys_cfg *cfg = cfg_;
    if (!cfg->dir[0]) {
        snprintf(err, errlen, "keys.dir must name a directory (\".\" = the working directory)");
        return -EINVAL;
    }
    if (strlen(cfg->dir) > PATH_MAX - 32) {
        snprintf(err, errlen, "keys.dir is too long");
        return -EINVAL;
    }
    return 0;
}

static void keys_paths(const keys_cfg *cfg, char *sk_path, char *pub_path)
{
    snprintf(sk_path, PATH_MAX, "%s/id_ed25519", cfg->dir);
    snprintf(pub_path, PATH_MAX, "%s/id_ed25519.pub", cfg->dir);
}

/* Case 2: the key files. Fatal only if id_ed25519 exists but is unusable:
 * starting without it would silently change the server's key. */
static int keys_from_files(keys *k, const keys_cfg *cfg)
{
    char sk_path[PATH_MAX], pub_path[PATH_MAX], err[PATH_MAX + 256];
    keys_paths(cfg, sk_path, pub_path);
    int r = keys_file_load(sk_path, k->sk, err, sizeof err);
    if (r == 0) {
        k->has_sk = true;
        RDV_INFO(k->core, "secret key loaded from %s", sk_path);
        return 0;
    }
    if (r == -EBADMSG) {
        RDV_ERR(k->core,
                "%s; fix: restore the file from a backup, or move it and %s away so that a new key pair "
                "is generated (clients then need the new key)",
                err, pub_path);
        return -EINVAL;
    }
    if (r != -ENOENT) {
        RDV_ERR(k->core, "%s; fix: let the rdvd user read it (or set keys.dir to where it is)", err);
        return r;
    }
    struct stat pst;
    if (stat(pub_path, &pst) == 0) {
        /* [ours] Upstream generates a new pair over the old .pub. The .pub
         * is what clients were given: a lost secret key is far more often
         * a deployment mistake (a volume not mounted, a file not copied)
         * than a wish to re-key every client. */
        RDV_ERR(k->core,
                "%s is missing but %s exists: a new key pair would make every client configured with that "
                "public key fail the key check; fix: restore %s from a backup (or set keys.dir to where it is), "
                "or move %s away to generate a new key pair (clients then need the new key)",
                sk_path, pub_path, sk_path, pub_path);
        return -ENOENT;
    }
    r = keys_file_generate(sk_path, pub_path, k->sk, err, sizeof err);
    if (r < 0) {
        /* Upstream keeps running without a key pair; so do we, loudly. */
        RDV_ERR(k->core,
                "%s; running WITHOUT a key pair: no signed peer keys (clients fall back to unencrypted "
                "sessions) and no licence check; fix: make %s writable by the rdvd user (keys.dir), then restart",
                err, cfg->dir);
        return 0;
    }
    k->has_sk = true;
    RDV_NOTICE(k->core, "new key pair generated: secret key written to %s, public key to %s", sk_path, pub_path);
    return 0;
}

/* Case 3 and the allowed deviation: a key string given verbatim. */
static void keys_from_licence(keys *k, const keys_cfg *cfg)
{
    char sk_path[PATH_MAX], pub_path[PATH_MAX], err[PATH_MAX + 256], pk[KEYS_PK_STRLEN];
    keys_paths(cfg, sk_path, pub_path);
    int r = keys_file_load(sk_path, k->sk, err, sizeof err);
    if (r == 0) {
        keys_pk_string(k->sk, pk);
        if (strcmp(pk, k->licence) == 0) {
            k->has_sk = true;
            RDV_NOTICE(k->core, "keys.key is the public key of %s: using that file's secret key for signing", sk_path);
            return;
        }
        sodium_memzero(k->sk, sizeof k->sk);
    }
    if (r != 0 && r != -ENOENT)
        RDV_WARN(k->core, "%s (ignored: keys.key is not \"-\")", err);
    RDV_WARN(k->core,
             "keys.key is used verbatim as the licence key and there is NO signing key%s: responses carry "
             "no signed peer keys, so clients fall back to unencrypted sessions; fix: put the matching "
             "id_ed25519 in %s, or set keys.key to \"-\" (key files) or to the 64-byte secret key",
             r == 0 ? " (id_ed25519 holds another key pair)" : "", cfg->dir);
}

static int keys_resolve(keys *k, const keys_cfg *cfg)
{
    const char *v = cfg->key;
    if (keys_decode_sk(v, strlen(v), k->sk)) {
        if (!keys_sk_consistent(k->sk)) {
            sodium_memzero(k->sk, sizeof k->sk);
            RDV_ERR(k->core, "keys.key is a 64-byte secret key whose public half does not belong to its seed; "
                             "fix: give the whole secret key (rdvctl genkeypair prints one), or \"-\" for key files");
            return -EINVAL;
        }
        k->has_sk = true;
        keys_pk_string(k->sk, k->pk_b64);
        k->licence = strdup(k->pk_b64);
        RDV_INFO(k->core, "using the secret key given in keys.key; key files are not used");
        return k->licence ? 0 : -ENOMEM;
    }
    if (!v[0] || strcmp(v, "-") == 0 || strcmp(v, "_") == 0) {
        int r = keys_from_files(k, cfg);
        if (r < 0)
            return r;
        if (k->has_sk)
            keys_pk_string(k->sk, k->pk_b64);
        /* An empty key keeps the licence check off; signing stays on. */
        k->licence = strdup(v[0] ? k->pk_b64 : "");
        return k->licence ? 0 : -ENOMEM;
    }
    if (!(k->licence = strdup(v)))
        return -ENOMEM;
    keys_from_licence(k, cfg);
    if (k->has_sk)
        keys_pk_string(k->sk, k->pk_b64);
    return 0;
}

/* ---- admin and stats */

/* `key`: the key clients must be configured with: the signing public key
 * when there is one (it is also the licence key unless the check is off),
 * else the licence key. */
static void keys_cmd_key(void *ud, int argc, char **argv, rdv_buf *out)
{
    keys *k = ud;
    (void)argc, (void)argv;
    k->core->api->out(out, "%s\n", k->has_sk ? k->pk_b64 : k->licence);
}

static uint64_t keys_gauge_signing(void *ud) { return ((keys *)ud)->has_sk; }
static uint64_t keys_gauge_licence(void *ud) { return ((keys *)ud)->licence[0] != '\0'; }

/* ---- lifecycle */
static void keys_destroy(void *state)
{
    keys *k = state;
    if (!k)
        return;
    sodium_memzero(k->sk, sizeof k->sk);
    free(k->licence);
    sodium_memzero(k, sizeof *k);
    free(k);
}

static int keys_init(rdv_core *core, const void *cfg_, void **state)
{
    const keys_cfg *cfg = cfg_;
    if (sodium_init() < 0) {
        RDV_ERR(core, "libsodium failed to initialise");
        return -EIO;
    }
    keys *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    k->core = core;
    int r = keys_resolve(k, cfg);
    const rdv_core_api *api = core->api;
    if (r == 0)
        r = api->service_publish(core, RDV_SVC_KEYS, RDV_SVC_KEYS_VERSION, &keys_api, k);
    if (r == 0)
        r = api->admin_command(core, "key", "key  (the key clients must be configured with)", keys_cmd_key, k);
    if (r == 0)
        r = api->gauge(core, "signing", keys_gauge_signing, k, "1 if a signing key is loaded");
    if (r == 0)
        r = api->gauge(core, "licence_check", keys_gauge_licence, k, "1 if PunchHoleRequest licence keys are checked");
    if (r < 0) {
        keys_destroy(k);
        return r;
    }
    /* Upstream prints the active licence key at start. */
    RDV_NOTICE(core, "Key: %s", k->licence);
    if (!k->licence[0] && k->has_sk)
        RDV_NOTICE(core, "licence check off (keys.key is empty); signing public key: %s", k->pk_b64);
    *state = k;
    return 0;
}

static const rdv_dep keys_provides[] = {
    { .name = RDV_SVC_KEYS, .version = RDV_SVC_KEYS_VERSION },
    { .name = NULL },
};

static const rdv_module keys_module = {
    RDV_MODULE_HEAD("keys", "1.0.0"),
    .description = "server Ed25519 key pair and licence key (hbbs -k, id_ed25519)",
    .settings = keys_settings,
    .config_size = sizeof(keys_cfg),
    .validate = keys_validate,
    .provides = keys_provides,
    .init = keys_init,
    .destroy = keys_destroy,
};
RDV_MODULE_EXPORT(keys_module)
