/* bare_server.h — a real core (rdv_server_init) with no modules and no
 * listeners opened, for the core's unit suites that hand socketpairs to
 * rdv_conn_accept as the accept callback does. Its conf.d is a temporary
 * directory holding only the core group; stderr, where the core logs, goes
 * to a file there that a test may read (bare_server.logpath). Header-only:
 * every unit suite is an executable of its own (tests/CMakeLists.txt). */
#ifndef RDV_TEST_BARE_SERVER_H
#define RDV_TEST_BARE_SERVER_H

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "server.h"

typedef struct {
    char dir[64], logpath[128];
} bare_server;

static inline void bare_server_init(bare_server *b, rdv_server *srv, const char *tag)
{
    snprintf(b->dir, sizeof b->dir, "/tmp/rdv-%s-XXXXXX", tag);
    cr_assert_not_null(mkdtemp(b->dir));
    snprintf(b->logpath, sizeof b->logpath, "%s/stderr", b->dir);
    int lfd = open(b->logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(lfd, 0);
    cr_assert_geq(dup2(lfd, STDERR_FILENO), 0);
    close(lfd);
    char path[128];
    snprintf(path, sizeof path, "%s/00-core.conf", b->dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "core: { modules = [ ]; admin_socket = \"\"; log_level = \"warn\"; };\n");
    fclose(f);
    rdv_boot boot = { .conf_dir = b->dir };
    cr_assert_eq(rdv_server_init(srv, &boot), 0, "%s", srv->err);
}

static inline void bare_server_free(bare_server *b, rdv_server *srv)
{
    rdv_server_free(srv);
    char path[128];
    snprintf(path, sizeof path, "%s/00-core.conf", b->dir);
    unlink(path);
    unlink(b->logpath);
    rmdir(b->dir);
}

#endif
