/* map.c - linear probing with backward-shift deletion (no tombstones). */
#include "map.h"

#include "mem.h"

#include <stdlib.h>

#define EMPTY INT64_MIN

static size_t hash(int64_t key)
{
    uint64_t x = (uint64_t)key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

void map_release(struct map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->len = 0;
}

void map_clear(struct map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        m->slots[i].key = EMPTY;
    m->len = 0;
}

int map_used(const struct map *m, size_t i)
{
    return m->slots[i].key != EMPTY;
}

static void grow(struct map *m)
{
    size_t old_cap = m->cap;
    struct map_slot *old = m->slots;
    m->cap = old_cap ? old_cap * 2 : 64;
    m->slots = flowd_xmalloc(m->cap * sizeof(*m->slots));
    for (size_t i = 0; i < m->cap; i++)
        m->slots[i].key = EMPTY;
    m->len = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key != EMPTY)
            map_put(m, old[i].key, old[i].val);
    free(old);
}

void *map_get(const struct map *m, int64_t key)
{
    if (!m->cap)
        return NULL;
    for (size_t i = hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key == key)
            return m->slots[i].val;
        if (m->slots[i].key == EMPTY)
            return NULL;
    }
}

void map_put(struct map *m, int64_t key, void *val)
{
    flowd_assert(key != EMPTY);
    if ((m->len + 1) * 4 >= m->cap * 3)
        grow(m);
    for (size_t i = hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key == key) {
            m->slots[i].val = val;
            return;
        }
        if (m->slots[i].key == EMPTY) {
            m->slots[i].key = key;
            m->slots[i].val = val;
            m->len++;
            return;
        }
    }
}

void *map_del(struct map *m, int64_t key)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = hash(key) & mask;
    while (m->slots[i].key != key) {
        if (m->slots[i].key == EMPTY)
            return NULL;
        i = (i + 1) & mask;
    }
    void *val = m->slots[i].val;
    /* backward shift: move later entries of the probe run into the hole */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->slots[j].key == EMPTY)
            break;
        size_t home = hash(m->slots[j].key) & mask;
        /* can slot j move to i? only if its home is not in (i, j] cyclically */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = EMPTY;
    m->len--;
    return val;
}
