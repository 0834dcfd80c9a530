"""The clip: a pure planning step, then an executor that streams blocks into a COG.

Following ``rasterio.mask``'s compute/apply split:

* :func:`plan_clip` turns (raster grid, boundary in raster CRS, options) into a :class:`ClipPlan` — window,
  transform, nodata policy, chunk grid — without touching pixels;
* :func:`execute_plan` reads the window chunk by chunk, applies rasterio's own mask rule per chunk, and writes
  a tiled intermediate GeoTIFF; :func:`write_cog` converts it with GDAL's COG driver.

:func:`clip_to_cog` chains the steps and verification; :func:`run_clip` also turns any failure into a failed
:class:`~sceneclip.records.VerificationRecord`, which is what the CLI and the Lambda handler call.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.features import geometry_mask, geometry_window
from rasterio.io import MemoryFile
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from . import __version__
from .cog import INTERMEDIATE_OPTIONS, cog_options, default_resampling
from .errors import (
    InvalidOptionsError,
    NoOverlapError,
    RasterReadError,
    SceneclipError,
    SourceUnavailableError,
    VerificationError,
    looks_transient,
    redact,
)
from .geometry import Boundary, no_overlap_error, overlap_with_raster, to_raster_crs
from .records import VerificationRecord, failed_record

MIB = 1024 * 1024


@dataclass(frozen=True)
class ClipOptions:
    """How to clip. Defaults follow ``rasterio.mask.mask(crop=True)``.

    all_touched: keep every pixel the boundary touches, not only those whose centre is inside.
    invert: keep the outside and blank the inside (exclusion zones); implies the raster's full extent.
    crop: False keeps the full raster extent and only masks.
    pad: widen the crop window by half a pixel on each side, as rasterio does, for thin polygons.
    nodata: output nodata value; default: the source's, NaN for floats, an internal mask for integers.
    profile / resampling: COG compression profile and overview resampling (None: AVERAGE, or NEAREST for
    paletted data).
    chunk_size: pixels per side of the chunks streamed from source to output (a multiple of 512; rounded to
    whole source tiles, with chunk edges on the source's tile grid so no tile is fetched twice).
    memory_limit: above this uncompressed window size the intermediate and the COG go to ``tmpdir``
    (in memory, peak RSS is about 1.7× the window on top of the interpreter; spilled, it stays flat).
    """

    all_touched: bool = False
    invert: bool = False
    crop: bool = True
    pad: bool = False
    nodata: float | None = None
    profile: str = "deflate"
    resampling: str | None = None
    chunk_size: int = 1024
    memory_limit: int = 256 * MIB
    tmpdir: str | None = None
    samples_per_chunk: int = 16
    gdal_cache_mb: int = 64

    def __post_init__(self) -> None:
        if self.invert and self.crop:
            # rasterio leaves the inverted crop half-defined; we make invert mean "the raster's extent".
            object.__setattr__(self, "crop", False)
        if self.chunk_size <= 0 or self.chunk_size % 512:
            raise InvalidOptionsError(f"chunk_size must be a positive multiple of 512, got {self.chunk_size}")
        if self.pad and not self.crop:
            raise InvalidOptionsError("pad widens the crop window; it has no meaning with crop=False or invert")


@dataclass(frozen=True)
class RasterInfo:
    """What the planner needs to know about a source raster (no open dataset, so plans are testable)."""

    name: str
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    has_colormap: bool = False
    has_alpha: bool = False
    block_shape: tuple[int, int] = (0, 0)  # source (rows, cols) block; (0, 0) = unknown

    @classmethod
    def from_dataset(cls, ds: Any, name: str | None = None) -> RasterInfo:
        dtypes = set(ds.dtypes)
        if len(dtypes) != 1:
            raise RasterReadError(f"{name or ds.name}: bands of different data types {sorted(dtypes)} are not supported")
        try:
            has_cmap = bool(ds.colormap(1))
        except ValueError:
            has_cmap = False
        return cls(
            name=name or ds.name,
            crs=ds.crs,
            transform=ds.transform,
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=ds.dtypes[0],
            nodata=ds.nodata,
            has_colormap=has_cmap,
            has_alpha=MaskFlags.alpha in ds.mask_flag_enums[0],
            block_shape=tuple(ds.block_shapes[0]) if ds.block_shapes else (0, 0),
        )

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (self.width, self.height)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@dataclass(frozen=True)
class ClipPlan:
    """Everything decided before a pixel is read.

    ``window`` is in source pixel coordinates; ``chunks`` tile the output grid; ``shapes`` are in the raster
    CRS and are what the mask is rasterized from; ``overlap_bounds`` is the bbox of boundary ∩ raster.
    """

    window: Window
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    shapes: tuple[BaseGeometry, ...]
    overlap_bounds: tuple[float, float, float, float]
    all_touched: bool
    invert: bool
    crop: bool
    nodata: float | None
    use_mask: bool
    resampling: str
    chunks: tuple[Window, ...]
    pad: bool = False  # the window was widened by half a pixel (rasterio's pad)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (self.width, self.height)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    @property
    def uncompressed_bytes(self) -> int:
        return self.width * self.height * self.count * np.dtype(self.dtype).itemsize

    def source_window(self, chunk: Window) -> Window:
        return Window(self.window.col_off + chunk.col_off, self.window.row_off + chunk.row_off, chunk.width, chunk.height)


class _Grid:
    """The three attributes ``rasterio.features.geometry_window`` reads from a dataset."""

    def __init__(self, info: RasterInfo) -> None:
        self.transform, self.width, self.height = info.transform, info.width, info.height


def choose_nodata(info: RasterInfo, requested: float | None) -> tuple[float | None, bool]:
    """(nodata value, use internal mask). Never a value that can collide with real data.

    Priority: an explicit request; the source's nodata; the source's alpha band (kept, and zeroed outside);
    NaN for floats; an internal mask for integers (any integer value could be real data, and proving one
    absent costs a second pass over the window).
    """
    dt = np.dtype(info.dtype)
    if requested is not None:
        if dt.kind in "iu":
            if math.isnan(requested) or requested != int(requested):
                raise InvalidOptionsError(f"nodata {requested} is not an integer, but the raster is {info.dtype}")
            lim = np.iinfo(dt)
            if not lim.min <= requested <= lim.max:
                raise InvalidOptionsError(
                    f"nodata {requested:g} does not fit {info.dtype} ({lim.min}..{lim.max}); pick a value in range"
                )
        return float(requested), False
    if info.nodata is not None:
        return float(info.nodata), False
    if info.has_alpha:
        return None, False
    if dt.kind == "f":
        return float("nan"), False
    return None, True


def _edges(length: int, offset: int, size: int, block: int, extent: int) -> list[int]:
    """Chunk edges along one axis of the window, at source-block boundaries.

    ``offset`` is the window's start in the source, ``block`` the source's block size on this axis and
    ``extent`` the source's size. Edges fall where ``offset + edge`` is a multiple of the step (``size``
    rounded to whole source blocks), so no source tile is cut by a chunk edge and fetched twice. For striped
    sources (a block spans the whole row) columns need no alignment.
    """
    if block >= extent or block <= 0:
        step = size
        first = size
    else:
        step = max(block, (size // block) * block)
        first = step - (offset % step)
    edges = [0]
    edge = first
    while edge < length:
        edges.append(edge)
        edge += step
    edges.append(length)
    return edges


def chunk_grid(
    width: int, height: int, size: int, *, offset: tuple[int, int] = (0, 0), block: tuple[int, int] = (0, 0),
    source_shape: tuple[int, int] = (0, 0),
) -> tuple[Window, ...]:
    """Chunks tiling the output window, their edges on the *source's* block grid.

    Reading is what costs (bytes over the network); writing a chunk that straddles output blocks only costs
    GDAL a partial-block update in its cache. ``offset`` = (col_off, row_off) of the window in the source,
    ``block`` = source (rows, cols) block shape, ``source_shape`` = source (height, width).
    """
    cols = _edges(width, offset[0], size, block[1], source_shape[1])
    rows = _edges(height, offset[1], size, block[0], source_shape[0])
    return tuple(
        Window(c0, r0, c1 - c0, r1 - r0)
        for r0, r1 in zip(rows[:-1], rows[1:], strict=True)
        for c0, c1 in zip(cols[:-1], cols[1:], strict=True)
    )


def plan_clip(info: RasterInfo, shapes: list[BaseGeometry], options: ClipOptions) -> ClipPlan:
    """Decide window, transform, nodata policy and chunks. Pure: no pixel I/O.

    The window follows ``rasterio.features.geometry_window`` (floor of offsets, ceiling of extents, optional
    half-pixel pad) applied to boundary ∩ raster, so the output grid sits exactly on the source grid.
    Raises NoOverlapError when boundary ∩ raster is empty.
    """
    overlap = overlap_with_raster(shapes, info.bounds)
    if overlap.is_empty:
        raise NoOverlapError(
            f"boundary does not overlap {info.name} (raster bounds {tuple(round(v, 6) for v in info.bounds)} in {info.crs})"
        )
    overlap_bounds = tuple(float(v) for v in overlap.bounds)
    if options.crop:
        pad = 0.5 if options.pad else 0.0
        try:
            window = geometry_window(_Grid(info), [box(*overlap_bounds)], pad_x=pad, pad_y=pad)
        except rasterio.errors.WindowError as exc:
            raise NoOverlapError(f"boundary does not overlap {info.name}: {exc}") from exc
        window = Window(int(window.col_off), int(window.row_off), int(window.width), int(window.height))
        if window.width <= 0 or window.height <= 0:
            raise NoOverlapError(f"boundary only touches the edge of {info.name}; no pixel lies under it")
    else:
        window = Window(0, 0, info.width, info.height)
    nodata, use_mask = choose_nodata(info, options.nodata)
    resampling = options.resampling or default_resampling(info.has_colormap)
    return ClipPlan(
        window=window,
        transform=window_transform(window, info.transform),
        width=int(window.width),
        height=int(window.height),
        count=info.count,
        dtype=info.dtype,
        shapes=tuple(shapes),
        overlap_bounds=overlap_bounds,  # type: ignore[arg-type]
        all_touched=options.all_touched,
        invert=options.invert,
        crop=options.crop,
        nodata=nodata,
        use_mask=use_mask,
        resampling=resampling,
        chunks=chunk_grid(
            int(window.width), int(window.height), options.chunk_size,
            offset=(int(window.col_off), int(window.row_off)), block=info.block_shape,
            source_shape=(info.height, info.width),
        ),
        pad=options.pad and options.crop,
    )


@dataclass
class PixelSample:
    """One output pixel whose source values were captured while streaming, checked again after writing."""

    row: int
    col: int
    keep: bool  # inside the boundary (outside when inverted) and valid in the source
    values: tuple[float, ...]  # source values, all bands


@dataclass
class ExecutionStats:
    inside_pixels: int = 0  # pixels selected by the boundary rule (band-independent)
    valid_pixels: int = 0  # selected and valid in the source, band 1 — what the output mask must show
    nodata_collisions: int = 0  # valid pixels equal to an explicitly chosen nodata value
    samples: list[PixelSample] = field(default_factory=list)
    chunks: int = 0


def _classify_read_error(exc: Exception, name: str) -> SceneclipError:
    msg, name = redact(str(exc)), redact(name)
    if looks_transient(msg):
        return SourceUnavailableError(f"reading {name} failed, may pass on retry: {msg}")
    return RasterReadError(f"cannot read {name}: {msg}")


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
            raise _classify_read_error(exc, src.name) from exc
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


def write_cog(intermediate: str, dst_path: str, plan: ClipPlan, options: ClipOptions) -> None:
    """GDAL's COG driver (create-copy only) from the intermediate: tiles, overviews, IFD layout."""
    opts = cog_options(options.profile, dtype=plan.dtype, resampling=plan.resampling)
    rasterio.shutil.copy(intermediate, dst_path, driver="COG", **opts)


class ClipOutput:
    """The written COG: in a rasterio MemoryFile, or spilled to a file in ``tmpdir`` when too big for RAM.

    Use :meth:`save` for a local path, :meth:`fileobj` to stream it (e.g. to S3), and :meth:`close` to free it.
    """

    def __init__(self, memfile: MemoryFile | None = None, path: str | None = None, workdir: str | None = None) -> None:
        self.memfile, self.path, self.workdir = memfile, path, workdir

    @property
    def name(self) -> str:
        return self.memfile.name if self.memfile is not None else str(self.path)

    @property
    def spilled(self) -> bool:
        return self.memfile is None

    def size(self) -> int:
        if self.memfile is not None:
            return len(self.memfile.getbuffer())
        return os.path.getsize(str(self.path))

    def open(self) -> Any:
        return rasterio.open(self.name)

    def fileobj(self) -> Any:
        """A readable binary file object positioned at 0 (boto3's upload_fileobj takes it)."""
        if self.memfile is not None:
            self.memfile.seek(0)
            return self.memfile
        return open(str(self.path), "rb")

    def read_bytes(self) -> bytes:
        if self.memfile is not None:
            return bytes(self.memfile.getbuffer())
        with open(str(self.path), "rb") as fh:
            return fh.read()

    def save(self, path: str) -> None:
        """Write to ``path`` atomically (temp name + rename) so a reader never sees a partial file."""
        tmp = f"{path}.part-{uuid.uuid4().hex[:8]}"
        try:
            if self.memfile is not None:
                with open(tmp, "wb") as fh:
                    fh.write(self.memfile.getbuffer())
            else:
                try:  # a spilled file on the same filesystem is moved, not copied (no second copy on disk)
                    os.replace(str(self.path), tmp)
                    self.path = tmp
                except OSError:
                    shutil.copyfile(str(self.path), tmp)
            os.replace(tmp, path)
            if self.memfile is None and self.path == tmp:
                self.path = None
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def close(self) -> None:
        if self.memfile is not None:
            self.memfile.close()
            self.memfile = None
        elif self.path and os.path.exists(self.path):
            os.remove(self.path)
        self.path = None
        if self.workdir:  # the spill directory made for this clip
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


@dataclass
class ClipResult:
    record: VerificationRecord
    output: ClipOutput | None
    plan: ClipPlan | None = None


class _Workspace:
    """Where the intermediate and the COG live: /vsimem when the window fits ``memory_limit``, else tmpdir."""

    def __init__(self, plan: ClipPlan, options: ClipOptions) -> None:
        self.spill = plan.uncompressed_bytes > options.memory_limit
        self.dir = tempfile.mkdtemp(prefix="sceneclip-", dir=options.tmpdir) if self.spill else None
        self.intermediate_mem = None if self.spill else MemoryFile(ext=".tif")
        self.intermediate = os.path.join(self.dir, "intermediate.tif") if self.dir else self.intermediate_mem.name

    def new_output(self) -> ClipOutput:
        if self.dir:
            return ClipOutput(path=os.path.join(self.dir, "clip.tif"), workdir=self.dir)
        return ClipOutput(memfile=MemoryFile(ext=".tif"))

    def cleanup(self, *, remove_dir: bool = False) -> None:
        if self.intermediate_mem is not None:
            self.intermediate_mem.close()
        if self.dir and os.path.exists(self.intermediate):
            os.remove(self.intermediate)
        if remove_dir and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _open_source(source: str, name: str | None = None) -> Any:
    try:
        return rasterio.open(source)
    except RasterioError as exc:
        raise _classify_read_error(exc, name or source) from exc


def plan_for_dataset(src: Any, boundary: Boundary, options: ClipOptions, *, name: str) -> tuple[RasterInfo, ClipPlan]:
    """The compute step for an open dataset: its grid, the boundary in its CRS, the plan. Reads no pixels."""
    info = RasterInfo.from_dataset(src, name=name)
    try:
        shapes = to_raster_crs(boundary, info.crs, info.bounds, raster_name=name)
        return info, plan_clip(info, shapes, options)
    except NoOverlapError:
        raise no_overlap_error(boundary, name) from None


def clip_to_cog(source: str, boundary: Boundary, options: ClipOptions | None = None, *, name: str | None = None) -> ClipResult:
    """Clip ``source`` (path, /vsis3/ or s3:// URI) to ``boundary``; write and verify a COG.

    Raises a SceneclipError subclass for bad input (permanent) or a fault that may pass (transient), and
    VerificationError when the written output fails a check. On success the COG is in ``result.output``
    (in memory, or spilled to ``options.tmpdir`` for large windows); the caller saves or uploads it.
    ``name`` is how the source appears in records and messages (e.g. s3://bucket/key instead of a
    presigned URL); it defaults to ``source``.
    """
    name = name or redact(source)
    from .verify import verify_output  # verify imports clip's types

    options = options or ClipOptions()
    started = time.perf_counter()
    env = {"GDAL_CACHEMAX": options.gdal_cache_mb}
    if options.tmpdir:
        env["CPL_TMPDIR"] = options.tmpdir
    with rasterio.Env(**env), _open_source(source, name) as src:
        info, plan = plan_for_dataset(src, boundary, options, name=name)
        workspace = _Workspace(plan, options)
        output: ClipOutput | None = None
        try:
            stats = execute_plan(src, plan, workspace.intermediate, samples_per_chunk=options.samples_per_chunk)
            _refuse_empty(stats, boundary, name, options)
            output = workspace.new_output()
            write_cog(workspace.intermediate, output.name, plan, options)
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


def _refuse_empty(stats: ExecutionStats, boundary: Boundary, source: str, options: ClipOptions) -> None:
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
    """:func:`clip_to_cog` that never raises for a SceneclipError: failures come back as a failed record.

    With ``output`` the COG is saved there (atomically) and only on success; otherwise the caller gets the
    in-memory :class:`ClipOutput`.
    """
    started = time.perf_counter()
    try:
        result = clip_to_cog(source, boundary, options)
    except SceneclipError as exc:
        rec = getattr(exc, "record", None) or failed_record(source, boundary, exc, started=started)
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


__all__ = [
    "ClipOptions",
    "ClipOutput",
    "ClipPlan",
    "ClipResult",
    "ExecutionStats",
    "RasterInfo",
    "__version__",
    "clip_to_cog",
    "execute_plan",
    "plan_clip",
    "run_clip",
    "write_cog",
]
