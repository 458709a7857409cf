/* kafka_mode.c - `flowd kafka [--brokers N] [--partitions P] [--topic T]... [--bootstrap-file F]
 * [--control]`: starts a mock Kafka cluster, prints and writes its bootstrap address, and runs
 * until SIGTERM/SIGINT. With --control it reads commands from stdin, one per line, and answers `ok`
 * or `error: ...` on stdout, so tests can break the cluster on purpose:
 *
 *   down BROKER | up BROKER            broker stops/starts accepting connections
 *   rtt BROKER MS                      adds latency to a broker
 *   error API ERR [COUNT]              the next COUNT requests of API (Produce, Fetch,
 * OffsetCommit, Heartbeat, JoinGroup, ... or a number) fail with ERR (a Kafka error name such as
 * NOT_LEADER_FOR_PARTITION, or a number) clear API                          drops pending injected
 * errors of API leader TOPIC PARTITION BROKER      moves a partition leader create TOPIC PARTITIONS
 * creates a topic quit                               stops the cluster
 */
#include "kafka_mode.h"

#include "../common/err.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../common/banned.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static const struct {
    const char *name;
    int16_t key;
} apis[] = {
    {"Produce", 0},      {"Fetch", 1},       {"ListOffsets", 2},      {"Metadata", 3},
    {"OffsetCommit", 8}, {"OffsetFetch", 9}, {"FindCoordinator", 10}, {"JoinGroup", 11},
    {"Heartbeat", 12},   {"LeaveGroup", 13}, {"SyncGroup", 14},       {"InitProducerId", 22},
};

static int parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno)
        return -1;
    *out = v;
    return 0;
}

static int parse_api(const char *s, int16_t *key)
{
    long v;
    if (parse_long(s, &v) == 0) {
        *key = (int16_t)v;
        return 0;
    }
    for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++)
        if (strcasecmp(apis[i].name, s) == 0) {
            *key = apis[i].key;
            return 0;
        }
    return -1;
}

static int parse_err(const char *s, rd_kafka_resp_err_t *err)
{
    long v;
    if (parse_long(s, &v) == 0) {
        *err = (rd_kafka_resp_err_t)v;
        return 0;
    }
    const struct rd_kafka_err_desc *descs;
    size_t n;
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; i++)
        if (descs[i].name && strcasecmp(descs[i].name, s) == 0) {
            *err = descs[i].code;
            return 0;
        }
    return -1;
}

/* Runs one console command; writes the answer into out. */
static void command(rd_kafka_mock_cluster_t *mc, char *line, char *out, size_t size)
{
    char *argv[6];
    int argc = 0;
    for (char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save); tok && argc < 6;
         tok = strtok_r(NULL, " \t\r\n", &save))
        argv[argc++] = tok;
    long a = 0, b = 0, c = 1;
    int16_t api;
    rd_kafka_resp_err_t err = 0;
    snprintf(out, size, "ok");
    if (argc == 0)
        return;
    if ((strcmp(argv[0], "down") == 0 || strcmp(argv[0], "up") == 0) && argc == 2 &&
        parse_long(argv[1], &a) == 0) {
        err = argv[0][0] == 'd' ? rd_kafka_mock_broker_set_down(mc, (int32_t)a)
                                : rd_kafka_mock_broker_set_up(mc, (int32_t)a);
    } else if (strcmp(argv[0], "rtt") == 0 && argc == 3 && parse_long(argv[1], &a) == 0 &&
               parse_long(argv[2], &b) == 0) {
        err = rd_kafka_mock_broker_set_rtt(mc, (int32_t)a, (int)b);
    } else if (strcmp(argv[0], "error") == 0 && (argc == 3 || argc == 4)) {
        rd_kafka_resp_err_t inject;
        if (parse_api(argv[1], &api) || parse_err(argv[2], &inject) ||
            (argc == 4 && (parse_long(argv[3], &c) || c < 1 || c > 100000))) {
            snprintf(out, size, "error: usage: error API ERR [COUNT]");
            return;
        }
        rd_kafka_resp_err_t *errs = calloc((size_t)c, sizeof(*errs));
        for (long i = 0; i < c; i++)
            errs[i] = inject;
        rd_kafka_mock_push_request_errors_array(mc, api, (size_t)c, errs);
        free(errs);
    } else if (strcmp(argv[0], "clear") == 0 && argc == 2 && parse_api(argv[1], &api) == 0) {
        rd_kafka_mock_clear_request_errors(mc, api);
    } else if (strcmp(argv[0], "leader") == 0 && argc == 4 && parse_long(argv[2], &a) == 0 &&
               parse_long(argv[3], &b) == 0) {
        err = rd_kafka_mock_partition_set_leader(mc, argv[1], (int32_t)a, (int32_t)b);
    } else if (strcmp(argv[0], "create") == 0 && argc == 3 && parse_long(argv[2], &a) == 0) {
        err = rd_kafka_mock_topic_create(mc, argv[1], (int)a, 1);
    } else if (strcmp(argv[0], "quit") == 0) {
        stop = 1;
    } else {
        snprintf(out, size, "error: unknown or malformed command '%s' (see flowd kafka --help)",
                 argv[0]);
        return;
    }
    if (err)
        snprintf(out, size, "error: %s", rd_kafka_err2str(err));
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flowd kafka [--brokers N] [--partitions P] [--topic NAME[:PARTITIONS]]... "
            "[--bootstrap-file PATH] [--control]\n"
            "Runs only the embedded Kafka cluster, creating the topics given (P partitions\n"
            "each unless NAME:PARTITIONS says otherwise). With --control, reads fault-injection\n"
            "commands on stdin: down B | up B | rtt B MS | error API ERR [COUNT] | clear API |\n"
            "leader TOPIC PARTITION BROKER | create TOPIC PARTITIONS | quit\n");
}

int kafka_mode_main(int argc, char **argv)
{
    long brokers = 3, partitions = 4;
    const char *bootstrap_file = NULL;
    int control = 0;
    const char *topics[64];
    int ntopics = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (strcmp(a, "--brokers") == 0 && has && parse_long(argv[i + 1], &brokers) == 0 &&
            brokers >= 1 && brokers <= 10) {
            i++;
        } else if (strcmp(a, "--partitions") == 0 && has &&
                   parse_long(argv[i + 1], &partitions) == 0 && partitions >= 1 &&
                   partitions <= 64) {
            i++;
        } else if (strcmp(a, "--topic") == 0 && has && ntopics < 64) {
            topics[ntopics++] = argv[++i];
        } else if (strcmp(a, "--bootstrap-file") == 0 && has) {
            bootstrap_file = argv[++i];
        } else if (strcmp(a, "--control") == 0) {
            control = 1;
        } else if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "flowd kafka: bad or incomplete argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }

    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "client.id", "flowd-kafka", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "log_level", "3", errstr,
                      sizeof(errstr)); /* no "no bootstrap" notice */
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "flowd kafka: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, (int)brokers);
    if (!mc) {
        fprintf(stderr, "flowd kafka: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    int rf = brokers < 3 ? (int)brokers : 3;
    for (int i = 0; i < ntopics; i++) {
        /* NAME or NAME:PARTITIONS (a topic name has no ':') */
        char name[256];
        long p = partitions;
        const char *colon = strchr(topics[i], ':');
        size_t len = colon ? (size_t)(colon - topics[i]) : strlen(topics[i]);
        if (len == 0 || len >= sizeof(name) ||
            (colon && (parse_long(colon + 1, &p) != 0 || p < 1 || p > 64))) {
            fprintf(stderr, "flowd kafka: --topic '%s': expected NAME or NAME:PARTITIONS (1-64)\n",
                    topics[i]);
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 2;
        }
        memcpy(name, topics[i], len);
        name[len] = '\0';
        rd_kafka_mock_topic_create(mc, name, (int)p, rf);
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    if (bootstrap_file) {
        FILE *f = fopen(bootstrap_file, "w");
        if (!f || fprintf(f, "%s\n", bootstrap) < 0 || fclose(f) != 0) {
            fprintf(stderr, "flowd kafka: cannot write %s: %s\n", bootstrap_file, strerror(errno));
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }
    printf("flowd kafka: %ld broker(s) at %s\n", brokers, bootstrap);
    fflush(stdout);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /* unbuffered: poll() on the descriptor must see every line not yet read, also when several
     * commands arrive in one write */
    setvbuf(stdin, NULL, _IONBF, 0);
    char line[1024], out[300];
    while (!stop) {
        if (!control) {
            pause();
            continue;
        }
        struct pollfd pfd = {0, POLLIN, 0};
        if (poll(&pfd, 1, 200) <= 0)
            continue;
        if (!fgets(line, sizeof(line), stdin))
            control = 0; /* stdin closed: keep running until a signal */
        else {
            command(mc, line, out, sizeof(out));
            printf("%s\n", out);
            fflush(stdout);
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
