"""A STAC Item → its selected assets → per region: one clip per asset → the region's output Item.

The Item is a scene of many objects (one COG per band). Steps, in order, so that an Item that is filtered out
or broken costs no pixel read:

1. the Item: carried by the event, or fetched from the S3 URL it named (:mod:`sceneclip.aws.stac_fetch`);
2. ``SCENECLIP_STAC_FILTER`` on its properties: a rejected Item gets a ``skipped`` record naming the rule,
   and no asset is opened (not even HEADed);
3. the assets (``SCENECLIP_STAC_ASSETS``, default every GeoTIFF with the ``data`` role), each refused or
   HEADed exactly as a scene object is (input buckets only, never an output, safe keys);
4. the regions, from the first asset's header (the assets of one Item cover one scene);
5. per region and asset, the scene pipeline's idempotent clip (:meth:`ScenePipeline.run_job`): each asset is
   a :class:`~sceneclip.aws.jobs.ClipJob` whose idempotency key carries the asset's ETag/version **and** the
   Item's id + ``updated`` time, so a republished Item is clipped again and a duplicate delivery is not;
6. when every asset of a region is ``ok``: the region's output STAC Item (:mod:`sceneclip.core.stac_output`).

Failures before any clip (fetch, filter, selection, HEAD, regions) are recorded under the Item's identity
``stac://collection/id`` and region ``-``; transient ones are raised so the message is retried.
"""

from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import replace
from typing import Any

from sceneclip.aws.events import SceneRef
from sceneclip.aws.jobs import ClipJob, output_key, past_deadline
from sceneclip.aws.records_table import NO_REGION
from sceneclip.aws.s3 import SceneObject, put_json, refuse_unsafe_key
from sceneclip.aws.sources import head_source
from sceneclip.aws.admission import confirm_content_error, refuse_bucket, refuse_recursion
from sceneclip.aws.stac_events import ItemRef, item_scene
from sceneclip.aws.stac_fetch import fetch_item
from sceneclip.core.naming import href_for, slug
from sceneclip.core.records import BoundaryRef, VerificationRecord, failed_record
from sceneclip.core.stac_assets import STACK_ASSET, AssetRef, item_version, select_assets
from sceneclip.errors import DeadlineExceeded, InvalidItemError, classify

log = logging.getLogger("sceneclip.aws.stac_pipeline")

SKIPPED = "skipped"
FILTERED = "ItemFilteredOut"


def item_output_key(prefix: str, region: str, item_id: str) -> str:
    """Where a region's output Item goes: ``{prefix}{region_slug}/stac-items/{item id}.stac.json`` (under the
    prefix, beside the region's COGs; one name per source Item and region whatever the COG key template)."""
    return f"{prefix}{slug(region)}/stac-items/{slug(item_id, keep_slash=False)}.stac.json"


class ItemPipeline:
    """Runs one :class:`ItemRef` through a :class:`~sceneclip.aws.pipeline.ScenePipeline` (``scenes``), whose
    settings, clients, records table, deadline and idempotent per-object clip it shares."""

    def __init__(self, scenes: Any) -> None:
        self.scenes = scenes
        self.settings = scenes.settings

    def process(self, ref: ItemRef, attempt: int | None) -> list[VerificationRecord]:
        started = time.perf_counter()
        scene, item, first = ref.uri, None, None
        try:
            self.scenes.check_deadline(f"before the STAC Item {ref.uri} was started")
            item = ref.item if ref.item is not None else fetch_item(self.scenes.scene_s3, ref.href or "", self.settings)
            scene = item_scene(item)
            skipped = self._filtered(item, scene, attempt)
            if skipped is not None:
                return [skipped]
            assets = select_assets(item, self.settings.stac.assets or None)
            objs = [self._head(a, item) for a in assets]
            first = objs[0]
            regions = self.scenes.resolve_regions(SceneRef(first.bucket, first.key, region=ref.region), first)
        except Exception as exc:
            return [self._failure(scene, ref, first, exc, started, attempt, item)]
        return self._clip(item, ref, list(zip(assets, objs)), regions, attempt)

    # --- before any pixel --------------------------------------------------------------------------------
    def _filtered(self, item: dict[str, Any], scene: str, attempt: int | None) -> VerificationRecord | None:
        """The ``skipped`` record of an Item the filter rejects (written and announced), else None."""
        rule = self.settings.stac.filter
        if rule is None or rule.matches(item):
            return None
        rec = VerificationRecord(
            source=scene, status=SKIPPED, error_type=FILTERED, transient=False, attempt=attempt,
            error=f"STAC Item {item.get('id')!r} does not pass SCENECLIP_STAC_FILTER: {rule.text} (no asset was read)",
            boundary=BoundaryRef(file=self.settings.boundaries, region=NO_REGION, content_hash=""),
            source_version=item_version(item) or None, config_hash=self.settings.config_hash,
        )
        self.scenes.write(rec)
        log.info("STAC Item filtered out", extra={"scene": scene, "rule": rule.text})
        return rec

    def _head(self, asset: AssetRef, item: dict[str, Any]) -> SceneObject:
        """One asset's object, under the scene rules (input bucket, not an output, a key GDAL keeps as is)."""
        if not asset.bucket or not asset.s3_key:
            raise InvalidItemError(f"STAC Item {item.get('id')!r}: asset {asset.key!r} is not on S3 ({asset.href[:120]}); "
                                   "only S3 assets are read")
        ref = SceneRef(asset.bucket, asset.s3_key)
        refuse_recursion(self.scenes.settings, ref)
        refuse_bucket(self.scenes.settings, ref)
        refuse_unsafe_key(ref.bucket, ref.key)
        # the asset bucket's region and payer, and the requester-pays diagnosis, as for a scene
        return head_source(self.scenes.access(ref.bucket), ref.key)

    def _failure(self, scene: str, ref: ItemRef, obj: SceneObject | None, exc: BaseException, started: float,
                 attempt: int | None, item: dict[str, Any] | None) -> VerificationRecord:
        """Record a failure before any clip under the Item's identity; raise it when a retry may pass."""
        err = past_deadline(classify(exc, what=f"preparing the STAC Item {scene}", permanent=InvalidItemError),
                            self.scenes.deadline)
        if obj is not None:
            err = confirm_content_error(err, obj, lambda: self.scenes.access(obj.bucket))
        rec = replace(failed_record(scene, None, err, started=started), attempt=attempt,
                      boundary=BoundaryRef(file=self.settings.boundaries, region=ref.region or NO_REGION, content_hash=""),
                      config_hash=self.settings.config_hash,
                      source_version=(item_version(item) or None) if item is not None else None)  # the edition
        self.scenes.write(rec)
        log.warning("STAC Item failed before clipping", extra={"scene": scene, "error_type": rec.error_type,
                                                               "error": rec.error, "transient": rec.transient})
        if not err.permanent:
            raise err from exc
        return rec

    # --- per region ---------------------------------------------------------------------------------------
    def _clip(self, item: dict[str, Any], ref: ItemRef, assets: list[tuple[AssetRef, SceneObject]],
              regions: list[str], attempt: int | None) -> list[VerificationRecord]:
        """Every (region, asset) clip in order; a region whose assets are all ``ok`` gets its output Item. When the
        deadline ends the run, every pair not reached gets a transient failed record before it is raised."""
        edition = f"{item['id']}@{item_version(item)}"
        version = str(getattr(self.scenes.store(), "version", "") or "")
        if self.settings.stac.stack:
            return self._clip_stacks(item, ref, assets, regions, attempt, edition, version)
        jobs = [(asset, ClipJob(obj.bucket, obj.key, obj.version_id, obj.etag, obj.size, region,
                                self.settings.config_hash, boundary_version=version, last_modified=obj.last_modified,
                                item_edition=edition))
                for region in regions for asset, obj in assets]
        out: list[VerificationRecord] = []
        for i, (asset, job) in enumerate(jobs):
            try:
                out.append(self.scenes.run_job(job, force=ref.force, attempt=attempt))
            except DeadlineExceeded as exc:
                for _, later in jobs[i + 1:]:
                    self.scenes.record_not_reached(later, exc, (later.region,), attempt)
                raise
            region_recs = out[-len(assets):]
            if (i + 1) % len(assets) == 0 and all(rec.ok for rec in region_recs):  # the region's last asset
                region_jobs = jobs[i + 1 - len(assets):i + 1]
                failed = self._publish_item(item, ref, job.region,
                                            [(a.key, j, rec) for (a, j), rec in zip(region_jobs, region_recs)], attempt)
                out += [failed] if failed is not None else []
        return out

    def _clip_stacks(self, item: dict[str, Any], ref: ItemRef, assets: list[tuple[AssetRef, SceneObject]],
                     regions: list[str], attempt: int | None, edition: str, version: str) -> list[VerificationRecord]:
        """``SCENECLIP_STAC_STACK=true``: per region one stack of every selected asset (:mod:`sceneclip.aws.
        stac_stack`), then its output Item; the deadline rule is the per-asset one."""
        from sceneclip.aws.stac_stack import stack_job

        jobs = [stack_job(item, assets, region, config_hash=self.settings.config_hash, boundary_version=version,
                          edition=edition) for region in regions]
        out: list[VerificationRecord] = []
        for i, job in enumerate(jobs):
            try:
                rec = self.scenes.run_job(job, force=ref.force, attempt=attempt)
            except DeadlineExceeded as exc:
                for later in jobs[i + 1:]:
                    self.scenes.record_not_reached(later, exc, (later.region,), attempt)
                raise
            out.append(rec)
            if rec.ok:
                failed = self._publish_item(item, ref, job.region, [(STACK_ASSET, job, rec)], attempt)
                out += [failed] if failed is not None else []
        return out

    def _publish_item(self, item: dict[str, Any], ref: ItemRef, region: str,
                      clips: list[tuple[str, ClipJob, VerificationRecord]], attempt: int | None) -> VerificationRecord | None:
        """The region's output Item, written; None when it was. A failure is recorded under the Item and the
        region (``failed``, the assets' COGs stay: their own records are ``ok``), raised when transient (the
        redelivery replays the assets from the idempotency table and writes the Item again)."""
        started = time.perf_counter()
        try:
            self._write_item(item, ref, region, clips)
            return None
        except Exception as exc:
            err = classify(exc, what=f"writing the output STAC Item of {item_scene(item)} region {region}")
            rec = replace(failed_record(item_scene(item), None, err, started=started), attempt=attempt,
                          boundary=BoundaryRef(file=self.settings.boundaries, region=region, content_hash=""),
                          config_hash=self.settings.config_hash, source_version=item_version(item) or None)
            self.scenes.write(rec)
            if not err.permanent:
                raise err from exc
            return rec

    def _write_item(self, item: dict[str, Any], ref: ItemRef, region: str,
                    clips: list[tuple[str, ClipJob, VerificationRecord]]) -> str:
        """Write the region's output Item (hrefs relative to it, percent-encoded where needed); returns its key.
        A stack's one clip gets :func:`~sceneclip.core.stac_output.stack_item`, per-asset clips region_item."""
        from sceneclip.core.stac_output import ClippedAsset, region_item, source_href, stack_item  # pystac: not at cold start

        item_id = slug(f"{item['id']}-{region}", keep_slash=False)
        key = item_output_key(self.settings.output_prefix, region, item_id)
        here = posixpath.dirname(key)
        assets = [ClippedAsset(asset, rec, href_for(posixpath.relpath(output_key(self.settings, job), here)))
                  for asset, job, rec in clips]
        members = clips[0][1].members
        if members:
            bands = _band_counts(members, clips[0][2])
            doc = stack_item(item, assets[0], bands, region=region, item_id=item_id,
                             source_href=source_href(item, ref.href))
        else:
            doc = region_item(item, assets, region=region, item_id=item_id, source_href=source_href(item, ref.href))
        put_json(self.scenes.scene_s3, self.settings.output_bucket, key, doc)
        log.info("output STAC Item written", extra={"scene": item_scene(item), "region": region,
                                                    "item": f"s3://{self.settings.output_bucket}/{key}"})
        return key


def _band_counts(members: tuple[Any, ...], record: VerificationRecord) -> list[tuple[str, int]]:
    """(asset key, band count) of a stack's members, in band order, as the clip recorded them."""
    counts = list(record.checks.get("source_bands") or [])
    if len(counts) != len(members):
        raise ValueError(f"the stack's record lists {len(counts)} sources' band counts for {len(members)} assets")
    return [(m.asset, int(n)) for m, n in zip(members, counts)]
