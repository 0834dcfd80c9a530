"""Clips onto a target grid, on real scenes, against the stated pixel rule and against gdalwarp.

gdalwarp masks with its cutline on the *source* grid, so its valid set differs from our destination-grid rule
along the boundary by up to a pixel: the two agree on the lattice, on the extent within a pixel, on the valid
set to IoU ≥ 0.99 and on the values of pixels away from the boundary.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from sceneclip.core.clip import run_clip
from sceneclip.core.plan import ClipOptions

from .conftest import real
from .warp_reference import (
    WarpCase, common_window, dst_boundary_mask, gdalwarp, interior, interior_boundary, native_scale, read_valid, source_has_data, union_iou,
    write_cutline,
)

pytestmark = pytest.mark.realdata

NE = "naturalearth_lowres.shp"
CASES = [
    WarpCase("landsat7_everest_b4_utm45n.tif", NE, "name", "Nepal", "EPSG:4326", 0.0003),
    WarpCase("landsat8_iguazu_b2_utm21n.tif", NE, "name", "Paraguay", "EPSG:32722", 30.0, shrink=0.3),
    WarpCase("aster_dem_exploradores_utm18s.tif", NE, "name", "Chile", "EPSG:32719", 30.0),
    WarpCase("landsat_aleutians_antimeridian_utm60n.tif", None, None, None, "EPSG:32601", 100.0, shrink=0.35),
    WarpCase("landsat7_bahamas_rgb_utm18n.tif", NE, "name", "Bahamas", "EPSG:4326", 0.003),
]
IDS = [c.id for c in CASES]
GDALWARP = [(c, r) for c in CASES for r in ("nearest", "bilinear", "average")]


def _ours(tmp_path, case: WarpCase, resampling: str, **extra):
    bnd = interior_boundary(case)
    out = str(tmp_path / f"ours-{resampling}.tif")
    opts = ClipOptions(dst_crs=case.dst_crs, resolution=case.res, target_aligned=True, resampling=resampling, **extra)
    rec = run_clip(real(case.raster), bnd, opts, output=out).record
    assert rec.status == "ok", rec.error
    assert all(v for v in rec.checks.values() if isinstance(v, bool)), rec.checks
    assert cog_validate(out, quiet=True)[0]
    return bnd, out, rec


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_valid_pixels_are_the_destination_grid_rule_where_the_source_has_data(tmp_path, case):
    """Valid = geometry_mask of the densified reprojected boundary on the output grid ∧ the source has data."""
    bnd, out, rec = _ours(tmp_path, case, "nearest", simplify_above=10**7)  # the exact rule: no simplification
    _, valid, transform = read_valid(out)
    inside = dst_boundary_mask(bnd, case.dst_crs, transform, valid.shape)
    expected = inside & source_has_data(real(case.raster), case.dst_crs, transform, valid.shape)
    differ = np.count_nonzero(expected != valid)
    assert differ == 0, f"{differ} of {np.count_nonzero(expected)} pixels differ from the stated rule"
    with rasterio.open(out) as ds:
        assert rec.valid_pixels == np.count_nonzero(ds.read_masks(1)) > 0
        assert ds.crs.to_string() == case.dst_crs
        assert (ds.res[0], ds.res[1]) == (case.res, case.res)
        assert ds.transform.c / case.res == pytest.approx(round(ds.transform.c / case.res), abs=1e-6)
        assert ds.transform.f / case.res == pytest.approx(round(ds.transform.f / case.res), abs=1e-6)


@pytest.mark.parametrize(("case", "resampling"), GDALWARP, ids=[f"{c.id}-{r}" for c, r in GDALWARP])
def test_matches_gdalwarp(tmp_path, case, resampling):
    bnd, out, _ = _ours(tmp_path, case, resampling)
    ref = gdalwarp(real(case.raster), write_cutline(bnd, str(tmp_path / "cut.gpkg")), str(tmp_path / "ref.tif"),
                   case, resampling, native_scale(real(case.raster), case.dst_crs, case.res))
    ours, ours_valid, t_o = read_valid(out)
    theirs, their_valid, t_g = read_valid(ref)
    # Same lattice: same pixel size, origins a whole number of pixels apart; extents within one pixel.
    assert (t_o.a, t_o.e) == pytest.approx((t_g.a, t_g.e), rel=1e-12)
    with rasterio.open(out) as a, rasterio.open(ref) as g:
        for ours_edge, their_edge in zip(a.bounds, g.bounds, strict=True):
            assert abs(ours_edge - their_edge) <= case.res * (1 + 1e-6), (a.bounds, g.bounds)
    assert union_iou(ours_valid, t_o, their_valid, t_g) >= 0.99
    so, sg = common_window(t_o, ours_valid.shape, t_g, their_valid.shape)
    both = interior(ours_valid[so] & their_valid[sg], 2)
    assert np.count_nonzero(both) > 100
    a = ours[:, so[0], so[1]][:, both].astype("float64")
    b = theirs[:, sg[0], sg[1]][:, both].astype("float64")
    if resampling == "nearest":
        np.testing.assert_array_equal(a, b)
    elif np.issubdtype(ours.dtype, np.integer):
        assert np.abs(a - b).max() <= 1
    else:
        np.testing.assert_allclose(a, b, rtol=1e-4)
