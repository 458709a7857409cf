#!/usr/bin/python3
"""legacy_files.py - simulates the legacy side of the file-exchange connector: a batch system
that picks up request files from one folder and writes answer files to another.

For each <outbox>/<name>.json (a request {"customer": ..., "amount": N}) it writes
<inbox>/<name>.json after --delay-ms:
  {"invoiceId": "INV-<customer>-<amount>", "customer": ..., "amount": N, "status": "booked"}
  or {"error": "amount N over the limit"} when amount > 10000 (a business refusal).
Answers are written atomically (temp file + rename) and the request file is then removed.
Usage: legacy_files.py --outbox DIR --inbox DIR [--delay-ms N] [--count-file FILE]
"""
import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outbox", required=True)
    ap.add_argument("--inbox", required=True)
    ap.add_argument("--delay-ms", type=int, default=200)
    ap.add_argument("--count-file", help="appends one line per request processed")
    args = ap.parse_args()
    while True:
        for name in sorted(os.listdir(args.outbox)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(args.outbox, name)
            try:
                with open(path) as f:
                    req = json.load(f)
            except (OSError, ValueError):
                continue
            time.sleep(args.delay_ms / 1000)
            amount = req.get("amount", 0)
            if isinstance(amount, (int, float)) and amount > 10000:
                answer = {"error": "amount %s over the limit" % amount}
            else:
                answer = {"invoiceId": "INV-%s-%s" % (req.get("customer"), amount),
                          "customer": req.get("customer"), "amount": amount, "status": "booked"}
            tmp = os.path.join(args.inbox, "." + name + ".tmp")
            with open(tmp, "w") as f:
                json.dump(answer, f)
            os.rename(tmp, os.path.join(args.inbox, name))
            os.unlink(path)
            if args.count_file:
                with open(args.count_file, "a") as f:
                    f.write(name + "\n")
        time.sleep(0.05)


if __name__ == "__main__":
    main()
