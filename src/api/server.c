/* server.c - civetweb setup, authentication, routing, request bodies with a hard cap, JSON
 * responses.
 *
 * One civetweb handler serves every path: it checks the bearer token (every path but
 * GET /health, when http.auth-token is set), then finds the route in the route tables of
 * api_definitions.c, api_instances.c and api_admin.c: a path no route has is 404, a path whose
 * routes do not take the method is 405 with Allow. Errors civetweb raises itself (a request line
 * or headers over http.max-header-bytes, a malformed request) go through the http_error callback,
 * so every 4xx/5xx has the JSON body {"error","detail","path"} and never internals.
 */
#include "api.h"

#include "../common/buf.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"
#include "api_int.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/banned.h"

static pthread_mutex_t date_lock = PTHREAD_MUTEX_INITIALIZER;

struct api {
    struct mg_context *mg;
    struct api_ctx ctx;
};

/* Sends body as the JSON response, with one extra header when name is not NULL. */
static void send_body(struct mg_connection *conn,
                      int status,
                      const char *ctype,
                      const char *text,
                      const char *name,
                      const char *value)
{
    size_t len = strlen(text);
    char clen[32];
    snprintf(clen, sizeof(clen), "%zu", len + 1);
    /* the response-header API lets civetweb keep the connection alive */
    mg_response_header_start(conn, status);
    mg_response_header_add(conn, "Content-Type", ctype, -1);
    mg_response_header_add(conn, "Content-Length", clen, -1);
    mg_response_header_add(conn, "Cache-Control", "no-store", -1);
    mg_response_header_add(conn, "X-Content-Type-Options", "nosniff", -1);
    if (name)
        mg_response_header_add(conn, name, value, -1);
    /* civetweb 1.15 formats the Date header with gmtime(), whose result is shared by every
     * thread: two workers answering at once race on it (ThreadSanitizer saw it) */
    pthread_mutex_lock(&date_lock);
    mg_response_header_send(conn);
    pthread_mutex_unlock(&date_lock);
    mg_write(conn, text, len);
    mg_write(conn, "\n", 1);
}

static void send_json(
    struct mg_connection *conn, int status, const cJSON *body, const char *name, const char *value)
{
    char *text = body ? json_print(body) : flowd_xstrdup("{}");
    send_body(conn, status, "application/json", text, name, value);
    free(text);
}

void api_send_json(struct mg_connection *conn, int status, const cJSON *body)
{
    send_json(conn, status, body, NULL, NULL);
}

void api_send_text(struct mg_connection *conn, int status, const char *ctype, const char *text)
{
    /* send_body adds a final newline; Prometheus text already ends with one */
    size_t len = strlen(text);
    char clen[32];
    snprintf(clen, sizeof(clen), "%zu", len);
    mg_response_header_start(conn, status);
    mg_response_header_add(conn, "Content-Type", ctype, -1);
    mg_response_header_add(conn, "Content-Length", clen, -1);
    mg_response_header_add(conn, "Cache-Control", "no-store", -1);
    mg_response_header_send(conn);
    mg_write(conn, text, len);
}

static cJSON *error_body(const struct mg_connection *conn, const char *error, const char *detail)
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
    case FLOWD_OK:
        return 200;
    case FLOWD_ERR_INVAL:
        return 400;
    case FLOWD_ERR_NOTFOUND:
        return 404;
    case FLOWD_ERR_TOOBIG:
        return 413;
    case FLOWD_ERR_AGAIN:
        return 503;
    case FLOWD_ERR_STATE:
        return 409;
    }
    return 500;
}

static const char *status_word(int status)
{
    switch (status) {
    case 400:
        return "bad request";
    case 401:
        return "unauthorized";
    case 404:
        return "not found";
    case 405:
        return "method not allowed";
    case 409:
        return "conflict";
    case 413:
        return "payload too large";
    case 431:
        return "request header fields too large";
    case 503:
        return "unavailable";
    }
    return status >= 500 ? "internal error" : "bad request";
}

void api_send_backend_error(struct mg_connection *conn, int err, const char *detail)
{
    int status = api_status_of(err);
    if (status == 500) {
        /* the detail may name files or SQLite errors: log it, answer plainly */
        FLOWD_LOG(LOG_ERROR, LOG_SUB_HTTP, "internal error: %s", detail);
        detail = "the server failed to answer this request; see the flowd log";
    }
    api_send_error(conn, status, status_word(status), detail);
}

int api_reply(struct api_req *rq, int rc, cJSON *out, int ok_status, const char *errstr)
{
    if (rc) {
        cJSON_Delete(out);
        api_send_backend_error(rq->conn, rc, errstr);
        return api_status_of(rc);
    }
    api_send_json(rq->conn, ok_status, out);
    cJSON_Delete(out);
    return ok_status;
}

int api_read_body(struct mg_connection *conn, size_t max, struct buf *out)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (ri->content_length > 0 && (size_t)ri->content_length > max) {
        char detail[160];
        snprintf(detail, sizeof(detail),
                 "request body of %lld bytes is over the limit of %zu bytes", ri->content_length,
                 max);
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

int api_read_json(struct api_req *rq, int allow_empty, cJSON **out)
{
    *out = NULL;
    struct buf body;
    if (api_read_body(rq->conn, (size_t)rq->ctx->cfg->http_max_body, &body))
        return -1;
    const char *p = buf_str(&body);
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    if (!*p) {
        buf_release(&body);
        if (allow_empty)
            return 0;
        api_send_error(rq->conn, 400, "bad request", "the request needs a JSON body");
        return -1;
    }
    char errstr[FLOWD_ERRSTR_SIZE];
    *out = json_parse(buf_str(&body), body.len, errstr, sizeof(errstr));
    buf_release(&body);
    if (!*out) {
        char detail[FLOWD_ERRSTR_SIZE + 40];
        snprintf(detail, sizeof(detail), "the body is not valid JSON: %s", errstr);
        api_send_error(rq->conn, 400, "bad request", detail);
        return -1;
    }
    return 0;
}

int api_arg_id(struct api_req *rq, int i, const char *what, int64_t *id)
{
    const char *s = i < rq->narg ? rq->arg[i] : "";
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v <= 0) {
        char detail[200];
        snprintf(detail, sizeof(detail), "%s id '%.100s' is not a positive integer", what, s);
        api_send_error(rq->conn, 400, "bad request", detail);
        return -1;
    }
    *id = v;
    return 0;
}

int api_query(struct api_req *rq, const char *name, char *out, size_t size)
{
    if (!rq->query)
        return 0;
    int n = mg_get_var(rq->query, strlen(rq->query), name, out, size);
    if (n == -1)
        return 0;
    if (n < 0) {
        char detail[160];
        snprintf(detail, sizeof(detail), "query parameter '%s' is too long or malformed", name);
        api_send_error(rq->conn, 400, "bad request", detail);
        return -1;
    }
    return 1;
}

/* ---- health, readiness --------------------------------------------------------------- */

static int handle_health(struct api_req *rq)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    api_send_json(rq->conn, 200, o);
    cJSON_Delete(o);
    return 200;
}

static int handle_ready(struct api_req *rq)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    int rc = rq->ctx->be.ready(rq->ctx->be.ctx, errstr, sizeof(errstr));
    if (rc) {
        /* 503 is an error: the error body, with the reason as detail */
        api_send_error(rq->conn, 503, "not ready", errstr);
        return 503;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ready");
    api_send_json(rq->conn, 200, o);
    cJSON_Delete(o);
    return 200;
}

static const struct api_route base_routes[] = {
    {"GET", "/health", handle_health},
    {"GET", "/ready", handle_ready},
    {NULL, NULL, NULL},
};

/* ---- routing -------------------------------------------------------------------------- */

/* Matches path against pattern, filling rq->arg with what each '*' matched. */
static int match(struct api_req *rq, const char *pattern, const char *path)
{
    rq->narg = 0;
    size_t used = 0;
    while (*pattern && *path) {
        if (*pattern == '*') {
            size_t n = strcspn(path, "/");
            if (n == 0 || rq->narg == API_MAX_SEGS || used + n + 1 > sizeof(rq->segbuf))
                return 0;
            memcpy(rq->segbuf + used, path, n);
            rq->segbuf[used + n] = '\0';
            rq->arg[rq->narg++] = rq->segbuf + used;
            used += n + 1;
            path += n;
            pattern++;
            continue;
        }
        if (*pattern != *path)
            return 0;
        pattern++;
        path++;
    }
    if (*path == '/' && path[1] == '\0')
        path++; /* a trailing slash is the same resource */
    return *pattern == '\0' && *path == '\0';
}

static const struct api_route *const route_tables[] = {base_routes, api_definition_routes,
                                                       api_instance_routes, api_admin_routes};

static int route(struct api_req *rq)
{
    char allow[128] = "";
    for (size_t t = 0; t < sizeof(route_tables) / sizeof(route_tables[0]); t++) {
        for (const struct api_route *r = route_tables[t]; r->pattern; r++) {
            if (!match(rq, r->pattern, rq->path))
                continue;
            if (strcmp(r->method, rq->method) == 0)
                return r->handler(rq);
            if (!strstr(allow, r->method)) {
                size_t len = strlen(allow);
                snprintf(allow + len, sizeof(allow) - len, "%s%s", len ? ", " : "", r->method);
            }
        }
    }
    char detail[300];
    if (allow[0]) {
        snprintf(detail, sizeof(detail), "method %s is not allowed here; use %s", rq->method,
                 allow);
        cJSON *o = error_body(rq->conn, "method not allowed", detail);
        send_json(rq->conn, 405, o, "Allow", allow); /* RFC 9110: a 405 names the methods */
        cJSON_Delete(o);
        return 405;
    }
    snprintf(detail, sizeof(detail), "no route for %s %.200s", rq->method, rq->path);
    api_send_error(rq->conn, 404, "not found", detail);
    return 404;
}

/* Compares in time independent of where the first difference is. */
static int token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = la != lb;
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return diff == 0;
}

static int authorized(struct api_req *rq)
{
    const char *token = rq->ctx->cfg->http_auth_token;
    if (!token || !*token)
        return 1;
    if (strcmp(rq->path, "/health") == 0)
        return 1;
    const char *h = mg_get_header(rq->conn, "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0 && token_equal(h + 7, token))
        return 1;
    cJSON *o = error_body(rq->conn, "unauthorized",
                          h ? "the bearer token is not valid"
                            : "this endpoint needs an Authorization: Bearer <token> header");
    send_json(rq->conn, 401, o, "WWW-Authenticate", "Bearer realm=\"flowd\"");
    cJSON_Delete(o);
    return 0;
}

static int handle_any(struct mg_connection *conn, void *cbdata)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    struct api_req rq;
    memset(&rq, 0, sizeof(rq));
    rq.conn = conn;
    rq.ctx = cbdata;
    rq.method = ri->request_method;
    rq.path = ri->local_uri ? ri->local_uri : "/";
    rq.query = ri->query_string;
    if (!authorized(&rq))
        return 401;
    int status = route(&rq);
    FLOWD_LOG(LOG_DEBUG, LOG_SUB_HTTP, "%s %s -> %d", rq.method, rq.path, status);
    return status;
}

/* Errors civetweb answers itself (headers too large, bad request line...): the JSON shape. */
static int http_error(struct mg_connection *conn, int status, const char *errmsg)
{
    char detail[256];
    if (status == 413 || status == 431)
        snprintf(detail, sizeof(detail), "the request line and headers are over the limit");
    else
        snprintf(detail, sizeof(detail), "%.200s", errmsg && *errmsg ? errmsg : "bad request");
    cJSON *o = error_body(conn, status_word(status), detail);
    char *text = json_print(o);
    cJSON_Delete(o);
    /* civetweb may not have parsed the request: write the response whole, and close */
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
              "Connection: close\r\n\r\n%s\n",
              status, status_word(status), strlen(text) + 1, text);
    free(text);
    return 0;
}

static int log_message(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    FLOWD_LOG(LOG_WARN, LOG_SUB_HTTP, "%s", message);
    return 1;
}

/* 127.0.0.0/8, ::1 and "localhost" are loopback. */
static int is_loopback(const char *bind)
{
    if (strcmp(bind, "localhost") == 0)
        return 1;
    struct in_addr a4;
    if (inet_pton(AF_INET, bind, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, bind, &a6) == 1)
        return memcmp(&a6, &in6addr_loopback, sizeof(a6)) == 0;
    return 0;
}

struct api *api_start(const struct flowd_config *cfg,
                      const struct api_backend *backend,
                      char *errstr,
                      size_t errstr_size)
{
    if ((!cfg->http_auth_token || !*cfg->http_auth_token) && !is_loopback(cfg->http_bind)) {
        flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                     "http.bind is %s, not a loopback address: set http.auth-token so that the "
                     "API is not open to the network",
                     cfg->http_bind);
        return NULL;
    }
    struct api *api = flowd_xcalloc(1, sizeof(*api));
    api->ctx.be = *backend;
    api->ctx.cfg = cfg;

    char ports[300], maxreq[32], threads[32], keep_ms[32];
    const char *bind = cfg->http_bind;
    int v6 = strchr(bind, ':') != NULL;
    snprintf(ports, sizeof(ports), "%s%s%s:%lld", v6 ? "[" : "", bind, v6 ? "]" : "",
             (long long)cfg->http_port);
    snprintf(maxreq, sizeof(maxreq), "%lld", (long long)cfg->http_max_header);
    snprintf(threads, sizeof(threads), "%lld", (long long)cfg->http_threads);
    snprintf(keep_ms, sizeof(keep_ms), "%lld", (long long)cfg->http_keep_alive_ms);
    const char *options[] = {"listening_ports",
                             ports,
                             "num_threads",
                             threads,
                             "request_timeout_ms",
                             "30000",
                             "enable_keep_alive",
                             cfg->http_keep_alive_ms ? "yes" : "no",
                             "keep_alive_timeout_ms",
                             keep_ms,
                             "tcp_nodelay",
                             "1",
                             "max_request_size",
                             maxreq,
                             NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    cb.log_message = log_message;
    cb.http_error = http_error;
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
    mg_set_request_handler(api->mg, "/", handle_any, &api->ctx);
    FLOWD_LOG(LOG_INFO, LOG_SUB_HTTP, "serving HTTP on %s (%s)", ports,
              cfg->http_auth_token && *cfg->http_auth_token ? "bearer token required"
                                                            : "no authentication");
    return api;
}

void api_stop(struct api *api)
{
    if (!api)
        return;
    mg_stop(api->mg);
    free(api);
}
