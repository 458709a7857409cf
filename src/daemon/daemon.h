/* daemon.h - the flowd process: wiring of config, store, bus, engine and API, and the loop that
 * turns consumed batches into one store transaction each.
 *
 * Threads: the loop thread owns the write store handle, the bus, the definition registry and the
 * instance cache. HTTP threads hand deploys and starts to the loop through the request queue
 * (struct daemon.q_*) and wait for the result; they read instances through their own store handle
 * (read_st, under read_lock).
 */
#ifndef FLOWD_DAEMON_H
#define FLOWD_DAEMON_H

#include "../bus/bus.h"
#include "../common/config.h"
#include "../common/err.h"
#include "../common/map.h"
#include "../engine/engine.h"
#include "../store/store.h"

#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdatomic.h>

/* Instance ids are unique across engine nodes: the node id (engine.node-id, 0..1023) in the bits
 * above 40, a per-node sequence below. Node 0 numbers 1, 2, 3...; every id stays below 2^53, so
 * JSON readers that use doubles (JavaScript) read it exactly. */
#define INSTANCE_ID_NODE_SHIFT 40

/* ---- definitions: key -> versions ---- */
struct registry_entry {
    char *key;
    struct engine_def **versions; /* index v-1 holds version v (NULL if unknown) */
    int nversions;
};

struct registry {
    struct registry_entry *entries;
    size_t n, cap;
};

void registry_release(struct registry *reg);
/* Takes def (whose version is set). */
void registry_add(struct registry *reg, struct engine_def *def);
/* version 0 = latest. Borrowed or NULL. */
const struct engine_def *registry_get(const struct registry *reg, const char *key, int version);

/* ---- requests from HTTP threads to the loop ---- */
enum request_type {
    REQ_DEPLOY,
    REQ_START,
    /* backend.c (backend_run_request), inside the batch transaction: */
    REQ_CANCEL,  /* target_id = instance; text = reason or NULL */
    REQ_RETRY,   /* target_id = instance; data = patch for a FAILED one, or NULL */
    REQ_DELIVER, /* target_id = instance; data = body; topic, node: NULL = the waiting node's */
    REQ_REPLAY,  /* target_id = dead-letter (outbox row) id */
    REQ_STATS,   /* the loop's view for /metrics: waiting per node, backlog, consumer lag */
};

struct request {
    enum request_type type;
    struct request *next;
    /* in */
    struct engine_def *def; /* REQ_DEPLOY: parsed, taken by the loop */
    char *def_json;         /* REQ_DEPLOY: the text to store */
    char key[128];          /* REQ_START */
    int version;            /* REQ_START: 0 = the latest */
    cJSON *data;            /* REQ_START: taken by the loop */
    /* out */
    int rc;
    char errstr[FLOWD_ERRSTR_SIZE];
    cJSON *result;
    int created;
    int done;
    int64_t instance_id; /* REQ_START: set while in the batch */
    /* in, for the backend.c requests (borrowed from the caller; data is not taken) */
    int64_t target_id;
    const char *text;
    const char *topic;
    const char *node;
};

/* ---- a message leaving through the outbox ---- */
struct outgoing {
    int64_t outbox_id;
    int64_t instance_id;
    struct engine_message msg; /* owned */
};

/* instances that fall due (timers.c) */
struct timer_entry {
    int64_t due;
    int64_t id;
};

struct timer_heap {
    struct timer_entry *v;
    size_t n, cap;
};

struct counters {
    atomic_llong started, completed, failed, incidents, resent;
    atomic_llong received, duplicates, dead_lettered, sent;
    atomic_llong batches, batch_msgs, store_failures;
};

/* A Prometheus histogram with fixed bucket bounds (metrics.c). */
#define METRICS_MAX_BUCKETS 16
struct metrics_hist {
    const double *bounds; /* upper bounds, ascending; +Inf is implicit */
    size_t nbounds;
    atomic_llong buckets[METRICS_MAX_BUCKETS + 1]; /* per bucket, not cumulative */
    atomic_llong count;
    atomic_llong sum; /* observations are whole numbers (ms, messages) */
};

/* What the operating surface counts (metrics.c, backend.c). */
struct op_metrics {
    atomic_llong cancelled, retried, delivered, replayed, started_by_kafka;
    struct metrics_hist latency_ms; /* start to FINISHED, milliseconds */
    struct metrics_hist batch_size; /* consumed messages per transaction */
};

struct daemon {
    struct flowd_config *cfg;
    struct engine_env env;
    struct store_handle store;      /* loop thread */
    struct store_handle read_store; /* HTTP threads, under read_lock */
    pthread_mutex_t read_lock;
    struct bus *bus;
    struct registry reg;
    regex_t sub_re; /* cfg->subscription_regex, compiled */
    /* A shared store (PostgreSQL) may have other flowd nodes writing to it. Then the cache only
     * holds the instances the current batch locked (emptied after each batch), due instances are
     * claimed from the store, and the heap only says when to look. */
    int shared;
    int64_t poll_at_us;       /* shared: next look for due instances of other nodes */
    int64_t adopt_at_us;      /* shared: next look for outbox rows of nodes that are gone */
    int64_t defs_read_us;     /* shared: when the definitions were last read from the store */
    struct map cache;         /* instance id -> struct engine_instance* (STARTED only) */
    struct timer_heap timers; /* due times of cached instances */
    size_t trim_at;           /* cluster_trim's cursor */
    int64_t timer_err_us;     /* timers_fire: when a timer that cannot fire was last logged */
    int64_t next_seq;         /* instance ids: node_id << INSTANCE_ID_NODE_SHIFT | next_seq */

    /* request queue */
    pthread_mutex_t q_lock;
    pthread_cond_t q_done;
    struct request *q_head, *q_tail;
    int loop_done; /* under q_lock: the loop takes no more requests */

    /* delivered outbox ids, filled by the delivery callback, drained in the next batch */
    int64_t *sent_ids;
    size_t nsent, sent_cap;
    int resend_needed; /* a delivery failed: rescan unsent rows when idle */

    atomic_int store_ok;
    volatile sig_atomic_t stopping;
    struct counters n;
    struct op_metrics m;
};

/* loop.c */
void loop_run(struct daemon *d);
/* Queues a request and waits until the loop has answered it. */
void loop_submit(struct daemon *d, struct request *req);
/* Publishes unsent outbox rows (startup, and after failed deliveries). */
void loop_publish_unsent(struct daemon *d);
void loop_on_delivery(void *ctx, int64_t outbox_id, rd_kafka_resp_err_t err);

/* reply.c: one consumed message inside the batch transaction. Returns 0 (applied, duplicate or
 * dead-lettered) or a store error that must abort the batch. */
struct batch;
int reply_handle(struct daemon *d, struct batch *b, const rd_kafka_message_t *msg);

/* timers.c */
void timers_push(struct daemon *d, int64_t id, int64_t due);
int64_t timers_next(struct daemon *d);
size_t timers_take_due(struct daemon *d, int64_t now, int64_t *ids, size_t max);
void timers_release(struct daemon *d);
struct batch;
/* Inside a batch: fires what fell due for instance id (re-sends, timeout path, incident). */
int timers_fire(struct daemon *d, struct batch *b, int64_t id);

/* cluster.c: the batch's instances; a shared store (d->shared). */
/* Locks and caches the instances msgs are for, in id order. 0 or a store error. */
int cluster_prelock(struct batch *b, rd_kafka_message_t **msgs, size_t n);
/* Claims the instances that are due (SKIP LOCKED) and fires them. 0 or a store error. */
int cluster_claim_due(struct batch *b);
/* Drops the batch's instances from the cache (after its commit or rollback). */
void cluster_forget(struct daemon *d);
/* One node: evicts instances beyond engine.cache.max-instances (after a commit). */
void cluster_trim(struct daemon *d);
/* Between batches: adopts the outbox rows of nodes that are gone (shared); every 100 ms returns 1
 * when some instance in the store is due (time for cluster_claim_due). */
int cluster_tick(struct daemon *d);

/* recover.c */
int recover_load(struct daemon *d, char *errstr, size_t errstr_size);
/* The definition key/version (0 = latest) from the registry; with a shared store, on a miss the
 * definitions deployed through other nodes are read from the store first. NULL if unknown. */
const struct engine_def *defs_lookup(struct daemon *d, const char *key, int version);

/* backend.c: the api_backend the HTTP server calls. */
struct api_backend;
void backend_init(struct daemon *d, struct api_backend *be);
/* backend.c, on the loop thread inside the batch transaction: REQ_CANCEL, REQ_RETRY, REQ_DELIVER,
 * REQ_REPLAY and REQ_STATS. Sets r->rc/errstr or r->result. */
struct batch;
void backend_run_request(struct batch *b, struct request *r);

/* metrics.c */
void metrics_init(struct op_metrics *m);
void metrics_observe(struct metrics_hist *h, long long v);
/* Appends the Prometheus text exposition of d's counters, the store's instance counts (read
 * through the read store, under read_lock) and stats (the REQ_STATS result, may be NULL). */
struct buf;
void metrics_render(struct daemon *d, const cJSON *stats, struct buf *out);

#endif

/* ---- the batch being built inside one store transaction (loop.c) ---- */
struct batch {
    struct daemon *d;
    int64_t now;
    struct engine_instance **touched; /* written once each at the end of the batch */
    size_t ntouched, touched_cap;
    struct outgoing *out; /* published after the commit */
    size_t nout, out_cap;
    size_t requeued;          /* outbox rows marked unsent again (re-sends) */
    struct batch_call *calls; /* subprocess work queued by batch_apply (calls.c) */
    size_t ncalls, calls_head, calls_cap, calls_run;
    int draining;
};

/* calls.c: subprocess work inside a batch. */
enum batch_call_kind {
    BATCH_CALL_START,  /* id = parent; call = what to start */
    BATCH_CALL_DONE,   /* id = a child that ended: wake its parent */
    BATCH_CALL_CANCEL, /* id = a child whose parent (`parent`) ended: cancel it */
};
struct batch_call {
    enum batch_call_kind kind;
    int64_t id;
    int64_t parent;
    struct engine_call call;
};
/* Queues the subprocess work of fx (moving its calls out) for inst. */
void calls_queue(struct batch *b, struct engine_instance *inst, struct engine_effects *fx);
/* Runs the queued work until none is left (it may queue more). 0 or a store error. */
int calls_drain(struct batch *b);
/* Frees what is left in the queue (after a failure). */
void calls_release(struct batch *b);

/* Writes fx's history and messages (to the outbox) and marks inst to be saved; moves the messages
 * out of fx. */
int batch_apply(struct batch *b, struct engine_instance *inst, struct engine_effects *fx);
/* Publishes msg through the outbox after the commit; takes its fields (also on error). */
int batch_publish(struct batch *b, int64_t instance_id, struct engine_message *msg);
/* Starts the latest version of key with data (taken): *out is the new instance (in the cache,
 * saved with the batch). FLOWD_ERR_NOTFOUND for an unknown key, with errstr. */
int batch_start(struct batch *b,
                const char *key,
                int version,
                cJSON *data,
                struct engine_instance **out,
                char *errstr,
                size_t errstr_size);
/* Starts def (its version set) with data (taken) as a subprocess of parent (call call_id) or, with
 * parent NULL, as a top-level instance. *out as for batch_start. */
int batch_start_def(struct batch *b,
                    const struct engine_def *def,
                    cJSON *data,
                    struct engine_instance *parent,
                    const char *call_id,
                    struct engine_instance **out,
                    char *errstr,
                    size_t errstr_size);
/* Marks inst (not yet cached: e.g. a FAILED instance being retried) to be cached and saved. */
void batch_adopt(struct batch *b, struct engine_instance *inst);
/* Writes msg to the dead-letter topic (through the outbox) with headers reason and reasonDetail. */
int batch_dead_letter(struct batch *b,
                      const rd_kafka_message_t *msg,
                      int64_t instance_id,
                      const char *reason,
                      const char *detail);
/* Returns the STARTED instance id from the cache or the store; NULL with *state_out set
 * ("FINISHED"...) if it exists but ended, or NULL and *state_out NULL if it does not exist.
 * Negative *err on store failure. */
struct engine_instance *batch_instance(
    struct batch *b, int64_t id, char *state_out, size_t state_size, char uuid_out[37], int *err);
