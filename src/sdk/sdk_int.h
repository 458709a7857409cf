/* sdk_int.h - internals of the connector SDK, shared by the files of src/sdk and its unit tests.
 *
 * Nothing here is exported from the shared library (-fvisibility=hidden); the unit tests link
 * the static library and reach these through this header. Internal functions are flowd__*.
 */
#ifndef FLOWD_SDK_INT_H
#define FLOWD_SDK_INT_H

#include "../../include/flowd/flowd.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

/* ---- memory: everything goes through the replaceable allocator ------------------------- */
void *flowd__malloc(size_t size);
void *flowd__calloc(size_t n, size_t size);
void *flowd__realloc(void *ptr, size_t size);
void flowd__free(void *ptr);
char *flowd__strdup(const char *s);
char *flowd__strndup(const char *s, size_t n);
/* printf into a new string (flowd__free it), NULL when out of memory. */
char *flowd__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int flowd__seterr(char *errstr, size_t errstr_size, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- JSON ----------------------------------------------------------------------------- */
/* 1 if exactly len bytes are one JSON value (RFC 8259, nesting up to 512), else 0. No
 * allocation. */
int flowd__json_valid(const char *s, size_t len);
/* The error reply body: {"errorMessage":msg,"errorCode":code,"retriable":r,"attempts":n}.
 * Returns a new string (flowd__free) and its length in *len, NULL when out of memory. */
char *flowd__error_reply_json(
    const char *code, const char *msg, int retriable, int attempts, size_t *len);

/* ---- messageId set with FIFO eviction ------------------------------------------------- */
struct flowd__idset;
struct flowd__idset *flowd__idset_new(size_t cap);
/* 1: added (was not there), 0: already there, FLOWD_ERR_NOMEM. */
int flowd__idset_add(struct flowd__idset *set, const char *id);
int flowd__idset_has(const struct flowd__idset *set, const char *id);
void flowd__idset_free(struct flowd__idset *set);

/* ---- retries ---------------------------------------------------------------------------- */
/* Delay before retry number `retry` (1 = first retry): base * 2^(retry-1) capped at max, of
 * which the fraction jitter is random. *rng is a xorshift state. */
long flowd__backoff_ms(int retry, long base_ms, long max_ms, double jitter, uint64_t *rng);
/* The default dead-letter topic for a reply topic (see connector.h). */
int flowd__dlq_default(const char *reply_topic, char *out, size_t size);
/* The worker of a key: stable FNV-1a hash modulo n. */
unsigned flowd__worker_for(const char *key, size_t len, unsigned n);

/* ---- requests in flight ---------------------------------------------------------------- */
enum flowd__item_kind {
    FLOWD__ITEM_REQUEST = 0, /* goes to a worker, gets a reply */
    FLOWD__ITEM_DLQ = 1,     /* poison: copied to the dead-letter topic */
    FLOWD__ITEM_SKIP = 2,    /* duplicate: acknowledged at once */
};

struct flowd__handler;
struct flowd__part;
struct flowd_conn;

/* One consumed message, from consume to commit. It is the flowd_request_t handlers see. */
struct flowd_request {
    struct flowd__item_link {
        struct flowd_request *next; /* worker queue or redo list */
    } link;
    struct flowd_conn *conn;
    struct flowd__part *part;
    int64_t offset;
    int acked; /* under conn->lock: the reply (or DLQ copy) is acknowledged */
    int kind;
    const struct flowd__handler *handler;
    char *key;
    size_t key_len;
    char *body; /* NUL-terminated copy */
    size_t body_len;
    rd_kafka_headers_t *headers; /* the request's, owned */
    const char *instance_id;     /* points into the header cache below */
    const char *message_id;
    char *hdr_cache; /* "name\0value\0" for each request header, in order */
    size_t hdr_count;
    int attempt;
    /* the outcome, set by the worker */
    const char *out_topic;
    char *reply;
    size_t reply_len;
    rd_kafka_headers_t *extra; /* added by the handler */
    char *error_message;       /* set for error replies: becomes the errorMessage header */
    const char *dlq_reason;
};
typedef struct flowd_request flowd__item_t;

void flowd__item_free(flowd__item_t *item);

/* Offsets of one partition, in consume order, until committed. */
struct flowd__part {
    struct flowd__part *next;
    char *topic;
    int32_t partition;
    flowd__item_t **ring;
    size_t cap, head, n;
    int64_t commit_next; /* next offset to commit (offset after the last acked prefix), -1 */
    int64_t committed;   /* last commit_next committed, -1 */
    int revoked;
};

struct flowd__part *flowd__part_new(const char *topic, int32_t partition);
int flowd__part_push(struct flowd__part *part, flowd__item_t *item);
/* Pops and frees the acknowledged prefix; updates commit_next. Returns items popped. */
size_t flowd__part_advance(struct flowd__part *part);
void flowd__part_free(struct flowd__part *part); /* frees the items still held too */

/* ---- configuration (sdk_conf.c) -------------------------------------------------------- */
struct flowd__handler {
    struct flowd__handler *next;
    char *topic;
    char *reply_topic; /* NULL: conf->reply_topic */
    flowd_handler_fn *fn;
    void *opaque;
};

enum flowd__kv_scope { FLOWD__KV_BOTH = 0, FLOWD__KV_CONSUMER = 1, FLOWD__KV_PRODUCER = 2 };

struct flowd__kv {
    struct flowd__kv *next;
    char *name; /* the librdkafka name */
    char *value;
    int scope;
};

struct flowd_conf {
    char *bootstrap_servers;
    char *bootstrap_file;
    char *group_id;
    char *reply_topic;
    char *dlq_topic;
    long bootstrap_wait_ms;
    long concurrency;
    long retry_max_attempts;
    long retry_backoff_ms;
    long retry_backoff_max_ms;
    double retry_jitter;
    long dedup_size;
    long max_in_flight;
    long commit_interval_ms;
    long shutdown_timeout_ms;
    int handle_signals;
    struct flowd__kv *kafka; /* in the order set */
    struct flowd__handler *handlers;
    flowd_log_cb *log_cb;
    int log_level;
    void *log_opaque;
};

/* Finds the handler of a topic, NULL if none. */
const struct flowd__handler *flowd__conf_handler(const struct flowd_conf *conf, const char *topic);

#endif
