/* test_engine_tpl.c - `${...}` templates: variables, JSON/TEXT rendering, injection attempts,
 * errors, and the deploy-time placeholder check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"
#include "engine/engine.h"
#include "engine/engine_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct engine_env env = {"ai.flowx.dev.", ".v1"};

/* A value containing everything that could break out of a string or a JSON value. */
static const char *const nasty = "a\"b\\c{}[],:\n\t\r</script> \"}, \"admin\": true, \"x\": \"";

static cJSON *test_data(void)
{
    cJSON *d = cJSON_Parse("{\"clientId\": 17, \"amount\": 2.5, \"ok\": true, \"nothing\": null,"
                           " \"obj\": {\"a\": 1, \"b\": [1, 2]}, \"items\": [{\"id\": \"i0\"}]}");
    cJSON_AddStringToObject(d, "nasty", nasty);
    return d;
}

static char *render(const char *tpl, enum engine_tpl_mode mode, const cJSON *data, char *err)
{
    struct engine_tpl_ctx ctx = {&env, 42, "5f0c1c2e-1111-4222-8333-444455556666", "credit-check",
                                 data};
    return engine_tpl_render(tpl, mode, &ctx, err, FLOWD_ERRSTR_SIZE);
}

static void json_render_inserts_numbers_unquoted(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    cJSON *d = test_data();
    char *out = render("{\"test\": ${processInstanceId}, \"c\": ${data.clientId}, "
                       "\"a\": ${data.amount}}",
                       ENGINE_TPL_JSON, d, err);
    assert_non_null(out);
    assert_string_equal(out, "{\"test\": 42, \"c\": 17, \"a\": 2.5}");
    free(out);
    cJSON_Delete(d);
}

static void json_render_quotes_strings_and_prints_objects_compactly(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    cJSON *d = test_data();
    char *out = render("{\"u\": ${processInstanceUuid}, \"k\": ${processKey}, "
                       "\"k2\": ${processDefinitionKey}, \"p\": ${prefix}, \"o\": ${data.obj}, "
                       "\"t\": ${data.ok}, \"n\": ${data.nothing}, \"m\": ${data.missing}, "
                       "\"i\": ${data.items.0.id}}",
                       ENGINE_TPL_JSON, d, err);
    assert_non_null(out);
    assert_string_equal(out, "{\"u\": \"5f0c1c2e-1111-4222-8333-444455556666\", "
                             "\"k\": \"credit-check\", \"k2\": \"credit-check\", "
                             "\"p\": \"ai.flowx.dev.\", \"o\": {\"a\":1,\"b\":[1,2]}, "
                             "\"t\": true, \"n\": null, \"m\": null, \"i\": \"i0\"}");
    free(out);
    cJSON_Delete(d);
}

static void json_render_whole_data(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    cJSON *d = cJSON_Parse("{\"x\": [1, \"y\"]}");
    char *out = render("${data}", ENGINE_TPL_JSON, d, err);
    assert_non_null(out);
    assert_string_equal(out, "{\"x\":[1,\"y\"]}");
    free(out);
    cJSON_Delete(d);
}

static void json_render_value_outside_string_cannot_inject(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    cJSON *d = test_data();
    char *out = render("{\"v\": ${data.nasty}}", ENGINE_TPL_JSON, d, err);
    assert_non_null(out);
    cJSON *doc = cJSON_Parse(out);
    assert_non_null(doc);
    assert_int_equal(cJSON_GetArraySize(doc), 1);
    assert_string_equal(cJSON_GetObjectItem(doc, "v")->valuestring, nasty);
    cJSON_Delete(doc);
    free(out);
    cJSON_Delete(d);
}

static void json_render_value_inside_string_is_escaped_content(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    cJSON *d = test_data();
    char *out = render("{\"greet\": \"hi ${data.nasty}! id=${processInstanceId} "
                       "o=${data.obj} u=${processInstanceUuid}\"}",
                       ENGINE_TPL_JSON, d, err);
    assert_non_null(out);
    cJSON *doc = cJSON_Parse(out);
    assert_non_null(doc);
    assert_int_equal(cJSON_GetArraySize(doc), 1);
    char expect[512];
    snprintf(expect, sizeof(expect),
             "hi %s! id=42 o={\"a\":1,\"b\":[1,2]} u=5f0c1c2e-1111-4222-8333-444455556666", nasty);
    assert_string_equal(cJSON_GetObjectItem(doc, "greet")->valuestring, expect);
    cJSON_Delete(doc);
    free(out);
    cJSON_Delete(d);
}

static void json_render_string_state_survives_escaped_quotes_in_template(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    cJSON *d = test_data();
    /* after `\"` the template is still inside the string: the value must be escaped content */
    char *out = render("{\"a\": \"say \\\"${data.nasty}\\\"\", \"b\": ${data.clientId}}",
                       ENGINE_TPL_JSON, d, err);
    assert_non_null(out);
    cJSON *doc = cJSON_Parse(out);
    assert_non_null(doc);
    assert_int_equal(cJSON_GetArraySize(doc), 2);
    assert_int_equal(cJSON_GetObjectItem(doc, "b")->valueint, 17);
    cJSON_Delete(doc);
    free(out);
    cJSON_Delete(d);
}

static void json_render_key_position_injection_is_contained(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    cJSON *d = test_data();
    char *out = render("{\"${data.nasty}\": 1}", ENGINE_TPL_JSON, d, err);
    assert_non_null(out);
    cJSON *doc = cJSON_Parse(out);
    assert_non_null(doc);
    assert_int_equal(cJSON_GetArraySize(doc), 1);
    assert_string_equal(doc->child->string, nasty);
    cJSON_Delete(doc);
    free(out);
    cJSON_Delete(d);
}

static void json_render_result_not_json_is_an_error(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    cJSON *d = test_data();
    assert_null(render("{\"a\": ${data.clientId}", ENGINE_TPL_JSON, d, err));
    assert_non_null(strstr(err, "JSON"));
    assert_null(render("{\"a\": ${data.ok}${data.amount}}", ENGINE_TPL_JSON, d, err));
    cJSON_Delete(d);
}

static void text_render_values_as_plain_text(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    cJSON *d = test_data();
    char *out = render("${prefix}connector.${data.items.0.id}${suffix}|${data.clientId}|"
                       "${data.amount}|${data.ok}|${data.obj}|${data.missing}|${processInstanceId}"
                       "|${processKey}",
                       ENGINE_TPL_TEXT, d, err);
    assert_non_null(out);
    assert_string_equal(out, "ai.flowx.dev.connector.i0.v1|17|2.5|true|{\"a\":1,\"b\":[1,2]}|"
                             "null|42|credit-check");
    free(out);
    out = render("${data.nasty}", ENGINE_TPL_TEXT, d, err);
    assert_string_equal(out, nasty); /* text mode: raw */
    free(out);
    cJSON_Delete(d);
}

static void dollar_escapes_and_lone_dollars_are_literal(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    char *out = render("cost $5 $$ $${data.x} $", ENGINE_TPL_TEXT, NULL, err);
    assert_non_null(out);
    assert_string_equal(out, "cost $5 $ ${data.x} $");
    free(out);
    out = render("{\"p\": \"$$${processInstanceId}\"}", ENGINE_TPL_JSON, NULL, err);
    assert_non_null(out);
    assert_string_equal(out, "{\"p\": \"$42\"}");
    free(out);
}

static void unknown_variable_error_names_it(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    assert_null(render("x ${customer.name} y", ENGINE_TPL_TEXT, NULL, err));
    assert_non_null(strstr(err, "unknown variable '${customer.name}'"));
    assert_null(render("${}", ENGINE_TPL_TEXT, NULL, err));
    assert_non_null(strstr(err, "unknown variable '${}'"));
    assert_null(render("${data..x}", ENGINE_TPL_TEXT, NULL, err));
    assert_non_null(strstr(err, "${data..x}"));
}

static void unterminated_variable_is_an_error(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    assert_null(render("abc ${data.x", ENGINE_TPL_TEXT, NULL, err));
    assert_non_null(strstr(err, "unterminated '${' at position 5"));
}

static void variable_after_backslash_in_string_is_refused(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    assert_null(render("{\"a\": \"\\${data.x}\"}", ENGINE_TPL_JSON, NULL, err));
    assert_non_null(strstr(err, "backslash"));
}

static void placeholder_check_verifies_structure_for_any_value(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_tpl *tpl;
    assert_int_equal(engine_tpl_compile("{\"a\": ${data.x}, \"b\": \"<${data.x}>\"}",
                                        ENGINE_TPL_JSON, &env, "k", &tpl, err, sizeof(err)),
                     0);
    assert_int_equal(engine_tpl_check(tpl, NULL, err, sizeof(err)), 0);
    assert_true(tpl->verified);
    /* every kind of value renders valid JSON, with no run-time parse */
    const char *values[] = {"{\"x\": 1}",
                            "{\"x\": \"s\\\"}\"}",
                            "{\"x\": {\"y\": [1, {}]}}",
                            "{\"x\": null}",
                            "{\"x\": -1.5e300}",
                            "{\"x\": false}",
                            "{}"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        cJSON *d = cJSON_Parse(values[i]);
        struct engine_tpl_ctx ctx = {&env, 1, "u", "k", d};
        struct buf b = BUF_INIT;
        assert_int_equal(engine_tpl_render_buf(tpl, &ctx, &b, err, sizeof(err)), 0);
        cJSON *doc = cJSON_Parse(b.ptr);
        assert_non_null(doc);
        cJSON_Delete(doc);
        buf_release(&b);
        cJSON_Delete(d);
    }
    engine_tpl_free(tpl);

    /* two values side by side can never be JSON: refused by the check */
    assert_int_equal(engine_tpl_compile("[${data.x} ${data.y}]", ENGINE_TPL_JSON, &env, "k", &tpl,
                                        err, sizeof(err)),
                     0);
    assert_int_equal(engine_tpl_check(tpl, NULL, err, sizeof(err)), FLOWD_ERR_INVAL);
    assert_false(tpl->verified);
    engine_tpl_free(tpl);
}

static void prefix_and_suffix_are_folded_at_compile_time(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    struct engine_tpl *tpl;
    assert_int_equal(engine_tpl_compile("${prefix}engine.receive.x${suffix}", ENGINE_TPL_TEXT, &env,
                                        "k", &tpl, err, sizeof(err)),
                     0);
    assert_true(engine_tpl_is_const(tpl));
    assert_int_equal(tpl->nsegs, 1);
    assert_string_equal(tpl->segs[0].text, "ai.flowx.dev.engine.receive.x.v1");
    assert_int_equal(tpl->vars, ENGINE_VAR_PREFIX | ENGINE_VAR_SUFFIX);
    engine_tpl_free(tpl);
}

static void topic_names_are_checked(void **state)
{
    (void)state;
    assert_true(engine_topic_valid("ai.flowx.dev-x_1", 16));
    assert_false(engine_topic_valid("bad topic", 9));
    assert_false(engine_topic_valid("", 0));
    assert_false(engine_topic_valid("a/b", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_render_inserts_numbers_unquoted),
        cmocka_unit_test(json_render_quotes_strings_and_prints_objects_compactly),
        cmocka_unit_test(json_render_whole_data),
        cmocka_unit_test(json_render_value_outside_string_cannot_inject),
        cmocka_unit_test(json_render_value_inside_string_is_escaped_content),
        cmocka_unit_test(json_render_string_state_survives_escaped_quotes_in_template),
        cmocka_unit_test(json_render_key_position_injection_is_contained),
        cmocka_unit_test(json_render_result_not_json_is_an_error),
        cmocka_unit_test(text_render_values_as_plain_text),
        cmocka_unit_test(dollar_escapes_and_lone_dollars_are_literal),
        cmocka_unit_test(unknown_variable_error_names_it),
        cmocka_unit_test(unterminated_variable_is_an_error),
        cmocka_unit_test(variable_after_backslash_in_string_is_refused),
        cmocka_unit_test(placeholder_check_verifies_structure_for_any_value),
        cmocka_unit_test(prefix_and_suffix_are_folded_at_compile_time),
        cmocka_unit_test(topic_names_are_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
