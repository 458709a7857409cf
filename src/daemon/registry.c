/* registry.c - deployed definitions in memory, by key and version. Owned by the loop thread. */
#include "daemon.h"

#include "../common/mem.h"

#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

void registry_release(struct registry *reg)
{
    for (size_t i = 0; i < reg->n; i++) {
        for (int v = 0; v < reg->entries[i].nversions; v++)
            engine_def_free(reg->entries[i].versions[v]);
        free(reg->entries[i].versions);
        free(reg->entries[i].key);
    }
    free(reg->entries);
    memset(reg, 0, sizeof(*reg));
}

static struct registry_entry *find(const struct registry *reg, const char *key)
{
    for (size_t i = 0; i < reg->n; i++)
        if (strcmp(reg->entries[i].key, key) == 0)
            return &reg->entries[i];
    return NULL;
}

void registry_add(struct registry *reg, struct engine_def *def)
{
    struct registry_entry *e = find(reg, engine_def_key(def));
    if (!e) {
        if (reg->n == reg->cap) {
            reg->cap = reg->cap ? reg->cap * 2 : 16;
            reg->entries = flowd_xrealloc(reg->entries, reg->cap * sizeof(*reg->entries));
        }
        e = &reg->entries[reg->n++];
        memset(e, 0, sizeof(*e));
        e->key = flowd_xstrdup(engine_def_key(def));
    }
    int v = engine_def_version(def);
    flowd_assert(v >= 1);
    if (v > e->nversions) {
        e->versions = flowd_xrealloc(e->versions, (size_t)v * sizeof(*e->versions));
        for (int i = e->nversions; i < v; i++)
            e->versions[i] = NULL;
        e->nversions = v;
    }
    engine_def_free(e->versions[v - 1]);
    e->versions[v - 1] = def;
}

const struct engine_def *registry_get(const struct registry *reg, const char *key, int version)
{
    const struct registry_entry *e = find(reg, key);
    if (!e || e->nversions == 0)
        return NULL;
    if (version <= 0)
        return e->versions[e->nversions - 1];
    return version <= e->nversions ? e->versions[version - 1] : NULL;
}
