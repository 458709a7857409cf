/* api_definitions.c - process definitions:
 *   POST /v1/definitions                    deploy (201 new version, 200 identical to the latest)
 *   POST /v1/definitions/validate           check without deploying (200 or 400 naming the node)
 *   GET  /v1/definitions                    every key with its versions
 *   GET  /v1/definitions/{key}              the latest version, with the definition
 *   GET  /v1/definitions/{key}/{version}    one version
 */
#include "api_int.h"

#include "../common/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

static int handle_deploy(struct api_req *rq)
{
    struct api_ctx *ctx = rq->ctx;
    struct buf body;
    if (api_read_body(rq->conn, (size_t)ctx->cfg->http_max_body, &body))
        return 413;
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int created = 0;
    int rc = ctx->be.deploy(ctx->be.ctx, buf_str(&body), body.len, &out, &created, errstr,
                            sizeof(errstr));
    buf_release(&body);
    return api_reply(rq, rc, out, created ? 201 : 200, errstr);
}

static int handle_validate(struct api_req *rq)
{
    struct api_ctx *ctx = rq->ctx;
    struct buf body;
    if (api_read_body(rq->conn, (size_t)ctx->cfg->http_max_body, &body))
        return 413;
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = ctx->be.validate(ctx->be.ctx, buf_str(&body), body.len, &out, errstr, sizeof(errstr));
    buf_release(&body);
    return api_reply(rq, rc, out, 200, errstr);
}

static int handle_list(struct api_req *rq)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = rq->ctx->be.list_definitions(rq->ctx->be.ctx, &out, errstr, sizeof(errstr));
    return api_reply(rq, rc, out, 200, errstr);
}

static int get_version(struct api_req *rq, int version)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = rq->ctx->be.get_definition(rq->ctx->be.ctx, rq->arg[0], version, &out, errstr,
                                        sizeof(errstr));
    return api_reply(rq, rc, out, 200, errstr);
}

static int handle_get_latest(struct api_req *rq)
{
    return get_version(rq, 0);
}

static int handle_get_version(struct api_req *rq)
{
    char *end;
    errno = 0;
    long v = strtol(rq->arg[1], &end, 10);
    if (*end || errno || v <= 0 || v > 1000000000) {
        char detail[200];
        snprintf(detail, sizeof(detail), "version '%.100s' is not a positive integer", rq->arg[1]);
        api_send_error(rq->conn, 400, "bad request", detail);
        return 400;
    }
    return get_version(rq, (int)v);
}

const struct api_route api_definition_routes[] = {
    {"POST", "/v1/definitions", handle_deploy},
    {"GET", "/v1/definitions", handle_list},
    {"POST", "/v1/definitions/validate", handle_validate},
    {"GET", "/v1/definitions/*", handle_get_latest},
    {"GET", "/v1/definitions/*/*", handle_get_version},
    {NULL, NULL, NULL},
};
