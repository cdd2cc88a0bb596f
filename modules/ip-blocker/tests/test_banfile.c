/* test_banfile.c — admin bans kept in admin_ban_file across restarts
 * (an rdvd addition: upstream hbbs has no bans, so no checklist item).
 *
 * A "restart" is the module destroyed (which finishes the file's writes)
 * and a new instance loaded in the same working directory. The writer is
 * a real thread: settle() waits until its outcome reached the (fake) loop.
 * Failures are made so that root cannot write past them either: a
 * directory where the file goes (read: not a regular file; rename: EISDIR)
 * or a directory that does not exist. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fakecore.h"
#include "ipblocker.h"
#include "tmpdir.h"

static fc_core *fc;
static void *st;
static char out[8192];

static void setup(void)
{
    ipbt_enter();
    fc = fc_new();
}

static void teardown(void)
{
    fc_free(fc);
    ipbt_leave();
}

TestSuite(banfile, .init = setup, .fini = teardown, .timeout = 60);

static void load(const char *conf) { cr_assert_eq(fc_load(fc, rdv_module_get(), conf, &st), 0); }

static void restart(const char *conf)
{
    fc_unload(fc, rdv_module_get(), st);
    load(conf);
}

static const char *admin(const char *line)
{
    fc_admin(fc, line, out, sizeof out);
    return out;
}

static bool dropped(const char *from) { return ipbt_udp_from(fc, from) == RDV_CLOSE; }

/* Until the writer has nothing in flight and its outcome was seen. */
static void settle(void)
{
    ipblocker *b = st;
    for (int i = 0; i < 10000; i++) {
        fc_run_async(fc);
        if (!b->saver.busy)
            return;
        usleep(1000);
    }
    cr_assert_fail("the admin ban file writer did not finish in 10 s");
}

static uint64_t writes(void) { return fc_counter(fc, "ip-blocker.ban_file_writes"); }
static uint64_t errors(void) { return fc_counter(fc, "ip-blocker.ban_file_errors"); }

static char *slurp(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* The entries of the file: its lines that are not comments. */
static const char *entries(const char *path)
{
    static char e[65536];
    const char *text = slurp(path);
    cr_assert_not_null(text, "%s missing", path);
    e[0] = '\0';
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
        if (*p != '#')
            strncat(e, p, n);
        p += n;
    }
    return e;
}

static void put_file(const char *path, const char *text, size_t n)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, n, f), n);
    fclose(f);
}

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* ------------------------------------------------------------------ survive a restart */
Test(banfile, admin_bans_survive_a_restart_sorted_in_the_file)
{
    load(NULL);
    cr_assert_str_eq(admin("ban 10.0.0.2"), "banned 10.0.0.2, 0 connections closed\n");
    admin("ban 2001:db8::/48");
    admin("ban 9.9.9.9");
    admin("ban 198.51.100.7/24");
    admin("ban ::ffff:10.0.0.1");
    restart(NULL);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.bans"), 5);
    cr_assert(dropped("10.0.0.2:1"));
    cr_assert(dropped("198.51.100.200:1"));
    cr_assert(dropped("[2001:db8:0:ff::1]:1"));
    cr_assert_not(dropped("10.0.0.3:1"));
    admin("bans");
    cr_assert(strstr(out, "198.51.100.0/24 admin hits=1\n"), "%s", out);
    /* numeric order, IPv4 first, as ipblocker_ban_str prints them */
    cr_assert_str_eq(entries("admin-bans.txt"), "9.9.9.9\n10.0.0.1\n10.0.0.2\n198.51.100.0/24\n2001:db8::/48\n");
    const char *text = slurp("admin-bans.txt");
    cr_assert(strstr(text, "# ") == text && strstr(text, "rdvd rewrites this file on every ban and unban"), "%s",
              text);
    cr_assert(fc_log_contains(fc, "ip-blocker: 5 admin bans loaded from admin-bans.txt"));
    cr_assert_not(exists("admin-bans.txt.tmp"), "the temporary file is renamed");
}

Test(banfile, unban_survives_a_restart)
{
    load(NULL);
    admin("ban 192.0.2.1");
    admin("ban 192.0.2.2");
    cr_assert_str_eq(admin("unban 192.0.2.1"), "unbanned 192.0.2.1\n");
    restart(NULL);
    admin("bans");
    cr_assert_str_eq(out, "1\n192.0.2.2 admin hits=0\n");
    cr_assert_not(dropped("192.0.2.1:1"));
    admin("unban 192.0.2.2");
    restart(NULL);
    cr_assert_str_eq(admin("bans"), "0\n");
    cr_assert_str_eq(entries("admin-bans.txt"), "", "the header stays, no entries");
}

Test(banfile, unban_of_a_configured_and_admin_ban_takes_it_out_of_the_file)
{
    const char *conf = "ban = 192.0.2.7\n";
    load(conf);
    admin("ban 192.0.2.7");
    admin("bans");
    cr_assert_str_eq(out, "1\n192.0.2.7 conf,admin hits=0\n");
    settle();
    cr_assert_str_eq(entries("admin-bans.txt"), "192.0.2.7\n");
    cr_assert_str_eq(admin("unban 192.0.2.7"), "unbanned 192.0.2.7 (configured: back on the next reload)\n");
    settle();
    cr_assert_str_eq(entries("admin-bans.txt"), "");
    restart(conf);
    admin("bans");
    cr_assert_str_eq(out, "1\n192.0.2.7 conf hits=0\n", "the configured one is back, not the admin one");
}

Test(banfile, changes_that_are_not_to_admin_bans_leave_the_file_alone)
{
    load("ban = 192.0.2.7\n");
    admin("ban 10.0.0.1");
    settle();
    cr_assert_eq(writes(), 1);
    admin("unban 192.0.2.7"); /* configured only */
    admin("ban 10.0.0.1");    /* already an admin ban */
    admin("unban 10.9.9.9");  /* not banned */
    admin("ban nonsense");
    cr_assert_not(((ipblocker *)st)->saver.busy || ((ipblocker *)st)->saver.dirty, "nothing to write");
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "ban = 192.0.2.8\n"), 0);
    cr_assert_not(((ipblocker *)st)->saver.busy, "a reload keeps the admin bans: nothing to write");
    fc_unload(fc, rdv_module_get(), st);
    cr_assert_eq(writes(), 1);
    cr_assert_str_eq(entries("admin-bans.txt"), "10.0.0.1\n");
}

/* ------------------------------------------------------------------ writing */
Test(banfile, changes_during_a_write_make_one_more_write)
{
    load(NULL);
    /* The loop sees the first write's outcome only in fc_run_async: until
     * then every ban finds it in flight. */
    for (int i = 1; i <= 20; i++) {
        char cmd[32];
        snprintf(cmd, sizeof cmd, "ban 10.0.1.%d", i);
        admin(cmd);
    }
    settle();
    settle(); /* the coalesced write handed over by the first outcome */
    cr_assert_eq(writes(), 2, "one write, then one of the latest state");
    const char *e = entries("admin-bans.txt");
    cr_assert(strstr(e, "10.0.1.1\n10.0.1.2\n") == e && strstr(e, "10.0.1.20\n"), "%s", e);
}

Test(banfile, a_ban_right_before_shutdown_is_on_disk)
{
    load(NULL);
    admin("ban 203.0.113.1"); /* handed to the writer */
    admin("ban 203.0.113.2"); /* waits for it */
    fc_unload(fc, rdv_module_get(), st);
    cr_assert_str_eq(entries("admin-bans.txt"), "203.0.113.1\n203.0.113.2\n");
}

Test(banfile, a_failed_write_is_counted_keeps_the_ban_and_is_retried)
{
    load(NULL);
    admin("ban 10.0.0.1");
    settle();
    cr_assert_eq(writes(), 1);
    /* the file replaced by a directory: rename() fails, for root too */
    cr_assert_eq(unlink("admin-bans.txt"), 0);
    cr_assert_eq(mkdir("admin-bans.txt", 0700), 0);
    put_file("admin-bans.txt/x", "x", 1);
    cr_assert_str_eq(admin("ban 10.0.0.2"), "banned 10.0.0.2, 0 connections closed\n");
    settle();
    cr_assert_eq(errors(), 1);
    cr_assert(fc_log_contains(fc, "cannot save the admin bans to admin-bans.txt (rename: Is a directory): they stay in "
                                  "force but a restart would lose the changes; retried every 60s; fix the cause "
                                  "(disk space, rights on .)"));
    cr_assert(dropped("10.0.0.2:1"), "in force all the same");
    cr_assert_eq(fc_gauge(fc, "ip-blocker.bans"), 2);
    /* the next answer says the last save failed */
    cr_assert_str_eq(admin("ban 10.0.0.3"),
                     "banned 10.0.0.3, 0 connections closed\nnote: the last save of the admin bans to admin-bans.txt "
                     "failed (Is a directory): a restart would lose changes; see the log\n");
    settle();
    cr_assert_eq(errors(), 2);
    cr_assert(exists("admin-bans.txt/x") && !exists("admin-bans.txt.tmp"), "the temporary file is removed");
    /* fixed: the prune timer's retry writes the whole list */
    cr_assert_eq(unlink("admin-bans.txt/x"), 0);
    cr_assert_eq(rmdir("admin-bans.txt"), 0);
    fc_advance(fc, 60000);
    settle();
    cr_assert_eq(writes(), 2);
    cr_assert(fc_log_contains(fc, "admin bans saved to admin-bans.txt again"));
    cr_assert_str_eq(entries("admin-bans.txt"), "10.0.0.1\n10.0.0.2\n10.0.0.3\n");
    cr_assert_str_eq(admin("ban 10.0.0.4"), "banned 10.0.0.4, 0 connections closed\n", "no note any more");
}

Test(banfile, a_write_still_failing_at_shutdown_is_logged)
{
    cr_assert_eq(mkdir("d", 0700), 0);
    load("admin_ban_file = \"d/bans.txt\"\n");
    cr_assert_eq(rmdir("d"), 0); /* gone after start: every open fails */
    admin("ban 10.0.0.1");
    settle();
    cr_assert_eq(errors(), 1);
    cr_assert(fc_log_contains(fc, "cannot save the admin bans to d/bans.txt (open: No such file or directory)"));
    fc_unload(fc, rdv_module_get(), st);
    cr_assert(fc_log_contains(fc, "cannot save the admin bans to d/bans.txt at shutdown (open: No such file"));
}

Test(banfile, an_empty_setting_keeps_admin_bans_in_memory_only)
{
    load("admin_ban_file = \"\"\n");
    cr_assert_str_eq(admin("ban 10.0.0.1"), "banned 10.0.0.1, 0 connections closed\n");
    restart("admin_ban_file = \"\"\n");
    cr_assert_str_eq(admin("bans"), "0\n", "today's behaviour");
    fc_unload(fc, rdv_module_get(), st);
    DIR *d = opendir(".");
    int files = 0;
    for (struct dirent *e; (e = readdir(d));)
        files += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    cr_assert_eq(files, 0, "nothing written");
    cr_assert_eq(writes() + errors(), 0);
}

Test(banfile, the_file_is_not_reloadable)
{
    load(NULL);
    cr_assert_eq(fc_reconfigure(fc, rdv_module_get(), st, "admin_ban_file = \"other.txt\"\n"), -EPERM);
    cr_assert(fc_log_contains(fc, "ip-blocker.admin_ban_file cannot change without a restart"));
}

/* ------------------------------------------------------------------ loading */
Test(banfile, a_missing_file_is_a_first_start)
{
    load(NULL);
    cr_assert_eq(fc_gauge(fc, "ip-blocker.bans"), 0);
    cr_assert(fc_log_contains(fc, "no admin bans yet (admin-bans.txt is written at the first ban)"));
    fc_unload(fc, rdv_module_get(), st);
    cr_assert_not(exists("admin-bans.txt"), "neither check nor start creates it");
}

Test(banfile, bad_lines_are_skipped_and_the_rest_loaded)
{
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "# made by hand\n"
                     "10.0.0.1\n"
                     "\n"
                     "nonsense\n"                        /* 4 */
                     "  10.0.0.2/32   # with a comment\r\n"
                     "10.0.0.3 10.0.0.4\n"               /* 6 */
                     "10.0.0.300\n"                      /* 7 */
                     "\t2001:db8::/32\n"
                     "10.0.0.5/33\n"                     /* 9 */
                     "bad\x01\xff\n"                     /* 10 */
                     "%s\n"                              /* 11: too long, all entry */
                     "10.0.0.6   # %s\n"                 /* 12: long, the excess in the comment */
                     "10.0.0.7",                         /* 13: no newline at the end */
                     "11111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111"
                     "11111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111"
                     "11111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111",
                     "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
                     "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
                     "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc");
    put_file("admin-bans.txt", text, (size_t)n);
    load(NULL);
    admin("bans");
    cr_assert_eq(strncmp(out, "5\n", 2), 0, "%s", out);
    cr_assert(strstr(out, "10.0.0.1 admin") && strstr(out, "10.0.0.2 admin") && strstr(out, "2001:db8::/32 admin") &&
                  strstr(out, "10.0.0.6 admin") && strstr(out, "10.0.0.7 admin"),
              "%s", out);
    cr_assert(fc_log_contains(fc, "admin-bans.txt:4: 'nonsense' is not an IP address or CIDR: skipped"));
    cr_assert(fc_log_contains(fc, "admin-bans.txt:6: '10.0.0.3 10.0.0.4' is not"));
    cr_assert(fc_log_contains(fc, "admin-bans.txt:7: '10.0.0.300' is not"));
    cr_assert(fc_log_contains(fc, "admin-bans.txt:9: '10.0.0.5/33' is not"));
    cr_assert(fc_log_contains(fc, "admin-bans.txt:10: 'bad\\x01\\xff' is not"));
    cr_assert(fc_log_contains(fc, "admin-bans.txt:11: '111111111111"));
    cr_assert(fc_log_contains(fc, "1111...' is not"));
    cr_assert_eq(fc_counter(fc, "ip-blocker.ban_file_skipped"), 6);
    cr_assert(fc_log_contains(fc, "5 admin bans loaded from admin-bans.txt"));
}

Test(banfile, a_file_of_bad_lines_logs_ten_then_a_summary)
{
    char text[4096] = "";
    for (int i = 0; i < 50; i++)
        strcat(text, "x\n");
    put_file("admin-bans.txt", text, strlen(text));
    load(NULL);
    cr_assert(fc_log_contains(fc, "admin-bans.txt:10: 'x'"));
    cr_assert_not(fc_log_contains(fc, "admin-bans.txt:11: 'x'"));
    cr_assert(fc_log_contains(fc, "admin-bans.txt: 40 more lines that are not an IP address or CIDR skipped"));
    cr_assert_eq(fc_counter(fc, "ip-blocker.ban_file_skipped"), 50);
}

Test(banfile, past_ban_max_the_first_are_kept)
{
    const char *text = "10.0.0.1\n10.0.0.9\n10.0.0.2\n10.0.0.3\n10.0.0.4\n";
    put_file("admin-bans.txt", text, strlen(text));
    /* 10.0.0.9 is also configured: it takes no second place */
    load("ban = 10.0.0.9\nban_max = 3\n");
    admin("bans");
    cr_assert_eq(strncmp(out, "3\n", 2), 0, "%s", out);
    cr_assert(strstr(out, "10.0.0.9 conf,admin") && strstr(out, "10.0.0.1 admin") && strstr(out, "10.0.0.2 admin"),
              "%s", out);
    cr_assert(fc_log_contains(fc, "admin-bans.txt: 2 admin bans past ip-blocker.ban_max = 3 (configured bans "
                                  "included) not loaded, the first 3 kept"));
    cr_assert_eq(fc_counter(fc, "ip-blocker.ban_file_skipped"), 2);
}

Test(banfile, a_file_that_cannot_be_read_refuses_start)
{
    /* a directory where the file should be: unreadable as a file, for root too */
    cr_assert_eq(mkdir("admin-bans.txt", 0700), 0);
    cr_assert_eq(fc_load(fc, rdv_module_get(), NULL, &st), -EINVAL);
    cr_assert(fc_log_contains(fc, "ip-blocker.admin_ban_file: admin-bans.txt is not a regular file (a directory?)"));
    cr_assert(fc_log_contains(fc, "set it to \"\""));
    cr_assert_eq(rmdir("admin-bans.txt"), 0);
    if (geteuid() != 0) { /* permissions stop everyone but root */
        put_file("admin-bans.txt", "10.0.0.1\n", 9);
        cr_assert_eq(chmod("admin-bans.txt", 0), 0);
        fc_log_clear(fc);
        cr_assert_eq(fc_load(fc, rdv_module_get(), NULL, &st), -EINVAL);
        cr_assert(fc_log_contains(fc, "ip-blocker.admin_ban_file: cannot read admin-bans.txt: Permission denied; it "
                                      "holds the admin bans, read at start; fix: make it readable for rdvd"));
    }
}

Test(banfile, a_directory_that_cannot_be_written_refuses_start)
{
    cr_assert_eq(fc_load(fc, rdv_module_get(), "admin_ban_file = \"nodir/bans.txt\"\n", &st), -EINVAL);
    cr_assert(fc_log_contains(fc, "ip-blocker.admin_ban_file: cannot write in nodir, the directory of nodir/bans.txt "
                                  "(No such file or directory), so admin bans could not be saved; fix: make it "
                                  "writable for rdvd, or point ip-blocker.admin_ban_file elsewhere, or set it to "
                                  "\"\""));
    if (geteuid() != 0) {
        cr_assert_eq(mkdir("ro", 0500), 0);
        fc_log_clear(fc);
        cr_assert_eq(fc_load(fc, rdv_module_get(), "admin_ban_file = \"ro/bans.txt\"\n", &st), -EINVAL);
        cr_assert(fc_log_contains(fc, "cannot write in ro, the directory of ro/bans.txt (Permission denied)"));
    }
    /* an absolute path */
    char path[128];
    snprintf(path, sizeof path, "admin_ban_file = \"%s/abs.txt\"\n", ipbt_dir);
    load(path);
    admin("ban 10.0.0.1");
    fc_unload(fc, rdv_module_get(), st);
    cr_assert_str_eq(entries("abs.txt"), "10.0.0.1\n");
}

/* ------------------------------------------------------------------ the text */
typedef struct collected {
    ipblocker_ban_key keys[16];
    size_t n, bad;
} collected;

static int collect(void *ud, unsigned long line, const ipblocker_ban_key *key, const char *text)
{
    collected *c = ud;
    (void)line, (void)text;
    if (!key)
        c->bad++;
    else if (c->n < 16)
        c->keys[c->n++] = *key;
    return 0;
}

Test(banfile, format_then_parse_gives_the_same_list)
{
    const char *in[] = { "2001:db8::1", "10.0.0.0/8", "::/0", "9.0.0.1", "0.0.0.0/0", "10.0.0.0/16", "::ffff:0:0/95" };
    ipblocker_ban_key keys[7];
    for (size_t i = 0; i < 7; i++)
        cr_assert(ipblocker_parse_ban(in[i], &keys[i]), "%s", in[i]);
    char buf[4096];
    cr_assert_leq(ipblocker_banfile_size(7), sizeof buf);
    size_t len = ipblocker_banfile_format(keys, 7, buf, sizeof buf);
    cr_assert_eq(len, strlen(buf));
    const char *body = strstr(buf, "\n0.0.0.0/0\n");
    cr_assert_not_null(body, "%s", buf);
    cr_assert_str_eq(body + 1, "0.0.0.0/0\n9.0.0.1\n10.0.0.0/8\n10.0.0.0/16\n::/0\n::fffe:0:0/95\n2001:db8::1\n");
    FILE *f = fmemopen(buf, len, "r");
    collected c = { 0 };
    cr_assert_eq(ipblocker_banfile_parse(f, collect, &c), 0);
    fclose(f);
    cr_assert_eq(c.bad, 0);
    cr_assert_eq(c.n, 7);
    cr_assert_eq(memcmp(c.keys, keys, sizeof keys), 0, "same keys, same (sorted) order");
    cr_assert_eq(ipblocker_banfile_format(keys, 7, buf, ipblocker_banfile_size(7) - 1), 0, "too small: nothing");
}
