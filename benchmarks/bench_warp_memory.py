"""Peak memory and wall time of target-grid clips and mosaics, against the source-grid clip of the same window.

Issue 11 asks that warping onto a target grid and mosaicking several scenes stay window-only and bounded
like the plain clip. Every case runs in a FRESH subprocess (its VmHWM is its own, read from /proc at the
end), on the bench_peers scene (8192×8192×3 uint16 tiled DEFLATE, EPSG:32633) and its 50 % blob:

* source grid       — ``run_clip(scene, blob, output=…)`` with defaults (the reference);
* warp 32632 10 m   — onto the neighbouring UTM zone at the source resolution, nearest, target-aligned pixels;
* warp 4326 bilinear — onto EPSG:4326 at about the source resolution (0.00012° × 0.00009°), bilinear;
* mosaic of halves  — the scene split into two overlapping halves (west, east; each its own file), one clip.

Figures: wall of the clip call (imports excluded), peak RSS, output size, ratios against the source-grid
clip. Nothing is asserted; the closing note of issue 11 quotes the table.

    python benchmarks/bench_warp_memory.py [--size 8192] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_peers import scene_and_boundary  # noqa: E402
from common import DEFAULT_WORKDIR, RESULTS, machine_line, markdown_table, ratio  # noqa: E402

CASE = r"""
import json, sys, time
from sceneclip.core.clip import run_clip
from sceneclip.core.plan import ClipOptions
from sceneclip.tools.vectors import load_boundary
case, sources, boundary, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
options = {
    "source": ClipOptions(),
    "warp32632": ClipOptions(dst_crs="EPSG:32632", resolution=(10.0, 10.0), target_aligned=True),
    "warp4326": ClipOptions(dst_crs="EPSG:4326", resolution=(0.00012, 0.00009), resampling="bilinear"),
    "mosaic": ClipOptions(),
}[case]
b = load_boundary(boundary)
t = time.perf_counter()
rec = run_clip(sources if len(sources) > 1 else sources[0], b, options, output=out).record
wall = time.perf_counter() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"status": rec.status, "error": rec.error, "wall": wall, "rss_mb": hwm / 1024,
                  "size": rec.size_bytes, "valid": rec.valid_pixels, "shape": [rec.width, rec.height]}))
"""


def halves(src: Path, workdir: Path) -> list[str]:
    """West and east halves of the scene, overlapping by 512 px, as two tiled DEFLATE files (cached)."""
    import rasterio
    from rasterio.windows import Window

    out = []
    with rasterio.open(src) as ds:
        w = ds.width
        for name, win in (("west", Window(0, 0, w // 2 + 256, ds.height)),
                          ("east", Window(w // 2 - 256, 0, w - (w // 2 - 256), ds.height))):
            path = workdir / f"{src.stem}_{name}.tif"
            if not path.exists():
                profile = ds.profile | {"width": win.width, "height": win.height, "transform": ds.window_transform(win),
                                        "num_threads": "ALL_CPUS"}
                with rasterio.open(path, "w", **profile) as dst:
                    for _, bw in dst.block_windows(1):
                        if bw.col_off == 0:  # whole rows of blocks at a time
                            rows = Window(0, bw.row_off, win.width, bw.height)
                            dst.write(ds.read(window=Window(win.col_off, bw.row_off, win.width, bw.height)),
                                      window=rows)
            out.append(str(path))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src, boundary = scene_and_boundary(workdir, args.size)
    cases = [("source", "source grid (reference)", [str(src)]),
             ("warp32632", "warp EPSG:32632, 10 m, nearest, --tap", [str(src)]),
             ("warp4326", "warp EPSG:4326, 0.00012° × 0.00009° (≈ 9–10 m), bilinear", [str(src)]),
             ("mosaic", "mosaic of two overlapping halves", halves(src, workdir))]
    rows, ref = [], None
    for key, label, sources in cases:
        out = workdir / f"warpmem-{key}.tif"
        res = subprocess.run([sys.executable, "-c", CASE, key, json.dumps(sources), str(boundary), str(out)],
                             capture_output=True, text=True, check=True)
        got = json.loads(res.stdout.strip().splitlines()[-1])
        out.unlink(missing_ok=True)
        print(f"  {label}: {got}", file=sys.stderr)
        ref = ref or got
        rows.append([label, got["status"], f"{got['wall']:.1f}", ratio(got["wall"], ref["wall"]),
                     f"{got['rss_mb']:.0f}", ratio(got["rss_mb"], ref["rss_mb"]), f"{got['size'] / 1e6:.1f}",
                     "×".join(map(str, got["shape"]))])
    text = "\n".join([
        f"# bench_warp_memory — target grids and mosaics, {args.size}²×3 uint16, the 50 % blob", "",
        machine_line(), "",
        "Each case in a fresh process; wall = the clip call, peak RSS = VmHWM of the process (imports included).", "",
        markdown_table(["case", "status", "wall s", "× source grid", "peak RSS MB", "× source grid", "output MB",
                        "output px"], rows), ""])
    out = RESULTS / "bench_warp_memory.md"
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
