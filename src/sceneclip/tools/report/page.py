"""The report's single HTML page: inline CSS, inline SVG, embedded PNGs — no script, no network at view time."""

from __future__ import annotations

import os
from html import escape
from typing import Any

from sceneclip.tools.report.build import Figure

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2733;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .meta{color:#5b6b7c;margin:0 0 12px}
.summary span{display:inline-block;margin-right:14px;padding:2px 8px;border-radius:10px;background:#e8edf2}
.summary .ok{background:#d7f2df} .summary .failed{background:#f8d9d6}
svg.map{background:#fff;border:1px solid #d0d7de;max-width:100%;height:auto}
svg.map .sea{fill:#f3f6f9} svg.map .region{fill:#cfe3c8;fill-opacity:.55;stroke:#3f6f3a;stroke-width:1.2}
svg.map .footprint{fill:none;stroke:#c2410c;stroke-width:1.6;stroke-dasharray:5 3}
svg.map .label{font-size:12px;fill:#1d2733;paint-order:stroke;stroke:#fff;stroke-width:3px}
svg.map .coord{font-size:11px;fill:#5b6b7c} svg.map .scalebar line{stroke:#1d2733;stroke-width:2}
svg.map .scalebar text{font-size:11px;fill:#1d2733}
.legend{color:#5b6b7c;font-size:12px} .legend b{display:inline-block;width:18px;height:10px;margin:0 4px 0 12px}
.gallery{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start} figure{margin:0;background:#fff;border:1px solid #d0d7de;padding:6px}
figure img{display:block;max-width:240px;height:auto;image-rendering:pixelated} figcaption{font-size:12px;margin-top:4px}
table{border-collapse:collapse;background:#fff;font-size:13px} th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6} td.num{text-align:right;font-variant-numeric:tabular-nums} tr.failed td.status{color:#b42318;font-weight:600}
tr.ok td.status{color:#137333;font-weight:600} .note{color:#5b6b7c;font-size:12px}
"""


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _ratio(part: int | None, whole: int | None) -> str:
    return f"{part / whole:.1%}" if part is not None and whole else "–"


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("<tr><th>scene</th><th>region</th><th>status</th><th>valid fraction</th><th>bytes fetched</th>"
            "<th>object size</th><th>fetched / object</th><th>output size</th><th>errors / failed checks</th></tr>")
    body = []
    for r in rows:
        words = r["error"] or ""
        if r["failed_checks"]:
            words = (words + "; " if words else "") + "failed checks: " + ", ".join(r["failed_checks"])
        if r["status"] == "failed" and r["transient"] is not None:
            words += " (retried: may pass)" if r["transient"] else " (permanent: needs new input)"
        valid = f"{r['valid_fraction']:.1%}" if r["valid_fraction"] is not None else "–"
        body.append(
            f'<tr class="{escape(r["status"])}"><td>{escape(r["scene"])}</td><td>{escape(str(r["region"]))}</td>'
            f'<td class="status">{escape(r["status"])}</td><td class="num">{valid}</td>'
            f'<td class="num">{_bytes(r["bytes_fetched"])}</td><td class="num">{_bytes(r["source_size"])}</td>'
            f'<td class="num">{_ratio(r["bytes_fetched"], r["source_size"])}</td>'
            f'<td class="num">{_bytes(r["output_size"])}</td><td>{escape(words)}</td></tr>')
    return f'<table class="verification">{head}{"".join(body)}</table>'


def _gallery(figures: list[Figure]) -> str:
    items = []
    for fig in figures:
        caption = f"{escape(os.path.basename(fig.scene))} — {escape(fig.region)}"
        if fig.uri:
            items.append(f'<figure><img src="{fig.uri}" alt="quick-look of {caption}"><figcaption>{caption}'
                         "</figcaption></figure>")
        else:
            items.append(f'<p class="note">{caption}: no quick-look ({escape(fig.problem or "")})</p>')
    return f'<div class="gallery">{"".join(items)}</div>'


def render_page(*, title: str, generated: str, counts: dict[str, int], svg: str, figures: list[Figure],
                rows: list[dict[str, Any]], problems: dict[str, str]) -> str:
    """The whole document."""
    summary = "".join(f'<span class="{escape(k)}">{escape(k)}: {v}</span>' for k, v in counts.items())
    notes = "".join(f'<p class="note">boundary of {escape(r)} not drawn: {escape(why)}</p>' for r, why in problems.items())
    legend = ('<p class="legend"><b style="background:#cfe3c8;border:1px solid #3f6f3a"></b>region boundary'
              '<b style="border:2px dashed #c2410c"></b>clip footprint (output extent)</p>')
    map_html = svg + legend if svg else '<p class="note">nothing to map (no boundary or footprint known)</p>'
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
            f'<h1>{escape(title)}</h1><p class="meta">{escape(generated)}</p><p class="summary">{summary}</p>'
            f"<h2>Map</h2>{map_html}{notes}<h2>Quick-looks</h2>"
            '<p class="note">Each clip read from its COG\'s overviews; its region boundary drawn in yellow.</p>'
            f"{_gallery(figures)}<h2>Verification</h2>{_table(rows)}</body></html>")
