/* reply.c - what happens to one consumed message: size, dedup, decoding, correlation, delivery.
 *
 * Anything that cannot be delivered goes to the dead-letter topic with a `reason` header:
 * too-large, invalid-utf8, not-json, no-correlation, bad-correlation, unknown-instance,
 * instance-finished, no-waiting-node (and, on the start topic, unknown-process, bad-start).
 * Messages on the start topic start instances (start_from_kafka).
 * Duplicates (same messageId, or the same offset of the same
 * cluster incarnation) are dropped and counted.
 */
#include "daemon.h"

#include "../common/buf.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

/* Copies a header value into out (NUL-terminated); 0 if absent; -1 if too long or has a NUL. */
static int
header_str(const rd_kafka_message_t *msg, const char *name, char *out, size_t size, int *count)
{
    size_t len = 0;
    const char *v = bus_header(msg, name, &len, count);
    if (!v)
        return 0;
    if (len >= size || memchr(v, '\0', len))
        return -1;
    memcpy(out, v, len);
    out[len] = '\0';
    return 1;
}

static int inbox_key(struct daemon *d, const rd_kafka_message_t *msg, char *key, size_t size)
{
    char mid[300];
    int cnt;
    if (header_str(msg, "messageId", mid, sizeof(mid), &cnt) == 1 && cnt == 1 && mid[0])
        return snprintf(key, size, "m:%s", mid) < (int)size ? 0 : -1;
    snprintf(key, size, "o:%s/%s/%d/%lld", bus_cluster_epoch(d->bus), rd_kafka_topic_name(msg->rkt),
             (int)msg->partition, (long long)msg->offset);
    return 0;
}

/* Finds the instance id from processInstanceUuid or processInstanceId. Returns 0 and *id, or a
 * dead-letter reason with detail. */
static const char *correlate(struct daemon *d,
                             const rd_kafka_message_t *msg,
                             int64_t *id,
                             char *detail,
                             size_t dsize,
                             int *err)
{
    char val[128];
    int cnt = 0;
    *err = 0;
    int has = header_str(msg, "processInstanceId", val, sizeof(val), &cnt);
    if (has != 0) {
        if (cnt > 1) {
            snprintf(detail, dsize, "header processInstanceId appears %d times", cnt);
            return "bad-correlation";
        }
        char *end;
        errno = 0;
        long long v = has == 1 ? strtoll(val, &end, 10) : 0;
        if (has < 0 || !val[0] || *end || errno || v <= 0) {
            snprintf(detail, dsize, "header processInstanceId '%.60s' is not a positive integer",
                     has < 0 ? "(too long or binary)" : val);
            return "bad-correlation";
        }
        *id = v;
        return NULL;
    }
    char uuid[64];
    has = header_str(msg, "processInstanceUuid", uuid, sizeof(uuid), &cnt);
    if (has == 1 && cnt == 1 && uuid[0]) {
        int rc = d->store.m->x_instance_id_by_uuid(d->store.st, uuid, id);
        if (rc == FLOWD_ERR_NOTFOUND) {
            snprintf(detail, dsize, "no instance has processInstanceUuid %s", uuid);
            return "unknown-instance";
        }
        if (rc) {
            *err = rc;
            return NULL;
        }
        return NULL;
    }
    if (has != 0) {
        snprintf(detail, dsize, "header processInstanceUuid is empty, duplicated or malformed");
        return "bad-correlation";
    }
    snprintf(detail, dsize,
             "the message has neither a processInstanceId nor a processInstanceUuid header");
    return "no-correlation";
}

/* Copies every header of msg onto out (which has room for n + extra), except those named in
 * skip (NULL-terminated). */
static void
copy_headers(const rd_kafka_message_t *msg, struct engine_message *out, const char *const *skip)
{
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(msg, &h) || !h)
        return;
    for (size_t i = 0; i < rd_kafka_header_cnt(h); i++) {
        const char *name;
        const void *val;
        size_t sz;
        if (rd_kafka_header_get_all(h, i, &name, &val, &sz))
            break;
        int skipped = 0;
        for (const char *const *k = skip; *k && !skipped; k++)
            skipped = strcmp(*k, name) == 0;
        if (skipped)
            continue;
        out->headers[out->nheaders].name = flowd_xstrdup(name);
        out->headers[out->nheaders].value = val ? flowd_xstrndup(val, sz) : flowd_xstrdup("");
        out->nheaders++;
    }
}

/* A message on the start topic (DESIGN.md section 3): the definition is named by the
 * Fx-ProcessName header or a processName body field, the body is the initial data. The answer
 * goes to the confirm topic with the request's headers, the new processInstanceId and
 * processInstanceUuid headers and the same in the body; a refusal answers with errorMessage and
 * dead-letters the request (reason unknown-process or bad-start). Takes body. */
static int
start_from_kafka(struct daemon *d, struct batch *b, const rd_kafka_message_t *msg, cJSON *body)
{
    char key[128] = "", detail[FLOWD_ERRSTR_SIZE + 64] = "";
    int cnt = 0;
    const char *reason = NULL;
    int has = header_str(msg, "Fx-ProcessName", key, sizeof(key), &cnt);
    const cJSON *field = cJSON_GetObjectItemCaseSensitive(body, "processName");
    if (has <= 0 && cJSON_IsString(field) && strlen(field->valuestring) < sizeof(key))
        snprintf(key, sizeof(key), "%s", field->valuestring);
    if (!cJSON_IsObject(body)) {
        reason = "bad-start";
        snprintf(detail, sizeof(detail), "the start data on %s must be a JSON object",
                 d->cfg->start_topic);
    } else if (!key[0]) {
        reason = "bad-start";
        snprintf(detail, sizeof(detail),
                 "a start message needs the Fx-ProcessName header or a processName field");
    }
    struct engine_instance *inst = NULL;
    int rc = 0;
    if (!reason) {
        if (has <= 0)
            cJSON_DeleteItemFromObjectCaseSensitive(body, "processName");
        rc = batch_start(b, key, 0, body, &inst, detail, sizeof(detail));
        body = NULL;
        if (rc == FLOWD_ERR_NOTFOUND) {
            reason = "unknown-process";
            rc = 0;
        } else if (rc == FLOWD_ERR_INVAL) {
            reason = "bad-start";
            rc = 0;
        }
        if (rc)
            return rc;
    }
    cJSON_Delete(body);

    struct engine_message out;
    memset(&out, 0, sizeof(out));
    rd_kafka_headers_t *hs = NULL;
    size_t nh = rd_kafka_message_headers(msg, &hs) == 0 && hs ? rd_kafka_header_cnt(hs) : 0;
    out.headers = flowd_xcalloc(nh + 3, sizeof(*out.headers));
    static const char *const skip[] = {"processInstanceId", "processInstanceUuid", NULL};
    copy_headers(msg, &out, skip);
    cJSON *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(answer, "processName", key);
    if (inst) {
        atomic_fetch_add(&d->m.started_by_kafka, 1);
        out.headers[out.nheaders].name = flowd_xstrdup("processInstanceId");
        out.headers[out.nheaders++].value = flowd_xasprintf("%lld", (long long)inst->id);
        out.headers[out.nheaders].name = flowd_xstrdup("processInstanceUuid");
        out.headers[out.nheaders++].value = flowd_xstrdup(inst->uuid);
        cJSON_AddNumberToObject(answer, "processInstanceId", (double)inst->id);
        cJSON_AddStringToObject(answer, "processInstanceUuid", inst->uuid);
        cJSON_AddStringToObject(answer, "state", engine_state_name(inst->state));
        out.key = flowd_xasprintf("%lld", (long long)inst->id);
        out.message_id = flowd_xasprintf("%s:confirm", inst->uuid);
    } else {
        cJSON_AddStringToObject(answer, "errorMessage", detail);
        out.key = msg->key ? flowd_xstrndup(msg->key, msg->key_len) : NULL;
        out.message_id = flowd_xasprintf("confirm:%s:%s/%d/%lld", bus_cluster_epoch(d->bus),
                                         rd_kafka_topic_name(msg->rkt), (int)msg->partition,
                                         (long long)msg->offset);
    }
    out.topic = flowd_xstrdup(d->cfg->confirm_topic);
    out.value = json_print(answer);
    cJSON_Delete(answer);
    rc = batch_publish(b, inst ? inst->id : 0, &out);
    if (!rc && reason)
        rc = batch_dead_letter(b, msg, 0, reason, detail);
    return rc;
}

/* The message's headers as the outbox stores them: a JSON array of [name, value]. */
static char *msg_headers_json(const rd_kafka_message_t *msg)
{
    struct buf b = BUF_INIT;
    rd_kafka_headers_t *h = NULL;
    buf_addc(&b, '[');
    if (rd_kafka_message_headers(msg, &h) == 0 && h) {
        const char *name;
        const void *val;
        size_t sz;
        for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &val, &sz) == 0; i++) {
            if (i)
                buf_addc(&b, ',');
            buf_addc(&b, '[');
            buf_add_json_str(&b, name, strlen(name));
            buf_addc(&b, ',');
            buf_add_json_str(&b, val ? val : "", val ? sz : 0);
            buf_addc(&b, ']');
        }
    }
    buf_addc(&b, ']');
    return buf_detach(&b);
}

/* Is msg a reply to a request that the instance with this uuid sent? (messageIds are
 * "<instance uuid>:<node>:<action>:<seq>"). Such a reply that no node waits for came too late:
 * after its wait timed out, or after the instance ended. */
static int sent_by(const rd_kafka_message_t *msg, const char *uuid)
{
    char mid[300];
    int cnt;
    size_t ulen = strlen(uuid);
    return header_str(msg, "messageId", mid, sizeof(mid), &cnt) == 1 &&
           strncmp(mid, uuid, ulen) == 0 && mid[ulen] == ':';
}

int reply_handle(struct daemon *d, struct batch *b, const rd_kafka_message_t *msg)
{
    atomic_fetch_add(&d->n.received, 1);
    char detail[FLOWD_ERRSTR_SIZE + 64];
    const char *topic = rd_kafka_topic_name(msg->rkt);

    char key[400];
    if (inbox_key(d, msg, key, sizeof(key)) == 0) {
        int seen = d->store.m->x_inbox_check_add(d->store.st, key, b->now);
        if (seen < 0)
            return seen;
        if (seen) {
            atomic_fetch_add(&d->n.duplicates, 1);
            FLOWD_LOG(LOG_DEBUG, LOG_SUB_ENGINE, "dropped duplicate %s from %s", key, topic);
            return 0;
        }
    }

    if ((int64_t)msg->len > d->cfg->message_max_bytes) {
        snprintf(detail, sizeof(detail),
                 "message of %zu bytes on %s is over kafka.message.max-bytes (%lld)", msg->len,
                 topic, (long long)d->cfg->message_max_bytes);
        return batch_dead_letter(b, msg, 0, "too-large", detail);
    }
    if (!msg->payload || !json_utf8_valid(msg->payload, msg->len)) {
        snprintf(detail, sizeof(detail), "the value on %s is %s", topic,
                 msg->payload ? "not valid UTF-8" : "empty (null)");
        return batch_dead_letter(b, msg, 0, msg->payload ? "invalid-utf8" : "not-json", detail);
    }
    char perr[FLOWD_ERRSTR_SIZE];
    cJSON *body = json_parse(msg->payload, msg->len, perr, sizeof(perr));
    if (!body) {
        snprintf(detail, sizeof(detail), "the value on %s is %s", topic, perr);
        return batch_dead_letter(b, msg, 0, "not-json", detail);
    }
    if (strcmp(topic, d->cfg->start_topic) == 0)
        return start_from_kafka(d, b, msg, body);

    int64_t id = 0;
    int err = 0;
    const char *reason = correlate(d, msg, &id, detail, sizeof(detail), &err);
    if (err) {
        cJSON_Delete(body);
        return err;
    }
    if (reason) {
        cJSON_Delete(body);
        return batch_dead_letter(b, msg, 0, reason, detail);
    }

    char state[32], uuid[37];
    struct engine_instance *inst = batch_instance(b, id, state, sizeof(state), uuid, &err);
    if (err) {
        cJSON_Delete(body);
        return err;
    }
    if (!inst) {
        cJSON_Delete(body);
        if (state[0]) {
            snprintf(detail, sizeof(detail), "instance %lld is already %s", (long long)id, state);
            return batch_dead_letter(b, msg, id, sent_by(msg, uuid) ? "late" : "instance-finished",
                                     detail);
        }
        snprintf(detail, sizeof(detail), "no instance %lld", (long long)id);
        return batch_dead_letter(b, msg, 0, "unknown-instance", detail);
    }

    char dest[128], action[128];
    int cnt;
    struct engine_event ev = {.topic = topic, .body = body};
    if (header_str(msg, "destinationId", dest, sizeof(dest), &cnt) == 1 && dest[0])
        ev.destination_id = dest;
    if (header_str(msg, "callbacksForAction", action, sizeof(action), &cnt) == 1 && action[0])
        ev.callback_action = action;

    const struct engine_def *def = defs_lookup(d, inst->def_key, inst->def_version);
    if (!def) {
        cJSON_Delete(body);
        snprintf(detail, sizeof(detail), "definition %s version %d of instance %lld is not loaded",
                 inst->def_key, inst->def_version, (long long)id);
        return batch_dead_letter(b, msg, id, "no-waiting-node", detail);
    }
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char eerr[FLOWD_ERRSTR_SIZE] = "";
    int rc = engine_deliver(def, inst, &ev, b->now, &fx, eerr, sizeof(eerr));
    cJSON_Delete(body);
    if (rc == FLOWD_ERR_NOWAIT && d->cfg->early_reply_ttl_ms > 0) {
        /* an answer to a request still outstanding, for a node the instance has not reached
         * yet: keep it until it gets there */
        char mid[300];
        engine_effects_clear(&fx);
        if (header_str(msg, "messageId", mid, sizeof(mid), &cnt) == 1 && cnt == 1) {
            char *value = flowd_xstrndup(msg->payload, msg->len);
            char *hj = msg_headers_json(msg);
            int prc = engine_park(def, inst, &ev, mid, value, hj, b->now,
                                  b->now + d->cfg->early_reply_ttl_ms, &fx, eerr, sizeof(eerr));
            free(value);
            free(hj);
            if (prc == 0) {
                FLOWD_LOG(LOG_DEBUG, LOG_SUB_ENGINE, "instance %lld: kept early reply %s",
                          (long long)id, mid);
                rc = batch_apply(b, inst, &fx);
                engine_effects_clear(&fx);
                return rc;
            }
            engine_effects_clear(&fx);
        }
    }
    if (rc == FLOWD_ERR_STATE || rc == FLOWD_ERR_NOWAIT) {
        engine_effects_clear(&fx);
        /* a reply to a request this instance did send (its messageId starts with the instance
         * uuid), that no node waits for any more: it came after the wait timed out */
        reason = rc == FLOWD_ERR_STATE ? "instance-finished" : "no-waiting-node";
        if (sent_by(msg, inst->uuid))
            reason = "late";
        return batch_dead_letter(b, msg, id, reason, eerr);
    }
    if (rc) {
        engine_effects_clear(&fx);
        return batch_dead_letter(b, msg, id, "rejected", eerr);
    }
    rc = batch_apply(b, inst, &fx);
    engine_effects_clear(&fx);
    return rc;
}
