"""``sceneclip boundaries``: compile and inspect boundary stores (parses options, calls sceneclip.aws.store)."""

from __future__ import annotations

import json
from typing import Any

import click

from sceneclip.cli.options import fail as _fail
from sceneclip.errors import SceneclipError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def boundaries() -> None:
    """Compile and inspect boundary stores.

    A boundary store is a vector file compiled for the clipping function: one repaired (Multi)Polygon per
    region (every feature sharing a region id dissolved into one), a small index.json with each region's
    bounding box and content hash, and a version that changes whenever a geometry does. The function reads
    only the index and the regions it clips to, without geopandas, and reloads when the index changes.

    A store lives in a directory or at s3://bucket/prefix (AWS_ENDPOINT_URL retargets S3). Geometries keep
    the vector file's CRS.
    """


@boundaries.command(short_help="Compile a vector file into a boundary store.")
@click.argument("vector")
@click.option("--region-field", required=True, help="Attribute whose value (as text) is the region id, e.g. 'name'.")
@click.option("--out", "out", required=True, help="Store location: a directory or s3://bucket/prefix.")
@click.option("--layer", default=None, help="Layer of a multi-layer vector file (GeoPackage).")
@click.option("--grid", default=None, metavar="CRS,RES",
              help="Default target grid of every region (CRS,RES or CRS,XRES,YRES; origin on multiples of RES): "
                   "every clip of a region lands on it. Per-feature fields grid_crs/grid_res override it.")
@click.option("--json", "as_json", is_flag=True, help="Print the build summary as JSON on stdout.")
def build(vector: str, region_field: str, out: str, layer: str | None, grid: str | None, as_json: bool) -> None:
    """Compile VECTOR (any file geopandas reads) into a boundary store at --out.

    Features are repaired (make_valid, polygons only); features without a region id or without a polygon
    are dropped and listed. Region files are written first, index.json last, so readers never see a
    partial store.

    \b
    Example:
      sceneclip boundaries build countries.shp --region-field name --out s3://my-bucket/boundaries/countries
      sceneclip boundaries build parks.gpkg --region-field id --out ./store --grid EPSG:32613,30
    """
    from sceneclip.tools.store_build import build_store

    try:
        summary = build_store(vector, region_field, out, layer=layer, grid=grid)
    except SceneclipError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(
            f"{summary.uri}: {summary.regions} regions from {summary.source} (field {summary.region_field!r}, "
            f"{summary.crs}), version {summary.version[:12]}, {summary.bytes_written} bytes written"
        )
    for line in summary.dropped:
        click.echo(f"sceneclip: warning: dropped {line}", err=True)


@boundaries.command("ls", short_help="List a store's regions and bounding boxes.")
@click.argument("uri")
@click.option("--json", "as_json", is_flag=True, help="Print the regions and their bounding boxes as JSON.")
def ls(uri: str, as_json: bool) -> None:
    """List the regions of the store at URI with their bounding boxes (store CRS): id, minx, miny, maxx, maxy.

    Reads index.json only.
    """
    from sceneclip.aws.store import BoundaryStore

    try:
        store = BoundaryStore.load(uri)
    except SceneclipError as exc:
        _fail(str(exc))
    if as_json:
        doc: dict[str, Any] = {
            "uri": store.uri, "version": store.version, "region_field": store.region_field,
            "source": store.source, "created_at": store.created_at, "crs": store.crs.to_string(),
            "regions": {rid: list(store.bbox(rid)) for rid in store.regions()},
        }
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    click.echo(
        f"# {store.uri}: {len(store)} regions of field {store.region_field!r} from {store.source}, "
        f"{store.crs.to_string()}, version {store.version[:12]}",
        err=True,
    )
    for rid in store.regions():
        click.echo("\t".join([rid, *(f"{v:.6f}" for v in store.bbox(rid))]))
