"""One Python contender of the peer benchmark, run as a whole process: ``peers_run.py NAME SRC BOUNDARY OUT``.

``bench_peers.py`` starts this script in a fresh interpreter for each run, so the wall time and peak RSS it
measures include the imports, as a user running the recipe would see them. Each recipe is written the way
its library's documentation shows, with the same COG creation options as sceneclip (``cog_options``:
DEFLATE level 6 + horizontal predictor, 512 blocks, AVERAGE overviews, ``NUM_THREADS=ALL_CPUS``) and
nodata 0 (what sceneclip and the seed recipe write for a source without nodata), so output sizes and
valid-pixel counts are comparable.

BOUNDARY is a GeoJSON FeatureCollection whose coordinates are in the source's CRS, named in its ``crs``
member (GDAL's and geopandas' reading of it); the script reads the CRS from there.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cog_creation_options() -> dict[str, Any]:
    """sceneclip's own COG options for uint16 (the profile every contender writes with)."""
    from sceneclip.core.cog import cog_options

    return cog_options("deflate", dtype="uint16", resampling="average")


def read_boundary(path: str) -> tuple[list[dict[str, Any]], str]:
    """The boundary's geometries (GeoJSON dicts) and their CRS as the ``crs`` member names it."""
    doc = json.loads(Path(path).read_text())
    crs = doc.get("crs", {}).get("properties", {}).get("name", "EPSG:4326")
    return [f["geometry"] for f in doc["features"]], crs


def run_seed(src_path: str, boundary: str, out_path: str) -> None:
    """The seed recipe: ``rasterio.mask.mask(crop=True)`` → GTiff MemoryFile → COG copy (``common.py``)."""
    import rasterio

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import reference_clip_to_cog

    shapes, _ = read_boundary(boundary)
    with rasterio.open(src_path) as src:
        reference_clip_to_cog(src, shapes, out_path, cog_opts=cog_creation_options())


def run_rioxarray(src_path: str, boundary: str, out_path: str) -> None:
    """rioxarray: ``open_rasterio`` → ``rio.clip(from_disk=True, drop=True)`` → ``rio.to_raster(driver="COG")``.

    ``write_nodata(0)`` first: the source has no nodata, and rioxarray would otherwise fill with the
    dtype's maximum (65535), not the 0 the other contenders write.
    """
    import rioxarray

    shapes, crs = read_boundary(boundary)
    da = rioxarray.open_rasterio(src_path)
    da = da.rio.write_nodata(0, encoded=False)
    clipped = da.rio.clip(shapes, crs=crs, from_disk=True, drop=True)
    clipped.rio.to_raster(out_path, driver="COG", **cog_creation_options())


def run_riotiler(src_path: str, boundary: str, out_path: str) -> None:
    """rio-tiler: ``Reader.feature()`` at full resolution in the source CRS → COG.

    ``max_size=None`` keeps the native resolution; ``dst_crs`` = the source CRS avoids a reprojection;
    ``align_bounds_with_dataset=True`` keeps the source's pixel lattice (without it the feature's bbox is
    read resampled onto a grid starting at the bbox corner, off the source grid);
    the ImageData's mask becomes nodata 0 in the written COG (rio-tiler has no COG writer of its own:
    ``ImageData.render`` writes a plain GTiff, so the array goes through rasterio as its docs show).
    """
    import numpy as np
    import rasterio
    from rio_tiler.io import Reader

    shapes, crs = read_boundary(boundary)
    feature = {"type": "Feature", "properties": {}, "geometry": shapes[0]}
    with Reader(src_path) as reader:
        img = reader.feature(feature, shape_crs=reader.crs.from_user_input(crs), dst_crs=reader.crs,
                             max_size=None, align_bounds_with_dataset=True)
    data = np.where(img.mask[None, :, :] > 0, img.data, 0).astype(img.data.dtype)
    profile = dict(driver="COG", width=img.width, height=img.height, count=img.count, dtype=str(data.dtype),
                   crs=img.crs, transform=img.transform, nodata=0, **cog_creation_options())
    with rasterio.open(out_path, "w", **profile) as dst:
        dst.write(data)


RECIPES: dict[str, Callable[[str, str, str], None]] = {
    "seed": run_seed,
    "rioxarray": run_rioxarray,
    "riotiler": run_riotiler,
}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in RECIPES:
        print(f"usage: peers_run.py {{{'|'.join(RECIPES)}}} SRC BOUNDARY.geojson OUT", file=sys.stderr)
        return 2
    name, src, boundary, out = argv
    RECIPES[name](src, boundary, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
