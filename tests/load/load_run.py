"""`make load`: 200 events through the real queue (moto SQS) to `sceneclip worker --concurrency 2`, one table out.

Everything runs on loopback: a moto server (S3, SQS, DynamoDB), resources provisioned from template.yaml, the
county boundary store, and a fault-injecting proxy in front of S3 for the worker's S3 traffic (boto3 and
GDAL). The events are, shuffled with a fixed seed:

* good scenes (each once) and duplicates of them (the same message again: idempotency must absorb it);
* bad inputs: not a raster, an empty object, a region the store does not have, a scene outside every region;
* faults that clear: 503 SlowDown on the first two GETs (GDAL's in-call retries), 500 InternalError on the
  first two GETs (GDAL does not retry 500 in-call: cleared by the redeliveries), a GET that stalls once (the
  deadline gives up, the redelivery clips);
* faults that never clear: 500 InternalError on every GET — these must end in the dead-letter queue.

The worker drains the queue (``--drain``) and stops by itself; a hard limit (``--limit``) SIGTERMs it
otherwise. The table checks the promise: every good scene exactly one output version and an ok record,
every bad input one failed record, nothing in flight, the DLQ holding exactly the never-clearing faults.
Exit status 0 when every check holds. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
REAL = ROOT / "tests" / "data" / "real"
COUNTIES = ["Larimer", "Boulder", "Grand"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto() -> tuple[object, str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"})
    os.environ.pop("AWS_PROFILE", None)
    return server, url


class FaultPlan:
    """Per object path: how many GETs still fail and how (thread-safe; the proxy asks per request)."""

    def __init__(self) -> None:
        self._left: dict[str, list] = {}  # path -> [action, remaining count (None = forever)]
        self._lock = threading.Lock()

    def add(self, path: str, action: tuple, times: int | None) -> None:
        self._left[path] = [action, times]

    def __call__(self, method: str, path: str, headers: object) -> tuple | None:
        if method != "GET":
            return None
        with self._lock:
            entry = self._left.get(path)
            if entry is None or entry[1] == 0:
                return None
            if entry[1] is not None:
                entry[1] -= 1
            return entry[0]


def _scenes(s3, bucket: str, counts: dict[str, int]) -> dict[str, list[str]]:
    """Upload every object of the run; returns kind -> keys."""
    rasters = [str(REAL / "landsat_rmnp_rgb_wgs84.tif"), str(REAL / "terrain_rmnp_dem_wgs84.tif")]
    kinds: dict[str, list[str]] = {}

    def put_raster(kind: str, i: int) -> str:
        key = f"scenes/{COUNTIES[i % 3]}/{kind}-{i:03d}.tif"
        s3.upload_file(rasters[i % 2], bucket, key)
        kinds.setdefault(kind, []).append(key)
        return key

    for kind in ("good", "flaky-503", "flaky-500", "stall-once", "fault-forever"):
        for i in range(counts[kind]):
            put_raster(kind, i)
    bad = kinds.setdefault("bad", [])
    for i in range(counts["bad"]):
        sort = i % 4
        if sort == 0:
            key = f"scenes/Larimer/not-a-raster-{i:03d}.tif"
            s3.put_object(Bucket=bucket, Key=key, Body=b"this is not a GeoTIFF " * (i + 1))
        elif sort == 1:
            key = f"scenes/Larimer/empty-{i:03d}.tif"
            s3.put_object(Bucket=bucket, Key=key, Body=b"")
        elif sort == 2:
            key = f"scenes/Atlantis/unknown-region-{i:03d}.tif"
            s3.upload_file(rasters[0], bucket, key)
        else:
            key = f"scenes/Larimer/outside-{i:03d}.tif"
            s3.upload_file(str(REAL / "sentinel2_libya_b09_utm34n.tif"), bucket, key)
        bad.append(key)
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--limit", type=float, default=1200, help="hard stop for the worker (seconds)")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()

    import boto3

    from sceneclip.tools.local import load_template, provision
    from sceneclip.tools.store_build import build_store
    from tests.loopback_proxy import LoopbackProxy

    server, moto_url = _start_moto()
    sfx = uuid.uuid4().hex[:8]
    names = {"InputBucket": f"in-{sfx}", "OutputBucket": f"out-{sfx}", "DeadLetterQueue": f"dlq-{sfx}",
             "WorkQueue": f"work-{sfx}", "RecordsTable": f"records-{sfx}", "IdempotencyTable": f"idem-{sfx}"}
    template = load_template(ROOT / "template.yaml")
    max_receive = 5
    made = provision(template, names, parameters={"MaxReceiveCount": max_receive})
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    queue, dlq = made["WorkQueue"], made["DeadLetterQueue"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "20"})
    bucket = names["InputBucket"]
    store = f"s3://{bucket}/boundaries/counties"
    build_store(str(REAL / "colorado_counties.geojson"), "name", store, s3_client=s3)

    # 200 events: 40 good + 100 duplicates + 40 bad + 20 faults (12 clear, 8 never do).
    counts = {"good": 40, "flaky-503": 6, "flaky-500": 4, "stall-once": 2, "fault-forever": 8, "bad": 40}
    kinds = _scenes(s3, bucket, counts)
    faults = FaultPlan()
    for key in kinds["flaky-503"]:
        faults.add(f"/{bucket}/{key}", ("status", 503, "SlowDown"), 2)
    for key in kinds["flaky-500"]:
        # GDAL retries 429/502/503/504 in-call but not 500: each delivery costs one GET, so two failed GETs
        # clear on the third delivery (within maxReceiveCount).
        faults.add(f"/{bucket}/{key}", ("status", 500, "InternalError"), 2)
    for key in kinds["stall-once"]:
        faults.add(f"/{bucket}/{key}", ("stall", 60), 1)
    for key in kinds["fault-forever"]:
        faults.add(f"/{bucket}/{key}", ("status", 500, "InternalError"), None)
    proxy = LoopbackProxy(moto_url, faults).start()

    good_scenes = kinds["good"] + kinds["flaky-503"] + kinds["flaky-500"] + kinds["stall-once"]
    rng = random.Random(args.seed)
    duplicates = [rng.choice(kinds["good"]) for _ in range(args.events - 40 - 40 - 20)]
    keys = kinds["good"] + duplicates + kinds["bad"] + kinds["flaky-503"] + kinds["flaky-500"] + kinds["stall-once"] + kinds["fault-forever"]
    rng.shuffle(keys)
    for start in range(0, len(keys), 10):
        sqs.send_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"bucket": bucket, "key": k})}
            for i, k in enumerate(keys[start:start + 10])])

    env = {**os.environ,
           "SCENECLIP_OUTPUT_BUCKET": names["OutputBucket"], "SCENECLIP_OUTPUT_PREFIX": "clipped/",
           "SCENECLIP_BOUNDARIES": store, "SCENECLIP_RECORDS_TABLE": names["RecordsTable"],
           "SCENECLIP_IDEMPOTENCY_TABLE": names["IdempotencyTable"],
           "SCENECLIP_REGION_PATTERN": r"^scenes/(?P<region>[^/]+)/",
           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR",
           "POWERTOOLS_SERVICE_NAME": "sceneclip", "POWERTOOLS_METRICS_NAMESPACE": "sceneclip",
           "POWERTOOLS_METRICS_DISABLED": "true", "AWS_ENDPOINT_URL_S3": proxy.url}
    code = "from sceneclip.cli.ops import worker; worker()"
    argv = [sys.executable, "-c", code, "--queue", queue, "--concurrency", "2", "--wait-time", "1", "--drain",
            "--retry-delay", "2", "--timeout", "30", "--json"]
    started = time.monotonic()
    worker = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        out, _ = worker.communicate(timeout=args.limit)
        stopped = "drained"
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=120)
        stopped = f"hard limit {args.limit:g} s"
    wall = time.monotonic() - started
    summary = json.loads(out[out.rindex('{\n  "queue_url"'):]) if '"queue_url"' in out else {}

    ok = _report(sqs, s3, boto3.resource("dynamodb"), names, bucket, queue, dlq, kinds, good_scenes, keys, summary,
                 proxy, wall, stopped, max_receive)
    proxy.stop()
    server.stop()
    return 0 if ok else 1


def _report(sqs, s3, ddb, names, bucket, queue, dlq, kinds, good_scenes, keys, summary, proxy, wall, stopped,
            max_receive) -> bool:
    recs = {r["scene"]: r for r in ddb.Table(names["RecordsTable"]).scan()["Items"]}
    per_scene = Counter(r["scene"] for r in ddb.Table(names["RecordsTable"]).scan()["Items"])
    versions = s3.list_object_versions(Bucket=names["OutputBucket"], Prefix="clipped/").get("Versions", [])
    tif_versions = Counter(v["Key"] for v in versions if v["Key"].endswith(".tif"))

    def out_key(key: str) -> str:
        region = key.split("/")[1]
        return f"clipped/{region}/{key[:-len('.tif')]}.tif"

    good_ok = [k for k in good_scenes
               if tif_versions.get(out_key(k)) == 1 and recs.get(f"s3://{bucket}/{k}", {}).get("status") == "ok"]
    bad_one_failed = [k for k in kinds["bad"]
                      if per_scene.get(f"s3://{bucket}/{k}") == 1 and recs[f"s3://{bucket}/{k}"]["status"] == "failed"
                      and not recs[f"s3://{bucket}/{k}"].get("transient") and out_key(k) not in tif_versions]
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    in_flight = sum(int(attrs[n]) for n in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                                            "ApproximateNumberOfMessagesDelayed"))
    dlq_keys = []
    while True:
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=300).get("Messages", [])
        if not got:
            break
        dlq_keys += [json.loads(m["Body"])["key"] for m in got]
    inprogress = [i for i in ddb.Table(names["IdempotencyTable"]).scan()["Items"] if i.get("status") == "INPROGRESS"]
    bad_types = Counter(recs[f"s3://{bucket}/{k}"]["error_type"] for k in kinds["bad"] if f"s3://{bucket}/{k}" in recs)
    forever_types = Counter(recs.get(f"s3://{bucket}/{k}", {}).get("error_type") for k in kinds["fault-forever"])
    checks = [
        ("good scenes: exactly one output version and an ok record", f"{len(good_ok)}/{len(good_scenes)}",
         len(good_ok) == len(good_scenes)),
        ("  of which cleared faults (503 burst, 500 until redelivery, stall once)",
         f"{sum(k in good_ok for k in kinds['flaky-503'] + kinds['flaky-500'] + kinds['stall-once'])}/"
         f"{len(kinds['flaky-503']) + len(kinds['flaky-500']) + len(kinds['stall-once'])}", True),
        ("output versions in total (duplicates made none)", str(sum(tif_versions.values())),
         sum(tif_versions.values()) == len(good_scenes)),
        ("bad inputs: one permanent failed record, no output", f"{len(bad_one_failed)}/{len(kinds['bad'])}",
         len(bad_one_failed) == len(kinds["bad"])),
        ("messages in flight at the end (visible + invisible + delayed)", str(in_flight), in_flight == 0),
        ("DLQ messages", str(len(dlq_keys)), len(dlq_keys) == len(kinds["fault-forever"])),
        ("  of which faults that never cleared", f"{sum(k in kinds['fault-forever'] for k in dlq_keys)}/{len(dlq_keys)}",
         sorted(dlq_keys) == sorted(kinds["fault-forever"])),
        ("idempotency items left INPROGRESS", str(len(inprogress)), not inprogress),
    ]
    width = max(len(c[0]) for c in checks) + 2
    print(f"\nsceneclip load run: {len(keys)} events ({len(good_scenes) - 12} good + {len(keys) - len(good_scenes) - len(kinds['bad']) - 8} duplicates, "
          f"{len(kinds['bad'])} bad, 12 faults that clear, 8 that never do), worker --concurrency 2, "
          f"maxReceiveCount {max_receive}; stopped: {stopped}")
    print(f"{'check':<{width}}{'value':>10}  result")
    print("-" * (width + 20))
    for name, value, passed in checks:
        print(f"{name:<{width}}{value:>10}  {'ok' if passed else 'FAIL'}")
    print("-" * (width + 20))
    missing = [k for k in good_scenes if k not in good_ok]
    if missing:
        print(f"good scenes not clipped exactly once: {missing}")
    print(f"bad-input error types: {dict(bad_types)}")
    print(f"never-clearing faults, last record: {dict(forever_types)}")
    print(f"proxy faults injected: {dict(sorted(proxy.counts.items()))}")
    if summary:
        print(f"worker: {summary['received']} deliveries, {summary['succeeded']} done, {summary['failed']} failed "
              f"(retried or to the DLQ), {summary['released']} released, {summary['batches']} batches, "
              f"errors {summary['errors']}; {summary['duration_s']:.1f} s, {summary['messages_per_minute']} msg/min "
              f"({summary['busy_messages_per_minute']} busy)")
    print(f"wall time of the worker run: {wall:.1f} s")
    return all(c[2] for c in checks)


if __name__ == "__main__":
    raise SystemExit(main())
