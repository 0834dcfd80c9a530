"""invert, pad and crop=False on the real scenes × boundaries, against rasterio.mask.mask with the same options."""

from __future__ import annotations

import pytest
import rasterio

from sceneclip.tools.vectors import load_boundary
from sceneclip.core.plan import ClipOptions
from sceneclip.core.clip import run_clip
from sceneclip.core.geometry import to_raster_crs

from .conftest import assert_matches_reference, real

pytestmark = pytest.mark.realdata

NE = "naturalearth_lowres.shp"
# Representative pairs: RGB uint8, uint16 without nodata (internal mask), float DEM with nodata, float with NaN,
# geographic rasters, many-part glacier layers, the tiny Iguazu training polygons and the Argentina sliver.
CASES = [
    ("landsat7_bahamas_rgb_utm18n.tif", NE, "name", "Bahamas"),
    ("landsat7_everest_b4_utm45n.tif", NE, "name", "Nepal"),
    ("landsat7_everest_b4_utm45n.tif", "rgi60_everest_glaciers.gpkg", None, None),
    ("aster_dem_exploradores_utm18s.tif", "rgi60_exploradores_glaciers.gpkg", None, None),
    ("landsat_rmnp_rgb_wgs84.tif", "rmnp_boundary.geojson", None, None),
    ("landsat_rmnp_rgb_wgs84.tif", "colorado_counties.geojson", "name", "Grand"),
    ("terrain_rmnp_dem_wgs84.tif", "colorado_counties.geojson", "name", "Boulder"),
    ("landsat8_iguazu_b2_utm21n.tif", NE, "name", "Paraguay"),
    ("landsat8_iguazu_b2_utm21n.tif", NE, "name", "Argentina"),
    ("landsat8_iguazu_b2_utm21n.tif", "iguazu_landcover_training.geojson", None, None),
    ("sentinel1_pugetsound_float_nan_utm10n.tif", NE, "name", "United States of America"),
]
IDS = [f"{c[0][:20]}-{c[3] or c[1][:12]}" for c in CASES]

# Boundaries that cover the whole scene cannot be inverted (nothing would be kept): a typed error, tested below.
INVERT_CASES = [c for c in CASES if c[3] != "United States of America"]
PAD_CASES = [
    ("landsat8_iguazu_b2_utm21n.tif", "iguazu_landcover_training.geojson", None, None),
    ("landsat8_iguazu_b2_utm21n.tif", NE, "name", "Argentina"),
    ("landsat7_everest_b4_utm45n.tif", "rgi60_everest_glaciers.gpkg", None, None),
    ("aster_dem_exploradores_utm18s.tif", "rgi60_exploradores_glaciers.gpkg", None, None),
    ("landsat_rmnp_rgb_wgs84.tif", "rmnp_boundary.geojson", None, None),
]


def _ids(cases):
    return [f"{c[0][:20]}-{c[3] or c[1][:12]}" for c in cases]


def _clip(tmp_path, raster, vector, field, region, options):
    src = real(raster)
    bnd = load_boundary(real(vector), region_field=field, region=region)
    out = str(tmp_path / "clip.tif")
    rec = run_clip(src, bnd, options, output=out).record
    assert rec.status == "ok", rec.error
    assert all(v for v in rec.checks.values() if isinstance(v, bool)), rec.checks
    with rasterio.open(src) as ds:
        shapes = to_raster_crs(bnd, ds.crs, ds.bounds)
        full = (ds.width, ds.height, tuple(ds.transform))
    return src, shapes, out, rec, full


@pytest.mark.parametrize("all_touched", [False, True], ids=["centre", "all_touched"])
@pytest.mark.parametrize("raster,vector,field,region", INVERT_CASES, ids=_ids(INVERT_CASES))
def test_invert_matches_rasterio(tmp_path, raster, vector, field, region, all_touched):
    src, shapes, out, rec, full = _clip(tmp_path, raster, vector, field, region,
                                        ClipOptions(invert=True, all_touched=all_touched))
    kept = assert_matches_reference(src, shapes, out, invert=True, crop=False, all_touched=all_touched)
    assert kept == rec.valid_pixels > 0
    assert (rec.width, rec.height, tuple(rec.transform)) == (full[0], full[1], full[2][:6]), "invert keeps the raster's extent"


@pytest.mark.parametrize("raster,vector,field,region", CASES, ids=IDS)
def test_no_crop_matches_rasterio(tmp_path, raster, vector, field, region):
    src, shapes, out, rec, full = _clip(tmp_path, raster, vector, field, region, ClipOptions(crop=False))
    kept = assert_matches_reference(src, shapes, out, crop=False)
    assert kept == rec.valid_pixels > 0
    assert (rec.width, rec.height, tuple(rec.transform)) == (full[0], full[1], full[2][:6]), "crop=False keeps the raster's extent"


@pytest.mark.parametrize("all_touched", [False, True], ids=["centre", "all_touched"])
@pytest.mark.parametrize("raster,vector,field,region", PAD_CASES, ids=_ids(PAD_CASES))
def test_pad_matches_rasterio(tmp_path, raster, vector, field, region, all_touched):
    src, shapes, out, rec, _ = _clip(tmp_path, raster, vector, field, region,
                                     ClipOptions(pad=True, all_touched=all_touched))
    kept = assert_matches_reference(src, shapes, out, crop=True, pad=True, all_touched=all_touched)
    assert kept == rec.valid_pixels > 0
    # pad widens the window by half a pixel each side, so it is never smaller than the unpadded one.
    bnd = load_boundary(real(vector), region_field=field, region=region)
    plain = run_clip(src, bnd, ClipOptions(all_touched=all_touched)).record
    assert plain.ok
    assert rec.width >= plain.width and rec.height >= plain.height
    assert rec.bounds[0] <= plain.bounds[0] and rec.bounds[3] >= plain.bounds[3]
    assert rec.valid_pixels == plain.valid_pixels, "pad changes the window, never which pixels are kept"


def test_invert_of_a_boundary_covering_the_scene_is_a_typed_failure(tmp_path):
    """Inverting a boundary that covers every pixel keeps nothing: a NoOverlapError record, never an empty file."""
    src = real("sentinel1_pugetsound_float_nan_utm10n.tif")
    bnd = load_boundary(real(NE), region_field="name", region="United States of America")
    out = tmp_path / "none.tif"
    rec = run_clip(src, bnd, ClipOptions(invert=True), output=str(out)).record
    assert rec.status == "failed" and rec.error_type == "NoOverlapError"
    assert not out.exists()
