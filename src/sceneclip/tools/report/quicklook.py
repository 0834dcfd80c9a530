"""Quick-looks: a small picture of a clip, read from the COG's overviews, with its boundary drawn on it."""

from __future__ import annotations

from typing import Any

import numpy as np

OUTLINE = (255, 220, 0)  # the boundary, in yellow
NODATA_GREY = 40


def _stretch(band: np.ma.MaskedArray) -> np.ndarray:
    """2–98 % linear stretch to uint8 (a flat or empty band becomes black)."""
    values = band.astype("float64")
    lo, hi = np.percentile(values.compressed(), (2, 98)) if values.count() else (0.0, 1.0)
    return np.clip((values.filled(lo) - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype("uint8")


def render_quicklook(cog: str, boundary: Any | None, size: int = 512) -> np.ndarray:
    """RGB (first three bands, or band 1 as grey) of ``cog``, ``size`` pixels on its long side, boundary outlined.

    The decimated read is served from the COG's internal overviews, so even over S3 only the small overview
    tiles are fetched. ``boundary`` is a :class:`~sceneclip.core.geometry.Boundary` (any CRS) or None.

    Returns
    -------
    numpy.ndarray
        uint8 array shaped (3, height, width); outside the valid pixels it is dark grey.
    """
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    from sceneclip.core.geometry import to_raster_crs

    with rasterio.open(cog) as ds:
        # Long side = size: large clips read a decimated view (served by the overviews), small ones are
        # enlarged (nearest) so every quick-look is big enough to look at.
        scale = max(ds.width, ds.height) / size
        shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        bands = [1, 2, 3] if ds.count >= 3 else [1, 1, 1]
        data = ds.read(bands, out_shape=(3, *shape), masked=True)
        transform = ds.transform @ Affine.scale(ds.width / shape[1], ds.height / shape[0])
        shapes = to_raster_crs(boundary, ds.crs, tuple(ds.bounds)) if boundary is not None else []
    rgb = np.stack([_stretch(data[i]) for i in range(3)])
    rgb[:, ~(~np.ma.getmaskarray(data)).any(axis=0)] = NODATA_GREY
    lines = [s.boundary for s in shapes if not s.is_empty]
    if lines:
        outline = rasterize(lines, out_shape=shape, transform=transform, all_touched=True, fill=0, default_value=1)
        for i, value in enumerate(OUTLINE):
            rgb[i][outline == 1] = value
    return rgb
