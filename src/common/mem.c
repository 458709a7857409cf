/* mem.c - aborting allocators and the always-on assertion. */
#include "mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t size)
{
    fprintf(stderr, "flowd: out of memory allocating %zu bytes\n", size);
    abort();
}

void *flowd_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

void *flowd_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *flowd_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

char *flowd_xstrdup(const char *s)
{
    return flowd_xstrndup(s, strlen(s));
}

char *flowd_xstrndup(const char *s, size_t n)
{
    char *p = flowd_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *flowd_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    char *p = flowd_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void flowd__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "flowd: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
