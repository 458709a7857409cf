/* test_sdk_mock.c - the connector end to end against librdkafka's mock cluster: replies carry
 * every request header and the request key, retriable errors are retried, fatal errors become
 * error replies (body and header), duplicates by messageId are dropped, poison requests go to
 * the dead-letter topic with a reason, and after a graceful stop every offset is committed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "sdk/sdk_int.h"

#include <librdkafka/rdkafka_mock.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IN    "ai.flowx.dev.connector.test.in.v1"
#define OUT   "ai.flowx.dev.engine.receive.test.v1"
#define DLQ   "ai.flowx.dev.connector.dlq.v1"
#define GROUP "sdk-mock-test"

static rd_kafka_t *mock_rk; /* owns the mock cluster, produces the requests */
static char bootstrap[256];
static atomic_int calls_flaky;

static flowd_error_t *handler(flowd_request_t *req, void *opaque)
{
    size_t len;
    const char *body = flowd_request_body(req, &len);
    (void)opaque;
    if (strstr(body, "\"flaky\"")) {
        atomic_fetch_add(&calls_flaky, 1);
        if (flowd_request_attempt(req) < 3)
            return flowd_error_retriable("FLAKY", "attempt %d", flowd_request_attempt(req));
    }
    if (strstr(body, "\"fatal\""))
        return flowd_error_fatal("NO_SUCH_CUSTOMER", "customer %s unknown",
                                 flowd_request_instance_id(req));
    if (flowd_request_reply(req, "not json", 8) != FLOWD_ERR_INVAL)
        return flowd_error_fatal("TEST", "invalid reply accepted");
    char reply[256];
    snprintf(reply, sizeof(reply), "{\"echo\":%.*s,\"attempt\":%d}", (int)len, body,
             flowd_request_attempt(req));
    flowd_request_add_reply_header(req, "handledBy", "test");
    return flowd_request_reply(req, reply, strlen(reply)) ? flowd_error_retriable("NOMEM", "oom")
                                                          : NULL;
}

static void produce(const char *key, const char *value, const char *instance, const char *mid)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    if (instance)
        rd_kafka_header_add(h, "processInstanceId", -1, instance, -1);
    if (mid)
        rd_kafka_header_add(h, "messageId", -1, mid, -1);
    rd_kafka_header_add(h, "callbacksForAction", -1, "ask", -1);
    assert_int_equal(rd_kafka_producev(mock_rk, RD_KAFKA_V_TOPIC(IN),
                                       RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                                       RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END),
                     0);
}

static const char *hdr(const rd_kafka_message_t *m, const char *name, char *buf, size_t size)
{
    rd_kafka_headers_t *hs;
    const void *v;
    size_t n;
    if (rd_kafka_message_headers(m, &hs) || rd_kafka_header_get_last(hs, name, &v, &n))
        return NULL;
    snprintf(buf, size, "%.*s", (int)n, (const char *)v);
    return buf;
}

static void *run_thread(void *arg)
{
    return (void *)(intptr_t)flowd_conn_run(arg);
}

/* Reads every message of a topic until `want` arrived or 20 s passed. */
static int read_topic(const char *topic, rd_kafka_message_t **out, int want, rd_kafka_t **rkp)
{
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    rd_kafka_conf_set(c, "group.id", topic, errstr, sizeof(errstr));
    rd_kafka_conf_set(c, "auto.offset.reset", "earliest", errstr, sizeof(errstr));
    rd_kafka_conf_set(c, "topic.metadata.refresh.interval.ms", "500", errstr, sizeof(errstr));
    /* the mock cluster holds a group join for session.timeout.ms - 1 s: keep it short */
    rd_kafka_conf_set(c, "session.timeout.ms", "6000", errstr, sizeof(errstr));
    rd_kafka_conf_set(c, "partition.assignment.strategy", "cooperative-sticky", errstr,
                      sizeof(errstr));
    rd_kafka_conf_set(c, "fetch.wait.max.ms", "10", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof(errstr));
    assert_non_null(rk);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int n = 0;
    time_t end = time(NULL) + 60; /* generous: a loaded 2-core machine is slow to join groups */
    while (n < want && time(NULL) < end) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        out[n++] = m;
    }
    rd_kafka_consumer_close(rk);
    *rkp = rk; /* destroyed by the caller, after the messages */
    return n;
}

struct seen_msg {
    char value[512];
    char key[64];
    char pid[64], mid[64], cb[64], err[256], reason[64], by[32];
};

static int collect(const char *topic, struct seen_msg *out, int want)
{
    rd_kafka_message_t *msgs[64];
    rd_kafka_t *rk;
    int n = read_topic(topic, msgs, want, &rk);
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        snprintf(out[i].value, sizeof(out[i].value), "%.*s", (int)msgs[i]->len,
                 (const char *)msgs[i]->payload);
        snprintf(out[i].key, sizeof(out[i].key), "%.*s", (int)msgs[i]->key_len,
                 msgs[i]->key ? (const char *)msgs[i]->key : "");
        hdr(msgs[i], "processInstanceId", out[i].pid, sizeof(out[i].pid));
        hdr(msgs[i], "messageId", out[i].mid, sizeof(out[i].mid));
        hdr(msgs[i], "callbacksForAction", out[i].cb, sizeof(out[i].cb));
        hdr(msgs[i], "errorMessage", out[i].err, sizeof(out[i].err));
        hdr(msgs[i], "reason", out[i].reason, sizeof(out[i].reason));
        hdr(msgs[i], "handledBy", out[i].by, sizeof(out[i].by));
    }
    for (int i = 0; i < n; i++)
        rd_kafka_message_destroy(msgs[i]);
    rd_kafka_destroy(rk);
    return n;
}

static const struct seen_msg *find(const struct seen_msg *m, int n, const char *pid)
{
    for (int i = 0; i < n; i++)
        if (strcmp(m[i].pid, pid) == 0)
            return &m[i];
    return NULL;
}

static void connector_replies_retries_dedupes_dead_letters_and_commits(void **state)
{
    (void)state;
    char errstr[FLOWD_ERRSTR_SIZE];
    flowd_conf_t *conf = flowd_conf_new();
    flowd_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    flowd_conf_set(conf, "reply.topic", OUT, errstr, sizeof(errstr));
    flowd_conf_set(conf, "group.id", GROUP, errstr, sizeof(errstr));
    flowd_conf_set(conf, "retry.backoff.ms", "10", errstr, sizeof(errstr));
    flowd_conf_set(conf, "handle.signals", "false", errstr, sizeof(errstr));
    assert_int_equal(flowd_conf_add_handler(conf, IN, NULL, handler, NULL, errstr, sizeof(errstr)),
                     FLOWD_OK);
    flowd_conn_t *conn = flowd_conn_new(conf, errstr, sizeof(errstr));
    assert_non_null(conn);

    produce("1", "{\"n\":1}", "1", "m-1");
    produce("2", "{\"kind\":\"flaky\"}", "2", "m-2");
    produce("3", "{\"kind\":\"fatal\"}", "3", "m-3");
    produce("1", "{\"n\":1}", "1", "m-1");  /* duplicate of the first */
    produce(NULL, "not json", "5", "m-5");  /* poison: not JSON */
    produce(NULL, "{}", NULL, "m-6");       /* poison: no correlation */
    produce(NULL, "{\"n\":7}", "7", "m-7"); /* no key: keyed by the instance id */
    rd_kafka_flush(mock_rk, 5000);

    pthread_t t;
    pthread_create(&t, NULL, run_thread, conn);
    struct seen_msg replies[16], dead[16];
    int nr = collect(OUT, replies, 4);
    int nd = collect(DLQ, dead, 2);
    struct flowd_conn_stats st;
    for (int i = 0; i < 100; i++) { /* the duplicate is handled after its original */
        flowd_conn_get_stats(conn, &st);
        if (st.duplicates == 1 && st.in_flight == 0)
            break;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    flowd_conn_stop(conn);
    void *rc;
    pthread_join(t, &rc);
    assert_int_equal((intptr_t)rc, FLOWD_OK);
    assert_int_equal(flowd_conn_run(conn), FLOWD_ERR_STATE);

    assert_int_equal(nr, 4);
    const struct seen_msg *r = find(replies, nr, "1");
    assert_non_null(r);
    assert_string_equal(r->value, "{\"echo\":{\"n\":1},\"attempt\":1}");
    assert_string_equal(r->key, "1");
    assert_string_equal(r->mid, "m-1");
    assert_string_equal(r->cb, "ask"); /* every request header copied */
    assert_string_equal(r->by, "test");
    assert_string_equal(r->err, "");
    r = find(replies, nr, "2");
    assert_non_null(r);
    assert_string_equal(r->value, "{\"echo\":{\"kind\":\"flaky\"},\"attempt\":3}");
    r = find(replies, nr, "3");
    assert_non_null(r);
    assert_string_equal(r->err, "customer 3 unknown");
    assert_string_equal(r->value, "{\"errorMessage\":\"customer 3 unknown\",\"errorCode\":"
                                  "\"NO_SUCH_CUSTOMER\",\"retriable\":false,\"attempts\":1}");
    r = find(replies, nr, "7");
    assert_non_null(r);
    assert_string_equal(r->key, "7");

    assert_int_equal(nd, 2);
    int not_json = 0, no_corr = 0;
    for (int i = 0; i < nd; i++) {
        not_json +=
            strcmp(dead[i].reason, "not-json") == 0 && strcmp(dead[i].value, "not json") == 0;
        no_corr += strcmp(dead[i].reason, "no-correlation") == 0;
    }
    assert_int_equal(not_json, 1);
    assert_int_equal(no_corr, 1);

    flowd_conn_get_stats(conn, &st);
    assert_int_equal(st.received, 7);
    assert_int_equal(st.replies, 4);
    assert_int_equal(st.error_replies, 1);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.dead_letters, 2);
    assert_int_equal(st.retries, 2);
    assert_int_equal(atomic_load(&calls_flaky), 3);
    assert_int_equal(st.in_flight, 0);
    assert_true(st.commits >= 1);
    flowd_conn_destroy(conn);

    /* everything consumed is committed: the group's position is past the 7 requests */
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    rd_kafka_conf_set(c, "group.id", GROUP, errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof(errstr));
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, IN, NULL);
    assert_int_equal(rd_kafka_metadata(rk, 0, rkt, &md, 5000), 0);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(l, IN, md->topics[0].partitions[i].id);
    rd_kafka_metadata_destroy(md);
    assert_int_equal(rd_kafka_committed(rk, l, 5000), 0);
    int64_t total = 0;
    for (int i = 0; i < l->cnt; i++) {
        int64_t lo, hi;
        rd_kafka_query_watermark_offsets(rk, IN, l->elems[i].partition, &lo, &hi, 5000);
        assert_int_equal(l->elems[i].offset < 0 ? 0 : l->elems[i].offset, hi);
        total += hi;
    }
    assert_int_equal(total, 7);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
}

static int setup(void **state)
{
    (void)state;
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "test.mock.num.brokers", "1", errstr, sizeof(errstr));
    rd_kafka_conf_set(c, "log_level", "0", errstr, sizeof(errstr));
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr));
    assert_non_null(mock_rk);
    rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(mock_rk);
    assert_non_null(mc);
    snprintf(bootstrap, sizeof(bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(mc));
    rd_kafka_mock_topic_create(mc, IN, 2, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rd_kafka_destroy(mock_rk);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connector_replies_retries_dedupes_dead_letters_and_commits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
