/* test_engine_subprocess.c - subprocess nodes in the pure engine: the call effect with the mapped
 * input, the parent waiting, completion with output mapping, failure to errorNext or failing the
 * parent, a call nobody waits for, cancelling a parent that waits (its child becomes an orphan),
 * the store form of the new fields, and the deploy-time checks. */
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
#define CUUID "6f0c1c2e-1111-4222-8333-444455556666"
#define T0    1700000000000LL

static const struct engine_env env = {"ai.flowx.dev.", ".v1"};

static const char parent_json[] =
    "{\"key\":\"parent\",\"nodes\":["
    "{\"id\":\"start\",\"type\":\"start\",\"next\":\"call\"},"
    "{\"id\":\"call\",\"type\":\"subprocess\",\"process\":\"child\",\"version\":2,"
    "\"input\":{\"who\":\"applicant.name\",\"data.amount\":\"data.amount\"},"
    "\"output\":{\"result.score\":\"score\"},\"keyName\":\"child\",\"errorNext\":\"bad\","
    "\"next\":\"ok\"},"
    "{\"id\":\"ok\",\"type\":\"end\"},{\"id\":\"bad\",\"type\":\"end\"}]}";

static const char strict_json[] =
    "{\"key\":\"strict\",\"nodes\":["
    "{\"id\":\"start\",\"type\":\"start\",\"next\":\"call\"},"
    "{\"id\":\"call\",\"type\":\"subprocess\",\"process\":\"child\",\"next\":\"ok\"},"
    "{\"id\":\"ok\",\"type\":\"end\"}]}";

static struct engine_def *parse(const char *json)
{
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = engine_def_parse(json, strlen(json), &env, err, sizeof(err));
    if (!def)
        fail_msg("%s", err);
    engine_def_set_version(def, 1, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    return def;
}

static struct engine_instance *
start(const struct engine_def *def, const char *data, struct engine_effects *fx)
{
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_instance *inst = NULL;
    assert_int_equal(engine_start(def, 7, UUID, cJSON_Parse(data), T0, &inst, fx, err, sizeof(err)),
                     0);
    return inst;
}

/* A child instance in state st with data (and error). */
static struct engine_instance *child(enum engine_state st, const char *data, const char *error)
{
    struct engine_instance *c = calloc(1, sizeof(*c));
    c->id = 99;
    memcpy(c->uuid, CUUID, 37);
    c->def_key = strdup("child");
    c->state = st;
    c->data = cJSON_Parse(data);
    c->error = error ? strdup(error) : NULL;
    return c;
}

static void call_effect_carries_the_mapped_input_and_the_parent_waits(void **state)
{
    (void)state;
    struct engine_def *def = parse(parent_json);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *p =
        start(def, "{\"applicant\":{\"name\":\"Ann\"},\"amount\":500,\"secret\":1}", &fx);
    assert_int_equal(p->state, ENGINE_STARTED);
    assert_int_equal(fx.ncalls, 1);
    assert_string_equal(fx.calls[0].def_key, "child");
    assert_int_equal(fx.calls[0].version, 2);
    assert_string_equal(fx.calls[0].node_id, "call");
    char *in = cJSON_PrintUnformatted(fx.calls[0].input);
    assert_string_equal(in, "{\"who\":\"Ann\",\"amount\":500}"); /* only what input names */
    free(in);
    assert_int_equal(p->ntokens, 1);
    assert_int_equal(p->tokens[0].state, ENGINE_TOKEN_WAITING_SUBPROCESS);
    assert_string_equal(p->tokens[0].call_id, fx.calls[0].call_id);
    assert_non_null(strstr(fx.calls[0].call_id, UUID ":call:call:"));
    assert_string_equal(fx.hist[fx.nhist - 1].state, "SUBPROCESS_STARTED");

    assert_int_equal(engine_call_bind(p, "nope", 99), FLOWD_ERR_NOWAIT);
    assert_int_equal(engine_call_bind(p, fx.calls[0].call_id, 99), 0);
    assert_int_equal(p->tokens[0].child_id, 99);

    /* the store form keeps the call; the view shows the child */
    char *blob = engine_instance_to_json(p);
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_instance *back = engine_instance_from_json(blob, strlen(blob), err, sizeof(err));
    assert_non_null(back);
    assert_string_equal(back->tokens[0].call_id, p->tokens[0].call_id);
    assert_int_equal(back->tokens[0].child_id, 99);
    assert_int_equal(back->tokens[0].state, ENGINE_TOKEN_WAITING_SUBPROCESS);
    free(blob);
    engine_instance_free(back);
    cJSON *v = engine_instance_view(p);
    assert_int_equal((int)cJSON_GetObjectItem(
                         cJSON_GetArrayItem(cJSON_GetObjectItem(v, "tokens"), 0), "subprocessId")
                         ->valuedouble,
                     99);
    cJSON_Delete(v);

    /* a child's parent fields survive the store form too */
    struct engine_instance *c = child(ENGINE_STARTED, "{}", NULL);
    c->parent_id = 7;
    c->parent_call = strdup("x:call:call:2");
    c->depth = 3;
    blob = engine_instance_to_json(c);
    back = engine_instance_from_json(blob, strlen(blob), err, sizeof(err));
    assert_non_null(back);
    assert_int_equal(back->parent_id, 7);
    assert_string_equal(back->parent_call, "x:call:call:2");
    assert_int_equal(back->depth, 3);
    free(blob);
    engine_instance_free(back);
    engine_instance_free(c);

    engine_effects_clear(&fx);
    engine_instance_free(p);
    engine_def_free(def);
}

static void finished_child_maps_its_output_and_the_parent_goes_on(void **state)
{
    (void)state;
    struct engine_def *def = parse(parent_json);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *p = start(def, "{}", &fx);
    char *call = strdup(fx.calls[0].call_id);
    engine_effects_clear(&fx);
    struct engine_instance *c = child(ENGINE_FINISHED, "{\"score\":710,\"x\":1}", NULL);
    char err[FLOWD_ERRSTR_SIZE];
    assert_int_equal(engine_call_done(def, p, "other", c, NULL, T0 + 1, &fx, err, sizeof(err)),
                     FLOWD_ERR_NOWAIT);
    assert_int_equal(engine_call_done(def, p, call, c, NULL, T0 + 1, &fx, err, sizeof(err)), 0);
    assert_int_equal(p->state, ENGINE_FINISHED);
    assert_int_equal(
        (int)cJSON_GetObjectItem(cJSON_GetObjectItem(p->data, "result"), "score")->valuedouble,
        710);
    assert_int_equal(
        (int)cJSON_GetObjectItem(cJSON_GetObjectItem(p->data, "child"), "x")->valuedouble, 1);
    assert_string_equal(fx.hist[0].state, "SUBPROCESS_COMPLETED");
    assert_string_equal(fx.hist[fx.nhist - 1].node_id, "ok");
    /* told twice: the parent no longer waits */
    engine_effects_clear(&fx);
    assert_int_equal(engine_call_done(def, p, call, c, NULL, T0 + 2, &fx, err, sizeof(err)),
                     FLOWD_ERR_NOWAIT);
    free(call);
    engine_instance_free(c);
    engine_effects_clear(&fx);
    engine_instance_free(p);
    engine_def_free(def);
}

static void failed_child_takes_error_next_or_fails_the_parent(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = parse(parent_json);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *p = start(def, "{}", &fx);
    char *call = strdup(fx.calls[0].call_id);
    engine_effects_clear(&fx);
    struct engine_instance *c = child(ENGINE_FAILED, "{}", "bureau down");
    assert_int_equal(engine_call_done(def, p, call, c, NULL, T0 + 1, &fx, err, sizeof(err)), 0);
    assert_int_equal(p->state, ENGINE_FINISHED);
    assert_string_equal(fx.hist[0].state, "SUBPROCESS_FAILED");
    assert_string_equal(fx.hist[0].detail,
                        "subprocess 'call' (instance 99 of 'child') failed: bureau down");
    assert_string_equal(fx.hist[fx.nhist - 1].node_id, "bad");
    const cJSON *em = cJSON_GetObjectItem(cJSON_GetObjectItem(p->data, "child"), "errorMessage");
    assert_string_equal(em->valuestring, "bureau down");
    engine_effects_clear(&fx);
    engine_instance_free(p);
    free(call);

    /* no errorNext: the parent fails with the child's reason; a child that could not start */
    struct engine_def *strict = parse(strict_json);
    p = start(strict, "{\"a\":1}", &fx);
    char *in = cJSON_PrintUnformatted(fx.calls[0].input);
    assert_string_equal(in, "{\"a\":1}"); /* no input mapping: all the data */
    free(in);
    call = strdup(fx.calls[0].call_id);
    engine_effects_clear(&fx);
    assert_int_equal(engine_call_done(strict, p, call, NULL,
                                      "no process definition with key "
                                      "'child' is deployed",
                                      T0 + 1, &fx, err, sizeof(err)),
                     0);
    assert_int_equal(p->state, ENGINE_FAILED);
    assert_string_equal(p->error, "subprocess 'call' (process 'child') could not start: no "
                                  "process definition with key 'child' is deployed");
    assert_int_equal(fx.ended, 1);
    engine_effects_clear(&fx);
    engine_instance_free(p);
    free(call);
    engine_instance_free(c);
    engine_def_free(strict);
    engine_def_free(def);
}

static void cancelling_a_waiting_parent_orphans_its_child(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_def *def = parse(strict_json);
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    struct engine_instance *p = start(def, "{}", &fx);
    assert_int_equal(engine_call_bind(p, fx.calls[0].call_id, 1234), 0);
    engine_effects_clear(&fx);
    assert_int_equal(engine_cancel(p, "test", T0 + 1, &fx, err, sizeof(err)), 0);
    assert_int_equal(fx.norphans, 1);
    assert_int_equal(fx.orphans[0], 1234);
    engine_effects_clear(&fx);
    engine_instance_free(p);
    engine_def_free(def);
}

static void bad_subprocess_nodes_are_refused_at_deploy(void **state)
{
    (void)state;
    static const struct {
        const char *node;
        const char *msg;
    } cases[] = {
        {"{\"id\":\"c\",\"type\":\"subprocess\",\"next\":\"e\"}",
         "node 'c': subprocess node has no \"process\" (the key of the definition to start)"},
        {"{\"id\":\"c\",\"type\":\"subprocess\",\"process\":\"a b\",\"next\":\"e\"}",
         "node 'c': process 'a b' is not a valid key (1 to 100 of A-Z a-z 0-9 . _ -)"},
        {"{\"id\":\"c\",\"type\":\"subprocess\",\"process\":\"k\",\"version\":0,\"next\":\"e\"}",
         "node 'c': \"version\" must be a positive integer"},
        {"{\"id\":\"c\",\"type\":\"subprocess\",\"process\":\"k\",\"input\":[],\"next\":\"e\"}",
         "node 'c': \"input\" must be an object of \"child data path\": \"data path\""},
        {"{\"id\":\"c\",\"type\":\"subprocess\",\"process\":\"k\",\"output\":{\"a\":\"b..c\"},"
         "\"next\":\"e\"}",
         "node 'c': output 'a': both sides must be dotted paths"},
        {"{\"id\":\"c\",\"type\":\"subprocess\",\"process\":\"k\",\"keyName\":5,\"next\":\"e\"}",
         "node 'c': keyName must be a dotted data path"},
        {"{\"id\":\"c\",\"type\":\"subprocess\",\"process\":\"k\",\"errorNext\":\"zz\","
         "\"next\":\"e\"}",
         "node 'c': errorNext 'zz' is not a node of this definition"},
        {"{\"id\":\"c\",\"type\":\"subprocess\",\"process\":\"k\"}",
         "node 'c': subprocess node has no \"next\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char json[1024], err[FLOWD_ERRSTR_SIZE] = "";
        snprintf(json, sizeof(json),
                 "{\"key\":\"d\",\"nodes\":[{\"id\":\"s\",\"type\":\"start\",\"next\":\"c\"},%s,"
                 "{\"id\":\"e\",\"type\":\"end\"}]}",
                 cases[i].node);
        struct engine_def *def = engine_def_parse(json, strlen(json), &env, err, sizeof(err));
        assert_null(def);
        assert_string_equal(err, cases[i].msg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(call_effect_carries_the_mapped_input_and_the_parent_waits),
        cmocka_unit_test(finished_child_maps_its_output_and_the_parent_goes_on),
        cmocka_unit_test(failed_child_takes_error_next_or_fails_the_parent),
        cmocka_unit_test(cancelling_a_waiting_parent_orphans_its_child),
        cmocka_unit_test(bad_subprocess_nodes_are_refused_at_deploy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
