#!/bin/bash
# test_happy_path.sh - both example processes end to end through the real daemon, the legacy stub,
# the C connector (customer lookups) and the Python connector (credit scoring): every gateway route
# is taken, each instance ends in the expected end node with the connector's reply stored under the
# receive node's keyName, and every request the connectors consumed carried the FlowX header set
# and was keyed by the instance id.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

h_setup
h_flowd_start
h_deploy "$FLOWD_SRC/examples/processes/customer-onboarding.json"
h_deploy "$FLOWD_SRC/examples/processes/credit-check.json"
h_legacy_start
h_connector_c_start
h_connector_py_start

# customer id -> expected end node (legacy stub: id ending in 0 is not found; even digit sum is
# premium, odd is retail).
declare -A CUST_END=([42]=premium_welcome [7]=standard_welcome [10]=not_found [23]=standard_welcome)
declare -A CUST_ID=()
for cid in "${!CUST_END[@]}"; do
    CUST_ID[$cid]=$(h_start customer-onboarding "{\"customerId\": $cid}")
done
# amount -> expected end node (approved iff amount <= 10000)
declare -A SCORE_END=([5000]=approved [10000]=approved [20000]=rejected)
declare -A SCORE_ID=()
for amount in "${!SCORE_END[@]}"; do
    SCORE_ID[$amount]=$(h_start credit-check "{\"clientId\": \"c-$amount\", \"amount\": $amount}")
done

# The instance view right after start: waiting in its receive node.
h_req GET "/v1/instances/${CUST_ID[42]}"
tokens=$(printf '%s' "$H_BODY" | h_json 'j["tokens"]')
case "$tokens" in
*'"node": "wait_customer"'*'WAITING_MESSAGE'* | "[]") ;; # [] when the reply already came
*) h_fail "fresh instance tokens: $tokens" ;;
esac

for cid in "${!CUST_ID[@]}"; do h_wait_state "${CUST_ID[$cid]}" FINISHED 60; done
for amount in "${!SCORE_ID[@]}"; do h_wait_state "${SCORE_ID[$amount]}" FINISHED 60; done
h_log "all $((${#CUST_ID[@]} + ${#SCORE_ID[@]})) instances FINISHED"

# check_instance ID END_NODE KEYNAME PY_ASSERTION_ON_REPLY
check_instance() {
    local id=$1 end=$2 key=$3 cond=$4
    h_req GET "/v1/instances/$id"
    h_assert_eq "$H_STATUS" 200 "GET /v1/instances/$id"
    printf '%s' "$H_BODY" | ID=$id END=$end KEY=$key COND=$cond $PY -c '
import json, os, sys
j = json.load(sys.stdin)
iid, end, key, cond = os.environ["ID"], os.environ["END"], os.environ["KEY"], os.environ["COND"]
def fail(msg):
    sys.exit("instance %s: %s\n%s" % (iid, msg, json.dumps(j)))
if str(j["id"]) != iid: fail("id")
if j["state"] != "FINISHED": fail("state %s" % j["state"])
if j["tokens"]: fail("tokens left: %s" % j["tokens"])
if not j.get("endedAt"): fail("no endedAt")
if j.get("error") is not None: fail("error %s" % j["error"])
hist = j["history"]
last = hist[-1]
if last["node"] != end or last["state"] != "FINISHED":
    fail("last history row %s, expected %s FINISHED" % (last, end))
if [h["seq"] for h in hist] != sorted(h["seq"] for h in hist): fail("history not in seq order")
if sum(h["state"] == "FINISHED" for h in hist) != 1: fail("not exactly one FINISHED row")
if sum(h["state"] == "MESSAGE_RECEIVED" for h in hist) != 1: fail("not exactly one MESSAGE_RECEIVED")
if hist[0]["node"] != "start": fail("history does not begin at start")
reply = j["data"].get(key)
if not isinstance(reply, dict): fail("no reply object under data.%s" % key)
if not eval(cond, {"r": reply, "d": j["data"]}): fail("reply check failed: %s" % cond)
' || h_fail "instance $id does not look right"
}

for cid in "${!CUST_ID[@]}"; do
    case ${CUST_END[$cid]} in
    premium_welcome) cond="r['found'] is True and r['segment'] == 'premium' and r['customerId'] == $cid" ;;
    standard_welcome) cond="r['found'] is True and r['segment'] == 'retail' and r['customerId'] == $cid" ;;
    not_found) cond="r['found'] is False" ;;
    esac
    check_instance "${CUST_ID[$cid]}" "${CUST_END[$cid]}" customer "$cond and d['customerId'] == $cid"
done
for amount in "${!SCORE_ID[@]}"; do
    case ${SCORE_END[$amount]} in
    approved) cond="r['approved'] is True" ;;
    rejected) cond="r['approved'] is False" ;;
    esac
    check_instance "${SCORE_ID[$amount]}" "${SCORE_END[$amount]}" score \
        "$cond and r['clientId'] == 'c-$amount' and isinstance(r['score'], int) and d['amount'] == $amount"
done
h_log "end nodes and stored replies as expected"

# The requests as the connectors consumed them: key and FlowX headers.
# check_requests TOPIC PROCESS_KEY DESTINATION ACTION CONNECTOR_LOG ID...
check_requests() {
    local topic=$1 pkey=$2 dest=$3 action=$4 connlog=$5
    shift 5
    kcat -b "$H_BOOTSTRAP" -C -t "$topic" -e -o beginning -f '%k|%h|%s\n' 2>/dev/null |
        $PY "$FLOWD_SRC/tests/lib/kcat_parse.py" >"$H_DIR/requests.json"
    local id
    for id in "$@"; do
        h_req GET "/v1/instances/$id"
        printf '%s' "$H_BODY" >"$H_DIR/instance.json"
        HD=$H_DIR ID=$id PKEY=$pkey DEST=$dest ACTION=$action CONNLOG=$connlog TOPIC=$topic $PY -c '
import json, os, sys
e = os.environ
iid = e["ID"]
inst = json.load(open(e["HD"] + "/instance.json"))
msgs = [m for m in json.load(open(e["HD"] + "/requests.json"))
        if m["headers"].get("processInstanceId") == iid]
def fail(msg):
    sys.exit("request of instance %s on %s: %s" % (iid, e["TOPIC"], msg))
if len(msgs) != 1: fail("%d requests with processInstanceId=%s, expected 1" % (len(msgs), iid))
m = msgs[0]
h = m["headers"]
need = ["processInstanceId", "processInstanceUuid", "processDefinitionUuid", "processStartDate",
        "destinationId", "callbacksForAction", "messageId", "fxContext", "Fx-ProcessName"]
missing = [n for n in need if not h.get(n)]
if missing: fail("missing or empty headers %s (got %s)" % (missing, h))
if m["key"] != iid: fail("key %r, expected the instance id %s" % (m["key"], iid))
if h["processInstanceUuid"] != inst["uuid"]: fail("processInstanceUuid %s != %s" % (h["processInstanceUuid"], inst["uuid"]))
if h["processStartDate"] != inst["startedAt"]: fail("processStartDate %s != startedAt %s" % (h["processStartDate"], inst["startedAt"]))
if h["destinationId"] != e["DEST"]: fail("destinationId %s" % h["destinationId"])
if h["callbacksForAction"] != e["ACTION"]: fail("callbacksForAction %s" % h["callbacksForAction"])
if h["fxContext"] != "main": fail("fxContext %s" % h["fxContext"])
if h["Fx-ProcessName"] != e["PKEY"]: fail("Fx-ProcessName %s" % h["Fx-ProcessName"])
if len(h["processDefinitionUuid"]) != 36: fail("processDefinitionUuid %s" % h["processDefinitionUuid"])
try:
    json.loads(m["value"])
except ValueError:
    fail("value is not JSON: %r" % m["value"])
handled = [l.split() for l in open(e["CONNLOG"]) if l.strip()]
if [h["messageId"], iid] not in handled:
    fail("connector log %s has no line for messageId %s" % (e["CONNLOG"], h["messageId"]))
' || h_fail "request headers of instance $id"
    done
    # messageIds are unique per logical message.
    local n_ids n_uniq
    n_ids=$(h_json 'len(j)' <"$H_DIR/requests.json")
    n_uniq=$(h_json 'len(set(m["headers"]["messageId"] for m in j))' <"$H_DIR/requests.json")
    h_assert_eq "$n_uniq" "$n_ids" "distinct messageIds on $topic"
}
check_requests ai.flowx.dev.connector.customer.in.v1 customer-onboarding wait_customer \
    lookup_customer "$H_DIR/connector-c.requests" "${CUST_ID[@]}"
check_requests ai.flowx.dev.connector.scoring.in.v1 credit-check wait_score ask_score \
    "$H_DIR/connector-py.requests" "${SCORE_ID[@]}"

echo "ok: $((${#CUST_ID[@]} + ${#SCORE_ID[@]})) instances took every gateway route (premium, standard, not found, approved, rejected) with replies stored and FlowX headers on every request"
