#!/usr/bin/env bash
# test_sdk_redelivery.sh - at-least-once in, exactly-once out: the SDK REST connector is killed
# (SIGKILL) in the middle of a request (the legacy call takes 4 s). Nothing was committed, so
# a new connector in the same group gets the request again, and the instance completes:
#   - the legacy system was called twice but applied the operation once (Idempotency-Key =
#     messageId, which is stable across redeliveries);
#   - the process received exactly one reply (one MESSAGE_RECEIVED) and finished once.
# Also checks a graceful stop (SIGTERM) in the middle of a request: the request in progress is
# finished and its reply published before the connector exits.
. "$FLOWD_SRC/tests/lib/harness.sh"

CONN=$FLOWD_BUILD/examples/sdk-rest-connector
[ -x "$CONN" ] || h_fail "$CONN not built (target sdk-examples)"

h_setup
h_flowd_start
$PY "$FLOWD_SRC/examples/connectors/sdk-rest/fake_legacy.py" --port-file "$H_DIR/legacy.port" \
    >"$H_DIR/fake-legacy.log" 2>&1 &
H_PIDS+=($!)
for _ in $(seq 1 50); do [ -s "$H_DIR/legacy.port" ] && break; sleep 0.1; done
LEGACY=http://127.0.0.1:$(cat "$H_DIR/legacy.port")

start_conn() {
    "$CONN" --bootstrap-file "$H_DATA/kafka.bootstrap" --legacy-url "$LEGACY" \
        --timeout-ms 8000 -v >>"$H_DIR/connector.$1.log" 2>&1 &
    CONN_PID=$!
    H_PIDS+=($CONN_PID)
}
calls() { curl -sf "$LEGACY/stats" | h_json "j[\"$1\"].get(\"$2\", 0)"; }
wait_calls() { # ID N: until the legacy system saw N calls for ID
    local deadline=$((SECONDS + 30))
    while [ "$(calls calls "$1")" -lt "$2" ]; do
        [ $SECONDS -lt $deadline ] || h_fail "legacy never saw call $2 for $1"
        sleep 0.1
    done
}

h_deploy "$FLOWD_SRC/examples/processes/sdk-rest.json"

# 1. SIGKILL mid-request
start_conn 1
id=$(h_start sdk-rest '{"accountId": "slow-1"}')
wait_calls slow-1 1
kill -KILL "$CONN_PID"
wait "$CONN_PID" 2>/dev/null || true
h_log "connector killed during the legacy call; starting another one"
start_conn 2
h_wait_state "$id" FINISHED 60
h_assert_eq "$(calls calls slow-1)" 2 "legacy calls for slow-1 (killed once, redone once)"
h_assert_eq "$(calls applied slow-1)" 1 "operations applied for slow-1 (exactly once)"
view=$(h_http GET "/v1/instances/$id")
h_assert_eq "$(printf '%s' "$view" | h_json 'sum(1 for h in j["history"] if h["state"] == "MESSAGE_RECEIVED")')" \
    1 "replies received by the instance"
h_assert_eq "$(printf '%s' "$view" | h_json 'j["history"][-1]["node"]')" found "end node"

# 2. SIGTERM mid-request: graceful, the request in progress is finished and answered
id2=$(h_start sdk-rest '{"accountId": "slow-2"}')
wait_calls slow-2 1
kill -TERM "$CONN_PID"
rc=0
wait "$CONN_PID" || rc=$?
h_assert_eq "$rc" 0 "connector exit status after SIGTERM"
h_wait_state "$id2" FINISHED 30
h_assert_eq "$(calls calls slow-2)" 1 "legacy calls for slow-2 (finished before exiting)"

for log in "$H_DIR"/connector.*.log; do
    grep -qE 'AddressSanitizer|LeakSanitizer|runtime error' "$log" &&
        { cat "$log" >&2; h_fail "sanitizer report in $log"; }
done
h_log "sdk redelivery: OK"
