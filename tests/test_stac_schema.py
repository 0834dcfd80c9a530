"""The offline STAC schema validator is live: written Items pass, and Items broken in ways only the core or an
extension schema can see fail (tests/stac_schema.py, schemas vendored in tests/data/stac/schemas)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from shapely.geometry import box

from sceneclip.core.clip import run_clip
from sceneclip.core.geometry import Boundary
from sceneclip.core.stac import make_item
from sceneclip.core.stac_output import EO_SCHEMA, LANDSAT_SCHEMA, ClippedAsset, region_item

from .stac_schema import SCHEMA_DIR, assert_valid_item, schema_errors

X0, Y0 = 500000.0, 4000000.0
S2_ITEM = Path(__file__).resolve().parent / "data" / "stac" / "stac_item_s2l2a_S2A_13TDE_20231008_earthsearch_v1.json"
PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
EXT = "https://stac-extensions.github.io/{}/schema.json"
# The extensions the Earth Search Sentinel-2 Item declares for the properties an output Item carries over.
S2_CARRIED = (EXT.format("view/v1.0.0"), EXT.format("mgrs/v1.0.0"), EXT.format("grid/v1.0.0"))


@pytest.fixture
def record(make_raster, tmp_path):
    """An ``ok`` verification record of a small synthetic clip (uint16, nodata 0, EPSG:32618)."""
    src = make_raster(dtype="uint16", nodata=0)
    bnd = Boundary.from_geometries([box(X0 + 300, Y0 - 1500, X0 + 2000, Y0 - 200)], "EPSG:32618",
                                   source="s", region="north")
    rec = run_clip(src, bnd, output=str(tmp_path / "o.tif")).record
    assert rec.ok, rec.error
    return rec


@pytest.fixture
def clip_item(record) -> dict:
    return make_item(record, cog_href="./o.tif", source_href="s3://in/src.tif").to_dict(include_self_link=False)


@pytest.fixture
def region_doc(record) -> dict:
    """An output Item of an archive Item (the Earth Search Sentinel-2 fixture), its red asset clipped."""
    source = json.loads(S2_ITEM.read_text())
    return region_item(source, [ClippedAsset("red", record, "../red.tif")], region="north",
                       item_id=f"{source['id']}-north", source_href="https://example.test/item.json")


def test_every_schema_written_items_declare_is_vendored(clip_item, region_doc):
    assert set(clip_item["stac_extensions"]) == {PROJ, RASTER, FILE}
    assert set(region_doc["stac_extensions"]) == {PROJ, RASTER, FILE, EO_SCHEMA, *S2_CARRIED}
    for url in ("https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json", PROJ, RASTER, FILE, EO_SCHEMA,
                *S2_CARRIED):
        assert (SCHEMA_DIR / url.removeprefix("https://")).is_file(), url


def test_written_items_validate(clip_item, region_doc):
    assert_valid_item(clip_item)
    assert_valid_item(region_doc)
    # the source's band semantics and acquisition properties are carried, and still valid
    assert region_doc["assets"]["red"]["raster:bands"][0]["scale"] == 0.0001
    assert 0 <= region_doc["properties"]["eo:cloud_cover"] <= 100


def _broken(doc: dict, where: str, value) -> dict:
    bad = copy.deepcopy(doc)
    target = bad
    *path, last = where.split(".")
    for part in path:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[last] = value
    return bad


@pytest.mark.parametrize("where,value,schema", [
    ("properties.proj:epsg", "32618", PROJ),  # v1 field, refused by projection v2
    ("properties.proj:shape", [10.5, 3], PROJ),
    ("assets.data.raster:bands.0.scale", "0.01", RASTER),
    ("assets.data.raster:bands.0.data_type", "uint12", RASTER),
    ("assets.data.file:checksum", "sha256:abc", FILE),
    ("properties.datetime", "yesterday", "item.json"),
    ("properties.created", "2023-13-45T25:00:00Z", "item.json"),  # matches the schema's pattern; not RFC 3339
    ("stac_version", "1.0.0", "v1.0.0/item-spec"),  # a core schema we do not vendor: fails, never skipped
], ids=["proj-epsg-string", "proj-shape-float", "raster-scale-string", "raster-dtype", "file-checksum",
        "datetime", "created-not-rfc3339", "core-1.0.0"])
def test_a_broken_clip_item_fails(clip_item, where, value, schema):
    errors = schema_errors(_broken(clip_item, where, value))
    field = where.split(".")[-1]  # the error names the field (or, for a core we lack, the missing schema)
    assert any(schema in e and (field in e or "not vendored" in e) for e in errors), errors
    with pytest.raises(AssertionError):
        assert_valid_item(_broken(clip_item, where, value))


@pytest.mark.parametrize("name,carried", [
    ("stac_item_s2l2a_S2A_13TDE_20231008_earthsearch_v1.json", S2_CARRIED),
    ("stac_item_landsat_c2l2_LC08_L2SP_033032_20231008_earthsearch_v1.json",
     (EXT.format("view/v1.0.0"), EXT.format("grid/v1.1.0"), LANDSAT_SCHEMA)),
    # USGS declares its own landsat-extension v1.1.1: the output declares its community successor v2.0.0.
    ("stac_item_landsat_c2l2sr_LC08_L2SP_028030_20200114_usgs.json", (EXT.format("view/v1.0.0"), LANDSAT_SCHEMA)),
])
def test_region_items_of_real_archive_items_declare_the_carried_extensions_and_validate(record, name, carried):
    source = json.loads((S2_ITEM.parent / name).read_text())
    doc = region_item(source, [ClippedAsset("red", record, "../red.tif")], region="north", item_id="x",
                      source_href="https://example.test/item.json")
    assert set(doc["stac_extensions"]) == {PROJ, RASTER, FILE, EO_SCHEMA, *carried}
    prefixes = {k.split(":")[0] for k in doc["properties"] if ":" in k}
    assert {"view", "landsat" if "landsat" in name else "mgrs"} <= prefixes
    assert_valid_item(doc)
    # the carried fields are really checked by the declared schemas: a wrong one now fails
    errors = schema_errors(_broken(doc, "properties.view:sun_elevation", 120))
    assert any(e.startswith(EXT.format("view/v1.0.0")) and "view:sun_elevation" in e for e in errors), errors
    if "landsat" in name:  # landsat v2.0.0's field types are not wired into its schema upstream; its required list is
        bad = copy.deepcopy(doc)
        del bad["properties"]["landsat:wrs_row"]
        assert any(e.startswith(LANDSAT_SCHEMA) and "landsat:wrs_row" in e for e in schema_errors(bad))
    else:
        errors = schema_errors(_broken(doc, "properties.mgrs:utm_zone", "13"))
        assert any(e.startswith(EXT.format("mgrs/v1.0.0")) and "mgrs:utm_zone" in e for e in errors), errors


def test_a_broken_region_item_fails(region_doc):
    errors = schema_errors(_broken(region_doc, "properties.eo:cloud_cover", 140))
    assert any(e.startswith(EO_SCHEMA) and "eo:cloud_cover" in e for e in errors), errors


def test_unknown_extension_and_unvendored_ref_fail(clip_item):
    bad = copy.deepcopy(clip_item)
    bad["stac_extensions"].append("https://stac-extensions.github.io/sat/v1.0.0/schema.json")
    assert any("sat/v1.0.0" in e and "not vendored" in e for e in schema_errors(bad))
    # proj:projjson refers to PROJ's schema, which is not vendored: resolving it must fail, not download
    bad = _broken(clip_item, "properties.proj:projjson", {"type": "GeographicCRS"})
    assert any(e.startswith(PROJ) and "cannot resolve" in e for e in schema_errors(bad)), schema_errors(bad)


def test_a_malformed_source_band_is_not_carried_into_the_output(record):
    """A source Item whose red band has a string scale and a bogus nodata: the output keeps the clip's own
    values (no scale, nodata 0) and stays valid; the source's numeric offset is still carried."""
    source = json.loads(S2_ITEM.read_text())
    band = source["assets"]["red"]["raster:bands"][0]
    band.update(scale="0.0001", nodata="none", offset=-0.1)
    doc = region_item(source, [ClippedAsset("red", record, "../red.tif")], region="north", item_id="x",
                      source_href="https://example.test/item.json")
    assert_valid_item(doc)
    out = doc["assets"]["red"]["raster:bands"][0]
    assert "scale" not in out and out["nodata"] == 0 and out["offset"] == -0.1
