/* keyfile.h — the server key pair on disk (rendezvous.md §3.1,
 * config-compat.md §5): id_ed25519 holds standard base64 (padded, no
 * newline) of the 64-byte libsodium Ed25519 secret key, id_ed25519.pub the
 * base64 of the 32-byte public key. */
#ifndef KEYS_KEYFILE_H
#define KEYS_KEYFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#define KEYS_SK_LEN crypto_sign_SECRETKEYBYTES /* 64 */
#define KEYS_PK_LEN crypto_sign_PUBLICKEYBYTES /* 32 */
/* base64 of the public key plus NUL: 44 + 1. */
#define KEYS_PK_STRLEN 45
/* Extra key pairs generated to avoid '/' (or ':') in the key string. */
#define KEYS_REGEN_MAX 300

/* Decode standard padded base64; true only if it is exactly 64 bytes. */
bool keys_decode_sk(const char *b64, size_t len, uint8_t sk[KEYS_SK_LEN]);
/* True if the public half of sk is the one its seed derives: a secret key
 * whose halves disagree would sign with signatures no client can verify. */
bool keys_sk_consistent(const uint8_t sk[KEYS_SK_LEN]);
/* The key string of sk's public half (44 characters). */
void keys_pk_string(const uint8_t sk[KEYS_SK_LEN], char out[KEYS_PK_STRLEN]);

/* Read the secret key file at path (contents trimmed, then decoded).
 * Returns 0, -ENOENT if there is no such file (also if its directory is
 * missing), -EBADMSG if it is not base64 of 64 consistent bytes, or another
 * -errno if it cannot be read; err says why for the last two. */
int keys_file_load(const char *path, uint8_t sk[KEYS_SK_LEN], char *err, size_t errlen);

/* Generate a key pair whose key string has no '/' or ':' (up to
 * KEYS_REGEN_MAX extra attempts), write pub_path first, then sk_path (mode
 * 0600, through a temporary file and rename so a crash never leaves half a
 * key). Returns 0, or -errno with err naming the file that failed. */
int keys_file_generate(const char *sk_path, const char *pub_path, uint8_t sk[KEYS_SK_LEN], char *err,
                       size_t errlen);

#endif
