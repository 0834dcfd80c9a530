"""One place that stands up the template's resources on the moto server for an end-to-end test.

Every end-to-end fixture needs the same things: the template's buckets, queues and tables under names unique to
the test, a boundary store compiled from a real vector file into the input bucket, and the function's
environment pointing at them. The fixtures differ only in the proxy in front of S3 and a few variables, which
they pass in.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3

from sceneclip.aws import handler
from sceneclip.tools.local import load_template, provision

from .conftest import real

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ("InputBucket", "OutputBucket", "DeadLetterQueue", "WorkQueue", "RecordsTable", "IdempotencyTable")
PREFIXES = {"InputBucket": "in", "OutputBucket": "out", "DeadLetterQueue": "dlq", "WorkQueue": "work",
            "RecordsTable": "records", "IdempotencyTable": "idem"}
# Variables a test sets for itself; cleared so one test's choice never leaks into the next.
CLEARED = ("SCENECLIP_REGION_PATTERN", "SCENECLIP_INPUT_BUCKETS", "SCENECLIP_REQUESTER_PAYS",
           "SCENECLIP_DEADLINE_MARGIN_S", "SCENECLIP_STAC_FILTER", "SCENECLIP_STAC_ASSETS", "SCENECLIP_MAX_ITEM_BYTES",
           "SCENECLIP_STAC_STACK", "SCENECLIP_RESAMPLING")


def provision_stack(monkeypatch: Any, *, vector: str = "colorado_counties.geojson", field: str = "name",
                    store_name: str = "counties", env: dict[str, str] | None = None) -> dict[str, Any]:
    """Provision the template's resources, compile ``vector`` into ``s3://<input>/boundaries/<store_name>`` and
    set the function's environment (plus ``env``); returns names, made (resource → URL/ARN), s3, store, bucket."""
    from sceneclip.tools.store_build import build_store

    sfx = uuid.uuid4().hex[:8]
    names = {r: f"{PREFIXES[r]}-{sfx}" for r in RESOURCES}
    made = provision(load_template(ROOT / "template.yaml"), names)
    s3 = boto3.client("s3")
    store = f"s3://{names['InputBucket']}/boundaries/{store_name}"
    build_store(real(vector), field, store, s3_client=s3)
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    base = {
        "SCENECLIP_OUTPUT_BUCKET": names["OutputBucket"], "SCENECLIP_OUTPUT_PREFIX": "clipped/",
        "SCENECLIP_BOUNDARIES": store, "SCENECLIP_RECORDS_TABLE": names["RecordsTable"],
        "SCENECLIP_IDEMPOTENCY_TABLE": names["IdempotencyTable"], "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "sceneclip", "POWERTOOLS_SERVICE_NAME": "sceneclip",
    }
    for k, v in {**base, **(env or {})}.items():
        monkeypatch.setenv(k, v)
    handler._WARM_START_CACHE.clear()
    return {"names": names, "made": made, "s3": s3, "store": store, "bucket": names["InputBucket"], "sfx": sfx}
