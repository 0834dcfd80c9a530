"""The peer benchmark's output checks and cost model (benchmarks/peers_check.py, peers_report.py).

The benchmark itself is never run here (it measures time); these tests make sure its checks would catch a
contender that wrote a different clip, so a fast wrong output cannot pass as a winner.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import peers_check  # noqa: E402
from peers_report import lambda_seconds  # noqa: E402

SIZE, RES, X0, Y0 = 96, 10.0, 300000.0, 5000000.0
COG = dict(driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=128, OVERVIEWS="NONE")


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src.tif"
    rng = np.random.default_rng(1)
    data = rng.integers(1, 60000, (3, SIZE, SIZE), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(X0, Y0, RES, RES)) as dst:
        dst.write(data)
    return path


def write_clip(src_path: Path, out: Path, *, col0: int = 10, row0: int = 12, w: int = 70, h: int = 64,
               shift_px: float = 0.0, radius: float = 30.0, tamper: bool = False) -> Path:
    """A clip of the source window with a disc of valid pixels (nodata 0 elsewhere), written as a COG."""
    with rasterio.open(src_path) as src:
        data = src.read(window=((row0, row0 + h), (col0, col0 + w)))
    yy, xx = np.mgrid[0:h, 0:w]
    data[:, (yy - h / 2) ** 2 + (xx - w / 2) ** 2 > radius**2] = 0
    if tamper:
        data[data > 0] += 1
    transform = from_origin(X0 + (col0 + shift_px) * RES, Y0 - row0 * RES, RES, RES)
    with rasterio.open(out, "w", width=w, height=h, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=transform, nodata=0, **COG) as dst:
        dst.write(data)
    return out


def check(source: Path, tmp_path: Path, **kwargs) -> peers_check.CheckResult:
    ref = peers_check.read_facts(str(write_clip(source, tmp_path / "ref.tif")))
    out = write_clip(source, tmp_path / "peer.tif", **kwargs)
    with rasterio.open(source) as src:
        return peers_check.check_output(str(out), src, ref)


def test_the_same_clip_passes(source: Path, tmp_path: Path) -> None:
    result = check(source, tmp_path)
    assert result.ok, result.failures
    assert result.facts is not None and result.facts.valid_pixels > 0


def test_one_pixel_wider_extent_is_allowed(source: Path, tmp_path: Path) -> None:
    assert check(source, tmp_path, w=71).ok


def test_an_output_off_the_source_grid_fails(source: Path, tmp_path: Path) -> None:
    result = check(source, tmp_path, shift_px=0.5)
    assert any("off the source grid" in f for f in result.failures)


def test_an_extent_two_pixels_off_fails(source: Path, tmp_path: Path) -> None:
    result = check(source, tmp_path, col0=8, w=72)
    assert any("extent differs" in f and "left -2 px" in f for f in result.failures)


def test_too_few_valid_pixels_fails(source: Path, tmp_path: Path) -> None:
    result = check(source, tmp_path, radius=28.0)
    assert any("valid pixels" in f for f in result.failures)


def test_changed_values_fail(source: Path, tmp_path: Path) -> None:
    result = check(source, tmp_path, tamper=True)
    assert any("sampled pixels differ" in f for f in result.failures)


def test_lambda_duration_interpolates_between_one_and_two_cores() -> None:
    assert lambda_seconds(10.0, 18.0, 1769) == pytest.approx(18.0)
    assert lambda_seconds(10.0, 18.0, 3538) == pytest.approx(10.0)
    mid = lambda_seconds(10.0, 18.0, 2048)
    assert 10.0 < mid < 18.0
    assert lambda_seconds(10.0, None, 2048) == pytest.approx(10.0)
