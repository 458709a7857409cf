# Thin wrapper over CMake (see STYLE.md). `make demo` and `make test` install what they need.
BUILD      ?= build
TEST_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps demo test unit integration chaos multinode tsan format format-check clean fuzz bench \
	bench-multinode

all:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

deps:
	@scripts/install-deps

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo $(BUILD)

# Unit and integration tests under ASan+UBSan.
test: deps
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DFLOWD_SANITIZE=address,undefined >/dev/null
	@cmake --build $(TEST_BUILD) -j $(JOBS)
	@cd $(TEST_BUILD) && ctest --output-on-failure -j 2 --timeout 600

unit: deps
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DFLOWD_SANITIZE=address,undefined >/dev/null
	@cmake --build $(TEST_BUILD) -j $(JOBS)
	@cd $(TEST_BUILD) && ctest --output-on-failure -L unit

# libFuzzer targets of tests/fuzz/ (clang-14, ASan+UBSan), each run FUZZ_SECONDS on a copy of its
# corpus in build-fuzz/; fails on a crash. `make test` only replays the committed corpus.
FUZZ_SECONDS ?= 60
fuzz:
	@scripts/install-fuzz-deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz

# The long crash test (tests/chaos/chaos.py) against a Release build: 2,000+ instances, 25 SIGKILLs
# of flowd (random moments and store crash points) with a standalone Kafka, 3 more with the embedded
# one, 3 connector kills. Last line: chaos: instances=N completed=N lost=0 duplicated=0 kills=K.
# Knobs: make chaos CHAOS_ARGS="--instances 5000 --kills 50 --seconds 180 --seed 42"
chaos: deps
	@cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-release -j $(JOBS) --target flowd quickstart-connector
	@/usr/bin/python3 tests/chaos/chaos.py --build build-release --instances 2000 --kills 25 \
		--seconds 90 --connector-kills 3 --embedded-kills 3 --kafka-rtt 10 $(CHAOS_ARGS)

# The long multi-node test (tests/multinode/multinode.py) against a Release build: 3 flowd nodes
# on one private PostgreSQL and a standalone Kafka, 5,000 instances started round-robin over the
# nodes, 2 rounds of SIGKILL of a node + re-add. Last line: multinode: nodes=3 instances=N
# completed=N lost=0 duplicated=0 kills=2. Knobs: make multinode MULTINODE_ARGS="--nodes 2 --seed 7"
multinode: deps
	@cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-release -j $(JOBS) --target flowd quickstart-connector
	@/usr/bin/python3 tests/multinode/multinode.py --build build-release --nodes 3 --instances 5000 \
		--kills 2 --seconds 60 $(MULTINODE_ARGS)

# Benchmarks (bench/run.py, docs/benchmarks.md) against a Release build in build-release: end to
# end closed/open loop, SQLite FULL/NORMAL and PostgreSQL (a private server started by run.py),
# 100,000 waiting instances (embedded and external Kafka), the engine core, the raw Kafka/SQLite
# limits and npm's bpmn-engine. Writes bench/results/<date>.json (+ .png), ~5 min.
bench:
	@cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-release -j $(JOBS) --target flowd sdk-examples sdk_bench engine_bench \
		flow_load test_store >/dev/null
	@/usr/bin/python3 bench/run.py --build build-release $(BENCH_ARGS)

# Several nodes on one PostgreSQL (bench/multinode.py): completed instances/s, p50/p99 latency and
# CPU cores per process (flowd nodes, PostgreSQL, Kafka, echo connector, driver) with 1, 2 and 3
# nodes in one run, closed loop. Writes bench/results/multinode-<date>.json, ~2 min.
# Knobs: make bench-multinode BENCH_ARGS="--k 16,64,256 --count 5000"
bench-multinode:
	@cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-release -j $(JOBS) --target flowd sdk-examples >/dev/null
	@/usr/bin/python3 bench/multinode.py --build build-release $(BENCH_ARGS)

# The threaded integration tests under ThreadSanitizer (flowd: loop thread, HTTP workers,
# librdkafka threads). Fails on any report not in tests/tsan.supp.
TSAN_TESTS ?= test_happy_path|test_thousand_instances|test_api_endpoints|test_receive_timeouts|test_early_replies|test_restart|test_subprocess
tsan: deps
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DFLOWD_SANITIZE=thread >/dev/null
	@cmake --build build-tsan -j $(JOBS) --target flowd quickstart-connector flowctl
	@cd build-tsan && TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp halt_on_error=0" \
		ctest --output-on-failure -R '$(TSAN_TESTS)'

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(TEST_BUILD)
