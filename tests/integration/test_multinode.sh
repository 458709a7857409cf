#!/bin/bash
# test_multinode.sh - the short multi-node test (the long one is `make multinode`): 3 flowd nodes
# on one private PostgreSQL and one standalone Kafka cluster, 1,500 instances of the chaos
# processes started round-robin over the nodes' HTTP APIs through the C connector; one node is
# SIGKILLed at 30% of the starts and re-added at 60%. Passes only when every instance finished,
# no step is in a history twice, no messageId went to two instances, the connector answered each
# request once and the outbox is empty. See tests/multinode/multinode.py for the checks;
# MULTINODE_SEED=N replays a run, MULTINODE_ARGS adds options.
# Without the PostgreSQL server binaries: prints SKIP and exits 0 (non-zero when CI is set).
set -euo pipefail
FLOWD_SRC=${FLOWD_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
FLOWD_BUILD=${FLOWD_BUILD:-$FLOWD_SRC/build}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=66}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

. "$FLOWD_SRC/tests/lib/pg.sh"
pg_find_bin || pg_skip test_multinode

N=1500
out=$(mktemp /tmp/flowd-multinode-short.XXXXXX)
trap 'rm -f "$out"' EXIT
seed=${MULTINODE_SEED:-$((RANDOM * 7 + SECONDS))}
rc=0
# shellcheck disable=SC2086
/usr/bin/python3 "$FLOWD_SRC/tests/multinode/multinode.py" --build "$FLOWD_BUILD" --seed "$seed" \
    --nodes 3 --instances $N --kills 1 --seconds 25 --drain-timeout 60 ${MULTINODE_ARGS:-} |
    tee "$out" || rc=$?
last=$(tail -n 1 "$out")
re='^multinode: nodes=3 instances=([0-9]+) completed=([0-9]+) lost=0 duplicated=0 kills=1$'
if [ $rc -ne 0 ] || ! [[ $last =~ $re ]] || [ "${BASH_REMATCH[1]}" != "${BASH_REMATCH[2]}" ] ||
    [ "${BASH_REMATCH[1]}" -lt $N ]; then
    echo "test_multinode: FAILED (seed $seed, exit $rc): $last" >&2
    exit 1
fi
echo "test_multinode: ok (seed $seed)"
