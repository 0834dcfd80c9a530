"""Filtering STAC Items before any pixel is read: a CQL2-text expression on the Item's properties.

``SCENECLIP_STAC_FILTER='"eo:cloud_cover" < 20 AND "s2:processing_baseline" >= '04.00''`` lets a cloudy or
reprocessed scene be skipped for the price of parsing its announcement. The expression is parsed once (at cold
start, so a typo fails the deployment's first invocation naming the variable) by
:mod:`sceneclip.core.cql2_text` (Basic CQL2 + Advanced Comparison Operators, pure Python, checked against the
``cql2`` reference implementation in the tests: ``cql2`` itself does not fit the Lambda layer's budget).

Property names resolve in the Item's ``properties``, then among its top-level members (``id``, ``collection``),
as the reference implementation does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sceneclip.errors import ConfigError


@dataclass(frozen=True)
class ItemFilter:
    """A parsed CQL2-text filter. ``ItemFilter.parse(text)``; ``matches(item)`` evaluates it on an Item."""

    text: str
    _expr: Any = field(repr=False, compare=False, default=None)

    @classmethod
    def parse(cls, text: str, *, setting: str = "SCENECLIP_STAC_FILTER") -> ItemFilter:
        """Parse and validate ``text``; an invalid expression is a ConfigError naming ``setting``."""
        from sceneclip.core.cql2_text import Cql2Error, parse

        try:
            expr = parse(text)
        except Cql2Error as exc:
            raise ConfigError(f"{setting}={text!r} is not a supported CQL2-text expression: {exc}") from exc
        return cls(text=text, _expr=expr)

    def matches(self, item: Mapping[str, Any]) -> bool:
        """True when the Item passes. Properties are looked up by name (``eo:cloud_cover``); an Item that
        lacks a compared property does not pass (CQL2's comparison with a missing value is not true)."""
        from sceneclip.core.cql2_text import evaluate

        props = {k: v for k, v in item.items() if k not in ("properties", "assets", "links", "geometry")}
        props.update(item.get("properties") or {})
        return evaluate(self._expr, props) is True  # unknown (missing, mismatched types) is not admitted
