/* test_engine_expr.c - the gateway condition language: parsing, evaluation, errors, depth. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"
#include "engine/engine.h"
#include "engine/engine_int.h"

#include <stdlib.h>
#include <string.h>

static cJSON *data;

static int setup(void **state)
{
    (void)state;
    data = cJSON_Parse("{\"score\": {\"approved\": true, \"value\": 720, \"grade\": \"B\"},"
                       " \"amount\": 1000, \"name\": \"it's\", \"zero\": 0, \"none\": null,"
                       " \"items\": [{\"id\": \"x1\"}, {\"id\": \"x2\"}], \"e\": \"\\u00e9\","
                       " \"obj\": {\"a\": 1}, \"obj2\": {\"a\": 1}, \"flag\": false}");
    return data ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cJSON_Delete(data);
    return 0;
}

/* Parses and evaluates src; fails the test if it does not parse. */
static int eval(const char *src)
{
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_expr *e = engine_expr_parse(src, err, sizeof(err));
    if (!e)
        fail_msg("'%s' did not parse: %s", src, err);
    int r = engine_expr_eval(e, data);
    engine_expr_free(e);
    return r;
}

/* Expects src to fail with exactly the message want. */
static void expect_error(const char *src, const char *want)
{
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct engine_expr *e = engine_expr_parse(src, err, sizeof(err));
    if (e) {
        engine_expr_free(e);
        fail_msg("'%s' parsed, expected error '%s'", src, want);
    }
    assert_string_equal(err, want);
}

static void paths_with_and_without_data_prefix(void **state)
{
    (void)state;
    assert_true(eval("data.score.approved == true"));
    assert_true(eval("score.approved == true"));
    assert_true(eval("score.grade == \"B\""));
    assert_true(eval("data.items.1.id == 'x2'"));
    assert_true(eval("data.score.approved"));
    assert_false(eval("data.flag"));
}

static void missing_paths_are_null(void **state)
{
    (void)state;
    assert_true(eval("data.missing == null"));
    assert_true(eval("data.score.missing.deeper == null"));
    assert_true(eval("data.none == null"));
    assert_false(eval("data.missing == false"));
    assert_false(eval("data.missing"));
}

static void equality_between_types_is_false(void **state)
{
    (void)state;
    assert_false(eval("amount == \"1000\""));
    assert_true(eval("amount != \"1000\""));
    assert_false(eval("zero == false"));
    assert_false(eval("zero == null"));
    assert_true(eval("true == true"));
    assert_true(eval("false != true"));
    assert_true(eval("obj == obj2"));
    assert_false(eval("obj == score"));
}

static void numbers_compare_numerically(void **state)
{
    (void)state;
    assert_true(eval("amount < 1000.5"));
    assert_true(eval("amount <= 1000"));
    assert_true(eval("amount >= 1e3"));
    assert_false(eval("amount > 1000"));
    assert_true(eval("10 > 9"));
    assert_true(eval("-1.5 < 0"));
    assert_true(eval("score.value >= 700 and score.value < 800"));
}

static void strings_compare_lexicographically(void **state)
{
    (void)state;
    assert_true(eval("\"10\" < \"9\""));
    assert_true(eval("'abc' < 'abd'"));
    assert_true(eval("score.grade >= 'A'"));
    assert_false(eval("'b' < 'a'"));
}

static void ordering_between_types_is_false(void **state)
{
    (void)state;
    assert_false(eval("amount < 'zzz'"));
    assert_false(eval("amount > 'a'"));
    assert_false(eval("true > false"));
    assert_false(eval("missing < 1"));
    assert_false(eval("missing >= 1"));
}

static void string_escapes(void **state)
{
    (void)state;
    assert_true(eval("name == 'it\\'s'"));
    assert_true(eval("name == \"it's\""));
    assert_true(eval("e == '\\u00e9'"));
    assert_true(eval("'a\\nb' != 'a\\\\nb'"));
    assert_true(eval("'\\ud83d\\ude00' == '\xf0\x9f\x98\x80'"));
}

static void boolean_operators_and_precedence(void **state)
{
    (void)state;
    assert_true(eval("true or false and false"));
    assert_false(eval("(true or false) and false"));
    assert_true(eval("not false"));
    assert_true(eval("!false && true"));
    assert_true(eval("false || !(amount > 5000)"));
    assert_true(eval("not amount == 5"));
    assert_false(eval("not not false"));
    assert_true(eval("(amount == 1000) == true"));
    assert_true(eval("score.approved == true and amount < 5000 or amount > 100000"));
}

static void keywords_need_word_boundaries(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE];
    /* "android" and "order" are paths, not "and"/"or" */
    cJSON *d = cJSON_Parse("{\"android\": 1, \"order\": 2, \"notes\": true}");
    struct engine_expr *e =
        engine_expr_parse("android == 1 and order == 2 and notes", err, sizeof(err));
    assert_non_null(e);
    assert_true(engine_expr_eval(e, d));
    engine_expr_free(e);
    cJSON_Delete(d);
}

static void parse_errors_give_position_and_reason(void **state)
{
    (void)state;
    expect_error("a =< 1", "position 3: unknown operator '=<'");
    expect_error("a = 1", "position 3: unknown operator '='");
    expect_error("(a == 1", "position 8: missing ')' for the '(' at position 1");
    expect_error("a ==", "position 5: unexpected end of condition, expected a value");
    expect_error("a == 'abc", "position 6: unterminated string");
    expect_error("", "position 1: empty condition");
    expect_error("   ", "position 4: empty condition");
    expect_error("a == 1 b", "position 8: unexpected 'b' (expected and, or, or the end)");
    expect_error("a == 1 == 2", "position 8: unexpected '==' (expected and, or, or the end)");
    expect_error("a == 'x\\q'", "position 8: invalid escape in string");
    expect_error("a == '\\u12'", "position 7: invalid \\u escape in string");
    expect_error("a == 1.", "position 8: expected digits after the decimal point");
    expect_error("a. == 1", "position 3: expected a name after '.'");
    expect_error("a == #", "position 6: unexpected '#', expected a value");
    expect_error("a and", "position 6: unexpected end of condition, expected a value");
    expect_error("1abc == 1", "position 2: unexpected character after a number");
}

static void nesting_depth_is_bounded(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct buf b = BUF_INIT;
    for (int i = 0; i < ENGINE_EXPR_MAX_DEPTH; i++)
        buf_addc(&b, '(');
    buf_adds(&b, "true");
    for (int i = 0; i < ENGINE_EXPR_MAX_DEPTH; i++)
        buf_addc(&b, ')');
    struct engine_expr *e = engine_expr_parse(b.ptr, err, sizeof(err));
    assert_non_null(e);
    assert_true(engine_expr_eval(e, data));
    engine_expr_free(e);

    /* hostile: a million parentheses or nots must fail cleanly, not overflow the stack */
    buf_reset(&b);
    for (int i = 0; i < 1000000; i++)
        buf_addc(&b, '(');
    assert_null(engine_expr_parse(b.ptr, err, sizeof(err)));
    assert_string_equal(err, "position 65: nested too deeply (more than 64 levels)");
    buf_reset(&b);
    for (int i = 0; i < 1000000; i++)
        buf_adds(&b, "not ");
    buf_adds(&b, "true");
    assert_null(engine_expr_parse(b.ptr, err, sizeof(err)));
    assert_non_null(strstr(err, "nested too deeply"));
    buf_release(&b);
}

static void long_flat_chains_do_not_nest(void **state)
{
    (void)state;
    char err[FLOWD_ERRSTR_SIZE] = "";
    struct buf b = BUF_INIT;
    buf_adds(&b, "amount == 1000");
    for (int i = 0; i < 200000; i++)
        buf_adds(&b, i % 2 ? " and true" : " && amount > 1");
    struct engine_expr *e = engine_expr_parse(b.ptr, err, sizeof(err));
    assert_non_null(e);
    assert_true(engine_expr_eval(e, data));
    engine_expr_free(e);
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(paths_with_and_without_data_prefix),
        cmocka_unit_test(missing_paths_are_null),
        cmocka_unit_test(equality_between_types_is_false),
        cmocka_unit_test(numbers_compare_numerically),
        cmocka_unit_test(strings_compare_lexicographically),
        cmocka_unit_test(ordering_between_types_is_false),
        cmocka_unit_test(string_escapes),
        cmocka_unit_test(boolean_operators_and_precedence),
        cmocka_unit_test(keywords_need_word_boundaries),
        cmocka_unit_test(parse_errors_give_position_and_reason),
        cmocka_unit_test(nesting_depth_is_bounded),
        cmocka_unit_test(long_flat_chains_do_not_nest),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
