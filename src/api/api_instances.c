/* api_instances.c - starting processes and working with instances:
 *   POST /v1/processes/{key}/start        body: initial data (a JSON object, or empty) -> 201
 *   GET  /v1/instances                    ?state=&definition=&from=&to=&limit=&before= (paged)
 *   GET  /v1/instances/{id}               view + history
 *   GET  /v1/instances/{id}/history
 *   POST /v1/instances/{id}/cancel        body: {"reason": "..."} or empty
 *   POST /v1/instances/{id}/retry         body: {"data": {...}} (merged, FAILED only) or empty
 *   POST /v1/instances/{id}/messages      body: {"body": {...}, "node"?, "topic"?} -> 202
 */
#include "api_int.h"

#include "../common/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/banned.h"

#define LIST_DEFAULT_LIMIT 50
#define LIST_MAX_LIMIT     1000

static int handle_start(struct api_req *rq)
{
    struct api_ctx *ctx = rq->ctx;
    const char *key = rq->arg[0];
    if (strlen(key) >= 128) {
        api_send_error(rq->conn, 400, "bad request", "process key is too long");
        return 400;
    }
    cJSON *data = NULL;
    if (api_read_json(rq, 1, &data))
        return 400;
    if (data && !cJSON_IsObject(data)) {
        cJSON_Delete(data);
        api_send_error(rq->conn, 400, "bad request",
                       "the start data must be a JSON object: got another JSON type");
        return 400;
    }
    /* ?version=N pins a version; without it the latest starts */
    char vbuf[16];
    int version = 0;
    int has = api_query(rq, "version", vbuf, sizeof(vbuf));
    if (has < 0) {
        cJSON_Delete(data);
        return 400;
    }
    if (has) {
        char *end;
        long v = strtol(vbuf, &end, 10);
        if (!vbuf[0] || *end || v < 1 || v > 1000000) {
            cJSON_Delete(data);
            api_send_error(rq->conn, 400, "bad request",
                           "query parameter 'version' must be a positive integer");
            return 400;
        }
        version = (int)v;
    }
    if (!data)
        data = cJSON_CreateObject();
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = ctx->be.start(ctx->be.ctx, key, version, data, &out, errstr, sizeof(errstr));
    return api_reply(rq, rc, out, 201, errstr);
}

static int handle_get(struct api_req *rq)
{
    int64_t id;
    if (api_arg_id(rq, 0, "instance", &id))
        return 400;
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = rq->ctx->be.get_instance(rq->ctx->be.ctx, id, &out, errstr, sizeof(errstr));
    return api_reply(rq, rc, out, 200, errstr);
}

static int handle_history(struct api_req *rq)
{
    int64_t id;
    if (api_arg_id(rq, 0, "instance", &id))
        return 400;
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = rq->ctx->be.get_history(rq->ctx->be.ctx, id, &out, errstr, sizeof(errstr));
    return api_reply(rq, rc, out, 200, errstr);
}

/* "1700000000000" (epoch ms) or "2026-11-23T10:00:00Z" / "...:00.123Z" (UTC). */
static int parse_time(const char *s, int64_t *ms)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s && !*end && !errno && v >= 0) {
        *ms = v;
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int frac = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6)
        return -1;
    const char *p = s + n;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                frac = frac * 10 + (*p - '0');
        while (digits++ < 3)
            frac *= 10;
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return -1;
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t < 0)
        return -1;
    *ms = (int64_t)t * 1000 + frac;
    return 0;
}

static int bad_param(struct api_req *rq, const char *name, const char *value, const char *want)
{
    char detail[300];
    snprintf(detail, sizeof(detail), "query parameter %s='%.100s' is not %s", name, value, want);
    api_send_error(rq->conn, 400, "bad request", detail);
    return 400;
}

static int handle_list(struct api_req *rq)
{
    char state[32] = "", def[128] = "", from[64] = "", to[64] = "", limit[32] = "", before[32] = "";
    struct api_instance_query q = {NULL, NULL, 0, 0, 0, LIST_DEFAULT_LIMIT};
    int r;
    if ((r = api_query(rq, "state", state, sizeof(state))) < 0)
        return 400;
    if (r) {
        static const char *const states[] = {"STARTED", "FINISHED", "FAILED", "TERMINATED"};
        for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
            if (strcmp(state, states[i]) == 0)
                q.state = states[i];
        if (!q.state)
            return bad_param(rq, "state", state, "one of STARTED, FINISHED, FAILED, TERMINATED");
    }
    if ((r = api_query(rq, "definition", def, sizeof(def))) < 0)
        return 400;
    if (r && def[0])
        q.def_key = def;
    if ((r = api_query(rq, "from", from, sizeof(from))) < 0)
        return 400;
    if (r && parse_time(from, &q.from_ms))
        return bad_param(rq, "from", from, "epoch milliseconds or an ISO 8601 UTC time");
    if ((r = api_query(rq, "to", to, sizeof(to))) < 0)
        return 400;
    if (r && parse_time(to, &q.to_ms))
        return bad_param(rq, "to", to, "epoch milliseconds or an ISO 8601 UTC time");
    if ((r = api_query(rq, "limit", limit, sizeof(limit))) < 0)
        return 400;
    if (r) {
        char *end;
        long v = strtol(limit, &end, 10);
        if (!limit[0] || *end || v < 1 || v > LIST_MAX_LIMIT)
            return bad_param(rq, "limit", limit, "an integer from 1 to 1000");
        q.limit = (int)v;
    }
    if ((r = api_query(rq, "before", before, sizeof(before))) < 0)
        return 400;
    if (r) {
        char *end;
        errno = 0;
        long long v = strtoll(before, &end, 10);
        if (!before[0] || *end || errno || v <= 0)
            return bad_param(rq, "before", before, "a positive instance id");
        q.before_id = v;
    }
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = rq->ctx->be.list_instances(rq->ctx->be.ctx, &q, &out, errstr, sizeof(errstr));
    return api_reply(rq, rc, out, 200, errstr);
}

/* Reads an optional JSON object body. -1: an error was sent. */
static int object_body(struct api_req *rq, cJSON **body)
{
    if (api_read_json(rq, 1, body))
        return -1;
    if (*body && !cJSON_IsObject(*body)) {
        cJSON_Delete(*body);
        *body = NULL;
        api_send_error(rq->conn, 400, "bad request", "the body must be a JSON object");
        return -1;
    }
    return 0;
}

static int handle_cancel(struct api_req *rq)
{
    int64_t id;
    cJSON *body = NULL;
    if (api_arg_id(rq, 0, "instance", &id) || object_body(rq, &body))
        return 400;
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(body, "reason");
    if (reason && !cJSON_IsString(reason)) {
        cJSON_Delete(body);
        api_send_error(rq->conn, 400, "bad request", "reason must be a string");
        return 400;
    }
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = rq->ctx->be.cancel(rq->ctx->be.ctx, id, reason ? reason->valuestring : NULL, &out,
                                errstr, sizeof(errstr));
    cJSON_Delete(body);
    return api_reply(rq, rc, out, 200, errstr);
}

static int handle_retry(struct api_req *rq)
{
    int64_t id;
    cJSON *body = NULL;
    if (api_arg_id(rq, 0, "instance", &id) || object_body(rq, &body))
        return 400;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(body, "data");
    if (data && !cJSON_IsObject(data)) {
        cJSON_Delete(body);
        api_send_error(rq->conn, 400, "bad request", "data must be a JSON object");
        return 400;
    }
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = rq->ctx->be.retry(rq->ctx->be.ctx, id, data, &out, errstr, sizeof(errstr));
    cJSON_Delete(body);
    return api_reply(rq, rc, out, 200, errstr);
}

static int handle_message(struct api_req *rq)
{
    int64_t id;
    cJSON *body = NULL;
    if (api_arg_id(rq, 0, "instance", &id) || object_body(rq, &body))
        return 400;
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(body, "body");
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(body, "node");
    const cJSON *topic = cJSON_GetObjectItemCaseSensitive(body, "topic");
    const char *why = !msg                              ? "the request needs a \"body\" member: "
                                                          "the message to deliver (JSON)"
                      : node && !cJSON_IsString(node)   ? "node must be a string"
                      : topic && !cJSON_IsString(topic) ? "topic must be a string"
                                                        : NULL;
    if (why) {
        cJSON_Delete(body);
        api_send_error(rq->conn, 400, "bad request", why);
        return 400;
    }
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc =
        rq->ctx->be.deliver(rq->ctx->be.ctx, id, node ? node->valuestring : NULL,
                            topic ? topic->valuestring : NULL, msg, &out, errstr, sizeof(errstr));
    cJSON_Delete(body);
    return api_reply(rq, rc, out, 202, errstr);
}

const struct api_route api_instance_routes[] = {
    {"POST", "/v1/processes/*/start", handle_start},
    {"GET", "/v1/instances", handle_list},
    {"GET", "/v1/instances/*", handle_get},
    {"GET", "/v1/instances/*/history", handle_history},
    {"POST", "/v1/instances/*/cancel", handle_cancel},
    {"POST", "/v1/instances/*/retry", handle_retry},
    {"POST", "/v1/instances/*/messages", handle_message},
    {NULL, NULL, NULL},
};
