/* rdvctl — small utility: talk to the admin console, and the key pair
 * commands of upstream's rustdesk-utils (genkeypair, validatekeypair; same
 * output and exit statuses, config-compat.md §7). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../admin_answers.h"

#include <sodium.h>

/* Without -s or RDVD_SOCKET: the first of these that exists — rdvd's and
 * the launchers' sockets in the working directory, then the installed
 * service's (scripts/systemd/rdvd.service runs in /var/lib/rdvd). */
static const char *const default_sockets[] = { "rdvd.sock", "hbbs.sock", "hbbr.sock", "/var/lib/rdvd/rdvd.sock" };

static const char *default_socket(void)
{
    for (size_t i = 0; i < sizeof default_sockets / sizeof default_sockets[0]; i++)
        if (access(default_sockets[i], F_OK) == 0)
            return default_sockets[i];
    return default_sockets[0];
}

static int run_command(const char *path, const char *line)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sun.sun_path) {
        fprintf(stderr, "rdvctl: socket path too long: %s\n", path);
        return 1;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        fprintf(stderr, "rdvctl: cannot connect to %s: %s (is rdvd running? see core.admin_socket)\n", path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    size_t n = strlen(line);
    if (write(fd, line, n) != (ssize_t)n || write(fd, "\n", 1) != 1) {
        close(fd);
        return 1;
    }
    shutdown(fd, SHUT_WR);
    char buf[4096];
    ssize_t r;
    /* A command the server could not run exits 1, so that scripts see it. */
    static const char *const failed[] = { RDV_ADMIN_UNKNOWN, RDV_ADMIN_RELOAD_REFUSED };
    char head[32] = "";
    size_t nhead = 0;
    while ((r = read(fd, buf, sizeof buf)) > 0) {
        if (nhead < sizeof head - 1) {
            size_t k = (size_t)r < sizeof head - 1 - nhead ? (size_t)r : sizeof head - 1 - nhead;
            memcpy(head + nhead, buf, k);
            head[nhead += k] = 0;
        }
        fwrite(buf, 1, (size_t)r, stdout);
    }
    close(fd);
    for (size_t i = 0; i < sizeof failed / sizeof failed[0]; i++)
        if (strncmp(head, failed[i], strlen(failed[i])) == 0)
            return 1;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: rdvctl [-s SOCKET] console           interactive admin console\n"
               "       rdvctl [-s SOCKET] cmd WORDS...      run one admin command (e.g. rdvctl cmd stats)\n"
               "       rdvctl genkeypair                    generate a new key pair\n"
               "       rdvctl validatekeypair PUBLIC SECRET check an existing key pair\n"
               "       rdvctl --version\n"
               "SOCKET: -s, else $RDVD_SOCKET, else the first that exists of ./rdvd.sock, ./hbbs.sock,\n"
               "./hbbr.sock and /var/lib/rdvd/rdvd.sock\n");
}

/* ---- key pairs, as rustdesk-utils: libsodium Ed25519, standard base64 */

/* Decode standard padded base64 into a malloc'ed buffer; NULL if it is not
 * base64 (or out of memory). */
static uint8_t *b64_decode(const char *s, size_t *n)
{
    size_t len = strlen(s), cap = len / 4 * 3 + 3;
    uint8_t *p = malloc(cap);
    if (p && sodium_base642bin(p, cap, s, len, NULL, n, NULL, sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(p);
        p = NULL;
    }
    return p;
}

static int genkeypair(void)
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char pks[sodium_base64_ENCODED_LEN(sizeof pk, sodium_base64_VARIANT_ORIGINAL)];
    char sks[sodium_base64_ENCODED_LEN(sizeof sk, sodium_base64_VARIANT_ORIGINAL)];
    crypto_sign_keypair(pk, sk);
    sodium_bin2base64(pks, sizeof pks, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    sodium_bin2base64(sks, sizeof sks, sk, sizeof sk, sodium_base64_VARIANT_ORIGINAL);
    printf("Public Key:  %s\nSecret Key:  %s\n", pks, sks);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(sks, sizeof sks);
    return 0;
}

/* Checks in upstream's order, one line and status 1 on the first failure. */
static int validatekeypair(int argc, char **argv)
{
    if (argc < 2) {
        printf("ERROR: You must supply both the public and the secret key\n\n");
        usage(stdout);
        return 1;
    }
    const char *msg = NULL;
    size_t skn = 0, pkn = 0;
    uint8_t *sk = b64_decode(argv[1], &skn), *pk = NULL;
    if (!sk)
        msg = "Invalid secret key";
    else if (skn != crypto_sign_SECRETKEYBYTES)
        msg = "Invalid Secret key";
    else if (!(pk = b64_decode(argv[0], &pkn)))
        msg = "Invalid public key";
    else if (pkn != crypto_sign_PUBLICKEYBYTES)
        msg = "Invalid Public key";
    if (!msg) {
        static const char text[] = "This is meh.";
        uint8_t sm[crypto_sign_BYTES + sizeof text], m[sizeof sm];
        unsigned long long smlen, mlen;
        crypto_sign(sm, &smlen, (const uint8_t *)text, sizeof text - 1, sk);
        bool ok = crypto_sign_open(m, &mlen, sm, smlen, pk) == 0 && mlen == sizeof text - 1 &&
                  memcmp(m, text, mlen) == 0;
        msg = ok ? "Key pair is VALID" : "Key pair is INVALID";
    }
    if (sk)
        sodium_memzero(sk, skn);
    free(sk);
    free(pk);
    printf("%s\n", msg);
    return strcmp(msg, "Key pair is VALID") == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *sock = getenv("RDVD_SOCKET") ? getenv("RDVD_SOCKET") : default_socket();
    int i = 1;
    if (i + 1 < argc && strcmp(argv[i], "-s") == 0) {
        sock = argv[i + 1];
        i += 2;
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[i], "--version") == 0) {
        printf("rdvctl %s\n", RDV_VERSION);
        return 0;
    }
    /* The command word is case-insensitive, as in rustdesk-utils. */
    if (strcasecmp(argv[i], "genkeypair") == 0 || strcasecmp(argv[i], "validatekeypair") == 0) {
        if (sodium_init() < 0) {
            fprintf(stderr, "rdvctl: libsodium failed to initialise\n");
            return 1;
        }
        return strcasecmp(argv[i], "genkeypair") == 0 ? genkeypair() : validatekeypair(argc - i - 1, argv + i + 1);
    }
    if (strcmp(argv[i], "cmd") == 0 && i + 1 < argc) {
        char line[4096] = "";
        for (int j = i + 1; j < argc; j++) {
            if (strlen(line) + strlen(argv[j]) + 2 >= sizeof line)
                return 2;
            if (j > i + 1)
                strcat(line, " ");
            strcat(line, argv[j]);
        }
        return run_command(sock, line);
    }
    if (strcmp(argv[i], "console") == 0) {
        char line[4096];
        int interactive = isatty(0), status = 0;
        if (run_command(sock, "") == 1) /* no server: say so before reading anything */
            return 1;
        for (;;) {
            if (interactive)
                fputs("rdvd> ", stdout), fflush(stdout);
            if (!fgets(line, sizeof line, stdin))
                break;
            line[strcspn(line, "\r\n")] = 0;
            if (!strcmp(line, "quit") || !strcmp(line, "exit"))
                break;
            if (*line)
                status = run_command(sock, line);
        }
        return status; /* the last command's */
    }
    usage(stderr);
    return 2;
}
