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

PG_BIN=$(pg_config --bindir 2>/dev/null || true)
if [ ! -x "$PG_BIN/initdb" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
if [ ! -x "$PG_BIN/initdb" ]; then
    echo "SKIP: test_postgres_store: no PostgreSQL server binaries (install the postgresql package: scripts/install-deps)"
    [ -z "${CI:-}" ] || exit 1
    exit 0
fi

h_setup
PG_DIR=$H_DIR/pg
PG_PORT=$(h_free_port)
PG_AS=()
mkdir -p "$PG_DIR"
if [ "$(id -u)" = 0 ]; then
    # initdb and postgres refuse to run as root
    chown postgres: "$PG_DIR"
    chmod o+x "$H_DIR" # traverse only
    PG_AS=(runuser -u postgres --)
fi
pg_stop() {
    [ -f "$PG_DIR/data/postmaster.pid" ] || return 0
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
}
trap 'rc=$?; pg_stop; (exit $rc); h_teardown' EXIT

t0=$(date +%s.%N)
"${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U flowd --no-sync -E UTF8 --locale=C \
    >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; h_fail "initdb"; }
"${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
    -o "-k $PG_DIR -c listen_addresses=127.0.0.1 -p $PG_PORT -c fsync=off" start \
    >"$PG_DIR/pg_ctl.log" 2>&1 || { cat "$PG_DIR/pg_ctl.log" "$PG_DIR/server.log" >&2; h_fail "pg_ctl start"; }
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U flowd flowd || h_fail "createdb"
h_log "postgresql on 127.0.0.1:$PG_PORT in $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?') s"
DSN="host=127.0.0.1 port=$PG_PORT user=flowd dbname=flowd"
PSQL() { "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U flowd -d flowd -Atqc "$1"; }
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
