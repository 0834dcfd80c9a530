"""A minimal PNG encoder (zlib + struct): quick-looks are pictures, not rasters.

Writing them through GDAL's PNG driver made GDAL warn ``NotGeoreferencedWarning`` for every file (a PNG has
no transform); encoding the bytes ourselves leaves GDAL out of it. 8-bit RGB, filter type 0 per row, which
is all a quick-look needs.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit image shaped (3, height, width) (rasterio's band order) or (height, width, 3).

    Raises
    ------
    ValueError
        For anything but three uint8 bands.
    """
    arr = np.asarray(rgb)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[2] != 3:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"encode_png wants 3 uint8 bands, got shape {arr.shape} dtype {arr.dtype}")
    height, width = arr.shape[:2]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), arr.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))


def write_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write :func:`encode_png` bytes to ``path``; returns it."""
    path = Path(path)
    path.write_bytes(encode_png(rgb))
    return path
