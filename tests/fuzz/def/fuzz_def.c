/* fuzz_def.c - fuzzes the process definition parser and validator (engine_def_parse).
 *
 * The input is the definition JSON. A definition that parses must be usable: its accessors
 * answer, an instance starts on it (the step function runs, bounded by the loop guard) and
 * serializes to JSON that reads back, and a reply on each of its receive topics is delivered
 * or refused with an error, never a crash. Errors must leave a non-empty errstr.
 */
#include "../fuzz_engine.h"

#include "common/err.h"
#include "common/json.h"
#include "engine/engine.h"

#include <string.h>

static void run_instance(const struct engine_def *def)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    cJSON *data = cJSON_Parse("{\"clientId\": 17, \"amount\": 2.5, \"ok\": true,"
                              " \"customer\": {\"name\": \"Ana \\\"x\\\"\", \"age\": 41}}");
    struct engine_instance *inst = NULL;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    int rc = engine_start(def, 1, FUZZ_UUID, data, 1000, &inst, &fx, errstr, sizeof(errstr));
    if (rc) {
        /* Refused before the instance exists: data was not taken. */
        FUZZ_CHECK(errstr[0] != '\0');
        FUZZ_CHECK(inst == NULL);
        cJSON_Delete(data);
        engine_effects_clear(&fx);
        return;
    }
    FUZZ_CHECK(inst != NULL);
    for (size_t i = 0; i < fx.nmsgs; i++) {
        /* Rendered bodies of a deployed definition are always JSON. */
        cJSON *body = json_parse(fx.msgs[i].value, strlen(fx.msgs[i].value), NULL, 0);
        FUZZ_CHECK(body != NULL);
        cJSON_Delete(body);
    }
    engine_effects_clear(&fx);

    fuzz_instance_roundtrip(inst);

    /* One reply on every receive topic. */
    cJSON *reply = cJSON_Parse("{\"approved\": true, \"score\": 700}");
    size_t ntopics = engine_def_receive_topic_count(def);
    for (size_t i = 0; i < ntopics && inst->state == ENGINE_STARTED; i++) {
        const char *node = NULL;
        const char *topic = engine_def_receive_topic(def, i, &node);
        FUZZ_CHECK(topic != NULL && node != NULL);
        struct engine_event ev = {.topic = topic, .body = reply};
        errstr[0] = '\0';
        rc = engine_deliver(def, inst, &ev, 2000 + (int64_t)i, &fx, errstr, sizeof(errstr));
        if (rc)
            FUZZ_CHECK(errstr[0] != '\0');
        engine_effects_clear(&fx);
    }
    cJSON_Delete(reply);

    cJSON *view = engine_instance_view(inst);
    FUZZ_CHECK(view != NULL);
    cJSON_Delete(view);
    engine_instance_free(inst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    struct engine_def *def =
        engine_def_parse((const char *)data, size, &fuzz_env, errstr, sizeof(errstr));
    if (!def) {
        FUZZ_CHECK(errstr[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(engine_def_key(def) != NULL);
    (void)engine_def_name(def);
    engine_def_set_version(def, 1, "00000000-0000-4000-8000-000000000001");
    FUZZ_CHECK(engine_def_version(def) == 1);
    FUZZ_CHECK(engine_def_uuid(def) != NULL);
    run_instance(def);
    engine_def_free(def);
    return 0;
}
