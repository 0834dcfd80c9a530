"""`sceneclip batch`: the click wrapper over :mod:`sceneclip.tools.batch`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from sceneclip.cli.options import build_options, clip_options
from sceneclip.errors import SceneclipError
from sceneclip.tools.batch import REPORT_NAME, run_batch
from sceneclip.tools.batch_jobs import jobs_from_manifest, jobs_from_sources


@click.command()
@click.argument("manifest", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--sources", default=None, help="Glob of scenes, e.g. 'scenes/*.tif' (quote it): each is paired with every region it overlaps.")
@click.option("--boundary", default=None, help="Vector file of regions (with --sources).")
@click.option("--region-field", default=None, help="Attribute naming regions, e.g. 'name'. Without it the whole layer is one region.")
@click.option("--layer", default=None, help="Layer of a multi-layer boundary file (GeoPackage).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Output folder (with --sources): OUT/REGION/SCENE.tif.")
@click.option("--output-key", default=None, help="Output path template under --out, e.g. '{region_slug}/{date}/{key_slug}' "
              "(placeholders as SCENECLIP_OUTPUT_KEY; {key} is the file name). Default: REGION/FILE.")
@click.option("--group-by", default=None, metavar="REGEX",
              help="With --sources: a regex whose named group (?P<group>…) of each file name (e.g. a date) makes one "
                   "mosaic per (group, region), in file-name order (first valid pixel wins): OUT/REGION/GROUP.tif.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("--report", default=None, type=click.Path(dir_okay=False), help="JSON-lines report. Default: OUT/report.jsonl, or MANIFEST.report.jsonl beside the manifest.")
@click.option("--no-resume", is_flag=True, help="Redo every job, even those the report shows verified with unchanged outputs.")
@click.option("--stac", is_flag=True, help="Also write a STAC Item next to each COG (same stem, .stac.json).")
@click.option("--no-progress", is_flag=True, help="No progress bar (it is also off when stderr is not a terminal).")
@clip_options
def batch(manifest: str | None, sources: str | None, boundary: str | None, region_field: str | None,
          layer: str | None, out_dir: str | None, output_key: str | None, group_by: str | None, workers: int, report: str | None, no_resume: bool, stac: bool,
          no_progress: bool, **opts: Any) -> None:
    """Clip many scenes to many regions on this machine, in parallel, resumably.

    Either MANIFEST, a CSV (header source,boundary,region,output[,region_field,layer]) or JSON-lines file
    with one job per row (relative paths are relative to the manifest), or --sources GLOB --boundary FILE
    --out DIR, which pairs every scene with every region (--region-field) it overlaps.

    Every job's verification record is appended to the JSON-lines --report; a failed job never stops the
    batch. A rerun skips jobs already verified with the same inputs and options whose output is unchanged.
    Exit status 0 when every job is ok, 1 when any failed (a summary line on stderr either way).

    \b
    Examples:
      sceneclip batch jobs.csv --workers 4
      sceneclip batch --sources 'scenes/*.tif' --boundary regions.gpkg --region-field name --out clips --stac
      sceneclip batch --sources 'scenes/*.tif' --boundary regions.gpkg --region-field name --out mosaics --group-by '_(?P<group>[0-9]{8})_' --src-nodata 0
    """
    if manifest and group_by:
        raise click.UsageError("--group-by groups --sources scenes into mosaics; a manifest lists its own jobs")
    if group_by and output_key:
        raise click.UsageError("--group-by names its outputs REGION/GROUP.tif; --output-key cannot be combined with it")
    if manifest and output_key:
        raise click.UsageError("--output-key names outputs of --sources jobs; a manifest names its own outputs")
    if manifest and (sources or out_dir):
        raise click.UsageError("give MANIFEST, or --sources/--boundary/--out, not both")
    if not manifest and not (sources and boundary and out_dir):
        raise click.UsageError("give MANIFEST, or all of --sources, --boundary and --out")
    try:
        options = build_options(**opts)
        if manifest:
            jobs = jobs_from_manifest(manifest, region_field=region_field, layer=layer)
            report = report or str(Path(manifest).with_suffix(".report.jsonl"))
        else:
            jobs = jobs_from_sources(sources, boundary, region_field, out_dir, layer, output_key=output_key,  # type: ignore[arg-type]
                                     group_by=group_by)
            report = report or os.path.join(out_dir, REPORT_NAME)  # type: ignore[arg-type]
        if not jobs:
            click.echo(f"sceneclip batch: no scene overlaps any region of {boundary}; nothing to do", err=True)
            return
        summary = run_batch(jobs, workers=workers, report=report, options=options, resume=not no_resume,
                            progress=not no_progress, stac=stac)
    except SceneclipError as exc:
        click.echo(f"sceneclip: error: {' '.join(str(exc).split())}", err=True)
        sys.exit(1)
    for line in summary.records:
        if line["status"] != "ok":
            click.echo(f"sceneclip batch: failed: {line['job']['source']} × {line['job']['region'] or line['job']['boundary']}: "
                       f"{line.get('error_type')}: {line.get('error')}", err=True)
    click.echo(summary.line(), err=True)
    sys.exit(summary.exit_code)
