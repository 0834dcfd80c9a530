"""Scenes you don't own (issue 12): requester-pays source buckets and source buckets in other regions.

moto has no requester-pays rule, so :mod:`tests.payerproxy` plays it on loopback between sceneclip and moto:
a request to the paying bucket without ``x-amz-request-payer: requester`` gets S3's ``403 AccessDenied``.
Every request of boto3 *and* GDAL goes through it (``AWS_ENDPOINT_URL``), so the tests see what was really
sent: the payer on exactly the paying bucket's requests, and the region each request was signed for.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from sceneclip.aws import handler, sources
from sceneclip.aws.backfill import run_backfill
from sceneclip.aws.sources import RequesterPays, SourceAccess, bucket_region, confirm_requester_pays
from sceneclip.errors import AccessDeniedError, ConfigError, RequesterPaysError, SceneclipError
from sceneclip.tools.local import LocalContext

from . import payerproxy
from .stack_setup import provision_stack
from .conftest import real

ROOT = Path(__file__).resolve().parents[1]
SCENE_KEY = "scenes/rmnp/rmnp-rgb.tif"
REGION = "Grand"


@pytest.fixture
def proxy(moto_endpoint, monkeypatch):
    pp, server = payerproxy.start(moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", pp.url)
    yield pp
    server.shutdown()
    server.server_close()


def _bucket(s3, name: str, region: str | None = None, *, versioned: bool = False) -> str:
    if region and region != "us-east-1":
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    else:
        s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.upload_file(real("landsat_rmnp_rgb_wgs84.tif"), name, SCENE_KEY)
    return name


@pytest.fixture
def stack(proxy, monkeypatch):
    """The template's own resources (store in the input bucket), through the proxy; sources are added per test."""
    made = provision_stack(monkeypatch)
    yield {"names": made["names"], "s3": made["s3"], "sfx": made["sfx"], "proxy": proxy}
    handler._WARM_START_CACHE.clear()


def deliver(bucket: str, *, key: str = SCENE_KEY, mid: str = "m1") -> dict:
    body = {"bucket": bucket, "key": key, "region": REGION}
    message = {"messageId": mid, "receiptHandle": mid, "body": json.dumps(body),
               "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
               "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
               "awsRegion": "us-east-1"}
    return handler.lambda_handler({"Records": [message]}, LocalContext("ClipFunction", 2048, 300))


def record(stack, bucket: str) -> dict:
    from sceneclip.aws.records_table import RecordStore

    found = RecordStore(stack["names"]["RecordsTable"], client=boto3.client("dynamodb")).get(
        f"s3://{bucket}/{SCENE_KEY}", REGION)
    assert found is not None
    return found


def outputs(stack) -> list[str]:
    resp = stack["s3"].list_objects_v2(Bucket=stack["names"]["OutputBucket"])
    return [o["Key"] for o in resp.get("Contents", []) if o["Key"].endswith(".tif")]


# --- requester-pays ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, versioned", [("list", False), ("true", True)])
def test_requester_pays_clip_sends_the_payer_to_that_bucket_only(stack, monkeypatch, setting, versioned):
    """/vsis3/ (unversioned) and a presigned URL (versioned) alike: every request to the paying bucket carries
    the payer, none to the store, output or any other bucket; the clip is verified."""
    proxy, s3 = stack["proxy"], stack["s3"]
    paying = _bucket(s3, f"landsat-pds-{stack['sfx']}", versioned=versioned)
    proxy.paying.add(paying)
    proxy.seen.clear()  # the set-up's own requests
    monkeypatch.setenv("SCENECLIP_REQUESTER_PAYS", "true" if setting == "true" else f"other-bucket,{paying}")

    result = deliver(paying)

    assert result == {"batchItemFailures": []}
    rec = record(stack, paying)
    assert rec["status"] == "ok", rec
    assert rec["bytes_fetched"] > 0 and len(outputs(stack)) == 1
    to_paying = proxy.to(paying)
    assert to_paying and all(s.payer and s.status < 400 for s in to_paying), [s for s in to_paying if not s.payer]
    assert {s.method for s in to_paying} >= {"HEAD", "GET"}
    assert any(s.by_gdal and s.method == "GET" for s in to_paying)  # GDAL's range reads, not only boto3's
    from collections import Counter

    print(f"requester-pays clip ({'presigned' if versioned else '/vsis3/'}): requests to the paying bucket "
          f"{dict(Counter((s.method, 'gdal' if s.by_gdal else 'boto3') for s in to_paying))}")
    others = [s for s in proxy.seen if s.bucket != paying]
    assert {stack["names"]["InputBucket"], stack["names"]["OutputBucket"]} <= {s.bucket for s in others}
    assert not any(s.payer for s in others)


def test_requester_pays_bucket_without_the_setting_fails_permanently_saying_what_to_set(stack):
    proxy, s3 = stack["proxy"], stack["s3"]
    paying = _bucket(s3, f"usgs-landsat-{stack['sfx']}")
    proxy.paying.add(paying)
    proxy.seen.clear()

    result = deliver(paying)

    assert result == {"batchItemFailures": []}  # permanent: the message is not retried
    rec = record(stack, paying)
    assert rec["status"] == "failed" and rec["transient"] is False
    assert rec["error_type"] == "RequesterPaysError"
    assert f"SCENECLIP_REQUESTER_PAYS={paying}" in rec["error"] and "requester-pays" in rec["error"]
    assert "403" in rec["error"]  # the evidence S3 gave
    assert outputs(stack) == []
    to_paying = proxy.to(paying)
    assert any(s.status == 403 and not s.payer for s in to_paying)
    # Only the one confirming HEAD carried the payer; no byte of the scene was read.
    paid = [s for s in to_paying if s.payer]
    assert [(s.method, s.path) for s in paid] == [("HEAD", f"/{paying}/{SCENE_KEY}")]
    assert not any(s.method == "GET" and s.status < 400 for s in to_paying)


def test_access_denied_with_the_payer_too_stays_an_access_error(stack):
    """A bucket that refuses us whatever we send is not requester-pays: the first 403 stands (IAM matter)."""
    proxy, s3 = stack["proxy"], stack["s3"]
    closed = _bucket(s3, f"closed-{stack['sfx']}")
    proxy.denied.add(closed)
    proxy.seen.clear()
    access = SourceAccess(closed, "us-east-1", False, s3)
    from sceneclip.aws.s3 import head_scene

    with pytest.raises(AccessDeniedError) as caught:
        head_scene(s3, closed, SCENE_KEY)
    err = confirm_requester_pays(caught.value, access, SCENE_KEY)
    assert type(err) is AccessDeniedError and err is caught.value and err.permanent
    assert [s.payer for s in proxy.to(closed) if s.path.endswith(SCENE_KEY)] == [False, True]


def test_backfill_lists_a_requester_pays_bucket_with_the_payer(stack):
    proxy, s3 = stack["proxy"], stack["s3"]
    paying = _bucket(s3, f"sentinel-cogs-{stack['sfx']}")
    proxy.paying.add(paying)
    proxy.seen.clear()
    queue = boto3.client("sqs").get_queue_url(QueueName=stack["names"]["WorkQueue"])["QueueUrl"]

    summary = run_backfill(f"s3://{paying}/scenes/", queue, force=True, dry_run=True, progress=False,
                           requester_pays=True)

    assert summary.listed == 1 and [m["key"] for m in summary.planned] == [SCENE_KEY]
    lists = [s for s in proxy.to(paying) if s.method == "GET" and "list-type=2" in s.query]
    assert lists and all(s.payer for s in lists)
    with pytest.raises(Exception, match="AccessDenied|403"):  # without it, S3 refuses the listing
        run_backfill(f"s3://{paying}/scenes/", queue, force=True, dry_run=True, progress=False)


def test_backfill_cli_requester_pays_flag_lists_with_the_payer_and_warns(stack):
    """``--requester-pays`` pays for the listing; the function's configuration does not pay for the reads, so
    the command says what would go wrong."""
    from click.testing import CliRunner

    from sceneclip.cli.ops import backfill

    proxy, s3 = stack["proxy"], stack["s3"]
    paying = _bucket(s3, f"landsat-c2-{stack['sfx']}")
    proxy.paying.add(paying)
    proxy.seen.clear()
    queue = boto3.client("sqs").get_queue_url(QueueName=stack["names"]["WorkQueue"])["QueueUrl"]

    result = CliRunner().invoke(backfill, [f"s3://{paying}/scenes/", "--queue", queue, "--requester-pays",
                                           "--dry-run", "--no-progress"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["key"] == SCENE_KEY
    assert f"SCENECLIP_REQUESTER_PAYS does not name {paying}" in result.stderr
    assert [s.payer for s in proxy.to(paying) if "list-type=2" in s.query] == [True]


@pytest.mark.parametrize("raw, every, buckets", [
    (None, False, ()), ("", False, ()), ("false", False, ()), ("true", True, ()), ("TRUE", True, ()),
    ("usgs-landsat, sentinel-cogs", False, ("usgs-landsat", "sentinel-cogs")),
])
def test_requester_pays_setting(raw, every, buckets):
    rp = RequesterPays.parse(raw)
    assert (rp.every_bucket, rp.buckets) == (every, buckets)
    assert rp.applies("usgs-landsat") is (every or "usgs-landsat" in buckets)
    assert rp.applies("elsewhere") is every


@pytest.mark.parametrize("raw", ["usgs-*", "s3://usgs-landsat", "Bad_Bucket"])
def test_requester_pays_setting_refuses_what_is_not_a_bucket_name(raw):
    with pytest.raises(ConfigError, match="SCENECLIP_REQUESTER_PAYS"):
        RequesterPays.parse(raw)


# --- bucket regions ------------------------------------------------------------------------------------------
def test_source_buckets_in_two_regions_are_read_with_their_region(stack, monkeypatch):
    """The region is looked up once per bucket (HeadBucket), kept warm, and every request to the bucket —
    boto3's HEAD and GDAL's range reads — is signed for it, while the function's own buckets stay us-east-1."""
    proxy, s3 = stack["proxy"], stack["s3"]
    here = {"eu-west-1": _bucket(s3, f"eu-scenes-{stack['sfx']}", "eu-west-1"),
            "us-west-2": _bucket(s3, f"oregon-scenes-{stack['sfx']}", "us-west-2")}
    for bucket in here.values():
        sources.BUCKET_REGION_WARM_START_CACHE.pop(bucket, None)
    second_key = "scenes/rmnp/again.tif"
    s3.copy_object(Bucket=here["eu-west-1"], Key=second_key, CopySource={"Bucket": here["eu-west-1"], "Key": SCENE_KEY})
    proxy.seen.clear()

    for region, bucket in here.items():
        assert deliver(bucket) == {"batchItemFailures": []}
        assert record(stack, bucket)["status"] == "ok"
    assert deliver(here["eu-west-1"], key=second_key, mid="m2") == {"batchItemFailures": []}  # warm: no new lookup

    for region, bucket in here.items():
        assert sources.BUCKET_REGION_WARM_START_CACHE[bucket] == region
        seen = proxy.to(bucket)
        lookups = [s for s in seen if s.method == "HEAD" and s.path.strip("/") == bucket]
        assert len(lookups) == 1  # found once, from the function's region (before the region is known)
        signed = [s for s in seen if s.region is not None and s not in lookups]
        assert {s.region for s in signed} == {region}, {(s.method, s.path, s.region) for s in signed}
        assert any(s.by_gdal for s in signed) and any(not s.by_gdal for s in signed)
    store_requests = [s for s in proxy.to(stack["names"]["InputBucket"]) if s.region]
    assert store_requests and {s.region for s in store_requests} == {"us-east-1"}


def test_bucket_region_falls_back_to_get_bucket_location_and_is_cached(stack):
    s3 = stack["s3"]
    bucket = f"frankfurt-{stack['sfx']}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    calls: list[str] = []
    s3.meta.events.register("before-call.s3.HeadBucket", lambda **kw: calls.append("HeadBucket"))
    s3.meta.events.register("before-call.s3.GetBucketLocation", lambda **kw: calls.append("GetBucketLocation"))
    # A HeadBucket answer without the header (as from some S3-compatible servers) leaves GetBucketLocation.
    s3.meta.events.register("after-call.s3.HeadBucket",
                            lambda http_response, parsed, **kw: parsed["ResponseMetadata"]["HTTPHeaders"].pop(
                                "x-amz-bucket-region", None))
    cache: dict[str, str] = {}
    assert bucket_region(s3, bucket, cache=cache) == "eu-central-1"
    assert bucket_region(s3, bucket, cache=cache) == "eu-central-1"
    assert calls == ["HeadBucket", "GetBucketLocation"] and cache == {bucket: "eu-central-1"}


def test_unknown_bucket_region_is_not_cached(stack):
    cache: dict[str, str] = {}
    assert bucket_region(stack["s3"], f"nowhere-{stack['sfx']}", cache=cache) is None
    assert cache == {}


def test_gdal_options_name_region_and_payer_only_when_known():
    assert SourceAccess("b", None, False, None).gdal_options() == {}
    assert SourceAccess("b", None, False, None).gdal_session() is None
    opts = SourceAccess("b", "eu-west-1", True, None).gdal_options()
    assert opts == {"AWS_REQUEST_PAYER": "requester", "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"}


def test_requester_pays_error_is_a_permanent_access_error():
    err = RequesterPaysError("x")
    assert isinstance(err, AccessDeniedError) and isinstance(err, SceneclipError) and err.permanent


def test_cli_clip_of_a_requester_pays_bucket_says_to_pay_then_pays_with_the_flag(stack, tmp_path):
    """``sceneclip clip s3://…``: without --requester-pays the denial comes with the pointer (on the evidence of a
    HEAD allowed with the payer) and no output; with it every GDAL request to that bucket carries the payer and
    is signed for the bucket's region."""
    from click.testing import CliRunner

    from sceneclip.cli.main import main as cli

    proxy, s3 = stack["proxy"], boto3.client("s3", region_name="eu-west-1")
    paying = _bucket(s3, f"landsat-eu-{stack['sfx']}", "eu-west-1")
    proxy.paying.add(paying)
    out = tmp_path / "grand.tif"
    args = ["clip", f"s3://{paying}/{SCENE_KEY}", real("colorado_counties.geojson"), str(out),
            "--region-field", "name", "--region", REGION]

    denied = CliRunner().invoke(cli, args)
    assert denied.exit_code == 1 and not out.exists()
    assert f"s3://{paying} is requester-pays" in denied.output and "--requester-pays" in denied.output

    proxy.seen.clear()
    paid = CliRunner().invoke(cli, [*args, "--requester-pays", "--json"])
    assert paid.exit_code == 0, paid.output
    assert json.loads(paid.stdout)["status"] == "ok" and out.exists()
    gdal = [s for s in proxy.to(paying) if s.by_gdal]
    assert gdal and all(s.payer for s in gdal) and {s.region for s in gdal} == {"eu-west-1"}
    out.unlink()  # and GDAL's cache does not let an unpaid read through after a paid one
    assert CliRunner().invoke(cli, args).exit_code == 1 and not out.exists()


def test_cli_clip_refuses_sources_in_buckets_of_two_regions(stack, tmp_path):
    from click.testing import CliRunner

    from sceneclip.cli.main import main as cli

    a = _bucket(boto3.client("s3", region_name="eu-west-1"), f"scenes-eu-{stack['sfx']}", "eu-west-1")
    b = _bucket(boto3.client("s3", region_name="us-west-2"), f"scenes-us-{stack['sfx']}", "us-west-2")
    out = tmp_path / "m.tif"
    result = CliRunner().invoke(cli, ["clip", f"s3://{a}/{SCENE_KEY}", f"s3://{b}/{SCENE_KEY}",
                                      real("colorado_counties.geojson"), str(out), "--region-field", "name",
                                      "--region", REGION])
    assert result.exit_code != 0 and not out.exists()
    assert f"{a}: eu-west-1" in result.output and f"{b}: us-west-2" in result.output
