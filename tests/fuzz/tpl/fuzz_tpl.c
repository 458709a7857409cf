/* fuzz_tpl.c - fuzzes the `${...}` template renderer (engine_tpl_render), both modes.
 *
 * The input is the template; the data object is fixed and holds every JSON type plus strings
 * made to break out of a JSON string or value. Invariants checked:
 * - JSON mode: whatever engine_tpl_render returns parses as JSON;
 * - a template that passes the deploy-time check (engine_tpl_check marks it verified) renders
 *   valid JSON with the real values, although the renderer then skips its own parse;
 * - a failure always says why (errstr non-empty).
 */
#include "../fuzz_replay.h"

#include "common/buf.h"
#include "common/err.h"
#include "common/json.h"
#include "engine/engine.h"
#include "engine/engine_int.h"

#include <string.h>

static const struct engine_env env = {"ai.flowx.dev.", ".v1"};

static const char data_json[] =
    "{\"clientId\": 17, \"amount\": 2.5, \"big\": 1e308, \"neg\": -0.0, \"ok\": true,"
    " \"no\": false, \"nothing\": null, \"name\": \"Ana\","
    " \"nasty\": \"a\\\"b\\\\c{}[],:\\n\\t\\r\\u0001</script> \\\"}, \\\"admin\\\": true, \\\"\","
    " \"dollar\": \"${data.nasty}\", \"utf8\": \"\\u00e9\\u4e2d\\ud83d\\ude00\","
    " \"obj\": {\"a\": 1, \"b\": [1, 2, {\"c\": \"d\"}], \"e\": {}},"
    " \"items\": [{\"id\": \"i0\"}, {\"id\": 1}], \"empty\": \"\", \"arr\": []}";

static cJSON *fixed_data(void)
{
    static cJSON *data;
    if (!data) {
        data = cJSON_Parse(data_json);
        FUZZ_CHECK(data != NULL);
    }
    return data;
}

static void
render_mode(const char *tpl, enum engine_tpl_mode mode, const struct engine_tpl_ctx *ctx)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    char *out = engine_tpl_render(tpl, mode, ctx, errstr, sizeof(errstr));
    if (!out) {
        FUZZ_CHECK(errstr[0] != '\0');
        return;
    }
    if (mode == ENGINE_TPL_JSON) {
        cJSON *doc = json_parse(out, strlen(out), NULL, 0);
        FUZZ_CHECK(doc != NULL);
        cJSON_Delete(doc);
    }
    free(out);
}

/* The deploy-time path: compile, check with placeholders, then render the verified template. */
static void check_verified(const char *tpl, const struct engine_tpl_ctx *ctx)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    struct engine_tpl *t = NULL;
    if (engine_tpl_compile(tpl, ENGINE_TPL_JSON, &env, "credit-check", &t, errstr,
                           sizeof(errstr))) {
        FUZZ_CHECK(errstr[0] != '\0');
        return;
    }
    struct buf b = BUF_INIT;
    if (engine_tpl_check(t, &b, errstr, sizeof(errstr)) == 0 && t->verified) {
        buf_reset(&b);
        FUZZ_CHECK(engine_tpl_render_buf(t, ctx, &b, errstr, sizeof(errstr)) == 0);
        cJSON *doc = json_parse(buf_str(&b), b.len, NULL, 0);
        if (!doc)
            fprintf(stderr, "verified template rendered invalid JSON: %s\n", buf_str(&b));
        FUZZ_CHECK(doc != NULL);
        cJSON_Delete(doc);
    }
    buf_release(&b);
    (void)engine_tpl_is_const(t);
    engine_tpl_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *tpl = fuzz_strndup(data, size);
    struct engine_tpl_ctx ctx = {&env, 42, "5f0c1c2e-1111-4222-8333-444455556666", "credit-check",
                                 fixed_data()};
    render_mode(tpl, ENGINE_TPL_TEXT, &ctx);
    render_mode(tpl, ENGINE_TPL_JSON, &ctx);
    check_verified(tpl, &ctx);
    free(tpl);
    return 0;
}
