/* test_engine_parallel.c - parallel gateway: a fork sends two requests at once, each branch waits
 * for its own reply, and the join goes on only when both arrived, in either order. */
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

#define UUID "5f0c1c2e-1111-4222-8333-444455556666"
#define T0   1700000000000LL
#define RA   "ai.flowx.dev.engine.receive.a.v1"
#define RB   "ai.flowx.dev.engine.receive.b.v1"

static const struct engine_env env = {"ai.flowx.dev.", ".v1"};

static const char parallel[] =
    "{\"key\":\"par\",\"nodes\":["
    "{\"id\":\"start\",\"type\":\"start\",\"next\":\"fork\"},"
    "{\"id\":\"fork\",\"type\":\"parallel_gateway\",\"next\":[\"ask_a\",\"ask_b\"]},"
    "{\"id\":\"ask_a\",\"type\":\"send\",\"actions\":[{\"name\":\"a\",\"type\":\"kafka_send\","
    "\"topic\":\"${prefix}connector.a.in${suffix}\"}],\"next\":\"wait_a\"},"
    "{\"id\":\"wait_a\",\"type\":\"receive\",\"dataStreamTopics\":[{\"topicName\":\"" RA "\","
    "\"keyName\":\"a\"}],\"next\":\"join\"},"
    "{\"id\":\"ask_b\",\"type\":\"send\",\"actions\":[{\"name\":\"b\",\"type\":\"kafka_send\","
    "\"topic\":\"${prefix}connector.b.in${suffix}\"}],\"next\":\"wait_b\"},"
    "{\"id\":\"wait_b\",\"type\":\"receive\",\"dataStreamTopics\":[{\"topicName\":\"" RB "\","
    "\"keyName\":\"b\"}],\"next\":\"join\"},"
    "{\"id\":\"join\",\"type\":\"parallel_gateway\",\"next\":\"decide\"},"
    "{\"id\":\"decide\",\"type\":\"exclusive_gateway\",\"routes\":[{\"condition\":"
    "\"data.a.ok == true and data.b.ok == true\",\"next\":\"both\"}],\"default\":\"not_both\"},"
    "{\"id\":\"both\",\"type\":\"end\"},{\"id\":\"not_both\",\"type\":\"end\"}]}";

static struct engine_def *parse(void)
{
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = engine_def_parse(parallel, strlen(parallel), &env, err, sizeof(err));
    if (!def)
        fail_msg("definition refused: %s", err);
    engine_def_set_version(def, 1, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    return def;
}

static int deliver(const struct engine_def *def,
                   struct engine_instance *inst,
                   const char *topic,
                   const char *dest,
                   struct engine_effects *fx)
{
    char err[FLOWD_ERRSTR_SIZE];
    cJSON *b = cJSON_Parse("{\"ok\":true}");
    struct engine_event ev = {topic, dest, NULL, b};
    int rc = engine_deliver(def, inst, &ev, T0 + 10, fx, err, sizeof(err));
    cJSON_Delete(b);
    return rc;
}

static int count_state(const struct engine_effects *fx, const char *state)
{
    int n = 0;
    for (size_t i = 0; i < fx->nhist; i++)
        n += strcmp(fx->hist[i].state, state) == 0;
    return n;
}

static void fork_sends_both_requests_and_waits_in_both_branches(void **state)
{
    (void)state;
    struct engine_def *def = parse();
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = NULL;
    assert_int_equal(engine_start(def, 1, UUID, NULL, T0, &inst, &fx, err, sizeof(err)), 0);
    assert_int_equal(fx.nmsgs, 2);
    assert_int_equal(count_state(&fx, "FORKED"), 1);
    assert_int_equal(inst->ntokens, 2);
    assert_int_equal(inst->tokens[0].state, ENGINE_TOKEN_WAITING_MESSAGE);
    assert_int_equal(inst->tokens[1].state, ENGINE_TOKEN_WAITING_MESSAGE);
    assert_true((strcmp(inst->tokens[0].node_id, "wait_a") == 0 &&
                 strcmp(inst->tokens[1].node_id, "wait_b") == 0) ||
                (strcmp(inst->tokens[0].node_id, "wait_b") == 0 &&
                 strcmp(inst->tokens[1].node_id, "wait_a") == 0));
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void join_goes_on_only_when_both_replies_arrived(void **state)
{
    (void)state;
    const char *orders[2][2] = {{RA, RB}, {RB, RA}};
    for (int o = 0; o < 2; o++) {
        struct engine_def *def = parse();
        char err[FLOWD_ERRSTR_SIZE];
        struct engine_effects fx = ENGINE_EFFECTS_INIT;
        struct engine_instance *inst = NULL;
        assert_int_equal(engine_start(def, 1, UUID, NULL, T0, &inst, &fx, err, sizeof(err)), 0);
        engine_effects_clear(&fx);

        assert_int_equal(deliver(def, inst, orders[o][0], NULL, &fx), 0);
        assert_int_equal(inst->state, ENGINE_STARTED);
        assert_int_equal(count_state(&fx, "WAITING_JOIN"), 1);
        engine_effects_clear(&fx);

        /* the half-joined instance survives the store round trip */
        char *json = engine_instance_to_json(inst);
        struct engine_instance *copy =
            engine_instance_from_json(json, strlen(json), err, sizeof(err));
        free(json);
        assert_non_null(copy);
        engine_instance_free(inst);
        inst = copy;

        assert_int_equal(deliver(def, inst, orders[o][1], NULL, &fx), 0);
        assert_int_equal(inst->state, ENGINE_FINISHED);
        assert_int_equal(count_state(&fx, "JOINED"), 1);
        assert_int_equal(count_state(&fx, "FINISHED"), 1);
        assert_string_equal(fx.hist[fx.nhist - 1].node_id, "both");
        assert_int_equal(inst->ntokens, 0);
        engine_effects_clear(&fx);
        engine_instance_free(inst);
        engine_def_free(def);
    }
}

static void fork_to_an_unknown_node_is_refused(void **state)
{
    (void)state;
    const char *bad =
        "{\"key\":\"p\",\"nodes\":[{\"id\":\"start\",\"type\":\"start\",\"next\":\"f\"},"
        "{\"id\":\"f\",\"type\":\"parallel_gateway\",\"next\":[\"e\",\"nowhere\"]},"
        "{\"id\":\"e\",\"type\":\"end\"}]}";
    char err[FLOWD_ERRSTR_SIZE];
    assert_null(engine_def_parse(bad, strlen(bad), &env, err, sizeof(err)));
    assert_non_null(strstr(err, "node 'f'"));
    assert_non_null(strstr(err, "nowhere"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fork_sends_both_requests_and_waits_in_both_branches),
        cmocka_unit_test(join_goes_on_only_when_both_replies_arrived),
        cmocka_unit_test(fork_to_an_unknown_node_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
