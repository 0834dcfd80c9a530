"""The records table (DynamoDB): one verification record per scene (``s3://bucket/key``) and region."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sceneclip.core.records import VerificationRecord
from sceneclip.errors import ConfigError, classify

NO_REGION = "-"  # sort key for failures that happen before a region is known
# Bookkeeping attributes beside the record's fields (not part of VerificationRecord):
LM_ATTR = "source_modified"  # the source version's LastModified (ISO-8601 UTC, sorts like a time)
SEQ_ATTR = "source_sequencer"  # its S3 event sequencer, zero-padded hex, when the event carried one
WRITER_ATTR = "writer"  # the clip currently uploading this row's output ...
LEASE_ATTR = "writer_expires"  # ... until this epoch second (a crashed writer's claim expires)


def _to_dynamo(doc: dict[str, Any]) -> dict[str, Any]:
    """Floats become Decimal (DynamoDB has no float); empty strings are dropped from maps by the serializer."""
    return json.loads(json.dumps(doc), parse_float=Decimal)


def _from_dynamo(item: dict[str, Any]) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, Decimal):
            return int(v) if v == v.to_integral_value() else float(v)
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(item)


@dataclass(frozen=True)
class SourceOrder:
    """When a source version was written, to order two versions of one key.

    The S3 ``sequencer`` (where the event has one) orders writes to one key exactly; the version's
    LastModified orders the rest. LastModified has one-second resolution, so two versions written within a
    second are told apart only by their sequencers; without one the tie lets the later writer win.
    """

    last_modified: str
    sequencer: str | None = None

    @classmethod
    def of(cls, last_modified: str | None, sequencer: str | None) -> SourceOrder:
        seq = None
        if sequencer:
            try:
                seq = f"{int(sequencer, 16):040x}"  # numeric order of any-length hex, as strings
            except ValueError:
                seq = None
        return cls(last_modified or "", seq)

    def older_than(self, item: Mapping[str, Any]) -> bool:
        """True when the record ``item`` is of a newer source version than this one."""
        other_lm, other_seq = str(item.get(LM_ATTR, "")), item.get(SEQ_ATTR)
        if other_lm != self.last_modified:
            return other_lm > self.last_modified
        return bool(self.sequencer and other_seq and str(other_seq) > self.sequencer)

    def attrs(self) -> dict[str, str]:
        return {LM_ATTR: self.last_modified, **({SEQ_ATTR: self.sequencer} if self.sequencer else {})}

    def condition(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        """A ConditionExpression true when the row holds no record of a newer version (the negation of
        :meth:`older_than`, evaluated by DynamoDB atomically with the write)."""
        names = {"#lm": LM_ATTR}
        values: dict[str, Any] = {":lm": {"S": self.last_modified}}
        if not self.sequencer:
            return "(attribute_not_exists(#lm) OR #lm <= :lm)", names, values
        names["#sq"] = SEQ_ATTR
        values[":sq"] = {"S": self.sequencer}
        return ("(attribute_not_exists(#lm) OR #lm < :lm OR (#lm = :lm AND (attribute_not_exists(#sq) OR #sq <= :sq)))",
                names, values)


class RecordStore:
    """Reads and writes verification records; the key is (scene, region).

    Uses the low-level DynamoDB client (one client, shared with the idempotency layer in the Lambda): the
    boto3 resource layer would cost a second model load at every cold start.
    """

    def __init__(self, table_name: str, *, client: Any = None) -> None:
        import boto3
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self.table_name = table_name
        self.client = client or boto3.client("dynamodb")
        self._ser, self._de = TypeSerializer(), TypeDeserializer()

    def _item(self, raw: dict[str, Any]) -> dict[str, Any]:
        return _from_dynamo({k: self._de.deserialize(v) for k, v in raw.items()})

    def put(self, record: VerificationRecord, *, order: SourceOrder | None = None, writer: str | None = None) -> bool:
        """Write ``record``; with ``order`` only if no record of a *newer* source version is there and no other
        writer holds the row, with ``writer`` only while that writer still holds it (see :meth:`claim`).
        False when refused."""
        item = _to_dynamo(record.to_dict(drop_none=True))
        # The table's keys: the scene URI and the region id (no duplicate fields since schema v2).
        item["scene"] = record.source
        item["region"] = record.boundary.region or NO_REGION
        cond: dict[str, Any] = {}
        if order is not None:  # and never over a row another writer is publishing to (its lease is live)
            import time

            item.update(order.attrs())
            expr, names, values = order.condition()
            cond = {"ConditionExpression": f"{expr} AND (attribute_not_exists(#w) OR #e < :now)",
                    "ExpressionAttributeNames": {**names, "#w": WRITER_ATTR, "#e": LEASE_ATTR},
                    "ExpressionAttributeValues": {**values, ":now": {"N": str(int(time.time()))}}}
        if writer is not None:  # the claim already checked the order; the lease must still be ours
            cond = {"ConditionExpression": "#w = :w", "ExpressionAttributeNames": {"#w": WRITER_ATTR},
                    "ExpressionAttributeValues": {":w": {"S": writer}}}
        return self._conditional("put_item", "writing the record", Item={k: self._ser.serialize(v) for k, v in item.items()},
                                 **cond)

    def claim(self, scene: str, region: str, *, order: SourceOrder, writer: str, lease_s: int) -> str:
        """Take the (scene, region) row for one upload + record write: ``"claimed"``, ``"superseded"`` (a newer
        source version is recorded) or ``"busy"`` (another writer holds an unexpired lease).

        Serialising upload and record per output makes the record and the object it names one write: without
        it two racing clips could leave one's record over the other's object.
        """
        import time

        now = int(time.time())
        expr, names, values = order.condition()
        claimed = self._conditional(
            "update_item", "claiming the record", Key=self._key(scene, region),
            UpdateExpression="SET #w = :w, #e = :e",
            ConditionExpression=f"{expr} AND (attribute_not_exists(#w) OR #e < :now)",
            ExpressionAttributeNames={**names, "#w": WRITER_ATTR, "#e": LEASE_ATTR},
            ExpressionAttributeValues={**values, ":w": {"S": writer}, ":e": {"N": str(now + lease_s)},
                                       ":now": {"N": str(now)}},
        )
        if claimed:
            return "claimed"
        current = self.get(scene, region) or {}
        return "superseded" if order.older_than(current) else "busy"

    def release(self, scene: str, region: str, *, writer: str) -> None:
        """Give the row back after a failed upload: drop the lease, and the row when it holds no record yet."""
        names = {"#w": WRITER_ATTR}
        values = {":w": {"S": writer}}
        if not self._conditional("delete_item", "releasing the record", Key=self._key(scene, region),
                                 ConditionExpression="#w = :w AND attribute_not_exists(#s)",
                                 ExpressionAttributeNames={**names, "#s": "status"}, ExpressionAttributeValues=values):
            self._conditional("update_item", "releasing the record", Key=self._key(scene, region),
                              UpdateExpression="REMOVE #w, #e", ConditionExpression="#w = :w",
                              ExpressionAttributeNames={**names, "#e": LEASE_ATTR}, ExpressionAttributeValues=values)

    def _key(self, scene: str, region: str) -> dict[str, Any]:
        return {"scene": {"S": scene}, "region": {"S": region}}

    def _conditional(self, op: str, what: str, **kwargs: Any) -> bool:
        """One DynamoDB write; False when its condition failed, typed errors for everything else."""
        from botocore.exceptions import BotoCoreError, ClientError

        from sceneclip.aws.s3 import aws_error_code

        try:
            getattr(self.client, op)(TableName=self.table_name, **kwargs)
        except ClientError as exc:
            if aws_error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise classify(exc, what=f"{what} in table {self.table_name}", permanent=ConfigError) from exc
        except BotoCoreError as exc:
            raise classify(exc, what=f"{what} in table {self.table_name}") from exc
        return True

    def supersede_scene_failure(self, scene: str, etag: str, config_hash: str) -> bool:
        """Delete the scene-level failure (region ``-``: failed before its regions were known) of this object
        version and configuration, now that a region of it succeeded. True when one was deleted.

        Conditional on the item still being that failure, so a newer record of another version is kept.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_item(
                TableName=self.table_name, Key={"scene": {"S": scene}, "region": {"S": NO_REGION}},
                ConditionExpression="#st = :failed AND source_etag = :etag AND config_hash = :cfg",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={":failed": {"S": "failed"}, ":etag": {"S": etag}, ":cfg": {"S": config_hash}},
            )
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False  # nothing to supersede (the usual case)
            raise classify(exc, what=f"superseding the scene-level failure in table {self.table_name}",
                           permanent=ConfigError) from exc
        except BotoCoreError as exc:
            raise classify(exc, what=f"superseding the scene-level failure in table {self.table_name}") from exc

    def get(self, scene: str, region: str) -> dict[str, Any] | None:
        raw = self.client.get_item(TableName=self.table_name, Key=self._key(scene, region), ConsistentRead=True).get("Item")
        return self._item(raw) if raw else None

    def for_scene(self, scene: str) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#s = :s",
            "ExpressionAttributeNames": {"#s": "scene"},
            "ExpressionAttributeValues": {":s": {"S": scene}},
        }
        return self._pages("query", kwargs)

    def scan(self) -> list[dict[str, Any]]:
        return self._pages("scan", {"TableName": self.table_name})

    def _pages(self, op: str, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.client.get_paginator(op).paginate(**kwargs):
            # A row claimed for a first upload holds no record yet ("status" absent): not a record.
            out += [self._item(i) for i in page.get("Items", []) if "status" in i]
        return out
