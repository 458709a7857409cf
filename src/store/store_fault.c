/* store_fault.c - a fault-injecting shim over any store backend, for tests (SQLite's
 * test_malloc.c / test6.c idea). It is switched on by the environment variable
 * FLOWD_STORE_FAULTS, read once at startup:
 *
 *   FLOWD_STORE_FAULTS="RULE[,RULE...]"   RULE = OP/N/ACTION (every Nth call) | OP@N/ACTION (the
 * Nth only) OP     = begin | commit | instance_put | history_add | outbox_add | inbox | mark_sent |
 * write (write = any of the writes above, commit included) ACTION = io (FLOWD_ERR_IO, e.g. disk
 * full) | busy (FLOWD_ERR_AGAIN, database locked) | crash (SIGKILL before the call) | crash-after
 * (SIGKILL right after it succeeded)
 *
 * The shim copies the backend's method table and overrides the write methods, so methods added
 * to the vtable later pass through untouched. One shim per process (it keeps its state in statics).
 */
#include "store.h"

#include "../common/err.h"
#include "../common/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/banned.h"

enum fault_op {
    OP_BEGIN,
    OP_COMMIT,
    OP_INSTANCE_PUT,
    OP_HISTORY_ADD,
    OP_OUTBOX_ADD,
    OP_INBOX,
    OP_MARK_SENT,
    OP_COUNT,
    OP_WRITE = OP_COUNT
};
enum fault_action { ACT_IO, ACT_BUSY, ACT_CRASH, ACT_CRASH_AFTER };

static const char *op_names[] = {"begin",      "commit", "instance_put", "history_add",
                                 "outbox_add", "inbox",  "mark_sent"};

struct fault_rule {
    int op; /* enum fault_op or OP_WRITE */
    long n;
    int once; /* fail only the Nth call, not every Nth */
    enum fault_action action;
};

static struct store_methods fault_methods;
static const struct store_methods *inner;
static struct fault_rule rules[16];
static int nrules;
static long calls[OP_COUNT + 1]; /* per op, and OP_WRITE for all writes */

/* Returns 0 to go on, a negative error to return, or 1 to crash after the call. */
static int check(enum fault_op op)
{
    calls[op]++;
    if (op != OP_BEGIN)
        calls[OP_WRITE]++;
    for (int i = 0; i < nrules; i++) {
        const struct fault_rule *r = &rules[i];
        if (r->op != (int)op && !(r->op == OP_WRITE && op != OP_BEGIN))
            continue;
        long c = calls[r->op];
        if (r->once ? c != r->n : c % r->n != 0)
            continue;
        switch (r->action) {
        case ACT_IO:
            return FLOWD_ERR_IO;
        case ACT_BUSY:
            return FLOWD_ERR_AGAIN;
        case ACT_CRASH:
            FLOWD_LOG(LOG_WARN, LOG_SUB_STORE, "fault injection: SIGKILL before %s call %ld",
                      op_names[op], calls[op]);
            raise(SIGKILL);
            break;
        case ACT_CRASH_AFTER:
            return 1;
        }
    }
    return 0;
}

static int after(int verdict, int rc, enum fault_op op)
{
    if (verdict == 1 && rc == 0) {
        FLOWD_LOG(LOG_WARN, LOG_SUB_STORE, "fault injection: SIGKILL after %s call %ld",
                  op_names[op], calls[op]);
        raise(SIGKILL);
    }
    return rc;
}

#define FAULT_WRAP(op, method, params, args)     \
    static int fault_##method params             \
    {                                            \
        int v = check(op);                       \
        if (v < 0)                               \
            return v;                            \
        return after(v, inner->method args, op); \
    }

FAULT_WRAP(OP_BEGIN, x_begin, (struct store * st), (st))
FAULT_WRAP(OP_COMMIT, x_commit, (struct store * st), (st))
FAULT_WRAP(OP_INSTANCE_PUT,
           x_instance_put,
           (struct store * st, const struct store_instance_row *row),
           (st, row))
FAULT_WRAP(OP_HISTORY_ADD,
           x_history_add,
           (struct store * st, int64_t id, const struct engine_history *h),
           (st, id, h))
FAULT_WRAP(OP_OUTBOX_ADD,
           x_outbox_add,
           (struct store * st, const struct store_outbox_row *row, int64_t now, int64_t *id),
           (st, row, now, id))
FAULT_WRAP(OP_INBOX,
           x_inbox_check_add,
           (struct store * st, const char *key, int64_t now),
           (st, key, now))
FAULT_WRAP(OP_MARK_SENT,
           x_outbox_mark_sent,
           (struct store * st, const int64_t *ids, size_t n, int64_t now),
           (st, ids, n, now))

static int parse_rule(const char *s, size_t len, struct fault_rule *r)
{
    char buf[64];
    if (len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *sep = strpbrk(buf, "/@");
    if (!sep)
        return -1;
    r->once = *sep == '@';
    *sep = '\0';
    char *num = sep + 1, *act = strchr(num, '/');
    if (!act)
        return -1;
    *act++ = '\0';
    r->op = -1;
    if (strcmp(buf, "write") == 0)
        r->op = OP_WRITE;
    for (int i = 0; i < OP_COUNT; i++)
        if (strcmp(buf, op_names[i]) == 0)
            r->op = i;
    char *end;
    r->n = strtol(num, &end, 10);
    if (r->op < 0 || *end || r->n < 1)
        return -1;
    if (strcmp(act, "io") == 0)
        r->action = ACT_IO;
    else if (strcmp(act, "busy") == 0)
        r->action = ACT_BUSY;
    else if (strcmp(act, "crash") == 0)
        r->action = ACT_CRASH;
    else if (strcmp(act, "crash-after") == 0)
        r->action = ACT_CRASH_AFTER;
    else
        return -1;
    return 0;
}

int store_fault_wrap(struct store_handle *h, const char *spec, char *errstr, size_t errstr_size)
{
    if (inner)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_STATE,
                            "FLOWD_STORE_FAULTS: only one store per process can be wrapped");
    nrules = 0;
    for (const char *p = spec; *p;) {
        size_t n = strcspn(p, ",");
        if (n && (nrules == 16 || parse_rule(p, n, &rules[nrules]) != 0))
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "FLOWD_STORE_FAULTS: bad rule '%.*s' (expected OP/N/ACTION or "
                                "OP@N/ACTION, e.g. commit/5/io)",
                                (int)n, p);
        if (n)
            nrules++;
        p += n;
        if (*p == ',')
            p++;
    }
    inner = h->m;
    fault_methods = *h->m;
    fault_methods.name = "fault-injection";
    fault_methods.x_begin = fault_x_begin;
    fault_methods.x_commit = fault_x_commit;
    fault_methods.x_instance_put = fault_x_instance_put;
    fault_methods.x_history_add = fault_x_history_add;
    fault_methods.x_outbox_add = fault_x_outbox_add;
    fault_methods.x_inbox_check_add = fault_x_inbox_check_add;
    fault_methods.x_outbox_mark_sent = fault_x_outbox_mark_sent;
    h->m = &fault_methods;
    FLOWD_LOG(LOG_WARN, LOG_SUB_STORE, "store fault injection is ON: %s", spec);
    return 0;
}
