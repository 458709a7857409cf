/* mem.h - allocation for the daemon and the CLI: abort on out-of-memory (redis zmalloc).
 * The SDK does not use these; it returns FLOWD_ERR_NOMEM instead. */
#ifndef FLOWD_MEM_H
#define FLOWD_MEM_H

#include <stddef.h>

void *flowd_xmalloc(size_t size);
void *flowd_xcalloc(size_t n, size_t size);
void *flowd_xrealloc(void *ptr, size_t size);
char *flowd_xstrdup(const char *s);
char *flowd_xstrndup(const char *s, size_t n);
/* printf into a new heap string. */
char *flowd_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Always-on assertion (redis serverAssert): logs file:line and aborts. */
#define flowd_assert(e) ((e) ? (void)0 : flowd__assert_fail(#e, __FILE__, __LINE__))
void flowd__assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#endif
