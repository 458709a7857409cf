/* api.h - flowd's HTTP/JSON API (civetweb). The API owns no state: it calls a backend that the
 * daemon provides, so every route can be tested against any backend.
 *
 * Errors are JSON `{"error": short, "detail": sentence, "path": request path}`.
 * @thread Backend functions are called from civetweb worker threads, concurrently.
 */
#ifndef FLOWD_API_H
#define FLOWD_API_H

#include "../common/config.h"
#include "../common/json.h"

#include <stddef.h>
#include <stdint.h>

/* Filters and page of GET /v1/instances. Zero/NULL: no filter. */
struct api_instance_query {
    const char *state;
    const char *def_key;
    int64_t from_ms, to_ms; /* started in [from, to) */
    int64_t before_id;      /* paging cursor */
    int limit;              /* 1..1000 */
};

/* Each returns 0 or a flowd_err (INVAL -> 400, NOTFOUND -> 404, STATE -> 409, TOOBIG -> 413,
 * AGAIN -> 503, other -> 500) with errstr; on success *out (may be NULL) is the response body,
 * taken by the API. */
struct api_backend {
    void *ctx;
    /* Validates and stores a definition. *created says whether a new version was made. */
    int (*deploy)(void *ctx,
                  const char *json,
                  size_t len,
                  cJSON **out,
                  int *created,
                  char *errstr,
                  size_t errstr_size);
    /* Starts version `version` of key (0: the latest) with data (taken; an object). */
    int (*start)(void *ctx,
                 const char *key,
                 int version,
                 cJSON *data,
                 cJSON **out,
                 char *errstr,
                 size_t errstr_size);
    /* Instance view with its history. */
    int (*get_instance)(void *ctx, int64_t id, cJSON **out, char *errstr, size_t errstr_size);
    /* 0 when Kafka and the store are usable; else errstr says which is not. */
    int (*ready)(void *ctx, char *errstr, size_t errstr_size);

    /* Parses and checks a definition without deploying it: {"valid":true,"key","name","nodes"}. */
    int (*validate)(
        void *ctx, const char *json, size_t len, cJSON **out, char *errstr, size_t errstr_size);
    /* {"definitions":[{"key","name","latestVersion","versions":[{"version","uuid","createdAt"}]}]}
     */
    int (*list_definitions)(void *ctx, cJSON **out, char *errstr, size_t errstr_size);
    /* One version (0 = latest): {"key","version","uuid","createdAt","definition":{...}}. */
    int (*get_definition)(
        void *ctx, const char *key, int version, cJSON **out, char *errstr, size_t errstr_size);
    /* {"instances":[summary...],"next":id|null} (next: pass as before_id for the next page). */
    int (*list_instances)(void *ctx,
                          const struct api_instance_query *q,
                          cJSON **out,
                          char *errstr,
                          size_t errstr_size);
    /* {"id","history":[...]} */
    int (*get_history)(void *ctx, int64_t id, cJSON **out, char *errstr, size_t errstr_size);
    /* Cancels (TERMINATED). reason may be NULL. -> instance view; FLOWD_ERR_STATE if ended. */
    int (*cancel)(
        void *ctx, int64_t id, const char *reason, cJSON **out, char *errstr, size_t errstr_size);
    /* Retries a FAILED instance (patch: data to merge, or NULL; borrowed) or its incidents. */
    int (*retry)(
        void *ctx, int64_t id, const cJSON *patch, cJSON **out, char *errstr, size_t errstr_size);
    /* Publishes body (borrowed) as a reply to the instance's waiting node (or node), on topic
     * (NULL: the node's first data stream topic), through Kafka like a connector's reply. */
    int (*deliver)(void *ctx,
                   int64_t id,
                   const char *node,
                   const char *topic,
                   const cJSON *body,
                   cJSON **out,
                   char *errstr,
                   size_t errstr_size);
    /* {"deadLetters":[...],"next":id|null}, newest first. */
    int (*list_dead_letters)(
        void *ctx, int64_t before_id, int limit, cJSON **out, char *errstr, size_t errstr_size);
    /* Re-publishes dead letter id to its original topic. */
    int (*replay)(void *ctx, int64_t id, cJSON **out, char *errstr, size_t errstr_size);
    /* Prometheus text; *text is malloc'ed. */
    int (*metrics)(void *ctx, char **text, char *errstr, size_t errstr_size);
};

struct api;

/* Binds cfg->http_bind:cfg->http_port and serves. NULL with errstr on failure (port in use...). */
struct api *api_start(const struct flowd_config *cfg,
                      const struct api_backend *backend,
                      char *errstr,
                      size_t errstr_size);
void api_stop(struct api *api);

#endif
