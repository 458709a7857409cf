/* api_int.h - shared by the files of src/api only: the request being served, the route table,
 * and the response helpers. */
#ifndef FLOWD_API_INT_H
#define FLOWD_API_INT_H

#include "api.h"

#include "../common/buf.h"

#include <civetweb.h>

struct api_ctx {
    struct api_backend be;
    const struct flowd_config *cfg;
};

#define API_MAX_SEGS 8

/* One request, as the router hands it to a handler. */
struct api_req {
    struct mg_connection *conn;
    struct api_ctx *ctx;
    const char *method;
    const char *path;              /* decoded, without the query */
    const char *query;             /* raw query string, or NULL */
    const char *arg[API_MAX_SEGS]; /* the segments the route's '*' matched, in order */
    int narg;
    char segbuf[1024];
};

/* Returns the HTTP status it sent. */
typedef int(api_handler)(struct api_req *rq);

/* A route: method and pattern, where a star matches one non-empty path segment. */
struct api_route {
    const char *method;
    const char *pattern;
    api_handler *handler;
};

extern const struct api_route api_definition_routes[];
extern const struct api_route api_instance_routes[];
extern const struct api_route api_admin_routes[];

void api_send_json(struct mg_connection *conn, int status, const cJSON *body);
/* Sends a text body (e.g. Prometheus) with content type ctype. */
void api_send_text(struct mg_connection *conn, int status, const char *ctype, const char *text);
void api_send_error(struct mg_connection *conn, int status, const char *error, const char *detail);
void api_send_backend_error(struct mg_connection *conn, int err, const char *detail);
int api_status_of(int err);
/* Sends the backend's answer: rc != 0 -> its error; else out with status ok_status. Frees out.
 * Returns the status sent. */
int api_reply(struct api_req *rq, int rc, cJSON *out, int ok_status, const char *errstr);
/* Reads the whole body into out (capped at max). On -1 a 413 was already sent. */
int api_read_body(struct mg_connection *conn, size_t max, struct buf *out);
/* Reads the body as JSON: NULL body (empty) is allowed when allow_empty (then *out = NULL).
 * On -1 an error (400/413) was already sent. */
int api_read_json(struct api_req *rq, int allow_empty, cJSON **out);
/* Parses a positive int64 path argument; on -1 a 400 naming what was sent. */
int api_arg_id(struct api_req *rq, int i, const char *what, int64_t *id);
/* Query parameter name into out (decoded); 1 found, 0 absent, -1 (400 sent) too long. */
int api_query(struct api_req *rq, const char *name, char *out, size_t size);

#endif
