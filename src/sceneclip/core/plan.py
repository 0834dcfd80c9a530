"""The compute step: options, what is known of a raster, and the clip plan — decided before a pixel is read.

As ``rasterio.mask`` splits compute from apply, :func:`plan_clip` turns (raster grid, boundary in raster CRS,
options) into a :class:`ClipPlan` (window, transform, nodata policy, chunk grid) without any pixel I/O, so
plans are unit-testable without opening a dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.features import geometry_window
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from sceneclip.core.cog import default_resampling
from sceneclip.core.gdalenv import DEFAULT_ALLOWED_DRIVERS
from sceneclip.core.geometry import overlap_with_raster, vertex_count
from sceneclip.core.limits import SourceLimits, check_window
from sceneclip.errors import InvalidOptionsError, NoOverlapError, RasterReadError

MIB = 1024 * 1024
# The one default for the in-memory threshold (the CLI's --memory-limit, SCENECLIP_MEMORY_LIMIT_MB and the library).
DEFAULT_MEMORY_LIMIT_MB = 256


@dataclass(frozen=True)
class ClipOptions:
    """How to clip. Defaults follow ``rasterio.mask.mask(crop=True)``.

    all_touched: keep every pixel the boundary touches, not only those whose centre is inside.
    invert: keep the outside and blank the inside (exclusion zones); implies the raster's full extent.
    crop: False keeps the full raster extent and only masks.
    pad: widen the crop window by half a pixel on each side, as rasterio does, for thin polygons.
    nodata: output nodata value; default: the source's, NaN for floats, an internal mask for integers.
    profile / overview_resampling: COG compression profile and overview resampling (None: AVERAGE, or
    NEAREST for paletted data).
    dst_crs / resolution / target_aligned: a target grid (:mod:`~sceneclip.core.grid`). With either of the
    first two set the clip is warped onto a grid in ``dst_crs`` (default: the source's) at ``resolution``
    (x, y in CRS units; default: GDAL's suggestion for the source); ``target_aligned`` puts the origin on
    multiples of the resolution (``gdalwarp -tap``). A region that carries its own grid overrides all three.
    resampling: the warp resampling (GDAL's names; default nearest, as gdalwarp and ``rio warp``); only
    used when warping. force_resampling: allow interpolating resampling of categorical (paletted) data.
    src_nodata: nodata for sources that declare none (``gdalwarp -srcnodata``), e.g. the zero collar of a
    scene; the clip then goes through the warper (onto the source's own grid when no target grid is set).
    chunk_size: pixels per side of the chunks streamed from source to output (a multiple of 512; rounded to
    whole source tiles, with chunk edges on the source's tile grid so no tile is fetched twice).
    memory_limit: above this uncompressed window size the COG goes to ``tmpdir`` instead of memory (the
    intermediate always does; in memory, peak RSS grows by the COG's size; spilled, it stays flat).
    chunk_bytes: values per chunk, all bands (the chunk side shrinks as bands × item size grow, so memory
    per chunk is bounded whatever the band count; never below one source block).
    allowed_drivers: the only GDAL drivers a source is opened with (GTiff reads COGs too).
    limits: caps checked from the header before any pixel is read (:class:`~sceneclip.core.limits.SourceLimits`).
    simplify_fraction / simplify_above: a boundary with more than ``simplify_above`` vertices inside the
    raster is simplified to ``simplify_fraction`` of a pixel first (finer detail cannot change which pixel
    centres it holds except for centres that close to an edge), then capped by ``limits.max_vertices``; if
    still above ``simplify_above`` it is clipped to each chunk before rasterising. Smaller boundaries are
    rasterised exactly as given (bit-identical to ``rasterio.mask``).
    """

    all_touched: bool = False
    invert: bool = False
    crop: bool = True
    pad: bool = False
    nodata: float | None = None
    profile: str = "deflate"
    overview_resampling: str | None = None
    resampling: str = "nearest"
    dst_crs: str | None = None
    resolution: tuple[float, float] | None = None
    target_aligned: bool = False
    force_resampling: bool = False
    src_nodata: float | None = None
    chunk_size: int = 1024
    memory_limit: int = DEFAULT_MEMORY_LIMIT_MB * MIB
    tmpdir: str | None = None
    samples_per_chunk: int = 16
    gdal_cache_mb: int = 64
    chunk_bytes: int = 64 * MIB
    allowed_drivers: tuple[str, ...] = DEFAULT_ALLOWED_DRIVERS
    limits: SourceLimits = field(default_factory=SourceLimits)
    simplify_fraction: float = 0.1
    simplify_above: int = 20_000

    # The options that change the output's bytes; the others (memory, tmpdir, sampling, cache) only change how.
    OUTPUT_FIELDS: ClassVar[tuple[str, ...]] = (
        "all_touched", "invert", "crop", "pad", "nodata", "profile", "overview_resampling", "resampling", "dst_crs",
        "resolution", "target_aligned", "src_nodata",
    )

    def fingerprint(self, **context: Any) -> str:
        """sha256 (16 hex) of the options that change the output, plus ``context`` (e.g. where outputs go).

        The one definition of "same options": the Lambda's configuration hash (idempotency key, backfill skip
        rule) and batch's resume rule both come from here, so an option added to ``OUTPUT_FIELDS`` can never
        be forgotten by one of them and silently serve stale outputs.
        """
        doc: dict[str, Any] = {name: getattr(self, name) for name in self.OUTPUT_FIELDS}
        for name in ("nodata", "src_nodata"):
            if doc[name] is not None and math.isnan(doc[name]):
                doc[name] = "nan"  # NaN != NaN, and JSON has no NaN
        doc.update(context)
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def __post_init__(self) -> None:
        if self.invert and self.crop:
            # rasterio leaves the inverted crop half-defined; we make invert mean "the raster's extent".
            object.__setattr__(self, "crop", False)
        if self.chunk_size <= 0 or self.chunk_size % 512:
            raise InvalidOptionsError(f"chunk_size must be a positive multiple of 512, got {self.chunk_size}")
        if self.chunk_bytes <= 0:
            raise InvalidOptionsError(f"chunk_bytes must be positive, got {self.chunk_bytes}")
        if not self.allowed_drivers:
            raise InvalidOptionsError("allowed_drivers must name at least one GDAL driver (e.g. 'GTiff')")
        if self.pad and not self.crop:
            raise InvalidOptionsError("pad widens the crop window; it has no meaning with crop=False or invert")
        self._check_grid_options()

    @property
    def warps(self) -> bool:
        """Whether these options ask for a target grid (a region's own grid can still ask for one)."""
        return self.dst_crs is not None or self.resolution is not None

    def _check_grid_options(self) -> None:
        """Resolution as an (x, y) pair of positive numbers, a known warp resampling and a parseable CRS."""
        from sceneclip.core.grid import WARP_RESAMPLING, check_crs

        if self.resampling not in WARP_RESAMPLING:
            raise InvalidOptionsError(f"unknown resampling {self.resampling!r}; choose one of {', '.join(WARP_RESAMPLING)}")
        if self.resolution is not None:
            res = self.resolution if isinstance(self.resolution, (tuple, list)) else (self.resolution,)
            if len(res) not in (1, 2):
                raise InvalidOptionsError(f"resolution takes one value (square pixels) or two (x, y), got {res}")
            pair = (float(res[0]), float(res[-1]))
            if not all(math.isfinite(v) and v > 0 for v in pair):
                raise InvalidOptionsError(f"resolution must be positive numbers, got {res}")
            object.__setattr__(self, "resolution", pair)
        if self.dst_crs is not None:
            check_crs(self.dst_crs, "dst_crs")
        if (self.warps or self.src_nodata is not None) and (self.invert or not self.crop or self.pad):
            raise InvalidOptionsError(GRID_CONFLICT)


# The one wording for options a warped clip does not support (checked here and again for a region's own grid).
GRID_CONFLICT = ("invert, crop=False (--no-crop) and pad keep or widen the source's extent on the source's grid; "
                 "they cannot be combined with a target grid (dst_crs/resolution or a region grid), src_nodata "
                 "or several sources")


@dataclass(frozen=True)
class RasterInfo:
    """What the planner needs to know about a source raster (no open dataset, so plans are testable)."""

    name: str
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    has_colormap: bool = False
    has_alpha: bool = False
    block_shape: tuple[int, int] = (0, 0)  # source (rows, cols) block; (0, 0) = unknown

    @classmethod
    def from_dataset(cls, ds: Any, name: str | None = None) -> RasterInfo:
        """What the planner needs from an open dataset; bands of mixed dtypes are refused (one output dtype)."""
        dtypes = set(ds.dtypes)
        if len(dtypes) != 1:
            raise RasterReadError(f"{name or ds.name}: bands of different data types {sorted(dtypes)} are not supported")
        try:
            has_cmap = bool(ds.colormap(1))
        except ValueError:
            has_cmap = False
        return cls(
            name=name or ds.name,
            crs=ds.crs,
            transform=ds.transform,
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=ds.dtypes[0],
            nodata=ds.nodata,
            has_colormap=has_cmap,
            has_alpha=MaskFlags.alpha in ds.mask_flag_enums[0],
            block_shape=tuple(ds.block_shapes[0]) if ds.block_shapes else (0, 0),
        )

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the raster's CRS."""
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (self.width, self.height)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@dataclass(frozen=True)
class ClipPlan:
    """Everything decided before a pixel is read.

    ``window`` is in source pixel coordinates; ``chunks`` tile the output grid; ``shapes`` are in the raster
    CRS and are what the mask is rasterized from; ``overlap_bounds`` is the bbox of boundary ∩ raster.
    """

    window: Window
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    shapes: tuple[BaseGeometry, ...]
    overlap_bounds: tuple[float, float, float, float]
    all_touched: bool
    invert: bool
    crop: bool
    nodata: float | None
    use_mask: bool
    overview_resampling: str
    chunks: tuple[Window, ...]
    pad: bool = False  # the window was widened by half a pixel (rasterio's pad)
    clip_per_chunk: bool = False  # a large boundary: clipped to each chunk before rasterising

    @property
    def uncompressed_bytes(self) -> int:
        """The window's size in memory: pixels × bands × bytes per sample."""
        return self.width * self.height * self.count * np.dtype(self.dtype).itemsize

    def source_window(self, chunk: Window) -> Window:
        """Where an output chunk lies in the source's pixel grid."""
        return Window(self.window.col_off + chunk.col_off, self.window.row_off + chunk.row_off, chunk.width, chunk.height)


class _Grid:
    """The three attributes ``rasterio.features.geometry_window`` reads from a dataset."""

    def __init__(self, info: RasterInfo) -> None:
        self.transform, self.width, self.height = info.transform, info.width, info.height


def choose_nodata(info: RasterInfo, requested: float | None) -> tuple[float | None, bool]:
    """(nodata value, use internal mask). Never a value that can collide with real data.

    Priority: an explicit request; the source's nodata; the source's alpha band (kept, and zeroed outside);
    NaN for floats; an internal mask for integers (any integer value could be real data, and proving one
    absent costs a second pass over the window).
    """
    dt = np.dtype(info.dtype)
    if requested is not None:
        if dt.kind in "iu":
            if math.isnan(requested) or requested != int(requested):
                raise InvalidOptionsError(f"nodata {requested} is not an integer, but the raster is {info.dtype}")
            lim = np.iinfo(dt)
            if not lim.min <= requested <= lim.max:
                raise InvalidOptionsError(
                    f"nodata {requested:g} does not fit {info.dtype} ({lim.min}..{lim.max}); pick a value in range"
                )
        return float(requested), False
    if info.nodata is not None:
        return float(info.nodata), False
    if info.has_alpha:
        return None, False
    if dt.kind == "f":
        return float("nan"), False
    return None, True


def _edges(length: int, offset: int, size: int, block: int, extent: int) -> list[int]:
    """Chunk edges along one axis of the window, at source-block boundaries.

    ``offset`` is the window's start in the source, ``block`` the source's block size on this axis and
    ``extent`` the source's size. Edges fall where ``offset + edge`` is a multiple of the step (``size``
    rounded to whole source blocks), so no source tile is cut by a chunk edge and fetched twice. For striped
    sources (a block spans the whole row) columns need no alignment.
    """
    if block >= extent or block <= 0:
        step = size
        first = size
    else:
        step = max(block, (size // block) * block)
        first = step - (offset % step)
    edges = [0]
    edge = first
    while edge < length:
        edges.append(edge)
        edge += step
    edges.append(length)
    return edges


def chunk_grid(
    width: int, height: int, size: int, *, offset: tuple[int, int] = (0, 0), block: tuple[int, int] = (0, 0),
    source_shape: tuple[int, int] = (0, 0),
) -> tuple[Window, ...]:
    """Chunks tiling the output window, their edges on the *source's* block grid.

    Reading is what costs (bytes over the network); writing a chunk that straddles output blocks only costs
    GDAL a partial-block update in its cache. ``offset`` = (col_off, row_off) of the window in the source,
    ``block`` = source (rows, cols) block shape, ``source_shape`` = source (height, width).
    """
    cols = _edges(width, offset[0], size, block[1], source_shape[1])
    rows = _edges(height, offset[1], size, block[0], source_shape[0])
    return tuple(
        Window(c0, r0, c1 - c0, r1 - r0)
        for r0, r1 in zip(rows[:-1], rows[1:], strict=True)
        for c0, c1 in zip(cols[:-1], cols[1:], strict=True)
    )


def chunk_side(size: int, chunk_bytes: int, count: int, dtype: str) -> int:
    """Pixels per chunk side: at most ``size``, and small enough that count × side² × itemsize ≤ chunk_bytes.

    224 float32 bands at 1024² would be 940 MB per chunk (2.4 GB peak with the masks and the output copy);
    sized by bytes the same window streams in chunks of ``chunk_bytes``.
    """
    per_pixel = max(1, int(count) * np.dtype(dtype).itemsize)
    return max(1, min(size, math.isqrt(max(1, chunk_bytes // per_pixel))))


def plan_clip(info: RasterInfo, shapes: list[BaseGeometry], options: ClipOptions) -> ClipPlan:
    """Decide window, transform, nodata policy and chunks. Pure: no pixel I/O.

    The window follows ``rasterio.features.geometry_window`` (floor of offsets, ceiling of extents, optional
    half-pixel pad) applied to boundary ∩ raster, so the output grid sits exactly on the source grid.
    Raises NoOverlapError when boundary ∩ raster is empty.
    """
    overlap = overlap_with_raster(shapes, info.bounds)
    if overlap.is_empty:
        raise NoOverlapError(
            f"boundary does not overlap {info.name} (raster bounds {tuple(round(v, 6) for v in info.bounds)} in {info.crs})"
        )
    overlap_bounds = tuple(float(v) for v in overlap.bounds)
    if options.crop:
        pad = 0.5 if options.pad else 0.0
        try:
            window = geometry_window(_Grid(info), [box(*overlap_bounds)], pad_x=pad, pad_y=pad)
        except rasterio.errors.WindowError as exc:
            raise NoOverlapError(f"boundary does not overlap {info.name}: {exc}") from exc
        window = Window(int(window.col_off), int(window.row_off), int(window.width), int(window.height))
        if window.width <= 0 or window.height <= 0:
            raise NoOverlapError(f"boundary only touches the edge of {info.name}; no pixel lies under it")
    else:
        window = Window(0, 0, info.width, info.height)
    check_window(int(window.width), int(window.height), info.count, info.dtype, info.name, options.limits)
    nodata, use_mask = choose_nodata(info, options.nodata)
    overview_resampling = options.overview_resampling or default_resampling(info.has_colormap)
    return ClipPlan(
        window=window,
        transform=window_transform(window, info.transform),
        width=int(window.width),
        height=int(window.height),
        count=info.count,
        dtype=info.dtype,
        shapes=tuple(shapes),
        overlap_bounds=overlap_bounds,  # type: ignore[arg-type]
        all_touched=options.all_touched,
        invert=options.invert,
        crop=options.crop,
        nodata=nodata,
        use_mask=use_mask,
        overview_resampling=overview_resampling,
        chunks=chunk_grid(
            int(window.width), int(window.height), chunk_side(options.chunk_size, options.chunk_bytes, info.count, info.dtype),
            offset=(int(window.col_off), int(window.row_off)), block=info.block_shape,
            source_shape=(info.height, info.width),
        ),
        pad=options.pad and options.crop,
        clip_per_chunk=vertex_count(shapes) > options.simplify_above,
    )
