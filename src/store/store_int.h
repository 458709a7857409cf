/* store_int.h - internals shared by the store's own files: the SQLite schema migrations.
 *
 * Migration i (0-based) moves a database from schema version i to i + 1, where the version is
 * SQLite's PRAGMA user_version. A released script is never edited: changes append a new one.
 */
#ifndef FLOWD_STORE_INT_H
#define FLOWD_STORE_INT_H

#include <stddef.h>

/* The ordered migration scripts, store_sqlite_schema_version of them. */
extern const char *const store_sqlite_migrations[];
/* The schema version this flowd writes: the number of migration scripts. */
extern const int store_sqlite_schema_version;
/* The schema version store_pg.c writes (its table schema_version). */
extern const int store_pg_schema_version;

/* store_pg_rows.c: rows of one table to insert with multi-row statements. */
struct pg_rows {
    const char *head; /* "INSERT INTO t (a, b) VALUES " */
    const char *tail; /* " ON CONFLICT ..." or "" */
    size_t ncols;
    char **v; /* ncols values per row, owned (NULL: SQL NULL) */
    int *len; /* binary values: length */
    int *fmt; /* 1: binary */
    size_t nvals, cap, rows;
};
/* Appends one row (ncols values; len and fmt may be NULL for all-text rows): copies them. */
void pg_rows_add(struct pg_rows *r, const char *const *v, const int *len, const int *fmt);
void pg_rows_clear(struct pg_rows *r);
void pg_rows_release(struct pg_rows *r);
/* Sends rows from `first` on, as many as one statement takes (*nrows of them); the caller reads
 * the result (a PGresult *) and calls again while rows remain. */
#include <libpq-fe.h>
PGresult *pg_rows_exec(PGconn *conn, const struct pg_rows *r, size_t first, size_t *nrows);

#endif
