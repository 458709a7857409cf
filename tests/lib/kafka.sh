# kafka.sh - a Kafka cluster that outlives flowd: `flowd kafka` (the mock cluster on its own) with
# its fault-injection console on a fifo. Source after harness.sh and h_setup.
#
#   h_kafka_start [--brokers N]   sets H_KAFKA_BOOTSTRAP and writes $H_DIR/kafka.bootstrap
#   h_kafka_cmd "down 1"          sends one console command, fails the test unless it answers ok

h_kafka_start() {
    mkfifo "$H_DIR/kafka.ctl"
    "$FLOWD_BUILD/flowd" kafka --control --bootstrap-file "$H_DIR/kafka.bootstrap" "$@" \
        <"$H_DIR/kafka.ctl" >"$H_DIR/kafka.out" 2>&1 &
    H_KAFKA_PID=$!
    H_PIDS+=("$H_KAFKA_PID")
    exec {H_KAFKA_FD}>"$H_DIR/kafka.ctl" # keep the console open for the whole test
    local i
    for i in $(seq 1 100); do
        if [ -s "$H_DIR/kafka.bootstrap" ]; then
            H_KAFKA_BOOTSTRAP=$(tr -d '[:space:]' <"$H_DIR/kafka.bootstrap")
            h_log "kafka cluster at $H_KAFKA_BOOTSTRAP"
            return 0
        fi
        sleep 0.1
    done
    cat "$H_DIR/kafka.out" >&2
    h_fail "flowd kafka did not start"
}

h_kafka_cmd() {
    local before
    before=$(grep -c '' "$H_DIR/kafka.out" || true)
    printf '%s\n' "$1" >&"$H_KAFKA_FD"
    local i
    for i in $(seq 1 50); do
        if [ "$(grep -c '' "$H_DIR/kafka.out")" -gt "$before" ]; then
            local answer
            answer=$(tail -n 1 "$H_DIR/kafka.out")
            [ "$answer" = ok ] || h_fail "kafka console: '$1' -> $answer"
            return 0
        fi
        sleep 0.1
    done
    h_fail "kafka console did not answer '$1'"
}
