/* engine_instance.c - instances: freeing, the store serialization and the API view.
 *
 * engine_instance_to_json() writes every field (the store keeps it as the instance blob) and
 * engine_instance_from_json() reads it back, checking every field's type, so a damaged blob is an
 * error and never a crash. Integers travel as JSON numbers: exact up to 2^53, which bounds ids
 * and times accepted on the way back.
 *
 *   {"id":1,"uuid":"...","defKey":"k","defVersion":1,"state":"STARTED","startedMs":0,
 *    "updatedMs":0,"endedMs":0,"seq":3,"error":null,
 *    "tokens":[{"node":"n","state":"WAITING_MESSAGE","outstanding":["id"]}],"data":{}}
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

#define MAX_EXACT 9007199254740992.0 /* 2^53 */

void engine_token_release(struct engine_token *tok)
{
    free(tok->node_id);
    for (size_t i = 0; i < tok->noutstanding; i++) {
        free(tok->outstanding[i]);
        if (tok->outstanding_for)
            free(tok->outstanding_for[i]);
    }
    free(tok->outstanding);
    free(tok->outstanding_for);
    free(tok->call_id);
    memset(tok, 0, sizeof(*tok));
}

void engine_instance_free(struct engine_instance *inst)
{
    if (!inst)
        return;
    for (size_t i = 0; i < inst->ntokens; i++)
        engine_token_release(&inst->tokens[i]);
    free(inst->tokens);
    for (size_t i = 0; i < inst->nparked; i++)
        engine_parked_free_fields(&inst->parked[i]);
    free(inst->parked);
    free(inst->def_key);
    cJSON_Delete(inst->data);
    free(inst->error);
    free(inst->parent_call);
    free(inst);
}

char *engine_instance_waiting(const struct engine_instance *inst)
{
    if (inst->state != ENGINE_STARTED)
        return NULL;
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < inst->ntokens; i++) {
        const struct engine_token *tok = &inst->tokens[i];
        if (tok->state == ENGINE_TOKEN_ACTIVE || tok->state == ENGINE_TOKEN_JOINED)
            continue;
        buf_printf(&b, "%s%s\t%s", b.len ? "\n" : "", tok->node_id ? tok->node_id : "",
                   engine_token_state_name(tok->state));
    }
    return b.len ? buf_detach(&b) : (buf_release(&b), NULL);
}

static void add_str(struct buf *b, const char *s)
{
    buf_add_json_str(b, s, strlen(s));
}

char *engine_instance_to_json(const struct engine_instance *inst)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "{\"id\":%" PRId64 ",\"uuid\":", inst->id);
    add_str(&b, inst->uuid);
    buf_adds(&b, ",\"defKey\":");
    add_str(&b, inst->def_key ? inst->def_key : "");
    buf_printf(&b,
               ",\"defVersion\":%d,\"state\":\"%s\",\"startedMs\":%" PRId64
               ",\"updatedMs\":%" PRId64 ",\"endedMs\":%" PRId64 ",\"seq\":%" PRIu32 ",\"error\":",
               inst->def_version, engine_state_name(inst->state), inst->started_ms,
               inst->updated_ms, inst->ended_ms, inst->seq);
    if (inst->error)
        add_str(&b, inst->error);
    else
        buf_adds(&b, "null");
    buf_adds(&b, ",\"tokens\":[");
    for (size_t i = 0; i < inst->ntokens; i++) {
        const struct engine_token *tok = &inst->tokens[i];
        buf_adds(&b, i ? ",{\"node\":" : "{\"node\":");
        add_str(&b, tok->node_id ? tok->node_id : "");
        buf_printf(&b, ",\"state\":\"%s\",\"outstanding\":[", engine_token_state_name(tok->state));
        for (size_t k = 0; k < tok->noutstanding; k++) {
            if (k)
                buf_addc(&b, ',');
            add_str(&b, tok->outstanding[k]);
        }
        buf_adds(&b, "],\"outstandingFor\":[");
        for (size_t k = 0; k < tok->noutstanding; k++) {
            if (k)
                buf_addc(&b, ',');
            if (tok->outstanding_for && tok->outstanding_for[k])
                add_str(&b, tok->outstanding_for[k]);
            else
                buf_adds(&b, "null");
        }
        buf_printf(&b, "],\"dueMs\":%" PRId64 ",\"attempt\":%d", tok->due_ms, tok->attempt);
        if (tok->call_id) {
            buf_adds(&b, ",\"callId\":");
            add_str(&b, tok->call_id);
            buf_printf(&b, ",\"childId\":%" PRId64, tok->child_id);
        }
        buf_addc(&b, '}');
    }
    buf_adds(&b, "],\"parked\":[");
    for (size_t i = 0; i < inst->nparked; i++) {
        const struct engine_parked *p = &inst->parked[i];
        const char *fields[][2] = {{"messageId", p->message_id},
                                   {"topic", p->topic},
                                   {"destinationId", p->destination_id},
                                   {"value", p->value},
                                   {"headers", p->headers}};
        buf_addc(&b, i ? ',' : '{');
        if (i)
            buf_addc(&b, '{');
        for (size_t f = 0; f < 5; f++) {
            buf_printf(&b, "\"%s\":", fields[f][0]);
            if (fields[f][1])
                add_str(&b, fields[f][1]);
            else
                buf_adds(&b, "null");
            buf_addc(&b, ',');
        }
        buf_printf(&b, "\"expiresMs\":%" PRId64 "}", p->expires_ms);
    }
    buf_addc(&b, ']');
    if (inst->parent_id) {
        buf_printf(&b, ",\"parentId\":%" PRId64 ",\"parentCall\":", inst->parent_id);
        add_str(&b, inst->parent_call ? inst->parent_call : "");
        buf_printf(&b, ",\"depth\":%d", inst->depth);
    }
    buf_adds(&b, ",\"data\":");
    char *data = json_print(inst->data);
    buf_adds(&b, data);
    free(data);
    buf_addc(&b, '}');
    return buf_detach(&b);
}

static int get_int(const cJSON *root,
                   const char *name,
                   double min,
                   double max,
                   int64_t *out,
                   char *errstr,
                   size_t errstr_size)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!cJSON_IsNumber(it) || it->valuedouble < min || it->valuedouble > max ||
        it->valuedouble != (double)(int64_t)it->valuedouble)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "instance: \"%s\" must be an integer", name);
    *out = (int64_t)it->valuedouble;
    return 0;
}

static int parse_state(const char *s, enum engine_state *out)
{
    for (int st = ENGINE_STARTED; st <= ENGINE_TERMINATED; st++) {
        if (strcmp(s, engine_state_name((enum engine_state)st)) == 0) {
            *out = (enum engine_state)st;
            return 0;
        }
    }
    return -1;
}

static int parse_token_state(const char *s, enum engine_token_state *out)
{
    for (int st = ENGINE_TOKEN_ACTIVE; st <= ENGINE_TOKEN_WAITING_SUBPROCESS; st++) {
        if (strcmp(s, engine_token_state_name((enum engine_token_state)st)) == 0) {
            *out = (enum engine_token_state)st;
            return 0;
        }
    }
    return -1;
}

static int
parse_tokens(struct engine_instance *inst, const cJSON *jt, char *errstr, size_t errstr_size)
{
    if (!cJSON_IsArray(jt))
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "instance: \"tokens\" must be an array");
    size_t n = (size_t)cJSON_GetArraySize(jt);
    if (n)
        inst->tokens = flowd_xcalloc(n, sizeof(*inst->tokens));
    const cJSON *t;
    cJSON_ArrayForEach(t, jt)
    {
        size_t idx = inst->ntokens + 1;
        const char *node = json_str(t, "node");
        const char *state = json_str(t, "state");
        struct engine_token tok;
        memset(&tok, 0, sizeof(tok));
        if (!node || !*node)
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "instance: token %zu has no node", idx);
        if (!state || parse_token_state(state, &tok.state) < 0)
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "instance: token %zu has an unknown state", idx);
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(t, "outstanding");
        if (jo && !cJSON_IsArray(jo))
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "instance: token %zu: \"outstanding\" must be an array", idx);
        size_t no = jo ? (size_t)cJSON_GetArraySize(jo) : 0;
        const cJSON *o;
        cJSON_ArrayForEach(o, jo)
        {
            if (!cJSON_IsString(o))
                return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                    "instance: token %zu: outstanding ids must be strings", idx);
        }
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(t, "dueMs");
        const cJSON *ja = cJSON_GetObjectItemCaseSensitive(t, "attempt");
        if ((jd && (!cJSON_IsNumber(jd) || jd->valuedouble < 0 || jd->valuedouble > 9e15)) ||
            (ja && (!cJSON_IsNumber(ja) || ja->valuedouble < 0 || ja->valuedouble > 1000)))
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "instance: token %zu: bad dueMs or attempt", idx);
        tok.due_ms = jd ? (int64_t)jd->valuedouble : 0;
        tok.attempt = ja ? (int)ja->valuedouble : 0;
        const cJSON *jf = cJSON_GetObjectItemCaseSensitive(t, "outstandingFor");
        if (jf && (!cJSON_IsArray(jf) || (size_t)cJSON_GetArraySize(jf) != no))
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "instance: token %zu: \"outstandingFor\" does not match "
                                "\"outstanding\"",
                                idx);
        const char *call = json_str(t, "callId");
        const cJSON *jc = cJSON_GetObjectItemCaseSensitive(t, "childId");
        if (jc && (!cJSON_IsNumber(jc) || jc->valuedouble < 0 || jc->valuedouble > MAX_EXACT))
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "instance: token %zu: bad childId", idx);
        if (tok.state == ENGINE_TOKEN_WAITING_SUBPROCESS && !call)
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "instance: token %zu waits for a subprocess without a callId", idx);
        tok.child_id = jc ? (int64_t)jc->valuedouble : 0;
        struct engine_token *dst = &inst->tokens[inst->ntokens++];
        *dst = tok;
        dst->node_id = flowd_xstrdup(node);
        dst->call_id = call ? flowd_xstrdup(call) : NULL;
        if (no) {
            dst->outstanding = flowd_xcalloc(no, sizeof(char *));
            dst->outstanding_for = flowd_xcalloc(no, sizeof(char *));
            cJSON_ArrayForEach(o, jo)
            {
                const cJSON *f = jf ? cJSON_GetArrayItem(jf, (int)dst->noutstanding) : NULL;
                dst->outstanding_for[dst->noutstanding] =
                    cJSON_IsString(f) ? flowd_xstrdup(f->valuestring) : NULL;
                dst->outstanding[dst->noutstanding++] = flowd_xstrdup(o->valuestring);
            }
        }
    }
    return 0;
}

static char *opt_str(const cJSON *obj, const char *name)
{
    const char *s = json_str(obj, name);
    return s ? flowd_xstrdup(s) : NULL;
}

static int
parse_parked(struct engine_instance *inst, const cJSON *jp, char *errstr, size_t errstr_size)
{
    if (!jp)
        return 0;
    if (!cJSON_IsArray(jp))
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "instance: \"parked\" must be an array");
    size_t n = (size_t)cJSON_GetArraySize(jp);
    if (n)
        inst->parked = flowd_xcalloc(n, sizeof(*inst->parked));
    const cJSON *p;
    cJSON_ArrayForEach(p, jp)
    {
        const cJSON *je = cJSON_GetObjectItemCaseSensitive(p, "expiresMs");
        if (!json_str(p, "messageId") || !json_str(p, "value") || !cJSON_IsNumber(je) ||
            je->valuedouble < 0 || je->valuedouble > MAX_EXACT)
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "instance: parked reply %zu is malformed", inst->nparked + 1);
        struct engine_parked *dst = &inst->parked[inst->nparked++];
        dst->message_id = opt_str(p, "messageId");
        dst->topic = opt_str(p, "topic");
        dst->destination_id = opt_str(p, "destinationId");
        dst->value = opt_str(p, "value");
        dst->headers = opt_str(p, "headers");
        dst->expires_ms = (int64_t)je->valuedouble;
    }
    return 0;
}

struct engine_instance *
engine_instance_from_json(const char *json, size_t len, char *errstr, size_t errstr_size)
{
    char why[FLOWD_ERRSTR_SIZE];
    cJSON *root = json_parse_depth(json, len, JSON_MAX_DEPTH_STORED, why, sizeof(why));
    if (!root) {
        flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "instance: %s", why);
        return NULL;
    }
    struct engine_instance *inst = flowd_xcalloc(1, sizeof(*inst));
    int64_t v = 0;
    int rc = FLOWD_ERR_INVAL;
    if (!cJSON_IsObject(root)) {
        flowd_seterr(errstr, errstr_size, rc, "instance: must be a JSON object");
        goto err;
    }
    if (get_int(root, "id", -MAX_EXACT, MAX_EXACT, &inst->id, errstr, errstr_size))
        goto err;
    const char *uuid = json_str(root, "uuid");
    if (!uuid || strlen(uuid) != 36) {
        flowd_seterr(errstr, errstr_size, rc, "instance: \"uuid\" must be 36 characters");
        goto err;
    }
    memcpy(inst->uuid, uuid, 37);
    const char *key = json_str(root, "defKey");
    if (!key) {
        flowd_seterr(errstr, errstr_size, rc, "instance: missing \"defKey\"");
        goto err;
    }
    inst->def_key = flowd_xstrdup(key);
    if (get_int(root, "defVersion", 0, 2147483647.0, &v, errstr, errstr_size))
        goto err;
    inst->def_version = (int)v;
    const char *state = json_str(root, "state");
    if (!state || parse_state(state, &inst->state) < 0) {
        flowd_seterr(errstr, errstr_size, rc, "instance: unknown \"state\"");
        goto err;
    }
    if (get_int(root, "startedMs", -MAX_EXACT, MAX_EXACT, &inst->started_ms, errstr, errstr_size) ||
        get_int(root, "updatedMs", -MAX_EXACT, MAX_EXACT, &inst->updated_ms, errstr, errstr_size) ||
        get_int(root, "endedMs", -MAX_EXACT, MAX_EXACT, &inst->ended_ms, errstr, errstr_size))
        goto err;
    if (get_int(root, "seq", 0, 4294967295.0, &v, errstr, errstr_size))
        goto err;
    inst->seq = (uint32_t)v;
    const cJSON *jerr = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (cJSON_IsString(jerr)) {
        inst->error = flowd_xstrdup(jerr->valuestring);
    } else if (jerr && !cJSON_IsNull(jerr)) {
        flowd_seterr(errstr, errstr_size, rc, "instance: \"error\" must be a string or null");
        goto err;
    }
    if (parse_tokens(inst, cJSON_GetObjectItemCaseSensitive(root, "tokens"), errstr, errstr_size))
        goto err;
    if (parse_parked(inst, cJSON_GetObjectItemCaseSensitive(root, "parked"), errstr, errstr_size))
        goto err;
    if (cJSON_GetObjectItemCaseSensitive(root, "parentId")) {
        int64_t depth = 0;
        if (get_int(root, "parentId", 1, MAX_EXACT, &inst->parent_id, errstr, errstr_size) ||
            get_int(root, "depth", 1, ENGINE_MAX_CALL_DEPTH, &depth, errstr, errstr_size))
            goto err;
        const char *pc = json_str(root, "parentCall");
        if (!pc) {
            flowd_seterr(errstr, errstr_size, rc, "instance: \"parentCall\" must be a string");
            goto err;
        }
        inst->parent_call = flowd_xstrdup(pc);
        inst->depth = (int)depth;
    }
    cJSON *data = cJSON_DetachItemFromObjectCaseSensitive(root, "data");
    if (!cJSON_IsObject(data)) {
        cJSON_Delete(data);
        flowd_seterr(errstr, errstr_size, rc, "instance: \"data\" must be an object");
        goto err;
    }
    inst->data = data;
    cJSON_Delete(root);
    return inst;
err:
    cJSON_Delete(root);
    engine_instance_free(inst);
    return NULL;
}

static void add_time(cJSON *obj, const char *name, int64_t ms)
{
    char iso[40];
    clock_iso8601(ms, iso, sizeof(iso));
    cJSON_AddStringToObject(obj, name, iso);
}

cJSON *engine_instance_view(const struct engine_instance *inst)
{
    cJSON *v = cJSON_CreateObject();
    flowd_assert(v != NULL);
    cJSON_AddNumberToObject(v, "id", (double)inst->id);
    cJSON_AddStringToObject(v, "uuid", inst->uuid);
    cJSON_AddStringToObject(v, "processKey", inst->def_key ? inst->def_key : "");
    cJSON_AddNumberToObject(v, "version", inst->def_version);
    cJSON_AddStringToObject(v, "state", engine_state_name(inst->state));
    if (inst->parent_id)
        cJSON_AddNumberToObject(v, "parentId", (double)inst->parent_id);
    add_time(v, "startedAt", inst->started_ms);
    add_time(v, "updatedAt", inst->updated_ms);
    if (inst->state == ENGINE_STARTED)
        cJSON_AddNullToObject(v, "endedAt");
    else
        add_time(v, "endedAt", inst->ended_ms);
    cJSON *tokens = cJSON_AddArrayToObject(v, "tokens");
    for (size_t i = 0; i < inst->ntokens; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "node", inst->tokens[i].node_id ? inst->tokens[i].node_id : "");
        cJSON_AddStringToObject(t, "state", engine_token_state_name(inst->tokens[i].state));
        if (inst->tokens[i].due_ms > 0) {
            add_time(t, "dueAt", inst->tokens[i].due_ms);
            cJSON_AddNumberToObject(t, "resends", inst->tokens[i].attempt);
        }
        if (inst->tokens[i].child_id)
            cJSON_AddNumberToObject(t, "subprocessId", (double)inst->tokens[i].child_id);
        cJSON_AddItemToArray(tokens, t);
    }
    cJSON_AddItemToObject(v, "data",
                          inst->data ? cJSON_Duplicate(inst->data, 1) : cJSON_CreateObject());
    if (inst->error)
        cJSON_AddStringToObject(v, "error", inst->error);
    else
        cJSON_AddNullToObject(v, "error");
    return v;
}
