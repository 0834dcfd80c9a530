"""The records table (DynamoDB): one verification record per scene (``s3://bucket/key``) and region."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from .records import VerificationRecord

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
    """Reads and writes verification records; the key is (scene, region)."""

    def __init__(self, table_name: str, *, resource: Any = None) -> None:
        import boto3

        self.table_name = table_name
        self.table = (resource or boto3.resource("dynamodb")).Table(table_name)

    def put(self, record: VerificationRecord) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        from .s3io import classify_aws_error

        item = _to_dynamo(record.to_dict(drop_none=True))
        item["scene"] = record.scene or record.source
        item["region"] = record.region or NO_REGION
        try:
            self.table.put_item(Item=item)
        except (ClientError, BotoCoreError) as exc:
            raise classify_aws_error(exc, f"writing the record to table {self.table_name}") from exc

    def get(self, scene: str, region: str) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"scene": scene, "region": region}).get("Item")
        return _from_dynamo(item) if item else None

    def for_scene(self, scene: str) -> list[dict[str, Any]]:
        from boto3.dynamodb.conditions import Key

        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": Key("scene").eq(scene)}
        while True:
            page = self.table.query(**kwargs)
            out += [_from_dynamo(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def scan(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {}
        while True:
            page = self.table.scan(**kwargs)
            out += [_from_dynamo(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
