"""The one naming module: slugs, injective key slugs, the output template, STAC hrefs; and the store build's
refusal of region ids that share a slug."""

from __future__ import annotations

import json
import re

import pytest
from shapely.geometry import box, mapping

from sceneclip.core.naming import (
    DEFAULT_TEMPLATE,
    NameFields,
    OutputTemplate,
    find_slug_collisions,
    href_for,
    key_slug,
    slug,
    stac_key_for,
)
from sceneclip.errors import BoundaryError, ConfigError

SAFE = re.compile(r"[A-Za-z0-9._/-]+")


@pytest.mark.parametrize("text", ["Rocky Mountain National Park", "a+b%20c?d#e", "Côte d'Ivoire", "日本", "../..", "a//b"])
def test_slug_keeps_only_safe_characters(text):
    out = slug(text)
    assert SAFE.fullmatch(out), out
    assert ".." not in out.split("/") and "" not in out.split("/")


def test_key_slug_is_injective_and_keeps_extensions():
    keys = ["scenes/c.tif", "scenes/c.tiff", "scenes/c.TIF", "scenes/c", "scenes/a b.tif", "scenes/a_b.tif",
            "scenes/a+b.tif", "scenes/a%2Bb.tif", "scenes/日本.tif", "scenes/../c.tif"]
    slugs = [key_slug(k) for k in keys]
    assert len(set(slugs)) == len(keys), slugs
    assert all(SAFE.fullmatch(s) and re.search(r"\.tiff?$", s, re.I) for s in slugs), slugs
    assert slugs[:3] == ["scenes/c.tif", "scenes/c.tiff", "scenes/c.TIF"]  # safe keys are kept as they are
    assert key_slug("scenes/a_b.tif") == "scenes/a_b.tif" and key_slug("scenes/a b.tif") != "scenes/a_b.tif"


def test_stac_items_of_distinct_cogs_are_distinct():
    cogs = ["x/c.tif", "x/c.tiff", "x/c.TIF"]
    assert len({stac_key_for(c) for c in cogs}) == 3
    assert stac_key_for("x/c.tif") == "x/c.stac.json"


def test_default_template_names_bucket_region_and_key():
    t = OutputTemplate.parse(None)
    assert t.text == DEFAULT_TEMPLATE
    fields = NameFields(prefix="clipped/", region="Rocky Mountain NP", bucket="in", key="scenes/r.tif")
    assert t.render(fields) == "clipped/Rocky_Mountain_NP/in/scenes/r.tif"
    other = NameFields(prefix="clipped/", region="Rocky Mountain NP", bucket="in2", key="scenes/r.tif")
    assert t.render(other) != t.render(fields)
    assert t.render(NameFields("clipped/", "a/b", "in", "k.tif")) != t.render(NameFields("clipped/", "a_b", "in", "k.tif"))


def test_custom_template_and_its_errors():
    t = OutputTemplate.parse("{prefix}{date}/{group}/{item_id}")
    key = t.render(NameFields(prefix="out/", region="Boulder", bucket="in", key="scenes/rmnp/x y.tif", date="2026-01-02"))
    assert key == "out/2026-01-02/scenes/rmnp/x_y-Boulder.tif"
    with pytest.raises(ConfigError, match=r"\{regoin\}"):
        OutputTemplate.parse("{prefix}{regoin}/{key_slug}")
    with pytest.raises(ConfigError, match=r"\{collection\}.*SCENECLIP_STAC_COLLECTION"):
        OutputTemplate.parse("{collection}/{key_slug}").render(NameFields("", "r", "b", "k.tif"))
    with pytest.raises(ConfigError, match="format specs"):
        OutputTemplate.parse("{key_slug:>10}")


def test_settings_read_the_template(monkeypatch):
    from sceneclip.aws.config import Settings

    env = {"SCENECLIP_OUTPUT_BUCKET": "o", "SCENECLIP_BOUNDARIES": "s3://b/p", "SCENECLIP_RECORDS_TABLE": "t"}
    base = Settings.from_env(env)
    custom = Settings.from_env({**env, "SCENECLIP_OUTPUT_KEY": "{prefix}{key_slug}"})
    assert custom.output_template.text == "{prefix}{key_slug}" and custom.config_hash != base.config_hash
    with pytest.raises(ConfigError, match="SCENECLIP_OUTPUT_KEY"):
        Settings.from_env({**env, "SCENECLIP_OUTPUT_KEY": "{nope}"})


def test_href_for_is_a_valid_iri_reference():
    assert href_for("s3://in/scenes/a b+c%.tif") == "s3://in/scenes/a%20b+c%25.tif"
    assert href_for("s3://in/日本.tif") == "s3://in/%E6%97%A5%E6%9C%AC.tif"
    from urllib.parse import unquote, urlsplit

    assert unquote(urlsplit(href_for("s3://in/a b?.tif")).path) == "/a b?.tif"  # decodes back to the key
    assert href_for("./c.tif") == "./c.tif"


def test_find_slug_collisions():
    assert find_slug_collisions(["a/b", "a_b", "c"]) == {}
    assert find_slug_collisions(["a b", "a_b", "a+b", "c"]) == {"a_b": ["a b", "a+b", "a_b"]}


def _geojson(tmp_path, names):
    feats = [{"type": "Feature", "properties": {"name": n}, "geometry": mapping(box(i, 0, i + 1, 1))}
             for i, n in enumerate(names)]
    path = tmp_path / "regions.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return str(path)


def test_store_build_refuses_regions_sharing_a_slug(tmp_path):
    from sceneclip.tools.store_build import build_store

    with pytest.raises(BoundaryError, match=r"'a b' and 'a_b'"):
        build_store(_geojson(tmp_path, ["a b", "a_b", "c"]), "name", str(tmp_path / "store1"))
    assert not (tmp_path / "store1" / "index.json").exists()
    summary = build_store(_geojson(tmp_path, ["a/b", "a_b"]), "name", str(tmp_path / "store2"))
    assert summary.regions == 2
