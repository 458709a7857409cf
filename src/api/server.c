/* server.c - civetweb setup, routing, request bodies with a hard cap, JSON responses.
 *
 * Every response is JSON. Every 4xx/5xx has {"error","detail","path"} and never internals.
 */
#include "api.h"

#include "../common/buf.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"
#include "api_int.h"

#include <civetweb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

struct api {
    struct mg_context *mg;
    struct api_ctx ctx;
};

/* Sends body as the JSON response, with one extra header when name is not NULL. */
static void send_json(struct mg_connection *conn,
                      int status,
                      const cJSON *body,
                      const char *name,
                      const char *value)
{
    char *text = body ? json_print(body) : flowd_xstrdup("{}");
    size_t len = strlen(text);
    char clen[32];
    snprintf(clen, sizeof(clen), "%zu", len + 1);
    /* the response-header API lets civetweb keep the connection alive */
    mg_response_header_start(conn, status);
    mg_response_header_add(conn, "Content-Type", "application/json", -1);
    mg_response_header_add(conn, "Content-Length", clen, -1);
    mg_response_header_add(conn, "Cache-Control", "no-store", -1);
    if (name)
        mg_response_header_add(conn, name, value, -1);
    mg_response_header_send(conn);
    mg_write(conn, text, len);
    mg_write(conn, "\n", 1);
    free(text);
}

void api_send_json(struct mg_connection *conn, int status, const cJSON *body)
{
    send_json(conn, status, body, NULL, NULL);
}

static cJSON *error_body(struct mg_connection *conn, const char *error, const char *detail)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", error);
    cJSON_AddStringToObject(o, "detail", detail);
    cJSON_AddStringToObject(o, "path", ri && ri->local_uri ? ri->local_uri : "");
    return o;
}

void api_send_error(struct mg_connection *conn, int status, const char *error, const char *detail)
{
    cJSON *o = error_body(conn, error, detail);
    api_send_json(conn, status, o);
    cJSON_Delete(o);
}

int api_status_of(int err)
{
    switch (err) {
    case FLOWD_OK: return 200;
    case FLOWD_ERR_INVAL: return 400;
    case FLOWD_ERR_NOTFOUND: return 404;
    case FLOWD_ERR_TOOBIG: return 413;
    case FLOWD_ERR_AGAIN: return 503;
    case FLOWD_ERR_STATE: return 409;
    }
    return 500;
}

void api_send_backend_error(struct mg_connection *conn, int err, const char *detail)
{
    int status = api_status_of(err);
    const char *error = status == 400   ? "bad request"
                        : status == 404 ? "not found"
                        : status == 409 ? "conflict"
                        : status == 413 ? "payload too large"
                        : status == 503 ? "unavailable"
                                        : "internal error";
    api_send_error(conn, status, error, detail);
}

int api_read_body(struct mg_connection *conn, size_t max, struct buf *out)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (ri->content_length > 0 && (size_t)ri->content_length > max) {
        char detail[160];
        snprintf(detail, sizeof(detail), "request body of %lld bytes is over the limit of %zu bytes",
                 ri->content_length, max);
        api_send_error(conn, 413, "payload too large", detail);
        return -1;
    }
    buf_init(out, max);
    char chunk[16384];
    int n;
    while ((n = mg_read(conn, chunk, sizeof(chunk))) > 0) {
        if (buf_add(out, chunk, (size_t)n)) {
            char detail[160];
            snprintf(detail, sizeof(detail), "request body is over the limit of %zu bytes", max);
            api_send_error(conn, 413, "payload too large", detail);
            buf_release(out);
            return -1;
        }
    }
    return 0;
}

int api_method_is(struct mg_connection *conn, const char *method, const char *allowed)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (strcmp(ri->request_method, method) == 0)
        return 1;
    char detail[128];
    snprintf(detail, sizeof(detail), "method %s is not allowed here; use %s", ri->request_method,
             allowed);
    cJSON *o = error_body(conn, "method not allowed", detail);
    send_json(conn, 405, o, "Allow", allowed); /* RFC 9110: a 405 names the allowed methods */
    cJSON_Delete(o);
    return 0;
}

static int handle_health(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    if (!api_method_is(conn, "GET", "GET"))
        return 405;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    api_send_json(conn, 200, o);
    cJSON_Delete(o);
    return 200;
}

static int handle_ready(struct mg_connection *conn, void *cbdata)
{
    struct api_ctx *ctx = cbdata;
    if (!api_method_is(conn, "GET", "GET"))
        return 405;
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    int rc = ctx->be.ready(ctx->be.ctx, errstr, sizeof(errstr));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", rc ? "not ready" : "ready");
    if (rc)
        cJSON_AddStringToObject(o, "detail", errstr);
    api_send_json(conn, rc ? 503 : 200, o);
    cJSON_Delete(o);
    return rc ? 503 : 200;
}

static int handle_fallback(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    char detail[300];
    snprintf(detail, sizeof(detail), "no route for %s %.200s", ri->request_method,
             ri->local_uri ? ri->local_uri : "");
    api_send_error(conn, 404, "not found", detail);
    return 404;
}

static int log_message(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    FLOWD_LOG(LOG_WARN, LOG_SUB_HTTP, "%s", message);
    return 1;
}

struct api *api_start(const struct flowd_config *cfg,
                      const struct api_backend *backend,
                      char *errstr,
                      size_t errstr_size)
{
    struct api *api = flowd_xcalloc(1, sizeof(*api));
    api->ctx.be = *backend;
    api->ctx.cfg = cfg;

    char ports[300];
    snprintf(ports, sizeof(ports), "%s:%lld", cfg->http_bind, (long long)cfg->http_port);
    const char *options[] = {"listening_ports",
                             ports,
                             "num_threads",
                             "16",
                             "request_timeout_ms",
                             "30000",
                             "enable_keep_alive",
                             "yes",
                             "keep_alive_timeout_ms",
                             "15000",
                             "tcp_nodelay",
                             "1",
                             "max_request_size",
                             "65536",
                             NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    cb.log_message = log_message;
    struct mg_init_data init = {&cb, &api->ctx, options};
    struct mg_error_data err;
    char mgerr[256] = "";
    memset(&err, 0, sizeof(err));
    err.text = mgerr;
    err.text_buffer_size = sizeof(mgerr);
    api->mg = mg_start2(&init, &err);
    if (!api->mg) {
        flowd_seterr(errstr, errstr_size, FLOWD_ERR_IO, "cannot serve HTTP on %s: %s", ports,
                     mgerr[0] ? mgerr : "unknown error");
        free(api);
        return NULL;
    }
    mg_set_request_handler(api->mg, "/health$", handle_health, &api->ctx);
    mg_set_request_handler(api->mg, "/ready$", handle_ready, &api->ctx);
    api_definitions_register(api->mg, &api->ctx);
    api_instances_register(api->mg, &api->ctx);
    mg_set_request_handler(api->mg, "/", handle_fallback, &api->ctx);
    FLOWD_LOG(LOG_INFO, LOG_SUB_HTTP, "serving HTTP on %s", ports);
    return api;
}

void api_stop(struct api *api)
{
    if (!api)
        return;
    mg_stop(api->mg);
    free(api);
}
