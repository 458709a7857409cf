/* store_int.h - internals shared by the store's own files: the SQLite schema migrations.
 *
 * Migration i (0-based) moves a database from schema version i to i + 1, where the version is
 * SQLite's PRAGMA user_version. A released script is never edited: changes append a new one.
 */
#ifndef FLOWD_STORE_INT_H
#define FLOWD_STORE_INT_H

/* The ordered migration scripts, store_sqlite_schema_version of them. */
extern const char *const store_sqlite_migrations[];
/* The schema version this flowd writes: the number of migration scripts. */
extern const int store_sqlite_schema_version;
/* The schema version store_pg.c writes (its table schema_version). */
extern const int store_pg_schema_version;

#endif
