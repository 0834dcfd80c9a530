"""``sceneclip backfill s3://… --group-by REGEX``: one mosaic job message per (group, region) still to do.

Data flow: list the prefix (as :func:`~sceneclip.aws.backfill.run_backfill` does: suffix, ``--since``, never the
output location) → the named group ``(?P<group>…)`` searched in each key (a key that does not match is
ignored, counted ``no-group``) → the object's regions, found as the function finds them: ``--region``, else
``SCENECLIP_REGION_PATTERN`` on the key, else the store regions its footprint intersects (one header read over
``/vsis3/``, pinned to the listed ETag) → per (group, region), the objects in key order (the mosaic's priority:
the first valid pixel wins) → decide → :class:`~sceneclip.aws.mosaic_events.MosaicRef` messages, sent in tens.

*Done* is the scene rule (:func:`~sceneclip.aws.backfill.decide`) applied to the mosaic's records
(``mosaic://G``, the region's row and the group's pre-clip row ``-``) with the digest of the listed sources'
(bucket, key, ETag) standing for the ETag: an ``ok`` record of the same sources, configuration and store version
is skipped, a permanent failure too, a transient one is enqueued again; a changed, added or removed source
changes the digest, so the mosaic is enqueued (``changed``).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from datetime import datetime
from typing import Any

from sceneclip.aws.backfill import (
    SQS_BATCH,
    BackfillSummary,
    ListedObject,
    ignored_object,
    current_store_version,
    decide,
    flush_batch,
    list_objects,
    parse_s3_uri,
)
from sceneclip.aws.config import named_group_pattern
from sceneclip.aws.mosaic_events import MAX_SOURCES, MosaicRef, MosaicSource, mosaic_scene, sources_digest, valid_group
from sceneclip.aws.records_table import NO_REGION
from sceneclip.errors import ConfigError, SceneclipError

log = logging.getLogger("sceneclip.aws.backfill_mosaic")


def group_pattern(text: str) -> re.Pattern[str]:
    """``--group-by``: a regex with a named group ``group``; a ConfigError saying what is wrong otherwise."""
    return named_group_pattern(text, "group", "--group-by ", "'_(?P<group>[0-9]{8})_'")


class RegionFinder:
    """The regions of one listed object, found as the function finds them (override, key pattern, footprint)."""

    def __init__(self, settings: Any, s3: Any, bucket: str, *, region: str | None, requester_pays: bool) -> None:
        self.settings, self.s3, self.bucket, self.region = settings, s3, bucket, region
        self.requester_pays = requester_pays
        self._store: Any = None

    def __call__(self, obj: ListedObject) -> list[str]:
        if self.region is not None:
            return [self.region]
        pattern = self.settings.region_pattern
        if pattern is not None:
            match = pattern.search(obj.key)
            return [match.group("region")] if match and match.group("region") else []
        return self._spatial(obj)

    def _spatial(self, obj: ListedObject) -> list[str]:
        """The store regions the object's footprint intersects (its header only; unreadable: none, logged)."""
        from sceneclip.aws.s3 import SceneObject, gdal_source
        from sceneclip.aws.sources import SourceAccess, bucket_region
        from sceneclip.aws.store import get_store
        from sceneclip.core.geometry import raster_footprint
        from sceneclip.core.source import open_source

        if self._store is None:
            self._store = get_store(self.settings.boundaries, s3_client=self.s3)
        region = bucket_region(self.s3, self.bucket, requester_pays=self.requester_pays)
        access = SourceAccess(self.bucket, region, self.requester_pays, self.s3)
        try:
            path, extra = gdal_source(self.s3, SceneObject(obj.bucket, obj.key, None, obj.etag, obj.size),
                                      payer=access.payer)
            with access.rasterio_env(extra), open_source(path, obj.uri, drivers=self.settings.allowed_drivers,
                                                         limits=self.settings.limits) as ds:
                if ds.crs is None:
                    return []
                footprints = raster_footprint(tuple(ds.bounds), ds.crs, self._store.crs)
        except SceneclipError as exc:
            log.warning("skipping an object whose header cannot be read", extra={"scene": obj.uri, "error": str(exc)})
            return []
        return list(self._store.intersecting(footprints)) if footprints else []


def mosaic_decision(records: Any, group: str, region: str, members: list[ListedObject], settings: Any, *,
                    force: bool, store_version: str | None) -> tuple[str, str]:
    """``("enqueue" | "skip", reason)`` for the mosaic of ``members`` (key order) of ``group`` in ``region``."""
    if force or records is None:
        return decide((), "", "", force=force)
    rows = [r for r in records.for_scene(mosaic_scene(group)) if r.get("region") in (region, NO_REGION)]
    digest = sources_digest([(m.bucket, m.key, m.etag) for m in members])
    return decide(rows, digest, settings.config_hash, force=False, boundary_version=store_version)


def group_objects(objects: list[ListedObject], pattern: re.Pattern[str],
                  regions_of: Any, reasons: Counter[str]) -> dict[tuple[str, str], list[ListedObject]]:
    """(group, region) → its objects in listing (key) order; objects without a group or region are counted."""
    mosaics: dict[tuple[str, str], list[ListedObject]] = {}
    for obj in objects:
        match = pattern.search(obj.key)
        if match is None or not match.group("group"):
            reasons["no-group"] += 1
            continue
        if not valid_group(match.group("group")):  # the function would refuse it: it cannot name a file
            log.warning("group is not a plain file name", extra={"scene": obj.uri, "group": match.group("group")})
            reasons["no-group"] += 1
            continue
        regions = regions_of(obj)
        if not regions:
            reasons["no-region"] += 1
        for region in regions:
            mosaics.setdefault((match.group("group"), region), []).append(obj)
    return mosaics


def run_mosaic_backfill(
    source: str, queue_url: str, *, group_by: str, settings: Any, records: Any = None, s3: Any = None,
    sqs: Any = None, suffixes: tuple[str, ...] = (".tif", ".tiff"), since: datetime | None = None,
    region: str | None = None, force: bool = False, dry_run: bool = False, requester_pays: bool = False,
) -> BackfillSummary:
    """List ``source`` and enqueue one mosaic message per (group, region) still to do (see the module docstring).

    ``settings`` (the function's) are needed: the regions come from its store or key pattern, and *done* from
    its records table and configuration. In the summary ``listed = ignored + grouped``; ``mosaics = skipped +
    enqueued + failed`` count messages, one per (group, region).
    """
    import boto3

    if settings is None:
        raise ConfigError("backfill --group-by needs the function's configuration (SCENECLIP_* variables or "
                          "--env-vars): its boundary store finds the regions")
    started = time.perf_counter()
    pattern = group_pattern(group_by)
    bucket, prefix = parse_s3_uri(source)
    pays = requester_pays or settings.requester_pays.applies(bucket)
    if records is None and not force:
        from sceneclip.aws.records_table import RecordStore

        records = RecordStore(settings.records_table)
    if s3 is None:
        from sceneclip.aws.sources import regional_client

        s3 = regional_client(bucket, requester_pays=pays)
    sqs = sqs or boto3.client("sqs")
    summary = BackfillSummary(source=source, queue_url=queue_url, dry_run=dry_run)
    lowered = tuple(s.lower() for s in suffixes if s)
    objects = []
    for obj in list_objects(s3, bucket, prefix, requester_pays=pays):
        summary.listed += 1
        if ignored_object(obj, lowered, since, settings):
            summary.ignored += 1
        else:
            objects.append(obj)
    reasons: Counter[str] = Counter()
    finder = RegionFinder(settings, s3, bucket, region=region, requester_pays=pays)
    mosaics = group_objects(objects, pattern, finder, reasons)
    summary.ignored += reasons["no-group"]
    summary.grouped = len(objects) - reasons["no-group"]
    store_version = None if force else current_store_version(settings, s3)
    batch: list[tuple[str, dict[str, Any]]] = []
    for (group, where), members in sorted(mosaics.items()):
        action, reason = mosaic_decision(records, group, where, members, settings, force=force,
                                         store_version=store_version)
        if len(members) > MAX_SOURCES:  # the function would refuse the message: say so here instead
            log.warning("mosaic not enqueued: too many sources", extra={"group": group, "region": where,
                                                                         "sources": len(members), "limit": MAX_SOURCES})
            action, reason = "skip", "too-many-sources"
        reasons[reason] += 1
        summary.mosaics += 1
        if action == "skip":
            summary.skipped += 1
            continue
        ref = MosaicRef(tuple(MosaicSource(m.bucket, m.key, m.etag) for m in members), where, group, force)
        batch.append((f"{mosaic_scene(group)}#{where}", ref.to_message()))
        if len(batch) == SQS_BATCH:
            flush_batch(summary, sqs, queue_url, batch, dry_run)
    flush_batch(summary, sqs, queue_url, batch, dry_run)
    summary.reasons = dict(reasons)
    summary.duration_s = round(time.perf_counter() - started, 3)
    return summary
