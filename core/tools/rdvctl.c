/* rdvctl — small utility: talk to the admin console (more commands come
 * with the rendezvous issue: genkeypair, validatekeypair, doctor). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "rdvd.sock"

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
    while ((r = read(fd, buf, sizeof buf)) > 0)
        fwrite(buf, 1, (size_t)r, stdout);
    close(fd);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: rdvctl [-s SOCKET] console           interactive admin console\n"
               "       rdvctl [-s SOCKET] cmd WORDS...      run one admin command (e.g. rdvctl cmd stats)\n"
               "       rdvctl --version\n");
}

int main(int argc, char **argv)
{
    const char *sock = getenv("RDVD_SOCKET") ? getenv("RDVD_SOCKET") : DEFAULT_SOCKET;
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
        int interactive = isatty(0);
        for (;;) {
            if (interactive)
                fputs("rdvd> ", stdout), fflush(stdout);
            if (!fgets(line, sizeof line, stdin))
                break;
            line[strcspn(line, "\r\n")] = 0;
            if (!strcmp(line, "quit") || !strcmp(line, "exit"))
                break;
            if (*line)
                run_command(sock, line);
        }
        return 0;
    }
    usage(stderr);
    return 2;
}
