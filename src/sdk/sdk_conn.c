/* sdk_conn.c - a running connector: consumer loop, workers, replies, commits, shutdown.
 *
 * Threads:
 *   - the thread in flowd_conn_run() polls the consumer, checks each request (poison ->
 *     dead-letter topic), hands it to the worker chosen by hashing its processInstanceId (so
 *     one instance's requests are handled one at a time, in order), commits acknowledged
 *     offsets every commit.interval.ms, re-produces replies whose delivery failed, and pauses
 *     consumption above max.in.flight;
 *   - `concurrency` workers call the handler, retry retriable errors with backoff, turn fatal
 *     ones into error replies, and produce the reply;
 *   - one delivery thread serves the producer's delivery reports and marks requests acked.
 *
 * Invariants: every consumed message becomes an item owned by its partition's tracker
 * (flowd__part) until it is acknowledged AND every item before it is; only then is its offset
 * committed and the item freed. Worker queues and the redo list only borrow items. conn->lock
 * protects trackers, the acked flags, the redo list and the messageId set.
 */
#include "sdk_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/banned.h"

struct worker {
    struct flowd_conn *conn;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    flowd__item_t *head, *tail;
    uint64_t rng;
    int started;
};

struct flowd_conn {
    struct flowd_conf *conf;
    char *bootstrap;
    char dlq_topic[512];
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    rd_kafka_topic_t **out_topics; /* handles of the reply and dead-letter topics */
    size_t nout_topics;
    struct worker *workers;
    unsigned nworkers;
    pthread_t dr_thread;
    int dr_started;
    atomic_int stopping;     /* flowd_conn_stop() was called */
    atomic_int workers_stop; /* workers: finish the current request and exit */
    atomic_int dr_stop;
    int ran;
    int paused;
    atomic_int assigned; /* the group assigned partitions at least once */
    int consumer_left;   /* never assigned at the stop: left to the process exit (below) */
    pthread_mutex_t lock;
    struct flowd__part *parts;
    struct flowd__idset *seen;
    flowd__item_t *redo;
    _Atomic uint64_t st_received, st_handler_calls, st_retries, st_replies, st_error_replies,
        st_duplicates, st_dead_letters, st_delivery_failures, st_commits, st_in_flight;
};

/* ---- logging -------------------------------------------------------------------------- */

static void conn_log(const struct flowd_conn *conn, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_log(const struct flowd_conn *conn, int level, const char *fmt, ...)
{
    if (!conn->conf->log_cb || level > conn->conf->log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    conn->conf->log_cb(conn->conf->log_opaque, level, line);
}

static void on_rk_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    const struct flowd_conn *conn = rd_kafka_opaque(rk);
    if (conn)
        conn_log(conn, level < FLOWD_LOG_ERROR ? FLOWD_LOG_ERROR : level, "kafka %s: %s", fac, buf);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps up to ms, in slices; returns 1 if the connector started stopping meanwhile. */
static int sleep_unless_stopping(struct flowd_conn *conn, long ms)
{
    int64_t end = now_ms() + ms;
    for (;;) {
        if (atomic_load(&conn->stopping))
            return 1;
        int64_t left = end - now_ms();
        if (left <= 0)
            return 0;
        sleep_ms(left < 20 ? (long)left : 20);
    }
}

/* ---- the request, as handlers see it ----------------------------------------------------- */

FLOWD_EXPORT const char *flowd_request_body(const flowd_request_t *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body;
}

FLOWD_EXPORT const char *flowd_request_header(const flowd_request_t *req, const char *name)
{
    const char *found = NULL;
    const char *p = req->hdr_cache;
    for (size_t i = 0; i < req->hdr_count; i++) {
        const char *value = p + strlen(p) + 1;
        if (strcmp(p, name) == 0)
            found = value;
        p = value + strlen(value) + 1;
    }
    return found;
}

FLOWD_EXPORT const char *flowd_request_instance_id(const flowd_request_t *req)
{
    return req->instance_id;
}

FLOWD_EXPORT const char *flowd_request_message_id(const flowd_request_t *req)
{
    return req->message_id;
}

FLOWD_EXPORT const char *flowd_request_topic(const flowd_request_t *req)
{
    return req->handler ? req->handler->topic : "";
}

FLOWD_EXPORT int flowd_request_attempt(const flowd_request_t *req)
{
    return req->attempt;
}

FLOWD_EXPORT int flowd_request_stopping(const flowd_request_t *req)
{
    return req->conn ? atomic_load(&req->conn->stopping) : 0;
}

FLOWD_EXPORT int flowd_request_reply(flowd_request_t *req, const char *json, size_t len)
{
    if (!req || !json || !flowd__json_valid(json, len))
        return FLOWD_ERR_INVAL;
    char *copy = flowd__strndup(json, len);
    if (!copy)
        return FLOWD_ERR_NOMEM;
    flowd__free(req->reply);
    req->reply = copy;
    req->reply_len = len;
    return FLOWD_OK;
}

FLOWD_EXPORT int
flowd_request_add_reply_header(flowd_request_t *req, const char *name, const char *value)
{
    if (!req || !name || !name[0] || !value)
        return FLOWD_ERR_INVAL;
    if (!req->extra && !(req->extra = rd_kafka_headers_new(4)))
        return FLOWD_ERR_NOMEM;
    return rd_kafka_header_add(req->extra, name, -1, value, -1) ? FLOWD_ERR_KAFKA : FLOWD_OK;
}

/* Copies the headers into item->hdr_cache as "name\0value\0" pairs and sets instance_id and
 * message_id. */
static int item_cache_headers(flowd__item_t *item)
{
    const char *name;
    const void *value;
    size_t size, total = 1;

    if (!item->headers)
        return FLOWD_OK;
    for (size_t i = 0; !rd_kafka_header_get_all(item->headers, i, &name, &value, &size); i++)
        total += strlen(name) + 1 + size + 1;
    char *p = item->hdr_cache = flowd__malloc(total);
    if (!p)
        return FLOWD_ERR_NOMEM;
    for (size_t i = 0; !rd_kafka_header_get_all(item->headers, i, &name, &value, &size); i++) {
        size_t n = strlen(name);
        memcpy(p, name, n + 1);
        p += n + 1;
        if (value && size)
            memcpy(p, value, size);
        p[value ? size : 0] = '\0';
        p += (value ? size : 0) + 1;
        item->hdr_count++;
    }
    item->message_id = flowd_request_header(item, "messageId");
    item->instance_id = flowd_request_header(item, "processInstanceId");
    if (!item->instance_id || !item->instance_id[0])
        item->instance_id = flowd_request_header(item, "processInstanceUuid");
    if (item->instance_id && !item->instance_id[0])
        item->instance_id = NULL;
    if (item->message_id && !item->message_id[0])
        item->message_id = NULL;
    return FLOWD_OK;
}

/* ---- producing replies ------------------------------------------------------------------- */

/* Queues the item's reply (or dead-letter copy); on failure puts it on the redo list. */
static void produce_item(struct flowd_conn *conn, flowd__item_t *item)
{
    rd_kafka_headers_t *hdrs =
        item->headers ? rd_kafka_headers_copy(item->headers) : rd_kafka_headers_new(4);
    const char *topic = item->out_topic;
    const char *value = item->reply;
    size_t len = item->reply_len;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__FAIL;

    if (!hdrs)
        goto failed;
    if (item->kind == FLOWD__ITEM_DLQ) {
        topic = conn->dlq_topic;
        value = item->body;
        len = item->body_len;
        rd_kafka_header_remove(hdrs, "reason");
        rd_kafka_header_add(hdrs, "reason", -1, item->dlq_reason, -1);
    } else {
        if (item->error_message) {
            rd_kafka_header_remove(hdrs, "errorMessage");
            rd_kafka_header_add(hdrs, "errorMessage", -1, item->error_message, -1);
        }
        const char *name;
        const void *val;
        size_t size;
        for (size_t i = 0;
             item->extra && !rd_kafka_header_get_all(item->extra, i, &name, &val, &size); i++)
            rd_kafka_header_add(hdrs, name, -1, val, (ssize_t)size);
    }
    const char *key = item->key;
    size_t key_len = item->key_len;
    if (!key && item->instance_id) {
        key = item->instance_id;
        key_len = strlen(key);
    }
    for (int tries = 0;; tries++) {
        /* flags 0: librdkafka neither copies nor frees the value; the item outlives the
         * delivery report (it is freed only once acked). */
        err =
            rd_kafka_producev(conn->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                              RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(0),
                              RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(item), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries > 30000)
            break;
        sleep_ms(1); /* the delivery thread drains the queue */
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        return; /* the producer owns hdrs now */
    rd_kafka_headers_destroy(hdrs);
failed:
    atomic_fetch_add(&conn->st_delivery_failures, 1);
    conn_log(conn, FLOWD_LOG_WARNING, "produce to %s failed: %s (will retry)", topic,
             rd_kafka_err2str(err));
    pthread_mutex_lock(&conn->lock);
    item->link.next = conn->redo;
    conn->redo = item;
    pthread_mutex_unlock(&conn->lock);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct flowd_conn *conn = opaque;
    flowd__item_t *item = m->_private;
    (void)rk;
    if (!item)
        return;
    if (m->err) {
        atomic_fetch_add(&conn->st_delivery_failures, 1);
        conn_log(conn, FLOWD_LOG_WARNING, "reply for instance %s not delivered: %s (will retry)",
                 item->instance_id ? item->instance_id : "-", rd_kafka_err2str(m->err));
        pthread_mutex_lock(&conn->lock);
        item->link.next = conn->redo;
        conn->redo = item;
        pthread_mutex_unlock(&conn->lock);
        return;
    }
    if (item->kind == FLOWD__ITEM_DLQ) {
        atomic_fetch_add(&conn->st_dead_letters, 1);
    } else {
        atomic_fetch_add(&conn->st_replies, 1);
        if (item->error_message)
            atomic_fetch_add(&conn->st_error_replies, 1);
    }
    pthread_mutex_lock(&conn->lock);
    item->acked = 1; /* from here on the main thread may free it */
    pthread_mutex_unlock(&conn->lock);
}

static void *delivery_main(void *arg)
{
    struct flowd_conn *conn = arg;
    while (!atomic_load(&conn->dr_stop))
        rd_kafka_poll(conn->producer, 50);
    return NULL;
}

/* ---- workers ------------------------------------------------------------------------------ */

static void worker_push(struct worker *w, flowd__item_t *item)
{
    item->link.next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->link.next = item;
    else
        w->head = item;
    w->tail = item;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void ack_now(struct flowd_conn *conn, flowd__item_t *item)
{
    pthread_mutex_lock(&conn->lock);
    item->acked = 1;
    pthread_mutex_unlock(&conn->lock);
}

/* Handles one request to the point where its reply is queued. Returns without queueing when
 * the connector stops meanwhile: the request is then not committed and comes again. */
static void handle_item(struct worker *w, flowd__item_t *item)
{
    struct flowd_conn *conn = w->conn;
    const struct flowd_conf *conf = conn->conf;

    if (item->message_id && conn->seen) {
        pthread_mutex_lock(&conn->lock);
        int dup = flowd__idset_has(conn->seen, item->message_id);
        pthread_mutex_unlock(&conn->lock);
        if (dup) {
            atomic_fetch_add(&conn->st_duplicates, 1);
            conn_log(conn, FLOWD_LOG_DEBUG, "instance %s: duplicate messageId %s dropped",
                     item->instance_id, item->message_id);
            ack_now(conn, item);
            return;
        }
    }
    for (int attempt = 1;; attempt++) {
        item->attempt = attempt;
        flowd__free(item->reply);
        item->reply = NULL;
        if (item->extra) {
            rd_kafka_headers_destroy(item->extra);
            item->extra = NULL;
        }
        atomic_fetch_add(&conn->st_handler_calls, 1);
        if (attempt > 1)
            atomic_fetch_add(&conn->st_retries, 1);
        flowd_error_t *error = item->handler->fn(item, item->handler->opaque);
        if (!error) {
            if (!item->reply && flowd_request_reply(item, "{}", 2) != FLOWD_OK) {
                error = flowd_error_retriable("NOMEM", "out of memory");
            } else {
                break;
            }
        }
        int retriable = flowd_error_is_retriable(error);
        if (retriable && attempt < conf->retry_max_attempts) {
            long delay = flowd__backoff_ms(attempt, conf->retry_backoff_ms,
                                           conf->retry_backoff_max_ms, conf->retry_jitter, &w->rng);
            conn_log(conn, FLOWD_LOG_INFO,
                     "instance %s: attempt %d failed (%s: %s), retrying in %ld ms",
                     item->instance_id, attempt, flowd_error_code(error),
                     flowd_error_message(error), delay);
            flowd_error_destroy(error);
            if (sleep_unless_stopping(conn, delay))
                return; /* stopping: not acked, not committed, comes again */
            continue;
        }
        if (retriable && atomic_load(&conn->stopping)) {
            flowd_error_destroy(error);
            return;
        }
        flowd__free(item->reply);
        item->reply = flowd__error_reply_json(flowd_error_code(error), flowd_error_message(error),
                                              retriable, attempt, &item->reply_len);
        item->error_message = flowd__strdup(flowd_error_message(error));
        conn_log(conn, FLOWD_LOG_INFO, "instance %s: error reply after %d attempt%s: %s: %s",
                 item->instance_id, attempt, attempt == 1 ? "" : "s", flowd_error_code(error),
                 flowd_error_message(error));
        flowd_error_destroy(error);
        if (!item->reply || !item->error_message) {
            flowd__free(item->error_message);
            item->error_message = NULL;
            if (sleep_unless_stopping(conn, 100))
                return;
            attempt--; /* out of memory: build the error reply again */
            continue;
        }
        break;
    }
    if (item->message_id && conn->seen) {
        pthread_mutex_lock(&conn->lock);
        /* out of memory here only weakens duplicate detection */
        (void)flowd__idset_add(conn->seen, item->message_id);
        pthread_mutex_unlock(&conn->lock);
    }
    produce_item(conn, item);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct flowd_conn *conn = w->conn;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !atomic_load(&conn->workers_stop))
            pthread_cond_wait(&w->cond, &w->lock);
        if (atomic_load(&conn->workers_stop)) {
            /* graceful stop: requests not started stay uncommitted and come again */
            w->head = w->tail = NULL;
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        flowd__item_t *item = w->head;
        w->head = item->link.next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        handle_item(w, item);
    }
}

/* ---- consuming -------------------------------------------------------------------------- */

static struct flowd__part *part_get(struct flowd_conn *conn, const char *topic, int32_t partition)
{
    for (struct flowd__part *part = conn->parts; part; part = part->next)
        if (!part->revoked && part->partition == partition && strcmp(part->topic, topic) == 0)
            return part;
    struct flowd__part *part = flowd__part_new(topic, partition);
    if (part) {
        part->next = conn->parts;
        conn->parts = part;
    }
    return part;
}

/* Takes one consumed message: tracks its offset and routes it. */
static int consume_one(struct flowd_conn *conn, rd_kafka_message_t *msg)
{
    const char *topic = rd_kafka_topic_name(msg->rkt);
    flowd__item_t *item = flowd__calloc(1, sizeof(*item));
    if (!item)
        return FLOWD_ERR_NOMEM;
    item->conn = conn;
    item->offset = msg->offset;
    item->handler = flowd__conf_handler(conn->conf, topic);
    item->body = flowd__strndup(msg->payload ? (const char *)msg->payload : "", msg->len);
    item->body_len = msg->len;
    if (msg->key && msg->key_len) {
        item->key = flowd__strndup(msg->key, msg->key_len);
        item->key_len = msg->key_len;
    }
    rd_kafka_message_detach_headers(msg, &item->headers);
    if (!item->body || (msg->key_len && !item->key) || item_cache_headers(item) != FLOWD_OK) {
        flowd__item_free(item);
        return FLOWD_ERR_NOMEM;
    }
    if (!item->handler) {
        item->kind = FLOWD__ITEM_DLQ;
        item->dlq_reason = "no-handler";
    } else if (!flowd__json_valid(item->body, item->body_len)) {
        item->kind = FLOWD__ITEM_DLQ;
        item->dlq_reason = "not-json";
    } else if (!item->instance_id) {
        item->kind = FLOWD__ITEM_DLQ;
        item->dlq_reason = "no-correlation";
    } else {
        item->kind = FLOWD__ITEM_REQUEST;
        item->out_topic =
            item->handler->reply_topic ? item->handler->reply_topic : conn->conf->reply_topic;
    }

    pthread_mutex_lock(&conn->lock);
    struct flowd__part *part = part_get(conn, topic, msg->partition);
    int rc = part ? flowd__part_push(part, item) : FLOWD_ERR_NOMEM;
    pthread_mutex_unlock(&conn->lock);
    if (rc != FLOWD_OK) {
        flowd__item_free(item);
        return rc;
    }
    atomic_fetch_add(&conn->st_received, 1);
    atomic_fetch_add(&conn->st_in_flight, 1);

    if (item->kind == FLOWD__ITEM_DLQ) {
        conn_log(conn, FLOWD_LOG_WARNING, "%s [%d] offset %lld: %s, sent to %s", topic,
                 (int)msg->partition, (long long)msg->offset, item->dlq_reason, conn->dlq_topic);
        produce_item(conn, item);
        return FLOWD_OK;
    }
    const char *key = item->instance_id;
    unsigned n = flowd__worker_for(key, strlen(key), conn->nworkers);
    worker_push(&conn->workers[n], item);
    return FLOWD_OK;
}

/* ---- committing ----------------------------------------------------------------------- */

static void on_commit(rd_kafka_t *rk,
                      rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets,
                      void *opaque)
{
    struct flowd_conn *conn = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    if (!err) {
        atomic_fetch_add(&conn->st_commits, 1);
        return;
    }
    conn_log(conn, FLOWD_LOG_WARNING, "commit failed: %s (will retry)", rd_kafka_err2str(err));
    /* forget what we believed committed so the next round commits it again */
    pthread_mutex_lock(&conn->lock);
    for (int i = 0; offsets && i < offsets->cnt; i++)
        for (struct flowd__part *p = conn->parts; p; p = p->next)
            if (p->partition == offsets->elems[i].partition &&
                strcmp(p->topic, offsets->elems[i].topic) == 0)
                p->committed = -1;
    pthread_mutex_unlock(&conn->lock);
}

/* Frees the acknowledged prefix of every partition and commits the new positions. */
static void commit_acked(struct flowd_conn *conn, int sync)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(8);
    pthread_mutex_lock(&conn->lock);
    for (struct flowd__part **pp = &conn->parts; *pp;) {
        struct flowd__part *part = *pp;
        size_t popped = flowd__part_advance(part);
        atomic_fetch_sub(&conn->st_in_flight, popped);
        if (!part->revoked && part->commit_next > part->committed) {
            rd_kafka_topic_partition_list_add(list, part->topic, part->partition)->offset =
                part->commit_next;
            part->committed = part->commit_next;
        }
        if (part->revoked && part->n == 0) {
            *pp = part->next;
            flowd__part_free(part);
        } else {
            pp = &part->next;
        }
    }
    pthread_mutex_unlock(&conn->lock);
    if (list->cnt > 0) {
        if (sync) {
            rd_kafka_resp_err_t err = rd_kafka_commit(conn->consumer, list, 0);
            on_commit(conn->consumer, err, list, conn);
        } else {
            rd_kafka_commit(conn->consumer, list, 1); /* result comes to on_commit */
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
}

static void on_rebalance(rd_kafka_t *rk,
                         rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    struct flowd_conn *conn = opaque;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        atomic_store(&conn->assigned, 1);
        conn_log(conn, FLOWD_LOG_INFO, "assigned %d partition%s", parts->cnt,
                 parts->cnt == 1 ? "" : "s");
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        if (conn->paused)
            rd_kafka_pause_partitions(rk, parts);
    } else {
        conn_log(conn, FLOWD_LOG_INFO, "revoked %d partition%s", parts->cnt,
                 parts->cnt == 1 ? "" : "s");
        /* commit what is done; what is still in flight will be redone by the new owner */
        commit_acked(conn, 1);
        pthread_mutex_lock(&conn->lock);
        for (int i = 0; i < parts->cnt; i++)
            for (struct flowd__part *p = conn->parts; p; p = p->next)
                if (p->partition == parts->elems[i].partition &&
                    strcmp(p->topic, parts->elems[i].topic) == 0)
                    p->revoked = 1;
        pthread_mutex_unlock(&conn->lock);
        if (coop)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    }
    if (error) {
        conn_log(conn, FLOWD_LOG_ERROR, "rebalance: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
}

static void set_paused(struct flowd_conn *conn, int paused)
{
    rd_kafka_topic_partition_list_t *assigned = NULL;
    if (rd_kafka_assignment(conn->consumer, &assigned) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (paused)
            rd_kafka_pause_partitions(conn->consumer, assigned);
        else
            rd_kafka_resume_partitions(conn->consumer, assigned);
        rd_kafka_topic_partition_list_destroy(assigned);
    }
    conn->paused = paused;
    conn_log(conn, FLOWD_LOG_INFO, "%s consuming (%llu requests in flight)",
             paused ? "paused" : "resumed", (unsigned long long)atomic_load(&conn->st_in_flight));
}

static void redo_failed(struct flowd_conn *conn)
{
    pthread_mutex_lock(&conn->lock);
    flowd__item_t *list = conn->redo;
    conn->redo = NULL;
    pthread_mutex_unlock(&conn->lock);
    while (list) {
        flowd__item_t *item = list;
        list = item->link.next;
        produce_item(conn, item);
    }
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static char *read_bootstrap_file(const char *path, long wait_ms)
{
    int64_t deadline = now_ms() + wait_ms;
    for (;;) {
        FILE *fp = fopen(path, "r");
        if (fp) {
            char line[1024] = "";
            char *ok = fgets(line, sizeof(line), fp);
            fclose(fp);
            line[strcspn(line, " \t\r\n")] = '\0';
            if (ok && line[0])
                return flowd__strdup(line);
        }
        if (now_ms() >= deadline)
            return NULL;
        sleep_ms(100);
    }
}

static int rk_set(
    rd_kafka_conf_t *kconf, const char *name, const char *value, char *errstr, size_t errstr_size)
{
    char rkerr[512];
    if (rd_kafka_conf_set(kconf, name, value, rkerr, sizeof(rkerr)) != RD_KAFKA_CONF_OK)
        return flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "kafka.%s=%s: %s", name, value,
                             rkerr);
    return FLOWD_OK;
}

static rd_kafka_t *new_client(struct flowd_conn *conn,
                              rd_kafka_type_t type,
                              const char *const *defaults,
                              char *errstr,
                              size_t errstr_size)
{
    rd_kafka_conf_t *kconf = rd_kafka_conf_new();
    int scope = type == RD_KAFKA_CONSUMER ? FLOWD__KV_CONSUMER : FLOWD__KV_PRODUCER;

    if (!kconf) {
        flowd__seterr(errstr, errstr_size, FLOWD_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (rk_set(kconf, "bootstrap.servers", conn->bootstrap, errstr, errstr_size))
        goto err;
    for (; defaults[0]; defaults += 2)
        if (rk_set(kconf, defaults[0], defaults[1], errstr, errstr_size))
            goto err;
    for (const struct flowd__kv *kv = conn->conf->kafka; kv; kv = kv->next)
        if ((kv->scope == FLOWD__KV_BOTH || kv->scope == scope) &&
            rk_set(kconf, kv->name, kv->value, errstr, errstr_size))
            goto err;
    rd_kafka_conf_set_opaque(kconf, conn);
    rd_kafka_conf_set_log_cb(kconf, on_rk_log);
    if (type == RD_KAFKA_CONSUMER) {
        rd_kafka_conf_set_rebalance_cb(kconf, on_rebalance);
        rd_kafka_conf_set_offset_commit_cb(kconf, on_commit);
    } else {
        rd_kafka_conf_set_dr_msg_cb(kconf, on_delivery);
    }
    char rkerr[512];
    rd_kafka_t *rk = rd_kafka_new(type, kconf, rkerr, sizeof(rkerr));
    if (!rk) {
        flowd__seterr(errstr, errstr_size, FLOWD_ERR_KAFKA, "%s: %s",
                      type == RD_KAFKA_CONSUMER ? "consumer" : "producer", rkerr);
        goto err;
    }
    return rk;
err:
    rd_kafka_conf_destroy(kconf);
    return NULL;
}

/* Adds a producer handle for topic unless it has one. */
static int know_out_topic(struct flowd_conn *conn, const char *topic)
{
    for (size_t i = 0; i < conn->nout_topics; i++)
        if (strcmp(rd_kafka_topic_name(conn->out_topics[i]), topic) == 0)
            return 0;
    rd_kafka_topic_t **t =
        flowd__realloc(conn->out_topics, (conn->nout_topics + 1) * sizeof(*conn->out_topics));
    if (!t)
        return -1;
    conn->out_topics = t;
    if (!(t[conn->nout_topics] = rd_kafka_topic_new(conn->producer, topic, NULL)))
        return 0; /* produce by name still works, only without the early metadata */
    conn->nout_topics++;
    return 0;
}

/* Creates the producer's handles of every topic replies and dead letters go to, now: a topic
 * first named in rd_kafka_producev() is looked up only at librdkafka's 1 s topic scan
 * (librdkafka 2.0, issue #3202), which delayed the first replies by up to a second. The handles
 * live as long as the producer; the produce calls still name the topic. */
static int know_out_topics(struct flowd_conn *conn)
{
    const struct flowd_conf *conf = conn->conf;
    if (conf->reply_topic && know_out_topic(conn, conf->reply_topic) != 0)
        return -1;
    for (const struct flowd__handler *h = conf->handlers; h; h = h->next)
        if (h->reply_topic && know_out_topic(conn, h->reply_topic) != 0)
            return -1;
    return know_out_topic(conn, conn->dlq_topic);
}

FLOWD_EXPORT flowd_conn_t *flowd_conn_new(flowd_conf_t *conf, char *errstr, size_t errstr_size)
{
    static const char *const consumer_defaults[] = {"group.id",
                                                    NULL, /* filled below */
                                                    "enable.auto.commit",
                                                    "false",
                                                    "enable.auto.offset.store",
                                                    "false",
                                                    "auto.offset.reset",
                                                    "earliest",
                                                    "fetch.wait.max.ms",
                                                    "5",
                                                    "session.timeout.ms",
                                                    "6000",
                                                    "heartbeat.interval.ms",
                                                    "1000",
                                                    "partition.assignment.strategy",
                                                    "cooperative-sticky",
                                                    "allow.auto.create.topics",
                                                    "true",
                                                    "topic.metadata.refresh.interval.ms",
                                                    "1000",
                                                    "log.connection.close",
                                                    "false",
                                                    NULL};
    static const char *const producer_defaults[] = {
        "enable.idempotence",   "true",  "linger.ms", "1", "message.timeout.ms", "30000",
        "log.connection.close", "false", NULL};

    if (!conf) {
        flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "no configuration");
        return NULL;
    }
    if (!conf->handlers) {
        flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                      "no handler: add one with flowd_conf_add_handler()");
        return NULL;
    }
    if (!conf->reply_topic) {
        for (const struct flowd__handler *h = conf->handlers; h; h = h->next)
            if (!h->reply_topic) {
                flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                              "topic %s has no reply topic: set reply.topic", h->topic);
                return NULL;
            }
    }
    if (!conf->bootstrap_servers && !conf->bootstrap_file) {
        flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                      "set bootstrap.servers or bootstrap.file");
        return NULL;
    }
    struct flowd_conn *conn = flowd__calloc(1, sizeof(*conn));
    if (!conn) {
        flowd__seterr(errstr, errstr_size, FLOWD_ERR_NOMEM, "out of memory");
        return NULL;
    }
    conn->conf = conf;
    pthread_mutex_init(&conn->lock, NULL);
    if (conf->dlq_topic)
        snprintf(conn->dlq_topic, sizeof(conn->dlq_topic), "%s", conf->dlq_topic);
    else if (flowd__dlq_default(conf->reply_topic ? conf->reply_topic : conf->handlers->reply_topic,
                                conn->dlq_topic, sizeof(conn->dlq_topic)) != 0) {
        flowd__seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "reply topic too long");
        goto err;
    }
    if (conf->bootstrap_servers) {
        conn->bootstrap = flowd__strdup(conf->bootstrap_servers);
    } else {
        conn->bootstrap = read_bootstrap_file(conf->bootstrap_file, conf->bootstrap_wait_ms);
        if (!conn->bootstrap) {
            flowd__seterr(errstr, errstr_size, FLOWD_ERR_IO,
                          "no bootstrap address in %s after %ld ms", conf->bootstrap_file,
                          conf->bootstrap_wait_ms);
            goto err;
        }
    }
    if (!conn->bootstrap)
        goto nomem;
    if (conf->dedup_size > 0 && !(conn->seen = flowd__idset_new((size_t)conf->dedup_size)))
        goto nomem;
    conn->nworkers = (unsigned)conf->concurrency;
    conn->workers = flowd__calloc(conn->nworkers, sizeof(*conn->workers));
    if (!conn->workers)
        goto nomem;

    const char *cdef[sizeof(consumer_defaults) / sizeof(consumer_defaults[0])];
    memcpy(cdef, consumer_defaults, sizeof(cdef));
    cdef[1] = conf->group_id;
    if (!(conn->consumer = new_client(conn, RD_KAFKA_CONSUMER, cdef, errstr, errstr_size)))
        goto err;
    if (!(conn->producer =
              new_client(conn, RD_KAFKA_PRODUCER, producer_defaults, errstr, errstr_size)))
        goto err;
    if (know_out_topics(conn) != 0)
        goto nomem;
    rd_kafka_poll_set_consumer(conn->consumer);
    return conn;
nomem:
    flowd__seterr(errstr, errstr_size, FLOWD_ERR_NOMEM, "out of memory");
err:
    conn->conf = NULL; /* not taken on failure */
    flowd_conn_destroy(conn);
    return NULL;
}

FLOWD_EXPORT void flowd_conn_stop(flowd_conn_t *conn)
{
    if (conn)
        atomic_store(&conn->stopping, 1);
}

static flowd_conn_t *volatile signal_conn;

static void on_signal(int sig)
{
    (void)sig;
    flowd_conn_t *conn = signal_conn;
    if (conn)
        flowd_conn_stop(conn);
}

static void stop_threads(struct flowd_conn *conn)
{
    atomic_store(&conn->workers_stop, 1);
    for (unsigned i = 0; i < conn->nworkers; i++) {
        struct worker *w = &conn->workers[i];
        if (!w->started)
            continue;
        pthread_mutex_lock(&w->lock);
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->thread, NULL);
        w->started = 0;
    }
    atomic_store(&conn->dr_stop, 1);
    if (conn->dr_started) {
        pthread_join(conn->dr_thread, NULL);
        conn->dr_started = 0;
    }
}

FLOWD_EXPORT int flowd_conn_run(flowd_conn_t *conn)
{
    struct sigaction sa, old_term, old_int;
    int rc = FLOWD_OK;

    if (!conn)
        return FLOWD_ERR_INVAL;
    if (conn->ran)
        return FLOWD_ERR_STATE;
    conn->ran = 1;
    if (conn->conf->handle_signals) {
        signal_conn = conn;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, &old_term);
        sigaction(SIGINT, &sa, &old_int);
    }

    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(4);
    for (const struct flowd__handler *h = conn->conf->handlers; h; h = h->next)
        rd_kafka_topic_partition_list_add(topics, h->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(conn->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        conn_log(conn, FLOWD_LOG_ERROR, "subscribe: %s", rd_kafka_err2str(err));
        rc = FLOWD_ERR_KAFKA;
        goto out;
    }

    for (unsigned i = 0; i < conn->nworkers; i++) {
        struct worker *w = &conn->workers[i];
        w->conn = conn;
        w->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)i << 32) ^ (uint64_t)now_ms();
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            rc = FLOWD_ERR_NOMEM;
            goto out;
        }
        w->started = 1;
    }
    if (pthread_create(&conn->dr_thread, NULL, delivery_main, conn) != 0) {
        rc = FLOWD_ERR_NOMEM;
        goto out;
    }
    conn->dr_started = 1;
    conn_log(conn, FLOWD_LOG_INFO, "running: %u worker%s, bootstrap %s, dead letters to %s",
             conn->nworkers, conn->nworkers == 1 ? "" : "s", conn->bootstrap, conn->dlq_topic);

    int64_t next_commit = now_ms() + conn->conf->commit_interval_ms;
    int64_t next_redo = 0;
    long redo_backoff = 0;
    while (!atomic_load(&conn->stopping)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(conn->consumer, 20);
        if (msg) {
            if (msg->err) {
                if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    conn_log(conn,
                             msg->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
                                 ? FLOWD_LOG_DEBUG
                                 : FLOWD_LOG_WARNING,
                             "consumer: %s", rd_kafka_message_errstr(msg));
            } else {
                while (consume_one(conn, msg) == FLOWD_ERR_NOMEM) {
                    conn_log(conn, FLOWD_LOG_ERROR, "out of memory, waiting");
                    if (sleep_unless_stopping(conn, 100))
                        break; /* not tracked, not committed: comes again */
                }
            }
            rd_kafka_message_destroy(msg);
        }
        int64_t now = now_ms();
        if (now >= next_commit) {
            commit_acked(conn, 0);
            next_commit = now + conn->conf->commit_interval_ms;
        }
        uint64_t in_flight = atomic_load(&conn->st_in_flight);
        if (!conn->paused && in_flight >= (uint64_t)conn->conf->max_in_flight)
            set_paused(conn, 1);
        else if (conn->paused && in_flight <= (uint64_t)conn->conf->max_in_flight / 2)
            set_paused(conn, 0);
        if (conn->redo && now >= next_redo) {
            redo_backoff =
                flowd__backoff_ms(redo_backoff ? 2 : 1, 200, 5000, 0.5, &conn->workers[0].rng);
            next_redo = now + redo_backoff;
            redo_failed(conn);
        } else if (!conn->redo) {
            redo_backoff = 0;
        }
        char fatal[512];
        if (rd_kafka_fatal_error(conn->producer, fatal, sizeof(fatal))) {
            conn_log(conn, FLOWD_LOG_ERROR, "fatal producer error: %s", fatal);
            rc = FLOWD_ERR_KAFKA;
            break;
        }
    }

out:
    /* Graceful stop: the handlers in progress finish, their replies are flushed and acked,
     * the acknowledged prefix is committed, and we leave the group. */
    atomic_store(&conn->stopping, 1);
    conn_log(conn, FLOWD_LOG_INFO, "stopping");
    stop_threads(conn);
    if (rd_kafka_flush(conn->producer, (int)conn->conf->shutdown_timeout_ms) != 0)
        conn_log(conn, FLOWD_LOG_WARNING,
                 "%d repl%s not acknowledged in time: their requests come again",
                 rd_kafka_outq_len(conn->producer),
                 rd_kafka_outq_len(conn->producer) == 1 ? "y" : "ies");
    commit_acked(conn, 1);
    if (atomic_load(&conn->assigned)) {
        rd_kafka_consumer_close(conn->consumer);
    } else {
        /* librdkafka 2.0's cooperative-sticky assignor aborts the process when a consumer is
         * closed before its first assignment (librdkafka issue #4312, fixed in 2.3): leave it
         * to the exit; the group drops the member after its session timeout */
        conn_log(conn, FLOWD_LOG_INFO,
                 "the group never assigned partitions: leaving the "
                 "consumer to the process exit");
        conn->consumer_left = 1;
    }
    if (conn->conf->handle_signals) {
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGINT, &old_int, NULL);
        signal_conn = NULL;
    }
    conn_log(conn, FLOWD_LOG_INFO, "stopped");
    return rc;
}

FLOWD_EXPORT void flowd_conn_get_stats(const flowd_conn_t *conn, struct flowd_conn_stats *stats)
{
    if (!conn || !stats)
        return;
    stats->received = atomic_load_explicit(&conn->st_received, memory_order_relaxed);
    stats->handler_calls = atomic_load_explicit(&conn->st_handler_calls, memory_order_relaxed);
    stats->retries = atomic_load_explicit(&conn->st_retries, memory_order_relaxed);
    stats->replies = atomic_load_explicit(&conn->st_replies, memory_order_relaxed);
    stats->error_replies = atomic_load_explicit(&conn->st_error_replies, memory_order_relaxed);
    stats->duplicates = atomic_load_explicit(&conn->st_duplicates, memory_order_relaxed);
    stats->dead_letters = atomic_load_explicit(&conn->st_dead_letters, memory_order_relaxed);
    stats->delivery_failures =
        atomic_load_explicit(&conn->st_delivery_failures, memory_order_relaxed);
    stats->commits = atomic_load_explicit(&conn->st_commits, memory_order_relaxed);
    stats->in_flight = atomic_load_explicit(&conn->st_in_flight, memory_order_relaxed);
}

FLOWD_EXPORT void flowd_conn_destroy(flowd_conn_t *conn)
{
    if (!conn)
        return;
    if (conn->workers)
        stop_threads(conn);
    if (conn->producer) {
        /* drop what is still queued; its delivery reports (served here) only touch items,
         * which are still alive until the trackers are freed below */
        rd_kafka_purge(conn->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(conn->producer, 0);
        for (size_t i = 0; i < conn->nout_topics; i++)
            rd_kafka_topic_destroy(conn->out_topics[i]);
        rd_kafka_destroy(conn->producer);
    }
    if (conn->consumer && !conn->consumer_left) {
        if (!conn->ran)
            rd_kafka_consumer_close(conn->consumer);
        rd_kafka_destroy(conn->consumer);
    }
    pthread_mutex_lock(&conn->lock);
    while (conn->parts) {
        struct flowd__part *part = conn->parts;
        conn->parts = part->next;
        flowd__part_free(part);
    }
    conn->redo = NULL;
    pthread_mutex_unlock(&conn->lock);
    if (conn->workers) {
        for (unsigned i = 0; i < conn->nworkers; i++) {
            if (conn->workers[i].conn) {
                pthread_mutex_destroy(&conn->workers[i].lock);
                pthread_cond_destroy(&conn->workers[i].cond);
            }
        }
    }
    flowd__free(conn->out_topics);
    flowd__free(conn->workers);
    flowd__idset_free(conn->seen);
    flowd__free(conn->bootstrap);
    pthread_mutex_destroy(&conn->lock);
    flowd_conf_destroy(conn->conf);
    flowd__free(conn);
}
