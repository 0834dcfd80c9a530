"""Target grids: aligned origins, outward snapping that never adds a pixel to an edge already on the lattice."""

from __future__ import annotations

import pytest

from sceneclip.core.grid import TargetGrid
from sceneclip.errors import InvalidOptionsError


def test_parse_square_and_rectangular():
    g = TargetGrid.parse("EPSG:32613,30")
    assert g.crs.to_epsg() == 32613 and g.resolution == (30.0, 30.0)
    assert TargetGrid.parse("EPSG:4326, 0.001, 0.002").resolution == (0.001, 0.002)
    for bad, why in (("EPSG:32613", "expected CRS,RES"), ("nonsense,30", "not a CRS"), ("EPSG:4326,x", "not numeric"),
                     ("EPSG:4326,-1", "positive")):
        with pytest.raises(InvalidOptionsError, match=why):
            TargetGrid.parse(bad)


def test_target_aligned_snaps_outward_to_multiples():
    transform, width, height = TargetGrid.parse("EPSG:32613,30").snap((449100.5, 4500010.0, 449205.0, 4500100.1))
    assert (transform.c, transform.f) == (449100.0, 4500120.0)
    assert transform.c % 30 == 0 and transform.f % 30 == 0
    assert (width, height) == (4, 4)  # 449100..449220, 4500000..4500120


def test_edges_on_the_lattice_do_not_grow():
    """gdalwarp's -tap adds a pixel when an edge is already aligned (OSGeo/gdal #3435); this must not."""
    g = TargetGrid.parse("EPSG:32613,30")
    _, width, height = g.snap((449100.0, 4500000.0, 449220.0, 4500120.0))
    assert (width, height) == (4, 4)
    noisy = (449100.0 + 1e-9, 4500000.0 - 1e-9, 449220.0 - 1e-9, 4500120.0 + 1e-9)  # float noise of a reprojection
    assert g.snap(noisy) == g.snap((449100.0, 4500000.0, 449220.0, 4500120.0))


def test_two_extents_of_one_region_share_the_lattice():
    g = TargetGrid.parse("EPSG:32613,30")
    a, _, _ = g.snap((449101.0, 4500003.0, 449500.0, 4500400.0))
    b, _, _ = g.snap((449377.7, 4500211.1, 449900.0, 4500999.0))
    assert ((b.c - a.c) / 30).is_integer() and ((b.f - a.f) / 30).is_integer()


def test_unaligned_grid_starts_at_the_extent():
    transform, width, height = TargetGrid.parse("EPSG:32613,30", target_aligned=False).snap((10.0, 0.0, 75.0, 61.0))
    assert (transform.c, transform.f, width, height) == (10.0, 61.0, 3, 3)


def test_empty_bounds_are_refused():
    with pytest.raises(InvalidOptionsError, match="empty"):
        TargetGrid.parse("EPSG:32613,30").snap((5.0, 0.0, 5.0, 10.0))
