/* bench/src/udpecho.c — the reference "limit of this machine" for the UDP
 * benchmark: a single-threaded epoll server on one UDP socket that sends
 * every datagram straight back to its source, in batches (recvmmsg +
 * sendmmsg). It does no parsing at all, so what rdvd reaches relative to it
 * is the cost of rdvd's own work per datagram.
 *
 * Runs until SIGTERM/SIGINT or -L seconds; prints its datagram counts and
 * CPU on exit. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

#define BATCH 64
#define DGRAM_MAX 2048

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    bool have = false;
    int rcvbuf = 4 << 20;
    double life_s = 3600;
    int c;
    while ((c = getopt(argc, argv, "l:b:L:")) != -1) {
        switch (c) {
        case 'l': bn_parse_addr(&addr, optarg), have = true; break;
        case 'b': rcvbuf = (int)bn_atoll(optarg, "-b", 0, 1 << 30); break;
        case 'L': life_s = bn_atof(optarg, "-L", 0.1, 86400); break;
        default: have = false, optind = argc; break;
        }
    }
    if (!have) {
        fprintf(stderr, "usage: udpecho -l IP:PORT [-b sockbuf] [-L lifetime_s]\n");
        return 2;
    }
    bn_on_signals();
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        bn_die("socket: %s", strerror(errno));
    bn_set_bufs(fd, rcvbuf);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        bn_die("bind: %s", strerror(errno));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);

    static uint8_t data[BATCH][DGRAM_MAX];
    static struct iovec iov[BATCH];
    static struct sockaddr_in from[BATCH];
    static struct mmsghdr mm[BATCH];
    uint64_t in = 0, out = 0, t_end = bn_now_ns() + (uint64_t)(life_s * 1e9);
    fprintf(stderr, "udpecho: listening\n");
    while (!bn_stop && bn_now_ns() < t_end) {
        struct epoll_event e;
        if (epoll_wait(ep, &e, 1, 100) <= 0)
            continue;
        /* Bounded work per wake-up, like a real server's batch limit. */
        for (int round = 0; round < 16; round++) {
            for (int i = 0; i < BATCH; i++) {
                iov[i].iov_base = data[i];
                iov[i].iov_len = DGRAM_MAX;
                memset(&mm[i].msg_hdr, 0, sizeof mm[i].msg_hdr);
                mm[i].msg_hdr.msg_iov = &iov[i];
                mm[i].msg_hdr.msg_iovlen = 1;
                mm[i].msg_hdr.msg_name = &from[i];
                mm[i].msg_hdr.msg_namelen = sizeof from[i];
            }
            int r = recvmmsg(fd, mm, BATCH, MSG_DONTWAIT, NULL);
            if (r <= 0)
                break;
            in += (uint64_t)r;
            for (int i = 0; i < r; i++)
                iov[i].iov_len = mm[i].msg_len;
            int done = 0;
            while (done < r) {
                int s = sendmmsg(fd, mm + done, (unsigned)(r - done), MSG_DONTWAIT);
                if (s <= 0)
                    break; /* a full send buffer drops the rest, as UDP does */
                done += s;
            }
            out += (uint64_t)done;
            if (r < BATCH)
                break;
        }
    }
    bn_kv("echo_in", "%llu", (unsigned long long)in);
    bn_kv("echo_out", "%llu", (unsigned long long)out);
    bn_kv("echo_cpu_s", "%.3f", (double)bn_self_cpu_ns() / 1e9);
    close(ep);
    close(fd);
    return 0;
}
