/* echo.c - the smallest useful connector on the flowd SDK: it answers every request with its
 * own body. The benchmark (bench/sdk_bench.sh) measures the SDK with it, and the SDK tests use
 * its test hooks, which a request body can ask for:
 *
 *   {"failTimes": N}    the first N attempts fail with a retriable error (then it succeeds)
 *   {"fatal": "text"}   fails at once with a fatal error: an error reply the process routes on
 *   {"sleepMs": N}      works N ms before answering (stops early when the connector stops)
 *
 *   request  ai.flowx.dev.connector.echo.in.v1   (any JSON)
 *   reply    ai.flowx.dev.engine.receive.echo.v1 (the same JSON)
 *
 * Build against the installed SDK:  make   (see Makefile; pkg-config flowd-connector libcjson)
 * Run:  sdk-echo-connector --bootstrap-file DATA_DIR/kafka.bootstrap [-v]
 */
#include <flowd/flowd.h>

#include <cjson/cJSON.h>

#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static FILE *journal; /* --log: "start|done <messageId> <instanceId> <attempt>" lines */
static pthread_mutex_t journal_lock = PTHREAD_MUTEX_INITIALIZER;

static void note(const char *what, flowd_request_t *req)
{
    if (!journal)
        return;
    pthread_mutex_lock(&journal_lock);
    fprintf(journal, "%s %s %s %d\n", what,
            flowd_request_message_id(req) ? flowd_request_message_id(req) : "-",
            flowd_request_instance_id(req), flowd_request_attempt(req));
    fflush(journal);
    pthread_mutex_unlock(&journal_lock);
}

/* The handler: runs on a worker thread; one instance's requests never run concurrently. */
static flowd_error_t *on_request(flowd_request_t *req, void *opaque)
{
    size_t len;
    const char *body = flowd_request_body(req, &len);
    flowd_error_t *error = NULL;
    (void)opaque;

    note("start", req);
    cJSON *json = cJSON_ParseWithLength(body, len);
    const cJSON *fail_times = cJSON_GetObjectItemCaseSensitive(json, "failTimes");
    const cJSON *fatal = cJSON_GetObjectItemCaseSensitive(json, "fatal");
    const cJSON *sleep_ms = cJSON_GetObjectItemCaseSensitive(json, "sleepMs");

    if (cJSON_IsNumber(sleep_ms)) {
        for (int slept = 0; slept < sleep_ms->valueint && !flowd_request_stopping(req); slept += 10)
            nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
    }
    if (cJSON_IsNumber(fail_times) && flowd_request_attempt(req) <= fail_times->valueint)
        error = flowd_error_retriable("ECHO_FLAKY", "attempt %d of %d fails on purpose",
                                      flowd_request_attempt(req), fail_times->valueint);
    else if (cJSON_IsString(fatal))
        error = flowd_error_fatal("ECHO_FATAL", "%s", fatal->valuestring);
    else if (flowd_request_reply(req, body, len) != FLOWD_OK) /* echo */
        error = flowd_error_retriable("NOMEM", "out of memory");
    cJSON_Delete(json);
    if (!error)
        note("done", req);
    return error;
}

static void on_log(void *opaque, int level, const char *msg)
{
    (void)opaque;
    fprintf(stderr, "sdk-echo: %s%s\n", level <= FLOWD_LOG_WARNING ? "warning: " : "", msg);
}

static void usage(FILE *fp)
{
    fprintf(fp, "usage: sdk-echo-connector (--bootstrap HOST:PORT | --bootstrap-file PATH)\n"
                "          [--in TOPIC] [--out TOPIC] [--group ID] [--set NAME=VALUE]...\n"
                "          [--log FILE] [-v]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"bootstrap", required_argument, NULL, 'b'},
                                             {"bootstrap-file", required_argument, NULL, 'f'},
                                             {"in", required_argument, NULL, 'i'},
                                             {"out", required_argument, NULL, 'o'},
                                             {"group", required_argument, NULL, 'g'},
                                             {"set", required_argument, NULL, 's'},
                                             {"log", required_argument, NULL, 'l'},
                                             {"verbose", no_argument, NULL, 'v'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *in = "ai.flowx.dev.connector.echo.in.v1";
    char errstr[FLOWD_ERRSTR_SIZE];
    int verbose = 0, c, rc = 1;
    flowd_conf_t *conf = flowd_conf_new();

    if (!conf)
        return 1;
    flowd_conf_set(conf, "reply.topic", "ai.flowx.dev.engine.receive.echo.v1", NULL, 0);
    flowd_conf_set(conf, "group.id", "sdk-echo-connector", NULL, 0);
    while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        const char *name = NULL, *value = optarg;
        char *eq;
        switch (c) {
        case 'b':
            name = "bootstrap.servers";
            break;
        case 'f':
            name = "bootstrap.file";
            break;
        case 'i':
            in = optarg;
            break;
        case 'o':
            name = "reply.topic";
            break;
        case 'g':
            name = "group.id";
            break;
        case 's': /* any SDK property, e.g. --set concurrency=8 */
            if (!(eq = strchr(optarg, '='))) {
                usage(stderr);
                goto out;
            }
            *eq = '\0';
            name = optarg;
            value = eq + 1;
            break;
        case 'l':
            if (!(journal = fopen(optarg, "a"))) {
                perror(optarg);
                goto out;
            }
            break;
        case 'v':
            verbose = 1;
            break;
        case 'h':
            usage(stdout);
            rc = 0;
            goto out;
        default:
            usage(stderr);
            goto out;
        }
        if (name && flowd_conf_set(conf, name, value, errstr, sizeof(errstr)) != FLOWD_OK) {
            fprintf(stderr, "sdk-echo: %s\n", errstr);
            goto out;
        }
    }
    flowd_conf_set_log_cb(conf, on_log, verbose ? FLOWD_LOG_DEBUG : FLOWD_LOG_WARNING, NULL);
    if (flowd_conf_add_handler(conf, in, NULL, on_request, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "sdk-echo: %s\n", errstr);
        goto out;
    }
    flowd_conn_t *conn = flowd_conn_new(conf, errstr, sizeof(errstr));
    if (!conn) {
        fprintf(stderr, "sdk-echo: %s\n", errstr);
        goto out;
    }
    conf = NULL;                                   /* the connector owns it now */
    rc = flowd_conn_run(conn) == FLOWD_OK ? 0 : 1; /* until SIGTERM/SIGINT */

    struct flowd_conn_stats st;
    flowd_conn_get_stats(conn, &st);
    if (verbose)
        fprintf(stderr,
                "sdk-echo: received %llu, replies %llu (%llu errors), retries %llu, "
                "duplicates %llu, dead letters %llu\n",
                (unsigned long long)st.received, (unsigned long long)st.replies,
                (unsigned long long)st.error_replies, (unsigned long long)st.retries,
                (unsigned long long)st.duplicates, (unsigned long long)st.dead_letters);
    flowd_conn_destroy(conn);
out:
    flowd_conf_destroy(conf);
    if (journal)
        fclose(journal);
    return rc;
}
