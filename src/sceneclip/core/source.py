"""Opening a source raster, and turning GDAL's read failures into typed errors."""

from __future__ import annotations

from typing import Any

import rasterio
from rasterio.errors import RasterioError

from sceneclip.errors import MISSING, SceneclipError, classify


def read_error(exc: BaseException, name: str) -> SceneclipError:
    """A GDAL/rasterio failure while reading ``name``, typed by :func:`sceneclip.errors.classify`.

    A 404 here means the object is gone (deleted after the event, or a wrong key); say so.
    """
    return classify(exc, what=f"reading {name}", hints={MISSING: "the object does not exist (deleted after the event?)"})


def open_source(source: str, name: str | None = None) -> Any:
    """Open ``source`` for reading; a failure is a typed error naming ``name`` (never a presigned URL)."""
    try:
        return rasterio.open(source)
    except RasterioError as exc:
        raise read_error(exc, name or source) from exc
