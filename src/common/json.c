/* json.c - helpers over cJSON: length-bounded parsing with positions, dotted paths, UTF-8. */
#include "json.h"

#include "err.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Returns the offset where nesting first exceeds max_depth, or -1. Strings are skipped, so
 * brackets inside them do not count. */
static long too_deep(const char *s, size_t len, int max_depth)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return (long)i;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return -1;
}

cJSON *json_parse(const char *s, size_t len, char *errstr, size_t errstr_size)
{
    return json_parse_depth(s, len, JSON_MAX_DEPTH, errstr, errstr_size);
}

cJSON *json_parse_depth(const char *s, size_t len, int max_depth, char *errstr, size_t errstr_size)
{
    long deep = too_deep(s, len, max_depth);
    if (deep >= 0) {
        flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                     "JSON nested deeper than %d levels (at byte %ld)", max_depth, deep);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = (at && at >= s && at <= s + len) ? (size_t)(at - s) : 0;
        flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "not valid JSON (error at byte %zu)",
                     off);
        return NULL;
    }
    /* cJSON stops after the first value: anything but whitespace after it is an error */
    if (end) {
        while (end < s + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
            end++;
        if (end < s + len && *end != '\0') {
            flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                         "not valid JSON (unexpected data after the value at byte %zu)",
                         (size_t)(end - s));
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

char *json_print(const cJSON *item)
{
    char *s = cJSON_PrintUnformatted(item);
    if (!s)
        return flowd_xstrdup("null");
    return s;
}

const cJSON *json_path(const cJSON *root, const char *path)
{
    const cJSON *cur = root;
    const char *p = path;
    char seg[256];
    while (cur && *p) {
        size_t n = strcspn(p, ".");
        if (n == 0 || n >= sizeof(seg))
            return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        if (cJSON_IsArray(cur)) {
            char *endp;
            long idx = strtol(seg, &endp, 10);
            if (*endp || idx < 0)
                return NULL;
            cur = cJSON_GetArrayItem(cur, (int)idx);
        } else if (cJSON_IsObject(cur)) {
            cur = cJSON_GetObjectItemCaseSensitive(cur, seg);
        } else {
            return NULL;
        }
        p += n;
        if (*p == '.')
            p++;
    }
    return cur;
}

int json_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *e = p + len;
    while (p < e) {
        unsigned c = *p;
        size_t n;
        unsigned min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1;
            min = 0x80;
            c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            min = 0x800;
            c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            min = 0x10000;
            c &= 0x07;
        } else {
            return 0;
        }
        if ((size_t)(e - p) <= n)
            return 0;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            c = (c << 6) | (p[i] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        p += n + 1;
    }
    return 1;
}

const char *json_str(const cJSON *obj, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}
