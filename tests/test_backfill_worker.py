"""Backfill → SQS → worker → handler → records, over the moto *server* (real HTTP; GDAL reads over the network).

Resources come from template.yaml (queue redrive policy and its maxReceiveCount default included); the work
queue's visibility timeout is lowered to 2 s after provisioning so retries happen within the test.

The one scene that fails *transiently* does so honestly: the worker's S3 traffic (boto3 and GDAL) goes through
a small HTTP proxy in front of moto that answers ``503 SlowDown`` for that one key, as S3 does under
throttling. Everything else is forwarded untouched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import boto3
import pytest
from click.testing import CliRunner

from sceneclip.aws import handler
from sceneclip.aws.backfill import decide, send_messages
from sceneclip.cli.ops import backfill, redrive, status
from sceneclip.tools.local import load_template, parameter_defaults, provision
from sceneclip.aws.worker import Heartbeat, WorkerSummary, run_worker, sqs_event

from .conftest import real
from .proxy_base import ForwardingHandler

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "archive/"
FLAKY_KEY = "incoming/Larimer/flaky-throttled.tif"
GOOD_REGIONS = ["Larimer", "Boulder", "Grand"]
VISIBILITY_S = 2


# --- a fault-injecting S3 proxy ------------------------------------------------------------------------------
class _Proxy(ForwardingHandler):
    upstream: tuple[str, int] = ("127.0.0.1", 0)
    fail_paths: frozenset[str] = frozenset()
    failures = 0
    seen: list[tuple[str, str]] = []  # (method, path) of every request, in order

    def _handle(self) -> None:
        body = self._body()
        path = unquote(urlparse(self.path).path)
        type(self).seen.append((self.command, path))
        if path in self.fail_paths:
            type(self).failures += 1
            payload = b"" if self.command == "HEAD" else (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                b"<Message>Please reduce your request rate.</Message></Error>")
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self._relay(*self._fetch(body, self.upstream))

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # clients closing keep-alive connections are not errors
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@pytest.fixture
def s3_proxy(moto_endpoint):
    """Start a proxy to moto; returns (url, handler class). Set ``fail_paths`` to make keys answer 503."""
    upstream = urlparse(moto_endpoint)
    handler_cls = type("Proxy", (_Proxy,), {"upstream": (upstream.hostname, upstream.port), "fail_paths": frozenset(),
                                            "failures": 0, "seen": []})
    server = _QuietServer(("127.0.0.1", 0), handler_cls)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler_cls
    server.shutdown()
    server.server_close()


# --- the stack -----------------------------------------------------------------------------------------------
@pytest.fixture
def stack(moto_endpoint, s3_proxy, monkeypatch, tmp_path):
    """Template resources under unique names, a compiled county store, an archive of 20 scenes, the function's env."""
    from sceneclip.tools.store_build import build_store

    template = load_template(ROOT / "template.yaml")
    sfx = uuid.uuid4().hex[:8]
    names = {
        "InputBucket": f"in-{sfx}", "OutputBucket": f"out-{sfx}", "DeadLetterQueue": f"dlq-{sfx}",
        "WorkQueue": f"work-{sfx}", "RecordsTable": f"records-{sfx}", "IdempotencyTable": f"idem-{sfx}",
    }
    made = provision(template, names)
    sqs = boto3.client("sqs")
    sqs.set_queue_attributes(QueueUrl=made["WorkQueue"], Attributes={"VisibilityTimeout": str(VISIBILITY_S)})
    s3 = boto3.client("s3")
    bucket = names["InputBucket"]
    store = f"s3://{bucket}/boundaries/counties"
    build_store(real("colorado_counties.geojson"), "name", store, s3_client=s3)

    good, bad = [], {}
    for i in range(14):  # the two real RMNP rasters, alternately, clipped to three counties by key
        path = real("landsat_rmnp_rgb_wgs84.tif" if i % 2 == 0 else "terrain_rmnp_dem_wgs84.tif")
        key = f"{PREFIX}{GOOD_REGIONS[i % 3]}/scene-{i:02d}.tif"
        s3.upload_file(path, bucket, key)
        good.append(key)
    for i in range(3):
        key = f"{PREFIX}Larimer/not-a-raster-{i}.tif"
        s3.put_object(Bucket=bucket, Key=key, Body=b"this is not a GeoTIFF " * (i + 1))
        bad[key] = "RasterReadError"
    s3.upload_file(real("sentinel2_libya_b09_utm34n.tif"), bucket, f"{PREFIX}Larimer/libya-b09.tif")
    bad[f"{PREFIX}Larimer/libya-b09.tif"] = "NoOverlapError"
    s3.upload_file(real("landsat_rmnp_rgb_wgs84.tif"), bucket, f"{PREFIX}Atlantis/rmnp.tif")
    bad[f"{PREFIX}Atlantis/rmnp.tif"] = "UnknownRegionError"
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}Larimer/empty.tif", Body=b"")
    bad[f"{PREFIX}Larimer/empty.tif"] = "RasterReadError"
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}Larimer/README.txt", Body=b"not a scene: ignored by --suffix")
    s3.upload_file(real("landsat_rmnp_rgb_wgs84.tif"), bucket, FLAKY_KEY)

    proxy_url, proxy = s3_proxy
    proxy.fail_paths = frozenset({f"/{bucket}/{FLAKY_KEY}"})
    env = {
        "SCENECLIP_OUTPUT_BUCKET": names["OutputBucket"], "SCENECLIP_OUTPUT_PREFIX": "clipped/",
        "SCENECLIP_BOUNDARIES": store, "SCENECLIP_RECORDS_TABLE": names["RecordsTable"],
        "SCENECLIP_IDEMPOTENCY_TABLE": names["IdempotencyTable"],
        "SCENECLIP_REGION_PATTERN": r"^[^/]+/(?P<region>[^/]+)/",
        "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_NAMESPACE": "sceneclip",
        "POWERTOOLS_SERVICE_NAME": "sceneclip", "POWERTOOLS_LOG_LEVEL": "WARNING",
        # The function's S3 traffic (boto3 and GDAL) goes through the proxy; SQS and DynamoDB straight to moto.
        "AWS_ENDPOINT_URL_S3": proxy_url, "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SCENECLIP_INPUT_BUCKETS", bucket)  # the worker reads only the input bucket
    handler._WARM_START_CACHE.clear()
    max_receive = int(parameter_defaults(template)["MaxReceiveCount"])
    yield {"names": names, "made": made, "s3": s3, "sqs": sqs, "bucket": bucket, "good": good, "bad": bad,
           "queue": made["WorkQueue"], "dlq": made["DeadLetterQueue"], "max_receive": max_receive,
           "table": boto3.resource("dynamodb").Table(names["RecordsTable"]), "proxy": proxy}
    handler._WARM_START_CACHE.clear()


def cli(command, *args):
    result = CliRunner().invoke(command, [*args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def depth(stack, url):
    attrs = stack["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def drain_messages(stack, url):
    out = []
    while True:
        got = stack["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                           VisibilityTimeout=60).get("Messages", [])
        if not got:
            return out
        out += got


def records(stack):
    return {(r["scene"], r["region"]): r for r in stack["table"].scan()["Items"]}


def output_versions(stack):
    resp = stack["s3"].list_object_versions(Bucket=stack["names"]["OutputBucket"], Prefix="clipped/")
    return [v for v in resp.get("Versions", []) if v["Key"].endswith(".tif")]


# --- end to end ----------------------------------------------------------------------------------------------
@pytest.mark.realdata
@pytest.mark.parametrize("concurrency", [1, 2])
def test_backfill_and_worker_drain(stack, concurrency):
    bucket, queue, dlq = stack["bucket"], stack["queue"], stack["dlq"]
    scenes = stack["good"] + list(stack["bad"])
    assert len(scenes) >= 20

    # Dry run: lists, sends nothing.
    code, dry = cli(backfill, f"s3://{bucket}/{PREFIX}", "--queue", queue, "--dry-run")
    assert code == 0 and dry["enqueued"] == len(scenes) and depth(stack, queue) == 0
    assert sorted(m["key"] for m in dry["planned"]) == sorted(scenes)
    code, later = cli(backfill, f"s3://{bucket}/{PREFIX}", "--queue", queue, "--dry-run", "--since", "2999-01-01")
    assert later["enqueued"] == 0 and later["ignored"] == later["listed"] == len(scenes) + 1

    code, first = cli(backfill, f"s3://{bucket}/{PREFIX}", "--queue", queue)
    assert code == 0, first
    assert first["listed"] == len(scenes) + 1 and first["ignored"] == 1  # README.txt is not a .tif
    assert first["enqueued"] == len(scenes) and first["skipped"] == 0 and first["failed"] == 0
    assert first["reasons"] == {"new": len(scenes)}
    # A live upload outside the archive, announced with its ETag as an S3 notification is: it keeps failing (503).
    flaky_etag = stack["s3"].head_object(Bucket=bucket, Key=FLAKY_KEY)["ETag"].strip('"')
    stack["sqs"].send_message(QueueUrl=queue, MessageBody=json.dumps({"bucket": bucket, "key": FLAKY_KEY,
                                                                      "etag": flaky_etag}))

    summary = run_worker(queue, concurrency=concurrency, wait_time=1, stop_when_empty=True)
    # Measured, never asserted on: the whole drain (start-up, the throttled message's three rounds and the
    # final empty polls included) and the busy span from the first receive to the last success.
    busy = summary.last_succeeded - summary.first_received
    print(f"\nSCENES_PER_MINUTE concurrency={concurrency}: {len(scenes)} scenes, drain {summary.duration_s:.1f} s "
          f"({summary.messages_per_minute} scenes/min), busy {busy:.1f} s ({summary.busy_messages_per_minute} "
          f"scenes/min), cpus={os.cpu_count()}")

    assert summary.errors == []
    # Every archive message was delivered once and deleted (none handed out twice while being clipped), the
    # throttled one maxReceiveCount times and never deleted.
    assert summary.succeeded == len(scenes)
    assert summary.failed == stack["max_receive"] and summary.received == len(scenes) + stack["max_receive"]
    assert depth(stack, queue) == 0
    dead = drain_messages(stack, dlq)
    assert [json.loads(m["Body"])["key"] for m in dead] == [FLAKY_KEY]
    stack["sqs"].change_message_visibility(QueueUrl=dlq, ReceiptHandle=dead[0]["ReceiptHandle"], VisibilityTimeout=0)
    assert stack["proxy"].failures >= stack["max_receive"]

    recs = records(stack)
    versions = output_versions(stack)
    for i, key in enumerate(stack["good"]):
        region = GOOD_REGIONS[i % 3]
        rec = recs[(f"s3://{bucket}/{key}", region)]
        assert rec["status"] == "ok" and rec["config_hash"] and rec["source_etag"]
        out_key = f"clipped/{region}/{bucket}/{key}"  # default layout: keys here are already slugs
        assert [v["Key"] for v in versions].count(out_key) == 1, out_key
    for key, error_type in stack["bad"].items():
        got = [r for (scene, _), r in recs.items() if scene == f"s3://{bucket}/{key}"]
        assert len(got) == 1 and got[0]["status"] == "failed" and got[0]["error_type"] == error_type, (key, got)
    flaky = recs[(f"s3://{bucket}/{FLAKY_KEY}", "-")]
    assert flaky["status"] == "failed" and flaky["error_type"] == "SourceUnavailableError"
    assert flaky["source_etag"] == flaky_etag
    assert len(versions) == len(stack["good"])  # nothing written for a failure

    # Re-run: everything is done (ok) or failed permanently.
    code, second = cli(backfill, f"s3://{bucket}/{PREFIX}", "--queue", queue)
    assert code == 0 and second["enqueued"] == 0 and depth(stack, queue) == 0
    assert second["skipped"] == len(scenes)
    assert second["reasons"] == {"done": len(stack["good"]), "failed-permanently": len(stack["bad"])}
    # The transiently failed scene is enqueued again by a backfill over its prefix.
    code, retry = cli(backfill, f"s3://{bucket}/incoming/", "--queue", queue, "--dry-run")
    assert retry["reasons"] == {"retry": 1} and retry["planned"] == [
        {"bucket": bucket, "key": FLAKY_KEY, "etag": flaky["source_etag"]}]

    # status: counts, reasons, queue depths.
    code, st = cli(status, "--queue", queue, "--dlq", dlq)
    assert st["by_status"]["ok"] == len(stack["good"]) and st["by_status"]["failed"] == len(stack["bad"]) + 1
    assert st["failed_permanent"] == len(stack["bad"]) and st["failed_transient"] == 1
    top = {f["error_type"]: f["count"] for f in st["top_failures"]}
    assert top["RasterReadError"] == 4 and top["NoOverlapError"] == 1 and top["UnknownRegionError"] == 1
    assert st["queues"][dlq]["ApproximateNumberOfMessages"] == 1
    assert st["queues"][queue]["ApproximateNumberOfMessages"] == 0

    # redrive: a dry run moves nothing, then the DLQ message goes back to the work queue.
    code, r = cli(redrive, "--from", dlq, "--to", queue, "--dry-run")
    assert r["sent"] == 1 and depth(stack, dlq) == 1 and depth(stack, queue) == 0
    code, r = cli(redrive, "--from", dlq, "--to", queue)
    assert code == 0 and (r["received"], r["sent"], r["deleted"], r["failed"]) == (1, 1, 1, 0)
    assert depth(stack, dlq) == 0
    moved = drain_messages(stack, queue)
    assert [json.loads(m["Body"])["key"] for m in moved] == [FLAKY_KEY]

    # --force: every scene again, flagged so the pipeline bypasses idempotency.
    code, forced = cli(backfill, f"s3://{bucket}/{PREFIX}", "--queue", queue, "--force")
    assert forced["enqueued"] == len(scenes) and forced["reasons"] == {"force": len(scenes)}
    bodies = [json.loads(m["Body"]) for m in drain_messages(stack, queue)]
    assert sorted(b["key"] for b in bodies) == sorted(scenes) and all(b["force"] is True for b in bodies)


@pytest.mark.realdata
def test_worker_stops_cleanly_on_sigterm(stack):
    """SIGTERM while a clip is in progress: the held message is finished and deleted, the process exits 0."""
    bucket, queue = stack["bucket"], stack["queue"]
    key = stack["good"][0]
    stack["sqs"].send_message(QueueUrl=queue, MessageBody=json.dumps({"bucket": bucket, "key": key}))
    code = "from sceneclip.cli.ops import worker; worker()"
    proc = subprocess.Popen([sys.executable, "-c", code, "--queue", queue, "--concurrency", "2", "--wait-time", "1",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the handler is reading the scene (the proxy sees its HEAD)
        if any(path == f"/{bucket}/{key}" for _, path in stack["proxy"].seen):
            break
        time.sleep(0.02)
    else:
        pytest.fail("no worker started the message")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out[out.rindex('{\n  "queue_url"'):])
    assert (summary["succeeded"], summary["failed"], summary["released"]) == (1, 0, 0)
    assert depth(stack, queue) == 0
    rec = records(stack)[(f"s3://{bucket}/{key}", GOOD_REGIONS[0])]
    assert rec["status"] == "ok"


# --- pieces --------------------------------------------------------------------------------------------------
def test_decide_rules():
    ok = {"region": "A", "status": "ok", "source_etag": "e1", "config_hash": "h"}
    perm = {"region": "B", "status": "failed", "error_type": "NoOverlapError", "source_etag": "e1", "config_hash": "h"}
    trans = {"region": "B", "status": "failed", "error_type": "SourceUnavailableError", "source_etag": "e1", "config_hash": "h"}
    unexpected = {**trans, "error_type": "UnexpectedError"}
    assert decide([], "e1", "h") == ("enqueue", "new")
    assert decide([ok], "e1", "h") == ("skip", "done")
    assert decide([ok], "e2", "h") == ("enqueue", "changed")  # re-uploaded
    assert decide([ok], "e1", "other") == ("enqueue", "changed")  # new configuration
    assert decide([ok, perm], "e1", "h") == ("skip", "failed-permanently")
    assert decide([ok, trans], "e1", "h") == ("enqueue", "retry")
    assert decide([ok, unexpected], "e1", "h") == ("enqueue", "retry")
    assert decide([ok, trans], "e1", "h", region="A") == ("skip", "done")
    assert decide([ok], "e1", "h", region="C") == ("enqueue", "new")
    assert decide([ok], "e1", "h", force=True) == ("enqueue", "force")


class _FlakySqs:
    """send_message_batch that fails entries as scripted (the way SQS reports partial batch failures)."""

    def __init__(self, script):
        self.script, self.calls = list(script), []

    def send_message_batch(self, QueueUrl, Entries):
        self.calls.append([e["Id"] for e in Entries])
        fail = self.script.pop(0) if self.script else {}
        return {"Successful": [{"Id": e["Id"]} for e in Entries if e["Id"] not in fail],
                "Failed": [{"Id": e["Id"], "Code": code, "Message": code, "SenderFault": code == "InvalidMessageContents"}
                           for e in Entries if (code := fail.get(e["Id"]))]}


def test_send_messages_resends_failed_entries():
    msgs = [(f"k{i}", {"bucket": "b", "key": f"k{i}"}) for i in range(10)]
    sqs = _FlakySqs([{"2": "InternalError", "5": "InvalidMessageContents"}, {"2": "ServiceUnavailable"}, {}])
    sent, resent, failures = send_messages(sqs, "q", msgs, sleep=lambda s: None)
    assert sent == 9 and resent == 2 and sqs.calls[1:] == [["2"], ["2"]]
    assert failures == [{"key": "k5", "code": "InvalidMessageContents", "message": "InvalidMessageContents"}]
    always = _FlakySqs([{"0": "InternalError"}] * 10)
    sent, resent, failures = send_messages(always, "q", msgs[:1], retries=3, sleep=lambda s: None)
    assert sent == 0 and resent == 3 and failures[0]["code"] == "InternalError" and len(always.calls) == 4


def test_sqs_event_is_what_powertools_reads(moto_endpoint):
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSEvent

    from sceneclip.aws.events import is_sqs_event, parse_sqs_body

    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=f"shape-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"bucket": "b", "key": "a b+c.tif", "region": "R"}),
                     MessageAttributes={"origin": {"DataType": "String", "StringValue": "backfill"}})
    msgs = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"])["Messages"]
    event = sqs_event(msgs, arn, "us-east-1")
    assert is_sqs_event(event)
    record = next(iter(SQSEvent(event).records))
    assert record.message_id == msgs[0]["MessageId"] and record.receipt_handle == msgs[0]["ReceiptHandle"]
    assert record.attributes.approximate_receive_count == "1" and record.event_source_arn == arn
    assert record.message_attributes["origin"].string_value == "backfill" and record.md5_of_body == msgs[0]["MD5OfBody"]
    ref, = parse_sqs_body(record.body)
    assert (ref.key, ref.region) == ("a b+c.tif", "R")


def test_heartbeat_keeps_a_held_message_invisible(moto_endpoint):
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=f"hb-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    msgs = sqs.receive_message(QueueUrl=url)["Messages"]
    beat = Heartbeat(sqs, url, visibility_timeout=1)
    try:
        beat.hold(msgs)
        time.sleep(2.5)  # 2.5 visibility timeouts
        assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
        assert beat.extensions >= 3
        beat.release()
        time.sleep(1.6)
        assert len(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", [])) == 1
    finally:
        beat.close()


def test_worker_summary_rate():
    s = WorkerSummary(queue_url="q", succeeded=30, duration_s=60.0)
    assert s.messages_per_minute == 30.0
    s.merge(WorkerSummary(queue_url="q", succeeded=10, failed=2, received=12, first_received=100.0,
                          last_succeeded=130.0))
    s.merge(WorkerSummary(queue_url="q", first_received=90.0, last_succeeded=None))
    assert (s.succeeded, s.failed, s.received) == (40, 2, 12)
    assert (s.first_received, s.last_succeeded) == (90.0, 130.0) and s.busy_messages_per_minute == 60.0
