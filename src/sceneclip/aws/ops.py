"""Operating a deployment: move dead-lettered messages back (redrive) and report progress (status).

``redrive`` receives from the dead-letter queue, sends each message body (and its message attributes) to the
work queue in batches of 10, and deletes from the DLQ only what the work queue accepted: a message is never
lost, at worst it is sent twice (the pipeline's idempotency absorbs the duplicate). SQS's own redrive
(``start_message_move_task``) does the same server-side on AWS; this one also runs against moto, LocalStack and
queues that are not each other's redrive pair.

``status`` scans the records table: counts by status, failures split into permanent and transient (a transient
one is re-enqueued by the next backfill), the most common failure reasons, and the depth of the work queue and
DLQ.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from sceneclip.aws.backfill import SQS_BATCH, current_records, failure_is_transient

QUEUE_DEPTH_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                          "ApproximateNumberOfMessagesDelayed")
REASON_LIMIT = 160


# --- redrive -------------------------------------------------------------------------------------------------
@dataclass
class RedriveSummary:
    source: str
    target: str
    received: int = 0
    sent: int = 0  # accepted by the target (in a dry run: would be sent)
    deleted: int = 0  # removed from the source after a successful send
    failed: int = 0  # refused by the target; left in the source
    dry_run: bool = False
    bodies: list[str] = field(default_factory=list)  # dry run: the bodies that would move
    duration_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verb = "would move" if self.dry_run else "moved"
        return (f"sceneclip redrive: received {self.received}, {verb} {self.sent}, deleted {self.deleted}, "
                f"failed {self.failed} in {self.duration_s:.1f} s")


def redrive(source_url: str, target_url: str, *, max_messages: int | None = None, dry_run: bool = False,
            sqs: Any = None, wait_time: int = 1, hold_s: int = 60) -> RedriveSummary:
    """Move messages from ``source_url`` (the DLQ) to ``target_url`` until the source is empty or ``max_messages``.

    Messages are hidden in the source for ``hold_s`` while being moved; in a dry run they are listed, then
    made visible again.
    """
    import boto3

    sqs = sqs or boto3.client("sqs")
    started = time.perf_counter()
    summary = RedriveSummary(source=source_url, target=target_url, dry_run=dry_run)
    held: list[dict[str, Any]] = []
    try:
        while max_messages is None or summary.received < max_messages:
            want = SQS_BATCH if max_messages is None else min(SQS_BATCH, max_messages - summary.received)
            messages = sqs.receive_message(QueueUrl=source_url, MaxNumberOfMessages=want, WaitTimeSeconds=wait_time,
                                           VisibilityTimeout=hold_s, MessageAttributeNames=["All"]).get("Messages", [])
            if not messages:
                break
            summary.received += len(messages)
            if dry_run:
                held += messages
                summary.sent += len(messages)
                summary.bodies += [m["Body"] for m in messages]
                continue
            entries = [_send_entry(str(i), m) for i, m in enumerate(messages)]
            resp = sqs.send_message_batch(QueueUrl=target_url, Entries=entries)
            ok_ids = {e["Id"] for e in resp.get("Successful", [])}
            moved = [m for i, m in enumerate(messages) if str(i) in ok_ids]
            summary.sent += len(moved)
            summary.failed += len(messages) - len(moved)
            if moved:
                resp = sqs.delete_message_batch(QueueUrl=source_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(moved)])
                summary.deleted += len(resp.get("Successful", []))
            refused = [m for i, m in enumerate(messages) if str(i) not in ok_ids]
            if refused:
                _release(sqs, source_url, refused)
    finally:
        if held:
            _release(sqs, source_url, held)
    summary.duration_s = round(time.perf_counter() - started, 3)
    return summary


def _send_entry(entry_id: str, message: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message["Body"]}
    attrs = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        attrs[name] = {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
    if attrs:
        entry["MessageAttributes"] = attrs
    return entry


def _release(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), SQS_BATCH):
        chunk = messages[start:start + SQS_BATCH]
        sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(chunk)])


# --- status --------------------------------------------------------------------------------------------------
@dataclass
class Status:
    table: str
    records: int = 0
    scenes: int = 0
    by_status: dict[str, int] = field(default_factory=dict)  # ok, failed, skipped (+ any other status found)
    failed_permanent: int = 0
    failed_transient: int = 0
    top_failures: list[dict[str, Any]] = field(default_factory=list)  # error_type, reason, count, example
    queues: dict[str, dict[str, int]] = field(default_factory=dict)  # url -> depth attributes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        counts = ", ".join(f"{k} {v}" for k, v in self.by_status.items())
        out = [f"records table {self.table}: {self.records} records of {self.scenes} scenes: {counts} "
               f"(failed: {self.failed_permanent} permanent, {self.failed_transient} transient)"]
        for f in self.top_failures:
            out.append(f"  {f['count']:>6}  {f['error_type']}: {f['reason']}")
        for url, depth in self.queues.items():
            out.append(f"queue {url}: {depth.get('ApproximateNumberOfMessages', 0)} waiting, "
                       f"{depth.get('ApproximateNumberOfMessagesNotVisible', 0)} in flight, "
                       f"{depth.get('ApproximateNumberOfMessagesDelayed', 0)} delayed")
        return out


def failure_reason(error: str | None, limit: int = REASON_LIMIT) -> str:
    """An error message with what varies per scene (URIs, quoted names, numbers) blanked, so equal causes group."""
    text = " ".join((error or "").split())
    text = re.sub(r"(s3://|/vsis3/|/vsicurl/|https?://)\S+", "<uri>", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"\b\d+(\.\d+)?\b", "N", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize_records(records: list[dict[str, Any]], *, table: str = "", top: int = 5,
                      scene_prefix: str | None = None) -> Status:
    """Counts and top failure reasons over records (pure: ``status`` feeds it the table scan)."""
    records = list(current_records(records))  # a superseded scene-level failure is history, not status
    if scene_prefix:
        records = [r for r in records if str(r.get("scene", "")).startswith(scene_prefix)]
    status = Status(table=table, records=len(records), scenes=len({r.get("scene") for r in records}))
    by_status: Counter[str] = Counter({"ok": 0, "failed": 0, "skipped": 0})
    reasons: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], str] = {}
    for r in records:
        by_status[str(r.get("status", "unknown"))] += 1
        if r.get("status") == "failed":
            if failure_is_transient(r):
                status.failed_transient += 1
            else:
                status.failed_permanent += 1
            key = (str(r.get("error_type") or "Unknown"), failure_reason(r.get("error")))
            reasons[key] += 1
            examples.setdefault(key, f"{r.get('scene')} [{r.get('region')}]")
    status.by_status = dict(by_status)
    status.top_failures = [{"error_type": et, "reason": reason, "count": n, "example": examples[(et, reason)]}
                           for (et, reason), n in reasons.most_common(top)]
    return status


def queue_depth(sqs: Any, queue_url: str) -> dict[str, int]:
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(QUEUE_DEPTH_ATTRIBUTES))["Attributes"]
    return {name: int(attrs.get(name, 0)) for name in QUEUE_DEPTH_ATTRIBUTES}


def status(table: str, *, queues: tuple[str, ...] = (), top: int = 5, scene_prefix: str | None = None,
           records: Any = None, sqs: Any = None) -> Status:
    """Scan the records table (one full scan: fine for millions of records, about 1 RRU per 4 KB) and the queues."""
    import boto3

    from sceneclip.aws.records_table import RecordStore

    store = records or RecordStore(table)
    result = summarize_records(store.scan(), table=table, top=top, scene_prefix=scene_prefix)
    if queues:
        sqs = sqs or boto3.client("sqs")
        result.queues = {url: queue_depth(sqs, url) for url in queues}
    return result
