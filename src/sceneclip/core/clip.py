"""The clip, orchestration only: open → plan (compute) → execute (apply) → COG → verify.

:func:`clip_to_cog` chains the steps of :mod:`~sceneclip.core.plan`, :mod:`~sceneclip.core.execute`,
:mod:`~sceneclip.core.cog` and :mod:`~sceneclip.core.verify`; :func:`run_clip` also turns any failure into a
failed :class:`~sceneclip.core.records.VerificationRecord`, which is what the CLI and batch call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import rasterio

from sceneclip.core.cog import write_cog
from sceneclip.core.deadline import Deadline
from sceneclip.core.gdalenv import SOURCE_READ_OPTIONS
from sceneclip.core.execute import ExecutionStats, execute_plan
from sceneclip.core.geometry import Boundary, no_overlap_error, simplify_for_grid, to_raster_crs, vertex_count
from sceneclip.core.limits import check_vertices
from sceneclip.core.output import ClipOutput, Workspace
from sceneclip.core.plan import ClipOptions, ClipPlan, RasterInfo, plan_clip
from sceneclip.core.limits import refuse_unsupported
from sceneclip.core.records import VerificationRecord, failed_record
from sceneclip.core.rioenv import reuse_environ_sessions
from sceneclip.core.source import open_source
from sceneclip.core.verify import verify_output
from sceneclip.errors import NoOverlapError, VerificationError, classify, redact


@dataclass
class ClipResult:
    """The outcome of one clip: the verification record, the COG (None once saved or on failure) and the plan."""
    record: VerificationRecord
    output: ClipOutput | None
    plan: ClipPlan | None = None


def plan_for_dataset(src: Any, boundary: Boundary, options: ClipOptions, *, name: str) -> tuple[RasterInfo, ClipPlan]:
    """The compute step for an open dataset: its grid, the boundary in its CRS, the plan. Reads no pixels."""
    refuse_unsupported(src, name)
    info = RasterInfo.from_dataset(src, name=name)
    try:
        shapes = to_raster_crs(boundary, info.crs, info.bounds, raster_name=name)
        pixel = min(abs(info.transform.a), abs(info.transform.e))
        shapes = simplify_for_grid(shapes, info.bounds, pixel, fraction=options.simplify_fraction,
                                   above=options.simplify_above)
        check_vertices(vertex_count(shapes), name, options.limits)
        return info, plan_clip(info, shapes, options)
    except NoOverlapError:
        raise no_overlap_error(boundary, name) from None


def clip_to_cog(
    source: str, boundary: Boundary, options: ClipOptions | None = None, *, name: str | None = None,
    deadline: Deadline | None = None, cog_on_disk: bool = False,
) -> ClipResult:
    """Clip ``source`` (path, /vsis3/ or s3:// URI) to ``boundary``; write and verify a COG.

    Raises a SceneclipError subclass for bad input (permanent) or a fault that may pass (transient), and
    VerificationError when the written output fails a check. On success the COG is in ``result.output``
    (in memory, or spilled to ``options.tmpdir`` for large windows); the caller saves or uploads it.
    ``name`` is how the source appears in records and messages (e.g. s3://bucket/key instead of a
    presigned URL); it defaults to ``source``. With a ``deadline`` the clip is abandoned between steps and
    between chunks with a transient DeadlineExceeded once its budget is spent (nothing partial is kept).
    ``cog_on_disk`` writes the COG to ``tmpdir`` whatever its size: for a caller that saves it to a local
    file anyway (the spilled file is renamed into place), holding it in memory first only costs RAM.
    """
    name = name or redact(source)
    reuse_environ_sessions()  # rasterise per chunk without a boto3 Session per call (see core/rioenv.py)

    options = options or ClipOptions()
    started = time.perf_counter()
    env: dict[str, Any] = {"GDAL_CACHEMAX": options.gdal_cache_mb, **SOURCE_READ_OPTIONS}
    if options.tmpdir:
        env["CPL_TMPDIR"] = options.tmpdir
    with rasterio.Env(**env), open_source(source, name, drivers=options.allowed_drivers, limits=options.limits) as src:
        info, plan = plan_for_dataset(src, boundary, options, name=name)
        workspace = Workspace(plan, options, cog_on_disk=cog_on_disk)
        output: ClipOutput | None = None
        try:
            stats = execute_plan(src, plan, workspace.intermediate, samples_per_chunk=options.samples_per_chunk,
                                 deadline=deadline)
            refuse_empty(stats, boundary, name, options)
            if deadline is not None:
                deadline.check(f"before writing the COG of {name}")
            output = workspace.new_output()
            write_cog(workspace.intermediate, output.name, plan, options, tmpdir=workspace.dir)
            workspace.cleanup()  # the intermediate is not needed for verification: free it now
            record = verify_output(output, plan, info, stats, boundary, started=started)
        except BaseException:
            if output is not None:
                output.close()
            workspace.cleanup(remove_dir=True)
            raise
    if record.status != "ok":
        output.close()
        raise VerificationError(record.error or "verification failed", record=record)
    return ClipResult(record=record, output=output, plan=plan)


def refuse_empty(stats: ExecutionStats, boundary: Boundary, source: str, options: ClipOptions) -> None:
    """An all-nodata clip is never useful: say why there is nothing instead of writing it."""
    what = f"boundary {boundary.source!r}" + (f" region {boundary.region!r}" if boundary.region else "")
    if stats.inside_pixels == 0:
        hint = "" if options.all_touched else "; use all_touched (--all-touched) to keep every pixel it touches"
        raise NoOverlapError(f"{what} overlaps {source} but selects no pixel (smaller than a pixel?){hint}")
    if stats.valid_pixels == 0:
        raise NoOverlapError(f"{what} covers only nodata pixels of {source}: no valid pixel to keep")


def run_clip(
    source: str, boundary: Boundary, options: ClipOptions | None = None, *, output: str | None = None
) -> ClipResult:
    """:func:`clip_to_cog` that never raises: every failure comes back as a failed record (typed by
    :func:`sceneclip.errors.classify`; an unforeseen one as a transient ``UnexpectedError``).

    With ``output`` the COG is saved there (atomically) and only on success — written in ``tmpdir`` and
    renamed into place, never held in memory; otherwise the caller gets the :class:`ClipOutput`.
    """
    started = time.perf_counter()
    try:
        result = clip_to_cog(source, boundary, options, cog_on_disk=bool(output))
    except Exception as exc:  # anything untyped is classified (UnexpectedError when nothing fits), never raw
        err = classify(exc, what=f"clipping {redact(source)}")
        rec = getattr(err, "record", None) or failed_record(source, boundary, err, started=started)
        if output:
            rec = replace(rec, output=None)
        return ClipResult(record=rec, output=None)
    if output:
        try:
            result.output.save(output)
        finally:
            result.output.close()
        result = ClipResult(record=replace(result.record, output=output), output=None, plan=result.plan)
    return result
