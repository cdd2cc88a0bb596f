/* tmpdir.h — helpers of the ip-blocker suites. Each test runs in a fresh temporary
 * working directory: admin_ban_file ("admin-bans.txt" by default) is
 * relative to it, and one test's bans must not reach the next. Criterion
 * runs every test in its own process, so chdir() is per test. */
#ifndef IPB_TEST_TMPDIR_H
#define IPB_TEST_TMPDIR_H

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fakecore.h"

static char ipbt_dir[64];

static void ipbt_enter(void)
{
    snprintf(ipbt_dir, sizeof ipbt_dir, "/tmp/ipbt-XXXXXX");
    cr_assert_not_null(mkdtemp(ipbt_dir));
    cr_assert_eq(chdir(ipbt_dir), 0);
}

static int ipbt_rm(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    chmod(p, 0700); /* a test may have taken the rights away */
    return remove(p);
}

static void ipbt_leave(void)
{
    if (chdir("/") == 0 && ipbt_dir[0])
        nftw(ipbt_dir, ipbt_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* A RegisterPeer datagram from `from` on "main": RDV_CLOSE when the ACCESS
 * phase drops it, -ENOENT when it passes (nobody in these suites handles
 * RegisterPeer). Shared by test_ban.c and test_banfile.c. */
static inline int ipbt_udp_from(fc_core *fc, const char *from)
{
    Hbb__RegisterPeer rp = HBB__REGISTER_PEER__INIT;
    rp.id = "abcdef";
    Hbb__RendezvousMessage m = HBB__RENDEZVOUS_MESSAGE__INIT;
    m.union_case = HBB__RENDEZVOUS_MESSAGE__UNION_REGISTER_PEER;
    m.register_peer = &rp;
    rdv_addr a = fc_addr(from);
    return fc_udp(fc, "main", &a, &m);
}

#endif
