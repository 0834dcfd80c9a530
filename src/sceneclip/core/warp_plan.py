"""The compute step of a warped clip: which target grid, its extent, and the boundary on it — no pixel read.

:func:`plan_for_dataset` in :mod:`~sceneclip.core.clip` plans a clip on the source's own grid; when the
options or the region ask for a target grid, :func:`plan_warp` plans one onto that grid instead:

* the grid is the region's own (:attr:`Boundary.grid`), else the options' (``dst_crs``, ``resolution``,
  ``target_aligned``), with GDAL's rule for the resolution when only a CRS is given (as ``gdalwarp -t_srs``);
* the extent is boundary ∩ source footprint, both in the grid's CRS (the footprint densified, so curved
  edges of a reprojected scene are followed), snapped outward by :meth:`TargetGrid.snap`;
* the boundary is carried to the grid's CRS with densified edges: the destination-grid pixel rule
  (centre inside, or all touched) is applied to exactly these shapes;
* categorical (paletted) sources refuse interpolating resampling unless forced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from sceneclip.core.cog import default_resampling
from sceneclip.core.geometry import Boundary, raster_footprint, simplify_for_grid, to_raster_crs, vertex_count
from sceneclip.core.grid import CATEGORICAL_SAFE, TargetGrid, check_crs
from sceneclip.core.limits import check_vertices, check_window
from sceneclip.core.plan import GRID_CONFLICT, ClipOptions, RasterInfo, choose_nodata, chunk_grid, chunk_side
from sceneclip.errors import InvalidOptionsError, NoOverlapError, ResamplingRefusedError


@dataclass(frozen=True)
class WarpPlan:
    """Everything decided before a warped clip reads a pixel.

    ``transform``/``width``/``height`` are the output grid in ``dst_crs``; ``chunks`` tile it; ``shapes`` are
    the boundary in ``dst_crs`` (what the keep mask is rasterised from); ``overlap_bounds`` is the bbox of
    boundary ∩ source footprint in ``dst_crs``. The attribute names shared with
    :class:`~sceneclip.core.plan.ClipPlan` mean the same, so the COG writer, the workspace and the per-chunk
    mask rule serve both.
    """

    src_crs: CRS
    dst_crs: CRS
    grid: TargetGrid
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    shapes: tuple[BaseGeometry, ...]
    overlap_bounds: tuple[float, float, float, float]
    all_touched: bool
    nodata: float | None
    use_mask: bool
    resampling: str  # the warp's
    overview_resampling: str
    chunks: tuple[Window, ...]
    clip_per_chunk: bool = False
    kernel_scale: tuple[float, float] = (1.0, 1.0)  # output pixels per source pixel, x and y (GDAL XSCALE/YSCALE)
    src_nodata: float | None = None  # declared for a source that has none (gdalwarp -srcnodata)
    # A warped clip always crops to the boundary and never inverts (GRID_CONFLICT).
    invert: bool = False
    crop: bool = True
    pad: bool = False

    @property
    def uncompressed_bytes(self) -> int:
        """The output grid's size in memory: pixels × bands × bytes per sample."""
        return self.width * self.height * self.count * np.dtype(self.dtype).itemsize


def choose_grid(info: RasterInfo, options: ClipOptions, region_grid: TargetGrid | None) -> TargetGrid | None:
    """The grid a clip lands on: the region's, else the options', else None (the source's own grid).

    Only a CRS given: the source's native resolution in that CRS (:func:`native_resolution`, the rule
    ``gdalwarp -t_srs`` follows). Only a resolution given: the source's CRS at that resolution.
    """
    if region_grid is not None:
        return region_grid
    if not options.warps:
        # Declared nodata needs the warper's validity handling: onto the source's own grid, pixel for pixel.
        return TargetGrid.of_source(info.crs, info.transform) if options.src_nodata is not None else None
    crs = check_crs(options.dst_crs, "dst_crs") if options.dst_crs is not None else info.crs
    if options.resolution is not None:
        res = options.resolution
    else:
        res = (native_resolution(info, crs),) * 2
    return TargetGrid(crs=crs, resolution=(float(res[0]), float(res[1])), target_aligned=options.target_aligned)


def native_resolution(info: RasterInfo, crs: CRS) -> float:
    """The source's pixel size carried to ``crs``: as many pixels along the footprint's diagonal as the source
    has (GDAL's rule for ``gdalwarp -t_srs`` without ``-tr``). Computed with PROJ directly:
    ``calculate_default_transform`` builds a VRT, and VRT is a driver sceneclip keeps switched off."""
    left, bottom, right, top = info.bounds
    (x0, x1), (y0, y1) = warp_transform(info.crs, crs, [left, right], [top, bottom])
    diagonal = math.hypot(x1 - x0, y1 - y0)
    if not math.isfinite(diagonal) or diagonal <= 0:
        raise InvalidOptionsError(f"{info.name} cannot be carried to {crs}: give the resolution explicitly")
    return diagonal / math.hypot(info.width, info.height)


def kernel_scale(info: RasterInfo, grid: TargetGrid) -> tuple[float, float]:
    """Output pixels per source pixel (x, y): how much GDAL widens a kernel when downsampling.

    Left to itself GDAL's warper takes it from the ratio of each work chunk's destination and source window
    sizes, which a rotation between the CRSs shrinks (the source window of a rotated chunk is its bounding
    box) and which changes with the chunk layout: the same pixel came out up to 506 DN different with 512²
    and 1024² chunks on the real antimeridian scene. One scale for the whole grid — the source's native
    pixel size carried to the grid's CRS over the grid's — makes every pixel independent of chunking.
    """
    native = native_resolution(info, grid.crs)
    return (native / grid.resolution[0], native / grid.resolution[1])


def refuse_categorical(info: RasterInfo, options: ClipOptions) -> None:
    """A palette means classes: averaging or interpolating them invents classes that do not exist."""
    if info.has_colormap and options.resampling not in CATEGORICAL_SAFE and not options.force_resampling:
        raise ResamplingRefusedError(
            f"{info.name} is categorical (it has a colour table), and {options.resampling!r} resampling would "
            f"invent classes; use one of {', '.join(CATEGORICAL_SAFE)}, or force it (--force-resampling)"
        )


def footprint_in(info: RasterInfo, crs: CRS) -> BaseGeometry:
    """The source's footprint in ``crs``: its densified bounding box, unioned (±360° copies across 180°)."""
    parts = raster_footprint(info.bounds, info.crs, crs)
    if not parts:  # part of the scene lies outside the target CRS's domain: its bbox, densified by GDAL
        return box(*transform_bounds(info.crs, crs, *info.bounds, densify_pts=64))
    return shapely.union_all(parts)


def plan_warp(info: RasterInfo, boundary: Boundary, options: ClipOptions, grid: TargetGrid) -> WarpPlan:
    """Grid, extent, boundary shapes, nodata policy and chunks of a clip onto ``grid``. Pure: no pixel I/O.

    Raises NoOverlapError (no part of the boundary over the scene), ResamplingRefusedError, InvalidOptionsError
    and LimitExceededError (the output grid or the boundary over the caps).
    """
    if options.invert or not options.crop or options.pad:
        raise InvalidOptionsError(GRID_CONFLICT)
    refuse_categorical(info, options)
    footprint = footprint_in(info, grid.crs)
    shapes = to_raster_crs(boundary, grid.crs, footprint.bounds, raster_name=info.name)
    overlap = shapely.intersection(shapely.union_all(shapes), footprint)
    if overlap.is_empty or overlap.area == 0:
        raise NoOverlapError(f"boundary does not overlap the footprint of {info.name} in {grid.crs}")
    overlap_bounds = tuple(float(v) for v in overlap.bounds)
    transform, width, height = grid.snap(overlap_bounds)  # type: ignore[arg-type]
    check_window(width, height, info.count, info.dtype, info.name, options.limits)
    shapes = simplify_for_grid(shapes, overlap_bounds, min(grid.resolution), fraction=options.simplify_fraction,
                               above=options.simplify_above)
    check_vertices(vertex_count(shapes), info.name, options.limits)
    if info.nodata is None and options.src_nodata is not None:
        info = replace(info, nodata=options.src_nodata)  # declared: it is the source's nodata from here on
    nodata, use_mask = choose_nodata(info, options.nodata)
    side = chunk_side(options.chunk_size, options.chunk_bytes, info.count + 1, info.dtype)  # + the alpha band
    return WarpPlan(
        src_crs=info.crs, dst_crs=grid.crs, grid=grid, transform=transform, width=width, height=height,
        count=info.count, dtype=info.dtype, shapes=tuple(shapes), overlap_bounds=overlap_bounds,  # type: ignore[arg-type]
        all_touched=options.all_touched, nodata=nodata, use_mask=use_mask, resampling=options.resampling,
        overview_resampling=options.overview_resampling or default_resampling(info.has_colormap),
        chunks=chunk_grid(width, height, side), clip_per_chunk=vertex_count(shapes) > options.simplify_above,
        kernel_scale=kernel_scale(info, grid), src_nodata=options.src_nodata,
    )
