"""Mosaic job messages end to end over moto's server: an SQS message naming the two real Landsat 8 Iguazu rows
→ handler → both sources read over HTTP, each pinned to its version/ETag → one COG → record + STAC Item.

The first source sits in the template's (versioned) input bucket, the second in an unversioned bucket, so both
pinning paths (a presigned URL of the version; ``If-Match`` on the ETag) are used in one clip.
"""

from __future__ import annotations

import copy
import json
import uuid

import boto3
import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping

from sceneclip.aws import handler
from sceneclip.aws.store import get_store
from sceneclip.core.clip import run_clip
from sceneclip.core.plan import ClipOptions
from sceneclip.tools.local import LocalContext
from sceneclip.tools.store_build import build_store

from .conftest import real
from .stack_setup import provision_stack
from .test_stac import validate_item_dict

ROW_078 = "landsat8_iguazu_b2_utm21n.tif"  # path/row 224/078 (first: wins where both have data)
ROW_077 = "landsat8_iguazu_224077_b2_utm21n.tif"  # 224/077, north of it
GROUP = "20140102"
REGION = "span"
OUT_KEY = f"clipped/{REGION}/{GROUP}.tif"
# A narrow strip across the seam of the two rows (UTM 21S): its south end only in 078, its north end only in
# 077, the middle in both. 100 × 1367 px: small enough to keep the test fast.
STRIP_UTM = box(735000, -2815000, 738000, -2774000)


@pytest.fixture
def stack(moto_endpoint, monkeypatch, tmp_path):
    """The template's resources, a store with the strip, the function's environment, and the two sources."""
    yield from _stack(monkeypatch, tmp_path)
    handler._WARM_START_CACHE.clear()


def _stack(monkeypatch, tmp_path):
    made = provision_stack(monkeypatch, env={"SCENECLIP_SRC_NODATA": "0"})
    s3 = made["s3"]
    vector = tmp_path / "strip.geojson"
    geom = transform_geom("EPSG:32621", "EPSG:4326", mapping(STRIP_UTM))
    vector.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": REGION}, "geometry": geom}]}))
    store = f"s3://{made['bucket']}/boundaries/strip"
    build_store(str(vector), "name", store, s3_client=s3)
    monkeypatch.setenv("SCENECLIP_BOUNDARIES", store)
    plain = f"plain-{uuid.uuid4().hex[:10]}"  # unversioned: read with If-Match on the ETag
    s3.create_bucket(Bucket=plain)
    s3.upload_file(real(ROW_078), made["bucket"], "scenes/row078.tif")
    s3.upload_file(real(ROW_077), plain, "scenes/row077.tif")
    handler._WARM_START_CACHE.clear()
    yield {**made, "store": store, "plain": plain, "ddb": boto3.resource("dynamodb")}


def _sources(stack, *, etags=True):
    s3 = stack["s3"]
    out = []
    for bucket, key in ((stack["bucket"], "scenes/row078.tif"), (stack["plain"], "scenes/row077.tif")):
        entry = {"bucket": bucket, "key": key}
        if etags:
            entry["etag"] = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        out.append(entry)
    return out


def _sqs(*bodies):
    return {"Records": [{
        "messageId": f"m{i}", "receiptHandle": f"rh{i}", "body": json.dumps(body),
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work", "awsRegion": "us-east-1",
    } for i, body in enumerate(bodies)]}


def _invoke(event):
    return handler.lambda_handler(event, LocalContext("ClipFunction", 2048, 300))


def _record(stack, scene=f"mosaic://{GROUP}", region=REGION):
    table = stack["ddb"].Table(stack["names"]["RecordsTable"])
    return table.get_item(Key={"scene": scene, "region": region}, ConsistentRead=True).get("Item")


def _versions(stack, key=OUT_KEY):
    resp = stack["s3"].list_object_versions(Bucket=stack["names"]["OutputBucket"], Prefix=key)
    return [v for v in resp.get("Versions", []) if v["Key"] == key]


def test_sqs_mosaic_message_equals_the_local_mosaic_lists_every_source_and_clips_once(stack, tmp_path):
    message = {"sources": _sources(stack), "region": REGION, "group": GROUP}
    assert _invoke(_sqs(message)) == {"batchItemFailures": []}
    rec = _record(stack)
    assert rec["status"] == "ok", rec.get("error")
    assert rec["output"] == f"s3://{stack['names']['OutputBucket']}/{OUT_KEY}" and rec["schema_version"] == 3
    # Every source, in priority order, with its ETag, version (the versioned one) and bytes fetched.
    src = rec["sources"]
    assert [(s["bucket"], s["key"], s["etag"]) for s in src] == [(m["bucket"], m["key"], m["etag"])
                                                                for m in message["sources"]]
    assert src[0]["version_id"] and "version_id" not in src[1]
    assert all(s["used"] and s["bytes_fetched"] > 0 and s["requests"] > 0 for s in src)
    assert sum(s["bytes_fetched"] for s in src) == rec["bytes_fetched"]  # GDAL's own figures, split per source
    for s, name in zip(src, (ROW_078, ROW_077)):
        with open(real(name), "rb") as f:
            assert s["bytes_fetched"] < len(f.read()) / 4  # a window: the strip's tiles, not the object
    # Pixels equal the library's mosaic of the same files, boundary and options.
    local = tmp_path / "local.tif"
    boundary = get_store(stack["store"], s3_client=stack["s3"]).boundary(REGION)
    ref = run_clip([real(ROW_078), real(ROW_077)], boundary, ClipOptions(src_nodata=0), output=str(local)).record
    assert ref.status == "ok", ref.error
    got = tmp_path / "got.tif"
    stack["s3"].download_file(stack["names"]["OutputBucket"], OUT_KEY, str(got))
    with rasterio.open(got) as g, rasterio.open(local) as want:
        assert g.transform == want.transform and g.crs == want.crs and g.shape == want.shape
        np.testing.assert_array_equal(g.read_masks(1), want.read_masks(1))
        np.testing.assert_array_equal(g.read(1), want.read(1))
        assert np.count_nonzero(g.read_masks(1)) == ref.valid_pixels > 100_000
    # The STAC Item beside it links both sources (derived_from, priority order) and validates.
    item = json.loads(stack["s3"].get_object(Bucket=stack["names"]["OutputBucket"],
                                             Key=f"clipped/{REGION}/{GROUP}.stac.json")["Body"].read())
    validate_item_dict(item)
    derived = [link["href"] for link in item["links"] if link["rel"] == "derived_from"]
    assert derived == [f"s3://{m['bucket']}/{m['key']}" for m in message["sources"]]
    # The same message again, in a cold container: clipped once (one output version, the same record).
    handler._WARM_START_CACHE.clear()
    assert _invoke(_sqs(copy.deepcopy(message))) == {"batchItemFailures": []}
    assert len(_versions(stack)) == 1 and _record(stack)["created_at"] == rec["created_at"]


def test_the_events_sample_retargeted_at_this_stack_makes_the_mosaic(stack):
    """events/sqs-mosaic.json as sam local would send it: only bucket names and ETags changed to this test's."""
    from pathlib import Path

    event = json.loads((Path(__file__).resolve().parents[1] / "events" / "sqs-mosaic.json").read_text())
    body = json.loads(event["Records"][0]["body"])
    for source, name in zip(body["sources"], (ROW_078, ROW_077), strict=True):
        source["bucket"] = stack["bucket"]
        stack["s3"].upload_file(real(name), stack["bucket"], source["key"])
        source["etag"] = stack["s3"].head_object(Bucket=stack["bucket"], Key=source["key"])["ETag"].strip('"')
    event["Records"][0]["body"] = json.dumps(body)
    assert _invoke(event) == {"batchItemFailures": []}
    rec = _record(stack, scene=f"mosaic://{body['group']}", region=body["region"])
    assert rec["status"] == "ok", rec.get("error")
    assert [s["key"] for s in rec["sources"]] == [s["key"] for s in body["sources"]]
    assert len(_versions(stack, f"clipped/{body['region']}/{body['group']}.tif")) == 1


def test_a_changed_etag_clips_again_and_a_stale_message_is_superseded(stack, tmp_path):
    first = {"sources": _sources(stack), "region": REGION, "group": GROUP}
    _invoke(_sqs(first))
    assert _record(stack)["status"] == "ok"
    # Overwrite the unversioned 077 with other pixels (the same grid, values + 1 where it has data).
    changed = tmp_path / "row077-changed.tif"
    with rasterio.open(real(ROW_077)) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(changed, "w", **profile) as dst:
        dst.write(np.where(data > 0, data + 1, 0).astype(data.dtype))
    stack["s3"].upload_file(str(changed), stack["plain"], "scenes/row077.tif")
    # The old message (old ETag): refused as superseded, recorded under region "-", the ok record untouched.
    handler._WARM_START_CACHE.clear()
    assert _invoke(_sqs(first)) == {"batchItemFailures": []}
    stale = _record(stack, region="-")
    assert stale["status"] == "failed" and stale["error_type"] == "SupersededError" and not stale["transient"]
    assert "scenes/row077.tif" in stale["error"] and _record(stack)["sources"][1]["etag"] == first["sources"][1]["etag"]
    assert len(_versions(stack)) == 1
    # A message with the new ETag: clipped again (idempotency covers every source's ETag).
    again = {"sources": _sources(stack), "region": REGION, "group": GROUP}
    assert again["sources"][1]["etag"] != first["sources"][1]["etag"]
    assert _invoke(_sqs(again)) == {"batchItemFailures": []}
    rec = _record(stack)
    assert rec["status"] == "ok" and rec["sources"][1]["etag"] == again["sources"][1]["etag"]
    assert len(_versions(stack)) == 2


@pytest.mark.parametrize("body", [
    {"sources": [], "region": REGION, "group": GROUP},
    {"sources": [{"bucket": "b-x", "key": "k.tif", "etag": 7}], "region": REGION, "group": GROUP},
    {"sources": [{"bucket": "b-x", "key": "k.tif"}], "group": GROUP},
])
def test_malformed_mosaic_message_leaves_a_failed_record_and_no_output(stack, body):
    assert _invoke(_sqs(body)) == {"batchItemFailures": []}  # permanent: not retried
    rec = _record(stack, scene=f"mosaic://{GROUP}", region="-")
    assert rec["status"] == "failed" and rec["error_type"] == "InvalidMosaicError" and rec["transient"] is False
    assert "mosaic message" in rec["error"]
    assert stack["s3"].list_objects_v2(Bucket=stack["names"]["OutputBucket"]).get("KeyCount", 0) == 0


def test_a_source_outside_the_input_buckets_is_refused_before_any_read(stack, monkeypatch):
    monkeypatch.setenv("SCENECLIP_INPUT_BUCKETS", stack["bucket"])  # the unversioned bucket is not an input
    handler._WARM_START_CACHE.clear()
    _invoke(_sqs({"sources": _sources(stack), "region": REGION, "group": GROUP}))
    rec = _record(stack, region="-")
    assert rec["status"] == "failed" and rec["error_type"] == "BucketNotAllowedError"
    assert [s["key"] for s in rec["sources"]] == ["scenes/row078.tif", "scenes/row077.tif"]
    assert _record(stack) is None and not _versions(stack)


def test_one_source_that_is_not_a_raster_fails_the_mosaic_permanently_with_evidence(stack):
    stack["s3"].put_object(Bucket=stack["plain"], Key="scenes/row077.tif", Body=b"not a tiff at all" * 64)
    _invoke(_sqs({"sources": _sources(stack), "region": REGION, "group": GROUP}))
    rec = _record(stack)  # the read failed inside the clip: recorded on the region's row, classified once
    assert rec["status"] == "failed" and rec["error_type"] == "RasterReadError" and rec["transient"] is False
    assert f"s3://{stack['plain']}/scenes/row077.tif" in rec["error"] and "confirmed" in rec["error"]
    assert [s["key"] for s in rec["sources"]] == ["scenes/row078.tif", "scenes/row077.tif"]
    assert not _versions(stack)


def test_mosaic_message_round_trip_and_refusals():
    from sceneclip.aws.events import parse_sqs_body
    from sceneclip.aws.mosaic_events import MosaicRef, MosaicSource, RefusedRef

    ref = MosaicRef((MosaicSource("b-1", "a.tif", "e1", "v1"), MosaicSource("b-2", "c d.tif")), "R", "G", force=True)
    assert parse_sqs_body(json.dumps(ref.to_message())) == [ref]
    for bad, words in [({"sources": [{"bucket": "b", "key": "k"}] * 2, "region": "R", "group": "G"}, "twice"),
                       ({"sources": [{"bucket": "b", "key": "k", "size": 1}], "region": "R", "group": "G"}, "size"),
                       ({"sources": [{"bucket": "b", "key": "k"}], "region": "R", "group": "G", "x": 1}, "unknown"),
                       ({"sources": "b/k", "region": "R", "group": "G"}, "non-empty list"),
                       ({"sources": [{"bucket": "b", "key": "k"}], "region": "R", "group": "../G"}, "file")]:
        (got,) = parse_sqs_body(json.dumps(bad))
        assert isinstance(got, RefusedRef) and words in str(got.error)
        assert got.uri == ("mosaic://G" if bad["group"] == "G" else "mosaic://-")


def test_backfill_group_by_emits_one_mosaic_per_group_and_region_and_skips_done_ones(stack):
    from sceneclip.aws.backfill_mosaic import run_mosaic_backfill
    from sceneclip.aws.config import Settings

    s3, bucket = stack["s3"], stack["bucket"]
    keys = {"archive/LC08_224078_20140102_B2.tif": real(ROW_078), "archive/LC08_224077_20140102_B2.tif": real(ROW_077),
            "archive/LC08_224078_20140118_B2.tif": real(ROW_078), "archive/notes_B2.tif": real(ROW_078)}
    for key, path in keys.items():
        s3.upload_file(path, bucket, key)
    queue = stack["made"]["WorkQueue"]
    sqs = boto3.client("sqs")

    def backfill():
        return run_mosaic_backfill(f"s3://{bucket}/archive/", queue, group_by=r"_(?P<group>[0-9]{8})_",
                                   settings=Settings.from_env())

    summary = backfill()
    assert (summary.listed, summary.ignored, summary.grouped, summary.mosaics, summary.enqueued) == (4, 1, 3, 2, 2)
    assert summary.reasons == {"no-group": 1, "new": 2}
    sent = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    bodies = sorted((json.loads(m["Body"]) for m in sent), key=lambda b: b["group"])
    etag = {k: s3.head_object(Bucket=bucket, Key=k)["ETag"].strip('"') for k in keys}
    assert bodies == [  # the strip's region found from each footprint; sources in key order
        {"sources": [{"bucket": bucket, "key": k, "etag": etag[k]} for k in
                     ("archive/LC08_224077_20140102_B2.tif", "archive/LC08_224078_20140102_B2.tif")],
         "region": REGION, "group": "20140102"},
        {"sources": [{"bucket": bucket, "key": "archive/LC08_224078_20140118_B2.tif",
                      "etag": etag["archive/LC08_224078_20140118_B2.tif"]}], "region": REGION, "group": "20140118"},
    ]
    assert _invoke(_sqs(bodies[0])) == {"batchItemFailures": []}  # one of them is made
    assert _record(stack, scene="mosaic://20140102")["status"] == "ok"
    again = backfill()
    assert (again.mosaics, again.skipped, again.enqueued) == (2, 1, 1) and again.reasons["done"] == 1
    # A source re-uploaded with other bytes: its mosaic is work again.
    s3.upload_file(real(ROW_077), bucket, "archive/LC08_224078_20140102_B2.tif")
    third = backfill()
    assert third.reasons.get("changed") == 1 and third.enqueued == 2


def test_cli_backfill_group_by_dry_run_prints_the_messages_and_checks_the_regex(stack):
    from click.testing import CliRunner

    from sceneclip.cli.ops import backfill

    bucket = stack["bucket"]
    stack["s3"].upload_file(real(ROW_077), bucket, "archive/LC08_224077_20140102_B2.tif")
    args = [f"s3://{bucket}/archive/", "--queue", stack["made"]["WorkQueue"], "--dry-run"]
    res = CliRunner().invoke(backfill, [*args, "--group-by", r"_(?P<group>\d{8})_", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["mosaics"] == out["enqueued"] == 1 and out["planned"][0]["group"] == "20140102"
    assert out["planned"][0]["region"] == REGION and len(out["planned"][0]["sources"]) == 1
    bad = CliRunner().invoke(backfill, [*args, "--group-by", r"_(\d{8})_"])
    assert bad.exit_code != 0 and "(?P<group>" in bad.output


@pytest.fixture
def paid_stack(moto_endpoint, monkeypatch, tmp_path):
    """The same, every request (boto3's and GDAL's) through the requester-pays proxy in front of moto."""
    from . import payerproxy

    proxy, server = payerproxy.start(moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield from ({**made, "proxy": proxy} for made in _stack(monkeypatch, tmp_path))
    handler._WARM_START_CACHE.clear()
    server.shutdown()
    server.server_close()


def test_each_source_keeps_its_own_bucket_settings_after_it_is_opened(paid_stack, monkeypatch):
    """The second source's bucket is requester-pays: its payer is set only in the Env it is opened in, yet
    every later range read of it carries the payer (GDAL keeps it per open file), and no request to the first
    source's bucket does."""
    stack, proxy = paid_stack, paid_stack["proxy"]
    proxy.paying.add(stack["plain"])
    monkeypatch.setenv("SCENECLIP_REQUESTER_PAYS", stack["plain"])
    handler._WARM_START_CACHE.clear()
    sources = _sources(stack, etags=False)
    proxy.seen.clear()
    assert _invoke(_sqs({"sources": sources, "region": REGION, "group": GROUP})) == {"batchItemFailures": []}
    rec = _record(stack)
    assert rec["status"] == "ok", rec.get("error")
    paid = proxy.to(stack["plain"])
    gdal_gets = [s for s in paid if s.by_gdal and s.method == "GET"]
    assert len(gdal_gets) >= 2 and all(s.payer and s.status < 400 for s in paid)  # the header read and tiles
    first = proxy.to(stack["bucket"])
    assert any(s.by_gdal for s in first) and not any(s.payer for s in first)
