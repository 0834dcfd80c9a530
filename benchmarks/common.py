"""Shared pieces of the benchmark scripts: synthetic scenes, the reference recipe, a moto server, tables.

Benchmarks print figures as ratios against a reference run in the same run (the machine is noisy); they
never assert on time.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SCENECLIP_REAL_DATA", REPO / "tests" / "data" / "real"))
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_WORKDIR = REPO / ".cache" / "bench"

# The synthetic scenes' grid: UTM 33N, 10 m pixels (a Sentinel-2-like 10 m band set).
SYNTH_CRS = "EPSG:32633"
SYNTH_ORIGIN = (300000.0, 5000000.0)
SYNTH_RES = 10.0

MIB = 1024 * 1024


# --- measurement helpers --------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.{digits}f}×"


def mb(n: float | None, digits: int = 1) -> str:
    return "n/a" if n is None else f"{n / 1e6:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def machine_line() -> str:
    import numpy
    import rasterio

    return (
        f"Python {sys.version.split()[0]}, rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__}), "
        f"numpy {numpy.__version__}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}"
    )


# --- synthetic scenes -----------------------------------------------------------------------------------------


def synthetic_strip(row0: int, nrows: int, width: int, bands: int, seed: int = 7) -> Any:
    """Deterministic imagery-like uint16 pixels for rows ``row0:row0+nrows``: smooth gradients, blocky
    "fields" with edges, and sensor noise, so DEFLATE compresses it to roughly what real imagery gives
    (not the absurd ratios of constant or purely random data)."""
    import numpy as np

    ys = np.arange(row0, row0 + nrows, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    fields = ((np.floor(xs / 97.0) * 7 + np.floor(ys / 131.0) * 3) % 5).astype(np.float32) * 180.0
    rng = np.random.default_rng([seed, row0])
    out = np.empty((bands, nrows, width), dtype=np.uint16)
    for b in range(bands):
        smooth = (
            2500.0
            + 1200.0 * np.sin(xs / 911.0 + b) * np.cos(ys / 653.0 - 0.5 * b)
            + 600.0 * np.sin((xs + ys) / 2711.0)
            + 0.02 * xs
        )
        noise = rng.normal(0.0, 18.0, (nrows, width)).astype(np.float32)
        out[b] = np.clip(smooth + fields * (1 + 0.3 * b) + noise, 1, 65535).astype(np.uint16)
    return out


def synthetic_transform() -> Any:
    from rasterio.transform import from_origin

    return from_origin(SYNTH_ORIGIN[0], SYNTH_ORIGIN[1], SYNTH_RES, SYNTH_RES)


def write_synthetic(path: Path, size: int, bands: int, *, blocksize: int = 512, cog: bool = False) -> Path:
    """Write (once) a size×size×bands uint16 tiled DEFLATE GeoTIFF, strip of tiles by strip of tiles, so
    generating it never needs the whole raster in memory. ``cog=True`` converts it to a COG (overviews,
    header first) with GDAL's COG driver. An existing file is reused."""
    import rasterio
    import rasterio.shutil

    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tiled = path.with_suffix(".tiled.tif") if cog else path
    part = tiled.with_suffix(".part.tif")
    profile = dict(
        driver="GTiff", width=size, height=size, count=bands, dtype="uint16", crs=SYNTH_CRS,
        transform=synthetic_transform(), tiled=True, blockxsize=blocksize, blockysize=blocksize,
        compress="DEFLATE", predictor=2, zlevel=6, num_threads="ALL_CPUS", bigtiff="IF_SAFER",
    )
    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=256), rasterio.open(part, "w", **profile) as dst:
        for row0 in range(0, size, blocksize):
            nrows = min(blocksize, size - row0)
            dst.write(synthetic_strip(row0, nrows, size, bands), window=((row0, row0 + nrows), (0, size)))
    os.replace(part, tiled)
    if cog:
        with rasterio.Env(GDAL_CACHEMAX=256):
            rasterio.shutil.copy(
                str(tiled), str(part), driver="COG", COMPRESS="DEFLATE", PREDICTOR="STANDARD", LEVEL=6,
                BLOCKSIZE=blocksize, OVERVIEW_RESAMPLING="AVERAGE", NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER",
            )
        os.replace(part, path)
        tiled.unlink()
    print(f"  generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return path


def blob_polygon(cx: float, cy: float, rx: float, ry: float, *, n: float = 4.0, wobble: float = 0.03,
                 vertices: int = 720) -> Any:
    """An irregular superellipse-like blob in *pixel* coordinates (col, row), centred on (cx, cy).

    ``n=2`` is an ellipse (π/4 of its bbox), ``n=4`` a rounded square (~0.93 of its bbox); ``wobble`` adds
    an irregular edge so the boundary crosses tiles at arbitrary places.
    """
    import numpy as np
    from shapely.geometry import Polygon

    t = np.linspace(0, 2 * math.pi, vertices, endpoint=False)
    r = 1 + wobble * (np.sin(5 * t + 0.3) + 0.6 * np.cos(11 * t) + 0.3 * np.sin(23 * t + 1.0)) / 1.9
    c, s = np.cos(t), np.sin(t)
    x = np.sign(c) * np.abs(c) ** (2 / n) * rx * r + cx
    y = np.sign(s) * np.abs(s) ** (2 / n) * ry * r + cy
    return Polygon(np.column_stack([x, y])).buffer(0)


def pixel_polygon_to_crs(poly: Any, transform: Any) -> Any:
    """Map a polygon from (col, row) pixel coordinates to the raster's CRS with its affine transform."""
    from shapely import affinity

    t = transform
    return affinity.affine_transform(poly, [t.a, t.b, t.d, t.e, t.c, t.f])


# --- the reference recipe -------------------------------------------------------------------------------------


def reference_clip_to_cog(src: Any, shapes: Sequence[Any], out_path: str, *, cog_opts: dict[str, Any]) -> int:
    """The classic notebook recipe: ``rasterio.mask.mask(src, shapes, crop=True)`` into memory, the profile
    updated, written to a GTiff MemoryFile, then ``rasterio.shutil.copy(..., driver='COG')``.

    Same COG creation options as sceneclip (DEFLATE + predictor, AVERAGE overviews, 512 blocks) so output
    sizes are comparable. Returns the number of band-1 pixels kept (the recipe's nodata is 0 when the source
    has none, as rasterio.mask does).
    """
    import numpy as np
    import rasterio.mask
    import rasterio.shutil
    from rasterio.io import MemoryFile

    out, out_transform = rasterio.mask.mask(src, shapes, crop=True)
    profile = src.profile.copy()
    profile.update(driver="GTiff", height=out.shape[1], width=out.shape[2], transform=out_transform,
                   nodata=src.nodata if src.nodata is not None else 0)
    for k in ("blockxsize", "blockysize", "tiled", "compress", "interleave", "photometric"):
        profile.pop(k, None)
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(out)
        rasterio.shutil.copy(mem.name, out_path, driver="COG", **cog_opts)
    nd = profile["nodata"]
    return int(np.count_nonzero(out[0] != nd)) if not (isinstance(nd, float) and math.isnan(nd)) \
        else int(np.count_nonzero(~np.isnan(out[0])))


# --- a real HTTP S3 endpoint ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spare_moto_whole_object_reads() -> None:
    """Make moto's ranged GETs cost what the range costs, not what the object costs (this process only).

    moto 5's ``FakeKey.value`` reads the *whole* object out of its spooled temporary file on every GET, a
    ranged one included, and only then slices out the range: about 45 ms of CPU per ranged GET of a 70 MB
    scene, on the same two cores the worker is measured on (on AWS, S3's work costs the function no CPU).
    A value is immutable once set, so the bytes given to the setter are kept and handed out again: same
    responses, same ETags, the range slice is the only copy. ``--stock-moto`` in the benchmarks that use this
    measures without it.
    """
    from moto.s3.models import FakeKey

    if getattr(FakeKey, "_sceneclip_bench_patched", False):
        return
    stock = FakeKey.value

    def get(self: Any) -> bytes:
        kept = self.__dict__.get("_bench_value")
        return kept if kept is not None else stock.fget(self)

    def put(self: Any, new: Any) -> None:
        stock.fset(self, new)
        self.__dict__["_bench_value"] = new if isinstance(new, bytes) else None

    FakeKey.value = property(get, put)
    FakeKey._sceneclip_bench_patched = True


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """A moto ThreadedMotoServer on 127.0.0.1 (GDAL's libcurl cannot be intercepted by ``mock_aws``).

    Sets ``AWS_ENDPOINT_URL`` and dummy credentials in the environment: boto3 reads them directly, and
    ``sceneclip.core.gdalenv.gdal_s3_options`` maps the endpoint for GDAL.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (
        "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")}
    os.environ.update(
        AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
        AWS_SESSION_TOKEN="bench", AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
    )
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield url
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
