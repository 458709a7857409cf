/* engine_int.h - the engine's internal model, shared by the files of src/engine only.
 *
 * A parsed definition is an array of nodes whose `next` references are resolved to indexes.
 * Templates are compiled once at parse time into segments (literal text / variable), with
 * ${prefix}, ${suffix} and ${processDefinitionKey} folded into the literal text, so rendering at
 * run time is a walk over the segments. Conditions are compiled into a small tree.
 */
#ifndef FLOWD_ENGINE_INT_H
#define FLOWD_ENGINE_INT_H

#include "../common/buf.h"
#include "engine.h"

#include <stddef.h>
#include <stdint.h>

/* Steps one engine_start/engine_deliver call may take before the instance is failed. */
#define ENGINE_MAX_STEPS 10000
/* Nesting depth limit of conditions (parentheses and `not`). */
#define ENGINE_EXPR_MAX_DEPTH 64

/* ---- templates ------------------------------------------------------------------------ */

enum engine_tpl_var {
    ENGINE_VAR_ID = 1 << 0,     /* ${processInstanceId} */
    ENGINE_VAR_UUID = 1 << 1,   /* ${processInstanceUuid} */
    ENGINE_VAR_KEY = 1 << 2,    /* ${processDefinitionKey} / ${processKey} (folded) */
    ENGINE_VAR_PREFIX = 1 << 3, /* ${prefix} (folded) */
    ENGINE_VAR_SUFFIX = 1 << 4, /* ${suffix} (folded) */
    ENGINE_VAR_DATA = 1 << 5,   /* ${data} / ${data.path} */
};

struct engine_tpl_seg {
    enum engine_tpl_var var; /* 0: literal text */
    char *text;              /* literal text, or the data path ("" = the whole data) */
    size_t len;
    int in_string; /* JSON mode: the variable stands inside a string literal */
};

struct engine_tpl {
    enum engine_tpl_mode mode;
    struct engine_tpl_seg *segs;
    size_t nsegs;
    unsigned vars; /* every ENGINE_VAR_* the source used (folded ones too) */
    int verified;  /* JSON mode: valid JSON whatever the values (no run-time check) */
};

/* Compiles src. Constant variables are folded using env and def_key (NULL: empty strings).
 * Returns 0 or FLOWD_ERR_INVAL with "unknown variable '${x}'" etc. in errstr. */
int engine_tpl_compile(const char *src,
                       enum engine_tpl_mode mode,
                       const struct engine_env *env,
                       const char *def_key,
                       struct engine_tpl **out,
                       char *errstr,
                       size_t errstr_size);
void engine_tpl_free(struct engine_tpl *tpl);
/* Appends the rendering to out. JSON mode: checks the result parses unless tpl is verified.
 * Only ctx->instance_id, instance_uuid and data are read (the rest was folded). */
int engine_tpl_render_buf(const struct engine_tpl *tpl,
                          const struct engine_tpl_ctx *ctx,
                          struct buf *out,
                          char *errstr,
                          size_t errstr_size);
/* Renders with placeholder values into out (may be NULL) and, in JSON mode, checks the result
 * parses; used at deploy time. Placeholders: in JSON mode a variable outside a string literal
 * renders as null and one inside renders as nothing, so that a template that passes is valid
 * JSON whatever the real values are (tpl->verified is then set). In TEXT mode: 0 for the id,
 * a zero uuid, null for data. */
int engine_tpl_check(struct engine_tpl *tpl, struct buf *out, char *errstr, size_t errstr_size);
/* 1 if the template is a constant (no per-instance variable). */
int engine_tpl_is_const(const struct engine_tpl *tpl);

/* Is s a legal Kafka topic name ([A-Za-z0-9._-]{1,249})? */
int engine_topic_valid(const char *s, size_t len);

/* ---- definitions ---------------------------------------------------------------------- */

struct engine_tpl_header {
    char *name;
    struct engine_tpl *value; /* TEXT */
};

struct engine_action {
    char *name;
    int order;
    int optional;             /* a rendering failure skips the action instead of failing */
    struct engine_tpl *topic; /* TEXT */
    struct engine_tpl *body;  /* JSON */
    struct engine_tpl_header *headers;
    size_t nheaders;
    char *set_path; /* set_data: the dotted data path `body` is stored under (no topic) */
};

struct engine_topic {
    char *topic;    /* rendered with env at parse time */
    char *key_name; /* dotted path under data where the reply lands */
};

struct engine_route {
    char *cond_src;
    struct engine_expr *cond;
    char *next_id;
    int next;
};

struct engine_node {
    char *id;
    enum engine_node_type type;
    char *next_id;                 /* NULL when absent */
    int next;                      /* index, or -1 */
    struct engine_action *actions; /* kafka_send actions, sorted by order */
    size_t nactions;
    int reply_node; /* send/task: the node replies are for: replyTo, else the first receive
                       node down the chain of send/task/timer nodes, else the node itself */
    char *reply_to_id;
    struct engine_topic *topics; /* receive */
    char **map_to, **map_from;   /* receive: reply field map_from[i] is copied to data map_to[i] */
    size_t nmap;
    size_t ntopics;
    char *response_timeout; /* receive: ISO 8601 duration or NULL */
    int64_t timeout_ms;
    int resend_attempts;   /* receive: re-sends after a timeout before giving up */
    char *timeout_next_id; /* receive: where the token goes when every re-send timed out */
    int timeout_next;      /* index, or -1 (then: incident) */
    char *error_next_id;   /* receive: where an error reply (body.errorMessage set) goes */
    int error_next;        /* index, or -1 (error replies go to next like the others) */
    int *forks;            /* parallel gateway: next[1..] as indexes (next[0] is `next`) */
    char **fork_ids;
    size_t nforks;
    int incoming;             /* edges into this node (a parallel gateway joins them) */
    int64_t timer_ms;         /* timer: wait this long (duration), or */
    int64_t timer_at;         /* timer: until this epoch ms (date-time) */
    struct engine_tpl *error; /* error_end: the reason (TEXT template), or NULL */
    char *call_key;           /* subprocess: the definition it starts */
    int call_version;         /* subprocess: a pinned version, or 0 (the latest) */
    char **in_to, **in_from;  /* subprocess: child data in_to[i] = parent data in_from[i] */
    size_t nin;
    int copy_input;              /* subprocess without "input": the child gets all the data */
    char *call_key_name;         /* subprocess: data path for the child's whole data, or NULL */
    struct engine_route *routes; /* exclusive gateway */
    size_t nroutes;
    char *default_id;
    int default_next;
};

struct engine_rtopic {
    size_t node;
    size_t topic;
};

struct engine_def {
    char *key;
    char *name;
    int version;
    char uuid[37];
    struct engine_node *nodes;
    size_t nnodes;
    int start;
    struct engine_rtopic *rtopics;
    size_t nrtopics;
};

/* Index of the node called id, or -1. */
int engine_def_find(const struct engine_def *def, const char *id);

/* Parses an ISO 8601 duration (PnW, PnDTnHnMn.nS); years and months are refused.
 * Returns 0 and *ms, or FLOWD_ERR_INVAL with the reason. */
int engine_duration_parse(const char *s, int64_t *ms, char *errstr, size_t errstr_size);

/* ---- instances ------------------------------------------------------------------------ */

void engine_token_release(struct engine_token *tok);
/* Releases every token of inst (it ended); the child instances its subprocess tokens wait for
 * go to fx->orphans. */
void engine_drop_tokens(struct engine_instance *inst, struct engine_effects *fx);
/* A child instance nothing waits for any more: the daemon cancels it. */
void engine_add_orphan(struct engine_effects *fx, int64_t child_id);

/* engine_step.c, for engine_admin.c: gives inst (set STARTED by the caller) one fresh token and
 * walks it from node until it waits or the instance ends. */
void engine_run_from(const struct engine_def *def,
                     struct engine_instance *inst,
                     int node,
                     int64_t now_ms,
                     struct engine_effects *fx);

#endif
