/* engine_expr.c - the condition language of exclusive gateways.
 *
 * Grammar (keywords are case-sensitive):
 *   expr    := and_expr { ("or" | "||") and_expr }
 *   and_expr:= not_expr { ("and" | "&&") not_expr }
 *   not_expr:= ("not" | "!") not_expr | cmp
 *   cmp     := operand [ ("==" | "!=" | "<" | "<=" | ">" | ">=") operand ]
 *   operand := number | string | "true" | "false" | "null" | path | "(" expr ")"
 *   path    := ident { "." (ident | digits) }      ("data.a.b" and "a.b" both mean data.a.b)
 *
 * Values are cJSON items: literals are built at parse time, paths are looked up in the data at
 * evaluation time (missing -> null). `==` between different types is false; numbers compare
 * numerically, strings bytewise; ordering between different types (or of booleans, null,
 * objects) is false. An operand on its own is true only if it is the boolean true.
 * Nesting (parentheses and `not`) is bounded by ENGINE_EXPR_MAX_DEPTH, so hostile input cannot
 * exhaust the stack. Error positions are 1-based byte offsets.
 */
#include "engine_int.h"

#include "../common/err.h"
#include "../common/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

enum expr_kind { EX_LIT, EX_PATH, EX_NOT, EX_AND, EX_OR, EX_CMP };
enum expr_op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE };

struct engine_expr {
    enum expr_kind kind;
    enum expr_op op;
    struct engine_expr *a, *b; /* NOT: a; CMP: a op b */
    struct engine_expr **kids; /* AND / OR: flat lists, so long chains do not nest */
    size_t nkids;
    cJSON *lit; /* EX_LIT */
    char *path; /* EX_PATH: path below data, "" for data itself */
};

struct parser {
    const char *src;
    size_t pos;
    int depth;
    char *errstr;
    size_t errstr_size;
    int failed;
};

static struct engine_expr *parse_or(struct parser *p);

static struct engine_expr *fail(struct parser *p, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static struct engine_expr *fail(struct parser *p, size_t pos, const char *fmt, ...)
{
    if (!p->failed) {
        char why[FLOWD_ERRSTR_SIZE];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        flowd_seterr(p->errstr, p->errstr_size, FLOWD_ERR_INVAL, "position %zu: %s", pos + 1, why);
        p->failed = 1;
    }
    return NULL;
}

static struct engine_expr *node_new(enum expr_kind kind)
{
    struct engine_expr *e = flowd_xcalloc(1, sizeof(*e));
    e->kind = kind;
    return e;
}

void engine_expr_free(struct engine_expr *expr)
{
    if (!expr)
        return;
    engine_expr_free(expr->a);
    engine_expr_free(expr->b);
    for (size_t i = 0; i < expr->nkids; i++)
        engine_expr_free(expr->kids[i]);
    free(expr->kids);
    cJSON_Delete(expr->lit);
    free(expr->path);
    free(expr);
}

static void skip_ws(struct parser *p)
{
    while (p->src[p->pos] == ' ' || p->src[p->pos] == '\t' || p->src[p->pos] == '\n' ||
           p->src[p->pos] == '\r')
        p->pos++;
}

static int is_ident_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_ident_char(char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '-';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Is the word at the current position exactly kw (not a prefix of a longer identifier)? */
static int at_word(struct parser *p, const char *kw)
{
    size_t n = strlen(kw);
    return strncmp(p->src + p->pos, kw, n) == 0 && !is_ident_char(p->src[p->pos + n]) &&
           p->src[p->pos + n] != '.';
}

static int accept(struct parser *p, const char *word, const char *sym)
{
    skip_ws(p);
    if (word && at_word(p, word)) {
        p->pos += strlen(word);
        return 1;
    }
    if (sym && strncmp(p->src + p->pos, sym, strlen(sym)) == 0) {
        p->pos += strlen(sym);
        return 1;
    }
    return 0;
}

static void add_utf8(struct buf *b, unsigned cp)
{
    if (cp < 0x80) {
        buf_addc(b, (char)cp);
    } else if (cp < 0x800) {
        buf_addc(b, (char)(0xC0 | (cp >> 6)));
        buf_addc(b, (char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        buf_addc(b, (char)(0xE0 | (cp >> 12)));
        buf_addc(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
        buf_addc(b, (char)(0x80 | (cp & 0x3F)));
    } else {
        buf_addc(b, (char)(0xF0 | (cp >> 18)));
        buf_addc(b, (char)(0x80 | ((cp >> 12) & 0x3F)));
        buf_addc(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
        buf_addc(b, (char)(0x80 | (cp & 0x3F)));
    }
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static struct engine_expr *parse_string(struct parser *p)
{
    size_t start = p->pos;
    char quote = p->src[p->pos++];
    struct buf b = BUF_INIT;
    for (;;) {
        char c = p->src[p->pos];
        if (c == '\0') {
            buf_release(&b);
            return fail(p, start, "unterminated string");
        }
        p->pos++;
        if (c == quote)
            break;
        if (c != '\\') {
            buf_addc(&b, c);
            continue;
        }
        size_t esc = p->pos - 1;
        char e = p->src[p->pos];
        if (e)
            p->pos++;
        switch (e) {
        case '"':
            buf_addc(&b, '"');
            break;
        case '\'':
            buf_addc(&b, '\'');
            break;
        case '\\':
            buf_addc(&b, '\\');
            break;
        case '/':
            buf_addc(&b, '/');
            break;
        case 'n':
            buf_addc(&b, '\n');
            break;
        case 't':
            buf_addc(&b, '\t');
            break;
        case 'r':
            buf_addc(&b, '\r');
            break;
        case 'b':
            buf_addc(&b, '\b');
            break;
        case 'f':
            buf_addc(&b, '\f');
            break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(p->src + p->pos, &cp) < 0)
                goto bad_u;
            p->pos += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->src[p->pos] != '\\' || p->src[p->pos + 1] != 'u' ||
                    hex4(p->src + p->pos + 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                    goto bad_u;
                p->pos += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                goto bad_u;
            }
            if (cp == 0)
                goto bad_u;
            add_utf8(&b, cp);
            break;
        }
        default:
            buf_release(&b);
            return fail(p, esc, "invalid escape in string");
        }
        continue;
    bad_u:
        buf_release(&b);
        return fail(p, esc, "invalid \\u escape in string");
    }
    struct engine_expr *e = node_new(EX_LIT);
    e->lit = cJSON_CreateString(buf_str(&b));
    buf_release(&b);
    if (!e->lit)
        flowd__assert_fail("cJSON_CreateString", __FILE__, __LINE__);
    return e;
}

static struct engine_expr *parse_number(struct parser *p)
{
    size_t start = p->pos;
    const char *s = p->src;
    size_t i = p->pos;
    if (s[i] == '-')
        i++;
    if (!is_digit(s[i]))
        return fail(p, start, "expected a number after '-'");
    while (is_digit(s[i]))
        i++;
    if (s[i] == '.') {
        i++;
        if (!is_digit(s[i]))
            return fail(p, i, "expected digits after the decimal point");
        while (is_digit(s[i]))
            i++;
    }
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '+' || s[i] == '-')
            i++;
        if (!is_digit(s[i]))
            return fail(p, i, "expected digits in the exponent");
        while (is_digit(s[i]))
            i++;
    }
    if (is_ident_start(s[i]) || s[i] == '.')
        return fail(p, i, "unexpected character after a number");
    char *tmp = flowd_xstrndup(s + start, i - start);
    double d = strtod(tmp, NULL);
    free(tmp);
    p->pos = i;
    struct engine_expr *e = node_new(EX_LIT);
    e->lit = cJSON_CreateNumber(d);
    return e;
}

static struct engine_expr *parse_path(struct parser *p)
{
    size_t start = p->pos;
    const char *s = p->src;
    size_t i = p->pos;
    for (;;) {
        /* one segment: an identifier or an array index */
        if (is_ident_start(s[i])) {
            while (is_ident_char(s[i]))
                i++;
        } else if (is_digit(s[i]) && i != start) {
            while (is_digit(s[i]))
                i++;
        } else {
            return fail(p, i, "expected a name after '.'");
        }
        if (s[i] != '.')
            break;
        i++;
    }
    size_t n = i - start;
    p->pos = i;
    struct engine_expr *e = node_new(EX_LIT);
    if (n == 4 && memcmp(s + start, "true", 4) == 0) {
        e->lit = cJSON_CreateTrue();
    } else if (n == 5 && memcmp(s + start, "false", 5) == 0) {
        e->lit = cJSON_CreateFalse();
    } else if (n == 4 && memcmp(s + start, "null", 4) == 0) {
        e->lit = cJSON_CreateNull();
    } else {
        e->kind = EX_PATH;
        if (n == 4 && memcmp(s + start, "data", 4) == 0)
            e->path = flowd_xstrdup("");
        else if (n > 5 && memcmp(s + start, "data.", 5) == 0)
            e->path = flowd_xstrndup(s + start + 5, n - 5);
        else
            e->path = flowd_xstrndup(s + start, n);
    }
    return e;
}

static struct engine_expr *parse_operand(struct parser *p)
{
    skip_ws(p);
    char c = p->src[p->pos];
    if (c == '(') {
        size_t open = p->pos++;
        if (++p->depth > ENGINE_EXPR_MAX_DEPTH)
            return fail(p, open, "nested too deeply (more than %d levels)", ENGINE_EXPR_MAX_DEPTH);
        struct engine_expr *inner = parse_or(p);
        p->depth--;
        if (!inner)
            return NULL;
        skip_ws(p);
        if (p->src[p->pos] != ')') {
            engine_expr_free(inner);
            return fail(p, p->pos, "missing ')' for the '(' at position %zu", open + 1);
        }
        p->pos++;
        return inner;
    }
    if (c == '"' || c == '\'')
        return parse_string(p);
    if (c == '-' || is_digit(c))
        return parse_number(p);
    if (is_ident_start(c))
        return parse_path(p);
    if (c == '\0')
        return fail(p, p->pos, "unexpected end of condition, expected a value");
    char tok[2] = {c, 0};
    return fail(p, p->pos, "unexpected '%s', expected a value", tok);
}

static int parse_cmp_op(struct parser *p, enum expr_op *op)
{
    skip_ws(p);
    size_t start = p->pos;
    size_t i = start;
    while (p->src[i] && strchr("=<>!", p->src[i]))
        i++;
    size_t n = i - start;
    if (n == 0)
        return 0;
    static const struct {
        const char *s;
        enum expr_op op;
    } ops[] = {{"==", OP_EQ}, {"!=", OP_NE}, {"<=", OP_LE},
               {">=", OP_GE}, {"<", OP_LT},  {">", OP_GT}};
    for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
        if (strlen(ops[k].s) == n && memcmp(ops[k].s, p->src + start, n) == 0) {
            *op = ops[k].op;
            p->pos = i;
            return 1;
        }
    }
    /* `!` alone is `not`: a comparison operator cannot start with it, so it is a syntax error
     * here too; report the whole run of operator characters */
    char tok[16];
    snprintf(tok, sizeof(tok), "%.*s", (int)(n < 15 ? n : 15), p->src + start);
    fail(p, start, "unknown operator '%s'", tok);
    return -1;
}

static struct engine_expr *parse_cmp(struct parser *p)
{
    struct engine_expr *a = parse_operand(p);
    if (!a)
        return NULL;
    enum expr_op op;
    int r = parse_cmp_op(p, &op);
    if (r == 0)
        return a;
    if (r < 0) {
        engine_expr_free(a);
        return NULL;
    }
    struct engine_expr *b = parse_operand(p);
    if (!b) {
        engine_expr_free(a);
        return NULL;
    }
    struct engine_expr *e = node_new(EX_CMP);
    e->op = op;
    e->a = a;
    e->b = b;
    return e;
}

static struct engine_expr *parse_not(struct parser *p)
{
    skip_ws(p);
    size_t at = p->pos;
    int is_not = accept(p, "not", NULL);
    if (!is_not && p->src[p->pos] == '!' && p->src[p->pos + 1] != '=') {
        p->pos++;
        is_not = 1;
    }
    if (!is_not)
        return parse_cmp(p);
    if (++p->depth > ENGINE_EXPR_MAX_DEPTH)
        return fail(p, at, "nested too deeply (more than %d levels)", ENGINE_EXPR_MAX_DEPTH);
    struct engine_expr *inner = parse_not(p);
    p->depth--;
    if (!inner)
        return NULL;
    struct engine_expr *e = node_new(EX_NOT);
    e->a = inner;
    return e;
}

/* Parses `sub { op sub }` into one flat AND/OR node (or sub itself when there is no op). */
static struct engine_expr *parse_chain(struct parser *p,
                                       enum expr_kind kind,
                                       const char *word,
                                       const char *sym,
                                       struct engine_expr *(*sub)(struct parser *))
{
    struct engine_expr *first = sub(p);
    if (!first || !accept(p, word, sym))
        return first;
    struct engine_expr *e = node_new(kind);
    size_t cap = 4;
    e->kids = flowd_xmalloc(cap * sizeof(*e->kids));
    e->kids[e->nkids++] = first;
    do {
        struct engine_expr *next = sub(p);
        if (!next) {
            engine_expr_free(e);
            return NULL;
        }
        if (e->nkids == cap) {
            cap *= 2;
            e->kids = flowd_xrealloc(e->kids, cap * sizeof(*e->kids));
        }
        e->kids[e->nkids++] = next;
    } while (accept(p, word, sym));
    return e;
}

static struct engine_expr *parse_and(struct parser *p)
{
    return parse_chain(p, EX_AND, "and", "&&", parse_not);
}

static struct engine_expr *parse_or(struct parser *p)
{
    return parse_chain(p, EX_OR, "or", "||", parse_and);
}

struct engine_expr *engine_expr_parse(const char *src, char *errstr, size_t errstr_size)
{
    struct parser p = {src, 0, 0, errstr, errstr_size, 0};
    skip_ws(&p);
    if (!src[p.pos]) {
        fail(&p, p.pos, "empty condition");
        return NULL;
    }
    struct engine_expr *e = parse_or(&p);
    if (!e)
        return NULL;
    skip_ws(&p);
    if (src[p.pos]) {
        size_t n = strcspn(src + p.pos, " \t\r\n");
        char tok[32];
        snprintf(tok, sizeof(tok), "%.*s", (int)(n < 31 ? n : 31), src + p.pos);
        engine_expr_free(e);
        fail(&p, p.pos, "unexpected '%s' (expected and, or, or the end)", tok);
        return NULL;
    }
    return e;
}

/* ---- evaluation ---------------------------------------------------------------------- */

static const cJSON *operand(const struct engine_expr *e, const cJSON *data)
{
    if (e->kind == EX_LIT)
        return e->lit;
    if (e->kind == EX_PATH)
        return e->path[0] ? json_path(data, e->path) : data;
    return NULL;
}

static int compare(enum expr_op op, const cJSON *a, const cJSON *b)
{
    int ta = a ? (a->type & 0xFF) : cJSON_NULL;
    int tb = b ? (b->type & 0xFF) : cJSON_NULL;
    /* true and false are distinct cJSON types: compare them as one "boolean" type */
    if (ta == cJSON_True || ta == cJSON_False)
        ta = cJSON_True | cJSON_False;
    if (tb == cJSON_True || tb == cJSON_False)
        tb = cJSON_True | cJSON_False;
    if (ta != tb)
        return op == OP_NE;
    int c;
    if (ta == cJSON_Number) {
        double x = a->valuedouble, y = b->valuedouble;
        c = x < y ? -1 : x > y ? 1 : 0;
    } else if (ta == cJSON_String) {
        c = strcmp(a->valuestring, b->valuestring);
    } else {
        int eq;
        if (ta == cJSON_NULL)
            eq = 1;
        else if (ta == (cJSON_True | cJSON_False))
            eq = cJSON_IsTrue(a) == cJSON_IsTrue(b);
        else
            eq = cJSON_Compare(a, b, 1);
        if (op == OP_EQ)
            return eq;
        if (op == OP_NE)
            return !eq;
        return 0; /* no ordering of booleans, null, objects, arrays */
    }
    switch (op) {
    case OP_EQ:
        return c == 0;
    case OP_NE:
        return c != 0;
    case OP_LT:
        return c < 0;
    case OP_LE:
        return c <= 0;
    case OP_GT:
        return c > 0;
    case OP_GE:
        return c >= 0;
    }
    return 0;
}

int engine_expr_eval(const struct engine_expr *expr, const cJSON *data)
{
    switch (expr->kind) {
    case EX_LIT:
    case EX_PATH:
        return cJSON_IsTrue(operand(expr, data)) ? 1 : 0;
    case EX_NOT:
        return !engine_expr_eval(expr->a, data);
    case EX_AND:
        for (size_t i = 0; i < expr->nkids; i++)
            if (!engine_expr_eval(expr->kids[i], data))
                return 0;
        return 1;
    case EX_OR:
        for (size_t i = 0; i < expr->nkids; i++)
            if (engine_expr_eval(expr->kids[i], data))
                return 1;
        return 0;
    case EX_CMP: {
        /* an operand of a comparison is a literal or a path (parenthesized comparisons
         * compare as booleans) */
        const cJSON *a = operand(expr->a, data), *b = operand(expr->b, data);
        cJSON ta, tb;
        if (expr->a->kind != EX_LIT && expr->a->kind != EX_PATH) {
            memset(&ta, 0, sizeof(ta));
            ta.type = engine_expr_eval(expr->a, data) ? cJSON_True : cJSON_False;
            a = &ta;
        }
        if (expr->b->kind != EX_LIT && expr->b->kind != EX_PATH) {
            memset(&tb, 0, sizeof(tb));
            tb.type = engine_expr_eval(expr->b, data) ? cJSON_True : cJSON_False;
            b = &tb;
        }
        return compare(expr->op, a, b);
    }
    }
    return 0;
}
