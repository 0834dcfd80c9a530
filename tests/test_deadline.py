"""Deadline-aware clips (issue 9): the budget, GDAL/boto3 caps, the chunk loop, regions sharing the budget, and
the acceptance case — a stalled GET with 20 s left — through the handler over moto's server behind a proxy.

Unit cases use a :class:`Deadline` on an injected clock, so nothing sleeps and nothing asserts on wall time;
the acceptance case asserts only that the handler returned before the 20 s deadline.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import boto3
import pytest

from sceneclip.aws import handler
from sceneclip.aws.deadline import READ_TIMEOUT_LADDER, capped_config, deadline_from_context, margin_from_env
from sceneclip.aws.context import LocalContext
from sceneclip.core.clip import clip_to_cog
from sceneclip.core.deadline import Deadline, gdal_http_options
from sceneclip.core.gdalenv import CLOUD_READ_OPTIONS
from sceneclip.core.geometry import Boundary
from sceneclip.core.output import remove_stale_workdirs
from sceneclip.core.plan import ClipOptions
from sceneclip.errors import ConfigError, DeadlineExceeded

from .stack_setup import provision_stack
from .conftest import real
from .loopback_proxy import LoopbackProxy

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the budget ----------------------------------------------------------------------------------------------
def test_deadline_budget_and_error_message():
    clock = FakeClock()
    d = Deadline(at=clock.now + 30, margin_s=10, clock=clock)
    assert d.remaining_s() == 30 and d.usable_s() == 20 and not d.expired()
    d.check("anywhere")  # time left: no error
    clock.now += 19.5  # 0.5 s usable: less than one network call
    assert d.expired()
    with pytest.raises(DeadlineExceeded) as err:
        d.check("before region Grand", regions_not_reached=("Grand", "Jackson"))
    assert err.value.permanent is False and err.value.regions_not_reached == ("Grand", "Jackson")
    assert "before region Grand" in str(err.value) and "regions not reached: Grand, Jackson" in str(err.value)


@pytest.mark.parametrize("usable", [2, 5, 10, 20, 60, 600])
def test_gdal_http_caps_fit_the_usable_time(usable):
    clock = FakeClock()
    d = Deadline(at=clock.now + usable + 10, margin_s=10, clock=clock)
    opts = gdal_http_options(d, CLOUD_READ_OPTIONS)
    worst = (1 + opts["GDAL_HTTP_MAX_RETRY"]) * opts["GDAL_HTTP_TIMEOUT"] + opts["GDAL_HTTP_MAX_RETRY"] * opts["GDAL_HTTP_RETRY_DELAY"]
    assert worst <= max(usable, 1) + 1e-9  # a GET that stalls on every attempt still ends inside the budget
    assert opts["GDAL_HTTP_TIMEOUT"] <= CLOUD_READ_OPTIONS["GDAL_HTTP_TIMEOUT"]
    assert opts["GDAL_HTTP_CONNECTTIMEOUT"] <= opts["GDAL_HTTP_TIMEOUT"]
    assert opts["GDAL_HTTP_MAX_RETRY"] <= CLOUD_READ_OPTIONS["GDAL_HTTP_MAX_RETRY"]
    if usable >= 600:  # plenty of time: the configured values stand
        assert opts["GDAL_HTTP_TIMEOUT"] == CLOUD_READ_OPTIONS["GDAL_HTTP_TIMEOUT"]
        assert opts["GDAL_HTTP_MAX_RETRY"] == CLOUD_READ_OPTIONS["GDAL_HTTP_MAX_RETRY"]


def test_gdal_options_without_deadline_are_the_configured_ones():
    opts = gdal_http_options(None, CLOUD_READ_OPTIONS)
    assert opts == {k: CLOUD_READ_OPTIONS[k] for k in opts} and len(opts) == 4


@pytest.mark.parametrize("usable", [1, 4, 9, 31, 200])
def test_boto3_config_fits_the_usable_time(usable):
    clock = FakeClock()
    cfg = capped_config(Deadline(at=clock.now + usable + 10, margin_s=10, clock=clock))
    assert cfg.read_timeout in READ_TIMEOUT_LADDER and cfg.connect_timeout <= cfg.read_timeout
    attempts = cfg.retries["max_attempts"]
    assert attempts >= 1
    if usable >= 2:
        assert attempts * (cfg.connect_timeout + cfg.read_timeout) <= usable
    assert capped_config(None).read_timeout == READ_TIMEOUT_LADDER[0]


def test_deadline_from_context_and_margin_setting():
    ctx = LocalContext("ClipFunction", 128, 30)
    d = deadline_from_context(ctx, margin_s=5)
    assert 24 <= d.usable_s() <= 25
    assert deadline_from_context(object()) is None
    assert margin_from_env({}) == 10.0 and margin_from_env({"SCENECLIP_DEADLINE_MARGIN_S": "3.5"}) == 3.5
    with pytest.raises(ConfigError, match="SCENECLIP_DEADLINE_MARGIN_S"):
        margin_from_env({"SCENECLIP_DEADLINE_MARGIN_S": "soon"})


# --- the chunk loop ------------------------------------------------------------------------------------------
class _AdvancingClock(FakeClock):
    """Each reading moves the clock ``step`` seconds: the budget runs out after a few chunk checks."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_clip_stops_between_chunks_and_leaves_nothing(make_raster, tmp_path):
    from shapely.geometry import box

    src = make_raster(width=4096, height=4096, count=1, dtype="uint16")
    with __import__("rasterio").open(src) as ds:
        bounds = ds.bounds
        crs = ds.crs
    boundary = Boundary(geometries=(box(*bounds),), crs=crs, source="test")
    spill = tmp_path / "spill"
    spill.mkdir()
    options = ClipOptions(chunk_size=512, memory_limit=1, tmpdir=str(spill))  # spills to disk: 64 chunks
    clock = _AdvancingClock(step=1.0)
    deadline = Deadline(at=clock.now + 16, margin_s=10, clock=clock)  # a few checks, then spent
    with pytest.raises(DeadlineExceeded, match="before reading chunk"):
        clip_to_cog(src, boundary, options, deadline=deadline)
    assert list(spill.iterdir()) == []  # the spill directory of the abandoned clip is gone


def test_remove_stale_workdirs_only_old_sceneclip_dirs(tmp_path):
    old = tmp_path / "sceneclip-old"
    young = tmp_path / "sceneclip-young"
    other = tmp_path / "someone-else-old"
    for d in (old, young, other):
        d.mkdir()
        (d / "clip.tif").write_bytes(b"x")
    past = time.time() - 3600
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    removed = remove_stale_workdirs(str(tmp_path), older_than_s=900)
    assert removed == [str(old)]
    assert not old.exists() and young.exists() and other.exists()


# --- over moto, behind a proxy -------------------------------------------------------------------------------
@pytest.fixture
def proxied_stack(moto_endpoint, monkeypatch):
    """Template resources + a county store; the function's S3 traffic (boto3 and GDAL) goes through a proxy."""
    proxy = LoopbackProxy(moto_endpoint).start()
    made = provision_stack(monkeypatch, env={"POWERTOOLS_LOG_LEVEL": "WARNING", "AWS_ENDPOINT_URL_S3": proxy.url})
    names, ddb = made["names"], boto3.resource("dynamodb")
    yield {"names": names, "made": made["made"], "s3": made["s3"], "proxy": proxy, "bucket": names["InputBucket"],
           "records": ddb.Table(names["RecordsTable"]), "idem": ddb.Table(names["IdempotencyTable"])}
    proxy.stop()
    handler._WARM_START_CACHE.clear()


def _sqs_event(bucket: str, messages: dict[str, str]) -> dict:
    """A Lambda SQS event with one direct ``{bucket, key}`` message per (message id, key)."""
    return {"Records": [{
        "messageId": mid, "receiptHandle": "rh-" + mid, "eventSource": "aws:sqs",
        "body": json.dumps({"bucket": bucket, "key": key}), "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {}, "md5OfBody": "", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work",
        "awsRegion": "us-east-1"} for mid, key in messages.items()]}


def test_stalled_get_with_20_s_left_returns_in_time_transient_and_unlocked(proxied_stack, monkeypatch):
    """The acceptance case of issue 9: a source GET that the server holds, 20 s on the clock.

    The batch also holds a good scene (first), so the invocation itself succeeds and reports exactly the
    stalled message in ``batchItemFailures`` (when every record fails Powertools raises instead).
    """
    st = proxied_stack
    monkeypatch.setenv("SCENECLIP_REGION_PATTERN", r"^scenes/(?P<region>[^/]+)/")  # the GET happens in the clip
    key, good = "scenes/Larimer/stalled.tif", "scenes/Boulder/good.tif"
    for k in (key, good):
        st["s3"].upload_file(real("landsat_rmnp_rgb_wgs84.tif"), st["bucket"], k)
    stalled_path = f"/{st['bucket']}/{key}"
    st["proxy"].rule = lambda method, path, headers: ("stall", 120) if method == "GET" and path == stalled_path else None
    scene = f"s3://{st['bucket']}/{key}"

    started = time.monotonic()
    event = _sqs_event(st["bucket"], {"m-good": good, "m-stall": key})
    response = handler.lambda_handler(event, LocalContext("ClipFunction", 2048, 20))
    elapsed = time.monotonic() - started

    assert elapsed < 20  # returned before Lambda would have killed it
    assert st["proxy"].counts.get("stalled", 0) >= 1  # the GET really was held
    assert response["batchItemFailures"] == [{"itemIdentifier": "m-stall"}]  # retried, not acknowledged
    recs = {r["scene"]: r for r in st["records"].scan()["Items"]}
    rec = recs[scene]
    assert rec["status"] == "failed" and rec["transient"] is True and rec["region"] == "Larimer"
    assert rec["error_type"] == "DeadlineExceeded" and "deadline reached" in rec["error"]
    assert recs[f"s3://{st['bucket']}/{good}"]["status"] == "ok"
    locks = st["idem"].scan()["Items"]
    assert len(locks) == 1 and locks[0]["status"] == "COMPLETED"  # the good scene's; the stalled one's released
    outputs = st["s3"].list_objects_v2(Bucket=st["names"]["OutputBucket"]).get("Contents", [])
    assert not [o for o in outputs if "Larimer" in o["Key"]]  # nothing partial

    # Once the server answers again, the redelivery clips it (the released lock does not block it).
    st["proxy"].rule = None
    handler._WARM_START_CACHE.clear()
    response = handler.lambda_handler(_sqs_event(st["bucket"], {"m-stall": key}), LocalContext("ClipFunction", 2048, 60))
    assert response["batchItemFailures"] == []
    recs = {r["scene"]: r for r in st["records"].scan()["Items"]}
    assert recs[scene]["status"] == "ok"


def test_regions_share_the_budget_and_unreached_ones_are_recorded(proxied_stack):
    """A spatial lookup finds four counties; the budget runs out after the first: the others are named."""
    from sceneclip.aws.events import SceneRef

    st = proxied_stack
    key = "scenes/rmnp/rmnp-rgb.tif"
    st["s3"].upload_file(real("landsat_rmnp_rgb_wgs84.tif"), st["bucket"], key)
    built = handler.get_app()
    app = built.pipeline
    built.idempotency.register_lambda_context(LocalContext("ClipFunction", 2048, 300))
    clock = FakeClock()
    deadline = Deadline(at=clock.now + 300, margin_s=10, clock=clock)
    put = app.records.put
    done = []

    def put_then_spend_the_budget(rec, **kwargs):
        ok = put(rec, **kwargs)
        if rec.status == "ok":
            done.append(rec.boundary.region)
            clock.now = deadline.at - 5  # the first region used up the time
        return ok

    app.records.put = put_then_spend_the_budget
    try:
        with pytest.raises(DeadlineExceeded) as err:
            app.process(SceneRef(bucket=st["bucket"], key=key), deadline=deadline)
    finally:
        app.records.put = put
    assert len(done) == 1
    recs = {r["region"]: r for r in st["records"].scan()["Items"]}
    assert set(recs) == {"Boulder", "Grand", "Jackson", "Larimer"}
    not_reached = set(recs) - set(done)
    assert set(err.value.regions_not_reached) == not_reached
    for region in not_reached:
        assert recs[region]["status"] == "failed" and recs[region]["transient"] is True
        assert recs[region]["error_type"] == "DeadlineExceeded"
        assert all(r in recs[region]["error"] for r in not_reached)  # the record says which were not reached
    assert recs[done[0]]["status"] == "ok"
