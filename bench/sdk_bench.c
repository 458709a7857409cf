/* sdk_bench.c - round trips per second through an echo connector, for bench/sdk_bench.sh.
 *
 *   sdk_bench cluster FILE                      run a librdkafka mock cluster (1 broker) and
 *                                               write its bootstrap address to FILE, until
 *                                               SIGTERM
 *   sdk_bench raw-echo BOOTSTRAP IN OUT         the baseline: a plain librdkafka echo loop
 *                                               with the same guarantees as the SDK (headers
 *                                               copied, offset stored only after the reply's
 *                                               delivery report, idempotent producer)
 *   sdk_bench load BOOTSTRAP IN OUT COUNT WINDOW  keeps WINDOW requests in flight until COUNT
 *                                               replies came back; prints one JSON line
 *
 * The SDK side is examples/connectors/sdk-echo (built against the installed SDK).
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *bootstrap, const char *const *kv)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (bootstrap && rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                                       sizeof(errstr)) != RD_KAFKA_CONF_OK)
        goto bad;
    for (; kv && kv[0]; kv += 2)
        if (rd_kafka_conf_set(conf, kv[0], kv[1], errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
            goto bad;
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (rk)
        return rk;
bad:
    fprintf(stderr, "sdk_bench: %s\n", errstr);
    exit(1);
}

static int cluster(const char *file)
{
    static const char *const kv[] = {"test.mock.num.brokers", "1", NULL};
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, NULL, kv);
    const char *bs = rd_kafka_mock_cluster_bootstraps(rd_kafka_handle_mock_cluster(rk));
    FILE *fp = fopen(file, "w");
    if (!fp)
        return 1;
    fprintf(fp, "%s\n", bs);
    fclose(fp);
    while (!stop)
        rd_kafka_poll(rk, 200);
    rd_kafka_destroy(rk);
    return 0;
}

/* ---- the raw echo loop ------------------------------------------------------------------ */

static rd_kafka_t *raw_consumer;

static void raw_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    rd_kafka_topic_partition_list_t *pos = m->_private;
    (void)rk;
    (void)opaque;
    if (!m->err) /* only now may the request's offset be committed */
        rd_kafka_offsets_store(raw_consumer, pos);
    rd_kafka_topic_partition_list_destroy(pos);
}

static int raw_echo(const char *bootstrap, const char *in, const char *out)
{
    static const char *const ckv[] = {"group.id",
                                      "bench-raw-echo",
                                      "enable.auto.commit",
                                      "true",
                                      "auto.commit.interval.ms",
                                      "100",
                                      "enable.auto.offset.store",
                                      "false",
                                      "auto.offset.reset",
                                      "earliest",
                                      "fetch.wait.max.ms",
                                      "5",
                                      "session.timeout.ms",
                                      "6000",
                                      "partition.assignment.strategy",
                                      "cooperative-sticky",
                                      "allow.auto.create.topics",
                                      "true",
                                      "topic.metadata.refresh.interval.ms",
                                      "1000",
                                      NULL};
    static const char *const pkv[] = {"enable.idempotence", "true", "linger.ms", "1", NULL};
    raw_consumer = client(RD_KAFKA_CONSUMER, bootstrap, ckv);
    rd_kafka_poll_set_consumer(raw_consumer);
    char errstr[512];
    rd_kafka_conf_t *pconf = rd_kafka_conf_new();
    rd_kafka_conf_set(pconf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    for (const char *const *kv = pkv; kv[0]; kv += 2)
        rd_kafka_conf_set(pconf, kv[0], kv[1], errstr, sizeof(errstr));
    rd_kafka_conf_set_dr_msg_cb(pconf, raw_on_delivery);
    rd_kafka_t *producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, errstr, sizeof(errstr));
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, in, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(raw_consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    while (!stop) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(raw_consumer, 20);
        if (m && !m->err) {
            rd_kafka_headers_t *h = NULL, *copy = NULL;
            if (!rd_kafka_message_headers(m, &h))
                copy = rd_kafka_headers_copy(h);
            rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(pos, rd_kafka_topic_name(m->rkt), m->partition)
                ->offset = m->offset + 1;
            while (rd_kafka_producev(
                       producer, RD_KAFKA_V_TOPIC(out), RD_KAFKA_V_KEY(m->key, m->key_len),
                       RD_KAFKA_V_VALUE(m->payload, m->len),
                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(copy),
                       RD_KAFKA_V_OPAQUE(pos), RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(producer, 10);
        }
        if (m)
            rd_kafka_message_destroy(m);
        rd_kafka_poll(producer, 0);
    }
    rd_kafka_flush(producer, 10000);
    rd_kafka_consumer_close(raw_consumer);
    rd_kafka_destroy(raw_consumer);
    rd_kafka_destroy(producer);
    return 0;
}

/* ---- load ---------------------------------------------------------------------------- */

static void send_one(rd_kafka_t *p, const char *in, long n)
{
    char pid[32], mid[64], body[64];
    snprintf(pid, sizeof(pid), "%ld", 1 + n % 1000);
    snprintf(mid, sizeof(mid), "bench-%ld-%ld", (long)getpid(), n);
    snprintf(body, sizeof(body), "{\"n\":%ld}", n);
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, "processInstanceId", -1, pid, -1);
    rd_kafka_header_add(h, "messageId", -1, mid, -1);
    while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC(in), RD_KAFKA_V_KEY(pid, strlen(pid)),
                             RD_KAFKA_V_VALUE(body, strlen(body)),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                             RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(p, 10);
}

static int load(const char *bootstrap, const char *in, const char *out, long count, long window)
{
    static const char *const pkv[] = {"linger.ms", "0", NULL};
    char group[64];
    snprintf(group, sizeof(group), "bench-load-%ld", (long)getpid());
    const char *const ckv[] = {"group.id",
                               group,
                               "auto.offset.reset",
                               "latest",
                               "fetch.wait.max.ms",
                               "5",
                               "allow.auto.create.topics",
                               "true",
                               "topic.metadata.refresh.interval.ms",
                               "500",
                               NULL};
    rd_kafka_t *p = client(RD_KAFKA_PRODUCER, bootstrap, pkv);
    rd_kafka_t *c = client(RD_KAFKA_CONSUMER, bootstrap, ckv);
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, out, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(c, topics);
    rd_kafka_topic_partition_list_destroy(topics);

    /* warm-up: one request at a time until replies flow (assignment, topic creation) */
    long sent = 0, got = 0;
    double deadline = now_s() + 60;
    while (got < 20 && now_s() < deadline) {
        send_one(p, in, sent++);
        rd_kafka_flush(p, 1000);
        double t = now_s() + 2;
        while (now_s() < t) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 50);
            int ok = m && !m->err;
            if (m)
                rd_kafka_message_destroy(m);
            if (ok) {
                got++;
                break;
            }
        }
    }
    if (got < 20) {
        fprintf(stderr, "sdk_bench: no replies on %s\n", out);
        return 1;
    }
    /* drain stray replies of the warm-up */
    for (rd_kafka_message_t *m; (m = rd_kafka_consumer_poll(c, 300));)
        rd_kafka_message_destroy(m);

    long base = sent;
    sent = got = 0;
    double t0 = now_s();
    while (sent < window && sent < count)
        send_one(p, in, base + sent++);
    rd_kafka_poll(p, 0);
    deadline = now_s() + 300;
    while (got < count && now_s() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m && !m->err) {
            got++;
            if (sent < count)
                send_one(p, in, base + sent++);
        }
        if (m)
            rd_kafka_message_destroy(m);
        rd_kafka_poll(p, 0);
    }
    double dt = now_s() - t0;
    printf("{\"count\": %ld, \"window\": %ld, \"seconds\": %.3f, \"round_trips_per_s\": %.0f}\n",
           got, window, dt, (double)got / dt);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    rd_kafka_flush(p, 5000);
    rd_kafka_destroy(p);
    return got == count ? 0 : 1;
}

int main(int argc, char **argv)
{
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    if (argc == 3 && strcmp(argv[1], "cluster") == 0)
        return cluster(argv[2]);
    if (argc == 5 && strcmp(argv[1], "raw-echo") == 0)
        return raw_echo(argv[2], argv[3], argv[4]);
    if (argc == 7 && strcmp(argv[1], "load") == 0)
        return load(argv[2], argv[3], argv[4], strtol(argv[5], NULL, 10),
                    strtol(argv[6], NULL, 10));
    fprintf(stderr, "usage: sdk_bench cluster FILE | raw-echo BOOTSTRAP IN OUT |\n"
                    "       load BOOTSTRAP IN OUT COUNT WINDOW\n");
    return 2;
}
