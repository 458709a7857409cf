/* json.h - cJSON, and the small helpers flowd adds on top.
 *
 * Reference rule (cJSON): a cJSON tree has exactly one owner. cJSON_AddItemToObject and
 * cJSON_AddItemToArray *take* the item (it must not be freed or added elsewhere afterwards);
 * cJSON_Duplicate makes an independent copy; cJSON_Delete frees a whole tree, which must not be
 * part of another tree. Getters (cJSON_GetObjectItem...) return borrowed pointers.
 */
#ifndef FLOWD_JSON_H
#define FLOWD_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

/* Nesting limits. cJSON parses recursively, and HTTP worker threads have small stacks: input
 * from outside (replies, request bodies, definitions) may nest JSON_MAX_DEPTH levels, flowd's
 * own stored documents (an instance holds replies under its data) JSON_MAX_DEPTH_STORED. */
#define JSON_MAX_DEPTH        64
#define JSON_MAX_DEPTH_STORED 192

/* Parses exactly len bytes (no NUL needed); NULL if not JSON, nested deeper than
 * JSON_MAX_DEPTH, or followed by trailing garbage. On failure writes "... at byte N" into errstr.
 */
cJSON *json_parse(const char *s, size_t len, char *errstr, size_t errstr_size);
/* The same with another nesting limit. */
cJSON *json_parse_depth(const char *s, size_t len, int max_depth, char *errstr, size_t errstr_size);
/* Compact printing; caller frees with free(). */
char *json_print(const cJSON *item);
/* Looks up a dotted path ("a.b.c"; array indexes as numbers "items.0.id"). Borrowed or NULL. */
const cJSON *json_path(const cJSON *root, const char *path);
/* Returns 1 if len bytes are valid UTF-8. */
int json_utf8_valid(const char *s, size_t len);
/* String member or NULL (borrowed). */
const char *json_str(const cJSON *obj, const char *name);

#endif
