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


def endpoint_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint to use (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``), or None for AWS itself."""
    env = os.environ if environ is None else environ
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def gdal_s3_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """GDAL config options for /vsis3/ honouring ``AWS_ENDPOINT_URL``; empty endpoint means real AWS."""
    opts = dict(CLOUD_READ_OPTIONS)
    url = endpoint_url(environ)
    if url:
        parsed = urlparse(url if "://" in url else f"https://{url}")
        opts["AWS_S3_ENDPOINT"] = parsed.netloc
        opts["AWS_HTTPS"] = "YES" if parsed.scheme == "https" else "NO"
        # Custom endpoints (moto, MinIO, LocalStack) serve path-style URLs: bucket.127.0.0.1 does not resolve.
        opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
    return opts


def non_cached_option(bucket: str) -> dict[str, str]:
    """GDAL caches /vsis3/ content per path for the life of the process: after a key is overwritten a warm
    container would read stale bytes. Reads of a scene bucket therefore bypass that cache."""
    return {"CPL_VSIL_CURL_NON_CACHED": f"/vsis3/{bucket}"}

