"""Where a clip's files live: the output COG (MemoryFile or a spilled file) and the working space of one clip."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
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

    def open(self, **open_options: Any) -> Any:
        """Open the COG for reading with rasterio (``open_options`` are GDAL's, e.g. ``num_threads``)."""
        return rasterio.open(self.name, **open_options)

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


SPILL_PREFIX = "sceneclip-"


def remove_stale_workdirs(tmpdir: str | None, older_than_s: float) -> list[str]:
    """Remove ``sceneclip-*`` spill directories in ``tmpdir`` last modified more than ``older_than_s`` ago.

    A process killed mid-clip (Lambda's timeout or out-of-memory kill, a SIGKILLed worker) never runs its
    cleanup, and a warm Lambda container keeps ``/tmp``. Called at start-up with the function timeout: a
    directory older than that cannot belong to a clip still running, in this process or in another worker
    process sharing ``tmpdir`` (no clip outlives its deadline). Returns the directories removed.
    """
    base = tmpdir or tempfile.gettempdir()
    cutoff = time.time() - older_than_s
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(SPILL_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(entry.path)
                removed.append(entry.path)
        except OSError:  # removed meanwhile by another process, or not ours to remove
            continue
    return removed


class Workspace:
    """Where one clip's files live: the intermediate always in a spill directory in ``tmpdir``; the COG in
    memory when the window fits ``memory_limit`` (and the caller does not want it on disk: ``cog_on_disk``),
    else beside the intermediate.

    The intermediate is written once and read twice by GDAL's COG driver (overviews, then full resolution).
    As a local file it sits in the page cache — as fast to read back as ``/vsimem``, but reclaimable and
    outside the process's resident set — so it no longer counts against the function's memory. GDAL's
    temporary overview file goes to the same directory (``CPL_TMPDIR``, set by :func:`write_cog`).
    """

    def __init__(self, plan: ClipPlan, options: ClipOptions, *, cog_on_disk: bool = False) -> None:
        self.spill = cog_on_disk or plan.uncompressed_bytes > options.memory_limit
        self.dir = tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=options.tmpdir)
        self.intermediate = os.path.join(self.dir, "intermediate.tif")

    def new_output(self) -> ClipOutput:
        """An empty output: a MemoryFile, or a file in the spill directory (which the output then owns)."""
        if self.spill:
            return ClipOutput(path=os.path.join(self.dir, "clip.tif"), workdir=self.dir)
        return ClipOutput(memfile=MemoryFile(ext=".tif"))

    def cleanup(self, *, remove_dir: bool = False) -> None:
        """Remove the intermediate, and the spill directory unless a spilled output still lives in it
        (``remove_dir``: the clip failed, remove it whatever it holds)."""
        if os.path.exists(self.intermediate):
            os.remove(self.intermediate)
        if remove_dir or not self.spill:
            shutil.rmtree(self.dir, ignore_errors=True)
