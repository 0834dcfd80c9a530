"""Archive STAC Items end to end over the moto *server*: Item event → selected assets → per-asset COGs → output Item.

The Items are the real ones in tests/data/stac (Earth Search v1 Sentinel-2 L2A, USGS Landsat C2 L2), with the
hrefs of the assets under test rewritten to real band COGs uploaded to moto (tests/data/real: Sentinel-2
34SGA B01/B09/TCI, Landsat 8 C2 L2 001/070 SR B2-B4 + QA_PIXEL). They arrive as the archives send them
(an SNS message body through SQS, an SNS-triggered Lambda event) and as a direct invoke / ``{"stac_item": URL}``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import boto3
import pytest
import rasterio

from sceneclip.aws import handler
from sceneclip.aws.events import parse_event, parse_sqs_body
from sceneclip.aws.stac_events import ItemRef
from sceneclip.aws.stac_pipeline import item_output_key
from sceneclip.tools.local import LocalContext

from .stack_setup import provision_stack
from .conftest import real
from .loopback_proxy import LoopbackProxy
from .stac_schema import assert_valid_item

ROOT = Path(__file__).resolve().parents[1]
STAC = ROOT / "tests" / "data" / "stac"
S2 = "stac_item_s2l2a_S2A_13TDE_20231008_earthsearch_v1.json"
LS = "stac_item_landsat_c2l2sr_LC08_L2SP_028030_20200114_usgs.json"
S2_FILES = {"coastal": "sentinel2_libya_b01_utm34n.tif", "nir09": "sentinel2_libya_b09_utm34n.tif",
            "visual": "sentinel2_libya_tci_utm34n.tif"}
LS_FILES = {"blue": "landsat8_c2l2_bolivia_001070_sr_b2_utm19n.tif", "green": "landsat8_c2l2_bolivia_001070_sr_b3_utm19n.tif",
            "red": "landsat8_c2l2_bolivia_001070_sr_b4_utm19n.tif",
            "qa_pixel": "landsat8_c2l2_bolivia_001070_qa_pixel_utm19n.tif"}


def load(name: str) -> dict:
    return json.loads((STAC / name).read_text())


@pytest.fixture
def stack(moto_endpoint, monkeypatch):
    """Template resources, a Natural Earth countries store, a request log in front of moto, the function's env."""
    made = provision_stack(monkeypatch, vector="naturalearth_lowres.shp", store_name="countries")
    names, s3 = made["names"], made["s3"]
    seen: list[tuple[str, str]] = []
    faults: dict[str, object] = {}  # "rule": (method, path) -> a LoopbackProxy action, set by a test

    headers_seen: list[tuple[str, str, dict]] = []

    def rule(method, path, headers):
        seen.append((method, path))
        headers_seen.append((method, path, {k.lower(): v for k, v in dict(headers).items()}))
        return faults["rule"](method, path) if "rule" in faults else None

    proxy = LoopbackProxy(moto_endpoint, rule=rule).start()
    for k, v in {"SCENECLIP_INPUT_BUCKETS": names["InputBucket"], "AWS_ENDPOINT_URL_S3": proxy.url}.items():
        monkeypatch.setenv(k, v)
    ddb = boto3.resource("dynamodb")
    yield {"names": names, "s3": s3, "bucket": names["InputBucket"], "out": names["OutputBucket"], "seen": seen,
           "faults": faults, "records": ddb.Table(names["RecordsTable"]), "headers": headers_seen}
    proxy.stop()
    handler._WARM_START_CACHE.clear()


def use_assets(monkeypatch, keys, **env) -> None:
    monkeypatch.setenv("SCENECLIP_STAC_ASSETS", ",".join(keys))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    handler._WARM_START_CACHE.clear()


def s2_item(stack) -> dict:
    """The Earth Search Item, its coastal/nir09/visual hrefs pointing (https, virtual-hosted, as Earth Search
    writes them) at the 34SGA COGs uploaded under the archive's own key layout."""
    item = load(S2)
    for asset, name in S2_FILES.items():
        key = f"sentinel-s2-l2a-cogs/34/S/GA/2020/3/S2A_34SGA_20200318_0_L2A/{Path(item['assets'][asset]['href']).name}"
        stack["s3"].upload_file(real(name), stack["bucket"], key)
        item["assets"][asset]["href"] = f"https://{stack['bucket']}.s3.us-east-1.amazonaws.com/{key}"
    return item


def landsat_item(stack) -> dict:
    """The USGS Item: https hrefs on landsatlook kept, the ``alternate.s3`` hrefs pointing at the 001/070 bands."""
    item = load(LS)
    for asset, name in LS_FILES.items():
        key = "collection02/level-2/standard/oli-tirs/2019/001/070/" + Path(item["assets"][asset]["href"]).name
        stack["s3"].upload_file(real(name), stack["bucket"], key)
        item["assets"][asset]["alternate"]["s3"]["href"] = f"s3://{stack['bucket']}/{key}"
    return item


def sqs_event(body: str) -> dict:
    return {"Records": [{
        "messageId": "m1", "receiptHandle": "rh-m1", "eventSource": "aws:sqs", "body": body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work", "awsRegion": "us-east-1"}]}


def sns_envelope(item: dict) -> str:
    """What SQS delivers for a topic subscription without raw message delivery: the SNS envelope of the captured
    Earth Search delivery (every field as SNS sent it), carrying this Item as its Message."""
    sns = dict(load("sns_lambda_event_earthsearch_v0_cirrus_publish_S2B_50SMG_20220524.json")["Records"][0]["Sns"])
    sns["Message"] = json.dumps(item)
    return json.dumps(sns)


def invoke(event):
    return handler.lambda_handler(event, LocalContext("ClipFunction", 2048, 300))


def rows(stack) -> list[dict]:
    return stack["records"].scan()["Items"]


def get_json(stack, key) -> dict:
    return json.loads(stack["s3"].get_object(Bucket=stack["out"], Key=key)["Body"].read())


def validate_output_item(doc: dict) -> None:
    """Offline: the core Item schema and every declared extension schema (vendored, tests/stac_schema.py),
    stac-pydantic, and what the schemas leave open (EPSG codes, a sha2-256 multihash, positive sizes)."""
    assert_valid_item(doc)
    from stac_pydantic import Item as PydanticItem

    PydanticItem.model_validate(doc)
    assert {"https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/file/v2.1.0/schema.json"} <= set(doc["stac_extensions"])
    for asset in doc["assets"].values():
        assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized" and "data" in asset["roles"]
        assert asset["proj:code"].startswith("EPSG:") and all(v > 0 for v in asset["proj:shape"])
        assert asset["file:checksum"].startswith("1220") and asset["file:size"] > 0
        assert all(band["spatial_resolution"] > 0 for band in asset["raster:bands"])


def check_region(stack, item: dict, region: str, keys: list[str]) -> dict:
    """Every asset's COG is the verified one (sha256 = record) and the output Item describes them correctly."""
    ok = {r["source"]: r for r in rows(stack) if r["region"] == region and r["status"] == "ok"}
    assert len(ok) == len(keys)
    item_id = f"{item['id']}-{region}"
    doc = get_json(stack, item_output_key("clipped/", region, item_id))
    validate_output_item(doc)
    assert doc["id"] == item_id and list(doc["assets"]) == keys
    here = f"s3://{stack['out']}/clipped/{region}/stac-items/"
    for key in keys:
        asset = doc["assets"][key]
        target = Path(here.removeprefix(f"s3://{stack['out']}/"), asset["href"]).as_posix()
        rec = next(r for r in ok.values() if r["output"] == f"s3://{stack['out']}/{_norm(target)}")
        body = stack["s3"].get_object(Bucket=stack["out"], Key=_norm(target))["Body"].read()
        assert hashlib.sha256(body).hexdigest() == rec["sha256"] == asset["file:checksum"][4:]
        assert asset["proj:shape"] == [int(rec["height"]), int(rec["width"])]
        assert asset["proj:transform"][:6] == pytest.approx([float(v) for v in rec["transform"]][:6])
        assert len(asset["raster:bands"]) == int(rec["count"])
        assert rec["checks"] and all(v is not False for v in rec["checks"].values())
    props, src = doc["properties"], item["properties"]
    for name in ("datetime", "platform", "eo:cloud_cover"):
        assert props[name] == src[name]
    assert props["sceneclip:region"] == region
    rels = [(ln["rel"], ln["href"]) for ln in doc["links"]]
    self_href = next(ln["href"] for ln in item["links"] if ln["rel"] == "self")
    coll_href = next(ln["href"] for ln in item["links"] if ln["rel"] == "collection")
    assert rels == [("derived_from", self_href), ("derived_from", coll_href)]
    return doc


def _norm(path: str) -> str:
    import posixpath

    return posixpath.normpath(path)


def test_both_captured_sns_deliveries_parse_as_items():
    es = json.loads((STAC / "sns_lambda_event_earthsearch_v0_cirrus_publish_S2B_50SMG_20220524.json").read_text())
    usgs = json.loads((STAC / "sns_lambda_event_usgs_public_c2_notify_LC08_L1TP_153031_20220523.json").read_text())
    for event in (es, usgs):  # as an SNS-triggered Lambda event, and as the SNS envelope SQS delivers
        assert parse_event(event) == parse_sqs_body(json.dumps(event["Records"][0]["Sns"]))
    (ref,) = parse_event(es)
    assert isinstance(ref, ItemRef) and ref.item["id"] == "S2B_50SMG_20220524_0_L2A" and ref.origin == "sns"
    (ref,) = parse_event(usgs)
    assert ref.href == ("s3://usgs-landsat/collection02/level-1/standard/oli-tirs/2022/153/031/"
                        "LC08_L1TP_153031_20220523_20220523_02_RT/LC08_L1TP_153031_20220523_20220523_02_RT_stac.json")
    (ref,) = parse_event({"stac_item": "https://b.s3.us-west-2.amazonaws.com/i.json", "region": "Libya", "force": True})
    assert ref.href.endswith("/i.json") and ref.region == "Libya" and ref.force
    from sceneclip.aws.events import InvalidEventError

    with pytest.raises(InvalidEventError, match="s3:// or https://"):
        parse_event({"stac_item": "file:///etc/passwd"})


def test_sample_events_are_item_refs():
    """events/: an Earth Search Item in an SNS envelope through SQS, and a {"stac_item": URL} direct payload."""
    sqs = json.loads((ROOT / "events" / "sqs-sns-stac-item.json").read_text())
    (ref,) = parse_sqs_body(sqs["Records"][0]["body"])
    assert isinstance(ref, ItemRef) and ref.item["id"] == load(S2)["id"] and ref.origin == "sns"
    (ref,) = parse_event(json.loads((ROOT / "events" / "stac-item.json").read_text()))
    assert ref.href == "s3://sceneclip-input/items/S2A_13TDE_20231008_0_L2A.json" and ref.item is None


def test_stack_setting_is_parsed_at_cold_start():
    from sceneclip.aws.stac_config import StacSettings
    from sceneclip.errors import ConfigError

    assert StacSettings.from_env({"SCENECLIP_STAC_STACK": "true"}).stack is True
    assert StacSettings.from_env({}).stack is False
    with pytest.raises(ConfigError, match="SCENECLIP_STAC_STACK='maybe' is not a boolean"):
        StacSettings.from_env({"SCENECLIP_STAC_STACK": "maybe"})
    assert StacSettings.from_env({"SCENECLIP_STAC_ASSETS": "red, nir08"}).assets == ("red", "nir08")


def test_sentinel2_item_as_sns_message_through_sqs(stack, monkeypatch):
    item = s2_item(stack)
    use_assets(monkeypatch, list(S2_FILES))
    resp = invoke(sqs_event(sns_envelope(item)))
    assert resp == {"batchItemFailures": []}
    doc = check_region(stack, item, "Libya", list(S2_FILES))
    coastal = doc["assets"]["coastal"]["raster:bands"][0]
    src = item["assets"]["coastal"]["raster:bands"][0]
    assert (coastal["scale"], coastal["offset"], coastal["nodata"]) == (src["scale"], src["offset"], src["nodata"])
    assert coastal["data_type"] == "uint16" and doc["assets"]["visual"]["raster:bands"][0]["data_type"] == "uint8"
    assert doc["properties"]["s2:processing_baseline"] == "05.09" and doc["properties"]["constellation"] == "sentinel-2"
    # Mixed resolutions: each asset keeps its own grid (60 m bands, 10 m... here 600 m and 100 m).
    assert doc["assets"]["nir09"]["proj:transform"][0] == 600.0 and doc["assets"]["visual"]["proj:transform"][0] == 100.0
    # No per-COG Item beside the asset COGs: the region's Item describes them.
    keys = [o["Key"] for o in stack["s3"].list_objects_v2(Bucket=stack["out"])["Contents"]]
    assert sum(k.endswith(".json") for k in keys) == 1 and sum(k.endswith(".tif") for k in keys) == 3


def test_sns_triggered_lambda_event_with_the_item(stack, monkeypatch):
    """The captured Earth Search delivery as an SNS-triggered Lambda receives it, carrying our rewritten Item."""
    item = s2_item(stack)
    use_assets(monkeypatch, ["nir09"])
    event = load("sns_lambda_event_earthsearch_v0_cirrus_publish_S2B_50SMG_20220524.json")
    event["Records"][0]["Sns"]["Message"] = json.dumps(item)
    resp = invoke(event)
    assert resp["statusCode"] == 200 and [r["status"] for r in resp["results"]] == ["ok"]
    check_region(stack, item, "Libya", ["nir09"])


def test_landsat_usgs_item_direct_invoke_reads_the_s3_alternates(stack, monkeypatch):
    item = landsat_item(stack)
    use_assets(monkeypatch, list(LS_FILES))
    resp = invoke(copy.deepcopy(item))
    assert resp["statusCode"] == 200
    regions = {r["region"] for r in resp["results"]}
    assert "Bolivia" in regions and all(r["status"] == "ok" for r in resp["results"] if r["region"] == "Bolivia")
    doc = check_region(stack, item, "Bolivia", list(LS_FILES))
    assert doc["properties"]["landsat:wrs_path"] == "028" and doc["properties"]["landsat:correction"] == "L2SP"
    # Sources read are the alternates' objects; the https hrefs (landsatlook) were never requested.
    sources = {r["source"] for r in rows(stack) if r["status"] == "ok" and r["region"] == "Bolivia"}
    assert sources == {item["assets"][k]["alternate"]["s3"]["href"] for k in LS_FILES}
    qa = rasterio.open(real(LS_FILES["qa_pixel"]))
    assert doc["assets"]["qa_pixel"]["proj:code"] == f"EPSG:{qa.crs.to_epsg()}"


def test_stac_item_url_is_fetched_from_an_input_bucket_only(stack, monkeypatch):
    item = s2_item(stack)
    use_assets(monkeypatch, ["nir09"])
    stack["s3"].put_object(Bucket=stack["bucket"], Key="items/s2.json", Body=json.dumps(item).encode())
    resp = invoke({"stac_item": f"https://{stack['bucket']}.s3.amazonaws.com/items/s2.json"})
    assert [r["status"] for r in resp["results"]] == ["ok"]
    check_region(stack, item, "Libya", ["nir09"])
    # Another bucket: refused without a request to it; an Item over the size cap: refused after one ranged GET.
    before = len(stack["seen"])
    resp = invoke({"stac_item": "s3://someone-elses-bucket/items/s2.json"})
    assert resp["results"][0]["error_type"] == "BucketNotAllowedError"
    assert not any("someone-elses-bucket" in p for _, p in stack["seen"][before:])
    resp = invoke({"stac_item": "https://landsatlook.usgs.gov/stac-server/collections/c/items/i"})  # not S3
    assert resp["results"][0]["error_type"] == "InvalidItemError" and "not an S3 object URL" in resp["results"][0]["error"]
    use_assets(monkeypatch, ["nir09"], SCENECLIP_MAX_ITEM_BYTES="1000")
    resp = invoke({"stac_item": f"s3://{stack['bucket']}/items/s2.json"})
    (res,) = resp["results"]
    assert res["status"] == "failed" and res["error_type"] == "LimitExceededError" and "SCENECLIP_MAX_ITEM_BYTES" in res["error"]
    # Not read, so recorded under the URL it was named by.
    failed = [r for r in rows(stack) if r["scene"] == f"s3://{stack['bucket']}/items/s2.json" and r["region"] == "-"]
    assert failed and failed[0]["transient"] is False


def test_filter_rejects_item_with_a_skipped_record_and_no_asset_byte(stack, monkeypatch):
    item = s2_item(stack)
    rule = "\"eo:cloud_cover\" > 20 OR \"s2:processing_baseline\" < '05.00'"
    use_assets(monkeypatch, list(S2_FILES), SCENECLIP_STAC_FILTER=rule)
    del stack["seen"][:]
    resp = invoke(sqs_event(sns_envelope(item)))
    assert resp == {"batchItemFailures": []}
    (rec,) = rows(stack)
    assert rec["status"] == "skipped" and rec["error_type"] == "ItemFilteredOut" and rule in rec["error"]
    assert rec["scene"] == f"stac://sentinel-2-l2a/{item['id']}" and rec["region"] == "-"
    asset_paths = [p for _, p in stack["seen"] if "sentinel-s2-l2a-cogs" in p]
    assert asset_paths == []  # not a GET, not even a HEAD of any asset
    assert "Contents" not in stack["s3"].list_objects_v2(Bucket=stack["out"])
    # The same Item passes a rule it meets, and is clipped.
    use_assets(monkeypatch, ["nir09"], SCENECLIP_STAC_FILTER="\"eo:cloud_cover\" < 20")
    assert invoke(sqs_event(sns_envelope(item))) == {"batchItemFailures": []}
    assert any("sentinel-s2-l2a-cogs" in p for _, p in stack["seen"])
    check_region(stack, item, "Libya", ["nir09"])


def test_duplicate_delivery_clips_once_and_a_republished_item_again(stack, monkeypatch):
    item = s2_item(stack)
    use_assets(monkeypatch, ["nir09"])

    def versions() -> int:
        resp = stack["s3"].list_object_versions(Bucket=stack["out"])
        return sum(v["Key"].endswith(".tif") for v in resp.get("Versions", []))

    invoke(copy.deepcopy(item))
    assert versions() == 1
    invoke(sqs_event(sns_envelope(item)))  # the same edition again: replayed, not clipped
    assert versions() == 1
    item["properties"]["updated"] = "2023-10-10T00:00:00.000Z"  # the archive republished the Item
    invoke(copy.deepcopy(item))
    assert versions() == 2
    check_region(stack, item, "Libya", ["nir09"])


def test_output_item_write_failure_is_recorded_and_a_redelivery_writes_it(stack, monkeypatch):
    item = s2_item(stack)
    use_assets(monkeypatch, ["nir09"])
    stack["faults"]["rule"] = lambda m, p: ("status", 503, "SlowDown") if m == "PUT" and "/stac-items/" in p else None
    body = sns_envelope(item)
    assert invoke(sqs_event(body)) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}  # retried
    (failed,) = [r for r in rows(stack) if r["scene"] == f"stac://sentinel-2-l2a/{item['id']}"]
    assert failed["status"] == "failed" and failed["region"] == "Libya" and failed["transient"] is True
    assert "stac-items/" in failed["error"] and "SlowDown" in failed["error"]
    cogs = [o["Key"] for o in stack["s3"].list_objects_v2(Bucket=stack["out"])["Contents"]]
    assert len(cogs) == 1 and cogs[0].endswith("B09.tif")  # the asset's COG is published (its record is ok)
    del stack["faults"]["rule"]
    assert invoke(sqs_event(body)) == {"batchItemFailures": []}
    check_region(stack, item, "Libya", ["nir09"])
    versions = stack["s3"].list_object_versions(Bucket=stack["out"])["Versions"]
    assert sum(v["Key"].endswith(".tif") for v in versions) == 1  # replayed from the idempotency table
