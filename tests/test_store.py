"""The boundary store: build from real vector files, read back piecemeal, spatial lookup, warm cache, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import rasterio
import shapely
from click.testing import CliRunner
from shapely.geometry import Polygon, box, mapping

from sceneclip.aws import store as store_mod
from sceneclip.cli.boundaries import boundaries
from sceneclip.errors import (
    BoundaryError,
    ConfigError,
    EmptyGeometryError,
    MissingCRSError,
    SourceUnavailableError,
    UnknownRegionError,
)
from sceneclip.core.geometry import Boundary, raster_footprint
from sceneclip.aws.store import FORMAT, BoundaryStore, get_store
from sceneclip.tools.store_build import build_store, compile_regions, region_slug, region_text
from tests.conftest import real

PYTHON = sys.executable


@pytest.fixture(autouse=True)
def fresh_warm_cache(monkeypatch):
    """Each test starts with an empty warm-start cache (the module global is looked up at call time)."""
    monkeypatch.setattr(store_mod, "_WARM_STORE_CACHE", {})


def write_geojson(path: Path, features: list[tuple[object, object]], *, crs: bool = True) -> str:
    """features: (region id value, shapely geometry or None)."""
    doc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"rid": rid}, "geometry": None if geom is None else mapping(geom)}
            for rid, geom in features
        ],
    }
    path.write_text(json.dumps(doc))
    return str(path)


def count_gets(client) -> list[str]:
    """Keys of every GetObject the client sends from now on (a botocore event hook on the real client)."""
    keys: list[str] = []
    client.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: keys.append(params["Key"]))
    return keys


def footprint_of(name: str, store: BoundaryStore) -> list[Polygon]:
    with rasterio.open(real(name)) as ds:
        return raster_footprint(tuple(ds.bounds), ds.crs, store.crs)


def expected_regions(vector: str, field: str) -> dict[str, object]:
    """Independent reference: geopandas groups, shapely make_valid + union per region."""
    import geopandas as gpd

    frame = gpd.read_file(vector)
    out: dict[str, list] = {}
    for rid, geom in zip(frame[field], frame.geometry, strict=True):
        out.setdefault(str(rid), []).append(geom if geom.is_valid else shapely.make_valid(geom))
    return {rid: shapely.union_all(geoms) for rid, geoms in out.items()}


# --- pure helpers ------------------------------------------------------------------------------------------------
def test_region_text_and_slug():
    assert region_text(7) == "7"
    assert region_text(7.0) == "7"  # an integer column with nulls reads as float
    assert region_text(7.5) == "7.5"
    assert region_text(float("nan")) is None and region_text(None) is None and region_text("") is None
    assert region_text("Côte d'Ivoire") == "Côte d'Ivoire"
    for rid in ["../../etc/passwd", "a/b\\c", "Côte d'Ivoire", "日本", "", ".", "x" * 500]:
        slug = region_slug(rid)
        assert slug and len(slug) <= 48 and all(c.isascii() and (c.isalnum() or c in "_-") for c in slug), slug


def test_compile_dissolves_repairs_and_reports_dropped():
    bowtie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])  # self-intersecting
    assert not bowtie.is_valid
    compiled, dropped = compile_regions(
        ["a", "a", "b", None, "c", "d"],
        [box(0, 0, 1, 1), box(1, 0, 2, 1), bowtie, box(5, 5, 6, 6), Polygon(), shapely.LineString([(0, 0), (1, 1)])],
        region_field="rid",
    )
    assert sorted(compiled) == ["a", "b"]
    assert compiled["a"].geometry.equals(box(0, 0, 2, 1)) and compiled["a"].features == 2
    assert compiled["a"].parts == 1
    assert compiled["b"].geometry.is_valid and compiled["b"].parts == 2
    assert compiled["b"].geometry.area == pytest.approx(2.0)  # the two triangles of the bow-tie
    assert len(dropped) == 5  # null id, empty feature, line feature, and regions c and d
    assert any("no value in field 'rid'" in d for d in dropped)
    assert any(d.startswith("region 'c'") for d in dropped) and any(d.startswith("region 'd'") for d in dropped)


# --- build from real files -------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_build_naturalearth_layout_and_round_trip(tmp_path):
    shp = real("naturalearth_lowres.shp")
    out = tmp_path / "ne"
    summary = build_store(shp, "name", str(out))
    assert summary.regions == 177 and summary.dropped == () and summary.crs == "EPSG:4326"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert summary.bytes_written == sum(p.stat().st_size for p in files)

    index = json.loads((out / "index.json").read_text())
    assert index["format"] == FORMAT and index["region_field"] == "name"
    assert index["source"] == "naturalearth_lowres.shp" and index["version"] == summary.version
    assert rasterio.crs.CRS.from_wkt(index["crs"]) == rasterio.crs.CRS.from_epsg(4326)
    assert len(index["regions"]) == 177
    assert {str(p.relative_to(out)) for p in files} == {"index.json"} | {e["key"] for e in index["regions"].values()}

    store = BoundaryStore.load(str(out))
    expected = expected_regions(shp, "name")
    assert store.regions() == sorted(expected)
    for rid, geom in expected.items():
        got = store.geometry(rid)
        assert got.is_valid and got.equals(geom), rid
        assert store.bbox(rid) == pytest.approx(geom.bounds)
        assert index["regions"][rid]["parts"] == len(getattr(got, "geoms", [got]))
    fiji = store.boundary("Fiji")  # crosses the antimeridian, split at ±180 in Natural Earth
    assert isinstance(fiji, Boundary) and fiji.region == "Fiji" and fiji.source == f"{out}#Fiji"
    assert fiji.crs == store.crs and len(fiji.content_hash) == 64


@pytest.mark.realdata
def test_build_counties_and_glaciers_repaired(tmp_path):
    counties = build_store(real("colorado_counties.geojson"), "name", str(tmp_path / "co"))
    assert counties.regions == 64

    gpkg = real("rgi60_exploradores_glaciers.gpkg")
    import geopandas as gpd

    frame = gpd.read_file(gpkg)
    invalid = frame[~frame.is_valid]
    assert len(invalid) == 18  # the real inventory ships 18 self-intersecting outlines
    summary = build_store(gpkg, "RGIId", str(tmp_path / "rgi"))
    assert summary.regions == 47 and summary.dropped == ()
    store = BoundaryStore.load(str(tmp_path / "rgi"))
    for rid, geom in zip(invalid["RGIId"], invalid.geometry, strict=True):
        got = store.geometry(rid)
        assert got.is_valid and not got.is_empty, rid
        assert got.area == pytest.approx(shapely.make_valid(geom).area, rel=1e-9), rid


@pytest.mark.realdata
def test_version_is_stable_across_builds(tmp_path):
    shp = real("naturalearth_lowres.shp")
    a = build_store(shp, "name", str(tmp_path / "a"))
    b = build_store(shp, "name", str(tmp_path / "b"))
    assert a.version == b.version
    ia = json.loads((tmp_path / "a" / "index.json").read_text())["regions"]
    ib = json.loads((tmp_path / "b" / "index.json").read_text())["regions"]
    assert ia == ib


def test_version_changes_with_a_geometry_and_only_that_region_hash(tmp_path):
    one = write_geojson(tmp_path / "v1.geojson", [("north", box(0, 1, 1, 2)), ("south", box(0, 0, 1, 1))])
    two = write_geojson(tmp_path / "v2.geojson", [("north", box(0, 1, 1, 2.5)), ("south", box(0, 0, 1, 1))])
    s1 = build_store(one, "rid", str(tmp_path / "s1"))
    s2 = build_store(two, "rid", str(tmp_path / "s2"))
    assert s1.version != s2.version
    r1 = json.loads((tmp_path / "s1" / "index.json").read_text())["regions"]
    r2 = json.loads((tmp_path / "s2" / "index.json").read_text())["regions"]
    assert r1["south"]["hash"] == r2["south"]["hash"] and r1["north"]["hash"] != r2["north"]["hash"]
    assert r2["north"]["bbox"] == [0.0, 1.0, 1.0, 2.5]
    # The region field is part of the version too (same geometries, different meaning).
    assert build_store(one, "rid", str(tmp_path / "s3")).version == s1.version


@pytest.mark.filterwarnings("ignore:Could not parse column:UserWarning")
def test_any_text_is_a_region_id(tmp_path):
    ids = ["../../escape", "a/b", "Côte d'Ivoire", "日本", "A", "a", 7, "x" * 300]
    vec = write_geojson(tmp_path / "odd.geojson", [(rid, box(i, 0, i + 1, 1)) for i, rid in enumerate(ids)])
    build_store(vec, "rid", str(tmp_path / "store"))
    assert not (tmp_path / "escape").exists()
    store = BoundaryStore.load(str(tmp_path / "store"))
    assert sorted(store.regions()) == sorted(str(r) for r in ids)
    for i, rid in enumerate(ids):
        assert store.geometry(str(rid)).equals(box(i, 0, i + 1, 1))
    assert store.boundary(7).region == "7"  # ids are text; a number asks for its text


def test_index_is_written_last(tmp_path, monkeypatch):
    order: list[str] = []
    original = store_mod.StoreLocation.write

    def recording(self, name, data, *, content_type):
        order.append(name)
        return original(self, name, data, content_type=content_type)

    monkeypatch.setattr(store_mod.StoreLocation, "write", recording)
    vec = write_geojson(tmp_path / "v.geojson", [("a", box(0, 0, 1, 1)), ("b", box(1, 0, 2, 1))])
    build_store(vec, "rid", str(tmp_path / "s"))
    assert order[-1] == "index.json" and len(order) == 3


@pytest.mark.filterwarnings("ignore:'crs' was not provided:UserWarning")
def test_build_errors_are_readable(tmp_path):
    import geopandas as gpd

    vec = write_geojson(tmp_path / "v.geojson", [("a", box(0, 0, 1, 1))])
    with pytest.raises(BoundaryError, match=r"no field 'name'; fields are: rid"):
        build_store(vec, "name", str(tmp_path / "s"))
    with pytest.raises(BoundaryError, match="does not exist"):
        build_store(str(tmp_path / "missing.shp"), "rid", str(tmp_path / "s"))

    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"rid": ["a"]}, geometry=[box(0, 0, 1, 1)], crs=4326).iloc[:0].to_file(empty)
    with pytest.raises(BoundaryError, match="has no features"):
        build_store(str(empty), "rid", str(tmp_path / "s"))

    no_crs = tmp_path / "nocrs.shp"
    gpd.GeoDataFrame({"rid": ["a"]}, geometry=[box(0, 0, 1, 1)]).to_file(no_crs)
    assert not no_crs.with_suffix(".prj").exists()
    with pytest.raises(MissingCRSError, match="has no CRS"):
        build_store(str(no_crs), "rid", str(tmp_path / "s"))

    nothing = write_geojson(tmp_path / "n.geojson", [("a", None), (None, box(0, 0, 1, 1))])
    with pytest.raises(EmptyGeometryError, match="no region with a polygon"):
        build_store(nothing, "rid", str(tmp_path / "s"))
    assert not (tmp_path / "s" / "index.json").exists()


# --- run time: lookup ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ne_store_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ne") / "store"
    build_store(real("naturalearth_lowres.shp"), "name", str(out))
    return str(out)


@pytest.mark.realdata
@pytest.mark.parametrize(
    "scene, regions",
    [
        ("landsat7_everest_b4_utm45n.tif", ["China", "Nepal"]),
        ("landsat8_iguazu_b2_utm21n.tif", ["Argentina", "Brazil", "Paraguay"]),
        ("landsat7_bahamas_rgb_utm18n.tif", ["Bahamas"]),
        ("sentinel2_libya_b09_utm34n.tif", ["Libya"]),
    ],
)
def test_intersecting_real_scenes(ne_store_dir, scene, regions):
    store = BoundaryStore.load(ne_store_dir)
    assert store.intersecting(footprint_of(scene, store)) == regions
    # Only bbox candidates were fetched, not the whole world.
    assert set(regions) <= set(store._geometries) and len(store._geometries) < 12


@pytest.mark.realdata
def test_intersecting_counties_and_nothing(tmp_path, ne_store_dir):
    build_store(real("colorado_counties.geojson"), "name", str(tmp_path / "co"))
    counties = BoundaryStore.load(str(tmp_path / "co"))
    assert counties.intersecting(footprint_of("landsat_rmnp_rgb_wgs84.tif", counties)) == [
        "Boulder", "Grand", "Jackson", "Larimer",
    ]
    world = BoundaryStore.load(ne_store_dir)
    assert world.intersecting([box(-150, -40, -149, -39)]) == []  # South Pacific
    assert world.intersecting([]) == []
    # A bbox hit that is not a geometry hit: inside Chile's bbox, in the Pacific west of the coast.
    x0, y0, x1, y1 = world.bbox("Chile")
    assert world.intersecting([box(x0 + 0.01, -40.01, x0 + 0.02, -40.0)]) == []


@pytest.mark.realdata
def test_intersecting_antimeridian_copies(tmp_path):
    """Regions stored split at ±180 or with longitudes past 180 are both found for a scene crossing 180°."""
    vec = write_geojson(
        tmp_path / "am.geojson",
        [
            ("east-split", box(179.0, 51.0, 180.0, 52.0)),
            ("west-split", box(-180.0, 51.0, -179.0, 52.0)),
            ("past-180", box(180.5, 51.5, 181.0, 52.0)),
            ("far", box(-170.0, 51.0, -169.0, 52.0)),
        ],
    )
    build_store(vec, "rid", str(tmp_path / "s"))
    store = BoundaryStore.load(str(tmp_path / "s"))
    footprints = footprint_of("landsat_aleutians_antimeridian_utm60n.tif", store)
    assert len(footprints) == 3
    assert store.intersecting(footprints) == ["east-split", "past-180", "west-split"]
    assert store.intersecting(footprints[:1]) == ["east-split", "past-180"]


@pytest.mark.realdata
def test_unknown_region(ne_store_dir):
    store = BoundaryStore.load(ne_store_dir)
    with pytest.raises(UnknownRegionError) as err:
        store.boundary("Nepa")
    msg = str(err.value)
    assert "'Nepa'" in msg and ne_store_dir in msg and "'Nepal'" in msg and "'Afghanistan'" in msg
    assert err.value.permanent
    with pytest.raises(UnknownRegionError):
        store.bbox("Atlantis")
    assert "Nepal" in store and "Atlantis" not in store


# --- S3 (moto server on loopback) -----------------------------------------------------------------------------
@pytest.mark.realdata
def test_s3_build_load_and_fetch_only_what_is_asked(s3_bucket, ne_store_dir):
    client, bucket = s3_bucket
    uri = f"s3://{bucket}/boundaries/world/"
    summary = build_store(real("naturalearth_lowres.shp"), "name", uri, s3_client=client)
    assert summary.uri == f"s3://{bucket}/boundaries/world" and summary.regions == 177
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="boundaries/world/")["Contents"]}
    assert "boundaries/world/index.json" in keys and len(keys) == 178
    local = BoundaryStore.load(ne_store_dir)
    assert summary.version == local.version

    gets = count_gets(client)
    store = BoundaryStore.load(uri, s3_client=client)
    assert gets == ["boundaries/world/index.json"]
    nepal = store.boundary("Nepal")
    assert nepal.source == f"s3://{bucket}/boundaries/world#Nepal"
    assert nepal.content_hash == local.boundary("Nepal").content_hash
    assert len(gets) == 2 and gets[1].startswith("boundaries/world/regions/Nepal.")
    store.boundary("Nepal")
    assert len(gets) == 2  # cached in the instance

    regions = store.intersecting(footprint_of("landsat7_everest_b4_utm45n.tif", store))
    assert regions == ["China", "Nepal"]
    fetched = [k.rsplit("/", 1)[1].split(".")[0] for k in gets[2:]]
    assert "China" in fetched and "Nepal" not in fetched and len(fetched) < 10


def test_s3_store_default_client_honours_endpoint(s3_bucket, tmp_path):
    client, bucket = s3_bucket
    vec = write_geojson(tmp_path / "v.geojson", [("a", box(0, 0, 1, 1))])
    build_store(vec, "rid", f"s3://{bucket}/s")  # boto3.client("s3") from AWS_ENDPOINT_URL
    store = BoundaryStore.load(f"s3://{bucket}/s")
    assert store.geometry("a").equals(box(0, 0, 1, 1))


def test_s3_missing_and_invalid_store_is_permanent(s3_bucket):
    client, bucket = s3_bucket
    with pytest.raises(ConfigError, match=r"not found.*sceneclip boundaries build") as err:
        BoundaryStore.load(f"s3://{bucket}/nothing-here", s3_client=client)
    assert f"s3://{bucket}/nothing-here/index.json" in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        BoundaryStore.load("s3://no-such-bucket-sceneclip/x", s3_client=client)
    client.put_object(Bucket=bucket, Key="bad/index.json", Body=b"{not json")
    with pytest.raises(ConfigError, match="not valid JSON.*sceneclip boundaries build"):
        BoundaryStore.load(f"s3://{bucket}/bad", s3_client=client)
    client.put_object(Bucket=bucket, Key="old/index.json", Body=json.dumps({"format": "other/9"}).encode())
    with pytest.raises(ConfigError, match="expected 'sceneclip-boundaries/1'"):
        BoundaryStore.load(f"s3://{bucket}/old", s3_client=client)
    with pytest.raises(ConfigError, match="names no bucket"):
        BoundaryStore.load("s3:///x", s3_client=client)


def test_s3_transient_errors(s3_bucket, tmp_path):
    import boto3
    from botocore.config import Config
    from botocore.stub import Stubber

    client, bucket = s3_bucket
    vec = write_geojson(tmp_path / "v.geojson", [("a", box(0, 0, 1, 1))])
    build_store(vec, "rid", f"s3://{bucket}/s", s3_client=client)

    for code, status in [("SlowDown", 503), ("InternalError", 500), ("RequestTimeout", 400)]:
        stubbed = boto3.client("s3", region_name="us-east-1")
        with Stubber(stubbed) as stub:
            stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
            with pytest.raises(SourceUnavailableError, match=code) as err:
                BoundaryStore.load(f"s3://{bucket}/s", s3_client=stubbed)
        assert not err.value.permanent
    stubbed = boto3.client("s3", region_name="us-east-1")
    with Stubber(stubbed) as stub:
        stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(ConfigError, match="access denied"):
            BoundaryStore.load(f"s3://{bucket}/s", s3_client=stubbed)

    # A real connection failure: nothing listens on this port.
    from tests.conftest import _free_port

    dead = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{_free_port()}", region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    with pytest.raises(SourceUnavailableError, match="EndpointConnectionError"):
        BoundaryStore.load(f"s3://{bucket}/s", s3_client=dead)


def test_damaged_store_is_permanent(tmp_path):
    vec = write_geojson(tmp_path / "v.geojson", [("a", box(0, 0, 1, 1)), ("b", box(1, 0, 2, 1))])
    build_store(vec, "rid", str(tmp_path / "s"))
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    (tmp_path / "s" / index["regions"]["a"]["key"]).unlink()
    (tmp_path / "s" / index["regions"]["b"]["key"]).write_bytes(shapely.to_wkb(box(0, 0, 9, 9)))
    store = BoundaryStore.load(str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="incomplete.*'a'"):
        store.boundary("a")
    with pytest.raises(ConfigError, match="does not match its hash"):
        store.boundary("b")
    with pytest.raises(ConfigError, match=r"not found.*sceneclip boundaries build"):
        BoundaryStore.load(str(tmp_path / "absent"))
    index["regions"]["a"]["key"] = "../../etc/passwd"
    (tmp_path / "s" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="entry for region 'a' is malformed"):
        BoundaryStore.load(str(tmp_path / "s"))


# --- warm-start cache ------------------------------------------------------------------------------------------
def test_warm_cache_local(tmp_path, monkeypatch):
    reads: list[str] = []
    original = store_mod.StoreLocation.read
    monkeypatch.setattr(store_mod.StoreLocation, "read", lambda self, name: reads.append(name) or original(self, name))
    v1 = write_geojson(tmp_path / "v1.geojson", [("a", box(0, 0, 1, 1)), ("b", box(1, 0, 2, 1))])
    v2 = write_geojson(tmp_path / "v2.geojson", [("a", box(0, 0, 1, 3)), ("b", box(1, 0, 2, 1))])
    uri = str(tmp_path / "s")
    first = build_store(v1, "rid", uri)
    store = get_store(uri)
    store.boundary("a")
    assert get_store(uri) is store and get_store(uri + "/") is store
    assert "a" in store._geometries
    assert reads.count("index.json") == 1  # unchanged index: a stat, no read

    build_store(v1, "rid", uri)  # rewritten, same content: same version, same instance, geometries kept
    assert get_store(uri) is store and "a" in store._geometries

    second = build_store(v2, "rid", uri)
    assert second.version != first.version
    fresh = get_store(uri)
    assert fresh is not store and fresh.version == second.version
    assert fresh.geometry("a").equals(box(0, 0, 1, 3))
    assert get_store(uri) is fresh


def test_warm_cache_s3_uses_head_only(s3_bucket, tmp_path):
    client, bucket = s3_bucket
    v1 = write_geojson(tmp_path / "v1.geojson", [("a", box(0, 0, 1, 1))])
    v2 = write_geojson(tmp_path / "v2.geojson", [("a", box(0, 0, 2, 2))])
    uri = f"s3://{bucket}/warm"
    build_store(v1, "rid", uri, s3_client=client)
    gets = count_gets(client)
    heads: list[str] = []
    client.meta.events.register("before-parameter-build.s3.HeadObject", lambda params, **_: heads.append(params["Key"]))

    store = get_store(uri, s3_client=client)
    store.boundary("a")
    assert len(gets) == 2
    for _ in range(3):
        assert get_store(uri, s3_client=client) is store
    assert len(gets) == 2 and heads == ["warm/index.json"] * 3

    build_store(v2, "rid", uri, s3_client=client)
    fresh = get_store(uri, s3_client=client)
    assert fresh is not store and fresh.version != store.version
    assert fresh.boundary("a").content_hash != store.boundary("a").content_hash

    client.delete_object(Bucket=bucket, Key="warm/index.json")
    with pytest.raises(ConfigError, match="not found"):
        get_store(uri, s3_client=client)
    assert store_mod._WARM_STORE_CACHE == {}


# --- no geopandas on the Lambda path ---------------------------------------------------------------------------
@pytest.mark.realdata
def test_runtime_imports_no_geopandas(s3_bucket, ne_store_dir):
    client, bucket = s3_bucket
    build_store(real("naturalearth_lowres.shp"), "name", f"s3://{bucket}/w", s3_client=client)
    scene = real("landsat7_everest_b4_utm45n.tif")
    code = textwrap.dedent(
        f"""
        import sys, rasterio
        from sceneclip.aws.store import BoundaryStore, get_store
        from sceneclip.core.geometry import raster_footprint
        for uri in [{ne_store_dir!r}, "s3://{bucket}/w"]:
            store = get_store(uri)
            assert get_store(uri) is store
            assert store.boundary("Nepal").region == "Nepal"
            with rasterio.open({scene!r}) as ds:
                fp = raster_footprint(tuple(ds.bounds), ds.crs, store.crs)
            assert store.intersecting(fp) == ["China", "Nepal"], store.intersecting(fp)
            BoundaryStore.load(uri).bbox("Nepal")
        from sceneclip.cli.boundaries import boundaries
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("geopandas", "pandas", "pyogrio", "pyproj"))
        print("HEAVY", heavy)
        """
    )
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout


# --- CLI -------------------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_cli_build_and_ls(tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "co")
    counties = real("colorado_counties.geojson")
    res = runner.invoke(boundaries, ["build", counties, "--region-field", "name", "--out", out, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["regions"] == 64 and summary["uri"] == out and len(summary["version"]) == 64

    res = runner.invoke(boundaries, ["ls", out])
    assert res.exit_code == 0
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 64
    row = dict((line.split("\t")[0], [float(v) for v in line.split("\t")[1:]]) for line in lines)
    assert row["Boulder"] == pytest.approx(BoundaryStore.load(out).bbox("Boulder"), abs=1e-6)
    minx, miny, maxx, maxy = row["Boulder"]
    assert minx < -105.27 < maxx and miny < 40.01 < maxy  # Boulder city is in Boulder county
    res = runner.invoke(boundaries, ["ls", out, "--json"])
    assert json.loads(res.stdout)["regions"]["Larimer"] == list(BoundaryStore.load(out).bbox("Larimer"))

    res = runner.invoke(boundaries, ["build", counties, "--region-field", "nam", "--out", out])
    assert res.exit_code == 1
    assert res.stderr.startswith("sceneclip: error: ") and res.stderr.count("\n") == 1
    assert "no field 'nam'" in res.stderr and "name" in res.stderr

    res = runner.invoke(boundaries, ["ls", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "sceneclip boundaries build" in res.stderr
    assert "boundary store" in runner.invoke(boundaries, ["--help"]).stdout


def test_cli_build_reports_dropped_features(tmp_path):
    vec = write_geojson(tmp_path / "v.geojson", [("a", box(0, 0, 1, 1)), (None, box(1, 0, 2, 1))])
    res = CliRunner().invoke(boundaries, ["build", vec, "--region-field", "rid", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0
    assert "1 regions" in res.stdout and "sceneclip: warning: dropped feature 1" in res.stderr


def test_region_hash_is_the_same_from_file_and_from_store(tmp_path):
    """A record's boundary content_hash identifies the region however it was loaded (CLI/batch vs Lambda)."""
    from sceneclip.tools.vectors import load_boundary
    from sceneclip.aws.store import BoundaryStore
    from sceneclip.tools.store_build import build_store

    vector = real("naturalearth_lowres.shp")
    build_store(vector, "name", str(tmp_path / "store"))
    store = BoundaryStore.load(str(tmp_path / "store"))
    for region in ("Nepal", "Chile", "United States of America"):
        assert load_boundary(vector, region_field="name", region=region).content_hash == store.boundary(region).content_hash
