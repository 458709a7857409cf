/* quickstart.c - a complete flowd connector in plain C: librdkafka + libcurl + cJSON.
 *
 * A connector sits between a process and a legacy system. flowd publishes a request on the
 * connector's topic when a process reaches a Kafka send action; the connector calls the legacy
 * system and publishes the answer on a topic flowd consumes (`ai.flowx.dev.engine.receive.*`).
 * The waiting process instance picks it up and goes on.
 *
 * This one looks customers up in the "legacy core banking" service (legacy_stub.py):
 *
 *   request  ai.flowx.dev.connector.customer.in.v1      {"customerId": 42}
 *   legacy   GET http://127.0.0.1:PORT/customers/42
 *   reply    ai.flowx.dev.engine.receive.customer.v1    {"customerId":42,"segment":"premium",...}
 *
 * The rules every connector follows (DESIGN.md section 3), all of them shown below:
 *   1. copy EVERY header of the request onto the reply (processInstanceId, messageId, ... are
 *      how flowd finds the instance and the node waiting for it);
 *   2. key the reply like the request (the instance id: keeps one instance's messages in order);
 *   3. reply with JSON; on failure reply anyway, with an `errorMessage` field the process can
 *      route on - never leave an instance waiting for nothing;
 *   4. Kafka delivers at least once: drop requests whose `messageId` was already answered, and
 *      commit a request's offset only after its reply is safely delivered. A crash in between
 *      means the request is handled again, never lost.
 *
 * The main loop works in small batches: poll up to BATCH_MAX requests, handle each (HTTP call +
 * produce the reply), wait until every reply of the batch has its delivery report, then commit
 * the batch's offsets. If a reply could not be delivered, nothing of the batch is committed and
 * the consumer seeks back: the requests come again, the ones already answered are dropped by
 * the messageId check, the others are retried.
 *
 * Build: part of the flowd CMake build (target quickstart-connector), or by hand:
 *   cc -o quickstart-connector quickstart.c $(pkg-config --cflags --libs rdkafka libcurl libcjson)
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX      64        /* requests handled between two commits */
#define SEEN_MAX       4096      /* messageIds remembered for duplicate detection */
#define HTTP_BODY_MAX  (1 << 20) /* never buffer more than this from the legacy system */
#define HTTP_RETRIES   3         /* retries after the first attempt, on 5xx and timeouts */
#define BOOTSTRAP_WAIT 30        /* seconds to wait for --bootstrap-file to appear */

/* ---- small helpers -------------------------------------------------------------------- */

static volatile sig_atomic_t stopping;
static int verbose;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

__attribute__((format(printf, 1, 2))) static void logmsg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("quickstart: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stopping)
        ;
}

/* Reads the bootstrap address that flowd writes to <data-dir>/kafka.bootstrap, waiting for the
 * file to appear (flowd may still be starting). Returns a malloc'd string or NULL. */
static char *read_bootstrap_file(const char *path)
{
    for (int waited = 0; waited <= BOOTSTRAP_WAIT * 10 && !stopping; waited++) {
        FILE *fp = fopen(path, "r");
        if (fp) {
            char line[512] = "";
            char *ok = fgets(line, sizeof(line), fp);
            fclose(fp);
            line[strcspn(line, " \t\r\n")] = '\0'; /* strip trailing whitespace */
            if (ok && line[0])
                return strdup(line);
        }
        sleep_ms(100);
    }
    return NULL;
}

/* A header value as a NUL-terminated string (in buf), or NULL if the header is absent. */
static const char *
header_str(const rd_kafka_message_t *msg, const char *name, char *buf, size_t size)
{
    rd_kafka_headers_t *hdrs;
    const void *val;
    size_t len;

    if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, &val, &len) != RD_KAFKA_RESP_ERR_NO_ERROR || !val)
        return NULL;
    if (len >= size)
        len = size - 1;
    memcpy(buf, val, len);
    buf[len] = '\0';
    return buf;
}

/* ---- duplicate detection ---------------------------------------------------------------
 * flowd gives each logical request a messageId that stays the same when it re-sends it (for
 * example after a restart). A ring of the last SEEN_MAX ids answered is enough to drop the
 * re-sends; a production connector with a high rate would use a hash set (or its database). */

struct seen {
    char *ids[SEEN_MAX];
    size_t next;
};

static int seen_has(const struct seen *seen, const char *id)
{
    for (size_t i = 0; i < SEEN_MAX; i++)
        if (seen->ids[i] && strcmp(seen->ids[i], id) == 0)
            return 1;
    return 0;
}

static void seen_add(struct seen *seen, const char *id)
{
    free(seen->ids[seen->next]); /* forget the oldest */
    seen->ids[seen->next] = strdup(id);
    seen->next = (seen->next + 1) % SEEN_MAX;
}

static void seen_remove(struct seen *seen, const char *id)
{
    for (size_t i = 0; i < SEEN_MAX; i++) {
        if (seen->ids[i] && strcmp(seen->ids[i], id) == 0) {
            free(seen->ids[i]);
            seen->ids[i] = NULL;
        }
    }
}

static void seen_clear(struct seen *seen)
{
    for (size_t i = 0; i < SEEN_MAX; i++)
        free(seen->ids[i]);
}

/* ---- the legacy system: one HTTP GET with timeouts and retries ----------------------- */

struct body {
    char *data;
    size_t len;
};

static size_t on_http_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body *body = userdata;
    size_t n = size * nmemb;

    if (body->len + n > HTTP_BODY_MAX)
        return 0; /* makes curl fail with CURLE_WRITE_ERROR: a hard cap on what we buffer */
    char *grown = realloc(body->data, body->len + n + 1);
    if (!grown)
        return 0;
    body->data = grown;
    memcpy(body->data + body->len, ptr, n);
    body->len += n;
    body->data[body->len] = '\0';
    return n;
}

/* GETs url. Retries HTTP_RETRIES times with a doubling backoff when the legacy system is down,
 * slow (timeout) or answers 5xx. Returns the last HTTP status (0 when no answer at all), the
 * body in *out (malloc'd, may be NULL) and a curl error text in errbuf; -1 when a stop signal
 * interrupted the retries (the request stays unanswered and uncommitted: it comes again). */
static long http_get(CURL *curl, const char *url, char **out, char *errbuf)
{
    long status = 0;
    long backoff_ms = 100;

    *out = NULL;
    for (int attempt = 0; attempt <= HTTP_RETRIES; attempt++) {
        struct body body = {NULL, 0};

        if (attempt > 0) {
            sleep_ms(backoff_ms);
            backoff_ms *= 2;
        }
        if (stopping)
            return -1;
        errbuf[0] = '\0';
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
        CURLcode rc = curl_easy_perform(curl);
        status = 0;
        if (rc == CURLE_OK)
            curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        else if (!errbuf[0])
            snprintf(errbuf, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));

        int retriable = (rc != CURLE_OK && rc != CURLE_WRITE_ERROR) || status >= 500;
        if (!retriable || attempt == HTTP_RETRIES) {
            *out = body.data;
            return status;
        }
        if (verbose)
            logmsg("legacy call failed (%s), retrying", status ? "HTTP 5xx" : errbuf);
        free(body.data);
    }
    return status;
}

/* ---- handling one request ------------------------------------------------------------- */

/* {"found":false,"errorMessage":"..."} as a malloc'd string. */
static char *error_reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *error_reply(const char *fmt, ...)
{
    char text[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    cJSON *obj = cJSON_CreateObject();
    cJSON_AddBoolToObject(obj, "found", 0);
    cJSON_AddStringToObject(obj, "errorMessage", text);
    char *json = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    return json;
}

/* Turns a request value {"customerId": ...} into the reply JSON (malloc'd). Failures become
 * {"found":false,"errorMessage":...} so the process can route on them. Returns NULL only when
 * stopping (or out of memory): the request is then left for the next run. */
static char *handle_request(CURL *curl, const char *legacy_url, const rd_kafka_message_t *msg)
{
    cJSON *req = cJSON_ParseWithLength(msg->payload ? msg->payload : "", msg->len);
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(req, "customerId");
    char id[128];
    char *reply = NULL;

    if (cJSON_IsString(cid) && cid->valuestring[0])
        snprintf(id, sizeof(id), "%s", cid->valuestring);
    else if (cJSON_IsNumber(cid))
        snprintf(id, sizeof(id), "%.0f", cid->valuedouble);
    else {
        cJSON_Delete(req);
        return error_reply("request has no customerId");
    }
    cJSON_Delete(req);

    /* The id goes into a URL path: escape it. */
    char *escaped = curl_easy_escape(curl, id, 0);
    char url[1024];
    snprintf(url, sizeof(url), "%s/customers/%s", legacy_url, escaped ? escaped : "");
    curl_free(escaped);

    char errbuf[CURL_ERROR_SIZE] = "";
    char *body = NULL;
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    long status = http_get(curl, url, &body, errbuf);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL); /* errbuf is going out of scope */

    if (status < 0) {
        reply = NULL;
    } else if (status == 200) {
        /* Re-serialise the legacy answer: it proves it is JSON and strips whitespace. */
        cJSON *obj = cJSON_Parse(body ? body : "");
        if (cJSON_IsObject(obj))
            reply = cJSON_PrintUnformatted(obj);
        else
            reply = error_reply("legacy system answered customer %s with invalid JSON", id);
        cJSON_Delete(obj);
    } else if (status == 404) {
        reply = error_reply("customer %s not found", id);
    } else if (status) {
        reply = error_reply("legacy system answered HTTP %ld for customer %s", status, id);
    } else {
        reply = error_reply("legacy system unreachable: %s", errbuf);
    }
    free(body);
    return reply;
}

/* ---- a batch: requests handled since the last commit ---------------------------------- */

struct slot {
    char message_id[256]; /* "" when the request had none */
    char instance_id[64];
    int32_t partition; /* where the request came from */
    int64_t offset;
    int delivered;   /* set by the delivery report */
    int needs_reply; /* 0 for a dropped duplicate */
};

struct batch {
    struct slot slots[BATCH_MAX];
    int n;
    int pending;     /* replies produced and not yet reported */
    int failed;      /* replies reported as not delivered */
    long backoff_ms; /* wait before reading a failed batch again */
};

/* Delivery report: called from rd_kafka_poll()/flush() on the producer, once per reply. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    struct batch *batch = opaque;
    struct slot *slot = msg->_private; /* the per-message opaque given to producev */

    (void)rk;
    batch->pending--;
    if (msg->err) {
        logmsg("reply for instance %s not delivered: %s", slot->instance_id,
               rd_kafka_err2str(msg->err));
        batch->failed++;
    } else {
        slot->delivered = 1;
    }
}

/* Publishes the reply: same key, every request header copied. */
static int produce_reply(rd_kafka_t *producer,
                         const char *topic,
                         const rd_kafka_message_t *req,
                         char *reply,
                         struct slot *slot)
{
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_headers_t *copy;

    if (rd_kafka_message_headers(req, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
        copy = rd_kafka_headers_copy(hdrs);
    else
        copy = rd_kafka_headers_new(0);

    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(req->key, req->key_len),
            RD_KAFKA_V_VALUE(reply, strlen(reply)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(copy), RD_KAFKA_V_OPAQUE(slot), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            return 0; /* the producer owns the headers now */
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            logmsg("produce to %s failed: %s", topic, rd_kafka_err2str(err));
            rd_kafka_headers_destroy(copy);
            return -1;
        }
        rd_kafka_poll(producer, 100); /* local queue full: serve delivery reports, retry */
    }
}

/* ---- main ----------------------------------------------------------------------------- */

struct options {
    const char *bootstrap;
    const char *bootstrap_file;
    const char *legacy_url;
    const char *in_topic;
    const char *out_topic;
    const char *group;
    const char *log_path;
};

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: quickstart-connector (--bootstrap HOST:PORT | --bootstrap-file PATH)\n"
            "           --legacy-url http://127.0.0.1:PORT [--in TOPIC] [--out TOPIC]\n"
            "           [--group ID] [--log FILE] [-v]\n"
            "Answers customer lookups from flowd processes with the legacy core banking API.\n");
}

static int parse_args(int argc, char **argv, struct options *opt)
{
    static const struct option longopts[] = {{"bootstrap", required_argument, NULL, 'b'},
                                             {"bootstrap-file", required_argument, NULL, 'f'},
                                             {"legacy-url", required_argument, NULL, 'u'},
                                             {"in", required_argument, NULL, 'i'},
                                             {"out", required_argument, NULL, 'o'},
                                             {"group", required_argument, NULL, 'g'},
                                             {"log", required_argument, NULL, 'l'},
                                             {"verbose", no_argument, NULL, 'v'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int c;

    while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            opt->bootstrap = optarg;
            break;
        case 'f':
            opt->bootstrap_file = optarg;
            break;
        case 'u':
            opt->legacy_url = optarg;
            break;
        case 'i':
            opt->in_topic = optarg;
            break;
        case 'o':
            opt->out_topic = optarg;
            break;
        case 'g':
            opt->group = optarg;
            break;
        case 'l':
            opt->log_path = optarg;
            break;
        case 'v':
            verbose = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind != argc || !opt->legacy_url || (!opt->bootstrap == !opt->bootstrap_file))
        return -1;
    return 0;
}

/* Sets each "name", "value" pair on conf; logs and returns -1 on the first error. */
static int conf_set_all(rd_kafka_conf_t *conf, const char *const *kv)
{
    char errstr[512];

    for (; kv[0]; kv += 2) {
        if (rd_kafka_conf_set(conf, kv[0], kv[1], errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            logmsg("config %s=%s: %s", kv[0], kv[1], errstr);
            return -1;
        }
    }
    return 0;
}

/* Set once the group assigned us partitions. librdkafka 2.0's cooperative-sticky assignor
 * aborts when a consumer that never got an assignment is closed (librdkafka issue #4312, fixed in
 * 2.3): such a consumer is left to the process exit instead. */
static int assigned;

static void on_rebalance(rd_kafka_t *rk,
                         rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    (void)opaque;
    int assign = err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
    rd_kafka_error_t *e = NULL;
    if (strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0)
        e = assign ? rd_kafka_incremental_assign(rk, parts)
                   : rd_kafka_incremental_unassign(rk, parts);
    else
        rd_kafka_assign(rk, assign ? parts : NULL);
    if (e) {
        logmsg("rebalance: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    assigned |= assign;
}

static rd_kafka_t *new_consumer(const char *bootstrap, const char *group)
{
    const char *const kv[] = {"bootstrap.servers", bootstrap, "group.id", group,
                              /* answer quickly: don't let the broker hold fetches */
                              "fetch.wait.max.ms", "5", "session.timeout.ms", "6000",
                              /* rebalances move only the partitions that must move */
                              "partition.assignment.strategy", "cooperative-sticky",
                              /* we commit ourselves, after the reply is delivered */
                              "enable.auto.commit", "false", "auto.offset.reset", "earliest",
                              /* the request topic may not exist until flowd first sends */
                              "allow.auto.create.topics", "true",
                              "topic.metadata.refresh.interval.ms", "1000", "log.connection.close",
                              "false", NULL};
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (conf_set_all(conf, kv) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        logmsg("consumer: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk); /* rebalances and errors come through consumer_poll */
    return rk;
}

static rd_kafka_t *new_producer(const char *bootstrap, struct batch *batch)
{
    const char *const kv[] = {"bootstrap.servers", bootstrap,
                              /* no duplicates or reordering from producer retries */
                              "enable.idempotence", "true", "linger.ms", "1",
                              /* a reply not delivered in 30 s is reported as failed */
                              "message.timeout.ms", "30000", "log.connection.close", "false", NULL};
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (conf_set_all(conf, kv) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, batch);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        logmsg("producer: %s", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Waits for every delivery report of the batch, then commits it, or seeks back on failure.
 * Returns -1 on a fatal producer error. */
static int finish_batch(rd_kafka_t *consumer,
                        rd_kafka_t *producer,
                        const char *in_topic,
                        struct batch *batch,
                        struct seen *seen,
                        FILE *logfp)
{
    /* The reports must all arrive before the slots are reused: message.timeout.ms bounds it. */
    while (batch->pending > 0)
        rd_kafka_poll(producer, 50);

    char errstr[512];
    if (rd_kafka_fatal_error(producer, errstr, sizeof(errstr))) {
        logmsg("fatal producer error: %s", errstr);
        return -1;
    }

    /* Offsets to commit: the next offset to read, per partition. If anything failed: the first
     * offset of the batch per partition, to seek back to. */
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(4);
    for (int i = 0; i < batch->n; i++) {
        struct slot *slot = &batch->slots[i];
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(offsets, in_topic, slot->partition);
        if (!tp) {
            tp = rd_kafka_topic_partition_list_add(offsets, in_topic, slot->partition);
            tp->offset = batch->failed ? slot->offset : slot->offset + 1;
        } else if (!batch->failed && slot->offset + 1 > tp->offset) {
            tp->offset = slot->offset + 1;
        }
        if (!slot->needs_reply)
            continue;
        if (!slot->delivered) {
            seen_remove(seen, slot->message_id); /* let the retry through */
        } else if (logfp) {
            fprintf(logfp, "%s %s\n", slot->message_id, slot->instance_id);
            fflush(logfp);
        }
    }

    if (batch->failed) {
        logmsg("%d repl%s not delivered: reading the batch again", batch->failed,
               batch->failed == 1 ? "y" : "ies");
        rd_kafka_error_t *error = rd_kafka_seek_partitions(consumer, offsets, 5000);
        if (error) {
            logmsg("seek: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }
        /* Kafka is unwell: don't spin. 200 ms, doubling up to 5 s. */
        batch->backoff_ms = batch->backoff_ms ? batch->backoff_ms * 2 : 200;
        if (batch->backoff_ms > 5000)
            batch->backoff_ms = 5000;
        sleep_ms(batch->backoff_ms);
    } else if (offsets->cnt > 0) {
        batch->backoff_ms = 0;
        rd_kafka_resp_err_t err = rd_kafka_commit(consumer, offsets, 0 /* sync */);
        if (err) /* e.g. the partition moved to another member: it will redo, we dedupe */
            logmsg("commit: %s", rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(offsets);
    batch->n = 0;
    batch->failed = 0;
    return 0;
}

int main(int argc, char **argv)
{
    struct options opt = {.in_topic = "ai.flowx.dev.connector.customer.in.v1",
                          .out_topic = "ai.flowx.dev.engine.receive.customer.v1",
                          .group = "quickstart-connector"};
    static struct batch batch;
    static struct seen seen;
    rd_kafka_t *consumer = NULL, *producer = NULL;
    CURL *curl = NULL;
    FILE *logfp = NULL;
    char *bootstrap = NULL;
    int status = 1;

    if (parse_args(argc, argv, &opt) != 0) {
        usage(stderr);
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    bootstrap = opt.bootstrap ? strdup(opt.bootstrap) : read_bootstrap_file(opt.bootstrap_file);
    if (!bootstrap) {
        logmsg("no bootstrap address in %s after %d s", opt.bootstrap_file, BOOTSTRAP_WAIT);
        goto out;
    }
    if (opt.log_path && !(logfp = fopen(opt.log_path, "a"))) {
        logmsg("%s: %s", opt.log_path, strerror(errno));
        goto out;
    }

    /* One curl handle, reused: keeps the connection to the legacy system alive. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_http_data);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);

    consumer = new_consumer(bootstrap, opt.group);
    producer = new_producer(bootstrap, &batch);
    if (!consumer || !producer)
        goto out;

    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, opt.in_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        logmsg("subscribe %s: %s", opt.in_topic, rd_kafka_err2str(err));
        goto out;
    }
    if (verbose)
        logmsg("%s -> %s, legacy %s, bootstrap %s", opt.in_topic, opt.out_topic, opt.legacy_url,
               bootstrap);

    status = 0;
    while (!stopping) {
        /* Wait for the first request of a batch; take what is already there after it. */
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(consumer, batch.n ? 0 : 200);
        if (msg) {
            if (msg->err) {
                /* Partition EOF and "topic not yet created" are normal; log the rest. */
                if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF &&
                    msg->err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && verbose)
                    logmsg("consumer: %s", rd_kafka_message_errstr(msg));
                rd_kafka_message_destroy(msg);
                continue;
            }
            struct slot *slot = &batch.slots[batch.n++];
            memset(slot, 0, sizeof(*slot));
            slot->partition = msg->partition;
            slot->offset = msg->offset;
            header_str(msg, "messageId", slot->message_id, sizeof(slot->message_id));
            if (!header_str(msg, "processInstanceId", slot->instance_id, sizeof(slot->instance_id)))
                snprintf(slot->instance_id, sizeof(slot->instance_id), "-");

            if (slot->message_id[0] && seen_has(&seen, slot->message_id)) {
                if (verbose)
                    logmsg("instance %s: duplicate %s dropped", slot->instance_id,
                           slot->message_id);
            } else {
                char *reply = handle_request(curl, opt.legacy_url, msg);
                if (verbose)
                    logmsg("instance %s: %.*s -> %s", slot->instance_id, (int)msg->len,
                           msg->payload ? (const char *)msg->payload : "",
                           reply ? reply : "(not answered)");
                if (reply && produce_reply(producer, opt.out_topic, msg, reply, slot) == 0) {
                    slot->needs_reply = 1;
                    batch.pending++;
                    if (slot->message_id[0])
                        seen_add(&seen, slot->message_id);
                } else {
                    /* counts as not delivered: not committed, the batch is read again */
                    slot->needs_reply = 1;
                    batch.failed++;
                }
                free(reply);
            }
            rd_kafka_message_destroy(msg);
            rd_kafka_poll(producer, 0); /* serve delivery reports as we go */
            if (batch.n < BATCH_MAX)
                continue;
        }
        /* No more requests waiting (or the batch is full): settle it. */
        if (batch.n && finish_batch(consumer, producer, opt.in_topic, &batch, &seen, logfp) != 0) {
            status = 1;
            break;
        }
    }

    /* Graceful stop: settle what was handled, then leave the group cleanly. */
    if (batch.n && finish_batch(consumer, producer, opt.in_topic, &batch, &seen, logfp) != 0)
        status = 1;
    if (verbose)
        logmsg("stopping");

out:
    if (consumer && assigned) { /* see on_rebalance */
        rd_kafka_consumer_close(consumer);
        rd_kafka_destroy(consumer);
    }
    if (producer) {
        rd_kafka_flush(producer, 10000);
        rd_kafka_destroy(producer);
    }
    if (curl) {
        curl_easy_cleanup(curl);
        curl_global_cleanup();
    }
    if (logfp)
        fclose(logfp);
    seen_clear(&seen);
    free(bootstrap);
    return status;
}
