/* recover.c - startup: load definitions, pick the next instance id, count the waiting instances
 * (they stay in the store until needed) and, when the embedded cluster lost its messages with the
 * last process, queue their outstanding requests for re-publishing with the original messageId.
 * With a shared store (several nodes), definitions deployed through another node are read when
 * first needed (defs_lookup).
 */
#include "daemon.h"

#include "../common/clock.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <stdio.h>
#include <string.h>

#include "../common/banned.h"

/* How stale "the latest version" of a definition may be on a node of a shared store. */
#define DEFS_REFRESH_US 1000000

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
    if (registry_get(&l->d->reg, row->key, row->version))
        return 0; /* known (a reload) */
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

/* Queues inst's outstanding requests for re-publishing (same messageIds). */
static int requeue(struct daemon *d, const struct engine_instance *inst, size_t *nrequeued)
{
    int rc = 0;
    for (size_t t = 0; !rc && t < inst->ntokens; t++) {
        for (size_t k = 0; !rc && k < inst->tokens[t].noutstanding; k++) {
            int n = 0;
            rc = d->store.m->x_outbox_requeue(d->store.st, inst->tokens[t].outstanding[k], &n);
            *nrequeued += (size_t)n;
        }
    }
    return rc;
}

/* A shared store: requeue from the row, without caching the instance. */
static int requeue_row(void *ctx, const struct store_instance_row *row)
{
    struct load_ctx *l = ctx;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_instance *inst =
        engine_instance_from_json(row->blob, strlen(row->blob), err, sizeof(err));
    if (!inst)
        return 0;
    int rc = requeue(l->d, inst, &l->nrequeued);
    engine_instance_free(inst);
    return rc;
}

static int count_started(void *ctx, const char *state, int64_t n)
{
    struct load_ctx *l = ctx;
    if (strcmp(state, "STARTED") == 0)
        l->ninst = (size_t)n;
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
    int64_t max_id = 0, lo = d->cfg->node_id << INSTANCE_ID_NODE_SHIFT;
    rc =
        m->x_instance_max_id(d->store.st, lo, lo + (INT64_C(1) << INSTANCE_ID_NODE_SHIFT), &max_id);
    if (rc)
        return flowd_seterr(errstr, errstr_size, rc, "cannot read instance ids: %s",
                            flowd_err_str(rc));
    d->next_seq = (max_id & ((INT64_C(1) << INSTANCE_ID_NODE_SHIFT) - 1)) + 1;
    /* the waiting instances stay in the store until a reply or a timer needs them; with the
     * embedded cluster (its messages died with the last process) their requests are re-published */
    int republish = (int)d->cfg->republish_on_start;
    if (republish < 0)
        republish = bus_is_embedded(d->bus);
    rc = m->x_instance_count_by_state(d->store.st, count_started, &l);
    if (!rc && republish && l.ninst) {
        rc = m->x_begin(d->store.st);
        if (!rc)
            rc = m->x_instance_scan_active(d->store.st, requeue_row, &l);
        if (!rc)
            rc = m->x_commit(d->store.st);
        else
            m->x_rollback(d->store.st);
    }
    if (rc)
        return flowd_seterr(errstr, errstr_size, rc,
                            "cannot queue outstanding requests for re-publishing: %s",
                            flowd_err_str(rc));
    if (d->shared)
        FLOWD_LOG(LOG_INFO, LOG_SUB_MAIN,
                  "recovered %zu definition version(s), %zu waiting instance(s), %zu request(s) "
                  "to re-publish (node %lld of a shared store)",
                  l.ndefs, l.ninst, l.nrequeued, (long long)d->cfg->node_id);
    else
        FLOWD_LOG(LOG_INFO, LOG_SUB_MAIN,
                  "recovered %zu definition version(s), %zu waiting instance(s), %zu request(s) "
                  "to re-publish",
                  l.ndefs, l.ninst, l.nrequeued);
    return 0;
}

const struct engine_def *defs_lookup(struct daemon *d, const char *key, int version)
{
    const struct engine_def *def = registry_get(&d->reg, key, version);
    if (!d->shared)
        return def;
    /* a miss, or "the latest", which another node may have deployed a newer version of: read
     * the store (for the latest at most once a second) */
    int64_t now = clock_mono_us();
    if (def && (version || now - d->defs_read_us < DEFS_REFRESH_US))
        return def;
    d->defs_read_us = now;
    struct load_ctx l = {d, 0, 0, 0, 0, NULL, 0};
    int rc = d->store.m->x_def_scan(d->store.st, load_def, &l);
    if (rc)
        FLOWD_LOG(LOG_WARN, LOG_SUB_STORE, "cannot read definitions from the store: %s",
                  flowd_err_str(rc));
    if (l.ndefs)
        FLOWD_LOG(LOG_INFO, LOG_SUB_ENGINE,
                  "loaded %zu definition version(s) deployed through other nodes", l.ndefs);
    return registry_get(&d->reg, key, version);
}
