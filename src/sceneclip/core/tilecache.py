"""Decoded source blocks kept between the chunks of a warped clip, so no block is fetched twice.

A warped chunk's source window has edges anywhere in the source's block grid, and neighbouring chunks'
windows overlap by the kernel's reach; GDAL decodes a large window without keeping its blocks, so the
blocks on each shared edge were fetched again (1.5× the tiles under the region on the real Iguazu scene
with 512² chunks). Windows are therefore widened to whole blocks, and the decoded blocks kept, least
recently used first out, up to a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
from rasterio.windows import Window


class BlockCache:
    """Reads windows of ``src`` block-aligned, keeping up to ``max_bytes`` of decoded blocks."""

    def __init__(self, src: Any, max_bytes: int) -> None:
        self.src = src
        bh, bw = src.block_shapes[0] if src.block_shapes else (src.height, src.width)
        self.bh, self.bw = max(1, int(bh)), max(1, int(bw))
        self.max_bytes = max_bytes
        self.blocks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.nbytes = 0

    def _span(self, win: Window) -> tuple[int, int, int, int]:
        r0, c0 = int(win.row_off), int(win.col_off)
        r1, c1 = r0 + int(win.height), c0 + int(win.width)
        return r0 // self.bh, (r1 - 1) // self.bh, c0 // self.bw, (c1 - 1) // self.bw

    def _fetch(self, ty0: int, ty1: int, tx0: int, tx1: int) -> None:
        """One read of the block rectangle, split into blocks (those already kept are left as they are)."""
        r0, c0 = ty0 * self.bh, tx0 * self.bw
        r1, c1 = min(self.src.height, (ty1 + 1) * self.bh), min(self.src.width, (tx1 + 1) * self.bw)
        data = self.src.read(window=Window(c0, r0, c1 - c0, r1 - r0))
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                if (ty, tx) not in self.blocks:
                    part = data[:, ty * self.bh - r0:(ty + 1) * self.bh - r0, tx * self.bw - c0:(tx + 1) * self.bw - c0]
                    self.blocks[(ty, tx)] = part.copy()
                    self.nbytes += part.nbytes

    def read(self, win: Window) -> np.ndarray:
        """The window's values, all bands, as ``src.read(window=win)`` would return them."""
        ty0, ty1, tx0, tx1 = self._span(win)
        need = [(ty, tx) for ty in range(ty0, ty1 + 1) for tx in range(tx0, tx1 + 1)]
        missing = [key for key in need if key not in self.blocks]
        if missing:
            ys, xs = [k[0] for k in missing], [k[1] for k in missing]
            self._fetch(min(ys), max(ys), min(xs), max(xs))
        r0, c0 = int(win.row_off), int(win.col_off)
        out = np.empty((self.src.count, int(win.height), int(win.width)), dtype=self.src.dtypes[0])
        for ty, tx in need:
            block = self.blocks[(ty, tx)]
            self.blocks.move_to_end((ty, tx))
            br, bc = ty * self.bh, tx * self.bw
            rr0, rr1 = max(r0, br), min(r0 + out.shape[1], br + block.shape[1])
            cc0, cc1 = max(c0, bc), min(c0 + out.shape[2], bc + block.shape[2])
            out[:, rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = block[:, rr0 - br:rr1 - br, cc0 - bc:cc1 - bc]
        self._evict(keep=len(need))
        return out

    def _evict(self, keep: int) -> None:
        """Drop the least recently used blocks above the budget, never the ``keep`` most recent ones."""
        while self.nbytes > self.max_bytes and len(self.blocks) > keep:
            _, block = self.blocks.popitem(last=False)
            self.nbytes -= block.nbytes
