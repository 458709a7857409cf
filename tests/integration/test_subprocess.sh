#!/bin/bash
# test_subprocess.sh - subprocess nodes through the real daemon: a parent calls a child with input
# and output mapping and waits for it; a child two levels down fails and the failure travels up
# (to the parent's errorNext path, or failing a parent without one, with the whole chain in the
# error); children that end at once, a pinned version, a key that is not deployed; cancelling a
# parent cancels its child; a SIGKILL while a child waits loses nothing. Replies come through
# POST /v1/instances/{id}/messages, so each step is exactly where the test puts it.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

P=$FLOWD_SRC/tests/integration/processes
view() { h_http GET "/v1/instances/$1"; }
states() { view "$1" | h_json '" ".join(h["state"] + "@" + h["node"] for h in j["history"])'; }
# child ID: the instance the parent's WAITING_SUBPROCESS token waits for
child() {
    local c=""
    for i in $(seq 1 100); do
        c=$(view "$1" | h_json '[t.get("subprocessId", "") for t in j["tokens"] if t["state"] == "WAITING_SUBPROCESS"][0]' 2>/dev/null || true)
        [ -n "$c" ] && break
        sleep 0.1
    done
    [ -n "$c" ] || h_fail "instance $1 has no running subprocess: $(view "$1")"
    printf '%s' "$c"
}
answer() { # answer ID BODY: the leaf's reply
    h_req POST "/v1/instances/$1/messages" "{\"node\": \"wait\", \"body\": $2}"
    [ "$H_STATUS" = 202 ] || h_fail "deliver to $1: HTTP $H_STATUS $H_BODY"
}

h_setup
h_flowd_start
for f in sub-leaf sub-middle sub-parent sub-strict sub-instant sub-compute-v1 sub-compute-v2 sub-timeout; do
    h_deploy "$P/$f.json"
    # definitions deploy in any order; a call to a key not deployed yet is a warning, not an error
    case "$f" in
    sub-parent | sub-strict | sub-compute-* | sub-timeout)
        case "$H_BODY" in *warnings*) h_fail "deploy $f: unexpected warnings: $H_BODY" ;; esac ;;
    sub-instant)
        w=$(printf '%s' "$H_BODY" | h_json 'len(j["warnings"])')
        h_assert_eq "$w" 3 "warnings deploying sub-instant (sub-compute v1, sub-compute, sub-not-deployed)"
        case "$H_BODY" in *"node 'missing' calls process 'sub-not-deployed', which is not deployed"*) ;;
        *) h_fail "deploy warning: $H_BODY" ;; esac ;;
    esac
done

# ---- happy path, two levels: parent -> middle -> leaf ------------------------------------------
p=$(h_start sub-parent '{"applicant": {"id": "c-42"}}')
m=$(child "$p")
l=$(child "$m")
h_assert_eq "$(view "$m" | h_json parentId)" "$p" "middle's parentId"
h_assert_eq "$(view "$l" | h_json parentId)" "$m" "leaf's parentId"
h_assert_eq "$(view "$l" | h_json 'j["data"]')" '{"customer": "c-42"}' "leaf input (mapped)"
h_assert_eq "$(view "$m" | h_json 'j["data"]["applicant"]["id"]')" "c-42" "middle input (all data copied)"
h_assert_eq "$(view "$p" | h_json 'j["tokens"][0]["state"]')" WAITING_SUBPROCESS "parent token"
answer "$l" '{"score": 710}'
h_wait_state "$p" FINISHED 20
h_assert_eq "$(view "$l" | h_json state)" FINISHED "leaf state"
h_assert_eq "$(view "$m" | h_json state)" FINISHED "middle state"
h_assert_eq "$(view "$p" | h_json 'j["data"]["result"]["score"]')" 710 "score mapped up two levels"
h_assert_eq "$(view "$p" | h_json 'j["data"]["middle"]["score"]')" 710 "keyName holds the child's data"
case "$(states "$p")" in
*"SUBPROCESS_STARTED@call_middle SUBPROCESS_COMPLETED@call_middle"*"FINISHED@approved"*) ;;
*) h_fail "parent history: $(states "$p")" ;;
esac
h_log "ok: parent -> middle -> leaf, input and output mapped, parent finished at 'approved'"

# ---- nested failure: the leaf fails; middle has no error path; parent takes errorNext ---------
p=$(h_start sub-parent '{"applicant": {"id": "c-43"}}')
m=$(child "$p")
l=$(child "$m")
answer "$l" '{"errorMessage": "bureau unavailable"}'
h_wait_state "$p" FINISHED 20
h_assert_eq "$(view "$l" | h_json error)" "scoring failed: bureau unavailable" "leaf error"
h_assert_eq "$(view "$m" | h_json state)" FAILED "middle state"
merr=$(view "$m" | h_json error)
h_assert_eq "$merr" "subprocess 'call_leaf' (instance $l of 'sub-leaf') failed: scoring failed: bureau unavailable" "middle error"
case "$(states "$p")" in
*"SUBPROCESS_FAILED@call_middle"*"FINISHED@rejected"*) ;;
*) h_fail "parent did not take errorNext: $(states "$p")" ;;
esac
h_assert_eq "$(view "$p" | h_json 'j["data"]["middle"]["errorMessage"]')" "$merr" "data.middle.errorMessage"
h_log "ok: nested failure routed to the parent's errorNext with the child's reason"

# ---- nested failure without any error path: every level fails, the reason names the chain ------
s=$(h_start sub-strict '{"applicant": {"id": "c-44"}}')
m=$(child "$s")
l=$(child "$m")
answer "$l" '{"errorMessage": "no such customer"}'
h_wait_state "$s" FAILED 20
h_assert_eq "$(view "$s" | h_json error)" "subprocess 'call_middle' (instance $m of 'sub-middle') failed: subprocess 'call_leaf' (instance $l of 'sub-leaf') failed: scoring failed: no such customer" "top-level error"
h_log "ok: nested failure without error paths failed all three, the reason names each level"

# ---- children that end at once; a pinned version; a key not deployed ---------------------------
h_req POST /v1/processes/sub-instant/start '{"n": 7}'
[ "$H_STATUS" = 201 ] || h_fail "start sub-instant: HTTP $H_STATUS $H_BODY"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json state)" FINISHED "instant parent state in the start answer"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["data"]["v1"]')" "v1 of 7" "pinned version 1"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["data"]["latest"]')" "v2 of 7" "latest version"
h_assert_eq "$(printf '%s' "$H_BODY" | h_json 'j["data"]["missing"]["errorMessage"]')" \
    "no process definition with key 'sub-not-deployed' is deployed" "missing child"
h_log "ok: two children that end at once ran in the start's own transaction (v1 pinned, v2 latest); a missing key took errorNext"

# ---- a call with a responseTimeout: the child is cancelled and the parent takes timeoutNext ----
t=$(h_start sub-timeout '{"id": "c-47"}')
l=$(child "$t")
h_wait_state "$t" FINISHED 10
h_wait_state "$l" TERMINATED 10
case "$(states "$t")" in *"SUBPROCESS_STARTED@call_leaf SUBPROCESS_TIMED_OUT@call_leaf FINISHED@gave_up") ;;
*) h_fail "timed-out call: $(states "$t")" ;; esac
h_req POST "/v1/instances/$l/messages" '{"node": "wait", "body": {"score": 1}}'
h_assert_eq "$H_STATUS" 409 "a reply to the cancelled child"
h_log "ok: a call past its responseTimeout cancelled the child and took timeoutNext"

# ---- cancelling a parent cancels its running child ---------------------------------------------
p=$(h_start sub-parent '{"applicant": {"id": "c-45"}}')
m=$(child "$p")
l=$(child "$m")
h_req POST "/v1/instances/$p/cancel" '{"reason": "customer withdrew"}'
h_assert_eq "$H_STATUS" 200 "cancel status"
h_wait_state "$m" TERMINATED 10
h_wait_state "$l" TERMINATED 10
case "$(states "$l")" in *"TERMINATED@wait"*) ;; *) h_fail "leaf history: $(states "$l")" ;; esac
h_log "ok: cancelling the parent cancelled middle and leaf"

# ---- SIGKILL while the leaf waits: after the restart the chain completes ------------------------
p=$(h_start sub-parent '{"applicant": {"id": "c-46"}}')
m=$(child "$p")
l=$(child "$m")
h_flowd_kill
h_flowd_start
h_assert_eq "$(view "$p" | h_json 'j["tokens"][0]["subprocessId"]')" "$m" "parent still waits for middle"
answer "$l" '{"score": 655}'
h_wait_state "$p" FINISHED 20
h_assert_eq "$(view "$p" | h_json 'j["data"]["result"]["score"]')" 655 "score after restart"
n=$(view "$p" | h_json '[h["state"] for h in j["history"]].count("SUBPROCESS_STARTED")')
h_assert_eq "$n" 1 "middle started once"
h_log "ok: a SIGKILL while the leaf waited lost nothing; the parent finished once"

# ---- deploy-time errors -------------------------------------------------------------------------
h_req POST /v1/definitions/validate '{"key": "bad", "nodes": [{"id": "s", "type": "start", "next": "c"},
  {"id": "c", "type": "subprocess", "next": "e"}, {"id": "e", "type": "end"}]}'
h_assert_eq "$H_STATUS" 400 "validate status"
case "$H_BODY" in *"node 'c': subprocess node has no \\\"process\\\""*) ;; *) h_fail "no-process error: $H_BODY" ;; esac
h_req POST /v1/definitions/validate '{"key": "bad", "nodes": [{"id": "s", "type": "start", "next": "c"},
  {"id": "c", "type": "subprocess", "process": "x", "input": {"a": 1}, "next": "e"}, {"id": "e", "type": "end"}]}'
case "$H_BODY" in *"node 'c': input 'a': both sides must be dotted paths"*) ;; *) h_fail "bad input error: $H_BODY" ;; esac
h_req POST /v1/definitions/validate '{"key": "bad", "nodes": [{"id": "s", "type": "start", "next": "c"},
  {"id": "c", "type": "subprocess", "process": "x", "timeoutNext": "e", "next": "e"}, {"id": "e", "type": "end"}]}'
case "$H_BODY" in *"node 'c': \\\"timeoutNext\\\" needs a \\\"responseTimeout\\\""*) ;; *) h_fail "timeoutNext error: $H_BODY" ;; esac
h_log "ok: a subprocess without a process or with a bad mapping is refused at deploy"

# ---- flowctl start --version: a pinned version, the latest, a missing one ----------------------
fc() { "$FLOWD_BUILD/flowctl" --server "$H_URL" "$@"; }
out=$(fc --json start sub-compute --version 1 --data '{"x": 3}') || h_fail "flowctl start --version 1: $out"
h_assert_eq "$(printf '%s' "$out" | h_json 'j["data"]["y"]')" "v1 of 3" "flowctl start --version 1"
out=$(fc start sub-compute --data '{"x": 3}') || h_fail "flowctl start: $out"
case "$out" in "started sub-compute instance "*", FINISHED, version 2") ;; *) h_fail "flowctl start printed: $out" ;; esac
rc=0
out=$(fc start sub-compute --version 9 2>&1) || rc=$?
h_assert_eq "$rc" 1 "flowctl start --version 9 exit code"
case "$out" in *"has no version 9"*) ;; *) h_fail "flowctl start --version 9 printed: $out" ;; esac
rc=0
out=$(fc start sub-compute --version x 2>&1) || rc=$?
h_assert_eq "$rc" 2 "flowctl start --version x exit code"
h_log "ok: flowctl start --version N starts that version; a missing version is refused by name"
