"""The one failure classifier (``sceneclip.errors.classify``): evidence first, transient unless proven permanent.

Exceptions here are the real classes callers see (botocore's, rasterio's, OS errors) built in place; the
end-to-end behaviour over real GDAL/boto3 traffic is in test_faults.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError
from rasterio.errors import RasterioIOError
from rasterio.transform import from_origin
from shapely.geometry import Polygon, box

from sceneclip.core.clip import run_clip
from sceneclip.core.geometry import Boundary
from sceneclip.errors import (
    AccessDeniedError,
    ConfigError,
    RasterReadError,
    SourceUnavailableError,
    UnexpectedError,
    UnsupportedRasterError,
    UploadError,
    classify,
    evidence_for,
)


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize("exc,expected", [
    (client_error("SlowDown", 503), SourceUnavailableError),
    (client_error("InternalError", 500), SourceUnavailableError),
    (client_error("", 502), SourceUnavailableError),
    (client_error("ThrottlingException", 400), SourceUnavailableError),
    (client_error("AccessDenied", 403), AccessDeniedError),
    (client_error("", 403), AccessDeniedError),
    (client_error("NoSuchKey", 404), RasterReadError),
    (client_error("InvalidArgument", 400), RasterReadError),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), SourceUnavailableError),
    (ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), SourceUnavailableError),
    (NoCredentialsError(), ConfigError),
    (ConnectionResetError("peer reset"), SourceUnavailableError),
    (KeyError("surprise"), UnexpectedError),
    (RuntimeError("something nobody foresaw"), UnexpectedError),
])
def test_botocore_and_os_errors(exc, expected):
    err = classify(exc, what="reading s3://b/k")
    assert type(err) is expected, err
    assert err.permanent == (expected not in (SourceUnavailableError, UnexpectedError))
    if err.permanent:
        assert "evidence:" in str(err)  # a permanent classification names its evidence


def test_access_denied_is_one_type_for_every_caller():
    denied = client_error("AccessDenied", 403)
    for kwargs in ({}, {"transient": UploadError, "permanent": ConfigError}, {"permanent": ConfigError}):
        assert type(classify(denied, what="x", **kwargs)) is AccessDeniedError


def test_the_exception_chain_is_walked():
    """rasterio's "Read failed. See previous exception" carries the HTTP cause only in its chain."""
    cause = client_error("SlowDown", 503)
    try:
        try:
            raise cause
        except ClientError as inner:
            raise RasterioIOError("Read failed. See previous exception for details.") from inner
    except RasterioIOError as outer:
        err = classify(outer, what="reading s3://b/k")
    assert isinstance(err, SourceUnavailableError) and "SlowDown" in str(err)
    # The same words with nothing behind them: unknown, so retried — never permanent.
    assert isinstance(classify(RasterioIOError("Read failed. See previous exception for details."), what="x"),
                      UnexpectedError)


def test_gdal_http_status_in_the_message_beats_content_words():
    msg = "HTTP response code: 503 - not recognized as a supported file format"
    assert evidence_for(RasterioIOError(msg)).kind == "transient"
    assert evidence_for(RasterioIOError("HTTP response code: 403")).kind == "denied"
    assert evidence_for(RasterioIOError("'x.tif' not recognized as being in a supported file format.")).kind == "content"
    # A short read is a fault on the way, not a corrupt file.
    assert evidence_for(RasterioIOError("TIFFFillStrip:Read error at scanline 10; got 7616 bytes, expected 8478")).kind == "transient"


def test_sceneclip_errors_pass_through_and_presigned_urls_are_redacted():
    typed = RasterReadError("already typed")
    assert classify(typed, what="x") is typed
    err = classify(RuntimeError("GET https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&x-amz-security-token=t failed"),
                   what="reading https://b.s3.amazonaws.com/k?X-Amz-Signature=abc")
    assert "abc" not in str(err) and "<presigned>" in str(err)


def test_complex_raster_is_a_typed_permanent_error(tmp_path):
    path = tmp_path / "complex.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1, dtype="complex_int16",
                       crs="EPSG:32618", transform=from_origin(500000, 4000000, 30, 30)) as dst:
        dst.write(np.ones((1, 20, 20), dtype="complex64"))
    boundary = Boundary.from_geometries([box(500000, 3999700, 500300, 4000000)], "EPSG:32618", source="t")
    rec = run_clip(str(path), boundary).record
    assert rec.status == "failed" and rec.error_type == UnsupportedRasterError.__name__ and rec.transient is False
    assert "complex_int16" in rec.error


def test_nan_boundary_coordinate_is_a_boundary_error(make_raster):
    src = make_raster()
    poly = Polygon([(500000, 3999000), (float("nan"), 4000000), (500900, 4000000)])
    boundary = Boundary.from_geometries([poly], "EPSG:32618", source="t")
    rec = run_clip(src, boundary).record  # never a raw GEOSException
    assert rec.status == "failed" and rec.error_type == "BoundaryError" and rec.transient is False
    assert "non-finite" in rec.error and "feature 0" in rec.error
