"""write_cog's speed setting for the COG driver's temporary overviews changes no byte of the COG.

The reference is GDAL's COG driver called plainly with the same creation options: the files must be equal
byte for byte, for a DEFLATE COG (where the staging level is lowered) and a ZSTD one (where it is not, because
the same option would set the final overviews' level).
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin

from sceneclip.core.cog import INTERMEDIATE_OPTIONS, cog_options, staging_env, write_cog


@pytest.fixture(scope="module")
def intermediate(tmp_path_factory):
    path = tmp_path_factory.mktemp("cog") / "intermediate.tif"
    y, x = np.mgrid[0:1300, 0:1200]
    rng = np.random.default_rng(5)
    data = np.stack([(x * 7 + y * 3 + rng.integers(0, 40, x.shape)) % 4000 + b * 100 for b in range(3)]).astype("uint16")
    mask = np.where((x - 600) ** 2 + (y - 650) ** 2 < 560 ** 2, 255, 0).astype("uint8")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
            path, "w", width=1200, height=1300, count=3, dtype="uint16", crs="EPSG:32618",
            transform=from_origin(500000, 4000000, 30, 30), **INTERMEDIATE_OPTIONS) as dst:
        dst.write(data)
        dst.write_mask(mask)
    return str(path)


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("profile,staged", [("deflate", True), ("zstd", False)])
def test_write_cog_equals_the_plain_cog_driver_byte_for_byte(intermediate, tmp_path, profile, staged):
    opts = cog_options(profile, dtype="uint16", resampling="average")
    assert bool(staging_env(opts)) is staged
    plan = SimpleNamespace(dtype="uint16", overview_resampling="average")
    ours, plain = tmp_path / "ours.tif", tmp_path / "plain.tif"
    write_cog(intermediate, str(ours), plan, SimpleNamespace(profile=profile), tmpdir=str(tmp_path))
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        rasterio.shutil.copy(intermediate, str(plain), driver="COG", **opts)
    with rasterio.open(ours) as ds:
        assert ds.overviews(1) == [2, 4] and ds.mask_flag_enums[0][0].name == "per_dataset"
    assert _sha(ours) == _sha(plain)
