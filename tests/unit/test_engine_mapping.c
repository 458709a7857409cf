/* test_engine_mapping.c - data mapping: a task's set_data actions write instance data from
 * templates; a receive node's mapping copies reply fields into instance data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/json.h"
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UUID  "5f0c1c2e-1111-4222-8333-444455556666"
#define T0    1700000000000LL
#define REPLY "ai.flowx.dev.engine.receive.m.v1"

static const struct engine_env env = {"ai.flowx.dev.", ".v1"};

static const char def_json[] =
    "{\"key\":\"map\",\"nodes\":["
    "{\"id\":\"start\",\"type\":\"start\",\"next\":\"prepare\"},"
    "{\"id\":\"prepare\",\"type\":\"task\",\"actions\":["
    "{\"name\":\"amount\",\"type\":\"set_data\",\"path\":\"request.amount\","
    "\"value\":\"${data.amount}\"},"
    "{\"name\":\"greet\",\"type\":\"set_data\",\"path\":\"greeting\",\"value\":\"\\\"hello "
    "${data.name}\\\"\"}],\"next\":\"ask\"},"
    "{\"id\":\"ask\",\"type\":\"send\",\"actions\":[{\"name\":\"ask\",\"type\":\"kafka_send\","
    "\"topic\":\"${prefix}connector.m.in${suffix}\",\"message\":\"{\\\"a\\\": "
    "${data.request.amount}}\"}],\"next\":\"wait\"},"
    "{\"id\":\"wait\",\"type\":\"receive\",\"mapping\":{\"data.score\":\"result.score\","
    "\"approved\":\"result.ok\",\"missing\":\"result.nothing\"},"
    "\"dataStreamTopics\":[{\"topicName\":\"" REPLY "\",\"keyName\":\"raw\"}],\"next\":\"end\"},"
    "{\"id\":\"end\",\"type\":\"end\"}]}";

static void set_data_and_reply_mapping_fill_the_instance_data(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = engine_def_parse(def_json, strlen(def_json), &env, err, sizeof(err));
    if (!def)
        fail_msg("refused: %s", err);
    engine_def_set_version(def, 1, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = NULL;
    cJSON *data = cJSON_Parse("{\"amount\": 250, \"name\": \"Ada \\\"Lovelace\\\"\"}");
    assert_int_equal(engine_start(def, 1, UUID, data, T0, &inst, &fx, err, sizeof(err)), 0);
    assert_int_equal(json_path(inst->data, "request.amount")->valueint, 250);
    assert_string_equal(json_path(inst->data, "greeting")->valuestring, "hello Ada \"Lovelace\"");
    assert_string_equal(fx.msgs[0].value, "{\"a\": 250}");
    engine_effects_clear(&fx);

    cJSON *b = cJSON_Parse("{\"result\": {\"score\": 700, \"ok\": true}}");
    struct engine_event ev = {REPLY, "wait", NULL, b};
    assert_int_equal(engine_deliver(def, inst, &ev, T0 + 5, &fx, err, sizeof(err)), 0);
    cJSON_Delete(b);
    assert_int_equal(json_path(inst->data, "score")->valueint, 700);
    assert_true(cJSON_IsTrue(json_path(inst->data, "approved")));
    assert_null(json_path(inst->data, "missing"));
    assert_int_equal(json_path(inst->data, "raw.result.score")->valueint, 700);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void bad_set_data_and_mapping_are_refused(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    const char *bad_path =
        "{\"key\":\"m\",\"nodes\":[{\"id\":\"start\",\"type\":\"start\",\"next\":\"t\"},"
        "{\"id\":\"t\",\"type\":\"task\",\"actions\":[{\"name\":\"s\",\"type\":\"set_data\","
        "\"path\":\"a..b\",\"value\":\"1\"}],\"next\":\"e\"},{\"id\":\"e\",\"type\":\"end\"}]}";
    assert_null(engine_def_parse(bad_path, strlen(bad_path), &env, err, sizeof(err)));
    assert_non_null(strstr(err, "node 't'"));
    assert_non_null(strstr(err, "path"));
    const char *bad_value =
        "{\"key\":\"m\",\"nodes\":[{\"id\":\"start\",\"type\":\"start\",\"next\":\"t\"},"
        "{\"id\":\"t\",\"type\":\"task\",\"actions\":[{\"name\":\"s\",\"type\":\"set_data\","
        "\"path\":\"a\",\"value\":\"{not "
        "json\"}],\"next\":\"e\"},{\"id\":\"e\",\"type\":\"end\"}]}";
    assert_null(engine_def_parse(bad_value, strlen(bad_value), &env, err, sizeof(err)));
    assert_non_null(strstr(err, "action 's'"));
    const char *bad_map =
        "{\"key\":\"m\",\"nodes\":[{\"id\":\"start\",\"type\":\"start\",\"next\":\"w\"},"
        "{\"id\":\"w\",\"type\":\"receive\",\"mapping\":{\"x\":3},\"dataStreamTopics\":"
        "[{\"topicName\":\"" REPLY "\",\"keyName\":\"k\"}],\"next\":\"e\"},"
        "{\"id\":\"e\",\"type\":\"end\"}]}";
    assert_null(engine_def_parse(bad_map, strlen(bad_map), &env, err, sizeof(err)));
    assert_non_null(strstr(err, "node 'w'"));
    assert_non_null(strstr(err, "mapping"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(set_data_and_reply_mapping_fill_the_instance_data),
        cmocka_unit_test(bad_set_data_and_mapping_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
