"""A delivery that finds its clip already in progress (another invocation holds the idempotency lock).

Powertools raises ``IdempotencyAlreadyInProgressError`` for it. Left unhandled, it failed the whole SQS batch,
which then waited out the queue's long visibility timeout (2,100 s) and counted toward ``maxReceiveCount``.
Instead the message alone is reported as a batch-item failure and made visible again after a short delay
(``ChangeMessageVisibility``), by which time the first delivery has usually finished: the redelivery then gets
the stored result from the idempotency table.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sceneclip.errors import ConfigError, TransientError

log = logging.getLogger("sceneclip.aws.inflight")

DEFAULT_VISIBILITY_S = 45
_WARM_START_CACHE: dict[str, Any] = {}  # the SQS client, kept for warm invocations


class ClipInProgressError(TransientError):
    """The same clip is running in another invocation: this delivery is retried shortly."""


def deferral_visibility_s(environ: Any = None) -> int:
    """``SCENECLIP_IN_PROGRESS_VISIBILITY_S`` (default 45 s; 0–43,200 as SQS allows)."""
    raw = (environ if environ is not None else os.environ).get("SCENECLIP_IN_PROGRESS_VISIBILITY_S", "")
    try:
        value = int(raw) if raw.strip() else DEFAULT_VISIBILITY_S
    except ValueError as exc:
        raise ConfigError(f"SCENECLIP_IN_PROGRESS_VISIBILITY_S={raw!r} is not a whole number of seconds") from exc
    if not 0 <= value <= 43200:
        raise ConfigError(f"SCENECLIP_IN_PROGRESS_VISIBILITY_S={value} is outside SQS's 0-43200 s")
    return value


def queue_url(sqs: Any, arn: str) -> str:
    """The queue URL for an SQS ARN (``arn:aws:sqs:region:account:name``): ``{endpoint}/{account}/{name}``.

    Built rather than looked up: the event source mapping's policy (SQSPollerPolicy) grants
    ChangeMessageVisibility but not GetQueueUrl, and the client's endpoint is the queue's region's.
    """
    parts = arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        raise ValueError(f"not an SQS queue ARN: {arn!r}")
    return f"{sqs.meta.endpoint_url.rstrip('/')}/{parts[4]}/{parts[5]}"


def defer(message_id: str, receipt_handle: str, source_arn: str, *, visibility_s: int, sqs: Any = None) -> ClipInProgressError:
    """Shorten the message's visibility so it comes back in ``visibility_s``; returns the error to raise.

    A failure to change the visibility is logged, not raised: the message is still reported failed and
    comes back after the queue's own visibility timeout.
    """
    try:
        if sqs is None:
            sqs = _WARM_START_CACHE.get("sqs")
            if sqs is None:
                import boto3

                sqs = _WARM_START_CACHE["sqs"] = boto3.client("sqs")
        sqs.change_message_visibility(QueueUrl=queue_url(sqs, source_arn), ReceiptHandle=receipt_handle,
                                      VisibilityTimeout=visibility_s)
        deferred = f"visible again in {visibility_s} s"
    except Exception as exc:  # noqa: BLE001 - best effort; the batch-item failure is what matters
        log.warning("could not shorten the visibility of an in-progress message",
                    extra={"message_id": message_id, "error": f"{type(exc).__name__}: {exc}"})
        deferred = "visible again after the queue's visibility timeout"
    return ClipInProgressError(f"message {message_id}: this clip is already running in another invocation; {deferred}")
