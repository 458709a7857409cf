#!/usr/bin/python3
"""chaos.py - crash test: thousands of instances through real connectors while flowd is SIGKILLed.

A standalone mock Kafka cluster (`flowd kafka`) outlives flowd, as a real cluster does in
production. While a load thread starts instances of three processes (one send/receive; two sends
in a row to the same connector; the customer-onboarding gateway routing), flowd is killed with
SIGKILL and restarted, again and again:

  * at random moments (a timer after it became ready), and
  * at deterministic crash points of the store (FLOWD_STORE_FAULTS, src/store/store_fault.c):
    commit@K/crash (during a batch commit), commit@K/crash-after (committed, offsets not yet),
    outbox_add@K/crash, history_add@K/crash, inbox@K/crash, mark_sent@K/crash (after the outbox
    published, before the rows are marked sent), with a random K.

The C quickstart connector is SIGKILLed and restarted too. Optionally (--embedded-kills) a second
phase kills flowd running its embedded Kafka, which loses every message on each kill.

At the end flowd runs clean until nothing is left to do, and the checks read the SQLite store
(<data-dir>/flowd.db) and the connector's --log file (`<messageId> <processInstanceId>` per
answered request):

  lost        an acknowledged start missing from the store; an instance not FINISHED; a required
              transition missing (STARTED, MESSAGE_SENT per send, MESSAGE_RECEIVED per receive,
              FINISHED at the end node the gateway must pick); a send the connector never saw;
              an outbox row never published
  duplicated  a transition (node, state) present twice in one instance's history; a messageId
              the connector received for two different instances; two different messageIds for
              the same send of the same instance; a messageId the store never sent
  stuck       an instance still STARTED after the drain timeout (counted as lost)

Last line: `chaos: instances=N completed=N lost=0 duplicated=0 kills=K`; exit 0 only when every
instance completed, nothing was lost or duplicated, and at least --kills kills happened.

Usage: chaos.py --build DIR [--instances N] [--kills K] [--seconds S] [--connector-kills C]
                [--embedded-kills E] [--kafka-rtt MS] [--seed X] [--workdir DIR] [--keep]
       chaos.py --check-data DIR [--check-connector-log FILE] [--check-ids FILE]
                (only the checks, over a finished run; used by test_kafka_faults.sh)
Standard library only (plus sqlite3).
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PY = "/usr/bin/python3"

# process key -> (definition file, sends, receives, function data -> expected end node)
PROCESSES = {
    "chaos-single": ("tests/chaos/processes/chaos-single.json", ["ask"], ["wait"],
                     lambda d: "done"),
    "chaos-twice": ("tests/chaos/processes/chaos-twice.json", ["ask_first", "ask_second"],
                    ["wait_first", "wait_second"], lambda d: "done"),
    "customer-onboarding": ("examples/processes/customer-onboarding.json", ["lookup_customer"],
                            ["wait_customer"], lambda d: onboarding_end(d["customerId"])),
}
KEYS = sorted(PROCESSES)

# crash points: (rule template, what it hits)
CRASH_POINTS = [
    "commit@{k}/crash",
    "commit@{k}/crash-after",
    "outbox_add@{k}/crash",
    "history_add@{k}/crash",
    "inbox@{k}/crash",
    "mark_sent@{k}/crash",
    "mark_sent@{k}/crash-after",
]


def onboarding_end(cid):
    """The end node customer-onboarding must reach for this id (see legacy_stub.py)."""
    if cid % 10 == 0:
        return "not_found"
    return "premium_welcome" if sum(int(c) for c in str(cid)) % 2 == 0 else "standard_welcome"


def log(msg):
    print("[%s] chaos: %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def req(port, method, path, body=None, timeout=10):
    """One request; returns (status, parsed JSON or None). Raises OSError when flowd is down."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, json.loads(data) if data else None
        except ValueError:
            return resp.status, None
    finally:
        conn.close()


class Chaos:
    WORKDIR_PREFIX = "flowd-chaos."
    KAFKA_ARGS = []  # more `flowd kafka` options

    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.dir = args.workdir or tempfile.mkdtemp(prefix=self.WORKDIR_PREFIX)
        os.makedirs(self.dir, exist_ok=True)
        self.data = os.path.join(self.dir, "data")
        self.flowd_bin = os.path.join(args.build, "flowd")
        self.conn_bin = os.path.join(args.build, "examples", "quickstart-connector")
        self.port = free_port()
        self.procs = []  # (name, Popen) to stop at the end
        self.flowd = None
        self.flowd_runs = 0
        self.flowd_logs = []
        self.connector = None
        self.conn_log = os.path.join(self.dir, "connector.requests")
        self.kills = 0
        self.fault_kills = {}  # rule kind -> count of kills that hit it
        self.random_kills = 0
        self.startup_kills = 0
        self.connector_kills = 0
        self.embedded_kills = 0
        self.acked = {}  # instance id -> (key, data)
        self.start_errors = 0
        self.next_i = 0
        self.lock = threading.Lock()
        self.load_stop = threading.Event()
        self.problems = []

    # ---- processes ----

    def spawn(self, name, argv, env=None, logname=None, stdin=None):
        out = open(os.path.join(self.dir, logname or name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=stdin,
                             start_new_session=True)
        out.close()
        self.procs.append((name, p))
        return p

    def start_kafka(self):
        self.kafka_bootstrap_file = os.path.join(self.dir, "kafka.bootstrap")
        self.kafka_args = []
        self.kafka = self.spawn("kafka", [self.flowd_bin, "kafka", "--brokers", "3", "--control",
                                          "--bootstrap-file", self.kafka_bootstrap_file] +
                                self.KAFKA_ARGS,
                                stdin=subprocess.PIPE)
        for _ in range(100):
            if os.path.exists(self.kafka_bootstrap_file) and \
                    open(self.kafka_bootstrap_file).read().strip():
                self.bootstrap = open(self.kafka_bootstrap_file).read().strip()
                self.kafka_args = ["--set", "kafka.bootstrap-servers=" + self.bootstrap]
                log("kafka cluster (3 brokers) at %s" % self.bootstrap)
                if self.args.kafka_rtt:
                    # slower brokers: more messages in flight when flowd is killed
                    # one line at a time: the console polls the fd, then reads with stdio
                    for b in (1, 2, 3):
                        self.kafka.stdin.write(b"rtt %d %d\n" % (b, self.args.kafka_rtt))
                        self.kafka.stdin.flush()
                        time.sleep(0.3)
                    log("broker round trip +%d ms" % self.args.kafka_rtt)
                return
            time.sleep(0.1)
        raise SystemExit("chaos: flowd kafka did not start")

    def start_legacy(self):
        self.legacy_port = free_port()
        self.spawn("legacy", [PY, os.path.join(SRC, "examples/connectors/legacy_stub.py"),
                              "--port", str(self.legacy_port)])
        for _ in range(100):
            try:
                if req(self.legacy_port, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("chaos: legacy stub did not start")

    def start_connector(self, bootstrap_file):
        self.connector = self.spawn("connector", [
            self.conn_bin, "--bootstrap-file", bootstrap_file, "--legacy-url",
            "http://127.0.0.1:%d" % self.legacy_port, "--log", self.conn_log])

    def kill_connector(self):
        self.connector.send_signal(signal.SIGKILL)
        self.connector.wait()
        self.connector_kills += 1

    def start_flowd(self, faults=None, extra=(), data=None, wait_ready=True):
        self.flowd_runs += 1
        path = os.path.join(self.dir, "flowd.%d.log" % self.flowd_runs)
        self.flowd_logs.append(path)
        env = dict(os.environ)
        env.pop("FLOWD_STORE_FAULTS", None)
        if faults:
            env["FLOWD_STORE_FAULTS"] = faults
        argv = [self.flowd_bin, "--data-dir", data or self.data, "--set",
                "http.port=%d" % self.port] + list(extra or self.kafka_args)
        with open(path, "ab") as out:
            out.write(("# FLOWD_STORE_FAULTS=%s\n" % (faults or "")).encode())
            self.flowd = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.flowd_log = path
        if not wait_ready:
            return True
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(path, "rb") as f:
                text = f.read()
            if b"\nflowd: ready" in text or text.startswith(b"flowd: ready"):
                return True
            if self.flowd.poll() is not None:
                return False  # died during startup (a crash point in recovery, or a bug)
            time.sleep(0.05)
        raise SystemExit("chaos: flowd did not become ready in 60 s (log %s)" % path)

    def kill_flowd(self):
        if self.flowd.poll() is None:
            self.flowd.send_signal(signal.SIGKILL)
        self.flowd.wait()

    def stop_flowd(self):
        self.flowd.send_signal(signal.SIGTERM)
        try:
            rc = self.flowd.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.flowd.kill()
            rc = self.flowd.wait()
            self.problems.append("flowd did not stop in 30 s after SIGTERM")
        if rc != 0:
            self.problems.append("flowd exited with %d after SIGTERM (log %s)" % (rc, self.flowd_log))

    def died_at_fault(self):
        with open(self.flowd_log, "rb") as f:
            return b"fault injection: SIGKILL" in f.read()

    # ---- load ----

    def instance_data(self, i):
        key = KEYS[i % len(KEYS)]
        return key, {"customerId": i + 1, "second": i + 5001}

    def load_worker(self, target, rate, first=0):
        t0 = time.monotonic()
        while not self.load_stop.is_set():
            with self.lock:
                if self.next_i >= target:
                    return
                i = self.next_i
                self.next_i += 1
            # pace: instance i is due at t0 + i / rate (spread over the kill phase)
            due = t0 + (i - first) / rate
            while time.monotonic() < due and not self.load_stop.is_set():
                time.sleep(min(0.05, due - time.monotonic()))
            key, data = self.instance_data(i)
            body = json.dumps(data)
            while not self.load_stop.is_set():
                try:
                    status, j = req(self.port, "POST", "/v1/processes/%s/start" % key, body)
                except OSError:
                    status, j = 0, None
                if status == 201 and j and "id" in j:
                    with self.lock:
                        self.acked[j["id"]] = (key, data)
                    break
                # flowd down, or the store refused: an instance may or may not exist; retry
                with self.lock:
                    self.start_errors += 1
                time.sleep(0.1)

    # ---- the run ----

    def deploy(self):
        for key in KEYS:
            with open(os.path.join(SRC, PROCESSES[key][0]), "rb") as f:
                status, j = req(self.port, "POST", "/v1/definitions", f.read())
            if status not in (200, 201):
                raise SystemExit("chaos: deploy %s: HTTP %d %s" % (key, status, j))

    def pick_faults(self):
        """None (a random-time kill) or a crash-point rule with a random K."""
        if self.rng.random() < 0.4:
            return None
        rule = self.rng.choice(CRASH_POINTS)
        k = self.rng.randint(1, 25 if rule.startswith(("commit", "mark_sent")) else 200)
        return rule.format(k=k)

    def kill_phase(self):
        a = self.args
        n, k = a.instances, a.kills
        conn_kill_at = set(round((j + 1) * k / (a.connector_kills + 1))
                           for j in range(a.connector_kills))
        threads = [threading.Thread(target=self.load_worker, args=(n, n / a.seconds))
                   for _ in range(a.threads)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        faults, ready = None, True  # flowd is running, as deployed
        while self.kills < k:
            # spread the remaining kills over the remaining time (crash points often hit early)
            left = a.seconds - (time.monotonic() - t0)
            mean_up = max(0.3, left / (k - self.kills))
            up = self.rng.uniform(0.2, 2 * mean_up)
            if ready == "startup":
                up = self.rng.uniform(0.02, 0.8)  # counted from the spawn, not from ready
            deadline = time.monotonic() + (up if not faults else max(up, 2 * mean_up))
            while time.monotonic() < deadline and self.flowd.poll() is None:
                time.sleep(0.02)
            self.kill_flowd()
            self.kills += 1
            if faults and self.died_at_fault():
                kind = re.sub(r"@\d+", "", faults)
                self.fault_kills[kind] = self.fault_kills.get(kind, 0) + 1
                how = "at crash point %s%s" % (faults, "" if ready else " (during startup)")
            elif ready == "startup":
                self.random_kills += 1
                self.startup_kills += 1
                how = "during startup, %.2f s after the spawn" % up
            else:
                self.random_kills += 1
                how = "at a random moment after %.2f s" % up
            with self.lock:
                started = len(self.acked)
            log("kill %d/%d %s; %d/%d instances started" % (self.kills, k, how, started, n))
            if self.kills in conn_kill_at:
                self.kill_connector()
                log("connector SIGKILLed; restarting it")
                time.sleep(self.rng.uniform(0, 0.5))
                self.start_connector(self.kafka_bootstrap_file)
            faults = self.pick_faults() if self.kills < k else None
            if faults is None and self.kills < k and self.rng.random() < 0.3:
                # recovery and the re-publishing of the outbox run before "ready"
                self.start_flowd(wait_ready=False)
                ready = "startup"
            else:
                ready = self.start_flowd(faults)
        # the load goes on until every instance was acknowledged
        for t in threads:
            t.join()
        log("kill phase: %d kills in %.1f s; %d instances acknowledged, %d start attempts refused"
            % (self.kills, time.monotonic() - t0, len(self.acked), self.start_errors))

    def embedded_phase(self):
        """Kills with the embedded Kafka (lost with flowd): requests are re-published on start."""
        a = self.args
        self.stop_flowd()
        self.kill_connector()
        self.connector_kills -= 1  # a planned stop, not a chaos kill
        # same store: the external-Kafka instances are all done by now
        extra = ["--set", "kafka.bootstrap-servers=embedded"]
        boot = os.path.join(self.data, "kafka.bootstrap")
        n = max(30, a.instances // 10)
        first = len(self.acked)
        self.next_i = a.instances
        self.start_flowd(extra=extra)
        self.start_connector(boot)
        th = [threading.Thread(target=self.load_worker, args=(a.instances + n, n / 4, a.instances))
              for _ in range(2)]
        for t in th:
            t.start()
        for j in range(a.embedded_kills):
            time.sleep(self.rng.uniform(0.3, 1.5))
            self.kill_flowd()
            self.kill_connector()
            self.connector_kills -= 1
            self.kills += 1
            self.embedded_kills += 1
            log("kill %d (embedded Kafka) at a random moment" % self.kills)
            os.unlink(boot)
            self.start_flowd(extra=extra)
            self.start_connector(boot)
        for t in th:
            t.join()
        log("embedded phase: %d kills, %d more instances" % (a.embedded_kills,
                                                              len(self.acked) - first))

    def db(self):
        c = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data, "flowd.db"), uri=True,
                            timeout=10)
        c.execute("PRAGMA busy_timeout = 10000")
        return c

    def drain(self):
        """Waits until no instance is STARTED and the outbox is empty."""
        deadline = time.monotonic() + self.args.drain_timeout
        last = None
        while time.monotonic() < deadline:
            with self.db() as c:
                started = c.execute("SELECT count(*) FROM instances WHERE state='STARTED'") \
                    .fetchone()[0]
                unsent = c.execute("SELECT count(*) FROM outbox WHERE sent_ms IS NULL") \
                    .fetchone()[0]
            if (started, unsent) != last:
                log("draining: %d instance(s) not finished, %d outbox row(s) unsent" %
                    (started, unsent))
                last = (started, unsent)
            if started == 0 and unsent == 0:
                return True
            if self.flowd.poll() is not None:
                self.problems.append("flowd died while draining (log %s)" % self.flowd_log)
                return False
            time.sleep(0.5)
        return False

    # ---- checks ----

    def read_connector_log(self):
        seen = []
        if os.path.exists(self.conn_log):
            with open(self.conn_log) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2:
                        seen.append((parts[0], int(parts[1]) if parts[1].isdigit() else -1))
        return seen

    def read_store(self):
        """(instances {id: (uuid, def_key, state, blob)}, history {id: [(seq, node, state,
        detail)]} in seq order, count of unsent outbox rows); tests/multinode reads PostgreSQL."""
        with self.db() as c:
            insts = {r[0]: r[1:] for r in c.execute(
                "SELECT id, uuid, def_key, state, blob FROM instances")}
            hist = {}
            for iid, seq, node, state, detail in c.execute(
                    "SELECT instance_id, seq, node_id, state, detail FROM history "
                    "ORDER BY instance_id, seq"):
                hist.setdefault(iid, []).append((seq, node, state, detail))
            unsent = c.execute("SELECT count(*) FROM outbox WHERE sent_ms IS NULL").fetchone()[0]
        return insts, hist, unsent

    def check(self):
        lost, dup = [], []
        insts, hist, unsent = self.read_store()
        if unsent:
            lost.append("%d outbox row(s) never published" % unsent)
        for iid in self.acked:
            if iid not in insts:
                lost.append("instance %d was acknowledged (HTTP 201) but is not in the store" % iid)
        sent_ids = {}  # messageId -> instance id
        completed = 0
        for iid, (uuid, key, state, blob) in sorted(insts.items()):
            rows = hist.get(iid, [])
            pairs = [(node, st) for _, node, st, _ in rows]
            for p in set(pairs):
                if pairs.count(p) > 1:
                    dup.append("instance %d: transition %s %s is in the history %d times" %
                               (iid, p[0], p[1], pairs.count(p)))
            seqs = [r[0] for r in rows]
            if seqs != list(range(1, len(seqs) + 1)):
                lost.append("instance %d: history seq has holes: %s" % (iid, seqs))
            if key not in PROCESSES:
                lost.append("instance %d of unknown process %s" % (iid, key))
                continue
            _, sends, receives, end_of = PROCESSES[key]
            data = json.loads(blob).get("data") or {}
            cid = data.get("customerId")
            want_start = self.acked.get(iid)
            if want_start and (want_start[0] != key or
                               want_start[1]["customerId"] != cid):
                dup.append("instance %d: the start acknowledged was %s customerId=%s, the store "
                           "has %s customerId=%s (two starts got the same id?)" %
                           (iid, want_start[0], want_start[1]["customerId"], key, cid))
            want = [("start", "STARTED")] + [(s, "MESSAGE_SENT") for s in sends] + \
                [(r, "MESSAGE_RECEIVED") for r in receives]
            if isinstance(cid, int):
                want.append((end_of({"customerId": cid}), "FINISHED"))
            missing = [p for p in want if p not in pairs]
            if missing:
                lost.append("instance %d (%s, %s): missing %s" % (iid, key, state, missing))
            for _, node, st, detail in rows:
                if st == "MESSAGE_SENT":
                    if detail in sent_ids and sent_ids[detail] != iid:
                        dup.append("messageId %s sent for instances %d and %d" %
                                   (detail, sent_ids[detail], iid))
                    sent_ids[detail] = iid
            if state == "FINISHED" and not missing:
                completed += 1
            elif state != "FINISHED":
                last = "%s %s" % rows[-1][1:3] if rows else "none"
                lost.append("instance %d (%s) is %s (stuck; last transition: %s)" %
                            (iid, key, state, last))
        # what the connector saw
        seen = self.read_connector_log()
        by_mid = {}
        for mid, iid in seen:
            by_mid.setdefault(mid, set()).add(iid)
        per_send = {}
        for mid, iids in by_mid.items():
            if len(iids) > 1:
                dup.append("the connector got messageId %s for instances %s" % (mid, sorted(iids)))
            iid = next(iter(iids))
            if sent_ids.get(mid) != iid:
                dup.append("the connector got messageId %s for instance %d, which the store never "
                           "sent" % (mid, iid))
            parts = mid.split(":")
            node = parts[1] if len(parts) >= 4 else mid
            per_send.setdefault((iid, node), set()).add(mid)
        for (iid, node), mids in per_send.items():
            if len(mids) > 1:
                dup.append("instance %d: the connector got send %s with %d different messageIds: %s"
                           % (iid, node, len(mids), sorted(mids)))
        never = [mid for mid in sent_ids if mid not in by_mid]
        for mid in never:
            lost.append("the connector never answered messageId %s (instance %d)" %
                        (mid, sent_ids[mid]))
        redelivered = len(seen) - len(by_mid)
        return insts, completed, lost, dup, redelivered

    def sanitizer_reports(self):
        bad = []
        for path in self.flowd_logs:
            with open(path, "rb") as f:
                if re.search(rb"AddressSanitizer|LeakSanitizer|runtime error:", f.read()):
                    bad.append(path)
        return bad

    def run(self):
        a = self.args
        t0 = time.monotonic()
        log("seed %d, %d instances, %d kills over ~%d s, work dir %s" %
            (a.seed, a.instances, a.kills, a.seconds, self.dir))
        self.start_kafka()
        self.start_legacy()
        os.makedirs(self.data, exist_ok=True)
        if not self.start_flowd():
            raise SystemExit("chaos: flowd did not start (log %s)" % self.flowd_log)
        self.deploy()
        self.start_connector(self.kafka_bootstrap_file)
        self.kill_phase()
        if a.embedded_kills:
            # first let the external-Kafka instances finish, then switch clusters
            if not self.drain():
                self.problems.append("instances did not finish before the embedded phase")
            self.embedded_phase()
        ok = self.drain()
        # let the connector log catch up with replies delivered just before a connector kill
        time.sleep(1)
        self.stop_flowd()
        self.connector.send_signal(signal.SIGTERM)
        self.connector.wait(timeout=15)
        insts, completed, lost, dup, redelivered = self.check()
        if not ok:
            self.problems.append("not everything finished within %d s of the last restart" %
                                 a.drain_timeout)
        bad = self.sanitizer_reports()
        if bad:
            self.problems.append("sanitizer report in %s" % ", ".join(bad))
        if self.kills < a.kills:
            self.problems.append("only %d kills" % self.kills)
        for p in lost[:20]:
            log("LOST: %s" % p)
        for p in dup[:20]:
            log("DUPLICATED: %s" % p)
        for p in self.problems:
            log("PROBLEM: %s" % p)
        faults = ", ".join("%s=%d" % kv for kv in sorted(self.fault_kills.items()))
        log("kills: %d random-time (%d of them during startup), %d at crash points (%s), "
            "%d with embedded Kafka; "
            "connector kills: %d; connector re-deliveries (same messageId): %d; "
            "acknowledged starts: %d; refused start attempts: %d; %.1f s" %
            (self.random_kills, self.startup_kills, sum(self.fault_kills.values()),
             faults or "none",
             self.embedded_kills, self.connector_kills, redelivered, len(self.acked),
             self.start_errors, time.monotonic() - t0))
        n = len(insts)
        print("chaos: instances=%d completed=%d lost=%d duplicated=%d kills=%d" %
              (n, completed, len(lost), len(dup), self.kills), flush=True)
        passed = (not lost and not dup and not self.problems and completed == n and
                  n >= a.instances)
        return 0 if passed else 1

    def cleanup(self, passed):
        for name, p in [("flowd", self.flowd)] + self.procs:
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in [("flowd", self.flowd)] + self.procs:
            if not p:
                continue
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if passed and not self.args.keep and not self.args.workdir:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log("files kept in %s" % self.dir)


def check_only(args):
    """The end-of-run checks over an existing data dir and connector log (used by
    tests/integration/test_kafka_faults.sh). Last line: chaos-check: instances=N completed=N
    lost=0 duplicated=0; exit 0 only then."""
    args.workdir = args.check_data
    ch = Chaos(args)
    ch.data = args.check_data
    ch.conn_log = args.check_connector_log or os.path.join(args.check_data, "none")
    if args.check_ids:
        with open(args.check_ids) as f:
            ch.acked = {int(x): None for x in f.read().split()}
    insts, completed, lost, dup, redelivered = ch.check()
    for p in lost[:20]:
        log("LOST: %s" % p)
    for p in dup[:20]:
        log("DUPLICATED: %s" % p)
    log("connector re-deliveries (same messageId): %d" % redelivered)
    print("chaos-check: instances=%d completed=%d lost=%d duplicated=%d" %
          (len(insts), completed, len(lost), len(dup)), flush=True)
    return 0 if not lost and not dup and completed == len(insts) and insts else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("FLOWD_BUILD", os.path.join(SRC, "build")))
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--seconds", type=float, default=60,
                    help="length of the kill phase; the starts are spread over it")
    ap.add_argument("--connector-kills", type=int, default=2)
    ap.add_argument("--embedded-kills", type=int, default=0)
    ap.add_argument("--threads", type=int, default=4, help="concurrent HTTP start clients")
    ap.add_argument("--kafka-rtt", type=int, default=0, metavar="MS",
                    help="latency added to every broker (more messages in flight at a kill)")
    ap.add_argument("--drain-timeout", type=int, default=120)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--check-data", metavar="DIR",
                    help="only check a finished run: flowd's data dir (no process is started)")
    ap.add_argument("--check-connector-log", metavar="FILE", help="with --check-data")
    ap.add_argument("--check-ids", metavar="FILE",
                    help="with --check-data: acknowledged instance ids, one a line")
    args = ap.parse_args()
    if args.check_data:
        return check_only(args)
    ch = Chaos(args)
    rc = 1
    try:
        rc = ch.run()
    finally:
        ch.cleanup(rc == 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
