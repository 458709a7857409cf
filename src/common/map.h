/* map.h - open-addressing hash map from int64 keys to pointers (the daemon's instance cache).
 * Keys must not be INT64_MIN (the empty marker). Not thread-safe. */
#ifndef FLOWD_MAP_H
#define FLOWD_MAP_H

#include <stddef.h>
#include <stdint.h>

struct map_slot {
    int64_t key;
    void *val;
};

struct map {
    struct map_slot *slots;
    size_t cap; /* power of two */
    size_t len;
};

#define MAP_INIT   \
    {              \
        NULL, 0, 0 \
    }

void map_release(struct map *m); /* frees the table, not the values */
void map_clear(struct map *m);   /* empties it, keeping the table; the values are not freed */
void *map_get(const struct map *m, int64_t key);
void map_put(struct map *m, int64_t key, void *val); /* inserts or replaces */
void *map_del(struct map *m, int64_t key);           /* returns the removed value or NULL */
/* Iteration: for (size_t i = 0; i < m->cap; i++) if (map_used(m, i)) ... m->slots[i] */
int map_used(const struct map *m, size_t i);

#endif
