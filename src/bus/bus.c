/* bus.c - Kafka for the daemon: embedded mock cluster, consumer, producer.
 *
 * Invariants: offsets are never auto-committed (the daemon commits after its store transaction);
 * the producer is idempotent and keyed by instance id, so one instance's messages stay in order;
 * librdkafka's log and error callbacks go through FLOWD_LOG.
 */
#include "bus.h"

#include "../common/clock.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <librdkafka/rdkafka_mock.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"


/* A producer topic handle, kept for the life of the bus (see bus_topic()). */
struct bus_topic {
    char *name;
    rd_kafka_topic_t *rkt;
};

struct bus {
    const struct flowd_config *cfg;
    rd_kafka_t *mock_rk; /* owns the embedded cluster, NULL on a real cluster */
    rd_kafka_mock_cluster_t *mcluster;
    char *bootstrap;
    char epoch[64];
    rd_kafka_t *producer;
    rd_kafka_t *consumer;
    rd_kafka_queue_t *consumer_q;
    bus_delivery_cb *on_delivery;
    void *ctx;
    int in_flight;
    atomic_int ready;
    int64_t probe_at_us;      /* not ready: when to ask the brokers again */
    atomic_int assigned;      /* the consumer group gave this consumer its first assignment */
    struct bus_topic *topics; /* producer topic handles, loop thread only */
    size_t ntopics, topics_cap;
};

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    enum log_level lvl = level <= 3   ? LOG_ERROR
                         : level <= 4 ? LOG_WARN
                         : level <= 6 ? LOG_INFO
                                      : LOG_DEBUG;
    /* librdkafka is chatty at INFO; keep it at debug unless it is a problem */
    if (lvl == LOG_INFO)
        lvl = LOG_DEBUG;
    FLOWD_LOG(lvl, LOG_SUB_KAFKA, "%s: %s: %s", rd_kafka_name(rk), fac, buf);
}

/* Applies the group's assignments as librdkafka would without a callback, and notes the first
 * one: librdkafka 2.0's cooperative-sticky assignor aborts when a consumer is closed before it
 * (librdkafka issue #4312, fixed in 2.3): bus_free leaves such a consumer to the exit. */
static void rebalance_cb(rd_kafka_t *rk,
                         rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    struct bus *bus = opaque;
    int assign = err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
    rd_kafka_error_t *e = NULL;
    if (strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0)
        e = assign ? rd_kafka_incremental_assign(rk, parts)
                   : rd_kafka_incremental_unassign(rk, parts);
    else
        rd_kafka_assign(rk, assign ? parts : NULL);
    if (e) {
        FLOWD_LOG(LOG_WARN, LOG_SUB_KAFKA, "applying a rebalance failed: %s",
                  rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    if (assign)
        atomic_store(&bus->assigned, 1);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct bus *bus = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        if (atomic_exchange(&bus->ready, 0))
            FLOWD_LOG(LOG_WARN, LOG_SUB_KAFKA, "all brokers are down: %s", reason);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_fatal_error(rk, buf, sizeof(buf));
        FLOWD_LOG(LOG_ERROR, LOG_SUB_KAFKA, "fatal client error: %s", buf);
        atomic_store(&bus->ready, 0);
        return;
    }
    FLOWD_LOG(LOG_DEBUG, LOG_SUB_KAFKA, "%s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err),
              reason);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    struct bus *bus = opaque;
    bus->in_flight--;
    if (msg->err == 0)
        atomic_store(&bus->ready, 1);
    else
        FLOWD_LOG(LOG_WARN, LOG_SUB_KAFKA, "delivery to %s failed: %s (will retry)",
                  rd_kafka_topic_name(msg->rkt), rd_kafka_err2str(msg->err));
    bus->on_delivery(bus->ctx, (int64_t)(intptr_t)msg->_private, msg->err);
}

static int conf_set(
    rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr, size_t errstr_size)
{
    char kerr[256];
    if (rd_kafka_conf_set(conf, name, value, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "kafka property '%s' = '%s': %s",
                            name, value, kerr);
    return 0;
}

/* Common settings, then the user's kafka.properties.* on top. */
static rd_kafka_conf_t *base_conf(struct bus *bus, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, bus);
    char num[32];
    snprintf(num, sizeof(num), "%lld", (long long)bus->cfg->message_max_bytes + 65536);
    if (conf_set(conf, "bootstrap.servers", bus->bootstrap, errstr, errstr_size) ||
        conf_set(conf, "message.max.bytes", num, errstr, errstr_size) ||
        conf_set(conf, "socket.nagle.disable", "true", errstr, errstr_size))
        goto err;
    for (size_t i = 0; i < bus->cfg->nkafka_props; i++)
        if (conf_set(conf, bus->cfg->kafka_props[i].name, bus->cfg->kafka_props[i].value, errstr,
                     errstr_size))
            goto err;
    return conf;
err:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

static int start_embedded(struct bus *bus, char *errstr, size_t errstr_size)
{
    char kerr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set(conf, "client.id", "flowd-embedded-kafka", kerr, sizeof(kerr));
    bus->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!bus->mock_rk) {
        rd_kafka_conf_destroy(conf);
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_KAFKA,
                            "cannot start the embedded Kafka cluster: %s", kerr);
    }
    bus->mcluster = rd_kafka_mock_cluster_new(bus->mock_rk, (int)bus->cfg->embedded_brokers);
    if (!bus->mcluster)
        return flowd_seterr(
            errstr, errstr_size, FLOWD_ERR_KAFKA,
            "cannot start the embedded Kafka cluster (mock cluster creation failed)");
    bus->bootstrap = flowd_xstrdup(rd_kafka_mock_cluster_bootstraps(bus->mcluster));
    char uuid[37];
    clock_uuid4(uuid);
    snprintf(bus->epoch, sizeof(bus->epoch), "embedded-%s", uuid);

    char *path = flowd_xasprintf("%s/kafka.bootstrap", bus->cfg->data_dir);
    char *tmp = flowd_xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int rc = 0;
    if (!f || fprintf(f, "%s\n", bus->bootstrap) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        rc = flowd_seterr(errstr, errstr_size, FLOWD_ERR_IO, "cannot write %s", path);
    free(tmp);
    free(path);
    return rc;
}

struct bus *bus_new(const struct flowd_config *cfg,
                    bus_delivery_cb *on_delivery,
                    void *ctx,
                    char *errstr,
                    size_t errstr_size)
{
    struct bus *bus = flowd_xcalloc(1, sizeof(*bus));
    bus->cfg = cfg;
    bus->on_delivery = on_delivery;
    bus->ctx = ctx;
    atomic_store(&bus->ready, 1);
    char kerr[512];
    char num[32];

    if (strcmp(cfg->bootstrap_servers, "embedded") == 0) {
        if (start_embedded(bus, errstr, errstr_size))
            goto err;
    } else {
        bus->bootstrap = flowd_xstrdup(cfg->bootstrap_servers);
    }

    /* producer */
    rd_kafka_conf_t *conf = base_conf(bus, errstr, errstr_size);
    if (!conf)
        goto err;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    if (conf_set(conf, "client.id", "flowd-producer", errstr, errstr_size) ||
        conf_set(conf, "enable.idempotence", "true", errstr, errstr_size) ||
        conf_set(conf, "linger.ms", "1", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    bus->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!bus->producer) {
        rd_kafka_conf_destroy(conf);
        flowd_seterr(errstr, errstr_size, FLOWD_ERR_KAFKA, "cannot create Kafka producer: %s",
                     kerr);
        goto err;
    }

    /* consumer */
    conf = base_conf(bus, errstr, errstr_size);
    if (!conf)
        goto err;
    int rc = conf_set(conf, "client.id", "flowd-consumer", errstr, errstr_size);
    rc = rc ? rc : conf_set(conf, "group.id", cfg->group_id, errstr, errstr_size);
    /* offsets are stored by bus_commit after the store commit and committed by librdkafka every
     * 100 ms, and when partitions are revoked in a rebalance or the consumer closes: a failed
     * commit is retried with the next one, so few messages are consumed twice */
    rc = rc ? rc : conf_set(conf, "enable.auto.commit", "true", errstr, errstr_size);
    rc = rc ? rc : conf_set(conf, "auto.commit.interval.ms", "100", errstr, errstr_size);
    rc = rc ? rc : conf_set(conf, "enable.auto.offset.store", "false", errstr, errstr_size);
    rc = rc ? rc : conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size);
    rc = rc ? rc
            : conf_set(conf, "partition.assignment.strategy", "cooperative-sticky", errstr,
                       errstr_size);
    /* prefetch up to 8 MiB / 20,000 messages, not librdkafka's default of 64 MiB / 100,000: a
     * backlog waits as well in the broker as in flowd's heap, where it was ~25 MiB of the peak
     * RSS with 100,000 starts queued. Less (4 MiB / 1,000) halved the rate at which a backlog
     * is taken in (fetches no longer overlap the batches). */
    rc = rc ? rc : conf_set(conf, "queued.max.messages.kbytes", "8192", errstr, errstr_size);
    rc = rc ? rc : conf_set(conf, "queued.min.messages", "20000", errstr, errstr_size);
    snprintf(num, sizeof(num), "%lld", (long long)cfg->fetch_wait_max_ms);
    rc = rc ? rc : conf_set(conf, "fetch.wait.max.ms", num, errstr, errstr_size);
    rc = rc ? rc : conf_set(conf, "fetch.error.backoff.ms", "50", errstr, errstr_size);
    snprintf(num, sizeof(num), "%lld", (long long)cfg->session_timeout_ms);
    rc = rc ? rc : conf_set(conf, "session.timeout.ms", num, errstr, errstr_size);
    snprintf(num, sizeof(num), "%lld",
             (long long)(cfg->session_timeout_ms / 3 < 1000 ? cfg->session_timeout_ms / 3 : 1000));
    rc = rc ? rc : conf_set(conf, "heartbeat.interval.ms", num, errstr, errstr_size);
    snprintf(num, sizeof(num), "%lld", (long long)cfg->metadata_refresh_ms);
    rc = rc ? rc : conf_set(conf, "topic.metadata.refresh.interval.ms", num, errstr, errstr_size);
    /* user's pass-through properties win over ours */
    for (size_t i = 0; !rc && i < cfg->nkafka_props; i++)
        rc = conf_set(conf, cfg->kafka_props[i].name, cfg->kafka_props[i].value, errstr,
                      errstr_size);
    if (rc) {
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    bus->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!bus->consumer) {
        rd_kafka_conf_destroy(conf);
        flowd_seterr(errstr, errstr_size, FLOWD_ERR_KAFKA, "cannot create Kafka consumer: %s",
                     kerr);
        goto err;
    }
    rd_kafka_poll_set_consumer(bus->consumer);
    bus->consumer_q = rd_kafka_queue_get_consumer(bus->consumer);

    if (!bus->mcluster) {
        char *id = rd_kafka_clusterid(bus->producer, 5000);
        snprintf(bus->epoch, sizeof(bus->epoch), "%s", id ? id : "cluster");
        if (id)
            rd_kafka_mem_free(bus->producer, id);
    }
    return bus;
err:
    bus_free(bus, 0);
    return NULL;
}

void bus_free(struct bus *bus, int flush_ms)
{
    if (!bus)
        return;
    int left_open = 0;
    if (bus->consumer && !atomic_load(&bus->assigned)) {
        /* closing it would abort the process: leave it (and the embedded cluster it talks to)
         * to the exit; the group notices the member is gone after its session timeout */
        FLOWD_LOG(LOG_INFO, LOG_SUB_KAFKA,
                  "the consumer group has not assigned this consumer anything yet; leaving it "
                  "to the process exit");
        bus->consumer = NULL;
        left_open = 1;
    }
    if (bus->consumer_q)
        rd_kafka_queue_destroy(bus->consumer_q);
    if (bus->consumer) {
        rd_kafka_consumer_close(bus->consumer);
        rd_kafka_destroy(bus->consumer);
    }
    for (size_t i = 0; i < bus->ntopics; i++) {
        rd_kafka_topic_destroy(bus->topics[i].rkt);
        free(bus->topics[i].name);
    }
    free(bus->topics);
    if (bus->producer) {
        if (flush_ms > 0 && rd_kafka_flush(bus->producer, flush_ms) != 0)
            FLOWD_LOG(LOG_WARN, LOG_SUB_KAFKA,
                      "%d message(s) not confirmed at shutdown; they stay in the outbox and are "
                      "re-sent on the next start",
                      rd_kafka_outq_len(bus->producer));
        rd_kafka_destroy(bus->producer);
    }
    if (bus->mcluster && !left_open)
        rd_kafka_mock_cluster_destroy(bus->mcluster);
    if (bus->mock_rk && !left_open)
        rd_kafka_destroy(bus->mock_rk);
    free(bus->bootstrap);
    free(bus);
}

const char *bus_bootstrap(const struct bus *bus)
{
    return bus->bootstrap;
}

int bus_is_embedded(const struct bus *bus)
{
    return bus->mcluster != NULL;
}

const char *bus_cluster_epoch(const struct bus *bus)
{
    return bus->epoch;
}

void bus_ensure_topic(struct bus *bus, const char *topic)
{
    if (!bus->mcluster)
        return;
    int rf = bus->cfg->embedded_brokers < 3 ? (int)bus->cfg->embedded_brokers : 3;
    rd_kafka_resp_err_t err =
        rd_kafka_mock_topic_create(bus->mcluster, topic, (int)bus->cfg->embedded_partitions, rf);
    if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        FLOWD_LOG(LOG_WARN, LOG_SUB_KAFKA, "cannot create topic %s: %s", topic,
                  rd_kafka_err2str(err));
}

int bus_subscribe(struct bus *bus, char *errstr, size_t errstr_size)
{
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, bus->cfg->subscription_regex, RD_KAFKA_PARTITION_UA);
    /* the process-start topic (DESIGN.md section 3), which the pattern must not match */
    if (bus->cfg->start_topic && *bus->cfg->start_topic)
        rd_kafka_topic_partition_list_add(topics, bus->cfg->start_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(bus->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_KAFKA, "cannot subscribe to %s: %s",
                            bus->cfg->subscription_regex, rd_kafka_err2str(err));
    FLOWD_LOG(LOG_INFO, LOG_SUB_KAFKA, "consuming topics matching %s",
              bus->cfg->subscription_regex);
    return 0;
}

size_t
bus_consume(struct bus *bus, rd_kafka_message_t **msgs, size_t max, int timeout_ms, int linger_ms)
{
    size_t n = 0;
    int64_t deadline = 0;
    while (n < max) {
        int wait = timeout_ms;
        if (n) {
            int64_t left = deadline - clock_mono_us();
            wait = left > 0 ? (int)((left + 999) / 1000) : 0;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(bus->consumer, wait);
        if (!m)
            break;
        if (!n)
            deadline = clock_mono_us() + (int64_t)linger_ms * 1000;
        if (m->err) {
            /* a regex subscription with no matching topic yet is normal, not a problem */
            if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                FLOWD_LOG(LOG_DEBUG, LOG_SUB_KAFKA, "consumer: %s", rd_kafka_message_errstr(m));
            else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                FLOWD_LOG(LOG_WARN, LOG_SUB_KAFKA, "consumer: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            if (n)
                break;
            continue;
        }
        atomic_store(&bus->ready, 1);
        msgs[n++] = m;
    }
    return n;
}

/* Builds the list of (topic, partition, offset) with, per partition, the highest offset of
 * msgs + 1: the next one to read. */
static rd_kafka_topic_partition_list_t *offsets_after(rd_kafka_message_t *const *msgs, size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)(n < 16 ? n : 16));
    for (size_t i = 0; i < n; i++) {
        const char *t = rd_kafka_topic_name(msgs[i]->rkt);
        int64_t off = msgs[i]->offset + 1;
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(l, t, msgs[i]->partition);
        if (!p)
            rd_kafka_topic_partition_list_add(l, t, msgs[i]->partition)->offset = off;
        else if (off > p->offset)
            p->offset = off;
    }
    return l;
}

void bus_commit(struct bus *bus, rd_kafka_message_t *const *msgs, size_t n)
{
    if (!n)
        return;
    rd_kafka_topic_partition_list_t *l = offsets_after(msgs, n);
    /* a partition revoked meanwhile is refused: its new owner consumes it again (the inbox
     * drops what this batch applied) */
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(bus->consumer, l);
    if (err && err != RD_KAFKA_RESP_ERR__STATE)
        FLOWD_LOG(LOG_WARN, LOG_SUB_KAFKA,
                  "storing consumed offsets failed: %s (messages will be re-delivered and "
                  "dropped as duplicates)",
                  rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(l);
}

void bus_wakeup(struct bus *bus)
{
    rd_kafka_queue_yield(bus->consumer_q);
}

/* The producer's handle of topic, created on first use. Produce through it, never by name:
 * librdkafka 2.0 does not look up the metadata of a topic first named in rd_kafka_producev()
 * until its 1 s topic scan (librdkafka issue #3202), so the first messages to each topic could
 * wait up to a second; rd_kafka_topic_new() asks for the metadata at once. The lookup also
 * replaces librdkafka's own by-name lookup (under its handle lock) on every message. */
static rd_kafka_topic_t *bus_topic(struct bus *bus, const char *topic)
{
    for (size_t i = 0; i < bus->ntopics; i++)
        if (strcmp(bus->topics[i].name, topic) == 0)
            return bus->topics[i].rkt;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(bus->producer, topic, NULL);
    if (!rkt)
        return NULL;
    if (bus->ntopics == bus->topics_cap) {
        bus->topics_cap = bus->topics_cap ? bus->topics_cap * 2 : 8;
        bus->topics = flowd_xrealloc(bus->topics, bus->topics_cap * sizeof(*bus->topics));
    }
    bus->topics[bus->ntopics].name = flowd_xstrdup(topic);
    bus->topics[bus->ntopics].rkt = rkt;
    bus->ntopics++;
    return rkt;
}

int bus_produce(struct bus *bus,
                const char *topic,
                const char *key,
                const void *value,
                size_t value_len,
                const struct bus_header *hdrs,
                size_t nhdrs,
                int64_t outbox_id)
{
    rd_kafka_topic_t *rkt = bus_topic(bus, topic);
    if (!rkt) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_KAFKA, "cannot produce to %s: %s", topic,
                  rd_kafka_err2str(rd_kafka_last_error()));
        return FLOWD_ERR_KAFKA;
    }
    rd_kafka_headers_t *h = rd_kafka_headers_new(nhdrs);
    for (size_t i = 0; i < nhdrs; i++)
        rd_kafka_header_add(h, hdrs[i].name, -1, hdrs[i].value, (ssize_t)hdrs[i].value_len);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        bus->producer, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
        RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE((void *)(intptr_t)outbox_id), RD_KAFKA_V_END);
    if (err) {
        rd_kafka_headers_destroy(h);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return FLOWD_ERR_AGAIN;
        FLOWD_LOG(LOG_ERROR, LOG_SUB_KAFKA, "cannot produce to %s: %s", topic,
                  rd_kafka_err2str(err));
        return FLOWD_ERR_KAFKA;
    }
    bus->in_flight++;
    return 0;
}

/* While the brokers are believed down, ask them for metadata about once a second: with no
 * traffic, nothing else would notice that they are back. */
static void probe_brokers(struct bus *bus)
{
    int64_t now = clock_mono_us();
    if (now < bus->probe_at_us)
        return;
    bus->probe_at_us = now + 1000000;
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(bus->producer, 0, NULL, &md, 200) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md->broker_cnt > 0 && !atomic_exchange(&bus->ready, 1))
            FLOWD_LOG(LOG_INFO, LOG_SUB_KAFKA, "brokers are reachable again");
        rd_kafka_metadata_destroy(md);
    }
}

void bus_poll(struct bus *bus, int timeout_ms)
{
    rd_kafka_poll(bus->producer, timeout_ms);
    if (!atomic_load(&bus->ready))
        probe_brokers(bus);
}

int bus_in_flight(const struct bus *bus)
{
    return bus->in_flight;
}

int bus_ready(const struct bus *bus)
{
    return atomic_load(&bus->ready);
}

const char *bus_header(const rd_kafka_message_t *msg, const char *name, size_t *len, int *count)
{
    rd_kafka_headers_t *h = NULL;
    *count = 0;
    if (rd_kafka_message_headers(msg, &h) || !h)
        return NULL;
    const void *val = NULL, *v;
    size_t sz;
    for (size_t idx = 0; rd_kafka_header_get(h, idx, name, &v, &sz) == 0; idx++) {
        if (!val) {
            val = v;
            *len = sz;
        }
        (*count)++;
    }
    return val;
}

int64_t bus_consumer_lag(struct bus *bus)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(bus->consumer, &parts) || !parts)
        return -1;
    rd_kafka_position(bus->consumer, parts);
    int64_t lag = 0;
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t lo = -1, hi = -1;
        /* cached from the last fetch: no broker round trip */
        if (rd_kafka_get_watermark_offsets(bus->consumer, p->topic, p->partition, &lo, &hi) ||
            hi < 0)
            continue;
        int64_t pos = p->offset >= 0 ? p->offset : lo;
        if (pos >= 0 && hi > pos)
            lag += hi - pos;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return lag;
}
