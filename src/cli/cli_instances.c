/* cli_instances.c - flowctl start (with --wait), get, ls, history, cancel, retry, deliver. */
#include "cli.h"

#include "../common/mem.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/banned.h"

static const char start_usage[] =
    "usage: flowctl start KEY [--version N] [--data JSON | --file FILE]\n"
    "                     [--wait [--timeout SECONDS]]\n"
    "  Starts the latest version of process KEY (or version N) with the initial data (a JSON\n"
    "  object).\n"
    "  --wait follows the instance, printing each step, until it ends; the exit code is 0 if it\n"
    "  FINISHED and 4 if it ended otherwise (FAILED, TERMINATED) or the timeout (default 60) "
    "hit.\n";
static const char get_usage[] = "usage: flowctl get ID\n"
                                "  Shows an instance: state, waiting nodes, data, error.\n";
static const char ls_usage[] =
    "usage: flowctl ls [--state STATE] [--definition KEY] [--from TIME] [--to TIME]\n"
    "                  [--limit N] [--before ID]\n"
    "  Lists instances, newest first. STATE: STARTED, FINISHED, FAILED, TERMINATED. TIME: epoch\n"
    "  milliseconds or ISO 8601 UTC (2026-11-23T10:00:00Z), on the start time. Pages: pass the\n"
    "  printed `next` id as --before.\n";
static const char history_usage[] = "usage: flowctl history ID\n"
                                    "  Shows every transition of an instance.\n";
static const char cancel_usage[] = "usage: flowctl cancel ID [--reason TEXT]\n"
                                   "  Cancels a running instance (state TERMINATED).\n";
static const char retry_usage[] =
    "usage: flowctl retry ID [--data JSON]\n"
    "  Retries a FAILED instance from the node that failed, with --data merged into its data,\n"
    "  or re-sends the requests of a running instance's incidents.\n";
static const char deliver_usage[] =
    "usage: flowctl deliver ID --data JSON [--node NODE] [--topic TOPIC]\n"
    "  Delivers a message to a waiting instance as if a connector had replied (for testing):\n"
    "  it is published to the node's reply topic and consumed like any reply.\n";

/* Checks that an id argument is a positive integer. */
static int check_id(const char *cmd, const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v <= 0) {
        fprintf(stderr, "flowctl %s: '%s' is not an instance id\n", cmd, s);
        return CLI_USAGE;
    }
    return 0;
}

static void print_instance(const cJSON *o)
{
    printf("id:         %lld\n", cli_num(o, "id"));
    printf("uuid:       %s\n", cli_str(o, "uuid"));
    printf("process:    %s version %lld\n", cli_str(o, "processKey"), cli_num(o, "version"));
    printf("state:      %s\n", cli_str(o, "state"));
    printf("started:    %s\n", cli_str(o, "startedAt"));
    printf("updated:    %s\n", cli_str(o, "updatedAt"));
    printf("ended:      %s\n", cli_str(o, "endedAt"));
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(o, "tokens"))
    {
        printf("waiting:    %s (%s)\n", cli_str(t, "node"), cli_str(t, "state"));
    }
    const char *err = cli_str(o, "error");
    if (strcmp(err, "-") != 0)
        printf("error:      %s\n", err);
    char *data = cJSON_PrintUnformatted(cJSON_GetObjectItem(o, "data"));
    printf("data:       %s\n", data ? data : "{}");
    free(data);
}

static void print_history_row(const cJSON *h)
{
    const char *detail = cli_str(h, "detail");
    printf("%4lld  %-24s  %-20s  %-26s %s\n", cli_num(h, "seq"), cli_str(h, "at"),
           cli_str(h, "node"), cli_str(h, "state"), strcmp(detail, "-") ? detail : "");
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls the instance until it ends, printing new history rows. */
static int wait_for(struct cli *c, long long id, double timeout_s)
{
    char path[64];
    snprintf(path, sizeof(path), "/v1/instances/%lld", id);
    long long shown = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        cJSON *o = NULL;
        int rc = cli_call(c, "GET", path, NULL, &o);
        if (rc)
            return rc;
        const cJSON *h;
        cJSON_ArrayForEach(h, cJSON_GetObjectItem(o, "history"))
        {
            if (cli_num(h, "seq") > shown) {
                shown = cli_num(h, "seq");
                if (!c->json)
                    print_history_row(h);
            }
        }
        fflush(stdout);
        const char *state = cli_str(o, "state");
        if (strcmp(state, "STARTED") != 0) {
            int ok = strcmp(state, "FINISHED") == 0;
            if (c->json)
                cli_print_json(o);
            else
                printf("instance %lld %s%s%s\n", id, state, ok ? "" : ": ",
                       ok ? "" : cli_str(o, "error"));
            cJSON_Delete(o);
            return ok ? CLI_OK : CLI_NOT_FINISHED;
        }
        cJSON_Delete(o);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9 >
            timeout_s) {
            fprintf(stderr, "flowctl start: instance %lld still STARTED after %.0f s\n", id,
                    timeout_s);
            return CLI_NOT_FINISHED;
        }
        sleep_ms(250);
    }
}

int cli_start(struct cli *c, int argc, char **argv)
{
    if (cli_wants_help(argc, argv, start_usage))
        return CLI_OK;
    const char *pos[1], *data = NULL, *file = NULL, *timeout = "60", *version = NULL;
    int wait = 0, npos;
    struct cli_opt opts[] = {{"data", &data, NULL},       {"version", &version, NULL},
                             {"file", &file, NULL},       {"wait", NULL, &wait},
                             {"timeout", &timeout, NULL}, {NULL, NULL, NULL}};
    int rc = cli_parse(argc, argv, opts, pos, 1, 1, &npos, start_usage);
    if (rc)
        return rc;
    if (data && file) {
        fprintf(stderr, "flowctl start: give --data or --file, not both\n");
        return CLI_USAGE;
    }
    char *end;
    long ver = version ? strtol(version, &end, 10) : 0;
    if (version && (*end || !*version || ver < 1 || ver > 2147483647L)) {
        fprintf(stderr, "flowctl start: --version '%s' is not a positive integer\n", version);
        return CLI_USAGE;
    }
    double tmo = strtod(timeout, &end);
    if (*end || tmo <= 0) {
        fprintf(stderr, "flowctl start: --timeout '%s' is not a number of seconds\n", timeout);
        return CLI_USAGE;
    }
    char *body = file ? cli_read_file(file) : flowd_xstrdup(data ? data : "{}");
    if (!body)
        return CLI_USAGE;
    char *k = curl_easy_escape(NULL, pos[0], 0);
    char *path = ver ? flowd_xasprintf("/v1/processes/%s/start?version=%ld", k, ver)
                     : flowd_xasprintf("/v1/processes/%s/start", k);
    curl_free(k);
    cJSON *out = NULL;
    rc = cli_call(c, "POST", path, body, &out);
    free(path);
    free(body);
    if (rc)
        return rc;
    long long id = cli_num(out, "id");
    if (c->json && !wait)
        cli_print_json(out);
    else if (!c->json)
        printf("started %s instance %lld (%s), %s, version %lld\n", cli_str(out, "processKey"), id,
               cli_str(out, "uuid"), cli_str(out, "state"), cli_num(out, "version"));
    fflush(stdout); /* --wait: the id is useful before the end */
    cJSON_Delete(out);
    return wait ? wait_for(c, id, tmo) : CLI_OK;
}

static int get_one(struct cli *c, int argc, char **argv, const char *usage, int history)
{
    if (cli_wants_help(argc, argv, usage))
        return CLI_OK;
    const char *pos[1];
    int npos;
    int rc = cli_parse(argc, argv, NULL, pos, 1, 1, &npos, usage);
    if (rc || (rc = check_id(argv[0], pos[0])))
        return rc;
    char path[128];
    snprintf(path, sizeof(path), "/v1/instances/%s%s", pos[0], history ? "/history" : "");
    cJSON *out = NULL;
    rc = cli_call(c, "GET", path, NULL, &out);
    if (rc)
        return rc;
    if (c->json) {
        cli_print_json(out);
    } else {
        if (!history)
            print_instance(out);
        else
            printf("%4s  %-24s  %-20s  %-26s %s\n", "SEQ", "AT", "NODE", "STATE", "DETAIL");
        const cJSON *h;
        if (!history)
            printf("history:\n");
        cJSON_ArrayForEach(h, cJSON_GetObjectItem(out, "history"))
        {
            print_history_row(h);
        }
    }
    cJSON_Delete(out);
    return CLI_OK;
}

int cli_get(struct cli *c, int argc, char **argv)
{
    return get_one(c, argc, argv, get_usage, 0);
}

int cli_history(struct cli *c, int argc, char **argv)
{
    return get_one(c, argc, argv, history_usage, 1);
}

int cli_ls(struct cli *c, int argc, char **argv)
{
    if (cli_wants_help(argc, argv, ls_usage))
        return CLI_OK;
    const char *vals[6] = {NULL};
    static const char *const names[6] = {"state", "definition", "from", "to", "limit", "before"};
    struct cli_opt opts[7];
    for (int i = 0; i < 6; i++)
        opts[i] = (struct cli_opt){names[i], &vals[i], NULL};
    opts[6] = (struct cli_opt){NULL, NULL, NULL};
    const char *pos[1];
    int npos;
    int rc = cli_parse(argc, argv, opts, pos, 0, 0, &npos, ls_usage);
    if (rc)
        return rc;
    struct buf path = BUF_INIT;
    buf_adds(&path, "/v1/instances");
    char sep = '?';
    for (int i = 0; i < 6; i++) {
        if (!vals[i])
            continue;
        char *e = curl_easy_escape(NULL, vals[i], 0);
        buf_printf(&path, "%c%s=%s", sep, names[i], e);
        curl_free(e);
        sep = '&';
    }
    cJSON *out = NULL;
    rc = cli_call(c, "GET", buf_str(&path), NULL, &out);
    buf_release(&path);
    if (rc)
        return rc;
    if (c->json) {
        cli_print_json(out);
    } else {
        printf("%-12s %-24s %-8s %-11s %-24s %s\n", "ID", "PROCESS", "VERSION", "STATE", "STARTED",
               "UPDATED");
        const cJSON *i;
        cJSON_ArrayForEach(i, cJSON_GetObjectItem(out, "instances"))
        {
            printf("%-12lld %-24s %-8lld %-11s %-24s %s\n", cli_num(i, "id"),
                   cli_str(i, "processKey"), cli_num(i, "version"), cli_str(i, "state"),
                   cli_str(i, "startedAt"), cli_str(i, "updatedAt"));
        }
        if (cJSON_IsNumber(cJSON_GetObjectItem(out, "next")))
            printf("next: %lld (flowctl ls --before %lld)\n", cli_num(out, "next"),
                   cli_num(out, "next"));
    }
    cJSON_Delete(out);
    return CLI_OK;
}

/* POST /v1/instances/ID/<action> with body; prints the resulting instance. */
static int
instance_action(struct cli *c, const char *cmd, const char *id, const char *action, cJSON *body)
{
    int rc = check_id(cmd, id);
    if (rc) {
        cJSON_Delete(body);
        return rc;
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/instances/%s/%s", id, action);
    char *text = body ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    cJSON *out = NULL;
    rc = cli_call(c, "POST", path, text, &out);
    free(text);
    if (rc)
        return rc;
    if (c->json)
        cli_print_json(out);
    else if (strcmp(action, "messages") == 0)
        printf("delivered to instance %s node %s on %s (messageId %s)\n", id, cli_str(out, "node"),
               cli_str(out, "topic"), cli_str(out, "messageId"));
    else
        printf("instance %s %s\n", id, cli_str(out, "state"));
    cJSON_Delete(out);
    return CLI_OK;
}

/* Parses --data as a JSON value into *out; CLI_USAGE with a message if it is not JSON. */
static int parse_data(const char *cmd, const char *data, cJSON **out)
{
    char errstr[256];
    *out = json_parse(data, strlen(data), errstr, sizeof(errstr));
    if (!*out) {
        fprintf(stderr, "flowctl %s: --data is not JSON: %s\n", cmd, errstr);
        return CLI_USAGE;
    }
    return 0;
}

int cli_cancel(struct cli *c, int argc, char **argv)
{
    if (cli_wants_help(argc, argv, cancel_usage))
        return CLI_OK;
    const char *pos[1], *reason = NULL;
    int npos;
    struct cli_opt opts[] = {{"reason", &reason, NULL}, {NULL, NULL, NULL}};
    int rc = cli_parse(argc, argv, opts, pos, 1, 1, &npos, cancel_usage);
    if (rc)
        return rc;
    cJSON *body = cJSON_CreateObject();
    if (reason)
        cJSON_AddStringToObject(body, "reason", reason);
    return instance_action(c, "cancel", pos[0], "cancel", body);
}

int cli_retry(struct cli *c, int argc, char **argv)
{
    if (cli_wants_help(argc, argv, retry_usage))
        return CLI_OK;
    const char *pos[1], *data = NULL;
    int npos;
    struct cli_opt opts[] = {{"data", &data, NULL}, {NULL, NULL, NULL}};
    int rc = cli_parse(argc, argv, opts, pos, 1, 1, &npos, retry_usage);
    if (rc)
        return rc;
    cJSON *body = cJSON_CreateObject();
    if (data) {
        cJSON *d = NULL;
        if ((rc = parse_data("retry", data, &d))) {
            cJSON_Delete(body);
            return rc;
        }
        cJSON_AddItemToObject(body, "data", d);
    }
    return instance_action(c, "retry", pos[0], "retry", body);
}

int cli_deliver(struct cli *c, int argc, char **argv)
{
    if (cli_wants_help(argc, argv, deliver_usage))
        return CLI_OK;
    const char *pos[1], *data = NULL, *node = NULL, *topic = NULL;
    int npos;
    struct cli_opt opts[] = {
        {"data", &data, NULL}, {"node", &node, NULL}, {"topic", &topic, NULL}, {NULL, NULL, NULL}};
    int rc = cli_parse(argc, argv, opts, pos, 1, 1, &npos, deliver_usage);
    if (rc)
        return rc;
    if (!data) {
        fprintf(stderr, "flowctl deliver: --data is required\n%s", deliver_usage);
        return CLI_USAGE;
    }
    cJSON *d = NULL;
    if ((rc = parse_data("deliver", data, &d)))
        return rc;
    cJSON *body = cJSON_CreateObject();
    cJSON_AddItemToObject(body, "body", d);
    if (node)
        cJSON_AddStringToObject(body, "node", node);
    if (topic)
        cJSON_AddStringToObject(body, "topic", topic);
    return instance_action(c, "deliver", pos[0], "messages", body);
}
