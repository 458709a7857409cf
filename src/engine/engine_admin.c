/* engine_admin.c - what an operator does to an instance: cancel it, retry it.
 *
 * Both are pure like the rest of the engine: the caller passes the time and persists the effects.
 * Cancel ends a STARTED instance as TERMINATED. Retry restarts a FAILED instance at the node that
 * failed (its data unchanged, so a fix deployed elsewhere, e.g. in the connector, can let it
 * through) or re-arms the INCIDENT tokens of a STARTED one.
 */
#include "engine_int.h"

#include "../common/err.h"
#include "../common/mem.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

static void admin_hist(struct engine_instance *inst,
                       struct engine_effects *fx,
                       const char *node_id,
                       const char *state,
                       const char *detail,
                       int64_t now_ms)
{
    if (fx->nhist == fx->hist_cap) {
        fx->hist_cap = fx->hist_cap ? fx->hist_cap * 2 : 8;
        fx->hist = flowd_xrealloc(fx->hist, fx->hist_cap * sizeof(*fx->hist));
    }
    struct engine_history *h = &fx->hist[fx->nhist++];
    h->seq = ++inst->seq;
    h->node_id = node_id ? flowd_xstrdup(node_id) : NULL;
    h->state = flowd_xstrdup(state);
    h->at_ms = now_ms;
    h->detail = detail ? flowd_xstrdup(detail) : NULL;
}

int engine_cancel(struct engine_instance *inst,
                  const char *reason,
                  int64_t now_ms,
                  struct engine_effects *fx,
                  char *errstr,
                  size_t errstr_size)
{
    if (inst->state != ENGINE_STARTED)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_STATE,
                            "instance %" PRId64 " is already %s", inst->id,
                            engine_state_name(inst->state));
    /* the row names the node(s) the instance was at, so the history says where it stopped */
    const char *node = inst->ntokens ? inst->tokens[0].node_id : NULL;
    admin_hist(inst, fx, node, "TERMINATED", reason, now_ms);
    engine_drop_tokens(inst, fx);
    inst->state = ENGINE_TERMINATED;
    inst->ended_ms = inst->updated_ms = now_ms;
    fx->ended = 1;
    return 0;
}

int engine_retry(const struct engine_def *def,
                 struct engine_instance *inst,
                 const char *failed_node,
                 const cJSON *patch,
                 int64_t now_ms,
                 struct engine_effects *fx,
                 char *errstr,
                 size_t errstr_size)
{
    if (patch && !cJSON_IsObject(patch))
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "the data to merge must be a JSON object");
    if (inst->state == ENGINE_STARTED && patch)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "data can be changed only when retrying a FAILED instance");
    if (inst->state == ENGINE_STARTED)
        return engine_retry_incident(def, inst, now_ms, fx, errstr, errstr_size);
    if (inst->state != ENGINE_FAILED)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_STATE,
                            "instance %" PRId64 " is %s: only FAILED instances and incidents can "
                            "be retried",
                            inst->id, engine_state_name(inst->state));
    int node = failed_node ? engine_def_find(def, failed_node) : -1;
    if (node < 0)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "instance %" PRId64 " failed at node '%s', which definition %s "
                            "version %d does not have",
                            inst->id, failed_node ? failed_node : "(unknown)", def->key,
                            def->version);
    for (const cJSON *m = patch ? patch->child : NULL; m; m = m->next) {
        cJSON *copy = cJSON_Duplicate(m, 1);
        if (cJSON_GetObjectItemCaseSensitive(inst->data, m->string))
            cJSON_ReplaceItemInObjectCaseSensitive(inst->data, m->string, copy);
        else
            cJSON_AddItemToObject(inst->data, m->string, copy);
    }
    inst->state = ENGINE_STARTED;
    free(inst->error);
    inst->error = NULL;
    inst->ended_ms = 0;
    inst->updated_ms = now_ms;
    admin_hist(inst, fx, failed_node, "RETRIED", patch ? "with changed data" : NULL, now_ms);
    engine_run_from(def, inst, node, now_ms, fx);
    return 0;
}
