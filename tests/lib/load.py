#!/usr/bin/python3
"""load.py - concurrent HTTP client for the flowd integration tests (standard library only).

Subcommands (all talk to --url, e.g. http://127.0.0.1:8080, over keep-alive connections,
one per thread):

  start  --key K --count N [--threads T] [--data JSON] --out FILE
         starts N instances of K concurrently; the body is --data with every "{i}" replaced by
         the request number (0..N-1), e.g. '{"customerId": {i}}'. Writes one instance id a line
         to FILE and prints "started N in S s (R/s)". Exits 1 if any start was not HTTP 201.
  wait   --ids FILE --state STATE [--token NODE:TOKEN_STATE] [--timeout S] [--threads T]
         polls every instance until all are in STATE (and, with --token, have a token in NODE
         with TOKEN_STATE, e.g. wait_customer:WAITING_MESSAGE); prints "all N STATE after S s"
         or lists the ones that are not and exits 1. --timeout 0 checks once.
  check  --ids FILE [--threads T] [--expect-node NODE]... [--state STATE]
         [--finished-after ISO [--min-after N]]
         fetches every instance and checks its history: exactly one FINISHED row and exactly
         one MESSAGE_RECEIVED row (no step applied twice), optional final state; with
         --expect-node the FINISHED row's node must be one of them. Prints a summary of the end
         nodes reached; exits 1 on the first violations (up to 10 printed). --finished-after
         counts the instances whose FINISHED row is at or after the ISO 8601 UTC time (same
         format as flowd's, e.g. 2026-01-02T03:04:05.678Z) and fails if fewer than --min-after.
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse


class Client:
    """One keep-alive HTTP connection; reconnects once on a dropped connection."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.conn = None

    def request(self, method, path, body=None):
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return resp.status, data
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise RuntimeError("unreachable")

    def get_json(self, path):
        status, data = self.request("GET", path)
        return status, (json.loads(data) if data else None)


def run_threads(n_threads, items, work):
    """Calls work(client, item) for every item from n_threads threads; returns the results
    in item order. An exception in a worker is returned as its result."""
    results = [None] * len(items)
    lock = threading.Lock()
    next_index = [0]

    def worker():
        client = Client(ARGS.url)
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= len(items):
                return
            try:
                results[i] = work(client, items[i])
            except Exception as e:  # noqa: BLE001 - reported by the caller
                results[i] = e

    threads = [threading.Thread(target=worker) for _ in range(max(1, n_threads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def read_ids(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def cmd_start(args):
    path = "/v1/processes/%s/start" % urllib.parse.quote(args.key)

    def work(client, i):
        body = args.data.replace("{i}", str(i)).encode()
        status, data = client.request("POST", path, body)
        if status != 201:
            return RuntimeError("start %d: HTTP %d %s" % (i, status, data[:200]))
        return json.loads(data)["id"]

    t0 = time.monotonic()
    results = run_threads(args.threads, list(range(args.count)), work)
    elapsed = time.monotonic() - t0
    errors = [r for r in results if isinstance(r, Exception)]
    ids = [r for r in results if not isinstance(r, Exception)]
    with open(args.out, "w") as f:
        for i in ids:
            f.write("%s\n" % i)
    print("started %d in %.2f s (%.0f/s)" % (len(ids), elapsed, len(ids) / max(elapsed, 1e-9)))
    if errors:
        for e in errors[:10]:
            print("error: %s" % e, file=sys.stderr)
        print("%d starts failed" % len(errors), file=sys.stderr)
        return 1
    if len(set(ids)) != len(ids):
        print("duplicate instance ids returned", file=sys.stderr)
        return 1
    return 0


def cmd_wait(args):
    pending = read_ids(args.ids)
    total = len(pending)
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    last = {}
    while pending:

        def work(client, iid):
            status, j = client.get_json("/v1/instances/%s" % iid)
            if status != 200:
                return "HTTP %d" % status
            state = j.get("state")
            if args.token:
                tokens = ["%s:%s" % (t.get("node"), t.get("state")) for t in j.get("tokens") or []]
                if args.token not in tokens:
                    return "%s tokens %s" % (state, tokens)
            return state

        states = run_threads(args.threads, pending, work)
        last = dict(zip(pending, states))
        pending = [i for i, s in last.items() if s != args.state]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    if pending:
        print("%d/%d instances not %s after %.1f s, e.g.:" %
              (len(pending), total, args.state, elapsed), file=sys.stderr)
        for i in pending[:10]:
            print("  %s: %s" % (i, last.get(i)), file=sys.stderr)
        return 1
    print("all %d %s%s after %.2f s" % (total, args.state,
                                       " with token " + args.token if args.token else "", elapsed))
    return 0


def cmd_check(args):
    ids = read_ids(args.ids)

    def work(client, iid):
        status, j = client.get_json("/v1/instances/%s" % iid)
        if status != 200:
            return "HTTP %d" % status
        return j

    results = run_threads(args.threads, ids, work)
    problems = []
    ends = {}
    after = 0
    for iid, j in zip(ids, results):
        if not isinstance(j, dict):
            problems.append("%s: %s" % (iid, j))
            continue
        hist = j.get("history") or []
        finished = [h for h in hist if h.get("state") == "FINISHED"]
        received = [h for h in hist if h.get("state") == "MESSAGE_RECEIVED"]
        if len(finished) != 1:
            problems.append("%s: %d FINISHED rows" % (iid, len(finished)))
        if len(received) != 1:
            problems.append("%s: %d MESSAGE_RECEIVED rows" % (iid, len(received)))
        if args.state and j.get("state") != args.state:
            problems.append("%s: state %s, not %s" % (iid, j.get("state"), args.state))
        if finished:
            node = finished[-1].get("node")
            if args.finished_after and (finished[-1].get("at") or "") >= args.finished_after:
                after += 1
            ends[node] = ends.get(node, 0) + 1
            if args.expect_node and node not in args.expect_node:
                problems.append("%s: ended in %s" % (iid, node))
    print("checked %d instances; end nodes: %s" %
          (len(ids), ", ".join("%s=%d" % kv for kv in sorted(ends.items()))))
    if args.finished_after:
        print("%d finished at or after %s" % (after, args.finished_after))
        if after < args.min_after:
            problems.append("only %d finished at or after %s, expected at least %d" %
                            (after, args.finished_after, args.min_after))
    if problems:
        for p in problems[:10]:
            print("problem: %s" % p, file=sys.stderr)
        print("%d problems" % len(problems), file=sys.stderr)
        return 1
    return 0


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start")
    p.add_argument("--key", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--data", default="{}")
    p.add_argument("--out", required=True)
    p = sub.add_parser("wait")
    p.add_argument("--ids", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--token")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--threads", type=int, default=16)
    p = sub.add_parser("check")
    p.add_argument("--ids", required=True)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--state")
    p.add_argument("--expect-node", action="append")
    p.add_argument("--finished-after")
    p.add_argument("--min-after", type=int, default=0)
    ARGS = ap.parse_args()
    return {"start": cmd_start, "wait": cmd_wait, "check": cmd_check}[ARGS.cmd](ARGS)


ARGS = None

if __name__ == "__main__":
    sys.exit(main())
