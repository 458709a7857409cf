/* store_schema.c - the SQLite schema, as an ordered list of migration scripts.
 *
 * store_sqlite.c applies the scripts above the database's PRAGMA user_version in one
 * transaction at open and sets user_version to their count. Append, never edit: a database made
 * by an older flowd must reach the same schema as a fresh one.
 */
#include "store_int.h"

#include "../common/banned.h"

const char *const store_sqlite_migrations[] = {
    /* 0 -> 1: the initial schema. */
    "CREATE TABLE definitions ("
    "  key TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  uuid TEXT NOT NULL,"
    "  json TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (key, version));"

    "CREATE TABLE instances ("
    "  id INTEGER PRIMARY KEY,"
    "  uuid TEXT NOT NULL UNIQUE,"
    "  def_key TEXT NOT NULL,"
    "  def_version INTEGER NOT NULL,"
    "  state TEXT NOT NULL,"
    "  blob TEXT NOT NULL,"
    "  started_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE INDEX instances_state ON instances (state);"

    "CREATE TABLE history ("
    "  instance_id INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  node_id TEXT,"
    "  state TEXT NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  detail TEXT,"
    "  PRIMARY KEY (instance_id, seq)) WITHOUT ROWID;"

    "CREATE TABLE outbox ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  instance_id INTEGER NOT NULL,"
    "  message_id TEXT NOT NULL,"
    "  topic TEXT NOT NULL,"
    "  key TEXT,"
    "  value BLOB,"
    "  headers TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  sent_ms INTEGER);"
    "CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_ms IS NULL;"
    "CREATE INDEX outbox_message_id ON outbox (message_id);"

    "CREATE TABLE inbox ("
    "  key TEXT PRIMARY KEY,"
    "  seen_ms INTEGER NOT NULL) WITHOUT ROWID;",

    /* 1 -> 2: listing instances by definition and dead letters (outbox rows by topic). */
    "CREATE INDEX instances_def_key ON instances (def_key, id);"
    "CREATE INDEX instances_started ON instances (started_ms);"
    "CREATE INDEX outbox_topic ON outbox (topic, id);",

    /* 2 -> 3: due times in the table (x_instance_claim_due; the PostgreSQL schema has the same
     * for several nodes). */
    "ALTER TABLE instances ADD COLUMN due_ms INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX instances_due ON instances (due_ms) WHERE state = 'STARTED' AND due_ms > 0;"
    /* waiting instances of an older flowd: due at once, so flowd looks at each once and
     * stores its real due time */
    "UPDATE instances SET due_ms = 1 WHERE state = 'STARTED';"
    /* where waiting instances wait, for /metrics without reading every blob */
    "ALTER TABLE instances ADD COLUMN waiting TEXT;",
};

const int store_sqlite_schema_version =
    (int)(sizeof(store_sqlite_migrations) / sizeof(store_sqlite_migrations[0]));
