"""Several scenes, one clip: the two overlapping real Landsat 8 rows of one date, against gdalwarp."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box

from sceneclip.core.clip import run_clip
from sceneclip.core.geometry import Boundary
from sceneclip.core.plan import ClipOptions

from .conftest import real
from .warp_reference import dst_boundary_mask

ROW_078 = "landsat8_iguazu_b2_utm21n.tif"  # path/row 224/078
ROW_077 = "landsat8_iguazu_224077_b2_utm21n.tif"  # 224/077, north of it
# Spans both rows: its north part only in 077, its south part only in 078, the middle in both.
SPAN = Boundary.from_geometries([box(-54.78, -25.52, -54.62, -25.02)], "EPSG:4326", source="span")


def _gdalwarp(sources, out, bounds, res, extra=()):
    exe = shutil.which("gdalwarp")
    assert exe, "gdalwarp is missing: run `make gdal` (Debian gdal-bin)"
    cmd = [exe, "-q", "-overwrite", "-t_srs", "EPSG:32621", "-te", *map(repr, bounds), "-tr", repr(res), repr(res), "-r", "near", "-et", "0",
           "-srcnodata", "0", "-dstalpha", *extra, *sources, out]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    with rasterio.open(out) as ds:
        return ds.read(1), ds.read(2) > 0


@pytest.mark.parametrize("order", [(ROW_078, ROW_077), (ROW_077, ROW_078)])
def test_mosaic_equals_gdalwarp_with_later_inputs_winning(tmp_path, order):
    out = str(tmp_path / "mosaic.tif")
    rec = run_clip([real(s) for s in order], SPAN, ClipOptions(src_nodata=0), output=out).record
    assert rec.status == "ok", rec.error
    assert rec.checks["sources_used"] == [real(s) for s in order]
    assert cog_validate(out, quiet=True)[0]
    with rasterio.open(out) as ds, rasterio.open(real(order[0])) as first:
        ours, valid, t = ds.read(1), ds.read_masks(1) > 0, ds.transform
        # The first source's CRS, pixel size and lattice; nodata declared 0.
        assert ds.crs == first.crs and ds.res == first.res and ds.nodata == 0
        assert ((t.c - first.transform.c) / 30).is_integer() and ((t.f - first.transform.f) / 30).is_integer()
        bounds = tuple(ds.bounds)
    ref, ref_valid = _gdalwarp([real(s) for s in reversed(order)], str(tmp_path / "ref.tif"), bounds, 30.0)
    inside = dst_boundary_mask(SPAN, "EPSG:32621", t, valid.shape)
    np.testing.assert_array_equal(valid, inside & ref_valid)
    np.testing.assert_array_equal(ours[valid], ref[valid])
    # The overlap came from the first source: there, the mosaic equals it alone and differs from the second.
    alone, alone_valid = _gdalwarp([real(order[0])], str(tmp_path / "first.tif"), bounds, 30.0)
    second, second_valid = _gdalwarp([real(order[1])], str(tmp_path / "second.tif"), bounds, 30.0)
    overlap = valid & alone_valid & second_valid
    assert np.count_nonzero(overlap) > 10_000 and np.count_nonzero(valid & ~alone_valid) > 10_000
    np.testing.assert_array_equal(ours[overlap], alone[overlap])
    # (one acquisition, two products: about 40 % of the overlap differs between them)
    assert np.count_nonzero(ours[overlap] != second[overlap]) > 0.2 * np.count_nonzero(overlap)


def test_mosaic_with_one_source_reprojected_first(tmp_path):
    """Sources in different CRSs: 077 first warped to UTM 22S; the mosaic lands on the first source's grid."""
    moved = str(tmp_path / "077_utm22s.tif")
    subprocess.run([shutil.which("gdalwarp"), "-q", "-t_srs", "EPSG:32722", "-tr", "30", "30", "-r", "near",
                    "-srcnodata", "0", "-dstnodata", "0", real(ROW_077), moved], check=True, timeout=120)
    out = str(tmp_path / "mosaic.tif")
    rec = run_clip([real(ROW_078), moved], SPAN, ClipOptions(src_nodata=0), output=out).record
    assert rec.status == "ok", rec.error
    with rasterio.open(out) as ds:
        ours, valid, t, bounds = ds.read(1), ds.read_masks(1) > 0, ds.transform, tuple(ds.bounds)
        assert ds.crs.to_epsg() == 32621
    ref, ref_valid = _gdalwarp([moved, real(ROW_078)], str(tmp_path / "ref.tif"), bounds, 30.0)
    inside = dst_boundary_mask(SPAN, "EPSG:32621", t, valid.shape)
    np.testing.assert_array_equal(valid, inside & ref_valid)
    np.testing.assert_array_equal(ours[valid], ref[valid])


def test_a_source_off_the_region_is_skipped(tmp_path):
    north = Boundary.from_geometries([box(-54.80, -25.05, -54.70, -25.0)], "EPSG:4326")  # 077 only
    rec = run_clip([real(ROW_078), real(ROW_077)], north, ClipOptions(src_nodata=0), output=str(tmp_path / "n.tif")).record
    assert rec.status == "ok", rec.error
    assert rec.checks["sources_used"] == [real(ROW_077)]


def test_cli_several_sources_make_one_mosaic(tmp_path):
    import sys
    from pathlib import Path

    out = tmp_path / "mosaic.tif"
    region = tmp_path / "span.geojson"
    region.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": '
                      '{"type": "Polygon", "coordinates": [[[-54.78, -25.52], [-54.62, -25.52], [-54.62, -25.02], '
                      '[-54.78, -25.02], [-54.78, -25.52]]]}}]}')
    exe = str(Path(sys.executable).with_name("sceneclip"))
    res = subprocess.run([exe, "clip", real(ROW_077), real(ROW_078), str(region), str(out), "--src-nodata", "0", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    import json

    rec = json.loads(res.stdout)
    assert rec["checks"]["sources_used"] == [real(ROW_077), real(ROW_078)] and rec["nodata"] == 0
    with rasterio.open(out) as ds, rasterio.open(real(ROW_077)) as first:
        assert ds.crs == first.crs and ds.res == first.res


def test_src_nodata_on_one_source_keeps_its_grid_and_values(tmp_path):
    """Declared nodata alone: the source's own grid, its values untouched, its zero collar now nodata."""
    out = str(tmp_path / "one.tif")
    rec = run_clip(real(ROW_078), SPAN, ClipOptions(src_nodata=0), output=out).record
    assert rec.status == "ok", rec.error
    with rasterio.open(out) as ds, rasterio.open(real(ROW_078)) as src:
        assert ds.nodata == 0 and ds.crs == src.crs and ds.res == src.res
        col, row = ~src.transform * (ds.transform.c, ds.transform.f)
        assert col.is_integer() and row.is_integer()
        window = rasterio.windows.Window(col, row, ds.width, ds.height)
        got, want = ds.read(1, masked=True), src.read(1, window=window)
        inside = dst_boundary_mask(SPAN, "EPSG:32621", ds.transform, got.shape)
        np.testing.assert_array_equal(~np.ma.getmaskarray(got), inside & (want != 0))
        np.testing.assert_array_equal(got.compressed(), want[~np.ma.getmaskarray(got)])
        assert np.count_nonzero(inside & (want == 0)) > 1000  # the collar was there, and is now nodata


def test_batch_group_by_makes_one_mosaic_per_group_and_region_and_resumes(tmp_path):
    import json
    import shutil as sh

    import geopandas as gpd
    from click.testing import CliRunner

    from sceneclip.cli.batch import batch

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    sh.copy(real(ROW_077), scenes / "LC08_224077_20200518_B2.tif")  # file-name order: 077 first
    sh.copy(real(ROW_078), scenes / "LC08_224078_20200518_B2.tif")
    regions = str(tmp_path / "regions.gpkg")
    gpd.GeoDataFrame({"name": ["span"], "geometry": list(SPAN.geometries)}, crs="EPSG:4326").to_file(regions)
    out = tmp_path / "mosaics"
    args = ["--sources", str(scenes / "*.tif"), "--boundary", regions, "--region-field", "name", "--out", str(out),
            "--group-by", r"_(?P<group>\d{8})_", "--src-nodata", "0", "--no-progress"]
    res = CliRunner().invoke(batch, args)
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (out / "report.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["status"] == "ok"
    assert lines[0]["job"]["sources"] == [str(scenes / "LC08_224078_20200518_B2.tif")]
    direct = str(tmp_path / "direct.tif")
    rec = run_clip([str(scenes / "LC08_224077_20200518_B2.tif"), str(scenes / "LC08_224078_20200518_B2.tif")], SPAN,
                   ClipOptions(src_nodata=0), output=direct).record
    with rasterio.open(out / "span" / "20200518.tif") as a, rasterio.open(direct) as b:
        np.testing.assert_array_equal(a.read(masked=True).filled(0), b.read(masked=True).filled(0))
        assert a.transform == b.transform and rec.valid_pixels == lines[0]["valid_pixels"]
    again = CliRunner().invoke(batch, args)
    assert again.exit_code == 0 and "1 skipped" in again.output
    bad = CliRunner().invoke(batch, [a if a != r"_(?P<group>\d{8})_" else r"\d{8}" for a in args])
    assert bad.exit_code == 1 and "named group" in bad.output
