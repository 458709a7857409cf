#!/usr/bin/env bash
# test_sdk_file_exchange.sh - the SDK file-exchange connector in the sdk-file-exchange process:
# the connector drops request files, a script plays the legacy batch system and answers with
# files. A booked invoice ends in "booked"; a refusal ({"error": ...} answer, a fatal error)
# ends in "refused" through the error path; a legacy side that starts late makes the first
# wait time out (retriable) and the request still completes, once.
. "$FLOWD_SRC/tests/lib/harness.sh"

CONN=$FLOWD_BUILD/examples/sdk-file-exchange-connector
[ -x "$CONN" ] || h_fail "$CONN not built (target sdk-examples)"

h_setup
h_flowd_start
mkdir -p "$H_DIR/outbox" "$H_DIR/inbox"
"$CONN" --bootstrap-file "$H_DATA/kafka.bootstrap" --outbox "$H_DIR/outbox" \
    --inbox "$H_DIR/inbox" --wait-ms 1500 --set retry.backoff.ms=50 -v \
    >"$H_DIR/connector.log" 2>&1 &
CONN_PID=$!
H_PIDS+=($CONN_PID)

h_deploy "$FLOWD_SRC/examples/processes/sdk-file-exchange.json"
booked=$(h_start sdk-file-exchange '{"customer": "c-1", "amount": 120}')
refused=$(h_start sdk-file-exchange '{"customer": "c-2", "amount": 50000}')

# the legacy side is late: the first waits time out, the SDK retries
for _ in $(seq 1 50); do [ "$(ls "$H_DIR/outbox" | wc -l)" -ge 2 ] && break; sleep 0.1; done
[ "$(ls "$H_DIR/outbox" | wc -l)" -ge 2 ] || h_fail "no request files in the outbox"
sleep 2
$PY "$FLOWD_SRC/examples/connectors/sdk-file-exchange/legacy_files.py" --outbox "$H_DIR/outbox" \
    --inbox "$H_DIR/inbox" --delay-ms 100 --count-file "$H_DIR/legacy.count" \
    >"$H_DIR/legacy.log" 2>&1 &
H_PIDS+=($!)

end_node() { h_http GET "/v1/instances/$1" | h_json 'j["history"][-1]["node"]'; }
h_wait_state "$booked" FINISHED 60
h_wait_state "$refused" FINISHED 60
h_assert_eq "$(end_node "$booked")" booked "invoice booked"
h_assert_eq "$(h_http GET "/v1/instances/$booked" | h_json 'j["data"]["invoice"]["invoiceId"]')" \
    INV-c-1-120 "invoice id"
h_assert_eq "$(end_node "$refused")" refused "refusal goes to the error path"
h_assert_eq "$(h_http GET "/v1/instances/$refused" | h_json 'j["data"]["invoice"]["errorCode"]')" \
    LEGACY_REJECTED "error code"
grep -q LEGACY_NO_ANSWER "$H_DIR/connector.log" || h_fail "the late legacy side caused no retry"
h_assert_eq "$(wc -l <"$H_DIR/legacy.count")" 2 "requests processed by the legacy side"
h_assert_eq "$(ls -A "$H_DIR/outbox" "$H_DIR/inbox" | grep -c json || true)" 0 "files left over"

h_stop_pid "$CONN_PID"
grep -qE 'AddressSanitizer|LeakSanitizer|runtime error' "$H_DIR/connector.log" &&
    { cat "$H_DIR/connector.log" >&2; h_fail "sanitizer report in the connector"; }
h_log "sdk file exchange: OK"
