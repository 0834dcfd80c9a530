"""Warped and mosaic clips over a real HTTP S3 endpoint fetch about the tiles under the region, not the scene."""

from __future__ import annotations

import rasterio
from rasterio.features import geometry_window
from shapely.geometry import box

from sceneclip.core import netstats
from sceneclip.core.clip import clip_to_cog
from sceneclip.core.gdalenv import gdal_s3_options
from sceneclip.core.geometry import Boundary, to_raster_crs
from sceneclip.core.plan import ClipOptions

from .conftest import real
from .test_fetch import _tiles_bytes

netstats.enable()

ROW_078 = "landsat8_iguazu_b2_utm21n.tif"
ROW_077 = "landsat8_iguazu_224077_b2_utm21n.tif"
# Spans both rows (north part only in 077, south part only in 078); a few tiles of each 256² tiled scene.
SPAN = Boundary.from_geometries([box(-54.72, -25.40, -54.66, -25.06)], "EPSG:4326")


def _tiles_under(path: str, boundary: Boundary, margin: int = 0) -> int:
    """Compressed bytes of the source tiles under the boundary's bbox in the source's CRS, widened by
    ``margin`` source pixels (the resampling kernel's reach)."""
    with rasterio.open(path) as ds:
        shapes = to_raster_crs(boundary, ds.crs, ds.bounds)
        window = geometry_window(ds, [box(*shapes[0].bounds)], pad_x=margin, pad_y=margin)
        window = window.intersection(rasterio.windows.Window(0, 0, ds.width, ds.height))
    return _tiles_bytes(path, window)


def _fetch(s3_bucket, names, options):
    client, bucket = s3_bucket
    for name in names:
        client.upload_file(real(name), bucket, name)
    sources = [f"/vsis3/{bucket}/{n}" for n in names]
    with rasterio.Env(**gdal_s3_options()):
        netstats.clear_curl_cache()
        netstats.reset()
        res = clip_to_cog(sources if len(sources) > 1 else sources[0], SPAN, options)
        fetched = netstats.snapshot()
    res.output.close()
    assert res.record.ok, res.record.error
    return fetched


def test_warped_clip_fetches_the_tiles_under_the_reprojected_footprint(s3_bucket):
    opts = ClipOptions(dst_crs="EPSG:4326", resolution=0.0003, target_aligned=True, resampling="bilinear", chunk_size=512)
    fetched = _fetch(s3_bucket, [ROW_078], opts)
    ideal = _tiles_under(real(ROW_078), SPAN, margin=3)  # bilinear reaches 1 pixel; 2 more of safety
    # Header (≤ 64 KB) + each of those tiles once (1.25×: /vsicurl/ reads whole 16 KB pieces).
    assert fetched.bytes_fetched <= 1.25 * ideal + 64 * 1024, (fetched, ideal)
    with open(real(ROW_078), "rb") as fh:
        assert fetched.bytes_fetched < 0.4 * fh.seek(0, 2)  # far from the whole scene


def test_mosaic_fetches_the_tiles_under_the_region_in_each_source(s3_bucket):
    fetched = _fetch(s3_bucket, [ROW_078, ROW_077], ClipOptions(src_nodata=0))
    ideal = _tiles_under(real(ROW_078), SPAN) + _tiles_under(real(ROW_077), SPAN)
    assert fetched.bytes_fetched <= 1.25 * ideal + 2 * 64 * 1024, (fetched, ideal)
