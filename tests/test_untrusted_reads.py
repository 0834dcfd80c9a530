"""Issue 15, findings 3 (pinned reads, keys) and 5 (input buckets, metadata, presign lifetime, event size).

Over moto's server through the handler: every read is of exactly the object the event announced, keys GDAL
would rewrite are refused, only input buckets are read, and S3 user metadata stays inside its 2 KB.
"""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import parse_qs, urlparse

import pytest

from sceneclip.aws import handler, sources
from sceneclip.aws.s3 import METADATA_VALUE_LIMIT, SceneObject, gdal_source, metadata_value

from .conftest import real
from .test_pipeline_e2e import invoke, outputs, records, stack  # noqa: F401  (fixture)

SCENE = real("landsat_rmnp_rgb_wgs84.tif")
OTHER = real("terrain_rmnp_dem_wgs84.tif")


@pytest.fixture
def plain_bucket(stack, monkeypatch):
    """An unversioned source bucket next to the template's (versioned) input bucket, both allow-listed."""
    name = f"ext-{uuid.uuid4().hex[:8]}"
    stack["s3"].create_bucket(Bucket=name)
    monkeypatch.setenv("SCENECLIP_INPUT_BUCKETS", f"{stack['names']['InputBucket']},{name}")
    handler._WARM_START_CACHE.clear()
    return name


def test_unversioned_object_overwritten_between_head_and_read_is_superseded(stack, plain_bucket, monkeypatch):
    s3, key = stack["s3"], "scenes/race.tif"
    s3.upload_file(SCENE, plain_bucket, key)
    first = s3.head_object(Bucket=plain_bucket, Key=key)["ETag"].strip('"')
    real_head = sources.head_scene  # the scene's HEAD (sources.head_source: region's client, payer)

    def head_then_overwrite(*args, **kwargs):  # the race: another writer lands right after our HEAD
        obj = real_head(*args, **kwargs)
        s3.upload_file(OTHER, plain_bucket, key)
        return obj

    monkeypatch.setattr(sources, "head_scene", head_then_overwrite)
    resp = invoke({"bucket": plain_bucket, "key": key, "region": "Larimer"})
    (result,) = resp["results"]
    assert result["status"] == "failed" and result["error_type"] == "SupersededError"
    second = s3.head_object(Bucket=plain_bucket, Key=key)["ETag"].strip('"')
    assert first != second and first in result["error"] and second in result["error"] and key in result["error"]
    (rec,) = records(stack)
    assert rec["transient"] is False and rec["source_etag"] == first
    assert outputs(stack) == []


def test_event_etag_that_is_no_longer_the_objects_is_superseded(stack, plain_bucket):
    s3, key = stack["s3"], "scenes/stale.tif"
    s3.upload_file(SCENE, plain_bucket, key)
    resp = invoke({"bucket": plain_bucket, "key": key, "etag": "0123456789abcdef0123456789abcdef"})
    (result,) = resp["results"]
    assert result["error_type"] == "SupersededError" and "0123456789abcdef0123456789abcdef" in result["error"]
    assert outputs(stack) == []


def test_unversioned_read_still_clips_when_unchanged(stack, plain_bucket):
    stack["s3"].upload_file(SCENE, plain_bucket, "scenes/fine.tif")
    resp = invoke({"bucket": plain_bucket, "key": "scenes/fine.tif", "region": "Larimer"})
    assert [r["status"] for r in resp["results"]] == ["ok"]


@pytest.mark.parametrize("key", ["scenes/../other.tif", "scenes/./other.tif", "scenes//other.tif",
                                 "/other.tif", "scenes\\..\\other.tif"])
def test_keys_gdal_would_rewrite_are_refused(stack, plain_bucket, key):
    stack["s3"].upload_file(SCENE, plain_bucket, "other.tif")  # what a rewritten path would read
    resp = invoke({"bucket": plain_bucket, "key": key, "region": "Larimer"})
    (result,) = resp["results"]
    assert result["status"] == "failed" and result["error_type"] == "UnsafeKeyError" and key in result["error"]
    assert outputs(stack) == []


@pytest.mark.parametrize("key", ["scenes/what?x=1.tif", "scenes/a#b.tif", "scenes/100%.tif", "scenes/a b+c.tif"])
def test_keys_with_special_characters_are_read_exactly(stack, plain_bucket, key):
    """A decoy under the prefix GDAL would read if it cut the key at ``?``/``#`` must not be what is clipped."""
    s3 = stack["s3"]
    decoy = key.split("?")[0].split("#")[0]
    if decoy != key:
        s3.upload_file(OTHER, plain_bucket, decoy)
    s3.upload_file(SCENE, plain_bucket, key)
    resp = invoke({"bucket": plain_bucket, "key": key, "region": "Larimer"})
    (result,) = resp["results"]
    assert result["status"] == "ok", result
    rec = records(stack)[0]
    assert rec["source"] == f"s3://{plain_bucket}/{key}"
    body = s3.get_object(Bucket=stack["names"]["OutputBucket"], Key=result["output"].split("/", 3)[3])["Body"].read()
    from rasterio.io import MemoryFile

    with MemoryFile(body) as mem, mem.open() as ds:
        assert ds.count == 3  # the RGB scene under the key, not the 1-band DEM decoy


def test_other_buckets_are_refused_naming_the_setting(stack, monkeypatch):
    s3 = stack["s3"]
    other = f"elsewhere-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=other)
    s3.upload_file(SCENE, other, "scenes/x.tif")
    monkeypatch.setenv("SCENECLIP_INPUT_BUCKETS", stack["names"]["InputBucket"])
    handler._WARM_START_CACHE.clear()
    body = json.dumps({"bucket": other, "key": "scenes/x.tif", "region": "Larimer"})
    event = {"Records": [{"messageId": "m1", "receiptHandle": "r", "body": body, "attributes": {},
                          "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                          "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}]}
    assert invoke(event) == {"batchItemFailures": []}  # permanent: recorded, not retried
    (rec,) = records(stack)
    assert rec["status"] == "failed" and rec["error_type"] == "BucketNotAllowedError"
    assert "SCENECLIP_INPUT_BUCKETS" in rec["error"] and other in rec["error"]
    assert outputs(stack) == []


def test_long_cjk_key_keeps_user_metadata_under_2kb(stack, monkeypatch):
    monkeypatch.setenv("SCENECLIP_INPUT_BUCKETS", stack["names"]["InputBucket"])
    handler._WARM_START_CACHE.clear()
    s3, bucket = stack["s3"], stack["names"]["InputBucket"]
    key = "scenes/" + "山" * 300 + ".tif"
    s3.upload_file(SCENE, bucket, key)
    head = s3.head_object(Bucket=bucket, Key=key)
    resp = invoke({"bucket": bucket, "key": key, "version_id": head["VersionId"], "region": "Larimer"})
    (result,) = resp["results"]
    assert result["status"] == "ok", result
    meta = s3.head_object(Bucket=stack["names"]["OutputBucket"], Key=result["output"].split("/", 3)[3])["Metadata"]
    assert len(meta["source-key"]) <= METADATA_VALUE_LIMIT and "sha256=" in meta["source-key"]
    assert sum(len(k) + len(v) for k, v in meta.items()) < 2048
    assert records(stack)[0]["source"].endswith(key)  # the record keeps the full key


def test_metadata_value_is_ascii_truncated_and_hashed():
    short = metadata_value("scenes/ä.tif")
    assert short == "scenes/%C3%A4.tif"
    long = metadata_value("é" * 300)
    assert long.isascii() and len(long) <= METADATA_VALUE_LIMIT and long.endswith(
        __import__("hashlib").sha256(("é" * 300).encode()).hexdigest())
    import re

    assert re.fullmatch(r"(%C3%A9)+", long.split("...sha256=")[0])  # no %xx escape cut in half
    assert metadata_value("é" * 300) != metadata_value("é" * 299 + "e")


def test_presigned_urls_live_the_function_timeout(stack):
    s3 = stack["s3"]
    bucket = stack["names"]["InputBucket"]
    s3.upload_file(SCENE, bucket, "scenes/p.tif")
    head = s3.head_object(Bucket=bucket, Key="scenes/p.tif")
    obj = SceneObject(bucket, "scenes/p.tif", head["VersionId"], head["ETag"].strip('"'), head["ContentLength"])
    before = time.time()
    path, extra = gdal_source(s3, obj, expires_s=300)
    query = parse_qs(urlparse(path[len("/vsicurl/"):]).query)
    if "X-Amz-Expires" in query:
        assert int(query["X-Amz-Expires"][0]) == 300
    else:
        assert before + 290 <= int(query["Expires"][0]) <= time.time() + 310
    assert query.get("versionId") == [head["VersionId"]]
    unversioned = gdal_source(s3, SceneObject(bucket, "scenes/p.tif", None, "abc", 1))
    assert unversioned == ("/vsis3/" + bucket + "/scenes/p.tif", {"GDAL_HTTP_HEADERS": 'If-Match: "abc"'})


def test_events_with_too_many_records_are_refused(stack):
    record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": stack["names"]["InputBucket"]}, "object": {"key": "scenes/x.tif"}}}
    resp = invoke({"Records": [record] * 100_000})
    assert resp["statusCode"] == 400 and "SCENECLIP_MAX_EVENT_RECORDS" in resp["error"] and "100,000" in resp["error"]
    assert records(stack) == [] and outputs(stack) == []
