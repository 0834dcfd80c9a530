"""``sceneclip report``: one self-contained HTML page for a set of verification records.

The page holds a map of the region boundaries and clip footprints (inline SVG), the quick-look of every clip
with its boundary drawn (PNG embedded as base64, read from the COG's overviews) and the verification table
(status, valid fraction, bytes fetched vs object size, errors in words). Nothing is fetched when the page is
viewed. Modules: ``inputs`` (reading records), ``boundaries`` (finding geometries again), ``build`` (rows,
figures, shapes), ``svgmap``, ``quicklook`` + ``png`` (pictures without GDAL's PNG driver), ``page`` (HTML).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sceneclip.tools.report.inputs import ReportEntry, load_records

__all__ = ["ReportEntry", "ReportSummary", "load_records", "write_report"]


@dataclass(frozen=True)
class ReportSummary:
    """What a report shows: where it was written, and how many records, quick-looks and map shapes."""

    path: str
    records: int
    by_status: dict[str, int]
    quicklooks: int
    regions_drawn: int
    footprints_drawn: int
    problems: dict[str, str] = field(default_factory=dict)


def write_report(
    records: list[str | Path] | list[ReportEntry],
    out: str | Path,
    *,
    title: str = "sceneclip report",
    boundaries: str | None = None,
    s3_client: Any = None,
    source_sizes: dict[str, int] | None = None,
) -> ReportSummary:
    """Write the HTML report of ``records`` (files to read, or entries already loaded) to ``out``.

    Parameters
    ----------
    boundaries : str, optional
        A boundary-store URI to draw regions from, instead of the location each record names.
    source_sizes : dict, optional
        Known object sizes by source URI (saves a HEAD per scene); others are looked up (HEAD / stat).

    Returns
    -------
    ReportSummary
    """
    from sceneclip.tools.report.boundaries import BoundaryFinder
    from sceneclip.tools.report.build import map_shapes, object_size, quicklook_uri, table_row
    from sceneclip.tools.report.page import render_page
    from sceneclip.tools.report.svgmap import render_map

    entries = [e for e in records if isinstance(e, ReportEntry)] or load_records(list(records))  # type: ignore[arg-type]
    finder = BoundaryFinder(store=boundaries, s3_client=s3_client)
    finder.remember_jobs(entries)
    sizes = dict(source_sizes or {})
    for scene in {e.record.source for e in entries} - set(sizes):
        sizes[scene] = object_size(scene, s3_client)
    shapes = map_shapes(entries, finder)
    figures = [quicklook_uri(e, finder.boundary(e)) for e in entries if e.record.status == "ok"]
    counts = dict(Counter(e.record.status for e in entries))
    html = render_page(
        title=title, generated=f"{len(entries)} records · generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        counts={"records": len(entries), **counts}, svg=render_map(shapes), figures=figures,
        rows=[table_row(e, sizes.get(e.record.source)) for e in entries], problems=finder.problems,
    )
    path = Path(out)
    path.write_text(html, encoding="utf-8")
    return ReportSummary(
        path=str(path), records=len(entries), by_status=counts, quicklooks=sum(1 for f in figures if f.uri),
        regions_drawn=sum(1 for s in shapes if s.kind == "region"),
        footprints_drawn=sum(1 for s in shapes if s.kind == "footprint"), problems=dict(finder.problems),
    )
