/* engine_effects.c - the effect lists the step function fills, and state names. */
#include "engine_int.h"

#include "../common/mem.h"

#include <stdlib.h>

const char *engine_state_name(enum engine_state state)
{
    switch (state) {
    case ENGINE_STARTED:
        return "STARTED";
    case ENGINE_FINISHED:
        return "FINISHED";
    case ENGINE_FAILED:
        return "FAILED";
    case ENGINE_TERMINATED:
        return "TERMINATED";
    }
    return "UNKNOWN";
}

const char *engine_token_state_name(enum engine_token_state state)
{
    switch (state) {
    case ENGINE_TOKEN_ACTIVE:
        return "ACTIVE";
    case ENGINE_TOKEN_WAITING_MESSAGE:
        return "WAITING_MESSAGE";
    case ENGINE_TOKEN_INCIDENT:
        return "INCIDENT";
    case ENGINE_TOKEN_WAITING_JOIN:
        return "WAITING_JOIN";
    case ENGINE_TOKEN_JOINED:
        return "JOINED";
    case ENGINE_TOKEN_WAITING_TIMER:
        return "WAITING_TIMER_EVENT";
    case ENGINE_TOKEN_WAITING_SUBPROCESS:
        return "WAITING_SUBPROCESS";
    }
    return "UNKNOWN";
}

void engine_message_free_fields(struct engine_message *msg)
{
    free(msg->topic);
    free(msg->key);
    free(msg->value);
    for (size_t i = 0; i < msg->nheaders; i++) {
        free(msg->headers[i].name);
        free(msg->headers[i].value);
    }
    free(msg->headers);
    free(msg->message_id);
    free(msg->node_id);
}

void engine_parked_free_fields(struct engine_parked *p)
{
    free(p->message_id);
    free(p->topic);
    free(p->destination_id);
    free(p->value);
    free(p->headers);
}

void engine_effects_clear(struct engine_effects *fx)
{
    for (size_t i = 0; i < fx->nmsgs; i++)
        engine_message_free_fields(&fx->msgs[i]);
    free(fx->msgs);
    for (size_t i = 0; i < fx->nhist; i++) {
        free(fx->hist[i].node_id);
        free(fx->hist[i].state);
        free(fx->hist[i].detail);
    }
    free(fx->hist);
    for (size_t i = 0; i < fx->nresend; i++)
        free(fx->resend[i]);
    free(fx->resend);
    for (size_t i = 0; i < fx->nexpired; i++)
        engine_parked_free_fields(&fx->expired[i]);
    free(fx->expired);
    for (size_t i = 0; i < fx->ncalls; i++) {
        free(fx->calls[i].call_id);
        free(fx->calls[i].node_id);
        free(fx->calls[i].def_key);
        cJSON_Delete(fx->calls[i].input);
    }
    free(fx->calls);
    free(fx->orphans);
    struct engine_effects empty = ENGINE_EFFECTS_INIT;
    *fx = empty;
}

void engine_add_orphan(struct engine_effects *fx, int64_t child_id)
{
    if (fx->norphans == fx->orphans_cap) {
        fx->orphans_cap = fx->orphans_cap ? fx->orphans_cap * 2 : 4;
        fx->orphans = flowd_xrealloc(fx->orphans, fx->orphans_cap * sizeof(*fx->orphans));
    }
    fx->orphans[fx->norphans++] = child_id;
}

void engine_drop_tokens(struct engine_instance *inst, struct engine_effects *fx)
{
    for (size_t i = 0; i < inst->ntokens; i++) {
        struct engine_token *tok = &inst->tokens[i];
        if (tok->state == ENGINE_TOKEN_WAITING_SUBPROCESS && tok->child_id)
            engine_add_orphan(fx, tok->child_id);
        engine_token_release(tok);
    }
    free(inst->tokens);
    inst->tokens = NULL;
    inst->ntokens = 0;
}
