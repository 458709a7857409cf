#!/bin/bash
# test_receive_timeouts.sh - a receive node that gets no reply: its request is re-sent with the
# same messageId, the wait doubling each time, then the instance takes the timeout path; a reply
# after that is dead-lettered as `late`. Without a timeout path the token becomes an INCIDENT,
# which a reply still resolves. A timeout that falls due while flowd is down fires after restart.
# No instance is cached between transactions here (engine.cache.max-instances=0): every timeout
# is found in the store.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

P=$FLOWD_SRC/tests/integration/processes
REQ=ai.flowx.dev.connector.silent.in.v1
REPLY=ai.flowx.dev.engine.receive.silent.v1
history() { h_http GET "/v1/instances/$1" | h_json '[h["state"] + "@" + h["node"] for h in j["history"]]'; }

# requests on the request topic for instance $1: lines "messageId"
requests_of() {
    kcat -b "$H_BOOTSTRAP" -C -t $REQ -e -o beginning -f '%k|%h\n' 2>/dev/null |
        awk -F'|' -v id="$1" '$1 == id { print $2 }' | tr ',' '\n' | sed -n 's/^messageId=//p'
}

h_setup
h_flowd_start --set engine.cache.max-instances=0
for f in timeout-path timeout-incident timeout-slow; do h_deploy "$P/$f.json"; done

# ---- re-sends, then the timeout path ------------------------------------------------------------
a=$(h_start timeout-path '{"n": 1}')
h_wait_state "$a" FINISHED 15
hist=$(history "$a")
h_log "history: $hist"
case "$hist" in *'"MESSAGE_RESENT@wait", "MESSAGE_RESENT@wait", "MESSAGE_RESPONSE_TIMED_OUT@wait", "FINISHED@gave_up"'*) ;;
*) h_fail "instance $a: expected two re-sends then the timeout path, got $hist" ;; esac
# the connector saw the same request three times, with one messageId
for i in $(seq 1 50); do
    [ "$(requests_of "$a" | wc -l)" -ge 3 ] && break
    sleep 0.1
done
ids=$(requests_of "$a" | sort | uniq -c)
h_log "messageIds sent for $a: $ids"
[ "$(requests_of "$a" | wc -l)" = 3 ] || h_fail "expected 3 sends of the request, got: $ids"
[ "$(requests_of "$a" | sort -u | wc -l)" = 1 ] || h_fail "re-sends changed the messageId: $ids"
# waits doubled: 0.4 s, 0.8 s, 1.6 s (so the timeout came no sooner than 2.8 s after the start)
span=$(h_http GET "/v1/instances/$a" | h_json '(lambda h: __import__("datetime").datetime.fromisoformat(h[-1]["at"].replace("Z","+00:00")) - __import__("datetime").datetime.fromisoformat(h[0]["at"].replace("Z","+00:00")))(j["history"]).total_seconds()')
$PY -c "import sys; sys.exit(0 if 2.7 <= $span <= 6 else 1)" || h_fail "timeout path after ${span}s, expected about 2.8 s"

# a reply after the timeout path: dead-lettered as late, the instance untouched
mid=$(requests_of "$a" | head -1)
printf '{"ok": true}' | kcat -b "$H_BOOTSTRAP" -P -t $REPLY -k "$a" -H "processInstanceId=$a" \
    -H "messageId=$mid" -H destinationId=wait
for i in $(seq 1 100); do
    kcat -b "$H_BOOTSTRAP" -C -t ai.flowx.dev.engine.dlq.v1 -e -o beginning -f '%h\n' 2>/dev/null |
        grep -q "messageId=$mid.*reason=late\|reason=late.*messageId=$mid" && break
    sleep 0.2
done
kcat -b "$H_BOOTSTRAP" -C -t ai.flowx.dev.engine.dlq.v1 -e -o beginning -f '%h\n' 2>/dev/null |
    grep "messageId=$mid" | grep -q 'reason=late' || h_fail "the late reply was not dead-lettered as late"
[ "$(history "$a")" = "$hist" ] || h_fail "the late reply changed instance $a"

# ---- no timeout path: an incident, resolved by a reply --------------------------------------------
b=$(h_start timeout-incident '{"n": 2}')
for i in $(seq 1 100); do
    tok=$(h_http GET "/v1/instances/$b" | h_json '[t["state"] for t in j["tokens"]]')
    [ "$tok" = '["INCIDENT"]' ] && break
    sleep 0.1
done
[ "$tok" = '["INCIDENT"]' ] || h_fail "instance $b: token is $tok, expected an INCIDENT"
grep -q "instance $b: incident at node 'wait'" "$H_FLOWD_LOG" || h_fail "the incident is not logged"
mid=$(requests_of "$b" | head -1)
printf '{"ok": true}' | kcat -b "$H_BOOTSTRAP" -P -t $REPLY -k "$b" -H "processInstanceId=$b" \
    -H "messageId=$mid" -H destinationId=wait
h_wait_state "$b" FINISHED 15

# ---- due while flowd is down: fires right after the restart ---------------------------------------
c=$(h_start timeout-slow '{"n": 3}')
h_flowd_stop
sleep 2.5
h_flowd_start --set engine.cache.max-instances=0
h_wait_state "$c" FINISHED 5
case "$(history "$c")" in *'MESSAGE_RESPONSE_TIMED_OUT@wait'*'FINISHED@gave_up'*) ;;
*) h_fail "instance $c did not time out after the restart: $(history "$c")" ;; esac
h_log "ok: re-sends keep the messageId and back off, the timeout path and late replies, incidents, and timers across a restart"
