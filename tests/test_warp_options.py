"""Target-grid options end to end: region grids shared across scenes, the CLI flags, categorical refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box

from sceneclip.core.clip import run_clip
from sceneclip.core.geometry import Boundary
from sceneclip.core.grid import TargetGrid
from sceneclip.core.plan import ClipOptions
from sceneclip.errors import InvalidOptionsError

from .conftest import real

SCENECLIP = str(Path(sys.executable).with_name("sceneclip"))
ROW_078 = "landsat8_iguazu_b2_utm21n.tif"
ROW_077 = "landsat8_iguazu_224077_b2_utm21n.tif"
# A region inside the overlap of the two Iguazu rows (lon -54.84…-54.47, lat -25.41…-25.08).
OVERLAP = box(-54.80, -25.38, -54.70, -25.30)


def test_two_scenes_of_one_region_land_on_the_region_grid(tmp_path):
    """The region's grid wins over the options, and both scenes' clips share its origin lattice and resolution."""
    grid = TargetGrid.parse("EPSG:32722,20")
    region = Boundary.from_geometries([OVERLAP], "EPSG:4326", region="overlap", grid=grid)
    transforms = []
    for n, scene in enumerate((ROW_078, ROW_077)):
        out = str(tmp_path / f"{n}.tif")
        rec = run_clip(real(scene), region, ClipOptions(dst_crs="EPSG:4326", resolution=0.001), output=out).record
        assert rec.status == "ok", rec.error
        assert rec.checks["target_aligned"] and rec.checks["grid_aligned"]
        assert cog_validate(out, quiet=True)[0]
        with rasterio.open(out) as ds:
            assert ds.crs.to_epsg() == 32722
            transforms.append(ds.transform)
    a, b = transforms
    assert (a.a, a.e) == (b.a, b.e) == (20.0, -20.0)
    assert (a.c % 20, a.f % 20) == (0.0, 0.0) and (b.c % 20, b.f % 20) == (0.0, 0.0)
    assert a.c == b.c and a.f == b.f  # the same region inside both scenes: the same pixels


def test_region_grid_changes_the_boundary_identity():
    plain = Boundary.from_geometries([OVERLAP], "EPSG:4326")
    gridded = Boundary.from_geometries([OVERLAP], "EPSG:4326", grid=TargetGrid.parse("EPSG:32722,20"))
    other = Boundary.from_geometries([OVERLAP], "EPSG:4326", grid=TargetGrid.parse("EPSG:32722,30"))
    assert len({plain.content_hash, gridded.content_hash, other.content_hash}) == 3


def test_categorical_sources_refuse_interpolating_resampling_unless_forced(tmp_path):
    src = str(tmp_path / "classes.tif")
    with rasterio.open(src, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32618",
                       transform=rasterio.transform.from_origin(500000, 4000000, 30, 30)) as ds:
        ds.write((np.indices((64, 64))[0] // 16 + 1).astype("uint8")[np.newaxis])
        ds.write_colormap(1, {1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255), 4: (9, 9, 9, 255)})
    region = Boundary.from_geometries([box(500300, 3998500, 501500, 3999700)], "EPSG:32618")
    refused = run_clip(src, region, ClipOptions(dst_crs="EPSG:32617", resolution=30, resampling="bilinear")).record
    assert refused.status == "failed" and refused.error_type == "ResamplingRefusedError"
    assert "colour table" in refused.error and "--force-resampling" in refused.error and not refused.transient
    for opts in (ClipOptions(dst_crs="EPSG:32617", resolution=30, resampling="mode"),
                 ClipOptions(dst_crs="EPSG:32617", resolution=30, resampling="bilinear", force_resampling=True)):
        assert run_clip(src, region, opts, output=str(tmp_path / "ok.tif")).record.status == "ok"


def test_grid_options_that_keep_the_source_extent_are_refused():
    for bad in (dict(invert=True), dict(crop=False), dict(pad=True)):
        with pytest.raises(InvalidOptionsError, match="target grid"):
            ClipOptions(dst_crs="EPSG:4326", **bad)
    with pytest.raises(InvalidOptionsError, match="resampling"):
        ClipOptions(resampling="cubicspline")


def test_cli_dst_crs_res_twice_and_tap(tmp_path):
    out = tmp_path / "warped.tif"
    res = subprocess.run(
        [SCENECLIP, "clip", real("landsat8_iguazu_b2_utm21n.tif"), real("iguazu_landcover_training.geojson"), str(out),
         "--dst-crs", "EPSG:32722", "--res", "30", "--res", "20", "--tap", "--resampling", "bilinear", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32722 and ds.res == (30.0, 20.0)
        assert ds.transform.c % 30 == 0 and ds.transform.f % 20 == 0
    bad = subprocess.run([SCENECLIP, "clip", real("landsat8_iguazu_b2_utm21n.tif"),
                          real("iguazu_landcover_training.geojson"), str(tmp_path / "x.tif"), "--res", "1", "--res", "2",
                          "--res", "3"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "--res takes one value" in bad.stderr and not (tmp_path / "x.tif").exists()


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_warped_pixels_do_not_depend_on_the_chunk_layout(tmp_path, resampling):
    """Exact transform and one kernel scale for the grid: 512² and 1024² chunks give the same valid set and
    the same values (nearest: identical; bilinear: within the 1 DN of rounding a weight that differs at 1e-6)."""
    region = Boundary.from_geometries([OVERLAP], "EPSG:4326")
    arrays = []
    for size in (512, 1024):
        out = str(tmp_path / f"{size}.tif")
        opts = ClipOptions(dst_crs="EPSG:32722", resolution=15, target_aligned=True, resampling=resampling,
                           chunk_size=size)
        rec = run_clip(real(ROW_078), region, opts, output=out).record
        assert rec.status == "ok", rec.error
        with rasterio.open(out) as ds:
            assert size == 1024 or ds.width > 512  # more than one chunk at 512
            arrays.append(ds.read(masked=True))
    np.testing.assert_array_equal(arrays[0].mask, arrays[1].mask)
    diff = np.abs(arrays[0].filled(0).astype(int) - arrays[1].filled(0).astype(int))
    assert diff.max() <= (0 if resampling == "nearest" else 1)
    assert np.count_nonzero(diff) <= 1e-4 * diff.size


def _regions_file(tmp_path, grid_fields: bool) -> str:
    """Two real regions of the Iguazu overlap (training polygons' hull and a box), optionally with grid fields."""
    import geopandas as gpd

    training = gpd.read_file(real("iguazu_landcover_training.geojson"))
    rows = {"region": ["hull", "box"], "geometry": [training.union_all().convex_hull, OVERLAP]}
    if grid_fields:
        rows.update(grid_crs=["EPSG:32721", None], grid_res=["10", None])
    path = str(tmp_path / "regions.gpkg")
    gpd.GeoDataFrame(rows, crs="EPSG:4326").to_file(path, driver="GPKG")
    return path


def test_store_default_grid_and_per_feature_override(tmp_path):
    from click.testing import CliRunner

    from sceneclip.aws.store import BoundaryStore
    from sceneclip.cli.boundaries import boundaries

    plain = str(tmp_path / "plain")
    gridded = str(tmp_path / "gridded")
    vector = _regions_file(tmp_path, grid_fields=True)
    assert CliRunner().invoke(boundaries, ["build", vector, "--region-field", "region", "--out", plain]).exit_code == 0
    res = CliRunner().invoke(boundaries, ["build", vector, "--region-field", "region", "--out", gridded,
                                          "--grid", "EPSG:32722,20"])
    assert res.exit_code == 0, res.output
    store = BoundaryStore.load(gridded)
    assert store.grid("box").spec == "EPSG:32722,20.0,20.0"  # the store's default
    assert store.grid("hull").spec == "EPSG:32721,10.0,10.0"  # the feature's own fields win
    assert BoundaryStore.load(plain).grid("box") is None and BoundaryStore.load(plain).grid("hull").crs.to_epsg() == 32721
    assert store.version != BoundaryStore.load(plain).version  # a grid changes what clips produce
    out = str(tmp_path / "box.tif")
    rec = run_clip(real(ROW_077), store.boundary("box"), ClipOptions(), output=out).record  # no grid options at all
    assert rec.status == "ok", rec.error
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32722 and ds.res == (20.0, 20.0) and ds.transform.c % 20 == 0
    bad = CliRunner().invoke(boundaries, ["build", vector, "--region-field", "region", "--out", plain, "--grid", "EPSG:4326"])
    assert bad.exit_code == 1 and "expected CRS,RES" in bad.output


def test_cli_vector_boundary_with_grid_fields_clips_onto_its_grid(tmp_path):
    out = tmp_path / "hull.tif"
    res = subprocess.run([SCENECLIP, "clip", real(ROW_078), _regions_file(tmp_path, grid_fields=True), str(out),
                          "--region-field", "region", "--region", "hull"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32721 and ds.res == (10.0, 10.0) and ds.transform.c % 10 == 0


def test_read_clip_refuses_a_target_grid_instead_of_ignoring_it():
    from sceneclip.core.read import read_clip

    region = Boundary.from_geometries([OVERLAP], "EPSG:4326", grid=TargetGrid.parse("EPSG:32722,20"))
    with pytest.raises(InvalidOptionsError, match="warped clip"):
        read_clip(real(ROW_078), region)


def test_a_source_without_crs_is_refused_with_the_reason(tmp_path):
    src = str(tmp_path / "nocrs.tif")
    with rasterio.open(src, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                       transform=rasterio.transform.from_origin(0, 8, 1, 1)) as ds:
        ds.write(np.ones((1, 8, 8), "uint8"))
    rec = run_clip(src, Boundary.from_geometries([box(1, 1, 5, 5)], "EPSG:32618"), ClipOptions(dst_crs="EPSG:4326")).record
    assert rec.status == "failed" and rec.error_type == "MissingCRSError" and "no CRS" in rec.error
