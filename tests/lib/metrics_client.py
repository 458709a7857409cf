#!/usr/bin/python3
"""metrics_client.py - a small client of flowd's /metrics (Prometheus text format 0.0.4).

It parses the exposition strictly (HELP/TYPE before samples, numeric values, histogram buckets
cumulative and ending in +Inf == _count) and checks that counters move as instances run:

  metrics_client.py URL [--token T] save FILE
  metrics_client.py URL [--token T] expect FILE CHECK...     (FILE from an earlier save)
  metrics_client.py URL [--token T] show

CHECK is NAME OP N where NAME is a sample name with optional labels exactly as exposed, e.g.
'flowd_instances{state="FINISHED"}', and OP is one of:
  +=  increased by exactly N since FILE      +>=  increased by at least N
  ==  equals N now                           >=   is at least N now
Exit 0 when every check holds, 1 with one line per failed check otherwise.
"""
import json
import re
import sys
import urllib.request

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def scrape(url, token=None):
    req = urllib.request.Request(url.rstrip("/") + "/metrics")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain"):
            raise ValueError("Content-Type is %r, not text/plain" % ctype)
        return parse(r.read().decode("utf-8"))


def parse(text):
    """Returns {sample name with labels: float}; raises ValueError on a malformed exposition."""
    types, samples = {}, {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            if len(parts) < 4:
                raise ValueError("line %d: %r" % (n, line))
            if parts[1] == "TYPE":
                if parts[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                    raise ValueError("line %d: unknown type %r" % (n, parts[3]))
                types[parts[2]] = parts[3]
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ValueError("line %d is not a sample: %r" % (n, line))
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        base = re.sub(r'_(bucket|sum|count)$', '', name)
        if name not in types and base not in types:
            raise ValueError("line %d: sample %s has no # TYPE before it" % (n, name))
        samples[name + labels] = float(value)
    for name, t in types.items():
        if t != "histogram":
            continue
        buckets = [(k, v) for k, v in samples.items() if k.startswith(name + "_bucket{")]
        if not buckets or not buckets[-1][0].endswith('le="+Inf"}'):
            raise ValueError("histogram %s does not end with an +Inf bucket" % name)
        values = [v for _, v in buckets]
        if values != sorted(values):
            raise ValueError("histogram %s buckets are not cumulative: %s" % (name, values))
        if values[-1] != samples.get(name + "_count"):
            raise ValueError("histogram %s: +Inf bucket %s != _count %s"
                             % (name, values[-1], samples.get(name + "_count")))
    return samples


def check(before, now, spec):
    m = re.match(r'^(.*?)\s*(\+>=|\+=|==|>=)\s*(-?[0-9.]+)$', spec)
    if not m:
        return "bad check %r" % spec
    name, op, want = m.group(1), m.group(2), float(m.group(3))
    if name not in now:
        return "%s is not exposed" % name
    cur, old = now[name], before.get(name, 0.0)
    ok = {"+=": cur - old == want, "+>=": cur - old >= want,
          "==": cur == want, ">=": cur >= want}[op]
    if ok:
        return None
    return "%s: expected %s %g, got %g (before %g)" % (name, op, want, cur, old)


def main(argv):
    args = argv[1:]
    token = None
    if "--token" in args:
        i = args.index("--token")
        token = args[i + 1]
        del args[i:i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    url, cmd = args[0], args[1]
    now = scrape(url, token)
    if cmd == "show":
        for k, v in sorted(now.items()):
            print(k, v)
        return 0
    if cmd == "save":
        with open(args[2], "w") as f:
            json.dump(now, f)
        return 0
    if cmd == "expect":
        with open(args[2]) as f:
            before = json.load(f)
        fails = [e for e in (check(before, now, s) for s in args[3:]) if e]
        for e in fails:
            print("metrics:", e)
        return 1 if fails else 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
