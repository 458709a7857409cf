#!/usr/bin/env bash
# test_sdk_languages.sh - the wire contract from other languages, each connector in a process:
#   - Python (python3-kafka): examples/connectors/python/connector.py in credit-check
#     (approved and rejected paths);
#   - Node.js (kafkajs, installed by npm here into the build dir): examples/connectors/node in
#     sdk-node (a greeting, and a bad request routed through the error path).
# If npm cannot install kafkajs (no network), the Node half prints SKIP and why.
. "$FLOWD_SRC/tests/lib/harness.sh"

h_setup
h_flowd_start
h_legacy_start
end_node() { h_http GET "/v1/instances/$1" | h_json 'j["history"][-1]["node"]'; }

# --- Python
h_connector_py_start
h_deploy "$FLOWD_SRC/examples/processes/credit-check.json"
yes=$(h_start credit-check '{"clientId": "c-1", "amount": 500}')
no=$(h_start credit-check '{"clientId": "c-2", "amount": 50000}')
h_wait_state "$yes" FINISHED 60
h_wait_state "$no" FINISHED 60
h_assert_eq "$(end_node "$yes")" approved "python: small amount approved"
h_assert_eq "$(end_node "$no")" rejected "python: large amount rejected"
h_log "python connector: OK"

# --- Node
NODE_DIR=$FLOWD_BUILD/node-connector
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "SKIP: node/npm not installed: the Node.js connector was not tested" >&2
    exit 0
fi
mkdir -p "$NODE_DIR"
cp "$FLOWD_SRC/examples/connectors/node/package.json" "$FLOWD_SRC/examples/connectors/node/connector.js" "$NODE_DIR/"
if [ ! -d "$NODE_DIR/node_modules/kafkajs" ] &&
    ! (cd "$NODE_DIR" && timeout 120 npm install --no-audit --no-fund >"$H_DIR/npm.log" 2>&1); then
    cat "$H_DIR/npm.log" >&2
    echo "SKIP: 'npm install kafkajs' failed (no registry access?): the Node.js connector was not tested" >&2
    exit 0
fi
node "$NODE_DIR/connector.js" --bootstrap-file "$H_DATA/kafka.bootstrap" -v \
    >"$H_DIR/connector-node.log" 2>&1 &
NODE_PID=$!
H_PIDS+=($NODE_PID)
h_deploy "$FLOWD_SRC/examples/processes/sdk-node.json"
hi=$(h_start sdk-node '{"name": "Ada"}')
bad=$(h_start sdk-node '{"name": 42}')
h_wait_state "$hi" FINISHED 60
h_wait_state "$bad" FINISHED 60
h_assert_eq "$(end_node "$hi")" greeted "node: greeting"
h_assert_eq "$(h_http GET "/v1/instances/$hi" | h_json 'j["data"]["greeting"]["greeting"]')" \
    "Hello, Ada!" "node: reply stored under the keyName"
h_assert_eq "$(end_node "$bad")" failed "node: bad request routed through the error path"
h_stop_pid "$NODE_PID"
h_log "node connector: OK"
