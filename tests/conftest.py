"""Shared fixtures: the real data folder (tests/data/real), synthetic rasters, and the rasterio.mask reference comparison."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.mask
from rasterio.transform import from_origin

# The real data travels with the repository (tests/data/real, see its PROVENANCE.md): nothing is skipped.
REAL_DATA = Path(os.environ.get("SCENECLIP_REAL_DATA", Path(__file__).resolve().parent / "data" / "real"))


def real(name: str) -> str:
    """Path of a file in tests/data/real. A missing file is a broken checkout: fail, never skip."""
    path = REAL_DATA / name
    assert path.exists(), f"real test data {path} is missing (it is part of the repository)"
    return str(path)


@pytest.fixture
def make_raster(tmp_path):
    """Write a synthetic GeoTIFF; returns its path. Values are deterministic and mostly distinct."""

    def _make(name="src.tif", *, width=100, height=80, count=1, dtype="uint8", crs="EPSG:32618",
              transform=None, nodata=None, tiled=False, fill=None, blocksize=256, **extra):
        path = tmp_path / name
        transform = transform or from_origin(500000, 4000000, 30, 30)
        rng = np.random.default_rng(42)
        dt = np.dtype(dtype)
        if fill is not None:
            data = np.full((count, height, width), fill, dtype=dt)
        elif dt.kind == "f":
            data = rng.normal(100, 50, (count, height, width)).astype(dt)
        else:
            info = np.iinfo(dt)
            lo, hi = max(info.min, -1000), min(info.max, 60000)
            data = rng.integers(lo, hi, (count, height, width), endpoint=True).astype(dt)
        profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=crs,
                       transform=transform, nodata=nodata, **extra)
        if tiled:
            profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        return str(path)

    return _make


def assert_matches_reference(source, shapes, out_path, *, all_touched=False, invert=False, crop=True, pad=False):
    """Our output's valid-pixel set and values equal rasterio.mask.mask's on the same shapes.

    Our window may be tighter than rasterio's (we snap boundary ∩ raster, rasterio the boundary's bbox), so
    the comparison aligns the two grids and requires that rasterio keeps nothing outside our window.
    """
    with rasterio.open(source) as src:
        ref, ref_t = rasterio.mask.mask(src, shapes, crop=crop, all_touched=all_touched, invert=invert,
                                        pad=pad, filled=False)
    with rasterio.open(out_path) as out:
        got = out.read(masked=True)
        got_t = out.transform
        # An alpha band is its own "all valid" band in GDAL; compare the bands it masks, and its values.
        bands = [i for i, ci in enumerate(out.colorinterp) if ci != rasterio.enums.ColorInterp.alpha]
    return assert_aligned_equal(got[bands], got_t, ref[bands], ref_t)


def assert_aligned_equal(got, got_t, ref, ref_t):
    """``got`` (masked, on grid ``got_t``) equals the rasterio.mask reference ``ref`` over ``got``'s window,
    and the reference keeps nothing outside it. Returns the valid-pixel count of band 1."""
    col_f, row_f = ~ref_t @ (got_t.c, got_t.f)
    col, row = round(col_f), round(row_f)
    assert abs(col - col_f) < 1e-6 and abs(row - row_f) < 1e-6, "output is not on the reference grid"
    _, h, w = got.shape
    assert col >= 0 and row >= 0 and col + w <= ref.shape[2] and row + h <= ref.shape[1], "output exceeds reference window"
    ref_valid = ~np.ma.getmaskarray(ref)
    sub_valid = ref_valid[:, row:row + h, col:col + w]
    assert ref_valid.sum() == sub_valid.sum(), "rasterio.mask keeps pixels outside our window"
    got_valid = ~np.ma.getmaskarray(got)
    np.testing.assert_array_equal(got_valid, sub_valid)
    ref_vals = ref.data[:, row:row + h, col:col + w][sub_valid]
    got_vals = got.data[got_valid]
    np.testing.assert_array_equal(got_vals, ref_vals)  # NaN == NaN for assert_array_equal
    return int(got_valid[0].sum())


def isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


# --- moto server (real HTTP on loopback: GDAL's curl cannot be intercepted by mock_aws) -----------------------
import socket
import uuid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """A ThreadedMotoServer on 127.0.0.1; AWS_ENDPOINT_URL points boto3 (and, via sceneclip.core.gdalenv, GDAL) at it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    for k, v in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        mp.setenv(k, v)
    mp.delenv("AWS_PROFILE", raising=False)
    yield url
    mp.undo()
    server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint):
    """A fresh bucket (unique name) on the moto server; returns (boto3 client, bucket name)."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return client, name
