"""The report's map: region boundaries and clip footprints as inline SVG (nothing fetched at view time).

Projection: plain equirectangular around the map's mean latitude (x = lon·cos φ₀, y = lat), which keeps
shapes and the scale bar honest over the extents of a report (a few hundred km) without a map library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

KM_PER_DEGREE = 111.32  # along a meridian, and along a parallel times cos(latitude)


@dataclass(frozen=True)
class MapShape:
    """One thing on the map: ``kind`` is ``region`` or ``footprint``; ``css`` extra classes (e.g. the status)."""

    kind: str
    label: str
    geometry: Any  # shapely geometry in lon/lat
    css: str = ""


@dataclass(frozen=True)
class _Frame:
    """lon/lat → SVG pixel coordinates."""

    west: float
    north: float
    coslat: float
    scale: float  # px per projected degree
    pad: float

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        return (self.pad + (lon - self.west) * self.coslat * self.scale, self.pad + (self.north - lat) * self.scale)


def _frame(shapes: list[MapShape], width: int, max_height: int, pad: int) -> tuple[_Frame, int]:
    from shapely.ops import unary_union

    west, south, east, north = unary_union([s.geometry for s in shapes]).bounds
    coslat = max(math.cos(math.radians((south + north) / 2)), 0.05)
    span_x, span_y = max((east - west) * coslat, 1e-9), max(north - south, 1e-9)
    scale = min((width - 2 * pad) / span_x, (max_height - 2 * pad) / span_y)
    height = int(math.ceil(span_y * scale + 2 * pad))
    return _Frame(west, north, coslat, scale, pad), height


def _path(geom: Any, frame: _Frame) -> str:
    parts = []
    polygons = getattr(geom, "geoms", [geom])
    for poly in polygons:
        if poly.geom_type != "Polygon":
            continue
        for ring in [poly.exterior, *poly.interiors]:
            pts = [frame.xy(x, y) for x, y in ring.coords]
            parts.append("M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in pts) + " Z")
    return " ".join(parts)


def _nice_km(max_km: float) -> float:
    """The largest 1/2/5 × 10ⁿ km not above ``max_km``."""
    exp = 10 ** math.floor(math.log10(max_km))
    return max(step * exp for step in (1, 2, 5) if step * exp <= max_km)


def _scale_bar(frame: _Frame, height: int, width: int) -> str:
    km_per_px = KM_PER_DEGREE / frame.scale
    km = _nice_km(width / 4 * km_per_px)
    length = km / km_per_px
    x, y = frame.pad, height - frame.pad / 2
    text = f"{km:g} km"
    return (f'<g class="scalebar"><line x1="{x:.1f}" y1="{y:.1f}" x2="{x + length:.1f}" y2="{y:.1f}" />'
            f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x:.1f}" y2="{y + 4:.1f}" />'
            f'<line x1="{x + length:.1f}" y1="{y - 4:.1f}" x2="{x + length:.1f}" y2="{y + 4:.1f}" />'
            f'<text x="{x + length + 6:.1f}" y="{y + 4:.1f}">{text}</text></g>')


def _degrees(value: float, pos: str, neg: str) -> str:
    return f"{abs(value):.2f}°{pos if value >= 0 else neg}"


def render_map(shapes: list[MapShape], *, width: int = 960, max_height: int = 520, pad: int = 36) -> str:
    """An ``<svg>`` element: one ``<path class="region">`` per region, one ``<path class="footprint">``
    per clip footprint, a label per region, a scale bar and the corner coordinates. Empty string when
    there is nothing to draw."""
    shapes = [s for s in shapes if s.geometry is not None and not s.geometry.is_empty]
    if not shapes:
        return ""
    frame, height = _frame(shapes, width, max_height, pad)
    body = []
    for shape in sorted(shapes, key=lambda s: s.kind != "region"):  # footprints on top
        css = " ".join(filter(None, [shape.kind, shape.css]))
        body.append(f'<path class="{escape(css)}" fill-rule="evenodd" d="{_path(shape.geometry, frame)}">'
                    f"<title>{escape(shape.kind)}: {escape(shape.label)}</title></path>")
    for shape in shapes:
        if shape.kind == "region":
            point = shape.geometry.representative_point()
            x, y = frame.xy(point.x, point.y)
            body.append(f'<text class="label" x="{x:.1f}" y="{y:.1f}" text-anchor="middle">{escape(shape.label)}</text>')
    west, north = frame.west, frame.north
    east = west + (width - 2 * pad) / frame.scale / frame.coslat
    south = north - (height - 2 * pad) / frame.scale
    corners = (f'<text class="coord" x="{pad}" y="{pad - 10}">{_degrees(north, "N", "S")} {_degrees(west, "E", "W")}</text>'
               f'<text class="coord" x="{width - pad}" y="{height - 8}" text-anchor="end">'
               f'{_degrees(south, "N", "S")} {_degrees(east, "E", "W")}</text>')
    return (f'<svg class="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="map of regions and clip footprints">'
            f'<rect class="sea" x="0" y="0" width="{width}" height="{height}" />{"".join(body)}'
            f"{_scale_bar(frame, height, width)}{corners}</svg>")
