/* store_sqlite.c - the SQLite backend of store.h (store_sqlite_methods).
 *
 * One connection per struct store, in WAL mode, synchronous FULL (or NORMAL), with a busy
 * timeout. The schema comes from the migration scripts of store_schema.c, applied at open in one
 * transaction. Invariants:
 * - every statement is prepared once at open (SQLITE_PREPARE_PERSISTENT); a call only re-binds
 *   and steps it, and resets it before returning, so no statement is ever left in progress (a
 *   COMMIT never meets one) and scan callbacks may call other methods. A callback that re-enters
 *   the scan it is called from is refused (FLOWD_ERR_STATE); one that modifies the table being
 *   scanned may see rows twice or not at all (collect, then write);
 * - caller strings are bound SQLITE_STATIC: they need to live for the call only. Every call
 *   re-binds every parameter, so a stale binding is never stepped;
 * - rows given to callbacks point into SQLite's memory: borrowed for the callback only;
 * - each failure is logged once here (ERROR, or WARN for busy/locked, which are retried) with
 *   what was being done, and mapped to enum flowd_err; SQLite's own log goes to FLOWD_LOG
 *   through store_sqlite_global_init(), at DEBUG where it repeats what we log.
 * @thread A handle is used by one thread at a time (the connection is opened NOMUTEX).
 */
#include "store.h"
#include "store_int.h"

#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "../common/banned.h"

#define STORE_BUSY_TIMEOUT_MS 5000

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_DEF_NEWEST,
    S_DEF_INSERT,
    S_DEF_SCAN,
    S_INST_MAX_ID,
    S_INST_PUT,
    S_INST_UPDATE,
    S_INST_GET,
    S_INST_BY_UUID,
    S_INST_SCAN_ACTIVE,
    S_INST_COUNT,
    S_HIST_ADD,
    S_HIST_SCAN,
    S_OUT_ADD,
    S_OUT_SCAN_UNSENT,
    S_OUT_MARK_SENT,
    S_OUT_REQUEUE,
    S_OUT_PURGE,
    S_IN_ADD,
    S_IN_PURGE,
    S_INST_LIST,
    S_OUT_LIST_TOPIC,
    S_OUT_GET,
    S_OUT_COUNT_UNSENT,
    S_IN_FORGET,
    S_INST_GET_STARTED,
    S_INST_CLAIM_DUE,
    S_INST_NEXT_DUE,
    S_INST_COUNT_WAITING,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_DEF_NEWEST] = "SELECT version, uuid, json FROM definitions WHERE key = ?1"
                     " ORDER BY version DESC LIMIT 1",
    [S_DEF_INSERT] = "INSERT INTO definitions (key, version, uuid, json, created_ms)"
                     " VALUES (?1, ?2, ?3, ?4, ?5)",
    /* rowid is insertion order: "oldest first" even if the wall clock went backwards. */
    [S_DEF_SCAN] = "SELECT key, version, uuid, json, created_ms FROM definitions ORDER BY rowid",
    [S_INST_MAX_ID] = "SELECT coalesce(max(id), 0) FROM instances WHERE id >= ?1 AND id < ?2",
    /* An upsert on id, not INSERT OR REPLACE: a uuid already used by another id must fail, not
     * silently delete that other instance. */
    [S_INST_PUT] = "INSERT INTO instances"
                   " (id, uuid, def_key, def_version, state, blob, started_ms, updated_ms, due_ms,"
                   " waiting) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                   " ON CONFLICT (id) DO UPDATE SET uuid = excluded.uuid,"
                   " def_key = excluded.def_key, def_version = excluded.def_version,"
                   " state = excluded.state, blob = excluded.blob,"
                   " started_ms = excluded.started_ms, updated_ms = excluded.updated_ms,"
                   " due_ms = excluded.due_ms, waiting = excluded.waiting",
    /* The common put: an instance that exists moves on. Only the columns that change are set,
     * so that SQLite leaves the uuid, def_key and started_ms indexes alone (an UPDATE rewrites
     * the entries of every index on a column it sets, changed or not); the WHERE makes it a
     * no-op (changes() = 0) when any other column differs, and then S_INST_PUT runs. */
    [S_INST_UPDATE] = "UPDATE instances SET state = ?5, blob = ?6, updated_ms = ?8, due_ms = ?9,"
                      " waiting = ?10"
                      " WHERE id = ?1 AND uuid = ?2 AND def_key = ?3 AND def_version = ?4"
                      " AND started_ms = ?7",
    [S_INST_GET] = "SELECT blob FROM instances WHERE id = ?1",
    [S_INST_BY_UUID] = "SELECT id FROM instances WHERE uuid = ?1",
    [S_INST_SCAN_ACTIVE] = "SELECT id, uuid, def_key, def_version, state, blob, started_ms,"
                           " updated_ms FROM instances WHERE state = 'STARTED' ORDER BY id",
    [S_INST_COUNT] = "SELECT state, count(*) FROM instances GROUP BY state ORDER BY state",
    [S_HIST_ADD] = "INSERT INTO history (instance_id, seq, node_id, state, at_ms, detail)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_HIST_SCAN] = "SELECT seq, node_id, state, at_ms, detail FROM history"
                    " WHERE instance_id = ?1 ORDER BY seq",
    [S_OUT_ADD] = "INSERT INTO outbox"
                  " (instance_id, message_id, topic, key, value, headers, created_ms)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    /* Walks the partial index outbox_unsent. */
    [S_OUT_SCAN_UNSENT] = "SELECT id, instance_id, message_id, topic, key, value, headers"
                          " FROM outbox WHERE sent_ms IS NULL ORDER BY id LIMIT ?1",
    [S_OUT_MARK_SENT] = "UPDATE outbox SET sent_ms = ?2 WHERE id = ?1",
    /* a copy, not an update: the original may still be in flight, and its delivery report
     * (mark_sent by row id) must not cancel the re-send */
    [S_OUT_REQUEUE] = "INSERT INTO outbox (instance_id, message_id, topic, key, value, headers,"
                      " created_ms, sent_ms) SELECT instance_id, message_id, topic, key, value,"
                      " headers, created_ms, NULL FROM outbox WHERE id ="
                      " (SELECT max(id) FROM outbox WHERE message_id = ?1)",
    [S_OUT_PURGE] = "DELETE FROM outbox WHERE sent_ms IS NOT NULL AND ((topic <> ?2 AND"
                    " sent_ms < ?1 AND instance_id NOT IN (SELECT id FROM instances WHERE"
                    " state = 'STARTED')) OR (topic = ?2 AND sent_ms < ?3))",
    [S_IN_ADD] = "INSERT OR IGNORE INTO inbox (key, seen_ms) VALUES (?1, ?2)",
    [S_IN_PURGE] = "DELETE FROM inbox WHERE seen_ms < ?1",
    /* Unset filters are NULL or 0; the rowid walk (newest first) stops at the LIMIT. */
    [S_INST_LIST] = "SELECT id, uuid, def_key, def_version, state, blob, started_ms, updated_ms"
                    " FROM instances WHERE (?1 IS NULL OR state = ?1)"
                    " AND (?2 IS NULL OR def_key = ?2) AND (?3 = 0 OR started_ms >= ?3)"
                    " AND (?4 = 0 OR started_ms < ?4) AND (?5 = 0 OR id < ?5)"
                    " ORDER BY id DESC LIMIT ?6",
    [S_OUT_LIST_TOPIC] = "SELECT id, instance_id, message_id, topic, key, value, headers,"
                         " created_ms, coalesce(sent_ms, 0) FROM outbox"
                         " WHERE topic = ?1 AND (?2 = 0 OR id < ?2) ORDER BY id DESC LIMIT ?3",
    [S_OUT_GET] = "SELECT id, instance_id, message_id, topic, key, value, headers,"
                  " created_ms, coalesce(sent_ms, 0) FROM outbox WHERE id = ?1",
    [S_OUT_COUNT_UNSENT] = "SELECT count(*) FROM outbox WHERE sent_ms IS NULL",
    [S_IN_FORGET] = "DELETE FROM inbox WHERE key = ?1",
    [S_INST_GET_STARTED] = "SELECT id, uuid, def_key, def_version, state, blob, started_ms,"
                           " updated_ms FROM instances WHERE id = ?1 AND state = 'STARTED'",
    [S_INST_CLAIM_DUE] = "SELECT id, uuid, def_key, def_version, state, blob, started_ms,"
                         " updated_ms FROM instances WHERE state = 'STARTED' AND due_ms > 0"
                         " AND due_ms <= ?1 ORDER BY due_ms LIMIT ?2",
    [S_INST_NEXT_DUE] = "SELECT coalesce(min(due_ms), 0) FROM instances"
                        " WHERE state = 'STARTED' AND due_ms > 0",
    [S_INST_COUNT_WAITING] =
        "SELECT def_key, waiting, count(*) FROM instances WHERE state = 'STARTED'"
        " AND waiting IS NOT NULL GROUP BY def_key, waiting",
};

struct store {
    sqlite3 *db;
    char *path; /* for messages */
    sqlite3_stmt *stmt[S_COUNT];
    int bind_rc; /* first failed bind since the last step, or SQLITE_OK */
};

/* ---- SQLite's own log ----------------------------------------------------------------- */

static void sqlite_log_cb(void *arg, int code, const char *msg)
{
    (void)arg;
    enum log_level level;
    switch (code & 0xff) {
    case SQLITE_NOTICE:
        level = LOG_INFO;
        break;
    case SQLITE_WARNING:
        level = LOG_WARN;
        break;
    case SQLITE_CONSTRAINT:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_SCHEMA:
        /* Reported (or handled) by the failing call itself. */
        level = LOG_DEBUG;
        break;
    default:
        /* "statement aborts at..." repeats the error the call logs; anything else (e.g. the
         * errno of an I/O error) is detail we would not have otherwise. */
        level = strncmp(msg, "statement aborts at", 19) == 0 ? LOG_DEBUG : LOG_WARN;
        break;
    }
    FLOWD_LOG(level, LOG_SUB_STORE, "sqlite: %s (code %d)", msg, code);
}

static void global_init_once(void)
{
    int rc = sqlite3_config(SQLITE_CONFIG_LOG, sqlite_log_cb, NULL);
    if (rc != SQLITE_OK)
        FLOWD_LOG(LOG_WARN, LOG_SUB_STORE,
                  "sqlite: cannot route its log (sqlite3 was used before "
                  "store_sqlite_global_init): %s",
                  sqlite3_errstr(rc));
}

void store_sqlite_global_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init_once);
}

/* ---- errors, binding, stepping -------------------------------------------------------- */

static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return FLOWD_ERR_AGAIN;
    case SQLITE_CONSTRAINT:
        return FLOWD_ERR_EXISTS;
    case SQLITE_NOMEM:
        return FLOWD_ERR_NOMEM;
    case SQLITE_TOOBIG:
        return FLOWD_ERR_TOOBIG;
    default:
        return FLOWD_ERR_IO; /* SQLITE_FULL, SQLITE_IOERR, SQLITE_CORRUPT, ... */
    }
}

/* Logs a failure of rc while doing what, once, and returns its flowd_err. */
static int fail(struct store *st, int rc, const char *what)
{
    int err = map_rc(rc);
    const char *msg = sqlite3_errcode(st->db) == rc ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc);
    if (err == FLOWD_ERR_AGAIN)
        FLOWD_LOG(LOG_WARN, LOG_SUB_STORE, "%s: %s: %s (sqlite %d)", st->path, what, msg, rc);
    else
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "%s: %s: %s (sqlite %d)", st->path, what, msg, rc);
    return err;
}

static int fail_inval(struct store *st, const char *what, const char *why)
{
    FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "%s: %s: %s", st->path, what, why);
    return FLOWD_ERR_INVAL;
}

static void bind_rc(struct store *st, int rc)
{
    if (rc != SQLITE_OK && st->bind_rc == SQLITE_OK)
        st->bind_rc = rc;
}

static void bind_text(struct store *st, sqlite3_stmt *s, int i, const char *v)
{
    bind_rc(st, v ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i));
}

static void bind_int64(struct store *st, sqlite3_stmt *s, int i, int64_t v)
{
    bind_rc(st, sqlite3_bind_int64(s, i, v));
}

/* Steps s. Returns 0 with *row = 1 (a row is ready) or 0 (done), or a logged flowd_err. */
static int step(struct store *st, sqlite3_stmt *s, const char *what, int *row)
{
    *row = 0;
    if (st->bind_rc != SQLITE_OK) {
        int rc = st->bind_rc;
        st->bind_rc = SQLITE_OK;
        return fail(st, rc, what);
    }
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *row = 1;
        return 0;
    }
    if (rc == SQLITE_DONE)
        return 0;
    return fail(st, rc, what);
}

/* Steps a statement that returns no rows, and resets it. */
static int exec_stmt(struct store *st, enum stmt_id id, const char *what)
{
    sqlite3_stmt *s = st->stmt[id];
    int row;
    int err = step(st, s, what, &row);
    sqlite3_reset(s);
    return err;
}

/* Scans must not be re-entered from their own callback: resetting the statement would restart
 * the outer loop. */
static int scan_enter(struct store *st, enum stmt_id id, const char *what)
{
    if (!sqlite3_stmt_busy(st->stmt[id]))
        return 0;
    FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "%s: %s: called again from its own callback", st->path,
              what);
    return FLOWD_ERR_STATE;
}

static const char *col_text(sqlite3_stmt *s, int i)
{
    return (const char *)sqlite3_column_text(s, i);
}

/* ---- transactions --------------------------------------------------------------------- */

static int sq_begin(struct store *st)
{
    if (!sqlite3_get_autocommit(st->db)) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "%s: begin: a transaction is already open", st->path);
        return FLOWD_ERR_STATE;
    }
    return exec_stmt(st, S_BEGIN, "begin transaction");
}

/* On FLOWD_ERR_AGAIN the transaction stays open: retry the commit or roll back. After any other
 * error the caller rolls back (x_rollback is a no-op if SQLite already did). */
static int sq_commit(struct store *st)
{
    if (sqlite3_get_autocommit(st->db)) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE,
                  "%s: commit: no transaction is open (none begun, or SQLite rolled it back "
                  "after an earlier error): nothing was committed",
                  st->path);
        return FLOWD_ERR_STATE;
    }
    return exec_stmt(st, S_COMMIT, "commit transaction");
}

static int sq_rollback(struct store *st)
{
    if (sqlite3_get_autocommit(st->db))
        return 0;
    return exec_stmt(st, S_ROLLBACK, "roll back transaction");
}

/* Methods that run more than one statement get their own transaction when the caller has none
 * open (atomic, and one fsync instead of many). */
static int auto_begin(struct store *st, int *own)
{
    *own = sqlite3_get_autocommit(st->db);
    return *own ? exec_stmt(st, S_BEGIN, "begin transaction") : 0;
}

static int auto_end(struct store *st, int own, int err)
{
    if (!own)
        return err;
    if (err) {
        sq_rollback(st);
        return err;
    }
    err = exec_stmt(st, S_COMMIT, "commit transaction");
    if (err)
        sq_rollback(st);
    return err;
}

/* ---- definitions ---------------------------------------------------------------------- */

static int sq_def_put(struct store *st,
                      const char *key,
                      const char *json,
                      const char *new_uuid,
                      int64_t now_ms,
                      int *version,
                      int *created,
                      char *uuid_out)
{
    if (!key || !json || !new_uuid)
        return fail_inval(st, "def_put", "key, json and new_uuid are required");

    int own;
    int err = auto_begin(st, &own);
    if (err)
        return err;

    sqlite3_stmt *s = st->stmt[S_DEF_NEWEST];
    bind_text(st, s, 1, key);
    int row, newest = 0, same = 0;
    char uuid[37] = "";
    err = step(st, s, "def_put: read the newest version", &row);
    if (!err && row) {
        newest = sqlite3_column_int(s, 0);
        const char *old = col_text(s, 2);
        if (old && strcmp(old, json) == 0) {
            same = 1;
            snprintf(uuid, sizeof(uuid), "%s", col_text(s, 1) ? col_text(s, 1) : "");
        }
    }
    sqlite3_reset(s);

    if (!err && !same) {
        s = st->stmt[S_DEF_INSERT];
        bind_text(st, s, 1, key);
        bind_int64(st, s, 2, newest + 1);
        bind_text(st, s, 3, new_uuid);
        bind_text(st, s, 4, json);
        bind_int64(st, s, 5, now_ms);
        err = exec_stmt(st, S_DEF_INSERT, "def_put: insert the new version");
        snprintf(uuid, sizeof(uuid), "%s", new_uuid);
    }
    err = auto_end(st, own, err);
    if (err)
        return err;
    if (version)
        *version = same ? newest : newest + 1;
    if (created)
        *created = !same;
    if (uuid_out)
        memcpy(uuid_out, uuid, sizeof(uuid));
    return 0;
}

static int sq_def_scan(struct store *st, store_def_cb *cb, void *ctx)
{
    const char *what = "def_scan";
    int err = scan_enter(st, S_DEF_SCAN, what);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_DEF_SCAN];
    for (;;) {
        int row;
        if ((err = step(st, s, what, &row)) || !row)
            break;
        struct store_def_row r = {
            .key = col_text(s, 0),
            .version = sqlite3_column_int(s, 1),
            .uuid = col_text(s, 2),
            .json = col_text(s, 3),
            .created_ms = sqlite3_column_int64(s, 4),
        };
        if ((err = cb(ctx, &r)))
            break;
    }
    sqlite3_reset(s);
    return err;
}

/* ---- instances ------------------------------------------------------------------------ */

static int sq_instance_max_id(struct store *st, int64_t lo, int64_t hi, int64_t *max_id)
{
    sqlite3_stmt *s = st->stmt[S_INST_MAX_ID];
    bind_int64(st, s, 1, lo);
    bind_int64(st, s, 2, hi);
    int row;
    int err = step(st, s, "instance_max_id", &row);
    if (!err)
        *max_id = row ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return err;
}

static int sq_instance_put(struct store *st, const struct store_instance_row *r)
{
    if (!r || !r->uuid || !r->def_key || !r->state || !r->blob)
        return fail_inval(st, "instance_put", "uuid, def_key, state and blob are required");
    static const enum stmt_id ids[2] = {S_INST_UPDATE, S_INST_PUT};
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *s = st->stmt[ids[i]];
        bind_int64(st, s, 1, r->id);
        bind_text(st, s, 2, r->uuid);
        bind_text(st, s, 3, r->def_key);
        bind_int64(st, s, 4, r->def_version);
        bind_text(st, s, 5, r->state);
        bind_text(st, s, 6, r->blob);
        bind_int64(st, s, 7, r->started_ms);
        bind_int64(st, s, 8, r->updated_ms);
        bind_int64(st, s, 9, r->due_ms);
        bind_text(st, s, 10, r->waiting);
        int err = exec_stmt(st, ids[i], "instance_put");
        if (err || sqlite3_changes(st->db) > 0)
            return err;
    }
    return 0;
}

static int sq_instance_get(struct store *st, int64_t id, char **blob)
{
    sqlite3_stmt *s = st->stmt[S_INST_GET];
    bind_int64(st, s, 1, id);
    int row;
    int err = step(st, s, "instance_get", &row);
    if (!err && !row)
        err = FLOWD_ERR_NOTFOUND;
    if (!err) {
        const char *p = col_text(s, 0);
        *blob = flowd_xstrndup(p ? p : "", (size_t)sqlite3_column_bytes(s, 0));
    }
    sqlite3_reset(s);
    return err;
}

static int sq_instance_id_by_uuid(struct store *st, const char *uuid, int64_t *id)
{
    if (!uuid)
        return FLOWD_ERR_NOTFOUND;
    sqlite3_stmt *s = st->stmt[S_INST_BY_UUID];
    bind_text(st, s, 1, uuid);
    int row;
    int err = step(st, s, "instance_id_by_uuid", &row);
    if (!err && !row)
        err = FLOWD_ERR_NOTFOUND;
    if (!err)
        *id = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return err;
}

/* Steps s (bound by the caller) and gives each instance row to cb; resets s. */
static int
instance_rows(struct store *st, sqlite3_stmt *s, const char *what, store_instance_cb *cb, void *ctx)
{
    int err;
    for (;;) {
        int row;
        if ((err = step(st, s, what, &row)) || !row)
            break;
        struct store_instance_row r = {
            .id = sqlite3_column_int64(s, 0),
            .uuid = col_text(s, 1),
            .def_key = col_text(s, 2),
            .def_version = sqlite3_column_int(s, 3),
            .state = col_text(s, 4),
            .blob = col_text(s, 5),
            .started_ms = sqlite3_column_int64(s, 6),
            .updated_ms = sqlite3_column_int64(s, 7),
        };
        if ((err = cb(ctx, &r)))
            break;
    }
    sqlite3_reset(s);
    return err;
}

static int sq_instance_scan_active(struct store *st, store_instance_cb *cb, void *ctx)
{
    const char *what = "instance_scan_active";
    int err = scan_enter(st, S_INST_SCAN_ACTIVE, what);
    if (err)
        return err;
    return instance_rows(st, st->stmt[S_INST_SCAN_ACTIVE], what, cb, ctx);
}

static int sq_instance_count_by_state(struct store *st,
                                      int (*cb)(void *ctx, const char *state, int64_t n),
                                      void *ctx)
{
    const char *what = "instance_count_by_state";
    int err = scan_enter(st, S_INST_COUNT, what);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_INST_COUNT];
    for (;;) {
        int row;
        if ((err = step(st, s, what, &row)) || !row)
            break;
        if ((err = cb(ctx, col_text(s, 0), sqlite3_column_int64(s, 1))))
            break;
    }
    sqlite3_reset(s);
    return err;
}

/* ---- history -------------------------------------------------------------------------- */

/* A duplicate (instance_id, seq) is a transition applied twice: FLOWD_ERR_EXISTS. */
static int sq_history_add(struct store *st, int64_t instance_id, const struct engine_history *h)
{
    if (!h || !h->state)
        return fail_inval(st, "history_add", "state is required");
    sqlite3_stmt *s = st->stmt[S_HIST_ADD];
    bind_int64(st, s, 1, instance_id);
    bind_int64(st, s, 2, h->seq);
    bind_text(st, s, 3, h->node_id);
    bind_text(st, s, 4, h->state);
    bind_int64(st, s, 5, h->at_ms);
    bind_text(st, s, 6, h->detail);
    return exec_stmt(st, S_HIST_ADD, "history_add");
}

static int sq_history_scan(struct store *st, int64_t instance_id, store_history_cb *cb, void *ctx)
{
    const char *what = "history_scan";
    int err = scan_enter(st, S_HIST_SCAN, what);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_HIST_SCAN];
    bind_int64(st, s, 1, instance_id);
    for (;;) {
        int row;
        if ((err = step(st, s, what, &row)) || !row)
            break;
        /* struct engine_history has non-const members; the row is still read-only. */
        struct engine_history h = {
            .seq = (uint32_t)sqlite3_column_int64(s, 0),
            .node_id = (char *)col_text(s, 1),
            .state = (char *)col_text(s, 2),
            .at_ms = sqlite3_column_int64(s, 3),
            .detail = (char *)col_text(s, 4),
        };
        if ((err = cb(ctx, &h)))
            break;
    }
    sqlite3_reset(s);
    return err;
}

/* ---- outbox --------------------------------------------------------------------------- */

static int
sq_outbox_add(struct store *st, const struct store_outbox_row *r, int64_t now_ms, int64_t *id)
{
    if (!r || !r->message_id || !r->topic)
        return fail_inval(st, "outbox_add", "message_id and topic are required");
    sqlite3_stmt *s = st->stmt[S_OUT_ADD];
    bind_int64(st, s, 1, r->instance_id);
    bind_text(st, s, 2, r->message_id);
    bind_text(st, s, 3, r->topic);
    bind_text(st, s, 4, r->key);
    if (r->value)
        bind_rc(st, sqlite3_bind_blob64(s, 5, r->value, r->value_len, SQLITE_STATIC));
    else
        bind_rc(st, sqlite3_bind_null(s, 5));
    bind_text(st, s, 6, r->headers);
    bind_int64(st, s, 7, now_ms);
    int err = exec_stmt(st, S_OUT_ADD, "outbox_add");
    if (!err && id)
        *id = sqlite3_last_insert_rowid(st->db);
    return err;
}

static int sq_outbox_scan_unsent(struct store *st, size_t limit, store_outbox_cb *cb, void *ctx)
{
    const char *what = "outbox_scan_unsent";
    int err = scan_enter(st, S_OUT_SCAN_UNSENT, what);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_OUT_SCAN_UNSENT];
    bind_int64(st, s, 1, limit > (size_t)INT64_MAX ? -1 : (int64_t)limit);
    for (;;) {
        int row;
        if ((err = step(st, s, what, &row)) || !row)
            break;
        struct store_outbox_row r = {
            .id = sqlite3_column_int64(s, 0),
            .instance_id = sqlite3_column_int64(s, 1),
            .message_id = col_text(s, 2),
            .topic = col_text(s, 3),
            .key = col_text(s, 4),
            .headers = col_text(s, 6),
        };
        if (sqlite3_column_type(s, 5) != SQLITE_NULL) {
            /* column_text on a blob adds a NUL after it; bytes is still the exact length. */
            r.value = col_text(s, 5);
            r.value_len = (size_t)sqlite3_column_bytes(s, 5);
            if (!r.value)
                r.value = "";
        }
        if ((err = cb(ctx, &r)))
            break;
    }
    sqlite3_reset(s);
    return err;
}

static int sq_outbox_mark_sent(struct store *st, const int64_t *ids, size_t n, int64_t now_ms)
{
    if (n == 0)
        return 0;
    int own;
    int err = auto_begin(st, &own);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_OUT_MARK_SENT];
    for (size_t i = 0; i < n && !err; i++) {
        bind_int64(st, s, 1, ids[i]);
        bind_int64(st, s, 2, now_ms);
        err = exec_stmt(st, S_OUT_MARK_SENT, "outbox_mark_sent");
    }
    return auto_end(st, own, err);
}

/* Counts every row with message_id (whether it was sent or not): 0 means no such message. */
static int sq_outbox_requeue(struct store *st, const char *message_id, int *n)
{
    if (!message_id)
        return fail_inval(st, "outbox_requeue", "message_id is required");
    sqlite3_stmt *s = st->stmt[S_OUT_REQUEUE];
    bind_text(st, s, 1, message_id);
    int err = exec_stmt(st, S_OUT_REQUEUE, "outbox_requeue");
    if (!err && n)
        *n = sqlite3_changes(st->db);
    return err;
}

static int
sq_outbox_purge(struct store *st, int64_t before_ms, const char *dlq_topic, int64_t dlq_before_ms)
{
    bind_int64(st, st->stmt[S_OUT_PURGE], 1, before_ms);
    bind_text(st, st->stmt[S_OUT_PURGE], 2, dlq_topic ? dlq_topic : "");
    bind_int64(st, st->stmt[S_OUT_PURGE], 3, dlq_before_ms);
    return exec_stmt(st, S_OUT_PURGE, "outbox_purge");
}

/* ---- inbox ---------------------------------------------------------------------------- */

static int sq_inbox_check_add(struct store *st, const char *key, int64_t now_ms)
{
    if (!key)
        return fail_inval(st, "inbox_check_add", "key is required");
    sqlite3_stmt *s = st->stmt[S_IN_ADD];
    bind_text(st, s, 1, key);
    bind_int64(st, s, 2, now_ms);
    int err = exec_stmt(st, S_IN_ADD, "inbox_check_add");
    if (err)
        return err;
    return sqlite3_changes(st->db) == 1 ? 0 : 1;
}

static int sq_inbox_purge(struct store *st, int64_t before_ms)
{
    bind_int64(st, st->stmt[S_IN_PURGE], 1, before_ms);
    return exec_stmt(st, S_IN_PURGE, "inbox_purge");
}

/* ---- listing (store version 2) -------------------------------------------------------- */

static int sq_instance_list(struct store *st,
                            const struct store_instance_filter *f,
                            store_instance_cb *cb,
                            void *ctx)
{
    const char *what = "instance_list";
    int err = scan_enter(st, S_INST_LIST, what);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_INST_LIST];
    bind_text(st, s, 1, f->state);
    bind_text(st, s, 2, f->def_key);
    bind_int64(st, s, 3, f->started_from_ms);
    bind_int64(st, s, 4, f->started_to_ms);
    bind_int64(st, s, 5, f->before_id);
    bind_int64(st, s, 6, f->limit > (size_t)INT64_MAX ? -1 : (int64_t)f->limit);
    return instance_rows(st, s, what, cb, ctx);
}

/* Reads the outbox row at the current step of s (columns as in S_OUT_GET). */
static void
outbox_row_of(sqlite3_stmt *s, struct store_outbox_row *r, int64_t *created_ms, int64_t *sent_ms)
{
    memset(r, 0, sizeof(*r));
    r->id = sqlite3_column_int64(s, 0);
    r->instance_id = sqlite3_column_int64(s, 1);
    r->message_id = col_text(s, 2);
    r->topic = col_text(s, 3);
    r->key = col_text(s, 4);
    r->headers = col_text(s, 6);
    *created_ms = sqlite3_column_int64(s, 7);
    *sent_ms = sqlite3_column_int64(s, 8);
    if (sqlite3_column_type(s, 5) != SQLITE_NULL) {
        r->value = col_text(s, 5);
        r->value_len = (size_t)sqlite3_column_bytes(s, 5);
        if (!r->value)
            r->value = "";
    }
}

static int sq_outbox_list_topic(struct store *st,
                                const char *topic,
                                int64_t before_id,
                                size_t limit,
                                store_outbox_list_cb *cb,
                                void *ctx)
{
    const char *what = "outbox_list_topic";
    if (!topic)
        return fail_inval(st, what, "topic is required");
    int err = scan_enter(st, S_OUT_LIST_TOPIC, what);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_OUT_LIST_TOPIC];
    bind_text(st, s, 1, topic);
    bind_int64(st, s, 2, before_id);
    bind_int64(st, s, 3, limit > (size_t)INT64_MAX ? -1 : (int64_t)limit);
    for (;;) {
        int row;
        if ((err = step(st, s, what, &row)) || !row)
            break;
        struct store_outbox_row r;
        int64_t created, sent;
        outbox_row_of(s, &r, &created, &sent);
        if ((err = cb(ctx, &r, created, sent)))
            break;
    }
    sqlite3_reset(s);
    return err;
}

static int sq_outbox_get(struct store *st, int64_t id, store_outbox_list_cb *cb, void *ctx)
{
    const char *what = "outbox_get";
    int err = scan_enter(st, S_OUT_GET, what);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_OUT_GET];
    bind_int64(st, s, 1, id);
    int row;
    err = step(st, s, what, &row);
    if (!err && !row)
        err = FLOWD_ERR_NOTFOUND;
    if (!err) {
        struct store_outbox_row r;
        int64_t created, sent;
        outbox_row_of(s, &r, &created, &sent);
        err = cb(ctx, &r, created, sent);
    }
    sqlite3_reset(s);
    return err;
}

static int sq_outbox_count_unsent(struct store *st, int64_t *n)
{
    sqlite3_stmt *s = st->stmt[S_OUT_COUNT_UNSENT];
    int row;
    int err = step(st, s, "outbox_count_unsent", &row);
    if (!err)
        *n = row ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return err;
}

static int sq_inbox_forget(struct store *st, const char *key)
{
    if (!key)
        return fail_inval(st, "inbox_forget", "key is required");
    bind_text(st, st->stmt[S_IN_FORGET], 1, key);
    return exec_stmt(st, S_IN_FORGET, "inbox_forget");
}

/* ---- several nodes (one writer at a time: a transaction locks the whole database) ---- */

static int sq_instance_lock(struct store *st, int64_t id, char **blob)
{
    return sq_instance_get(st, id, blob);
}

static int sq_instance_lock_many(
    struct store *st, const int64_t *ids, size_t n, store_instance_cb *cb, void *ctx)
{
    const char *what = "instance_lock_many";
    int err = scan_enter(st, S_INST_GET_STARTED, what);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_INST_GET_STARTED];
    for (size_t i = 0; !err && i < n; i++) {
        bind_int64(st, s, 1, ids[i]);
        err = instance_rows(st, s, what, cb, ctx);
    }
    return err;
}

static int sq_instance_claim_due(
    struct store *st, int64_t now_ms, size_t limit, store_instance_cb *cb, void *ctx)
{
    const char *what = "instance_claim_due";
    int err = scan_enter(st, S_INST_CLAIM_DUE, what);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_INST_CLAIM_DUE];
    bind_int64(st, s, 1, now_ms);
    bind_int64(st, s, 2, limit > (size_t)INT64_MAX ? -1 : (int64_t)limit);
    return instance_rows(st, s, what, cb, ctx);
}

static int sq_instance_next_due(struct store *st, int64_t *due_ms)
{
    sqlite3_stmt *s = st->stmt[S_INST_NEXT_DUE];
    int row;
    int err = step(st, s, "instance_next_due", &row);
    if (!err)
        *due_ms = row ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return err;
}

static int
sq_instance_count_waiting(struct store *st,
                          int (*cb)(void *ctx, const char *def_key, const char *waiting, int64_t n),
                          void *ctx)
{
    const char *what = "instance_count_waiting";
    int err = scan_enter(st, S_INST_COUNT_WAITING, what);
    if (err)
        return err;
    sqlite3_stmt *s = st->stmt[S_INST_COUNT_WAITING];
    for (;;) {
        int row;
        if ((err = step(st, s, what, &row)) || !row)
            break;
        if ((err = cb(ctx, col_text(s, 0), col_text(s, 1), sqlite3_column_int64(s, 2))))
            break;
    }
    sqlite3_reset(s);
    return err;
}

static int sq_outbox_adopt(struct store *st, int64_t *n)
{
    (void)st;
    if (n)
        *n = 0; /* one node: every row is its own */
    return 0;
}

/* ---- open and close ------------------------------------------------------------------- */

static void sq_close(struct store *st)
{
    if (!st)
        return;
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    if (st->db) {
        /* An open transaction is rolled back; the last connection checkpoints the WAL. */
        int rc = sqlite3_close(st->db);
        if (rc != SQLITE_OK)
            FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "%s: close: %s", st->path, sqlite3_errstr(rc));
    }
    free(st->path);
    free(st);
}

/* A missing directory would only give SQLite's "unable to open database file". */
static int check_dir(const char *path, char *errstr, size_t n)
{
    if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0)
        return 0;
    const char *slash = strrchr(path, '/');
    if (!slash)
        return 0; /* the current directory */
    char *dir = flowd_xstrndup(path, slash == path ? 1 : (size_t)(slash - path));
    struct stat sb;
    int err = 0;
    if (stat(dir, &sb) != 0) {
        if (errno == ENOENT)
            err = flowd_seterr(errstr, n, FLOWD_ERR_IO,
                               "store: directory '%s' does not exist (database '%s')", dir, path);
        else
            err = flowd_seterr(errstr, n, FLOWD_ERR_IO, "store: directory '%s' (database '%s'): %s",
                               dir, path, strerror(errno));
    } else if (!S_ISDIR(sb.st_mode)) {
        err = flowd_seterr(errstr, n, FLOWD_ERR_IO,
                           "store: '%s' is not a directory (database '%s')", dir, path);
    }
    free(dir);
    return err;
}

/* Runs a one-off open-time statement (never a per-call one), optionally reading the first
 * column of its first row as text into out. */
static int
exec_once(struct store *st, const char *sql, char *out, size_t out_size, char *errstr, size_t n)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW && out)
            snprintf(out, out_size, "%s", col_text(s, 0) ? col_text(s, 0) : "");
        if (rc == SQLITE_ROW || rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    int err = 0;
    if (rc != SQLITE_OK)
        err = flowd_seterr(errstr, n, map_rc(rc), "store: database '%s': %s: %s", st->path, sql,
                           sqlite3_errmsg(st->db));
    sqlite3_finalize(s);
    return err;
}

static int read_user_version(struct store *st, int *version, char *errstr, size_t n)
{
    char text[32];
    int err = exec_once(st, "PRAGMA user_version", text, sizeof(text), errstr, n);
    if (!err)
        *version = (int)strtol(text, NULL, 10);
    return err;
}

static int refuse_newer(struct store *st, int have, char *errstr, size_t n)
{
    return flowd_seterr(errstr, n, FLOWD_ERR_STATE,
                        "store: database '%s' has schema version %d, newer than the %d this flowd "
                        "knows: it was written by a newer flowd; upgrade flowd or use another "
                        "data directory",
                        st->path, have, store_sqlite_schema_version);
}

/* Applies the migrations above user_version in one transaction. */
static int migrate(struct store *st, char *errstr, size_t n)
{
    const int want = store_sqlite_schema_version;
    int have;
    int err = read_user_version(st, &have, errstr, n);
    if (err)
        return err;
    if (have > want)
        return refuse_newer(st, have, errstr, n);
    if (have == want)
        return 0;

    if ((err = exec_once(st, "BEGIN IMMEDIATE", NULL, 0, errstr, n)))
        return err;
    /* Re-read under the write lock: another process may have migrated meanwhile. */
    if ((err = read_user_version(st, &have, errstr, n)))
        goto out;
    if (have > want) {
        err = refuse_newer(st, have, errstr, n);
        goto out;
    }
    for (int v = have; v < want; v++) {
        char *msg = NULL;
        int rc = sqlite3_exec(st->db, store_sqlite_migrations[v], NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
            err = flowd_seterr(errstr, n, map_rc(rc),
                               "store: database '%s': schema migration %d -> %d failed: %s",
                               st->path, v, v + 1, msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            goto out;
        }
    }
    /* The only SQL text built at run time: PRAGMA takes no parameters, and this is open. */
    char sql[48];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", want);
    if ((err = exec_once(st, sql, NULL, 0, errstr, n)))
        goto out;
    if ((err = exec_once(st, "COMMIT", NULL, 0, errstr, n)))
        goto out;
    if (have < want)
        FLOWD_LOG(LOG_INFO, LOG_SUB_STORE, "%s: schema migrated from version %d to %d", st->path,
                  have, want);
    return 0;
out:
    if (!sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

static int sq_open(const struct store_options *opt, struct store **out, char *errstr, size_t n)
{
    *out = NULL;
    store_sqlite_global_init();
    if (!opt || !opt->path || !*opt->path)
        return flowd_seterr(errstr, n, FLOWD_ERR_INVAL, "store: no database path given");

    const char *sync = opt->synchronous && *opt->synchronous ? opt->synchronous : "FULL";
    const char *sync_sql;
    if (strcasecmp(sync, "FULL") == 0)
        sync_sql = "PRAGMA synchronous = FULL";
    else if (strcasecmp(sync, "NORMAL") == 0)
        sync_sql = "PRAGMA synchronous = NORMAL";
    else
        return flowd_seterr(errstr, n, FLOWD_ERR_INVAL,
                            "store: synchronous must be FULL or NORMAL, not '%s'", sync);

    int err = check_dir(opt->path, errstr, n);
    if (err)
        return err;

    struct store *st = flowd_xcalloc(1, sizeof(*st));
    st->path = flowd_xstrdup(opt->path);
    int rc = sqlite3_open_v2(st->path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                 SQLITE_OPEN_EXRESCODE,
                             NULL);
    if (rc != SQLITE_OK) {
        int sys = st->db ? sqlite3_system_errno(st->db) : 0;
        err = flowd_seterr(errstr, n, map_rc(rc), "store: cannot open database '%s': %s%s%s",
                           st->path, st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc),
                           sys ? ": " : "", sys ? strerror(sys) : "");
        goto err;
    }
    sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);

    char mode[16];
    if ((err = exec_once(st, "PRAGMA journal_mode = WAL", mode, sizeof(mode), errstr, n)))
        goto err;
    if (strcasecmp(mode, "wal") != 0 && strcmp(st->path, ":memory:") != 0) {
        err = flowd_seterr(errstr, n, FLOWD_ERR_IO,
                           "store: database '%s': cannot switch to WAL journal mode (got '%s')",
                           st->path, mode);
        goto err;
    }
    if ((err = exec_once(st, sync_sql, NULL, 0, errstr, n)))
        goto err;
    if ((err = migrate(st, errstr, n)))
        goto err;

    for (int i = 0; i < S_COUNT; i++) {
        rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
                                NULL);
        if (rc != SQLITE_OK) {
            err = flowd_seterr(errstr, n, map_rc(rc), "store: database '%s': preparing \"%s\": %s",
                               st->path, stmt_sql[i], sqlite3_errmsg(st->db));
            goto err;
        }
    }
    *out = st;
    return 0;
err:
    sq_close(st);
    return err;
}

const struct store_methods store_sqlite_methods = {
    3,
    "sqlite",
    sq_open,
    sq_close,
    sq_begin,
    sq_commit,
    sq_rollback,
    sq_def_put,
    sq_def_scan,
    sq_instance_max_id,
    sq_instance_put,
    sq_instance_get,
    sq_instance_id_by_uuid,
    sq_instance_scan_active,
    sq_instance_count_by_state,
    sq_history_add,
    sq_history_scan,
    sq_outbox_add,
    sq_outbox_scan_unsent,
    sq_outbox_mark_sent,
    sq_outbox_requeue,
    sq_outbox_purge,
    sq_inbox_check_add,
    sq_inbox_purge,
    sq_instance_list,
    sq_outbox_list_topic,
    sq_outbox_get,
    sq_outbox_count_unsent,
    sq_inbox_forget,
    sq_instance_lock,
    sq_instance_lock_many,
    sq_instance_claim_due,
    sq_instance_next_due,
    sq_outbox_adopt,
    sq_instance_count_waiting,
};
