#!/usr/bin/python3
"""multinode.py - several flowd nodes sharing the work on one PostgreSQL, with a node SIGKILLed.

One private PostgreSQL (tests/lib/pg.sh), one standalone mock Kafka cluster (`flowd kafka
--brokers 3 --partitions 6`), N flowd nodes (engine.node-id 1..N, each its own http.port and data
dir, one consumer group), the fake legacy system and the C quickstart connector. The chaos processes
(tests/chaos: one send/receive, two sends in a row, customer-onboarding's gateway) are deployed
through node 1; then M instances are started round-robin over the nodes' HTTP APIs (a start that
fails goes to the next node and is retried). For each of --kills rounds, a random running node is
SIGKILLed at 30% of that round's share of the starts and started again at 60%. When every start is
acknowledged, the harness waits until no instance is STARTED and the outbox is empty, stops every
node with SIGTERM and checks, from PostgreSQL and the connector's log, everything chaos.py checks
(every acknowledged start exists and is FINISHED at the right end node; every transition once in
its instance's history, seq without holes; no messageId sent for two instances; each send answered
by the connector under one messageId that the store sent) and, across nodes:

  - a second process started with a running node's id is refused, naming the id;
  - every node can start the definitions deployed through node 1 (if one cannot, that is
    recorded and they are deployed on it too, so that the run goes on);
  - no reply dead-lettered (each is lost, or duplicated when its node had received it already);
  - no instance id acknowledged for two starts, and the stored instance is the one started;
  - the connector answered each messageId once (its log has a line per answered request; the
    only restarts here are flowd's, so an answered duplicate is a request published twice beyond
    the connector's dedupe window, or a step applied twice);
  - no messageId twice in the outbox, no history rows without an instance;
  - each node exits 0 on SIGTERM; no sanitizer report in any node log.

Shown, not failed on: what each node did in its last run (/metrics), how many times each request
went over Kafka, the ERROR lines of each node log.

Last line: `multinode: nodes=N instances=M completed=C lost=L duplicated=D kills=K` (L and D count
the instances with such a problem, plus the problems that name no single instance; every problem
is in <workdir>/problems.txt, the first 20 of each kind on stderr). Exit 0 only when C == M >=
--instances, L == D == 0, no other problem, and K == --kills.

usage: multinode.py [--build DIR] [--nodes 3] [--instances 5000] [--kills 1] [--seconds S]
                    [--seed X] [--workdir DIR] [--keep]
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path[:0] = [os.path.join(SRC, "tests", "chaos"), os.path.join(SRC, "tests", "lib")]
import chaos  # noqa: E402  (the processes, Kafka/connector start-up and the checks)
from pgserver import PgServer, PgUnavailable  # noqa: E402

NODE_SHIFT = 40  # instance id = node-id << 40 | sequence (src/daemon/daemon.h)

# One more process here: two requests at once whose replies come back on two topics, i.e. on
# partitions different nodes may own, so two nodes may apply replies to one instance at the same
# moment (the row lock must serialize them, or one branch's update is lost and the join never
# completes). The second topic is answered by a second quickstart connector.
chaos.PROCESSES["chaos-parallel"] = ("tests/multinode/processes/chaos-parallel.json",
                                     ["ask_a", "ask_b"], ["wait_a", "wait_b"], lambda d: "done")
chaos.KEYS[:] = sorted(chaos.PROCESSES)
IN2 = "ai.flowx.dev.connector.customer2.in.v1"
OUT2 = "ai.flowx.dev.engine.receive.customer2.v1"


def log(msg):
    print("[%s] multinode: %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def owner(iid):
    return iid >> NODE_SHIFT


def count(items):
    """Instances named by the problem lines (one instance may have several), plus the lines
    that name no single instance."""
    ids, other = set(), 0
    for p in items:
        m = re.search(r"instance (\d+)", p)
        if m:
            ids.add(m.group(1))
        else:
            other += 1
    return len(ids) + other


class Node:
    def __init__(self, node_id, workdir):
        self.id = node_id
        self.port = chaos.free_port()
        self.data = os.path.join(workdir, "node%d" % node_id)
        self.proc = None
        self.runs = 0
        self.log = None
        self.up = False


class MultiNode(chaos.Chaos):
    WORKDIR_PREFIX = "flowd-multinode."
    # 6 partitions: an equal share for 1, 2 or 3 nodes (default 4); chaos-parallel's second reply
    # topic gets 5, so an instance's two replies land on partitions numbered differently, which
    # the assignor gives to different nodes
    KAFKA_ARGS = ["--partitions", "6", "--topic", OUT2 + ":5"]

    def __init__(self, args):
        super().__init__(args)
        self.pg = None
        self.nodes = [Node(k + 1, self.dir) for k in range(args.nodes)]
        self.ack_node = {}  # instance id -> node id that acknowledged the start
        self.ack_dups = []
        self.missing_defs = set()  # (node id, key) refused with 404 after the deploy
        self.restarts = 0

    # ---- nodes ----

    def start_node(self, node):
        node.runs += 1
        node.log = os.path.join(self.dir, "flowd.node%d.%d.log" % (node.id, node.runs))
        self.flowd_logs.append(node.log)
        argv = [self.flowd_bin, "--data-dir", node.data, "--set", "http.port=%d" % node.port,
                "--set", "kafka.bootstrap-servers=" + self.bootstrap,
                "--set", "store.type=postgresql", "--set", "store.postgresql.dsn=" + self.pg.dsn,
                "--set", "engine.node-id=%d" % node.id]
        with open(node.log, "ab") as out:
            node.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(node.log, "rb") as f:
                if re.search(rb"(^|\n)flowd: ready", f.read()):
                    node.up = True
                    log("node %d (pid %d) ready on port %d" % (node.id, node.proc.pid, node.port))
                    return
            if node.proc.poll() is not None:
                raise SystemExit("multinode: node %d exited with %d during startup (log %s)" %
                                 (node.id, node.proc.returncode, node.log))
            time.sleep(0.05)
        raise SystemExit("multinode: node %d not ready in 60 s (log %s)" % (node.id, node.log))

    def check_node_id_taken(self):
        """A second process with the node id of a running node must be refused at start (ids
        would collide): it exits non-zero and says which id."""
        nd = self.nodes[-1]
        log_path = os.path.join(self.dir, "flowd.duplicate-id.log")
        argv = [self.flowd_bin, "--data-dir", os.path.join(self.dir, "duplicate-id"),
                "--set", "http.port=%d" % chaos.free_port(),
                "--set", "kafka.bootstrap-servers=" + self.bootstrap,
                "--set", "store.type=postgresql", "--set", "store.postgresql.dsn=" + self.pg.dsn,
                "--set", "engine.node-id=%d" % nd.id]
        with open(log_path, "wb") as out:
            rc = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, timeout=60)
        text = open(log_path, errors="replace").read()
        want = "engine.node-id %d is in use by another flowd" % nd.id
        if rc == 0 or want not in text:
            self.problems.append("a second process with node id %d was not refused (exit %d): %s"
                                 % (nd.id, rc, text.strip()[-300:]))
        else:
            log("a second process with node id %d was refused: %s" % (nd.id, want))

    def start_connector(self, bootstrap_file):
        super().start_connector(bootstrap_file)
        self.conn2_log = os.path.join(self.dir, "connector2.requests")
        self.connector2 = self.spawn("connector2", [
            self.conn_bin, "--bootstrap-file", bootstrap_file, "--legacy-url",
            "http://127.0.0.1:%d" % self.legacy_port, "--in", IN2, "--out", OUT2,
            "--group", "quickstart-connector-2", "--log", self.conn2_log])

    def read_connector_log(self):
        seen = super().read_connector_log()
        if os.path.exists(self.conn2_log):
            with open(self.conn2_log) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2:
                        seen.append((parts[0], int(parts[1]) if parts[1].isdigit() else -1))
        return seen

    def kill_node(self, node):
        node.up = False
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()

    def stop_node(self, node):
        node.up = False
        node.proc.send_signal(signal.SIGTERM)
        try:
            rc = node.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            rc = node.proc.wait()
            self.problems.append("node %d did not stop in 30 s after SIGTERM" % node.id)
        if rc != 0:
            self.problems.append("node %d exited with %d after SIGTERM (log %s)" %
                                 (node.id, rc, node.log))

    WORK_METRICS = [("started", "flowd_instances_started_total"),
                    ("received", "flowd_messages_received_total"),
                    ("sent", "flowd_messages_sent_total"),
                    ("completed", "flowd_instances_completed_total"),
                    ("duplicates", "flowd_messages_duplicate_total"),
                    ("dead-lettered", "flowd_messages_dead_lettered_total")]

    def log_work(self, node):
        """What the node did in its last run, from its /metrics (shows whether the work was
        shared; a killed run's counters are gone)."""
        conn = chaos.http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        except OSError as e:
            log("node %d: GET /metrics: %s" % (node.id, e))
            return
        finally:
            conn.close()
        total = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name = re.split(r"[{ ]", line, 1)[0]
                total[name] = total.get(name, 0) + float(line.rsplit(None, 1)[1])
        log("node %d, run %d: %s" % (node.id, node.runs, ", ".join(
            "%s %d" % (label, total.get(m, 0)) for label, m in self.WORK_METRICS)))

    def log_wire(self):
        """How often each request went over Kafka (python3-kafka, from the beginning of the
        connector's topic). Publishing again after a kill is allowed (the connector drops
        duplicates by messageId), so this is shown, not failed on."""
        try:
            import kafka
        except ImportError:
            log("wire: python3-kafka not installed, not counted")
            return
        c = kafka.KafkaConsumer("ai.flowx.dev.connector.customer.in.v1",
                                bootstrap_servers=self.bootstrap.split(","), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                consumer_timeout_ms=3000)
        per_mid = {}
        for m in c:
            mid = dict(m.headers).get("messageId", b"").decode()
            per_mid[mid] = per_mid.get(mid, 0) + 1
        c.close()
        again = sorted(n for n in per_mid.values() if n > 1)
        log("wire: %d request(s) for %d messageId(s); %d published more than once (at most %d "
            "times)" % (sum(per_mid.values()), len(per_mid), len(again), again[-1] if again else 1))

    def deploy_everywhere(self):
        """Deploys through node 1; every other node must then know each definition."""
        self.port = self.nodes[0].port
        self.deploy()
        for node in self.nodes[1:]:
            for key in chaos.KEYS:
                status, j = chaos.req(node.port, "GET", "/v1/definitions/" + key)
                if status == 200:
                    continue
                self.problems.append("node %d does not see definition %s deployed through node 1 "
                                     "(GET /v1/definitions/%s: HTTP %d %s)" %
                                     (node.id, key, key, status, j))
                # deploy it there too so that the rest of the run still tests something
                with open(os.path.join(SRC, chaos.PROCESSES[key][0]), "rb") as f:
                    status, j = chaos.req(node.port, "POST", "/v1/definitions", f.read())
                if status not in (200, 201):
                    raise SystemExit("multinode: deploy %s on node %d: HTTP %d %s" %
                                     (key, node.id, status, j))

    # ---- load ----

    def load_worker(self, target, rate):
        t0 = time.monotonic()
        n = len(self.nodes)
        while True:
            with self.lock:
                if self.next_i >= target:
                    return
                i = self.next_i
                self.next_i += 1
            due = t0 + i / rate
            while time.monotonic() < due:
                time.sleep(min(0.05, due - time.monotonic()))
            key, data = self.instance_data(i)
            body = json.dumps(data)
            attempt = 0
            while True:
                node = self.nodes[(i + attempt) % n]
                attempt += 1
                if not node.up:
                    if attempt % n == 0:
                        time.sleep(0.1)
                    continue
                try:
                    status, j = chaos.req(node.port, "POST", "/v1/processes/%s/start" % key, body)
                except OSError:
                    status, j = 0, None
                if status == 201 and j and "id" in j:
                    with self.lock:
                        iid = j["id"]
                        if iid in self.acked:
                            self.ack_dups.append(
                                "instance id %d acknowledged twice: by node %d for %s %s and by "
                                "node %d for %s %s" % (iid, self.ack_node[iid], self.acked[iid][0],
                                                       self.acked[iid][1], node.id, key, data))
                        self.acked[iid] = (key, data)
                        self.ack_node[iid] = node.id
                    break
                with self.lock:
                    self.start_errors += 1
                if status == 404 and "no process definition" in str(j):
                    self.deploy_missing(node, key, j)
                elif status:
                    log("start %d on node %d: HTTP %d %s" % (i, node.id, status, j))
                time.sleep(0.05)

    def deploy_missing(self, node, key, j):
        """A node refused to start a definition deployed through node 1: a failure, recorded
        once; the definition is then deployed there too, so that the run goes on testing."""
        with self.lock:
            if (node.id, key) in self.missing_defs:
                return
            self.missing_defs.add((node.id, key))
            self.problems.append("node %d cannot start %s, deployed through node 1: HTTP 404 %s"
                                 % (node.id, key, j.get("detail") if j else j))
        with open(os.path.join(SRC, chaos.PROCESSES[key][0]), "rb") as f:
            status, j = chaos.req(node.port, "POST", "/v1/definitions", f.read())
        log("node %d cannot start %s: deployed it there too: HTTP %d %s" %
            (node.id, key, status, j))
        if status not in (200, 201):
            self.problems.append("deploy %s on node %d: HTTP %d %s" % (key, node.id, status, j))

    def run_starts(self):
        a = self.args
        threads = [threading.Thread(target=self.load_worker, args=(a.instances,
                                                                   a.instances / a.seconds))
                   for _ in range(a.threads)]
        for t in threads:
            t.start()
        share = a.instances / max(a.kills, 1)
        for r in range(a.kills):
            self.wait_acked(int((r + 0.3) * share))
            victim = self.rng.choice([nd for nd in self.nodes if nd.up])
            self.kill_node(victim)
            self.kills += 1
            log("kill %d/%d: node %d SIGKILLed with %d/%d starts acknowledged" %
                (self.kills, a.kills, victim.id, len(self.acked), a.instances))
            self.wait_acked(int((r + 0.6) * share), stall_s=5)
            self.start_node(victim)
            self.restarts += 1
            log("node %d re-added with %d/%d starts acknowledged" %
                (victim.id, len(self.acked), a.instances))
        for t in threads:
            t.join()
        log("%d starts acknowledged (%s), %d start attempts failed" %
            (len(self.acked), ", ".join("node %d: %d" % (nd.id, list(self.ack_node.values())
                                                         .count(nd.id)) for nd in self.nodes),
             self.start_errors))

    def wait_acked(self, count, stall_s=None):
        """Until count starts are acknowledged (or, with stall_s, no progress for that long)."""
        last, since = -1, time.monotonic()
        while True:
            with self.lock:
                n = len(self.acked)
            if n >= count or n >= self.args.instances:
                return
            if n != last:
                last, since = n, time.monotonic()
            elif stall_s and time.monotonic() - since > stall_s:
                return
            time.sleep(0.02)

    # ---- store ----

    def read_store(self):
        q = self.pg.query
        insts = {int(r[0]): r[1:]
                 for r in q("SELECT id, uuid, def_key, state, blob FROM instances")}
        hist = {}
        for iid, seq, node, state, detail in q("SELECT instance_id, seq, node_id, state, detail "
                                               "FROM history ORDER BY instance_id, seq"):
            hist.setdefault(int(iid), []).append((int(seq), node, state, detail))
        unsent = int(self.pg.scalar("SELECT count(*) FROM outbox WHERE sent_ms IS NULL"))
        self.hist = hist
        return insts, hist, unsent

    def drain(self):
        deadline = time.monotonic() + self.args.drain_timeout
        last = None
        while time.monotonic() < deadline:
            started = int(self.pg.scalar("SELECT count(*) FROM instances WHERE state='STARTED'"))
            unsent = int(self.pg.scalar("SELECT count(*) FROM outbox WHERE sent_ms IS NULL"))
            if (started, unsent) != last:
                log("draining: %d instance(s) not finished, %d outbox row(s) unsent" %
                    (started, unsent))
                last = (started, unsent)
            if started == 0 and unsent == 0:
                return True
            for nd in self.nodes:
                if nd.proc.poll() is not None:
                    self.problems.append("node %d died while draining (exit %d, log %s)" %
                                         (nd.id, nd.proc.returncode, nd.log))
                    return False
            time.sleep(0.5)
        return False

    # ---- checks ----

    def check(self):
        insts, completed, lost, dup, redelivered = super().check()
        dup += self.ack_dups
        answered = {}
        for mid, iid in self.read_connector_log():
            answered.setdefault(mid, []).append(iid)
        for mid, iids in sorted(answered.items()):
            if len(iids) > 1:
                dup.append("the connector answered messageId %s %d times (instance %d)" %
                           (mid, len(iids), iids[0]))
        for mid, n, iids in self.pg.query(
                "SELECT message_id, count(*), string_agg(instance_id::text, ',') FROM outbox "
                "GROUP BY message_id HAVING count(*) > 1 ORDER BY 1"):
            dup.append("messageId %s is in the outbox %s times (instances %s)" % (mid, n, iids))
        for iid, headers in self.pg.query("SELECT instance_id, headers FROM outbox WHERE topic "
                                          "LIKE '%engine.dlq%' ORDER BY instance_id, id"):
            h = dict(json.loads(headers or "[]"))
            iid = int(iid)
            state, dest = insts.get(iid, (None, None, None))[2], h.get("destinationId")
            got = any(r[1] == dest and r[2] == "MESSAGE_RECEIVED" for r in self.hist.get(iid, []))
            (dup if got else lost).append(
                "instance %d (%s): a reply for %s (messageId %s) was dead-lettered, reason=%s: %s%s"
                % (iid, state, dest, h.get("messageId"), h.get("reason"), h.get("reasonDetail"),
                   " (the node had received it already)" if got else ""))
        for (iid,) in self.pg.query("SELECT DISTINCT instance_id FROM history EXCEPT "
                                    "SELECT id FROM instances ORDER BY 1"):
            lost.append("history rows for instance %s, which is not in the instances table" % iid)
        return insts, completed, lost, dup, redelivered

    def log_errors(self):
        """Counts the ERROR/FATAL lines of each node log (shown, not failed on: a peer's SIGKILL
        can legitimately log errors); sanitizer reports fail the run."""
        for path in self.flowd_logs:
            with open(path, "rb") as f:
                bad = [l for l in f.read().decode(errors="replace").splitlines()
                       if re.search(r" (ERROR|FATAL) ", l)]
            if bad:
                log("%s: %d ERROR/FATAL line(s), first: %s" % (os.path.basename(path), len(bad),
                                                               bad[0][:300]))

    def run(self):
        a = self.args
        t0 = time.monotonic()
        log("seed %d, %d nodes, %d instances over ~%d s, %d kill(s), work dir %s" %
            (a.seed, a.nodes, a.instances, a.seconds, a.kills, self.dir))
        self.pg = PgServer(os.path.join(self.dir, "pg"))
        log("postgresql: %s" % self.pg.dsn)
        self.start_kafka()
        self.start_legacy()
        for nd in self.nodes:
            self.start_node(nd)
        self.check_node_id_taken()
        self.deploy_everywhere()
        self.start_connector(self.kafka_bootstrap_file)
        self.run_starts()
        ok = self.drain()
        time.sleep(1)  # let the connector log catch up
        for nd in self.nodes:
            self.log_work(nd)
        for nd in self.nodes:
            self.stop_node(nd)
        for c in (self.connector, self.connector2):
            c.send_signal(signal.SIGTERM)
            c.wait(timeout=15)
        self.log_wire()
        insts, completed, lost, dup, _ = self.check()
        if not ok:
            self.problems.append("not everything finished within %d s of the last start" %
                                 a.drain_timeout)
            for state, n in self.pg.query("SELECT state, count(*) FROM instances GROUP BY 1"):
                log("instances %s: %s" % (state, n))
        bad = self.sanitizer_reports()
        if bad:
            self.problems.append("sanitizer report in %s" % ", ".join(bad))
        if self.kills < a.kills:
            self.problems.append("only %d kills" % self.kills)
        self.log_errors()
        with open(os.path.join(self.dir, "problems.txt"), "w") as f:
            for kind, items in (("LOST", lost), ("DUPLICATED", dup), ("PROBLEM", self.problems)):
                for p in items:
                    f.write("%s: %s\n" % (kind, p))
        for kind, items in (("LOST", lost), ("DUPLICATED", dup)):
            items.sort(key=lambda p: int(re.search(r"instance (\d+)|$", p).group(1) or 0))
            for p in items[:20]:
                log("%s: %s" % (kind, p))
            if len(items) > 20:
                log("... %d more %s lines in %s/problems.txt" % (len(items) - 20, kind, self.dir))
            by_node = {}
            for p in items:
                m = re.search(r"instance (\d+)", p)
                k = "node %d" % owner(int(m.group(1))) if m else "other"
                by_node.setdefault(k, []).append(p)
            if by_node:
                log("%s instances by the node that created them: %s" % (kind, ", ".join(
                    "%s=%d" % (k, count(v)) for k, v in sorted(by_node.items()))))
        for p in self.problems:
            log("PROBLEM: %s" % p)
        log("%d kill(s), %d re-add(s); acknowledged starts %d; failed start attempts %d; %.1f s" %
            (self.kills, self.restarts, len(self.acked), self.start_errors,
             time.monotonic() - t0))
        n = len(insts)
        print("multinode: nodes=%d instances=%d completed=%d lost=%d duplicated=%d kills=%d" %
              (a.nodes, n, completed, count(lost), count(dup), self.kills), flush=True)
        passed = (not lost and not dup and not self.problems and completed == n and
                  n >= a.instances)
        return 0 if passed else 1

    def cleanup(self, passed):
        for nd in self.nodes:
            if nd.proc and nd.proc.poll() is None:
                nd.proc.kill()
                nd.proc.wait()
        if self.pg:
            self.pg.stop()
        super().cleanup(passed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("FLOWD_BUILD", os.path.join(SRC, "build")))
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--instances", type=int, default=5000)
    ap.add_argument("--kills", type=int, default=1, help="kill + re-add rounds")
    ap.add_argument("--seconds", type=float, default=None,
                    help="the starts are spread over this long (default: instances / 100)")
    ap.add_argument("--threads", type=int, default=4, help="concurrent HTTP start clients")
    ap.add_argument("--drain-timeout", type=int, default=120)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    args.seconds = args.seconds or max(5.0, args.instances / 100.0)
    args.kafka_rtt = 0
    if args.nodes < 1 or args.kills < 0:
        ap.error("--nodes must be >= 1 and --kills >= 0")
    mn = MultiNode(args)
    rc = 1
    try:
        rc = mn.run()
    except PgUnavailable as e:
        print("SKIP: multinode: %s" % e, flush=True)
        rc = 1 if os.environ.get("CI") else 77
    finally:
        mn.cleanup(rc == 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
