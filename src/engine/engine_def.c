/* engine_def.c - process definitions: JSON parsing and deploy-time validation.
 *
 * engine_def_parse() reads the JSON shape of DESIGN.md section 4 into struct engine_def, compiles
 * every template and condition once, resolves `next` references to node indexes and checks the
 * graph (one start, at least one end, everything reachable from start). Every error names the
 * node (by id, or by position when it has none) and the problem. Unknown fields are ignored.
 * A parsed definition is immutable apart from engine_def_set_version().
 */
#include "engine_int.h"

#include "../common/err.h"
#include "../common/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/banned.h"

/* Headers the engine sets on every message; an action may not set them itself. */
static const char *const reserved_headers[] = {
    "processInstanceId", "processInstanceUuid", "processDefinitionUuid",
    "processStartDate",  "destinationId",       "callbacksForAction",
    "messageId",         "fxContext",           "Fx-ProcessName",
};

struct pctx {
    struct engine_def *def;
    const struct engine_env *env;
    char *errstr;
    size_t errstr_size;
};

static int perr(struct pctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int perr(struct pctx *c, const char *fmt, ...)
{
    if (c->errstr && c->errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->errstr, c->errstr_size, fmt, ap);
        va_end(ap);
    }
    return FLOWD_ERR_INVAL;
}

static const struct {
    const char *name;
    enum engine_node_type type;
} node_types[] = {
    {"start", ENGINE_NODE_START},
    {"end", ENGINE_NODE_END},
    {"task", ENGINE_NODE_TASK},
    {"send", ENGINE_NODE_SEND},
    {"receive", ENGINE_NODE_RECEIVE},
    {"exclusive_gateway", ENGINE_NODE_EXCLUSIVE_GATEWAY},
    {"parallel_gateway", ENGINE_NODE_PARALLEL_GATEWAY},
    {"timer", ENGINE_NODE_TIMER},
    {"error_end", ENGINE_NODE_ERROR_END},
    {"subprocess", ENGINE_NODE_SUBPROCESS},
};

/* ---- small helpers ------------------------------------------------------------------- */

static int key_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 100)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static int text_valid(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

static int path_valid(const char *s)
{
    if (!text_valid(s, 200) || s[0] == '.' || s[strlen(s) - 1] == '.' || strstr(s, ".."))
        return 0;
    return 1;
}

static const cJSON *member(const cJSON *obj, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(obj, name);
}

int engine_duration_parse(const char *s, int64_t *ms, char *errstr, size_t errstr_size)
{
    const char *p = s;
    double total = 0;
    int in_time = 0, parts = 0;
    if (*p++ != 'P')
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "'%s' is not an ISO 8601 duration (must start with P)", s);
    while (*p) {
        if (*p == 'T') {
            if (in_time || !p[1])
                return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                    "'%s' is not an ISO 8601 duration (misplaced T)", s);
            in_time = 1;
            p++;
            continue;
        }
        if (!(*p >= '0' && *p <= '9'))
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "'%s' is not an ISO 8601 duration (expected a number at '%s')", s,
                                p);
        char *end;
        double v = strtod(p, &end);
        if (end - p > 15)
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "'%s': number too long", s);
        p = end;
        double unit;
        switch (*p) {
        case 'W':
            unit = in_time ? -1 : 7 * 86400e3;
            break;
        case 'D':
            unit = in_time ? -1 : 86400e3;
            break;
        case 'H':
            unit = in_time ? 3600e3 : -1;
            break;
        case 'M':
            unit = in_time ? 60e3 : -2;
            break;
        case 'S':
            unit = in_time ? 1e3 : -1;
            break;
        case 'Y':
            unit = -2;
            break;
        default:
            unit = -1;
        }
        if (unit == -2)
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "'%s': years and months are not supported, use days", s);
        if (unit < 0)
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "'%s' is not an ISO 8601 duration (unexpected '%c')", s,
                                *p ? *p : '?');
        total += v * unit;
        parts++;
        p++;
    }
    if (!parts)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "'%s' is not an ISO 8601 duration (no value)", s);
    if (total > 9e15)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "'%s' is too long", s);
    *ms = (int64_t)total;
    return 0;
}

/* ---- freeing ------------------------------------------------------------------------- */

static void action_release(struct engine_action *a)
{
    free(a->name);
    engine_tpl_free(a->topic);
    free(a->set_path);
    engine_tpl_free(a->body);
    for (size_t i = 0; i < a->nheaders; i++) {
        free(a->headers[i].name);
        engine_tpl_free(a->headers[i].value);
    }
    free(a->headers);
}

static void node_release(struct engine_node *n)
{
    free(n->id);
    free(n->next_id);
    for (size_t i = 0; i < n->nactions; i++)
        action_release(&n->actions[i]);
    free(n->actions);
    for (size_t i = 0; i < n->ntopics; i++) {
        free(n->topics[i].topic);
        free(n->topics[i].key_name);
    }
    free(n->topics);
    free(n->response_timeout);
    free(n->timeout_next_id);
    free(n->reply_to_id);
    free(n->error_next_id);
    for (size_t k = 0; k < n->nmap; k++) {
        free(n->map_to[k]);
        free(n->map_from[k]);
    }
    free(n->map_to);
    free(n->map_from);
    for (size_t k = 0; k < n->nin; k++) {
        free(n->in_to[k]);
        free(n->in_from[k]);
    }
    free(n->in_to);
    free(n->in_from);
    free(n->call_key);
    free(n->call_key_name);
    engine_tpl_free(n->error);
    for (size_t k = 0; k < n->nforks; k++)
        free(n->fork_ids[k]);
    free(n->fork_ids);
    free(n->forks);
    for (size_t i = 0; i < n->nroutes; i++) {
        free(n->routes[i].cond_src);
        engine_expr_free(n->routes[i].cond);
        free(n->routes[i].next_id);
    }
    free(n->routes);
    free(n->default_id);
}

void engine_def_free(struct engine_def *def)
{
    if (!def)
        return;
    for (size_t i = 0; i < def->nnodes; i++)
        node_release(&def->nodes[i]);
    free(def->nodes);
    free(def->rtopics);
    free(def->key);
    free(def->name);
    free(def);
}

/* ---- nodes --------------------------------------------------------------------------- */

/* set_data: {"name", "type": "set_data", "path": "a.b", "value": <JSON template>}. */
static int
parse_set_data(struct pctx *c, struct engine_node *n, const cJSON *ja, struct engine_action *a)
{
    char why[FLOWD_ERRSTR_SIZE];
    const char *path = json_str(ja, "path");
    if (!path || !*path || !text_valid(path, 200) || path[0] == '.' ||
        path[strlen(path) - 1] == '.' || strstr(path, ".."))
        return perr(c, "node '%s': action '%s': \"path\" must be a dotted data path", n->id,
                    a->name);
    const cJSON *jv = member(ja, "value");
    char *src = NULL;
    if (cJSON_IsString(jv))
        src = flowd_xstrdup(jv->valuestring);
    else if (jv)
        src = json_print(jv);
    else
        return perr(c, "node '%s': action '%s': missing \"value\"", n->id, a->name);
    int rc =
        engine_tpl_compile(src, ENGINE_TPL_JSON, c->env, c->def->key, &a->body, why, sizeof(why));
    free(src);
    if (rc)
        return perr(c, "node '%s': action '%s': value: %s", n->id, a->name, why);
    if (engine_tpl_check(a->body, NULL, why, sizeof(why)))
        return perr(c, "node '%s': action '%s': value: %s (rendered with placeholder values)",
                    n->id, a->name, why);
    a->set_path = flowd_xstrdup(path);
    return 0;
}

static int parse_action(
    struct pctx *c, struct engine_node *n, const cJSON *ja, size_t idx, struct engine_action *a)
{
    char why[FLOWD_ERRSTR_SIZE];
    if (!cJSON_IsObject(ja))
        return perr(c, "node '%s': action %zu is not an object", n->id, idx + 1);
    const char *name = json_str(ja, "name");
    if (!name || !text_valid(name, 100))
        return perr(c, "node '%s': action %zu: missing or invalid \"name\"", n->id, idx + 1);
    for (size_t i = 0; i < n->nactions; i++)
        if (strcmp(n->actions[i].name, name) == 0)
            return perr(c, "node '%s': action '%s': duplicate action name", n->id, name);
    a->name = flowd_xstrdup(name);
    const char *type = json_str(ja, "type");
    if (!type)
        return perr(c, "node '%s': action '%s': missing \"type\"", n->id, name);
    if (strcmp(type, "set_data") == 0)
        return parse_set_data(c, n, ja, a);
    if (strcmp(type, "kafka_send") != 0)
        return perr(c,
                    "node '%s': action '%s': unknown action type '%s' (supported: kafka_send, "
                    "set_data)",
                    n->id, name, type);

    const cJSON *jo = member(ja, "order");
    if (jo && !cJSON_IsNull(jo)) {
        if (!cJSON_IsNumber(jo) || jo->valuedouble != (double)jo->valueint)
            return perr(c, "node '%s': action '%s': \"order\" must be an integer", n->id, name);
        a->order = jo->valueint;
    }
    const cJSON *jopt = member(ja, "optional");
    if (jopt && !cJSON_IsNull(jopt)) {
        if (!cJSON_IsBool(jopt))
            return perr(c, "node '%s': action '%s': \"optional\" must be true or false", n->id,
                        name);
        a->optional = cJSON_IsTrue(jopt);
    }

    const char *topic = json_str(ja, "topic");
    if (!topic || !*topic)
        return perr(c, "node '%s': action '%s': missing \"topic\"", n->id, name);
    if (engine_tpl_compile(topic, ENGINE_TPL_TEXT, c->env, c->def->key, &a->topic, why,
                           sizeof(why)))
        return perr(c, "node '%s': action '%s': topic: %s", n->id, name, why);
    struct buf tb = BUF_INIT;
    engine_tpl_check(a->topic, &tb, NULL, 0);
    int ok = engine_topic_valid(tb.ptr, tb.len);
    if (!ok) {
        perr(c, "node '%s': action '%s': topic renders to '%.100s', not a valid Kafka topic name",
             n->id, name, buf_str(&tb));
        buf_release(&tb);
        return FLOWD_ERR_INVAL;
    }
    buf_release(&tb);

    /* the body: a template string, or (a convenience) a JSON value used as the template */
    const cJSON *jm = member(ja, "message");
    char *printed = NULL;
    const char *body = "{}";
    if (cJSON_IsString(jm))
        body = jm->valuestring;
    else if (jm && (cJSON_IsObject(jm) || cJSON_IsArray(jm)))
        body = printed = json_print(jm);
    else if (jm && !cJSON_IsNull(jm))
        return perr(c, "node '%s': action '%s': \"message\" must be a string", n->id, name);
    int rc =
        engine_tpl_compile(body, ENGINE_TPL_JSON, c->env, c->def->key, &a->body, why, sizeof(why));
    free(printed);
    if (rc)
        return perr(c, "node '%s': action '%s': message: %s", n->id, name, why);
    if (engine_tpl_check(a->body, NULL, why, sizeof(why)))
        return perr(c, "node '%s': action '%s': message: %s (rendered with placeholder values)",
                    n->id, name, why);

    const cJSON *jh = member(ja, "headers");
    if (jh && !cJSON_IsNull(jh)) {
        if (!cJSON_IsObject(jh))
            return perr(c, "node '%s': action '%s': \"headers\" must be an object", n->id, name);
        a->headers = flowd_xcalloc((size_t)cJSON_GetArraySize(jh), sizeof(*a->headers));
        const cJSON *h;
        cJSON_ArrayForEach(h, jh)
        {
            if (!text_valid(h->string, 200))
                return perr(c, "node '%s': action '%s': invalid header name", n->id, name);
            for (size_t i = 0; i < sizeof(reserved_headers) / sizeof(reserved_headers[0]); i++)
                if (strcmp(reserved_headers[i], h->string) == 0)
                    return perr(c, "node '%s': action '%s': header '%s' is set by the engine",
                                n->id, name, h->string);
            if (!cJSON_IsString(h))
                return perr(c, "node '%s': action '%s': header '%s' must be a string", n->id, name,
                            h->string);
            struct engine_tpl_header *th = &a->headers[a->nheaders];
            if (engine_tpl_compile(h->valuestring, ENGINE_TPL_TEXT, c->env, c->def->key, &th->value,
                                   why, sizeof(why)))
                return perr(c, "node '%s': action '%s': header '%s': %s", n->id, name, h->string,
                            why);
            th->name = flowd_xstrdup(h->string);
            a->nheaders++;
        }
    }
    return 0;
}

static int parse_actions(struct pctx *c, struct engine_node *n, const cJSON *jn)
{
    const cJSON *jacts = member(jn, "actions");
    if (jacts && !cJSON_IsNull(jacts) && !cJSON_IsArray(jacts))
        return perr(c, "node '%s': \"actions\" must be an array", n->id);
    size_t count = jacts ? (size_t)cJSON_GetArraySize(jacts) : 0;
    if (count)
        n->actions = flowd_xcalloc(count, sizeof(*n->actions));
    const cJSON *ja;
    size_t idx = 0;
    cJSON_ArrayForEach(ja, jacts)
    {
        struct engine_action *a = &n->actions[n->nactions];
        int rc = parse_action(c, n, ja, idx++, a);
        if (rc) {
            action_release(a);
            memset(a, 0, sizeof(*a));
            return rc;
        }
        n->nactions++;
    }
    if (n->type == ENGINE_NODE_SEND && n->nactions == 0)
        return perr(c, "node '%s': send node has no kafka_send action", n->id);
    /* stable insertion sort by order */
    for (size_t i = 1; i < n->nactions; i++) {
        struct engine_action tmp = n->actions[i];
        size_t j = i;
        while (j > 0 && n->actions[j - 1].order > tmp.order) {
            n->actions[j] = n->actions[j - 1];
            j--;
        }
        n->actions[j] = tmp;
    }
    return 0;
}

/* A data path with an optional leading "data." ("data.x" and "x" both mean data.x). */
static const char *data_path(const char *p)
{
    return strncmp(p, "data.", 5) == 0 ? p + 5 : p;
}

/* A mapping object {"to path": "from path", ...} (member `name` of the node) into to/from.
 * strip_from: the from side is instance data too (a leading "data." is dropped). */
static int parse_mapping(struct pctx *c,
                         struct engine_node *n,
                         const cJSON *jm,
                         const char *name,
                         const char *sides,
                         int strip_from,
                         char ***to_out,
                         char ***from_out,
                         size_t *count_out)
{
    if (!jm || cJSON_IsNull(jm))
        return 0;
    if (!cJSON_IsObject(jm))
        return perr(c, "node '%s': \"%s\" must be an object of %s", n->id, name, sides);
    size_t count = (size_t)cJSON_GetArraySize(jm);
    char **to = *to_out = flowd_xcalloc(count ? count : 1, sizeof(char *));
    char **from = *from_out = flowd_xcalloc(count ? count : 1, sizeof(char *));
    const cJSON *e;
    cJSON_ArrayForEach(e, jm)
    {
        const char *t = e->string;
        if (!cJSON_IsString(e) || !t || !path_valid(t) || !path_valid(e->valuestring))
            return perr(c, "node '%s': %s '%.60s': both sides must be dotted paths", n->id, name,
                        t ? t : "");
        to[*count_out] = flowd_xstrdup(data_path(t));
        from[*count_out] = flowd_xstrdup(strip_from ? data_path(e->valuestring) : e->valuestring);
        (*count_out)++;
    }
    return 0;
}

/* "errorNext": where an error (an error reply, a failed subprocess) goes. */
static int parse_error_next(struct pctx *c, struct engine_node *n, const cJSON *jn)
{
    const cJSON *jen = member(jn, "errorNext");
    if (!jen || cJSON_IsNull(jen))
        return 0;
    if (!cJSON_IsString(jen) || !*jen->valuestring)
        return perr(c, "node '%s': \"errorNext\" must be a node id", n->id);
    n->error_next_id = flowd_xstrdup(jen->valuestring);
    return 0;
}

/* "responseTimeout" (ISO 8601 duration) and "timeoutNext": a wait that gives up. */
static int parse_timeout(struct pctx *c, struct engine_node *n, const cJSON *jn)
{
    char why[FLOWD_ERRSTR_SIZE];
    const cJSON *jto = member(jn, "responseTimeout");
    if (jto && !cJSON_IsNull(jto)) {
        if (!cJSON_IsString(jto))
            return perr(c, "node '%s': \"responseTimeout\" must be an ISO 8601 duration string",
                        n->id);
        if (engine_duration_parse(jto->valuestring, &n->timeout_ms, why, sizeof(why)))
            return perr(c, "node '%s': responseTimeout %s", n->id, why);
        n->response_timeout = flowd_xstrdup(jto->valuestring);
    }
    const cJSON *jtn = member(jn, "timeoutNext");
    if (jtn && !cJSON_IsNull(jtn)) {
        if (!cJSON_IsString(jtn) || !*jtn->valuestring)
            return perr(c, "node '%s': \"timeoutNext\" must be a node id", n->id);
        n->timeout_next_id = flowd_xstrdup(jtn->valuestring);
    }
    return 0;
}

/* subprocess: {"process": key, "version": N, "input": {child: parent}, "output": {parent:
 * child}, "keyName": path, "errorNext": id}. */
static int parse_subprocess(struct pctx *c, struct engine_node *n, const cJSON *jn)
{
    const char *key = json_str(jn, "process");
    if (!key || !*key)
        return perr(c,
                    "node '%s': subprocess node has no \"process\" (the key of the "
                    "definition to start)",
                    n->id);
    if (!key_valid(key))
        return perr(c,
                    "node '%s': process '%.100s' is not a valid key (1 to 100 of "
                    "A-Z a-z 0-9 . _ -)",
                    n->id, key);
    n->call_key = flowd_xstrdup(key);
    const cJSON *jv = member(jn, "version");
    if (jv && !cJSON_IsNull(jv)) {
        if (!cJSON_IsNumber(jv) || jv->valuedouble < 1 || jv->valuedouble > 2147483647.0 ||
            jv->valuedouble != (double)(int)jv->valuedouble)
            return perr(c, "node '%s': \"version\" must be a positive integer", n->id);
        n->call_version = (int)jv->valuedouble;
    }
    const cJSON *ji = member(jn, "input");
    n->copy_input = !ji || cJSON_IsNull(ji);
    if (parse_mapping(c, n, ji, "input", "\"child data path\": \"data path\"", 1, &n->in_to,
                      &n->in_from, &n->nin) ||
        parse_mapping(c, n, member(jn, "output"), "output", "\"data path\": \"child data path\"", 1,
                      &n->map_to, &n->map_from, &n->nmap))
        return FLOWD_ERR_INVAL;
    const cJSON *jk = member(jn, "keyName");
    if (jk && !cJSON_IsNull(jk)) {
        if (!cJSON_IsString(jk) || !path_valid(jk->valuestring))
            return perr(c, "node '%s': keyName must be a dotted data path", n->id);
        n->call_key_name = flowd_xstrdup(data_path(jk->valuestring));
    }
    if (parse_error_next(c, n, jn) || parse_timeout(c, n, jn))
        return FLOWD_ERR_INVAL;
    if (n->timeout_next_id && !n->response_timeout)
        return perr(c, "node '%s': \"timeoutNext\" needs a \"responseTimeout\"", n->id);
    return 0;
}

static int parse_receive(struct pctx *c, struct engine_node *n, const cJSON *jn)
{
    char why[FLOWD_ERRSTR_SIZE];
    if (parse_mapping(c, n, member(jn, "mapping"), "mapping", "\"data path\": \"reply path\"", 0,
                      &n->map_to, &n->map_from, &n->nmap))
        return FLOWD_ERR_INVAL;
    const cJSON *jt = member(jn, "dataStreamTopics");
    if (!cJSON_IsArray(jt) || cJSON_GetArraySize(jt) == 0)
        return perr(c, "node '%s': receive node has no \"dataStreamTopics\"", n->id);
    n->topics = flowd_xcalloc((size_t)cJSON_GetArraySize(jt), sizeof(*n->topics));
    const cJSON *t;
    size_t idx = 0;
    cJSON_ArrayForEach(t, jt)
    {
        idx++;
        const char *name = json_str(t, "topicName");
        const char *key = json_str(t, "keyName");
        if (!name || !*name)
            return perr(c, "node '%s': dataStreamTopics[%zu] has no \"topicName\"", n->id, idx);
        if (!key || !*key)
            return perr(c, "node '%s': dataStreamTopics[%zu] has no \"keyName\"", n->id, idx);
        if (!path_valid(key))
            return perr(c, "node '%s': dataStreamTopics[%zu]: keyName '%s' is not a valid path",
                        n->id, idx, key);
        struct engine_tpl *tpl;
        if (engine_tpl_compile(name, ENGINE_TPL_TEXT, c->env, c->def->key, &tpl, why, sizeof(why)))
            return perr(c, "node '%s': dataStreamTopics[%zu] topicName: %s", n->id, idx, why);
        unsigned vars = tpl->vars;
        struct buf b = BUF_INIT;
        engine_tpl_check(tpl, &b, NULL, 0);
        engine_tpl_free(tpl);
        if (vars & ~(unsigned)(ENGINE_VAR_PREFIX | ENGINE_VAR_SUFFIX)) {
            buf_release(&b);
            return perr(c,
                        "node '%s': dataStreamTopics[%zu] topicName '%s': only ${prefix} and "
                        "${suffix} may be used in a receive topic",
                        n->id, idx, name);
        }
        if (!engine_topic_valid(b.ptr, b.len)) {
            perr(c,
                 "node '%s': dataStreamTopics[%zu] topicName renders to '%.100s', not a valid "
                 "Kafka topic name",
                 n->id, idx, buf_str(&b));
            buf_release(&b);
            return FLOWD_ERR_INVAL;
        }
        struct engine_topic *et = &n->topics[n->ntopics++];
        et->topic = buf_detach(&b);
        et->key_name = flowd_xstrdup(key);
    }
    if (parse_timeout(c, n, jn))
        return FLOWD_ERR_INVAL;
    const cJSON *jra = member(jn, "resendAttempts");
    if (jra && !cJSON_IsNull(jra)) {
        if (!cJSON_IsNumber(jra) || jra->valuedouble < 0 || jra->valuedouble > 20 ||
            jra->valuedouble != (double)(int)jra->valuedouble)
            return perr(c, "node '%s': \"resendAttempts\" must be an integer from 0 to 20", n->id);
        n->resend_attempts = (int)jra->valuedouble;
    }
    if (parse_error_next(c, n, jn))
        return FLOWD_ERR_INVAL;
    if ((n->resend_attempts || n->timeout_next_id) && !n->response_timeout)
        return perr(c, "node '%s': %s needs a \"responseTimeout\"", n->id,
                    n->timeout_next_id ? "\"timeoutNext\"" : "\"resendAttempts\"");
    return 0;
}

/* "duration": ISO 8601 duration, or "date": ISO 8601 UTC date-time (2026-11-23T15:00:00Z). */
static int parse_timer(struct pctx *c, struct engine_node *n, const cJSON *jn)
{
    char why[FLOWD_ERRSTR_SIZE];
    const char *dur = json_str(jn, "duration"), *date = json_str(jn, "date");
    if (!dur == !date)
        return perr(c, "node '%s': a timer needs exactly one of \"duration\" and \"date\"", n->id);
    if (dur && engine_duration_parse(dur, &n->timer_ms, why, sizeof(why)))
        return perr(c, "node '%s': duration %s", n->id, why);
    if (date) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(date, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!end || (strcmp(end, "Z") != 0 && strcmp(end, "+00:00") != 0))
            return perr(c,
                        "node '%s': date '%.60s' is not an ISO 8601 UTC date-time "
                        "(e.g. 2026-11-23T15:00:00Z)",
                        n->id, date);
        n->timer_at = (int64_t)timegm(&tm) * 1000;
    }
    return 0;
}

static int parse_gateway(struct pctx *c, struct engine_node *n, const cJSON *jn)
{
    char why[FLOWD_ERRSTR_SIZE];
    const cJSON *jr = member(jn, "routes");
    if (jr && !cJSON_IsNull(jr) && !cJSON_IsArray(jr))
        return perr(c, "node '%s': \"routes\" must be an array", n->id);
    size_t count = jr ? (size_t)cJSON_GetArraySize(jr) : 0;
    if (count)
        n->routes = flowd_xcalloc(count, sizeof(*n->routes));
    const cJSON *r;
    cJSON_ArrayForEach(r, jr)
    {
        size_t idx = n->nroutes + 1;
        const char *cond = json_str(r, "condition");
        const char *next = json_str(r, "next");
        if (!cond)
            return perr(c, "node '%s': route %zu has no \"condition\"", n->id, idx);
        if (!next || !*next)
            return perr(c, "node '%s': route %zu has no \"next\"", n->id, idx);
        struct engine_expr *e = engine_expr_parse(cond, why, sizeof(why));
        if (!e)
            return perr(c, "node '%s': route %zu condition: %s", n->id, idx, why);
        struct engine_route *er = &n->routes[n->nroutes++];
        er->cond = e;
        er->cond_src = flowd_xstrdup(cond);
        er->next_id = flowd_xstrdup(next);
        er->next = -1;
    }
    const char *def = json_str(jn, "default");
    if (!def || !*def)
        return perr(c, "node '%s': exclusive gateway has no \"default\" route", n->id);
    n->default_id = flowd_xstrdup(def);
    return 0;
}

static int parse_node(struct pctx *c, const cJSON *jn, size_t idx, struct engine_node *n)
{
    n->next = n->default_next = n->reply_node = n->timeout_next = n->error_next = -1;
    if (!cJSON_IsObject(jn))
        return perr(c, "node #%zu is not an object", idx + 1);
    const char *id = json_str(jn, "id");
    if (!id || !*id)
        return perr(c, "node #%zu has no \"id\"", idx + 1);
    if (!text_valid(id, 100))
        return perr(c, "node #%zu: id must be 1 to 100 printable characters", idx + 1);
    n->id = flowd_xstrdup(id);
    int found = -1;
    for (size_t i = 0; i < c->def->nnodes; i++)
        if (strcmp(c->def->nodes[i].id, id) == 0)
            found = (int)i;
    if (found >= 0)
        return perr(c, "node '%s': duplicate id (nodes #%d and #%zu)", id, found + 1, idx + 1);

    const char *type = json_str(jn, "type");
    if (!type)
        return perr(c, "node '%s': missing \"type\"", id);
    size_t t;
    for (t = 0; t < sizeof(node_types) / sizeof(node_types[0]); t++)
        if (strcmp(node_types[t].name, type) == 0)
            break;
    if (t == sizeof(node_types) / sizeof(node_types[0]))
        return perr(c,
                    "node '%s': unknown type '%.60s' (expected start, end, task, send, receive "
                    "exclusive_gateway, parallel_gateway, timer, error_end or subprocess)",
                    id, type);
    n->type = node_types[t].type;

    const cJSON *jrt = member(jn, "replyTo");
    if (jrt && !cJSON_IsNull(jrt)) {
        if (!cJSON_IsString(jrt) || !*jrt->valuestring)
            return perr(c, "node '%s': \"replyTo\" must be a node id", n->id);
        n->reply_to_id = flowd_xstrdup(jrt->valuestring);
    }
    const cJSON *jnext = member(jn, "next");
    if (n->type == ENGINE_NODE_PARALLEL_GATEWAY && cJSON_IsArray(jnext)) {
        /* a fork: next is the list of branches */
        int count = cJSON_GetArraySize(jnext);
        if (count < 1)
            return perr(c, "node '%s': \"next\" lists no branch", id);
        for (int k = 0; k < count; k++) {
            const cJSON *b = cJSON_GetArrayItem(jnext, k);
            if (!cJSON_IsString(b) || !*b->valuestring)
                return perr(c, "node '%s': \"next\"[%d] must be a node id", id, k);
        }
        n->next_id = flowd_xstrdup(cJSON_GetArrayItem(jnext, 0)->valuestring);
        n->nforks = (size_t)count - 1;
        if (n->nforks) {
            n->fork_ids = flowd_xcalloc(n->nforks, sizeof(*n->fork_ids));
            n->forks = flowd_xcalloc(n->nforks, sizeof(*n->forks));
            for (size_t k = 0; k < n->nforks; k++)
                n->fork_ids[k] = flowd_xstrdup(cJSON_GetArrayItem(jnext, (int)k + 1)->valuestring);
        }
        jnext = NULL;
    }
    if (jnext && !cJSON_IsNull(jnext) && (!cJSON_IsString(jnext) || !*jnext->valuestring))
        return perr(c, "node '%s': \"next\" must be a node id", id);
    if (cJSON_IsString(jnext))
        n->next_id = flowd_xstrdup(jnext->valuestring);
    if (!n->next_id && n->type != ENGINE_NODE_END && n->type != ENGINE_NODE_ERROR_END &&
        n->type != ENGINE_NODE_EXCLUSIVE_GATEWAY)
        return perr(c, "node '%s': %s node has no \"next\"", id, type);

    switch (n->type) {
    case ENGINE_NODE_TASK:
    case ENGINE_NODE_SEND:
        return parse_actions(c, n, jn);
    case ENGINE_NODE_RECEIVE:
        return parse_receive(c, n, jn);
    case ENGINE_NODE_TIMER:
        return parse_timer(c, n, jn);
    case ENGINE_NODE_SUBPROCESS:
        return parse_subprocess(c, n, jn);
    case ENGINE_NODE_ERROR_END: {
        const cJSON *je = member(jn, "error");
        if (!je || cJSON_IsNull(je))
            return 0;
        char why[FLOWD_ERRSTR_SIZE];
        if (!cJSON_IsString(je))
            return perr(c, "node '%s': \"error\" must be a string (template)", n->id);
        if (engine_tpl_compile(je->valuestring, ENGINE_TPL_TEXT, c->env, c->def->key, &n->error,
                               why, sizeof(why)))
            return perr(c, "node '%s': error: %s", n->id, why);
        return 0;
    }
    case ENGINE_NODE_EXCLUSIVE_GATEWAY:
        return parse_gateway(c, n, jn);
    default:
        return 0;
    }
}

/* ---- graph --------------------------------------------------------------------------- */

int engine_def_find(const struct engine_def *def, const char *id)
{
    /* Definitions are small; a linear scan beats hashing at these sizes. */
    for (size_t i = 0; i < def->nnodes; i++)
        if (strcmp(def->nodes[i].id, id) == 0)
            return (int)i;
    return -1;
}

static int
resolve(struct pctx *c, const struct engine_node *n, const char *what, const char *id, int *out)
{
    *out = engine_def_find(c->def, id);
    if (*out < 0)
        return perr(c, "node '%s': %s '%.100s' is not a node of this definition", n->id, what, id);
    return 0;
}

static int link_graph(struct pctx *c)
{
    struct engine_def *def = c->def;
    char what[48];
    for (size_t i = 0; i < def->nnodes; i++) {
        struct engine_node *n = &def->nodes[i];
        if (n->next_id && n->type != ENGINE_NODE_EXCLUSIVE_GATEWAY &&
            resolve(c, n, "next", n->next_id, &n->next))
            return FLOWD_ERR_INVAL;
        if (n->type == ENGINE_NODE_END || n->type == ENGINE_NODE_ERROR_END)
            n->next = -1; /* an end node's next is ignored */
        for (size_t r = 0; r < n->nroutes; r++) {
            snprintf(what, sizeof(what), "route %zu next", r + 1);
            if (resolve(c, n, what, n->routes[r].next_id, &n->routes[r].next))
                return FLOWD_ERR_INVAL;
        }
        if (n->default_id && resolve(c, n, "default", n->default_id, &n->default_next))
            return FLOWD_ERR_INVAL;
        if (n->timeout_next_id &&
            resolve(c, n, "timeoutNext", n->timeout_next_id, &n->timeout_next))
            return FLOWD_ERR_INVAL;
        if (n->error_next_id && resolve(c, n, "errorNext", n->error_next_id, &n->error_next))
            return FLOWD_ERR_INVAL;
        for (size_t k = 0; k < n->nforks; k++) {
            snprintf(what, sizeof(what), "next[%zu]", k + 1);
            if (resolve(c, n, what, n->fork_ids[k], &n->forks[k]))
                return FLOWD_ERR_INVAL;
        }
    }
    /* incoming edges, for the parallel gateways that join them */
    for (size_t i = 0; i < def->nnodes; i++) {
        const struct engine_node *n = &def->nodes[i];
        int outs[4] = {n->next, n->default_next, n->timeout_next, n->error_next};
        for (size_t k = 0; k < 4; k++)
            if (outs[k] >= 0)
                def->nodes[outs[k]].incoming++;
        for (size_t k = 0; k < n->nroutes; k++)
            if (n->routes[k].next >= 0)
                def->nodes[n->routes[k].next].incoming++;
        for (size_t k = 0; k < n->nforks; k++)
            def->nodes[n->forks[k]].incoming++;
    }

    int start = -1;
    size_t nends = 0;
    for (size_t i = 0; i < def->nnodes; i++) {
        if (def->nodes[i].type == ENGINE_NODE_START) {
            if (start >= 0)
                return perr(c, "node '%s': a second start node (the first is '%s')",
                            def->nodes[i].id, def->nodes[start].id);
            start = (int)i;
        }
        if (def->nodes[i].type == ENGINE_NODE_END)
            nends++;
    }
    if (start < 0)
        return perr(c, "definition has no start node");
    if (nends == 0)
        return perr(c, "definition has no end node");
    def->start = start;

    /* reachability from start (iterative, with an explicit stack) */
    unsigned char *seen = flowd_xcalloc(def->nnodes, 1);
    int *stack = flowd_xmalloc(def->nnodes * sizeof(int));
    size_t sp = 0;
    stack[sp++] = start;
    seen[start] = 1;
    while (sp) {
        const struct engine_node *n = &def->nodes[stack[--sp]];
        int outs[4] = {n->next, n->default_next, n->timeout_next, n->error_next};
        for (size_t k = 0; k < 4 + n->nroutes + n->nforks; k++) {
            int t = k < 4                ? outs[k]
                    : k < 4 + n->nroutes ? n->routes[k - 4].next
                                         : n->forks[k - 4 - n->nroutes];
            if (t >= 0 && !seen[t]) {
                seen[t] = 1;
                stack[sp++] = t;
            }
        }
    }
    int rc = 0;
    for (size_t i = 0; i < def->nnodes && !rc; i++)
        if (!seen[i])
            rc = perr(c, "node '%s': unreachable from start node '%s'", def->nodes[i].id,
                      def->nodes[start].id);
    free(seen);
    free(stack);
    if (rc)
        return rc;

    for (size_t i = 0; i < def->nnodes; i++) {
        struct engine_node *n = &def->nodes[i];
        if (n->nactions && n->reply_to_id) {
            int rn = -1;
            if (resolve(c, n, "replyTo", n->reply_to_id, &rn))
                return FLOWD_ERR_INVAL;
            if (def->nodes[rn].type != ENGINE_NODE_RECEIVE)
                return perr(c, "node '%s': replyTo '%s' is not a receive node", n->id,
                            n->reply_to_id);
            n->reply_node = rn;
        } else if (n->nactions) {
            /* the first receive node down the chain of send/task/timer nodes, else the node */
            int at = n->next;
            for (size_t hops = 0; at >= 0 && hops < def->nnodes; hops++) {
                enum engine_node_type t = def->nodes[at].type;
                if (t != ENGINE_NODE_SEND && t != ENGINE_NODE_TASK && t != ENGINE_NODE_TIMER)
                    break;
                at = def->nodes[at].next;
            }
            n->reply_node = at >= 0 && def->nodes[at].type == ENGINE_NODE_RECEIVE ? at : (int)i;
        }
        for (size_t t = 0; t < n->ntopics; t++)
            def->nrtopics++;
    }
    def->rtopics = flowd_xcalloc(def->nrtopics ? def->nrtopics : 1, sizeof(*def->rtopics));
    size_t k = 0;
    for (size_t i = 0; i < def->nnodes; i++)
        for (size_t t = 0; t < def->nodes[i].ntopics; t++) {
            def->rtopics[k].node = i;
            def->rtopics[k++].topic = t;
        }
    return 0;
}

/* ---- public -------------------------------------------------------------------------- */

struct engine_def *engine_def_parse(
    const char *json, size_t len, const struct engine_env *env, char *errstr, size_t errstr_size)
{
    char why[FLOWD_ERRSTR_SIZE];
    cJSON *root = json_parse(json, len, why, sizeof(why));
    if (!root) {
        flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "definition: %s", why);
        return NULL;
    }
    struct engine_def *def = flowd_xcalloc(1, sizeof(*def));
    struct pctx c = {def, env, errstr, errstr_size};
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = perr(&c, "definition: must be a JSON object");
        goto out;
    }
    const char *key = json_str(root, "key");
    if (!key) {
        rc = perr(&c, "definition: missing \"key\"");
        goto out;
    }
    if (!key_valid(key)) {
        rc = perr(&c, "definition: key '%.100s' must be 1 to 100 of A-Z a-z 0-9 . _ -", key);
        goto out;
    }
    def->key = flowd_xstrdup(key);
    const cJSON *jname = member(root, "name");
    if (jname && !cJSON_IsNull(jname) && !cJSON_IsString(jname)) {
        rc = perr(&c, "definition: \"name\" must be a string");
        goto out;
    }
    def->name = flowd_xstrdup(cJSON_IsString(jname) ? jname->valuestring : "");
    const cJSON *jnodes = member(root, "nodes");
    if (!cJSON_IsArray(jnodes) || cJSON_GetArraySize(jnodes) == 0) {
        rc = perr(&c, "definition: \"nodes\" must be a non-empty array");
        goto out;
    }
    def->nodes = flowd_xcalloc((size_t)cJSON_GetArraySize(jnodes), sizeof(*def->nodes));
    const cJSON *jn;
    size_t idx = 0;
    cJSON_ArrayForEach(jn, jnodes)
    {
        struct engine_node *n = &def->nodes[def->nnodes];
        rc = parse_node(&c, jn, idx++, n);
        if (rc) {
            node_release(n);
            goto out;
        }
        def->nnodes++;
    }
    rc = link_graph(&c);
out:
    cJSON_Delete(root);
    if (rc) {
        engine_def_free(def);
        return NULL;
    }
    return def;
}

const char *engine_def_key(const struct engine_def *def)
{
    return def->key;
}

const char *engine_def_name(const struct engine_def *def)
{
    return def->name;
}

void engine_def_set_version(struct engine_def *def, int version, const char *uuid)
{
    def->version = version;
    snprintf(def->uuid, sizeof(def->uuid), "%s", uuid ? uuid : "");
}

int engine_def_version(const struct engine_def *def)
{
    return def->version;
}

const char *engine_def_uuid(const struct engine_def *def)
{
    return def->uuid;
}

size_t engine_def_receive_topic_count(const struct engine_def *def)
{
    return def->nrtopics;
}

const char *
engine_def_call(const struct engine_def *def, size_t i, const char **node_id, int *version)
{
    for (size_t k = 0; k < def->nnodes; k++) {
        const struct engine_node *n = &def->nodes[k];
        if (n->type != ENGINE_NODE_SUBPROCESS || i--)
            continue;
        if (node_id)
            *node_id = n->id;
        if (version)
            *version = n->call_version;
        return n->call_key;
    }
    return NULL;
}

const char *engine_def_receive_topic(const struct engine_def *def, size_t i, const char **node_id)
{
    if (i >= def->nrtopics)
        return NULL;
    const struct engine_node *n = &def->nodes[def->rtopics[i].node];
    if (node_id)
        *node_id = n->id;
    return n->topics[def->rtopics[i].topic].topic;
}
