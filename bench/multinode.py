#!/usr/bin/python3
"""multinode.py - `make bench-multinode`: flowd with 1, 2 and 3 nodes on one PostgreSQL, in one run.

One private PostgreSQL (tests/lib/pg.sh; a fresh database per node count), and per node count a
fresh standalone mock Kafka cluster (`flowd kafka --brokers 3 --partitions 6`: the mock's fetch
walks its whole log, so a reused one would slow the later counts) and SDK echo connector; the
bench-echo process (start -> send -> receive the echo -> end). For each
count: the nodes start (engine.node-id 1..n, one consumer group), bench-echo is deployed through
node 1, a warm-up runs, then a closed loop keeps K instances in flight until COUNT completed.
Starts go, with --start kafka (the default, as `make bench`), to the start topic, whose partitions
the nodes share (the confirm topic says which were created); with --start http, to the nodes'
HTTP APIs, evenly, --threads clients per node (a start returns after its commit). The driver
counts the STARTED rows every POLL_MS to refill. Latency is start to complete: the client's clock
in the start data (t0) to the FINISHED row's updated_ms (same machine).

CPU per process comes from /proc/<pid>/stat (utime + stime; for PostgreSQL the postmaster, its
live children and the children that exited), as cores used over the measured interval: their sum
against os.cpu_count() says whether the machine is the limit, and which process takes it; "other"
is what the rest of the machine used meanwhile (/proc/stat), so a busy shared box shows.

Prints a table and writes bench/results/multinode-<date>.json. A node count whose instances do not
all finish (no progress for --stall seconds) is reported with what was left, and the run goes on.

usage: bench/multinode.py [--build build-release] [--nodes 1,2,3] [--k 64,256] [--count 5000]
                          [--start kafka|http] [--warmup 300] [--quick] [--keep]
"""
import argparse
import datetime
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
from pgserver import PgServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PROCESS = "bench-echo"
START_TOPIC = "ai.flowx.dev.core.trigger.start.process.v1"
CONFIRM_TOPIC = "ai.flowx.dev.core.confirm.start.process.v1"
POLL_MS = 5


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stat(pid):
    """(utime + stime, cutime + cstime, ppid) in seconds, or None when the process is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return ((int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK,
            int(fields[1]))


def cpu_tree(pid):
    """CPU seconds of a process, its live children and its waited-for children."""
    me = stat(pid)
    if not me:
        return 0.0
    total = me[0] + me[1]
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = stat(int(d))
            if st and st[2] == pid:
                total += st[0]
    return total


def machine_busy():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle, iowait
    total = sum(v[:8])  # guest time is already in user
    return total - idle, total


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    v = xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]
    return round(v, 1) if isinstance(v, float) else v


class Bench:
    def __init__(self, args):
        self.a = args
        self.build = os.path.abspath(args.build)
        self.flowd = os.path.join(self.build, "flowd")
        self.work = tempfile.mkdtemp(prefix="flowd-bench-mn.")
        self.procs = []
        self.pg = None
        self.sess = None
        self.producer = self.confirms = None

    def spawn(self, name, argv):
        out = open(os.path.join(self.work, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs.append(p)
        return p

    def setup(self):
        self.pg = PgServer(os.path.join(self.work, "pg"))
        with open(os.path.join(self.work, "pg", "data", "postmaster.pid")) as f:
            self.pg_pid = int(f.readline())
        log("postgresql %s, work dir %s" % (self.pg.dsn, self.work))

    def start_kafka(self, n):
        """A fresh cluster and echo connector per node count: the mock broker's fetch walks its
        whole partition log, so a cluster reused from the previous count would slow this one."""
        boot_file = os.path.join(self.work, "kafka.n%d.bootstrap" % n)
        # 6 partitions: an equal share of every topic for 1, 2 or 3 nodes
        self.kafka = self.spawn("kafka.n%d" % n, [
            self.flowd, "kafka", "--brokers", "3", "--partitions", "6", "--topic", START_TOPIC,
            "--topic", CONFIRM_TOPIC, "--bootstrap-file", boot_file])
        for _ in range(100):
            if os.path.exists(boot_file) and open(boot_file).read().strip():
                break
            time.sleep(0.1)
        self.bootstrap = open(boot_file).read().strip()
        self.echo = self.spawn("echo.n%d" % n, [
            os.path.join(self.build, "examples/sdk-echo-connector"), "--bootstrap-file", boot_file])
        log("%d node(s): kafka %s" % (n, self.bootstrap))

    def stop_kafka(self):
        if self.producer:
            self.producer.close(timeout=5)
            self.confirms.close()
            self.producer = self.confirms = None
        for p in (self.echo, self.kafka):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def start_nodes(self, n):
        db = "flowd_n%d" % n
        self.pg.query("CREATE DATABASE %s" % db)
        nodes = []
        for k in range(1, n + 1):
            port = free_port()
            p = self.spawn("flowd.n%d.node%d" % (n, k), [
                self.flowd, "--data-dir", os.path.join(self.work, "n%d-node%d" % (n, k)),
                "--set", "http.port=%d" % port,
                "--set", "kafka.bootstrap-servers=" + self.bootstrap,
                "--set", "store.type=postgresql",
                "--set", "store.postgresql.dsn=" + self.pg.dsn_of(db),
                "--set", "engine.node-id=%d" % k])
            nodes.append({"id": k, "port": port, "proc": p,
                          "log": os.path.join(self.work, "flowd.n%d.node%d.log" % (n, k))})
        for nd in nodes:
            deadline = time.monotonic() + 60
            while b"flowd: ready" not in open(nd["log"], "rb").read():
                if nd["proc"].poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("node %d of %d did not start: see %s" %
                                     (nd["id"], n, nd["log"]))
                time.sleep(0.05)
        with open(os.path.join(SRC, "bench/processes/echo.json"), "rb") as f:
            status, body = post(nodes[0]["port"], "/v1/definitions", f.read())
        if status not in (200, 201):
            raise SystemExit("deploy: HTTP %d %s" % (status, body))
        return db, nodes

    def stop_nodes(self, nodes):
        for nd in nodes:
            nd["proc"].terminate()
        for nd in nodes:
            nd["proc"].wait(timeout=60)

    def cpu(self, nodes):
        c = {"node%d" % nd["id"]: cpu_tree(nd["proc"].pid) for nd in nodes}
        c.update({"postgresql": cpu_tree(self.pg_pid), "kafka": cpu_tree(self.kafka.pid),
                  "echo": cpu_tree(self.echo.pid),
                  # this script and its psql (not cpu_tree: every process here is its child)
                  "driver": stat(os.getpid())[0] + (stat(self.sess.p.pid)[0] if self.sess else 0)})
        return c

    def closed(self, db, nodes, count, k):
        """K in flight until COUNT finished; returns the level's result."""
        sess = self.sess = self.pg.session(db)
        begin_ms = int(sess.query("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                       [0][0])
        errors, start_ms = [], []
        cpu0, busy0, t_begin = self.cpu(nodes), machine_busy(), time.monotonic()
        if self.a.start == "kafka":
            self.kafka_loop(sess, begin_ms, count, k, errors)
        else:
            self.http_loop(sess, begin_ms, nodes, count, k, errors, start_ms)
        secs = time.monotonic() - t_begin
        cpu1, busy1 = self.cpu(nodes), machine_busy()
        # from the start (t0 in the data, the client's clock) to FINISHED (the node's clock)
        lat = [int(r[0]) for r in sess.query(
            "SELECT updated_ms - (blob::json #>> '{data,t0}')::bigint FROM instances "
            "WHERE state = 'FINISHED' AND started_ms >= %d" % begin_ms)]
        for iid, state in sess.query("SELECT id, state FROM instances WHERE state NOT IN "
                                     "('STARTED', 'FINISHED') AND started_ms >= %d LIMIT 5"
                                     % begin_ms):
            errors.append("instance %s ended %s" % (iid, state))
        sess.close()
        self.sess = None
        cores = {p: round((cpu1[p] - cpu0[p]) / secs, 2) for p in cpu1}
        # everything else on the machine (other users of a shared box show up here)
        machine = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * os.cpu_count()
        cores_other = round(max(0.0, machine - sum(cores.values())), 2)
        flowd_s = sum(cpu1[p] - cpu0[p] for p in cpu1 if p.startswith("node"))
        return {"nodes": len(nodes), "k": k, "count": count, "start": self.a.start,
                "completed": len(lat), "seconds": round(secs, 2),
                "completed_per_s": round(len(lat) / secs, 1),
                "latency_ms": {"p50": percentile(lat, 50), "p95": percentile(lat, 95),
                               "p99": percentile(lat, 99), "max": max(lat) if lat else None},
                "http_start_ms": {"p50": percentile(start_ms, 50), "p99": percentile(start_ms, 99),
                                  "max": percentile(start_ms, 100)},
                "cores": cores, "cores_total": round(sum(cores.values()), 2),
                "cores_other": cores_other,
                "flowd_cpu_ms_per_instance": round(1000 * flowd_s / len(lat), 3) if lat else None,
                "errors": errors[:20], "error_count": len(errors)}

    def waiting(self, sess, begin_ms):
        """Instances of this measurement still STARTED (few rows: the state index)."""
        return int(sess.query("SELECT count(*) FROM instances WHERE state = 'STARTED' AND "
                              "started_ms >= %d" % begin_ms)[0][0])

    def kafka_loop(self, sess, begin_ms, count, k, errors):
        """Starts on the start topic (the nodes share its partitions); the confirm topic says
        which were created; created - STARTED rows = done."""
        import kafka
        boot = self.bootstrap.split(",")
        if not self.producer:
            self.producer = kafka.KafkaProducer(bootstrap_servers=boot, linger_ms=1, acks=1)
            self.confirms = kafka.KafkaConsumer(bootstrap_servers=boot, group_id=None,
                                                enable_auto_commit=False, fetch_max_wait_ms=2)
            parts = [kafka.TopicPartition(CONFIRM_TOPIC, p)
                     for p in self.confirms.partitions_for_topic(CONFIRM_TOPIC)]
            self.confirms.assign(parts)
            self.confirms.seek_to_end()
        created, sent, done, last_progress = set(), 0, 0, time.monotonic()
        while done < count:
            while sent < count and sent - done < k:
                body = '{"t0": %d, "request": {"seq": %d, "text": "hello"}}' % (
                    time.time() * 1000, sent)
                self.producer.send(START_TOPIC, body.encode(),
                                   headers=[("Fx-ProcessName", PROCESS.encode())])
                sent += 1
            for msgs in self.confirms.poll(timeout_ms=POLL_MS).values():
                for m in msgs:
                    h = dict(m.headers)
                    if "processInstanceId" in h:
                        created.add(h["processInstanceId"])
                    else:
                        errors.append("start refused: %s" % m.value[:200])
            now = len(created) + len(errors) - self.waiting(sess, begin_ms)
            if now > done:
                done, last_progress = now, time.monotonic()
            elif time.monotonic() - last_progress > self.a.stall:
                errors.append("no instance finished for %d s; %d sent, %d created, %d done" %
                              (self.a.stall, sent, len(created), done))
                return

    def http_loop(self, sess, begin_ms, nodes, count, k, errors, start_ms):
        """Starts over HTTP, spread evenly over the nodes, --threads clients per node; a client
        takes a slot, starts, and the poller frees slots as STARTED rows finish."""
        lock = threading.Lock()
        slots = threading.Semaphore(k)
        st = {"next": 0, "acked": 0, "stop": False}

        def starter(nd):
            conn = None
            while True:
                slots.acquire()
                with lock:
                    if st["stop"] or st["next"] >= count:
                        slots.release()
                        return
                    i = st["next"]
                    st["next"] += 1
                t = time.monotonic()
                for attempt in (1, 2):
                    reused = conn is not None
                    try:
                        conn = conn or http.client.HTTPConnection("127.0.0.1", nd["port"],
                                                                  timeout=30)
                        conn.request("POST", "/v1/processes/%s/start" % PROCESS,
                                     '{"t0": %d, "request": {"seq": %d, "text": "hello"}}' %
                                     (time.time() * 1000, i),
                                     {"Content-Type": "application/json"})
                        r = conn.getresponse()
                        status, data = r.status, r.read()
                        break
                    except (OSError, http.client.HTTPException) as e:
                        conn.close()
                        conn, status, data = None, 0, str(e).encode()
                        # a kept-alive connection the server closed: once more on a new one
                        if not (reused and isinstance(e, (BrokenPipeError, ConnectionResetError,
                                                          http.client.RemoteDisconnected))):
                            break
                with lock:
                    if status == 201:
                        st["acked"] += 1
                        start_ms.append((time.monotonic() - t) * 1000)
                        continue
                    errors.append("start on node %d: HTTP %d %s" % (nd["id"], status, data[:200]))
                    st["stop"] = st["stop"] or len(errors) > 20
                slots.release()

        # each node gets its own clients, fewer than its 16 HTTP workers: a kept-alive
        # connection holds a worker, and one more client would wait for a keep-alive timeout
        threads = [threading.Thread(target=starter, args=(nodes[j % len(nodes)],))
                   for j in range(len(nodes) * min(self.a.threads, max(1, k // len(nodes))))]
        for t in threads:
            t.start()
        done, last_progress = 0, time.monotonic()
        while True:
            waiting = self.waiting(sess, begin_ms)
            with lock:
                now_done = st["acked"] - waiting  # acknowledged starts are in the table
                over = st["stop"] or st["next"] >= count
            for _ in range(now_done - done):
                slots.release()
            if now_done > done:
                done, last_progress = now_done, time.monotonic()
            if over and waiting == 0 and not any(t.is_alive() for t in threads):
                break
            if time.monotonic() - last_progress > self.a.stall:
                errors.append("no instance finished for %d s; %d still STARTED" %
                              (self.a.stall, waiting))
                with lock:
                    st["stop"] = True
                for _ in threads:
                    slots.release()
                break
            time.sleep(POLL_MS / 1000.0)
        for t in threads:
            t.join()

    def level(self, n):
        self.start_kafka(n)
        try:
            return self.measure(n)
        finally:
            self.stop_kafka()

    def measure(self, n):
        db, nodes = self.start_nodes(n)
        try:
            if self.a.warmup:
                self.closed(db, nodes, self.a.warmup, 16)
            res = []
            for k in self.a.k:
                r = self.closed(db, nodes, self.a.count, k)
                dlq = int(self.pg.query("SELECT count(*) FROM outbox WHERE topic LIKE "
                                        "'%engine.dlq%'", db=db)[0][0])
                r["dead_letters"] = dlq
                log("%d node(s) K=%d: %s/s p50 %s p99 %s ms, cores %s%s" % (
                    n, k, r["completed_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p99"],
                    r["cores"], "; %d errors, first: %s" % (r["error_count"], r["errors"][0])
                    if r["errors"] else ""))
                res.append(r)
            return res
        finally:
            self.stop_nodes(nodes)

    def cleanup(self):
        if self.producer:
            self.producer.close(timeout=5)
            self.confirms.close()
            self.producer = self.confirms = None
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.pg:
            self.pg.stop()
        if self.a.keep:
            log("files kept in %s" % self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def post(port, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("POST", path, body, {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def summary(res, path):
    print("\nflowd multi-node benchmark %s (%s, %d cores; %s)" % (
        res["date"], res["machine"]["cpu_model"], res["machine"]["nproc"], path))
    procs = ["flowd", "postgresql", "kafka", "echo", "driver"]
    fmt = "%-5s %4s %8s %7s %7s %9s %11s " + " ".join("%10s" for _ in procs) + " %6s %6s  %s"
    print(fmt % tuple(["nodes", "K", "inst/s", "p50 ms", "p99 ms", "start p99", "cpu ms/inst"] +
                      procs + ["cores", "other", "errors"]))
    for r in res["levels"]:
        c = r["cores"]
        fl = "+".join("%.2f" % c[p] for p in sorted(c) if p.startswith("node"))
        print(fmt % tuple([r["nodes"], r["k"], r["completed_per_s"], r["latency_ms"]["p50"],
                           r["latency_ms"]["p99"], r["http_start_ms"]["p99"] or "-",
                           r["flowd_cpu_ms_per_instance"], fl] +
                          [c[p] for p in procs[1:]] + [r["cores_total"], r["cores_other"],
                                                        r["error_count"] + r["dead_letters"]]))
    print("p50/p99: start to FINISHED; start p99: the HTTP start (--start http); cores: CPU "
          "seconds per second of each process (flowd: per node), other: the rest of the "
          "machine (%d cores)" % res["machine"]["nproc"])
    for r in res["levels"]:
        if r["errors"] or r["dead_letters"]:
            print("nodes=%d K=%d: %d error(s), %d dead letter(s); first error: %s" % (
                r["nodes"], r["k"], r["error_count"], r["dead_letters"],
                r["errors"][0] if r["errors"] else "-"))


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": os.uname().release,
            "loadavg_at_start": os.getloadavg()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build-release"))
    ap.add_argument("--nodes", default="1,2,3", help="node counts, in order")
    ap.add_argument("--k", default="64,256", help="instances in flight (a list: 16,64)")
    ap.add_argument("--count", type=int, default=5000, help="instances per measurement")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--start", choices=("kafka", "http"), default="kafka",
                    help="start topic (shared by partitions; as make bench) or the HTTP APIs")
    ap.add_argument("--threads", type=int, default=12,
                    help="HTTP start clients per node (a start waits for its commit; flowd has "
                         "16 HTTP workers)")
    ap.add_argument("--stall", type=int, default=20, help="seconds without a completion: give up")
    ap.add_argument("--quick", action="store_true", help="--count 1000 --warmup 100")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    a.k = [int(x) for x in a.k.split(",")]
    if a.quick:
        a.count, a.warmup = 1000, 100
    b = Bench(a)
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
           "process": PROCESS, "connector": "sdk-echo-connector", "store": "postgresql",
           "note": "2 cores shared with other work: compare the node counts of one run",
           "levels": []}
    try:
        b.setup()
        for n in [int(x) for x in a.nodes.split(",")]:
            res["levels"] += b.level(n)
    finally:
        b.cleanup()
        outdir = os.path.join(SRC, "bench/results")
        os.makedirs(outdir, exist_ok=True)
        path = os.path.join(outdir, "multinode-%s.json" % datetime.date.today().isoformat())
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
    summary(res, path)


if __name__ == "__main__":
    main()
