"""A mosaic job → every source admitted and HEADed → one idempotent clip of them all → one record.

Steps, in order, so that a bad message or a refused source costs no pixel read:

1. each source passes the single-object rules (:mod:`sceneclip.aws.admission`): never an output of ours,
   only input buckets, a key GDAL keeps as is, then a HEAD through its bucket's access (region, payer,
   requester-pays diagnosis) and the ETag check (``refuse_changed``: an unversioned source overwritten
   since the message was sent is ``SupersededError``);
2. the region must be in the store;
3. one :class:`~sceneclip.aws.jobs.ClipJob` naming every source version (:class:`~sceneclip.aws.jobs.SourcePin`)
   runs through the scene pipeline's idempotent clip (:meth:`ScenePipeline.run_job`): the same message twice
   clips once, a changed ETag of any source clips again;
4. the clip (:meth:`MosaicPipeline.clip`) opens each source in its own ``rasterio.Env`` (its region, payer and
   ``If-Match`` pin: GDAL keeps them per open file), merges them first-valid-wins
   (:mod:`sceneclip.core.mosaic`), and publishes ``{prefix}{region}/{group}.tif`` with a record listing every
   source (ETag, version, bytes fetched) and a STAC Item with one ``derived_from`` link per source.

Failures before the clip are recorded under ``mosaic://G`` and region ``-`` (as a scene's are), so they never
overwrite the region's ``ok`` record of an earlier mosaic; a clip failure under ``mosaic://G`` and the region.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from sceneclip.aws.admission import (
    confirm_content_error,
    refuse_bucket,
    refuse_changed,
    refuse_recursion,
    superseded_by_overwrite,
)
from sceneclip.aws.events import SceneRef
from sceneclip.aws.jobs import ClipJob, SourcePin, past_deadline, peak_rss_mb
from sceneclip.aws.mosaic_events import MosaicRef, MosaicSource, sources_digest
from sceneclip.aws.publish import Destination, superseded_record
from sceneclip.aws.records_table import NO_REGION
from sceneclip.aws.s3 import SceneObject, gdal_source, refuse_unsafe_key
from sceneclip.aws.sources import head_source
from sceneclip.core import netstats
from sceneclip.core.gdalenv import non_cached_option
from sceneclip.core.naming import slug
from sceneclip.core.records import BoundaryRef, VerificationRecord, failed_record
from sceneclip.errors import SceneclipError, classify

log = logging.getLogger("sceneclip.aws.mosaic_pipeline")


def mosaic_output_key(prefix: str, region: str, group: str) -> str:
    """``{prefix}{region_slug}/{group}.tif`` (the group is already a plain file name: see ``valid_group``)."""
    return f"{prefix}{slug(region)}/{slug(group, keep_slash=False)}.tif"


def job_digest(job: ClipJob) -> str:
    """The mosaic record's ``source_etag``: the digest of its sources' (bucket, key, ETag)."""
    return sources_digest([(p.bucket, p.key, p.etag) for p in job.sources])


def listed_sources(job: ClipJob) -> list[dict[str, Any]]:
    """The record's ``sources`` before any byte is counted (a failure's record)."""
    return [{"bucket": p.bucket, "key": p.key, "etag": p.etag, **({"version_id": p.version_id} if p.version_id else {})}
            for p in job.sources]


class MosaicPipeline:
    """Runs one :class:`MosaicRef` through a :class:`~sceneclip.aws.pipeline.ScenePipeline` (``scenes``), whose
    settings, clients, records table, deadline, publisher and idempotent clip it shares."""

    def __init__(self, scenes: Any) -> None:
        self.scenes = scenes
        self.settings = scenes.settings

    # --- before any pixel ----------------------------------------------------------------------------------
    def process(self, ref: MosaicRef, attempt: int | None) -> list[VerificationRecord]:
        started = time.perf_counter()
        objs: list[SceneObject] = []
        try:
            self.scenes.check_deadline(f"before the mosaic {ref.uri} was started")
            objs = [self._head(source) for source in ref.sources]
            self.scenes.store().boundary(ref.region)  # an unknown region fails before any pixel is read
        except Exception as exc:
            return [self._failure(ref, objs, exc, started, attempt)]
        version = str(getattr(self.scenes.store(), "version", "") or "")
        first = objs[0]
        job = ClipJob(first.bucket, first.key, first.version_id, first.etag, first.size, ref.region,
                      self.settings.config_hash, boundary_version=version,
                      last_modified=max((o.last_modified or "" for o in objs), default="") or None,
                      group=ref.group, sources=tuple(SourcePin.of(o) for o in objs))
        rec = self.scenes.run_job(job, force=ref.force, attempt=attempt)
        if rec.ok:  # best effort, as for a scene: backfill and status ignore a failure older than a success
            try:
                self.scenes.records.supersede_scene_failure(job.scene, job_digest(job), job.config_hash)
            except SceneclipError as exc:
                log.warning("could not delete the superseded failure", extra={"scene": job.scene, "error": str(exc)})
        return [rec]

    def _head(self, source: MosaicSource) -> SceneObject:
        """One source under the single-object rules; the object its HEAD found."""
        ref = SceneRef(source.bucket, source.key, version_id=source.version_id, etag=source.etag)
        refuse_recursion(self.settings, ref)
        refuse_bucket(self.settings, ref)
        refuse_unsafe_key(ref.bucket, ref.key)
        obj = head_source(self.scenes.access(ref.bucket), ref.key, ref.version_id)
        refuse_changed(ref, obj)
        return obj

    def _failure(self, ref: MosaicRef, objs: list[SceneObject], exc: BaseException, started: float,
                 attempt: int | None) -> VerificationRecord:
        """Record a failure before the clip under ``mosaic://G`` and region ``-``; raise it if transient."""
        err = past_deadline(classify(exc, what=f"preparing the mosaic {ref.uri}"), self.scenes.deadline)
        seen = {(o.bucket, o.key): o for o in objs}
        pins = [(s.bucket, s.key, seen[(s.bucket, s.key)].etag if (s.bucket, s.key) in seen else s.etag or "")
                for s in ref.sources]
        rec = self.refused(ref.uri, err, attempt, started=started, digest=sources_digest(pins),
                           sources=[s.to_message() for s in ref.sources])
        if not err.permanent:
            raise err from exc
        return rec

    def refused(self, uri: str, err: SceneclipError, attempt: int | None, *, started: float | None = None,
                digest: str | None = None, sources: list[dict[str, Any]] | None = None) -> VerificationRecord:
        """Write (and announce) the failed record of a mosaic refused before any clip (region ``-``)."""
        rec = replace(failed_record(uri, None, err, started=started), attempt=attempt,
                      boundary=BoundaryRef(file=self.settings.boundaries, region=NO_REGION, content_hash=""),
                      config_hash=self.settings.config_hash, source_etag=digest, sources=sources)
        self.scenes.write(rec)
        log.warning("mosaic refused before clipping", extra={"scene": uri, "error_type": rec.error_type,
                                                             "error": rec.error, "transient": rec.transient})
        return rec

    # --- after a failed clip -----------------------------------------------------------------------------
    def second_look(self, err: SceneclipError, job: ClipJob) -> SceneclipError:
        """The evidence looks of a failed read, per source: an unversioned source overwritten meanwhile makes it
        ``SupersededError``; "not a supported format" is confirmed on the source the error names."""
        for pin in job.sources:
            looked = superseded_by_overwrite(err, pin.object, lambda b=pin.bucket: self.scenes.access(b))
            if looked is not err:
                return looked
        named = next((p for p in job.sources if f"s3://{p.bucket}/{p.key}" in str(err)), job.sources[0])
        return confirm_content_error(err, named.object, lambda: self.scenes.access(named.bucket))

    def failed(self, rec: VerificationRecord, job: ClipJob) -> VerificationRecord:
        """A clip failure's record, naming the mosaic's sources and their digest."""
        return replace(rec, source_etag=job_digest(job), source_version=None, sources=listed_sources(job))

    # --- the clip ----------------------------------------------------------------------------------------
    def clip(self, job: ClipJob) -> VerificationRecord:
        """Clip, upload and record the mosaic: the ``ok`` record, or an exception (never a failed record)."""
        started = time.perf_counter()
        store = self.scenes.store()
        boundary = store.boundary(job.region)
        bref = BoundaryRef(file=boundary.source, region=job.region, content_hash=boundary.content_hash)
        probe = VerificationRecord(source=job.scene, status="ok", source_etag=job_digest(job), boundary=bref,
                                   config_hash=job.config_hash, sources=listed_sources(job))
        newer = self.scenes.publisher.newer_recorded(probe, job.order)
        if newer is not None:  # a mosaic of older source versions than the one recorded: do not even clip
            return superseded_record(probe, job.order, newer)
        result, sources, total = self._read(job, boundary)
        try:
            self.scenes.check_deadline(f"before uploading the mosaic {job.scene} region {job.region}")
            record = replace(
                result.record, source=job.scene, bytes_fetched=total.bytes_fetched, requests=total.requests,
                peak_memory_mb=peak_rss_mb(), boundary=bref, boundary_version=getattr(store, "version", None),
                duration_ms=round((time.perf_counter() - started) * 1000, 1), source_etag=probe.source_etag,
                source_version=None, config_hash=job.config_hash, sources=sources,
            )
            # S3 allows 2 KB of metadata: the sources are named by count and digest (the record lists them).
            metadata = {
                "mosaic-group": job.group, "mosaic-sources": str(len(job.sources)),
                "mosaic-sources-digest": probe.source_etag or "", "region": job.region,
                "boundary-version": getattr(store, "version", ""), "boundary-hash": boundary.content_hash,
            }
            key = mosaic_output_key(self.settings.output_prefix, job.region, job.group)
            record = self.scenes.publisher.publish(record, result.output, Destination(
                self.settings.output_bucket, key, job.order), metadata)
        finally:
            result.output.close()
        if record.status == "ok":
            self.scenes.announce(record)
        log.info("mosaic ok", extra={"scene": job.scene, "region": job.region, "output": record.output,
                                     "bytes_fetched": record.bytes_fetched, "sources": len(job.sources)})
        return record

    def _read(self, job: ClipJob, boundary: Any) -> tuple[Any, list[dict[str, Any]], netstats.NetworkStats]:
        """The mosaic COG, each source opened in its own bucket's environment and pinned to its version/ETag;
        per-source and total network statistics."""
        from sceneclip.core.clip import clip_to_cog

        deadline = self.scenes.deadline
        objs = [p.object for p in job.sources]
        accesses = [self.scenes.sources.access(o.bucket, deadline) for o in objs]
        opened = [gdal_source(a.s3, o, expires_s=self.settings.presign_expires_s, payer=a.payer)
                  for a, o in zip(accesses, objs, strict=True)]
        paths = [path for path, _ in opened]
        with accesses[0].rasterio_env(non_cached_option(*dict.fromkeys(o.bucket for o in objs)), deadline):
            netstats.clear_curl_cache()
            netstats.reset()
            result = clip_to_cog(paths, boundary, self.settings.clip_options(), names=[o.uri for o in objs],
                                 deadline=deadline,
                                 open_env=lambda i: accesses[i].rasterio_env(opened[i][1], deadline))
            total, per_file = netstats.snapshot(), netstats.by_file(paths)
        used = set(result.record.checks.get("sources_used", [o.uri for o in objs]))
        sources = [{**entry, "bytes_fetched": per_file[path].bytes_fetched, "requests": per_file[path].requests,
                    "used": obj.uri in used}
                   for entry, path, obj in zip(listed_sources(job), paths, objs, strict=True)]
        return result, sources, total
