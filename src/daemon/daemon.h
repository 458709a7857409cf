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
enum request_type { REQ_DEPLOY, REQ_START };

struct request {
    enum request_type type;
    struct request *next;
    /* in */
    struct engine_def *def;       /* REQ_DEPLOY: parsed, taken by the loop */
    char *def_json;               /* REQ_DEPLOY: the text to store */
    char key[128];                /* REQ_START */
    cJSON *data;                  /* REQ_START: taken by the loop */
    /* out */
    int rc;
    char errstr[FLOWD_ERRSTR_SIZE];
    cJSON *result;
    int created;
    int done;
    int64_t instance_id;          /* REQ_START: set while in the batch */
};

/* ---- a message leaving through the outbox ---- */
struct outgoing {
    int64_t outbox_id;
    int64_t instance_id;
    struct engine_message msg;    /* owned */
};

struct counters {
    atomic_llong started, completed, failed;
    atomic_llong received, duplicates, dead_lettered, sent;
    atomic_llong batches, batch_msgs, store_failures;
};

struct daemon {
    struct flowd_config *cfg;
    struct engine_env env;
    struct store_handle store;    /* loop thread */
    struct store_handle read_store;  /* HTTP threads, under read_lock */
    pthread_mutex_t read_lock;
    struct bus *bus;
    struct registry reg;
    regex_t sub_re;               /* cfg->subscription_regex, compiled */
    struct map cache;             /* instance id -> struct engine_instance* (STARTED only) */
    int64_t next_seq;             /* instance ids: node_id << INSTANCE_ID_NODE_SHIFT | next_seq */

    /* request queue */
    pthread_mutex_t q_lock;
    pthread_cond_t q_done;
    struct request *q_head, *q_tail;
    int loop_done;                /* under q_lock: the loop takes no more requests */

    /* delivered outbox ids, filled by the delivery callback, drained in the next batch */
    int64_t *sent_ids;
    size_t nsent, sent_cap;
    int resend_needed;            /* a delivery failed: rescan unsent rows when idle */

    atomic_int store_ok;
    volatile sig_atomic_t stopping;
    struct counters n;
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

/* recover.c */
int recover_load(struct daemon *d, char *errstr, size_t errstr_size);

/* backend.c: the api_backend the HTTP server calls. */
struct api_backend;
void backend_init(struct daemon *d, struct api_backend *be);

#endif

/* ---- the batch being built inside one store transaction (loop.c) ---- */
struct batch {
    struct daemon *d;
    int64_t now;
    struct engine_instance **touched;  /* written once each at the end of the batch */
    size_t ntouched, touched_cap;
    struct outgoing *out;              /* published after the commit */
    size_t nout, out_cap;
};

/* Writes fx's history and messages (to the outbox) and marks inst to be saved; moves the messages
 * out of fx. */
int batch_apply(struct batch *b, struct engine_instance *inst, struct engine_effects *fx);
/* Writes msg to the dead-letter topic (through the outbox) with headers reason and reasonDetail. */
int batch_dead_letter(struct batch *b,
                      const rd_kafka_message_t *msg,
                      int64_t instance_id,
                      const char *reason,
                      const char *detail);
/* Returns the STARTED instance id from the cache or the store; NULL with *state_out set
 * ("FINISHED"...) if it exists but ended, or NULL and *state_out NULL if it does not exist.
 * Negative *err on store failure. */
struct engine_instance *batch_instance(struct batch *b, int64_t id, char *state_out,
                                       size_t state_size, int *err);
