"""The plain-GeoJSON reader gives the very Boundary geopandas gives, and declines everything else.

geopandas (pyogrio, GDAL's GeoJSON driver) is the reference: on the real boundary files, and on synthetic
files for each CRS spelling, the geometries, CRS and content hash must be equal. Files outside the plain case
must come back None so that geopandas reads them (and explains what is wrong with them).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import shapely
from shapely.geometry import box, mapping

from sceneclip.tools.vectors import boundary_from_frame, load_boundary, plain_geojson_boundary, read_vector

from .conftest import real

UTM_BOX = box(500300, 3998500, 502000, 3999800)


def _write(path, features, crs=None):
    doc = {"type": "FeatureCollection", "features": features}
    if crs is not None:
        doc["crs"] = crs
    path.write_text(json.dumps(doc))
    return str(path)


def _feature(geom, **props):
    return {"type": "Feature", "properties": props, "geometry": None if geom is None else mapping(geom)}


def _assert_same_as_geopandas(path):
    plain = plain_geojson_boundary(path)
    assert plain is not None, path
    reference = boundary_from_frame(read_vector(path), path)
    assert plain.content_hash == reference.content_hash and plain.crs == reference.crs
    assert [shapely.to_wkb(g) for g in plain.geometries] == [shapely.to_wkb(g) for g in reference.geometries]
    assert plain.grid is None and reference.grid is None and plain.source == reference.source


@pytest.mark.parametrize("name", ["colorado_counties.geojson", "rmnp_boundary.geojson",
                                  "iguazu_landcover_training.geojson"])
def test_real_files_read_as_geopandas_reads_them(name):
    _assert_same_as_geopandas(real(name))


@pytest.mark.parametrize("crs", [
    {"type": "name", "properties": {"name": "EPSG:32618"}},
    {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32618"}},
])
def test_epsg_named_crs_and_null_and_overlapping_geometries(tmp_path, crs):
    features = [_feature(UTM_BOX, name="a"), _feature(None, name="b"),
                _feature(box(501000, 3999000, 503000, 4000500), name="c")]  # dissolved with a
    _assert_same_as_geopandas(_write(tmp_path / "b.geojson", features, crs))


def test_no_crs_member_is_wgs84_as_rfc7946_says(tmp_path):
    _assert_same_as_geopandas(_write(tmp_path / "w.geojson", [_feature(box(-105.8, 40.2, -105.5, 40.5))]))


@pytest.mark.parametrize("case", ["link-crs", "unknown-name", "grid-fields", "bad-json", "not-collection",
                                  "bad-geometry", "shapefile-suffix"])
def test_anything_else_is_left_to_geopandas(tmp_path, case):
    geom = [_feature(UTM_BOX)]
    path = tmp_path / "x.geojson"
    if case == "link-crs":
        _write(path, geom, {"type": "link", "properties": {"href": "http://example.test/crs"}})
    elif case == "unknown-name":
        _write(path, geom, {"type": "name", "properties": {"name": "ESRI:102003"}})
    elif case == "grid-fields":
        _write(path, [_feature(UTM_BOX, grid_crs="EPSG:32618", grid_res=30)],
               {"type": "name", "properties": {"name": "EPSG:32618"}})
    elif case == "bad-json":
        path.write_text('{"type": "FeatureCollection", "features": [')
    elif case == "not-collection":
        path.write_text(json.dumps(_feature(UTM_BOX)))
    elif case == "bad-geometry":
        _write(path, [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": "x"}}])
    else:
        path = tmp_path / "x.shp"
        path.write_text("")
    assert plain_geojson_boundary(str(path)) is None


def test_grid_fields_still_reach_the_boundary_through_geopandas(tmp_path):
    path = _write(tmp_path / "g.geojson", [_feature(UTM_BOX, grid_crs="EPSG:32618", grid_res=30)],
                  {"type": "name", "properties": {"name": "EPSG:32618"}})
    assert load_boundary(path).grid is not None


def test_sceneclip_clip_on_a_geojson_never_imports_geopandas(make_raster, tmp_path):
    src = make_raster(width=100, height=80)
    bnd = _write(tmp_path / "b.geojson", [_feature(UTM_BOX)], {"type": "name", "properties": {"name": "EPSG:32618"}})
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from sceneclip.cli.main import main\n"
            f"res = CliRunner().invoke(main, ['clip', {src!r}, {bnd!r}, {str(tmp_path / 'o.tif')!r}])\n"
            "print(res.exit_code, 'geopandas' in sys.modules, 'pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["0", "False", "False"], out.stdout + out.stderr
    assert (tmp_path / "o.tif").exists()
