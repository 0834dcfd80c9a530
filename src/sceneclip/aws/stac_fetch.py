"""Fetching the STAC Item an event only names (``{"stac_item": URL}``, a USGS notification).

The same trust rules as for scenes: the document must be an S3 object (``s3://`` or an S3 ``https`` URL in any
of its forms), in an input bucket (``SCENECLIP_INPUT_BUCKETS``), outside the output location; other ``https``
hosts are refused without a request (no request to an address an event chose). At most
``SCENECLIP_MAX_ITEM_BYTES`` are read (one ranged GET: an object larger than the cap fails without its body
being downloaded), and the bytes must decode to a STAC Item.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sceneclip.aws.config import Settings
from sceneclip.core.stac_assets import is_stac_item, s3_location
from sceneclip.errors import (
    BucketNotAllowedError,
    InvalidItemError,
    LimitExceededError,
    RecursionRefusedError,
    classify,
)


def item_location(href: str, settings: Settings) -> tuple[str, str]:
    """(bucket, key) of an Item URL the function may read; a typed permanent error otherwise."""
    bucket, key, _region = s3_location(href)
    if not bucket or not key:
        raise InvalidItemError(f"stac_item {href[:200]!r} is not an S3 object URL (s3://bucket/key or an S3 https "
                               "URL); Items are fetched from input buckets only")
    if not settings.input_bucket_allowed(bucket):
        raise BucketNotAllowedError(f"stac_item {href[:200]!r}: bucket {bucket!r} is not an input bucket "
                                    f"(SCENECLIP_INPUT_BUCKETS={','.join(settings.input_buckets)})")
    if settings.is_output(bucket, key):
        raise RecursionRefusedError(f"stac_item s3://{bucket}/{key} is under the output location; refusing to read it")
    return bucket, key


def fetch_item(s3: Any, href: str, settings: Settings) -> dict[str, Any]:
    """The Item document at ``href``, read with one ranged GET of at most the cap (plus one byte, to tell)."""
    bucket, key = item_location(href, settings)
    cap = settings.stac.max_item_bytes
    what = f"reading the STAC Item s3://{bucket}/{key}"
    try:
        resp = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{cap}")
        body = resp["Body"].read(cap + 1)
    except (ClientError, BotoCoreError) as exc:
        raise classify(exc, what=what, permanent=InvalidItemError) from exc
    total = _total_size(resp, len(body))
    if total > cap:
        raise LimitExceededError(f"the STAC Item s3://{bucket}/{key} is {total:,} bytes, over "
                                 f"SCENECLIP_MAX_ITEM_BYTES={cap:,}")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidItemError(f"s3://{bucket}/{key} is not JSON ({str(exc)[:80]})") from None
    if not is_stac_item(doc):
        raise InvalidItemError(f"s3://{bucket}/{key} is JSON but not a STAC Item (a Feature with stac_version, id "
                               "and assets)")
    return doc


def _total_size(resp: dict[str, Any], got: int) -> int:
    """The object's full size: from ``Content-Range: bytes 0-N/TOTAL``, else what was read."""
    content_range = str(resp.get("ContentRange") or "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    return got
