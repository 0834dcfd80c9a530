"""``sam build`` (no container) succeeds with a Python 3.12 interpreter on PATH and produces both artifacts.

ClipFunction (CodeUri ``src/``, no requirements.txt there) is copied as is by SAM's python builder; GeoLayer
(BuildMethod ``makefile``) runs ``layers/geo/Makefile`` -> ``layers/build_layer.py --arch host --copy-to
$ARTIFACTS_DIR``. The build goes to a temporary ``--build-dir`` without ``--cached``. The layer build reuses
the wheel cache under ``layers/build/wheels`` (filled by ``make layer`` or tests/test_layer_build.py) and, as any
run of build_layer.py, rewrites ``layers/build/<host arch>/`` and ``sizes-<arch>.json`` (same inputs, same
layer; the JSON then records the 250 MB check of the Makefile instead of `make layer`'s 150 MB budget).
About 20 s here with a warm wheel cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("geopandas", "pandas", "pyogrio", "moto", "pyproj", "boto3", "botocore", "aws_lambda_powertools")


def _load_build_layer():
    spec = importlib.util.spec_from_file_location("build_layer", ROOT / "layers" / "build_layer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sam() -> str | None:
    for d in (os.environ.get("SCENECLIP_TOOLS_BIN"), str(ROOT / ".venv-tools" / "bin")):
        if d and (Path(d) / "sam").exists():
            return str(Path(d) / "sam")
    return shutil.which("sam")


def _python312_bin(tmp_path: Path) -> Path | None:
    """A directory holding a ``python3.12`` that runs without pyenv variables (SAM calls it by that name)."""
    python = _load_build_layer().find_python("3.12")
    if python is None:
        return None
    env = dict(os.environ, PYENV_VERSION=os.environ.get("PYENV_VERSION") or "3.11.7:3.12.1")
    real = subprocess.run([python, "-c", "import sys; print(getattr(sys, '_base_executable', sys.executable))"],
                          capture_output=True, text=True, env=env).stdout.strip()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3.12").symlink_to(real or python)
    return bindir


def test_sam_build_without_container(tmp_path):
    sam = _sam()
    if sam is None:
        pytest.skip("SAM CLI not found (make tools, or set SCENECLIP_TOOLS_BIN)")
    if shutil.which("make") is None:
        pytest.skip("make is needed by the GeoLayer makefile build")
    bindir = _python312_bin(tmp_path)
    if bindir is None:
        pytest.skip("no Python 3.12 interpreter (Lambda's runtime): sam build needs one on PATH")
    build = tmp_path / "build"
    env = dict(os.environ, SAM_CLI_TELEMETRY="0", PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("LAYER_ARCH", None)  # host architecture, the template default when built here
    for var in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS"):  # a parent `make test` must not leak its variables
        env.pop(var, None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sam, "build", "--template-file", str(ROOT / "template.yaml"), "--build-dir", str(build)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=900,
    )
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, f"sam build failed after {seconds:.0f} s:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    assert "Build Succeeded" in proc.stdout + proc.stderr

    func = build / "ClipFunction"
    assert (func / "sceneclip" / "aws" / "handler.py").is_file()
    assert (func / "sceneclip" / "aws" / "pipeline.py").is_file()
    assert (func / "sceneclip" / "core" / "clip.py").is_file()
    # The Lambda package is errors + core + aws only: the tooling layers never ship.
    assert not (func / "sceneclip" / "tools").exists() and not (func / "sceneclip" / "cli").exists()
    assert not list(func.rglob("*.egg-info")), "packaging metadata of the dev install leaked into the function"
    assert (func / "sceneclip" / "aws" / "__pycache__" / "handler.cpython-312.pyc").is_file(), "function ships 3.12 bytecode"
    assert not (func / "Makefile").exists()

    layer = build / "GeoLayer" / "python"
    assert (layer / "rasterio" / "__init__.py").is_file()
    assert (layer / "rasterio" / "__pycache__" / "__init__.cpython-312.pyc").is_file(), "3.12 bytecode expected"
    for name in ("shapely", "numpy", "pystac"):
        assert (layer / name).is_dir(), name
    for name in FORBIDDEN:
        assert not (layer / name).exists(), f"{name} must not be in the geo layer"

    built = (build / "template.yaml").read_text()
    assert "CodeUri: ClipFunction" in built and "ContentUri: GeoLayer" in built
    sizes = json.loads((ROOT / "layers" / "build" / f"sizes-{_load_build_layer().host_arch()}.json").read_text())
    assert sizes["total_unzipped_mb"] <= sizes["hard_limit_mb"]
