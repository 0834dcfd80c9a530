"""Issue 15, finding 4: caps checked from the header before any pixel is read, and bounded work per chunk.

A 390-byte TIFF declaring one 60000×60000 tile, a 200,000² sparse file and a 300-band file are refused
permanently with the cap named; memory per chunk is bounded by bytes, not pixels; a 10⁶-vertex boundary
costs the rasteriser about what a 1,000-vertex one does.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin
from shapely.geometry import Polygon, box

from sceneclip.aws import handler
from sceneclip.aws.config import Settings
from sceneclip.core.clip import clip_to_cog
from sceneclip.core.geometry import Boundary
from sceneclip.core.limits import SourceLimits
from sceneclip.core.plan import MIB, ClipOptions, RasterInfo, plan_clip
from sceneclip.errors import ConfigError, LimitExceededError

from .test_pipeline_e2e import invoke, outputs, records, stack  # noqa: F401  (fixture)

COLORADO = from_origin(-105.8, 40.5, 1e-5, 1e-5)


def sparse_tiff(path, *, side, block, count=1, dtype="uint8"):
    """A header-only GeoTIFF: every block is sparse, so the file is tiny whatever it declares."""
    kw = dict(tiled=True, blockxsize=block, blockysize=block) if block else {}
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=count, dtype=dtype,
                       crs="EPSG:4326", transform=COLORADO, sparse_ok=True, compress="deflate", **kw):
        pass
    return str(path)


HOSTILE = {
    "one-60000-tile": (dict(side=60000, block=60000), "SCENECLIP_MAX_BLOCK_BYTES"),
    "200000-square": (dict(side=200_000, block=512), "SCENECLIP_MAX_RASTER_SIDE"),
    "300-bands": (dict(side=16, block=0, count=300), "SCENECLIP_MAX_BANDS"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_headers_fail_through_the_handler_naming_the_cap(stack, tmp_path, monkeypatch, name):
    spec, setting = HOSTILE[name]
    path = sparse_tiff(tmp_path / f"{name}.tif", **spec)
    assert os.path.getsize(path) < 2_000_000
    bucket = stack["names"]["InputBucket"]
    monkeypatch.setenv("SCENECLIP_INPUT_BUCKETS", bucket)
    handler._WARM_START_CACHE.clear()
    stack["s3"].upload_file(path, bucket, f"scenes/{name}.tif")
    for event in ({"bucket": bucket, "key": f"scenes/{name}.tif", "region": "Larimer"},
                  {"bucket": bucket, "key": f"scenes/{name}.tif"}):  # clip path and spatial lookup
        (result,) = invoke(event)["results"]
        assert result["status"] == "failed" and result["error_type"] == "LimitExceededError"
        assert setting in result["error"]
    assert all(r["transient"] is False for r in records(stack)) and outputs(stack) == []


def test_one_huge_tile_fails_with_bounded_memory(tmp_path):
    """In a fresh process (its peak RSS is its own): refused before GDAL decodes the 3.6 GB block."""
    path = sparse_tiff(tmp_path / "tile.tif", side=60000, block=60000)
    code = (
        "import sys\n"
        "from shapely.geometry import box\n"
        "from sceneclip.core.clip import clip_to_cog\n"
        "from sceneclip.core.geometry import Boundary\n"
        "from sceneclip.errors import LimitExceededError\n"
        "b = Boundary.from_geometries(box(-105.8, 40.4998, -105.7998, 40.5), 'EPSG:4326')\n"
        "try:\n"
        "    clip_to_cog(sys.argv[1], b)\n"
        "except LimitExceededError as exc:\n"
        "    print('refused', exc)\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a child spawned (vfork) by a large
        # pytest process would report the parent's peak; VmHWM is this image's own address space.
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("refused") and "SCENECLIP_MAX_BLOCK_BYTES" in lines[0] and "3,600,000,000" in lines[0]
    assert int(lines[-1]) < 1024  # MB: the interpreter and GDAL, never the block


def test_window_cap(make_raster):
    src = make_raster(width=300, height=300, dtype="uint16")
    poly = box(500000 + 30 * 10, 4000000 - 30 * 200, 500000 + 30 * 200, 4000000 - 30 * 10)
    opts = ClipOptions(limits=SourceLimits(max_window_bytes=10_000))
    with pytest.raises(LimitExceededError, match="SCENECLIP_MAX_WINDOW_BYTES"):
        clip_to_cog(src, Boundary.from_geometries(poly, "EPSG:32618"), opts)


def test_chunks_are_sized_by_bytes_whatever_the_band_count():
    info = RasterInfo(name="hyper", crs=None, transform=Affine(30, 0, 0, 0, -30, 0), width=1024, height=1024,
                      count=224, dtype="float32", nodata=None, block_shape=(256, 256))
    plan = plan_clip(info, [box(0, -30 * 1024, 30 * 1024, 0)], ClipOptions())
    per_chunk = [c.width * c.height * 224 * 4 for c in plan.chunks]
    assert max(per_chunk) <= 64 * MIB  # 940 MB per chunk when chunks were 1024² pixels
    assert sum(c.width * c.height for c in plan.chunks) == 1024 * 1024
    rgb = plan_clip(RasterInfo(**{**info.__dict__, "count": 3, "dtype": "uint16"}), list(plan.shapes), ClipOptions())
    assert len(rgb.chunks) == 1  # few bands: the usual 1024² chunk


def _circle(n, cx, cy, r):
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return Polygon(np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t)]))


def _clip_vertices(make_raster, poly, opts=None):
    src = make_raster(width=2048, height=2048, tiled=True, blocksize=512)
    from sceneclip.core.clip import plan_for_dataset
    from sceneclip.core.execute import execute_plan

    b = Boundary.from_geometries(poly, "EPSG:32618")
    with rasterio.open(src) as ds:
        _, plan = plan_for_dataset(ds, b, opts or ClipOptions(), name="t")
        stats = execute_plan(ds, plan, "/vsimem/vertices.tif")
    rasterio.shutil.delete("/vsimem/vertices.tif")
    return stats


def test_million_vertex_boundary_rasterises_about_like_a_thousand(make_raster):
    x0, y0 = 500000 + 30 * 1024, 4000000 - 30 * 1024
    small = _clip_vertices(make_raster, _circle(1_000, x0, y0, 30 * 900))
    large = _clip_vertices(make_raster, _circle(1_000_000, x0, y0, 30 * 900))
    assert small.chunks == large.chunks == 4
    # Rasterised whole per chunk, the large one would hand GDAL 4 × 10⁶ vertices.
    assert large.mask_vertices <= 3 * small.mask_vertices + 1_000
    assert abs(large.inside_pixels - small.inside_pixels) / small.inside_pixels < 0.01


def test_unsimplifiable_boundary_is_clipped_per_chunk_then_capped(make_raster):
    x0, y0 = 500000 + 30 * 1024, 4000000 - 30 * 1024
    n = 40_000  # a star whose spikes are far above a tenth of a pixel: simplification keeps them all
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = np.where(np.arange(n) % 2, 30 * 900, 30 * 880)
    star = Polygon(np.column_stack([x0 + r * np.cos(t), y0 + r * np.sin(t)]))
    stats = _clip_vertices(make_raster, star)
    assert stats.chunks == 4 and stats.mask_vertices < 1.5 * n  # each chunk got its quarter, not all n
    with pytest.raises(LimitExceededError, match="SCENECLIP_MAX_VERTICES"):
        _clip_vertices(make_raster, star, ClipOptions(limits=SourceLimits(max_vertices=10_000)))


def test_caps_are_settings():
    base = {"SCENECLIP_OUTPUT_BUCKET": "o", "SCENECLIP_BOUNDARIES": "s3://b/x", "SCENECLIP_RECORDS_TABLE": "t"}
    s = Settings.from_env({**base, "SCENECLIP_MAX_BANDS": "8", "SCENECLIP_MAX_BLOCK_BYTES": "0",
                           "SCENECLIP_MAX_EVENT_RECORDS": "5", "SCENECLIP_ALLOWED_DRIVERS": "GTiff,JP2OpenJPEG",
                           "SCENECLIP_MAX_CHUNK_BYTES": "1048576"})
    opts = s.clip_options()
    assert opts.limits.max_bands == 8 and opts.limits.max_block_bytes == 0 and opts.chunk_bytes == MIB
    assert s.max_event_records == 5 and opts.allowed_drivers == ("GTiff", "JP2OpenJPEG")
    with pytest.raises(ConfigError, match="SCENECLIP_MAX_BANDS"):
        Settings.from_env({**base, "SCENECLIP_MAX_BANDS": "many"})
    with pytest.raises(ConfigError, match="SCENECLIP_ALLOWED_DRIVERS"):
        Settings.from_env({**base, "SCENECLIP_ALLOWED_DRIVERS": "GTiff,VRT"})
    with pytest.raises(ConfigError, match="SCENECLIP_PRESIGN_EXPIRES_S"):
        Settings.from_env({**base, "SCENECLIP_PRESIGN_EXPIRES_S": "0"})
