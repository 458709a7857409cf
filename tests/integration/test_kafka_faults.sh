#!/bin/bash
# test_kafka_faults.sh - broker faults lose nothing and apply nothing twice, and flowd recovers by
# itself. A 3-broker cluster (`flowd kafka`; flowd is never restarted here)
# with the C connector; instances of customer-onboarding and of the two-sends process run through:
#   1. every broker down while idle (down 1/2/3, then up): GET /ready answers 503 with a detail
#      naming Kafka while they are down, and 200 again after, with no traffic at all;
#   2. every broker down for several seconds with instances starting: 503 while it lasts, 200
#      after, and the instances started during the outage finish;
#   3. the leaders of every partition of the request and reply topics move to other brokers;
#   4. errors injected on Produce (one instance at a time: see below), Fetch, OffsetCommit and
#      Heartbeat (under load);
# then every instance finished, no transition is in the history twice and no connector got one
# messageId for two instances (tests/chaos/chaos.py --check-data), with the same flowd process.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"
. "$FLOWD_SRC/tests/lib/kafka.sh"

LOAD() { $PY "$FLOWD_SRC/tests/lib/load.py" --url "$H_URL" "$@"; }
REQ_TOPIC=ai.flowx.dev.connector.customer.in.v1
REPLY_TOPIC=ai.flowx.dev.engine.receive.customer.v1
FAULTS=0
fault() {
    h_kafka_cmd "$1"
    FAULTS=$((FAULTS + 1))
    h_log "fault: $1"
}

# start_batch NAME COUNT: starts COUNT instances, alternating the two processes, ids in $H_DIR/NAME.
start_batch() {
    local half=$(($2 / 2)) base=$((RANDOM * 10))
    LOAD start --key customer-onboarding --count "$half" --threads 4 \
        --data "{\"customerId\": $base{i}}" --out "$H_DIR/$1.a" >/dev/null ||
        h_fail "starting $1 (customer-onboarding)"
    LOAD start --key chaos-twice --count $(($2 - half)) --threads 4 \
        --data "{\"customerId\": 1{i}, \"second\": 2{i}}" --out "$H_DIR/$1.b" >/dev/null ||
        h_fail "starting $1 (chaos-twice)"
    cat "$H_DIR/$1.a" "$H_DIR/$1.b" >"$H_DIR/$1"
    cat "$H_DIR/$1" >>"$H_DIR/all.ids"
}

# ready_is CODE TIMEOUT: waits until GET /ready answers CODE; the body is left in H_BODY.
ready_is() {
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        h_req GET /ready
        [ "$H_STATUS" = "$1" ] && return 0
        sleep 0.2
    done
    return 1
}

h_setup
h_kafka_start --brokers 3 --partitions 4 --topic "$REQ_TOPIC" --topic "$REPLY_TOPIC"
mkdir -p "$H_DATA"
cp "$H_DIR/kafka.bootstrap" "$H_DATA/kafka.bootstrap" # where the connector looks for it
# the broker outage is logged at ERROR by librdkafka (connection refused); that is expected here
H_ALLOW_ERRORS=1
h_flowd_start --set "kafka.bootstrap-servers=$H_KAFKA_BOOTSTRAP"
PID=$H_FLOWD_PID
h_deploy "$FLOWD_SRC/examples/processes/customer-onboarding.json"
h_deploy "$FLOWD_SRC/tests/chaos/processes/chaos-twice.json"
h_legacy_start
h_connector_c_start
: >"$H_DIR/all.ids"

start_batch warm 40
LOAD wait --ids "$H_DIR/warm" --state FINISHED --timeout 30 >/dev/null || h_fail "warm-up did not finish"
ready_is 200 5 || h_fail "/ready is $H_STATUS before any fault: $H_BODY"

# ---- 1. all brokers down while idle: /ready recovers without traffic ---------------------------
# No instance in flight and every offset committed: no delivery, no reply, no re-delivered message
# can set /ready back; only flowd noticing the brokers are back can.
LOAD wait --ids "$H_DIR/all.ids" --state FINISHED --timeout 10 >/dev/null || h_fail "not every instance finished"
sleep 2
fault "down 1"
fault "down 2"
fault "down 3"
ready_is 503 20 || h_fail "/ready stayed $H_STATUS with every broker down (idle): $H_BODY"
sleep 3
fault "up 1"
fault "up 2"
fault "up 3"
ready_is 200 30 ||
    h_soft_fail "/ready is still $H_STATUS 30 s after the brokers came back with no traffic: $H_BODY"

# traffic sets /ready back in any case; phase 2 must start from a ready flowd
start_batch between 4
LOAD wait --ids "$H_DIR/between" --state FINISHED --timeout 30 >/dev/null ||
    h_fail "instances did not finish after the idle outage"
ready_is 200 10 || h_fail "/ready is $H_STATUS even with traffic after the idle outage: $H_BODY"

# ---- 2. every broker down for several seconds ---------------------------------------------------
t0=$SECONDS
fault "down 1"
fault "down 2"
fault "down 3"
start_batch outage 60 # the store takes them; their requests wait in the outbox
ready_is 503 20 || h_fail "/ready stayed $H_STATUS with every broker down: $H_BODY"
detail=$(printf '%s' "$H_BODY" | h_json detail)
case "$detail" in *Kafka*) ;; *) h_fail "/ready 503 detail does not name Kafka: $H_BODY" ;; esac
h_log "/ready with brokers down: 503 $H_BODY"
sleep 4
h_req GET /ready
[ "$H_STATUS" = 503 ] || h_fail "/ready is $H_STATUS while every broker is still down: $H_BODY"
LOAD wait --ids "$H_DIR/outage" --state FINISHED --timeout 0 >/dev/null 2>&1 &&
    h_fail "instances finished while every broker was down"
fault "up 1"
fault "up 2"
fault "up 3"
h_log "brokers were down for $((SECONDS - t0)) s"
ready_is 200 30 || h_fail "/ready is still $H_STATUS 30 s after the brokers came back: $H_BODY"
LOAD wait --ids "$H_DIR/outage" --state FINISHED --timeout 60 ||
    h_fail "instances started during the outage did not finish after it"
h_log "recovered from the outage in $((SECONDS - t0)) s"

# ---- 3. partition leaders move, under load ---------------------------------------------------
start_batch leaders 120 &
LOADER=$!
sleep 0.5
for p in 0 1 2 3; do
    fault "leader $REQ_TOPIC $p $(((p + 1) % 3 + 1))"
    fault "leader $REPLY_TOPIC $p $(((p + 2) % 3 + 1))"
done
sleep 1
for p in 0 1 2 3; do
    fault "leader $REPLY_TOPIC $p $((p % 3 + 1))"
    fault "leader $REQ_TOPIC $p $((p % 3 + 1))"
done
wait $LOADER || h_fail "starting instances while the leaders moved"
LOAD wait --ids "$H_DIR/leaders" --state FINISHED --timeout 60 ||
    h_fail "instances did not finish after the partition leaders moved"

# ---- 4. errors on Produce, Fetch, OffsetCommit, Heartbeat ------------------------------------
# 4a. Produce errors, with one instance at a time. Under load they lose messages on this mock
# cluster, whoever produces: librdkafka 2.0.2's mock does not reject the next in-flight batch of an
# idempotent producer when an earlier one failed (a real broker answers OUT_OF_ORDER_SEQUENCE), so
# the producer takes the failed batch for persisted and reports it delivered. Reproduced without
# flowd: a plain idempotent producer, one keyed message every 2 ms, 5 NOT_LEADER_FOR_PARTITION
# injected: 200 reported delivered, 199 in the topic; with max.in.flight=1 or without idempotence,
# 200 of 200.
fault "error Produce NOT_LEADER_FOR_PARTITION 3"
fault "error Produce REQUEST_TIMED_OUT 2"
for i in 1 2 3 4 5 6; do
    if [ $((i % 2)) = 0 ]; then
        id=$(h_start customer-onboarding "{\"customerId\": 7$i}")
    else
        id=$(h_start chaos-twice "{\"customerId\": 8$i, \"second\": 9$i}")
    fi
    echo "$id" >>"$H_DIR/all.ids"
    h_wait_state "$id" FINISHED 30
done
h_kafka_cmd "clear Produce"
# 4b. the others under load: OffsetCommit errors wait for the next commit, so they are queued
# right before the load; Fetch and Heartbeat requests never stop, so those come during it.
fault "error OffsetCommit COORDINATOR_NOT_AVAILABLE 3"
start_batch errors 100 &
LOADER=$!
sleep 0.3
fault "error Fetch NOT_LEADER_FOR_PARTITION 5"
fault "error Heartbeat REBALANCE_IN_PROGRESS 2"
wait $LOADER || h_fail "starting instances while errors were injected"
fault "error OffsetCommit REQUEST_TIMED_OUT 2"
start_batch errors2 100 &
LOADER=$!
sleep 0.3
fault "error Fetch UNKNOWN_TOPIC_OR_PART 3"
fault "error Heartbeat NOT_COORDINATOR 2"
wait $LOADER || h_fail "starting instances while errors were injected"
LOAD wait --ids "$H_DIR/errors" --state FINISHED --timeout 60 ||
    h_fail "instances did not finish with errors injected"
LOAD wait --ids "$H_DIR/errors2" --state FINISHED --timeout 60 ||
    h_fail "instances did not finish with errors injected"
for api in Produce Fetch OffsetCommit Heartbeat; do h_kafka_cmd "clear $api"; done
ready_is 200 10 || h_fail "/ready is $H_STATUS after the faults: $H_BODY"

# ---- the same flowd did it all; exactly once ---------------------------------------------------
kill -0 "$PID" 2>/dev/null && [ "$H_FLOWD_PID" = "$PID" ] || h_fail "flowd did not survive the faults"
LOAD wait --ids "$H_DIR/all.ids" --state FINISHED --timeout 10 >/dev/null ||
    h_fail "not every instance finished"
sleep 1 # the connector logs a request after its reply is delivered; the last batch settles
h_flowd_stop
h_stop_pid "$H_CONN_C_PID"
$PY "$FLOWD_SRC/tests/chaos/chaos.py" --check-data "$H_DATA" \
    --check-connector-log "$H_DIR/connector-c.requests" --check-ids "$H_DIR/all.ids" ||
    h_fail "a step was lost or applied twice under Kafka faults"
h_soft_done
h_log "ok: $(grep -c '' "$H_DIR/all.ids") instances, $FAULTS faults injected, exactly once, $SECONDS s"
