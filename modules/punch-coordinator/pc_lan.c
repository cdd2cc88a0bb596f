/* pc_lan.c — the deprecated but functional LAN mask and local IP
 * (rendezvous.md §8.2): peers inside `mask` are "LAN"; LAN peers are told
 * the relay's LAN address `local_ip`. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pc.h"

int pc_parse_mask(const char *s, uint32_t *net, uint32_t *bits)
{
    char ip[INET_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof ip)
        return -EINVAL;
    memcpy(ip, s, n);
    ip[n] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, ip, &a) != 1)
        return -EINVAL;
    unsigned b = 32;
    if (slash) {
        const char *q = slash + 1;
        if (!*q || strlen(q) > 3)
            return -EINVAL;
        b = 0;
        for (; *q; q++) {
            if (*q < '0' || *q > '9')
                return -EINVAL;
            b = b * 10 + (unsigned)(*q - '0');
        }
        if (b > 32)
            return -EINVAL;
    }
    *net = ntohl(a.s_addr), *bits = b;
    return 0;
}

/* The IPv4 inside an address: v4 itself, or the last 32 bits of an
 * IPv4-mapped/-compatible v6 one (upstream's to_ipv4(), which also turns
 * ::1 into 0.0.0.1). */
static bool pc_v4_of(const rdv_addr *a, uint32_t *ip)
{
    if (a->u.sa.sa_family == AF_INET) {
        *ip = ntohl(a->u.v4.sin_addr.s_addr);
        return true;
    }
    if (a->u.sa.sa_family != AF_INET6)
        return false;
    const uint8_t *b = a->u.v6.sin6_addr.s6_addr;
    static const uint8_t zero[10];
    if (memcmp(b, zero, 10) != 0 || !((b[10] == 0 && b[11] == 0) || (b[10] == 0xff && b[11] == 0xff)))
        return false;
    *ip = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
    return true;
}

bool pc_is_lan(const pc *p, const rdv_addr *a)
{
    uint32_t ip;
    if (!p->mask_on || !pc_v4_of(a, &ip))
        return false;
    uint32_t m = p->mask_bits ? 0xffffffffu << (32 - p->mask_bits) : 0;
    return (ip & m) == (p->mask_net & m);
}

/* The host's first up, non-loopback IPv4 address (upstream asks the OS for
 * its primary address; no packet is sent either way). */
static void pc_detect_local_ip(char *out, size_t len)
{
    out[0] = '\0';
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) < 0)
        return;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) ||
            (i->ifa_flags & IFF_LOOPBACK))
            continue;
        inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out, (socklen_t)len);
        break;
    }
    freeifaddrs(ifs);
}

void pc_lan_configure(pc *p)
{
    const char *mask = p->cfg->mask;
    p->mask_on = false;
    p->local_ip[0] = '\0';
    if (!mask[0])
        return;
    if (pc_parse_mask(mask, &p->mask_net, &p->mask_bits) < 0) {
        RDV_WARN(p->core, "mask \"%s\" is not an IPv4 network (a.b.c.d/n): LAN handling off", mask);
        return;
    }
    p->mask_on = true;
    if (p->cfg->local_ip[0])
        snprintf(p->local_ip, sizeof p->local_ip, "%s", p->cfg->local_ip);
    else
        pc_detect_local_ip(p->local_ip, sizeof p->local_ip);
    RDV_INFO(p->core, "LAN mask %s, local relay address \"%s\"", mask, p->local_ip);
}
