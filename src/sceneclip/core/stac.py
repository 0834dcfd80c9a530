"""A STAC Item for a verified clip (pystac): footprint, grid, bands, and the COG asset with its checksum.

:func:`make_item` builds the Item from the :class:`~sceneclip.core.records.VerificationRecord` and, when the COG is at
hand (``cog_path``), from the file itself:

* geometry: the **valid-data footprint** — the output's mask read at a coarse overview (at most
  ``FOOTPRINT_MAX_PIXELS`` per side), vectorised with ``rasterio.features.shapes``, simplified by one coarse
  pixel, densified, and transformed to EPSG:4326 with GDAL's antimeridian cutting. Without ``cog_path`` (or if
  the coarse mask shows nothing) the output's bounds polygon, densified and transformed the same way;
* bbox from that geometry (west > east when it crosses the antimeridian, as the STAC spec asks);
* datetime from the source's acquisition tags carried into the COG, else the record's ``created_at``;
* projection (v2: ``proj:code`` or ``proj:wkt2``, shape, transform), raster (per band data_type, nodata,
  spatial_resolution, scale/offset) and file (``file:checksum`` multihash sha2-256, ``file:size``) extensions;
* a ``derived_from`` link to the source scene and ``sceneclip:*`` properties.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import PurePosixPath
from collections.abc import Sequence
from typing import Any

import numpy as np
import pystac
import rasterio
import shapely
from affine import Affine
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.crs import CRS
from rasterio.features import shapes as vectorize
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

from sceneclip.core.files import atomic_write
from sceneclip import __version__
from sceneclip.core.records import VerificationRecord

FOOTPRINT_MAX_PIXELS = 512  # side of the coarse mask the footprint is traced on
DENSIFY_POINTS_PER_SIDE = 64  # vertices per bbox side before reprojection (curved edges stay curved)
COORD_DECIMALS = 7  # ~1 cm at the equator: enough for a footprint, keeps the JSON small
SHA2_256_MULTIHASH_PREFIX = "1220"  # multihash: code 0x12 (sha2-256), length 0x20 (32 bytes)
ACQUISITION_TAGS = ("ACQUISITIONDATETIME", "ACQUISITION_DATETIME", "ACQUISITIONDATE", "ACQUISITION_DATE",
                    "DATE_ACQUIRED", "TIFFTAG_DATETIME")
ASSET_KEY = "data"


class StacError(ValueError):
    """The record cannot describe an Item (a failed clip, no CRS)."""


def item_path_for(cog_path: str) -> str:
    """Where the Item of a COG is written: beside it, ``a/b.tif`` → ``a/b.stac.json`` (``c.tiff`` →
    ``c.tiff.stac.json``: two COGs never share an Item), the rule the Lambda pipeline uses too
    (:func:`sceneclip.core.naming.stac_key_for`)."""
    from sceneclip.core.naming import stac_key_for

    return stac_key_for(cog_path)


def make_item(
    record: VerificationRecord,
    *,
    cog_href: str,
    source_href: str | Sequence[str],
    cog_path: str | None = None,
    item_id: str | None = None,
) -> pystac.Item:
    """Build a STAC Item for an ``ok`` clip.

    Parameters
    ----------
    record : VerificationRecord
        The verification record of the clip (status ``ok``).
    cog_href : str
        The COG's href in the Item (relative ``./name.tif`` beside the Item, or an absolute/s3 URL).
    source_href : str or sequence of str
        The source scene, linked with ``rel="derived_from"``; several (a mosaic): one link each, in priority order.
    cog_path : str, optional
        A local or /vsi path of the COG: the footprint is traced from its mask, band scale/offset and the
        acquisition time are read from it. Without it the footprint is the output's bounds polygon.
    item_id : str, optional
        Default: ``{source stem}-{region}`` (or the COG's stem when the boundary has no region).
    """
    if not record.ok:
        raise StacError(f"no STAC Item for a failed clip of {record.source}: {record.error}")
    if not record.crs or not record.transform or not record.bounds:
        raise StacError(f"the record of {record.source} has no CRS, transform or bounds")
    crs = CRS.from_user_input(record.crs)
    info = _read_cog(cog_path) if cog_path else None
    geometry = _footprint(record, crs, info)
    props: dict[str, Any] = {
        "created": record.created_at,
        "sceneclip:region": record.boundary.region,
        "sceneclip:boundary_hash": record.boundary.content_hash,
        "sceneclip:valid_fraction": record.valid_fraction,
        "sceneclip:version": record.sceneclip_version or __version__,
    }
    item = pystac.Item(
        id=item_id or _default_id(record, cog_href),
        geometry=geometry,
        bbox=_bbox(geometry),
        datetime=_datetime(info, record),
        properties=props,
    )
    hrefs = [source_href] if isinstance(source_href, str) else list(source_href)
    for i, href in enumerate(hrefs):
        title = "source scene" if len(hrefs) == 1 else f"source scene {i + 1} of {len(hrefs)} (mosaic priority)"
        item.add_link(pystac.Link(rel="derived_from", target=href, media_type=pystac.MediaType.GEOTIFF, title=title))
    asset = pystac.Asset(href=cog_href, media_type=pystac.MediaType.COG, roles=["data"],
                         title=f"{record.boundary.region or 'clip'} ({record.width}x{record.height}x{record.count} {record.dtype})")
    item.add_asset(ASSET_KEY, asset)
    _apply_projection(item, record, crs)
    _apply_raster(item.assets[ASSET_KEY], record, info)
    _apply_file(item.assets[ASSET_KEY], record)
    return item


def write_item(item: pystac.Item, path: str) -> None:
    """Write the Item as JSON (no self link, hrefs as given), atomically: temp name, then rename."""
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=2, allow_nan=False)
        fh.write("\n")


# --- what is read from the COG -------------------------------------------------------------------------------
class _CogInfo:
    def __init__(self, mask: np.ndarray, mask_transform: Any, tags: dict[str, str], scales: tuple[float, ...],
                 offsets: tuple[float, ...], units: tuple[str | None, ...]) -> None:
        self.mask, self.mask_transform, self.tags = mask, mask_transform, tags
        self.scales, self.offsets, self.units = scales, offsets, units


def _read_cog(path: str) -> _CogInfo:
    """The validity mask at a coarse overview (GDAL picks the overview for the smaller out_shape)."""
    with rasterio.open(path) as ds:
        factor = max(1, math.ceil(max(ds.width, ds.height) / FOOTPRINT_MAX_PIXELS))
        h, w = max(1, ds.height // factor), max(1, ds.width // factor)
        mask = ds.dataset_mask(out_shape=(h, w))
        mask_transform = ds.transform @ Affine.scale(ds.width / w, ds.height / h)
        return _CogInfo(mask, mask_transform, ds.tags(), ds.scales, ds.offsets, ds.units)


# --- geometry ------------------------------------------------------------------------------------------------
def _footprint(record: VerificationRecord, crs: CRS, info: _CogInfo | None) -> dict[str, Any]:
    geom = None
    if info is not None:
        polys = [shape(g) for g, v in vectorize(info.mask, mask=info.mask > 0, transform=info.mask_transform) if v]
        if polys:
            step = max(abs(info.mask_transform.a), abs(info.mask_transform.e))
            geom = shapely.union_all(polys).simplify(step, preserve_topology=True)
            geom = geom if geom.is_valid and not geom.is_empty else None
    if geom is None:
        geom = box(*record.bounds)
    x0, y0, x1, y1 = geom.bounds
    dense = shapely.segmentize(geom, max(x1 - x0, y1 - y0) / DENSIFY_POINTS_PER_SIDE)
    if crs == CRS.from_epsg(4326):
        out = mapping(dense)
    else:
        out = transform_geom(crs, "EPSG:4326", mapping(dense))  # GDAL cuts at the antimeridian
    return _rounded(json.loads(json.dumps(out)))


def _rounded(geom: dict[str, Any]) -> dict[str, Any]:
    def walk(c: Any) -> Any:
        if isinstance(c, (list, tuple)) and c and isinstance(c[0], (int, float)):
            return [round(float(v), COORD_DECIMALS) for v in c]
        return [walk(v) for v in c]

    return {"type": geom["type"], "coordinates": walk(geom["coordinates"])}


def _bbox(geometry: dict[str, Any]) -> list[float]:
    """[west, south, east, north]; parts on both sides of ±180 (cut at the antimeridian) give west > east."""
    parts = shapely.get_parts(shape(geometry))
    xmin, ymin, xmax, ymax = shapely.total_bounds(parts)
    if xmin <= -180 + 1e-9 and xmax >= 180 - 1e-9 and len(parts) > 1:
        east = [p for p in parts if p.bounds[0] >= 0]
        west = [p for p in parts if p.bounds[2] <= 0]
        if east and west:
            xmin = shapely.total_bounds(east)[0]
            xmax = shapely.total_bounds(west)[2]
    return [round(float(v), COORD_DECIMALS) for v in (xmin, ymin, xmax, ymax)]


# --- properties ----------------------------------------------------------------------------------------------
def _default_id(record: VerificationRecord, cog_href: str) -> str:
    region = record.boundary.region
    stem = PurePosixPath(record.source).stem if region else PurePosixPath(cog_href).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{stem}-{region}" if region else stem).strip("_")


def _datetime(info: _CogInfo | None, record: VerificationRecord) -> datetime:
    for tag in ACQUISITION_TAGS:
        value = (info.tags if info else {}).get(tag)
        parsed = _parse_time(value) if value else None
        if parsed:
            return parsed
    return _parse_time(record.created_at) or datetime.now(timezone.utc)


def _parse_time(value: str) -> datetime | None:
    """TIFF's 'YYYY:MM:DD HH:MM:SS', ISO 8601 with or without zone, or a bare date; naive means UTC."""
    text = value.strip().replace("Z", "+00:00")
    if re.match(r"^\d{4}:\d{2}:\d{2} ", text):
        text = text[:4] + "-" + text[5:7] + "-" + text[8:]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _apply_projection(item: pystac.Item, record: VerificationRecord, crs: CRS) -> None:
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    if epsg:
        proj.apply(code=f"EPSG:{epsg}", shape=[record.height, record.width], transform=list(record.transform[:6]))
    else:
        proj.apply(wkt2=crs.to_wkt(), shape=[record.height, record.width], transform=list(record.transform[:6]))


def _apply_raster(asset: pystac.Asset, record: VerificationRecord, info: _CogInfo | None) -> None:
    nodata: Any = record.nodata
    if isinstance(nodata, str) or (isinstance(nodata, float) and math.isnan(nodata)):
        nodata = "nan"  # the raster extension spells NaN as a string
    resolution = abs(record.transform[0])
    bands = []
    for b in range(record.count or 0):
        scale = info.scales[b] if info else 1.0
        offset = info.offsets[b] if info else 0.0
        unit = info.units[b] if info else None
        bands.append(
            RasterBand.create(
                data_type=DataType(record.dtype),
                nodata=nodata,
                spatial_resolution=resolution,
                scale=scale if scale != 1.0 else None,
                offset=offset if offset != 0.0 else None,
                unit=unit or None,
            )
        )
    RasterExtension.ext(asset, add_if_missing=True).apply(bands)


def _apply_file(asset: pystac.Asset, record: VerificationRecord) -> None:
    FileExtension.ext(asset, add_if_missing=True).apply(
        checksum=SHA2_256_MULTIHASH_PREFIX + record.sha256 if record.sha256 else None,
        size=record.size_bytes,
    )


__all__ = ["ASSET_KEY", "StacError", "item_path_for", "make_item", "write_item"]
