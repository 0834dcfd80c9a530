"""A time budget for one scene, and what it implies for GDAL's network settings. Knows nothing of AWS.

Lambda kills an invocation at its timeout: no record is written, the idempotency lock stays INPROGRESS and
the message comes back only after its visibility timeout. A :class:`Deadline` lets the work stop *before*
that, a ``margin`` early — enough to write the failed record and release the lock — with a transient
:class:`~sceneclip.errors.DeadlineExceeded`. The clip checks it between chunks, the pipeline between regions,
and every network call below it is capped (:func:`gdal_http_options`) so that none can outlive the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sceneclip.errors import DeadlineExceeded

#: Below this many usable seconds no new network call is started (it could not finish usefully).
MIN_CALL_S = 1.0


@dataclass(frozen=True)
class Deadline:
    """An absolute point on the monotonic clock, and the margin kept back before it.

    Parameters
    ----------
    at:
        ``time.monotonic()`` value at which the invocation is killed.
    margin_s:
        Seconds kept back for the failure path (record write, idempotency release, batch response).
    clock:
        The clock ``at`` refers to; injectable so that tests need not sleep.
    """

    at: float
    margin_s: float = 10.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    @classmethod
    def after(cls, seconds: float, margin_s: float = 10.0) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(at=time.monotonic() + seconds, margin_s=margin_s)

    @classmethod
    def from_remaining_ms(cls, remaining_ms: int, margin_s: float = 10.0) -> Deadline:
        """From a Lambda-style ``get_remaining_time_in_millis()``."""
        return cls.after(remaining_ms / 1000.0, margin_s)

    def remaining_s(self) -> float:
        """Seconds until the hard deadline (may be negative)."""
        return self.at - self.clock()

    def usable_s(self) -> float:
        """Seconds left for work: the remaining time minus the margin (may be negative)."""
        return self.remaining_s() - self.margin_s

    def expired(self) -> bool:
        """True once fewer than :data:`MIN_CALL_S` usable seconds remain: start nothing new."""
        return self.usable_s() < MIN_CALL_S

    def check(self, stage: str, *, regions_not_reached: tuple[str, ...] = ()) -> None:
        """Raise :class:`DeadlineExceeded` naming ``stage`` when the budget is spent; else return."""
        if self.expired():
            raise self.exceeded(stage, regions_not_reached=regions_not_reached)

    def exceeded(self, stage: str, *, regions_not_reached: tuple[str, ...] = ()) -> DeadlineExceeded:
        """The error for giving up at ``stage`` (the message says how much time was left and why)."""
        left = f"; regions not reached: {', '.join(regions_not_reached)}" if regions_not_reached else ""
        return DeadlineExceeded(
            f"deadline reached {stage}: {max(0.0, self.remaining_s()):.1f} s left, {self.margin_s:g} s kept to record "
            f"the failure and release the lock; abandoned for a retry{left}",
            regions_not_reached=regions_not_reached,
        )


def per_call_timeout_s(deadline: Deadline | None, base_s: float) -> float:
    """One network call's timeout: ``base_s``, or half the usable time when that is less (so one retry fits)."""
    if deadline is None:
        return base_s
    return max(MIN_CALL_S, min(base_s, deadline.usable_s() / 2))


def gdal_http_options(deadline: Deadline | None, base: dict[str, Any]) -> dict[str, Any]:
    """GDAL's HTTP timeout, connect timeout and retry budget from ``base``, capped to what the deadline leaves.

    ``GDAL_HTTP_TIMEOUT`` is curl's whole-transfer timeout, so a GET that stalls costs at most
    ``(1 + GDAL_HTTP_MAX_RETRY) × GDAL_HTTP_TIMEOUT`` plus the retry delays; the caps keep that inside the
    usable time. Without a deadline ``base``'s values are returned unchanged.
    """
    keys = ("GDAL_HTTP_TIMEOUT", "GDAL_HTTP_CONNECTTIMEOUT", "GDAL_HTTP_MAX_RETRY", "GDAL_HTTP_RETRY_DELAY")
    out = {k: base[k] for k in keys if k in base}
    if deadline is None:
        return out
    usable = max(MIN_CALL_S, deadline.usable_s())
    timeout = per_call_timeout_s(deadline, float(base.get("GDAL_HTTP_TIMEOUT", 60)))
    delay = min(float(base.get("GDAL_HTTP_RETRY_DELAY", 0.5)), timeout / 4)
    retries = min(int(base.get("GDAL_HTTP_MAX_RETRY", 4)), max(0, int(usable // (timeout + delay)) - 1))
    out["GDAL_HTTP_TIMEOUT"] = max(1, math.floor(timeout))  # GDAL takes whole seconds
    out["GDAL_HTTP_CONNECTTIMEOUT"] = max(1, math.floor(min(float(base.get("GDAL_HTTP_CONNECTTIMEOUT", 10)), timeout)))
    out["GDAL_HTTP_MAX_RETRY"] = retries
    out["GDAL_HTTP_RETRY_DELAY"] = round(delay, 3)
    return out
