"""Archive STAC Items, as the services emit them: asset selection, S3 locations, requester-pays, filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sceneclip.core.stac_assets import is_stac_item, item_version, s3_location, select_assets
from sceneclip.core.stac_filter import ItemFilter
from sceneclip.errors import ConfigError, InvalidItemError

STAC = Path(__file__).resolve().parent / "data" / "stac"


def load(name: str) -> dict:
    return json.loads((STAC / name).read_text())


S2 = "stac_item_s2l2a_S2A_13TDE_20231008_earthsearch_v1.json"
LS_ES = "stac_item_landsat_c2l2_LC08_L2SP_033032_20231008_earthsearch_v1.json"
LS_USGS = "stac_item_landsat_c2l2sr_LC08_L2SP_028030_20200114_usgs.json"


def test_sentinel2_default_assets_are_the_data_cogs_on_the_public_bucket():
    item = load(S2)
    assets = select_assets(item)
    keys = [a.key for a in assets]
    assert "red" in keys and "scl" in keys
    assert "visual" not in keys and "thumbnail" not in keys  # role visual / not data
    assert not any(k.endswith("-jp2") for k in keys)  # JPEG 2000 alternates are not GeoTIFFs
    red = next(a for a in assets if a.key == "red")
    assert red.bucket == "sentinel-cogs" and red.region == "us-west-2" and not red.requester_pays
    assert red.s3_key.startswith("sentinel-s2-l2a-cogs/13/T/DE/2023/10/") and red.s3_key.endswith("/B04.tif")
    assert red.uri == f"s3://sentinel-cogs/{red.s3_key}"


def test_earth_search_landsat_is_requester_pays_per_asset():
    assets = select_assets(load(LS_ES), ["red", "nir08", "qa_pixel"])
    assert [a.key for a in assets] == ["red", "nir08", "qa_pixel"]  # explicit order kept, non-data roles allowed
    assert all(a.bucket == "usgs-landsat" and a.requester_pays for a in assets)
    assert assets[0].s3_key.endswith("_SR_B4.TIF")


def test_usgs_item_uses_the_s3_alternate_of_its_https_hrefs():
    red = select_assets(load(LS_USGS), ["red"])[0]
    assert red.href.startswith("https://landsatlook.usgs.gov/")
    assert red.bucket == "usgs-landsat" and red.s3_key.startswith("collection02/level-2/")
    assert red.requester_pays  # declared by the storage extension on the alternate


def test_explicit_assets_that_do_not_exist_or_are_not_tiff_are_named():
    with pytest.raises(InvalidItemError, match="no asset 'B99'.*it has:.*red"):
        select_assets(load(S2), ["red", "B99"])
    with pytest.raises(InvalidItemError, match="'thumbnail'.*not GeoTIFFs"):
        select_assets(load(S2), ["thumbnail"])


@pytest.mark.parametrize(("href", "expected"), [
    ("s3://bucket/a b/c+d.tif", ("bucket", "a b/c+d.tif", None)),  # s3:// keys are literal
    ("https://bucket.s3.eu-central-1.amazonaws.com/a%20b/c.tif", ("bucket", "a b/c.tif", "eu-central-1")),
    ("https://bucket.s3.amazonaws.com/k.tif", ("bucket", "k.tif", None)),
    ("https://s3.us-west-2.amazonaws.com/bucket/dir/k.tif", ("bucket", "dir/k.tif", "us-west-2")),
    ("https://example.com/k.tif", (None, None, None)),
    ("/local/file.tif", (None, None, None)),
])
def test_s3_locations(href, expected):
    assert s3_location(href) == expected


def test_the_captured_sns_delivery_carries_a_whole_item():
    event = load("sns_lambda_event_earthsearch_v0_cirrus_publish_S2B_50SMG_20220524.json")
    item = json.loads(event["Records"][0]["Sns"]["Message"])
    assert is_stac_item(item) and item["id"] == "S2B_50SMG_20220524_0_L2A"
    assert select_assets(item)  # a v0 Item (STAC 1.0.0-beta.2) still resolves
    usgs = json.loads(load("sns_lambda_event_usgs_public_c2_notify_LC08_L1TP_153031_20220523.json")
                      ["Records"][0]["Sns"]["Message"])
    assert not is_stac_item(usgs)  # USGS announces a prefix, not an Item


def test_item_version_prefers_updated():
    item = load(S2)
    assert item_version(item) == item["properties"]["updated"]
    del item["properties"]["updated"]
    assert item_version(item) == item["properties"].get("created", item["properties"]["datetime"])


def test_cql2_filter_on_real_items():
    s2 = load(S2)
    cloud = s2["properties"]["eo:cloud_cover"]
    assert ItemFilter.parse(f'"eo:cloud_cover" <= {cloud}').matches(s2)
    assert not ItemFilter.parse(f'"eo:cloud_cover" < {cloud}').matches(s2)
    baseline = s2["properties"]["s2:processing_baseline"]
    assert ItemFilter.parse(f"\"s2:processing_baseline\" >= '{baseline}' AND \"eo:cloud_cover\" < 101").matches(s2)
    # A Landsat Item has no s2:* property: a rule about it does not admit the Item.
    assert not ItemFilter.parse("\"s2:processing_baseline\" >= '04.00'").matches(load(LS_ES))


def test_invalid_filter_names_the_setting():
    with pytest.raises(ConfigError, match="SCENECLIP_STAC_FILTER.*not a supported CQL2"):
        ItemFilter.parse("eo:cloud_cover <<< 3")
