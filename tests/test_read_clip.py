"""read_clip: the in-memory clip equals rasterio.mask.mask(filled=False) and the COG run_clip writes."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.mask
from shapely.geometry import box

from sceneclip.tools.vectors import load_boundary
from sceneclip.core.plan import ClipOptions
from sceneclip.core.clip import run_clip
from sceneclip.errors import InvalidOptionsError, NoOverlapError, OutputTooLargeError, RasterReadError
from sceneclip.core.geometry import Boundary, to_raster_crs
from sceneclip.core.read import ClipArray, in_memory_bytes, read_clip

from .conftest import assert_aligned_equal, real
from .test_options_real import CASES, IDS, INVERT_CASES, PAD_CASES, _ids

X0, Y0, RES = 500000.0, 4000000.0, 30.0


def assert_array_matches_rasterio(source, shapes, clip: ClipArray, *, all_touched=False, invert=False, crop=True, pad=False):
    """Same valid-pixel set and values as rasterio.mask.mask(filled=False), aligned by transform.

    Our window may be tighter than rasterio's (boundary ∩ raster vs the boundary's bbox): rasterio must then
    keep nothing outside ours.
    """
    with rasterio.open(source) as src:
        ref, ref_t = rasterio.mask.mask(src, shapes, crop=crop, all_touched=all_touched, invert=invert,
                                        pad=pad, filled=False)
        assert clip.crs == src.crs
    got = clip.data
    assert isinstance(got, np.ma.MaskedArray) and got.shape[0] == ref.shape[0]
    assert (clip.transform.a, clip.transform.e) == (ref_t.a, ref_t.e)
    return assert_aligned_equal(got, clip.transform, ref, ref_t)


def _boundary_and_shapes(raster, vector, field, region):
    src = real(raster)
    bnd = load_boundary(real(vector), region_field=field, region=region)
    with rasterio.open(src) as ds:
        shapes = to_raster_crs(bnd, ds.crs, ds.bounds)
    return src, bnd, shapes


@pytest.mark.realdata
@pytest.mark.parametrize("all_touched", [False, True], ids=["centre", "all_touched"])
@pytest.mark.parametrize("raster,vector,field,region", CASES, ids=IDS)
def test_read_clip_matches_rasterio(raster, vector, field, region, all_touched):
    src, bnd, shapes = _boundary_and_shapes(raster, vector, field, region)
    clip = read_clip(src, bnd, all_touched=all_touched)
    kept = assert_array_matches_rasterio(src, shapes, clip, all_touched=all_touched)
    assert kept == clip.valid_pixels > 0


@pytest.mark.realdata
@pytest.mark.parametrize("raster,vector,field,region", INVERT_CASES, ids=_ids(INVERT_CASES))
def test_read_clip_invert_matches_rasterio(raster, vector, field, region):
    src, bnd, shapes = _boundary_and_shapes(raster, vector, field, region)
    clip = read_clip(src, bnd, invert=True)
    with rasterio.open(src) as ds:
        assert clip.data.shape == (ds.count, ds.height, ds.width) and clip.transform == ds.transform
    assert_array_matches_rasterio(src, shapes, clip, invert=True, crop=False)


@pytest.mark.realdata
@pytest.mark.parametrize("raster,vector,field,region", CASES[:6], ids=IDS[:6])
def test_read_clip_no_crop_matches_rasterio(raster, vector, field, region):
    src, bnd, shapes = _boundary_and_shapes(raster, vector, field, region)
    clip = read_clip(src, bnd, crop=False)
    assert_array_matches_rasterio(src, shapes, clip, crop=False)


@pytest.mark.realdata
@pytest.mark.parametrize("raster,vector,field,region", PAD_CASES, ids=_ids(PAD_CASES))
def test_read_clip_pad_matches_rasterio(raster, vector, field, region):
    src, bnd, shapes = _boundary_and_shapes(raster, vector, field, region)
    clip = read_clip(src, bnd, pad=True, all_touched=True)
    assert_array_matches_rasterio(src, shapes, clip, pad=True, all_touched=True)


@pytest.mark.realdata
@pytest.mark.parametrize(
    "raster,vector,field,region,options",
    [
        ("landsat7_everest_b4_utm45n.tif", "naturalearth_lowres.shp", "name", "Nepal", {}),  # internal mask
        ("landsat7_bahamas_rgb_utm18n.tif", "naturalearth_lowres.shp", "name", "Bahamas", {"all_touched": True}),
        ("sentinel1_pugetsound_float_nan_utm10n.tif", "naturalearth_lowres.shp", "name", "United States of America", {}),
        ("aster_dem_exploradores_utm18s.tif", "rgi60_exploradores_glaciers.gpkg", None, None, {"invert": True}),
        ("landsat8_iguazu_b2_utm21n.tif", "iguazu_landcover_training.geojson", None, None, {"pad": True}),
    ],
    ids=["everest-mask", "bahamas-rgb", "pugetsound-nan", "exploradores-invert", "iguazu-pad"],
)
def test_read_clip_equals_the_written_cog(tmp_path, raster, vector, field, region, options):
    """The array is what the COG holds when read back masked: same grid, mask, values and valid count."""
    src, bnd, _ = _boundary_and_shapes(raster, vector, field, region)
    clip = read_clip(src, bnd, **options)
    out = str(tmp_path / "clip.tif")
    result = run_clip(src, bnd, ClipOptions(**options), output=out)
    assert result.record.ok, result.record.error
    with rasterio.open(out) as o:
        cog = o.read(masked=True)
        assert o.transform == clip.transform and o.crs == clip.crs
        assert o.nodata == clip.profile["nodata"] or (np.isnan(o.nodata) and np.isnan(clip.profile["nodata"]))
    np.testing.assert_array_equal(np.ma.getmaskarray(cog), np.ma.getmaskarray(clip.data))
    np.testing.assert_array_equal(cog.filled(0), clip.data.filled(0))
    assert result.record.valid_pixels == clip.valid_pixels


@pytest.mark.realdata
def test_profile_writes_a_geotiff(tmp_path):
    src, bnd, _ = _boundary_and_shapes("landsat7_everest_b4_utm45n.tif", "naturalearth_lowres.shp", "name", "Nepal")
    clip = read_clip(src, bnd)
    assert clip.profile["nodata"] is None  # uint8 with no nodata: validity is a mask
    path = tmp_path / "nb.tif"
    with rasterio.open(path, "w", **clip.profile) as dst:
        dst.write(clip.data.filled(0))
        dst.write_mask(~clip.data.mask.any(axis=0))
    with rasterio.open(path) as ds:
        back = ds.read(masked=True)
        assert ds.transform == clip.transform and ds.crs == clip.crs
    np.testing.assert_array_equal(back.mask, clip.data.mask)
    np.testing.assert_array_equal(back.compressed(), clip.data.compressed())


# --- synthetic: errors and the memory limit --------------------------------------------------------------------
def _utm(*geoms):
    return Boundary.from_geometries(list(geoms), "EPSG:32618", source="synthetic")


def test_too_large_is_refused_before_reading(make_raster):
    src = make_raster(width=600, height=500, count=2, dtype="uint16", tiled=True)
    bnd = _utm(box(X0, Y0 - 500 * RES, X0 + 600 * RES, Y0))
    need = 600 * 500 * 2 * 2 + 600 * 500 * 2
    with pytest.raises(OutputTooLargeError) as err:
        read_clip(src, bnd, max_bytes=need - 1)
    msg = str(err.value)
    assert "600x500x2 uint16" in msg and "MiB" in msg and "run_clip" in msg
    assert err.value.permanent
    clip = read_clip(src, bnd, max_bytes=need)  # exactly at the limit fits
    assert clip.data.shape == (2, 500, 600)


def test_chunked_fill_equals_one_read(make_raster):
    """Chunks of 512 over a 1300x1100 window assemble the same array as rasterio.mask in one read."""
    src = make_raster(width=1300, height=1100, dtype="int16", nodata=-1, tiled=True)
    poly = box(X0 + 17 * RES + 3, Y0 - 1090 * RES, X0 + 1250 * RES, Y0 - 5 * RES - 7).buffer(-2000, quad_segs=3)
    clip = read_clip(src, _utm(poly), chunk_size=512)
    assert clip.data.dtype == np.int16 and clip.data.fill_value == -1
    assert_array_matches_rasterio(src, [poly], clip)
    assert in_memory_bytes.__doc__


def test_errors_are_typed(make_raster, tmp_path):
    src = make_raster()
    with pytest.raises(NoOverlapError):
        read_clip(src, _utm(box(0, 0, 10, 10)))
    with pytest.raises(NoOverlapError, match="selects no pixel"):
        read_clip(src, _utm(box(X0 + 301, Y0 - 299, X0 + 309, Y0 - 291)))
    with pytest.raises(InvalidOptionsError):
        read_clip(src, _utm(box(X0, Y0 - 300, X0 + 300, Y0)), crop=False, pad=True)
    with pytest.raises(RasterReadError):
        read_clip(str(tmp_path / "missing.tif"), _utm(box(X0, Y0 - 300, X0 + 300, Y0)))


def test_tiny_polygon_with_all_touched(make_raster):
    src = make_raster()
    clip = read_clip(src, _utm(box(X0 + 301, Y0 - 299, X0 + 309, Y0 - 291)), all_touched=True)
    assert clip.data.shape == (1, 1, 1) and clip.valid_pixels == 1
    with rasterio.open(src) as ds:
        assert clip.data[0, 0, 0] == ds.read(1)[9, 10]
