"""Instructions executed by a cold start, counted by valgrind's callgrind: load-independent, unlike seconds.

The machine is shared and noisy; an instruction count is the same whatever else runs. Each case is a fresh
``python -c`` under ``valgrind --tool=callgrind`` (about 50× slower than native, so a few cases only), with
``PYTHONHASHSEED=0`` and the same Lambda-like environment as ``bench_coldstart.py``. Printed as ratios to
``import rasterio`` counted the same way.

``libraries only`` is the floor the handler cannot go under: the third-party imports and objects that the
handler import + ``get_app()`` build (rasterio, shapely, boto3 with its S3 and DynamoDB clients, Powertools'
Logger/Metrics/Tracer, the SQS batch processor and the idempotency utility), and not one sceneclip line.
What is above it is sceneclip's own; what is in it is the price of the libraries the project is built on.

    python benchmarks/count_instructions.py                          # this tree: handler import + get_app()
    python benchmarks/count_instructions.py --other /path/src:sceneclip.handler   # vs another checkout
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_coldstart import LIBRARIES_ONLY, child_env  # noqa: E402
from common import REPO  # noqa: E402


def count(code: str, pythonpath: str, env: dict[str, str], work: Path, label: str) -> int:
    """Instructions callgrind collected for ``python -c code`` (its profile is not kept: the total is the figure)."""
    env = {**env, "PYTHONPATH": pythonpath, "PYTHONHASHSEED": "0"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", code],
                          capture_output=True, text=True, env=env, cwd=work, timeout=1800)
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", action="append", default=[], metavar="SRC:MODULE",
                    help="another checkout's src directory and its handler module, counted the same way")
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian package valgrind)")
    src = str(REPO / "src")
    cases = {"rasterio": (src, "import rasterio"),
             "libraries only": (src, LIBRARIES_ONLY),
             "this tree": (src, "import sceneclip.aws.handler as h; h.get_app()")}
    for spec in args.other:
        path, _, module = spec.rpartition(":")
        cases[f"{path} ({module})"] = (path, f"import {module} as h; h.get_app()")
    for path, _ in cases.values():  # bytecode on both sides (what Lambda runs: sam build ships it)
        subprocess.run([sys.executable, "-m", "compileall", "-q", path], check=False, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="sceneclip-instr-") as tmp:
        work = Path(tmp)
        env = child_env("http://127.0.0.1:9", str(work), trace_disabled=False)  # get_app() connects nowhere
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            futures = {label: pool.submit(count, code, path, env, work, f"case{i}")
                       for i, (label, (path, code)) in enumerate(cases.items())}
            counts = {label: f.result() for label, f in futures.items()}
    ref = counts["rasterio"]
    print("| case | instructions | × import rasterio |\n|---|---|---|")
    for label, n in counts.items():
        print(f"| {label} | {n / 1e9:.3f} G | {n / ref:.2f}× |")
    own = counts["this tree"] - counts["libraries only"]
    print(f"\nsceneclip's own share (this tree − libraries only): {own / 1e9:.3f} G = {own / ref:.2f}× import rasterio")
    if args.other:
        base = counts["this tree"]
        for label in list(counts)[3:]:
            print(f"\nthis tree / {label}: {base / counts[label]:.3f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
