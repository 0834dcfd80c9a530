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
from sceneclip.core.deadline import Deadline, gdal_http_options, per_call_timeout_s
from sceneclip.aws.config import Settings
from sceneclip.errors import (
    DeadlineExceeded,
    NoOverlapError,
    RasterReadError,
    RecursionRefusedError,
    SceneclipError,
    UnexpectedError,
    UnknownRegionError,
)
from sceneclip.aws.events import SceneRef
from sceneclip.core.gdalenv import CLOUD_READ_OPTIONS, gdal_s3_options, non_cached_option
from sceneclip.core.geometry import raster_footprint
from sceneclip.core.records import BoundaryRef, VerificationRecord, failed_record
from sceneclip.aws.records_table import NO_REGION, RecordStore
from sceneclip.aws.s3 import COG_CONTENT_TYPE, SceneObject, gdal_source, head_scene, put_json, upload

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


def _past_deadline(exc: SceneclipError, deadline: Deadline | None) -> SceneclipError:
    """A read or transient failure caused by the budget is reported as DeadlineExceeded.

    That is: it surfaced once the budget was spent, or it is a timeout while the deadline had shortened the
    network timeouts (the capped timeout fired; the configured one might not have). Content errors with their
    own evidence (no overlap, unknown region, ...) are kept as they are.
    """
    if deadline is None or isinstance(exc, DeadlineExceeded):
        return exc
    if exc.permanent and not isinstance(exc, RasterReadError):
        return exc
    base = float(CLOUD_READ_OPTIONS["GDAL_HTTP_TIMEOUT"])
    capped_timeout = per_call_timeout_s(deadline, base) < base and any(
        marker in str(exc).lower() for marker in ("timed out", "timeout"))
    if not (deadline.expired() or capped_timeout):
        return exc
    out = deadline.exceeded(f"during a network call capped to fit it ({exc.error_type}: {exc})")
    out.__cause__ = exc
    return out


def _not_reached(exc: DeadlineExceeded, regions: tuple[str, ...]) -> DeadlineExceeded:
    """The same DeadlineExceeded, naming the regions of the scene that were never started."""
    if not regions or exc.regions_not_reached:
        return exc
    out = DeadlineExceeded(f"{exc}; regions not reached: {', '.join(regions)}", regions_not_reached=regions)
    out.__cause__ = exc.__cause__
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class ScenePipeline:
    """Turns one :class:`SceneRef` into one verification record per region.

    ``clip_wrapper`` lets the caller wrap the per-region clip (the handler wraps it with Powertools
    idempotency); it receives and returns plain dicts. ``store_loader`` receives the S3 client to use.
    ``s3_for`` gives the S3 client whose timeouts fit a deadline (default: ``s3`` for every deadline).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        s3: Any,
        records: RecordStore,
        store_loader: Callable[[Any], Any],
        clip_wrapper: Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
        s3_for: Callable[[Deadline | None], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.records = records
        self.store_loader = store_loader
        self._s3_for = s3_for or (lambda _deadline: s3)
        self._clip = clip_wrapper(self.clip_job) if clip_wrapper else self.clip_job
        # Per scene (reset by process): the store as checked once, the deadline, its S3 client, regions after this one.
        self._scene_store: Any = None
        self._deadline: Deadline | None = None
        self._scene_s3: Any = s3
        self._regions_after: tuple[str, ...] = ()

    def _store(self) -> Any:
        """The boundary store: checked for a new version once per scene, not once per region clip."""
        if self._scene_store is None:
            self._scene_store = self.store_loader(self._scene_s3)
        return self._scene_store

    # --- scene level ------------------------------------------------------------------------------------
    def process(self, ref: SceneRef, deadline: Deadline | None = None) -> list[VerificationRecord]:
        """One scene, every region of it sharing ``deadline`` (None: no time limit, nothing capped)."""
        self._scene_store, self._deadline, self._regions_after = None, deadline, ()
        self._scene_s3 = self._s3_for(deadline)
        try:
            return self._process(ref)
        finally:
            self._scene_store, self._deadline, self._scene_s3, self._regions_after = None, None, self.s3, ()

    def _check_deadline(self, stage: str, regions_not_reached: tuple[str, ...] = ()) -> None:
        if self._deadline is not None:
            self._deadline.check(stage, regions_not_reached=regions_not_reached)

    def _process(self, ref: SceneRef) -> list[VerificationRecord]:
        started = time.perf_counter()
        obj: SceneObject | None = None
        try:
            self._check_deadline(f"before {ref.uri} was started")
            self.refuse_recursion(ref)
            obj = self._head(ref)
            regions = self.resolve_regions(ref, obj)
        except Exception as exc:
            exc = _past_deadline(_typed(exc), self._deadline)
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
        for i, region in enumerate(regions):
            job = ClipJob(obj.bucket, obj.key, obj.version_id, obj.etag, obj.size, region, self.settings.config_hash)
            clip = self.clip_job if ref.force else self._clip
            self._regions_after = tuple(regions[i + 1:])
            try:
                self._check_deadline(f"before region {region} of {obj.uri}", tuple(regions[i:]))
                out.append(VerificationRecord.from_dict(clip(asdict(job))))
            except DeadlineExceeded as exc:
                self._record_not_reached(job, exc, exc.regions_not_reached or self._regions_after)
                raise
        return out

    def _record_not_reached(self, job: ClipJob, exc: DeadlineExceeded, regions: tuple[str, ...]) -> None:
        """A transient failed record for each region the deadline left unstarted (backfill and status see them)."""
        for region in regions:
            rec = replace(
                failed_record(job.scene, None, exc),
                boundary=BoundaryRef(file=self.settings.boundaries, region=region, content_hash=""),
                source_etag=job.etag, source_version=job.version_id, config_hash=job.config_hash,
            )
            self.records.put(rec)

    def _head(self, ref: SceneRef) -> SceneObject:
        """HEAD the scene; for an event whose key encoding is undocumented, fall back to the key as delivered."""
        try:
            return head_scene(self._scene_s3, ref.bucket, ref.key, ref.version_id)
        except RasterReadError:
            if not ref.key_as_delivered:
                raise
            log.info("decoded key not found, trying the key as delivered", extra={"key": ref.key_as_delivered})
            literal = replace(ref, key=ref.key_as_delivered, key_as_delivered=None)
            self.refuse_recursion(literal)
            return head_scene(self._scene_s3, literal.bucket, literal.key, literal.version_id)

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
        path, extra = gdal_source(self._scene_s3, obj)
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
            obj = SceneObject(job.bucket, job.key, job.version_id, job.etag, job.size)
            path, extra = gdal_source(self._scene_s3, obj)
            with rasterio.Env(**self._gdal_env(job.bucket, extra)):
                netstats.clear_curl_cache()
                netstats.reset()
                result = clip_to_cog(path, boundary, self.settings.clip_options(), name=job.scene,
                                     deadline=self._deadline)
                fetched = netstats.snapshot()
            try:
                self._check_deadline(f"before uploading region {job.region} of {job.scene}")
                key = output_key(self.settings, job.region, job.key)
                uri = f"s3://{self.settings.output_bucket}/{key}"
                # The STAC Item reads the COG, so it is made before the upload consumes the file object.
                item = self._stac_item(replace(result.record, output=uri, source=job.scene), result.output)
                etag = upload(
                    self._scene_s3, result.output.fileobj(), self.settings.output_bucket, key,
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
                    put_json(self._scene_s3, self.settings.output_bucket, key[: -len(".tif")] + ".stac.json", item.to_dict())
            finally:
                result.output.close()
        except Exception as exc:
            exc = _past_deadline(_typed(exc), self._deadline)
            if isinstance(exc, DeadlineExceeded):
                exc = _not_reached(exc, self._regions_after)
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
        opts.update(gdal_http_options(self._deadline, CLOUD_READ_OPTIONS))  # no call may outlive the budget
        opts.update(non_cached_option(bucket))
        opts.update(extra)
        if extra:  # presigned /vsicurl/ URLs end in a query string, not .tif
            opts.pop("CPL_VSIL_CURL_ALLOWED_EXTENSIONS", None)
        return opts

    def _stac_item(self, record: VerificationRecord, output: Any) -> Any:
        """The STAC Item written next to the COG (same stem, ``.stac.json``), or None when disabled."""
        if not self.settings.write_stac:
            return None
        from sceneclip.core.stac import make_item

        return make_item(record, cog_href=record.output, source_href=record.source, cog_path=output.name)
