/* tests/integration/harness_main.c — Criterion's runner, plus the check
 * Criterion cannot make: a suite's fini stops rdvd, and an unclean exit
 * there (valgrind error, sanitizer abort, hang) does not fail the test, so
 * rdvt_stop() writes it to $RDVT_EXIT_LOG and the run fails here. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char *argv[])
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/rdvt-exits-%d", (int)getpid());
    unlink(path);
    setenv("RDVT_EXIT_LOG", path, 1); /* the test workers inherit it */
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;
    if (criterion_handle_args(argc, argv, true))
        result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    FILE *f = fopen(path, "r");
    if (f) {
        char line[512];
        int bad = 0;
        while (fgets(line, sizeof line, f)) {
            if (!bad++)
                fputs("rdvd did not exit cleanly after these tests (its log is printed above each):\n", stderr);
            fprintf(stderr, "  %s", line);
        }
        fclose(f);
        unlink(path);
        if (bad)
            result = 1;
    }
    return result;
}
