/* rest.c - a REST legacy-API connector on the flowd SDK: account lookups over HTTP (libcurl).
 *
 *   request  ai.flowx.dev.connector.accounts.in.v1     {"accountId": "acc-42"}
 *   legacy   GET <legacy-url>/accounts/acc-42           (Idempotency-Key: <messageId>)
 *   reply    ai.flowx.dev.engine.receive.accounts.v1   {"accountId":"acc-42","balance":...}
 *
 * The handler only says what an answer *means*; the SDK does the rest:
 *   - timeout, connection refused, HTTP 5xx   -> retriable: the SDK calls again after an
 *     exponential backoff with jitter (retry.max.attempts, retry.backoff.ms ...), then, when
 *     the attempts are exhausted, publishes an error reply;
 *   - HTTP 404 and other 4xx, a non-JSON answer -> fatal: an error reply at once,
 *     {"errorMessage": ..., "errorCode": ...}, which the process routes on;
 *   - the request's messageId is sent as Idempotency-Key, so when a request is redone (the
 *     connector crashed before committing) the legacy system can apply it only once.
 *
 * One curl handle per worker thread (keeps connections alive; curl handles are not shared
 * between threads). Build:  make   (pkg-config flowd-connector libcurl libcjson)
 * Run:  sdk-rest-connector --bootstrap-file DATA/kafka.bootstrap --legacy-url http://127.0.0.1:P
 */
#include <flowd/flowd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_MAX (1 << 20) /* never buffer more than this from the legacy system */

struct rest {
    const char *legacy_url;
    long timeout_ms;
    pthread_key_t curl_key; /* this worker's CURL handle */
};

struct body {
    char *data;
    size_t len;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body *body = userdata;
    size_t n = size * nmemb;
    if (body->len + n > BODY_MAX)
        return 0; /* curl fails with CURLE_WRITE_ERROR: a hard cap */
    char *grown = realloc(body->data, body->len + n + 1);
    if (!grown)
        return 0;
    body->data = grown;
    memcpy(body->data + body->len, ptr, n);
    body->len += n;
    body->data[body->len] = '\0';
    return n;
}

static CURL *worker_curl(struct rest *rest)
{
    CURL *curl = pthread_getspecific(rest->curl_key);
    if (!curl && (curl = curl_easy_init())) {
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, rest->timeout_ms);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        pthread_setspecific(rest->curl_key, curl);
    }
    return curl;
}

static flowd_error_t *on_request(flowd_request_t *req, void *opaque)
{
    struct rest *rest = opaque;
    size_t len;
    const char *text = flowd_request_body(req, &len);
    char id[256], url[1024], errbuf[CURL_ERROR_SIZE] = "";
    flowd_error_t *error = NULL;

    /* 1. the request: {"accountId": "..."} (the SDK already checked it is JSON) */
    cJSON *json = cJSON_ParseWithLength(text, len);
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(json, "accountId");
    if (cJSON_IsString(jid) && jid->valuestring[0])
        snprintf(id, sizeof(id), "%s", jid->valuestring);
    else if (cJSON_IsNumber(jid))
        snprintf(id, sizeof(id), "%.0f", jid->valuedouble);
    else
        id[0] = '\0';
    cJSON_Delete(json);
    if (!id[0])
        return flowd_error_fatal("BAD_REQUEST", "request has no accountId");

    /* 2. the legacy call */
    CURL *curl = worker_curl(rest);
    if (!curl)
        return flowd_error_retriable("NOMEM", "cannot create a curl handle");
    char *escaped = curl_easy_escape(curl, id, 0);
    snprintf(url, sizeof(url), "%s/accounts/%s", rest->legacy_url, escaped ? escaped : "");
    curl_free(escaped);
    char key[300];
    snprintf(key, sizeof(key), "Idempotency-Key: %s",
             flowd_request_message_id(req) ? flowd_request_message_id(req) : "");
    struct curl_slist *hdrs = curl_slist_append(NULL, key);
    struct body body = {NULL, 0};
    long status = 0;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);

    /* 3. what the answer means */
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        error = flowd_error_retriable("LEGACY_TIMEOUT", "legacy system did not answer in %ld ms",
                                      rest->timeout_ms);
    } else if (rc != CURLE_OK) {
        error = flowd_error_retriable("LEGACY_UNREACHABLE", "legacy system unreachable: %s",
                                      errbuf[0] ? errbuf : curl_easy_strerror(rc));
    } else if (status >= 500) {
        error = flowd_error_retriable("LEGACY_HTTP_5XX", "legacy system answered HTTP %ld", status);
    } else if (status == 404) {
        error = flowd_error_fatal("ACCOUNT_NOT_FOUND", "account %s not found", id);
    } else if (status != 200) {
        error = flowd_error_fatal("LEGACY_HTTP_4XX", "legacy system refused: HTTP %ld", status);
    } else if (flowd_request_reply(req, body.data ? body.data : "", body.len) != FLOWD_OK) {
        error = flowd_error_fatal("LEGACY_BAD_JSON", "legacy system answered invalid JSON");
    }
    free(body.data);
    return error;
}

static void on_log(void *opaque, int level, const char *msg)
{
    (void)opaque;
    fprintf(stderr, "sdk-rest: %s%s\n", level <= FLOWD_LOG_WARNING ? "warning: " : "", msg);
}

static void usage(FILE *fp)
{
    fprintf(fp, "usage: sdk-rest-connector (--bootstrap HOST:PORT | --bootstrap-file PATH)\n"
                "          --legacy-url URL [--timeout-ms N] [--in TOPIC] [--out TOPIC]\n"
                "          [--group ID] [--set NAME=VALUE]... [-v]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"bootstrap", required_argument, NULL, 'b'},
                                             {"bootstrap-file", required_argument, NULL, 'f'},
                                             {"legacy-url", required_argument, NULL, 'u'},
                                             {"timeout-ms", required_argument, NULL, 't'},
                                             {"in", required_argument, NULL, 'i'},
                                             {"out", required_argument, NULL, 'o'},
                                             {"group", required_argument, NULL, 'g'},
                                             {"set", required_argument, NULL, 's'},
                                             {"verbose", no_argument, NULL, 'v'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    struct rest rest = {NULL, 2000, 0};
    const char *in = "ai.flowx.dev.connector.accounts.in.v1";
    char errstr[FLOWD_ERRSTR_SIZE];
    int verbose = 0, c, rc = 1;
    flowd_conf_t *conf = flowd_conf_new();

    if (!conf)
        return 1;
    flowd_conf_set(conf, "reply.topic", "ai.flowx.dev.engine.receive.accounts.v1", NULL, 0);
    flowd_conf_set(conf, "group.id", "sdk-rest-connector", NULL, 0);
    while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        const char *name = NULL, *value = optarg;
        char *eq;
        switch (c) {
        case 'b':
            name = "bootstrap.servers";
            break;
        case 'f':
            name = "bootstrap.file";
            break;
        case 'u':
            rest.legacy_url = optarg;
            break;
        case 't':
            rest.timeout_ms = strtol(optarg, NULL, 10);
            break;
        case 'i':
            in = optarg;
            break;
        case 'o':
            name = "reply.topic";
            break;
        case 'g':
            name = "group.id";
            break;
        case 's':
            if (!(eq = strchr(optarg, '='))) {
                usage(stderr);
                goto out;
            }
            *eq = '\0';
            name = optarg;
            value = eq + 1;
            break;
        case 'v':
            verbose = 1;
            break;
        case 'h':
            usage(stdout);
            rc = 0;
            goto out;
        default:
            usage(stderr);
            goto out;
        }
        if (name && flowd_conf_set(conf, name, value, errstr, sizeof(errstr)) != FLOWD_OK) {
            fprintf(stderr, "sdk-rest: %s\n", errstr);
            goto out;
        }
    }
    if (!rest.legacy_url || rest.timeout_ms <= 0) {
        usage(stderr);
        goto out;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_key_create(&rest.curl_key, (void (*)(void *))curl_easy_cleanup);
    flowd_conf_set_log_cb(conf, on_log, verbose ? FLOWD_LOG_DEBUG : FLOWD_LOG_WARNING, NULL);
    if (flowd_conf_add_handler(conf, in, NULL, on_request, &rest, errstr, sizeof(errstr)) ||
        !(rest.legacy_url[0])) {
        fprintf(stderr, "sdk-rest: %s\n", errstr);
        goto out_curl;
    }
    flowd_conn_t *conn = flowd_conn_new(conf, errstr, sizeof(errstr));
    if (!conn) {
        fprintf(stderr, "sdk-rest: %s\n", errstr);
        goto out_curl;
    }
    conf = NULL; /* owned by conn */
    rc = flowd_conn_run(conn) == FLOWD_OK ? 0 : 1;
    flowd_conn_destroy(conn);
out_curl:
    pthread_key_delete(rest.curl_key);
    curl_global_cleanup();
out:
    flowd_conf_destroy(conf);
    return rc;
}
