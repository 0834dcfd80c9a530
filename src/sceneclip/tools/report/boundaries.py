"""Finding each record's region boundary again, and carrying boundaries and footprints to lon/lat.

A record names its boundary (``boundary.file`` + ``boundary.region``); where the geometry lives depends on
who wrote it: the Lambda names ``<store uri>#<region>`` (a boundary store), a batch report's ``job`` names
the vector file, region field and layer. A boundary that cannot be found is reported, not fatal: the
report then shows the clip without its outline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sceneclip.core.geometry import Boundary
from sceneclip.tools.report.inputs import ReportEntry

log = logging.getLogger("sceneclip.tools.report")
LONLAT = "EPSG:4326"


def _lonlat(geom: Any, crs: Any) -> Any:
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    return shape(transform_geom(crs, LONLAT, mapping(geom)))


def footprint_lonlat(entry: ReportEntry) -> Any | None:
    """The clip's extent (its ``bounds`` in its ``crs``) as a lon/lat polygon, edges densified; None if unknown."""
    import shapely
    from shapely.geometry import box

    rec = entry.record
    if not rec.bounds or not rec.crs:
        return None
    west, south, east, north = rec.bounds
    outline = shapely.segmentize(box(west, south, east, north), max(east - west, north - south) / 32 or 1)
    try:
        return _lonlat(outline, rec.crs)
    except Exception as exc:  # noqa: BLE001 - a CRS GDAL cannot carry: no footprint, say why
        log.warning("no footprint for %s: %s", rec.source, exc)
        return None


@dataclass
class BoundaryFinder:
    """Loads boundaries once per (file, region). ``store`` (a boundary-store URI) overrides what records name."""

    store: str | None = None
    s3_client: Any = None
    _cache: dict[tuple[str, str | None], Boundary | None] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # region → why its boundary is missing
    _jobs: list[dict[str, Any]] = field(default_factory=list)  # batch jobs: region field + layer per file

    def boundary(self, entry: ReportEntry) -> Boundary | None:
        """The record's boundary in its own CRS, or None (reason kept in ``problems``)."""
        region = entry.record.region
        where = self._where(entry)
        key = (where[0] if where else "", region)
        if key not in self._cache:
            self._cache[key] = self._load(where, region) if where else None
            if where is None:
                self.problems.setdefault(str(region), "the record does not say where its boundary is")
        return self._cache[key]

    def _where(self, entry: ReportEntry) -> tuple[str, str] | None:
        """(location, kind): ``store`` for a boundary store, ``file`` for a vector file."""
        if self.store:
            return self.store, "store"
        ref = entry.record.boundary.file or ""
        if "#" in ref:
            return ref.split("#", 1)[0], "store"
        if entry.job.get("boundary"):
            return str(entry.job["boundary"]), "file"
        return None

    def _load(self, where: tuple[str, str], region: str | None) -> Boundary | None:
        location, kind = where
        try:
            if kind == "store":
                from sceneclip.aws.store import get_store

                return get_store(location, s3_client=self.s3_client).boundary(str(region))
            return self._from_file(location, region)
        except Exception as exc:  # noqa: BLE001 - a report shows what it can and says what it could not
            self.problems[str(region)] = f"{type(exc).__name__}: {exc}"
            return None

    def _from_file(self, path: str, region: str | None) -> Boundary:
        from sceneclip.tools.vectors import load_boundary

        job = next((e for e in self._jobs if e.get("boundary") == path and e.get("region") == region), {})
        return load_boundary(path, layer=job.get("layer"), region_field=job.get("region_field"), region=region)

    def remember_jobs(self, entries: list[ReportEntry]) -> None:
        """Batch jobs carry the region field and layer a vector file needs."""
        self._jobs = [e.job for e in entries if e.job]


def boundary_lonlat(boundary: Boundary | None) -> Any | None:
    """The boundary's geometries dissolved into one lon/lat geometry (None when there is none)."""
    if boundary is None or not boundary.geometries:
        return None
    from shapely.ops import unary_union

    try:
        return _lonlat(unary_union(list(boundary.geometries)), boundary.crs)
    except Exception as exc:  # noqa: BLE001
        log.warning("boundary %s not drawn: %s", boundary.region, exc)
        return None
