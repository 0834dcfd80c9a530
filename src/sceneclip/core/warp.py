"""The apply step of a warped clip: fill a :class:`~sceneclip.core.warp_plan.WarpPlan`'s grid chunk by chunk.

For each output chunk the source window under it (its corners and edges carried to the source CRS, plus
the resampling kernel's reach) is read, its validity derived by :func:`sceneclip.core.execute.source_invalid`
(nodata, alpha, mask band: the one rule of the source grid), and GDAL's warper
(:func:`rasterio.warp.reproject`) resamples it with that validity as source alpha. So memory stays at a few
chunks, only the source blocks under the footprint are fetched, and every output pixel sees the same source
pixels in the same way whatever the chunk layout (the transform is exact, the kernel's scale fixed for the
whole grid — :func:`~sceneclip.core.warp_plan.kernel_scale` — and always fully inside the window).
A pixel is kept when the boundary rule holds on the *destination* grid (:func:`~sceneclip.core.execute.
chunk_outside` over the plan's shapes, which are in the destination CRS) and the warper gave it data.

Why not a WarpedVRT: with an added alpha band, GDAL 3.12's warped VRT gave bilinear values up to 1,221 DN
away from gdalwarp and from ``reproject`` on the real Iguazu scene (without alpha they agreed exactly).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from sceneclip.core.cog import INTERMEDIATE_OPTIONS
from sceneclip.core.deadline import Deadline
from sceneclip.core.execute import ExecutionStats, _copy_metadata, _take_samples, chunk_outside, source_invalid
from sceneclip.core.source import read_error
from sceneclip.core.tilecache import BlockCache
from sceneclip.core.warp_plan import WarpPlan

# The warper's transform error, in source pixels. GDAL's default (0.125, gdalwarp -et) interpolates the
# coordinate transform along each chunk's scanlines, so which source pixel "nearest" picks would depend on
# the chunk layout (a how-option, not in the fingerprint) and differ from gdalwarp's on ~0.1 % of pixels.
# 1e-6 is exact in effect (equal to gdalwarp -et 0 on the real antimeridian scene) and costs about 0.6 µs
# per output pixel here; rasterio refuses 0 itself.
TRANSFORM_TOLERANCE_PX = 1e-6
# Source pixels each kernel reaches beyond the point it samples, at scale 1 (GDAL widens them when
# downsampling, hence the scale factor applied in :func:`source_window`).
KERNEL_RADIUS = {"bilinear": 1, "cubic": 2, "cubic_spline": 2, "lanczos": 3}
# Decoded source blocks kept between chunks (per source): a row of 1024² chunks of a 3-band uint16 scene
# shares about 20 MB of blocks with the next row.
CACHE_BYTES = 64 * 1024 * 1024
ALPHA = 255  # source alpha for "has data" (GDAL's SRC_ALPHA_MAX default)
# rasterio < 1.5 (the Python 3.11 wheels, GDAL 3.10) has no ``tolerance`` in ``reproject``: it always uses the
# approximate transformer at 0.125 px. Its WarpedVRT takes a tolerance (not 0: that leaves GDAL's VRT without
# a transformer and its creation fails).
REPROJECT_TAKES_TOLERANCE = "tolerance" in __import__("inspect").signature(reproject).parameters


def source_window(src: Any, plan: WarpPlan, chunk: Window) -> Window | None:
    """The source pixels an output chunk can draw on: its bounds in the source CRS (21 points per edge, so
    curved edges are covered) plus the kernel's reach; None when the chunk lies off the source."""
    t = window_transform(chunk, plan.transform)
    x0, y1 = t * (0, 0)
    x1, y0 = t * (chunk.width, chunk.height)
    left, bottom, right, top = transform_bounds(plan.dst_crs, src.crs, min(x0, x1), min(y0, y1), max(x0, x1),
                                                max(y0, y1), densify_pts=21)
    inv = ~src.transform
    cols, rows = zip(*(inv * (x, y) for x in (left, right) for y in (bottom, top)), strict=True)
    # Source pixels per output pixel: a kernel spans that many more when downsampling.
    scale = max(1.0, (max(cols) - min(cols)) / chunk.width, (max(rows) - min(rows)) / chunk.height)
    reach = math.ceil(KERNEL_RADIUS.get(plan.resampling, 1) * scale) + 2
    c0, c1 = max(0, math.floor(min(cols)) - reach), min(src.width, math.ceil(max(cols)) + reach)
    r0, r1 = max(0, math.floor(min(rows)) - reach), min(src.height, math.ceil(max(rows)) + reach)
    if c0 >= c1 or r0 >= r1:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def warp_chunk(src: Any, plan: WarpPlan, chunk: Window, nodatavals: tuple,
               cache: BlockCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(values of the plan's bands, per-band "the source has data here") for one output chunk.

    A source whose every band has a nodata value is warped band by band against it (``UNIFIED_SRC_NODATA=NO``:
    a pixel that is nodata in one band only still feeds the others, as on the source grid and in
    gdalwarp), and an output value equal to it is invalid on its band. Any other source (alpha, mask band,
    all valid) is warped with its validity as source alpha, and the warper's output alpha says where it
    had data.
    """
    h, w = int(chunk.height), int(chunk.width)
    swin = source_window(src, plan, chunk)
    if swin is None:
        return np.zeros((plan.count, h, w), dtype=plan.dtype), np.zeros((plan.count, h, w), dtype=bool)
    raw = cache.read(swin) if cache is not None else src.read(window=swin)
    where = dict(src_transform=window_transform(swin, src.transform), src_crs=src.crs,
                 dst_transform=window_transform(chunk, plan.transform), dst_crs=plan.dst_crs,
                 resampling=Resampling[plan.resampling],
                 XSCALE=repr(plan.kernel_scale[0]), YSCALE=repr(plan.kernel_scale[1]))
    if all(nd is not None for nd in nodatavals) and len(set(map(str, nodatavals))) == 1 and not _has_mask(src):
        nd = nodatavals[0]
        data = np.full((plan.count, h, w), nd, dtype=plan.dtype)
        warp_exact(raw, data, src_nodata=nd, dst_nodata=nd, UNIFIED_SRC_NODATA="NO", **where)
        has_data = np.isnan(data) if math.isnan(nd) else data == np.array(nd).astype(data.dtype)
        return data, ~has_data
    invalid = source_invalid(src, raw, swin)
    stack = np.concatenate([raw, np.where(invalid.all(axis=0), 0, ALPHA).astype(raw.dtype)[np.newaxis]])
    out = np.zeros((plan.count + 1, h, w), dtype=plan.dtype)
    warp_exact(stack, out, src_alpha=plan.count + 1, dst_alpha=plan.count + 1, **where)
    return out[: plan.count], np.broadcast_to(out[plan.count] > 0, (plan.count, h, w)).copy()


def warp_exact(source: np.ndarray, destination: np.ndarray, *, src_transform: Any, src_crs: Any,
               dst_transform: Any, dst_crs: Any, resampling: Resampling, src_nodata: float | None = None,
               dst_nodata: float | None = None, src_alpha: int = 0, dst_alpha: int = 0, **options: Any) -> None:
    """GDAL's warper from array to array with the exact transform (so values cannot depend on the chunk layout).

    rasterio ≥ 1.5 does it in :func:`rasterio.warp.reproject`; older rasterio only through a WarpedVRT with
    the same tolerance over the source array held as an in-memory GeoTIFF.
    """
    if REPROJECT_TAKES_TOLERANCE:
        reproject(source, destination, src_transform=src_transform, src_crs=src_crs, dst_transform=dst_transform,
                  dst_crs=dst_crs, resampling=resampling, src_nodata=src_nodata, dst_nodata=dst_nodata,
                  src_alpha=src_alpha, dst_alpha=dst_alpha, tolerance=TRANSFORM_TOLERANCE_PX, **options)
        return
    count, height, width = source.shape
    nodata = {} if src_nodata is None else {"src_nodata": src_nodata, "nodata": dst_nodata}
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=width, height=height, count=count, dtype=source.dtype, crs=src_crs,
                      transform=src_transform, nodata=src_nodata) as ds:
            ds.write(source)
        with mem.open() as ds, WarpedVRT(ds, crs=dst_crs, transform=dst_transform, width=destination.shape[2],
                                         height=destination.shape[1], resampling=resampling,
                                         tolerance=TRANSFORM_TOLERANCE_PX,
                                         src_alpha=src_alpha, dst_alpha=dst_alpha, **nodata, **options) as vrt:
            destination[...] = vrt.read(out_dtype=destination.dtype)


def _has_mask(src: Any) -> bool:
    """Whether the source's validity comes from an alpha or mask band rather than nodata values."""
    return any({MaskFlags.alpha, MaskFlags.per_dataset} & set(flags) for flags in src.mask_flag_enums)


ChunkReader = Callable[[Window], tuple[np.ndarray, np.ndarray]]


def declared_nodata(src: Any, src_nodata: float | None) -> tuple:
    """Per-band nodata of ``src``; ``src_nodata`` stands in for bands that declare none (gdalwarp -srcnodata)."""
    return tuple(src_nodata if nd is None else nd for nd in src.nodatavals)


def source_reader(src: Any, plan: WarpPlan) -> ChunkReader:
    """Warped chunks of one source onto the plan's grid."""
    nodatavals = declared_nodata(src, plan.src_nodata)
    cache = BlockCache(src, CACHE_BYTES)
    return lambda chunk: warp_chunk(src, plan, chunk, nodatavals, cache)


def execute_warp(
    src: Any, plan: WarpPlan, dst_path: str, *, samples_per_chunk: int = 16, seed: int = 0,
    deadline: Deadline | None = None,
) -> ExecutionStats:
    """Warp chunk by chunk into a tiled GeoTIFF at ``dst_path``; return the counts and samples verification checks.

    With a ``deadline`` the loop stops between chunks once the budget is spent (DeadlineExceeded); a read
    failing after the deadline passed is reported as DeadlineExceeded too (a capped GDAL timeout fired).
    """
    return fill_grid(plan, dst_path, source_reader(src, plan), meta=src, name=src.name,
                     samples_per_chunk=samples_per_chunk, seed=seed, deadline=deadline)


def fill_grid(
    plan: WarpPlan, dst_path: str, read: ChunkReader, *, meta: Any, name: str, samples_per_chunk: int = 16,
    seed: int = 0, deadline: Deadline | None = None,
) -> ExecutionStats:
    """Fill the plan's grid chunk by chunk from ``read`` (values, per-band has-data) with the keep rule applied.

    ``meta`` is the dataset whose tags, descriptions and colours the output carries; ``name`` names it in errors.
    """
    stats = ExecutionStats()
    rng = np.random.default_rng(seed)
    profile = dict(INTERMEDIATE_OPTIONS, width=plan.width, height=plan.height, count=plan.count, dtype=plan.dtype,
                   crs=plan.dst_crs, transform=plan.transform, nodata=plan.nodata)
    fill = np.array(0 if plan.nodata is None else plan.nodata).astype(plan.dtype)
    nan_nodata = plan.nodata is not None and math.isnan(plan.nodata)
    total = len(plan.chunks)
    with rasterio.open(dst_path, "w", **profile) as dst:
        _copy_metadata(meta, dst)
        for n, chunk in enumerate(plan.chunks, start=1):
            if deadline is not None:
                deadline.check(f"before warping chunk {n}/{total} of {name}")
            try:
                data, has_data = read(chunk)
            except RasterioError as exc:
                if deadline is not None and deadline.expired():
                    raise deadline.exceeded(f"while warping chunk {n}/{total} of {name}") from exc
                raise read_error(exc, name) from exc
            outside, vertices = chunk_outside(plan, chunk, plan.transform)
            keep = ~outside
            valid = keep[np.newaxis, :, :] & has_data
            if nan_nodata:
                valid &= ~np.isnan(data)
            _write_chunk(dst, plan, chunk, data, valid, fill, stats, nan_nodata)
            stats.mask_vertices += vertices
            stats.inside_pixels += int(np.count_nonzero(keep))
            stats.chunks += 1
            _take_samples(stats, chunk, data, valid[0], rng, samples_per_chunk)
    return stats


def _write_chunk(dst: Any, plan: WarpPlan, chunk: Window, data: np.ndarray, valid: np.ndarray, fill: np.ndarray,
                 stats: ExecutionStats, nan_nodata: bool) -> None:
    """Invalid pixels become nodata (or masked); count valid pixels and real values colliding with nodata."""
    out = np.where(valid, data, fill).astype(plan.dtype, copy=False)
    dst.write(out, window=chunk)
    if plan.use_mask:
        dst.write_mask(np.where(valid.all(axis=0), 255, 0).astype("uint8"), window=chunk)
    elif plan.nodata is not None and not nan_nodata:
        stats.nodata_collisions += int(np.count_nonzero(valid & (data == fill)))
    stats.valid_pixels += int(np.count_nonzero(valid.all(axis=0) if plan.use_mask else valid[0]))
