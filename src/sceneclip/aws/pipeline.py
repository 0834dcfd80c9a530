"""The scene pipeline: scene ref → object version → regions → clip → upload → record.

Plain Python over injected clients (S3, records table, boundary store): it knows nothing of Lambda, so the
Lambda handler, the SQS worker and the tests call the same code. Permanent failures come back as ``failed``
records (also written to the records table); transient ones are recorded and then re-raised so that
Lambda/SQS retry.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import rasterio

from sceneclip import __version__
from sceneclip.core import netstats
from sceneclip.core.clip import clip_to_cog
from sceneclip.aws.config import Settings
from sceneclip.errors import (
    NoOverlapError,
    RasterReadError,
    BucketNotAllowedError,
    RecursionRefusedError,
    SceneclipError,
    SourceUnavailableError,
    SupersededError,
    UnexpectedError,
    UnknownRegionError,
)
from sceneclip.aws.events import SceneRef
from sceneclip.core.gdalenv import gdal_s3_options, non_cached_option
from sceneclip.core.geometry import raster_footprint
from sceneclip.core.records import BoundaryRef, VerificationRecord, failed_record
from sceneclip.aws.records_table import NO_REGION, RecordStore
from sceneclip.aws.s3 import COG_CONTENT_TYPE, SceneObject, gdal_source, head_scene, put_json, refuse_unsafe_key, upload

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

    @property
    def scene(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def output_key(settings: Settings, region: str, source_key: str) -> str:
    """``{prefix}{region}/{source key without extension}.tif`` — deterministic, so a retry overwrites."""
    stem, _ = os.path.splitext(source_key)
    safe_region = region.replace("/", "_").strip() or "_"
    return f"{settings.output_prefix}{safe_region}/{stem}.tif"


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
            self.refuse_bucket(ref)
            refuse_unsafe_key(ref.bucket, ref.key)
            obj = self._head(ref)
            self.refuse_changed(ref, obj)
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
        for region in regions:
            job = ClipJob(obj.bucket, obj.key, obj.version_id, obj.etag, obj.size, region, self.settings.config_hash)
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

    def refuse_bucket(self, ref: SceneRef) -> None:
        """Only input buckets are read: the worker runs with an operator's credentials, which reach more."""
        if not self.settings.input_bucket_allowed(ref.bucket):
            raise BucketNotAllowedError(
                f"{ref.uri}: bucket {ref.bucket!r} is not an input bucket (SCENECLIP_INPUT_BUCKETS="
                f"{','.join(self.settings.input_buckets)}); add it there to clip its objects"
            )

    @staticmethod
    def refuse_changed(ref: SceneRef, obj: SceneObject) -> None:
        """An unversioned key whose ETag is no longer the event's holds another object: that one has its own event."""
        if not ref.version_id and not obj.version_id and ref.etag and obj.etag and ref.etag != obj.etag:
            raise SupersededError(
                f"{obj.uri} was overwritten after the event: the event announced ETag {ref.etag}, the bucket now "
                f"holds ETag {obj.etag}; the newer object's own event clips it"
            )

    def _superseded(self, exc: SceneclipError, obj: SceneObject) -> SceneclipError:
        """A failed read of an unversioned object: if the key now holds another ETag, say so (permanent)."""
        if obj.version_id or not isinstance(exc, (RasterReadError, SupersededError, SourceUnavailableError)):
            return exc
        try:
            now = head_scene(self.s3, obj.bucket, obj.key).etag
        except SceneclipError:
            return exc
        if now == obj.etag:
            return exc
        err = SupersededError(
            f"{obj.uri} was overwritten while it was read (If-Match {obj.etag}, the bucket now holds ETag {now}): "
            "nothing was clipped from it; the newer object's own event clips it"
        )
        err.__cause__ = exc
        return err

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
        path, extra = gdal_source(self.s3, obj, expires_s=self.settings.presign_expires_s)
        with rasterio.Env(**self._gdal_env(obj.bucket, extra)):
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
        obj = SceneObject(job.bucket, job.key, job.version_id, job.etag, job.size)
        try:
            store = self._store()
            boundary = store.boundary(job.region)
            path, extra = gdal_source(self.s3, obj, expires_s=self.settings.presign_expires_s)
            with rasterio.Env(**self._gdal_env(job.bucket, extra)):
                netstats.clear_curl_cache()
                netstats.reset()
                result = clip_to_cog(path, boundary, self.settings.clip_options(), name=job.scene)
                fetched = netstats.snapshot()
            try:
                key = output_key(self.settings, job.region, job.key)
                uri = f"s3://{self.settings.output_bucket}/{key}"
                # The STAC Item reads the COG, so it is made before the upload consumes the file object.
                item = self._stac_item(replace(result.record, output=uri, source=job.scene), result.output)
                etag = upload(
                    self.s3, result.output.fileobj(), self.settings.output_bucket, key,
                    content_type=COG_CONTENT_TYPE,
                    metadata={
                        "source-bucket": job.bucket, "source-key": job.key, "source-version": job.version_id or "",
                        "source-etag": job.etag, "region": job.region, "boundary-version": getattr(store, "version", ""),
                        "boundary-hash": boundary.content_hash, "sceneclip-version": __version__,
                        "sha256": result.record.sha256,
                    },
                )
                record = replace(
                    result.record, source=job.scene, output=uri, output_etag=etag,
                    bytes_fetched=fetched.bytes_fetched,
                    requests=fetched.requests, peak_memory_mb=peak_rss_mb(),
                    boundary=BoundaryRef(file=boundary.source, region=job.region, content_hash=boundary.content_hash),
                    boundary_version=getattr(store, "version", None),
                    duration_ms=round((time.perf_counter() - started) * 1000, 1), **base,
                )
                if item is not None:
                    put_json(self.s3, self.settings.output_bucket, key[: -len(".tif")] + ".stac.json", item.to_dict())
            finally:
                result.output.close()
        except Exception as exc:
            exc = self._superseded(_typed(exc), obj)
            rec = failed_record(job.scene, boundary, exc, started=started)
            if boundary is None:  # the region is still named when its geometry could not be loaded
                rec = replace(rec, boundary=BoundaryRef(file=self.settings.boundaries, region=job.region, content_hash=""))
            rec = replace(rec, peak_memory_mb=peak_rss_mb(), **base)
            self.records.put(rec)
            log.warning("clip failed", extra={"scene": job.scene, "region": job.region, "error_type": rec.error_type, "error": rec.error})
            if not exc.permanent:
                raise exc
            return rec.to_dict()
        self.records.put(record)
        log.info("clip ok", extra={"scene": job.scene, "region": job.region, "output": record.output,
                                   "bytes_fetched": record.bytes_fetched, "valid_fraction": record.valid_fraction})
        return record.to_dict()

    def _gdal_env(self, bucket: str, extra: dict[str, str]) -> dict[str, Any]:
        opts = gdal_s3_options()
        opts.update(non_cached_option(bucket))
        # The .tif/.tiff URL rule stays on for presigned URLs too: GDAL tests the path before the query string.
        opts.update(extra)
        return opts

    def _stac_item(self, record: VerificationRecord, output: Any) -> Any:
        """The STAC Item written next to the COG (same stem, ``.stac.json``), or None when disabled."""
        if not self.settings.write_stac:
            return None
        from sceneclip.core.stac import make_item

        return make_item(record, cog_href=record.output, source_href=record.source, cog_path=output.name)
