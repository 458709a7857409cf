#!/usr/bin/env bash
# test_sdk_rest.sh - the SDK REST connector (examples/connectors/sdk-rest, built against the
# installed SDK) in the sdk-rest process, against a fake legacy API that also fails and hangs:
#   a plain lookup; HTTP 500 twice then success (retriable -> retried); a first call that hangs
#   past the connector's timeout (retried); a 404 (fatal -> error reply -> the process's error
#   path); and a poison request (not JSON) that lands on the connector's dead-letter topic.
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

"$CONN" --bootstrap-file "$H_DATA/kafka.bootstrap" --legacy-url "$LEGACY" --timeout-ms 1000 \
    --set retry.backoff.ms=50 --set retry.max.attempts=5 -v >"$H_DIR/connector.log" 2>&1 &
CONN_PID=$!
H_PIDS+=($CONN_PID)

h_deploy "$FLOWD_SRC/examples/processes/sdk-rest.json"
ok=$(h_start sdk-rest '{"accountId": "acc-42"}')
flaky=$(h_start sdk-rest '{"accountId": "flaky-1"}')
hang=$(h_start sdk-rest '{"accountId": "hang-1"}')
missing=$(h_start sdk-rest '{"accountId": "missing-7"}')

# end node of a finished instance: the last history row's node
end_node() { h_http GET "/v1/instances/$1" | h_json 'j["history"][-1]["node"]'; }

for id in $ok $flaky $hang $missing; do h_wait_state "$id" FINISHED 60; done
h_assert_eq "$(end_node "$ok")" found "plain lookup"
h_assert_eq "$(h_http GET "/v1/instances/$ok" | h_json 'j["data"]["account"]["balance"]')" 600 \
    "balance of acc-42"
h_assert_eq "$(end_node "$flaky")" found "HTTP 500 twice, then success"
h_assert_eq "$(end_node "$hang")" found "hang, timeout, retry"
h_assert_eq "$(end_node "$missing")" lookup_failed "404 goes to the error path"
h_assert_eq "$(h_http GET "/v1/instances/$missing" | h_json 'j["data"]["account"]["errorCode"]')" \
    ACCOUNT_NOT_FOUND "error code of the 404"
h_assert_eq "$(h_http GET "/v1/instances/$missing" | h_json 'j["data"]["account"]["errorMessage"]')" \
    "account missing-7 not found" "error message of the 404"

stats=$(curl -sf "$LEGACY/stats")
h_assert_eq "$(printf '%s' "$stats" | h_json 'j["calls"]["flaky-1"]')" 3 "calls for flaky-1"
h_assert_eq "$(printf '%s' "$stats" | h_json 'j["calls"]["hang-1"]')" 2 "calls for hang-1"
h_assert_eq "$(printf '%s' "$stats" | h_json 'j["calls"]["missing-7"]')" 1 "404 is not retried"
grep -q 'LEGACY_TIMEOUT' "$H_DIR/connector.log" || h_fail "no timeout logged"

# A poison request: not JSON. It must reach the dead-letter topic with reason=not-json.
printf 'this is not json' | kcat -b "$H_BOOTSTRAP" -P -t ai.flowx.dev.connector.accounts.in.v1 \
    -H processInstanceId=999 -H messageId=poison-1
# (kcat exits at once while the topic does not exist yet: try again until it does)
dlq=
deadline=$((SECONDS + 30))
while [ -z "$dlq" ] && [ $SECONDS -lt $deadline ]; do
    dlq=$(timeout 10 kcat -b "$H_BOOTSTRAP" -C -t ai.flowx.dev.connector.dlq.v1 -o beginning \
        -c 1 -e -f '%h|%s\n' 2>/dev/null || true)
    [ -n "$dlq" ] || sleep 0.5
done
case "$dlq" in
*reason=not-json*'|this is not json') ;;
*) h_fail "poison request not dead-lettered: '$dlq'" ;;
esac

h_stop_pid "$CONN_PID"
grep -qE 'AddressSanitizer|LeakSanitizer|runtime error' "$H_DIR/connector.log" &&
    { cat "$H_DIR/connector.log" >&2; h_fail "sanitizer report in the connector"; }
grep -q 'sdk-rest: stopped' "$H_DIR/connector.log" || h_fail "connector did not stop gracefully"
h_log "sdk-rest: OK"
