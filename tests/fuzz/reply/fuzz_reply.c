/* fuzz_reply.c - fuzzes reply decoding: the path the daemon takes on a consumed message
 * (src/daemon/reply.c): json_utf8_valid(), json_parse(), then engine_deliver() of the body to an
 * instance of the DESIGN.md section 4 definition waiting for it; and the same bytes as a stored
 * instance blob (engine_instance_from_json).
 *
 * Invariants: json_utf8_valid() agrees with a reference decoder (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF); a parsed body prints to JSON that parses and prints the
 * same again; a delivered reply either moves the instance on (to FINISHED, whichever the body)
 * or is refused with a reason; the instance blob round-trips.
 */
#include "../fuzz_engine.h"

/* Straightforward RFC 3629 decoder, the oracle for json_utf8_valid(). */
static int utf8_reference(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i - 1 < n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

static void check_print_stable(const cJSON *body)
{
    char *p1 = json_print(body);
    FUZZ_CHECK(p1 != NULL);
    cJSON *again = json_parse(p1, strlen(p1), NULL, 0);
    if (!again)
        fprintf(stderr, "printed reply does not parse: %s\n", p1);
    FUZZ_CHECK(again != NULL);
    char *p2 = json_print(again);
    FUZZ_CHECK(p2 != NULL && strcmp(p1, p2) == 0);
    free(p2);
    free(p1);
    cJSON_Delete(again);
}

static void deliver(const cJSON *body, const char *destination_id)
{
    const struct engine_def *def = fuzz_credit_check_def();
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    struct engine_instance *inst = NULL;
    struct engine_effects fx = ENGINE_EFFECTS_INIT;
    cJSON *data = cJSON_Parse("{\"clientId\": 17, \"amount\": 2.5}");
    FUZZ_CHECK(engine_start(def, 7, FUZZ_UUID, data, 1000, &inst, &fx, errstr, sizeof(errstr)) ==
               0);
    FUZZ_CHECK(inst->state == ENGINE_STARTED && fx.nmsgs == 1);
    engine_effects_clear(&fx);

    struct engine_event ev = {
        .topic = FUZZ_REPLY_TOPIC, .destination_id = destination_id, .body = body};
    int rc = engine_deliver(def, inst, &ev, 2000, &fx, errstr, sizeof(errstr));
    if (rc == 0) {
        FUZZ_CHECK(inst->state == ENGINE_FINISHED);
        FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(inst->data, "score") != NULL);
        fuzz_instance_roundtrip(inst);
    } else {
        FUZZ_CHECK(errstr[0] != '\0');
    }
    engine_effects_clear(&fx);
    engine_instance_free(inst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int valid = json_utf8_valid(s, size);
    FUZZ_CHECK(valid == utf8_reference(data, size));
    if (valid) {
        cJSON *body = json_parse(s, size, NULL, 0);
        if (body) {
            check_print_stable(body);
            (void)json_path(body, "approved");
            (void)json_path(body, "items.0.id");
            (void)json_str(body, "errorMessage");
            deliver(body, NULL);
            deliver(body, "wait_score");
            cJSON_Delete(body);
        }
    }
    fuzz_instance_from_json(data, size);
    return 0;
}
