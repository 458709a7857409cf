/* recover.c - startup: load definitions, pick the next instance id, load waiting instances into
 * the cache, and (when the embedded cluster lost its messages with the last process) queue the
 * outstanding requests of waiting instances for re-publishing with their original messageId.
 */
#include "daemon.h"

#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <stdio.h>
#include <string.h>

#include "../common/banned.h"

struct load_ctx {
    struct daemon *d;
    size_t ndefs, ninst, nrequeued;
    int failed;
    char *errstr;
    size_t errstr_size;
};

static int load_def(void *ctx, const struct store_def_row *row)
{
    struct load_ctx *l = ctx;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def =
        engine_def_parse(row->json, strlen(row->json), &l->d->env, err, sizeof(err));
    if (!def) {
        /* a definition that no longer validates (new rules) stays in the store; its instances
         * cannot move, and that is reported rather than hidden */
        FLOWD_LOG(LOG_ERROR, LOG_SUB_ENGINE, "stored definition %s version %d does not load: %s",
                  row->key, row->version, err);
        return 0;
    }
    engine_def_set_version(def, row->version, row->uuid);
    for (size_t i = 0; i < engine_def_receive_topic_count(def); i++) {
        const char *node;
        bus_ensure_topic(l->d->bus, engine_def_receive_topic(def, i, &node));
    }
    registry_add(&l->d->reg, def);
    l->ndefs++;
    return 0;
}

static int load_instance(void *ctx, const struct store_instance_row *row)
{
    struct load_ctx *l = ctx;
    struct daemon *d = l->d;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_instance *inst =
        engine_instance_from_json(row->blob, strlen(row->blob), err, sizeof(err));
    if (!inst) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "instance %lld cannot be read: %s", (long long)row->id,
                  err);
        return 0;
    }
    map_put(&d->cache, inst->id, inst);
    int64_t due = engine_instance_next_due(inst);
    if (due)
        timers_push(d, inst->id, due);
    l->ninst++;
    return 0;
}

int recover_load(struct daemon *d, char *errstr, size_t errstr_size)
{
    struct load_ctx l = {d, 0, 0, 0, 0, errstr, errstr_size};
    const struct store_methods *m = d->store.m;
    int rc = m->x_def_scan(d->store.st, load_def, &l);
    if (rc)
        return flowd_seterr(errstr, errstr_size, rc, "cannot read definitions from the store: %s",
                            flowd_err_str(rc));
    int64_t max_id = 0;
    rc = m->x_instance_max_id(d->store.st, &max_id);
    if (rc)
        return flowd_seterr(errstr, errstr_size, rc, "cannot read instance ids: %s",
                            flowd_err_str(rc));
    d->next_seq = (max_id & ((INT64_C(1) << INSTANCE_ID_NODE_SHIFT) - 1)) + 1;

    rc = m->x_instance_scan_active(d->store.st, load_instance, &l);
    if (rc)
        return flowd_seterr(errstr, errstr_size, rc, "cannot read waiting instances: %s",
                            flowd_err_str(rc));

    int republish = (int)d->cfg->republish_on_start;
    if (republish < 0)
        republish = bus_is_embedded(d->bus);
    if (republish && l.ninst) {
        rc = m->x_begin(d->store.st);
        for (size_t i = 0; !rc && i < d->cache.cap; i++) {
            if (!map_used(&d->cache, i))
                continue;
            const struct engine_instance *inst = d->cache.slots[i].val;
            for (size_t t = 0; !rc && t < inst->ntokens; t++) {
                for (size_t k = 0; !rc && k < inst->tokens[t].noutstanding; k++) {
                    int n = 0;
                    rc = m->x_outbox_requeue(d->store.st, inst->tokens[t].outstanding[k], &n);
                    l.nrequeued += (size_t)n;
                }
            }
        }
        if (!rc)
            rc = m->x_commit(d->store.st);
        else
            m->x_rollback(d->store.st);
        if (rc)
            return flowd_seterr(errstr, errstr_size, rc,
                                "cannot queue outstanding requests for re-publishing: %s",
                                flowd_err_str(rc));
    }
    FLOWD_LOG(LOG_INFO, LOG_SUB_MAIN,
              "recovered %zu definition version(s), %zu waiting instance(s), %zu request(s) to "
              "re-publish",
              l.ndefs, l.ninst, l.nrequeued);
    return 0;
}
