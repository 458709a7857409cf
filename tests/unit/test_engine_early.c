/* test_engine_early.c - early replies: two requests sent in a row, the second answered first;
 * the reply is kept (parked) until the token reaches its receive node, expires if it never does,
 * and outstanding requests are forgotten only at the node that answers them. */
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

static const char two_in_a_row[] =
    "{\"key\":\"two\",\"nodes\":["
    "{\"id\":\"start\",\"type\":\"start\",\"next\":\"ask_a\"},"
    "{\"id\":\"ask_a\",\"type\":\"send\",\"actions\":[{\"name\":\"a\",\"type\":\"kafka_send\","
    "\"topic\":\"${prefix}connector.a.in${suffix}\"}],\"next\":\"ask_b\"},"
    "{\"id\":\"ask_b\",\"type\":\"send\",\"replyTo\":\"wait_b\",\"actions\":[{\"name\":\"b\","
    "\"type\":\"kafka_send\",\"topic\":\"${prefix}connector.b.in${suffix}\"}],\"next\":\"wait_a\"},"
    "{\"id\":\"wait_a\",\"type\":\"receive\",\"dataStreamTopics\":[{\"topicName\":\"" RA "\","
    "\"keyName\":\"a\"}],\"next\":\"wait_b\"},"
    "{\"id\":\"wait_b\",\"type\":\"receive\",\"dataStreamTopics\":[{\"topicName\":\"" RB "\","
    "\"keyName\":\"b\"}],\"next\":\"end\"},"
    "{\"id\":\"end\",\"type\":\"end\"}]}";

struct fixture {
    struct engine_def *def;
    struct engine_instance *inst;
    char *mid_a, *mid_b;
};

static const char *header(const struct engine_message *m, const char *name)
{
    for (size_t i = 0; i < m->nheaders; i++)
        if (strcmp(m->headers[i].name, name) == 0)
            return m->headers[i].value;
    return NULL;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[FLOWD_ERRSTR_SIZE];
    f->def = engine_def_parse(two_in_a_row, strlen(two_in_a_row), &env, err, sizeof(err));
    if (!f->def)
        fail_msg("definition refused: %s", err);
    engine_def_set_version(f->def, 1, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    assert_int_equal(engine_start(f->def, 1, UUID, NULL, T0, &f->inst, &fx, err, sizeof(err)), 0);
    assert_int_equal(fx.nmsgs, 2);
    /* each request names the receive node its reply is for */
    assert_string_equal(header(&fx.msgs[0], "destinationId"), "wait_a");
    assert_string_equal(header(&fx.msgs[1], "destinationId"), "wait_b");
    f->mid_a = strdup(fx.msgs[0].message_id);
    f->mid_b = strdup(fx.msgs[1].message_id);
    engine_effects_clear(&fx);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    engine_instance_free(f->inst);
    engine_def_free(f->def);
    free(f->mid_a);
    free(f->mid_b);
    free(f);
    return 0;
}

static int deliver(struct fixture *f,
                   const char *topic,
                   const char *dest,
                   const char *body,
                   struct engine_effects *fx)
{
    char err[FLOWD_ERRSTR_SIZE];
    cJSON *b = cJSON_Parse(body);
    struct engine_event ev = {topic, dest, NULL, b};
    int rc = engine_deliver(f->def, f->inst, &ev, T0 + 100, fx, err, sizeof(err));
    cJSON_Delete(b);
    return rc;
}

static int park(struct fixture *f,
                const char *topic,
                const char *mid,
                const char *body,
                struct engine_effects *fx)
{
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_event ev = {topic, "wait_b", NULL, NULL};
    return engine_park(f->def, f->inst, &ev, mid, body, "[[\"messageId\",\"x\"]]", T0 + 50,
                       T0 + 60000, fx, err, sizeof(err));
}

static void second_reply_first_is_kept_and_taken_in_order(void **state)
{
    struct fixture *f = *state;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    /* B answers first: nobody waits at wait_b yet */
    assert_int_equal(deliver(f, RB, "wait_b", "{\"v\":2}", &fx), FLOWD_ERR_NOWAIT);
    assert_int_equal(park(f, RB, f->mid_b, "{\"v\":2}", &fx), 0);
    assert_string_equal(fx.hist[fx.nhist - 1].state, "MESSAGE_PARKED");
    assert_int_equal(engine_instance_next_due(f->inst), T0 + 60000);
    engine_effects_clear(&fx);

    /* the parked reply survives the store round trip */
    char err[FLOWD_ERRSTR_SIZE];
    char *json = engine_instance_to_json(f->inst);
    struct engine_instance *copy = engine_instance_from_json(json, strlen(json), err, sizeof(err));
    free(json);
    assert_non_null(copy);
    assert_int_equal(copy->nparked, 1);
    engine_instance_free(f->inst);
    f->inst = copy;

    /* A answers: the token moves to wait_b, takes the kept reply, and the instance ends */
    assert_int_equal(deliver(f, RA, "wait_a", "{\"v\":1}", &fx), 0);
    assert_int_equal(f->inst->state, ENGINE_FINISHED);
    assert_int_equal(f->inst->nparked, 0);
    const cJSON *b = json_path(f->inst->data, "b.v");
    assert_non_null(b);
    assert_int_equal(b->valueint, 2);
    engine_effects_clear(&fx);
}

static void answer_at_one_node_keeps_the_other_request_outstanding(void **state)
{
    struct fixture *f = *state;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    assert_int_equal(deliver(f, RA, "wait_a", "{}", &fx), 0);
    /* now at wait_b: only B is still outstanding (it is what a restart would re-send) */
    assert_int_equal(f->inst->tokens[0].noutstanding, 1);
    assert_string_equal(f->inst->tokens[0].outstanding[0], f->mid_b);
    engine_effects_clear(&fx);
}

static void kept_reply_expires_and_the_token_then_waits(void **state)
{
    struct fixture *f = *state;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE];
    assert_int_equal(park(f, RB, f->mid_b, "{\"v\":2}", &fx), 0);
    engine_effects_clear(&fx);
    assert_int_equal(engine_fire_due(f->def, f->inst, T0 + 60000, &fx, err, sizeof(err)), 0);
    assert_int_equal(fx.nexpired, 1);
    assert_string_equal(fx.expired[0].message_id, f->mid_b);
    assert_string_equal(fx.expired[0].value, "{\"v\":2}");
    assert_string_equal(fx.hist[0].state, "MESSAGE_EXPIRED");
    assert_int_equal(f->inst->nparked, 0);
    engine_effects_clear(&fx);
    assert_int_equal(deliver(f, RA, "wait_a", "{}", &fx), 0);
    assert_int_equal(f->inst->state, ENGINE_STARTED);
    assert_string_equal(f->inst->tokens[0].node_id, "wait_b");
    engine_effects_clear(&fx);
}

static void reply_to_no_outstanding_request_is_not_kept(void **state)
{
    struct fixture *f = *state;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    assert_int_equal(park(f, RB, "someone-else:x:y:1", "{}", &fx), FLOWD_ERR_NOWAIT);
    assert_int_equal(f->inst->nparked, 0);
    assert_int_equal(fx.nhist, 0);
    engine_effects_clear(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(second_reply_first_is_kept_and_taken_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(answer_at_one_node_keeps_the_other_request_outstanding,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(kept_reply_expires_and_the_token_then_waits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(reply_to_no_outstanding_request_is_not_kept, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
