/* flow_load.c - load driver of bench/run.py: starts instances of a process over Kafka (the
 * start topic, header Fx-ProcessName) and reads completions from flowd's store, polled every
 * millisecond: SQLite (DB is the file; a read-only connection) or PostgreSQL (DB is a libpq
 * connection string "host=... dbname=..." or a postgresql:// URI). Each start carries its send time
 * in the body (data.t0, epoch ms), so a latency is updated_ms of the FINISHED row minus t0: it
 * includes the time the start waited in Kafka.
 *
 *   flow_load closed BOOTSTRAP DB PROCESS COUNT K     K instances in flight until COUNT done
 *   flow_load open   BOOTSTRAP DB PROCESS RATE SECS   RATE starts/s for SECS, then drain
 *   flow_load park   BOOTSTRAP DB PROCESS COUNT       COUNT starts, waits until all wait
 *
 * Prints one JSON line. Instance ids are assumed consecutive from the largest id present
 * when the run begins (a fresh store per run, one driver at a time, one flowd node).
 *
 * libpq is loaded with dlopen(): flow_load's link line is in CMakeLists.txt (SQLite and
 * librdkafka only) and it needs a few libpq calls.
 */
#include <librdkafka/rdkafka.h>
#include <sqlite3.h>

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define START_TOPIC "ai.flowx.dev.core.trigger.start.process.v1"

static rd_kafka_t *prod;
static rd_kafka_topic_t *start_rkt;
static sqlite3 *db;
static sqlite3_stmt *q_max, *q_started;
static int64_t base;

/* ---- PostgreSQL through a dlopen()ed libpq ---- */

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;
#define PG_CONNECTION_OK 0
#define PG_TUPLES_OK     2
static struct {
    PGconn *(*connectdb)(const char *);
    int (*status)(const PGconn *);
    char *(*error_message)(const PGconn *);
    PGresult *(*exec_params)(PGconn *,
                             const char *,
                             int,
                             const unsigned *,
                             const char *const *,
                             const int *,
                             const int *,
                             int);
    int (*result_status)(const PGresult *);
    int (*ntuples)(const PGresult *);
    char *(*getvalue)(const PGresult *, int, int);
    void (*clear)(PGresult *);
    void (*finish)(PGconn *);
} pq;
static PGconn *pg;

static void *sym(void *h, const char *name)
{
    void *f = dlsym(h, name);
    if (!f) {
        fprintf(stderr, "flow_load: libpq has no %s\n", name);
        exit(1);
    }
    return f;
}

static void pg_open(const char *dsn)
{
    void *h = dlopen("libpq.so.5", RTLD_NOW);
    if (!h) {
        fprintf(stderr, "flow_load: %s\n", dlerror());
        exit(1);
    }
    *(void **)&pq.connectdb = sym(h, "PQconnectdb");
    *(void **)&pq.status = sym(h, "PQstatus");
    *(void **)&pq.error_message = sym(h, "PQerrorMessage");
    *(void **)&pq.exec_params = sym(h, "PQexecParams");
    *(void **)&pq.result_status = sym(h, "PQresultStatus");
    *(void **)&pq.ntuples = sym(h, "PQntuples");
    *(void **)&pq.getvalue = sym(h, "PQgetvalue");
    *(void **)&pq.clear = sym(h, "PQclear");
    *(void **)&pq.finish = sym(h, "PQfinish");
    pg = pq.connectdb(dsn);
    if (pq.status(pg) != PG_CONNECTION_OK) {
        fprintf(stderr, "flow_load: %s: %s\n", dsn, pq.error_message(pg));
        exit(1);
    }
}

/* ---- the store, either kind ---- */

typedef void(row_cb)(void *ctx, const char *const *cols);

/* Runs a query with ?1 / $1 = base; calls row() with each row's ncols columns as text. */
static void rows(const char *sqlite_sql, const char *pg_sql, int ncols, row_cb *row, void *ctx)
{
    const char *v[4];
    if (pg) {
        char b[24];
        snprintf(b, sizeof(b), "%lld", (long long)base);
        const char *params[1] = {b};
        PGresult *res = pq.exec_params(pg, pg_sql, 1, NULL, params, NULL, NULL, 0);
        if (pq.result_status(res) != PG_TUPLES_OK) {
            fprintf(stderr, "flow_load: %s: %s\n", pg_sql, pq.error_message(pg));
            exit(1);
        }
        for (int i = 0, n = pq.ntuples(res); i < n; i++) {
            for (int j = 0; j < ncols; j++)
                v[j] = pq.getvalue(res, i, j);
            row(ctx, v);
        }
        pq.clear(res);
        return;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sqlite_sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "flow_load: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    sqlite3_bind_int64(st, 1, base);
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int j = 0; j < ncols; j++) {
            v[j] = (const char *)sqlite3_column_text(st, j);
            v[j] = v[j] ? v[j] : "";
        }
        row(ctx, v);
    }
    sqlite3_finalize(st);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static int64_t one_int(sqlite3_stmt *st)
{
    int64_t v = -1;
    sqlite3_bind_int64(st, 1, base);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_BUSY)
        sleep_us(200);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return v;
}

static void two_ints(void *ctx, const char *const *cols)
{
    int64_t *v = ctx;
    v[0] = strtoll(cols[0], NULL, 10);
    v[1] = strtoll(cols[1], NULL, 10);
}

/* created = rows since base; completed = created - still STARTED */
static void progress(int64_t *created, int64_t *completed)
{
    int64_t hi, started;
    if (pg) {
        int64_t v[2] = {0, 0};
        rows(NULL,
             "SELECT (SELECT coalesce(max(id), 0) FROM instances), (SELECT count(*) FROM "
             "instances WHERE state = 'STARTED' AND id > $1::bigint)",
             2, two_ints, v);
        hi = v[0];
        started = v[1];
    } else {
        hi = one_int(q_max);
        started = one_int(q_started);
    }
    *created = hi > base ? hi - base : 0;
    *completed = *created - (started > 0 ? started : 0);
}

static void start_one(const char *process, long seq)
{
    char body[160];
    int n = snprintf(body, sizeof(body),
                     "{\"t0\": %lld, \"request\": {\"seq\": %ld, \"text\": \"hello\"}}",
                     (long long)wall_ms(), seq);
    rd_kafka_resp_err_t err;
    while (
        (err = rd_kafka_producev(prod, RD_KAFKA_V_RKT(start_rkt), RD_KAFKA_V_VALUE(body, (size_t)n),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_HEADER("Fx-ProcessName", process, -1),
                                 RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(prod, 10);
    if (err) {
        fprintf(stderr, "flow_load: produce: %s\n", rd_kafka_err2str(err));
        exit(1);
    }
    rd_kafka_poll(prod, 0);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t pct(const int64_t *v, size_t n, double p)
{
    if (!n)
        return -1;
    size_t k = (size_t)(p / 100.0 * (double)n + 0.5);
    if (k > 0)
        k--;
    if (k >= n)
        k = n - 1;
    return v[k];
}

struct cols3 {
    size_t n, cap;
    int64_t *v[3];
};

static void add3(void *ctx, const char *const *cols)
{
    struct cols3 *c = ctx;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        for (int j = 0; j < 3; j++)
            c->v[j] = realloc(c->v[j], c->cap * sizeof(int64_t));
    }
    for (int j = 0; j < 3; j++)
        c->v[j][c->n] = strtoll(cols[j], NULL, 10);
    c->n++;
}

/* Where the time of the finished instances went, from the store's timestamps: queue (driver
 * sent -> instance started), connector (started -> reply received: outbox, Kafka, echo, Kafka,
 * consume), finish (received -> ended and written). Printed as one JSON line on stderr. */
static void legs(void)
{
    struct cols3 c = {0, 0, {NULL, NULL, NULL}};
    rows("SELECT i.started_ms - json_extract(i.blob, '$.data.t0'), h.at_ms - i.started_ms, "
         "i.updated_ms - h.at_ms FROM instances i JOIN history h ON h.instance_id = i.id AND "
         "h.state = 'MESSAGE_RECEIVED' WHERE i.id > ?1 AND i.state = 'FINISHED'",
         "SELECT i.started_ms - (i.blob::json #>> '{data,t0}')::bigint, h.at_ms - i.started_ms, "
         "i.updated_ms - h.at_ms FROM instances i JOIN history h ON h.instance_id = i.id AND "
         "h.state = 'MESSAGE_RECEIVED' WHERE i.id > $1::bigint AND i.state = 'FINISHED'",
         3, add3, &c);
    size_t n = c.n;
    static const char *const names[] = {"queue", "connector", "finish"};
    fprintf(stderr, "{\"legs_ms\": {");
    for (int j = 0; j < 3; j++) {
        qsort(c.v[j], n, sizeof(int64_t), cmp_i64);
        fprintf(stderr, "%s\"%s\": {\"p50\": %lld, \"p99\": %lld, \"max\": %lld}", j ? ", " : "",
                names[j], (long long)pct(c.v[j], n, 50), (long long)pct(c.v[j], n, 99),
                (long long)(n ? c.v[j][n - 1] : -1));
        free(c.v[j]);
    }
    fprintf(stderr, "}}\n");
}

struct latencies {
    size_t n, cap, nfin, nwait;
    int64_t *lat, first, last;
};

static void add_latency(void *ctx, const char *const *cols)
{
    struct latencies *l = ctx;
    int64_t up = strtoll(cols[0], NULL, 10), t0 = strtoll(cols[1], NULL, 10);
    if (t0 && t0 < l->first)
        l->first = t0;
    if (strcmp(cols[2], "FINISHED") != 0) {
        l->nwait++;
        return;
    }
    l->nfin++;
    if (up > l->last)
        l->last = up;
    if (l->n < l->cap)
        l->lat[l->n++] = up - t0;
}

/* Reads the latencies of the finished instances since base and prints the JSON line. */
static void report(const char *mode, long param, long sent, double wall)
{
    struct latencies l = {0, (size_t)sent + 16, 0, 0, NULL, INT64_MAX, 0};
    l.lat = malloc(l.cap * sizeof(*l.lat));
    rows("SELECT updated_ms, json_extract(blob, '$.data.t0'), state FROM instances WHERE id > ?1",
         "SELECT updated_ms, (blob::json #>> '{data,t0}')::bigint, state FROM instances "
         "WHERE id > $1::bigint",
         3, add_latency, &l);
    qsort(l.lat, l.n, sizeof(*l.lat), cmp_i64);
    double span = l.last > l.first ? (double)(l.last - l.first) / 1000.0 : wall;
    printf("{\"mode\": \"%s\", \"%s\": %ld, \"sent\": %ld, \"completed\": %zu, \"waiting\": %zu, "
           "\"wall_s\": %.3f, \"completed_per_s\": %.1f, \"latency_ms\": {\"p50\": %lld, "
           "\"p95\": %lld, \"p99\": %lld, \"max\": %lld}}\n",
           mode, strcmp(mode, "open") == 0 ? "rate" : (strcmp(mode, "closed") == 0 ? "k" : "count"),
           param, sent, l.nfin, l.nwait, wall, l.nfin ? (double)l.nfin / span : 0.0,
           (long long)pct(l.lat, l.n, 50), (long long)pct(l.lat, l.n, 95),
           (long long)pct(l.lat, l.n, 99), (long long)(l.n ? l.lat[l.n - 1] : -1));
    free(l.lat);
    legs();
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: flow_load closed|open|park BOOTSTRAP DB|DSN PROCESS N [K|SECS]\n");
        return 2;
    }
    const char *mode = argv[1], *process = argv[4];
    long a = strtol(argv[5], NULL, 10), b = argc > 6 ? strtol(argv[6], NULL, 10) : 0;
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[2], errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "linger.ms", "0", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", errstr,
                          sizeof(errstr))) {
        fprintf(stderr, "flow_load: %s\n", errstr);
        return 1;
    }
    prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!prod) {
        fprintf(stderr, "flow_load: %s\n", errstr);
        return 1;
    }
    /* librdkafka 2.0 looks up a topic first named in rd_kafka_producev() only at its 1 s topic
     * scan (librdkafka issue #3202): the first starts would wait up to 1 s before they leave
     * and that second would be counted against flowd. Know the topic before the clock starts. */
    start_rkt = rd_kafka_topic_new(prod, START_TOPIC, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t merr = rd_kafka_metadata(prod, 0, start_rkt, &md, 10000);
    if (merr) {
        fprintf(stderr, "flow_load: metadata of %s: %s\n", START_TOPIC, rd_kafka_err2str(merr));
        return 1;
    }
    rd_kafka_metadata_destroy(md);
    if (strncmp(argv[3], "host=", 5) == 0 || strncmp(argv[3], "postgresql:", 11) == 0) {
        pg_open(argv[3]);
        int64_t v[2] = {0, 0};
        rows(NULL, "SELECT coalesce(max(id), 0), 0 FROM instances WHERE $1::bigint >= 0", 2,
             two_ints, v);
        base = v[0];
    } else if (sqlite3_open_v2(argv[3], &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
               sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM instances WHERE ?1 >= 0",
                                  -1, &q_max, NULL) != SQLITE_OK ||
               sqlite3_prepare_v2(
                   db, "SELECT count(*) FROM instances WHERE state = 'STARTED' AND id > ?1", -1,
                   &q_started, NULL) != SQLITE_OK) {
        fprintf(stderr, "flow_load: %s: %s\n", argv[3], sqlite3_errmsg(db));
        return 1;
    }
    if (db) {
        sqlite3_busy_timeout(db, 50);
        base = one_int(q_max);
    }

    long sent = 0;
    int64_t created = 0, completed = 0;
    double t0 = mono_s(), deadline;
    if (strcmp(mode, "closed") == 0) {
        deadline = t0 + 300;
        while (completed < a && mono_s() < deadline) {
            while (sent < a && sent - completed < b)
                start_one(process, sent++);
            rd_kafka_poll(prod, 0);
            sleep_us(500);
            progress(&created, &completed);
        }
    } else if (strcmp(mode, "open") == 0) {
        long total = a * b;
        while (sent < total) {
            double due = t0 + (double)sent / (double)a;
            double now = mono_s();
            if (now < due) {
                rd_kafka_poll(prod, 0);
                sleep_us((long)((due - now) * 1e6) > 1000 ? 1000 : (long)((due - now) * 1e6));
                continue;
            }
            start_one(process, sent++);
        }
        deadline = mono_s() + 120;
        do {
            rd_kafka_poll(prod, 0);
            sleep_us(2000);
            progress(&created, &completed);
        } while (completed < sent && mono_s() < deadline);
    } else {
        for (; sent < a; sent++)
            start_one(process, sent);
        rd_kafka_flush(prod, 60000);
        deadline = mono_s() + 300;
        do {
            sleep_us(50000);
            progress(&created, &completed);
        } while (created < sent && mono_s() < deadline);
    }
    rd_kafka_flush(prod, 10000);
    double wall = mono_s() - t0;
    if (strcmp(mode, "park") == 0)
        printf("{\"mode\": \"park\", \"sent\": %ld, \"created\": %lld, \"wall_s\": %.3f, "
               "\"starts_per_s\": %.1f}\n",
               sent, (long long)created, wall, (double)created / wall);
    else
        report(mode, strcmp(mode, "closed") == 0 ? b : a, sent, wall);
    sqlite3_finalize(q_max);
    sqlite3_finalize(q_started);
    sqlite3_close(db);
    if (pg)
        pq.finish(pg);
    rd_kafka_topic_destroy(start_rkt);
    rd_kafka_destroy(prod);
    return 0;
}
