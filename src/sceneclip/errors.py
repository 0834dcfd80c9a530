"""Every sceneclip exception in one place.

Each error says whether it is *permanent* (the input is wrong: retrying cannot help, record it and move on)
or *transient* (the network, a throttle, a timeout: raise so Lambda/SQS retry). The pipeline acts on
``error.permanent`` alone, so a new failure mode only needs the right base class here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


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


class ResamplingRefusedError(InvalidOptionsError):
    """Interpolating resampling asked of categorical data (a colour table): it would invent classes."""


class InvalidItemError(PermanentError):
    """A STAC Item that cannot be clipped as given: no assets, an asset without href, a selected asset missing."""


class InvalidMosaicError(PermanentError):
    """A mosaic job message that cannot be accepted as sent (a missing or malformed field, too many sources):
    the same bytes never parse on a retry. Recorded as a failure; nothing is read."""


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


class AccessDeniedError(ConfigError):
    """The caller may not read or write the object (HTTP 403 / AccessDenied): fix the IAM policy, then redrive.

    One type wherever it happens (source, boundary store, output, tables), so status and backfill group it.
    """


class RequesterPaysError(AccessDeniedError):
    """A requester-pays source bucket read without agreeing to pay (``SCENECLIP_REQUESTER_PAYS`` does not name it).

    Raised only on evidence: S3 denied the request without ``x-amz-request-payer`` and allowed the same HEAD
    with it. Permanent until the setting changes; then redrive.
    """


class UnsupportedRasterError(PermanentError):
    """The raster opens but cannot be clipped to a COG (e.g. a complex data type)."""


class AmbiguousKeyError(PermanentError):
    """An event's key has two readings (``+`` as plus or as a space) and neither object matches its ETag."""


# --- transient ----------------------------------------------------------------------------------------------
class SourceUnavailableError(TransientError):
    """The source could not be fetched for a reason that may pass (5xx, throttling, timeout, connection)."""


class UploadError(TransientError):
    """Writing the output failed for a reason that may pass."""


class DeadlineExceeded(TransientError):
    """The invocation's time ran out before the clip finished: abandoned cleanly so that it is retried.

    Raised between chunks, between regions and when a capped network call ran out of time, early enough
    (a margin before the deadline) to write the failed record and release the idempotency lock.
    ``regions_not_reached`` names the regions of the scene that were never started.
    """

    def __init__(self, message: str, *, regions_not_reached: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.regions_not_reached = tuple(regions_not_reached)


class OutputBusyError(TransientError):
    """Another clip is writing the same output right now (its lease on the record row has not expired):
    retried, so the two writes happen one after the other and the record always names the object."""


class UnexpectedError(TransientError):
    """A bug or an unforeseen fault: recorded, then retried (bounded by the queue's redrive count)."""


_PRESIGNED = re.compile(r"(https?://[^?\s'\"]+)\?[^\s'\"]*(?:Signature|X-Amz-Signature|x-amz-security-token)[^\s'\"]*", re.I)


def redact(text: str) -> str:
    """Strip presigned query strings (signature, session token) from a message before it is stored or logged."""
    return _PRESIGNED.sub(r"\1?<presigned>", text)


# --- untrusted input (issue 15) -------------------------------------------------------------------------------
class LimitExceededError(PermanentError):
    """The input is larger than a configured cap (the message names the cap, its setting and both values)."""


class SupersededError(PermanentError):
    """The object changed after the event announced it: the clip would read a different object.

    Permanent for *this* event: the newer object has its own event, which clips it.
    """


class UnsafeKeyError(PermanentError):
    """An object key GDAL's path syntax would rewrite (``..`` segments, ``//``, a leading ``/``, ``\\``)."""


class BucketNotAllowedError(PermanentError):
    """The event names a bucket that is not an input bucket (``SCENECLIP_INPUT_BUCKETS``)."""


# --- the one classifier ---------------------------------------------------------------------------------------
# Evidence kinds, strongest outcome first. Only these make an error permanent; everything else retries.
TRANSIENT, DENIED, MISSING, REJECTED, CONFIG, CONTENT, UNKNOWN = (
    "transient", "denied", "missing", "rejected", "config", "content", "unknown")

# S3/AWS error codes (and HTTP statuses as strings) by what they mean.
TRANSIENT_CODES = frozenset({
    "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed", "Throttling",
    "ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "TooManyRequestsException", "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired",
    "TransactionConflict", "InternalServerError", "408", "429",
})
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "AllAccessDisabled", "InvalidAccessKeyId",
                          "SignatureDoesNotMatch", "AccountProblem", "Forbidden", "403"})
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NotFound", "ResourceNotFoundException", "404"})
# rasterio exposes GDAL's error class as the exception class name (CPLE_*): the strongest evidence there is.
_GDAL_CLASSES = {
    "CPLE_AWSAccessDeniedError": (DENIED, "AccessDenied"), "CPLE_AWSInvalidCredentialsError": (DENIED, "InvalidCredentials"),
    "CPLE_AWSSignatureDoesNotMatchError": (DENIED, "SignatureDoesNotMatch"),
    "CPLE_AWSObjectNotFoundError": (MISSING, "NoSuchKey"), "CPLE_AWSBucketNotFoundError": (MISSING, "NoSuchBucket"),
}
_BOTO_TRANSIENT = frozenset({"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
                             "ConnectTimeoutError", "HTTPClientError", "ResponseStreamingError", "IncompleteReadError",
                             "ProxyConnectionError", "SSLError"})
_BOTO_CONFIG = frozenset({"NoCredentialsError", "PartialCredentialsError", "NoRegionError", "ParamValidationError",
                          "InvalidEndpointConfigurationError", "ProfileNotFound"})
_HTTP_STATUS = re.compile(r"HTTP (?:response|error) code\s*:\s*(\d{3})|\bstatus(?: code)?[ :=]+(\d{3})\b", re.I)
_S3_CODE = re.compile(r"<Code>(\w+)</Code>|An error occurred \((\w+)\)")
# libcurl/OS wording of a fault on the way (GDAL passes curl's message through).
_NETWORK = re.compile(r"connection (?:reset|refused|aborted|closed)|timed out|timeout was reached|couldn'?t connect|"
                      r"could not connect|transfer closed|recv failure|send failure|empty reply|partial file|"
                      r"broken pipe|temporarily unavailable|curl error|"
                      # a short read: GDAL asked for a block and the connection delivered less
                      r"got \d+ bytes, expected \d+", re.I)
# Content evidence: GDAL fetched the bytes and they are not a raster it can use.
_CONTENT = re.compile(r"not recognized as (?:being in )?a supported (?:file )?format|not a tiff|"
                      r"TIFFReadDirectory|cannot open TIFF file due to missing codec|unsupported data type|"
                      r"not a valid|zero-length|is a directory", re.I)
# A local path that does not exist (for /vsis3/ GDAL says the same after *any* failed request: not evidence).
_LOCAL_MISSING = re.compile(r"no such file or directory", re.I)


@dataclass(frozen=True)
class Evidence:
    """Why an exception was classified as it was: ``kind`` (one of the module's evidence kinds) and ``detail``,
    the observed fact (``HTTP 500 InternalError``, ``GDAL CPLE_AWSAccessDeniedError``…) that records name."""

    kind: str
    detail: str

    @property
    def permanent(self) -> bool:
        return self.kind not in (TRANSIENT, UNKNOWN)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception behind it (``__cause__``, ``__context__``, exception groups), each once.

    rasterio's "Read failed. See previous exception for details." carries the HTTP fault only down here.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop(0)
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        todo += [cur.__cause__, cur.__context__, *getattr(cur, "exceptions", ())]


def _code_kind(code: str, status: int | None) -> str | None:
    if code in TRANSIENT_CODES or (status is not None and (status >= 500 or status in (408, 429))):
        return TRANSIENT
    if code in DENIED_CODES or status == 403:
        return DENIED
    if code in MISSING_CODES or status == 404:
        return MISSING
    if status is not None and 400 <= status < 500:
        return REJECTED
    if code.isdigit() and code.startswith("5"):
        return TRANSIENT
    return None


def _gdal_evidence(e: BaseException) -> Evidence | None:
    name = type(e).__name__
    if name in _GDAL_CLASSES:
        kind, code = _GDAL_CLASSES[name]
        return Evidence(kind, f"GDAL {name} ({code})")
    if name in ("CPLE_AWSError", "CPLE_HttpResponseError"):
        # GDAL's other S3/HTTP errors: the message may hold the code ("InvalidRange: ..."); a 500 holds only
        # S3's sentence. Denied and not-found have their own classes above, so the rest is a fault on the way.
        found = _http_evidence(e) or _leading_code(e) or _network_evidence(e)
        if found is not None and found.kind != UNKNOWN:
            return Evidence(found.kind, f"GDAL {name}: {found.detail}")
        return Evidence(TRANSIENT, f"GDAL {name} ({_first_words(e)})")
    return None


def _leading_code(e: BaseException) -> Evidence | None:
    """GDAL writes S3 errors as ``Code: message``."""
    m = re.match(r"\s*([A-Z][A-Za-z]+): ", str(e))
    if not m:
        return None
    kind = _code_kind(m.group(1), None)
    return Evidence(kind, m.group(1)) if kind else None


def _first_words(e: BaseException, n: int = 8) -> str:
    return " ".join(str(e).split()[:n])


def _http_evidence(e: BaseException) -> Evidence | None:
    """The HTTP status / S3 error code GDAL or boto3 wrote into the message, or curl's words for a network fault."""
    text = str(e)
    m = _HTTP_STATUS.search(text)
    status = int(m.group(1) or m.group(2)) if m else None
    c = _S3_CODE.search(text)
    code = (c.group(1) or c.group(2)) if c else ""
    kind = _code_kind(code, status) if (status or code) else None
    if kind is not None:
        return Evidence(kind, " ".join(x for x in (f"HTTP {status}" if status else "", code) if x))
    return None


def _network_evidence(e: BaseException) -> Evidence | None:
    m = _NETWORK.search(str(e))
    return Evidence(TRANSIENT, f"network fault: {m.group(0)}") if m else None


def _aws_evidence(e: BaseException) -> Evidence | None:
    """botocore, duck-typed (the core may not import it): ClientError's ``.response`` dict, else the class name."""
    response = getattr(e, "response", None)
    if isinstance(response, dict) and ("Error" in response or "ResponseMetadata" in response):
        code = str(response.get("Error", {}).get("Code", "") or "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = status if isinstance(status, int) else None
        kind = _code_kind(code, status)
        detail = " ".join(x for x in (f"HTTP {status}" if status else "", code) if x) or "AWS error"
        return Evidence(kind or UNKNOWN, detail)
    names = {cls.__name__ for cls in type(e).__mro__}
    if names & _BOTO_TRANSIENT:
        return Evidence(TRANSIENT, f"network fault: {type(e).__name__}")
    if names & _BOTO_CONFIG:
        return Evidence(CONFIG, type(e).__name__)
    if isinstance(e, (ConnectionError, TimeoutError)):
        return Evidence(TRANSIENT, f"network fault: {type(e).__name__}")
    if isinstance(e, FileNotFoundError):
        return Evidence(MISSING, "no such file")
    if isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError)):
        return Evidence(DENIED if isinstance(e, PermissionError) else CONTENT, type(e).__name__)
    return None


def _content_evidence(e: BaseException) -> Evidence | None:
    text = str(e)
    if _LOCAL_MISSING.search(text) and "/vsi" not in text:
        return Evidence(MISSING, "no such file")
    m = _CONTENT.search(text)
    return Evidence(CONTENT, f"GDAL: {m.group(0)}") if m else None


def evidence_for(exc: BaseException) -> Evidence:
    """The strongest evidence anywhere in ``exc``'s chain: GDAL's error class, then HTTP status / S3 code in a
    message, then botocore's codes and classes (and OS errors), then curl's words for a network fault, then
    content. ``UNKNOWN`` when nothing fits."""
    chain = list(exception_chain(exc))
    for probe in (_gdal_evidence, _http_evidence, _aws_evidence, _network_evidence, _content_evidence):
        for e in chain:
            found = probe(e)
            if found is not None and found.kind != UNKNOWN:
                return found
    return Evidence(UNKNOWN, type(exc).__name__)


_REASONS = {DENIED: "access denied; check the IAM policy (or the credentials)", MISSING: "not found",
            REJECTED: "request rejected", CONFIG: "configuration problem", CONTENT: "cannot be read as a raster"}


def classify(exc: BaseException, *, what: str, transient: type[SceneclipError] = SourceUnavailableError,
             permanent: type[SceneclipError] = RasterReadError, hints: dict[str, str] | None = None) -> SceneclipError:
    """The one classifier: any exception → a typed :class:`SceneclipError`, permanent only on positive evidence.

    Parameters
    ----------
    exc : BaseException
        What was raised (a rasterio/GDAL error, a botocore error, an OS error, anything). A
        :class:`SceneclipError` is returned unchanged: it was typed where the facts were known.
    what : str
        What was being done, for the message ("reading s3://b/k", "upload to s3://b/k").
    transient, permanent : type
        The classes for a fault that may pass and for not-found/rejected/content evidence. Access denied is
        always :class:`AccessDeniedError` and a missing credential/region/parameter :class:`ConfigError`.
    hints : dict, optional
        Evidence kind → what the person should do, appended to a permanent message of that kind.

    Returns
    -------
    SceneclipError
        With ``.evidence`` (:class:`Evidence`). Nothing placed → :class:`UnexpectedError` (transient: retried
        up to the queue's ``maxReceiveCount``, then the DLQ). A permanent message names its evidence.
    """
    if isinstance(exc, SceneclipError):
        return exc
    ev = evidence_for(exc)
    text = redact(" ".join(str(exc).split()))[:500]
    what = redact(what)
    if ev.kind == TRANSIENT:
        err: SceneclipError = transient(f"{what}: {ev.detail}; may pass, will retry ({text})")
    elif ev.kind == UNKNOWN:
        err = UnexpectedError(f"{what}: {type(exc).__name__}: {text} (unclassified; will retry)")
    else:
        cls = {DENIED: AccessDeniedError, CONFIG: ConfigError}.get(ev.kind, permanent)
        hint = (hints or {}).get(ev.kind)
        err = cls(f"{what}: {_REASONS[ev.kind]} (evidence: {ev.detail}){'; ' + hint if hint else ''}: {text}")
    err.evidence = ev  # type: ignore[attr-defined]
    return err
