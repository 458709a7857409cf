/* connector.h - the connector SDK: consume requests from flowd, call a handler, publish replies.
 *
 * A connector is a small service between a flowd process and a legacy system. The SDK does
 * the Kafka side of the wire contract (docs/connectors.md) so that a connector is one handler:
 *
 *   static flowd_error_t *on_request(flowd_request_t *req, void *opaque)
 *   {
 *       size_t len;
 *       const char *body = flowd_request_body(req, &len);
 *       ...call the legacy system...
 *       if (legacy_down)
 *           return flowd_error_retriable("LEGACY_DOWN", "legacy system: %s", why);
 *       return flowd_request_reply(req, reply_json, reply_len) ? flowd_error_retriable(...) : NULL;
 *   }
 *
 *   flowd_conf_t *conf = flowd_conf_new();
 *   flowd_conf_set(conf, "bootstrap.file", "/var/lib/flowd/kafka.bootstrap", errstr, sizeof
 * errstr); flowd_conf_set(conf, "reply.topic", "ai.flowx.dev.engine.receive.scoring.v1", errstr,
 * ...); flowd_conf_add_handler(conf, "ai.flowx.dev.connector.scoring.in.v1", on_request, NULL,
 * ...); flowd_conn_t *conn = flowd_conn_new(conf, errstr, sizeof errstr); flowd_conn_run(conn);
 * (returns after SIGTERM/SIGINT or flowd_conn_stop()) flowd_conn_destroy(conn);
 *
 * What the SDK guarantees: every request header is copied onto the reply, which is keyed like
 * the request; a request's offset is committed only after its reply (or dead-letter copy) is
 * acknowledged by Kafka, per partition and in order, so a crash loses nothing (the request comes
 * again); requests whose messageId was already seen are dropped; requests of one process
 * instance are handled one at a time and in order (one worker per instance, chosen by hash).
 */
#ifndef FLOWD_PUBLIC_CONNECTOR_H
#define FLOWD_PUBLIC_CONNECTOR_H

#include "error.h"
#include "version.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Configuration, built before the connector starts. */
typedef struct flowd_conf flowd_conf_t;
/** A running connector. */
typedef struct flowd_conn flowd_conn_t;
/** One request, as a handler sees it. */
typedef struct flowd_request flowd_request_t;

/** Log levels (syslog numbers, as librdkafka uses them). */
enum flowd_log_level {
    FLOWD_LOG_ERROR = 3,
    FLOWD_LOG_WARNING = 4,
    FLOWD_LOG_INFO = 6,
    FLOWD_LOG_DEBUG = 7,
};

/**
 * @brief Receives the SDK's (and librdkafka's) log lines. The SDK never prints by itself.
 * @param opaque as given to flowd_conf_set_log_cb().
 * @param level  an enum flowd_log_level.
 * @param msg    one line without a newline; borrowed for the duration of the call.
 * @remark Called from any thread (workers, librdkafka's threads), possibly concurrently: it
 *         must be thread-safe and must not call back into the SDK.
 */
typedef void flowd_log_cb(void *opaque, int level, const char *msg);

/**
 * @brief A request handler.
 * @param req    the request; borrowed, valid until the handler returns.
 * @param opaque as given to flowd_conf_add_handler().
 * @returns NULL on success, after setting the reply with flowd_request_reply() (no reply set
 *          means the reply `{}`); or an error from flowd_error_new(), which the SDK takes
 *          ownership of: retriable errors are retried with backoff, fatal ones (and retriable
 *          ones out of attempts) become error replies.
 * @remark Called from a worker thread: handlers of different instances run concurrently
 *         (`concurrency` workers); the requests of one process instance never do, and come
 *         in order. A handler may block (HTTP calls, file waits); it should give up when
 *         flowd_request_stopping() becomes 1.
 */
typedef flowd_error_t *flowd_handler_fn(flowd_request_t *req, void *opaque);

/* ---- configuration ------------------------------------------------------------------- */

/**
 * @brief Creates a configuration with every property at its default.
 * @returns a new configuration, or NULL when out of memory.
 * @remark Free with flowd_conf_destroy(), unless flowd_conn_new() took it. Not thread-safe:
 *         configure from one thread.
 *
 * Properties (flowd_conf_set() names; values are strings):
 * | name                     | default                        | meaning |
 * |--------------------------|--------------------------------|---------|
 * | bootstrap.servers        | (none)                         | "host:port,..." of the Kafka
 * cluster | | bootstrap.file           | (none)                         | file holding it, e.g.
 * <flowd data-dir>/kafka.bootstrap (the embedded cluster); read by flowd_conn_new(), which waits
 * for it up to bootstrap.file.wait.ms | | bootstrap.file.wait.ms   | 30000 | see above | | group.id
 * | flowd-connector                | Kafka consumer group: connectors of one kind share it | |
 * reply.topic              | (required)                     | where replies go; must match flowd's
 * engine pattern, e.g. ai.flowx.dev.engine.receive.scoring.v1 | | dlq.topic                |
 * <prefix>connector.dlq<suffix>  | dead-letter topic for poison requests: <prefix> is reply.topic
 * up to "engine.receive", <suffix> its trailing ".vN" (ai.flowx.dev.connector.dlq.v1);
 * "connector.dlq" when reply.topic has no "engine.receive" | | concurrency              | 4 |
 * worker threads (1..256) | | retry.max.attempts       | 5                              | handler
 * calls for one request, first included (1..1000) | | retry.backoff.ms         | 100 | delay before
 * the first retry; doubles each time | | retry.backoff.max.ms     | 10000 | cap of the delay | |
 * retry.jitter             | 0.5                            | fraction of each delay that is random
 * (0..1): delay = d*(1-j) + rand(0, d*j) | | dedup.size               | 100000 | messageIds
 * remembered to drop duplicates (0: off) | | max.in.flight            | 10000 | requests consumed
 * but not yet committed; consumption pauses above it | | commit.interval.ms       | 100 | how often
 * acknowledged offsets are committed | | shutdown.timeout.ms      | 30000 | on stop: how long to
 * wait for in-flight replies to be acknowledged | | handle.signals           | true |
 * flowd_conn_run() stops gracefully on SIGTERM and SIGINT | | kafka.<property>         | | any
 * librdkafka property, set on the consumer and the producer (e.g. kafka.security.protocol) | |
 * kafka.consumer.<prop>    |                                | a librdkafka property for the
 * consumer only | | kafka.producer.<prop>    |                                | a librdkafka
 * property for the producer only |
 */
FLOWD_EXPORT flowd_conf_t *flowd_conf_new(void);

/**
 * @brief Sets a property (see flowd_conf_new() for the list).
 * @returns FLOWD_OK; FLOWD_ERR_NOTFOUND for an unknown name, FLOWD_ERR_INVAL for a bad value
 *          (errstr says which and why), FLOWD_ERR_NOMEM.
 * @remark Copies name and value. Not thread-safe.
 */
FLOWD_EXPORT int flowd_conf_set(
    flowd_conf_t *conf, const char *name, const char *value, char *errstr, size_t errstr_size);

/**
 * @brief Reads a property back (defaults included) into buf.
 * @returns FLOWD_OK, FLOWD_ERR_NOTFOUND for an unknown or unset name, FLOWD_ERR_TOOBIG when
 *          buf is too small (buf then holds a truncated, NUL-terminated value).
 */
FLOWD_EXPORT int flowd_conf_get(const flowd_conf_t *conf, const char *name, char *buf, size_t size);

/**
 * @brief Sets the log callback (default: none, the SDK is silent) and the most verbose level
 *        passed to it (default FLOWD_LOG_INFO).
 */
FLOWD_EXPORT void
flowd_conf_set_log_cb(flowd_conf_t *conf, flowd_log_cb *log_cb, int max_level, void *opaque);

/**
 * @brief Registers the handler of a request topic; the connector subscribes to every topic
 *        that has a handler.
 * @param topic       the request topic, e.g. ai.flowx.dev.connector.scoring.in.v1.
 * @param reply_topic where this topic's replies go; NULL: the reply.topic property.
 * @returns FLOWD_OK, FLOWD_ERR_EXISTS when the topic already has a handler, FLOWD_ERR_INVAL,
 *          FLOWD_ERR_NOMEM.
 * @remark Copies the strings; opaque is passed to every call of handler, from worker threads.
 */
FLOWD_EXPORT int flowd_conf_add_handler(flowd_conf_t *conf,
                                        const char *topic,
                                        const char *reply_topic,
                                        flowd_handler_fn *handler,
                                        void *opaque,
                                        char *errstr,
                                        size_t errstr_size);

/** @brief Frees a configuration (NULL is ignored). */
FLOWD_EXPORT void flowd_conf_destroy(flowd_conf_t *conf);

/* ---- the connector -------------------------------------------------------------------- */

/**
 * @brief Validates the configuration and creates the Kafka clients.
 * @returns the connector, or NULL with errstr set (no handler, no reply.topic, no bootstrap,
 *          bootstrap.file still missing after bootstrap.file.wait.ms, a librdkafka property
 *          refused...).
 * @remark Takes ownership of conf on success only (on failure the caller still frees it).
 */
FLOWD_EXPORT flowd_conn_t *flowd_conn_new(flowd_conf_t *conf, char *errstr, size_t errstr_size);

/**
 * @brief Runs the connector: subscribes, dispatches requests to the workers, publishes
 *        replies and commits, until flowd_conn_stop() (or SIGTERM/SIGINT when handle.signals).
 *        Then stops gracefully: stops consuming, lets the handlers in progress finish,
 *        waits up to shutdown.timeout.ms for their replies to be acknowledged, commits, and
 *        leaves the consumer group. Requests not yet handled are not committed: they come
 *        again to the next member of the group.
 * @returns FLOWD_OK after a graceful stop, FLOWD_ERR_KAFKA on a fatal Kafka error,
 *          FLOWD_ERR_STATE when called twice, FLOWD_ERR_NOMEM.
 * @remark Blocks the calling thread. Call it once per connector.
 */
FLOWD_EXPORT int flowd_conn_run(flowd_conn_t *conn);

/**
 * @brief Asks flowd_conn_run() to stop gracefully, and returns at once.
 * @remark Thread-safe and async-signal-safe (it only sets a flag).
 */
FLOWD_EXPORT void flowd_conn_stop(flowd_conn_t *conn);

/** Counters, for metrics. All are totals since flowd_conn_new() except in_flight. */
struct flowd_conn_stats {
    uint64_t received;          /**< requests consumed */
    uint64_t handler_calls;     /**< handler invocations, retries included */
    uint64_t retries;           /**< handler invocations after a retriable error */
    uint64_t replies;           /**< replies acknowledged by Kafka, error replies included */
    uint64_t error_replies;     /**< of which error replies */
    uint64_t duplicates;        /**< requests dropped because their messageId was seen */
    uint64_t dead_letters;      /**< poison requests acknowledged on the dead-letter topic */
    uint64_t delivery_failures; /**< produce attempts that failed (they are retried) */
    uint64_t commits;           /**< successful offset commits */
    uint64_t in_flight;         /**< consumed and not yet committed, now */
};

/**
 * @brief Copies the counters into stats.
 * @remark Thread-safe; cheap (relaxed atomic reads), may be called while running.
 */
FLOWD_EXPORT void flowd_conn_get_stats(const flowd_conn_t *conn, struct flowd_conn_stats *stats);

/**
 * @brief Frees a connector. Call it after flowd_conn_run() returned (or instead of running).
 *        NULL is ignored.
 */
FLOWD_EXPORT void flowd_conn_destroy(flowd_conn_t *conn);

/* ---- inside a handler ----------------------------------------------------------------- */

/**
 * @brief The request body (JSON, checked by the SDK before the handler is called).
 * @param len if not NULL, receives the length in bytes.
 * @returns borrowed, NUL-terminated; valid until the handler returns.
 */
FLOWD_EXPORT const char *flowd_request_body(const flowd_request_t *req, size_t *len);

/**
 * @brief The last value of a request header, NUL-terminated, or NULL when absent.
 * @returns borrowed; valid until the handler returns.
 */
FLOWD_EXPORT const char *flowd_request_header(const flowd_request_t *req, const char *name);

/** @brief The `processInstanceId` header (or processInstanceUuid when absent). Borrowed. */
FLOWD_EXPORT const char *flowd_request_instance_id(const flowd_request_t *req);
/** @brief The `messageId` header, or NULL. Borrowed. */
FLOWD_EXPORT const char *flowd_request_message_id(const flowd_request_t *req);
/** @brief The topic the request came from. Borrowed. */
FLOWD_EXPORT const char *flowd_request_topic(const flowd_request_t *req);
/** @brief Which call of the handler this is for this request: 1, then 2 on the first retry... */
FLOWD_EXPORT int flowd_request_attempt(const flowd_request_t *req);
/** @brief 1 once the connector is stopping: a long handler should return (a retriable error
 *         is fine: the request is not committed and comes again). Thread-safe. */
FLOWD_EXPORT int flowd_request_stopping(const flowd_request_t *req);

/**
 * @brief Sets the reply body (JSON). Calling it again replaces the previous body.
 * @returns FLOWD_OK, FLOWD_ERR_INVAL when json is not valid JSON, FLOWD_ERR_NOMEM.
 * @remark Copies json. Only from the handler, for its own request.
 */
FLOWD_EXPORT int flowd_request_reply(flowd_request_t *req, const char *json, size_t len);

/**
 * @brief Adds a header to the reply, after the copies of the request's headers.
 * @returns FLOWD_OK, FLOWD_ERR_INVAL, FLOWD_ERR_NOMEM.
 * @remark Copies name and value. Only from the handler, for its own request.
 */
FLOWD_EXPORT int
flowd_request_add_reply_header(flowd_request_t *req, const char *name, const char *value);

#ifdef __cplusplus
}
#endif
#endif
