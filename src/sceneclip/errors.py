"""Every sceneclip exception in one place.

Each error says whether it is *permanent* (the input is wrong: retrying cannot help, record it and move on)
or *transient* (the network, a throttle, a timeout: raise so Lambda/SQS retry). The pipeline acts on
``error.permanent`` alone, so a new failure mode only needs the right base class here.
"""

from __future__ import annotations

import re


class SceneclipError(Exception):
    """Base class. ``permanent`` tells the pipeline whether a retry could ever succeed."""

    permanent: bool = True

    @property
    def error_type(self) -> str:
        """The class name, as records and metrics name the error."""
        return type(self).__name__


class PermanentError(SceneclipError):
    """Bad input or configuration: record the failure, do not retry."""

    permanent = True


class TransientError(SceneclipError):
    """A fault outside the input (5xx, throttling, timeout): retry."""

    permanent = False


# --- permanent ----------------------------------------------------------------------------------------------
class ConfigError(PermanentError):
    """Missing or invalid configuration (names the variable or option)."""


class InvalidOptionsError(PermanentError):
    """Options that cannot be combined (e.g. invert with crop)."""


class InvalidItemError(PermanentError):
    """A STAC Item that cannot be clipped as given: no assets, an asset without href, a selected asset missing."""


class RasterReadError(PermanentError):
    """The source cannot be opened or decoded as a raster (not found, not a raster, corrupt)."""


class MissingCRSError(PermanentError):
    """The raster or the boundary has no coordinate reference system."""


class BoundaryError(PermanentError):
    """The boundary cannot be read, has no usable geometry, or the selection matched nothing."""


class EmptyGeometryError(BoundaryError):
    """After repair and dropping empties nothing is left of the boundary."""


class UnknownRegionError(BoundaryError):
    """The region asked for is not in the boundary layer or store."""


class NoOverlapError(PermanentError):
    """The boundary does not overlap the raster: no clip is produced (never an all-nodata file)."""


class ReprojectionError(PermanentError):
    """The boundary cannot be transformed into the raster's CRS."""


class OutputTooLargeError(PermanentError):
    """An in-memory result was asked for, but the window does not fit the memory limit."""


class VerificationError(PermanentError):
    """The written output failed a verification check; it is not published.

    Carries the failed verification record so the caller can store exactly what was checked.
    """

    def __init__(self, message: str, record: object | None = None) -> None:
        super().__init__(message)
        self.record = record


class RecursionRefusedError(PermanentError):
    """An event names an object under the output location (would loop)."""


# --- transient ----------------------------------------------------------------------------------------------
class SourceUnavailableError(TransientError):
    """The source could not be fetched for a reason that may pass (5xx, throttling, timeout, connection)."""


class UploadError(TransientError):
    """Writing the output failed for a reason that may pass."""


class OutputBusyError(TransientError):
    """Another clip is writing the same output right now (its lease on the record row has not expired):
    retried, so the two writes happen one after the other and the record always names the object."""


class UnexpectedError(TransientError):
    """A bug or an unforeseen fault: recorded, then retried (bounded by the queue's redrive count)."""


_TRANSIENT_MARKERS = (
    "http response code: 5",
    "http response code: 429",
    "slowdown",
    "throttl",
    "timed out",
    "timeout",
    "connection reset",
    "connection refused",
    "could not connect",
    "couldn't connect",
    "temporarily unavailable",
    "internalerror",
    "serviceunavailable",
    "requesttimeout",
)


def looks_transient(message: str) -> bool:
    """Classify a GDAL/curl/botocore message: True when it describes a fault that may pass on retry.

    GDAL reports HTTP faults only as text ("HTTP response code: 503"), so the text is all we have.
    """
    low = message.lower()
    return any(marker in low for marker in _TRANSIENT_MARKERS)


_PRESIGNED = re.compile(r"(https?://[^?\s'\"]+)\?[^\s'\"]*(?:Signature|X-Amz-Signature|x-amz-security-token)[^\s'\"]*", re.I)


def redact(text: str) -> str:
    """Strip presigned query strings (signature, session token) from a message before it is stored or logged."""
    return _PRESIGNED.sub(r"\1?<presigned>", text)
