"""Batch clipping: real scenes × overlapping real boundaries with 1 and 2 workers, resume, failures, reuse, CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

from sceneclip.cli.batch import batch
from sceneclip.tools import batch_boundaries
from sceneclip.tools.batch import run_batch
from sceneclip.tools.batch_jobs import BatchJob, jobs_from_manifest, jobs_from_sources, safe_name
from sceneclip.tools.vectors import load_boundary
from sceneclip.core.plan import ClipOptions
from sceneclip.core.clip import run_clip
from sceneclip.errors import ConfigError
from sceneclip.core.geometry import to_raster_crs

from .conftest import REAL_DATA, assert_matches_reference, real
from .test_stac import validate_item_dict

NE = "naturalearth_lowres.shp"
# What "every scene × every region it overlaps" must find in the real data (Natural Earth countries).
EXPECTED_NE_PAIRS = {
    ("aster_dem_exploradores_utm18s", "Chile"),
    ("landsat7_bahamas_rgb_utm18n", "Bahamas"),
    ("landsat7_everest_b4_utm45n", "China"),
    ("landsat7_everest_b4_utm45n", "Nepal"),
    ("landsat8_iguazu_b2_utm21n", "Argentina"),
    ("landsat8_iguazu_b2_utm21n", "Brazil"),
    ("landsat8_iguazu_b2_utm21n", "Paraguay"),
    ("landsat_rmnp_rgb_wgs84", "United States of America"),
    ("sentinel1_pugetsound_float_nan_utm10n", "United States of America"),
    ("sentinel2_libya_b09_utm34n", "Libya"),
    ("terrain_rmnp_dem_wgs84", "United States of America"),
}


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_report(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _fresh_worker_caches():
    """workers=1 runs in this process: start each test with empty caches and counters."""
    for cache in (batch_boundaries._WORKER_BOUNDARY_CACHE, batch_boundaries._LOADED_BOUNDARIES, batch_boundaries._VECTOR_CACHE):
        cache.clear()
    batch_boundaries._WORKER_STATS.update(reprojections=0, cache_hits=0)
    yield


# The real rasters of tests/data/real, listed so a file added for another test does not change this batch.
BATCH_SCENES = (
    "aster_dem_exploradores_utm18s.tif", "landsat7_bahamas_rgb_utm18n.tif", "landsat7_everest_b4_utm45n.tif",
    "landsat8_iguazu_b2_utm21n.tif", "landsat_aleutians_antimeridian_utm60n.tif", "landsat_rmnp_rgb_wgs84.tif",
    "sentinel1_pugetsound_float_nan_utm10n.tif", "sentinel2_libya_b09_utm34n.tif", "terrain_rmnp_dem_wgs84.tif",
)


def _real_jobs(out: Path) -> list[BatchJob]:
    """Real scenes × overlapping NE countries and Colorado counties, plus a manifest of whole-layer boundaries."""
    scenes = [real(name) for name in BATCH_SCENES]
    jobs = jobs_from_sources(scenes, real(NE), "name", str(out / "countries"))
    rmnp = [real("landsat_rmnp_rgb_wgs84.tif"), real("terrain_rmnp_dem_wgs84.tif")]
    jobs += jobs_from_sources(rmnp, real("colorado_counties.geojson"), "name", str(out / "counties"))
    manifest = out / "layers.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        ("landsat7_everest_b4_utm45n.tif", "rgi60_everest_glaciers.gpkg"),
        ("aster_dem_exploradores_utm18s.tif", "rgi60_exploradores_glaciers.gpkg"),
        ("landsat_rmnp_rgb_wgs84.tif", "rmnp_boundary.geojson"),
        ("terrain_rmnp_dem_wgs84.tif", "rmnp_boundary.geojson"),
        ("landsat8_iguazu_b2_utm21n.tif", "iguazu_landcover_training.geojson"),
    ]
    manifest.write_text("\n".join(
        json.dumps({"source": real(s), "boundary": real(b), "output": f"layers/{Path(b).stem}/{Path(s).stem}.tif"})
        for s, b in rows) + "\n")
    return jobs + jobs_from_manifest(str(manifest))


@pytest.mark.realdata
def test_real_batch_one_and_two_workers_agree(tmp_path):
    results = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        jobs = _real_jobs(out)
        pairs = {(Path(j.source).stem, j.region) for j in jobs if j.boundary.endswith(NE)}
        assert pairs == EXPECTED_NE_PAIRS
        summary = run_batch(jobs, workers=workers, report=str(out / "report.jsonl"), options=ClipOptions(),
                            progress=False, stac=True)
        failed = [(r["job"]["source"], r["job"]["region"], r["error"]) for r in summary.records if r["status"] != "ok"]
        assert not failed and summary.ok == len(jobs) == 24 and summary.exit_code == 0
        lines = read_report(out / "report.jsonl")
        assert len(lines) == len(jobs) and all("job" in line and line["checks"] for line in lines)
        if workers == 2:
            assert len({line["job"]["worker_pid"] for line in lines}) == 2 and os.getpid() not in {
                line["job"]["worker_pid"] for line in lines}
        results[workers] = {os.path.relpath(line["output"], out): line for line in lines}
        for line in lines:
            assert sha256(line["output"]) == line["sha256"]
            with open(line["job"]["stac_item"]) as fh:
                validate_item_dict(json.load(fh))

    assert results[1].keys() == results[2].keys()
    for rel, one in results[1].items():
        two = results[2][rel]
        assert one["sha256"] == two["sha256"], f"{rel}: 1 and 2 workers wrote different bytes"
        assert (one["valid_pixels"], one["width"], one["height"], one["transform"]) == (
            two["valid_pixels"], two["width"], two["height"], two["transform"])

    # A boundary reprojected once per CRS gives the very same file as a clip reprojecting it per scene.
    for line in results[1].values():
        job = line["job"]
        bnd = load_boundary(job["boundary"], region_field=job["region_field"], region=job["region"])
        single = run_clip(job["source"], bnd, ClipOptions()).record
        assert single.sha256 == line["sha256"], f"{job['source']} × {job['region']}"


@pytest.mark.realdata
def test_real_batch_outputs_match_rasterio(tmp_path):
    jobs = jobs_from_sources(str(REAL_DATA / "landsat8_iguazu_b2_utm21n.tif"), real(NE), "name", str(tmp_path))
    summary = run_batch(jobs, workers=1, report=str(tmp_path / "r.jsonl"), progress=False)
    assert summary.ok == 3
    bnd_cache = [line["job"]["boundary_cache"] for line in summary.records]
    assert bnd_cache == ["miss", "miss", "miss"]  # three regions, one CRS: one reprojection each
    for job in jobs:
        bnd = load_boundary(job.boundary, region_field="name", region=job.region)
        with rasterio.open(job.source) as ds:
            shapes = to_raster_crs(bnd, ds.crs, ds.bounds)
        assert_matches_reference(job.source, shapes, job.output)
    assert sorted(os.listdir(tmp_path)) == ["Argentina", "Brazil", "Paraguay", "r.jsonl"]


# --- synthetic: reuse, resume, failures, manifests, CLI ----------------------------------------------------------
X0, Y0, RES = 500000.0, 4000000.0, 30.0


@pytest.fixture
def tiles(make_raster):
    """Four adjacent 100x80 scenes in UTM 18N and two in UTM 17N (same area), and a lon/lat boundary over all."""
    paths = []
    for i in range(4):
        paths.append(make_raster(f"t18_{i}.tif", transform=from_origin(X0 + i * 100 * RES, Y0, RES, RES), nodata=0))
    ll = transform_geom("EPSG:32618", "EPSG:4326", mapping(box(X0 + 500, Y0 - 2000, X0 + 11500, Y0 - 300)))
    poly = shape(ll)
    for i in range(2):
        utm17 = transform_geom("EPSG:4326", "EPSG:32617", mapping(poly))
        x0, _, _, y1 = shape(utm17).bounds
        paths.append(make_raster(f"t17_{i}.tif", crs="EPSG:32617",
                                 transform=from_origin(x0 - 1000 + i * 3000, y1 + 500, RES, RES), nodata=0))
    return paths, poly


def _write_boundary(tmp_path, poly, name="regions.geojson"):
    import geopandas as gpd

    path = tmp_path / name
    gpd.GeoDataFrame({"name": ["zone A"]}, geometry=[poly], crs="EPSG:4326").to_file(path)
    return str(path)


def _jobs(paths, boundary, out):
    return [BatchJob(p, boundary, "zone A", str(out / f"{Path(p).stem}.tif"), "name") for p in paths]


def test_boundary_reprojected_once_per_crs(tmp_path, tiles):
    paths, poly = tiles
    bpath = _write_boundary(tmp_path, poly)
    jobs = _jobs(paths, bpath, tmp_path / "one")
    summary = run_batch(jobs, workers=1, report=str(tmp_path / "one.jsonl"), progress=False)
    assert summary.ok == 6, [r["error"] for r in summary.records]
    assert batch_boundaries._WORKER_STATS == {"reprojections": 2, "cache_hits": 4}  # two CRSs, six scenes
    assert [r["job"]["boundary_cache"] for r in summary.records] == ["miss", "hit", "hit", "hit", "miss", "hit"]
    for job in jobs:  # the shared reprojection clips exactly like the per-scene one
        bnd = load_boundary(bpath, region_field="name", region="zone A")
        with rasterio.open(job.source) as ds:
            shapes = to_raster_crs(bnd, ds.crs, ds.bounds)
        assert_matches_reference(job.source, shapes, job.output)
        assert sha256(job.output) == run_clip(job.source, bnd).record.sha256

    two = run_batch(_jobs(paths, bpath, tmp_path / "two"), workers=2, report=str(tmp_path / "two.jsonl"), progress=False)
    assert two.ok == 6
    misses = [r for r in two.records if r["job"]["boundary_cache"] == "miss"]
    assert 2 <= len(misses) <= 4  # at most once per CRS per worker
    for r in two.records:
        assert r["sha256"] == sha256(tmp_path / "one" / Path(r["output"]).name)


def test_resume_skips_verified_and_redoes_what_changed(tmp_path, tiles):
    paths, poly = tiles
    bpath = _write_boundary(tmp_path, poly)
    jobs = _jobs(paths[:3], bpath, tmp_path / "out")
    report = str(tmp_path / "report.jsonl")
    assert run_batch(jobs, workers=1, report=report, progress=False).ok == 3
    again = run_batch(jobs, workers=1, report=report, progress=False)
    assert (again.skipped, again.ok, again.records) == (3, 0, [])
    Path(jobs[1].output).write_bytes(b"tampered")  # output changed since it was verified
    redo = run_batch(jobs, workers=1, report=report, progress=False)
    assert redo.skipped == 2 and [r["output"] for r in redo.records] == [jobs[1].output]
    changed = run_batch(jobs, workers=1, report=report, progress=False, options=ClipOptions(all_touched=True))
    assert changed.skipped == 0 and changed.ok == 3  # other options: other outputs
    fresh = run_batch(jobs, workers=1, report=report, progress=False, resume=False)
    assert fresh.ok == 3 and len(read_report(report)) == 3 + 1 + 3 + 3  # append-only


def test_failures_are_records_and_do_not_stop_the_batch(tmp_path, tiles):
    paths, poly = tiles
    bpath = _write_boundary(tmp_path, poly)
    far = tmp_path / "far.geojson"
    import geopandas as gpd

    gpd.GeoDataFrame({"name": ["far"]}, geometry=[box(10, 10, 11, 11)], crs="EPSG:4326").to_file(far)
    jobs = [
        BatchJob(paths[0], bpath, "zone A", str(tmp_path / "o" / "ok.tif"), "name"),
        BatchJob(str(tmp_path / "missing.tif"), bpath, "zone A", str(tmp_path / "o" / "missing.tif"), "name"),
        BatchJob(paths[1], str(far), "far", str(tmp_path / "o" / "far.tif"), "name"),
        BatchJob(paths[2], bpath, "no such region", str(tmp_path / "o" / "unknown.tif"), "name"),
        BatchJob(paths[3], str(tmp_path / "nofile.gpkg"), None, str(tmp_path / "o" / "nofile.tif")),
        BatchJob(paths[3], bpath, "zone A", str(tmp_path / "o" / "ok2.tif"), "name"),
    ]
    for workers in (1, 2):
        report = tmp_path / f"r{workers}.jsonl"
        summary = run_batch(jobs, workers=workers, report=str(report), progress=False, resume=False)
        by_out = {Path(r["job"]["output"]).stem: r for r in read_report(report)}
        assert (summary.ok, summary.failed, summary.exit_code) == (2, 4, 1)
        assert by_out["ok"]["status"] == by_out["ok2"]["status"] == "ok"
        assert by_out["missing"]["error_type"] == "RasterReadError"
        assert by_out["far"]["error_type"] == "NoOverlapError"
        assert by_out["unknown"]["error_type"] == "UnknownRegionError"
        assert by_out["nofile"]["error_type"] == "BoundaryError"
        assert not any((tmp_path / "o" / f"{n}.tif").exists() for n in ("missing", "far", "unknown", "nofile"))


def test_manifests_csv_and_jsonl(tmp_path):
    (tmp_path / "m").mkdir()
    csv_path = tmp_path / "m" / "jobs.csv"
    csv_path.write_text("source,boundary,region,output,layer\n"
                        "scenes/a.tif,regions.gpkg,Bahamas,out/a.tif,\n"
                        "\n"
                        "/abs/b.tif,s3://bucket/regions.gpkg,,out/b.tif,countries\n")
    jobs = jobs_from_manifest(str(csv_path), region_field="name")
    base = str(tmp_path / "m")
    assert jobs == [
        BatchJob(f"{base}/scenes/a.tif", f"{base}/regions.gpkg", "Bahamas", f"{base}/out/a.tif", "name", None),
        BatchJob("/abs/b.tif", "s3://bucket/regions.gpkg", None, f"{base}/out/b.tif", "name", "countries"),
    ]
    jl = tmp_path / "m" / "jobs.jsonl"
    jl.write_text('# comment\n{"source": "a.tif", "boundary": "r.shp", "region": 7, "region_field": "id", "output": "o.tif"}\n')
    assert jobs_from_manifest(str(jl)) == [BatchJob(f"{base}/a.tif", f"{base}/r.shp", "7", f"{base}/o.tif", "id", None)]
    bad = tmp_path / "m" / "bad.csv"
    bad.write_text("source,boundary,region,output\na.tif,,x,o.tif\n")
    with pytest.raises(ConfigError, match="line 2: missing boundary"):
        jobs_from_manifest(str(bad))
    bad.write_text("source,boundary,output,colour\na.tif,b.shp,o.tif,red\n")
    with pytest.raises(ConfigError, match="unknown field"):
        jobs_from_manifest(str(bad))
    with pytest.raises(ConfigError, match="two jobs write"):
        run_batch([BatchJob("a", "b", None, "o.tif"), BatchJob("c", "b", None, "./o.tif")], workers=1,
                  report=str(tmp_path / "r.jsonl"), progress=False)


def test_safe_region_names():
    assert safe_name("United States of America") == "United_States_of_America"
    assert safe_name("Côte d'Ivoire") == "C_te_d_Ivoire"  # nothing that needs URL encoding
    assert safe_name("../..") == "region" and safe_name("a/b") == "a_b"


def test_cli_sources_mode_with_stac_and_exit_codes(tmp_path, tiles):
    paths, poly = tiles
    bpath = _write_boundary(tmp_path, poly)
    out = tmp_path / "clips"
    args = ["--sources", str(Path(paths[0]).parent / "t18_*.tif"), "--boundary", bpath, "--region-field", "name",
            "--out", str(out), "--workers", "2", "--stac", "--all-touched"]
    res = CliRunner().invoke(batch, args)
    assert res.exit_code == 0, res.output
    assert "4 jobs: 4 ok, 0 failed, 0 skipped" in res.output
    lines = read_report(out / "report.jsonl")
    assert len(lines) == 4 and all(line["job"]["options_hash"] == lines[0]["job"]["options_hash"] for line in lines)
    for line in lines:
        assert Path(line["output"]).parent == out / "zone_A"
        with open(Path(line["output"]).with_suffix(".stac.json")) as fh:
            validate_item_dict(json.load(fh))
    res = CliRunner().invoke(batch, args)
    assert res.exit_code == 0 and "4 skipped" in res.output

    manifest = tmp_path / "jobs.csv"
    manifest.write_text(f"source,boundary,region,region_field,output\n{paths[0]},{bpath},zone A,name,a.tif\n"
                        f"{tmp_path / 'nope.tif'},{bpath},zone A,name,b.tif\n")
    res = CliRunner().invoke(batch, [str(manifest)])
    assert res.exit_code == 1
    assert "1 ok, 1 failed" in res.output and "RasterReadError" in res.output
    assert (tmp_path / "jobs.report.jsonl").exists() and (tmp_path / "a.tif").exists()

    assert CliRunner().invoke(batch, []).exit_code == 2
    assert CliRunner().invoke(batch, [str(manifest), "--sources", "x"]).exit_code == 2
    help_text = CliRunner().invoke(batch, ["--help"]).output
    for opt in ("--sources", "--boundary", "--region-field", "--layer", "--out", "--workers", "--report",
                "--no-resume", "--stac", "--invert", "--pad", "--no-crop", "--nodata", "Exit status"):
        assert opt in help_text


def test_multi_feature_region_hash_is_the_same_in_batch_clip_and_store(tmp_path):
    """Two features of one region are dissolved into one geometry by batch, `sceneclip clip` and the store alike."""
    import geopandas as gpd
    from shapely.geometry import box

    from sceneclip.aws.store import BoundaryStore
    from sceneclip.tools.batch_boundaries import load_job_boundary
    from sceneclip.tools.store_build import build_store
    from sceneclip.tools.vectors import load_boundary

    vector = tmp_path / "two.geojson"
    gpd.GeoDataFrame({"rid": ["r", "r", "other"]},
                     geometry=[box(0, 0, 1, 1), box(0.5, 0.5, 2, 2), box(5, 5, 6, 6)], crs="EPSG:4326").to_file(vector)
    job = BatchJob(source="unused.tif", boundary=str(vector), region="r", output=str(tmp_path / "o.tif"),
                   region_field="rid")
    from_batch = load_job_boundary(job)
    from_file = load_boundary(str(vector), region_field="rid", region="r")
    build_store(str(vector), "rid", str(tmp_path / "store"))
    from_store = BoundaryStore.load(str(tmp_path / "store")).boundary("r")
    assert len(from_batch.geometries) == len(from_file.geometries) == 1
    assert from_batch.content_hash == from_file.content_hash == from_store.content_hash


@pytest.mark.realdata
def test_output_key_template_for_batch(tmp_path):
    """--output-key lays batch outputs out by the same template as SCENECLIP_OUTPUT_KEY; bad templates fail early."""
    import time

    scene = tmp_path / "iguazu scene.tif"
    scene.write_bytes((REAL_DATA / "landsat8_iguazu_b2_utm21n.tif").read_bytes())
    date = time.strftime("%Y-%m-%d", time.gmtime(scene.stat().st_mtime))
    jobs = jobs_from_sources(str(scene), real(NE), "name", str(tmp_path / "out"), output_key="{region_slug}/{date}/{key_slug}")
    assert len(jobs) == 3
    for job in jobs:
        rel = os.path.relpath(job.output, tmp_path / "out")
        assert rel.startswith(f"{safe_name(job.region)}/{date}/iguazu_scene-h") and rel.endswith(".tif"), rel
        assert " " not in rel
    default = jobs_from_sources(str(scene), real(NE), "name", str(tmp_path / "out"))
    assert all(" " not in os.path.relpath(j.output, tmp_path) for j in default)
    with pytest.raises(ConfigError, match=r"--output-key.*\{bucket\}"):
        jobs_from_sources(str(scene), real(NE), "name", str(tmp_path / "out"), output_key="{bucket}/{key_slug}")
    with pytest.raises(ConfigError, match=r"unknown placeholder.*\{regio\}"):
        jobs_from_sources(str(scene), real(NE), "name", str(tmp_path / "out"), output_key="{regio}/{key}")
