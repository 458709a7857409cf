/* sdk_util.c - the SDK's leaf utilities: replaceable allocator, flowd_error_t, return code
 * names, a JSON validator that does not allocate, the messageId set, backoff with jitter, and
 * the per-partition offset tracker that decides what may be committed.
 *
 * Invariant of the tracker: items enter a partition's ring in offset order (the order the
 * consumer delivers them) and leave it only from the front, once acknowledged. So commit_next
 * is always an offset below which every request has its reply acknowledged.
 */
#include "sdk_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

/* ---- allocator ------------------------------------------------------------------------ */

static void *(*mem_malloc)(size_t) = malloc;
static void *(*mem_realloc)(void *, size_t) = realloc;
static void (*mem_free)(void *) = free;

FLOWD_EXPORT int flowd_replace_allocator(void *(*malloc_fn)(size_t),
                                         void *(*realloc_fn)(void *, size_t),
                                         void (*free_fn)(void *))
{
    if (!malloc_fn || !realloc_fn || !free_fn)
        return FLOWD_ERR_INVAL;
    mem_malloc = malloc_fn;
    mem_realloc = realloc_fn;
    mem_free = free_fn;
    return FLOWD_OK;
}

void *flowd__malloc(size_t size)
{
    return mem_malloc(size ? size : 1);
}

void *flowd__calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = flowd__malloc(n * size);
    if (p)
        memset(p, 0, (n * size) > 0 ? n * size : 1);
    return p;
}

void *flowd__realloc(void *ptr, size_t size)
{
    return mem_realloc(ptr, size ? size : 1);
}

void flowd__free(void *ptr)
{
    if (ptr)
        mem_free(ptr);
}

char *flowd__strndup(const char *s, size_t n)
{
    char *p = flowd__malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *flowd__strdup(const char *s)
{
    return flowd__strndup(s, strlen(s));
}

static char *vasprintf_(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static char *vasprintf_(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return NULL;
    char *p = flowd__malloc((size_t)n + 1);
    if (p)
        vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *flowd__asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = vasprintf_(fmt, ap);
    va_end(ap);
    return p;
}

int flowd__seterr(char *errstr, size_t errstr_size, int err, const char *fmt, ...)
{
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}

/* ---- version, return codes, errors --------------------------------------------------- */

FLOWD_EXPORT int flowd_version(void)
{
    return FLOWD_VERSION;
}

FLOWD_EXPORT const char *flowd_version_str(void)
{
    return FLOWD_VERSION_STR;
}

FLOWD_EXPORT const char *flowd_strerror(int err)
{
    switch (err) {
    case FLOWD_OK:
        return "ok";
    case FLOWD_ERR_NOMEM:
        return "out of memory";
    case FLOWD_ERR_INVAL:
        return "invalid argument";
    case FLOWD_ERR_AGAIN:
        return "temporarily unavailable";
    case FLOWD_ERR_NOTFOUND:
        return "not found";
    case FLOWD_ERR_IO:
        return "i/o error";
    case FLOWD_ERR_STATE:
        return "wrong state";
    case FLOWD_ERR_NOWAIT:
        return "no node waiting";
    case FLOWD_ERR_TOOBIG:
        return "too large";
    case FLOWD_ERR_KAFKA:
        return "kafka error";
    case FLOWD_ERR_EXISTS:
        return "already exists";
    }
    return "unknown error";
}

struct flowd_error {
    int kind;
    char *code;
    char *msg;
};

/* Returned when an error cannot be allocated: retriable, since memory may come back. */
static struct flowd_error oom_error = {FLOWD_ERROR_RETRIABLE, (char *)"NOMEM",
                                       (char *)"out of memory"};

FLOWD_EXPORT flowd_error_t *
flowd_error_new(enum flowd_error_kind kind, const char *code, const char *fmt, ...)
{
    struct flowd_error *error = flowd__calloc(1, sizeof(*error));
    if (!error)
        return &oom_error;
    error->kind = kind == FLOWD_ERROR_RETRIABLE ? FLOWD_ERROR_RETRIABLE : FLOWD_ERROR_FATAL;
    error->code = flowd__strdup(code && code[0] ? code : "ERROR");
    va_list ap;
    va_start(ap, fmt);
    error->msg = fmt ? vasprintf_(fmt, ap) : flowd__strdup("error");
    va_end(ap);
    if (!error->code || !error->msg) {
        flowd_error_destroy(error);
        return &oom_error;
    }
    return error;
}

FLOWD_EXPORT const char *flowd_error_code(const flowd_error_t *error)
{
    return error ? error->code : "";
}

FLOWD_EXPORT const char *flowd_error_message(const flowd_error_t *error)
{
    return error ? error->msg : "";
}

FLOWD_EXPORT int flowd_error_is_retriable(const flowd_error_t *error)
{
    return error && error->kind == FLOWD_ERROR_RETRIABLE;
}

FLOWD_EXPORT int flowd_error_is_fatal(const flowd_error_t *error)
{
    return error && error->kind == FLOWD_ERROR_FATAL;
}

FLOWD_EXPORT void flowd_error_destroy(flowd_error_t *error)
{
    if (!error || error == &oom_error)
        return;
    flowd__free(error->code);
    flowd__free(error->msg);
    flowd__free(error);
}

/* ---- JSON validation ------------------------------------------------------------------ */

#define JSON_MAX_DEPTH 512

struct jv {
    const unsigned char *p, *end;
};

static void jv_ws(struct jv *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int jv_lit(struct jv *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

static int jv_hex4(struct jv *j)
{
    for (int i = 0; i < 4; i++, j->p++) {
        if (j->p >= j->end)
            return 0;
        unsigned char c = *j->p;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return 0;
    }
    return 1;
}

/* A UTF-8 sequence starting at j->p (first byte >= 0x80). */
static int jv_utf8(struct jv *j)
{
    unsigned char c = *j->p;
    int n;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 1;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (j->end - j->p <= n)
        return 0;
    for (int i = 1; i <= n; i++) {
        if ((j->p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (j->p[i] & 0x3f);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 3 && cp < 0x10000) ||
        cp > 0x10ffff)
        return 0;
    j->p += n + 1;
    return 1;
}

static int jv_string(struct jv *j)
{
    j->p++; /* opening quote */
    while (j->p < j->end) {
        unsigned char c = *j->p;
        if (c == '"') {
            j->p++;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end)
                return 0;
            c = *j->p++;
            if (c == 'u') {
                if (!jv_hex4(j))
                    return 0;
            } else if (!strchr("\"\\/bfnrt", c) || c == '\0') {
                return 0;
            }
        } else if (c >= 0x80) {
            if (!jv_utf8(j))
                return 0;
        } else {
            j->p++;
        }
    }
    return 0;
}

static int jv_digits(struct jv *j)
{
    const unsigned char *start = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > start;
}

static int jv_number(struct jv *j)
{
    if (*j->p == '-')
        j->p++;
    if (j->p < j->end && *j->p == '0')
        j->p++;
    else if (!jv_digits(j))
        return 0;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!jv_digits(j))
            return 0;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!jv_digits(j))
            return 0;
    }
    return 1;
}

static int jv_value(struct jv *j, int depth)
{
    jv_ws(j);
    if (j->p >= j->end || depth > JSON_MAX_DEPTH)
        return 0;
    switch (*j->p) {
    case '"':
        return jv_string(j);
    case 't':
        return jv_lit(j, "true");
    case 'f':
        return jv_lit(j, "false");
    case 'n':
        return jv_lit(j, "null");
    case '{':
    case '[': {
        int obj = *j->p == '{';
        char close = obj ? '}' : ']';
        j->p++;
        jv_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 1;
        }
        for (;;) {
            if (obj) {
                jv_ws(j);
                if (j->p >= j->end || *j->p != '"' || !jv_string(j))
                    return 0;
                jv_ws(j);
                if (j->p >= j->end || *j->p != ':')
                    return 0;
                j->p++;
            }
            if (!jv_value(j, depth + 1))
                return 0;
            jv_ws(j);
            if (j->p >= j->end)
                return 0;
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            if (*j->p != close)
                return 0;
            j->p++;
            return 1;
        }
    }
    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))
            return jv_number(j);
        return 0;
    }
}

int flowd__json_valid(const char *s, size_t len)
{
    if (!s)
        return 0;
    struct jv j = {(const unsigned char *)s, (const unsigned char *)s + len};
    if (!jv_value(&j, 0))
        return 0;
    jv_ws(&j);
    return j.p == j.end;
}

/* Appends s as a JSON string literal to out (which has room: see the caller's size). */
static size_t json_escape(char *out, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    out[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
        case '\\':
            out[n++] = '\\';
            out[n++] = (char)*p;
            break;
        case '\n':
            out[n++] = '\\';
            out[n++] = 'n';
            break;
        case '\r':
            out[n++] = '\\';
            out[n++] = 'r';
            break;
        case '\t':
            out[n++] = '\\';
            out[n++] = 't';
            break;
        default:
            if (*p < 0x20) {
                memcpy(out + n, "\\u00", 4);
                n += 4;
                out[n++] = hex[*p >> 4];
                out[n++] = hex[*p & 15];
            } else {
                out[n++] = (char)*p;
            }
        }
    }
    out[n++] = '"';
    return n;
}

char *
flowd__error_reply_json(const char *code, const char *msg, int retriable, int attempts, size_t *len)
{
    /* Worst case: every byte becomes \u00XX (6 bytes), plus the fixed text. */
    size_t cap = 6 * (strlen(code) + strlen(msg)) + 128;
    char *out = flowd__malloc(cap);
    if (!out)
        return NULL;
    size_t n = 0;
    memcpy(out, "{\"errorMessage\":", 16);
    n = 16;
    n += json_escape(out + n, msg);
    memcpy(out + n, ",\"errorCode\":", 13);
    n += 13;
    n += json_escape(out + n, code);
    n += (size_t)snprintf(out + n, cap - n, ",\"retriable\":%s,\"attempts\":%d}",
                          retriable ? "true" : "false", attempts);
    if (len)
        *len = n;
    return out;
}

/* ---- messageId set -------------------------------------------------------------------- */

/* Open addressing over indexes into a FIFO ring of owned strings; the oldest is evicted when
 * the ring is full. Deletion uses backward-shift so no tombstones are needed. */
struct flowd__idset {
    size_t cap;      /* ring size: ids remembered */
    size_t nslots;   /* hash table size, a power of two >= 2 * cap */
    char **ring;     /* ids in insertion order */
    size_t head, n;  /* ring[head] is the oldest */
    uint32_t *slots; /* ring index + 1, 0 = empty */
};

static uint32_t fnv1a(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

unsigned flowd__worker_for(const char *key, size_t len, unsigned n)
{
    return n ? fnv1a(key, len) % n : 0;
}

struct flowd__idset *flowd__idset_new(size_t cap)
{
    if (cap == 0 || cap > (1u << 30))
        return NULL;
    struct flowd__idset *set = flowd__calloc(1, sizeof(*set));
    if (!set)
        return NULL;
    set->cap = cap;
    set->nslots = 16;
    while (set->nslots < 2 * cap)
        set->nslots <<= 1;
    set->ring = flowd__calloc(cap, sizeof(char *));
    set->slots = flowd__calloc(set->nslots, sizeof(uint32_t));
    if (!set->ring || !set->slots) {
        flowd__idset_free(set);
        return NULL;
    }
    return set;
}

static size_t idset_find(const struct flowd__idset *set, const char *id, int *found)
{
    size_t mask = set->nslots - 1;
    size_t i = fnv1a(id, strlen(id)) & mask;
    while (set->slots[i]) {
        if (strcmp(set->ring[set->slots[i] - 1], id) == 0) {
            *found = 1;
            return i;
        }
        i = (i + 1) & mask;
    }
    *found = 0;
    return i;
}

static void idset_remove_slot(struct flowd__idset *set, size_t i)
{
    size_t mask = set->nslots - 1;
    set->slots[i] = 0;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!set->slots[j])
            return;
        size_t home =
            fnv1a(set->ring[set->slots[j] - 1], strlen(set->ring[set->slots[j] - 1])) & mask;
        /* move j back to i unless its home lies cyclically in (i, j] */
        int between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            set->slots[i] = set->slots[j];
            set->slots[j] = 0;
            i = j;
        }
    }
}

int flowd__idset_has(const struct flowd__idset *set, const char *id)
{
    int found;
    idset_find(set, id, &found);
    return found;
}

int flowd__idset_add(struct flowd__idset *set, const char *id)
{
    int found;
    idset_find(set, id, &found);
    if (found)
        return 0;
    char *copy = flowd__strdup(id);
    if (!copy)
        return FLOWD_ERR_NOMEM;
    if (set->n == set->cap) { /* evict the oldest */
        char *old = set->ring[set->head];
        size_t i = idset_find(set, old, &found);
        idset_remove_slot(set, i);
        flowd__free(old);
        set->ring[set->head] = NULL;
        set->head = (set->head + 1) % set->cap;
        set->n--;
    }
    size_t pos = (set->head + set->n) % set->cap;
    set->ring[pos] = copy;
    set->n++;
    size_t i = idset_find(set, id, &found);
    set->slots[i] = (uint32_t)pos + 1;
    return 1;
}

void flowd__idset_free(struct flowd__idset *set)
{
    if (!set)
        return;
    if (set->ring)
        for (size_t i = 0; i < set->cap; i++)
            flowd__free(set->ring[i]);
    flowd__free(set->ring);
    flowd__free(set->slots);
    flowd__free(set);
}

/* ---- backoff, dead-letter topic ------------------------------------------------------ */

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

long flowd__backoff_ms(int retry, long base_ms, long max_ms, double jitter, uint64_t *rng)
{
    long d = base_ms > 0 ? base_ms : 1;
    for (int i = 1; i < retry && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    if (jitter <= 0)
        return d;
    if (jitter > 1)
        jitter = 1;
    long span = (long)((double)d * jitter);
    long r = span > 0 ? (long)(xorshift(rng) % (uint64_t)(span + 1)) : 0;
    return d - span + r;
}

int flowd__dlq_default(const char *reply_topic, char *out, size_t size)
{
    const char *at = reply_topic ? strstr(reply_topic, "engine.receive") : NULL;
    if (!at)
        return snprintf(out, size, "connector.dlq") < (int)size ? 0 : FLOWD_ERR_TOOBIG;
    /* suffix: a trailing ".v<digits>" */
    const char *suffix = "";
    const char *dot = strrchr(reply_topic, '.');
    if (dot && dot > at && dot[1] == 'v' && dot[2]) {
        const char *q = dot + 2;
        while (*q >= '0' && *q <= '9')
            q++;
        if (!*q)
            suffix = dot;
    }
    int n =
        snprintf(out, size, "%.*sconnector.dlq%s", (int)(at - reply_topic), reply_topic, suffix);
    return n >= 0 && (size_t)n < size ? 0 : FLOWD_ERR_TOOBIG;
}

/* ---- items and partitions ------------------------------------------------------------- */

void flowd__item_free(flowd__item_t *item)
{
    if (!item)
        return;
    flowd__free(item->key);
    flowd__free(item->body);
    if (item->headers)
        rd_kafka_headers_destroy(item->headers);
    if (item->extra)
        rd_kafka_headers_destroy(item->extra);
    flowd__free(item->hdr_cache);
    flowd__free(item->reply);
    flowd__free(item->error_message);
    flowd__free(item);
}

struct flowd__part *flowd__part_new(const char *topic, int32_t partition)
{
    struct flowd__part *part = flowd__calloc(1, sizeof(*part));
    if (!part)
        return NULL;
    part->topic = flowd__strdup(topic);
    if (!part->topic) {
        flowd__free(part);
        return NULL;
    }
    part->partition = partition;
    part->commit_next = -1;
    part->committed = -1;
    return part;
}

int flowd__part_push(struct flowd__part *part, flowd__item_t *item)
{
    if (part->n == part->cap) {
        size_t ncap = part->cap ? part->cap * 2 : 64;
        flowd__item_t **ring = flowd__malloc(ncap * sizeof(*ring));
        if (!ring)
            return FLOWD_ERR_NOMEM;
        for (size_t i = 0; i < part->n; i++)
            ring[i] = part->ring[(part->head + i) % part->cap];
        flowd__free(part->ring);
        part->ring = ring;
        part->cap = ncap;
        part->head = 0;
    }
    part->ring[(part->head + part->n) % part->cap] = item;
    part->n++;
    item->part = part;
    return FLOWD_OK;
}

size_t flowd__part_advance(struct flowd__part *part)
{
    size_t popped = 0;
    while (part->n > 0) {
        flowd__item_t *item = part->ring[part->head];
        if (!item->acked)
            break;
        part->commit_next = item->offset + 1;
        flowd__item_free(item);
        part->ring[part->head] = NULL;
        part->head = (part->head + 1) % part->cap;
        part->n--;
        popped++;
    }
    return popped;
}

void flowd__part_free(struct flowd__part *part)
{
    if (!part)
        return;
    for (size_t i = 0; i < part->n; i++)
        flowd__item_free(part->ring[(part->head + i) % part->cap]);
    flowd__free(part->ring);
    flowd__free(part->topic);
    flowd__free(part);
}
