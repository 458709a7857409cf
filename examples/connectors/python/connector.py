#!/usr/bin/python3
"""connector.py - a flowd connector in Python: credit scoring against the legacy system.

flowd publishes a request when a process reaches its Kafka send action; this connector asks
the legacy core banking service (legacy_stub.py) for a score and publishes the answer on a
topic flowd consumes. The waiting instance stores it under its receive node's keyName.

  request  ai.flowx.dev.connector.scoring.in.v1     {"clientId": "c-1", "amount": 500}
  legacy   POST http://127.0.0.1:PORT/score         (same body)
  reply    ai.flowx.dev.engine.receive.scoring.v1   {"clientId":"c-1","score":576,"approved":true}

The rules every connector follows (DESIGN.md section 3):
  1. copy EVERY header of the request onto the reply (processInstanceId, messageId, ... are how
     flowd finds the instance and the node waiting for it);
  2. key the reply like the request (the instance id);
  3. always reply with JSON; on failure with an "errorMessage" field the process can route on;
  4. at least once: drop requests whose messageId was already answered, and commit a request's
     offset only after its reply is acknowledged by Kafka. A crash in between means the request
     is handled again, never lost.

Requires kafka-python (Debian: python3-kafka). Run with /usr/bin/python3:
  connector.py --bootstrap-file DATA_DIR/kafka.bootstrap --legacy-url http://127.0.0.1:PORT
"""

import argparse
import collections
import http.client
import json
import logging
import signal
import sys
import time
import urllib.parse

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata

BATCH_MAX = 64          # requests handled between two commits
SEEN_MAX = 4096         # messageIds remembered for duplicate detection
HTTP_RETRIES = 3        # retries after the first attempt, on 5xx and timeouts
BOOTSTRAP_WAIT = 30     # seconds to wait for --bootstrap-file
# kafka-python 2.0.2 knows Kafka APIs up to 2.5; telling it skips the version probe, which
# librdkafka's mock cluster (flowd's embedded Kafka) does not always answer the way it expects.
API_VERSION = (2, 5, 0)

stopping = False
verbose = False


def log(fmt, *args):
    print("connector.py: " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


def on_signal(_sig, _frame):
    global stopping
    stopping = True


class Seen:
    """The last SEEN_MAX messageIds answered (flowd re-sends a request with the same id)."""

    def __init__(self):
        self.ids = collections.OrderedDict()

    def __contains__(self, mid):
        return mid in self.ids

    def add(self, mid):
        self.ids[mid] = True
        if len(self.ids) > SEEN_MAX:
            self.ids.popitem(last=False)  # forget the oldest

    def remove(self, mid):
        self.ids.pop(mid, None)


def read_bootstrap_file(path):
    """The bootstrap address flowd writes to <data-dir>/kafka.bootstrap (it may be starting)."""
    deadline = time.monotonic() + BOOTSTRAP_WAIT
    while time.monotonic() < deadline and not stopping:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                return text
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    return None


def header(headers, name):
    """A header value as str, or None. kafka-python headers are a list of (str, bytes)."""
    for key, value in reversed(headers or []):
        if key == name:
            return (value or b"").decode("utf-8", "replace")
    return None


def legacy_score(legacy, body):
    """POSTs body to <legacy>/score with timeouts and retries. Returns (status, text); status 0
    means no answer at all (text says why); None when a stop signal interrupted the retries."""
    backoff = 0.1
    status, text = 0, ""
    for attempt in range(HTTP_RETRIES + 1):
        if attempt:
            time.sleep(backoff)
            backoff *= 2
        if stopping:
            return None
        conn = http.client.HTTPConnection(legacy.hostname, legacy.port or 80, timeout=2)
        try:
            conn.connect()               # connect timeout: 2 s
            conn.sock.settimeout(5)      # then 5 s for the answer
            conn.request("POST", legacy.path.rstrip("/") + "/score", body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            status, text = resp.status, resp.read(1 << 20).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as e:
            status, text = 0, str(e) or e.__class__.__name__
        finally:
            conn.close()
        if 0 < status < 500:
            break
        if verbose and attempt < HTTP_RETRIES:
            log("legacy call failed (%s), retrying", status or text)
    return status, text


def handle(legacy, value):
    """Request value (bytes) -> reply dict. Failures become {"approved": false,
    "errorMessage": ...} so the process can route on them. None when stopping."""
    try:
        req = json.loads(value or b"")
    except ValueError:
        req = None
    if not isinstance(req, dict) or "amount" not in req:
        return {"approved": False, "errorMessage": "request needs clientId and amount"}
    answer = legacy_score(legacy, json.dumps(req).encode())
    if answer is None:
        return None
    status, text = answer
    if status == 200:
        try:
            reply = json.loads(text)
            if isinstance(reply, dict):
                return reply
        except ValueError:
            pass
        return {"approved": False, "errorMessage": "legacy system answered invalid JSON"}
    if status:
        return {"approved": False, "errorMessage": "legacy system answered HTTP %d" % status}
    return {"approved": False, "errorMessage": "legacy system unreachable: " + text}


def main():
    global verbose
    ap = argparse.ArgumentParser(description="credit scoring connector for flowd")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bootstrap", help="HOST:PORT of the Kafka cluster")
    src.add_argument("--bootstrap-file", help="file holding it, e.g. DATA_DIR/kafka.bootstrap")
    ap.add_argument("--legacy-url", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--in", dest="in_topic", default="ai.flowx.dev.connector.scoring.in.v1")
    ap.add_argument("--out", dest="out_topic", default="ai.flowx.dev.engine.receive.scoring.v1")
    ap.add_argument("--group", default="scoring-connector")
    ap.add_argument("--log", help="append '<messageId> <processInstanceId>' per answered request")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    verbose = args.verbose

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.basicConfig(level=logging.CRITICAL)  # kafka-python is chatty; we log ourselves

    bootstrap = args.bootstrap or read_bootstrap_file(args.bootstrap_file)
    if not bootstrap:
        log("no bootstrap address in %s after %d s", args.bootstrap_file, BOOTSTRAP_WAIT)
        return 1
    legacy = urllib.parse.urlsplit(args.legacy_url)
    logfp = open(args.log, "a") if args.log else None

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, api_version=API_VERSION, group_id=args.group,
        enable_auto_commit=False,      # we commit ourselves, after the reply is acknowledged
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,           # answer quickly: don't let the broker hold fetches
        session_timeout_ms=6000, heartbeat_interval_ms=1000,
        metadata_max_age_ms=1000)      # the request topic may appear after we start
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, api_version=API_VERSION,
        acks="all", linger_ms=1, retries=5,
        max_in_flight_requests_per_connection=1)  # keeps order across retries (no idempotence
                                                  # in kafka-python 2.0.2)
    consumer.subscribe([args.in_topic])
    if verbose:
        log("%s -> %s, legacy %s, bootstrap %s", args.in_topic, args.out_topic,
            args.legacy_url, bootstrap)

    seen = Seen()
    backoff = 0
    while not stopping:
        batch = consumer.poll(timeout_ms=200, max_records=BATCH_MAX)
        if not batch:
            continue
        sent = []   # (future, messageId, instanceId)
        failed = 0
        for records in batch.values():
            for rec in records:
                mid = header(rec.headers, "messageId")
                pid = header(rec.headers, "processInstanceId") or "-"
                if mid and mid in seen:
                    if verbose:
                        log("instance %s: duplicate %s dropped", pid, mid)
                    continue
                reply = handle(legacy, rec.value)
                if verbose:
                    log("instance %s: %s -> %s", pid, (rec.value or b"").decode("utf-8", "replace"),
                        json.dumps(reply) if reply is not None else "(not answered)")
                if reply is None:
                    failed += 1
                    continue
                # Same key, every request header copied.
                future = producer.send(args.out_topic, key=rec.key,
                                       value=json.dumps(reply).encode(),
                                       headers=list(rec.headers or []))
                sent.append((future, mid, pid))
                if mid:
                    seen.add(mid)

        producer.flush()
        for future, mid, pid in sent:
            try:
                future.get(timeout=30)
                if logfp:
                    logfp.write("%s %s\n" % (mid or "-", pid))
                    logfp.flush()
            except Exception as e:  # noqa: BLE001 - any failure means "not delivered"
                log("reply for instance %s not delivered: %s", pid, e)
                failed += 1
                if mid:
                    seen.remove(mid)  # let the retry through

        if failed:
            # Nothing of this batch is committed: read it again. Answered requests will be
            # dropped as duplicates, the others retried.
            for tp, records in batch.items():
                consumer.seek(tp, records[0].offset)
            backoff = min(backoff * 2 or 0.2, 5.0)
            time.sleep(backoff)
            continue
        backoff = 0
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, None)
                   for tp, records in batch.items()}
        try:
            consumer.commit(offsets)
        except Exception as e:  # noqa: BLE001 - e.g. a rebalance moved the partition
            log("commit: %s", e)

    if verbose:
        log("stopping")
    producer.flush()
    producer.close(timeout=10)
    consumer.close(autocommit=False)
    if logfp:
        logfp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
