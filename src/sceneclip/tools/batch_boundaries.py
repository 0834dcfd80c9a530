"""Boundaries for batch workers: each vector file read once per process, each region reprojected once per CRS.

The parent gives each group of scenes sharing a raster CRS the union of their bounds, so the footprint
pre-clip covers all of them, and the boundary is densified first to 1/256 of the *smallest* scene's extent, so a
shared reprojection is as accurate as a per-scene one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sceneclip.errors import SceneclipError
from sceneclip.tools.batch_jobs import BatchJob

if TYPE_CHECKING:
    from sceneclip.core.geometry import Boundary

_VECTOR_CACHE: dict[tuple[str, str | None], Any] = {}
_LOADED_BOUNDARIES: dict[tuple[str, str | None, str | None, str | None], Boundary] = {}
# (boundary file, layer, region field, region, content hash, raster CRS WKT, group fingerprint) → shapes in the
# raster CRS, or None when the shared reprojection failed (each scene then reprojects on its own).
_WORKER_BOUNDARY_CACHE: dict[tuple[Any, ...], tuple[Any, ...] | None] = {}
# How often this process reprojected a boundary for a group, and how often a cached one was reused.
_WORKER_STATS = {"reprojections": 0, "cache_hits": 0}


def load_job_boundary(job: BatchJob) -> Boundary:
    """The job's boundary; each vector file is read once per process, each region selected once."""
    from sceneclip.tools.vectors import boundary_from_frame, read_vector

    key = (job.boundary, job.layer, job.region_field, job.region)
    if key not in _LOADED_BOUNDARIES:
        vkey = (job.boundary, job.layer)
        if vkey not in _VECTOR_CACHE:
            _VECTOR_CACHE[vkey] = read_vector(job.boundary, job.layer)
        _LOADED_BOUNDARIES[key] = boundary_from_frame(
            _VECTOR_CACHE[vkey], job.boundary, region_field=job.region_field, region=job.region)
    return _LOADED_BOUNDARIES[key]


@dataclass(frozen=True)
class CrsGroup:
    """The scenes of one raster CRS that share a boundary: the reprojection is done once for all of them."""

    crs_wkt: str
    union_bounds: tuple[float, float, float, float]
    scene_bounds: tuple[tuple[float, float, float, float], ...]


def _group_max_segment(boundary: Boundary, crs: Any, group: CrsGroup) -> float | None:
    """1/256 of the smallest scene's extent in the boundary's CRS: the per-scene path's densification."""
    import shapely

    from sceneclip.core.geometry import DENSIFY_FRACTION, raster_footprint

    extents = []
    for bounds in group.scene_bounds:
        fps = raster_footprint(bounds, crs, boundary.crs)
        if fps:
            x0, y0, x1, y1 = shapely.total_bounds(fps[0])
            extents.append(max(x1 - x0, y1 - y0))
    return min(extents) * DENSIFY_FRACTION if extents else None


def boundary_for_raster(boundary: Boundary, job: BatchJob, group: CrsGroup | None) -> tuple[Boundary, str]:
    """The boundary already in the group's raster CRS (cached per worker), and 'miss', 'hit' or 'bypass'.

    The returned Boundary keeps the original source, region and content hash, so records are unchanged.
    """
    if group is None:
        return boundary, "bypass"
    import shapely
    from rasterio.crs import CRS

    from sceneclip.core.geometry import to_raster_crs

    key = (job.boundary, job.layer, job.region_field, job.region, boundary.content_hash, group.crs_wkt,
           group.union_bounds, group.scene_bounds)
    if key in _WORKER_BOUNDARY_CACHE:
        _WORKER_STATS["cache_hits"] += 1
        state = "hit"
    else:
        crs = CRS.from_wkt(group.crs_wkt)
        shapes: tuple[Any, ...] | None
        try:
            dense = boundary
            if boundary.crs != crs:
                step = _group_max_segment(boundary, crs, group)
                if step:
                    dense = replace(boundary, geometries=tuple(shapely.segmentize(g, step) for g in boundary.geometries))
            shapes = tuple(to_raster_crs(dense, crs, group.union_bounds, raster_name=job.source))
        except SceneclipError:
            shapes = None
        _WORKER_BOUNDARY_CACHE[key] = shapes
        _WORKER_STATS["reprojections"] += 1
        state = "miss"
    shapes = _WORKER_BOUNDARY_CACHE[key]
    if shapes is None:
        return boundary, "bypass"
    return replace(boundary, geometries=shapes, crs=CRS.from_wkt(group.crs_wkt)), state
