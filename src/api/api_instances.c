/* api_instances.c - starting processes and reading instances:
 *   POST /v1/processes/{key}/start   body: initial data (a JSON object, or empty)
 *   GET  /v1/instances/{id}
 */
#include "api_int.h"

#include "../common/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

#define START_PREFIX "/v1/processes/"
#define START_SUFFIX "/start"

static int handle_start(struct mg_connection *conn, void *cbdata)
{
    struct api_ctx *ctx = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *uri = ri->local_uri;
    size_t len = strlen(uri), plen = strlen(START_PREFIX), slen = strlen(START_SUFFIX);
    if (len <= plen + slen || strcmp(uri + len - slen, START_SUFFIX) != 0) {
        api_send_error(conn, 404, "not found", "expected /v1/processes/{key}/start");
        return 404;
    }
    if (!api_method_is(conn, "POST", "POST"))
        return 405;
    char key[128];
    size_t klen = len - plen - slen;
    if (klen >= sizeof(key) || memchr(uri + plen, '/', klen)) {
        api_send_error(conn, 400, "bad request", "process key is malformed or too long");
        return 400;
    }
    memcpy(key, uri + plen, klen);
    key[klen] = '\0';

    struct buf body;
    if (api_read_body(conn, (size_t)ctx->cfg->http_max_body, &body))
        return 413;
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *data = NULL;
    const char *p = buf_str(&body);
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    if (*p) {
        data = json_parse(buf_str(&body), body.len, errstr, sizeof(errstr));
        if (!data || !cJSON_IsObject(data)) {
            char detail[FLOWD_ERRSTR_SIZE + 64];
            snprintf(detail, sizeof(detail), "the start data must be a JSON object: %s",
                     data ? "got another JSON type" : errstr);
            cJSON_Delete(data);
            buf_release(&body);
            api_send_error(conn, 400, "bad request", detail);
            return 400;
        }
    }
    buf_release(&body);
    if (!data)
        data = cJSON_CreateObject();

    cJSON *out = NULL;
    int rc = ctx->be.start(ctx->be.ctx, key, data, &out, errstr, sizeof(errstr));
    if (rc) {
        api_send_backend_error(conn, rc, errstr);
        return api_status_of(rc);
    }
    api_send_json(conn, 201, out);
    cJSON_Delete(out);
    return 201;
}

static int handle_instance(struct mg_connection *conn, void *cbdata)
{
    struct api_ctx *ctx = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *idstr = ri->local_uri + strlen("/v1/instances/");
    char *end;
    errno = 0;
    long long id = strtoll(idstr, &end, 10);
    if (!*idstr || *end || errno || id <= 0) {
        char detail[200];
        snprintf(detail, sizeof(detail), "instance id '%.100s' is not a positive integer", idstr);
        api_send_error(conn, 400, "bad request", detail);
        return 400;
    }
    if (!api_method_is(conn, "GET", "GET"))
        return 405;
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = ctx->be.get_instance(ctx->be.ctx, (int64_t)id, &out, errstr, sizeof(errstr));
    if (rc) {
        api_send_backend_error(conn, rc, errstr);
        return api_status_of(rc);
    }
    api_send_json(conn, 200, out);
    cJSON_Delete(out);
    return 200;
}

void api_instances_register(struct mg_context *mg, struct api_ctx *ctx)
{
    mg_set_request_handler(mg, "/v1/processes/", handle_start, ctx);
    mg_set_request_handler(mg, "/v1/instances/", handle_instance, ctx);
}
