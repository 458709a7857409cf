/* main.c - flowd: parse arguments and configuration, wire store, Kafka, engine and HTTP, run the
 * loop until SIGTERM/SIGINT, then stop in order (HTTP, loop, Kafka flush, store).
 */
#include "daemon.h"

#include "../api/api.h"
#include "../bus/kafka_mode.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/banned.h"

#define FLOWD_VERSION "0.1.0"

extern char **environ;

static struct daemon *the_daemon;

static void on_signal(int sig)
{
    (void)sig;
    if (the_daemon)
        the_daemon->stopping = 1;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: flowd [options]\n"
        "       flowd kafka [--brokers N] [--control] ...   run only the embedded Kafka cluster\n"
        "\n"
        "  --config FILE        YAML configuration file\n"
        "  --set KEY=VALUE      set one configuration key (repeatable; wins over file and env)\n"
        "  --data-dir DIR       same as --set data-dir=DIR\n"
        "  --print-config       print the resolved configuration and exit\n"
        "  --print-reference    print every configuration key with its default and exit\n"
        "  --version            print the version and exit\n"
        "  --help               this text\n"
        "\n"
        "Environment variables override the file: KAFKA_TOPIC_NAMING_ENVIRONMENT=prod.\n"
        "overrides kafka.topic.naming.environment. See docs/configuration.md.\n");
}

static int mkdir_p(const char *path)
{
    char *p = flowd_xstrdup(path);
    int rc = 0;
    for (char *s = p + 1; *s && !rc; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            rc = -1;
        *s = '/';
    }
    if (!rc && mkdir(p, 0755) != 0 && errno != EEXIST)
        rc = -1;
    free(p);
    return rc;
}

static int load_config(
    int argc, char **argv, struct flowd_config *cfg, int *print, char *errstr, size_t errstr_size)
{
    const char *file = NULL;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[++i];
    if (file && config_load_file(cfg, file, errstr, errstr_size))
        return -1;
    if (config_apply_env(cfg, environ, errstr, errstr_size))
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0) {
            i++;
        } else if (strcmp(a, "--set") == 0 || strcmp(a, "--data-dir") == 0) {
            if (i + 1 >= argc) {
                snprintf(errstr, errstr_size, "%s needs a value", a);
                return -1;
            }
            const char *v = argv[++i];
            if (strcmp(a, "--data-dir") == 0) {
                if (config_set(cfg, "data-dir", v, errstr, errstr_size))
                    return -1;
                continue;
            }
            const char *eq = strchr(v, '=');
            if (!eq) {
                snprintf(errstr, errstr_size, "--set '%s': expected KEY=VALUE", v);
                return -1;
            }
            char *name = flowd_xstrndup(v, (size_t)(eq - v));
            int rc = config_set(cfg, name, eq + 1, errstr, errstr_size);
            free(name);
            if (rc)
                return -1;
        } else if (strcmp(a, "--print-config") == 0) {
            *print = 1;
        } else if (strcmp(a, "--print-reference") == 0) {
            *print = 2;
        } else {
            snprintf(errstr, errstr_size, "unknown argument '%s' (see --help)", a);
            return -1;
        }
    }
    return config_resolve(cfg, errstr, errstr_size);
}

static int setup_logging(const struct flowd_config *cfg, char *errstr, size_t errstr_size)
{
    int level = log_level_parse(cfg->log_level);
    if (level < 0) {
        snprintf(errstr, errstr_size, "key 'log.level': unknown level '%s'", cfg->log_level);
        return -1;
    }
    log_level_now = level;
    log_set_json(strcmp(cfg->log_format, "json") == 0);
    unsigned mask = 0;
    if (cfg->log_debug && log_debug_parse(cfg->log_debug, &mask, errstr, errstr_size))
        return -1;
    log_debug = mask;
    if (mask)
        log_level_now = LOG_DEBUG;
    return 0;
}

/* writer: the loop's handle, which holds this node's id in a shared store. */
static int open_store(const struct flowd_config *cfg,
                      struct store_handle *h,
                      int writer,
                      char *errstr,
                      size_t errstr_size)
{
    int shared = strcmp(cfg->store_type, "postgresql") == 0;
    struct store_options opt = {cfg->sqlite_path, cfg->sqlite_synchronous, cfg->pg_dsn,
                                (int)cfg->node_id, writer && shared};
    h->m = shared ? &store_pg_methods : &store_sqlite_methods;
    return h->m->x_open(&opt, &h->st, errstr, errstr_size);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "kafka") == 0)
        return kafka_mode_main(argc - 1, argv + 1);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("flowd %s (librdkafka %s)\n", FLOWD_VERSION, rd_kafka_version_str());
            return 0;
        }
    }
    char errstr[FLOWD_ERRSTR_SIZE * 2] = "";
    struct flowd_config *cfg = config_new();
    int print = 0;
    if (load_config(argc, argv, cfg, &print, errstr, sizeof(errstr))) {
        fprintf(stderr, "flowd: configuration error: %s\n", errstr);
        config_free(cfg);
        return 2;
    }
    if (print == 1) {
        config_print(cfg, stdout);
        config_free(cfg);
        return 0;
    }
    if (print == 2) {
        config_print_reference(stdout);
        config_free(cfg);
        return 0;
    }
    if (setup_logging(cfg, errstr, sizeof(errstr))) {
        fprintf(stderr, "flowd: configuration error: %s\n", errstr);
        config_free(cfg);
        return 2;
    }

    int exit_code = 1;
    struct daemon *d = flowd_xcalloc(1, sizeof(*d));
    struct api *api = NULL;
    d->cfg = cfg;
    d->env.prefix = cfg->prefix;
    d->env.suffix = cfg->suffix;
    pthread_mutex_init(&d->read_lock, NULL);
    pthread_mutex_init(&d->q_lock, NULL);
    pthread_cond_init(&d->q_done, NULL);
    atomic_store(&d->store_ok, 1);
    metrics_init(&d->m);
    int re_ok = regcomp(&d->sub_re, cfg->subscription_regex, REG_EXTENDED | REG_NOSUB) == 0;
    flowd_assert(re_ok); /* config_resolve checked it */

    if (mkdir_p(cfg->data_dir) != 0) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_MAIN, "cannot create data-dir %s: %s", cfg->data_dir,
                  strerror(errno));
        goto out;
    }
    store_sqlite_global_init();
    d->shared = strcmp(cfg->store_type, "postgresql") == 0;
    if (open_store(cfg, &d->store, 1, errstr, sizeof(errstr)) ||
        open_store(cfg, &d->read_store, 0, errstr, sizeof(errstr))) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "cannot open the store: %s", errstr);
        goto out;
    }
    const char *faults = getenv("FLOWD_STORE_FAULTS"); /* tests only: see store_fault.c */
    if (faults && *faults && store_fault_wrap(&d->store, faults, errstr, sizeof(errstr))) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_STORE, "%s", errstr);
        goto out;
    }
    d->bus = bus_new(cfg, loop_on_delivery, d, errstr, sizeof(errstr));
    if (!d->bus) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_KAFKA, "%s", errstr);
        goto out;
    }
    if (bus_is_embedded(d->bus)) {
        fprintf(stderr, "flowd: embedded Kafka bootstrap: %s (written to %s/kafka.bootstrap)\n",
                bus_bootstrap(d->bus), cfg->data_dir);
    }
    bus_ensure_topic(d->bus, cfg->dlq_topic);
    /* not the start topic: an existing subscribed topic at startup would make the first
     * receive topic wait for a second rebalance; it is created by its first producer */
    if (recover_load(d, errstr, sizeof(errstr))) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_MAIN, "%s", errstr);
        goto out;
    }
    if (bus_subscribe(d->bus, errstr, sizeof(errstr))) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_KAFKA, "%s", errstr);
        goto out;
    }
    loop_publish_unsent(d);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    the_daemon = d;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct api_backend be;
    backend_init(d, &be);
    api = api_start(cfg, &be, errstr, sizeof(errstr));
    if (!api) {
        FLOWD_LOG(LOG_ERROR, LOG_SUB_HTTP, "%s", errstr);
        goto out;
    }
    fprintf(stderr, "flowd: HTTP listening on http://%s:%lld\n", cfg->http_bind,
            (long long)cfg->http_port);
    fprintf(stderr, "flowd: ready\n");

    loop_run(d);
    FLOWD_LOG(LOG_INFO, LOG_SUB_MAIN, "stopping");
    exit_code = 0;

out:
    api_stop(api);
    if (d->bus) {
        /* serve the last delivery reports so that their rows are marked sent */
        bus_free(d->bus, 5000);
        d->bus = NULL;
        if (d->nsent && d->store.st && !d->store.m->x_begin(d->store.st)) {
            if (d->store.m->x_outbox_mark_sent(d->store.st, d->sent_ids, d->nsent, 0) ||
                d->store.m->x_commit(d->store.st))
                d->store.m->x_rollback(d->store.st);
        }
    }
    for (size_t i = 0; i < d->cache.cap; i++)
        if (map_used(&d->cache, i))
            engine_instance_free(d->cache.slots[i].val);
    map_release(&d->cache);
    timers_release(d);
    registry_release(&d->reg);
    if (d->store.st)
        d->store.m->x_close(d->store.st);
    if (d->read_store.st)
        d->read_store.m->x_close(d->read_store.st);
    regfree(&d->sub_re);
    free(d->sent_ids);
    pthread_mutex_destroy(&d->read_lock);
    pthread_mutex_destroy(&d->q_lock);
    pthread_cond_destroy(&d->q_done);
    free(d);
    config_free(cfg);
    return exit_code;
}
