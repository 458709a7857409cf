/* file_exchange.c - a file-exchange connector on the flowd SDK: many legacy systems take work
 * as files dropped in a folder and answer with files in another one. For each request:
 *
 *   1. write the request body to <outbox>/<messageId>.json (write to a temp name, then
 *      rename, so the legacy side never reads half a file);
 *   2. wait for <inbox>/<messageId>.json, the legacy system's answer, up to --wait-ms;
 *   3. answer {"error": "..."}  -> fatal error: an error reply the process routes on;
 *      any other JSON object    -> the reply;
 *      no answer in time        -> retriable error: the SDK retries with backoff (the request
 *                                  file stays: the legacy system may just be slow).
 *
 * The messageId names the files, so a redelivered request (after a crash) finds its own
 * request file, or even its answer, again: the legacy system does the work once.
 *
 *   request  ai.flowx.dev.connector.invoices.in.v1     {"customer": "c-1", "amount": 120}
 *   reply    ai.flowx.dev.engine.receive.invoices.v1   {"invoiceId": "...", "status": "booked"}
 *
 * Build: make (pkg-config flowd-connector libcjson). The legacy side, simulated: legacy_files.py.
 */
#include <flowd/flowd.h>

#include <cjson/cJSON.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ANSWER_MAX (1 << 20)

struct dirs {
    const char *outbox; /* we write requests here */
    const char *inbox;  /* the legacy system writes answers here */
    long wait_ms;
};

/* A messageId as a safe file name: [A-Za-z0-9._-], anything else becomes '_'. */
static void file_name(const char *id, char *out, size_t size)
{
    size_t i = 0;
    for (; id[i] && i + 1 < size; i++) {
        char c = id[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == '_';
        out[i] = ok && !(i == 0 && c == '.') ? c : '_';
    }
    out[i] = '\0';
}

static int write_atomically(const char *path, const char *data, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *fp = fopen(tmp, "w");
    if (!fp)
        return -1;
    int ok = fwrite(data, 1, len, fp) == len;
    ok = fclose(fp) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Reads a whole (small) file; NULL if absent. */
static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return NULL;
    char *data = malloc(ANSWER_MAX + 1);
    size_t n = data ? fread(data, 1, ANSWER_MAX, fp) : 0;
    fclose(fp);
    if (data)
        data[n] = '\0';
    *len = n;
    return data;
}

static flowd_error_t *on_request(flowd_request_t *req, void *opaque)
{
    const struct dirs *dirs = opaque;
    char name[256], req_path[4096], ans_path[4096];
    size_t len;
    const char *body = flowd_request_body(req, &len);

    file_name(flowd_request_message_id(req) ? flowd_request_message_id(req)
                                            : flowd_request_instance_id(req),
              name, sizeof(name));
    snprintf(req_path, sizeof(req_path), "%s/%s.json", dirs->outbox, name);
    snprintf(ans_path, sizeof(ans_path), "%s/%s.json", dirs->inbox, name);

    /* 1. drop the request (again, on a retry or a redelivery: same name, same content) */
    if (access(ans_path, F_OK) != 0 && write_atomically(req_path, body, len) != 0)
        return flowd_error_retriable("OUTBOX_WRITE", "cannot write %s: %s", req_path,
                                     strerror(errno));

    /* 2. wait for the answer */
    char *answer = NULL;
    for (long waited = 0; waited < dirs->wait_ms && !flowd_request_stopping(req); waited += 50) {
        if ((answer = read_file(ans_path, &len)))
            break;
        nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
    }
    if (!answer)
        return flowd_error_retriable("LEGACY_NO_ANSWER", "no answer file %s after %ld ms", ans_path,
                                     dirs->wait_ms);

    /* 3. what it means */
    flowd_error_t *error = NULL;
    cJSON *json = cJSON_ParseWithLength(answer, len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(json, "error");
    if (!cJSON_IsObject(json))
        error =
            flowd_error_fatal("LEGACY_BAD_ANSWER", "answer file %s is not a JSON object", ans_path);
    else if (cJSON_IsString(err))
        error = flowd_error_fatal("LEGACY_REJECTED", "%s", err->valuestring);
    else if (flowd_request_reply(req, answer, len) != FLOWD_OK)
        error = flowd_error_retriable("NOMEM", "out of memory");
    cJSON_Delete(json);
    free(answer);
    /* the exchange is over: clean both folders (a redelivery after this point writes the
     * request again and the legacy system answers it again) */
    unlink(ans_path);
    return error;
}

static void on_log(void *opaque, int level, const char *msg)
{
    (void)opaque;
    fprintf(stderr, "sdk-file-exchange: %s%s\n", level <= FLOWD_LOG_WARNING ? "warning: " : "",
            msg);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"bootstrap", required_argument, NULL, 'b'},
                                             {"bootstrap-file", required_argument, NULL, 'f'},
                                             {"outbox", required_argument, NULL, 'o'},
                                             {"inbox", required_argument, NULL, 'i'},
                                             {"wait-ms", required_argument, NULL, 'w'},
                                             {"set", required_argument, NULL, 's'},
                                             {"verbose", no_argument, NULL, 'v'},
                                             {NULL, 0, NULL, 0}};
    struct dirs dirs = {NULL, NULL, 10000};
    char errstr[FLOWD_ERRSTR_SIZE];
    int verbose = 0, c, rc = 1;
    flowd_conf_t *conf = flowd_conf_new();

    if (!conf)
        return 1;
    flowd_conf_set(conf, "reply.topic", "ai.flowx.dev.engine.receive.invoices.v1", NULL, 0);
    flowd_conf_set(conf, "group.id", "sdk-file-exchange-connector", NULL, 0);
    while ((c = getopt_long(argc, argv, "v", longopts, NULL)) != -1) {
        const char *name = NULL, *value = optarg;
        char *eq;
        switch (c) {
        case 'b':
            name = "bootstrap.servers";
            break;
        case 'f':
            name = "bootstrap.file";
            break;
        case 'o':
            dirs.outbox = optarg;
            break;
        case 'i':
            dirs.inbox = optarg;
            break;
        case 'w':
            dirs.wait_ms = strtol(optarg, NULL, 10);
            break;
        case 's':
            if (!(eq = strchr(optarg, '=')))
                goto usage;
            *eq = '\0';
            name = optarg;
            value = eq + 1;
            break;
        case 'v':
            verbose = 1;
            break;
        default:
            goto usage;
        }
        if (name && flowd_conf_set(conf, name, value, errstr, sizeof(errstr)) != FLOWD_OK) {
            fprintf(stderr, "sdk-file-exchange: %s\n", errstr);
            goto out;
        }
    }
    if (!dirs.outbox || !dirs.inbox || dirs.wait_ms <= 0)
        goto usage;
    flowd_conf_set_log_cb(conf, on_log, verbose ? FLOWD_LOG_DEBUG : FLOWD_LOG_WARNING, NULL);
    if (flowd_conf_add_handler(conf, "ai.flowx.dev.connector.invoices.in.v1", NULL, on_request,
                               &dirs, errstr, sizeof(errstr)) != FLOWD_OK) {
        fprintf(stderr, "sdk-file-exchange: %s\n", errstr);
        goto out;
    }
    flowd_conn_t *conn = flowd_conn_new(conf, errstr, sizeof(errstr));
    if (!conn) {
        fprintf(stderr, "sdk-file-exchange: %s\n", errstr);
        goto out;
    }
    conf = NULL;
    rc = flowd_conn_run(conn) == FLOWD_OK ? 0 : 1;
    flowd_conn_destroy(conn);
    goto out;
usage:
    fprintf(stderr,
            "usage: sdk-file-exchange-connector (--bootstrap H:P | --bootstrap-file F)\n"
            "          --outbox DIR --inbox DIR [--wait-ms N] [--set NAME=VALUE]... [-v]\n");
out:
    flowd_conf_destroy(conf);
    return rc;
}
