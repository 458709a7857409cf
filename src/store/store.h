/* store.h - durable state behind one versioned vtable (SQLite `sqlite3_io_methods` style).
 *
 * Tables: definitions (key, version, uuid, json), instances (id, uuid, key, version, state,
 * blob = engine_instance_to_json), history, outbox (messages to publish), inbox (keys of consumed
 * messages, for dedup). Everything between store_begin() and store_commit() is one transaction.
 * Backends: store_sqlite.c (default), store_pg.c (PostgreSQL). A store handle is used by one thread
 * at a time.
 */
#ifndef FLOWD_STORE_H
#define FLOWD_STORE_H

#include "../engine/engine.h"

#include <stddef.h>
#include <stdint.h>

struct store;

struct store_options {
    const char *path;        /* sqlite: database file */
    const char *synchronous; /* sqlite: "FULL" (default) or "NORMAL"; postgresql:
                                synchronous_commit on (FULL) or off (NORMAL) */
    const char *dsn;         /* postgresql: libpq connection string */
    int node_id;             /* engine.node-id: stamps the outbox rows this handle writes */
    int claim_node;          /* postgresql: hold node_id for the life of the connection (a
                                session advisory lock), refused if another process holds it */
};

struct store_def_row {
    const char *key;
    int version;
    const char *uuid;
    const char *json;
    int64_t created_ms;
};

struct store_instance_row {
    int64_t id;
    const char *uuid;
    const char *def_key;
    int def_version;
    const char *state; /* engine_state_name() */
    const char *blob;  /* engine_instance_to_json() */
    int64_t started_ms, updated_ms;
    int64_t due_ms;      /* engine_instance_next_due(): when a timer of it falls due, 0 if none */
    const char *waiting; /* engine_instance_waiting(): where its tokens wait, or NULL */
};

struct store_outbox_row {
    int64_t id;
    int64_t instance_id; /* 0 for dead letters not tied to an instance */
    const char *message_id;
    const char *topic;
    const char *key;   /* may be NULL */
    const char *value; /* may be NULL (tombstone) */
    size_t value_len;
    const char *headers; /* JSON array of [name, value] pairs */
};

/* Filter and page of x_instance_list. Zero/NULL fields do not filter. */
struct store_instance_filter {
    const char *state; /* "STARTED"... */
    const char *def_key;
    int64_t started_from_ms; /* started_ms >= this */
    int64_t started_to_ms;   /* started_ms < this */
    int64_t before_id;       /* paging: only ids below this */
    size_t limit;            /* rows at most (0: none) */
};

/* Callbacks return 0 to go on, non-zero to stop the scan (that value is returned). */
typedef int(store_def_cb)(void *ctx, const struct store_def_row *row);
typedef int(store_instance_cb)(void *ctx, const struct store_instance_row *row);
typedef int(store_history_cb)(void *ctx, const struct engine_history *row);
typedef int(store_outbox_cb)(void *ctx, const struct store_outbox_row *row);
/* Listing: also when the row was written and sent (0 while unsent). */
typedef int(store_outbox_list_cb)(void *ctx,
                                  const struct store_outbox_row *row,
                                  int64_t created_ms,
                                  int64_t sent_ms);

struct store_methods {
    int version;      /* 2 */
    const char *name; /* "sqlite" */
    int (*x_open)(const struct store_options *opt, struct store **out, char *errstr, size_t n);
    void (*x_close)(struct store *st);

    int (*x_begin)(struct store *st);
    int (*x_commit)(struct store *st);
    int (*x_rollback)(struct store *st);

    /* Stores a definition. If the newest version of key has identical json, nothing is written
     * and *version and *uuid_out return that one with *created = 0; otherwise version = newest + 1
     * and uuid is the new_uuid given. uuid_out (37 bytes) may be NULL. */
    int (*x_def_put)(struct store *st,
                     const char *key,
                     const char *json,
                     const char *new_uuid,
                     int64_t now_ms,
                     int *version,
                     int *created,
                     char *uuid_out);
    /* Every version of every definition, oldest first. */
    int (*x_def_scan)(struct store *st, store_def_cb *cb, void *ctx);

    /* Highest instance id in [lo, hi) (0 when none): a node allocates above it in its range. */
    int (*x_instance_max_id)(struct store *st, int64_t lo, int64_t hi, int64_t *max_id);
    /* Insert or replace. */
    int (*x_instance_put)(struct store *st, const struct store_instance_row *row);
    /* FLOWD_ERR_NOTFOUND if absent. *blob is malloc'ed; caller frees. */
    int (*x_instance_get)(struct store *st, int64_t id, char **blob);
    int (*x_instance_id_by_uuid)(struct store *st, const char *uuid, int64_t *id);
    /* Instances in state STARTED, in id order. */
    int (*x_instance_scan_active)(struct store *st, store_instance_cb *cb, void *ctx);
    /* Counts per state name, e.g. for /metrics: cb gets (state, count). */
    int (*x_instance_count_by_state)(struct store *st,
                                     int (*cb)(void *ctx, const char *state, int64_t n),
                                     void *ctx);

    int (*x_history_add)(struct store *st, int64_t instance_id, const struct engine_history *h);
    int (*x_history_scan)(struct store *st, int64_t instance_id, store_history_cb *cb, void *ctx);

    /* Adds a message to publish; *id gets its row id. */
    int (*x_outbox_add)(struct store *st,
                        const struct store_outbox_row *row,
                        int64_t now_ms,
                        int64_t *id);
    /* Unsent rows in id order, at most limit. PostgreSQL: only this node's rows (the others are
     * published by their own node, or adopted with x_outbox_adopt when it is gone). */
    int (*x_outbox_scan_unsent)(struct store *st, size_t limit, store_outbox_cb *cb, void *ctx);
    int (*x_outbox_mark_sent)(struct store *st, const int64_t *ids, size_t n, int64_t now_ms);
    /* Queues the message with message_id again (re-publish, same content and messageId) as a
     * new unsent row, so that a delivery report for the original cannot cancel it. *n is 1, or 0
     * when no such message is in the outbox (purged). */
    int (*x_outbox_requeue)(struct store *st, const char *message_id, int *n);
    /* Deletes sent rows: those on dlq_topic (dead letters, listed by the API) sent before
     * dlq_before_ms; the others sent before before_ms, except the rows of instances still
     * STARTED (their requests may have to be re-sent). Unsent rows are never deleted. */
    int (*x_outbox_purge)(struct store *st,
                          int64_t before_ms,
                          const char *dlq_topic,
                          int64_t dlq_before_ms);

    /* Inbox: if key was seen returns 1; else records it and returns 0. Negative on error. */
    int (*x_inbox_check_add)(struct store *st, const char *key, int64_t now_ms);
    int (*x_inbox_purge)(struct store *st, int64_t before_ms);

    /* ---- version 2: listing for the API (schema migration 2 adds their indexes) ---- */
    /* Instances matching f, highest id first (rows carry the blob). */
    int (*x_instance_list)(struct store *st,
                           const struct store_instance_filter *f,
                           store_instance_cb *cb,
                           void *ctx);
    /* Outbox rows for topic (e.g. the dead-letter topic), highest id first, ids below before_id
     * (0: any), at most limit. */
    int (*x_outbox_list_topic)(struct store *st,
                               const char *topic,
                               int64_t before_id,
                               size_t limit,
                               store_outbox_list_cb *cb,
                               void *ctx);
    /* One outbox row by id, given to cb; FLOWD_ERR_NOTFOUND if absent. */
    int (*x_outbox_get)(struct store *st, int64_t id, store_outbox_list_cb *cb, void *ctx);
    /* Number of unsent outbox rows (the relay's backlog). */
    int (*x_outbox_count_unsent)(struct store *st, int64_t *n);
    /* Forgets an inbox key (a replayed dead letter must not be dropped as a duplicate). */
    int (*x_inbox_forget)(struct store *st, const char *key);

    /* ---- version 3: several flowd nodes on one store (schema migration 3) ---- */
    /* As x_instance_get, inside a transaction, and in PostgreSQL the row stays locked (FOR
     * UPDATE) until the transaction ends: every transition of an instance is serialized, on
     * whichever node it happens. */
    int (*x_instance_lock)(struct store *st, int64_t id, char **blob);
    /* Locks and reads the STARTED instances among ids (n of them), in id order (so that two
     * nodes locking overlapping sets cannot deadlock); cb gets each one found. */
    int (*x_instance_lock_many)(
        struct store *st, const int64_t *ids, size_t n, store_instance_cb *cb, void *ctx);
    /* STARTED instances with 0 < due_ms <= now_ms, earliest first, at most limit, locked; rows
     * another transaction holds are skipped (FOR UPDATE SKIP LOCKED), so each due instance is
     * fired by exactly one node. */
    int (*x_instance_claim_due)(
        struct store *st, int64_t now_ms, size_t limit, store_instance_cb *cb, void *ctx);
    /* Earliest due_ms of a STARTED instance (0 if none). */
    int (*x_instance_next_due)(struct store *st, int64_t *due_ms);
    /* Makes this node the publisher of the unsent outbox rows of nodes that are gone (whose
     * connection no longer holds their node id); *n gets how many. SQLite: nothing to do. */
    int (*x_outbox_adopt)(struct store *st, int64_t *n);
    /* STARTED instances counted per (def_key, waiting) where waiting is not NULL (/metrics). */
    int (*x_instance_count_waiting)(
        struct store *st,
        int (*cb)(void *ctx, const char *def_key, const char *waiting, int64_t n),
        void *ctx);
};

/* The backends. */
extern const struct store_methods store_sqlite_methods;
extern const struct store_methods store_pg_methods;

/* Routes SQLite's own log (SQLITE_CONFIG_LOG) into FLOWD_LOG. Call once before any other sqlite3
 * use in the process; idempotent and thread-safe (x_open calls it too).
 * @thread Safe to call from any thread. */
void store_sqlite_global_init(void);

/* Handle passed around by the daemon: methods + backend state. */
struct store_handle {
    const struct store_methods *m;
    struct store *st;
};

/* Test-only: wraps h's methods with the fault-injecting shim described in store_fault.c
 * (spec as in FLOWD_STORE_FAULTS, e.g. "commit/5/io,history_add@100/crash"). One per process. */
int store_fault_wrap(struct store_handle *h, const char *spec, char *errstr, size_t errstr_size);

#endif
