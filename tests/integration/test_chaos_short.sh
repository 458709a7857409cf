#!/bin/bash
# test_chaos_short.sh - the short crash test (the long one is `make chaos`): 300 instances of three
# processes (one send/receive, two sends in a row, gateway routing) run through the C connector
# while flowd is SIGKILLed 5 times - at random moments and at store crash points (batch commit,
# outbox writes, mark-sent after publishing) - and the connector once, with a standalone Kafka
# cluster outliving flowd. Passes only when every instance completed, no transition is in the
# history twice, no connector got one messageId for two instances or two messageIds for one send.
# See tests/chaos/chaos.py for the checks; CHAOS_SEED=N replays a run.
set -euo pipefail
FLOWD_SRC=${FLOWD_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
FLOWD_BUILD=${FLOWD_BUILD:-$FLOWD_SRC/build}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=66}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

out=$(mktemp /tmp/flowd-chaos-short.XXXXXX)
trap 'rm -f "$out"' EXIT
seed=${CHAOS_SEED:-$((RANDOM * 7 + SECONDS))}
rc=0
/usr/bin/python3 "$FLOWD_SRC/tests/chaos/chaos.py" --build "$FLOWD_BUILD" --seed "$seed" \
    --instances 300 --kills 5 --seconds 25 --connector-kills 1 --drain-timeout 60 |
    tee "$out" || rc=$?
last=$(tail -n 1 "$out")
re='^chaos: instances=([0-9]+) completed=([0-9]+) lost=0 duplicated=0 kills=([0-9]+)$'
if [ $rc -ne 0 ] || ! [[ $last =~ $re ]] || [ "${BASH_REMATCH[1]}" != "${BASH_REMATCH[2]}" ] ||
    [ "${BASH_REMATCH[1]}" -lt 300 ] || [ "${BASH_REMATCH[3]}" -lt 5 ]; then
    echo "test_chaos_short: FAILED (seed $seed, exit $rc): $last" >&2
    exit 1
fi
echo "test_chaos_short: ok (seed $seed)"
