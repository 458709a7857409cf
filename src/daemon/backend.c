/* backend.c - the API's view of the daemon: deploys and starts go through the loop (one writer,
 * batched with everything else); reads use their own store handle. Called from HTTP threads.
 */
#include "daemon.h"

#include "../api/api.h"
#include "../common/clock.h"
#include "../common/err.h"
#include "../common/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

static int be_deploy(void *ctx,
                     const char *json,
                     size_t len,
                     cJSON **out,
                     int *created,
                     char *errstr,
                     size_t errstr_size)
{
    struct daemon *d = ctx;
    struct engine_def *def = engine_def_parse(json, len, &d->env, errstr, errstr_size);
    if (!def)
        return FLOWD_ERR_INVAL;
    for (size_t i = 0; i < engine_def_receive_topic_count(def); i++) {
        const char *node;
        const char *topic = engine_def_receive_topic(def, i, &node);
        if (regexec(&d->sub_re, topic, 0, NULL, 0) != 0) {
            flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                         "node '%s': topic '%s' does not match the engine's subscription %s, so "
                         "replies on it would never reach flowd",
                         node, topic, d->cfg->subscription_regex);
            engine_def_free(def);
            return FLOWD_ERR_INVAL;
        }
    }
    struct request req;
    memset(&req, 0, sizeof(req));
    req.type = REQ_DEPLOY;
    req.def = def;
    req.def_json = flowd_xstrndup(json, len);
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

static int be_start(void *ctx, const char *key, cJSON *data, cJSON **out, char *errstr,
                    size_t errstr_size)
{
    struct daemon *d = ctx;
    struct request req;
    memset(&req, 0, sizeof(req));
    req.type = REQ_START;
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
    char at[40];
    clock_iso8601(h->at_ms, at, sizeof(at));
    cJSON_AddNumberToObject(o, "seq", h->seq);
    cJSON_AddStringToObject(o, "node", h->node_id ? h->node_id : "");
    cJSON_AddStringToObject(o, "state", h->state ? h->state : "");
    cJSON_AddStringToObject(o, "at", at);
    if (h->detail)
        cJSON_AddStringToObject(o, "detail", h->detail);
    else
        cJSON_AddNullToObject(o, "detail");
    cJSON_AddItemToArray(arr, o);
    return 0;
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
            return flowd_seterr(errstr, errstr_size, rc, "no instance with id %lld",
                                (long long)id);
        return flowd_seterr(errstr, errstr_size, rc, "the store could not be read: %s",
                            flowd_err_str(rc));
    }
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_instance *inst = engine_instance_from_json(blob, strlen(blob), err, sizeof(err));
    free(blob);
    if (!inst) {
        cJSON_Delete(hist);
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_IO,
                            "instance %lld is stored in a form that cannot be read",
                            (long long)id);
    }
    cJSON *view = engine_instance_view(inst);
    engine_instance_free(inst);
    cJSON_AddItemToObject(view, "history", hist);
    *out = view;
    return 0;
}

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

void backend_init(struct daemon *d, struct api_backend *be)
{
    memset(be, 0, sizeof(*be));
    be->ctx = d;
    be->deploy = be_deploy;
    be->start = be_start;
    be->get_instance = be_get_instance;
    be->ready = be_ready;
}
