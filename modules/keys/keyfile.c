/* keyfile.c — load, check and generate the server key pair files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfile.h"

/* A key file is 88 characters; anything much larger is not one, and is not
 * read whole into memory. */
#define KEYS_FILE_MAX 4096

bool keys_decode_sk(const char *b64, size_t len, uint8_t sk[KEYS_SK_LEN])
{
    /* Room for a few bytes more than 64 so a longer value fails on length,
     * not on the buffer. */
    uint8_t buf[KEYS_SK_LEN + 8];
    size_t n = 0;
    bool ok = sodium_base642bin(buf, sizeof buf, b64, len, NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
              n == KEYS_SK_LEN;
    if (ok)
        memcpy(sk, buf, KEYS_SK_LEN);
    sodium_memzero(buf, sizeof buf);
    return ok;
}

bool keys_sk_consistent(const uint8_t sk[KEYS_SK_LEN])
{
    uint8_t pk[KEYS_PK_LEN], sk2[KEYS_SK_LEN];
    crypto_sign_seed_keypair(pk, sk2, sk); /* the seed is the first 32 bytes */
    bool ok = sodium_memcmp(pk, sk + KEYS_SK_LEN - KEYS_PK_LEN, KEYS_PK_LEN) == 0;
    sodium_memzero(sk2, sizeof sk2);
    return ok;
}

void keys_pk_string(const uint8_t sk[KEYS_SK_LEN], char out[KEYS_PK_STRLEN])
{
    uint8_t pk[KEYS_PK_LEN];
    crypto_sign_ed25519_sk_to_pk(pk, sk);
    sodium_bin2base64(out, KEYS_PK_STRLEN, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
}

static bool keys_is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

int keys_file_load(const char *path, uint8_t sk[KEYS_SK_LEN], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK); /* a FIFO must not block us */
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            return -ENOENT;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
        return -e;
    }
    char buf[KEYS_FILE_MAX + 1];
    size_t len = 0;
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        snprintf(err, errlen, "cannot read %s: %s", path, S_ISDIR(st.st_mode) ? "it is a directory" : "not a regular file");
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len == sizeof buf - 1) {
            rc = -EBADMSG;
            snprintf(err, errlen, "malformed private key in %s: larger than %d bytes", path, KEYS_FILE_MAX);
            goto out;
        }
    }
    size_t a = 0, b = len;
    while (a < b && keys_is_space(buf[a]))
        a++;
    while (b > a && keys_is_space(buf[b - 1]))
        b--;
    if (!keys_decode_sk(buf + a, b - a, sk)) {
        rc = -EBADMSG;
        snprintf(err, errlen, "malformed private key in %s: not the base64 of a 64-byte Ed25519 secret key", path);
    } else if (!keys_sk_consistent(sk)) {
        rc = -EBADMSG;
        sodium_memzero(sk, KEYS_SK_LEN);
        snprintf(err, errlen, "malformed private key in %s: its public half does not belong to its seed", path);
    }
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}

/* Write data to path through path.tmp + rename, so readers see the whole
 * file or none of it. */
static int keys_write_file(const char *path, const char *data, mode_t mode, char *err, size_t errlen)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        snprintf(err, errlen, "cannot write %s: path too long", path);
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, mode);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
        return -e;
    }
    size_t len = strlen(data), off = 0;
    int e = 0;
    while (off < len && !e) {
        ssize_t r = write(fd, data + off, len - off);
        if (r < 0 && errno != EINTR)
            e = errno;
        else if (r > 0)
            off += (size_t)r;
    }
    if (!e && fsync(fd) < 0)
        e = errno;
    if (close(fd) < 0 && !e)
        e = errno;
    if (!e && rename(tmp, path) < 0)
        e = errno;
    if (e) {
        unlink(tmp);
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
        return -e;
    }
    return 0;
}

int keys_file_generate(const char *sk_path, const char *pub_path, uint8_t sk[KEYS_SK_LEN], char *err,
                       size_t errlen)
{
    uint8_t pk[KEYS_PK_LEN];
    char pk_b64[KEYS_PK_STRLEN];
    /* '/' in the key string breaks id@server?key= strings and URLs. */
    for (int tries = 0; tries <= KEYS_REGEN_MAX; tries++) {
        crypto_sign_keypair(pk, sk);
        sodium_bin2base64(pk_b64, sizeof pk_b64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
        if (!strpbrk(pk_b64, "/:"))
            break;
    }
    char sk_b64[sodium_base64_ENCODED_LEN(KEYS_SK_LEN, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(sk_b64, sizeof sk_b64, sk, KEYS_SK_LEN, sodium_base64_VARIANT_ORIGINAL);
    /* The secret key first: a .pub without its id_ed25519 means a lost
     * secret key (the start refuses it), never a pair half written. */
    int r = keys_write_file(sk_path, sk_b64, 0600, err, errlen);
    if (r == 0)
        r = keys_write_file(pub_path, pk_b64, 0644, err, errlen);
    sodium_memzero(sk_b64, sizeof sk_b64);
    if (r < 0)
        sodium_memzero(sk, KEYS_SK_LEN);
    return r;
}
