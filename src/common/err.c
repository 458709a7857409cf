/* err.c - error names and the errstr helper. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

const char *flowd_err_str(int err)
{
    switch (err) {
    case FLOWD_OK:
        return "ok";
    case FLOWD_ERR_NOMEM:
        return "out of memory";
    case FLOWD_ERR_INVAL:
        return "invalid input";
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

int flowd_seterr(char *errstr, size_t errstr_size, int err, const char *fmt, ...)
{
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}
