"""One check for the regexes users give with a named group (SCENECLIP_REGION_PATTERN, --group-by)."""

from __future__ import annotations

import pytest

from sceneclip.aws.backfill_mosaic import group_pattern
from sceneclip.aws.config import named_group_pattern
from sceneclip.errors import ConfigError


def test_a_pattern_with_the_group_compiles_and_matches():
    assert named_group_pattern(r"scenes/(?P<region>[^/]+)/", "region", "X=").match("scenes/rmnp/a.tif")["region"] == "rmnp"
    assert group_pattern(r"_(?P<group>\d{8})_").search("LC08_20140102_B2.tif")["group"] == "20140102"


@pytest.mark.parametrize("text,why", [("(", "is not a valid regex"), (r"_(\d{8})_", "needs a named group (?P<group>...)")])
def test_bad_patterns_name_the_setting_and_the_fix(text, why):
    with pytest.raises(ConfigError) as exc:
        group_pattern(text)
    assert str(exc.value).startswith(f"--group-by {text!r}") and why in str(exc.value)
    with pytest.raises(ConfigError, match=r"^SCENECLIP_REGION_PATTERN="):
        named_group_pattern(text, "region", "SCENECLIP_REGION_PATTERN=")
