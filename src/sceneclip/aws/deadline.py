"""Deadlines from the Lambda context, and boto3 clients whose timeouts fit what is left of them.

The handler turns ``context.get_remaining_time_in_millis()`` into a :class:`~sceneclip.core.deadline.Deadline`
(the worker's :class:`~sceneclip.aws.context.LocalContext` gives its own per-message deadline the same way).
botocore fixes a client's connect/read timeouts and retry count when the client is made, so capping them per
invocation means a different client: :class:`CappedClients` keeps one per step of a small ladder of read
timeouts (a warm-start cache of a handful of clients, not one per call).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sceneclip.core.deadline import Deadline, per_call_timeout_s

#: Seconds kept back before the hard deadline by default: one record write and the idempotency release, each
#: bounded by :data:`BOOKKEEPING_CONFIG` (2 attempts × (1 s connect + 2 s read) + backoff), with room to spare.
DEFAULT_MARGIN_S = 10.0

#: Read timeouts a capped client may get (seconds), largest first; the first that fits the budget is used.
READ_TIMEOUT_LADDER = (60, 30, 15, 8, 4, 2, 1)
BASE_CONNECT_TIMEOUT_S = 5
BASE_MAX_ATTEMPTS = 3


def margin_from_env(environ: Any = None) -> float:
    """``SCENECLIP_DEADLINE_MARGIN_S`` (seconds kept for the failure path), default :data:`DEFAULT_MARGIN_S`."""
    from sceneclip.aws.config import number_setting

    env = os.environ if environ is None else environ
    return float(number_setting(env, "SCENECLIP_DEADLINE_MARGIN_S", DEFAULT_MARGIN_S, float))


def deadline_from_context(context: Any, margin_s: float = DEFAULT_MARGIN_S) -> Deadline | None:
    """The invocation's deadline, or None when the context cannot tell the time left (then nothing is capped)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return Deadline.from_remaining_ms(int(remaining()), margin_s)


def bookkeeping_config() -> Any:
    """Config for the records/idempotency client: these calls run *inside* the margin, so they must be short."""
    from botocore.config import Config

    return Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 2, "mode": "standard"})


def capped_config(deadline: Deadline | None) -> Any:
    """botocore Config with connect/read timeouts and attempts that fit the deadline's usable time."""
    from botocore.config import Config

    read = READ_TIMEOUT_LADDER[0]
    if deadline is not None:
        budget = per_call_timeout_s(deadline, READ_TIMEOUT_LADDER[0])
        read = next((step for step in READ_TIMEOUT_LADDER if step <= budget), READ_TIMEOUT_LADDER[-1])
    connect = min(BASE_CONNECT_TIMEOUT_S, read)
    attempts = BASE_MAX_ATTEMPTS
    if deadline is not None:
        attempts = max(1, min(BASE_MAX_ATTEMPTS, int(max(0.0, deadline.usable_s()) // (connect + read))))
    return Config(connect_timeout=connect, read_timeout=read, retries={"max_attempts": attempts, "mode": "standard"})


@dataclass
class CappedClients:
    """boto3 clients of one service whose timeouts fit a deadline; built lazily, one per (read, attempts) step
    and region (None: the function's; a source bucket in another region gets a client made for it)."""

    service: str
    _clients: dict[tuple[int, int, str | None], Any] = field(default_factory=dict)  # warm-start cache of this container

    def for_deadline(self, deadline: Deadline | None, region: str | None = None) -> Any:
        import boto3

        config = capped_config(deadline)
        step = (int(config.read_timeout), int(config.retries["max_attempts"]), region)
        client = self._clients.get(step)
        if client is None:
            client = boto3.client(self.service, config=config, **({"region_name": region} if region else {}))
            self._clients[step] = client
        return client
