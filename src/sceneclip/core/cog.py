"""Cloud Optimized GeoTIFF creation profiles, as data (the rio-cogeo model: look up by name, override by keyword).

GDAL's COG driver defaults to LZW and CUBIC overviews; both are wrong for analysis-ready data (LZW is slower
and larger than DEFLATE with a predictor, CUBIC invents values). Every option is therefore set explicitly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.session import DummySession

BLOCKSIZE = 512

COG_PROFILES: dict[str, dict[str, Any]] = {
    "deflate": {"COMPRESS": "DEFLATE", "LEVEL": 6},
    "zstd": {"COMPRESS": "ZSTD", "LEVEL": 9},
    "lzw": {"COMPRESS": "LZW"},
}

RESAMPLING_CHOICES = ("average", "nearest", "mode", "bilinear", "cubic", "min", "max", "rms")


def predictor_for(dtype: str) -> str:
    """Horizontal differencing for integers, floating-point predictor for floats."""
    return "FLOATING_POINT" if np.dtype(dtype).kind == "f" else "STANDARD"


def default_resampling(categorical: bool) -> str:
    """AVERAGE for continuous data; NEAREST when values are classes (a palette, or the user says so)."""
    return "nearest" if categorical else "average"


def cog_options(
    profile: str = "deflate",
    *,
    dtype: str = "uint8",
    resampling: str = "average",
    blocksize: int = BLOCKSIZE,
    **overrides: Any,
) -> dict[str, Any]:
    """Creation options for ``rasterio.shutil.copy(..., driver='COG', **options)``.

    ``overrides`` win over the profile (e.g. ``LEVEL=1`` for speed).
    """
    key = profile.lower()
    if key not in COG_PROFILES:
        raise ValueError(f"unknown COG profile {profile!r}; choose one of {sorted(COG_PROFILES)}")
    if resampling.lower() not in RESAMPLING_CHOICES:
        raise ValueError(f"unknown overview resampling {resampling!r}; choose one of {RESAMPLING_CHOICES}")
    opts: dict[str, Any] = dict(COG_PROFILES[key])
    if opts["COMPRESS"] in ("DEFLATE", "ZSTD", "LZW"):
        opts["PREDICTOR"] = predictor_for(dtype)
    opts.update(
        BLOCKSIZE=blocksize,
        OVERVIEW_RESAMPLING=resampling.upper(),
        BIGTIFF="IF_SAFER",
        NUM_THREADS="ALL_CPUS",
        OVERVIEWS="AUTO",
    )
    opts.update({k.upper(): v for k, v in overrides.items()})
    return opts


# The intermediate tiled GTiff is written once and read twice by the COG driver (overviews, then full
# resolution). It lives on local disk (the page cache), not in memory, so it is left uncompressed: ZSTD-1
# cost one encode and two decodes, 2.2 s of CPU out of 18 on the 251 MiB peer clip, to save disk only.
INTERMEDIATE_OPTIONS: dict[str, Any] = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": BLOCKSIZE,
    "blockysize": BLOCKSIZE,
    "bigtiff": "IF_SAFER",
}


def staging_env(opts: dict[str, Any]) -> dict[str, Any]:
    """Config options for the COG driver's temporary overview file, given the COG's creation ``opts``.

    The driver stages the overviews (imagery and mask) in a ZSTD GeoTIFF at ZSTD's default level 9, then
    decodes them for the final copy (``cogdriver.cpp``). Level 1 is as lossless and much cheaper to encode:
    the COG step of the 251 MiB peer clip took 4.6 s instead of 5.5 s (A/B, 3 rounds), output byte-identical.
    ``ZSTD_LEVEL_OVERVIEW`` would also set a ZSTD COG's own overview level, so it is left alone for those.
    """
    return {} if str(opts.get("COMPRESS", "")).upper() == "ZSTD" else {"ZSTD_LEVEL_OVERVIEW": "1"}


def write_cog(intermediate: str, dst_path: str, plan: Any, options: Any, *, tmpdir: str | None = None) -> None:
    """GDAL's COG driver (create-copy only) from the intermediate: tiles, overviews, IFD layout.

    ``tmpdir`` (the clip's spill directory) receives GDAL's temporary overview file: without it, a COG
    written to ``/vsimem`` keeps that file in memory too. ``GDAL_NUM_THREADS`` lets GDAL compute the
    overviews on every core as well (the bytes written are the same: checked level by level).
    """
    opts = cog_options(options.profile, dtype=plan.dtype, resampling=plan.overview_resampling)
    env: dict[str, Any] = {"GDAL_NUM_THREADS": "ALL_CPUS", **staging_env(opts)}
    if tmpdir:
        env["CPL_TMPDIR"] = tmpdir
    # A session of our own would build a boto3 Session (30 ms) whenever AWS keys are in the environment, as
    # on Lambda; the COG is written locally, and the enclosing environment keeps its credentials.
    with rasterio.Env(session=DummySession(), **env):
        rasterio.shutil.copy(intermediate, dst_path, driver="COG", **opts)
