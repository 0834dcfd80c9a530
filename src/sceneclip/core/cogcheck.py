"""Cloud Optimized GeoTIFF validation with rasterio alone.

Why we carry our own: the Lambda function ships in a size budget of 150 MB unzipped (function + our geo layer +
the AWS Powertools layer). ``rio_cogeo.cogeo.cog_validate`` is the only thing the runtime used from rio-cogeo,
and rio-cogeo drags in morecantile -> pyproj (a second PROJ with its own proj.db, ~14 MB) and the pydantic
family (~9.5 MB). This module re-implements the same checks on top of rasterio, so the layer carries neither.

The semantics follow ``rio_cogeo.cogeo.cog_validate`` (rio-cogeo 7.x), which is the rasterio port of GDAL's
``validate_cloud_optimized_geotiff.py``; where the two differ we say which one we follow:

* not a GTiff -> error, nothing else checked;
* overviews in an external ``.ovr`` -> error;
* larger than 512 px in either dimension: the main image must be tiled (rio-cogeo's test: the block is not as
  wide as the image) -> error; no overviews -> warning;
* the main IFD must sit at the start of the file: offset <= 300 (rio-cogeo), and when GDAL's "ghost header"
  (``GDAL_STRUCTURAL_METADATA``) is present exactly right after it (GDAL);
  ``KNOWN_INCOMPATIBLE_EDITION=YES`` in that header (the file was edited after it was laid out) -> error;
* overviews sorted, decimation > 1, IFDs of the overviews after the main IFD and in increasing order;
* overviews larger than 512 px must be tiled (rio-cogeo's test) -> error;
* data: the first block of the smallest level comes after the last IFD, and the first block of each larger
  level after the one of the next smaller level ("smallest overview first, full resolution last").
  Levels with no block written at all (sparse files) are skipped, as GDAL does; rio-cogeo drops them from
  its list and then compares neighbours that are not neighbours;
* internal masks (GDAL's full check, offsets only, no byte reads): when the ghost header declares
  ``MASK_INTERLEAVED_WITH_IMAGERY=YES`` every mask block must start right after its imagery block (after the
  4-byte leader/trailer GDAL declares), and when it declares ``LAYOUT=IFDS_BEFORE_DATA`` the mask IFDs must
  come before the first data block too. rio-cogeo does not look at masks.

Everything is read from GDAL's ``TIFF`` metadata domain (``IFD_OFFSET``, ``BLOCK_OFFSET_x_y``,
``BLOCK_SIZE_x_y``, ``GDAL_STRUCTURAL_METADATA``) of band 1 and its overviews; mask IFDs are opened as
``GTIFF_DIR:<n>:<path>``. No pixel is read, so on ``/vsis3/`` it costs the header ranges GDAL already fetched.
``path`` may be a local file, a ``/vsimem/`` MemoryFile name or any GDAL path (``/vsis3/...``).

``tests/test_cogcheck.py`` cross-checks the verdict against ``rio_cogeo.cogeo.cog_validate`` on valid and
invalid files (rio-cogeo stays a test/tooling dependency, never a runtime one).
"""

from __future__ import annotations

from typing import Any

import re
import warnings as _warnings
from collections.abc import Iterator

import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

SMALL_SIDE = 512  # images up to this size in both dimensions need neither tiles nor overviews
MAX_MAIN_IFD_OFFSET = 300  # rio-cogeo: the ghost header is < 200 bytes, so the main IFD sits before byte 300
_GHOST_SIZE = re.compile(r"GDAL_STRUCTURAL_METADATA_SIZE=(\d{6}) bytes")
_GHOST_PREFIX_LEN = len("GDAL_STRUCTURAL_METADATA_SIZE=000000 bytes\n")

__all__ = ["validate_cog"]


def _int(value: str | None) -> int:
    return int(value) if value else 0


def _first_block_offset(src, width: int, height: int, block: tuple[int, int], ovr: int | None) -> int:
    """Offset of the first block (row-major) that has data; 0 when no block was ever written (sparse)."""
    rows, cols = block
    for y in range((height + rows - 1) // rows):
        for x in range((width + cols - 1) // cols):
            offset = _int(src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1, ovr=ovr))
            if offset > 0:
                return offset
    return 0


def _iter_directories(path: str, limit: int) -> Iterator[tuple[int, object]]:
    """(1-based index, open dataset) for each TIFF directory, masks included, via GDAL's GTIFF_DIR syntax."""
    for n in range(1, limit + 1):
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(f"GTIFF_DIR:{n}:{path}")
        except RasterioIOError:
            return
        with ds:
            yield n, ds


def _check_masks(
    path: str,
    levels: list[tuple[int, int, int]],
    ghost: str,
    errors: list[str],
) -> None:
    """Internal mask checks (see module docstring). ``levels``: (IFD offset, width, height) of the imagery,
    main image first. Directories that are not imagery IFDs and have a level's size are that level's mask."""
    imagery_ifds = {ifd for ifd, _, _ in levels}
    matched: set[int] = set()  # levels whose mask was found
    mask_ifds: list[int] = []
    interleaved = "MASK_INTERLEAVED_WITH_IMAGERY=YES" in ghost
    extra = (4 if "BLOCK_LEADER=SIZE_AS_UINT4" in ghost else 0) + (
        4 if "BLOCK_TRAILER=LAST_4_BYTES_REPEATED" in ghost else 0
    )
    for _, ds in _iter_directories(path, limit=2 * len(levels) + 2):
        ifd = _int(ds.get_tag_item("IFD_OFFSET", "TIFF", bidx=1))
        if ifd in imagery_ifds:
            continue
        mask_ifds.append(ifd)
        for level, (_, w, h) in enumerate(levels):
            if (ds.width, ds.height) == (w, h) and level not in matched:
                matched.add(level)
                if interleaved:
                    _check_interleaved(path, level, ds, errors, extra)
                break
    if not mask_ifds:
        return
    if "LAYOUT=IFDS_BEFORE_DATA" in ghost:
        with rasterio.open(path) as src:
            first_data = min(
                (o for o in (_int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1, ovr=ix))
                             for ix in [None, *range(len(levels) - 1)]) if o > 0),
                default=0,
            )
        late = [ifd for ifd in mask_ifds if first_data and ifd > first_data]
        if late:
            errors.append(
                f"The IFD of a mask is at byte {late[0]}, after the first data block (byte {first_data}), "
                "although the file declares LAYOUT=IFDS_BEFORE_DATA"
            )


def _check_interleaved(path: str, level: int, mask_ds, errors: list[str], extra: int) -> None:
    """GDAL's full check of MASK_INTERLEAVED_WITH_IMAGERY=YES: mask block right after its imagery block."""
    name = "main resolution image" if level == 0 else f"overview {level - 1}"
    ovr = None if level == 0 else level - 1
    rows, cols = mask_ds.block_shapes[0]
    with rasterio.open(path) as src:
        for y in range((mask_ds.height + rows - 1) // rows):
            for x in range((mask_ds.width + cols - 1) // cols):
                offset = _int(src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1, ovr=ovr))
                size = _int(src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1, ovr=ovr))
                mask_offset = _int(mask_ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1))
                if offset > 0 and mask_offset > 0 and mask_offset != offset + size + extra:
                    errors.append(
                        f"Mask of {name}: for block ({x}, {y}), offset is {mask_offset}, "
                        f"whereas {offset + size + extra} was expected (MASK_INTERLEAVED_WITH_IMAGERY=YES)"
                    )
                    return  # one is enough to say the promise is broken


def validate_cog(path: str, *, strict: bool = False) -> tuple[bool, list[str], list[str]]:
    """Is ``path`` a Cloud Optimized GeoTIFF? Returns ``(is_valid, errors, warnings)`` like rio-cogeo.

    ``strict`` turns warnings (no overviews on an image larger than 512 px) into a failed verdict.
    Raises ``rasterio.errors.RasterioIOError`` when GDAL cannot open ``path`` at all.
    """
    errors: list[str] = []
    warnings: list[str] = []
    path = str(path)

    with rasterio.open(path) as src:
        if src.driver != "GTiff":
            return False, ["The file is not a GeoTIFF"], warnings
        external_ovr = any(f.lower().endswith(".ovr") for f in src.files)
        if external_ovr:
            errors.append("Overviews found in external .ovr file. They should be internal")
        overviews = src.overviews(1)
        _check_tiling(src, overviews, errors, warnings)
        ifd_offset = _int(src.get_tag_item("IFD_OFFSET", "TIFF", bidx=1))
        ghost = src.get_tag_item("GDAL_STRUCTURAL_METADATA", "TIFF") or ""
        _check_main_ifd(ifd_offset, ghost, errors)
        ifd_offsets = _check_overview_ifds(src, overviews, ifd_offset, external_ovr, errors)
        levels = _levels(path, src, overviews, ifd_offsets, errors)
        if not external_ovr:
            _check_data_order(src, levels, ifd_offsets, overviews, errors)
        internal_mask = MaskFlags.per_dataset in src.mask_flag_enums[0] and not any(
            f.lower().endswith(".msk") for f in src.files
        )

    if internal_mask and ghost:
        _check_masks(path, [(ifd, w, h) for ifd, w, h, _ in levels], ghost, errors)

    is_valid = not errors and not (warnings and strict)
    return is_valid, errors, warnings


def _check_tiling(src: Any, overviews: list[int], errors: list[str], warnings: list[str]) -> None:
    if src.width > SMALL_SIDE or src.height > SMALL_SIDE:
        if src.block_shapes and src.block_shapes[0][1] == src.width:
            errors.append("The file is greater than 512xH or 512xW, but is not tiled")
        if not overviews:
            warnings.append("The file is greater than 512xH or 512xW, it is recommended to include internal overviews")


def _check_main_ifd(ifd_offset: int, ghost: str, errors: list[str]) -> None:
    """The IFD of the main image sits right after the header (and GDAL's ghost header when there is one)."""
    if ifd_offset > MAX_MAIN_IFD_OFFSET:
        errors.append(f"The offset of the main IFD should be < {MAX_MAIN_IFD_OFFSET}. It is {ifd_offset} instead")
    m = _GHOST_SIZE.search(ghost)
    if m:
        expected = set()
        for header in (8, 16):  # classic TIFF, BigTIFF
            pos = header + _GHOST_PREFIX_LEN + int(m.group(1))
            expected.add(pos + pos % 2)  # IFDs start on a word boundary
        if ifd_offset <= MAX_MAIN_IFD_OFFSET and ifd_offset not in expected:
            errors.append(
                f"The offset of the main IFD should be {min(expected)} (right after GDAL's structural "
                f"metadata). It is {ifd_offset} instead"
            )
    if "KNOWN_INCOMPATIBLE_EDITION=YES" in ghost:
        errors.append(
            "This file used to have optimizations in its layout, "
            "but those have been, at least partly, invalidated by later changes"
        )


def _check_overview_ifds(src: Any, overviews: list[int], ifd_offset: int, external_ovr: bool, errors: list[str]) -> list[int]:
    """Overviews sorted, real reductions, IFDs in increasing order after the main one. Returns every IFD offset."""
    if overviews and overviews != sorted(overviews):
        errors.append("Overviews should be sorted")
    ifd_offsets = [ifd_offset]
    for ix, dec in enumerate(overviews):
        if not dec > 1:
            errors.append(f"Invalid Decimation {dec} for overview level {ix}")
        ifd_offsets.append(_int(src.get_tag_item("IFD_OFFSET", "TIFF", bidx=1, ovr=ix)))
        if not external_ovr and ifd_offsets[-1] < ifd_offsets[-2]:
            previous = "the main image" if ix == 0 else f"index {ix - 1}"
            errors.append(
                f"The offset of the IFD for overview of index {ix} is {ifd_offsets[-1]}, whereas it should be "
                f"greater than the one of {previous}, which is at byte {ifd_offsets[-2]}"
            )
    return ifd_offsets


def _levels(path: str, src: Any, overviews: list[int], ifd_offsets: list[int], errors: list[str]) -> list[tuple]:
    """(IFD offset, width, height, block shape) of every level; overviews opened as datasets of their own."""
    levels = [(ifd_offsets[0], src.width, src.height, src.block_shapes[0])]
    for ix in range(len(overviews)):
        with rasterio.open(path, OVERVIEW_LEVEL=ix) as ovr_ds:
            levels.append((ifd_offsets[ix + 1], ovr_ds.width, ovr_ds.height, ovr_ds.block_shapes[0]))
            if (ovr_ds.width > SMALL_SIDE or ovr_ds.height > SMALL_SIDE) and ovr_ds.block_shapes[0][1] == ovr_ds.width:
                errors.append(f"Overview of index {ix} is not tiled")
    return levels


def _check_data_order(src: Any, levels: list[tuple], ifd_offsets: list[int], overviews: list[int], errors: list[str]) -> None:
    """Data: smallest overview first, full resolution last, all after the IFDs."""
    data_offsets = [
        _first_block_offset(src, w, h, block, None if level == 0 else level - 1)
        for level, (_, w, h, block) in enumerate(levels)
    ]
    if data_offsets[-1] and data_offsets[-1] < ifd_offsets[-1]:
        errors.append(
            "The offset of the first block of the smallest overview should be after its IFD"
            if overviews
            else "The offset of the first block of the image should be after its IFD"
        )
    for i in range(len(data_offsets) - 2, 0, -1):
        if data_offsets[i] and data_offsets[i] < data_offsets[i + 1]:
            errors.append(
                f"The offset of the first block of overview of index {i - 1} should "
                f"be after the one of the overview of index {i}"
            )
    if len(data_offsets) >= 2 and data_offsets[0] and data_offsets[0] < data_offsets[1]:
        errors.append(
            "The offset of the first block of the main resolution image "
            f"should be after the one of the overview of index {len(overviews) - 1}"
        )
