#!/usr/bin/python3
"""Closed-loop load for flowd: keeps K instances in flight until N have completed, then reads
start-to-complete latencies from the store (engine timestamps, ms) and prints a JSON summary.

usage: e2e_load.py --url http://127.0.0.1:8080 --db DATA/flowd.db --key customer-onboarding
                   --count 2000 --concurrency 64
"""
import argparse
import http.client
import json
import sqlite3
import threading
import time
import urllib.parse


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--key", default="customer-onboarding")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()

    u = urllib.parse.urlparse(args.url)
    ids = []
    lock = threading.Lock()
    next_i = [0]
    db = sqlite3.connect(args.db, timeout=30)

    # closed loop: `concurrency` slots; a worker takes a slot and starts an instance; one poller
    # reads finished instances from the store and frees their slots
    slots = threading.Semaphore(args.concurrency)
    pending = set()
    done_ids = set()
    stop = threading.Event()

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        while True:
            with lock:
                i = next_i[0]
                if i >= args.count:
                    return
                next_i[0] += 1
            slots.acquire()
            body = json.dumps({"customerId": 1 + (i % 997)})
            for attempt in range(3):
                try:
                    conn.request("POST", "/v1/processes/%s/start" % args.key, body,
                                 {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    data = r.read()
                    break
                except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                    # the server closed an idle keep-alive connection: reconnect, send again
                    conn.close()
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            if r.status != 201:
                raise SystemExit("start failed: %d %s" % (r.status, data))
            iid = json.loads(data)["id"]
            with lock:
                ids.append(iid)
                if json.loads(data)["state"] != "STARTED":
                    done_ids.add(iid)
                    slots.release()
                else:
                    pending.add(iid)

    def poller():
        pdb = sqlite3.connect(args.db, timeout=30)
        while not stop.is_set():
            with lock:
                waiting = list(pending)
            if waiting:
                marks = ",".join("?" * len(waiting))
                rows = pdb.execute("SELECT id FROM instances WHERE state != 'STARTED' AND id IN (%s)"
                                   % marks, waiting).fetchall()
                with lock:
                    for (iid,) in rows:
                        if iid in pending:
                            pending.discard(iid)
                            done_ids.add(iid)
                            slots.release()
            time.sleep(0.001)

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(min(args.concurrency, 32))]
    pt = threading.Thread(target=poller)
    pt.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        with lock:
            if all(i in done_ids for i in ids):
                break
        time.sleep(0.01)
    stop.set()
    pt.join()
    wall = time.time() - t0

    mine = set(ids)
    rows = [r[1:] for r in db.execute("SELECT id, state, started_ms, updated_ms FROM instances")
            if r[0] in mine]
    done = [r for r in rows if r[0] == "FINISHED"]
    lat = sorted(r[2] - r[1] for r in done)
    first = min(r[1] for r in rows)
    last = max(r[2] for r in done) if done else first
    out = {
        "instances": len(ids),
        "completed": len(done),
        "wall_s": round(wall, 3),
        "completed_per_s": round(len(done) / max(0.001, (last - first) / 1000.0), 1),
        "latency_ms": {
            "p50": percentile(lat, 50),
            "p95": percentile(lat, 95),
            "p99": percentile(lat, 99),
            "max": lat[-1] if lat else None,
        },
        "concurrency": args.concurrency,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
