"""The scene pipeline: scene ref → object version → regions → clip → upload → record.

Plain Python over injected clients (S3, records table, boundary store): it knows nothing of Lambda, so the
Lambda handler, the SQS worker and the tests call the same code. Permanent failures come back as ``failed``
records (also written to the records table); transient ones are recorded and then re-raised so that
Lambda/SQS retry.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import rasterio

from sceneclip.core import netstats
from sceneclip.core.clip import clip_to_cog
from sceneclip.aws.config import Settings
from sceneclip.errors import (
    NoOverlapError,
    OutputBusyError,
    RasterReadError,
    RecursionRefusedError,
    SceneclipError,
    UnexpectedError,
    UnknownRegionError,
)
from sceneclip.aws.events import SceneRef
from sceneclip.core.gdalenv import gdal_s3_options, non_cached_option
from sceneclip.core.geometry import raster_footprint
from sceneclip.core.records import BoundaryRef, VerificationRecord, failed_record
from sceneclip.aws.records_table import NO_REGION, RecordStore
from sceneclip.aws.publish import Destination, Publisher, superseded_record
from sceneclip.aws.records_table import SourceOrder
from sceneclip.aws.s3 import SceneObject, gdal_source, head_scene
from sceneclip.core.naming import NameFields

log = logging.getLogger("sceneclip.aws.pipeline")


@dataclass(frozen=True)
class ClipJob:
    """One (scene version, region) clip: also the idempotency payload, so every field is plain JSON."""

    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int
    region: str
    config_hash: str
    # The boundary store's version: part of the idempotency key, so a rebuilt store re-clips.
    boundary_version: str = ""
    last_modified: str | None = None  # the version's LastModified (orders versions without a sequencer)
    sequencer: str | None = None  # the S3 event's sequencer, when it had one

    @property
    def scene(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def order(self) -> SourceOrder:
        return SourceOrder.of(self.last_modified, self.sequencer)


def output_key(settings: Settings, job: ClipJob) -> str:
    """The COG's key from ``SCENECLIP_OUTPUT_KEY`` (:mod:`sceneclip.core.naming`): deterministic, so a retry
    overwrites its own output and nothing else."""
    fields = NameFields(prefix=settings.output_prefix, region=job.region, bucket=job.bucket, key=job.key,
                        date=(job.last_modified or "")[:10] or None, collection=settings.stac_collection)
    return settings.output_template.render(fields)


def _overlaps(boundary: Any, ds: Any) -> bool:
    from sceneclip.core.geometry import overlap_with_raster, to_raster_crs

    try:
        return not overlap_with_raster(to_raster_crs(boundary, ds.crs, tuple(ds.bounds)), tuple(ds.bounds)).is_empty
    except SceneclipError:
        return False


def _typed(exc: BaseException) -> SceneclipError:
    """Every failure gets a record: unknown exceptions are wrapped (and retried) rather than lost."""
    if isinstance(exc, SceneclipError):
        return exc
    wrapped = UnexpectedError(f"{type(exc).__name__}: {exc}")
    wrapped.__cause__ = exc
    return wrapped


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class ScenePipeline:
    """Turns one :class:`SceneRef` into one verification record per region.

    ``clip_wrapper`` lets the caller wrap the per-region clip (the handler wraps it with Powertools
    idempotency); it receives and returns plain dicts.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        s3: Any,
        records: RecordStore,
        store_loader: Callable[[], Any],
        clip_wrapper: Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.records = records
        self.store_loader = store_loader
        self._clip = clip_wrapper(self.clip_job) if clip_wrapper else self.clip_job
        self._scene_store: Any = None  # the store as checked once for the scene being processed
        self.publisher = Publisher(s3, records, write_stac=settings.write_stac)

    def _store(self) -> Any:
        """The boundary store: checked for a new version once per scene, not once per region clip."""
        if self._scene_store is None:
            self._scene_store = self.store_loader()
        return self._scene_store

    # --- scene level ------------------------------------------------------------------------------------
    def process(self, ref: SceneRef) -> list[VerificationRecord]:
        self._scene_store = None
        try:
            return self._process(ref)
        finally:
            self._scene_store = None

    def _process(self, ref: SceneRef) -> list[VerificationRecord]:
        started = time.perf_counter()
        obj: SceneObject | None = None
        try:
            self.refuse_recursion(ref)
            obj = self._head(ref)
            regions = self.resolve_regions(ref, obj)
        except Exception as exc:
            exc = _typed(exc)
            # When the HEAD worked, record the version actually seen (backfill matches records on ETag).
            rec = replace(
                failed_record(ref.uri, None, exc, started=started),
                boundary=BoundaryRef(file=self.settings.boundaries, region=ref.region or NO_REGION, content_hash=""),
                source_etag=obj.etag if obj else ref.etag, source_version=obj.version_id if obj else ref.version_id,
                config_hash=self.settings.config_hash,
            )
            self.records.put(rec)
            log.warning("scene failed before clipping", extra={"scene": ref.uri, "error_type": rec.error_type, "error": rec.error})
            if not exc.permanent:
                raise exc
            return [rec]
        out = []
        version = str(getattr(self._store(), "version", "") or "")
        for region in regions:
            job = ClipJob(obj.bucket, obj.key, obj.version_id, obj.etag, obj.size, region, self.settings.config_hash,
                          boundary_version=version, last_modified=obj.last_modified, sequencer=ref.sequencer)
            clip = self.clip_job if ref.force else self._clip
            out.append(VerificationRecord.from_dict(clip(asdict(job))))
        return out

    def _head(self, ref: SceneRef) -> SceneObject:
        """HEAD the scene; for an event whose key encoding is undocumented, fall back to the key as delivered."""
        try:
            return head_scene(self.s3, ref.bucket, ref.key, ref.version_id)
        except RasterReadError:
            if not ref.key_as_delivered:
                raise
            log.info("decoded key not found, trying the key as delivered", extra={"key": ref.key_as_delivered})
            literal = replace(ref, key=ref.key_as_delivered, key_as_delivered=None)
            self.refuse_recursion(literal)
            return head_scene(self.s3, literal.bucket, literal.key, literal.version_id)

    def refuse_recursion(self, ref: SceneRef) -> None:
        """Our own outputs must never be clipped again (same bucket, or an event misrouted to us)."""
        if self.settings.is_output(ref.bucket, ref.key):
            raise RecursionRefusedError(
                f"{ref.uri} is under the output location s3://{self.settings.output_bucket}/{self.settings.output_prefix}; "
                "refusing to clip an output (it would loop). Exclude the output prefix from the trigger."
            )

    def resolve_regions(self, ref: SceneRef, obj: SceneObject) -> list[str]:
        """The region override of a backfill message; else the key pattern; else every intersecting region."""
        store = self._store()
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
        path, extra = gdal_source(self.s3, obj)
        with rasterio.Env(**self._gdal_env(obj.bucket, extra)):
            from sceneclip.core.source import open_source

            with open_source(path, obj.uri) as ds:
                if ds.crs is None:
                    from sceneclip.errors import MissingCRSError

                    raise MissingCRSError(f"{obj.uri} has no CRS; cannot find its region spatially")
                footprints = raster_footprint(tuple(ds.bounds), ds.crs, store.crs)
                if footprints:
                    regions = store.intersecting(footprints)
                else:
                    # The scene's footprint does not fit the store's CRS (e.g. a polar scene against a UTM
                    # store): test each region in the raster's CRS instead — slower, but never a false "none".
                    regions = [r for r in store.regions() if _overlaps(store.boundary(r), ds)]
        if not regions:
            raise NoOverlapError(f"no region of the boundary store {store.uri} intersects {obj.uri}")
        return regions

    # --- region level -----------------------------------------------------------------------------------
    def clip_job(self, job_dict: dict[str, Any]) -> dict[str, Any]:
        """Clip, upload, record one region. Returns the record as a dict (the idempotent result)."""
        job = ClipJob(**job_dict)
        started = time.perf_counter()
        base = dict(source_etag=job.etag, source_version=job.version_id, config_hash=job.config_hash)
        boundary = None
        try:
            store = self._store()
            boundary = store.boundary(job.region)
            key = output_key(self.settings, job)
            ref = BoundaryRef(file=boundary.source, region=job.region, content_hash=boundary.content_hash)
            probe = VerificationRecord(source=job.scene, boundary=ref, status="ok", **base)
            newer = self.publisher.newer_recorded(probe, job.order)
            if newer is not None:  # an older delivery: do not even clip
                return self._superseded(superseded_record(probe, job.order, newer))
            record = self._clip_and_publish(job, store, boundary, key, started, base)
        except OutputBusyError:
            raise  # the row belongs to the writer publishing now: nothing to record, retry after it
        except Exception as exc:
            return self._failed(job, boundary, _typed(exc), started, base)
        if record.status != "ok":
            return self._superseded(record)
        log.info("clip ok", extra={"scene": job.scene, "region": job.region, "output": record.output,
                                   "bytes_fetched": record.bytes_fetched, "valid_fraction": record.valid_fraction})
        return record.to_dict()

    def _clip_and_publish(self, job: ClipJob, store: Any, boundary: Any, key: str, started: float,
                          base: dict[str, Any]) -> VerificationRecord:
        obj = SceneObject(job.bucket, job.key, job.version_id, job.etag, job.size)
        path, extra = gdal_source(self.s3, obj)
        with rasterio.Env(**self._gdal_env(job.bucket, extra)):
            netstats.clear_curl_cache()
            netstats.reset()
            result = clip_to_cog(path, boundary, self.settings.clip_options(), name=job.scene)
            fetched = netstats.snapshot()
        try:
            record = replace(
                result.record, source=job.scene, bytes_fetched=fetched.bytes_fetched,
                requests=fetched.requests, peak_memory_mb=peak_rss_mb(),
                boundary=BoundaryRef(file=boundary.source, region=job.region, content_hash=boundary.content_hash),
                boundary_version=getattr(store, "version", None),
                duration_ms=round((time.perf_counter() - started) * 1000, 1), **base,
            )
            metadata = {
                "source-bucket": job.bucket, "source-key": job.key, "source-version": job.version_id or "",
                "source-etag": job.etag, "region": job.region, "boundary-version": getattr(store, "version", ""),
                "boundary-hash": boundary.content_hash,
            }
            return self.publisher.publish(record, result.output, Destination(self.settings.output_bucket, key, job.order),
                                          metadata)
        finally:
            result.output.close()

    def _failed(self, job: ClipJob, boundary: Any, exc: SceneclipError, started: float, base: dict[str, Any]) -> dict[str, Any]:
        """Record a failure, unless a newer source version is recorded (then the failure is superseded)."""
        rec = failed_record(job.scene, boundary, exc, started=started)
        if boundary is None:  # the region is still named when its geometry could not be loaded
            rec = replace(rec, boundary=BoundaryRef(file=self.settings.boundaries, region=job.region, content_hash=""))
        rec = replace(rec, peak_memory_mb=peak_rss_mb(), **base)
        if not self.records.put(rec, order=job.order):
            current = self.records.get(job.scene, job.region) or {}
            if not job.order.older_than(current):  # refused for another writer's live lease: retry after it
                raise OutputBusyError(f"another clip is writing {job.scene} region {job.region!r}; "
                                      f"retrying to record: {rec.error_type}: {rec.error}") from exc
            return self._superseded(superseded_record(rec, job.order, current))
        log.warning("clip failed", extra={"scene": job.scene, "region": job.region, "error_type": rec.error_type, "error": rec.error})
        if not exc.permanent:
            raise exc
        return rec.to_dict()

    def _superseded(self, record: VerificationRecord) -> dict[str, Any]:
        log.info("older source version not published", extra={"scene": record.source, "region": record.region,
                                                               "error": record.error})
        return record.to_dict()

    def _gdal_env(self, bucket: str, extra: dict[str, str]) -> dict[str, Any]:
        opts = gdal_s3_options()
        opts.update(non_cached_option(bucket))
        opts.update(extra)
        if extra:  # presigned /vsicurl/ URLs end in a query string, not .tif
            opts.pop("CPL_VSIL_CURL_ALLOWED_EXTENSIONS", None)
        return opts
