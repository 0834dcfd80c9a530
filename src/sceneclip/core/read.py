"""The in-memory clip for notebooks: a numpy masked array, its grid and a profile, no file written.

:func:`read_clip` runs the same planner as :func:`sceneclip.core.clip.clip_to_cog` (same window, same mask rule,
same nodata policy) and fills one preallocated masked array chunk by chunk, so what it returns is exactly
what the COG would hold when read back with ``masked=True``. Windows larger than ``max_bytes`` are refused
before any pixel is read: stream those to a COG with :func:`sceneclip.core.clip.run_clip` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from sceneclip.core.plan import MIB, ClipOptions, ClipPlan
from sceneclip.core.execute import ExecutionStats, iter_chunks
from sceneclip.core.source import open_source
from sceneclip.core.clip import refuse_empty, plan_for_dataset
from sceneclip.errors import OutputTooLargeError
from sceneclip.core.geometry import Boundary

DEFAULT_MAX_BYTES = 512 * MIB


@dataclass(frozen=True)
class ClipArray:
    """A clip held in memory.

    data: (bands, rows, cols) masked array; masked = outside the boundary (inside when inverted) or invalid
        in the source. Masked cells hold the nodata value (0 when validity is a mask rather than a value).
    transform / crs: the grid of ``data`` (on the source grid, like the COG).
    profile: keyword arguments for ``rasterio.open(path, "w", **profile)`` (GTiff). When ``nodata`` is None
        validity is a mask: write it with ``dst.write_mask(~data.mask.any(axis=0))``.
    window: the window read, in source pixel coordinates.
    valid_pixels: valid pixels of band 1 (of every band when validity is a mask), as the COG's record counts.
    """

    data: np.ma.MaskedArray
    transform: Affine
    crs: CRS | None
    profile: dict[str, Any]
    window: Window
    valid_pixels: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the clip in its CRS."""
        _, h, w = self.data.shape
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (w, h)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def in_memory_bytes(plan: ClipPlan) -> int:
    """Bytes :func:`read_clip` allocates for ``plan``: the values plus a one-byte mask per value."""
    return plan.uncompressed_bytes + plan.width * plan.height * plan.count


def _refuse_too_large(plan: ClipPlan, source: str, max_bytes: int) -> None:
    need = in_memory_bytes(plan)
    if need > max_bytes:
        raise OutputTooLargeError(
            f"the clip of {source} is {plan.width}x{plan.height}x{plan.count} {plan.dtype}, "
            f"{need / MIB:.1f} MiB in memory with its mask, over the limit of {max_bytes / MIB:.1f} MiB; "
            "raise max_bytes, or stream it to a COG with sceneclip.core.clip.run_clip / clip_to_cog"
        )


def _fill(src: Any, plan: ClipPlan) -> tuple[np.ma.MaskedArray, ExecutionStats]:
    """Read the plan's window chunk by chunk into one masked array, with execute_plan's validity rule."""
    fill = np.array(0 if plan.nodata is None else plan.nodata).astype(plan.dtype)
    nan_nodata = plan.nodata is not None and math.isnan(plan.nodata)
    values = np.empty((plan.count, plan.height, plan.width), dtype=plan.dtype)
    mask = np.ones((plan.count, plan.height, plan.width), dtype=bool)
    stats = ExecutionStats()
    for chunk, data, keep in iter_chunks(src, plan):
        valid = keep[np.newaxis, :, :] & ~np.ma.getmaskarray(data)
        if nan_nodata:
            valid &= ~np.isnan(data.data)
        if plan.use_mask:  # one mask for the dataset, as the COG's internal mask band
            valid = np.broadcast_to(valid.all(axis=0), valid.shape)
        rows = slice(int(chunk.row_off), int(chunk.row_off + chunk.height))
        cols = slice(int(chunk.col_off), int(chunk.col_off + chunk.width))
        values[:, rows, cols] = np.where(valid, data.data, fill)
        mask[:, rows, cols] = ~valid
        stats.inside_pixels += int(np.count_nonzero(keep))
        stats.valid_pixels += int(np.count_nonzero(valid[0]))
        stats.chunks += 1
    fill_value = None if plan.nodata is None else fill
    return np.ma.MaskedArray(values, mask=mask, fill_value=fill_value), stats


def read_clip(
    source: str,
    boundary: Boundary,
    *,
    all_touched: bool = False,
    invert: bool = False,
    crop: bool = True,
    pad: bool = False,
    nodata: float | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    chunk_size: int = 1024,
) -> ClipArray:
    """Clip ``source`` to ``boundary`` into memory and return a :class:`ClipArray`.

    Parameters
    ----------
    source : str
        Anything rasterio opens: a path, ``/vsis3/bucket/key`` or ``s3://bucket/key``.
    boundary : Boundary
        Polygons and their CRS (:func:`sceneclip.tools.vectors.load_boundary`).
    all_touched, invert, crop, pad, nodata
        As :class:`sceneclip.core.clip.ClipOptions`: ``invert`` implies the raster's full extent (``crop=False``);
        ``pad`` needs ``crop``. Defaults follow ``rasterio.mask.mask(crop=True)``.
    max_bytes : int, default 512 MiB
        Refuse, before reading, a window whose values plus mask exceed this.
    chunk_size : int, default 1024
        Pixels per side of each read (a multiple of 512).

    Raises
    ------
    OutputTooLargeError
        The window does not fit ``max_bytes`` (the message gives both sizes).
    NoOverlapError, MissingCRSError, EmptyGeometryError, ReprojectionError, RasterReadError,
    SourceUnavailableError, InvalidOptionsError
        As :func:`sceneclip.core.clip.clip_to_cog`, including for a boundary that selects no valid pixel.
    """
    options = ClipOptions(
        all_touched=all_touched, invert=invert, crop=crop, pad=pad, nodata=nodata, chunk_size=chunk_size
    )
    with rasterio.Env(GDAL_CACHEMAX=options.gdal_cache_mb), open_source(source) as src:
        info, plan = plan_for_dataset(src, boundary, options, name=source)
        _refuse_too_large(plan, source, max_bytes)
        data, stats = _fill(src, plan)
    refuse_empty(stats, boundary, source, options)
    profile = {
        "driver": "GTiff",
        "dtype": plan.dtype,
        "count": plan.count,
        "width": plan.width,
        "height": plan.height,
        "crs": info.crs,
        "transform": plan.transform,
        "nodata": plan.nodata,
    }
    return ClipArray(
        data=data,
        transform=plan.transform,
        crs=info.crs,
        profile=profile,
        window=plan.window,
        valid_pixels=stats.valid_pixels,
    )


__all__ = ["ClipArray", "DEFAULT_MAX_BYTES", "in_memory_bytes", "read_clip"]
