"""Normalise every trigger into one small job description: :class:`SceneRef`.

The function is reached in several ways, and each wraps "this object was created" differently:

* an **S3 notification** sent straight to Lambda (``{"Records": [{"eventSource": "aws:s3", ...}]}``);
* an **SQS record** whose body is an S3 notification, possibly wrapped again in an **SNS envelope**
  (``{"Type": "Notification", "Message": "<json>"}``) when S3 publishes to a topic the queue subscribes to;
* an **SNS-triggered Lambda event** (``{"Records": [{"EventSource": "aws:sns", "Sns": {...}}]}``);
* an **EventBridge** ``Object Created`` event (``{"source": "aws.s3", "detail-type": ..., "detail": {...}}``);
* a **direct payload** ``{"bucket": ..., "key": ...}`` written by a person, the CLI or the backfill feeder;
* a **STAC Item** (an archive's SNS message body, or a direct invoke), ``{"stac_item": URL}``, or a USGS
  ``public-c2-notify`` message: an :class:`~sceneclip.aws.stac_events.ItemRef` (:mod:`sceneclip.aws.stac_events`);
* a **mosaic job** ``{"sources": [...], "region", "group"}``: a :class:`~sceneclip.aws.mosaic_events.MosaicRef`,
  or a :class:`~sceneclip.aws.mosaic_events.RefusedRef` when malformed (:mod:`sceneclip.aws.mosaic_events`).

Everything after this module sees only these refs; nothing downstream knows which trigger fired.

Key encoding, decoded exactly where AWS encodes and nowhere else:

* S3 notification keys (direct, via SQS, via SNS) are URL-encoded the way HTML forms are: a space becomes
  ``+`` and other reserved characters ``%xx`` ("red flower.jpg" arrives as "red+flower.jpg"; a literal ``+``
  arrives as ``%2B``). They are decoded with :func:`urllib.parse.unquote_plus`.
* EventBridge ``Object Created`` keys are decoded the same way. The S3 user guide does not say so for the
  EventBridge shape; Powertools for AWS Lambda, maintained by AWS, decodes ``detail.object.key`` with
  ``unquote_plus`` (``S3EventBridgeNotificationObject.key``), and we follow it. Note that moto's EventBridge
  emulation sends the key raw, so a moto test with a space in an EventBridge key will not match AWS.
* A direct payload key is taken literally: a person or a feeder wrote the real key, and decoding it would
  corrupt keys that contain ``+`` or ``%``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import unquote_plus

from sceneclip.aws.mosaic_events import MosaicRef, RefusedRef, mosaic_ref
from sceneclip.aws.stac_events import ItemRef, item_ref
from sceneclip.errors import InvalidItemError, PermanentError

Origin = Literal["s3", "sns", "eventbridge", "direct"]
ORIGINS: Final[frozenset[str]] = frozenset({"s3", "sns", "eventbridge", "direct"})

_S3_TEST_EVENT: Final = "s3:TestEvent"
_OBJECT_CREATED: Final = "ObjectCreated:"
_EVENTBRIDGE_OBJECT_CREATED: Final = "Object Created"
_DESCRIBE_LIMIT: Final = 200


class InvalidEventError(PermanentError):
    """The event has no shape we know, or a known shape lacks a field we need.

    Permanent: the same bytes will never parse on a retry, so the record is reported, not retried.
    """


@dataclass(frozen=True)
class SceneRef:
    """One object to clip, whatever trigger named it.

    Attributes
    ----------
    bucket, key:
        Where the scene is. ``key`` is the real object key (already URL-decoded where AWS encoded it).
    version_id:
        The S3 version the event was about. When set, the scene should be read at exactly this version,
        so a later overwrite of the same key cannot change what this event produces.
    etag:
        The object's ETag without surrounding quotes (S3 APIs quote it, events do not; we store one form).
    size:
        Object size in bytes, when the event carries it.
    event_time:
        ISO-8601 time of the event as AWS reported it (``eventTime`` or EventBridge ``time``).
    origin:
        Which trigger produced the ref: ``"s3"`` (an S3 notification, delivered directly or through SQS),
        ``"sns"`` (an S3 notification that passed through SNS), ``"eventbridge"`` or ``"direct"``.
    region:
        Region override carried by direct/backfill payloads; ``None`` lets the pipeline derive it.
    force:
        Direct payloads may ask to redo a scene that was already processed.
    key_as_delivered:
        The key exactly as the event carried it, when it differs from ``key`` and AWS does not document
        the encoding (EventBridge): if the decoded key does not exist, the pipeline tries this one.
    sequencer:
        S3's ``sequencer`` for the event (hex; a greater value is a later write to the same key), when the
        event carries one. The pipeline orders versions of a key by it so an older delivery never overwrites
        a newer version's output or record.
    """

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    event_time: str | None = None
    origin: str = "direct"
    region: str | None = None
    force: bool = False
    key_as_delivered: str | None = None
    sequencer: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.bucket, str) or not self.bucket:
            raise InvalidEventError(f"bucket must be a non-empty string, got {self.bucket!r}")
        if not isinstance(self.key, str) or not self.key:
            raise InvalidEventError(f"key must be a non-empty string, got {self.key!r}")
        if self.origin not in ORIGINS:
            raise InvalidEventError(f"origin must be one of {sorted(ORIGINS)}, got {self.origin!r}")
        if self.etag is not None:
            # Frozen dataclass: normalise through object.__setattr__ so every constructor gets one form.
            object.__setattr__(self, "etag", _strip_etag(self.etag))

    @property
    def uri(self) -> str:
        """``s3://bucket/key``: the identity used in records and logs."""
        return f"s3://{self.bucket}/{self.key}"

    @property
    def vsi_path(self) -> str:
        """``/vsis3/bucket/key``: the path GDAL opens (the version, if any, is passed separately)."""
        return f"/vsis3/{self.bucket}/{self.key}"

    def to_message(self) -> dict[str, Any]:
        """The direct-payload form of this ref, as the backfill feeder puts it on the queue.

        ``parse_payload(ref.to_message())`` gives back a ref with the same bucket, key, version, ETag, region
        and force. ``size``, ``event_time`` and ``origin`` describe the event, not the job, and are not
        carried: the round-tripped ref has ``origin="direct"``.
        """
        message: dict[str, Any] = {"bucket": self.bucket, "key": self.key}
        if self.version_id is not None:
            message["version_id"] = self.version_id
        if self.etag is not None:
            message["etag"] = self.etag
        if self.region is not None:
            message["region"] = self.region
        if self.force:
            message["force"] = True
        return message


# What parsing yields: one object, one STAC Item of many assets, one mosaic of several objects, or a mosaic
# message refused at the door (recorded as a failure, nothing read).
Ref = SceneRef | ItemRef | MosaicRef | RefusedRef


# --- public entry points ------------------------------------------------------------------------------------
def is_sqs_event(event: Any) -> bool:
    """True for a Lambda event delivered by an SQS event source mapping.

    Every record must say ``eventSource == "aws:sqs"``: such a batch is processed record by record (partial
    batch failures), so a mixed or malformed ``Records`` list is not treated as SQS.
    """
    if not isinstance(event, Mapping):
        return False
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        return False
    return all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records)


# Records one event may carry (SCENECLIP_MAX_EVENT_RECORDS): S3 sends one per notification; a 100,000-record
# event is not a notification, and each record can start a clip.
DEFAULT_MAX_RECORDS: Final = 1000


def parse_sqs_body(body: str, *, max_records: int = DEFAULT_MAX_RECORDS) -> list[Ref]:
    """Parse the body of one SQS message (an S3 notification, an SNS envelope, EventBridge or direct)."""
    if not isinstance(body, str):
        raise InvalidEventError(f"SQS body must be a string, got {type(body).__name__}")
    try:
        payload = json.loads(body)
        return parse_payload(payload, max_records=max_records)
    except json.JSONDecodeError as exc:
        raise InvalidEventError(f"SQS body is not JSON ({exc.msg}): {_truncate(body, 80)!r}") from None
    except RecursionError:
        # A hostile or broken producer: json (and repr) recurse per nesting level. Permanent, and only this
        # message fails; the rest of the batch is unaffected.
        raise InvalidEventError(
            f"SQS body ({len(body)} bytes) nests too deeply to be an event: {_truncate(body, 40)!r}"
        ) from None


def parse_event(event: dict[str, Any], *, max_records: int = DEFAULT_MAX_RECORDS) -> list[Ref]:
    """Parse a whole Lambda event that is not an SQS batch.

    SQS batches are refused here on purpose: the handler must parse each record with :func:`parse_sqs_body`
    so that one bad record fails alone (``ReportBatchItemFailures``) instead of failing the batch.
    """
    if is_sqs_event(event):
        raise InvalidEventError("SQS batch given to parse_event: parse each record's body with parse_sqs_body")
    return parse_payload(event, max_records=max_records)


def parse_payload(payload: dict[str, Any], *, max_records: int = DEFAULT_MAX_RECORDS) -> list[Ref]:
    """Turn one payload of any accepted (non-SQS) shape into zero or more scene refs.

    Returns ``[]`` for payloads that are valid but ask for no work: the ``s3:TestEvent`` S3 sends when a
    notification is configured, S3 events other than ``ObjectCreated:*``, and EventBridge events other than
    ``Object Created``. Raises :class:`InvalidEventError` for anything else it cannot read, naming the keys
    it received. More than ``max_records`` records (0: no limit) is refused before any is parsed.
    """
    refs = _parse(payload, via_sns=False, limit=max_records)
    _refuse_count(len(refs), max_records)
    return refs


def _refuse_count(count: int, limit: int) -> None:
    if limit and count > limit:
        raise InvalidEventError(
            f"the event carries {count:,} records, over the limit of {limit:,} (SCENECLIP_MAX_EVENT_RECORDS); "
            "S3 sends one per notification: split the work into smaller messages"
        )


# --- shapes -------------------------------------------------------------------------------------------------
def _parse(payload: Any, *, via_sns: bool, limit: int) -> list[Ref]:
    if not isinstance(payload, Mapping):
        raise InvalidEventError(f"expected a JSON object, got {type(payload).__name__}: {_truncate(repr(payload))}")
    if payload.get("Event") == _S3_TEST_EVENT:
        return []
    if "Records" in payload:
        if isinstance(payload["Records"], list):
            _refuse_count(len(payload["Records"]), limit)
        return _parse_records(payload["Records"], via_sns=via_sns, limit=limit)
    if "Type" in payload and "Message" in payload:
        return _parse_sns_envelope(payload, limit=limit)
    if payload.get("source") == "aws.s3" and "detail" in payload:
        return _parse_eventbridge(payload)
    mosaic = mosaic_ref(payload)
    if mosaic is not None:
        return [mosaic]
    try:
        stac = item_ref(payload, via_sns=via_sns)
    except InvalidItemError as exc:  # one message's bad field: the handler drops it like any unparseable event
        raise InvalidEventError(str(exc)) from None
    if stac is not None:
        return [stac]
    if "bucket" in payload and "key" in payload:
        return [_parse_direct(payload)]
    raise InvalidEventError(f"unrecognised event shape: {_describe(payload)}")


def _parse_records(records: Any, *, via_sns: bool, limit: int) -> list[Ref]:
    if not isinstance(records, list):
        raise InvalidEventError(f"'Records' must be a list, got {type(records).__name__}")
    refs: list[Ref] = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InvalidEventError(f"Records[{index}] is not an object: {_truncate(repr(record))}")
        # S3 and SQS spell it eventSource; SNS spells it EventSource.
        source = record.get("eventSource", record.get("EventSource"))
        if source == "aws:s3":
            ref = _parse_s3_record(record, index, origin="sns" if via_sns else "s3")
            if ref is not None:
                refs.append(ref)
        elif source == "aws:sns":
            sns = record.get("Sns")
            if not isinstance(sns, Mapping):
                raise InvalidEventError(f"Records[{index}] from aws:sns has no 'Sns' object")
            refs.extend(_parse_sns_envelope(sns, limit=limit))
        elif source == "aws:sqs":
            raise InvalidEventError(
                f"Records[{index}] is an SQS record: parse each record's body with parse_sqs_body"
            )
        else:
            raise InvalidEventError(f"Records[{index}] has unsupported event source {source!r}: {_describe(record)}")
    return refs


def _parse_s3_record(record: Mapping[str, Any], index: int, *, origin: Origin) -> SceneRef | None:
    event_name = record.get("eventName")
    if not isinstance(event_name, str):
        raise InvalidEventError(f"Records[{index}] from aws:s3 has no 'eventName': {_describe(record)}")
    # S3 writes "ObjectCreated:Put"; the notification configuration spells it "s3:ObjectCreated:*".
    if not event_name.removeprefix("s3:").startswith(_OBJECT_CREATED):
        return None
    s3 = _mapping(record, "s3", f"Records[{index}]")
    bucket = _mapping(s3, "bucket", f"Records[{index}].s3")
    obj = _mapping(s3, "object", f"Records[{index}].s3")
    return SceneRef(
        bucket=_string(bucket, "name", f"Records[{index}].s3.bucket"),
        key=unquote_plus(_string(obj, "key", f"Records[{index}].s3.object")),
        version_id=_optional_string(obj.get("versionId")),
        etag=_optional_string(obj.get("eTag")),
        size=_optional_int(obj.get("size")),
        event_time=_optional_string(record.get("eventTime")),
        origin=origin,
        sequencer=_optional_string(obj.get("sequencer")),
    )


def _parse_sns_envelope(envelope: Mapping[str, Any], *, limit: int) -> list[Ref]:
    kind = envelope.get("Type")
    if kind != "Notification":
        raise InvalidEventError(f"SNS message of type {kind!r} carries no S3 event (expected 'Notification')")
    message = envelope.get("Message")
    if isinstance(message, str):
        try:
            message = json.loads(message)
        except json.JSONDecodeError as exc:
            raise InvalidEventError(f"SNS Message is not JSON ({exc.msg}): {_truncate(message, 80)!r}") from None
    return _parse(message, via_sns=True, limit=limit)


def _parse_eventbridge(event: Mapping[str, Any]) -> list[Ref]:
    if event.get("detail-type") != _EVENTBRIDGE_OBJECT_CREATED:
        return []
    detail = _mapping(event, "detail", "EventBridge event")
    bucket = _mapping(detail, "bucket", "detail")
    obj = _mapping(detail, "object", "detail")
    raw_key = _string(obj, "key", "detail.object")
    key = unquote_plus(raw_key)
    return [
        SceneRef(
            bucket=_string(bucket, "name", "detail.bucket"),
            key=key,
            key_as_delivered=raw_key if raw_key != key else None,
            version_id=_optional_string(obj.get("version-id")),
            etag=_optional_string(obj.get("etag")),
            size=_optional_int(obj.get("size")),
            event_time=_optional_string(event.get("time")),
            origin="eventbridge",
            sequencer=_optional_string(obj.get("sequencer")),
        )
    ]


def _parse_direct(payload: Mapping[str, Any]) -> SceneRef:
    force = payload.get("force", False)
    if not isinstance(force, bool):
        raise InvalidEventError(f"'force' must be true or false, got {force!r}")
    region = payload.get("region")
    if region is not None and (not isinstance(region, str) or not region):
        raise InvalidEventError(f"'region' must be a non-empty string, got {region!r}")
    return SceneRef(
        bucket=_string(payload, "bucket", "direct payload"),
        key=_string(payload, "key", "direct payload"),  # literal: nobody encoded it
        version_id=_optional_string(_first(payload, "version_id", "versionId")),
        etag=_optional_string(_first(payload, "etag", "eTag")),
        origin="direct",
        region=region,
        force=force,
    )


# --- small helpers ------------------------------------------------------------------------------------------
def _strip_etag(etag: str) -> str:
    return etag.strip().strip('"')


def _first(mapping: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if mapping.get(name) is not None:
            return mapping[name]
    return None


def _mapping(parent: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = parent.get(name)
    if not isinstance(value, Mapping):
        raise InvalidEventError(f"{where} has no '{name}' object: {_describe(parent)}")
    return value


def _string(parent: Mapping[str, Any], name: str, where: str) -> str:
    value = parent.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidEventError(f"{where} has no non-empty string '{name}' (got {_truncate(repr(value), 60)})")
    return value


def _optional_string(value: Any) -> str | None:
    """Events use null, "" or absence for "not versioned" / "unknown"; all three become None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidEventError(f"expected a string, got {type(value).__name__} {_truncate(repr(value), 60)}")
    return value


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEventError(f"expected an integer size, got {_truncate(repr(value), 60)}")
    return value


def _describe(payload: Mapping[str, Any]) -> str:
    """What was received, short enough for a log line: the dict's keys, never its values."""
    return _truncate(f"object with keys {sorted(map(str, payload))}")


def _truncate(text: str, limit: int = _DESCRIBE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
