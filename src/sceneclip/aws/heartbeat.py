"""The worker's visibility heartbeat: keeps the messages being processed invisible, until their deadline.

While a batch is processed a daemon thread extends the visibility of the messages it holds every third of the
visibility timeout, so a long clip is never handed to a second worker. Each hold carries the worker's deadline
for those messages: past it the worker has given up on them (the handler abandons the clip with a transient
DeadlineExceeded, or a stuck call is left behind), so the heartbeat stops extending them and never extends
one beyond its deadline. The message then returns to the queue on time for another attempt, as it would
from a Lambda function killed at its timeout. (SQS caps a message's total invisibility at 12 hours.)
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

log = logging.getLogger("sceneclip.aws.worker")


class Heartbeat:
    """Extends the visibility of the messages held while they are processed (a daemon thread)."""

    def __init__(self, sqs: Any, queue_url: str, visibility_timeout: int) -> None:
        self.sqs, self.queue_url, self.timeout = sqs, queue_url, visibility_timeout
        self.interval = max(0.5, visibility_timeout / 3)
        self._held: dict[str, tuple[str, float]] = {}  # messageId -> (receipt handle, monotonic deadline)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.extensions = 0
        self.given_up = 0  # messages no longer extended because their deadline passed
        self._thread = threading.Thread(target=self._run, name="sceneclip-visibility", daemon=True)
        self._thread.start()

    def hold(self, messages: list[dict[str, Any]], deadline_s: float | None = None) -> None:
        """Keep ``messages`` invisible for at most ``deadline_s`` seconds from now (None: until released)."""
        until = math.inf if deadline_s is None else time.monotonic() + deadline_s
        with self._lock:
            self._held.update({m["MessageId"]: (m["ReceiptHandle"], until) for m in messages})

    def release(self) -> None:
        with self._lock:
            self._held.clear()

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _due(self) -> list[tuple[str, int]]:
        """(receipt handle, seconds) to extend now; drops the messages whose deadline has passed."""
        now = time.monotonic()
        out = []
        with self._lock:
            for mid, (receipt, until) in list(self._held.items()):
                left = until - now
                if left <= 0:
                    del self._held[mid]
                    self.given_up += 1
                    log.warning("message given up at its deadline: no longer kept invisible", extra={"message_id": mid})
                    continue
                seconds = self.timeout if left >= self.timeout else max(1, math.ceil(left))  # never past the deadline
                out.append((receipt, seconds))
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            due = self._due()
            if not due:
                continue
            entries = [{"Id": str(i), "ReceiptHandle": rh, "VisibilityTimeout": seconds}
                       for i, (rh, seconds) in enumerate(due)]
            try:
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
                self.extensions += 1
            except Exception as exc:  # a lost heartbeat only risks a duplicate delivery (idempotent)
                log.warning("visibility extension failed", extra={"error": str(exc)})
