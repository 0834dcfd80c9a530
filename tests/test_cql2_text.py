"""The Lambda's CQL2-text evaluator against the reference implementation (``cql2``, Rust) as the oracle.

Every expression below is decided by both: the same accept/refuse at parse time (except the constructs we
refuse on purpose: arithmetic and functions), and on every Item/property set the same pass/fail, where the
reference's "could not reduce to boolean" (a missing property, a type mismatch) counts as not passing, as the
filter treats it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cql2
import pytest

from sceneclip.core.cql2_text import Cql2Error, parse
from sceneclip.core.stac_filter import ItemFilter

STAC = Path(__file__).resolve().parent / "data" / "stac"
REAL = sorted(p for p in STAC.glob("stac_item_*.json"))

EXPRESSIONS = [
    '"eo:cloud_cover" < 20', "eo:cloud_cover < 20", "eo:cloud_cover <= 0", "eo:cloud_cover >= 0.5",
    "eo:cloud_cover <> 12.5", "eo:cloud_cover = 12.5", "\"s2:processing_baseline\" >= '04.00'",
    "s2:processing_baseline < '05.00'", "platform = 'sentinel-2a'", "platform <> 'landsat-8'",
    "platform LIKE 'sentinel-2%'", "platform LIKE 'landsat-_'", "platform NOT LIKE '%8'", "platform LIKE 'L%'",
    "instruments IS NULL", "missing IS NULL", "platform IS NOT NULL", "missing IS NOT NULL",
    "view:sun_elevation BETWEEN 20 AND 60", "view:sun_elevation NOT BETWEEN 20 AND 60",
    "landsat:wrs_path IN ('033', '028')", "landsat:wrs_path NOT IN ('033')", "n IN (1, 2, 3)", "n IN (4, 5)",
    "missing < 5", "NOT (missing < 5)", "platform = 5", "NOT (platform = 5)", "missing IN (1, 2)",
    "missing = 1 OR n = 3", "missing = 1 AND n = 4", "NOT (missing = 1 AND n = 4)", "n = 3.0", "n = 3",
    "flag = TRUE", "flag = FALSE", "NOT flag = TRUE", "TRUE", "FALSE", "NOT FALSE",
    "id = 'x-1'", "collection = 'sentinel-2-l2a'", "collection LIKE 'landsat%'",
    "datetime > TIMESTAMP('2023-01-01T00:00:00Z')", "datetime < TIMESTAMP('2020-06-01T00:00:00Z')",
    "datetime < '2025'", "eo:cloud_cover < 20 AND (platform = 'sentinel-2a' OR platform = 'landsat-8')",
    "NOT (eo:cloud_cover < 20) OR n BETWEEN 1 AND 2", "((n = 3))", "quote = 'it''s'", "\"odd name\" = 1",
    "eo:cloud_cover < 20 AND s2:processing_baseline >= '04.00'",
]
REFUSED_ON_PURPOSE = ["n + 1 = 4", "CASEI(platform) = 'SENTINEL-2A'", "S_INTERSECTS(geometry, POINT(0 0))"]
INVALID = ["eo:cloud_cover <<< 3", "", "n BETWEEN 1", "n IN ()", "platform LIKE 5", "(n = 3", "flag", "AND n = 3",
           "n = 3 n = 4", "DATE(5) = n"]

SYNTHETIC = [
    {"eo:cloud_cover": 12.5, "s2:processing_baseline": "05.00", "platform": "sentinel-2a", "n": 3, "flag": True,
     "datetime": "2024-05-01T10:20:30Z", "quote": "it's", "odd name": 1, "view:sun_elevation": 40},
    {"eo:cloud_cover": 0, "platform": "landsat-8", "n": 4, "flag": False, "datetime": "2019-01-01T00:00:00Z",
     "landsat:wrs_path": "033", "instruments": None, "view:sun_elevation": 70.5},
    {"platform": 7, "n": "3", "flag": "true", "datetime": "not a date"},
    {},
]


def _items() -> list[dict]:
    items = [json.loads(p.read_text()) for p in REAL]
    items = [i for i in items if i.get("type") == "Feature"]
    items += [{"type": "Feature", "id": f"x-{k}", "collection": "sentinel-2-l2a", "geometry": None,
               "properties": props} for k, props in enumerate(SYNTHETIC)]
    return items


def _reference(text: str, item: dict) -> bool:
    try:
        return bool(cql2.Expr(text).matches(item))
    except Exception:  # "could not reduce expression to boolean": missing property or mismatched types
        return False


def test_real_items_are_present():
    assert len([p for p in REAL]) >= 3


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_same_result_as_the_reference_on_every_item(text):
    cql2.Expr(text).validate()  # the reference accepts it too
    ours = ItemFilter.parse(text)
    mismatches = [(item["id"], ours.matches(item), _reference(text, item))
                  for item in _items() if ours.matches(item) != _reference(text, item)]
    assert not mismatches, mismatches


@pytest.mark.parametrize("text", REFUSED_ON_PURPOSE)
def test_constructs_beyond_the_supported_classes_are_refused_with_a_reason(text):
    cql2.Expr(text)  # valid CQL2 (other conformance classes) ...
    with pytest.raises(Cql2Error, match="not supported"):  # ... that we refuse, saying so
        parse(text)


@pytest.mark.parametrize("text", INVALID)
def test_invalid_text_is_refused_by_both(text):
    with pytest.raises(Cql2Error):
        parse(text)
    with pytest.raises(Exception):
        expr = cql2.Expr(text)
        expr.validate()


def test_three_valued_logic_truth_tables():
    props = {"t": 1, "f": 0}
    values = {"true": "t = 1", "false": "f = 1", "unknown": "missing = 1"}
    expect = {None: "unknown", True: "true", False: "false"}
    for (a, ea), (b, eb) in itertools.product(values.items(), repeat=2):
        from sceneclip.core.cql2_text import evaluate

        assert expect[evaluate(parse(f"({ea}) AND ({eb})"), props)] == _and(a, b)
        assert expect[evaluate(parse(f"({ea}) OR ({eb})"), props)] == _or(a, b)


def _and(a: str, b: str) -> str:
    return "false" if "false" in (a, b) else "unknown" if "unknown" in (a, b) else "true"


def _or(a: str, b: str) -> str:
    return "true" if "true" in (a, b) else "unknown" if "unknown" in (a, b) else "false"


def test_timestamps_compare_as_instants_not_strings():
    later = ItemFilter.parse("datetime > TIMESTAMP('2024-05-01T10:20:30+02:00')")
    item = {"properties": {"datetime": "2024-05-01T09:00:00Z"}}  # 11:00 at +02:00: later
    assert later.matches(item)


def test_the_lambda_path_does_not_need_the_cql2_package():
    """The geo layer has no room for cql2 (8.6 MB): parsing and evaluating must not import it."""
    import subprocess
    import sys

    code = ("import sys; from sceneclip.core.stac_filter import ItemFilter; "
            "f = ItemFilter.parse(\"eo:cloud_cover < 20 AND platform LIKE 'sentinel%'\"); "
            "assert f.matches({'properties': {'eo:cloud_cover': 3, 'platform': 'sentinel-2a'}}); "
            "print('cql2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_dates_compare_with_the_items_utc_date():
    item = {"properties": {"datetime": "2024-05-01T23:30:00-02:00"}}  # 2024-05-02 01:30 UTC
    assert ItemFilter.parse("datetime = DATE('2024-05-02')").matches(item)
    assert not ItemFilter.parse("datetime < DATE('2024-05-02')").matches(item)
