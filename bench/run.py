#!/usr/bin/python3
"""run.py - `make bench`: flowd end to end (closed and open loop, SQLite FULL and NORMAL, and
PostgreSQL on a private server started here), memory with 100,000 waiting instances, the engine core alone, the machine's limits (raw librdkafka
round trips through flowd's embedded cluster, batched SQLite commits), and npm's bpmn-engine
side by side. Writes bench/results/<date>.json and bench/results/<date>.png, prints a table.

usage: bench/run.py [--build build-release] [--quick]
"""
import argparse
import datetime
import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESS = "bench-echo"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def proc_stats(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)
    hwm = rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024.0
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
    return {"cpu_s": round(cpu, 2), "peak_rss_mib": round(hwm, 1), "rss_mib": round(rss, 1)}


class Flowd:
    def __init__(self, build, work, name, sets=(), dsn=None, pg=None, bootstrap_file=None):
        self.pg = pg  # the Postgres server holding the store, or None
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        args = [os.path.join(build, "flowd"), "--data-dir", self.data,
                "--set", "http.port=%d" % self.port]
        if bootstrap_file:  # an external cluster
            with open(bootstrap_file) as f:
                args += ["--set", "kafka.bootstrap-servers=" + f.read().strip()]
        for s in sets:
            args += ["--set", s]
        self.logf = open(os.path.join(self.dir, "flowd.log"), "w")
        self.p = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT)
        for _ in range(300):
            with open(self.logf.name) as f:
                if "flowd: ready" in f.read():
                    break
            if self.p.poll() is not None:
                raise SystemExit("flowd exited: see " + self.logf.name)
            time.sleep(0.1)
        self.bootstrap_file = bootstrap_file or os.path.join(self.data, "kafka.bootstrap")
        with open(self.bootstrap_file) as f:
            self.bootstrap = f.read().strip()
        self.db = dsn or os.path.join(self.data, "flowd.db")
        with open(os.path.join(SRC, "bench/processes/echo.json"), "rb") as f:
            req = urllib.request.Request("http://127.0.0.1:%d/v1/definitions" % self.port, f.read(),
                                         {"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()

    def stats(self):
        return proc_stats(self.p.pid)

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)


class Postgres:
    """A private PostgreSQL server for the bench (as tests/integration/test_postgres_store.sh):
    initdb + pg_ctl in the work dir, trust auth, 127.0.0.1 on a free port, run as user postgres
    when root. fsync and synchronous_commit stay on (the defaults): a commit is on disk, as with
    SQLite synchronous=FULL."""

    def __init__(self, work):
        self.bin = None
        cands = [subprocess.run(["pg_config", "--bindir"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True).stdout.strip()
                 if shutil.which("pg_config") else ""]
        cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: int(re.sub(r"\D", "", p) or 0), reverse=True)
        for c in cands:
            if c and os.access(os.path.join(c, "initdb"), os.X_OK):
                self.bin = c
                break
        if not self.bin:
            raise RuntimeError("no PostgreSQL server binaries (install postgresql)")
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        self.as_user = []
        if os.getuid() == 0:  # initdb and postgres refuse to run as root
            shutil.chown(self.dir, "postgres")
            os.chmod(work, 0o711)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        data = os.path.join(self.dir, "data")
        self._run(["initdb", "-D", data, "-A", "trust", "-U", "flowd", "--no-sync", "-E", "UTF8",
                   "--locale=C"])
        self._run(["pg_ctl", "-D", data, "-l", os.path.join(self.dir, "server.log"), "-w", "-t",
                   "30", "-o", "-k %s -c listen_addresses=127.0.0.1 -p %d -c fsync=on "
                   "-c synchronous_commit=on" % (self.dir, self.port), "start"])
        self.started = True
        self.dsn = "host=127.0.0.1 port=%d user=flowd dbname=" % self.port
        self.version = subprocess.run([os.path.join(self.bin, "postgres"), "--version"],
                                      stdout=subprocess.PIPE, text=True).stdout.strip()

    def _run(self, args):
        r = subprocess.run(self.as_user + [os.path.join(self.bin, args[0])] + args[1:],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("%s failed: %s" % (args[0], r.stdout[-1000:]))

    def createdb(self, name):
        r = subprocess.run([os.path.join(self.bin, "createdb"), "-h", "127.0.0.1", "-p",
                            str(self.port), "-U", "flowd", name], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("createdb failed: " + r.stdout)
        return self.dsn + name

    def cpu_s(self):
        """CPU (user+sys) of the postmaster and its processes (the backends serving flowd)."""
        with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
            root = int(f.readline())
        total = 0.0
        for st in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(st) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(st.split("/")[2])
            if pid == root or int(fields[1]) == root:
                total += (int(fields[11]) + int(fields[12])) / TICK
        return total

    def stop(self):
        self._run(["pg_ctl", "-D", os.path.join(self.dir, "data"), "-m", "fast", "-w", "stop"])


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_json(args, timeout=600):
    out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=timeout)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError("%s failed (%d): %s %s" % (args[0], out.returncode, out.stdout[-500:],
                                                      out.stderr[-500:]))
    r = json.loads(lines[-1])
    for l in out.stderr.splitlines():  # flow_load's breakdown of the latency
        if l.startswith('{"legs_ms"'):
            r.update(json.loads(l))
    return r


def load(build, fl, mode, a, b=None):
    args = [os.path.join(build, "bench/flow_load"), mode, fl.bootstrap, fl.db, PROCESS, str(a)]
    if b is not None:
        args.append(str(b))
    before = fl.stats()
    pg0 = fl.pg.cpu_s() if fl.pg else 0
    r = run_json(args)
    after = fl.stats()
    r["flowd_cpu_s"] = round(after["cpu_s"] - before["cpu_s"], 2)
    r["flowd_peak_rss_mib"] = after["peak_rss_mib"]
    if fl.pg:
        r["postgres_cpu_s"] = round(fl.pg.cpu_s() - pg0, 2)
    if r.get("completed"):
        r["flowd_cpu_ms_per_instance"] = round(1000 * r["flowd_cpu_s"] / r["completed"], 3)
        if fl.pg:
            r["postgres_cpu_ms_per_instance"] = round(1000 * r["postgres_cpu_s"] / r["completed"], 3)
    return r


def e2e(build, work, sync, levels, rates, perf_k=None, pg=None):
    """One flowd (fresh store) + the SDK echo connector; closed loop levels, then open loop.
    sync: SQLite's synchronous setting, or "PG" for PostgreSQL (pg: the Postgres server)."""
    if sync == "PG":
        dsn = pg.createdb("bench")
        fl = Flowd(build, work, "e2e-pg", ["store.type=postgresql", "store.postgresql.dsn=" + dsn],
                   dsn=dsn, pg=pg)
    else:
        fl = Flowd(build, work, "e2e-" + sync, ["store.sqlite.synchronous=" + sync])
    echo = subprocess.Popen([os.path.join(build, "examples/sdk-echo-connector"), "--bootstrap-file",
                             fl.bootstrap_file], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(fl.dir, "echo.log"), "w"))
    res = {"synchronous": sync, "closed": [], "open": []}
    try:
        load(build, fl, "closed", 300, 16)  # warm-up: topics, consumer groups settled
        for k, count in levels:
            perf = None
            if perf_k == k and shutil.which("perf"):
                perf_data = os.path.join(work, "perf.data")
                perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-e", "cpu-clock",
                                         "-p", str(fl.p.pid), "-o", perf_data],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            r = load(build, fl, "closed", count, k)
            if perf:
                perf.send_signal(2)
                perf.wait(timeout=60)
                res["perf"] = perf_top(perf_data)
            log("%s closed K=%d: %s/s p50 %s p99 %s ms" % (sync, k, r["completed_per_s"],
                r["latency_ms"]["p50"], r["latency_ms"]["p99"]))
            res["closed"].append(r)
        for rate, secs in rates:
            r = load(build, fl, "open", rate, secs)
            log("%s open %d/s: %s/s p50 %s p99 %s ms" % (sync, rate, r["completed_per_s"],
                r["latency_ms"]["p50"], r["latency_ms"]["p99"]))
            res["open"].append(r)
        res["flowd"] = fl.stats()
    finally:
        echo.terminate()
        echo.wait(timeout=30)
        fl.stop()
    return res


def perf_top(perf_data, n=25):
    out = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--sort",
                          "dso,symbol", "--stdio", "-g", "none", "--percent-limit", "0.7"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)$", line)
        if m:
            sym = re.sub(r"(\s+-)+\s*$", "", m.group(3)).strip()
            rows.append({"pct": float(m.group(1)), "dso": m.group(2), "symbol": sym})
    out = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--sort", "dso",
                          "--stdio", "-g", "none"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout
    dsos = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if m:
            dsos.append({"pct": float(m.group(1)), "dso": m.group(2)})
    samples = re.search(r"Samples: (\S+)", out)
    return {"samples": samples.group(1) if samples else None, "by_dso": dsos[:12],
            "top_symbols": rows[:n]}


def memory(build, work, count, external=False, sets=()):
    """count instances left waiting (no connector); flowd's RSS. external: the Kafka cluster is
    a separate `flowd kafka` process (its RSS reported apart), not embedded in flowd."""
    name = "memory" + ("-external" if external else "") + "".join("-" + x for x in sets)
    broker = None
    bootstrap_file = None
    if external:
        os.makedirs(os.path.join(work, name + "-kafka"))
        bootstrap_file = os.path.join(work, name + "-kafka", "bootstrap")
        broker = subprocess.Popen([os.path.join(build, "flowd"), "kafka", "--partitions", "4",
                                   "--bootstrap-file", bootstrap_file],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(bootstrap_file) and os.path.getsize(bootstrap_file):
                break
            time.sleep(0.1)
    fl = None
    try:
        fl = Flowd(build, work, name, sets, bootstrap_file=bootstrap_file)
        idle = fl.stats()
        r = load(build, fl, "park", count)
        time.sleep(1)
        st = fl.stats()
        r.update({"kafka": "external" if external else "embedded", "settings": list(sets),
                  "idle_rss_mib": idle["rss_mib"], "flowd_peak_rss_mib": st["peak_rss_mib"],
                  "flowd_rss_mib": st["rss_mib"],
                  "kib_per_waiting_instance": round((st["rss_mib"] - idle["rss_mib"]) * 1024 / count, 2)})
        if broker:
            r["broker_peak_rss_mib"] = proc_stats(broker.pid)["peak_rss_mib"]
        log("memory (%s Kafka%s): %d waiting, flowd peak RSS %.1f MiB%s" % (
            r["kafka"], "".join(", " + x for x in sets), r["created"], st["peak_rss_mib"],
            ", broker %.1f MiB" % r["broker_peak_rss_mib"] if broker else ""))
    finally:
        if fl:
            fl.stop()
        if broker:
            broker.terminate()
            broker.wait(timeout=30)
    return r


def limits(build, work, count):
    """Raw librdkafka echo round trips through flowd's embedded cluster; the SDK echo on the
    same; batched SQLite commits (test_store's printed throughput)."""
    fl = Flowd(build, work, "limits")
    res = {}
    try:
        bench = os.path.join(build, "bench/sdk_bench")
        for kind in ("raw", "sdk"):
            inn, out = "bench.%s.in" % kind, "ai.flowx.dev.engine.receive.bench%s.v1" % kind
            if kind == "raw":
                p = subprocess.Popen([bench, "raw-echo", fl.bootstrap, inn, out])
            else:
                p = subprocess.Popen([os.path.join(build, "examples/sdk-echo-connector"),
                                      "--bootstrap", fl.bootstrap, "--in", inn, "--out", out,
                                      "--group", "bench-sdk"], stderr=subprocess.DEVNULL)
            try:
                res["kafka_%s_echo" % kind] = run_json([bench, "load", fl.bootstrap, inn, out,
                                                       str(count), "64"])
            finally:
                p.terminate()
                p.wait(timeout=30)
            log("kafka %s echo: %s" % (kind, res["kafka_%s_echo" % kind]))
    finally:
        fl.stop()
    out = subprocess.run([os.path.join(build, "test_store")], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd=work).stdout
    for m in re.finditer(r"synchronous=(\w+), batches of (\d+)\): (\d+) instances .* = (\d+) "
                         r"instances/s, (\d+) rows/s", out):
        res["sqlite_%s" % m.group(1)] = {"batch": int(m.group(2)), "instances_per_s": int(m.group(4)),
                                         "rows_per_s": int(m.group(5)),
                                         "commits_per_s": round(int(m.group(4)) / int(m.group(2)), 1)}
    log("sqlite: %s" % {k: v for k, v in res.items() if k.startswith("sqlite")})
    return res


def peer(build, levels):
    mod = os.path.join(build, "bench-node")
    if not shutil.which("node") or not shutil.which("npm"):
        return {"unavailable": "node/npm not installed"}
    if not os.path.isdir(os.path.join(mod, "node_modules/bpmn-engine")):
        os.makedirs(mod, exist_ok=True)
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", mod,
                            "bpmn-engine"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=300)
        if r.returncode != 0:
            return {"unavailable": "npm install bpmn-engine failed: " + r.stdout[-300:]}
    with open(os.path.join(mod, "node_modules/bpmn-engine/package.json")) as f:
        version = json.load(f)["version"]
    res = {"package": "bpmn-engine", "version": version, "node": subprocess.run(
        ["node", "--version"], stdout=subprocess.PIPE, text=True).stdout.strip(), "closed": []}
    for k, count in levels:
        r = run_json(["node", os.path.join(SRC, "bench/node/bpmn_bench.js"), mod, str(count), str(k)])
        log("bpmn-engine K=%d: %s/s p99 %s ms" % (k, r["completed_per_s"], r["latency_ms"]["p99"]))
        res["closed"].append(r)
    return res


def engine_instructions(build):
    """Stable numbers on a noisy machine: callgrind instruction counts of engine_bench at two
    sizes; the difference is the cost of the extra instances (no start-up cost)."""
    if not shutil.which("valgrind"):
        return {"unavailable": "valgrind not installed"}
    ir = {}
    for n in (1000, 3000):
        out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                              os.path.join(build, "bench/engine_bench"),
                              os.path.join(SRC, "bench/processes/echo.json"), str(n)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stderr
        m = re.search(r"Collected : (\d+)", out)
        if not m:
            return {"unavailable": out[-300:]}
        ir[n] = int(m.group(1))
    per = (ir[3000] - ir[1000]) / 2000.0
    return {"instructions_per_instance": round(per), "instructions_per_transition": round(per / 6)}


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem, 1),
            "kernel": os.uname().release, "loadavg_at_start": os.getloadavg()}


# ---- a tiny PNG writer (no matplotlib here) --------------------------------------------------

FONT = {  # 3x5 digits and a few letters, for axis labels
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "/": "001001010100100",
    "m": "000000111111101", "s": "000011010001110", "k": "100101110101101", " ": "000000000000000",
}


def png(path, w, h, series, xmax, ymax, xlabel_step, ylabel_step):
    img = [[(255, 255, 255)] * w for _ in range(h)]
    L, B = 40, 20

    def put(x, y, c):
        if 0 <= x < w and 0 <= y < h:
            img[y][x] = c

    def text(x, y, s, c=(0, 0, 0)):
        for ch in s:
            g = FONT.get(ch, FONT[" "])
            for i, bit in enumerate(g):
                if bit == "1":
                    for dx in range(2):
                        for dy in range(2):
                            put(x + (i % 3) * 2 + dx, y + (i // 3) * 2 + dy, c)
            x += 8

    def px(xv, yv):
        return (L + int((w - L - 10) * min(xv, xmax) / xmax),
                h - B - int((h - B - 10) * min(yv, ymax) / ymax))

    for x in range(L, w - 10):
        put(x, h - B, (0, 0, 0))
    for y in range(10, h - B):
        put(L, y, (0, 0, 0))
    v = 0
    while v <= xmax:
        x, _ = px(v, 0)
        for y in range(10, h - B):
            put(x, y, (225, 225, 225)) if y % 3 == 0 else None
        text(x - 8, h - B + 5, ("%.1fk" % (v / 1000.0)).replace(".0k", "k") if v >= 1000
             else str(int(v)))
        v += xlabel_step
    v = 0
    while v <= ymax:
        _, y = px(0, v)
        for x in range(L, w - 10):
            put(x, y, (225, 225, 225)) if x % 3 == 0 else None
        text(2, y - 5, str(int(v)))
        v += ylabel_step
    for color, pts, joined in series:
        prev = None
        for xv, yv in pts:
            cx, cy = px(xv, yv)
            for dx in range(-3, 4):
                for dy in range(-3, 4):
                    put(cx + dx, cy + dy, color)
            if prev and joined:
                n = max(abs(cx - prev[0]), abs(cy - prev[1]), 1)
                for i in range(n + 1):
                    put(prev[0] + (cx - prev[0]) * i // n, prev[1] + (cy - prev[1]) * i // n, color)
            prev = (cx, cy)
    raw = b"".join(b"\x00" + bytes(c for p in row for c in p) for row in img)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def plot(path, res):
    """x: completed instances/s, y: p99 latency (ms, clipped at 2 s). Blue: flowd FULL, green:
    flowd NORMAL, purple: flowd PostgreSQL, red: bpmn-engine; joined: closed loop in K order; lone squares: open loop."""
    series = []
    for color, key in (((30, 90, 200), "e2e_full"), ((20, 160, 60), "e2e_normal"),
                       ((150, 60, 180), "e2e_pg")):
        if "closed" in res.get(key, {}):
            for kind in ("closed", "open"):
                pts = [(r["completed_per_s"], r["latency_ms"]["p99"] or 0) for r in res[key][kind]]
                series.append((color, pts, kind == "closed"))
    if res.get("peer", {}).get("closed"):
        series.append(((210, 40, 40), [(r["completed_per_s"], r["latency_ms"]["p99"])
                                       for r in res["peer"]["closed"]], True))
    xs = [p[0] for _, s, _ in series for p in s] or [1]
    ys = [p[1] for _, s, _ in series for p in s] or [1]
    xmax = max(500, int(max(xs) * 1.1 / 500 + 1) * 500)
    ymax = max(50, int(min(max(ys), 2000) * 1.1 / 50 + 1) * 50)
    png(path, 640, 400, series, xmax, ymax, max(500, xmax // 8 // 500 * 500),
        max(50, ymax // 8 // 50 * 50))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build-release"))
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    q = 5 if args.quick else 1
    levels = [(1, 400 // q), (16, 4000 // q), (64, 8000 // q), (256, 8000 // q)]
    rates = [(200, 10 // q or 2), (500, 10 // q or 2), (1000, 10 // q or 2), (2000, 10 // q or 2)]
    work = tempfile.mkdtemp(prefix="flowd-bench.")
    t0 = time.time()
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
           "note": "2 cores shared with other work: numbers are noisy; instruction counts and "
                   "ratios measured in the same run are the stable part"}
    try:
        log("engine core")
        res["engine"] = {"step": run_json([os.path.join(build, "bench/engine_bench"),
                                           os.path.join(SRC, "bench/processes/echo.json"), "200000"]),
                         "step_and_serialise": run_json([os.path.join(build, "bench/engine_bench"),
                                                         os.path.join(SRC, "bench/processes/echo.json"),
                                                         "100000", "--persist"])}
        res["engine"]["instructions"] = engine_instructions(build)
        log("engine: %s" % res["engine"])
        res["limits"] = limits(build, work, 20000 // q)
        res["e2e_full"] = e2e(build, work, "FULL", levels, rates, perf_k=64)
        res["e2e_normal"] = e2e(build, work, "NORMAL", levels[2:], rates[2:])
        try:
            pg = Postgres(work)
        except Exception as e:
            log("postgresql: %s" % e)
            res["e2e_pg"] = {"unavailable": str(e)}
        else:
            try:
                res["e2e_pg"] = e2e(build, work, "PG", levels[2:], rates[1:2], pg=pg)
                res["e2e_pg"]["server"] = pg.version + ", fsync=on, synchronous_commit=on"
            finally:
                pg.stop()
        res["memory_100k_waiting"] = memory(build, work, 100000 // q)
        res["memory_100k_waiting_external_kafka"] = memory(build, work, 100000 // q, external=True)
        res["peer"] = peer(build, [(1, 300 // q), (64, 3000 // q)])
    finally:
        res["total_s"] = round(time.time() - t0, 1)
        outdir = os.path.join(SRC, "bench/results")
        os.makedirs(outdir, exist_ok=True)
        stamp = datetime.date.today().isoformat()
        with open(os.path.join(outdir, stamp + ".json"), "w") as f:
            json.dump(res, f, indent=1)
        try:
            plot(os.path.join(outdir, stamp + ".png"), res)
        except Exception as e:  # the plot is a convenience
            log("plot failed: %s" % e)
        shutil.rmtree(work, ignore_errors=True)
    summary(res, os.path.join(outdir, stamp + ".json"))


def summary(res, path):
    print("\nflowd benchmark %s  (%s, %d cores; %s)" % (res["date"], res["machine"]["cpu_model"],
                                                       res["machine"]["nproc"], path))
    fmt = "%-34s %10s %8s %8s %8s %8s %10s"
    print(fmt % ("scenario", "inst/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "cpu ms/inst"))
    for key in ("e2e_full", "e2e_normal", "e2e_pg"):
        for r in res.get(key, {}).get("closed", []) + res.get(key, {}).get("open", []):
            store = {"PG": "PostgreSQL"}.get(res[key]["synchronous"], res[key]["synchronous"])
            name = "%s %s" % (store, "closed K=%d" % r["k"] if r["mode"] == "closed"
                              else "open %d/s" % r["rate"])
            l = r["latency_ms"]
            print(fmt % (name, r["completed_per_s"], l["p50"], l["p95"], l["p99"], l["max"],
                         r.get("flowd_cpu_ms_per_instance", "")))
    for r in res.get("peer", {}).get("closed", []):
        l = r["latency_ms"]
        print(fmt % ("bpmn-engine closed K=%d" % r["k"], r["completed_per_s"], l["p50"], l["p95"],
                     l["p99"], l["max"], ""))
    e = res.get("engine", {}).get("step")
    if e:
        print("engine core: %s transitions/s, %s allocs/transition" % (e["transitions_per_s"],
                                                                      e["allocs_per_transition"]))
    lim = res.get("limits", {})
    best = max((r["completed_per_s"] for k in ("e2e_full",) for r in res.get(k, {}).get("closed", [])),
               default=0)
    if "kafka_raw_echo" in lim:
        raw = lim["kafka_raw_echo"]["round_trips_per_s"]
        print("raw librdkafka echo: %s round trips/s; flowd FULL best / raw = %.3f" % (raw, best / raw))
    if "sqlite_FULL" in lim:
        s = lim["sqlite_FULL"]["instances_per_s"]
        print("SQLite FULL batched: %s instances/s (%s commits/s); flowd / sqlite = %.3f"
              % (s, lim["sqlite_FULL"]["commits_per_s"], best / s))
    m = res.get("memory_100k_waiting")
    if m:
        print("memory: %s waiting instances, flowd peak RSS %s MiB (embedded Kafka)"
              % (m["created"], m["flowd_peak_rss_mib"]))
    m = res.get("memory_100k_waiting_external_kafka")
    if m:
        print("memory: %s waiting instances, flowd peak RSS %s MiB (external Kafka, broker %s MiB)"
              % (m["created"], m["flowd_peak_rss_mib"], m.get("broker_peak_rss_mib")))
    print("total %.0f s" % res["total_s"])


if __name__ == "__main__":
    main()
