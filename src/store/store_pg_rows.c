/* store_pg_rows.c - rows of one table waiting to go to PostgreSQL as multi-row statements.
 *
 * store_pg.c buffers the writes of a transaction that nothing reads back before the commit
 * (history rows, outbox rows, instance rows) and sends each table's rows as one
 * INSERT ... VALUES (...), (...) ... statement: one round trip and one executor run for a whole
 * batch instead of one per row. Values are copied when added (the caller's strings are borrowed
 * for the call only); parameters are text, or binary where the format says so.
 */
#include "store_int.h"

#include "../common/buf.h"
#include "../common/mem.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

/* PostgreSQL takes at most 65535 parameters per statement. */
#define PG_ROWS_MAX_PARAMS 65535

void pg_rows_add(struct pg_rows *r, const char *const *v, const int *len, const int *fmt)
{
    if (r->nvals + r->ncols > r->cap) {
        r->cap = r->cap ? r->cap * 2 : r->ncols * 64;
        r->v = flowd_xrealloc(r->v, r->cap * sizeof(*r->v));
        r->len = flowd_xrealloc(r->len, r->cap * sizeof(*r->len));
        r->fmt = flowd_xrealloc(r->fmt, r->cap * sizeof(*r->fmt));
    }
    for (size_t i = 0; i < r->ncols; i++) {
        size_t k = r->nvals++;
        r->fmt[k] = fmt ? fmt[i] : 0;
        if (!v[i]) {
            r->v[k] = NULL;
            r->len[k] = 0;
        } else if (r->fmt[k]) {
            r->v[k] = flowd_xmalloc((size_t)len[i] + 1);
            memcpy(r->v[k], v[i], (size_t)len[i]);
            r->len[k] = len[i];
        } else {
            r->v[k] = flowd_xstrdup(v[i]);
            r->len[k] = 0;
        }
    }
    r->rows++;
}

void pg_rows_clear(struct pg_rows *r)
{
    for (size_t i = 0; i < r->nvals; i++)
        free(r->v[i]);
    r->nvals = 0;
    r->rows = 0;
}

void pg_rows_release(struct pg_rows *r)
{
    pg_rows_clear(r);
    free(r->v);
    free(r->len);
    free(r->fmt);
    r->v = NULL;
    r->len = NULL;
    r->fmt = NULL;
    r->cap = 0;
}

PGresult *pg_rows_exec(PGconn *conn, const struct pg_rows *r, size_t first, size_t *nrows)
{
    size_t per = PG_ROWS_MAX_PARAMS / r->ncols;
    size_t n = r->rows - first < per ? r->rows - first : per;
    struct buf sql = BUF_INIT;
    buf_adds(&sql, r->head);
    int p = 1;
    for (size_t row = 0; row < n; row++) {
        buf_adds(&sql, row ? ",(" : "(");
        for (size_t c = 0; c < r->ncols; c++)
            buf_printf(&sql, c ? ",$%d" : "$%d", p++);
        buf_addc(&sql, ')');
    }
    buf_adds(&sql, r->tail);
    size_t off = first * r->ncols;
    PGresult *res = PQexecParams(conn, buf_str(&sql), (int)(n * r->ncols), NULL,
                                 (const char *const *)(r->v + off), r->len + off, r->fmt + off, 1);
    buf_release(&sql);
    *nrows = n;
    return res;
}
