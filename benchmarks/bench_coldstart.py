"""Cold start of the Lambda handler, as a ratio to ``import rasterio`` measured in the same run (target ≤ 1.5×).

Every measurement runs in a FRESH interpreter (a cold start is a new process). Cases, per layout:

* python        — the interpreter alone (``-c pass``): start-up cost common to every case;
* rasterio      — ``import rasterio``: the reference, the one import a rasterio function cannot avoid;
* libraries     — the third-party part of handler+init and nothing else (:data:`LIBRARIES_ONLY`: rasterio,
                  shapely, boto3 with its S3 and DynamoDB clients, Powertools' Logger/Metrics/Tracer, the SQS
                  batch processor and the idempotency layer): the floor no handler built on these libraries
                  goes under; handler+init − libraries is sceneclip's own share;
* handler       — ``import sceneclip.aws.handler``: what Lambda runs in its INIT phase;
* handler+init  — the import + ``sceneclip.aws.handler.get_app()``: settings, boto3 clients, the idempotency
                  wrapper, the pipeline modules (everything the first invocation builds and warm ones reuse).
                  The SCENECLIP_* variables are valid and point at a moto server started once here;
                  get_app() opens no connection (checked once per layout: a connection would be reported).
* snapstart-restore — what a container restored from a SnapStart snapshot runs before its first request: the
                  after-restore hooks (fresh boto3 session keeping the parsed models, the app rebuilt, seeds).
                  INIT (``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``: imports + prewarm) runs first in the
                  child, unmeasured: it happened once, before the snapshot. Lambda's own resume of the
                  microVM is not modelled here (it is not Python's work); the hooks are the function's share.

Times: ``in-child`` is measured inside the child with ``time.perf_counter`` from the first line of its
script (interpreter start-up excluded); ``wall`` is the whole child as seen from the parent (start-up and
teardown included). Each case runs ``--repeat`` times (cases in alternating order; one unmeasured warm-up
each); the table shows median and min and the ratios of the medians to ``rasterio`` of the same layout.
Ratios only: this machine is not Lambda, and absolute milliseconds are not comparable between runs.

Layouts:

* venv         — ``.venv`` as installed (bytecode for everything);
* layer        — what Lambda assembles: the geo layer zip unpacked (its 3.12 bytecode), the Powertools layer
                 and the runtime's boto3 (stand-ins kept by ``layers/build_layer.py`` under
                 ``layers/build/<arch>/``, given 3.12 bytecode here: current Powertools layers and the
                 runtime ship it), and the function code as this template's ``sam build`` ships it:
                 ``src/Makefile``'s ``build-ClipFunction`` (errors, core and aws with 3.12 bytecode). Run in
                 ``python3.12 -I -S -B`` with no site-packages, like tests/test_layer_build.py;
* layer-nopyc  — the same with the function code as sources only (a ``BuildMethod: python3.12`` build, or a
                 build machine without python3.12): Lambda compiles them in memory at every cold start
                 (/var/task is read-only), which is what the makefile build's bytecode saves;
* layer-src    — no bytecode outside the geo layer (Powertools, boto3, function): older Powertools layers
                 deleted theirs. The worst case.

Then ``python -X importtime`` of the handler import (and of import + get_app()) grouped by top-level
package, top 15 by inclusive time: what to make lazy.

    python benchmarks/bench_coldstart.py                     # all layouts, 7 repeats
    python benchmarks/bench_coldstart.py --layouts venv --repeat 11
    python benchmarks/bench_coldstart.py --handler /tmp/handler_variant.py   # measure a variant of handler.py
    python benchmarks/bench_coldstart.py --trace-disabled    # POWERTOOLS_TRACE_DISABLED=true
    python benchmarks/bench_coldstart.py --cpu-quota 1.16    # every child in a cgroup with Lambda's 2048 MB CPU share

``--cpu-quota CPUS`` runs each child in a CPU cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``; needs a
writable /sys/fs/cgroup) limited to CPUS of quota over all the machine's CPUs, as Lambda gives a function
1 vCPU per 1769 MB: threads started during INIT (numpy's BLAS pool, GDAL's) then take time from it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, RESULTS, markdown_table, median, moto_s3  # noqa: E402

SRC = REPO / "src"
LAYER_BUILD = REPO / "layers" / "build"
TARGET = 1.5
CASES = ("python", "rasterio", "libraries", "handler", "handler+init", "snapstart-restore")
# The third-party part of ``import sceneclip.aws.handler; get_app()``, built as the handler builds it.
LIBRARIES_ONLY = "; ".join([
    "import rasterio, rasterio.features, rasterio.windows, numpy, shapely.geometry, shapely.wkb, boto3",
    "from aws_lambda_powertools import Logger, Metrics, Tracer",
    "from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response",
    "from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord",
    "from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig, "
    "idempotent_function",
    "Logger(service='sceneclip'); Tracer(patch_modules=('botocore',)); Metrics(namespace='sceneclip')",
    "BatchProcessor(event_type=EventType.SQS)",
    "boto3.client('s3'); ddb = boto3.client('dynamodb')",
    "DynamoDBPersistenceLayer(table_name='t', boto3_client=ddb)",
])
LAYOUTS = ("venv", "layer", "layer-nopyc", "layer-src")
# Tooling that the runtime path must never import.
FORBIDDEN = ("geopandas", "pandas", "pyogrio", "pyproj", "moto")
SEP = "\x1f"

# The child: timing starts at its first line; only time and sys are imported before the measured part.
CHILD = r"""
import time
_t0 = time.perf_counter()
import sys
_case, _front, _back, _strip, _guard = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5] == "1"
if _strip:  # Lambda-like: standard library + the given directories only
    sys.path[:] = [p for p in sys.path if p and "site-packages" not in p and "dist-packages" not in p]
sys.path[:] = [p for p in _front.split("\x1f") if p] + sys.path + [p for p in _back.split("\x1f") if p]
_connects = []
if _guard:  # verification run only: record every connection attempt
    import socket
    _orig = socket.socket.connect
    def _connect(self, addr, *a, **k):
        _connects.append(str(addr))
        return _orig(self, addr, *a, **k)
    socket.socket.connect = _connect
_t1 = _t2 = None
if _case == "rasterio":
    import rasterio
    _t1 = time.perf_counter()
elif _case == "libraries":
    exec(sys.argv[7])
    _t1 = time.perf_counter()
elif _case == "snapstart-restore":
    import os
    os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
    import sceneclip.aws.handler  # INIT before the snapshot: not part of a restored start
    import snapshot_restore_py
    _t0 = time.perf_counter()
    for _f, _a, _k in snapshot_restore_py.get_after_restore():
        _f(*_a, **_k)
    _t1 = time.perf_counter()
elif _case in ("handler", "handler+init"):
    import sceneclip.aws.handler
    _t1 = time.perf_counter()
    if _case == "handler+init":
        _app = sceneclip.aws.handler.get_app()
        _t2 = time.perf_counter()
        assert sceneclip.aws.handler.get_app() is _app
_end = time.perf_counter()
import json
_forbidden = tuple(sys.argv[6].split(","))
print(json.dumps({
    "ms": (_end - _t0) * 1000,
    "import_ms": None if _t1 is None else (_t1 - _t0) * 1000,
    "init_ms": None if _t2 is None else (_t2 - _t1) * 1000,
    "modules": len(sys.modules),
    "rasterio_loaded": "rasterio" in sys.modules,
    "forbidden": sorted(m for m in sys.modules if m.split(".")[0] in _forbidden),
    "connects": _connects,
    "files": {m: getattr(sys.modules.get(m), "__file__", None) for m in ("sceneclip", "rasterio", "boto3",
                                                                         "aws_lambda_powertools")},
}))
"""


# --- layouts --------------------------------------------------------------------------------------------------


def _load_build_layer():
    spec = importlib.util.spec_from_file_location("build_layer", REPO / "layers" / "build_layer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_function(dest: Path, handler: Path | None) -> Path:
    """src/sceneclip as sources only, optionally with a variant of aws/handler.py."""
    shutil.copytree(SRC / "sceneclip", dest / "sceneclip",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    if handler is not None:
        shutil.copy2(handler, dest / "sceneclip" / "aws" / "handler.py")
    return dest


def _shipped_function(dest: Path, python: str, handler: Path | None) -> Path:
    """The function code exactly as ``sam build`` ships it (``src/Makefile``), optionally with a variant of
    aws/handler.py (recompiled: the shipped bytecode is unchecked-hash, so a stale .pyc would be used)."""
    subprocess.run(["make", "-s", "-C", str(SRC), "build-ClipFunction", f"ARTIFACTS_DIR={dest}", f"PY312={python}"],
                   check=True, capture_output=True)
    if handler is not None:
        shutil.copy2(handler, dest / "sceneclip" / "aws" / "handler.py")
        subprocess.run([python, "-m", "compileall", "-q", "-f", "--invalidation-mode", "unchecked-hash",
                        str(dest / "sceneclip" / "aws" / "handler.py")], check=True, capture_output=True)
    return dest


def _compile(python: str, *dirs: Path) -> None:
    for d in dirs:
        subprocess.run([python, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash", str(d)],
                       check=False, capture_output=True)


def prepare_layouts(names: list[str], work: Path, handler: Path | None) -> dict[str, dict]:
    """name -> {python, front, back, strip, flags, note}. Layer layouts are skipped (with the reason) when the
    layer has not been built."""
    layouts: dict[str, dict] = {}
    if "venv" in names:
        func = _copy_function(work / "venv-func", handler) if handler else SRC
        layouts["venv"] = {"python": sys.executable, "front": [str(func)], "back": [], "strip": False,
                           "flags": ["-I"], "note": f"{sys.executable} (site-packages as installed)"}
    wanted = [n for n in names if n.startswith("layer")]
    if not wanted:
        return layouts
    bl = _load_build_layer()
    arch = bl.host_arch()
    python = bl.find_python("3.12")
    zip_path = LAYER_BUILD / f"geo-{arch}.zip"
    powertools = LAYER_BUILD / arch / "powertools" / "python"
    runtime = LAYER_BUILD / arch / "runtime" / "python"
    missing = [str(p) for p in (zip_path, powertools, runtime) if not p.exists()]
    if python is None or missing:
        why = "no Python 3.12 interpreter" if python is None else f"missing {', '.join(missing)} (run `make layer`)"
        print(f"NOTE: layer layouts skipped: {why}", file=sys.stderr)
        return layouts
    opt = work / "opt"
    bl.unpack_zip(zip_path, opt)
    for name in wanted:
        base = work / name
        pt, rt = base / "powertools", base / "runtime"
        shutil.copytree(powertools, pt, symlinks=True)
        shutil.copytree(runtime, rt, symlinks=True)
        import snapshot_restore_py  # part of the Python managed runtime: the stand-in gets it too

        shutil.copy2(snapshot_restore_py.__file__, rt)
        if name == "layer":
            func = _shipped_function(base / "task", python, handler)
        else:
            func = _copy_function(base / "task", handler)
        if name in ("layer", "layer-nopyc"):
            _compile(python, pt, rt)
        # Lambda's order: /var/task, /opt/python (ours listed after Powertools wins: first here), stdlib, runtime.
        layouts[name] = {
            "python": python, "front": [str(func), str(opt / "python"), str(pt)], "back": [str(rt)],
            "strip": True, "flags": ["-I", "-S", "-B"],
            "note": f"{python} -I -S -B; geo layer {zip_path.name} (3.12 bytecode); " + {
                "layer": "Powertools + boto3 with 3.12 bytecode, function code as sam build ships it "
                         "(src/Makefile: 3.12 bytecode)",
                "layer-nopyc": "Powertools + boto3 with 3.12 bytecode, function code as sources only",
                "layer-src": "Powertools, boto3 and function code WITHOUT bytecode (compiled at every start)",
            }[name],
        }
    return layouts


# --- running --------------------------------------------------------------------------------------------------


def child_env(endpoint: str, task_root: str, trace_disabled: bool) -> dict[str, str]:
    """A Lambda-like environment: template.yaml's variables, a region, credentials, and the moto endpoint."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_SESSION_TOKEN": "bench",
        "AWS_ENDPOINT_URL": endpoint,
        # Tracer() enables itself only inside Lambda (LAMBDA_TASK_ROOT set): the template has Tracing: Active.
        "LAMBDA_TASK_ROOT": task_root, "AWS_LAMBDA_FUNCTION_NAME": "sceneclip",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "POWERTOOLS_SERVICE_NAME": "sceneclip", "POWERTOOLS_METRICS_NAMESPACE": "sceneclip",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "SCENECLIP_OUTPUT_BUCKET": "bench-out", "SCENECLIP_OUTPUT_PREFIX": "clipped/",
        "SCENECLIP_BOUNDARIES": "s3://bench-boundaries/store", "SCENECLIP_REGION_PATTERN": "",
        "SCENECLIP_RECORDS_TABLE": "bench-records", "SCENECLIP_IDEMPOTENCY_TABLE": "bench-idempotency",
        "SCENECLIP_ALL_TOUCHED": "false",
    }
    if trace_disabled:
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    if "PYENV_VERSION" in os.environ:
        env["PYENV_VERSION"] = os.environ["PYENV_VERSION"]
    return env


def create_resources() -> None:
    """The bucket and tables the variables name, so that the configuration is valid (get_app() touches none)."""
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench-out")
    ddb = boto3.client("dynamodb")
    ddb.create_table(TableName="bench-records", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "scene", "AttributeType": "S"},
                                           {"AttributeName": "region", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "scene", "KeyType": "HASH"},
                                {"AttributeName": "region", "KeyType": "RANGE"}])
    ddb.create_table(TableName="bench-idempotency", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])


def cpu_quota_cgroup(cpus: float) -> Path:
    """A new CPU cgroup whose processes get ``cpus`` CPUs of quota per 100 ms period."""
    quota = str(int(cpus * 100_000))
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():  # v2
        group = Path("/sys/fs/cgroup") / f"sceneclip-bench-{os.getpid()}"
        group.mkdir()
        (group / "cpu.max").write_text(f"{quota} 100000")
    else:  # v1
        group = Path("/sys/fs/cgroup/cpu") / f"sceneclip-bench-{os.getpid()}"
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(quota)
    return group


def run_child(layout: dict, case: str, env: dict[str, str], *, guard: bool = False,
              importtime: bool = False) -> tuple[dict, float, str]:
    flags = list(layout["flags"]) + (["-X", "importtime"] if importtime else [])
    cmd = [*layout.get("prefix", []), layout["python"], *flags, "-c", CHILD, case, SEP.join(layout["front"]), SEP.join(layout["back"]),
           "1" if layout["strip"] else "0", "1" if guard else "0", ",".join(FORBIDDEN), LIBRARIES_ONLY]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=env["LAMBDA_TASK_ROOT"], timeout=300)
    wall = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({case}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall, proc.stderr


def measure(layouts: dict[str, dict], env_for, repeat: int) -> dict[tuple[str, str], dict]:
    samples: dict[tuple[str, str], dict] = defaultdict(lambda: {"ms": [], "wall": [], "import_ms": [],
                                                                 "init_ms": [], "last": None})
    for name, layout in layouts.items():  # warm-up (page cache, venv bytecode of a --handler copy), unmeasured
        for case in CASES:
            run_child(layout, case, env_for(name))
    for rep in range(repeat):
        order = [(n, c) for n in layouts for c in CASES]
        if rep % 2:
            order.reverse()
        for name, case in order:
            out, wall, _ = run_child(layouts[name], case, env_for(name))
            s = samples[(name, case)]
            s["ms"].append(out["ms"])
            s["wall"].append(wall)
            for k in ("import_ms", "init_ms"):
                if out[k] is not None:
                    s[k].append(out[k])
            s["last"] = out
        print(f"  round {rep + 1}/{repeat} done", file=sys.stderr, flush=True)
    return samples


# --- -X importtime --------------------------------------------------------------------------------------------


def parse_importtime(stderr: str) -> list[dict]:
    """Nodes of the import tree: name, self_us, cum_us, parent (index or None)."""
    nodes: list[dict] = []
    stack: list[tuple[int, int]] = []  # (depth, node index) still waiting for their parent
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line.split(":", 1)[1].split("|", 2)
        depth = (len(name) - len(name.lstrip(" "))) // 2
        idx = len(nodes)
        nodes.append({"name": name.strip(), "self_us": int(self_us), "cum_us": int(cum_us), "parent": None})
        # importtime prints children before their parent, one level deeper
        while stack and stack[-1][0] > depth:
            nodes[stack.pop()[1]]["parent"] = idx
        stack.append((depth, idx))
    return nodes


def by_package(nodes: list[dict]) -> list[dict]:
    """Per top-level package: inclusive ms (outermost imports of it, with what they pull in), exclusive ms (its
    own modules only), module count, and which package first imported it."""
    top = lambda i: nodes[i]["name"].split(".")[0]  # noqa: E731
    rows: dict[str, dict] = {}
    for i, n in enumerate(nodes):
        pkg = top(i)
        r = rows.setdefault(pkg, {"package": pkg, "incl_ms": 0.0, "excl_ms": 0.0, "modules": 0, "via": set()})
        r["excl_ms"] += n["self_us"] / 1000
        r["modules"] += 1
        p, outermost = n["parent"], True
        while p is not None:
            if top(p) == pkg:
                outermost = False
                break
            p = nodes[p]["parent"]
        if outermost:
            r["incl_ms"] += n["cum_us"] / 1000
            if n["parent"] is not None:
                r["via"].add(top(n["parent"]))
    return sorted(rows.values(), key=lambda r: -r["incl_ms"])


def importtime_tables(layout: dict, env: dict[str, str], top_n: int) -> str:
    out = []
    for case in ("handler", "handler+init"):
        runs = [by_package(parse_importtime(run_child(layout, case, env, importtime=True)[2])) for _ in range(3)]
        # the median of three runs per package (importtime is single-shot noisy)
        pkgs = {r["package"]: r for r in runs[0]}
        for r in pkgs.values():
            for key in ("incl_ms", "excl_ms"):
                r[key] = median([next((x[key] for x in run if x["package"] == r["package"]), 0.0) for run in runs])
        rows = sorted(pkgs.values(), key=lambda r: -r["incl_ms"])
        what = "import sceneclip.aws.handler" if case == "handler" else "import sceneclip.aws.handler; get_app()"
        out.append(f"\n`python -X importtime -c \"{what}\"`, by top-level package (median of 3; inclusive = "
                   f"outermost imports of the package with everything they pull in, so rows overlap; "
                   f"top {top_n} of {len(rows)}):\n")
        out.append(markdown_table(
            ["package", "inclusive ms", "own modules ms", "modules", "first imported by"],
            [[r["package"], f"{r['incl_ms']:.1f}", f"{r['excl_ms']:.1f}", r["modules"],
              ", ".join(sorted(r["via"])) or ("(top)" if case == "handler" else "(top: get_app)")]
             for r in rows[:top_n]],
        ))
    return "\n".join(out)


# --- report ---------------------------------------------------------------------------------------------------


def report(layouts: dict[str, dict], samples: dict, checks: dict[str, dict]) -> str:
    lines = []
    headers = ["layout", "case", "in-child median ms", "min ms", "× rasterio (median)", "× rasterio (min)",
               "wall median ms", "wall × rasterio", "modules"]
    rows = []
    verdicts = []
    for name in layouts:
        ref = samples[(name, "rasterio")]
        ref_med, ref_min, ref_wall = median(ref["ms"]), min(ref["ms"]), median(ref["wall"])
        for case in CASES:
            s = samples[(name, case)]
            med, mn, wall = median(s["ms"]), min(s["ms"]), median(s["wall"])
            label = case
            if case == "handler+init" and s["init_ms"]:
                label += f" (get_app {median(s['init_ms']):.0f} ms)"
            if case == "python":  # nothing runs inside the child: only the wall time says something
                rows.append([name, "python (start-up only)", "–", "–", "–", "–", f"{wall:.0f}",
                             f"{wall / ref_wall:.2f}×", s["last"]["modules"]])
                continue
            rows.append([name, label, f"{med:.0f}", f"{mn:.0f}", f"{med / ref_med:.2f}×", f"{mn / ref_min:.2f}×",
                         f"{wall:.0f}", f"{wall / ref_wall:.2f}×", s["last"]["modules"]])
        for case in ("libraries", "handler", "handler+init", "snapstart-restore"):
            r = median(samples[(name, case)]["ms"]) / ref_med
            verdicts.append(f"- {name}: {case} = {r:.2f}× import rasterio — "
                            f"{'within' if r <= TARGET else 'OVER'} the {TARGET}× target"
                            + (" (no handler on these libraries can be faster)" if case == "libraries" else ""))
        own = median(samples[(name, "handler+init")]["ms"]) - median(samples[(name, "libraries")]["ms"])
        verdicts.append(f"- {name}: sceneclip's own share (handler+init − libraries) = {own:.0f} ms = "
                        f"{own / ref_med:.2f}× import rasterio")
    lines.append(markdown_table(headers, rows))
    lines.append("")
    lines.append(f"Target: handler import + init ≤ {TARGET}× `python -c \"import rasterio\"` (in-child medians); "
                 "with SnapStart (template parameter), a new container runs only the snapstart-restore row.")
    lines += verdicts
    lines.append("")
    for name, c in checks.items():
        lines.append(f"- {name}: handler import loads rasterio: {c['handler_rasterio']}; forbidden modules after "
                     f"import + get_app(): {c['forbidden'] or 'none'}; connections opened by import + get_app(): "
                     f"{len(c['connects'])}{' ' + str(c['connects'][:3]) if c['connects'] else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7, help="measured runs per case and layout")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated subset of {', '.join(LAYOUTS)}")
    ap.add_argument("--handler", type=Path, default=None,
                    help="measure this file in place of src/sceneclip/handler.py (a variant to compare)")
    ap.add_argument("--compare", type=Path, default=None,
                    help="also measure this variant of handler.py, interleaved in the same rounds: every layout "
                         "gets a '<layout>*' twin whose ratios use the same run's rasterio")
    ap.add_argument("--trace-disabled", action="store_true", help="set POWERTOOLS_TRACE_DISABLED=true")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra variable in every child's environment, the rasterio reference's included "
                         "(e.g. OPENBLAS_NUM_THREADS=1: the reference in the environment the handler makes itself)")
    ap.add_argument("--cpu-quota", type=float, default=None, metavar="CPUS",
                    help="run every child in a CPU cgroup with this quota (Lambda: MemorySize / 1769 vCPUs)")
    ap.add_argument("--importtime-layout", default="venv", help="layout for the -X importtime tables ('' = none)")
    ap.add_argument("--top", type=int, default=15, help="rows of the importtime tables")
    ap.add_argument("--results", default=str(RESULTS / "bench_coldstart.md"),
                    help="markdown file to write ('' = print only)")
    args = ap.parse_args(argv)
    names = [n for n in args.layouts.split(",") if n]
    unknown = set(names) - set(LAYOUTS)
    if unknown:
        ap.error(f"unknown layouts: {', '.join(sorted(unknown))}")

    work = Path(tempfile.mkdtemp(prefix="sceneclip-coldstart-"))
    group: Path | None = None
    try:
        layouts = prepare_layouts(names, work, args.handler.resolve() if args.handler else None)
        if args.compare:
            (work / "variant").mkdir()
            twins = prepare_layouts(names, work / "variant", args.compare.resolve())
            for name in list(layouts):
                if name in twins:
                    layouts[name + "*"] = twins[name]
                    layouts[name + "*"]["note"] += f"; handler.py replaced by {args.compare}"
        if not layouts:
            raise SystemExit("nothing to measure")
        if args.cpu_quota:
            try:
                group = cpu_quota_cgroup(args.cpu_quota)
            except OSError as exc:
                raise SystemExit(f"--cpu-quota needs a writable CPU cgroup: {exc}") from exc
            for layout in layouts.values():  # the shell joins the cgroup, then becomes the child
                layout["prefix"] = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group)]
        task_roots = {}
        for name in layouts:
            task_roots[name] = str(work / f"cwd-{name}")
            os.makedirs(task_roots[name], exist_ok=True)
        with moto_s3() as endpoint:
            create_resources()
            extra = dict(kv.split("=", 1) for kv in args.env)
            env_for = lambda name: {**child_env(endpoint, task_roots[name], args.trace_disabled), **extra}  # noqa: E731
            checks = {}
            for name, layout in layouts.items():
                out, _, _ = run_child(layout, "handler+init", env_for(name), guard=True)
                imp, _, _ = run_child(layout, "handler", env_for(name))
                checks[name] = {"forbidden": out["forbidden"], "connects": out["connects"],
                                "handler_rasterio": imp["rasterio_loaded"], "files": out["files"]}
            print(f"measuring {', '.join(layouts)} × {', '.join(CASES)}, {args.repeat} rounds", file=sys.stderr)
            samples = measure(layouts, env_for, args.repeat)
            profile = ""
            if args.importtime_layout and args.importtime_layout in layouts:
                profile = importtime_tables(layouts[args.importtime_layout], env_for(args.importtime_layout),
                                            args.top)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if group is not None:
            group.rmdir()

    head = [
        "# Cold start: handler import + init as a ratio to `import rasterio`",
        "",
        f"{platform.python_implementation()} {platform.python_version()} (parent), {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; {args.repeat} rounds per case, fresh process each, alternating order; "
        f"tracing {'disabled (POWERTOOLS_TRACE_DISABLED=true)' if args.trace_disabled else 'enabled as in Lambda (LAMBDA_TASK_ROOT set)'}"
        + (f"; every child in a cgroup with {args.cpu_quota} CPUs of quota" if args.cpu_quota else "")
        + (f"; every child's environment has {', '.join(args.env)}" if args.env else "")
        + (f"; handler.py replaced by {args.handler}" if args.handler else "")
        + (f"; layouts marked * use {args.compare}" if args.compare else "") + ".",
        "",
    ]
    head += [f"- {n}: {layouts[n]['note']}" for n in layouts]
    head.append("")
    text = "\n".join(head) + report(layouts, samples, checks) + "\n" + profile + "\n"
    print(text)
    if args.results:
        out = Path(args.results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"(written to {out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
