"""The verification record: one JSON document per clip attempt, ``ok`` or ``failed``.

The same dataclass is printed by ``sceneclip clip --json``, stored in the records table by the Lambda and
written to the JSON-lines report of a batch. Pipeline-only fields (S3 ETags, bytes fetched) default to None
and are simply absent from records made off AWS.

Schema version 2 (``schema_version``) dropped the duplicate pairs of version 1: ``scene`` (= ``source``),
``output_uri`` (= ``output``), ``output_size`` (= ``size_bytes``) and ``region`` (= ``boundary.region``).
Version 3 added ``sources``: one entry per source of a mosaic (bucket, key, ETag, version, bytes fetched).
:meth:`VerificationRecord.from_dict` reads documents of every version (before 3: no ``sources``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from sceneclip import __version__
from sceneclip.errors import redact

if TYPE_CHECKING:
    from sceneclip.core.geometry import Boundary


SCHEMA_VERSION = 3


@dataclass(frozen=True)
class BoundaryRef:
    """Which boundary was used.

    Attributes
    ----------
    file : str
        The vector file or boundary-store URI the geometry came from ("" when no boundary was reached).
    region : str or None
        The region id within it (None: the whole layer).
    content_hash : str
        sha256 of the region's repaired, dissolved geometry (WKB): equal wherever the same region is used.
    """

    file: str
    region: str | None
    content_hash: str


@dataclass(frozen=True)
class VerificationRecord:
    """What was clipped, what was written, and every check made on it.

    Attributes
    ----------
    source : str
        The scene as a person names it: a path, or ``s3://bucket/key`` (never a presigned URL).
    boundary : BoundaryRef
        The boundary used (file or store, region, geometry hash).
    status : str
        ``ok`` (every check held, the output exists) or ``failed`` (no output was published).
    output : str or None
        Where the COG was written: a path, or ``s3://bucket/key``.
    crs, transform, width, height, count, dtype : output grid and data type (transform as GDAL's 6 affine terms).
    nodata : float, str or None
        Output nodata; NaN is written as the string ``"nan"`` (JSON has no NaN).
    mask : str or None
        ``"internal"`` when validity is an internal mask band instead of a nodata value.
    bounds : list of float
        Output bounds in its CRS.
    valid_pixels, valid_fraction : pixels kept (band 1, or all bands with a mask) and their share of the grid.
    sha256, size_bytes : of the output file's bytes.
    checks : dict
        Each verification check by name: True/False, or a measured value.
    error_type, error : str or None
        On failure: the exception class (a :mod:`sceneclip.errors` name) and a one-line readable reason.
    transient : bool or None
        On failure: True when a retry may succeed (the scene is retried), False when only new input can help.
    attempt : int or None
        Delivery attempt that produced the record (SQS ``ApproximateReceiveCount`` or the worker's count).
    duration_ms : float or None
        Wall time of the attempt.
    sceneclip_version, created_at, schema_version : provenance of the record itself.
    source_etag, source_version : the exact object version read (pipeline).
    output_etag, output_version : as returned by the output PUT (pipeline).
    bytes_fetched, requests : network cost of the clip, from GDAL's own statistics (pipeline).
    peak_memory_mb : peak RSS of the process so far.
    config_hash : fingerprint of the options that change the output (``ClipOptions.fingerprint``).
    boundary_version : version of the boundary store the region came from.
    sources : list of dict or None
        A mosaic's sources in priority order (pipeline): ``bucket``, ``key``, ``etag``, ``version_id`` (when
        versioned), ``bytes_fetched`` and ``requests`` (GDAL's statistics for that source's reads), ``used``
        (False when its footprint missed the region and only its header was read). None for one-source clips,
        whose ``source_etag``/``source_version``/``bytes_fetched`` say the same.
    """

    source: str
    boundary: BoundaryRef
    status: str  # "ok" | "failed"
    output: str | None = None
    crs: str | None = None
    transform: list[float] | None = None
    width: int | None = None
    height: int | None = None
    count: int | None = None
    dtype: str | None = None
    nodata: float | str | None = None  # NaN is written as the string "nan" (JSON has no NaN)
    mask: str | None = None  # "internal" when validity is an internal mask band instead of a nodata value
    bounds: list[float] | None = None
    valid_pixels: int | None = None
    valid_fraction: float | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    error: str | None = None
    duration_ms: float | None = None
    transient: bool | None = None
    attempt: int | None = None
    sceneclip_version: str = __version__
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    schema_version: int = SCHEMA_VERSION
    # Pipeline fields (Lambda / worker); None off AWS.
    source_etag: str | None = None
    source_version: str | None = None
    output_etag: str | None = None
    output_version: str | None = None
    bytes_fetched: int | None = None
    requests: int | None = None
    peak_memory_mb: float | None = None
    config_hash: str | None = None
    boundary_version: str | None = None
    sources: list[dict[str, Any]] | None = None

    @property
    def ok(self) -> bool:
        """True when every check held and the output exists."""
        return self.status == "ok"

    @property
    def region(self) -> str | None:
        """The region id (from ``boundary``)."""
        return self.boundary.region

    def to_dict(self, *, drop_none: bool = False) -> dict[str, Any]:
        """Plain JSON-ready dict (NaN nodata as ``"nan"``); ``drop_none`` leaves out empty fields."""
        data = asdict(self)
        if isinstance(self.nodata, float) and math.isnan(self.nodata):
            data["nodata"] = "nan"
        if drop_none:
            data = {k: v for k, v in data.items() if v is not None}
        return data

    def to_json(self, **kwargs: Any) -> str:
        """The record as JSON text (keyword arguments go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerificationRecord:
        """Read a record dict of schema version 1 or 2; unknown keys (e.g. table keys) are ignored."""
        data = dict(data)
        if data.get("schema_version", 1) < 2:  # version 1 kept duplicate pairs; their first halves win
            data.setdefault("output", data.get("output_uri"))
            data.setdefault("size_bytes", data.get("output_size"))
            data["schema_version"] = SCHEMA_VERSION  # (2 → 3 only added the optional ``sources``)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("boundary"), dict):
            values["boundary"] = BoundaryRef(**values["boundary"])
        return cls(**values)


def boundary_ref(boundary: Boundary) -> BoundaryRef:
    """The :class:`BoundaryRef` of a loaded boundary."""
    return BoundaryRef(file=boundary.source, region=boundary.region, content_hash=boundary.content_hash)


def failed_record(source: str, boundary: Boundary | None, exc: BaseException, *, started: float | None = None) -> VerificationRecord:
    """A ``failed`` record with the error's type, a readable one-line reason and whether a retry may help."""
    ref = boundary_ref(boundary) if boundary is not None else BoundaryRef(file="", region=None, content_hash="")
    duration = (time.perf_counter() - started) * 1000 if started is not None else None
    return VerificationRecord(
        source=source,
        boundary=ref,
        status="failed",
        error_type=type(exc).__name__,
        error=redact(" ".join(str(exc).split())) or type(exc).__name__,
        transient=not getattr(exc, "permanent", False),
        duration_ms=round(duration, 1) if duration is not None else None,
    )
