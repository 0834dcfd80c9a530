"""Reading verification records for a report, whatever produced them.

Accepted, per file (format found from the content, not the name):

* a batch report (JSON lines: one record per line, with the batch's ``job`` object);
* a records-table dump: ``aws dynamodb scan --output json`` (``{"Items": [{"scene": {"S": ...}}, ...]}``,
  DynamoDB-typed), a list of plain items (``RecordStore.scan()`` as JSON), or JSON lines of either;
* one record (``sceneclip clip --json``) or a JSON list of records (the demo's ``records.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sceneclip.core.records import VerificationRecord
from sceneclip.errors import ConfigError


@dataclass(frozen=True)
class ReportEntry:
    """One record and what came with it: the batch ``job`` (boundary file, region field), when there is one."""

    record: VerificationRecord
    job: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # file:line the record was read from (for error messages)


def _untyped(value: Any) -> Any:
    """A DynamoDB-typed value ({"S": "x"}, {"N": "1"}, {"M": {...}}) as plain JSON; plain values pass."""
    if isinstance(value, dict) and len(value) == 1:
        (tag, inner), = value.items()
        if tag in {"S", "N", "BOOL", "NULL", "M", "L", "SS", "NS", "B", "BS"}:
            from boto3.dynamodb.types import TypeDeserializer

            plain = TypeDeserializer().deserialize(value)
            return json.loads(json.dumps(plain, default=lambda d: float(d) if isinstance(d, Decimal) else str(d)))
    if isinstance(value, dict):
        return {k: _untyped(v) for k, v in value.items()}
    return value


def _as_entry(doc: Any, origin: str) -> ReportEntry:
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: expected a verification record (a JSON object), got {type(doc).__name__}")
    doc = {k: _untyped(v) for k, v in doc.items()}
    job = doc.pop("job", None) or {}
    if "source" not in doc and "scene" in doc:  # a table item keeps the key fields
        doc["source"] = doc["scene"]
    if "boundary" not in doc and "region" in doc:
        doc["boundary"] = {"file": "", "region": doc["region"], "content_hash": ""}
    missing = [name for name in ("source", "boundary", "status") if name not in doc]
    if missing:
        raise ConfigError(f"{origin}: not a verification record (missing {', '.join(missing)})")
    try:
        return ReportEntry(VerificationRecord.from_dict(doc), job, origin)
    except TypeError as exc:
        raise ConfigError(f"{origin}: not a verification record ({exc})") from exc


def _documents(path: Path) -> list[tuple[Any, str]]:
    text = path.read_text()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        docs = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    docs.append((json.loads(line), f"{path}:{number}"))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        return docs
    if isinstance(whole, dict) and isinstance(whole.get("Items"), list):
        whole = whole["Items"]
    if isinstance(whole, list):
        return [(doc, f"{path}[{i}]") for i, doc in enumerate(whole)]
    return [(whole, str(path))]


def load_records(paths: list[str | Path]) -> list[ReportEntry]:
    """Every record in ``paths``, in file order.

    Raises
    ------
    ConfigError
        A file is missing, is not JSON/JSON lines, or holds something that is not a record (naming file:line).
    """
    entries: list[ReportEntry] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise ConfigError(f"records file {path} not found")
        entries += [_as_entry(doc, origin) for doc, origin in _documents(path)]
    if not entries:
        raise ConfigError(f"no verification record in {', '.join(map(str, paths))}")
    return entries
