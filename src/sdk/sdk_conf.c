/* sdk_conf.c - the connector configuration: one property table (name, type, offset, limits,
 * default) drives flowd_conf_set(), flowd_conf_get() and the defaults; kafka.* properties are
 * kept in order and handed to librdkafka by flowd_conn_new(), which reports refused ones.
 */
#include "sdk_int.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

enum prop_type { PROP_STR, PROP_INT, PROP_DBL, PROP_BOOL };

struct prop {
    const char *name;
    enum prop_type type;
    size_t offset;
    double min, max;
    const char *def; /* NULL: unset */
};

#define OFF(f) offsetof(struct flowd_conf, f)

static const struct prop props[] = {
    {"bootstrap.servers", PROP_STR, OFF(bootstrap_servers), 0, 0, NULL},
    {"bootstrap.file", PROP_STR, OFF(bootstrap_file), 0, 0, NULL},
    {"bootstrap.file.wait.ms", PROP_INT, OFF(bootstrap_wait_ms), 0, 3600000, "30000"},
    {"group.id", PROP_STR, OFF(group_id), 0, 0, "flowd-connector"},
    {"reply.topic", PROP_STR, OFF(reply_topic), 0, 0, NULL},
    {"dlq.topic", PROP_STR, OFF(dlq_topic), 0, 0, NULL},
    {"concurrency", PROP_INT, OFF(concurrency), 1, 256, "4"},
    {"retry.max.attempts", PROP_INT, OFF(retry_max_attempts), 1, 1000, "5"},
    {"retry.backoff.ms", PROP_INT, OFF(retry_backoff_ms), 0, 3600000, "100"},
    {"retry.backoff.max.ms", PROP_INT, OFF(retry_backoff_max_ms), 0, 3600000, "10000"},
    {"retry.jitter", PROP_DBL, OFF(retry_jitter), 0, 1, "0.5"},
    {"dedup.size", PROP_INT, OFF(dedup_size), 0, 100000000, "100000"},
    {"max.in.flight", PROP_INT, OFF(max_in_flight), 1, 10000000, "10000"},
    {"commit.interval.ms", PROP_INT, OFF(commit_interval_ms), 1, 600000, "100"},
    {"shutdown.timeout.ms", PROP_INT, OFF(shutdown_timeout_ms), 0, 3600000, "30000"},
    {"handle.signals", PROP_BOOL, OFF(handle_signals), 0, 1, "true"},
};

static const struct prop *prop_find(const char *name)
{
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++)
        if (strcmp(props[i].name, name) == 0)
            return &props[i];
    return NULL;
}

static int prop_set(struct flowd_conf *conf,
                    const struct prop *prop,
                    const char *value,
                    char *errstr,
                    size_t errstr_size)
{
    char *field = (char *)conf + prop->offset;
    char *end;

    switch (prop->type) {
    case PROP_STR: {
        if (!value[0])
            return flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "%s: empty value",
                                 prop->name);
        char *copy = flowd__strdup(value);
        if (!copy)
            return flowd__seterr(errstr, errstr_size, FLOWD_ERR_NOMEM, "out of memory");
        flowd__free(*(char **)field);
        *(char **)field = copy;
        return FLOWD_OK;
    }
    case PROP_INT: {
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < (long)prop->min || v > (long)prop->max)
            return flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                 "%s: \"%s\" is not an integer in %.0f..%.0f", prop->name, value,
                                 prop->min, prop->max);
        *(long *)field = v;
        return FLOWD_OK;
    }
    case PROP_DBL: {
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end || !(v >= prop->min && v <= prop->max))
            return flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                 "%s: \"%s\" is not a number in %g..%g", prop->name, value,
                                 prop->min, prop->max);
        *(double *)field = v;
        return FLOWD_OK;
    }
    case PROP_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
            *(int *)field = 1;
        else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
            *(int *)field = 0;
        else
            return flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                 "%s: \"%s\" is not true or false", prop->name, value);
        return FLOWD_OK;
    }
    return FLOWD_ERR_INVAL;
}

FLOWD_EXPORT flowd_conf_t *flowd_conf_new(void)
{
    struct flowd_conf *conf = flowd__calloc(1, sizeof(*conf));
    if (!conf)
        return NULL;
    conf->log_level = FLOWD_LOG_INFO;
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
        if (props[i].def && prop_set(conf, &props[i], props[i].def, NULL, 0) != FLOWD_OK) {
            flowd_conf_destroy(conf);
            return NULL;
        }
    }
    return conf;
}

static int kafka_set(
    struct flowd_conf *conf, const char *name, const char *value, char *errstr, size_t errstr_size)
{
    int scope = FLOWD__KV_BOTH;
    const char *rk = name + strlen("kafka.");
    if (strncmp(rk, "consumer.", 9) == 0) {
        scope = FLOWD__KV_CONSUMER;
        rk += 9;
    } else if (strncmp(rk, "producer.", 9) == 0) {
        scope = FLOWD__KV_PRODUCER;
        rk += 9;
    }
    if (!rk[0])
        return flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                             "%s: no librdkafka property name after the prefix", name);
    struct flowd__kv *kv = flowd__calloc(1, sizeof(*kv));
    if (!kv || !(kv->name = flowd__strdup(rk)) || !(kv->value = flowd__strdup(value))) {
        if (kv) {
            flowd__free(kv->name);
            flowd__free(kv);
        }
        return flowd__seterr(errstr, errstr_size, FLOWD_ERR_NOMEM, "out of memory");
    }
    kv->scope = scope;
    /* append: later settings override earlier ones when applied in order */
    struct flowd__kv **tail = &conf->kafka;
    while (*tail)
        tail = &(*tail)->next;
    *tail = kv;
    return FLOWD_OK;
}

FLOWD_EXPORT int flowd_conf_set(
    flowd_conf_t *conf, const char *name, const char *value, char *errstr, size_t errstr_size)
{
    if (!conf || !name || !value)
        return flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "NULL argument");
    if (strncmp(name, "kafka.", 6) == 0)
        return kafka_set(conf, name, value, errstr, errstr_size);
    const struct prop *prop = prop_find(name);
    if (!prop)
        return flowd__seterr(errstr, errstr_size, FLOWD_ERR_NOTFOUND,
                             "unknown property \"%s\" (librdkafka properties take the prefix "
                             "\"kafka.\")",
                             name);
    return prop_set(conf, prop, value, errstr, errstr_size);
}

static int copy_out(char *buf, size_t size, const char *value)
{
    size_t n = strlen(value);
    if (size == 0)
        return FLOWD_ERR_TOOBIG;
    if (n >= size) {
        memcpy(buf, value, size - 1);
        buf[size - 1] = '\0';
        return FLOWD_ERR_TOOBIG;
    }
    memcpy(buf, value, n + 1);
    return FLOWD_OK;
}

FLOWD_EXPORT int flowd_conf_get(const flowd_conf_t *conf, const char *name, char *buf, size_t size)
{
    if (!conf || !name || !buf)
        return FLOWD_ERR_INVAL;
    if (strncmp(name, "kafka.", 6) == 0) {
        const char *found = NULL;
        for (const struct flowd__kv *kv = conf->kafka; kv; kv = kv->next) {
            const char *full = kv->scope == FLOWD__KV_CONSUMER   ? "kafka.consumer."
                               : kv->scope == FLOWD__KV_PRODUCER ? "kafka.producer."
                                                                 : "kafka.";
            size_t n = strlen(full);
            if (strncmp(name, full, n) == 0 && strcmp(name + n, kv->name) == 0)
                found = kv->value; /* the last one set wins */
        }
        return found ? copy_out(buf, size, found) : FLOWD_ERR_NOTFOUND;
    }
    const struct prop *prop = prop_find(name);
    if (!prop)
        return FLOWD_ERR_NOTFOUND;
    const char *field = (const char *)conf + prop->offset;
    char tmp[64];
    switch (prop->type) {
    case PROP_STR:
        if (!*(char *const *)field) {
            if (strcmp(name, "dlq.topic") == 0 && conf->reply_topic &&
                flowd__dlq_default(conf->reply_topic, buf, size) == 0)
                return FLOWD_OK;
            return FLOWD_ERR_NOTFOUND;
        }
        return copy_out(buf, size, *(char *const *)field);
    case PROP_INT:
        snprintf(tmp, sizeof(tmp), "%ld", *(const long *)field);
        break;
    case PROP_DBL:
        snprintf(tmp, sizeof(tmp), "%g", *(const double *)field);
        break;
    case PROP_BOOL:
        snprintf(tmp, sizeof(tmp), "%s", *(const int *)field ? "true" : "false");
        break;
    }
    return copy_out(buf, size, tmp);
}

FLOWD_EXPORT void
flowd_conf_set_log_cb(flowd_conf_t *conf, flowd_log_cb *log_cb, int max_level, void *opaque)
{
    if (!conf)
        return;
    conf->log_cb = log_cb;
    conf->log_level = max_level;
    conf->log_opaque = opaque;
}

const struct flowd__handler *flowd__conf_handler(const struct flowd_conf *conf, const char *topic)
{
    for (const struct flowd__handler *h = conf->handlers; h; h = h->next)
        if (strcmp(h->topic, topic) == 0)
            return h;
    return NULL;
}

FLOWD_EXPORT int flowd_conf_add_handler(flowd_conf_t *conf,
                                        const char *topic,
                                        const char *reply_topic,
                                        flowd_handler_fn *handler,
                                        void *opaque,
                                        char *errstr,
                                        size_t errstr_size)
{
    if (!conf || !topic || !topic[0] || !handler)
        return flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                             "a handler needs a topic and a function");
    if (reply_topic && !reply_topic[0])
        return flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "%s: empty reply topic", topic);
    if (reply_topic && strcmp(reply_topic, topic) == 0)
        return flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                             "%s: the reply topic cannot be the request topic", topic);
    if (flowd__conf_handler(conf, topic))
        return flowd__seterr(errstr, errstr_size, FLOWD_ERR_EXISTS,
                             "topic %s already has a handler", topic);
    struct flowd__handler *h = flowd__calloc(1, sizeof(*h));
    if (!h || !(h->topic = flowd__strdup(topic)) ||
        (reply_topic && !(h->reply_topic = flowd__strdup(reply_topic)))) {
        if (h)
            flowd__free(h->topic);
        flowd__free(h);
        return flowd__seterr(errstr, errstr_size, FLOWD_ERR_NOMEM, "out of memory");
    }
    h->fn = handler;
    h->opaque = opaque;
    struct flowd__handler **tail = &conf->handlers;
    while (*tail)
        tail = &(*tail)->next;
    *tail = h;
    return FLOWD_OK;
}

FLOWD_EXPORT void flowd_conf_destroy(flowd_conf_t *conf)
{
    if (!conf)
        return;
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++)
        if (props[i].type == PROP_STR)
            flowd__free(*(char **)((char *)conf + props[i].offset));
    while (conf->kafka) {
        struct flowd__kv *kv = conf->kafka;
        conf->kafka = kv->next;
        flowd__free(kv->name);
        flowd__free(kv->value);
        flowd__free(kv);
    }
    while (conf->handlers) {
        struct flowd__handler *h = conf->handlers;
        conf->handlers = h->next;
        flowd__free(h->topic);
        flowd__free(h->reply_topic);
        flowd__free(h);
    }
    flowd__free(conf);
}
