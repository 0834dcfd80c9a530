"""Several single-scene rasters (a STAC Item's band assets), one multi-band clip: each source's bands warped
onto one grid, side by side, in the order given.

* **Grid**: the target grid (the region's, else the options'), else the *finest* source's CRS, pixel size and
  lattice (smallest pixel area; the first of equals), so no source loses resolution. Sources of other
  resolutions are resampled onto it with the options' resampling (nearest by default); a categorical source
  (a colour table, or flagged by the caller, e.g. a STAC ``classification:*`` asset) refuses interpolating
  resampling unless forced — :func:`~sceneclip.core.warp_plan.refuse_categorical`, the one rule.
* **Bands**: source *i*'s bands follow source *i−1*'s; band descriptions are the sources' labels (``label``
  for a one-band source, ``label:1``, ``label:2``… for a multi-band one).
* **Data type**: numpy's promotion of the sources' types (``uint8`` + ``uint16`` → ``uint16``), which holds
  every source value exactly; a mix numpy can only promote lossily (``int64`` + ``uint64`` → ``float64``) is
  refused.
* **Nodata**: one value for the file (GeoTIFF has one per dataset), applied per band: a pixel the source of
  band *b* has no data for is nodata on band *b* only. It is the explicit nodata if given, else the one value
  every source that declares a nodata declares (sources that declare none are all-valid; a real pixel equal
  to it is caught by verification as a collision), else NaN for floats or an internal mask for integers (the
  rule of :func:`~sceneclip.core.plan.choose_nodata`). Sources declaring *different* nodata values are
  refused: rewriting one source's nodata to another's value could collide with its real data.
* **Extent**: the union of the sources' clips on the grid (the assets of one Item share one footprint).

Memory stays at a few chunks: each output chunk is filled source by source through
:func:`~sceneclip.core.warp.warp_chunk` (each source with its own block cache). Pure: no AWS; a caller that
must read each source under its own settings (e.g. per-object HTTP headers) passes a ``context`` per source,
entered around that source's open and every read.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.windows import Window

from sceneclip.core.cog import default_resampling
from sceneclip.core.geometry import Boundary
from sceneclip.core.grid import TargetGrid
from sceneclip.core.limits import check_window
from sceneclip.core.mosaic import windows_overlap
from sceneclip.core.plan import ClipOptions, RasterInfo, chunk_grid, chunk_side
from sceneclip.core.source import read_error
from sceneclip.core.tilecache import BlockCache
from sceneclip.core.warp import CACHE_BYTES, ChunkReader, declared_nodata, warp_chunk
from sceneclip.core.warp_plan import WarpPlan, choose_grid, plan_warp, refuse_categorical
from sceneclip.errors import MissingCRSError, NoOverlapError, UnsupportedRasterError

SourceContext = Callable[[], AbstractContextManager[Any]]


@dataclass(frozen=True)
class StackInput:
    """A source to open for a stack: its path (as GDAL opens it), its name in records and errors, its label,
    and the optional read context and categorical flag it passes on to :class:`StackSource`."""

    path: str
    name: str
    label: str
    context: SourceContext | None = None
    categorical: bool = False


@dataclass(frozen=True)
class StackSource:
    """One source of a stack: its open dataset, what the planner knows of it, its label (band description)
    and, optionally, the context its reads run in. ``categorical`` marks classes the caller knows of (e.g.
    from STAC metadata) beyond a colour table."""

    src: Any
    info: RasterInfo
    label: str
    context: SourceContext | None = None
    categorical: bool = False


@dataclass(frozen=True)
class StackPart:
    """A source planned onto the stack grid: its plan (its own bands and dtype, re-based onto the stack's
    transform and chunks), its extent on that grid and its first band in the stack (0-based)."""

    source: StackSource
    plan: WarpPlan
    window: Window
    first_band: int


def stack_dtype(infos: Sequence[RasterInfo]) -> str:
    """numpy's promotion of the sources' data types, refused when it cannot hold every value exactly."""
    dtypes = [np.dtype(i.dtype) for i in infos]
    common = np.result_type(*dtypes)
    lossy = [i for i, d in zip(infos, dtypes, strict=True) if not _exact(d, common)]
    if lossy:
        raise UnsupportedRasterError(
            "a stack of " + ", ".join(f"{i.name} ({i.dtype})" for i in infos) + f" would need {common}, which "
            f"cannot hold every value of {', '.join(i.name for i in lossy)} exactly; stack fewer assets")
    return str(common)


def _exact(src: np.dtype, dst: np.dtype) -> bool:
    """Whether every ``src`` value is a ``dst`` value. numpy calls int64 → float64 "safe"; it is not (53-bit
    mantissa), so an integer into a float must fit the float's significand."""
    if src.kind in "iu" and dst.kind == "f":
        return src.itemsize * 8 - (src.kind == "i") <= np.finfo(dst).nmant + 1
    return bool(np.can_cast(src, dst, casting="safe"))


def stack_nodata(infos: Sequence[RasterInfo], requested: float | None, dtype: str) -> tuple[float | None, bool]:
    """(nodata, use internal mask) of the stack: see the module docstring for the rule."""
    if requested is not None:
        from sceneclip.core.plan import choose_nodata  # its range checks for an explicit value

        return choose_nodata(replace(infos[0], dtype=dtype, nodata=None, has_alpha=False), requested)
    declared = {i.name: i.nodata for i in infos if i.nodata is not None}
    values = {"nan" if math.isnan(v) else float(v) for v in declared.values()}
    if len(values) > 1:
        raise UnsupportedRasterError(
            "the stacked sources declare different nodata values ("
            + ", ".join(f"{name}: {v:g}" for name, v in declared.items())
            + "); one output holds one nodata value: set it explicitly (SCENECLIP_NODATA / --nodata)")
    if values:
        return float(next(iter(declared.values()))), False
    return (float("nan"), False) if np.dtype(dtype).kind == "f" else (None, True)


def finest(infos: Sequence[RasterInfo]) -> RasterInfo:
    """The source with the smallest pixel area (the first of equals)."""
    return min(infos, key=lambda i: abs(i.transform.a * i.transform.e))


def stack_grid(infos: Sequence[RasterInfo], options: ClipOptions, region_grid: TargetGrid | None) -> TargetGrid:
    """The target grid if there is one, else the finest source's CRS, pixel size and lattice."""
    best = finest(infos)
    return choose_grid(best, options, region_grid) or TargetGrid.of_source(best.crs, best.transform)


def band_labels(sources: Sequence[StackSource]) -> list[str]:
    """Band descriptions: the label for a one-band source, ``label:n`` (1-based) for each band of a larger one."""
    return [s.label if s.info.count == 1 else f"{s.label}:{n}" for s in sources for n in range(1, s.info.count + 1)]


def _refuse_mismatch(sources: Sequence[StackSource], options: ClipOptions) -> None:
    for s in sources:
        if s.info.crs is None:
            raise MissingCRSError(f"{s.info.name} has no CRS: it cannot be placed on a stack's grid; assign one first")
        refuse_categorical(replace(s.info, has_colormap=s.info.has_colormap or s.categorical), options)


def plan_stack(sources: Sequence[StackSource], boundary: Boundary, options: ClipOptions,
               region_grid: TargetGrid | None) -> tuple[WarpPlan, list[StackPart]]:
    """The stack's plan (grid, extent = union of the sources' extents, bands, dtype, nodata, chunks) and its
    parts. A source whose footprint misses the boundary keeps its bands (all nodata); none overlapping is a
    NoOverlapError. Pure: no pixel read."""
    _refuse_mismatch(sources, options)
    infos = [s.info for s in sources]
    grid = stack_grid(infos, options, region_grid)
    planned: list[tuple[StackSource, WarpPlan, int]] = []
    first_band = 0
    for s in sources:
        try:
            planned.append((s, plan_warp(s.info, boundary, options, grid), first_band))
        except NoOverlapError:
            pass  # off the region: its bands stay nodata
        first_band += s.info.count
    if not planned:
        raise NoOverlapError(f"boundary {boundary.source!r} overlaps none of the {len(sources)} stacked sources")
    plans = [p for _, p, _ in planned]
    xres, yres = grid.resolution
    transform, width, height = grid.snap((min(p.transform.c for p in plans),
                                          min(p.transform.f - p.height * yres for p in plans),
                                          max(p.transform.c + p.width * xres for p in plans),
                                          max(p.transform.f for p in plans)))
    dtype = stack_dtype(infos)
    # The stack is one output: its window is capped as a whole (each source's was, alone, in plan_warp).
    check_window(width, height, first_band, dtype, " + ".join(i.name for i in infos), options.limits)
    nodata, use_mask = stack_nodata(infos, options.nodata, dtype)
    chunks = chunk_grid(width, height, chunk_side(options.chunk_size, options.chunk_bytes, first_band + 1, dtype))
    categorical = any(s.info.has_colormap or s.categorical for s in sources)
    stack = replace(plans[0], transform=transform, width=width, height=height, count=first_band, dtype=dtype,
                    nodata=nodata, use_mask=use_mask, chunks=chunks, src_nodata=None,
                    overview_resampling=options.overview_resampling or default_resampling(categorical),
                    overlap_bounds=(min(p.overlap_bounds[0] for p in plans), min(p.overlap_bounds[1] for p in plans),
                                    max(p.overlap_bounds[2] for p in plans), max(p.overlap_bounds[3] for p in plans)))
    parts = []
    for s, plan, band in planned:
        col = round((plan.transform.c - transform.c) / xres)
        row = round((transform.f - plan.transform.f) / yres)
        parts.append(StackPart(s, replace(plan, transform=transform, width=width, height=height, chunks=chunks),
                               Window(col, row, plan.width, plan.height), band))
    return stack, parts


def entered(source: StackInput | StackSource) -> AbstractContextManager[Any]:
    """The context a source's open or read runs in (its ``context``, else nothing)."""
    return source.context() if source.context is not None else contextlib.nullcontext()


def stack_reader(parts: Sequence[StackPart], plan: WarpPlan) -> ChunkReader:
    """Chunks of the stack: each source's bands warped into their slot; nodata (or 0 under a mask) wherever
    a band's source has no data, so the values sampled for verification are the values written."""
    nodata = [declared_nodata(p.source.src, p.plan.src_nodata) for p in parts]
    caches = [BlockCache(p.source.src, CACHE_BYTES // len(parts)) for p in parts]
    fill = np.array(0 if plan.nodata is None else plan.nodata).astype(plan.dtype)

    def read(chunk: Window) -> tuple[np.ndarray, np.ndarray]:
        shape = (plan.count, int(chunk.height), int(chunk.width))
        data = np.full(shape, fill, dtype=plan.dtype)
        has = np.zeros(shape, dtype=bool)
        for part, nodatavals, cache in zip(parts, nodata, caches, strict=True):
            if not windows_overlap(chunk, part.window):
                continue
            try:
                with entered(part.source):
                    values, valid = warp_chunk(part.source.src, part.plan, chunk, nodatavals, cache)
            except RasterioError as exc:
                raise read_error(exc, part.source.info.name) from exc
            bands = slice(part.first_band, part.first_band + part.plan.count)
            data[bands] = np.where(valid, values.astype(plan.dtype), fill)
            has[bands] = valid
        if plan.use_mask:  # one mask for every band: a pixel is kept only where every band has data
            has[:] = has.all(axis=0)
        return data, has

    return read


class StackMeta:
    """What :func:`~sceneclip.core.warp.fill_grid` copies onto the output, for a stack: the band descriptions
    (labels), units, scales and offsets of each source's bands in order; no dataset tags or colour table
    (they describe one source, not the stack)."""

    def __init__(self, sources: Sequence[StackSource]) -> None:
        self.count = sum(s.info.count for s in sources)
        self.descriptions = tuple(band_labels(sources))
        self.units = tuple(u for s in sources for u in s.src.units)
        self.scales = tuple(v for s in sources for v in s.src.scales)
        self.offsets = tuple(v for s in sources for v in s.src.offsets)
        self.colorinterp = (ColorInterp.gray,) + (ColorInterp.undefined,) * (self.count - 1)

    def tags(self, band: int | None = None) -> dict[str, str]:
        return {}

    def colormap(self, band: int) -> None:
        raise ValueError("a stack carries no colour table")
