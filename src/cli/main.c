/* main.c - flowctl: global options, configuration (flags > environment > config file), the
 * HTTP client, and the command table.
 *
 * Server and token come from --server/--token, else FLOWCTL_SERVER/FLOWCTL_TOKEN, else the
 * config file ($FLOWCTL_CONFIG, else ~/.config/flowctl/config) with `server = URL` and
 * `token = TOKEN` lines, else http://127.0.0.1:8080 and no token.
 */
#include "cli.h"

#include "../common/mem.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/banned.h"

#define FLOWCTL_VERSION "0.1.0"
#define MAX_RESPONSE    (64 * 1024 * 1024)

static void usage(FILE *out)
{
    fprintf(out,
            "usage: flowctl [--server URL] [--token TOKEN] [--json] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  deploy FILE                 deploy a process definition (JSON)\n"
            "  validate FILE               check a definition without deploying it\n"
            "  defs [KEY [VERSION]]        list definitions, or show one\n"
            "  start KEY [--data JSON | --file FILE] [--wait [--timeout S]]\n"
            "                              start an instance (--wait: follow it until it ends)\n"
            "  get ID                      an instance: state, waiting nodes, data\n"
            "  ls [--state S] [--definition KEY] [--from T] [--to T] [--limit N] [--before ID]\n"
            "                              list instances, newest first\n"
            "  history ID                  an instance's history\n"
            "  cancel ID [--reason TEXT]   cancel a running instance\n"
            "  retry ID [--data JSON]      retry a FAILED instance (or its incidents)\n"
            "  deliver ID --data JSON [--node N] [--topic T]\n"
            "                              deliver a message to a waiting instance (testing)\n"
            "  dlq ls [--limit N] [--before ID] | dlq replay ID\n"
            "                              dead letters: list, re-publish\n"
            "  metrics [--raw]             a summary of /metrics (--raw: the Prometheus text)\n"
            "\n"
            "options:\n"
            "  --server URL    flowd's HTTP address (env FLOWCTL_SERVER; default "
            "http://127.0.0.1:8080)\n"
            "  --token TOKEN   bearer token (env FLOWCTL_TOKEN)\n"
            "  --json          print the server's JSON instead of tables\n"
            "  --help          this text; `flowctl COMMAND --help` for one command\n"
            "  --version       print the version\n"
            "\n"
            "config file: $FLOWCTL_CONFIG or ~/.config/flowctl/config, lines `server = URL`, "
            "`token = TOKEN`.\n"
            "exit codes: 0 ok, 1 request refused or failed, 2 usage, 3 server unreachable, 4 the\n"
            "instance followed by start --wait did not finish (FAILED or TERMINATED).\n");
}

int cli_wants_help(int argc, char **argv, const char *text)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(text, stdout);
            return 1;
        }
    }
    return 0;
}

static size_t on_data(char *ptr, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    return buf_add(b, ptr, size * n) ? 0 : size * n;
}

int cli_http(const struct cli *c,
             const char *method,
             const char *path,
             const char *body,
             long *status,
             cJSON **out,
             struct buf *raw)
{
    *out = NULL;
    *status = 0;
    CURL *h = curl_easy_init();
    if (!h) {
        fprintf(stderr, "flowctl: cannot initialise libcurl\n");
        return CLI_UNREACHABLE;
    }
    char *url = flowd_xasprintf("%s%s", c->server, path);
    struct buf resp;
    buf_init(&resp, MAX_RESPONSE);
    struct curl_slist *hdrs = NULL;
    char *auth = NULL;
    if (c->token && *c->token) {
        auth = flowd_xasprintf("Authorization: Bearer %s", c->token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(c->timeout_s * 1000));
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    }
    CURLcode rc = curl_easy_perform(h);
    int ret = 0;
    if (rc != CURLE_OK) {
        fprintf(stderr, "flowctl: cannot reach %s: %s\n", c->server, curl_easy_strerror(rc));
        ret = CLI_UNREACHABLE;
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        char errstr[256];
        *out = resp.len ? json_parse(buf_str(&resp), resp.len, errstr, sizeof(errstr)) : NULL;
        if (raw)
            buf_add(raw, buf_str(&resp), resp.len);
    }
    buf_release(&resp);
    curl_slist_free_all(hdrs);
    free(auth);
    free(url);
    curl_easy_cleanup(h);
    return ret;
}

int cli_call(
    const struct cli *c, const char *method, const char *path, const char *body, cJSON **out)
{
    long status;
    int rc = cli_http(c, method, path, body, &status, out, NULL);
    if (rc)
        return rc;
    if (status >= 400) {
        const char *detail = *out ? cli_str(*out, "detail") : "(no JSON body)";
        const char *error = *out ? cli_str(*out, "error") : "error";
        if (c->json && *out)
            cli_print_json(*out);
        fprintf(stderr, "flowctl: %s %s: HTTP %ld %s: %s\n", method, path, status, error, detail);
        cJSON_Delete(*out);
        *out = NULL;
        return CLI_FAILED;
    }
    return 0;
}

void cli_print_json(const cJSON *o)
{
    char *s = cJSON_Print(o);
    if (s) {
        puts(s);
        free(s);
    }
}

char *cli_read_file(const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "flowctl: cannot open %s: %m\n", path);
        return NULL;
    }
    struct buf b = BUF_INIT;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        buf_add(&b, chunk, n);
    if (f != stdin)
        fclose(f);
    return buf_detach(&b);
}

long long cli_num(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
}

const char *cli_str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : "-";
}

/* Reads `server = ...` / `token = ...` from the config file into the fields not yet set. */
static void read_config(char **server, char **token)
{
    const char *path = getenv("FLOWCTL_CONFIG");
    char *def = NULL;
    if (!path || !*path) {
        const char *home = getenv("HOME");
        if (!home)
            return;
        def = flowd_xasprintf("%s/.config/flowctl/config", home);
        path = def;
    }
    FILE *f = fopen(path, "r");
    free(def);
    if (!f)
        return;
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        char *eq = strchr(line, '=');
        if (line[0] == '#' || !eq)
            continue;
        *eq = '\0';
        char *k = line, *v = eq + 1;
        while (*k == ' ' || *k == '\t')
            k++;
        char *e = k + strlen(k);
        while (e > k && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        while (*v == ' ' || *v == '\t')
            v++;
        v[strcspn(v, "\r\n")] = '\0';
        e = v + strlen(v);
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        if (strcmp(k, "server") == 0 && !*server)
            *server = flowd_xstrdup(v);
        else if (strcmp(k, "token") == 0 && !*token)
            *token = flowd_xstrdup(v);
    }
    fclose(f);
}

struct command {
    const char *name;
    int (*run)(struct cli *c, int argc, char **argv);
};

static const struct command commands[] = {
    {"deploy", cli_deploy},   {"validate", cli_validate}, {"defs", cli_defs},
    {"start", cli_start},     {"get", cli_get},           {"ls", cli_ls},
    {"history", cli_history}, {"cancel", cli_cancel},     {"retry", cli_retry},
    {"deliver", cli_deliver}, {"dlq", cli_dlq},           {"metrics", cli_metrics},
};

int main(int argc, char **argv)
{
    char *server = NULL, *token = NULL;
    struct cli c = {NULL, NULL, 0, 30.0};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return CLI_OK;
        } else if (strcmp(a, "--version") == 0) {
            printf("flowctl %s\n", FLOWCTL_VERSION);
            return CLI_OK;
        } else if (strcmp(a, "--json") == 0) {
            c.json = 1;
        } else if ((strcmp(a, "--server") == 0 || strcmp(a, "--token") == 0) && i + 1 < argc) {
            char **dst = a[2] == 's' ? &server : &token;
            free(*dst);
            *dst = flowd_xstrdup(argv[++i]);
        } else {
            fprintf(stderr, "flowctl: unknown option '%s' (see flowctl --help)\n", a);
            return CLI_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return CLI_USAGE;
    }
    if (!server && getenv("FLOWCTL_SERVER") && *getenv("FLOWCTL_SERVER"))
        server = flowd_xstrdup(getenv("FLOWCTL_SERVER"));
    if (!token && getenv("FLOWCTL_TOKEN") && *getenv("FLOWCTL_TOKEN"))
        token = flowd_xstrdup(getenv("FLOWCTL_TOKEN"));
    read_config(&server, &token);
    if (!server)
        server = flowd_xstrdup("http://127.0.0.1:8080");
    size_t sl = strlen(server);
    while (sl > 0 && server[sl - 1] == '/')
        server[--sl] = '\0';
    c.server = server;
    c.token = token;

    int rc = -1;
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
        if (strcmp(commands[k].name, argv[i]) == 0) {
            /* options may also follow the command: flowctl ls --json */
            for (int j = i + 1; j < argc; j++)
                if (strcmp(argv[j], "--json") == 0)
                    c.json = 1;
            curl_global_init(CURL_GLOBAL_DEFAULT);
            rc = commands[k].run(&c, argc - i, argv + i);
            curl_global_cleanup();
            break;
        }
    }
    if (rc < 0) {
        fprintf(stderr, "flowctl: unknown command '%s' (see flowctl --help)\n", argv[i]);
        rc = CLI_USAGE;
    }
    free(server);
    free(token);
    return rc;
}

int cli_parse(int argc,
              char **argv,
              const struct cli_opt *opts,
              const char **pos,
              int min,
              int max,
              int *npos,
              const char *usage)
{
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0)
            continue;
        if (a[0] == '-' && a[1] == '-') {
            const struct cli_opt *o = opts;
            while (o && o->name && strcmp(o->name, a + 2) != 0)
                o++;
            if (!o || !o->name) {
                fprintf(stderr, "flowctl %s: unknown option '%s'\n%s", argv[0], a, usage);
                return CLI_USAGE;
            }
            if (o->flag) {
                *o->flag = 1;
                continue;
            }
            if (i + 1 >= argc) {
                fprintf(stderr, "flowctl %s: %s needs a value\n%s", argv[0], a, usage);
                return CLI_USAGE;
            }
            *o->value = argv[++i];
            continue;
        }
        if (*npos >= max) {
            fprintf(stderr, "flowctl %s: unexpected argument '%s'\n%s", argv[0], a, usage);
            return CLI_USAGE;
        }
        pos[(*npos)++] = a;
    }
    if (*npos < min) {
        fprintf(stderr, "flowctl %s: missing argument\n%s", argv[0], usage);
        return CLI_USAGE;
    }
    return 0;
}
