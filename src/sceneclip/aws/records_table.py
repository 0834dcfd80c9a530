"""The records table (DynamoDB): one verification record per scene (``s3://bucket/key``) and region."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sceneclip.core.records import VerificationRecord
from sceneclip.errors import ConfigError, classify

NO_REGION = "-"  # sort key for failures that happen before a region is known


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

    def put(self, record: VerificationRecord) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        item = _to_dynamo(record.to_dict(drop_none=True))
        # The table's keys: the scene URI and the region id (records stay schema v2: no duplicate fields).
        item["scene"] = record.source
        item["region"] = record.boundary.region or NO_REGION
        try:
            self.client.put_item(TableName=self.table_name, Item={k: self._ser.serialize(v) for k, v in item.items()})
        except (ClientError, BotoCoreError) as exc:
            raise classify(exc, what=f"writing the record to table {self.table_name}", permanent=ConfigError) from exc

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
        key = {"scene": {"S": scene}, "region": {"S": region}}
        raw = self.client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True).get("Item")
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
            out += [self._item(i) for i in page.get("Items", [])]
        return out
