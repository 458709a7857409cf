/* config.h - flowd's configuration: one property table (config.c `props[]`) feeds the YAML file,
 * environment overrides, `--set name=value`, `--print-config` and docs/configuration.md.
 *
 * Flow: config_new() (defaults) -> config_load_file() -> config_apply_env() -> config_set()...
 * -> config_resolve() (interpolates ${key} / ${ENV_VAR}, validates, derives the topic names and
 * the subscription regex). Every error names the key (and, for the file, the line).
 * @thread Not thread-safe while being built; read-only (shareable) after config_resolve().
 */
#ifndef FLOWD_CONFIG_H
#define FLOWD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct config_kv {
    char *name;
    char *value;
};

struct flowd_config {
    /* kafka */
    char *bootstrap_servers;       /* kafka.bootstrap-servers: "embedded" or "host:port,..." */
    char *group_id;                /* kafka.consumer.group-id */
    int64_t message_max_bytes;     /* kafka.message.max-bytes */
    int64_t fetch_wait_max_ms;     /* kafka.consumer.fetch-wait-max-ms */
    int64_t session_timeout_ms;    /* kafka.consumer.session-timeout-ms */
    int64_t metadata_refresh_ms;   /* kafka.consumer.metadata-refresh-ms */
    int64_t embedded_brokers;      /* kafka.embedded.brokers */
    int64_t embedded_partitions;   /* kafka.embedded.partitions */
    struct config_kv *kafka_props; /* kafka.properties.<librdkafka name>: passed through */
    size_t nkafka_props;
    /* kafka.topic.naming.* and kafka.topic.pattern, after interpolation */
    char *package, *environment, *version, *prefix, *suffix, *engine_receive_pattern;
    char *pattern; /* kafka.topic.pattern, e.g. ai.flowx.dev.engine.receive* */
    /* derived by config_resolve() */
    char *subscription_regex; /* ^ai\.flowx\.dev\.engine\.receive.* */
    char *dlq_topic;          /* ${prefix}engine.dlq${suffix} */
    char *start_topic;        /* ${prefix}core.trigger.start.process${suffix} */
    char *confirm_topic;      /* ${prefix}core.confirm.start.process${suffix} */
    /* store */
    char *data_dir;           /* data-dir */
    char *store_type;         /* store.type: sqlite | postgresql */
    char *pg_dsn;             /* store.postgresql.dsn */
    char *sqlite_path;        /* store.sqlite.path */
    char *sqlite_synchronous; /* store.sqlite.synchronous: FULL | NORMAL */
    /* engine */
    int64_t node_id;             /* engine.node-id */
    int64_t batch_max;           /* engine.batch.max-messages */
    int64_t cache_max;           /* engine.cache.max-instances */
    int64_t batch_wait_ms;       /* engine.batch.max-wait-ms */
    int64_t early_reply_ttl_ms;  /* engine.early-reply-ttl-ms */
    int64_t outbox_retention_ms; /* engine.retention.outbox-ms */
    int64_t dlq_retention_ms;    /* engine.retention.dead-letters-ms */
    int64_t inbox_retention_ms;  /* engine.retention.inbox-ms */
    int64_t purge_interval_ms;   /* engine.retention.check-interval-ms */
    int64_t republish_on_start;  /* engine.republish-on-start: -1 auto, 0 no, 1 yes */
    /* http */
    char *http_bind;            /* http.bind */
    int64_t http_port;          /* http.port */
    int64_t http_max_body;      /* http.max-body-bytes */
    int64_t http_max_header;    /* http.max-header-bytes */
    int64_t http_threads;       /* http.threads */
    int64_t http_keep_alive_ms; /* http.keep-alive-ms */
    char *http_auth_token;      /* http.auth-token: "" = no authentication (loopback only) */
    /* log */
    char *log_level;  /* log.level */
    char *log_format; /* log.format: text | json */
    char *log_debug;  /* log.debug: "store,kafka" */
    /* internal to config.c: the raw (uninterpolated) value of every key and where it came from */
    struct config_priv *priv;
};

/* Returns the defaults, already resolved (usable as is). Never NULL. Free with config_free(). */
struct flowd_config *config_new(void);
void config_free(struct flowd_config *cfg);

/* Reads a YAML mapping; nested keys join with '.' (kafka: {topic: ...} -> kafka.topic...).
 * Errors name the file, line and key. */
int config_load_file(struct flowd_config *cfg, const char *path, char *errstr, size_t errstr_size);
/* Sets one key (as from the file), raw: interpolation happens in config_resolve(). This is
 * `--set`: it beats the file and the environment. Unknown keys fail with a "did you mean". */
int config_set(struct flowd_config *cfg,
               const char *name,
               const char *value,
               char *errstr,
               size_t errstr_size);
/* Applies environment overrides in relaxed form: KAFKA_TOPIC_NAMING_ENVIRONMENT overrides
 * kafka.topic.naming.environment (upper case, '.' and '-' as '_'). Only known keys are taken.
 * FLOWD_<NAME> beats <NAME>. envp is NULL-terminated "NAME=value"; NULL means environ.
 * Precedence does not depend on call order: --set > FLOWD_ env > env > file > default. */
int config_apply_env(struct flowd_config *cfg, char **envp, char *errstr, size_t errstr_size);
/* Interpolates, validates and derives. ${key} inserts another key's value; otherwise ${VAR}
 * reads the process environment (getenv); $${ is a literal ${. Values of the kafka_props are
 * interpolated too. Cycles, unknown references and bad values name the key.
 * On error the public fields keep their previous (valid) values. May be called again. */
int config_resolve(struct flowd_config *cfg, char *errstr, size_t errstr_size);
/* Prints the resolved configuration as YAML-ish `key: value` lines plus derived values.
 * The output loads back with config_load_file(); secret kafka.properties values are hidden. */
void config_print(const struct flowd_config *cfg, FILE *out);
/* Writes the reference table (markdown) of every key, default and doc string. */
void config_print_reference(FILE *out);

/* Turns a topic pattern with '*' wildcards into an anchored POSIX extended regex, e.g.
 * "ai.flowx.dev.engine.receive*" -> "^ai\.flowx\.dev\.engine\.receive.*". Caller frees. */
char *config_pattern_to_regex(const char *pattern);

#endif
