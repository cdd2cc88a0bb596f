/* relay_key.c — the relay key clients must present (relay.md §11,
 * config-compat.md §5): verbatim, the public half of a 64-byte secret key
 * given in base64, or "-"/"_" = the key pair in id_ed25519 (created when
 * absent). Runs once in init(), before the loop serves anything. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "relay.h"

#define RELAY_KEYFILE_MAX 4096
#define RELAY_KEYGEN_TRIES 301 /* one plus upstream's 300 extra attempts */

/* Standard padded base64 decoding of the whole string, or -1. */
static long relay_b64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
    size_t got = 0;
    const char *end = NULL;
    if (sodium_base642bin(out, cap, s, n, NULL, &got, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != s + n)
        return -1;
    return (long)got;
}

static void relay_b64_encode(const uint8_t *p, size_t n, char *out, size_t cap)
{
    sodium_bin2base64(out, cap, p, n, sodium_base64_VARIANT_ORIGINAL);
}

/* Written to PATH.tmp and renamed: a co-started hbbs never reads half a key. */
static int relay_write_file(const char *path, const char *text, mode_t mode)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t k = write(fd, text + off, n - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = k < 0 ? -errno : -EIO;
            close(fd);
            unlink(tmp);
            return e;
        }
        off += (size_t)k;
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        int e = -errno;
        unlink(tmp);
        return e;
    }
    return 0;
}

/* Generate until the public key's base64 has no '/'; the secret key is
 * written first (a .pub alone means a lost secret key: refused). */
static int relay_key_generate(const char *path, char *pub_b64, size_t publen, char *err, size_t errlen)
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char pkt[64], skt[128];
    for (int i = 0; i < RELAY_KEYGEN_TRIES; i++) {
        crypto_sign_keypair(pk, sk);
        relay_b64_encode(pk, sizeof pk, pkt, sizeof pkt);
        if (!strchr(pkt, '/'))
            break;
    }
    relay_b64_encode(sk, sizeof sk, skt, sizeof skt);
    sodium_memzero(sk, sizeof sk);
    char pubpath[4200];
    snprintf(pubpath, sizeof pubpath, "%s.pub", path);
    int r = relay_write_file(path, skt, 0600);
    if (r == 0)
        r = relay_write_file(pubpath, pkt, 0644);
    sodium_memzero(skt, sizeof skt);
    if (r < 0) {
        snprintf(err, errlen, "cannot write %s / %s.pub: %s", path, path, strerror(-r));
        return r;
    }
    snprintf(pub_b64, publen, "%s", pkt);
    return 0;
}

static int relay_key_load(const char *path, char *pub_b64, size_t publen, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char buf[RELAY_KEYFILE_MAX + 1];
    ssize_t n = read(fd, buf, RELAY_KEYFILE_MAX);
    close(fd);
    if (n < 0)
        return -errno;
    size_t b = 0, e = (size_t)n;
    while (b < e && strchr(" \t\r\n\v\f", buf[b]))
        b++;
    while (e > b && strchr(" \t\r\n\v\f", buf[e - 1]))
        e--;
    uint8_t sk[crypto_sign_SECRETKEYBYTES + 1];
    long got = relay_b64_decode(buf + b, e - b, sk, sizeof sk);
    sodium_memzero(buf, sizeof buf);
    if (got != crypto_sign_SECRETKEYBYTES) {
        sodium_memzero(sk, sizeof sk);
        snprintf(err, errlen, "Fatal error: malformed private key in %s.", path);
        return -EINVAL;
    }
    relay_b64_encode(sk + 32, 32, pub_b64, publen);
    sodium_memzero(sk, sizeof sk);
    return 0;
}

int relay_key_resolve(const char *key, const char *key_file, bool wait_for_file, char *out, size_t outlen,
                      char *err, size_t errlen)
{
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return -EIO;
    }
    size_t klen = strlen(key);
    uint8_t sk[crypto_sign_SECRETKEYBYTES + 1];
    if (klen && relay_b64_decode(key, klen, sk, sizeof sk) == crypto_sign_SECRETKEYBYTES) {
        relay_b64_encode(sk + 32, 32, out, outlen); /* the public half */
        sodium_memzero(sk, sizeof sk);
        return 0;
    }
    sodium_memzero(sk, sizeof sk);
    if (strcmp(key, "-") != 0 && strcmp(key, "_") != 0) {
        if (klen >= outlen) {
            snprintf(err, errlen, "relay.key is longer than %zu bytes", outlen - 1);
            return -ENAMETOOLONG;
        }
        memcpy(out, key, klen + 1); /* compared verbatim; "" = no check */
        return 0;
    }
    if (access(key_file, F_OK) != 0 && wait_for_file) {
        /* Lets a co-started hbbs create the pair first (upstream waits 300 ms). */
        struct timespec ts = { 0, 300 * 1000000L };
        nanosleep(&ts, NULL);
    }
    int r = relay_key_load(key_file, out, outlen, err, errlen);
    char pubpath[4200];
    snprintf(pubpath, sizeof pubpath, "%s.pub", key_file);
    if (r == -ENOENT && access(pubpath, F_OK) == 0) {
        /* [ours] upstream generates a new pair over it, re-keying every client */
        snprintf(err, errlen,
                 "%s is missing but %s exists: a new key pair would make every client configured with that "
                 "public key fail; fix: restore %s from a backup, or move %s away to generate a new key pair",
                 key_file, pubpath, key_file, pubpath);
        return -ENOENT;
    }
    if (r == -ENOENT) {
        r = relay_key_generate(key_file, out, outlen, err, errlen);
        if (r < 0) {
            /* Upstream runs without a key pair, i.e. with no key check. */
            out[0] = '\0';
            return 1;
        }
        return 2;
    }
    return r;
}
