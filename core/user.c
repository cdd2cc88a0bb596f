/* core/user.c — core.user: leave root right after reading the
 * configuration, before anything is opened or made (rdvd needs no
 * privilege: its ports are above 1024 and raising the soft descriptor
 * limit up to the hard one is anyone's right), so the admin socket, keys,
 * the database, worker threads and every connection belong to an
 * unprivileged user, and so do the modules' checks of their files. An
 * exploit in a parser then owns a user that can touch rdvd's working
 * directory only. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "server.h"

/* The user of core.user, or NULL with err set. Also for --check. */
static const struct passwd *user_find(const char *name, char *err, size_t errlen)
{
    errno = 0;
    const struct passwd *pw = getpwnam(name);
    if (!pw)
        snprintf(err, errlen, "core.user = \"%s\": %s; create it (useradd --system --home-dir /var/lib/rdvd "
                 "--shell /usr/sbin/nologin %s) or leave core.user empty",
                 name, errno ? strerror(errno) : "no such user", name);
    return pw;
}

int rdv_user_check(const rdv_server *s, char *err, size_t errlen)
{
    return !*s->cfg.user || user_find(s->cfg.user, err, errlen) ? 0 : -1;
}

int rdv_user_switch(rdv_server *s, char *err, size_t errlen)
{
    const char *name = s->cfg.user;
    if (!*name)
        return 0;
    const struct passwd *pw = user_find(name, err, errlen);
    if (!pw)
        return -1;
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    if (geteuid() == uid && getuid() == uid) /* already (systemd User=, su) */
        return 0;
    if (geteuid() != 0) {
        snprintf(err, errlen, "core.user = \"%s\" needs rdvd started as root (it runs as uid %u); start it as "
                 "root or leave core.user empty", name, (unsigned)geteuid());
        return -1;
    }
    if (initgroups(name, gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
        snprintf(err, errlen, "core.user = \"%s\": cannot switch to uid %u gid %u: %s", name, (unsigned)uid,
                 (unsigned)gid, strerror(errno));
        return -1;
    }
    if (uid != 0 && setuid(0) == 0) { /* never go on half-privileged */
        snprintf(err, errlen, "core.user = \"%s\": root could be regained after the switch; refusing to run", name);
        return -1;
    }
    char cwd[512];
    if (access(".", W_OK) < 0)
        rdv_logf("core", RDV_LOG_WARN, "the working directory %s is not writable by %s: the key pair, the database "
                 "and other state files go there; chown %s it", getcwd(cwd, sizeof cwd) ? cwd : ".", name, name);
    rdv_logf("core", RDV_LOG_NOTICE, "running as %s (uid %u, gid %u)", name, (unsigned)uid, (unsigned)gid);
    return 0;
}
