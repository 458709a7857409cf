# harness.sh - shared by tests/integration/test_*.sh and scripts: start and stop the real daemon,
# the fake legacy system and real connector processes, each test in its own temp dir.
#
# Usage: . "$FLOWD_SRC/tests/lib/harness.sh"; h_setup; h_flowd_start; ...; (teardown is a trap)
# Teardown fails the test if the daemon log has ERROR/FATAL lines (unless H_ALLOW_ERRORS=1) or a
# sanitizer report.

set -euo pipefail

FLOWD_SRC=${FLOWD_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
FLOWD_BUILD=${FLOWD_BUILD:-$FLOWD_SRC/build}
PY=/usr/bin/python3
H_PIDS=()
H_FAILED=0
H_ALLOW_ERRORS=${H_ALLOW_ERRORS:-0}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=66}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

h_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
h_fail() {
    h_log "FAIL: $*"
    H_FAILED=1
    exit 1
}

h_free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# h_soft_fail MSG: records a failure and goes on, so that one broken behaviour does not hide the
# next ones; the test fails at teardown (or at h_soft_done) with every recorded message.
H_SOFT_FAILS=()
h_soft_fail() {
    h_log "FAIL (continuing): $*"
    H_SOFT_FAILS+=("$*")
}

# h_soft_done: fails the test now if any h_soft_fail was recorded.
h_soft_done() {
    [ ${#H_SOFT_FAILS[@]} -eq 0 ] && return 0
    h_fail "${#H_SOFT_FAILS[@]} failure(s) recorded (listed below)"
}

h_setup() {
    H_DIR=$(mktemp -d /tmp/flowd-test.XXXXXX)
    H_DATA=$H_DIR/data
    H_FLOWD_RUNS=0
    trap h_teardown EXIT
    h_log "test dir $H_DIR"
}

# Checks one daemon log for errors and sanitizer reports.
h_check_log() {
    local log=$1
    if grep -qE 'AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:|UndefinedBehaviorSanitizer' "$log"; then
        h_log "sanitizer report in $log:"
        grep -E -A20 'AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:' "$log" | head -60 >&2
        return 1
    fi
    if [ "$H_ALLOW_ERRORS" != 1 ] && grep -qE ' (ERROR|FATAL) ' "$log"; then
        h_log "ERROR lines in $log:"
        grep -E ' (ERROR|FATAL) ' "$log" | head -20 >&2
        return 1
    fi
    return 0
}

h_teardown() {
    local rc=$? frc=0
    set +e
    # Not h_flowd_stop: its h_fail would exit in the middle of this trap.
    if [ -n "${H_FLOWD_PID:-}" ]; then
        kill -TERM "$H_FLOWD_PID" 2>/dev/null
        wait "$H_FLOWD_PID" 2>/dev/null || frc=$?
        if [ $frc -ne 0 ]; then
            h_log "flowd (pid $H_FLOWD_PID) exited with status $frc at teardown (crashed earlier?)"
            rc=1
        fi
        H_FLOWD_PID=
    fi
    for pid in "${H_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    sleep 0.3
    for pid in "${H_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for log in "$H_DIR"/flowd.*.log; do
        [ -f "$log" ] || continue
        h_check_log "$log" || rc=1
    done
    if [ ${#H_SOFT_FAILS[@]} -gt 0 ]; then
        for m in "${H_SOFT_FAILS[@]}"; do h_log "recorded failure: $m"; done
        rc=1
    fi
    if [ $rc -ne 0 ] || [ "$H_FAILED" = 1 ]; then
        h_log "test FAILED; last daemon log lines:"
        tail -n 40 "$(ls -t "$H_DIR"/flowd.*.log 2>/dev/null | head -1)" >&2 2>/dev/null
        h_log "files kept in $H_DIR"
        exit 1
    fi
    rm -rf "$H_DIR"
    exit 0
}

# h_flowd_start [extra flowd args...]: starts flowd on a free port (or on $H_PORT_WANT when set),
# waits for "flowd: ready".
h_flowd_start() {
    H_FLOWD_RUNS=$((H_FLOWD_RUNS + 1))
    H_PORT=${H_PORT_WANT:-$(h_free_port)}
    H_URL=http://127.0.0.1:$H_PORT
    H_FLOWD_LOG=$H_DIR/flowd.$H_FLOWD_RUNS.log
    "$FLOWD_BUILD/flowd" --data-dir "$H_DATA" --set http.port="$H_PORT" "$@" \
        >"$H_FLOWD_LOG" 2>&1 &
    H_FLOWD_PID=$!
    local i
    for i in $(seq 1 300); do
        if grep -q '^flowd: ready' "$H_FLOWD_LOG"; then
            H_BOOTSTRAP=$(tr -d '[:space:]' <"$H_DATA/kafka.bootstrap")
            h_log "flowd pid $H_FLOWD_PID on $H_URL, kafka $H_BOOTSTRAP"
            return 0
        fi
        if ! kill -0 "$H_FLOWD_PID" 2>/dev/null; then
            cat "$H_FLOWD_LOG" >&2
            h_fail "flowd exited during startup"
        fi
        sleep 0.1
    done
    cat "$H_FLOWD_LOG" >&2
    h_fail "flowd did not become ready in 30 s"
}

# h_flowd_stop: SIGTERM, wait, expect exit 0.
h_flowd_stop() {
    [ -n "${H_FLOWD_PID:-}" ] || return 0
    kill -TERM "$H_FLOWD_PID" 2>/dev/null || true
    local rc=0
    wait "$H_FLOWD_PID" || rc=$?
    H_FLOWD_PID=
    [ $rc -eq 0 ] || h_fail "flowd exited with $rc after SIGTERM (log: $H_FLOWD_LOG)"
}

# h_flowd_kill: SIGKILL, no cleanup at all.
h_flowd_kill() {
    kill -KILL "$H_FLOWD_PID" 2>/dev/null || true
    wait "$H_FLOWD_PID" 2>/dev/null || true
    H_FLOWD_PID=
}

h_legacy_start() {
    H_LEGACY_PORT=$(h_free_port)
    $PY "$FLOWD_SRC/examples/connectors/legacy_stub.py" --port "$H_LEGACY_PORT" \
        >"$H_DIR/legacy.log" 2>&1 &
    H_PIDS+=($!)
    H_LEGACY_URL=http://127.0.0.1:$H_LEGACY_PORT
    local i
    for i in $(seq 1 100); do
        curl -sf "$H_LEGACY_URL/stats" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    h_fail "legacy stub did not start"
}

# h_connector_c_start [extra args]: the C quickstart connector; sets H_CONN_C_PID.
h_connector_c_start() {
    "$FLOWD_BUILD/examples/quickstart-connector" --bootstrap-file "$H_DATA/kafka.bootstrap" \
        --legacy-url "$H_LEGACY_URL" --log "$H_DIR/connector-c.requests" "$@" \
        >>"$H_DIR/connector-c.log" 2>&1 &
    H_CONN_C_PID=$!
    H_PIDS+=($H_CONN_C_PID)
}

# h_connector_py_start [extra args]: the Python scoring connector; sets H_CONN_PY_PID.
h_connector_py_start() {
    $PY "$FLOWD_SRC/examples/connectors/python/connector.py" \
        --bootstrap-file "$H_DATA/kafka.bootstrap" --legacy-url "$H_LEGACY_URL" \
        --log "$H_DIR/connector-py.requests" "$@" >>"$H_DIR/connector-py.log" 2>&1 &
    H_CONN_PY_PID=$!
    H_PIDS+=($H_CONN_PY_PID)
}

h_stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# h_req METHOD PATH [BODY]: one HTTP request; sets H_STATUS and H_BODY (call it directly, not in
# $(...), or the variables are lost with the subshell).
h_req() {
    local method=$1 path=$2 body=${3:-}
    local out
    if [ $# -ge 3 ]; then
        out=$(curl -s -X "$method" -H 'Content-Type: application/json' --data-binary "$body" \
            -w '\n%{http_code}' "$H_URL$path")
    else
        out=$(curl -s -X "$method" -w '\n%{http_code}' "$H_URL$path")
    fi
    H_STATUS=${out##*$'\n'}
    H_BODY=${out%$'\n'*}
    printf '%s' "$H_STATUS" >"$H_DIR/http.status"
}

# h_http METHOD PATH [BODY]: prints the body and sets H_STATUS. Inside $(...) H_STATUS is lost
# with the subshell: read it back with h_status (e.g. body=$(h_http GET /x); st=$(h_status)).
h_http() {
    h_req "$@"
    printf '%s' "$H_BODY"
}

h_status() { cat "$H_DIR/http.status"; }

h_deploy() {
    h_req POST /v1/definitions "$(cat "$1")"
    case "$H_STATUS" in 200 | 201) ;; *) h_fail "deploy $1: HTTP $H_STATUS $H_BODY" ;; esac
}

# h_start KEY DATA -> prints the instance id
h_start() {
    h_req POST "/v1/processes/$1/start" "$2"
    [ "$H_STATUS" = 201 ] || h_fail "start $1: HTTP $H_STATUS $H_BODY"
    printf '%s' "$H_BODY" | h_json id
}

# h_json EXPR: reads JSON on stdin, prints the Python expression over `j`, e.g. h_json 'j["state"]'
h_json() {
    local expr=$1
    case "$expr" in *'['* | *'('*) ;; *) expr="j[\"$expr\"]" ;; esac
    $PY -c "import json,sys; j=json.load(sys.stdin); v=($expr); print(v if not isinstance(v,(dict,list,bool)) and v is not None else json.dumps(v))"
}

# h_wait_state ID STATE [timeout_s]
h_wait_state() {
    local id=$1 want=$2 timeout=${3:-30} state=""
    local deadline=$((SECONDS + timeout))
    while [ $SECONDS -lt $deadline ]; do
        state=$(h_http GET "/v1/instances/$id" | h_json state 2>/dev/null || true)
        [ "$state" = "$want" ] && return 0
        sleep 0.1
    done
    h_http GET "/v1/instances/$id" >&2
    h_fail "instance $id is $state, not $want, after ${timeout}s"
}

h_assert_eq() {
    [ "$1" = "$2" ] || h_fail "${3:-assertion}: expected '$2', got '$1'"
}
