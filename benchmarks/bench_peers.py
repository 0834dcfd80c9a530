"""sceneclip against every tool a user could pick instead, on the same clip, each as a whole process.

The case of issue 13: a synthetic SIZE×SIZE×3 uint16 GeoTIFF, tiled 512, DEFLATE (default 8192², the scene
``bench_memory.py`` writes), clipped to the 50 % blob of ``bench_clip.py`` (window ≈ 6714×6383 at 8192²) to
a COG with the same creation options. Contenders, each a fresh process (imports included):

* ``sceneclip clip SRC BOUNDARY OUT`` — default settings, no tuning flags;
* the seed recipe — ``rasterio.mask.mask(crop=True)`` → GTiff MemoryFile → COG copy (``peers_run.py seed``);
* ``gdalwarp -cutline -crop_to_cutline -of COG -multi -wo NUM_THREADS=ALL_CPUS -co NUM_THREADS=ALL_CPUS``
  with the same COG options and ``-dstnodata 0`` (what the others write for a source without nodata);
* rioxarray — ``open_rasterio`` → ``rio.clip(from_disk=True, drop=True)`` → ``rio.to_raster(driver="COG")``;
* rio-tiler — ``Reader.feature()`` at full resolution → COG.

One warm-up round, then ``--repeat`` rounds (contenders interleaved, so load changes on the shared machine
spread over all of them); medians. Wall time, CPU seconds and peak RSS come from ``os.wait4``'s rusage of
each child (CPU is the steadier figure on a loaded machine).
Every output is checked (``peers_check.py``); the issue's goals are reported as pass/fail, never asserted.

    .venv-bench/bin/python benchmarks/bench_peers.py            # 8192² (make bench-peers)
    .venv-bench/bin/python benchmarks/bench_peers.py --quick    # 2048², a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_WORKDIR, RESULTS, blob_polygon, median, pixel_polygon_to_crs, write_synthetic  # noqa: E402
from peers_check import CheckResult, check_output  # noqa: E402
from peers_report import render_report  # noqa: E402

BANDS = 3
HERE = Path(__file__).resolve().parent
CONTENDERS = ("sceneclip", "seed", "gdalwarp", "rioxarray", "riotiler")
ONE_CORE = "sceneclip_1core"  # the same command pinned to one core: the Lambda cost model's second point


@dataclass
class Runs:
    """Every timed run of one contender (the warm-up excluded) and the check of its last output."""

    name: str
    command: list[str]
    walls: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # user + system seconds: steadier than wall under load
    output_bytes: int | None = None
    error: str | None = None
    check: CheckResult | None = None

    @property
    def wall(self) -> float | None:
        return median(self.walls) if self.walls else None

    @property
    def rss(self) -> float | None:
        return median(self.rss_mb) if self.rss_mb else None

    @property
    def cpu(self) -> float | None:
        return median(self.cpu_s) if self.cpu_s else None


def scene_and_boundary(workdir: Path, size: int) -> tuple[Path, Path]:
    """The tiled DEFLATE scene (cached, shared with bench_memory.py) and the 50 % blob as GeoJSON in its CRS."""
    import rasterio
    from shapely.geometry import mapping

    src = write_synthetic(workdir / f"synthetic_{size}x{size}x{BANDS}_u16_deflate.tif", size, BANDS)
    with rasterio.open(src) as ds:
        transform, crs = ds.transform, ds.crs
    r = math.sqrt(0.5 / math.pi) * size  # bench_clip.py's 50 % case
    poly = pixel_polygon_to_crs(blob_polygon(0.5 * size + 37, 0.5 * size + 91, r, r, n=2.0, wobble=0.04),
                                transform)
    doc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs.to_string()}},
           "features": [{"type": "Feature", "properties": {"name": "blob50"}, "geometry": mapping(poly)}]}
    boundary = workdir / f"peers_boundary_{size}.geojson"
    boundary.write_text(json.dumps(doc))
    return src, boundary


def gdalwarp_command(src: Path, boundary: Path, out: Path) -> list[str]:
    """gdalwarp as the issue names it, with sceneclip's COG creation options spelled as ``-co``."""
    from sceneclip.core.cog import cog_options

    cmd = ["gdalwarp", "-q", "-overwrite", "-cutline", str(boundary), "-crop_to_cutline", "-dstnodata", "0",
           "-of", "COG", "-multi", "-wo", "NUM_THREADS=ALL_CPUS"]
    for key, value in cog_options("deflate", dtype="uint16", resampling="average").items():
        cmd += ["-co", f"{key}={value}"]
    return cmd + [str(src), str(out)]


def commands(src: Path, boundary: Path, workdir: Path, one_core: bool) -> dict[str, Runs]:
    """The command line of every contender; outputs go to ``workdir/peers-NAME.tif``."""
    py, bindir = sys.executable, Path(sys.executable).parent
    names = CONTENDERS + ((ONE_CORE,) if one_core else ())
    out = {name: workdir / f"peers-{name}.tif" for name in names}
    sceneclip = [str(bindir / "sceneclip"), "clip", str(src), str(boundary)]
    cmds = {
        "sceneclip": sceneclip + [str(out["sceneclip"])],
        "gdalwarp": gdalwarp_command(src, boundary, out["gdalwarp"]),
    }
    for name in ("seed", "rioxarray", "riotiler"):
        cmds[name] = [py, str(HERE / "peers_run.py"), name, str(src), str(boundary), str(out[name])]
    if one_core:
        cmds[ONE_CORE] = ["taskset", "-c", str(min(os.sched_getaffinity(0)))] + sceneclip + [str(out[ONE_CORE])]
    return {name: Runs(name, cmds[name]) for name in names}


# Runs one contender and reports its own figures. Linux carries ``ru_maxrss`` across execve, and Python spawns
# with vfork, so a child of this (large, rasterio-loaded) process would report this process's peak if it were
# bigger than its own; through this small launcher the inherited floor is the launcher's ~10 MB.
LAUNCHER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = proc.stderr.read().decode(errors="replace")
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "rss_kib": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime,
                  "code": os.waitstatus_to_exitcode(status), "stderr": err[-600:]}))
"""


def run_once(cmd: list[str]) -> tuple[float, float, float, str]:
    """Run ``cmd`` through :data:`LAUNCHER`: (wall s, the child's peak RSS MB, its CPU s, its stderr tail on failure)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    err = f"exit {got['code']}: {got['stderr'].strip()}" if got["code"] != 0 else ""
    return got["wall"], got["rss_kib"] / 1024, got["cpu"], err


def measure(runs: dict[str, Runs], repeat: int) -> None:
    """One warm-up round, then ``repeat`` interleaved timed rounds; a failing contender stops being run."""
    for round_no in range(repeat + 1):
        for r in runs.values():
            if r.error:
                continue
            wall, rss, cpu, err = run_once(r.command)
            label = "warm-up" if round_no == 0 else f"run {round_no}/{repeat}"
            print(f"  {r.name:10s} {label:9s} {wall:6.1f} s {rss:7.0f} MB {cpu:6.1f} s CPU {err[:200]}",
                  file=sys.stderr)
            if err:
                r.error = err
            elif round_no:
                r.walls.append(wall)
                r.rss_mb.append(rss)
                r.cpu_s.append(cpu)


def check_all(runs: dict[str, Runs], src_path: Path) -> None:
    """Check each output against the source and sceneclip's output (the reference for counts and extent)."""
    import rasterio

    with rasterio.open(src_path) as src:
        sc = runs["sceneclip"]
        ref = None
        if not sc.error:
            sc.check = check_output(sc.command[-1], src, None)
            ref = sc.check.facts
        for r in runs.values():
            if r.error or r.name == "sceneclip":
                continue
            r.check = check_output(r.command[-1], src, ref) if ref else None
    for r in runs.values():
        if not r.error and os.path.exists(r.command[-1]):
            r.output_bytes = os.path.getsize(r.command[-1])


def versions() -> str:
    """Versions of everything measured (gdalwarp is Debian's gdal-bin, a GDAL of its own)."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    import rasterio

    parts = [f"Python {sys.version.split()[0]}", f"rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__})"]
    for dist in ("sceneclip", "numpy", "rioxarray", "xarray", "rio-tiler"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} not installed")
    gw = subprocess.run(["gdalwarp", "--version"], capture_output=True, text=True).stdout.strip()
    parts.append(f"gdalwarp: {gw.split(',')[0]} (Debian gdal-bin)")
    return ", ".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192, help="raster width = height in pixels (default 8192)")
    ap.add_argument("--quick", action="store_true", help="size 2048, a smoke run")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per contender after the warm-up (default 3)")
    ap.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="cache for the scene and the outputs")
    ap.add_argument("--no-one-core", dest="one_core", action="store_false",
                    help="skip the extra sceneclip run pinned to one core (the Lambda cost model's 1-vCPU point)")
    ap.add_argument("--results", help="markdown file to write (default benchmarks/results/bench_peers[_SIZE].md)")
    args = ap.parse_args(argv)
    if args.quick:
        args.size = 2048
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("gdalwarp") is None:
        raise SystemExit("gdalwarp not found: install Debian's gdal-bin (make bench-peers does)")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src, boundary = scene_and_boundary(workdir, args.size)
    runs = commands(src, boundary, workdir, args.one_core and shutil.which("taskset") is not None)
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    measure(runs, args.repeat)
    load_after = os.getloadavg()
    check_all(runs, src)
    command = "python benchmarks/bench_peers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render_report(runs=runs, size=args.size, src=src, repeat=args.repeat, command=command.strip(),
                         versions=versions(), started=started, load=(load_before, load_after))
    default = "bench_peers.md" if args.size == 8192 else f"bench_peers_{args.size}.md"
    out = Path(args.results) if args.results else RESULTS / default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"(written to {out})", file=sys.stderr)
    for r in runs.values():
        if os.path.exists(r.command[-1]):
            os.remove(r.command[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
