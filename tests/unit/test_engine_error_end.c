/* test_engine_error_end.c - error paths: an error reply from a connector is routed to an error
 * end event, which ends the instance FAILED with the rendered reason. */
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

#define UUID  "5f0c1c2e-1111-4222-8333-444455556666"
#define T0    1700000000000LL
#define REPLY "ai.flowx.dev.engine.receive.scoring.v1"

static const struct engine_env env = {"ai.flowx.dev.", ".v1"};

static const char def_json[] =
    "{\"key\":\"score\",\"nodes\":["
    "{\"id\":\"start\",\"type\":\"start\",\"next\":\"ask\"},"
    "{\"id\":\"ask\",\"type\":\"send\",\"actions\":[{\"name\":\"ask\",\"type\":\"kafka_send\","
    "\"topic\":\"${prefix}connector.scoring.in${suffix}\"}],\"next\":\"wait\"},"
    "{\"id\":\"wait\",\"type\":\"receive\",\"dataStreamTopics\":[{\"topicName\":\"" REPLY "\","
    "\"keyName\":\"score\"}],\"next\":\"check\"},"
    "{\"id\":\"check\",\"type\":\"exclusive_gateway\",\"routes\":[{\"condition\":"
    "\"data.score.errorMessage != null\",\"next\":\"refused\"}],\"default\":\"ok\"},"
    "{\"id\":\"refused\",\"type\":\"error_end\","
    "\"error\":\"scoring failed for ${processInstanceId}: ${data.score.errorMessage}\"},"
    "{\"id\":\"ok\",\"type\":\"end\"}]}";

static struct engine_instance *
run_with(struct engine_def *def, const char *reply, struct engine_effects *fx)
{
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_instance *inst = NULL;
    assert_int_equal(engine_start(def, 42, UUID, NULL, T0, &inst, fx, err, sizeof(err)), 0);
    engine_effects_clear(fx);
    cJSON *b = cJSON_Parse(reply);
    struct engine_event ev = {REPLY, "wait", NULL, b};
    assert_int_equal(engine_deliver(def, inst, &ev, T0 + 5, fx, err, sizeof(err)), 0);
    cJSON_Delete(b);
    return inst;
}

static void error_reply_ends_the_instance_failed_with_the_reason(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = engine_def_parse(def_json, strlen(def_json), &env, err, sizeof(err));
    assert_non_null(def);
    engine_def_set_version(def, 1, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    struct engine_effects fx = ENGINE_EFFECTS_INIT;

    struct engine_instance *inst = run_with(def, "{\"errorMessage\":\"legacy down\"}", &fx);
    assert_int_equal(inst->state, ENGINE_FAILED);
    assert_string_equal(inst->error, "scoring failed for 42: legacy down");
    assert_string_equal(fx.hist[fx.nhist - 1].state, "FAILED");
    assert_string_equal(fx.hist[fx.nhist - 1].node_id, "refused");
    assert_int_equal(fx.ended, 1);
    engine_effects_clear(&fx);
    engine_instance_free(inst);

    inst = run_with(def, "{\"score\":700}", &fx);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    assert_null(inst->error);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void error_end_with_a_bad_reason_is_refused(void **state)
{
    (void)state;
    const char *bad = "{\"key\":\"e\",\"nodes\":[{\"id\":\"start\",\"type\":\"start\",\"next\":"
                      "\"g\"},{\"id\":\"g\",\"type\":\"exclusive_gateway\",\"routes\":[{"
                      "\"condition\":\"x == 1\",\"next\":\"boom\"}],\"default\":\"e\"},"
                      "{\"id\":\"boom\",\"type\":\"error_end\",\"error\":{}},"
                      "{\"id\":\"e\",\"type\":\"end\"}]}";
    char err[FLOWD_ERRSTR_SIZE];
    assert_null(engine_def_parse(bad, strlen(bad), &env, err, sizeof(err)));
    assert_non_null(strstr(err, "node 'boom'"));
    assert_non_null(strstr(err, "error"));
}

/* The receive node's errorNext routes an error reply without a gateway. */
static const char error_next_json[] =
    "{\"key\":\"score2\",\"nodes\":["
    "{\"id\":\"start\",\"type\":\"start\",\"next\":\"ask\"},"
    "{\"id\":\"ask\",\"type\":\"send\",\"actions\":[{\"name\":\"ask\",\"type\":\"kafka_send\","
    "\"topic\":\"${prefix}connector.scoring.in${suffix}\"}],\"next\":\"wait\"},"
    "{\"id\":\"wait\",\"type\":\"receive\",\"errorNext\":\"refused\",\"dataStreamTopics\":"
    "[{\"topicName\":\"" REPLY "\",\"keyName\":\"score\"}],\"next\":\"ok\"},"
    "{\"id\":\"refused\",\"type\":\"error_end\",\"error\":\"${data.score.errorMessage}\"},"
    "{\"id\":\"ok\",\"type\":\"end\"}]}";

static void error_next_routes_an_error_reply_without_a_gateway(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def =
        engine_def_parse(error_next_json, strlen(error_next_json), &env, err, sizeof(err));
    if (!def)
        fail_msg("refused: %s", err);
    engine_def_set_version(def, 1, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = run_with(def, "{\"errorMessage\":\"no such client\"}", &fx);
    assert_int_equal(inst->state, ENGINE_FAILED);
    assert_string_equal(inst->error, "no such client");
    int seen = 0;
    for (size_t i = 0; i < fx.nhist; i++)
        seen += strcmp(fx.hist[i].state, "ERROR_REPLY") == 0;
    assert_int_equal(seen, 1);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    /* a null errorMessage is not an error */
    inst = run_with(def, "{\"errorMessage\":null,\"score\":1}", &fx);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(error_reply_ends_the_instance_failed_with_the_reason),
        cmocka_unit_test(error_end_with_a_bad_reason_is_refused),
        cmocka_unit_test(error_next_routes_an_error_reply_without_a_gateway),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
