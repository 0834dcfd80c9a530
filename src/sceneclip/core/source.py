"""Opening a source raster, and turning GDAL's read failures into typed errors.

A source is untrusted: it is opened only with the allowed GDAL drivers (GTiff by default), so a VRT, a
``<GDAL_WMS>`` document, a GTI index or a JSON file named ``.tif`` is refused before it can name another
file or URL, and its header is checked against :class:`~sceneclip.core.limits.SourceLimits` before any
pixel is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import rasterio
from rasterio.errors import RasterioError

from sceneclip.core.gdalenv import DEFAULT_ALLOWED_DRIVERS
from sceneclip.core.limits import SourceLimits, check_header
from sceneclip.errors import MISSING, RasterReadError, SceneclipError, SupersededError, classify, exception_chain, redact

# What S3 answers (412) when an If-Match pinned read finds another object under the key.
_PRECONDITION_MARKERS = ("pre-conditions you specified did not hold", "precondition failed", "http response code: 412")


def read_error(exc: BaseException, name: str) -> SceneclipError:
    """A GDAL/rasterio failure while reading ``name``, typed by :func:`sceneclip.errors.classify`.

    A 412 to our If-Match pinned read means another object now lives under the key: permanent for this event
    (the newer object has its own). A 404 means the object is gone (deleted after the event, or a wrong key).
    """
    for e in exception_chain(exc):
        if any(marker in str(e).lower() for marker in _PRECONDITION_MARKERS):
            return SupersededError(f"{redact(name)} was overwritten after the event announced it (If-Match failed): "
                                   f"{redact(' '.join(str(e).split()))[:300]}")
    return classify(exc, what=f"reading {name}", hints={MISSING: "the object does not exist (deleted after the event?)"})


def open_source(
    source: str, name: str | None = None, *, drivers: Sequence[str] = DEFAULT_ALLOWED_DRIVERS,
    limits: SourceLimits | None = None,
) -> Any:
    """Open ``source`` with one of ``drivers`` only, and check its header against ``limits``.

    A failure is a typed error naming ``name`` (never a presigned URL). With several drivers each is tried
    in turn (rasterio takes one driver per open), so the cheap common case is a single open.
    """
    label = name or source
    last: RasterioError | None = None
    for driver in drivers:
        try:
            ds = rasterio.open(source, driver=driver)
        except RasterioError as exc:
            last = exc
            continue
        try:
            if limits is not None:
                check_header(ds, redact(label), limits)
        except BaseException:
            ds.close()
            raise
        return ds
    if last is None:
        raise RasterReadError(f"cannot read {redact(label)}: no GDAL driver is allowed (SCENECLIP_ALLOWED_DRIVERS)")
    err = read_error(last, label)
    if isinstance(err, RasterReadError) and "not recognized" in str(last):
        hinted = RasterReadError(
            f"{err}. Only these GDAL formats are read: {', '.join(drivers)} (SCENECLIP_ALLOWED_DRIVERS); a VRT, WMS, "
            "GTI or JSON document is refused whatever its name"
        )
        # Keep the classifier's evidence: the pipeline confirms content evidence (the object's first bytes)
        # before it counts as permanent — GDAL says "not recognized" after a failed header read too.
        hinted.evidence = getattr(err, "evidence", None)  # type: ignore[attr-defined]
        err = hinted
    raise err from last
