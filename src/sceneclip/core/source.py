"""Opening a source raster, and turning GDAL's read failures into typed errors."""

from __future__ import annotations

from typing import Any

import rasterio
from rasterio.errors import RasterioError

from sceneclip.errors import RasterReadError, SceneclipError, SourceUnavailableError, looks_transient, redact


def read_error(exc: Exception, name: str) -> SceneclipError:
    """A GDAL/rasterio failure while reading ``name``, typed transient or permanent."""
    msg, name = redact(str(exc)), redact(name)
    if looks_transient(msg):
        return SourceUnavailableError(f"reading {name} failed, may pass on retry: {msg}")
    return RasterReadError(f"cannot read {name}: {msg}")


def open_source(source: str, name: str | None = None) -> Any:
    """Open ``source`` for reading; a failure is a typed error naming ``name`` (never a presigned URL)."""
    try:
        return rasterio.open(source)
    except RasterioError as exc:
        raise read_error(exc, name or source) from exc
