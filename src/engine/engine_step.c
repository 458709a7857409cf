/* engine_step.c - the state machine: engine_start() and engine_deliver().
 *
 * A token walks the graph from node to node until it waits (receive node) or the instance ends.
 * Every transition appends a history row (seq = ++inst->seq) to the effects; every kafka_send
 * action appends a message. Nothing here reads a clock or does I/O: `now_ms` and the ids come in.
 *
 * Message ids are "<instance uuid>:<node>:<action>:<seq>", seq being the history seq of the
 * MESSAGE_SENT row, so a replayed step produces the same id and no two messages share one.
 * A walk longer than ENGINE_MAX_STEPS without waiting fails the instance (loop guard); a
 * rendering failure at run time fails the instance too (or, for an optional action, is recorded
 * and skipped).
 *
 * A receive node with a responseTimeout arms its token (due_ms). engine_fire_due() re-sends the
 * token's outstanding requests (same messageIds) up to resendAttempts times, each wait twice the
 * one before, then takes timeoutNext or turns the token into an INCIDENT.
 */
#include "engine_int.h"

#include "../common/clock.h"
#include "../common/err.h"
#include "../common/mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

/* A branch a parallel gateway forked, waiting for its turn to walk. */
struct branch {
    size_t ti;
    int node;
};

struct run {
    const struct engine_def *def;
    struct engine_instance *inst;
    struct engine_effects *fx;
    int64_t now;
    int steps;
    struct branch *branches;
    size_t nbranches, branches_cap;
};

static void hist_add(struct run *r, const char *node_id, const char *state, char *detail)
{
    struct engine_effects *fx = r->fx;
    if (fx->nhist == fx->hist_cap) {
        fx->hist_cap = fx->hist_cap ? fx->hist_cap * 2 : 8;
        fx->hist = flowd_xrealloc(fx->hist, fx->hist_cap * sizeof(*fx->hist));
    }
    struct engine_history *h = &fx->hist[fx->nhist++];
    h->seq = ++r->inst->seq;
    h->node_id = flowd_xstrdup(node_id);
    h->state = flowd_xstrdup(state);
    h->at_ms = r->now;
    h->detail = detail;
}

/* Ends the instance as FAILED; takes msg. */
static void fail_instance(struct run *r, const char *node_id, char *msg)
{
    struct engine_instance *inst = r->inst;
    inst->state = ENGINE_FAILED;
    free(inst->error);
    inst->error = msg;
    inst->ended_ms = r->now;
    hist_add(r, node_id, "FAILED", flowd_xstrdup(msg));
    engine_drop_tokens(inst, r->fx);
    r->fx->ended = 1;
}

static void set_token_node(struct engine_token *tok, const char *id)
{
    if (tok->node_id && strcmp(tok->node_id, id) == 0)
        return;
    free(tok->node_id);
    tok->node_id = flowd_xstrdup(id);
}

static void add_header(struct engine_message *msg, const char *name, char *value)
{
    struct engine_header *h = &msg->headers[msg->nheaders++];
    h->name = flowd_xstrdup(name);
    h->value = value;
}

/* Renders one kafka_send action into a message. 0, or an error in errstr (nothing appended). */
static int emit(struct run *r,
                size_t ti,
                const struct engine_node *n,
                const struct engine_action *a,
                char *errstr,
                size_t errstr_size)
{
    struct engine_instance *inst = r->inst;
    struct engine_tpl_ctx ctx = {NULL, inst->id, inst->uuid, inst->def_key, inst->data};
    struct buf topic = BUF_INIT, body = BUF_INIT;
    char why[FLOWD_ERRSTR_SIZE];
    int rc = engine_tpl_render_buf(a->topic, &ctx, &topic, why, sizeof(why));
    if (rc) {
        flowd_seterr(errstr, errstr_size, rc, "topic: %s", why);
        goto err;
    }
    if (!engine_topic_valid(topic.ptr, topic.len)) {
        rc = flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                          "topic renders to '%.100s', not a valid Kafka topic name",
                          buf_str(&topic));
        goto err;
    }
    rc = engine_tpl_render_buf(a->body, &ctx, &body, why, sizeof(why));
    if (rc) {
        flowd_seterr(errstr, errstr_size, rc, "message: %s", why);
        goto err;
    }

    uint32_t seq = inst->seq + 1; /* the seq of the MESSAGE_SENT row below */
    char date[40];
    clock_iso8601(inst->started_ms, date, sizeof(date));
    struct engine_message msg;
    memset(&msg, 0, sizeof(msg));
    msg.headers = flowd_xcalloc(9 + a->nheaders, sizeof(*msg.headers));
    msg.topic = buf_detach(&topic);
    msg.value = buf_detach(&body);
    msg.key = flowd_xasprintf("%" PRId64, inst->id);
    msg.message_id = flowd_xasprintf("%s:%s:%s:%" PRIu32, inst->uuid, n->id, a->name, seq);
    msg.node_id = flowd_xstrdup(n->id);
    add_header(&msg, "processInstanceId", flowd_xstrdup(msg.key));
    add_header(&msg, "processInstanceUuid", flowd_xstrdup(inst->uuid));
    add_header(&msg, "processDefinitionUuid", flowd_xstrdup(r->def->uuid));
    add_header(&msg, "processStartDate", flowd_xstrdup(date));
    add_header(&msg, "destinationId", flowd_xstrdup(r->def->nodes[n->reply_node].id));
    add_header(&msg, "callbacksForAction", flowd_xstrdup(a->name));
    add_header(&msg, "messageId", flowd_xstrdup(msg.message_id));
    add_header(&msg, "fxContext", flowd_xstrdup("main"));
    add_header(&msg, "Fx-ProcessName", flowd_xstrdup(r->def->key));
    for (size_t i = 0; i < a->nheaders; i++) {
        struct buf hv = BUF_INIT;
        rc = engine_tpl_render_buf(a->headers[i].value, &ctx, &hv, why, sizeof(why));
        if (rc) {
            buf_release(&hv);
            engine_message_free_fields(&msg);
            flowd_seterr(errstr, errstr_size, rc, "header '%s': %s", a->headers[i].name, why);
            return rc;
        }
        add_header(&msg, a->headers[i].name, buf_detach(&hv));
    }

    struct engine_effects *fx = r->fx;
    if (fx->nmsgs == fx->msgs_cap) {
        fx->msgs_cap = fx->msgs_cap ? fx->msgs_cap * 2 : 4;
        fx->msgs = flowd_xrealloc(fx->msgs, fx->msgs_cap * sizeof(*fx->msgs));
    }
    fx->msgs[fx->nmsgs++] = msg;

    struct engine_token *tok = &inst->tokens[ti];
    tok->outstanding =
        flowd_xrealloc(tok->outstanding, (tok->noutstanding + 1) * sizeof(*tok->outstanding));
    tok->outstanding_for = flowd_xrealloc(tok->outstanding_for,
                                          (tok->noutstanding + 1) * sizeof(*tok->outstanding_for));
    tok->outstanding_for[tok->noutstanding] = flowd_xstrdup(r->def->nodes[n->reply_node].id);
    tok->outstanding[tok->noutstanding++] = flowd_xstrdup(msg.message_id);
    hist_add(r, n->id, "MESSAGE_SENT", flowd_xstrdup(msg.message_id));
    return 0;
err:
    buf_release(&topic);
    buf_release(&body);
    return rc;
}

/* Does outstanding entry k of tok wait for a reply at node_id? (Entries from before this was
 * recorded have no node: they match any.) */
static int outstanding_is_for(const struct engine_token *tok, size_t k, const char *node_id)
{
    return !tok->outstanding_for || !tok->outstanding_for[k] ||
           strcmp(tok->outstanding_for[k], node_id) == 0;
}

/* Forgets the outstanding requests answered at node_id; the others stay outstanding. */
static void drop_outstanding(struct engine_token *tok, const char *node_id)
{
    size_t keep = 0;
    for (size_t k = 0; k < tok->noutstanding; k++) {
        if (outstanding_is_for(tok, k, node_id)) {
            free(tok->outstanding[k]);
            if (tok->outstanding_for)
                free(tok->outstanding_for[k]);
            continue;
        }
        tok->outstanding[keep] = tok->outstanding[k];
        if (tok->outstanding_for)
            tok->outstanding_for[keep] = tok->outstanding_for[k];
        keep++;
    }
    tok->noutstanding = keep;
    if (!keep) {
        free(tok->outstanding);
        free(tok->outstanding_for);
        tok->outstanding = tok->outstanding_for = NULL;
    }
}

static void data_set(cJSON *data, const char *path, cJSON *val);
static int topic_of(const struct engine_node *n, const char *topic);
static void call_timed_out(struct run *r, size_t ti, const struct engine_node *n);

/* Copies the fields of a reply that node n's mapping names into the instance data (a field the
 * reply does not have is left alone). */
static void map_reply(struct engine_instance *inst, const struct engine_node *n, const cJSON *body)
{
    for (size_t k = 0; k < n->nmap && body; k++) {
        const cJSON *v = json_path(body, n->map_from[k]);
        if (v)
            data_set(inst->data, n->map_to[k], cJSON_Duplicate(v, 1));
    }
}

/* Where a token goes after receive node n took body: the node's errorNext for an error reply
 * (a body with a non-null errorMessage, the SDK's and FlowX's convention), else next. */
static int after_reply(struct run *r, const struct engine_node *n, const cJSON *body)
{
    const cJSON *em =
        cJSON_IsObject(body) ? cJSON_GetObjectItemCaseSensitive(body, "errorMessage") : NULL;
    if (n->error_next < 0 || !em || cJSON_IsNull(em))
        return n->next;
    char *msg = cJSON_IsString(em) ? flowd_xstrdup(em->valuestring) : json_print(em);
    hist_add(r, n->id, "ERROR_REPLY", msg);
    return n->error_next;
}

/* An early reply parked for receive node n, or -1. */
static int parked_for(const struct engine_instance *inst, const struct engine_node *n)
{
    for (size_t i = 0; i < inst->nparked; i++) {
        const struct engine_parked *p = &inst->parked[i];
        if (p->destination_id ? strcmp(p->destination_id, n->id) == 0 : topic_of(n, p->topic) >= 0)
            return (int)i;
    }
    return -1;
}

/* Delivers parked reply pi at receive node n (the token has just got there); returns the node
 * the token goes to next. */
static int take_parked(struct run *r, struct engine_token *tok, const struct engine_node *n, int pi)
{
    struct engine_instance *inst = r->inst;
    struct engine_parked p = inst->parked[pi];
    inst->parked[pi] = inst->parked[--inst->nparked];
    int t = topic_of(n, p.topic);
    cJSON *body = cJSON_Parse(p.value);
    map_reply(inst, n, body);
    data_set(inst->data, n->topics[t >= 0 ? t : 0].key_name, body ? body : cJSON_CreateNull());
    drop_outstanding(tok, n->id);
    hist_add(r, n->id, "MESSAGE_RECEIVED",
             flowd_xasprintf("%s (early reply, kept since it arrived)", p.topic ? p.topic : ""));
    engine_parked_free_fields(&p);
    return after_reply(r, n, body); /* body now belongs to the instance data */
}

/* A set_data action: renders its value and stores it at its path in the instance data. */
static int set_data(struct run *r,
                    const struct engine_node *n,
                    const struct engine_action *a,
                    char *errstr,
                    size_t errstr_size)
{
    struct engine_instance *inst = r->inst;
    struct engine_tpl_ctx ctx = {NULL, inst->id, inst->uuid, inst->def_key, inst->data};
    struct buf b = BUF_INIT;
    char why[FLOWD_ERRSTR_SIZE];
    int rc = engine_tpl_render_buf(a->body, &ctx, &b, why, sizeof(why));
    cJSON *val = rc ? NULL : json_parse(buf_str(&b), b.len, why, sizeof(why));
    buf_release(&b);
    if (!val)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "value: %s", why);
    data_set(inst->data, a->set_path, val);
    hist_add(r, n->id, "DATA_SET", flowd_xstrdup(a->set_path));
    return 0;
}

/* Subprocess node n: token ti waits for a new child instance, which the daemon starts from
 * fx->calls in the same transaction. */
static void call(struct run *r, size_t ti, const struct engine_node *n)
{
    struct engine_instance *inst = r->inst;
    struct engine_token *tok = &inst->tokens[ti];
    cJSON *input;
    if (n->copy_input) {
        input = cJSON_Duplicate(inst->data, 1);
    } else {
        input = cJSON_CreateObject();
        for (size_t k = 0; k < n->nin; k++) {
            const cJSON *v = json_path(inst->data, n->in_from[k]);
            if (v)
                data_set(input, n->in_to[k], cJSON_Duplicate(v, 1));
        }
    }
    flowd_assert(input != NULL);
    hist_add(r, n->id, "SUBPROCESS_STARTED", flowd_xasprintf("process '%s'", n->call_key));
    set_token_node(tok, n->id);
    tok->state = ENGINE_TOKEN_WAITING_SUBPROCESS;
    free(tok->call_id);
    tok->call_id = flowd_xasprintf("%s:%s:call:%" PRIu32, inst->uuid, n->id, inst->seq);
    tok->child_id = 0;
    tok->due_ms = n->timeout_ms > 0 ? r->now + n->timeout_ms : 0;
    struct engine_effects *fx = r->fx;
    if (fx->ncalls == fx->calls_cap) {
        fx->calls_cap = fx->calls_cap ? fx->calls_cap * 2 : 2;
        fx->calls = flowd_xrealloc(fx->calls, fx->calls_cap * sizeof(*fx->calls));
    }
    struct engine_call *c = &fx->calls[fx->ncalls++];
    c->call_id = flowd_xstrdup(tok->call_id);
    c->node_id = flowd_xstrdup(n->id);
    c->def_key = flowd_xstrdup(n->call_key);
    c->version = n->call_version;
    c->input = input;
}

/* Walks token ti from node `node` (which it enters now) until it waits or the instance ends. */
static void run_token(struct run *r, size_t ti, int node)
{
    const struct engine_def *def = r->def;
    struct engine_instance *inst = r->inst;
    char why[FLOWD_ERRSTR_SIZE];
    for (;;) {
        const struct engine_node *n = &def->nodes[node];
        if (++r->steps > ENGINE_MAX_STEPS) {
            fail_instance(r, n->id,
                          flowd_xasprintf("loop guard: more than %d steps without waiting for a "
                                          "message (at node '%s')",
                                          ENGINE_MAX_STEPS, n->id));
            return;
        }
        switch (n->type) {
        case ENGINE_NODE_START:
            hist_add(r, n->id, "ENTERED", NULL);
            node = n->next;
            break;
        case ENGINE_NODE_TASK:
        case ENGINE_NODE_SEND:
            hist_add(r, n->id, "ENTERED", NULL);
            for (size_t i = 0; i < n->nactions; i++) {
                const struct engine_action *a = &n->actions[i];
                if ((a->set_path ? set_data(r, n, a, why, sizeof(why))
                                 : emit(r, ti, n, a, why, sizeof(why))) == 0)
                    continue;
                char *msg = flowd_xasprintf("node '%s': action '%s': %s", n->id, a->name, why);
                if (!a->optional) {
                    fail_instance(r, n->id, msg);
                    return;
                }
                hist_add(r, n->id, "ACTION_SKIPPED", msg);
            }
            node = n->next;
            break;
        case ENGINE_NODE_RECEIVE: {
            struct engine_token *tok = &inst->tokens[ti];
            int pi = parked_for(inst, n);
            if (pi >= 0) {
                set_token_node(tok, n->id);
                node = take_parked(r, tok, n, pi);
                break;
            }
            set_token_node(tok, n->id);
            tok->state = ENGINE_TOKEN_WAITING_MESSAGE;
            tok->attempt = 0;
            tok->due_ms = n->timeout_ms > 0 ? r->now + n->timeout_ms : 0;
            hist_add(r, n->id, "WAITING_MESSAGE", NULL);
            return;
        }
        case ENGINE_NODE_EXCLUSIVE_GATEWAY: {
            int target = n->default_next;
            char *detail = NULL;
            for (size_t i = 0; i < n->nroutes; i++) {
                if (engine_expr_eval(n->routes[i].cond, inst->data)) {
                    target = n->routes[i].next;
                    detail = flowd_xasprintf("route %zu (%.200s) -> %s", i + 1,
                                             n->routes[i].cond_src, def->nodes[target].id);
                    break;
                }
            }
            if (!detail)
                detail = flowd_xasprintf("default -> %s", def->nodes[target].id);
            hist_add(r, n->id, "ROUTE_TAKEN", detail);
            node = target;
            break;
        }
        case ENGINE_NODE_TIMER: {
            struct engine_token *tok = &inst->tokens[ti];
            int64_t due = n->timer_at ? n->timer_at : r->now + n->timer_ms;
            set_token_node(tok, n->id);
            if (due <= r->now) {
                hist_add(r, n->id, "TIMER_FIRED", flowd_xstrdup("already due"));
                node = n->next;
                break;
            }
            tok->state = ENGINE_TOKEN_WAITING_TIMER;
            tok->due_ms = due;
            hist_add(r, n->id, "WAITING_TIMER_EVENT", NULL);
            return;
        }
        case ENGINE_NODE_PARALLEL_GATEWAY: {
            struct engine_token *tok = &inst->tokens[ti];
            if (n->incoming > 1) {
                /* a join: wait until a token stands here for every incoming edge */
                size_t arrived = 1;
                for (size_t i = 0; i < inst->ntokens; i++)
                    if (i != ti && inst->tokens[i].state == ENGINE_TOKEN_WAITING_JOIN &&
                        strcmp(inst->tokens[i].node_id, n->id) == 0)
                        arrived++;
                if (arrived < (size_t)n->incoming) {
                    set_token_node(tok, n->id);
                    tok->state = ENGINE_TOKEN_WAITING_JOIN;
                    hist_add(r, n->id, "WAITING_JOIN",
                             flowd_xasprintf("%zu of %d branches arrived", arrived, n->incoming));
                    return;
                }
                for (size_t i = 0; i < inst->ntokens; i++)
                    if (i != ti && inst->tokens[i].state == ENGINE_TOKEN_WAITING_JOIN &&
                        strcmp(inst->tokens[i].node_id, n->id) == 0)
                        inst->tokens[i].state = ENGINE_TOKEN_JOINED;
                hist_add(r, n->id, "JOINED", flowd_xasprintf("%d branches", n->incoming));
            }
            set_token_node(tok, n->id);
            tok->state = ENGINE_TOKEN_ACTIVE;
            if (n->nforks) {
                /* a fork: this token takes next[0], a new token each other branch */
                inst->tokens = flowd_xrealloc(inst->tokens,
                                              (inst->ntokens + n->nforks) * sizeof(*inst->tokens));
                for (size_t k = 0; k < n->nforks; k++) {
                    struct engine_token *nt = &inst->tokens[inst->ntokens];
                    memset(nt, 0, sizeof(*nt));
                    nt->node_id = flowd_xstrdup(n->id);
                    nt->state = ENGINE_TOKEN_ACTIVE;
                    if (r->nbranches == r->branches_cap) {
                        r->branches_cap = r->branches_cap ? r->branches_cap * 2 : 4;
                        r->branches =
                            flowd_xrealloc(r->branches, r->branches_cap * sizeof(*r->branches));
                    }
                    r->branches[r->nbranches].ti = inst->ntokens;
                    r->branches[r->nbranches].node = n->forks[n->nforks - 1 - k];
                    r->nbranches++;
                    inst->ntokens++;
                }
                hist_add(r, n->id, "FORKED", flowd_xasprintf("%zu branches", n->nforks + 1));
            }
            node = n->next;
            break;
        }
        case ENGINE_NODE_SUBPROCESS:
            call(r, ti, n);
            return;
        case ENGINE_NODE_ERROR_END: {
            char *reason = NULL;
            if (n->error) {
                struct engine_tpl_ctx ctx = {NULL, inst->id, inst->uuid, inst->def_key, inst->data};
                struct buf b = BUF_INIT;
                if (engine_tpl_render_buf(n->error, &ctx, &b, why, sizeof(why)) == 0)
                    reason = buf_detach(&b);
                else
                    buf_release(&b);
            }
            fail_instance(r, n->id,
                          reason ? reason : flowd_xasprintf("ended at error end '%s'", n->id));
            return;
        }
        case ENGINE_NODE_END:
            hist_add(r, n->id, "FINISHED", NULL);
            inst->state = ENGINE_FINISHED;
            inst->ended_ms = r->now;
            engine_drop_tokens(inst, r->fx);
            r->fx->ended = 1;
            return;
        }
    }
}

/* Walks token ti from node, then every branch forked on the way (each may fork more). */
static void walk(struct run *r, size_t ti, int node)
{
    run_token(r, ti, node);
    while (r->nbranches && r->inst->state == ENGINE_STARTED) {
        struct branch b = r->branches[--r->nbranches];
        run_token(r, b.ti, b.node);
    }
    r->nbranches = 0;
}

/* Ends a step: drops the tokens a join merged, frees the walk's scratch. */
static void finish_run(struct run *r)
{
    struct engine_instance *inst = r->inst;
    size_t keep = 0;
    for (size_t i = 0; i < inst->ntokens; i++) {
        if (inst->tokens[i].state == ENGINE_TOKEN_JOINED) {
            engine_token_release(&inst->tokens[i]);
            continue;
        }
        inst->tokens[keep++] = inst->tokens[i];
    }
    inst->ntokens = keep;
    free(r->branches);
    r->branches = NULL;
    r->nbranches = r->branches_cap = 0;
}

int engine_start(const struct engine_def *def,
                 int64_t id,
                 const char *uuid,
                 cJSON *data,
                 int64_t now_ms,
                 struct engine_instance **out,
                 struct engine_effects *fx,
                 char *errstr,
                 size_t errstr_size)
{
    *out = NULL;
    if (!uuid || strlen(uuid) != 36)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "instance uuid must be 36 characters");
    if (data && !cJSON_IsObject(data))
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "initial data must be a JSON object");
    struct engine_instance *inst = flowd_xcalloc(1, sizeof(*inst));
    inst->id = id;
    memcpy(inst->uuid, uuid, 37);
    inst->def_key = flowd_xstrdup(def->key);
    inst->def_version = def->version;
    inst->state = ENGINE_STARTED;
    inst->data = data ? data : cJSON_CreateObject();
    inst->started_ms = inst->updated_ms = now_ms;
    inst->tokens = flowd_xcalloc(1, sizeof(*inst->tokens));
    inst->ntokens = 1;
    const struct engine_node *start = &def->nodes[def->start];
    inst->tokens[0].node_id = flowd_xstrdup(start->id);
    inst->tokens[0].state = ENGINE_TOKEN_ACTIVE;

    struct run r = {.def = def, .inst = inst, .fx = fx, .now = now_ms};
    hist_add(&r, start->id, "STARTED", NULL);
    walk(&r, 0, start->next);
    finish_run(&r);
    *out = inst;
    return 0;
}

static int topic_of(const struct engine_node *n, const char *topic)
{
    if (!topic)
        return -1;
    for (size_t i = 0; i < n->ntopics; i++)
        if (strcmp(n->topics[i].topic, topic) == 0)
            return (int)i;
    return -1;
}

static int waiting_at(const struct engine_def *def, const struct engine_instance *inst, int node)
{
    for (size_t i = 0; i < inst->ntokens; i++) {
        const struct engine_token *tok = &inst->tokens[i];
        if ((tok->state == ENGINE_TOKEN_WAITING_MESSAGE || tok->state == ENGINE_TOKEN_INCIDENT) &&
            strcmp(tok->node_id, def->nodes[node].id) == 0)
            return (int)i;
    }
    return -1;
}

/* Which token takes ev: its index, or -1 with errstr set. */
static int pick_token(const struct engine_def *def,
                      const struct engine_instance *inst,
                      const struct engine_event *ev,
                      char *errstr,
                      size_t errstr_size)
{
    if (ev->destination_id) {
        int d = engine_def_find(def, ev->destination_id);
        if (d >= 0 && def->nodes[d].type == ENGINE_NODE_RECEIVE) {
            int ti = waiting_at(def, inst, d);
            if (ti < 0)
                flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOWAIT,
                             "instance %" PRId64 ": node '%s' is not waiting for a message",
                             inst->id, def->nodes[d].id);
            return ti;
        }
        /* not a receive node of this definition: fall back to the next rules */
    }
    if (ev->callback_action) {
        int owners = 0;
        for (size_t i = 0; i < def->nnodes; i++) {
            const struct engine_node *n = &def->nodes[i];
            if (n->reply_node < 0 || def->nodes[n->reply_node].type != ENGINE_NODE_RECEIVE)
                continue;
            for (size_t k = 0; k < n->nactions; k++) {
                if (strcmp(n->actions[k].name, ev->callback_action) != 0)
                    continue;
                owners++;
                int ti = waiting_at(def, inst, n->reply_node);
                if (ti >= 0)
                    return ti;
            }
        }
        if (owners) {
            flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOWAIT,
                         "instance %" PRId64 ": no node waits for the reply to action '%s'",
                         inst->id, ev->callback_action);
            return -1;
        }
    }
    for (size_t i = 0; i < inst->ntokens && ev->topic; i++) {
        const struct engine_token *tok = &inst->tokens[i];
        if (tok->state != ENGINE_TOKEN_WAITING_MESSAGE && tok->state != ENGINE_TOKEN_INCIDENT)
            continue;
        int d = engine_def_find(def, tok->node_id);
        if (d >= 0 && topic_of(&def->nodes[d], ev->topic) >= 0)
            return (int)i;
    }
    flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOWAIT,
                 "instance %" PRId64 ": no node waits for a message on topic '%.100s'", inst->id,
                 ev->topic ? ev->topic : "(none)");
    return -1;
}

/* Stores val (taken) at the dotted path under data, creating objects on the way. */
static void data_set(cJSON *data, const char *path, cJSON *val)
{
    char *copy = flowd_xstrdup(path);
    cJSON *cur = data;
    char *seg = copy;
    for (char *dot; (dot = strchr(seg, '.')) != NULL; seg = dot + 1) {
        *dot = '\0';
        cJSON *child = cJSON_GetObjectItemCaseSensitive(cur, seg);
        if (!cJSON_IsObject(child)) {
            child = cJSON_CreateObject();
            if (cJSON_GetObjectItemCaseSensitive(cur, seg))
                cJSON_ReplaceItemInObjectCaseSensitive(cur, seg, child);
            else
                cJSON_AddItemToObject(cur, seg, child);
        }
        cur = child;
    }
    if (cJSON_GetObjectItemCaseSensitive(cur, seg))
        cJSON_ReplaceItemInObjectCaseSensitive(cur, seg, val);
    else
        cJSON_AddItemToObject(cur, seg, val);
    free(copy);
}

/* Is inst an instance of this very definition version? Else errstr says whose it is. */
static int runs_def(const struct engine_def *def,
                    const struct engine_instance *inst,
                    char *errstr,
                    size_t errstr_size)
{
    if (strcmp(inst->def_key, def->key) == 0 && inst->def_version == def->version)
        return 1;
    flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                 "instance %" PRId64 " belongs to %s v%d, not %s v%d", inst->id, inst->def_key,
                 inst->def_version, def->key, def->version);
    return 0;
}

/* 0 if inst is STARTED and runs def; else not_started (when it ended) or FLOWD_ERR_INVAL. */
static int movable(const struct engine_def *def,
                   const struct engine_instance *inst,
                   int not_started,
                   char *errstr,
                   size_t errstr_size)
{
    if (inst->state != ENGINE_STARTED)
        return flowd_seterr(errstr, errstr_size, not_started,
                            "instance %" PRId64 " is %s, not STARTED", inst->id,
                            engine_state_name(inst->state));
    return runs_def(def, inst, errstr, errstr_size) ? 0 : FLOWD_ERR_INVAL;
}

int engine_deliver(const struct engine_def *def,
                   struct engine_instance *inst,
                   const struct engine_event *ev,
                   int64_t now_ms,
                   struct engine_effects *fx,
                   char *errstr,
                   size_t errstr_size)
{
    int rc = movable(def, inst, FLOWD_ERR_STATE, errstr, errstr_size);
    if (rc)
        return rc;
    int ti = pick_token(def, inst, ev, errstr, errstr_size);
    if (ti < 0)
        return FLOWD_ERR_NOWAIT;
    struct engine_token *tok = &inst->tokens[ti];
    int node = engine_def_find(def, tok->node_id);
    const struct engine_node *n = &def->nodes[node];
    int t = topic_of(n, ev->topic);
    const struct engine_topic *et = &n->topics[t >= 0 ? t : 0];

    cJSON *copy = ev->body ? cJSON_Duplicate(ev->body, 1) : cJSON_CreateNull();
    flowd_assert(copy != NULL);
    map_reply(inst, n, copy);
    data_set(inst->data, et->key_name, copy);
    drop_outstanding(tok, n->id);
    tok->state = ENGINE_TOKEN_ACTIVE;
    tok->due_ms = 0;
    tok->attempt = 0;

    struct run r = {.def = def, .inst = inst, .fx = fx, .now = now_ms};
    hist_add(&r, n->id, "MESSAGE_RECEIVED", ev->topic ? flowd_xstrdup(ev->topic) : NULL);
    walk(&r, (size_t)ti, after_reply(&r, n, ev->body));
    finish_run(&r);
    inst->updated_ms = now_ms;
    return 0;
}

/* ---- time ------------------------------------------------------------------------------ */

int64_t engine_instance_next_due(const struct engine_instance *inst)
{
    int64_t due = 0;
    if (inst->state != ENGINE_STARTED)
        return 0;
    for (size_t i = 0; i < inst->ntokens; i++) {
        int64_t d = inst->tokens[i].due_ms;
        enum engine_token_state st = inst->tokens[i].state;
        if ((st == ENGINE_TOKEN_WAITING_MESSAGE || st == ENGINE_TOKEN_WAITING_TIMER ||
             st == ENGINE_TOKEN_WAITING_SUBPROCESS) &&
            d > 0 && (!due || d < due))
            due = d;
    }
    for (size_t i = 0; i < inst->nparked; i++)
        if (!due || inst->parked[i].expires_ms < due)
            due = inst->parked[i].expires_ms;
    return due;
}

static void resend_outstanding(struct run *r, struct engine_token *tok)
{
    struct engine_effects *fx = r->fx;
    for (size_t k = 0; k < tok->noutstanding; k++) {
        if (!outstanding_is_for(tok, k, tok->node_id))
            continue;
        if (fx->nresend == fx->resend_cap) {
            fx->resend_cap = fx->resend_cap ? fx->resend_cap * 2 : 4;
            fx->resend = flowd_xrealloc(fx->resend, fx->resend_cap * sizeof(*fx->resend));
        }
        fx->resend[fx->nresend++] = flowd_xstrdup(tok->outstanding[k]);
    }
}

/* The wait after `attempt` re-sends: the timeout, doubled per re-send (capped at 2^10). */
static int64_t wait_ms(const struct engine_node *n, int attempt)
{
    return n->timeout_ms << (attempt < 10 ? attempt : 10);
}

int engine_fire_due(const struct engine_def *def,
                    struct engine_instance *inst,
                    int64_t now_ms,
                    struct engine_effects *fx,
                    char *errstr,
                    size_t errstr_size)
{
    if (inst->state != ENGINE_STARTED)
        return 0;
    if (!runs_def(def, inst, errstr, errstr_size))
        return FLOWD_ERR_INVAL;
    struct run r = {.def = def, .inst = inst, .fx = fx, .now = now_ms};
    for (size_t i = 0; i < inst->nparked;) {
        struct engine_parked *p = &inst->parked[i];
        if (p->expires_ms > now_ms) {
            i++;
            continue;
        }
        hist_add(&r, p->destination_id ? p->destination_id : "", "MESSAGE_EXPIRED",
                 flowd_xasprintf("early reply %s was not taken in time", p->message_id));
        if (fx->nexpired == fx->expired_cap) {
            fx->expired_cap = fx->expired_cap ? fx->expired_cap * 2 : 4;
            fx->expired = flowd_xrealloc(fx->expired, fx->expired_cap * sizeof(*fx->expired));
        }
        fx->expired[fx->nexpired++] = *p;
        inst->parked[i] = inst->parked[--inst->nparked];
    }
    /* tokens may be added or removed by run_token: walk by index and re-check the bound */
    for (size_t ti = 0; ti < inst->ntokens && inst->state == ENGINE_STARTED; ti++) {
        struct engine_token *tok = &inst->tokens[ti];
        if (tok->state == ENGINE_TOKEN_WAITING_TIMER && tok->due_ms > 0 && tok->due_ms <= now_ms) {
            int tn = engine_def_find(def, tok->node_id);
            tok->state = ENGINE_TOKEN_ACTIVE;
            tok->due_ms = 0;
            if (tn < 0)
                continue;
            hist_add(&r, def->nodes[tn].id, "TIMER_FIRED", NULL);
            walk(&r, ti, def->nodes[tn].next);
            continue;
        }
        if (tok->state == ENGINE_TOKEN_WAITING_SUBPROCESS && tok->due_ms > 0 &&
            tok->due_ms <= now_ms) {
            int cn = engine_def_find(def, tok->node_id);
            if (cn >= 0)
                call_timed_out(&r, ti, &def->nodes[cn]);
            continue;
        }
        if (tok->state != ENGINE_TOKEN_WAITING_MESSAGE || tok->due_ms <= 0 || tok->due_ms > now_ms)
            continue;
        int node = engine_def_find(def, tok->node_id);
        if (node < 0)
            continue;
        const struct engine_node *n = &def->nodes[node];
        if (tok->attempt < n->resend_attempts) {
            tok->attempt++;
            tok->due_ms = now_ms + wait_ms(n, tok->attempt);
            resend_outstanding(&r, tok);
            hist_add(&r, n->id, "MESSAGE_RESENT",
                     flowd_xasprintf("no reply after %s: re-send %d of %d", n->response_timeout,
                                     tok->attempt, n->resend_attempts));
            continue;
        }
        char *detail = flowd_xasprintf("no reply after %s and %d re-send(s)", n->response_timeout,
                                       n->resend_attempts);
        tok->due_ms = 0;
        if (n->timeout_next >= 0) {
            hist_add(&r, n->id, "MESSAGE_RESPONSE_TIMED_OUT", detail);
            drop_outstanding(tok, n->id);
            tok->state = ENGINE_TOKEN_ACTIVE;
            tok->attempt = 0;
            walk(&r, ti, n->timeout_next);
        } else {
            tok->state = ENGINE_TOKEN_INCIDENT;
            hist_add(&r, n->id, "INCIDENT", detail);
        }
    }
    finish_run(&r);
    inst->updated_ms = now_ms;
    return 0;
}

int engine_retry_incident(const struct engine_def *def,
                          struct engine_instance *inst,
                          int64_t now_ms,
                          struct engine_effects *fx,
                          char *errstr,
                          size_t errstr_size)
{
    struct run r = {.def = def, .inst = inst, .fx = fx, .now = now_ms};
    int retried = 0;
    for (size_t ti = 0; inst->state == ENGINE_STARTED && ti < inst->ntokens; ti++) {
        struct engine_token *tok = &inst->tokens[ti];
        if (tok->state != ENGINE_TOKEN_INCIDENT)
            continue;
        int node = engine_def_find(def, tok->node_id);
        if (node < 0)
            continue;
        const struct engine_node *n = &def->nodes[node];
        tok->state = ENGINE_TOKEN_WAITING_MESSAGE;
        tok->attempt = 0;
        tok->due_ms = n->timeout_ms > 0 ? now_ms + n->timeout_ms : 0;
        resend_outstanding(&r, tok);
        hist_add(&r, n->id, "INCIDENT_RETRIED", NULL);
        retried++;
    }
    if (!retried)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_STATE,
                            "instance %" PRId64 " has no incident to retry", inst->id);
    inst->updated_ms = now_ms;
    return 0;
}

/* For engine_admin.c (engine_retry): a FAILED instance starts again from node with one fresh
 * token. Additive wrapper over run_token; the caller has set the instance STARTED. */
void engine_run_from(const struct engine_def *def,
                     struct engine_instance *inst,
                     int node,
                     int64_t now_ms,
                     struct engine_effects *fx)
{
    struct run r = {.def = def, .inst = inst, .fx = fx, .now = now_ms};
    engine_drop_tokens(inst, fx);
    inst->tokens = flowd_xcalloc(1, sizeof(*inst->tokens));
    inst->ntokens = 1;
    inst->tokens[0].node_id = flowd_xstrdup(def->nodes[node].id);
    inst->tokens[0].state = ENGINE_TOKEN_ACTIVE;
    walk(&r, 0, node);
    finish_run(&r);
}

/* ---- early replies ------------------------------------------------------------------------ */

int engine_park(const struct engine_def *def,
                struct engine_instance *inst,
                const struct engine_event *ev,
                const char *message_id,
                const char *value,
                const char *headers,
                int64_t now_ms,
                int64_t expires_ms,
                struct engine_effects *fx,
                char *errstr,
                size_t errstr_size)
{
    if (inst->state != ENGINE_STARTED || !message_id || !value)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOWAIT, "not an early reply");
    /* it must answer a request this instance sent and still waits for */
    const char *for_node = NULL;
    for (size_t i = 0; i < inst->ntokens && !for_node; i++) {
        const struct engine_token *tok = &inst->tokens[i];
        for (size_t k = 0; k < tok->noutstanding; k++)
            if (strcmp(tok->outstanding[k], message_id) == 0 && tok->outstanding_for &&
                tok->outstanding_for[k]) {
                for_node = tok->outstanding_for[k];
                break;
            }
    }
    if (!for_node)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOWAIT,
                            "instance %" PRId64 ": %s answers no outstanding request", inst->id,
                            message_id);
    int node = engine_def_find(def, for_node);
    if (node < 0 || def->nodes[node].type != ENGINE_NODE_RECEIVE)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOWAIT,
                            "instance %" PRId64 ": no receive node '%s'", inst->id, for_node);
    for (size_t i = 0; i < inst->nparked; i++)
        if (strcmp(inst->parked[i].message_id, message_id) == 0)
            return 0; /* already kept */
    inst->parked = flowd_xrealloc(inst->parked, (inst->nparked + 1) * sizeof(*inst->parked));
    struct engine_parked *p = &inst->parked[inst->nparked++];
    memset(p, 0, sizeof(*p));
    p->message_id = flowd_xstrdup(message_id);
    p->topic = ev->topic ? flowd_xstrdup(ev->topic) : NULL;
    p->destination_id = flowd_xstrdup(for_node);
    p->value = flowd_xstrdup(value);
    p->headers = headers ? flowd_xstrdup(headers) : NULL;
    p->expires_ms = expires_ms;
    struct run r = {.def = def, .inst = inst, .fx = fx, .now = now_ms};
    hist_add(&r, for_node, "MESSAGE_PARKED",
             flowd_xasprintf("early reply %s kept until the instance gets here", message_id));
    inst->updated_ms = now_ms;
    return 0;
}

/* ---- subprocesses ---------------------------------------------------------------------- */

static int waiting_call(const struct engine_instance *inst, const char *call_id)
{
    for (size_t i = 0; i < inst->ntokens; i++)
        if (inst->tokens[i].state == ENGINE_TOKEN_WAITING_SUBPROCESS && inst->tokens[i].call_id &&
            strcmp(inst->tokens[i].call_id, call_id) == 0)
            return (int)i;
    return -1;
}

int engine_call_bind(struct engine_instance *parent, const char *call_id, int64_t child_id)
{
    int ti = parent->state == ENGINE_STARTED ? waiting_call(parent, call_id) : -1;
    if (ti < 0)
        return FLOWD_ERR_NOWAIT;
    parent->tokens[ti].child_id = child_id;
    return 0;
}

/* Token ti's call at node n ended without a result (reason; msg takes the parent's error):
 * data.<keyName> = {errorMessage, instanceId}, then errorNext, else the parent fails. */
static void call_failed(struct run *r,
                        size_t ti,
                        const struct engine_node *n,
                        int64_t child_id,
                        const char *reason,
                        char *msg)
{
    if (n->call_key_name) {
        cJSON *err = cJSON_CreateObject();
        flowd_assert(err != NULL);
        cJSON_AddStringToObject(err, "errorMessage", reason);
        if (child_id)
            cJSON_AddNumberToObject(err, "instanceId", (double)child_id);
        data_set(r->inst->data, n->call_key_name, err);
    }
    if (n->error_next < 0) {
        fail_instance(r, n->id, msg);
        return;
    }
    hist_add(r, n->id, "SUBPROCESS_FAILED", msg);
    walk(r, ti, n->error_next);
}

/* fire_due: token ti's call at node n ran out of time: the child is cancelled (an orphan) and
 * the token takes timeoutNext, else the error path. */
static void call_timed_out(struct run *r, size_t ti, const struct engine_node *n)
{
    struct engine_token *tok = &r->inst->tokens[ti];
    int64_t child_id = tok->child_id;
    if (child_id)
        engine_add_orphan(r->fx, child_id);
    free(tok->call_id);
    tok->call_id = NULL;
    tok->child_id = 0;
    tok->due_ms = 0;
    tok->state = ENGINE_TOKEN_ACTIVE;
    char *detail = flowd_xasprintf("subprocess '%s' (instance %" PRId64 " of '%s') gave no result "
                                   "within %s",
                                   n->id, child_id, n->call_key, n->response_timeout);
    if (n->timeout_next >= 0) {
        hist_add(r, n->id, "SUBPROCESS_TIMED_OUT", detail);
        walk(r, ti, n->timeout_next);
        return;
    }
    char reason[96];
    snprintf(reason, sizeof(reason), "no result within %s", n->response_timeout);
    call_failed(r, ti, n, child_id, reason, detail);
}

int engine_call_done(const struct engine_def *def,
                     struct engine_instance *parent,
                     const char *call_id,
                     const struct engine_instance *child,
                     const char *why,
                     int64_t now_ms,
                     struct engine_effects *fx,
                     char *errstr,
                     size_t errstr_size)
{
    int rc = movable(def, parent, FLOWD_ERR_NOWAIT, errstr, errstr_size);
    if (rc)
        return rc;
    int ti = waiting_call(parent, call_id);
    int node = ti < 0 ? -1 : engine_def_find(def, parent->tokens[ti].node_id);
    if (node < 0)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOWAIT,
                            "instance %" PRId64 " does not wait for call %s", parent->id, call_id);
    const struct engine_node *n = &def->nodes[node];
    struct engine_token *tok = &parent->tokens[ti];
    int64_t child_id = child ? child->id : tok->child_id;
    free(tok->call_id);
    tok->call_id = NULL;
    tok->child_id = 0;
    tok->state = ENGINE_TOKEN_ACTIVE;
    parent->updated_ms = now_ms;

    struct run r = {.def = def, .inst = parent, .fx = fx, .now = now_ms};
    if (child && child->state == ENGINE_FINISHED) {
        map_reply(parent, n, child->data);
        if (n->call_key_name)
            data_set(parent->data, n->call_key_name, cJSON_Duplicate(child->data, 1));
        hist_add(&r, n->id, "SUBPROCESS_COMPLETED",
                 flowd_xasprintf("instance %" PRId64 " of '%s'", child_id, n->call_key));
        walk(&r, (size_t)ti, n->next);
        finish_run(&r);
        return 0;
    }
    const char *reason = child ? (child->error                        ? child->error
                                  : child->state == ENGINE_TERMINATED ? "it was cancelled"
                                                                      : "it did not finish")
                               : (why ? why : "it could not be started");
    char *msg = child ? flowd_xasprintf(
                            "subprocess '%s' (instance %" PRId64 " of '%s') %s: %s", n->id,
                            child_id, n->call_key,
                            child->state == ENGINE_TERMINATED ? "was cancelled" : "failed", reason)
                      : flowd_xasprintf("subprocess '%s' (process '%s') could not start: %s", n->id,
                                        n->call_key, reason);
    call_failed(&r, (size_t)ti, n, child_id, reason, msg);
    finish_run(&r);
    return 0;
}
