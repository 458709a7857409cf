/* cli_admin.c - flowctl dlq (ls, replay) and metrics (a summary of /metrics). */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

static const char dlq_usage[] =
    "usage: flowctl dlq ls [--limit N] [--before ID]\n"
    "       flowctl dlq replay ID\n"
    "  ls lists dead letters, newest first, with their reason; replay re-publishes one to its\n"
    "  original topic with its original headers (it is then consumed again).\n";
static const char metrics_usage[] =
    "usage: flowctl metrics [--raw]\n"
    "  Prints the main numbers of /metrics; --raw prints the Prometheus text.\n";

int cli_dlq(struct cli *c, int argc, char **argv)
{
    if (cli_wants_help(argc, argv, dlq_usage))
        return CLI_OK;
    const char *pos[2], *limit = NULL, *before = NULL;
    int npos;
    struct cli_opt opts[] = {
        {"limit", &limit, NULL}, {"before", &before, NULL}, {NULL, NULL, NULL}};
    int rc = cli_parse(argc, argv, opts, pos, 1, 2, &npos, dlq_usage);
    if (rc)
        return rc;
    cJSON *out = NULL;
    if (strcmp(pos[0], "replay") == 0) {
        char *end;
        errno = 0;
        long long id = npos == 2 ? strtoll(pos[1], &end, 10) : 0;
        if (npos != 2 || *end || errno || id <= 0) {
            fprintf(stderr, "flowctl dlq replay: needs a dead-letter id\n%s", dlq_usage);
            return CLI_USAGE;
        }
        char path[96];
        snprintf(path, sizeof(path), "/v1/dead-letters/%lld/replay", id);
        rc = cli_call(c, "POST", path, NULL, &out);
        if (rc)
            return rc;
        if (c->json)
            cli_print_json(out);
        else
            printf("dead letter %lld re-published to %s\n", id, cli_str(out, "topic"));
        cJSON_Delete(out);
        return CLI_OK;
    }
    if (strcmp(pos[0], "ls") != 0 || npos != 1) {
        fprintf(stderr, "flowctl dlq: unknown subcommand '%s'\n%s", pos[0], dlq_usage);
        return CLI_USAGE;
    }
    char path[160];
    snprintf(path, sizeof(path), "/v1/dead-letters%s%s%s%s", limit || before ? "?" : "",
             limit ? "limit=" : "", limit ? limit : "",
             before ? (limit ? "&before=" : "before=") : "");
    if (before) {
        size_t len = strlen(path);
        snprintf(path + len, sizeof(path) - len, "%s", before);
    }
    rc = cli_call(c, "GET", path, NULL, &out);
    if (rc)
        return rc;
    if (c->json) {
        cli_print_json(out);
    } else {
        printf("%-8s %-24s %-18s %-44s %s\n", "ID", "AT", "REASON", "ORIGINAL TOPIC", "DETAIL");
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(out, "deadLetters"))
        {
            printf("%-8lld %-24s %-18s %-44s %s\n", cli_num(d, "id"), cli_str(d, "at"),
                   cli_str(d, "reason"), cli_str(d, "originalTopic"), cli_str(d, "detail"));
        }
        if (cJSON_IsNumber(cJSON_GetObjectItem(out, "next")))
            printf("next: %lld (flowctl dlq ls --before %lld)\n", cli_num(out, "next"),
                   cli_num(out, "next"));
    }
    cJSON_Delete(out);
    return CLI_OK;
}

/* Value of the sample `name` (exact, labels included) in Prometheus text, or -1. */
static double sample(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

int cli_metrics(struct cli *c, int argc, char **argv)
{
    if (cli_wants_help(argc, argv, metrics_usage))
        return CLI_OK;
    int raw = 0, npos;
    const char *pos[1];
    struct cli_opt opts[] = {{"raw", NULL, &raw}, {NULL, NULL, NULL}};
    int rc = cli_parse(argc, argv, opts, pos, 0, 0, &npos, metrics_usage);
    if (rc)
        return rc;
    long status;
    cJSON *out = NULL;
    struct buf text = BUF_INIT;
    rc = cli_http(c, "GET", "/metrics", NULL, &status, &out, &text);
    cJSON_Delete(out);
    if (!rc && status != 200) {
        fprintf(stderr, "flowctl metrics: HTTP %ld: %s\n", status, buf_str(&text));
        rc = CLI_FAILED;
    }
    if (rc) {
        buf_release(&text);
        return rc;
    }
    static const char *const rows[][2] = {
        {"instances started", "flowd_instances_started_total"},
        {"instances completed", "flowd_instances_completed_total"},
        {"instances failed", "flowd_instances_failed_total"},
        {"instances cancelled", "flowd_instances_cancelled_total"},
        {"instances active", "flowd_instances_active"},
        {"messages sent", "flowd_messages_sent_total"},
        {"messages received", "flowd_messages_received_total"},
        {"messages dead-lettered", "flowd_messages_dead_lettered_total"},
        {"outbox backlog", "flowd_outbox_backlog"},
        {"consumer lag", "flowd_consumer_lag"},
        {"completed instances", "flowd_instance_duration_seconds_count"},
        {"  total seconds", "flowd_instance_duration_seconds_sum"},
    };
    size_t nrows = sizeof(rows) / sizeof(rows[0]);
    if (raw) {
        fputs(buf_str(&text), stdout);
    } else if (c->json) {
        cJSON *o = cJSON_CreateObject();
        for (size_t i = 0; i < nrows; i++)
            cJSON_AddNumberToObject(o, rows[i][1], sample(buf_str(&text), rows[i][1]));
        cli_print_json(o);
        cJSON_Delete(o);
    } else {
        for (size_t i = 0; i < nrows; i++)
            printf("%-24s %g\n", rows[i][0], sample(buf_str(&text), rows[i][1]));
        double n = sample(buf_str(&text), "flowd_instance_duration_seconds_count");
        if (n > 0)
            printf("%-24s %.3f s\n", "mean start-to-complete",
                   sample(buf_str(&text), "flowd_instance_duration_seconds_sum") / n);
        /* waiting per node */
        const char *p = buf_str(&text);
        while ((p = strstr(p, "\nflowd_instances_waiting{"))) {
            p++;
            const char *e = strchr(p, '\n');
            printf("waiting: %.*s\n", (int)(e ? e - p : (long)strlen(p)),
                   p + strlen("flowd_instances_waiting"));
            p = e ? e : p + strlen(p);
        }
    }
    buf_release(&text);
    return CLI_OK;
}
