/* test_store.c - the store.h contract, run against every backend of `backends[]`.
 *
 * Each test gets a fresh temporary directory and an open store (struct fixture) and talks to it
 * through the vtable only, so a new backend (PostgreSQL) runs the same suite by adding a row to
 * backends[]. What cannot be said through the vtable (the schema version on disk, the journal
 * mode) goes through per-backend hooks, and tests whose hook is NULL skip.
 *
 * PostgreSQL: main() starts a private server (initdb into a temporary directory, trust auth, user
 * flowd, a free port on 127.0.0.1 plus a Unix socket in that directory, fsync off), gives every
 * test a fresh database, and stops the server at the end. Without the PostgreSQL binaries its half
 * prints a SKIP line and its tests are reported skipped; with CI set that is a failure.
 */
#include "common/buf.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "store/store.h"
#include "store/store_int.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/banned.h"

struct fixture;

struct backend {
    const char *name;
    const struct store_methods *m;
    /* Fills fx->opt for a store living in fx->dir. */
    void (*options)(struct fixture *fx);
    /* The schema version stored in the database (closed store). */
    int (*get_schema_version)(struct fixture *fx, int *version);
    /* Overwrites it, to play a database written by a newer flowd. */
    int (*set_schema_version)(struct fixture *fx, int version);
    /* The schema version this build writes. */
    int schema_version;
    /* Returns 1 if the database is in WAL mode (NULL: not applicable). */
    int (*is_wal)(struct fixture *fx);
    /* Empties the store (closed): a fresh database at the same options. */
    void (*wipe)(struct fixture *fx);
    /* The store is a file at fx->path (else fx->path only names the database in messages). */
    int file_based;
    /* A second x_begin waits for the first writer (SQLite's one write lock). */
    int one_writer;
    /* Makes the server drop the store's connections (NULL: not applicable). */
    void (*kill_connections)(struct fixture *fx);
    /* Why this backend cannot run here (its tests are skipped), or NULL. */
    const char *unavailable;
};

struct fixture {
    const struct backend *be;
    const struct store_methods *m;
    char dir[64];
    char path[128];
    char dsn[256];
    struct store_options opt;
    struct store *st;
    char errstr[FLOWD_ERRSTR_SIZE];
};

/* ---- the SQLite backend's hooks ------------------------------------------------------- */

static void sqlite_options(struct fixture *fx)
{
    snprintf(fx->path, sizeof(fx->path), "%s/flowd.db", fx->dir);
    fx->opt.path = fx->path;
    fx->opt.synchronous = NULL;
}

static int sqlite_pragma_int(struct fixture *fx, const char *sql, int *out)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READWRITE, NULL);
    sqlite3_stmt *s = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW && out)
            *out = sqlite3_column_int(s, 0);
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

static int sqlite_get_schema_version(struct fixture *fx, int *version)
{
    return sqlite_pragma_int(fx, "PRAGMA user_version", version);
}

static int sqlite_set_schema_version(struct fixture *fx, int version)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version);
    return sqlite_pragma_int(fx, sql, NULL);
}

static int sqlite_is_wal(struct fixture *fx)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int wal = 0;
    if (sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        wal = strcasecmp((const char *)sqlite3_column_text(s, 0), "wal") == 0;
    sqlite3_finalize(s);
    sqlite3_close(db);
    return wal;
}

static void rm_tree(const char *dir);

static void sqlite_wipe(struct fixture *fx)
{
    rm_tree(fx->dir);
    assert_int_equal(mkdir(fx->dir, 0700), 0);
}

/* ---- the PostgreSQL backend's hooks and private server ------------------------------- */

static struct pg_server {
    char bindir[256];
    char dir[64]; /* data in dir/data, socket and logs in dir */
    int port;
    int started;
    uid_t uid; /* when run as root: the server's user */
    gid_t gid;
    PGconn *admin; /* to database postgres */
    int ndb;
} pg;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 ? 0 : 0;
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs argv (as the server's user when we are root), output to log. Returns the exit status. */
static int pg_run(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (pg.uid && (setgid(pg.gid) != 0 || setuid(pg.uid) != 0))
            _exit(126);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int pg_find_bindir(void)
{
    FILE *f = popen("pg_config --bindir 2>/dev/null", "r");
    if (f) {
        char line[256] = "";
        if (fgets(line, sizeof(line), f)) {
            line[strcspn(line, "\n")] = '\0';
            char initdb[300];
            snprintf(initdb, sizeof(initdb), "%s/initdb", line);
            if (access(initdb, X_OK) == 0)
                snprintf(pg.bindir, sizeof(pg.bindir), "%s", line);
        }
        pclose(f);
    }
    if (pg.bindir[0])
        return 0;
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0 && g.gl_pathc > 0) {
        const char *last = g.gl_pathv[g.gl_pathc - 1]; /* sorted: the newest version */
        snprintf(pg.bindir, sizeof(pg.bindir), "%.*s", (int)(strrchr(last, '/') - last), last);
    }
    globfree(&g);
    return pg.bindir[0] ? 0 : -1;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void pg_dsn(char *out, size_t n, const char *db)
{
    snprintf(out, n, "host=%s port=%d user=flowd dbname=%s connect_timeout=10", pg.dir, pg.port,
             db);
}

/* Starts the private server; returns NULL or why it cannot run. */
static const char *pg_start(void)
{
    static char why[512];
    if (pg_find_bindir())
        return "no PostgreSQL server binaries (initdb): not in `pg_config --bindir` nor "
               "/usr/lib/postgresql/*/bin; install the postgresql package (scripts/install-deps)";
    snprintf(pg.dir, sizeof(pg.dir), "%s", "/tmp/flowd-test-pg-XXXXXX");
    if (!mkdtemp(pg.dir))
        return "mkdtemp failed";
    if (geteuid() == 0) {
        /* initdb and postgres refuse to run as root */
        struct passwd *pw = getpwnam("postgres");
        if (!pw)
            pw = getpwnam("nobody");
        if (!pw)
            return "running as root and there is no postgres or nobody user to run the server";
        pg.uid = pw->pw_uid;
        pg.gid = pw->pw_gid;
        if (chown(pg.dir, pg.uid, pg.gid) != 0)
            return "cannot chown the server directory";
    }
    char data[128], log[128], initdb[300], pg_ctl[300], opts[256];
    snprintf(data, sizeof(data), "%s/data", pg.dir);
    snprintf(log, sizeof(log), "%s/initdb.log", pg.dir);
    snprintf(initdb, sizeof(initdb), "%s/initdb", pg.bindir);
    snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg.bindir);
    char *init_argv[] = {initdb,  "-D",        data, "-A",   "trust",      "-U",
                         "flowd", "--no-sync", "-E", "UTF8", "--locale=C", NULL};
    if (pg_run(init_argv, log) != 0) {
        snprintf(why, sizeof(why), "initdb failed (see %s)", log);
        return why;
    }
    pg.port = free_port();
    snprintf(opts, sizeof(opts),
             "-k %s -c listen_addresses=127.0.0.1 -p %d -c fsync=off -c full_page_writes=off",
             pg.dir, pg.port);
    snprintf(log, sizeof(log), "%s/server.log", pg.dir);
    char ctl_log[128];
    snprintf(ctl_log, sizeof(ctl_log), "%s/pg_ctl.log", pg.dir);
    char *start_argv[] = {pg_ctl, "-D", data, "-l", log,     "-o",
                          opts,   "-w", "-t", "30", "start", NULL};
    if (pg_run(start_argv, ctl_log) != 0) {
        snprintf(why, sizeof(why), "pg_ctl start failed (see %s and %s)", ctl_log, log);
        return why;
    }
    pg.started = 1;
    char dsn[256];
    pg_dsn(dsn, sizeof(dsn), "postgres");
    pg.admin = PQconnectdb(dsn);
    if (PQstatus(pg.admin) != CONNECTION_OK) {
        snprintf(why, sizeof(why), "cannot connect to the test server: %s",
                 PQerrorMessage(pg.admin));
        return why;
    }
    return NULL;
}

/* keep: leave the directory (and its logs) for a look. */
static void pg_stop(int keep)
{
    if (pg.admin)
        PQfinish(pg.admin);
    if (pg.started) {
        char data[128], log[128], pg_ctl[300];
        snprintf(data, sizeof(data), "%s/data", pg.dir);
        snprintf(log, sizeof(log), "%s/server.log", pg.dir);
        snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg.bindir);
        char *stop_argv[] = {pg_ctl, "-D", data, "-m", "immediate", "-w", "stop", NULL};
        pg_run(stop_argv, log);
    }
    if (pg.dir[0] && !keep)
        rm_tree(pg.dir);
}

static int pg_admin_exec(const char *sql)
{
    PGresult *res = PQexec(pg.admin, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok)
        print_error("%s: %s", sql, PQresultErrorMessage(res));
    PQclear(res);
    return ok ? 0 : -1;
}

/* A fresh database per test (and per wipe). */
static void pg_new_database(struct fixture *fx)
{
    char sql[160];
    snprintf(fx->path, sizeof(fx->path), "flowd_t%d", ++pg.ndb);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", fx->path);
    assert_int_equal(pg_admin_exec(sql), 0);
    pg_dsn(fx->dsn, sizeof(fx->dsn), fx->path);
}

static void pg_options(struct fixture *fx)
{
    pg_new_database(fx);
    fx->opt.path = NULL;
    fx->opt.synchronous = NULL;
    fx->opt.dsn = fx->dsn;
}

static void pg_wipe(struct fixture *fx)
{
    pg_new_database(fx);
}

static int pg_store_exec(struct fixture *fx, const char *sql, int *out)
{
    PGconn *c = PQconnectdb(fx->dsn);
    PGresult *res = PQexec(c, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
    if (ok && out)
        *out = PQntuples(res) ? (int)strtol(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    PQclear(res);
    PQfinish(c);
    return ok ? 0 : -1;
}

static int pg_get_schema_version(struct fixture *fx, int *version)
{
    return pg_store_exec(fx, "SELECT max(version) FROM schema_version", version);
}

static int pg_set_schema_version(struct fixture *fx, int version)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d", version);
    return pg_store_exec(fx, sql, NULL);
}

/* Ends the server side of every connection to fx's database (as a crash or failover would). */
static void pg_kill_connections(struct fixture *fx)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'",
             fx->path);
    assert_int_equal(pg_admin_exec(sql), 0);
    usleep(100 * 1000);
}

static struct backend backends[] = {
    {"sqlite", &store_sqlite_methods, sqlite_options, sqlite_get_schema_version,
     sqlite_set_schema_version, 0 /* set in main */, sqlite_is_wal, sqlite_wipe, 1, 1, NULL, NULL},
    {"postgresql", &store_pg_methods, pg_options, pg_get_schema_version, pg_set_schema_version,
     0 /* set in main */, NULL, pg_wipe, 0, 0, pg_kill_connections, NULL},
};

/* ---- fixture -------------------------------------------------------------------------- */

static int fx_open(struct fixture *fx)
{
    fx->errstr[0] = '\0';
    return fx->m->x_open(&fx->opt, &fx->st, fx->errstr, sizeof(fx->errstr));
}

static void fx_close(struct fixture *fx)
{
    if (fx->st)
        fx->m->x_close(fx->st);
    fx->st = NULL;
}

static void fx_reopen(struct fixture *fx)
{
    fx_close(fx);
    int err = fx_open(fx);
    if (err)
        fail_msg("reopen failed: %s (%s)", flowd_err_str(err), fx->errstr);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    fx->be = *state;
    fx->m = fx->be->m;
    snprintf(fx->dir, sizeof(fx->dir), "%s", "/tmp/flowd-test-store-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    fx->be->options(fx);
    int err = fx_open(fx);
    if (err) {
        /* cmocka skips teardown when setup fails. */
        print_error("open failed: %s (%s)\n", flowd_err_str(err), fx->errstr);
        rm_tree(fx->dir);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    fx_close(fx);
    rm_tree(fx->dir);
    free(fx);
    return 0;
}

/* ---- helpers -------------------------------------------------------------------------- */

static void put_instance(struct fixture *fx, int64_t id, const char *state, const char *blob)
{
    char uuid[37];
    snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-%012" PRId64, id);
    struct store_instance_row r = {id,   uuid,      "credit-check", 1, state,
                                   blob, 1000 + id, 2000 + id,      0, NULL};
    assert_int_equal(fx->m->x_instance_put(fx->st, &r), 0);
}

static int add_history(struct fixture *fx, int64_t instance_id, uint32_t seq, const char *state)
{
    char node[32];
    snprintf(node, sizeof(node), "node%u", seq);
    struct engine_history h = {seq, node, (char *)state, 5000 + seq, NULL};
    return fx->m->x_history_add(fx->st, instance_id, &h);
}

static int64_t add_outbox(struct fixture *fx, int64_t instance_id, const char *message_id)
{
    struct store_outbox_row r = {0,    instance_id, message_id, "ai.flowx.dev.scoring.v1",
                                 "42", "{\"a\":1}", 7,          "[[\"messageId\",\"m\"]]"};
    int64_t id = 0;
    assert_int_equal(fx->m->x_outbox_add(fx->st, &r, 100, &id), 0);
    assert_true(id > 0);
    return id;
}

static int collect_def(void *ctx, const struct store_def_row *row)
{
    buf_printf(ctx, "%s:%d:%s;", row->key, row->version, row->json);
    return 0;
}

static int collect_instance(void *ctx, const struct store_instance_row *row)
{
    buf_printf(ctx, "%" PRId64 ":%s:%s;", row->id, row->state, row->blob);
    return 0;
}

static int collect_count(void *ctx, const char *state, int64_t n)
{
    buf_printf(ctx, "%s=%" PRId64 ";", state, n);
    return 0;
}

static int collect_history(void *ctx, const struct engine_history *h)
{
    buf_printf(ctx, "%u:%s:%s:%" PRId64 ":%s;", h->seq, h->node_id ? h->node_id : "-", h->state,
               h->at_ms, h->detail ? h->detail : "-");
    return 0;
}

static int collect_outbox(void *ctx, const struct store_outbox_row *row)
{
    buf_printf(ctx, "%s;", row->message_id);
    return 0;
}

/* ---- open, close, schema -------------------------------------------------------------- */

static void test_open_creates_empty_store(void **state)
{
    struct fixture *fx = *state;
    int64_t max = -1;
    assert_int_equal(fx->m->x_instance_max_id(fx->st, 0, INT64_MAX, &max), 0);
    assert_int_equal(max, 0);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_def_scan(fx->st, collect_def, &b), 0);
    assert_string_equal(buf_str(&b), "");
    buf_release(&b);
    fx_close(fx);
    if (!fx->be->file_based)
        return;
    struct stat sb;
    assert_int_equal(stat(fx->path, &sb), 0);
}

static void test_open_uses_wal_journal(void **state)
{
    struct fixture *fx = *state;
    if (!fx->be->is_wal)
        skip();
    fx_close(fx);
    assert_int_equal(fx->be->is_wal(fx), 1);
}

static void test_reopen_keeps_data(void **state)
{
    struct fixture *fx = *state;
    int version, created;
    assert_int_equal(
        fx->m->x_def_put(fx->st, "k", "{\"v\":1}", "uuid-1", 1, &version, &created, NULL), 0);
    put_instance(fx, 7, "STARTED", "{\"id\":7}");
    assert_int_equal(add_history(fx, 7, 1, "STARTED"), 0);
    add_outbox(fx, 7, "m-1");
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "topic/0/12", 1), 0);

    fx_reopen(fx);

    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_def_scan(fx->st, collect_def, &b), 0);
    assert_string_equal(buf_str(&b), "k:1:{\"v\":1};");
    char *blob = NULL;
    assert_int_equal(fx->m->x_instance_get(fx->st, 7, &blob), 0);
    assert_string_equal(blob, "{\"id\":7}");
    free(blob);
    buf_reset(&b);
    assert_int_equal(fx->m->x_history_scan(fx->st, 7, collect_history, &b), 0);
    assert_string_equal(buf_str(&b), "1:node1:STARTED:5001:-;");
    buf_reset(&b);
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 10, collect_outbox, &b), 0);
    assert_string_equal(buf_str(&b), "m-1;");
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "topic/0/12", 2), 1);
    buf_release(&b);
}

static void test_migrations_are_idempotent_across_reopens(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 1, "STARTED", "{}");
    for (int i = 0; i < 3; i++)
        fx_reopen(fx);
    int64_t max = 0;
    assert_int_equal(fx->m->x_instance_max_id(fx->st, 0, INT64_MAX, &max), 0);
    assert_int_equal(max, 1);
    if (!fx->be->get_schema_version)
        return;
    fx_close(fx);
    int v = -1;
    assert_int_equal(fx->be->get_schema_version(fx, &v), 0);
    assert_true(fx->be->schema_version >= 1);
    assert_int_equal(v, fx->be->schema_version);
}

static void test_open_refuses_database_from_newer_flowd(void **state)
{
    struct fixture *fx = *state;
    if (!fx->be->set_schema_version)
        skip();
    fx_close(fx);
    assert_int_equal(fx->be->set_schema_version(fx, fx->be->schema_version + 1), 0);
    assert_int_equal(fx_open(fx), FLOWD_ERR_STATE);
    assert_null(fx->st);
    assert_non_null(strstr(fx->errstr, "newer"));
    assert_non_null(strstr(fx->errstr, fx->path));
}

static void test_open_accepts_synchronous_normal(void **state)
{
    struct fixture *fx = *state;
    fx_close(fx);
    fx->opt.synchronous = "NORMAL";
    assert_int_equal(fx_open(fx), 0);
    put_instance(fx, 1, "STARTED", "{}");
    fx_reopen(fx);
    fx->opt.synchronous = "full";
    fx_reopen(fx);
    int64_t max = 0;
    assert_int_equal(fx->m->x_instance_max_id(fx->st, 0, INT64_MAX, &max), 0);
    assert_int_equal(max, 1);
}

static void test_open_rejects_bad_synchronous(void **state)
{
    struct fixture *fx = *state;
    fx_close(fx);
    fx->opt.synchronous = "OFF";
    assert_int_equal(fx_open(fx), FLOWD_ERR_INVAL);
    assert_null(fx->st);
    assert_non_null(strstr(fx->errstr, "'OFF'"));
}

static void test_open_in_missing_directory_names_it(void **state)
{
    struct fixture *fx = *state;
    fx_close(fx);
    if (!fx->be->file_based) {
        /* The server counterpart: nothing listens there. */
        char dsn[300];
        snprintf(dsn, sizeof(dsn), "host=127.0.0.1 port=%d user=flowd dbname=%s", free_port(),
                 fx->path);
        fx->opt.dsn = dsn;
        assert_int_equal(fx_open(fx), FLOWD_ERR_IO);
        assert_null(fx->st);
        assert_non_null(strstr(fx->errstr, "cannot connect"));
        assert_non_null(strstr(fx->errstr, fx->path));
        fx->opt.dsn = "";
        assert_int_equal(fx_open(fx), FLOWD_ERR_INVAL);
        assert_non_null(strstr(fx->errstr, "store.postgresql.dsn"));
        fx->opt.dsn = fx->dsn;
        return;
    }
    char dir[160], path[200];
    snprintf(dir, sizeof(dir), "%s/no-such-dir", fx->dir);
    snprintf(path, sizeof(path), "%s/flowd.db", dir);
    fx->opt.path = path;
    assert_int_not_equal(fx_open(fx), 0);
    assert_null(fx->st);
    assert_non_null(strstr(fx->errstr, dir));
    assert_non_null(strstr(fx->errstr, "does not exist"));
    fx->opt.path = fx->path;
}

/* ---- transactions --------------------------------------------------------------------- */

static void test_rollback_discards_everything_in_transaction(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 1, "STARTED", "{\"before\":true}");

    assert_int_equal(fx->m->x_begin(fx->st), 0);
    assert_int_equal(fx->m->x_def_put(fx->st, "k", "{}", "u1", 1, NULL, NULL, NULL), 0);
    put_instance(fx, 1, "FINISHED", "{\"after\":true}");
    put_instance(fx, 2, "STARTED", "{}");
    assert_int_equal(add_history(fx, 1, 1, "STARTED"), 0);
    add_outbox(fx, 1, "m-1");
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "in-1", 1), 0);
    assert_int_equal(fx->m->x_rollback(fx->st), 0);

    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_def_scan(fx->st, collect_def, &b), 0);
    assert_string_equal(buf_str(&b), "");
    char *blob = NULL;
    assert_int_equal(fx->m->x_instance_get(fx->st, 1, &blob), 0);
    assert_string_equal(blob, "{\"before\":true}");
    free(blob);
    assert_int_equal(fx->m->x_instance_get(fx->st, 2, &blob), FLOWD_ERR_NOTFOUND);
    assert_int_equal(fx->m->x_history_scan(fx->st, 1, collect_history, &b), 0);
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 10, collect_outbox, &b), 0);
    assert_string_equal(buf_str(&b), "");
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "in-1", 2), 0);
    buf_release(&b);
}

static void test_commit_keeps_transaction(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    put_instance(fx, 3, "STARTED", "{}");
    add_outbox(fx, 3, "m-3");
    assert_int_equal(fx->m->x_commit(fx->st), 0);
    fx_reopen(fx);
    int64_t id = 0;
    assert_int_equal(
        fx->m->x_instance_id_by_uuid(fx->st, "00000000-0000-4000-8000-000000000003", &id), 0);
    assert_int_equal(id, 3);
}

static void test_transaction_misuse_is_reported(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(fx->m->x_commit(fx->st), FLOWD_ERR_STATE);
    assert_int_equal(fx->m->x_rollback(fx->st), 0); /* no-op */
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    assert_int_equal(fx->m->x_begin(fx->st), FLOWD_ERR_STATE);
    assert_int_equal(fx->m->x_rollback(fx->st), 0);
    assert_int_equal(fx->m->x_rollback(fx->st), 0);
}

static void test_second_writer_gets_again(void **state)
{
    struct fixture *fx = *state;
    if (!fx->be->one_writer)
        skip();
    struct store *other = NULL;
    assert_int_equal(fx->m->x_open(&fx->opt, &other, fx->errstr, sizeof(fx->errstr)), 0);
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    /* Waits out the busy timeout, then reports a transient failure. */
    assert_int_equal(fx->m->x_begin(other), FLOWD_ERR_AGAIN);
    assert_int_equal(fx->m->x_commit(fx->st), 0);
    assert_int_equal(fx->m->x_begin(other), 0);
    assert_int_equal(fx->m->x_commit(other), 0);
    fx->m->x_close(other);
}

static void test_lost_connection_is_again_then_reconnects(void **state)
{
    struct fixture *fx = *state;
    if (!fx->be->kill_connections)
        skip();
    put_instance(fx, 1, "STARTED", "{}");
    fx->be->kill_connections(fx);
    int64_t max = 0;
    assert_int_equal(fx->m->x_instance_max_id(fx->st, 0, INT64_MAX, &max), FLOWD_ERR_AGAIN);
    /* the next call reconnects */
    assert_int_equal(fx->m->x_instance_max_id(fx->st, 0, INT64_MAX, &max), 0);
    assert_int_equal(max, 1);

    /* inside a transaction: everything is AGAIN until the rollback, and nothing was kept */
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    put_instance(fx, 2, "STARTED", "{}");
    fx->be->kill_connections(fx);
    struct store_instance_row r = {
        3, "00000000-0000-4000-8000-000000000003", "k", 1, "STARTED", "{}", 1, 1, 0, NULL};
    assert_int_equal(fx->m->x_instance_put(fx->st, &r), FLOWD_ERR_AGAIN);
    assert_int_equal(fx->m->x_instance_put(fx->st, &r), FLOWD_ERR_AGAIN);
    assert_int_equal(fx->m->x_commit(fx->st), FLOWD_ERR_AGAIN);
    assert_int_equal(fx->m->x_rollback(fx->st), 0);
    char *blob = NULL;
    assert_int_equal(fx->m->x_instance_get(fx->st, 2, &blob), FLOWD_ERR_NOTFOUND);
    assert_int_equal(fx->m->x_instance_get(fx->st, 3, &blob), FLOWD_ERR_NOTFOUND);
    assert_int_equal(fx->m->x_instance_max_id(fx->st, 0, INT64_MAX, &max), 0);
    assert_int_equal(max, 1);
    /* and the handle works normally again */
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    put_instance(fx, 4, "STARTED", "{}");
    assert_int_equal(fx->m->x_commit(fx->st), 0);
    assert_int_equal(fx->m->x_instance_max_id(fx->st, 0, INT64_MAX, &max), 0);
    assert_int_equal(max, 4);
}

/* A failed statement inside a transaction: SQLite keeps the transaction, PostgreSQL aborts it.
 * Either way commit must not report success for work it dropped. */
static void test_commit_after_failed_statement_never_claims_dropped_work(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 1, "STARTED", "{}");
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    put_instance(fx, 2, "STARTED", "{}");
    struct store_instance_row r = {
        3, "00000000-0000-4000-8000-000000000001", "k", 1, "STARTED", "{}", 1, 1, 0, NULL};
    assert_int_equal(fx->m->x_instance_put(fx->st, &r), FLOWD_ERR_EXISTS);
    int rc = fx->m->x_commit(fx->st);
    char *blob = NULL;
    int got = fx->m->x_instance_get(fx->st, 2, &blob);
    free(blob);
    if (rc == 0)
        assert_int_equal(got, 0);
    else {
        assert_int_equal(rc, FLOWD_ERR_STATE);
        assert_int_equal(got, FLOWD_ERR_NOTFOUND);
        assert_int_equal(fx->m->x_rollback(fx->st), 0);
    }
    /* the handle is usable afterwards */
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    put_instance(fx, 4, "STARTED", "{}");
    assert_int_equal(fx->m->x_commit(fx->st), 0);
}

/* ---- definitions ---------------------------------------------------------------------- */

static void test_def_put_same_json_keeps_version(void **state)
{
    struct fixture *fx = *state;
    int version = 0, created = 0;
    char uuid[37] = "";
    assert_int_equal(
        fx->m->x_def_put(fx->st, "k", "{\"a\":1}", "uuid-1", 10, &version, &created, uuid), 0);
    assert_int_equal(version, 1);
    assert_int_equal(created, 1);
    assert_string_equal(uuid, "uuid-1");

    assert_int_equal(
        fx->m->x_def_put(fx->st, "k", "{\"a\":1}", "uuid-2", 20, &version, &created, uuid), 0);
    assert_int_equal(version, 1);
    assert_int_equal(created, 0);
    assert_string_equal(uuid, "uuid-1");
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_def_scan(fx->st, collect_def, &b), 0);
    assert_string_equal(buf_str(&b), "k:1:{\"a\":1};");
    buf_release(&b);
}

static void test_def_put_changed_json_makes_next_version(void **state)
{
    struct fixture *fx = *state;
    int version = 0, created = 0;
    char uuid[37] = "";
    assert_int_equal(fx->m->x_def_put(fx->st, "k", "{\"a\":1}", "u1", 10, &version, &created, uuid),
                     0);
    assert_int_equal(fx->m->x_def_put(fx->st, "k", "{\"a\":2}", "u2", 20, &version, &created, uuid),
                     0);
    assert_int_equal(version, 2);
    assert_int_equal(created, 1);
    assert_string_equal(uuid, "u2");
    /* Back to the first json: compared with the newest only, so it is version 3. */
    assert_int_equal(fx->m->x_def_put(fx->st, "k", "{\"a\":1}", "u3", 30, &version, &created, uuid),
                     0);
    assert_int_equal(version, 3);
    assert_int_equal(created, 1);
    assert_string_equal(uuid, "u3");
}

static void test_def_put_versions_are_per_key(void **state)
{
    struct fixture *fx = *state;
    int version = 0, created = 0;
    assert_int_equal(fx->m->x_def_put(fx->st, "a", "{\"x\":1}", "u1", 1, &version, &created, NULL),
                     0);
    assert_int_equal(fx->m->x_def_put(fx->st, "a", "{\"x\":2}", "u2", 2, &version, &created, NULL),
                     0);
    assert_int_equal(version, 2);
    assert_int_equal(fx->m->x_def_put(fx->st, "b", "{\"x\":2}", "u3", 3, &version, &created, NULL),
                     0);
    assert_int_equal(version, 1);
    assert_int_equal(created, 1);
}

static void test_def_scan_returns_every_version_oldest_first(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(fx->m->x_def_put(fx->st, "b", "1", "u1", 100, NULL, NULL, NULL), 0);
    assert_int_equal(fx->m->x_def_put(fx->st, "a", "1", "u2", 200, NULL, NULL, NULL), 0);
    assert_int_equal(fx->m->x_def_put(fx->st, "b", "2", "u3", 300, NULL, NULL, NULL), 0);
    assert_int_equal(fx->m->x_def_put(fx->st, "a", "1", "u4", 400, NULL, NULL, NULL), 0);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_def_scan(fx->st, collect_def, &b), 0);
    assert_string_equal(buf_str(&b), "b:1:1;a:1:1;b:2:2;");
    buf_release(&b);
}

static int stop_after_first_def(void *ctx, const struct store_def_row *row)
{
    (void)row;
    ++*(int *)ctx;
    return 42;
}

static void test_scan_stops_when_callback_returns_nonzero(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(fx->m->x_def_put(fx->st, "a", "1", "u1", 1, NULL, NULL, NULL), 0);
    assert_int_equal(fx->m->x_def_put(fx->st, "b", "1", "u2", 2, NULL, NULL, NULL), 0);
    int calls = 0;
    assert_int_equal(fx->m->x_def_scan(fx->st, stop_after_first_def, &calls), 42);
    assert_int_equal(calls, 1);
    /* The scan was left clean: a transaction commits afterwards. */
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    calls = 0;
    assert_int_equal(fx->m->x_def_scan(fx->st, stop_after_first_def, &calls), 42);
    assert_int_equal(fx->m->x_def_put(fx->st, "c", "1", "u3", 3, NULL, NULL, NULL), 0);
    assert_int_equal(fx->m->x_commit(fx->st), 0);
}

/* ---- instances ------------------------------------------------------------------------ */

static void test_instance_put_then_get_returns_blob(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 5, "STARTED", "{\"data\":{\"x\":\"\\u00e9\"}}");
    char *blob = NULL;
    assert_int_equal(fx->m->x_instance_get(fx->st, 5, &blob), 0);
    assert_string_equal(blob, "{\"data\":{\"x\":\"\\u00e9\"}}");
    free(blob);
}

static void test_instance_put_replaces_existing_row(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 5, "STARTED", "{\"v\":1}");
    put_instance(fx, 5, "FINISHED", "{\"v\":2}");
    char *blob = NULL;
    assert_int_equal(fx->m->x_instance_get(fx->st, 5, &blob), 0);
    assert_string_equal(blob, "{\"v\":2}");
    free(blob);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_instance_count_by_state(fx->st, collect_count, &b), 0);
    assert_string_equal(buf_str(&b), "FINISHED=1;");
    buf_release(&b);
}

static void test_instance_put_with_uuid_of_another_instance_is_exists(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 1, "STARTED", "{}");
    struct store_instance_row r = {
        2, "00000000-0000-4000-8000-000000000001", "k", 1, "STARTED", "{}", 1, 1, 0, NULL};
    assert_int_equal(fx->m->x_instance_put(fx->st, &r), FLOWD_ERR_EXISTS);
    int64_t id = 0;
    assert_int_equal(
        fx->m->x_instance_id_by_uuid(fx->st, "00000000-0000-4000-8000-000000000001", &id), 0);
    assert_int_equal(id, 1);
}

static void test_instance_get_missing_is_notfound(void **state)
{
    struct fixture *fx = *state;
    char *blob = (char *)"untouched";
    assert_int_equal(fx->m->x_instance_get(fx->st, 99, &blob), FLOWD_ERR_NOTFOUND);
    int64_t id = 0;
    assert_int_equal(fx->m->x_instance_id_by_uuid(fx->st, "nope", &id), FLOWD_ERR_NOTFOUND);
}

static void test_instance_id_by_uuid_finds_it(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 11, "STARTED", "{}");
    put_instance(fx, 12, "STARTED", "{}");
    int64_t id = 0;
    assert_int_equal(
        fx->m->x_instance_id_by_uuid(fx->st, "00000000-0000-4000-8000-000000000012", &id), 0);
    assert_int_equal(id, 12);
}

static void test_instance_max_id_is_highest_id(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 3, "STARTED", "{}");
    put_instance(fx, 1000, "FINISHED", "{}");
    put_instance(fx, 20, "STARTED", "{}");
    int64_t max = 0;
    assert_int_equal(fx->m->x_instance_max_id(fx->st, 0, INT64_MAX, &max), 0);
    assert_int_equal(max, 1000);
}

static void test_instance_scan_active_returns_only_started_in_id_order(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 30, "STARTED", "{\"n\":30}");
    put_instance(fx, 10, "STARTED", "{\"n\":10}");
    put_instance(fx, 20, "FINISHED", "{\"n\":20}");
    put_instance(fx, 40, "FAILED", "{\"n\":40}");
    put_instance(fx, 5, "TERMINATED", "{\"n\":5}");
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_instance_scan_active(fx->st, collect_instance, &b), 0);
    assert_string_equal(buf_str(&b), "10:STARTED:{\"n\":10};30:STARTED:{\"n\":30};");
    buf_release(&b);
}

static void test_instance_count_by_state_counts_each_state(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 1, "STARTED", "{}");
    put_instance(fx, 2, "STARTED", "{}");
    put_instance(fx, 3, "FINISHED", "{}");
    put_instance(fx, 4, "FAILED", "{}");
    put_instance(fx, 5, "STARTED", "{}");
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_instance_count_by_state(fx->st, collect_count, &b), 0);
    assert_string_equal(buf_str(&b), "FAILED=1;FINISHED=1;STARTED=3;");
    buf_release(&b);
}

struct nested {
    struct fixture *fx;
    int inner_rc;
    struct buf hist;
};

static int scan_inside_scan(void *ctx, const struct store_instance_row *row)
{
    struct nested *n = ctx;
    /* Another method works from a callback; the same scan is refused. */
    if (n->fx->m->x_history_scan(n->fx->st, row->id, collect_history, &n->hist) != 0)
        return -100;
    struct buf ignored = BUF_INIT;
    n->inner_rc = n->fx->m->x_instance_scan_active(n->fx->st, collect_instance, &ignored);
    buf_release(&ignored);
    return 0;
}

static void test_scan_callback_may_call_other_methods_but_not_the_same_scan(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 1, "STARTED", "{}");
    put_instance(fx, 2, "STARTED", "{}");
    assert_int_equal(add_history(fx, 1, 1, "STARTED"), 0);
    assert_int_equal(add_history(fx, 2, 1, "ENTERED"), 0);
    struct nested n = {fx, 0, BUF_INIT};
    assert_int_equal(fx->m->x_instance_scan_active(fx->st, scan_inside_scan, &n), 0);
    assert_int_equal(n.inner_rc, FLOWD_ERR_STATE);
    assert_string_equal(buf_str(&n.hist), "1:node1:STARTED:5001:-;1:node1:ENTERED:5001:-;");
    buf_release(&n.hist);
}

/* ---- history -------------------------------------------------------------------------- */

static void test_history_scan_returns_rows_in_seq_order(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(add_history(fx, 1, 3, "FINISHED"), 0);
    assert_int_equal(add_history(fx, 1, 1, "STARTED"), 0);
    assert_int_equal(add_history(fx, 2, 1, "STARTED"), 0);
    struct engine_history h = {2, NULL, "TAKEN(route)", 77, "route 1"};
    assert_int_equal(fx->m->x_history_add(fx->st, 1, &h), 0);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_history_scan(fx->st, 1, collect_history, &b), 0);
    assert_string_equal(buf_str(&b), "1:node1:STARTED:5001:-;2:-:TAKEN(route):77:route 1;"
                                     "3:node3:FINISHED:5003:-;");
    buf_reset(&b);
    assert_int_equal(fx->m->x_history_scan(fx->st, 3, collect_history, &b), 0);
    assert_string_equal(buf_str(&b), "");
    buf_release(&b);
}

static void test_history_duplicate_seq_is_rejected(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(add_history(fx, 1, 1, "STARTED"), 0);
    assert_int_equal(add_history(fx, 1, 1, "FINISHED"), FLOWD_ERR_EXISTS);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_history_scan(fx->st, 1, collect_history, &b), 0);
    assert_string_equal(buf_str(&b), "1:node1:STARTED:5001:-;");
    buf_release(&b);
    /* Inside a transaction too; the rest of the transaction is still usable. */
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    assert_int_equal(add_history(fx, 1, 2, "ENTERED"), 0);
    assert_int_equal(add_history(fx, 1, 2, "ENTERED"), FLOWD_ERR_EXISTS);
    assert_int_equal(fx->m->x_commit(fx->st), 0);
}

/* ---- outbox --------------------------------------------------------------------------- */

static void test_outbox_scan_unsent_in_id_order_up_to_limit(void **state)
{
    struct fixture *fx = *state;
    int64_t a = add_outbox(fx, 1, "m-a");
    int64_t b_id = add_outbox(fx, 1, "m-b");
    add_outbox(fx, 2, "m-c");
    assert_true(a < b_id);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 2, collect_outbox, &b), 0);
    assert_string_equal(buf_str(&b), "m-a;m-b;");
    buf_reset(&b);
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 0, collect_outbox, &b), 0);
    assert_string_equal(buf_str(&b), "");
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, SIZE_MAX, collect_outbox, &b), 0);
    assert_string_equal(buf_str(&b), "m-a;m-b;m-c;");
    buf_release(&b);
}

struct seen_row {
    int n;
    struct store_outbox_row row;
    char value[16];
    int key_null, value_null;
};

static int copy_outbox_row(void *ctx, const struct store_outbox_row *row)
{
    struct seen_row *s = ctx;
    s->n++;
    s->row = *row;
    s->key_null = row->key == NULL;
    s->value_null = row->value == NULL;
    if (row->value && row->value_len <= sizeof(s->value))
        memcpy(s->value, row->value, row->value_len);
    s->row.message_id = s->row.topic = s->row.key = s->row.value = s->row.headers = NULL;
    return 0;
}

static void test_outbox_keeps_binary_value_and_null_fields(void **state)
{
    struct fixture *fx = *state;
    struct store_outbox_row r = {0,    0,          "dlq-1", "ai.flowx.dev.engine.dlq.v1",
                                 NULL, "a\0b\xff", 4,       NULL};
    int64_t id = 0;
    assert_int_equal(fx->m->x_outbox_add(fx->st, &r, 1, &id), 0);
    struct seen_row s = {0};
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 10, copy_outbox_row, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.row.id, id);
    assert_int_equal(s.row.instance_id, 0);
    assert_int_equal(s.key_null, 1);
    assert_int_equal(s.value_null, 0);
    assert_int_equal(s.row.value_len, 4);
    assert_memory_equal(s.value, "a\0b\xff", 4);

    /* A tombstone (NULL value) and an empty value are different things. */
    int64_t ids[1] = {id};
    assert_int_equal(fx->m->x_outbox_mark_sent(fx->st, ids, 1, 2), 0);
    r.value = NULL;
    r.value_len = 0;
    assert_int_equal(fx->m->x_outbox_add(fx->st, &r, 1, &id), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 10, copy_outbox_row, &s), 0);
    assert_int_equal(s.value_null, 1);
    ids[0] = id;
    assert_int_equal(fx->m->x_outbox_mark_sent(fx->st, ids, 1, 2), 0);
    r.value = "";
    assert_int_equal(fx->m->x_outbox_add(fx->st, &r, 1, &id), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 10, copy_outbox_row, &s), 0);
    assert_int_equal(s.value_null, 0);
    assert_int_equal(s.row.value_len, 0);
}

static void test_outbox_mark_sent_hides_rows_and_requeue_brings_them_back(void **state)
{
    struct fixture *fx = *state;
    int64_t a = add_outbox(fx, 1, "m-a");
    int64_t b_id = add_outbox(fx, 1, "m-b");
    add_outbox(fx, 1, "m-c");
    int64_t ids[2] = {a, b_id};
    assert_int_equal(fx->m->x_outbox_mark_sent(fx->st, ids, 2, 500), 0);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 10, collect_outbox, &b), 0);
    assert_string_equal(buf_str(&b), "m-c;");

    int n = -1;
    assert_int_equal(fx->m->x_outbox_requeue(fx->st, "m-b", &n), 0);
    assert_int_equal(n, 1);
    buf_reset(&b);
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 10, collect_outbox, &b), 0);
    assert_string_equal(buf_str(&b), "m-c;m-b;");
    assert_int_equal(fx->m->x_outbox_requeue(fx->st, "no-such-message", &n), 0);
    assert_int_equal(n, 0);
    buf_release(&b);
}

static void test_outbox_requeue_survives_the_originals_delivery_report(void **state)
{
    struct fixture *fx = *state;
    int64_t a = add_outbox(fx, 1, "m-a"); /* published, report not yet in */
    int n = -1;
    assert_int_equal(fx->m->x_outbox_requeue(fx->st, "m-a", &n), 0);
    assert_int_equal(n, 1);
    int64_t ids[1] = {a};
    assert_int_equal(fx->m->x_outbox_mark_sent(fx->st, ids, 1, 500), 0);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 10, collect_outbox, &b), 0);
    assert_string_equal(buf_str(&b), "m-a;");
    buf_release(&b);
}

static void test_outbox_purge_deletes_only_old_sent_rows(void **state)
{
    struct fixture *fx = *state;
    int64_t old = add_outbox(fx, 1, "m-old");
    int64_t recent = add_outbox(fx, 1, "m-recent");
    add_outbox(fx, 1, "m-unsent");
    int64_t ids[1] = {old};
    assert_int_equal(fx->m->x_outbox_mark_sent(fx->st, ids, 1, 100), 0);
    ids[0] = recent;
    assert_int_equal(fx->m->x_outbox_mark_sent(fx->st, ids, 1, 900), 0);
    assert_int_equal(fx->m->x_outbox_purge(fx->st, 500, "dlq", 0), 0);

    int n = -1;
    assert_int_equal(fx->m->x_outbox_requeue(fx->st, "m-old", &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(fx->m->x_outbox_requeue(fx->st, "m-recent", &n), 0);
    assert_int_equal(n, 1);
    /* Unsent rows are never purged, whatever their age. */
    assert_int_equal(fx->m->x_outbox_purge(fx->st, INT64_MAX, "dlq", INT64_MAX), 0);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_outbox_scan_unsent(fx->st, 10, collect_outbox, &b), 0);
    assert_string_equal(buf_str(&b), "m-unsent;m-recent;");
    buf_release(&b);
}

static void test_outbox_purge_keeps_waiting_instances_and_young_dead_letters(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 7, "STARTED", "{}");
    put_instance(fx, 8, "FINISHED", "{}");
    int64_t waiting = add_outbox(fx, 7, "m-waiting");
    int64_t ended = add_outbox(fx, 8, "m-ended");
    struct store_outbox_row dl = {0, 8, "m-dead", "dlq", "8", "{}", 2, "[]"};
    int64_t dead = 0;
    assert_int_equal(fx->m->x_outbox_add(fx->st, &dl, 100, &dead), 0);
    int64_t ids[3] = {waiting, ended, dead};
    assert_int_equal(fx->m->x_outbox_mark_sent(fx->st, ids, 3, 100), 0);

    /* a waiting instance's request stays (it may be re-sent); the dead letter is young */
    assert_int_equal(fx->m->x_outbox_purge(fx->st, 1000, "dlq", 50), 0);
    int n = -1;
    assert_int_equal(fx->m->x_outbox_requeue(fx->st, "m-waiting", &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(fx->m->x_outbox_requeue(fx->st, "m-ended", &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(fx->m->x_outbox_requeue(fx->st, "m-dead", &n), 0);
    assert_int_equal(n, 1);
}

/* ---- inbox ---------------------------------------------------------------------------- */

static void test_inbox_reports_new_then_seen(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "t/0/1", 10), 0);
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "t/0/1", 11), 1);
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "t/0/2", 12), 0);
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "msg:abc", 12), 0);
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "msg:abc", 13), 1);
}

static void test_inbox_purge_forgets_only_old_keys(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "old", 100), 0);
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "new", 900), 0);
    assert_int_equal(fx->m->x_inbox_purge(fx->st, 500), 0);
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "new", 1000), 1);
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "old", 1000), 0);
}

/* ---- throughput (printed, not asserted) ----------------------------------------------- */

static void run_throughput(struct fixture *fx, const char *sync)
{
    enum { N = 10000, BATCH = 500 };
    fx_close(fx);
    fx->be->wipe(fx);
    fx->opt.synchronous = sync;
    assert_int_equal(fx_open(fx), 0);

    char blob[512];
    memset(blob, 'x', sizeof(blob) - 1);
    blob[sizeof(blob) - 1] = '\0';
    int64_t t0 = clock_mono_us();
    for (int i = 0; i < N; i += BATCH) {
        assert_int_equal(fx->m->x_begin(fx->st), 0);
        for (int j = i; j < i + BATCH; j++) {
            char uuid[37], mid[48];
            snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-%012d", j + 1);
            snprintf(mid, sizeof(mid), "%s:ask:1", uuid);
            struct store_instance_row r = {j + 1, uuid, "k", 1, "STARTED", blob, j, j, 0, NULL};
            assert_int_equal(fx->m->x_instance_put(fx->st, &r), 0);
            struct engine_history h = {1, "start", "STARTED", j, NULL};
            assert_int_equal(fx->m->x_history_add(fx->st, j + 1, &h), 0);
            struct store_outbox_row o = {
                0,  j + 1, mid, "ai.flowx.dev.scoring.v1", "1", "{\"clientId\":1,\"amount\":2}",
                26, "[]"};
            assert_int_equal(fx->m->x_outbox_add(fx->st, &o, j, NULL), 0);
        }
        assert_int_equal(fx->m->x_commit(fx->st), 0);
    }
    double secs = (double)(clock_mono_us() - t0) / 1e6;
    print_message("store throughput (%s, synchronous=%s, batches of %d): %d instances "
                  "(instance_put+history_add+outbox_add) in %.3f s = %.0f instances/s, "
                  "%.0f rows/s\n",
                  fx->be->name, sync, BATCH, N, secs, N / secs, 3 * N / secs);
}

static void test_throughput_is_printed(void **state)
{
    struct fixture *fx = *state;
    run_throughput(fx, "FULL");
    run_throughput(fx, "NORMAL");
}

/* ---- listing (version 2) -------------------------------------------------------------- */

static void put_instance_kv(
    struct fixture *fx, int64_t id, const char *key, const char *state, int64_t started_ms)
{
    char uuid[37];
    snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-%012" PRId64, id);
    struct store_instance_row r = {id, uuid, key, 1, state, "{}", started_ms, started_ms, 0, NULL};
    assert_int_equal(fx->m->x_instance_put(fx->st, &r), 0);
}

static int collect_instance_id(void *ctx, const struct store_instance_row *row)
{
    buf_printf(ctx, "%" PRId64 ";", row->id);
    return 0;
}

static void test_instance_list_filters_and_pages_newest_first(void **state)
{
    struct fixture *fx = *state;
    put_instance_kv(fx, 1, "a", "FINISHED", 100);
    put_instance_kv(fx, 2, "a", "STARTED", 200);
    put_instance_kv(fx, 3, "b", "STARTED", 300);
    put_instance_kv(fx, 4, "a", "STARTED", 400);
    put_instance_kv(fx, 5, "a", "FAILED", 500);
    struct buf b = BUF_INIT;
    struct store_instance_filter f = {.limit = 100};
    assert_int_equal(fx->m->x_instance_list(fx->st, &f, collect_instance_id, &b), 0);
    assert_string_equal(buf_str(&b), "5;4;3;2;1;");

    buf_reset(&b);
    f = (struct store_instance_filter){.state = "STARTED", .def_key = "a", .limit = 100};
    assert_int_equal(fx->m->x_instance_list(fx->st, &f, collect_instance_id, &b), 0);
    assert_string_equal(buf_str(&b), "4;2;");

    buf_reset(&b);
    f = (struct store_instance_filter){.started_from_ms = 200, .started_to_ms = 400, .limit = 100};
    assert_int_equal(fx->m->x_instance_list(fx->st, &f, collect_instance_id, &b), 0);
    assert_string_equal(buf_str(&b), "3;2;");

    /* pages of two: the next page starts below the last id seen */
    buf_reset(&b);
    f = (struct store_instance_filter){.limit = 2};
    assert_int_equal(fx->m->x_instance_list(fx->st, &f, collect_instance_id, &b), 0);
    assert_string_equal(buf_str(&b), "5;4;");
    buf_reset(&b);
    f.before_id = 4;
    assert_int_equal(fx->m->x_instance_list(fx->st, &f, collect_instance_id, &b), 0);
    assert_string_equal(buf_str(&b), "3;2;");
    buf_reset(&b);
    f.before_id = 2;
    assert_int_equal(fx->m->x_instance_list(fx->st, &f, collect_instance_id, &b), 0);
    assert_string_equal(buf_str(&b), "1;");
    buf_release(&b);
}

static int collect_outbox_full(void *ctx,
                               const struct store_outbox_row *row,
                               int64_t created_ms,
                               int64_t sent_ms)
{
    (void)created_ms;
    buf_printf(ctx, "%" PRId64 ":%s:%s:%.*s:%s:%" PRId64 ";", row->id, row->message_id, row->topic,
               (int)row->value_len, row->value ? row->value : "", row->headers, sent_ms);
    return 0;
}

static void test_outbox_list_topic_and_get_return_rows_with_their_times(void **state)
{
    struct fixture *fx = *state;
    struct store_outbox_row dl = {0, 0, "dlq-1", "dlq", NULL, "x", 1, "[[\"reason\",\"r\"]]"};
    int64_t d1 = 0, d2 = 0;
    assert_int_equal(fx->m->x_outbox_add(fx->st, &dl, 100, &d1), 0);
    add_outbox(fx, 1, "m-a");
    dl.message_id = "dlq-2";
    assert_int_equal(fx->m->x_outbox_add(fx->st, &dl, 200, &d2), 0);
    assert_int_equal(fx->m->x_outbox_mark_sent(fx->st, &d1, 1, 150), 0);

    struct buf b = BUF_INIT, want = BUF_INIT;
    assert_int_equal(fx->m->x_outbox_list_topic(fx->st, "dlq", 0, 10, collect_outbox_full, &b), 0);
    buf_printf(&want,
               "%" PRId64 ":dlq-2:dlq:x:[[\"reason\",\"r\"]]:0;%" PRId64
               ":dlq-1:dlq:x:[[\"reason\",\"r\"]]:150;",
               d2, d1);
    assert_string_equal(buf_str(&b), buf_str(&want));
    buf_reset(&b);
    assert_int_equal(fx->m->x_outbox_list_topic(fx->st, "dlq", d2, 10, collect_outbox_full, &b), 0);
    assert_true(strncmp(buf_str(&b), "1:dlq-1:", 8) == 0 || strstr(buf_str(&b), ":dlq-1:"));
    assert_null(strstr(buf_str(&b), "dlq-2"));

    buf_reset(&b);
    assert_int_equal(fx->m->x_outbox_get(fx->st, d2, collect_outbox_full, &b), 0);
    assert_non_null(strstr(buf_str(&b), ":dlq-2:dlq:x:"));
    assert_int_equal(fx->m->x_outbox_get(fx->st, 999999, collect_outbox_full, &b),
                     FLOWD_ERR_NOTFOUND);

    int64_t n = -1;
    assert_int_equal(fx->m->x_outbox_count_unsent(fx->st, &n), 0);
    assert_int_equal(n, 2);
    buf_release(&b);
    buf_release(&want);
}

static void test_inbox_forget_makes_a_key_new_again(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "m:1", 10), 0);
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "m:1", 10), 1);
    assert_int_equal(fx->m->x_inbox_forget(fx->st, "m:1"), 0);
    assert_int_equal(fx->m->x_inbox_check_add(fx->st, "m:1", 10), 0);
    assert_int_equal(fx->m->x_inbox_forget(fx->st, "never-seen"), 0);
}

/* ---- runner --------------------------------------------------------------------------- */


/* ---- version 3: several nodes ----------------------------------------------------------- */

static void put_due(struct fixture *fx, int64_t id, const char *state, int64_t due)
{
    char uuid[37];
    snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-%012" PRId64, id);
    struct store_instance_row r = {id, uuid, "k", 1, state, "{}", 1, 1, due, NULL};
    assert_int_equal(fx->m->x_instance_put(fx->st, &r), 0);
}

static void test_instance_max_id_stays_in_its_range(void **state)
{
    struct fixture *fx = *state;
    const int64_t node1 = 1000, node2 = 2000; /* the ranges of two nodes */
    put_instance(fx, node1 + 7, "STARTED", "{}");
    put_instance(fx, node2 + 3, "STARTED", "{}");
    int64_t max = -1;
    assert_int_equal(fx->m->x_instance_max_id(fx->st, node1, node2, &max), 0);
    assert_int_equal(max, node1 + 7);
    assert_int_equal(fx->m->x_instance_max_id(fx->st, 0, node1, &max), 0);
    assert_int_equal(max, 0);
}

static void test_instance_lock_reads_and_lock_many_takes_started_ones_in_id_order(void **state)
{
    struct fixture *fx = *state;
    put_instance(fx, 9, "STARTED", "{\"n\":9}");
    put_instance(fx, 4, "STARTED", "{\"n\":4}");
    put_instance(fx, 6, "FINISHED", "{\"n\":6}");
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    char *blob = NULL;
    assert_int_equal(fx->m->x_instance_lock(fx->st, 9, &blob), 0);
    assert_string_equal(blob, "{\"n\":9}");
    free(blob);
    assert_int_equal(fx->m->x_instance_lock(fx->st, 77, &blob), FLOWD_ERR_NOTFOUND);
    int64_t ids[] = {4, 6, 9, 12};
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_instance_lock_many(fx->st, ids, 4, collect_instance, &b), 0);
    assert_string_equal(buf_str(&b), "4:STARTED:{\"n\":4};9:STARTED:{\"n\":9};");
    buf_release(&b);
    assert_int_equal(fx->m->x_commit(fx->st), 0);
}

static void test_instance_claim_due_takes_due_started_ones_earliest_first(void **state)
{
    struct fixture *fx = *state;
    put_due(fx, 1, "STARTED", 500);
    put_due(fx, 2, "STARTED", 100);
    put_due(fx, 3, "STARTED", 0);    /* nothing due */
    put_due(fx, 4, "FINISHED", 50);  /* ended */
    put_due(fx, 5, "STARTED", 9000); /* later */
    put_due(fx, 6, "STARTED", 300);
    int64_t next = -1;
    assert_int_equal(fx->m->x_instance_next_due(fx->st, &next), 0);
    assert_int_equal(next, 100);
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_instance_claim_due(fx->st, 1000, 2, collect_instance, &b), 0);
    assert_string_equal(buf_str(&b), "2:STARTED:{};6:STARTED:{};");
    buf_reset(&b);
    assert_int_equal(fx->m->x_instance_claim_due(fx->st, 1000, 10, collect_instance, &b), 0);
    assert_string_equal(buf_str(&b), "2:STARTED:{};6:STARTED:{};1:STARTED:{};");
    buf_release(&b);
    assert_int_equal(fx->m->x_commit(fx->st), 0);
}

static void test_claim_due_skips_rows_another_transaction_holds(void **state)
{
    struct fixture *fx = *state;
    if (fx->be->one_writer)
        skip(); /* SQLite: one writer at a time, nothing to skip */
    put_due(fx, 1, "STARTED", 100);
    put_due(fx, 2, "STARTED", 200);
    struct store *other = NULL;
    assert_int_equal(fx->m->x_open(&fx->opt, &other, fx->errstr, sizeof(fx->errstr)), 0);
    assert_int_equal(fx->m->x_begin(other), 0);
    char *blob = NULL;
    assert_int_equal(fx->m->x_instance_lock(other, 1, &blob), 0);
    free(blob);
    assert_int_equal(fx->m->x_begin(fx->st), 0);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_instance_claim_due(fx->st, 1000, 10, collect_instance, &b), 0);
    assert_string_equal(buf_str(&b), "2:STARTED:{};"); /* 1 is held: skipped, not waited for */
    buf_release(&b);
    assert_int_equal(fx->m->x_commit(fx->st), 0);
    assert_int_equal(fx->m->x_commit(other), 0);
    fx->m->x_close(other);
}

static int collect_waiting(void *ctx, const char *def_key, const char *waiting, int64_t n)
{
    buf_printf(ctx, "%s|%s|%" PRId64 ";", def_key, waiting, n);
    return 0;
}

static void test_instance_count_waiting_groups_started_ones(void **state)
{
    struct fixture *fx = *state;
    const char *w[] = {"wait\tWAITING_MESSAGE", "wait\tWAITING_MESSAGE",
                       "a\tWAITING_MESSAGE\nb\tWAITING_JOIN", NULL, "wait\tWAITING_MESSAGE"};
    const char *st[] = {"STARTED", "STARTED", "STARTED", "STARTED", "FINISHED"};
    for (int i = 0; i < 5; i++) {
        char uuid[37];
        snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-%012d", i + 1);
        struct store_instance_row r = {i + 1, uuid, "k", 1, st[i], "{}", 1, 1, 0, w[i]};
        assert_int_equal(fx->m->x_instance_put(fx->st, &r), 0);
    }
    /* an update moves an instance from one group to another */
    struct store_instance_row r = {2,         "00000000-0000-4000-8000-000000000002",
                                   "k",       1,
                                   "STARTED", "{}",
                                   1,         2,
                                   0,         "other\tINCIDENT"};
    assert_int_equal(fx->m->x_instance_put(fx->st, &r), 0);
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_instance_count_waiting(fx->st, collect_waiting, &b), 0);
    /* order of the groups is not part of the contract: check each */
    assert_non_null(strstr(buf_str(&b), "k|wait\tWAITING_MESSAGE|1;"));
    assert_non_null(strstr(buf_str(&b), "k|other\tINCIDENT|1;"));
    assert_non_null(strstr(buf_str(&b), "k|a\tWAITING_MESSAGE\nb\tWAITING_JOIN|1;"));
    assert_null(strstr(buf_str(&b), "|2;"));
    buf_release(&b);
}

static int collect_message_id(void *ctx, const struct store_outbox_row *row)
{
    buf_printf(ctx, "%s;", row->message_id);
    return 0;
}

static void test_node_id_is_held_once_and_outbox_of_a_gone_node_is_adopted(void **state)
{
    struct fixture *fx = *state;
    if (fx->be->one_writer)
        skip(); /* SQLite: one node; adopting finds nothing */
    struct store_options o1 = fx->opt, o2 = fx->opt;
    o1.node_id = 1;
    o1.claim_node = 1;
    o2.node_id = 2;
    o2.claim_node = 1;
    struct store *n1 = NULL, *n2 = NULL, *again = NULL;
    assert_int_equal(fx->m->x_open(&o1, &n1, fx->errstr, sizeof(fx->errstr)), 0);
    assert_int_equal(fx->m->x_open(&o1, &again, fx->errstr, sizeof(fx->errstr)), FLOWD_ERR_EXISTS);
    assert_non_null(strstr(fx->errstr, "engine.node-id 1 is in use by another flowd"));
    assert_int_equal(fx->m->x_open(&o2, &n2, fx->errstr, sizeof(fx->errstr)), 0);
    struct store_outbox_row row = {0, 1, "m-of-2", "t", NULL, "v", 1, NULL};
    assert_int_equal(fx->m->x_outbox_add(n2, &row, 1, NULL), 0);
    int64_t n = -1;
    assert_int_equal(fx->m->x_outbox_adopt(n1, &n), 0);
    assert_int_equal(n, 0); /* node 2 is alive */
    struct buf b = BUF_INIT;
    assert_int_equal(fx->m->x_outbox_scan_unsent(n1, 10, collect_message_id, &b), 0);
    assert_string_equal(buf_str(&b), ""); /* not node 1's */
    fx->m->x_close(n2);
    for (int i = 0; i < 50 && n == 0; i++) { /* the server notices the closed connection */
        assert_int_equal(fx->m->x_outbox_adopt(n1, &n), 0);
        if (!n)
            usleep(20000);
    }
    assert_int_equal(n, 1);
    assert_int_equal(fx->m->x_outbox_scan_unsent(n1, 10, collect_message_id, &b), 0);
    assert_string_equal(buf_str(&b), "m-of-2;");
    buf_release(&b);
    fx->m->x_close(n1);
}

#define T(f) cmocka_unit_test_prestate_setup_teardown(f, setup, teardown, NULL)

int main(void)
{
    log_level_now = LOG_WARN; /* errors the tests provoke stay visible */
    store_sqlite_global_init();
    backends[0].schema_version = store_sqlite_schema_version;
    backends[1].schema_version = store_pg_schema_version;
    int64_t t0 = clock_mono_us();
    backends[1].unavailable = pg_start();
    if (!backends[1].unavailable)
        print_message("postgresql test server (%s) started in %.2f s\n", pg.bindir,
                      (double)(clock_mono_us() - t0) / 1e6);

    struct CMUnitTest tests[] = {
        T(test_open_creates_empty_store),
        T(test_open_uses_wal_journal),
        T(test_reopen_keeps_data),
        T(test_migrations_are_idempotent_across_reopens),
        T(test_open_refuses_database_from_newer_flowd),
        T(test_open_accepts_synchronous_normal),
        T(test_open_rejects_bad_synchronous),
        T(test_open_in_missing_directory_names_it),
        T(test_rollback_discards_everything_in_transaction),
        T(test_commit_keeps_transaction),
        T(test_transaction_misuse_is_reported),
        T(test_second_writer_gets_again),
        T(test_lost_connection_is_again_then_reconnects),
        T(test_commit_after_failed_statement_never_claims_dropped_work),
        T(test_def_put_same_json_keeps_version),
        T(test_def_put_changed_json_makes_next_version),
        T(test_def_put_versions_are_per_key),
        T(test_def_scan_returns_every_version_oldest_first),
        T(test_scan_stops_when_callback_returns_nonzero),
        T(test_instance_put_then_get_returns_blob),
        T(test_instance_put_replaces_existing_row),
        T(test_instance_put_with_uuid_of_another_instance_is_exists),
        T(test_instance_get_missing_is_notfound),
        T(test_instance_id_by_uuid_finds_it),
        T(test_instance_max_id_is_highest_id),
        T(test_instance_scan_active_returns_only_started_in_id_order),
        T(test_instance_count_by_state_counts_each_state),
        T(test_scan_callback_may_call_other_methods_but_not_the_same_scan),
        T(test_history_scan_returns_rows_in_seq_order),
        T(test_history_duplicate_seq_is_rejected),
        T(test_outbox_scan_unsent_in_id_order_up_to_limit),
        T(test_outbox_keeps_binary_value_and_null_fields),
        T(test_outbox_mark_sent_hides_rows_and_requeue_brings_them_back),
        T(test_outbox_purge_keeps_waiting_instances_and_young_dead_letters),
        T(test_outbox_requeue_survives_the_originals_delivery_report),
        T(test_outbox_purge_deletes_only_old_sent_rows),
        T(test_inbox_reports_new_then_seen),
        T(test_inbox_purge_forgets_only_old_keys),
        T(test_instance_list_filters_and_pages_newest_first),
        T(test_outbox_list_topic_and_get_return_rows_with_their_times),
        T(test_inbox_forget_makes_a_key_new_again),
        T(test_instance_max_id_stays_in_its_range),
        T(test_instance_lock_reads_and_lock_many_takes_started_ones_in_id_order),
        T(test_instance_claim_due_takes_due_started_ones_earliest_first),
        T(test_claim_due_skips_rows_another_transaction_holds),
        T(test_node_id_is_held_once_and_outbox_of_a_gone_node_is_adopted),
        T(test_instance_count_waiting_groups_started_ones),
        T(test_throughput_is_printed),
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        if (backends[i].unavailable) {
            const char *ci = getenv("CI");
            print_message("SKIP: %s backend: all %zu tests skipped: %s%s\n", backends[i].name,
                          sizeof(tests) / sizeof(tests[0]), backends[i].unavailable,
                          ci && *ci ? " (CI is set: this is a failure)" : "");
            if (ci && *ci)
                failed++;
            continue;
        }
        int64_t t1 = clock_mono_us();
        for (size_t t = 0; t < sizeof(tests) / sizeof(tests[0]); t++)
            tests[t].initial_state = &backends[i];
        failed += _cmocka_run_group_tests(backends[i].name, tests, sizeof(tests) / sizeof(tests[0]),
                                          NULL, NULL);
        print_message("%s backend: %.2f s\n", backends[i].name,
                      (double)(clock_mono_us() - t1) / 1e6);
    }
    pg_stop(backends[1].unavailable != NULL);
    return failed ? 1 : 0;
}
