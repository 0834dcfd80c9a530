"""The apply step: stream a plan's window chunk by chunk, apply the one pixel-validity rule, write a tiled GeoTIFF.

Memory stays at a few chunks whatever the window size. The keep rule is exactly ``rasterio.mask``'s
(``geometry_mask`` with the chunk's transform); the source's own validity (nodata, alpha, mask band) is
derived from the pixels already read, so no byte range is fetched twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.features import geometry_mask
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from sceneclip.core.cog import INTERMEDIATE_OPTIONS
from sceneclip.core.deadline import Deadline
from sceneclip.core.geometry import clip_to_rect, vertex_count
from sceneclip.core.plan import ClipPlan
from sceneclip.core.source import read_error


@dataclass
class PixelSample:
    """One output pixel whose source values were captured while streaming, checked again after writing."""

    row: int
    col: int
    keep: bool  # inside the boundary (outside when inverted) and valid in the source
    values: tuple[float, ...]  # source values, all bands


@dataclass
class ExecutionStats:
    """What the executor saw while streaming: the counts verification checks the written output against, and pixel samples."""
    inside_pixels: int = 0  # pixels selected by the boundary rule (band-independent)
    valid_pixels: int = 0  # selected and valid in the source, band 1 — what the output mask must show
    nodata_collisions: int = 0  # valid pixels equal to an explicitly chosen nodata value
    samples: list[PixelSample] = field(default_factory=list)
    chunks: int = 0
    mask_vertices: int = 0  # vertices handed to the rasteriser, all chunks (the boundary clipped per chunk)


def _copy_metadata(src: Any, dst: Any) -> None:
    """Carry over everything that describes the values: tags, descriptions, scales/offsets, units, colours."""
    dst.update_tags(**src.tags())
    dst.colorinterp = src.colorinterp
    for b in range(1, src.count + 1):
        band_tags = src.tags(b)
        if band_tags:
            dst.update_tags(b, **band_tags)
        if src.descriptions[b - 1]:
            dst.set_band_description(b, src.descriptions[b - 1])
        if src.units[b - 1]:
            dst.set_band_unit(b, src.units[b - 1])
    if any(s != 1.0 for s in src.scales) or any(o != 0.0 for o in src.offsets):
        dst.scales = src.scales
        dst.offsets = src.offsets
    try:
        cmap = src.colormap(1)
    except ValueError:
        cmap = None
    if cmap:
        dst.write_colormap(1, cmap)


def source_invalid(src: Any, data: np.ndarray, window: Window) -> np.ndarray:
    """Per-band invalid mask with GDAL's semantics, computed from ``data`` already read.

    ``src.read(masked=True)`` asks GDAL for each band's mask separately, and for nodata masks GDAL re-reads
    the pixels: over /vsis3/ that fetched the same byte ranges once per band plus once for the data (4× for
    an RGB scene). Nodata and alpha masks are therefore derived here; only a real mask band is read.
    """
    invalid = np.zeros(data.shape, dtype=bool)
    dataset_mask: np.ndarray | None = None
    alpha = [i for i, ci in enumerate(src.colorinterp) if ci == rasterio.enums.ColorInterp.alpha]
    for i, flags in enumerate(src.mask_flag_enums):
        if MaskFlags.all_valid in flags:
            continue
        if MaskFlags.nodata in flags:
            nd = src.nodatavals[i]
            if isinstance(nd, float) and math.isnan(nd):
                invalid[i] = np.isnan(data[i])
            else:
                invalid[i] = data[i] == np.array(nd).astype(data.dtype)
        elif MaskFlags.alpha in flags and alpha:
            invalid[i] = data[alpha[0]] == 0
        else:
            if dataset_mask is None:
                dataset_mask = src.read_masks(i + 1, window=window) == 0
            invalid[i] = dataset_mask
    return invalid


def chunk_outside(plan: ClipPlan, swin: Window, src_transform: Any) -> tuple[np.ndarray, int]:
    """(mask True where the chunk's pixels are dropped, vertices rasterised) — rasterio.mask's rule.

    The boundary is first clipped to the chunk (two pixels wider on each side), so the rasteriser walks only
    the edges that can matter here: its cost follows the chunk's share of the boundary, not the whole.
    """
    transform = window_transform(swin, src_transform)
    shape = (int(swin.height), int(swin.width))
    if not plan.clip_per_chunk:
        outside = geometry_mask(plan.shapes, out_shape=shape, transform=transform, all_touched=plan.all_touched,
                                invert=plan.invert)
        return outside, vertex_count(plan.shapes)
    x0, y1 = transform @ (-2, -2)
    x1, y0 = transform @ (shape[1] + 2, shape[0] + 2)
    shapes = clip_to_rect(plan.shapes, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    if not shapes:  # no boundary in this chunk: all outside, or all kept when inverted
        return np.full(shape, not plan.invert), 0
    outside = geometry_mask(shapes, out_shape=shape, transform=transform, all_touched=plan.all_touched,
                            invert=plan.invert)
    return outside, vertex_count(shapes)


def iter_chunks(
    src: Any, plan: ClipPlan, stats: ExecutionStats | None = None, deadline: Deadline | None = None
) -> Iterator[tuple[Window, np.ma.MaskedArray, np.ndarray]]:
    """Yield (output chunk window, source data masked by the source's own validity, keep mask).

    With a ``deadline`` each chunk read starts only while time is left (else DeadlineExceeded), and a read
    that fails after the deadline passed is reported as DeadlineExceeded (GDAL's capped timeout fired).
    """
    total = len(plan.chunks)
    for n, chunk in enumerate(plan.chunks, start=1):
        stage = f"before reading chunk {n}/{total} of {src.name}"
        if deadline is not None:
            deadline.check(stage)
        swin = plan.source_window(chunk)
        try:
            raw = src.read(window=swin)
            data = np.ma.MaskedArray(raw, mask=source_invalid(src, raw, swin))
        except RasterioError as exc:
            if deadline is not None and deadline.expired():
                raise deadline.exceeded(f"while reading chunk {n}/{total} of {src.name}") from exc
            raise read_error(exc, src.name) from exc
        outside, vertices = chunk_outside(plan, swin, src.transform)
        if stats is not None:
            stats.mask_vertices += vertices
        yield chunk, data, ~outside


def execute_plan(
    src: Any, plan: ClipPlan, dst_path: str, *, samples_per_chunk: int = 16, seed: int = 0,
    deadline: Deadline | None = None,
) -> ExecutionStats:
    """Stream the window chunk by chunk into a tiled GeoTIFF at ``dst_path``; return counts and samples.

    Memory stays at a few chunks (``chunk_size``² × bands × itemsize each) whatever the window size. With a
    ``deadline`` the loop stops between chunks once the budget is spent (:class:`~sceneclip.errors.DeadlineExceeded`).

    Reading and writing overlap: this thread reads (and decodes) chunk n+1 while one writer thread masks,
    counts and compresses chunk n. GDAL releases the GIL in both, so two cores share the work. The source
    stays on this thread only, where its ``rasterio.Env`` lives (GDAL's configuration — the HTTP headers
    that pin the read, the endpoint — is thread-local); the writer touches nothing but the local output.
    """
    stats = ExecutionStats()
    writer = _ChunkWriter(plan, stats, np.random.default_rng(seed), samples_per_chunk)
    profile = dict(
        INTERMEDIATE_OPTIONS,
        width=plan.width,
        height=plan.height,
        count=plan.count,
        dtype=plan.dtype,
        crs=src.crs,
        transform=plan.transform,
        nodata=plan.nodata,
    )
    with rasterio.open(dst_path, "w", **profile) as dst, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="sceneclip-write") as pool:
        _copy_metadata(src, dst)
        pending: Future[None] | None = None
        try:
            for chunk, data, keep in iter_chunks(src, plan, stats, deadline):
                if pending is not None:  # at most one chunk waits: memory stays at two chunks
                    pending.result()
                pending = pool.submit(writer.write, dst, chunk, data, keep)
        finally:
            if pending is not None:
                pending.result()
    return stats


class _ChunkWriter:
    """The write half of :func:`execute_plan`: one chunk's validity, output pixels, mask, counts and samples.

    Chunks are written one at a time and in order, so the counts and the random samples are the same as
    when everything ran on one thread.
    """

    def __init__(self, plan: ClipPlan, stats: ExecutionStats, rng: np.random.Generator, samples: int) -> None:
        self.plan, self.stats, self.rng, self.samples = plan, stats, rng, samples
        self.fill = np.array(0 if plan.nodata is None else plan.nodata).astype(plan.dtype)
        self.nan_nodata = plan.nodata is not None and math.isnan(plan.nodata)

    def write(self, dst: Any, chunk: Window, data: np.ma.MaskedArray, keep: np.ndarray) -> None:
        """Valid = kept by the boundary and valid in the source; write pixels (fill elsewhere) and mask."""
        plan, stats = self.plan, self.stats
        invalid = np.ma.getmaskarray(data)
        valid = keep[np.newaxis, :, :] & ~invalid
        if self.nan_nodata:
            valid &= ~np.isnan(data.data)
        out = np.where(valid, data.data, self.fill).astype(plan.dtype, copy=False)
        dst.write(out, window=chunk)
        if plan.use_mask:
            dst.write_mask(np.where(valid.all(axis=0), 255, 0).astype("uint8"), window=chunk)
        elif plan.nodata is not None and not self.nan_nodata:
            stats.nodata_collisions += int(np.count_nonzero(valid & (data.data == self.fill)))
        stats.inside_pixels += int(np.count_nonzero(keep))
        stats.valid_pixels += int(np.count_nonzero(valid.all(axis=0) if plan.use_mask else valid[0]))
        stats.chunks += 1
        _take_samples(stats, chunk, data.data, keep & ~invalid[0], self.rng, self.samples)


def _take_samples(
    stats: ExecutionStats, chunk: Window, values: np.ndarray, keep: np.ndarray, rng: np.random.Generator, n: int
) -> None:
    """Half the samples among kept pixels (so tiny boundaries are still checked), half anywhere."""
    h, w = keep.shape
    kept_r, kept_c = np.nonzero(keep)
    picks: list[tuple[int, int]] = []
    if len(kept_r):
        idx = rng.choice(len(kept_r), size=min(n // 2, len(kept_r)), replace=False)
        picks += [(int(kept_r[i]), int(kept_c[i])) for i in idx]
    picks += [(int(r), int(c)) for r, c in zip(rng.integers(0, h, n // 2), rng.integers(0, w, n // 2), strict=True)]
    for r, c in picks:
        stats.samples.append(
            PixelSample(
                row=int(chunk.row_off) + r,
                col=int(chunk.col_off) + c,
                keep=bool(keep[r, c]),
                values=tuple(values[:, r, c].tolist()),
            )
        )
