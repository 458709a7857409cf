/* test_engine_timer.c - intermediate timer events: a duration or a date, fired by
 * engine_fire_due(); a reply that comes while the instance waits on a timer is kept and taken
 * after it fires. */
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
#define T0    1700000000000LL /* 2023-11-14T22:13:20Z */
#define REPLY "ai.flowx.dev.engine.receive.t.v1"

static const struct engine_env env = {"ai.flowx.dev.", ".v1"};

/* start -> ask -> pause (timer %s) -> wait -> end */
static struct engine_def *parse(const char *timer, char *err, size_t errsize)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"key\":\"t\",\"nodes\":["
             "{\"id\":\"start\",\"type\":\"start\",\"next\":\"ask\"},"
             "{\"id\":\"ask\",\"type\":\"send\",\"actions\":[{\"name\":\"a\",\"type\":"
             "\"kafka_send\",\"topic\":\"${prefix}connector.t.in${suffix}\"}],\"next\":\"pause\"},"
             "{\"id\":\"pause\",\"type\":\"timer\",%s,\"next\":\"wait\"},"
             "{\"id\":\"wait\",\"type\":\"receive\",\"dataStreamTopics\":[{\"topicName\":"
             "\"" REPLY "\",\"keyName\":\"r\"}],\"next\":\"end\"},"
             "{\"id\":\"end\",\"type\":\"end\"}]}",
             timer);
    struct engine_def *def = engine_def_parse(json, strlen(json), &env, err, errsize);
    if (def)
        engine_def_set_version(def, 1, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    return def;
}

static void duration_timer_waits_then_fires(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = parse("\"duration\":\"PT1S\"", err, sizeof(err));
    assert_non_null(def);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = NULL;
    assert_int_equal(engine_start(def, 1, UUID, NULL, T0, &inst, &fx, err, sizeof(err)), 0);
    assert_int_equal(inst->tokens[0].state, ENGINE_TOKEN_WAITING_TIMER);
    assert_string_equal(engine_token_state_name(inst->tokens[0].state), "WAITING_TIMER_EVENT");
    assert_int_equal(engine_instance_next_due(inst), T0 + 1000);
    engine_effects_clear(&fx);
    assert_int_equal(engine_fire_due(def, inst, T0 + 999, &fx, err, sizeof(err)), 0);
    assert_int_equal(fx.nhist, 0);
    assert_int_equal(engine_fire_due(def, inst, T0 + 1000, &fx, err, sizeof(err)), 0);
    assert_string_equal(fx.hist[0].state, "TIMER_FIRED");
    assert_string_equal(inst->tokens[0].node_id, "wait");
    assert_int_equal(inst->tokens[0].state, ENGINE_TOKEN_WAITING_MESSAGE);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void reply_during_the_timer_is_taken_after_it_fires(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = parse("\"duration\":\"PT5S\"", err, sizeof(err));
    assert_non_null(def);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = NULL;
    assert_int_equal(engine_start(def, 1, UUID, NULL, T0, &inst, &fx, err, sizeof(err)), 0);
    char *mid = strdup(fx.msgs[0].message_id);
    engine_effects_clear(&fx);
    cJSON *body = cJSON_Parse("{\"ok\":true}");
    struct engine_event ev = {REPLY, "wait", "a", body};
    assert_int_equal(engine_deliver(def, inst, &ev, T0 + 100, &fx, err, sizeof(err)),
                     FLOWD_ERR_NOWAIT);
    assert_int_equal(engine_park(def, inst, &ev, mid, "{\"ok\":true}", NULL, T0 + 100, T0 + 60000,
                                 &fx, err, sizeof(err)),
                     0);
    cJSON_Delete(body);
    engine_effects_clear(&fx);
    /* the timer's due time comes first, then the kept reply's expiry */
    assert_int_equal(engine_instance_next_due(inst), T0 + 5000);
    assert_int_equal(engine_fire_due(def, inst, T0 + 5000, &fx, err, sizeof(err)), 0);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    engine_effects_clear(&fx);
    free(mid);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void date_timer_in_the_past_fires_at_once(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = parse("\"date\":\"2020-01-01T00:00:00Z\"", err, sizeof(err));
    assert_non_null(def);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = NULL;
    assert_int_equal(engine_start(def, 1, UUID, NULL, T0, &inst, &fx, err, sizeof(err)), 0);
    assert_string_equal(inst->tokens[0].node_id, "wait");
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
    def = parse("\"date\":\"2099-01-01T00:00:00Z\"", err, sizeof(err));
    assert_non_null(def);
    assert_int_equal(engine_start(def, 1, UUID, NULL, T0, &inst, &fx, err, sizeof(err)), 0);
    assert_int_equal(engine_instance_next_due(inst), 4070908800000LL);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void timer_needs_one_of_duration_and_date(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    assert_null(parse("\"x\":1", err, sizeof(err)));
    assert_non_null(strstr(err, "node 'pause'"));
    assert_null(parse("\"duration\":\"PT1S\",\"date\":\"2020-01-01T00:00:00Z\"", err, sizeof(err)));
    assert_null(parse("\"date\":\"tomorrow\"", err, sizeof(err)));
    assert_non_null(strstr(err, "tomorrow"));
    assert_null(parse("\"duration\":\"10s\"", err, sizeof(err)));
    assert_non_null(strstr(err, "duration"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(duration_timer_waits_then_fires),
        cmocka_unit_test(reply_during_the_timer_is_taken_after_it_fires),
        cmocka_unit_test(date_timer_in_the_past_fires_at_once),
        cmocka_unit_test(timer_needs_one_of_duration_and_date),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
