/* bus.h - flowd's Kafka side: the embedded mock cluster, the engine consumer (regex subscription,
 * manual offset commits after the store commit) and the idempotent producer used by the outbox
 * relay.
 *
 * @thread One thread (the daemon loop) calls everything but bus_wakeup() and bus_ready(), which are
 *         safe from any thread.
 */
#ifndef FLOWD_BUS_H
#define FLOWD_BUS_H

#include "../common/config.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

struct bus;

struct bus_header {
    const char *name;
    const char *value;
    size_t value_len;
};

/* Called (from bus_poll) once per produced message: err 0 = delivered. */
typedef void(bus_delivery_cb)(void *ctx, int64_t outbox_id, rd_kafka_resp_err_t err);

/* Starts the embedded cluster when cfg->bootstrap_servers is "embedded" (and writes the bootstrap
 * address to <data-dir>/kafka.bootstrap), then the producer and the consumer (not yet subscribed).
 * Returns NULL with errstr on failure. cfg must outlive the bus. */
struct bus *bus_new(const struct flowd_config *cfg,
                    bus_delivery_cb *on_delivery,
                    void *ctx,
                    char *errstr,
                    size_t errstr_size);
/* Closes the consumer (leaving the group), flushes the producer for up to flush_ms, stops the
 * embedded cluster. */
void bus_free(struct bus *bus, int flush_ms);

/* "127.0.0.1:port,..." - borrowed. */
const char *bus_bootstrap(const struct bus *bus);
int bus_is_embedded(const struct bus *bus);
/* An id for the cluster incarnation: inbox keys built on offsets include it, because the
 * embedded cluster starts from offset 0 after every restart. Borrowed. */
const char *bus_cluster_epoch(const struct bus *bus);

/* Creates a topic up front on the embedded cluster (so the regex subscription sees it before the
 * first reply arrives); no-op on a real cluster. */
void bus_ensure_topic(struct bus *bus, const char *topic);

/* Subscribes to the engine pattern (cfg->subscription_regex). */
int bus_subscribe(struct bus *bus, char *errstr, size_t errstr_size);

/* Waits up to timeout_ms for the first message, then up to linger_ms more for others (group
 * commit), up to max. Returns the count; the caller owns the messages (rd_kafka_message_destroy).
 */
size_t
bus_consume(struct bus *bus, rd_kafka_message_t **msgs, size_t max, int timeout_ms, int linger_ms);
/* Marks the offsets after the given messages (per partition) for commit; librdkafka commits
 * them every 100 ms, on a rebalance that revokes the partition, and on close. */
void bus_commit(struct bus *bus, rd_kafka_message_t *const *msgs, size_t n);
/* Interrupts a bus_consume() waiting in another thread. */
void bus_wakeup(struct bus *bus);

/* Queues a message; delivery is reported through the delivery callback with outbox_id.
 * Returns 0, or FLOWD_ERR_AGAIN when the local queue is full (serve bus_poll and retry). */
int bus_produce(struct bus *bus,
                const char *topic,
                const char *key,
                const void *value,
                size_t value_len,
                const struct bus_header *hdrs,
                size_t nhdrs,
                int64_t outbox_id);
/* Serves delivery reports and client events. */
void bus_poll(struct bus *bus, int timeout_ms);
/* Messages queued and not yet reported. */
int bus_in_flight(const struct bus *bus);

/* Messages on the assigned partitions not consumed yet (high watermark - position, summed, from
 * the client's cached watermarks), or -1 before the first assignment. Loop thread. */
int64_t bus_consumer_lag(struct bus *bus);

/* 1 while the brokers are reachable (no all-brokers-down event since the last success). */
int bus_ready(const struct bus *bus);

/* Returns a header value of msg (borrowed, not NUL-terminated: *len), or NULL. Sets *count to the
 * number of headers with that name. */
const char *bus_header(const rd_kafka_message_t *msg, const char *name, size_t *len, int *count);

#endif
