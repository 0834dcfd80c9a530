"""The backfill feeder: list an archive under an S3 prefix and put one message per scene still to do on the work queue.

Data flow: list (``list_objects_v2`` pages) → filter (suffix, ``--since``, never the output location) →
decide (records table: done, retry or missing) → messages (:meth:`SceneRef.to_message`, the direct-payload shape
the SQS handler already accepts) → ``send_message_batch`` in tens, re-sending the entries SQS reports failed.

What counts as *done* for one listed object (ETag ``E``) under the function's configuration (``config_hash`` H):
the records the table holds for the scene with ``source_etag == E`` and ``config_hash == H`` (with ``--region R``
only the record of region R) are the *matching* records; an ``ok`` record matches only when it was clipped from
the boundary store's current version (a rebuilt store with a redrawn region is work to do).

* no matching record → **enqueue** (``new``; ``changed`` when the scene has records, but only for another
  ETag or configuration: a re-upload or a new configuration is work to do);
* a matching ``failed`` record whose error is transient (throttling, 5xx, timeouts, unexpected faults) →
  **enqueue** (``retry``): the message may have reached the dead-letter queue, and trying again may pass;
* otherwise (matching records, each ``ok`` or a *permanent* failure: not a raster, no overlap, unknown
  region, ...) → **skip**: redoing it would produce the same output or the same failure. ``--force`` enqueues
  it anyway, with ``"force": true`` so the pipeline bypasses idempotency.

A scene that a spatial lookup clips to several regions is done when every region it was clipped to is ``ok`` or
failed permanently; one transient failure among them re-enqueues the scene (its ``ok`` regions come back from
the idempotency table, within its TTL, instead of being clipped again). A region *added* to the boundary store
after the first run is not seen by this check (the records only know the regions clipped then): run
``sceneclip backfill ... --region NEW``; scenes that do not reach the new region get a permanent
``NoOverlapError`` record after a header read.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sceneclip.errors import ConfigError, SceneclipError
from sceneclip.aws.events import SceneRef
from sceneclip.aws.records_table import NO_REGION
from sceneclip.aws.s3 import aws_error_code

SQS_BATCH = 10  # send_message_batch's limit
SEND_RETRIES = 5
SEND_BACKOFF_S = 0.2



# --- pure decisions ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ListedObject:
    """One object of the listing: enough to decide and to build the message."""

    bucket: str
    key: str
    etag: str
    size: int
    last_modified: datetime

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix). The prefix may be empty (the whole bucket)."""
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise ConfigError(f"{uri!r} is not an s3://bucket/prefix URI")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ConfigError(f"{uri!r} names no bucket")
    return bucket, prefix


def parse_since(value: str | None) -> datetime | None:
    """``2026-01-01`` or an ISO-8601 time (UTC unless it says otherwise) → an aware datetime, or None."""
    if value is None or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--since {value!r} is not a date (YYYY-MM-DD) or ISO-8601 time") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def failure_is_transient(record: Mapping[str, Any]) -> bool:
    """Whether a failed record says a retry may help: its ``transient`` flag, written by the classifier that
    saw the evidence. Records older than the flag fall back to their error class; an unknown class name counts
    as transient, so it is retried rather than forgotten."""
    flag = record.get("transient")
    if isinstance(flag, bool):
        return flag
    return not error_is_permanent(record.get("error_type"))


def error_is_permanent(error_type: str | None) -> bool:
    """Whether a recorded ``error_type`` names a permanent sceneclip error (for records without ``transient``)."""
    if not error_type:
        return False
    return _error_classes().get(error_type, False)


_PERMANENCE: dict[str, bool] = {}


def _error_classes() -> dict[str, bool]:
    if not _PERMANENCE:
        from sceneclip import errors  # noqa: F401 - defines every SceneclipError subclass but one
        from sceneclip.aws import events  # noqa: F401 - InvalidEventError
        todo = [SceneclipError]
        while todo:
            cls = todo.pop()
            _PERMANENCE[cls.__name__] = bool(cls.permanent)
            todo.extend(cls.__subclasses__())
    return _PERMANENCE


def current_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records that still describe the scene: a scene-level failure (region ``-``, failed before its
    regions were known) is superseded by a later ``ok`` of the same ETag and configuration in any region.

    The pipeline deletes such a failure when a region succeeds; this rule covers one written before that (or
    whose delete failed), so backfill, ``sceneclip status`` and the metrics agree.
    """
    records = list(records)
    latest_ok: dict[tuple[Any, Any, Any], str] = {}
    for r in records:
        if r.get("status") == "ok":
            k = (r.get("scene"), r.get("source_etag"), r.get("config_hash"))
            latest_ok[k] = max(latest_ok.get(k, ""), str(r.get("created_at") or ""))
    def superseded(r: Mapping[str, Any]) -> bool:
        k = (r.get("scene"), r.get("source_etag"), r.get("config_hash"))
        return (r.get("status") == "failed" and r.get("region") == NO_REGION and k in latest_ok
                and str(r.get("created_at") or "") <= latest_ok[k])
    return [r for r in records if not superseded(r)]


def decide(records: Iterable[Mapping[str, Any]], etag: str, config_hash: str, *, region: str | None = None,
           force: bool = False, boundary_version: str | None = None) -> tuple[str, str]:
    """``("enqueue" | "skip", reason)`` for one listed object, from the records the table holds for its scene.

    Reasons: ``force``, ``new`` (no record of the scene), ``changed`` (records only for another ETag or
    configuration), ``retry`` (a matching failure was transient), ``done`` (every matching record is ``ok``),
    ``failed-permanently`` (matching records include a permanent failure, none a transient one). Superseded
    scene-level failures (:func:`current_records`) are not counted. With ``boundary_version`` (the boundary
    store's current version), an ``ok`` record made from another version of the store does not match: a
    rebuilt store (a region redrawn) is work to do.
    """
    if force:
        return "enqueue", "force"
    records = current_records(records)
    if region is not None:
        records = [r for r in records if r.get("region") == region]
    matching = [r for r in records if r.get("source_etag") == etag and r.get("config_hash") == config_hash
                and _same_store(r, boundary_version)]
    if not matching:
        return "enqueue", "changed" if records else "new"
    failed = [r for r in matching if r.get("status") != "ok"]
    if any(failure_is_transient(r) for r in failed):
        return "enqueue", "retry"
    return "skip", "failed-permanently" if failed else "done"


def _same_store(record: Mapping[str, Any], boundary_version: str | None) -> bool:
    """An ``ok`` record counts only if clipped from the store's current version; failures carry no version."""
    if boundary_version is None or record.get("status") != "ok":
        return True
    return record.get("boundary_version") == boundary_version


def current_store_version(settings: Any, s3: Any) -> str:
    """The boundary store's current version (what ``ok`` records must have been clipped from to be done)."""
    from sceneclip.aws.store import get_store

    return str(get_store(settings.boundaries, s3_client=s3).version)


def message_for(obj: ListedObject, *, region: str | None, force: bool) -> dict[str, Any]:
    """The queue message: the direct payload ``{"bucket", "key", "etag", "region"?, "force"?}``.

    ``list_objects_v2`` gives no version id, so the message names the ETag only; the pipeline reads the
    current version (its HEAD gives the version) and records the ETag it really read.
    """
    return SceneRef(bucket=obj.bucket, key=obj.key, etag=obj.etag, region=region, force=force).to_message()


# --- summary -------------------------------------------------------------------------------------------------
@dataclass
class BackfillSummary:
    """What a backfill run did. ``listed = ignored + skipped + enqueued + failed``; with ``--group-by``
    (mosaics) ``listed = ignored + grouped`` and ``mosaics = skipped + enqueued + failed`` (one per message)."""

    source: str
    queue_url: str
    listed: int = 0
    ignored: int = 0  # outside --suffix / --since, folder markers, the output location
    skipped: int = 0
    enqueued: int = 0  # in a dry run: would be enqueued
    failed: int = 0  # messages SQS refused after every retry
    grouped: int = 0  # --group-by: objects that went into a (group, region) mosaic
    mosaics: int = 0  # --group-by: (group, region) mosaics decided
    resent: int = 0  # entries re-sent after a batch reported them failed
    dry_run: bool = False
    reasons: dict[str, int] = field(default_factory=dict)  # why enqueued/skipped (see decide)
    failures: list[dict[str, str]] = field(default_factory=list)  # key, code, message of refused messages
    planned: list[dict[str, Any]] = field(default_factory=list)  # dry run: the messages that would be sent
    duration_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verb = "would enqueue" if self.dry_run else "enqueued"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items()))
        mosaics = f" into {self.mosaics} mosaic(s)" if self.mosaics else ""
        return (f"sceneclip backfill {self.source}: listed {self.listed}, ignored {self.ignored}{mosaics}, "
                f"skipped {self.skipped}, {verb} {self.enqueued}, failed {self.failed} "
                f"({reasons or 'nothing to do'}) in {self.duration_s:.1f} s")


# --- I/O -----------------------------------------------------------------------------------------------------
def list_objects(s3: Any, bucket: str, prefix: str, *, requester_pays: bool = False) -> Iterator[ListedObject]:
    """Every object under the prefix, page by page (``list_objects_v2`` paginator, 1000 per page); a
    requester-pays bucket is listed with ``RequestPayer="requester"`` (every page is billed to us)."""
    paginator = s3.get_paginator("list_objects_v2")
    payer = {"RequestPayer": "requester"} if requester_pays else {}
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, **payer):
        for item in page.get("Contents", []):
            yield ListedObject(bucket, item["Key"], str(item.get("ETag", "")).strip('"'), int(item.get("Size", 0)),
                               item["LastModified"])


def send_messages(sqs: Any, queue_url: str, messages: list[tuple[str, dict[str, Any]]], *,
                  retries: int = SEND_RETRIES, backoff_s: float = SEND_BACKOFF_S,
                  sleep: Callable[[float], None] = time.sleep) -> tuple[int, int, list[dict[str, str]]]:
    """Send up to 10 ``(key, message)`` pairs; re-send the entries SQS reports failed.

    Entries failed by the sender's fault (``SenderFault``: too large, malformed) are not re-sent; the others
    (and a whole call that raised) are re-sent up to ``retries`` times with exponential backoff.
    Returns (sent, resent, failures) where failures are ``{"key", "code", "message"}``.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if len(messages) > SQS_BATCH:
        raise ValueError(f"at most {SQS_BATCH} messages per batch, got {len(messages)}")
    pending = {str(i): (key, msg) for i, (key, msg) in enumerate(messages)}
    sent = resent = 0
    failures: list[dict[str, str]] = []
    last_error: dict[str, tuple[str, str]] = {}
    for attempt in range(retries + 1):
        if not pending:
            break
        if attempt:
            resent += len(pending)
            sleep(backoff_s * 2 ** (attempt - 1))
        entries = [{"Id": i, "MessageBody": json.dumps(msg, separators=(",", ":"))} for i, (_, msg) in pending.items()]
        try:
            resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            last_error = {i: (aws_error_code(exc), str(exc)) for i in pending}
            continue
        for ok in resp.get("Successful", []):
            if pending.pop(ok["Id"], None) is not None:
                sent += 1
        for bad in resp.get("Failed", []):
            if bad["Id"] not in pending:
                continue
            last_error[bad["Id"]] = (bad.get("Code", ""), bad.get("Message", ""))
            if bad.get("SenderFault"):
                key, _ = pending.pop(bad["Id"])
                failures.append({"key": key, "code": bad.get("Code", ""), "message": bad.get("Message", "")})
    for i, (key, _) in pending.items():
        code, message = last_error.get(i, ("", "not sent"))
        failures.append({"key": key, "code": code, "message": message})
    return sent, resent, failures


def run_backfill(
    source: str,
    queue_url: str,
    *,
    settings: Any = None,
    records: Any = None,
    s3: Any = None,
    sqs: Any = None,
    suffixes: tuple[str, ...] = (".tif", ".tiff"),
    since: datetime | None = None,
    region: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: bool | None = None,
    requester_pays: bool = False,
) -> BackfillSummary:
    """List ``source`` (``s3://bucket/prefix``) and enqueue every scene still to do on ``queue_url``.

    Parameters
    ----------
    settings:
        The function's :class:`~sceneclip.aws.config.Settings` (its ``config_hash`` identifies the output). Needed
        unless ``force``: without it nothing can be known to be done.
    records:
        A :class:`~sceneclip.aws.records_table.RecordStore` on the function's records table (made from ``settings``
        when None).
    suffixes:
        Keys must end with one of these (case-insensitive); empty = every key.
    since:
        Only objects modified at or after this time.
    progress:
        A progress bar on stderr; None = only when stderr is a terminal.
    requester_pays:
        List with ``RequestPayer="requester"`` (``--requester-pays``); also when the function's
        ``SCENECLIP_REQUESTER_PAYS`` names the bucket, as the function then reads it that way too.
    """
    import boto3

    started = time.perf_counter()
    bucket, prefix = parse_s3_uri(source)
    if settings is None and not force:
        raise ConfigError("the function's configuration is needed to know what is done (SCENECLIP_* variables "
                          "or --env-vars), or use --force to enqueue everything")
    if records is None and settings is not None and not force:
        from sceneclip.aws.records_table import RecordStore

        records = RecordStore(settings.records_table)
    pays = requester_pays or (settings is not None and settings.requester_pays.applies(bucket))
    if s3 is None:  # made for the bucket's region: every page goes straight there, not via a redirect
        from sceneclip.aws.sources import regional_client

        s3 = regional_client(bucket, requester_pays=pays)
    sqs = sqs or boto3.client("sqs")
    config_hash = settings.config_hash if settings is not None else ""
    store_version = current_store_version(settings, s3) if settings is not None and not force else None
    lowered = tuple(s.lower() for s in suffixes if s)
    summary = BackfillSummary(source=source, queue_url=queue_url, dry_run=dry_run)
    reasons: Counter[str] = Counter()
    batch: list[tuple[str, dict[str, Any]]] = []
    bar = _progress_bar(progress)

    def flush() -> None:
        flush_batch(summary, sqs, queue_url, batch, dry_run)

    try:
        for obj in list_objects(s3, bucket, prefix, requester_pays=pays):
            summary.listed += 1
            if ignored_object(obj, lowered, since, settings):
                summary.ignored += 1
            else:
                action, reason = decide(records.for_scene(obj.uri) if records is not None and not force else (),
                                        obj.etag, config_hash, region=region, force=force,
                                        boundary_version=store_version)
                reasons[reason] += 1
                if action == "skip":
                    summary.skipped += 1
                else:
                    batch.append((obj.key, message_for(obj, region=region, force=force)))
                    if len(batch) == SQS_BATCH:
                        flush()
            bar.update(1)
            bar.set_postfix(skipped=summary.skipped, enqueued=summary.enqueued + len(batch), failed=summary.failed,
                            refresh=False)
        flush()
    finally:
        bar.close()
    summary.reasons = dict(reasons)
    summary.duration_s = round(time.perf_counter() - started, 3)
    return summary


def ignored_object(obj: ListedObject, suffixes: tuple[str, ...], since: datetime | None, settings: Any) -> bool:
    if obj.key.endswith("/"):  # a "folder" marker
        return True
    if suffixes and not obj.key.lower().endswith(suffixes):
        return True
    if since is not None and obj.last_modified < since:
        return True
    # Our own outputs are never inputs (the pipeline would refuse them: RecursionRefusedError).
    return settings is not None and settings.is_output(obj.bucket, obj.key)


def _progress_bar(enabled: bool | None) -> Any:
    import sys

    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a "tools" extra: without it, no bar
        return _NoBar()
    return tqdm(unit="obj", desc="sceneclip backfill", file=sys.stderr, dynamic_ncols=True,
                disable=(None if enabled is None else not enabled))


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def flush_batch(summary: BackfillSummary, sqs: Any, queue_url: str, batch: list[tuple[str, dict[str, Any]]],
                dry_run: bool) -> None:
    """Send (or, dry run, plan) the pending messages, count them in ``summary``, and empty ``batch``."""
    if not batch:
        return
    if dry_run:
        summary.planned.extend(msg for _, msg in batch)
        summary.enqueued += len(batch)
    else:
        sent, resent, failures = send_messages(sqs, queue_url, batch)
        summary.enqueued += sent
        summary.resent += resent
        summary.failed += len(failures)
        summary.failures.extend(failures)
    batch.clear()
