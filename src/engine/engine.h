/* engine.h - the pure process engine: definitions, instances, and the step function.
 *
 * No I/O, no threads, no clock reads: time (`now_ms`) and ids come in as arguments, and what the
 * world must do comes out as data (struct engine_effects). The daemon persists the instance and
 * the effects in one store transaction, then publishes the messages.
 *
 * Ownership: engine_def is immutable after parsing and may be shared read-only between threads.
 * An engine_instance is owned by its caller and mutated only by engine_start/engine_deliver.
 */
#ifndef FLOWD_ENGINE_H
#define FLOWD_ENGINE_H

#include "../common/json.h"

#include <stddef.h>
#include <stdint.h>

/* Values substituted for ${prefix} / ${suffix} in topic, body and header templates. */
struct engine_env {
    const char *prefix;
    const char *suffix;
};

/* ---- definitions ---------------------------------------------------------------------- */

enum engine_node_type {
    ENGINE_NODE_START,
    ENGINE_NODE_END,
    ENGINE_NODE_TASK,    /* runs its actions, goes on */
    ENGINE_NODE_SEND,    /* message send task: runs its kafka_send actions, goes on */
    ENGINE_NODE_RECEIVE, /* message receive task: waits for a reply on its topics */
    ENGINE_NODE_EXCLUSIVE_GATEWAY,
    ENGINE_NODE_PARALLEL_GATEWAY, /* forks to every `next`; joins every incoming branch */
    ENGINE_NODE_TIMER,            /* intermediate timer event: waits a duration or until a date */
    ENGINE_NODE_ERROR_END,        /* error end event: the instance ends FAILED with a reason */
    ENGINE_NODE_SUBPROCESS,       /* call activity: starts another definition, waits for it */
};

struct engine_def;

/* Parses and validates a definition (JSON text of len bytes). Returns NULL and a sentence
 * naming the node and the problem in errstr, e.g. "node 'decide': route 1 condition: unknown
 * operator '=<' at position 12". ${prefix}/${suffix} in receive topics are resolved with env. */
struct engine_def *engine_def_parse(
    const char *json, size_t len, const struct engine_env *env, char *errstr, size_t errstr_size);
void engine_def_free(struct engine_def *def);

const char *engine_def_key(const struct engine_def *def);
const char *engine_def_name(const struct engine_def *def);
/* The deployment's version and uuid are set by whoever stores it (the daemon), once. */
void engine_def_set_version(struct engine_def *def, int version, const char *uuid);
int engine_def_version(const struct engine_def *def);
const char *engine_def_uuid(const struct engine_def *def);
/* Number of (receive node, topic) pairs and the i-th one (borrowed strings): the daemon checks
 * that each topic matches the engine subscription pattern. */
size_t engine_def_receive_topic_count(const struct engine_def *def);
const char *engine_def_receive_topic(const struct engine_def *def, size_t i, const char **node_id);
/* The definition key the i-th subprocess node calls (borrowed), its node id and pinned version
 * (0: the latest); NULL past the last one. The daemon warns at deploy about keys not deployed. */
const char *
engine_def_call(const struct engine_def *def, size_t i, const char **node_id, int *version);

/* ---- instances ------------------------------------------------------------------------ */

enum engine_state { ENGINE_STARTED, ENGINE_FINISHED, ENGINE_FAILED, ENGINE_TERMINATED };

/* Token states, with FlowX's names where they exist. */
enum engine_token_state {
    ENGINE_TOKEN_ACTIVE,
    ENGINE_TOKEN_WAITING_MESSAGE,
    ENGINE_TOKEN_INCIDENT, /* no reply after every re-send and no timeout path: needs a person */
    ENGINE_TOKEN_WAITING_JOIN,       /* at a parallel gateway, waiting for the other branches */
    ENGINE_TOKEN_JOINED,             /* merged by a join; removed before the step returns */
    ENGINE_TOKEN_WAITING_TIMER,      /* at a timer node until due_ms */
    ENGINE_TOKEN_WAITING_SUBPROCESS, /* at a subprocess node until its child instance ends */
};

struct engine_token {
    char *node_id; /* the node the token is at */
    enum engine_token_state state;
    char **outstanding;     /* messageIds sent and not yet answered (re-sent on restart) */
    char **outstanding_for; /* per outstanding id: the receive node its reply is for */
    size_t noutstanding;
    int64_t due_ms;   /* WAITING_MESSAGE with a responseTimeout: when it expires */
    int attempt;      /* re-sends done for the current wait */
    char *call_id;    /* WAITING_SUBPROCESS: the call, "<uuid>:<node>:call:<seq>" */
    int64_t child_id; /* WAITING_SUBPROCESS: the child instance, once started (0 before) */
};

/* A reply that came before its instance reached the receive node it is for (e.g. the second of
 * two requests sent in a row answered first): kept until the token gets there, or expires. */
struct engine_parked {
    char *message_id;
    char *topic;
    char *destination_id; /* the receive node it is for */
    char *value;          /* the reply body (JSON text) */
    char *headers;        /* the reply's headers, opaque to the engine (for the DLQ) */
    int64_t expires_ms;
};

struct engine_instance {
    int64_t id;
    char uuid[37];
    char *def_key;
    int def_version;
    enum engine_state state;
    cJSON *data; /* owned; an object */
    int64_t started_ms, updated_ms, ended_ms;
    uint32_t seq;                /* number of history rows written so far */
    struct engine_token *tokens; /* live tokens (empty when the instance ended) */
    size_t ntokens;
    char *error;                  /* why it FAILED, or NULL */
    struct engine_parked *parked; /* early replies */
    size_t nparked;
    int64_t parent_id; /* a subprocess: the instance that called it (0: none) */
    char *parent_call; /* a subprocess: the parent token's call_id */
    int depth;         /* subprocess nesting: 0 for a top-level instance */
};

const char *engine_state_name(enum engine_state state); /* "STARTED", ... */
/* Where a STARTED instance's tokens wait, one "node<TAB>TOKEN_STATE" line per waiting token
 * ('\n'-separated, in token order; ACTIVE tokens left out), or NULL if none. Caller frees. */
char *engine_instance_waiting(const struct engine_instance *inst);
const char *
engine_token_state_name(enum engine_token_state state); /* "ACTIVE", "WAITING_MESSAGE" */

void engine_instance_free(struct engine_instance *inst);
/* Serializes the whole instance (for the store). Caller frees. */
char *engine_instance_to_json(const struct engine_instance *inst);
/* Inverse of engine_instance_to_json; NULL and errstr on bad input. */
struct engine_instance *
engine_instance_from_json(const char *json, size_t len, char *errstr, size_t errstr_size);
/* JSON view for the API: {id, uuid, processKey, version, state, startedAt...,
 * tokens:[{node,state}], data}. Caller cJSON_Deletes. */
cJSON *engine_instance_view(const struct engine_instance *inst);

/* ---- effects -------------------------------------------------------------------------- */

struct engine_header {
    char *name;
    char *value;
};

/* A message to publish (through the outbox). */
struct engine_message {
    char *topic;
    char *key;   /* the process instance id, decimal */
    char *value; /* JSON */
    struct engine_header *headers;
    size_t nheaders;
    char *message_id; /* unique per logical message, stable across re-sends */
    char *node_id;    /* the send node */
};

/* A subprocess to start: the daemon starts def_key (version, 0 = latest) with input as its data
 * in the same transaction, and tells the parent when it ends (engine_call_done). */
struct engine_call {
    char *call_id; /* unique per call, stable when the step is replayed */
    char *node_id; /* the subprocess node */
    char *def_key;
    int version;
    cJSON *input; /* owned: the child's initial data */
};

/* One row of history: every transition of every token. */
struct engine_history {
    uint32_t seq; /* 1, 2, 3... per instance */
    char *node_id;
    char *state; /* STARTED, ENTERED, WAITING_MESSAGE, MESSAGE_RECEIVED,
                    MESSAGE_SENT, TAKEN(route), FINISHED, FAILED, ... */
    int64_t at_ms;
    char *detail; /* free text or NULL */
};

struct engine_effects {
    struct engine_message *msgs;
    size_t nmsgs, msgs_cap;
    struct engine_history *hist;
    size_t nhist, hist_cap;
    int ended;     /* the instance reached FINISHED/FAILED in this step */
    char **resend; /* messageIds to publish again (same id, same content) */
    size_t nresend, resend_cap;
    struct engine_parked *expired; /* early replies whose time ran out: to the dead-letter topic */
    size_t nexpired, expired_cap;
    struct engine_call *calls; /* subprocesses to start */
    size_t ncalls, calls_cap;
    int64_t *orphans; /* running child instances of an instance that ended: to be cancelled */
    size_t norphans, orphans_cap;
};

#define ENGINE_EFFECTS_INIT                                                       \
    {                                                                             \
        NULL, 0, 0, NULL, 0, 0, 0, NULL, 0, 0, NULL, 0, 0, NULL, 0, 0, NULL, 0, 0 \
    }
void engine_parked_free_fields(struct engine_parked *p);
void engine_effects_clear(struct engine_effects *fx); /* frees contents, back to INIT */
void engine_message_free_fields(struct engine_message *msg);

/* ---- the step function ---------------------------------------------------------------- */

/* Creates an instance of def (whose version is set) with id/uuid and initial data (taken), runs
 * it until every token waits or the instance ends, and appends the effects. */
int engine_start(const struct engine_def *def,
                 int64_t id,
                 const char *uuid,
                 cJSON *data,
                 int64_t now_ms,
                 struct engine_instance **out,
                 struct engine_effects *fx,
                 char *errstr,
                 size_t errstr_size);

/* A reply for an instance. */
struct engine_event {
    const char *topic;           /* the topic it arrived on */
    const char *destination_id;  /* `destinationId` header, or NULL */
    const char *callback_action; /* `callbacksForAction` header, or NULL */
    const cJSON *body;           /* parsed value (borrowed) */
};

/* Delivers a reply to inst: picks the waiting token (destinationId, else callbacksForAction,
 * else the receive node listening on ev->topic), stores the body under data.<keyName>, and runs
 * on until every token waits or the instance ends.
 * Returns 0; FLOWD_ERR_STATE if the instance is not STARTED; FLOWD_ERR_NOWAIT if no token waits
 * for this message. On error inst is unchanged and errstr says why. */
int engine_deliver(const struct engine_def *def,
                   struct engine_instance *inst,
                   const struct engine_event *ev,
                   int64_t now_ms,
                   struct engine_effects *fx,
                   char *errstr,
                   size_t errstr_size);

/* Keeps a reply that engine_deliver() refused with FLOWD_ERR_NOWAIT when it answers a request the
 * instance sent (message_id is outstanding) for a receive node no token waits at yet: it is
 * delivered when a token gets there, or handed back in fx->expired at expires_ms. value and
 * headers are copied. Returns 0 (parked; history MESSAGE_PARKED) or FLOWD_ERR_NOWAIT. */
int engine_park(const struct engine_def *def,
                struct engine_instance *inst,
                const struct engine_event *ev,
                const char *message_id,
                const char *value,
                const char *headers,
                int64_t now_ms,
                int64_t expires_ms,
                struct engine_effects *fx,
                char *errstr,
                size_t errstr_size);

/* ---- subprocesses --------------------------------------------------------------------- */

/* Deepest subprocess nesting: a call that would start a child deeper fails like a child that
 * could not start. */
#define ENGINE_MAX_CALL_DEPTH 16

/* Records that call_id's child instance is child_id (shown in the token, cancelled with the
 * parent). FLOWD_ERR_NOWAIT if no token waits for that call. */
int engine_call_bind(struct engine_instance *parent, const char *call_id, int64_t child_id);

/* Tells parent that its call call_id ended: child is the child instance (FINISHED, FAILED or
 * TERMINATED), or NULL when it could not be started (why says why). A finished child's data is
 * mapped into the parent (`output`, `keyName`) and the token goes on to `next`; a failed one
 * takes `errorNext` (data.<keyName>.errorMessage set) or fails the parent with the child's
 * reason. FLOWD_ERR_NOWAIT (parent unchanged) if no token waits for that call. */
int engine_call_done(const struct engine_def *def,
                     struct engine_instance *parent,
                     const char *call_id,
                     const struct engine_instance *child,
                     const char *why,
                     int64_t now_ms,
                     struct engine_effects *fx,
                     char *errstr,
                     size_t errstr_size);

/* ---- time ----------------------------------------------------------------------------- */

/* The earliest due time of the instance: a receive node's responseTimeout, an early reply's
 * expiry; 0 if none. */
int64_t engine_instance_next_due(const struct engine_instance *inst);

/* Fires what fell due at now_ms: a waiting token whose responseTimeout expired has its requests
 * re-sent (fx->resend, same messageIds; history MESSAGE_RESENT) while resendAttempts allow, the
 * wait doubling each time; after the last one it takes the node's timeoutNext path (history
 * MESSAGE_RESPONSE_TIMED_OUT) or, without one, becomes an incident (token INCIDENT, history
 * INCIDENT). Returns 0 (also when nothing was due). */
int engine_fire_due(const struct engine_def *def,
                    struct engine_instance *inst,
                    int64_t now_ms,
                    struct engine_effects *fx,
                    char *errstr,
                    size_t errstr_size);

/* Retries an instance's incidents: each INCIDENT token re-sends its requests and waits again,
 * with a fresh set of re-sends. FLOWD_ERR_STATE if the instance has no incident. */
int engine_retry_incident(const struct engine_def *def,
                          struct engine_instance *inst,
                          int64_t now_ms,
                          struct engine_effects *fx,
                          char *errstr,
                          size_t errstr_size);

/* ---- operator actions (engine_admin.c) ----------------------------------------------- */

/* Cancels a STARTED instance: state TERMINATED, tokens dropped (late replies then dead-letter as
 * instance-finished), one history row TERMINATED with reason as detail (may be NULL).
 * FLOWD_ERR_STATE (inst unchanged) if the instance already ended. */
int engine_cancel(struct engine_instance *inst,
                  const char *reason,
                  int64_t now_ms,
                  struct engine_effects *fx,
                  char *errstr,
                  size_t errstr_size);

/* Retries an instance: a STARTED one with incidents as engine_retry_incident(); a FAILED one
 * starts again at failed_node (the node of its FAILED history row): the top-level members of
 * patch (an object, or NULL; borrowed) replace those of its data, the state is STARTED again, the
 * error cleared, a history row RETRIED written, then it runs on (a send node sends again, with
 * new messageIds). FLOWD_ERR_STATE if there is nothing to retry; FLOWD_ERR_INVAL if failed_node
 * is not a node of def or patch is not an object. */
int engine_retry(const struct engine_def *def,
                 struct engine_instance *inst,
                 const char *failed_node,
                 const cJSON *patch,
                 int64_t now_ms,
                 struct engine_effects *fx,
                 char *errstr,
                 size_t errstr_size);

/* ---- templates (exposed for tests and the fuzzer) ------------------------------------- */

struct engine_tpl_ctx {
    const struct engine_env *env;
    int64_t instance_id;
    const char *instance_uuid;
    const char *def_key;
    const cJSON *data;
};

enum engine_tpl_mode {
    ENGINE_TPL_TEXT, /* topic, header: values as plain text */
    ENGINE_TPL_JSON, /* body: values as JSON, escaped inside string literals */
};

/* Renders tpl. In JSON mode the result is checked to be valid JSON. Caller frees. NULL and
 * errstr on an unknown variable or (JSON mode) a result that is not JSON. */
char *engine_tpl_render(const char *tpl,
                        enum engine_tpl_mode mode,
                        const struct engine_tpl_ctx *ctx,
                        char *errstr,
                        size_t errstr_size);

/* ---- conditions ----------------------------------------------------------------------- */

struct engine_expr;
/* Parses a condition such as `data.score.approved == true and data.amount < 1000`.
 * NULL and "position N: reason" in errstr on error. */
struct engine_expr *engine_expr_parse(const char *src, char *errstr, size_t errstr_size);
/* 1 true, 0 false (missing paths are null; comparisons of different types are false). */
int engine_expr_eval(const struct engine_expr *expr, const cJSON *data);
void engine_expr_free(struct engine_expr *expr);

#endif
