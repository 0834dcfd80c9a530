"""``sceneclip report``: one self-contained HTML page of verification records (parses options, calls tools.report)."""

from __future__ import annotations

import click

from sceneclip.cli.options import fail
from sceneclip.errors import SceneclipError


@click.command(short_help="Write an HTML report (map, quick-looks, verification table) of records.")
@click.argument("records", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@click.option("--boundaries", default=None,
              help="Boundary store (directory or s3://bucket/prefix) to draw regions from, instead of the one each record names.")
@click.option("--title", default="sceneclip report", show_default=True, help="Title of the page.")
def report(records: tuple[str, ...], out: str, boundaries: str | None, title: str) -> None:
    """Write one self-contained HTML page for RECORDS.

    RECORDS are files of verification records: a batch report (JSON lines), a records-table dump
    (`aws dynamodb scan` JSON, or plain items as JSON / JSON lines), `sceneclip clip --json` output, or the
    demo's records.json. The page shows a map of the region boundaries and clip footprints (inline SVG),
    the quick-look of every clip with its boundary drawn (read from the COG's overviews; s3:// outputs are
    read over GDAL's /vsis3/, AWS_ENDPOINT_URL honoured), and the verification table. It needs no network
    when viewed.
    """
    from sceneclip.tools.report import write_report

    try:
        summary = write_report(list(records), out, title=title, boundaries=boundaries)
    except SceneclipError as exc:
        fail(str(exc))
        return
    status = ", ".join(f"{v} {k}" for k, v in sorted(summary.by_status.items()))
    click.echo(f"{summary.path}: {summary.records} records ({status}), {summary.quicklooks} quick-looks, "
               f"{summary.regions_drawn} regions and {summary.footprints_drawn} footprints on the map")
    for region, why in summary.problems.items():
        click.echo(f"  boundary of {region} not drawn: {why}", err=True)
