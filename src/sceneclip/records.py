"""The verification record: one JSON document per clip attempt, ``ok`` or ``failed``.

The same dataclass is printed by ``sceneclip clip --json``, stored in the records table by the Lambda and
written to the JSON-lines report of a batch. Pipeline-only fields (S3 ETags, bytes fetched) default to None
and are simply absent from records made off AWS.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import redact

if TYPE_CHECKING:
    from .geometry import Boundary


@dataclass(frozen=True)
class BoundaryRef:
    """Which boundary was used: file or store URI, region, and the content hash of its geometry."""

    file: str
    region: str | None
    content_hash: str


@dataclass(frozen=True)
class VerificationRecord:
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
    sceneclip_version: str = __version__
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    # Pipeline fields (Lambda / worker); None off AWS.
    scene: str | None = None
    region: str | None = None
    source_etag: str | None = None
    source_version: str | None = None
    output_uri: str | None = None
    output_etag: str | None = None
    output_size: int | None = None
    bytes_fetched: int | None = None
    requests: int | None = None
    peak_memory_mb: float | None = None
    config_hash: str | None = None
    boundary_version: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self, *, drop_none: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if isinstance(self.nodata, float) and math.isnan(self.nodata):
            data["nodata"] = "nan"
        if drop_none:
            data = {k: v for k, v in data.items() if v is not None}
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerificationRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("boundary"), dict):
            values["boundary"] = BoundaryRef(**values["boundary"])
        return cls(**values)


def boundary_ref(boundary: Boundary) -> BoundaryRef:
    return BoundaryRef(file=boundary.source, region=boundary.region, content_hash=boundary.content_hash)


def failed_record(source: str, boundary: Boundary | None, exc: BaseException, *, started: float | None = None) -> VerificationRecord:
    """A ``failed`` record with the error's type and a readable one-line reason."""
    ref = boundary_ref(boundary) if boundary is not None else BoundaryRef(file="", region=None, content_hash="")
    duration = (time.perf_counter() - started) * 1000 if started is not None else None
    return VerificationRecord(
        source=source,
        boundary=ref,
        status="failed",
        error_type=type(exc).__name__,
        error=redact(" ".join(str(exc).split())) or type(exc).__name__,
        duration_ms=round(duration, 1) if duration is not None else None,
    )
