"""A worker SIGKILLed mid-clip (as Lambda kills at its timeout or out of memory), then a new worker (issue 9).

The killed one leaves what a killed Lambda leaves: no record, the idempotency item INPROGRESS, a spill
directory, the message in flight. The test then shows the recovery: the INPROGRESS item expires with the
worker's own deadline (``--timeout``; Powertools' ``in_progress_expiration`` from the context), so the
redelivered message is clipped, not stuck behind it; the next worker's start removes the stale spill
directory; and backfill, which saw the scene as ``new``, skips it as ``done`` afterwards.

The S3 traffic of the worker (boto3 and GDAL) goes through a loopback proxy that slows each GET of the scene,
so that the kill lands while the clip is reading into its spill directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

from sceneclip.aws.backfill import decide
from sceneclip.aws.config import Settings

from .stack_setup import provision_stack
from .conftest import real
from .loopback_proxy import LoopbackProxy

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 12  # the worker's function timeout (its per-batch deadline)


@pytest.fixture
def killed_stack(moto_endpoint, monkeypatch, tmp_path):
    proxy = LoopbackProxy(moto_endpoint).start()
    spill = tmp_path / "spill"
    spill.mkdir()
    stack = provision_stack(monkeypatch, env={
        "SCENECLIP_REGION_PATTERN": r"^scenes/(?P<region>[^/]+)/",
        "SCENECLIP_MEMORY_LIMIT_MB": "0",  # every clip spills to SCENECLIP_TMPDIR
        "SCENECLIP_TMPDIR": str(spill), "SCENECLIP_DEADLINE_MARGIN_S": "3", "POWERTOOLS_LOG_LEVEL": "WARNING",
        "AWS_ENDPOINT_URL_S3": proxy.url,
    })
    names, made, s3 = stack["names"], stack["made"], stack["s3"]
    sqs = boto3.client("sqs")
    sqs.set_queue_attributes(QueueUrl=made["WorkQueue"], Attributes={"VisibilityTimeout": "2"})
    ddb = boto3.resource("dynamodb")
    yield {"names": names, "queue": made["WorkQueue"], "sqs": sqs, "s3": s3, "proxy": proxy, "spill": spill,
           "records": ddb.Table(names["RecordsTable"]), "idem": ddb.Table(names["IdempotencyTable"])}
    proxy.stop()


def _worker(queue: str, *extra: str) -> subprocess.Popen[str]:
    code = "from sceneclip.cli.ops import worker; worker()"
    return subprocess.Popen([sys.executable, "-c", code, "--queue", queue, "--concurrency", "1", "--wait-time", "1",
                             "--timeout", str(TIMEOUT_S), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy())


def _wait_for(predicate, seconds: float, what: str):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _decision(st, scene: str, etag: str) -> tuple[str, str]:
    items = [i for i in st["records"].scan()["Items"] if i["scene"] == scene]
    return decide(items, etag, Settings.from_env().config_hash)


@pytest.mark.realdata
def test_sigkill_mid_clip_then_redelivery_is_clipped(killed_stack):
    st = killed_stack
    bucket, key = st["names"]["InputBucket"], "scenes/Larimer/killed.tif"
    st["s3"].upload_file(real("landsat_rmnp_rgb_wgs84.tif"), bucket, key)
    etag = st["s3"].head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    scene = f"s3://{bucket}/{key}"
    path = f"/{bucket}/{key}"
    st["proxy"].rule = lambda method, p, headers: ("delay", 2.0) if method == "GET" and p == path else None
    st["sqs"].send_message(QueueUrl=st["queue"], MessageBody=json.dumps({"bucket": bucket, "key": key}))

    # 1. A worker starts the clip; it is SIGKILLed while reading into its spill directory.
    proc = _worker(st["queue"])
    try:
        spill_dir = _wait_for(lambda: [p for p in st["spill"].iterdir() if p.name.startswith("sceneclip-")], 90,
                              "the clip's spill directory")[0]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    st["proxy"].rule = None  # S3 is healthy again

    # What a killed Lambda leaves: no record, an INPROGRESS lock, a spill directory, the message in flight.
    assert spill_dir.exists()
    assert st["records"].scan()["Items"] == []
    (lock,) = st["idem"].scan()["Items"]
    assert lock["status"] == "INPROGRESS" and "in_progress_expiration" in lock
    expires_at = int(lock["in_progress_expiration"]) / 1000  # epoch seconds: the killed worker's deadline
    assert expires_at <= time.time() + TIMEOUT_S + 1
    assert _decision(st, scene, etag) == ("enqueue", "new")  # what backfill sees now

    # 2. After the killed worker's deadline (its lock is then abandoned, its spill dir older than the timeout)
    #    a new worker starts and drains the queue.
    wait = max(expires_at - time.time(), spill_dir.stat().st_mtime + TIMEOUT_S - time.time()) + 0.5
    time.sleep(max(0.0, wait))
    proc = _worker(st["queue"], "--drain", "--json")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out[out.rindex('{\n  "queue_url"'):])
    assert summary["succeeded"] == 1 and summary["failed"] == 0  # clipped at once, not waited on

    assert not spill_dir.exists()  # removed at the second worker's start
    assert list(st["spill"].iterdir()) == []  # and its own clip cleaned up after itself
    (rec,) = st["records"].scan()["Items"]
    assert rec["status"] == "ok" and rec["scene"] == scene and rec["region"] == "Larimer"
    (lock,) = st["idem"].scan()["Items"]
    assert lock["status"] == "COMPLETED"
    assert _decision(st, scene, etag) == ("skip", "done")  # backfill no longer re-enqueues it as new
    versions = st["s3"].list_object_versions(Bucket=st["names"]["OutputBucket"]).get("Versions", [])
    assert len([v for v in versions if v["Key"].endswith(".tif")]) == 1


def test_heartbeat_stops_extending_a_message_at_its_deadline(moto_endpoint):
    """Held but given up (its deadline passed): the message returns to the queue although never released."""
    from sceneclip.aws.heartbeat import Heartbeat

    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=f"hb-dl-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    msgs = sqs.receive_message(QueueUrl=url)["Messages"]
    beat = Heartbeat(sqs, url, visibility_timeout=1)
    try:
        beat.hold(msgs, deadline_s=2)
        time.sleep(1.2)  # past the first visibility timeout: still hidden, the heartbeat extended it
        assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
        assert beat.extensions >= 1
        back = _wait_for(lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []), 30,
                         "the given-up message to return")
        assert len(back) == 1 and beat.given_up == 1 and beat.held() == []
    finally:
        beat.close()
