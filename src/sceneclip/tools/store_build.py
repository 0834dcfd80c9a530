"""Compiling a vector file into a boundary store (tooling: geopandas). The reader is :mod:`sceneclip.aws.store`.

Every feature is repaired with :func:`sceneclip.core.geometry.repair`; features sharing a region id (as text)
are dissolved into one (Multi)Polygon — the same dissolve :func:`sceneclip.tools.vectors.load_boundary` does,
so a region's content hash is the same from a file and from the store.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from sceneclip.aws.store import (
    FORMAT,
    INDEX_NAME,
    REGIONS_DIR,
    StoreLocation,
    aws_errors,
    store_version,
)
from sceneclip.core.geometry import dissolve, polygonal_parts, repair
from sceneclip.core.grid import TargetGrid, grid_from_fields
from sceneclip.tools.vectors import feature_grid_fields
from sceneclip.core.naming import find_slug_collisions, slug
from sceneclip.errors import (
    DENIED, BoundaryError, ConfigError, EmptyGeometryError, InvalidOptionsError, MissingCRSError, SceneclipError,
    UploadError, classify,
)


# --- results and compiled regions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreSummary:
    """What :func:`build_store` wrote. ``dropped`` says, one line each, which features or regions were left out."""

    uri: str
    version: str
    regions: int
    bytes_written: int
    crs: str = ""
    region_field: str = ""
    source: str = ""
    dropped: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        out = asdict(self)
        out["dropped"] = list(self.dropped)
        return out


@dataclass(frozen=True)
class CompiledRegion:
    """One region ready to write: the dissolved, repaired geometry and its index entry."""

    region: str
    geometry: BaseGeometry
    wkb: bytes
    hash: str
    features: int
    grid: TargetGrid | None = None

    @property
    def bbox(self) -> list[float]:
        """The region's bounds in the store's CRS."""
        return [float(v) for v in self.geometry.bounds]

    @property
    def parts(self) -> int:
        """How many polygons the region's geometry has."""
        return len(polygonal_parts(self.geometry))

    @property
    def key(self) -> str:
        """Where the region's WKB is stored: readable slug plus content hash, so rebuilds never overwrite."""
        return f"{REGIONS_DIR}/{region_slug(self.region)}.{self.hash}.wkb"

    def index_entry(self) -> dict[str, Any]:
        """The region's entry in ``index.json``."""
        entry = {"bbox": self.bbox, "hash": self.hash, "key": self.key, "parts": self.parts, "features": self.features}
        if self.grid is not None:
            entry["grid"] = self.grid.to_dict()
        return entry


def region_text(value: Any) -> str | None:
    """A field value as a region id: text, integral floats without '.0' (a column with nulls reads as float),
    None for missing values and empty text."""
    if value is None:
        return None
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, np.generic):
        value = value.item()
    text = str(value)
    return text if text != "" else None


def region_slug(region: str, limit: int = 48) -> str:
    """A readable file-name stem for a region's file in the store (uniqueness comes from the hash beside it).

    The one slug rule of :mod:`sceneclip.core.naming`, as a single path component, shortened.
    """
    return slug(region, keep_slash=False).replace(".", "_").strip("_")[:limit] or "region"


def refuse_slug_collisions(regions: Iterable[str], what: str) -> None:
    """Two region ids with one slug would write one output key (``{region_slug}``): refuse the store."""
    clashes = find_slug_collisions(regions)
    if clashes:
        listed = "; ".join(f"{' and '.join(repr(r) for r in ids)} → {s!r}" for s, ids in list(clashes.items())[:5])
        raise BoundaryError(
            f"boundary file {what}: {len(clashes)} slug collision(s) — region ids that differ only in characters "
            f"output keys cannot hold would share an output: {listed}. Rename one of each pair."
        )


def geometry_wkb(geom: BaseGeometry) -> bytes:
    """The stored form: 2-D little-endian WKB (the region hash is the sha256 of exactly these bytes)."""
    return shapely.to_wkb(geom, output_dimension=2, byte_order=1)


def compile_regions(
    ids: Iterable[Any], geometries: Iterable[BaseGeometry | None], *, region_field: str = "region",
    grid_fields: Iterable[tuple[Any, Any]] | None = None, default_grid: TargetGrid | None = None,
) -> tuple[dict[str, CompiledRegion], list[str]]:
    """Group features by region id (as text) and dissolve each group. Pure: no I/O, no geopandas.

    Returns (compiled regions by id, one line per dropped feature or region). Features without a region id or
    without a polygon are dropped; a region is dropped when none of its features has a polygon after repair.
    ``grid_fields`` are the features' (grid_crs, grid_res) values: a region's own grid, else ``default_grid``.
    """
    groups: dict[str, list[BaseGeometry]] = {}
    counts: dict[str, int] = {}
    grid_values: dict[str, list[tuple[Any, Any]]] = {}
    dropped: list[str] = []
    ids = list(ids)
    fields = list(grid_fields) if grid_fields is not None else [(None, None)] * len(ids)
    for n, (value, geom, gf) in enumerate(zip(ids, geometries, fields, strict=True)):
        region = region_text(value)
        if region is None:
            dropped.append(f"feature {n}: no value in field {region_field!r}")
            continue
        counts[region] = counts.get(region, 0) + 1
        grid_values.setdefault(region, []).append(gf)
        fixed = repair([shapely.force_2d(geom)]) if geom is not None else []
        if not fixed:
            dropped.append(f"feature {n} (region {region!r}): empty, or no polygon after repair")
            continue
        groups.setdefault(region, []).append(fixed[0])
    compiled: dict[str, CompiledRegion] = {}
    for region in counts:
        geom = dissolve(groups.get(region, []))
        if geom is None:
            dropped.append(f"region {region!r}: no polygon left after repair; left out of the store")
            continue
        wkb = geometry_wkb(geom)
        try:
            grid = grid_from_fields(grid_values[region], default_grid, f"region {region!r}")
        except InvalidOptionsError as exc:
            raise BoundaryError(str(exc)) from exc
        compiled[region] = CompiledRegion(region, geom, wkb, hashlib.sha256(wkb).hexdigest(), counts[region], grid)
    return compiled, dropped


def make_index(
    compiled: Mapping[str, CompiledRegion], *, crs_wkt: str, region_field: str, source: str,
    default_grid: TargetGrid | None = None,
) -> dict[str, Any]:
    """The store's ``index.json`` document: format, version, CRS, region field, source, default grid and every
    region (each with its resolved grid, so the reader needs no default)."""
    regions = {rid: compiled[rid].index_entry() for rid in sorted(compiled)}
    grids = {rid: c.grid.spec for rid, c in compiled.items() if c.grid is not None}
    return {
        "format": FORMAT,
        "version": store_version({rid: c.hash for rid, c in compiled.items()}, crs_wkt, region_field, grids),
        "grid": default_grid.to_dict() if default_grid is not None else None,
        "crs": crs_wkt,
        "region_field": region_field,
        "source": source,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "regions": regions,
    }


def write_error(exc: BaseException, location: StoreLocation, name: str) -> SceneclipError:
    """A failed write, typed by :func:`sceneclip.errors.classify` (a fault on the way: run the build again)."""
    return classify(exc, what=f"writing {location.describe(name)}", transient=UploadError, permanent=ConfigError,
                    hints={DENIED: f"allow s3:PutObject on {location.uri}"})


def build_store(
    vector: str, region_field: str, out: str, *, layer: str | None = None, s3_client: Any = None,
    grid: str | None = None,
) -> StoreSummary:
    """Compile ``vector`` (any file geopandas reads) into a boundary store at ``out`` (directory or s3://).

    Every feature is repaired; features sharing a value of ``region_field`` are dissolved into one
    (Multi)Polygon. Features without a region id or a polygon are dropped and listed in the summary.
    Region files are written first and ``index.json`` last. ``grid`` (``CRS,RES`` or ``CRS,XRES,YRES``) is the
    default target grid of every region; the features' ``grid_crs``/``grid_res`` fields override it.

    Raises BoundaryError (unreadable file, empty layer, missing field, no usable region), MissingCRSError,
    ConfigError (cannot write ``out``) or UploadError (a transient S3 fault while writing).
    """
    from sceneclip.tools.vectors import read_vector  # geopandas: tooling only, never on the Lambda path

    location = StoreLocation(out, s3_client=s3_client)
    what = f"{vector!r}" + (f" layer {layer!r}" if layer else "")
    frame = read_vector(vector, layer)
    if len(frame) == 0:
        raise BoundaryError(f"boundary file {what} has no features")
    if frame.crs is None:
        raise MissingCRSError(
            f"boundary file {what} has no CRS; add one (e.g. a .prj file, or `ogr2ogr -a_srs EPSG:4326`)"
        )
    geometry_name = frame.geometry.name
    if region_field not in frame.columns or region_field == geometry_name:
        fields = ", ".join(str(c) for c in frame.columns if c != geometry_name) or "(none)"
        raise BoundaryError(f"boundary file {what} has no field {region_field!r}; fields are: {fields}")
    column = frame[region_field]
    ids = [None if missing else value for value, missing in zip(column.tolist(), column.isna().tolist(), strict=True)]
    try:
        default_grid = TargetGrid.parse(grid) if grid else None
    except InvalidOptionsError as exc:
        raise ConfigError(f"--grid: {exc}") from exc
    compiled, dropped = compile_regions(ids, list(frame.geometry), region_field=region_field,
                                        grid_fields=feature_grid_fields(frame), default_grid=default_grid)
    if not compiled:
        raise EmptyGeometryError(
            f"boundary file {what} has no region with a polygon in field {region_field!r} "
            f"({len(frame)} features, all dropped: {'; '.join(dropped[:3])})"
        )
    refuse_slug_collisions(compiled, what)
    index = make_index(compiled, crs_wkt=frame.crs.to_wkt(), region_field=region_field,
                       source=os.path.basename(vector), default_grid=default_grid)
    written = 0
    name = INDEX_NAME
    try:
        for region in compiled.values():
            name = region.key
            location.write(name, region.wkb, content_type="application/octet-stream")
            written += len(region.wkb)
        name = INDEX_NAME
        body = json.dumps(index, ensure_ascii=False, indent=1, sort_keys=True).encode()
        location.write(name, body, content_type="application/json")
        written += len(body)
    except aws_errors() as exc:
        raise write_error(exc, location, name) from exc
    return StoreSummary(
        uri=location.uri, version=index["version"], regions=len(compiled), bytes_written=written,
        crs=frame.crs.to_string(), region_field=region_field, source=index["source"], dropped=tuple(dropped),
    )
