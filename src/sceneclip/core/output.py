"""Where a clip's files live: the output COG (MemoryFile or a spilled file) and the working space of one clip."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import rasterio
from rasterio.io import MemoryFile

from sceneclip.core.files import atomic_write
from sceneclip.core.plan import ClipOptions, ClipPlan


class ClipOutput:
    """The written COG: in a rasterio MemoryFile, or spilled to a file in ``tmpdir`` when too big for RAM.

    Use :meth:`save` for a local path, :meth:`fileobj` to stream it (e.g. to S3), and :meth:`close` to free it.
    """

    def __init__(self, memfile: MemoryFile | None = None, path: str | None = None, workdir: str | None = None) -> None:
        self.memfile, self.path, self.workdir = memfile, path, workdir

    @property
    def name(self) -> str:
        """A path GDAL opens: the MemoryFile's /vsimem name, or the spilled file."""
        return self.memfile.name if self.memfile is not None else str(self.path)

    @property
    def spilled(self) -> bool:
        """True when the COG is a file in tmpdir rather than in memory."""
        return self.memfile is None

    def size(self) -> int:
        """Size of the COG in bytes."""
        if self.memfile is not None:
            return len(self.memfile.getbuffer())
        return os.path.getsize(str(self.path))

    def open(self) -> Any:
        """Open the COG for reading with rasterio."""
        return rasterio.open(self.name)

    def fileobj(self) -> Any:
        """A readable binary file object positioned at 0 (boto3's upload_fileobj takes it)."""
        if self.memfile is not None:
            self.memfile.seek(0)
            return self.memfile
        return open(str(self.path), "rb")

    def save(self, path: str) -> None:
        """Write to ``path`` atomically (temp name + rename) so a reader never sees a partial file."""
        if self.memfile is not None:
            with atomic_write(path) as fh:
                fh.write(self.memfile.getbuffer())
            return
        try:  # a spilled file on the same filesystem is renamed into place: atomic, and no second copy on disk
            os.replace(str(self.path), path)
            self.path = None
        except OSError:
            with atomic_write(path) as fh, open(str(self.path), "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)

    def close(self) -> None:
        """Free the memory or remove the spilled file (and the clip's spill directory)."""
        if self.memfile is not None:
            self.memfile.close()
            self.memfile = None
        elif self.path and os.path.exists(self.path):
            os.remove(self.path)
        self.path = None
        if self.workdir:  # the spill directory made for this clip
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


class Workspace:
    """Where the intermediate and the COG live: /vsimem when the window fits ``memory_limit``, else tmpdir."""

    def __init__(self, plan: ClipPlan, options: ClipOptions) -> None:
        self.spill = plan.uncompressed_bytes > options.memory_limit
        self.dir = tempfile.mkdtemp(prefix="sceneclip-", dir=options.tmpdir) if self.spill else None
        self.intermediate_mem = None if self.spill else MemoryFile(ext=".tif")
        self.intermediate = os.path.join(self.dir, "intermediate.tif") if self.dir else self.intermediate_mem.name

    def new_output(self) -> ClipOutput:
        """An empty output beside the intermediate: a MemoryFile, or a file in the spill directory."""
        if self.dir:
            return ClipOutput(path=os.path.join(self.dir, "clip.tif"), workdir=self.dir)
        return ClipOutput(memfile=MemoryFile(ext=".tif"))

    def cleanup(self, *, remove_dir: bool = False) -> None:
        """Free the intermediate; with ``remove_dir`` also the spill directory (the clip failed)."""
        if self.intermediate_mem is not None:
            self.intermediate_mem.close()
        if self.dir and os.path.exists(self.intermediate):
            os.remove(self.intermediate)
        if remove_dir and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
