/* test_engine_admin.c - operator actions on instances: cancel (TERMINATED with a history row) and
 * retry (a FAILED instance restarts at the node that failed, optionally with changed data; a
 * STARTED one without incidents has nothing to retry). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/err.h"
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UUID "5f0c1c2e-1111-4222-8333-444455556666"
#define T0   1700000000000LL

static const struct engine_env env = {"ai.flowx.dev.", ".v1"};

/* x sends to ${data.topic}: a topic that is not a Kafka name fails the instance at x */
static const char def_json[] =
    "{\"key\":\"b\",\"nodes\":[{\"id\":\"s\",\"type\":\"start\",\"next\":\"x\"},"
    "{\"id\":\"x\",\"type\":\"send\",\"next\":\"r\",\"actions\":["
    "{\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"${data.topic}\"}]},"
    "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"e\",\"dataStreamTopics\":["
    "{\"topicName\":\"reply\",\"keyName\":\"r\"}]},{\"id\":\"e\",\"type\":\"end\"}]}";

static struct engine_def *parse(void)
{
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = engine_def_parse(def_json, strlen(def_json), &env, err, sizeof(err));
    if (!def)
        fail_msg("parse: %s", err);
    engine_def_set_version(def, 1, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    return def;
}

static struct engine_instance *start(const struct engine_def *def, const char *data)
{
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_instance *inst = NULL;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    assert_int_equal(
        engine_start(def, 7, UUID, cJSON_Parse(data), T0, &inst, &fx, err, sizeof(err)), 0);
    engine_effects_clear(&fx);
    return inst;
}

static void test_cancel_terminates_a_waiting_instance_with_a_history_row(void **state)
{
    (void)state;
    struct engine_def *def = parse();
    struct engine_instance *inst = start(def, "{\"topic\":\"good\"}");
    assert_int_equal(inst->state, ENGINE_STARTED);
    uint32_t seq = inst->seq;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE];
    assert_int_equal(engine_cancel(inst, "by test", T0 + 5, &fx, err, sizeof(err)), 0);
    assert_int_equal(inst->state, ENGINE_TERMINATED);
    assert_int_equal(inst->ntokens, 0);
    assert_int_equal(inst->ended_ms, T0 + 5);
    assert_true(fx.ended);
    assert_int_equal(fx.nhist, 1);
    assert_int_equal(fx.hist[0].seq, seq + 1);
    assert_string_equal(fx.hist[0].state, "TERMINATED");
    assert_string_equal(fx.hist[0].node_id, "r");
    assert_string_equal(fx.hist[0].detail, "by test");
    assert_int_equal(fx.nmsgs, 0);
    engine_effects_clear(&fx);

    /* a second cancel is refused and changes nothing */
    assert_int_equal(engine_cancel(inst, NULL, T0 + 6, &fx, err, sizeof(err)), FLOWD_ERR_STATE);
    assert_non_null(strstr(err, "already TERMINATED"));
    assert_int_equal(fx.nhist, 0);
    assert_int_equal(inst->ended_ms, T0 + 5);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void test_retry_restarts_a_failed_instance_at_the_failed_node_with_patched_data(void **state)
{
    (void)state;
    struct engine_def *def = parse();
    struct engine_instance *inst = start(def, "{\"topic\":\"bad topic!\",\"keep\":1}");
    assert_int_equal(inst->state, ENGINE_FAILED);
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_effects fx = ENGINE_EFFECTS_INIT;

    /* the same data fails the same way again: one RETRIED and one more FAILED row */
    assert_int_equal(engine_retry(def, inst, "x", NULL, T0 + 1, &fx, err, sizeof(err)), 0);
    assert_int_equal(inst->state, ENGINE_FAILED);
    assert_string_equal(fx.hist[0].state, "RETRIED");
    assert_string_equal(fx.hist[fx.nhist - 1].state, "FAILED");
    engine_effects_clear(&fx);

    cJSON *patch = cJSON_Parse("{\"topic\":\"good\"}");
    assert_int_equal(engine_retry(def, inst, "x", patch, T0 + 2, &fx, err, sizeof(err)), 0);
    cJSON_Delete(patch);
    assert_int_equal(inst->state, ENGINE_STARTED);
    assert_null(inst->error);
    assert_int_equal(inst->ended_ms, 0);
    assert_string_equal(cJSON_GetObjectItem(inst->data, "topic")->valuestring, "good");
    assert_int_equal(cJSON_GetObjectItem(inst->data, "keep")->valueint, 1);
    assert_int_equal(fx.nmsgs, 1);
    assert_string_equal(fx.msgs[0].topic, "good");
    assert_int_equal(inst->ntokens, 1);
    assert_string_equal(inst->tokens[0].node_id, "r");
    assert_string_equal(fx.hist[fx.nhist - 1].state, "WAITING_MESSAGE");
    engine_effects_clear(&fx);

    /* now it waits without an incident: nothing to retry */
    assert_int_equal(engine_retry(def, inst, "x", NULL, T0 + 3, &fx, err, sizeof(err)),
                     FLOWD_ERR_STATE);
    assert_non_null(strstr(err, "no incident"));
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void test_retry_refuses_ended_instances_unknown_nodes_and_bad_patches(void **state)
{
    (void)state;
    struct engine_def *def = parse();
    struct engine_instance *inst = start(def, "{\"topic\":\"bad topic!\"}");
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    assert_int_equal(engine_retry(def, inst, "nope", NULL, T0, &fx, err, sizeof(err)),
                     FLOWD_ERR_INVAL);
    assert_non_null(strstr(err, "'nope'"));
    cJSON *arr = cJSON_CreateArray();
    assert_int_equal(engine_retry(def, inst, "x", arr, T0, &fx, err, sizeof(err)), FLOWD_ERR_INVAL);
    cJSON_Delete(arr);
    assert_int_equal(inst->state, ENGINE_FAILED);
    assert_int_equal(fx.nhist, 0);

    struct engine_instance *ok = start(def, "{\"topic\":\"good\"}");
    assert_int_equal(engine_cancel(ok, NULL, T0, &fx, err, sizeof(err)), 0);
    engine_effects_clear(&fx);
    assert_int_equal(engine_retry(def, ok, "x", NULL, T0, &fx, err, sizeof(err)), FLOWD_ERR_STATE);
    assert_non_null(strstr(err, "TERMINATED"));
    engine_effects_clear(&fx);
    engine_instance_free(ok);
    engine_instance_free(inst);
    engine_def_free(def);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_terminates_a_waiting_instance_with_a_history_row),
        cmocka_unit_test(
            test_retry_restarts_a_failed_instance_at_the_failed_node_with_patched_data),
        cmocka_unit_test(test_retry_refuses_ended_instances_unknown_nodes_and_bad_patches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
