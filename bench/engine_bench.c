/* engine_bench.c - the engine core alone, in memory: start -> send -> receive -> end of
 * bench/processes/echo.json, N times, with no store and no Kafka. Prints one JSON line:
 * transitions (history rows) per second, instances per second and heap allocations per
 * transition, counted by replacing malloc/calloc/realloc in this executable (glibc forwards
 * to __libc_*), which also counts what cJSON and libc do on the engine's behalf.
 *
 *   engine_bench DEF.json [N] [--persist]
 *
 * --persist also serialises the instance after each step (engine_instance_to_json), as the
 * daemon does before it writes the store.
 */
#include "common/err.h"
#include "engine/engine.h"

#include <cjson/cJSON.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void *__libc_malloc(size_t size);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t size);
void *malloc(size_t size);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t size);

static uint64_t n_alloc; /* malloc + calloc + realloc(NULL or grow) calls */
static int counting;

void *malloc(size_t size)
{
    if (counting)
        n_alloc++;
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    if (counting)
        n_alloc++;
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    if (counting)
        n_alloc++;
    return __libc_realloc(p, size);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = __libc_malloc((size_t)n + 1);
    if (!s || fread(s, 1, (size_t)n, fp) != (size_t)n) {
        fclose(fp);
        return NULL;
    }
    fclose(fp);
    s[n] = '\0';
    *len = (size_t)n;
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: engine_bench DEF.json [N] [--persist]\n");
        return 2;
    }
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 200000;
    int persist = argc > 3 && strcmp(argv[3], "--persist") == 0;
    static const struct engine_env env = {"ai.flowx.dev.", ".v1"};
    char err[FLOWD_ERRSTR_SIZE];
    size_t len;
    char *json = slurp(argv[1], &len);
    if (!json) {
        perror(argv[1]);
        return 1;
    }
    struct engine_def *def = engine_def_parse(json, len, &env, err, sizeof(err));
    if (!def) {
        fprintf(stderr, "engine_bench: %s\n", err);
        return 1;
    }
    engine_def_set_version(def, 1, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    const char *node;
    const char *reply_topic = engine_def_receive_topic(def, 0, &node);

    uint64_t transitions = 0, bytes = 0;
    char uuid[48];
    double t0 = now_s();
    counting = 1;
    for (long i = 0; i < n; i++) {
        struct engine_instance *inst = NULL;
        struct engine_effects fx;
        memset(&fx, 0, sizeof(fx));
        snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-%012ld", i + 1);
        cJSON *data = cJSON_Parse("{\"request\":{\"n\":1,\"s\":\"hello\"}}");
        if (engine_start(def, i + 1, uuid, data, 1000 + i, &inst, &fx, err, sizeof(err)) != 0 ||
            fx.nmsgs != 1) {
            fprintf(stderr, "engine_bench: start: %s\n", err);
            return 1;
        }
        transitions += fx.nhist;
        if (persist) {
            char *s = engine_instance_to_json(inst);
            bytes += strlen(s);
            free(s);
        }
        /* the connector echoes the request body back */
        cJSON *body = cJSON_Parse(fx.msgs[0].value);
        engine_effects_clear(&fx);
        struct engine_event ev = {reply_topic, NULL, NULL, body};
        if (engine_deliver(def, inst, &ev, 1001 + i, &fx, err, sizeof(err)) != 0 || !fx.ended ||
            inst->state != ENGINE_FINISHED) {
            fprintf(stderr, "engine_bench: deliver: %s\n", err);
            return 1;
        }
        transitions += fx.nhist;
        if (persist) {
            char *s = engine_instance_to_json(inst);
            bytes += strlen(s);
            free(s);
        }
        cJSON_Delete(body);
        engine_effects_clear(&fx);
        engine_instance_free(inst);
    }
    counting = 0;
    double secs = now_s() - t0;
    printf("{\"instances\": %ld, \"transitions\": %llu, \"seconds\": %.3f, "
           "\"transitions_per_s\": %.0f, \"instances_per_s\": %.0f, "
           "\"allocs_per_transition\": %.2f, \"allocs_per_instance\": %.1f, "
           "\"persist\": %s, \"json_bytes_per_instance\": %.0f}\n",
           n, (unsigned long long)transitions, secs, (double)transitions / secs, (double)n / secs,
           (double)n_alloc / (double)transitions, (double)n_alloc / (double)n,
           persist ? "true" : "false", (double)bytes / (double)n);
    engine_def_free(def);
    free(json);
    return 0;
}
