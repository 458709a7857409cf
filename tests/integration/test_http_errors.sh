#!/bin/bash
# test_http_errors.sh - every bad HTTP request gets the right status and a JSON error body
# {"error","detail","path"} naming the problem, and the daemon keeps serving; deploying is
# idempotent (identical definition: created:false, same version; changed: version 2).
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

h_setup
h_flowd_start --set http.max-body-bytes=2048

# expect_error STATUS DETAIL_SUBSTRING METHOD PATH [BODY]: the request answers STATUS with a JSON
# error body whose path is PATH and whose detail contains DETAIL_SUBSTRING (case-insensitive).
expect_error() {
    local want=$1 detail=$2
    shift 2
    h_req "$@"
    [ "$H_STATUS" = "$want" ] || h_fail "$1 $2: HTTP $H_STATUS, expected $want: $H_BODY"
    printf '%s' "$H_BODY" | WANT_PATH=$2 DETAIL=$detail $PY -c '
import json, os, sys
body = sys.stdin.read()
try:
    j = json.loads(body)
except ValueError:
    sys.exit("error body is not JSON: %r" % body)
if not isinstance(j, dict):
    sys.exit("error body is not an object: %r" % body)
for k in ("error", "detail", "path"):
    if not isinstance(j.get(k), str) or not j[k]:
        sys.exit("error body lacks a non-empty %r: %s" % (k, body))
if j["path"] != os.environ["WANT_PATH"]:
    sys.exit("path %r, expected %r" % (j["path"], os.environ["WANT_PATH"]))
if os.environ["DETAIL"].lower() not in j["detail"].lower():
    sys.exit("detail %r does not mention %r" % (j["detail"], os.environ["DETAIL"]))
' || h_fail "$1 $2 -> $want: bad error body"
    # and the daemon still serves
    h_req GET /health
    [ "$H_STATUS" = 200 ] || h_fail "/health answers $H_STATUS after $1 $2"
}

# ---- definitions -----------------------------------------------------------------------------
expect_error 400 "nowhere" POST /v1/definitions \
    '{"key":"bad-next","nodes":[{"id":"start","type":"start","next":"nowhere"},{"id":"done","type":"end"}]}'
h_req POST /v1/definitions \
    '{"key":"bad-next","nodes":[{"id":"start","type":"start","next":"nowhere"},{"id":"done","type":"end"}]}'
printf '%s' "$H_BODY" | h_json detail | grep -q "start" || h_fail "the detail does not name node start: $H_BODY"
expect_error 400 "some.other.topic" POST /v1/definitions \
    '{"key":"bad-topic","nodes":[{"id":"start","type":"start","next":"w"},{"id":"w","type":"receive","dataStreamTopics":[{"topicName":"some.other.topic","keyName":"x"}],"next":"e"},{"id":"e","type":"end"}]}'
h_req POST /v1/definitions \
    '{"key":"bad-topic","nodes":[{"id":"start","type":"start","next":"w"},{"id":"w","type":"receive","dataStreamTopics":[{"topicName":"some.other.topic","keyName":"x"}],"next":"e"},{"id":"e","type":"end"}]}'
printf '%s' "$H_BODY" | h_json detail | grep -q "'w'" || h_fail "the detail does not name node w: $H_BODY"
expect_error 400 "json" POST /v1/definitions '{"key": "broken", "nodes": ['
expect_error 400 "" POST /v1/definitions '[]'
expect_error 400 "orphan" POST /v1/definitions \
    '{"key":"orphan","nodes":[{"id":"start","type":"start","next":"e"},{"id":"e","type":"end"},{"id":"orphan","type":"end"}]}'
big=$($PY -c 'print("{\"key\":\"big\",\"name\":\"" + "x" * 4000 + "\",\"nodes\":[]}")')
expect_error 413 "2048" POST /v1/definitions "$big"
# chunked (no Content-Length): the limit still holds
out=$(printf '%s' "$big" | curl -s -X POST -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/json' \
    --data-binary @- -w '\n%{http_code}' "$H_URL/v1/definitions")
h_assert_eq "${out##*$'\n'}" 413 "chunked body over http.max-body-bytes"

# ---- routes and methods ----------------------------------------------------------------------
expect_error 404 "" GET /v1/no-such-route
expect_error 404 "" GET /nothing/here
expect_error 405 "" DELETE /v1/definitions
expect_error 405 "" PUT /v1/definitions
expect_error 405 "" POST /v1/instances/1
expect_error 405 "" DELETE /health
# RFC 9110 15.5.6: a 405 response MUST carry an Allow header listing the allowed methods.
allow=$(curl -s -D - -o /dev/null -X DELETE "$H_URL/v1/definitions" | tr -d '\r' |
    sed -n 's/^[Aa]llow: *//p')
case "$allow" in *POST*) ;; *) h_soft_fail "405 on /v1/definitions has no 'Allow: POST' header (got '$allow')" ;; esac

# ---- processes and instances -----------------------------------------------------------------
expect_error 404 "no-such-process" POST /v1/processes/no-such-process/start '{}'
expect_error 404 "99999999" GET /v1/instances/99999999
expect_error 400 "abc" GET /v1/instances/abc
expect_error 400 "" GET /v1/instances/-5

# ---- deploy is idempotent --------------------------------------------------------------------
def=$FLOWD_SRC/examples/processes/credit-check.json
h_req POST /v1/definitions "$(cat "$def")"
h_assert_eq "$H_STATUS" 201 "first deploy"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json created)" true "first deploy created"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json version)" 1 "first deploy version"
uuid1=$(printf '%s' "$H_BODY" | h_json uuid)
h_req POST /v1/definitions "$(cat "$def")"
h_assert_eq "$H_STATUS" 200 "identical redeploy"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json created)" false "identical redeploy created"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json version)" 1 "identical redeploy version"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json uuid)" "$uuid1" "identical redeploy uuid"
# the same definition laid out differently (one line, other spacing) is the same version
h_req POST /v1/definitions "$($PY -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), indent=None, separators=(", ", ": ")))' "$def")"
h_assert_eq "$H_STATUS" 200 "re-formatted redeploy"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json version)" 1 "re-formatted redeploy version"
# An instance of version 1 keeps it when version 2 arrives.
h_req POST /v1/processes/credit-check/start '{"clientId": 1, "amount": 10}'
h_assert_eq "$H_STATUS" 201 "start"
id_v1=$(printf '%s' "$H_BODY" | h_json id)
changed=$($PY -c '
import json, sys
d = json.load(open(sys.argv[1]))
d["name"] = "Credit check, revised"
for n in d["nodes"]:
    if n["id"] == "wait_score":
        n["responseTimeout"] = "PT60S"
print(json.dumps(d))' "$def")
h_req POST /v1/definitions "$changed"
h_assert_eq "$H_STATUS" 201 "changed redeploy"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json created)" true "changed redeploy created"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json version)" 2 "changed redeploy version"
[ "$(printf '%s' "$H_BODY" | h_json uuid)" != "$uuid1" ] || h_fail "version 2 has the uuid of version 1"
h_req POST /v1/definitions "$changed"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json version)" 2 "identical redeploy of version 2"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json created)" false "identical redeploy of version 2 created"
h_req POST /v1/processes/credit-check/start '{"clientId": 2, "amount": 10}'
h_assert_eq "$(printf '%s' "$H_BODY" | h_json version)" 2 "a new instance runs the latest version"
h_req GET "/v1/instances/$id_v1"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json version)" 1 "a running instance keeps its version"
# a pinned version starts that version; an unknown or malformed one is refused
h_req POST "/v1/processes/credit-check/start?version=1" '{"clientId": 3, "amount": 10}'
h_assert_eq "$H_STATUS" 201 "start of pinned version 1"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json version)" 1 "pinned version 1"
h_req POST "/v1/processes/credit-check/start?version=7" '{}'
h_assert_eq "$H_STATUS" 404 "start of a version that does not exist"
case "$(printf '%s' "$H_BODY" | h_json detail)" in *"has no version 7"*) ;; *) h_fail "404 detail: $H_BODY" ;; esac
h_req POST "/v1/processes/credit-check/start?version=abc" '{}'
h_assert_eq "$H_STATUS" 400 "malformed version"
case "$(printf '%s' "$H_BODY" | h_json detail)" in *version*) ;; *) h_fail "400 detail: $H_BODY" ;; esac

# ---- start bodies ----------------------------------------------------------------------------
expect_error 400 "object" POST /v1/processes/credit-check/start '[1, 2]'
expect_error 400 "json" POST /v1/processes/credit-check/start 'not json'
big=$($PY -c 'print("{\"x\":\"" + "y" * 4000 + "\"}")')
expect_error 413 "2048" POST /v1/processes/credit-check/start "$big"

# ---- still serving, and restartable on the same port -----------------------------------------
h_req GET /ready
h_assert_eq "$H_STATUS" 200 "/ready after all the errors"
h_flowd_stop
H_PORT_WANT=$H_PORT h_flowd_start --set http.max-body-bytes=2048
h_req GET "/v1/instances/$id_v1"
h_assert_eq "$H_STATUS" 200 "instance after a restart on the same port"
# Another daemon on a port in use says so and exits non-zero (instead of running without HTTP).
rc=0
timeout 20 "$FLOWD_BUILD/flowd" --data-dir "$H_DIR/other" --set http.port="$H_PORT" \
    >"$H_DIR/port-in-use.out" 2>&1 || rc=$?
[ $rc -ne 0 ] || h_fail "a daemon on a port in use exited 0"
grep -q "$H_PORT" "$H_DIR/port-in-use.out" || h_fail "the port-in-use message does not name the port"

# ---- deeply nested JSON (last: it used to take the daemon down) -------------------------------
# 900 levels is 1.8 KB, well under every size limit and under cJSON's own nesting limit (1000).
# Refusing it (400) or taking it (201) are both fine; dying is not, and neither is an instance
# that can no longer be read.
deep=$($PY -c 'print("{\"deep\": " + "[" * 900 + "]" * 900 + "}")')
code=$(curl -s -o "$H_DIR/deep.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary "$deep" "$H_URL/v1/processes/credit-check/start" || true)
case "$code" in
400) ;;
201)
    deep_id=$(h_json id <"$H_DIR/deep.out")
    code=$(curl -s -o /dev/null -w '%{http_code}' "$H_URL/v1/instances/$deep_id" || true)
    [ "$code" = 200 ] || h_soft_fail "GET of an instance started with 900-deep data: HTTP $code"
    ;;
*) h_soft_fail "start with 900-deep JSON data: HTTP $code (the daemon died?)" ;;
esac
code=$(curl -s -o /dev/null -w '%{http_code}' "$H_URL/health" || true)
[ "$code" = 200 ] || h_soft_fail "/health after 900-deep JSON: HTTP $code (the daemon died)"
h_soft_done

echo "ok: bad definitions (400 naming the node), bad JSON (400), over-size bodies (413), unknown routes (404), wrong methods (405 + Allow), unknown keys and instances (404), bad ids (400) all answered with error/detail/path; redeploy idempotent, changed definition is version 2"
