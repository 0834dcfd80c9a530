"""End to end over moto's S3, SQS and DynamoDB *server*: events → handler → /vsis3/ clip → COG → record.

GDAL really reads over HTTP from the loopback moto server; nothing of ours is mocked. Resources are created
from template.yaml (key schemas, versioning, redrive) under names unique to each test.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import boto3
import pytest
import rasterio

from sceneclip.aws import handler
from sceneclip.tools.local import LocalContext, retarget_event

from .stack_setup import provision_stack
from .conftest import real
from .test_stac import validate_item_dict

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
SCENE_KEY = "scenes/rmnp/rmnp-rgb.tif"
COUNTIES = ["Boulder", "Grand", "Jackson", "Larimer"]


@pytest.fixture
def stack(moto_endpoint, monkeypatch, tmp_path):
    """Buckets, queues, tables from the template + a compiled boundary store + the function's environment."""
    made = provision_stack(monkeypatch)
    yield {**made, "ddb": boto3.resource("dynamodb")}
    handler._WARM_START_CACHE.clear()


def out_key(stack, region, key=SCENE_KEY, prefix="clipped/"):
    """The default layout, written out: {prefix}{region_slug}/{source bucket}/{key_slug} (safe keys stay as they are)."""
    return f"{prefix}{region}/{stack['names']['InputBucket']}/{key}"


def upload_scene(stack, key=SCENE_KEY, path=None):
    s3 = stack["s3"]
    s3.upload_file(path or real("landsat_rmnp_rgb_wgs84.tif"), stack["names"]["InputBucket"], key)
    head = s3.head_object(Bucket=stack["names"]["InputBucket"], Key=key)
    return head.get("VersionId"), head["ETag"].strip('"')


def sample_event(name, stack, key=SCENE_KEY, version=None, etag=None):
    """A sample from events/ retargeted at this test's bucket and object version."""
    event = json.loads((EVENTS / name).read_text().replace("sceneclip-input", stack["names"]["InputBucket"]))
    return retarget_event(event, {key: {"VersionId": version, "ETag": etag}}, key=key)


def invoke(event):
    return handler.lambda_handler(event, LocalContext("ClipFunction", 2048, 300))


def records(stack):
    table = stack["ddb"].Table(stack["names"]["RecordsTable"])
    return table.scan()["Items"]


def outputs(stack, suffix=".tif"):
    resp = stack["s3"].list_object_versions(Bucket=stack["names"]["OutputBucket"])
    return [v for v in resp.get("Versions", []) if v["Key"].endswith(suffix)]


def test_s3_put_spatial_lookup_multi_region(stack):
    version, etag = upload_scene(stack)
    resp = invoke(sample_event("s3-put.json", stack, version=version, etag=etag))
    assert resp["statusCode"] == 200
    got = sorted(r["region"] for r in resp["results"])
    assert got == COUNTIES and all(r["status"] == "ok" for r in resp["results"])
    keys = sorted(o["Key"] for o in outputs(stack))
    assert keys == [out_key(stack, c) for c in COUNTIES]
    s3 = stack["s3"]
    head = s3.head_object(Bucket=stack["names"]["OutputBucket"], Key=out_key(stack, "Larimer"))
    assert head["ContentType"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    meta = head["Metadata"]
    assert meta["source-bucket"] == stack["names"]["InputBucket"] and meta["source-key"] == SCENE_KEY
    assert meta["source-version"] == version and meta["source-etag"] == etag and meta["sceneclip-version"]
    assert meta["boundary-version"]
    recs = {r["region"]: r for r in records(stack)}
    assert set(recs) == set(COUNTIES)
    larimer = recs["Larimer"]
    assert larimer["status"] == "ok" and larimer["source"] == f"s3://{stack['names']['InputBucket']}/{SCENE_KEY}"
    assert larimer["source_etag"] == etag and larimer["source_version"] == version
    assert larimer["output"].endswith(out_key(stack, "Larimer")) and larimer["output_etag"]
    assert 0 < larimer["bytes_fetched"] and larimer["requests"] > 0 and larimer["peak_memory_mb"] > 0
    assert larimer["size_bytes"] == head["ContentLength"]
    # The COG in the bucket is the verified one: same sha256, and GDAL reads it back over /vsis3/.
    import hashlib

    body = s3.get_object(Bucket=stack["names"]["OutputBucket"], Key=out_key(stack, "Larimer"))["Body"].read()
    assert hashlib.sha256(body).hexdigest() == larimer["sha256"]
    # STAC Item next to the COG.
    item = json.loads(s3.get_object(Bucket=stack["names"]["OutputBucket"], Key=out_key(stack, "Larimer")[: -len(".tif")] + ".stac.json")["Body"].read())
    validate_item_dict(item)  # core + every declared extension schema, offline
    assert item["assets"]["data"]["file:checksum"] == "1220" + larimer["sha256"]
    assert item["properties"]["sceneclip:region"] == "Larimer"


@pytest.mark.parametrize("name", ["s3-put.json", "eventbridge-object-created.json", "direct.json"])
def test_every_direct_event_shape(stack, name):
    version, etag = upload_scene(stack)
    resp = invoke(sample_event(name, stack, version=version, etag=etag))
    assert sorted(r["region"] for r in resp["results"]) == COUNTIES
    assert all(r["status"] == "ok" for r in resp["results"])


@pytest.mark.parametrize("name", ["sqs-s3.json", "sqs-sns-s3.json", "sqs-backfill.json"])
def test_every_sqs_event_shape(stack, name):
    version, etag = upload_scene(stack)
    event = sample_event(name, stack, version=version, etag=etag)
    if name == "sqs-backfill.json":
        body = json.loads(event["Records"][0]["body"])
        body["region"] = "Grand"
        body.pop("version_id", None), body.pop("etag", None)
        event["Records"][0]["body"] = json.dumps(body)
    resp = invoke(event)
    assert resp == {"batchItemFailures": []}
    regions = sorted({r["region"] for r in records(stack)})
    assert regions == (["Grand"] if name == "sqs-backfill.json" else COUNTIES)
    assert all(r["status"] == "ok" for r in records(stack))


def test_encoded_key_is_decoded(stack):
    key = "scenes/rmnp/LC08 rmnp+rgb(1).tif"
    version, etag = upload_scene(stack, key=key)
    event = json.loads((EVENTS / "s3-put-encoded-key.json").read_text().replace("sceneclip-input", stack["names"]["InputBucket"]))
    event["Records"][0]["s3"]["object"]["versionId"] = version
    resp = invoke(event)
    assert all(r["status"] == "ok" for r in resp["results"]), resp
    # The key needs URL encoding, so its slug is hashed: no space, '+' or '(' reaches the output key.
    got = [o["Key"] for o in outputs(stack) if o["Key"].startswith(out_key(stack, "Larimer", ""))]
    assert len(got) == 1 and re.fullmatch(r"[A-Za-z0-9._/-]+", got[0]), got
    assert re.fullmatch(re.escape(out_key(stack, "Larimer", "scenes/rmnp/LC08_rmnp_rgb_1_-h")) + r"[0-9a-f]{10}\.tif", got[0])


def test_test_event_is_acknowledged(stack):
    resp = invoke(sample_event("s3-test-event.json", stack))
    assert resp["statusCode"] == 200 and resp["results"] == []
    assert records(stack) == [] and outputs(stack) == []


def test_key_pattern_lookup_and_unknown_region(stack, monkeypatch):
    monkeypatch.setenv("SCENECLIP_REGION_PATTERN", r"^scenes/(?P<region>[^/]+)/")
    handler._WARM_START_CACHE.clear()
    upload_scene(stack, key="scenes/Boulder/a.tif")
    upload_scene(stack, key="scenes/Atlantis/a.tif")
    ok = invoke({"bucket": stack["names"]["InputBucket"], "key": "scenes/Boulder/a.tif"})
    assert [r["region"] for r in ok["results"]] == ["Boulder"] and ok["results"][0]["status"] == "ok"
    bad = invoke({"bucket": stack["names"]["InputBucket"], "key": "scenes/Atlantis/a.tif"})
    assert bad["results"][0]["status"] == "failed" and bad["results"][0]["error_type"] == "UnknownRegionError"
    assert "Atlantis" in bad["results"][0]["error"]
    assert [o["Key"] for o in outputs(stack)] == [out_key(stack, "Boulder", "scenes/Boulder/a.tif")]


def test_duplicate_delivery_produces_output_once(stack):
    version, etag = upload_scene(stack)
    event = sample_event("s3-put.json", stack, version=version, etag=etag)
    invoke(event)
    first = {o["Key"]: o["VersionId"] for o in outputs(stack)}
    handler._WARM_START_CACHE.clear()  # a different (cold) container gets the duplicate
    again = invoke(copy.deepcopy(event))
    assert all(r["status"] == "ok" for r in again["results"])
    assert len(outputs(stack)) == len(first) == 4  # no second version of any output object


def test_reupload_same_key_is_processed_again_in_warm_container(stack, tmp_path):
    version1, etag1 = upload_scene(stack)
    invoke(sample_event("s3-put.json", stack, version=version1, etag=etag1))
    # New content under the same key: the same scene, brightened (different bytes, same grid).
    with rasterio.open(real("landsat_rmnp_rgb_wgs84.tif")) as src:
        profile, data = src.profile, src.read()
    changed = tmp_path / "changed.tif"
    with rasterio.open(changed, "w", **profile) as dst:
        dst.write((data // 2).astype(data.dtype))
    version2, etag2 = upload_scene(stack, path=str(changed))
    assert etag2 != etag1
    resp = invoke(sample_event("s3-put.json", stack, version=version2, etag=etag2))  # same warm container
    assert all(r["status"] == "ok" for r in resp["results"])
    rec = stack["ddb"].Table(stack["names"]["RecordsTable"]).get_item(
        Key={"scene": f"s3://{stack['names']['InputBucket']}/{SCENE_KEY}", "region": "Larimer"})["Item"]
    assert rec["source_etag"] == etag2
    body = stack["s3"].get_object(Bucket=stack["names"]["OutputBucket"], Key=out_key(stack, "Larimer"))["Body"].read()
    out = tmp_path / "out.tif"
    out.write_bytes(body)
    with rasterio.open(out) as o, rasterio.open(changed) as c:
        win = rasterio.windows.from_bounds(*o.bounds, transform=c.transform).round_offsets().round_lengths()
        expect = c.read(window=win, masked=True)
        got = o.read(masked=True)
        valid = ~got.mask
        assert (got.data[valid] == expect.data[valid]).all()  # new bytes, not the stale first upload


def test_reupload_without_version_id_reads_fresh_bytes(stack, tmp_path):
    """Unversioned path (/vsis3/): GDAL's per-path cache must not serve the old bytes in a warm container."""
    s3, bucket = stack["s3"], stack["names"]["InputBucket"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    upload_scene(stack)
    invoke({"bucket": bucket, "key": SCENE_KEY, "region": "Boulder"})
    with rasterio.open(real("landsat_rmnp_rgb_wgs84.tif")) as src:
        profile, data = src.profile, src.read()
    changed = tmp_path / "changed.tif"
    with rasterio.open(changed, "w", **profile) as dst:
        dst.write((255 - data).astype(data.dtype))
    upload_scene(stack, path=str(changed))
    invoke({"bucket": bucket, "key": SCENE_KEY, "region": "Boulder", "force": True})
    body = s3.get_object(Bucket=stack["names"]["OutputBucket"], Key=out_key(stack, "Boulder"))["Body"].read()
    out = tmp_path / "o.tif"
    out.write_bytes(body)
    with rasterio.open(out) as o, rasterio.open(changed) as c:
        win = rasterio.windows.from_bounds(*o.bounds, transform=c.transform).round_offsets().round_lengths()
        expect, got = c.read(window=win), o.read(masked=True)
        assert (got.data[~got.mask] == expect[~got.mask]).all()


def test_event_under_output_location_is_refused(stack, monkeypatch):
    # Same bucket for input and output: the output prefix must still never be clipped.
    monkeypatch.setenv("SCENECLIP_OUTPUT_BUCKET", stack["names"]["InputBucket"])
    handler._WARM_START_CACHE.clear()
    upload_scene(stack, key=out_key(stack, "Larimer"))
    resp = invoke({"bucket": stack["names"]["InputBucket"], "key": out_key(stack, "Larimer")})
    assert resp["results"][0]["status"] == "failed"
    assert resp["results"][0]["error_type"] == "RecursionRefusedError"
    objs = stack["s3"].list_objects_v2(Bucket=stack["names"]["InputBucket"], Prefix="clipped/")["Contents"]
    assert len(objs) == 1  # nothing new written under the output prefix


def test_bad_raster_failed_record_no_output(stack):
    bucket = stack["names"]["InputBucket"]
    stack["s3"].put_object(Bucket=bucket, Key="scenes/broken.tif", Body=b"not a tiff at all" * 100)
    resp = invoke({"bucket": bucket, "key": "scenes/broken.tif"})
    res = resp["results"][0]
    assert res["status"] == "failed" and res["error_type"] == "RasterReadError"
    rec = records(stack)[0]
    assert rec["status"] == "failed" and rec["error"] and rec["scene"] == f"s3://{bucket}/scenes/broken.tif"
    # The versioned read goes through a presigned URL: its signature and session token never reach a record.
    for secret in ("Signature", "security-token", "AWSAccessKeyId", "X-Amz-Credential"):
        assert secret not in rec["error"] and secret not in res["error"]
    assert f"s3://{bucket}/scenes/broken.tif" in rec["error"]
    assert outputs(stack) == []


def test_no_intersecting_region_and_missing_object(stack):
    bucket = stack["names"]["InputBucket"]
    upload_scene(stack, key="scenes/libya.tif", path=real("sentinel2_libya_b09_utm34n.tif"))
    res = invoke({"bucket": bucket, "key": "scenes/libya.tif"})["results"][0]
    assert res["status"] == "failed" and res["error_type"] == "NoOverlapError" and "no region" in res["error"]
    gone = invoke({"bucket": bucket, "key": "scenes/never-uploaded.tif"})["results"][0]
    assert gone["status"] == "failed" and "not found" in gone["error"]
    assert outputs(stack) == []


def _inject_throttling(s3_client, key_fragment):
    """S3 answers SlowDown for one key (a transient fault), through botocore's own event hooks."""
    from botocore.exceptions import ClientError

    def hook(params, **_):
        if key_fragment in params.get("Key", ""):
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "HeadObject")

    s3_client.meta.events.register("provide-client-params.s3.HeadObject", hook)


def test_sqs_batch_one_bad_record_never_fails_the_others(stack):
    bucket = stack["names"]["InputBucket"]
    version, etag = upload_scene(stack)
    stack["s3"].put_object(Bucket=bucket, Key="scenes/broken.tif", Body=b"garbage")
    upload_scene(stack, key="scenes/flaky.tif")
    app = handler.get_app()
    _inject_throttling(app.s3, "flaky.tif")  # a throttled/5xx read: transient

    def msg(mid, body):
        return {"messageId": mid, "receiptHandle": mid, "body": json.dumps(body), "attributes": {},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}

    event = {"Records": [
        msg("good", {"bucket": bucket, "key": SCENE_KEY, "region": "Grand"}),
        msg("bad", {"bucket": bucket, "key": "scenes/broken.tif"}),
        msg("flaky", {"bucket": bucket, "key": "scenes/flaky.tif"}),
        msg("garbage", {"hello": "world"}),
    ]}
    resp = invoke(event)
    # Only the transient one is reported failed (SQS retries it); permanent ones are recorded, not looped.
    assert resp == {"batchItemFailures": [{"itemIdentifier": "flaky"}]}
    recs = {(r["scene"].rsplit("/", 1)[-1], r["status"], r.get("error_type")) for r in records(stack)}
    assert ("rmnp-rgb.tif", "ok", None) in recs
    assert ("broken.tif", "failed", "RasterReadError") in recs
    assert ("flaky.tif", "failed", "SourceUnavailableError") in recs


def test_missing_configuration_fails_naming_the_variable(stack, monkeypatch):
    monkeypatch.delenv("SCENECLIP_OUTPUT_BUCKET")
    handler._WARM_START_CACHE.clear()
    from sceneclip.errors import ConfigError

    with pytest.raises(ConfigError, match="SCENECLIP_OUTPUT_BUCKET"):
        invoke({"bucket": "x", "key": "y.tif"})
    monkeypatch.setenv("SCENECLIP_OUTPUT_BUCKET", "b")
    monkeypatch.setenv("SCENECLIP_REGION_PATTERN", "scenes/(.*)/")
    with pytest.raises(ConfigError, match="SCENECLIP_REGION_PATTERN"):
        invoke({"bucket": "x", "key": "y.tif"})


def test_only_the_window_is_fetched(stack, tmp_path):
    """A tiled source: bytes fetched are the header and the tiles under the boundary, not the file."""
    bucket = stack["names"]["InputBucket"]
    big = tmp_path / "big.tif"
    with rasterio.open(real("landsat_rmnp_rgb_wgs84.tif")) as src:
        profile, data = src.profile, src.read()
    import numpy as np

    profile.update(tiled=True, blockxsize=256, blockysize=256, compress="deflate", width=data.shape[2] * 4, height=data.shape[1] * 4,
                   transform=src.transform)
    tiled = np.tile(data, (1, 4, 4))
    with rasterio.open(big, "w", **profile) as dst:
        dst.write(tiled)
    upload_scene(stack, key="scenes/big.tif", path=str(big))
    res = invoke({"bucket": bucket, "key": "scenes/big.tif", "region": "Boulder"})["results"][0]
    assert res["status"] == "ok", res
    rec = stack["ddb"].Table(stack["names"]["RecordsTable"]).get_item(
        Key={"scene": f"s3://{bucket}/scenes/big.tif", "region": "Boulder"})["Item"]
    size = big.stat().st_size
    assert 0 < int(rec["bytes_fetched"]) < 0.5 * size, (rec["bytes_fetched"], size)


def test_emf_metrics_and_json_logs(stack, capsys):
    import io

    bucket = stack["names"]["InputBucket"]
    upload_scene(stack)
    stack["s3"].put_object(Bucket=bucket, Key="scenes/broken.tif", Body=b"garbage")
    log_stream = io.StringIO()
    previous = handler.logger.registered_handler.setStream(log_stream)  # Powertools' JSON handler
    try:
        invoke({"bucket": bucket, "key": SCENE_KEY, "region": "Grand"})
        invoke({"bucket": bucket, "key": "scenes/broken.tif"})
    finally:
        handler.logger.registered_handler.setStream(previous)
    text = capsys.readouterr().out + "\n" + log_stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    names = {m["Name"] for blob in emf for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"ScenesClipped", "BytesFetched", "OutputBytes", "ClipDuration", "ClipFailures", "ClipFailuresByType"} <= names
    by_type = [b for b in emf if "ClipFailuresByType" in b]
    assert by_type and by_type[0]["ErrorType"] == "RasterReadError"
    logs = [line for line in lines if "_aws" not in line and "level" in line]
    assert logs and all(line.get("correlation_id") for line in logs)


def test_failed_upload_leaves_no_object_and_retries(stack):
    """S3 answers 500 on the COG PUT: no output object, a failed (transient) record, the message retried."""
    from botocore.exceptions import ClientError

    version, etag = upload_scene(stack)
    app = handler.get_app()

    def refuse_put(params, **_):
        if params.get("Key", "") == out_key(stack, "Jackson"):
            raise ClientError({"Error": {"Code": "InternalError", "Message": "We encountered an internal error."},
                               "ResponseMetadata": {"HTTPStatusCode": 500}}, "PutObject")

    app.s3.meta.events.register("provide-client-params.s3.PutObject", refuse_put)
    def message(mid, region):
        return {"messageId": mid, "receiptHandle": mid, "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1",
                "body": json.dumps({"bucket": stack["names"]["InputBucket"], "key": SCENE_KEY, "region": region})}

    msg = message("m1", "Jackson")
    resp = invoke({"Records": [msg, message("m2", "Grand")]})
    assert resp == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert [o["Key"] for o in outputs(stack)] == [out_key(stack, "Grand")]  # no Jackson object
    assert [o["Key"] for o in outputs(stack, ".json")] == [out_key(stack, "Grand")[: -len(".tif")] + ".stac.json"]
    rec = {r["region"]: r for r in records(stack)}["Jackson"]
    assert rec["status"] == "failed" and rec["error_type"] == "UploadError" and "InternalError" in rec["error"]
    # The retry (S3 healthy again) succeeds: idempotency released the in-progress lock on the failure.
    app.s3.meta.events.unregister("provide-client-params.s3.PutObject", refuse_put)
    assert invoke({"Records": [msg]}) == {"batchItemFailures": []}
    assert out_key(stack, "Jackson") in [o["Key"] for o in outputs(stack)]
    assert {r["region"]: r for r in records(stack)}["Jackson"]["status"] == "ok"


@pytest.mark.parametrize("stored_key", ["scenes/rmnp/LC08 rmnp(1).tif", "scenes/rmnp/c++ rmnp.tif"])
def test_eventbridge_key_decoded_or_literal(stack, stored_key):
    """EventBridge's key encoding is undocumented: decoded first, the key as delivered if that is missing."""
    from urllib.parse import quote_plus

    version, etag = upload_scene(stack, key=stored_key)
    event = json.loads((EVENTS / "eventbridge-object-created.json").read_text()
                       .replace("sceneclip-input", stack["names"]["InputBucket"]))
    obj = event["detail"]["object"]
    obj.update({"version-id": version, "etag": etag})
    # Encoded as S3 notifications are; for the '+' key send it literally, as an unencoded producer would.
    obj["key"] = quote_plus(stored_key, safe="/") if "(" in stored_key else stored_key
    resp = invoke(event)
    assert [r["status"] for r in resp["results"]] == ["ok"] * 4, resp
    assert all(r["scene"].endswith(stored_key) for r in resp["results"])
