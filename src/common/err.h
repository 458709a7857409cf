/* err.h - the one error enum of flowd.
 *
 * Functions return int: 0 (FLOWD_OK) or a negative code. Anything that parses or validates also
 * takes `char *errstr, size_t errstr_size` and writes a sentence naming what was wrong and where.
 */
#ifndef FLOWD_ERR_H
#define FLOWD_ERR_H

#include <stddef.h>

#define FLOWD_ERRSTR_SIZE 256

enum flowd_err {
    FLOWD_OK = 0,
    FLOWD_ERR_NOMEM = -1,
    FLOWD_ERR_INVAL = -2,    /* bad input: errstr says what and where */
    FLOWD_ERR_AGAIN = -3,    /* transient (busy, locked): retry later */
    FLOWD_ERR_NOTFOUND = -4, /* no such definition / instance / row */
    FLOWD_ERR_IO = -5,       /* store or file system failure */
    FLOWD_ERR_STATE = -6,    /* the object is in a state that refuses the call */
    FLOWD_ERR_NOWAIT = -7,   /* no node of the instance waits for this message */
    FLOWD_ERR_TOOBIG = -8,   /* input above a configured limit */
    FLOWD_ERR_KAFKA = -9,    /* Kafka client failure */
    FLOWD_ERR_EXISTS = -10,  /* unique key already present */
};

/* Returns a static, human-readable name for an error code. */
const char *flowd_err_str(int err);

/* Writes a formatted message into errstr (if not NULL) and returns err. */
int flowd_seterr(char *errstr, size_t errstr_size, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
