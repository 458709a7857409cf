/* test_engine_timeout.c - receive timeouts: re-sends with the same messageId and a doubling
 * wait, the timeout path, incidents and their retry, and what survives the instance JSON. */
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

/* wait_score: 1 s timeout, 2 re-sends, then %s */
static char *def_json(const char *extra)
{
    char *s = malloc(4096);
    snprintf(s, 4096,
             "{\"key\":\"t\",\"nodes\":["
             "{\"id\":\"start\",\"type\":\"start\",\"next\":\"ask\"},"
             "{\"id\":\"ask\",\"type\":\"send\",\"actions\":[{\"name\":\"ask\",\"type\":"
             "\"kafka_send\",\"topic\":\"${prefix}connector.scoring.in${suffix}\"}],"
             "\"next\":\"wait\"},"
             "{\"id\":\"wait\",\"type\":\"receive\",\"responseTimeout\":\"PT1S\"%s,"
             "\"dataStreamTopics\":[{\"topicName\":\"" REPLY "\",\"keyName\":\"score\"}],"
             "\"next\":\"done\"},"
             "%s{\"id\":\"done\",\"type\":\"end\"}]}",
             extra, strstr(extra, "late") ? "{\"id\":\"late\",\"type\":\"end\"}," : "");
    return s;
}

static struct engine_def *parse(const char *extra, char *err, size_t errsize)
{
    char *json = def_json(extra);
    struct engine_def *def = engine_def_parse(json, strlen(json), &env, err, errsize);
    free(json);
    if (def)
        engine_def_set_version(def, 1, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    return def;
}

static const char *last_state(const struct engine_effects *fx)
{
    return fx->nhist ? fx->hist[fx->nhist - 1].state : "";
}

static void test_resends_with_same_message_id_then_takes_timeout_path(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def =
        parse(",\"resendAttempts\":2,\"timeoutNext\":\"late\"", err, sizeof(err));
    assert_non_null(def);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = NULL;
    assert_int_equal(engine_start(def, 1, UUID, NULL, T0, &inst, &fx, err, sizeof(err)), 0);
    char *mid = strdup(fx.msgs[0].message_id);
    assert_int_equal(engine_instance_next_due(inst), T0 + 1000);
    engine_effects_clear(&fx);

    /* not yet due: nothing happens */
    assert_int_equal(engine_fire_due(def, inst, T0 + 999, &fx, err, sizeof(err)), 0);
    assert_int_equal(fx.nhist, 0);
    assert_int_equal(fx.nresend, 0);

    /* first expiry: re-send 1, next wait 2 s */
    assert_int_equal(engine_fire_due(def, inst, T0 + 1000, &fx, err, sizeof(err)), 0);
    assert_int_equal(fx.nresend, 1);
    assert_string_equal(fx.resend[0], mid);
    assert_string_equal(last_state(&fx), "MESSAGE_RESENT");
    assert_int_equal(engine_instance_next_due(inst), T0 + 1000 + 2000);
    engine_effects_clear(&fx);

    /* second expiry: re-send 2, next wait 4 s */
    assert_int_equal(engine_fire_due(def, inst, T0 + 3000, &fx, err, sizeof(err)), 0);
    assert_int_equal(fx.nresend, 1);
    assert_string_equal(fx.resend[0], mid);
    assert_int_equal(engine_instance_next_due(inst), T0 + 3000 + 4000);
    engine_effects_clear(&fx);

    /* third expiry: no re-sends left, the timeout path ends the instance at 'late' */
    assert_int_equal(engine_fire_due(def, inst, T0 + 7000, &fx, err, sizeof(err)), 0);
    assert_int_equal(fx.nresend, 0);
    assert_string_equal(fx.hist[0].state, "MESSAGE_RESPONSE_TIMED_OUT");
    assert_string_equal(last_state(&fx), "FINISHED");
    assert_string_equal(fx.hist[fx.nhist - 1].node_id, "late");
    assert_int_equal(inst->state, ENGINE_FINISHED);
    assert_int_equal(engine_instance_next_due(inst), 0);
    engine_effects_clear(&fx);

    /* the reply that comes after the timeout is refused */
    cJSON *body = cJSON_Parse("{\"approved\":true}");
    struct engine_event ev = {REPLY, "wait", "ask", body};
    assert_int_equal(engine_deliver(def, inst, &ev, T0 + 8000, &fx, err, sizeof(err)),
                     FLOWD_ERR_STATE);
    cJSON_Delete(body);
    engine_effects_clear(&fx);
    free(mid);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void test_incident_without_timeout_path_accepts_reply_and_retries(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = parse("", err, sizeof(err));
    assert_non_null(def);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = NULL;
    assert_int_equal(engine_start(def, 1, UUID, NULL, T0, &inst, &fx, err, sizeof(err)), 0);
    char *mid = strdup(fx.msgs[0].message_id);
    engine_effects_clear(&fx);

    /* no re-sends, no timeout path: an incident, still STARTED, no longer due */
    assert_int_equal(engine_fire_due(def, inst, T0 + 1000, &fx, err, sizeof(err)), 0);
    assert_string_equal(last_state(&fx), "INCIDENT");
    assert_int_equal(inst->state, ENGINE_STARTED);
    assert_int_equal(inst->tokens[0].state, ENGINE_TOKEN_INCIDENT);
    assert_int_equal(engine_instance_next_due(inst), 0);
    engine_effects_clear(&fx);

    /* the incident survives the store round trip */
    char *json = engine_instance_to_json(inst);
    struct engine_instance *copy = engine_instance_from_json(json, strlen(json), err, sizeof(err));
    assert_non_null(copy);
    assert_int_equal(copy->tokens[0].state, ENGINE_TOKEN_INCIDENT);
    free(json);

    /* retry: the request goes again with its messageId, the wait is armed again */
    assert_int_equal(engine_retry_incident(def, copy, T0 + 5000, &fx, err, sizeof(err)), 0);
    assert_int_equal(fx.nresend, 1);
    assert_string_equal(fx.resend[0], mid);
    assert_int_equal(copy->tokens[0].state, ENGINE_TOKEN_WAITING_MESSAGE);
    assert_int_equal(engine_instance_next_due(copy), T0 + 6000);
    engine_effects_clear(&fx);
    assert_int_equal(engine_retry_incident(def, copy, T0 + 5001, &fx, err, sizeof(err)),
                     FLOWD_ERR_STATE);
    engine_effects_clear(&fx);

    /* a reply to the incident itself is accepted: it resolves it */
    cJSON *body = cJSON_Parse("{\"approved\":true}");
    struct engine_event ev = {REPLY, NULL, NULL, body};
    assert_int_equal(engine_deliver(def, inst, &ev, T0 + 9000, &fx, err, sizeof(err)), 0);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    cJSON_Delete(body);
    engine_effects_clear(&fx);
    free(mid);
    engine_instance_free(copy);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void test_due_time_round_trips_and_reply_disarms(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = parse(",\"resendAttempts\":1", err, sizeof(err));
    assert_non_null(def);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = NULL;
    assert_int_equal(engine_start(def, 1, UUID, NULL, T0, &inst, &fx, err, sizeof(err)), 0);
    engine_effects_clear(&fx);
    assert_int_equal(engine_fire_due(def, inst, T0 + 1000, &fx, err, sizeof(err)), 0);
    engine_effects_clear(&fx);
    char *json = engine_instance_to_json(inst);
    struct engine_instance *copy = engine_instance_from_json(json, strlen(json), err, sizeof(err));
    free(json);
    assert_non_null(copy);
    assert_int_equal(copy->tokens[0].due_ms, T0 + 3000);
    assert_int_equal(copy->tokens[0].attempt, 1);
    cJSON *body = cJSON_Parse("{}");
    struct engine_event ev = {REPLY, "wait", NULL, body};
    assert_int_equal(engine_deliver(def, copy, &ev, T0 + 1500, &fx, err, sizeof(err)), 0);
    assert_int_equal(engine_instance_next_due(copy), 0);
    cJSON_Delete(body);
    engine_effects_clear(&fx);
    engine_instance_free(copy);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void test_validation_of_timeout_fields(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    char *json = def_json(",\"timeoutNext\":\"nowhere\"");
    assert_null(engine_def_parse(json, strlen(json), &env, err, sizeof(err)));
    assert_non_null(strstr(err, "wait"));
    assert_non_null(strstr(err, "nowhere"));
    free(json);
    json = def_json(",\"resendAttempts\":-1");
    assert_null(engine_def_parse(json, strlen(json), &env, err, sizeof(err)));
    assert_non_null(strstr(err, "resendAttempts"));
    free(json);
    const char *no_timeout =
        "{\"key\":\"t\",\"nodes\":[{\"id\":\"start\",\"type\":\"start\",\"next\":\"w\"},"
        "{\"id\":\"w\",\"type\":\"receive\",\"timeoutNext\":\"e\",\"dataStreamTopics\":"
        "[{\"topicName\":\"" REPLY "\",\"keyName\":\"k\"}],\"next\":\"e\"},"
        "{\"id\":\"e\",\"type\":\"end\"}]}";
    assert_null(engine_def_parse(no_timeout, strlen(no_timeout), &env, err, sizeof(err)));
    assert_non_null(strstr(err, "node 'w'"));
    assert_non_null(strstr(err, "responseTimeout"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resends_with_same_message_id_then_takes_timeout_path),
        cmocka_unit_test(test_incident_without_timeout_path_accepts_reply_and_retries),
        cmocka_unit_test(test_due_time_round_trips_and_reply_disarms),
        cmocka_unit_test(test_validation_of_timeout_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
