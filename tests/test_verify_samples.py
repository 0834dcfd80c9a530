"""The sampled-pixel check reads the output back and must catch a wrong value or a pixel wrongly kept.

The samples are spread over several rows and columns of 64×64 blocks, so the strip reads (one per row of
blocks, decoded on every core) are checked at block edges too, not just inside one block.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import rasterio
from rasterio.transform import from_origin

from sceneclip.core.execute import ExecutionStats, PixelSample
from sceneclip.core.verify import _check_samples


def _cog(path, data, mask):
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype="uint16",
                   crs="EPSG:32618", transform=from_origin(500000, 4000000, 30, 30), tiled=True, blockxsize=64,
                   blockysize=64, compress="deflate")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.write_mask(mask)
    return str(path)


def _samples(data, mask, rng, n=300):
    rows, cols = rng.integers(0, data.shape[1], n), rng.integers(0, data.shape[2], n)
    return [PixelSample(int(r), int(c), bool(mask[r, c]), tuple(float(v) for v in data[:, r, c]))
            for r, c in zip(rows, cols)]


def test_true_samples_pass_and_a_wrong_value_or_a_kept_masked_pixel_fails(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(1, 60000, (3, 300, 260), dtype=np.uint16)
    mask = np.zeros((300, 260), dtype=np.uint8)
    mask[20:280, 10:250] = 255
    path = _cog(tmp_path / "o.tif", data, mask)
    samples = _samples(data, mask, rng)
    assert {s.row // 64 for s in samples} == set(range(5)) and len({s.col // 64 for s in samples}) == 5
    with rasterio.open(path, num_threads="ALL_CPUS") as ds:
        assert _check_samples(ds, ExecutionStats(samples=samples)) == (300, [])
        # one kept pixel in the last block row and column: band 3 off by one
        i = next(i for i, s in enumerate(samples) if s.keep and s.row >= 256 and s.col >= 192)
        bad = list(samples)
        bad[i] = replace(samples[i], values=samples[i].values[:2] + (samples[i].values[2] + 1,))
        n, problems = _check_samples(ds, ExecutionStats(samples=bad))
        assert n == 300 and problems == [f"pixel (row {bad[i].row}, col {bad[i].col}) is "
                                         f"{data[:, bad[i].row, bad[i].col].tolist()}, source is {list(bad[i].values)}"]
        # a pixel that should have been masked (outside the boundary) but reads as data
        j = next(j for j, s in enumerate(samples) if s.keep)
        out = list(samples)
        out[j] = replace(samples[j], keep=False)
        _, problems = _check_samples(ds, ExecutionStats(samples=out))
        assert problems == [f"pixel (row {out[j].row}, col {out[j].col}) should be nodata/masked but reads "
                            f"{data[:, out[j].row, out[j].col].tolist()}"]
        # and a kept sample where the output is masked
        k = next(k for k, s in enumerate(samples) if not s.keep)
        gone = list(samples)
        gone[k] = replace(samples[k], keep=True)
        _, problems = _check_samples(ds, ExecutionStats(samples=gone))
        assert len(problems) == 1 and problems[0].startswith(f"pixel (row {gone[k].row}, col {gone[k].col}) is ")
