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

/* Each returns 0 or a flowd_err (INVAL -> 400, NOTFOUND -> 404, TOOBIG -> 413, AGAIN -> 503,
 * other -> 500) with errstr; on success *out (may be NULL) is the response body, taken by the API. */
struct api_backend {
    void *ctx;
    /* Validates and stores a definition. *created says whether a new version was made. */
    int (*deploy)(void *ctx, const char *json, size_t len, cJSON **out, int *created, char *errstr,
                  size_t errstr_size);
    /* Starts the latest version of key with data (taken; an object). */
    int (*start)(void *ctx, const char *key, cJSON *data, cJSON **out, char *errstr,
                 size_t errstr_size);
    /* Instance view with its history. */
    int (*get_instance)(void *ctx, int64_t id, cJSON **out, char *errstr, size_t errstr_size);
    /* 0 when Kafka and the store are usable; else errstr says which is not. */
    int (*ready)(void *ctx, char *errstr, size_t errstr_size);
};

struct api;

/* Binds cfg->http_bind:cfg->http_port and serves. NULL with errstr on failure (port in use...). */
struct api *api_start(const struct flowd_config *cfg,
                      const struct api_backend *backend,
                      char *errstr,
                      size_t errstr_size);
void api_stop(struct api *api);

#endif
