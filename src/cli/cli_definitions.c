/* cli_definitions.c - flowctl deploy, validate, defs. */
#include "cli.h"

#include "../common/mem.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

static const char deploy_usage[] =
    "usage: flowctl deploy FILE [--dry-run]\n"
    "  Deploys the process definition in FILE (JSON; - for stdin). A changed definition becomes\n"
    "  a new version; an identical one changes nothing. --dry-run only validates it.\n";
static const char validate_usage[] =
    "usage: flowctl validate FILE\n"
    "  Checks the definition in FILE without deploying it; errors name the node and problem.\n";
static const char defs_usage[] = "usage: flowctl defs [KEY [VERSION]]\n"
                                 "  Lists the deployed definitions and their versions, or shows "
                                 "one (the latest version by default) as JSON.\n";

static int send_def(struct cli *c, int argc, char **argv, const char *usage, int dry)
{
    if (cli_wants_help(argc, argv, usage))
        return CLI_OK;
    const char *pos[1];
    int npos;
    struct cli_opt opts[] = {{"dry-run", NULL, &dry}, {NULL, NULL, NULL}};
    int rc = cli_parse(argc, argv, opts, pos, 1, 1, &npos, usage);
    if (rc)
        return rc;
    char *text = cli_read_file(pos[0]);
    if (!text)
        return CLI_USAGE;
    cJSON *out = NULL;
    rc = cli_call(c, "POST", dry ? "/v1/definitions/validate" : "/v1/definitions", text, &out);
    free(text);
    if (rc)
        return rc;
    if (c->json)
        cli_print_json(out);
    else if (dry)
        printf("%s: valid (key %s)\n", pos[0], cli_str(out, "key"));
    else
        printf("%s version %lld %s (uuid %s)\n", cli_str(out, "key"), cli_num(out, "version"),
               cJSON_IsTrue(cJSON_GetObjectItem(out, "created")) ? "deployed"
                                                                 : "unchanged: already deployed",
               cli_str(out, "uuid"));
    const cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItem(out, "warnings"))
    {
        if (!c->json && cJSON_IsString(w))
            fprintf(stderr, "warning: %s\n", w->valuestring);
    }
    cJSON_Delete(out);
    return CLI_OK;
}

int cli_deploy(struct cli *c, int argc, char **argv)
{
    return send_def(c, argc, argv, deploy_usage, 0);
}

int cli_validate(struct cli *c, int argc, char **argv)
{
    return send_def(c, argc, argv, validate_usage, 1);
}

int cli_defs(struct cli *c, int argc, char **argv)
{
    if (cli_wants_help(argc, argv, defs_usage))
        return CLI_OK;
    const char *pos[2];
    int npos;
    int rc = cli_parse(argc, argv, NULL, pos, 0, 2, &npos, defs_usage);
    if (rc)
        return rc;
    cJSON *out = NULL;
    if (npos) {
        char *k = curl_easy_escape(NULL, pos[0], 0);
        char *path = npos == 2 ? flowd_xasprintf("/v1/definitions/%s/%s", k, pos[1])
                               : flowd_xasprintf("/v1/definitions/%s", k);
        curl_free(k);
        rc = cli_call(c, "GET", path, NULL, &out);
        free(path);
        if (!rc)
            cli_print_json(out);
        cJSON_Delete(out);
        return rc;
    }
    rc = cli_call(c, "GET", "/v1/definitions", NULL, &out);
    if (rc)
        return rc;
    if (c->json) {
        cli_print_json(out);
    } else {
        printf("%-32s %-8s %-24s %s\n", "KEY", "LATEST", "DEPLOYED", "NAME");
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(out, "definitions"))
        {
            const cJSON *vs = cJSON_GetObjectItem(d, "versions");
            const cJSON *last = cJSON_GetArrayItem(vs, cJSON_GetArraySize(vs) - 1);
            printf("%-32s %-8lld %-24s %s\n", cli_str(d, "key"), cli_num(d, "latestVersion"),
                   cli_str(last, "createdAt"), cli_str(d, "name"));
        }
    }
    cJSON_Delete(out);
    return CLI_OK;
}
