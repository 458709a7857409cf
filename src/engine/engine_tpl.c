/* engine_tpl.c - `${...}` templates for topics, message bodies and header values.
 *
 * A template is compiled once into segments: literal text and variables. ${prefix}, ${suffix}
 * and ${processDefinitionKey} are constant for a definition and are folded into the literal text
 * at compile time. In JSON mode the compiler follows the template's JSON string literals, so each
 * variable knows whether it stands inside one: outside, a value is inserted as a JSON value
 * (strings quoted and escaped, objects printed compactly); inside, as escaped string content.
 * Either way a value cannot change the structure of the document.
 *
 * Invariant: a JSON template that passed engine_tpl_check() (placeholders null outside strings,
 * nothing inside) renders valid JSON for any values: a value outside a string is one complete
 * JSON token wherever `null` was accepted, and escaped content never ends a string. Such a
 * template is marked verified and its renderings are not parsed again.
 */
#include "engine_int.h"

#include "../common/err.h"
#include "../common/mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

#define ZERO_UUID "00000000-0000-0000-0000-000000000000"

enum json_state { J_OUT, J_IN, J_IN_ESC };

struct compiler {
    struct engine_tpl *tpl;
    size_t cap;
    struct buf lit;
};

static void
add_seg(struct compiler *c, enum engine_tpl_var var, const char *text, size_t len, int in_string)
{
    struct engine_tpl *tpl = c->tpl;
    if (tpl->nsegs == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4;
        tpl->segs = flowd_xrealloc(tpl->segs, c->cap * sizeof(*tpl->segs));
    }
    struct engine_tpl_seg *seg = &tpl->segs[tpl->nsegs++];
    seg->var = var;
    seg->text = flowd_xstrndup(text, len);
    seg->len = len;
    seg->in_string = in_string;
}

static void flush_lit(struct compiler *c)
{
    if (c->lit.len) {
        add_seg(c, 0, c->lit.ptr, c->lit.len, 0);
        buf_reset(&c->lit);
    }
}

/* Appends s (len bytes) as the contents of a JSON string literal, without the quotes. */
static void add_escaped(struct buf *b, const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == '"' || ch == '\\')
            break;
    }
    if (i == len) {
        buf_add(b, s, len);
        return;
    }
    /* reuse the common escaper, then drop the quotes it puts around the string */
    size_t start = b->len;
    buf_add_json_str(b, s, len);
    memmove(b->ptr + start, b->ptr + start + 1, b->len - start - 2);
    b->len -= 2;
    b->ptr[b->len] = '\0';
}

/* A folded constant string, as the mode and position require. */
static void add_const(struct buf *b, enum engine_tpl_mode mode, enum json_state st, const char *s)
{
    if (!s)
        s = "";
    if (mode == ENGINE_TPL_TEXT)
        buf_adds(b, s);
    else if (st == J_IN)
        add_escaped(b, s, strlen(s));
    else
        buf_add_json_str(b, s, strlen(s));
}

static int classify(const char *name, size_t n, enum engine_tpl_var *var, size_t *path_off)
{
    static const struct {
        const char *name;
        enum engine_tpl_var var;
    } names[] = {
        {"processInstanceId", ENGINE_VAR_ID},
        {"processInstanceUuid", ENGINE_VAR_UUID},
        {"processDefinitionKey", ENGINE_VAR_KEY},
        {"processKey", ENGINE_VAR_KEY},
        {"prefix", ENGINE_VAR_PREFIX},
        {"suffix", ENGINE_VAR_SUFFIX},
        {"data", ENGINE_VAR_DATA},
    };
    *path_off = n;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i].name) == n && memcmp(names[i].name, name, n) == 0) {
            *var = names[i].var;
            return 0;
        }
    }
    if (n > 5 && memcmp(name, "data.", 5) == 0) {
        /* every segment of the path must be non-empty */
        const char *p = name + 5, *e = name + n;
        if (*p == '.' || e[-1] == '.')
            return -1;
        for (const char *q = p; q + 1 < e; q++)
            if (q[0] == '.' && q[1] == '.')
                return -1;
        *var = ENGINE_VAR_DATA;
        *path_off = 5;
        return 0;
    }
    return -1;
}

int engine_tpl_compile(const char *src,
                       enum engine_tpl_mode mode,
                       const struct engine_env *env,
                       const char *def_key,
                       struct engine_tpl **out,
                       char *errstr,
                       size_t errstr_size)
{
    struct compiler c = {flowd_xcalloc(1, sizeof(struct engine_tpl)), 0, BUF_INIT};
    c.tpl->mode = mode;
    enum json_state st = J_OUT;
    size_t n = strlen(src);
    int rc = 0;

    for (size_t i = 0; i < n;) {
        char ch = src[i];
        if (ch == '$' && i + 1 < n && src[i + 1] == '$') {
            buf_addc(&c.lit, '$'); /* `$$` is an escaped `$` */
            if (st == J_IN_ESC)
                st = J_IN;
            i += 2;
            continue;
        }
        if (ch == '$' && i + 1 < n && src[i + 1] == '{') {
            const char *name = src + i + 2;
            const char *close = memchr(name, '}', n - i - 2);
            if (!close) {
                rc = flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                  "unterminated '${' at position %zu", i + 1);
                goto err;
            }
            size_t nlen = (size_t)(close - name);
            enum engine_tpl_var var;
            size_t path_off;
            if (classify(name, nlen, &var, &path_off) < 0) {
                rc = flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                  "unknown variable '${%.*s}' at position %zu", (int)nlen, name,
                                  i + 1);
                goto err;
            }
            if (mode == ENGINE_TPL_JSON && st == J_IN_ESC) {
                rc = flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                  "variable '${%.*s}' at position %zu follows a backslash",
                                  (int)nlen, name, i + 1);
                goto err;
            }
            c.tpl->vars |= var;
            if (var == ENGINE_VAR_PREFIX || var == ENGINE_VAR_SUFFIX || var == ENGINE_VAR_KEY) {
                const char *val = def_key;
                if (var != ENGINE_VAR_KEY)
                    val = env ? (var == ENGINE_VAR_PREFIX ? env->prefix : env->suffix) : NULL;
                add_const(&c.lit, mode, st, val);
            } else {
                flush_lit(&c);
                add_seg(&c, var, name + path_off, nlen - path_off,
                        mode == ENGINE_TPL_JSON && st == J_IN);
            }
            i = (size_t)(close - src) + 1;
            continue;
        }
        buf_addc(&c.lit, ch);
        if (mode == ENGINE_TPL_JSON) {
            if (st == J_OUT && ch == '"')
                st = J_IN;
            else if (st == J_IN && ch == '\\')
                st = J_IN_ESC;
            else if (st == J_IN && ch == '"')
                st = J_OUT;
            else if (st == J_IN_ESC)
                st = J_IN;
        }
        i++;
    }
    flush_lit(&c);
    buf_release(&c.lit);
    *out = c.tpl;
    return 0;
err:
    buf_release(&c.lit);
    engine_tpl_free(c.tpl);
    *out = NULL;
    return rc;
}

void engine_tpl_free(struct engine_tpl *tpl)
{
    if (!tpl)
        return;
    for (size_t i = 0; i < tpl->nsegs; i++)
        free(tpl->segs[i].text);
    free(tpl->segs);
    free(tpl);
}

int engine_tpl_is_const(const struct engine_tpl *tpl)
{
    for (size_t i = 0; i < tpl->nsegs; i++)
        if (tpl->segs[i].var)
            return 0;
    return 1;
}

/* Numbers: integers without a fraction, others with the shortest of %.15g / %.17g that
 * round-trips (as cJSON does); non-finite values (never parsed from JSON) as null. */
static void add_number(struct buf *b, double d)
{
    if (d != d || d - d != 0) {
        buf_add(b, "null", 4);
    } else if (d >= -9e15 && d <= 9e15 && (double)(long long)d == d) {
        buf_printf(b, "%lld", (long long)d);
    } else {
        char tmp[32];
        snprintf(tmp, sizeof(tmp), "%.15g", d);
        if (strtod(tmp, NULL) != d)
            snprintf(tmp, sizeof(tmp), "%.17g", d);
        buf_adds(b, tmp);
    }
}

static void add_printed(struct buf *b, const cJSON *v, int escape)
{
    char *s = json_print(v);
    if (escape)
        add_escaped(b, s, strlen(s));
    else
        buf_adds(b, s);
    free(s);
}

/* TEXT rendering of a value (escape: as JSON string content). */
static void add_text_value(struct buf *b, const cJSON *v, int escape)
{
    if (!v || cJSON_IsNull(v))
        buf_add(b, "null", 4);
    else if (cJSON_IsString(v) && escape)
        add_escaped(b, v->valuestring, strlen(v->valuestring));
    else if (cJSON_IsString(v))
        buf_adds(b, v->valuestring);
    else if (cJSON_IsNumber(v))
        add_number(b, v->valuedouble);
    else if (cJSON_IsTrue(v))
        buf_add(b, "true", 4);
    else if (cJSON_IsFalse(v))
        buf_add(b, "false", 5);
    else
        add_printed(b, v, escape);
}

static void add_json_value(struct buf *b, const cJSON *v)
{
    if (cJSON_IsString(v))
        buf_add_json_str(b, v->valuestring, strlen(v->valuestring));
    else if (v && (cJSON_IsArray(v) || cJSON_IsObject(v)))
        add_printed(b, v, 0);
    else
        add_text_value(b, v, 0);
}

static void render_segs(const struct engine_tpl *tpl,
                        const struct engine_tpl_ctx *ctx,
                        int placeholder,
                        struct buf *out)
{
    int json = tpl->mode == ENGINE_TPL_JSON;
    for (size_t i = 0; i < tpl->nsegs; i++) {
        const struct engine_tpl_seg *seg = &tpl->segs[i];
        if (!seg->var) {
            buf_add(out, seg->text, seg->len);
            continue;
        }
        if (placeholder && json) {
            if (!seg->in_string)
                buf_add(out, "null", 4);
            continue;
        }
        switch (seg->var) {
        case ENGINE_VAR_ID:
            buf_printf(out, "%" PRId64, placeholder ? (int64_t)0 : ctx->instance_id);
            break;
        case ENGINE_VAR_UUID: {
            const char *u = placeholder ? ZERO_UUID : ctx->instance_uuid;
            if (!u)
                u = "";
            if (json && !seg->in_string)
                buf_add_json_str(out, u, strlen(u));
            else if (json)
                add_escaped(out, u, strlen(u));
            else
                buf_adds(out, u);
            break;
        }
        default: {
            const cJSON *v = NULL;
            if (!placeholder && ctx->data)
                v = seg->len ? json_path(ctx->data, seg->text) : ctx->data;
            if (json && !seg->in_string)
                add_json_value(out, v);
            else
                add_text_value(out, v, json);
            break;
        }
        }
    }
}

static int check_json(const struct buf *out, size_t start, char *errstr, size_t errstr_size)
{
    char why[FLOWD_ERRSTR_SIZE];
    cJSON *doc = json_parse(out->ptr ? out->ptr + start : "", out->len - start, why, sizeof(why));
    if (!doc)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "template does not render to JSON: %s", why);
    cJSON_Delete(doc);
    return 0;
}

int engine_tpl_render_buf(const struct engine_tpl *tpl,
                          const struct engine_tpl_ctx *ctx,
                          struct buf *out,
                          char *errstr,
                          size_t errstr_size)
{
    size_t start = out->len;
    render_segs(tpl, ctx, 0, out);
    if (out->toobig)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_TOOBIG,
                            "template rendering exceeds %zu bytes", out->max);
    if (tpl->mode == ENGINE_TPL_JSON && !tpl->verified)
        return check_json(out, start, errstr, errstr_size);
    return 0;
}

int engine_tpl_check(struct engine_tpl *tpl, struct buf *out, char *errstr, size_t errstr_size)
{
    struct buf tmp = BUF_INIT;
    struct buf *b = out ? out : &tmp;
    size_t start = b->len;
    struct engine_tpl_ctx ctx = {0};
    render_segs(tpl, &ctx, 1, b);
    int rc = 0;
    if (tpl->mode == ENGINE_TPL_JSON) {
        rc = check_json(b, start, errstr, errstr_size);
        if (rc == 0)
            tpl->verified = 1;
    }
    buf_release(&tmp);
    return rc;
}

char *engine_tpl_render(const char *tpl,
                        enum engine_tpl_mode mode,
                        const struct engine_tpl_ctx *ctx,
                        char *errstr,
                        size_t errstr_size)
{
    struct engine_tpl *t;
    if (engine_tpl_compile(tpl, mode, ctx->env, ctx->def_key, &t, errstr, errstr_size))
        return NULL;
    struct buf out = BUF_INIT;
    int rc = engine_tpl_render_buf(t, ctx, &out, errstr, errstr_size);
    engine_tpl_free(t);
    if (rc) {
        buf_release(&out);
        return NULL;
    }
    return buf_detach(&out);
}

int engine_topic_valid(const char *s, size_t len)
{
    if (len == 0 || len > 249)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}
