/* store_pg.c - the PostgreSQL backend of store.h (store_pg_methods), on libpq.
 *
 * One connection per struct store, opened from store_options.dsn. The schema comes from the
 * migration scripts below, applied at open in one transaction under an advisory lock, with the
 * version kept in the table schema_version. Invariants:
 * - every statement is prepared once per connection (PQprepare, again after a reconnect) and run
 *   with PQexecPrepared: parameters are text except the outbox value (binary BYTEA), results are
 *   binary (integers are read by their width, text is raw bytes, BYTEA is exact);
 * - a result is read whole before callbacks run, so a scan callback may call other methods; one
 *   that re-enters the scan it is called from is refused (FLOWD_ERR_STATE). The scan of active
 *   instances walks the table in pages by id, so its memory stays bounded;
 * - rows given to callbacks point into a PGresult: borrowed for the callback only;
 * - statements that may meet a duplicate (history, inbox) use ON CONFLICT DO NOTHING, because in
 *   PostgreSQL any error aborts the whole transaction (SQLite only fails the statement). A
 *   commit of such an aborted transaction is refused with FLOWD_ERR_STATE, never reported as done;
 * - each failure is logged once here with the operation (ERROR, or WARN for what is retried) and
 *   mapped: serialization failure / deadlock / lost connection -> FLOWD_ERR_AGAIN, unique
 *   violation -> FLOWD_ERR_EXISTS, anything else -> FLOWD_ERR_IO. A connection lost outside a
 *   transaction is re-opened by the next call; inside one, every call returns FLOWD_ERR_AGAIN
 *   until x_rollback. Notices go to FLOWD_LOG through the notice processor. The DSN itself is
 *   never logged (it may hold a password): messages name database, host and port.
 * @thread A handle is used by one thread at a time.
 */
#include "store.h"
#include "store_int.h"

#include "../common/buf.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/banned.h"

#define PG_MAX_PARAMS 10
#define PG_SCAN_PAGE  512
/* Serializes schema migrations of concurrent flowd processes (pg_advisory_xact_lock key). */
#define PG_MIGRATE_LOCK 0x666c6f7764LL
/* pg_try_advisory_lock(PG_NODE_LOCK, node id): held by a node's write connection while it runs. */
#define PG_NODE_LOCK 1718382455 /* "flow" */

/* ---- schema --------------------------------------------------------------------------- */

/* Append, never edit: a database made by an older flowd must reach the same schema. The same
 * logical tables as the SQLite schema (store_schema.c); definitions.seq gives "oldest first". */
static const char *const pg_migrations[] = {
    /* 0 -> 1: the initial schema. */
    "CREATE TABLE definitions ("
    "  key TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  uuid TEXT NOT NULL,"
    "  json TEXT NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  seq BIGSERIAL NOT NULL UNIQUE,"
    "  PRIMARY KEY (key, version));"

    "CREATE TABLE instances ("
    "  id BIGINT PRIMARY KEY,"
    "  uuid TEXT NOT NULL UNIQUE,"
    "  def_key TEXT NOT NULL,"
    "  def_version INTEGER NOT NULL,"
    "  state TEXT NOT NULL,"
    "  blob TEXT NOT NULL,"
    "  started_ms BIGINT NOT NULL,"
    "  updated_ms BIGINT NOT NULL);"
    "CREATE INDEX instances_state ON instances (state);"

    "CREATE TABLE history ("
    "  instance_id BIGINT NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  node_id TEXT,"
    "  state TEXT NOT NULL,"
    "  at_ms BIGINT NOT NULL,"
    "  detail TEXT,"
    "  PRIMARY KEY (instance_id, seq));"

    "CREATE TABLE outbox ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  instance_id BIGINT NOT NULL,"
    "  message_id TEXT NOT NULL,"
    "  topic TEXT NOT NULL,"
    "  key TEXT,"
    "  value BYTEA,"
    "  headers TEXT,"
    "  created_ms BIGINT NOT NULL,"
    "  sent_ms BIGINT);"
    "CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_ms IS NULL;"
    "CREATE INDEX outbox_message_id ON outbox (message_id);"

    "CREATE TABLE inbox ("
    "  key TEXT PRIMARY KEY,"
    "  seen_ms BIGINT NOT NULL);",

    /* 1 -> 2: listing instances by definition and dead letters (outbox rows by topic). */
    "CREATE INDEX instances_def_key ON instances (def_key, id);"
    "CREATE INDEX instances_started ON instances (started_ms);"
    "CREATE INDEX outbox_topic ON outbox (topic, id);",

    /* 2 -> 3: several nodes: due times any node can claim; outbox rows published by the node
     * that wrote them (or adopted them). */
    "ALTER TABLE instances ADD COLUMN due_ms BIGINT NOT NULL DEFAULT 0;"
    "CREATE INDEX instances_due ON instances (due_ms) WHERE state = 'STARTED' AND due_ms > 0;"
    "UPDATE instances SET due_ms = 1 WHERE state = 'STARTED';" /* looked at once, see SQLite */
    "ALTER TABLE instances ADD COLUMN waiting TEXT;"           /* for /metrics */
    "ALTER TABLE outbox ADD COLUMN node_id INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX outbox_unsent_node ON outbox (node_id, id) WHERE sent_ms IS NULL;",
};

const int store_pg_schema_version = (int)(sizeof(pg_migrations) / sizeof(pg_migrations[0]));

/* ---- statements ----------------------------------------------------------------------- */

enum stmt_id {
    S_DEF_PUT,
    S_DEF_SCAN,
    S_INST_MAX_ID,
    S_INST_GET,
    S_INST_BY_UUID,
    S_INST_SCAN_ACTIVE,
    S_INST_COUNT,
    S_HIST_SCAN,
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
    S_INST_LOCK,
    S_INST_LOCK_MANY,
    S_INST_CLAIM_DUE,
    S_INST_NEXT_DUE,
    S_OUT_ADOPT,
    S_INST_COUNT_WAITING,
    S_OUT_IDS,
    S_COUNT
};

#define OUTBOX_COLS \
    "id, instance_id, message_id, topic, key, value, headers, created_ms, coalesce(sent_ms, 0)"

static const char *const stmt_sql[S_COUNT] = {
    /* One round trip: compare with the newest version, insert the next one if the json differs,
     * return (version, uuid, created). */
    [S_DEF_PUT] = "WITH newest AS (SELECT version, uuid, json FROM definitions WHERE key = $1::text"
                  " ORDER BY version DESC LIMIT 1),"
                  " ins AS (INSERT INTO definitions (key, version, uuid, json, created_ms)"
                  " SELECT $1::text, coalesce((SELECT version FROM newest), 0) + 1, $3::text,"
                  " $2::text, $4::bigint"
                  " WHERE NOT EXISTS (SELECT 1 FROM newest WHERE json = $2::text)"
                  " RETURNING version, uuid)"
                  " SELECT version, uuid, 1 FROM ins"
                  " UNION ALL SELECT version, uuid, 0 FROM newest WHERE json = $2::text",
    [S_DEF_SCAN] = "SELECT key, version, uuid, json, created_ms FROM definitions ORDER BY seq",
    [S_INST_MAX_ID] = "SELECT coalesce(max(id), 0)::bigint FROM instances"
                      " WHERE id >= $1::bigint AND id < $2::bigint",
    [S_INST_GET] = "SELECT blob FROM instances WHERE id = $1::bigint",
    [S_INST_BY_UUID] = "SELECT id FROM instances WHERE uuid = $1::text",
    [S_INST_SCAN_ACTIVE] = "SELECT id, uuid, def_key, def_version, state, blob, started_ms,"
                           " updated_ms FROM instances WHERE state = 'STARTED' AND id > $1::bigint"
                           " ORDER BY id LIMIT $2::bigint",
    [S_INST_COUNT] = "SELECT state, count(*) FROM instances GROUP BY state ORDER BY state",
    [S_HIST_SCAN] = "SELECT seq, node_id, state, at_ms, detail FROM history"
                    " WHERE instance_id = $1::bigint ORDER BY seq",
    [S_OUT_SCAN_UNSENT] = "SELECT " OUTBOX_COLS " FROM outbox WHERE sent_ms IS NULL"
                          " AND node_id = $2::integer ORDER BY id LIMIT $1::bigint",
    [S_OUT_MARK_SENT] = "UPDATE outbox SET sent_ms = $2::bigint WHERE id = ANY ($1::bigint[])",
    /* a copy, not an update: the original may still be in flight, and its delivery report
     * (mark_sent by row id) must not cancel the re-send */
    [S_OUT_REQUEUE] = "INSERT INTO outbox (instance_id, message_id, topic, key, value, headers,"
                      " created_ms, sent_ms, node_id) SELECT instance_id, message_id, topic, key,"
                      " value, headers, created_ms, NULL, $2::integer FROM outbox WHERE id ="
                      " (SELECT max(id) FROM outbox WHERE message_id = $1::text)",
    [S_OUT_PURGE] = "DELETE FROM outbox WHERE sent_ms IS NOT NULL AND ((topic <> $2::text AND"
                    " sent_ms < $1::bigint AND instance_id NOT IN (SELECT id FROM instances WHERE"
                    " state = 'STARTED')) OR (topic = $2::text AND sent_ms < $3::bigint))",
    [S_IN_ADD] = "INSERT INTO inbox (key, seen_ms) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    [S_IN_PURGE] = "DELETE FROM inbox WHERE seen_ms < $1::bigint",
    /* Unset filters are NULL or 0. */
    [S_INST_LIST] = "SELECT id, uuid, def_key, def_version, state, blob, started_ms, updated_ms"
                    " FROM instances WHERE ($1::text IS NULL OR state = $1::text)"
                    " AND ($2::text IS NULL OR def_key = $2::text)"
                    " AND ($3::bigint = 0 OR started_ms >= $3::bigint)"
                    " AND ($4::bigint = 0 OR started_ms < $4::bigint)"
                    " AND ($5::bigint = 0 OR id < $5::bigint)"
                    " ORDER BY id DESC LIMIT $6::bigint",
    [S_OUT_LIST_TOPIC] = "SELECT " OUTBOX_COLS " FROM outbox WHERE topic = $1::text"
                         " AND ($2::bigint = 0 OR id < $2::bigint) ORDER BY id DESC"
                         " LIMIT $3::bigint",
    [S_OUT_GET] = "SELECT " OUTBOX_COLS " FROM outbox WHERE id = $1::bigint",
    [S_OUT_COUNT_UNSENT] = "SELECT count(*) FROM outbox WHERE sent_ms IS NULL",
    [S_IN_FORGET] = "DELETE FROM inbox WHERE key = $1::text",
    [S_INST_LOCK] = "SELECT blob FROM instances WHERE id = $1::bigint FOR UPDATE",
    /* the sort is below the row locks: rows are locked in id order */
    [S_INST_LOCK_MANY] = "SELECT id, uuid, def_key, def_version, state, blob, started_ms,"
                         " updated_ms FROM instances WHERE id = ANY ($1::bigint[])"
                         " AND state = 'STARTED' ORDER BY id FOR UPDATE",
    [S_INST_CLAIM_DUE] = "SELECT id, uuid, def_key, def_version, state, blob, started_ms,"
                         " updated_ms FROM instances WHERE state = 'STARTED' AND due_ms > 0"
                         " AND due_ms <= $1::bigint ORDER BY due_ms LIMIT $2::bigint"
                         " FOR UPDATE SKIP LOCKED",
    [S_INST_NEXT_DUE] = "SELECT coalesce(min(due_ms), 0)::bigint FROM instances"
                        " WHERE state = 'STARTED' AND due_ms > 0",
    /* A node is alive while its write connection holds its node lock (pg_locks shows it). */
    [S_OUT_ADOPT] = "UPDATE outbox SET node_id = $1::integer WHERE sent_ms IS NULL"
                    " AND node_id <> $1::integer AND NOT EXISTS (SELECT 1 FROM pg_locks l"
                    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
                    " AND l.database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                    " AND l.classid = $2::bigint::oid AND l.objid = outbox.node_id::bigint::oid)",
    [S_INST_COUNT_WAITING] =
        "SELECT def_key, waiting, count(*) FROM instances WHERE state = 'STARTED'"
        " AND waiting IS NOT NULL GROUP BY def_key, waiting",
    /* outbox ids are taken ahead, so that outbox rows can be sent in one statement at commit */
    [S_OUT_IDS] = "SELECT nextval(pg_get_serial_sequence('outbox', 'id'))"
                  " FROM generate_series(1, $1::integer)",
};

/* Instances, history and outbox rows are written with multi-row statements (store_pg_rows.c):
 * an instance is an upsert on id (a uuid already used by another id fails with 23505, never
 * replaces it); a duplicate (instance_id, seq) inserts nothing and is reported as
 * FLOWD_ERR_EXISTS without aborting the transaction. */
#define INST_COLS                                                                     \
    "INSERT INTO instances (id, uuid, def_key, def_version, state, blob, started_ms," \
    " updated_ms, due_ms, waiting) VALUES "
#define INST_CONFLICT                                                                    \
    " ON CONFLICT (id) DO UPDATE SET uuid = excluded.uuid, def_key = excluded.def_key,"  \
    " def_version = excluded.def_version, state = excluded.state, blob = excluded.blob," \
    " started_ms = excluded.started_ms, updated_ms = excluded.updated_ms,"               \
    " due_ms = excluded.due_ms, waiting = excluded.waiting"
#define HIST_COLS     "INSERT INTO history (instance_id, seq, node_id, state, at_ms, detail) VALUES "
#define HIST_CONFLICT " ON CONFLICT (instance_id, seq) DO NOTHING"
#define OUT_COLS                                                                               \
    "INSERT INTO outbox (id, instance_id, message_id, topic, key, value, headers, created_ms," \
    " node_id) VALUES "
#define OUT_ID_BLOCK 256

struct store {
    PGconn *conn;
    char *label;       /* "database 'x' on host:port", for messages */
    int synchronous;   /* 1: synchronous_commit on */
    int tx_open;       /* a transaction was begun by x_begin and not ended */
    int busy[S_COUNT]; /* scans in progress (re-entry check) */
    int node_id;       /* stamped on the outbox rows written */
    int claim_node;    /* holds the node lock (again after a reconnect) */
    /* Writes of the open transaction not sent yet: they go as one statement per table before
     * any other statement that may read them, and at commit (flush). */
    struct pg_rows inst, hist, out;
    int64_t ids[OUT_ID_BLOCK]; /* outbox ids taken ahead */
    size_t nids, ids_at;
};

/* Parameters of one call. Text values must live for the call only. */
struct params {
    int n;
    const char *v[PG_MAX_PARAMS];
    int len[PG_MAX_PARAMS];
    int fmt[PG_MAX_PARAMS];
    char num[PG_MAX_PARAMS][24];
};

static void p_text(struct params *p, const char *s)
{
    p->v[p->n] = s; /* NULL is SQL NULL */
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

static void p_i64(struct params *p, int64_t x)
{
    snprintf(p->num[p->n], sizeof(p->num[0]), "%" PRId64, x);
    p_text(p, p->num[p->n]);
}

/* A LIMIT: above INT64_MAX means none (SQL NULL). */
static void p_limit(struct params *p, size_t limit)
{
    if (limit > (size_t)INT64_MAX)
        p_text(p, NULL);
    else
        p_i64(p, (int64_t)limit);
}

static void p_bin(struct params *p, const void *data, int len)
{
    p->v[p->n] = data;
    p->len[p->n] = len;
    p->fmt[p->n] = 1;
    p->n++;
}

/* Binary result columns: integers by their width (int2/int4/int8, big-endian). */
static int64_t col_i64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    const unsigned char *p = (const unsigned char *)PQgetvalue(res, row, col);
    int len = PQgetlength(res, row, col);
    uint64_t v = 0;
    for (int i = 0; i < len && i < 8; i++)
        v = v << 8 | p[i];
    if (len == 2)
        return (int16_t)(uint16_t)v;
    if (len == 4)
        return (int32_t)(uint32_t)v;
    return (int64_t)v;
}

static const char *col_text(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/* ---- notices, errors ------------------------------------------------------------------ */

static void notice_cb(void *arg, const char *msg)
{
    struct store *st = arg;
    size_t len = strlen(msg);
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        len--;
    enum log_level level = LOG_DEBUG; /* NOTICE, DEBUG, LOG: e.g. "already exists, skipping" */
    if (strncmp(msg, "WARNING", 7) == 0)
        level = LOG_WARN;
    else if (strncmp(msg, "INFO", 4) == 0)
        level = LOG_INFO;
    FLOWD_LOG(level, LOG_SUB_STORE, "%s: postgresql: %.*s", st->label ? st->label : "postgresql",
              (int)len, msg);
}

static int is_transient(const char *sqlstate)
{
    return strcmp(sqlstate, "40001") == 0     /* serialization_failure */
           || strcmp(sqlstate, "40P01") == 0  /* deadlock_detected */
           || strncmp(sqlstate, "08", 2) == 0 /* connection exceptions */
           || strcmp(sqlstate, "57P01") == 0  /* admin_shutdown */
           || strcmp(sqlstate, "57P02") == 0  /* crash_shutdown */
           || strcmp(sqlstate, "57P03") == 0; /* cannot_connect_now */
}

static int map_result(struct store *st, const PGresult *res)
{
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(st->conn) != CONNECTION_OK)
        return FLOWD_ERR_AGAIN;
    if (!sqlstate)
        return FLOWD_ERR_IO;
    if (is_transient(sqlstate))
        return FLOWD_ERR_AGAIN;
    if (strcmp(sqlstate, "23505") == 0) /* unique_violation */
        return FLOWD_ERR_EXISTS;
    if (strcmp(sqlstate, "53200") == 0) /* out_of_memory */
        return FLOWD_ERR_NOMEM;
    return FLOWD_ERR_IO;
}

/* libpq messages span lines (ERROR, DETAIL, HINT): one log line each, trimmed. */
static void one_line(const char *msg, char *out, size_t n)
{
    size_t o = 0;
    for (const char *p = msg; *p && o + 1 < n; p++) {
        char c = *p == '\n' || *p == '\t' ? ' ' : *p;
        if (c == ' ' && (o == 0 || out[o - 1] == ' '))
            continue;
        out[o++] = c;
    }
    while (o && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
}

/* Logs a failed result of what, once, and returns its flowd_err. Clears res. */
static int fail(struct store *st, PGresult *res, const char *what)
{
    int err = map_result(st, res);
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!msg || !*msg)
        msg = PQerrorMessage(st->conn);
    char line[512];
    one_line(msg, line, sizeof(line));
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    enum log_level level = err == FLOWD_ERR_AGAIN ? LOG_WARN : LOG_ERROR;
    FLOWD_LOG(level, LOG_SUB_STORE, "%s: %s: %s (sqlstate %s)", st->label, what, line,
              sqlstate ? sqlstate : "none");
    PQclear(res);
    return err;
}

static int fail_inval(struct store *st, const char *what, const char *why)
{
    FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "%s: %s: %s", st->label, what, why);
    return FLOWD_ERR_INVAL;
}

/* ---- connection ----------------------------------------------------------------------- */

static char *make_label(PGconn *conn)
{
    const char *host = PQhost(conn);
    const char *port = PQport(conn);
    const char *db = PQdb(conn);
    return flowd_xasprintf("postgresql database '%s' on %s:%s", db ? db : "?",
                           host && *host ? host : "localhost", port && *port ? port : "5432");
}

/* Session settings and prepared statements of a (re)opened connection. */
static int session_setup(struct store *st, char *errstr, size_t n)
{
    const char *sql =
        st->synchronous ? "SET synchronous_commit = on" : "SET synchronous_commit = off";
    PGresult *res = PQexec(st->conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        int err = flowd_seterr(errstr, n, map_result(st, res), "store: %s: %s: %s", st->label, sql,
                               PQresultErrorMessage(res));
        PQclear(res);
        return err;
    }
    PQclear(res);
    if (st->claim_node) {
        char sql2[96];
        snprintf(sql2, sizeof(sql2), "SELECT pg_try_advisory_lock(%d, %d)", PG_NODE_LOCK,
                 st->node_id);
        res = PQexec(st->conn, sql2);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            int err = flowd_seterr(errstr, n, map_result(st, res), "store: %s: %s: %s", st->label,
                                   sql2, PQresultErrorMessage(res));
            PQclear(res);
            return err;
        }
        int got = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        if (!got)
            return flowd_seterr(errstr, n, FLOWD_ERR_EXISTS,
                                "store: engine.node-id %d is in use by another flowd connected "
                                "to %s; give each node its own engine.node-id",
                                st->node_id, st->label);
    }
    for (int i = 0; i < S_COUNT; i++) {
        char name[16];
        snprintf(name, sizeof(name), "flowd_%d", i);
        res = PQprepare(st->conn, name, stmt_sql[i], 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            int err =
                flowd_seterr(errstr, n, map_result(st, res), "store: %s: preparing \"%s\": %s",
                             st->label, stmt_sql[i], PQresultErrorMessage(res));
            PQclear(res);
            return err;
        }
        PQclear(res);
    }
    return 0;
}

/* Before each call: a connection lost outside a transaction is re-opened; inside one, the
 * transaction is gone and the caller must roll back. */
static int conn_check(struct store *st, const char *what)
{
    if (PQstatus(st->conn) == CONNECTION_OK)
        return 0;
    if (st->tx_open) {
        FLOWD_LOG(LOG_WARN, LOG_SUB_STORE,
                  "%s: %s: the connection was lost inside a transaction; it must be rolled back",
                  st->label, what);
        return FLOWD_ERR_AGAIN;
    }
    PQreset(st->conn);
    if (PQstatus(st->conn) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(st->conn);
        size_t len = strlen(msg);
        while (len && msg[len - 1] == '\n')
            len--;
        FLOWD_LOG(LOG_WARN, LOG_SUB_STORE, "%s: %s: cannot reconnect: %.*s", st->label, what,
                  (int)len, msg);
        return FLOWD_ERR_AGAIN;
    }
    char errstr[FLOWD_ERRSTR_SIZE];
    if (session_setup(st, errstr, sizeof(errstr))) {
        FLOWD_LOG(LOG_WARN, LOG_SUB_STORE, "%s: %s: after reconnecting: %s", st->label, what,
                  errstr);
        return FLOWD_ERR_AGAIN;
    }
    FLOWD_LOG(LOG_INFO, LOG_SUB_STORE, "%s: reconnected", st->label);
    return 0;
}

static int flush(struct store *st);

/* Statements that cannot see the buffered writes (other tables): no flush before them. */
static int reads_nothing_buffered(enum stmt_id id)
{
    return id == S_IN_ADD || id == S_IN_PURGE || id == S_IN_FORGET || id == S_DEF_PUT ||
           id == S_DEF_SCAN || id == S_OUT_IDS;
}

/* Runs prepared statement id. On success *out (if not NULL) gets the result, to PQclear. */
static int
run(struct store *st, enum stmt_id id, const struct params *p, const char *what, PGresult **out)
{
    if (out)
        *out = NULL;
    int err = conn_check(st, what);
    if (err)
        return err;
    if (!reads_nothing_buffered(id) && (err = flush(st)))
        return err;
    char name[16];
    snprintf(name, sizeof(name), "flowd_%d", (int)id);
    PGresult *res = PQexecPrepared(st->conn, name, p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL,
                                   p ? p->fmt : NULL, 1);
    ExecStatusType rs = PQresultStatus(res);
    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK)
        return fail(st, res, what);
    if (out)
        *out = res;
    else
        PQclear(res);
    return 0;
}

/* Number of rows a command changed (PQcmdTuples). */
static int64_t changed(PGresult *res)
{
    const char *s = PQcmdTuples(res);
    return s && *s ? strtoll(s, NULL, 10) : 0;
}

static int simple(struct store *st, const char *sql, const char *what)
{
    int err = conn_check(st, what);
    if (err)
        return err;
    PGresult *res = PQexec(st->conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return fail(st, res, what);
    PQclear(res);
    return 0;
}

static int scan_enter(struct store *st, enum stmt_id id, const char *what)
{
    if (!st->busy[id]) {
        st->busy[id] = 1;
        return 0;
    }
    FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "%s: %s: called again from its own callback", st->label,
              what);
    return FLOWD_ERR_STATE;
}

/* ---- buffered writes ------------------------------------------------------------------ */

/* Sends r's rows. expect_all: a row that inserted nothing (ON CONFLICT DO NOTHING) is a
 * duplicate: FLOWD_ERR_EXISTS. The buffer is emptied either way (on an error the transaction
 * is rolled back by the caller). */
static int flush_rows(struct store *st, struct pg_rows *r, const char *what, int expect_all)
{
    int err = 0;
    for (size_t first = 0; !err && first < r->rows;) {
        if ((err = conn_check(st, what)))
            break;
        size_t n = 0;
        PGresult *res = pg_rows_exec(st->conn, r, first, &n);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            err = fail(st, res, what);
            break;
        }
        int64_t done = changed(res);
        PQclear(res);
        if (expect_all && done != (int64_t)n) {
            FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE,
                      "%s: %s: %lld of %zu rows were already there (a transition applied twice)",
                      st->label, what, (long long)((int64_t)n - done), n);
            err = FLOWD_ERR_EXISTS;
        }
        first += n;
    }
    pg_rows_clear(r);
    return err;
}

static int flush(struct store *st)
{
    int err = flush_rows(st, &st->inst, "instance_put", 0);
    int e2 = flush_rows(st, &st->hist, "history_add", 1);
    int e3 = flush_rows(st, &st->out, "outbox_add", 0);
    return err ? err : e2 ? e2 : e3;
}

/* Outside a transaction a write goes at once (its error is the call's). */
static int written(struct store *st)
{
    return st->tx_open ? 0 : flush(st);
}

/* ---- transactions --------------------------------------------------------------------- */

static int pg_begin(struct store *st)
{
    if (st->tx_open || PQtransactionStatus(st->conn) == PQTRANS_INTRANS ||
        PQtransactionStatus(st->conn) == PQTRANS_INERROR) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "%s: begin: a transaction is already open", st->label);
        return FLOWD_ERR_STATE;
    }
    int err = simple(st, "BEGIN", "begin transaction");
    if (!err)
        st->tx_open = 1;
    return err;
}

/* On FLOWD_ERR_AGAIN after a lost connection the caller rolls back (the transaction is gone). */
static int pg_commit(struct store *st)
{
    if (!st->tx_open) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE,
                  "%s: commit: no transaction is open: nothing was committed", st->label);
        return FLOWD_ERR_STATE;
    }
    if (PQstatus(st->conn) == CONNECTION_OK && PQtransactionStatus(st->conn) == PQTRANS_INERROR) {
        /* COMMIT would answer ROLLBACK without an error: say it. */
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE,
                  "%s: commit: the transaction was aborted by an earlier error: nothing was "
                  "committed",
                  st->label);
        simple(st, "ROLLBACK", "roll back transaction");
        st->tx_open = 0;
        return FLOWD_ERR_STATE;
    }
    int err = flush(st);
    if (err) /* nothing is committed: the caller rolls back */
        return err;
    err = simple(st, "COMMIT", "commit transaction");
    if (!err || PQstatus(st->conn) == CONNECTION_OK)
        st->tx_open = PQtransactionStatus(st->conn) != PQTRANS_IDLE;
    return err;
}

static int pg_rollback(struct store *st)
{
    st->tx_open = 0;
    pg_rows_clear(&st->inst);
    pg_rows_clear(&st->hist);
    pg_rows_clear(&st->out);
    if (PQstatus(st->conn) != CONNECTION_OK)
        return 0; /* the server rolled back when the connection went; the next call reconnects */
    if (PQtransactionStatus(st->conn) == PQTRANS_IDLE)
        return 0;
    return simple(st, "ROLLBACK", "roll back transaction");
}

/* ---- definitions ---------------------------------------------------------------------- */

static int pg_def_put(struct store *st,
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
    struct params p = {0};
    p_text(&p, key);
    p_text(&p, json);
    p_text(&p, new_uuid);
    p_i64(&p, now_ms);
    PGresult *res;
    int err = run(st, S_DEF_PUT, &p, "def_put", &res);
    if (err)
        return err;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return fail_inval(st, "def_put", "unexpected result (concurrent writer?)");
    }
    if (version)
        *version = (int)col_i64(res, 0, 0);
    if (created)
        *created = (int)col_i64(res, 0, 2);
    if (uuid_out)
        snprintf(uuid_out, 37, "%s", col_text(res, 0, 1) ? col_text(res, 0, 1) : "");
    PQclear(res);
    return 0;
}

static int pg_def_scan(struct store *st, store_def_cb *cb, void *ctx)
{
    const char *what = "def_scan";
    int err = scan_enter(st, S_DEF_SCAN, what);
    if (err)
        return err;
    PGresult *res;
    err = run(st, S_DEF_SCAN, NULL, what, &res);
    for (int i = 0; !err && i < PQntuples(res); i++) {
        struct store_def_row r = {
            .key = col_text(res, i, 0),
            .version = (int)col_i64(res, i, 1),
            .uuid = col_text(res, i, 2),
            .json = col_text(res, i, 3),
            .created_ms = col_i64(res, i, 4),
        };
        err = cb(ctx, &r);
    }
    PQclear(res);
    st->busy[S_DEF_SCAN] = 0;
    return err;
}

/* ---- instances ------------------------------------------------------------------------ */

static int pg_instance_max_id(struct store *st, int64_t lo, int64_t hi, int64_t *max_id)
{
    struct params p = {0};
    p_i64(&p, lo);
    p_i64(&p, hi);
    PGresult *res;
    int err = run(st, S_INST_MAX_ID, &p, "instance_max_id", &res);
    if (!err)
        *max_id = PQntuples(res) ? col_i64(res, 0, 0) : 0;
    PQclear(res);
    return err;
}

static int pg_instance_put(struct store *st, const struct store_instance_row *r)
{
    if (!r || !r->uuid || !r->def_key || !r->state || !r->blob)
        return fail_inval(st, "instance_put", "uuid, def_key, state and blob are required");
    /* one statement cannot upsert the same row twice: an instance already waiting goes first */
    for (size_t i = 0; i < st->inst.rows; i++) {
        if (strtoll(st->inst.v[i * (size_t)st->inst.ncols], NULL, 10) == r->id) {
            int err = flush(st);
            if (err)
                return err;
            break;
        }
    }
    struct params p = {0};
    p_i64(&p, r->id);
    p_text(&p, r->uuid);
    p_text(&p, r->def_key);
    p_i64(&p, r->def_version);
    p_text(&p, r->state);
    p_text(&p, r->blob);
    p_i64(&p, r->started_ms);
    p_i64(&p, r->updated_ms);
    p_i64(&p, r->due_ms);
    p_text(&p, r->waiting);
    pg_rows_add(&st->inst, p.v, NULL, NULL);
    return written(st);
}

/* One instance's blob by S_INST_GET or S_INST_LOCK. */
static int get_blob(struct store *st, enum stmt_id sid, const char *what, int64_t id, char **blob)
{
    struct params p = {0};
    p_i64(&p, id);
    PGresult *res;
    int err = run(st, sid, &p, what, &res);
    if (err)
        return err;
    if (PQntuples(res) == 0)
        err = FLOWD_ERR_NOTFOUND;
    else
        *blob = flowd_xstrndup(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    PQclear(res);
    return err;
}

static int pg_instance_get(struct store *st, int64_t id, char **blob)
{
    return get_blob(st, S_INST_GET, "instance_get", id, blob);
}

static int pg_instance_id_by_uuid(struct store *st, const char *uuid, int64_t *id)
{
    if (!uuid)
        return FLOWD_ERR_NOTFOUND;
    struct params p = {0};
    p_text(&p, uuid);
    PGresult *res;
    int err = run(st, S_INST_BY_UUID, &p, "instance_id_by_uuid", &res);
    if (err)
        return err;
    if (PQntuples(res) == 0)
        err = FLOWD_ERR_NOTFOUND;
    else
        *id = col_i64(res, 0, 0);
    PQclear(res);
    return err;
}

static void instance_row_of(const PGresult *res, int i, struct store_instance_row *r)
{
    *r = (struct store_instance_row){
        .id = col_i64(res, i, 0),
        .uuid = col_text(res, i, 1),
        .def_key = col_text(res, i, 2),
        .def_version = (int)col_i64(res, i, 3),
        .state = col_text(res, i, 4),
        .blob = col_text(res, i, 5),
        .started_ms = col_i64(res, i, 6),
        .updated_ms = col_i64(res, i, 7),
    };
}

/* Runs instance query id and gives each row to cb (the result is read whole first). */
static int instance_rows(struct store *st,
                         enum stmt_id id,
                         const struct params *p,
                         const char *what,
                         store_instance_cb *cb,
                         void *ctx)
{
    int err = scan_enter(st, id, what);
    if (err)
        return err;
    PGresult *res;
    err = run(st, id, p, what, &res);
    for (int i = 0; !err && i < PQntuples(res); i++) {
        struct store_instance_row r;
        instance_row_of(res, i, &r);
        err = cb(ctx, &r);
    }
    PQclear(res);
    st->busy[id] = 0;
    return err;
}

/* In pages by id: the memory stays bounded however many instances are active. */
static int pg_instance_scan_active(struct store *st, store_instance_cb *cb, void *ctx)
{
    const char *what = "instance_scan_active";
    int err = scan_enter(st, S_INST_SCAN_ACTIVE, what);
    if (err)
        return err;
    int64_t after = INT64_MIN;
    for (;;) {
        struct params p = {0};
        p_i64(&p, after);
        p_i64(&p, PG_SCAN_PAGE);
        PGresult *res;
        if ((err = run(st, S_INST_SCAN_ACTIVE, &p, what, &res)))
            break;
        int rows = PQntuples(res);
        for (int i = 0; !err && i < rows; i++) {
            struct store_instance_row r;
            instance_row_of(res, i, &r);
            after = r.id;
            err = cb(ctx, &r);
        }
        PQclear(res);
        if (err || rows < PG_SCAN_PAGE)
            break;
    }
    st->busy[S_INST_SCAN_ACTIVE] = 0;
    return err;
}

static int pg_instance_count_by_state(struct store *st,
                                      int (*cb)(void *ctx, const char *state, int64_t n),
                                      void *ctx)
{
    const char *what = "instance_count_by_state";
    int err = scan_enter(st, S_INST_COUNT, what);
    if (err)
        return err;
    PGresult *res;
    err = run(st, S_INST_COUNT, NULL, what, &res);
    for (int i = 0; !err && i < PQntuples(res); i++)
        err = cb(ctx, col_text(res, i, 0), col_i64(res, i, 1));
    PQclear(res);
    st->busy[S_INST_COUNT] = 0;
    return err;
}

/* ---- history -------------------------------------------------------------------------- */

/* A duplicate (instance_id, seq) is a transition applied twice: FLOWD_ERR_EXISTS. */
static int pg_history_add(struct store *st, int64_t instance_id, const struct engine_history *h)
{
    if (!h || !h->state)
        return fail_inval(st, "history_add", "state is required");
    struct params p = {0};
    p_i64(&p, instance_id);
    p_i64(&p, h->seq);
    p_text(&p, h->node_id);
    p_text(&p, h->state);
    p_i64(&p, h->at_ms);
    p_text(&p, h->detail);
    pg_rows_add(&st->hist, p.v, NULL, NULL);
    return written(st);
}

static int pg_history_scan(struct store *st, int64_t instance_id, store_history_cb *cb, void *ctx)
{
    const char *what = "history_scan";
    int err = scan_enter(st, S_HIST_SCAN, what);
    if (err)
        return err;
    struct params p = {0};
    p_i64(&p, instance_id);
    PGresult *res;
    err = run(st, S_HIST_SCAN, &p, what, &res);
    for (int i = 0; !err && i < PQntuples(res); i++) {
        /* struct engine_history has non-const members; the row is still read-only. */
        struct engine_history h = {
            .seq = (uint32_t)col_i64(res, i, 0),
            .node_id = (char *)col_text(res, i, 1),
            .state = (char *)col_text(res, i, 2),
            .at_ms = col_i64(res, i, 3),
            .detail = (char *)col_text(res, i, 4),
        };
        err = cb(ctx, &h);
    }
    PQclear(res);
    st->busy[S_HIST_SCAN] = 0;
    return err;
}

/* ---- outbox --------------------------------------------------------------------------- */

static int
pg_outbox_add(struct store *st, const struct store_outbox_row *r, int64_t now_ms, int64_t *id)
{
    if (!r || !r->message_id || !r->topic)
        return fail_inval(st, "outbox_add", "message_id and topic are required");
    if (r->value && r->value_len > (size_t)INT_MAX) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "%s: outbox_add: value of %zu bytes is too large",
                  st->label, r->value_len);
        return FLOWD_ERR_TOOBIG;
    }
    if (st->ids_at == st->nids) { /* take the next block of ids */
        struct params q = {0};
        p_i64(&q, OUT_ID_BLOCK);
        PGresult *res;
        int err = run(st, S_OUT_IDS, &q, "outbox_add (ids)", &res);
        if (err)
            return err;
        st->nids = (size_t)PQntuples(res);
        for (size_t i = 0; i < st->nids; i++)
            st->ids[i] = col_i64(res, (int)i, 0);
        st->ids_at = 0;
        PQclear(res);
        if (!st->nids)
            return fail_inval(st, "outbox_add", "the outbox id sequence gave no id");
    }
    int64_t oid = st->ids[st->ids_at++];
    struct params p = {0};
    p_i64(&p, oid);
    p_i64(&p, r->instance_id);
    p_text(&p, r->message_id);
    p_text(&p, r->topic);
    p_text(&p, r->key);
    if (r->value)
        p_bin(&p, r->value, (int)r->value_len);
    else
        p_text(&p, NULL);
    p_text(&p, r->headers);
    p_i64(&p, now_ms);
    p_i64(&p, st->node_id);
    pg_rows_add(&st->out, p.v, p.len, p.fmt);
    if (id)
        *id = oid;
    return written(st);
}

/* Reads outbox row i of res (columns as in OUTBOX_COLS). */
static void outbox_row_of(
    const PGresult *res, int i, struct store_outbox_row *r, int64_t *created_ms, int64_t *sent_ms)
{
    memset(r, 0, sizeof(*r));
    r->id = col_i64(res, i, 0);
    r->instance_id = col_i64(res, i, 1);
    r->message_id = col_text(res, i, 2);
    r->topic = col_text(res, i, 3);
    r->key = col_text(res, i, 4);
    if (!PQgetisnull(res, i, 5)) {
        r->value = PQgetvalue(res, i, 5); /* followed by a NUL, like SQLite's column_text */
        r->value_len = (size_t)PQgetlength(res, i, 5);
    }
    r->headers = col_text(res, i, 6);
    *created_ms = col_i64(res, i, 7);
    *sent_ms = col_i64(res, i, 8);
}

static int pg_outbox_scan_unsent(struct store *st, size_t limit, store_outbox_cb *cb, void *ctx)
{
    const char *what = "outbox_scan_unsent";
    int err = scan_enter(st, S_OUT_SCAN_UNSENT, what);
    if (err)
        return err;
    struct params p = {0};
    p_limit(&p, limit);
    p_i64(&p, st->node_id);
    PGresult *res;
    err = run(st, S_OUT_SCAN_UNSENT, &p, what, &res);
    for (int i = 0; !err && i < PQntuples(res); i++) {
        struct store_outbox_row r;
        int64_t created, sent;
        outbox_row_of(res, i, &r, &created, &sent);
        err = cb(ctx, &r);
    }
    PQclear(res);
    st->busy[S_OUT_SCAN_UNSENT] = 0;
    return err;
}

/* ids as a bigint[] literal, "{1,2,3}": one parameter for any number of ids. */
static void id_array(struct buf *arr, const int64_t *ids, size_t n)
{
    buf_addc(arr, '{');
    for (size_t i = 0; i < n; i++)
        buf_printf(arr, "%s%" PRId64, i ? "," : "", ids[i]);
    buf_addc(arr, '}');
}

/* One statement for the whole batch: the ids go as one bigint[] literal. */
static int pg_outbox_mark_sent(struct store *st, const int64_t *ids, size_t n, int64_t now_ms)
{
    if (n == 0)
        return 0;
    struct buf arr = BUF_INIT;
    id_array(&arr, ids, n);
    struct params p = {0};
    p_text(&p, buf_str(&arr));
    p_i64(&p, now_ms);
    int err = run(st, S_OUT_MARK_SENT, &p, "outbox_mark_sent", NULL);
    buf_release(&arr);
    return err;
}

/* Counts every row with message_id (whether it was sent or not): 0 means no such message. */
static int pg_outbox_requeue(struct store *st, const char *message_id, int *n)
{
    if (!message_id)
        return fail_inval(st, "outbox_requeue", "message_id is required");
    struct params p = {0};
    p_text(&p, message_id);
    p_i64(&p, st->node_id);
    PGresult *res;
    int err = run(st, S_OUT_REQUEUE, &p, "outbox_requeue", &res);
    if (!err && n)
        *n = (int)changed(res);
    PQclear(res);
    return err;
}

static int
pg_outbox_purge(struct store *st, int64_t before_ms, const char *dlq_topic, int64_t dlq_before_ms)
{
    struct params p = {0};
    p_i64(&p, before_ms);
    p_text(&p, dlq_topic ? dlq_topic : "");
    p_i64(&p, dlq_before_ms);
    return run(st, S_OUT_PURGE, &p, "outbox_purge", NULL);
}

/* ---- inbox ---------------------------------------------------------------------------- */

static int pg_inbox_check_add(struct store *st, const char *key, int64_t now_ms)
{
    if (!key)
        return fail_inval(st, "inbox_check_add", "key is required");
    struct params p = {0};
    p_text(&p, key);
    p_i64(&p, now_ms);
    PGresult *res;
    int err = run(st, S_IN_ADD, &p, "inbox_check_add", &res);
    if (err)
        return err;
    int seen = changed(res) == 1 ? 0 : 1;
    PQclear(res);
    return seen;
}

static int pg_inbox_purge(struct store *st, int64_t before_ms)
{
    struct params p = {0};
    p_i64(&p, before_ms);
    return run(st, S_IN_PURGE, &p, "inbox_purge", NULL);
}

/* ---- listing (store version 2) -------------------------------------------------------- */

static int pg_instance_list(struct store *st,
                            const struct store_instance_filter *f,
                            store_instance_cb *cb,
                            void *ctx)
{
    const char *what = "instance_list";
    if (!f)
        return fail_inval(st, what, "a filter is required");
    struct params p = {0};
    p_text(&p, f->state);
    p_text(&p, f->def_key);
    p_i64(&p, f->started_from_ms);
    p_i64(&p, f->started_to_ms);
    p_i64(&p, f->before_id);
    p_limit(&p, f->limit);
    return instance_rows(st, S_INST_LIST, &p, what, cb, ctx);
}

static int pg_outbox_list_topic(struct store *st,
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
    struct params p = {0};
    p_text(&p, topic);
    p_i64(&p, before_id);
    p_limit(&p, limit);
    PGresult *res;
    err = run(st, S_OUT_LIST_TOPIC, &p, what, &res);
    for (int i = 0; !err && i < PQntuples(res); i++) {
        struct store_outbox_row r;
        int64_t created, sent;
        outbox_row_of(res, i, &r, &created, &sent);
        err = cb(ctx, &r, created, sent);
    }
    PQclear(res);
    st->busy[S_OUT_LIST_TOPIC] = 0;
    return err;
}

static int pg_outbox_get(struct store *st, int64_t id, store_outbox_list_cb *cb, void *ctx)
{
    const char *what = "outbox_get";
    int err = scan_enter(st, S_OUT_GET, what);
    if (err)
        return err;
    struct params p = {0};
    p_i64(&p, id);
    PGresult *res;
    err = run(st, S_OUT_GET, &p, what, &res);
    if (!err && PQntuples(res) == 0)
        err = FLOWD_ERR_NOTFOUND;
    if (!err) {
        struct store_outbox_row r;
        int64_t created, sent;
        outbox_row_of(res, 0, &r, &created, &sent);
        err = cb(ctx, &r, created, sent);
    }
    PQclear(res);
    st->busy[S_OUT_GET] = 0;
    return err;
}

static int pg_outbox_count_unsent(struct store *st, int64_t *n)
{
    PGresult *res;
    int err = run(st, S_OUT_COUNT_UNSENT, NULL, "outbox_count_unsent", &res);
    if (!err)
        *n = PQntuples(res) ? col_i64(res, 0, 0) : 0;
    PQclear(res);
    return err;
}

static int pg_inbox_forget(struct store *st, const char *key)
{
    if (!key)
        return fail_inval(st, "inbox_forget", "key is required");
    struct params p = {0};
    p_text(&p, key);
    return run(st, S_IN_FORGET, &p, "inbox_forget", NULL);
}

/* ---- several nodes -------------------------------------------------------------------- */

static int pg_instance_lock(struct store *st, int64_t id, char **blob)
{
    return get_blob(st, S_INST_LOCK, "instance_lock", id, blob);
}


static int pg_instance_lock_many(
    struct store *st, const int64_t *ids, size_t n, store_instance_cb *cb, void *ctx)
{
    if (n == 0)
        return 0;
    struct buf arr = BUF_INIT;
    id_array(&arr, ids, n);
    struct params p = {0};
    p_text(&p, buf_str(&arr));
    int err = instance_rows(st, S_INST_LOCK_MANY, &p, "instance_lock_many", cb, ctx);
    buf_release(&arr);
    return err;
}

static int pg_instance_claim_due(
    struct store *st, int64_t now_ms, size_t limit, store_instance_cb *cb, void *ctx)
{
    struct params p = {0};
    p_i64(&p, now_ms);
    p_limit(&p, limit);
    return instance_rows(st, S_INST_CLAIM_DUE, &p, "instance_claim_due", cb, ctx);
}

static int pg_instance_next_due(struct store *st, int64_t *due_ms)
{
    PGresult *res;
    int err = run(st, S_INST_NEXT_DUE, NULL, "instance_next_due", &res);
    if (!err)
        *due_ms = PQntuples(res) ? col_i64(res, 0, 0) : 0;
    PQclear(res);
    return err;
}

static int pg_outbox_adopt(struct store *st, int64_t *n)
{
    struct params p = {0};
    p_i64(&p, st->node_id);
    p_i64(&p, PG_NODE_LOCK);
    PGresult *res;
    int err = run(st, S_OUT_ADOPT, &p, "outbox_adopt", &res);
    if (!err && n)
        *n = changed(res);
    PQclear(res);
    return err;
}

static int
pg_instance_count_waiting(struct store *st,
                          int (*cb)(void *ctx, const char *def_key, const char *waiting, int64_t n),
                          void *ctx)
{
    const char *what = "instance_count_waiting";
    int err = scan_enter(st, S_INST_COUNT_WAITING, what);
    if (err)
        return err;
    PGresult *res;
    err = run(st, S_INST_COUNT_WAITING, NULL, what, &res);
    for (int i = 0; !err && i < PQntuples(res); i++)
        err = cb(ctx, col_text(res, i, 0), col_text(res, i, 1), col_i64(res, i, 2));
    PQclear(res);
    st->busy[S_INST_COUNT_WAITING] = 0;
    return err;
}

/* ---- open and close ------------------------------------------------------------------- */

static void pg_close(struct store *st)
{
    if (!st)
        return;
    PQfinish(st->conn); /* an open transaction is rolled back by the server */
    pg_rows_release(&st->inst);
    pg_rows_release(&st->hist);
    pg_rows_release(&st->out);
    free(st->label);
    free(st);
}

/* Runs a one-off open-time statement, optionally reading the first column of its first row as
 * text into out ("" when there is no row or it is NULL). */
static int
exec_once(struct store *st, const char *sql, char *out, size_t out_size, char *errstr, size_t n)
{
    PGresult *res = PQexec(st->conn, sql);
    ExecStatusType rs = PQresultStatus(res);
    int err = 0;
    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
        const char *msg = PQresultErrorMessage(res);
        size_t len = strlen(msg);
        while (len && msg[len - 1] == '\n')
            len--;
        err = flowd_seterr(errstr, n, map_result(st, res), "store: %s: %.60s...: %.*s", st->label,
                           sql, (int)len, msg);
    } else if (out) {
        out[0] = '\0';
        if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
            snprintf(out, out_size, "%s", PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return err;
}

static int refuse_newer(struct store *st, int have, char *errstr, size_t n)
{
    return flowd_seterr(errstr, n, FLOWD_ERR_STATE,
                        "store: %s has schema version %d, newer than the %d this flowd knows: it "
                        "was written by a newer flowd; upgrade flowd or use another database",
                        st->label, have, store_pg_schema_version);
}

/* Applies the migrations above the stored version in one transaction. */
static int migrate(struct store *st, char *errstr, size_t n)
{
    const int want = store_pg_schema_version;
    char text[32];
    int err;
    if ((err = exec_once(st, "BEGIN", NULL, 0, errstr, n)))
        return err;
    snprintf(text, sizeof(text), "%lld", PG_MIGRATE_LOCK);
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%s)", text);
    if ((err = exec_once(st, sql, NULL, 0, errstr, n)))
        goto out;
    if ((err = exec_once(st, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                         NULL, 0, errstr, n)))
        goto out;
    if ((err = exec_once(st, "SELECT max(version) FROM schema_version", text, sizeof(text), errstr,
                         n)))
        goto out;
    int have = (int)strtol(text, NULL, 10);
    if (have > want) {
        err = refuse_newer(st, have, errstr, n);
        goto out;
    }
    for (int v = have; v < want; v++) {
        PGresult *res = PQexec(st->conn, pg_migrations[v]);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            err = flowd_seterr(errstr, n, map_result(st, res),
                               "store: %s: schema migration %d -> %d failed: %s", st->label, v,
                               v + 1, PQresultErrorMessage(res));
            PQclear(res);
            goto out;
        }
        PQclear(res);
    }
    if (have < want) {
        /* The only SQL text built at run time: two integers of ours. */
        snprintf(sql, sizeof(sql),
                 "DELETE FROM schema_version; INSERT INTO schema_version "
                 "VALUES (%d)",
                 want);
        if ((err = exec_once(st, sql, NULL, 0, errstr, n)))
            goto out;
    }
    if ((err = exec_once(st, "COMMIT", NULL, 0, errstr, n)))
        goto out;
    if (have < want)
        FLOWD_LOG(LOG_INFO, LOG_SUB_STORE, "%s: schema migrated from version %d to %d", st->label,
                  have, want);
    return 0;
out:
    if (PQstatus(st->conn) == CONNECTION_OK && PQtransactionStatus(st->conn) != PQTRANS_IDLE)
        PQclear(PQexec(st->conn, "ROLLBACK"));
    return err;
}

static int pg_open(const struct store_options *opt, struct store **out, char *errstr, size_t n)
{
    *out = NULL;
    if (!opt || !opt->dsn || !*opt->dsn)
        return flowd_seterr(errstr, n, FLOWD_ERR_INVAL,
                            "store: no PostgreSQL connection string given (store.postgresql.dsn)");
    const char *sync = opt->synchronous && *opt->synchronous ? opt->synchronous : "FULL";
    int synchronous;
    if (strcasecmp(sync, "FULL") == 0)
        synchronous = 1;
    else if (strcasecmp(sync, "NORMAL") == 0)
        synchronous = 0;
    else
        return flowd_seterr(errstr, n, FLOWD_ERR_INVAL,
                            "store: synchronous must be FULL or NORMAL, not '%s'", sync);

    struct store *st = flowd_xcalloc(1, sizeof(*st));
    st->synchronous = synchronous;
    st->node_id = opt->node_id;
    st->claim_node = opt->claim_node;
    st->inst = (struct pg_rows){.head = INST_COLS, .tail = INST_CONFLICT, .ncols = 10};
    st->hist = (struct pg_rows){.head = HIST_COLS, .tail = HIST_CONFLICT, .ncols = 6};
    st->out = (struct pg_rows){.head = OUT_COLS, .tail = "", .ncols = 9};
    int err;
    st->conn = PQconnectdb(opt->dsn);
    if (!st->conn) {
        err = flowd_seterr(errstr, n, FLOWD_ERR_NOMEM, "store: PostgreSQL: out of memory");
        goto err;
    }
    st->label = make_label(st->conn);
    if (PQstatus(st->conn) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(st->conn);
        size_t len = strlen(msg);
        while (len && msg[len - 1] == '\n')
            len--;
        err = flowd_seterr(errstr, n, FLOWD_ERR_IO, "store: cannot connect to %s: %.*s", st->label,
                           (int)len, msg);
        goto err;
    }
    PQsetNoticeProcessor(st->conn, notice_cb, st);
    if (PQsetClientEncoding(st->conn, "UTF8") != 0) {
        err = flowd_seterr(errstr, n, FLOWD_ERR_IO, "store: %s: cannot set client encoding UTF8",
                           st->label);
        goto err;
    }
    if ((err = migrate(st, errstr, n)))
        goto err;
    if ((err = session_setup(st, errstr, n)))
        goto err;
    *out = st;
    return 0;
err:
    pg_close(st);
    return err;
}

const struct store_methods store_pg_methods = {
    3,
    "postgresql",
    pg_open,
    pg_close,
    pg_begin,
    pg_commit,
    pg_rollback,
    pg_def_put,
    pg_def_scan,
    pg_instance_max_id,
    pg_instance_put,
    pg_instance_get,
    pg_instance_id_by_uuid,
    pg_instance_scan_active,
    pg_instance_count_by_state,
    pg_history_add,
    pg_history_scan,
    pg_outbox_add,
    pg_outbox_scan_unsent,
    pg_outbox_mark_sent,
    pg_outbox_requeue,
    pg_outbox_purge,
    pg_inbox_check_add,
    pg_inbox_purge,
    pg_instance_list,
    pg_outbox_list_topic,
    pg_outbox_get,
    pg_outbox_count_unsent,
    pg_inbox_forget,
    pg_instance_lock,
    pg_instance_lock_many,
    pg_instance_claim_due,
    pg_instance_next_due,
    pg_outbox_adopt,
    pg_instance_count_waiting,
};
