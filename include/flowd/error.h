/* error.h - return codes of the connector SDK, and flowd_error_t, the error a handler returns.
 *
 * Every SDK function that can fail returns int: FLOWD_OK (0) or a negative enum flowd_err.
 * The values are those of the flowd daemon (src/common/err.h), so a code means the same thing
 * on both sides of the wire. Constructors return NULL and write a sentence into errstr.
 */
#ifndef FLOWD_PUBLIC_ERROR_H
#define FLOWD_PUBLIC_ERROR_H

#include "version.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Size to give every errstr buffer (rd_kafka_conf_set style). */
#ifndef FLOWD_ERRSTR_SIZE
#define FLOWD_ERRSTR_SIZE 256
#endif

/** Return codes. Values are identical to the daemon's (src/common/err.h). */
enum flowd_err {
    FLOWD_OK = 0,
    FLOWD_ERR_NOMEM = -1,    /**< out of memory */
    FLOWD_ERR_INVAL = -2,    /**< bad argument or configuration: errstr says which */
    FLOWD_ERR_AGAIN = -3,    /**< transient: try again later */
    FLOWD_ERR_NOTFOUND = -4, /**< no such property / topic / header */
    FLOWD_ERR_IO = -5,       /**< file system failure */
    FLOWD_ERR_STATE = -6,    /**< the object is in a state that refuses the call */
    FLOWD_ERR_NOWAIT = -7,   /**< (daemon only) no node waits for this message */
    FLOWD_ERR_TOOBIG = -8,   /**< input above a configured limit */
    FLOWD_ERR_KAFKA = -9,    /**< Kafka client failure */
    FLOWD_ERR_EXISTS = -10,  /**< already present (e.g. a second handler for one topic) */
};

/**
 * @brief A short, static, human-readable name for a return code ("out of memory"...).
 * @remark Thread-safe. Never returns NULL.
 */
FLOWD_EXPORT const char *flowd_strerror(int err);

/** An error a handler returns: a message, a short machine code, and how to treat it. */
typedef struct flowd_error flowd_error_t;

/** How the SDK treats a handler error. */
enum flowd_error_kind {
    /** Worth trying again (legacy system down, timeout, HTTP 5xx): the SDK calls the handler
     *  again after an exponential backoff with jitter, up to retry.max.attempts; when the
     *  attempts are exhausted it publishes an error reply (see FLOWD_ERROR_FATAL). */
    FLOWD_ERROR_RETRIABLE = 1,
    /** Trying again cannot help (bad request, unknown customer): the SDK publishes an error
     *  reply at once, {"errorMessage": msg, "errorCode": code, ...} plus an `errorMessage`
     *  header, which the process routes on (`data.<keyName>.errorMessage != null`). */
    FLOWD_ERROR_FATAL = 2,
};

/**
 * @brief Creates an error for a handler to return.
 * @param kind FLOWD_ERROR_RETRIABLE or FLOWD_ERROR_FATAL.
 * @param code short machine-readable code copied into the reply's "errorCode"
 *             (e.g. "LEGACY_HTTP_503"); NULL gives "ERROR".
 * @param fmt  printf format of the human-readable message ("errorMessage").
 * @returns a new error. Never NULL: when memory is short it returns a shared, static
 *          retriable "out of memory" error (which flowd_error_destroy() ignores), so a handler
 *          can always `return flowd_error_new(...)`.
 * @remark Ownership: the handler returns it and the SDK frees it; anywhere else free it with
 *         flowd_error_destroy(). Thread-safe.
 */
FLOWD_EXPORT flowd_error_t *
flowd_error_new(enum flowd_error_kind kind, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** @brief Same as flowd_error_new(FLOWD_ERROR_RETRIABLE, ...). */
#define flowd_error_retriable(code, ...) flowd_error_new(FLOWD_ERROR_RETRIABLE, code, __VA_ARGS__)
/** @brief Same as flowd_error_new(FLOWD_ERROR_FATAL, ...). */
#define flowd_error_fatal(code, ...) flowd_error_new(FLOWD_ERROR_FATAL, code, __VA_ARGS__)

/** @brief The machine code ("ERROR" by default). Borrowed; valid until the error is freed. */
FLOWD_EXPORT const char *flowd_error_code(const flowd_error_t *error);
/** @brief The message. Borrowed; valid until the error is freed. */
FLOWD_EXPORT const char *flowd_error_message(const flowd_error_t *error);
/** @brief 1 if the SDK will retry this error, else 0. */
FLOWD_EXPORT int flowd_error_is_retriable(const flowd_error_t *error);
/** @brief 1 if this error becomes an error reply at once, else 0. */
FLOWD_EXPORT int flowd_error_is_fatal(const flowd_error_t *error);
/**
 * @brief Frees an error (NULL and the static out-of-memory error are ignored).
 * @remark Do not call it on an error returned from a handler: the SDK owns that one.
 */
FLOWD_EXPORT void flowd_error_destroy(flowd_error_t *error);

/**
 * @brief Replaces the allocator the SDK uses for everything it allocates itself (not what
 *        librdkafka allocates), e.g. to test out-of-memory paths (libuv uv_replace_allocator).
 * @returns FLOWD_OK, or FLOWD_ERR_INVAL when a function is NULL.
 * @remark Call it before any other SDK function, from one thread, while no SDK object exists.
 *         Memory the SDK hands to the caller is released through the SDK (never with free()).
 */
FLOWD_EXPORT int flowd_replace_allocator(void *(*malloc_fn)(size_t),
                                         void *(*realloc_fn)(void *, size_t),
                                         void (*free_fn)(void *));

#ifdef __cplusplus
}
#endif
#endif
