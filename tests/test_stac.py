"""STAC Items for clips, validated offline: the vendored core and extension JSON Schemas, stac-pydantic's model."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from rasterio.warp import transform as warp_transform
from shapely.geometry import Polygon, box, shape

from sceneclip.tools.vectors import load_boundary
from sceneclip.core.clip import run_clip
from sceneclip.core.geometry import Boundary
from sceneclip.core.stac import StacError, item_path_for, make_item, write_item

from .conftest import real
from .stac_schema import assert_valid_item

X0, Y0, RES = 500000.0, 4000000.0, 30.0
WRITTEN_EXTENSIONS = {  # what make_item declares; each one is validated against its vendored schema
    pystac.extensions.projection.ProjectionExtension.get_schema_uri(),
    pystac.extensions.raster.RasterExtension.get_schema_uri(),
    pystac.extensions.file.FileExtension.get_schema_uri(),
}


def validate_item_dict(d: dict) -> None:
    """Offline validation: the STAC core Item schema of ``stac_version`` and every ``stac_extensions`` schema
    (vendored JSON Schemas, tests/stac_schema.py), stac-pydantic's Item model, and the rules those schemas
    cannot express (proj:code's AUTHORITY:CODE form, a sha2-256 multihash, positive sizes, our own fields)."""
    assert_valid_item(d)

    from stac_pydantic import Item as PydanticItem

    PydanticItem.model_validate(d)

    assert WRITTEN_EXTENSIONS <= set(d["stac_extensions"])
    props = d["properties"]
    # proj:code is null when the CRS has no authority code; proj:wkt2 (or projjson) then carries it.
    code = props.get("proj:code")
    assert (isinstance(code, str) and re.fullmatch(r"[A-Z]+:\w+", code)) or (
        code is None and (isinstance(props.get("proj:wkt2"), str) or isinstance(props.get("proj:projjson"), dict)))
    assert all(v > 0 for v in props["proj:shape"])
    asset = d["assets"]["data"]
    assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized" and asset["roles"] == ["data"]
    assert all(band["spatial_resolution"] > 0 for band in asset["raster:bands"])
    assert re.fullmatch(r"1220[0-9a-f]{64}", asset["file:checksum"])  # the schema only asks for hex
    assert asset["file:size"] > 0
    for k in ("sceneclip:region", "sceneclip:boundary_hash", "sceneclip:valid_fraction"):
        assert k in props
    assert any(link["rel"] == "derived_from" for link in d["links"])
    w, s, e, n = d["bbox"]
    assert -180 <= w <= 180 and -180 <= e <= 180 and -90 <= s < n <= 90


def _valid_points_lonlat(path, n=400):
    """Centres of up to n valid output pixels, in lon/lat."""
    with rasterio.open(path) as ds:
        mask = ds.dataset_mask()
        rows, cols = np.nonzero(mask)
        idx = np.random.default_rng(0).choice(len(rows), size=min(n, len(rows)), replace=False)
        xs, ys = rasterio.transform.xy(ds.transform, rows[idx], cols[idx])
        lon, lat = warp_transform(ds.crs, "EPSG:4326", xs, ys)
    return np.asarray(lon), np.asarray(lat)


REAL = [
    ("landsat7_bahamas_rgb_utm18n.tif", "naturalearth_lowres.shp", "name", "Bahamas"),
    ("landsat7_everest_b4_utm45n.tif", "naturalearth_lowres.shp", "name", "Nepal"),
    ("landsat_rmnp_rgb_wgs84.tif", "rmnp_boundary.geojson", None, None),
    ("sentinel1_pugetsound_float_nan_utm10n.tif", "naturalearth_lowres.shp", "name", "United States of America"),
    ("landsat8_iguazu_b2_utm21n.tif", "iguazu_landcover_training.geojson", None, None),
    ("aster_dem_exploradores_utm18s.tif", "rgi60_exploradores_glaciers.gpkg", None, None),
]


@pytest.mark.realdata
@pytest.mark.parametrize("raster,vector,field,region", REAL, ids=[f"{r[0][:20]}-{r[3] or r[1][:12]}" for r in REAL])
def test_real_clip_item_validates(tmp_path, raster, vector, field, region):
    src = real(raster)
    out = str(tmp_path / "clip.tif")
    rec = run_clip(src, load_boundary(real(vector), region_field=field, region=region), output=out).record
    assert rec.ok, rec.error
    item = make_item(rec, cog_href="./clip.tif", source_href=src, cog_path=out)
    path = item_path_for(out)
    assert path == str(tmp_path / "clip.stac.json")
    write_item(item, path)
    with open(path) as fh:
        d = json.load(fh)
    validate_item_dict(d)

    props, asset = d["properties"], d["assets"]["data"]
    with rasterio.open(out) as ds:
        epsg = ds.crs.to_epsg()
        assert props["proj:code"] == f"EPSG:{epsg}"
        assert props["proj:shape"] == [ds.height, ds.width]
        assert props["proj:transform"] == pytest.approx(list(ds.transform)[:6])
        assert [b["data_type"] for b in asset["raster:bands"]] == list(ds.dtypes)
        if ds.nodata is None:
            assert all("nodata" not in b for b in asset["raster:bands"])  # validity is a mask
        elif np.isnan(ds.nodata):
            assert all(b["nodata"] == "nan" for b in asset["raster:bands"])
        else:
            assert all(b["nodata"] == ds.nodata for b in asset["raster:bands"])
    assert asset["file:checksum"] == "1220" + rec.sha256 and asset["file:size"] == rec.size_bytes
    assert asset["href"] == "./clip.tif"
    assert [link["href"] for link in d["links"] if link["rel"] == "derived_from"] == [src]
    assert props["sceneclip:boundary_hash"] == rec.boundary.content_hash
    assert props["sceneclip:valid_fraction"] == rec.valid_fraction and props["sceneclip:region"] == region

    # The footprint is the valid data: nearly every valid pixel lies in it, and it is no larger than the bounds.
    footprint = shape(d["geometry"])
    lon, lat = _valid_points_lonlat(out)
    inside = shapely.contains_xy(footprint.buffer(1e-9), lon, lat)
    assert inside.mean() >= 0.97, f"only {inside.mean():.1%} of valid pixels in the footprint"
    w, s, e, n = d["bbox"]
    assert box(w, s, e, n).buffer(1e-6).contains(footprint)
    assert pystac.Item.from_dict(d).id == item.id


def test_antimeridian_item_is_cut_and_bbox_wraps(tmp_path):
    src = real("landsat_aleutians_antimeridian_utm60n.tif")
    bnd = Boundary.from_geometries([Polygon([(178.3, 51.0), (180.8, 51.0), (180.8, 52.3), (178.3, 52.3)])],
                                   "EPSG:4326", source="aleutians", region="aleutians")
    out = str(tmp_path / "aleut.tif")
    rec = run_clip(src, bnd, output=out).record
    assert rec.ok, rec.error
    d = make_item(rec, cog_href="./aleut.tif", source_href=src, cog_path=out).to_dict(include_self_link=False)
    validate_item_dict(d)
    w, s, e, n = d["bbox"]
    assert w > 0 > e, "a footprint across ±180° has west > east"
    assert d["geometry"]["type"] == "MultiPolygon"
    xs = shapely.get_coordinates(shape(d["geometry"]))[:, 0]
    assert xs.min() >= -180 and xs.max() <= 180


def test_datetime_from_tiff_tag_and_wkt2_without_epsg(make_raster, tmp_path):
    crs = "+proj=laea +lat_0=47.3 +lon_0=11.7 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
    src = make_raster(crs=crs, nodata=0, scales=None)
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(TIFFTAG_DATETIME="2021:03:04 05:06:07")
        ds.scales, ds.offsets = (0.5,), (10.0,)
        assert ds.crs.to_epsg() is None
    bnd = Boundary.from_geometries([box(X0 + 300, Y0 - 1500, X0 + 2000, Y0 - 200)], crs, source="synthetic")
    out = str(tmp_path / "o.tif")
    rec = run_clip(src, bnd, output=out).record
    assert rec.ok, rec.error
    d = make_item(rec, cog_href="./o.tif", source_href=src, cog_path=out, item_id="custom").to_dict(include_self_link=False)
    validate_item_dict(d)
    assert d["id"] == "custom"
    assert d["properties"]["datetime"] == "2021-03-04T05:06:07Z"
    assert d["properties"].get("proj:code") is None and "Lambert" in d["properties"]["proj:wkt2"]
    band = d["assets"]["data"]["raster:bands"][0]
    assert band["scale"] == 0.5 and band["offset"] == 10.0 and band["nodata"] == 0


def test_without_cog_path_the_footprint_is_the_bounds(make_raster, tmp_path):
    src = make_raster(nodata=0)
    bnd = Boundary.from_geometries([box(X0 + 300, Y0 - 1500, X0 + 2000, Y0 - 200)], "EPSG:32618", source="s", region="r 1")
    rec = run_clip(src, bnd, output=str(tmp_path / "o.tif")).record
    item = make_item(rec, cog_href="s3://bucket/out/o.tif", source_href="s3://bucket/in/src.tif")
    d = item.to_dict(include_self_link=False)
    validate_item_dict(d)
    assert d["id"] == "src-r_1"
    created = datetime.fromisoformat(rec.created_at.replace("Z", "+00:00"))
    assert item.datetime == created.astimezone(timezone.utc)
    expected = rasterio.warp.transform_bounds("EPSG:32618", "EPSG:4326", *rec.bounds, densify_pts=64)
    assert d["bbox"] == pytest.approx(list(expected), abs=1e-6)


def test_failed_record_has_no_item(make_raster):
    src = make_raster()
    rec = run_clip(src, Boundary.from_geometries([box(0, 0, 1, 1)], "EPSG:32618")).record
    assert not rec.ok
    with pytest.raises(StacError, match="failed clip"):
        make_item(rec, cog_href="x.tif", source_href=src)
