#!/bin/bash
# test_config_cli.sh - the command line and configuration as a user meets them: --print-config
# shows the subscription regex and topic names (defaults, environment overrides, --set), bad
# configurations stop flowd with exit status 2 and a message naming the key, --help and --version
# exit 0, and a daemon started with KAFKA_TOPIC_NAMING_ENVIRONMENT=prod. consumes the prod topics.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

h_setup
FLOWD=$FLOWD_BUILD/flowd
mkdir -p "$H_DATA"
# Configuration variables from the caller's environment must not leak into the test.
for v in $(env | sed -n 's/^\(\(FLOWD_\)\{0,1\}\(KAFKA\|HTTP\|LOG\|STORE\|ENGINE\|DATA_DIR\)[A-Z0-9_]*\)=.*/\1/p'); do
    unset "$v"
done

# run_flowd EXPECTED_RC NAME [args...]: runs flowd (stdout+stderr to $H_DIR/NAME.out), checks the
# exit status.
run_flowd() {
    local want=$1 name=$2 rc=0
    shift 2
    timeout 20 "$FLOWD" "$@" >"$H_DIR/$name.out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || {
        cat "$H_DIR/$name.out" >&2
        h_fail "$name: flowd $* exited $rc, expected $want"
    }
}
# expect_line NAME FIXED_STRING: the output of run NAME has a line containing the string.
expect_line() {
    grep -qF -- "$2" "$H_DIR/$1.out" || {
        cat "$H_DIR/$1.out" >&2
        h_fail "$1: output has no '$2'"
    }
}

# --help, --version
run_flowd 0 help --help
expect_line help "--print-config"
expect_line help "--config FILE"
run_flowd 0 version --version
grep -qE '^flowd [0-9]+\.[0-9]+' "$H_DIR/version.out" || h_fail "--version: $(cat "$H_DIR/version.out")"
run_flowd 2 bad-arg --no-such-option
expect_line bad-arg "--no-such-option"

# Defaults
run_flowd 0 defaults --print-config --data-dir "$H_DATA"
expect_line defaults '^ai\.flowx\.dev\.engine\.receive.*'
expect_line defaults 'ai.flowx.dev.engine.dlq.v1'
expect_line defaults 'kafka.topic.naming.prefix: ai.flowx.dev.'
expect_line defaults 'kafka.topic.naming.suffix: .v1'
expect_line defaults 'kafka.bootstrap-servers: embedded'
expect_line defaults "data-dir: $H_DATA"

# Environment (relaxed form), FLOWD_-prefixed names win, --set wins over both.
KAFKA_TOPIC_NAMING_ENVIRONMENT=prod. run_flowd 0 env-prod --print-config
expect_line env-prod '^ai\.flowx\.prod\.engine\.receive.*'
expect_line env-prod 'ai.flowx.prod.engine.dlq.v1'
expect_line env-prod 'kafka.topic.naming.environment: prod.'
if grep -qF 'ai\.flowx\.dev\.' "$H_DIR/env-prod.out"; then h_fail "env-prod still shows the dev regex"; fi
KAFKA_TOPIC_NAMING_ENVIRONMENT=prod. FLOWD_KAFKA_TOPIC_NAMING_ENVIRONMENT=uat. \
    run_flowd 0 env-flowd --print-config
expect_line env-flowd '^ai\.flowx\.uat\.engine\.receive.*'
KAFKA_TOPIC_NAMING_ENVIRONMENT=prod. run_flowd 0 env-set --print-config \
    --set kafka.topic.naming.environment=test.
expect_line env-set '^ai\.flowx\.test\.engine\.receive.*'
expect_line env-set 'ai.flowx.test.engine.dlq.v1'

# A YAML file: values and ${} references to other keys and to the environment.
cat >"$H_DIR/good.yaml" <<'EOF'
kafka:
  topic:
    naming:
      package: "com.acme."
      environment: ${ACME_ENV}
http:
  port: 9123
EOF
ACME_ENV=stage. run_flowd 0 yaml-good --config "$H_DIR/good.yaml" --print-config
expect_line yaml-good '^com\.acme\.stage\.engine\.receive.*'
expect_line yaml-good 'com.acme.stage.engine.dlq.v1'
expect_line yaml-good 'http.port: 9123'

# Bad configurations: exit 2, message naming the key.
printf 'kafka:\n  topic:\n    naming:\n      colour: blue\n' >"$H_DIR/unknown.yaml"
run_flowd 2 yaml-unknown --config "$H_DIR/unknown.yaml" --print-config
expect_line yaml-unknown "kafka.topic.naming.colour"
run_flowd 2 yaml-unknown-start --config "$H_DIR/unknown.yaml" --data-dir "$H_DATA"
expect_line yaml-unknown-start "kafka.topic.naming.colour"

cat >"$H_DIR/cycle.yaml" <<'EOF'
kafka:
  topic:
    naming:
      prefix: ${kafka.topic.naming.suffix}
      suffix: ${kafka.topic.naming.prefix}
EOF
run_flowd 2 yaml-cycle --config "$H_DIR/cycle.yaml" --print-config
expect_line yaml-cycle "kafka.topic.naming.prefix"
grep -qi 'cycle' "$H_DIR/yaml-cycle.out" || h_fail "yaml-cycle: the message does not say cycle"

printf 'http:\n  port: lots\n' >"$H_DIR/badvalue.yaml"
run_flowd 2 yaml-bad-value --config "$H_DIR/badvalue.yaml" --print-config
expect_line yaml-bad-value "http.port"
expect_line yaml-bad-value "lots"
run_flowd 2 yaml-bad-value-start --config "$H_DIR/badvalue.yaml" --data-dir "$H_DATA"
expect_line yaml-bad-value-start "http.port"

run_flowd 2 set-range --set http.port=70000 --print-config
expect_line set-range "http.port"
HTTP_PORT=nope run_flowd 2 env-bad-value --print-config
expect_line env-bad-value "http.port"
run_flowd 2 set-unknown --set no.such.key=1 --print-config
expect_line set-unknown "no.such.key"
run_flowd 2 yaml-missing --config "$H_DIR/missing.yaml" --print-config
expect_line yaml-missing "missing.yaml"
# A pattern that would swallow the engine's own dead-letter topic is refused.
run_flowd 2 pattern-dlq --set kafka.topic.naming.engineReceivePattern=engine --print-config
expect_line pattern-dlq "kafka.topic.pattern"

# --print-reference lists every key, and docs/configuration.md documents each of them.
run_flowd 0 reference --print-reference
keys=$(sed -n 's/^| `\([^`]*\)` |.*/\1/p' "$H_DIR/reference.out")
[ "$(printf '%s\n' "$keys" | wc -l)" -ge 20 ] || h_fail "--print-reference lists too few keys"
for k in $keys; do
    grep -qF "\`$k\`" "$FLOWD_SRC/docs/configuration.md" || h_fail "docs/configuration.md lacks $k"
    case $k in *"<"*) continue ;; esac # a family of keys, e.g. kafka.properties.<name>
    grep -qE "^$(printf '%s' "$k" | sed 's/[.]/\\./g'): " "$H_DIR/defaults.out" ||
        h_fail "--print-config does not show $k"
done

# A real daemon with the prod environment consumes the prod topics.
KAFKA_TOPIC_NAMING_ENVIRONMENT=prod. h_flowd_start
grep -qF 'consuming topics matching ^ai\.flowx\.prod\.engine\.receive.*' "$H_FLOWD_LOG" ||
    h_fail "the daemon does not subscribe to the prod pattern: $(grep -i consuming "$H_FLOWD_LOG")"
h_req GET /health
h_assert_eq "$H_STATUS" 200 "/health of the prod daemon"
h_flowd_stop

echo "ok: --print-config shows the subscription regex and topics for defaults, env (prod.), FLOWD_ and --set; unknown key, reference cycle and bad values exit 2 naming the key; --help/--version exit 0"
