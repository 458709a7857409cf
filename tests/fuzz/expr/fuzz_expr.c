/* fuzz_expr.c - fuzzes the condition language (engine_expr_parse + engine_expr_eval).
 *
 * The input is the condition text; it is evaluated against a fixed data object holding every
 * JSON type. Invariants checked: a parse error says where (errstr non-empty), eval returns
 * exactly 0 or 1, and `not (<input>)`, when it parses (nesting is bounded), evaluates to the
 * opposite of the input.
 */
#include "../fuzz_replay.h"

#include "common/err.h"
#include "common/json.h"
#include "engine/engine.h"

#include <string.h>

static const char data_json[] =
    "{\"amount\": 999.5, \"count\": 3, \"zero\": 0, \"neg\": -12, \"name\": \"Ana\","
    " \"empty\": \"\", \"ok\": true, \"no\": false, \"nothing\": null,"
    " \"score\": {\"approved\": true, \"value\": 700, \"reason\": \"fine\"},"
    " \"items\": [{\"id\": \"i0\", \"n\": 1}, {\"id\": \"i1\", \"n\": 2}], \"obj\": {}}";

static const cJSON *fixed_data(void)
{
    static cJSON *data;
    if (!data) {
        data = cJSON_Parse(data_json);
        FUZZ_CHECK(data != NULL);
    }
    return data;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *src = fuzz_strndup(data, size);
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    struct engine_expr *expr = engine_expr_parse(src, errstr, sizeof(errstr));
    if (!expr) {
        FUZZ_CHECK(errstr[0] != '\0');
        free(src);
        return 0;
    }
    int v = engine_expr_eval(expr, fixed_data());
    FUZZ_CHECK(v == 0 || v == 1);
    /* An empty object: every path is missing (null). */
    cJSON *empty = cJSON_CreateObject();
    int ve = engine_expr_eval(expr, empty);
    FUZZ_CHECK(ve == 0 || ve == 1);
    cJSON_Delete(empty);
    engine_expr_free(expr);

    /* Only when src has no NUL inside: the parser stops at the first one. */
    if (strlen(src) == size) {
        size_t n = size + sizeof("not ()");
        char *neg = malloc(n);
        FUZZ_CHECK(neg != NULL);
        snprintf(neg, n, "not (%s)", src);
        struct engine_expr *nexpr = engine_expr_parse(neg, errstr, sizeof(errstr));
        if (nexpr) {
            FUZZ_CHECK(engine_expr_eval(nexpr, fixed_data()) == !v);
            engine_expr_free(nexpr);
        }
        free(neg);
    }
    free(src);
    return 0;
}
