#!/usr/bin/python3
"""kcat_parse.py - turns kcat output into JSON for the integration tests.

Reads lines printed by `kcat -C ... -f '%k|%h|%s\\n'` (key|headers|value; headers as kcat prints
them, name=value,name=value) or, with --no-key, `-f '%h|%s\\n'`, and prints a JSON list of
{"key": str|null, "headers": {name: value}, "headers_list": [[name, value], ...], "value": str}.
kcat's own "% Reached end of topic" lines are skipped. kcat does not escape ',' in header values:
a ','-separated piece that does not start with "name=" is taken as part of the previous value
(so a free-text value such as reasonDetail survives), and values must not contain '|' or newlines.
"""

import json
import re
import sys

HEADER_START = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*=")


def parse_headers(text):
    pairs = []
    if not text:
        return pairs
    for item in text.split(","):
        if pairs and not HEADER_START.match(item):
            pairs[-1][1] = (pairs[-1][1] or "") + "," + item
            continue
        name, sep, value = item.partition("=")
        pairs.append([name, value if sep else None])
    return pairs


def main():
    with_key = "--no-key" not in sys.argv[1:]
    out = []
    raw = sys.stdin.buffer.read().decode("utf-8", "replace")
    for line in raw.split("\n"):
        if not line or line.startswith("% "):
            continue
        if with_key:
            key, _, rest = line.partition("|")
        else:
            key, rest = None, line
        hdrs, _, value = rest.partition("|")
        pairs = parse_headers(hdrs)
        out.append({"key": key, "headers": dict(pairs), "headers_list": pairs, "value": value})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
