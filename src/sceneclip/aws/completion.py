"""Completion events: tell downstream systems that a clip is ready (or failed) without polling.

After each verification record is written, the pipeline hands it to a :class:`CompletionPublisher`, which
sends one event to the configured target (``SCENECLIP_COMPLETION_TARGET``, the template's
``CompletionTarget``): an EventBridge bus ARN (``events:PutEvents``) or an SNS topic ARN (``sns:Publish``).

* ``source`` is ``sceneclip``; ``detail-type`` is ``Clip Succeeded`` (status ``ok``), ``Clip Failed``
  (``failed``) or ``Clip Skipped`` (any other status, e.g. ``skipped``).
* ``detail`` is the record's public fields (:func:`event_detail`): the record as stored, plus ``scene`` and
  ``region`` for rule patterns. Records never hold presigned URLs (``source`` is ``s3://bucket/key``); as a
  guard, any string carrying a signed query is cut at its ``?`` before it leaves.
* SNS subscribers receive the same envelope as EventBridge (``source``, ``detail-type``, ``detail``) as the
  message body, with ``detail-type`` and ``status`` also as message attributes for subscription filters.

The record is written first, so a failed publish loses nothing: it is logged and counted
(``CompletionEventFailures`` metric), never raised into the clip.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from sceneclip.core.records import VerificationRecord
from sceneclip.errors import ConfigError

log = logging.getLogger("sceneclip.aws.completion")

EVENT_SOURCE = "sceneclip"
DETAIL_TYPES = {"ok": "Clip Succeeded", "failed": "Clip Failed"}
SKIPPED = "Clip Skipped"
_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):(?P<service>events|sns):(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<resource>.+)$")
_SIGNED = re.compile(r"(X-Amz-Signature|X-Amz-Credential|Signature=|AWSAccessKeyId=)", re.IGNORECASE)


@dataclass(frozen=True)
class CompletionTarget:
    """Where completion events go: ``kind`` is ``eventbridge`` or ``sns``; ``arn`` the bus or topic ARN."""

    kind: str
    arn: str
    region: str

    @classmethod
    def parse(cls, arn: str, variable: str = "SCENECLIP_COMPLETION_TARGET") -> CompletionTarget:
        """Validate an EventBridge bus ARN or SNS topic ARN (anything else is a :class:`ConfigError`)."""
        match = _ARN.match(arn.strip())
        if match:
            resource = match.group("resource")
            if match.group("service") == "events" and resource.startswith("event-bus/") and len(resource) > 10:
                return cls("eventbridge", arn.strip(), match.group("region"))
            if match.group("service") == "sns" and re.fullmatch(r"[A-Za-z0-9_-]{1,256}(\.fifo)?", resource):
                return cls("sns", arn.strip(), match.group("region"))
        raise ConfigError(
            f"{variable}={arn!r} is neither an EventBridge bus ARN (arn:aws:events:REGION:ACCOUNT:event-bus/NAME) "
            "nor an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC); leave it empty to send no events"
        )


def detail_type(record: VerificationRecord) -> str:
    """``Clip Succeeded`` / ``Clip Failed`` / ``Clip Skipped`` from the record's status."""
    return DETAIL_TYPES.get(record.status, SKIPPED)


def _unsigned(value: Any) -> Any:
    """Strings carrying a presigned query lose the query; containers are cleaned recursively."""
    if isinstance(value, str) and _SIGNED.search(value):
        return value.split("?", 1)[0]
    if isinstance(value, dict):
        return {k: _unsigned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsigned(v) for v in value]
    return value


def event_detail(record: VerificationRecord) -> dict[str, Any]:
    """The record's public fields as one JSON object (None fields dropped, as in the records table)."""
    detail = record.to_dict(drop_none=True)
    detail["scene"] = record.source
    detail["region"] = record.region
    return _unsigned(detail)


class CompletionPublisher:
    """Publishes one event per written record to an EventBridge bus or an SNS topic.

    Parameters
    ----------
    target : CompletionTarget
        The bus or topic.
    client : botocore client, optional
        An ``events`` (EventBridge) or ``sns`` client; made with boto3 for the target's region when omitted.
    """

    def __init__(self, target: CompletionTarget, *, client: Any = None) -> None:
        self.target = target
        if client is None:
            import boto3

            client = boto3.client("events" if target.kind == "eventbridge" else "sns", region_name=target.region)
        self.client = client
        self.failures = 0  # publishes that failed in this container (also logged and counted as a metric)

    def publish(self, record: VerificationRecord) -> bool:
        """Send the record's event; True when the target accepted it. Never raises: the record is already written."""
        kind, detail = detail_type(record), event_detail(record)
        try:
            if self.target.kind == "eventbridge":
                self._put_event(kind, detail)
            else:
                self._publish_sns(kind, detail)
        except Exception as exc:  # noqa: BLE001 - any failure here must not lose or fail the clip
            self.failures += 1
            log.warning("completion event not delivered (the record is written)", extra={
                "target": self.target.arn, "detail_type": kind, "scene": record.source, "region": record.region,
                "error": f"{type(exc).__name__}: {exc}",
            })
            _count_failure(self.target.kind)
            return False
        return True

    def _put_event(self, kind: str, detail: dict[str, Any]) -> None:
        resp = self.client.put_events(Entries=[{
            "Source": EVENT_SOURCE, "DetailType": kind, "Detail": json.dumps(detail), "EventBusName": self.target.arn,
        }])
        if resp.get("FailedEntryCount"):
            entry = (resp.get("Entries") or [{}])[0]
            raise RuntimeError(f"PutEvents refused the entry: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}")

    def _publish_sns(self, kind: str, detail: dict[str, Any]) -> None:
        envelope = {"source": EVENT_SOURCE, "detail-type": kind, "detail": detail}
        self.client.publish(
            TopicArn=self.target.arn,
            Message=json.dumps(envelope),
            Subject=kind,
            MessageAttributes={
                "detail-type": {"DataType": "String", "StringValue": kind},
                "status": {"DataType": "String", "StringValue": str(detail.get("status", ""))},
            },
        )


def _count_failure(kind: str) -> None:
    """One ``CompletionEventFailures`` EMF metric, flushed at once (the handler's metric set may be gone)."""
    from aws_lambda_powertools import single_metric
    from aws_lambda_powertools.metrics import MetricUnit

    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "sceneclip")
    with single_metric(name="CompletionEventFailures", unit=MetricUnit.Count, value=1, namespace=namespace) as metric:
        metric.add_dimension(name="Target", value=kind)


def publisher_from_target(arn: str | None, *, client: Any = None) -> CompletionPublisher | None:
    """A publisher for a configured target, or None when completion events are off (empty/unset)."""
    if not arn:
        return None
    return CompletionPublisher(CompletionTarget.parse(arn), client=client)
