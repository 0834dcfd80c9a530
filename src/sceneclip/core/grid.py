"""Target grids (groundwork for analysis-ready outputs): one fixed pixel lattice per region, in any CRS.

A clip onto a target grid lands on pixels that are the same for every scene of the region over the years:
with target-aligned pixels the origin is a whole multiple of the resolution (``gdalwarp -tap``, ``rio warp
--target-aligned-pixels``). The extent is snapped *outward* to that lattice — but an edge already on the
lattice stays where it is: gdalwarp's ``-tap`` adds a pixel there (OSGeo/gdal #3435), which would make two clips
of one region differ by a column depending on float noise.

Pure: bounds in, (transform, width, height) out. :mod:`~sceneclip.core.warp_plan` decides a clip's grid and
:mod:`~sceneclip.core.warp` fills it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from sceneclip.errors import InvalidOptionsError

# GDAL's warp resampling methods (``gdalwarp -r``), by rasterio's names.
WARP_RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode", "min", "max", "med",
                   "q1", "q3", "sum", "rms")
# The methods that return one of the input values: the only ones that keep classes (a palette) meaningful.
CATEGORICAL_SAFE = ("nearest", "mode", "min", "max", "med", "q1", "q3")

# How close to a lattice line an edge must be (in pixels) to count as on it: far below any real offset, far
# above the float noise of a reprojected bound.
SNAP_TOLERANCE_PX = 1e-6


@dataclass(frozen=True)
class TargetGrid:
    """A pixel lattice: CRS, pixel size (x, y, both positive, in CRS units) and whether origins are aligned.

    ``TargetGrid.parse("EPSG:32613,30")`` or ``"EPSG:32613,30,20"`` (width then height, as ``rio warp --res``).
    """

    crs: CRS
    resolution: tuple[float, float]
    target_aligned: bool = True
    # A point of the lattice (x, y): (0, 0) for target-aligned pixels; a source's origin to stay on its grid.
    anchor: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        xres, yres = self.resolution
        if not (math.isfinite(xres) and math.isfinite(yres) and xres > 0 and yres > 0):
            raise InvalidOptionsError(f"resolution must be two positive numbers, got {self.resolution}")

    @classmethod
    def parse(cls, spec: str, *, target_aligned: bool = True) -> TargetGrid:
        """``CRS,RES`` or ``CRS,XRES,YRES``; the error says which part is wrong."""
        parts = [p.strip() for p in spec.split(",")]
        if len(parts) not in (2, 3):
            raise InvalidOptionsError(f"grid {spec!r}: expected CRS,RES or CRS,XRES,YRES (e.g. EPSG:32613,30)")
        return cls.from_parts(parts[0], parts[1:], what=f"grid {spec!r}", target_aligned=target_aligned)

    @classmethod
    def from_parts(cls, crs: object, res: Sequence[object], *, what: str, target_aligned: bool = True) -> TargetGrid:
        """A grid from a CRS (anything rasterio accepts, WKT too) and one or two resolution values."""
        if len(res) not in (1, 2):
            raise InvalidOptionsError(f"{what}: resolution {list(res)} must be one value or two (x, y)")
        try:
            values = tuple(float(str(v).strip()) for v in res)
        except ValueError as exc:
            raise InvalidOptionsError(f"{what}: resolution {list(res)} is not numeric") from exc
        return cls(crs=check_crs(crs, f"{what}:"), resolution=(values[0], values[-1]), target_aligned=target_aligned)

    def to_dict(self) -> dict[str, Any]:
        """The grid as stored in a boundary store's index: CRS (EPSG code or WKT) and resolution (x, y)."""
        epsg = self.crs.to_epsg()
        return {"crs": f"EPSG:{epsg}" if epsg else self.crs.to_wkt(), "res": list(self.resolution)}

    @property
    def spec(self) -> str:
        """The grid as text (``EPSG:32613,30,30``; WKT when the CRS has no EPSG code), for hashes and records."""
        epsg = self.crs.to_epsg()
        name = f"EPSG:{epsg}" if epsg else self.crs.to_wkt()
        anchor = "" if self.anchor == (0.0, 0.0) else f",anchor={self.anchor[0]!r}:{self.anchor[1]!r}"
        return f"{name},{self.resolution[0]!r},{self.resolution[1]!r}" + ("" if self.target_aligned else ",unaligned") + anchor

    @classmethod
    def of_source(cls, crs: CRS, transform: Affine) -> TargetGrid:
        """A source's own lattice (north-up): its CRS, pixel size and origin."""
        return cls(crs=crs, resolution=(abs(transform.a), abs(transform.e)), anchor=(transform.c, transform.f))

    def snap(self, bounds: tuple[float, float, float, float]) -> tuple[Affine, int, int]:
        """The smallest grid window covering ``bounds`` (left, bottom, right, top in this grid's CRS).

        Target-aligned: edges move outward to the next multiple of the resolution, edges already on one stay.
        Otherwise the window starts at (left, top) exactly and grows to whole pixels.
        """
        left, bottom, right, top = bounds
        if not (left < right and bottom < top):
            raise InvalidOptionsError(f"bounds {bounds} are empty; nothing to put on a grid")
        xres, yres = self.resolution
        if self.target_aligned:
            ax, ay = self.anchor
            left = ax + _floor((left - ax) / xres) * xres
            right = ax + _ceil((right - ax) / xres) * xres
            bottom = ay + _floor((bottom - ay) / yres) * yres
            top = ay + _ceil((top - ay) / yres) * yres
        width = max(1, _ceil((right - left) / xres))
        height = max(1, _ceil((top - bottom) / yres))
        return Affine(xres, 0.0, left, 0.0, -yres, top), width, height


# Per-feature fields of a boundary file that give a region its own grid (override the store's default).
GRID_CRS_FIELD = "grid_crs"
GRID_RES_FIELD = "grid_res"


def grid_from_fields(values: Sequence[tuple[object, object]], default: TargetGrid | None, what: str) -> TargetGrid | None:
    """A region's grid from its features' (grid_crs, grid_res) values; ``default`` where they are empty.

    ``grid_res`` is one number or ``"X,Y"``. The features of one region must agree (a region has one grid);
    a feature with only one of the two fields set is refused, naming the region.
    """
    grids: dict[str, TargetGrid] = {}
    for crs, res in values:
        crs_text = "" if _missing(crs) else str(crs).strip()
        res_text = "" if _missing(res) else str(res).strip()
        if not crs_text and not res_text:
            continue
        if not (crs_text and res_text):
            raise InvalidOptionsError(f"{what}: {GRID_CRS_FIELD} and {GRID_RES_FIELD} must be set together")
        grid = TargetGrid.from_parts(crs_text, res_text.split(","), what=what)
        grids[grid.spec] = grid
    if len(grids) > 1:
        raise InvalidOptionsError(f"{what}: its features name {len(grids)} different grids; a region has one")
    return next(iter(grids.values())) if grids else default


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def check_crs(spec: object, what: str) -> CRS:
    """``spec`` as a CRS (anything rasterio accepts), or an InvalidOptionsError naming ``what``."""
    try:
        return spec if isinstance(spec, CRS) else CRS.from_user_input(spec)
    except CRSError as exc:
        raise InvalidOptionsError(f"{what} {spec!r} is not a CRS: {exc}") from exc


def _floor(v: float) -> int:
    r = round(v)
    return r if abs(v - r) < SNAP_TOLERANCE_PX else math.floor(v)


def _ceil(v: float) -> int:
    r = round(v)
    return r if abs(v - r) < SNAP_TOLERANCE_PX else math.ceil(v)
