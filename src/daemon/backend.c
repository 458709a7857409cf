/* backend.c - the API's view of the daemon (struct api_backend).
 *
 * HTTP threads: reads (instances, history, definitions, dead letters) use the read store under
 * read_lock; every write (deploy, start, cancel, retry, deliver, replay) and the loop-owned state
 * /metrics needs (REQ_STATS) go to the loop as a request, so they land in the loop's next batch
 * transaction like everything else. backend_run_request() is the loop side of the requests that
 * loop.c does not handle itself; it runs on the loop thread inside the batch transaction.
 */
#include "daemon.h"

#include "../api/api.h"
#include "../common/buf.h"
#include "../common/clock.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

/* ---- helpers -------------------------------------------------------------------------- */

static void add_time(cJSON *o, const char *name, int64_t ms)
{
    char at[40];
    clock_iso8601(ms, at, sizeof(at));
    cJSON_AddStringToObject(o, name, at);
}

static int store_error(char *errstr, size_t errstr_size, int rc)
{
    return flowd_seterr(errstr, errstr_size, rc == FLOWD_ERR_AGAIN ? rc : FLOWD_ERR_IO,
                        "the store could not be read: %s", flowd_err_str(rc));
}

/* Submits req and moves its answer into *out / errstr. */
static int
submit(struct daemon *d, struct request *req, cJSON **out, char *errstr, size_t errstr_size)
{
    loop_submit(d, req);
    if (req->rc) {
        snprintf(errstr, errstr_size, "%s", req->errstr);
        cJSON_Delete(req->result);
        return req->rc;
    }
    *out = req->result;
    return 0;
}

/* Parses a definition and checks its receive topics against the subscription. */
static struct engine_def *
parse_def(struct daemon *d, const char *json, size_t len, char *errstr, size_t errstr_size)
{
    struct engine_def *def = engine_def_parse(json, len, &d->env, errstr, errstr_size);
    if (!def)
        return NULL;
    for (size_t i = 0; i < engine_def_receive_topic_count(def); i++) {
        const char *node;
        const char *topic = engine_def_receive_topic(def, i, &node);
        if (regexec(&d->sub_re, topic, 0, NULL, 0) != 0) {
            flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                         "node '%s': topic '%s' does not match the engine's subscription %s, so "
                         "replies on it would never reach flowd",
                         node, topic, d->cfg->subscription_regex);
            engine_def_free(def);
            return NULL;
        }
    }
    return def;
}

/* ---- definitions ---------------------------------------------------------------------- */

static int be_deploy(void *ctx,
                     const char *json,
                     size_t len,
                     cJSON **out,
                     int *created,
                     char *errstr,
                     size_t errstr_size)
{
    struct daemon *d = ctx;
    struct engine_def *def = parse_def(d, json, len, errstr, errstr_size);
    if (!def)
        return FLOWD_ERR_INVAL;
    struct request req;
    memset(&req, 0, sizeof(req));
    req.type = REQ_DEPLOY;
    req.def = def;
    /* stored in canonical form: a definition that differs only in layout is the same version
     * (parse_def has accepted it, so it parses) */
    cJSON *doc = json_parse(json, len, NULL, 0);
    req.def_json = doc ? json_print(doc) : flowd_xstrndup(json, len);
    cJSON_Delete(doc);
    loop_submit(d, &req);
    free(req.def_json);
    if (req.rc) {
        snprintf(errstr, errstr_size, "%s", req.errstr);
        cJSON_Delete(req.result);
        return req.rc;
    }
    *out = req.result;
    *created = req.created;
    return 0;
}

static int
be_validate(void *ctx, const char *json, size_t len, cJSON **out, char *errstr, size_t errstr_size)
{
    struct daemon *d = ctx;
    struct engine_def *def = parse_def(d, json, len, errstr, errstr_size);
    if (!def)
        return FLOWD_ERR_INVAL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "valid", 1);
    cJSON_AddStringToObject(o, "key", engine_def_key(def));
    if (engine_def_name(def))
        cJSON_AddStringToObject(o, "name", engine_def_name(def));
    else
        cJSON_AddNullToObject(o, "name");
    engine_def_free(def);
    *out = o;
    return 0;
}

struct def_scan {
    cJSON *list;     /* list: the definitions array */
    const char *key; /* get: the wanted key and version (0 = latest) */
    int version;
    cJSON *found;
};

static cJSON *def_version_obj(const struct store_def_row *row)
{
    cJSON *v = cJSON_CreateObject();
    cJSON_AddNumberToObject(v, "version", row->version);
    cJSON_AddStringToObject(v, "uuid", row->uuid ? row->uuid : "");
    add_time(v, "createdAt", row->created_ms);
    return v;
}

static int list_def(void *ctx, const struct store_def_row *row)
{
    struct def_scan *s = ctx;
    cJSON *entry = NULL, *it;
    cJSON_ArrayForEach(it, s->list)
    {
        if (strcmp(json_str(it, "key"), row->key) == 0)
            entry = it;
    }
    if (!entry) {
        entry = cJSON_CreateObject();
        cJSON_AddStringToObject(entry, "key", row->key);
        cJSON_AddNullToObject(entry, "name");
        cJSON_AddNumberToObject(entry, "latestVersion", 0);
        cJSON_AddArrayToObject(entry, "versions");
        cJSON_AddItemToArray(s->list, entry);
    }
    cJSON *def = cJSON_Parse(row->json);
    const char *name = json_str(def, "name");
    cJSON_ReplaceItemInObjectCaseSensitive(entry, "name",
                                           name ? cJSON_CreateString(name) : cJSON_CreateNull());
    cJSON_Delete(def);
    cJSON *latest = cJSON_GetObjectItemCaseSensitive(entry, "latestVersion");
    if (row->version > latest->valuedouble)
        cJSON_SetNumberValue(latest, row->version);
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(entry, "versions"), def_version_obj(row));
    return 0;
}

static int be_list_definitions(void *ctx, cJSON **out, char *errstr, size_t errstr_size)
{
    struct daemon *d = ctx;
    struct def_scan s = {cJSON_CreateArray(), NULL, 0, NULL};
    pthread_mutex_lock(&d->read_lock);
    int rc = d->read_store.m->x_def_scan(d->read_store.st, list_def, &s);
    pthread_mutex_unlock(&d->read_lock);
    if (rc) {
        cJSON_Delete(s.list);
        return store_error(errstr, errstr_size, rc);
    }
    *out = cJSON_CreateObject();
    cJSON_AddItemToObject(*out, "definitions", s.list);
    return 0;
}

static int get_def(void *ctx, const struct store_def_row *row)
{
    struct def_scan *s = ctx;
    if (strcmp(row->key, s->key) != 0)
        return 0;
    if (s->version && row->version != s->version)
        return 0;
    if (s->found && row->version < cJSON_GetObjectItem(s->found, "version")->valuedouble)
        return 0;
    cJSON_Delete(s->found);
    s->found = def_version_obj(row);
    cJSON_AddStringToObject(s->found, "key", row->key);
    cJSON *def = cJSON_Parse(row->json);
    cJSON_AddItemToObject(s->found, "definition", def ? def : cJSON_CreateNull());
    return 0;
}

static int be_get_definition(
    void *ctx, const char *key, int version, cJSON **out, char *errstr, size_t errstr_size)
{
    struct daemon *d = ctx;
    struct def_scan s = {NULL, key, version, NULL};
    pthread_mutex_lock(&d->read_lock);
    int rc = d->read_store.m->x_def_scan(d->read_store.st, get_def, &s);
    pthread_mutex_unlock(&d->read_lock);
    if (rc) {
        cJSON_Delete(s.found);
        return store_error(errstr, errstr_size, rc);
    }
    if (!s.found) {
        if (version)
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOTFOUND,
                                "no version %d of process definition '%s'", version, key);
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOTFOUND,
                            "no process definition with key '%s' is deployed", key);
    }
    *out = s.found;
    return 0;
}

/* ---- starting and reading instances --------------------------------------------------- */

static int be_start(void *ctx,
                    const char *key,
                    int version,
                    cJSON *data,
                    cJSON **out,
                    char *errstr,
                    size_t errstr_size)
{
    struct daemon *d = ctx;
    struct request req;
    memset(&req, 0, sizeof(req));
    req.type = REQ_START;
    req.version = version;
    snprintf(req.key, sizeof(req.key), "%s", key);
    req.data = data;
    loop_submit(d, &req);
    cJSON_Delete(req.data); /* only left when the loop did not take it */
    if (req.rc) {
        snprintf(errstr, errstr_size, "%s", req.errstr);
        cJSON_Delete(req.result);
        return req.rc;
    }
    *out = req.result;
    return 0;
}

static int add_history(void *ctx, const struct engine_history *h)
{
    cJSON *arr = ctx;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "seq", h->seq);
    if (h->node_id)
        cJSON_AddStringToObject(o, "node", h->node_id);
    else
        cJSON_AddNullToObject(o, "node");
    cJSON_AddStringToObject(o, "state", h->state ? h->state : "");
    add_time(o, "at", h->at_ms);
    if (h->detail)
        cJSON_AddStringToObject(o, "detail", h->detail);
    else
        cJSON_AddNullToObject(o, "detail");
    cJSON_AddItemToArray(arr, o);
    return 0;
}

static int not_found(char *errstr, size_t errstr_size, int64_t id)
{
    return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOTFOUND, "no instance with id %lld",
                        (long long)id);
}

static int be_get_instance(void *ctx, int64_t id, cJSON **out, char *errstr, size_t errstr_size)
{
    struct daemon *d = ctx;
    char *blob = NULL;
    pthread_mutex_lock(&d->read_lock);
    const struct store_methods *m = d->read_store.m;
    int rc = m->x_instance_get(d->read_store.st, id, &blob);
    cJSON *hist = cJSON_CreateArray();
    if (!rc)
        rc = m->x_history_scan(d->read_store.st, id, add_history, hist);
    pthread_mutex_unlock(&d->read_lock);
    if (rc) {
        cJSON_Delete(hist);
        free(blob);
        if (rc == FLOWD_ERR_NOTFOUND)
            return not_found(errstr, errstr_size, id);
        return store_error(errstr, errstr_size, rc);
    }
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_instance *inst = engine_instance_from_json(blob, strlen(blob), err, sizeof(err));
    free(blob);
    if (!inst) {
        cJSON_Delete(hist);
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "instance %lld cannot be read: %s", (long long)id, err);
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_IO,
                            "instance %lld is stored in a form that cannot be read", (long long)id);
    }
    cJSON *view = engine_instance_view(inst);
    engine_instance_free(inst);
    cJSON_AddItemToObject(view, "history", hist);
    *out = view;
    return 0;
}

static int be_get_history(void *ctx, int64_t id, cJSON **out, char *errstr, size_t errstr_size)
{
    struct daemon *d = ctx;
    char *blob = NULL;
    cJSON *hist = cJSON_CreateArray();
    pthread_mutex_lock(&d->read_lock);
    const struct store_methods *m = d->read_store.m;
    int rc = m->x_instance_get(d->read_store.st, id, &blob);
    if (!rc)
        rc = m->x_history_scan(d->read_store.st, id, add_history, hist);
    pthread_mutex_unlock(&d->read_lock);
    free(blob);
    if (rc) {
        cJSON_Delete(hist);
        return rc == FLOWD_ERR_NOTFOUND ? not_found(errstr, errstr_size, id)
                                        : store_error(errstr, errstr_size, rc);
    }
    *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(*out, "id", (double)id);
    cJSON_AddItemToObject(*out, "history", hist);
    return 0;
}

struct list_ctx {
    cJSON *arr;
    int n, limit;
    int64_t last_id;
    int more;
};

static int list_instance(void *ctx, const struct store_instance_row *row)
{
    struct list_ctx *l = ctx;
    if (l->n == l->limit) {
        l->more = 1; /* the extra row only says that there is a next page */
        return 1;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)row->id);
    cJSON_AddStringToObject(o, "uuid", row->uuid ? row->uuid : "");
    cJSON_AddStringToObject(o, "processKey", row->def_key ? row->def_key : "");
    cJSON_AddNumberToObject(o, "version", row->def_version);
    cJSON_AddStringToObject(o, "state", row->state ? row->state : "");
    add_time(o, "startedAt", row->started_ms);
    add_time(o, "updatedAt", row->updated_ms);
    cJSON_AddItemToArray(l->arr, o);
    l->n++;
    l->last_id = row->id;
    return 0;
}

static int be_list_instances(
    void *ctx, const struct api_instance_query *q, cJSON **out, char *errstr, size_t errstr_size)
{
    struct daemon *d = ctx;
    struct store_instance_filter f = {q->state, q->def_key,   q->from_ms,
                                      q->to_ms, q->before_id, (size_t)q->limit + 1};
    struct list_ctx l = {cJSON_CreateArray(), 0, q->limit, 0, 0};
    pthread_mutex_lock(&d->read_lock);
    int rc = d->read_store.m->x_instance_list(d->read_store.st, &f, list_instance, &l);
    pthread_mutex_unlock(&d->read_lock);
    if (rc < 0) {
        cJSON_Delete(l.arr);
        return store_error(errstr, errstr_size, rc);
    }
    *out = cJSON_CreateObject();
    cJSON_AddItemToObject(*out, "instances", l.arr);
    if (l.more)
        cJSON_AddNumberToObject(*out, "next", (double)l.last_id);
    else
        cJSON_AddNullToObject(*out, "next");
    return 0;
}

/* ---- operator actions (through the loop) ---------------------------------------------- */

static int
be_cancel(void *ctx, int64_t id, const char *reason, cJSON **out, char *errstr, size_t errstr_size)
{
    struct request req;
    memset(&req, 0, sizeof(req));
    req.type = REQ_CANCEL;
    req.target_id = id;
    req.text = reason;
    return submit(ctx, &req, out, errstr, errstr_size);
}

static int
be_retry(void *ctx, int64_t id, const cJSON *patch, cJSON **out, char *errstr, size_t errstr_size)
{
    struct request req;
    memset(&req, 0, sizeof(req));
    req.type = REQ_RETRY;
    req.target_id = id;
    req.data = (cJSON *)patch; /* borrowed: the loop does not take it */
    return submit(ctx, &req, out, errstr, errstr_size);
}

static int be_deliver(void *ctx,
                      int64_t id,
                      const char *node,
                      const char *topic,
                      const cJSON *body,
                      cJSON **out,
                      char *errstr,
                      size_t errstr_size)
{
    struct request req;
    memset(&req, 0, sizeof(req));
    req.type = REQ_DELIVER;
    req.target_id = id;
    req.node = node;
    req.topic = topic;
    req.data = (cJSON *)body;
    return submit(ctx, &req, out, errstr, errstr_size);
}

static int be_replay(void *ctx, int64_t id, cJSON **out, char *errstr, size_t errstr_size)
{
    struct request req;
    memset(&req, 0, sizeof(req));
    req.type = REQ_REPLAY;
    req.target_id = id;
    return submit(ctx, &req, out, errstr, errstr_size);
}

/* ---- dead letters --------------------------------------------------------------------- */

/* The DLQ bookkeeping headers, which a replay drops. */
static const char *const dlq_headers[] = {
    "reason", "reasonDetail", "originalTopic", "originalPartition", "originalOffset", NULL};

static int is_dlq_header(const char *name)
{
    for (const char *const *h = dlq_headers; *h; h++)
        if (strcmp(*h, name) == 0)
            return 1;
    return 0;
}

struct dl_list {
    cJSON *arr;
    int n, limit, more;
    int64_t last_id;
};

static int
list_dead_letter(void *ctx, const struct store_outbox_row *row, int64_t created_ms, int64_t sent_ms)
{
    struct dl_list *l = ctx;
    if (l->n == l->limit) {
        l->more = 1;
        return 1;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)row->id);
    if (row->instance_id)
        cJSON_AddNumberToObject(o, "instanceId", (double)row->instance_id);
    else
        cJSON_AddNullToObject(o, "instanceId");
    cJSON *h = row->headers ? cJSON_Parse(row->headers) : NULL;
    cJSON *headers = cJSON_CreateObject();
    const char *reason = NULL, *detail = NULL, *topic = NULL;
    const cJSON *pair;
    cJSON_ArrayForEach(pair, h)
    {
        const cJSON *k = cJSON_GetArrayItem(pair, 0), *v = cJSON_GetArrayItem(pair, 1);
        if (!cJSON_IsString(k) || !cJSON_IsString(v))
            continue;
        if (strcmp(k->valuestring, "reason") == 0)
            reason = v->valuestring;
        else if (strcmp(k->valuestring, "reasonDetail") == 0)
            detail = v->valuestring;
        else if (strcmp(k->valuestring, "originalTopic") == 0)
            topic = v->valuestring;
        if (!is_dlq_header(k->valuestring))
            cJSON_AddStringToObject(headers, k->valuestring, v->valuestring);
    }
    cJSON_AddStringToObject(o, "reason", reason ? reason : "");
    cJSON_AddStringToObject(o, "detail", detail ? detail : "");
    cJSON_AddStringToObject(o, "originalTopic", topic ? topic : "");
    cJSON_Delete(h);
    if (row->key)
        cJSON_AddStringToObject(o, "key", row->key);
    else
        cJSON_AddNullToObject(o, "key");
    if (row->value && json_utf8_valid(row->value, row->value_len)) {
        char *v = flowd_xstrndup(row->value, row->value_len);
        cJSON_AddStringToObject(o, "value", v);
        free(v);
    } else {
        cJSON_AddNullToObject(o, "value");
    }
    cJSON_AddItemToObject(o, "headers", headers);
    add_time(o, "at", created_ms);
    cJSON_AddBoolToObject(o, "published", sent_ms != 0);
    cJSON_AddItemToArray(l->arr, o);
    l->n++;
    l->last_id = row->id;
    return 0;
}

static int be_list_dead_letters(
    void *ctx, int64_t before_id, int limit, cJSON **out, char *errstr, size_t errstr_size)
{
    struct daemon *d = ctx;
    struct dl_list l = {cJSON_CreateArray(), 0, limit, 0, 0};
    pthread_mutex_lock(&d->read_lock);
    int rc = d->read_store.m->x_outbox_list_topic(d->read_store.st, d->cfg->dlq_topic, before_id,
                                                  (size_t)limit + 1, list_dead_letter, &l);
    pthread_mutex_unlock(&d->read_lock);
    if (rc < 0) {
        cJSON_Delete(l.arr);
        return store_error(errstr, errstr_size, rc);
    }
    *out = cJSON_CreateObject();
    cJSON_AddItemToObject(*out, "deadLetters", l.arr);
    if (l.more)
        cJSON_AddNumberToObject(*out, "next", (double)l.last_id);
    else
        cJSON_AddNullToObject(*out, "next");
    return 0;
}

/* ---- health and metrics --------------------------------------------------------------- */

static int be_ready(void *ctx, char *errstr, size_t errstr_size)
{
    struct daemon *d = ctx;
    if (!bus_ready(d->bus))
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_AGAIN, "Kafka brokers are unreachable");
    if (!atomic_load(&d->store_ok))
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_AGAIN,
                            "the store is failing transactions");
    if (d->stopping)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_AGAIN, "flowd is shutting down");
    return 0;
}

static int be_metrics(void *ctx, char **text, char *errstr, size_t errstr_size)
{
    struct daemon *d = ctx;
    (void)errstr;
    (void)errstr_size;
    struct request req;
    memset(&req, 0, sizeof(req));
    req.type = REQ_STATS;
    loop_submit(d, &req); /* a failure leaves the loop's gauges out, the rest is still served */
    struct buf b = BUF_INIT;
    metrics_render(d, req.rc ? NULL : req.result, &b);
    cJSON_Delete(req.result);
    *text = buf_detach(&b);
    return 0;
}

void backend_init(struct daemon *d, struct api_backend *be)
{
    memset(be, 0, sizeof(*be));
    be->ctx = d;
    be->deploy = be_deploy;
    be->start = be_start;
    be->get_instance = be_get_instance;
    be->ready = be_ready;
    be->validate = be_validate;
    be->list_definitions = be_list_definitions;
    be->get_definition = be_get_definition;
    be->list_instances = be_list_instances;
    be->get_history = be_get_history;
    be->cancel = be_cancel;
    be->retry = be_retry;
    be->deliver = be_deliver;
    be->list_dead_letters = be_list_dead_letters;
    be->replay = be_replay;
    be->metrics = be_metrics;
}

/* ---- the loop side -------------------------------------------------------------------- */

/* The STARTED instance r->target_id, or NULL with r->rc set (404, 409 naming its state, or the
 * store error). */
static struct engine_instance *
req_instance(struct batch *b, struct request *r, char *state, size_t state_size)
{
    int err = 0;
    char uuid[37] = "";
    struct engine_instance *inst = batch_instance(b, r->target_id, state, state_size, uuid, &err);
    if (err) {
        r->rc = err;
        snprintf(r->errstr, sizeof(r->errstr), "the store failed: %s", flowd_err_str(err));
    } else if (!inst && state[0]) {
        r->rc = FLOWD_ERR_STATE;
        snprintf(r->errstr, sizeof(r->errstr), "instance %lld is already %s",
                 (long long)r->target_id, state);
    } else if (!inst) {
        r->rc = not_found(r->errstr, sizeof(r->errstr), r->target_id);
    }
    return inst;
}

static void run_cancel(struct batch *b, struct request *r)
{
    char state[32];
    struct engine_instance *inst = req_instance(b, r, state, sizeof(state));
    if (!inst)
        return;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    r->rc = engine_cancel(inst, r->text, b->now, &fx, r->errstr, sizeof(r->errstr));
    if (!r->rc)
        r->rc = batch_apply(b, inst, &fx);
    engine_effects_clear(&fx);
    if (!r->rc)
        r->result = engine_instance_view(inst);
}

struct failed_at {
    char node[128];
};

static int find_failed_node(void *ctx, const struct engine_history *h)
{
    struct failed_at *f = ctx;
    if (h->state && strcmp(h->state, "FAILED") == 0 && h->node_id)
        snprintf(f->node, sizeof(f->node), "%s", h->node_id);
    return 0;
}

/* Loads a FAILED instance (not in the cache) and the node it failed at. */
static struct engine_instance *load_failed(struct batch *b, struct request *r, struct failed_at *f)
{
    struct daemon *d = b->d;
    char *blob = NULL;
    int rc = d->store.m->x_instance_get(d->store.st, r->target_id, &blob);
    if (!rc)
        rc = d->store.m->x_history_scan(d->store.st, r->target_id, find_failed_node, f);
    if (rc) {
        free(blob);
        r->rc = rc;
        snprintf(r->errstr, sizeof(r->errstr), "the store failed: %s", flowd_err_str(rc));
        return NULL;
    }
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_instance *inst = engine_instance_from_json(blob, strlen(blob), err, sizeof(err));
    free(blob);
    if (!inst) {
        r->rc = FLOWD_ERR_IO;
        snprintf(r->errstr, sizeof(r->errstr), "instance %lld cannot be read",
                 (long long)r->target_id);
    }
    return inst;
}

static void run_retry(struct batch *b, struct request *r)
{
    struct daemon *d = b->d;
    char state[32];
    struct failed_at f = {""};
    struct engine_instance *inst = req_instance(b, r, state, sizeof(state));
    int adopted = 1;
    if (!inst && strcmp(state, "FAILED") == 0) {
        r->rc = 0;
        r->errstr[0] = '\0';
        inst = load_failed(b, r, &f);
        adopted = 0;
    }
    if (!inst)
        return;
    const struct engine_def *def = defs_lookup(d, inst->def_key, inst->def_version);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    if (!def) {
        r->rc = flowd_seterr(r->errstr, sizeof(r->errstr), FLOWD_ERR_STATE,
                             "definition %s version %d of instance %lld is not loaded",
                             inst->def_key, inst->def_version, (long long)inst->id);
    } else {
        r->rc = engine_retry(def, inst, f.node[0] ? f.node : NULL, r->data, b->now, &fx, r->errstr,
                             sizeof(r->errstr));
    }
    if (r->rc) {
        engine_effects_clear(&fx);
        if (!adopted)
            engine_instance_free(inst);
        return;
    }
    if (!adopted)
        batch_adopt(b, inst);
    r->rc = batch_apply(b, inst, &fx);
    engine_effects_clear(&fx);
    if (!r->rc) {
        atomic_fetch_add(&d->m.retried, 1);
        r->result = engine_instance_view(inst);
    }
}

static void add_header(struct engine_message *msg, const char *name, char *value)
{
    msg->headers[msg->nheaders].name = flowd_xstrdup(name);
    msg->headers[msg->nheaders].value = value;
    msg->nheaders++;
}

static void run_deliver(struct batch *b, struct request *r)
{
    struct daemon *d = b->d;
    char state[32];
    struct engine_instance *inst = req_instance(b, r, state, sizeof(state));
    if (!inst)
        return;
    const struct engine_token *tok = NULL;
    for (size_t i = 0; i < inst->ntokens && !tok; i++) {
        const struct engine_token *t = &inst->tokens[i];
        if ((t->state == ENGINE_TOKEN_WAITING_MESSAGE || t->state == ENGINE_TOKEN_INCIDENT) &&
            (!r->node || strcmp(t->node_id, r->node) == 0))
            tok = t;
    }
    if (!tok) {
        r->rc = FLOWD_ERR_STATE;
        if (r->node)
            snprintf(r->errstr, sizeof(r->errstr),
                     "node '%.100s' of instance %lld is not waiting for a message", r->node,
                     (long long)inst->id);
        else
            snprintf(r->errstr, sizeof(r->errstr), "no node of instance %lld waits for a message",
                     (long long)inst->id);
        return;
    }
    const char *topic = r->topic;
    const struct engine_def *def = defs_lookup(d, inst->def_key, inst->def_version);
    for (size_t i = 0; !topic && def && i < engine_def_receive_topic_count(def); i++) {
        const char *node;
        const char *t = engine_def_receive_topic(def, i, &node);
        if (strcmp(node, tok->node_id) == 0)
            topic = t;
    }
    if (!topic || regexec(&d->sub_re, topic, 0, NULL, 0) != 0) {
        r->rc = FLOWD_ERR_INVAL;
        snprintf(r->errstr, sizeof(r->errstr),
                 "topic '%.200s' does not match the engine's subscription %s",
                 topic ? topic : "(none)", d->cfg->subscription_regex);
        return;
    }
    char mid[48];
    clock_uuid4(mid);
    struct engine_message msg;
    memset(&msg, 0, sizeof(msg));
    msg.topic = flowd_xstrdup(topic);
    msg.key = flowd_xasprintf("%lld", (long long)inst->id);
    msg.value = json_print(r->data);
    msg.headers = flowd_xcalloc(5, sizeof(*msg.headers));
    add_header(&msg, "processInstanceId", flowd_xasprintf("%lld", (long long)inst->id));
    add_header(&msg, "processInstanceUuid", flowd_xstrdup(inst->uuid));
    add_header(&msg, "destinationId", flowd_xstrdup(tok->node_id));
    add_header(&msg, "messageId", flowd_xasprintf("api:%s", mid));
    add_header(&msg, "Fx-ProcessName", flowd_xstrdup(inst->def_key));
    msg.message_id = flowd_xasprintf("api:%s", mid);
    cJSON *res = cJSON_CreateObject();
    cJSON_AddNumberToObject(res, "instanceId", (double)inst->id);
    cJSON_AddStringToObject(res, "node", tok->node_id);
    cJSON_AddStringToObject(res, "topic", topic);
    cJSON_AddStringToObject(res, "messageId", msg.message_id);
    r->rc = batch_publish(b, inst->id, &msg);
    if (r->rc) {
        cJSON_Delete(res);
        return;
    }
    atomic_fetch_add(&d->m.delivered, 1);
    r->result = res;
}

struct dl_copy {
    int found;
    int64_t instance_id;
    char *topic, *key, *value, *headers;
};

static int
copy_dead_letter(void *ctx, const struct store_outbox_row *row, int64_t created_ms, int64_t sent_ms)
{
    (void)created_ms;
    (void)sent_ms;
    struct dl_copy *c = ctx;
    c->found = 1;
    c->instance_id = row->instance_id;
    c->topic = flowd_xstrdup(row->topic ? row->topic : "");
    c->key = row->key ? flowd_xstrdup(row->key) : NULL;
    c->value = row->value ? flowd_xstrndup(row->value, row->value_len) : NULL;
    c->headers = row->headers ? flowd_xstrdup(row->headers) : NULL;
    return 0;
}

static void run_replay(struct batch *b, struct request *r)
{
    struct daemon *d = b->d;
    struct dl_copy c;
    memset(&c, 0, sizeof(c));
    int rc = d->store.m->x_outbox_get(d->store.st, r->target_id, copy_dead_letter, &c);
    cJSON *h = NULL;
    struct engine_message msg;
    memset(&msg, 0, sizeof(msg));
    if (rc && rc != FLOWD_ERR_NOTFOUND) {
        r->rc = rc;
        snprintf(r->errstr, sizeof(r->errstr), "the store failed: %s", flowd_err_str(rc));
        goto out;
    }
    if (!c.found || strcmp(c.topic, d->cfg->dlq_topic) != 0) {
        r->rc = flowd_seterr(r->errstr, sizeof(r->errstr), FLOWD_ERR_NOTFOUND,
                             "no dead letter with id %lld", (long long)r->target_id);
        goto out;
    }
    h = c.headers ? cJSON_Parse(c.headers) : NULL;
    int nh = cJSON_GetArraySize(h);
    msg.headers = flowd_xcalloc((size_t)nh + 1, sizeof(*msg.headers));
    const char *original = NULL, *reason = "", *mid = NULL;
    for (int i = 0; i < nh; i++) {
        const cJSON *pair = cJSON_GetArrayItem(h, i);
        const cJSON *k = cJSON_GetArrayItem(pair, 0), *v = cJSON_GetArrayItem(pair, 1);
        if (!cJSON_IsString(k) || !cJSON_IsString(v))
            continue;
        if (strcmp(k->valuestring, "originalTopic") == 0)
            original = v->valuestring;
        if (strcmp(k->valuestring, "reason") == 0)
            reason = v->valuestring;
        if (strcmp(k->valuestring, "messageId") == 0)
            mid = v->valuestring;
        if (!is_dlq_header(k->valuestring))
            add_header(&msg, k->valuestring, flowd_xstrdup(v->valuestring));
    }
    if (!original || !*original) {
        r->rc = flowd_seterr(r->errstr, sizeof(r->errstr), FLOWD_ERR_STATE,
                             "dead letter %lld has no originalTopic header to replay it to",
                             (long long)r->target_id);
        goto out;
    }
    if (strcmp(reason, "too-large") == 0) {
        r->rc = flowd_seterr(r->errstr, sizeof(r->errstr), FLOWD_ERR_STATE,
                             "dead letter %lld was too large: its value was not kept, so it "
                             "cannot be replayed",
                             (long long)r->target_id);
        goto out;
    }
    /* the inbox saw the original messageId when it was dead-lettered: forget it, or the replay
     * would be dropped as a duplicate */
    if (mid) {
        char *key = flowd_xasprintf("m:%s", mid);
        rc = d->store.m->x_inbox_forget(d->store.st, key);
        free(key);
        if (rc) {
            r->rc = rc;
            snprintf(r->errstr, sizeof(r->errstr), "the store failed: %s", flowd_err_str(rc));
            goto out;
        }
    }
    char uuid[37];
    clock_uuid4(uuid);
    msg.topic = flowd_xstrdup(original);
    msg.key = c.key;
    c.key = NULL;
    msg.value = c.value;
    c.value = NULL;
    msg.message_id = flowd_xasprintf("replay:%lld:%s", (long long)r->target_id, uuid);
    cJSON *res = cJSON_CreateObject();
    cJSON_AddNumberToObject(res, "id", (double)r->target_id);
    cJSON_AddStringToObject(res, "topic", original);
    cJSON_AddStringToObject(res, "reason", reason);
    r->rc = batch_publish(b, c.instance_id, &msg); /* takes msg's fields */
    if (r->rc) {
        cJSON_Delete(res);
        goto out;
    }
    atomic_fetch_add(&d->m.replayed, 1);
    r->result = res;
out:
    engine_message_free_fields(&msg);
    cJSON_Delete(h);
    free(c.topic);
    free(c.key);
    free(c.value);
    free(c.headers);
}

/* One (def_key, waiting) group of the store: its lines "node<TAB>STATE" added to the entries. */
static int add_waiting(void *ctx, const char *def_key, const char *waiting, int64_t n)
{
    cJSON *list = ctx;
    const char *line = waiting;
    while (line && *line) {
        const char *tab = strchr(line, '\t');
        const char *end = strchr(line, '\n');
        if (!end)
            end = line + strlen(line);
        if (tab && tab < end) {
            char node[256], st[64];
            snprintf(node, sizeof(node), "%.*s", (int)(tab - line), line);
            snprintf(st, sizeof(st), "%.*s", (int)(end - tab - 1), tab + 1);
            cJSON *entry = NULL, *it;
            cJSON_ArrayForEach(it, list)
            {
                if (!entry && strcmp(json_str(it, "process"), def_key) == 0 &&
                    strcmp(json_str(it, "node"), node) == 0 &&
                    strcmp(json_str(it, "state"), st) == 0)
                    entry = it;
            }
            if (!entry) {
                entry = cJSON_CreateObject();
                cJSON_AddStringToObject(entry, "process", def_key);
                cJSON_AddStringToObject(entry, "node", node);
                cJSON_AddStringToObject(entry, "state", st);
                cJSON_AddNumberToObject(entry, "count", 0);
                cJSON_AddItemToArray(list, entry);
            }
            cJSON *c = cJSON_GetObjectItemCaseSensitive(entry, "count");
            cJSON_SetNumberValue(c, c->valuedouble + (double)n);
        }
        line = *end ? end + 1 : end;
    }
    return 0;
}

static void run_stats(struct batch *b, struct request *r)
{
    struct daemon *d = b->d;
    /* from the store: the instances are not all in memory (and, shared, other nodes move them) */
    cJSON *waiting = cJSON_CreateArray();
    int rc = d->store.m->x_instance_count_waiting(d->store.st, add_waiting, waiting);
    if (rc) {
        cJSON_Delete(waiting);
        r->rc = rc;
        snprintf(r->errstr, sizeof(r->errstr), "the store failed: %s", flowd_err_str(rc));
        return;
    }
    r->result = cJSON_CreateObject();
    cJSON_AddItemToObject(r->result, "waiting", waiting);
    int64_t backlog = 0;
    if (d->store.m->x_outbox_count_unsent(d->store.st, &backlog) == 0)
        cJSON_AddNumberToObject(r->result, "outboxBacklog", (double)backlog);
    cJSON_AddNumberToObject(r->result, "consumerLag", (double)bus_consumer_lag(d->bus));
}

void backend_run_request(struct batch *b, struct request *r)
{
    switch (r->type) {
    case REQ_CANCEL:
        run_cancel(b, r);
        break;
    case REQ_RETRY:
        run_retry(b, r);
        break;
    case REQ_DELIVER:
        run_deliver(b, r);
        break;
    case REQ_REPLAY:
        run_replay(b, r);
        break;
    case REQ_STATS:
        run_stats(b, r);
        break;
    default:
        r->rc = flowd_seterr(r->errstr, sizeof(r->errstr), FLOWD_ERR_INVAL,
                             "unknown request type %d", (int)r->type);
        break;
    }
}
