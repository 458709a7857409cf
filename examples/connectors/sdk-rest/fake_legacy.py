#!/usr/bin/python3
"""fake_legacy.py - a fake legacy REST API for the SDK REST connector (rest.c) and its tests.

  GET /accounts/<id>   200 {"accountId": id, "balance": N, "status": "active"}, except:
      missing-*        404 {"error": "no such account"}
      flaky-*          500 for the first 2 calls of that id, then 200
      hang-*           the first call hangs 10 s (the connector times out), then 200
      slow-*           every call takes 4 s, then 200
  GET /stats           {"calls": {id: n}, "applied": {id: distinct Idempotency-Keys}}

"applied" is what a real system would do with the Idempotency-Key header: apply an operation
once however many times it is asked. Usage: fake_legacy.py --port-file FILE (port 0: any).
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
calls = {}
keys = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                return self.send(200, {"calls": dict(calls),
                                       "applied": {k: len(v) for k, v in keys.items()}})
        if not self.path.startswith("/accounts/"):
            return self.send(404, {"error": "no such path"})
        aid = self.path[len("/accounts/"):]
        with lock:
            calls[aid] = n = calls.get(aid, 0) + 1
        if aid.startswith("missing-"):
            return self.send(404, {"error": "no such account"})
        if aid.startswith("flaky-") and n <= 2:
            return self.send(500, {"error": "internal error, try again"})
        if aid.startswith("hang-") and n == 1:
            time.sleep(10)
        if aid.startswith("slow-"):
            time.sleep(4)
        with lock:
            keys.setdefault(aid, set()).add(self.headers.get("Idempotency-Key", ""))
        self.send(200, {"accountId": aid, "balance": 100 * len(aid), "status": "active"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        import os
        os.rename(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
