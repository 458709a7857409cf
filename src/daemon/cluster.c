/* cluster.c - the instances a batch works on, and several flowd nodes on one shared store.
 *
 * One node (SQLite): instances stay cached between batches, up to engine.cache.max-instances
 * (cluster_trim); due instances are found in the store (the due_ms column) and fired.
 *
 * Any node may consume the reply for any instance (the consumer group shares the partitions) and
 * any node may find an instance due, so the store is the only truth and the instance row is the
 * lock:
 * - a batch locks the instances its messages are for, in id order, in one statement
 *   (cluster_prelock: SELECT ... FOR UPDATE), and any other it touches as it goes
 *   (batch_instance); a second node wanting the same instance waits for the first one's commit
 *   and then reads what it wrote. Nothing is kept between batches (cluster_forget);
 * - due instances are claimed with FOR UPDATE SKIP LOCKED (cluster_claim_due): exactly one node
 *   fires each. This node's own timers wake it on time (the heap); every CLUSTER_POLL_MS it also
 *   looks for instances others left due (a node that died);
 * - each node publishes the outbox rows it wrote; those of a node that is gone (its connection no
 *   longer holds its node id) are adopted every CLUSTER_ADOPT_MS and published here;
 * - instance ids carry the node id, which the store lets one process hold at a time.
 */
#include "daemon.h"

#include "../common/clock.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

#define CLUSTER_POLL_MS  100
#define CLUSTER_ADOPT_MS 2000
#define CLAIM_MAX        256

/* The instance a consumed message names (processInstanceId header, else the key), or 0. */
static int64_t hint(const rd_kafka_message_t *msg)
{
    size_t len = 0;
    int count = 0;
    const char *v = bus_header(msg, "processInstanceId", &len, &count);
    if (!v || count != 1) {
        v = msg->key;
        len = msg->key_len;
    }
    char buf[24];
    if (!v || len == 0 || len >= sizeof(buf))
        return 0;
    memcpy(buf, v, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long id = strtoll(buf, &end, 10);
    return *end || errno || id <= 0 ? 0 : id;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

struct adopt_ctx {
    struct daemon *d;
    size_t n;
    int64_t *ids; /* claim: the ids of the rows, or NULL */
};

/* Puts a row read (and locked) by this batch into the cache, unless it is there already (one
 * writer: the cached copy is the same). */
static int cache_row(void *ctx, const struct store_instance_row *row)
{
    struct adopt_ctx *a = ctx;
    if (a->ids)
        a->ids[a->n] = row->id;
    if (map_get(&a->d->cache, row->id)) {
        a->n++;
        return 0;
    }
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_instance *inst =
        engine_instance_from_json(row->blob, strlen(row->blob), err, sizeof(err));
    if (!inst) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "instance %lld in the store cannot be read: %s",
                  (long long)row->id, err);
        return 0;
    }
    map_put(&a->d->cache, inst->id, inst);
    a->n++;
    return 0;
}

int cluster_prelock(struct batch *b, rd_kafka_message_t **msgs, size_t n)
{
    struct daemon *d = b->d;
    if (n == 0)
        return 0;
    int64_t *ids = flowd_xmalloc(n * sizeof(*ids));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t id = hint(msgs[i]);
        if (id && !map_get(&d->cache, id))
            ids[k++] = id;
    }
    qsort(ids, k, sizeof(*ids), cmp_id);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (!u || ids[u - 1] != ids[i])
            ids[u++] = ids[i];
    struct adopt_ctx a = {d, 0, NULL};
    int rc = u ? d->store.m->x_instance_lock_many(d->store.st, ids, u, cache_row, &a) : 0;
    free(ids);
    return rc;
}

int cluster_claim_due(struct batch *b)
{
    struct daemon *d = b->d;
    int64_t *ids = flowd_xmalloc(CLAIM_MAX * sizeof(*ids));
    struct adopt_ctx a = {d, 0, ids};
    int rc = d->store.m->x_instance_claim_due(d->store.st, b->now, CLAIM_MAX, cache_row, &a);
    for (size_t i = 0; !rc && i < a.n; i++)
        rc = timers_fire(d, b, ids[i]);
    if (!rc && a.n == CLAIM_MAX)
        d->poll_at_us = 0; /* more may be due: look again at once */
    free(ids);
    return rc;
}

void cluster_trim(struct daemon *d)
{
    size_t max = (size_t)d->cfg->cache_max;
    if (d->shared || d->cache.len <= max)
        return;
    /* evict from a cursor that goes round the table: cheap, and an instance used now and then
     * is read back from the store when next needed */
    size_t target = max - max / 8;
    for (size_t seen = 0; d->cache.len > target && seen < d->cache.cap; seen++) {
        size_t i = d->trim_at++ & (d->cache.cap - 1);
        if (!map_used(&d->cache, i))
            continue;
        struct engine_instance *inst = map_del(&d->cache, d->cache.slots[i].key);
        engine_instance_free(inst);
    }
}

void cluster_forget(struct daemon *d)
{
    if (!d->shared)
        return;
    for (size_t i = 0; i < d->cache.cap; i++)
        if (map_used(&d->cache, i))
            engine_instance_free(d->cache.slots[i].val);
    map_clear(&d->cache);
}

int cluster_tick(struct daemon *d)
{
    int64_t now = clock_mono_us();
    if (d->shared && now >= d->adopt_at_us) {
        d->adopt_at_us = now + CLUSTER_ADOPT_MS * 1000;
        int64_t n = 0;
        if (d->store.m->x_outbox_adopt(d->store.st, &n) == 0 && n > 0) {
            FLOWD_LOG(LOG_INFO, LOG_SUB_STORE,
                      "adopted %lld unsent outbox message(s) of node(s) that are gone; "
                      "publishing them",
                      (long long)n);
            d->resend_needed = 1;
        }
    }
    if (now < d->poll_at_us)
        return 0;
    d->poll_at_us = now + CLUSTER_POLL_MS * 1000;
    int64_t due = 0;
    if (d->store.m->x_instance_next_due(d->store.st, &due))
        return 0;
    return due && due <= clock_wall_ms();
}
