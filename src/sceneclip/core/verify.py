"""Re-open the written COG and prove it is what was asked for.

Every check reads the *output file* back through GDAL and compares it with what the executor saw in the
*source* while streaming (grid, counts, sampled pixel values), so a bug in the writing path cannot hide.
"""

from __future__ import annotations

import hashlib
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from sceneclip.core.files import file_sha256
from sceneclip.core.geometry import Boundary, bounds_close
from sceneclip.core.records import VerificationRecord, boundary_ref

if TYPE_CHECKING:
    from sceneclip.core.output import ClipOutput
    from sceneclip.core.plan import ClipPlan, RasterInfo
    from sceneclip.core.execute import ExecutionStats, PixelSample

GRID_TOLERANCE = 1e-6  # in pixels: offsets must be whole pixels up to float noise


def sha256_of(output: ClipOutput) -> str:
    """sha256 (hex) of the written COG, in memory or spilled."""
    if output.memfile is not None:
        return hashlib.sha256(output.memfile.getbuffer()).hexdigest()
    return file_sha256(str(output.path)) or ""


def _grid_aligned(out_t: Any, src_t: Any) -> bool:
    if not all(math.isclose(getattr(out_t, k), getattr(src_t, k), rel_tol=1e-12, abs_tol=1e-12) for k in "abde"):
        return False
    col, row = ~src_t @ (out_t.c, out_t.f)
    return abs(col - round(col)) < GRID_TOLERANCE and abs(row - round(row)) < GRID_TOLERANCE


def _count_valid(ds: Any) -> int:
    """Valid pixels of band 1 as GDAL reports them (nodata, NaN nodata or internal mask), block by block."""
    total = 0
    for _, win in ds.block_windows(1):
        total += int(np.count_nonzero(ds.read_masks(1, window=win)))
    return total


def _same(a: float, b: float) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _samples_by_block_row(ds: Any, stats: ExecutionStats) -> dict[int, list[PixelSample]]:
    """The samples grouped by the row of output blocks they fall in, rows in file order."""
    bh = ds.block_shapes[0][0]
    groups: dict[int, list[PixelSample]] = {}
    for s in stats.samples:
        groups.setdefault(s.row // bh, []).append(s)
    return dict(sorted(groups.items()))


def _check_samples(ds: Any, stats: ExecutionStats) -> tuple[int, list[str]]:
    """Sampled pixels: kept ones equal the source on every band, the others are masked in band 1.

    Each row of output blocks holding samples is read once, from its first to its last block with a sample:
    reading the samples one pixel at a time decoded a whole 512×512 tile per sample as soon as the tiles
    outgrew GDAL's block cache (5 s for the 1,024 samples of a 250 MiB clip), so the decode work is bounded
    by the file's size; and a read spanning several blocks lets GDAL decode them on every core (the
    dataset is opened with ``NUM_THREADS``), where one block at a time decoded on one.
    """
    problems: list[str] = []
    bh, bw = ds.block_shapes[0]
    for brow, samples in _samples_by_block_row(ds, stats).items():
        r0, c0 = brow * bh, min(s.col for s in samples) // bw * bw
        c1 = min(ds.width, (max(s.col for s in samples) // bw + 1) * bw)
        strip = ds.read(window=Window(c0, r0, c1 - c0, min(bh, ds.height - r0)), masked=True)
        strip_mask = np.ma.getmaskarray(strip)
        for s in samples:
            r, c = s.row - r0, s.col - c0
            raw = strip.data[:, r, c].tolist()
            masked = bool(strip_mask[0, r, c])
            if s.keep:
                if masked or not all(_same(float(a), float(b)) for a, b in zip(raw, s.values, strict=True)):
                    problems.append(f"pixel (row {s.row}, col {s.col}) is {raw}, source is {list(s.values)}")
            elif not masked:
                problems.append(f"pixel (row {s.row}, col {s.col}) should be nodata/masked but reads {raw}")
            if len(problems) >= 5:
                return len(stats.samples), problems
    return len(stats.samples), problems


class _Checks:
    """Named checks: each is recorded (True/False) and a failed one keeps its reason for the record's error."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}
        self.failures: list[str] = []

    def __call__(self, name: str, ok: bool, why: str) -> None:
        self.results[name] = bool(ok)
        if not ok:
            self.failures.append(f"{name}: {why}")


def _check_grid(ds: Any, plan: ClipPlan, lattice: Lattice, check: _Checks) -> None:
    """CRS, nodata/mask, grid alignment, shape and extent of the written output."""
    check("crs", ds.crs == lattice.crs, f"output CRS {ds.crs} differs from the {lattice.what}'s {lattice.crs}")
    has_mask = bool({MaskFlags.per_dataset, MaskFlags.alpha} & set(ds.mask_flag_enums[0]))
    check("nodata_defined", ds.nodata is not None or has_mask, "neither nodata nor an internal mask is set")
    check("grid_aligned", _grid_aligned(ds.transform, lattice.transform),
          f"transform {tuple(ds.transform)[:6]} is off the {lattice.what}")
    if lattice.target_aligned:
        (ax, ay), t = lattice.anchor, ds.transform
        ok = all(abs(v / r - round(v / r)) < GRID_TOLERANCE for v, r in ((t.c - ax, t.a), (t.f - ay, -t.e)))
        check("target_aligned", ok, f"origin ({t.c}, {t.f}) is not a whole number of pixels from the grid's "
                                    f"anchor ({ax}, {ay})")
    check(
        "shape",
        (ds.width, ds.height, ds.count, ds.dtypes[0]) == (plan.width, plan.height, plan.count, plan.dtype),
        f"{ds.width}x{ds.height}x{ds.count} {ds.dtypes[0]} != planned {plan.width}x{plan.height}x{plan.count} {plan.dtype}",
    )
    px = max(abs(lattice.transform.a), abs(lattice.transform.e))
    if plan.crop:
        # Snapping moves an edge outward by less than a pixel; pad adds half a pixel more.
        slack = 1.5 if plan.pad else 1.0
        check(
            "extent_within_boundary",
            bounds_close(ds.bounds, plan.overlap_bounds, px * (slack + 1e-9)),
            f"output bounds {tuple(ds.bounds)} exceed the boundary's bbox {plan.overlap_bounds} by more than {slack:g} pixel",
        )
    else:  # crop=False / invert (source grid only): the extent is the raster's by definition
        check("extent_within_boundary", bounds_close(ds.bounds, lattice.bounds, px * 1e-6), "output extends past the raster")


def _check_content(ds: Any, plan: ClipPlan, stats: ExecutionStats, check: _Checks) -> int:
    """Valid-pixel count, nodata collisions and the sampled source pixels. Returns the output's valid pixels."""
    out_valid = _count_valid(ds)
    check("valid_pixels", out_valid == stats.valid_pixels, f"output has {out_valid} valid pixels, expected {stats.valid_pixels}")
    check(
        "nodata_collision",
        stats.nodata_collisions == 0,
        f"{stats.nodata_collisions} real pixels equal the nodata value {plan.nodata}; choose another --nodata",
    )
    n_samples, problems = _check_samples(ds, stats)
    check.results["samples_checked"] = n_samples
    check("pixels_match_source", not problems, "; ".join(problems))
    return out_valid


@dataclass(frozen=True)
class Lattice:
    """The pixel lattice an output must lie on: the source's grid, or the target grid it was warped onto."""

    crs: Any
    transform: Any
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # the raster's (source grid only)
    target_aligned: bool = False
    anchor: tuple[float, float] = (0.0, 0.0)  # a lattice point: (0, 0) for target-aligned pixels
    what: str = "source grid"

    @classmethod
    def for_plan(cls, plan: Any, info: RasterInfo) -> Lattice:
        """A warped plan (it has a ``grid``) is checked against its target grid, any other against the source's."""
        grid = getattr(plan, "grid", None)
        if grid is None:
            return cls(info.crs, info.transform, info.bounds)
        return cls(grid.crs, plan.transform, target_aligned=grid.target_aligned, anchor=grid.anchor, what="target grid")


def verify_output(
    output: ClipOutput,
    plan: ClipPlan,
    info: RasterInfo,
    stats: ExecutionStats,
    boundary: Boundary,
    *,
    started: float,
) -> VerificationRecord:
    """Run every check on the written output; the record's status is ``ok`` only when all hold.

    The checks re-open what was written (not what was meant to be written): grid and CRS, nodata or mask,
    extent, valid-pixel count against the executor's, pixels sampled while streaming, COG layout. On the
    source grid the samples are source pixels (values must be identical); on a target grid they are what
    GDAL's warper produced, so they prove the writing path, and the lattice check proves the grid (the
    warper's values themselves are compared with gdalwarp's in the tests, not at run time).
    """
    from sceneclip.core.cogcheck import validate_cog

    lattice = Lattice.for_plan(plan, info)
    check = _Checks()
    # The hash reads the bytes while GDAL decodes blocks for the checks: hashlib releases the GIL on large
    # buffers, so on two cores it costs no wall time.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sceneclip-sha256") as pool:
        digest = pool.submit(sha256_of, output)
        with output.open(num_threads="ALL_CPUS") as ds:
            _check_grid(ds, plan, lattice, check)
            out_valid = _check_content(ds, plan, stats, check)
            transform, bounds, nodata = list(ds.transform)[:6], list(ds.bounds), ds.nodata
        is_cog, errors, warnings = validate_cog(output.name)
        sha256 = digest.result()
    check("cog_valid", is_cog and not errors, "; ".join(errors) or "not a valid COG")
    if warnings:
        check.results["cog_warnings"] = list(warnings)
    failures = check.failures
    return VerificationRecord(
        source=info.name,
        boundary=boundary_ref(boundary),
        status="ok" if not failures else "failed",
        output=None,
        crs=lattice.crs.to_string() if lattice.crs else None,
        transform=transform,
        width=plan.width,
        height=plan.height,
        count=plan.count,
        dtype=plan.dtype,
        nodata=nodata,
        mask="internal" if plan.use_mask else ("alpha" if plan.nodata is None else None),
        bounds=bounds,
        valid_pixels=out_valid,
        valid_fraction=round(out_valid / (plan.width * plan.height), 6) if plan.width * plan.height else 0.0,
        sha256=sha256,
        size_bytes=output.size(),
        checks=check.results,
        error_type=None if not failures else "VerificationError",
        error=None if not failures else "verification failed: " + " | ".join(failures),
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
