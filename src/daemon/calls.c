/* calls.c - subprocesses inside a batch: starts the children the engine asks for, wakes a parent
 * when its child ends, cancels the children of an instance that ended.
 *
 * All of it happens in the transaction of the batch that caused it, so after a crash a parent and
 * its children always agree. batch_apply() queues the work of each step (calls_queue) and, when
 * it is not itself called from here, drains the queue (calls_drain). Work caused while draining
 * (a child that ends at once and wakes its parent, which calls the next child...) goes to the
 * back of the same queue, so nesting never recurses on the C stack. A parent that keeps calling
 * children that end at once is stopped after CALLS_MAX_PER_BATCH calls: the calls after that
 * fail as "could not start", and after twice as many are no longer started at all (the parent
 * waits; an operator cancels it).
 */
#include "daemon.h"

#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

#define CALLS_MAX_PER_BATCH 10000

static struct batch_call *push(struct batch *b, enum batch_call_kind kind, int64_t id)
{
    if (b->ncalls == b->calls_cap) {
        b->calls_cap = b->calls_cap ? b->calls_cap * 2 : 8;
        b->calls = flowd_xrealloc(b->calls, b->calls_cap * sizeof(*b->calls));
    }
    struct batch_call *c = &b->calls[b->ncalls++];
    memset(c, 0, sizeof(*c));
    c->kind = kind;
    c->id = id;
    return c;
}

void calls_queue(struct batch *b, struct engine_instance *inst, struct engine_effects *fx)
{
    for (size_t i = 0; i < fx->ncalls; i++) {
        struct batch_call *c = push(b, BATCH_CALL_START, inst->id);
        c->call = fx->calls[i];
        memset(&fx->calls[i], 0, sizeof(fx->calls[i]));
    }
    fx->ncalls = 0;
    for (size_t i = 0; i < fx->norphans; i++)
        push(b, BATCH_CALL_CANCEL, fx->orphans[i])->parent = inst->id;
    fx->norphans = 0;
    if (fx->ended && inst->parent_id)
        push(b, BATCH_CALL_DONE, inst->id);
}

static void call_free(struct batch_call *c)
{
    free(c->call.call_id);
    free(c->call.node_id);
    free(c->call.def_key);
    cJSON_Delete(c->call.input);
    memset(&c->call, 0, sizeof(c->call));
}

void calls_release(struct batch *b)
{
    for (size_t i = b->calls_head; i < b->ncalls; i++)
        call_free(&b->calls[i]);
    free(b->calls);
    b->calls = NULL;
    b->ncalls = b->calls_head = b->calls_cap = b->calls_run = 0;
}

/* The STARTED instance id (cache or store), or NULL: gone, ended, or a store error in *err. */
static struct engine_instance *started(struct batch *b, int64_t id, int *err)
{
    char state[32], uuid[37];
    return batch_instance(b, id, state, sizeof(state), uuid, err);
}

/* Tells parent its call ended (child NULL: it could not start, why says why). */
static int wake(struct batch *b,
                struct engine_instance *parent,
                const char *call_id,
                const struct engine_instance *child,
                const char *why)
{
    struct daemon *d = b->d;
    const struct engine_def *def = defs_lookup(d, parent->def_key, parent->def_version);
    if (!def)
        return 0;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE];
    int rc = engine_call_done(def, parent, call_id, child, why, b->now, &fx, err, sizeof(err));
    if (rc) {
        /* the parent moved on (cancelled, failed elsewhere, a retried child finishing late) */
        FLOWD_LOG(LOG_INFO, LOG_SUB_ENGINE, "instance %lld: subprocess ended: %s",
                  (long long)(child ? child->id : 0), err);
        engine_effects_clear(&fx);
        return 0;
    }
    rc = batch_apply(b, parent, &fx);
    engine_effects_clear(&fx);
    return rc;
}

static int start_child(struct batch *b, struct batch_call *c)
{
    struct daemon *d = b->d;
    int err = 0;
    struct engine_instance *parent = started(b, c->id, &err);
    if (!parent)
        return err;
    if (b->calls_run > 2 * CALLS_MAX_PER_BATCH) {
        /* the failures of the guard below loop too (errorNext back to the call): stop here */
        FLOWD_LOG(LOG_ERROR, LOG_SUB_ENGINE,
                  "instance %lld: subprocess '%s' not started: the instance keeps calling "
                  "subprocesses in a loop; cancel it",
                  (long long)parent->id, c->call.node_id);
        return 0;
    }
    const struct engine_def *def = defs_lookup(d, c->call.def_key, c->call.version);
    char why[FLOWD_ERRSTR_SIZE] = "";
    if (!def && c->call.version)
        snprintf(why, sizeof(why), "process definition '%s' has no version %d", c->call.def_key,
                 c->call.version);
    else if (!def)
        snprintf(why, sizeof(why), "no process definition with key '%s' is deployed",
                 c->call.def_key);
    else if (parent->depth + 1 > ENGINE_MAX_CALL_DEPTH)
        snprintf(why, sizeof(why), "subprocesses nested more than %d deep", ENGINE_MAX_CALL_DEPTH);
    else if (b->calls_run > CALLS_MAX_PER_BATCH)
        snprintf(why, sizeof(why),
                 "loop guard: more than %d subprocess calls in one step without waiting",
                 CALLS_MAX_PER_BATCH);
    if (why[0]) {
        FLOWD_LOG(LOG_WARN, LOG_SUB_ENGINE, "instance %lld: subprocess '%s': %s",
                  (long long)parent->id, c->call.node_id, why);
        return wake(b, parent, c->call.call_id, NULL, why);
    }
    struct engine_instance *child = NULL;
    cJSON *input = c->call.input;
    c->call.input = NULL;
    int rc = batch_start_def(b, def, input, parent, c->call.call_id, &child, why, sizeof(why));
    if (rc && !child) /* the engine refused the input (cannot happen: it is an object) */
        return wake(b, parent, c->call.call_id, NULL, why);
    return rc;
}

static int child_done(struct batch *b, int64_t child_id)
{
    const struct engine_instance *child = map_get(&b->d->cache, child_id);
    if (!child || !child->parent_id)
        return 0;
    int err = 0;
    struct engine_instance *parent = started(b, child->parent_id, &err);
    if (!parent)
        return err;
    return wake(b, parent, child->parent_call, child, NULL);
}

static int cancel_child(struct batch *b, int64_t child_id, int64_t parent_id)
{
    int err = 0;
    struct engine_instance *child = started(b, child_id, &err);
    if (!child)
        return err;
    char reason[96], why[FLOWD_ERRSTR_SIZE];
    snprintf(reason, sizeof(reason), "its parent instance %lld ended", (long long)parent_id);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    int rc = engine_cancel(child, reason, b->now, &fx, why, sizeof(why));
    rc = rc ? 0 : batch_apply(b, child, &fx);
    engine_effects_clear(&fx);
    return rc;
}

int calls_drain(struct batch *b)
{
    int rc = 0;
    b->draining = 1;
    while (!rc && b->calls_head < b->ncalls) {
        /* a copy: handling it may queue more and move the array */
        struct batch_call c = b->calls[b->calls_head++];
        b->calls_run++;
        switch (c.kind) {
        case BATCH_CALL_START:
            rc = start_child(b, &c);
            break;
        case BATCH_CALL_DONE:
            rc = child_done(b, c.id);
            break;
        case BATCH_CALL_CANCEL:
            rc = cancel_child(b, c.id, c.parent);
            break;
        }
        call_free(&c);
    }
    b->draining = 0;
    if (!rc) {
        b->ncalls = b->calls_head = 0; /* keep the array for the next step */
        b->calls_run = 0;
    }
    return rc;
}
