#!/bin/bash
# test_store_faults.sh - a failing store loses nothing and applies nothing twice.
# Part 1 (store errors): 200 instances wait; flowd restarts with every 3rd commit failing (I/O
# error) and every 40th inbox write "busy"; the connector replies; every instance finishes exactly
# once, failed transactions are retried, and the log reports the store trouble per outage, not per
# message.
# Part 2 (crashes at commit, Kafka outliving flowd as in production): flowd is SIGKILLed right
# after a store commit (before its Kafka offsets are committed) and right before another; after
# each restart the re-delivered replies are dropped by the inbox or applied once.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"
. "$FLOWD_SRC/tests/lib/kafka.sh"

N=200
LOAD() { $PY "$FLOWD_SRC/tests/lib/load.py" --url "$H_URL" "$@"; }
H_ALLOW_ERRORS=1 # the store failures are logged at ERROR on purpose

h_setup
h_kafka_start --brokers 1
mkdir -p "$H_DATA"
cp "$H_DIR/kafka.bootstrap" "$H_DATA/kafka.bootstrap" # where the connector looks for it
KAFKA=(--set "kafka.bootstrap-servers=$H_KAFKA_BOOTSTRAP")

# ---- part 1: I/O errors and busy database -----------------------------------------------------
h_flowd_start "${KAFKA[@]}"
h_deploy "$FLOWD_SRC/examples/processes/customer-onboarding.json"
LOAD start --key customer-onboarding --count $N --threads 8 --data '{"customerId": {i}}' \
    --out "$H_DIR/ids1" || h_fail "starting $N instances"
LOAD wait --ids "$H_DIR/ids1" --state STARTED --token wait_customer:WAITING_MESSAGE --timeout 10 ||
    h_fail "instances are not waiting"
h_flowd_stop

FLOWD_STORE_FAULTS="commit/3/io,inbox/40/busy" h_flowd_start "${KAFKA[@]}"
grep -q 'store fault injection is ON' "$H_FLOWD_LOG" || h_fail "fault injection is not on"
h_legacy_start
h_connector_c_start
LOAD wait --ids "$H_DIR/ids1" --state FINISHED --timeout 60 ||
    h_fail "not every instance finished while the store was failing"
LOAD check --ids "$H_DIR/ids1" --state FINISHED ||
    h_fail "a step was lost or applied twice under store faults"
failures=$(grep -c 'store transaction failed' "$H_FLOWD_LOG" || true)
recoveries=$(grep -c 'store transactions succeed again' "$H_FLOWD_LOG" || true)
[ "$failures" -ge 1 ] || h_fail "no store failure was injected (log has none)"
[ "$recoveries" -ge 1 ] || h_fail "the log never says the store recovered"
# logged once per outage: never more lines than outages, and far fewer than messages
[ "$failures" -le $((recoveries + 1)) ] || h_fail "store failure logged $failures times for $recoveries outages"
[ "$failures" -lt $N ] || h_fail "store failure logged per message ($failures lines)"
h_log "part 1: $N/$N finished exactly once through $failures failed transactions"
h_flowd_stop
h_stop_pid "$H_CONN_C_PID"

# ---- part 2: SIGKILL right after / right before a store commit ---------------------------------
h_flowd_start "${KAFKA[@]}"
LOAD start --key customer-onboarding --count $N --threads 8 --data '{"customerId": {i}}' \
    --out "$H_DIR/ids2" || h_fail "starting $N instances"
LOAD wait --ids "$H_DIR/ids2" --state STARTED --token wait_customer:WAITING_MESSAGE --timeout 10 ||
    h_fail "instances are not waiting"
h_flowd_stop

# batches of 50 replies, so that the crash falls between two batches of the same run
for crash in "commit@2/crash-after" "commit@2/crash"; do
    FLOWD_STORE_FAULTS=$crash h_flowd_start "${KAFKA[@]}" --set engine.batch.max-messages=50
    [ -n "${H_CONN_C_PID:-}" ] && kill -0 "$H_CONN_C_PID" 2>/dev/null || h_connector_c_start
    pid=$H_FLOWD_PID
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && h_fail "flowd did not crash at $crash"
    wait "$pid" 2>/dev/null || true
    H_FLOWD_PID=
    grep -q 'fault injection: SIGKILL' "$H_FLOWD_LOG" || h_fail "flowd died, but not at $crash"
    h_log "flowd killed at $crash"
    [ "$crash" != "commit@2/crash" ] || continue
    # the kill came after a commit: some instances moved on, and their replies come again
    done_now=$(sqlite3 "$H_DATA/flowd.db" "SELECT count(*) FROM instances WHERE state='FINISHED'")
    [ "$done_now" -gt $N ] || h_fail "no reply was applied before the crash ($done_now finished)"
done
h_flowd_start "${KAFKA[@]}"
LOAD wait --ids "$H_DIR/ids2" --state FINISHED --timeout 60 ||
    h_fail "not every instance finished after the crashes"
LOAD check --ids "$H_DIR/ids2" --state FINISHED || h_fail "a step was lost or applied twice"
h_log "ok: store errors and crashes at commit: $((2 * N))/$((2 * N)) instances completed exactly once"
