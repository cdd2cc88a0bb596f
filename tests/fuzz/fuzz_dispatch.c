/* libFuzzer: frame codec + envelope unpack + ACCESS + dispatch, through the
 * real core with the example module (issue #2). The input is treated as a
 * TCP byte stream (split at frame boundaries, like a connection would) and
 * every payload is also dispatched as a UDP datagram. The shipped modules
 * are fuzzed through real sockets by fuzz_node. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rdv/wire.h"
#include "fuzz_paths.h"
#include "server.h"

static rdv_server srv;
static rdv_listener *udp;
static rdv_addr peer;

static void boot(void)
{
    char dir[] = "/tmp/rdv-fuzz-XXXXXX";
    if (!mkdtemp(dir) || chdir(dir) != 0)
        abort();
    char conf[2048];
    /* A UDP listener on loopback so UDP replies really go out (to the
     * discard port of 127.0.0.1); the port is chosen from the pid. */
    int port = 40000 + (int)(getpid() % 20000);
    snprintf(conf, sizeof conf,
             "core: { modules = [ \"example\" ]; admin_socket = \"\"; log_level = \"error\";\n"
             "  listeners = ( { name = \"example\"; bind = \"127.0.0.1\"; port = %d; udp = true; tcp = false; } ); };\n",
             port);
    rdv_boot b = { .conf_text = conf, .conf_text_name = "fuzz" };
    if (rdv_server_init(&srv, &b) != 0)
        abort();
    for (udp = srv.listeners; udp && udp->transport != RDV_TR_UDP; udp = udp->next)
        ;
    rdv_addr_parse(&peer, "127.0.0.1:9", 0);
}

/* boot() moves to a temporary directory: libFuzzer's relative paths first. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_absolute_paths(argc, argv);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv.loop)
        boot();
    size_t off = 0, hl, pl;
    while (off < size) {
        rdv_frame_status st = rdv_frame_parse(data + off, size - off, (size_t)srv.cfg.max_frame, &hl, &pl);
        if (st != RDV_FRAME_OK)
            break;
        const uint8_t *p = data + off + hl;
        rdv_dispatch(&srv, RDV_TR_TCP, udp, "example", 0, &peer, p, pl);
        rdv_dispatch(&srv, RDV_TR_UDP, udp, "example", 0, &peer, p, pl);
        off += hl + pl;
    }
    return 0;
}
