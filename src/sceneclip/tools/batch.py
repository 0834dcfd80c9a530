"""Batch clipping on one machine: many (scene, region) jobs over a process pool, resumable, one JSON-lines report.

Data flow: jobs (a manifest, or every scene × every region it overlaps) → a plan in the parent (each scene's CRS
and bounds, each boundary's content hash, jobs already verified are skipped) → workers (each runs
:func:`sceneclip.core.clip.run_clip`, optionally writes a STAC Item) → records appended to the report as they finish.

* Processes, not threads: GDAL datasets are not thread-safe. Workers are *spawned*: forking a parent that has
  GDAL state (open datasets, caches, locks) is unsafe.
* A boundary is reprojected once per (boundary file, region, raster CRS) in each worker and reused for every
  scene of that CRS (``_WORKER_BOUNDARY_CACHE``): the parent gives each such group the union of its scenes'
  bounds, so the footprint pre-clip covers all of them, and the boundary is densified first to 1/256 of the
  *smallest* scene's extent, so a shared reprojection is as accurate as a per-scene one.
* A failure is a ``failed`` record; it never stops the batch. A job is skipped when the report already holds an
  ``ok`` record for the same source, boundary content, region, options and output, and the output file still
  has the recorded sha256.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sceneclip.core.files import file_sha256
from sceneclip.errors import ConfigError, SceneclipError, classify
from sceneclip.tools.batch_boundaries import CrsGroup, boundary_for_raster, load_job_boundary
from sceneclip.tools.batch_jobs import BatchJob

if TYPE_CHECKING:  # the clip engine (rasterio, shapely) loads on first use, so `sceneclip --help` stays fast
    from sceneclip.core.plan import ClipOptions
    from sceneclip.core.geometry import Boundary
    from sceneclip.core.records import VerificationRecord

log = logging.getLogger("sceneclip.batch")

REPORT_NAME = "report.jsonl"

@dataclass
class BatchSummary:
    total: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    report: str = ""
    duration_s: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)  # the report lines written by this run

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self) -> str:
        return (
            f"sceneclip batch: {self.total} jobs: {self.ok} ok, {self.failed} failed, {self.skipped} skipped "
            f"(already verified) in {self.duration_s:.1f} s; report {self.report}"
        )


# --- one job, in a worker ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    index: int
    job: BatchJob
    options: ClipOptions
    options_hash: str
    group: CrsGroup | None
    stac: bool


def _run_task(task: _Task) -> dict[str, Any]:
    """Run one job; never raises: every problem becomes a failed record. Returns the report line."""
    from sceneclip.core.records import failed_record

    started = time.perf_counter()
    job = task.job
    boundary = None
    cache = "bypass"
    item_path = None
    try:
        boundary = load_job_boundary(job)
        clip_boundary, cache = boundary_for_raster(boundary, job, task.group)
        os.makedirs(os.path.dirname(os.path.abspath(job.output)), exist_ok=True)
        record = _clip(job, clip_boundary, task.options)
        if record.ok and task.stac:
            item_path = _write_stac(job, record)
    except Exception as exc:  # noqa: BLE001 - a batch reports every failure and carries on
        record = failed_record(job.label, boundary, classify(exc, what=f"clipping {job.label}"), started=started)
    return _report_line(record, task, boundary, cache, item_path)


def _clip(job: BatchJob, boundary: Boundary, options: ClipOptions) -> VerificationRecord:
    import rasterio

    from sceneclip.core.clip import run_clip
    from sceneclip.core.gdalenv import gdal_s3_options

    env = gdal_s3_options() if any(s.startswith(("s3://", "/vsis3/")) for s in job.all_sources) else {}
    with rasterio.Env(**env):
        source = list(job.all_sources) if job.sources else job.source
        return run_clip(source, boundary, options, output=job.output).record


def _write_stac(job: BatchJob, record: VerificationRecord) -> str:
    from sceneclip.core.stac import item_path_for, make_item, write_item

    path = item_path_for(job.output)
    from sceneclip.core.naming import href_for

    # hrefs are IRI references: a file name or source path with a space is percent-encoded, not left raw.
    item = make_item(record, cog_href="./" + href_for(os.path.basename(job.output)), source_href=href_for(job.source),
                     cog_path=job.output)
    write_item(item, path)
    return path


def _report_line(record: VerificationRecord, task: _Task, boundary: Boundary | None, cache: str,
                 item_path: str | None) -> dict[str, Any]:
    line = record.to_dict()
    line["job"] = {
        **asdict(task.job),
        "index": task.index,
        "boundary_hash": boundary.content_hash if boundary is not None else None,
        "options_hash": task.options_hash,
        "worker_pid": os.getpid(),
        "boundary_cache": cache,
        "stac_item": item_path,
    }
    return line


# --- resume --------------------------------------------------------------------------------------------------
def options_hash(options: ClipOptions, *, stac: bool = False) -> str:
    """sha256 (16 hex) of the options that change the output, so a resumed batch redoes jobs whose options changed."""
    return options.fingerprint(stac=stac)


def _resume_key(source: str, boundary_hash: str | None, region: str | None, opt_hash: str, output: str) -> tuple:
    return (source, boundary_hash, region, opt_hash, os.path.abspath(output))


def read_verified(report: str) -> dict[tuple, str]:
    """resume key → sha256 of every ``ok`` record in an existing report (unreadable lines are ignored)."""
    done: dict[tuple, str] = {}
    if not os.path.exists(report):
        return done
    with open(report) as fh:
        for line in fh:
            try:
                data = json.loads(line)
                job = data["job"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            if data.get("status") == "ok" and data.get("sha256") and data.get("output"):
                label = " + ".join([job["source"], *job.get("sources", [])])
                key = _resume_key(label, job.get("boundary_hash"), job.get("region"),
                                  job.get("options_hash", ""), data["output"])
                done[key] = data["sha256"]
    return done


def _already_verified(job: BatchJob, opt_hash: str, done: dict[tuple, str], stac: bool) -> bool:
    try:
        boundary_hash = load_job_boundary(job).content_hash
    except SceneclipError:
        return False
    expected = done.get(_resume_key(job.label, boundary_hash, job.region, opt_hash, job.output))
    if expected is None or file_sha256(job.output) != expected:
        return False
    if stac:
        from sceneclip.core.stac import item_path_for

        return os.path.exists(item_path_for(job.output))
    return True


# --- planning and running ------------------------------------------------------------------------------------
def _scene_grid(source: str) -> tuple[str, tuple[float, float, float, float]] | None:
    """(CRS WKT, bounds) from the scene's header, or None (the worker will report why it cannot be read)."""
    import rasterio

    from sceneclip.core.gdalenv import SOURCE_READ_OPTIONS, gdal_s3_options
    from sceneclip.core.source import open_source

    env = gdal_s3_options() if source.startswith(("s3://", "/vsis3/")) else dict(SOURCE_READ_OPTIONS)
    try:  # the same driver allow-list as the clip: a VRT named .tif is not even opened for its header
        with rasterio.Env(**env), open_source(source) as ds:
            if ds.crs is None:
                return None
            return ds.crs.to_wkt(), tuple(ds.bounds)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001
        return None


def plan_batch(jobs: list[BatchJob], options: ClipOptions, *, stac: bool = False) -> list[_Task]:
    """Group the jobs by (boundary, region, raster CRS) so each group's boundary is reprojected once."""
    opt_hash = options_hash(options, stac=stac)
    grids = {src: _scene_grid(src) for src in dict.fromkeys(j.source for j in jobs)}
    members: dict[tuple, list[tuple[float, float, float, float]]] = {}
    for job in jobs:
        grid = grids[job.source]
        if grid is not None:
            members.setdefault((job.boundary, job.layer, job.region_field, job.region, grid[0]), []).append(grid[1])
    groups: dict[tuple, CrsGroup] = {}
    for key, bounds in members.items():
        unique = tuple(sorted(set(bounds)))
        union = (min(b[0] for b in unique), min(b[1] for b in unique), max(b[2] for b in unique), max(b[3] for b in unique))
        groups[key] = CrsGroup(crs_wkt=key[-1], union_bounds=union, scene_bounds=unique)
    tasks = []
    for i, job in enumerate(jobs):
        grid = grids[job.source]
        group = groups.get((job.boundary, job.layer, job.region_field, job.region, grid[0])) if grid else None
        tasks.append(_Task(i, job, options, opt_hash, group, stac))
    return tasks


def _check_outputs_unique(jobs: list[BatchJob]) -> None:
    seen: dict[str, BatchJob] = {}
    for job in jobs:
        out = os.path.abspath(job.output)
        if out in seen:
            raise ConfigError(f"two jobs write {job.output}: {seen[out].source} and {job.source} (region "
                              f"{seen[out].region!r} / {job.region!r}); give each job its own output")
        seen[out] = job


def run_batch(
    jobs: list[BatchJob],
    *,
    workers: int,
    report: str,
    options: ClipOptions | None = None,
    resume: bool = True,
    progress: bool = True,
    stac: bool = False,
) -> BatchSummary:
    """Run ``jobs`` on ``workers`` processes (1: in this process); append a line per finished job to ``report``.

    Each report line is ``VerificationRecord.to_dict()`` plus a ``job`` object (the job, boundary and options
    hashes, worker pid, whether the reprojected boundary came from the worker's cache, the STAC Item path).
    With ``resume`` jobs already verified in ``report`` (same inputs, output unchanged) are skipped.
    Never raises for a failed job; raises ConfigError for a batch that cannot start (two jobs, one output).
    """
    from sceneclip.core.plan import ClipOptions

    options = options or ClipOptions()
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    _check_outputs_unique(jobs)
    started = time.perf_counter()
    summary = BatchSummary(total=len(jobs), report=report)
    tasks = plan_batch(jobs, options, stac=stac)
    if resume:
        done = read_verified(report)
        todo = [t for t in tasks if not _already_verified(t.job, t.options_hash, done, stac)]
        summary.skipped = len(tasks) - len(todo)
        tasks = todo
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report, "a") as out, _progress_bar(len(jobs), summary.skipped, progress) as bar:

        def record(line: dict[str, Any]) -> None:
            out.write(json.dumps(line, default=str) + "\n")
            out.flush()
            summary.records.append(line)
            if line["status"] == "ok":
                summary.ok += 1
            else:
                summary.failed += 1
            bar.set_postfix(ok=summary.ok, failed=summary.failed, refresh=False)
            bar.update(1)

        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                record(_run_task(task))
        else:
            _run_pool(tasks, workers, record)
    summary.duration_s = time.perf_counter() - started
    return summary


def _run_pool(tasks: list[_Task], workers: int, record: Any) -> None:
    """Spawned worker processes. A worker that dies breaks its pool; the jobs it took down are then retried one
    per fresh process, so only the job that crashes is failed and the rest of the batch goes on."""
    from sceneclip.core.records import failed_record

    for task in _pool_pass(tasks, workers, record):
        for lost in _pool_pass([task], 1, record):
            exc = RuntimeError("the worker process died while clipping (a crash in GDAL, or killed: out of memory?)")
            record(_report_line(failed_record(lost.job.source, None, exc), lost, None, "bypass", None))


def _pool_pass(tasks: list[_Task], workers: int, record: Any) -> list[_Task]:
    """Run ``tasks`` on one pool; return those lost to a broken pool."""
    from sceneclip.core.records import failed_record

    broken: list[_Task] = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        futures: dict[Future, _Task] = {pool.submit(_run_task, t): t for t in tasks}
        not_done = set(futures)
        while not_done:
            finished, not_done = wait(not_done, return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=lambda f: futures[f].index):
                task = futures[fut]
                try:
                    line = fut.result()
                except BrokenProcessPool:
                    broken.append(task)
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be pickled
                    line = _report_line(failed_record(task.job.source, None, exc), task, None, "bypass", None)
                record(line)
    return broken


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, **kwargs: Any) -> None:
        return None


def _progress_bar(total: int, done: int, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="clip", desc="sceneclip batch", file=sys.stderr, dynamic_ncols=True)


__all__ = [
    "BatchSummary",
    "options_hash",
    "plan_batch",
    "read_verified",
    "run_batch",
]
