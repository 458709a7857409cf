/* metrics.c - /metrics in the Prometheus text format (version 0.0.4).
 *
 * Counters are atomics the loop bumps; histograms have fixed buckets (per-bucket atomics, made
 * cumulative when rendered). Gauges that need the loop's state (instances waiting per node, the
 * outbox backlog, the consumer lag) come from a REQ_STATS answer; instance counts per state come
 * from the read store. Rendering is called from HTTP threads.
 */
#include "daemon.h"

#include "../common/buf.h"
#include "../common/json.h"

#include <stdio.h>
#include <string.h>

#include "../common/banned.h"

static const double latency_bounds_ms[] = {5,    10,   25,   50,    100,   250,   500,
                                           1000, 2500, 5000, 10000, 30000, 60000, 300000};
static const double batch_bounds[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000};

void metrics_init(struct op_metrics *m)
{
    m->latency_ms.bounds = latency_bounds_ms;
    m->latency_ms.nbounds = sizeof(latency_bounds_ms) / sizeof(latency_bounds_ms[0]);
    m->batch_size.bounds = batch_bounds;
    m->batch_size.nbounds = sizeof(batch_bounds) / sizeof(batch_bounds[0]);
}

void metrics_observe(struct metrics_hist *h, long long v)
{
    size_t i = 0;
    while (i < h->nbounds && (double)v > h->bounds[i])
        i++;
    atomic_fetch_add(&h->buckets[i], 1);
    atomic_fetch_add(&h->count, 1);
    atomic_fetch_add(&h->sum, v);
}

/* Label values: backslash, double quote and newline are escaped. */
static void add_label(struct buf *out, const char *v)
{
    for (; v && *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_addc(out, '\\');
        if (*v == '\n') {
            buf_adds(out, "\\n");
            continue;
        }
        buf_addc(out, *v);
    }
}

static void counter(struct buf *out, const char *name, const char *help, long long v)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %lld\n", name, help, name, name, v);
}

static void gauge(struct buf *out, const char *name, const char *help, long long v)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name, v);
}

/* scale: the unit of the observations in the rendered unit (1000 renders ms as seconds) */
static void histogram(
    struct buf *out, const char *name, const char *help, const struct metrics_hist *h, double scale)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    long long cum = 0;
    for (size_t i = 0; i < h->nbounds; i++) {
        cum += atomic_load(&h->buckets[i]);
        buf_printf(out, "%s_bucket{le=\"%g\"} %lld\n", name, h->bounds[i] / scale, cum);
    }
    cum += atomic_load(&h->buckets[h->nbounds]);
    buf_printf(out, "%s_bucket{le=\"+Inf\"} %lld\n", name, cum);
    buf_printf(out, "%s_sum %g\n", name, (double)atomic_load(&h->sum) / scale);
    buf_printf(out, "%s_count %lld\n", name, (long long)atomic_load(&h->count));
}

struct state_counts {
    struct buf *out;
    long long active;
};

static int add_state(void *ctx, const char *state, int64_t n)
{
    struct state_counts *sc = ctx;
    buf_adds(sc->out, "flowd_instances{state=\"");
    add_label(sc->out, state);
    buf_printf(sc->out, "\"} %lld\n", (long long)n);
    if (strcmp(state, "STARTED") == 0)
        sc->active = n;
    return 0;
}

void metrics_render(struct daemon *d, const cJSON *stats, struct buf *out)
{
    const struct counters *n = &d->n;
    const struct op_metrics *m = &d->m;
    counter(out, "flowd_instances_started_total", "Instances started (HTTP and Kafka).",
            atomic_load(&n->started));
    counter(out, "flowd_instances_started_by_kafka_total",
            "Instances started by a message on the start topic.",
            atomic_load(&m->started_by_kafka));
    counter(out, "flowd_instances_completed_total", "Instances that reached an end node.",
            atomic_load(&n->completed));
    counter(out, "flowd_instances_failed_total", "Instances that ended FAILED.",
            atomic_load(&n->failed));
    counter(out, "flowd_instances_cancelled_total", "Instances cancelled (TERMINATED).",
            atomic_load(&m->cancelled));
    counter(out, "flowd_instances_retried_total", "Failed instances and incidents retried.",
            atomic_load(&m->retried));
    counter(out, "flowd_incidents_total", "Waits that became incidents.",
            atomic_load(&n->incidents));
    counter(out, "flowd_messages_sent_total", "Messages Kafka acknowledged (outbox relay).",
            atomic_load(&n->sent));
    counter(out, "flowd_messages_resent_total", "Requests re-sent after a response timeout.",
            atomic_load(&n->resent));
    counter(out, "flowd_messages_received_total", "Messages consumed.", atomic_load(&n->received));
    counter(out, "flowd_messages_duplicate_total", "Consumed messages dropped as duplicates.",
            atomic_load(&n->duplicates));
    counter(out, "flowd_messages_dead_lettered_total", "Messages sent to the dead-letter topic.",
            atomic_load(&n->dead_lettered));
    counter(out, "flowd_messages_delivered_by_api_total",
            "Messages injected through POST /v1/instances/{id}/messages.",
            atomic_load(&m->delivered));
    counter(out, "flowd_dead_letters_replayed_total", "Dead letters re-published by a replay.",
            atomic_load(&m->replayed));
    counter(out, "flowd_batches_total", "Store transactions committed by the loop.",
            atomic_load(&n->batches));
    counter(out, "flowd_store_failures_total", "Store transactions that failed.",
            atomic_load(&n->store_failures));
    histogram(out, "flowd_instance_duration_seconds",
              "Time from start to FINISHED of the instances that completed.", &m->latency_ms,
              1000.0);
    histogram(out, "flowd_batch_size", "Consumed messages per store transaction.", &m->batch_size,
              1.0);

    struct state_counts sc = {out, 0};
    buf_adds(out, "# HELP flowd_instances Instances in the store, by state.\n"
                  "# TYPE flowd_instances gauge\n");
    pthread_mutex_lock(&d->read_lock);
    int rc = d->read_store.m->x_instance_count_by_state(d->read_store.st, add_state, &sc);
    pthread_mutex_unlock(&d->read_lock);
    if (rc == 0)
        gauge(out, "flowd_instances_active", "Instances STARTED and not ended.", sc.active);

    buf_adds(out, "# HELP flowd_instances_waiting Tokens waiting, by process and node.\n"
                  "# TYPE flowd_instances_waiting gauge\n");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(stats, "waiting");
    const cJSON *it;
    cJSON_ArrayForEach(it, w)
    {
        buf_adds(out, "flowd_instances_waiting{process=\"");
        add_label(out, json_str(it, "process"));
        buf_adds(out, "\",node=\"");
        add_label(out, json_str(it, "node"));
        buf_adds(out, "\",state=\"");
        add_label(out, json_str(it, "state"));
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "count");
        buf_printf(out, "\"} %lld\n", c ? (long long)c->valuedouble : 0LL);
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(stats, "outboxBacklog");
    if (cJSON_IsNumber(v))
        gauge(out, "flowd_outbox_backlog", "Outbox rows not yet acknowledged by Kafka.",
              (long long)v->valuedouble);
    v = cJSON_GetObjectItemCaseSensitive(stats, "consumerLag");
    if (cJSON_IsNumber(v))
        gauge(out, "flowd_consumer_lag",
              "Messages on the consumed partitions not consumed yet (-1: no assignment yet).",
              (long long)v->valuedouble);
    gauge(out, "flowd_ready", "1 when Kafka and the store are usable.",
          bus_ready(d->bus) && atomic_load(&d->store_ok) && !d->stopping);
}
