/* fuzz_paths.h — for harnesses that work in a temporary directory of their
 * own (chdir there): libFuzzer opens the corpus directories, the inputs to
 * replay and its artifact paths against the working directory when it uses
 * them, after the harness has moved. A relative corpus then reads as empty
 * inputs ("no interesting inputs were found"), and crash files land in the
 * temporary directory. Called from LLVMFuzzerInitialize, which libFuzzer
 * runs before it reads its arguments, this makes every relative path
 * argument absolute. */
#ifndef RDV_FUZZ_PATHS_H
#define RDV_FUZZ_PATHS_H

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void fuzz_absolute_paths(int *argc, char ***argv)
{
    /* the path-valued flags (seed_inputs, a list, is left as given) */
    static const char *const flags[] = { "-artifact_prefix=", "-exact_artifact_path=", "-dict=", "-features_dir=",
                                         "-merge_control_file=", NULL };
    char cwd[4096];
    char **out;
    if (!getcwd(cwd, sizeof cwd) || !(out = calloc((size_t)*argc + 1, sizeof *out)))
        return; /* arguments stay as given */
    for (int i = 0; i < *argc; i++) {
        char *a = (*argv)[i];
        const char *flag = "", *val = i > 0 && a[0] != '-' ? a : NULL; /* a corpus or an input */
        for (int k = 0; !val && i > 0 && flags[k]; k++)
            if (strncmp(a, flags[k], strlen(flags[k])) == 0)
                flag = flags[k], val = a + strlen(flags[k]);
        out[i] = a;
        if (val && *val && *val != '/') {
            size_t n = strlen(flag) + strlen(cwd) + 1 + strlen(val) + 1;
            char *abs = malloc(n); /* kept: libFuzzer holds on to argv */
            if (abs) {
                memcpy(abs, flag, strlen(flag));
                abs[strlen(flag)] = '\0';
                strcat(strcat(strcat(abs, cwd), "/"), val);
                out[i] = abs;
            }
        }
    }
    *argv = out;
}

#endif
