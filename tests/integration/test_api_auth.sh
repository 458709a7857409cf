#!/bin/bash
# test_api_auth.sh - security of the HTTP API: with http.auth-token set every endpoint but
# /health needs `Authorization: Bearer <token>` (401 with the JSON error body otherwise); flowctl
# takes the token from --token, FLOWCTL_TOKEN or its config file; --print-config hides the token;
# a non-loopback bind without a token refuses to start; request headers over
# http.max-header-bytes are refused with a JSON body; flowctl's exit codes and --help.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

FLOWCTL=$FLOWD_BUILD/flowctl
TOKEN=s3cret-token-for-tests

h_setup

# ---- startup checks --------------------------------------------------------------------------
rc=0
timeout 20 "$FLOWD_BUILD/flowd" --data-dir "$H_DIR/open" --set http.bind=0.0.0.0 \
    --set http.port="$(h_free_port)" >"$H_DIR/open.out" 2>&1 || rc=$?
[ $rc -ne 0 ] || h_fail "flowd bound 0.0.0.0 without a token"
grep -q "http.auth-token" "$H_DIR/open.out" || h_fail "the refusal does not name http.auth-token: $(cat "$H_DIR/open.out")"
printed=$("$FLOWD_BUILD/flowd" --set http.auth-token=$TOKEN --print-config)
grep -q "$TOKEN" <<<"$printed" && h_fail "--print-config shows the token"
grep -q '^http.auth-token: "*<hidden>' <<<"$printed" || h_fail "--print-config: $(grep auth <<<"$printed")"

FLOWD_TOKEN_ENV=$TOKEN h_flowd_start --set 'http.auth-token=${FLOWD_TOKEN_ENV}' --set http.max-header-bytes=2048

# expect_401 METHOD PATH [curl args]
expect_401() {
    local method=$1 path=$2
    shift 2
    local out
    out=$(curl -s -X "$method" -D "$H_DIR/h.txt" -w '\n%{http_code}' "$@" "$H_URL$path")
    h_assert_eq "${out##*$'\n'}" 401 "$method $path without a valid token"
    printf '%s' "${out%$'\n'*}" | WANT=$path $PY -c '
import json, os, sys
j = json.load(sys.stdin)
assert j["error"] == "unauthorized" and j["detail"] and j["path"] == os.environ["WANT"], j' ||
        h_fail "$method $path: 401 body is not the JSON error shape"
    grep -qi '^WWW-Authenticate: Bearer' "$H_DIR/h.txt" || h_fail "$method $path: 401 without WWW-Authenticate"
}

h_req GET /health
h_assert_eq "$H_STATUS" 200 "/health needs no token"
for p in /ready /metrics /v1/definitions /v1/instances /v1/instances/1 /v1/dead-letters /v1/no-such-route; do
    expect_401 GET "$p"
done
expect_401 POST /v1/definitions --data-binary @"$FLOWD_SRC/examples/processes/credit-check.json"
expect_401 POST /v1/processes/credit-check/start -d '{}'
expect_401 GET /v1/instances -H "Authorization: Bearer wrong-$TOKEN"
expect_401 GET /v1/instances -H "Authorization: Basic dXNlcjpwYXNz"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$H_URL/ready")
h_assert_eq "$code" 200 "/ready with the token"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: bearer $TOKEN" "$H_URL/metrics")
h_assert_eq "$code" 200 "the scheme name is case-insensitive"

# ---- flowctl: token from flag, environment, config file ---------------------------------------
rc=0
"$FLOWCTL" --server "$H_URL" ls 2>"$H_DIR/noauth.err" || rc=$?
h_assert_eq "$rc" 1 "flowctl without a token exits 1"
grep -q "401" "$H_DIR/noauth.err" || h_fail "flowctl without token: $(cat "$H_DIR/noauth.err")"
"$FLOWCTL" --server "$H_URL" --token $TOKEN deploy "$FLOWD_SRC/examples/processes/credit-check.json" >/dev/null ||
    h_fail "flowctl --token"
FLOWCTL_SERVER=$H_URL FLOWCTL_TOKEN=$TOKEN "$FLOWCTL" start credit-check --data '{"clientId": 1, "amount": 2}' >/dev/null ||
    h_fail "flowctl with FLOWCTL_SERVER and FLOWCTL_TOKEN"
printf '# flowctl config\nserver = %s\ntoken = %s\n' "$H_URL" "$TOKEN" >"$H_DIR/flowctl.conf"
out=$(FLOWCTL_CONFIG=$H_DIR/flowctl.conf "$FLOWCTL" ls --json) || h_fail "flowctl with a config file"
h_assert_eq "$(printf '%s' "$out" | h_json 'len(j["instances"])')" 1 "flowctl ls through the config file"
# the flag wins over the environment
rc=0
FLOWCTL_TOKEN=$TOKEN "$FLOWCTL" --server "$H_URL" --token wrong ls >/dev/null 2>&1 || rc=$?
h_assert_eq "$rc" 1 "--token wins over FLOWCTL_TOKEN"

# ---- header limits ---------------------------------------------------------------------------
big=$($PY -c 'print("x" * 4000)')
out=$(curl -s -w '\n%{http_code}' -H "X-Big: $big" -H "Authorization: Bearer $TOKEN" "$H_URL/v1/instances")
code=${out##*$'\n'}
case "$code" in 400 | 413 | 431) ;; *) h_fail "headers over http.max-header-bytes: HTTP $code" ;; esac
printf '%s' "${out%$'\n'*}" | $PY -c '
import json, sys
j = json.load(sys.stdin)
assert j["error"] and j["detail"] and "path" in j, j' || h_fail "header limit answer is not the JSON error shape: ${out%$'\n'*}"
h_req GET /health
h_assert_eq "$H_STATUS" 200 "still serving after an oversized request"

# ---- flowctl exit codes and --help -----------------------------------------------------------
for cmd in deploy validate defs start get ls history cancel retry deliver dlq metrics; do
    out=$("$FLOWCTL" "$cmd" --help) || h_fail "flowctl $cmd --help exits non-zero"
    grep -q "^usage: flowctl $cmd" <<<"$out" || h_fail "flowctl $cmd --help: $out"
done
"$FLOWCTL" --help | grep -q "exit codes" || h_fail "flowctl --help"
rc=0
"$FLOWCTL" frobnicate >/dev/null 2>&1 || rc=$?
h_assert_eq "$rc" 2 "unknown command"
rc=0
"$FLOWCTL" get not-a-number >/dev/null 2>&1 || rc=$?
h_assert_eq "$rc" 2 "bad id"
rc=0
"$FLOWCTL" --server "http://127.0.0.1:$(h_free_port)" ls >/dev/null 2>&1 || rc=$?
h_assert_eq "$rc" 3 "server unreachable"
rc=0
"$FLOWCTL" --server "$H_URL" --token $TOKEN get 424242 >/dev/null 2>&1 || rc=$?
h_assert_eq "$rc" 1 "unknown instance"

echo "ok: bearer token on every endpoint but /health (401 JSON + WWW-Authenticate), token from flag/env/config in flowctl, hidden in --print-config, required off loopback; header limit answered in JSON; flowctl exit codes and --help"
