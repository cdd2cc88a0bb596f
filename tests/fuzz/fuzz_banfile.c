/* libFuzzer: ip-blocker's admin ban file (ipblocker_banfile.c) and its
 * loading at start (ipblocker_banwriter.c) on the fake core.
 *
 * The input is the file. Invariants: what the writer formats from the
 * entries found parses back to the same entries, none of them bad (a file
 * rdvd wrote is always read whole); the module started on it holds the
 * configured ban plus as many distinct entries as ban_max (8) leaves, and
 * counts every bad line and every entry past ban_max as skipped; nothing
 * leaks (ASan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../fakecore/fakecore.h"
#include "fuzz_paths.h"
#include "ipblocker.h"

#define CHECK(x) ((x) ? (void)0 : abort())
#define BAN_MAX 8

const rdv_module *rdv_module_get(void);

static fc_core *fc;

typedef struct found {
    ipblocker_ban_key *keys;
    size_t n, cap, bad;
} found;

static int collect(void *ud, unsigned long line, const ipblocker_ban_key *key, const char *text)
{
    found *f = ud;
    CHECK(line > 0 && text && strlen(text) < 80);
    if (!key) {
        f->bad++;
        return 0;
    }
    CHECK(f->n < f->cap);
    f->keys[f->n++] = *key;
    return 0;
}

static void parse(const char *p, size_t n, found *f)
{
    FILE *m = fmemopen((void *)p, n, "r");
    CHECK(m);
    CHECK(ipblocker_banfile_parse(m, collect, f) == 0);
    fclose(m);
}

static char dir[] = "/tmp/fuzz-banfile-XXXXXX"; /* admin-bans.txt goes there */

static void cleanup(void)
{
    unlink("admin-bans.txt");
    if (chdir("/") == 0)
        rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_absolute_paths(argc, argv);
    CHECK(mkdtemp(dir) && chdir(dir) == 0);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0; /* fmemopen wants a buffer */
    /* every line holds at most one entry: size bounds them */
    found a = { .cap = size / 2 + 1 }, b = { 0 };
    a.keys = malloc(a.cap * sizeof *a.keys);
    CHECK(a.keys);
    parse((const char *)data, size, &a);

    /* what start must keep: the configured ban, then the file's entries
     * in their order while ban_max allows (a known one takes no room);
     * worked out before formatting sorts a.keys */
    ipblocker_ban_key set[BAN_MAX];
    size_t nset = 1, over = 0;
    CHECK(ipblocker_parse_ban("10.0.0.1", &set[0]));
    for (size_t i = 0; i < a.n; i++) {
        bool known = false;
        for (size_t j = 0; j < nset && !known; j++)
            known = ipblocker_ban_key_cmp(&set[j], &a.keys[i]) == 0;
        if (!known && nset < BAN_MAX)
            set[nset++] = a.keys[i];
        else if (!known)
            over++;
    }

    /* format, parse back: the same entries in the same (sorted) order */
    size_t cap = ipblocker_banfile_size(a.n);
    char *text = malloc(cap);
    CHECK(text);
    size_t len = ipblocker_banfile_format(a.keys, a.n, text, cap);
    CHECK(len > 0 && len < cap && strlen(text) == len);
    b.cap = a.n + 1;
    b.keys = malloc(b.cap * sizeof *b.keys);
    CHECK(b.keys);
    parse(text, len, &b);
    CHECK(b.bad == 0 && b.n == a.n);
    CHECK(a.n == 0 || memcmp(a.keys, b.keys, a.n * sizeof *a.keys) == 0);
    for (size_t i = 1; i < a.n; i++)
        CHECK(ipblocker_ban_key_cmp(&a.keys[i - 1], &a.keys[i]) <= 0);

    /* the module started on it */
    FILE *f = fopen("admin-bans.txt", "w");
    CHECK(f && fwrite(data, 1, size, f) == size && fclose(f) == 0);
    if (!fc)
        fc = fc_new(); /* one for the process: a new one per input costs 5x */
    void *st;
    uint64_t skipped = fc_counter(fc, "ip-blocker.ban_file_skipped");
    CHECK(fc_load(fc, rdv_module_get(), "ban = 10.0.0.1\nban_max = 8\n", &st) == 0);
    CHECK(fc_gauge(fc, "ip-blocker.bans") == nset);
    CHECK(fc_counter(fc, "ip-blocker.ban_file_skipped") - skipped == a.bad + over);
    fc_unload(fc, rdv_module_get(), st);
    fc_log_clear(fc);

    free(a.keys), free(b.keys), free(text);
    return 0;
}
