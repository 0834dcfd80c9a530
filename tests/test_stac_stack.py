"""``SCENECLIP_STAC_STACK=true`` end to end over the moto server: the real Earth Search Sentinel-2 Item (its
coastal/nir09 60 m-class and visual 10 m-class assets, here the 600 m and 100 m band COGs of 34SGA) through an
SNS-shaped SQS message gives one multi-band COG per region whose bands equal the per-asset clips of the same
Item (``stack=false``) warped onto the stack grid with the same (nearest) resampling, and a valid output Item.
"""

from __future__ import annotations

import copy
import hashlib

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import geometry_mask
from rasterio.io import MemoryFile
from rasterio.warp import Resampling, reproject, transform_geom
from shapely.geometry import mapping, shape

from sceneclip.aws.stac_pipeline import item_output_key
from sceneclip.core.stac_assets import asset_ref

from .conftest import real
from .test_stac_items import (  # noqa: F401 (the fixture)
    LS_FILES,
    S2,
    load,
    S2_FILES,
    get_json,
    invoke,
    landsat_item,
    rows,
    s2_item,
    sns_envelope,
    sqs_event,
    stack,
    use_assets,
    validate_output_item,
)

COARSE_PX = 600.0  # the 34SGA B01/B09 fixtures' pixel size; visual (TCI) is 100 m


def load_s2() -> dict:
    return load(S2)


def cog(stack, uri: str) -> MemoryFile:
    key = uri.removeprefix(f"s3://{stack['out']}/")
    return MemoryFile(stack["s3"].get_object(Bucket=stack["out"], Key=key)["Body"].read())


def onto(src_ds, dst_ds) -> np.ndarray:
    """``src_ds`` (a per-asset clip) warped onto ``dst_ds``'s grid, nearest, its nodata kept as nodata."""
    out = np.zeros((src_ds.count, dst_ds.height, dst_ds.width), dtype=src_ds.dtypes[0])
    reproject(src_ds.read(), out, src_transform=src_ds.transform, src_crs=src_ds.crs, src_nodata=src_ds.nodata,
              dst_transform=dst_ds.transform, dst_crs=dst_ds.crs, dst_nodata=0, resampling=Resampling.nearest)
    return out


def near_edge(region: str, ds, distance: float) -> np.ndarray:
    """True on the stack grid within ``distance`` (metres) of the region's outline (Natural Earth countries)."""
    countries = gpd.read_file(real("naturalearth_lowres.shp"))
    geom = shapely.segmentize(countries[countries["name"] == region].geometry.iloc[0], 0.01)
    outline = shape(transform_geom("EPSG:4326", ds.crs, mapping(geom))).boundary.buffer(distance)
    return ~geometry_mask([outline], out_shape=(ds.height, ds.width), transform=ds.transform)


def test_sentinel2_stack_bands_equal_the_per_asset_clips_on_the_stack_grid(stack, monkeypatch):
    item = s2_item(stack)
    body = sns_envelope(item)
    use_assets(monkeypatch, list(S2_FILES), SCENECLIP_STAC_STACK="false")
    assert invoke(sqs_event(body)) == {"batchItemFailures": []}
    per_asset = {r["source"]: r for r in rows(stack) if r["status"] == "ok" and r["region"] == "Libya"}
    assert len(per_asset) == 3

    use_assets(monkeypatch, list(S2_FILES), SCENECLIP_STAC_STACK="true")
    assert invoke(sqs_event(body)) == {"batchItemFailures": []}
    scene = f"stac://sentinel-2-l2a/{item['id']}"
    (rec,) = [r for r in rows(stack) if r["scene"] == scene and r["region"] == "Libya"]
    assert rec["status"] == "ok" and all(v is not False for v in rec["checks"].values())
    # The fingerprint carries stack=true: another configuration than the per-asset clips'.
    assert {r["config_hash"] for r in per_asset.values()} != {rec["config_hash"]}
    assert rec["checks"]["bands"] == ["coastal", "nir09", "visual:1", "visual:2", "visual:3"]

    with cog(stack, rec["output"]) as mem, mem.open() as ds:
        assert ds.descriptions == tuple(rec["checks"]["bands"]) and ds.count == 5 and ds.dtypes[0] == "uint16"
        assert ds.nodata == 0 and ds.res == (100.0, 100.0)  # the finest asset's (visual) pixel size and lattice
        with rasterio.open(real(S2_FILES["visual"])) as tci:
            assert ds.crs == tci.crs
            assert ((ds.transform.c - tci.transform.c) / 100).is_integer()
            assert ((ds.transform.f - tci.transform.f) / 100).is_integer()
        bands = ds.read()
        edge = near_edge("Libya", ds, COARSE_PX * 2 ** 0.5)
        first = 0
        for asset in S2_FILES:
            clip = per_asset[asset_ref(asset, item["assets"][asset]).uri]
            with cog(stack, clip["output"]) as cmem, cmem.open() as cds:
                ref = onto(cds, ds)
            ours = bands[first:first + len(ref)]
            first += len(ref)
            both = (ours != 0) & (ref != 0)
            assert np.count_nonzero(both) > 100_000
            np.testing.assert_array_equal(ours[both], ref[both])
            if asset == "visual":  # the stack's own grid: the same pixels, the same mask
                np.testing.assert_array_equal(ours, ref)
            else:  # 100 m pixels of a 600 m one straddling the coast follow the 100 m rule: only along the outline
                differ = ((ours != 0) != (ref != 0)).any(axis=0)
                assert np.count_nonzero(differ) > 0 and not (differ & ~edge).any()

    doc = get_json(stack, item_output_key("clipped/", "Libya", f"{item['id']}-Libya"))
    validate_output_item(doc)
    assert list(doc["assets"]) == ["stack"]
    asset = doc["assets"]["stack"]
    assert asset["file:checksum"][4:] == rec["sha256"] and asset["proj:shape"] == [int(rec["height"]), int(rec["width"])]
    assert asset["proj:transform"][:6] == pytest.approx([float(v) for v in rec["transform"]][:6])
    assert asset["proj:code"] == "EPSG:32634"
    rb = asset["raster:bands"]
    assert len(rb) == 5 and all(b["data_type"] == "uint16" and b["nodata"] == 0 for b in rb)
    src = item["assets"]["coastal"]["raster:bands"][0]
    assert (rb[0]["scale"], rb[0]["offset"]) == (src["scale"], src["offset"])
    assert "scale" not in rb[2]  # the visual asset declares no raster:bands scale
    assert [b["name"] for b in asset["eo:bands"]] == ["coastal", "nir09", "red", "green", "blue"]
    assert asset["eo:bands"][0] == item["assets"]["coastal"]["eo:bands"][0]
    assert doc["properties"]["s2:processing_baseline"] == item["properties"]["s2:processing_baseline"]
    body_bytes = stack["s3"].get_object(Bucket=stack["out"],
                                        Key=rec["output"].removeprefix(f"s3://{stack['out']}/"))["Body"].read()
    assert hashlib.sha256(body_bytes).hexdigest() == rec["sha256"]


def test_stack_is_clipped_once_per_edition_and_refuses_interpolating_a_qa_band(stack, monkeypatch):
    """Landsat 001/070: SR B2-B4 + QA_PIXEL on one grid; a duplicate delivery is replayed, a republished
    Item clipped again; bilinear resampling of the QA asset (its STAC roles say flags) is refused."""
    item = landsat_item(stack)
    use_assets(monkeypatch, list(LS_FILES), SCENECLIP_STAC_STACK="true")

    def stack_versions() -> int:
        resp = stack["s3"].list_object_versions(Bucket=stack["out"])
        return sum(v["Key"].endswith("-stack.tif") for v in resp.get("Versions", []))

    resp = invoke(copy.deepcopy(item))
    ok = [r for r in resp["results"] if r["region"] == "Bolivia"]
    assert [r["status"] for r in ok] == ["ok"]
    n = stack_versions()
    assert n >= 1
    invoke(copy.deepcopy(item))  # the same edition: replayed from the idempotency table
    assert stack_versions() == n
    (rec,) = [r for r in rows(stack) if r["region"] == "Bolivia" and r["scene"].startswith("stac://")]
    with cog(stack, rec["output"]) as mem, mem.open() as ds:
        assert ds.count == 4 and ds.descriptions == tuple(LS_FILES)
        stacked = ds.read()
        # All four assets share one grid: each band is its asset's pixels, unresampled.
        for i, asset in enumerate(LS_FILES):
            with rasterio.open(real(LS_FILES[asset])) as src:
                col, row = ~src.transform * (ds.transform.c, ds.transform.f)
                assert abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6 and ds.res == src.res
                source = src.read(1)[round(row):round(row) + ds.height, round(col):round(col) + ds.width]
            kept = stacked[i] != 0
            assert np.count_nonzero(kept) > 1000
            np.testing.assert_array_equal(stacked[i][kept], source[kept])
    doc = get_json(stack, item_output_key("clipped/", "Bolivia", f"{item['id']}-Bolivia"))
    validate_output_item(doc)
    expected = [(item["assets"][k].get("eo:bands") or [{"name": k}])[0]["name"] for k in LS_FILES]
    assert [b["name"] for b in doc["assets"]["stack"]["eo:bands"]] == expected and expected[-1] == "qa_pixel"

    use_assets(monkeypatch, list(LS_FILES), SCENECLIP_STAC_STACK="true", SCENECLIP_RESAMPLING="bilinear")
    item["properties"]["updated"] = "2024-01-01T00:00:00Z"
    resp = invoke(copy.deepcopy(item))
    (failed,) = [r for r in resp["results"] if r["region"] == "Bolivia"]
    assert failed["status"] == "failed" and failed["error_type"] == "ResamplingRefusedError"
    assert item["assets"]["qa_pixel"]["alternate"]["s3"]["href"] in failed["error"] and failed["transient"] is False
    assert stack_versions() == n  # nothing partial published


def test_each_unversioned_member_is_read_with_its_own_if_match(stack, monkeypatch):
    """An unversioned input bucket: GDAL reads every member pinned to the ETag HEADed for *that* member (the
    per-member options around each member's reads), and the stack is clipped."""
    plain = f"plain-{stack['bucket']}"
    stack["s3"].create_bucket(Bucket=plain)
    item = load_s2()
    etags = {}
    for asset in ("coastal", "nir09"):
        key = f"s2/{asset}.tif"
        stack["s3"].upload_file(real(S2_FILES[asset]), plain, key)
        etags[key] = stack["s3"].head_object(Bucket=plain, Key=key)["ETag"]
        item["assets"][asset]["href"] = f"s3://{plain}/{key}"
    use_assets(monkeypatch, ["coastal", "nir09"], SCENECLIP_STAC_STACK="true",
               SCENECLIP_INPUT_BUCKETS=f"{stack['bucket']},{plain}")
    del stack["headers"][:]
    resp = invoke(copy.deepcopy(item))
    assert [r["status"] for r in resp["results"] if r["region"] == "Libya"] == ["ok"]
    gets = [(p, h) for m, p, h in stack["headers"] if m == "GET" and p.startswith(f"/{plain}/s2/")]
    assert {p.split("?")[0] for p, _ in gets} == {f"/{plain}/{k}" for k in etags}
    for path, headers in gets:
        assert headers.get("if-match", "").strip('"') == etags[path.split("?")[0].removeprefix(f"/{plain}/")].strip('"')
