"""Every real raster × each real boundary that overlaps it, against rasterio.mask.mask(crop=True)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import MultiPolygon, Polygon

from sceneclip.tools.vectors import load_boundary
from sceneclip.core.plan import ClipOptions
from sceneclip.core.clip import run_clip
from sceneclip.core.geometry import Boundary, to_raster_crs

from .conftest import assert_matches_reference, real

pytestmark = pytest.mark.realdata

NE = "naturalearth_lowres.shp"
CASES = [
    ("landsat7_bahamas_rgb_utm18n.tif", NE, "name", "Bahamas"),
    ("landsat7_everest_b4_utm45n.tif", NE, "name", "Nepal"),
    ("landsat7_everest_b4_utm45n.tif", NE, "name", "China"),
    ("landsat7_everest_b4_utm45n.tif", "rgi60_everest_glaciers.gpkg", None, None),
    ("aster_dem_exploradores_utm18s.tif", NE, "name", "Chile"),
    ("aster_dem_exploradores_utm18s.tif", "rgi60_exploradores_glaciers.gpkg", None, None),
    ("landsat_rmnp_rgb_wgs84.tif", "rmnp_boundary.geojson", None, None),
    ("landsat_rmnp_rgb_wgs84.tif", "colorado_counties.geojson", "name", "Larimer"),
    ("landsat_rmnp_rgb_wgs84.tif", "colorado_counties.geojson", "name", "Grand"),
    ("landsat_rmnp_rgb_wgs84.tif", "colorado_counties.geojson", "name", "Boulder"),
    ("landsat_rmnp_rgb_wgs84.tif", "colorado_counties.geojson", "name", "Jackson"),
    ("terrain_rmnp_dem_wgs84.tif", "rmnp_boundary.geojson", None, None),
    ("terrain_rmnp_dem_wgs84.tif", "colorado_counties.geojson", "name", "Boulder"),
    ("landsat8_iguazu_b2_utm21n.tif", NE, "name", "Brazil"),
    ("landsat8_iguazu_b2_utm21n.tif", NE, "name", "Paraguay"),
    ("landsat8_iguazu_b2_utm21n.tif", NE, "name", "Argentina"),
    ("landsat8_iguazu_b2_utm21n.tif", "iguazu_landcover_training.geojson", None, None),
    ("sentinel2_libya_b09_utm34n.tif", NE, "name", "Libya"),
    ("sentinel1_pugetsound_float_nan_utm10n.tif", NE, "name", "United States of America"),
]


@pytest.mark.parametrize("all_touched", [False, True], ids=["centre", "all_touched"])
@pytest.mark.parametrize("raster,vector,field,region", CASES, ids=[f"{c[0][:20]}-{c[3] or c[1][:12]}" for c in CASES])
def test_real_clip_matches_rasterio_mask(tmp_path, raster, vector, field, region, all_touched):
    src = real(raster)
    bnd = load_boundary(real(vector), region_field=field, region=region)
    out = str(tmp_path / "clip.tif")
    result = run_clip(src, bnd, ClipOptions(all_touched=all_touched), output=out)
    rec = result.record
    assert rec.status == "ok", rec.error
    assert all(v for k, v in rec.checks.items() if isinstance(v, bool)), rec.checks

    with rasterio.open(src) as ds:
        shapes = to_raster_crs(bnd, ds.crs, ds.bounds)
        src_meta = (ds.crs, ds.count, ds.dtypes, ds.colorinterp, ds.descriptions, ds.nodata, ds.tags())
    kept = assert_matches_reference(src, shapes, out, all_touched=all_touched)
    assert kept == rec.valid_pixels > 0

    is_cog, errors, _ = cog_validate(out, quiet=True)
    assert is_cog and not errors
    with rasterio.open(out) as o:
        crs, count, dtypes, colorinterp, descriptions, nodata, tags = src_meta
        assert o.crs == crs and o.count == count and o.dtypes == dtypes
        assert o.colorinterp == colorinterp and o.descriptions == descriptions
        assert o.block_shapes[0] == (512, 512) or (o.width <= 512 and o.height <= 512)
        assert o.profile["compress"] == "deflate"
        if tags.get("AREA_OR_POINT"):
            assert o.tags().get("AREA_OR_POINT") == tags["AREA_OR_POINT"]
        if nodata is None and np.dtype(dtypes[0]).kind in "iu":
            # uint scenes without nodata (Everest, Iguazu's 0 fill): an internal mask, never a fake -9999.
            assert o.nodata is None and rasterio.enums.MaskFlags.per_dataset in o.mask_flag_enums[0]
        elif nodata is not None:
            assert o.nodata == nodata or (np.isnan(o.nodata) and np.isnan(nodata))


def test_iguazu_zero_fill_stays_real_data(tmp_path):
    """uint16 with no nodata but 0 fill: zeros inside the boundary are data (rasterio keeps them too)."""
    src = real("landsat8_iguazu_b2_utm21n.tif")
    bnd = load_boundary(real(NE), region_field="name", region="Paraguay")
    out = str(tmp_path / "py.tif")
    rec = run_clip(src, bnd, output=out).record
    assert rec.ok and rec.mask == "internal" and rec.nodata is None
    with rasterio.open(out) as o:
        data = o.read(1, masked=True)
    assert (data.compressed() == 0).sum() > 0, "zero-valued pixels inside the boundary must be kept as data"


def test_invalid_glacier_polygons_are_repaired():
    """18 of 47 Exploradores outlines self-intersect: repair keeps their area instead of even-odd holes."""
    import geopandas as gpd

    raw = gpd.read_file(real("rgi60_exploradores_glaciers.gpkg"))
    assert (~raw.geometry.is_valid).sum() == 18
    bnd = load_boundary(real("rgi60_exploradores_glaciers.gpkg"))
    assert all(g.is_valid for g in bnd.geometries)
    # Repair keeps the outlines' area (an even-odd fill of the self-intersecting rings would lose some).
    repaired_area = shapely.union_all([shapely.make_valid(g) for g in raw.geometry]).area
    assert abs(shapely.union_all(list(bnd.geometries)).area - repaired_area) < 1e-9 * repaired_area + 1e-12
    with rasterio.open(real("aster_dem_exploradores_utm18s.tif")) as ds:
        shapes = to_raster_crs(bnd, ds.crs, ds.bounds)
    assert all(s.is_valid and not s.is_empty for s in shapes)
    assert sum(len(shapely.get_parts(s)) for s in shapes) >= 22


def test_reprojection_matches_pyproj_with_densification():
    """Our GDAL/PROJ path agrees with geopandas.to_crs (pyproj) on real boundaries to well under a pixel."""
    import geopandas as gpd

    frame = gpd.read_file(real("rmnp_boundary.geojson"))
    bnd = Boundary.from_geometries(list(frame.geometry), frame.crs.to_wkt())
    with rasterio.open(real("landsat7_everest_b4_utm45n.tif")) as ds:
        utm = ds.crs
    # Use the RMNP boundary in a UTM zone 13 CRS: the raster bounds are in that CRS (synthetic footprint).
    target = rasterio.crs.CRS.from_epsg(32613)
    ref = frame.to_crs(target.to_wkt()).geometry.union_all()
    x0, y0, x1, y1 = ref.bounds
    ours = shapely.union_all(to_raster_crs(bnd, target, (x0 - 1000, y0 - 1000, x1 + 1000, y1 + 1000)))
    assert ours.symmetric_difference(ref).area / ref.area < 1e-4
    assert utm is not None


def _aleutian_boundaries():
    west = Polygon([(178.3, 51.0), (180.0, 51.0), (180.0, 52.3), (178.3, 52.3)])
    east = Polygon([(-180.0, 51.0), (-179.2, 51.0), (-179.2, 52.3), (-180.0, 52.3)])
    split = Boundary.from_geometries([MultiPolygon([west, east])], "EPSG:4326", source="split-at-180")
    wrapped = Boundary.from_geometries([Polygon([(178.3, 51.0), (180.8, 51.0), (180.8, 52.3), (178.3, 52.3)])],
                                       "EPSG:4326", source="past-180")
    return split, wrapped


@pytest.mark.parametrize("which", [0, 1], ids=["split-at-180", "longitudes-past-180"])
def test_antimeridian_scene(tmp_path, which):
    src = real("landsat_aleutians_antimeridian_utm60n.tif")
    bnd = _aleutian_boundaries()[which]
    out = str(tmp_path / "aleut.tif")
    rec = run_clip(src, bnd, output=out).record
    assert rec.ok, rec.error
    with rasterio.open(src) as ds:
        shapes = to_raster_crs(bnd, ds.crs, ds.bounds)
        x180, _ = rasterio.warp.transform("EPSG:4326", ds.crs, [180.0], [51.6])
    assert_matches_reference(src, shapes, out)
    left, _, right, _ = rec.bounds
    # The clip spans the antimeridian: well on both sides of 180°, not a sliver of one side.
    assert left < x180[0] - 20000 and right > x180[0] + 20000


def test_antimeridian_two_encodings_agree(tmp_path):
    src = real("landsat_aleutians_antimeridian_utm60n.tif")
    split, wrapped = _aleutian_boundaries()
    a = run_clip(src, split).record
    b = run_clip(src, wrapped).record
    assert a.ok and b.ok
    assert a.width == b.width and a.height == b.height
    assert abs(a.valid_pixels - b.valid_pixels) <= 0.001 * b.valid_pixels
