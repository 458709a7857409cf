/* api_admin.c - operating flowd:
 *   GET  /v1/dead-letters                 ?limit=&before= (newest first, paged)
 *   POST /v1/dead-letters/{id}/replay     re-publish to the original topic -> 202
 *   GET  /metrics                         Prometheus text format
 */
#include "api_int.h"

#include "../common/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

static int handle_dead_letters(struct api_req *rq)
{
    char limit[32] = "", before[32] = "";
    long lim = 50;
    long long bef = 0;
    int r;
    if ((r = api_query(rq, "limit", limit, sizeof(limit))) < 0)
        return 400;
    if (r) {
        char *end;
        lim = strtol(limit, &end, 10);
        if (!limit[0] || *end || lim < 1 || lim > 1000) {
            api_send_error(rq->conn, 400, "bad request",
                           "query parameter limit is not an integer from 1 to 1000");
            return 400;
        }
    }
    if ((r = api_query(rq, "before", before, sizeof(before))) < 0)
        return 400;
    if (r) {
        char *end;
        errno = 0;
        bef = strtoll(before, &end, 10);
        if (!before[0] || *end || errno || bef <= 0) {
            api_send_error(rq->conn, 400, "bad request",
                           "query parameter before is not a positive dead-letter id");
            return 400;
        }
    }
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc =
        rq->ctx->be.list_dead_letters(rq->ctx->be.ctx, bef, (int)lim, &out, errstr, sizeof(errstr));
    return api_reply(rq, rc, out, 200, errstr);
}

static int handle_replay(struct api_req *rq)
{
    int64_t id;
    if (api_arg_id(rq, 0, "dead-letter", &id))
        return 400;
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int rc = rq->ctx->be.replay(rq->ctx->be.ctx, id, &out, errstr, sizeof(errstr));
    return api_reply(rq, rc, out, 202, errstr);
}

static int handle_metrics(struct api_req *rq)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    char *text = NULL;
    int rc = rq->ctx->be.metrics(rq->ctx->be.ctx, &text, errstr, sizeof(errstr));
    if (rc) {
        api_send_backend_error(rq->conn, rc, errstr);
        return api_status_of(rc);
    }
    api_send_text(rq->conn, 200, "text/plain; version=0.0.4; charset=utf-8", text);
    free(text);
    return 200;
}

const struct api_route api_admin_routes[] = {
    {"GET", "/v1/dead-letters", handle_dead_letters},
    {"POST", "/v1/dead-letters/*/replay", handle_replay},
    {"GET", "/metrics", handle_metrics},
    {NULL, NULL, NULL},
};
