#!/bin/bash
# test_api_endpoints.sh - every /v1 endpoint through real clients: curl, flowctl and the Python
# metrics client. Definitions (deploy, dry run, list, get by key and version), instances (start,
# list with filters and paging, get, history, cancel, retry of a FAILED instance with changed
# data, delivering a message), dead letters (list, replay after the cause was fixed), starting a
# process from Kafka with the answer on the confirm topic, and /metrics counters that move.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

FLOWCTL=$FLOWD_BUILD/flowctl
MC="$PY $FLOWD_SRC/tests/lib/metrics_client.py"
DEF=$FLOWD_SRC/examples/processes/credit-check.json
REPLY=ai.flowx.dev.engine.receive.scoring.v1

h_setup
h_flowd_start
fc() { "$FLOWCTL" --server "$H_URL" "$@"; }
$MC "$H_URL" save "$H_DIR/m0.json"

# ---- definitions ---------------------------------------------------------------------------
out=$(fc validate "$DEF") || h_fail "flowctl validate of a good definition: $out"
case "$out" in *valid*credit-check*) ;; *) h_fail "flowctl validate printed: $out" ;; esac
h_req GET /v1/definitions
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'len(j["definitions"])')" 0 "validate deployed nothing"
printf '{"key":"bad","nodes":[{"id":"start","type":"start","next":"nowhere"},{"id":"e","type":"end"}]}' >"$H_DIR/bad.json"
rc=0
err=$(fc validate "$H_DIR/bad.json" 2>&1) || rc=$?
h_assert_eq "$rc" 1 "flowctl validate of a bad definition exits 1"
case "$err" in *nowhere*) ;; *) h_fail "flowctl validate error does not name the problem: $err" ;; esac
out=$(fc deploy "$DEF") || h_fail "flowctl deploy: $out"
case "$out" in *"credit-check version 1 deployed"*) ;; *) h_fail "flowctl deploy printed: $out" ;; esac
out=$(fc deploy "$DEF")
case "$out" in *unchanged*) ;; *) h_fail "redeploy printed: $out" ;; esac
h_req GET /v1/definitions
h_assert_eq "$H_STATUS" 200 "GET /v1/definitions"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["definitions"][0]["latestVersion"]')" 1 "latest version"
h_req GET /v1/definitions/credit-check
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["definition"]["key"]')" credit-check "GET definition by key"
h_req GET /v1/definitions/credit-check/1
h_assert_eq "$(printf '%s' "$H_BODY" | h_json version)" 1 "GET definition by key and version"
h_req GET /v1/definitions/credit-check/7
h_assert_eq "$H_STATUS" 404 "unknown version"
fc defs | grep -q "credit-check" || h_fail "flowctl defs does not list credit-check"

# ---- start, deliver, --wait ------------------------------------------------------------------
# flowctl start --wait follows the instance while flowctl deliver answers for the connector.
fc start credit-check --data '{"clientId": 1, "amount": 100}' --wait --timeout 60 >"$H_DIR/wait.out" 2>&1 &
WAIT_PID=$!
H_PIDS+=($WAIT_PID)
id1=""
for i in $(seq 1 50); do
    id1=$(sed -n 's/^started credit-check instance \([0-9]*\).*/\1/p' "$H_DIR/wait.out")
    [ -n "$id1" ] && break
    sleep 0.1
done
[ -n "$id1" ] || h_fail "flowctl start --wait printed no instance id: $(cat "$H_DIR/wait.out")"
out=$(fc deliver "$id1" --data '{"score": 720, "approved": true}') || h_fail "flowctl deliver: $out"
case "$out" in *"node wait_score"*"$REPLY"*) ;; *) h_fail "flowctl deliver printed: $out" ;; esac
rc=0
wait "$WAIT_PID" || rc=$?
h_assert_eq "$rc" 0 "flowctl start --wait exit code for a FINISHED instance"
grep -q "MESSAGE_RECEIVED" "$H_DIR/wait.out" || h_fail "--wait did not show the progress: $(cat "$H_DIR/wait.out")"
grep -q "instance $id1 FINISHED" "$H_DIR/wait.out" || h_fail "--wait did not report the end: $(cat "$H_DIR/wait.out")"
h_req GET "/v1/instances/$id1"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["data"]["score"]["approved"]')" true "delivered reply stored under data.score"

# deliver errors: finished instance (409), unknown node (409), unknown instance (404), no body (400)
h_req POST "/v1/instances/$id1/messages" '{"body": {}}'
h_assert_eq "$H_STATUS" 409 "deliver to a FINISHED instance"
h_req POST /v1/instances/999999/messages '{"body": {}}'
h_assert_eq "$H_STATUS" 404 "deliver to an unknown instance"
h_req POST "/v1/instances/$id1/messages" '{"node": "x"}'
h_assert_eq "$H_STATUS" 400 "deliver without a body member"

# ---- more instances: list with filters and paging --------------------------------------------
id2=$(h_start credit-check '{"clientId": 2, "amount": 1}')
id3=$(h_start credit-check '{"clientId": 3, "amount": 1}')
out=$(fc start credit-check --file <(printf '{"clientId": 4, "amount": 1}')) || h_fail "flowctl start --file: $out"
id4=$(printf '%s' "$out" | sed -n 's/^started credit-check instance \([0-9]*\).*/\1/p')
[ -n "$id4" ] || h_fail "flowctl start printed: $out"
h_req GET "/v1/instances?state=STARTED&definition=credit-check"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json '[i["id"] for i in j["instances"]]')" "[$id4, $id3, $id2]" "STARTED instances, newest first"
h_req GET "/v1/instances?state=FINISHED"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json '[i["id"] for i in j["instances"]]')" "[$id1]" "FINISHED instances"
h_req GET "/v1/instances?limit=2"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json '[i["id"] for i in j["instances"]]')" "[$id4, $id3]" "first page"
next=$(printf '%s' "$H_BODY" | h_json next)
h_assert_eq "$next" "$id3" "next cursor"
h_req GET "/v1/instances?limit=2&before=$next"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json '[i["id"] for i in j["instances"]]')" "[$id2, $id1]" "second page"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json next)" null "no page after the last"
h_req GET "/v1/instances?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'len(j["instances"])')" 0 "time filter excludes everything in 2000"
h_req GET "/v1/instances?from=0"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'len(j["instances"])')" 4 "time filter from epoch 0"
h_req GET "/v1/instances?state=SLEEPING"
h_assert_eq "$H_STATUS" 400 "unknown state filter"
h_req GET "/v1/instances?limit=0"
h_assert_eq "$H_STATUS" 400 "limit 0"
fc ls --state STARTED | grep -q "^$id2 " || h_fail "flowctl ls --state STARTED does not list $id2"
[ "$(fc ls --json --limit 1 | h_json 'len(j["instances"])')" = 1 ] || h_fail "flowctl ls --json --limit 1"

# ---- history, cancel -------------------------------------------------------------------------
h_req GET "/v1/instances/$id2/history"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["history"][-1]["state"]')" WAITING_MESSAGE "history endpoint"
fc history "$id2" | grep -q "wait_score .*WAITING_MESSAGE" || h_fail "flowctl history"
fc get "$id2" | grep -q "waiting: *wait_score (WAITING_MESSAGE)" || h_fail "flowctl get"
out=$(fc cancel "$id2" --reason "customer withdrew") || h_fail "flowctl cancel: $out"
h_assert_eq "$out" "instance $id2 TERMINATED" "flowctl cancel output"
h_req GET "/v1/instances/$id2"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json state)" TERMINATED "cancelled state"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["history"][-1]["detail"]')" "customer withdrew" "cancel reason in history"
rc=0
fc cancel "$id2" 2>"$H_DIR/cancel2.err" || rc=$?
h_assert_eq "$rc" 1 "flowctl cancel of a TERMINATED instance exits 1"
grep -q "409" "$H_DIR/cancel2.err" || h_fail "second cancel: $(cat "$H_DIR/cancel2.err")"
h_req POST /v1/instances/abc/cancel
h_assert_eq "$H_STATUS" 400 "cancel with a bad id"

# ---- retry a FAILED instance -----------------------------------------------------------------
cat >"$H_DIR/fragile.json" <<'JSON'
{"key": "fragile", "nodes": [
  {"id": "start", "type": "start", "next": "ask"},
  {"id": "ask", "type": "send", "next": "wait",
   "actions": [{"name": "ask", "type": "kafka_send", "topic": "${data.target}"}]},
  {"id": "wait", "type": "receive", "next": "end",
   "dataStreamTopics": [{"topicName": "${prefix}engine.receive.fragile${suffix}", "keyName": "answer"}]},
  {"id": "end", "type": "end"}]}
JSON
fc deploy "$H_DIR/fragile.json" >/dev/null || h_fail "deploy fragile"
h_req POST /v1/processes/fragile/start '{"target": "not a topic!"}'
h_assert_eq "$(printf '%s' "$H_BODY" | h_json state)" FAILED "a bad topic fails the instance"
idf=$(printf '%s' "$H_BODY" | h_json id)
h_req POST "/v1/instances/$id3/retry"
h_assert_eq "$H_STATUS" 409 "retry of a waiting instance without incident"
out=$(fc retry "$idf" --data '{"target": "ai.flowx.dev.connector.fragile.v1"}') || h_fail "flowctl retry: $out"
h_assert_eq "$out" "instance $idf STARTED" "flowctl retry output"
h_req GET "/v1/instances/$idf"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json '[t["node"] for t in j["tokens"]]')" '["wait"]' "retried instance waits"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json error)" null "retry clears the error"
printf '%s' "$H_BODY" | h_json '[h["state"] for h in j["history"]]' | grep -q '"FAILED", "RETRIED", "ENTERED"' ||
    h_fail "history after retry: $(printf '%s' "$H_BODY" | h_json history)"
fc deliver "$idf" --data '{"ok": true}' >/dev/null || h_fail "deliver to the retried instance"
h_wait_state "$idf" FINISHED 40

# ---- dead letters and replay -----------------------------------------------------------------
# A reply for an instance that does not exist yet is dead-lettered (unknown-instance); once the
# instance exists, replaying the dead letter delivers it.
h_req GET /v1/instances?limit=1
next_id=$(($(printf '%s' "$H_BODY" | h_json 'j["instances"][0]["id"]') + 1))
printf '{"score": 650, "approved": true}' | kcat -b "$H_BOOTSTRAP" -P -t $REPLY -k "$next_id" \
    -H "processInstanceId=$next_id" -H "messageId=early-$next_id" -H destinationId=wait_score
for i in $(seq 1 300); do
    h_req GET /v1/dead-letters
    [ "$(printf '%s' "$H_BODY" | h_json 'len(j["deadLetters"])')" -ge 1 ] && break
    sleep 0.1
done
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["deadLetters"][0]["reason"]')" unknown-instance "dead letter reason"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["deadLetters"][0]["originalTopic"]')" $REPLY "dead letter original topic"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["deadLetters"][0]["headers"]["messageId"]')" "early-$next_id" "dead letter headers"
dl=$(printf '%s' "$H_BODY" | h_json 'j["deadLetters"][0]["id"]')
fc dlq ls | grep -q "unknown-instance" || h_fail "flowctl dlq ls"
idr=$(h_start credit-check '{"clientId": 5, "amount": 1}')
h_assert_eq "$idr" "$next_id" "the instance the early reply was for"
out=$(fc dlq replay "$dl") || h_fail "flowctl dlq replay: $out"
case "$out" in *"re-published to $REPLY"*) ;; *) h_fail "flowctl dlq replay printed: $out" ;; esac
h_wait_state "$idr" FINISHED 40
h_req POST /v1/dead-letters/999999/replay
h_assert_eq "$H_STATUS" 404 "replay of an unknown dead letter"
h_req POST "/v1/dead-letters/1/replay"
[ "$H_STATUS" = 404 ] || [ "$H_STATUS" = 202 ] || h_fail "replay of outbox row 1 (not a dead letter): $H_STATUS"
[ "$H_STATUS" = 404 ] || h_fail "outbox row 1 is a request, not a dead letter: HTTP $H_STATUS"

# ---- starting a process from Kafka -----------------------------------------------------------
START=ai.flowx.dev.core.trigger.start.process.v1
CONFIRM=ai.flowx.dev.core.confirm.start.process.v1
printf '{"clientId": 6, "amount": 2}' | kcat -b "$H_BOOTSTRAP" -P -t $START \
    -H "Fx-ProcessName=credit-check" -H "myCorrelation=req-42"
printf '{"processName": "no-such-process"}' | kcat -b "$H_BOOTSTRAP" -P -t $START -H "myCorrelation=req-43"
confirm=""
for i in $(seq 1 400); do
    confirm=$(kcat -b "$H_BOOTSTRAP" -C -t $CONFIRM -e -o beginning -f '%h|%s\n' 2>/dev/null || true)
    [ "$(printf '%s\n' "$confirm" | grep -c 'myCorrelation')" -ge 2 ] && break
    sleep 0.1
done
ok_line=$(printf '%s\n' "$confirm" | grep 'myCorrelation=req-42' || true)
[ -n "$ok_line" ] || h_fail "no confirm for req-42 on $CONFIRM: $confirm"
kid=$(printf '%s' "${ok_line#*|}" | h_json processInstanceId)
case "$ok_line" in *"processInstanceId=$kid"*) ;; *) h_fail "confirm headers lack processInstanceId: $ok_line" ;; esac
h_req GET "/v1/instances/$kid"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["data"]["clientId"]')" 6 "instance started from Kafka has the body as data"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json processKey)" credit-check "started from the Fx-ProcessName header"
bad_line=$(printf '%s\n' "$confirm" | grep 'myCorrelation=req-43' || true)
printf '%s' "${bad_line#*|}" | h_json errorMessage | grep -q "no-such-process" || h_fail "refused start: $bad_line"

# ---- metrics move ----------------------------------------------------------------------------
$MC "$H_URL" expect "$H_DIR/m0.json" \
    'flowd_instances_started_total+=7' 'flowd_instances_started_by_kafka_total+=1' \
    'flowd_instances_completed_total+=3' 'flowd_instances_failed_total+=1' \
    'flowd_instances_cancelled_total+=1' 'flowd_instances_retried_total+=1' \
    'flowd_messages_delivered_by_api_total+=2' 'flowd_dead_letters_replayed_total+=1' \
    'flowd_messages_dead_lettered_total+>=2' 'flowd_messages_received_total+>=6' \
    'flowd_messages_sent_total+>=8' 'flowd_instance_duration_seconds_count+=3' \
    'flowd_instances{state="TERMINATED"}==1' 'flowd_instances{state="FINISHED"}==3' \
    'flowd_instances_active==3' 'flowd_instances_waiting{process="credit-check",node="wait_score",state="WAITING_MESSAGE"}==3' \
    'flowd_batch_size_count+>=1' 'flowd_outbox_backlog>=0' 'flowd_consumer_lag>=0' ||
    { $MC "$H_URL" show >&2; h_fail "metrics did not move as expected"; }
summary=$(fc metrics)
grep -q "instances completed *3" <<<"$summary" || h_fail "flowctl metrics: $summary"
raw=$(fc metrics --raw)
grep -q '^# TYPE flowd_instance_duration_seconds histogram' <<<"$raw" || h_fail "flowctl metrics --raw"

h_soft_done
echo "ok: definitions, instances (list/filter/page/history/cancel/retry/deliver), dead letters (list, replay), Kafka start with confirm, metrics, through curl, flowctl and the metrics client"
