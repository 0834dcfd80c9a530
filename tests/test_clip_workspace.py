"""Where a clip's bytes live (issue 13): the intermediate on disk, the COG in memory or in tmpdir, nothing left.

Also the two threads of the executor (read | write) and the session cache that keeps rasterio from building
a boto3 Session per rasterisation while AWS keys are in the environment.
"""

from __future__ import annotations

import os

import numpy as np
import rasterio
import rasterio.env
from rasterio.session import AWSSession, Session
from shapely.geometry import Polygon

from sceneclip.core.clip import clip_to_cog, run_clip
from sceneclip.core.execute import execute_plan
from sceneclip.core.geometry import Boundary
from sceneclip.core.output import Workspace
from sceneclip.core.plan import ClipOptions, RasterInfo, plan_clip
from sceneclip.core.rioenv import reuse_environ_sessions

from .conftest import assert_matches_reference

X0, Y0, RES = 500000.0, 4000000.0, 30.0
TRIANGLE = Polygon([(X0, Y0), (X0 + RES * 1500, Y0 - RES * 200), (X0 + RES * 700, Y0 - RES * 1300)])


def boundary(poly=TRIANGLE):
    return Boundary.from_geometries([poly], "EPSG:32618", source="synthetic")


def test_intermediate_goes_to_tmpdir_and_the_small_cog_stays_in_memory(make_raster, tmp_path):
    src = make_raster(width=1500, height=1300, dtype="uint16", tiled=True)
    spill = tmp_path / "spill"
    spill.mkdir()
    opts = ClipOptions(tmpdir=str(spill), chunk_size=512)
    with rasterio.open(src) as ds:
        plan = plan_clip(RasterInfo.from_dataset(ds, name=src), [TRIANGLE], opts)
    workspace = Workspace(plan, opts)
    assert workspace.intermediate.startswith(str(spill)) and not workspace.spill
    assert not workspace.new_output().spilled  # the COG of a window under memory_limit: a MemoryFile
    workspace.cleanup()
    assert os.listdir(spill) == []

    res = clip_to_cog(src, boundary(), opts)
    try:
        assert not res.output.spilled and res.output.name.startswith("/vsimem/")
        assert os.listdir(spill) == []  # intermediate and its directory are gone once the COG is written
        out = str(tmp_path / "o.tif")
        res.output.save(out)
    finally:
        res.output.close()
    assert_matches_reference(src, [TRIANGLE], out)


def test_run_clip_to_a_file_writes_the_cog_in_tmpdir_and_renames_it(make_raster, tmp_path):
    src = make_raster(width=600, height=500, dtype="uint8", tiled=True)
    spill = tmp_path / "spill"
    spill.mkdir()
    out = str(tmp_path / "o.tif")
    poly = Polygon([(X0, Y0), (X0 + RES * 600, Y0 - RES * 100), (X0 + RES * 300, Y0 - RES * 500)])
    rec = run_clip(src, boundary(poly), ClipOptions(tmpdir=str(spill)), output=out).record
    assert rec.status == "ok" and rec.output == out and os.path.getsize(out) == rec.size_bytes
    assert os.listdir(spill) == []
    assert_matches_reference(src, [poly], out)


def test_a_failed_clip_leaves_no_spill_directory(make_raster, tmp_path):
    src = make_raster(width=300, height=300, dtype="uint16", tiled=True)
    spill = tmp_path / "spill"
    spill.mkdir()
    far = Polygon([(X0 + 1e6, Y0), (X0 + 1e6 + 100, Y0), (X0 + 1e6, Y0 - 100)])
    rec = run_clip(src, boundary(far), ClipOptions(tmpdir=str(spill)), output=str(tmp_path / "o.tif")).record
    assert rec.status == "failed" and not os.path.exists(tmp_path / "o.tif")
    assert os.listdir(spill) == []


def test_threaded_executor_counts_and_samples_are_deterministic(make_raster, tmp_path):
    src = make_raster(width=1500, height=1300, dtype="uint16", tiled=True)
    runs = []
    with rasterio.open(src) as ds:
        plan = plan_clip(RasterInfo.from_dataset(ds, name=src), [TRIANGLE], ClipOptions(chunk_size=512))
        for n in range(2):
            stats = execute_plan(ds, plan, str(tmp_path / f"i{n}.tif"))
            with rasterio.open(tmp_path / f"i{n}.tif") as out:
                runs.append((stats, out.read(), out.dataset_mask()))
    (a, data_a, mask_a), (b, data_b, mask_b) = runs
    assert a.chunks == b.chunks == len(plan.chunks) == 9
    assert (a.inside_pixels, a.valid_pixels) == (b.inside_pixels, b.valid_pixels) and a.valid_pixels > 0
    assert [(s.row, s.col, s.values) for s in a.samples] == [(s.row, s.col, s.values) for s in b.samples]
    assert np.array_equal(data_a, data_b) and np.array_equal(mask_a, mask_b)
    assert int(np.count_nonzero(mask_a)) == a.valid_pixels


def test_one_rasterio_session_per_set_of_environment_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-1")
    reuse_environ_sessions()
    reuse_environ_sessions()  # idempotent: wrapped once
    first = rasterio.Env().session
    assert isinstance(first, AWSSession) and rasterio.Env().session is first
    assert first.credentials["aws_session_token"] == "token-1"
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-2")  # new credentials: a new session, never the old one
    second = Session.from_environ()
    assert second is not first and second.credentials["aws_session_token"] == "token-2"
    assert Session.from_environ(aws_access_key_id="other", aws_secret_access_key="x") is not second
