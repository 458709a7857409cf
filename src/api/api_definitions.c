/* api_definitions.c - POST /v1/definitions: validate and deploy a process definition. */
#include "api_int.h"

#include "../common/err.h"

#include <stdio.h>
#include <string.h>

#include "../common/banned.h"

static int handle_definitions(struct mg_connection *conn, void *cbdata)
{
    struct api_ctx *ctx = cbdata;
    if (!api_method_is(conn, "POST", "POST"))
        return 405;
    struct buf body;
    if (api_read_body(conn, (size_t)ctx->cfg->http_max_body, &body))
        return 413;
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *out = NULL;
    int created = 0;
    int rc = ctx->be.deploy(ctx->be.ctx, buf_str(&body), body.len, &out, &created, errstr,
                            sizeof(errstr));
    buf_release(&body);
    if (rc) {
        api_send_backend_error(conn, rc, errstr);
        return api_status_of(rc);
    }
    api_send_json(conn, created ? 201 : 200, out);
    cJSON_Delete(out);
    return created ? 201 : 200;
}

void api_definitions_register(struct mg_context *mg, struct api_ctx *ctx)
{
    mg_set_request_handler(mg, "/v1/definitions$", handle_definitions, ctx);
}
