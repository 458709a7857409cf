#!/bin/bash
# test_retention.sh - the outbox, dead letters and inbox do not grow without end: acknowledged
# messages of ended instances, old dead letters and old inbox keys are deleted at their retention,
# while the requests of waiting instances stay (a restart or a timeout may re-send them).
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

DB() { sqlite3 "$H_DATA/flowd.db" "$1"; }
LOAD() { $PY "$FLOWD_SRC/tests/lib/load.py" --url "$H_URL" "$@"; }

h_setup
h_flowd_start --set engine.retention.check-interval-ms=300 --set engine.retention.outbox-ms=1000 \
    --set engine.retention.dead-letters-ms=4000 --set engine.retention.inbox-ms=1000
h_deploy "$FLOWD_SRC/examples/processes/customer-onboarding.json"
h_legacy_start
h_connector_c_start
LOAD start --key customer-onboarding --count 20 --threads 4 --data '{"customerId": {i}}' \
    --out "$H_DIR/done" || h_fail "starting instances"
LOAD wait --ids "$H_DIR/done" --state FINISHED --timeout 60 || h_fail "instances did not finish"
h_stop_pid "$H_CONN_C_PID"
# one instance left waiting (no connector now), one dead letter
w=$(h_start customer-onboarding '{"customerId": 5}')
printf 'not json' | kcat -b "$H_BOOTSTRAP" -P -t ai.flowx.dev.engine.receive.customer.v1 -k x
for i in $(seq 1 50); do
    [ "$(DB "SELECT count(*) FROM outbox WHERE topic = 'ai.flowx.dev.engine.dlq.v1'")" -ge 1 ] && break
    sleep 0.1
done
[ "$(DB "SELECT count(*) FROM inbox")" -ge 20 ] || h_fail "the inbox should hold the consumed replies"

sleep 2.5 # past the outbox and inbox retention, before the dead letters'
ended=$(DB "SELECT count(*) FROM outbox o JOIN instances i ON i.id = o.instance_id WHERE i.state = 'FINISHED' AND o.topic <> 'ai.flowx.dev.engine.dlq.v1'")
h_assert_eq "$ended" 0 "outbox rows of finished instances after their retention"
h_assert_eq "$(DB "SELECT count(*) FROM outbox WHERE instance_id = $w")" 1 "the waiting instance's request"
h_assert_eq "$(DB "SELECT count(*) FROM outbox WHERE topic = 'ai.flowx.dev.engine.dlq.v1'")" 1 "young dead letter"
h_assert_eq "$(DB "SELECT count(*) FROM inbox WHERE seen_ms < (strftime('%s','now') * 1000 - 2000)")" 0 "old inbox keys"
sleep 2.5 # past the dead letters' retention (counted from the delivery report, a bit later
# than the write on a loaded machine: allow a few seconds more)
for i in $(seq 1 50); do
    [ "$(DB "SELECT count(*) FROM outbox WHERE topic = 'ai.flowx.dev.engine.dlq.v1'")" = 0 ] && break
    sleep 0.1
done
h_assert_eq "$(DB "SELECT count(*) FROM outbox WHERE topic = 'ai.flowx.dev.engine.dlq.v1'")" 0 "old dead letter"
h_assert_eq "$(DB "SELECT count(*) FROM outbox WHERE instance_id = $w")" 1 "the waiting instance's request, still"
h_log "ok: acknowledged messages, dead letters and inbox keys are trimmed at their retention; waiting instances keep their requests"
