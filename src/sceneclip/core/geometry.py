"""Boundary geometry handling: repair, reprojection with densification, antimeridian, overlap.

Pure functions over shapely geometries and rasterio CRS objects. Nothing here opens a file, so the whole
geometry path can be tested without I/O. Reprojection uses GDAL/PROJ through ``rasterio.warp.transform``
(no pyproj import on the Lambda path).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from sceneclip.core.grid import TargetGrid
from sceneclip.errors import BoundaryError, EmptyGeometryError, MissingCRSError, NoOverlapError, ReprojectionError

# Long edges are split so that no segment spans more than this share of the raster's extent before
# reprojection: a straight edge in one CRS is a curve in another, and 1/256 keeps the chord error far
# below a pixel for scene-sized extents while adding few vertices.
DENSIFY_FRACTION = 1 / 256
# Points on each side of the raster footprint when it is carried into the boundary's CRS.
FOOTPRINT_POINTS_PER_SIDE = 64


@dataclass(frozen=True)
class Boundary:
    """A boundary to clip to: polygonal geometries in a known CRS, plus where they came from.

    ``content_hash`` identifies the geometry itself (WKB + CRS, and the region's grid when it has one), so
    records and idempotency keys change when the boundary changes even if its file name does not.
    ``grid``: the region's own target grid; every clip of the region lands on it, whatever the options say.
    """

    geometries: tuple[BaseGeometry, ...]
    crs: CRS
    source: str = "<memory>"
    region: str | None = None
    content_hash: str = field(default="")
    grid: TargetGrid | None = None

    @classmethod
    def from_geometries(
        cls,
        geometries: Iterable[BaseGeometry] | BaseGeometry,
        crs: CRS | str | int | None,
        *,
        source: str = "<memory>",
        region: str | None = None,
        grid: TargetGrid | None = None,
    ) -> Boundary:
        """Build a boundary from shapely geometries; ``crs`` is anything ``rasterio.crs.CRS`` accepts."""
        if isinstance(geometries, BaseGeometry):
            geometries = [geometries]
        geoms = tuple(g for g in geometries if g is not None)
        if crs is None or crs == "":
            raise MissingCRSError(
                f"boundary {source!r} has no CRS: set one on the file (e.g. a .prj or 'crs' member) "
                "or pass crs= to the library"
            )
        crs_obj = crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
        return cls(geoms, crs_obj, source, region, content_hash(geoms, crs_obj, grid), grid)


def content_hash(geometries: Sequence[BaseGeometry], crs: CRS, grid: TargetGrid | None = None) -> str:
    """sha256 over the geometries' WKB and the CRS WKT (and the grid, if any): 'the same boundary'.

    A region's grid decides its output pixels, so a redrawn grid must change the identity just as a redrawn
    outline does; without a grid the hash is what it always was.
    """
    digest = hashlib.sha256()
    digest.update(crs.to_wkt().encode())
    for geom in geometries:
        digest.update(shapely.to_wkb(geom, output_dimension=2, byte_order=1))
    if grid is not None:
        digest.update(f"grid:{grid.spec}".encode())
    return digest.hexdigest()


def polygonal_parts(geom: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons of any geometry (repair can yield collections with lines and points)."""
    if geom is None or geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom]
    if isinstance(geom, MultiPolygon):
        return [p for p in geom.geoms if not p.is_empty]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in polygonal_parts(g)]
    return []


def repair(geometries: Iterable[BaseGeometry]) -> list[BaseGeometry]:
    """``make_valid`` every geometry, keep only polygonal parts, drop empties.

    Real glacier inventories ship self-intersecting rings; GDAL's rasterizer would fill them by the even-odd
    rule, which silently drops or adds area. Repair first so the kept pixels follow the intended shape.
    """
    out: list[BaseGeometry] = []
    for n, geom in enumerate(geometries):
        if geom is None or geom.is_empty:
            continue
        refuse_non_finite(geom, n)
        fixed = geom if geom.is_valid else shapely.make_valid(geom)
        parts = polygonal_parts(fixed)
        if not parts:
            continue
        out.append(parts[0] if len(parts) == 1 else MultiPolygon(parts))
    return out


def refuse_non_finite(geom: BaseGeometry, index: int) -> None:
    """A NaN or infinite coordinate makes GEOS fail deep inside ``make_valid``/``union`` with a bare
    GEOSException; say which feature is broken instead (permanent: only a fixed boundary file helps)."""
    coords = shapely.get_coordinates(geom)
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        first = coords[bad][0].tolist()
        raise BoundaryError(
            f"boundary feature {index} has {int(bad.sum())} non-finite coordinate(s) (first: {first}); "
            "fix or drop that feature (NaN/Inf coordinates are not a geometry)"
        )


def dissolve(geometries: Sequence[BaseGeometry]) -> BaseGeometry | None:
    """Repair features and union them into one Polygon or MultiPolygon; None when no polygon is left.

    The boundary store keeps one such geometry per region, and ``load_boundary`` builds the same one from a
    vector file, so a region has the same content hash whichever way it was loaded.
    """
    fixed = repair(shapely.force_2d(g) for g in geometries if g is not None)
    if not fixed:
        return None
    merged = fixed[0] if len(fixed) == 1 else shapely.union_all(fixed)
    parts = polygonal_parts(merged if merged.is_valid else shapely.make_valid(merged))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def transform_geometry(geom: BaseGeometry, src: CRS, dst: CRS) -> BaseGeometry:
    """``geom`` carried from ``src`` to ``dst`` vertex by vertex (densify first where edges must stay true)."""
    def fn(coords: np.ndarray) -> np.ndarray:
        if len(coords) == 0:
            return coords
        xs, ys = warp_transform(src, dst, coords[:, 0].tolist(), coords[:, 1].tolist())
        return np.column_stack([xs, ys])

    try:
        out = shapely.transform(geom, fn)
    except Exception as exc:  # PROJ errors surface as CPLE_* exceptions
        raise ReprojectionError(f"cannot transform boundary from {src} to {dst}: {exc}") from exc
    coords = shapely.get_coordinates(out)
    if not np.isfinite(coords).all():
        raise ReprojectionError(
            f"boundary coordinates fall outside the valid area of {dst} when transformed from {src}; "
            "clip it to the scene's region first"
        )
    return out


def raster_footprint(bounds: Sequence[float], raster_crs: CRS, target_crs: CRS) -> list[Polygon]:
    """The raster's bounding box as polygon(s) in ``target_crs``, densified so curved edges stay accurate.

    For a geographic target, a footprint that crosses the antimeridian comes back as one polygon with
    longitudes beyond 180 plus its copies shifted by ±360, so that a boundary stored either way
    (split at ±180 or with longitudes past 180) is intersected correctly.
    """
    left, bottom, right, top = bounds
    n = FOOTPRINT_POINTS_PER_SIDE
    xs = np.concatenate([np.linspace(left, right, n), np.full(n, right), np.linspace(right, left, n), np.full(n, left)])
    ys = np.concatenate([np.full(n, top), np.linspace(top, bottom, n), np.full(n, bottom), np.linspace(bottom, top, n)])
    if raster_crs == target_crs:
        return [box(left, bottom, right, top)]
    tx, ty = warp_transform(raster_crs, target_crs, xs.tolist(), ys.tolist())
    tx, ty = np.asarray(tx), np.asarray(ty)
    if not (np.isfinite(tx).all() and np.isfinite(ty).all()):
        # Part of the footprint lies outside the target CRS's domain: fall back to no pre-clip.
        return []
    if target_crs.is_geographic and (tx.max() - tx.min()) > 180:
        # Crosses the antimeridian: unwrap to a continuous longitude range.
        tx = np.where(tx < 0, tx + 360, tx)
        poly = Polygon(np.column_stack([tx, ty]))
        poly = poly if poly.is_valid else shapely.make_valid(poly)
        return [poly, shapely.affinity.translate(poly, -360), shapely.affinity.translate(poly, 360)]
    poly = Polygon(np.column_stack([tx, ty]))
    return [poly if poly.is_valid else shapely.make_valid(poly)]


def to_raster_crs(
    boundary: Boundary,
    raster_crs: CRS | None,
    raster_bounds: Sequence[float],
    *,
    raster_name: str = "raster",
) -> list[BaseGeometry]:
    """Repair the boundary and carry it into the raster's CRS, keeping only what is near the raster.

    Steps, each for a reason:
    1. repair (``make_valid``) so invalid rings mean what their author meant;
    2. pre-clip in the boundary's own CRS to a generously buffered raster footprint: transforming a whole
       world layer to UTM fails for far-away features and can wrap polygons around the globe;
    3. densify long edges (``shapely.segmentize``) so they follow the true curve in the raster CRS;
    4. transform, then repair again (projection can fold thin parts) and drop empties.

    Raises MissingCRSError, EmptyGeometryError, NoOverlapError, ReprojectionError.
    """
    if raster_crs is None:
        raise MissingCRSError(
            f"{raster_name} has no CRS: sceneclip cannot place the boundary on it; "
            "assign one (e.g. `rio edit-info --crs EPSG:XXXX`)"
        )
    geoms = repair(boundary.geometries)
    if not geoms:
        raise EmptyGeometryError(
            f"boundary {boundary.source!r}" + (f" region {boundary.region!r}" if boundary.region else "")
            + " has no polygon left after repair (empty, or only points/lines)"
        )
    if boundary.crs == raster_crs:
        return geoms

    footprints = raster_footprint(raster_bounds, raster_crs, boundary.crs)
    if footprints:
        fx0, fy0, fx1, fy1 = shapely.total_bounds(footprints[0])
        margin = 0.25 * max(fx1 - fx0, fy1 - fy0)
        clip_areas = shapely.union_all([shapely.buffer(fp, margin, quad_segs=4) for fp in footprints])
        near = [shapely.intersection(g, clip_areas) for g in geoms]
        geoms = repair(near)
        if not geoms:
            raise NoOverlapError(_no_overlap_message(boundary, raster_name))
        extent = max(fx1 - fx0, fy1 - fy0)
    else:
        x0, y0, x1, y1 = shapely.total_bounds(geoms)
        extent = max(x1 - x0, y1 - y0)
    max_segment = extent * DENSIFY_FRACTION
    out = []
    for geom in geoms:
        dense = shapely.segmentize(geom, max_segment) if max_segment > 0 else geom
        out.append(transform_geometry(dense, boundary.crs, raster_crs))
    out = repair(out)
    if not out:
        raise EmptyGeometryError(f"boundary {boundary.source!r} vanished when transformed to {raster_crs}")
    return out


def overlap_with_raster(shapes: Sequence[BaseGeometry], raster_bounds: Sequence[float]) -> BaseGeometry:
    """boundary ∩ raster bounding box (raster CRS); its bbox is the clip extent before pixel snapping."""
    left, bottom, right, top = raster_bounds
    return shapely.intersection(shapely.union_all(list(shapes)), box(left, bottom, right, top))


def _no_overlap_message(boundary: Boundary, raster_name: str) -> str:
    what = f"boundary {boundary.source!r}" + (f" region {boundary.region!r}" if boundary.region else "")
    return f"{what} does not overlap {raster_name}; check that the scene and the region match"


def no_overlap_error(boundary: Boundary, raster_name: str) -> NoOverlapError:
    """The one wording for 'no overlap', shared by the planner and the reprojection pre-clip."""
    return NoOverlapError(_no_overlap_message(boundary, raster_name))


def bounds_close(a: Sequence[float], b: Sequence[float], tol: float) -> bool:
    """True when bounds ``a`` lie within ``b`` grown by ``tol`` on every side."""
    return a[0] >= b[0] - tol and a[1] >= b[1] - tol and a[2] <= b[2] + tol and a[3] <= b[3] + tol


def vertex_count(shapes: Iterable[BaseGeometry]) -> int:
    """Coordinates in ``shapes`` (what the rasteriser walks, per scanline)."""
    return int(sum(shapely.get_num_coordinates(g) for g in shapes))


def clip_to_rect(shapes: Sequence[BaseGeometry], rect: Sequence[float]) -> list[BaseGeometry]:
    """The polygonal parts of ``shapes`` inside ``rect`` (xmin, ymin, xmax, ymax); empties dropped.

    GDAL's rasteriser visits every edge on every scanline, so rasterising a 10⁶-vertex boundary whole for
    each chunk costs ~300× a 1,000-vertex one; clipped to the chunk it costs what the chunk's share does.
    Callers pass a rectangle a few pixels wider than the area they rasterise, so no pixel they keep can
    see the new edges along the rectangle.
    """
    out: list[BaseGeometry] = []
    for geom in shapes:
        parts = polygonal_parts(shapely.clip_by_rect(geom, *rect))
        if parts:
            out.append(parts[0] if len(parts) == 1 else MultiPolygon(parts))
    return out


def simplify_for_grid(
    shapes: Sequence[BaseGeometry], bounds: Sequence[float], pixel: float, *, fraction: float, above: int
) -> list[BaseGeometry]:
    """Shapes with more than ``above`` vertices: clipped to ``bounds`` (+2 px) and simplified to
    ``fraction`` of a pixel; smaller ones are returned unchanged (exactly the pixel rule of rasterio.mask).

    Detail finer than a tenth of a pixel can only move a pixel whose centre lies that close to an edge,
    while it can multiply the rasteriser's work without bound.
    """
    if vertex_count(shapes) <= above:
        return list(shapes)
    x0, y0, x1, y1 = bounds
    m = 2 * pixel
    clipped = clip_to_rect(shapes, (x0 - m, y0 - m, x1 + m, y1 + m))
    # Plain Douglas-Peucker (the topology-preserving variant took 5 s on 10⁶ vertices), repaired if it
    # made a ring cross itself, so the rasteriser's even-odd fill keeps the intended area.
    return repair(shapely.simplify(g, fraction * pixel, preserve_topology=False) for g in clipped)
