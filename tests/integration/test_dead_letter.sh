#!/bin/bash
# test_dead_letter.sh - every undeliverable message on the engine's receive topics lands on the
# dead-letter topic ai.flowx.dev.engine.dlq.v1 with its original headers and value plus the right
# `reason` header; the daemon logs it as a WARN (never ERROR), keeps answering /health, leaves the
# waiting instance alone, and a fresh instance still completes.
#   (a) not JSON                       -> not-json
#   (b) JSON without correlation       -> no-correlation
#   (c) processInstanceId=99999999     -> unknown-instance
#   (d) a reply to a FINISHED instance -> instance-finished (its request headers copied, with a
#       new messageId: the same messageId again is a duplicate delivery, dropped without a
#       dead letter, and must not touch the instance either: case d2)
#   (e) processInstanceId=abc          -> bad-correlation
#   (f) invalid UTF-8 bytes            -> invalid-utf8
#   (g) a topic matching the pattern that no node waits on (appears after flowd started)
#                                      -> no-waiting-node
#   (h) over kafka.message.max-bytes   -> too-large (the value itself is left out)
#   (i) processInstanceId twice        -> bad-correlation
# and a reply correlated by processInstanceUuid alone (FlowX's quickstart style) is delivered, and
# a deeply nested (900 levels) reply neither kills the daemon nor makes its instance unreadable.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

RECV=ai.flowx.dev.engine.receive.customer.v1
NOBODY=ai.flowx.dev.engine.receive.nobody.v1
DLQ=ai.flowx.dev.engine.dlq.v1
REQ_TOPIC=ai.flowx.dev.connector.customer.in.v1

h_setup
h_flowd_start --set kafka.message.max-bytes=2048
h_deploy "$FLOWD_SRC/examples/processes/customer-onboarding.json"
h_legacy_start

# One instance runs to the end (its request headers are reused for case d).
h_connector_c_start
done_id=$(h_start customer-onboarding '{"customerId": 42}')
h_wait_state "$done_id" FINISHED 60
h_stop_pid "$H_CONN_C_PID"
# One instance waits (no connector running now).
wait_id=$(h_start customer-onboarding '{"customerId": 7}')
h_wait_state "$wait_id" STARTED 10
h_req GET "/v1/instances/$wait_id"
wait_uuid=$(printf '%s' "$H_BODY" | h_json uuid)

# The finished instance's request, as the connector saw it: headers to copy for case (d).
kcat -b "$H_BOOTSTRAP" -C -t $REQ_TOPIC -e -o beginning -f '%k|%h|%s\n' 2>/dev/null |
    $PY "$FLOWD_SRC/tests/lib/kcat_parse.py" >"$H_DIR/requests.json"
# request_headers NEW_MESSAGE_ID: the finished instance's request headers, one name=value a line,
# messageId replaced unless NEW_MESSAGE_ID is empty.
request_headers() {
    ID=$done_id MID=$1 $PY -c '
import json, os, sys
for m in json.load(open(sys.argv[1])):
    if m["headers"].get("processInstanceId") == os.environ["ID"]:
        for k, v in m["headers_list"]:
            if k == "messageId" and os.environ["MID"]:
                v = os.environ["MID"]
            print("%s=%s" % (k, v))
        break
' "$H_DIR/requests.json"
}
done_headers=()
while IFS= read -r kv; do done_headers+=(-H "$kv"); done < <(request_headers test-d-late-reply)
dup_headers=()
while IFS= read -r kv; do dup_headers+=(-H "$kv"); done < <(request_headers "")
[ ${#done_headers[@]} -ge 18 ] || h_fail "could not read the finished instance's request headers"

# produce TOPIC CASE VALUE_FILE [kcat -H args...]: one message, value = the file's bytes.
produce() {
    local topic=$1 case=$2 file=$3
    shift 3
    kcat -b "$H_BOOTSTRAP" -P -t "$topic" -k "case-$case" -H "testCase=$case" "$@" "$file" ||
        h_fail "kcat could not produce case $case"
}
printf 'not json {' >"$H_DIR/a.val"
printf '{"customerId": 1, "found": true}' >"$H_DIR/json.val"
printf '\xff\xfe' >"$H_DIR/f.val"
$PY -c 'print("{\"pad\": \"" + "x" * 3000 + "\"}", end="")' >"$H_DIR/h.val"

produce $RECV a "$H_DIR/a.val" -H "processInstanceId=$wait_id" -H "processInstanceUuid=$wait_uuid"
produce $RECV b "$H_DIR/json.val" -H "source=test"
produce $RECV c "$H_DIR/json.val" -H "processInstanceId=99999999"
produce $RECV d "$H_DIR/json.val" "${done_headers[@]}"
produce $RECV d2 "$H_DIR/json.val" "${dup_headers[@]}"
produce $RECV e "$H_DIR/json.val" -H "processInstanceId=abc"
produce $RECV f "$H_DIR/f.val" -H "processInstanceId=$wait_id" -H "processInstanceUuid=$wait_uuid"
produce $RECV h "$H_DIR/h.val" -H "processInstanceId=$wait_id" -H "processInstanceUuid=$wait_uuid"
produce $RECV i "$H_DIR/json.val" -H "processInstanceId=$wait_id" -H "processInstanceId=$wait_id"
produce $NOBODY g "$H_DIR/json.val" -H "processInstanceId=$wait_id" -H "processInstanceUuid=$wait_uuid"

# Wait for all nine on the DLQ (g needs a metadata refresh and a rebalance first).
read_dlq() {
    kcat -b "$H_BOOTSTRAP" -C -t $DLQ -e -o beginning -f '%k|%h|%s\n' 2>/dev/null |
        $PY "$FLOWD_SRC/tests/lib/kcat_parse.py" >"$H_DIR/dlq.json"
}
deadline=$((SECONDS + 45))
while :; do
    read_dlq
    n=$(h_json 'len(set(m["headers"].get("testCase") for m in j) - {None})' <"$H_DIR/dlq.json")
    [ "$n" -ge 9 ] && break
    [ $SECONDS -lt $deadline ] || break
    # meanwhile the daemon answers
    h_req GET /health
    [ "$H_STATUS" = 200 ] || h_fail "/health answered $H_STATUS while dead-lettering"
    sleep 0.5
done
h_log "dead-letter topic holds $n of the 9 test cases"

RECV=$RECV NOBODY=$NOBODY DLQ_JSON=$H_DIR/dlq.json WAIT_ID=$wait_id WAIT_UUID=$wait_uuid DONE_ID=$done_id \
    REQ=$H_DIR/requests.json $PY -c '
import json, os, sys
e = os.environ
dlq = json.load(open(e["DLQ_JSON"]))
done_req = next(m for m in json.load(open(e["REQ"]))
                if m["headers"].get("processInstanceId") == e["DONE_ID"])
corr = {"processInstanceId": e["WAIT_ID"], "processInstanceUuid": e["WAIT_UUID"]}
expect = {
    "a": ("not-json", dict(corr), "not json {"),
    "b": ("no-correlation", {"source": "test"}, None),
    "c": ("unknown-instance", {"processInstanceId": "99999999"}, None),
    "d": ("instance-finished", dict(done_req["headers"], messageId="test-d-late-reply"), None),
    "e": ("bad-correlation", {"processInstanceId": "abc"}, None),
    "f": ("invalid-utf8", dict(corr), "\ufffd\ufffd"),
    "g": ("no-waiting-node", dict(corr), None),
    # a too-large value is left out on purpose: the DLQ could not take it either
    "h": ("too-large", dict(corr), ""),
    "i": ("bad-correlation", {"processInstanceId": e["WAIT_ID"]}, None),
}
json_value = "{\"customerId\": 1, \"found\": true}"
problems = []
for case, (reason, headers, value) in sorted(expect.items()):
    msgs = [m for m in dlq if m["headers"].get("testCase") == case]
    if len(msgs) != 1:
        problems.append("case %s (%s): %d messages on the DLQ" % (case, reason, len(msgs)))
        continue
    h = msgs[0]["headers"]
    if h.get("reason") != reason:
        problems.append("case %s: reason %r, expected %r (headers %s)" % (case, h.get("reason"), reason, h))
    for k, v in headers.items():
        if h.get(k) != v:
            problems.append("case %s: original header %s=%r, got %r" % (case, k, v, h.get(k)))
    if msgs[0]["key"] != "case-" + case:
        problems.append("case %s: key %r, expected the original %r" % (case, msgs[0]["key"], "case-" + case))
    topic = e["NOBODY"] if case == "g" else e["RECV"]
    if h.get("originalTopic") != topic:
        problems.append("case %s: originalTopic %r, expected %r" % (case, h.get("originalTopic"), topic))
    want = json_value if value is None else value
    if msgs[0]["value"] != want:
        problems.append("case %s: value %r, expected the original %r" % (case, msgs[0]["value"], want))
# d2 (same messageId as the reply already applied) is a duplicate: dropped, not dead-lettered.
unexpected = [m["headers"] for m in dlq if m["headers"].get("testCase") not in expect]
if unexpected:
    problems.append("unexpected DLQ messages: %s" % unexpected)
for p in problems:
    print("problem:", p, file=sys.stderr)
if problems:
    print("DLQ content:", json.dumps(dlq, indent=1), file=sys.stderr)
    sys.exit(1)
print("all 9 dead letters carry their reason, original headers and value")
' || h_fail "dead-letter topic content"

# Logged as warnings, one per dead letter, naming the reason; the harness teardown fails on ERROR.
for reason in not-json no-correlation unknown-instance instance-finished bad-correlation \
    invalid-utf8 no-waiting-node too-large; do
    grep -E ' WARN ' "$H_FLOWD_LOG" | grep -q -- "$reason" ||
        h_fail "no WARN log line names the dead-letter reason $reason"
done
if grep -E ' (ERROR|FATAL) ' "$H_FLOWD_LOG"; then h_fail "dead letters were logged as ERROR"; fi

# The daemon is healthy, the waiting instance untouched, and everything still works.
h_req GET /health
h_assert_eq "$H_STATUS" 200 "/health"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json status)" ok "/health status"
h_req GET "/v1/instances/$wait_id"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json state)" STARTED "waiting instance state"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json '"customer" in j["data"]')" false \
    "waiting instance data untouched by dead letters"
h_req GET "/v1/instances/$done_id"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json '[h["state"] for h in j["history"]].count("MESSAGE_RECEIVED")')" 1 \
    "MESSAGE_RECEIVED rows of the finished instance after a late reply and a duplicate"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["data"]["customer"]["customerId"]')" 42 \
    "the finished instance's stored reply after a late reply and a duplicate"
# A reply correlated by processInstanceUuid alone reaches the waiting instance.
printf '{"customerId": 7, "found": true, "segment": "premium", "via": "uuid"}' >"$H_DIR/uuid.val"
produce $RECV uuid-only "$H_DIR/uuid.val" -H "processInstanceUuid=$wait_uuid"
h_wait_state "$wait_id" FINISHED 30
h_req GET "/v1/instances/$wait_id"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["data"]["customer"]["via"]')" uuid \
    "reply correlated by processInstanceUuid stored under data.customer"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["history"][-1]["node"]')" premium_welcome \
    "instance routed on the uuid-correlated reply"

fresh_id=$(h_start customer-onboarding '{"customerId": 23}')
h_connector_c_start
h_wait_state "$fresh_id" FINISHED 60

# ---- last (it used to take the daemon down): a deeply nested reply -----------------------------
# 900 levels is 1.8 KB, under kafka.message.max-bytes and under cJSON's nesting limit (1000). The
# daemon may dead-letter it or store it; either way it keeps running and the instance stays
# readable.
h_stop_pid "$H_CONN_C_PID"
deep_id=$(h_start customer-onboarding '{"customerId": 77}')
$PY -c 'print("{\"deep\": " + "[" * 900 + "]" * 900 + "}", end="")' >"$H_DIR/deep.val"
produce $RECV deep "$H_DIR/deep.val" -H "processInstanceId=$deep_id"
deadline=$((SECONDS + 20))
outcome=""
while [ $SECONDS -lt $deadline ] && [ -z "$outcome" ]; do
    sleep 0.5
    if ! kill -0 "$H_FLOWD_PID" 2>/dev/null; then outcome=died; break; fi
    read_dlq
    [ "$(h_json 'sum(m["headers"].get("testCase") == "deep" for m in j)' <"$H_DIR/dlq.json")" = 0 ] ||
        outcome=dead-lettered
    grep -q 'MESSAGE_RECEIVED' <<<"$(curl -s "$H_URL/v1/instances/$deep_id" || true)" &&
        outcome=delivered
done
h_log "900-deep reply: ${outcome:-no outcome}"
code=$(curl -s -o /dev/null -w '%{http_code}' "$H_URL/v1/instances/$deep_id" || true)
[ "$code" = 200 ] || h_soft_fail "GET of the instance that got a 900-deep reply: HTTP $code (${outcome:-no outcome})"
code=$(curl -s -o /dev/null -w '%{http_code}' "$H_URL/health" || true)
[ "$code" = 200 ] || h_soft_fail "/health after a 900-deep reply: HTTP $code (the daemon died)"
[ -n "$outcome" ] && [ "$outcome" != died ] || h_soft_fail "900-deep reply: neither delivered nor dead-lettered"
h_soft_done

echo "ok: 9/9 undeliverable messages dead-lettered with the right reason, original key, headers and value; daemon kept serving, a uuid-correlated reply and a fresh instance completed"
