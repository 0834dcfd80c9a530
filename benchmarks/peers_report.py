"""The markdown report of the peer benchmark: the table, the issue's goals as pass/fail, the Lambda cost line.

Ratios are against a contender measured in the same run (wall and output size against gdalwarp, peak RSS
against the seed recipe), because the machine is shared and seconds move from run to run. The goals are
reported, never asserted.
"""

from __future__ import annotations

from typing import Any

from common import markdown_table

LABELS = {
    "sceneclip": "`sceneclip clip` (defaults)",
    "sceneclip_1core": "`sceneclip clip` pinned to 1 core (`taskset -c 0`, for the cost model only)",
    "seed": "seed recipe (`rasterio.mask` → MemoryFile → COG copy)",
    "gdalwarp": "`gdalwarp -cutline -crop_to_cutline -of COG -multi` (+ same `-co`)",
    "rioxarray": "rioxarray (`open_rasterio` → `rio.clip(from_disk=True, drop=True)` → `to_raster(COG)`)",
    "riotiler": "rio-tiler (`Reader.feature()` full resolution → COG)",
}

# AWS Lambda duration price, first tier (per GB-second), and the memory at which a function gets 1 vCPU.
PRICE_X86 = 0.0000166667
PRICE_ARM = 0.0000133334
MB_PER_VCPU = 1769
DEFAULT_MEMORY_MB = 2048  # template.yaml's MemorySize default
LARGER_MEMORY_MB = 3538  # 2 vCPUs: the cores this benchmark ran on


def _x(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def contender_table(runs: dict[str, Any]) -> str:
    """One row per contender: wall, peak RSS, output size, their ratios, and the output checks."""
    gw, seed = runs["gdalwarp"], runs["seed"]
    rows = []
    for r in runs.values():
        size = r.output_bytes / 1e6 if r.output_bytes else None
        gw_size = gw.output_bytes / 1e6 if gw.output_bytes else None
        if r.error:
            check = f"**did not run**: {r.error[:160]}"
        elif r.check is None:
            check = "not checked (sceneclip's output is the reference and is missing)"
        else:
            check = r.check.summary()
        rows.append([LABELS.get(r.name, r.name), _num(r.wall, ".1f"), _x(r.wall, gw.wall), _num(r.cpu, ".1f"),
                     _x(r.cpu, gw.cpu), _num(r.rss, ".0f"), _x(r.rss, seed.rss), _num(size, ".1f"),
                     _x(size, gw_size), check])
    return markdown_table(["contender", "wall s", "× gdalwarp", "CPU s (user+sys)", "× gdalwarp", "peak RSS MB",
                           "× seed recipe", "output MB", "× gdalwarp", "output checks"], rows)


def goal_rows(runs: dict[str, Any]) -> list[list[str]]:
    """The issue's goals for sceneclip, one row each: measured ratio, target, pass/fail."""
    sc = runs["sceneclip"]

    def row(goal: str, a: float | None, b: float | None, limit: float, peer: Any) -> list[str]:
        if a is None or b is None or not b:
            return [goal, "n/a", f"≤ {limit:g}×", "n/a (a contender did not run)"]
        checked = peer.check is not None and peer.check.ok
        verdict = "pass" if a / b <= limit else "**fail**"
        if not checked and peer.name != "seed":
            verdict += " (peer's output failed a check)"
        return [goal, f"{a / b:.2f}×", f"≤ {limit:g}×", verdict]

    gw, seed, rx, rt = runs["gdalwarp"], runs["seed"], runs["rioxarray"], runs["riotiler"]
    rows = [row("wall vs gdalwarp", sc.wall, gw.wall, 0.8, gw),
            row("peak RSS vs seed recipe", sc.rss, seed.rss, 0.4, seed)]
    for peer, name in ((rx, "rioxarray"), (rt, "rio-tiler")):
        rows.append(row(f"wall vs {name}", sc.wall, peer.wall, 1.0, peer))
        rows.append(row(f"peak RSS vs {name}", sc.rss, peer.rss, 1.0, peer))
    if sc.output_bytes and gw.output_bytes:
        d = sc.output_bytes / gw.output_bytes - 1
        rows.append(["output size vs gdalwarp", f"{d:+.1%}", "within ±2 %", "pass" if abs(d) <= 0.02 else "**fail**"])
    else:
        rows.append(["output size vs gdalwarp", "n/a", "within ±2 %", "n/a"])
    return rows


def lambda_seconds(wall_2core: float, wall_1core: float | None, memory_mb: int) -> float:
    """Estimated duration on a function of ``memory_mb``: between the 1-core and 2-core measurements,
    linear in the vCPUs Lambda gives (memory / 1769 MB), and the 2-core time at 2 vCPUs or more."""
    vcpus = memory_mb / MB_PER_VCPU
    if wall_1core is None or vcpus >= 2:
        return wall_2core
    if vcpus <= 1:
        return wall_1core
    speedup = wall_1core / wall_2core
    return wall_1core / (1 + (speedup - 1) * (vcpus - 1))


def cost_section(runs: dict[str, Any]) -> str:
    """GB·s and $ per scene at the default and a larger MemorySize, and the recommendation they imply."""
    sc, one = runs["sceneclip"], runs.get("sceneclip_1core")
    if sc.wall is None:
        return "No Lambda cost line: sceneclip did not run."
    w1 = one.wall if one is not None else None
    rows, costs = [], {}
    for mem in (DEFAULT_MEMORY_MB, LARGER_MEMORY_MB):
        secs = lambda_seconds(sc.wall, w1, mem)
        gbs = secs * mem / 1024
        costs[mem] = (secs, gbs)
        fits = "yes" if sc.rss is not None and sc.rss <= 0.85 * mem else "**no** (peak RSS over 85 % of memory)"
        rows.append([f"{mem} MB ({mem / MB_PER_VCPU:.2f} vCPU)", f"{secs:.1f}", f"{gbs:.1f}",
                     f"${gbs * PRICE_X86:.6f}", f"${gbs * PRICE_ARM:.6f}", f"${gbs * PRICE_X86 * 1e4:.2f}", fits])
    table = markdown_table(["MemorySize", "est. duration s", "GB·s / scene", "x86 $ / scene", "arm64 $ / scene",
                            "x86 $ / 10 000 scenes", "peak RSS fits"], rows)
    (s_d, g_d), (s_l, g_l) = costs[DEFAULT_MEMORY_MB], costs[LARGER_MEMORY_MB]
    basis = (f"1-core {w1:.1f} s and 2-core {sc.wall:.1f} s measured here (speed-up {w1 / sc.wall:.2f}×)"
             if w1 else f"the 2-core {sc.wall:.1f} s measured here for both (no 1-core run)")
    if g_l <= g_d * 1.05:
        advice = (f"{LARGER_MEMORY_MB} MB costs {g_l / g_d:.2f}× the GB·s of {DEFAULT_MEMORY_MB} MB and finishes "
                  f"{s_d / s_l:.2f}× sooner: raise MemorySize for scenes this size.")
    else:
        advice = (f"{LARGER_MEMORY_MB} MB costs {g_l / g_d:.2f}× the GB·s of {DEFAULT_MEMORY_MB} MB for a "
                  f"{s_d / s_l:.2f}× shorter run: keep the default {DEFAULT_MEMORY_MB} MB unless latency matters.")
    return (f"Lambda bills duration × memory: ${PRICE_X86:.10f} per GB·s on x86_64, ${PRICE_ARM:.10f} on arm64 (first "
            f"tier; requests, $0.20 per million, left out). Lambda gives 1 vCPU per {MB_PER_VCPU} MB; the "
            f"durations are estimated from the {basis}, assuming a Lambda vCPU as fast as a core here.\n\n"
            f"{table}\n\n**Recommendation**: {advice}")


def render_report(*, runs: dict[str, Any], size: int, src: Any, repeat: int, command: str, versions: str,
                  started: str, load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    """The whole results file: header (command, versions, date, load), table, goals, cost line."""
    import rasterio

    with rasterio.open(src) as ds:
        src_mb = src.stat().st_size / 1e6
    facts = runs["sceneclip"].check.facts if runs["sceneclip"].check and runs["sceneclip"].check.facts else None
    window = (f"window {facts.width}×{facts.height}×{facts.count} uint16 = "
              f"{facts.width * facts.height * facts.count * 2 / 2**20:.0f} MiB uncompressed, "
              f"{facts.valid_pixels} valid pixels" if facts else "window unknown")
    before, after = load
    head = [
        f"# bench_peers — {size}×{size}×3 uint16 scene, half clipped, every peer as a whole process",
        "",
        f"`{command}` — {versions}; started {started}.",
        "",
        f"Load average (1/5/15 min) at the start {before[0]:.2f} / {before[1]:.2f} / {before[2]:.2f}, at the "
        f"end {after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f}, on {len(__import__('os').sched_getaffinity(0))} "
        "shared cores: seconds are noisy, read the ratios.",
        "",
        f"Source: {ds.width}×{ds.height}×{ds.count} tiled 512, DEFLATE + predictor 2, {src_mb:.0f} MB on disk. "
        f"Boundary: the 50 % blob of bench_clip.py; sceneclip's {window}. Medians of {repeat} runs after one "
        "warm-up, contenders interleaved; wall, CPU (user + system) and peak RSS (`ru_maxrss`) of each whole "
        "process, imports included.",
        "",
    ]
    goals = markdown_table(["goal (issue 13)", "sceneclip / peer", "target", "result"], goal_rows(runs))
    return "\n".join(head) + "\n" + contender_table(runs) + "\n\n## Goals (reported, not asserted)\n\n" + goals + \
        "\n\n## Lambda cost per scene (sceneclip)\n\n" + cost_section(runs) + "\n"
