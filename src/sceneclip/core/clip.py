"""The clip, orchestration only: open → plan (compute) → execute (apply) → COG → verify.

:func:`clip_to_cog` chains the steps of :mod:`~sceneclip.core.plan`, :mod:`~sceneclip.core.execute`,
:mod:`~sceneclip.core.cog` and :mod:`~sceneclip.core.verify`; :func:`run_clip` also turns any failure into a
failed :class:`~sceneclip.core.records.VerificationRecord`, which is what the CLI and batch call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
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
from sceneclip.core.plan import GRID_CONFLICT, ClipOptions, ClipPlan, RasterInfo, plan_clip
from sceneclip.core.limits import refuse_unsupported
from sceneclip.core.records import VerificationRecord, failed_record
from sceneclip.core.rioenv import reuse_environ_sessions
from sceneclip.core.source import open_source
from sceneclip.core.verify import verify_output
from sceneclip.core.mosaic import mosaic_reader, plan_mosaic
from sceneclip.core.stack import (
    StackInput,
    StackMeta,
    StackSource,
    band_labels,
    entered,
    finest,
    plan_stack,
    stack_reader,
)
from sceneclip.core.warp import execute_warp, fill_grid
from sceneclip.core.warp_plan import WarpPlan, choose_grid, plan_warp
from sceneclip.errors import InvalidOptionsError, NoOverlapError, VerificationError, classify, redact


@dataclass
class ClipResult:
    """The outcome of one clip: the verification record, the COG (None once saved or on failure) and the plan."""
    record: VerificationRecord
    output: ClipOutput | None
    plan: ClipPlan | WarpPlan | None = None


def plan_for_dataset(src: Any, boundary: Boundary, options: ClipOptions, *, name: str) -> tuple[RasterInfo, ClipPlan]:
    """The compute step for an open dataset: its grid, the boundary in its CRS, the plan. Reads no pixels.

    This plans on the source's own grid; :func:`plan_any` also plans onto a target grid.
    """
    refuse_unsupported(src, name)
    info = RasterInfo.from_dataset(src, name=name)
    if needs_warp(info, boundary, options):
        raise InvalidOptionsError(f"{name}: a target grid (dst_crs/resolution or the region's grid) and src_nodata "
                                  "need a warped clip: use run_clip / clip_to_cog, which write a COG")
    return info, _plan_on_source_grid(info, boundary, options, name)


def needs_warp(info: RasterInfo, boundary: Boundary, options: ClipOptions) -> bool:
    """A target grid (the region's or the options'), or declared nodata: the warper's job. A source without
    a CRS never warps (the source-grid planner says why it cannot be clipped)."""
    return info.crs is not None and (boundary.grid is not None or options.warps or options.src_nodata is not None)


def _plan_on_source_grid(info: RasterInfo, boundary: Boundary, options: ClipOptions, name: str) -> ClipPlan:
    try:
        shapes = to_raster_crs(boundary, info.crs, info.bounds, raster_name=name)
        pixel = min(abs(info.transform.a), abs(info.transform.e))
        shapes = simplify_for_grid(shapes, info.bounds, pixel, fraction=options.simplify_fraction,
                                   above=options.simplify_above)
        check_vertices(vertex_count(shapes), name, options.limits)
        return plan_clip(info, shapes, options)
    except NoOverlapError:
        raise no_overlap_error(boundary, name) from None


def plan_any(src: Any, boundary: Boundary, options: ClipOptions, *, name: str) -> tuple[RasterInfo, ClipPlan | WarpPlan]:
    """The plan for ``src``: onto the region's or the options' target grid when there is one (or onto its own
    grid through the warper, for declared nodata), else on the source's own grid. Reads no pixels."""
    refuse_unsupported(src, name)
    info = RasterInfo.from_dataset(src, name=name)
    if not needs_warp(info, boundary, options):
        return info, _plan_on_source_grid(info, boundary, options, name)
    grid = choose_grid(info, options, boundary.grid)
    try:
        return info, plan_warp(info, boundary, options, grid)  # type: ignore[arg-type]
    except NoOverlapError:
        raise no_overlap_error(boundary, name) from None


def execute_any(src: Any, plan: ClipPlan | WarpPlan, dst_path: str, options: ClipOptions,
                deadline: Deadline | None) -> ExecutionStats:
    """The apply step matching the plan: warp onto a target grid, or stream the source's own grid."""
    run = execute_warp if isinstance(plan, WarpPlan) else execute_plan
    return run(src, plan, dst_path, samples_per_chunk=options.samples_per_chunk, deadline=deadline)


def clip_to_cog(
    source: str | Sequence[str], boundary: Boundary, options: ClipOptions | None = None, *, name: str | None = None,
    deadline: Deadline | None = None, cog_on_disk: bool = False, names: Sequence[str] | None = None,
    open_env: Callable[[int], AbstractContextManager[Any]] | None = None,
) -> ClipResult:
    """Clip ``source`` (path, /vsis3/ or s3:// URI; or several: a mosaic) to ``boundary``; write and verify a COG.

    Raises a SceneclipError subclass for bad input (permanent) or a fault that may pass (transient), and
    VerificationError when the written output fails a check. On success the COG is in ``result.output``
    (in memory, or spilled to ``options.tmpdir`` for large windows); the caller saves or uploads it.
    ``name`` is how the source appears in records and messages (e.g. s3://bucket/key instead of a
    presigned URL); it defaults to ``source``. With a ``deadline`` the clip is abandoned between steps and
    between chunks with a transient DeadlineExceeded once its budget is spent (nothing partial is kept).
    Several sources are merged by :mod:`~sceneclip.core.mosaic` (the first valid pixel wins); ``names`` are
    theirs (default: the sources, redacted), and ``open_env(i)``, when given, is a context (e.g. a
    ``rasterio.Env``) source ``i`` is opened in: GDAL keeps an open file's HTTP headers, region and payer, so
    each source can be pinned to its own ETag and read as its own bucket requires.
    ``cog_on_disk`` writes the COG to ``tmpdir`` whatever its size: for a caller that saves it to a local
    file anyway (the spilled file is renamed into place), holding it in memory first only costs RAM.
    """
    reuse_environ_sessions()  # rasterise per chunk without a boto3 Session per call (see core/rioenv.py)
    options = options or ClipOptions()
    if not isinstance(source, str):
        if len(source) == 1:
            with open_env(0) if open_env is not None else nullcontext():
                return clip_to_cog(source[0], boundary, options, name=names[0] if names else name, deadline=deadline,
                                   cog_on_disk=cog_on_disk)
        return _clip_mosaic(list(source), boundary, options, deadline, cog_on_disk, names=names, open_env=open_env)
    name = name or redact(source)
    started = time.perf_counter()
    with rasterio.Env(**_read_env(options)), open_source(source, name, drivers=options.allowed_drivers,
                                                         limits=options.limits) as src:
        info, plan = plan_any(src, boundary, options, name=name)
        return _write_and_verify(plan, info, boundary, options, name, started, deadline,
                                 lambda path: execute_any(src, plan, path, options, deadline), cog_on_disk)


def _clip_mosaic(sources: list[str], boundary: Boundary, options: ClipOptions, deadline: Deadline | None,
                 cog_on_disk: bool = False, *, names: Sequence[str] | None = None,
                 open_env: Callable[[int], AbstractContextManager[Any]] | None = None) -> ClipResult:
    """Several sources onto one grid (:mod:`~sceneclip.core.mosaic`), then the same COG writing and checks."""
    if options.invert or not options.crop or options.pad:
        raise InvalidOptionsError(GRID_CONFLICT)
    started = time.perf_counter()
    names = list(names) if names is not None else [redact(s) for s in sources]
    with rasterio.Env(**_read_env(options)), ExitStack() as stack:
        opened = []
        for i, (source, label) in enumerate(zip(sources, names, strict=True)):
            with open_env(i) if open_env is not None else nullcontext():
                src = stack.enter_context(open_source(source, label, drivers=options.allowed_drivers,
                                                      limits=options.limits))
            refuse_unsupported(src, label)
            opened.append((src, RasterInfo.from_dataset(src, name=label)))
        plan, parts = plan_mosaic(opened, boundary, options, boundary.grid)
        what = " + ".join(names)
        result = _write_and_verify(
            plan, opened[0][1], boundary, options, what, started, deadline,
            lambda path: fill_grid(plan, path, mosaic_reader(parts, plan), meta=parts[0].src, name=what,
                                   samples_per_chunk=options.samples_per_chunk, deadline=deadline),
            cog_on_disk,
        )
    result.record.checks["sources"] = names
    result.record.checks["sources_used"] = [p.info.name for p in parts]
    result.record = replace(result.record, source=what)
    return result


def clip_stack_to_cog(inputs: Sequence[StackInput], boundary: Boundary, options: ClipOptions | None = None, *,
                      name: str | None = None, deadline: Deadline | None = None,
                      cog_on_disk: bool = False) -> ClipResult:
    """Clip several sources (e.g. a STAC Item's band assets) into one multi-band COG on one grid
    (:mod:`~sceneclip.core.stack`), written and verified as any clip. ``name`` is the record's source (default:
    the inputs' names joined by ``+``); raises as :func:`clip_to_cog`."""
    reuse_environ_sessions()
    options = options or ClipOptions()
    if options.invert or not options.crop or options.pad:
        raise InvalidOptionsError(GRID_CONFLICT)
    if not inputs:
        raise InvalidOptionsError("a stack needs at least one source")
    started = time.perf_counter()
    what = name or " + ".join(i.name for i in inputs)
    with rasterio.Env(**_read_env(options)), ExitStack() as stack:
        sources = []
        for i in inputs:
            with entered(i):
                src = stack.enter_context(open_source(i.path, i.name, drivers=options.allowed_drivers,
                                                      limits=options.limits))
            refuse_unsupported(src, i.name)
            sources.append(StackSource(src, RasterInfo.from_dataset(src, name=i.name), i.label, i.context,
                                       i.categorical))
        plan, parts = plan_stack(sources, boundary, options, boundary.grid)
        info = replace(finest([s.info for s in sources]), name=what)
        result = _write_and_verify(
            plan, info, boundary, options, what, started, deadline,
            lambda path: fill_grid(plan, path, stack_reader(parts, plan), meta=StackMeta(sources), name=what,
                                   samples_per_chunk=options.samples_per_chunk, deadline=deadline),
            cog_on_disk,
        )
    result.record.checks["sources"] = [i.name for i in inputs]
    result.record.checks["bands"] = band_labels(sources)
    result.record.checks["source_bands"] = [s.info.count for s in sources]
    return result


def _read_env(options: ClipOptions) -> dict[str, Any]:
    env: dict[str, Any] = {"GDAL_CACHEMAX": options.gdal_cache_mb, **SOURCE_READ_OPTIONS}
    if options.tmpdir:
        env["CPL_TMPDIR"] = options.tmpdir
    return env


def _write_and_verify(
    plan: ClipPlan | WarpPlan, info: RasterInfo, boundary: Boundary, options: ClipOptions, name: str, started: float,
    deadline: Deadline | None, execute: Callable[[str], ExecutionStats], cog_on_disk: bool = False,
) -> ClipResult:
    """Execute into the intermediate, write the COG, verify it; nothing partial survives a failure."""
    workspace = Workspace(plan, options, cog_on_disk=cog_on_disk)
    output: ClipOutput | None = None
    try:
        stats = execute(workspace.intermediate)
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
    source: str | Sequence[str], boundary: Boundary, options: ClipOptions | None = None, *, output: str | None = None
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
        label = source if isinstance(source, str) else " + ".join(source)
        err = classify(exc, what=f"clipping {redact(label)}")
        rec = getattr(err, "record", None) or failed_record(label, boundary, err, started=started)
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
