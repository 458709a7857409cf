/* test_config.c - unit tests of the configuration table: defaults, YAML (nested and flat),
 * environment and --set precedence, ${...} interpolation, validation errors, derived topics,
 * config_print and the generated reference in docs/configuration.md. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/err.h"

#include "common/banned.h"

static char tmpdir[64];
static char written[32][128];
static int nwritten;

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/flowd-test-config-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < nwritten; i++)
        unlink(written[i]);
    return rmdir(tmpdir);
}

/* Writes a YAML file into the test's temp dir; returns its path (static storage). */
static const char *write_yaml(const char *name, const char *text)
{
    assert_true(nwritten < 32);
    char *path = written[nwritten++];
    snprintf(path, sizeof(written[0]), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* config_print output as a heap string. */
static char *print_to_string(const struct flowd_config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    config_print(cfg, f);
    fclose(f);
    return text;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected to find\n  %s\nin\n  %s", needle, haystack);
}

static void assert_resolve_fails(struct flowd_config *cfg, const char *expected)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    assert_int_equal(config_resolve(cfg, errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    assert_contains(errstr, expected);
}

static void set_ok(struct flowd_config *cfg, const char *name, const char *value)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    if (config_set(cfg, name, value, errstr, sizeof(errstr)))
        fail_msg("config_set %s=%s: %s", name, value, errstr);
}

static void resolve_ok(struct flowd_config *cfg)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    if (config_resolve(cfg, errstr, sizeof(errstr)))
        fail_msg("config_resolve: %s", errstr);
}

static void load_ok(struct flowd_config *cfg, const char *path)
{
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    if (config_load_file(cfg, path, errstr, sizeof(errstr)))
        fail_msg("config_load_file: %s", errstr);
}

static void defaults_are_the_documented_ones(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    resolve_ok(cfg);
    assert_string_equal(cfg->bootstrap_servers, "embedded");
    assert_string_equal(cfg->group_id, "flowd-engine");
    assert_int_equal(cfg->message_max_bytes, 1048576);
    assert_int_equal(cfg->fetch_wait_max_ms, 5);
    assert_int_equal(cfg->session_timeout_ms, 6000);
    assert_int_equal(cfg->metadata_refresh_ms, 1000);
    assert_int_equal(cfg->embedded_brokers, 1);
    assert_int_equal(cfg->embedded_partitions, 4);
    assert_int_equal(cfg->nkafka_props, 0);
    assert_string_equal(cfg->package, "ai.flowx.");
    assert_string_equal(cfg->environment, "dev.");
    assert_string_equal(cfg->version, ".v1");
    assert_string_equal(cfg->prefix, "ai.flowx.dev.");
    assert_string_equal(cfg->suffix, ".v1");
    assert_string_equal(cfg->engine_receive_pattern, "engine.receive");
    assert_string_equal(cfg->pattern, "ai.flowx.dev.engine.receive*");
    assert_string_equal(cfg->subscription_regex, "^ai\\.flowx\\.dev\\.engine\\.receive.*");
    assert_string_equal(cfg->dlq_topic, "ai.flowx.dev.engine.dlq.v1");
    assert_string_equal(cfg->start_topic, "ai.flowx.dev.core.trigger.start.process.v1");
    assert_string_equal(cfg->confirm_topic, "ai.flowx.dev.core.confirm.start.process.v1");
    assert_string_equal(cfg->data_dir, "./flowd-data");
    assert_string_equal(cfg->store_type, "sqlite");
    assert_string_equal(cfg->sqlite_path, "./flowd-data/flowd.db");
    assert_string_equal(cfg->sqlite_synchronous, "FULL");
    assert_int_equal(cfg->node_id, 0);
    assert_int_equal(cfg->batch_max, 500);
    assert_int_equal(cfg->batch_wait_ms, 2);
    assert_int_equal(cfg->republish_on_start, -1);
    assert_string_equal(cfg->http_bind, "127.0.0.1");
    assert_int_equal(cfg->http_port, 8080);
    assert_int_equal(cfg->http_max_body, 1048576);
    assert_string_equal(cfg->log_level, "info");
    assert_string_equal(cfg->log_format, "text");
    assert_string_equal(cfg->log_debug, "");
    config_free(cfg);
}

static void print_shows_default_subscription_regex_and_topics(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    char *text = print_to_string(cfg);
    assert_contains(text, "kafka.bootstrap-servers: embedded\n");
    assert_contains(text, "kafka.topic.naming.prefix: ai.flowx.dev.\n");
    assert_contains(text, "kafka.topic.pattern: ai.flowx.dev.engine.receive*\n");
    assert_contains(text, "engine.republish-on-start: auto\n");
    assert_contains(text, "log.debug: \"\"\n");
    assert_contains(text, "# subscription regex: ^ai\\.flowx\\.dev\\.engine\\.receive.*\n");
    assert_contains(text, "# dlq topic: ai.flowx.dev.engine.dlq.v1\n");
    assert_contains(text, "# start topic: ai.flowx.dev.core.trigger.start.process.v1\n");
    assert_contains(text, "# confirm topic: ai.flowx.dev.core.confirm.start.process.v1\n");
    /* table order: kafka keys, then data-dir, store, engine, http, log */
    assert_true(strstr(text, "kafka.topic.pattern:") < strstr(text, "data-dir:"));
    assert_true(strstr(text, "http.port:") < strstr(text, "log.level:"));
    free(text);
    config_free(cfg);
}

static void env_environment_changes_prefix_pattern_regex_and_dlq(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    char *envp[] = {"PATH=/usr/bin", "KAFKA_TOPIC_NAMING_ENVIRONMENT=prod.", NULL};
    char errstr[FLOWD_ERRSTR_SIZE];
    assert_int_equal(config_apply_env(cfg, envp, errstr, sizeof(errstr)), 0);
    resolve_ok(cfg);
    assert_string_equal(cfg->prefix, "ai.flowx.prod.");
    assert_string_equal(cfg->pattern, "ai.flowx.prod.engine.receive*");
    assert_string_equal(cfg->dlq_topic, "ai.flowx.prod.engine.dlq.v1");
    char *text = print_to_string(cfg);
    assert_contains(text, "# subscription regex: ^ai\\.flowx\\.prod\\.engine\\.receive.*\n");
    assert_contains(text, "# dlq topic: ai.flowx.prod.engine.dlq.v1\n");
    free(text);
    config_free(cfg);
}

static void env_names_are_relaxed_forms_of_the_keys(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    char *envp[] = {"KAFKA_BOOTSTRAP_SERVERS=k1:9092,k2:9092",
                    "DATA_DIR=/var/lib/flowd",
                    "HTTP_PORT=9090",
                    "STORE_SQLITE_SYNCHRONOUS=NORMAL",
                    "KAFKA_TOPIC_NAMING_ENGINERECEIVEPATTERN=in.replies",
                    "ENGINE_REPUBLISH_ON_START=false",
                    "KAFKA_PROPERTIES_ACKS=1", /* not a known key: ignored */
                    NULL};
    char errstr[FLOWD_ERRSTR_SIZE];
    assert_int_equal(config_apply_env(cfg, envp, errstr, sizeof(errstr)), 0);
    resolve_ok(cfg);
    assert_string_equal(cfg->bootstrap_servers, "k1:9092,k2:9092");
    assert_string_equal(cfg->data_dir, "/var/lib/flowd");
    assert_string_equal(cfg->sqlite_path, "/var/lib/flowd/flowd.db");
    assert_int_equal(cfg->http_port, 9090);
    assert_string_equal(cfg->sqlite_synchronous, "NORMAL");
    assert_string_equal(cfg->pattern, "ai.flowx.dev.in.replies*");
    assert_int_equal(cfg->republish_on_start, 0);
    assert_int_equal(cfg->nkafka_props, 0);
    config_free(cfg);
}

static void yaml_nested_mappings_join_with_dots(void **state)
{
    (void)state;
    const char *path = write_yaml("nested.yaml", "# flowd config\n"
                                                 "kafka:\n"
                                                 "  bootstrap-servers: \"b1:9092\"\n"
                                                 "  consumer:\n"
                                                 "    group-id: '007'\n"
                                                 "  topic:\n"
                                                 "    naming:\n"
                                                 "      environment: qa.\n"
                                                 "      version: .v2\n"
                                                 "store:\n"
                                                 "  sqlite:\n"
                                                 "    synchronous: normal\n"
                                                 "http:\n"
                                                 "  port: 8181\n"
                                                 "engine:\n"
                                                 "  republish-on-start: true\n"
                                                 "log:\n"
                                                 "  debug: ~\n"
                                                 "  level: \"debug\"\n");
    struct flowd_config *cfg = config_new();
    load_ok(cfg, path);
    resolve_ok(cfg);
    assert_string_equal(cfg->bootstrap_servers, "b1:9092");
    assert_string_equal(cfg->group_id, "007");
    assert_string_equal(cfg->environment, "qa.");
    assert_string_equal(cfg->dlq_topic, "ai.flowx.qa.engine.dlq.v2");
    assert_string_equal(cfg->subscription_regex, "^ai\\.flowx\\.qa\\.engine\\.receive.*");
    assert_string_equal(cfg->sqlite_synchronous, "NORMAL"); /* canonical spelling */
    assert_int_equal(cfg->http_port, 8181);
    assert_int_equal(cfg->republish_on_start, 1);
    assert_string_equal(cfg->log_debug, "");
    assert_string_equal(cfg->log_level, "debug");
    config_free(cfg);
}

static void yaml_flat_dotted_keys_and_mixed_nesting(void **state)
{
    (void)state;
    const char *path = write_yaml("flat.yaml", "kafka.topic.naming.environment: prod.\n"
                                               "kafka:\n"
                                               "  topic.naming.package: \"com.acme.\"\n"
                                               "data-dir: /srv/flowd\n"
                                               "\"log.format\": json\n");
    struct flowd_config *cfg = config_new();
    load_ok(cfg, path);
    resolve_ok(cfg);
    assert_string_equal(cfg->prefix, "com.acme.prod.");
    assert_string_equal(cfg->sqlite_path, "/srv/flowd/flowd.db");
    assert_string_equal(cfg->log_format, "json");
    config_free(cfg);
}

static void yaml_quoted_scalars_keep_their_text(void **state)
{
    (void)state;
    const char *path = write_yaml("quoted.yaml", "kafka.consumer.group-id: \"  spaced # not a "
                                                 "comment \"\n"
                                                 "kafka.topic.naming.environment: \"\"\n"
                                                 "kafka.properties.client.id: 'null'\n");
    struct flowd_config *cfg = config_new();
    load_ok(cfg, path);
    resolve_ok(cfg);
    assert_string_equal(cfg->group_id, "  spaced # not a comment ");
    assert_string_equal(cfg->environment, "");
    assert_string_equal(cfg->prefix, "ai.flowx.");
    assert_int_equal(cfg->nkafka_props, 1);
    assert_string_equal(cfg->kafka_props[0].value, "null");
    config_free(cfg);
}

static void env_beats_file_and_flowd_prefix_beats_plain_env(void **state)
{
    (void)state;
    const char *path = write_yaml("prec.yaml", "kafka.topic.naming.environment: file.\n"
                                               "http.port: 1111\n"
                                               "http.bind: 0.0.0.0\n");
    char *envp[] = {"KAFKA_TOPIC_NAMING_ENVIRONMENT=env.", "HTTP_PORT=2222", "FLOWD_HTTP_PORT=3333",
                    NULL};
    char errstr[FLOWD_ERRSTR_SIZE];
    struct flowd_config *cfg = config_new();
    load_ok(cfg, path);
    assert_int_equal(config_apply_env(cfg, envp, errstr, sizeof(errstr)), 0);
    resolve_ok(cfg);
    assert_string_equal(cfg->environment, "env.");
    assert_int_equal(cfg->http_port, 3333);
    assert_string_equal(cfg->http_bind, "0.0.0.0"); /* only in the file */
    config_free(cfg);

    /* the same sources applied in the opposite order give the same result */
    cfg = config_new();
    assert_int_equal(config_apply_env(cfg, envp, errstr, sizeof(errstr)), 0);
    load_ok(cfg, path);
    resolve_ok(cfg);
    assert_string_equal(cfg->environment, "env.");
    assert_int_equal(cfg->http_port, 3333);
    config_free(cfg);
}

static void set_beats_env_and_file_in_any_order(void **state)
{
    (void)state;
    const char *path = write_yaml("set.yaml", "kafka.topic.naming.environment: file.\n");
    char *envp[] = {"FLOWD_KAFKA_TOPIC_NAMING_ENVIRONMENT=env.", NULL};
    char errstr[FLOWD_ERRSTR_SIZE];
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "kafka.topic.naming.environment", "cli.");
    load_ok(cfg, path);
    assert_int_equal(config_apply_env(cfg, envp, errstr, sizeof(errstr)), 0);
    resolve_ok(cfg);
    assert_string_equal(cfg->environment, "cli.");
    assert_string_equal(cfg->dlq_topic, "ai.flowx.cli.engine.dlq.v1");
    /* a later --set replaces an earlier one */
    set_ok(cfg, "kafka.topic.naming.environment", "cli2.");
    resolve_ok(cfg);
    assert_string_equal(cfg->environment, "cli2.");
    config_free(cfg);
}

static void interpolation_follows_keys_env_vars_and_escapes(void **state)
{
    (void)state;
    setenv("FLOWD_TEST_CONFIG_ROOT", "/tmp/root", 1);
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "data-dir", "${FLOWD_TEST_CONFIG_ROOT}/data");
    set_ok(cfg, "kafka.consumer.group-id", "g-$${kafka.topic.naming.version}");
    set_ok(cfg, "kafka.topic.naming.version", ".v${http.port}");
    set_ok(cfg, "kafka.properties.client.id", "flowd-${kafka.topic.naming.environment}x");
    resolve_ok(cfg);
    assert_string_equal(cfg->data_dir, "/tmp/root/data");
    assert_string_equal(cfg->sqlite_path, "/tmp/root/data/flowd.db");
    assert_string_equal(cfg->group_id, "g-${kafka.topic.naming.version}");
    assert_string_equal(cfg->suffix, ".v8080");
    assert_string_equal(cfg->dlq_topic, "ai.flowx.dev.engine.dlq.v8080");
    assert_string_equal(cfg->kafka_props[0].value, "flowd-dev.x");
    /* a key wins over an environment variable of the same name */
    setenv("data-dir", "/from/env", 1);
    set_ok(cfg, "store.sqlite.path", "${data-dir}/x.db");
    resolve_ok(cfg);
    assert_string_equal(cfg->sqlite_path, "/tmp/root/data/x.db");
    unsetenv("data-dir");
    unsetenv("FLOWD_TEST_CONFIG_ROOT");
    config_free(cfg);
}

static void reference_cycle_is_named(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "kafka.topic.naming.package", "x.${kafka.topic.pattern}");
    assert_resolve_fails(cfg, "key 'kafka.topic.naming.package': reference cycle "
                              "kafka.topic.naming.package -> kafka.topic.pattern -> "
                              "kafka.topic.naming.prefix -> kafka.topic.naming.package");
    /* a failed resolve keeps the previous values */
    assert_string_equal(cfg->prefix, "ai.flowx.dev.");
    config_free(cfg);

    cfg = config_new();
    set_ok(cfg, "data-dir", "${data-dir}");
    assert_resolve_fails(cfg, "key 'data-dir': reference cycle data-dir -> data-dir");
    config_free(cfg);
}

static void unknown_reference_is_named(void **state)
{
    (void)state;
    unsetenv("FLOWD_TEST_NO_SUCH_VAR");
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "kafka.topic.naming.prefix", "${kafka.topic.naming.pakage}");
    assert_resolve_fails(cfg, "key 'kafka.topic.naming.prefix': unknown reference "
                              "${kafka.topic.naming.pakage} (from --set)");
    set_ok(cfg, "kafka.topic.naming.prefix", "a.");
    set_ok(cfg, "data-dir", "${FLOWD_TEST_NO_SUCH_VAR}");
    assert_resolve_fails(cfg, "key 'data-dir': unknown reference ${FLOWD_TEST_NO_SUCH_VAR}");
    set_ok(cfg, "data-dir", "${unterminated");
    assert_resolve_fails(cfg, "key 'data-dir': unterminated ${");
    config_free(cfg);
}

static void unknown_yaml_key_names_file_line_and_close_key(void **state)
{
    (void)state;
    const char *path = write_yaml("typo.yaml", "http.port: 9999\n"
                                               "kafka:\n"
                                               "  topic:\n"
                                               "    naming:\n"
                                               "      enviroment: prod.\n");
    struct flowd_config *cfg = config_new();
    char errstr[FLOWD_ERRSTR_SIZE], expected[FLOWD_ERRSTR_SIZE];
    assert_int_equal(config_load_file(cfg, path, errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    snprintf(expected, sizeof(expected),
             "%s:5: unknown key 'kafka.topic.naming.enviroment' (did you mean "
             "'kafka.topic.naming.environment'?)",
             path);
    assert_string_equal(errstr, expected);
    /* a file with an error sets nothing, not even its good keys */
    resolve_ok(cfg);
    assert_int_equal(cfg->http_port, 8080);

    assert_int_equal(config_set(cfg, "no.such.thing", "1", errstr, sizeof(errstr)),
                     FLOWD_ERR_INVAL);
    assert_string_equal(errstr, "unknown key 'no.such.thing'");
    assert_int_equal(config_set(cfg, "port", "1", errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    assert_contains(errstr, "did you mean 'http.port'?");
    assert_int_equal(
        config_set(cfg, "kafka.topic.naming.engine-receive-pattern", "x", errstr, sizeof(errstr)),
        FLOWD_ERR_INVAL);
    assert_contains(errstr, "did you mean 'kafka.topic.naming.engineReceivePattern'?");
    assert_int_equal(config_set(cfg, "kafka.acks", "all", errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    assert_contains(errstr, "did you mean 'kafka.properties.acks'?");
    assert_int_equal(config_set(cfg, "HTTP_PORT", "1", errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    assert_contains(errstr, "did you mean 'http.port'?");
    config_free(cfg);
}

static void bad_integer_is_rejected(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "http.port", "80a");
    assert_resolve_fails(cfg, "key 'http.port': '80a' is not an integer");
    set_ok(cfg, "http.port", "");
    assert_resolve_fails(cfg, "key 'http.port': '' is not an integer");
    assert_int_equal(cfg->http_port, 8080);
    config_free(cfg);
}

static void bad_enum_lists_the_allowed_values(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "store.sqlite.synchronous", "SOMETIMES");
    assert_resolve_fails(cfg, "key 'store.sqlite.synchronous': 'SOMETIMES' is not one of FULL, "
                              "NORMAL");
    set_ok(cfg, "store.sqlite.synchronous", "FULL");
    set_ok(cfg, "engine.republish-on-start", "maybe");
    assert_resolve_fails(cfg, "key 'engine.republish-on-start': 'maybe' is not one of auto, "
                              "true, false");
    set_ok(cfg, "engine.republish-on-start", "auto");
    set_ok(cfg, "log.debug", "store,nope");
    assert_resolve_fails(cfg, "key 'log.debug': unknown debug subsystem 'nope'");
    set_ok(cfg, "log.debug", "store,kafka");
    resolve_ok(cfg);
    assert_string_equal(cfg->log_debug, "store,kafka");
    config_free(cfg);
}

static void out_of_range_names_key_range_and_origin(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "http.port", "70000");
    assert_resolve_fails(cfg, "key 'http.port': '70000' is out of range 1..65535");
    set_ok(cfg, "http.port", "99999999999999999999999");
    assert_resolve_fails(cfg, "is out of range 1..65535");
    set_ok(cfg, "http.port", "8080");
    set_ok(cfg, "kafka.message.max-bytes", "1023");
    assert_resolve_fails(cfg, "key 'kafka.message.max-bytes': '1023' is out of range "
                              "1024..104857600");
    config_free(cfg);

    cfg = config_new();
    char *envp[] = {"ENGINE_NODE_ID=1024", NULL};
    char errstr[FLOWD_ERRSTR_SIZE];
    assert_int_equal(config_apply_env(cfg, envp, errstr, sizeof(errstr)), 0);
    assert_resolve_fails(cfg, "key 'engine.node-id': '1024' is out of range 0..1023 (from "
                              "environment variable ENGINE_NODE_ID)");
    config_free(cfg);
}

static void yaml_sequence_is_an_error_naming_key_and_line(void **state)
{
    (void)state;
    const char *path = write_yaml("seq.yaml", "kafka:\n"
                                              "  bootstrap-servers:\n"
                                              "    - b1:9092\n"
                                              "    - b2:9092\n");
    struct flowd_config *cfg = config_new();
    char errstr[FLOWD_ERRSTR_SIZE], expected[FLOWD_ERRSTR_SIZE];
    assert_int_equal(config_load_file(cfg, path, errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    snprintf(expected, sizeof(expected), "%s:3: key 'kafka.bootstrap-servers': lists are not",
             path);
    assert_contains(errstr, expected);
    config_free(cfg);
}

static void yaml_alias_is_an_error(void **state)
{
    (void)state;
    const char *path = write_yaml("alias.yaml", "data-dir: &d /srv\n"
                                                "store.sqlite.path: *d\n");
    struct flowd_config *cfg = config_new();
    char errstr[FLOWD_ERRSTR_SIZE], expected[FLOWD_ERRSTR_SIZE];
    assert_int_equal(config_load_file(cfg, path, errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    snprintf(expected, sizeof(expected), "%s:2: key 'store.sqlite.path': aliases", path);
    assert_contains(errstr, expected);
    config_free(cfg);
}

static void yaml_syntax_error_names_file_and_line(void **state)
{
    (void)state;
    const char *path = write_yaml("syntax.yaml", "http:\n"
                                                 "  port: 8080\n"
                                                 "  bind: 127.0.0.1: 80\n"
                                                 "log:\n"
                                                 "  level: info\n");
    struct flowd_config *cfg = config_new();
    char errstr[FLOWD_ERRSTR_SIZE], expected[FLOWD_ERRSTR_SIZE];
    assert_int_equal(config_load_file(cfg, path, errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    snprintf(expected, sizeof(expected), "%s:3:", path);
    assert_contains(errstr, expected);
    assert_contains(errstr, "YAML syntax error: mapping values are not allowed");

    path = write_yaml("syntax2.yaml", "a: b\n"
                                      "  c: d\n");
    assert_int_equal(config_load_file(cfg, path, errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    snprintf(expected, sizeof(expected), "%s:2:", path);
    assert_contains(errstr, expected);

    path = write_yaml("scalar.yaml", "just a string\n");
    assert_int_equal(config_load_file(cfg, path, errstr, sizeof(errstr)), FLOWD_ERR_INVAL);
    assert_contains(errstr, ":1: the top level must be a mapping");

    path = write_yaml("empty.yaml", "# nothing\n");
    assert_int_equal(config_load_file(cfg, path, errstr, sizeof(errstr)), 0);
    config_free(cfg);
}

static void missing_file_is_named(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    char errstr[FLOWD_ERRSTR_SIZE], path[128];
    snprintf(path, sizeof(path), "%s/does-not-exist.yaml", tmpdir);
    assert_int_equal(config_load_file(cfg, path, errstr, sizeof(errstr)), FLOWD_ERR_IO);
    assert_contains(errstr, path);
    assert_contains(errstr, "No such file or directory");
    config_free(cfg);
}

static void pattern_that_swallows_engine_topics_is_rejected(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "kafka.topic.pattern", "${kafka.topic.naming.prefix}*");
    assert_resolve_fails(cfg, "key 'kafka.topic.pattern': 'ai.flowx.dev.*' would also consume "
                              "the engine's dead-letter topic 'ai.flowx.dev.engine.dlq.v1'");
    set_ok(cfg, "kafka.topic.pattern", "ai.flowx.dev.core.*");
    assert_resolve_fails(cfg, "'ai.flowx.dev.core.trigger.start.process.v1'");
    set_ok(cfg, "kafka.topic.pattern", "*.confirm.*");
    assert_resolve_fails(cfg, "'ai.flowx.dev.core.confirm.start.process.v1'");
    set_ok(cfg, "kafka.topic.pattern", "");
    assert_resolve_fails(cfg, "key 'kafka.topic.pattern': must not be empty");
    set_ok(cfg, "kafka.topic.pattern", "ai.flowx.(dev|prod)*");
    assert_resolve_fails(cfg, "key 'kafka.topic.pattern': 'ai.flowx.(dev|prod)*' has '('");
    /* a pattern that keeps clear of the engine topics is fine */
    set_ok(cfg, "kafka.topic.pattern", "ai.flowx.dev.replies-*");
    resolve_ok(cfg);
    assert_string_equal(cfg->subscription_regex, "^ai\\.flowx\\.dev\\.replies-.*");
    config_free(cfg);
}

static void topic_names_allow_only_kafka_characters(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "kafka.topic.naming.environment", "dev env.");
    assert_resolve_fails(cfg, "key 'kafka.topic.naming.prefix': 'ai.flowx.dev env.' has ' '");
    set_ok(cfg, "kafka.topic.naming.environment", "dev.");
    set_ok(cfg, "kafka.topic.naming.version", ".v1/2");
    assert_resolve_fails(cfg, "key 'kafka.topic.naming.suffix': '.v1/2' has '/'");
    config_free(cfg);
}

static void pattern_to_regex_escapes_metacharacters(void **state)
{
    (void)state;
    char *re = config_pattern_to_regex("ai.flowx.dev.engine.receive*");
    assert_string_equal(re, "^ai\\.flowx\\.dev\\.engine\\.receive.*");
    free(re);
    re = config_pattern_to_regex("a+b?(c)[d]{2}|^$\\*x*");
    assert_string_equal(re, "^a\\+b\\?\\(c\\)\\[d\\]\\{2\\}\\|\\^\\$\\\\.*x.*");
    free(re);
    re = config_pattern_to_regex("");
    assert_string_equal(re, "^");
    free(re);
}

static void kafka_properties_pass_through_in_order(void **state)
{
    (void)state;
    const char *path = write_yaml("props.yaml", "kafka:\n"
                                                "  properties:\n"
                                                "    security.protocol: SASL_PLAINTEXT\n"
                                                "    socket:\n"
                                                "      keepalive.enable: \"true\"\n"
                                                "kafka.properties.acks: all\n"
                                                "kafka.properties.security.protocol: SSL\n");
    struct flowd_config *cfg = config_new();
    load_ok(cfg, path);
    set_ok(cfg, "kafka.properties.linger.ms", "0");
    set_ok(cfg, "kafka.properties.acks", "1");
    resolve_ok(cfg);
    assert_int_equal(cfg->nkafka_props, 4);
    assert_string_equal(cfg->kafka_props[0].name, "security.protocol");
    assert_string_equal(cfg->kafka_props[0].value, "SSL");
    assert_string_equal(cfg->kafka_props[1].name, "socket.keepalive.enable");
    assert_string_equal(cfg->kafka_props[1].value, "true");
    assert_string_equal(cfg->kafka_props[2].name, "acks");
    assert_string_equal(cfg->kafka_props[2].value, "1");
    assert_string_equal(cfg->kafka_props[3].name, "linger.ms");
    assert_string_equal(cfg->kafka_props[3].value, "0");

    char *text = print_to_string(cfg);
    assert_contains(text, "kafka.topic.pattern: ai.flowx.dev.engine.receive*\n"
                          "kafka.properties.security.protocol: SSL\n"
                          "kafka.properties.socket.keepalive.enable: true\n"
                          "kafka.properties.acks: 1\n"
                          "kafka.properties.linger.ms: 0\n"
                          "data-dir: ./flowd-data\n");
    free(text);

    char errstr[FLOWD_ERRSTR_SIZE];
    assert_int_equal(config_set(cfg, "kafka.properties.", "x", errstr, sizeof(errstr)),
                     FLOWD_ERR_INVAL);
    assert_contains(errstr, "a librdkafka property name must follow");
    config_free(cfg);
}

static void print_hides_secret_kafka_properties(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "kafka.properties.sasl.password", "hunter2");
    resolve_ok(cfg);
    assert_string_equal(cfg->kafka_props[0].value, "hunter2");
    char *text = print_to_string(cfg);
    assert_null(strstr(text, "hunter2"));
    assert_contains(text, "kafka.properties.sasl.password: \"<hidden>\"\n");
    free(text);
    config_free(cfg);
}

static void printed_config_loads_back_to_the_same_config(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    set_ok(cfg, "kafka.consumer.group-id", "we: \"quote\" # $${x} \\ end");
    set_ok(cfg, "kafka.topic.naming.environment", "");
    set_ok(cfg, "log.debug", "all");
    set_ok(cfg, "http.bind", "null");
    set_ok(cfg, "kafka.properties.client.id", "*star");
    resolve_ok(cfg);
    assert_string_equal(cfg->group_id, "we: \"quote\" # ${x} \\ end");
    char *first = print_to_string(cfg);

    const char *path = write_yaml("printed.yaml", first);
    struct flowd_config *again = config_new();
    load_ok(again, path);
    resolve_ok(again);
    char *second = print_to_string(again);
    assert_string_equal(first, second);
    assert_string_equal(again->group_id, cfg->group_id);
    assert_string_equal(again->http_bind, "null");
    free(first);
    free(second);
    config_free(again);
    config_free(cfg);
}

static void docs_configuration_md_holds_the_generated_reference(void **state)
{
    (void)state;
    char src[512];
    snprintf(src, sizeof(src), "%s", __FILE__);
    char docs[600];
    snprintf(docs, sizeof(docs), "%s/../../docs/configuration.md", dirname(src));
    FILE *f = fopen(docs, "r");
    if (!f)
        skip(); /* built from a tarball without docs */
    char *content = NULL, *ref = NULL;
    size_t clen = 0, rlen = 0;
    FILE *m = open_memstream(&content, &clen);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(m);
    fclose(f);
    m = open_memstream(&ref, &rlen);
    config_print_reference(m);
    fclose(m);
    assert_true(rlen > 0);
    if (!strstr(content, ref))
        fail_msg("docs/configuration.md is out of date: regenerate its reference table from "
                 "config_print_reference()");
    free(content);
    free(ref);
}

/* Found by the config fuzzer: a value that is not UTF-8 printed a config that did not load back. */
static void value_that_is_not_utf8_is_refused_naming_the_key(void **state)
{
    (void)state;
    struct flowd_config *cfg = config_new();
    char err[FLOWD_ERRSTR_SIZE] = "";
    assert_int_equal(config_set(cfg, "kafka.properties.acks", "a\x9fl", err, sizeof(err)),
                     FLOWD_ERR_INVAL);
    assert_contains(err, "kafka.properties.acks");
    assert_contains(err, "UTF-8");
    assert_int_equal(config_set(cfg, "log.level", "\xff", err, sizeof(err)), FLOWD_ERR_INVAL);
    assert_contains(err, "log.level");
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_are_the_documented_ones),
        cmocka_unit_test(print_shows_default_subscription_regex_and_topics),
        cmocka_unit_test(env_environment_changes_prefix_pattern_regex_and_dlq),
        cmocka_unit_test(env_names_are_relaxed_forms_of_the_keys),
        cmocka_unit_test(yaml_nested_mappings_join_with_dots),
        cmocka_unit_test(yaml_flat_dotted_keys_and_mixed_nesting),
        cmocka_unit_test(yaml_quoted_scalars_keep_their_text),
        cmocka_unit_test(env_beats_file_and_flowd_prefix_beats_plain_env),
        cmocka_unit_test(set_beats_env_and_file_in_any_order),
        cmocka_unit_test(interpolation_follows_keys_env_vars_and_escapes),
        cmocka_unit_test(reference_cycle_is_named),
        cmocka_unit_test(unknown_reference_is_named),
        cmocka_unit_test(unknown_yaml_key_names_file_line_and_close_key),
        cmocka_unit_test(bad_integer_is_rejected),
        cmocka_unit_test(bad_enum_lists_the_allowed_values),
        cmocka_unit_test(out_of_range_names_key_range_and_origin),
        cmocka_unit_test(yaml_sequence_is_an_error_naming_key_and_line),
        cmocka_unit_test(yaml_alias_is_an_error),
        cmocka_unit_test(yaml_syntax_error_names_file_and_line),
        cmocka_unit_test(missing_file_is_named),
        cmocka_unit_test(pattern_that_swallows_engine_topics_is_rejected),
        cmocka_unit_test(topic_names_allow_only_kafka_characters),
        cmocka_unit_test(pattern_to_regex_escapes_metacharacters),
        cmocka_unit_test(kafka_properties_pass_through_in_order),
        cmocka_unit_test(print_hides_secret_kafka_properties),
        cmocka_unit_test(printed_config_loads_back_to_the_same_config),
        cmocka_unit_test(docs_configuration_md_holds_the_generated_reference),
        cmocka_unit_test(value_that_is_not_utf8_is_refused_naming_the_key),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
