#!/usr/bin/env bash
# sdk_bench.sh - what the connector SDK costs: round trips per second through an echo
# connector built on the SDK (examples/connectors/sdk-echo) against a plain librdkafka echo
# loop (sdk_bench raw-echo), on the same mock cluster, in the same run, alternating, best of
# ROUNDS. Prints one JSON line per run and the ratio sdk/raw.
#
# usage: bench/sdk_bench.sh [BUILD_DIR] [COUNT] [WINDOW] [ROUNDS]   (defaults: build 20000 64 2)
# Use a Release build without sanitizers for numbers worth quoting:
#   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && cmake --build build-rel -j
#   bench/sdk_bench.sh build-rel
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
COUNT=${2:-20000}
WINDOW=${3:-64}
ROUNDS=${4:-2}
BENCH=$BUILD/bench/sdk_bench
ECHO=$BUILD/examples/sdk-echo-connector
[ -x "$BENCH" ] && [ -x "$ECHO" ] || { echo "build $BUILD first (targets sdk_bench sdk-examples)" >&2; exit 1; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}

DIR=$(mktemp -d /tmp/flowd-sdk-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$BENCH" cluster "$DIR/bootstrap" &
PIDS+=($!)
for _ in $(seq 1 50); do [ -s "$DIR/bootstrap" ] && break; sleep 0.1; done
BS=$(tr -d '[:space:]' <"$DIR/bootstrap")

run() { # KIND ROUND -> prints round trips/s
    local kind=$1 n=$2 in="bench.$1.$2.in" out="ai.flowx.dev.engine.receive.bench.$1.$2.v1" pid
    if [ "$kind" = raw ]; then
        "$BENCH" raw-echo "$BS" "$in" "$out" &
    else
        "$ECHO" --bootstrap "$BS" --in "$in" --out "$out" --group "bench-sdk-$n" \
            --set handle.signals=true &
    fi
    pid=$!
    local line
    line=$("$BENCH" load "$BS" "$in" "$out" "$COUNT" "$WINDOW")
    kill -TERM "$pid"
    wait "$pid" || true
    echo "{\"connector\": \"$kind\", \"round\": $n, ${line#\{}" >&2
    printf '%s' "$line" | sed 's/.*"round_trips_per_s": \([0-9]*\).*/\1/'
}

best_raw=0
best_sdk=0
for r in $(seq 1 "$ROUNDS"); do
    v=$(run raw "$r"); [ "$v" -gt "$best_raw" ] && best_raw=$v
    v=$(run sdk "$r"); [ "$v" -gt "$best_sdk" ] && best_sdk=$v
done
awk -v s="$best_sdk" -v r="$best_raw" -v c="$COUNT" -v w="$WINDOW" 'BEGIN {
    printf "{\"raw_rt_per_s\": %d, \"sdk_rt_per_s\": %d, \"sdk_over_raw\": %.3f, \"sdk_cost_pct\": %.1f, \"count\": %d, \"window\": %d}\n",
        r, s, s / r, (1 - s / r) * 100, c, w }'
