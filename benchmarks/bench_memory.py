"""Peak memory of a large clip: sceneclip (spilling, and held in memory) against the rasterio.mask recipe.

A synthetic SIZE×SIZE×3 uint16 tiled (512) DEFLATE GeoTIFF (default 16384², 1.6 GB uncompressed) is written
once under --workdir, with an irregular boundary covering about half of it. Every measurement runs in a
FRESH subprocess, so its peak RSS is that run's alone:

* baseline          — only ``import rasterio, sceneclip.core.clip`` (interpreter + libraries);
* sceneclip spill   — ``run_clip(..., output=path)`` with defaults: the window is above memory_limit (512 MB)
                      so the intermediate and the COG go to tmpdir;
* sceneclip in-mem  — the same with memory_limit above the window: intermediate and COG in /vsimem;
* reference         — ``rasterio.mask.mask(src, shapes, crop=True)`` → GTiff MemoryFile → COG
                      (``rasterio.shutil.copy``), GDAL's default block cache (5% of RAM);
* reference, cache 64 MB — the same with GDAL_CACHEMAX=64 (what sceneclip uses), to separate the cache.

Figures: wall time of the clip call (imports excluded), peak RSS (max of VmHWM over the run's phases),
peak RSS above the baseline, output size, and ratios against the reference. Per-phase peaks (read+mask,
COG write, verify/save) come from resetting VmHWM between phases (``/proc/self/clear_refs``).

    python benchmarks/bench_memory.py            # 16384² (several minutes)
    python benchmarks/bench_memory.py --quick    # 4096²
    python benchmarks/bench_memory.py --size 8192 --workdir /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEFAULT_WORKDIR,
    RESULTS,
    blob_polygon,
    machine_line,
    markdown_table,
    pixel_polygon_to_crs,
    ratio,
    write_synthetic,
)

BANDS = 3
MODES = ("baseline", "sceneclip_spill", "sceneclip_inmem", "reference", "reference_cache64")
LABELS = {
    "baseline": "baseline (imports only)",
    "sceneclip_spill": "sceneclip, defaults (memory_limit 512 MB)",
    "sceneclip_inmem": "sceneclip, memory_limit above window (in memory)",
    "reference": "reference: rasterio.mask crop=True → COG",
    "reference_cache64": "reference, GDAL_CACHEMAX=64 MB",
}


# --- in the child ---------------------------------------------------------------------------------------------


class Phases:
    """Peak RSS per phase: read VmHWM at each phase change, then reset it (``clear_refs`` 5)."""

    def __init__(self) -> None:
        self.current = "imports+setup"
        self.peaks: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()
        self.resettable = True

    @staticmethod
    def _hwm_mb() -> float:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def switch(self, name: str) -> None:
        peak = self._hwm_mb()
        self.peaks[self.current] = max(self.peaks.get(self.current, 0.0), peak)
        now = time.perf_counter()
        self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self.started
        self.started = now
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            self.resettable = False  # then every phase reports the running peak
        self.current = name

    def finish(self) -> dict[str, float]:
        self.switch("done")
        self.peaks.pop("done", None)
        self.seconds.pop("done", None)
        return self.peaks


class DiskWatch:
    """Largest total size of the files under a directory, polled every 0.1 s in a thread (spill usage)."""

    def __init__(self, root: str) -> None:
        import threading

        self.root, self.peak, self._stop = root, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for dirpath, _, files in os.walk(self.root):
                for f in files:
                    try:
                        total += os.path.getsize(os.path.join(dirpath, f))
                    except OSError:
                        pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.1)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def boundary_for(size: int, transform):
    """A rounded, wobbly blob covering about half of the raster (its bbox ≈ 0.58 of the raster)."""
    poly = blob_polygon(size * 0.52, size * 0.47, size * 0.37, size * 0.37, n=4.0, wobble=0.03)
    return pixel_polygon_to_crs(poly, transform)


def child(mode: str, src_path: str, out_path: str, spill_dir: str) -> dict:
    phases = Phases()
    import rasterio

    from sceneclip.core import clip as clipmod
    from sceneclip.core import verify as verifymod
    from sceneclip.core.cog import cog_options
    from sceneclip.core.geometry import Boundary

    result: dict = {"mode": mode}
    if mode == "baseline":
        result["peaks"] = phases.finish()
        return result

    with rasterio.open(src_path) as src:
        transform, size, crs = src.transform, src.width, src.crs
        window_bytes = None
    poly = boundary_for(size, transform)
    if Path(out_path).exists():
        os.remove(out_path)

    if mode.startswith("sceneclip"):
        # Phase markers around the steps clip_to_cog calls (module globals, looked up at call time).
        orig_exec, orig_write, orig_verify = clipmod.execute_plan, clipmod.write_cog, verifymod.verify_output

        def execute_plan(*a, **k):
            phases.switch("read+mask → intermediate")
            return orig_exec(*a, **k)

        def write_cog(*a, **k):
            phases.switch("COG write")
            return orig_write(*a, **k)

        def verify_output(*a, **k):
            phases.switch("verify")
            return orig_verify(*a, **k)

        orig_save = clipmod.ClipOutput.save

        def save(self, *a, **k):
            phases.switch("save to output=")
            return orig_save(self, *a, **k)

        clipmod.execute_plan, clipmod.write_cog, verifymod.verify_output = execute_plan, write_cog, verify_output
        clipmod.ClipOutput.save = save
        opts = clipmod.ClipOptions(tmpdir=spill_dir)
        if mode == "sceneclip_inmem":
            opts = clipmod.ClipOptions(tmpdir=spill_dir, memory_limit=64 * 1024**3)
        boundary = Boundary.from_geometries([poly], crs, source="synthetic-blob")
        phases.switch("plan")
        disk = DiskWatch(spill_dir)
        t0 = time.perf_counter()
        res = clipmod.run_clip(src_path, boundary, opts, output=out_path)
        wall = time.perf_counter() - t0
        result["tmpdir_peak_bytes"] = disk.stop()
        rec = res.record
        if rec.status != "ok":
            raise SystemExit(f"sceneclip failed: {rec.error_type}: {rec.error}")
        plan = res.plan
        window_bytes = plan.uncompressed_bytes if plan else None
        result.update(valid_pixels=rec.valid_pixels, width=rec.width, height=rec.height,
                      spilled=bool(window_bytes and window_bytes > opts.memory_limit))
    else:
        env = {"GDAL_CACHEMAX": 64} if mode == "reference_cache64" else {}
        from common import reference_clip_to_cog

        import rasterio.mask

        # Phase markers: the mask (read) and the two writes of the recipe.
        orig_mask, orig_copy = rasterio.mask.mask, rasterio.shutil.copy

        def mask(*a, **k):
            phases.switch("read+mask (rasterio.mask) + GTiff MemoryFile")
            return orig_mask(*a, **k)

        def copy(*a, **k):
            phases.switch("COG write")
            return orig_copy(*a, **k)

        rasterio.mask.mask, rasterio.shutil.copy = mask, copy
        opts = cog_options("deflate", dtype="uint16", resampling="average")
        phases.switch("open")
        t0 = time.perf_counter()
        with rasterio.Env(**env), rasterio.open(src_path) as src:
            valid = reference_clip_to_cog(src, [poly], out_path, cog_opts=opts)
        wall = time.perf_counter() - t0
        with rasterio.open(out_path) as out:
            result.update(width=out.width, height=out.height)
            window_bytes = out.width * out.height * out.count * 2
        result.update(valid_pixels=valid)
    peaks = phases.finish()
    result.update(wall_s=wall, peaks=peaks, seconds=phases.seconds, output_bytes=os.path.getsize(out_path), window_bytes=window_bytes,
                  ru_maxrss_note="max of per-phase VmHWM")
    os.remove(out_path)
    return result


# --- in the parent --------------------------------------------------------------------------------------------


def run_child(mode: str, src: Path, workdir: Path) -> dict:
    out = workdir / f"out-{mode}.tif"
    spill = workdir / "spill"
    spill.mkdir(exist_ok=True)
    cmd = [sys.executable, __file__, "--child", mode, "--src", str(src), "--out", str(out), "--spill", str(spill)]
    before = set(spill.iterdir())
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t0
    res["peak_mb"] = max(res["peaks"].values())
    leftovers = sorted(set(spill.iterdir()) - before)
    if leftovers:
        res["spill_leftovers"] = [
            f"{p.name}/ ({len(list(p.iterdir()))} files)" if p.is_dir() else p.name for p in leftovers]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=16384, help="raster width = height in pixels (default 16384)")
    ap.add_argument("--quick", action="store_true", help="size 4096 (a quick check)")
    ap.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="cache for the synthetic scene and outputs")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--results", help="markdown file to write (default benchmarks/results/bench_memory[_SIZE].md)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--spill", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.src, args.out, args.spill)))
        return

    size = 4096 if args.quick else args.size
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = write_synthetic(workdir / f"synthetic_{size}x{size}x{BANDS}_u16_deflate.tif", size, BANDS)
    raw = size * size * BANDS * 2
    print(f"source: {src} — {size}×{size}×{BANDS} uint16, {src.stat().st_size / 1e6:.0f} MB on disk, "
          f"{raw / 1e6:.0f} MB uncompressed", file=sys.stderr)

    results: dict[str, dict] = {}
    for mode in args.modes.split(","):
        print(f"  running {mode} …", file=sys.stderr, flush=True)
        results[mode] = r = run_child(mode, src, workdir)
        print(f"    peak {r['peak_mb']:.0f} MB" + (f", {r['wall_s']:.1f} s" if "wall_s" in r else ""),
              file=sys.stderr, flush=True)

    # Boundary facts (computed here too: the same deterministic blob).
    import rasterio

    with rasterio.open(src) as ds:
        poly = boundary_for(size, ds.transform)
        cover = poly.area / (ds.width * ds.height * abs(ds.transform.a * ds.transform.e))

    ref = results.get("reference")
    base = results.get("baseline")
    rows = []
    for mode, r in results.items():
        peak = r["peak_mb"]
        above = peak - base["peak_mb"] if base and mode != "baseline" else None
        ref_above = ref["peak_mb"] - base["peak_mb"] if ref and base else None
        rows.append([
            LABELS[mode],
            {True: "tmpdir", False: "memory"}.get(r.get("spilled"), "—"),
            f"{r['wall_s']:.1f}" if "wall_s" in r else "—",
            f"{peak:.0f}",
            f"{above:.0f}" if above is not None else "—",
            f"{r['output_bytes'] / 1e6:.1f}" if "output_bytes" in r else "—",
            ratio(r.get("wall_s"), ref and ref["wall_s"]) if "wall_s" in r else "—",
            ratio(peak, ref and ref["peak_mb"]),
            ratio(above, ref_above) if above is not None else "—",
            ratio(r.get("output_bytes"), ref and ref["output_bytes"]) if "output_bytes" in r else "—",
        ])
    table = markdown_table(
        ["run", "clip held in", "wall s", "peak RSS MB", "above baseline MB", "output MB",
         "wall / ref", "peak / ref", "above-baseline / ref", "output / ref"], rows)

    phase_rows = []
    for mode, r in results.items():
        if mode == "baseline":
            continue
        phase_rows.append([
            LABELS[mode],
            "; ".join(f"{k}: {v:.0f} MB / {r['seconds'].get(k, 0):.1f} s" for k, v in r["peaks"].items()),
            f"{r['tmpdir_peak_bytes'] / 1e6:.0f}" if "tmpdir_peak_bytes" in r else "—",
        ])
    phase_table = markdown_table(["run", "peak RSS / time per phase", "tmpdir peak MB"], phase_rows)

    any_r = next((r for m, r in results.items() if m != "baseline"), None)
    window = ""
    if any_r:
        window = (f"Window {any_r['width']}×{any_r['height']}×{BANDS} uint16 = "
                  f"{any_r['window_bytes'] / 1e6:.0f} MB uncompressed; valid pixels "
                  + ", ".join(f"{m}: {r['valid_pixels']}" for m, r in results.items() if "valid_pixels" in r) + ".")
    leftovers = {m: r["spill_leftovers"] for m, r in results.items() if r.get("spill_leftovers")}
    text = "\n".join([
        f"# bench_memory — {size}×{size}×{BANDS} uint16 synthetic clip",
        "",
        f"`{' '.join(['python', 'benchmarks/bench_memory.py'] + sys.argv[1:])}` — {machine_line()}",
        "",
        f"Source: tiled 512, DEFLATE + predictor 2, {src.stat().st_size / 1e6:.0f} MB on disk "
        f"({raw / 1e6:.0f} MB uncompressed). Boundary: one irregular polygon covering {cover:.1%} of the raster. "
        + window,
        "Each run is a fresh subprocess; peak RSS = the max of its per-phase VmHWM (imports included); "
        "'above baseline' subtracts the imports-only process. Ratios are against the reference recipe in "
        "this same run.",
        "",
        table,
        "",
        "Where the peak happens:",
        "",
        phase_table,
        "",
        (f"Files left in the spill directory after run_clip returned: {leftovers}" if leftovers else
         "No files were left in the spill directory."),
        "",
    ])
    print(text)
    out = Path(args.results) if args.results else RESULTS / (
        "bench_memory.md" if size == 16384 else f"bench_memory_{size}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
