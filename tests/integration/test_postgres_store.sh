#!/bin/bash
# test_postgres_store.sh - flowd on the PostgreSQL store, end to end.
# A private PostgreSQL server (initdb in the test dir, trust auth, 127.0.0.1 on a free port,
# fsync off) holds the store. Part 1: 200 instances of customer-onboarding run through the C
# connector and all finish exactly once, and the rows are in PostgreSQL (no SQLite file). Part 2:
# instances wait (connector stopped), flowd restarts on the same database, they are recovered
# as waiting and finish once the connector runs again.
# Without the PostgreSQL server binaries: prints SKIP and exits 0 (non-zero when CI is set).
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

N=${N:-200}
N2=5
LOAD() { $PY "$FLOWD_SRC/tests/lib/load.py" --url "$H_URL" "$@"; }

. "$FLOWD_SRC/tests/lib/pg.sh"
pg_find_bin || pg_skip test_postgres_store

h_setup
trap 'rc=$?; pg_stop; (exit $rc); h_teardown' EXIT
t0=$(date +%s.%N)
pg_start "$H_DIR/pg"
h_log "postgresql on 127.0.0.1:$PG_PORT in $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?') s"
DSN=$PG_DSN
PSQL() { pg_psql "$1"; }
PG_ARGS=(--set store.type=postgresql --set "store.postgresql.dsn=$DSN")

# ---- part 1: N instances through the C connector -------------------------------------------
h_flowd_start "${PG_ARGS[@]}"
h_deploy "$FLOWD_SRC/examples/processes/customer-onboarding.json"
h_legacy_start
h_connector_c_start
t1=$(date +%s)
LOAD start --key customer-onboarding --count "$N" --threads 4 --data '{"customerId": {i}}' \
    --out "$H_DIR/ids" || h_fail "starting $N instances"
LOAD wait --ids "$H_DIR/ids" --state FINISHED --timeout 45 || h_fail "not all $N finished"
LOAD check --ids "$H_DIR/ids" --state FINISHED || h_fail "histories (exactly once)"
h_log "part 1: $N instances finished in $(($(date +%s) - t1)) s"
[ ! -e "$H_DATA/flowd.db" ] || h_fail "a SQLite database was created with store.type=postgresql"
n=$(PSQL "SELECT count(*) FROM instances WHERE state = 'FINISHED'")
[ "$n" = "$N" ] || h_fail "PostgreSQL holds $n FINISHED instances, expected $N"
v=$(PSQL "SELECT max(version) FROM schema_version")
[ "$v" -ge 2 ] || h_fail "schema_version is '$v'"
unsent=$(PSQL "SELECT count(*) FROM outbox WHERE sent_ms IS NULL")
h_log "part 1 ok: $n FINISHED rows in PostgreSQL, schema version $v, $unsent unsent outbox rows"

# ---- part 2: waiting instances survive a restart -------------------------------------------
h_stop_pid "$H_CONN_C_PID"
LOAD start --key customer-onboarding --count $N2 --threads 2 --data '{"customerId": {i}}' \
    --out "$H_DIR/ids2" || h_fail "starting $N2 instances"
LOAD wait --ids "$H_DIR/ids2" --state STARTED --token wait_customer:WAITING_MESSAGE --timeout 10 ||
    h_fail "instances are not waiting before the restart"
h_log "SIGTERM with $N2 instances waiting"
h_flowd_stop
h_flowd_start "${PG_ARGS[@]}"
grep -q "recovered 1 definition version(s), $N2 waiting instance(s)" "$H_FLOWD_LOG" ||
    h_fail "restart log does not report $N2 waiting instances: $(grep recovered "$H_FLOWD_LOG")"
LOAD wait --ids "$H_DIR/ids2" --state STARTED --token wait_customer:WAITING_MESSAGE --timeout 0 ||
    h_fail "instances are not waiting after the restart"
h_connector_c_start
LOAD wait --ids "$H_DIR/ids2" --state FINISHED --timeout 30 || h_fail "part 2: not all finished"
LOAD check --ids "$H_DIR/ids2" --state FINISHED || h_fail "part 2: histories"
n=$(PSQL "SELECT count(*) FROM instances WHERE state = 'FINISHED'")
[ "$n" = "$((N + N2))" ] || h_fail "PostgreSQL holds $n FINISHED instances, expected $((N + N2))"
h_log "part 2 ok: $N2 waiting instances resumed after the restart and finished exactly once"
h_flowd_stop
