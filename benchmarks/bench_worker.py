"""Worker throughput: scenes per minute of ``sceneclip worker`` at ``--concurrency 1`` and ``2``, same scenes.

Issue 13's scaling figure. Scenes big enough that clipping dominates the per-message work: SIZE×SIZE×3
uint16 COGs (default 4096², 62 MB, the ``write_synthetic`` scene), each clipped to REGIONS boundary-store
regions (irregular blobs of about 12 % of the scene each). Everything runs on loopback: one moto server
(S3, SQS, DynamoDB) with the resources ``template.yaml`` declares, the boundary store built by
``build_store``, and the worker as a whole process (``sceneclip worker --drain --json``), imports included.

Rounds alternate the contenders (c1, c2, c1, c2, …: load changes on the shared machine spread over both).
Each round gets its own copy of the scenes (new keys), so nothing is skipped as already clipped. The figure
is the worker's own ``busy_messages_per_minute`` (first receive → last success: start-up and the final
empty polls excluded), median over the rounds; the ratio c2 / c1 is what the issue's goal (≥ 1.7× on 2
cores) is about. Nothing is asserted.

The S3 stand-in shares the two cores with the worker, so its CPU is measured too (this process's CPU over
the worker's run), and the table gives the *CPU ceiling*: the scenes per minute the machine's cores allow
at the measured worker + server CPU per scene. moto's ranged GET copies the whole object before slicing
(see ``common.spare_moto_whole_object_reads``), which S3 does not charge to the function's cores; that copy
is removed by default, ``--stock-moto`` measures with it.

    .venv/bin/python benchmarks/bench_worker.py                # 4096², 12 scenes × 3 regions, 2 rounds each
    .venv/bin/python benchmarks/bench_worker.py --quick        # 1024², a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import (DEFAULT_WORKDIR, RESULTS, blob_polygon, markdown_table, median,  # noqa: E402
                    pixel_polygon_to_crs, spare_moto_whole_object_reads, write_synthetic)

BANDS = 3


def regions_file(workdir: Path, size: int, transform, crs: str, n: int) -> Path:
    """``n`` blobs of about 12 % of the scene each, spread over it, as a GeoJSON in the scene's CRS."""
    from shapely.geometry import mapping

    r = math.sqrt(0.12 / math.pi) * size
    features = []
    for i in range(n):
        angle = 2 * math.pi * i / n
        cx, cy = size * (0.5 + 0.25 * math.cos(angle)), size * (0.5 + 0.25 * math.sin(angle))
        poly = pixel_polygon_to_crs(blob_polygon(cx, cy, r, r, n=2.0, wobble=0.04), transform)
        features.append({"type": "Feature", "properties": {"name": f"blob{i}"}, "geometry": mapping(poly)})
    doc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}}, "features": features}
    path = workdir / f"worker_regions_{size}_{n}.geojson"
    path.write_text(json.dumps(doc))
    return path


def start_stack(regions: Path) -> tuple[object, dict[str, str], dict[str, str]]:
    """moto on loopback, the template's resources, the boundary store: (server, names, worker environment)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from common import free_port
    from sceneclip.tools.local import load_template, provision
    from sceneclip.tools.store_build import build_store

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"})
    os.environ.pop("AWS_PROFILE", None)
    sfx = uuid.uuid4().hex[:8]
    names = {"InputBucket": f"in-{sfx}", "OutputBucket": f"out-{sfx}", "DeadLetterQueue": f"dlq-{sfx}",
             "WorkQueue": f"work-{sfx}", "RecordsTable": f"records-{sfx}", "IdempotencyTable": f"idem-{sfx}"}
    made = provision(load_template(HERE.parent / "template.yaml"), names)
    store = f"s3://{names['InputBucket']}/boundaries/blobs"
    build_store(str(regions), "name", store, s3_client=boto3.client("s3"))
    env = {**os.environ, "SCENECLIP_OUTPUT_BUCKET": names["OutputBucket"], "SCENECLIP_OUTPUT_PREFIX": "clipped/",
           "SCENECLIP_BOUNDARIES": store, "SCENECLIP_RECORDS_TABLE": names["RecordsTable"],
           "SCENECLIP_IDEMPOTENCY_TABLE": names["IdempotencyTable"], "POWERTOOLS_TRACE_DISABLED": "true",
           "POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_SERVICE_NAME": "sceneclip",
           "POWERTOOLS_METRICS_NAMESPACE": "sceneclip", "POWERTOOLS_METRICS_DISABLED": "true"}
    return server, {**names, "queue": made["WorkQueue"]}, env


def enqueue_round(names: dict[str, str], scene: Path, count: int, tag: str) -> None:
    """Upload ``count`` copies of the scene under fresh keys and send one message for each."""
    import boto3

    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    bucket = names["InputBucket"]
    first = f"scenes/{tag}/scene-0.tif"
    s3.upload_file(str(scene), bucket, first)
    keys = [first] + [f"scenes/{tag}/scene-{i}.tif" for i in range(1, count)]
    for key in keys[1:]:
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": first})
    entries = [{"Id": str(i), "MessageBody": json.dumps({"bucket": bucket, "key": k})} for i, k in enumerate(keys)]
    for i in range(0, len(entries), 10):  # SQS takes at most 10 entries per batch
        sqs.send_message_batch(QueueUrl=names["queue"], Entries=entries[i:i + 10])


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_worker_process(names: dict[str, str], env: dict[str, str], concurrency: int) -> tuple[dict, float, float]:
    """``sceneclip worker --drain --json`` as a whole process: (its summary, the worker's CPU s — its
    spawned receive loops included —, this process's CPU s meanwhile, i.e. the moto server's)."""
    code = "from sceneclip.cli.ops import worker; worker()"
    argv = [sys.executable, "-c", code, "--queue", names["queue"], "--concurrency", str(concurrency),
            "--wait-time", "1", "--drain", "--timeout", "300", "--json"]
    children, own = _cpu(resource.RUSAGE_CHILDREN), _cpu(resource.RUSAGE_SELF)
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800).stdout
    worker_cpu, moto_cpu = _cpu(resource.RUSAGE_CHILDREN) - children, _cpu(resource.RUSAGE_SELF) - own
    return json.loads(out[out.index('{\n  "queue_url"'):]), worker_cpu, moto_cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--scenes", type=int, default=12,
                    help="scenes per round (default 12: with few, the last scene of one loop dominates the span)")
    ap.add_argument("--regions", type=int, default=3, help="regions per scene (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per concurrency (default 2)")
    ap.add_argument("--quick", action="store_true", help="1024² scenes, 4 per round, one round each")
    ap.add_argument("--stock-moto", action="store_true",
                    help="keep moto's whole-object copy on every ranged GET (server CPU as moto ships it)")
    ap.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.scenes, args.rounds = 1024, 4, 1
    workdir = Path(args.workdir)
    import rasterio

    name = f"synthetic_{args.size}x{args.size}x{BANDS}_u16_cog.tif"
    scene = write_synthetic(workdir / name, args.size, BANDS, cog=True)
    with rasterio.open(scene) as ds:
        regions = regions_file(workdir, args.size, ds.transform, ds.crs.to_string(), args.regions)
    if not args.stock_moto:
        spare_moto_whole_object_reads()
    server, names, env = start_stack(regions)
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[tuple[float, float]]] = {1: [], 2: []}  # (worker, moto) CPU s per scene
    load = [os.getloadavg()[0]]
    try:
        for n in range(args.rounds):
            for conc in (1, 2):
                enqueue_round(names, scene, args.scenes, f"r{n}c{conc}")
                summary, worker_cpu, moto_cpu = run_worker_process(names, env, conc)
                cpu[conc].append((worker_cpu / args.scenes, moto_cpu / args.scenes))
                ok = summary["succeeded"] == args.scenes and not summary["errors"]
                rates[conc].append(summary["busy_messages_per_minute"])
                load.append(os.getloadavg()[0])
                print(f"  round {n + 1} concurrency {conc}: {summary['succeeded']}/{args.scenes} scenes, "
                      f"{summary['busy_messages_per_minute']} scenes/min busy, CPU per scene: worker "
                      f"{cpu[conc][-1][0]:.1f} s, moto {cpu[conc][-1][1]:.1f} s, load {load[-1]:.1f}"
                      + ("" if ok else f"  PROBLEM: {summary['errors']}"), file=sys.stderr)
    finally:
        server.stop()
    c1, c2 = median(rates[1]), median(rates[2])
    cores = os.cpu_count() or 1

    def cpu_cells(conc: int) -> list[str]:
        worker, server = median([w for w, _ in cpu[conc]]), median([m for _, m in cpu[conc]])
        ceiling = 60 * cores / (worker + server)
        rate = c1 if conc == 1 else c2
        return [f"{worker:.1f}", f"{server:.1f}", f"{ceiling:.1f}", f"{rate / ceiling:.0%}",
                f"{rate * (worker + server) / 60:.2f}"]

    rows = [[1, f"{c1:.1f}", ", ".join(f"{r:.1f}" for r in rates[1]), "1.00×", *cpu_cells(1)],
            [2, f"{c2:.1f}", ", ".join(f"{r:.1f}" for r in rates[2]), f"{c2 / c1:.2f}×" if c1 else "n/a",
             *cpu_cells(2)]]
    text = "\n".join([
        f"# Worker throughput ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
        f"{args.scenes} scenes per round, {args.size}²×{BANDS} uint16 COG, {args.regions} regions of ~12 % each, "
        f"{args.rounds} rounds per concurrency (alternating), {os.cpu_count()} CPUs, load (1 min) "
        f"{min(load):.1f}–{max(load):.1f}, moto on the same cores"
        f"{' as it ships (whole-object copy per ranged GET)' if args.stock_moto else ' (ranged GETs without moto’s whole-object copy)'}.", "",
        markdown_table(["concurrency", "scenes/min (median, busy span)", "rounds", "× concurrency 1",
                        "worker CPU s / scene", "moto CPU s / scene", "CPU ceiling scenes/min",
                        "of ceiling", "cores busy"], rows), "",
        "CPU per scene: the worker process and its receive loops (`RUSAGE_CHILDREN`), and this process — the "
        "moto server answering every S3, SQS and DynamoDB request — over the same span. CPU ceiling: "
        f"60 s × {cores} cores / (worker + moto CPU per scene). Cores busy: scenes/min × CPU per scene / 60; "
        "the c2 / c1 ratio cannot exceed the cores / the cores concurrency 1 already keeps busy.", "",
        f"Goal (issue 13): concurrency 2 ≥ 1.7× concurrency 1 — {'met' if c1 and c2 / c1 >= 1.7 else 'not met'}.",
    ])
    stem = "bench_worker" + ("" if args.size == 4096 else f"_{args.size}") + ("_stock_moto" if args.stock_moto else "")
    out = RESULTS / f"{stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
