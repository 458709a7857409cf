/* fuzz_engine.h - engine helpers shared by the reply and http fuzz targets: the DESIGN.md
 * section 4 definition (parsed once) and the instance blob round trip.
 */
#ifndef FLOWD_FUZZ_ENGINE_H
#define FLOWD_FUZZ_ENGINE_H

#include "fuzz_replay.h"

#include "common/err.h"
#include "common/json.h"
#include "engine/engine.h"

#include <string.h>

static const struct engine_env fuzz_env = {"ai.flowx.dev.", ".v1"};

#define FUZZ_UUID        "5f0c1c2e-1111-4222-8333-444455556666"
#define FUZZ_REPLY_TOPIC "ai.flowx.dev.engine.receive.scoring.v1"

/* DESIGN.md section 4: start -> send -> receive (key "score") -> gateway -> two ends. */
static const char fuzz_credit_check[] =
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

static inline const struct engine_def *fuzz_credit_check_def(void)
{
    static struct engine_def *def;
    if (!def) {
        char errstr[FLOWD_ERRSTR_SIZE] = "";
        def = engine_def_parse(fuzz_credit_check, strlen(fuzz_credit_check), &fuzz_env, errstr,
                               sizeof(errstr));
        if (!def)
            fprintf(stderr, "credit-check: %s\n", errstr);
        FUZZ_CHECK(def != NULL);
        engine_def_set_version(def, 1, "00000000-0000-4000-8000-000000000001");
    }
    return def;
}

/* to_json(from_json(to_json(inst))) == to_json(inst). */
static inline void fuzz_instance_roundtrip(const struct engine_instance *inst)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    char *blob = engine_instance_to_json(inst);
    FUZZ_CHECK(blob != NULL);
    struct engine_instance *back =
        engine_instance_from_json(blob, strlen(blob), errstr, sizeof(errstr));
    if (!back)
        fprintf(stderr, "instance blob does not read back: %s\n%s\n", errstr, blob);
    FUZZ_CHECK(back != NULL);
    char *blob2 = engine_instance_to_json(back);
    if (strcmp(blob, blob2) != 0)
        fprintf(stderr, "instance blob changed on the way back:\n%s\n%s\n", blob, blob2);
    FUZZ_CHECK(strcmp(blob, blob2) == 0);
    free(blob2);
    free(blob);
    engine_instance_free(back);
}

/* The input as a stored instance blob: refused with a reason, or read and round-tripped. */
static inline void fuzz_instance_from_json(const uint8_t *data, size_t size)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    struct engine_instance *inst =
        engine_instance_from_json((const char *)data, size, errstr, sizeof(errstr));
    if (!inst) {
        FUZZ_CHECK(errstr[0] != '\0');
        return;
    }
    fuzz_instance_roundtrip(inst);
    cJSON *view = engine_instance_view(inst);
    FUZZ_CHECK(view != NULL);
    cJSON_Delete(view);
    engine_instance_free(inst);
}

#endif
