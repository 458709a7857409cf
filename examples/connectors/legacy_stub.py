#!/usr/bin/python3
"""legacy_stub.py - a tiny fake "legacy core banking" HTTP service for the flowd demo and tests.

The example connectors (quickstart.c, python/connector.py) talk to it the way a real connector
talks to a mainframe gateway or an old REST API. Everything it answers is deterministic, so
tests can predict the outcome of a process:

  GET  /customers/<id>  -> 200 {"customerId": id, "name": ..., "segment": "retail"|"premium",
                                "found": true}
                           404 {"customerId": id, "found": false} when the id ends in 0
  POST /score           body {"clientId": ..., "amount": N}
                        -> 200 {"clientId": ..., "score": S, "approved": amount <= 10000}
  GET  /stats           -> 200 {"requests": total, "customers": n, "score": n, "errors": n}
  GET  /health          -> 200 {"status": "ok"}

Segment rule: the customer is "premium" when the sum of the digits of its id is even, else
"retail" (e.g. 42 -> premium, 7 -> retail, 10 -> not found).

Usage: /usr/bin/python3 legacy_stub.py [--port N] [--port-file PATH] [--fail-first N]
  --port 0 (default) picks a free port. --fail-first N answers the first N requests with 503,
  which exercises the connectors' retries. Standard library only.
"""

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APPROVAL_LIMIT = 10000
NAMES = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov",
         "Donald Knuth", "Frances Allen", "Ken Thompson", "Radia Perlman", "Dennis Ritchie"]


class Stats:
    def __init__(self, fail_first):
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "customers": 0, "score": 0, "errors": 0}
        self.fail_left = fail_first

    def hit(self, kind):
        """Counts a request; returns True when it must be failed on purpose (--fail-first)."""
        with self.lock:
            self.counts["requests"] += 1
            if kind:
                self.counts[kind] += 1
            if self.fail_left > 0:
                self.fail_left -= 1
                self.counts["errors"] += 1
                return True
            return False

    def snapshot(self):
        with self.lock:
            return dict(self.counts)


def customer(cid):
    """Deterministic customer record for an id (a string)."""
    shown = int(cid) if cid.isdigit() and len(cid) < 16 else cid
    if cid.endswith("0"):
        return 404, {"customerId": shown, "found": False}
    digits = sum(int(c) for c in cid if c.isdigit())
    segment = "premium" if digits % 2 == 0 else "retail"
    name = NAMES[sum(ord(c) for c in cid) % len(NAMES)]
    return 200, {"customerId": shown, "name": name, "segment": segment, "found": True}


def score(req):
    """Deterministic score: approved iff amount <= APPROVAL_LIMIT."""
    amount = req.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return 400, {"error": "amount must be a number"}
    client = req.get("clientId")
    seed = sum(ord(c) for c in str(client))
    approved = amount <= APPROVAL_LIMIT
    value = (seed * 37) % 300 + (500 if approved else 200)
    return 200, {"clientId": client, "score": value, "approved": approved}


class Handler(BaseHTTPRequestHandler):
    server_version = "legacy-core/1.0"
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle plus the client's
    # delayed ACK adds ~40 ms to every response
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet: no per-request access log
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/stats":
            self.reply(200, self.server.stats.snapshot())
        elif path == "/health":
            self.reply(200, {"status": "ok"})
        elif path.startswith("/customers/") and len(path) > len("/customers/"):
            if self.server.stats.hit("customers"):
                self.reply(503, {"error": "legacy system busy"})
                return
            self.reply(*customer(path[len("/customers/"):]))
        else:
            self.server.stats.hit(None)
            self.reply(404, {"error": "no such endpoint"})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 1 << 20)) if length > 0 else b""
        if path != "/score":
            self.server.stats.hit(None)
            self.reply(404, {"error": "no such endpoint"})
            return
        if self.server.stats.hit("score"):
            self.reply(503, {"error": "legacy system busy"})
            return
        try:
            req = json.loads(raw or b"null")
        except ValueError:
            req = None
        if not isinstance(req, dict):
            self.reply(400, {"error": "body must be a JSON object"})
            return
        self.reply(*score(req))


def main():
    ap = argparse.ArgumentParser(description="fake legacy core banking service")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--fail-first", type=int, default=0)
    args = ap.parse_args()

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.stats = Stats(args.fail_first)
    port = srv.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)

        os.replace(args.port_file + ".tmp", args.port_file)
    print("legacy: listening on 127.0.0.1:%d" % port, flush=True)

    def stop(_sig, _frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    srv.serve_forever(poll_interval=0.2)
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
