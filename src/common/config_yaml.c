/* config_yaml.c - reads a flowd YAML config file into the raw values of struct flowd_config.
 *
 * Walks libyaml's event stream with a stack of open mappings: nested mapping keys join with '.',
 * so `kafka: {topic: {naming: {environment: prod.}}}` and `kafka.topic.naming.environment: prod.`
 * set the same key. Only scalars are values: a sequence or an alias is an error naming the key
 * and the line. Plain `~`, `null` and empty values are the empty string; quoted scalars keep
 * their text. The whole file is parsed and every key checked before any value is set, so a
 * file with an error changes nothing. Interpolation and value checks happen in config_resolve().
 */
#include "config.h"

#include "buf.h"
#include "config_int.h"
#include "err.h"
#include "mem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "banned.h"

#define MAX_DEPTH 64

struct yaml_entry {
    char *key, *value;
    size_t key_line, value_line;
};

struct yaml_load {
    const char *path;
    struct yaml_entry *entries;
    size_t nentries, cap;
    struct buf key;         /* dotted key of the current position */
    size_t base[MAX_DEPTH]; /* key length at the start of each open mapping */
    int depth;              /* open mappings */
    int want_key;           /* in the innermost mapping, the next node is a key */
    size_t key_line;        /* line of the current key */
    char *errstr;
    size_t errstr_size;
};

static void key_truncate(struct buf *b, size_t len)
{
    if (b->ptr) {
        b->len = len;
        b->ptr[len] = '\0';
    }
}

static int is_null(const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

static int on_scalar(struct yaml_load *l, const yaml_event_t *ev)
{
    size_t line = ev->start_mark.line + 1;
    const char *v = (const char *)ev->data.scalar.value;
    size_t vlen = ev->data.scalar.length;
    if (l->depth == 0) { /* a document that is one scalar: only an empty one is fine */
        if (is_null(ev))
            return 0;
        return flowd_seterr(l->errstr, l->errstr_size, FLOWD_ERR_INVAL,
                            "%s:%zu: the top level must be a mapping of keys", l->path, line);
    }
    if (memchr(v, '\0', vlen))
        return flowd_seterr(l->errstr, l->errstr_size, FLOWD_ERR_INVAL, "%s:%zu: NUL byte in a %s",
                            l->path, line, l->want_key ? "key" : "value");
    if (l->want_key) {
        if (vlen == 0)
            return flowd_seterr(l->errstr, l->errstr_size, FLOWD_ERR_INVAL, "%s:%zu: empty key",
                                l->path, line);
        key_truncate(&l->key, l->base[l->depth - 1]);
        if (l->key.len)
            buf_addc(&l->key, '.');
        buf_add(&l->key, v, vlen);
        l->key_line = line;
        l->want_key = 0;
        return 0;
    }
    if (l->nentries == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 32;
        l->entries = flowd_xrealloc(l->entries, l->cap * sizeof(*l->entries));
    }
    struct yaml_entry *e = &l->entries[l->nentries++];
    e->key = flowd_xstrdup(buf_str(&l->key));
    e->value = flowd_xstrdup(is_null(ev) ? "" : v);
    e->key_line = l->key_line;
    e->value_line = line;
    l->want_key = 1;
    return 0;
}

static int on_event(struct yaml_load *l, const yaml_event_t *ev)
{
    size_t line = ev->start_mark.line + 1;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return on_scalar(l, ev);
    case YAML_MAPPING_START_EVENT:
        if (l->depth > 0 && l->want_key)
            return flowd_seterr(l->errstr, l->errstr_size, FLOWD_ERR_INVAL,
                                "%s:%zu: a key must be a plain name, not a mapping", l->path, line);
        if (l->depth == MAX_DEPTH)
            return flowd_seterr(l->errstr, l->errstr_size, FLOWD_ERR_INVAL,
                                "%s:%zu: key '%s': nested deeper than %d levels", l->path, line,
                                buf_str(&l->key), MAX_DEPTH);
        if (l->depth == 0)
            key_truncate(&l->key, 0);
        l->base[l->depth++] = l->key.len;
        l->want_key = 1;
        return 0;
    case YAML_MAPPING_END_EVENT:
        l->depth--;
        l->want_key = 1;
        return 0;
    case YAML_SEQUENCE_START_EVENT:
        if (l->depth == 0)
            return flowd_seterr(l->errstr, l->errstr_size, FLOWD_ERR_INVAL,
                                "%s:%zu: the top level must be a mapping of keys, not a list",
                                l->path, line);
        if (l->want_key)
            return flowd_seterr(l->errstr, l->errstr_size, FLOWD_ERR_INVAL,
                                "%s:%zu: a key must be a plain name, not a list", l->path, line);
        return flowd_seterr(l->errstr, l->errstr_size, FLOWD_ERR_INVAL,
                            "%s:%zu: key '%s': lists are not supported, give a scalar "
                            "(a comma-separated string where a list is meant)",
                            l->path, line, buf_str(&l->key));
    case YAML_ALIAS_EVENT:
        return flowd_seterr(l->errstr, l->errstr_size, FLOWD_ERR_INVAL,
                            "%s:%zu: key '%s': aliases (*%s) are not supported", l->path, line,
                            l->want_key ? "(alias as a key)" : buf_str(&l->key),
                            (const char *)ev->data.alias.anchor);
    default: /* stream and document boundaries */
        return 0;
    }
}

static int
parse_error(const yaml_parser_t *parser, const char *path, char *errstr, size_t errstr_size)
{
    const char *problem = parser->problem ? parser->problem : "unknown error";
    if (parser->error == YAML_READER_ERROR)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "%s: cannot read YAML: %s at byte %zu", path, problem,
                            parser->problem_offset);
    if (parser->error == YAML_MEMORY_ERROR)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOMEM, "%s: out of memory", path);
    if (parser->context)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "%s:%zu:%zu: YAML syntax error: %s %s (line %zu)", path,
                            parser->problem_mark.line + 1, parser->problem_mark.column + 1, problem,
                            parser->context, parser->context_mark.line + 1);
    return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "%s:%zu:%zu: YAML syntax error: %s",
                        path, parser->problem_mark.line + 1, parser->problem_mark.column + 1,
                        problem);
}

int config_load_file(struct flowd_config *cfg, const char *path, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_IO, "cannot open config file '%s': %s",
                            path, strerror(errno));
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_NOMEM, "%s: out of memory", path);
    }
    yaml_parser_set_input_file(&parser, f);

    struct yaml_load l = {.path = path, .errstr = errstr, .errstr_size = errstr_size};
    buf_init(&l.key, 0);
    int rc = 0;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = parse_error(&parser, path, errstr, errstr_size);
            break;
        }
        rc = on_event(&l, &ev);
        int done = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (rc || done)
            break;
    }
    if (rc == 0 && ferror(f))
        rc = flowd_seterr(errstr, errstr_size, FLOWD_ERR_IO, "%s: read error", path);
    char why[FLOWD_ERRSTR_SIZE];
    for (size_t i = 0; i < l.nentries && rc == 0; i++)
        if (config_check_key(l.entries[i].key, why, sizeof(why)))
            rc = flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "%s:%zu: %s", path,
                              l.entries[i].key_line, why);
    for (size_t i = 0; i < l.nentries && rc == 0; i++) {
        char origin[FLOWD_ERRSTR_SIZE];
        snprintf(origin, sizeof(origin), "%s:%zu", path, l.entries[i].value_line);
        rc = config_set_from(cfg, l.entries[i].key, l.entries[i].value, CONFIG_SRC_FILE, origin,
                             errstr, errstr_size);
    }
    for (size_t i = 0; i < l.nentries; i++) {
        free(l.entries[i].key);
        free(l.entries[i].value);
    }
    free(l.entries);
    buf_release(&l.key);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}
