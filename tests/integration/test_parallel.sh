#!/bin/bash
# test_parallel.sh - a parallel gateway sends two lookups at once to the C connector; each branch
# waits for its own reply (same reply topic, told apart by destinationId); the join goes on when
# both are in, and the gateway after it routes on both answers. 50 instances, each exactly once.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

h_setup
h_flowd_start
h_deploy "$FLOWD_SRC/tests/integration/processes/parallel-lookup.json"
# deployed now so that its reply topic is in the consumer's subscription by the time it is used
# (a topic that appears later is picked up at the next metadata refresh and rebalance: seconds)
h_deploy "$FLOWD_SRC/tests/integration/processes/parallel-fail.json"
h_legacy_start
h_connector_c_start
ids=()
expect_both=0
for i in $(seq 1 50); do
    # customer ids ending in 0 are unknown to the legacy system
    owner=$((i + 1)) guarantor=$((i % 2 ? i * 10 : i * 10 + 1))
    [ $((owner % 10)) != 0 ] && [ $((guarantor % 10)) != 0 ] && expect_both=$((expect_both + 1))
    ids+=("$(h_start parallel-lookup "{\"owner\": $owner, \"guarantor\": $guarantor}")")
done
both=0 missing=0
for id in "${ids[@]}"; do
    h_wait_state "$id" FINISHED 60
    body=$(h_http GET "/v1/instances/$id")
    hist=$(printf '%s' "$body" | h_json '[h["state"] for h in j["history"]]')
    for s in FORKED JOINED FINISHED; do
        n=$(printf '%s' "$hist" | grep -o "\"$s\"" | wc -l)
        [ "$n" = 1 ] || h_fail "instance $id: $s appears $n times: $hist"
    done
    n=$(printf '%s' "$hist" | grep -o '"MESSAGE_RECEIVED"' | wc -l)
    [ "$n" = 2 ] || h_fail "instance $id: $n replies received, expected 2: $hist"
    end=$(printf '%s' "$body" | h_json '[h["node"] for h in j["history"] if h["state"] == "FINISHED"][0]')
    case "$end" in both_found) both=$((both + 1)) ;; missing) missing=$((missing + 1)) ;; esac
done
h_assert_eq "$both" "$expect_both" "instances routed to 'both_found'"
h_assert_eq "$missing" $((50 - expect_both)) "instances routed to 'missing'"
h_log "ok: 50 parallel instances: both lookups sent at once, joined once, routed on both answers"

# ---- a join where one branch fails ---------------------------------------------------------------
# parallel-fail: branches a and b each wait for a reply; an error reply takes that branch's
# errorNext to an error end, which fails the whole instance: the join never completes, the other
# branch's wait is dropped, and its reply, when it comes, is refused (the instance ended).
deliver() { h_req POST "/v1/instances/$1/messages" "{\"node\": \"$2\", \"body\": $3}"; }
# b fails while a still waits
x=$(h_start parallel-fail '{}')
deliver "$x" wait_b '{"errorMessage": "document service down"}'
h_assert_eq "$H_STATUS" 202 "deliver b"
h_wait_state "$x" FAILED 30
h_assert_eq "$(h_http GET "/v1/instances/$x" | h_json error)" "branch b failed: document service down" "error"
h_assert_eq "$(h_http GET "/v1/instances/$x" | h_json 'j["tokens"]')" "[]" "tokens after the failure"
deliver "$x" wait_a '{"score": 1}'
h_assert_eq "$H_STATUS" 409 "a reply for the other branch after the failure"
hist=$(h_http GET "/v1/instances/$x" | h_json '[h["state"] for h in j["history"]]')
case "$hist" in *JOINED*) h_fail "the join completed although a branch failed: $hist" ;; esac
# a arrived at the join first, then b fails
y=$(h_start parallel-fail '{}')
deliver "$y" wait_a '{"score": 1}'
for i in $(seq 1 50); do
    case "$(h_http GET "/v1/instances/$y" | h_json '[t["state"] for t in j["tokens"]]')" in *WAITING_JOIN*) break ;; esac
    sleep 0.1
done
deliver "$y" wait_b '{"errorMessage": "rejected"}'
h_wait_state "$y" FAILED 10
h_assert_eq "$(h_http GET "/v1/instances/$y" | h_json error)" "branch b failed: rejected" "error after a joined"
# both succeed: the join goes on once
z=$(h_start parallel-fail '{}')
deliver "$z" wait_b '{"ok": 1}'
deliver "$z" wait_a '{"ok": 2}'
h_wait_state "$z" FINISHED 10
h_log "ok: a join where one branch fails: the instance FAILED with that branch's reason (before and after the other branch reached the join); the other branch's late reply refused"
