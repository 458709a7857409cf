#!/usr/bin/env bash
# End-to-end benchmark: start -> send -> C connector -> legacy HTTP stub -> reply -> gateway -> end,
# on the embedded Kafka and SQLite, closed loop. Prints one JSON line per concurrency level.
#
# usage: bench/e2e.sh [BUILD_DIR] [COUNT] [CONCURRENCY...]   (defaults: build 2000 1 16 64)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
COUNT=${2:-2000}
shift 2 2>/dev/null || shift $#
LEVELS=${*:-1 16 64}
export FLOWD_SRC=$SRC FLOWD_BUILD=$BUILD
H_ALLOW_ERRORS=0
. "$SRC/tests/lib/harness.sh"

h_setup
h_legacy_start
for k in $LEVELS; do
    rm -rf "$H_DATA"
    # shellcheck disable=SC2086
    h_flowd_start ${FLOWD_BENCH_ARGS:-}
    h_connector_c_start
    h_deploy "$SRC/examples/processes/customer-onboarding.json"
    # warm-up: one instance through, so topics and the consumer group are settled
    id=$(h_start customer-onboarding '{"customerId": 1}')
    h_wait_state "$id" FINISHED 60
    n=$COUNT
    [ "$k" -gt 1 ] || n=$((COUNT / 10))
    $PY "$SRC/bench/e2e_load.py" --url "$H_URL" --db "$H_DATA/flowd.db" \
        --key customer-onboarding --count "$n" --concurrency "$k"
    h_stop_pid "$H_CONN_C_PID"
    h_flowd_stop
done
