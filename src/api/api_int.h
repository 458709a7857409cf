/* api_int.h - shared by the files of src/api only. */
#ifndef FLOWD_API_INT_H
#define FLOWD_API_INT_H

#include "api.h"

#include "../common/buf.h"

#include <civetweb.h>

struct api_ctx {
    struct api_backend be;
    const struct flowd_config *cfg;
};

void api_send_json(struct mg_connection *conn, int status, const cJSON *body);
void api_send_error(struct mg_connection *conn, int status, const char *error, const char *detail);
void api_send_backend_error(struct mg_connection *conn, int err, const char *detail);
int api_status_of(int err);
/* Reads the whole body into out (capped at max). On -1 a 413 was already sent. */
int api_read_body(struct mg_connection *conn, size_t max, struct buf *out);
/* 1 if the request method is `method`; otherwise sends 405 naming `allowed` and returns 0. */
int api_method_is(struct mg_connection *conn, const char *method, const char *allowed);

void api_definitions_register(struct mg_context *mg, struct api_ctx *ctx);
void api_instances_register(struct mg_context *mg, struct api_ctx *ctx);

#endif
