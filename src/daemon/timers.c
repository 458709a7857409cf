/* timers.c - when instances fall due (receive timeouts, timer nodes, early-reply expiry).
 *
 * The store keeps each instance's next due time (instances.due_ms), and due instances are
 * claimed from it (cluster_claim_due), so nothing is lost when an instance is not in memory, after
 * a restart, or when another node wrote it. This min-heap of (due, instance id) only says when to
 * look, to the millisecond, for the instances this process touched: it is filled after each
 * committed batch. Entries are never removed in place; one whose cached instance no longer has
 * that due time (it got its reply, moved on, ended) is dropped. The store is also polled every
 * 100 ms (cluster_tick), which finds the rest: what fell due while flowd was down fires right
 * after the start.
 */
#include "daemon.h"

#include "../common/clock.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

static int less(const struct timer_entry *a, const struct timer_entry *b)
{
    return a->due < b->due || (a->due == b->due && a->id < b->id);
}

static void swap(struct timer_entry *a, struct timer_entry *b)
{
    struct timer_entry t = *a;
    *a = *b;
    *b = t;
}

void timers_push(struct daemon *d, int64_t id, int64_t due)
{
    struct timer_heap *h = &d->timers;
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 256;
        h->v = flowd_xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    size_t i = h->n++;
    h->v[i].due = due;
    h->v[i].id = id;
    while (i > 0 && less(&h->v[i], &h->v[(i - 1) / 2])) {
        swap(&h->v[i], &h->v[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
}

static void pop(struct timer_heap *h)
{
    h->v[0] = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && less(&h->v[l], &h->v[m]))
            m = l;
        if (r < h->n && less(&h->v[r], &h->v[m]))
            m = r;
        if (m == i)
            break;
        swap(&h->v[i], &h->v[m]);
        i = m;
    }
}

int64_t timers_next(struct daemon *d)
{
    struct timer_heap *h = &d->timers;
    /* drop stale entries at the top; one whose instance is not cached may be real (a shared
     * store caches nothing between batches): the claim will tell */
    while (h->n) {
        const struct engine_instance *inst = d->shared ? NULL : map_get(&d->cache, h->v[0].id);
        if (!inst || engine_instance_next_due(inst) == h->v[0].due)
            return h->v[0].due;
        pop(h);
    }
    return 0;
}

size_t timers_take_due(struct daemon *d, int64_t now, int64_t *ids, size_t max)
{
    size_t n = 0;
    int64_t due;
    while (n < max && (due = timers_next(d)) != 0 && due <= now) {
        ids[n++] = d->timers.v[0].id;
        pop(&d->timers);
    }
    return n;
}

void timers_release(struct daemon *d)
{
    free(d->timers.v);
    memset(&d->timers, 0, sizeof(d->timers));
}

int timers_fire(struct daemon *d, struct batch *b, int64_t id)
{
    struct engine_instance *inst = map_get(&d->cache, id);
    if (!inst)
        return 0;
    int64_t due = engine_instance_next_due(inst);
    if (!due || due > b->now) {
        batch_adopt(b, inst); /* claimed but not due: the store's due_ms was stale; rewrite it */
        return 0;
    }
    const struct engine_def *def = defs_lookup(d, inst->def_key, inst->def_version);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE];
    int rc = def ? engine_fire_due(def, inst, b->now, &fx, err, sizeof(err)) : FLOWD_ERR_NOTFOUND;
    if (rc) {
        /* it stays due and is claimed again every 100 ms: say so, but not every time */
        int64_t now = clock_mono_us();
        if (now - d->timer_err_us > 60 * 1000000LL) {
            d->timer_err_us = now;
            FLOWD_LOG(LOG_ERROR, LOG_SUB_ENGINE,
                      "instance %lld: its due timer cannot fire: %s (retried every 100 ms; "
                      "logged once a minute; cancel the instance to stop it)",
                      (long long)id,
                      def ? err : "its definition version is not loaded (see the startup log)");
        }
        engine_effects_clear(&fx);
        return 0;
    }
    for (size_t i = 0; i < fx.nhist; i++) {
        if (strcmp(fx.hist[i].state, "INCIDENT") == 0) {
            atomic_fetch_add(&d->n.incidents, 1);
            FLOWD_LOG(LOG_WARN, LOG_SUB_ENGINE, "instance %lld: incident at node '%s': %s",
                      (long long)id, fx.hist[i].node_id, fx.hist[i].detail);
        }
    }
    rc = batch_apply(b, inst, &fx);
    engine_effects_clear(&fx);
    return rc;
}
