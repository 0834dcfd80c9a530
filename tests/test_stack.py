"""core/stack.py without AWS: the grid, data type, nodata and band rules of a stack, on the real Sentinel-2
34SGA band files (B01/B09 at 600 m, TCI at 100 m) and small synthetic rasters for the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject
from shapely.geometry import box

from sceneclip.core.clip import clip_stack_to_cog, clip_to_cog
from sceneclip.core.geometry import Boundary
from sceneclip.core.limits import SourceLimits
from sceneclip.core.plan import ClipOptions, RasterInfo
from sceneclip.core.stack import StackInput, stack_dtype, stack_nodata
from sceneclip.errors import LimitExceededError, ResamplingRefusedError, UnsupportedRasterError

from .conftest import real

B01, B09, TCI = (real(f"sentinel2_libya_{b}_utm34n.tif") for b in ("b01", "b09", "tci"))
# Inside the valid part of the 34SGA scene, its edges off the 600 m lattice (coarse pixels straddle them).
AREA = Boundary.from_geometries([box(23.71, 31.61, 23.93, 31.83)], "EPSG:4326", source="area")


def info(dtype: str, nodata: float | None = None, name: str = "x") -> RasterInfo:
    return RasterInfo(name, CRS.from_epsg(32634), Affine(10, 0, 0, 0, -10, 0), 4, 4, 1, dtype, nodata)


def test_dtype_is_numpys_promotion_and_a_lossy_one_is_refused():
    assert stack_dtype([info("uint8"), info("uint16")]) == "uint16"
    assert stack_dtype([info("uint16"), info("int16")]) == "int32"
    assert stack_dtype([info("uint8"), info("float32")]) == "float32"
    with pytest.raises(UnsupportedRasterError, match="float64.*exactly"):
        stack_dtype([info("int64", name="a"), info("uint64", name="b")])


def test_nodata_is_the_one_declared_value_else_nan_or_a_mask_and_differing_values_are_refused():
    assert stack_nodata([info("uint16", 0), info("uint16", None)], None, "uint16") == (0.0, False)
    assert stack_nodata([info("uint16"), info("uint8")], None, "uint16") == (None, True)
    nan, mask = stack_nodata([info("float32")], None, "float32")
    assert np.isnan(nan) and not mask
    assert stack_nodata([info("uint16", 0), info("uint16", 1)], 65535, "uint16") == (65535.0, False)
    with pytest.raises(UnsupportedRasterError, match="different nodata.*a: 0.*b: 1.*SCENECLIP_NODATA"):
        stack_nodata([info("uint16", 0, "a"), info("uint16", 1, "b")], None, "uint16")


def inputs(*paths: str) -> list[StackInput]:
    return [StackInput(p, p, label) for p, label in zip(paths, ("coastal", "nir09", "visual"), strict=False)]


def test_stack_lands_on_the_finest_lattice_and_each_band_is_its_source_warped_there():
    res = clip_stack_to_cog(inputs(B01, B09, TCI), AREA, ClipOptions())
    assert res.record.ok, res.record.error
    with res.output.open() as ds, rasterio.open(TCI) as tci:
        assert ds.res == tci.res and ds.count == 5 and ds.dtypes[0] == "uint16" and ds.nodata == 0
        col, row = ~tci.transform * (ds.transform.c, ds.transform.f)
        assert col.is_integer() and row.is_integer()
        assert ds.descriptions == ("coastal", "nir09", "visual:1", "visual:2", "visual:3")
        stacked = ds.read()
        for band, path in ((0, B01), (1, B09)):  # the whole source band, nearest, onto the stack grid
            with rasterio.open(path) as src:
                ref = np.zeros((ds.height, ds.width), dtype="uint16")
                reproject(src.read(1), ref, src_transform=src.transform, src_crs=src.crs, src_nodata=0,
                          dst_transform=ds.transform, dst_crs=ds.crs, dst_nodata=0, resampling=Resampling.nearest)
            kept = stacked[band] != 0
            assert np.count_nonzero(kept) > 0.9 * kept.size
            np.testing.assert_array_equal(stacked[band][kept], ref[kept])
        grid = (ds.transform, ds.width, ds.height)
    res.output.close()
    alone = clip_to_cog(TCI, AREA, ClipOptions())  # the finest asset alone, on its own grid: the same pixels
    with alone.output.open() as a:
        assert (a.transform, a.width, a.height) == grid
        np.testing.assert_array_equal(stacked[2:], a.read())
    alone.output.close()


def test_a_target_grid_wins_and_the_stack_window_is_capped_as_a_whole():
    res = clip_stack_to_cog(inputs(B01, TCI), AREA, ClipOptions(resolution=200.0))
    assert res.record.ok and res.record.transform[0] == 200.0 and res.record.count == 4
    res.output.close()
    one = clip_stack_to_cog(inputs(B01), AREA, ClipOptions()).record
    limits = SourceLimits(max_window_bytes=one.width * one.height * 2 * 2 - 1)  # two 600 m bands do not fit
    with pytest.raises(LimitExceededError, match="2 bands"):
        clip_stack_to_cog(inputs(B01, B09), AREA, ClipOptions(limits=limits))


def test_categorical_sources_refuse_interpolation_unless_forced():
    flagged = [StackInput(B01, B01, "coastal"), StackInput(B09, B09, "qa", categorical=True)]
    with pytest.raises(ResamplingRefusedError, match="categorical"):
        clip_stack_to_cog(flagged, AREA, ClipOptions(resampling="bilinear"))
    forced = clip_stack_to_cog(flagged, AREA, ClipOptions(resampling="bilinear", force_resampling=True))
    assert forced.record.ok and forced.record.count == 2
    forced.output.close()
