"""``sceneclip backfill --stac ITEMS | --stac-api URL``: one queue message per STAC Item to do.

ITEMS is a file path, an ``s3://`` URI or an ``https`` URL of an ItemCollection (a GeoJSON FeatureCollection
of Items), a single Item, or a static catalog / collection, whose ``child`` and ``item`` links are followed
(relative hrefs against the document's own location, at most :data:`MAX_DEPTH` levels down). The operator runs
this on their own machine, so any https host may be read (with a size cap per document); the function itself
still reads Items and assets only from input buckets. A STAC API search (:mod:`sceneclip.aws.stac_api`) is
the other source of Items; the done rules are the same.

An Item is **done**, and not sent again, when each of its selected assets (``SCENECLIP_STAC_ASSETS``, else the
data GeoTIFFs) is done by the scene rule of :func:`sceneclip.aws.backfill.decide` for its current ETag (one HEAD
per asset), or when the records table holds, for this edition of the Item and this configuration, its
``skipped`` record (the filter rejected it) or a permanent failure of the Item as a whole (an asset it lacks…).
With ``SCENECLIP_STAC_STACK=true`` the assets have no records of their own: the Item is done by the same
scene rule applied to its stack records (under ``stac://collection/id``, ETag = the members' ETags joined).
Messages are ``{"stac_item": {Item}, "region"?, "force"?}``: the Item itself, so the function needs no access
to the catalogue. Known limit: an Item republished with new metadata but the same asset objects counts as done
here (the records keep asset ETags, not Item editions); ``--force`` resends it.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

from sceneclip.aws.backfill import SQS_BATCH, BackfillSummary, decide, failure_is_transient, flush_batch
from sceneclip.aws.s3 import head_scene
from sceneclip.aws.stac_api import ApiSearch, region_search_geometry, search_items
from sceneclip.aws.stac_events import ItemRef, item_scene
from sceneclip.core.stac_assets import is_stac_item, item_version, s3_location, select_assets
from sceneclip.errors import ConfigError, InvalidItemError, SceneclipError, classify

MAX_DEPTH = 8  # catalog → child catalogs → items: deep enough for year/month/day layouts
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024  # an ItemCollection of a few thousand Items
MAX_MESSAGE_BYTES = 250 * 1024  # SQS refuses bodies over 256 KiB


def read_document(href: str, s3: Any) -> dict[str, Any]:
    """A JSON document from a path, ``s3://`` URI / S3 https URL (boto3: honours ``AWS_ENDPOINT_URL``) or https URL."""
    bucket, key, _ = s3_location(href)
    try:
        if bucket and key:
            raw = s3.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_DOCUMENT_BYTES + 1)
        elif urlparse(href).scheme in ("http", "https"):
            from urllib.request import urlopen

            with urlopen(href, timeout=30) as resp:  # noqa: S310 - an operator-given catalogue URL
                raw = resp.read(MAX_DOCUMENT_BYTES + 1)
        else:
            raw = Path(href).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the STAC document {href}: {exc}") from exc
    except Exception as exc:  # botocore errors: typed by the one classifier
        raise classify(exc, what=f"reading the STAC document {href}", permanent=ConfigError) from exc
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"the STAC document {href} is over {MAX_DOCUMENT_BYTES:,} bytes")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"the STAC document {href} is not JSON ({str(exc)[:80]})") from None


def resolve(base: str, href: str) -> str:
    """``href`` of a link in the document at ``base``, made absolute (s3 URIs and paths too)."""
    if urlparse(href).scheme or href.startswith("/"):
        return href
    if base.startswith("s3://"):
        bucket, _, key = base[len("s3://"):].partition("/")
        return f"s3://{bucket}/{posixpath.normpath(posixpath.join(posixpath.dirname(key), href))}"
    if urlparse(base).scheme in ("http", "https"):
        return urljoin(base, href)
    return str((Path(base).parent / href).resolve())


def iter_items(source: str, s3: Any, *, _depth: int = 0) -> Iterator[dict[str, Any]]:
    """Every Item of the ItemCollection / Item / static catalog at ``source``, in document order."""
    doc = read_document(source, s3)
    if is_stac_item(doc):
        yield doc
    elif isinstance(doc, Mapping) and doc.get("type") == "FeatureCollection":
        for feature in doc.get("features") or []:
            if is_stac_item(feature):
                yield feature
    elif isinstance(doc, Mapping) and doc.get("type") in ("Catalog", "Collection"):
        if _depth >= MAX_DEPTH:
            raise ConfigError(f"the STAC catalog at {source} nests more than {MAX_DEPTH} levels")
        for link in doc.get("links") or []:
            if isinstance(link, Mapping) and link.get("rel") in ("item", "child") and isinstance(link.get("href"), str):
                yield from iter_items(resolve(source, link["href"]), s3, _depth=_depth + 1)
    else:
        raise ConfigError(f"{source} is neither a STAC Item, an ItemCollection nor a catalog/collection")


def decide_item(item: Mapping[str, Any], *, settings: Any, records: Any, s3: Any, store_version: str | None,
                region: str | None) -> tuple[str, str]:
    """``("enqueue" | "skip", reason)`` for one Item (see the module docstring for what *done* means)."""
    edition = [r for r in records.for_scene(item_scene(item)) if r.get("config_hash") == settings.config_hash
               and r.get("source_version") == (item_version(item) or None)]
    if any(r.get("status") == "skipped" for r in edition):
        return "skip", "filtered"
    if any(r.get("status") == "failed" and not failure_is_transient(r) for r in edition):
        return "skip", "failed-permanently"  # e.g. a selected asset it lacks: the same Item fails the same way
    try:
        assets = select_assets(item, settings.stac.assets or None)
    except InvalidItemError:
        return "enqueue", "new"  # the function records why it cannot be clipped
    etags = []
    for asset in assets:
        if not asset.bucket or not asset.s3_key:
            return "enqueue", "new"
        try:
            etags.append(head_scene(s3, asset.bucket, asset.s3_key).etag)
        except SceneclipError:
            return "enqueue", "new"  # the function will record what is wrong with it
        if settings.stac.stack:
            continue  # one record for the stack, under the Item: decided below
        action, reason = decide(records.for_scene(asset.uri), etags[-1], settings.config_hash, region=region,
                                boundary_version=store_version)
        if action == "enqueue":
            return action, reason
    if settings.stac.stack:  # the stack job's ETag joins its members' (sceneclip.aws.stac_stack.stack_job)
        return decide(records.for_scene(item_scene(item)), ",".join(etags), settings.config_hash, region=region,
                      boundary_version=store_version)
    return "skip", "done"


def run_stac_backfill(source: str | ApiSearch, queue_url: str, *, settings: Any = None, records: Any = None,
                      s3: Any = None, sqs: Any = None, region: str | None = None, intersects: str | None = None,
                      force: bool = False, dry_run: bool = False) -> BackfillSummary:
    """Enqueue every Item of ``source`` that is still to do on ``queue_url``; see :func:`iter_items`, :func:`decide_item`.

    ``source`` is an ItemCollection / catalog location, or an :class:`~sceneclip.aws.stac_api.ApiSearch`;
    ``intersects`` names a store region whose geometry the search intersects with (and, unless ``region``
    says otherwise, the region every message asks for: the search was for that region's scenes).
    """
    import boto3

    from sceneclip.aws.backfill import current_store_version

    started = time.perf_counter()
    if settings is None and not force:
        raise ConfigError("the function's configuration is needed to know what is done (SCENECLIP_* variables "
                          "or --env-vars), or use --force to enqueue everything")
    s3, sqs = s3 or boto3.client("s3"), sqs or boto3.client("sqs")
    if records is None and not force:
        from sceneclip.aws.records_table import RecordStore

        records = RecordStore(settings.records_table)
    store_version = current_store_version(settings, s3) if not force else None
    rejected: list[str] = []
    if isinstance(source, ApiSearch):
        if intersects is not None:
            source = _intersecting(source, settings, s3, intersects)
            region = region or intersects
        label, items = source.describe(), search_items(source, rejected=rejected)
    elif intersects is not None:
        raise ConfigError("--intersects applies to a STAC API search (--stac-api), not to an ItemCollection")
    else:
        label, items = source, iter_items(source, s3)
    summary = BackfillSummary(source=label, queue_url=queue_url, dry_run=dry_run)
    reasons: Counter[str] = Counter()
    batch: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        summary.listed += 1
        action, reason = ("enqueue", "force") if force else decide_item(
            item, settings=settings, records=records, s3=s3, store_version=store_version, region=region)
        reasons[reason] += 1
        if action == "skip":
            summary.skipped += 1
            continue
        message = ItemRef(item=dict(item), region=region, force=force).to_message()
        if len(json.dumps(message, separators=(",", ":"))) > MAX_MESSAGE_BYTES:
            summary.failed += 1
            summary.failures.append({"key": str(item.get("id")), "code": "TooLarge",
                                     "message": f"the Item is over {MAX_MESSAGE_BYTES:,} bytes as a message"})
            continue
        batch.append((str(item.get("id")), message))
        if len(batch) == SQS_BATCH:
            flush_batch(summary, sqs, queue_url, batch, dry_run)
    flush_batch(summary, sqs, queue_url, batch, dry_run)
    if rejected:  # refused by the search's filter here: listed by the API, never looked at
        summary.listed += len(rejected)
        summary.skipped += len(rejected)
        reasons["filtered-by-search"] += len(rejected)
    summary.reasons = dict(reasons)
    summary.duration_s = round(time.perf_counter() - started, 3)
    return summary


def _intersecting(search: ApiSearch, settings: Any, s3: Any, region: str) -> ApiSearch:
    """``search`` limited to the store region's geometry (the store is the function's SCENECLIP_BOUNDARIES)."""
    from dataclasses import replace

    from sceneclip.aws.store import get_store

    if settings is None:
        raise ConfigError("--intersects needs the function's configuration (SCENECLIP_BOUNDARIES, or --env-vars) "
                          "to find the region's geometry")
    return replace(search, intersects=region_search_geometry(get_store(settings.boundaries, s3_client=s3), region))
