/* relay_pair.c — what every pair has, whatever moves its bytes: linking,
 * the bandwidth snapshot taken at pairing (relay.md §6.4), ending, and the
 * one-second module tick that checks idle and stalled pairs (§4.6, §5) and
 * runs the accounting tick of quiet pairs (§6.3). */
#include <stdlib.h>
#include <string.h>

#include "relay.h"

void relay_pair_init(relay *r, relay_pair *p, const rdv_addr addr[2])
{
    uint64_t now = r->core->api->now_ms(r->core);
    p->r = r;
    p->addr[0] = addr[0], p->addr[1] = addr[1];
    p->created_ms = p->last_rx_ms = p->last_tick_ms = p->out_ms[0] = p->out_ms[1] = now;
    p->rate_single = r->bw.single_bps;
    p->rate_limit = r->bw.limit_bps;
    /* In floating point, as upstream: no overflow for console-sized values. */
    double thresh = (double)r->bw.single_bps * r->bw.dt_hundredths / 100.0 / 1000.0;
    p->thresh_bits_per_ms = thresh >= 1.8e19 ? UINT64_MAX : (uint64_t)thresh;
    /* Listed from the start: throttled at once, not after a first second
     * at full speed as upstream does. The blocklist was checked for both
     * sides just before (relay_wait_or_pair), so this generation is seen. */
    char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
    relay_ip_text(&addr[1], a, sizeof a);
    relay_ip_text(&addr[0], b, sizeof b);
    p->blacklisted = relay_set_has(&r->black, a) || relay_set_has(&r->black, b);
    p->list_gen = r->list_gen;
    relay_bucket_init(&p->bucket, p->blacklisted ? p->rate_limit : p->rate_single, now);
    p->prev = NULL;
    p->next = r->pairs;
    if (r->pairs)
        r->pairs->prev = p;
    r->pairs = p;
    r->npairs++;
    (*r->st.paired)++;
}

void relay_pair_end(relay *r, relay_pair *p, relay_end why)
{
    if (why == RELAY_END_MSG_TOTAL) {
        char a[RDV_ADDR_STRLEN], b[RDV_ADDR_STRLEN];
        RDV_LOG_RL(r->core, RDV_LOG_WARN,
                   "relay.message_total=%lld bytes held by message-mode pairs (conf.d/40-relay.conf): pair %s / %s "
                   "ended",
                   (long long)r->cfg->message_total, rdv_addr_str(&p->addr[0], a, sizeof a),
                   rdv_addr_str(&p->addr[1], b, sizeof b));
    }
    relay_unthrottle(r, p);
    if (p->prev)
        p->prev->next = p->next;
    else
        r->pairs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    r->npairs--;
    (*r->st.end[why])++;
    if (p->mode == RELAY_MODE_RAW)
        relay_raw_close(r, p);
    else
        relay_msg_close(r, p);
    free(p);
}

bool relay_pair_resume(relay *r, relay_pair *p)
{
    return p->mode == RELAY_MODE_RAW ? relay_raw_resume(r, p) : relay_msg_resume(r, p);
}

uint64_t relay_pair_out_ms(const relay_pair *p) { return p->out_ms[0] > p->out_ms[1] ? p->out_ms[0] : p->out_ms[1]; }

static bool relay_pair_pending(const relay_pair *p, int d)
{
    return p->mode == RELAY_MODE_RAW ? relay_raw_pending(p, d) : relay_msg_pending(p, d);
}

/* Every second: idle pairs (nothing received and nothing written for
 * idle_timeout_ms) and stalled ones (data pending, no write progress for
 * stall_timeout_ms) end; quiet pairs get their accounting tick. Message
 * pairs first note queues that went down (progress) and incomplete frames
 * past message_timeout_ms. */
void relay_tick_cb(void *ud)
{
    relay *r = ud;
    uint64_t now = r->core->api->now_ms(r->core);
    uint64_t idle = (uint64_t)r->cfg->idle_timeout_ms, stall = (uint64_t)r->cfg->stall_timeout_ms;
    for (relay_pair *p = r->pairs, *next; p; p = next) {
        next = p->next;
        if (p->mode == RELAY_MODE_MSG && !relay_msg_tick(r, p, now))
            continue;
        /* Stall first: a direction with data pending and no write progress
         * has a stuck reader, whatever the other direction does. */
        if ((relay_pair_pending(p, 0) && now - p->out_ms[0] >= stall) ||
            (relay_pair_pending(p, 1) && now - p->out_ms[1] >= stall)) {
            relay_pair_end(r, p, RELAY_END_STALL);
            continue;
        }
        uint64_t out = relay_pair_out_ms(p);
        uint64_t active = p->last_rx_ms > out ? p->last_rx_ms : out;
        if (now - active >= idle) {
            relay_pair_end(r, p, RELAY_END_IDLE);
            continue;
        }
        if (p->mode == RELAY_MODE_RAW)
            relay_raw_trim(r, p, now);
        relay_pair_tick(r, p, now);
    }
}
