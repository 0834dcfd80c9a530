"""From records to what the page shows: table rows, quick-look figures and map shapes."""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass
from typing import Any

from sceneclip.tools.report.boundaries import BoundaryFinder, boundary_lonlat, footprint_lonlat
from sceneclip.tools.report.inputs import ReportEntry
from sceneclip.tools.report.svgmap import MapShape

log = logging.getLogger("sceneclip.tools.report")


@dataclass(frozen=True)
class Figure:
    """One clip's quick-look: a ``data:image/png;base64`` URI (or None and why not)."""

    scene: str
    region: str
    uri: str | None
    problem: str | None = None


def error_in_words(error_type: str | None, error: str | None) -> str:
    """The failure as a person reads it: what the error class means, then the record's own reason."""
    if not error_type and not error:
        return ""
    from sceneclip import errors

    cls = getattr(errors, error_type or "", None)
    meaning = (cls.__doc__ or "").strip().splitlines()[0] if isinstance(cls, type) and cls.__doc__ else ""
    parts = [p for p in (meaning, error) if p]
    return " — ".join(parts) or str(error_type)


def object_size(uri: str, s3_client: Any = None) -> int | None:
    """Size of a source (local path or ``s3://``), for bytes fetched vs object size; None when unknown."""
    try:
        if uri.startswith("s3://"):
            import boto3

            bucket, _, key = uri[5:].partition("/")
            return int((s3_client or boto3.client("s3")).head_object(Bucket=bucket, Key=key)["ContentLength"])
        return os.path.getsize(uri)
    except Exception as exc:  # noqa: BLE001 - the size is context, not essential
        log.info("size of %s unknown: %s", uri, exc)
        return None


def _gdal_path(uri: str) -> str:
    return "/vsis3/" + uri[5:] if uri.startswith("s3://") else uri


def quicklook_uri(entry: ReportEntry, boundary: Any, size: int = 240) -> Figure:
    """Read the COG's overview, draw the boundary, embed the PNG."""
    import rasterio

    from sceneclip.core.gdalenv import gdal_s3_options
    from sceneclip.tools.report.png import encode_png
    from sceneclip.tools.report.quicklook import render_quicklook

    rec = entry.record
    region = str(rec.region)
    if rec.status != "ok" or not rec.output:
        return Figure(rec.source, region, None, "no output")
    try:
        with rasterio.Env(**gdal_s3_options()):
            rgb = render_quicklook(_gdal_path(rec.output), boundary, size)
    except Exception as exc:  # noqa: BLE001 - the table still shows the record
        return Figure(rec.source, region, None, f"cannot read {rec.output}: {exc}")
    return Figure(rec.source, region, "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode("ascii"))


def map_shapes(entries: list[ReportEntry], finder: BoundaryFinder) -> list[MapShape]:
    """One shape per distinct region of an ok clip (its boundary) and one per ok clip (its footprint).

    Regions of failed records are left to the table: a region that does not overlap its scene (the usual
    failure) may lie a continent away and would shrink the map to nothing.
    """
    shapes, seen = [], set()
    for entry in entries:
        rec = entry.record
        region = str(rec.region)
        if rec.status == "ok" and rec.region and region not in seen:
            seen.add(region)
            geom = boundary_lonlat(finder.boundary(entry))
            if geom is not None:
                shapes.append(MapShape("region", region, geom))
        if rec.status == "ok":
            footprint = footprint_lonlat(entry)
            if footprint is not None:
                shapes.append(MapShape("footprint", f"{os.path.basename(rec.source)} / {region}", footprint, "ok"))
    return shapes


def table_row(entry: ReportEntry, source_size: int | None) -> dict[str, Any]:
    """The verification table's cells for one record (raw values; the page formats them)."""
    rec = entry.record
    failed_checks = sorted(k for k, v in (rec.checks or {}).items() if v is False)
    return {
        "scene": rec.source, "region": rec.region, "status": rec.status, "valid_fraction": rec.valid_fraction,
        "bytes_fetched": rec.bytes_fetched, "source_size": source_size, "output_size": rec.size_bytes,
        "output": rec.output, "failed_checks": failed_checks, "transient": rec.transient,
        "error": error_in_words(rec.error_type, rec.error), "error_type": rec.error_type,
    }
