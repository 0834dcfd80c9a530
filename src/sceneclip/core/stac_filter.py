"""Filtering STAC Items before any pixel is read: a CQL2-text expression on the Item's properties.

``SCENECLIP_STAC_FILTER='"eo:cloud_cover" < 20 AND "s2:processing_baseline" >= '04.00''`` lets a cloudy or
reprocessed scene be skipped for the price of parsing its announcement. The expression is parsed once (at cold
start, so a typo fails the deployment's first invocation naming the variable) with ``cql2`` — the CQL2
reference implementation (Rust, no dependencies) — rather than a hand-written parser of a standard grammar.
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
        try:
            import cql2  # imported only when a filter is configured
        except ImportError as exc:  # not in the geo layer (size): say so at cold start, naming the variable
            raise ConfigError(f"{setting} is set but the cql2 package is not installed here; add it to a layer "
                              "or unset the filter") from exc

        try:
            expr = cql2.Expr(text)
            expr.validate()
        except Exception as exc:  # cql2 raises plain Exception (parse) or its ValidationError
            reason = " ".join(str(exc).split())
            raise ConfigError(f"{setting}={text!r} is not a valid CQL2-text expression: {reason}") from exc
        return cls(text=text, _expr=expr)

    def matches(self, item: Mapping[str, Any]) -> bool:
        """True when the Item passes. Properties are looked up by name (``eo:cloud_cover``); an Item that
        lacks a compared property does not pass (CQL2's comparison with a missing value is not true)."""
        doc = dict(item)
        doc.setdefault("properties", {})
        try:
            return bool(self._expr.matches(doc))
        except Exception:  # a missing property, or a string compared with a number: not admitted
            return False
