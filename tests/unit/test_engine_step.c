/* test_engine_step.c - the state machine: engine_start / engine_deliver transitions, messages
 * and their headers, correlation rules, failures, the loop guard, instance JSON and view. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/err.h"
#include "engine/engine.h"
#include "engine/engine_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UUID     "5f0c1c2e-1111-4222-8333-444455556666"
#define DEF_UUID "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
#define T0       1700000000000LL /* 2023-11-14T22:13:20.000Z */
#define REPLY    "ai.flowx.dev.engine.receive.scoring.v1"

static const struct engine_env env = {"ai.flowx.dev.", ".v1"};

static const char design_example[] =
    "{ \"key\": \"credit-check\", \"name\": \"Credit check\", \"nodes\": ["
    " { \"id\": \"start\", \"type\": \"start\", \"next\": \"ask_score\" },"
    " { \"id\": \"ask_score\", \"type\": \"send\", \"actions\": [ { \"name\": \"ask_score\","
    "   \"type\": \"kafka_send\", \"topic\": \"${prefix}connector.scoring.in${suffix}\","
    "   \"message\": \"{\\\"clientId\\\": ${data.clientId}, \\\"amount\\\": ${data.amount}}\" } ],"
    "   \"next\": \"wait_score\" },"
    " { \"id\": \"wait_score\", \"type\": \"receive\", \"responseTimeout\": \"PT30S\","
    "   \"dataStreamTopics\": [ { \"topicName\": \"${prefix}engine.receive.scoring${suffix}\","
    "   \"keyName\": \"score\" } ], \"next\": \"decide\" },"
    " { \"id\": \"decide\", \"type\": \"exclusive_gateway\", \"routes\": [ { \"condition\":"
    "   \"data.score.approved == true\", \"next\": \"approved\" } ], \"default\": \"rejected\" },"
    " { \"id\": \"approved\", \"type\": \"end\" }, { \"id\": \"rejected\", \"type\": \"end\" } ] }";

static struct engine_def *def_parse(const char *json)
{
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_def *def = engine_def_parse(json, strlen(json), &env, err, sizeof(err));
    if (!def)
        fail_msg("definition refused: %s", err);
    engine_def_set_version(def, 2, DEF_UUID);
    return def;
}

static struct engine_instance *
start(const struct engine_def *def, const char *data_json, struct engine_effects *fx)
{
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_instance *inst = NULL;
    cJSON *data = data_json ? cJSON_Parse(data_json) : NULL;
    assert_int_equal(engine_start(def, 42, UUID, data, T0, &inst, fx, err, sizeof(err)), 0);
    assert_non_null(inst);
    return inst;
}

/* The design example started with {clientId: 7, amount: 1000}: waiting at wait_score. */
static struct engine_instance *start_design(const struct engine_def *def)
{
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = start(def, "{\"clientId\": 7, \"amount\": 1000}", &fx);
    engine_effects_clear(&fx);
    return inst;
}

static void expect_history(const struct engine_effects *fx,
                           const char *const *states,
                           const char *const *nodes,
                           size_t n,
                           uint32_t first_seq)
{
    assert_int_equal(fx->nhist, n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(fx->hist[i].state, states[i]);
        assert_string_equal(fx->hist[i].node_id, nodes[i]);
        assert_int_equal(fx->hist[i].seq, first_seq + i);
    }
}

static const char *header(const struct engine_message *msg, const char *name)
{
    for (size_t i = 0; i < msg->nheaders; i++)
        if (strcmp(msg->headers[i].name, name) == 0)
            return msg->headers[i].value;
    return NULL;
}

static int deliver(const struct engine_def *def,
                   struct engine_instance *inst,
                   const char *topic,
                   const char *dest,
                   const char *action,
                   const char *body_json,
                   struct engine_effects *fx,
                   char *err)
{
    cJSON *body = cJSON_Parse(body_json);
    struct engine_event ev = {topic, dest, action, body};
    int rc = engine_deliver(def, inst, &ev, T0 + 5000, fx, err, FLOWD_ERRSTR_SIZE);
    cJSON_Delete(body); /* the engine must have copied what it keeps */
    return rc;
}

static void start_sends_message_with_headers_and_waits(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = start(def, "{\"clientId\": 7, \"amount\": 1000}", &fx);

    assert_int_equal(inst->state, ENGINE_STARTED);
    assert_int_equal(inst->id, 42);
    assert_string_equal(inst->uuid, UUID);
    assert_string_equal(inst->def_key, "credit-check");
    assert_int_equal(inst->def_version, 2);
    assert_int_equal(inst->started_ms, T0);
    assert_int_equal(inst->updated_ms, T0);
    assert_int_equal(inst->ntokens, 1);
    assert_string_equal(inst->tokens[0].node_id, "wait_score");
    assert_int_equal(inst->tokens[0].state, ENGINE_TOKEN_WAITING_MESSAGE);
    assert_false(fx.ended);

    static const char *const states[] = {"STARTED", "ENTERED", "MESSAGE_SENT", "WAITING_MESSAGE"};
    static const char *const nodes[] = {"start", "ask_score", "ask_score", "wait_score"};
    expect_history(&fx, states, nodes, 4, 1);
    assert_int_equal(inst->seq, 4);
    assert_int_equal(fx.hist[0].at_ms, T0);

    assert_int_equal(fx.nmsgs, 1);
    const struct engine_message *msg = &fx.msgs[0];
    assert_string_equal(msg->topic, "ai.flowx.dev.connector.scoring.in.v1");
    assert_string_equal(msg->key, "42");
    assert_string_equal(msg->value, "{\"clientId\": 7, \"amount\": 1000}");
    assert_string_equal(msg->node_id, "ask_score");
    assert_string_equal(msg->message_id, UUID ":ask_score:ask_score:3");
    assert_string_equal(fx.hist[2].detail, msg->message_id);

    static const char *const names[] = {
        "processInstanceId", "processInstanceUuid", "processDefinitionUuid",
        "processStartDate",  "destinationId",       "callbacksForAction",
        "messageId",         "fxContext",           "Fx-ProcessName"};
    static const char *const values[] = {"42",
                                         UUID,
                                         DEF_UUID,
                                         "2023-11-14T22:13:20.000Z",
                                         "wait_score",
                                         "ask_score",
                                         UUID ":ask_score:ask_score:3",
                                         "main",
                                         "credit-check"};
    assert_int_equal(msg->nheaders, 9);
    for (size_t i = 0; i < 9; i++) {
        assert_string_equal(msg->headers[i].name, names[i]);
        assert_string_equal(msg->headers[i].value, values[i]);
    }
    assert_int_equal(inst->tokens[0].noutstanding, 1);
    assert_string_equal(inst->tokens[0].outstanding[0], msg->message_id);

    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void start_with_null_data_uses_empty_object(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = start(def, NULL, &fx);
    assert_true(cJSON_IsObject(inst->data));
    assert_null(inst->data->child);
    assert_string_equal(fx.msgs[0].value, "{\"clientId\": null, \"amount\": null}");
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void start_refuses_bad_arguments(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = NULL;
    char err[FLOWD_ERRSTR_SIZE] = "";
    cJSON *arr = cJSON_CreateArray();
    assert_int_equal(engine_start(def, 1, "short", NULL, T0, &inst, &fx, err, sizeof(err)),
                     FLOWD_ERR_INVAL);
    assert_non_null(strstr(err, "uuid"));
    assert_int_equal(engine_start(def, 1, UUID, arr, T0, &inst, &fx, err, sizeof(err)),
                     FLOWD_ERR_INVAL);
    assert_non_null(strstr(err, "object"));
    assert_null(inst);
    assert_int_equal(fx.nhist, 0);
    cJSON_Delete(arr); /* not taken on error */
    engine_def_free(def);
}

static void replayed_start_produces_identical_messages(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_effects fx1 = ENGINE_EFFECTS_INIT, fx2 = ENGINE_EFFECTS_INIT;
    struct engine_instance *a = start(def, "{\"clientId\": 1}", &fx1);
    struct engine_instance *b = start(def, "{\"clientId\": 1}", &fx2);
    assert_string_equal(fx1.msgs[0].message_id, fx2.msgs[0].message_id);
    assert_string_equal(fx1.msgs[0].value, fx2.msgs[0].value);
    char *ja = engine_instance_to_json(a), *jb = engine_instance_to_json(b);
    assert_string_equal(ja, jb);
    free(ja);
    free(jb);
    engine_effects_clear(&fx1);
    engine_effects_clear(&fx2);
    engine_instance_free(a);
    engine_instance_free(b);
    engine_def_free(def);
}

static void deliver_by_destination_id_routes_on_reply(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_instance *inst = start_design(def);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE] = "";
    assert_int_equal(deliver(def, inst, "some.other.topic", "wait_score", NULL,
                             "{\"approved\": true, \"value\": 720}", &fx, err),
                     0);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    assert_int_equal(inst->ntokens, 0);
    assert_int_equal(inst->ended_ms, T0 + 5000);
    assert_int_equal(inst->updated_ms, T0 + 5000);
    assert_true(fx.ended);
    assert_int_equal(fx.nmsgs, 0);
    static const char *const states[] = {"MESSAGE_RECEIVED", "ROUTE_TAKEN", "FINISHED"};
    static const char *const nodes[] = {"wait_score", "decide", "approved"};
    expect_history(&fx, states, nodes, 3, 5);
    assert_string_equal(fx.hist[0].detail, "some.other.topic");
    assert_string_equal(fx.hist[1].detail, "route 1 (data.score.approved == true) -> approved");
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(inst->data, "score"), "value")->valueint, 720);
    engine_effects_clear(&fx);

    /* a finished instance refuses further replies and stays as it is */
    char *before = engine_instance_to_json(inst);
    assert_int_equal(deliver(def, inst, REPLY, "wait_score", NULL, "{}", &fx, err),
                     FLOWD_ERR_STATE);
    assert_non_null(strstr(err, "FINISHED"));
    char *after = engine_instance_to_json(inst);
    assert_string_equal(before, after);
    assert_int_equal(fx.nhist, 0);
    free(before);
    free(after);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void deliver_by_callback_action_takes_default_route(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_instance *inst = start_design(def);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE] = "";
    assert_int_equal(deliver(def, inst, "x", NULL, "ask_score", "{\"approved\": false}", &fx, err),
                     0);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    assert_string_equal(fx.hist[1].detail, "default -> rejected");
    assert_string_equal(fx.hist[2].node_id, "rejected");
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void deliver_by_topic_when_no_correlation_headers(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_instance *inst = start_design(def);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE] = "";
    /* a destinationId naming a node that is not a receive node falls back to the topic */
    assert_int_equal(deliver(def, inst, REPLY, "ask_score", NULL, "{\"approved\": true}", &fx, err),
                     0);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    assert_string_equal(fx.hist[2].node_id, "approved");
    engine_effects_clear(&fx);
    engine_instance_free(inst);

    inst = start_design(def);
    assert_int_equal(deliver(def, inst, REPLY, NULL, NULL, "{\"approved\": 1}", &fx, err), 0);
    assert_string_equal(fx.hist[2].node_id, "rejected"); /* 1 is not true */
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void unmatched_reply_is_nowait_and_leaves_instance_unchanged(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_instance *inst = start_design(def);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE] = "";
    char *before = engine_instance_to_json(inst);
    assert_int_equal(deliver(def, inst, "ai.flowx.dev.engine.receive.other.v1", NULL, NULL,
                             "{\"approved\": true}", &fx, err),
                     FLOWD_ERR_NOWAIT);
    assert_non_null(strstr(err, "ai.flowx.dev.engine.receive.other.v1"));
    /* unknown destination and unknown action fall back to the topic, which does not match */
    assert_int_equal(deliver(def, inst, "nope", "no_such_node", "no_such_action", "{}", &fx, err),
                     FLOWD_ERR_NOWAIT);
    assert_int_equal(deliver(def, inst, NULL, NULL, NULL, "{}", &fx, err), FLOWD_ERR_NOWAIT);
    char *after = engine_instance_to_json(inst);
    assert_string_equal(before, after);
    assert_int_equal(fx.nhist, 0);
    assert_int_equal(fx.nmsgs, 0);
    free(before);
    free(after);
    engine_instance_free(inst);
    engine_def_free(def);
}

static const char two_steps[] =
    "{\"key\":\"two\",\"nodes\":["
    "{\"id\":\"s\",\"type\":\"start\",\"next\":\"send1\"},"
    "{\"id\":\"send1\",\"type\":\"send\",\"next\":\"r1\",\"actions\":[{\"name\":\"a1\","
    "\"type\":\"kafka_send\",\"topic\":\"c1.in\",\"message\":\"{}\"}]},"
    "{\"id\":\"r1\",\"type\":\"receive\",\"next\":\"send2\",\"dataStreamTopics\":["
    "{\"topicName\":\"${prefix}engine.receive.c1\",\"keyName\":\"first\"}]},"
    "{\"id\":\"send2\",\"type\":\"send\",\"next\":\"r2\",\"actions\":[{\"name\":\"a2\","
    "\"type\":\"kafka_send\",\"topic\":\"c2.in\",\"message\":\"{\\\"got\\\": ${data.first}}\"}]},"
    "{\"id\":\"r2\",\"type\":\"receive\",\"next\":\"e\",\"dataStreamTopics\":["
    "{\"topicName\":\"${prefix}engine.receive.c2\",\"keyName\":\"result.second\"},"
    "{\"topicName\":\"${prefix}engine.receive.c2b\",\"keyName\":\"alt\"}]},"
    "{\"id\":\"e\",\"type\":\"end\"}]}";

static void destination_not_waiting_is_nowait(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(two_steps);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_instance *inst = start(def, NULL, &fx);
    engine_effects_clear(&fx);
    assert_string_equal(inst->tokens[0].node_id, "r1");
    assert_int_equal(
        deliver(def, inst, "ai.flowx.dev.engine.receive.c1", "r2", NULL, "{}", &fx, err),
        FLOWD_ERR_NOWAIT);
    assert_non_null(strstr(err, "'r2' is not waiting"));
    assert_int_equal(
        deliver(def, inst, "ai.flowx.dev.engine.receive.c1", NULL, "a2", "{}", &fx, err),
        FLOWD_ERR_NOWAIT);
    assert_non_null(strstr(err, "action 'a2'"));
    assert_int_equal(fx.nhist, 0);

    /* the right one moves on to r2, sending the second request with the first reply inside */
    assert_int_equal(deliver(def, inst, "ai.flowx.dev.engine.receive.c1", NULL, "a1",
                             "{\"v\": \"x\\\"y\"}", &fx, err),
                     0);
    assert_string_equal(inst->tokens[0].node_id, "r2");
    assert_int_equal(fx.nmsgs, 1);
    assert_string_equal(fx.msgs[0].value, "{\"got\": {\"v\":\"x\\\"y\"}}");
    assert_string_equal(header(&fx.msgs[0], "destinationId"), "r2");
    assert_int_equal(inst->tokens[0].noutstanding, 1); /* the first one was answered */
    assert_string_equal(inst->tokens[0].outstanding[0], fx.msgs[0].message_id);
    engine_effects_clear(&fx);

    /* the reply lands under the key of the topic it came on; dotted keys nest */
    assert_int_equal(
        deliver(def, inst, "ai.flowx.dev.engine.receive.c2b", NULL, NULL, "[1]", &fx, err), 0);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(inst->data, "alt")));
    engine_effects_clear(&fx);
    engine_instance_free(inst);

    inst = start(def, NULL, &fx);
    engine_effects_clear(&fx);
    assert_int_equal(deliver(def, inst, "t", "r1", NULL, "1", &fx, err), 0);
    engine_effects_clear(&fx);
    assert_int_equal(deliver(def, inst, "t", "r2", NULL, "{\"ok\": true}", &fx, err), 0);
    const cJSON *second = json_path(inst->data, "result.second.ok");
    assert_true(cJSON_IsTrue(second));
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void task_node_publishes_actions_in_order_with_own_headers(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(
        "{\"key\":\"t\",\"nodes\":[{\"id\":\"s\",\"type\":\"start\",\"next\":\"t\"},"
        "{\"id\":\"t\",\"type\":\"task\",\"next\":\"e\",\"actions\":["
        "{\"name\":\"late\",\"type\":\"kafka_send\",\"topic\":\"x.${data.dest}\",\"order\":2},"
        "{\"name\":\"early\",\"type\":\"kafka_send\",\"topic\":\"y\",\"order\":1,"
        "\"headers\":{\"x-client\":\"${data.client}\",\"x-key\":\"${processKey}\"}}]},"
        "{\"id\":\"e\",\"type\":\"end\"}]}");
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = start(def, "{\"dest\": \"q\", \"client\": 9}", &fx);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    assert_true(fx.ended);
    assert_int_equal(fx.nmsgs, 2);
    assert_string_equal(fx.msgs[0].topic, "y");
    assert_string_equal(fx.msgs[1].topic, "x.q");
    assert_string_equal(fx.msgs[0].value, "{}");
    assert_int_equal(fx.msgs[0].nheaders, 11);
    assert_string_equal(fx.msgs[0].headers[9].name, "x-client");
    assert_string_equal(fx.msgs[0].headers[9].value, "9");
    assert_string_equal(fx.msgs[0].headers[10].value, "t");
    assert_string_equal(header(&fx.msgs[0], "destinationId"), "t");
    assert_string_equal(header(&fx.msgs[1], "callbacksForAction"), "late");
    assert_string_not_equal(fx.msgs[0].message_id, fx.msgs[1].message_id);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static const char bad_topic_def[] =
    "{\"key\":\"b\",\"nodes\":[{\"id\":\"s\",\"type\":\"start\",\"next\":\"x\"},"
    "{\"id\":\"x\",\"type\":\"send\",\"next\":\"r\",\"actions\":["
    "{\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"${data.topic}\",\"optional\":%s},"
    "{\"name\":\"b\",\"type\":\"kafka_send\",\"topic\":\"fine\",\"order\":1}]},"
    "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"e\",\"dataStreamTopics\":["
    "{\"topicName\":\"reply\",\"keyName\":\"r\"}]},{\"id\":\"e\",\"type\":\"end\"}]}";

static void runtime_render_failure_fails_the_instance(void **state)
{
    (void)state;
    char json[sizeof(bad_topic_def) + 8];
    snprintf(json, sizeof(json), bad_topic_def, "false");
    struct engine_def *def = def_parse(json);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = start(def, "{\"topic\": \"bad topic!\"}", &fx);
    assert_int_equal(inst->state, ENGINE_FAILED);
    assert_non_null(inst->error);
    assert_non_null(strstr(inst->error, "node 'x': action 'a'"));
    assert_non_null(strstr(inst->error, "not a valid Kafka topic name"));
    assert_int_equal(inst->ntokens, 0);
    assert_int_equal(inst->ended_ms, T0);
    assert_true(fx.ended);
    assert_int_equal(fx.nmsgs, 0);
    assert_string_equal(fx.hist[fx.nhist - 1].state, "FAILED");
    assert_string_equal(fx.hist[fx.nhist - 1].detail, inst->error);

    /* and a failed instance takes no replies */
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_effects fx2 = ENGINE_EFFECTS_INIT;
    assert_int_equal(deliver(def, inst, "reply", NULL, NULL, "{}", &fx2, err), FLOWD_ERR_STATE);
    engine_effects_clear(&fx);
    engine_instance_free(inst);

    /* the same data with a good topic: both actions, in order */
    inst = start(def, "{\"topic\": \"good.topic\"}", &fx);
    assert_int_equal(inst->state, ENGINE_STARTED);
    assert_int_equal(fx.nmsgs, 2);
    assert_string_equal(fx.msgs[0].topic, "good.topic");
    assert_string_equal(fx.msgs[1].topic, "fine");
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void optional_action_failure_is_skipped(void **state)
{
    (void)state;
    char json[sizeof(bad_topic_def) + 8];
    snprintf(json, sizeof(json), bad_topic_def, "true");
    struct engine_def *def = def_parse(json);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = start(def, "{\"topic\": \"bad topic!\"}", &fx);
    assert_int_equal(inst->state, ENGINE_STARTED);
    assert_int_equal(fx.nmsgs, 1);
    assert_string_equal(fx.msgs[0].topic, "fine");
    int skipped = 0;
    for (size_t i = 0; i < fx.nhist; i++)
        if (strcmp(fx.hist[i].state, "ACTION_SKIPPED") == 0 &&
            strstr(fx.hist[i].detail, "action 'a'"))
            skipped = 1;
    assert_true(skipped);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void loop_without_wait_is_stopped_by_the_guard(void **state)
{
    (void)state;
    struct engine_def *def =
        def_parse("{\"key\":\"loop\",\"nodes\":[{\"id\":\"s\",\"type\":\"start\",\"next\":\"t\"},"
                  "{\"id\":\"t\",\"type\":\"task\",\"next\":\"g\"},"
                  "{\"id\":\"g\",\"type\":\"exclusive_gateway\",\"routes\":[{\"condition\":"
                  "\"data.stop == true\",\"next\":\"e\"}],\"default\":\"t\"},"
                  "{\"id\":\"e\",\"type\":\"end\"}]}");
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *inst = start(def, "{}", &fx);
    assert_int_equal(inst->state, ENGINE_FAILED);
    assert_non_null(strstr(inst->error, "loop guard"));
    assert_int_equal(inst->ntokens, 0);
    assert_true(fx.ended);
    assert_string_equal(fx.hist[fx.nhist - 1].state, "FAILED");
    assert_true(fx.nhist > ENGINE_MAX_STEPS);
    engine_effects_clear(&fx);
    engine_instance_free(inst);

    inst = start(def, "{\"stop\": true}", &fx);
    assert_int_equal(inst->state, ENGINE_FINISHED);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void deliver_checks_the_definition_matches(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_instance *inst = start_design(def);
    engine_def_set_version(def, 3, DEF_UUID);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE];
    assert_int_equal(deliver(def, inst, REPLY, NULL, NULL, "{}", &fx, err), FLOWD_ERR_INVAL);
    assert_int_equal(inst->state, ENGINE_STARTED);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void instance_json_round_trips_every_field(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_instance *inst = start_design(def);
    inst->error = strdup("an \"error\"\n");
    char *j1 = engine_instance_to_json(inst);
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_instance *back = engine_instance_from_json(j1, strlen(j1), err, sizeof(err));
    assert_non_null(back);
    char *j2 = engine_instance_to_json(back);
    assert_string_equal(j1, j2);
    assert_int_equal(back->id, 42);
    assert_string_equal(back->uuid, UUID);
    assert_string_equal(back->def_key, "credit-check");
    assert_int_equal(back->def_version, 2);
    assert_int_equal(back->state, ENGINE_STARTED);
    assert_int_equal(back->started_ms, T0);
    assert_int_equal(back->seq, 4);
    assert_int_equal(back->ntokens, 1);
    assert_string_equal(back->tokens[0].node_id, "wait_score");
    assert_int_equal(back->tokens[0].state, ENGINE_TOKEN_WAITING_MESSAGE);
    assert_int_equal(back->tokens[0].noutstanding, 1);
    assert_string_equal(back->tokens[0].outstanding[0], inst->tokens[0].outstanding[0]);
    assert_string_equal(back->error, "an \"error\"\n");
    assert_true(cJSON_Compare(back->data, inst->data, 1));
    free(back->error);
    back->error = NULL;

    /* the restored instance goes on where it was */
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    assert_int_equal(deliver(def, back, REPLY, NULL, NULL, "{\"approved\": true}", &fx, err), 0);
    assert_int_equal(back->state, ENGINE_FINISHED);
    assert_int_equal(fx.hist[0].seq, 5);
    char *j3 = engine_instance_to_json(back);
    struct engine_instance *again = engine_instance_from_json(j3, strlen(j3), err, sizeof(err));
    assert_non_null(again);
    assert_int_equal(again->state, ENGINE_FINISHED);
    assert_int_equal(again->ended_ms, T0 + 5000);
    assert_int_equal(again->ntokens, 0);
    engine_effects_clear(&fx);
    engine_instance_free(again);
    free(j1);
    free(j2);
    free(j3);
    engine_instance_free(back);
    engine_instance_free(inst);
    engine_def_free(def);
}

static void instance_from_json_rejects_bad_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "{",
        "[]",
        "{}",
        "{\"id\":1.5}",
        "{\"id\":1,\"uuid\":\"x\"}",
        "{\"id\":1,\"uuid\":\"" UUID "\",\"defKey\":\"k\",\"defVersion\":1,\"state\":\"WEIRD\"}",
        "{\"id\":1,\"uuid\":\"" UUID "\",\"defKey\":\"k\",\"defVersion\":1,\"state\":\"STARTED\","
        "\"startedMs\":0,\"updatedMs\":0,\"endedMs\":0,\"seq\":-1}",
        "{\"id\":1,\"uuid\":\"" UUID "\",\"defKey\":\"k\",\"defVersion\":1,\"state\":\"STARTED\","
        "\"startedMs\":0,\"updatedMs\":0,\"endedMs\":0,\"seq\":1,\"error\":5}",
        "{\"id\":1,\"uuid\":\"" UUID "\",\"defKey\":\"k\",\"defVersion\":1,\"state\":\"STARTED\","
        "\"startedMs\":0,\"updatedMs\":0,\"endedMs\":0,\"seq\":1,\"tokens\":{}}",
        "{\"id\":1,\"uuid\":\"" UUID "\",\"defKey\":\"k\",\"defVersion\":1,\"state\":\"STARTED\","
        "\"startedMs\":0,\"updatedMs\":0,\"endedMs\":0,\"seq\":1,\"tokens\":[{\"node\":\"n\","
        "\"state\":\"ACTIVE\"},{\"node\":\"n\",\"state\":\"SLEEPING\"}]}",
        "{\"id\":1,\"uuid\":\"" UUID "\",\"defKey\":\"k\",\"defVersion\":1,\"state\":\"STARTED\","
        "\"startedMs\":0,\"updatedMs\":0,\"endedMs\":0,\"seq\":1,\"tokens\":[{\"node\":\"n\","
        "\"state\":\"ACTIVE\",\"outstanding\":[1]}]}",
        "{\"id\":1,\"uuid\":\"" UUID "\",\"defKey\":\"k\",\"defVersion\":1,\"state\":\"STARTED\","
        "\"startedMs\":0,\"updatedMs\":0,\"endedMs\":0,\"seq\":1,\"tokens\":[],\"data\":[]}",
        "{\"id\":1,\"uuid\":\"" UUID "\",\"defKey\":\"k\",\"defVersion\":1,\"state\":\"STARTED\","
        "\"startedMs\":0,\"updatedMs\":0,\"endedMs\":0,\"seq\":1,\"tokens\":[]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[FLOWD_ERRSTR_SIZE] = "";
        struct engine_instance *inst =
            engine_instance_from_json(bad[i], strlen(bad[i]), err, sizeof(err));
        if (inst) {
            engine_instance_free(inst);
            fail_msg("accepted: %s", bad[i]);
        }
        assert_true(strncmp(err, "instance: ", 10) == 0);
    }
}

static void instance_view_for_the_api(void **state)
{
    (void)state;
    struct engine_def *def = def_parse(design_example);
    struct engine_instance *inst = start_design(def);
    cJSON *v = engine_instance_view(inst);
    char *s = json_print(v);
    assert_string_equal(s, "{\"id\":42,\"uuid\":\"" UUID
                           "\",\"processKey\":\"credit-check\",\"version\":2,"
                           "\"state\":\"STARTED\",\"startedAt\":\"2023-11-14T22:13:20.000Z\","
                           "\"updatedAt\":\"2023-11-14T22:13:20.000Z\",\"endedAt\":null,"
                           "\"tokens\":[{\"node\":\"wait_score\",\"state\":\"WAITING_MESSAGE\","
                           "\"dueAt\":\"2023-11-14T22:13:50.000Z\",\"resends\":0}],"
                           "\"data\":{\"clientId\":7,\"amount\":1000},\"error\":null}");
    free(s);
    cJSON_Delete(v);

    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    char err[FLOWD_ERRSTR_SIZE];
    assert_int_equal(deliver(def, inst, REPLY, NULL, NULL, "{\"approved\": true}", &fx, err), 0);
    v = engine_instance_view(inst);
    assert_string_equal(cJSON_GetObjectItem(v, "endedAt")->valuestring, "2023-11-14T22:13:25.000Z");
    assert_string_equal(cJSON_GetObjectItem(v, "state")->valuestring, "FINISHED");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(v, "tokens")), 0);
    cJSON_Delete(v);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
    engine_def_free(def);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(start_sends_message_with_headers_and_waits),
        cmocka_unit_test(start_with_null_data_uses_empty_object),
        cmocka_unit_test(start_refuses_bad_arguments),
        cmocka_unit_test(replayed_start_produces_identical_messages),
        cmocka_unit_test(deliver_by_destination_id_routes_on_reply),
        cmocka_unit_test(deliver_by_callback_action_takes_default_route),
        cmocka_unit_test(deliver_by_topic_when_no_correlation_headers),
        cmocka_unit_test(unmatched_reply_is_nowait_and_leaves_instance_unchanged),
        cmocka_unit_test(destination_not_waiting_is_nowait),
        cmocka_unit_test(task_node_publishes_actions_in_order_with_own_headers),
        cmocka_unit_test(runtime_render_failure_fails_the_instance),
        cmocka_unit_test(optional_action_failure_is_skipped),
        cmocka_unit_test(loop_without_wait_is_stopped_by_the_guard),
        cmocka_unit_test(deliver_checks_the_definition_matches),
        cmocka_unit_test(instance_json_round_trips_every_field),
        cmocka_unit_test(instance_from_json_rejects_bad_input),
        cmocka_unit_test(instance_view_for_the_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
