"""Several scenes, one clip: the sources' warped pixels merged onto one grid, the first valid pixel winning.

The grid is the target grid (the region's, else the options'), else the first source's CRS and pixel size
on the first source's own lattice. Each source is planned onto that grid (:func:`~sceneclip.core.
warp_plan.plan_warp`); a source whose footprint misses the region is dropped after its header, so it costs
nothing more. The mosaic's extent is the union of the sources' extents (all on one lattice); each output
chunk is filled source by source in the order given, a pixel taken from a source only where no earlier
source had data (``rio merge``'s default; gdalwarp lets *later* inputs win). Nodata, alpha and mask bands
of every source are honoured, and ``src_nodata`` stands in for sources that declare none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from rasterio.windows import Window

from sceneclip.core.geometry import Boundary
from sceneclip.core.grid import TargetGrid
from sceneclip.core.plan import ClipOptions, RasterInfo, chunk_grid, chunk_side
from sceneclip.core.source import read_error
from sceneclip.core.tilecache import BlockCache
from sceneclip.core.warp import CACHE_BYTES, ChunkReader, declared_nodata, warp_chunk
from sceneclip.core.warp_plan import WarpPlan, choose_grid, plan_warp
from rasterio.errors import RasterioError

from sceneclip.errors import MissingCRSError, NoOverlapError, UnsupportedRasterError


@dataclass(frozen=True)
class MosaicPart:
    """One source of a mosaic: its open dataset, its plan onto the mosaic grid, and where it lies in it."""

    src: Any
    info: RasterInfo
    plan: WarpPlan  # re-based onto the mosaic's transform and chunks
    window: Window  # the source's own extent on the mosaic grid


def mosaic_grid(infos: list[RasterInfo], options: ClipOptions, region_grid: TargetGrid | None) -> TargetGrid:
    """The target grid if there is one, else the first source's CRS, pixel size and lattice."""
    first = infos[0]
    return choose_grid(first, options, region_grid) or TargetGrid.of_source(first.crs, first.transform)


def plan_mosaic(sources: list[tuple[Any, RasterInfo]], boundary: Boundary, options: ClipOptions,
                region_grid: TargetGrid | None) -> tuple[WarpPlan, list[MosaicPart]]:
    """The mosaic's plan (grid, extent = union of the sources' extents, chunks) and its parts, in order.

    Raises NoOverlapError when no source overlaps the boundary, UnsupportedRasterError when the sources do
    not share band count and data type (one output cannot hold both).
    """
    infos = [info for _, info in sources]
    first = infos[0]
    for info in infos:
        if info.crs is None:
            raise MissingCRSError(f"{info.name} has no CRS: it cannot be placed in a mosaic; assign one first")
    for info in infos[1:]:
        if (info.count, info.dtype) != (first.count, first.dtype):
            raise UnsupportedRasterError(
                f"{info.name} has {info.count} band(s) of {info.dtype}, {first.name} {first.count} of {first.dtype}: "
                "a mosaic needs the same bands and data type in every source"
            )
    grid = mosaic_grid(infos, options, region_grid)
    planned = []
    for src, info in sources:
        try:
            planned.append((src, info, plan_warp(info, boundary, options, grid)))
        except NoOverlapError:
            continue  # off the region: only its header was read
    if not planned:
        raise NoOverlapError(f"boundary {boundary.source!r} overlaps none of the {len(sources)} sources")
    left, top = min(p.transform.c for *_, p in planned), max(p.transform.f for *_, p in planned)
    xres, yres = grid.resolution
    right = max(p.transform.c + p.width * xres for *_, p in planned)
    bottom = min(p.transform.f - p.height * yres for *_, p in planned)
    transform, width, height = grid.snap((left, bottom, right, top))
    side = chunk_side(options.chunk_size, options.chunk_bytes, first.count + 1, first.dtype)
    chunks = chunk_grid(width, height, side)
    base = planned[0][2]
    mosaic = replace(base, transform=transform, width=width, height=height, chunks=chunks,
                     overlap_bounds=(min(p.overlap_bounds[0] for *_, p in planned),
                                     min(p.overlap_bounds[1] for *_, p in planned),
                                     max(p.overlap_bounds[2] for *_, p in planned),
                                     max(p.overlap_bounds[3] for *_, p in planned)))
    parts = []
    for src, info, plan in planned:
        col = round((plan.transform.c - transform.c) / xres)
        row = round((transform.f - plan.transform.f) / yres)
        parts.append(MosaicPart(src, info, replace(plan, transform=transform, width=width, height=height,
                                                   chunks=chunks), Window(col, row, plan.width, plan.height)))
    return mosaic, parts


def mosaic_reader(parts: list[MosaicPart], plan: WarpPlan) -> ChunkReader:
    """Chunks of the mosaic: each pixel (per band) from the first source, in order, that has data there."""
    nodata = [declared_nodata(p.src, p.plan.src_nodata) for p in parts]
    caches = [BlockCache(p.src, CACHE_BYTES // len(parts)) for p in parts]

    def read(chunk: Window) -> tuple[np.ndarray, np.ndarray]:
        shape = (plan.count, int(chunk.height), int(chunk.width))
        data = np.zeros(shape, dtype=plan.dtype)
        has = np.zeros(shape, dtype=bool)
        for part, nodatavals, cache in zip(parts, nodata, caches, strict=True):
            if not windows_overlap(chunk, part.window) or has.all():
                continue
            try:
                values, valid = warp_chunk(part.src, part.plan, chunk, nodatavals, cache)
            except RasterioError as exc:
                raise read_error(exc, part.info.name) from exc
            take = valid & ~has
            data[take] = values[take]
            has |= valid
        return data, has

    return read


def windows_overlap(a: Window, b: Window) -> bool:
    return (a.col_off < b.col_off + b.width and b.col_off < a.col_off + a.width
            and a.row_off < b.row_off + b.height and b.row_off < a.row_off + a.height)
