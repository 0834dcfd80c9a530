"""GDAL configuration for reading scenes from S3 (or an S3-compatible endpoint).

One variable, the standard ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), retargets boto3 *and* GDAL:
boto3 reads it natively, GDAL does not, so it is mapped here to ``AWS_S3_ENDPOINT``/``AWS_HTTPS``/
``AWS_VIRTUAL_HOSTING``. Used by the CLI for ``s3://`` sources and by the Lambda pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

# Cloud-read settings, each for a reason (documented in the README's configuration reference).
CLOUD_READ_OPTIONS: dict[str, Any] = {
    # Opening a TIFF must not LIST the bucket looking for .ovr/.aux.xml side-cars.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Only TIFFs are ever opened through /vsis3/; anything else is refused without a request.
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    # Adjacent tiles come in one ranged GET instead of many.
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # One GET at open covers the header and IFDs of typical COGs.
    "GDAL_INGESTED_BYTES_AT_OPEN": 32768,
    # Transient HTTP errors (429, 5xx) are retried by GDAL with exponential backoff before we see them.
    "GDAL_HTTP_MAX_RETRY": 4,
    "GDAL_HTTP_RETRY_DELAY": 0.5,
    "GDAL_HTTP_TIMEOUT": 60,
    "GDAL_HTTP_CONNECTTIMEOUT": 10,
    # Range reads go through GDAL's block cache, not a second whole-file cache.
    "VSI_CACHE": "FALSE",
}

# The only GDAL drivers a source is opened with (``SCENECLIP_ALLOWED_DRIVERS`` / ``ClipOptions`` extend it).
# GDAL opens whatever format a file really is, whatever its name: a VRT, a <GDAL_WMS> document or a GTI
# index saved as ``x.tif`` would read local files or make HTTP requests of its own. GTiff also reads COGs
# (GDAL's COG driver only writes).
DEFAULT_ALLOWED_DRIVERS: tuple[str, ...] = ("GTiff",)

# Drivers whose datasets point at *other* data (files, URLs, services): skipped for the whole process, so a
# nested open (an overview or side-car GDAL probes by itself) cannot reach them either. GDAL reads GDAL_SKIP
# when it registers its drivers, i.e. at the first rasterio.Env of the process: see skip_indirection_drivers.
INDIRECTION_DRIVERS: tuple[str, ...] = (
    "VRT", "DERIVED", "GTI", "WMS", "WMTS", "WCS", "MBTiles", "PLMOSAIC", "ESRIC", "DAAS", "OGCAPI", "STACIT",
    "STACTA", "EEDAI", "EEDAIS", "NGW", "PostGISRaster", "Rasterlite", "TileDB", "HTTP", "SENTINEL2", "SAFE",
)

# Options every *source read* gets on top of the cloud ones (set inside each clip's rasterio.Env).
SOURCE_READ_OPTIONS: dict[str, Any] = {
    "GDAL_SKIP": " ".join(INDIRECTION_DRIVERS),
    # GDAL < 3.11 (the 3.11 wheels carry 3.10) lets a VRTRawRasterBand read any absolute path.
    "GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE": "SIBLING_FILES",
    # No .aux.xml side-car is looked for or written next to a source.
    "GDAL_PAM_ENABLED": "NO",
}


def skip_indirection_drivers(environ: dict[str, str] | None = None) -> None:
    """Put :data:`INDIRECTION_DRIVERS` into ``GDAL_SKIP`` of the process environment (kept, if already set).

    Called before GDAL registers its drivers (the handler and the CLI do it at import). It is a second line
    behind the driver allow-list of :func:`sceneclip.core.source.open_source`, which alone refuses them at
    the top level.
    """
    env = os.environ if environ is None else environ
    have = env.get("GDAL_SKIP", "").replace(",", " ").split()
    env["GDAL_SKIP"] = " ".join(dict.fromkeys([*have, *INDIRECTION_DRIVERS]))


def endpoint_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint to use (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``), or None for AWS itself."""
    env = os.environ if environ is None else environ
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def gdal_s3_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """GDAL config options for /vsis3/ honouring ``AWS_ENDPOINT_URL``; empty endpoint means real AWS."""
    opts = dict(CLOUD_READ_OPTIONS)
    opts.update(SOURCE_READ_OPTIONS)
    url = endpoint_url(environ)
    if url:
        parsed = urlparse(url if "://" in url else f"https://{url}")
        opts["AWS_S3_ENDPOINT"] = parsed.netloc
        opts["AWS_HTTPS"] = "YES" if parsed.scheme == "https" else "NO"
        # Custom endpoints (moto, MinIO, LocalStack) serve path-style URLs: bucket.127.0.0.1 does not resolve.
        opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
    return opts


def non_cached_option(*buckets: str) -> dict[str, str]:
    """GDAL caches /vsis3/ content per path for the life of the process: after a key is overwritten a warm
    container would read stale bytes. Reads of scene buckets therefore bypass that cache (GDAL takes a
    ``:``-separated list of path prefixes, so one option covers every bucket a clip reads)."""
    return {"CPL_VSIL_CURL_NON_CACHED": ":".join(f"/vsis3/{b}" for b in buckets)}


def pinned_read_option(etag: str) -> dict[str, str]:
    """Every ranged GET of an unversioned object carries ``If-Match``: if the key is overwritten between the
    HEAD and the last read, S3 answers 412 and the clip fails instead of mixing two objects' bytes."""
    return {"GDAL_HTTP_HEADERS": f'If-Match: "{etag.strip(chr(34))}"'}

