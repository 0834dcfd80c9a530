"""Reading archive STAC Items: which assets of an Item are clipped, and exactly where each one lives.

Public archives announce scenes as STAC Items (Earth Search's SNS topic carries the whole Item; USGS's Items
point at a requester-pays bucket). An Item is one scene with many assets — one COG per band — so before
any pixel is read sceneclip needs, per asset: its S3 bucket and key (whatever URL form the archive used),
whether that bucket charges the requester, and whether the asset is a GeoTIFF at all.

Pure: no network, no boto3. The pipeline HEADs the resolved objects and reads them as it reads any scene.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from sceneclip.errors import InvalidItemError

# Media types archives use for (cloud-optimized) GeoTIFFs, lower-cased, parameters ignored.
GEOTIFF_TYPES = ("image/tiff", "image/geotiff", "image/vnd.stac.geotiff")
# The output Item's one asset when the selected assets are stacked into one COG (SCENECLIP_STAC_STACK=true).
STACK_ASSET = "stack"

# https://BUCKET.s3.REGION.amazonaws.com/KEY, https://BUCKET.s3.amazonaws.com/KEY, https://BUCKET.s3-REGION...
_VIRTUAL_HOSTED = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])\.s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$")
# https://s3.REGION.amazonaws.com/BUCKET/KEY, https://s3.amazonaws.com/BUCKET/KEY
_PATH_STYLE = re.compile(r"^s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$")


@dataclass(frozen=True)
class AssetRef:
    """One asset of a source Item, resolved to the object sceneclip reads.

    Attributes
    ----------
    key : str
        The asset's key in the Item (``red``, ``B04``…): band descriptions and output names use it.
    href : str
        The href as the Item gives it (kept for the output Item's ``derived_from`` trail).
    bucket, s3_key : str or None
        The S3 object, from an ``s3://`` href, an S3 ``https`` URL (virtual-hosted or path style) or the
        asset's ``alternate.s3`` href; None when the asset is only on plain HTTP.
    region : str or None
        The bucket's region when the URL names it (``…s3.us-west-2.amazonaws.com``).
    requester_pays : bool
        The storage extension (asset, its s3 alternate, or the Item) says the bucket charges the requester.
    media_type : str or None
        As declared; :attr:`is_geotiff` tells whether sceneclip can clip it.
    roles : tuple of str
    """

    key: str
    href: str
    bucket: str | None
    s3_key: str | None
    region: str | None
    requester_pays: bool
    media_type: str | None
    roles: tuple[str, ...]

    @property
    def is_geotiff(self) -> bool:
        """True for GeoTIFF / COG media types (any of the spellings archives use)."""
        base = (self.media_type or "").split(";")[0].strip().lower()
        return base in GEOTIFF_TYPES

    @property
    def uri(self) -> str:
        """``s3://bucket/key`` when the asset is on S3, else the href."""
        return f"s3://{self.bucket}/{self.s3_key}" if self.bucket and self.s3_key else self.href


def s3_location(href: str) -> tuple[str | None, str | None, str | None]:
    """(bucket, key, region) of an S3 URL in any of its forms, or (None, None, None) for other URLs.

    Keys are percent-decoded for https URLs (S3 encodes them there) and kept literally for ``s3://`` URIs.
    """
    url = urlparse(href)
    if url.scheme == "s3":
        key = href[len("s3://") + len(url.netloc) + 1:]
        return (url.netloc or None), (key or None), None
    if url.scheme not in ("http", "https"):
        return None, None, None
    host = (url.hostname or "").lower()
    path = unquote(url.path.lstrip("/"))
    m = _VIRTUAL_HOSTED.match(host)
    if m:
        return m.group("bucket"), (path or None), m.group("region")
    m = _PATH_STYLE.match(host)
    if m and "/" in path:
        bucket, key = path.split("/", 1)
        return bucket, (key or None), m.group("region")
    return None, None, None


def _requester_pays(*sources: Mapping[str, Any]) -> bool:
    return any(bool(s.get("storage:requester_pays")) for s in sources if isinstance(s, Mapping))


def asset_ref(key: str, asset: Mapping[str, Any], item_properties: Mapping[str, Any] | None = None) -> AssetRef:
    """Resolve one asset dict of an Item. An ``alternate.s3`` href wins over a plain-HTTP href (USGS's form)."""
    href = asset.get("href")
    if not isinstance(href, str) or not href:
        raise InvalidItemError(f"STAC asset {key!r} has no href")
    bucket, s3_key, region = s3_location(href)
    alt = (asset.get("alternate") or {}).get("s3") if isinstance(asset.get("alternate"), Mapping) else None
    if bucket is None and isinstance(alt, Mapping) and isinstance(alt.get("href"), str):
        bucket, s3_key, region = s3_location(alt["href"])
    roles = asset.get("roles") or ()
    return AssetRef(
        key=key, href=href, bucket=bucket, s3_key=s3_key, region=region,
        requester_pays=_requester_pays(asset, alt or {}, item_properties or {}),
        media_type=asset.get("type"), roles=tuple(str(r) for r in roles),
    )


def select_assets(item: Mapping[str, Any], keys: Sequence[str] | None = None) -> list[AssetRef]:
    """The assets to clip: ``keys`` in the order given, else every GeoTIFF asset with the ``data`` role.

    An explicit key that the Item lacks, or that is not a GeoTIFF, is an error naming what the Item has (a
    typo in ``SCENECLIP_STAC_ASSETS`` must not silently clip nothing). No selected asset is an error too.
    """
    assets = item.get("assets")
    item_id = item.get("id", "?")
    if not isinstance(assets, Mapping) or not assets:
        raise InvalidItemError(f"STAC Item {item_id!r} has no assets")
    props = item.get("properties") if isinstance(item.get("properties"), Mapping) else {}
    refs = {k: asset_ref(k, a, props) for k, a in assets.items() if isinstance(a, Mapping)}
    if keys:
        missing = [k for k in keys if k not in refs]
        if missing:
            raise InvalidItemError(
                f"STAC Item {item_id!r} has no asset {', '.join(map(repr, missing))}; it has: {', '.join(sorted(refs))}")
        not_tiff = [k for k in keys if not refs[k].is_geotiff]
        if not_tiff:
            raise InvalidItemError(
                f"STAC Item {item_id!r}: asset(s) {', '.join(map(repr, not_tiff))} are not GeoTIFFs "
                f"({', '.join(str(refs[k].media_type) for k in not_tiff)})")
        return [refs[k] for k in keys]
    chosen = [r for r in refs.values() if r.is_geotiff and "data" in r.roles]
    if not chosen:
        raise InvalidItemError(f"STAC Item {item_id!r} has no GeoTIFF asset with the 'data' role; name assets explicitly")
    return chosen


def is_stac_item(doc: Any) -> bool:
    """Whether a decoded JSON document is a STAC Item (a GeoJSON Feature with ``stac_version`` and assets)."""
    return (isinstance(doc, Mapping) and doc.get("type") == "Feature" and "stac_version" in doc
            and isinstance(doc.get("assets"), Mapping) and isinstance(doc.get("id"), str))


def item_version(item: Mapping[str, Any]) -> str:
    """What identifies this edition of the Item for idempotency: its ``updated`` time, else ``created``/``datetime``.

    Archives republish Items (Earth Search's ``status: updated``); a changed Item must be clipped again, the
    same Item delivered twice must not. Asset ETags are added by the pipeline once it has HEADed them.
    """
    props = item.get("properties") if isinstance(item.get("properties"), Mapping) else {}
    for name in ("updated", "created", "datetime", "start_datetime"):
        if props.get(name):
            return str(props[name])
    return ""
