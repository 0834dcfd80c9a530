"""The apply step: stream a plan's window chunk by chunk, apply the one pixel-validity rule, write a tiled GeoTIFF.

Memory stays at a few chunks whatever the window size. The keep rule is exactly ``rasterio.mask``'s
(``geometry_mask`` with the chunk's transform); the source's own validity (nodata, alpha, mask band) is
derived from the pixels already read, so no byte range is fetched twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
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


def iter_chunks(src: Any, plan: ClipPlan) -> Iterator[tuple[Window, np.ma.MaskedArray, np.ndarray]]:
    """Yield (output chunk window, source data masked by the source's own validity, keep mask)."""
    for chunk in plan.chunks:
        swin = plan.source_window(chunk)
        try:
            raw = src.read(window=swin)
            data = np.ma.MaskedArray(raw, mask=source_invalid(src, raw, swin))
        except RasterioError as exc:
            raise read_error(exc, src.name) from exc
        # Exactly rasterio.mask's rule (geometry_mask with the window's transform), evaluated per chunk.
        outside = geometry_mask(
            plan.shapes,
            out_shape=(int(chunk.height), int(chunk.width)),
            transform=window_transform(swin, src.transform),
            all_touched=plan.all_touched,
            invert=plan.invert,
        )
        yield chunk, data, ~outside


def execute_plan(src: Any, plan: ClipPlan, dst_path: str, *, samples_per_chunk: int = 16, seed: int = 0) -> ExecutionStats:
    """Stream the window chunk by chunk into a tiled GeoTIFF at ``dst_path``; return counts and samples.

    Memory stays at a few chunks (``chunk_size``² × bands × itemsize each) whatever the window size.
    """
    stats = ExecutionStats()
    rng = np.random.default_rng(seed)
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
    fill = np.array(0 if plan.nodata is None else plan.nodata).astype(plan.dtype)
    nan_nodata = plan.nodata is not None and math.isnan(plan.nodata)
    with rasterio.open(dst_path, "w", **profile) as dst:
        _copy_metadata(src, dst)
        for chunk, data, keep in iter_chunks(src, plan):
            valid = keep[np.newaxis, :, :] & ~np.ma.getmaskarray(data)
            if nan_nodata:
                valid &= ~np.isnan(data.data)
            out = np.where(valid, data.data, fill).astype(plan.dtype, copy=False)
            dst.write(out, window=chunk)
            if plan.use_mask:
                dst.write_mask(np.where(valid.all(axis=0), 255, 0).astype("uint8"), window=chunk)
            elif plan.nodata is not None and not nan_nodata:
                stats.nodata_collisions += int(np.count_nonzero(valid & (data.data == fill)))
            stats.inside_pixels += int(np.count_nonzero(keep))
            stats.valid_pixels += int(np.count_nonzero(valid.all(axis=0) if plan.use_mask else valid[0]))
            stats.chunks += 1
            _take_samples(stats, chunk, data.data, keep & ~np.ma.getmaskarray(data)[0], rng, samples_per_chunk)
    return stats


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
