"""Fault acceptance (issue 9): S3 faults injected by a proxy on loopback between sceneclip and the moto server.

Every S3 request of the handler — boto3's and GDAL's (``AWS_ENDPOINT_URL`` → ``sceneclip.core.gdalenv``) —
goes through :mod:`tests.faultproxy`. For each fault the test asserts the outcome (ok after in-call retries /
transient failed record and the message retried / permanent failed record and not retried), that no partial
output object exists, the idempotency record's state, and what a following backfill decides.

GDAL's and boto3's retry budgets are kept small so that persistent faults fail fast.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest

from sceneclip.aws import handler, s3 as s3io
from sceneclip.aws.backfill import decide
from sceneclip.core import gdalenv
from sceneclip.tools.local import LocalContext

from . import faultproxy
from .stack_setup import provision_stack
from .conftest import real

ROOT = Path(__file__).resolve().parents[1]
SCENE_KEY = "scenes/rmnp/rmnp-rgb.tif"
REGION = "Grand"
COUNTIES = ["Boulder", "Grand", "Jackson", "Larimer"]


@pytest.fixture
def proxy(moto_endpoint, monkeypatch):
    fp, server = faultproxy.start(moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", fp.url)
    yield fp
    server.shutdown()
    server.server_close()


@pytest.fixture
def stack(proxy, monkeypatch):
    """Template resources (through the proxy), a county store, one scene, the function's environment."""
    # Small in-call retry budgets: a persistent fault fails in seconds, a short burst still passes.
    made = provision_stack(monkeypatch, env={"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "3"})
    names, s3 = made["names"], made["s3"]
    s3.upload_file(real("landsat_rmnp_rgb_wgs84.tif"), names["InputBucket"], SCENE_KEY)
    monkeypatch.setitem(gdalenv.CLOUD_READ_OPTIONS, "GDAL_HTTP_MAX_RETRY", 2)
    monkeypatch.setitem(gdalenv.CLOUD_READ_OPTIONS, "GDAL_HTTP_RETRY_DELAY", 0.05)
    monkeypatch.setitem(gdalenv.CLOUD_READ_OPTIONS, "GDAL_HTTP_TIMEOUT", 5)
    handler._WARM_START_CACHE.clear()
    ddb = boto3.client("dynamodb")
    yield {"names": names, "s3": s3, "ddb": ddb, "bucket": names["InputBucket"], "proxy": proxy,
           "etag": s3.head_object(Bucket=names["InputBucket"], Key=SCENE_KEY)["ETag"].strip('"')}
    handler._WARM_START_CACHE.clear()


def message(mid: str, body: dict, attempt: int = 1) -> dict:
    return {"messageId": mid, "receiptHandle": mid, "body": json.dumps(body),
            "attributes": {"ApproximateReceiveCount": str(attempt)}, "messageAttributes": {}, "md5OfBody": "",
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}


def deliver(stack, *, region: str | None = REGION, attempt: int = 1, mid: str = "m1") -> dict:
    body = {"bucket": stack["bucket"], "key": SCENE_KEY}
    if region:
        body["region"] = region
    return handler.lambda_handler({"Records": [message(mid, body, attempt)]}, LocalContext("ClipFunction", 2048, 300))


def records(stack) -> dict[str, dict]:
    from sceneclip.aws.records_table import RecordStore

    return {r["region"]: r for r in RecordStore(stack["names"]["RecordsTable"], client=stack["ddb"]).scan()}


def outputs(stack) -> list[str]:
    resp = stack["s3"].list_object_versions(Bucket=stack["names"]["OutputBucket"])
    return [v["Key"] for v in resp.get("Versions", []) if v["Key"].endswith(".tif")]


def idempotency_items(stack) -> list[str]:
    items = stack["ddb"].scan(TableName=stack["names"]["IdempotencyTable"])["Items"]
    return [i["status"]["S"] for i in items]


def backfill_decision(stack, region: str | None = REGION) -> tuple[str, str]:
    settings = handler.get_app().pipeline.settings
    recs = list(records(stack).values())
    return decide(recs, stack["etag"], settings.config_hash, region=region)


def source_gets(stack) -> int:
    return stack["proxy"].count("GET", f"/{stack['bucket']}/{SCENE_KEY}")


# --- ok after in-call retries --------------------------------------------------------------------------------
def test_slowdown_burst_passes_on_in_call_retries(stack):
    stack["proxy"].add(method="GET", path=SCENE_KEY, status=503, code="SlowDown", message="Please reduce your request rate.", times=2)
    assert deliver(stack) == {"batchItemFailures": []}
    assert stack["proxy"].count("GET", SCENE_KEY, faulted=True) == 2  # the burst really happened
    rec = records(stack)[REGION]
    assert rec["status"] == "ok" and outputs(stack) == [f"clipped/{REGION}/{stack['names']['InputBucket']}/{SCENE_KEY}"]
    assert idempotency_items(stack) == ["COMPLETED"]
    assert backfill_decision(stack) == ("skip", "done")


# --- transient: recorded, retried, and a redelivery really clips ---------------------------------------------
@pytest.mark.parametrize("fault", [
    {"action": "status", "status": 500, "code": "InternalError"},  # every source GET, the whole invocation
    {"action": "status", "status": 503, "code": "SlowDown", "after": 1},  # tile reads after a good header read
    {"action": "reset", "after": 1},  # connection reset mid-body
    {"action": "truncate", "after": 1},  # body shorter than its Content-Length
], ids=["500-every-get", "503-tiles", "reset-mid-body", "truncated-body"])
def test_persistent_read_fault_is_transient_then_redelivery_clips(stack, fault):
    rule = stack["proxy"].add(method="GET", path=SCENE_KEY, **fault)
    assert deliver(stack) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert rule.hits > 0
    rec = records(stack)[REGION]
    assert rec["status"] == "failed" and rec["transient"] is True and rec["attempt"] == 1, rec
    assert rec["error_type"] == "SourceUnavailableError" and "will retry" in rec["error"]
    assert outputs(stack) == []
    assert idempotency_items(stack) == []  # released: the failure is not cached
    assert backfill_decision(stack) == ("enqueue", "retry")

    stack["proxy"].clear()
    before = source_gets(stack)
    assert deliver(stack, attempt=2) == {"batchItemFailures": []}
    assert source_gets(stack) > before  # really clipped again, not a replayed failure
    print(f"\n[measured] {rule.action} {fault.get('status', '')}: {rule.hits} faulted requests in the failed attempt, "
          f"{source_gets(stack) - before} source GETs in the redelivery")
    rec = records(stack)[REGION]
    assert rec["status"] == "ok" and rec.get("error_type") is None
    assert outputs(stack) == [f"clipped/{REGION}/{stack['names']['InputBucket']}/{SCENE_KEY}"] and idempotency_items(stack) == ["COMPLETED"]
    assert backfill_decision(stack) == ("skip", "done")


# --- permanent: recorded once, not retried ---------------------------------------------------------------------
@pytest.mark.parametrize("status,code,error_type,words", [
    (403, "AccessDenied", "AccessDeniedError", "access denied"),
    (404, "NoSuchKey", "RasterReadError", "deleted after the event"),
], ids=["403", "404-after-the-event"])
def test_permanent_source_fault_is_recorded_not_retried(stack, status, code, error_type, words):
    # HEAD (the event's check of the object) passes; the GETs of the clip then fail: denied, or deleted since.
    stack["proxy"].add(method="GET", path=SCENE_KEY, status=status, code=code, message=code)
    assert deliver(stack) == {"batchItemFailures": []}  # permanent: acknowledged, never looped
    rec = records(stack)[REGION]
    assert rec["status"] == "failed" and rec["transient"] is False and rec["error_type"] == error_type
    assert words in rec["error"] and "evidence:" in rec["error"], rec["error"]
    assert outputs(stack) == [] and idempotency_items(stack) == []
    assert backfill_decision(stack) == ("skip", "failed-permanently")


# --- output upload faults ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,query", [("PUT", "partNumber"), ("POST", "uploadId")],
                         ids=["UploadPart", "CompleteMultipartUpload"])
def test_multipart_upload_fault_is_transient_and_leaves_no_object(stack, monkeypatch, method, query):
    monkeypatch.setattr(s3io, "MULTIPART_THRESHOLD", 1024)  # every output goes up in parts
    monkeypatch.setattr(s3io, "MULTIPART_CHUNKSIZE", 5 * 1024 * 1024)
    out = stack["names"]["OutputBucket"]
    rule = stack["proxy"].add(method=method, path=f"/{out}/", query=query, status=500, code="InternalError")
    assert deliver(stack) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert rule.hits > 0
    rec = records(stack)[REGION]
    assert rec["status"] == "failed" and rec["transient"] is True and rec["error_type"] == "UploadError"
    assert outputs(stack) == []
    assert stack["s3"].list_multipart_uploads(Bucket=out).get("Uploads", []) == []  # aborted, nothing dangling
    assert idempotency_items(stack) == []
    assert backfill_decision(stack) == ("enqueue", "retry")
    stack["proxy"].clear()
    assert deliver(stack, attempt=2) == {"batchItemFailures": []}
    assert outputs(stack) == [f"clipped/{REGION}/{stack['names']['InputBucket']}/{SCENE_KEY}"]


# --- issue point 3: a success supersedes the scene-level failure ----------------------------------------------
def test_scene_failed_before_regions_then_succeeded_is_skipped_by_backfill(stack):
    stack["proxy"].add(method="GET", path=SCENE_KEY, status=500, code="InternalError")
    assert deliver(stack, region=None) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    first = records(stack)
    assert list(first) == ["-"] and first["-"]["transient"] is True  # failed before its regions were known
    assert backfill_decision(stack, region=None) == ("enqueue", "retry")
    stack["proxy"].clear()
    assert deliver(stack, region=None, attempt=2) == {"batchItemFailures": []}
    after = records(stack)
    assert sorted(after) == COUNTIES and all(r["status"] == "ok" for r in after.values())  # "-" is gone
    assert backfill_decision(stack, region=None) == ("skip", "done")
    from sceneclip.aws.ops import summarize_records

    status = summarize_records(list(after.values()))
    assert status.failed_transient == 0 and status.by_status["ok"] == 4


# --- issue point 5: an ambiguous EventBridge key is resolved by ETag ---------------------------------------------
@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_ambiguous_eventbridge_key_clips_the_object_the_event_names(stack, versioned):
    s3 = stack["s3"]
    bucket = stack["bucket"]
    if not versioned:
        bucket = f"plain-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
    plus, space = "scenes/rmnp/rmnp+rgb.tif", "scenes/rmnp/rmnp rgb.tif"
    s3.upload_file(real("landsat_rmnp_rgb_wgs84.tif"), bucket, plus)
    s3.upload_file(real("terrain_rmnp_dem_wgs84.tif"), bucket, space)  # other bytes, other ETag
    head = s3.head_object(Bucket=bucket, Key=plus)
    assert head["ETag"] != s3.head_object(Bucket=bucket, Key=space)["ETag"]
    event = json.loads((ROOT / "events" / "eventbridge-object-created.json").read_text())
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"].update(key=plus, etag=head["ETag"].strip('"'), size=head["ContentLength"])
    if head.get("VersionId") and head["VersionId"] != "null":
        event["detail"]["object"]["version-id"] = head["VersionId"]
    else:
        event["detail"]["object"].pop("version-id")
    resp = handler.lambda_handler(event, LocalContext("ClipFunction", 2048, 300))
    assert resp["results"] and all(r["status"] == "ok" for r in resp["results"]), resp
    assert {r["scene"] for r in resp["results"]} == {f"s3://{bucket}/{plus}"}

    # Neither object has the event's ETag (replaced since): a clear permanent error, nothing clipped.
    event["detail"]["object"].update(etag="0" * 32)
    event["detail"]["object"].pop("version-id", None)
    resp = handler.lambda_handler(event, LocalContext("ClipFunction", 2048, 300))
    [res] = resp["results"]
    assert res["status"] == "failed" and res["error_type"] == "AmbiguousKeyError" and res["transient"] is False
    assert "rmnp+rgb.tif" in res["error"] and "rmnp rgb.tif" in res["error"]


# --- issue point 7: a hostile SQS body is one failed message, not a failed batch --------------------------------
def test_deeply_nested_sqs_body_is_invalid_and_the_batch_goes_on(stack):
    nested = "[" * 100_000 + "]" * 100_000  # 200 KB
    event = {"Records": [message("deep", {}), message("good", {"bucket": stack["bucket"], "key": SCENE_KEY, "region": REGION})]}
    event["Records"][0]["body"] = nested
    resp = handler.lambda_handler(event, LocalContext("ClipFunction", 2048, 300))
    assert resp == {"batchItemFailures": []}  # the bad one is dropped as invalid (permanent), the good one clipped
    assert records(stack)[REGION]["status"] == "ok"
