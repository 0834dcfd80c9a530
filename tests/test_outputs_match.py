"""Outputs that always match their record (issue 15 findings 2, 3 and the in-progress duplicate), over moto's
server with the handler wired from template.yaml (the ``stack`` fixture of test_pipeline_e2e).

Every scenario ends with :func:`assert_records_match_objects`: each ``ok`` record's sha256 and ETag equal the
object it names (by version) *and* the current object at its key.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid

import boto3
import rasterio
from shapely.geometry import box, mapping

from sceneclip.aws import handler

from .conftest import real
from .test_pipeline_e2e import SCENE_KEY, invoke, records, sample_event, stack, upload_scene  # noqa: F401

RGB = "landsat_rmnp_rgb_wgs84.tif"


def assert_records_match_objects(stack, expect_ok):
    s3 = stack["s3"]
    oks = [r for r in records(stack) if r["status"] == "ok"]
    assert len(oks) == expect_ok, [(r["scene"], r["region"]) for r in oks]
    outputs = [r["output"] for r in oks]
    assert len(set(outputs)) == len(outputs), outputs  # no two records share an output
    for rec in oks:
        bucket, key = rec["output"][len("s3://"):].split("/", 1)
        assert " " not in key
        for kwargs in ({"VersionId": rec["output_version"]}, {}):
            obj = s3.get_object(Bucket=bucket, Key=key, **kwargs)
            body = obj["Body"].read()
            assert hashlib.sha256(body).hexdigest() == rec["sha256"], (key, kwargs)
            assert obj["ETag"].strip('"') == rec["output_etag"], (key, kwargs)
            assert obj["Metadata"]["source-key"] == rec["scene"].split("/", 3)[3]
            assert obj["Metadata"]["source-bucket"] == rec["scene"].split("/")[2]


def _variant(tmp_path, name, factor):
    """The RGB scene with its pixels changed, so two clips of different sources can never be byte-equal."""
    with rasterio.open(real(RGB)) as src:
        profile, data = src.profile, src.read()
    path = tmp_path / name
    with rasterio.open(path, "w", **profile) as dst:
        dst.write((data // factor).astype(data.dtype))
    return str(path)


def _use_store(stack, monkeypatch, tmp_path, features, name="custom"):
    from sceneclip.tools.store_build import build_store

    path = tmp_path / f"{name}.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    uri = f"s3://{stack['names']['InputBucket']}/boundaries/{name}"
    summary = build_store(str(path), "name", uri, s3_client=stack["s3"])
    monkeypatch.setenv("SCENECLIP_BOUNDARIES", uri)
    handler._WARM_START_CACHE.clear()
    return summary


def _scene_box(shrink=0.0):
    with rasterio.open(real(RGB)) as src:
        w, s, e, n = src.bounds
    dx, dy = (e - w) * shrink, (n - s) * shrink
    return box(w + dx, s + dy, e - dx, n - dy)


def test_extension_bucket_and_region_slug_collisions(stack, monkeypatch, tmp_path):
    """c.tif / c.tiff / c.TIF, the same key in two buckets, regions a/b and a_b: eight outputs, eight records."""
    regions = [{"type": "Feature", "properties": {"name": n}, "geometry": mapping(_scene_box(0.1))} for n in ("a/b", "a_b")]
    _use_store(stack, monkeypatch, tmp_path, regions)
    bucket = stack["names"]["InputBucket"]
    other = f"in2-{uuid.uuid4().hex[:8]}"
    stack["s3"].create_bucket(Bucket=other)
    sources = [(bucket, "scenes/c.tif", 1), (bucket, "scenes/c.tiff", 2), (bucket, "scenes/c.TIF", 3), (other, "scenes/c.tif", 4)]
    for b, key, factor in sources:
        stack["s3"].upload_file(_variant(tmp_path, f"v{factor}.tif", factor), b, key)
    for b, key, _ in sources:
        resp = invoke({"bucket": b, "key": key})
        assert sorted(r["region"] for r in resp["results"]) == ["a/b", "a_b"]
        assert all(r["status"] == "ok" for r in resp["results"]), resp
    assert_records_match_objects(stack, expect_ok=8)
    keys = {o["Key"] for o in stack["s3"].list_objects_v2(Bucket=stack["names"]["OutputBucket"])["Contents"]}
    assert len([k for k in keys if not k.endswith(".stac.json")]) == 8 and len(keys) == 16  # a STAC Item each


def _event_with_sequencer(stack, version, etag, sequencer):
    event = sample_event("s3-put.json", stack, version=version, etag=etag)
    event["Records"][0]["s3"]["object"]["sequencer"] = sequencer
    return event


def test_older_version_delivered_late_is_superseded(stack, tmp_path):
    """v2 then a retry of v1 (out of order): v1 is reported superseded, never published; the output is v2's."""
    v1, e1 = upload_scene(stack)
    v2, e2 = upload_scene(stack, path=_variant(tmp_path, "v2.tif", 2))
    new = invoke(_event_with_sequencer(stack, v2, e2, "0062E99A88DC407460"))
    assert {r["status"] for r in new["results"]} == {"ok"}
    old = invoke(_event_with_sequencer(stack, v1, e1, "0062E99A88DC40745F"))
    assert old["statusCode"] == 200 and {r["status"] for r in old["results"]} == {"superseded"}, old
    assert all("not published" in r["error"] for r in old["results"])
    recs = records(stack)
    assert {r["source_version"] for r in recs} == {v2}
    assert_records_match_objects(stack, expect_ok=4)
    versions = stack["s3"].list_object_versions(Bucket=stack["names"]["OutputBucket"])["Versions"]
    assert len([v for v in versions if v["Key"].endswith(".tif")]) == 4  # v1 uploaded nothing


def test_two_containers_racing_on_one_key(stack):
    """Two pipelines (two containers: own clients, no shared state) clip v1 and v2 of one key at once.

    moto serves concurrent requests without DynamoDB's per-item atomicity, so both claims can pass here; the
    loser's conditional record write then fails (transient) and its redelivery converges. What must hold
    whatever the interleaving: the end state names v2, and the record matches the object.
    """
    from sceneclip.aws.config import Settings
    from sceneclip.aws.events import SceneRef
    from sceneclip.aws.pipeline import ScenePipeline
    from sceneclip.aws.records_table import RecordStore
    from sceneclip.aws.store import BoundaryStore
    from sceneclip.errors import SceneclipError

    v1, _ = upload_scene(stack)
    v2, _ = upload_scene(stack, path=real("landsat_rmnp_rgb_wgs84.tif"))
    settings = Settings.from_env()
    bucket = stack["names"]["InputBucket"]
    outcome: dict[str, object] = {}
    retries: dict[str, int] = {}
    start = threading.Barrier(2)

    def container(name, version, sequencer):
        s3 = boto3.client("s3")
        store = BoundaryStore.load(settings.boundaries, s3_client=s3)
        pipe = ScenePipeline(settings, s3=s3, records=RecordStore(settings.records_table, client=boto3.client("dynamodb")),
                             store_loader=lambda _s3: store)
        ref = SceneRef(bucket=bucket, key=SCENE_KEY, version_id=version, region="Larimer", sequencer=sequencer)
        start.wait()
        for _ in range(50):  # a transient error (OutputBusyError, a lost claim) is retried, as SQS would redeliver
            try:
                outcome[name] = [r.status for r in pipe.process(ref)]
                return
            except SceneclipError as exc:
                if exc.permanent:
                    raise
                retries[type(exc).__name__] = retries.get(type(exc).__name__, 0) + 1
                time.sleep(0.2)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below, not lost in the thread
                outcome[name] = f"{type(exc).__name__}: {exc}"
                return
        outcome[name] = "gave up"

    threads = [threading.Thread(target=container, args=("v1", v1, "01")), threading.Thread(target=container, args=("v2", v2, "02"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads)
    assert outcome.get("v2") == ["ok"] and outcome.get("v1") in (["ok"], ["superseded"]), outcome
    (rec,) = records(stack)
    assert rec["source_version"] == v2
    assert_records_match_objects(stack, expect_ok=1)


def test_rebuilt_store_reclips_and_backfill_is_not_done(stack, monkeypatch, tmp_path):
    """Finding 2: redraw a region, rebuild the store, redeliver → a new clip; backfill no longer says done."""
    from sceneclip.aws.backfill import decide
    from sceneclip.aws.config import Settings

    scene = f"s3://{stack['names']['InputBucket']}/{SCENE_KEY}"
    first = _use_store(stack, monkeypatch, tmp_path, [
        {"type": "Feature", "properties": {"name": "R"}, "geometry": mapping(_scene_box(0.05))}], name="redraw")
    _, etag = upload_scene(stack)
    event = {"bucket": stack["names"]["InputBucket"], "key": SCENE_KEY}
    before = invoke(event)["results"][0]
    assert before["status"] == "ok"
    settings = Settings.from_env()
    recs = [r for r in records(stack) if r["scene"] == scene]
    assert decide(recs, etag, settings.config_hash, boundary_version=first.version) == ("skip", "done")
    second = _use_store(stack, monkeypatch, tmp_path, [
        {"type": "Feature", "properties": {"name": "R"}, "geometry": mapping(_scene_box(0.3))}], name="redraw")
    assert second.version != first.version
    assert decide(recs, etag, settings.config_hash, boundary_version=second.version) == ("enqueue", "changed")
    after = invoke(event)["results"][0]  # the same delivery again: not the cached record of the old store
    assert after["status"] == "ok"
    (rec,) = [r for r in records(stack) if r["scene"] == scene]
    old_px = recs[0]["valid_pixels"]
    assert rec["boundary_version"] == second.version and rec["valid_pixels"] < old_px
    assert decide([rec], etag, settings.config_hash, boundary_version=second.version) == ("skip", "done")
    assert_records_match_objects(stack, expect_ok=1)


def test_in_progress_duplicate_is_a_short_batch_item_failure(stack, monkeypatch, capsys):
    """A duplicate arriving while the first delivery still clips: that message fails alone, comes back soon
    (visibility set by ChangeMessageVisibility), a metric is emitted, the batch's other message is clipped."""
    from sceneclip.aws import pipeline

    monkeypatch.setenv("SCENECLIP_IN_PROGRESS_VISIBILITY_S", "0")  # visible again at once: observable here
    upload_scene(stack)
    sqs = boto3.client("sqs")
    queue = stack["made"]["WorkQueue"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bucket = stack["names"]["InputBucket"]
    for region in ("Larimer", "Grand"):
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"bucket": bucket, "key": SCENE_KEY, "region": region}))
    got = []
    while len(got) < 2:
        got += sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    by_region = {json.loads(m["Body"])["region"]: m for m in got}

    real_clip, started, release = pipeline.clip_to_cog, threading.Event(), threading.Event()

    def slow_first_clip(*args, **kwargs):
        if not started.is_set():
            started.set()
            assert release.wait(120)
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(pipeline, "clip_to_cog", slow_first_clip)
    from sceneclip.aws.events import SceneRef

    app = handler.get_app().pipeline
    first: dict[str, object] = {}
    worker = threading.Thread(target=lambda: first.update(r=app.process(SceneRef(bucket=bucket, key=SCENE_KEY, region="Larimer"))))
    worker.start()
    assert started.wait(120)

    def sqs_record(m):
        return {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"], "attributes": {},
                "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
                "eventSourceARN": arn, "awsRegion": "us-east-1"}

    try:
        resp = invoke({"Records": [sqs_record(by_region["Larimer"]), sqs_record(by_region["Grand"])]})
    finally:
        release.set()
        worker.join(timeout=240)
    assert resp == {"batchItemFailures": [{"itemIdentifier": by_region["Larimer"]["MessageId"]}]}
    again = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert [json.loads(m["Body"])["region"] for m in again] == ["Larimer"]  # visible again, long before 2,100 s
    assert "ClipInProgressDeferred" in capsys.readouterr().out
    assert [r.status for r in first["r"]] == ["ok"]
    assert sorted(r["region"] for r in records(stack) if r["status"] == "ok") == ["Grand", "Larimer"]
    assert_records_match_objects(stack, expect_ok=2)
