#!/bin/bash
# test_early_replies.sh - two requests sent in a row; the second is answered first. Its reply is
# kept (MESSAGE_PARKED) and taken when the instance reaches its receive node, so the instance
# finishes with both answers. A kept reply that is never taken goes to the dead-letter topic with
# reason `expired` (engine.early-reply-ttl-ms).
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

REQ=ai.flowx.dev.connector.early.in.v1
REPLY=ai.flowx.dev.engine.receive.early.v1

# reply INSTANCE WHICH(a|b) BODY: answers the instance's request `which`, copying its headers
reply() {
    local line hdrs=()
    for i in $(seq 1 50); do
        line=$(kcat -b "$H_BOOTSTRAP" -C -t $REQ -e -o beginning -f '%k|%h|%s\n' 2>/dev/null |
            awk -F'|' -v id="$1" -v w="\"which\": \"$2\"" '$1 == id && index($3, w) { print $2 }' |
            head -1)
        [ -n "$line" ] && break
        sleep 0.1
    done
    [ -n "$line" ] || h_fail "no request $2 of instance $1 on $REQ"
    local IFS=,
    for h in $line; do hdrs+=(-H "$h"); done
    printf '%s' "$3" | kcat -b "$H_BOOTSTRAP" -P -t $REPLY -k "$1" "${hdrs[@]}"
}
states() { h_http GET "/v1/instances/$1" | h_json '[h["state"] + "@" + h["node"] for h in j["history"]]'; }

h_setup
h_flowd_start --set engine.early-reply-ttl-ms=4000
h_deploy "$FLOWD_SRC/tests/integration/processes/two-in-a-row.json"

# ---- B answered before A: kept, then taken ------------------------------------------------------
x=$(h_start two-in-a-row '{}')
reply "$x" b '{"v": "second"}'
for i in $(seq 1 100); do
    case "$(states "$x")" in *MESSAGE_PARKED@wait_b*) break ;; esac
    sleep 0.1
done
case "$(states "$x")" in *MESSAGE_PARKED@wait_b*) ;; *) h_fail "the early reply was not kept: $(states "$x")" ;; esac
reply "$x" a '{"v": "first"}'
h_wait_state "$x" FINISHED 15
data=$(h_http GET "/v1/instances/$x" | h_json 'j["data"]')
h_assert_eq "$data" '{"a": {"v": "first"}, "b": {"v": "second"}}' "instance data"

# ---- a kept reply that is never taken expires to the dead-letter topic ---------------------------
y=$(h_start two-in-a-row '{}')
reply "$y" b '{"v": "too early"}'
for i in $(seq 1 100); do
    n=$(kcat -b "$H_BOOTSTRAP" -C -t ai.flowx.dev.engine.dlq.v1 -e -o beginning -f '%k|%h\n' \
        2>/dev/null | grep "^$y|" | grep -c 'reason=expired' || true)
    [ "$n" -ge 1 ] && break
    sleep 0.2
done
[ "$n" = 1 ] || h_fail "the expired early reply of instance $y is not on the dead-letter topic once ($n)"
case "$(states "$y")" in *MESSAGE_EXPIRED*) ;; *) h_fail "no MESSAGE_EXPIRED row: $(states "$y")" ;; esac
reply "$y" a '{"v": "first"}'
for i in $(seq 1 100); do
    tok=$(h_http GET "/v1/instances/$y" | h_json '[t["node"] + ":" + t["state"] for t in j["tokens"]]')
    [ "$tok" = '["wait_b:WAITING_MESSAGE"]' ] && break
    sleep 0.1
done
h_assert_eq "$tok" '["wait_b:WAITING_MESSAGE"]' "after the expiry the instance waits for B again"
h_log "ok: an early reply is kept and taken in order; one never taken expires to the dead-letter topic"
