/* test_engine_def.c - definition parsing and every deploy-time validation error. */
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

static const struct engine_env env = {"ai.flowx.dev.", ".v1"};

/* DESIGN.md section 4, verbatim. */
static const char design_example[] =
    "{ \"key\": \"credit-check\", \"name\": \"Credit check\",\n"
    "  \"nodes\": [\n"
    "    { \"id\": \"start\", \"type\": \"start\", \"next\": \"ask_score\" },\n"
    "    { \"id\": \"ask_score\", \"type\": \"send\",\n"
    "      \"actions\": [ { \"name\": \"ask_score\", \"type\": \"kafka_send\",\n"
    "                     \"topic\": \"${prefix}connector.scoring.in${suffix}\",\n"
    "                     \"message\": \"{\\\"clientId\\\": ${data.clientId}, \\\"amount\\\": "
    "${data.amount}}\" } ],\n"
    "      \"next\": \"wait_score\" },\n"
    "    { \"id\": \"wait_score\", \"type\": \"receive\", \"responseTimeout\": \"PT30S\",\n"
    "      \"dataStreamTopics\": [ { \"topicName\": \"${prefix}engine.receive.scoring${suffix}\", "
    "\"keyName\": \"score\" } ],\n"
    "      \"next\": \"decide\" },\n"
    "    { \"id\": \"decide\", \"type\": \"exclusive_gateway\",\n"
    "      \"routes\": [ { \"condition\": \"data.score.approved == true\", \"next\": \"approved\" "
    "} ], \"default\": \"rejected\" },\n"
    "    { \"id\": \"approved\", \"type\": \"end\" }, { \"id\": \"rejected\", \"type\": \"end\" } "
    "] }\n";

static struct engine_def *parse(const char *json, char *err)
{
    return engine_def_parse(json, strlen(json), &env, err, FLOWD_ERRSTR_SIZE);
}

/* Expects json to be refused with an error containing every one of the given fragments. */
static void expect_error(const char *json, const char *frag1, const char *frag2)
{
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_def *def = parse(json, err);
    if (def) {
        engine_def_free(def);
        fail_msg("accepted, expected an error with '%s' / '%s':\n%s", frag1, frag2, json);
    }
    if (!strstr(err, frag1) || (frag2 && !strstr(err, frag2)))
        fail_msg("error '%s' does not contain '%s' and '%s'", err, frag1, frag2 ? frag2 : "");
}

/* A definition with nodes_json between a start (-> first) and an end node called "end". */
static char *wrap(const char *first, const char *nodes_json)
{
    static char out[4096];
    snprintf(out, sizeof(out),
             "{\"key\":\"k\",\"nodes\":[{\"id\":\"s\",\"type\":\"start\",\"next\":\"%s\"},%s"
             "{\"id\":\"end\",\"type\":\"end\"}]}",
             first, nodes_json);
    return out;
}

#define SEND_ACTION "\"actions\":[{\"name\":\"a1\",\"type\":\"kafka_send\",\"topic\":\"t.in\"}]"

static void design_example_parses(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_def *def = parse(design_example, err);
    assert_non_null(def);
    assert_string_equal(engine_def_key(def), "credit-check");
    assert_string_equal(engine_def_name(def), "Credit check");
    assert_int_equal(engine_def_version(def), 0);
    engine_def_set_version(def, 3, "11111111-2222-4333-8444-555555555555");
    assert_int_equal(engine_def_version(def), 3);
    assert_string_equal(engine_def_uuid(def), "11111111-2222-4333-8444-555555555555");
    assert_int_equal(engine_def_receive_topic_count(def), 1);
    const char *node = NULL;
    assert_string_equal(engine_def_receive_topic(def, 0, &node),
                        "ai.flowx.dev.engine.receive.scoring.v1");
    assert_string_equal(node, "wait_score");
    assert_null(engine_def_receive_topic(def, 1, &node));
    int w = engine_def_find(def, "wait_score");
    assert_true(w >= 0);
    assert_int_equal(def->nodes[w].timeout_ms, 30000);
    int a = engine_def_find(def, "ask_score");
    assert_int_equal(def->nodes[a].reply_node, w);
    assert_true(def->nodes[a].actions[0].body->verified);
    engine_def_free(def);
}

static void unknown_fields_are_ignored(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_def *def = parse("{\"key\":\"k\",\"color\":\"red\",\"nodes\":[{\"id\":\"s\","
                                   "\"type\":\"start\",\"next\":\"e\",\"x\":[1,2]},{\"id\":\"e\","
                                   "\"type\":\"end\",\"label\":{}}]}",
                                   err);
    assert_non_null(def);
    assert_string_equal(engine_def_name(def), "");
    engine_def_free(def);
}

static void actions_are_sorted_by_order(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_def *def = parse(
        wrap("x", "{\"id\":\"x\",\"type\":\"task\",\"next\":\"end\",\"actions\":["
                  "{\"name\":\"third\",\"type\":\"kafka_send\",\"topic\":\"t\",\"order\":3},"
                  "{\"name\":\"first\",\"type\":\"kafka_send\",\"topic\":\"t\",\"order\":1},"
                  "{\"name\":\"second\",\"type\":\"kafka_send\",\"topic\":\"t\",\"order\":2}]},"),
        err);
    assert_non_null(def);
    const struct engine_node *x = &def->nodes[engine_def_find(def, "x")];
    assert_int_equal(x->nactions, 3);
    assert_string_equal(x->actions[0].name, "first");
    assert_string_equal(x->actions[1].name, "second");
    assert_string_equal(x->actions[2].name, "third");
    assert_int_equal(x->reply_node, engine_def_find(def, "x")); /* next is not a receive node */
    engine_def_free(def);
}

static void message_may_be_a_json_value(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_def *def = parse(
        wrap("x",
             "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{\"name\":\"a\","
             "\"type\":\"kafka_send\",\"topic\":\"t\",\"message\":{\"id\":\"${data.id}\"}}]},"),
        err);
    assert_non_null(def);
    engine_def_free(def);
}

static void document_level_errors(void **state)
{
    (void)state;
    expect_error("{\"key\":", "definition: not valid JSON", NULL);
    expect_error("[1]", "definition: must be a JSON object", NULL);
    expect_error("{\"nodes\":[]}", "definition: missing \"key\"", NULL);
    expect_error("{\"key\":\"bad key!\",\"nodes\":[]}", "key 'bad key!'", NULL);
    expect_error("{\"key\":\"\",\"nodes\":[]}", "key ''", NULL);
    expect_error("{\"key\":\"k\"}", "\"nodes\" must be a non-empty array", NULL);
    expect_error("{\"key\":\"k\",\"nodes\":[]}", "\"nodes\" must be a non-empty array", NULL);
    expect_error("{\"key\":\"k\",\"name\":5,\"nodes\":[]}", "\"name\" must be a string", NULL);
}

static void node_identity_errors(void **state)
{
    (void)state;
    expect_error(wrap("x", "{\"type\":\"task\",\"next\":\"end\"},"), "node #2 has no \"id\"", NULL);
    expect_error(wrap("x", "3,"), "node #2 is not an object", NULL);
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"task\",\"next\":\"end\"},"
                           "{\"id\":\"x\",\"type\":\"task\",\"next\":\"end\"},"),
                 "node 'x'", "duplicate id (nodes #2 and #3)");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"script\",\"next\":\"end\"},"), "node 'x'",
                 "unknown type 'script'");
    expect_error(wrap("x", "{\"id\":\"x\",\"next\":\"end\"},"), "node 'x'", "missing \"type\"");
}

static void graph_errors(void **state)
{
    (void)state;
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"task\",\"next\":\"nowhere\"},"), "node 'x'",
                 "next 'nowhere' is not a node");
    expect_error(wrap("nowhere", ""), "node 's'", "next 'nowhere' is not a node");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"task\"},"), "node 'x'",
                 "task node has no \"next\"");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"start\",\"next\":\"end\"},"), "node 'x'",
                 "a second start node (the first is 's')");
    expect_error("{\"key\":\"k\",\"nodes\":[{\"id\":\"e\",\"type\":\"end\"}]}", "no start node",
                 NULL);
    expect_error("{\"key\":\"k\",\"nodes\":[{\"id\":\"s\",\"type\":\"start\",\"next\":\"t\"},"
                 "{\"id\":\"t\",\"type\":\"task\",\"next\":\"s\"}]}",
                 "no end node", NULL);
    expect_error(wrap("end", "{\"id\":\"orphan\",\"type\":\"task\",\"next\":\"end\"},"),
                 "node 'orphan'", "unreachable from start node 's'");
    expect_error(wrap("end", "{\"id\":\"e2\",\"type\":\"end\"},"), "node 'e2'", "unreachable");
}

static void gateway_errors(void **state)
{
    (void)state;
    expect_error(wrap("g",
                      "{\"id\":\"g\",\"type\":\"exclusive_gateway\",\"routes\":[{\"condition\":"
                      "\"a == 1\",\"next\":\"end\"}]},"),
                 "node 'g'", "exclusive gateway has no \"default\" route");
    expect_error(wrap("g", "{\"id\":\"g\",\"type\":\"exclusive_gateway\",\"default\":\"end\","
                           "\"routes\":[{\"condition\":\"a == 1\",\"next\":\"end\"},"
                           "{\"condition\":\"data.x =< 12\",\"next\":\"end\"}]},"),
                 "node 'g': route 2 condition: position 8: unknown operator '=<'", NULL);
    expect_error(wrap("g", "{\"id\":\"g\",\"type\":\"exclusive_gateway\",\"default\":\"end\","
                           "\"routes\":[{\"condition\":\"a == 1\",\"next\":\"mars\"}]},"),
                 "node 'g'", "route 1 next 'mars' is not a node");
    expect_error(wrap("g", "{\"id\":\"g\",\"type\":\"exclusive_gateway\",\"default\":\"mars\"},"),
                 "node 'g'", "default 'mars' is not a node");
    expect_error(wrap("g", "{\"id\":\"g\",\"type\":\"exclusive_gateway\",\"default\":\"end\","
                           "\"routes\":[{\"next\":\"end\"}]},"),
                 "node 'g'", "route 1 has no \"condition\"");
}

static void send_node_errors(void **state)
{
    (void)state;
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\"},"), "node 'x'",
                 "send node has no kafka_send action");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[]},"),
                 "node 'x'", "send node has no kafka_send action");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"business_rule\"}]},"),
                 "node 'x': action 'a'", "unknown action type 'business_rule'");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"kafka_send\"}]},"),
                 "node 'x': action 'a'", "missing \"topic\"");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"type\":\"kafka_send\",\"topic\":\"t\"}]},"),
                 "node 'x'", "action 1: missing or invalid \"name\"");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"${nope}\"}]},"),
                 "node 'x': action 'a': topic", "unknown variable '${nope}'");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"bad topic\"}]},"),
                 "node 'x': action 'a'", "not a valid Kafka topic name");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"t\","
                           "\"message\":\"{\\\"a\\\": ${data.x}\"}]},"),
                 "node 'x': action 'a': message", "does not render to JSON");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"t\","
                           "\"message\":\"[${data.x} ${data.y}]\"}]},"),
                 "node 'x': action 'a': message", "placeholder");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"t\","
                           "\"message\":\"{\\\"a\\\": ${data.x\"}]},"),
                 "node 'x': action 'a': message", "unterminated '${'");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"t\","
                           "\"headers\":{\"messageId\":\"x\"}}]},"),
                 "node 'x': action 'a'", "header 'messageId' is set by the engine");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"t\","
                           "\"headers\":{\"h\":\"${what}\"}}]},"),
                 "node 'x': action 'a': header 'h'", "unknown variable '${what}'");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"t\"},{"
                           "\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"t\"}]},"),
                 "node 'x': action 'a'", "duplicate action name");
    expect_error(wrap("x", "{\"id\":\"x\",\"type\":\"send\",\"next\":\"end\",\"actions\":[{"
                           "\"name\":\"a\",\"type\":\"kafka_send\",\"topic\":\"t\","
                           "\"order\":1.5}]},"),
                 "node 'x': action 'a'", "\"order\" must be an integer");
}

static void receive_node_errors(void **state)
{
    (void)state;
    expect_error(wrap("r", "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"end\"},"), "node 'r'",
                 "receive node has no \"dataStreamTopics\"");
    expect_error(wrap("r", "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"end\","
                           "\"dataStreamTopics\":[]},"),
                 "node 'r'", "no \"dataStreamTopics\"");
    expect_error(wrap("r", "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"end\","
                           "\"dataStreamTopics\":[{\"topicName\":\"t\"}]},"),
                 "node 'r'", "dataStreamTopics[1] has no \"keyName\"");
    expect_error(wrap("r", "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"end\","
                           "\"dataStreamTopics\":[{\"keyName\":\"k\"}]},"),
                 "node 'r'", "dataStreamTopics[1] has no \"topicName\"");
    expect_error(wrap("r", "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"end\","
                           "\"dataStreamTopics\":[{\"topicName\":\"${prefix}x.${data.t}\","
                           "\"keyName\":\"k\"}]},"),
                 "node 'r'", "only ${prefix} and ${suffix} may be used");
    expect_error(wrap("r", "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"end\","
                           "\"dataStreamTopics\":[{\"topicName\":\"x.${processInstanceId}\","
                           "\"keyName\":\"k\"}]},"),
                 "node 'r'", "only ${prefix} and ${suffix} may be used");
    expect_error(wrap("r", "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"end\","
                           "\"dataStreamTopics\":[{\"topicName\":\"${bogus}\","
                           "\"keyName\":\"k\"}]},"),
                 "node 'r'", "unknown variable '${bogus}'");
    expect_error(wrap("r", "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"end\","
                           "\"dataStreamTopics\":[{\"topicName\":\"t\",\"keyName\":\"a..b\"}]},"),
                 "node 'r'", "keyName 'a..b' is not a valid path");
    expect_error(wrap("r", "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"end\","
                           "\"responseTimeout\":\"30s\","
                           "\"dataStreamTopics\":[{\"topicName\":\"t\",\"keyName\":\"k\"}]},"),
                 "node 'r': responseTimeout", "not an ISO 8601 duration");
    expect_error(wrap("r", "{\"id\":\"r\",\"type\":\"receive\",\"next\":\"end\","
                           "\"responseTimeout\":\"P1Y\","
                           "\"dataStreamTopics\":[{\"topicName\":\"t\",\"keyName\":\"k\"}]},"),
                 "node 'r': responseTimeout", "years and months are not supported");
}

static void durations(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    int64_t ms = 0;
    assert_int_equal(engine_duration_parse("PT30S", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(engine_duration_parse("P1DT2H3M4.5S", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 86400000 + 2 * 3600000 + 3 * 60000 + 4500);
    assert_int_equal(engine_duration_parse("P2W", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 14LL * 86400000);
    assert_int_equal(engine_duration_parse("PT1M", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 60000);
    assert_int_equal(engine_duration_parse("P", &ms, err, sizeof(err)), FLOWD_ERR_INVAL);
    assert_int_equal(engine_duration_parse("PT", &ms, err, sizeof(err)), FLOWD_ERR_INVAL);
    assert_int_equal(engine_duration_parse("P1H", &ms, err, sizeof(err)), FLOWD_ERR_INVAL);
    assert_int_equal(engine_duration_parse("P1M", &ms, err, sizeof(err)), FLOWD_ERR_INVAL);
    assert_int_equal(engine_duration_parse("PT5X", &ms, err, sizeof(err)), FLOWD_ERR_INVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(design_example_parses),
        cmocka_unit_test(unknown_fields_are_ignored),
        cmocka_unit_test(actions_are_sorted_by_order),
        cmocka_unit_test(message_may_be_a_json_value),
        cmocka_unit_test(document_level_errors),
        cmocka_unit_test(node_identity_errors),
        cmocka_unit_test(graph_errors),
        cmocka_unit_test(gateway_errors),
        cmocka_unit_test(send_node_errors),
        cmocka_unit_test(receive_node_errors),
        cmocka_unit_test(durations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
