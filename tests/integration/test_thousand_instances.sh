#!/bin/bash
# test_thousand_instances.sh - 1,000 customer-onboarding instances started concurrently over HTTP
# (keep-alive, several threads) through the C connector: all reach FINISHED within the limit, every
# history has exactly one FINISHED and one MESSAGE_RECEIVED row (no step applied twice), and the
# connector's log shows every request's messageId handled (a duplicate delivery, if any, carries
# the same messageId). Prints the throughput observed. The instance cache is kept at 100, so most
# replies find their instance evicted and read it back from the store.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

N=${N:-1000}
LIMIT=${LIMIT:-60} # seconds for all instances to finish, after the last start

h_setup
h_flowd_start --set engine.cache.max-instances=100
h_deploy "$FLOWD_SRC/examples/processes/customer-onboarding.json"
h_legacy_start
h_connector_c_start

# Let the connector join its group first so the measurement is about flowd, not the rebalance.
warm=$(h_start customer-onboarding '{"customerId": 1}')
h_wait_state "$warm" FINISHED 60

LOAD="$PY $FLOWD_SRC/tests/lib/load.py --url $H_URL"
t0=$(date +%s.%N)
$LOAD start --key customer-onboarding --count "$N" --threads 16 \
    --data '{"customerId": {i}}' --out "$H_DIR/ids" || h_fail "starting $N instances"
$LOAD wait --ids "$H_DIR/ids" --state FINISHED --timeout "$LIMIT" --threads 8 ||
    h_fail "not all $N instances FINISHED within ${LIMIT}s"
t1=$(date +%s.%N)
$PY -c "import sys; n, d = $N, $t1 - $t0; print('throughput: %d instances started and completed in %.2f s = %.0f instances/s' % (n, d, n / d))"

# customerId i: ends in 0 -> not_found, else premium or standard: all three end nodes are legal.
$LOAD check --ids "$H_DIR/ids" --state FINISHED --threads 8 \
    --expect-node premium_welcome --expect-node standard_welcome --expect-node not_found ||
    h_fail "instance histories"

# The connector log: one "<messageId> <instanceId>" line per reply it delivered. Each instance's
# messageId must be there; duplicates are allowed only as the same messageId for the same instance.
kcat -b "$H_BOOTSTRAP" -C -t ai.flowx.dev.connector.customer.in.v1 -e -o beginning \
    -f '%k|%h|%s\n' 2>/dev/null | $PY "$FLOWD_SRC/tests/lib/kcat_parse.py" >"$H_DIR/requests.json"
IDS=$H_DIR/ids REQ=$H_DIR/requests.json CONNLOG=$H_DIR/connector-c.requests $PY -c '
import json, os, sys, collections
e = os.environ
ids = [l.strip() for l in open(e["IDS"]) if l.strip()]
reqs = json.load(open(e["REQ"]))
by_inst = collections.defaultdict(set)
for m in reqs:
    by_inst[m["headers"].get("processInstanceId")].add(m["headers"].get("messageId"))
lines = [l.split() for l in open(e["CONNLOG"]) if l.strip()]
handled = collections.defaultdict(set)
count = collections.Counter()
for mid, pid in lines:
    handled[mid].add(pid)
    count[mid] += 1
problems = []
for iid in ids:
    mids = by_inst.get(iid, set())
    if len(mids) != 1:
        problems.append("instance %s: %d distinct messageIds on the request topic" % (iid, len(mids)))
        continue
    mid = next(iter(mids))
    if mid not in handled:
        problems.append("instance %s: messageId %s not in the connector log" % (iid, mid))
for mid, pids in handled.items():
    if len(pids) != 1:
        problems.append("messageId %s handled for several instances %s" % (mid, sorted(pids)))
dups = sum(c - 1 for c in count.values() if c > 1)
print("connector log: %d lines, %d distinct messageIds, %d duplicate deliveries (same messageId)"
      % (len(lines), len(count), dups))
if problems:
    for p in problems[:10]:
        print("problem:", p, file=sys.stderr)
    sys.exit("%d problems" % len(problems))
' || h_fail "connector log does not match the requests"

echo "ok: $N/$N instances completed exactly once"
