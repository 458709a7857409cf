/* buf.h - growable byte buffer, always NUL-terminated (curl dynbuf, git strbuf).
 *
 * A buf with max > 0 refuses to grow past max bytes and remembers it (toobig), so that
 * anything fed from the network has a hard cap. Allocation failure aborts (daemon rules).
 */
#ifndef FLOWD_BUF_H
#define FLOWD_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *ptr;  /* NUL-terminated contents, or NULL before the first append */
    size_t len; /* bytes used, without the NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* 0: unlimited */
    int toobig; /* an append was refused because of max */
};

#define BUF_INIT         \
    {                    \
        NULL, 0, 0, 0, 0 \
    }

void buf_init(struct buf *b, size_t max);
void buf_release(struct buf *b); /* frees memory, back to BUF_INIT state (keeps max) */
void buf_reset(struct buf *b);   /* len = 0, keeps memory */
/* Appends; return 0, or FLOWD_ERR_TOOBIG (and sets toobig) when max would be exceeded. */
int buf_add(struct buf *b, const void *data, size_t len);
int buf_adds(struct buf *b, const char *s);
int buf_addc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends s as a JSON string literal, quotes included. */
int buf_add_json_str(struct buf *b, const char *s, size_t len);
/* Returns the contents (never NULL) and leaves the buf empty; caller frees. */
char *buf_detach(struct buf *b);
/* Contents as a C string, "" when empty. Borrowed. */
const char *buf_str(const struct buf *b);

#endif
