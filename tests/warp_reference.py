"""Helpers for the target-grid tests: real boundaries cut to a scene's interior, gdalwarp as the peer, comparisons.

gdalwarp is Debian's gdal-bin (`make gdal` installs it); a missing gdalwarp fails these tests loudly.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.features import geometry_mask
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

from sceneclip.core.geometry import Boundary, to_raster_crs
from sceneclip.tools.vectors import load_boundary

from .conftest import real


@dataclass(frozen=True)
class WarpCase:
    """A real scene, a real boundary (cut to the scene's interior) and the target grid to warp onto."""

    raster: str
    vector: str | None  # None: the interior box itself is the boundary
    field: str | None
    region: str | None
    dst_crs: str
    res: float
    shrink: float = 0.1  # share of the scene's extent cut off each side, so the boundary lies inside the scene

    @property
    def id(self) -> str:
        return f"{self.raster.split('_')[0]}{self.raster.split('_')[1][:6]}->{self.dst_crs}"


def interior_boundary(case: WarpCase) -> Boundary:
    """The case's boundary in the scene's CRS: the real outline ∩ the scene's bbox shrunk by ``shrink``."""
    with rasterio.open(real(case.raster)) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    dx, dy = (right - left) * case.shrink, (top - bottom) * case.shrink
    inner = box(left + dx, bottom + dy, right - dx, top - dy)
    if case.vector is None:
        return Boundary.from_geometries([inner], crs, source="interior-box")
    bnd = load_boundary(real(case.vector), region_field=case.field, region=case.region)
    shapes = to_raster_crs(bnd, crs, (left, bottom, right, top))
    geom = shapely.intersection(shapely.union_all(shapes), inner)
    assert not geom.is_empty, "the case's boundary must overlap the scene's interior"
    return Boundary.from_geometries([geom], crs, source=f"{case.vector}∩interior")


def write_cutline(boundary: Boundary, path: str) -> str:
    gpd.GeoDataFrame(geometry=list(boundary.geometries), crs=boundary.crs.to_wkt()).to_file(path, driver="GPKG")
    return path


def gdalwarp(src: str, cutline: str, out: str, case: WarpCase, resampling: str, scale=(1.0, 1.0)) -> str:
    """The peer: gdalwarp -t_srs -tr -tap -cutline -crop_to_cutline -r … -dstalpha, with -et 0 (an exact
    transform, as sceneclip's warper uses: GDAL's default approximation depends on how the work is chunked) and
    the kernel scale given (XSCALE/YSCALE: GDAL's default, too, follows its chunks)."""
    exe = shutil.which("gdalwarp")
    assert exe, "gdalwarp is missing: run `make gdal` (Debian gdal-bin); these tests must not be skipped"
    r = {"nearest": "near"}.get(resampling, resampling)
    cmd = [exe, "-q", "-overwrite", "-t_srs", case.dst_crs, "-tr", repr(case.res), repr(case.res), "-tap",
           "-et", "0", "-cutline", cutline, "-crop_to_cutline", "-r", r, "-dstalpha", "-wo", f"XSCALE={scale[0]!r}", "-wo", f"YSCALE={scale[1]!r}",
           "-of", "GTiff", src, out]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return out


def dst_boundary_mask(boundary: Boundary, dst_crs: str, transform, shape_hw, all_touched=False) -> np.ndarray:
    """True inside: the boundary carried to ``dst_crs`` with finely densified edges, rasterised on the grid."""
    geoms = []
    for g in boundary.geometries:
        x0, y0, x1, y1 = g.bounds
        dense = shapely.segmentize(g, max(x1 - x0, y1 - y0) / 2048)
        geoms.append(transform_geom(boundary.crs, dst_crs, mapping(dense)))
    return ~geometry_mask([shape(g) for g in geoms], out_shape=shape_hw, transform=transform, all_touched=all_touched)


def read_valid(path: str) -> tuple[np.ndarray, np.ndarray, object]:
    """(values, valid mask, transform). gdalwarp's -dstalpha output also carries the source's nodata value
    while filling outside the cutline with 0, so its alpha band, not GDAL's mask, says what is valid."""
    with rasterio.open(path) as ds:
        if ds.colorinterp[-1] == rasterio.enums.ColorInterp.alpha:
            return ds.read(list(range(1, ds.count))), ds.read(ds.count) > 0, ds.transform
        return ds.read(), ds.dataset_mask() > 0, ds.transform


def common_window(t_a, shape_a, t_b, shape_b):
    """Integer offsets of b's grid in a's (asserting a common lattice) and the overlapping row/col ranges."""
    dc = (t_b.c - t_a.c) / t_a.a
    dr = (t_b.f - t_a.f) / t_a.e
    assert abs(dc - round(dc)) < 1e-6 and abs(dr - round(dr)) < 1e-6, (dc, dr)
    dc, dr = round(dc), round(dr)
    r0, c0 = max(0, dr), max(0, dc)
    r1, c1 = min(shape_a[0], dr + shape_b[0]), min(shape_a[1], dc + shape_b[1])
    return (slice(r0, r1), slice(c0, c1)), (slice(r0 - dr, r1 - dr), slice(c0 - dc, c1 - dc))


def union_iou(valid_a, t_a, valid_b, t_b) -> float:
    """IoU of two valid sets on one lattice (pixels outside either array count as invalid there)."""
    sa, sb = common_window(t_a, valid_a.shape, t_b, valid_b.shape)
    inter = np.count_nonzero(valid_a[sa] & valid_b[sb])
    union = np.count_nonzero(valid_a) + np.count_nonzero(valid_b) - inter
    return inter / union if union else 1.0


def interior(valid: np.ndarray, margin: int) -> np.ndarray:
    """Pixels whose (2·margin+1)² neighbourhood is all valid: away from the boundary and the data edge."""
    out = valid.copy()
    for dr in range(-margin, margin + 1):
        for dc in range(-margin, margin + 1):
            shifted = np.zeros_like(valid)
            h, w = valid.shape
            shifted[max(0, -dr):h - max(0, dr), max(0, -dc):w - max(0, dc)] = \
                valid[max(0, dr):h - max(0, -dr), max(0, dc):w - max(0, -dc)]
            out &= shifted
    return out


def source_has_data(src_path: str, dst_crs: str, transform, shape_hw) -> np.ndarray:
    """Whether the source pixel under each output pixel's centre is valid: nearest by definition, computed
    point by point with PROJ (rasterio.warp.transform), independently of GDAL's warper."""
    with rasterio.open(src_path) as src:
        valid = src.dataset_mask() > 0
        rows, cols = np.indices(shape_hw)
        xs, ys = transform * (cols.ravel() + 0.5, rows.ravel() + 0.5)
        sx, sy = warp_transform(dst_crs, src.crs, xs, ys)
        c, r = ~src.transform * (np.asarray(sx), np.asarray(sy))
        c, r = np.floor(c).astype(int), np.floor(r).astype(int)
        inside = (c >= 0) & (c < src.width) & (r >= 0) & (r < src.height)
        out = np.zeros(c.shape, dtype=bool)
        out[inside] = valid[r[inside], c[inside]]
        return out.reshape(shape_hw)


def native_scale(src_path: str, dst_crs: str, res: float) -> tuple[float, float]:
    """The kernel scale (output pixels per source pixel) sceneclip gives GDAL, to give gdalwarp the same."""
    from sceneclip.core.grid import TargetGrid
    from sceneclip.core.plan import RasterInfo
    from sceneclip.core.warp_plan import kernel_scale

    with rasterio.open(src_path) as src:
        return kernel_scale(RasterInfo.from_dataset(src), TargetGrid.parse(f"{dst_crs},{res!r}"))
