"""``sceneclip backfill --stac``: one message per Item of an ItemCollection / static catalog; done Items are skipped.

Over the moto server (S3, SQS, DynamoDB), with the real Items of tests/data/stac pointed at real band COGs as in
tests/test_stac_items.py; the messages really go through the queue and the handler.
"""

from __future__ import annotations

import json

import boto3
from click.testing import CliRunner

from sceneclip.aws.config import Settings
from sceneclip.aws.stac_backfill import run_stac_backfill
from sceneclip.cli.main import main as cli

from .conftest import real
from .test_stac_items import invoke, landsat_item, rows, s2_item, sqs_event, stack, use_assets  # noqa: F401


def drain(queue_url: str) -> list[str]:
    sqs = boto3.client("sqs")
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return bodies
        for m in got:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def test_item_collection_file_enqueues_each_item_once_then_skips_done(stack, monkeypatch, tmp_path):
    use_assets(monkeypatch, ["blue"])
    s2, ls = s2_item(stack), landsat_item(stack)
    # Earth Search's blue (B02) href → the 34SGA B09 COG: any real band serves to test the queue round trip.
    s2["assets"]["blue"]["href"] = s2["assets"]["nir09"]["href"]
    items = tmp_path / "items.json"
    items.write_text(json.dumps({"type": "FeatureCollection", "features": [s2, ls]}))
    queue = boto3.client("sqs").get_queue_url(QueueName=stack["names"]["WorkQueue"])["QueueUrl"]
    settings = Settings.from_env()
    first = run_stac_backfill(str(items), queue, settings=settings)
    assert (first.listed, first.enqueued, first.skipped, first.reasons) == (2, 2, 0, {"new": 2})
    bodies = drain(queue)
    assert sorted(json.loads(b)["stac_item"]["id"] for b in bodies) == sorted([s2["id"], ls["id"]])
    for body in bodies:  # what the worker / event source mapping would deliver
        assert invoke(sqs_event(body)) == {"batchItemFailures": []}
    assert {(r["region"], r["status"]) for r in rows(stack)} == {("Libya", "ok"), ("Bolivia", "ok")}
    again = run_stac_backfill(str(items), queue, settings=settings)
    assert (again.enqueued, again.skipped, again.reasons) == (0, 2, {"done": 2})
    assert drain(queue) == []
    forced = run_stac_backfill(str(items), queue, settings=settings, force=True, dry_run=True)
    assert forced.enqueued == 2 and all(m["force"] is True for m in forced.planned)


def test_static_catalog_on_s3_with_relative_links_through_the_cli(stack, monkeypatch):
    use_assets(monkeypatch, ["nir09"], SCENECLIP_STAC_FILTER="\"eo:cloud_cover\" > 50")
    item = s2_item(stack)
    s3, bucket = stack["s3"], stack["bucket"]
    root = {"type": "Catalog", "stac_version": "1.1.0", "id": "root", "description": "d",
            "links": [{"rel": "child", "href": "./sentinel-2/catalog.json"}]}
    child = {"type": "Collection", "stac_version": "1.1.0", "id": "sentinel-2-l2a", "description": "d", "license": "x",
             "extent": {}, "links": [{"rel": "item", "href": "./2023/item.json"}, {"rel": "root", "href": "../catalog.json"}]}
    for key, doc in (("cat/catalog.json", root), ("cat/sentinel-2/catalog.json", child),
                     ("cat/sentinel-2/2023/item.json", item)):
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())
    queue = boto3.client("sqs").get_queue_url(QueueName=stack["names"]["WorkQueue"])["QueueUrl"]
    args = ["backfill", "--stac", f"s3://{bucket}/cat/catalog.json", "--queue", queue, "--json"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert (summary["listed"], summary["enqueued"]) == (1, 1)
    (body,) = drain(queue)
    assert invoke(sqs_event(body)) == {"batchItemFailures": []}
    assert [r["status"] for r in rows(stack)] == ["skipped"]  # the filter rejects it: no asset read
    out = CliRunner().invoke(cli, args)
    assert json.loads(out.output)["reasons"] == {"filtered": 1} and drain(queue) == []
    bad = CliRunner().invoke(cli, ["backfill", "--queue", queue])
    assert bad.exit_code != 0 and "either s3://BUCKET/PREFIX, --stac ITEMS or --stac-api URL" in bad.output


def test_stacked_item_is_done_by_its_stack_record_and_resent_when_a_member_changes(stack, monkeypatch, tmp_path):
    use_assets(monkeypatch, ["coastal", "nir09"], SCENECLIP_STAC_STACK="true")
    item = s2_item(stack)
    items = tmp_path / "items.json"
    items.write_text(json.dumps({"type": "FeatureCollection", "features": [item]}))
    queue = boto3.client("sqs").get_queue_url(QueueName=stack["names"]["WorkQueue"])["QueueUrl"]
    settings = Settings.from_env()
    assert run_stac_backfill(str(items), queue, settings=settings).reasons == {"new": 1}
    (body,) = drain(queue)
    assert invoke(sqs_event(body)) == {"batchItemFailures": []}
    assert [(r["scene"], r["status"]) for r in rows(stack)] == [(f"stac://sentinel-2-l2a/{item['id']}", "ok")]
    assert run_stac_backfill(str(items), queue, settings=settings).reasons == {"done": 1}
    assert drain(queue) == []
    # One member overwritten (another ETag): the stack is stale, the Item is sent again.
    key = item["assets"]["nir09"]["href"].split(".amazonaws.com/")[1]
    stack["s3"].upload_file(real("sentinel2_libya_b01_utm34n.tif"), stack["bucket"], key)
    assert run_stac_backfill(str(items), queue, settings=settings).reasons == {"changed": 1}
