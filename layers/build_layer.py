#!/usr/bin/env python3
"""Build the sceneclip "geo" Lambda layer (rasterio, shapely, numpy, pystac) and check the size budget.

For each architecture this script

1. downloads manylinux wheels for CPython 3.12 (``pip download --platform ... --only-binary=:all:``) into a
   cache (``<out>/wheels/<arch>``; re-runs with unchanged requirements do not touch the network),
2. installs them with ``pip install --target <out>/<arch>/python --no-index`` (nothing of this machine leaks in),
3. drops what Lambda never needs: distributions the Lambda runtime already ships (``RUNTIME_PROVIDED``: pystac's
   python-dateutil and six), ``tests``/``test`` packages, ``__pycache__``, ``*.pyi``/``*.pyx``/``*.pxd`` sources,
   C headers and static libraries, console scripts (``bin/``), ``dist-info/RECORD`` (stale once the binaries
   are stripped) and the files listed in ``TRIMS`` (each with the reason it is never used at runtime);
   ``dist-info/METADATA`` stays so ``importlib.metadata`` keeps working,
4. strips every ELF shared object with ``--strip-unneeded`` (GNU strip for the host architecture,
   ``aarch64-linux-gnu-strip`` or ``llvm-strip`` for arm64; with none of them the arm64 layer is left
   unstripped and the script says so),
   then replaces shapely's GEOS by symlinks to rasterio's identical build (``dedupe_geos``) and, should pyproj
   ever be back in the layer, pyproj's copy of PROJ's proj.db by a symlink to rasterio's identical one,
5. compiles bytecode with a Python 3.12 interpreter (``--invalidation-mode unchecked-hash``: Lambda's /opt is
   read-only and zip timestamps have a 2 s resolution, so timestamp-checked .pyc files would be ignored),
6. writes ``<out>/geo-<arch>.zip`` (deterministic, symlinks kept as symlinks) and ``<out>/sizes-<arch>.json``,
7. prints unzipped / zipped MB per distribution and the total of function code + this layer + the
   AWS-published Powertools layer, and exits 1 when that total is over ``--budget-mb``.

Run ``python layers/build_layer.py --help`` for the options; ``make layer`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
import zipfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER_DIR = ROOT / "layers" / "geo"
DEFAULT_REQUIREMENTS = LAYER_DIR / "requirements.txt"
LOCK_FILE = ROOT / "requirements.lock"

# Lambda architecture name -> machine name used in wheel platform tags and ELF tooling.
ARCHES = {"x86_64": "x86_64", "arm64": "aarch64"}
# Lambda's python3.12 runtime is Amazon Linux 2023 (glibc 2.34). manylinux_2_28 as the ceiling is what the
# wheels we use are built for; pip also accepts every older manylinux_2_x tag below it.
PLATFORM_TAGS = ("manylinux2014_{m}", "manylinux_2_28_{m}")
HARD_LIMIT_MB = 250.0  # AWS: function + all layers, unzipped
# Distributions the Lambda Python runtime already ships (boto3 and its dependencies). AWS removes exactly these
# from its Powertools layer (powertools-lambda-python layer_v3/docker/Dockerfile), so the estimate does too.
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer", "python-dateutil", "urllib3", "six", "jmespath"}
# Used only when the Powertools layer cannot be measured (no network and no cached wheels).
POWERTOOLS_FALLBACK_MB = 30.0
PRUNE_DIRS = {"tests", "test", "__pycache__"}
# Type stubs and Cython sources/declarations are read by type checkers and compilers, never by the interpreter;
# C/C++ headers (.h/.hpp) and static archives (.a) only serve compiling extensions against numpy.
PRUNE_SUFFIXES = (".pyi", ".pyx", ".pxd", ".h", ".hpp", ".a")
# Further files no code path of the function imports or opens, relative to the layer's python/ directory.
# Each entry: (glob, why it is safe). Globs that match nothing are fine (other versions/architectures).
# tests/test_layer_build.py runs the real clip (and the handler import, when it exists) on the trimmed layer.
TRIMS: tuple[tuple[str, str], ...] = (
    ("numpy/f2py",
     "Fortran-to-Python wrapper generator, a build tool; numpy imports it only on `numpy.f2py` attribute "
     "access and nothing in rasterio/shapely/pystac/sceneclip does"),
    ("numpy/_core/include", "C headers for building extensions against numpy (numpy.get_include())"),
    ("numpy/_core/lib", "libnpymath.a + pkg-config files, for building extensions against numpy"),
    ("numpy/random/lib", "libnpyrandom.a, for building Cython extensions against numpy.random"),
    ("numpy/random/_examples", "Cython/Numba/CFFI example sources, never imported"),
    ("numpy/_pyinstaller", "PyInstaller hook, only read by PyInstaller when freezing an application"),
    ("numpy/conftest.py", "pytest configuration for numpy's own test suite"),
    ("numpy/_core/_simd.cpython-*.so",
     "SIMD intrinsics test module (1.4 MB); only numpy's test suite and conftest import numpy._core._simd"),
    ("numpy/_core/_multiarray_tests.cpython-*.so", "test-only C module (numpy/_core/tests)"),
    ("numpy/_core/_umath_tests.cpython-*.so", "test-only C module (numpy/_core/tests)"),
    ("numpy/_core/_rational_tests.cpython-*.so", "test-only C module (numpy/_core/tests)"),
    ("numpy/_core/_struct_ufunc_tests.cpython-*.so", "test-only C module (numpy/_core/tests)"),
    ("numpy/_core/_operand_flag_tests.cpython-*.so", "test-only C module (numpy/_core/tests)"),
)
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
MB = 1024 * 1024


def log(msg: str) -> None:
    print(msg, flush=True)


def note(msg: str) -> None:
    print(f"NOTE: {msg}", flush=True)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def cache_key(requirements: Path) -> str:
    """Hash of the requirements and of this script: a change to either invalidates cached builds."""
    h = hashlib.sha256()
    h.update(requirements.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def pinned_names(requirements: Path) -> set[str]:
    names = set()
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(normalize(re.split(r"[<>=!~;\[ ]", line, 1)[0]))
    return names


def lock_version(dist: str) -> str | None:
    """Version of ``dist`` in requirements.lock for Python >= 3.12 (or without marker)."""
    if not LOCK_FILE.exists():
        return None
    for line in LOCK_FILE.read_text().splitlines():
        m = re.match(rf"^{re.escape(dist)}==([^\s;]+)\s*(;.*)?$", line.strip(), re.I)
        if m and (m.group(2) is None or ">= '3.12'" in m.group(2)):
            return m.group(1)
    return None


# --------------------------------------------------------------------------------------------------- pip
def pip_platform_args(arch: str, python_version: str) -> list[str]:
    args = []
    for tag in PLATFORM_TAGS:
        args += ["--platform", tag.format(m=ARCHES[arch])]
    return args + ["--implementation", "cp", "--python-version", python_version, "--only-binary=:all:"]


def run_pip(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"pip failed ({proc.returncode}): {' '.join(cmd)}")


def fetch_wheels(reqs: list[str], wheel_dir: Path, arch: str, python_version: str, key: str) -> None:
    """Download wheels once per ``key`` (the requirements); later runs install from the cache, no network."""
    stamp = wheel_dir / f".complete-{key}"
    if stamp.exists():
        return
    wheel_dir.mkdir(parents=True, exist_ok=True)
    log(f"[{arch}] downloading wheels into {wheel_dir.relative_to(ROOT) if wheel_dir.is_relative_to(ROOT) else wheel_dir}")
    run_pip(["download", "-q", "-d", str(wheel_dir), *pip_platform_args(arch, python_version), *reqs])
    for old in wheel_dir.glob(".complete-*"):
        old.unlink()
    stamp.touch()


def install(reqs: list[str], wheel_dir: Path, target: Path, arch: str, python_version: str) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    run_pip(
        # The wheels were chosen for the target runtime by the tags above; pip 23 (the machine's Python 3.11)
        # still checks Requires-Python against the interpreter it runs on, so rasterio (>=3.12) would be refused.
        ["install", "-q", "--no-index", "--find-links", str(wheel_dir), "--no-compile", "--no-warn-script-location",
         "--ignore-requires-python", "--target", str(target), *pip_platform_args(arch, python_version), *reqs]
    )


# --------------------------------------------------------------------------------------------------- layout
def installed_dists(target: Path) -> dict[str, str]:
    """normalized name -> version, from the dist-info directories."""
    out = {}
    for d in target.glob("*.dist-info"):
        name, _, version = d.name[: -len(".dist-info")].rpartition("-")
        out[normalize(name)] = version
    return out


def owner_map(target: Path) -> dict[str, str]:
    """Top-level entry of target (package dir, module file, ``*.libs``) -> distribution name, from RECORD.

    When several distributions install into one package (pystac-core and the pystac-ext-* modules all write
    into ``pystac/``), the one with the most files there owns it.
    """
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for rec in target.glob("*.dist-info/RECORD"):
        dist = normalize(rec.parent.name[: -len(".dist-info")].rpartition("-")[0])
        for line in rec.read_text().splitlines():
            path = line.split(",", 1)[0]
            if not path or path.startswith(".."):
                continue
            top = path.split("/", 1)[0]
            if top.endswith(".py") and "/" not in path:
                counts[top[:-3]][dist] += 1  # module's bytecode lands in top-level __pycache__/<module>.cpython-*.pyc
            counts[top][dist] += 1
    return {top: max(by_dist, key=lambda d: (by_dist[d], d)) for top, by_dist in counts.items()}


def dist_of(relpath: str, owners: dict[str, str]) -> str:
    parts = relpath.split("/")
    top = parts[0]
    if top == "__pycache__" and len(parts) > 1:
        return owners.get(parts[1].split(".", 1)[0], "(other)")
    return owners.get(top, "(other)")


def prune(target: Path) -> int:
    """Remove what never runs on Lambda. Returns bytes removed."""
    removed = 0

    def size_of(p: Path) -> int:
        if p.is_symlink() or p.is_file():
            return p.lstat().st_size
        return sum(f.lstat().st_size for f in p.rglob("*") if f.is_file() or f.is_symlink())

    bindir = target / "bin"
    if bindir.is_dir():
        removed += size_of(bindir)
        shutil.rmtree(bindir)
    for dirpath, dirnames, filenames in os.walk(target, topdown=True):
        for d in list(dirnames):
            if d in PRUNE_DIRS:
                p = Path(dirpath, d)
                removed += size_of(p)
                shutil.rmtree(p)
                dirnames.remove(d)
        for f in filenames:
            p = Path(dirpath, f)
            if f.endswith(PRUNE_SUFFIXES) or (f == "RECORD" and dirpath.endswith(".dist-info")):
                removed += p.lstat().st_size
                p.unlink()
    return removed


def apply_trims(target: Path) -> tuple[int, list[str]]:
    """Delete the ``TRIMS`` entries. Returns (bytes removed, globs that matched something)."""
    removed, hit = 0, []
    for pattern, _why in TRIMS:
        matches = sorted(target.glob(pattern))
        for p in matches:
            if p.is_dir() and not p.is_symlink():
                removed += sum(f.lstat().st_size for f in p.rglob("*") if f.is_file() or f.is_symlink())
                shutil.rmtree(p)
            else:
                removed += p.lstat().st_size
                p.unlink()
        if matches:
            hit.append(pattern)
    return removed, hit


def drop_runtime_provided(target: Path, owners: dict[str, str]) -> list[str]:
    """Remove distributions the Lambda runtime already ships (``RUNTIME_PROVIDED``, pulled in here only as
    dependencies, e.g. pystac-core -> python-dateutil -> six). Returns the names removed."""
    dropped = set()
    for entry in list(target.iterdir()):
        dist = owners.get(entry.name)
        if entry.name.endswith(".dist-info"):
            dist = normalize(entry.name[: -len(".dist-info")].rpartition("-")[0])
        if dist in RUNTIME_PROVIDED:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            dropped.add(dist)
    return sorted(dropped)


def is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


def find_strip(arch: str) -> tuple[list[str] | None, str]:
    """A strip command that understands ``arch`` ELF files, and a description of what was chosen."""
    machine = ARCHES[arch]
    candidates = [f"{machine}-linux-gnu-strip"]
    if platform.machine() == machine:
        candidates.append("strip")
    candidates += ["llvm-strip"] + [f"llvm-strip-{v}" for v in range(25, 10, -1)]
    for c in candidates:
        exe = shutil.which(c)
        if exe:
            return [exe, "--strip-unneeded"], c
    return None, ""


def strip_binaries(target: Path, arch: str, quiet: bool = False) -> tuple[int, str]:
    """Strip ELF files in place. Returns (bytes saved, tool used or '' when skipped)."""
    cmd, tool = find_strip(arch)
    elves = [p for p in sorted(target.rglob("*")) if is_elf(p)]
    if cmd is None:
        if quiet:
            return 0, ""
        hint = "apt-get install binutils-aarch64-linux-gnu (or llvm)" if arch == "arm64" else "install binutils"
        note(f"[{arch}] no strip tool for {ARCHES[arch]} ELF files: {len(elves)} shared objects left unstripped "
             f"({hint} to shrink the layer).")
        return 0, ""
    before = sum(p.stat().st_size for p in elves)
    failed = []
    for i in range(0, len(elves), 50):
        batch = elves[i : i + 50]
        proc = subprocess.run([*cmd, *map(str, batch)], capture_output=True, text=True)
        if proc.returncode != 0:  # retry one by one so a single odd file does not block the rest
            for p in batch:
                if subprocess.run([*cmd, str(p)], capture_output=True).returncode != 0:
                    failed.append(p.name)
    if failed and not quiet:
        note(f"[{arch}] {tool} could not strip {len(failed)} file(s), left as they were: {', '.join(failed[:5])}")
    after = sum(p.stat().st_size for p in elves)
    return before - after, tool


def proj_db_metadata(path: Path) -> dict[str, str] | None:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return dict(con.execute("SELECT key, value FROM metadata").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return None


def dedupe_proj_db(target: Path, arch: str) -> int:
    """rasterio and pyproj each bundle PROJ's ~10 MB proj.db. When both copies describe the same database
    (same PROJ, EPSG, ESRI, ... versions and layout in the ``metadata`` table) pyproj's copy becomes a relative
    symlink to rasterio's. The zip keeps it as a symlink, so it costs a few bytes unzipped. Returns bytes saved.
    """
    ours = target / "rasterio" / "proj_data" / "proj.db"
    theirs = target / "pyproj" / "proj_dir" / "share" / "proj" / "proj.db"
    if not (ours.is_file() and theirs.is_file()) or ours.is_symlink() or theirs.is_symlink():
        return 0
    a, b = proj_db_metadata(ours), proj_db_metadata(theirs)
    if not a or a != b:
        note(f"[{arch}] rasterio and pyproj bundle different PROJ databases: both copies kept.")
        return 0
    saved = theirs.stat().st_size
    theirs.unlink()
    theirs.symlink_to(os.path.relpath(ours, theirs.parent))
    return saved


def _geos_libs(libs: Path) -> dict[str, tuple[Path, str]] | None:
    """{'geos': (path, version), 'geos_c': (path, version)} for auditwheel-renamed GEOS libraries in ``libs``."""
    found: dict[str, tuple[Path, str]] = {}
    for p in libs.glob("libgeos*.so.*"):
        m = re.fullmatch(r"lib(geos|geos_c)-[0-9a-f]{8}\.so\.([0-9.]+)", p.name)
        if not m or p.is_symlink() or m.group(1) in found:
            return None
        found[m.group(1)] = (p, m.group(2))
    return found if set(found) == {"geos", "geos_c"} else None


def _geos_c_api(path: Path) -> set[str] | None:
    """Exported GEOS C API functions of a libgeos_c (readelf reads ELF of any architecture)."""
    exe = shutil.which("readelf") or shutil.which("llvm-readelf")
    if exe is None:
        return None
    proc = subprocess.run([exe, "--dyn-syms", "-W", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    names = set()
    for line in proc.stdout.splitlines():
        f = line.split()
        if len(f) >= 8 and f[3] == "FUNC" and f[4] == "GLOBAL" and f[6] != "UND":
            names.add(f[7])
    return names or None


def dedupe_geos(target: Path, arch: str) -> int:
    """shapely and rasterio (for GDAL) each bundle GEOS: libgeos (C++, ~4.3 MB) + libgeos_c (C API, ~0.5 MB).

    shapely's extension modules link only the C API (``NEEDED libgeos_c-<hash>``, found through
    ``RPATH $ORIGIN/../shapely.libs``). When both wheels carry the same GEOS release (same libgeos and
    libgeos_c versions) and both libgeos_c export exactly the same functions, shapely's pair is replaced by
    relative symlinks to rasterio's: ``shapely.libs/libgeos_c-<shapely hash>`` -> rasterio's libgeos_c, and
    ``shapely.libs/libgeos-<rasterio hash>`` -> rasterio's libgeos, so that the ``NEEDED`` of rasterio's
    libgeos_c resolves through its ``RPATH $ORIGIN`` whichever directory the loader takes as its origin.
    glibc recognises the two paths as one file (same device and inode), so the process maps one GEOS whichever
    of shapely or rasterio is imported first. Only the stable C API crosses the boundary; the C++ library stays
    paired with the libgeos_c it was built with. Returns bytes saved (0 and a note when the check fails).
    """
    ours, theirs = _geos_libs(target / "rasterio.libs"), _geos_libs(target / "shapely.libs")
    if not ours or not theirs:
        return 0
    if any(ours[k][1] != theirs[k][1] for k in ("geos", "geos_c")):
        note(f"[{arch}] rasterio and shapely bundle different GEOS versions: both copies kept.")
        return 0
    api_ours, api_theirs = _geos_c_api(ours["geos_c"][0]), _geos_c_api(theirs["geos_c"][0])
    if not api_ours or api_ours != api_theirs:
        note(f"[{arch}] rasterio's and shapely's libgeos_c export different functions (or readelf is missing): "
             "both GEOS copies kept.")
        return 0
    libs = target / "shapely.libs"
    saved = 0
    for kind in ("geos", "geos_c"):
        saved += theirs[kind][0].stat().st_size
        theirs[kind][0].unlink()
    (libs / theirs["geos_c"][0].name).symlink_to(os.path.relpath(ours["geos_c"][0], libs))
    (libs / ours["geos"][0].name).symlink_to(os.path.relpath(ours["geos"][0], libs))
    return saved


# --------------------------------------------------------------------------------------------------- bytecode
def find_python(version: str) -> str | None:
    """An interpreter of ``version`` (e.g. '3.12'): this one, python3.12 on PATH, or the pyenv shim."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    probe = "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])"
    envs = [os.environ, dict(os.environ, PYENV_VERSION=os.environ.get("PYENV_VERSION", "") or "3.11.7:3.12.1")]
    for env in envs:
        exe = shutil.which(f"python{version}")
        if not exe:
            continue
        try:
            out = subprocess.run([exe, "-c", probe], capture_output=True, text=True, env=env, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = out.stdout.split()
        if out.returncode == 0 and len(lines) == 2 and lines[1] == version:
            return lines[0]
    return None


def compile_bytecode(target: Path, python: str | None, version: str, arch: str) -> bool:
    if python is None:
        note(f"[{arch}] no Python {version} interpreter found: shipping without bytecode "
             "(every cold start then compiles what it imports, into memory only).")
        return False
    cmd = [python, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash",
           "-s", str(target), "-p", "/opt/python", str(target)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        # Some packages ship files that do not compile on purpose (templates, py2 leftovers): report, go on.
        bad = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("***")]
        note(f"[{arch}] compileall reported {len(bad)} file(s) it could not compile: {bad[:3]}")
    return True


# --------------------------------------------------------------------------------------------------- zip
def write_zip(layer_root: Path, zip_path: Path) -> list[zipfile.ZipInfo]:
    """Zip ``layer_root/python`` as ``python/...``: sorted, fixed timestamps, symlinks stored as links."""
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for dirpath, dirnames, filenames in os.walk(layer_root / "python"):
            dirnames.sort()
            for name in sorted(filenames) + sorted(d for d in dirnames if Path(dirpath, d).is_symlink()):
                path = Path(dirpath, name)
                arcname = path.relative_to(layer_root).as_posix()
                info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
                info.create_system = 3  # unix, so external_attr carries the mode
                if path.is_symlink():
                    info.external_attr = (stat.S_IFLNK | 0o777) << 16
                    zf.writestr(info, os.readlink(path), compress_type=zipfile.ZIP_STORED)
                else:
                    mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    info.external_attr = (stat.S_IFREG | mode) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with open(path, "rb") as src, zf.open(info, "w") as dst:
                        shutil.copyfileobj(src, dst, 1024 * 1024)
            dirnames[:] = [d for d in dirnames if not Path(dirpath, d).is_symlink()]
        infos = zf.infolist()
    tmp.replace(zip_path)
    return infos


# --------------------------------------------------------------------------------------------------- sizes
def unpack_zip(zip_path: Path, dest: Path) -> None:
    """Extract like Lambda does: regular files with their mode, symlink entries as symlinks."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            target = dest / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                os.symlink(zf.read(info).decode(), target)
            elif not info.is_dir():
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
                os.chmod(target, stat.S_IMODE(mode) or 0o644)


def tree_size(path: Path, skip=lambda p: False) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not skip(Path(dirpath, d))]
        for f in filenames:
            p = Path(dirpath, f)
            if not skip(p):
                total += p.lstat().st_size
    return total


def function_size(function_dir: Path) -> int:
    """What the function's own zip carries: the sceneclip package source (no caches, no egg-info)."""
    if not function_dir.exists():
        return 0
    skip = lambda p: p.name in {"__pycache__", ".pytest_cache"} or p.name.endswith((".egg-info", ".pyc"))
    return tree_size(function_dir, skip)


def measure_powertools(out: Path, arch: str, python_version: str, overlap_with: set[str]) -> dict:
    """Unzipped size of the AWS Powertools v3 layer.

    AWS builds it with ``pip install aws-lambda-powertools[all]``, removes boto3 and its dependencies, strips
    the shared objects, deletes tests and ships no bytecode. The same recipe on the same wheels gives its size.
    The result is kept as stand-ins for tests that import the handler without AWS: ``<out>/<arch>/powertools/
    python`` (the Powertools layer) and ``<out>/<arch>/runtime/python`` (boto3 & co., which the Lambda runtime
    ships). Returns mb, version, measured, dists, overlap (distributions in both layers).
    """
    version = lock_version("aws-lambda-powertools")
    spec = f"aws-lambda-powertools[all]=={version}" if version else "aws-lambda-powertools[all]"
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    wheel_dir = out / "wheels" / f"{arch}-powertools"
    try:
        fetch_wheels([spec], wheel_dir, arch, python_version, key)
        target = out / arch / "powertools" / "python"
        runtime = out / arch / "runtime" / "python"
        install([spec], wheel_dir, target, arch, python_version)
        if runtime.exists():
            shutil.rmtree(runtime)
        runtime.mkdir(parents=True)
        dists = installed_dists(target)
        owners = owner_map(target)
        for entry in list(target.iterdir()):
            if owners.get(entry.name) in RUNTIME_PROVIDED or (
                entry.name.endswith(".dist-info")
                and normalize(entry.name[: -len(".dist-info")].rpartition("-")[0]) in RUNTIME_PROVIDED
            ):
                shutil.move(entry, runtime / entry.name)  # stand-in for what the Lambda runtime ships
        prune(target)
        strip_binaries(target, arch, quiet=True)
        size = tree_size(target)
        names = sorted(set(dists) - RUNTIME_PROVIDED)
        return {"mb": round(size / MB, 2), "version": version, "measured": True, "dists": names,
                "overlap": sorted(set(names) & overlap_with)}
    except SystemExit as exc:
        note(f"[{arch}] could not measure the Powertools layer ({exc}); assuming {POWERTOOLS_FALLBACK_MB} MB.")
        return {"mb": POWERTOOLS_FALLBACK_MB, "version": version, "measured": False, "dists": [], "overlap": []}


# --------------------------------------------------------------------------------------------------- build
def build_arch(arch: str, args: argparse.Namespace, python: str | None) -> dict:
    t0 = time.monotonic()
    out: Path = args.out
    key = cache_key(args.requirements)
    layer_root = out / arch
    target = layer_root / "python"
    reqs = ["-r", str(args.requirements)]

    wheels_key = hashlib.sha256(args.requirements.read_bytes() + args.python_version.encode()).hexdigest()[:16]
    fetch_wheels(reqs, out / "wheels" / arch, arch, args.python_version, wheels_key)
    install(reqs, out / "wheels" / arch, target, arch, args.python_version)

    dists = installed_dists(target)
    pinned = pinned_names(args.requirements)
    unpinned = sorted(set(dists) - pinned)
    if unpinned:
        note(f"[{arch}] pulled in but not pinned in {args.requirements.name}: {', '.join(unpinned)}")
    leaked = sorted(set(dists) & {"geopandas", "pandas", "pyogrio", "moto", "boto3", "botocore",
                                   "aws-lambda-powertools"})
    if leaked:
        raise SystemExit(f"[{arch}] the layer must not contain {', '.join(leaked)}")
    owners = owner_map(target)
    raw = tree_size(target)

    runtime_dropped = drop_runtime_provided(target, owners)
    if runtime_dropped:
        note(f"[{arch}] left out (the Lambda runtime ships them): {', '.join(runtime_dropped)}")
        dists = {k: v for k, v in dists.items() if k not in runtime_dropped}
    pruned = prune(target)
    trimmed, trims_hit = apply_trims(target)
    pruned += trimmed
    stripped, strip_tool = strip_binaries(target, arch) if not args.no_strip else (0, "")
    deduped = dedupe_proj_db(target, arch) if not args.no_dedupe else 0
    deduped_geos = dedupe_geos(target, arch) if not args.no_dedupe else 0
    compiled = compile_bytecode(target, python, args.python_version, arch)

    zip_path = out / f"geo-{arch}.zip"
    infos = write_zip(layer_root, zip_path)

    per: dict[str, dict[str, int]] = defaultdict(lambda: {"unzipped": 0, "zipped": 0, "files": 0})
    for info in infos:
        rel = info.filename[len("python/"):]
        d = per[dist_of(rel, owners)]
        d["unzipped"] += info.file_size
        d["zipped"] += info.compress_size + 30 + len(info.filename.encode())  # data + local header
        d["files"] += 1
    unzipped = sum(i.file_size for i in infos)
    zipped = zip_path.stat().st_size

    powertools = (
        {"mb": args.powertools_mb, "version": lock_version("aws-lambda-powertools"), "measured": False,
         "dists": [], "overlap": []}
        if args.powertools_mb is not None
        else measure_powertools(out, arch, args.python_version, set(dists))
    )
    func = function_size(args.function_dir)
    total_mb = (unzipped + func) / MB + powertools["mb"]
    report = {
        "arch": arch,
        "python_version": args.python_version,
        "cache_key": key,
        "requirements": str(args.requirements),
        "zip": str(zip_path),
        "dists": dict(sorted(dists.items())),
        "packages": {k: {"unzipped_mb": round(v["unzipped"] / MB, 2), "zipped_mb": round(v["zipped"] / MB, 2),
                         "files": v["files"]} for k, v in sorted(per.items(), key=lambda kv: -kv[1]["unzipped"])},
        "raw_mb": round(raw / MB, 2),
        "runtime_provided_dropped": runtime_dropped,
        "pruned_mb": round(pruned / MB, 2),
        "trims": trims_hit,
        "stripped_mb": round(stripped / MB, 2),
        "strip_tool": strip_tool or None,
        "deduped_mb": round(deduped / MB, 2),
        "deduped_geos_mb": round(deduped_geos / MB, 2),
        "bytecode": compiled,
        "layer_unzipped_mb": round(unzipped / MB, 2),
        "layer_zipped_mb": round(zipped / MB, 2),
        "function_mb": round(func / MB, 3),
        "powertools_layer": powertools,
        "total_unzipped_mb": round(total_mb, 2),
        "budget_mb": args.budget_mb,
        "hard_limit_mb": HARD_LIMIT_MB,
        "within_budget": total_mb <= args.budget_mb,
        "seconds": round(time.monotonic() - t0, 1),
    }
    (out / f"sizes-{arch}.json").write_text(json.dumps(report, indent=2) + "\n")
    (layer_root / ".cache-key").write_text(key + "\n")
    return report


def print_report(r: dict) -> None:
    arch = r["arch"]
    log("")
    log(f"geo layer, {arch}, Python {r['python_version']}  ({r['zip']})")
    log(f"  {'package':<24}{'unzipped MB':>12}{'zipped MB':>11}{'files':>7}")
    small = {"unzipped_mb": 0.0, "zipped_mb": 0.0, "files": 0, "n": 0}
    for name, p in r["packages"].items():
        if p["unzipped_mb"] < 0.01:  # e.g. the pystac-ext-* metadata-only rows: folded into one line
            small["n"] += 1
            for k in ("unzipped_mb", "zipped_mb", "files"):
                small[k] += p[k]
            continue
        version = r["dists"].get(name, "")
        label = f"{name} {version}".strip()
        log(f"  {label:<24}{p['unzipped_mb']:>12.2f}{p['zipped_mb']:>11.2f}{p['files']:>7}")
    if small["n"]:
        label = f"({small['n']} more, < 0.01 MB each)"
        log(f"  {label:<24}{small['unzipped_mb']:>12.2f}{small['zipped_mb']:>11.2f}{small['files']:>7}")
    log(f"  {'layer total':<24}{r['layer_unzipped_mb']:>12.2f}{r['layer_zipped_mb']:>11.2f}")
    log(f"  (raw install {r['raw_mb']:.1f} MB; pruned {r['pruned_mb']:.1f} MB; strip saved {r['stripped_mb']:.1f} MB"
        f" with {r['strip_tool'] or 'nothing (skipped)'}; GEOS dedupe saved {r.get('deduped_geos_mb', 0):.1f} MB;"
        f" proj.db dedupe saved {r['deduped_mb']:.1f} MB; bytecode {'3.12 unchecked-hash' if r['bytecode'] else 'none'})")
    pt = r["powertools_layer"]
    how = "measured" if pt["measured"] else "assumed"
    log(f"  function code (src/sceneclip)          {r['function_mb']:>8.2f} MB")
    log(f"  Powertools layer {pt['version'] or ''} ({how})       {pt['mb']:>8.2f} MB")
    if pt.get("overlap"):
        log(f"  also in the Powertools layer: {', '.join(pt['overlap'])} (list geo AFTER Powertools so ours wins)")
    verdict = "OK" if r["within_budget"] else "OVER BUDGET"
    log(f"  function + layers unzipped             {r['total_unzipped_mb']:>8.2f} MB   budget {r['budget_mb']:.0f} MB"
        f" (hard limit {r['hard_limit_mb']:.0f})  {verdict}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="build_layer.py",
        description="Build the sceneclip geo Lambda layer from manylinux wheels and check the size budget "
                    "(function + our layer + the AWS Powertools layer, unzipped).",
        epilog="Output: <out>/<arch>/python (unpacked layer), <out>/geo-<arch>.zip, <out>/sizes-<arch>.json. "
               "Exit status 1 when an architecture is over the budget.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--arch", choices=["x86_64", "arm64", "all", "host"], default="all",
                   help="Lambda architecture to build; 'host' means the one of this machine")
    p.add_argument("--python-version", default="3.12", help="Lambda Python runtime version (X.Y)")
    p.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS, help="pinned runtime requirements")
    p.add_argument("--out", type=Path, default=ROOT / "layers" / "build", help="build directory (git-ignored)")
    p.add_argument("--budget-mb", type=float, default=150.0,
                   help="fail when function + layers exceed this many MB unzipped (AWS hard limit: 250)")
    p.add_argument("--function-dir", type=Path, default=ROOT / "src" / "sceneclip",
                   help="function code counted in the budget")
    p.add_argument("--powertools-mb", type=float, default=None,
                   help="size of the AWS Powertools layer to count; default: measure it from the "
                        "aws-lambda-powertools[all] wheels pinned in requirements.lock")
    p.add_argument("--no-strip", action="store_true", help="do not strip shared objects")
    p.add_argument("--no-dedupe", action="store_true",
                   help="keep shapely's own GEOS (and pyproj's proj.db, if pyproj is ever back) instead of "
                        "symlinks to rasterio's identical copies")
    p.add_argument("--copy-to", type=Path, default=None,
                   help="copy the unpacked python/ directory here (SAM makefile builds: $ARTIFACTS_DIR)")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.requirements = args.requirements.resolve()
    args.function_dir = args.function_dir.resolve()
    return args


def host_arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    arches = list(ARCHES) if args.arch == "all" else [host_arch() if args.arch == "host" else args.arch]
    if args.copy_to and len(arches) != 1:
        raise SystemExit("--copy-to needs a single --arch")
    if not args.requirements.exists():
        raise SystemExit(f"requirements file not found: {args.requirements}")
    args.out.mkdir(parents=True, exist_ok=True)
    python = find_python(args.python_version)
    log(f"building geo layer for {', '.join(arches)}; Python {args.python_version} bytecode with "
        f"{python or 'NOTHING (no interpreter found)'}; budget {args.budget_mb:g} MB")

    t0 = time.monotonic()
    reports = []
    for arch in arches:
        r = build_arch(arch, args, python)
        print_report(r)
        reports.append(r)
    log(f"\nbuilt {len(reports)} layer(s) in {time.monotonic() - t0:.0f} s")

    if args.copy_to:
        dest = args.copy_to / "python"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(args.out / arches[0] / "python", dest, symlinks=True)
        log(f"copied the {arches[0]} layer to {dest}")

    over = [r for r in reports if not r["within_budget"]]
    for r in over:
        print(f"ERROR: {r['arch']}: function + layers = {r['total_unzipped_mb']:.1f} MB unzipped, "
              f"over the {r['budget_mb']:g} MB budget", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
