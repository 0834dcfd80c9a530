"""Run the Lambda's SQS path off Lambda: long-poll the work queue and hand each batch to the same handler.

Each receive loop behaves like one Lambda container fed by the SQS event source mapping:

* ``receive_message`` (long poll) → a Lambda-shaped SQS event (``messageId``, ``receiptHandle``, ``body``,
  ``attributes`` with ``ApproximateReceiveCount``, ``messageAttributes``, ``md5OfBody``, ``eventSource``,
  ``eventSourceARN``, ``awsRegion``) → :func:`sceneclip.aws.handler.lambda_handler` with a
  :class:`~sceneclip.aws.context.LocalContext`. The handler routes SQS events to
  ``process_partial_response(event, record_handler, processor, context)``; calling the handler rather than
  that function directly also registers the context with the idempotency layer (an in-progress marker then
  expires with the context's deadline instead of blocking retries for the idempotency TTL), sets the
  correlation id and flushes the metrics, exactly as on Lambda.
* Messages not listed in ``batchItemFailures`` are deleted. Failed ones are left on the queue: they come back
  when their visibility timeout runs out (as with Lambda; ``retry_delay`` shortens that), and SQS's redrive
  policy moves a message to the dead-letter queue once it has been received ``maxReceiveCount`` times.
  Permanent failures (not a raster, no overlap, ...) are recorded by the pipeline and *succeed* as messages,
  so they do not loop.
* While a batch is being processed a heartbeat thread (:mod:`sceneclip.aws.heartbeat`) extends the visibility
  of the messages it holds every third of the visibility timeout, so a long clip is never handed to a second
  worker — but never past the message's deadline.
* Each batch has a deadline of its own, ``timeout_s`` (the function timeout, ``--timeout``): the
  :class:`~sceneclip.aws.context.LocalContext` counts it down, so the handler budgets each scene from it and
  abandons a clip with a transient DeadlineExceeded a margin before it; the idempotency layer's INPROGRESS
  marker expires with it (a worker killed mid-clip blocks a redelivery for at most that long); and the
  heartbeat stops extending the messages at it. At start-up ``sceneclip-*`` spill directories older than
  ``timeout_s`` (left by a killed clip) are removed.

Concurrency N = N independent receive loops in N *spawned* processes (GDAL datasets are not thread-safe, and
forking a process that holds GDAL state is unsafe). Independent loops rather than one receiver feeding a pool:
each process holds only the messages it is working on (so nothing waits, invisible, behind a busy worker), keeps
its own warm caches like a Lambda container, and one crashed process loses only its own batch (SQS redelivers
it). ``concurrency=1`` runs the loop in the calling process.

SIGINT/SIGTERM: stop receiving, finish (and delete or release) the messages held, exit. Messages received after
the stop was asked for are released at once (visibility 0) instead of being started.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from sceneclip.aws.heartbeat import Heartbeat

__all__ = ["Heartbeat", "WorkerOptions", "WorkerSummary", "receive_loop", "run_worker", "sqs_event"]

log = logging.getLogger("sceneclip.aws.worker")

MAX_BATCH = 10


@dataclass
class WorkerSummary:
    """Messages handled by one receive loop, or by all of them (``merge``)."""

    queue_url: str
    concurrency: int = 1
    received: int = 0  # deliveries (a message received twice counts twice)
    succeeded: int = 0  # processed and deleted
    failed: int = 0  # reported in batchItemFailures, left for a retry / the DLQ
    released: int = 0  # received after a stop was asked for, given back unprocessed
    batches: int = 0
    errors: list[str] = field(default_factory=list)  # loop-level faults (not per-message failures)
    duration_s: float = 0.0  # wall time of the run, start-up and the final empty polls included
    first_received: float | None = None  # epoch seconds of the first message received
    last_succeeded: float | None = None  # epoch seconds when the last successful batch finished

    @property
    def messages_per_minute(self) -> float:
        """Successful messages per minute of the whole run (start-up and idle polls included)."""
        return round(self.succeeded / self.duration_s * 60, 1) if self.duration_s > 0 else 0.0

    @property
    def busy_messages_per_minute(self) -> float:
        """Successful messages per minute between the first receive and the last success (no start-up/idle tail)."""
        if self.first_received is None or self.last_succeeded is None or self.last_succeeded <= self.first_received:
            return 0.0
        return round(self.succeeded / (self.last_succeeded - self.first_received) * 60, 1)

    def merge(self, other: WorkerSummary) -> None:
        for name in ("received", "succeeded", "failed", "released", "batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors
        firsts = [t for t in (self.first_received, other.first_received) if t is not None]
        lasts = [t for t in (self.last_succeeded, other.last_succeeded) if t is not None]
        self.first_received = min(firsts) if firsts else None
        self.last_succeeded = max(lasts) if lasts else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "messages_per_minute": self.messages_per_minute,
                "busy_messages_per_minute": self.busy_messages_per_minute}


@dataclass(frozen=True)
class WorkerOptions:
    wait_time: int = 20  # long-poll seconds (0..20)
    visibility_timeout: int | None = None  # None: the queue's own
    batch_size: int = 1  # messages per handler call, as the event source's BatchSize
    max_messages: int | None = None  # per receive loop: stop after receiving this many
    stop_when_empty: bool = False  # stop when the queue holds no visible, in-flight or delayed message
    retry_delay: int | None = None  # visibility given to failed messages; None leaves the timeout to run out
    function_name: str = "ClipFunction"
    memory_mb: int = 2048
    timeout_s: int = 900  # per batch: the LocalContext deadline, the idempotency in-progress expiry, the heartbeat's end


# --- Lambda-shaped events ------------------------------------------------------------------------------------
def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source would deliver for these ``receive_message`` messages."""
    return {"Records": [_record(m, queue_arn, region) for m in messages]}


def _record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    attrs = {k: str(v) for k, v in (message.get("Attributes") or {}).items()}
    attrs.setdefault("ApproximateReceiveCount", "1")
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attrs,
        "messageAttributes": {name: _attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def _attribute(value: dict[str, Any]) -> dict[str, Any]:
    """receive_message's MessageAttributeValue → the camelCase form Lambda events use."""
    out: dict[str, Any] = {"dataType": value.get("DataType", "String"), "stringListValues": [], "binaryListValues": []}
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        import base64

        out["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return out


# --- one receive loop ----------------------------------------------------------------------------------------
def receive_loop(queue_url: str, options: WorkerOptions, stop: Any) -> WorkerSummary:
    """Receive → handle → delete until ``stop`` is set, ``max_messages`` were received or the queue is drained."""
    import boto3

    sqs = boto3.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn", "VisibilityTimeout"])["Attributes"]
    queue_arn = attrs["QueueArn"]
    region = queue_arn.split(":")[3] if queue_arn.count(":") >= 5 else os.environ.get("AWS_REGION", "us-east-1")
    visibility = options.visibility_timeout or int(attrs.get("VisibilityTimeout", 30))
    _remove_stale_spill_dirs(options.timeout_s)
    heartbeat = Heartbeat(boto3.client("sqs"), queue_url, visibility)
    summary = WorkerSummary(queue_url=queue_url)
    batch_size = max(1, min(MAX_BATCH, options.batch_size))
    try:
        while not stop.is_set():
            if options.max_messages is not None and summary.received >= options.max_messages:
                break
            want = batch_size if options.max_messages is None else min(batch_size, options.max_messages - summary.received)
            resp = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=want, WaitTimeSeconds=options.wait_time,
                VisibilityTimeout=visibility, MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"],
            )
            messages = resp.get("Messages", [])
            if not messages:
                if options.stop_when_empty and _drained(sqs, queue_url):
                    break
                continue
            summary.received += len(messages)
            if summary.first_received is None:
                summary.first_received = time.time()
            if stop.is_set():  # asked to stop while the poll was open: give them back untouched
                _set_visibility(sqs, queue_url, messages, 0)
                summary.released += len(messages)
                break
            heartbeat.hold(messages, deadline_s=options.timeout_s)
            started = time.perf_counter()
            try:
                response = _invoke(messages, queue_arn, region, options, summary)
            finally:
                heartbeat.release()
            done, failed = _settle(sqs, queue_url, messages, response, options)
            summary.batches += 1
            summary.succeeded += len(done)
            summary.failed += len(failed)
            if done:
                summary.last_succeeded = time.time()
            log.info("batch done", extra={"messages": len(messages), "succeeded": len(done), "failed": len(failed),
                                          "receive_counts": [int(m.get("Attributes", {}).get("ApproximateReceiveCount", 0)) for m in messages],
                                          "seconds": round(time.perf_counter() - started, 3), "pid": os.getpid()})
    finally:
        heartbeat.close()
    return summary


def _invoke(messages: list[dict[str, Any]], queue_arn: str, region: str, options: WorkerOptions,
            summary: WorkerSummary) -> dict[str, Any]:
    """Run the Lambda handler on one batch, as Lambda would; the response lists the messages that failed."""
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    from sceneclip.aws import handler
    from sceneclip.aws.context import LocalContext

    all_failed = {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}
    try:
        context = LocalContext(options.function_name, options.memory_mb, options.timeout_s,
                               aws_request_id=str(uuid.uuid4()))
        return handler.lambda_handler(sqs_event(messages, queue_arn, region), context)
    except BatchProcessingError:
        # Powertools raises when *every* record failed; on Lambda the invocation errors and the whole batch
        # returns to the queue: the same outcome as reporting each one.
        return all_failed
    except Exception as exc:  # the handler failed as a whole (e.g. configuration): every message failed
        log.error("handler raised; the batch is left for a retry", extra={"error": f"{type(exc).__name__}: {exc}"})
        summary.errors.append(f"{type(exc).__name__}: {exc}")
        return all_failed


def _settle(sqs: Any, queue_url: str, messages: list[dict[str, Any]], response: dict[str, Any],
            options: WorkerOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Delete what succeeded; give failures back (after ``retry_delay`` when set). Returns (done, failed)."""
    failed_ids = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
    done = [m for m in messages if m["MessageId"] not in failed_ids]
    failed = [m for m in messages if m["MessageId"] in failed_ids]
    _delete(sqs, queue_url, done)
    if failed and options.retry_delay is not None:
        _set_visibility(sqs, queue_url, failed, options.retry_delay)
    return done, failed


def _remove_stale_spill_dirs(timeout_s: float) -> None:
    """Spill directories of clips killed mid-way (older than the function timeout): removed at worker start."""
    from sceneclip.aws.config import Settings
    from sceneclip.core.output import remove_stale_workdirs
    from sceneclip.errors import ConfigError

    try:
        tmpdir = Settings.from_env().tmpdir
    except ConfigError:  # the handler reports configuration errors with the first batch
        return
    removed = remove_stale_workdirs(tmpdir, timeout_s)
    if removed:
        log.warning("removed spill directories left by a killed clip", extra={"removed": removed})


def _drained(sqs: Any, queue_url: str) -> bool:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return all(int(attrs.get(n, 0)) == 0 for n in names)


def _delete(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), MAX_BATCH):
        chunk = messages[start:start + MAX_BATCH]
        resp = sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)])
        for bad in resp.get("Failed", []):  # the message will be delivered again; idempotency absorbs it
            log.warning("delete failed", extra={"code": bad.get("Code"), "error": bad.get("Message")})


def _set_visibility(sqs: Any, queue_url: str, messages: list[dict[str, Any]], seconds: int) -> None:
    for start in range(0, len(messages), MAX_BATCH):
        chunk = messages[start:start + MAX_BATCH]
        try:
            sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds}
                for i, m in enumerate(chunk)])
        except Exception as exc:
            log.warning("visibility change failed", extra={"error": str(exc)})


# --- supervisor ----------------------------------------------------------------------------------------------
def run_worker(
    queue_url: str,
    *,
    concurrency: int = 1,
    wait_time: int = 20,
    visibility_timeout: int | None = None,
    batch_size: int = 1,
    max_messages: int | None = None,
    stop_when_empty: bool = False,
    retry_delay: int | None = None,
    timeout_s: int = 900,
) -> WorkerSummary:
    """Process ``queue_url`` with ``concurrency`` receive loops until stopped (SIGINT/SIGTERM) or drained.

    Parameters
    ----------
    wait_time:
        Long-poll seconds per receive (0–20).
    visibility_timeout:
        Seconds a received message stays hidden, renewed by the heartbeat; None uses the queue's.
    batch_size:
        Messages per handler call (1–10), like the event source's BatchSize. 1 suits long clips: a process
        holds only the scene it is clipping.
    max_messages:
        Per receive loop, stop after receiving this many (deliveries).
    stop_when_empty:
        Stop when an empty receive finds the queue with no visible, in-flight or delayed message. A message
        waiting out its visibility timeout before a retry is in flight, so a drain waits for it (and for its
        move to the dead-letter queue).
    retry_delay:
        Visibility timeout given to failed messages; None leaves their timeout to run out (as on Lambda), 0
        retries at once.
    timeout_s:
        The function timeout in seconds: each batch's deadline (see the module notes).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if not 0 <= wait_time <= 20:
        raise ValueError(f"wait_time must be 0..20 seconds, got {wait_time}")
    options = WorkerOptions(wait_time=wait_time, visibility_timeout=visibility_timeout, batch_size=batch_size,
                            max_messages=max_messages, stop_when_empty=stop_when_empty, retry_delay=retry_delay,
                            timeout_s=timeout_s)
    started = time.perf_counter()
    total = WorkerSummary(queue_url=queue_url, concurrency=concurrency)
    if concurrency == 1:
        stop = threading.Event()
        with _stop_on_signals(stop.set):
            total.merge(receive_loop(queue_url, options, stop))
    else:
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        results = ctx.Queue()
        procs = [ctx.Process(target=_child, args=(queue_url, options, stop, results), name=f"sceneclip-worker-{i}")
                 for i in range(concurrency)]
        with _stop_on_signals(stop.set):
            for p in procs:
                p.start()
            got = 0
            while got < len(procs):
                try:
                    total.merge(WorkerSummary(**results.get(timeout=1.0)))
                    got += 1
                except queue.Empty:  # check for children that died without reporting
                    dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
                    if len(dead) + got >= len(procs) and results.empty():
                        total.errors += [f"{p.name} exited with code {p.exitcode}" for p in dead]
                        break
            for p in procs:
                p.join()
    total.duration_s = round(time.perf_counter() - started, 3)
    return total


def _child(queue_url: str, options: WorkerOptions, stop: Any, results: Any) -> None:
    """A spawned receive loop: signals only ask it to stop (it finishes the batch it holds)."""
    _install_stop_handlers(stop.set)
    try:
        summary = receive_loop(queue_url, options, stop)
    except Exception as exc:
        summary = WorkerSummary(queue_url=queue_url, errors=[f"{type(exc).__name__}: {exc}"])
    results.put(asdict(summary))


def _install_stop_handlers(callback: Any) -> dict[int, Any]:
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda signum, frame: _asked_to_stop(signum, callback))
    return previous


def _asked_to_stop(signum: int, callback: Any) -> None:
    log.warning("stop requested: finishing the messages held", extra={"signal": signal.Signals(signum).name,
                                                                      "pid": os.getpid()})
    callback()


class _stop_on_signals:
    """SIGINT/SIGTERM call ``callback`` instead of raising, in the main thread only (restored on exit)."""

    def __init__(self, callback: Any) -> None:
        self.callback, self.previous = callback, {}

    def __enter__(self) -> _stop_on_signals:
        if threading.current_thread() is threading.main_thread():
            self.previous = _install_stop_handlers(self.callback)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
