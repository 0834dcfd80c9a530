"""The ``sceneclip`` command line: parses options and calls the core, nothing else (rio-cogeo's model)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from sceneclip.core.threads import quiet_blas_threads

quiet_blas_threads()  # before the imports below load numpy (see core/threads.py)

from sceneclip import __version__  # noqa: E402
from sceneclip.cli.options import fail, build_options, clip_options  # noqa: E402
from sceneclip.errors import SceneclipError  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="sceneclip")
def main() -> None:
    """sceneclip: clip satellite scenes to region boundaries as verified Cloud Optimized GeoTIFFs.

    The same core runs here, in the AWS Lambda function and in the batch/backfill tools.
    """
    from sceneclip.core.gdalenv import skip_indirection_drivers

    skip_indirection_drivers()  # before GDAL registers its drivers: no VRT/WMS/GTI in this process


@main.command()
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.argument("boundary")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--layer", default=None, help="Layer of a multi-layer boundary file (GeoPackage).")
@click.option("--region-field", default=None, help="Attribute that names regions, e.g. 'name'.")
@click.option("--region", default=None, help="Value of --region-field to clip to, e.g. 'Bahamas'.")
@clip_options
@click.option("--json", "as_json", is_flag=True, help="Print the verification record as JSON on stdout.")
@click.option("--overwrite/--no-overwrite", default=True, show_default=True, help="Replace OUTPUT if it exists.")
@click.option("--requester-pays", is_flag=True,
              help="S3 sources: send x-amz-request-payer (Landsat Collection 2 and other requester-pays "
                   "archives); their requests and transfer are billed to your account.")
def clip(sources: tuple[str, ...], boundary: str, output: str, layer: str | None, region_field: str | None,
         region: str | None, as_json: bool, overwrite: bool, requester_pays: bool, **opts: Any) -> None:
    """Clip SOURCE to BOUNDARY and write a verified COG to OUTPUT.

    SOURCE is any raster rasterio opens: a local path, /vsis3/bucket/key or s3://bucket/key
    (AWS_ENDPOINT_URL retargets S3; the bucket's region is looked up once and signed for).
    BOUNDARY is any vector file geopandas reads.

    Several SOURCEs make one mosaic: on the target grid if given (--dst-crs/--res, or the region's grid),
    else on the first source's grid; where they overlap the first valid pixel in the order given wins
    (gdalwarp lets later inputs win). Use --src-nodata for sources that declare no nodata.

    Exit status 0 when every verification check holds; 1 with a one-line reason on stderr, and no OUTPUT
    file, for bad input or a failed check.

    \b
    Example:
      sceneclip clip scene.tif countries.shp bahamas.tif --region-field name --region Bahamas --json
      sceneclip clip row77.tif row78.tif region.geojson mosaic.tif --src-nodata 0
    """
    import rasterio

    from sceneclip.tools.vectors import load_boundary
    from sceneclip.core.clip import run_clip
    from sceneclip.core.gdalenv import gdal_s3_options

    if os.path.exists(output) and not overwrite:
        fail(f"{output} exists (use --overwrite)")
    try:
        options = build_options(**opts)
        bnd = load_boundary(boundary, layer=layer, region_field=region_field, region=region)
    except SceneclipError as exc:
        fail(str(exc))
    session = None
    env = gdal_s3_options() if any(s.startswith(("s3://", "/vsis3/")) for s in sources) else {}
    if env:
        from sceneclip.aws.sources import workstation_reads

        try:
            extra, session = workstation_reads(sources, requester_pays=requester_pays)
        except SceneclipError as exc:
            fail(str(exc))
        env.update(extra)
    with rasterio.Env(session=session, **env):
        result = run_clip(sources[0] if len(sources) == 1 else list(sources), bnd, options, output=output)
    if as_json:
        click.echo(result.record.to_json(indent=2))
    if not result.record.ok:
        error = result.record.error or "clip failed"
        if env and not requester_pays:
            from sceneclip.aws.sources import requester_pays_hint

            error = requester_pays_hint(sources, error)
        fail(error)
    if not as_json:
        rec = result.record
        click.echo(
            f"{output}: {rec.width}x{rec.height}x{rec.count} {rec.dtype}, {rec.valid_pixels} valid pixels "
            f"({rec.valid_fraction:.1%}), {rec.size_bytes} bytes, all checks passed",
            err=True,
        )


@main.command()
@click.argument("function_id", default="ClipFunction")
@click.option("-e", "--event", "event_path", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Event JSON file (e.g. events/s3-put.json), or - for stdin.")
@click.option("-n", "--env-vars", type=click.Path(exists=True, dir_okay=False), default=None,
              help="SAM env-vars JSON: {\"ClipFunction\": {\"VAR\": \"value\"}, \"Parameters\": {...}}.")
@click.option("-t", "--template", "template_path", default="template.yaml", show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--parameter-overrides", multiple=True, metavar="KEY=VALUE", help="Template parameter values.")
def invoke(function_id: str, event_path: str, env_vars: str | None, template_path: str, parameter_overrides: tuple[str, ...]) -> None:
    """Run FUNCTION_ID's handler here, the way `sam local invoke` does, without Docker.

    The handler and its environment come from the template (parameter defaults resolved), then the
    env-vars file on top. AWS_ENDPOINT_URL points boto3 and GDAL at moto, LocalStack or MinIO.

    \b
    Example:
      sceneclip invoke ClipFunction -e events/s3-put.json --env-vars env.json
    """
    from sceneclip.tools.local import invoke as local_invoke

    event = json.load(sys.stdin if event_path == "-" else open(event_path))
    overrides = dict(p.split("=", 1) for p in parameter_overrides)
    try:
        response = local_invoke(function_id, event, template_path=template_path, env_vars=env_vars, parameter_overrides=overrides)
    except SceneclipError as exc:
        fail(f"{exc.error_type}: {exc}")
    _echo_json(response)


def _register_subcommands() -> None:
    """Command groups that live in their own modules (kept out of this file so each stays small)."""
    from sceneclip.cli.boundaries import boundaries

    main.add_command(boundaries)
    from sceneclip.cli.batch import batch
    from sceneclip.cli.ops import COMMANDS as ops_commands  # backfill, worker, redrive, status

    main.add_command(batch)
    from sceneclip.cli.report import report

    main.add_command(report)
    for command in ops_commands:
        main.add_command(command)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


_register_subcommands()

if __name__ == "__main__":  # pragma: no cover
    main()
