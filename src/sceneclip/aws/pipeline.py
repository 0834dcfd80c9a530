"""The scene pipeline: scene ref → object version → regions → clip → upload → record.

Plain Python over injected clients (S3, records table, boundary store): it knows nothing of Lambda, so the
Lambda handler, the SQS worker and the tests call the same code. Permanent failures come back as ``failed``
records (also written to the records table); transient ones are recorded and then re-raised so that
Lambda/SQS retry. Every failure is typed by :func:`sceneclip.errors.classify`.

The per-region clip (:meth:`ScenePipeline.clip_region`, ``ClipJob → VerificationRecord``) returns only
successes and *raises* every failure: wrapped in Powertools' ``idempotent_function`` (the handler does that)
a failure deletes the idempotency record instead of being cached, so a redelivery really clips again. The
caller (:meth:`ScenePipeline.run_job`) turns the raised error into the failed record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sceneclip.core import netstats
from sceneclip.core.clip import clip_to_cog
from sceneclip.core.deadline import Deadline
from sceneclip.aws.config import Settings
from sceneclip.errors import (
    OutputBusyError,
    DeadlineExceeded,
    NoOverlapError,
    SceneclipError,
    UnknownRegionError,
    classify,
)
from sceneclip.aws.events import Ref, SceneRef
from sceneclip.aws.mosaic_events import MosaicRef, RefusedRef
from sceneclip.aws.mosaic_pipeline import MosaicPipeline
from sceneclip.aws.stac_events import ItemRef
from sceneclip.aws.stac_pipeline import ItemPipeline
from sceneclip.aws.jobs import (
    ClipJob,
    ClipRunner,
    in_progress,
    not_reached,
    output_key,
    overlaps,
    past_deadline,
    peak_rss_mb,
    pick_by_etag,
)
from sceneclip.core.geometry import raster_footprint
from sceneclip.core.records import BoundaryRef, VerificationRecord, failed_record
from sceneclip.aws.records_table import NO_REGION, RecordStore
from sceneclip.aws.publish import Destination, Publisher, superseded_record
from sceneclip.aws.s3 import SceneObject, gdal_source, refuse_unsafe_key
from sceneclip.aws.admission import (
    confirm_content_error,
    refuse_bucket,
    refuse_changed,
    refuse_recursion,
    superseded_by_overwrite,
)
from sceneclip.aws.sources import SourceAccess, SourceBuckets, head_source

if TYPE_CHECKING:  # imported only when a completion target is configured (handler)
    from sceneclip.aws.completion import CompletionPublisher

log = logging.getLogger("sceneclip.aws.pipeline")


class ScenePipeline:
    """Turns one :class:`SceneRef` into one verification record per region.

    ``idempotent`` wraps the per-region clip (the handler passes Powertools' ``idempotent_function``);
    it receives and returns a :data:`ClipRunner`, so the wrapped clip stays typed.
    ``store_loader`` receives the S3 client to use; ``s3_for(deadline, region=None)`` gives the S3 client
    whose timeouts fit a deadline, made for a region (default: ``s3`` for every deadline and region). Each
    source bucket is read as its :class:`SourceAccess` says (region, requester-pays).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        s3: Any,
        records: RecordStore,
        store_loader: Callable[[Any], Any],
        idempotent: Callable[[ClipRunner], ClipRunner] | None = None,
        completion: CompletionPublisher | None = None,
        s3_for: Callable[..., Any] | None = None,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.records = records
        self.store_loader = store_loader
        self.publisher = Publisher(s3, records, write_stac=settings.write_stac)
        self._clip_once: ClipRunner = idempotent(self.clip_region) if idempotent else self.clip_region
        self._s3_for = s3_for or (lambda _deadline, _region=None: s3)
        self.sources = SourceBuckets(settings.requester_pays, self._s3_for)
        # Per scene (reset by process): the store as checked once, the deadline, its S3 client, regions after this one.
        self._scene_store: Any = None
        self._deadline: Deadline | None = None
        self._scene_s3: Any = s3
        self._regions_after: tuple[str, ...] = ()
        self._source: SourceAccess | None = None  # the scene's bucket: region, payer, client
        self.completion = completion
        self.items = ItemPipeline(self)  # STAC Items: many objects per scene, through this pipeline's clip
        self.mosaics = MosaicPipeline(self)  # mosaic jobs: several objects, one clip, through the same clip

    @property
    def scene_s3(self) -> Any:
        """The S3 client of the scene being processed (timeouts fit its deadline)."""
        return self._scene_s3

    @property
    def deadline(self) -> Deadline | None:
        """The scene's deadline (None: no time limit)."""
        return self._deadline

    def write(self, record: VerificationRecord) -> None:
        """Write the record, then announce it (completion hook: a failed publish is logged, never raised)."""
        self.records.put(record)
        self.announce(record)

    def announce(self, record: VerificationRecord) -> None:
        """Completion event for a record just written (none configured: nothing)."""
        if self.completion is not None:
            self.completion.publish(record)

    def store(self) -> Any:
        """The boundary store: checked for a new version once per scene, not once per region clip."""
        if self._scene_store is None:
            self._scene_store = self.store_loader(self._scene_s3)
        return self._scene_store

    # --- scene level ------------------------------------------------------------------------------------
    def process(self, ref: Ref, *, attempt: int | None = None, deadline: Deadline | None = None) -> list[VerificationRecord]:
        """Every region of the scene (of every selected asset, for a STAC Item), sharing ``deadline`` (None: no
        time limit, nothing capped); ``attempt`` (SQS ``ApproximateReceiveCount``) goes into failed records."""
        self._scene_store, self._deadline, self._regions_after, self._source = None, deadline, (), None
        self._scene_s3 = self._s3_for(deadline)
        try:
            if isinstance(ref, ItemRef):
                return self.items.process(ref, attempt)
            if isinstance(ref, MosaicRef):
                return self.mosaics.process(ref, attempt)
            if isinstance(ref, RefusedRef):  # a malformed mosaic message: its failure, recorded; nothing read
                return [self.mosaics.refused(ref.uri, ref.error, attempt)]
            return self._process(ref, attempt)
        finally:
            self._scene_store, self._deadline, self._scene_s3, self._regions_after = None, None, self.s3, ()
            self._source = None

    def access(self, bucket: str) -> SourceAccess:
        """How the scene's bucket is read (its region looked up once per container), kept for the scene."""
        if self._source is None or self._source.bucket != bucket:
            self._source = self.sources.access(bucket, self._deadline)
        return self._source

    def check_deadline(self, stage: str, regions_not_reached: tuple[str, ...] = ()) -> None:
        if self._deadline is not None:
            self._deadline.check(stage, regions_not_reached=regions_not_reached)

    def _process(self, ref: SceneRef, attempt: int | None) -> list[VerificationRecord]:
        started = time.perf_counter()
        obj: SceneObject | None = None
        try:
            self.check_deadline(f"before {ref.uri} was started")
            refuse_recursion(self.settings, ref)
            refuse_bucket(self.settings, ref)
            refuse_unsafe_key(ref.bucket, ref.key)
            obj = self._head(ref)
            refuse_changed(ref, obj)
            regions = self.resolve_regions(ref, obj)
        except Exception as exc:
            return [self._scene_failure(ref, obj, exc, started, attempt)]
        out: list[VerificationRecord] = []
        superseded = False
        version = str(getattr(self.store(), "version", "") or "")
        for i, region in enumerate(regions):
            job = ClipJob(obj.bucket, obj.key, obj.version_id, obj.etag, obj.size, region, self.settings.config_hash,
                          boundary_version=version, last_modified=obj.last_modified, sequencer=ref.sequencer)
            self._regions_after = tuple(regions[i + 1:])
            try:
                self.check_deadline(f"before region {region} of {obj.uri}", tuple(regions[i:]))
                rec = self.run_job(job, force=ref.force, attempt=attempt)
            except DeadlineExceeded as exc:
                self.record_not_reached(job, exc, exc.regions_not_reached or self._regions_after, attempt)
                raise
            if rec.ok and not superseded:  # a success of this version + configuration ends its scene-level failure
                superseded = self._supersede(job)
            out.append(rec)
        return out

    def _supersede(self, job: ClipJob) -> bool:
        """Best effort: the clip is done either way, and backfill/status ignore a failure older than a success."""
        try:
            self.records.supersede_scene_failure(job.scene, job.etag, job.config_hash)
        except SceneclipError as exc:
            log.warning("could not delete the superseded scene-level failure", extra={"scene": job.scene, "error": str(exc)})
        return True

    def record_not_reached(self, job: ClipJob, exc: DeadlineExceeded, regions: tuple[str, ...],
                            attempt: int | None) -> None:
        """A transient failed record for each region the deadline left unstarted (backfill and status see them)."""
        for region in regions:
            rec = replace(
                failed_record(job.scene, None, exc),
                boundary=BoundaryRef(file=self.settings.boundaries, region=region, content_hash=""),
                source_etag=job.etag, source_version=job.version_id, config_hash=job.config_hash, attempt=attempt,
            )
            self.write(rec)

    def _scene_failure(self, ref: SceneRef, obj: SceneObject | None, exc: BaseException, started: float,
                       attempt: int | None) -> VerificationRecord:
        """Record a failure before any region clip (HEAD, key resolution, region lookup); raise it if transient."""
        err = past_deadline(classify(exc, what=f"preparing {ref.uri}"), self._deadline)
        if obj is not None:
            err = confirm_content_error(err, obj, lambda: self.access(obj.bucket))
        # When the HEAD worked, record the version actually seen (backfill matches records on ETag).
        rec = replace(
            failed_record(ref.uri, None, err, started=started),
            boundary=BoundaryRef(file=self.settings.boundaries, region=ref.region or NO_REGION, content_hash=""),
            source_etag=obj.etag if obj else ref.etag, source_version=obj.version_id if obj else ref.version_id,
            config_hash=self.settings.config_hash, attempt=attempt,
        )
        self.write(rec)
        log.warning("scene failed before clipping", extra={"scene": ref.uri, "error_type": rec.error_type,
                                                          "error": rec.error, "transient": rec.transient})
        if not err.permanent:
            raise err from exc
        return rec

    def _head(self, ref: SceneRef) -> SceneObject:
        """HEAD the scene. A key with two readings (EventBridge: ``+`` as plus or as space) is resolved by the
        event's ETag (or size): HEAD both, take the one that matches, never the one that merely exists."""
        access = self.access(ref.bucket)
        if not ref.key_as_delivered:
            return head_source(access, ref.key, ref.version_id)
        literal = replace(ref, key=ref.key_as_delivered, key_as_delivered=None)
        refuse_recursion(self.settings, literal)
        found: list[SceneObject] = []
        for key in (ref.key, literal.key):
            try:
                found.append(head_source(access, key, ref.version_id))
            except SceneclipError as exc:
                if not exc.permanent:
                    raise  # a throttled HEAD says nothing about which key is meant: retry
        return pick_by_etag(ref, found)

    def resolve_regions(self, ref: SceneRef, obj: SceneObject) -> list[str]:
        """The region override of a backfill message; else the key pattern; else every intersecting region."""
        store = self.store()
        if ref.region:
            store.boundary(ref.region)  # fails early and clearly for an unknown id
            return [ref.region]
        pattern = self.settings.region_pattern
        if pattern is not None:
            match = pattern.search(obj.key)
            if not match or not match.group("region"):
                raise UnknownRegionError(
                    f"key {obj.key!r} does not match SCENECLIP_REGION_PATTERN {pattern.pattern!r}; cannot tell its region"
                )
            region = match.group("region")
            store.boundary(region)
            return [region]
        access = self.access(obj.bucket)
        path, extra = gdal_source(access.s3, obj, expires_s=self.settings.presign_expires_s, payer=access.payer)
        with access.rasterio_env(extra, self._deadline):
            from sceneclip.core.source import open_source

            with open_source(path, obj.uri, drivers=self.settings.allowed_drivers, limits=self.settings.limits) as ds:
                if ds.crs is None:
                    from sceneclip.errors import MissingCRSError

                    raise MissingCRSError(f"{obj.uri} has no CRS; cannot find its region spatially")
                footprints = raster_footprint(tuple(ds.bounds), ds.crs, store.crs)
                if footprints:
                    regions = store.intersecting(footprints)
                else:
                    # The scene's footprint does not fit the store's CRS (e.g. a polar scene against a UTM
                    # store): test each region in the raster's CRS instead — slower, but never a false "none".
                    regions = [r for r in store.regions() if overlaps(store.boundary(r), ds)]
        if not regions:
            raise NoOverlapError(f"no region of the boundary store {store.uri} intersects {obj.uri}")
        return regions

    # --- region level -----------------------------------------------------------------------------------
    def _reported(self, record: VerificationRecord) -> VerificationRecord:
        if record.status == "superseded":
            log.info("older source version not published", extra={"scene": record.source, "region": record.region,
                                                                   "error": record.error})
        return record

    def run_job(self, job: ClipJob, *, force: bool = False, attempt: int | None = None) -> VerificationRecord:
        """One region: the (idempotent unless ``force``) clip, or its failure recorded. A transient failure is
        re-raised after the record is written, so the message is retried."""
        started = time.perf_counter()
        try:
            return self._reported((self.clip_region if force else self._clip_once)(job))
        except Exception as exc:
            if in_progress(exc):  # the same output is being made right now: nothing to record, retry after it
                raise
            err = self._second_look(past_deadline(classify(exc, what=f"clipping {job.scene} to region {job.region}"),
                                                  self._deadline), job, exc)
            if isinstance(err, DeadlineExceeded):
                err = not_reached(err, self._regions_after)
            rec = replace(failed_record(job.scene, self._boundary_or_none(job.region), err, started=started),
                          peak_memory_mb=peak_rss_mb(), attempt=attempt, source_etag=job.etag,
                          source_version=job.version_id, config_hash=job.config_hash)
            if job.sources:
                rec = self.mosaics.failed(rec, job)
            if not rec.boundary.region:  # the region is still named when its geometry could not be loaded
                rec = replace(rec, boundary=BoundaryRef(file=self.settings.boundaries, region=job.region, content_hash=""))
            if not self.records.put(rec, order=job.order):
                current = self.records.get(job.scene, job.region) or {}
                if not job.order.older_than(current):  # refused for another writer's live lease: retry after it
                    raise OutputBusyError(f"another clip is writing {job.scene} region {job.region!r}; "
                                          f"retrying to record: {rec.error_type}: {rec.error}") from exc
                return self._reported(superseded_record(rec, job.order, current))
            self.announce(rec)
            log.warning("clip failed", extra={"scene": job.scene, "region": job.region, "error_type": rec.error_type,
                                              "error": rec.error, "transient": rec.transient, "attempt": attempt})
            if not err.permanent:
                raise err from exc
            return rec

    def _second_look(self, err: SceneclipError, job: ClipJob, exc: BaseException) -> SceneclipError:
        """The evidence looks before a read failure is recorded (overwritten meanwhile? really not a TIFF?)."""
        if job.sources:
            return self.mosaics.second_look(err, job)
        obj = job.object_named_in(exc)  # a stack's member the error names; None: no second look
        if obj is None:
            return err
        access = lambda: self.access(obj.bucket)  # noqa: E731 (only if a second look is needed)
        return confirm_content_error(superseded_by_overwrite(err, obj, access), obj, access)

    def _boundary_or_none(self, region: str) -> Any:
        try:
            return self.store().boundary(region)
        except Exception:  # the failure being recorded may be this very lookup
            return None

    def _read(self, job: ClipJob, boundary: Any) -> tuple[Any, Any]:
        """(clip result, network counts) of the job's object — or of a stack's members, one COG of all."""
        if job.members:
            from sceneclip.aws.stac_stack import read_stack

            return read_stack(self, job, boundary)
        obj = SceneObject(job.bucket, job.key, job.version_id, job.etag, job.size)
        access = self.access(job.bucket)
        path, extra = gdal_source(access.s3, obj, expires_s=self.settings.presign_expires_s, payer=access.payer)
        with access.rasterio_env(extra, self._deadline):
            netstats.clear_curl_cache()
            netstats.reset()
            result = clip_to_cog(path, boundary, self.settings.clip_options(), name=job.scene,
                                 deadline=self._deadline)
            return result, netstats.snapshot()

    def clip_region(self, job: ClipJob) -> VerificationRecord:
        """Clip, upload and record one region: the ``ok`` record, or an exception (never a failed record)."""
        if job.sources:  # a mosaic: the same idempotent boundary, its own reads and output name
            return self.mosaics.clip(job)
        started = time.perf_counter()
        store = self.store()
        boundary = store.boundary(job.region)
        output_key(self.settings, job)  # a template with no value for this job fails before any read
        probe = VerificationRecord(source=job.scene, status="ok", source_etag=job.etag, source_version=job.version_id,
                                   config_hash=job.config_hash,
                                   boundary=BoundaryRef(file=boundary.source, region=job.region, content_hash=boundary.content_hash))
        newer = self.publisher.newer_recorded(probe, job.order)
        if newer is not None:  # an older delivery: do not even clip
            return superseded_record(probe, job.order, newer)
        result, fetched = self._read(job, boundary)
        key = output_key(self.settings, job)  # a template with no value for this job fails before any upload
        try:
            self.check_deadline(f"before uploading region {job.region} of {job.scene}")
            record = replace(
                result.record, source=job.scene, bytes_fetched=fetched.bytes_fetched,
                requests=fetched.requests, peak_memory_mb=peak_rss_mb(),
                boundary=BoundaryRef(file=boundary.source, region=job.region, content_hash=boundary.content_hash),
                boundary_version=getattr(store, "version", None),
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                source_etag=job.etag, source_version=job.version_id, config_hash=job.config_hash,
            )
            metadata = {
                "source-bucket": job.bucket, "source-key": job.key, "source-version": job.version_id or "",
                "source-etag": job.etag, "region": job.region, "boundary-version": getattr(store, "version", ""),
                "boundary-hash": boundary.content_hash,
            }
            record = self.publisher.publish(record, result.output, Destination(self.settings.output_bucket, key, job.order),
                                            metadata, stac=not job.item_edition)  # an Item's assets: one Item per region
        finally:
            result.output.close()
        if record.status == "ok":  # written by the publisher: announce it
            self.announce(record)
        log.info("clip ok", extra={"scene": job.scene, "region": job.region, "output": record.output,
                                   "bytes_fetched": record.bytes_fetched, "valid_fraction": record.valid_fraction})
        return record
