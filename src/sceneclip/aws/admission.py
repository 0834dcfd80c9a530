"""What a scene must pass before it is read, and the second looks that make a read error permanent evidence.

The refusals are the trust rules at the door (never an output of ours, only input buckets, only the object the
event announced). The second looks run after a failure, before it is recorded: an error is called permanent
only on evidence, and these fetch that evidence (the object's first bytes; its current ETag) with one small
request each, through the bucket's own :class:`~sceneclip.aws.sources.SourceAccess` (region, payer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sceneclip.aws.config import Settings
from sceneclip.aws.events import SceneRef
from sceneclip.aws.s3 import TIFF_MAGIC, SceneObject, first_bytes, head_scene
from sceneclip.aws.sources import SourceAccess
from sceneclip.errors import (
    CONTENT,
    BucketNotAllowedError,
    RasterReadError,
    RecursionRefusedError,
    SceneclipError,
    SourceUnavailableError,
    SupersededError,
)

log = logging.getLogger("sceneclip.aws.admission")


def refuse_recursion(settings: Settings, ref: SceneRef) -> None:
    """Our own outputs must never be clipped again (same bucket, or an event misrouted to us)."""
    if settings.is_output(ref.bucket, ref.key):
        raise RecursionRefusedError(
            f"{ref.uri} is under the output location s3://{settings.output_bucket}/{settings.output_prefix}; "
            "refusing to clip an output (it would loop). Exclude the output prefix from the trigger."
        )


def refuse_bucket(settings: Settings, ref: SceneRef) -> None:
    """Only input buckets are read: the worker runs with an operator's credentials, which reach more."""
    if not settings.input_bucket_allowed(ref.bucket):
        raise BucketNotAllowedError(
            f"{ref.uri}: bucket {ref.bucket!r} is not an input bucket (SCENECLIP_INPUT_BUCKETS="
            f"{','.join(settings.input_buckets)}); add it there to clip its objects"
        )


def refuse_changed(ref: SceneRef, obj: SceneObject) -> None:
    """An unversioned key whose ETag is no longer the event's holds another object: that one has its own event."""
    if not ref.version_id and not obj.version_id and ref.etag and obj.etag and ref.etag != obj.etag:
        raise SupersededError(
            f"{obj.uri} was overwritten after the event: the event announced ETag {ref.etag}, the bucket now "
            f"holds ETag {obj.etag}; the newer object's own event clips it"
        )


def confirm_content_error(err: SceneclipError, obj: SceneObject,
                          access: Callable[[], SourceAccess]) -> SceneclipError:
    """GDAL's "not recognized as a supported format" is evidence only when GDAL got the bytes: a 503 on the
    header read (after a good size probe) produces the same words and no HTTP error. So check the object's
    first bytes with one GET: not a TIFF → permanent, saying so; a TIFF, or the GET fails → transient.
    ``access`` is called only when a look is needed (finding a bucket's region costs a request, and may fail)."""
    if getattr(getattr(err, "evidence", None), "kind", None) != CONTENT:
        return err
    try:
        source = access()
        head = first_bytes(source.s3, obj, payer=source.payer)
    except SceneclipError as exc:
        return exc if exc.permanent else SourceUnavailableError(f"{err} — but its first bytes could not be re-read ({exc})")
    if head.startswith(TIFF_MAGIC):
        return SourceUnavailableError(f"{obj.uri} is a TIFF (magic {head[:4]!r}) yet GDAL could not read it: "
                                      f"an incomplete fetch, will retry ({err})")
    # The bytes seen go to the log, not the message: equal causes keep equal messages for `sceneclip status`.
    log.info("not a TIFF header", extra={"scene": obj.uri, "first_bytes": repr(head[:8])})
    what = "it is empty" if not head else "its first bytes are not a TIFF header"
    confirmed = type(err)(f"{err} (confirmed: {what})")
    confirmed.evidence = err.evidence  # type: ignore[attr-defined]
    return confirmed


def superseded_by_overwrite(exc: SceneclipError, obj: SceneObject,
                            access: Callable[[], SourceAccess]) -> SceneclipError:
    """A failed read of an unversioned object: if the key now holds another ETag, say so (permanent)."""
    if obj.version_id or not isinstance(exc, (RasterReadError, SupersededError, SourceUnavailableError)):
        return exc
    try:
        source = access()
        now = head_scene(source.s3, obj.bucket, obj.key, payer=source.payer).etag
    except SceneclipError:
        return exc
    if now == obj.etag:
        return exc
    err = SupersededError(
        f"{obj.uri} was overwritten while it was read (If-Match {obj.etag}, the bucket now holds ETag {now}): "
        "nothing was clipped from it; the newer object's own event clips it"
    )
    err.__cause__ = exc
    return err
