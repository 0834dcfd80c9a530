"""Caps on untrusted input, checked from a raster's header before any pixel is read.

A file's header can promise anything: a 384-byte TIFF may declare one 60000×60000 tile (GDAL decodes a
whole block at once: 3.5 GB), a 21 kB file 512 bands, a sparse 1.8 MB file 200,000² pixels. Each cap turns
such a file into a permanent :class:`~sceneclip.errors.LimitExceededError` naming the cap, the setting that
raises it and both values, instead of an out-of-memory kill that writes no record. The defaults fit a
10 GB Lambda with room to spare; every one is a ``SCENECLIP_MAX_*`` setting (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sceneclip.errors import UnsupportedRasterError, LimitExceededError

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class SourceLimits:
    """Caps on one source and one clip. ``0`` disables a cap.

    max_side: pixels per side of the source raster (``SCENECLIP_MAX_RASTER_SIDE``).
    max_bands: band count (``SCENECLIP_MAX_BANDS``); hyperspectral scenes have a few hundred.
    max_block_bytes: bytes of one decoded source block, bands × block height × block width × item size
        (``SCENECLIP_MAX_BLOCK_BYTES``): GDAL decodes whole blocks, so this bounds memory per read.
    max_window_bytes: uncompressed bytes of the clip window (``SCENECLIP_MAX_WINDOW_BYTES``): bounds the
        spilled intermediate in ``tmpdir`` and the run time.
    max_vertices: boundary vertices inside the raster after simplification (``SCENECLIP_MAX_VERTICES``).
    """

    max_side: int = 100_000
    max_bands: int = 256
    max_block_bytes: int = 512 * MIB
    max_window_bytes: int = 8 * GIB
    max_vertices: int = 1_000_000


def _refuse(what: str, value: int, cap: int, setting: str, name: str) -> None:
    if cap and value > cap:
        raise LimitExceededError(
            f"{name}: {what} is {value:,}, over the limit {cap:,} ({setting}); raise the setting if the input is genuine"
        )


def block_bytes(count: int, block_shape: tuple[int, int], dtype: str) -> int:
    """Bytes GDAL holds to decode one block of every band (a pixel-interleaved block carries all bands)."""
    rows, cols = block_shape
    return int(count) * int(rows) * int(cols) * np.dtype(dtype).itemsize


# Data types a COG clip can carry (numpy knows them, GDAL's COG driver writes them, a nodata value fits them).
SUPPORTED_DTYPES = frozenset({"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                              "float16", "float32", "float64"})


def refuse_unsupported(src: Any, name: str) -> None:
    """Refuse, permanently and by name, a raster whose data type we cannot clip (e.g. ``complex_int16``,
    which numpy has no type for): without this it fails deep in planning as an unclassified TypeError."""
    bad = sorted({str(dt) for dt in src.dtypes} - SUPPORTED_DTYPES)
    if bad:
        raise UnsupportedRasterError(
            f"{name} has data type {', '.join(bad)}, which sceneclip cannot clip (supported: real integer and "
            "float types); convert it first, e.g. `gdal_translate -ot Float32` on the real part"
        )


def check_header(ds: Any, name: str, limits: SourceLimits) -> None:
    """Refuse an open dataset whose header declares more than ``limits`` allow (or a data type no clip can
    carry: numpy has no complex_int16, so sizes could not even be computed). Reads no pixel."""
    refuse_unsupported(ds, name)
    _refuse("the raster width", int(ds.width), limits.max_side, "SCENECLIP_MAX_RASTER_SIDE", name)
    _refuse("the raster height", int(ds.height), limits.max_side, "SCENECLIP_MAX_RASTER_SIDE", name)
    _refuse("the band count", int(ds.count), limits.max_bands, "SCENECLIP_MAX_BANDS", name)
    widest = max((np.dtype(d).itemsize for d in ds.dtypes), default=1)
    for shape in set(ds.block_shapes or []):
        size = int(ds.count) * int(shape[0]) * int(shape[1]) * widest
        _refuse(f"one decoded block ({ds.count} bands × {shape[0]}×{shape[1]} px × {widest} B)", size,
                limits.max_block_bytes, "SCENECLIP_MAX_BLOCK_BYTES", name)


def check_window(width: int, height: int, count: int, dtype: str, name: str, limits: SourceLimits) -> None:
    """Refuse a clip window larger than ``limits.max_window_bytes`` (uncompressed values)."""
    size = int(width) * int(height) * int(count) * np.dtype(dtype).itemsize
    _refuse(f"the clip window ({width}×{height} px × {count} bands of {dtype})", size, limits.max_window_bytes,
            "SCENECLIP_MAX_WINDOW_BYTES", name)


def check_vertices(vertices: int, name: str, limits: SourceLimits) -> None:
    """Refuse a boundary that still has more than ``limits.max_vertices`` after pixel-size simplification."""
    _refuse("the boundary's vertex count after simplification", vertices, limits.max_vertices,
            "SCENECLIP_MAX_VERTICES", name)
