"""The geo Lambda layer alone is enough to clip: build it (or reuse the cached build), unpack the zip the way
Lambda does (into an ``opt/python`` directory, symlinks kept), and in a clean Python 3.12 interpreter whose
``sys.path`` is only the standard library + the unpacked layer + ``src/`` run one real clip
(``sceneclip.core.clip.run_clip``, verified COG included). Then, in the same interpreter, add what Lambda adds
around our layer — the AWS Powertools layer and the runtime's boto3 (stand-ins the build keeps under
``layers/build/<arch>/powertools`` and ``runtime``) — and import the handler and the modules it loads on first
use. No tooling (geopandas, pandas, pyogrio, moto, pyproj) may be imported on the way.

The layer is built for this machine's architecture by ``layers/build_layer.py`` and cached under
``layers/build/<arch>``; the cache key is a hash of ``layers/geo/requirements.txt`` + ``layers/build_layer.py``,
so an unchanged layer costs nothing on re-runs (a fresh build is ~15 s with a warm pip cache).
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "layers" / "build_layer.py"
REQUIREMENTS = ROOT / "layers" / "geo" / "requirements.txt"
OUT = ROOT / "layers" / "build"
SRC = ROOT / "src"
# Tooling that must never be pulled in by the runtime path (each costs cold-start time and layer space).
FORBIDDEN = ("geopandas", "pandas", "pyogrio", "moto", "pyproj")
# Dropped from the layer to fit the 150 MB budget (sceneclip.core.cogcheck replaces rio-cogeo's cog_validate) or
# shipped by the Lambda runtime.
NOT_IN_LAYER = ("rio-cogeo", "morecantile", "pyproj", "pydantic", "pydantic-core", "python-dateutil", "six")
# Modules of ours imported in the Lambda-like phase when they exist: the handler and what it loads on first use.
HANDLER_MODULES = ("sceneclip.aws.handler", "sceneclip.aws.pipeline", "sceneclip.core.stac")


def _load_build_module():
    spec = importlib.util.spec_from_file_location("build_layer", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_layer = _load_build_module()
ARCH = build_layer.host_arch()
PYTHON = build_layer.find_python("3.12")

pytestmark = pytest.mark.skipif(PYTHON is None, reason="no Python 3.12 interpreter (Lambda's runtime) on this machine")


@pytest.fixture(scope="module")
def layer_build() -> dict:
    """Build the layer for this machine's architecture unless the cached build matches the current inputs."""
    if ARCH not in build_layer.ARCHES:
        pytest.skip(f"no Lambda architecture for this machine ({ARCH})")
    key = build_layer.cache_key(REQUIREMENTS)
    key_file = OUT / ARCH / ".cache-key"
    sizes = OUT / f"sizes-{ARCH}.json"
    zip_path = OUT / f"geo-{ARCH}.zip"
    cached = key_file.exists() and key_file.read_text().strip() == key and sizes.exists() and zip_path.exists()
    if not cached:
        # Budget here is the AWS hard limit; the project's tighter budget is `make layer`'s verdict.
        proc = subprocess.run(
            [sys.executable, str(BUILD_SCRIPT), "--arch", ARCH, "--budget-mb", str(build_layer.HARD_LIMIT_MB)],
            capture_output=True, text=True, timeout=900,
        )
        assert proc.returncode == 0, f"layer build failed:\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(sizes.read_text())
    assert report["cache_key"] == key
    return report


@pytest.fixture(scope="module")
def unpacked_layer(layer_build, tmp_path_factory) -> Path:
    opt = tmp_path_factory.mktemp("opt")
    build_layer.unpack_zip(Path(layer_build["zip"]), opt)
    return opt / "python"


def test_layer_within_hard_limit_and_runtime_only(layer_build):
    assert layer_build["total_unzipped_mb"] <= build_layer.HARD_LIMIT_MB, layer_build
    dists = set(layer_build["dists"])
    for name in ("rasterio", "shapely", "numpy", "pystac", "pystac-core"):
        assert name in dists
    for name in (*FORBIDDEN, *NOT_IN_LAYER, "boto3", "botocore", "aws-lambda-powertools"):
        assert name not in dists, f"{name} must not be in the geo layer"


def test_zip_layout(layer_build):
    with zipfile.ZipFile(layer_build["zip"]) as zf:
        names = zf.namelist()
        links = [i.filename for i in zf.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
    assert all(n.startswith("python/") for n in names)
    assert not any("/tests/" in n or "/test/" in n for n in names)
    assert not any(n.startswith("python/bin/") for n in names)
    # 3.12 bytecode, hash-based so that Lambda's read-only /opt never needs a rewrite
    assert "python/rasterio/__pycache__/__init__.cpython-312.pyc" in names
    assert any(n.endswith(".dist-info/METADATA") and "/rasterio-" in n for n in names)
    # the trims of build_layer.TRIMS / PRUNE_SUFFIXES
    assert not any(n.startswith(("python/numpy/f2py/", "python/numpy/_core/include/")) for n in names)
    assert not any(n.endswith((".h", ".a", ".pyx", ".pxd")) for n in names)
    assert not any("/_simd." in n or "_multiarray_tests." in n for n in names)
    assert not any(n.startswith(("python/dateutil/", "python/six.py", "python/rio_cogeo/", "python/pyproj/"))
                   for n in names)
    if layer_build.get("deduped_geos_mb"):  # shapely's GEOS is a symlink to rasterio's identical build
        assert any(n.startswith("python/shapely.libs/libgeos_c-") for n in links), links
    if layer_build.get("deduped_mb"):
        assert "python/pyproj/proj_dir/share/proj/proj.db" in links


CLEAN_SCRIPT = r"""
import importlib, json, os, sys, tempfile

LAYER, SRC, FORBIDDEN = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(","))
POWERTOOLS, RUNTIME, HANDLER_MODULES = sys.argv[4], sys.argv[5], sys.argv[6].split(",")
stdlib = [p for p in sys.path if p and "site-packages" not in p and "dist-packages" not in p]
sys.path[:] = [LAYER, SRC] + stdlib
assert not any("site-packages" in p or ".venv" in p for p in sys.path), sys.path

# Phase 1: the geo layer alone clips, with the real API (plan, streamed write, COG, verification).
# shapely first: its GEOS may be a symlink to rasterio's (build_layer.dedupe_geos); loading it before GDAL
# is the order that needs the symlinked library's own dependencies to resolve.
import shapely
assert shapely.box(0, 0, 2, 2).buffer(1).area > 15

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

import sceneclip
import sceneclip.core.clip
import sceneclip.core.geometry

loaded_from = {m.__name__: m.__file__ for m in (np, rasterio, shapely)}
for name, path in loaded_from.items():
    assert path.startswith(LAYER), (name, path)
assert sceneclip.__file__.startswith(SRC), sceneclip.__file__

# A small synthetic scene: 3 x 512 x 512 uint16, UTM 33N, 10 m pixels, tiled like a real COG source.
tmp = tempfile.mkdtemp()
src_path = os.path.join(tmp, "scene.tif")
transform = from_origin(500000, 5000000, 10, 10)
data = (np.arange(512 * 512, dtype=np.uint32).reshape(512, 512) % 65521).astype(np.uint16)
with rasterio.open(src_path, "w", driver="GTiff", width=512, height=512, count=3, dtype="uint16",
                   crs="EPSG:32633", transform=transform, tiled=True, blockxsize=256, blockysize=256) as dst:
    for b in range(1, 4):
        dst.write(data + b, b)

# The boundary in WGS84 (reprojected by GDAL/PROJ with rasterio's proj.db); run_clip takes it back to UTM.
utm_box = box(500000 + 1000, 5000000 - 3000, 500000 + 3000, 5000000 - 1000)
polygon = shape(transform_geom("EPSG:32633", "EPSG:4326", mapping(utm_box)))
boundary = sceneclip.core.geometry.Boundary.from_geometries([polygon], "EPSG:4326")
result = sceneclip.core.clip.run_clip(src_path, boundary, sceneclip.core.clip.ClipOptions())
record = result.record
clip = {"status": record.status, "error": record.error, "checks": record.checks,
        "shape": [record.count, record.height, record.width]}
if result.output is not None:
    with result.output.open() as check:
        clip["layout"] = check.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
    clip["bytes"] = result.output.size()
    result.output.close()
phase1_modules = sorted(m for m in sys.modules if m.split(".")[0] in ("rio_cogeo", "morecantile", "pydantic"))

# Phase 2: what Lambda puts around our layer. /opt/python holds the Powertools layer too (ours listed after it,
# so ours wins on overlaps: our directory stays first) and the runtime's boto3 comes last.
handler = {"skipped": None, "imported": [], "errors": {}}
if not (os.path.isdir(POWERTOOLS) and os.path.isdir(RUNTIME)):
    handler["skipped"] = "no Powertools/runtime stand-ins in the build (Powertools layer not measured)"
else:
    sys.path[:] = [LAYER, SRC, POWERTOOLS, RUNTIME] + stdlib
    for name in HANDLER_MODULES:
        if not os.path.exists(os.path.join(SRC, *name.split(".")) + ".py"):
            continue
        try:
            importlib.import_module(name)
            handler["imported"].append(name)
        except Exception as exc:  # report every failure, not only the first
            handler["errors"][name] = f"{type(exc).__name__}: {exc}"
    import boto3  # the runtime's (the handler imports it on first use)

    for mod, where in (("aws_lambda_powertools", POWERTOOLS), ("boto3", RUNTIME), ("pystac", LAYER),
                       ("dateutil", RUNTIME)):
        m = sys.modules.get(mod)
        if m is not None:
            loaded_from[mod] = m.__file__
            assert m.__file__.startswith(where), (mod, m.__file__, where)

print(json.dumps({
    "clip": clip, "handler": handler, "loaded_from": loaded_from, "gdal": rasterio.__gdal_version__,
    "phase1_dropped_deps": phase1_modules,
    "forbidden": sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN),
}))
"""


@pytest.fixture(scope="module")
def clean_run(unpacked_layer, tmp_path_factory) -> dict:
    """Run CLEAN_SCRIPT once in ``python3.12 -I -S -B`` with a Lambda-like environment."""
    tmp_path = tmp_path_factory.mktemp("clean")
    script = tmp_path / "clip_with_layer.py"
    script.write_text(textwrap.dedent(CLEAN_SCRIPT))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           # what Lambda sets; boto3 needs a region to build clients, Powertools reads the rest
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_LAMBDA_FUNCTION_NAME": "sceneclip",
           "POWERTOOLS_SERVICE_NAME": "sceneclip", "POWERTOOLS_TRACE_DISABLED": "true",
           "POWERTOOLS_METRICS_NAMESPACE": "sceneclip"}
    if "PYENV_VERSION" in os.environ or "pyenv" in PYTHON:
        env["PYENV_VERSION"] = os.environ.get("PYENV_VERSION", "3.11.7:3.12.1")
    stand_ins = OUT / ARCH
    # -I: ignore PYTHON* variables and user site, no script dir on sys.path; -S: no site-packages at all;
    # -B: write no bytecode (the layer ships its own; src/ stays clean).
    proc = subprocess.run(
        [PYTHON, "-I", "-S", "-B", str(script), str(unpacked_layer), str(SRC), ",".join(FORBIDDEN),
         str(stand_ins / "powertools" / "python"), str(stand_ins / "runtime" / "python"), ",".join(HANDLER_MODULES)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert proc.returncode == 0, f"clean interpreter failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_clip_with_layer_alone_in_clean_interpreter(clean_run):
    clip = clean_run["clip"]
    assert clip["status"] == "ok", clip["error"]
    assert clip["checks"]["cog_valid"] is True, clip["checks"]
    assert clip["layout"] == "COG"
    # a 2 km UTM square sent through WGS84 and back: 200 px a side, + up to one pixel per edge for the
    # round trip (run_clip densifies the reprojected edges)
    count, height, width = clip["shape"]
    assert count == 3 and 200 <= height <= 202 and 200 <= width <= 202, clip["shape"]
    assert clip["checks"]["pixels_match_source"] is True and clip["checks"]["valid_pixels"] is True
    assert clean_run["phase1_dropped_deps"] == [], "the runtime path imported a dependency the layer dropped"
    assert clean_run["forbidden"] == [], f"runtime path imported tooling: {clean_run['forbidden']}"


def test_handler_imports_with_layer_powertools_and_runtime(clean_run):
    handler = clean_run["handler"]
    if handler["skipped"]:
        pytest.skip(handler["skipped"])
    assert handler["errors"] == {}, handler["errors"]
    assert "sceneclip.aws.handler" in handler["imported"]
    assert clean_run["forbidden"] == [], f"handler path imported tooling: {clean_run['forbidden']}"
