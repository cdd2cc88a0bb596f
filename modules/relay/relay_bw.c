/* relay_bw.c — bandwidth control (relay.md §6): one global TOTAL bucket,
 * one bucket per pair (SINGLE, or LIMIT when blacklisted/downgraded), the
 * one-second accounting tick with the downgrade rule, and the throttled
 * list resumed by one module-wide refill timer (never a timer per pair).
 *
 * Buckets count milli-bits so that refills at millisecond steps lose
 * nothing to integer division; capacity is 0.1 s of the rate. */
#include <stdlib.h>
#include <string.h>

#include "relay.h"

#define RELAY_MBIT 1000 /* milli-bits per bit */
#define RELAY_REFILL_DT_MAX 10000

static int64_t relay_bucket_cap(uint64_t rate)
{
    return rate > INT64_MAX / (RELAY_MBIT / 10) ? INT64_MAX : (int64_t)(rate * (RELAY_MBIT / 10));
}

uint64_t relay_mbps_to_bps(double mbps)
{
    double v = mbps * 1048576.0;
    if (!(v > 0))
        return 0;
    if (v > 1e16) /* far above any setting's bound; keeps milli-bit math in range */
        v = 1e16;
    return (uint64_t)v;
}

void relay_bucket_init(relay_bucket *b, uint64_t rate, uint64_t now_ms)
{
    b->rate = rate;
    b->level = relay_bucket_cap(rate);
    b->last_ms = now_ms;
}

/* The refill saturates at the capacity whatever the rate and the pause
 * (rate x 10 s overflowed int64 from about 900 Tb/s): computed against
 * the room left, in unsigned arithmetic, never wrapping. */
void relay_bucket_refill(relay_bucket *b, uint64_t now_ms)
{
    if (now_ms <= b->last_ms)
        return;
    uint64_t dt = now_ms - b->last_ms;
    if (dt > RELAY_REFILL_DT_MAX)
        dt = RELAY_REFILL_DT_MAX;
    b->last_ms = now_ms;
    int64_t cap = relay_bucket_cap(b->rate);
    if (b->level >= cap) {
        b->level = cap;
        return;
    }
    uint64_t room = (uint64_t)cap - (uint64_t)b->level; /* exact: cap > level */
    if (b->rate > room / dt) { /* rate x dt > room */
        b->level = cap;
        return;
    }
    /* rate x dt < room: the sum lies between level and cap. */
    uint64_t sum = (uint64_t)b->level + b->rate * dt; /* bit/s x ms = milli-bits */
    b->level = sum <= INT64_MAX ? (int64_t)sum : -(int64_t)(UINT64_MAX - sum) - 1;
}

/* A consumption, saturating at the bottom instead of wrapping. */
static void relay_bucket_take(relay_bucket *b, uint64_t mbits)
{
    if (mbits > (uint64_t)INT64_MAX || b->level < INT64_MIN + (int64_t)mbits)
        b->level = INT64_MIN;
    else
        b->level -= (int64_t)mbits;
}

void relay_bucket_set_rate(relay_bucket *b, uint64_t rate, uint64_t now_ms)
{
    relay_bucket_refill(b, now_ms);
    b->rate = rate;
    int64_t cap = relay_bucket_cap(rate);
    if (b->level > cap)
        b->level = cap;
}

void relay_bw_configure(relay *r, const relay_cfg *cfg)
{
    uint64_t now = r->core->api->now_ms(r->core);
    r->bw.total_bps = relay_mbps_to_bps(cfg->total_bandwidth);
    r->bw.single_bps = relay_mbps_to_bps(cfg->single_bandwidth);
    r->bw.limit_bps = relay_mbps_to_bps(cfg->limit_speed);
    r->bw.dt_hundredths = (uint32_t)(cfg->downgrade_threshold * 100.0);
    r->bw.start_check_ms = (uint64_t)cfg->downgrade_start_check * 1000u;
    if (r->bw.global.last_ms == 0)
        relay_bucket_init(&r->bw.global, r->bw.total_bps, now);
    else
        relay_bucket_set_rate(&r->bw.global, r->bw.total_bps, now);
}

size_t relay_bw_allow(relay *r, relay_pair *p, size_t want)
{
    uint64_t now = r->core->api->now_ms(r->core);
    relay_bucket_refill(&p->bucket, now);
    relay_bucket_refill(&r->bw.global, now);
    int64_t lvl = p->bucket.level < r->bw.global.level ? p->bucket.level : r->bw.global.level;
    if (lvl < 8 * RELAY_MBIT)
        return 0;
    uint64_t bytes = (uint64_t)lvl / (8 * RELAY_MBIT);
    return bytes < want ? (size_t)bytes : want;
}

bool relay_bw_ready(relay *r, relay_pair *p) { return relay_bw_allow(r, p, 1) > 0; }

bool relay_bw_account(relay *r, relay_pair *p, int side, size_t n)
{
    uint64_t now = r->core->api->now_ms(r->core);
    p->bytes[side] += n;
    *(side == 0 ? r->st.bytes_e2l : r->st.bytes_l2e) += n;
    p->total_bits += 8 * (uint64_t)n;
    p->tick_bits += 8 * (uint64_t)n;
    relay_bucket_take(&p->bucket, (uint64_t)n * 8 * RELAY_MBIT);
    relay_bucket_take(&r->bw.global, (uint64_t)n * 8 * RELAY_MBIT);
    p->last_rx_ms = now;
    return relay_pair_tick(r, p, now);
}

/* Lists are re-read only when they changed since the pair last looked.
 * Both sides are checked (relay.md §7 allows the early side too). */
static bool relay_pair_lists(relay *r, relay_pair *p)
{
    if (p->list_gen == r->list_gen)
        return true;
    p->list_gen = r->list_gen;
    char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
    relay_ip_text(&p->addr[1], a, sizeof a);
    relay_ip_text(&p->addr[0], b, sizeof b);
    if (relay_set_has(&r->block, a) || relay_set_has(&r->block, b)) {
        RDV_LOG_RL(r->core, RDV_LOG_NOTICE, "pair %s / %s ended: blocklisted", a, b);
        relay_pair_end(r, p, RELAY_END_BLOCKED);
        return false;
    }
    p->blacklisted = relay_set_has(&r->black, a) || relay_set_has(&r->black, b);
    return true;
}

bool relay_pair_tick(relay *r, relay_pair *p, uint64_t now)
{
    if (now - p->last_tick_ms < 1000)
        return true;
    if (!relay_pair_lists(r, p))
        return false;
    uint64_t interval = now - p->last_tick_ms;
    uint64_t rate = p->tick_bits / interval;
    p->current = rate > UINT32_MAX ? UINT32_MAX : (uint32_t)rate;
    if (p->current > p->highest)
        p->highest = p->current;
    p->elapsed_ms += interval;
    p->tick_bits = 0;
    p->last_tick_ms = now;
    if (!p->downgraded && p->elapsed_ms > r->bw.start_check_ms &&
        (!p->thresh_bits_per_ms || p->elapsed_ms <= UINT64_MAX / p->thresh_bits_per_ms) &&
        p->total_bits > p->elapsed_ms * p->thresh_bits_per_ms) {
        p->downgraded = true;
        (*r->st.downgraded)++;
        char a[RDV_ADDR_STRLEN];
        RDV_LOG_RL(r->core, RDV_LOG_INFO, "pair with %s downgraded to %llu bit/s",
                   rdv_addr_str(&p->addr[1], a, sizeof a), (unsigned long long)p->rate_limit);
    }
    uint64_t want = p->blacklisted || p->downgraded ? p->rate_limit : p->rate_single;
    if (p->bucket.rate != want)
        relay_bucket_set_rate(&p->bucket, want, now);
    return true;
}

/* ------------------------------------------------------------------ throttled list */
/* Appended at the tail: resumed in arrival order, roughly round-robin when
 * the TOTAL bucket is the limit. */
static void relay_throttle_link(relay *r, relay_pair *p)
{
    p->throttled = true;
    p->tnext = NULL;
    p->tprev = r->throttled_tail;
    if (r->throttled_tail)
        r->throttled_tail->tnext = p;
    else
        r->throttled = p;
    r->throttled_tail = p;
    r->nthrottled++;
    if (!r->refill_on) {
        r->refill_on = true;
        r->core->api->timer_start(r->refill, (uint64_t)r->cfg->refill_ms, (uint64_t)r->cfg->refill_ms);
    }
}

void relay_throttle(relay *r, relay_pair *p)
{
    if (p->throttled)
        return;
    (*r->st.throttle_events)++;
    relay_throttle_link(r, p);
}

void relay_unthrottle(relay *r, relay_pair *p)
{
    if (!p->throttled)
        return;
    p->throttled = false;
    if (p->tprev)
        p->tprev->tnext = p->tnext;
    else
        r->throttled = p->tnext;
    if (p->tnext)
        p->tnext->tprev = p->tprev;
    else
        r->throttled_tail = p->tprev;
    p->tnext = p->tprev = NULL;
    r->nthrottled--;
    if (!r->throttled && r->refill_on) {
        r->refill_on = false;
        r->core->api->timer_stop(r->refill);
    }
}

/* Resume every throttled pair that has tokens again, each at most once per
 * tick; one that runs dry again re-queues itself at the tail. */
void relay_refill_cb(void *ud)
{
    relay *r = ud;
    size_t n = r->nthrottled;
    for (size_t i = 0; i < n && r->throttled; i++) {
        relay_pair *p = r->throttled;
        relay_unthrottle(r, p);
        if (relay_bw_ready(r, p)) {
            relay_pair_resume(r, p);
            continue;
        }
        relay_throttle_link(r, p);
        if (r->bw.global.level < 8 * RELAY_MBIT)
            break; /* the shared bucket is dry: nobody else can go either */
    }
}
