/* test_sdk_util.c - the SDK's pure pieces: configuration, errors, JSON validation, error reply
 * bodies, the messageId set, backoff with jitter, the dead-letter default, the offset tracker,
 * worker choice, and out-of-memory paths through a failing allocator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "sdk/sdk_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static flowd_error_t *noop_handler(flowd_request_t *req, void *opaque)
{
    (void)req;
    (void)opaque;
    return NULL;
}

static void conf_defaults_and_set_round_trip(void **state)
{
    (void)state;
    char buf[128], errstr[FLOWD_ERRSTR_SIZE];
    flowd_conf_t *conf = flowd_conf_new();
    assert_non_null(conf);
    assert_int_equal(flowd_conf_get(conf, "concurrency", buf, sizeof(buf)), FLOWD_OK);
    assert_string_equal(buf, "4");
    assert_int_equal(flowd_conf_get(conf, "group.id", buf, sizeof(buf)), FLOWD_OK);
    assert_string_equal(buf, "flowd-connector");
    assert_int_equal(flowd_conf_get(conf, "reply.topic", buf, sizeof(buf)), FLOWD_ERR_NOTFOUND);
    assert_int_equal(flowd_conf_set(conf, "concurrency", "16", errstr, sizeof(errstr)), FLOWD_OK);
    assert_int_equal(flowd_conf_get(conf, "concurrency", buf, sizeof(buf)), FLOWD_OK);
    assert_string_equal(buf, "16");
    assert_int_equal(flowd_conf_set(conf, "retry.jitter", "0.25", errstr, sizeof(errstr)),
                     FLOWD_OK);
    assert_int_equal(flowd_conf_get(conf, "retry.jitter", buf, sizeof(buf)), FLOWD_OK);
    assert_string_equal(buf, "0.25");
    assert_int_equal(
        flowd_conf_set(conf, "kafka.security.protocol", "plaintext", errstr, sizeof(errstr)),
        FLOWD_OK);
    assert_int_equal(flowd_conf_get(conf, "kafka.security.protocol", buf, sizeof(buf)), FLOWD_OK);
    assert_string_equal(buf, "plaintext");
    assert_int_equal(flowd_conf_set(conf, "handle.signals", "false", errstr, sizeof(errstr)),
                     FLOWD_OK);
    assert_int_equal(flowd_conf_get(conf, "handle.signals", buf, sizeof(buf)), FLOWD_OK);
    assert_string_equal(buf, "false");
    /* a too-small buffer is reported, and still NUL-terminated */
    assert_int_equal(flowd_conf_get(conf, "group.id", buf, 4), FLOWD_ERR_TOOBIG);
    assert_string_equal(buf, "flo");
    flowd_conf_destroy(conf);
}

static void conf_rejects_bad_values_naming_the_property(void **state)
{
    (void)state;
    char errstr[FLOWD_ERRSTR_SIZE];
    flowd_conf_t *conf = flowd_conf_new();
    assert_int_equal(flowd_conf_set(conf, "concurrency", "0", errstr, sizeof(errstr)),
                     FLOWD_ERR_INVAL);
    assert_non_null(strstr(errstr, "concurrency"));
    assert_int_equal(flowd_conf_set(conf, "concurrency", "4x", errstr, sizeof(errstr)),
                     FLOWD_ERR_INVAL);
    assert_int_equal(flowd_conf_set(conf, "retry.jitter", "1.5", errstr, sizeof(errstr)),
                     FLOWD_ERR_INVAL);
    assert_int_equal(flowd_conf_set(conf, "handle.signals", "yes", errstr, sizeof(errstr)),
                     FLOWD_ERR_INVAL);
    assert_int_equal(flowd_conf_set(conf, "no.such", "1", errstr, sizeof(errstr)),
                     FLOWD_ERR_NOTFOUND);
    assert_non_null(strstr(errstr, "no.such"));
    assert_int_equal(flowd_conf_set(conf, "reply.topic", "", errstr, sizeof(errstr)),
                     FLOWD_ERR_INVAL);
    assert_int_equal(flowd_conf_set(conf, "kafka.", "x", errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    flowd_conf_destroy(conf);
}

static void conf_handlers_unique_per_topic(void **state)
{
    (void)state;
    char errstr[FLOWD_ERRSTR_SIZE];
    flowd_conf_t *conf = flowd_conf_new();
    assert_int_equal(
        flowd_conf_add_handler(conf, "t.in", NULL, noop_handler, NULL, errstr, sizeof(errstr)),
        FLOWD_OK);
    assert_int_equal(
        flowd_conf_add_handler(conf, "t.in", NULL, noop_handler, NULL, errstr, sizeof(errstr)),
        FLOWD_ERR_EXISTS);
    assert_int_equal(
        flowd_conf_add_handler(conf, "t.x", "t.x", noop_handler, NULL, errstr, sizeof(errstr)),
        FLOWD_ERR_INVAL);
    assert_int_equal(
        flowd_conf_add_handler(conf, "", NULL, noop_handler, NULL, errstr, sizeof(errstr)),
        FLOWD_ERR_INVAL);
    assert_non_null(flowd__conf_handler(conf, "t.in"));
    assert_null(flowd__conf_handler(conf, "t.out"));
    flowd_conf_destroy(conf);
}

static void conn_new_refuses_incomplete_conf_and_leaves_it_to_caller(void **state)
{
    (void)state;
    char errstr[FLOWD_ERRSTR_SIZE];
    flowd_conf_t *conf = flowd_conf_new();
    assert_null(flowd_conn_new(conf, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "handler"));
    flowd_conf_add_handler(conf, "t.in", NULL, noop_handler, NULL, errstr, sizeof(errstr));
    assert_null(flowd_conn_new(conf, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "reply.topic"));
    flowd_conf_set(conf, "reply.topic", "ai.flowx.dev.engine.receive.t.v1", NULL, 0);
    assert_null(flowd_conn_new(conf, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "bootstrap"));
    flowd_conf_set(conf, "bootstrap.servers", "127.0.0.1:1", NULL, 0);
    flowd_conf_set(conf, "kafka.no.such.property", "1", NULL, 0);
    assert_null(flowd_conn_new(conf, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "no.such.property"));
    flowd_conf_destroy(conf); /* still ours: no double free, no leak (ASan checks) */
}

static void bootstrap_file_missing_times_out_with_its_name(void **state)
{
    (void)state;
    char errstr[FLOWD_ERRSTR_SIZE];
    flowd_conf_t *conf = flowd_conf_new();
    flowd_conf_add_handler(conf, "t.in", "t.out", noop_handler, NULL, NULL, 0);
    flowd_conf_set(conf, "bootstrap.file", "/nonexistent/kafka.bootstrap", NULL, 0);
    flowd_conf_set(conf, "bootstrap.file.wait.ms", "150", NULL, 0);
    assert_null(flowd_conn_new(conf, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "/nonexistent/kafka.bootstrap"));
    flowd_conf_destroy(conf);
}

static void errors_carry_kind_code_and_message(void **state)
{
    (void)state;
    flowd_error_t *e = flowd_error_retriable("HTTP_503", "legacy said %d", 503);
    assert_true(flowd_error_is_retriable(e));
    assert_false(flowd_error_is_fatal(e));
    assert_string_equal(flowd_error_code(e), "HTTP_503");
    assert_string_equal(flowd_error_message(e), "legacy said 503");
    flowd_error_destroy(e);
    e = flowd_error_fatal(NULL, "bad");
    assert_true(flowd_error_is_fatal(e));
    assert_string_equal(flowd_error_code(e), "ERROR");
    flowd_error_destroy(e);
    assert_string_equal(flowd_strerror(FLOWD_ERR_NOMEM), "out of memory");
    assert_string_equal(flowd_strerror(12345), "unknown error");
    assert_int_equal(flowd_version(), FLOWD_VERSION);
    assert_string_equal(flowd_version_str(), FLOWD_VERSION_STR);
}

/* Values must stay those of src/common/err.h. Both headers define enum flowd_err, so one file
 * cannot include both: the daemon's values are spelled out here. */
static void error_codes_match_the_daemon(void **state)
{
    (void)state;
    assert_int_equal(FLOWD_OK, 0);
    assert_int_equal(FLOWD_ERR_NOMEM, -1);
    assert_int_equal(FLOWD_ERR_INVAL, -2);
    assert_int_equal(FLOWD_ERR_AGAIN, -3);
    assert_int_equal(FLOWD_ERR_NOTFOUND, -4);
    assert_int_equal(FLOWD_ERR_IO, -5);
    assert_int_equal(FLOWD_ERR_STATE, -6);
    assert_int_equal(FLOWD_ERR_NOWAIT, -7);
    assert_int_equal(FLOWD_ERR_TOOBIG, -8);
    assert_int_equal(FLOWD_ERR_KAFKA, -9);
    assert_int_equal(FLOWD_ERR_EXISTS, -10);
}

static void json_validator_accepts_json_and_refuses_the_rest(void **state)
{
    (void)state;
    static const char *good[] = {"{}",
                                 "[]",
                                 " {\"a\": [1, -2.5e+3, true, false, null]} ",
                                 "\"\\u00e9\\n\"",
                                 "0",
                                 "\"caf\xc3\xa9\"",
                                 "{\"a\":{\"b\":{}}}"};
    static const char *bad[] = {"",        "{",     "{\"a\"}",  "[1,]",     "01",
                                "nul",     "{} {}", "\"\x01\"", "\"\xff\"", "1.",
                                "\"\\x\"", "{a:1}", "[1 2]",    "-",        "tru"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(flowd__json_valid(good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (flowd__json_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted invalid JSON: %s", bad[i]);
    }
    /* exactly len bytes: a valid prefix is not enough, and no NUL is needed */
    assert_false(flowd__json_valid("{}x", 3));
    assert_true(flowd__json_valid("{}x", 2));
    char deep[2000];
    memset(deep, '[', 1000);
    memset(deep + 1000, ']', 1000);
    assert_false(flowd__json_valid(deep, sizeof(deep))); /* nesting limit, no stack overflow */
}

static void error_reply_is_valid_json_with_escaped_text(void **state)
{
    (void)state;
    size_t len;
    char *json = flowd__error_reply_json("E\"1", "line\n\"quoted\"\\ \x01", 0, 3, &len);
    assert_non_null(json);
    assert_int_equal(strlen(json), len);
    assert_true(flowd__json_valid(json, len));
    assert_string_equal(json, "{\"errorMessage\":\"line\\n\\\"quoted\\\"\\\\ \\u0001\","
                              "\"errorCode\":\"E\\\"1\",\"retriable\":false,\"attempts\":3}");
    flowd__free(json);
}

static void idset_drops_duplicates_and_evicts_oldest(void **state)
{
    (void)state;
    struct flowd__idset *set = flowd__idset_new(3);
    assert_int_equal(flowd__idset_add(set, "a"), 1);
    assert_int_equal(flowd__idset_add(set, "a"), 0);
    assert_int_equal(flowd__idset_add(set, "b"), 1);
    assert_int_equal(flowd__idset_add(set, "c"), 1);
    assert_int_equal(flowd__idset_add(set, "d"), 1); /* evicts "a" */
    assert_false(flowd__idset_has(set, "a"));
    assert_true(flowd__idset_has(set, "b"));
    assert_true(flowd__idset_has(set, "d"));
    flowd__idset_free(set);

    /* many ids through a small set: the table stays consistent after evictions */
    set = flowd__idset_new(100);
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "m-%d", i);
        assert_int_equal(flowd__idset_add(set, id), 1);
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "m-%d", i);
        assert_int_equal(flowd__idset_has(set, id), i >= 4900);
    }
    flowd__idset_free(set);
}

static void backoff_doubles_caps_and_jitters_within_bounds(void **state)
{
    (void)state;
    uint64_t rng = 42;
    assert_int_equal(flowd__backoff_ms(1, 100, 1000, 0, &rng), 100);
    assert_int_equal(flowd__backoff_ms(2, 100, 1000, 0, &rng), 200);
    assert_int_equal(flowd__backoff_ms(4, 100, 1000, 0, &rng), 800);
    assert_int_equal(flowd__backoff_ms(5, 100, 1000, 0, &rng), 1000);
    assert_int_equal(flowd__backoff_ms(60, 100, 1000, 0, &rng), 1000);
    long lo = 100000, hi = 0;
    for (int i = 0; i < 1000; i++) {
        long d = flowd__backoff_ms(3, 100, 1000, 0.5, &rng);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    assert_true(lo >= 200 && hi <= 400);
    assert_true(hi - lo > 100); /* it does vary */
}

static void dlq_default_follows_reply_topic_naming(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(flowd__dlq_default("ai.flowx.dev.engine.receive.scoring.v1", out, sizeof(out)),
                     0);
    assert_string_equal(out, "ai.flowx.dev.connector.dlq.v1");
    assert_int_equal(flowd__dlq_default("acme.engine.receive.x", out, sizeof(out)), 0);
    assert_string_equal(out, "acme.connector.dlq");
    assert_int_equal(flowd__dlq_default("replies", out, sizeof(out)), 0);
    assert_string_equal(out, "connector.dlq");
    assert_int_equal(flowd__dlq_default("ai.flowx.dev.engine.receive.scoring.v1", out, 8),
                     FLOWD_ERR_TOOBIG);
    flowd_conf_t *conf = flowd_conf_new();
    flowd_conf_set(conf, "reply.topic", "ai.flowx.prod.engine.receive.a.v2", NULL, 0);
    assert_int_equal(flowd_conf_get(conf, "dlq.topic", out, sizeof(out)), FLOWD_OK);
    assert_string_equal(out, "ai.flowx.prod.connector.dlq.v2");
    flowd_conf_destroy(conf);
}

static flowd__item_t *item_at(int64_t offset)
{
    flowd__item_t *item = flowd__calloc(1, sizeof(*item));
    assert_non_null(item);
    item->offset = offset;
    return item;
}

static void tracker_commits_only_the_acknowledged_prefix(void **state)
{
    (void)state;
    struct flowd__part *part = flowd__part_new("t", 0);
    flowd__item_t *items[200];
    for (int i = 0; i < 200; i++) { /* more than the initial ring: exercises growth */
        items[i] = item_at(1000 + i);
        assert_int_equal(flowd__part_push(part, items[i]), FLOWD_OK);
    }
    assert_int_equal(flowd__part_advance(part), 0);
    assert_int_equal(part->commit_next, -1);
    items[1]->acked = 1;
    items[2]->acked = 1;
    assert_int_equal(flowd__part_advance(part), 0); /* 1000 still in flight */
    assert_int_equal(part->commit_next, -1);
    items[0]->acked = 1;
    assert_int_equal(flowd__part_advance(part), 3);
    assert_int_equal(part->commit_next, 1003); /* the next offset to read */
    for (int i = 3; i < 150; i++)
        items[i]->acked = 1;
    assert_int_equal(flowd__part_advance(part), 147);
    assert_int_equal(part->commit_next, 1150);
    assert_int_equal(part->n, 50);
    flowd__part_free(part); /* frees the 50 left (ASan checks) */
}

static void worker_choice_is_stable_and_spread(void **state)
{
    (void)state;
    int count[4] = {0};
    char key[16];
    for (int i = 0; i < 4000; i++) {
        snprintf(key, sizeof(key), "%d", 1024 * i);
        unsigned w = flowd__worker_for(key, strlen(key), 4);
        assert_int_equal(w, flowd__worker_for(key, strlen(key), 4));
        count[w]++;
    }
    for (int i = 0; i < 4; i++)
        assert_true(count[i] > 700);
}

/* ---- out-of-memory paths: fail the Nth allocation, for every N ------------------------ */

static long fail_at, calls;

static void *failing_malloc(size_t n)
{
    return ++calls == fail_at ? NULL : malloc(n);
}

static void *failing_realloc(void *p, size_t n)
{
    return ++calls == fail_at ? NULL : realloc(p, n);
}

static int build_conf_and_error(void)
{
    char errstr[FLOWD_ERRSTR_SIZE];
    int rc = FLOWD_OK;
    flowd_conf_t *conf = flowd_conf_new();
    if (!conf)
        return FLOWD_ERR_NOMEM;
    if ((rc = flowd_conf_set(conf, "reply.topic", "r", errstr, sizeof(errstr))) ||
        (rc = flowd_conf_set(conf, "kafka.linger.ms", "5", errstr, sizeof(errstr))) ||
        (rc = flowd_conf_add_handler(conf, "t", NULL, noop_handler, NULL, errstr, sizeof(errstr))))
        goto out;
    flowd_error_t *e = flowd_error_fatal("C", "m %d", 1);
    if (strcmp(flowd_error_code(e), "NOMEM") == 0)
        rc = FLOWD_ERR_NOMEM;
    flowd_error_destroy(e);
    struct flowd__idset *set = flowd__idset_new(8);
    if (!set || flowd__idset_add(set, "x") != 1)
        rc = FLOWD_ERR_NOMEM;
    flowd__idset_free(set);
out:
    flowd_conf_destroy(conf);
    return rc;
}

static void every_allocation_failure_returns_nomem_without_leaking(void **state)
{
    (void)state;
    assert_int_equal(flowd_replace_allocator(NULL, realloc, free), FLOWD_ERR_INVAL);
    assert_int_equal(flowd_replace_allocator(failing_malloc, failing_realloc, free), FLOWD_OK);
    int failures = 0;
    for (fail_at = 1;; fail_at++) {
        calls = 0;
        int rc = build_conf_and_error();
        if (rc == FLOWD_OK && calls < fail_at)
            break; /* no allocation failed: all paths covered */
        assert_int_equal(rc, FLOWD_ERR_NOMEM);
        failures++;
    }
    flowd_replace_allocator(malloc, realloc, free);
    assert_true(failures > 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conf_defaults_and_set_round_trip),
        cmocka_unit_test(conf_rejects_bad_values_naming_the_property),
        cmocka_unit_test(conf_handlers_unique_per_topic),
        cmocka_unit_test(conn_new_refuses_incomplete_conf_and_leaves_it_to_caller),
        cmocka_unit_test(bootstrap_file_missing_times_out_with_its_name),
        cmocka_unit_test(errors_carry_kind_code_and_message),
        cmocka_unit_test(error_codes_match_the_daemon),
        cmocka_unit_test(json_validator_accepts_json_and_refuses_the_rest),
        cmocka_unit_test(error_reply_is_valid_json_with_escaped_text),
        cmocka_unit_test(idset_drops_duplicates_and_evicts_oldest),
        cmocka_unit_test(backoff_doubles_caps_and_jitters_within_bounds),
        cmocka_unit_test(dlq_default_follows_reply_topic_naming),
        cmocka_unit_test(tracker_commits_only_the_acknowledged_prefix),
        cmocka_unit_test(worker_choice_is_stable_and_spread),
        cmocka_unit_test(every_allocation_failure_returns_nomem_without_leaking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
