"""What the pipeline works on, and the small rules around it: one (scene version, region) job, its output key,
which of two readings of a key the event meant, and when a failure is really the deadline's.

Kept apart from :mod:`sceneclip.aws.pipeline` so the orchestration reads as orchestration.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sceneclip.aws.config import Settings
from sceneclip.aws.events import SceneRef
from sceneclip.aws.mosaic_events import mosaic_scene
from sceneclip.aws.records_table import SourceOrder
from sceneclip.aws.s3 import SceneObject
from sceneclip.core.deadline import Deadline, per_call_timeout_s
from sceneclip.core.gdalenv import CLOUD_READ_OPTIONS
from sceneclip.core.naming import NameFields
from sceneclip.core.records import VerificationRecord
from sceneclip.errors import AmbiguousKeyError, DeadlineExceeded, OutputBusyError, RasterReadError, SceneclipError


@dataclass(frozen=True)
class SourcePin:
    """One source object version of a mosaic job, as its HEAD saw it (plain JSON: part of the idempotency key)."""

    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int
    last_modified: str | None = None

    @classmethod
    def of(cls, obj: SceneObject) -> SourcePin:
        return cls(obj.bucket, obj.key, obj.version_id, obj.etag, obj.size, obj.last_modified)

    @property
    def object(self) -> SceneObject:
        return SceneObject(self.bucket, self.key, self.version_id, self.etag, self.size, self.last_modified)


@dataclass(frozen=True)
class StackMember:
    """One asset of a stacked STAC Item clip (``SCENECLIP_STAC_STACK=true``): the exact object version read
    for it, its asset key (the band description) and whether its STAC metadata says it holds classes."""

    asset: str
    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int
    categorical: bool = False

    @property
    def object(self) -> SceneObject:
        return SceneObject(self.bucket, self.key, self.version_id, self.etag, self.size)


@dataclass(frozen=True)
class ClipJob:
    """One (scene version, region) clip: also the idempotency payload, so every field is plain JSON.

    A mosaic job names its group and every source version in ``sources`` (priority order; the first is also
    in ``bucket``/``key``/``version_id``/``etag``), so the idempotency key covers each source's ETag/version.
    """

    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int
    region: str
    config_hash: str
    # The boundary store's version: part of the idempotency key, so a rebuilt store re-clips.
    boundary_version: str = ""
    last_modified: str | None = None  # the version's LastModified (orders versions without a sequencer)
    sequencer: str | None = None  # the S3 event's sequencer, when it had one
    # A STAC Item's asset: "<item id>@<updated>" (idempotency key: a republished Item is clipped again); "" otherwise.
    item_edition: str = ""
    group: str = ""  # a mosaic's group (its output is {prefix}{region}/{group}.tif); "" otherwise
    sources: tuple[SourcePin, ...] = ()  # a mosaic's sources, in priority order; () otherwise
    # A stack (SCENECLIP_STAC_STACK=true): the Item's identity (``stac://collection/id``, the record's scene) and
    # its assets in band order. ``key`` is then a name for the stack beside the assets (what the output key
    # template renders) and ``etag`` the members' ETags joined, so the idempotency key covers every member.
    item_scene: str = ""
    members: tuple[StackMember, ...] = ()

    @property
    def scene(self) -> str:
        """The record's identity: ``mosaic://group`` for a mosaic, the Item's for a stack, else ``s3://bucket/key``."""
        if self.sources:
            return mosaic_scene(self.group)
        return self.item_scene or f"s3://{self.bucket}/{self.key}"

    def object_named_in(self, exc: BaseException) -> SceneObject | None:
        """The object a failure is about, for the second looks: the job's own, or for a stack the member whose
        URI the error names (None when it names none: no second look then)."""
        if not self.members:
            return SceneObject(self.bucket, self.key, self.version_id, self.etag, self.size)
        text = str(exc)
        return next((m.object for m in self.members if m.object.uri in text), None)

    @property
    def order(self) -> SourceOrder:
        return SourceOrder.of(self.last_modified, self.sequencer)


def output_key(settings: Settings, job: ClipJob) -> str:
    """The COG's key from ``SCENECLIP_OUTPUT_KEY`` (:mod:`sceneclip.core.naming`): deterministic, so a retry
    overwrites its own output and nothing else."""
    fields = NameFields(prefix=settings.output_prefix, region=job.region, bucket=job.bucket, key=job.key,
                        date=(job.last_modified or "")[:10] or None, collection=settings.stac_collection)
    return settings.output_template.render(fields)


def in_progress(exc: BaseException) -> bool:
    """Another invocation is making this very output: our claim found its lease, or Powertools found its
    in-progress idempotency record. Matched by name so the handler-less paths need not import Powertools'
    idempotency package (~120 ms)."""
    return isinstance(exc, OutputBusyError) or type(exc).__name__ == "IdempotencyAlreadyInProgressError"


def overlaps(boundary: Any, ds: Any) -> bool:
    from sceneclip.core.geometry import overlap_with_raster, to_raster_crs

    try:
        return not overlap_with_raster(to_raster_crs(boundary, ds.crs, tuple(ds.bounds)), tuple(ds.bounds)).is_empty
    except SceneclipError:
        return False


def pick_by_etag(ref: SceneRef, found: list[SceneObject]) -> SceneObject:
    """The object an ambiguous event key means: the one whose ETag the event names (its size when the event
    has no ETag; a single existing candidate when it has neither). No match, or two: permanent, with both seen.
    """
    if ref.etag:
        matching, by = [o for o in found if o.etag == ref.etag], f"the event's ETag {ref.etag}"
    elif ref.size is not None:
        matching, by = [o for o in found if o.size == ref.size], f"the event's size {ref.size}"
    else:
        matching, by = found, "the event (it names no ETag or size)"
    if len(matching) == 1:
        return matching[0]
    seen = ", ".join(f"{o.key!r} (ETag {o.etag}, {o.size} bytes)" for o in found) or "neither exists"
    raise AmbiguousKeyError(
        f"event key {ref.key_as_delivered!r} in s3://{ref.bucket} can be read as {ref.key_as_delivered!r} or "
        f"{ref.key!r}; {'no' if not matching else 'more than one'} object matches {by} ({seen})"
        + ("; was it replaced or deleted after the event?" if not matching else "")
    )


def past_deadline(exc: SceneclipError, deadline: Deadline | None) -> SceneclipError:
    """A read or transient failure caused by the budget is reported as DeadlineExceeded.

    That is: it surfaced once the budget was spent, or it is a timeout while the deadline had shortened the
    network timeouts (the capped timeout fired; the configured one might not have). Content errors with their
    own evidence (no overlap, unknown region, ...) are kept as they are.
    """
    if deadline is None or isinstance(exc, DeadlineExceeded):
        return exc
    if exc.permanent and not isinstance(exc, RasterReadError):
        return exc
    base = float(CLOUD_READ_OPTIONS["GDAL_HTTP_TIMEOUT"])
    capped_timeout = per_call_timeout_s(deadline, base) < base and any(
        marker in str(exc).lower() for marker in ("timed out", "timeout"))
    if not (deadline.expired() or capped_timeout):
        return exc
    out = deadline.exceeded(f"during a network call capped to fit it ({exc.error_type}: {exc})")
    out.__cause__ = exc
    return out


def not_reached(exc: DeadlineExceeded, regions: tuple[str, ...]) -> DeadlineExceeded:
    """The same DeadlineExceeded, naming the regions of the scene that were never started."""
    if not regions or exc.regions_not_reached:
        return exc
    out = DeadlineExceeded(f"{exc}; regions not reached: {', '.join(regions)}", regions_not_reached=regions)
    out.__cause__ = exc.__cause__
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


ClipRunner = Callable[[ClipJob], VerificationRecord]
