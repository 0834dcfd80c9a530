"""sceneclip.core.cogcheck.validate_cog against rio-cogeo's cog_validate on valid and invalid GeoTIFFs.

The runtime validator exists so the Lambda layer does not carry rio-cogeo (and morecantile, pyproj, pydantic);
rio-cogeo stays a test dependency precisely so that every verdict here is checked against it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from sceneclip.core.cogcheck import validate_cog

RNG = np.random.default_rng(7)
# The PNG and the hand-made .ovr are not georeferenced on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _profile(width: int, height: int, count: int = 1, **extra) -> dict:
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000, 5000000, 10, 10))
    profile.update(extra)
    return profile


def _pixels(count: int, height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 255, (count, height, width), dtype="uint8")


def _tiled(path: Path, width: int = 1100, height: int = 900, **extra) -> str:
    with rasterio.open(path, "w", **_profile(width, height, tiled=True, blockxsize=256, blockysize=256, **extra)) as d:
        d.write(_pixels(1, height, width))
    return str(path)


def _cog_from(build, dst: str, **options) -> str:
    """COG driver (create-copy) from a GTiff that ``build(dataset)`` fills in a MemoryFile."""
    options = {"BLOCKSIZE": 256, "COMPRESS": "DEFLATE", "OVERVIEW_RESAMPLING": "NEAREST", **options}
    with MemoryFile(ext=".tif") as mem:
        with mem.open(**_profile(1100, 900, tiled=True, blockxsize=256, blockysize=256)) as d:
            build(d)
        rasterio.shutil.copy(mem.name, dst, driver="COG", **options)
    return dst


# ------------------------------------------------------------------------------------------ file builders
def cog_memfile(tmp: Path, stack) -> str:
    mem = stack(MemoryFile(ext=".tif"))
    with mem.open(driver="COG", width=1100, height=900, count=3, dtype="uint8", crs="EPSG:32633",
                  transform=from_origin(500000, 5000000, 10, 10), blocksize=256, compress="DEFLATE",
                  overview_resampling="nearest") as d:
        d.write(_pixels(3, 900, 1100))
    return mem.name


def cog_disk(tmp: Path, stack) -> str:
    return _cog_from(lambda d: d.write(_pixels(1, 900, 1100)), str(tmp / "cog.tif"))


def cog_bigtiff(tmp: Path, stack) -> str:
    return _cog_from(lambda d: d.write(_pixels(1, 900, 1100)), str(tmp / "big.tif"), BIGTIFF="YES")


def cog_internal_mask(tmp: Path, stack) -> str:
    def build(d):
        d.write(_pixels(1, 900, 1100))
        mask = np.zeros((900, 1100), "uint8")
        mask[100:800, 50:1000] = 255
        d.write_mask(mask)

    return _cog_from(build, str(tmp / "masked.tif"))


def striped(tmp: Path, stack) -> str:
    path = tmp / "striped.tif"
    with rasterio.open(path, "w", **_profile(1100, 900)) as d:
        d.write(_pixels(1, 900, 1100))
    return str(path)


def tiled_no_overviews(tmp: Path, stack) -> str:
    return _tiled(tmp / "tiled.tif")


def overviews_added_afterwards(tmp: Path, stack) -> str:
    path = _tiled(tmp / "ovr_after.tif")
    with rasterio.open(path, "r+") as d:
        d.build_overviews([2, 4], Resampling.nearest)
    return path


def external_ovr(tmp: Path, stack) -> str:
    path = _tiled(tmp / "ext.tif")
    # GDAL picks up <name>.ovr as the overview file of <name> (what `gdaladdo -ro` writes).
    _tiled(Path(path + ".ovr"), width=550, height=450, crs=None, transform=None)
    return path


def small_tiled_no_overviews(tmp: Path, stack) -> str:
    return _tiled(tmp / "small.tif", width=400, height=300)


def small_striped(tmp: Path, stack) -> str:
    path = tmp / "small_striped.tif"
    with rasterio.open(path, "w", **_profile(400, 300)) as d:
        d.write(_pixels(1, 300, 400))
    return str(path)


def cog_edited_afterwards(tmp: Path, stack) -> str:
    """A masked COG whose first tile is rewritten in place: GDAL moves the grown tile to the end of the file,
    flags KNOWN_INCOMPATIBLE_EDITION=YES and the mask is no longer interleaved with its imagery."""

    def build(d):
        d.write(np.zeros((1, 900, 1100), "uint8"))  # compresses to nothing, so the rewrite cannot fit in place
        mask = np.zeros((900, 1100), "uint8")
        mask[100:800, 100:1000] = 255
        d.write_mask(mask)

    path = _cog_from(build, str(tmp / "edited.tif"))
    with rasterio.open(path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as d:
        d.write(_pixels(1, 256, 256), window=Window(0, 0, 256, 256))
    return path


def png(tmp: Path, stack) -> str:
    path = tmp / "image.png"
    with rasterio.open(path, "w", driver="PNG", width=64, height=64, count=1, dtype="uint8") as d:
        d.write(_pixels(1, 64, 64))
    return str(path)


# name -> (builder, expected verdict, words the first error must contain)
CASES = {
    "cog_memfile": (cog_memfile, True, None),
    "cog_disk": (cog_disk, True, None),
    "cog_bigtiff": (cog_bigtiff, True, None),
    "cog_internal_mask": (cog_internal_mask, True, None),
    "small_tiled_no_overviews": (small_tiled_no_overviews, True, None),
    "small_striped": (small_striped, True, None),
    "tiled_no_overviews": (tiled_no_overviews, True, None),  # valid, with a warning
    "striped": (striped, False, "not tiled"),
    "overviews_added_afterwards": (overviews_added_afterwards, False, "should be after the one of the overview"),
    "external_ovr": (external_ovr, False, "external .ovr"),
    "cog_edited_afterwards": (cog_edited_afterwards, False, "invalidated by later changes"),
    "png": (png, False, "not a GeoTIFF"),
}


@pytest.fixture
def stack():
    opened = []

    def keep(obj):
        opened.append(obj)
        return obj

    yield keep
    for obj in opened:
        obj.close()


@pytest.mark.parametrize("name", list(CASES))
def test_same_verdict_as_rio_cogeo(name, tmp_path, stack):
    build, expected, words = CASES[name]
    path = build(tmp_path, stack)
    ours, errors, warnings = validate_cog(path)
    theirs = cog_validate(path, quiet=True)
    assert ours == theirs[0] == expected, (name, errors, theirs)
    if expected:
        assert errors == []
    else:
        assert errors and all(isinstance(e, str) and len(e) > 20 for e in errors), errors
        assert words in errors[0], errors
    # Where rio-cogeo says something, we say it with the same words (we may add GDAL's mask findings).
    for msg in theirs[1]:
        assert msg in errors, (msg, errors)
    assert warnings == theirs[2]


def test_strict_turns_warnings_into_invalid(tmp_path, stack):
    path = tiled_no_overviews(tmp_path, stack)
    valid, errors, warnings = validate_cog(path)
    assert valid and not errors and "internal overviews" in warnings[0]
    strict = validate_cog(path, strict=True)
    assert strict[0] is False and strict[0] == cog_validate(path, strict=True, quiet=True)[0]


def test_edited_cog_reports_broken_mask_interleaving(tmp_path, stack):
    """Beyond rio-cogeo: GDAL's full check of MASK_INTERLEAVED_WITH_IMAGERY (offsets only)."""
    _, errors, _ = validate_cog(cog_edited_afterwards(tmp_path, stack))
    assert any(e.startswith("Mask of main resolution image: for block (0, 0)") for e in errors), errors


def test_copy_of_a_valid_cog_stays_valid(tmp_path, stack):
    src = cog_internal_mask(tmp_path, stack)
    dst = tmp_path / "copy.tif"
    shutil.copyfile(src, dst)
    assert validate_cog(str(dst)) == (True, [], [])


def test_unreadable_path_raises(tmp_path):
    with pytest.raises(rasterio.errors.RasterioIOError):
        validate_cog(str(tmp_path / "missing.tif"))
