"""Output checks of the peer benchmark: is each contender's COG the same clip as sceneclip's?

A contender that is fast because it wrote something else must not look like a winner, so every output is
checked against the source and against sceneclip's output:

* CRS equal to the source's;
* grid: pixel size equal to the source's and the origin on the source's pixel lattice (within 1e-3 px),
  extent within ±1 px of sceneclip's on every side;
* valid pixels (GDAL's mask of band 1) within 0.5 % of sceneclip's count;
* sampled values: at up to ``SAMPLES`` random valid output pixels, every band equals the source pixel under it;
* a COG by ``rio_cogeo.cog_validate`` (no errors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SAMPLES = 2000
GRID_TOL_PX = 1e-3
EXTENT_TOL_PX = 1.0
VALID_TOL = 0.005


@dataclass
class OutputFacts:
    """What the checks need to know about one output file."""

    path: str
    crs: Any
    transform: Any
    width: int
    height: int
    count: int
    valid_pixels: int


@dataclass
class CheckResult:
    """The outcome of the checks of one output: ``failures`` is empty when every check held."""

    facts: OutputFacts | None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.ok:
            return "ok" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        return "**FAIL**: " + "; ".join(self.failures)


def read_facts(path: str) -> OutputFacts:
    """CRS, grid and valid-pixel count (band 1's mask, read block by block) of an output."""
    import numpy as np
    import rasterio

    with rasterio.open(path) as ds:
        valid = 0
        for _, window in ds.block_windows(1):
            valid += int(np.count_nonzero(ds.read_masks(1, window=window)))
        return OutputFacts(path, ds.crs, ds.transform, ds.width, ds.height, ds.count, valid)


def grid_failures(facts: OutputFacts, src: Any, ref: OutputFacts) -> list[str]:
    """Pixel size, lattice and extent (in source pixels) against the source and sceneclip's output."""
    t, s = facts.transform, src.transform
    if abs(t.a - s.a) > 1e-9 * abs(s.a) or abs(t.e - s.e) > 1e-9 * abs(s.e) or t.b or t.d:
        return [f"pixel size {t.a:g}×{t.e:g} is not the source's {s.a:g}×{s.e:g}"]
    col0, row0 = ~s * (t.c, t.f)
    failures = []
    if abs(col0 - round(col0)) > GRID_TOL_PX or abs(row0 - round(row0)) > GRID_TOL_PX:
        failures.append(f"origin off the source grid by ({col0 - round(col0):.3f}, {row0 - round(row0):.3f}) px")
    rc0, rr0 = ~s * (ref.transform.c, ref.transform.f)
    sides = {"left": col0 - rc0, "top": row0 - rr0,
             "right": (col0 + facts.width) - (rc0 + ref.width),
             "bottom": (row0 + facts.height) - (rr0 + ref.height)}
    off = {k: v for k, v in sides.items() if abs(v) > EXTENT_TOL_PX + GRID_TOL_PX}
    if off:
        failures.append("extent differs from sceneclip's by " + ", ".join(f"{k} {v:+.0f} px" for k, v in off.items()))
    return failures


def sample_failures(path: str, src: Any, seed: int = 13) -> list[str]:
    """Compare every band at up to SAMPLES random valid pixels with the source pixel under each."""
    import numpy as np
    import rasterio

    rng = np.random.default_rng(seed)
    with rasterio.open(path) as ds:
        rows = rng.integers(0, ds.height, SAMPLES * 4)
        cols = rng.integers(0, ds.width, SAMPLES * 4)
        xs, ys = rasterio.transform.xy(ds.transform, rows, cols)
        points = list(zip(xs, ys))
        masks = np.array([m[0] for m in ds.sample(points, indexes=1, masked=True)], dtype=object)
        valid = [p for p, m in zip(points, masks) if not np.ma.is_masked(m)][:SAMPLES]
        if not valid:
            return ["no valid pixel among the samples"]
        got = np.array(list(ds.sample(valid)))
    want = np.array(list(src.sample(valid)))
    bad = int(np.count_nonzero((got != want).any(axis=1)))
    return [f"{bad} of {len(valid)} sampled pixels differ from the source"] if bad else []


def check_output(path: str, src: Any, ref: OutputFacts | None) -> CheckResult:
    """Every check of the module docstring; ``ref`` None means this is sceneclip's own output."""
    from rio_cogeo.cogeo import cog_validate

    try:
        facts = read_facts(path)
    except Exception as exc:  # an unreadable output is a failed contender, not a crashed benchmark
        return CheckResult(None, [f"unreadable output: {exc}"])
    result = CheckResult(facts)
    if facts.crs != src.crs:
        result.failures.append(f"CRS {facts.crs} is not the source's {src.crs}")
    if facts.count != src.count:
        result.failures.append(f"{facts.count} bands, the source has {src.count}")
    result.failures += grid_failures(facts, src, ref or facts)
    if ref is not None:
        diff = facts.valid_pixels / ref.valid_pixels - 1 if ref.valid_pixels else float("inf")
        if abs(diff) > VALID_TOL:
            result.failures.append(f"valid pixels {facts.valid_pixels} = {diff:+.2%} of sceneclip's")
        else:
            result.notes.append(f"valid {diff:+.3%}")
    result.failures += sample_failures(path, src)
    is_cog, errors, _ = cog_validate(path, quiet=True)
    if not is_cog:
        result.failures.append("not a valid COG: " + "; ".join(errors)[:200])
    return result
