"""Options and error output shared by every sceneclip command (clip, batch, boundaries, ops).

Kept apart from ``cli.py`` so command modules can import them without importing the command group.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from sceneclip.core.cog import COG_PROFILES, RESAMPLING_CHOICES
from sceneclip.core.grid import WARP_RESAMPLING
from sceneclip.core.plan import DEFAULT_MEMORY_LIMIT_MB

EXIT_FAILED = 1  # verification or input failure: a failed record was produced


def fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"sceneclip: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def clip_options(f: Any) -> Any:
    """Options shared by every command that clips (clip, batch)."""
    decorators = [
        click.option("--all-touched", is_flag=True, help="Keep every pixel the boundary touches, not only those whose centre is inside."),
        click.option("--invert", is_flag=True, help="Keep the outside, blank the inside (exclusion zones). Output extent is the raster's."),
        click.option("--crop/--no-crop", default=True, show_default=True, help="--no-crop keeps the full raster extent and only masks."),
        click.option("--pad", is_flag=True, help="Widen the crop window by half a pixel (rasterio's pad), for thin or tiny polygons."),
        click.option("--nodata", type=float, default=None, help="Output nodata. Default: the source's; NaN for floats; an internal mask for integers."),
        click.option("--profile", "cog_profile", type=click.Choice(sorted(COG_PROFILES)), default="deflate", show_default=True, help="COG compression."),
        click.option("--overview-resampling", type=click.Choice(RESAMPLING_CHOICES), default=None, help="Overview resampling. Default: average, or nearest for paletted (categorical) data."),
        click.option("--dst-crs", default=None, help="Warp onto a grid in this CRS (e.g. EPSG:4326). A region's own grid wins."),
        click.option("--res", "res", type=float, multiple=True, help="Target pixel size in CRS units: once for square pixels, twice for width then height (as rio warp). Default: GDAL's suggestion."),
        click.option("--tap/--no-tap", "--target-aligned-pixels/--no-target-aligned-pixels", "tap", default=False, help="Origin on multiples of --res (gdalwarp -tap), so every clip of a region shares one grid."),
        click.option("--resampling", type=click.Choice(WARP_RESAMPLING), default="nearest", show_default=True, help="Warp resampling (used only with a target grid)."),
        click.option("--force-resampling", is_flag=True, help="Allow interpolating resampling of categorical (paletted) data."),
        click.option("--src-nodata", type=float, default=None, help="Nodata for sources that declare none (gdalwarp -srcnodata), e.g. 0 for a scene's zero collar, so it never wins a mosaic."),
        click.option("--tmpdir", type=click.Path(file_okay=False), default=None, envvar="SCENECLIP_TMPDIR", help="Where large clips spill instead of RAM. [env SCENECLIP_TMPDIR]"),
        click.option("--memory-limit", type=click.IntRange(min=1), default=DEFAULT_MEMORY_LIMIT_MB, show_default=True, envvar="SCENECLIP_MEMORY_LIMIT_MB", help="MB of uncompressed window kept in memory; larger clips spill to --tmpdir."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def build_options(all_touched: bool, invert: bool, crop: bool, pad: bool, nodata: float | None, cog_profile: str,
                  overview_resampling: str | None, dst_crs: str | None, res: tuple[float, ...], tap: bool,
                  resampling: str, force_resampling: bool, src_nodata: float | None, tmpdir: str | None,
                  memory_limit: int) -> Any:
    from sceneclip.core.plan import MIB, ClipOptions
    from sceneclip.errors import InvalidOptionsError

    if len(res) > 2:
        raise InvalidOptionsError(f"--res takes one value (square pixels) or two (width, height), got {len(res)}")
    return ClipOptions(
        all_touched=all_touched, invert=invert, crop=crop, pad=pad, nodata=nodata, profile=cog_profile,
        overview_resampling=overview_resampling, dst_crs=dst_crs, resolution=tuple(res) or None, target_aligned=tap,
        resampling=resampling, force_resampling=force_resampling, src_nodata=src_nodata, tmpdir=tmpdir,
        memory_limit=memory_limit * MIB,
    )
