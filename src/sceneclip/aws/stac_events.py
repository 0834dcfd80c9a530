"""STAC Item events: the announcements public archives send instead of S3 notifications.

Three shapes become one :class:`ItemRef` (what :class:`~sceneclip.aws.events.SceneRef` is for a single
object, an ItemRef is for a scene of many assets):

* a **STAC Item itself** — the body of Earth Search's SNS messages (delivered through SQS like any SNS-wrapped
  event, or to an SNS-triggered Lambda), or a direct invoke whose payload is an Item;
* ``{"stac_item": "s3://…" | "https://…"}`` naming an Item document (fetched later, by the pipeline, with a
  size cap and only from input buckets: :mod:`sceneclip.aws.stac_fetch`), or ``{"stac_item": {Item}}`` (what
  ``sceneclip backfill --stac`` sends); ``region`` and ``force`` as in a direct payload;
* a **USGS ``public-c2-notify`` message** (``{"landsat_product_id", "s3_location"}``): it carries no Item, but
  USGS publishes one beside the bands in that folder (``<product id>_stac.json`` for Level-1,
  ``<product id>_SR_stac.json`` for Level-2 surface reflectance), so it names that document.

Parsing only: nothing is fetched or opened here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from sceneclip.core.stac_assets import is_stac_item
from sceneclip.errors import InvalidItemError

_USGS_PRODUCT = "landsat_product_id"
_USGS_LOCATION = "s3_location"


@dataclass(frozen=True)
class ItemRef:
    """One STAC Item to clip: the Item itself (``item``) or where to fetch it (``href``).

    Attributes
    ----------
    item : dict or None
        The decoded Item, when the event carried it.
    href : str or None
        ``s3://bucket/key`` or an S3 ``https`` URL of the Item document, when the event only named it.
    origin : str
        ``"sns"`` (an SNS message body), ``"direct"`` (an invoke payload or an SQS message body).
    region, force :
        As in a direct scene payload: clip only this region; redo an Item already clipped.
    """

    item: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    href: str | None = None
    origin: str = "direct"
    region: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if (self.item is None) == (self.href is None):
            raise InvalidItemError("an Item event carries either the Item or the href of one, not both or neither")
        if self.href is not None and urlparse(self.href).scheme not in ("s3", "https"):
            raise InvalidItemError(f"stac_item must be an s3:// or https:// URL, got {self.href[:120]!r}")

    @property
    def uri(self) -> str:
        """What logs and item-level records name before the Item is read: its href, else ``stac://collection/id``."""
        if self.href is not None:
            return self.href
        return item_scene(self.item or {})

    def to_message(self) -> dict[str, Any]:
        """The queue message for this ref (backfill): ``{"stac_item": href or Item, "region"?, "force"?}``;
        ``item_ref(ref.to_message())`` gives back an equal ref (same Item, href, region and force)."""
        message: dict[str, Any] = {"stac_item": self.href if self.href is not None else dict(self.item or {})}
        if self.region is not None:
            message["region"] = self.region
        if self.force:
            message["force"] = True
        return message


def item_scene(item: Mapping[str, Any]) -> str:
    """The records-table identity of an Item as a whole (filter skips, failures before any asset):
    ``stac://<collection>/<id>`` (``-`` for an Item without a collection)."""
    return f"stac://{item.get('collection') or '-'}/{item.get('id') or '?'}"


def item_ref(payload: Mapping[str, Any], *, via_sns: bool) -> ItemRef | None:
    """The ItemRef a payload describes, or None when it is not a STAC shape (the caller tries the others).

    Raises :class:`InvalidItemError` for a STAC shape with a bad field (``stac_item`` not a URL string,
    ``force`` not a boolean…): permanent, since the same bytes never parse.
    """
    origin = "sns" if via_sns else "direct"
    if is_stac_item(payload):
        return ItemRef(item=dict(payload), origin=origin)
    if "stac_item" in payload:
        named = payload["stac_item"]
        if is_stac_item(named):  # the backfill's form: the Item itself, with region/force beside it
            return ItemRef(item=dict(named), origin=origin, region=_region(payload), force=_force(payload))
        if not isinstance(named, str) or not named:
            raise InvalidItemError(f"'stac_item' must be a URL string or a STAC Item, got {str(named)[:80]!r}")
        return ItemRef(href=named, origin=origin, region=_region(payload), force=_force(payload))
    if _USGS_PRODUCT in payload and _USGS_LOCATION in payload:
        return ItemRef(href=usgs_item_href(payload), origin=origin)
    return None


def usgs_item_href(message: Mapping[str, Any]) -> str:
    """The STAC document USGS keeps beside a product's bands: ``<s3_location><id>_stac.json`` for Level-1,
    ``<s3_location><id>_SR_stac.json`` for Level-2 (its surface-reflectance Item; ``_ST_`` is the thermal one)."""
    product, location = message.get(_USGS_PRODUCT), message.get(_USGS_LOCATION)
    if not isinstance(product, str) or not product or not isinstance(location, str) or not location.startswith("s3://"):
        raise InvalidItemError(f"USGS notification without a product id and an s3:// location: {product!r}, {location!r}")
    suffix = "_SR_stac.json" if "_L2" in product else "_stac.json"
    return location.rstrip("/") + "/" + product + suffix


def _region(payload: Mapping[str, Any]) -> str | None:
    region = payload.get("region")
    if region is not None and (not isinstance(region, str) or not region):
        raise InvalidItemError(f"'region' must be a non-empty string, got {region!r}")
    return region


def _force(payload: Mapping[str, Any]) -> bool:
    force = payload.get("force", False)
    if not isinstance(force, bool):
        raise InvalidItemError(f"'force' must be true or false, got {force!r}")
    return force
