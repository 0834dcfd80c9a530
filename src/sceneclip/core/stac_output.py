"""The output STAC Item of one archive Item clipped to one region: one asset per clipped source asset.

Where :func:`sceneclip.core.stac.make_item` describes one COG, :func:`region_item` describes a scene of many:

* assets keyed as in the source Item (``red``, ``coastal``…), each with the href of its output COG, the
  clip's ``proj:`` grid (assets of one Item may differ in resolution), ``raster:bands`` whose
  scale/offset/nodata are the **source** asset's where the source Item declares them (Earth Search's
  ``scale: 0.0001, offset: -0.1``: the pixel values are the source's, so their meaning is too), and
  ``file:checksum``/``file:size`` of the COG;
* the source Item's acquisition properties carried over (datetime, platform, constellation, instruments,
  ``eo:cloud_cover``, ``s2:*``, ``landsat:*``, ``sentinel:*``, ``view:*``…), which is what a user filters on,
  with the source's extension schemas those properties belong to (view, mgrs, grid, landsat…);
* geometry = the union of the clips' extents (EPSG:4326);
* ``derived_from`` links to the source Item and to its collection.

Pure: no network. The pipeline uploads the dict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pystac
import shapely
from shapely.geometry import mapping, shape

from sceneclip import __version__
from sceneclip.core.records import VerificationRecord
from sceneclip.core.stac import ASSET_KEY, make_item
from sceneclip.core.stac_assets import STACK_ASSET

# Source properties kept as they are: acquisition and platform facts a catalogue searches on.
CARRIED = ("datetime", "start_datetime", "end_datetime", "platform", "constellation", "instruments", "mission",
           "gsd", "eo:cloud_cover", "eo:snow_cover")
CARRIED_PREFIXES = ("s2:", "landsat:", "sentinel:", "view:", "mgrs:", "grid:")
EO_SCHEMA = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
LANDSAT_SCHEMA = "https://stac-extensions.github.io/landsat/v2.0.0/schema.json"
# USGS's own Landsat extension, which the community one above was created from (its changelog says so). USGS
# Items still declare it; an output Item declares the successor instead when the carried fields meet it, so
# every schema an output declares is one a validator can fetch from the extensions' registry.
_SUCCESSORS = {
    "https://landsat.usgs.gov/stac/landsat-extension/v1.1.1/schema.json": (LANDSAT_SCHEMA, (
        "landsat:scene_id", "landsat:collection_category", "landsat:collection_number", "landsat:wrs_type",
        "landsat:wrs_path", "landsat:wrs_row", "landsat:cloud_cover_land", "landsat:correction")),
}
_VERSION_RE = re.compile(r"^v\d+(\.\d+)*$")
_BAND_FIELDS = ("scale", "offset", "nodata")


@dataclass(frozen=True)
class ClippedAsset:
    """One source asset's clip: its key in the source Item, its ``ok`` record and the href to its COG."""

    key: str
    record: VerificationRecord
    href: str


def carried_properties(source: Mapping[str, Any]) -> dict[str, Any]:
    """The source Item's properties that describe the acquisition (see :data:`CARRIED`, :data:`CARRIED_PREFIXES`)."""
    props = source.get("properties") if isinstance(source.get("properties"), Mapping) else {}
    return {k: v for k, v in props.items() if k in CARRIED or k.startswith(CARRIED_PREFIXES)}


def extension_prefix(url: str) -> str | None:
    """The field prefix an extension schema URL stands for: the path segment before its version
    (``…/view/v1.0.0/schema.json`` → ``view``; USGS's ``…/landsat-extension/v1.1.1/…`` → ``landsat``)."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    for before, part in zip(parts, parts[1:]):
        if _VERSION_RE.match(part):
            return before.removesuffix("-extension")
    return None


def carried_extensions(source: Mapping[str, Any], props: Mapping[str, Any]) -> set[str]:
    """The source Item's ``stac_extensions`` that the carried ``props`` use (``view:``, ``mgrs:``, ``grid:``,
    ``landsat:`` …): declared as the source declared them, so a validator checks the carried fields against the
    same schema version the archive vouched for (a superseded schema by its successor, see ``_SUCCESSORS``)."""
    # eo: declared by the writer itself, at the version it writes (EO_SCHEMA), whatever the source's was
    used = {k.split(":", 1)[0] for k in props if ":" in k} - {"eo", "sceneclip"}
    declared = source.get("stac_extensions")
    out: set[str] = set()
    for url in declared if isinstance(declared, list) else []:
        if not isinstance(url, str) or extension_prefix(url) not in used:
            continue
        successor, required = _SUCCESSORS.get(url, (None, ()))
        out.add(successor if successor and all(k in props for k in required) else url)
    return out


def region_item(source: Mapping[str, Any], clips: Sequence[ClippedAsset], *, region: str, item_id: str,
                source_href: str) -> dict[str, Any]:
    """The output Item (a JSON-ready dict) for ``clips``, all of one region of the Item ``source``.

    ``source_href`` is where the source Item lives (its ``self`` link, else the URL it was fetched from).
    """
    if not clips:
        raise ValueError(f"no clipped asset for region {region!r} of {source.get('id')!r}")
    per_asset = [make_item(c.record, cog_href=c.href, source_href=source_href) for c in clips]
    geometry = _union([i.geometry for i in per_asset])
    props = carried_properties(source)
    first = clips[0].record
    props.update({"created": first.created_at, "sceneclip:region": region,
                  "sceneclip:boundary_hash": first.boundary.content_hash,
                  "sceneclip:source_item": source.get("id"), "sceneclip:version": first.sceneclip_version or __version__})
    if not any(props.get(k) for k in ("datetime", "start_datetime")):
        props["datetime"] = first.created_at  # an Item without a time (invalid at the source): the clip's
    props.setdefault("datetime", None)  # with start/end_datetime, STAC wants datetime present and null
    doc: dict[str, Any] = {
        "type": "Feature", "stac_version": pystac.get_stac_version(), "id": item_id, "geometry": geometry,
        "bbox": [round(float(v), 7) for v in shapely.bounds(shape(geometry))], "properties": props,
        "assets": {c.key: _asset(c, one, source) for c, one in zip(clips, per_asset)},
    }
    exts = {e for one in per_asset for e in one.stac_extensions} | carried_extensions(source, props)
    if any(k.startswith("eo:") for k in props) or any("eo:bands" in a for a in doc["assets"].values()):
        exts.add(EO_SCHEMA)
    doc["stac_extensions"] = sorted(exts)
    doc["links"] = _links(source, source_href)
    return json.loads(json.dumps(doc, allow_nan=False))


def stack_item(source: Mapping[str, Any], clip: ClippedAsset, bands: Sequence[tuple[str, int]], *, region: str,
               item_id: str, source_href: str) -> dict[str, Any]:
    """The output Item of a stack (``SCENECLIP_STAC_STACK=true``): one asset, the stack COG, whose
    ``raster:bands`` and ``eo:bands`` follow its bands in order.

    ``bands`` lists the stacked source assets in band order with their band counts. Band *n* of asset *k*
    carries the source's ``raster:bands[n]`` scale/offset (where the raster extension allows them) and its
    ``eo:bands[n]`` (else ``{"name": <band description>}``); nodata stays the COG's own, which is the
    source's whenever the source declares one (the stack refuses differing ones) unless an explicit nodata
    replaced it. ``proj:`` is the stack's grid; properties and links are :func:`region_item`'s.
    """
    doc = region_item(source, [ClippedAsset(STACK_ASSET, clip.record, clip.href)], region=region, item_id=item_id,
                      source_href=source_href)
    asset = doc["assets"][STACK_ASSET]
    asset["title"] = f"{', '.join(k for k, _ in bands)} stacked and clipped to {region}"
    raster_bands, eo_bands = asset.get("raster:bands", []), []
    labels = [k if n == 1 else f"{k}:{i}" for k, n in bands for i in range(1, n + 1)]
    per_band = [(k, i) for k, n in bands for i in range(n)]
    if len(raster_bands) != len(per_band):
        raise ValueError(f"the stack COG has {len(raster_bands)} bands, its assets {len(per_band)}")
    for band, label, (key, i) in zip(raster_bands, labels, per_band):
        src_asset = (source.get("assets") or {}).get(key) or {}
        src_band = _nth(src_asset.get("raster:bands"), i)
        for name in ("scale", "offset"):
            if _is_band_value(name, src_band.get(name)):
                band[name] = src_band[name]
        if _is_band_value("nodata", src_band.get("nodata")) and src_band["nodata"] == band.get("nodata"):
            band["nodata"] = src_band["nodata"]  # the same value, in the source's spelling
        eo = _nth(src_asset.get("eo:bands"), i)
        eo_bands.append(dict(eo) if eo else {"name": label})
    asset["eo:bands"] = eo_bands
    doc["stac_extensions"] = sorted(set(doc["stac_extensions"]) | {EO_SCHEMA})
    return json.loads(json.dumps(doc, allow_nan=False))


def _nth(values: Any, i: int) -> dict[str, Any]:
    """Entry ``i`` of a source asset's band list when it is a mapping, else {} (an Item may omit or mangle it)."""
    return dict(values[i]) if isinstance(values, list) and i < len(values) and isinstance(values[i], Mapping) else {}


def _asset(clip: ClippedAsset, one: pystac.Item, source: Mapping[str, Any]) -> dict[str, Any]:
    """The per-COG Item's asset, with its grid moved onto the asset and the source's band semantics."""
    asset = one.assets[ASSET_KEY].to_dict()
    asset["title"] = f"{clip.key} clipped to {clip.record.boundary.region}"
    for k, v in one.properties.items():
        if k.startswith("proj:"):
            asset[k] = v
    src_asset = (source.get("assets") or {}).get(clip.key) or {}
    src_bands = src_asset.get("raster:bands") if isinstance(src_asset, Mapping) else None
    if isinstance(src_bands, list):
        for band, src in zip(asset.get("raster:bands", []), src_bands):
            for name in _BAND_FIELDS:
                if isinstance(src, Mapping) and _is_band_value(name, src.get(name)):
                    band[name] = src[name]
    for name in ("eo:bands", "gsd"):
        if isinstance(src_asset, Mapping) and name in src_asset:
            asset[name] = src_asset[name]
    return asset


def _is_band_value(name: str, value: Any) -> bool:
    """Whether the source's ``raster:bands`` value may be carried: a number (or nodata's "nan"/"inf"/"-inf", the
    raster extension's spellings). Anything else would make our Item invalid, so the clip's own value stays."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or (name == "nodata" and value in ("nan", "inf", "-inf"))


def _links(source: Mapping[str, Any], source_href: str) -> list[dict[str, Any]]:
    """``derived_from`` the source Item and its collection (the collection link, else the parent)."""
    links = [{"rel": "derived_from", "href": source_href, "type": "application/geo+json",
              "title": f"source STAC Item {source.get('id')}"}]
    by_rel = {ln.get("rel"): ln.get("href") for ln in source.get("links") or [] if isinstance(ln, Mapping)}
    collection = by_rel.get("collection") or by_rel.get("parent")
    if isinstance(collection, str) and collection:
        links.append({"rel": "derived_from", "href": collection, "type": "application/json",
                      "title": f"source collection {source.get('collection') or ''}".strip()})
    return links


def _union(geometries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    geom = shapely.union_all([shape(g) for g in geometries])
    return json.loads(json.dumps(mapping(shapely.set_precision(geom, 1e-7))))


def source_href(source: Mapping[str, Any], fetched_from: str | None) -> str:
    """Where the source Item lives: its ``self`` link, else ``canonical``, else the URL it was fetched from."""
    by_rel = {ln.get("rel"): ln.get("href") for ln in source.get("links") or [] if isinstance(ln, Mapping)}
    for rel in ("self", "canonical"):
        if isinstance(by_rel.get(rel), str) and by_rel[rel]:
            return by_rel[rel]
    return fetched_from or f"stac://{source.get('collection') or '-'}/{source.get('id')}"
