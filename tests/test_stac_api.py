"""``sceneclip backfill --stac-api URL``: Items from a real STAC API item search (rustac's server on loopback).

The server (``rustac serve``, in-memory backend) holds the real Earth Search Sentinel-2 Item and the USGS
Landsat Item of tests/data/stac, their asset hrefs pointed at the band COGs on the moto server and their
footprints set to those COGs' (as an archive's Items describe their own assets). pystac-client really pages
through it over HTTP; the messages really go through the queue and the handler.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
import rasterio
import shapely.geometry
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from sceneclip.aws.config import Settings
from sceneclip.aws.stac_api import ApiSearch
from sceneclip.aws.stac_backfill import run_stac_backfill
from sceneclip.cli.main import main as cli

from .conftest import real
from .test_stac_backfill import drain
from .test_stac_items import LS_FILES, S2_FILES, invoke, landsat_item, rows, s2_item, sqs_event, stack, use_assets  # noqa: F401

RUSTAC = Path(sys.executable).with_name("rustac")


def footprint(name: str) -> dict:
    with rasterio.open(real(name)) as ds:
        return shapely.geometry.mapping(shapely.geometry.box(*transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api(stack, tmp_path):
    """A STAC API on loopback serving the two Items; yields (url, {collection: item})."""
    s2, ls = s2_item(stack), landsat_item(stack)
    for item, name in ((s2, S2_FILES["nir09"]), (ls, LS_FILES["blue"])):
        item["geometry"] = footprint(name)
        item["bbox"] = list(shapely.geometry.shape(item["geometry"]).bounds)
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [s2, ls]}))
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([str(RUSTAC), "serve", "--create-collections", "-a", url.removeprefix("http://"),
                             str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(url + "/collections", timeout=1) as resp:  # noqa: S310 - loopback
                    if len(json.loads(resp.read())["collections"]) == 2:
                        break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail(f"rustac serve did not come up: {proc.stderr.read(2000) if proc.poll() is not None else ''}")
        yield url, {s2["collection"]: s2, ls["collection"]: ls}
    finally:
        proc.terminate()
        proc.wait(10)


def queue_url(stack) -> str:
    return boto3.client("sqs").get_queue_url(QueueName=stack["names"]["WorkQueue"])["QueueUrl"]


def test_search_narrows_by_collection_datetime_and_region(api, stack, monkeypatch):
    use_assets(monkeypatch, ["nir09"])
    url, items = api
    settings, queue = Settings.from_env(), queue_url(stack)
    everything = run_stac_backfill(ApiSearch(url=url), queue, settings=settings, dry_run=True)
    assert everything.listed == 2
    s2 = run_stac_backfill(ApiSearch(url=url, collections=("sentinel-2-l2a",)), queue, settings=settings, dry_run=True)
    assert [m["stac_item"]["id"] for m in s2.planned] == [items["sentinel-2-l2a"]["id"]]
    before = run_stac_backfill(ApiSearch(url=url, datetime="2010-01-01/2015-12-31"), queue, settings=settings,
                               dry_run=True)
    assert before.listed == 0
    # The search geometry is Libya's from the store: only the Item over Libya, and its messages ask for Libya.
    libya = run_stac_backfill(ApiSearch(url=url), queue, settings=settings, intersects="Libya", dry_run=True)
    assert [(m["stac_item"]["id"], m["region"]) for m in libya.planned] == [(items["sentinel-2-l2a"]["id"], "Libya")]
    nowhere = run_stac_backfill(ApiSearch(url=url), queue, settings=settings, intersects="Iceland", dry_run=True)
    assert nowhere.listed == 0


def test_filter_is_applied_here_when_the_api_lacks_it(api, stack, monkeypatch):
    """rustac's memory backend does not declare Filter: the rule is still applied, before any HEAD of an asset."""
    use_assets(monkeypatch, ["nir09"])
    url, items = api
    assert items["sentinel-2-l2a"]["properties"]["eo:cloud_cover"] < 1
    stack["seen"].clear()
    out = run_stac_backfill(ApiSearch(url=url, filter="\"eo:cloud_cover\" > 50"), queue_url(stack),
                            settings=Settings.from_env(), dry_run=True)
    assert (out.listed, out.enqueued, out.skipped, out.reasons) == (2, 0, 2, {"filtered-by-search": 2})
    assert not [p for _, p in stack["seen"] if "sentinel-s2-l2a-cogs" in p or "collection02" in p]
    kept = run_stac_backfill(ApiSearch(url=url, filter="platform = 'sentinel-2a'"), queue_url(stack),
                             settings=Settings.from_env(), dry_run=True)
    assert [m["stac_item"]["id"] for m in kept.planned] == [items["sentinel-2-l2a"]["id"]]


def test_cli_search_to_clip_then_done(api, stack, monkeypatch):
    use_assets(monkeypatch, ["nir09"])
    url, items = api
    queue = queue_url(stack)
    args = ["backfill", "--stac-api", url, "--collections", "sentinel-2-l2a,landsat-c2l2-sr", "--intersects", "Libya",
            "--datetime", "2020-01-01/..", "--queue", queue, "--json"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert (json.loads(out.output)["enqueued"]) == 1
    (body,) = drain(queue)
    assert invoke(sqs_event(body)) == {"batchItemFailures": []}
    assert {(r["region"], r["status"]) for r in rows(stack)} == {("Libya", "ok")}
    again = json.loads(CliRunner().invoke(cli, args).output)
    assert (again["enqueued"], again["reasons"]) == (0, {"done": 1}) and drain(queue) == []
    bad = CliRunner().invoke(cli, ["backfill", "--stac", "x.json", "--collections", "c", "--queue", queue])
    assert bad.exit_code != 0 and "narrow a --stac-api search" in bad.output
    down = CliRunner().invoke(cli, ["backfill", "--stac-api", f"http://127.0.0.1:{free_port()}", "--queue", queue])
    assert down.exit_code != 0 and "the STAC API search" in down.output
