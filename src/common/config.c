/* config.c - flowd's configuration table and everything it drives.
 *
 * One table, props[], names every key with its type, its field in struct flowd_config, its
 * default, its range or allowed values and its doc string. The YAML file (config_yaml.c),
 * environment overrides, `--set`, config_print() and docs/configuration.md all come from it, so a
 * key added to the table exists everywhere at once (librdkafka rd_kafka_properties[]).
 *
 * Invariants:
 * - Every key keeps its raw text (before ${...} interpolation) in cfg->priv, with its source and
 *   origin. A value never replaces one from a higher source (default < file < env < FLOWD_ env <
 *   --set), so the order of the config_* calls does not change the outcome.
 * - The public fields hold the result of the last successful config_resolve(); a failed resolve
 *   builds into a scratch struct and leaves them untouched. config_new() resolves the defaults.
 * - kafka.properties.<name> entries keep the order in which names first appeared.
 */
#include "config.h"

#include "buf.h"
#include "config_int.h"
#include "err.h"
#include "json.h"
#include "log.h"
#include "mem.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <regex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "banned.h"

#define KPROPS_PREFIX "kafka.properties."
#define VALUE_MAX     (1 << 20) /* longest value after interpolation (PEM bundles fit) */
#define TOPIC_MAX     249       /* Kafka's limit on topic name length */
#define TOPIC_CHARS   "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
#define ENV_PREFIX    "FLOWD_"
#define HIDDEN_VALUE  "<hidden>"

enum prop_type { PROP_STR, PROP_INT, PROP_ENUM };

enum prop_flags {
    PROP_NONEMPTY = 1 << 0, /* STR: the empty string is an error */
    PROP_ENUM_INT = 1 << 1, /* ENUM: stored as the value's number in an int64_t field */
};

struct prop_enum {
    const char *name;
    int64_t value; /* used with PROP_ENUM_INT */
};

struct flowd_prop {
    const char *name;
    enum prop_type type;
    size_t offset; /* of the char * or int64_t field in struct flowd_config */
    const char *def;
    int64_t min, max;               /* INT */
    const struct prop_enum *values; /* ENUM: ends with {NULL} */
    unsigned flags;
    /* extra check of the resolved value; writes the reason without the key */
    int (*check)(const char *value, char *errstr, size_t errstr_size);
    const char *doc;
};

static const struct prop_enum store_types[] = {{"sqlite", 0}, {"postgresql", 0}, {NULL, 0}};
static const struct prop_enum sync_modes[] = {{"FULL", 0}, {"NORMAL", 0}, {NULL, 0}};
static const struct prop_enum tristate[] = {{"auto", -1}, {"true", 1}, {"false", 0}, {NULL, 0}};
static const struct prop_enum log_levels[] = {
    {"error", 0}, {"warn", 0}, {"info", 0}, {"debug", 0}, {NULL, 0}};
static const struct prop_enum log_formats[] = {{"text", 0}, {"json", 0}, {NULL, 0}};

static int check_log_debug(const char *value, char *errstr, size_t errstr_size)
{
    unsigned mask;
    return log_debug_parse(value, &mask, errstr, errstr_size) < 0 ? FLOWD_ERR_INVAL : 0;
}

#define OFF(field) offsetof(struct flowd_config, field)
#define P_STR(name, field, def, flags, doc)                           \
    {                                                                 \
        name, PROP_STR, OFF(field), def, 0, 0, NULL, flags, NULL, doc \
    }
#define P_INT(name, field, def, min, max, doc)                        \
    {                                                                 \
        name, PROP_INT, OFF(field), def, min, max, NULL, 0, NULL, doc \
    }
#define P_ENUM(name, field, def, values, flags, doc)                     \
    {                                                                    \
        name, PROP_ENUM, OFF(field), def, 0, 0, values, flags, NULL, doc \
    }

static const struct flowd_prop props[] = {
    P_STR("kafka.bootstrap-servers",
          bootstrap_servers,
          "embedded",
          PROP_NONEMPTY,
          "`embedded` starts librdkafka's in-process mock cluster (its address is logged and "
          "written to `<data-dir>/kafka.bootstrap`); otherwise the `host:port,...` list of a "
          "Kafka cluster."),
    P_STR("kafka.consumer.group-id",
          group_id,
          "flowd-engine",
          PROP_NONEMPTY,
          "Consumer group of the engine; flowd nodes in the same group share the work."),
    P_INT("kafka.message.max-bytes",
          message_max_bytes,
          "1048576",
          1024,
          100 * 1024 * 1024,
          "Largest message consumed or produced. Larger ones are refused (HTTP 413, dead-letter "
          "`reason=too-large`), never truncated."),
    P_INT("kafka.consumer.fetch-wait-max-ms",
          fetch_wait_max_ms,
          "5",
          0,
          1000,
          "How long a broker may hold a fetch while waiting for data (librdkafka "
          "`fetch.wait.max.ms`); low values cut reply latency."),
    P_INT("kafka.consumer.session-timeout-ms",
          session_timeout_ms,
          "6000",
          1,
          3600000,
          "Consumer group session timeout (librdkafka `session.timeout.ms`): how soon the "
          "partitions of a dead node move to the others."),
    P_INT("kafka.consumer.metadata-refresh-ms",
          metadata_refresh_ms,
          "1000",
          10,
          3600000,
          "Topic metadata refresh interval (librdkafka `topic.metadata.refresh.interval.ms`): "
          "how soon a new topic matching `kafka.topic.pattern` is consumed."),
    P_INT("kafka.embedded.brokers",
          embedded_brokers,
          "1",
          1,
          10,
          "Brokers of the embedded mock cluster (with `kafka.bootstrap-servers: embedded`)."),
    P_INT("kafka.embedded.partitions",
          embedded_partitions,
          "4",
          1,
          64,
          "Partitions of each topic the embedded mock cluster creates."),
    P_STR("kafka.topic.naming.package", package, "ai.flowx.", 0, "First part of topic names."),
    P_STR("kafka.topic.naming.environment",
          environment,
          "dev.",
          0,
          "Environment part of topic names (`dev.`, `prod.`, ...)."),
    P_STR("kafka.topic.naming.version", version, ".v1", 0, "Version part of topic names."),
    P_STR("kafka.topic.naming.prefix",
          prefix,
          "${kafka.topic.naming.package}${kafka.topic.naming.environment}",
          0,
          "Start of the engine's topic names; `${prefix}` in process definitions."),
    P_STR("kafka.topic.naming.suffix",
          suffix,
          "${kafka.topic.naming.version}",
          0,
          "End of the engine-owned topic names; `${suffix}` in process definitions."),
    P_STR("kafka.topic.naming.engineReceivePattern",
          engine_receive_pattern,
          "engine.receive",
          0,
          "Part after the prefix of the topics the engine consumes replies from."),
    P_STR("kafka.topic.pattern",
          pattern,
          "${kafka.topic.naming.prefix}${kafka.topic.naming.engineReceivePattern}*",
          PROP_NONEMPTY,
          "Topics the engine consumes: `*` matches any characters, everything else is literal "
          "(subscribed as the regex `^...`). Must not match the dead-letter, start or confirm "
          "topics."),
    P_STR("data-dir",
          data_dir,
          "./flowd-data",
          PROP_NONEMPTY,
          "Directory for the SQLite store and `kafka.bootstrap`."),
    P_ENUM("store.type",
           store_type,
           "sqlite",
           store_types,
           0,
           "Store backend: `sqlite` (a file under the data directory) or `postgresql` (a server, "
           "see `store.postgresql.dsn`)."),
    P_STR("store.postgresql.dsn",
          pg_dsn,
          "",
          0,
          "libpq connection string of the PostgreSQL store, e.g. `host=127.0.0.1 port=5432 "
          "dbname=flowd user=flowd`; required when `store.type` is `postgresql`. The schema is "
          "created or migrated at startup. `store.sqlite.synchronous` `NORMAL` sets "
          "`synchronous_commit = off`."),
    P_STR("store.sqlite.path",
          sqlite_path,
          "${data-dir}/flowd.db",
          PROP_NONEMPTY,
          "SQLite database file."),
    P_ENUM("store.sqlite.synchronous",
           sqlite_synchronous,
           "FULL",
           sync_modes,
           0,
           "SQLite `PRAGMA synchronous`: `FULL` survives power loss; `NORMAL` survives a "
           "process crash but may lose the last commits on power loss."),
    P_INT("engine.node-id",
          node_id,
          "0",
          0,
          1023,
          "Id of this node, unique among the flowd nodes sharing a PostgreSQL store (a second "
          "process with an id in use is refused at start); the high bits of the instance ids "
          "it creates. See docs/deployment.md, Several nodes."),
    P_INT("engine.batch.max-messages",
          batch_max,
          "500",
          1,
          100000,
          "Most messages applied in one store transaction (group commit)."),
    P_INT("engine.cache.max-instances",
          cache_max,
          "5000",
          0,
          10000000,
          "Most STARTED instances kept in memory between transactions on a store with one writer "
          "(SQLite); beyond it, instances are evicted in turn and read back from the store when "
          "a reply or a timer needs them. A shared PostgreSQL store keeps none (other nodes "
          "write too)."),
    P_INT("engine.batch.max-wait-ms",
          batch_wait_ms,
          "2",
          0,
          1000,
          "Longest wait for a batch to fill before it is committed."),
    P_INT("engine.early-reply-ttl-ms",
          early_reply_ttl_ms,
          "300000",
          0,
          604800000,
          "How long a reply that came before its instance reached the receive node it is for is "
          "kept; then it goes to the dead-letter topic with reason `expired`. 0 dead-letters such "
          "replies at once (`no-waiting-node`)."),
    P_INT("engine.retention.outbox-ms",
          outbox_retention_ms,
          "3600000",
          1000,
          INT64_C(31536000000),
          "How long messages stay in the outbox after Kafka acknowledged them (the requests of "
          "waiting instances stay until the instance ends: they may be re-sent)."),
    P_INT("engine.retention.dead-letters-ms",
          dlq_retention_ms,
          "604800000",
          1000,
          INT64_C(31536000000),
          "How long dead letters stay listed (and replayable) through the API."),
    P_INT("engine.retention.inbox-ms",
          inbox_retention_ms,
          "604800000",
          1000,
          INT64_C(31536000000),
          "How long the keys of consumed messages are kept to drop duplicates; a message consumed "
          "again after that is no longer recognised as a duplicate."),
    P_INT("engine.retention.check-interval-ms",
          purge_interval_ms,
          "60000",
          100,
          INT64_C(86400000),
          "How often the outbox, dead letters and inbox are trimmed to their retention."),
    P_ENUM("engine.republish-on-start",
           republish_on_start,
           "auto",
           tristate,
           PROP_ENUM_INT,
           "Re-publish the outstanding requests of waiting instances at start. `auto`: only "
           "with the embedded cluster, whose messages do not survive a restart."),
    P_STR("http.bind", http_bind, "127.0.0.1", PROP_NONEMPTY, "Address the HTTP API listens on."),
    P_INT("http.port", http_port, "8080", 1, 65535, "Port of the HTTP API."),
    P_INT("http.max-body-bytes",
          http_max_body,
          "1048576",
          1024,
          100 * 1024 * 1024,
          "Largest HTTP request body; larger ones get 413."),
    P_INT("http.max-header-bytes",
          http_max_header,
          "16384",
          1024,
          1024 * 1024,
          "Largest HTTP request line plus headers; larger requests get 413."),
    P_INT("http.threads",
          http_threads,
          "16",
          1,
          1024,
          "HTTP worker threads: the most connections served at once. A kept-alive connection "
          "holds its worker until it closes or idles out (`http.keep-alive-ms`), so give at "
          "least as many as clients keep connections open (a load balancer's pool)."),
    P_INT("http.keep-alive-ms",
          http_keep_alive_ms,
          "5000",
          0,
          600000,
          "How long an idle kept-alive HTTP connection keeps its worker; 0 closes each "
          "connection after its response."),
    P_STR("http.auth-token",
          http_auth_token,
          "",
          0,
          "Bearer token every HTTP request but `GET /health` must carry (`Authorization: Bearer "
          "<token>`). Empty: no authentication, allowed only when `http.bind` is a loopback "
          "address. Use `${FLOWD_TOKEN}` to read it from the environment."),
    P_ENUM("log.level", log_level, "info", log_levels, 0, "Least severe level logged."),
    P_ENUM(
        "log.format", log_format, "text", log_formats, 0, "`text` lines or JSON lines on stderr."),
    {"log.debug", PROP_STR, OFF(log_debug), "", 0, 0, NULL, 0, check_log_debug,
     "Subsystems that log at debug level: comma list of main, engine, store, kafka, http, "
     "config, or `all`."},
};

#define NPROPS (sizeof(props) / sizeof(props[0]))

struct config_val {
    char *raw;    /* before interpolation */
    char *origin; /* NULL for defaults */
    enum config_src src;
};

struct config_kprop {
    char *name; /* full key, kafka.properties.<name> */
    struct config_val val;
};

struct config_priv {
    struct config_val vals[NPROPS];
    struct config_kprop *kprops;
    size_t nkprops, kcap;
};

static char **str_field(struct flowd_config *cfg, const struct flowd_prop *p)
{
    return (char **)((char *)cfg + p->offset);
}

static int64_t *int_field(struct flowd_config *cfg, const struct flowd_prop *p)
{
    return (int64_t *)((char *)cfg + p->offset);
}

static const char *str_get(const struct flowd_config *cfg, const struct flowd_prop *p)
{
    return *(char *const *)((const char *)cfg + p->offset);
}

static int64_t int_get(const struct flowd_config *cfg, const struct flowd_prop *p)
{
    return *(const int64_t *)((const char *)cfg + p->offset);
}

static int prop_is_str(const struct flowd_prop *p)
{
    return p->type == PROP_STR || (p->type == PROP_ENUM && !(p->flags & PROP_ENUM_INT));
}

static const struct flowd_prop *prop_find(const char *name, size_t *idx)
{
    for (size_t i = 0; i < NPROPS; i++) {
        if (strcmp(props[i].name, name) == 0) {
            if (idx)
                *idx = i;
            return &props[i];
        }
    }
    return NULL;
}

/* ---- memory ---- */

static void val_set(struct config_val *v, const char *raw, enum config_src src, const char *origin)
{
    free(v->raw);
    free(v->origin);
    v->raw = flowd_xstrdup(raw);
    v->origin = origin ? flowd_xstrdup(origin) : NULL;
    v->src = src;
}

static void val_release(struct config_val *v)
{
    free(v->raw);
    free(v->origin);
    v->raw = v->origin = NULL;
}

/* Frees the resolved (public) strings and arrays and sets their pointers to NULL. */
static void release_resolved(struct flowd_config *cfg)
{
    for (size_t i = 0; i < NPROPS; i++) {
        if (prop_is_str(&props[i])) {
            free(*str_field(cfg, &props[i]));
            *str_field(cfg, &props[i]) = NULL;
        }
    }
    for (size_t i = 0; i < cfg->nkafka_props; i++) {
        free(cfg->kafka_props[i].name);
        free(cfg->kafka_props[i].value);
    }
    free(cfg->kafka_props);
    cfg->kafka_props = NULL;
    cfg->nkafka_props = 0;
    free(cfg->subscription_regex);
    free(cfg->dlq_topic);
    free(cfg->start_topic);
    free(cfg->confirm_topic);
    cfg->subscription_regex = cfg->dlq_topic = cfg->start_topic = cfg->confirm_topic = NULL;
}

struct flowd_config *config_new(void)
{
    struct flowd_config *cfg = flowd_xcalloc(1, sizeof(*cfg));
    cfg->priv = flowd_xcalloc(1, sizeof(*cfg->priv));
    for (size_t i = 0; i < NPROPS; i++)
        val_set(&cfg->priv->vals[i], props[i].def, CONFIG_SRC_DEFAULT, NULL);
    char errstr[FLOWD_ERRSTR_SIZE];
    int rc = config_resolve(cfg, errstr, sizeof(errstr));
    if (rc) /* the defaults are part of the program: they must resolve */
        flowd__assert_fail(errstr, __FILE__, __LINE__);
    return cfg;
}

void config_free(struct flowd_config *cfg)
{
    if (!cfg)
        return;
    release_resolved(cfg);
    if (cfg->priv) {
        for (size_t i = 0; i < NPROPS; i++)
            val_release(&cfg->priv->vals[i]);
        for (size_t i = 0; i < cfg->priv->nkprops; i++) {
            free(cfg->priv->kprops[i].name);
            val_release(&cfg->priv->kprops[i].val);
        }
        free(cfg->priv->kprops);
        free(cfg->priv);
    }
    free(cfg);
}

/* ---- setting raw values ---- */

/* Levenshtein distance, case-insensitive; SIZE_MAX for very long strings. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 200 || lb > 200)
        return SIZE_MAX;
    size_t *row = flowd_xmalloc((lb + 1) * sizeof(*row));
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    size_t d = row[lb];
    free(row);
    return d;
}

/* Equal ignoring case, '-', '_' and '.': "engine-receive-pattern" ~ "engineReceivePattern",
 * "HTTP_PORT" ~ "http.port". */
static int loose_equal(const char *a, const char *b)
{
    for (;;) {
        while (*a && strchr("-_.", *a))
            a++;
        while (*b && strchr("-_.", *b))
            b++;
        if (!*a || !*b)
            return !*a && !*b;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return 0;
        a++;
        b++;
    }
}

/* Writes the known key closest to an unknown name into hint; returns 0 when none is close. */
static int did_you_mean(const char *name, char *hint, size_t hint_size)
{
    const char *best = NULL;

    size_t nlen = strlen(name);
    for (size_t i = 0; i < NPROPS && !best; i++)
        if (loose_equal(name, props[i].name))
            best = props[i].name;
    for (size_t i = 0; i < NPROPS && !best; i++) { /* "port" -> "http.port" */
        size_t klen = strlen(props[i].name);
        if (nlen && klen > nlen && props[i].name[klen - nlen - 1] == '.' &&
            strcasecmp(props[i].name + klen - nlen, name) == 0)
            best = props[i].name;
    }
    if (!best) { /* typos: the closest key within a few edits */
        size_t best_d = (nlen / 4 < 2 ? 2 : nlen / 4) + 1;
        for (size_t i = 0; i < NPROPS; i++) {
            size_t d = edit_distance(name, props[i].name);
            if (d < best_d) {
                best = props[i].name;
                best_d = d;
            }
        }
    }
    if (best) {
        snprintf(hint, hint_size, "%s", best);
        return 1;
    }
    /* kafka.acks: probably a librdkafka property */
    if (strncmp(name, "kafka.", 6) == 0 && name[6] && strchr(name + 6, '.') == NULL) {
        snprintf(hint, hint_size, "%s%s", KPROPS_PREFIX, name + 6);
        return 1;
    }
    return 0;
}

int config_check_key(const char *name, char *errstr, size_t errstr_size)
{
    if (strncmp(name, KPROPS_PREFIX, strlen(KPROPS_PREFIX)) == 0) {
        const char *pname = name + strlen(KPROPS_PREFIX);
        if (!*pname)
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "key '%s': a librdkafka property name must follow '%s'", name,
                                KPROPS_PREFIX);
        size_t ok = strspn(pname, TOPIC_CHARS);
        if (pname[ok])
            return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                                "key '%s': '%c' cannot appear in a librdkafka property name", name,
                                pname[ok]);
        return 0;
    }
    if (prop_find(name, NULL))
        return 0;
    char hint[160];
    if (did_you_mean(name, hint, sizeof(hint)))
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "unknown key '%s' (did you mean '%s'?)", name, hint);
    return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "unknown key '%s'", name);
}

static void set_kprop(struct config_priv *priv,
                      const char *name,
                      const char *value,
                      enum config_src src,
                      const char *origin)
{
    for (size_t i = 0; i < priv->nkprops; i++) {
        if (strcmp(priv->kprops[i].name, name) == 0) {
            if (src >= priv->kprops[i].val.src)
                val_set(&priv->kprops[i].val, value, src, origin);
            return;
        }
    }
    if (priv->nkprops == priv->kcap) {
        priv->kcap = priv->kcap ? priv->kcap * 2 : 8;
        priv->kprops = flowd_xrealloc(priv->kprops, priv->kcap * sizeof(*priv->kprops));
    }
    struct config_kprop *kp = &priv->kprops[priv->nkprops++];
    memset(kp, 0, sizeof(*kp));
    kp->name = flowd_xstrdup(name);
    val_set(&kp->val, value, src, origin);
}

int config_set_from(struct flowd_config *cfg,
                    const char *name,
                    const char *value,
                    enum config_src src,
                    const char *origin,
                    char *errstr,
                    size_t errstr_size)
{
    if (!name || !value)
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "config_set: NULL %s",
                            name ? "value" : "name");
    int rc = config_check_key(name, errstr, errstr_size);
    if (rc)
        return rc;
    /* the configuration is printed back as YAML, which must be UTF-8 */
    if (!json_utf8_valid(value, strlen(value)))
        return flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL,
                            "key '%s': value is not valid UTF-8%s%s%s", name,
                            origin ? " (from " : "", origin ? origin : "", origin ? ")" : "");
    if (strncmp(name, KPROPS_PREFIX, strlen(KPROPS_PREFIX)) == 0) {
        set_kprop(cfg->priv, name, value, src, origin);
        return 0;
    }
    size_t i = 0;
    prop_find(name, &i);
    struct config_val *v = &cfg->priv->vals[i];
    if (src >= v->src)
        val_set(v, value, src, origin);
    return 0;
}

int config_set(
    struct flowd_config *cfg, const char *name, const char *value, char *errstr, size_t errstr_size)
{
    return config_set_from(cfg, name, value, CONFIG_SRC_SET, "--set", errstr, errstr_size);
}

/* KAFKA_TOPIC_NAMING_ENGINERECEIVEPATTERN for kafka.topic.naming.engineReceivePattern. */
static void env_name(const char *key, char *out, size_t outsize)
{
    size_t i = 0;
    for (; key[i] && i + 1 < outsize; i++)
        out[i] = (key[i] == '.' || key[i] == '-') ? '_' : (char)toupper((unsigned char)key[i]);
    out[i] = '\0';
}

static const char *env_lookup(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

int config_apply_env(struct flowd_config *cfg, char **envp, char *errstr, size_t errstr_size)
{
    if (!envp)
        envp = environ;
    for (size_t i = 0; i < NPROPS; i++) {
        char name[128];
        env_name(props[i].name, name + strlen(ENV_PREFIX), sizeof(name) - strlen(ENV_PREFIX));
        memcpy(name, ENV_PREFIX, strlen(ENV_PREFIX));
        static const enum config_src srcs[] = {CONFIG_SRC_ENV, CONFIG_SRC_ENV_FLOWD};
        for (int k = 0; k < 2; k++) {
            const char *var = k ? name : name + strlen(ENV_PREFIX);
            const char *value = env_lookup(envp, var);
            if (!value)
                continue;
            char origin[160];
            snprintf(origin, sizeof(origin), "environment variable %s", var);
            int rc =
                config_set_from(cfg, props[i].name, value, srcs[k], origin, errstr, errstr_size);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* ---- resolving ---- */

/* Nodes are the keys of props[] (0..NPROPS-1) then the kafka.properties entries. */
struct resolver {
    const struct config_priv *priv;
    size_t n;
    char **out;           /* interpolated value per node */
    unsigned char *state; /* 0 not started, 1 in progress, 2 done */
    size_t *stack;        /* nodes in progress, outermost first */
    size_t depth;
    char *errstr;
    size_t errstr_size;
};

static const char *node_name(const struct resolver *r, size_t i)
{
    return i < NPROPS ? props[i].name : r->priv->kprops[i - NPROPS].name;
}

static const struct config_val *node_val(const struct resolver *r, size_t i)
{
    return i < NPROPS ? &r->priv->vals[i] : &r->priv->kprops[i - NPROPS].val;
}

static size_t node_find(const struct resolver *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->n; i++) {
        const char *nm = node_name(r, i);
        if (strlen(nm) == len && memcmp(nm, name, len) == 0)
            return i;
    }
    return SIZE_MAX;
}

/* Writes "key 'k': <msg> (from <origin>)" into errstr; returns FLOWD_ERR_INVAL. */
static int key_err(char *errstr,
                   size_t errstr_size,
                   const char *key,
                   const struct config_val *v,
                   const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));

static int key_err(char *errstr,
                   size_t errstr_size,
                   const char *key,
                   const struct config_val *v,
                   const char *fmt,
                   ...)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "key '%s': ", key);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (v && v->origin)
        buf_printf(&b, " (from %s)", v->origin);
    flowd_seterr(errstr, errstr_size, FLOWD_ERR_INVAL, "%s", buf_str(&b));
    buf_release(&b);
    return FLOWD_ERR_INVAL;
}

static int resolve_node(struct resolver *r, size_t i)
{
    if (r->state[i] == 2)
        return 0;
    const char *name = node_name(r, i);
    const struct config_val *v = node_val(r, i);
    if (r->state[i] == 1) {
        size_t from = 0;
        while (r->stack[from] != i)
            from++;
        struct buf b = BUF_INIT;
        for (size_t k = from; k < r->depth; k++)
            buf_printf(&b, "%s -> ", node_name(r, r->stack[k]));
        buf_adds(&b, name);
        key_err(r->errstr, r->errstr_size, name, v, "reference cycle %s", buf_str(&b));
        buf_release(&b);
        return FLOWD_ERR_INVAL;
    }
    r->state[i] = 1;
    r->stack[r->depth++] = i;

    int rc = 0;
    struct buf b;
    buf_init(&b, VALUE_MAX);
    const char *p = v->raw;
    while (*p && rc == 0) {
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') { /* $${ is a literal ${ */
            rc = buf_adds(&b, "${");
            p += 3;
        } else if (p[0] == '$' && p[1] == '{') {
            const char *ref = p + 2, *end = strchr(ref, '}');
            if (!end) {
                rc = key_err(r->errstr, r->errstr_size, name, v, "unterminated ${ in '%s'", v->raw);
                break;
            }
            if (end == ref) {
                rc = key_err(r->errstr, r->errstr_size, name, v, "empty reference ${}");
                break;
            }
            size_t j = node_find(r, ref, (size_t)(end - ref));
            if (j != SIZE_MAX) {
                rc = resolve_node(r, j);
                if (rc)
                    break;
                rc = buf_adds(&b, r->out[j]);
            } else {
                char *var = flowd_xstrndup(ref, (size_t)(end - ref));
                const char *env = getenv(var);
                if (env && !json_utf8_valid(env, strlen(env)))
                    rc = key_err(r->errstr, r->errstr_size, name, v,
                                 "environment variable %s (in ${%s}) is not valid UTF-8", var, var);
                else if (env)
                    rc = buf_adds(&b, env);
                else
                    rc =
                        key_err(r->errstr, r->errstr_size, name, v, "unknown reference ${%s}", var);
                free(var);
                if (!env || rc)
                    break;
            }
            p = end + 1;
        } else {
            rc = buf_addc(&b, *p++);
        }
        if (rc == FLOWD_ERR_TOOBIG)
            rc = key_err(r->errstr, r->errstr_size, name, v,
                         "value longer than %d bytes after interpolation", VALUE_MAX);
    }
    if (rc) {
        buf_release(&b);
        return rc;
    }
    r->out[i] = buf_detach(&b);
    r->state[i] = 2;
    r->depth--;
    return 0;
}

/* Parses and checks node i's interpolated value into its field of c. */
static int store_value(struct flowd_config *c,
                       const struct flowd_prop *p,
                       const struct config_val *v,
                       const char *s,
                       char *errstr,
                       size_t errstr_size)
{
    if (p->type == PROP_STR) {
        if ((p->flags & PROP_NONEMPTY) && !*s)
            return key_err(errstr, errstr_size, p->name, v, "must not be empty");
        if (p->check) {
            char why[FLOWD_ERRSTR_SIZE];
            if (p->check(s, why, sizeof(why)))
                return key_err(errstr, errstr_size, p->name, v, "%s", why);
        }
        *str_field(c, p) = flowd_xstrdup(s);
        return 0;
    }
    if (p->type == PROP_INT) {
        if (!*s || isspace((unsigned char)*s))
            return key_err(errstr, errstr_size, p->name, v, "'%s' is not an integer", s);
        char *end;
        errno = 0;
        long long n = strtoll(s, &end, 10);
        if (*end)
            return key_err(errstr, errstr_size, p->name, v, "'%s' is not an integer", s);
        if (errno == ERANGE || n < p->min || n > p->max)
            return key_err(errstr, errstr_size, p->name, v,
                           "'%s' is out of range %" PRId64 "..%" PRId64, s, p->min, p->max);
        *int_field(c, p) = n;
        return 0;
    }
    for (const struct prop_enum *e = p->values; e->name; e++) {
        if (strcasecmp(e->name, s) == 0) {
            if (p->flags & PROP_ENUM_INT)
                *int_field(c, p) = e->value;
            else
                *str_field(c, p) = flowd_xstrdup(e->name); /* canonical spelling */
            return 0;
        }
    }
    struct buf b = BUF_INIT;
    for (const struct prop_enum *e = p->values; e->name; e++)
        buf_printf(&b, "%s%s", e == p->values ? "" : ", ", e->name);
    key_err(errstr, errstr_size, p->name, v, "'%s' is not one of %s", s, buf_str(&b));
    buf_release(&b);
    return FLOWD_ERR_INVAL;
}

/* A topic-name part; '*' allowed when wildcard. */
static int check_topic_chars(const char *key,
                             const struct config_val *v,
                             const char *s,
                             int wildcard,
                             char *errstr,
                             size_t errstr_size)
{
    for (const char *q = s; *q; q++) {
        if (strchr(TOPIC_CHARS, *q) || (wildcard && *q == '*'))
            continue;
        return key_err(errstr, errstr_size, key, v,
                       "'%s' has '%c': topic names allow only A-Z a-z 0-9 . _ -%s", s, *q,
                       wildcard ? " (and * as the wildcard)" : "");
    }
    return 0;
}

/* Derives the engine topics and the subscription regex into c, and checks them. */
static int
derive(struct flowd_config *c, const struct config_priv *priv, char *errstr, size_t errstr_size)
{
    size_t ipre = 0, isuf = 0, ipat = 0, idsn = 0;
    prop_find("store.postgresql.dsn", &idsn);
    if (strcmp(c->store_type, "postgresql") == 0 && (!c->pg_dsn || !*c->pg_dsn))
        return key_err(errstr, errstr_size, props[idsn].name, &priv->vals[idsn],
                       "must be set when store.type is postgresql (a libpq connection string, "
                       "e.g. 'host=127.0.0.1 port=5432 dbname=flowd user=flowd')");
    prop_find("kafka.topic.naming.prefix", &ipre);
    prop_find("kafka.topic.naming.suffix", &isuf);
    prop_find("kafka.topic.pattern", &ipat);
    const struct config_val *vpat = &priv->vals[ipat];
    int rc;
    if ((rc = check_topic_chars(props[ipre].name, &priv->vals[ipre], c->prefix, 0, errstr,
                                errstr_size)) ||
        (rc = check_topic_chars(props[isuf].name, &priv->vals[isuf], c->suffix, 0, errstr,
                                errstr_size)) ||
        (rc = check_topic_chars(props[ipat].name, vpat, c->pattern, 1, errstr, errstr_size)))
        return rc;

    c->dlq_topic = flowd_xasprintf("%sengine.dlq%s", c->prefix, c->suffix);
    c->start_topic = flowd_xasprintf("%score.trigger.start.process%s", c->prefix, c->suffix);
    c->confirm_topic = flowd_xasprintf("%score.confirm.start.process%s", c->prefix, c->suffix);
    c->subscription_regex = config_pattern_to_regex(c->pattern);

    static const char *const what[] = {"dead-letter", "process-start", "start-confirm"};
    const char *topics[] = {c->dlq_topic, c->start_topic, c->confirm_topic};
    for (size_t k = 0; k < 3; k++)
        if (strlen(topics[k]) > TOPIC_MAX)
            return key_err(errstr, errstr_size, props[ipre].name, &priv->vals[ipre],
                           "the %s topic '%s' is longer than %d characters", what[k], topics[k],
                           TOPIC_MAX);

    regex_t re;
    int err = regcomp(&re, c->subscription_regex, REG_EXTENDED | REG_NOSUB);
    if (err) {
        char why[128];
        regerror(err, &re, why, sizeof(why));
        return key_err(errstr, errstr_size, props[ipat].name, vpat,
                       "'%s' does not make a valid regex '%s': %s", c->pattern,
                       c->subscription_regex, why);
    }
    rc = 0;
    for (size_t k = 0; k < 3 && rc == 0; k++)
        if (regexec(&re, topics[k], 0, NULL, 0) == 0)
            rc = key_err(errstr, errstr_size, props[ipat].name, vpat,
                         "'%s' would also consume the engine's %s topic '%s'; narrow the pattern",
                         c->pattern, what[k], topics[k]);
    regfree(&re);
    return rc;
}

int config_resolve(struct flowd_config *cfg, char *errstr, size_t errstr_size)
{
    const struct config_priv *priv = cfg->priv;
    struct resolver r = {.priv = priv, .errstr = errstr, .errstr_size = errstr_size};
    r.n = NPROPS + priv->nkprops;
    r.out = flowd_xcalloc(r.n, sizeof(*r.out));
    r.state = flowd_xcalloc(r.n, 1);
    r.stack = flowd_xcalloc(r.n, sizeof(*r.stack));
    struct flowd_config tmp = {0};
    int rc = 0;

    for (size_t i = 0; i < r.n && rc == 0; i++)
        rc = resolve_node(&r, i);
    for (size_t i = 0; i < NPROPS && rc == 0; i++)
        rc = store_value(&tmp, &props[i], &priv->vals[i], r.out[i], errstr, errstr_size);
    if (rc == 0 && priv->nkprops) {
        tmp.kafka_props = flowd_xcalloc(priv->nkprops, sizeof(*tmp.kafka_props));
        tmp.nkafka_props = priv->nkprops;
        for (size_t i = 0; i < priv->nkprops; i++) {
            tmp.kafka_props[i].name = flowd_xstrdup(priv->kprops[i].name + strlen(KPROPS_PREFIX));
            tmp.kafka_props[i].value = flowd_xstrdup(r.out[NPROPS + i]);
        }
    }
    if (rc == 0)
        rc = derive(&tmp, priv, errstr, errstr_size);

    if (rc == 0) {
        release_resolved(cfg);
        struct config_priv *keep = cfg->priv;
        *cfg = tmp;
        cfg->priv = keep;
    } else {
        release_resolved(&tmp);
    }
    for (size_t i = 0; i < r.n; i++)
        free(r.out[i]);
    free(r.out);
    free(r.state);
    free(r.stack);
    return rc;
}

char *config_pattern_to_regex(const char *pattern)
{
    struct buf b = BUF_INIT;
    buf_addc(&b, '^');
    for (const char *p = pattern; *p; p++) {
        if (*p == '*') {
            buf_adds(&b, ".*");
        } else {
            if (strchr(".[](){}+?|^$\\", *p))
                buf_addc(&b, '\\');
            buf_addc(&b, *p);
        }
    }
    return buf_detach(&b);
}

/* ---- printing ---- */

/* librdkafka properties whose values are secrets. */
static int kprop_is_secret(const char *name)
{
    return strstr(name, "password") || strstr(name, "secret") || strcmp(name, "ssl.key.pem") == 0;
}

/* Writes s as a YAML scalar that config_load_file() reads back as s: plain when safe, else
 * double-quoted; "${" is written "$${" so that it is not interpolated again. */
static void print_scalar(FILE *out, const char *s)
{
    static const char safe[] = TOPIC_CHARS "/:,=+@*";
    int plain = *s && (isalnum((unsigned char)*s) || strchr("._/", *s)) &&
                s[strspn(s, safe)] == '\0' && s[strlen(s) - 1] != ':' && strcmp(s, "null") != 0 &&
                strcmp(s, "Null") != 0 && strcmp(s, "NULL") != 0;
    if (plain) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (const char *p = s; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (p[0] == '$' && p[1] == '{')
            fputs("$$", out);
        else if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(out, "\\x%02x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

void config_print(const struct flowd_config *cfg, FILE *out)
{
    size_t last_kafka = 0;
    for (size_t i = 0; i < NPROPS; i++)
        if (strncmp(props[i].name, "kafka.", 6) == 0)
            last_kafka = i;
    for (size_t i = 0; i < NPROPS; i++) {
        const struct flowd_prop *p = &props[i];
        fprintf(out, "%s: ", p->name);
        if (prop_is_str(p)) {
            const char *v = str_get(cfg, p);
            /* the API token is a secret, like the kafka.properties passwords (and a DSN that
             * holds one) */
            int secret =
                strcmp(p->name, "http.auth-token") == 0 ||
                (strcmp(p->name, "store.postgresql.dsn") == 0 && v && strstr(v, "password"));
            print_scalar(out, secret && v && *v ? HIDDEN_VALUE : v);
        } else if (p->type == PROP_INT) {
            fprintf(out, "%" PRId64, int_get(cfg, p));
        } else {
            const char *name = "?";
            for (const struct prop_enum *e = p->values; e->name; e++)
                if (e->value == int_get(cfg, p))
                    name = e->name;
            fputs(name, out);
        }
        fputc('\n', out);
        if (i == last_kafka) {
            for (size_t k = 0; k < cfg->nkafka_props; k++) {
                fprintf(out, "%s%s: ", KPROPS_PREFIX, cfg->kafka_props[k].name);
                print_scalar(out, kprop_is_secret(cfg->kafka_props[k].name)
                                      ? HIDDEN_VALUE
                                      : cfg->kafka_props[k].value);
                fputc('\n', out);
            }
        }
    }
    fprintf(out, "# subscription regex: %s\n", cfg->subscription_regex);
    fprintf(out, "# dlq topic: %s\n", cfg->dlq_topic);
    fprintf(out, "# start topic: %s\n", cfg->start_topic);
    fprintf(out, "# confirm topic: %s\n", cfg->confirm_topic);
}

void config_print_reference(FILE *out)
{
    fputs("| Key | Default | Type | Environment | Description |\n", out);
    fputs("|---|---|---|---|---|\n", out);
    for (size_t i = 0; i < NPROPS; i++) {
        const struct flowd_prop *p = &props[i];
        char env[128];
        env_name(p->name, env, sizeof(env));
        fprintf(out, "| `%s` | `%s` | ", p->name, *p->def ? p->def : "\"\"");
        if (p->type == PROP_STR) {
            fputs("string", out);
        } else if (p->type == PROP_INT) {
            fprintf(out, "integer %" PRId64 "..%" PRId64, p->min, p->max);
        } else {
            fputs("one of ", out);
            for (const struct prop_enum *e = p->values; e->name; e++)
                fprintf(out, "%s`%s`", e == p->values ? "" : ", ", e->name);
        }
        fprintf(out, " | `%s` | %s |\n", env, p->doc);
    }
    fputs("| `kafka.properties.<name>` | | string | | Passed to librdkafka unchanged as "
          "`<name>` (e.g. `kafka.properties.security.protocol: SSL`). |\n",
          out);
}
