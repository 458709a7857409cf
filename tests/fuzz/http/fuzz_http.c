/* fuzz_http.c - fuzzes the HTTP request bodies the API parses (src/api/): the start data of
 * POST /v1/processes/{key}/start (json_parse, must be an object, then engine_start of the
 * DESIGN.md section 4 definition with it) and the definition of POST /v1/definitions
 * (engine_def_parse), plus engine_instance_from_json on the same bytes.
 *
 * Invariants: the start data renders into a message body that is valid JSON whatever it holds
 * (values cannot inject structure); refusals always carry a reason.
 */
#include "../fuzz_engine.h"

static void start_body(const uint8_t *data, size_t size)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *body = json_parse((const char *)data, size, errstr, sizeof(errstr));
    if (!body) {
        FUZZ_CHECK(errstr[0] != '\0');
        return;
    }
    if (!cJSON_IsObject(body)) {
        /* The API answers 400 "the start data must be a JSON object". */
        cJSON_Delete(body);
        return;
    }
    struct engine_instance *inst = NULL;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    int rc = engine_start(fuzz_credit_check_def(), 9, FUZZ_UUID, body, 1000, &inst, &fx, errstr,
                          sizeof(errstr));
    FUZZ_CHECK(rc == 0 && inst != NULL);
    if (inst->state == ENGINE_STARTED) {
        FUZZ_CHECK(fx.nmsgs == 1);
        const char *value = fx.msgs[0].value;
        cJSON *sent = json_parse(value, strlen(value), NULL, 0);
        if (!sent)
            fprintf(stderr, "rendered body is not JSON: %s\n", value);
        FUZZ_CHECK(sent != NULL);
        cJSON_Delete(sent);
    } else {
        /* Only a failure to render may stop it here, and it says why. */
        FUZZ_CHECK(inst->state == ENGINE_FAILED && inst->error != NULL);
    }
    fuzz_instance_roundtrip(inst);
    engine_effects_clear(&fx);
    engine_instance_free(inst);
}

static void definition_body(const uint8_t *data, size_t size)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    struct engine_def *def =
        engine_def_parse((const char *)data, size, &fuzz_env, errstr, sizeof(errstr));
    if (!def) {
        FUZZ_CHECK(errstr[0] != '\0');
        return;
    }
    FUZZ_CHECK(engine_def_key(def) != NULL);
    size_t n = engine_def_receive_topic_count(def);
    for (size_t i = 0; i < n; i++) {
        const char *node = NULL;
        FUZZ_CHECK(engine_def_receive_topic(def, i, &node) != NULL && node != NULL);
    }
    engine_def_free(def);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    start_body(data, size);
    definition_body(data, size);
    fuzz_instance_from_json(data, size);
    return 0;
}
