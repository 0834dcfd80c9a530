"""Synthetic edge cases: overlap shapes, tiny polygons, missing CRS, bad geometry, every dtype, bands."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import LineString, Point, Polygon, box

from sceneclip.core.plan import ClipOptions, RasterInfo, plan_clip
from sceneclip.core.clip import clip_to_cog, run_clip
from sceneclip.errors import (
    EmptyGeometryError,
    InvalidOptionsError,
    MissingCRSError,
    NoOverlapError,
    RasterReadError,
)
from sceneclip.core.geometry import Boundary

from .conftest import assert_matches_reference

# Synthetic raster grid: origin (500000, 4000000), 30 m pixels, 100 x 80 → x 500000..503000, y 3997600..4000000
X0, Y0, RES = 500000.0, 4000000.0, 30.0


def utm_boundary(*geoms, crs="EPSG:32618"):
    return Boundary.from_geometries(list(geoms), crs, source="synthetic")


def test_partial_overlap_extent_is_snapped_intersection(make_raster, tmp_path):
    src = make_raster()
    poly = box(X0 + 1000.0 + 7, Y0 - 1500 - 11, X0 + 5000, Y0 + 900)  # runs off the right and top edges
    out = str(tmp_path / "o.tif")
    rec = run_clip(src, utm_boundary(poly), output=out).record
    assert rec.ok, rec.error
    # Left edge snapped down to the pixel containing x0+1007 (col 33), right edge = raster edge (col 100).
    assert rec.bounds[0] == X0 + 33 * RES and rec.bounds[2] == X0 + 100 * RES
    assert rec.bounds[3] == Y0 and rec.width == 67
    assert_matches_reference(src, [poly], out)


def test_boundary_larger_than_raster_gives_whole_raster(make_raster, tmp_path):
    src = make_raster(nodata=0)
    rec = run_clip(src, utm_boundary(box(X0 - 1e4, Y0 - 1e5, X0 + 1e5, Y0 + 1e4)), output=str(tmp_path / "o.tif")).record
    assert rec.ok and (rec.width, rec.height) == (100, 80)
    with rasterio.open(src) as s, rasterio.open(tmp_path / "o.tif") as o:
        np.testing.assert_array_equal(s.read(), o.read())


def test_polygon_smaller_than_a_pixel(make_raster, tmp_path):
    src = make_raster()
    tiny = box(X0 + 301, Y0 - 299, X0 + 309, Y0 - 291)  # 8 m square inside pixel (col 10, row 9), off-centre
    rec = run_clip(src, utm_boundary(tiny), output=str(tmp_path / "o.tif")).record
    assert rec.status == "failed" and rec.error_type == "NoOverlapError"
    assert "selects no pixel" in rec.error and "all-touched" in rec.error
    assert not (tmp_path / "o.tif").exists()
    ok = run_clip(src, utm_boundary(tiny), ClipOptions(all_touched=True), output=str(tmp_path / "t.tif")).record
    assert ok.ok and (ok.width, ok.height, ok.valid_pixels) == (1, 1, 1)
    assert_matches_reference(src, [tiny], str(tmp_path / "t.tif"), all_touched=True)


def test_no_overlap_is_an_error_not_an_empty_file(make_raster, tmp_path):
    src = make_raster()
    out = tmp_path / "o.tif"
    rec = run_clip(src, utm_boundary(box(0, 0, 1000, 1000)), output=str(out)).record
    assert rec.status == "failed" and rec.error_type == "NoOverlapError" and "does not overlap" in rec.error
    assert not out.exists()


def test_boundary_only_touching_edge(make_raster):
    src = make_raster()
    with pytest.raises(NoOverlapError):
        clip_to_cog(src, utm_boundary(box(X0 - 500, Y0 - 500, X0, Y0 - 100)))


def test_missing_raster_crs(make_raster):
    src = make_raster(crs=None)
    with pytest.raises(MissingCRSError, match="has no CRS"):
        clip_to_cog(src, utm_boundary(box(X0, Y0 - 300, X0 + 300, Y0)))


def test_missing_boundary_crs():
    with pytest.raises(MissingCRSError, match="boundary 'x.geojson' has no CRS"):
        Boundary.from_geometries([box(0, 0, 1, 1)], None, source="x.geojson")


def test_missing_boundary_crs_from_file(tmp_path, make_raster):
    import json

    path = tmp_path / "nocrs.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}))
    # GeoJSON defaults to EPSG:4326 by RFC 7946; a shapefile without .prj has no CRS.
    import geopandas as gpd

    gpd.GeoDataFrame(geometry=[box(X0, Y0 - 300, X0 + 300, Y0)]).to_file(tmp_path / "nocrs.shp")
    from sceneclip.tools.vectors import load_boundary

    with pytest.raises(MissingCRSError, match="no CRS"):
        load_boundary(str(tmp_path / "nocrs.shp"))


def test_empty_and_non_polygonal_geometry(make_raster):
    src = make_raster()
    with pytest.raises(EmptyGeometryError):
        clip_to_cog(src, utm_boundary(Polygon()))
    with pytest.raises(EmptyGeometryError, match="no polygon left"):
        clip_to_cog(src, utm_boundary(LineString([(X0, Y0), (X0 + 500, Y0 - 500)]), Point(X0 + 10, Y0 - 10)))


def test_invalid_bowtie_is_repaired(make_raster, tmp_path):
    src = make_raster()
    bowtie = Polygon([(X0, Y0), (X0 + 900, Y0 - 900), (X0 + 900, Y0), (X0, Y0 - 900), (X0, Y0)])
    assert not bowtie.is_valid
    rec = run_clip(src, utm_boundary(bowtie), output=str(tmp_path / "o.tif")).record
    assert rec.ok
    # Both triangles are kept: about half the 30x30 pixel square.
    assert 350 <= rec.valid_pixels <= 550


def test_not_a_raster(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a tiff")
    rec = run_clip(str(bad), utm_boundary(box(0, 0, 1, 1))).record
    assert rec.status == "failed" and rec.error_type == "RasterReadError"
    with pytest.raises(RasterReadError):
        clip_to_cog(str(tmp_path / "missing.tif"), utm_boundary(box(0, 0, 1, 1)))


DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count", [1, 4])
def test_every_dtype_and_band_count(make_raster, tmp_path, dtype, count):
    src = make_raster(dtype=dtype, count=count)
    poly = Polygon([(X0 + 100, Y0 - 100), (X0 + 2500, Y0 - 400), (X0 + 1500, Y0 - 2200)])
    out = str(tmp_path / "o.tif")
    rec = run_clip(src, utm_boundary(poly), output=out).record
    assert rec.ok, rec.error
    assert_matches_reference(src, [poly], out)
    with rasterio.open(out) as o:
        assert o.dtypes[0] == dtype and o.count == count
        if np.dtype(dtype).kind == "f":
            assert math.isnan(o.nodata)  # floats without nodata: NaN, never a value that could be data
            assert o.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
        else:
            rgba = count == 4 and dtype == "uint8"  # GDAL reads 4-band uint8 as RGBA: alpha is the mask
            assert o.nodata is None and rec.mask == ("alpha" if rgba else "internal")
            assert o.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
    assert cog_validate(out, quiet=True)[0]


def test_explicit_nodata_and_out_of_range_nodata(make_raster, tmp_path):
    src = make_raster(dtype="uint8", fill=7)
    poly = box(X0 + 100, Y0 - 900, X0 + 900, Y0 - 100)
    rec = run_clip(src, utm_boundary(poly), ClipOptions(nodata=0), output=str(tmp_path / "o.tif")).record
    assert rec.ok and rec.nodata == 0
    with rasterio.open(tmp_path / "o.tif") as o:
        assert o.read(1)[0, 0] in (0, 7)
    with pytest.raises(InvalidOptionsError, match="does not fit uint8"):
        clip_to_cog(src, utm_boundary(poly), ClipOptions(nodata=-9999))


def test_explicit_nodata_colliding_with_data_fails_verification(make_raster, tmp_path):
    src = make_raster(dtype="uint8", fill=7)
    rec = run_clip(src, utm_boundary(box(X0 + 100, Y0 - 900, X0 + 900, Y0 - 100)), ClipOptions(nodata=7),
                   output=str(tmp_path / "o.tif")).record
    assert rec.status == "failed" and "equal the nodata value" in rec.error
    assert not (tmp_path / "o.tif").exists()


def test_metadata_carried_over(make_raster, tmp_path):
    src = make_raster(count=2, dtype="int16", nodata=-1)
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(SENSOR="synthetic", ACQ="2026-01-01")
        ds.update_tags(1, WAVELENGTH="0.48")
        ds.set_band_description(1, "blue")
        ds.set_band_description(2, "nir")
        ds.scales = (0.0001, 0.0002)
        ds.offsets = (-0.1, 0.0)
        ds.set_band_unit(1, "reflectance")
    out = str(tmp_path / "o.tif")
    assert run_clip(src, utm_boundary(box(X0 + 100, Y0 - 900, X0 + 900, Y0 - 100)), output=out).record.ok
    with rasterio.open(out) as o:
        assert o.tags()["SENSOR"] == "synthetic" and o.tags(1)["WAVELENGTH"] == "0.48"
        assert o.descriptions == ("blue", "nir")
        assert o.scales == (0.0001, 0.0002) and o.offsets == (-0.1, 0.0)
        assert o.units[0] == "reflectance" and o.nodata == -1


def test_paletted_data_uses_nearest_overviews(make_raster, tmp_path):
    src = make_raster(width=1200, height=1200, dtype="uint8", fill=3)
    with rasterio.open(src, "r+") as ds:
        ds.write_colormap(1, {i: (i, 255 - i, 0, 255) for i in range(256)})
    out = str(tmp_path / "o.tif")
    rec = run_clip(src, utm_boundary(box(X0, Y0 - 30 * 1100, X0 + 30 * 1100, Y0)), output=out).record
    assert rec.ok
    with rasterio.open(out) as o:
        assert o.colormap(1)[5] == (5, 250, 0, 255)
        assert o.overviews(1)
        assert o.tags(ns="IMAGE_STRUCTURE").get("OVERVIEW_RESAMPLING", "NEAREST") == "NEAREST"


def test_plan_is_pure_and_on_grid():
    info = RasterInfo("mem", rasterio.crs.CRS.from_epsg(32618), from_origin(X0, Y0, RES, RES), 100, 80, 1, "uint16", None)
    plan = plan_clip(info, [box(X0 + 45, Y0 - 75, X0 + 136, Y0 - 31)], ClipOptions())
    assert (plan.window.col_off, plan.window.row_off, plan.width, plan.height) == (1, 1, 4, 2)
    assert plan.transform.c == X0 + 30 and plan.transform.f == Y0 - 30
    assert plan.use_mask and plan.nodata is None
    padded = plan_clip(info, [box(X0 + 45, Y0 - 75, X0 + 136, Y0 - 31)], ClipOptions(pad=True))
    assert padded.width == 5 and padded.height == 3
    with pytest.raises(NoOverlapError):
        plan_clip(info, [box(0, 0, 10, 10)], ClipOptions())


def test_large_window_spills_to_tmpdir_and_chunks(make_raster, tmp_path):
    src = make_raster(width=1500, height=1300, dtype="uint16", tiled=True)
    spill = tmp_path / "spill"
    spill.mkdir()
    poly = Polygon([(X0, Y0), (X0 + 30 * 1500, Y0 - 30 * 200), (X0 + 30 * 700, Y0 - 30 * 1300)])
    opts = ClipOptions(memory_limit=1024, tmpdir=str(spill), chunk_size=512)
    res = clip_to_cog(src, utm_boundary(poly), opts)
    try:
        assert res.output.spilled and str(res.output.path).startswith(str(spill))
        assert len(res.plan.chunks) == 9
        out = str(tmp_path / "o.tif")
        res.output.save(out)
    finally:
        res.output.close()
    assert os.listdir(spill) == []  # the spill directory made for the clip is gone too
    assert_matches_reference(src, [poly], out)


def test_invert_with_crop_means_raster_extent(make_raster, tmp_path):
    src = make_raster(nodata=0)
    poly = box(X0 + 300, Y0 - 600, X0 + 900, Y0 - 300)
    out = str(tmp_path / "o.tif")
    rec = run_clip(src, utm_boundary(poly), ClipOptions(invert=True), output=out).record
    assert rec.ok and (rec.width, rec.height) == (100, 80)
    assert_matches_reference(src, [poly], out, invert=True, crop=False)
