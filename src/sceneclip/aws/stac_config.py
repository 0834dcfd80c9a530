"""The STAC Item settings (``SCENECLIP_STAC_*``), read once at cold start with the rest of
:class:`~sceneclip.aws.config.Settings`; each wrong value is a ConfigError naming its variable."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sceneclip.core.stac_filter import ItemFilter
from sceneclip.errors import ConfigError

DEFAULT_MAX_ITEM_BYTES = 1024 * 1024  # Earth Search and USGS Items are 10-40 kB; SNS caps messages at 256 KiB


@dataclass(frozen=True)
class StacSettings:
    """How archive STAC Items are clipped.

    Attributes
    ----------
    assets : tuple of str
        ``SCENECLIP_STAC_ASSETS``: asset keys to clip, in order; empty = every GeoTIFF asset with the ``data`` role.
    stack : bool
        ``SCENECLIP_STAC_STACK``: False, one COG per asset and region; True, one multi-band COG per region of
        the selected assets on one grid (:mod:`sceneclip.core.stack`).
    filter : ItemFilter or None
        ``SCENECLIP_STAC_FILTER``: CQL2-text on the Item's properties, checked before any asset is opened.
    max_item_bytes : int
        ``SCENECLIP_MAX_ITEM_BYTES``: the largest Item document fetched for ``{"stac_item": URL}``.
    """

    assets: tuple[str, ...] = ()
    stack: bool = False
    filter: ItemFilter | None = None
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StacSettings:
        assets = tuple(dict.fromkeys(a for a in re.split(r"[,\s]+", env.get("SCENECLIP_STAC_ASSETS") or "") if a))
        raw_stack = (env.get("SCENECLIP_STAC_STACK") or "false").strip().lower()
        stack = raw_stack in ("1", "true", "yes", "on")
        if not stack and raw_stack not in ("0", "false", "no", "off", ""):
            raise ConfigError(f"SCENECLIP_STAC_STACK={raw_stack!r} is not a boolean; use true or false")
        text = (env.get("SCENECLIP_STAC_FILTER") or "").strip()
        raw_max = (env.get("SCENECLIP_MAX_ITEM_BYTES") or "").strip()
        try:
            max_bytes = int(raw_max) if raw_max else DEFAULT_MAX_ITEM_BYTES
        except ValueError as exc:
            raise ConfigError(f"SCENECLIP_MAX_ITEM_BYTES={raw_max!r} is not an integer") from exc
        if max_bytes <= 0:
            raise ConfigError(f"SCENECLIP_MAX_ITEM_BYTES={raw_max!r} must be a positive number of bytes")
        return cls(assets=assets, stack=stack, filter=ItemFilter.parse(text) if text else None,
                   max_item_bytes=max_bytes)
