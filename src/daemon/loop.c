/* loop.c - the daemon loop: consume a batch, apply it in one store transaction, commit Kafka
 * offsets, publish the outbox.
 *
 * Invariants: offsets are committed only after the store commit; a message leaves only after the
 * transaction that produced it committed (outbox), and is marked sent only after Kafka acknowledged
 * it; a failed transaction changes nothing: its instances are evicted from the cache (read from
 * the store on next use) and its messages are consumed again.
 *
 * The cache holds instances between transactions only when this flowd is the store's one writer
 * (SQLite), at most engine.cache.max-instances of them; everything else is read from the store
 * when needed, so memory does not grow with the number of waiting instances. Due instances are
 * claimed from the store (cluster_claim_due), whether cached or not.
 */
#include "daemon.h"

#include "../common/buf.h"
#include "../common/clock.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/banned.h"

#define SENT_FLUSH_MS    200  /* mark delivered rows sent at least this often when idle */
#define SENT_FLUSH_COUNT 2000 /* ... or when that many are pending */
#define IDLE_WAIT_MS     50   /* longest wait for a message with nothing else to do */

/* ---- the request queue ---- */

void loop_submit(struct daemon *d, struct request *req)
{
    req->done = 0;
    req->next = NULL;
    pthread_mutex_lock(&d->q_lock);
    if (d->loop_done) {
        pthread_mutex_unlock(&d->q_lock);
        req->rc = FLOWD_ERR_AGAIN;
        snprintf(req->errstr, sizeof(req->errstr), "flowd is shutting down");
        return;
    }
    if (d->q_tail)
        d->q_tail->next = req;
    else
        d->q_head = req;
    d->q_tail = req;
    pthread_mutex_unlock(&d->q_lock);
    bus_wakeup(d->bus);
    pthread_mutex_lock(&d->q_lock);
    while (!req->done)
        pthread_cond_wait(&d->q_done, &d->q_lock);
    pthread_mutex_unlock(&d->q_lock);
}

static struct request *take_requests(struct daemon *d)
{
    pthread_mutex_lock(&d->q_lock);
    struct request *r = d->q_head;
    d->q_head = d->q_tail = NULL;
    pthread_mutex_unlock(&d->q_lock);
    return r;
}

static void finish_requests(struct daemon *d, struct request *r)
{
    pthread_mutex_lock(&d->q_lock);
    while (r) {
        struct request *next = r->next;
        r->done = 1;
        r = next;
    }
    pthread_cond_broadcast(&d->q_done);
    pthread_mutex_unlock(&d->q_lock);
}

/* ---- delivery reports ---- */

void loop_on_delivery(void *ctx, int64_t outbox_id, rd_kafka_resp_err_t err)
{
    struct daemon *d = ctx;
    if (err) {
        d->resend_needed = 1;
        return;
    }
    atomic_fetch_add(&d->n.sent, 1);
    if (d->nsent == d->sent_cap) {
        d->sent_cap = d->sent_cap ? d->sent_cap * 2 : 1024;
        d->sent_ids = flowd_xrealloc(d->sent_ids, d->sent_cap * sizeof(*d->sent_ids));
    }
    d->sent_ids[d->nsent++] = outbox_id;
}

/* ---- the batch ---- */

static char *headers_json(const struct engine_header *h, size_t n)
{
    struct buf b = BUF_INIT;
    buf_addc(&b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_addc(&b, ',');
        buf_addc(&b, '[');
        buf_add_json_str(&b, h[i].name, strlen(h[i].name));
        buf_addc(&b, ',');
        buf_add_json_str(&b, h[i].value, strlen(h[i].value));
        buf_addc(&b, ']');
    }
    buf_addc(&b, ']');
    return buf_detach(&b);
}

static int add_outgoing(struct batch *b, int64_t instance_id, struct engine_message *msg)
{
    struct daemon *d = b->d;
    char *hj = headers_json(msg->headers, msg->nheaders);
    struct store_outbox_row row = {
        .instance_id = instance_id,
        .message_id = msg->message_id,
        .topic = msg->topic,
        .key = msg->key,
        .value = msg->value,
        .value_len = msg->value ? strlen(msg->value) : 0,
        .headers = hj,
    };
    int64_t id = 0;
    int rc = d->store.m->x_outbox_add(d->store.st, &row, b->now, &id);
    free(hj);
    if (rc) {
        engine_message_free_fields(msg);
        return rc;
    }
    if (b->nout == b->out_cap) {
        b->out_cap = b->out_cap ? b->out_cap * 2 : 64;
        b->out = flowd_xrealloc(b->out, b->out_cap * sizeof(*b->out));
    }
    b->out[b->nout].outbox_id = id;
    b->out[b->nout].instance_id = instance_id;
    b->out[b->nout].msg = *msg;
    b->nout++;
    memset(msg, 0, sizeof(*msg));
    return 0;
}

static void touch(struct batch *b, struct engine_instance *inst)
{
    for (size_t i = 0; i < b->ntouched; i++)
        if (b->touched[i] == inst)
            return;
    if (b->ntouched == b->touched_cap) {
        b->touched_cap = b->touched_cap ? b->touched_cap * 2 : 64;
        b->touched = flowd_xrealloc(b->touched, b->touched_cap * sizeof(*b->touched));
    }
    b->touched[b->ntouched++] = inst;
}

/* Fills msg's headers from the outbox form, a JSON array of [name, value] (as headers_json()
 * writes it), leaving room for `extra` more. */
static void headers_from_json(struct engine_message *msg, const char *json, size_t extra)
{
    cJSON *h = json ? cJSON_Parse(json) : NULL;
    int nh = cJSON_GetArraySize(h);
    msg->headers = flowd_xcalloc((size_t)nh + extra + 1, sizeof(*msg->headers));
    for (int i = 0; i < nh; i++) {
        const cJSON *pair = cJSON_GetArrayItem(h, i);
        const cJSON *k = cJSON_GetArrayItem(pair, 0), *v = cJSON_GetArrayItem(pair, 1);
        if (!cJSON_IsString(k) || !cJSON_IsString(v))
            continue;
        msg->headers[msg->nheaders].name = flowd_xstrdup(k->valuestring);
        msg->headers[msg->nheaders].value = flowd_xstrdup(v->valuestring);
        msg->nheaders++;
    }
    cJSON_Delete(h);
}

/* An early reply that was kept and never taken: to the dead-letter topic, reason expired, with
 * the headers it came with. */
static int dead_letter_expired(struct batch *b, int64_t instance_id, const struct engine_parked *p)
{
    struct daemon *d = b->d;
    atomic_fetch_add(&d->n.dead_lettered, 1);
    FLOWD_LOG(LOG_WARN, LOG_SUB_ENGINE,
              "dead-lettered early reply %s of instance %lld (reason=expired): node '%s' was "
              "not reached in time",
              p->message_id, (long long)instance_id, p->destination_id ? p->destination_id : "");
    struct engine_message out;
    memset(&out, 0, sizeof(out));
    out.topic = flowd_xstrdup(d->cfg->dlq_topic);
    out.key = flowd_xasprintf("%lld", (long long)instance_id);
    out.value = flowd_xstrdup(p->value);
    headers_from_json(&out, p->headers, 3);
    const char *extra[][2] = {{"reason", "expired"},
                              {"reasonDetail", "kept as an early reply, but the instance did not "
                                               "reach its receive node in time"},
                              {"originalTopic", p->topic ? p->topic : ""}};
    for (size_t i = 0; i < 3; i++) {
        out.headers[out.nheaders].name = flowd_xstrdup(extra[i][0]);
        out.headers[out.nheaders].value = flowd_xstrdup(extra[i][1]);
        out.nheaders++;
    }
    out.message_id = flowd_xasprintf("dlq:expired:%s", p->message_id);
    return add_outgoing(b, instance_id, &out);
}

int batch_apply(struct batch *b, struct engine_instance *inst, struct engine_effects *fx)
{
    struct daemon *d = b->d;
    int rc = 0;
    for (size_t i = 0; i < fx->nhist && !rc; i++)
        rc = d->store.m->x_history_add(d->store.st, inst->id, &fx->hist[i]);
    for (size_t i = 0; i < fx->nmsgs && !rc; i++)
        rc = add_outgoing(b, inst->id, &fx->msgs[i]);
    for (size_t i = 0; i < fx->nresend && !rc; i++) {
        int n = 0;
        rc = d->store.m->x_outbox_requeue(d->store.st, fx->resend[i], &n);
        b->requeued += (size_t)n;
        atomic_fetch_add(&d->n.resent, n);
    }
    for (size_t i = 0; i < fx->nexpired && !rc; i++)
        rc = dead_letter_expired(b, inst->id, &fx->expired[i]);
    touch(b, inst);
    calls_queue(b, inst, fx);
    if (!rc && !b->draining)
        rc = calls_drain(b);
    return rc;
}

int batch_dead_letter(struct batch *b,
                      const rd_kafka_message_t *msg,
                      int64_t instance_id,
                      const char *reason,
                      const char *detail)
{
    struct daemon *d = b->d;
    atomic_fetch_add(&d->n.dead_lettered, 1);
    const char *topic = rd_kafka_topic_name(msg->rkt);
    FLOWD_LOG(LOG_WARN, LOG_SUB_ENGINE, "dead-lettered message %s[%d]@%lld (reason=%s): %s", topic,
              (int)msg->partition, (long long)msg->offset, reason, detail);

    struct engine_message out;
    memset(&out, 0, sizeof(out));
    out.topic = flowd_xstrdup(d->cfg->dlq_topic);
    out.key = msg->key ? flowd_xstrndup(msg->key, msg->key_len) : NULL;
    /* a too-large value is not copied: the DLQ could not take it either */
    if (strcmp(reason, "too-large") != 0 && msg->payload)
        out.value = flowd_xstrndup(msg->payload, msg->len);
    rd_kafka_headers_t *h = NULL;
    size_t nh = 0;
    if (rd_kafka_message_headers(msg, &h) == 0 && h)
        nh = rd_kafka_header_cnt(h);
    out.headers = flowd_xcalloc(nh + 5, sizeof(*out.headers));
    for (size_t i = 0; i < nh; i++) {
        const char *name;
        const void *val;
        size_t sz;
        if (rd_kafka_header_get_all(h, i, &name, &val, &sz))
            break;
        out.headers[out.nheaders].name = flowd_xstrdup(name);
        out.headers[out.nheaders].value = val ? flowd_xstrndup(val, sz) : flowd_xstrdup("");
        out.nheaders++;
    }
    const char *extra[][2] = {
        {"reason", reason}, {"reasonDetail", detail}, {"originalTopic", topic}};
    for (size_t i = 0; i < 3; i++) {
        out.headers[out.nheaders].name = flowd_xstrdup(extra[i][0]);
        out.headers[out.nheaders].value = flowd_xstrdup(extra[i][1]);
        out.nheaders++;
    }
    out.headers[out.nheaders].name = flowd_xstrdup("originalPartition");
    out.headers[out.nheaders].value = flowd_xasprintf("%d", (int)msg->partition);
    out.nheaders++;
    out.headers[out.nheaders].name = flowd_xstrdup("originalOffset");
    out.headers[out.nheaders].value = flowd_xasprintf("%lld", (long long)msg->offset);
    out.nheaders++;
    out.message_id = flowd_xasprintf("dlq:%s:%s/%d/%lld", bus_cluster_epoch(d->bus), topic,
                                     (int)msg->partition, (long long)msg->offset);
    return add_outgoing(b, instance_id, &out);
}

struct engine_instance *batch_instance(
    struct batch *b, int64_t id, char *state_out, size_t state_size, char uuid_out[37], int *err)
{
    struct daemon *d = b->d;
    *err = 0;
    state_out[0] = '\0';
    struct engine_instance *inst = map_get(&d->cache, id);
    if (inst)
        return inst;
    char *blob = NULL;
    /* a shared store: read it locked, so no other node moves it until this batch commits */
    int rc = d->shared ? d->store.m->x_instance_lock(d->store.st, id, &blob)
                       : d->store.m->x_instance_get(d->store.st, id, &blob);
    if (rc == FLOWD_ERR_NOTFOUND)
        return NULL;
    if (rc) {
        *err = rc;
        return NULL;
    }
    char errstr[FLOWD_ERRSTR_SIZE];
    inst = engine_instance_from_json(blob, strlen(blob), errstr, sizeof(errstr));
    free(blob);
    if (!inst) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "instance %lld in the store cannot be read: %s",
                  (long long)id, errstr);
        *err = FLOWD_ERR_IO;
        return NULL;
    }
    if (inst->state != ENGINE_STARTED) {
        snprintf(state_out, state_size, "%s", engine_state_name(inst->state));
        memcpy(uuid_out, inst->uuid, 37);
        engine_instance_free(inst);
        return NULL;
    }
    map_put(&d->cache, id, inst);
    return inst;
}

/* ---- requests inside the batch ---- */

static void handle_deploy(struct batch *b, struct request *r)
{
    struct daemon *d = b->d;
    char uuid[37], stored_uuid[37] = "";
    clock_uuid4(uuid);
    int version = 0, created = 0;
    r->rc = d->store.m->x_def_put(d->store.st, engine_def_key(r->def), r->def_json, uuid, b->now,
                                  &version, &created, stored_uuid);
    if (r->rc) {
        snprintf(r->errstr, sizeof(r->errstr), "the store refused the definition: %s",
                 flowd_err_str(r->rc));
        return;
    }
    r->created = created;
    r->result = cJSON_CreateObject();
    cJSON_AddStringToObject(r->result, "key", engine_def_key(r->def));
    cJSON_AddNumberToObject(r->result, "version", version);
    cJSON_AddStringToObject(r->result, "uuid", stored_uuid[0] ? stored_uuid : uuid);
    cJSON_AddBoolToObject(r->result, "created", created);
    /* definitions may be deployed in any order, but say which calls cannot work yet */
    cJSON *warnings = NULL;
    const char *key, *node;
    int ver;
    for (size_t i = 0; (key = engine_def_call(r->def, i, &node, &ver)) != NULL; i++) {
        if (strcmp(key, engine_def_key(r->def)) == 0 || defs_lookup(d, key, ver))
            continue;
        if (!warnings)
            warnings = cJSON_AddArrayToObject(r->result, "warnings");
        char msg[400];
        if (ver)
            snprintf(msg, sizeof(msg),
                     "node '%s' calls process '%s' version %d, which is not deployed: instances "
                     "reaching it fail (or take its errorNext) until it is",
                     node, key, ver);
        else
            snprintf(msg, sizeof(msg),
                     "node '%s' calls process '%s', which is not deployed: instances reaching it "
                     "fail (or take its errorNext) until it is",
                     node, key);
        cJSON_AddItemToArray(warnings, cJSON_CreateString(msg));
    }
}

/* After commit: register the new definition (the loop owns the registry). */
static void deploy_committed(struct daemon *d, struct request *r)
{
    if (r->rc || !r->created) {
        engine_def_free(r->def);
        r->def = NULL;
        return;
    }
    const cJSON *v = cJSON_GetObjectItem(r->result, "version");
    engine_def_set_version(r->def, (int)v->valuedouble, json_str(r->result, "uuid"));
    for (size_t i = 0; i < engine_def_receive_topic_count(r->def); i++) {
        const char *node;
        bus_ensure_topic(d->bus, engine_def_receive_topic(r->def, i, &node));
    }
    FLOWD_LOG(LOG_INFO, LOG_SUB_ENGINE, "deployed %s version %d", engine_def_key(r->def),
              engine_def_version(r->def));
    registry_add(&d->reg, r->def);
    r->def = NULL;
}

int batch_start_def(struct batch *b,
                    const struct engine_def *def,
                    cJSON *data,
                    struct engine_instance *parent,
                    const char *call_id,
                    struct engine_instance **out,
                    char *errstr,
                    size_t errstr_size)
{
    struct daemon *d = b->d;
    int64_t id = (d->cfg->node_id << INSTANCE_ID_NODE_SHIFT) | d->next_seq++;
    char uuid[37];
    clock_uuid4(uuid);
    struct engine_instance *inst = NULL;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    *out = NULL;
    int rc = engine_start(def, id, uuid, data, b->now, &inst, &fx, errstr, errstr_size);
    if (rc) {
        engine_effects_clear(&fx);
        return rc;
    }
    if (parent) {
        inst->parent_id = parent->id;
        inst->parent_call = flowd_xstrdup(call_id);
        inst->depth = parent->depth + 1;
        engine_call_bind(parent, call_id, id);
    }
    atomic_fetch_add(&d->n.started, 1);
    map_put(&d->cache, id, inst);
    rc = batch_apply(b, inst, &fx);
    engine_effects_clear(&fx);
    *out = inst;
    return rc;
}

int batch_start(struct batch *b,
                const char *key,
                int version,
                cJSON *data,
                struct engine_instance **out,
                char *errstr,
                size_t errstr_size)
{
    *out = NULL;
    const struct engine_def *def = defs_lookup(b->d, key, version);
    if (!def) {
        cJSON_Delete(data);
        if (version)
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOTFOUND,
                                "process definition '%s' has no version %d", key, version);
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOTFOUND,
                            "no process definition with key '%s' is deployed", key);
    }
    return batch_start_def(b, def, data, NULL, NULL, out, errstr, errstr_size);
}

static void handle_start(struct batch *b, struct request *r)
{
    struct engine_instance *inst = NULL;
    cJSON *data = r->data;
    r->data = NULL;
    r->rc = batch_start(b, r->key, r->version, data, &inst, r->errstr, sizeof(r->errstr));
    if (inst)
        r->instance_id = inst->id;
}

int batch_publish(struct batch *b, int64_t instance_id, struct engine_message *msg)
{
    return add_outgoing(b, instance_id, msg);
}

void batch_adopt(struct batch *b, struct engine_instance *inst)
{
    map_put(&b->d->cache, inst->id, inst);
    touch(b, inst);
}

/* ---- one batch ---- */

static void publish(struct daemon *d, struct outgoing *o)
{
    size_t nh = o->msg.nheaders;
    struct bus_header *hs = flowd_xcalloc(nh ? nh : 1, sizeof(*hs));
    for (size_t i = 0; i < nh; i++) {
        hs[i].name = o->msg.headers[i].name;
        hs[i].value = o->msg.headers[i].value;
        hs[i].value_len = strlen(o->msg.headers[i].value);
    }
    for (;;) {
        int rc = bus_produce(d->bus, o->msg.topic, o->msg.key, o->msg.value,
                             o->msg.value ? strlen(o->msg.value) : 0, hs, nh, o->outbox_id);
        if (rc != FLOWD_ERR_AGAIN) {
            if (rc)
                d->resend_needed = 1;
            break;
        }
        bus_poll(d->bus, 10);
    }
    free(hs);
}

static void batch_release(struct batch *b)
{
    calls_release(b);
    for (size_t i = 0; i < b->nout; i++)
        engine_message_free_fields(&b->out[i].msg);
    free(b->out);
    free(b->touched);
}

/* Evicts what the failed transaction touched: the store has the truth. */
static void batch_abort(struct daemon *d, struct batch *b)
{
    if (d->shared) { /* nothing is kept between batches */
        b->ntouched = 0;
        cluster_forget(d);
        return;
    }
    for (size_t i = 0; i < b->ntouched; i++) {
        struct engine_instance *inst = b->touched[i];
        if (map_get(&d->cache, inst->id) == inst)
            map_del(&d->cache, inst->id);
        engine_instance_free(inst);
    }
    b->ntouched = 0;
}

static int save_touched(struct daemon *d, struct batch *b)
{
    for (size_t i = 0; i < b->ntouched; i++) {
        struct engine_instance *inst = b->touched[i];
        char *blob = engine_instance_to_json(inst);
        char *waiting = engine_instance_waiting(inst);
        struct store_instance_row row = {
            .id = inst->id,
            .uuid = inst->uuid,
            .def_key = inst->def_key,
            .def_version = inst->def_version,
            .state = engine_state_name(inst->state),
            .blob = blob,
            .started_ms = inst->started_ms,
            .updated_ms = inst->updated_ms,
            .due_ms = engine_instance_next_due(inst),
            .waiting = waiting,
        };
        int rc = d->store.m->x_instance_put(d->store.st, &row);
        free(blob);
        free(waiting);
        if (rc)
            return rc;
    }
    return 0;
}

/* Runs one transaction over msgs, requests, delivered ids and (claim) the instances that are
 * due. Returns 0 or the store error. */
static int run_batch(struct daemon *d,
                     rd_kafka_message_t **msgs,
                     size_t nmsgs,
                     struct request *reqs,
                     int64_t *sent,
                     size_t nsent,
                     int claim)
{
    struct batch b;
    memset(&b, 0, sizeof(b));
    b.d = d;
    b.now = clock_wall_ms();
    const struct store_methods *m = d->store.m;

    int rc = m->x_begin(d->store.st);
    if (!rc && nsent)
        rc = m->x_outbox_mark_sent(d->store.st, sent, nsent, b.now);
    if (!rc)
        rc = cluster_prelock(&b, msgs, nmsgs);
    for (struct request *r = reqs; r && !rc; r = r->next) {
        if (r->type == REQ_DEPLOY)
            handle_deploy(&b, r);
        else if (r->type == REQ_START)
            handle_start(&b, r);
        else
            backend_run_request(&b, r); /* cancel, retry, deliver, replay, stats */
        /* a request's own failure (unknown key...) is its answer; a store failure aborts */
        if (r->rc == FLOWD_ERR_IO || r->rc == FLOWD_ERR_AGAIN)
            rc = r->rc;
    }
    for (size_t i = 0; i < nmsgs && !rc; i++)
        rc = reply_handle(d, &b, msgs[i]);
    if (!rc && claim)
        rc = cluster_claim_due(&b);
    if (!rc)
        rc = save_touched(d, &b);
    if (!rc)
        rc = m->x_commit(d->store.st);

    if (rc) {
        m->x_rollback(d->store.st);
        atomic_fetch_add(&d->n.store_failures, 1);
        if (atomic_exchange(&d->store_ok, 0))
            FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE,
                      "store transaction failed (%s); nothing of it was applied, retrying",
                      flowd_err_str(rc));
        batch_abort(d, &b);
        for (struct request *r = reqs; r; r = r->next) {
            if (r->type == REQ_DEPLOY && r->def) {
                engine_def_free(r->def);
                r->def = NULL;
            }
            cJSON_Delete(r->result);
            r->result = NULL;
            r->rc = FLOWD_ERR_AGAIN;
            snprintf(r->errstr, sizeof(r->errstr),
                     "the store is unavailable (%s); nothing was changed, try again",
                     flowd_err_str(rc));
        }
        batch_release(&b);
        return rc;
    }
    if (!atomic_exchange(&d->store_ok, 1))
        FLOWD_LOG(LOG_INFO, LOG_SUB_STORE, "store transactions succeed again");

    /* committed: offsets, then the outbox, then the cache and the answers */
    bus_commit(d->bus, msgs, nmsgs);
    for (size_t i = 0; i < b.nout; i++)
        publish(d, &b.out[i]);
    atomic_fetch_add(&d->n.batches, 1);
    atomic_fetch_add(&d->n.batch_msgs, (long long)nmsgs);
    if (nmsgs)
        metrics_observe(&d->m.batch_size, (long long)nmsgs);
    for (struct request *r = reqs; r; r = r->next) {
        if (r->type == REQ_DEPLOY) {
            deploy_committed(d, r);
        } else if (r->type == REQ_START && !r->rc) {
            struct engine_instance *inst = map_get(&d->cache, r->instance_id);
            r->result = engine_instance_view(inst);
        }
    }
    if (b.requeued)
        d->resend_needed = 1;
    for (size_t i = 0; i < b.ntouched; i++) {
        struct engine_instance *inst = b.touched[i];
        int64_t due = engine_instance_next_due(inst);
        if (due)
            timers_push(d, inst->id, due);
        if (inst->state != ENGINE_STARTED) {
            if (inst->state == ENGINE_FINISHED) {
                atomic_fetch_add(&d->n.completed, 1);
                metrics_observe(&d->m.latency_ms, (long long)(inst->ended_ms - inst->started_ms));
            } else if (inst->state == ENGINE_TERMINATED) {
                atomic_fetch_add(&d->m.cancelled, 1);
            } else {
                atomic_fetch_add(&d->n.failed, 1);
            }
            map_del(&d->cache, inst->id);
            engine_instance_free(inst);
        }
    }
    cluster_forget(d);
    cluster_trim(d);
    batch_release(&b);
    return 0;
}

/* ---- outbox relay for rows not published by a batch (startup, failed deliveries) ---- */

struct unsent_ctx {
    struct daemon *d;
    size_t n;
};

static int publish_row(void *ctx, const struct store_outbox_row *row)
{
    struct unsent_ctx *u = ctx;
    struct outgoing o;
    memset(&o, 0, sizeof(o));
    o.outbox_id = row->id;
    o.msg.topic = flowd_xstrdup(row->topic);
    o.msg.key = row->key ? flowd_xstrdup(row->key) : NULL;
    o.msg.value = row->value ? flowd_xstrndup(row->value, row->value_len) : NULL;
    headers_from_json(&o.msg, row->headers, 0);
    publish(u->d, &o);
    engine_message_free_fields(&o.msg);
    u->n++;
    return 0;
}

void loop_publish_unsent(struct daemon *d)
{
    struct unsent_ctx u = {d, 0};
    d->resend_needed = 0;
    int rc = d->store.m->x_outbox_scan_unsent(d->store.st, 100000, publish_row, &u);
    if (rc)
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "cannot read the outbox: %s", flowd_err_str(rc));
    if (u.n)
        FLOWD_LOG(LOG_INFO, LOG_SUB_KAFKA, "re-publishing %zu message(s) from the outbox", u.n);
}

/* ---- housekeeping ---- */

/* Deletes what the retention settings let go: acknowledged outbox rows (not those of waiting
 * instances), old dead letters, old inbox keys. Its own small transaction; a failure is retried
 * at the next round. */
static void purge(struct daemon *d)
{
    const struct store_methods *m = d->store.m;
    int64_t now = clock_wall_ms();
    int rc = m->x_begin(d->store.st);
    if (!rc)
        rc = m->x_outbox_purge(d->store.st, now - d->cfg->outbox_retention_ms, d->cfg->dlq_topic,
                               now - d->cfg->dlq_retention_ms);
    if (!rc)
        rc = m->x_inbox_purge(d->store.st, now - d->cfg->inbox_retention_ms);
    if (!rc)
        rc = m->x_commit(d->store.st);
    if (rc) {
        m->x_rollback(d->store.st);
        FLOWD_LOG(LOG_WARN, LOG_SUB_STORE,
                  "purging old outbox and inbox rows failed (%s); "
                  "retrying in a minute",
                  flowd_err_str(rc));
    }
}

/* ---- the loop ---- */

/* How long the loop may wait for a message: until the next thing it must do by itself (a timer
 * falls due, delivered rows are to be marked sent, housekeeping), at most IDLE_WAIT_MS. Delivery
 * reports do not wake it: they are served at the next wake-up (bus_poll), at most IDLE_WAIT_MS
 * late, and nothing on the way of an instance waits for them. */
static int wait_ms(struct daemon *d, int64_t sent_since_us)
{
    int64_t wait = IDLE_WAIT_MS;
    int64_t next_due = timers_next(d);
    if (next_due) {
        int64_t until = next_due - clock_wall_ms();
        wait = until < wait ? until : wait;
    }
    if (sent_since_us) {
        int64_t until = (sent_since_us + SENT_FLUSH_MS * 1000 - clock_mono_us() + 999) / 1000;
        wait = until < wait ? until : wait;
    }
    return wait > 0 ? (int)wait : 0;
}

void loop_run(struct daemon *d)
{
    size_t max = (size_t)d->cfg->batch_max;
    rd_kafka_message_t **msgs = flowd_xmalloc(max * sizeof(*msgs));
    size_t nmsgs = 0;
    size_t limit = max; /* messages per transaction: halved after each failure, regrows */
    int64_t sent_since = 0;
    int backoff_ms = 0;

    int64_t due_ids[256];
    int64_t purge_every_us = d->cfg->purge_interval_ms * 1000;
    int64_t purge_at = clock_mono_us() + purge_every_us;

    while (!d->stopping) {
        if (clock_mono_us() >= purge_at) {
            purge(d);
            purge_at = clock_mono_us() + purge_every_us;
        }
        bus_poll(d->bus, 0);
        if (d->nsent && !sent_since)
            sent_since = clock_mono_us();
        if (!nmsgs)
            nmsgs =
                bus_consume(d->bus, msgs, max, wait_ms(d, sent_since), (int)d->cfg->batch_wait_ms);
        struct request *reqs = take_requests(d);
        /* due instances are claimed from the store: the heap says when, the store what */
        size_t ndue = timers_take_due(d, clock_wall_ms(), due_ids, 256);
        int claim = cluster_tick(d) || ndue;
        bus_poll(d->bus, 0);
        if (d->resend_needed && !bus_in_flight(d->bus) && !d->nsent)
            loop_publish_unsent(d); /* re-sends, and deliveries that failed */

        if (d->nsent && !sent_since)
            sent_since = clock_mono_us();
        int flush_sent = d->nsent && (d->nsent >= SENT_FLUSH_COUNT ||
                                      clock_mono_us() - sent_since >= SENT_FLUSH_MS * 1000);
        if (!nmsgs && !reqs && !flush_sent && !claim)
            continue;

        int64_t *sent = d->sent_ids;
        size_t nsent = d->nsent;
        d->sent_ids = NULL;
        d->nsent = d->sent_cap = 0;
        sent_since = 0;

        /* after failures, retry fewer messages at a time, so that one message that keeps
         * failing cannot hold back the others */
        size_t take = nmsgs < limit ? nmsgs : limit;
        int rc = run_batch(d, msgs, take, reqs, sent, nsent, claim);
        finish_requests(d, reqs);
        if (rc) {
            limit = take > 1 ? take / 2 : 1;
            /* what fell due is still due in the store: look again at the retry */
            if (claim)
                d->poll_at_us = 0;
            /* keep the messages and the delivered ids for the retry */
            for (size_t i = 0; i < nsent; i++)
                loop_on_delivery(d, sent[i], 0);
            atomic_fetch_sub(&d->n.sent, (long long)nsent);
            free(sent);
            backoff_ms = backoff_ms ? (backoff_ms * 2 > 2000 ? 2000 : backoff_ms * 2) : 10;
            usleep((useconds_t)backoff_ms * 1000);
            continue;
        }
        backoff_ms = 0;
        limit = limit * 2 < max ? limit * 2 : max;
        free(sent);
        for (size_t i = 0; i < take; i++)
            rd_kafka_message_destroy(msgs[i]);
        memmove(msgs, msgs + take, (nmsgs - take) * sizeof(*msgs));
        nmsgs -= take;
    }
    for (size_t i = 0; i < nmsgs; i++)
        rd_kafka_message_destroy(msgs[i]);
    free(msgs);
    /* answer anything still queued, and refuse what comes later */
    pthread_mutex_lock(&d->q_lock);
    d->loop_done = 1;
    pthread_mutex_unlock(&d->q_lock);
    struct request *reqs = take_requests(d);
    for (struct request *r = reqs; r; r = r->next) {
        r->rc = FLOWD_ERR_AGAIN;
        snprintf(r->errstr, sizeof(r->errstr), "flowd is shutting down");
    }
    finish_requests(d, reqs);
}
